/* SPDX-License-Identifier: MIT */
/*
 * test-job.c - per-object jobs: every kind against every held state,
 * deadlines and no-wait failures with their exact text, the accuracy of
 * "held for", the waiter cap, abort, async masks, nested jobs, hand-off,
 * removal while waiting, FIFO order, a waiter woken from its sleep, and
 * misuse.
 *
 * Other threads are "actors": each begins one job, reports the result and
 * holds the job until told to end it. A test knows an actor is waiting by
 * polling moor_job_info() for the number of queued waiters; nothing sleeps
 * to synchronise. (Two tests nap to let time pass: one measures a hold,
 * one lets a waiter get past its spin; both say why.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>

#include <moor/debug.h>
#include <moor/job.h>
#include <moor/object.h>

#include "test-util.h"

#define NO_WAIT   0u
#define SHORT_MS  50u
#define FOREVER   60000u /* longer than any test: a hang fails by timeout */
#define ASYNC_ANY UINT32_MAX

struct vm {
    moor_lockable parent;
    moor_job job;
};

static const moor_class *vm_class;
static unsigned kind_list;  /* a registered shared kind */
static unsigned kind_write; /* a registered exclusive kind */

static void vm_dispose(void *obj)
{
    moor_job_destroy(&((struct vm *)obj)->job);
}

static struct vm *vm_new(const char *label)
{
    struct vm *vm = moor_object_new(vm_class);

    assert_non_null(vm);
    assert_int_equal(moor_job_init(&vm->job, vm, label), 0);
    return vm;
}

static int gettid_(void)
{
    return (int)syscall(SYS_gettid);
}

static moor_job_snapshot snap(struct vm *vm)
{
    moor_job_snapshot s;

    moor_lock(vm);
    assert_int_equal(moor_job_info(&vm->job, &s), 0);
    moor_unlock(vm);
    return s;
}

/* Poll until @n begins are queued on @vm (the handshake for "it waits"). */
static void wait_queued(struct vm *vm, unsigned n)
{
    tu_wait_for(snap(vm).waiters == n, "%u begins queued on the job (%u now)", n, snap(vm).waiters);
}

/* ---- actors --------------------------------------------------------------- */

struct actor {
    pthread_t thread;
    struct vm *vm;
    unsigned kind; /* a sync kind, or ASYNC_ANY for an async job */
    uint32_t allowed;
    const char *api;
    uint32_t timeout_ms;
    int rc, tid;
    moor_error err;
    sem_t began, release;
    bool abort_seen; /* async actors: abort_requested() when released */
};

static void *actor_main(void *arg)
{
    struct actor *a = arg;

    a->tid = gettid_();
    moor_lock(a->vm);
    if (a->kind == ASYNC_ANY)
        a->rc = moor_job_begin_async(&a->vm->job, "migration out", a->allowed, a->api,
                                     a->timeout_ms, &a->err);
    else
        a->rc = moor_job_begin_timeout(&a->vm->job, a->kind, a->api, a->timeout_ms, &a->err);
    moor_unlock(a->vm);
    sem_post(&a->began);
    sem_wait(&a->release);
    moor_lock(a->vm);
    if (a->rc == 0 && a->kind == ASYNC_ANY) {
        a->abort_seen = moor_job_abort_requested(&a->vm->job);
        moor_job_end_async(&a->vm->job);
    } else if (a->rc == 0) {
        moor_job_end(&a->vm->job);
    }
    moor_unlock(a->vm);
    return NULL;
}

static void actor_start(struct actor *a, struct vm *vm, unsigned kind, const char *api,
                        uint32_t timeout_ms)
{
    memset(a, 0, sizeof(*a));
    a->vm = vm;
    a->kind = kind;
    a->api = api;
    a->timeout_ms = timeout_ms;
    a->allowed = MOOR_JOB_ASYNC_DEFAULT_MASK;
    sem_init(&a->began, 0, 0);
    sem_init(&a->release, 0, 0);
    assert_int_equal(pthread_create(&a->thread, NULL, actor_main, a), 0);
}

/* Start an actor and wait for its begin to return (it holds the job). */
static void actor_hold(struct actor *a, struct vm *vm, unsigned kind, const char *api)
{
    actor_start(a, vm, kind, api, NO_WAIT);
    tu_sem_wait(&a->began);
    assert_int_equal(a->rc, 0);
}

static void actor_hold_async(struct actor *a, struct vm *vm, uint32_t allowed)
{
    memset(a, 0, sizeof(*a));
    a->vm = vm;
    a->kind = ASYNC_ANY;
    a->api = "vm_migrate";
    a->allowed = allowed;
    sem_init(&a->began, 0, 0);
    sem_init(&a->release, 0, 0);
    assert_int_equal(pthread_create(&a->thread, NULL, actor_main, a), 0);
    tu_sem_wait(&a->began);
    assert_int_equal(a->rc, 0);
}

/* Wait for the actor's begin to return; its result. */
static int actor_result(struct actor *a)
{
    tu_sem_wait(&a->began);
    return a->rc;
}

/* Whether the actor's begin has returned yet (without waiting). */
static bool actor_returned(struct actor *a)
{
    if (sem_trywait(&a->began) != 0)
        return false;
    sem_post(&a->began);
    return true;
}

static void actor_finish(struct actor *a)
{
    sem_post(&a->release);
    tu_join(a->thread, NULL);
    sem_destroy(&a->began);
    sem_destroy(&a->release);
}

/* ---- basics ------------------------------------------------------------------- */

static void test_begin_end_and_info(void **state)
{
    struct vm *vm = vm_new("web1");
    moor_job_snapshot s;

    (void)state;
    moor_lock(vm);
    assert_false(moor_job_held(&vm->job));
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_MODIFY, "vm_suspend", NULL), 0);
    assert_true(moor_job_held(&vm->job));
    assert_int_equal(moor_job_info(&vm->job, &s), 0);
    assert_int_equal(s.holders, 1);
    assert_int_equal(s.exclusive, 1);
    assert_int_equal(s.holder[0].kind, MOOR_JOB_MODIFY);
    assert_string_equal(s.holder[0].kind_name, "MODIFY");
    assert_string_equal(s.holder[0].api, "vm_suspend");
    assert_int_equal(s.holder[0].thread, gettid_());
    assert_int_equal(s.waiters, 0);
    assert_false(s.async.active);
    tu_assert_contains(s.object, "test.vm 'web1'");
    assert_int_equal(moor_job_end(&vm->job), 0);
    assert_false(moor_job_held(&vm->job));
    assert_int_equal(moor_job_info(&vm->job, &s), 0);
    assert_int_equal(s.holders, 0);
    moor_unlock(vm);
    moor_unref(vm);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* "Held for" is exact to the stated resolution, one tick of
 * CLOCK_MONOTONIC_COARSE: each begin records its start time. The hold is
 * bracketed by fine clock readings; the reported time may be off by a
 * tick at each end (the coarse clock lags up to one tick), plus one more
 * tick and 1 ms of slack for a tick the kernel ran late. */
static void test_held_for_resolution(void **state)
{
    struct vm *vm = vm_new("clock");
    uint64_t tick, before_begin, after_begin, before_info, after_info, slack;
    const struct timespec nap = {0, 1000000};
    struct timespec res;
    moor_job_snapshot s;

    (void)state;
    assert_int_equal(clock_getres(CLOCK_MONOTONIC_COARSE, &res), 0);
    tick = (uint64_t)res.tv_sec * 1000000000u + (uint64_t)res.tv_nsec;
    slack = 2 * tick + 1000000;
    moor_lock(vm);
    before_begin = mono_ns();
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_MODIFY, "vm_suspend", NULL), 0);
    after_begin = mono_ns();
    /* Hold the job for five ticks and at least 20 ms: the time measured. */
    while (mono_ns() - after_begin < 5 * tick + 20000000)
        nanosleep(&nap, NULL);
    before_info = mono_ns();
    assert_int_equal(moor_job_info(&vm->job, &s), 0);
    after_info = mono_ns();
    assert_int_equal(s.holders, 1);
    assert_true(s.holder[0].held_ns + slack >= before_info - after_begin);
    assert_true(s.holder[0].held_ns <= after_info - before_begin + slack);
    moor_job_end(&vm->job);
    moor_unlock(vm);
    moor_unref(vm);
}

static void test_current_api(void **state)
{
    struct vm *vm = vm_new(NULL);
    moor_job_snapshot s;

    (void)state;
    moor_lock(vm);
    assert_null(moor_job_set_current_api("vm_get_info"));
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_QUERY, NULL, NULL), 0);
    assert_int_equal(moor_job_info(&vm->job, &s), 0);
    assert_string_equal(s.holder[0].api, "vm_get_info");
    tu_assert_contains(s.object, "test.vm 0x");
    moor_job_end(&vm->job);
    assert_string_equal(moor_job_set_current_api(NULL), "vm_get_info");
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_QUERY, NULL, NULL), 0);
    assert_int_equal(moor_job_info(&vm->job, &s), 0);
    assert_string_equal(s.holder[0].api, "(unknown)");
    moor_job_end(&vm->job);
    moor_unlock(vm);
    moor_unref(vm);
}

static void test_kinds(void **state)
{
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    assert_string_equal(moor_job_kind_name(MOOR_JOB_QUERY), "QUERY");
    assert_string_equal(moor_job_kind_name(MOOR_JOB_ABORT), "ABORT");
    assert_string_equal(moor_job_kind_name(kind_list), "LIST");
    assert_string_equal(moor_job_kind_name(31), "?");
    assert_int_equal(moor_job_kind_register("LIST", MOOR_JOB_SHARED, &err), -EEXIST);
    assert_int_equal(moor_job_kind_register("", MOOR_JOB_SHARED, NULL), -EINVAL);
    assert_int_equal(moor_job_kind_register("X", (moor_job_mode)7, NULL), -EINVAL);
    assert_int_equal(
        moor_job_kind_register("a-name-that-is-much-too-long-for-a-kind", MOOR_JOB_SHARED, NULL),
        -EINVAL);
}

/* ---- the compatibility matrix -------------------------------------------------- */

enum held {
    H_NONE,
    H_QUERY,
    H_MODIFY,
    H_DESTROY,
    H_ABORT,
    H_LIST,
    H_WRITE,
    H_ASYNC,        /* async, default mask, owned by another thread */
    H_ASYNC_NONE,   /* async allowing nothing but DESTROY */
    H_ASYNC_NESTED, /* async + its owner's nested MODIFY */
    H_COUNT
};

/* What the test thread gets when it tries each kind against each state:
 * 1 = starts, 0 = -EBUSY. Columns follow enum held. */
struct row {
    const char *name;
    unsigned kind; /* ASYNC_ANY: an async job with the default mask */
    int expect[H_COUNT];
};

static unsigned row_kind(const struct row *r)
{
    if (!strcmp(r->name, "LIST"))
        return kind_list;
    if (!strcmp(r->name, "WRITE"))
        return kind_write;
    return r->kind;
}

static const struct row matrix[] = {
    /*                     none Q  M  D  A  L  W  as an nest */
    {"QUERY", MOOR_JOB_QUERY, {1, 1, 0, 0, 0, 1, 0, 1, 0, 0}},
    {"MODIFY", MOOR_JOB_MODIFY, {1, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
    {"DESTROY", MOOR_JOB_DESTROY, {1, 0, 0, 0, 0, 0, 0, 1, 1, 0}},
    {"ABORT", MOOR_JOB_ABORT, {1, 0, 0, 0, 0, 0, 0, 1, 0, 0}},
    {"LIST", 0, {1, 1, 0, 0, 0, 1, 0, 0, 0, 0}},
    {"WRITE", 0, {1, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
    {"async", ASYNC_ANY, {1, 1, 0, 0, 0, 0, 0, 0, 0, 0}},
};

/* An async owner that also takes a nested MODIFY before reporting. */
static void *nested_owner_main(void *arg)
{
    struct actor *a = arg;

    a->tid = gettid_();
    moor_lock(a->vm);
    a->rc = moor_job_begin_async(&a->vm->job, "backup", MOOR_JOB_ASYNC_DEFAULT_MASK, "vm_backup",
                                 NO_WAIT, &a->err);
    if (a->rc == 0)
        a->rc = moor_job_begin_try(&a->vm->job, MOOR_JOB_MODIFY, "vm_backup", &a->err);
    moor_unlock(a->vm);
    sem_post(&a->began);
    sem_wait(&a->release);
    moor_lock(a->vm);
    moor_job_end(&a->vm->job);
    moor_job_end_async(&a->vm->job);
    moor_unlock(a->vm);
    return NULL;
}

static void hold_state(struct actor *a, struct vm *vm, enum held h)
{
    static const unsigned sync_kind[] = {0, MOOR_JOB_QUERY, MOOR_JOB_MODIFY, MOOR_JOB_DESTROY,
                                         MOOR_JOB_ABORT};

    switch (h) {
    case H_NONE:
        return;
    case H_LIST:
        actor_hold(a, vm, kind_list, "vm_list");
        return;
    case H_WRITE:
        actor_hold(a, vm, kind_write, "vm_write");
        return;
    case H_ASYNC:
        actor_hold_async(a, vm, MOOR_JOB_ASYNC_DEFAULT_MASK);
        return;
    case H_ASYNC_NONE:
        actor_hold_async(a, vm, 0);
        return;
    case H_ASYNC_NESTED:
        memset(a, 0, sizeof(*a));
        a->vm = vm;
        sem_init(&a->began, 0, 0);
        sem_init(&a->release, 0, 0);
        assert_int_equal(pthread_create(&a->thread, NULL, nested_owner_main, a), 0);
        assert_int_equal(actor_result(a), 0);
        return;
    default:
        actor_hold(a, vm, sync_kind[h], "holder_api");
        return;
    }
}

static int try_kind(struct vm *vm, unsigned kind)
{
    int rc;

    moor_lock(vm);
    if (kind == ASYNC_ANY)
        rc = moor_job_begin_async(&vm->job, "save", MOOR_JOB_ASYNC_DEFAULT_MASK, "vm_save", NO_WAIT,
                                  NULL);
    else
        rc = moor_job_begin_try(&vm->job, kind, "tester", NULL);
    if (rc == 0 && kind == ASYNC_ANY)
        moor_job_end_async(&vm->job);
    else if (rc == 0)
        moor_job_end(&vm->job);
    moor_unlock(vm);
    return rc;
}

static void test_compatibility_matrix(void **state)
{
    (void)state;
    for (int h = 0; h < H_COUNT; h++) {
        for (size_t r = 0; r < sizeof(matrix) / sizeof(matrix[0]); r++) {
            struct vm *vm = vm_new("m");
            struct actor a;
            int rc;

            hold_state(&a, vm, (enum held)h);
            rc = try_kind(vm, row_kind(&matrix[r]));
            if (rc != (matrix[r].expect[h] ? 0 : -EBUSY))
                fail_msg("%s against held state %d: got %d, expected %s", matrix[r].name, h, rc,
                         matrix[r].expect[h] ? "0" : "-EBUSY");
            if (h != H_NONE)
                actor_finish(&a);
            assert_int_equal(snap(vm).holders, 0);
            moor_unref(vm);
        }
    }
}

/* ---- failures and their text ------------------------------------------------------ */

static void test_timeout_names_holders(void **state)
{
    struct vm *vm = vm_new("web1");
    moor_error err = MOOR_ERROR_INIT;
    struct actor a, b;
    char want[160];

    (void)state;
    actor_hold(&a, vm, MOOR_JOB_QUERY, "vm_get_stats");
    actor_hold(&b, vm, MOOR_JOB_QUERY, "vm_get_info");
    moor_lock(vm);
    assert_int_equal(
        moor_job_begin_timeout(&vm->job, MOOR_JOB_MODIFY, "vm_suspend", SHORT_MS, &err),
        -ETIMEDOUT);
    assert_true(moor_lock_held(vm));
    assert_false(moor_job_held(&vm->job));
    moor_unlock(vm);
    assert_int_equal(err.code, -ETIMEDOUT);
    tu_assert_contains(err.message, "job MODIFY (api vm_suspend) on test.vm 'web1': timed out "
                                    "after 0.0");
    tu_assert_contains(err.message, "; 0 waiting; held by ");
    snprintf(want, sizeof(want), "QUERY (api vm_get_stats, thread %d, for 0.", a.tid);
    tu_assert_contains(err.message, want);
    snprintf(want, sizeof(want), "QUERY (api vm_get_info, thread %d, for 0.", b.tid);
    tu_assert_contains(err.message, want);
    /* Failure changed nothing: still two holders, nobody queued. */
    assert_int_equal(snap(vm).holders, 2);
    assert_int_equal(snap(vm).waiters, 0);
    actor_finish(&a);
    actor_finish(&b);
    moor_unref(vm);
}

static void test_try_busy_text(void **state)
{
    struct vm *vm = vm_new("db2");
    moor_error err = MOOR_ERROR_INIT;
    struct actor a;
    char want[160];

    (void)state;
    actor_hold(&a, vm, MOOR_JOB_MODIFY, "vm_set_memory");
    moor_lock(vm);
    assert_int_equal(moor_job_begin_try(&vm->job, MOOR_JOB_QUERY, "vm_get_info", &err), -EBUSY);
    moor_unlock(vm);
    snprintf(want, sizeof(want),
             "job QUERY (api vm_get_info) on test.vm 'db2': busy and not waiting; 0 waiting; "
             "held by MODIFY (api vm_set_memory, thread %d, for 0.",
             a.tid);
    tu_assert_contains(err.message, want);
    actor_finish(&a);
    moor_unref(vm);
}

static void test_async_holder_text(void **state)
{
    struct vm *vm = vm_new("web3");
    moor_error err = MOOR_ERROR_INIT;
    struct actor a;
    char want[200];

    (void)state;
    actor_hold_async(&a, vm, MOOR_JOB_ASYNC_DEFAULT_MASK);
    moor_lock(vm);
    assert_int_equal(moor_job_begin_try(&vm->job, MOOR_JOB_MODIFY, "vm_suspend", &err), -EBUSY);
    moor_unlock(vm);
    snprintf(want, sizeof(want),
             "held by async job 'migration out' (api vm_migrate, thread %d, for 0.", a.tid);
    tu_assert_contains(err.message, want);
    tu_assert_contains(err.message, "phase '', allows 0xd)");
    actor_finish(&a);
    moor_unref(vm);
}

static void test_default_timeout(void **state)
{
    struct vm *vm = vm_new("t");
    moor_error err = MOOR_ERROR_INIT;
    struct actor a;

    (void)state;
    actor_hold(&a, vm, MOOR_JOB_MODIFY, "x");
    moor_lock(vm);
    assert_int_equal(moor_job_set_default_timeout(&vm->job, 20), 0);
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_QUERY, "y", &err), -ETIMEDOUT);
    tu_assert_contains(err.message, "timed out after");
    assert_int_equal(moor_job_set_default_timeout(&vm->job, 0), 0);
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_QUERY, "y", &err), -EBUSY);
    moor_unlock(vm);
    actor_finish(&a);
    moor_unref(vm);
}

static void test_waiter_cap(void **state)
{
    struct vm *vm = vm_new("capped");
    moor_error err = MOOR_ERROR_INIT;
    struct actor holder, w1, w2, d;

    (void)state;
    actor_hold(&holder, vm, MOOR_JOB_MODIFY, "long_op");
    moor_lock(vm);
    assert_int_equal(moor_job_set_max_waiters(&vm->job, 2), 0);
    moor_unlock(vm);
    actor_start(&w1, vm, MOOR_JOB_QUERY, "w1", FOREVER);
    wait_queued(vm, 1);
    actor_start(&w2, vm, MOOR_JOB_MODIFY, "w2", FOREVER);
    wait_queued(vm, 2);
    moor_lock(vm);
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_QUERY, "third", &err), -EBUSY);
    moor_unlock(vm);
    tu_assert_contains(err.message, "job QUERY (api third) on test.vm 'capped': 2 waiters queued "
                                    "already (cap 2); 2 waiting; held by MODIFY (api long_op");
    assert_int_equal(snap(vm).waiters, 2);
    /* DESTROY is exempt from the cap. */
    actor_start(&d, vm, MOOR_JOB_DESTROY, "undefine", FOREVER);
    wait_queued(vm, 3);
    assert_int_equal(snap(vm).destroy_waiters, 1);
    actor_finish(&holder);
    /* DESTROY first, then w1 and w2 in order. */
    assert_int_equal(actor_result(&d), 0);
    assert_false(actor_returned(&w1));
    actor_finish(&d);
    assert_int_equal(actor_result(&w1), 0);
    actor_finish(&w1);
    assert_int_equal(actor_result(&w2), 0);
    actor_finish(&w2);
    moor_unref(vm);
}

/* ---- fairness ------------------------------------------------------------------- */

static void test_modify_not_overtaken_by_query(void **state)
{
    struct vm *vm = vm_new("fair");
    struct actor q1, m, q2;
    moor_job_snapshot s;

    (void)state;
    actor_hold(&q1, vm, MOOR_JOB_QUERY, "q1");
    actor_start(&m, vm, MOOR_JOB_MODIFY, "m", FOREVER);
    wait_queued(vm, 1);
    /* A later QUERY would be compatible with q1 but must queue behind m. */
    actor_start(&q2, vm, MOOR_JOB_QUERY, "q2", FOREVER);
    wait_queued(vm, 2);
    assert_int_equal(try_kind(vm, MOOR_JOB_QUERY), -EBUSY);
    actor_finish(&q1);
    assert_int_equal(actor_result(&m), 0);
    s = snap(vm);
    assert_int_equal(s.holders, 1);
    assert_string_equal(s.holder[0].api, "m");
    assert_int_equal(s.waiters, 1);
    actor_finish(&m);
    assert_int_equal(actor_result(&q2), 0);
    actor_finish(&q2);
    moor_unref(vm);
}

static void test_end_wakes_all_compatible(void **state)
{
    struct vm *vm = vm_new("wake");
    struct actor m, q[3], m2;

    (void)state;
    actor_hold(&m, vm, MOOR_JOB_MODIFY, "m");
    for (int i = 0; i < 3; i++) {
        actor_start(&q[i], vm, MOOR_JOB_QUERY, "q", FOREVER);
        wait_queued(vm, (unsigned)i + 1);
    }
    actor_start(&m2, vm, MOOR_JOB_MODIFY, "m2", FOREVER);
    wait_queued(vm, 4);
    actor_finish(&m);
    /* The three QUERY waiters run together; m2 still waits. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(actor_result(&q[i]), 0);
    assert_int_equal(snap(vm).holders, 3);
    assert_int_equal(snap(vm).waiters, 1);
    assert_false(actor_returned(&m2));
    for (int i = 0; i < 3; i++)
        actor_finish(&q[i]);
    assert_int_equal(actor_result(&m2), 0);
    actor_finish(&m2);
    moor_unref(vm);
}

/* A waiter spins briefly before it sleeps; one granted long after it
 * queued has slept, and the grant's signal must wake it. (The 10 ms nap is
 * not a synchronisation: the waiter is known to be queued. It only makes
 * the waiter go past its spin, microseconds long, and sleep; on a machine
 * so slow that it has not, the test passes through the spin instead.) */
static void test_grant_wakes_sleeper(void **state)
{
    struct vm *vm = vm_new("sleeper");
    const struct timespec nap = {0, 10000000};
    struct actor m, q;

    (void)state;
    actor_hold(&m, vm, MOOR_JOB_MODIFY, "m");
    actor_start(&q, vm, MOOR_JOB_QUERY, "q", FOREVER);
    wait_queued(vm, 1);
    nanosleep(&nap, NULL);
    assert_false(actor_returned(&q));
    actor_finish(&m);
    assert_int_equal(actor_result(&q), 0);
    assert_int_equal(snap(vm).holders, 1);
    actor_finish(&q);
    moor_unref(vm);
}

/* A waiter that times out at the front of the queue lets those behind it
 * run at once. */
static void test_timeout_of_front_waiter_unblocks(void **state)
{
    struct vm *vm = vm_new("front");
    struct actor q1, m, q2;

    (void)state;
    actor_hold(&q1, vm, MOOR_JOB_QUERY, "q1");
    actor_start(&m, vm, MOOR_JOB_MODIFY, "m", 2000);
    wait_queued(vm, 1);
    actor_start(&q2, vm, MOOR_JOB_QUERY, "q2", FOREVER);
    wait_queued(vm, 2); /* q2 queued behind m (2 s is plenty to get here) */
    assert_int_equal(actor_result(&m), -ETIMEDOUT);
    assert_int_equal(actor_result(&q2), 0);
    actor_finish(&m);
    actor_finish(&q2);
    actor_finish(&q1);
    moor_unref(vm);
}

/* ---- async jobs ------------------------------------------------------------------ */

static void test_async_mask_parks_without_blocking(void **state)
{
    struct vm *vm = vm_new("mig");
    struct actor m, q;

    (void)state;
    moor_lock(vm);
    assert_int_equal(moor_job_begin_async(&vm->job, "migration out", MOOR_JOB_ASYNC_DEFAULT_MASK,
                                          "vm_migrate", NO_WAIT, NULL),
                     0);
    moor_unlock(vm);
    /* MODIFY is outside the mask: it waits for the async job's end... */
    actor_start(&m, vm, MOOR_JOB_MODIFY, "vm_suspend", FOREVER);
    wait_queued(vm, 1);
    /* ...without holding back a later QUERY. */
    actor_start(&q, vm, MOOR_JOB_QUERY, "vm_get_info", FOREVER);
    assert_int_equal(actor_result(&q), 0);
    actor_finish(&q);
    assert_false(actor_returned(&m));
    /* Widening the mask lets it in. */
    moor_lock(vm);
    assert_int_equal(moor_job_async_set_mask(&vm->job, MOOR_JOB_ASYNC_DEFAULT_MASK |
                                                           MOOR_JOB_MASK(MOOR_JOB_MODIFY)),
                     0);
    moor_unlock(vm);
    assert_int_equal(actor_result(&m), 0);
    actor_finish(&m);
    moor_lock(vm);
    assert_int_equal(moor_job_end_async(&vm->job), 0);
    moor_unlock(vm);
    moor_unref(vm);
}

static void test_async_end_releases_parked(void **state)
{
    struct vm *vm = vm_new("mig2");
    struct actor m;

    (void)state;
    moor_lock(vm);
    assert_int_equal(moor_job_begin_async(&vm->job, "save", 0, "vm_save", NO_WAIT, NULL), 0);
    moor_unlock(vm);
    actor_start(&m, vm, MOOR_JOB_QUERY, "vm_get_info", FOREVER);
    wait_queued(vm, 1);
    moor_lock(vm);
    moor_job_end_async(&vm->job);
    moor_unlock(vm);
    assert_int_equal(actor_result(&m), 0);
    actor_finish(&m);
    moor_unref(vm);
}

static void test_nested_jobs_and_progress(void **state)
{
    struct vm *vm = vm_new("nest");
    moor_job_snapshot s;
    struct actor q;

    (void)state;
    moor_lock(vm);
    assert_int_equal(moor_job_begin_async(&vm->job, "migration out", MOOR_JOB_ASYNC_DEFAULT_MASK,
                                          "vm_migrate", NO_WAIT, NULL),
                     0);
    assert_int_equal(moor_job_async_set_phase(&vm->job, "perform"), 0);
    for (int step = 0; step < 3; step++) {
        /* The owner's nested MODIFY ignores the mask. */
        assert_int_equal(moor_job_begin_try(&vm->job, MOOR_JOB_MODIFY, "vm_migrate", NULL), 0);
        moor_unlock(vm);
        /* ... a peer call would go here, without the mutex ... */
        moor_lock(vm);
        assert_int_equal(moor_job_end(&vm->job), 0);
        assert_int_equal(moor_job_async_set_progress(&vm->job, (uint64_t)step + 1, 3, "copying"),
                         0);
    }
    /* Two sync jobs at once in one thread is refused. */
    assert_int_equal(moor_job_begin_try(&vm->job, MOOR_JOB_QUERY, "vm_migrate", NULL), 0);
    assert_int_equal(moor_job_begin_try(&vm->job, MOOR_JOB_QUERY, "vm_migrate", NULL), -EDEADLK);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, vm, "would deadlock");
    moor_job_end(&vm->job);
    moor_unlock(vm);

    /* A QUERY holder in another thread reads the progress. */
    actor_hold(&q, vm, MOOR_JOB_QUERY, "vm_job_info");
    s = snap(vm);
    assert_true(s.async.active);
    assert_string_equal(s.async.name, "migration out");
    assert_string_equal(s.async.phase, "perform");
    assert_string_equal(s.async.stage, "copying");
    assert_int_equal(s.async.done, 3);
    assert_int_equal(s.async.total, 3);
    assert_int_equal(s.async.owner, gettid_());
    assert_string_equal(s.async.api, "vm_migrate");
    assert_int_equal(s.async.allowed, MOOR_JOB_ASYNC_DEFAULT_MASK);
    actor_finish(&q);
    moor_lock(vm);
    assert_int_equal(moor_job_end_async(&vm->job), 0);
    moor_unlock(vm);
    moor_unref(vm);
}

static void test_abort(void **state)
{
    struct vm *vm = vm_new("ab");
    struct actor a;

    (void)state;
    actor_hold_async(&a, vm, MOOR_JOB_ASYNC_DEFAULT_MASK);
    moor_lock(vm);
    assert_false(moor_job_abort_requested(&vm->job));
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_ABORT, "vm_abort_job", NULL), 0);
    assert_true(moor_job_abort_requested(&vm->job));
    assert_int_equal(moor_job_end(&vm->job), 0);
    assert_true(moor_job_abort_requested(&vm->job));
    moor_unlock(vm);
    actor_finish(&a);
    assert_true(a.abort_seen);
    moor_lock(vm);
    assert_false(moor_job_abort_requested(&vm->job));
    /* ABORT without an async job is just an exclusive job. */
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_ABORT, "vm_abort_job", NULL), 0);
    assert_false(moor_job_abort_requested(&vm->job));
    moor_job_end(&vm->job);
    moor_unlock(vm);
    moor_unref(vm);
}

/* Hand-off: the owner releases the async job, another thread adopts it,
 * takes nested jobs and ends it. */
static void *adopter_main(void *arg)
{
    struct vm *vm = arg;
    intptr_t ok = 1;

    moor_lock(vm);
    ok &= moor_job_async_adopt(&vm->job) == 0;
    ok &= moor_job_begin_try(&vm->job, MOOR_JOB_MODIFY, "vm_migrate_finish", NULL) == 0;
    ok &= moor_job_end(&vm->job) == 0;
    ok &= moor_job_async_set_phase(&vm->job, "finish") == 0;
    ok &= moor_job_end_async(&vm->job) == 0;
    moor_unlock(vm);
    moor_unref(vm); /* the reference that travelled with the job */
    return (void *)ok;
}

static void test_handoff(void **state)
{
    struct vm *vm = vm_new("ho");
    moor_job_snapshot s;

    (void)state;
    moor_lock(vm);
    assert_int_equal(
        moor_job_begin_async(&vm->job, "migration in", 0, "vm_migrate_prepare", NO_WAIT, NULL), 0);
    assert_int_equal(moor_job_async_release(&vm->job), 0);
    assert_int_equal(moor_job_info(&vm->job, &s), 0);
    assert_int_equal(s.async.owner, 0);
    /* Released: this thread's sync jobs no longer bypass the mask... */
    assert_int_equal(moor_job_begin_try(&vm->job, MOOR_JOB_MODIFY, "x", NULL), -EBUSY);
    /* ...and it cannot end or change the job any more. */
    assert_int_equal(moor_job_end_async(&vm->job), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, vm, "owned by thread 0");
    moor_unlock(vm);
    assert_true((intptr_t)tu_in_thread(adopter_main, moor_ref(vm)));
    moor_lock(vm);
    assert_int_equal(moor_job_info(&vm->job, &s), 0);
    assert_false(s.async.active);
    assert_int_equal(moor_job_async_adopt(&vm->job), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, vm, "no released async job");
    moor_unlock(vm);
    moor_unref(vm);
}

/* ---- removal ------------------------------------------------------------------------ */

static void test_removed_while_waiting(void **state)
{
    struct vm *vm = vm_new("gone");
    struct actor m, q, d;

    (void)state;
    moor_lock(vm);
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_MODIFY, "vm_undefine", NULL), 0);
    moor_unlock(vm);
    actor_start(&m, vm, MOOR_JOB_MODIFY, "vm_suspend", FOREVER);
    actor_start(&q, vm, MOOR_JOB_QUERY, "vm_get_info", FOREVER);
    actor_start(&d, vm, MOOR_JOB_DESTROY, "vm_destroy", FOREVER);
    wait_queued(vm, 3);
    moor_lock(vm);
    assert_int_equal(moor_job_mark_removed(&vm->job), 3);
    moor_unlock(vm);
    assert_int_equal(actor_result(&m), -ESRCH);
    assert_int_equal(actor_result(&q), -ESRCH);
    assert_int_equal(actor_result(&d), -ESRCH);
    tu_assert_contains(m.err.message, "job MODIFY (api vm_suspend) on test.vm 'gone': the object "
                                      "was removed while waiting");
    moor_lock(vm);
    assert_int_equal(moor_job_end(&vm->job), 0);
    moor_error err = MOOR_ERROR_INIT;
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_DESTROY, "late", &err), -ESRCH);
    tu_assert_contains(err.message, "job DESTROY (api late) on test.vm 'gone': the object was "
                                    "removed");
    moor_unlock(vm);
    actor_finish(&m);
    actor_finish(&q);
    actor_finish(&d);
    moor_unref(vm);
}

/* Issue 11, point 1: an end grants the job to a waiter, and the object is
 * marked removed before that waiter retakes the mutex (here: in the same
 * critical section as the end). The waiter must not return 0 on a removed
 * object: it hands the grant back and fails with -ESRCH. Async too. */
static void test_removed_after_grant(void **state)
{
    struct vm *vm = vm_new("granted");
    struct actor m, a;
    moor_job_snapshot s;

    (void)state;
    moor_lock(vm);
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_MODIFY, "vm_undefine", NULL), 0);
    moor_unlock(vm);
    actor_start(&m, vm, MOOR_JOB_MODIFY, "vm_suspend", FOREVER);
    wait_queued(vm, 1); /* the MODIFY first: queued after the async, it would be parked */
    actor_start(&a, vm, ASYNC_ANY, "vm_migrate", FOREVER);
    wait_queued(vm, 2);
    moor_lock(vm);
    assert_int_equal(moor_job_end(&vm->job), 0); /* grants the MODIFY */
    assert_int_equal(moor_job_info(&vm->job, &s), 0);
    assert_int_equal(s.holders, 1);
    assert_int_equal(moor_job_mark_removed(&vm->job), 1); /* the async waiter */
    moor_unlock(vm);
    assert_int_equal(actor_result(&m), -ESRCH);
    tu_assert_contains(m.err.message, "job MODIFY (api vm_suspend) on test.vm 'granted': the "
                                      "object was removed after the job was granted");
    assert_int_equal(actor_result(&a), -ESRCH);
    s = snap(vm);
    assert_int_equal(s.holders, 0);
    assert_int_equal(s.exclusive, 0);
    assert_false(s.async.active);
    actor_finish(&m);
    actor_finish(&a);
    moor_unref(vm);
}

static void test_removed_after_async_grant(void **state)
{
    struct vm *vm = vm_new("granted-async");
    struct actor a;

    (void)state;
    moor_lock(vm);
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_MODIFY, "vm_undefine", NULL), 0);
    moor_unlock(vm);
    actor_start(&a, vm, ASYNC_ANY, "vm_migrate", FOREVER);
    wait_queued(vm, 1);
    moor_lock(vm);
    assert_int_equal(moor_job_end(&vm->job), 0); /* grants the async job */
    assert_int_equal(moor_job_mark_removed(&vm->job), 0);
    moor_unlock(vm);
    assert_int_equal(actor_result(&a), -ESRCH);
    tu_assert_contains(a.err.message, "async job 'migration out' (api vm_migrate) on test.vm "
                                      "'granted-async': the object was removed after the job "
                                      "was granted");
    assert_false(snap(vm).async.active);
    actor_finish(&a);
    moor_unref(vm);
}

/* Point 5: the cheap re-check after re-locking. */
static void test_is_removed(void **state)
{
    struct vm *vm = vm_new("recheck");

    (void)state;
    moor_lock(vm);
    assert_false(moor_job_is_removed(&vm->job));
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_MODIFY, "vm_suspend", NULL), 0);
    moor_unlock(vm);
    /* ...the slow part, unlocked; meanwhile the object is removed... */
    moor_lock(vm);
    assert_int_equal(moor_job_mark_removed(&vm->job), 0);
    moor_unlock(vm);
    moor_lock(vm);
    assert_true(moor_job_is_removed(&vm->job));
    assert_int_equal(moor_job_end(&vm->job), 0);
    moor_unlock(vm);

    /* Without the mutex: reported, and the answer is "removed". */
    struct vm *other = vm_new("unlocked");
    tu_capture_start();
    assert_true(moor_job_is_removed(&other->job));
    tu_expect_report(MOOR_MISUSE_NOT_LOCKED, other, "moor_job_is_removed on test.vm 'unlocked'");
    assert_true(moor_job_is_removed(NULL));
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "moor_job_is_removed");
    moor_unref(other);
    moor_unref(vm);
}

static void test_inactive_while_waiting(void **state)
{
    struct vm *vm = vm_new("died");
    struct actor m, d;

    (void)state;
    moor_lock(vm);
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_QUERY, "vm_get_info", NULL), 0);
    moor_unlock(vm);
    actor_start(&m, vm, MOOR_JOB_MODIFY, "vm_suspend", FOREVER);
    actor_start(&d, vm, MOOR_JOB_DESTROY, "process_eof", FOREVER);
    wait_queued(vm, 2);
    moor_lock(vm);
    assert_int_equal(moor_job_mark_inactive(&vm->job), 1);
    moor_unlock(vm);
    assert_int_equal(actor_result(&m), -ESRCH);
    tu_assert_contains(m.err.message, "the object was marked inactive while waiting");
    /* The DESTROY waiter still gets its turn; later begins work. */
    moor_lock(vm);
    moor_job_end(&vm->job);
    moor_unlock(vm);
    assert_int_equal(actor_result(&d), 0);
    actor_finish(&d);
    actor_finish(&m);
    assert_int_equal(try_kind(vm, MOOR_JOB_MODIFY), 0);
    moor_unref(vm);
}

/* DESTROY jumps the queue, ahead of earlier waiters of every kind. */
static void test_destroy_jumps_queue(void **state)
{
    struct vm *vm = vm_new("dj");
    struct actor q, m, d;

    (void)state;
    actor_hold(&q, vm, MOOR_JOB_QUERY, "q");
    actor_start(&m, vm, MOOR_JOB_MODIFY, "m", FOREVER);
    wait_queued(vm, 1);
    actor_start(&d, vm, MOOR_JOB_DESTROY, "d", FOREVER);
    wait_queued(vm, 2);
    actor_finish(&q);
    assert_int_equal(actor_result(&d), 0);
    assert_false(actor_returned(&m));
    actor_finish(&d);
    assert_int_equal(actor_result(&m), 0);
    actor_finish(&m);
    moor_unref(vm);
}

/* ---- many holders, allocation failure ---------------------------------------------- */

static void test_many_shared_holders_and_enomem(void **state)
{
    enum { N = MOOR_JOB_INLINE + 3 };
    struct vm *vm = vm_new("many");
    struct actor a[N], extra;
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    for (int i = 0; i < MOOR_JOB_INLINE; i++)
        actor_hold(&a[i], vm, MOOR_JOB_QUERY, "q");
    /* The next holder needs the heap: fail that allocation once. */
    moor_debug_fail_alloc(1);
    actor_start(&extra, vm, MOOR_JOB_QUERY, "q", NO_WAIT);
    assert_int_equal(actor_result(&extra), -ENOMEM);
    actor_finish(&extra);
    assert_int_equal(snap(vm).holders, MOOR_JOB_INLINE);
    for (int i = MOOR_JOB_INLINE; i < N; i++)
        actor_hold(&a[i], vm, MOOR_JOB_QUERY, "q");
    assert_int_equal(snap(vm).holders, N);
    moor_lock(vm);
    assert_int_equal(moor_job_begin_timeout(&vm->job, MOOR_JOB_MODIFY, "m", 1, &err), -ETIMEDOUT);
    tu_assert_contains(err.message, "held by QUERY");
    moor_unlock(vm);
    for (int i = 0; i < N; i++)
        actor_finish(&a[i]);
    assert_int_equal(try_kind(vm, MOOR_JOB_MODIFY), 0);
    moor_unref(vm);
}

/* ---- misuse ---------------------------------------------------------------------------- */

static void test_end_without_begin(void **state)
{
    struct vm *vm = vm_new("mis");

    (void)state;
    moor_lock(vm);
    assert_int_equal(moor_job_end(&vm->job), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, vm, "moor_job_end on test.vm 'mis' by thread");
    tu_expect_no_report();
    assert_int_equal(moor_job_end_async(&vm->job), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, vm, "no async job runs");
    assert_int_equal(moor_job_async_set_progress(&vm->job, 1, 2, "x"), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, vm, "no async job runs");
    moor_unlock(vm);
    moor_unref(vm);
}

static void test_begin_without_mutex(void **state)
{
    struct vm *vm = vm_new("nolock");
    moor_error err = MOOR_ERROR_INIT;
    moor_job_snapshot s;

    (void)state;
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_QUERY, "x", &err), -EINVAL);
    tu_expect_report(MOOR_MISUSE_NOT_LOCKED, vm, "moor_job_begin on test.vm 'nolock' by thread");
    assert_int_equal(moor_job_info(&vm->job, &s), -EINVAL);
    tu_expect_report(MOOR_MISUSE_NOT_LOCKED, vm, "the object's mutex is not held");
    assert_int_equal(moor_job_begin(NULL, MOOR_JOB_QUERY, "x", NULL), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "NULL or uninitialised job");
    assert_int_equal(moor_job_init(&vm->job, NULL, "x"), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "lockable object");
    moor_lock(vm);
    assert_int_equal(moor_job_begin(&vm->job, 30, "x", &err), -EINVAL);
    tu_assert_contains(err.message, "unknown kind 30");
    moor_unlock(vm);
    moor_unref(vm);
}

/* The default hook's text, as a daemon's stderr would show it. */
static int child_end_without_begin(void *arg)
{
    struct vm *vm = vm_new("child");

    (void)arg;
    moor_debug_set_report(NULL, NULL);
    moor_lock(vm);
    moor_job_end(&vm->job);
    moor_unlock(vm);
    moor_job_begin(&vm->job, MOOR_JOB_MODIFY, "x", NULL);
    moor_unref(vm);
    return 0;
}

static void test_misuse_default_hook(void **state)
{
    tu_child c;

    (void)state;
    tu_fork(&c, child_end_without_begin, NULL);
    tu_assert_child_exited(&c, 0);
    tu_assert_contains(c.out, "moor: moor_job_end on test.vm 'child' by thread ");
    tu_assert_contains(c.out, "end without begin");
    tu_assert_contains(c.out, "moor_job_begin on test.vm 'child' by thread ");
    tu_assert_contains(c.out, "the object's mutex is not held");
}

static void test_destroy_while_held_reported(void **state)
{
    struct vm *vm = vm_new("leak");
    moor_job copy;

    (void)state;
    moor_lock(vm);
    moor_job_begin(&vm->job, MOOR_JOB_QUERY, "q", NULL);
    moor_unlock(vm);
    /* Destroy a copy (the real one is still needed to end cleanly). */
    copy = vm->job;
    copy.holders = copy.inline_holders;
    moor_job_destroy(&copy);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, vm, "1 holder(s)");
    moor_job_destroy(NULL);
    moor_lock(vm);
    moor_job_end(&vm->job);
    moor_unlock(vm);
    moor_unref(vm);
}

/* Issue 11, point 8: MOOR_JOB_INIT names the object once; a job must lie
 * inside the object given; an object freed with its job still set up (a
 * dispose function without moor_job_destroy) is reported. */
static const moor_class *forgetful_class;

static void forgetful_dispose(void *obj)
{
    (void)obj; /* forgets moor_job_destroy() */
}

static void test_init_checks_and_forgotten_destroy(void **state)
{
    struct vm *vm = moor_object_new(vm_class);
    struct vm *bad = moor_object_new(forgetful_class);
    moor_job outside;

    (void)state;
    assert_non_null(vm);
    assert_non_null(bad);
    assert_int_equal(MOOR_JOB_INIT(vm, job, "once"), 0);
    assert_string_equal(snap(vm).object, "test.vm 'once'");

    assert_int_equal(moor_job_init(&outside, vm, "stray"), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "is not inside object");

    assert_int_equal(MOOR_JOB_INIT(bad, job, "forgot"), 0);
    moor_unref(bad);
    tu_expect_report(MOOR_MISUSE_NOT_DESTROYED, bad,
                     "(class 'test.forgetful') disposed with 1 job(s) still set up in it: its "
                     "dispose function must call moor_job_destroy()");
    moor_unref(vm); /* vm_dispose destroys its job: no report */
    tu_expect_no_report();
}

int main(void)
{
    moor_error err = MOOR_ERROR_INIT;
    int k;

    vm_class =
        moor_class_new("test.vm", moor_lockable_class(), sizeof(struct vm), vm_dispose, &err);
    forgetful_class = moor_class_new("test.forgetful", moor_lockable_class(), sizeof(struct vm),
                                     forgetful_dispose, &err);
    if (!vm_class || !forgetful_class)
        return 1;
    k = moor_job_kind_register("LIST", MOOR_JOB_SHARED, &err);
    if (k < 0)
        return 1;
    kind_list = (unsigned)k;
    k = moor_job_kind_register("WRITE", MOOR_JOB_EXCLUSIVE, &err);
    if (k < 0)
        return 1;
    kind_write = (unsigned)k;

    const struct CMUnitTest tests[] = {
        TU_TEST(test_begin_end_and_info),
        TU_TEST(test_held_for_resolution),
        TU_TEST(test_current_api),
        TU_TEST(test_kinds),
        TU_TEST(test_compatibility_matrix),
        TU_TEST(test_timeout_names_holders),
        TU_TEST(test_try_busy_text),
        TU_TEST(test_async_holder_text),
        TU_TEST(test_default_timeout),
        TU_TEST(test_waiter_cap),
        TU_TEST(test_modify_not_overtaken_by_query),
        TU_TEST(test_end_wakes_all_compatible),
        TU_TEST(test_grant_wakes_sleeper),
        TU_TEST(test_timeout_of_front_waiter_unblocks),
        TU_TEST(test_async_mask_parks_without_blocking),
        TU_TEST(test_async_end_releases_parked),
        TU_TEST(test_nested_jobs_and_progress),
        TU_TEST(test_abort),
        TU_TEST(test_handoff),
        TU_TEST(test_removed_while_waiting),
        TU_TEST(test_removed_after_grant),
        TU_TEST(test_removed_after_async_grant),
        TU_TEST(test_is_removed),
        TU_TEST(test_inactive_while_waiting),
        TU_TEST(test_destroy_jumps_queue),
        TU_TEST(test_many_shared_holders_and_enomem),
        TU_TEST(test_end_without_begin),
        TU_TEST(test_begin_without_mutex),
        TU_TEST(test_misuse_default_hook),
        TU_TEST(test_destroy_while_held_reported),
        TU_TEST(test_init_checks_and_forgotten_destroy),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
