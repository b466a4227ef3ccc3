/* SPDX-License-Identifier: MIT */
/*
 * test-util.h - what every unit test binary shares: a capturing misuse
 * hook, the per-test fixture that checks the live-object census, a
 * fork-and-capture-stderr helper for checking the default report hook, and
 * a run-in-another-thread helper. Header-only (static inline) so each test
 * binary links only moor and cmocka, like an outside user.
 *
 * Include after <setjmp.h>, <stdarg.h>, <stddef.h>, <stdint.h> and
 * <cmocka.h>.
 */
#ifndef MOOR_TEST_UTIL_H
#define MOOR_TEST_UTIL_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <moor/debug.h>
#include <moor/object.h>

/* Built with AddressSanitizer: tests that read freed memory on purpose
 * are skipped there (ASan would rightly stop them). */
#if defined(__SANITIZE_ADDRESS__)
#define TU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TU_ASAN 1
#endif
#endif
#ifndef TU_ASAN
#define TU_ASAN 0
#endif

/* Built with ThreadSanitizer, which also reports reads of freed memory. */
#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif
#ifndef TU_TSAN
#define TU_TSAN 0
#endif

/*
 * TU_TSAN_IGNORE_LIBURCU - for test binaries that use the registry (and so
 * liburcu). liburcu is not instrumented: its own threads (call_rcu, the
 * hash-table resize worker) free heap blocks that liburcu allocated in
 * ours, ordered by atomics and futexes ThreadSanitizer cannot see. This
 * ignores only the malloc/free interceptors called from inside liburcu
 * (our code stays checked; the ordering liburcu gives moor is annotated in
 * registry.c). Use once per binary, at file scope; nothing outside TSan.
 */
#if TU_TSAN
#define TU_TSAN_IGNORE_LIBURCU                                                                     \
    const char *__tsan_default_suppressions(void);                                                 \
    const char *__tsan_default_suppressions(void)                                                  \
    {                                                                                              \
        return "called_from_lib:liburcu-bp.so\n"                                                   \
               "called_from_lib:liburcu-cds.so\n";                                                 \
    }                                                                                              \
    struct tu__tsan_semicolon
#else
#define TU_TSAN_IGNORE_LIBURCU struct tu__tsan_semicolon
#endif

/* Set by the `valgrind` test setup in the root meson.build. */
static inline bool tu_under_valgrind(void)
{
    return getenv("MOOR_UNDER_VALGRIND") != NULL;
}

/* ---- assertions -------------------------------------------------------- */

#define tu_assert_contains(hay, needle)                                                            \
    do {                                                                                           \
        const char *tu_h_ = (hay), *tu_n_ = (needle);                                              \
        if (!tu_h_ || !strstr(tu_h_, tu_n_))                                                       \
            fail_msg("expected \"%s\" in:\n%s", tu_n_, tu_h_ ? tu_h_ : "(null)");                  \
    } while (0)

#define tu_assert_not_contains(hay, needle)                                                        \
    do {                                                                                           \
        const char *tu_h_ = (hay), *tu_n_ = (needle);                                              \
        if (strstr(tu_h_, tu_n_))                                                                  \
            fail_msg("did not expect \"%s\" in:\n%s", tu_n_, tu_h_);                               \
    } while (0)

/* ---- bounded polls ---------------------------------------------------- */

/* How long a test polls for something another thread does before it
 * gives up: far above any real wait, far below meson's test timeout.
 * MOOR_TEST_POLL_MS overrides it (the mutation check shortens it, so a
 * mutant that makes a poll hang is killed in seconds). */
#define TU_POLL_MS_DEFAULT 20000

static inline int tu_poll_ms(void)
{
    const char *s = getenv("MOOR_TEST_POLL_MS");
    int ms = s ? atoi(s) : 0;

    return ms > 0 ? ms : TU_POLL_MS_DEFAULT;
}

static inline int64_t tu_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Evaluate @cond until it holds or tu_poll_ms() pass, yielding in between;
 * the value is whether it held. */
#define tu_poll(cond)                                                                              \
    ({                                                                                             \
        int64_t tu_end_ = tu_mono_ms() + tu_poll_ms();                                             \
        bool tu_ok_;                                                                               \
        while (!(tu_ok_ = (cond)) && tu_mono_ms() < tu_end_)                                       \
            sched_yield();                                                                         \
        tu_ok_;                                                                                    \
    })

/* On the test's own thread: poll for @cond, failing the test with the
 * printf-style message (what was awaited) if it never holds. */
#define tu_wait_for(cond, fmt, ...)                                                                \
    do {                                                                                           \
        if (!tu_poll(cond))                                                                        \
            fail_msg("gave up after %d ms waiting for " fmt, tu_poll_ms(), ##__VA_ARGS__);         \
    } while (0)

/* The same on a helper thread, where cmocka cannot fail the test: print
 * the message and abort (the test binary fails). */
#define tu_wait_for_in_thread(cond, ...)                                                           \
    do {                                                                                           \
        if (!tu_poll(cond)) {                                                                      \
            fprintf(stderr, "gave up after %d ms waiting for ", tu_poll_ms());                     \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The deadline tu_poll_ms() from now, on CLOCK_REALTIME (what
 * sem_timedwait() and pthread_timedjoin_np() measure against). */
static inline struct timespec tu_realtime_deadline(void)
{
    struct timespec ts;
    int ms = tu_poll_ms();

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* On the test's own thread: join @t (result in *@ret unless NULL), failing
 * the test, with the thread's name, if it has not ended in tu_poll_ms(). */
#define tu_join(t, ret) tu_join_((t), (ret), #t)
/* glibc declares it only under _GNU_SOURCE, which not every test defines. */
extern int pthread_timedjoin_np(pthread_t thread, void **ret, const struct timespec *abstime);
static inline void tu_join_(pthread_t t, void **ret, const char *what)
{
    struct timespec until = tu_realtime_deadline();
    int rc = pthread_timedjoin_np(t, ret, &until);

    if (rc == ETIMEDOUT)
        fail_msg("gave up after %d ms waiting for thread '%s' to end", tu_poll_ms(), what);
    assert_int_equal(rc, 0);
}

/* On the test's own thread: sem_wait(@sem), failing the test, with the
 * semaphore's name, if nobody posts it in tu_poll_ms(). */
#define tu_sem_wait(sem) tu_sem_wait_((sem), #sem)
static inline void tu_sem_wait_(sem_t *sem, const char *what)
{
    struct timespec until = tu_realtime_deadline();

    while (sem_timedwait(sem, &until) < 0) {
        if (errno == ETIMEDOUT)
            fail_msg("gave up after %d ms waiting for semaphore '%s'", tu_poll_ms(), what);
        assert_int_equal(errno, EINTR);
    }
}

/* ---- capturing report hook -------------------------------------------- */

#define TU_MAX_REPORTS 32

typedef struct tu_report {
    moor_misuse kind;
    const void *subject;
    void *opaque;
    char message[512];
} tu_report;

/* Reports may arrive from any thread, so the store has its own mutex. */
static struct {
    pthread_mutex_t lock;
    unsigned count;    /* reports received */
    unsigned consumed; /* reports checked by tu_expect_report() */
    tu_report reports[TU_MAX_REPORTS];
} tu_cap = {.lock = PTHREAD_MUTEX_INITIALIZER};

static inline void tu_capture_hook(moor_misuse kind, const void *subject, const char *message,
                                   void *opaque)
{
    pthread_mutex_lock(&tu_cap.lock);
    if (tu_cap.count < TU_MAX_REPORTS) {
        tu_report *r = &tu_cap.reports[tu_cap.count];

        r->kind = kind;
        r->subject = subject;
        r->opaque = opaque;
        snprintf(r->message, sizeof(r->message), "%s", message);
    }
    tu_cap.count++;
    pthread_mutex_unlock(&tu_cap.lock);
}

/* Forget earlier reports and send new ones to tu_capture_hook(). */
static inline void tu_capture_start(void)
{
    pthread_mutex_lock(&tu_cap.lock);
    tu_cap.count = 0;
    tu_cap.consumed = 0;
    pthread_mutex_unlock(&tu_cap.lock);
    moor_debug_set_report(tu_capture_hook, &tu_cap);
}

/* Reports received and not yet checked. */
static inline unsigned tu_unchecked_reports(void)
{
    unsigned n;

    pthread_mutex_lock(&tu_cap.lock);
    n = tu_cap.count - tu_cap.consumed;
    pthread_mutex_unlock(&tu_cap.lock);
    return n;
}

/* Take the oldest unchecked report, or NULL when there is none. */
static inline const tu_report *tu_next_report(void)
{
    const tu_report *r = NULL;

    pthread_mutex_lock(&tu_cap.lock);
    if (tu_cap.consumed < tu_cap.count && tu_cap.consumed < TU_MAX_REPORTS)
        r = &tu_cap.reports[tu_cap.consumed++];
    pthread_mutex_unlock(&tu_cap.lock);
    return r;
}

/* Assert that the oldest unchecked report is of @kind, about @subject
 * (unless NULL) and mentions @text; consume and return it. */
static inline const tu_report *tu_expect_report(moor_misuse kind, const void *subject,
                                                const char *text)
{
    static const tu_report none; /* never returned: fail_msg() does not return */
    const tu_report *r = tu_next_report();

    if (!r) {
        fail_msg("expected a misuse report of kind %d (\"%s\"), got none", (int)kind, text);
        return &none;
    }
    if (r->kind != kind)
        fail_msg("expected a report of kind %d, got kind %d: %s", (int)kind, (int)r->kind,
                 r->message);
    if (subject && r->subject != subject)
        fail_msg("report about %p, expected %p: %s", r->subject, subject, r->message);
    tu_assert_contains(r->message, text);
    return r;
}

static inline void tu_expect_no_report(void)
{
    const tu_report *r = tu_next_report();

    if (r)
        fail_msg("unexpected misuse report (kind %d): %s", (int)r->kind, r->message);
}

/* ---- per-test fixture --------------------------------------------------- */

static unsigned tu_saved_flags;

/* Every test starts with no live object, the capturing hook installed,
 * "abort" off and no allocation failure armed. */
static inline int tu_setup(void **state)
{
    (void)state;
    moor_debug_fail_alloc(0);
    tu_saved_flags = moor_debug_flags();
    moor_debug_set_flags(tu_saved_flags & ~(unsigned)MOOR_DEBUG_ABORT);
    tu_capture_start();
    assert_int_equal(moor_census_total(), 0);
    return 0;
}

/* Every test ends with the census back at zero and every report it caused
 * checked. */
static inline int tu_teardown(void **state)
{
    (void)state;
    moor_debug_fail_alloc(0);
    moor_debug_set_report(NULL, NULL);
    moor_debug_set_flags(tu_saved_flags);
    tu_expect_no_report();
    if (moor_census_total() != 0) {
        moor_census_print(stderr);
        fail_msg("%zu object(s) still alive at the end of the test", moor_census_total());
    }
    return 0;
}

#define TU_TEST(fn) cmocka_unit_test_setup_teardown(fn, tu_setup, tu_teardown)

/* ---- forked children ---------------------------------------------------- */

typedef struct tu_child {
    int status;     /* as from waitpid() */
    size_t len;     /* bytes of out used */
    char out[8192]; /* the child's stderr, NUL-terminated */
} tu_child;

/*
 * Run @fn(@arg) in a forked child whose stderr goes to a pipe; fill @c
 * with its exit status and output. The child's return value becomes its
 * exit status, after stdio is flushed, through _exit(): no atexit handler
 * and no sanitizer leak check runs unless @fn calls exit() itself.
 * The child must not use cmocka assertions (their longjmp would resume
 * the test runner inside the child): it reports by exit status and text.
 * Fork only while no other thread runs.
 */
static inline void tu_fork(tu_child *c, int (*fn)(void *), void *arg)
{
    static const int crash_signals[] = {SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGSYS};
    int fds[2];
    pid_t pid;

    memset(c, 0, sizeof(*c));
    /* Unflushed output would otherwise be written twice, once per process. */
    fflush(stdout);
    fflush(stderr);
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};

        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        close(fds[1]);
        setrlimit(RLIMIT_CORE, &no_core);
        /* cmocka catches crash signals to longjmp back into its runner: a
         * crash in the child must end the child instead. */
        for (size_t i = 0; i < sizeof(crash_signals) / sizeof(crash_signals[0]); i++)
            signal(crash_signals[i], SIG_DFL);
        int rc = fn(arg);
        fflush(NULL);
        _exit(rc);
    }
    close(fds[1]);
    for (;;) {
        ssize_t n = read(fds[0], c->out + c->len, sizeof(c->out) - 1 - c->len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        c->len += (size_t)n;
        if (c->len == sizeof(c->out) - 1) {
            char sink[256]; /* keep draining so the child never blocks */

            while (read(fds[0], sink, sizeof(sink)) > 0)
                ;
            break;
        }
    }
    c->out[c->len] = '\0';
    close(fds[0]);
    while (waitpid(pid, &c->status, 0) < 0)
        assert_int_equal(errno, EINTR);
}

#define tu_assert_child_exited(c, code)                                                            \
    do {                                                                                           \
        if (!WIFEXITED((c)->status) || WEXITSTATUS((c)->status) != (code))                         \
            fail_msg("child status 0x%x, expected exit(%d); its stderr:\n%s", (c)->status, (code), \
                     (c)->out);                                                                    \
    } while (0)

#define tu_assert_child_signaled(c, sig)                                                           \
    do {                                                                                           \
        if (!WIFSIGNALED((c)->status) || WTERMSIG((c)->status) != (sig))                           \
            fail_msg("child status 0x%x, expected signal %d; its stderr:\n%s", (c)->status, (sig), \
                     (c)->out);                                                                    \
    } while (0)

/* In a child: check a captured report and say what went wrong on stderr.
 * Returns 0 when the report matches, 1 otherwise. */
static inline int tu_child_check_report(moor_misuse kind, const char *text)
{
    const tu_report *r = tu_next_report();

    if (!r) {
        fprintf(stderr, "no report, expected kind %d\n", (int)kind);
        return 1;
    }
    if (r->kind != kind || !strstr(r->message, text)) {
        fprintf(stderr, "report kind %d \"%s\", expected kind %d with \"%s\"\n", (int)r->kind,
                r->message, (int)kind, text);
        return 1;
    }
    return 0;
}

/* ---- threads ------------------------------------------------------------ */

/* Run @fn(@arg) in a new thread, wait for it and return its result. */
static inline void *tu_in_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    void *result = NULL;

    assert_int_equal(pthread_create(&t, NULL, fn, arg), 0);
    assert_int_equal(pthread_join(t, &result), 0);
    return result;
}

#endif /* MOOR_TEST_UTIL_H */
