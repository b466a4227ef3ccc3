/* SPDX-License-Identifier: MIT */
/*
 * test-images.c - the image pool of moor-vmd over its real socket, with
 * real qemu-img (a missing one fails every test) and the fake QEMU for
 * domains: every /v1/images route and error (400 bad names and sizes, 404,
 * 409 with the reason that refuses, 413), the lifetime and busy rules of
 * docs/vmd.md ("Images": a domain's disk blocks delete, an overlay blocks
 * its backing's resize, delete and writable use), resize offline and
 * through a running domain's QMP block_resize, undefine-then-delete, and a
 * daemon restart that reloads the pool and its backing links.
 *
 * Each test runs its own daemon on fresh directories (harness.h) and ends
 * by stopping it with SIGTERM: it must exit 0, which it does only with
 * its live-object census at zero (no image object leaked).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "vh-fx.h"

static int fx_setup(void **state)
{
    static const char *const flags[] = {"--job-timeout", "5", NULL};

    return vh_fx_setup(state, flags);
}

/* ---- helpers --------------------------------------------------------------- */

static void create(struct vh_fx *fx, const char *name, const char *format, int size_mib)
{
    char body[200];

    snprintf(body, sizeof(body), "{\"name\":\"%s\",\"format\":\"%s\",\"size_mib\":%d}", name,
             format, size_mib);
    vh_fx_ok(fx->c, 201, "POST", "/v1/images", body);
}

static void overlay(struct vh_fx *fx, const char *name, const char *backing)
{
    char body[200];

    snprintf(body, sizeof(body), "{\"name\":\"%s\",\"backing\":\"%s\"}", name, backing);
    vh_fx_ok(fx->c, 201, "POST", "/v1/images", body);
}

/* Define @name on the fake QEMU with @disks (a JSON array). */
static void define_with(struct vh_fx *fx, long status, const char *name, const char *disks)
{
    if (vh_expect(fx->c, status, NULL, "POST", "/v1/domains",
                  "{\"name\":\"%s\",\"emulator\":\"%s\",\"machine\":\"none\",\"accel\":\"tcg\","
                  "\"memory_mib\":16,\"disks\":%s}",
                  name, fx->d.fake_qemu, disks) != 0)
        fail_msg("define %s with %s: expected %ld (see above)", name, disks, status);
}

static bool image_file(struct vh_fx *fx, const char *name)
{
    char path[PATH_MAX + 80];

    snprintf(path, sizeof(path), "%s/images/%s", fx->d.state_dir, name);
    return access(path, F_OK) == 0;
}

static int64_t size_of(struct vh_fx *fx, const char *name)
{
    char path[160];

    snprintf(path, sizeof(path), "/v1/images/%s", name);
    json_object *j = vh_fx_json(fx->c, 200, "GET", path, NULL);
    json_object *q = vh_json_get(j, "qemu_img"), *v = vh_json_get(q, "virtual-size");
    int64_t size = v ? json_object_get_int64(v) : -1;
    json_object *cached = vh_json_get(j, "virtual_size");
    assert_true(cached && json_object_get_int64(cached) == size); /* view == file */
    json_object_put(j);
    return size;
}

/* ---- tests ------------------------------------------------------------------- */

static void test_create_list_info_delete(void **state)
{
    struct vh_fx *fx = *state;
    json_object *j, *arr;

    create(fx, "zeta.raw", "raw", 8);
    create(fx, "alpha.qcow2", "qcow2", 64);
    assert_true(image_file(fx, "alpha.qcow2") && image_file(fx, "zeta.raw"));
    j = vh_fx_json(fx->c, 200, "GET", "/v1/images", NULL);
    arr = vh_json_get(j, "images");
    assert_int_equal(json_object_array_length(arr), 2);
    assert_string_equal(vh_json_str(json_object_array_get_idx(arr, 0), "name"), "alpha.qcow2");
    assert_string_equal(vh_json_str(json_object_array_get_idx(arr, 1), "format"), "raw");
    json_object_put(j);
    assert_true(size_of(fx, "alpha.qcow2") == 64 << 20);
    assert_true(size_of(fx, "zeta.raw") == 8 << 20);

    j = vh_fx_json(fx->c, 200, "DELETE", "/v1/images/alpha.qcow2", NULL);
    assert_true(json_object_get_boolean(vh_json_get(j, "deleted")));
    json_object_put(j);
    assert_false(image_file(fx, "alpha.qcow2"));
    vh_fx_error(fx->c, 404, "ENOENT", "no image alpha.qcow2", "GET", "/v1/images/alpha.qcow2",
                NULL);
    vh_fx_error(fx->c, 404, "ENOENT", "no image alpha.qcow2", "DELETE", "/v1/images/alpha.qcow2",
                NULL);
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/images/zeta.raw", NULL);
    j = vh_fx_json(fx->c, 200, "GET", "/v1/images", NULL);
    assert_int_equal(json_object_array_length(vh_json_get(j, "images")), 0);
    json_object_put(j);
}

static void test_bad_requests(void **state)
{
    struct vh_fx *fx = *state;
    char body[300], name[80];
    const char *bad_names[] = {"..", ".", "a/b", "", "sp ace", "n\\u00e9"};

    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        snprintf(body, sizeof(body), "{\"name\":\"%s\",\"format\":\"raw\",\"size_mib\":1}",
                 bad_names[i]);
        vh_fx_error(fx->c, 400, "EINVAL", "must be an image name", "POST", "/v1/images", body);
    }
    memset(name, 'a', 65);
    name[65] = '\0';
    snprintf(body, sizeof(body), "{\"name\":\"%s\",\"format\":\"raw\",\"size_mib\":1}", name);
    vh_fx_error(fx->c, 400, "EINVAL", "must be an image name", "POST", "/v1/images", body);
    vh_fx_error(fx->c, 400, "EINVAL", "size_mib", "POST", "/v1/images",
                "{\"name\":\"a\",\"format\":\"raw\",\"size_mib\":0}");
    vh_fx_error(fx->c, 400, "EINVAL", "size_mib", "POST", "/v1/images",
                "{\"name\":\"a\",\"format\":\"raw\",\"size_mib\":1048577}");
    vh_fx_error(fx->c, 400, "EINVAL", "size_mib", "POST", "/v1/images",
                "{\"name\":\"a\",\"format\":\"raw\",\"size_mib\":\"8\"}");
    vh_fx_error(fx->c, 400, "EINVAL", "\"size_mib\" is required", "POST", "/v1/images",
                "{\"name\":\"a\",\"format\":\"raw\"}");
    vh_fx_error(fx->c, 400, "EINVAL", "\"name\" is required", "POST", "/v1/images",
                "{\"format\":\"raw\",\"size_mib\":1}");
    vh_fx_error(fx->c, 400, "EINVAL", "\"format\" must be", "POST", "/v1/images",
                "{\"name\":\"a\",\"format\":\"vmdk\",\"size_mib\":1}");
    vh_fx_error(fx->c, 400, "EINVAL", "unknown field", "POST", "/v1/images",
                "{\"name\":\"a\",\"format\":\"raw\",\"size_mib\":1,\"preallocate\":true}");
    vh_fx_error(fx->c, 400, "EINVAL", "always qcow2", "POST", "/v1/images",
                "{\"name\":\"a\",\"backing\":\"b\",\"format\":\"raw\"}");
    vh_fx_error(fx->c, 400, "EINVAL", "its own backing", "POST", "/v1/images",
                "{\"name\":\"a\",\"backing\":\"a\"}");
    vh_fx_error(fx->c, 400, "EINVAL", "an image name", "GET", "/v1/images/a%20b", NULL);
    vh_fx_error(fx->c, 404, "ENOENT", "no image nope", "POST", "/v1/images",
                "{\"name\":\"a\",\"backing\":\"nope\"}");
    assert_false(image_file(fx, "a"));
    vh_fx_error(fx->c, 404, "ENOENT", "no image nope", "POST", "/v1/images/nope/resize",
                "{\"size_mib\":2}");

    create(fx, "a", "raw", 4);
    vh_fx_error(fx->c, 409, "EEXIST", "image a already exists", "POST", "/v1/images",
                "{\"name\":\"a\",\"format\":\"qcow2\",\"size_mib\":1}");
    vh_fx_error(fx->c, 400, "EINVAL", "shrinking is not supported", "POST", "/v1/images/a/resize",
                "{\"size_mib\":2}");
    vh_fx_error(fx->c, 400, "EINVAL", "\"size_mib\" is required", "POST", "/v1/images/a/resize",
                "{}");
    vh_fx_error(fx->c, 400, "EINVAL", "unknown field", "POST", "/v1/images/a/resize",
                "{\"size_mib\":8,\"shrink\":true}");
    vh_fx_error(fx->c, 400, "EINVAL", "size_mib", "POST", "/v1/images/a/resize",
                "{\"size_mib\":2000000}");
    assert_true(size_of(fx, "a") == 4 << 20); /* a failure changes nothing */

    /* A stray file in the pool directory is not overwritten. */
    char stray[PATH_MAX + 80];
    snprintf(stray, sizeof(stray), "%s/images/stray", fx->d.state_dir);
    int fd = open(stray, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "keep", 4), 4);
    close(fd);
    vh_fx_error(fx->c, 409, "EEXIST", "not a known image", "POST", "/v1/images",
                "{\"name\":\"stray\",\"format\":\"raw\",\"size_mib\":1}");
    struct stat st;
    assert_int_equal(stat(stray, &st), 0);
    assert_int_equal(st.st_size, 4);

    /* A body over 1 MiB: 413. */
    size_t big = (1u << 20) + 16;
    char *huge = malloc(big + 1);
    assert_non_null(huge);
    memset(huge, ' ', big);
    huge[0] = '{';
    huge[big - 1] = '}';
    huge[big] = '\0';
    vh_fx_error(fx->c, 413, "EMSGSIZE", NULL, "POST", "/v1/images", huge);
    free(huge);
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/images/a", NULL);
}

static void test_overlay_blocks_backing(void **state)
{
    struct vh_fx *fx = *state;
    json_object *j;

    create(fx, "base.qcow2", "qcow2", 32);
    overlay(fx, "web1.qcow2", "base.qcow2");
    assert_true(size_of(fx, "web1.qcow2") == 32 << 20); /* the backing's size */
    j = vh_fx_json(fx->c, 200, "GET", "/v1/images/web1.qcow2", NULL);
    assert_string_equal(vh_json_str(j, "backing"), "base.qcow2");
    json_object_put(j);

    vh_fx_error(fx->c, 409, "EBUSY", "image base.qcow2 is the backing file of overlay web1.qcow2",
                "DELETE", "/v1/images/base.qcow2", NULL);
    vh_fx_error(fx->c, 409, "EBUSY", "image base.qcow2 is the backing file of overlay web1.qcow2",
                "POST", "/v1/images/base.qcow2/resize", "{\"size_mib\":64}");
    /* Writable use of a backing file would corrupt its overlays; read-only is fine. */
    define_with(fx, 409, "rw", "[{\"image\":\"base.qcow2\"}]");
    define_with(fx, 201, "ro", "[{\"image\":\"base.qcow2\",\"readonly\":true}]");
    assert_true(image_file(fx, "base.qcow2"));

    vh_fx_ok(fx->c, 200, "DELETE", "/v1/images/web1.qcow2", NULL);
    vh_fx_error(fx->c, 409, "EBUSY", "image base.qcow2 is used by domain ro", "DELETE",
                "/v1/images/base.qcow2", NULL);
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/domains/ro", NULL);
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/images/base.qcow2", NULL);
    assert_false(image_file(fx, "base.qcow2"));
}

static void test_domain_disks(void **state)
{
    struct vh_fx *fx = *state;
    char disks[2048];
    size_t used = 0;
    json_object *j;

    create(fx, "base.qcow2", "qcow2", 16);
    create(fx, "data.raw", "raw", 4);
    define_with(fx, 201, "web1",
                "[{\"image\":\"base.qcow2\",\"bus\":\"virtio\"},{\"image\":\"data.raw\","
                "\"bus\":\"ide\",\"readonly\":false}]");
    vh_fx_error(fx->c, 409, "EBUSY", "image base.qcow2 is used by domain web1", "DELETE",
                "/v1/images/base.qcow2", NULL);
    vh_fx_error(fx->c, 409, "EBUSY", "image data.raw is used by domain web1", "DELETE",
                "/v1/images/data.raw", NULL);
    j = vh_fx_json(fx->c, 200, "GET", "/v1/images/base.qcow2", NULL);
    assert_string_equal(
        json_object_get_string(json_object_array_get_idx(vh_json_get(j, "used_by"), 0)), "web1");
    json_object_put(j);
    j = vh_fx_json(fx->c, 200, "GET", "/v1/domains/web1", NULL);
    assert_int_equal(json_object_array_length(vh_json_get(vh_json_get(j, "config"), "disks")), 2);
    json_object_put(j);

    /* An overlay on an image a domain writes to is refused; web1 writes base.qcow2. */
    vh_fx_error(fx->c, 409, "EBUSY", "image base.qcow2 is used by domain web1", "POST",
                "/v1/images", "{\"name\":\"over\",\"backing\":\"base.qcow2\"}");
    assert_false(image_file(fx, "over"));

    /* Refused defines change nothing. */
    vh_fx_error(fx->c, 404, "ENOENT", "disks[0]: no image nope", "POST", "/v1/domains",
                "{\"name\":\"web2\",\"disks\":[{\"image\":\"nope\"}]}");
    vh_fx_error(fx->c, 400, "EINVAL", "an ide disk cannot be read-only", "POST", "/v1/domains",
                "{\"name\":\"web2\",\"disks\":[{\"image\":\"data.raw\",\"bus\":\"ide\","
                "\"readonly\":true}]}");
    vh_fx_error(
        fx->c, 400, "EINVAL", "is already disks[0]", "POST", "/v1/domains",
        "{\"name\":\"web2\",\"disks\":[{\"image\":\"data.raw\"},{\"image\":\"data.raw\"}]}");
    vh_fx_error(fx->c, 400, "EINVAL", "disks[0].bus", "POST", "/v1/domains",
                "{\"name\":\"web2\",\"disks\":[{\"image\":\"data.raw\",\"bus\":\"scsi\"}]}");
    vh_fx_error(fx->c, 400, "EINVAL", "disks[0].image", "POST", "/v1/domains",
                "{\"name\":\"web2\",\"disks\":[{\"image\":\"..\"}]}");
    used += (size_t)snprintf(disks + used, sizeof(disks) - used, "{\"name\":\"web2\",\"disks\":[");
    for (int i = 0; i < 17; i++)
        used += (size_t)snprintf(disks + used, sizeof(disks) - used, "%s{\"image\":\"i%d\"}",
                                 i ? "," : "", i);
    snprintf(disks + used, sizeof(disks) - used, "]}");
    vh_fx_error(fx->c, 400, "EINVAL", "17 disks, at most 16", "POST", "/v1/domains", disks);
    /* A define refused for its name drops the blocks it placed. */
    define_with(fx, 409, "web1", "[{\"image\":\"data.raw\",\"readonly\":true}]");
    j = vh_fx_json(fx->c, 200, "GET", "/v1/images/data.raw", NULL);
    assert_int_equal(json_object_array_length(vh_json_get(j, "used_by")), 1);
    assert_int_equal(json_object_array_length(vh_json_get(j, "blocks")), 1);
    json_object_put(j);

    /* Undefine drops the references and the blocks: delete then works. */
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/domains/web1", NULL);
    j = vh_fx_json(fx->c, 200, "GET", "/v1/images/base.qcow2", NULL);
    assert_int_equal(json_object_array_length(vh_json_get(j, "used_by")), 0);
    assert_int_equal(json_object_array_length(vh_json_get(j, "blocks")), 0);
    json_object_put(j);
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/images/base.qcow2", NULL);
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/images/data.raw", NULL);
}

static void test_resize_offline_and_running(void **state)
{
    struct vh_fx *fx = *state;
    json_object *j, *ret;

    create(fx, "disk.qcow2", "qcow2", 16);
    vh_fx_ok(fx->c, 200, "POST", "/v1/images/disk.qcow2/resize", "{\"size_mib\":24}");
    assert_true(size_of(fx, "disk.qcow2") == 24 << 20);

    define_with(fx, 201, "vm", "[{\"image\":\"disk.qcow2\"}]");
    vh_fx_ok(fx->c, 200, "POST", "/v1/images/disk.qcow2/resize",
             "{\"size_mib\":32}"); /* shut off */
    assert_true(size_of(fx, "disk.qcow2") == 32 << 20);

    assert_true(vh_start_domain(&fx->d, fx->c, "vm", false) > 0);
    j = vh_fx_json(fx->c, 200, "POST", "/v1/images/disk.qcow2/resize", "{\"size_mib\":48}");
    assert_int_equal(json_object_get_int64(vh_json_get(j, "size_mib")), 48);
    json_object_put(j);
    /* QEMU got block_resize on the disk's node (the fake records it). */
    j = vh_fx_json(fx->c, 200, "POST", "/v1/domains/vm/qmp", "{\"execute\":\"query-block\"}");
    ret = json_object_array_get_idx(vh_json_get(j, "return"), 0);
    assert_non_null(ret);
    assert_string_equal(vh_json_str(vh_json_get(ret, "inserted"), "node-name"), "d0-disk.qcow2");
    assert_true(
        json_object_get_int64(vh_json_get(vh_json_get(vh_json_get(ret, "inserted"), "image"),
                                          "virtual-size")) == 48 << 20);
    json_object_put(j);

    /* Running: undefine is refused, so delete stays refused. */
    vh_fx_error(fx->c, 409, "EBUSY", "image disk.qcow2 is used by domain vm", "DELETE",
                "/v1/images/disk.qcow2", NULL);
    vh_fx_ok(fx->c, 200, "POST", "/v1/domains/vm/destroy", NULL);
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/domains/vm", NULL);
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/images/disk.qcow2", NULL);
}

static void test_two_users_refuse_resize(void **state)
{
    struct vh_fx *fx = *state;

    create(fx, "shared.raw", "raw", 4);
    define_with(fx, 201, "a", "[{\"image\":\"shared.raw\",\"readonly\":true}]");
    define_with(fx, 201, "b", "[{\"image\":\"shared.raw\",\"readonly\":true}]");
    vh_fx_error(fx->c, 409, "EBUSY", "image shared.raw is used by domains a and b", "POST",
                "/v1/images/shared.raw/resize", "{\"size_mib\":8}");
    vh_fx_error(fx->c, 409, "EBUSY", "1 more block", "DELETE", "/v1/images/shared.raw", NULL);
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/domains/a", NULL);
    vh_fx_ok(fx->c, 200, "POST", "/v1/images/shared.raw/resize", "{\"size_mib\":8}");
    /* Running with it read-only: QEMU could not resize it; 409 says why. */
    assert_true(vh_start_domain(&fx->d, fx->c, "b", false) > 0);
    vh_fx_error(fx->c, 409, "EBUSY", "domain b runs with image shared.raw read-only", "POST",
                "/v1/images/shared.raw/resize", "{\"size_mib\":12}");
    vh_fx_ok(fx->c, 200, "POST", "/v1/domains/b/destroy", NULL);
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/domains/b", NULL);
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/images/shared.raw", NULL);
}

static void test_restart_reloads_pool(void **state)
{
    struct vh_fx *fx = *state;
    json_object *j;

    create(fx, "base.qcow2", "qcow2", 16);
    overlay(fx, "web1.qcow2", "base.qcow2");
    define_with(fx, 201, "web1", "[{\"image\":\"web1.qcow2\"}]");
    assert_int_equal(vh_restart(&fx->d), 0);
    vmctl_client_free(fx->c);
    fx->c = vh_client_new(&fx->d);
    j = vh_fx_json(fx->c, 200, "GET", "/v1/images/web1.qcow2", NULL);
    assert_string_equal(vh_json_str(j, "backing"), "base.qcow2");
    json_object_put(j);
    vh_fx_error(fx->c, 409, "EBUSY", "image base.qcow2 is the backing file of overlay web1.qcow2",
                "DELETE", "/v1/images/base.qcow2", NULL);
    vh_fx_error(fx->c, 409, "EBUSY", "image web1.qcow2 is used by domain web1", "DELETE",
                "/v1/images/web1.qcow2", NULL);
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/domains/web1", NULL);
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/images/web1.qcow2", NULL);
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/images/base.qcow2", NULL);
}

/* A domain whose image vanished behind the daemon's back still loads after a
 * restart (logged), and its start fails naming the missing image. */
static void test_missing_image_at_load(void **state)
{
    struct vh_fx *fx = *state;
    char path[PATH_MAX + 80];
    int status;

    create(fx, "gone.raw", "raw", 1);
    define_with(fx, 201, "orphan", "[{\"image\":\"gone.raw\"}]");
    assert_int_equal(vh_stop(&fx->d, &status), 0);
    snprintf(path, sizeof(path), "%s/images/gone.raw", fx->d.state_dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(vh_start(&fx->d), 0);
    vmctl_client_free(fx->c);
    fx->c = vh_client_new(&fx->d);
    /* 400, like a missing emulator: the config cannot be started as it is */
    vh_fx_error(fx->c, 400, "EINVAL", "disks[0]: image gone.raw is missing", "POST",
                "/v1/domains/orphan/start", NULL);
    vh_fx_error(fx->c, 404, "ENOENT", "no image gone.raw", "GET", "/v1/images/gone.raw", NULL);
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/domains/orphan", NULL);
}

/* ---- moor-vmctl's image-* commands ------------------------------------------ */

/* Run $MOOR_VMCTL -s SOCKET @args...: its exit status, stdout+stderr in @out. */
static int vmctl(struct vh_fx *fx, char *out, size_t size, const char *const *args)
{
    const char *bin = getenv("MOOR_VMCTL");
    char *argv[16];
    int p[2], status = -1, n = 0;
    size_t used = 0;

    assert_non_null(bin);
    argv[n++] = (char *)bin;
    argv[n++] = (char *)"-s";
    argv[n++] = fx->d.socket_path;
    for (; *args && n < 15; args++)
        argv[n++] = (char *)*args;
    argv[n] = NULL;
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        execv(bin, argv);
        _exit(127);
    }
    close(p[1]);
    for (ssize_t got; used + 1 < size && (got = read(p[0], out + used, size - used - 1)) > 0;)
        used += (size_t)got;
    out[used] = '\0';
    close(p[0]);
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_vmctl_images(void **state)
{
    struct vh_fx *fx = *state;
    char out[8192];

    assert_int_equal(
        vmctl(fx, out, sizeof(out), (const char *[]){"image-create", "base.qcow2", "16", NULL}), 0);
    assert_non_null(strstr(out, "Image 'base.qcow2' created (qcow2, 16 MiB)"));
    assert_int_equal(
        vmctl(fx, out, sizeof(out),
              (const char *[]){"image-create", "top.qcow2", "backing=base.qcow2", NULL}),
        0);
    assert_int_equal(
        vmctl(fx, out, sizeof(out), (const char *[]){"image-create", "d.raw", "4", "raw", NULL}),
        0);
    assert_int_equal(vmctl(fx, out, sizeof(out), (const char *[]){"image-list", NULL}), 0);
    assert_non_null(strstr(out, "NAME        FORMAT  SIZE    BACKING     USED BY  BLOCKED"));
    assert_non_null(
        strstr(out, "base.qcow2  qcow2   16 MiB  -           -        resize, delete, write"));
    assert_non_null(strstr(out, "top.qcow2   qcow2   16 MiB  base.qcow2  -        -"));
    assert_int_equal(
        vmctl(fx, out, sizeof(out), (const char *[]){"image-delete", "base.qcow2", NULL}), 1);
    assert_non_null(strstr(out, "image base.qcow2 is the backing file of overlay top.qcow2"));
    assert_int_equal(
        vmctl(fx, out, sizeof(out), (const char *[]){"image-resize", "d.raw", "8", NULL}), 0);
    assert_non_null(strstr(out, "Image 'd.raw' resized to 8 MiB"));
    assert_int_equal(
        vmctl(fx, out, sizeof(out), (const char *[]){"image-info", "base.qcow2", NULL}), 0);
    assert_non_null(strstr(out, "Overlays:  1"));
    assert_non_null(strstr(out, "resize, delete, write: image base.qcow2 is the backing file"));
    assert_int_equal(
        vmctl(fx, out, sizeof(out), (const char *[]){"--json", "image-info", "d.raw", NULL}), 0);
    json_object *j = json_tokener_parse(out);
    assert_non_null(j);
    assert_true(json_object_get_int64(vh_json_get(j, "size_mib")) == 8);
    json_object_put(j);
    /* Usage errors: exit 2, no request. */
    assert_int_equal(vmctl(fx, out, sizeof(out), (const char *[]){"image-create", "x", NULL}), 2);
    assert_int_equal(vmctl(fx, out, sizeof(out), (const char *[]){"image-create", "..", "4", NULL}),
                     2);
    assert_int_equal(
        vmctl(fx, out, sizeof(out), (const char *[]){"image-resize", "d.raw", "0", NULL}), 2);
    assert_int_equal(
        vmctl(fx, out, sizeof(out), (const char *[]){"image-create", "x", "4", "vmdk", NULL}), 2);
    assert_int_equal(
        vmctl(fx, out, sizeof(out), (const char *[]){"image-delete", "top.qcow2", NULL}), 0);
    assert_int_equal(
        vmctl(fx, out, sizeof(out), (const char *[]){"image-delete", "base.qcow2", NULL}), 0);
    assert_int_equal(vmctl(fx, out, sizeof(out), (const char *[]){"image-delete", "d.raw", NULL}),
                     0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_list_info_delete, fx_setup, vh_fx_teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, fx_setup, vh_fx_teardown),
        cmocka_unit_test_setup_teardown(test_overlay_blocks_backing, fx_setup, vh_fx_teardown),
        cmocka_unit_test_setup_teardown(test_domain_disks, fx_setup, vh_fx_teardown),
        cmocka_unit_test_setup_teardown(test_resize_offline_and_running, fx_setup, vh_fx_teardown),
        cmocka_unit_test_setup_teardown(test_two_users_refuse_resize, fx_setup, vh_fx_teardown),
        cmocka_unit_test_setup_teardown(test_restart_reloads_pool, fx_setup, vh_fx_teardown),
        cmocka_unit_test_setup_teardown(test_missing_image_at_load, fx_setup, vh_fx_teardown),
        cmocka_unit_test_setup_teardown(test_vmctl_images, fx_setup, vh_fx_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
