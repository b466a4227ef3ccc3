/* SPDX-License-Identifier: MIT */
/*
 * test-debug.c - MOOR_DEBUG parsing and flags, the report hook (custom,
 * default, abort), the leak report at exit and allocation fault injection.
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
#include <moor/object.h>

#include "test-util.h"

#define THREADS 4

struct leaky {
    moor_object parent;
    int x;
};

static const moor_class *leaky_class; /* "debug.leaky" */

/* Re-executed with this argument, the binary prints the flags it found in
 * MOOR_DEBUG at load time (see test_flags_read_from_environment). */
#define PRINT_FLAGS_ARG "--print-flags"

/* ---- parsing and flags ------------------------------------------------- */

static void test_parse_known_words(void **state)
{
    (void)state;
    assert_int_equal(moor_debug_parse("locks"), MOOR_DEBUG_LOCKS);
    assert_int_equal(moor_debug_parse("refs"), MOOR_DEBUG_REFS);
    assert_int_equal(moor_debug_parse("leaks"), MOOR_DEBUG_LEAKS);
    assert_int_equal(moor_debug_parse("watchdog"), MOOR_DEBUG_WATCHDOG);
    assert_int_equal(moor_debug_parse("abort"), MOOR_DEBUG_ABORT);
    assert_int_equal(moor_debug_parse("locks,leaks"), MOOR_DEBUG_LOCKS | MOOR_DEBUG_LEAKS);
    assert_int_equal(moor_debug_parse("abort,refs,abort"), MOOR_DEBUG_ABORT | MOOR_DEBUG_REFS);
    assert_int_equal(moor_debug_parse("locks,refs,leaks,watchdog,abort"),
                     MOOR_DEBUG_LOCKS | MOOR_DEBUG_REFS | MOOR_DEBUG_LEAKS | MOOR_DEBUG_WATCHDOG |
                         MOOR_DEBUG_ABORT);
}

static void test_parse_all(void **state)
{
    const int checks = MOOR_DEBUG_LOCKS | MOOR_DEBUG_REFS | MOOR_DEBUG_LEAKS | MOOR_DEBUG_WATCHDOG;

    (void)state;
    /* "all" is every check, but not "abort": that one is asked for. */
    assert_int_equal(moor_debug_parse("all"), checks);
    assert_int_equal(moor_debug_parse("all,abort"), checks | MOOR_DEBUG_ABORT);
    assert_int_equal(moor_debug_parse("locks,all"), checks);
}

static void test_parse_empty(void **state)
{
    (void)state;
    assert_int_equal(moor_debug_parse(""), 0);
    assert_int_equal(moor_debug_parse(NULL), 0);
}

static void test_parse_unknown_word(void **state)
{
    unsigned before = moor_debug_flags();

    (void)state;
    assert_int_equal(moor_debug_parse("bogus"), -EINVAL);
    assert_int_equal(moor_debug_parse("locks,bogus"), -EINVAL);
    assert_int_equal(moor_debug_parse("bogus,locks"), -EINVAL);
    /* Whole words, exact spelling. */
    assert_int_equal(moor_debug_parse("lock"), -EINVAL);
    assert_int_equal(moor_debug_parse("locksx"), -EINVAL);
    assert_int_equal(moor_debug_parse("LOCKS"), -EINVAL);
    assert_int_equal(moor_debug_parse(" locks"), -EINVAL);
    /* Parsing changes nothing. */
    assert_int_equal(moor_debug_flags(), before);
}

static void test_set_flags_returns_previous(void **state)
{
    unsigned start = moor_debug_flags();

    (void)state;
    assert_int_equal(moor_debug_set_flags(MOOR_DEBUG_LOCKS), start);
    assert_int_equal(moor_debug_flags(), MOOR_DEBUG_LOCKS);
    assert_int_equal(moor_debug_set_flags(MOOR_DEBUG_REFS | MOOR_DEBUG_WATCHDOG), MOOR_DEBUG_LOCKS);
    assert_int_equal(moor_debug_flags(), MOOR_DEBUG_REFS | MOOR_DEBUG_WATCHDOG);
    assert_int_equal(moor_debug_set_flags(0), MOOR_DEBUG_REFS | MOOR_DEBUG_WATCHDOG);
    assert_int_equal(moor_debug_flags(), 0);
    assert_int_equal(moor_debug_set_flags(start), 0);
    assert_int_equal(moor_debug_flags(), start);
}

/* ---- the report hook ------------------------------------------------------ */

static void test_report_reaches_hook(void **state)
{
    int subject = 0;
    const tu_report *r;

    (void)state;
    moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, &subject, "bad %s #%d", "thing", 7);
    r = tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, &subject, "bad thing #7");
    assert_string_equal(r->message, "bad thing #7");
    assert_ptr_equal(r->opaque, &tu_cap);

    moor_debug_report(MOOR_MISUSE_LEAK, NULL, "%s", "second");
    r = tu_expect_report(MOOR_MISUSE_LEAK, NULL, "second");
    assert_null(r->subject);
}

static atomic_int hook_a_calls, hook_b_calls;

static void hook_a(moor_misuse kind, const void *subject, const char *message, void *opaque)
{
    (void)kind, (void)subject, (void)message;
    atomic_fetch_add((atomic_int *)opaque, 1);
}

static void hook_b(moor_misuse kind, const void *subject, const char *message, void *opaque)
{
    (void)kind, (void)subject, (void)message;
    atomic_fetch_add((atomic_int *)opaque, 1);
}

static void test_set_report_replaces_hook(void **state)
{
    (void)state;
    atomic_store(&hook_a_calls, 0);
    atomic_store(&hook_b_calls, 0);
    moor_debug_set_report(hook_a, &hook_a_calls);
    moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "one");
    moor_debug_set_report(hook_b, &hook_b_calls);
    moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "two");
    moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "three");
    /* Same function, other opaque: the pair changes together. */
    moor_debug_set_report(hook_a, &hook_b_calls);
    moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "four");
    assert_int_equal(atomic_load(&hook_a_calls), 1);
    assert_int_equal(atomic_load(&hook_b_calls), 3);
    tu_capture_start();
    tu_expect_no_report();
}

/* Issue 11, point 9: set_report returns the hook it replaced, and
 * swap_report its opaque too, so a second component can chain to the
 * first; the default is returned as moor_debug_report_stderr. */
static moor_report_fn chained_prev;
static void *chained_prev_opaque;
static atomic_int chained_calls;

static void hook_chained(moor_misuse kind, const void *subject, const char *message, void *opaque)
{
    atomic_fetch_add((atomic_int *)opaque, 1);
    chained_prev(kind, subject, message, chained_prev_opaque);
}

static void test_set_report_returns_previous(void **state)
{
    const tu_report *r;

    (void)state;
    atomic_store(&chained_calls, 0);
    /* The fixture installed tu_capture_hook with &tu_cap. */
    chained_prev = moor_debug_swap_report(hook_chained, &chained_calls, &chained_prev_opaque);
    assert_ptr_equal(chained_prev, tu_capture_hook);
    assert_ptr_equal(chained_prev_opaque, &tu_cap);
    moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "through the chain");
    assert_int_equal(atomic_load(&chained_calls), 1);
    r = tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "through the chain");
    assert_ptr_equal(r->opaque, &tu_cap);

    assert_ptr_equal(moor_debug_set_report(NULL, NULL), hook_chained);
    assert_ptr_equal(moor_debug_set_report(tu_capture_hook, &tu_cap), moor_debug_report_stderr);
    assert_ptr_equal(moor_debug_swap_report(tu_capture_hook, &tu_cap, NULL), tu_capture_hook);
    tu_expect_no_report();
}

/* A hook may install another hook (the only moor call it may make besides
 * moor_debug_*): the next report goes to the new one. */
static void hook_switching(moor_misuse kind, const void *subject, const char *message, void *opaque)
{
    (void)opaque;
    moor_debug_set_report(tu_capture_hook, &tu_cap);
    tu_capture_hook(kind, subject, message, NULL);
}

static void test_hook_may_install_hook(void **state)
{
    const tu_report *r;

    (void)state;
    moor_debug_set_report(hook_switching, NULL);
    moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "via switcher");
    moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "direct");
    r = tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "via switcher");
    assert_null(r->opaque);
    r = tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "direct");
    assert_ptr_equal(r->opaque, &tu_cap);
}

static void *report_thread(void *arg)
{
    moor_debug_report(MOOR_MISUSE_UNLOCK_NOT_OWNER, arg, "from a thread");
    return NULL;
}

static void test_report_from_another_thread(void **state)
{
    int subject = 0;

    (void)state;
    tu_in_thread(report_thread, &subject);
    tu_expect_report(MOOR_MISUSE_UNLOCK_NOT_OWNER, &subject, "from a thread");
}

/* Reports from several threads while the hook is swapped: every report
 * reaches one of the hooks, none is lost or doubled. */
struct swap_race {
    pthread_barrier_t start;
};

#define SWAP_REPORTS 500

static void *swap_report_thread(void *arg)
{
    struct swap_race *s = arg;

    pthread_barrier_wait(&s->start);
    for (int i = 0; i < SWAP_REPORTS; i++)
        moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "race %d", i);
    return NULL;
}

static void test_reports_while_hook_changes(void **state)
{
    struct swap_race s;
    pthread_t t[THREADS];

    (void)state;
    atomic_store(&hook_a_calls, 0);
    atomic_store(&hook_b_calls, 0);
    moor_debug_set_report(hook_a, &hook_a_calls);
    pthread_barrier_init(&s.start, NULL, THREADS + 1);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, swap_report_thread, &s), 0);
    pthread_barrier_wait(&s.start);
    for (int i = 0; i < 200; i++) {
        moor_debug_set_report(hook_b, &hook_b_calls);
        moor_debug_set_report(hook_a, &hook_a_calls);
    }
    for (int i = 0; i < THREADS; i++)
        tu_join(t[i], NULL);
    pthread_barrier_destroy(&s.start);
    assert_int_equal(atomic_load(&hook_a_calls) + atomic_load(&hook_b_calls),
                     THREADS * SWAP_REPORTS);
    tu_capture_start();
}

/* ---- the default hook and abort, in children ---------------------------- */

static int child_default_hook_restored(void *arg)
{
    (void)arg;
    /* The capturing hook is installed (inherited); NULL brings back the
     * default one, which prints. */
    moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "captured %d", 1);
    if (tu_child_check_report(MOOR_MISUSE_BAD_ARGUMENT, "captured 1"))
        return 1;
    moor_debug_set_report(NULL, NULL);
    moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "printed %d", 2);
    return tu_next_report() ? 2 : 0;
}

static void test_set_report_null_restores_default(void **state)
{
    tu_child c;

    (void)state;
    tu_fork(&c, child_default_hook_restored, NULL);
    tu_assert_child_exited(&c, 0);
    tu_assert_not_contains(c.out, "captured");
    tu_assert_contains(c.out, "moor: printed 2\n");
}

static int child_abort_default_hook(void *arg)
{
    (void)arg;
    moor_debug_set_report(NULL, NULL);
    moor_debug_set_flags(MOOR_DEBUG_ABORT);
    moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "about to abort %d", 42);
    return 0; /* not reached */
}

static int hook_wrote_then_abort(void *arg)
{
    (void)arg;
    moor_debug_set_flags(MOOR_DEBUG_ABORT);
    moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "custom hook first");
    return 0; /* not reached */
}

static void stderr_hook(moor_misuse kind, const void *subject, const char *message, void *opaque)
{
    (void)subject, (void)opaque;
    fprintf(stderr, "hook kind=%d: %s\n", (int)kind, message);
}

static int child_abort_custom_hook(void *arg)
{
    moor_debug_set_report(stderr_hook, NULL);
    return hook_wrote_then_abort(arg);
}

static int child_abort_on_misuse(void *arg)
{
    long not_an_object[8] = {0};

    (void)arg;
    moor_debug_set_report(NULL, NULL);
    moor_debug_set_flags(MOOR_DEBUG_ABORT);
    moor_unref(not_an_object);
    return 0; /* not reached */
}

static int child_no_abort_without_flag(void *arg)
{
    long not_an_object[8] = {0};

    (void)arg;
    moor_debug_set_report(NULL, NULL);
    moor_debug_set_flags(moor_debug_flags() & ~(unsigned)MOOR_DEBUG_ABORT);
    moor_unref(not_an_object);
    return 3;
}

static void test_abort_flag(void **state)
{
    tu_child c;

    (void)state;
    tu_fork(&c, child_abort_default_hook, NULL);
    tu_assert_child_signaled(&c, SIGABRT);
    tu_assert_contains(c.out, "moor: about to abort 42\n");

    /* The hook runs first, then the abort. */
    tu_fork(&c, child_abort_custom_hook, NULL);
    tu_assert_child_signaled(&c, SIGABRT);
    char expected[64];
    snprintf(expected, sizeof(expected), "hook kind=%d: custom hook first",
             (int)MOOR_MISUSE_BAD_ARGUMENT);
    tu_assert_contains(c.out, expected);

    /* A real misuse aborts too, after its report. */
    tu_fork(&c, child_abort_on_misuse, NULL);
    tu_assert_child_signaled(&c, SIGABRT);
    tu_assert_contains(c.out, "not a moor object");

    /* Without the flag: reported and carries on. */
    tu_fork(&c, child_no_abort_without_flag, NULL);
    tu_assert_child_exited(&c, 3);
    tu_assert_contains(c.out, "not a moor object");
}

/* ---- leak report at exit ------------------------------------------------- */

/* The leaked object stays reachable from this global, so LeakSanitizer
 * (which runs after every atexit handler, moor's included) and valgrind
 * count it as reachable rather than lost: the child exits cleanly under
 * ASan and valgrind too. volatile: the stores must not be optimised out. */
static void *volatile leaked;

static int child_leak_at_exit(void *arg)
{
    (void)arg;
    moor_debug_set_report(NULL, NULL);
    moor_debug_set_flags(MOOR_DEBUG_LEAKS);
    leaked = moor_object_new(leaky_class);
    moor_ref(leaked); /* refs=2 in the report */
    fflush(NULL);
    exit(0); /* runs the atexit leak report, unlike the usual _exit */
}

static void test_leaks_listed_at_exit(void **state)
{
    char expected[96];
    tu_child c;

    (void)state;
    tu_fork(&c, child_leak_at_exit, NULL);
    tu_assert_child_exited(&c, 0);
    tu_assert_contains(c.out, "moor: leak: 1 object(s) of class 'debug.leaky' still alive:");
    snprintf(expected, sizeof(expected), "(refs=2)");
    tu_assert_contains(c.out, expected);
}

static int child_leak_through_hook(void *arg)
{
    (void)arg;
    moor_debug_set_report(stderr_hook, NULL);
    moor_debug_set_flags(MOOR_DEBUG_LEAKS);
    leaked = moor_object_new(leaky_class);
    fflush(NULL);
    exit(0);
}

static void test_leaks_reported_through_hook(void **state)
{
    char expected[96];
    tu_child c;

    (void)state;
    tu_fork(&c, child_leak_through_hook, NULL);
    tu_assert_child_exited(&c, 0);
    snprintf(expected, sizeof(expected), "hook kind=%d: leak: 1 object(s) of class 'debug.leaky'",
             (int)MOOR_MISUSE_LEAK);
    tu_assert_contains(c.out, expected);
}

static int child_no_leak(void *arg)
{
    (void)arg;
    moor_debug_set_report(NULL, NULL);
    moor_debug_set_flags(MOOR_DEBUG_LEAKS);
    moor_unref(moor_object_new(leaky_class));
    fflush(NULL);
    exit(0);
}

static int child_leak_untracked(void *arg)
{
    (void)arg;
    moor_debug_set_report(NULL, NULL);
    /* Created before "leaks" was turned on: counted, not listed. */
    moor_debug_set_flags(0);
    leaked = moor_object_new(leaky_class);
    moor_debug_set_flags(MOOR_DEBUG_LEAKS);
    fflush(NULL);
    exit(0);
}

static int child_leaks_turned_off(void *arg)
{
    (void)arg;
    moor_debug_set_report(NULL, NULL);
    moor_debug_set_flags(MOOR_DEBUG_LEAKS);
    leaked = moor_object_new(leaky_class);
    moor_debug_set_flags(0);
    fflush(NULL);
    exit(0);
}

static void test_leak_report_variants(void **state)
{
    tu_child c;

    (void)state;
    tu_fork(&c, child_no_leak, NULL);
    tu_assert_child_exited(&c, 0);
    tu_assert_not_contains(c.out, "leak:");

    tu_fork(&c, child_leak_untracked, NULL);
    tu_assert_child_exited(&c, 0);
    tu_assert_contains(c.out, "leak: 1 object(s) of class 'debug.leaky' still alive: (not "
                              "tracked)");

    /* The report is made only if "leaks" is still on at exit. */
    tu_fork(&c, child_leaks_turned_off, NULL);
    tu_assert_child_exited(&c, 0);
    tu_assert_not_contains(c.out, "leak:");
}

/* ---- fault injection ------------------------------------------------------ */

static const moor_class *try_class(const char *name, moor_error *err)
{
    moor_error_clear(err);
    return moor_class_new(name, moor_object_class(), sizeof(struct leaky), NULL, err);
}

static void test_fail_alloc(void **state)
{
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    /* Leak tracking and reference tracing (MOOR_DEBUG=refs in the
     * environment) would add allocations per object. */
    moor_debug_set_flags(moor_debug_flags() & ~(unsigned)(MOOR_DEBUG_LEAKS | MOOR_DEBUG_REFS));
    /* 1: the very next allocation fails, and only that one. */
    moor_debug_fail_alloc(1);
    assert_null(try_class("debug.fa.a", &err));
    assert_int_equal(err.code, -ENOMEM);
    assert_non_null(try_class("debug.fa.a", &err));
    assert_non_null(try_class("debug.fa.b", &err));

    /* 3: two succeed, the third fails, the fourth succeeds. */
    moor_debug_fail_alloc(3);
    assert_non_null(try_class("debug.fa.c", &err));
    void *o = moor_object_new(leaky_class);
    assert_non_null(o);
    errno = 0;
    assert_null(moor_object_new(leaky_class));
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(moor_class_live(leaky_class), 1);
    void *o2 = moor_object_new(leaky_class);
    assert_non_null(o2);
    moor_unref(o);
    moor_unref(o2);

    /* 0 disarms a pending failure. */
    moor_debug_fail_alloc(1);
    moor_debug_fail_alloc(0);
    assert_non_null(try_class("debug.fa.d", &err));
    tu_expect_no_report();
}

/* ---- MOOR_DEBUG read at load ------------------------------------------- */

static char self_path[PATH_MAX];

static int child_exec_with_env(void *spec)
{
    char *argv[] = {self_path, PRINT_FLAGS_ARG, NULL};

    setenv("MOOR_DEBUG", spec, 1);
    execv(self_path, argv);
    fprintf(stderr, "execv %s: %s\n", self_path, strerror(errno));
    return 127;
}

static void test_flags_read_from_environment(void **state)
{
    char expected[64];
    tu_child c;

    (void)state;
    tu_fork(&c, child_exec_with_env, "locks,refs");
    tu_assert_child_exited(&c, 0);
    snprintf(expected, sizeof(expected), "flags=%d\n", MOOR_DEBUG_LOCKS | MOOR_DEBUG_REFS);
    tu_assert_contains(c.out, expected);

    tu_fork(&c, child_exec_with_env, "all");
    tu_assert_child_exited(&c, 0);
    snprintf(expected, sizeof(expected), "flags=%d\n", moor_debug_parse("all"));
    tu_assert_contains(c.out, expected);

    /* An unknown word: a warning naming the known ones, and no flags. */
    tu_fork(&c, child_exec_with_env, "locks,bogus");
    tu_assert_child_exited(&c, 0);
    tu_assert_contains(c.out, "MOOR_DEBUG=locks,bogus: unknown word");
    tu_assert_contains(c.out, "flags=0\n");
}

int main(int argc, char **argv)
{
    ssize_t n;

    if (argc == 2 && strcmp(argv[1], PRINT_FLAGS_ARG) == 0) {
        fprintf(stderr, "flags=%u\n", moor_debug_flags());
        return 0;
    }

    n = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
    if (n <= 0) {
        fprintf(stderr, "readlink /proc/self/exe: %s\n", strerror(errno));
        return 1;
    }
    self_path[n] = '\0';
    leaky_class =
        moor_class_new("debug.leaky", moor_object_class(), sizeof(struct leaky), NULL, NULL);
    if (!leaky_class)
        return 1;

    const struct CMUnitTest tests[] = {
        TU_TEST(test_parse_known_words),
        TU_TEST(test_parse_all),
        TU_TEST(test_parse_empty),
        TU_TEST(test_parse_unknown_word),
        TU_TEST(test_set_flags_returns_previous),
        TU_TEST(test_report_reaches_hook),
        TU_TEST(test_set_report_replaces_hook),
        TU_TEST(test_set_report_returns_previous),
        TU_TEST(test_hook_may_install_hook),
        TU_TEST(test_report_from_another_thread),
        TU_TEST(test_set_report_null_restores_default),
        TU_TEST(test_abort_flag),
        TU_TEST(test_leaks_listed_at_exit),
        TU_TEST(test_leaks_reported_through_hook),
        TU_TEST(test_leak_report_variants),
        TU_TEST(test_fail_alloc),
        TU_TEST(test_flags_read_from_environment),
        TU_TEST(test_reports_while_hook_changes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
