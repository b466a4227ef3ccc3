/* SPDX-License-Identifier: MIT */
/*
 * domain.c - domain objects, their state table, and the ops of domain.h.
 *
 * A domain is a lockable moor object in vmd->domains. Its mutex guards
 * every field below the config (the config itself never changes after
 * define, so it is read without the mutex by whoever holds a reference).
 * Its embedded job orders the ops: QUERY (stats), MODIFY (start, suspend,
 * resume, reset, shutdown, qmp, undefine), DESTROY (destroy).
 *
 * Every op: take a reference -> lock -> check the table -> job begin (the
 * mutex released while waiting) -> check the table again -> unlock around
 * QMP (moor_monitor_enter/exit) and around process and file work -> lock,
 * re-check -> job end -> moor_end_api.
 *
 * QEMU's side runs on the loop thread: QMP events (on_qmp_event) and the
 * process's exit (on_pidfd) lock the domain, update its state, publish an
 * event, and never block. What must not be done under the mutex (closing
 * the monitor, which waits for a callback in flight; removing the pidfd
 * watch) is collected in a struct teardown and done after
 * the unlock, by whichever thread saw the exit first: the loop, or a
 * destroy/shutdown worker that waited on the pidfd itself.
 */
#define _GNU_SOURCE /* strerrorname_np */
#include "domain.h"
#include "domain-internal.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <moor/job.h>
#include <moor/monitor.h>
#include <moor/object.h>

#include "events.h"
#include "image.h"
#include "log.h"
#include "process.h"
#include "qmp.h"
#include "store.h"

#define KILL_WAIT_MS 10000u /* how long a SIGKILLed QEMU may take to go */

/* ---- the state table -------------------------------------------------------- */

#define S(st)   (1u << (st))
#define ANY     (S(VMD_STATE_SHUTOFF) | S(VMD_STATE_RUNNING) | S(VMD_STATE_PAUSED))
#define ACTIVE  (S(VMD_STATE_RUNNING) | S(VMD_STATE_PAUSED))
#define SHUTOFF S(VMD_STATE_SHUTOFF)

/* Which states each op may run in: the one place that says so. */
static const unsigned op_states[VMD_OP__COUNT] = {
    [VMD_OP_INFO] = ANY,
    [VMD_OP_STATE] = ANY,
    [VMD_OP_STATS] = ACTIVE,
    [VMD_OP_START] = SHUTOFF,
    [VMD_OP_SHUTDOWN] = ACTIVE,
    [VMD_OP_DESTROY] = ACTIVE,
    [VMD_OP_SUSPEND] = S(VMD_STATE_RUNNING),
    [VMD_OP_RESUME] = S(VMD_STATE_PAUSED),
    [VMD_OP_RESET] = ACTIVE,
    [VMD_OP_QMP] = ACTIVE,
    [VMD_OP_UNDEFINE] = SHUTOFF,
    [VMD_OP_SAVE] = ACTIVE,
    [VMD_OP_RESTORE] = SHUTOFF,
    [VMD_OP_JOB] = ANY,
    [VMD_OP_ABORT] = ANY,
    [VMD_OP_BACKUP] = ACTIVE,
};

static const char *const state_names[VMD_STATE__COUNT] = {"shutoff", "running", "paused"};
static const char *const reason_names[VMD_REASON__COUNT] = {
    "none",   "defined", "shutdown", "destroyed",   "crashed",  "failed",
    "booted", "resumed", "reset",    "reconnected", "user",     "starting",
    "qemu",   "saving",  "saved",    "restoring",   "restored",
};
static const char *const op_names[VMD_OP__COUNT] = {
    "info",  "state", "stats",    "start", "shutdown", "destroy", "suspend", "resume",
    "reset", "qmp",   "undefine", "save",  "restore",  "job",     "abort",   "backup",
};

const char *vmd_state_name(enum vmd_state st)
{
    return (unsigned)st < VMD_STATE__COUNT ? state_names[st] : "?";
}

const char *vmd_reason_name(enum vmd_reason r)
{
    return (unsigned)r < VMD_REASON__COUNT ? reason_names[r] : "?";
}

const char *vmd_op_name(enum vmd_op op)
{
    return (unsigned)op < VMD_OP__COUNT ? op_names[op] : "?";
}

bool vmd_op_allowed(enum vmd_op op, enum vmd_state st)
{
    return (unsigned)op < VMD_OP__COUNT && (unsigned)st < VMD_STATE__COUNT &&
           (op_states[op] & S(st));
}

static const char *needs_text(unsigned states)
{
    if (states == SHUTOFF)
        return "shut off";
    if (states == S(VMD_STATE_RUNNING))
        return "running";
    if (states == S(VMD_STATE_PAUSED))
        return "paused";
    return "running or paused";
}

int vmd_op_check(enum vmd_op op, enum vmd_state st, const char *name, moor_error *err)
{
    if ((unsigned)op >= VMD_OP__COUNT || (unsigned)st >= VMD_STATE__COUNT)
        return moor_error_set(err, -EINVAL, "domain %s: unknown op %d or state %d", name, (int)op,
                              (int)st);
    if (op_states[op] & S(st))
        return 0;
    if (st == VMD_STATE_SHUTOFF)
        return moor_error_set(err, -ENOTCONN, "domain %s is not running: %s needs it %s", name,
                              op_names[op], needs_text(op_states[op]));
    return moor_error_set(err, -EBUSY, "domain %s is %s: %s needs it %s", name, state_names[st],
                          op_names[op], needs_text(op_states[op]));
}

/* ---- the object -------------------------------------------------------------- */

static void domain_dispose(void *obj)
{
    vmd_domain *d = obj;

    moor_job_destroy(&d->job);
    vmd_longjob_free(d->longjob);
    vmd_longjob_free(d->last_longjob);
    vmd_disks_detach(&d->disks); /* no mutex held: the last unref is unlocked */
    moor_clear(&d->proc.qmp);
    vmd_process_argv_free(d->proc.argv);
    vmd_config_clear(&d->cfg);
}

static const moor_class *domain_class;
static pthread_once_t domain_class_once = PTHREAD_ONCE_INIT;
/* Serialises define and undefine (check keys, write file, add), so two
 * defines of one uuid cannot both write its file. Held for file I/O; no
 * object mutex is ever taken while it is held, nor it under one. */
static pthread_mutex_t define_lock = PTHREAD_MUTEX_INITIALIZER;

static void domain_class_init(void)
{
    domain_class = moor_class_new("vmd_domain", moor_lockable_class(), sizeof(vmd_domain),
                                  domain_dispose, NULL);
}

/* A shut-off domain owning *@cfg (consumed). New reference, or NULL. */
static vmd_domain *domain_new(struct vmd *vmd, struct vmd_domain_config *cfg, moor_error *err)
{
    pthread_once(&domain_class_once, domain_class_init);
    vmd_domain *d = domain_class ? moor_object_new(domain_class) : NULL;
    if (!d) {
        vmd_config_clear(cfg);
        moor_error_set(err, -ENOMEM, "domain %s: out of memory", cfg->name);
        return NULL;
    }
    d->vmd = vmd;
    d->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    moor_uuid_format(&d->cfg.uuid, d->uuid_text);
    d->state = VMD_STATE_SHUTOFF;
    d->reason = VMD_REASON_DEFINED;
    d->proc.pidfd = -1;
    moor_job_init(&d->job, d, d->cfg.name);
    moor_lock(d);
    moor_job_set_default_timeout(&d->job, vmd->opt.job_timeout_ms ? vmd->opt.job_timeout_ms
                                                                  : MOOR_JOB_DEFAULT_TIMEOUT_MS);
    moor_unlock(d);
    return d;
}

vmd_domain *vmd_domain_lookup(struct vmd *vmd, const char *name_or_uuid)
{
    moor_uuid u;

    if (!name_or_uuid)
        return NULL;
    if (moor_uuid_parse(name_or_uuid, &u, NULL) == 0)
        return moor_registry_find_uuid(vmd->domains, &u);
    return moor_registry_find_name(vmd->domains, name_or_uuid);
}

const moor_uuid *vmd_domain_uuid(vmd_domain *dom)
{
    return &dom->cfg.uuid;
}

const char *vmd_domain_name(vmd_domain *dom)
{
    return dom->cfg.name;
}

/* ---- JSON views (mutex held) ------------------------------------------------- */

void add_str(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v));
}

static struct json_object *monitor_locked(vmd_domain *d)
{
    struct json_object *m = json_object_new_object();
    uint64_t since = 0;
    bool ok = !d->proc.qmp || vmd_qmp_responsive(d->proc.qmp, &since, NULL, 0);

    if (!m)
        return NULL;
    if (d->proc.monitor_error[0]) {
        /* The connection is gone for good: no call can reach this QEMU. */
        json_object_object_add(m, "responsive", json_object_new_boolean(false));
        add_str(m, "error", d->proc.monitor_error);
        return m;
    }
    json_object_object_add(m, "responsive", json_object_new_boolean(ok));
    if (!ok)
        json_object_object_add(m, "unresponsive_since_ms", json_object_new_int64((int64_t)since));
    return m;
}

static struct json_object *job_locked(vmd_domain *d)
{
    moor_job_snapshot snap;

    if (moor_job_info(&d->job, &snap) < 0 || (snap.holders == 0 && !snap.async.active))
        return NULL;
    struct json_object *j = json_object_new_object();
    if (!j)
        return NULL;
    if (snap.holders == 0) { /* a long job alone (GET .../job has its progress) */
        add_str(j, "kind", "ASYNC");
        add_str(j, "api", snap.async.api ? snap.async.api : "?");
        json_object_object_add(j, "age_ms",
                               json_object_new_int64((int64_t)(snap.async.held_ns / 1000000)));
        return j;
    }
    add_str(j, "kind", snap.holder[0].kind_name);
    add_str(j, "api", snap.holder[0].api ? snap.holder[0].api : "?");
    json_object_object_add(j, "age_ms",
                           json_object_new_int64((int64_t)(snap.holder[0].held_ns / 1000000)));
    return j;
}

/* What a view holds beyond name, uuid, state and reason. */
enum {
    VIEW_PID = 1u << 0,    /* "pid" while QEMU runs */
    VIEW_HEALTH = 1u << 1, /* "tainted", "monitor" */
    VIEW_CONFIG = 1u << 2, /* "config", "job" */
};

static struct json_object *view_locked(vmd_domain *d, unsigned what)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    add_str(o, "name", d->cfg.name);
    add_str(o, "uuid", d->uuid_text);
    add_str(o, "state", vmd_state_name(d->state));
    add_str(o, "reason", vmd_reason_name(d->reason));
    if ((what & VIEW_PID) && d->proc.pid > 0)
        json_object_object_add(o, "pid", json_object_new_int64(d->proc.pid));
    if (what & VIEW_CONFIG)
        json_object_object_add(o, "config", vmd_config_to_json(&d->cfg));
    if (what & VIEW_HEALTH) {
        json_object_object_add(o, "tainted", json_object_new_boolean(d->tainted));
        if (d->proc.qmp)
            json_object_object_add(o, "monitor", monitor_locked(d));
    }
    struct json_object *j = (what & VIEW_CONFIG) ? job_locked(d) : NULL;
    if (j)
        json_object_object_add(o, "job", j);
    return o;
}

static struct json_object *summary_locked(vmd_domain *d)
{
    return view_locked(d, VIEW_PID);
}

static struct json_object *state_locked(vmd_domain *d)
{
    return view_locked(d, VIEW_HEALTH);
}

struct json_object *info_locked(vmd_domain *d)
{
    return view_locked(d, VIEW_PID | VIEW_HEALTH | VIEW_CONFIG);
}

/* Set *@out to @o, or fail with -ENOMEM when building it failed. */
int give(struct json_object *o, struct json_object **out, moor_error *err)
{
    if (!o)
        return moor_error_set(err, -ENOMEM, "out of memory");
    *out = o;
    return 0;
}

/* ---- state changes (mutex held) --------------------------------------------- */

void set_state_locked(vmd_domain *d, enum vmd_state st, enum vmd_reason r)
{
    if (d->state == st && d->reason == r)
        return;
    d->state = st;
    d->reason = r;
    struct json_object *data = json_object_new_object();
    if (data) {
        add_str(data, "state", vmd_state_name(st));
        add_str(data, "reason", vmd_reason_name(r));
    }
    if (d->vmd->events)
        vmd_events_publish(d->vmd->events, "lifecycle", d->cfg.name, data);
    else
        json_object_put(data);
    vmd_log(VMD_LOG_INFO, d->cfg.name, NULL, "now %s (%s)", vmd_state_name(st), vmd_reason_name(r));
}

/* QEMU is gone (its pidfd said so): reap it, pick the reason, shut the
 * domain off, fail every waiter, and hand what needs unlocked work to @td. */
void proc_stopped_locked(vmd_domain *d, struct teardown *td)
{
    int status = 0;
    bool reaped = d->proc.child && waitpid(d->proc.pid, &status, WNOHANG) == d->proc.pid;
    enum vmd_reason r = d->destroy_pid && d->destroy_pid == d->proc.pid ? VMD_REASON_DESTROYED
                        : d->stop_reason                                ? d->stop_reason
                        : d->shutdown_seen                              ? VMD_REASON_SHUTDOWN
                                                                        : VMD_REASON_CRASHED;

    if (reaped && WIFSIGNALED(status))
        vmd_log(r == VMD_REASON_CRASHED ? VMD_LOG_WARNING : VMD_LOG_INFO, d->cfg.name, NULL,
                "QEMU pid %d killed by signal %d", (int)d->proc.pid, WTERMSIG(status));
    else if (reaped)
        vmd_log(r == VMD_REASON_CRASHED ? VMD_LOG_WARNING : VMD_LOG_INFO, d->cfg.name, NULL,
                "QEMU pid %d exited with status %d", (int)d->proc.pid, WEXITSTATUS(status));
    else
        vmd_log(r == VMD_REASON_CRASHED ? VMD_LOG_WARNING : VMD_LOG_INFO, d->cfg.name, NULL,
                "QEMU pid %d is gone", (int)d->proc.pid);
    td->qmp = moor_steal(&d->proc.qmp);
    td->handler = d->proc.handler;
    /* Now, not after the unlock: a start that follows at once must not
     * lose its fresh files to this late cleanup. (No fsync: see store.h.) */
    vmd_store_runtime_remove(&d->vmd->opt, &d->cfg.uuid, false);
    vmd_process_argv_free(d->proc.argv);
    memset(&d->proc, 0, sizeof(d->proc));
    d->proc.pidfd = -1;
    d->stop_reason = VMD_REASON_NONE;
    d->destroy_pid = 0;
    d->shutdown_seen = false;
    d->expect = VMD_REASON_NONE;
    set_state_locked(d, VMD_STATE_SHUTOFF, r);
    moor_job_mark_inactive(&d->job);
}

/* No lock held. NULL-safe fields. */
void teardown_finish(vmd_domain *d, struct teardown *td)
{
    if (td->qmp) {
        vmd_qmp_close(td->qmp);
        moor_clear(&td->qmp);
    }
    if (td->handler)
        moor_loop_remove(d->vmd->loop, td->handler);
    memset(td, 0, sizeof(*td));
}

/* ---- the loop thread's side ----------------------------------------------- */

struct watch {
    vmd_domain *d; /* a reference */
    int pidfd;     /* owned */
};

static void watch_free(void *opaque)
{
    struct watch *w = opaque;

    close(w->pidfd);
    moor_unref(w->d);
    free(w);
}

static void on_pidfd(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct watch *w = opaque;
    vmd_domain *d = w->d;
    struct teardown td = {0};

    (void)loop, (void)fd, (void)revents;
    moor_lock(d);
    if (d->proc.handler == id)
        proc_stopped_locked(d, &td);
    moor_unlock(d);
    if (!td.handler) /* stale: make sure it never fires again */
        moor_loop_remove(d->vmd->loop, id);
    teardown_finish(d, &td);
}

static const char *event_name(struct json_object *ev)
{
    struct json_object *v;
    return json_object_object_get_ex(ev, "event", &v) ? json_object_get_string(v) : "?";
}

static void publish_qmp_event(vmd_domain *d, struct json_object *ev)
{
    struct json_object *data = json_object_new_object(), *v;

    if (!data || !d->vmd->events) {
        json_object_put(data);
        return;
    }
    add_str(data, "event", event_name(ev));
    if (json_object_object_get_ex(ev, "data", &v))
        json_object_object_add(data, "data", json_object_get(v));
    vmd_events_publish(d->vmd->events, "qmp", d->cfg.name, data);
}

/* A QMP event: update the state the event says changed. */
static void apply_event_locked(vmd_domain *d, const char *name)
{
    enum vmd_reason why = d->expect;

    if (strcmp(name, "STOP") == 0 && d->state == VMD_STATE_RUNNING)
        set_state_locked(d, VMD_STATE_PAUSED, why ? why : VMD_REASON_QEMU);
    else if (strcmp(name, "RESUME") == 0 && d->state == VMD_STATE_PAUSED)
        set_state_locked(d, VMD_STATE_RUNNING, why ? why : VMD_REASON_RESUMED);
    else if (strcmp(name, "RESET") == 0 && d->state == VMD_STATE_RUNNING)
        set_state_locked(d, VMD_STATE_RUNNING, VMD_REASON_RESET);
    else if (strcmp(name, "SHUTDOWN") == 0)
        d->shutdown_seen = true;
}

static void on_qmp_event(moor_monitor *mon, void *owner, moor_monitor_message *msg, void *opaque)
{
    vmd_domain *d = owner;

    (void)opaque;
    if (msg->kind != MOOR_MONITOR_EVENT || !msg->payload)
        return;
    moor_lock(d);
    if (d->proc.qmp && vmd_qmp_monitor(d->proc.qmp) == mon) {
        publish_qmp_event(d, msg->payload);
        apply_event_locked(d, event_name(msg->payload));
    }
    moor_unlock(d);
}

static void on_qmp_eof(moor_monitor *mon, void *owner, const moor_error *why, void *opaque)
{
    vmd_domain *d = owner;

    (void)opaque;
    vmd_log(VMD_LOG_INFO, d->cfg.name, NULL, "%s closed: %s", moor_monitor_name(mon),
            moor_error_message(why));
    /* Recorded for state/info until QEMU's exit (or a destroy) clears the
     * process: a QEMU that sent garbage keeps running, unreachable. */
    moor_lock(d);
    if (d->proc.qmp && vmd_qmp_monitor(d->proc.qmp) == mon) {
        snprintf(d->proc.monitor_error, sizeof(d->proc.monitor_error), "%s",
                 moor_error_message(why));
        /* A plain end of file is how every exit starts (QEMU closes its
         * monitor, then the pidfd fires): the lifecycle event tells it.
         * Garbage or a protocol error leaves a QEMU we cannot reach: say so. */
        if (!why || why->code != -EPIPE) {
            struct json_object *ev = json_object_new_object();
            if (ev)
                json_object_object_add(ev, "error", json_object_new_string(d->proc.monitor_error));
            vmd_events_publish(d->vmd->events, "monitor", d->cfg.name, ev);
        }
    }
    moor_unlock(d);
}

static const moor_monitor_callbacks qmp_callbacks = {
    .on_event = on_qmp_event,
    .on_eof = on_qmp_eof,
};

/* ---- helpers for ops ------------------------------------------------------- */

int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Exclusive jobs (MODIFY, DESTROY: the ones that keep every other job
 * out) are published on the event bus as "job" events, phase "begin" and
 * "end" (with how long it was held and its result), so a watcher sees who
 * holds a domain and for how long. Shared QUERY jobs are not: they never
 * keep a state change waiting for long and would flood the ring. Only one
 * exclusive job is held at a time, so one field records it. Mutex held.
 */
static void job_event_locked(vmd_domain *d, const char *phase, const char *api, int64_t held_ms,
                             int rc)
{
    struct json_object *o = json_object_new_object();

    if (!o)
        return;
    add_str(o, "phase", phase);
    add_str(o, "api", api);
    if (held_ms >= 0) {
        const char *name = rc < 0 ? strerrorname_np(-rc) : NULL;

        json_object_object_add(o, "held_ms", json_object_new_int64(held_ms));
        add_str(o, "result", rc == 0 ? "ok" : name ? name : "error");
    }
    vmd_events_publish(d->vmd->events, "job", d->cfg.name, o);
}

int job_begin_locked(vmd_domain *d, unsigned kind, const char *api, moor_error *err)
{
    int rc = moor_job_begin(&d->job, kind, api, err);

    if (rc == 0 && kind != MOOR_JOB_QUERY) {
        d->excl_api = api;
        d->excl_since_ms = mono_ms();
        job_event_locked(d, "begin", api, -1, 0);
    }
    return rc;
}

/* End this thread's job; @rc: how the operation went (for the event). */
void job_end_locked(vmd_domain *d, int rc)
{
    if (d->excl_api) {
        job_event_locked(d, "end", d->excl_api, mono_ms() - d->excl_since_ms, rc);
        d->excl_api = NULL;
    }
    moor_job_end(&d->job);
}

/* Check the table, begin a job of @kind, check again. Mutex held
 * throughout (released while waiting). On failure no job is held. */
/* A job begin's failure in the API's terms (domain.h's table). */
int job_refusal_locked(vmd_domain *d, int rc, const char *api, moor_error *err)
{
    if (rc == -ETIMEDOUT) {
        moor_error_prefix(err, "domain %s is busy: ", d->cfg.name);
        if (err)
            err->code = -EBUSY;
        return -EBUSY;
    }
    if (rc == -ESRCH && d->removed)
        return moor_error_set(err, -ENOENT, "domain %s was undefined while %s waited", d->cfg.name,
                              api);
    if (rc == -ESRCH)
        return moor_error_set(err, -ENOTCONN, "domain %s stopped (%s) while %s waited", d->cfg.name,
                              vmd_reason_name(d->reason), api);
    return rc;
}

/* Check the table, begin a job of @kind, check again. Mutex held
 * throughout (released while waiting). On failure no job is held, and the
 * refusal is logged. */
int begin_locked(vmd_domain *d, enum vmd_op op, unsigned kind, const char *api, moor_error *err)
{
    int rc = d->removed ? moor_error_set(err, -ENOENT, "domain %s: no longer defined", d->cfg.name)
                        : vmd_op_check(op, d->state, d->cfg.name, err);
    if (rc == 0 && (rc = job_begin_locked(d, kind, api, err)) < 0)
        rc = job_refusal_locked(d, rc, api, err);
    else if (rc == 0 && (rc = vmd_op_check(op, d->state, d->cfg.name, err)) < 0)
        job_end_locked(d, rc); /* the state changed while we waited */
    if (rc < 0)
        vmd_log(rc == -EBUSY ? VMD_LOG_WARNING : VMD_LOG_NOTICE, d->cfg.name, api, "refused: %s",
                moor_error_message(err));
    return rc;
}

/*
 * One QMP call, from a job holder with the mutex held: the mutex is
 * released for the call and held again on return. The domain may have
 * changed meanwhile (QEMU died): callers re-check what they rely on.
 */
int qmp_locked(vmd_domain *d, const char *api, const char *cmd, struct json_object *args,
               struct json_object **ret, moor_error *err)
{
    if (!d->proc.qmp)
        return moor_error_set(err, -ENOTCONN, "domain %s: %s: QEMU is not running", d->cfg.name,
                              api);
    vmd_qmp *q = moor_ref(d->proc.qmp);
    moor_monitor *mon = vmd_qmp_monitor(q);
    int rc = moor_monitor_enter(mon, d);
    if (rc < 0) {
        moor_unref(q); /* not the last: d->proc.qmp is still q */
        return moor_error_set(err, -EPIPE, "domain %s: %s: QEMU's monitor is closed", d->cfg.name,
                              api);
    }
    rc = vmd_qmp_call(q, cmd, args, ret, err);
    moor_unref(q); /* unlocked: a last unref closes the monitor */
    moor_monitor_exit(mon, d);
    /* Not logged here: a timeout marks the monitor (qmp.c logs that once)
     * and the API logs the failure, rate-limited. */
    if (rc < 0)
        moor_error_prefix(err, "domain %s: %s: ", d->cfg.name, api);
    return rc;
}

static int copy_argv(char *const *src, char ***dst)
{
    size_t n = 0;
    while (src[n])
        n++;
    char **a = calloc(n + 1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!(a[i] = strdup(src[i]))) {
            vmd_process_argv_free(a);
            return -ENOMEM;
        }
    }
    *dst = a;
    return 0;
}

/* Write the status file of a running domain (a hint for the state; the
 * pid, start time and argv are what a restart relies on). Called with the
 * mutex and a job held: copies what it needs, unlocks for the I/O, locks
 * again. */
void status_save_locked(vmd_domain *d)
{
    struct vmd_status st = {0};
    moor_error err = MOOR_ERROR_INIT;

    /* A copy of argv: the loop thread frees proc's if QEMU dies meanwhile. */
    if (!d->proc.pid || copy_argv(d->proc.argv, &st.argv) < 0)
        return;
    st.pid = d->proc.pid;
    st.start_time = d->proc.start_time;
    st.tainted = d->tainted;
    vmd_longjob_status_locked(d, &st);
    snprintf(st.state, sizeof(st.state), "%s", vmd_state_name(d->state));
    snprintf(st.reason, sizeof(st.reason), "%s", vmd_reason_name(d->reason));
    moor_unlock(d);
    if (vmd_store_status_save(&d->vmd->opt, &d->cfg.uuid, &st, &err) < 0)
        vmd_log(VMD_LOG_ERR, d->cfg.name, NULL, "%s", moor_error_message(&err));
    moor_lock(d);
    /* QEMU died during the write: its cleanup may have run before our
     * rename. Callers hold a job, so no new QEMU can own the files yet. */
    if (d->proc.pid != st.pid)
        vmd_store_runtime_remove(&d->vmd->opt, &d->cfg.uuid, false);
    vmd_status_clear(&st);
}

/* End the job, fill *@out with the info view, end the API call. */
static int finish(vmd_domain **dp, int rc, struct json_object **out, moor_error *err)
{
    vmd_domain *d = *dp;

    job_end_locked(d, rc);
    if (rc == 0 && out)
        rc = give(info_locked(d), out, err);
    moor_end_api(dp);
    return rc;
}

/* ---- list, define, info, state, undefine ---------------------------------- */

static int by_name(const void *a, const void *b)
{
    struct json_object *const *x = a, *const *y = b;
    struct json_object *nx, *ny;
    json_object_object_get_ex(*x, "name", &nx);
    json_object_object_get_ex(*y, "name", &ny);
    return strcmp(json_object_get_string(nx), json_object_get_string(ny));
}

int vmd_domain_list(struct vmd *vmd, struct json_object **out, moor_error *err)
{
    void **objs;
    int n = moor_registry_collect(vmd->domains, NULL, NULL, &objs, err);
    if (n < 0)
        return n;
    struct json_object *arr = json_object_new_array_ext(n);
    for (int i = 0; arr && i < n; i++) {
        vmd_domain *d = objs[i];
        moor_lock(d);
        struct json_object *s = d->removed ? NULL : summary_locked(d);
        moor_unlock(d);
        if (s)
            json_object_array_add(arr, s);
    }
    moor_registry_array_free(objs);
    if (!arr)
        return moor_error_set(err, -ENOMEM, "out of memory");
    json_object_array_sort(arr, by_name);
    struct json_object *o = json_object_new_object();
    if (!o) {
        json_object_put(arr);
        return moor_error_set(err, -ENOMEM, "out of memory");
    }
    json_object_object_add(o, "domains", arr);
    *out = o;
    return 0;
}

static int check_free_keys(struct vmd *vmd, const struct vmd_domain_config *cfg, moor_error *err)
{
    char u[MOOR_UUID_STRING_SIZE];
    moor_autounref vmd_domain *by_uuid = moor_registry_find_uuid(vmd->domains, &cfg->uuid);
    moor_autounref vmd_domain *by_name = moor_registry_find_name(vmd->domains, cfg->name);

    if (by_uuid)
        return moor_error_set(err, -EEXIST, "uuid %s is taken by domain %s",
                              moor_uuid_format(&cfg->uuid, u), by_uuid->cfg.name);
    if (by_name)
        return moor_error_set(err, -EEXIST, "name %s is taken", cfg->name);
    return 0;
}

/* Consumes *@cfg. On success *@dp is a new reference to the added domain. */
static int add_domain(struct vmd *vmd, struct vmd_domain_config *cfg, bool save, vmd_domain **dp,
                      moor_error *err)
{
    struct vmd_disk_refs *disks = NULL;
    /* Before define_lock: attaching takes image mutexes (image.h). */
    int rc = vmd_disks_attach(vmd, cfg, !save, &disks, err);
    if (rc < 0) {
        vmd_config_clear(cfg);
        return rc;
    }
    pthread_mutex_lock(&define_lock);
    rc = check_free_keys(vmd, cfg, err);
    if (rc == 0 && save)
        rc = vmd_store_config_save(&vmd->opt, cfg, err);
    if (rc < 0) {
        pthread_mutex_unlock(&define_lock);
        vmd_config_clear(cfg);
        vmd_disks_detach(&disks);
        return rc;
    }
    vmd_domain *d = domain_new(vmd, cfg, err);
    if (d)
        d->disks = disks; /* its dispose detaches them */
    else
        vmd_disks_detach(&disks);
    rc = d ? moor_registry_add(vmd->domains, d, &d->cfg.uuid, d->cfg.name, err) : -ENOMEM;
    if (rc < 0 && save && d)
        vmd_store_config_remove(&vmd->opt, &d->cfg.uuid, NULL);
    pthread_mutex_unlock(&define_lock);
    if (rc < 0) {
        moor_unref(d);
        return rc;
    }
    *dp = d;
    return 0;
}

int vmd_domain_add_loaded(struct vmd *vmd, struct vmd_domain_config *cfg, moor_error *err)
{
    vmd_domain *d = NULL;
    int rc = add_domain(vmd, cfg, false, &d, err);
    moor_unref(d);
    return rc;
}

int vmd_domain_define(struct vmd *vmd, struct vmd_domain_config *cfg, struct json_object **out,
                      moor_error *err)
{
    vmd_domain *d = NULL;
    int rc = add_domain(vmd, cfg, true, &d, err);

    if (rc < 0) {
        vmd_log(VMD_LOG_NOTICE, NULL, "define", "refused: %s", moor_error_message(err));
        return rc;
    }
    vmd_log(VMD_LOG_INFO, d->cfg.name, "define", "defined as %s", d->uuid_text);
    moor_lock(d);
    if (vmd->events) {
        struct json_object *data = json_object_new_object();
        if (data) {
            add_str(data, "state", "shutoff");
            add_str(data, "reason", "defined");
        }
        vmd_events_publish(vmd->events, "lifecycle", d->cfg.name, data);
    }
    rc = give(info_locked(d), out, err);
    moor_end_api(&d);
    return rc;
}

/* A view built under the mutex alone: no job, no QEMU. */
static int view(vmd_domain *dom, struct json_object *(*build)(vmd_domain *d),
                struct json_object **out, moor_error *err)
{
    vmd_domain *d = moor_ref(dom);

    moor_lock(d);
    int rc = give(build(d), out, err);
    moor_end_api(&d);
    return rc;
}

int vmd_domain_info(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    (void)vmd;
    return view(dom, info_locked, out, err);
}

int vmd_domain_state(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    (void)vmd;
    return view(dom, state_locked, out, err);
}

int vmd_domain_undefine(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    vmd_domain *d = moor_ref(dom);

    moor_lock(d);
    int rc = begin_locked(d, VMD_OP_UNDEFINE, MOOR_JOB_MODIFY, "undefine", err);
    if (rc < 0) {
        moor_end_api(&d);
        return rc;
    }
    moor_unlock(d);
    pthread_mutex_lock(&define_lock);
    rc = vmd_store_config_remove(&vmd->opt, &d->cfg.uuid, err);
    struct vmd_disk_refs *disks = NULL;
    moor_lock(d);
    if (rc == 0) {
        d->removed = true;
        moor_registry_remove(vmd->domains, d, NULL);
        moor_job_mark_removed(&d->job);
        disks = d->disks; /* the job keeps start (the only other reader) out */
        d->disks = NULL;
    }
    moor_unlock(d);
    pthread_mutex_unlock(&define_lock);
    vmd_disks_detach(&disks); /* no domain mutex held: takes the images' */
    moor_lock(d);
    job_end_locked(d, rc);
    if (rc == 0) {
        vmd_log(VMD_LOG_INFO, d->cfg.name, "undefine", "undefined");
        struct json_object *o = json_object_new_object();
        if (o) {
            add_str(o, "name", d->cfg.name);
            add_str(o, "uuid", d->uuid_text);
            json_object_object_add(o, "undefined", json_object_new_boolean(true));
        }
        rc = give(o, out, err);
    }
    moor_end_api(&d);
    return rc;
}

/* ---- start ---------------------------------------------------------------- */

/* Kill what @l holds and wait for it to go. No lock held (it blocks: up
 * to KILL_WAIT_MS). @l's pid is our child only for start; an adopted QEMU
 * is waited for through its pidfd. */
void launch_kill(struct launch *l, bool child)
{
    if (l->pidfd >= 0) {
        vmd_process_signal(l->pidfd, SIGKILL);
        if (!child)
            vmd_process_wait_exit(l->pidfd, KILL_WAIT_MS);
        close(l->pidfd);
    } else if (l->pid > 0 && child) {
        kill(l->pid, SIGKILL); /* our unreaped child: the pid cannot be reused */
    }
    if (l->pid > 0 && child)
        while (waitpid(l->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    l->pid = 0;
    l->pidfd = -1;
}

void launch_clear(struct launch *l)
{
    vmd_qmp_close(l->qmp);
    moor_clear(&l->qmp);
    vmd_process_argv_free(l->argv);
    l->argv = NULL;
}

struct spawned {
    const struct vmd_options *opt;
    const moor_uuid *uuid;
    struct launch *l;
    struct vmd_status *st;
};

/* Between fork and exec: open the child's pidfd and save the status file
 * with its pid and start time (exec keeps both), so a daemon killed from
 * now on finds the QEMU after its restart. No lock held. */
static int on_spawned(pid_t pid, void *opaque, moor_error *err)
{
    struct spawned *sp = opaque;
    int rc = vmd_process_pidfd(pid, err);

    if (rc < 0)
        return rc;
    sp->l->pidfd = rc;
    if ((rc = vmd_process_stat(pid, NULL, &sp->l->start_time)) < 0)
        return moor_error_set(err, rc, "QEMU pid %d: cannot read its /proc entry", (int)pid);
    sp->st->pid = pid;
    sp->st->start_time = sp->l->start_time;
    return vmd_store_status_save(sp->opt, sp->uuid, sp->st, err);
}

/* Spawn QEMU with the listening socket, record it, connect QMP. No lock. */
static int launch_spawn(vmd_domain *d, struct launch *l, moor_error *err)
{
    const struct vmd_options *opt = &d->vmd->opt;
    char qmp_path[PATH_MAX], pid_path[PATH_MAX], log_path[PATH_MAX];
    struct vmd_process_spec spec = {.cfg = &d->cfg,
                                    .pidfile = pid_path,
                                    .runas = opt->runas,
                                    .log_path = log_path,
                                    .incoming_defer = l->job != NULL,
                                    .opt = opt,
                                    .disks = d->disks};
    int lfd = -1;

    if (vmd_disks_check(d->disks, &d->cfg, err) < 0)
        return -ENOENT;
    if (vmd_store_runtime_path(opt, &d->cfg.uuid, ".qmp", qmp_path) < 0 ||
        vmd_store_runtime_path(opt, &d->cfg.uuid, ".pid", pid_path) < 0 ||
        vmd_store_log_path(opt, d->cfg.name, log_path) < 0)
        return moor_error_set(err, -ENAMETOOLONG, "runtime paths too long");
    vmd_store_runtime_remove(opt, &d->cfg.uuid, true); /* left by a crash */
    int rc = vmd_process_argv(&spec, &l->argv, err);
    rc = rc ?: vmd_process_listen(qmp_path, &lfd, err);
    struct vmd_status st = {.argv = l->argv, .state = "paused", .reason = "starting"};
    if (l->job) { /* a daemon killed from now on knows what this QEMU was for */
        snprintf(st.job, sizeof(st.job), "%s", l->job);
        snprintf(st.job_path, sizeof(st.job_path), "%s", l->job_path ? l->job_path : "");
    }
    /* Before the fork: a daemon killed after it finds the pidfile. */
    rc = rc ?: vmd_store_status_save(opt, &d->cfg.uuid, &st, err);
    struct spawned sp = {.opt = opt, .uuid = &d->cfg.uuid, .l = l, .st = &st};
    rc = rc ?: vmd_process_spawn(l->argv, log_path, lfd, on_spawned, &sp, &l->pid, err);
    if (lfd >= 0)
        close(lfd);                /* QEMU has its own copy; the path stays bound */
    if (rc < 0 && l->pidfd >= 0) { /* the child is reaped: only the fd is left */
        close(l->pidfd);
        l->pidfd = -1;
    }
    return rc;
}

static int launch_connect(vmd_domain *d, const char *path, struct launch *l, moor_error *err)
{
    unsigned timeout =
        d->vmd->opt.qmp_timeout_ms ? d->vmd->opt.qmp_timeout_ms : VMD_DEFAULT_QMP_TIMEOUT_MS;
    char name[MOOR_MONITOR_NAME_MAX + 1];
    int fd;

    int rc = vmd_process_connect(path, &fd, err);
    if (rc < 0)
        return rc;
    rc = vmd_qmp_handshake(fd, timeout, err);
    snprintf(name, sizeof(name), "qmp %.55s", d->cfg.name);
    if (rc == 0 && !(l->qmp = vmd_qmp_new(d->vmd->loop, fd, d, &qmp_callbacks, name, timeout, err)))
        rc = -EPROTO;
    if (rc < 0)
        close(fd);
    return rc;
}

/* Watch the pidfd and make the QEMU the domain's. Mutex held; never
 * blocks. On failure @l is left as it was, for the caller to kill and
 * clear once it has dropped the mutex (launch_kill, launch_clear).
 * -ESHUTDOWN when the domain was dropped meanwhile (undefined, or the
 * daemon is stopping), -ENOMEM, or the dup/loop failure. */
int launch_adopt_locked(vmd_domain *d, struct launch *l, bool child, moor_error *err)
{
    struct watch *w = NULL;
    uint64_t id;

    /* A long job's thread launches with no API call in flight: the daemon
     * may have dropped the domain meanwhile (vmd_domains_shutdown), and a
     * watch and monitor adopted now would outlive the registry. */
    if (d->removed)
        return moor_error_set(err, -ESHUTDOWN, "domain %s: no longer defined or moor-vmd stopping",
                              d->cfg.name);
    if (!(w = malloc(sizeof(*w))))
        return moor_error_set(err, -ENOMEM, "out of memory");
    if ((w->pidfd = dup(l->pidfd)) < 0) {
        free(w);
        return moor_error_set(err, -errno, "cannot duplicate QEMU's pidfd: %s", strerror(errno));
    }
    w->d = moor_ref(d);
    int rc =
        moor_loop_add_fd(d->vmd->loop, w->pidfd, MOOR_LOOP_IN, on_pidfd, w, watch_free, &id, err);
    if (rc < 0) /* watch_free closed its copy of the pidfd */
        return rc;
    d->proc = (struct proc){.pid = l->pid,
                            .pidfd = w->pidfd,
                            .handler = id,
                            .child = child,
                            .start_time = l->start_time,
                            .argv = l->argv,
                            .qmp = l->qmp};
    close(l->pidfd);
    l->argv = NULL;
    l->qmp = NULL;
    l->pidfd = -1;
    l->pid = 0;
    return 0;
}

/* Start's failures in the API's terms (domain.h's table): an emulator
 * that is not there is a bad config field (-EINVAL), not "no such domain";
 * a QEMU that exited before its monitor answered is -EPIPE whether it went
 * before the connect (-ECONNREFUSED: nobody holds the listening socket
 * any more) or during the handshake. */
static int launch_code(int rc, moor_error *err)
{
    int to = rc == -ENOENT ? -EINVAL : rc == -ECONNREFUSED ? -EPIPE : rc;

    if (to != rc && rc == -ECONNREFUSED)
        moor_error_set(err, -EPIPE, "QEMU exited before its monitor answered");
    else if (to != rc && err)
        err->code = to;
    return to;
}

int launch(vmd_domain *d, struct launch *l, moor_error *err)
{
    char qmp_path[PATH_MAX];

    int rc = launch_spawn(d, l, err);
    if (rc == 0) {
        vmd_store_runtime_path(&d->vmd->opt, &d->cfg.uuid, ".qmp", qmp_path);
        rc = launch_connect(d, qmp_path, l, err);
    }
    rc = launch_code(rc, err);
    if (rc < 0) {
        launch_kill(l, true);
        launch_clear(l);
        vmd_store_runtime_remove(&d->vmd->opt, &d->cfg.uuid, true);
    }
    return rc;
}

/* Destroy what start made when `cont` failed. Mutex held; released
 * inside. The domain is shut off only once QEMU is really gone: returns
 * false (QEMU alive, the domain left as it is, for destroy) when the pidfd
 * could not be duplicated or QEMU outlived the SIGKILL wait. */
bool kill_locked(vmd_domain *d, enum vmd_reason why)
{
    struct teardown td = {0};

    if (!d->proc.handler)
        return true; /* already stopped */
    int pidfd = dup(d->proc.pidfd);
    if (pidfd < 0)
        return false;
    pid_t pid = d->proc.pid;
    d->stop_reason = why;
    moor_unlock(d);
    vmd_process_signal(pidfd, SIGKILL);
    bool gone = vmd_process_wait_exit(pidfd, KILL_WAIT_MS);
    close(pidfd);
    moor_lock(d);
    if (gone && d->proc.handler && d->proc.pid == pid)
        proc_stopped_locked(d, &td);
    else if (!gone && d->proc.pid == pid)
        d->stop_reason = VMD_REASON_NONE;
    moor_unlock(d);
    teardown_finish(d, &td);
    moor_lock(d);
    return gone || !d->proc.handler;
}

int vmd_domain_start(struct vmd *vmd, vmd_domain *dom, bool paused, struct json_object **out,
                     moor_error *err)
{
    vmd_domain *d = moor_ref(dom);
    struct launch l = {.pidfd = -1};

    moor_lock(d);
    int rc = begin_locked(d, VMD_OP_START, MOOR_JOB_MODIFY, "start", err);
    if (rc < 0) {
        moor_end_api(&d);
        return rc;
    }
    moor_unlock(d);
    rc = launch(d, &l, err);
    moor_lock(d);
    rc = rc ?: launch_adopt_locked(d, &l, true, err);
    if (rc < 0) {
        char log[PATH_MAX] = "", why[256];
        moor_unlock(d); /* killing waits; closing the monitor must not hold its owner */
        launch_kill(&l, true);
        launch_clear(&l);
        moor_lock(d);
        vmd_store_log_path(&vmd->opt, d->cfg.name, log);
        snprintf(why, sizeof(why), "%s", moor_error_message(err));
        vmd_log(VMD_LOG_ERR, d->cfg.name, "start", "%s (QEMU's output: %s)", why, log);
        if (rc == -EPIPE) /* QEMU said why in its log */
            moor_error_set(err, rc, "%s (QEMU's output: %s)", why, log);
        moor_error_prefix(err, "domain %s: start: ", d->cfg.name);
        set_state_locked(d, VMD_STATE_SHUTOFF, VMD_REASON_FAILED);
        return finish(&d, rc, out, err);
    }
    vmd_log(VMD_LOG_INFO, d->cfg.name, "start", "QEMU pid %d started", (int)d->proc.pid);
    set_state_locked(d, VMD_STATE_PAUSED, VMD_REASON_STARTING);
    if (!paused) {
        d->expect = VMD_REASON_BOOTED;
        rc = qmp_locked(d, "start", "cont", NULL, NULL, err);
        d->expect = VMD_REASON_NONE;
        if (rc == 0 && d->state == VMD_STATE_PAUSED && d->proc.qmp)
            set_state_locked(d, VMD_STATE_RUNNING, VMD_REASON_BOOTED);
        if (rc < 0) {
            vmd_log(VMD_LOG_ERR, d->cfg.name, "start", "%s", moor_error_message(err));
            if (!kill_locked(d, VMD_REASON_FAILED)) {
                rc = moor_error_set(err, -ETIMEDOUT,
                                    "domain %s: start: cont failed and QEMU pid %d could not be "
                                    "killed: destroy it",
                                    d->cfg.name, (int)d->proc.pid);
                vmd_log(VMD_LOG_ERR, d->cfg.name, "start", "%s", moor_error_message(err));
            }
            return finish(&d, rc, out, err);
        }
    }
    status_save_locked(d);
    return finish(&d, 0, out, err);
}

/* ---- suspend, resume, reset, qmp, stats -------------------------------------- */

/* A MODIFY op that is one QMP command; on success the domain moves to
 * @st/@why unless QEMU died meanwhile (the event may have moved it first). */
static int simple_op(vmd_domain *dom, enum vmd_op op, const char *cmd, enum vmd_state st,
                     enum vmd_reason why, struct json_object **out, moor_error *err)
{
    vmd_domain *d = moor_ref(dom);
    const char *api = vmd_op_name(op);

    moor_lock(d);
    int rc = begin_locked(d, op, MOOR_JOB_MODIFY, api, err);
    if (rc < 0) {
        moor_end_api(&d);
        return rc;
    }
    d->expect = why;
    rc = qmp_locked(d, api, cmd, NULL, NULL, err);
    d->expect = VMD_REASON_NONE;
    if (rc == 0 && d->proc.qmp) {
        set_state_locked(d, st, why);
        status_save_locked(d);
    }
    return finish(&d, rc, out, err);
}

int vmd_domain_suspend(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    (void)vmd;
    return simple_op(dom, VMD_OP_SUSPEND, "stop", VMD_STATE_PAUSED, VMD_REASON_USER, out, err);
}

int vmd_domain_resume(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    (void)vmd;
    return simple_op(dom, VMD_OP_RESUME, "cont", VMD_STATE_RUNNING, VMD_REASON_RESUMED, out, err);
}

int vmd_domain_reset(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    vmd_domain *d = moor_ref(dom);

    (void)vmd;
    moor_lock(d);
    int rc = begin_locked(d, VMD_OP_RESET, MOOR_JOB_MODIFY, "reset", err);
    if (rc < 0) {
        moor_end_api(&d);
        return rc;
    }
    rc = qmp_locked(d, "reset", "system_reset", NULL, NULL, err);
    if (rc == 0 && d->state == VMD_STATE_RUNNING)
        set_state_locked(d, VMD_STATE_RUNNING, VMD_REASON_RESET);
    return finish(&d, rc, out, err);
}

int vmd_domain_qmp(struct vmd *vmd, vmd_domain *dom, const char *execute,
                   struct json_object *arguments, struct json_object **out, moor_error *err)
{
    vmd_domain *d = moor_ref(dom);
    struct json_object *ret = NULL;

    (void)vmd;
    if (!vmd_qmp_command_ok(execute)) {
        moor_unref(d);
        return moor_error_set(err, -EINVAL, "qmp: '%.64s' is not a QMP command name",
                              execute ? execute : "(null)");
    }
    moor_lock(d);
    int rc = begin_locked(d, VMD_OP_QMP, MOOR_JOB_MODIFY, "qmp", err);
    if (rc < 0) {
        moor_end_api(&d);
        return rc;
    }
    if (!d->tainted)
        vmd_log(VMD_LOG_WARNING, d->cfg.name, "qmp", "raw QMP '%s': domain tainted", execute);
    d->tainted = true;
    json_object_get(arguments); /* our reference, for the call */
    rc = qmp_locked(d, "qmp", execute, arguments, &ret, err);
    status_save_locked(d); /* tainted survives a restart (no-op once QEMU is gone) */
    job_end_locked(d, rc);
    moor_end_api(&d);
    json_object_put(arguments);
    if (rc < 0)
        return rc;
    struct json_object *o = json_object_new_object();
    if (!o) {
        json_object_put(ret);
        return moor_error_set(err, -ENOMEM, "out of memory");
    }
    json_object_object_add(o, "return", ret ? ret : json_object_new_object());
    *out = o;
    return 0;
}

/* query-cpus-fast's entries as {"cpu","thread_id"}. Consumes @cpus. */
static struct json_object *vcpus_view(struct json_object *cpus)
{
    struct json_object *arr = json_object_new_array();
    size_t n = json_object_is_type(cpus, json_type_array) ? json_object_array_length(cpus) : 0;

    for (size_t i = 0; arr && i < n; i++) {
        struct json_object *c = json_object_array_get_idx(cpus, i), *v, *o;
        if (!(o = json_object_new_object()))
            break;
        if (json_object_object_get_ex(c, "cpu-index", &v))
            json_object_object_add(o, "cpu", json_object_get(v));
        if (json_object_object_get_ex(c, "thread-id", &v))
            json_object_object_add(o, "thread_id", json_object_get(v));
        json_object_array_add(arr, o);
    }
    json_object_put(cpus);
    return arr;
}

int vmd_domain_stats(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    vmd_domain *d = moor_ref(dom);
    struct json_object *status = NULL, *cpus = NULL, *block = NULL;

    (void)vmd;
    moor_lock(d);
    int rc = begin_locked(d, VMD_OP_STATS, MOOR_JOB_QUERY, "stats", err);
    if (rc < 0) {
        moor_end_api(&d);
        return rc;
    }
    rc = qmp_locked(d, "stats", "query-status", NULL, &status, err);
    rc = rc ?: qmp_locked(d, "stats", "query-cpus-fast", NULL, &cpus, err);
    rc = rc ?: qmp_locked(d, "stats", "query-blockstats", NULL, &block, err);
    job_end_locked(d, rc);
    struct json_object *o = rc == 0 ? json_object_new_object() : NULL;
    if (o) {
        add_str(o, "name", d->cfg.name);
        json_object_object_add(o, "status", moor_steal(&status));
        json_object_object_add(o, "vcpus", vcpus_view(moor_steal(&cpus)));
        json_object_object_add(o, "block", block ? moor_steal(&block) : json_object_new_array());
    }
    moor_end_api(&d);
    json_object_put(status);
    json_object_put(cpus);
    json_object_put(block);
    return rc < 0 ? rc : give(o, out, err);
}

/* ---- shutdown, destroy ---------------------------------------------------- */

#define STOP_CHECK_MS 100u /* how often a long wait looks at vmd->stopping */

/* Wait for the exit behind @pidfd up to @ms, in slices, giving up early
 * when the daemon stops (*@stopping set then). No lock held. */
static bool wait_exit_or_stop(struct vmd *vmd, int pidfd, unsigned ms, bool *stopping)
{
    int64_t deadline = mono_ms() + ms;

    for (;;) {
        int64_t left = deadline - mono_ms();
        unsigned slice = left <= 0 ? 0 : left < STOP_CHECK_MS ? (unsigned)left : STOP_CHECK_MS;
        if (vmd_process_wait_exit(pidfd, slice))
            return true;
        /* relaxed: a hint; the next slice looks again */
        if (atomic_load_explicit(&vmd->stopping, memory_order_relaxed)) {
            *stopping = true;
            return false;
        }
        if (left <= 0)
            return false;
    }
}

/*
 * Wait (unlocked) for QEMU to exit, up to @ms or until the daemon stops,
 * then, if it did, shut the domain off here rather than wait for the loop
 * thread. Mutex and a job held on entry and return. Returns whether QEMU
 * is gone.
 */
static bool wait_gone_locked(vmd_domain *d, int pidfd, unsigned ms, bool *stopping)
{
    struct teardown td = {0};

    moor_unlock(d);
    bool gone = wait_exit_or_stop(d->vmd, pidfd, ms, stopping);
    moor_lock(d);
    if (gone && d->proc.handler) {
        proc_stopped_locked(d, &td);
        moor_unlock(d);
        teardown_finish(d, &td);
        moor_lock(d);
    }
    return gone || !d->proc.handler;
}

int vmd_domain_shutdown(struct vmd *vmd, vmd_domain *dom, unsigned timeout_ms,
                        struct json_object **out, moor_error *err)
{
    vmd_domain *d = moor_ref(dom);
    unsigned ms = timeout_ms             ? timeout_ms
                  : vmd->opt.shutdown_ms ? vmd->opt.shutdown_ms
                                         : VMD_DEFAULT_SHUTDOWN_MS;

    moor_lock(d);
    int rc = begin_locked(d, VMD_OP_SHUTDOWN, MOOR_JOB_MODIFY, "shutdown", err);
    if (rc < 0) {
        moor_end_api(&d);
        return rc;
    }
    rc = qmp_locked(d, "shutdown", "system_powerdown", NULL, NULL, err);
    int pidfd = rc == 0 && d->proc.handler ? dup(d->proc.pidfd) : -1;
    bool stopping = false;
    if (rc == 0 && pidfd >= 0) {
        d->stop_reason = VMD_REASON_SHUTDOWN;
        if (!wait_gone_locked(d, pidfd, ms, &stopping)) {
            d->stop_reason = VMD_REASON_NONE;
            rc = stopping
                     ? moor_error_set(err, -EAGAIN,
                                      "moor-vmd is stopping: gave up waiting for QEMU "
                                      "after system_powerdown (it keeps running)")
                     : moor_error_set(err, -ETIMEDOUT,
                                      "still running %.1f s after system_powerdown", ms / 1000.0);
            vmd_log(VMD_LOG_WARNING, d->cfg.name, "shutdown", "%s", moor_error_message(err));
            moor_error_prefix(err, "domain %s: shutdown: ", d->cfg.name);
        }
    }
    if (pidfd >= 0)
        close(pidfd);
    return finish(&d, rc, out, err);
}

/* Why destroy may skip SIGTERM: the monitor is hung, or QEMU is stopped
 * (a stopped process never sees SIGTERM). Mutex held; /proc is read
 * unlocked. */
static const char *kill_at_once_locked(vmd_domain *d, pid_t pid)
{
    char st = 0;

    if (d->proc.qmp && !vmd_qmp_responsive(d->proc.qmp, NULL, NULL, 0))
        return "its monitor is unresponsive";
    moor_unlock(d);
    bool stopped = vmd_process_stat(pid, &st, NULL) == 0 && (st == 'T' || st == 't');
    moor_lock(d);
    return stopped ? "it is stopped" : NULL;
}

/* SIGTERM (SIGKILL at once when @why says so), SIGKILL after @grace_ms,
 * then wait for the exit. No lock held. Returns whether QEMU is gone. */
static bool kill_wait(vmd_domain *d, int pidfd, pid_t pid, const char *why, unsigned grace_ms)
{
    vmd_log(VMD_LOG_INFO, d->cfg.name, "destroy", "%s QEMU pid %d%s%s",
            why ? "SIGKILL to" : "SIGTERM to", (int)pid, why ? ": " : "", why ? why : "");
    vmd_process_signal(pidfd, why ? SIGKILL : SIGTERM);
    if (vmd_process_wait_exit(pidfd, why ? KILL_WAIT_MS : grace_ms))
        return true;
    if (!why) {
        vmd_log(VMD_LOG_NOTICE, d->cfg.name, "destroy", "SIGKILL after %u ms", grace_ms);
        vmd_process_signal(pidfd, SIGKILL);
    }
    return vmd_process_wait_exit(pidfd, KILL_WAIT_MS);
}

/* Destroy's first step, with no job: the table, a dup of the pidfd, and
 * the mark that names the exit "destroyed". Mutex held. Returns the pidfd
 * (the caller's) or a negative errno (logged). */
static int destroy_prepare_locked(vmd_domain *d, pid_t *pid, moor_error *err)
{
    int rc = d->removed ? moor_error_set(err, -ENOENT, "domain %s: no longer defined", d->cfg.name)
                        : vmd_op_check(VMD_OP_DESTROY, d->state, d->cfg.name, err);
    int pidfd = rc == 0 && d->proc.handler ? dup(d->proc.pidfd) : -1;

    if (rc == 0 && pidfd < 0)
        rc = moor_error_set(err, -ENOTCONN, "domain %s: destroy: QEMU is gone", d->cfg.name);
    if (rc < 0) {
        vmd_log(VMD_LOG_NOTICE, d->cfg.name, "destroy", "refused: %s", moor_error_message(err));
        return rc;
    }
    *pid = d->proc.pid;
    d->destroy_pid = *pid;
    return pidfd;
}

/*
 * Kill first, then take the job (as libvirt does): a job holder may be
 * stuck in a QMP call to a hung QEMU or in shutdown's wait, and QEMU's
 * exit is what ends both (the call fails with -EPIPE, the wait sees the
 * exit). So the signals go out with no job and the mutex dropped; the
 * DESTROY job is begun only afterwards, to apply the stopped state in
 * order with the other ops. It waits only for holders to notice the exit.
 */
int vmd_domain_destroy(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    vmd_domain *d = moor_ref(dom);
    unsigned grace =
        vmd->opt.destroy_grace_ms ? vmd->opt.destroy_grace_ms : VMD_DEFAULT_DESTROY_GRACE_MS;
    struct teardown td = {0};
    pid_t pid = 0;

    moor_lock(d);
    int pidfd = destroy_prepare_locked(d, &pid, err);
    if (pidfd < 0) {
        moor_end_api(&d);
        return pidfd;
    }
    const char *why = kill_at_once_locked(d, pid);
    moor_unlock(d);
    bool gone = kill_wait(d, pidfd, pid, why, grace);
    close(pidfd);
    moor_lock(d);
    if (!gone) {
        if (d->destroy_pid == pid)
            d->destroy_pid = 0;
        moor_end_api(&d);
        return moor_error_set(err, -ETIMEDOUT,
                              "domain %s: destroy: QEMU still alive %u s after SIGKILL",
                              d->cfg.name, KILL_WAIT_MS / 1000);
    }
    int rc = job_begin_locked(d, MOOR_JOB_DESTROY, "destroy", err);
    if (rc < 0) {
        rc = job_refusal_locked(d, rc, "destroy", err);
        vmd_log(VMD_LOG_WARNING, d->cfg.name, "destroy", "QEMU is gone but: %s",
                moor_error_message(err));
        moor_end_api(&d);
        return rc;
    }
    if (d->proc.handler && d->proc.pid == pid) /* else the loop thread or a holder did it */
        proc_stopped_locked(d, &td);
    moor_unlock(d);
    teardown_finish(d, &td);
    moor_lock(d);
    return finish(&d, 0, out, err);
}

/* ---- restart: reconnect ---------------------------------------------------- */

/* Is @pid, opened as @pidfd, the QEMU the status file describes? */
static int check_ours(pid_t pid, const struct vmd_status *st, uint64_t *start, moor_error *err)
{
    int rc = vmd_process_stat(pid, NULL, start);
    if (rc < 0)
        return moor_error_set(err, -ESRCH, "QEMU pid %d is gone", (int)pid);
    if (st->pid && *start != st->start_time)
        return moor_error_set(err, -ESRCH,
                              "pid %d started at %" PRIu64 ", not %" PRIu64 ": not our QEMU",
                              (int)pid, *start, st->start_time);
    if (!vmd_process_cmdline_is(pid, st->argv))
        return moor_error_set(err, -ESRCH, "pid %d runs another command line: not our QEMU",
                              (int)pid);
    return 0;
}

/*
 * Open the QEMU @st describes and check it is the one we started. The
 * pidfd is opened first, so the checks are about that very process (a pid
 * reused later cannot slip in between). Returns the pidfd, or -ESRCH.
 */
static int open_ours(struct vmd *vmd, const moor_uuid *uuid, const struct vmd_status *st,
                     pid_t *pid, uint64_t *start, moor_error *err)
{
    *pid = st->pid ? st->pid : vmd_store_pidfile_read(&vmd->opt, uuid);
    if (*pid <= 0)
        return moor_error_set(err, -ESRCH, "QEMU was being started and left no pid");
    int fd = vmd_process_pidfd(*pid, err);
    if (fd < 0)
        return moor_error_set(err, -ESRCH, "QEMU pid %d is gone", (int)*pid);
    int rc = check_ours(*pid, st, start, err);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

/* A QEMU of ours we cannot manage (no config, no monitor): kill it rather
 * than leave it running unmanaged, as libvirt does. Consumes @pidfd. */
static void kill_unmanageable(int pidfd, pid_t pid, const char *who, const char *why)
{
    vmd_log(VMD_LOG_WARNING, who, "reconnect", "SIGKILL to QEMU pid %d: %s", (int)pid, why);
    vmd_process_signal(pidfd, SIGKILL);
    vmd_process_wait_exit(pidfd, KILL_WAIT_MS);
    close(pidfd);
}

static int reconnect_proc(vmd_domain *d, const struct vmd_status *st, struct launch *l,
                          moor_error *err)
{
    char path[PATH_MAX];
    pid_t pid;

    int fd = open_ours(d->vmd, &d->cfg.uuid, st, &pid, &l->start_time, err);
    if (fd < 0)
        return fd;
    vmd_store_runtime_path(&d->vmd->opt, &d->cfg.uuid, ".qmp", path);
    int rc = launch_connect(d, path, l, err);
    rc = rc ?: copy_argv(st->argv, &l->argv);
    if (rc < 0) {
        kill_unmanageable(fd, pid, d->cfg.name, moor_error_message(err));
        launch_clear(l);
        return rc;
    }
    l->pidfd = fd;
    l->pid = pid;
    return 0;
}

/* A status file whose domain is gone: kill its QEMU if it is ours. */
static int reconnect_orphan(struct vmd *vmd, const moor_uuid *uuid, const struct vmd_status *st,
                            moor_error *err)
{
    char u[MOOR_UUID_STRING_SIZE];
    uint64_t start;
    pid_t pid;
    moor_error ignored = MOOR_ERROR_INIT;

    moor_uuid_format(uuid, u);
    int fd = open_ours(vmd, uuid, st, &pid, &start, &ignored);
    if (fd >= 0)
        kill_unmanageable(fd, pid, u, "no domain has this uuid");
    return moor_error_set(err, -ENOENT, "no domain has this uuid");
}

static enum vmd_state state_hint(const char *text)
{
    return strcmp(text, "running") == 0 ? VMD_STATE_RUNNING : VMD_STATE_PAUSED;
}

/* query-status's "running" flag. Mutex held (released for the call). */
static int sync_state_locked(vmd_domain *d, moor_error *err)
{
    struct json_object *ret = NULL, *v;
    uint64_t watch = d->proc.handler;
    int rc = qmp_locked(d, "reconnect", "query-status", NULL, &ret, err);
    if (rc == 0 && (!d->proc.handler || d->proc.handler != watch)) {
        json_object_put(ret); /* QEMU died after answering: it stays shut off */
        return moor_error_set(err, -ESRCH, "QEMU exited after query-status");
    }
    if (rc < 0)
        return rc;
    bool running = json_object_object_get_ex(ret, "running", &v) && json_object_get_boolean(v);
    json_object_put(ret);
    set_state_locked(d, running ? VMD_STATE_RUNNING : VMD_STATE_PAUSED, VMD_REASON_RECONNECTED);
    return 0;
}

int vmd_domain_reconnect(struct vmd *vmd, const moor_uuid *uuid, const struct vmd_status *st,
                         moor_error *err)
{
    struct launch l = {.pidfd = -1};
    vmd_domain *d = moor_registry_find_uuid(vmd->domains, uuid);

    if (!d)
        return reconnect_orphan(vmd, uuid, st, err);
    moor_lock(d);
    int rc = begin_locked(d, VMD_OP_START, MOOR_JOB_MODIFY, "reconnect", err);
    if (rc < 0) {
        moor_end_api(&d);
        return rc;
    }
    moor_unlock(d);
    rc = reconnect_proc(d, st, &l, err);
    moor_lock(d);
    rc = rc ?: launch_adopt_locked(d, &l, false, err);
    if (rc < 0) { /* after a failed adopt, QEMU is ours to kill: no monitor watches it */
        moor_unlock(d);
        if (l.pidfd >= 0)
            vmd_log(VMD_LOG_WARNING, d->cfg.name, "reconnect", "SIGKILL to QEMU pid %d: %s",
                    (int)l.pid, moor_error_message(err));
        launch_kill(&l, false);
        launch_clear(&l);
        moor_lock(d);
    }
    if (rc == 0) {
        d->tainted = st->tainted;
        /* The file's state until QEMU says; then QEMU's. An adopted QEMU
         * that does not answer stays running, for destroy to kill. */
        set_state_locked(d, state_hint(st->state), VMD_REASON_RECONNECTED);
        rc = sync_state_locked(d, err);
        vmd_log(VMD_LOG_INFO, d->cfg.name, "reconnect", "QEMU pid %d: %s", (int)d->proc.pid,
                rc == 0 ? vmd_state_name(d->state) : moor_error_message(err));
        rc = 0;
        status_save_locked(d);
    } else {
        set_state_locked(d, VMD_STATE_SHUTOFF,
                         rc == -ESRCH ? VMD_REASON_CRASHED : VMD_REASON_FAILED);
    }
    job_end_locked(d, rc);
    moor_end_api(&d);
    return rc;
}

/* ---- daemon exit, debug ------------------------------------------------------ */

void vmd_domains_shutdown(struct vmd *vmd)
{
    void **objs;
    int n = moor_registry_collect(vmd->domains, NULL, NULL, &objs, NULL);

    for (int i = 0; i < n; i++) {
        vmd_domain *d = objs[i];
        moor_lock(d);
        vmd_qmp *q = moor_steal(&d->proc.qmp);
        uint64_t handler = d->proc.handler;
        d->proc.handler = 0;
        d->removed = true;
        moor_job_mark_removed(&d->job);
        moor_unlock(d);
        vmd_qmp_close(q);
        moor_unref(q);
        if (handler)
            moor_loop_remove_sync(vmd->loop, handler);
        moor_registry_remove(vmd->domains, d, NULL);
    }
    if (n >= 0)
        moor_registry_array_free(objs);
}

static struct json_object *census_json(void)
{
    moor_census_entry e[64];
    size_t n = moor_census(e, 64);
    struct json_object *o = json_object_new_object();

    for (size_t i = 0; o && i < n && i < 64; i++)
        json_object_object_add(o, e[i].class_name, json_object_new_int64((int64_t)e[i].live));
    return o;
}

static void debug_jobs_locked(vmd_domain *d, struct json_object *jobs)
{
    moor_job_snapshot s;

    if (moor_job_info(&d->job, &s) < 0 || (s.holders == 0 && s.waiters == 0))
        return;
    for (unsigned i = 0; i < s.holders && i < MOOR_JOB_INFO_HOLDERS; i++) {
        struct json_object *j = json_object_new_object();
        if (!j)
            return;
        add_str(j, "domain", d->cfg.name);
        add_str(j, "kind", s.holder[i].kind_name);
        add_str(j, "api", s.holder[i].api ? s.holder[i].api : "?");
        json_object_object_add(j, "thread", json_object_new_int(s.holder[i].thread));
        json_object_object_add(j, "age_ms",
                               json_object_new_int64((int64_t)(s.holder[i].held_ns / 1000000)));
        json_object_object_add(j, "waiters", json_object_new_int((int)s.waiters));
        json_object_array_add(jobs, j);
    }
    if (s.holders == 0) {
        struct json_object *j = json_object_new_object();
        if (!j)
            return;
        add_str(j, "domain", d->cfg.name);
        json_object_object_add(j, "waiters", json_object_new_int((int)s.waiters));
        json_object_array_add(jobs, j);
    }
}

/* @gone: the monitor error copied under the domain's mutex ("" if none). */
static void debug_monitor(vmd_domain *d, vmd_qmp *q, const char *gone, struct json_object *mons)
{
    struct json_object *m = json_object_new_object();
    uint64_t since = 0;
    char cmd[72] = "";

    if (!m)
        return;
    bool ok = vmd_qmp_responsive(q, &since, cmd, sizeof(cmd));
    add_str(m, "domain", d->cfg.name);
    if (gone[0]) {
        json_object_object_add(m, "responsive", json_object_new_boolean(false));
        add_str(m, "error", gone);
    } else {
        json_object_object_add(m, "responsive", json_object_new_boolean(ok));
    }
    if (!ok) {
        add_str(m, "stuck_command", cmd);
        json_object_object_add(m, "unresponsive_since_ms", json_object_new_int64((int64_t)since));
    }
    json_object_object_add(m, "pending", vmd_qmp_debug(q));
    json_object_array_add(mons, m);
}

int vmd_domains_debug(struct vmd *vmd, struct json_object *into, moor_error *err)
{
    void **objs;
    int n = moor_registry_collect(vmd->domains, NULL, NULL, &objs, err);
    if (n < 0)
        return n;
    struct json_object *jobs = json_object_new_array(), *mons = json_object_new_array();
    for (int i = 0; jobs && mons && i < n; i++) {
        vmd_domain *d = objs[i];
        moor_lock(d);
        debug_jobs_locked(d, jobs);
        vmd_qmp *q = d->proc.qmp ? moor_ref(d->proc.qmp) : NULL;
        char gone[sizeof(d->proc.monitor_error)];
        memcpy(gone, d->proc.monitor_error, sizeof(gone));
        moor_unlock(d);
        if (q)
            debug_monitor(d, q, gone, mons);
        moor_unref(q);
    }
    moor_registry_array_free(objs);
    struct json_object *census = census_json();
    if (!jobs || !mons || !census) {
        json_object_put(jobs);
        json_object_put(mons);
        json_object_put(census);
        return moor_error_set(err, -ENOMEM, "out of memory");
    }
    json_object_object_add(into, "census", census);
    json_object_object_add(into, "jobs", jobs);
    json_object_object_add(into, "monitors", mons);
    return 0;
}

/* ---- failing fast on a hung QEMU -------------------------------------------- */

/* The ops whose first act, once their job is granted, is a QMP call. */
static const enum vmd_op qmp_first_ops[] = {VMD_OP_STATS, VMD_OP_SUSPEND, VMD_OP_RESUME,
                                            VMD_OP_RESET, VMD_OP_QMP,     VMD_OP_SHUTDOWN,
                                            VMD_OP_SAVE};

static bool qmp_first_op(const char *api, enum vmd_op *op)
{
    for (size_t i = 0; i < sizeof(qmp_first_ops) / sizeof(qmp_first_ops[0]); i++)
        if (!strcmp(api, vmd_op_name(qmp_first_ops[i]))) {
            *op = qmp_first_ops[i];
            return true;
        }
    return false;
}

int vmd_domain_fail_fast(vmd_domain *dom, const char *api, moor_error *err)
{
    uint64_t since_ms = 0;
    char cmd[VMD_QMP_COMMAND_MAX + 1] = ""; /* a QMP command name */
    enum vmd_op op;
    int rc = 0;

    if (!api || !qmp_first_op(api, &op) || moor_lock_try(dom) < 0)
        return 0;
    if (!dom->removed && dom->proc.qmp && vmd_op_allowed(op, dom->state) &&
        !vmd_qmp_responsive(dom->proc.qmp, &since_ms, cmd, sizeof(cmd)))
        rc = moor_error_set(err, -ETIMEDOUT,
                            "domain %s: %s: QEMU has not answered %s for %" PRIu64 " s",
                            dom->cfg.name, api, cmd, since_ms / 1000);
    moor_unlock(dom);
    return rc;
}

/* ---- disks (image.h) ---------------------------------------------------------- */

/* The disk of @d that uses @image, or -1. cfg is immutable: no lock. */
static int disk_index(const vmd_domain *d, const char *image)
{
    for (unsigned i = 0; i < d->cfg.n_disks; i++)
        if (strcmp(d->cfg.disks[i].image, image) == 0)
            return (int)i;
    return -1;
}

int vmd_domain_disk_resize(struct vmd *vmd, vmd_domain *dom, const char *image, uint64_t bytes,
                           int (*offline)(void *opaque, moor_error *err), void *opaque,
                           moor_error *err)
{
    int i = disk_index(dom, image);
    char node[VMD_IMAGE_NODE_MAX + 1];

    (void)vmd;
    if (i < 0)
        return moor_error_set(err, -ENOENT, "domain %s has no disk on image %s", dom->cfg.name,
                              image);
    vmd_image_node_name((unsigned)i, image, node);
    vmd_domain *d = moor_ref(dom);
    moor_lock(d);
    int rc = d->removed ? moor_error_set(err, -ENOENT, "domain %s: no longer defined", d->cfg.name)
                        : job_begin_locked(d, MOOR_JOB_MODIFY, "image-resize", err);
    if (rc < 0) {
        rc = rc == -ENOENT ? rc : job_refusal_locked(d, rc, "image-resize", err);
        moor_end_api(&d);
        return rc;
    }
    if (d->state != VMD_STATE_SHUTOFF && d->cfg.disks[i].readonly) {
        rc = moor_error_set(err, -EBUSY,
                            "domain %s runs with image %s read-only: resize it while the domain "
                            "is shut off",
                            d->cfg.name, image);
    } else if (d->state == VMD_STATE_SHUTOFF) {
        moor_unlock(d); /* the job keeps start out while qemu-img runs */
        rc = offline(opaque, err);
        moor_lock(d);
    } else {
        struct json_object *args = json_object_new_object();
        if (args) {
            json_object_object_add(args, "node-name", json_object_new_string(node));
            json_object_object_add(args, "size", json_object_new_int64((int64_t)bytes));
        }
        rc = args ? qmp_locked(d, "image-resize", "block_resize", args, NULL, err)
                  : moor_error_set(err, -ENOMEM, "out of memory");
        json_object_put(args);
    }
    job_end_locked(d, rc);
    moor_end_api(&d);
    return rc;
}
