/* SPDX-License-Identifier: MIT */
/*
 * test-watchdog.c - moor_debug_snapshot(), its JSON form, the
 * MOOR_DEBUG=watchdog thread, and thread ids in a fork child.
 *
 * Stuck things are made on purpose: a job held by the test's own thread,
 * a thread waiting behind it, a monitor call to a peer (the other end of a
 * socketpair) that never answers. Every wait is a bounded poll on what the
 * snapshot or the report hook shows. "Nothing more was reported" is
 * checked against a later, deliberate episode: once its report arrived the
 * watchdog has looked many times since the earlier ones.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <moor/debug.h>
#include <moor/introspect.h>
#include <moor/job.h>
#include <moor/lockcnt.h>
#include <moor/loop.h>
#include <moor/monitor.h>
#include <moor/object.h>

#include "test-util.h"

#define THRESHOLD_MS 200u
#define FOREVER      60000u

struct vm {
    moor_lockable parent;
    moor_job job;
};

static const moor_class *vm_class;

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

static void hold(struct vm *vm, unsigned kind, const char *api)
{
    moor_lock(vm);
    assert_int_equal(moor_job_begin(&vm->job, kind, api, NULL), 0);
    moor_unlock(vm);
}

static void release(struct vm *vm)
{
    moor_lock(vm);
    assert_int_equal(moor_job_end(&vm->job), 0);
    moor_unlock(vm);
}

/* A thread that waits for a QUERY job on @vm, then ends it. */
static void *query_waiter(void *arg)
{
    struct vm *vm = arg;
    int rc;

    moor_lock(vm);
    rc = moor_job_begin_timeout(&vm->job, MOOR_JOB_QUERY, "test-info", FOREVER, NULL);
    if (rc == 0)
        moor_job_end(&vm->job);
    moor_unlock(vm);
    return (void *)(intptr_t)rc;
}

/* The entry of @vm's job in role @role in @s, or NULL. */
static const moor_debug_job *find_job(const moor_snapshot *s, const struct vm *vm,
                                      moor_debug_job_role role)
{
    for (size_t i = 0; i < s->njobs; i++)
        if (s->jobs[i].job == &vm->job && s->jobs[i].role == role)
            return &s->jobs[i];
    return NULL;
}

static bool has_waiter(const struct vm *vm)
{
    moor_snapshot *s = moor_debug_snapshot();
    bool found = s && find_job(s, vm, MOOR_DEBUG_JOB_WAITS);

    moor_debug_snapshot_free(s);
    return found;
}

static void watchdog_on(void)
{
    moor_debug_set_watchdog_ms(THRESHOLD_MS);
    moor_debug_set_flags(moor_debug_flags() | MOOR_DEBUG_WATCHDOG);
}

static void watchdog_off(void)
{
    moor_debug_set_flags(moor_debug_flags() & ~(unsigned)MOOR_DEBUG_WATCHDOG);
    moor_debug_set_watchdog_ms(0);
}

/* Wait for the next report, at most @ms after @t0 (tu_mono_ms), failing
 * the test if it does not come by then. */
static void expect_report_by(int64_t t0, int64_t ms)
{
    tu_wait_for(tu_unchecked_reports() > 0 || tu_mono_ms() - t0 > ms + 5000, "a watchdog report");
    assert_true(tu_unchecked_reports() > 0);
    if (tu_mono_ms() - t0 > ms)
        fail_msg("the report came %" PRId64 " ms after the episode began (limit %" PRId64 ")",
                 tu_mono_ms() - t0, ms);
}

/* ---- parsing ---------------------------------------------------------------- */

static void test_parse_watchdog_ms(void **state)
{
    (void)state;
    assert_int_equal(moor_debug_parse("watchdog"), MOOR_DEBUG_WATCHDOG);
    assert_int_equal(moor_debug_watchdog_ms(), MOOR_DEBUG_WATCHDOG_DEFAULT_MS);
    assert_int_equal(moor_debug_parse("leaks,watchdog=1500"),
                     MOOR_DEBUG_WATCHDOG | MOOR_DEBUG_LEAKS);
    assert_int_equal(moor_debug_watchdog_ms(), 1500);
    /* Invalid: nothing changes. */
    assert_int_equal(moor_debug_parse("watchdog=0"), -EINVAL);
    assert_int_equal(moor_debug_parse("watchdog=12x"), -EINVAL);
    assert_int_equal(moor_debug_parse("watchdog="), -EINVAL);
    assert_int_equal(moor_debug_parse("watchdog=99999999999"), -EINVAL);
    assert_int_equal(moor_debug_parse("watchdog=20,bogus"), -EINVAL);
    assert_int_equal(moor_debug_watchdog_ms(), 1500);
    assert_int_equal(moor_debug_set_watchdog_ms(0), 1500);
    assert_int_equal(moor_debug_watchdog_ms(), MOOR_DEBUG_WATCHDOG_DEFAULT_MS);
}

/* ---- the snapshot ------------------------------------------------------------- */

struct buf {
    char text[8192];
    size_t len;
};

static int buf_write(const char *data, size_t len, void *opaque)
{
    struct buf *b = opaque;

    if (len >= sizeof(b->text) - b->len)
        return -ENOSPC;
    memcpy(b->text + b->len, data, len);
    b->len += len;
    b->text[b->len] = '\0';
    return 0;
}

static int fail_write(const char *data, size_t len, void *opaque)
{
    (void)data, (void)len, (void)opaque;
    return -EPIPE;
}

static void test_snapshot_holder_and_waiter(void **state)
{
    struct vm *vm = vm_new("web\"1");
    moor_snapshot *s;
    const moor_debug_job *h, *w;
    struct buf json = {.len = 0};
    pthread_t t;
    void *rc;

    (void)state;
    hold(vm, MOOR_JOB_MODIFY, "test-suspend");
    assert_int_equal(pthread_create(&t, NULL, query_waiter, vm), 0);
    tu_wait_for(has_waiter(vm), "the QUERY begin to queue");

    s = moor_debug_snapshot();
    assert_non_null(s);
    assert_int_equal(s->version, MOOR_DEBUG_SNAPSHOT_VERSION);
    assert_int_equal(s->pid, getpid());
    h = find_job(s, vm, MOOR_DEBUG_JOB_HOLDS);
    w = find_job(s, vm, MOOR_DEBUG_JOB_WAITS);
    if (!h || !w)
        fail_msg("holder %p, waiter %p in the snapshot", (const void *)h, (const void *)w);
    assert_string_equal(h->object_class, "test.vm");
    assert_string_equal(h->label, "web\"1");
    assert_string_equal(h->kind, "MODIFY");
    assert_string_equal(h->api, "test-suspend");
    assert_int_equal(h->thread, gettid_());
    assert_int_equal(h->left_ms, -1);
    assert_string_equal(w->kind, "QUERY");
    assert_string_equal(w->api, "test-info");
    assert_int_not_equal(w->thread, gettid_());
    assert_true(w->left_ms > 0 && w->left_ms <= FOREVER);
    assert_true(s->nclasses >= 1);
    assert_true(s->nlock_classes >= 1);

    assert_int_equal(moor_debug_snapshot_write_json(s, buf_write, &json), 0);
    tu_assert_contains(json.text, "{\"version\":2,");
    tu_assert_contains(json.text, "\"object\":\"test.vm 'web\\\"1'\"");
    tu_assert_contains(json.text,
                       "\"role\":\"holds\",\"kind\":\"MODIFY\",\"api\":\"test-suspend\"");
    tu_assert_contains(json.text, "\"role\":\"waits\",\"kind\":\"QUERY\",\"api\":\"test-info\"");
    tu_assert_contains(json.text, "{\"class\":\"test.vm\",\"live\":1}");
    assert_int_equal(json.text[json.len - 1], '}');
    assert_int_equal(moor_debug_snapshot_write_json(s, fail_write, NULL), -EPIPE);
    assert_int_equal(moor_debug_snapshot_write_json(NULL, buf_write, &json), -EINVAL);
    moor_debug_snapshot_free(s);

    release(vm);
    tu_join(t, &rc);
    assert_int_equal((intptr_t)rc, 0);

    /* Idle again: the job is listed nowhere. */
    s = moor_debug_snapshot();
    assert_non_null(s);
    assert_null(find_job(s, vm, MOOR_DEBUG_JOB_HOLDS));
    assert_null(find_job(s, vm, MOOR_DEBUG_JOB_WAITS));
    moor_debug_snapshot_free(s);
    moor_unref(vm);
    moor_debug_snapshot_free(NULL);
}

/* A caller holding the object's mutex gets it read without a wait. */
/* A lock class named @name in @s, or SIZE_MAX. */
static size_t find_lock_class(const moor_snapshot *s, const char *name, const char *what)
{
    for (size_t i = 0; i < s->nlock_classes; i++)
        if (!strcmp(s->lock_classes[i].name, name) && !strcmp(s->lock_classes[i].what, what))
            return i;
    return SIZE_MAX;
}

static const moor_class *order_class;

/* The snapshot lists the lock checker's classes and orders once it has
 * registered any (before that, moor's built-in kinds of lock). */
static void test_snapshot_lock_classes(void **state)
{
    unsigned flags = moor_debug_flags();
    struct vm *outer = vm_new("outer");
    struct vm *inner = moor_object_new(order_class);
    struct buf json = {.len = 0};
    moor_snapshot *s = moor_debug_snapshot();
    size_t from, to, i;

    (void)state;
    assert_non_null(s);
    assert_non_null(inner);
    if (!s->lock_checked) /* no class yet in this process (MOOR_DEBUG without locks) */
        assert_int_not_equal(
            find_lock_class(s, "object", "object mutex (one class per moor class)"), SIZE_MAX);
    moor_debug_snapshot_free(s);

    moor_debug_set_flags(flags | MOOR_DEBUG_LOCKS);
    moor_lock(outer);
    moor_lock_nested(inner, 1); /* another class: an order edge, no report */
    moor_unlock(inner);
    moor_unlock(outer);
    moor_debug_set_flags(flags);

    s = moor_debug_snapshot();
    assert_non_null(s);
    assert_true(s->lock_checked);
    from = find_lock_class(s, "test.vm", "object mutex");
    to = find_lock_class(s, "test.order", "object mutex");
    assert_int_not_equal(find_lock_class(s, "test.order/1", "object mutex"), SIZE_MAX);
    assert_int_equal(find_lock_class(s, "object", "object mutex (one class per moor class)"),
                     SIZE_MAX);
    assert_int_not_equal(from, SIZE_MAX);
    assert_int_not_equal(to, SIZE_MAX);
    for (i = 0; i < s->nlock_orders; i++)
        if (s->lock_orders[i].from == from && s->lock_orders[i].to == to)
            break;
    if (i == s->nlock_orders)
        fail_msg("no order test.vm -> test.order among %zu", s->nlock_orders);
    assert_int_equal(s->lock_orders[i].thread, gettid_());
    tu_assert_contains(s->lock_orders[i].from_site, "test-watchdog.c:");
    tu_assert_contains(s->lock_orders[i].to_site, "test-watchdog.c:");

    assert_int_equal(moor_debug_snapshot_write_json(s, buf_write, &json), 0);
    tu_assert_contains(json.text, "\"lock_checked\":true,\"lock_classes\":[{\"name\":");
    tu_assert_contains(json.text, "}],\"lock_orders\":[{\"from\":");
    tu_assert_contains(json.text, "{\"name\":\"test.order/1\",\"what\":\"object mutex\"}");
    tu_assert_contains(json.text, "{\"from\":\"test.vm\",\"to\":\"test.order\",\"thread\":");
    moor_debug_snapshot_free(s);
    moor_unref(inner);
    moor_unref(outer);
}

static void test_snapshot_under_own_lock(void **state)
{
    struct vm *vm = vm_new("locked");
    moor_snapshot *s;

    (void)state;
    moor_lock(vm);
    assert_int_equal(moor_job_begin(&vm->job, MOOR_JOB_QUERY, "test-own", NULL), 0);
    s = moor_debug_snapshot();
    assert_non_null(s);
    assert_non_null(find_job(s, vm, MOOR_DEBUG_JOB_HOLDS));
    moor_debug_snapshot_free(s);
    moor_job_end(&vm->job);
    moor_unlock(vm);
    moor_unref(vm);
}

/* Jobs leave the live list however they go: a copy's destroy does not
 * unlink the original, and an object freed with its job never destroyed
 * (reported) takes it off the list before its memory goes. */
static const moor_class *forgetful_class;

static void forgetful_dispose(void *obj)
{
    (void)obj; /* forgets moor_job_destroy() */
}

static size_t jobs_of(const void *obj)
{
    moor_snapshot *s = moor_debug_snapshot();
    size_t n = 0;

    assert_non_null(s);
    for (size_t i = 0; i < s->njobs; i++)
        n += s->jobs[i].object == obj;
    moor_debug_snapshot_free(s);
    return n;
}

static void test_live_list_survives_misuse(void **state)
{
    struct vm *vm = vm_new("kept");
    struct vm *bad = moor_object_new(forgetful_class);
    moor_job copy;

    (void)state;
    assert_non_null(bad);
    assert_int_equal(moor_job_init(&bad->job, bad, "forgot"), 0);
    hold(vm, MOOR_JOB_QUERY, "test-copy");
    copy = vm->job;
    copy.holders = copy.inline_holders;
    moor_job_destroy(&copy);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, vm, "1 holder(s)");
    assert_int_equal(jobs_of(vm), 1); /* the original is still listed */
    moor_unref(bad);
    tu_expect_report(MOOR_MISUSE_NOT_DESTROYED, bad, "must call moor_job_destroy()");
    assert_int_equal(jobs_of(vm), 1); /* the walk does not meet freed memory */
    release(vm);
    moor_unref(vm);
}

/* ---- the watchdog: jobs ------------------------------------------------------- */

static void test_watchdog_stuck_job(void **state)
{
    struct vm *vm = vm_new("stuck1");
    const tu_report *r;
    int64_t t0;
    pthread_t t;
    void *rc;
    char tid[96];

    (void)state;
    watchdog_on();
    t0 = tu_mono_ms();
    hold(vm, MOOR_JOB_MODIFY, "test-migrate");
    expect_report_by(t0, THRESHOLD_MS + 1000);
    r = tu_expect_report(MOOR_MISUSE_STUCK_JOB, vm, "job MODIFY on test.vm 'stuck1' held for");
    snprintf(tid, sizeof(tid), "by thread %d (api test-migrate)", gettid_());
    tu_assert_contains(r->message, tid);
    tu_assert_contains(r->message, "waiting: nobody");

    /* A waiter: a second episode, reported with the holder named. */
    t0 = tu_mono_ms();
    assert_int_equal(pthread_create(&t, NULL, query_waiter, vm), 0);
    expect_report_by(t0, THRESHOLD_MS + 1000);
    r = tu_expect_report(MOOR_MISUSE_STUCK_JOB, vm, "for job QUERY (api test-info) on test.vm");
    snprintf(tid, sizeof(tid), "held by MODIFY (api test-migrate, thread %d", gettid_());
    tu_assert_contains(r->message, tid);
    /* The watchdog looked many times since the hold was reported: once
     * per episode, so nothing more about it. */
    tu_expect_no_report();

    release(vm);
    tu_join(t, &rc);
    assert_int_equal((intptr_t)rc, 0);

    /* A new hold is a new episode. */
    t0 = tu_mono_ms();
    hold(vm, MOOR_JOB_QUERY, "test-again");
    expect_report_by(t0, THRESHOLD_MS + 1000);
    tu_expect_report(MOOR_MISUSE_STUCK_JOB, vm, "job QUERY on test.vm 'stuck1' held for");
    release(vm);
    watchdog_off();
    moor_unref(vm);
}

/* A hook may turn the watchdog off from the watchdog's own thread (which
 * cannot join itself: it ends after its look), and the watchdog may be
 * turned on again at once: one thread watches then, and reports. */
static atomic_int hook_calls;

static void switching_hook(moor_misuse kind, const void *subject, const char *message, void *opaque)
{
    tu_capture_hook(kind, subject, message, opaque);
    if (atomic_fetch_add(&hook_calls, 1) == 0)
        moor_debug_set_flags(moor_debug_flags() & ~(unsigned)MOOR_DEBUG_WATCHDOG);
}

static void test_watchdog_off_from_hook(void **state)
{
    struct vm *vm = vm_new("switch");

    (void)state;
    atomic_store(&hook_calls, 0);
    moor_debug_set_report(switching_hook, NULL);
    watchdog_on();
    hold(vm, MOOR_JOB_MODIFY, "test-switch");
    tu_wait_for(atomic_load(&hook_calls) == 1, "the first report");
    tu_wait_for(!(moor_debug_flags() & MOOR_DEBUG_WATCHDOG), "the hook to turn it off");
    tu_expect_report(MOOR_MISUSE_STUCK_JOB, vm, "'switch' held for");
    watchdog_on(); /* a new watcher: the hold is a new episode to it */
    tu_wait_for(atomic_load(&hook_calls) == 2, "the new watchdog's report");
    tu_expect_report(MOOR_MISUSE_STUCK_JOB, vm, "'switch' held for");
    release(vm);
    watchdog_off();
    moor_debug_set_report(tu_capture_hook, NULL);
    assert_int_equal(atomic_load(&hook_calls), 2);
    moor_unref(vm);
}

/* Short jobs, all well: nothing is reported. The barrier is a stuck job
 * on another object, started after them. */
static void test_watchdog_quiet_when_well(void **state)
{
    struct vm *busy = vm_new("busy"), *barrier = vm_new("barrier");
    int64_t end;

    (void)state;
    watchdog_on();
    end = tu_mono_ms() + 3 * THRESHOLD_MS;
    while (tu_mono_ms() < end) {
        hold(busy, MOOR_JOB_MODIFY, "test-short");
        release(busy);
    }
    hold(barrier, MOOR_JOB_MODIFY, "test-barrier");
    tu_wait_for(tu_unchecked_reports() > 0, "the barrier's report");
    tu_expect_report(MOOR_MISUSE_STUCK_JOB, barrier, "'barrier'");
    tu_expect_no_report();
    release(barrier);
    watchdog_off();
    moor_unref(busy);
    moor_unref(barrier);
}

/* ---- the watchdog: a monitor call to a peer that never answers ------------------ */

static ssize_t line_frame(void *opaque, const char *buf, size_t len, moor_error *err)
{
    const char *nl = memchr(buf, '\n', len);

    (void)opaque, (void)err;
    return nl ? nl - buf + 1 : 0;
}

static ssize_t line_encode(void *opaque, const void *request, uint64_t id, char *buf, size_t size,
                           moor_error *err)
{
    (void)opaque, (void)err;
    return snprintf(buf, size, "%" PRIu64 " %s\n", id, (const char *)request);
}

static int line_classify(void *opaque, const char *msg, size_t len, moor_monitor_message *out,
                         moor_error *err)
{
    (void)opaque, (void)len, (void)err;
    out->kind = msg[0] == 'E' ? MOOR_MONITOR_EVENT : MOOR_MONITOR_REPLY;
    out->id = strtoull(msg, NULL, 10);
    return 0;
}

static const char *line_name(void *opaque, const void *request)
{
    (void)opaque;
    return request;
}

struct caller {
    moor_monitor *mon;
    moor_error err;
    int rc;
};

static void *call_main(void *arg)
{
    struct caller *c = arg;

    c->rc = moor_monitor_call(c->mon, "query-status", NULL, FOREVER, &c->err);
    return NULL;
}

static bool call_pending(moor_monitor *mon)
{
    moor_monitor_stats st;

    return moor_monitor_get_stats(mon, &st) == 0 && st.pending == 1;
}

static void test_watchdog_stuck_call(void **state)
{
    const moor_monitor_codec codec = {line_frame, line_encode, line_classify,
                                      NULL,       line_name,   NULL};
    const moor_monitor_options opts = {.name = "qmp mute"};
    struct caller c = {.err = MOOR_ERROR_INIT};
    moor_error err = MOOR_ERROR_INIT;
    moor_loop *loop = moor_loop_new(&err);
    moor_snapshot *s;
    const tu_report *r;
    int sv[2];
    int64_t t0;
    pthread_t t;

    (void)state;
    assert_non_null(loop);
    assert_int_equal(moor_loop_thread_start(loop, &err), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    c.mon = moor_monitor_new(loop, sv[0], &codec, NULL, NULL, &opts, &err);
    assert_non_null(c.mon);
    watchdog_on();
    t0 = tu_mono_ms();
    assert_int_equal(pthread_create(&t, NULL, call_main, &c), 0);
    tu_wait_for(call_pending(c.mon), "the call to be pending");

    s = moor_debug_snapshot();
    assert_non_null(s);
    for (size_t i = 0; i < s->nmonitors; i++) {
        if (s->monitors[i].monitor != c.mon)
            continue;
        assert_string_equal(s->monitors[i].name, "qmp mute");
        assert_string_equal(s->monitors[i].state, "open");
        assert_int_equal(s->monitors[i].ncalls, 1);
        assert_string_equal(s->monitors[i].pending[0].command, "query-status");
        assert_true(s->monitors[i].pending[0].left_ms > 0);
    }
    moor_debug_snapshot_free(s);

    expect_report_by(t0, THRESHOLD_MS + 1000);
    r = tu_expect_report(MOOR_MISUSE_STUCK_CALL, c.mon,
                         "monitor 'qmp mute' (open): call 'query-status' (id 1) by thread");
    tu_assert_contains(r->message, "1 call(s) pending");
    moor_monitor_close(c.mon);
    tu_join(t, NULL);
    assert_int_equal(c.rc, -EPIPE);
    watchdog_off();
    moor_unref(c.mon);
    close(sv[1]);
    moor_loop_thread_stop(loop);
    moor_unref(loop);
}

/* ---- the watchdog: a thread asleep in a lock counter --------------------------------- */

static moor_lockcnt stuck_lc;

static void *lockcnt_locker(void *arg)
{
    (void)arg;
    moor_lockcnt_lock(&stuck_lc); /* sleeps until the test unlocks */
    moor_lockcnt_unlock(&stuck_lc);
    return NULL;
}

static bool lockcnt_sleeper(void)
{
    moor_snapshot *s = moor_debug_snapshot();
    bool found = false;

    for (size_t i = 0; s && i < s->nwaits; i++)
        found |= s->waits[i].subject == &stuck_lc;
    moor_debug_snapshot_free(s);
    return found;
}

static void test_watchdog_stuck_lockcnt(void **state)
{
    const tu_report *r;
    int64_t t0;
    pthread_t t;

    (void)state;
    moor_lockcnt_init(&stuck_lc);
    watchdog_on();
    moor_lockcnt_lock(&stuck_lc);
    t0 = tu_mono_ms();
    assert_int_equal(pthread_create(&t, NULL, lockcnt_locker, NULL), 0);
    tu_wait_for(lockcnt_sleeper(), "the second locker to sleep");
    expect_report_by(t0, THRESHOLD_MS + 1000);
    r = tu_expect_report(MOOR_MISUSE_STUCK_LOCKCNT, &stuck_lc, "asleep for");
    tu_assert_contains(r->message, "in lockcnt");
    moor_lockcnt_unlock(&stuck_lc);
    tu_join(t, NULL);
    tu_wait_for(!lockcnt_sleeper(), "the sleep record to go");
    watchdog_off();
    moor_lockcnt_destroy(&stuck_lc);
}

/* ---- bounded variants of the two unbounded teardown waits ------------------------ */

struct blocker {
    sem_t entered, go;
    atomic_bool freed;
};

static void blocking_timer(moor_loop *loop, uint64_t id, void *opaque)
{
    struct blocker *b = opaque;

    (void)loop, (void)id;
    sem_post(&b->entered);
    tu_sem_wait(&b->go);
}

static void blocker_free(void *opaque)
{
    struct blocker *b = opaque;

    atomic_store(&b->freed, true);
}

static void test_loop_remove_sync_deadline(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    moor_loop *loop = moor_loop_new(&err);
    struct blocker b;
    uint64_t id, idle;
    int64_t t0;

    (void)state;
    sem_init(&b.entered, 0, 0);
    sem_init(&b.go, 0, 0);
    atomic_init(&b.freed, false);
    assert_non_null(loop);
    assert_int_equal(moor_loop_thread_start(loop, &err), 0);
    assert_int_equal(
        moor_loop_add_timer(loop, 0, 1000, blocking_timer, &b, blocker_free, &id, &err), 0);
    assert_int_equal(moor_loop_add_timer(loop, 60000, 0, blocking_timer, &b, NULL, &idle, &err), 0);
    tu_sem_wait(&b.entered);
    t0 = tu_mono_ms();
    assert_int_equal(moor_loop_remove_sync_deadline(loop, id, 50), -ETIMEDOUT);
    assert_true(tu_mono_ms() - t0 >= 50);
    /* Removed all the same: no second removal, and free_fn waits for the
     * callback still running. */
    assert_int_equal(moor_loop_remove_sync_deadline(loop, id, 50), -ENOENT);
    assert_false(atomic_load(&b.freed));
    sem_post(&b.go);
    tu_wait_for(atomic_load(&b.freed), "free_fn after the callback returned");
    /* A handler not running: at once. */
    assert_int_equal(moor_loop_remove_sync_deadline(loop, idle, 0), 0);
    assert_int_equal(moor_loop_thread_stop(loop), 0);
    moor_unref(loop);
    sem_destroy(&b.entered);
    sem_destroy(&b.go);
}

static ssize_t line_frame(void *opaque, const char *buf, size_t len, moor_error *err);
static ssize_t line_encode(void *opaque, const void *request, uint64_t id, char *buf, size_t size,
                           moor_error *err);
static int line_classify(void *opaque, const char *msg, size_t len, moor_monitor_message *out,
                         moor_error *err);

static void blocking_event(moor_monitor *mon, void *owner, moor_monitor_message *msg, void *opaque)
{
    struct blocker *b = opaque;

    (void)mon, (void)owner, (void)msg;
    sem_post(&b->entered);
    tu_sem_wait(&b->go);
}

static void test_monitor_close_deadline(void **state)
{
    const moor_monitor_codec codec = {line_frame, line_encode, line_classify, NULL, NULL, NULL};
    moor_error err = MOOR_ERROR_INIT;
    moor_loop *loop = moor_loop_new(&err);
    struct blocker b;
    const moor_monitor_callbacks cb = {blocking_event, NULL, &b};
    moor_monitor *mon, *quiet;
    moor_monitor_stats st;
    int sv[2], sq[2];
    int64_t t0;

    (void)state;
    sem_init(&b.entered, 0, 0);
    sem_init(&b.go, 0, 0);
    assert_non_null(loop);
    assert_int_equal(moor_loop_thread_start(loop, &err), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sq), 0);
    mon = moor_monitor_new(loop, sv[0], &codec, &cb, NULL, NULL, &err);
    quiet = moor_monitor_new(loop, sq[0], &codec, &cb, NULL, NULL, &err);
    assert_non_null(mon);
    assert_non_null(quiet);
    assert_int_equal(write(sv[1], "E event\n", 8), 8);
    tu_sem_wait(&b.entered);
    t0 = tu_mono_ms();
    assert_int_equal(moor_monitor_close_deadline(mon, 50), -ETIMEDOUT);
    assert_true(tu_mono_ms() - t0 >= 50);
    assert_int_equal(moor_monitor_get_stats(mon, &st), 0);
    assert_int_equal(st.state, MOOR_MONITOR_CLOSED);
    assert_int_equal(moor_monitor_close_deadline(mon, 0), 0); /* closed already */
    sem_post(&b.go);
    assert_int_equal(moor_monitor_close_deadline(quiet, 0), 0);
    assert_int_equal(moor_monitor_close_deadline(NULL, 10), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "moor_monitor_close_deadline");
    moor_unref(mon);
    moor_unref(quiet);
    close(sv[1]);
    close(sq[1]);
    assert_int_equal(moor_loop_thread_stop(loop), 0);
    moor_unref(loop);
    sem_destroy(&b.entered);
    sem_destroy(&b.go);
}

/* ---- fork ----------------------------------------------------------------------- */

static struct vm *fork_vm;

static int child_unlocks(void *arg)
{
    struct vm *other;
    moor_snapshot *s;
    int bad = 0;

    (void)arg;
    /* The parent's thread held fork_vm's mutex across fork(): ours now. */
    if (!moor_lock_held(fork_vm))
        bad |= 1;
    moor_unlock(fork_vm);
    if (moor_lock_held(fork_vm))
        bad |= 2;
    moor_lock(fork_vm);
    moor_unlock(fork_vm);
    /* The child's own id, not the parent thread's. */
    other = moor_object_new(vm_class);
    moor_job_init(&other->job, other, "child");
    hold(other, MOOR_JOB_QUERY, "test-child");
    s = moor_debug_snapshot();
    if (!s || !find_job(s, other, MOOR_DEBUG_JOB_HOLDS) ||
        find_job(s, other, MOOR_DEBUG_JOB_HOLDS)->thread != gettid_())
        bad |= 4;
    moor_debug_snapshot_free(s);
    release(other);
    moor_unref(other);
    if (tu_unchecked_reports())
        bad |= 8;
    return bad;
}

static void test_fork_thread_id(void **state)
{
    tu_child c;

    (void)state;
    fork_vm = vm_new("forked");
    moor_lock(fork_vm);
    tu_fork(&c, child_unlocks, NULL);
    moor_unlock(fork_vm);
    assert_true(WIFEXITED(c.status));
    if (WEXITSTATUS(c.status) != 0)
        fail_msg("child failed checks 0x%x: %s", WEXITSTATUS(c.status), c.out);
    moor_unref(fork_vm);
}

/* The watchdog thread does not survive fork(): the child's first job
 * starts its own (the flag is inherited), which reports the child's
 * stuck job. */
static int child_watchdog(void *arg)
{
    int64_t end = tu_mono_ms() + 5000;
    struct vm *vm;
    int rc = 0;

    (void)arg;
    vm = moor_object_new(vm_class);
    moor_job_init(&vm->job, vm, "child-stuck");
    hold(vm, MOOR_JOB_MODIFY, "test-child");
    while (tu_unchecked_reports() == 0 && tu_mono_ms() < end)
        sched_yield();
    if (tu_unchecked_reports() == 0)
        rc = 1;
    else if (!strstr(tu_next_report()->message, "'child-stuck' held for"))
        rc = 2;
    watchdog_off(); /* the child's own thread: joined, as memcheck wants */
    release(vm);
    moor_unref(vm);
    return rc;
}

static void test_fork_watchdog(void **state)
{
    struct vm *vm;
    tu_child c;

    (void)state;
    if (TU_TSAN) /* TSan refuses threads started after a multi-threaded fork */
        skip();
    vm = vm_new("parent");
    watchdog_on(); /* the parent's watchdog runs when it forks */
    tu_fork(&c, child_watchdog, NULL);
    watchdog_off();
    assert_true(WIFEXITED(c.status));
    if (WEXITSTATUS(c.status) != 0)
        fail_msg("child: status %d: %s", WEXITSTATUS(c.status), c.out);
    moor_unref(vm);
}

/* ---- fork while the live lists are locked --------------------------------- */

#define FORK_JOBS   500
#define FORK_ROUNDS 20

static atomic_bool snapshots_stop;

/* Snapshots back to back: with FORK_JOBS live jobs the jobs' live-list
 * mutex is held most of the time. */
static void *snapshotter(void *arg)
{
    (void)arg;
    while (!atomic_load(&snapshots_stop))
        moor_debug_snapshot_free(moor_debug_snapshot());
    return NULL;
}

/* Sets a job up and takes a snapshot: both take the live lists' mutexes.
 * SIGALRM ends a child that hangs on one inherited locked (10 s: ample
 * under valgrind). */
static int child_sets_up_job(void *arg)
{
    struct vm *vm;
    moor_snapshot *s;

    (void)arg;
    alarm(10);
    vm = moor_object_new(vm_class);
    if (!vm || moor_job_init(&vm->job, vm, "child") != 0)
        return 1;
    s = moor_debug_snapshot();
    if (!s)
        return 2;
    moor_debug_snapshot_free(s);
    moor_unref(vm);
    /* Said in text: under valgrind the exit status also carries the leak
     * errors of the parent's objects and threads, copied into the child. */
    fprintf(stderr, "child set up a job\n");
    return 0;
}

static void test_fork_during_snapshot(void **state)
{
    struct vm *vms[FORK_JOBS];
    pthread_t t;
    tu_child c;

    (void)state;
    for (int i = 0; i < FORK_JOBS; i++)
        vms[i] = vm_new(NULL);
    atomic_store(&snapshots_stop, false);
    assert_int_equal(pthread_create(&t, NULL, snapshotter, NULL), 0);
    for (int i = 0; i < FORK_ROUNDS; i++) {
        tu_fork(&c, child_sets_up_job, NULL);
        if (!WIFEXITED(c.status) || !strstr(c.out, "child set up a job"))
            fail_msg("round %d: child %s %d: %s", i,
                     WIFSIGNALED(c.status) ? "killed by signal" : "exited",
                     WIFSIGNALED(c.status) ? WTERMSIG(c.status) : WEXITSTATUS(c.status), c.out);
    }
    atomic_store(&snapshots_stop, true);
    tu_join(t, NULL);
    for (int i = 0; i < FORK_JOBS; i++)
        moor_unref(vms[i]);
}

int main(void)
{
    moor_error err = MOOR_ERROR_INIT;
    const struct CMUnitTest tests[] = {
        TU_TEST(test_parse_watchdog_ms),
        TU_TEST(test_snapshot_holder_and_waiter),
        TU_TEST(test_snapshot_under_own_lock),
        TU_TEST(test_snapshot_lock_classes),
        TU_TEST(test_live_list_survives_misuse),
        TU_TEST(test_watchdog_stuck_job),
        TU_TEST(test_watchdog_off_from_hook),
        TU_TEST(test_watchdog_quiet_when_well),
        TU_TEST(test_watchdog_stuck_call),
        TU_TEST(test_watchdog_stuck_lockcnt),
        TU_TEST(test_loop_remove_sync_deadline),
        TU_TEST(test_monitor_close_deadline),
        TU_TEST(test_fork_thread_id),
        TU_TEST(test_fork_during_snapshot),
        TU_TEST(test_fork_watchdog), /* last: a trailing comment keeps one per line */
    };

    vm_class =
        moor_class_new("test.vm", moor_lockable_class(), sizeof(struct vm), vm_dispose, &err);
    forgetful_class = moor_class_new("test.forgetful", moor_lockable_class(), sizeof(struct vm),
                                     forgetful_dispose, &err);
    order_class =
        moor_class_new("test.order", moor_lockable_class(), sizeof(struct vm), NULL, &err);
    if (!vm_class || !forgetful_class || !order_class)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
