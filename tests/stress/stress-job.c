/* SPDX-License-Identifier: MIT */
/*
 * stress-job.c - threads running random jobs on a few objects.
 *
 *     stress-job [THREADS]             (default 4)
 *     MOOR_STRESS_SECONDS=S            run time (default 2; decimals allowed)
 *     MOOR_UNDER_VALGRIND=1            caps threads and time
 *
 * Each thread picks an object and a job: QUERY, MODIFY, a registered
 * shared kind (LIST), DESTROY, ABORT, or an async job with a random mask
 * whose owner takes nested MODIFY jobs around its steps (and sometimes
 * hands itself off to... itself, through release/adopt). While a job is
 * held the thread drops the mutex for a little "work", as real callers do.
 * Rarely, a thread marks an object inactive, which fails its waiters.
 *
 * Every object carries a shadow of who holds what, kept under its mutex by
 * the test itself. On every begin and end it checks: never two exclusive
 * holders, never an exclusive beside a shared one, no sync job outside the
 * async mask beside a foreign async job, and moor_job_info() agreeing with
 * the shadow. At the end: no misuse report, census zero. It prints the
 * max and p99 wait per kind. Failures print "stress-job: FAIL: ..." and
 * exit 1.
 *
 * Fairness, on the first object (which runs no async job and is never
 * marked inactive, so no waiter is ever parked or failed there): every
 * begin is entered, under the mutex and so in moor's ticket order, into a
 * list of begins in flight. When a begin returns granted, no begin called
 * before it may still be waiting unless both are shared (a DESTROY may
 * jump ahead, none may be overtaken): a QUERY granted past a waiting
 * MODIFY fails at once. And each wait there is bounded by what was ahead
 * of it: wait <= (holders + waiters at the call + DESTROYs granted
 * meanwhile + 1) x (longest hold seen + a hand-off allowance for the
 * scheduler, HANDOFF_MS, ten times that under valgrind).
 */
#define _GNU_SOURCE
#define STRESS_PROG "stress-job"
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <moor/debug.h>
#include <moor/job.h>
#include <moor/object.h>

#include "stress-util.h"

#define MAX_THREADS   64
#define OBJECTS       3
#define BUCKETS       512 /* 8 per power of two of nanoseconds */
#define VALGRIND_SECS 3.0
#define VALGRIND_THR  3
#define BEGIN_TIMEOUT 20000u /* ms; far above any fair wait here */
#define CLOCK_EVERY   64     /* operations between two looks at the clock */
#define HANDOFF_MS    200    /* per grant: a granted thread waiting for a CPU */

/* Kinds as the report lists them; K_ASYNC is the async slot. */
enum { K_QUERY, K_MODIFY, K_LIST, K_DESTROY, K_ABORT, K_NESTED, K_ASYNC, K_COUNT };
static const char *const kind_label[K_COUNT] = {"QUERY", "MODIFY", "LIST", "DESTROY",
                                                "ABORT", "nested", "async"};

struct sobj {
    moor_lockable parent;
    moor_job job;
    /* the shadow, under the mutex */
    unsigned held[MOOR_JOB_KINDS_MAX];
    unsigned shared, exclusive;
    bool async_active;
    int async_owner;
    uint32_t async_allowed;
    /* fairness (the first object only; see the top): begins in flight */
    bool fair;
    struct inflight *inflight;
    uint64_t next_ticket, destroys, max_hold_ns;
};

/* A begin in flight on a fair object, on its caller's stack. */
struct inflight {
    struct inflight *next;
    uint64_t ticket;
    unsigned kind;
};

struct hist {
    uint64_t count, max_ns;
    uint64_t bucket[BUCKETS];
};

struct worker {
    pthread_t thread;
    uint64_t rng;
    int tid;
    uint64_t ops, timeouts, esrch;
    struct hist wait[K_COUNT];
};

static const moor_class *sobj_class;
static struct sobj *objs[OBJECTS];
static struct worker workers[MAX_THREADS];
static unsigned nworkers;
static unsigned kind_list;
static struct timespec deadline;
static uint64_t handoff_ns = HANDOFF_MS * UINT64_C(1000000);
static uint64_t fair_checked, worst_permille; /* under objs[0]'s mutex */

static void sobj_dispose(void *p)
{
    moor_job_destroy(&((struct sobj *)p)->job);
}

/* ---- helpers ---------------------------------------------------------- */

static uint64_t rnd(struct worker *w)
{
    return stress_rnd(&w->rng);
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Log-linear: the power of two, then 3 more bits (12% wide buckets). */
static unsigned bucket_of(uint64_t ns)
{
    unsigned msb;

    if (ns < 8)
        return (unsigned)ns;
    msb = 63u - (unsigned)__builtin_clzll(ns);
    return msb * 8u + (unsigned)((ns >> (msb - 3)) & 7u);
}

/* The smallest value above every value of bucket @b. */
static uint64_t bucket_top(unsigned b)
{
    unsigned msb = b / 8u;

    if (b < 8)
        return b + 1;
    return ((UINT64_C(8) + (b % 8u) + 1) << (msb - 3));
}

static void record(struct hist *h, uint64_t ns)
{
    h->count++;
    h->bucket[bucket_of(ns)]++;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

/* "Work" with the mutex dropped: a short, variable busy loop. */
static void work(struct worker *w)
{
    unsigned n = (unsigned)(rnd(w) % 200);

    for (unsigned i = 0; i < n; i++)
        __asm__ volatile("" ::: "memory"); /* not optimised away */
}

static bool exclusive_kind(unsigned kind)
{
    return kind != MOOR_JOB_QUERY && kind != kind_list;
}

/* ---- the shadow and its invariants (all under the object's mutex) ---- */

static void check_info(struct sobj *o, const char *where)
{
    moor_job_snapshot s;

    if (moor_job_info(&o->job, &s) < 0) {
        fail("%s: moor_job_info failed", where);
        return;
    }
    /* moor grants on a waiter's behalf before the waiter runs and updates
     * the shadow, so moor may count more holders than the shadow, never
     * fewer; and its own view must obey the rules too. */
    if (s.holders < o->shared + o->exclusive || s.exclusive < o->exclusive || s.exclusive > 1 ||
        (s.exclusive && s.holders != 1) || (o->async_active && !s.async.active))
        fail("%s on %s: info says %u holders (%u exclusive, async %d), shadow %u+%u (async %d)",
             where, s.object, s.holders, s.exclusive, s.async.active, o->shared, o->exclusive,
             o->async_active);
}

static void shadow_begin(struct worker *w, struct sobj *o, unsigned kind)
{
    bool excl = exclusive_kind(kind);

    if (o->exclusive)
        fail("%s begun beside an exclusive holder", moor_job_kind_name(kind));
    if (excl && o->shared)
        fail("exclusive %s begun beside %u shared holders", moor_job_kind_name(kind), o->shared);
    if (o->async_active && o->async_owner != w->tid && !(o->async_allowed & MOOR_JOB_MASK(kind)))
        fail("%s begun beside an async job that allows only 0x%x", moor_job_kind_name(kind),
             o->async_allowed);
    o->held[kind]++;
    if (excl)
        o->exclusive++;
    else
        o->shared++;
    check_info(o, "after begin");
}

static void shadow_end(struct sobj *o, unsigned kind)
{
    o->held[kind]--;
    if (exclusive_kind(kind))
        o->exclusive--;
    else
        o->shared--;
}

static void shadow_async_begin(struct worker *w, struct sobj *o, uint32_t allowed)
{
    if (o->async_active)
        fail("two async jobs at once");
    /* An exclusive holder in the mask may be one granted right after this
     * async job in the same walk whose thread ran first; the mask check
     * covers every other case. */
    for (unsigned k = 0; k < MOOR_JOB_KINDS_MAX; k++)
        if (o->held[k] && !(allowed & MOOR_JOB_MASK(k)))
            fail("async job allowing 0x%x begun beside %s", allowed, moor_job_kind_name(k));
    o->async_active = true;
    o->async_owner = w->tid;
    o->async_allowed = allowed;
    check_info(o, "after async begin");
}

/* ---- operations ------------------------------------------------------------ */

/* ---- fairness (see the top) ---------------------------------------------------- */

/* Before a begin on a fair object (locked): enter it in call order;
 * returns the number of holders and waiters ahead of it. */
static uint64_t fair_enter(struct sobj *o, struct inflight *me, unsigned kind)
{
    moor_job_snapshot s;

    *me = (struct inflight){o->inflight, o->next_ticket++, kind};
    o->inflight = me;
    if (moor_job_info(&o->job, &s) < 0) {
        fail("moor_job_info failed");
        return 0;
    }
    return (uint64_t)s.holders + s.waiters;
}

static void fair_leave(struct sobj *o, struct inflight *me)
{
    struct inflight **pp = &o->inflight;

    while (*pp != me)
        pp = &(*pp)->next;
    *pp = me->next;
}

/* @me was just granted after waiting @waited ns with @ahead grants due
 * before it: no begin called before it may still wait (unless both are
 * shared, or @me is a DESTROY, which jumps the queue), and the wait is
 * within (ahead + 1) x (longest hold + hand-off allowance). */
static void fair_check(struct sobj *o, const struct inflight *me, uint64_t ahead, uint64_t waited)
{
    uint64_t bound = (ahead + 1) * (o->max_hold_ns + handoff_ns);

    if (me->kind == MOOR_JOB_DESTROY) {
        o->destroys++;
        return;
    }
    for (const struct inflight *q = o->inflight; q; q = q->next)
        if (q->ticket < me->ticket &&
            (q->kind == MOOR_JOB_DESTROY || exclusive_kind(me->kind) || exclusive_kind(q->kind)))
            fail("%s (call %" PRIu64 ") granted while %s (call %" PRIu64
                 "), begun before it, still waits: overtaken",
                 moor_job_kind_name(me->kind), me->ticket, moor_job_kind_name(q->kind), q->ticket);
    if (waited > bound)
        fail("%s waited %.1f ms with %" PRIu64 " grants due before it; bound %.1f ms "
             "(longest hold %.1f ms + %.0f ms hand-off, each)",
             moor_job_kind_name(me->kind), (double)waited / 1e6, ahead, (double)bound / 1e6,
             (double)o->max_hold_ns / 1e6, (double)handoff_ns / 1e6);
    if (waited * 1000 / bound > worst_permille)
        worst_permille = waited * 1000 / bound;
    fair_checked++;
}

/* Begin @kind on @o (locked), timing the wait under @slot. */
static int timed_begin(struct worker *w, struct sobj *o, unsigned kind, unsigned slot)
{
    moor_error err = MOOR_ERROR_INIT;
    struct inflight me;
    uint64_t ahead = 0, destroys0 = o->destroys, t0, waited;
    int rc;

    if (o->fair)
        ahead = fair_enter(o, &me, kind);
    t0 = now_ns();
    rc = moor_job_begin_timeout(&o->job, kind, "stress", BEGIN_TIMEOUT, &err);
    waited = now_ns() - t0;
    if (o->fair)
        fair_leave(o, &me);
    if (rc == 0) {
        record(&w->wait[slot], waited);
        if (o->fair)
            fair_check(o, &me, ahead + (o->destroys - destroys0), waited);
        shadow_begin(w, o, kind);
    } else if (rc == -ESRCH) {
        w->esrch++;
    } else {
        w->timeouts++;
        fail("begin %s: %s", moor_job_kind_name(kind), moor_error_message(&err));
    }
    return rc;
}

static void op_sync(struct worker *w, struct sobj *o, unsigned kind, unsigned slot)
{
    moor_lock(o);
    if (timed_begin(w, o, kind, slot) == 0) {
        uint64_t held = now_ns();

        moor_unlock(o);
        work(w);
        moor_lock(o);
        held = now_ns() - held;
        if (held > o->max_hold_ns)
            o->max_hold_ns = held;
        shadow_end(o, kind);
        moor_job_end(&o->job);
        check_info(o, "after end");
    }
    moor_unlock(o);
}

static void async_steps(struct worker *w, struct sobj *o)
{
    unsigned steps = 1 + (unsigned)(rnd(w) % 4);

    for (unsigned i = 0; i < steps && !moor_job_abort_requested(&o->job); i++) {
        if (timed_begin(w, o, MOOR_JOB_MODIFY, K_NESTED) != 0)
            break;
        moor_unlock(o);
        work(w); /* the peer call */
        moor_lock(o);
        shadow_end(o, MOOR_JOB_MODIFY);
        moor_job_end(&o->job);
        moor_job_async_set_progress(&o->job, i + 1, steps, "step");
        if (rnd(w) % 8 == 0) { /* hand-off, here to the same thread */
            moor_job_async_release(&o->job);
            o->async_owner = 0;
            moor_job_async_adopt(&o->job);
            o->async_owner = w->tid;
        }
    }
}

static void op_async(struct worker *w, struct sobj *o)
{
    static const uint32_t masks[] = {MOOR_JOB_ASYNC_DEFAULT_MASK, 0, MOOR_JOB_MASK(MOOR_JOB_QUERY),
                                     MOOR_JOB_ASYNC_DEFAULT_MASK | MOOR_JOB_MASK(MOOR_JOB_MODIFY)};
    uint32_t allowed = masks[rnd(w) % 4];
    moor_error err = MOOR_ERROR_INIT;
    uint64_t t0 = now_ns();
    int rc;

    moor_lock(o);
    rc = moor_job_begin_async(&o->job, "stress-async", allowed, "stress", BEGIN_TIMEOUT, &err);
    if (rc == 0) {
        record(&w->wait[K_ASYNC], now_ns() - t0);
        shadow_async_begin(w, o, allowed | MOOR_JOB_MASK(MOOR_JOB_DESTROY));
        async_steps(w, o);
        o->async_active = false;
        o->async_owner = 0;
        moor_job_end_async(&o->job);
        check_info(o, "after async end");
    } else if (rc == -ESRCH) {
        w->esrch++;
    } else {
        fail("begin async: %s", moor_error_message(&err));
    }
    moor_unlock(o);
}

static void do_op(struct worker *w)
{
    uint64_t r = rnd(w);
    struct sobj *o = objs[(r >> 8) % OBJECTS];

    /* The fair object runs no async job and is never marked inactive. */
    if (o->fair && (r % 32 < 2 || (r % 32 == 7 && (r >> 16) % 64 == 0)))
        o = objs[1];
    switch (r % 32) {
    case 0:
    case 1:
        op_async(w, o);
        break;
    case 2:
        op_sync(w, o, MOOR_JOB_DESTROY, K_DESTROY);
        break;
    case 3:
        op_sync(w, o, MOOR_JOB_ABORT, K_ABORT);
        break;
    case 4:
    case 5:
    case 6:
        op_sync(w, o, kind_list, K_LIST);
        break;
    case 7:
        if ((r >> 16) % 64 == 0) { /* rare: fail the waiters */
            moor_lock(o);
            moor_job_mark_inactive(&o->job);
            moor_unlock(o);
            break;
        }
        /* fall through */
    case 8:
    case 9:
    case 10:
    case 11:
    case 12:
        op_sync(w, o, MOOR_JOB_MODIFY, K_MODIFY);
        break;
    default:
        op_sync(w, o, MOOR_JOB_QUERY, K_QUERY);
        break;
    }
    w->ops++;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    w->tid = (int)syscall(SYS_gettid);
    for (unsigned round = 0; stress_go_on(&deadline, round); round++)
        for (unsigned i = 0; i < CLOCK_EVERY; i++)
            do_op(w);
    return NULL;
}

/* ---- set-up and report ------------------------------------------------------------ */

static void setup(void)
{
    moor_error err = MOOR_ERROR_INIT;
    int k;

    sobj_class = moor_class_new("stress_job_obj", moor_lockable_class(), sizeof(struct sobj),
                                sobj_dispose, &err);
    k = moor_job_kind_register("LIST", MOOR_JOB_SHARED, &err);
    if (!sobj_class || k < 0) {
        fprintf(stderr, "stress-job: setup: %s\n", moor_error_message(&err));
        exit(1);
    }
    kind_list = (unsigned)k;
    for (unsigned i = 0; i < OBJECTS; i++) {
        char label[16];

        objs[i] = moor_object_new(sobj_class);
        snprintf(label, sizeof(label), "obj%u", i);
        if (!objs[i] || moor_job_init(&objs[i]->job, objs[i], label) < 0)
            exit(1);
    }
    objs[0]->fair = true;
    if (stress_under_valgrind())
        handoff_ns *= 10;
    for (unsigned i = 0; i < nworkers; i++)
        workers[i].rng = stress_seed(i);
}

static uint64_t p99_ns(const struct hist *h)
{
    uint64_t want = h->count - h->count / 100, seen = 0;

    for (unsigned b = 0; b < BUCKETS; b++) {
        seen += h->bucket[b];
        if (seen >= want && h->count) /* the bucket's upper edge */
            return bucket_top(b);
    }
    return 0;
}

static void report(double elapsed)
{
    struct worker total = {0};

    for (unsigned i = 0; i < nworkers; i++) {
        total.ops += workers[i].ops;
        total.esrch += workers[i].esrch;
        total.timeouts += workers[i].timeouts;
        for (unsigned k = 0; k < K_COUNT; k++) {
            struct hist *t = &total.wait[k], *h = &workers[i].wait[k];

            t->count += h->count;
            t->max_ns = h->max_ns > t->max_ns ? h->max_ns : t->max_ns;
            for (unsigned b = 0; b < BUCKETS; b++)
                t->bucket[b] += h->bucket[b];
        }
    }
    printf("stress-job: %u threads, %u objects, %.2f s: %" PRIu64 " ops, %" PRIu64
           " ESRCH (marked inactive), %" PRIu64 " timeouts\n",
           nworkers, OBJECTS, elapsed, total.ops, total.esrch, total.timeouts);
    for (unsigned k = 0; k < K_COUNT; k++) {
        const struct hist *h = &total.wait[k];

        printf("stress-job: wait %-7s n=%-9" PRIu64 " p99<=%.1f us  max=%.1f us\n", kind_label[k],
               h->count, (double)p99_ns(h) / 1e3, (double)h->max_ns / 1e3);
    }
    printf("stress-job: fairness on obj0: %" PRIu64 " grants checked for overtaking; worst wait "
           "%.1f%% of its bound\n",
           fair_checked, (double)worst_permille / 10);
    if (total.ops == 0)
        fail("no operation ran");
    if (fair_checked == 0)
        fail("no grant on the fair object was checked");
}

int main(int argc, char **argv)
{
    unsigned threads = stress_arg_threads(argc, argv, 4, MAX_THREADS);
    double seconds = stress_env_seconds(STRESS_DEFAULT_SECONDS);
    struct timespec start;

    stress_valgrind_caps(&threads, VALGRIND_THR, &seconds, VALGRIND_SECS);
    nworkers = threads;
    stress_catch_misuse();
    setup();
    start = stress_now();
    deadline = stress_add_seconds(start, seconds);
    for (unsigned i = 0; i < nworkers; i++)
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
            fail("pthread_create");
            nworkers = i;
            break;
        }
    for (unsigned i = 0; i < nworkers; i++)
        pthread_join(workers[i].thread, NULL);
    report(stress_elapsed(&start));
    for (unsigned i = 0; i < OBJECTS; i++) {
        moor_lock(objs[i]);
        if (objs[i]->shared || objs[i]->exclusive || objs[i]->async_active)
            fail("obj%u still held at the end", i);
        moor_unlock(objs[i]);
        moor_unref(objs[i]);
    }
    stress_check_census();
    printf("stress-job: %s\n", stress_exit_status() ? "FAIL" : "OK");
    return stress_exit_status();
}
