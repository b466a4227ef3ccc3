/* SPDX-License-Identifier: MIT */
/*
 * vs-lv.c - the libvirtd side of the side-by-side benchmark: libvirt's C
 * API on qemu:///system, one virConnect per thread (each keeps its own
 * connection to libvirtd open), libvirtd run by libvirtd-run.c.
 *
 * The domains match moor-vmd's: type 'qemu' (TCG), machine `pc`, 64 MiB,
 * one vCPU, no disk, no graphics, no video, no USB controller, no memory
 * balloon, the same QEMU binary.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "drive.h"
#include "libvirtd-run.h"
#include "vs-libvirt.h"

#define URI         "qemu:///system"
#define CONNECT_MS  30000
#define LOG_DIR_FMT "%s/vsl-libvirtd.XXXXXX"

struct lv_priv {
    struct lvd_runner run;
    char log_dir[PATH_MAX];
};

/* One thread's connection and its domain handles (looked up once). */
struct lv_conn {
    virConnectPtr c;
    virDomainPtr d[VS_DOMAINS + 1];
};

static void lv_silent(void *opaque, virErrorPtr e)
{
    (void)opaque;
    (void)e;
}

static const char *lv_msg(void)
{
    const char *m = virGetLastErrorMessage();

    return m ? m : "unknown libvirt error";
}

static int lv_err(moor_error *err, const char *what, const char *name)
{
    return moor_error_set(err, -EIO, "libvirt %s %s: %s", what, name ? name : "", lv_msg());
}

static void lv_close(void *conn)
{
    struct lv_conn *l = conn;

    if (!l)
        return;
    for (unsigned i = 0; i <= VS_DOMAINS; i++)
        if (l->d[i])
            virDomainFree(l->d[i]);
    if (l->c)
        virConnectClose(l->c);
    free(l);
}

/* A connection; with @lookup, the handles of the running set too. */
static int lv_connect(struct vs_side *s, struct lv_conn **out, bool lookup, moor_error *err)
{
    struct lv_conn *l = calloc(1, sizeof(*l));

    if (!l)
        return moor_error_set(err, -ENOMEM, "out of memory");
    if (!(l->c = virConnectOpen(URI))) {
        free(l);
        return lv_err(err, "connect", URI);
    }
    /* A domain not defined yet is looked up at its first call instead. */
    for (unsigned i = 0; lookup && i <= VS_DOMAINS; i++)
        if (s->names[i][0])
            l->d[i] = virDomainLookupByName(l->c, s->names[i]);
    *out = l;
    return 0;
}

static int lv_open(struct vs_side *s, void **conn, moor_error *err)
{
    return lv_connect(s, (struct lv_conn **)conn, true, err);
}

static int lv_stats(virDomainPtr d)
{
    virDomainPtr doms[2] = {d, NULL};
    virDomainStatsRecordPtr *recs = NULL;
    int n = virDomainListGetStats(
        doms, VIR_DOMAIN_STATS_STATE | VIR_DOMAIN_STATS_VCPU | VIR_DOMAIN_STATS_BLOCK, &recs, 0);

    if (recs)
        virDomainStatsRecordListFree(recs);
    return n;
}

static int lv_call(struct vs_side *s, void *conn, enum vs_op op, unsigned dom, char *msg,
                   size_t len)
{
    struct lv_conn *l = conn;
    virDomainJobInfo info;
    char *out = NULL;
    int state, reason, rc;

    if (!l->d[dom] && !(l->d[dom] = virDomainLookupByName(l->c, s->names[dom]))) {
        snprintf(msg, len, "%s", lv_msg());
        return -ENOENT;
    }
    switch (op) {
    case VS_STATE:
        rc = virDomainGetState(l->d[dom], &state, &reason, 0);
        break;
    case VS_STATS:
        rc = lv_stats(l->d[dom]);
        break;
    case VS_QMP:
        rc = virDomainQemuMonitorCommand(l->d[dom], "{\"execute\":\"query-status\"}", &out, 0);
        free(out);
        break;
    case VS_JOBINFO:
    default:
        rc = virDomainGetJobInfo(l->d[dom], &info);
        break;
    }
    if (rc >= 0)
        return 0;
    snprintf(msg, len, "%s", lv_msg());
    return -EIO;
}

static int lv_define(struct vs_side *s, void *conn, const char *name, unsigned memory_mib,
                     const char *blob, moor_error *err)
{
    struct lv_conn *l = conn;
    char xml[2 * PATH_MAX + 1024], extra[PATH_MAX + 256] = "";
    virDomainPtr d;

    if (blob)
        snprintf(extra, sizeof(extra),
                 "<qemu:commandline><qemu:arg value='-device'/>"
                 "<qemu:arg value='loader,file=%s,addr=0x1000000,force-raw=on'/>"
                 "</qemu:commandline>",
                 blob);
    snprintf(xml, sizeof(xml),
             "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
             "<name>%s</name><memory unit='MiB'>%u</memory>"
             "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>"
             "<devices><emulator>%s</emulator><controller type='usb' model='none'/>"
             "<video><model type='none'/></video><memballoon model='none'/></devices>%s"
             "</domain>",
             name, memory_mib, s->qemu, extra);
    if (!(d = virDomainDefineXML(l->c, xml)))
        return lv_err(err, "define", name);
    virDomainFree(d);
    return 0;
}

/* Run @fn on domain @name looked up on @conn. */
static int lv_on(void *conn, const char *name, const char *what, int (*fn)(virDomainPtr),
                 moor_error *err)
{
    struct lv_conn *l = conn;
    virDomainPtr d = virDomainLookupByName(l->c, name);
    int rc;

    if (!d)
        return lv_err(err, "lookup", name);
    rc = fn(d) < 0 ? lv_err(err, what, name) : 0;
    virDomainFree(d);
    return rc;
}

static int lv_on_path(void *conn, const char *name, const char *path, moor_error *err)
{
    struct lv_conn *l = conn;
    virDomainPtr d = virDomainLookupByName(l->c, name);
    int rc;

    if (!d)
        return lv_err(err, "lookup", name);
    rc = virDomainSave(d, path) < 0 ? lv_err(err, "save", name) : 0;
    virDomainFree(d);
    return rc;
}

static int lv_start(struct vs_side *s, void *conn, const char *name, moor_error *err)
{
    (void)s;
    return lv_on(conn, name, "start", virDomainCreate, err);
}

static int lv_destroy(struct vs_side *s, void *conn, const char *name, moor_error *err)
{
    (void)s;
    return lv_on(conn, name, "destroy", virDomainDestroy, err);
}

static int lv_undefine(struct vs_side *s, void *conn, const char *name, moor_error *err)
{
    (void)s;
    return lv_on(conn, name, "undefine", virDomainUndefine, err);
}

/* libvirt writes each running domain's QEMU pid to /run/libvirt/qemu/<name>.pid. */
static int lv_qemu_pid(struct vs_side *s, void *conn, const char *name, pid_t *pid, moor_error *err)
{
    char path[PATH_MAX];
    long v = 0;
    FILE *f;

    (void)s;
    (void)conn;
    snprintf(path, sizeof(path), "/run/libvirt/qemu/%s.pid", name);
    if (!(f = fopen(path, "re")))
        return moor_error_set(err, -ESRCH, "no pid file %s: %s", path, strerror(errno));
    if (fscanf(f, "%ld", &v) != 1 || v <= 0)
        v = 0;
    fclose(f);
    if (!v)
        return moor_error_set(err, -ESRCH, "no pid in %s", path);
    *pid = (pid_t)v;
    return 0;
}

static void nap_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Until qemu:///system connects (a new main connection with handles when
 * @lookup); the ms it took. */
static int lv_wait_connect(struct vs_side *s, bool lookup, unsigned ms, moor_error *err)
{
    uint64_t t0 = vs_now_ns(), deadline = t0 + (uint64_t)ms * 1000000u;
    struct lv_conn *l;

    lv_close(s->main_conn);
    s->main_conn = NULL;
    for (;;) {
        moor_error e = MOOR_ERROR_INIT;

        if (lv_connect(s, &l, lookup, &e) == 0)
            break;
        if (vs_now_ns() > deadline)
            return moor_error_set(err, -ETIMEDOUT, "%s did not connect within %u ms: %s", URI, ms,
                                  e.message);
        nap_ms(2);
    }
    s->main_conn = l;
    return 0;
}

static int lv_restart(struct vs_side *s, double *first_ms, double *all_ms, moor_error *err)
{
    struct lv_priv *p = s->priv;
    uint64_t t, deadline;
    bool ok[VS_DOMAINS] = {false};
    unsigned left = VS_DOMAINS;
    char msg[256] = "";
    int rc;

    if ((rc = lvd_runner_kill_libvirtd(&p->run, err)) < 0)
        return rc;
    lv_close(s->main_conn);
    s->main_conn = NULL;
    t = vs_now_ns();
    if ((rc = lvd_runner_start_libvirtd(&p->run, err)) < 0)
        return rc;
    s->daemon_pid = p->run.libvirtd;
    if ((rc = lv_wait_connect(s, true, CONNECT_MS, err)) < 0)
        return rc;
    *first_ms = (double)(vs_now_ns() - t) / 1e6;
    deadline = vs_now_ns() + 30000000000ull;
    while (left) {
        for (unsigned i = 0; i < VS_DOMAINS; i++)
            if (!ok[i] && lv_call(s, s->main_conn, VS_STATS, i, msg, sizeof(msg)) == 0) {
                ok[i] = true;
                left--;
            }
        if (left && vs_now_ns() > deadline)
            return moor_error_set(err, -ETIMEDOUT,
                                  "%u domains did not answer stats 30 s after libvirtd's "
                                  "restart: %s",
                                  left, msg);
        if (left)
            nap_ms(2);
    }
    *all_ms = (double)(vs_now_ns() - t) / 1e6;
    return 0;
}

/* The save's bandwidth: libvirt raises QEMU's migration bandwidth to
 * unlimited for a save to a file (there is no save parameter for it in
 * libvirt 9.0), so a thread lowers it through the QMP pass-through the
 * moment the save job shows up in job info: 48 MiB/s, about 4 s for the
 * 192 MiB of guest data. */
#define SAVE_BANDWIDTH (48u << 20)

struct throttle {
    const char *name;
    atomic_bool done; /* relaxed: a flag polled by the thread */
    bool set;
    char msg[256];
};

static void *throttle_main(void *opaque)
{
    struct throttle *t = opaque;
    virConnectPtr c = virConnectOpen(URI);
    virDomainPtr d = c ? virDomainLookupByName(c, t->name) : NULL;
    char cmd[160], *out = NULL;

    snprintf(cmd, sizeof(cmd),
             "{\"execute\":\"migrate-set-parameters\",\"arguments\":{\"max-bandwidth\":%u}}",
             SAVE_BANDWIDTH);
    while (d && !atomic_load_explicit(&t->done, memory_order_relaxed)) {
        virDomainJobInfo ji;

        if (virDomainGetJobInfo(d, &ji) == 0 && ji.type != VIR_DOMAIN_JOB_NONE &&
            ji.dataTotal > 0) {
            t->set = virDomainQemuMonitorCommand(d, cmd, &out, 0) == 0;
            if (!t->set)
                snprintf(t->msg, sizeof(t->msg), "%s", lv_msg());
            free(out);
            break;
        }
        nap_ms(1);
    }
    if (d)
        virDomainFree(d);
    if (c)
        virConnectClose(c);
    return NULL;
}

static int lv_save(struct vs_side *s, void *conn, const char *name, const char *path,
                   moor_error *err)
{
    struct throttle t = {.name = name};
    pthread_t tid;
    bool threaded = pthread_create(&tid, NULL, throttle_main, &t) == 0;
    int rc = lv_on_path(conn, name, path, err);

    atomic_store_explicit(&t.done, true, memory_order_relaxed);
    if (threaded)
        pthread_join(tid, NULL);
    if (!rc && !t.set)
        fprintf(stderr, "moor-vmd-bench: %s: the save's bandwidth was not limited%s%s\n", s->label,
                t.msg[0] ? ": " : "", t.msg);
    return rc;
}

static int lv_restore(struct vs_side *s, void *conn, const char *name, const char *path,
                      moor_error *err)
{
    struct lv_conn *l = conn;

    (void)s;
    if (virDomainRestore(l->c, path) < 0)
        return lv_err(err, "restore", name);
    return 0;
}

static const struct vs_ops lv_ops = {
    .open = lv_open,
    .close = lv_close,
    .call = lv_call,
    .define = lv_define,
    .start = lv_start,
    .destroy = lv_destroy,
    .undefine = lv_undefine,
    .qemu_pid = lv_qemu_pid,
    .restart = lv_restart,
    .save = lv_save,
    .restore = lv_restore,
};

/* Destroy and undefine every domain whose name starts with "vsl-l": what a
 * crashed earlier run left behind. */
static void lv_remove_leftovers(struct vs_side *s)
{
    struct lv_conn *l = s->main_conn;
    virDomainPtr *doms = NULL;
    int n = virConnectListAllDomains(l->c, &doms, 0);

    for (int i = 0; i < n; i++) {
        const char *name = virDomainGetName(doms[i]);

        if (name && strncmp(name, "vsl-l", 5) == 0) {
            if (virDomainIsActive(doms[i]) == 1)
                virDomainDestroy(doms[i]);
            virDomainUndefine(doms[i]);
        }
        virDomainFree(doms[i]);
    }
    free(doms);
}

int vs_lv_init(struct vs_side *s, const char *qemu, moor_error *err)
{
    const char *tmp = getenv("TMPDIR");
    struct lv_priv *p = calloc(1, sizeof(*p));
    int rc;

    if (!p)
        return moor_error_set(err, -ENOMEM, "out of memory");
    s->priv = p;
    s->label = "libvirtd";
    s->ops = &lv_ops;
    s->qemu = qemu;
    snprintf(s->prefix, sizeof(s->prefix), "vsl-l%d-", (int)getpid());
    snprintf(p->log_dir, sizeof(p->log_dir), LOG_DIR_FMT, tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(p->log_dir))
        return moor_error_set(err, -errno, "mkdtemp %s: %s", p->log_dir, strerror(errno));
    if ((rc = lvd_setup(err)) < 0 || (rc = lvd_runner_start(&p->run, p->log_dir, err)) < 0)
        return rc;
    s->daemon_pid = p->run.libvirtd;
    s->helper_pid = p->run.virtlogd;
    virSetErrorFunc(NULL, lv_silent);
    if ((rc = lv_wait_connect(s, false, CONNECT_MS, err)) < 0)
        return rc;
    lv_remove_leftovers(s);
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    remove(path);
    return 0;
}

int vs_lv_fini(struct vs_side *s, bool keep_logs, moor_error *err)
{
    struct lv_priv *p = s->priv;
    int rc;

    if (!p)
        return 0;
    lv_close(s->main_conn);
    s->main_conn = NULL;
    rc = lvd_runner_stop(&p->run, err);
    for (unsigned i = 0; i < VS_DOMAINS; i++)
        drive_kill_qemu(s->qemu_pids[i], s->names[i]);
    if (keep_logs || rc < 0)
        fprintf(stderr, "moor-vmd-bench: libvirtd's and virtlogd's logs: %s\n", p->log_dir);
    else
        nftw(p->log_dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
    free(p);
    s->priv = NULL;
    return rc;
}
