/* SPDX-License-Identifier: MIT */
/*
 * vs-moor.c - the moor-vmd side of the side-by-side benchmark: moor-vmd's
 * HTTP API over its UNIX socket through the one client (apps/vmctl), one
 * kept-alive connection per thread; the daemon run by apps/demo/drive.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "drive.h"
#include "vs-libvirt.h"

#define CLIENT_TIMEOUT_MS 120000
/* The save's bandwidth: the same 48 MiB/s as libvirtd's (vs-lv.c), about
 * 4 s for the guest's 192 MiB of random data. */
#define SAVE_BANDWIDTH_MIB_S 48
#define JOB_POLL_NS          (5 * 1000 * 1000)
#define JOB_WAIT_NS          (120ull * 1000 * 1000 * 1000)

struct moor_priv {
    struct drive_daemon d;
};

static int m_open(struct vs_side *s, void **conn, moor_error *err)
{
    struct moor_priv *p = s->priv;

    *conn = vmctl_client_new(p->d.socket_path, CLIENT_TIMEOUT_MS, err);
    return *conn ? 0 : err->code;
}

static void m_close(void *conn)
{
    vmctl_client_free(conn);
}

static int m_call(struct vs_side *s, void *conn, enum vs_op op, unsigned dom, char *msg, size_t len)
{
    static const char *const qmp = "{\"execute\":\"query-status\"}";
    drive_autoresponse struct vmctl_response r = {0};
    moor_error e = MOOR_ERROR_INIT;
    const char *method = "GET", *body = NULL, *what;
    char path[160];
    int rc;

    switch (op) {
    case VS_STATE:
        what = "state";
        break;
    case VS_STATS:
        what = "stats";
        break;
    case VS_QMP:
        what = "qmp";
        method = "POST";
        body = qmp;
        break;
    case VS_JOBINFO:
    default:
        what = "job";
        break;
    }
    snprintf(path, sizeof(path), "/v1/domains/%s/%s", s->names[dom], what);
    if ((rc = vmctl_request(conn, method, path, body, &r, &e)) < 0) {
        snprintf(msg, len, "%s", e.message);
        return rc;
    }
    if (r.status == 200)
        return 0;
    snprintf(msg, len, "%ld %s: %s", r.status, r.error_code ? r.error_code : "?",
             r.error_message ? r.error_message : r.body);
    return -EPROTO;
}

static int m_define(struct vs_side *s, void *conn, const char *name, unsigned memory_mib,
                    const char *blob, moor_error *err)
{
    char body[2 * PATH_MAX + 256], extra[PATH_MAX + 128] = "";

    if (blob)
        snprintf(extra, sizeof(extra),
                 ",\"extra_args\":[\"-device\",\"loader,file=%s,addr=0x1000000,force-raw=on\"]",
                 blob);
    snprintf(body, sizeof(body),
             "{\"name\":\"%s\",\"machine\":\"pc\",\"accel\":\"tcg\",\"memory_mib\":%u,"
             "\"emulator\":\"%s\"%s}",
             name, memory_mib, s->qemu, extra);
    return drive_call(conn, "POST", "/v1/domains", body, 201, NULL, err);
}

static int m_start(struct vs_side *s, void *conn, const char *name, moor_error *err)
{
    (void)s;
    return drive_domain_op(conn, name, "start", err);
}

static int m_destroy(struct vs_side *s, void *conn, const char *name, moor_error *err)
{
    (void)s;
    return drive_domain_op(conn, name, "destroy", err);
}

static int m_undefine(struct vs_side *s, void *conn, const char *name, moor_error *err)
{
    (void)s;
    return drive_domain_undefine(conn, name, err);
}

static int m_qemu_pid(struct vs_side *s, void *conn, const char *name, pid_t *pid, moor_error *err)
{
    (void)s;
    return drive_domain_pid(conn, name, pid, NULL, 0, err);
}

static int m_restart(struct vs_side *s, double *first_ms, double *all_ms, moor_error *err)
{
    struct moor_priv *p = s->priv;
    const char *names[VS_DOMAINS];
    uint64_t t;
    int rc;

    for (unsigned i = 0; i < VS_DOMAINS; i++)
        names[i] = s->names[i];
    drive_daemon_kill(&p->d);
    t = vs_now_ns();
    if ((rc = drive_daemon_start(&p->d, 10000, err)) < 0)
        return rc;
    *first_ms = (double)(vs_now_ns() - t) / 1e6;
    s->daemon_pid = p->d.pid;
    if ((rc = drive_wait_stats(s->main_conn, names, VS_DOMAINS, 30000, err)) < 0)
        return rc;
    *all_ms = (double)(vs_now_ns() - t) / 1e6;
    return 0;
}

/* 0 when the job view @r says no job runs and the last one completed;
 * -EINPROGRESS while one runs; -EIO with @err set when it ended otherwise. */
static int job_outcome(const struct vmctl_response *r, const char *name, moor_error *err)
{
    struct json_object *v, *last;

    if (json_object_object_get_ex(r->json, "active", &v) && json_object_get_boolean(v))
        return -EINPROGRESS;
    if (json_object_object_get_ex(r->json, "last", &last) &&
        json_object_object_get_ex(last, "result", &v) &&
        strcmp(json_object_get_string(v), "completed") == 0)
        return 0;
    return moor_error_set(err, -EIO, "the long job on %s did not complete: %s", name, r->body);
}

/* Poll GET .../job every 5 ms until the long job on @name ended (a long
 * job runs on its own: save and restore answer 202 at once). */
static int wait_job(void *conn, const char *name, moor_error *err)
{
    uint64_t until = vs_now_ns() + JOB_WAIT_NS;
    char path[160];
    int rc;

    snprintf(path, sizeof(path), "/v1/domains/%s/job", name);
    do {
        drive_autoresponse struct vmctl_response r = {0};

        if ((rc = drive_call(conn, "GET", path, NULL, 200, &r, err)) < 0)
            return rc;
        if ((rc = job_outcome(&r, name, err)) != -EINPROGRESS)
            return rc;
        vs_nap((double)JOB_POLL_NS / 1e9);
    } while (vs_now_ns() < until);
    return moor_error_set(err, -ETIMEDOUT, "the long job on %s did not end in 120 s", name);
}

static int m_save(struct vs_side *s, void *conn, const char *name, const char *path,
                  moor_error *err)
{
    char url[160], body[PATH_MAX + 64];
    int rc;

    (void)s;
    snprintf(url, sizeof(url), "/v1/domains/%s/save", name);
    snprintf(body, sizeof(body), "{\"path\":\"%s\",\"bandwidth_mib_s\":%d}", path,
             SAVE_BANDWIDTH_MIB_S);
    if ((rc = drive_call(conn, "POST", url, body, 202, NULL, err)) < 0)
        return rc;
    return wait_job(conn, name, err);
}

static int m_restore(struct vs_side *s, void *conn, const char *name, const char *path,
                     moor_error *err)
{
    char body[PATH_MAX + 32];
    int rc;

    (void)s;
    snprintf(body, sizeof(body), "{\"path\":\"%s\"}", path);
    if ((rc = drive_call(conn, "POST", "/v1/domains/restore", body, 202, NULL, err)) < 0)
        return rc;
    return wait_job(conn, name, err);
}

static const struct vs_ops moor_ops = {
    .open = m_open,
    .close = m_close,
    .call = m_call,
    .define = m_define,
    .start = m_start,
    .destroy = m_destroy,
    .undefine = m_undefine,
    .qemu_pid = m_qemu_pid,
    .restart = m_restart,
    .save = m_save,
    .restore = m_restore,
};

int vs_moor_init(struct vs_side *s, const char *daemon, const char *qemu, moor_error *err)
{
    struct moor_priv *p = calloc(1, sizeof(*p));
    int rc;

    if (!p)
        return moor_error_set(err, -ENOMEM, "out of memory");
    s->priv = p;
    s->label = "moor-vmd";
    s->ops = &moor_ops;
    s->qemu = qemu;
    snprintf(s->prefix, sizeof(s->prefix), "vsl-m%d-", (int)getpid());
    if ((rc = drive_daemon_init(&p->d, daemon, "vsl-moor-vmd", NULL, err)) < 0 ||
        (rc = drive_daemon_start(&p->d, 10000, err)) < 0)
        return rc;
    s->daemon_pid = p->d.pid;
    return m_open(s, &s->main_conn, err);
}

int vs_moor_fini(struct vs_side *s, bool keep_logs, moor_error *err)
{
    struct moor_priv *p = s->priv;
    int rc = 0;

    if (!p)
        return 0;
    vmctl_client_free(s->main_conn);
    s->main_conn = NULL;
    if (p->d.pid)
        rc = drive_daemon_stop(&p->d, 10000, err);
    for (unsigned i = 0; i < VS_DOMAINS; i++)
        drive_kill_qemu(s->qemu_pids[i], s->names[i]);
    if (keep_logs || rc < 0)
        fprintf(stderr, "moor-vmd-bench: moor-vmd's log: %s\n", p->d.log_path);
    drive_daemon_cleanup(&p->d, keep_logs || rc < 0);
    free(p);
    s->priv = NULL;
    return rc;
}
