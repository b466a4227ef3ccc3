/* SPDX-License-Identifier: MIT */
/*
 * bench/bench-job.c - what a job costs, and how fair it is.
 *
 *   job_mutex_pair       pthread_mutex_lock + unlock, uncontended at one
 *                        thread: the baseline of the job cases.
 *   job_query_pair       moor_job_begin(QUERY) + moor_job_end with the
 *                        object's mutex held (as every job call is). Not
 *                        what a job costs a caller, who also pays the
 *                        mutex pair around it: that is job_api_* against
 *                        job_mutex_api, the figure docs/jobs.md leads with.
 *   job_modify_pair      the same with MODIFY.
 *   job_api_modify       a whole API-call pattern: lock, begin MODIFY,
 *                        unlock, lock, end, unlock. BENCH_CONTENDED: at 2
 *                        threads the two callers queue for each other.
 *   job_api_query        the same with QUERY (shared: no job waits).
 *   job_mutex_api        baseline of the two above: lock, unlock, lock,
 *                        unlock on a bare pthread mutex.
 *   job_lock_api         the pattern's locking alone: moor_lock, moor_unlock
 *                        twice on the job's object, no job (vs
 *                        job_mutex_api): what of job_api_* is not the job.
 *
 * Holding through work (BENCH_CONTENDED; at 2 threads every begin finds
 * the other thread's job held, so each call is a hand-off):
 *   job_mutex_hold       lock, WORK, unlock: the mutex held through the
 *                        work, the baseline.
 *   job_hold_modify      lock, begin MODIFY, unlock, WORK, lock, end,
 *                        unlock: the job held through the work instead.
 * WORK is a fixed busy loop of about a hundred nanoseconds. The threads of
 * both cases are pinned to CPUs in turn (the Nth thread to enter to CPU
 * N mod CPUs, restored on exit): two threads then really run at once,
 * instead of taking turns by their time slices whenever the scheduler
 * happens to put them on one CPU, which hides the hand-off cost and made
 * this figure swing by a factor of a hundred between runs.
 *
 * Fairness (single-thread cases; each "op" is one trial):
 *   job_fair_modify      three threads run a continuous stream of QUERY
 *                        jobs, each held ~100 us with the mutex dropped,
 *                        overlapping so that some QUERY is always held.
 *                        A trial waits until two are held, then begins a
 *                        MODIFY and measures its wait.
 *   bcast_fair_modify    the same stream on libvirt's job scheme: one sync
 *                        job at a time, QUERY included (its
 *                        virDomainObjCanSetJob wants no active job), one
 *                        condvar that every end broadcasts, and each
 *                        woken waiter re-tests "no job active" and takes
 *                        it if so. So the QUERY jobs run one after the
 *                        other, and a MODIFY competes with the queued
 *                        QUERY begins for every end; whoever retakes the
 *                        mutex first wins. Its trials begin when one
 *                        QUERY is held (the most the scheme allows).
 *
 * Starved: a MODIFY that has not started TRIAL_CAP_MS (5 ms, 50 QUERY
 * holds, about 17 times the bound below) after it asked gives up waiting
 * fairly: the trial pauses the stream, goes in, and counts as starved.
 * Their harness figure is the mean time per trial; at teardown each prints
 * one more line with what matters, the worst wait:
 *   {"bench": "job_fair_modify.max_wait", "max_wait_us": X, "p50_wait_us": X,
 *    "query_hold_max_us": H, "queries": 3, "bound_us": H*3, "starved": N, ...}
 * where bound_us is the target: the QUERY hold time times the number of
 * QUERY jobs (held or queued) that can be ahead of the MODIFY. That line covers every trial of the
 * case's runs, calibration and warm-up included. The stream runs only
 * during the case's own runs (begin_run starts it, end_run joins it): the
 * harness alternates the runs of the two cases with both states alive,
 * and one's stream would otherwise take CPU from the other's trials. By
 * default bcast_fair_modify, the baseline, is measured twice (its own
 * figure, then paired with job_fair_modify) and prints its line twice.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <moor/job.h>
#include <moor/object.h>

#include "bench.h"

#define QUERY_THREADS 3
#define QUERY_HOLD_NS 100000L /* 100 us, slept with the mutex dropped */
#define TRIAL_CAP_MS  5u
#define MAX_TRIALS    (1u << 16)

/* ---- a lockable object with a job ----------------------------------------- */

struct jobj {
    moor_lockable parent;
    moor_job job;
};

static void jobj_dispose(void *obj)
{
    moor_job_destroy(&((struct jobj *)obj)->job);
}

static struct jobj *jobj_new(void)
{
    static const moor_class *klass;
    moor_error err = MOOR_ERROR_INIT;
    struct jobj *o;

    /* Setup runs in the main thread only: no race on @klass. */
    if (!klass)
        klass = moor_class_new("bench_job_obj", moor_lockable_class(), sizeof(struct jobj),
                               jobj_dispose, &err);
    if (!klass)
        bench_fail("moor_class_new: %s", moor_error_message(&err));
    o = moor_object_new(klass);
    if (!o || moor_job_init(&o->job, o, "bench") < 0)
        bench_fail("job object setup failed");
    return o;
}

static void *jobj_setup(void)
{
    return jobj_new();
}

static void jobj_teardown(void *state)
{
    moor_unref(state);
}

/* ---- uncontended pairs ------------------------------------------------------ */

struct mutex_state {
    _Alignas(64) pthread_mutex_t m;
};

static void *mutex_setup(void)
{
    struct mutex_state *s = aligned_alloc(64, sizeof(*s));

    if (!s)
        bench_fail("out of memory");
    pthread_mutex_init(&s->m, NULL);
    return s;
}

static void mutex_teardown(void *state)
{
    struct mutex_state *s = state;

    pthread_mutex_destroy(&s->m);
    free(s);
}

BENCH_LOOP(bench_loop_job_mutex_pair, state, iters)
{
    struct mutex_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        pthread_mutex_lock(&s->m);
        pthread_mutex_unlock(&s->m);
        bench_clobber();
    }
}

static void job_pair(struct jobj *o, unsigned kind, uint64_t iters)
{
    moor_lock(o);
    for (uint64_t i = 0; i < iters; i++) {
        if (moor_job_begin(&o->job, kind, "bench", NULL) != 0)
            bench_fail("moor_job_begin failed");
        moor_job_end(&o->job);
        bench_clobber();
    }
    moor_unlock(o);
}

BENCH_LOOP(bench_loop_job_query_pair, state, iters)
{
    job_pair(state, MOOR_JOB_QUERY, iters);
}

BENCH_LOOP(bench_loop_job_modify_pair, state, iters)
{
    job_pair(state, MOOR_JOB_MODIFY, iters);
}

/* ---- the API-call pattern, contended ------------------------------------------ */

BENCH_LOOP(bench_loop_job_mutex_api, state, iters)
{
    struct mutex_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        pthread_mutex_lock(&s->m);
        pthread_mutex_unlock(&s->m);
        pthread_mutex_lock(&s->m);
        pthread_mutex_unlock(&s->m);
        bench_clobber();
    }
}

static void api_pattern(struct jobj *o, unsigned kind, uint64_t iters)
{
    for (uint64_t i = 0; i < iters; i++) {
        moor_lock(o);
        if (moor_job_begin(&o->job, kind, "bench", NULL) != 0)
            bench_fail("moor_job_begin failed");
        moor_unlock(o);
        moor_lock(o);
        moor_job_end(&o->job);
        moor_unlock(o);
        bench_clobber();
    }
}

BENCH_LOOP(bench_loop_job_api_modify, state, iters)
{
    api_pattern(state, MOOR_JOB_MODIFY, iters);
}

BENCH_LOOP(bench_loop_job_api_query, state, iters)
{
    api_pattern(state, MOOR_JOB_QUERY, iters);
}

BENCH_LOOP(bench_loop_job_lock_api, state, iters)
{
    for (uint64_t i = 0; i < iters; i++) {
        moor_lock(state);
        moor_unlock(state);
        moor_lock(state);
        moor_unlock(state);
        bench_clobber();
    }
}

/* ---- holding through work ----------------------------------------------------- */

#define WORK_STEPS 64

/* Pin the calling thread to the next CPU in turn; its old mask in @old.
 * Best effort: where pinning fails, the thread runs where it may. */
static void pin_next_cpu(cpu_set_t *old)
{
    static atomic_uint next;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t one;

    CPU_ZERO(old);
    if (pthread_getaffinity_np(pthread_self(), sizeof(*old), old) != 0 || cpus < 1)
        return;
    CPU_ZERO(&one);
    CPU_SET(atomic_fetch_add(&next, 1) % (unsigned long)cpus, &one);
    pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
}

static void unpin(const cpu_set_t *old)
{
    if (CPU_COUNT(old))
        pthread_setaffinity_np(pthread_self(), sizeof(*old), old);
}

static void work(void)
{
    for (unsigned i = 0; i < WORK_STEPS; i++)
        bench_clobber();
}

BENCH_LOOP(bench_loop_job_mutex_hold, state, iters)
{
    struct mutex_state *s = state;
    cpu_set_t old;

    pin_next_cpu(&old);
    for (uint64_t i = 0; i < iters; i++) {
        pthread_mutex_lock(&s->m);
        work();
        pthread_mutex_unlock(&s->m);
        bench_clobber();
    }
    unpin(&old);
}

BENCH_LOOP(bench_loop_job_hold_modify, state, iters)
{
    struct jobj *o = state;
    cpu_set_t old;

    pin_next_cpu(&old);
    for (uint64_t i = 0; i < iters; i++) {
        moor_lock(o);
        if (moor_job_begin(&o->job, MOOR_JOB_MODIFY, "bench", NULL) != 0)
            bench_fail("moor_job_begin failed");
        moor_unlock(o);
        work();
        moor_lock(o);
        moor_job_end(&o->job);
        moor_unlock(o);
        bench_clobber();
    }
    unpin(&old);
}

/* ---- fairness ---------------------------------------------------------------------- */

/* One scheme under test: shared/exclusive begin and end on @s->obj or on
 * the broadcast baseline. Exclusive begin returns false after the cap. */
struct scheme {
    const char *name;
    int holding; /* a trial starts once this many QUERY jobs are held */
    void (*shared_begin)(void *s);
    void (*shared_end)(void *s);
    bool (*excl_begin)(void *s, unsigned cap_ms);
    void (*excl_end)(void *s);
};

struct fair_state {
    const struct scheme *scheme;
    void *impl;
    pthread_t stream[QUERY_THREADS];
    atomic_bool stop, paused;
    atomic_int holding;       /* QUERY jobs held right now */
    atomic_long hold_max_ns;  /* longest QUERY hold seen */
    uint64_t trials, starved; /* the bench thread only */
    uint64_t max_wait_ns, sum_wait_ns;
    uint32_t *waits_us; /* every trial's wait, for the median */
};

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *stream_main(void *arg)
{
    struct fair_state *f = arg;
    const struct timespec hold = {0, QUERY_HOLD_NS};

    while (!atomic_load(&f->stop)) {
        uint64_t t0;
        long took, prev;

        if (atomic_load(&f->paused)) {
            sched_yield();
            continue;
        }
        f->scheme->shared_begin(f->impl);
        t0 = mono_ns();
        atomic_fetch_add(&f->holding, 1);
        nanosleep(&hold, NULL); /* the QUERY's work, mutex dropped */
        atomic_fetch_sub(&f->holding, 1);
        took = (long)(mono_ns() - t0);
        prev = atomic_load(&f->hold_max_ns);
        while (took > prev && !atomic_compare_exchange_weak(&f->hold_max_ns, &prev, took))
            ;
        f->scheme->shared_end(f->impl);
    }
    return NULL;
}

/* The stream is not started here but per run (fair_begin_run). */
static struct fair_state *fair_setup(const struct scheme *scheme, void *impl)
{
    struct fair_state *f = calloc(1, sizeof(*f));

    if (!f || !(f->waits_us = calloc(MAX_TRIALS, sizeof(*f->waits_us))))
        bench_fail("out of memory");
    f->scheme = scheme;
    f->impl = impl;
    return f;
}

/* Until the stream holds as many QUERY jobs as the scheme's trials want;
 * a stream that never gets there within 10 s is broken, and the bench
 * says so. */
static void wait_holding(struct fair_state *f)
{
    uint64_t deadline = mono_ns() + UINT64_C(10000000000);

    /* seq_cst, as every access to the stream's flags; only a count is read. */
    while (atomic_load(&f->holding) < f->scheme->holding) {
        if (mono_ns() > deadline)
            bench_fail("%s: the QUERY stream never held %d jobs", f->scheme->name,
                       f->scheme->holding);
        sched_yield();
    }
}

/* Before each run: start the stream; return once the QUERY jobs a trial
 * wants are held,
 * so that the run's first trial does not wait for the threads to start. */
static void fair_begin_run(void *state)
{
    struct fair_state *f = state;

    /* seq_cst, as every access to the stream's flags; pthread_create orders it anyway. */
    atomic_store(&f->stop, false);
    for (int i = 0; i < QUERY_THREADS; i++)
        if (pthread_create(&f->stream[i], NULL, stream_main, f))
            bench_fail("pthread_create failed");
    wait_holding(f);
}

/* After each run: stop the stream, so that it does not compete with the
 * runs of another case (the harness alternates this case's runs with its
 * baseline's, both states alive). */
static void fair_end_run(void *state)
{
    struct fair_state *f = state;

    /* seq_cst, as every access to the stream's flags; the joins order the rest. */
    atomic_store(&f->stop, true);
    atomic_store(&f->paused, false);
    for (int i = 0; i < QUERY_THREADS; i++)
        pthread_join(f->stream[i], NULL);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return (x > y) - (x < y);
}

static void fair_teardown_common(struct fair_state *f)
{
    double hold_us, p50 = 0;
    uint64_t n = f->trials < MAX_TRIALS ? f->trials : MAX_TRIALS;

    if (n) {
        qsort(f->waits_us, n, sizeof(*f->waits_us), cmp_u32);
        p50 = f->waits_us[n / 2];
    }
    hold_us = (double)atomic_load(&f->hold_max_ns) / 1e3;
    printf("{\"bench\": \"%s.max_wait\", \"trials\": %llu, \"max_wait_us\": %.1f, "
           "\"p50_wait_us\": %.1f, \"mean_wait_us\": %.1f, \"query_hold_max_us\": %.1f, "
           "\"queries\": %d, \"bound_us\": %.1f, \"within_bound\": %s, \"starved\": %llu, "
           "\"cap_ms\": %u}\n",
           f->scheme->name, (unsigned long long)f->trials, (double)f->max_wait_ns / 1e3, p50,
           f->trials ? (double)f->sum_wait_ns / 1e3 / (double)f->trials : 0.0, hold_us,
           QUERY_THREADS, hold_us * QUERY_THREADS,
           (double)f->max_wait_ns / 1e3 <= hold_us * QUERY_THREADS ? "true" : "false",
           (unsigned long long)f->starved, TRIAL_CAP_MS);
    fflush(stdout);
    free(f->waits_us);
}

/* One trial: MODIFY arrives while the stream holds QUERY jobs. */
static void fair_trial(struct fair_state *f)
{
    uint64_t t0, wait;

    wait_holding(f);
    t0 = mono_ns();
    if (!f->scheme->excl_begin(f->impl, TRIAL_CAP_MS)) {
        f->starved++;
        atomic_store(&f->paused, true); /* let the stream run dry */
        if (!f->scheme->excl_begin(f->impl, 60000))
            bench_fail("%s: MODIFY did not start even with the stream paused", f->scheme->name);
    }
    wait = mono_ns() - t0;
    f->scheme->excl_end(f->impl);
    atomic_store(&f->paused, false);
    if (f->trials < MAX_TRIALS)
        f->waits_us[f->trials] = (uint32_t)(wait / 1000);
    f->trials++;
    f->sum_wait_ns += wait;
    if (wait > f->max_wait_ns)
        f->max_wait_ns = wait;
}

BENCH_LOOP(bench_loop_fair_modify, state, iters)
{
    for (uint64_t i = 0; i < iters; i++) {
        fair_trial(state);
        bench_clobber();
    }
}

/* moor jobs */

static void moor_shared_begin(void *s)
{
    moor_lock(s);
    if (moor_job_begin(&((struct jobj *)s)->job, MOOR_JOB_QUERY, "stream", NULL) != 0)
        bench_fail("QUERY begin failed");
    moor_unlock(s);
}

static void moor_any_end(void *s)
{
    moor_lock(s);
    moor_job_end(&((struct jobj *)s)->job);
    moor_unlock(s);
}

static bool moor_excl_begin(void *s, unsigned cap_ms)
{
    int rc;

    moor_lock(s);
    rc = moor_job_begin_timeout(&((struct jobj *)s)->job, MOOR_JOB_MODIFY, "trial", cap_ms, NULL);
    moor_unlock(s);
    return rc == 0;
}

static const struct scheme moor_scheme = {
    "job_fair_modify", 2, moor_shared_begin, moor_any_end, moor_excl_begin, moor_any_end};

/* libvirt's scheme: one sync job at a time, broadcast on end, recheck */

struct bcast {
    pthread_mutex_t m; /* the object's lock */
    pthread_cond_t c;  /* the job condition */
    bool active;       /* a sync job (any kind) is held */
};

/* Wait for no active job, then take it; false if @dl passed first. */
static bool bcast_begin(struct bcast *b, const struct timespec *dl)
{
    bool ok = true;

    pthread_mutex_lock(&b->m);
    while (ok && b->active)
        ok = (dl ? pthread_cond_timedwait(&b->c, &b->m, dl) : pthread_cond_wait(&b->c, &b->m)) ==
                 0 ||
             !b->active;
    if (ok)
        b->active = true;
    pthread_mutex_unlock(&b->m);
    return ok;
}

static void bcast_shared_begin(void *p)
{
    bcast_begin(p, NULL);
}

static bool bcast_excl_begin(void *p, unsigned cap_ms)
{
    struct timespec dl;

    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += cap_ms / 1000;
    dl.tv_nsec += (long)(cap_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    return bcast_begin(p, &dl);
}

/* Any end: no job active, wake every waiter to recheck. */
static void bcast_end(void *p)
{
    struct bcast *b = p;

    pthread_mutex_lock(&b->m);
    b->active = false;
    pthread_cond_broadcast(&b->c);
    pthread_mutex_unlock(&b->m);
}

static const struct scheme bcast_scheme = {
    "bcast_fair_modify", 1, bcast_shared_begin, bcast_end, bcast_excl_begin, bcast_end};

static void *fair_moor_setup(void)
{
    return fair_setup(&moor_scheme, jobj_new());
}

static void fair_moor_teardown(void *state)
{
    struct fair_state *f = state;

    fair_teardown_common(f);
    moor_unref(f->impl);
    free(f);
}

static void *fair_bcast_setup(void)
{
    struct bcast *b = calloc(1, sizeof(*b));
    pthread_condattr_t attr;

    if (!b)
        bench_fail("out of memory");
    pthread_mutex_init(&b->m, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&b->c, &attr);
    pthread_condattr_destroy(&attr);
    return fair_setup(&bcast_scheme, b);
}

static void fair_bcast_teardown(void *state)
{
    struct fair_state *f = state;
    struct bcast *b = f->impl;

    fair_teardown_common(f);
    pthread_cond_destroy(&b->c);
    pthread_mutex_destroy(&b->m);
    free(b);
    free(f);
}

/* ---- set-up and tear-down ---------------------------------------------------------- */

/* moor_job_destroy + moor_job_init on a live object: what linking a job
 * on and off the live list (moor/introspect.h) costs at each end of an
 * object's life. Not a fast path; measured so that it stays small. */
BENCH_LOOP(bench_loop_job_init_destroy, state, iters)
{
    struct jobj *o = state;

    for (uint64_t i = 0; i < iters; i++) {
        moor_job_destroy(&o->job);
        moor_job_init(&o->job, o, "bench");
        bench_clobber();
    }
}

/* ---- registration ------------------------------------------------------------------ */

static const struct bench_case job_cases[] = {
    {"job_mutex_pair", NULL, 0, mutex_setup, mutex_teardown, bench_loop_job_mutex_pair},
    {"job_query_pair", "job_mutex_pair", 0, jobj_setup, jobj_teardown, bench_loop_job_query_pair},
    {"job_modify_pair", "job_mutex_pair", 0, jobj_setup, jobj_teardown, bench_loop_job_modify_pair},
    {"job_mutex_api", NULL, BENCH_CONTENDED, mutex_setup, mutex_teardown, bench_loop_job_mutex_api},
    {"job_api_query", "job_mutex_api", BENCH_CONTENDED, jobj_setup, jobj_teardown,
     bench_loop_job_api_query},
    {"job_api_modify", "job_mutex_api", BENCH_CONTENDED, jobj_setup, jobj_teardown,
     bench_loop_job_api_modify},
    {"job_lock_api", "job_mutex_api", BENCH_CONTENDED, jobj_setup, jobj_teardown,
     bench_loop_job_lock_api},
    {"job_mutex_hold", NULL, BENCH_CONTENDED, mutex_setup, mutex_teardown,
     bench_loop_job_mutex_hold},
    {"job_hold_modify", "job_mutex_hold", BENCH_CONTENDED, jobj_setup, jobj_teardown,
     bench_loop_job_hold_modify},
    {"bcast_fair_modify", NULL, 0, fair_bcast_setup, fair_bcast_teardown, bench_loop_fair_modify,
     fair_begin_run, fair_end_run},
    {"job_fair_modify", "bcast_fair_modify", 0, fair_moor_setup, fair_moor_teardown,
     bench_loop_fair_modify, fair_begin_run, fair_end_run},
    {"job_init_destroy", NULL, 0, jobj_setup, jobj_teardown, bench_loop_job_init_destroy},
};

BENCH_REGISTER(job_cases);
