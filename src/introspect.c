/* SPDX-License-Identifier: MIT */
/*
 * introspect.c - moor_debug_snapshot(), its JSON writer, and the watchdog.
 *
 * Theory of operation. job.c and monitor.c keep their live instances on
 * lists of their own and copy them out on request (introspect-internal.h);
 * this file assembles the copies with the census into one snapshot.
 *
 * The watchdog is one thread, started when the MOOR_DEBUG_WATCHDOG flag is
 * set (by moor_debug_set_flags, or at the first job or monitor set up
 * after MOOR_DEBUG turned it on: no thread is started before main) and
 * stopped and joined when the flag is cleared or at exit. A few times per
 * threshold it takes a snapshot and reports each overdue entry (a job
 * held, waited for, or a monitor call pending for at least the threshold)
 * that it has not reported yet. An episode is named by what the snapshot
 * says about it - job and thread and start for a hold, job and ticket for
 * a wait, monitor and call id for a call - and is forgotten once it is
 * gone from a snapshot, so the next episode is reported again. An object
 * whose mutex was busy (a BUSY entry) keeps its episodes remembered.
 *
 * Locks: wd_lock is a leaf that guards the thread's generation; it is never
 * held while a snapshot is taken or a report made. The thread itself holds
 * no moor lock while it reports.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <moor/debug.h>
#include <moor/introspect.h>
#include <moor/object.h>

#include "debug-internal.h"
#include "introspect-internal.h"
#include "lockdep-internal.h"

/* ---- growing arrays ---------------------------------------------------------- */

void *moor__vec_push(struct moor__vec *v)
{
    char *item;

    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 8;
        /* plain realloc: moor_debug_fail_alloc() counts the library's own work. */
        void *p = realloc(v->items, cap * v->size);

        if (!p)
            return NULL;
        v->items = p;
        v->cap = cap;
    }
    item = (char *)v->items + v->n++ * v->size;
    memset(item, 0, v->size);
    return item;
}

/* ---- the live lists ---------------------------------------------------------------- */

void moor__live_register(pthread_mutex_t *lock, moor__live_node **first, moor__live_node *n)
{
    pthread_mutex_lock(lock);
    moor__live_add(first, n);
    pthread_mutex_unlock(lock);
    if (moor__debug_on(MOOR_DEBUG_WATCHDOG))
        moor__watchdog_sync();
}

void moor__live_unregister(pthread_mutex_t *lock, moor__live_node **first, moor__live_node *n)
{
    pthread_mutex_lock(lock);
    moor__live_del(first, n);
    pthread_mutex_unlock(lock);
}

/* ---- lock-counter sleeps ------------------------------------------------------ */

static pthread_mutex_t waits_lock = PTHREAD_MUTEX_INITIALIZER; /* leaf */
static moor__live_node *waits_first;

/* ---- fork ---------------------------------------------------------------------- */

#define FORK_LOCKS_MAX 8
static pthread_mutex_t *fork_locks[FORK_LOCKS_MAX]; /* set by constructors only */
static unsigned nfork_locks;

static void live_fork_prepare(void)
{
    for (unsigned i = 0; i < nfork_locks; i++)
        pthread_mutex_lock(fork_locks[i]);
}

static void live_fork_parent(void)
{
    for (unsigned i = nfork_locks; i-- > 0;)
        pthread_mutex_unlock(fork_locks[i]);
}

/* The sleeps recorded are other threads', gone in the child: forgotten. */
static void live_fork_child(void)
{
    waits_first = NULL;
    live_fork_parent();
}

void moor__live_lock_across_fork(pthread_mutex_t *lock)
{
    if (nfork_locks == 0)
        pthread_atfork(live_fork_prepare, live_fork_parent, live_fork_child);
    if (nfork_locks < FORK_LOCKS_MAX)
        fork_locks[nfork_locks++] = lock;
}

__attribute__((constructor)) static void waits_fork_init(void)
{
    moor__live_lock_across_fork(&waits_lock);
}

#define WAIT_OF(node) MOOR__LIVE_ENTRY(node, struct moor__wait, live)

void moor__wait_begin(struct moor__wait *w, const void *subject, const char *what)
{
    struct timespec now;

    w->subject = NULL;
    if (!moor__debug_on(MOOR_DEBUG_WATCHDOG))
        return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    w->subject = subject;
    w->what = what;
    w->thread = moor__thread_id();
    w->since_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    pthread_mutex_lock(&waits_lock);
    moor__live_add(&waits_first, &w->live);
    pthread_mutex_unlock(&waits_lock);
}

void moor__wait_end(struct moor__wait *w)
{
    if (!w->subject)
        return;
    pthread_mutex_lock(&waits_lock);
    moor__live_del(&waits_first, &w->live);
    pthread_mutex_unlock(&waits_lock);
}

static int add_waits(moor_snapshot *s)
{
    struct moor__vec v = {.size = sizeof(moor_debug_wait)};
    struct timespec now;
    int64_t now_ns;
    int rc = 0;

    clock_gettime(CLOCK_MONOTONIC, &now);
    now_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    pthread_mutex_lock(&waits_lock);
    for (moor__live_node *n = waits_first; n && rc == 0; n = n->next) {
        const struct moor__wait *w = WAIT_OF(n);
        moor_debug_wait *e = moor__vec_push(&v);

        if (!e) {
            rc = -ENOMEM;
            break;
        }
        e->subject = w->subject;
        snprintf(e->what, sizeof(e->what), "%s", w->what);
        e->thread = w->thread;
        e->since_ns = w->since_ns;
        e->age_ms = now_ns > w->since_ns ? (now_ns - w->since_ns) / 1000000 : 0;
    }
    pthread_mutex_unlock(&waits_lock);
    s->waits = v.items;
    s->nwaits = v.n;
    return rc;
}

/* ---- the snapshot --------------------------------------------------------------- */

/* moor's kinds of lock, listed while the lock-order checker has
 * registered no class (MOOR_DEBUG=locks never on). */
static const moor_debug_lock_class builtin_lock_classes[] = {
    {"object", "object mutex (one class per moor class)"},
    {"job-wait", "job wait on an object's mutex"},
    {"monitor", "monitor leaf mutex"},
    {"registry", "registry leaf mutexes"},
    {"lockcnt", "lock counter, lock side"},
    {"loop", "event loop mutexes"},
    {"live-lists", "job and monitor live lists (leaf)"},
};

static int add_census(moor_snapshot *s)
{
    size_t n = moor_census(NULL, 0) + 16; /* room for classes born meanwhile */
    moor_census_entry *c = calloc(n, sizeof(*c));

    if (!c)
        return -ENOMEM;
    n = moor_census(c, n) < n ? moor_census(c, n) : n;
    s->classes = calloc(n ? n : 1, sizeof(*s->classes));
    if (!s->classes) {
        free(c);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(s->classes[i].name, sizeof(s->classes[i].name), "%s", c[i].class_name);
        s->classes[i].live = c[i].live;
    }
    s->nclasses = n;
    free(c);
    return 0;
}

static int add_lock_classes(moor_snapshot *s)
{
    struct moor__vec classes = {.size = sizeof(moor_debug_lock_class)};
    struct moor__vec orders = {.size = sizeof(moor_debug_lock_order)};
    int rc = moor__lockdep_collect(&classes, &orders);
    size_t n = sizeof(builtin_lock_classes) / sizeof(builtin_lock_classes[0]);

    s->lock_classes = classes.items;
    s->nlock_classes = classes.n;
    s->lock_orders = orders.items;
    s->nlock_orders = orders.n;
    s->lock_checked = classes.n > 0;
    if (rc < 0 || s->lock_checked)
        return rc;

    if (!(s->lock_classes = calloc(n, sizeof(*s->lock_classes))))
        return -ENOMEM;
    memcpy(s->lock_classes, builtin_lock_classes, sizeof(builtin_lock_classes));
    s->nlock_classes = n;
    return 0;
}

static int add_lists(moor_snapshot *s)
{
    struct moor__vec jobs = {.size = sizeof(moor_debug_job)};
    struct moor__vec mons = {.size = sizeof(moor_debug_monitor)};
    int rc = moor__job_collect(&jobs);

    s->jobs = jobs.items;
    s->njobs = jobs.n;
    if (rc == 0)
        rc = moor__monitor_collect(&mons);
    s->monitors = mons.items;
    s->nmonitors = mons.n;
    return rc;
}

moor_snapshot *moor_debug_snapshot(void)
{
    moor_snapshot *s = calloc(1, sizeof(*s));
    struct timespec now;

    if (!s)
        return NULL;
    s->version = MOOR_DEBUG_SNAPSHOT_VERSION;
    s->pid = (int)getpid();
    clock_gettime(CLOCK_REALTIME, &now);
    s->taken_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    s->flags = moor_debug_flags();
    s->watchdog_ms = moor_debug_watchdog_ms();
    if (add_census(s) < 0 || add_lock_classes(s) < 0 || add_lists(s) < 0 || add_waits(s) < 0) {
        moor_debug_snapshot_free(s);
        return NULL;
    }
    return s;
}

void moor_debug_snapshot_free(moor_snapshot *snap)
{
    if (!snap)
        return;
    for (size_t i = 0; i < snap->nmonitors; i++)
        free(snap->monitors[i].pending);
    free(snap->monitors);
    free(snap->jobs);
    free(snap->classes);
    free(snap->lock_classes);
    free(snap->lock_orders);
    free(snap->waits);
    free(snap);
}

/* ---- JSON ------------------------------------------------------------------------ */

struct out {
    moor_debug_write_fn fn;
    void *opaque;
    int rc; /* the first failure; then nothing more is written */
};

static void put(struct out *o, const char *data, size_t len)
{
    int rc;

    if (o->rc == 0 && len && (rc = o->fn(data, len, o->opaque)) < 0)
        o->rc = rc;
}

__attribute__((format(printf, 2, 3))) static void putf(struct out *o, const char *fmt, ...)
{
    char buf[128];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    put(o, buf, n < 0 ? 0 : (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* "key":"text" with @text escaped (control characters as \u00XX). */
static void put_str(struct out *o, const char *key, const char *text, bool comma)
{
    putf(o, "%s\"%s\":\"", comma ? "," : "", key);
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p == '"' || *p == '\\')
            putf(o, "\\%c", *p);
        else if (*p < 0x20)
            putf(o, "\\u%04x", *p);
        else
            put(o, (const char *)p, 1);
    }
    put(o, "\"", 1);
}

static const char *role_name(moor_debug_job_role role)
{
    static const char *const names[] = {"holds", "async", "waits", "busy"};

    return (unsigned)role < 4 ? names[role] : "?";
}

static void put_job(struct out *o, const moor_debug_job *j)
{
    char object[2 * MOOR_DEBUG_TEXT_SIZE + 8];

    if (j->label[0])
        snprintf(object, sizeof(object), "%s '%s'", j->object_class, j->label);
    else
        snprintf(object, sizeof(object), "%s %p", j->object_class, j->object);
    put_str(o, "object", object, false);
    put_str(o, "class", j->object_class, true);
    put_str(o, "label", j->label, true);
    put_str(o, "role", role_name(j->role), true);
    put_str(o, "kind", j->kind, true);
    put_str(o, "api", j->api, true);
    putf(o, ",\"thread\":%d,\"age_ms\":%" PRId64 ",\"left_ms\":%" PRId64 ",\"ticket\":%" PRIu64,
         j->thread, j->age_ms, j->left_ms, j->ticket);
}

static void put_monitor(struct out *o, const moor_debug_monitor *m)
{
    put_str(o, "name", m->name, false);
    put_str(o, "state", m->state, true);
    putf(o, ",\"entered\":%u,\"calls\":%" PRIu64 ",\"replies\":%" PRIu64 ",\"timeouts\":%" PRIu64,
         m->entered, m->calls, m->replies, m->timeouts);
    put(o, ",\"pending\":[", 12);
    for (size_t i = 0; i < m->ncalls; i++) {
        const moor_debug_call *c = &m->pending[i];

        putf(o, "%s{\"id\":%" PRIu64, i ? "," : "", c->id);
        put_str(o, "command", c->command, true);
        putf(o, ",\"thread\":%d,\"age_ms\":%" PRId64 ",\"left_ms\":%" PRId64 "}", c->thread,
             c->age_ms, c->left_ms);
    }
    put(o, "]", 1);
}

/* Class names for indexes out of range (a hand-made snapshot) are "?". */
static void put_lock_order(struct out *o, const moor_snapshot *s, const moor_debug_lock_order *l,
                           bool comma)
{
    put(o, comma ? ",{" : "{", comma ? 2 : 1);
    put_str(o, "from", l->from < s->nlock_classes ? s->lock_classes[l->from].name : "?", false);
    put_str(o, "to", l->to < s->nlock_classes ? s->lock_classes[l->to].name : "?", true);
    putf(o, ",\"thread\":%d", l->thread);
    put_str(o, "from_site", l->from_site, true);
    put_str(o, "to_site", l->to_site, true);
    put(o, "}", 1);
}

static void put_lists(struct out *o, const moor_snapshot *s)
{
    put(o, ",\"census\":[", 11);
    for (size_t i = 0; i < s->nclasses; i++) {
        put(o, i ? ",{" : "{", i ? 2 : 1);
        put_str(o, "class", s->classes[i].name, false);
        putf(o, ",\"live\":%zu}", s->classes[i].live);
    }
    put(o, "],\"jobs\":[", 10);
    for (size_t i = 0; i < s->njobs; i++) {
        put(o, i ? ",{" : "{", i ? 2 : 1);
        put_job(o, &s->jobs[i]);
        put(o, "}", 1);
    }
    put(o, "],\"monitors\":[", 14);
    for (size_t i = 0; i < s->nmonitors; i++) {
        put(o, i ? ",{" : "{", i ? 2 : 1);
        put_monitor(o, &s->monitors[i]);
        put(o, "}", 1);
    }
    putf(o, "],\"lock_checked\":%s,\"lock_classes\":[", s->lock_checked ? "true" : "false");
    for (size_t i = 0; i < s->nlock_classes; i++) {
        put(o, i ? ",{" : "{", i ? 2 : 1);
        put_str(o, "name", s->lock_classes[i].name, false);
        put_str(o, "what", s->lock_classes[i].what, true);
        put(o, "}", 1);
    }
    put(o, "],\"lock_orders\":[", sizeof("],\"lock_orders\":[") - 1);
    for (size_t i = 0; i < s->nlock_orders; i++)
        put_lock_order(o, s, &s->lock_orders[i], i > 0);
    put(o, "],\"waits\":[", 11);
    for (size_t i = 0; i < s->nwaits; i++) {
        put(o, i ? ",{" : "{", i ? 2 : 1);
        put_str(o, "what", s->waits[i].what, false);
        putf(o, ",\"thread\":%d,\"age_ms\":%" PRId64 "}", s->waits[i].thread, s->waits[i].age_ms);
    }
    put(o, "]", 1);
}

int moor_debug_snapshot_write_json(const moor_snapshot *snap, moor_debug_write_fn fn, void *opaque)
{
    struct out o = {fn, opaque, 0};

    if (!snap || !fn)
        return -EINVAL;
    putf(&o,
         "{\"version\":%u,\"pid\":%d,\"taken_ms\":%" PRId64
         ",\"flags\":%u,\"watchdog_ms\":%" PRIu32,
         snap->version, snap->pid, snap->taken_ms, snap->flags, snap->watchdog_ms);
    put_lists(&o, snap);
    put(&o, "}", 1);
    return o.rc;
}

/* ---- the watchdog ------------------------------------------------------------------- */

#define WD_PERIOD_MAX_MS 250u /* looks at least this often... */
#define WD_PERIOD_MIN_MS 10u  /* ...and at most this often */

/* relaxed: a debugging knob; the thread reads it at each look. */
static atomic_uint wd_ms = MOOR_DEBUG_WATCHDOG_DEFAULT_MS;

/* wd_ctl serialises starting and stopping (the join of a stopped thread
 * comes after it is released: a report hook on that thread may be turning
 * the watchdog off or on itself); wd_lock (a leaf) guards wd_gen and the
 * thread's sleep. */
static pthread_mutex_t wd_ctl = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t wd_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wd_cond;
static pthread_once_t wd_cond_once = PTHREAD_ONCE_INIT;
static bool wd_running, wd_atexit_armed; /* wd_ctl */
/* Bumped (under wd_lock) by every start and stop: a thread runs while it
 * equals the value it was started with, so a thread a report hook stopped
 * (detached, finishing its look) never runs on beside a new one. */
static uintptr_t wd_gen;
static pthread_t wd_thread;

uint32_t moor_debug_set_watchdog_ms(uint32_t ms)
{
    /* relaxed: see wd_ms. */
    return atomic_exchange_explicit(&wd_ms, ms ? ms : MOOR_DEBUG_WATCHDOG_DEFAULT_MS,
                                    memory_order_relaxed);
}

uint32_t moor_debug_watchdog_ms(void)
{
    /* relaxed: see wd_ms. */
    return atomic_load_explicit(&wd_ms, memory_order_relaxed);
}

/* One episode (see the theory): what, and two numbers that tell it apart
 * from the next episode of the same thing. */
struct episode {
    const void *where;
    int64_t a, b;
};

struct episodes {
    struct moor__vec v; /* of struct episode */
};

static bool episode_known(const struct episodes *e, const struct episode *k)
{
    const struct episode *it = e->v.items;

    for (size_t i = 0; i < e->v.n; i++)
        if (it[i].where == k->where && it[i].a == k->a && it[i].b == k->b)
            return true;
    return false;
}

static void episode_add(struct episodes *e, const struct episode *k)
{
    struct episode *slot = moor__vec_push(&e->v);

    if (slot) /* out of memory: it may be reported again, nothing worse */
        *slot = *k;
}

static struct episode job_episode(const moor_debug_job *j)
{
    if (j->role == MOOR_DEBUG_JOB_WAITS)
        return (struct episode){j->job, -(int64_t)j->ticket - 1, j->since_ns};
    return (struct episode){j->job, j->role == MOOR_DEBUG_JOB_ASYNC ? -1 : j->thread, j->since_ns};
}

static void object_name(const moor_debug_job *j, char *buf, size_t size)
{
    if (j->label[0])
        snprintf(buf, size, "%s '%s'", j->object_class, j->label);
    else
        snprintf(buf, size, "%s %p", j->object_class, j->object);
}

/* "KIND (api A, thread T, for S s), ..." for the entries of @j's object
 * in role @waiters ? WAITS : HOLDS/ASYNC; "nobody" when there are none. */
static void describe_peers(const moor_snapshot *s, const moor_debug_job *j, bool waiters, char *buf,
                           size_t size)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < s->njobs && used + 1 < size; i++) {
        const moor_debug_job *p = &s->jobs[i];
        int n;

        if (p->job != j->job || (p->role == MOOR_DEBUG_JOB_WAITS) != waiters)
            continue;
        n = snprintf(buf + used, size - used, "%s%s%s (api %s, thread %d, for %.1f s)",
                     used ? ", " : "", p->role == MOOR_DEBUG_JOB_ASYNC ? "async " : "", p->kind,
                     p->api, p->thread, (double)p->age_ms / 1000);
        used += n > 0 ? (size_t)n : 0;
    }
    if (!buf[0])
        snprintf(buf, size, "nobody");
}

static void report_job(const moor_snapshot *s, const moor_debug_job *j)
{
    char obj[2 * MOOR_DEBUG_TEXT_SIZE + 8], peers[384];

    object_name(j, obj, sizeof(obj));
    describe_peers(s, j, j->role != MOOR_DEBUG_JOB_WAITS, peers, sizeof(peers));
    if (j->role == MOOR_DEBUG_JOB_WAITS)
        moor_debug_report(MOOR_MISUSE_STUCK_JOB, j->object,
                          "watchdog: thread %d has waited %.1f s for job %s (api %s) on %s, "
                          "gives up in %.1f s; held by %s",
                          j->thread, (double)j->age_ms / 1000, j->kind, j->api, obj,
                          (double)j->left_ms / 1000, peers);
    else
        moor_debug_report(MOOR_MISUSE_STUCK_JOB, j->object,
                          "watchdog: %sjob %s on %s held for %.1f s by thread %d (api %s); "
                          "waiting: %s",
                          j->role == MOOR_DEBUG_JOB_ASYNC ? "async " : "", j->kind, obj,
                          (double)j->age_ms / 1000, j->thread, j->api, peers);
}

static void report_call(const moor_debug_monitor *m, const moor_debug_call *c)
{
    moor_debug_report(MOOR_MISUSE_STUCK_CALL, m->monitor,
                      "watchdog: monitor '%s' (%s): call '%s' (id %" PRIu64
                      ") by thread %d pending for %.1f s, deadline in %.1f s; %zu call(s) "
                      "pending",
                      m->name, m->state, c->command, c->id, c->thread, (double)c->age_ms / 1000,
                      (double)c->left_ms / 1000, m->ncalls);
}

/* Keep the episodes of an object that could not be read this time. */
static void carry_busy(const struct episodes *seen, const void *job, struct episodes *next)
{
    const struct episode *it = seen->v.items;

    for (size_t i = 0; i < seen->v.n; i++)
        if (it[i].where == job)
            episode_add(next, &it[i]);
}

static void look_jobs(const moor_snapshot *s, int64_t threshold, const struct episodes *seen,
                      struct episodes *next)
{
    for (size_t i = 0; i < s->njobs; i++) {
        const moor_debug_job *j = &s->jobs[i];
        struct episode k = job_episode(j);

        if (j->role == MOOR_DEBUG_JOB_BUSY) {
            carry_busy(seen, j->job, next);
            continue;
        }
        if (j->age_ms < threshold)
            continue;
        if (!episode_known(seen, &k))
            report_job(s, j);
        episode_add(next, &k);
    }
}

static void look_calls(const moor_snapshot *s, int64_t threshold, const struct episodes *seen,
                       struct episodes *next)
{
    for (size_t i = 0; i < s->nmonitors; i++) {
        const moor_debug_monitor *m = &s->monitors[i];

        for (size_t c = 0; c < m->ncalls; c++) {
            struct episode k = {m->monitor, (int64_t)m->pending[c].id, 0};

            if (m->pending[c].age_ms < threshold)
                continue;
            if (!episode_known(seen, &k))
                report_call(m, &m->pending[c]);
            episode_add(next, &k);
        }
    }
}

static void look_waits(const moor_snapshot *s, int64_t threshold, const struct episodes *seen,
                       struct episodes *next)
{
    for (size_t i = 0; i < s->nwaits; i++) {
        const moor_debug_wait *w = &s->waits[i];
        struct episode k = {w->subject, w->thread, w->since_ns};

        if (w->age_ms < threshold)
            continue;
        if (!episode_known(seen, &k))
            moor_debug_report(MOOR_MISUSE_STUCK_LOCKCNT, w->subject,
                              "watchdog: thread %d asleep for %.1f s in %s %p (the lock side "
                              "records no holder: look for a thread inside its lock)",
                              w->thread, (double)w->age_ms / 1000, w->what, w->subject);
        episode_add(next, &k);
    }
}

/* One look: report what is newly overdue; @seen becomes what is overdue now. */
static void wd_look(struct episodes *seen)
{
    moor_snapshot *s = moor_debug_snapshot();
    struct episodes next = {{NULL, 0, 0, sizeof(struct episode)}};
    int64_t threshold = moor_debug_watchdog_ms();

    if (!s)
        return; /* out of memory: try again at the next look */
    look_jobs(s, threshold, seen, &next);
    look_calls(s, threshold, seen, &next);
    look_waits(s, threshold, seen, &next);
    moor_debug_snapshot_free(s);
    free(seen->v.items);
    *seen = next;
}

static uint32_t wd_period_ms(void)
{
    uint32_t p = moor_debug_watchdog_ms() / 4;

    return p < WD_PERIOD_MIN_MS ? WD_PERIOD_MIN_MS : p > WD_PERIOD_MAX_MS ? WD_PERIOD_MAX_MS : p;
}

static void *wd_main(void *arg)
{
    struct episodes seen = {{NULL, 0, 0, sizeof(struct episode)}};
    uintptr_t gen = (uintptr_t)arg;

    pthread_mutex_lock(&wd_lock);
    while (gen == wd_gen) {
        struct timespec t = moor__deadline_after_ms(wd_period_ms());

        pthread_cond_timedwait(&wd_cond, &wd_lock, &t);
        if (gen != wd_gen)
            break;
        pthread_mutex_unlock(&wd_lock);
        wd_look(&seen);
        pthread_mutex_lock(&wd_lock);
    }
    pthread_mutex_unlock(&wd_lock);
    free(seen.v.items);
    return NULL;
}

static void wd_cond_init(void)
{
    pthread_condattr_t a;

    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&wd_cond, &a);
    pthread_condattr_destroy(&a);
}

static void wd_at_exit(void);

/* With wd_ctl held: tell the thread to end. Returns whether the caller
 * must join it (after unlocking wd_ctl, which a report hook on that thread
 * may be waiting for), in *@t; not when it is the calling thread itself
 * (a report hook turned the watchdog off), which ends after this look. */
static bool wd_stop_locked(pthread_t *t)
{
    bool self = pthread_equal(pthread_self(), wd_thread);

    pthread_mutex_lock(&wd_lock);
    wd_gen++;
    pthread_cond_broadcast(&wd_cond);
    pthread_mutex_unlock(&wd_lock);
    wd_running = false;
    *t = wd_thread;
    if (self)
        pthread_detach(wd_thread);
    return !self;
}

/* With wd_ctl held. Returns 0, or the error of pthread_create. */
static int wd_start_locked(void)
{
    sigset_t all, old;
    uintptr_t gen;
    int rc;

    pthread_once(&wd_cond_once, wd_cond_init);
    pthread_mutex_lock(&wd_lock);
    gen = ++wd_gen;
    pthread_mutex_unlock(&wd_lock);
    /* The thread takes no signal meant for the application. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&wd_thread, NULL, wd_main, (void *)gen);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return rc;
    pthread_setname_np(wd_thread, "moor-watchdog");
    wd_running = true;
    if (!wd_atexit_armed) {
        wd_atexit_armed = true;
        atexit(wd_at_exit);
    }
    return 0;
}

/* Start or stop the thread as @want says; joins and reports unlocked. */
static void wd_set(bool want)
{
    bool join = false;
    pthread_t t;
    int rc = 0;

    pthread_mutex_lock(&wd_ctl);
    if (want && !wd_running)
        rc = wd_start_locked();
    else if (!want && wd_running)
        join = wd_stop_locked(&t);
    pthread_mutex_unlock(&wd_ctl);
    if (join)
        pthread_join(t, NULL);
    if (rc != 0)
        moor_debug_report(MOOR_MISUSE_STUCK_JOB, NULL,
                          "watchdog: cannot start its thread: %s; no stuck wait will be reported",
                          strerror(rc));
}

void moor__watchdog_sync(void)
{
    wd_set(moor__debug_on(MOOR_DEBUG_WATCHDOG));
}

/* At exit: stop and join the thread, whatever the flag says. */
static void wd_at_exit(void)
{
    wd_set(false);
}

void moor__watchdog_after_fork(void)
{
    /* The child has only the thread that forked: the watchdog thread is
     * gone, and any lock it or another thread held is reset. */
    pthread_mutex_init(&wd_ctl, NULL);
    pthread_mutex_init(&wd_lock, NULL);
    wd_cond_init();
    wd_running = false;
}
