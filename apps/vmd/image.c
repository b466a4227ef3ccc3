/* SPDX-License-Identifier: MIT */
/*
 * image.c - the image pool: image objects, their users and blocks, and
 * qemu-img.
 *
 * Theory of operation.
 *
 * An image is a lockable moor object in vmd->images, keyed by its name
 * (also its file name in <state_dir>/images) and a uuid made when it is
 * created or loaded (the worker pool's lanes are keyed by uuid). Name,
 * uuid and format never change after the object is made and are read
 * without the mutex; the size, the users, the overlay count and the
 * removed flag are guarded by it.
 *
 * Lifetime is references (seed 003's bdrv_ref): the registry holds one,
 * each domain that names the image in its config holds one (in its
 * struct vmd_disk_refs), each overlay holds one on its backing image, and
 * each API call holds one while it runs. Busy is blocks, each with its
 * reason, on the image's moor_blocker_set:
 *
 *   holder                     ops blocked                 reason
 *   a domain's disk            delete (+ backing if written) image X is used by domain D
 *   an overlay                 resize, delete, write       image X is the backing file of overlay O
 *   create / resize / delete   everything (while it runs)  image X is being created/resized/deleted
 *   a backup job (later)       resize, delete              backup job of domain D
 *
 * An operation checks its op and places its own block under the image
 * mutex, so "check, then start" is one step; the file work (qemu-img,
 * unlink) runs with the mutex dropped, covered by that block. A domain
 * placing a disk block checks USE (and WRITE unless read-only) first,
 * so a define never attaches an image that is being deleted, resized or
 * created. Blocks and references are independent: undefine drops both;
 * a delete refused by a block keeps nothing alive, and a reference alone
 * (an API call in flight) refuses nothing.
 *
 * Lock order: image mutex and domain mutex are never held together. A
 * resize through a running domain drops the image mutex (its block
 * stays) before it takes the domain's job; define and undefine attach and
 * detach with no domain mutex held. Blocker sets' mutexes and the
 * registry's are leaves under either.
 */
#define _GNU_SOURCE
#include "image.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <moor/object.h>

#include "log.h"
#include "process.h"

#define QEMU_IMG "qemu-img"
#define MIB      (UINT64_C(1) << 20)
#define OUT_MAX  16384 /* qemu-img info's JSON */
#define ERR_MAX  512   /* qemu-img's message */

#define OP(x)   MOOR_BLOCKER_OP(VMD_IMAGE_OP_##x)
#define ALL_OPS (OP(RESIZE) | OP(DELETE) | OP(USE) | OP(WRITE) | OP(BACKING))

static const char *const op_names[VMD_IMAGE_OP__COUNT] = {"resize", "delete", "use", "write",
                                                          "backing"};
static const char *const format_names[] = {"qcow2", "raw"};

struct vmd_image {
    moor_lockable parent;
    char name[VMD_NAME_MAX + 1];  /* immutable */
    moor_uuid uuid;               /* immutable */
    enum vmd_image_format format; /* immutable */
    moor_blocker_set blockers;
    /* guarded by the mutex: */
    uint64_t size;                       /* virtual size, bytes */
    vmd_image *backing;                  /* owned reference, or NULL */
    moor_block_token backing_block;      /* our block on backing's set */
    char backing_name[VMD_NAME_MAX + 1]; /* as qemu-img says, even if not in the pool */
    unsigned overlays;                   /* images whose backing we are */
    char (*users)[VMD_NAME_MAX + 1];     /* domains whose config names us */
    unsigned n_users;
    bool removed; /* deleted: no longer in the registry */
};

struct vmd_disk_refs {
    unsigned n;
    char domain[VMD_NAME_MAX + 1];
    struct {
        vmd_image *img; /* owned reference; NULL: missing at load */
        moor_block_token block;
    } disk[VMD_DISKS_MAX];
};

static const moor_class *image_class;
static pthread_once_t image_class_once = PTHREAD_ONCE_INIT;

static void image_dispose(void *obj)
{
    vmd_image *img = obj;

    moor_unblock(&img->backing_block);
    moor_clear(&img->backing);
    moor_blocker_destroy(&img->blockers);
    free(img->users);
}

static void image_class_init(void)
{
    image_class =
        moor_class_new("vmd_image", moor_lockable_class(), sizeof(vmd_image), image_dispose, NULL);
}

/* A new image object (not in the registry). New reference, or NULL. */
static vmd_image *image_new(const char *name, enum vmd_image_format format, moor_error *err)
{
    char label[MOOR_BLOCKER_LABEL_SIZE];

    pthread_once(&image_class_once, image_class_init);
    vmd_image *img = image_class ? moor_object_new(image_class) : NULL;
    if (!img) {
        moor_error_set(err, -ENOMEM, "image %s: out of memory", name);
        return NULL;
    }
    snprintf(img->name, sizeof(img->name), "%s", name);
    img->format = format;
    snprintf(label, sizeof(label), "image %s", name);
    int rc = moor_uuid_generate(&img->uuid, err);
    rc = rc ?: moor_blocker_init(&img->blockers, label, op_names, VMD_IMAGE_OP__COUNT);
    if (rc < 0) {
        moor_unref(img);
        moor_error_set(err, rc, "image %s: cannot set up", name);
        return NULL;
    }
    return img;
}

vmd_image *vmd_image_lookup(struct vmd *vmd, const char *name)
{
    return name && vmd->images ? moor_registry_find_name(vmd->images, name) : NULL;
}

const char *vmd_image_name(vmd_image *img)
{
    return img->name;
}

const moor_uuid *vmd_image_uuid(vmd_image *img)
{
    return &img->uuid;
}

int vmd_image_path(const struct vmd_options *opt, const char *name, char out[PATH_MAX])
{
    int n =
        snprintf(out, PATH_MAX, "%s/images%s%s", opt->state_dir, name ? "/" : "", name ? name : "");
    return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

void vmd_image_node_name(unsigned index, const char *image, char out[VMD_IMAGE_NODE_MAX + 1])
{
    int n = snprintf(out, VMD_IMAGE_NODE_MAX + 1, "d%u-", index);

    for (const char *p = image; *p && n < VMD_IMAGE_NODE_MAX; p++)
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.')
            out[n++] = *p;
    out[n] = '\0';
}

/* ---- users (mutex held) ------------------------------------------------------ */

static int user_add_locked(vmd_image *img, const char *domain)
{
    char(*u)[VMD_NAME_MAX + 1] = realloc(img->users, (img->n_users + 1) * sizeof(*u));

    if (!u)
        return -ENOMEM;
    img->users = u;
    snprintf(u[img->n_users++], sizeof(u[0]), "%s", domain);
    return 0;
}

static void user_remove_locked(vmd_image *img, const char *domain)
{
    for (unsigned i = 0; i < img->n_users; i++) {
        if (strcmp(img->users[i], domain) == 0) {
            memmove(img->users[i], img->users[i + 1],
                    (img->n_users - i - 1) * sizeof(img->users[0]));
            img->n_users--;
            return;
        }
    }
}

/* After a refusal naming the oldest block on @op: the reasons and ages of
 * the others that cover it, so that a delete refused because a domain
 * uses the image still names the backup job reading it meanwhile. */
static int refusal_others(vmd_image *img, enum vmd_image_op op, int rc, moor_error *err)
{
    moor_block_info info[4];
    char msg[512];
    int n = moor_blocker_info(&img->blockers, info, 4), seen = 0;

    if (!err || n <= 1)
        return rc;
    snprintf(msg, sizeof(msg), "%s", moor_error_message(err));
    for (int i = 0; i < n && i < 4; i++) {
        if (!(info[i].ops & MOOR_BLOCKER_OP(op)) || seen++ == 0)
            continue; /* the first covering block is the one named */
        size_t len = strlen(msg);
        snprintf(msg + len, sizeof(msg) - len, "; also blocked: %s (for %.1f s)", info[i].reason,
                 (double)info[i].age_ns / 1e9);
    }
    return seen > 1 ? moor_error_set(err, rc, "%s", msg) : rc;
}

/* -ENOENT if deleted, else the check of @op (-EBUSY with the reason). */
static int usable_locked(vmd_image *img, enum vmd_image_op op, moor_error *err)
{
    if (img->removed)
        return moor_error_set(err, -ENOENT, "image %s was deleted", img->name);
    int rc = moor_blocker_check(&img->blockers, op, err);
    return rc == -EBUSY ? refusal_others(img, op, rc, err) : rc;
}

int vmd_image_block(vmd_image *img, uint64_t ops, moor_block_token *tok, moor_error *err,
                    const char *fmt, ...)
{
    char reason[MOOR_BLOCKER_REASON_SIZE];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    moor_lock(img);
    /* a create, resize or delete in progress blocks USE */
    int rc = usable_locked(img, VMD_IMAGE_OP_USE, err);
    rc = rc ?: moor_block(&img->blockers, ops, tok, err, "%s", reason);
    moor_unlock(img);
    return rc;
}

/* ---- qemu-img --------------------------------------------------------------- */

/* Run qemu-img with @args (NULL-terminated, after "qemu-img"); its stdout
 * into @out (may be NULL). A non-zero exit is -EIO with its message. */
static int qemu_img(const char *const *args, char *out, size_t out_size, moor_error *err)
{
    char *argv[16], msg[ERR_MAX];
    unsigned n = 0;

    argv[n++] = (char *)QEMU_IMG;
    for (; *args && n < 15; args++)
        argv[n++] = (char *)*args;
    argv[n] = NULL;
    int rc = vmd_process_run(argv, out, out_size, msg, sizeof(msg), VMD_IMAGE_TOOL_MS, err);
    if (rc > 0) {
        msg[strcspn(msg, "\n")] = '\0';
        return moor_error_set(err, -EIO, "qemu-img %s failed (exit %d): %s", argv[1], rc,
                              msg[0] ? msg : "no message");
    }
    return rc;
}

/* What qemu-img info says of @path. */
struct img_facts {
    enum vmd_image_format format;
    uint64_t size;
    char backing[VMD_NAME_MAX + 1]; /* basename of the backing file, or "" */
    struct json_object *json;       /* the whole answer, owned */
};

static int facts_parse(const char *text, struct img_facts *f, moor_error *err)
{
    struct json_object *j = json_tokener_parse(text), *v;

    memset(f, 0, sizeof(*f));
    if (!j || !json_object_is_type(j, json_type_object)) {
        json_object_put(j);
        return moor_error_set(err, -EIO, "qemu-img info: not a JSON object");
    }
    const char *fmt = json_object_object_get_ex(j, "format", &v) ? json_object_get_string(v) : "";
    if (strcmp(fmt, "qcow2") == 0)
        f->format = VMD_IMAGE_QCOW2;
    else if (strcmp(fmt, "raw") == 0)
        f->format = VMD_IMAGE_RAW;
    else {
        json_object_put(j);
        return moor_error_set(err, -EIO, "qemu-img info: format '%.16s' is not qcow2 or raw", fmt);
    }
    if (json_object_object_get_ex(j, "virtual-size", &v))
        f->size = (uint64_t)json_object_get_int64(v);
    if (json_object_object_get_ex(j, "backing-filename", &v)) {
        const char *b = json_object_get_string(v), *slash = strrchr(b, '/');
        snprintf(f->backing, sizeof(f->backing), "%s", slash ? slash + 1 : b);
    }
    f->json = j;
    return 0;
}

static int image_facts(const char *path, struct img_facts *f, moor_error *err)
{
    char *out = malloc(OUT_MAX);
    const char *args[] = {"info", "-U", "--output=json", path, NULL};

    if (!out)
        return moor_error_set(err, -ENOMEM, "out of memory");
    int rc = qemu_img(args, out, OUT_MAX, err);
    rc = rc ?: facts_parse(out, f, err);
    free(out);
    return rc;
}

/* ---- views ------------------------------------------------------------------ */

static void add_str(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, v ? json_object_new_string(v) : NULL);
}

static struct json_object *blocks_json(vmd_image *img)
{
    moor_block_info info[16];
    int n = moor_blocker_info(&img->blockers, info, 16);
    struct json_object *arr = json_object_new_array();

    for (int i = 0; arr && i < n && i < 16; i++) {
        struct json_object *b = json_object_new_object(), *ops = json_object_new_array();

        if (!b || !ops) {
            json_object_put(b);
            json_object_put(ops);
            continue;
        }
        for (unsigned op = 0; op < VMD_IMAGE_OP__COUNT; op++)
            if (info[i].ops & MOOR_BLOCKER_OP(op))
                json_object_array_add(ops, json_object_new_string(op_names[op]));
        json_object_object_add(b, "ops", ops);
        add_str(b, "reason", info[i].reason);
        json_object_object_add(b, "age_ms",
                               json_object_new_int64((int64_t)(info[i].age_ns / 1000000)));
        json_object_array_add(arr, b);
    }
    return arr;
}

static struct json_object *view_locked(vmd_image *img)
{
    struct json_object *o = json_object_new_object(), *users = json_object_new_array();

    if (!o || !users) {
        json_object_put(o);
        json_object_put(users);
        return NULL;
    }
    add_str(o, "name", img->name);
    add_str(o, "format", format_names[img->format]);
    json_object_object_add(o, "size_mib", json_object_new_int64((int64_t)(img->size / MIB)));
    json_object_object_add(o, "virtual_size", json_object_new_int64((int64_t)img->size));
    add_str(o, "backing", img->backing_name[0] ? img->backing_name : NULL);
    for (unsigned i = 0; i < img->n_users; i++)
        json_object_array_add(users, json_object_new_string(img->users[i]));
    json_object_object_add(o, "used_by", users);
    json_object_object_add(o, "overlays", json_object_new_int((int)img->overlays));
    json_object_object_add(o, "blocks", blocks_json(img));
    return o;
}

static int give(struct json_object *o, struct json_object **out, moor_error *err)
{
    if (!o)
        return moor_error_set(err, -ENOMEM, "out of memory");
    *out = o;
    return 0;
}

/* qsort of the collected objects: by name (immutable, so no lock). */
static int image_cmp(const void *a, const void *b)
{
    const vmd_image *x = *(void *const *)a, *y = *(void *const *)b;

    return strcmp(x->name, y->name);
}

int vmd_image_list(struct vmd *vmd, struct json_object **out, moor_error *err)
{
    void **objs;
    int n = moor_registry_collect(vmd->images, NULL, NULL, &objs, err);
    struct json_object *o = n >= 0 ? json_object_new_object() : NULL,
                       *arr = n >= 0 ? json_object_new_array_ext(n) : NULL;

    if (n < 0)
        return n;
    qsort(objs, (size_t)n, sizeof(objs[0]), image_cmp);
    for (int i = 0; arr && i < n; i++) {
        vmd_image *img = objs[i];

        moor_lock(img);
        struct json_object *v = img->removed ? NULL : view_locked(img);
        moor_unlock(img);
        if (v)
            json_object_array_add(arr, v);
    }
    moor_registry_array_free(objs);
    if (!o || !arr) {
        json_object_put(o);
        json_object_put(arr);
        return moor_error_set(err, -ENOMEM, "out of memory");
    }
    json_object_object_add(o, "images", arr);
    *out = o;
    return 0;
}

int vmd_image_info(struct vmd *vmd, vmd_image *img, struct json_object **out, moor_error *err)
{
    char path[PATH_MAX];
    struct img_facts f = {0};
    struct json_object *o;

    if (vmd_image_path(&vmd->opt, img->name, path) < 0)
        return moor_error_set(err, -ENAMETOOLONG, "image %s: path too long", img->name);
    moor_lock(img);
    o = img->removed ? NULL : view_locked(img);
    bool removed = img->removed;
    moor_unlock(img);
    if (removed)
        return moor_error_set(err, -ENOENT, "image %s was deleted", img->name);
    if (!o)
        return moor_error_set(err, -ENOMEM, "out of memory");
    /* Unlocked: the file may go meanwhile (a delete): then no details. */
    if (image_facts(path, &f, NULL) == 0)
        json_object_object_add(o, "qemu_img", f.json);
    *out = o;
    return 0;
}

/* ---- create ----------------------------------------------------------------- */

/* Link @img to @backing: a reference and a block. Only @img's creator (or
 * the loader) links it, so its backing_block has one writer. */
static int link_backing(vmd_image *img, vmd_image *backing, moor_error *err)
{
    moor_lock(backing);
    int rc = usable_locked(backing, VMD_IMAGE_OP_USE, err);
    /* an overlay on an image a domain writes to would see it change */
    rc = rc ?: moor_blocker_check(&backing->blockers, VMD_IMAGE_OP_BACKING, err);
    rc = rc
             ?: moor_block(&backing->blockers, OP(RESIZE) | OP(DELETE) | OP(WRITE),
                           &img->backing_block, err, "image %s is the backing file of overlay %s",
                           backing->name, img->name);
    if (rc == 0)
        backing->overlays++;
    moor_unlock(backing);
    if (rc < 0)
        return rc;
    /* Never both mutexes: @img may already be listed (a create reserves its
     * name first), so its fields change under its own mutex, after. */
    moor_lock(img);
    img->backing = moor_ref(backing);
    snprintf(img->backing_name, sizeof(img->backing_name), "%s", backing->name);
    moor_unlock(img);
    return 0;
}

/* Undo link_backing (an overlay deleted or never made). No lock held. */
static void unlink_backing(vmd_image *img)
{
    moor_lock(img);
    vmd_image *b = img->backing;
    img->backing = NULL;
    moor_unlock(img);
    if (!b)
        return;
    moor_lock(b);
    b->overlays--;
    moor_unlock(b);
    moor_unblock(&img->backing_block);
    moor_unref(b);
}

/* Make the file: claim the name (O_EXCL), then qemu-img create. */
static int create_file(const struct vmd_image_create *req, const char *path, const char *bfmt,
                       moor_error *err)
{
    char size[32];
    const char *args[12];
    unsigned n = 0;

    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST)
        return moor_error_set(err, -EEXIST,
                              "a file named %s is in the image pool but is not a known image",
                              req->name);
    if (fd < 0)
        return moor_error_set(err, -errno, "image %s: %s", req->name, strerror(errno));
    close(fd);
    if (req->size_bytes)
        snprintf(size, sizeof(size), "%" PRIu64, req->size_bytes);
    else
        snprintf(size, sizeof(size), "%" PRIu64 "M", req->size_mib);
    args[n++] = "create";
    args[n++] = "-q";
    args[n++] = "-f";
    args[n++] = format_names[req->format];
    if (req->backing[0]) {
        args[n++] = "-b";
        args[n++] = req->backing; /* relative: next to the overlay */
        args[n++] = "-F";
        args[n++] = bfmt;
    }
    args[n++] = path;
    if (req->size_mib || req->size_bytes)
        args[n++] = size;
    args[n] = NULL;
    int rc = qemu_img(args, NULL, 0, err);
    if (rc < 0)
        unlink(path);
    return rc;
}

/* The image to create: in the registry with a "being created" block. */
static int create_reserve(struct vmd *vmd, const struct vmd_image_create *req, vmd_image **out,
                          moor_block_token *creating, moor_error *err)
{
    vmd_image *img = image_new(req->name, req->format, err);

    if (!img)
        return -ENOMEM;
    int rc =
        moor_block(&img->blockers, ALL_OPS, creating, err, "image %s is being created", req->name);
    rc = rc ?: moor_registry_add(vmd->images, img, &img->uuid, img->name, err);
    if (rc == -EEXIST)
        moor_error_set(err, -EEXIST, "image %s already exists", req->name);
    if (rc < 0) {
        moor_unblock(creating);
        moor_unref(img);
        return rc;
    }
    *out = img;
    return 0;
}

int vmd_image_create(struct vmd *vmd, const struct vmd_image_create *req, struct json_object **out,
                     moor_error *err)
{
    return vmd_image_create_held(vmd, req, NULL, NULL, out, err);
}

int vmd_image_create_held(struct vmd *vmd, const struct vmd_image_create *req, const char *hold,
                          moor_block_token *held, struct json_object **out, moor_error *err)
{
    moor_autounref vmd_image *backing = NULL;
    moor_block_token creating = MOOR_BLOCK_TOKEN_NONE;
    struct img_facts f = {0};
    vmd_image *img = NULL;
    char path[PATH_MAX];

    if (vmd_image_path(&vmd->opt, req->name, path) < 0)
        return moor_error_set(err, -ENAMETOOLONG, "image %s: path too long", req->name);
    if (req->backing[0] && !(backing = vmd_image_lookup(vmd, req->backing)))
        return moor_error_set(err, -ENOENT, "no image %s (the backing file of %s)", req->backing,
                              req->name);
    int rc = create_reserve(vmd, req, &img, &creating, err);
    if (rc < 0)
        return rc;
    rc = backing ? link_backing(img, backing, err) : 0;
    rc = rc ?: create_file(req, path, backing ? format_names[backing->format] : NULL, err);
    if (rc == 0 && (rc = image_facts(path, &f, err)) < 0)
        unlink(path);
    moor_lock(img);
    /* The caller's hold goes on before "being created" goes: no gap. */
    if (rc == 0 && hold && (rc = moor_block(&img->blockers, ALL_OPS, held, err, "%s", hold)) < 0)
        unlink(path);
    if (rc == 0)
        img->size = f.size;
    else {
        img->removed = true;
        moor_registry_remove(vmd->images, img, NULL);
    }
    moor_unlock(img);
    json_object_put(f.json);
    moor_unblock(&creating);
    if (rc < 0) {
        unlink_backing(img);
        moor_unref(img);
        vmd_log(VMD_LOG_NOTICE, NULL, "image-create", "refused: %s", moor_error_message(err));
        return rc;
    }
    vmd_log(VMD_LOG_INFO, NULL, "image-create", "image %s created", img->name);
    moor_lock(img);
    rc = give(view_locked(img), out, err);
    moor_unlock(img);
    moor_unref(img);
    return rc;
}

/* ---- delete ----------------------------------------------------------------- */

int vmd_image_delete(struct vmd *vmd, vmd_image *img, struct json_object **out, moor_error *err)
{
    return vmd_image_delete_held(vmd, img, NULL, out, err);
}

uint64_t vmd_image_size(vmd_image *img)
{
    moor_lock(img);
    uint64_t size = img->size;
    moor_unlock(img);
    return size;
}

int vmd_image_delete_held(struct vmd *vmd, vmd_image *img, moor_block_token *held,
                          struct json_object **out, moor_error *err)
{
    moor_block_token deleting = MOOR_BLOCK_TOKEN_NONE;
    char path[PATH_MAX];

    if (vmd_image_path(&vmd->opt, img->name, path) < 0)
        return moor_error_set(err, -ENAMETOOLONG, "image %s: path too long", img->name);
    moor_lock(img);
    if (held) /* ours goes under the mutex the delete's own block is placed under */
        moor_unblock(held);
    int rc = usable_locked(img, VMD_IMAGE_OP_DELETE, err);
    rc = rc
             ?: moor_block(&img->blockers, ALL_OPS, &deleting, err, "image %s is being deleted",
                           img->name);
    moor_unlock(img);
    if (rc < 0) {
        vmd_log(VMD_LOG_NOTICE, NULL, "image-delete", "refused: %s", moor_error_message(err));
        return rc;
    }
    if (unlink(path) < 0 && errno != ENOENT)
        rc = moor_error_set(err, -errno, "image %s: cannot remove its file: %s", img->name,
                            strerror(errno));
    moor_lock(img);
    if (rc == 0) {
        img->removed = true;
        moor_registry_remove(vmd->images, img, NULL);
    }
    moor_unlock(img);
    moor_unblock(&deleting);
    if (rc < 0)
        return rc;
    unlink_backing(img);
    vmd_log(VMD_LOG_INFO, NULL, "image-delete", "image %s deleted", img->name);
    struct json_object *o = json_object_new_object();
    if (o) {
        add_str(o, "name", img->name);
        json_object_object_add(o, "deleted", json_object_new_boolean(true));
    }
    return give(o, out, err);
}

/* ---- resize ----------------------------------------------------------------- */

struct offline {
    const char *path;
    uint64_t size_mib;
};

static int resize_offline(void *opaque, moor_error *err)
{
    struct offline *o = opaque;
    char size[32];
    const char *args[] = {"resize", "-q", o->path, size, NULL};

    snprintf(size, sizeof(size), "%" PRIu64 "M", o->size_mib);
    return qemu_img(args, NULL, 0, err);
}

/* Check, and block: the one domain using @img (if any) into @user. */
static int resize_begin(vmd_image *img, uint64_t bytes, char *user, moor_block_token *resizing,
                        moor_error *err)
{
    moor_lock(img);
    int rc = usable_locked(img, VMD_IMAGE_OP_RESIZE, err);
    if (rc == 0 && bytes < img->size)
        rc = moor_error_set(err, -EINVAL,
                            "image %s: %" PRIu64 " MiB is smaller than its %" PRIu64
                            " MiB; shrinking is not supported",
                            img->name, bytes / MIB, img->size / MIB);
    if (rc == 0 && img->n_users > 1)
        rc = moor_error_set(
            err, -EBUSY, "image %s is used by domains %s and %s%s: resize needs at most one user",
            img->name, img->users[0], img->users[1], img->n_users > 2 ? " and others" : "");
    rc = rc
             ?: moor_block(&img->blockers, ALL_OPS, resizing, err, "image %s is being resized",
                           img->name);
    if (rc == 0)
        snprintf(user, VMD_NAME_MAX + 1, "%s", img->n_users ? img->users[0] : "");
    moor_unlock(img);
    return rc;
}

int vmd_image_resize(struct vmd *vmd, vmd_image *img, uint64_t size_mib, struct json_object **out,
                     moor_error *err)
{
    moor_block_token resizing = MOOR_BLOCK_TOKEN_NONE;
    char path[PATH_MAX], user[VMD_NAME_MAX + 1];
    struct offline off = {path, size_mib};

    if (size_mib < 1 || size_mib > VMD_IMAGE_SIZE_MIB_MAX)
        return moor_error_set(err, -EINVAL, "size_mib: %" PRIu64 " is out of range 1..%u", size_mib,
                              VMD_IMAGE_SIZE_MIB_MAX);
    if (vmd_image_path(&vmd->opt, img->name, path) < 0)
        return moor_error_set(err, -ENAMETOOLONG, "image %s: path too long", img->name);
    int rc = resize_begin(img, size_mib * MIB, user, &resizing, err);
    if (rc < 0) {
        vmd_log(VMD_LOG_NOTICE, NULL, "image-resize", "refused: %s", moor_error_message(err));
        return rc;
    }
    /* No image mutex held: the domain's job and QMP may take long. */
    moor_autounref vmd_domain *dom = user[0] ? vmd_domain_lookup(vmd, user) : NULL;
    rc =
        dom ? vmd_domain_disk_resize(vmd, dom, img->name, size_mib * MIB, resize_offline, &off, err)
            : -ENOENT;
    if (rc == -ENOENT) /* no user, or undefined meanwhile: not running */
        rc = resize_offline(&off, err);
    moor_lock(img);
    if (rc == 0)
        img->size = size_mib * MIB;
    moor_unlock(img);
    moor_unblock(&resizing);
    if (rc < 0)
        return rc;
    vmd_log(VMD_LOG_INFO, user[0] ? user : NULL, "image-resize",
            "image %s resized to %" PRIu64 " MiB%s", img->name, size_mib,
            dom ? " (through its domain)" : "");
    moor_lock(img);
    rc = give(view_locked(img), out, err);
    moor_unlock(img);
    return rc;
}

/* ---- a domain's disks ----------------------------------------------------------- */

/* Attach disk @i of @cfg into @r (image mutex taken here, briefly). */
static int attach_one(struct vmd *vmd, const struct vmd_domain_config *cfg, unsigned i,
                      struct vmd_disk_refs *r, moor_error *err)
{
    const struct vmd_disk *disk = &cfg->disks[i];
    vmd_image *img = vmd_image_lookup(vmd, disk->image);

    if (!img)
        return moor_error_set(err, -ENOENT, "disks[%u]: no image %s", i, disk->image);
    moor_lock(img);
    int rc = usable_locked(img, VMD_IMAGE_OP_USE, err);
    if (rc == 0 && !disk->readonly)
        rc = moor_blocker_check(&img->blockers, VMD_IMAGE_OP_WRITE, err);
    rc = rc ?: user_add_locked(img, cfg->name);
    uint64_t ops = OP(DELETE) | (disk->readonly ? 0 : OP(BACKING));
    if (rc == 0 && (rc = moor_block(&img->blockers, ops, &r->disk[i].block, err,
                                    "image %s is used by domain %s", img->name, cfg->name)) < 0)
        user_remove_locked(img, cfg->name);
    moor_unlock(img);
    if (rc < 0) {
        moor_error_prefix(err, "domain %s: disks[%u]: ", cfg->name, i);
        moor_unref(img);
        return rc;
    }
    r->disk[i].img = img;
    return 0;
}

int vmd_disks_attach(struct vmd *vmd, const struct vmd_domain_config *cfg, bool loading,
                     struct vmd_disk_refs **out, moor_error *err)
{
    struct vmd_disk_refs *r;

    *out = NULL;
    if (!cfg->n_disks)
        return 0;
    if (!(r = calloc(1, sizeof(*r))))
        return moor_error_set(err, -ENOMEM, "out of memory");
    snprintf(r->domain, sizeof(r->domain), "%s", cfg->name);
    r->n = cfg->n_disks;
    for (unsigned i = 0; i < cfg->n_disks; i++) {
        moor_error e = MOOR_ERROR_INIT;
        int rc = attach_one(vmd, cfg, i, r, &e);

        if (rc < 0 && loading) {
            vmd_log(VMD_LOG_ERR, cfg->name, "load", "%s: the domain cannot start until it exists",
                    moor_error_message(&e));
            continue;
        }
        if (rc < 0) {
            moor_error_set(err, rc, "%s", moor_error_message(&e));
            vmd_disks_detach(&r);
            return rc;
        }
    }
    *out = r;
    return 0;
}

void vmd_disks_detach(struct vmd_disk_refs **refs)
{
    struct vmd_disk_refs *r = refs ? *refs : NULL;

    if (!r)
        return;
    *refs = NULL;
    for (unsigned i = 0; i < r->n; i++) {
        vmd_image *img = r->disk[i].img;

        if (!img)
            continue;
        moor_lock(img);
        user_remove_locked(img, r->domain);
        moor_unlock(img);
        moor_unblock(&r->disk[i].block);
        moor_unref(img);
    }
    free(r);
}

int vmd_disks_check(const struct vmd_disk_refs *refs, const struct vmd_domain_config *cfg,
                    moor_error *err)
{
    for (unsigned i = 0; i < cfg->n_disks; i++)
        if (!refs || !refs->disk[i].img)
            return moor_error_set(err, -ENOENT, "disks[%u]: image %s is missing (not in the pool)",
                                  i, cfg->disks[i].image);
    return 0;
}

int vmd_disk_args(const struct vmd_disk_refs *refs, const struct vmd_domain_config *cfg, unsigned i,
                  const struct vmd_options *opt, char **blockdev, char **device)
{
    const struct vmd_disk *disk = &cfg->disks[i];
    char node[VMD_IMAGE_NODE_MAX + 1], path[PATH_MAX];
    const vmd_image *img = refs->disk[i].img;

    if (!img)
        return -ENOENT;
    if (vmd_image_path(opt, disk->image, path) < 0)
        return -ENAMETOOLONG;
    vmd_image_node_name(i, disk->image, node);
    struct json_object *o = json_object_new_object(), *file = json_object_new_object();
    if (!o || !file) {
        json_object_put(o);
        json_object_put(file);
        return -ENOMEM;
    }
    add_str(file, "driver", "file");
    add_str(file, "filename", path);
    add_str(o, "driver", format_names[img->format]); /* immutable: no lock */
    add_str(o, "node-name", node);
    json_object_object_add(o, "read-only", json_object_new_boolean(disk->readonly));
    json_object_object_add(o, "file", file);
    *blockdev = strdup(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    if (asprintf(device, "%s,drive=%s,id=disk%u",
                 disk->bus == VMD_BUS_IDE ? "ide-hd" : "virtio-blk-pci", node, i) < 0)
        *device = NULL;
    if (!*blockdev || !*device) {
        free(*blockdev);
        free(*device);
        *blockdev = *device = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* ---- load and shutdown ------------------------------------------------------ */

/* One file of the pool into the registry (no backing link yet). */
static void load_one(struct vmd *vmd, const char *name)
{
    char path[PATH_MAX];
    struct img_facts f = {0};
    moor_error err = MOOR_ERROR_INIT;

    if (vmd_image_path(&vmd->opt, name, path) < 0 || image_facts(path, &f, &err) < 0) {
        vmd_log(VMD_LOG_WARNING, NULL, "load", "image pool: %s left out: %s", name,
                moor_error_message(&err));
        return;
    }
    vmd_image *img = image_new(name, f.format, &err);
    if (img) {
        img->size = f.size;
        snprintf(img->backing_name, sizeof(img->backing_name), "%s", f.backing);
    }
    if (!img || moor_registry_add(vmd->images, img, &img->uuid, img->name, &err) < 0)
        vmd_log(VMD_LOG_WARNING, NULL, "load", "image pool: %s left out: %s", name,
                moor_error_message(&err));
    moor_unref(img);
    json_object_put(f.json);
}

/* Link each loaded overlay to its backing image. */
static void load_links(struct vmd *vmd)
{
    void **objs;
    int n = moor_registry_collect(vmd->images, NULL, NULL, &objs, NULL);

    for (int i = 0; i < n; i++) {
        vmd_image *img = objs[i];
        moor_error err = MOOR_ERROR_INIT;

        if (!img->backing_name[0])
            continue;
        moor_autounref vmd_image *b = vmd_image_lookup(vmd, img->backing_name);
        if (!b || link_backing(img, b, &err) < 0)
            vmd_log(VMD_LOG_WARNING, NULL, "load",
                    "image %s: its backing file %s is not in the pool%s%s", img->name,
                    img->backing_name, b ? ": " : "", b ? moor_error_message(&err) : "");
    }
    if (n >= 0)
        moor_registry_array_free(objs);
}

int vmd_images_load(struct vmd *vmd, moor_error *err)
{
    char dir[PATH_MAX];
    struct dirent *e;

    if (vmd_image_path(&vmd->opt, NULL, dir) < 0)
        return moor_error_set(err, -ENAMETOOLONG, "image pool path too long");
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return moor_error_set(err, -errno, "cannot create the image pool %s: %s", dir,
                              strerror(errno));
    DIR *d = opendir(dir);
    if (!d)
        return moor_error_set(err, -errno, "cannot read the image pool %s: %s", dir,
                              strerror(errno));
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && vmd_config_name_ok(e->d_name))
            load_one(vmd, e->d_name);
    closedir(d);
    load_links(vmd);
    vmd_log(VMD_LOG_INFO, NULL, "load", "image pool %s: %zu image(s)", dir,
            moor_registry_count(vmd->images));
    return 0;
}

void vmd_images_shutdown(struct vmd *vmd)
{
    void **objs;
    int n;

    if (!vmd->images || (n = moor_registry_collect(vmd->images, NULL, NULL, &objs, NULL)) < 0)
        return;
    /* Overlays first would be tidier, but order does not matter: the
     * references keep each backing image alive until its overlays go. */
    for (int i = 0; i < n; i++) {
        vmd_image *img = objs[i];

        moor_lock(img);
        img->removed = true;
        moor_registry_remove(vmd->images, img, NULL);
        moor_unlock(img);
    }
    moor_registry_array_free(objs);
}
