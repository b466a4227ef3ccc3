/* SPDX-License-Identifier: MIT */
/*
 * test-lockdep.c - MOOR_DEBUG=locks and MOOR_DEBUG=refs.
 *
 * Each report kind is provoked by a program that would deadlock or break
 * rule 4 under another interleaving, and the report must name the sites
 * involved (this file's "test-lockdep.c:LINE", recorded with __LINE__ on
 * the line of the call). The lock-class graph lives for the process, so
 * every test uses classes of its own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/socket.h>

#include <moor/debug.h>
#include <moor/job.h>
#include <moor/lockcnt.h>
#include <moor/loop.h>
#include <moor/monitor.h>
#include <moor/object.h>

#include "qmp.h"
#include "test-util.h"

/* These tests invert lock orders on purpose (never at the same time), which
 * is what moor's checker must report; ThreadSanitizer's own deadlock
 * detector reports the same inversions (it agrees with moor), so it is off
 * in this binary only. Everything else TSan checks stays on. */
#if TU_TSAN
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "detect_deadlocks=0";
}
#endif

struct vm {
    moor_lockable parent;
    moor_job job;
};

static void vm_dispose(void *obj)
{
    moor_job_destroy(&((struct vm *)obj)->job);
}

/* A lockable class of its own (with a job in each object when @job). */
static const moor_class *class_of(const char *name, bool job)
{
    moor_error err = MOOR_ERROR_INIT;
    const moor_class *k = moor_class_new(name, moor_lockable_class(), sizeof(struct vm),
                                         job ? vm_dispose : NULL, &err);

    if (!k)
        fail_msg("moor_class_new(%s): %s", name, moor_error_message(&err));
    return k;
}

static struct vm *vm_new(const moor_class *k, bool job)
{
    struct vm *vm = moor_object_new(k);

    assert_non_null(vm);
    if (job)
        assert_int_equal(moor_job_init(&vm->job, vm, "vm"), 0);
    return vm;
}

/* "test-lockdep.c:LINE" */
static const char *site(int line, char *buf, size_t size)
{
    snprintf(buf, size, "test-lockdep.c:%d", line);
    return buf;
}

/* tu_expect_report(), and with TEST_LOCKDEP_SHOW=1 in the environment the
 * report printed as the default hook would print it (docs/debug.md quotes
 * these). */
static const tu_report *expect_report(moor_misuse kind, const void *subject, const char *text)
{
    const tu_report *r = tu_expect_report(kind, subject, text);

    if (getenv("TEST_LOCKDEP_SHOW"))
        fprintf(stderr, "moor: %s\n", r->message);
    return r;
}

static void expect_sites(const tu_report *r, const int *lines, size_t n)
{
    char buf[64];

    for (size_t i = 0; i < n; i++)
        tu_assert_contains(r->message, site(lines[i], buf, sizeof(buf)));
}

static int setup_locks(void **state)
{
    tu_setup(state);
    moor_debug_set_flags(moor_debug_flags() | MOOR_DEBUG_LOCKS);
    return 0;
}

#define TL_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup_locks, tu_teardown)

/* ---- (a) an order seen both ways ----------------------------------------- */

struct pair {
    struct vm *first, *second;
    int line_first, line_second;
};

/* Lock @p->first, then @p->second as a declared nesting, then release. */
static void *take_in_order(void *arg)
{
    struct pair *p = arg;

    p->line_first = __LINE__, moor_lock(p->first);
    p->line_second = __LINE__, moor_lock_nested(p->second, 1);
    moor_unlock(p->second);
    moor_unlock(p->first);
    return NULL;
}

/* Thread 1 takes domain then image; later thread 2 takes image then
 * domain. They never overlap, so nothing deadlocks here; overlapped, each
 * would hold the lock the other waits for. */
static void test_order_inversion(void **state)
{
    const moor_class *dk = class_of("ld.order.domain", false);
    const moor_class *ik = class_of("ld.order.image", false);
    struct vm *dom = vm_new(dk, false), *img = vm_new(ik, false);
    struct pair t1 = {dom, img, 0, 0}, t2 = {img, dom, 0, 0};
    const tu_report *r;

    (void)state;
    tu_in_thread(take_in_order, &t1);
    tu_expect_no_report();
    tu_in_thread(take_in_order, &t2);
    r = expect_report(MOOR_MISUSE_LOCK_ORDER, dom, "lock order inversion");
    tu_assert_contains(r->message, "takes 'ld.order.domain'");
    tu_assert_contains(r->message, "while holding 'ld.order.image'");
    /* This thread's two sites and the two of the earlier, opposite order. */
    expect_sites(r, (int[]){t2.line_second, t2.line_first, t1.line_first, t1.line_second}, 4);
    /* Known now: the same inversion again is not reported twice. */
    tu_in_thread(take_in_order, &t2);
    tu_expect_no_report();
    moor_unref(dom);
    moor_unref(img);
}

struct mixed {
    struct vm *obj;
    moor_lockcnt *lc;
    int line;
};

static void *object_then_lockcnt(void *arg)
{
    struct mixed *m = arg;

    m->line = __LINE__, moor_lock(m->obj);
    moor_lockcnt_lock(m->lc);
    moor_lockcnt_unlock(m->lc);
    moor_unlock(m->obj);
    return NULL;
}

static void *lockcnt_then_object(void *arg)
{
    struct mixed *m = arg;

    moor_lockcnt_lock(m->lc);
    m->line = __LINE__, moor_lock(m->obj);
    moor_unlock(m->obj);
    moor_lockcnt_unlock(m->lc);
    return NULL;
}

/* Internal locks are classes too: an object mutex and a lock counter's
 * mutex side taken both ways. */
static void test_order_inversion_lockcnt(void **state)
{
    struct vm *obj = vm_new(class_of("ld.order.owner", false), false);
    moor_lockcnt lc;
    struct mixed t1 = {obj, &lc, 0}, t2 = {obj, &lc, 0};
    const tu_report *r;

    (void)state;
    moor_lockcnt_init(&lc);
    tu_in_thread(object_then_lockcnt, &t1);
    tu_in_thread(lockcnt_then_object, &t2);
    r = expect_report(MOOR_MISUSE_LOCK_ORDER, obj, "lock order inversion");
    tu_assert_contains(r->message, "'moor_lockcnt'");
    tu_assert_contains(r->message, "'ld.order.owner'");
    expect_sites(r, (int[]){t1.line, t2.line}, 2);
    moor_lockcnt_destroy(&lc);
    moor_unref(obj);
}

/* ---- (b) rule 4 and the nesting annotation ------------------------------- */

static void test_nested_object_mutex(void **state)
{
    const moor_class *k = class_of("ld.nest", false);
    struct vm *a = vm_new(k, false), *b = vm_new(k, false);
    int la, lb;
    const tu_report *r;

    (void)state;
    /* Two threads doing this with a and b swapped deadlock. */
    la = __LINE__, moor_lock(a);
    lb = __LINE__, moor_lock(b);
    r = expect_report(MOOR_MISUSE_LOCK_NESTED, b, "rule 4");
    tu_assert_contains(r->message, "class 'ld.nest', subclass 0");
    expect_sites(r, (int[]){la, lb}, 2);
    moor_unlock(b);
    moor_unlock(a);

    /* The declared nesting is legal, once per subclass. */
    moor_lock(a);
    moor_lock_nested(b, 1);
    tu_expect_no_report();
    moor_unlock(b);
    moor_unlock(a);

    /* A try-lock never waits: not a rule-4 breach. */
    moor_lock(a);
    assert_int_equal(moor_lock_try(b), 0);
    tu_expect_no_report();
    moor_unlock(b);
    moor_unlock(a);
    moor_unref(a);
    moor_unref(b);
}

/* Within one class the subclass orders the nesting: "0 then 1" is legal,
 * a second lock at a subclass already held is not (two threads doing it
 * with the objects swapped deadlock). */
static void test_nested_same_subclass(void **state)
{
    const moor_class *k = class_of("ld.nest.sub", false);
    struct vm *parent = vm_new(k, false), *child = vm_new(k, false);
    int l1, l2;
    const tu_report *r;

    (void)state;
    moor_lock(parent);
    moor_lock_nested(child, 1);
    moor_unlock(child);
    moor_unlock(parent);
    tu_expect_no_report();

    l1 = __LINE__, moor_lock_nested(child, 1);
    l2 = __LINE__, moor_lock_nested(parent, 1);
    r = expect_report(MOOR_MISUSE_LOCK_NESTED, parent, "subclass 1");
    expect_sites(r, (int[]){l1, l2}, 2);
    moor_unlock(parent);
    moor_unlock(child);
    moor_unref(parent);
    moor_unref(child);
}

/* ---- (c) blocking calls holding a lock ------------------------------------- */

struct job_holder {
    struct vm *vm;
    sem_t held, release;
};

/* Hold a MODIFY job on h->vm until told to let go. */
static void *hold_job(void *arg)
{
    struct job_holder *h = arg;

    moor_lock(h->vm);
    if (moor_job_begin(&h->vm->job, MOOR_JOB_MODIFY, "holder", NULL) != 0)
        abort();
    moor_unlock(h->vm);
    sem_post(&h->held);
    while (sem_wait(&h->release) != 0)
        ;
    moor_lock(h->vm);
    moor_job_end(&h->vm->job);
    moor_unlock(h->vm);
    return NULL;
}

/* A job wait releases its own object's mutex, not another's: every thread
 * that wants @img waits as long as this job wait does. */
static void test_job_wait_holding_another(void **state)
{
    struct vm *img = vm_new(class_of("ld.block.image", false), false);
    struct job_holder h = {.vm = vm_new(class_of("ld.block.domain", true), true)};
    pthread_t t;
    int li;
    const tu_report *r;

    (void)state;
    sem_init(&h.held, 0, 0);
    sem_init(&h.release, 0, 0);
    assert_int_equal(pthread_create(&t, NULL, hold_job, &h), 0);
    tu_sem_wait(&h.held);

    li = __LINE__, moor_lock(img);
    moor_lock_nested(h.vm, 1);
    assert_int_equal(moor_job_begin_timeout(&h.vm->job, MOOR_JOB_MODIFY, "waiter", 10, NULL),
                     -ETIMEDOUT);
    r = expect_report(MOOR_MISUSE_LOCK_BLOCKING, img, "a job wait");
    tu_assert_contains(r->message, "'ld.block.image'");
    expect_sites(r, (int[]){li}, 1);
    moor_unlock(h.vm);
    moor_unlock(img);

    /* Holding only the job's own object is the normal case. */
    moor_lock(h.vm);
    assert_int_equal(moor_job_begin_timeout(&h.vm->job, MOOR_JOB_MODIFY, "waiter", 10, NULL),
                     -ETIMEDOUT);
    moor_unlock(h.vm);
    tu_expect_no_report();
    sem_post(&h.release);
    tu_join(t, NULL);
    sem_destroy(&h.held);
    sem_destroy(&h.release);
    moor_unref(img);
    moor_unref(h.vm);
}

static void on_timer(moor_loop *loop, uint64_t id, void *opaque)
{
    (void)loop, (void)id, (void)opaque;
}

/* remove_sync waits for a callback in flight, which may want the mutex. */
static void test_remove_sync_holding(void **state)
{
    struct vm *obj = vm_new(class_of("ld.block.owner", false), false);
    moor_loop *loop = moor_loop_new(NULL);
    uint64_t id;
    int l;
    const tu_report *r;

    (void)state;
    assert_non_null(loop);
    assert_int_equal(moor_loop_add_timer(loop, 60000, 0, on_timer, NULL, NULL, &id, NULL), 0);
    l = __LINE__, moor_lock(obj);
    assert_int_equal(moor_loop_remove_sync(loop, id), 0);
    r = expect_report(MOOR_MISUSE_LOCK_BLOCKING, obj, "moor_loop_remove_sync");
    expect_sites(r, (int[]){l}, 1);
    moor_unlock(obj);
    moor_unref(loop);
    moor_unref(obj);
}

/* ---- (d) monitors ----------------------------------------------------------- */

struct mon_fx {
    moor_loop *loop;
    moor_monitor *mon;
    int sv[2];
};

static void mon_start(struct mon_fx *fx)
{
    const moor_monitor_codec codec = vmd_qmp_codec();
    moor_error err = MOOR_ERROR_INIT;

    fx->loop = moor_loop_new(&err);
    assert_non_null(fx->loop);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fx->sv), 0);
    fx->mon = moor_monitor_new(fx->loop, fx->sv[0], &codec, NULL, NULL, NULL, &err);
    if (!fx->mon)
        fail_msg("moor_monitor_new: %s", moor_error_message(&err));
}

static void mon_stop(struct mon_fx *fx)
{
    moor_monitor_close(fx->mon);
    moor_clear(&fx->mon);
    moor_clear(&fx->loop);
    close(fx->sv[1]);
}

/* moor_monitor_enter unlocks its own object only: a second object's mutex
 * would stay held across the peer's round trip. */
static void test_monitor_enter_holding_second(void **state)
{
    const moor_class *k = class_of("ld.mon.domain", false);
    struct vm *other = vm_new(k, false), *dom = vm_new(k, false);
    struct vmd_qmp_cmd cmd = {"query-status", NULL};
    struct mon_fx fx;
    int lo;
    const tu_report *r;

    (void)state;
    mon_start(&fx);
    lo = __LINE__, moor_lock(other);
    moor_lock_nested(dom, 1);
    assert_int_equal(moor_monitor_enter(fx.mon, dom), 0);
    r = expect_report(MOOR_MISUSE_MONITOR_LOCKED, fx.mon, "monitor entered while holding");
    tu_assert_contains(r->message, "'ld.mon.domain'");
    expect_sites(r, (int[]){lo}, 1);

    /* (c) again: the call blocks on the peer with @other still locked. */
    assert_int_equal(moor_monitor_call(fx.mon, &cmd, NULL, 10, NULL), -ETIMEDOUT);
    r = expect_report(MOOR_MISUSE_LOCK_BLOCKING, other, "moor_monitor_call");
    expect_sites(r, (int[]){lo}, 1);
    /* Exit relocks @dom, with @other still held: rule 4 again. */
    assert_int_equal(moor_monitor_exit(fx.mon, dom), 0);
    expect_report(MOOR_MISUSE_LOCK_NESTED, dom, "rule 4");
    moor_unlock(dom);
    moor_unlock(other);

    /* The normal pattern reports nothing. */
    moor_lock(dom);
    assert_int_equal(moor_monitor_enter(fx.mon, dom), 0);
    assert_int_equal(moor_monitor_call(fx.mon, &cmd, NULL, 10, NULL), -ETIMEDOUT);
    assert_int_equal(moor_monitor_exit(fx.mon, dom), 0);
    moor_unlock(dom);
    tu_expect_no_report();
    mon_stop(&fx);
    moor_unref(other);
    moor_unref(dom);
}

/* ---- (e) unlock out of order ---------------------------------------------- */

static void test_unlock_out_of_order(void **state)
{
    const moor_class *k = class_of("ld.unlock", false);
    struct vm *outer = vm_new(k, false), *inner = vm_new(k, false);
    int lo, li, lu;
    const tu_report *r;

    (void)state;
    lo = __LINE__, moor_lock(outer);
    li = __LINE__, moor_lock_nested(inner, 1);
    lu = __LINE__, moor_unlock(outer);
    r = expect_report(MOOR_MISUSE_UNLOCK_ORDER, outer, "unlock out of order");
    expect_sites(r, (int[]){lo, li, lu}, 3);
    moor_unlock(inner);
    tu_expect_no_report();
    moor_unref(outer);
    moor_unref(inner);
}

/* ---- off ------------------------------------------------------------------- */

static void test_off_reports_nothing(void **state)
{
    const moor_class *k = class_of("ld.off", false);
    struct vm *a = vm_new(k, false), *b = vm_new(k, false);

    (void)state;
    moor_debug_set_flags(moor_debug_flags() & ~(unsigned)MOOR_DEBUG_LOCKS);
    moor_lock(a);
    moor_lock(b);
    moor_unlock(a);
    moor_unlock(b);
    /* Turned on while nothing is held: the checker starts clean. */
    moor_debug_set_flags(moor_debug_flags() | MOOR_DEBUG_LOCKS);
    moor_lock(a);
    moor_unlock(a);
    tu_expect_no_report();
    moor_unref(a);
    moor_unref(b);
}

/* ---- refs -------------------------------------------------------------------- */

static void *volatile leaked;

static int child_leak_names_holder(void *arg)
{
    const moor_class *k = arg;
    int dropped, kept;

    moor_debug_set_report(NULL, NULL);
    moor_debug_set_flags(MOOR_DEBUG_LEAKS | MOOR_DEBUG_REFS);
    leaked = moor_object_new(k);
    moor_ref(leaked);
    moor_unref(leaked);
    dropped = __LINE__, moor_ref(leaked);
    moor_unref(leaked);                /* drops this thread's newest: the one just taken */
    kept = __LINE__, moor_ref(leaked); /* never dropped */
    fprintf(stderr, "dropped=%d kept=%d\n", dropped, kept);
    exit(0); /* the leak report runs at exit */
}

static void test_refs_leak_report_names_holder(void **state)
{
    const moor_class *k = class_of("ld.refs.leaky", false);
    int dropped = 0, kept = 0;
    char buf[64];
    tu_child c;

    (void)state;
    tu_fork(&c, child_leak_names_holder, (void *)k);
    tu_assert_child_exited(&c, 0);
    if (getenv("TEST_LOCKDEP_SHOW"))
        fputs(c.out, stderr);
    assert_int_equal(sscanf(c.out, "dropped=%d kept=%d", &dropped, &kept), 2);
    tu_assert_contains(c.out, "leak: 1 object(s) of class 'ld.refs.leaky' still alive");
    tu_assert_contains(c.out, "(class 'ld.refs.leaky') refs=2, held by: ");
    /* The creator's reference, named by the address that called
     * moor_object_new (a static function here: binary+offset). */
    tu_assert_contains(c.out, "held by: test-lockdep+0x");
    tu_assert_contains(c.out, site(kept, buf, sizeof(buf)));
    tu_assert_not_contains(c.out, site(dropped, buf, sizeof(buf)));
}

static void test_refs_dump(void **state)
{
    const moor_class *k = class_of("ld.refs.dump", false);
    char *text = NULL, buf[64];
    size_t len = 0;
    struct vm *obj, *untraced;
    FILE *f;
    int l;

    (void)state;
    moor_debug_set_flags(moor_debug_flags() & ~(unsigned)MOOR_DEBUG_REFS);
    untraced = vm_new(k, false);
    moor_debug_set_flags(moor_debug_flags() | MOOR_DEBUG_REFS);
    obj = vm_new(k, false);
    l = __LINE__, moor_ref(obj);
    f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(moor_debug_dump_refs(obj, f), 2);
    assert_int_equal(moor_debug_dump_refs(untraced, f), -ENOENT);
    assert_int_equal(moor_debug_dump_refs(NULL, f), -EINVAL);
    fclose(f);
    if (getenv("TEST_LOCKDEP_SHOW"))
        fputs(text, stderr);
    tu_assert_contains(text, "(class 'ld.refs.dump') refs=2:");
    tu_assert_contains(text, "reference taken at test-lockdep+0x");
    tu_assert_contains(text, site(l, buf, sizeof(buf)));
    free(text);
    moor_unref(obj);
    moor_unref(obj);
    moor_unref(untraced);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TL_TEST(test_order_inversion),
        TL_TEST(test_order_inversion_lockcnt),
        TL_TEST(test_nested_object_mutex),
        TL_TEST(test_nested_same_subclass),
        TL_TEST(test_job_wait_holding_another),
        TL_TEST(test_remove_sync_holding),
        TL_TEST(test_monitor_enter_holding_second),
        TL_TEST(test_unlock_out_of_order),
        TL_TEST(test_off_reports_nothing),
        TU_TEST(test_refs_leak_report_names_holder),
        TU_TEST(test_refs_dump),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
