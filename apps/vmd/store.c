/* SPDX-License-Identifier: MIT */
/*
 * store.c - atomic files: configs, status files, runtime paths.
 *
 * An atomic write: open "<path>.tmp.<pid>.<n>" O_EXCL in the target's
 * directory, write it all, fsync, rename over <path>, fsync the
 * directory. The temporary name is unique per process and call, so two
 * threads writing different files never collide, and a crash leaves at
 * worst a stray *.tmp.* file (only "<uuid>.json" and "<uuid>.status" are
 * read; the loaders delete the strays at start-up).
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define STATUS_MAX (256u << 10)

static int mkdir_one(const char *path, moor_error *err)
{
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return moor_error_set(err, -errno, "cannot create %s: %s", path, strerror(errno));
    return 0;
}

/* mkdir -p, 0700 for what it creates. */
static int mkdir_p(const char *path, moor_error *err)
{
    char buf[PATH_MAX];

    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return moor_error_set(err, -ENAMETOOLONG, "path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int rc = mkdir_one(buf, err);
        *p = '/';
        if (rc < 0)
            return rc;
    }
    return mkdir_one(buf, err);
}

int vmd_store_prepare(const struct vmd_options *opt, moor_error *err)
{
    char domains[PATH_MAX];

    if (snprintf(domains, sizeof(domains), "%s/domains", opt->state_dir) >= (int)sizeof(domains))
        return moor_error_set(err, -ENAMETOOLONG, "state dir too long");
    int rc = mkdir_p(domains, err);
    rc = rc ?: mkdir_p(opt->runtime_dir, err);
    if (rc == 0 && opt->log_dir)
        rc = mkdir_p(opt->log_dir, err);
    return rc;
}

static int write_all(int fd, const char *s, size_t len)
{
    while (len) {
        ssize_t n = write(fd, s, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fsync_dir_of(const char *path)
{
    char buf[PATH_MAX];

    snprintf(buf, sizeof(buf), "%s", path);
    int fd = open(dirname(buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

int vmd_store_write_json(const char *path, struct json_object *o, moor_error *err)
{
    static atomic_uint seq; /* relaxed: only uniqueness of temp names matters */
    char tmp[PATH_MAX];
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);

    if (!text)
        return moor_error_set(err, -ENOMEM, "cannot format %s", path);
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d.%u", path, (int)getpid(),
                 atomic_fetch_add_explicit(&seq, 1, memory_order_relaxed)) >= (int)sizeof(tmp))
        return moor_error_set(err, -ENAMETOOLONG, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return moor_error_set(err, -errno, "cannot create %s: %s", tmp, strerror(errno));
    int rc = write_all(fd, text, strlen(text));
    rc = rc ?: write_all(fd, "\n", 1);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        return moor_error_set(err, rc, "cannot write %s: %s", path, strerror(-rc));
    }
    rc = fsync_dir_of(path);
    if (rc < 0)
        return moor_error_set(err, rc, "cannot sync the directory of %s: %s", path, strerror(-rc));
    return 0;
}

int vmd_store_runtime_path(const struct vmd_options *opt, const moor_uuid *uuid, const char *suffix,
                           char *buf)
{
    char u[MOOR_UUID_STRING_SIZE];

    moor_uuid_format(uuid, u);
    int n = snprintf(buf, PATH_MAX, "%s/%s%s", opt->runtime_dir, u, suffix);
    return n < PATH_MAX ? 0 : -ENAMETOOLONG;
}

int vmd_store_log_path(const struct vmd_options *opt, const char *name, char *buf)
{
    int n = opt->log_dir ? snprintf(buf, PATH_MAX, "%s/%s.log", opt->log_dir, name)
                         : snprintf(buf, PATH_MAX, "%s/log/%s.log", opt->state_dir, name);
    return n < PATH_MAX ? 0 : -ENAMETOOLONG;
}

static int config_path(const struct vmd_options *opt, const moor_uuid *uuid, char *buf)
{
    char u[MOOR_UUID_STRING_SIZE];

    moor_uuid_format(uuid, u);
    int n = snprintf(buf, PATH_MAX, "%s/domains/%s.json", opt->state_dir, u);
    return n < PATH_MAX ? 0 : -ENAMETOOLONG;
}

int vmd_store_config_save(const struct vmd_options *opt, const struct vmd_domain_config *cfg,
                          moor_error *err)
{
    char path[PATH_MAX];

    if (config_path(opt, &cfg->uuid, path) < 0)
        return moor_error_set(err, -ENAMETOOLONG, "state dir path too long");
    struct json_object *o = vmd_config_to_json(cfg);
    if (!o)
        return moor_error_set(err, -ENOMEM, "out of memory");
    int rc = vmd_store_write_json(path, o, err);
    json_object_put(o);
    return rc;
}

static int unlink_synced(const char *path, moor_error *err)
{
    if (unlink(path) < 0) {
        if (errno == ENOENT)
            return 0;
        return moor_error_set(err, -errno, "cannot remove %s: %s", path, strerror(errno));
    }
    int rc = fsync_dir_of(path);
    return rc < 0 ? moor_error_set(err, rc, "cannot sync the directory of %s", path) : 0;
}

int vmd_store_config_remove(const struct vmd_options *opt, const moor_uuid *uuid, moor_error *err)
{
    char path[PATH_MAX];

    if (config_path(opt, uuid, path) < 0)
        return moor_error_set(err, -ENAMETOOLONG, "state dir path too long");
    return unlink_synced(path, err);
}

void vmd_status_clear(struct vmd_status *st)
{
    if (!st)
        return;
    if (st->argv) {
        for (char **a = st->argv; *a; a++)
            free(*a);
        free(st->argv);
    }
    memset(st, 0, sizeof(*st));
}

static struct json_object *status_json(const struct vmd_status *st)
{
    struct json_object *o = json_object_new_object(), *argv = json_object_new_array();

    if (!o || !argv) {
        json_object_put(o);
        json_object_put(argv);
        return NULL;
    }
    json_object_object_add(o, "pid", json_object_new_int64(st->pid));
    json_object_object_add(o, "start_time", json_object_new_uint64(st->start_time));
    json_object_object_add(o, "state", json_object_new_string(st->state));
    json_object_object_add(o, "reason", json_object_new_string(st->reason));
    json_object_object_add(o, "tainted", json_object_new_boolean(st->tainted));
    if (st->job[0]) {
        json_object_object_add(o, "job", json_object_new_string(st->job));
        json_object_object_add(o, "job_path", json_object_new_string(st->job_path));
        json_object_object_add(o, "job_prior", json_object_new_string(st->job_prior));
    }
    for (char **a = st->argv; a && *a; a++)
        json_object_array_add(argv, json_object_new_string(*a));
    json_object_object_add(o, "argv", argv);
    return o;
}

int vmd_store_status_save(const struct vmd_options *opt, const moor_uuid *uuid,
                          const struct vmd_status *st, moor_error *err)
{
    char path[PATH_MAX];

    if (vmd_store_runtime_path(opt, uuid, ".status", path) < 0)
        return moor_error_set(err, -ENAMETOOLONG, "runtime dir path too long");
    struct json_object *o = status_json(st);
    if (!o)
        return moor_error_set(err, -ENOMEM, "out of memory");
    int rc = vmd_store_write_json(path, o, err);
    json_object_put(o);
    return rc;
}

static int status_parse(struct json_object *o, struct vmd_status *st)
{
    struct json_object *v, *argv;

    if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, "pid", &v) ||
        !json_object_is_type(v, json_type_int))
        return -EINVAL;
    st->pid = (pid_t)json_object_get_int64(v);
    if (!json_object_object_get_ex(o, "start_time", &v) || !json_object_is_type(v, json_type_int))
        return -EINVAL;
    st->start_time = json_object_get_uint64(v);
    if (json_object_object_get_ex(o, "state", &v))
        snprintf(st->state, sizeof(st->state), "%s", json_object_get_string(v));
    if (json_object_object_get_ex(o, "reason", &v))
        snprintf(st->reason, sizeof(st->reason), "%s", json_object_get_string(v));
    if (json_object_object_get_ex(o, "tainted", &v))
        st->tainted = json_object_get_boolean(v);
    if (json_object_object_get_ex(o, "job", &v))
        snprintf(st->job, sizeof(st->job), "%s", json_object_get_string(v));
    if (json_object_object_get_ex(o, "job_path", &v))
        snprintf(st->job_path, sizeof(st->job_path), "%s", json_object_get_string(v));
    if (json_object_object_get_ex(o, "job_prior", &v))
        snprintf(st->job_prior, sizeof(st->job_prior), "%s", json_object_get_string(v));
    if (!json_object_object_get_ex(o, "argv", &argv) || !json_object_is_type(argv, json_type_array))
        return -EINVAL;
    size_t n = json_object_array_length(argv);
    if (n == 0 || !(st->argv = calloc(n + 1, sizeof(char *))))
        return n ? -ENOMEM : -EINVAL;
    for (size_t i = 0; i < n; i++) {
        struct json_object *a = json_object_array_get_idx(argv, i);
        if (!json_object_is_type(a, json_type_string))
            return -EINVAL;
        if (!(st->argv[i] = strdup(json_object_get_string(a))))
            return -ENOMEM;
    }
    return 0;
}

int vmd_store_status_load(const struct vmd_options *opt, const moor_uuid *uuid,
                          struct vmd_status *out, moor_error *err)
{
    char path[PATH_MAX];
    struct vmd_status st;

    memset(&st, 0, sizeof(st));
    if (vmd_store_runtime_path(opt, uuid, ".status", path) < 0)
        return moor_error_set(err, -ENAMETOOLONG, "runtime dir path too long");
    struct json_object *o = json_object_from_file(path);
    if (!o)
        return access(path, F_OK) < 0 ? moor_error_set(err, -ENOENT, "no status file %s", path)
                                      : moor_error_set(err, -EINVAL, "%s is not JSON", path);
    int rc = status_parse(o, &st);
    json_object_put(o);
    if (rc < 0) {
        vmd_status_clear(&st);
        return moor_error_set(err, rc, "%s: not a status file", path);
    }
    *out = st;
    return 0;
}

void vmd_store_runtime_remove(const struct vmd_options *opt, const moor_uuid *uuid, bool sync)
{
    static const char *const suffixes[] = {".status", ".qmp", ".pid"};
    char path[PATH_MAX];

    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        if (vmd_store_runtime_path(opt, uuid, suffixes[i], path) < 0)
            continue;
        if (sync)
            unlink_synced(path, NULL);
        else
            unlink(path);
    }
}

int vmd_store_pidfile_read(const struct vmd_options *opt, const moor_uuid *uuid)
{
    char path[PATH_MAX], buf[32];

    if (vmd_store_runtime_path(opt, uuid, ".pid", path) < 0)
        return -ENAMETOOLONG;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -ENOENT;
    buf[n] = '\0';
    long pid = strtol(buf, NULL, 10);
    return pid > 0 && pid < INT32_MAX ? (int)pid : -EINVAL;
}

/* ---- start-up ------------------------------------------------------------ */

/* "<uuid>.json" or "<uuid>.status": the uuid, else false. */
static bool uuid_file(const char *name, const char *suffix, moor_uuid *uuid)
{
    size_t len = strlen(name), slen = strlen(suffix);
    char u[MOOR_UUID_STRING_SIZE];

    if (len != MOOR_UUID_STRING_SIZE - 1 + slen || strcmp(name + len - slen, suffix) != 0)
        return false;
    memcpy(u, name, MOOR_UUID_STRING_SIZE - 1);
    u[MOOR_UUID_STRING_SIZE - 1] = '\0';
    return moor_uuid_parse(u, uuid, NULL) == 0;
}

/* A temporary file an atomic write left behind when the daemon died
 * between its create and its rename: "<uuid><suffix>.tmp.<pid>.<n>". */
static bool stray_tmp(const char *name, const char *suffix)
{
    size_t ulen = MOOR_UUID_STRING_SIZE - 1, slen = strlen(suffix);
    moor_uuid u;
    char text[MOOR_UUID_STRING_SIZE];

    if (strlen(name) <= ulen + slen + 5 || strncmp(name + ulen, suffix, slen) != 0 ||
        strncmp(name + ulen + slen, ".tmp.", 5) != 0)
        return false;
    memcpy(text, name, ulen);
    text[ulen] = '\0';
    return moor_uuid_parse(text, &u, NULL) == 0;
}

/* Unlink a stray temporary file of @d (at start-up: no write is in
 * progress then). Logged; a failure is only logged. */
static void remove_stray_tmp(DIR *d, const char *dir, const char *name)
{
    if (unlinkat(dirfd(d), name, 0) < 0)
        vmd_log(VMD_LOG_WARNING, NULL, "load", "cannot remove %s/%s: %s", dir, name,
                strerror(errno));
    else
        vmd_log(VMD_LOG_NOTICE, NULL, "load", "removed %s/%s (an unfinished write)", dir, name);
}

/* The uuid inside a config must be its file's: a copied or edited file
 * would otherwise define a domain whose file is another's. */
static int check_file_uuid(struct json_object *o, const struct vmd_domain_config *cfg,
                           const moor_uuid *file_uuid, moor_error *err)
{
    if (!json_object_object_get_ex(o, "uuid", NULL))
        return moor_error_set(err, -EINVAL, "no uuid in the file");
    if (memcmp(&cfg->uuid, file_uuid, sizeof(*file_uuid)) != 0)
        return moor_error_set(err, -EINVAL, "its uuid is not the one in its file name");
    return 0;
}

static void load_config_file(struct vmd *vmd, const char *dir, const char *file,
                             const moor_uuid *file_uuid)
{
    char path[PATH_MAX];
    struct vmd_domain_config cfg;
    moor_error err = MOOR_ERROR_INIT;

    if (snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path))
        return;
    struct json_object *o = json_object_from_file(path);
    int rc = o ? vmd_config_parse(o, &cfg, &err) : moor_error_set(&err, -EINVAL, "not JSON");
    if (rc == 0 && (rc = check_file_uuid(o, &cfg, file_uuid, &err)) < 0)
        vmd_config_clear(&cfg);
    json_object_put(o);
    if (rc == 0)
        rc = vmd_domain_add_loaded(vmd, &cfg, &err);
    if (rc < 0)
        vmd_log(VMD_LOG_ERR, NULL, "load", "%s skipped: %s", path, moor_error_message(&err));
}

static int load_configs(struct vmd *vmd, moor_error *err)
{
    char dir[PATH_MAX];
    moor_uuid uuid;

    snprintf(dir, sizeof(dir), "%s/domains", vmd->opt.state_dir);
    DIR *d = opendir(dir);
    if (!d)
        return moor_error_set(err, -errno, "cannot read %s: %s", dir, strerror(errno));
    for (struct dirent *e; (e = readdir(d));) {
        if (uuid_file(e->d_name, ".json", &uuid))
            load_config_file(vmd, dir, e->d_name, &uuid);
        else if (stray_tmp(e->d_name, ".json"))
            remove_stray_tmp(d, dir, e->d_name);
    }
    closedir(d);
    return 0;
}

static void load_status_file(struct vmd *vmd, const moor_uuid *uuid)
{
    struct vmd_status st;
    moor_error err = MOOR_ERROR_INIT;
    char u[MOOR_UUID_STRING_SIZE];

    moor_uuid_format(uuid, u);
    int rc = vmd_store_status_load(&vmd->opt, uuid, &st, &err);
    if (rc == 0) {
        rc = vmd_domain_reconnect(vmd, uuid, &st, &err);
        if (st.job[0]) /* a save or restore was running: finish or undo it */
            vmd_longjob_recover(vmd, uuid, &st, rc);
        vmd_status_clear(&st);
    }
    if (rc < 0) {
        vmd_log(VMD_LOG_WARNING, u, "load", "not reconnected: %s", moor_error_message(&err));
        vmd_store_runtime_remove(&vmd->opt, uuid, true);
    }
}

/* Reconnects run in parallel, this many at once, so a start-up with hung
 * QEMUs costs about one QMP deadline per batch, not one per domain. */
#define RECONNECT_BATCH 16

struct reconnect {
    struct vmd *vmd;
    moor_uuid uuid;
    pthread_t thread;
    bool started;
};

static void *reconnect_main(void *arg)
{
    struct reconnect *r = arg;
    load_status_file(r->vmd, &r->uuid);
    return NULL;
}

/* Reconnect @n domains, each in a thread of its own (inline if none can be
 * made). */
static void reconnect_batch(struct reconnect *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        r[i].started = pthread_create(&r[i].thread, NULL, reconnect_main, &r[i]) == 0;
    for (size_t i = 0; i < n; i++) {
        if (r[i].started)
            pthread_join(r[i].thread, NULL);
        else
            reconnect_main(&r[i]);
    }
}

/* The uuids of every status file, read before any is touched: reconnects
 * rewrite (rename) and remove status files, which a readdir in progress
 * might or might not show. Ownership: *@out is the caller's (free). */
static int list_status_files(const char *dir, moor_uuid **out, size_t *n, moor_error *err)
{
    moor_uuid *list = NULL, u;
    size_t cap = 0;

    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return moor_error_set(err, -errno, "cannot read %s: %s", dir, strerror(errno));
    for (struct dirent *e; (e = readdir(d));) {
        if (stray_tmp(e->d_name, ".status"))
            remove_stray_tmp(d, dir, e->d_name);
        if (!uuid_file(e->d_name, ".status", &u))
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            moor_uuid *bigger = realloc(list, cap * sizeof(*list));
            if (!bigger) {
                free(list);
                closedir(d);
                return moor_error_set(err, -ENOMEM, "out of memory");
            }
            list = bigger;
        }
        list[(*n)++] = u;
    }
    closedir(d);
    *out = list;
    return 0;
}

int vmd_domains_load(struct vmd *vmd, moor_error *err)
{
    struct reconnect batch[RECONNECT_BATCH];
    moor_uuid *uuids = NULL;
    size_t n = 0;

    int rc = vmd_store_prepare(&vmd->opt, err);
    rc = rc ?: load_configs(vmd, err);
    rc = rc ?: list_status_files(vmd->opt.runtime_dir, &uuids, &n, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i += RECONNECT_BATCH) {
        size_t k = n - i < RECONNECT_BATCH ? n - i : RECONNECT_BATCH;
        for (size_t j = 0; j < k; j++)
            batch[j] = (struct reconnect){.vmd = vmd, .uuid = uuids[i + j]};
        reconnect_batch(batch, k);
    }
    free(uuids);
    return 0;
}
