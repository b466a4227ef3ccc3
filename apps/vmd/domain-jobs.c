/* SPDX-License-Identifier: MIT */
/*
 * domain-jobs.c - long jobs on domains: save, restore, job info, abort,
 * and what a restarted daemon does about a job its predecessor left.
 *
 * Theory of operation. A long job is a moor async job on the domain with
 * the default mask (QUERY, DESTROY and ABORT may start beside it), plus a
 * record (struct vmd_longjob) under the domain's mutex: kind, file, phase,
 * bytes, rate, who asked. The API call that starts it (a pool worker)
 * takes the async slot, creates or opens the file, records the job in the
 * status file, then hands the async job and a domain reference to a
 * thread of its own (moor_job_async_release / _adopt) and answers 202.
 * That thread drives QEMU: each QMP call is short (getfd, migrate,
 * query-migrate every LJ_POLL_MS), made with the mutex dropped, and after
 * each it re-locks and checks: the domain removed or the daemon stopping
 * (leave everything for the next daemon), QEMU gone, an abort request
 * (set by an ABORT job: migrate_cancel, or kill for a restore). So
 * state, info and job answer from the mutex alone, stats from a QUERY
 * job, and destroy kills QEMU first, whatever the job is doing.
 *
 * Why a thread per job and not a pool worker: a save lasts as long as the
 * guest's memory takes to write, minutes for a big guest; a worker held
 * that long would take one of the few workers (and the domain's lane)
 * from every other call. There is at most one long job per domain, so the
 * threads are bounded by the domains; each owns a reference to its
 * domain, and vmd_longjobs_drain waits for them at daemon exit.
 *
 * The save file: "MOORSAVE", u32 version, u32 config length (little
 * endian), the config JSON, zeros up to a multiple of VMD_SAVE_ALIGN;
 * QEMU's migration stream follows. Restore reads the header and feeds
 * QEMU the rest through a pipe (see "restore's feeder").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <libgen.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <moor/job.h>
#include <moor/monitor.h>
#include <moor/object.h>

#include "domain-internal.h"
#include "domain.h"
#include "events.h"
#include "log.h"
#include "store.h"

#define LJ_POLL_MS        100u /* query-migrate period */
#define LJ_EVENT_MS       250u /* progress events at most this often */
#define LJ_CANCEL_POLLS   50u  /* query-migrate polls after migrate_cancel */
#define LJ_FDNAME_SAVE    "moor-save"
#define LJ_FDNAME_LOAD    "moor-restore"
#define LJ_STOPPING       (-ESHUTDOWN) /* the daemon is stopping: leave the job as it is */
#define LJ_HEADER_FIXED   16u
#define FEED_POLL_MS      100            /* how often a blocked feeder looks at feed_stop */
#define FEED_CHUNK        (256u * 1024u) /* read from the file at once */
#define FEED_PIPE_SIZE    (256u * 1024u) /* the pipe: the most written between looks at QMP */
#define FEED_HOLD_POLL_US 200            /* a held feeder looks at QMP's counters this often */
#define FEED_HOLD_MAX_MS  1000           /* and writes again after this at the latest */
/* A save's migrate-set-parameters downtime-limit (ms; QEMU's default 300).
 * QEMU writes the last part of the stream (what its measured rate moves in
 * this time) with the main loop's lock held and without the bandwidth
 * limit, so QMP waits that long: 300 ms at 64 MiB/s is about 20 MB, tens
 * of ms on a loaded host. The guest is paused by then, so a short "downtime"
 * costs it nothing; 10 ms leaves well under 1 MB for that last part. */
#define LJ_DOWNTIME_MS 10

enum lj_kind { LJ_SAVE = 0, LJ_RESTORE };

struct vmd_longjob {
    enum lj_kind kind;
    char path[VMD_SAVE_PATH_MAX + 1];
    int fd; /* the file (ours; QEMU gets a copy through getfd) */
    uint64_t header_len, file_len;
    unsigned bandwidth_mib_s;
    bool paused;  /* restore: leave it paused */
    bool created; /* save: we created path, so a failure removes it */
    struct vmd_client client;
    const char *api; /* literal */
    enum vmd_state prior;
    enum vmd_reason prior_reason;
    int64_t start_ms, end_ms, last_event_ms;
    uint64_t done, total;
    double rate; /* bytes/s over the whole job */
    char phase[24];
    char result[16]; /* "" while running; "completed", "failed", "cancelled" */
    char error[256];
    /* restore: QEMU reads a pipe that a feeder thread fills from the file */
    int pipe_w;                        /* the write end (the feeder's while it runs) */
    vmd_qmp *feed_qmp;                 /* QEMU's connection, whose calls the feeder lets through */
    size_t feed_unit;                  /* the most the feeder writes between two looks at QMP */
    uint64_t feed_holds, feed_held_ms; /* the feeder's (read after the join) */
    pthread_t feeder;
    bool feeding;          /* the feeder thread exists (to join) */
    atomic_bool feed_stop; /* relaxed: polled by the feeder every FEED_POLL_MS */
    _Atomic uint64_t fed;  /* relaxed: a progress figure */
    atomic_int feed_err;   /* relaxed: a hint for the error message */
};

/* ---- the job threads, for vmd_longjobs_drain ------------------------------- */

static pthread_mutex_t threads_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t threads_cond = PTHREAD_COND_INITIALIZER;
static unsigned threads_live; /* guarded by threads_lock */

void vmd_longjobs_drain(struct vmd *vmd)
{
    (void)vmd;
    pthread_mutex_lock(&threads_lock);
    while (threads_live)
        pthread_cond_wait(&threads_cond, &threads_lock);
    pthread_mutex_unlock(&threads_lock);
}

static void thread_done(void)
{
    pthread_mutex_lock(&threads_lock);
    threads_live--;
    pthread_cond_broadcast(&threads_cond);
    pthread_mutex_unlock(&threads_lock);
}

static void feed_join(struct vmd_longjob *j);

void vmd_longjob_free(struct vmd_longjob *j)
{
    if (!j)
        return;
    feed_join(j);
    if (j->fd >= 0)
        close(j->fd);
    if (j->pipe_w >= 0)
        close(j->pipe_w);
    free(j);
}

static struct vmd_longjob *longjob_new(enum lj_kind kind, const struct vmd_longjob_args *a)
{
    struct vmd_longjob *j = calloc(1, sizeof(*j));

    if (!j)
        return NULL;
    j->kind = kind;
    j->fd = -1;
    j->pipe_w = -1;
    snprintf(j->path, sizeof(j->path), "%s", a->path);
    j->bandwidth_mib_s = a->bandwidth_mib_s;
    j->paused = a->paused;
    j->client = a->client;
    j->api = kind == LJ_SAVE ? "save" : "restore";
    j->start_ms = mono_ms();
    snprintf(j->phase, sizeof(j->phase), "prepare");
    return j;
}

static const char *kind_name(const struct vmd_longjob *j)
{
    return j->kind == LJ_SAVE ? "save" : "restore";
}

void vmd_longjob_status_locked(vmd_domain *d, struct vmd_status *st)
{
    struct vmd_longjob *j = d->longjob;

    if (!j)
        return;
    snprintf(st->job, sizeof(st->job), "%s", kind_name(j));
    snprintf(st->job_path, sizeof(st->job_path), "%s", j->path);
    snprintf(st->job_prior, sizeof(st->job_prior), "%s", vmd_state_name(j->prior));
}

/* ---- views and events (mutex held) ---------------------------------------- */

static void add_int(struct json_object *o, const char *k, int64_t v)
{
    json_object_object_add(o, k, json_object_new_int64(v));
}

static struct json_object *longjob_json(const struct vmd_longjob *j, const moor_job_snapshot *s)
{
    struct json_object *o = json_object_new_object();
    int64_t now = j->end_ms ? j->end_ms : mono_ms();

    if (!o)
        return NULL;
    add_str(o, "kind", kind_name(j));
    add_str(o, "phase", j->phase);
    add_str(o, "path", j->path);
    add_str(o, "api", j->api);
    add_int(o, "bytes_done", (int64_t)j->done);
    add_int(o, "bytes_total", (int64_t)j->total);
    json_object_object_add(
        o, "percent",
        json_object_new_double(j->total ? (double)(1000 * j->done / j->total) / 10.0 : 0.0));
    add_int(o, "rate_bytes_s", (int64_t)j->rate);
    add_int(o, "elapsed_ms", now - j->start_ms);
    if (!j->result[0] && j->rate > 0 && j->total >= j->done)
        add_int(o, "remaining_ms", (int64_t)(1000.0 * (double)(j->total - j->done) / j->rate));
    struct json_object *c = json_object_new_object();
    if (c && j->client.known) {
        add_int(c, "uid", j->client.uid);
        add_int(c, "pid", j->client.pid);
    }
    json_object_object_add(o, "client", c);
    if (s)
        json_object_object_add(o, "abort_requested",
                               json_object_new_boolean(s->async.abort_requested));
    if (j->result[0]) {
        add_str(o, "result", j->result);
        if (j->error[0])
            add_str(o, "error", j->error);
    }
    return o;
}

static struct json_object *job_view_locked(vmd_domain *d)
{
    struct json_object *o = json_object_new_object();
    moor_job_snapshot s;

    if (!o)
        return NULL;
    bool have = moor_job_info(&d->job, &s) == 0;
    add_str(o, "name", d->cfg.name);
    add_str(o, "state", vmd_state_name(d->state));
    add_str(o, "reason", vmd_reason_name(d->reason));
    json_object_object_add(o, "active", json_object_new_boolean(d->longjob != NULL));
    json_object_object_add(o, "job",
                           d->longjob ? longjob_json(d->longjob, have ? &s : NULL) : NULL);
    json_object_object_add(o, "last", d->last_longjob ? longjob_json(d->last_longjob, NULL) : NULL);
    return o;
}

/* A "job-progress" event: the job's view, phase and all. */
static void progress_event_locked(vmd_domain *d, struct vmd_longjob *j, bool force)
{
    int64_t now = mono_ms();

    if (!d->vmd->events || (!force && now - j->last_event_ms < LJ_EVENT_MS))
        return;
    j->last_event_ms = now;
    struct json_object *o = json_object_new_object();
    if (o)
        json_object_object_add(o, "job", longjob_json(j, NULL));
    vmd_events_publish(d->vmd->events, "job-progress", d->cfg.name, o);
}

static void set_phase_locked(vmd_domain *d, struct vmd_longjob *j, const char *phase)
{
    snprintf(j->phase, sizeof(j->phase), "%s", phase);
    moor_job_async_set_phase(&d->job, phase);
    progress_event_locked(d, j, true);
}

static void set_progress_locked(vmd_domain *d, struct vmd_longjob *j, uint64_t done, uint64_t total)
{
    int64_t ms = mono_ms() - j->start_ms;

    j->done = done;
    j->total = total;
    j->rate = ms > 0 ? (double)done * 1000.0 / (double)ms : 0.0;
    moor_job_async_set_progress(&d->job, done, total, NULL);
    progress_event_locked(d, j, false);
}

/* ---- QMP from the job's thread (mutex held, released for the call) -------- */

static int qmp_fd_locked(vmd_domain *d, const char *api, const char *name, int fd, moor_error *err)
{
    if (!d->proc.qmp)
        return moor_error_set(err, -EPIPE, "domain %s: %s: QEMU is gone", d->cfg.name, api);
    vmd_qmp *q = moor_ref(d->proc.qmp);
    moor_monitor *mon = vmd_qmp_monitor(q);
    struct json_object *args = json_object_new_object();
    int rc = args ? moor_monitor_enter(mon, d) : -ENOMEM;

    if (rc < 0) {
        json_object_put(args);
        moor_unref(q);
        return moor_error_set(err, rc == -ENOMEM ? -ENOMEM : -EPIPE,
                              "domain %s: %s: QEMU's monitor is closed", d->cfg.name, api);
    }
    add_str(args, "fdname", name);
    rc = vmd_qmp_call_fds(q, "getfd", args, &fd, 1, NULL, err);
    moor_unref(q);
    moor_monitor_exit(mon, d);
    json_object_put(args);
    if (rc < 0)
        moor_error_prefix(err, "domain %s: %s: ", d->cfg.name, api);
    return rc;
}

static int qmp_uri_locked(vmd_domain *d, const char *api, const char *cmd, const char *fdname,
                          moor_error *err)
{
    char uri[64];
    struct json_object *args = json_object_new_object();

    if (!args)
        return moor_error_set(err, -ENOMEM, "out of memory");
    snprintf(uri, sizeof(uri), "fd:%s", fdname);
    add_str(args, "uri", uri);
    int rc = qmp_locked(d, api, cmd, args, NULL, err);
    json_object_put(args);
    return rc;
}

static int64_t json_int_at(struct json_object *o, const char *a, const char *b)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, a, &v))
        return -1;
    if (b && !json_object_object_get_ex(v, b, &v))
        return -1;
    return json_object_get_int64(v);
}

/* query-migrate's status ("active", "completed"...) into @status; on
 * "failed", QEMU's error-desc into @err. Byte counts into @done and @total
 * (unchanged when QEMU does not give them). */
static int query_migrate_locked(vmd_domain *d, const char *api, char *status, size_t size,
                                uint64_t *done, uint64_t *total, moor_error *err)
{
    struct json_object *ret = NULL, *v;
    int rc = qmp_locked(d, api, "query-migrate", NULL, &ret, err);

    if (rc < 0)
        return rc;
    snprintf(status, size, "%s",
             json_object_object_get_ex(ret, "status", &v) ? json_object_get_string(v) : "none");
    int64_t t = json_int_at(ret, "ram", "transferred"), n = json_int_at(ret, "ram", "total");
    if (t >= 0 && done)
        *done = (uint64_t)t;
    if (n > 0 && total)
        *total = (uint64_t)n;
    if (strcmp(status, "failed") == 0)
        rc = moor_error_set(
            err, -EIO, "domain %s: %s: QEMU's migration failed: %s", d->cfg.name, api,
            json_object_object_get_ex(ret, "error-desc", &v) ? json_object_get_string(v)
                                                             : "no reason given");
    json_object_put(ret);
    return rc;
}

/* After each re-lock: may the job go on? 0, LJ_STOPPING, -EPIPE (QEMU
 * gone), -ECANCELED (abort requested). */
static int check_locked(vmd_domain *d, struct vmd_longjob *j, moor_error *err)
{
    /* relaxed: a hint, looked at on every poll */
    if (d->removed || atomic_load_explicit(&d->vmd->stopping, memory_order_relaxed))
        return moor_error_set(err, LJ_STOPPING, "domain %s: %s: moor-vmd is stopping", d->cfg.name,
                              j->api);
    if (!d->proc.qmp)
        return moor_error_set(err, -EPIPE, "domain %s: %s: QEMU went away (%s)", d->cfg.name,
                              j->api, vmd_reason_name(d->reason));
    if (moor_job_abort_requested(&d->job))
        return moor_error_set(err, -ECANCELED, "domain %s: %s: aborted", d->cfg.name, j->api);
    return 0;
}

static void sleep_unlocked(vmd_domain *d, unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    moor_unlock(d);
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    moor_lock(d);
}

/* The transfer, for both directions: poll query-migrate until it is over.
 * A save's bytes are QEMU's (ram transferred/total); a restore's are the
 * feeder's (QEMU's incoming side counts none). */
static int follow_locked(vmd_domain *d, struct vmd_longjob *j, moor_error *err)
{
    char status[32] = "";
    uint64_t done = j->done, total = j->total;

    for (;;) {
        sleep_unlocked(d, LJ_POLL_MS);
        int rc = check_locked(d, j, err);
        if (rc < 0)
            return rc;
        rc = query_migrate_locked(d, j->api, status, sizeof(status), &done, &total, err);
        if (rc < 0)
            return rc;
        if (j->kind == LJ_RESTORE) {
            /* relaxed: a progress figure */
            done = atomic_load_explicit(&j->fed, memory_order_relaxed);
            total = j->file_len - j->header_len;
        }
        if (strcmp(status, "completed") == 0) {
            set_progress_locked(d, j, total, total);
            return 0;
        }
        set_progress_locked(d, j, done, total);
        if (strcmp(status, "cancelled") == 0)
            return moor_error_set(err, -ECANCELED, "domain %s: %s: QEMU cancelled the migration",
                                  d->cfg.name, j->api);
    }
}

/* migrate_cancel, then wait (bounded) for QEMU to say the migration is
 * over, so it no longer writes to the file we are about to remove. */
static void cancel_locked(vmd_domain *d, struct vmd_longjob *j)
{
    moor_error err = MOOR_ERROR_INIT;
    char status[32] = "active";

    if (qmp_locked(d, j->api, "migrate_cancel", NULL, NULL, &err) < 0) {
        vmd_log(VMD_LOG_WARNING, d->cfg.name, j->api, "%s", moor_error_message(&err));
        return;
    }
    for (unsigned i = 0; i < LJ_CANCEL_POLLS && d->proc.qmp; i++) {
        moor_error_clear(&err);
        int rc = query_migrate_locked(d, j->api, status, sizeof(status), NULL, NULL, &err);
        if (rc < 0 || (strcmp(status, "active") != 0 && strcmp(status, "setup") != 0 &&
                       strcmp(status, "cancelling") != 0))
            return;
        sleep_unlocked(d, LJ_POLL_MS / 2);
    }
}

/* ---- save ------------------------------------------------------------------- */

static int save_run_locked(vmd_domain *d, struct vmd_longjob *j, moor_error *err)
{
    int rc = check_locked(d, j, err);

    if (rc == 0 && d->state == VMD_STATE_RUNNING) {
        set_phase_locked(d, j, "pause");
        d->expect = VMD_REASON_SAVING;
        rc = qmp_locked(d, j->api, "stop", NULL, NULL, err);
        d->expect = VMD_REASON_NONE;
    }
    if (rc == 0 && d->proc.qmp)
        set_state_locked(d, VMD_STATE_PAUSED, VMD_REASON_SAVING);
    rc = rc ?: check_locked(d, j, err);
    if (rc == 0)
        set_phase_locked(d, j, "setup");
    if (rc == 0) {
        /* downtime-limit: see LJ_DOWNTIME_MS */
        struct json_object *args = json_object_new_object();
        if (args)
            add_int(args, "downtime-limit", LJ_DOWNTIME_MS);
        if (args && j->bandwidth_mib_s)
            add_int(args, "max-bandwidth", (int64_t)j->bandwidth_mib_s * 1024 * 1024);
        rc = qmp_locked(d, j->api, "migrate-set-parameters", args, NULL, err);
        json_object_put(args);
    }
    rc = rc ?: check_locked(d, j, err);
    rc = rc ?: qmp_fd_locked(d, j->api, LJ_FDNAME_SAVE, j->fd, err);
    rc = rc ?: check_locked(d, j, err);
    rc = rc ?: qmp_uri_locked(d, j->api, "migrate", LJ_FDNAME_SAVE, err);
    if (rc == 0) {
        set_phase_locked(d, j, "transfer");
        rc = follow_locked(d, j, err);
        if (rc == -ECANCELED && d->proc.qmp)
            cancel_locked(d, j);
    }
    if (rc < 0)
        return rc;
    set_phase_locked(d, j, "finish");
    moor_unlock(d);
    int sync = fsync(j->fd) < 0 ? -errno : 0;
    moor_lock(d);
    if (sync < 0)
        return moor_error_set(err, sync, "domain %s: save: fsync of %s: %s", d->cfg.name, j->path,
                              strerror(-sync));
    if (!kill_locked(d, VMD_REASON_SAVED))
        return moor_error_set(err, -ETIMEDOUT, "domain %s: save: QEMU pid %d outlived SIGKILL",
                              d->cfg.name, (int)d->proc.pid);
    return 0;
}

/* Undo a failed save: the file goes, the guest runs again if it ran. */
static void save_undo_locked(vmd_domain *d, struct vmd_longjob *j)
{
    moor_error err = MOOR_ERROR_INIT;

    if (j->created && unlink(j->path) < 0 && errno != ENOENT)
        vmd_log(VMD_LOG_WARNING, d->cfg.name, "save", "cannot remove %s: %s", j->path,
                strerror(errno));
    if (!d->proc.qmp || d->state != VMD_STATE_PAUSED)
        return;
    if (j->prior == VMD_STATE_RUNNING) {
        d->expect = VMD_REASON_RESUMED;
        int rc = qmp_locked(d, "save", "cont", NULL, NULL, &err);
        d->expect = VMD_REASON_NONE;
        if (rc == 0 && d->proc.qmp)
            set_state_locked(d, VMD_STATE_RUNNING, VMD_REASON_RESUMED);
        else
            vmd_log(VMD_LOG_WARNING, d->cfg.name, "save", "left paused: %s",
                    moor_error_message(&err));
    } else {
        set_state_locked(d, VMD_STATE_PAUSED, j->prior_reason);
    }
}

/* ---- restore's feeder ------------------------------------------------------------ */

/*
 * Why a pipe and not the file itself: QEMU 7.2 loads an incoming stream in
 * a coroutine of its main loop, the loop that also runs every QMP command
 * (the monitor's I/O thread only queues them). The coroutine gives the loop
 * back only when a read of the (non-blocking) stream would block, or every
 * 32768 pages in ram_load_precopy (128 MiB of guest RAM). A regular file
 * never blocks, so QMP would wait for the whole load (seconds); a pipe
 * blocks when it runs dry. But a feeder that keeps the pipe topped up (it
 * is faster than QEMU, and runs on another core) starves QMP just the
 * same: measured, stats p99 of 190 to 1410 ms during a restore.
 *
 * So the feeder holds back while a QMP call waits for QEMU: before each
 * write of at most one pipe's worth (FEED_PIPE_SIZE) it looks at the
 * connection's call counters (vmd_qmp_calls); if a call is in flight it
 * writes nothing until that call has ended. QEMU empties the pipe, its
 * read blocks, the coroutine yields, the main loop runs the command. A
 * waiting call costs QEMU's load of at most two pipes' worth (what the
 * pipe holds and the write just made), well under a millisecond of real
 * QEMU; when nobody asks, QEMU reads at full speed. Each hold is followed
 * by at least one write, so a stream of queries slows the restore but
 * never stops it; a hold ends after FEED_HOLD_MAX_MS whatever happens (a
 * call that QEMU never answers fails the job by the monitor's deadline).
 * The feeder never takes the domain's mutex; it stops at the end of the
 * file, on a write error (QEMU gone: EPIPE) or when asked (feed_stop).
 */

/* While a QMP call on the domain's connection is in flight: wait until it
 * has ended (at most FEED_HOLD_MAX_MS), looking every FEED_HOLD_POLL_US. */
static void feed_hold(struct vmd_longjob *j)
{
    uint64_t started, ended;

    vmd_qmp_calls(j->feed_qmp, &started, &ended);
    if (ended >= started)
        return;
    struct timespec ts = {0, FEED_HOLD_POLL_US * 1000L};
    int64_t t0 = mono_ms();
    /* relaxed: a stop request is seen within FEED_HOLD_POLL_US */
    while (!atomic_load_explicit(&j->feed_stop, memory_order_relaxed)) {
        nanosleep(&ts, NULL);
        vmd_qmp_calls(j->feed_qmp, NULL, &ended);
        if (ended >= started || mono_ms() - t0 >= FEED_HOLD_MAX_MS)
            break;
    }
    j->feed_holds++;
    j->feed_held_ms += (uint64_t)(mono_ms() - t0);
}

static bool feed_write(struct vmd_longjob *j, const char *buf, size_t len)
{
    while (len) {
        struct pollfd p = {j->pipe_w, POLLOUT, 0};
        /* relaxed: a stop request is seen within FEED_POLL_MS */
        if (atomic_load_explicit(&j->feed_stop, memory_order_relaxed))
            return false;
        feed_hold(j);
        if (poll(&p, 1, FEED_POLL_MS) <= 0)
            continue;
        ssize_t w = write(j->pipe_w, buf, len < j->feed_unit ? len : j->feed_unit);
        if (w < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (w <= 0) {
            atomic_store_explicit(&j->feed_err, w < 0 ? -errno : -EIO, memory_order_relaxed);
            return false;
        }
        buf += w;
        len -= (size_t)w;
        atomic_fetch_add_explicit(&j->fed, (uint64_t)w, memory_order_relaxed);
    }
    return true;
}

static void *feed_main(void *arg)
{
    struct vmd_longjob *j = arg;
    char *buf = malloc(FEED_CHUNK);
    off_t at = (off_t)j->header_len;

    while (buf) {
        ssize_t r = pread(j->fd, buf, FEED_CHUNK, at);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            atomic_store_explicit(&j->feed_err, -errno, memory_order_relaxed);
        if (r <= 0 || !feed_write(j, buf, (size_t)r))
            break;
        at += r;
    }
    free(buf);
    close(j->pipe_w); /* QEMU sees the end of the stream */
    j->pipe_w = -1;
    return NULL;
}

/* Start the feeder on the write end @w (taken) for QEMU's connection @q (a
 * reference taken). The job's thread owns the feeder fields; the feeder
 * owns pipe_w, feed_holds and feed_held_ms until joined. */
static int feed_start(struct vmd_longjob *j, int w, vmd_qmp *q, moor_error *err)
{
    /* One write between two looks at QMP: the pipe's size, made small and
     * known (Linux's default is 64 KiB; the call may fail: keep that). */
    int size = fcntl(w, F_SETPIPE_SZ, (int)FEED_PIPE_SIZE);

    if (size <= 0)
        size = fcntl(w, F_GETPIPE_SZ);
    j->feed_unit = size > 0 ? (size_t)size : 65536u;
    j->pipe_w = w;
    j->feed_qmp = moor_ref(q);
    int rc = pthread_create(&j->feeder, NULL, feed_main, j);
    if (rc != 0) {
        moor_unref(j->feed_qmp);
        j->feed_qmp = NULL;
        return moor_error_set(err, -rc, "cannot start the restore's feeder: %s", strerror(rc));
    }
    j->feeding = true;
    return 0;
}

/* Stop and join the feeder. No lock held: it may take FEED_POLL_MS. */
static void feed_join(struct vmd_longjob *j)
{
    if (!j->feeding)
        return;
    atomic_store_explicit(&j->feed_stop, true, memory_order_relaxed);
    pthread_join(j->feeder, NULL);
    j->feeding = false;
    moor_unref(j->feed_qmp);
    j->feed_qmp = NULL;
}

/* Hand QEMU the read end of a new pipe and feed it from the file. */
static int feed_pipe_locked(vmd_domain *d, struct vmd_longjob *j, moor_error *err)
{
    int p[2];

    if (pipe2(p, O_CLOEXEC) < 0)
        return moor_error_set(err, -errno, "domain %s: restore: pipe: %s", d->cfg.name,
                              strerror(errno));
    fcntl(p[1], F_SETFL, O_NONBLOCK);
    int rc = qmp_fd_locked(d, j->api, LJ_FDNAME_LOAD, p[0], err);
    close(p[0]); /* QEMU has its copy (or none) */
    if (rc == 0 && !d->proc.qmp)
        rc = moor_error_set(err, -EPIPE, "domain %s: restore: QEMU went away", d->cfg.name);
    rc = rc ?: feed_start(j, p[1], d->proc.qmp, err);
    if (rc < 0)
        close(p[1]);
    return rc;
}

/* ---- restore ---------------------------------------------------------------- */

static int restore_start_locked(vmd_domain *d, struct vmd_longjob *j, moor_error *err)
{
    struct launch l = {.pidfd = -1, .job = "restore", .job_path = j->path};

    set_phase_locked(d, j, "start");
    moor_unlock(d);
    int rc = launch(d, &l, err);
    moor_lock(d);
    rc = rc ?: launch_adopt_locked(d, &l, true, err);
    if (rc < 0) {
        moor_unlock(d);
        launch_kill(&l, true);
        launch_clear(&l);
        moor_lock(d);
        set_state_locked(d, VMD_STATE_SHUTOFF, VMD_REASON_FAILED);
        return rc;
    }
    vmd_log(VMD_LOG_INFO, d->cfg.name, "restore", "QEMU pid %d started (incoming)",
            (int)d->proc.pid);
    set_state_locked(d, VMD_STATE_PAUSED, VMD_REASON_RESTORING);
    status_save_locked(d);
    return 0;
}

static int restore_run_locked(vmd_domain *d, struct vmd_longjob *j, moor_error *err)
{
    int rc = restore_start_locked(d, j, err);

    rc = rc ?: check_locked(d, j, err);
    if (rc == 0)
        set_phase_locked(d, j, "setup");
    rc = rc ?: feed_pipe_locked(d, j, err);
    rc = rc ?: check_locked(d, j, err);
    rc = rc ?: qmp_uri_locked(d, j->api, "migrate-incoming", LJ_FDNAME_LOAD, err);
    if (rc == 0) {
        set_phase_locked(d, j, "transfer");
        rc = follow_locked(d, j, err);
    }
    if (rc < 0)
        return rc;
    set_phase_locked(d, j, "finish");
    if (!j->paused) {
        d->expect = VMD_REASON_RESTORED;
        rc = qmp_locked(d, j->api, "cont", NULL, NULL, err);
        d->expect = VMD_REASON_NONE;
        if (rc < 0)
            return rc;
    }
    if (d->proc.qmp)
        set_state_locked(d, j->paused ? VMD_STATE_PAUSED : VMD_STATE_RUNNING, VMD_REASON_RESTORED);
    return 0;
}

/* Undo a failed restore: its QEMU is killed; shut off as before (an
 * abort), or failed. */
static void restore_undo_locked(vmd_domain *d, struct vmd_longjob *j, int rc)
{
    enum vmd_reason why = rc == -ECANCELED ? j->prior_reason : VMD_REASON_FAILED;

    if (d->proc.handler && !kill_locked(d, why))
        vmd_log(VMD_LOG_ERR, d->cfg.name, "restore", "QEMU pid %d outlived SIGKILL: destroy it",
                (int)d->proc.pid);
    /* QEMU gone on its own or by a destroy: its exit already said why. */
}

/* ---- the job thread ----------------------------------------------------------- */

static void end_locked(vmd_domain *d, struct vmd_longjob *j, int rc, const moor_error *err)
{
    j->end_ms = mono_ms();
    snprintf(j->result, sizeof(j->result), "%s",
             rc == 0            ? "completed"
             : rc == -ECANCELED ? "cancelled"
                                : "failed");
    if (rc < 0)
        snprintf(j->error, sizeof(j->error), "%s", moor_error_message(err));
    if (j->feeding) { /* QEMU took the whole stream, or is gone: it ends soon */
        moor_unlock(d);
        feed_join(j);
        moor_lock(d);
        vmd_log(VMD_LOG_INFO, d->cfg.name, j->api,
                "fed %" PRIu64 " bytes; held %" PRIu64 " times (%" PRIu64 " ms) for QMP calls",
                (uint64_t)atomic_load_explicit(&j->fed, memory_order_relaxed), j->feed_holds,
                j->feed_held_ms);
    }
    if (j->fd >= 0) {
        close(j->fd);
        j->fd = -1;
    }
    d->longjob = NULL;
    vmd_longjob_free(d->last_longjob);
    d->last_longjob = j;
    progress_event_locked(d, j, true);
    vmd_log(rc == 0 ? VMD_LOG_INFO : VMD_LOG_WARNING, d->cfg.name, j->api, "%s %s: %s", j->api,
            j->result, rc == 0 ? j->path : j->error);
    if (d->proc.pid)
        status_save_locked(d); /* the record of the job goes */
    moor_job_end_async(&d->job);
}

static void *job_main(void *arg)
{
    vmd_domain *d = arg;
    moor_error err = MOOR_ERROR_INIT;

    moor_lock(d);
    moor_job_async_adopt(&d->job);
    struct vmd_longjob *j = d->longjob;
    int rc = j->kind == LJ_SAVE ? save_run_locked(d, j, &err) : restore_run_locked(d, j, &err);
    /* relaxed: a hint; a monitor closed by the daemon's exit ends a call with -EPIPE */
    if (rc < 0 && (d->removed || atomic_load_explicit(&d->vmd->stopping, memory_order_relaxed)))
        rc = LJ_STOPPING;
    if (rc == LJ_STOPPING) {
        /* The next daemon finds the record and finishes or undoes the job. */
        vmd_log(VMD_LOG_NOTICE, d->cfg.name, j->api, "left to the next moor-vmd: %s", j->path);
        moor_unlock(d);
        feed_join(j); /* a restore's QEMU starves now: the next daemon kills it anyway */
        moor_lock(d);
        moor_job_end_async(&d->job);
    } else {
        if (rc < 0 && j->kind == LJ_SAVE)
            save_undo_locked(d, j);
        else if (rc < 0)
            restore_undo_locked(d, j, rc);
        end_locked(d, j, rc, &err);
    }
    moor_end_api(&d);
    moor_error_clear(&err);
    thread_done();
    return NULL;
}

/* Hand the async job (held by this thread) to a new thread with a
 * reference. Mutex held. On failure the job is still this thread's. */
static int spawn_locked(vmd_domain *d, moor_error *err)
{
    pthread_t t;
    pthread_attr_t attr;

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    moor_job_async_release(&d->job);
    pthread_mutex_lock(&threads_lock);
    threads_live++;
    pthread_mutex_unlock(&threads_lock);
    vmd_domain *ref = moor_ref(d);
    int rc = pthread_create(&t, &attr, job_main, ref);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        moor_unref(ref);
        thread_done();
        moor_job_async_adopt(&d->job);
        return moor_error_set(err, -rc, "domain %s: cannot start the job's thread: %s", d->cfg.name,
                              strerror(rc));
    }
    return 0;
}

/* ---- starting a job ---------------------------------------------------------- */

/* Take the async slot for @j on @d: -EBUSY naming the long job already
 * running, or moor_job_begin_async's refusal. Mutex held. */
static int begin_longjob_locked(vmd_domain *d, enum vmd_op op, const char *api, uint32_t timeout,
                                moor_error *err)
{
    if (d->longjob)
        return moor_error_set(
            err, -EBUSY, "domain %s: %s refused: a %s job (%s, phase %s) has run for %.1f s",
            d->cfg.name, api, kind_name(d->longjob), d->longjob->path, d->longjob->phase,
            (double)(mono_ms() - d->longjob->start_ms) / 1000.0);
    int rc = d->removed ? moor_error_set(err, -ENOENT, "domain %s: no longer defined", d->cfg.name)
                        : vmd_op_check(op, d->state, d->cfg.name, err);
    if (rc < 0)
        return rc;
    rc = moor_job_begin_async(&d->job, api, MOOR_JOB_ASYNC_DEFAULT_MASK, api, timeout, err);
    if (rc < 0)
        return job_refusal_locked(d, rc, api, err);
    if ((rc = vmd_op_check(op, d->state, d->cfg.name, err)) < 0 || d->longjob) {
        moor_job_end_async(&d->job);
        return rc < 0 ? rc
                      : moor_error_set(err, -EBUSY, "domain %s: another job started", d->cfg.name);
    }
    return 0;
}

/* Write the header: magic, version, config length, config, zeros. */
static int write_header(int fd, const struct vmd_domain_config *cfg, uint64_t *len, moor_error *err)
{
    struct json_object *o = vmd_config_to_json(cfg);
    size_t n = 0;
    const char *text = o ? json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &n) : NULL;

    if (!text || n > VMD_SAVE_CONFIG_MAX) {
        json_object_put(o);
        return moor_error_set(err, text ? -E2BIG : -ENOMEM, "cannot encode the config");
    }
    size_t total = (LJ_HEADER_FIXED + n + VMD_SAVE_ALIGN - 1) / VMD_SAVE_ALIGN * VMD_SAVE_ALIGN;
    unsigned char *buf = calloc(1, total);
    if (!buf) {
        json_object_put(o);
        return moor_error_set(err, -ENOMEM, "out of memory");
    }
    memcpy(buf, VMD_SAVE_MAGIC, 8);
    for (int i = 0; i < 4; i++) {
        buf[8 + i] = (unsigned char)(VMD_SAVE_VERSION >> (8 * i));
        buf[12 + i] = (unsigned char)((uint32_t)n >> (8 * i));
    }
    memcpy(buf + LJ_HEADER_FIXED, text, n);
    json_object_put(o);
    ssize_t w = pwrite(fd, buf, total, 0);
    int e = errno;
    free(buf);
    if (w != (ssize_t)total)
        return moor_error_set(err, w < 0 ? -e : -ENOSPC, "cannot write the header: %s",
                              w < 0 ? strerror(e) : "short write");
    if (lseek(fd, (off_t)total, SEEK_SET) < 0)
        return moor_error_set(err, -errno, "lseek: %s", strerror(errno));
    *len = total;
    return 0;
}

/* The file of a save: its directory must exist and it must not. No lock. */
static int save_open(vmd_domain *d, struct vmd_longjob *j, moor_error *err)
{
    int fd = open(j->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

    if (fd < 0) {
        int e = errno;
        return moor_error_set(err,
                              e == EEXIST   ? -EEXIST
                              : e == ENOENT ? -ENOENT
                                            : -e,
                              "domain %s: save: cannot create %s: %s", d->cfg.name, j->path,
                              e == EEXIST ? "it exists (save never overwrites)" : strerror(e));
    }
    j->fd = fd;
    j->created = true;
    int rc = write_header(fd, &d->cfg, &j->header_len, err);
    if (rc < 0) {
        moor_error_prefix(err, "domain %s: save: %s: ", d->cfg.name, j->path);
        close(fd);
        j->fd = -1;
        unlink(j->path);
        j->created = false;
    }
    return rc;
}

int vmd_domain_save(struct vmd *vmd, vmd_domain *dom, const struct vmd_longjob_args *args,
                    struct json_object **out, moor_error *err)
{
    vmd_domain *d = moor_ref(dom);
    struct vmd_longjob *j = longjob_new(LJ_SAVE, args);

    (void)vmd;
    if (!j) {
        moor_unref(d);
        return moor_error_set(err, -ENOMEM, "out of memory");
    }
    moor_lock(d);
    int rc = begin_longjob_locked(d, VMD_OP_SAVE, "save", MOOR_JOB_TIMEOUT_DEFAULT, err);
    if (rc < 0) {
        vmd_log(VMD_LOG_NOTICE, d->cfg.name, "save", "refused: %s", moor_error_message(err));
        vmd_longjob_free(j);
        moor_end_api(&d);
        return rc;
    }
    j->prior = d->state;
    j->prior_reason = d->reason;
    moor_unlock(d);
    rc = save_open(d, j, err);
    moor_lock(d);
    if (rc == 0 && !d->proc.qmp)
        rc = moor_error_set(err, -ENOTCONN, "domain %s: save: QEMU went away", d->cfg.name);
    if (rc == 0) {
        d->longjob = j;
        status_save_locked(d); /* the record: a daemon killed from now on finds it */
        rc = spawn_locked(d, err);
        if (rc < 0) {
            d->longjob = NULL;
            status_save_locked(d); /* the record goes again */
        }
    }
    if (rc < 0) {
        if (j->created)
            unlink(j->path);
        vmd_longjob_free(j);
        moor_job_end_async(&d->job);
        moor_end_api(&d);
        return rc;
    }
    vmd_log(VMD_LOG_INFO, d->cfg.name, "save", "saving to %s", j->path);
    rc = give(job_view_locked(d), out, err);
    moor_end_api(&d);
    return rc;
}

/* ---- restore's header ---------------------------------------------------------- */

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Read and check the header of the open file @j->fd; the config into @cfg. */
static int read_header(struct vmd_longjob *j, struct vmd_domain_config *cfg, moor_error *err)
{
    unsigned char fixed[LJ_HEADER_FIXED];
    struct stat sb;

    if (fstat(j->fd, &sb) < 0 || !S_ISREG(sb.st_mode))
        return moor_error_set(err, -EINVAL, "restore: %s is not a regular file", j->path);
    if (pread(j->fd, fixed, sizeof(fixed), 0) != (ssize_t)sizeof(fixed) ||
        memcmp(fixed, VMD_SAVE_MAGIC, 8) != 0)
        return moor_error_set(err, -EINVAL, "restore: %s is not a moor-vmd save file", j->path);
    if (le32(fixed + 8) != VMD_SAVE_VERSION)
        return moor_error_set(err, -EINVAL, "restore: %s has version %u, not %u", j->path,
                              le32(fixed + 8), VMD_SAVE_VERSION);
    uint32_t n = le32(fixed + 12);
    uint64_t hlen =
        (LJ_HEADER_FIXED + (uint64_t)n + VMD_SAVE_ALIGN - 1) / VMD_SAVE_ALIGN * VMD_SAVE_ALIGN;
    if (n == 0 || n > VMD_SAVE_CONFIG_MAX || hlen > (uint64_t)sb.st_size)
        return moor_error_set(err, -EINVAL, "restore: %s: bad config length %u", j->path, n);
    char *text = malloc(n + 1);
    if (!text)
        return moor_error_set(err, -ENOMEM, "out of memory");
    ssize_t r = pread(j->fd, text, n, LJ_HEADER_FIXED);
    text[r > 0 ? r : 0] = '\0';
    struct json_object *o = r == (ssize_t)n ? json_tokener_parse(text) : NULL;
    free(text);
    int rc = o ? vmd_config_parse(o, cfg, err)
               : moor_error_set(err, -EINVAL, "restore: %s: the config is not JSON", j->path);
    json_object_put(o);
    if (rc < 0)
        return rc;
    j->header_len = hlen;
    j->file_len = (uint64_t)sb.st_size;
    j->total = j->file_len - hlen;
    if (lseek(j->fd, (off_t)hlen, SEEK_SET) < 0) {
        vmd_config_clear(cfg);
        return moor_error_set(err, -errno, "restore: lseek: %s", strerror(errno));
    }
    return 0;
}

/* The domain the header names: found by uuid, or defined from it. */
static vmd_domain *restore_domain(struct vmd *vmd, struct vmd_domain_config *cfg, moor_error *err)
{
    char u[MOOR_UUID_STRING_SIZE];
    vmd_domain *d = moor_registry_find_uuid(vmd->domains, &cfg->uuid);
    struct json_object *info = NULL;

    if (d) {
        vmd_config_clear(cfg);
        return d;
    }
    moor_uuid uuid = cfg->uuid; /* define consumes @cfg */
    moor_uuid_format(&uuid, u);
    if (vmd_domain_define(vmd, cfg, &info, err) < 0) {
        moor_error_prefix(err, "restore: cannot define the saved domain: ");
        return NULL;
    }
    json_object_put(info);
    d = moor_registry_find_uuid(vmd->domains, &uuid);
    if (!d)
        moor_error_set(err, -ENOENT, "restore: domain %s was undefined meanwhile", u);
    return d;
}

int vmd_domain_restore(struct vmd *vmd, const struct vmd_longjob_args *args,
                       struct json_object **out, moor_error *err)
{
    struct vmd_longjob *j = longjob_new(LJ_RESTORE, args);
    struct vmd_domain_config cfg = {0};

    if (!j)
        return moor_error_set(err, -ENOMEM, "out of memory");
    j->fd = open(j->path, O_RDONLY | O_CLOEXEC);
    if (j->fd < 0) {
        int e = errno;
        vmd_longjob_free(j);
        return moor_error_set(err, e == ENOENT ? -ENOENT : -EINVAL, "restore: cannot open %s: %s",
                              args->path, strerror(e));
    }
    int rc = read_header(j, &cfg, err);
    vmd_domain *d = rc == 0 ? restore_domain(vmd, &cfg, err) : NULL;
    if (!d) {
        vmd_longjob_free(j);
        return rc < 0 ? rc : err ? err->code : -ENOENT;
    }
    moor_lock(d);
    /* Never waits: this call has no lane (no domain in its URL). */
    rc = begin_longjob_locked(d, VMD_OP_RESTORE, "restore", 0, err);
    if (rc == 0) {
        j->prior = d->state;
        j->prior_reason = d->reason;
        d->longjob = j;
        rc = spawn_locked(d, err);
        if (rc < 0) {
            d->longjob = NULL;
            moor_job_end_async(&d->job);
        }
    }
    if (rc < 0) {
        vmd_log(VMD_LOG_NOTICE, d->cfg.name, "restore", "refused: %s", moor_error_message(err));
        vmd_longjob_free(j);
        moor_end_api(&d);
        return rc;
    }
    vmd_log(VMD_LOG_INFO, d->cfg.name, "restore", "restoring from %s", j->path);
    rc = give(job_view_locked(d), out, err);
    moor_end_api(&d);
    return rc;
}

/* ---- job info, abort ---------------------------------------------------------- */

int vmd_domain_job(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    vmd_domain *d = moor_ref(dom);

    (void)vmd;
    moor_lock(d);
    int rc = give(job_view_locked(d), out, err);
    moor_end_api(&d);
    return rc;
}

int vmd_domain_abort(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    vmd_domain *d = moor_ref(dom);

    (void)vmd;
    moor_lock(d);
    if (!dom->longjob) { /* dom: the same object, known non-NULL */
        int rc = moor_error_set(err, -ENOENT, "domain %s has no job to abort", d->cfg.name);
        moor_end_api(&d);
        return rc;
    }
    /* The ABORT job sets the running async job's abort request as it
     * starts; it has nothing else to do. */
    int rc = job_begin_locked(d, MOOR_JOB_ABORT, "abort", err);
    if (rc < 0) {
        rc = job_refusal_locked(d, rc, "abort", err);
        moor_end_api(&d);
        return rc;
    }
    job_end_locked(d, 0);
    vmd_log(VMD_LOG_INFO, d->cfg.name, "abort", "abort requested");
    rc = give(job_view_locked(d), out, err);
    moor_end_api(&d);
    return rc;
}

/* ---- restart ------------------------------------------------------------------- */

/* A save left by a killed daemon, whose QEMU we reconnected to. */
static void recover_save_locked(vmd_domain *d, const struct vmd_status *st)
{
    moor_error err = MOOR_ERROR_INIT;
    char status[32] = "";
    struct vmd_longjob j = {.kind = LJ_SAVE, .fd = -1, .created = true, .api = "save"};

    snprintf(j.path, sizeof(j.path), "%.*s", (int)sizeof(j.path) - 1, st->job_path);
    j.prior = strcmp(st->job_prior, "running") == 0 ? VMD_STATE_RUNNING : VMD_STATE_PAUSED;
    j.prior_reason = j.prior == VMD_STATE_RUNNING ? VMD_REASON_RESUMED : VMD_REASON_USER;
    int rc = query_migrate_locked(d, "save", status, sizeof(status), NULL, NULL, &err);
    if (rc == 0 && strcmp(status, "completed") == 0) {
        /* QEMU wrote it all: finish what the dead daemon started. */
        int fd = open(j.path, O_WRONLY | O_CLOEXEC);
        bool synced = fd >= 0 && fsync(fd) == 0;
        if (fd >= 0)
            close(fd);
        if (synced && kill_locked(d, VMD_REASON_SAVED)) {
            vmd_log(VMD_LOG_NOTICE, d->cfg.name, "save", "finished after restart: %s", j.path);
            return;
        }
    }
    if (rc == 0 && strcmp(status, "active") == 0)
        cancel_locked(d, &j);
    vmd_log(VMD_LOG_NOTICE, d->cfg.name, "save", "cancelled after restart (migration %s): %s",
            status[0] ? status : "unknown", j.path);
    save_undo_locked(d, &j);
    status_save_locked(d);
}

/* A restore left by a killed daemon: kept when QEMU had loaded it all (the
 * daemon died while finishing: the guest stays as QEMU says, running or
 * paused), else its QEMU is killed (shutoff, failed). */
static void recover_restore_locked(vmd_domain *d)
{
    moor_error err = MOOR_ERROR_INIT;
    char status[32] = "";

    if (query_migrate_locked(d, "restore", status, sizeof(status), NULL, NULL, &err) == 0 &&
        strcmp(status, "completed") == 0) {
        vmd_log(VMD_LOG_NOTICE, d->cfg.name, "restore", "had completed before the restart: kept");
        set_state_locked(d, d->state, VMD_REASON_RESTORED);
        return;
    }
    vmd_log(VMD_LOG_NOTICE, d->cfg.name, "restore",
            "failed by the restart (migration %s): killing its incoming QEMU pid %d",
            status[0] ? status : "unknown", (int)d->proc.pid);
    if (!kill_locked(d, VMD_REASON_FAILED))
        vmd_log(VMD_LOG_ERR, d->cfg.name, "restore", "QEMU outlived SIGKILL: destroy it");
}

void vmd_longjob_recover(struct vmd *vmd, const moor_uuid *uuid, const struct vmd_status *st,
                         int reconnected)
{
    bool save = strcmp(st->job, "save") == 0;
    vmd_domain *d = reconnected == 0 ? moor_registry_find_uuid(vmd->domains, uuid) : NULL;

    if (!d) {
        /* QEMU is gone: a save's file can only be partial. A restore's
         * file is its input and stays. */
        if (save && st->job_path[0] && unlink(st->job_path) == 0)
            vmd_log(VMD_LOG_NOTICE, NULL, "save", "removed the partial %s after restart",
                    st->job_path);
        return;
    }
    moor_error err = MOOR_ERROR_INIT;
    moor_lock(d);
    if (job_begin_locked(d, MOOR_JOB_MODIFY, "recover", &err) < 0) {
        vmd_log(VMD_LOG_ERR, d->cfg.name, st->job, "not recovered: %s", moor_error_message(&err));
        moor_end_api(&d);
        return;
    }
    if (save) {
        recover_save_locked(d, st);
    } else {
        recover_restore_locked(d);
    }
    job_end_locked(d, 0);
    moor_end_api(&d);
}
