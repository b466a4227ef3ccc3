/* SPDX-License-Identifier: MIT */
/*
 * images.c - moor-vmctl's image-* sub-commands (the image pool of
 * moor-vmd): image-list, image-create, image-delete, image-resize,
 * image-info. Tables for people, the daemon's JSON with --json.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "table.h"
#include "vmctl.h"

#define NAME_MAX_LEN 64

/* An image name, checked so it can go into a URL path and a body as it is. */
static bool check_name(const char *cmd, const char *name)
{
    size_t len = strlen(name);

    if (len >= 1 && len <= NAME_MAX_LEN &&
        strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == len &&
        strcmp(name, ".") != 0 && strcmp(name, "..") != 0)
        return true;
    vmctl_errorf("%s: invalid image name '%s': 1 to 64 of A-Z a-z 0-9 . _ -, not . or ..", cmd,
                 name);
    return false;
}

/* A size in MiB: 1..1048576. */
static bool parse_mib(const char *cmd, const char *s, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);

    if (*s && !*end && v >= 1 && v <= 1048576) {
        *out = v;
        return true;
    }
    vmctl_errorf("%s: invalid size '%s': a number of MiB, 1 to 1048576", cmd, s);
    return false;
}

static struct json_object *array_field(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;

    json_object_object_get_ex(o, key, &v);
    return json_object_is_type(v, json_type_array) ? v : NULL;
}

/* The strings of array @key of @o joined by ", " ("-" when empty). */
static void join(struct json_object *o, const char *key, char *buf, size_t size)
{
    struct json_object *arr = array_field(o, key);
    size_t used = 0, n = arr ? json_object_array_length(arr) : 0;

    snprintf(buf, size, "-");
    for (size_t i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "",
                                 json_object_get_string(json_object_array_get_idx(arr, i)));
}

/* The operations some block covers, as "resize, delete" ("-" when none). */
static void blocked_ops(struct json_object *img, char *buf, size_t size)
{
    static const char *const ops[] = {"resize", "delete", "use", "write", "backing"};
    struct json_object *blocks = array_field(img, "blocks");
    size_t used = 0, n = blocks ? json_object_array_length(blocks) : 0;

    snprintf(buf, size, "-");
    for (size_t k = 0; k < sizeof(ops) / sizeof(ops[0]) && used < size; k++) {
        bool hit = false;

        for (size_t i = 0; i < n && !hit; i++) {
            struct json_object *o = array_field(json_object_array_get_idx(blocks, i), "ops");

            for (size_t j = 0; o && j < json_object_array_length(o) && !hit; j++)
                hit = strcmp(json_object_get_string(json_object_array_get_idx(o, j)), ops[k]) == 0;
        }
        if (hit)
            used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? ", " : "", ops[k]);
    }
}

static int64_t size_bytes(struct json_object *img)
{
    struct json_object *v = NULL;

    json_object_object_get_ex(img, "virtual_size", &v);
    return v ? json_object_get_int64(v) : 0;
}

int vmctl_cmd_image_list(struct vmctl_client *c, const struct vmctl_args *a)
{
    static const char *const header[] = {"NAME", "FORMAT", "SIZE", "BACKING", "USED BY", "BLOCKED"};
    struct vmctl_response r vmctl_autoresponse = {0};
    vmctl_autotable struct vmctl_table *t = NULL;
    struct json_object *body, *images;
    int rc = vmctl_call(c, a, "GET", "/v1/images", NULL, &r);

    if (rc || a->json)
        return rc ? rc : vmctl_print_json(r.json, a->pretty);
    if (!(body = vmctl_body(&r)) || !(images = array_field(body, "images"))) {
        vmctl_errorf("moor-vmd's image list has no \"images\" array");
        return VMCTL_EXIT_FAILED;
    }
    t = vmctl_table_new(6, header);
    for (size_t i = 0; t && i < json_object_array_length(images); i++) {
        struct json_object *img = json_object_array_get_idx(images, i);
        char name[80], format[16], size[32], backing[80], users[256], blocked[64];

        snprintf(name, sizeof(name), "%s", vmctl_field(img, "name"));
        snprintf(format, sizeof(format), "%s", vmctl_field(img, "format"));
        vmctl_format_bytes((uint64_t)size_bytes(img), size, sizeof(size));
        snprintf(backing, sizeof(backing), "%s", vmctl_field(img, "backing"));
        join(img, "used_by", users, sizeof(users));
        blocked_ops(img, blocked, sizeof(blocked));
        if (vmctl_table_add(t, (const char *const[]){name, format, size, backing, users, blocked}) <
            0)
            return VMCTL_EXIT_FAILED;
    }
    if (!t || vmctl_table_print(t, stdout, 0) < 0 || fflush(stdout) == EOF)
        return VMCTL_EXIT_FAILED;
    return VMCTL_EXIT_OK;
}

/* image-create NAME SIZE_MIB [qcow2|raw]  |  image-create NAME backing=BASE [SIZE_MIB] */
int vmctl_cmd_image_create(struct vmctl_client *c, const struct vmctl_args *a)
{
    struct vmctl_response r vmctl_autoresponse = {0};
    const char *name = a->argv[0], *spec = a->argv[1], *third = a->argc > 2 ? a->argv[2] : NULL;
    char body[256], line[256];
    long mib = 0;
    int rc;

    if (!check_name("image-create", name))
        return VMCTL_EXIT_USAGE;
    if (strncmp(spec, "backing=", 8) == 0) {
        if (!check_name("image-create", spec + 8) ||
            (third && !parse_mib("image-create", third, &mib)))
            return VMCTL_EXIT_USAGE;
        if (mib)
            snprintf(body, sizeof(body), "{\"name\":\"%s\",\"backing\":\"%s\",\"size_mib\":%ld}",
                     name, spec + 8, mib);
        else
            snprintf(body, sizeof(body), "{\"name\":\"%s\",\"backing\":\"%s\"}", name, spec + 8);
        snprintf(line, sizeof(line), "Image '%s' created: an overlay on '%s'", name, spec + 8);
    } else {
        if (!parse_mib("image-create", spec, &mib))
            return VMCTL_EXIT_USAGE;
        if (third && strcmp(third, "qcow2") != 0 && strcmp(third, "raw") != 0) {
            vmctl_errorf("image-create: invalid format '%s': qcow2 or raw", third);
            return VMCTL_EXIT_USAGE;
        }
        snprintf(body, sizeof(body), "{\"name\":\"%s\",\"format\":\"%s\",\"size_mib\":%ld}", name,
                 third ? third : "qcow2", mib);
        snprintf(line, sizeof(line), "Image '%s' created (%s, %ld MiB)", name,
                 third ? third : "qcow2", mib);
    }
    rc = vmctl_call(c, a, "POST", "/v1/images", body, &r);
    return rc ? rc : vmctl_done(a, &r, line);
}

int vmctl_cmd_image_delete(struct vmctl_client *c, const struct vmctl_args *a)
{
    struct vmctl_response r vmctl_autoresponse = {0};
    char path[128], line[128];
    int rc;

    if (!check_name("image-delete", a->argv[0]))
        return VMCTL_EXIT_USAGE;
    snprintf(path, sizeof(path), "/v1/images/%s", a->argv[0]);
    rc = vmctl_call(c, a, "DELETE", path, NULL, &r);
    snprintf(line, sizeof(line), "Image '%s' deleted", a->argv[0]);
    return rc ? rc : vmctl_done(a, &r, line);
}

int vmctl_cmd_image_resize(struct vmctl_client *c, const struct vmctl_args *a)
{
    struct vmctl_response r vmctl_autoresponse = {0};
    char path[128], body[64], line[160];
    long mib;
    int rc;

    if (!check_name("image-resize", a->argv[0]) || !parse_mib("image-resize", a->argv[1], &mib))
        return VMCTL_EXIT_USAGE;
    snprintf(path, sizeof(path), "/v1/images/%s/resize", a->argv[0]);
    snprintf(body, sizeof(body), "{\"size_mib\":%ld}", mib);
    rc = vmctl_call(c, a, "POST", path, body, &r);
    snprintf(line, sizeof(line), "Image '%s' resized to %ld MiB", a->argv[0], mib);
    return rc ? rc : vmctl_done(a, &r, line);
}

/* The blocks, one line each: "  resize, delete: REASON (for 12.3 s)". */
static int print_blocks(struct json_object *img)
{
    struct json_object *blocks = array_field(img, "blocks");
    size_t n = blocks ? json_object_array_length(blocks) : 0;

    printf("Blocks:%s\n", n ? "" : "      none");
    for (size_t i = 0; i < n; i++) {
        struct json_object *b = json_object_array_get_idx(blocks, i), *age = NULL;
        char ops[64], when[32];

        join(b, "ops", ops, sizeof(ops));
        json_object_object_get_ex(b, "age_ms", &age);
        vmctl_format_duration((uint64_t)json_object_get_int64(age), when, sizeof(when));
        printf("  %s: %s (for %s)\n", ops, vmctl_field(b, "reason"), when);
    }
    return fflush(stdout) == EOF ? VMCTL_EXIT_FAILED : VMCTL_EXIT_OK;
}

int vmctl_cmd_image_info(struct vmctl_client *c, const struct vmctl_args *a)
{
    struct vmctl_response r vmctl_autoresponse = {0};
    vmctl_autotable struct vmctl_table *t = vmctl_table_new(2, NULL);
    struct json_object *img, *q = NULL, *actual = NULL;
    char path[128], size[32], disk[32], users[256];
    int rc;

    if (!check_name("image-info", a->argv[0]))
        return VMCTL_EXIT_USAGE;
    snprintf(path, sizeof(path), "/v1/images/%s", a->argv[0]);
    rc = vmctl_call(c, a, "GET", path, NULL, &r);
    if (rc || a->json)
        return rc ? rc : vmctl_print_json(r.json, a->pretty);
    if (!(img = vmctl_body(&r)) || !t)
        return VMCTL_EXIT_FAILED;
    vmctl_format_bytes((uint64_t)size_bytes(img), size, sizeof(size));
    json_object_object_get_ex(img, "qemu_img", &q);
    json_object_object_get_ex(q, "actual-size", &actual);
    if (actual)
        vmctl_format_bytes((uint64_t)json_object_get_int64(actual), disk, sizeof(disk));
    else
        snprintf(disk, sizeof(disk), "-");
    join(img, "used_by", users, sizeof(users));
    const char *const rows[][2] = {
        {"Name:", vmctl_field(img, "name")},
        {"Format:", vmctl_field(img, "format")},
        {"Size:", size},
        {"On disk:", disk},
        {"Backing:", vmctl_field(img, "backing")},
        {"Overlays:", vmctl_field(img, "overlays")},
        {"Used by:", users},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        if (vmctl_table_add(t, rows[i]) < 0)
            return VMCTL_EXIT_FAILED;
    if (vmctl_table_print(t, stdout, 0) < 0)
        return VMCTL_EXIT_FAILED;
    return print_blocks(img);
}
