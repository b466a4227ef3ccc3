/* SPDX-License-Identifier: MIT */
/*
 * test-ref.c - the saturating reference count: normal counting, every
 * saturation case and its single report, dec_and_lock on both paths, and
 * a few concurrent runs for ThreadSanitizer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include <moor/debug.h>
#include <moor/ref.h>

#include "test-util.h"

#define THREADS 4

/* ---- helpers ------------------------------------------------------------ */

static void *trylock_from_thread(void *mutex)
{
    int rc = pthread_mutex_trylock(mutex);

    if (rc == 0)
        pthread_mutex_unlock(mutex);
    return (void *)(intptr_t)rc;
}

/* Whether some thread holds @m, asked from a different thread so the
 * answer does not depend on the mutex type. */
static bool mutex_is_held(pthread_mutex_t *m)
{
    int rc = (int)(intptr_t)tu_in_thread(trylock_from_thread, m);

    assert_true(rc == 0 || rc == EBUSY);
    return rc == EBUSY;
}

/* ---- normal counting ------------------------------------------------------ */

static void test_init_and_read(void **state)
{
    moor_refcnt a = MOOR_REFCNT_INIT;
    moor_refcnt b;

    (void)state;
    moor_refcnt_init(&b);
    assert_int_equal(moor_refcnt_read(&a), 1);
    assert_int_equal(moor_refcnt_read(&b), 1);
    assert_false(moor_refcnt_is_saturated(&a));
}

static void test_inc_dec_and_test(void **state)
{
    moor_refcnt r = MOOR_REFCNT_INIT;

    (void)state;
    moor_refcnt_inc(&r);
    moor_refcnt_inc(&r);
    assert_int_equal(moor_refcnt_read(&r), 3);
    assert_false(moor_refcnt_dec_and_test(&r));
    assert_false(moor_refcnt_dec_and_test(&r));
    assert_int_equal(moor_refcnt_read(&r), 1);
    assert_true(moor_refcnt_dec_and_test(&r));
    assert_int_equal(moor_refcnt_read(&r), 0);
    tu_expect_no_report();
}

static void test_inc_not_zero(void **state)
{
    moor_refcnt r = MOOR_REFCNT_INIT;

    (void)state;
    assert_true(moor_refcnt_inc_not_zero(&r));
    assert_int_equal(moor_refcnt_read(&r), 2);
    assert_false(moor_refcnt_dec_and_test(&r));
    assert_true(moor_refcnt_dec_and_test(&r));

    /* At zero: refused, silently, and the counter stays at zero. */
    assert_false(moor_refcnt_inc_not_zero(&r));
    assert_int_equal(moor_refcnt_read(&r), 0);
    assert_false(moor_refcnt_is_saturated(&r));
    tu_expect_no_report();
}

static void test_near_int_max_is_fine(void **state)
{
    moor_refcnt r = {INT_MAX - 2};

    (void)state;
    moor_refcnt_inc(&r);
    assert_true(moor_refcnt_inc_not_zero(&r));
    assert_int_equal(moor_refcnt_read(&r), INT_MAX);
    assert_false(moor_refcnt_is_saturated(&r));
    assert_false(moor_refcnt_dec_and_test(&r));
    assert_int_equal(moor_refcnt_read(&r), INT_MAX - 1);
    tu_expect_no_report();
}

/* ---- saturation ------------------------------------------------------------ */

static void test_inc_from_zero_saturates(void **state)
{
    moor_refcnt r = {0};

    (void)state;
    moor_refcnt_inc(&r);
    assert_true(moor_refcnt_is_saturated(&r));
    assert_int_equal(moor_refcnt_read(&r), MOOR_REFCNT_SATURATED);
    tu_expect_report(MOOR_MISUSE_REF_INC_FROM_ZERO, &r, "after the last unref");
    tu_expect_no_report();
}

static void test_dec_below_zero_saturates(void **state)
{
    moor_refcnt r = MOOR_REFCNT_INIT;

    (void)state;
    assert_true(moor_refcnt_dec_and_test(&r));
    tu_expect_no_report();

    /* One unref too many: not "last" again, parked, reported. */
    assert_false(moor_refcnt_dec_and_test(&r));
    assert_int_equal(moor_refcnt_read(&r), MOOR_REFCNT_SATURATED);
    tu_expect_report(MOOR_MISUSE_REF_UNDERFLOW, &r, "below zero");
}

static void test_negative_count_dec_is_underflow(void **state)
{
    moor_refcnt r = {-3};

    (void)state;
    assert_false(moor_refcnt_dec_and_test(&r));
    assert_int_equal(moor_refcnt_read(&r), MOOR_REFCNT_SATURATED);
    tu_expect_report(MOOR_MISUSE_REF_UNDERFLOW, &r, "(was -3)");
}

static void test_overflow_at_int_max(void **state)
{
    moor_refcnt r = {INT_MAX};

    (void)state;
    moor_refcnt_inc(&r);
    assert_int_equal(moor_refcnt_read(&r), MOOR_REFCNT_SATURATED);
    const tu_report *rep = tu_expect_report(MOOR_MISUSE_REF_OVERFLOW, &r, "overflow");
    char was[32];
    snprintf(was, sizeof(was), "(was %d)", INT_MAX);
    tu_assert_contains(rep->message, was);
}

static void test_overflow_via_inc_not_zero(void **state)
{
    moor_refcnt r = {INT_MAX};

    (void)state;
    /* The caller gets its reference (a saturated counter counts as alive). */
    assert_true(moor_refcnt_inc_not_zero(&r));
    assert_int_equal(moor_refcnt_read(&r), MOOR_REFCNT_SATURATED);
    tu_expect_report(MOOR_MISUSE_REF_OVERFLOW, &r, "overflow");
}

static void test_saturated_stays_saturated_and_reports_once(void **state)
{
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    moor_refcnt r = {0};

    (void)state;
    moor_refcnt_inc(&r);
    tu_expect_report(MOOR_MISUSE_REF_INC_FROM_ZERO, &r, "saturated");

    for (int i = 0; i < 1000; i++)
        moor_refcnt_inc(&r);
    for (int i = 0; i < 3000; i++)
        assert_false(moor_refcnt_dec_and_test(&r));
    for (int i = 0; i < 10; i++)
        assert_true(moor_refcnt_inc_not_zero(&r));
    assert_false(moor_refcnt_dec_and_lock(&r, &m));
    assert_false(mutex_is_held(&m));

    assert_true(moor_refcnt_is_saturated(&r));
    assert_int_equal(moor_refcnt_read(&r), MOOR_REFCNT_SATURATED);
    tu_expect_no_report();
    pthread_mutex_destroy(&m);
}

/* Concurrent misuse of one counter: every thread keeps hammering a
 * saturated counter; exactly one report comes out in total. */
struct hammer {
    moor_refcnt r;
    pthread_barrier_t start;
};

static void *hammer_thread(void *arg)
{
    struct hammer *h = arg;

    pthread_barrier_wait(&h->start);
    for (int i = 0; i < 2000; i++) {
        moor_refcnt_inc(&h->r);
        moor_refcnt_dec_and_test(&h->r);
        moor_refcnt_dec_and_test(&h->r);
    }
    return NULL;
}

static void test_concurrent_saturated_reports_once(void **state)
{
    struct hammer h = {.r = {0}};
    pthread_t t[THREADS];

    (void)state;
    pthread_barrier_init(&h.start, NULL, THREADS + 1);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer_thread, &h), 0);
    /* The first misuse happens before anyone starts: the counter is at 0. */
    moor_refcnt_inc(&h.r);
    pthread_barrier_wait(&h.start);
    for (int i = 0; i < THREADS; i++)
        tu_join(t[i], NULL);
    pthread_barrier_destroy(&h.start);

    assert_true(moor_refcnt_is_saturated(&h.r));
    tu_expect_report(MOOR_MISUSE_REF_INC_FROM_ZERO, &h.r, "saturated");
    tu_expect_no_report();
}

/* ---- dec_and_lock --------------------------------------------------------- */

static void test_dec_and_lock_not_last(void **state)
{
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    moor_refcnt r = {3};

    (void)state;
    assert_false(moor_refcnt_dec_and_lock(&r, &m));
    assert_int_equal(moor_refcnt_read(&r), 2);
    assert_false(mutex_is_held(&m));
    assert_false(moor_refcnt_dec_and_lock(&r, &m));
    assert_int_equal(moor_refcnt_read(&r), 1);
    assert_false(mutex_is_held(&m));
    tu_expect_no_report();
    pthread_mutex_destroy(&m);
}

static void test_dec_and_lock_last(void **state)
{
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    moor_refcnt r = MOOR_REFCNT_INIT;

    (void)state;
    assert_true(moor_refcnt_dec_and_lock(&r, &m));
    assert_int_equal(moor_refcnt_read(&r), 0);
    assert_true(mutex_is_held(&m));
    pthread_mutex_unlock(&m);
    assert_false(mutex_is_held(&m));
    tu_expect_no_report();
    pthread_mutex_destroy(&m);
}

static void test_dec_and_lock_below_zero(void **state)
{
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    moor_refcnt r = {0};

    (void)state;
    assert_false(moor_refcnt_dec_and_lock(&r, &m));
    assert_false(mutex_is_held(&m));
    assert_int_equal(moor_refcnt_read(&r), MOOR_REFCNT_SATURATED);
    tu_expect_report(MOOR_MISUSE_REF_UNDERFLOW, &r, "below zero");
    pthread_mutex_destroy(&m);
}

/* N owners drop concurrently with dec_and_lock: exactly one sees true, and
 * it sees the count at zero while holding the mutex. */
struct dal {
    moor_refcnt r;
    pthread_mutex_t m;
    pthread_barrier_t start;
    atomic_int winners;
    int zero_under_lock;
};

static void *dal_thread(void *arg)
{
    struct dal *d = arg;

    pthread_barrier_wait(&d->start);
    if (moor_refcnt_dec_and_lock(&d->r, &d->m)) {
        atomic_fetch_add(&d->winners, 1);
        d->zero_under_lock = moor_refcnt_read(&d->r) == 0;
        pthread_mutex_unlock(&d->m);
    }
    return NULL;
}

static void test_dec_and_lock_concurrent(void **state)
{
    (void)state;
    for (int round = 0; round < 50; round++) {
        struct dal d = {.r = {THREADS}, .m = PTHREAD_MUTEX_INITIALIZER};
        pthread_t t[THREADS];

        atomic_init(&d.winners, 0);
        pthread_barrier_init(&d.start, NULL, THREADS);
        for (int i = 0; i < THREADS; i++)
            assert_int_equal(pthread_create(&t[i], NULL, dal_thread, &d), 0);
        for (int i = 0; i < THREADS; i++)
            tu_join(t[i], NULL);
        pthread_barrier_destroy(&d.start);
        assert_int_equal(atomic_load(&d.winners), 1);
        assert_true(d.zero_under_lock);
        assert_false(mutex_is_held(&d.m));
        pthread_mutex_destroy(&d.m);
    }
    tu_expect_no_report();
}

/* ---- concurrent counting ---------------------------------------------------- */

#define CYCLES 5000

struct counting {
    moor_refcnt r;
    pthread_barrier_t start;
    atomic_int lasts;
    atomic_int lookups_ok;
};

static void *inc_dec_thread(void *arg)
{
    struct counting *c = arg;

    pthread_barrier_wait(&c->start);
    for (int i = 0; i < CYCLES; i++)
        moor_refcnt_inc(&c->r);
    for (int i = 0; i < CYCLES; i++) {
        if (moor_refcnt_dec_and_test(&c->r))
            atomic_fetch_add(&c->lasts, 1);
    }
    return NULL;
}

static void test_concurrent_inc_dec_is_exact(void **state)
{
    struct counting c = {.r = MOOR_REFCNT_INIT};
    pthread_t t[THREADS];

    (void)state;
    atomic_init(&c.lasts, 0);
    pthread_barrier_init(&c.start, NULL, THREADS);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, inc_dec_thread, &c), 0);
    for (int i = 0; i < THREADS; i++)
        tu_join(t[i], NULL);
    pthread_barrier_destroy(&c.start);

    /* The creator's reference kept the count above zero throughout. */
    assert_int_equal(atomic_load(&c.lasts), 0);
    assert_int_equal(moor_refcnt_read(&c.r), 1);
    assert_true(moor_refcnt_dec_and_test(&c.r));
    tu_expect_no_report();
}

/* Lookups with inc_not_zero race with the owner's final drop: the count
 * reaches zero exactly once, and no lookup succeeds after that. */
static void *lookup_thread(void *arg)
{
    struct counting *c = arg;

    pthread_barrier_wait(&c->start);
    for (int i = 0; i < CYCLES; i++) {
        if (!moor_refcnt_inc_not_zero(&c->r))
            break;
        atomic_fetch_add(&c->lookups_ok, 1);
        if (moor_refcnt_dec_and_test(&c->r))
            atomic_fetch_add(&c->lasts, 1);
    }
    /* Once zero, it stays zero. */
    if (moor_refcnt_read(&c->r) == 0 && moor_refcnt_inc_not_zero(&c->r))
        atomic_fetch_add(&c->lasts, 100);
    return NULL;
}

static void test_inc_not_zero_races_last_drop(void **state)
{
    (void)state;
    for (int round = 0; round < 20; round++) {
        struct counting c = {.r = MOOR_REFCNT_INIT};
        pthread_t t[THREADS];

        atomic_init(&c.lasts, 0);
        atomic_init(&c.lookups_ok, 0);
        pthread_barrier_init(&c.start, NULL, THREADS + 1);
        for (int i = 0; i < THREADS; i++)
            assert_int_equal(pthread_create(&t[i], NULL, lookup_thread, &c), 0);
        pthread_barrier_wait(&c.start);
        if (moor_refcnt_dec_and_test(&c.r))
            atomic_fetch_add(&c.lasts, 1);
        for (int i = 0; i < THREADS; i++)
            tu_join(t[i], NULL);
        pthread_barrier_destroy(&c.start);

        assert_int_equal(atomic_load(&c.lasts), 1);
        assert_int_equal(moor_refcnt_read(&c.r), 0);
        assert_false(moor_refcnt_inc_not_zero(&c.r));
    }
    tu_expect_no_report();
}

/* ---- the default hook, in a child ------------------------------------------- */

static int child_inc_from_zero(void *arg)
{
    moor_refcnt r = {0};

    (void)arg;
    moor_debug_set_report(NULL, NULL);
    moor_refcnt_inc(&r);
    moor_refcnt_inc(&r); /* silent: already saturated */
    return moor_refcnt_is_saturated(&r) ? 0 : 1;
}

static int child_overflow(void *arg)
{
    moor_refcnt r = {INT_MAX};

    (void)arg;
    moor_debug_set_report(NULL, NULL);
    return moor_refcnt_inc_not_zero(&r) && moor_refcnt_is_saturated(&r) ? 0 : 1;
}

static void test_default_hook_prints_one_line(void **state)
{
    tu_child c;

    (void)state;
    tu_fork(&c, child_inc_from_zero, NULL);
    tu_assert_child_exited(&c, 0);
    tu_assert_contains(c.out, "moor: refcount ");
    tu_assert_contains(c.out, "use after the last unref");
    tu_assert_contains(c.out, "saturated");
    /* Reported once, one line. */
    assert_null(strstr(strstr(c.out, "moor: refcount") + 1, "moor: refcount"));
    assert_int_equal(c.out[c.len - 1], '\n');

    tu_fork(&c, child_overflow, NULL);
    tu_assert_child_exited(&c, 0);
    tu_assert_contains(c.out, "reference count overflow");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_init_and_read),
        TU_TEST(test_inc_dec_and_test),
        TU_TEST(test_inc_not_zero),
        TU_TEST(test_near_int_max_is_fine),
        TU_TEST(test_inc_from_zero_saturates),
        TU_TEST(test_dec_below_zero_saturates),
        TU_TEST(test_negative_count_dec_is_underflow),
        TU_TEST(test_overflow_at_int_max),
        TU_TEST(test_overflow_via_inc_not_zero),
        TU_TEST(test_saturated_stays_saturated_and_reports_once),
        TU_TEST(test_dec_and_lock_not_last),
        TU_TEST(test_dec_and_lock_last),
        TU_TEST(test_dec_and_lock_below_zero),
        TU_TEST(test_default_hook_prints_one_line),
        TU_TEST(test_concurrent_saturated_reports_once),
        TU_TEST(test_dec_and_lock_concurrent),
        TU_TEST(test_concurrent_inc_dec_is_exact),
        TU_TEST(test_inc_not_zero_races_last_drop),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
