/* SPDX-License-Identifier: MIT */
/*
 * config.c - a domain's config: JSON <-> struct vmd_domain_config.
 *
 * Parsing is one pass over the object's keys: each key is looked up in a
 * table of fields, each field has its own checker that writes into a
 * scratch struct, and the scratch struct is moved into the caller's only
 * when every field passed (rule 5: a failure changes nothing). Messages
 * name the field and say what was expected, so an API user sees
 * "memory_mib: 0 is out of range 1..1048576" and not "bad request".
 */
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"

#define MEMORY_MIB_MAX   1048576u
#define MEMORY_MIB_DEF   128u
#define VCPUS_MAX        64u
#define EMULATOR_DEFAULT "qemu-system-x86_64"
#define EXTRA_ARG_MAX    4096u /* bytes of one extra argument */

static const char *const machine_names[] = {
    [VMD_MACHINE_PC] = "pc",
    [VMD_MACHINE_Q35] = "q35",
    [VMD_MACHINE_NONE] = "none",
};
static const char *const accel_names[] = {
    [VMD_ACCEL_AUTO] = "auto",
    [VMD_ACCEL_KVM] = "kvm",
    [VMD_ACCEL_TCG] = "tcg",
};

/* What the parser has seen so far; moved into the caller's on success. */
struct scratch {
    struct vmd_domain_config cfg;
    bool has_name, has_uuid;
};

static void free_args(char **args, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        free(args[i]);
    free(args);
}

void vmd_config_clear(struct vmd_domain_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->emulator);
    free_args(cfg->extra_args, cfg->n_extra_args);
    memset(cfg, 0, sizeof(*cfg));
}

/* A JSON string without NUL bytes, or -EINVAL naming @field. */
static int get_string(struct json_object *v, const char *field, const char **out, moor_error *err)
{
    if (!json_object_is_type(v, json_type_string))
        return moor_error_set(err, -EINVAL, "%s: expected a string", field);
    const char *s = json_object_get_string(v);
    if (strlen(s) != (size_t)json_object_get_string_len(v))
        return moor_error_set(err, -EINVAL, "%s: contains a NUL byte", field);
    *out = s;
    return 0;
}

static int get_uint(struct json_object *v, const char *field, uint64_t lo, uint64_t hi,
                    uint64_t *out, moor_error *err)
{
    if (!json_object_is_type(v, json_type_int))
        return moor_error_set(err, -EINVAL, "%s: expected an integer", field);
    int64_t n = json_object_get_int64(v);
    if (n < 0 || (uint64_t)n < lo || (uint64_t)n > hi)
        return moor_error_set(err, -EINVAL, "%s: %s is out of range %llu..%llu", field,
                              json_object_to_json_string(v), (unsigned long long)lo,
                              (unsigned long long)hi);
    *out = (uint64_t)n;
    return 0;
}

static int get_enum(struct json_object *v, const char *field, const char *const *names, size_t n,
                    int *out, moor_error *err)
{
    const char *s;
    int rc = get_string(v, field, &s, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (int)i;
            return 0;
        }
    }
    return moor_error_set(err, -EINVAL, "%s: '%.64s' is not one of %s, %s, %s", field, s, names[0],
                          names[1], names[2]);
}

static bool name_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

static int field_name(struct json_object *v, struct scratch *s, moor_error *err)
{
    const char *name;
    int rc = get_string(v, "name", &name, err);
    if (rc < 0)
        return rc;
    size_t len = strlen(name);
    if (len == 0 || len > VMD_NAME_MAX)
        return moor_error_set(err, -EINVAL, "name: must be 1..%d characters, not %zu", VMD_NAME_MAX,
                              len);
    for (const char *p = name; *p; p++)
        if (!name_char_ok(*p))
            return moor_error_set(err, -EINVAL,
                                  "name: '%.64s' has a character outside [A-Za-z0-9._-]", name);
    moor_uuid u;
    if (moor_uuid_parse(name, &u, NULL) == 0)
        return moor_error_set(err, -EINVAL, "name: '%s' is a UUID, which would shadow one", name);
    memcpy(s->cfg.name, name, len + 1);
    s->has_name = true;
    return 0;
}

static int field_uuid(struct json_object *v, struct scratch *s, moor_error *err)
{
    const char *text;
    int rc = get_string(v, "uuid", &text, err);
    if (rc < 0)
        return rc;
    if (moor_uuid_parse(text, &s->cfg.uuid, NULL) < 0)
        return moor_error_set(err, -EINVAL, "uuid: '%.64s' is not a canonical UUID", text);
    s->has_uuid = true;
    return 0;
}

static int field_memory(struct json_object *v, struct scratch *s, moor_error *err)
{
    return get_uint(v, "memory_mib", 1, MEMORY_MIB_MAX, &s->cfg.memory_mib, err);
}

static int field_vcpus(struct json_object *v, struct scratch *s, moor_error *err)
{
    uint64_t n = 0;
    int rc = get_uint(v, "vcpus", 1, VCPUS_MAX, &n, err);
    if (rc == 0)
        s->cfg.vcpus = (unsigned)n;
    return rc;
}

static int field_machine(struct json_object *v, struct scratch *s, moor_error *err)
{
    int m;
    int rc = get_enum(v, "machine", machine_names, 3, &m, err);
    if (rc == 0)
        s->cfg.machine = (enum vmd_machine)m;
    return rc;
}

static int field_accel(struct json_object *v, struct scratch *s, moor_error *err)
{
    int a;
    int rc = get_enum(v, "accel", accel_names, 3, &a, err);
    if (rc == 0)
        s->cfg.accel = (enum vmd_accel)a;
    return rc;
}

static int field_emulator(struct json_object *v, struct scratch *s, moor_error *err)
{
    const char *path;
    int rc = get_string(v, "emulator", &path, err);
    if (rc < 0)
        return rc;
    size_t len = strlen(path);
    if (len == 0 || len >= PATH_MAX)
        return moor_error_set(err, -EINVAL, "emulator: must be 1..%d bytes", PATH_MAX - 1);
    for (const char *p = path; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return moor_error_set(err, -EINVAL, "emulator: contains a control character");
    if (path[0] != '/' && strchr(path, '/'))
        return moor_error_set(
            err, -EINVAL, "emulator: '%.64s' is neither an absolute path nor a bare name", path);
    char *copy = strdup(path);
    if (!copy)
        return moor_error_set(err, -ENOMEM, "emulator: out of memory");
    free(s->cfg.emulator);
    s->cfg.emulator = copy;
    return 0;
}

static int field_extra_args(struct json_object *v, struct scratch *s, moor_error *err)
{
    if (!json_object_is_type(v, json_type_array))
        return moor_error_set(err, -EINVAL, "extra_args: expected an array of strings");
    size_t n = json_object_array_length(v);
    if (n > VMD_EXTRA_ARGS_MAX)
        return moor_error_set(err, -EINVAL, "extra_args: %zu arguments, at most %d", n,
                              VMD_EXTRA_ARGS_MAX);
    char **args = n ? calloc(n, sizeof(*args)) : NULL;
    if (n && !args)
        return moor_error_set(err, -ENOMEM, "extra_args: out of memory");
    for (size_t i = 0; i < n; i++) {
        const char *a;
        char field[32];
        snprintf(field, sizeof(field), "extra_args[%zu]", i);
        int rc = get_string(json_object_array_get_idx(v, i), field, &a, err);
        if (rc == 0 && strlen(a) > EXTRA_ARG_MAX)
            rc = moor_error_set(err, -EINVAL, "%s: longer than %u bytes", field, EXTRA_ARG_MAX);
        if (rc == 0 && !(args[i] = strdup(a)))
            rc = moor_error_set(err, -ENOMEM, "%s: out of memory", field);
        if (rc < 0) {
            free_args(args, (unsigned)n);
            return rc;
        }
    }
    free_args(s->cfg.extra_args, s->cfg.n_extra_args);
    s->cfg.extra_args = args;
    s->cfg.n_extra_args = (unsigned)n;
    return 0;
}

static const char *const bus_names[] = {
    [VMD_BUS_VIRTIO] = "virtio",
    [VMD_BUS_IDE] = "ide",
};

/* One element of "disks": {"image": NAME, "bus": "virtio"|"ide", "readonly": bool}. */
static int parse_disk(struct json_object *v, const char *field, struct vmd_disk *d, moor_error *err)
{
    const char *image = NULL;

    if (!json_object_is_type(v, json_type_object))
        return moor_error_set(err, -EINVAL, "%s: expected an object", field);
    memset(d, 0, sizeof(*d));
    json_object_object_foreach(v, key, val)
    {
        int rc = 0;

        if (strcmp(key, "image") == 0) {
            rc = get_string(val, field, &image, err);
            if (rc == 0 && !vmd_config_name_ok(image))
                rc = moor_error_set(err, -EINVAL,
                                    "%s.image: '%.64s' is not an image name "
                                    "([A-Za-z0-9._-]{1,%d}, not . or ..)",
                                    field, image, VMD_NAME_MAX);
        } else if (strcmp(key, "bus") == 0) {
            const char *bus;

            rc = get_string(val, field, &bus, err);
            if (rc == 0 && strcmp(bus, "virtio") == 0)
                d->bus = VMD_BUS_VIRTIO;
            else if (rc == 0 && strcmp(bus, "ide") == 0)
                d->bus = VMD_BUS_IDE;
            else if (rc == 0)
                rc = moor_error_set(err, -EINVAL, "%s.bus: '%.16s' is not virtio or ide", field,
                                    bus);
        } else if (strcmp(key, "readonly") == 0) {
            if (!json_object_is_type(val, json_type_boolean))
                rc = moor_error_set(err, -EINVAL, "%s.readonly: expected true or false", field);
            d->readonly = json_object_get_boolean(val);
        } else {
            rc = moor_error_set(err, -EINVAL, "%s: unknown field '%.64s'", field, key);
        }
        if (rc < 0)
            return rc;
    }
    if (!image)
        return moor_error_set(err, -EINVAL, "%s.image: required", field);
    if (d->bus == VMD_BUS_IDE && d->readonly)
        return moor_error_set(err, -EINVAL, "%s: an ide disk cannot be read-only (use virtio)",
                              field);
    memcpy(d->image, image, strlen(image) + 1);
    return 0;
}

static int field_disks(struct json_object *v, struct scratch *s, moor_error *err)
{
    struct vmd_disk disks[VMD_DISKS_MAX];

    if (!json_object_is_type(v, json_type_array))
        return moor_error_set(err, -EINVAL, "disks: expected an array of objects");
    size_t n = json_object_array_length(v);
    if (n > VMD_DISKS_MAX)
        return moor_error_set(err, -EINVAL, "disks: %zu disks, at most %d", n, VMD_DISKS_MAX);
    for (size_t i = 0; i < n; i++) {
        char field[32];

        snprintf(field, sizeof(field), "disks[%zu]", i);
        int rc = parse_disk(json_object_array_get_idx(v, i), field, &disks[i], err);
        for (size_t j = 0; rc == 0 && j < i; j++)
            if (strcmp(disks[j].image, disks[i].image) == 0)
                rc = moor_error_set(err, -EINVAL, "%s: image '%s' is already disks[%zu]", field,
                                    disks[i].image, j);
        if (rc < 0)
            return rc;
    }
    memcpy(s->cfg.disks, disks, n * sizeof(disks[0]));
    s->cfg.n_disks = (unsigned)n;
    return 0;
}

static const struct field {
    const char *key;
    int (*parse)(struct json_object *v, struct scratch *s, moor_error *err);
} fields[] = {
    {"name", field_name},         {"uuid", field_uuid},
    {"memory_mib", field_memory}, {"vcpus", field_vcpus},
    {"machine", field_machine},   {"emulator", field_emulator},
    {"accel", field_accel},       {"extra_args", field_extra_args},
    {"disks", field_disks},
};

static const struct field *field_find(const char *key)
{
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if (strcmp(fields[i].key, key) == 0)
            return &fields[i];
    return NULL;
}

/* Defaults for everything a body may leave out (but the uuid). */
static int scratch_init(struct scratch *s, moor_error *err)
{
    memset(s, 0, sizeof(*s));
    s->cfg.memory_mib = MEMORY_MIB_DEF;
    s->cfg.vcpus = 1;
    s->cfg.machine = VMD_MACHINE_PC;
    s->cfg.accel = VMD_ACCEL_AUTO;
    if (!(s->cfg.emulator = strdup(EMULATOR_DEFAULT)))
        return moor_error_set(err, -ENOMEM, "config: out of memory");
    return 0;
}

static int parse_fields(struct json_object *json, struct scratch *s, moor_error *err)
{
    json_object_object_foreach(json, key, val)
    {
        const struct field *f = field_find(key);
        if (!f)
            return moor_error_set(err, -EINVAL, "unknown field '%.64s'", key);
        int rc = f->parse(val, s, err);
        if (rc < 0)
            return rc;
    }
    if (!s->has_name)
        return moor_error_set(err, -EINVAL, "name: required");
    if (!s->has_uuid) {
        int rc = moor_uuid_generate(&s->cfg.uuid, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int vmd_config_parse(struct json_object *json, struct vmd_domain_config *out, moor_error *err)
{
    struct scratch s;

    if (!out)
        return moor_error_set(err, -EINVAL, "config: no output");
    if (!json_object_is_type(json, json_type_object))
        return moor_error_set(err, -EINVAL, "config: expected a JSON object");
    int rc = scratch_init(&s, err);
    if (rc == 0)
        rc = parse_fields(json, &s, err);
    if (rc < 0) {
        vmd_config_clear(&s.cfg);
        return rc;
    }
    *out = s.cfg;
    return 0;
}

const char *vmd_config_machine_name(enum vmd_machine m)
{
    return (unsigned)m < 3 ? machine_names[m] : "?";
}

const char *vmd_config_accel_name(enum vmd_accel a)
{
    return (unsigned)a < 3 ? accel_names[a] : "?";
}

const char *vmd_config_bus_name(enum vmd_disk_bus b)
{
    return (unsigned)b < 2 ? bus_names[b] : "?";
}

bool vmd_config_name_ok(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > VMD_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return false;
    for (const char *p = name; *p; p++)
        if (!name_char_ok(*p))
            return false;
    return true;
}

/* Adds @val (NULL: -ENOMEM) to @o under @key, consuming it. */
static int put(struct json_object *o, const char *key, struct json_object *val)
{
    if (!val || json_object_object_add(o, key, val) < 0) {
        json_object_put(val);
        return -ENOMEM;
    }
    return 0;
}

static int put_args(struct json_object *o, const struct vmd_domain_config *cfg)
{
    struct json_object *arr = json_object_new_array();
    if (!arr)
        return -ENOMEM;
    for (unsigned i = 0; i < cfg->n_extra_args; i++) {
        struct json_object *a = json_object_new_string(cfg->extra_args[i]);
        if (!a || json_object_array_add(arr, a) < 0) {
            json_object_put(a);
            json_object_put(arr);
            return -ENOMEM;
        }
    }
    return put(o, "extra_args", arr);
}

/* "disks", only when there are some (configs without disks read as before). */
static int put_disks(struct json_object *o, const struct vmd_domain_config *cfg)
{
    struct json_object *arr;

    if (!cfg->n_disks)
        return 0;
    if (!(arr = json_object_new_array()))
        return -ENOMEM;
    for (unsigned i = 0; i < cfg->n_disks; i++) {
        struct json_object *d = json_object_new_object();

        if (!d || json_object_array_add(arr, d) < 0) {
            json_object_put(d);
            json_object_put(arr);
            return -ENOMEM;
        }
        /* d is arr's now: freeing arr frees it */
        if (put(d, "image", json_object_new_string(cfg->disks[i].image)) < 0 ||
            put(d, "bus", json_object_new_string(vmd_config_bus_name(cfg->disks[i].bus))) < 0 ||
            put(d, "readonly", json_object_new_boolean(cfg->disks[i].readonly)) < 0) {
            json_object_put(arr);
            return -ENOMEM;
        }
    }
    return put(o, "disks", arr);
}

struct json_object *vmd_config_to_json(const struct vmd_domain_config *cfg)
{
    char uuid[MOOR_UUID_STRING_SIZE];
    struct json_object *o = json_object_new_object();

    if (!o)
        return NULL;
    moor_uuid_format(&cfg->uuid, uuid);
    if (put(o, "name", json_object_new_string(cfg->name)) < 0 ||
        put(o, "uuid", json_object_new_string(uuid)) < 0 ||
        put(o, "memory_mib", json_object_new_int64((int64_t)cfg->memory_mib)) < 0 ||
        put(o, "vcpus", json_object_new_int64(cfg->vcpus)) < 0 ||
        put(o, "machine", json_object_new_string(vmd_config_machine_name(cfg->machine))) < 0 ||
        put(o, "emulator", json_object_new_string(cfg->emulator ? cfg->emulator : "")) < 0 ||
        put(o, "accel", json_object_new_string(vmd_config_accel_name(cfg->accel))) < 0 ||
        put_args(o, cfg) < 0 || put_disks(o, cfg) < 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

int vmd_config_copy(struct vmd_domain_config *dst, const struct vmd_domain_config *src)
{
    struct vmd_domain_config c = *src;

    c.emulator = NULL;
    c.extra_args = NULL;
    c.n_extra_args = 0;
    if (src->emulator && !(c.emulator = strdup(src->emulator)))
        return -ENOMEM;
    if (src->n_extra_args && !(c.extra_args = calloc(src->n_extra_args, sizeof(char *)))) {
        vmd_config_clear(&c);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < src->n_extra_args; i++, c.n_extra_args++) {
        if (!(c.extra_args[i] = strdup(src->extra_args[i]))) {
            vmd_config_clear(&c);
            return -ENOMEM;
        }
    }
    *dst = c;
    return 0;
}
