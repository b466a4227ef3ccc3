/* SPDX-License-Identifier: MIT */
/*
 * stress-util.h - what every stress test shares: its knobs, its clock and
 * its failure reporting. Header-only; each test is one file.
 *
 * Knobs, the same for every test:
 *   - threads: the first argument (1..the test's maximum; each test has
 *     its own default, 4 so far); anything else is a usage error, exit 2;
 *   - run time: MOOR_STRESS_SECONDS=S, seconds in (0, 86400], decimals
 *     allowed; short (2 s) when unset or empty, so that `meson test` stays
 *     quick; the 'slow' suite sets it higher. A bad value exits 2;
 *   - valgrind: MOOR_UNDER_VALGRIND set to anything but "" or "0" (the
 *     valgrind test setup sets it) caps threads and time at the test's own
 *     limits: valgrind runs one thread at a time, ~50x slower.
 *
 * Before including this file, define STRESS_PROG as the program name that
 * starts every message ("stress-object"). fail() reports a failure: it
 * prints "STRESS_PROG: FAIL: ..." (the first 10 only: one bug tends to
 * repeat), counts it, and sets stress_stop so that worker loops end early;
 * the exit status is then 1 (stress_exit_status()).
 */
#ifndef MOOR_TESTS_STRESS_UTIL_H
#define MOOR_TESTS_STRESS_UTIL_H

#ifndef STRESS_PROG
#error "define STRESS_PROG (the program name for messages) before including stress-util.h"
#endif

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <moor/debug.h>
#include <moor/lockcnt.h>
#include <moor/object.h>

#define STRESS_DEFAULT_SECONDS 2.0
#define STRESS_MAX_SECONDS     86400.0
#define STRESS_MAX_PRINTED     10 /* failures printed; the rest are counted */

static atomic_bool stress_stop;     /* set by fail(); worker loops end */
static atomic_int stress_failures;  /* fail() calls */
static atomic_int stress_misuse_nr; /* moor misuse reports (stress_catch_misuse) */

/* ---- failure reporting ---------------------------------------------- */

__attribute__((format(printf, 1, 2))) static inline void fail(const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (atomic_fetch_add(&stress_failures, 1) < STRESS_MAX_PRINTED)
        fprintf(stderr, STRESS_PROG ": FAIL: %s\n", msg);
    atomic_store(&stress_stop, true);
}

static inline int stress_exit_status(void)
{
    return atomic_load(&stress_failures) ? 1 : 0;
}

static inline void stress_on_misuse(moor_misuse kind, const void *subject, const char *message,
                                    void *opaque)
{
    (void)opaque;
    atomic_fetch_add(&stress_misuse_nr, 1);
    fail("moor misuse report (kind %d, subject %p): %s", (int)kind, subject, message);
}

/* Make every moor misuse report a failure. */
static inline void stress_catch_misuse(void)
{
    moor_debug_set_report(stress_on_misuse, NULL);
}

static inline int stress_misuse_reports(void)
{
    return atomic_load(&stress_misuse_nr);
}

/* At the end, with everything dropped: no object may be left alive. */
static inline size_t stress_check_census(void)
{
    size_t census = moor_census_total();

    if (census != 0) {
        fail("moor_census_total() = %zu at the end:", census);
        moor_census_print(stderr);
    }
    return census;
}

/* At the end: the test's own tally of objects created and disposed. */
static inline void stress_check_all_disposed(uint_fast64_t created, uint_fast64_t disposed)
{
    if (created != disposed)
        fail("%" PRIuFAST64 " objects created but %" PRIuFAST64 " disposed", created, disposed);
}

/* ---- knobs ---------------------------------------------------------- */

/* MOOR_STRESS_SECONDS, or @dflt if unset or empty; exits 2 if invalid. */
static inline double stress_env_seconds(double dflt)
{
    const char *s = getenv("MOOR_STRESS_SECONDS");
    char *end;
    double v;

    if (!s || !*s)
        return dflt;
    errno = 0;
    v = strtod(s, &end);
    if (errno || *end || !(v > 0) || v > STRESS_MAX_SECONDS) {
        fprintf(stderr, STRESS_PROG ": MOOR_STRESS_SECONDS=%s: want seconds in (0, 86400]\n", s);
        exit(2);
    }
    return v;
}

/* A thread count in 1..@max from @s into *@out; false if @s is not one. */
static inline bool stress_parse_threads(const char *s, unsigned max, unsigned *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > max)
        return false;
    *out = (unsigned)v;
    return true;
}

/* For tests whose only (optional) argument is THREADS: the thread count,
 * @dflt without an argument; exits 2 with a usage line on anything else. */
static inline unsigned stress_arg_threads(int argc, char **argv, unsigned dflt, unsigned max)
{
    unsigned threads = dflt;

    if (argc > 2 || (argc == 2 && !stress_parse_threads(argv[1], max, &threads))) {
        fprintf(stderr, "usage: %s [THREADS (1..%u, default %u)]\n", argv[0], max, dflt);
        exit(2);
    }
    return threads;
}

/* For the lock counter tests (stress-vlist, stress-lockcnt): the arguments
 * [THREADS [futex|portable|default]], THREADS 1..@max (default 4); exits 2
 * with a usage line on anything else. */
static inline void stress_args_lockcnt(int argc, char **argv, unsigned max, unsigned *threads,
                                       moor_lockcnt_impl *impl)
{
    *threads = 4;
    *impl = MOOR_LOCKCNT_DEFAULT;
    if (argc > 3 || (argc > 1 && !stress_parse_threads(argv[1], max, threads)))
        goto usage;
    if (argc > 2) {
        if (!strcmp(argv[2], "futex"))
            *impl = MOOR_LOCKCNT_FUTEX;
        else if (!strcmp(argv[2], "portable"))
            *impl = MOOR_LOCKCNT_PORTABLE;
        else if (strcmp(argv[2], "default"))
            goto usage;
    }
    return;
usage:
    fprintf(stderr, "usage: %s [THREADS (1..%u, default 4) [futex|portable|default]]\n", argv[0],
            max);
    exit(2);
}

static inline bool stress_under_valgrind(void)
{
    const char *vg = getenv("MOOR_UNDER_VALGRIND");

    return vg && *vg && strcmp(vg, "0") != 0;
}

/* Under valgrind, cap *@threads at @max_threads and, unless @seconds is
 * NULL, *@seconds at @max_seconds. */
static inline void stress_valgrind_caps(unsigned *threads, unsigned max_threads, double *seconds,
                                        double max_seconds)
{
    if (!stress_under_valgrind())
        return;
    if (*threads > max_threads)
        *threads = max_threads;
    if (seconds && *seconds > max_seconds)
        *seconds = max_seconds;
}

/* ---- clock ---------------------------------------------------------- */

static inline struct timespec stress_now(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return now;
}

/* @t in nanoseconds. */
static inline int64_t stress_ns(struct timespec t)
{
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* @t plus @seconds (>= 0). */
static inline struct timespec stress_add_seconds(struct timespec t, double seconds)
{
    t.tv_sec += (time_t)seconds;
    t.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Seconds from @since to now. */
static inline double stress_elapsed(const struct timespec *since)
{
    struct timespec now = stress_now();

    return (double)(now.tv_sec - since->tv_sec) + (double)(now.tv_nsec - since->tv_nsec) / 1e9;
}

static inline bool stress_past(const struct timespec *deadline)
{
    struct timespec now = stress_now();

    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

/*
 * The condition of a worker loop that runs batches of operations and
 * looks at the clock between two batches:
 *
 *     for (unsigned round = 0; stress_go_on(&deadline, round); round++)
 *         a batch;
 *
 * Ends at the first failure (or whenever stress_stop is set) and, once
 * the first batch ran, at @deadline.
 */
static inline bool stress_go_on(const struct timespec *deadline, unsigned round)
{
    return !atomic_load_explicit(&stress_stop, memory_order_relaxed) &&
           (round == 0 || !stress_past(deadline));
}

/* ---- randomness ----------------------------------------------------- */

/* xorshift64*: cheap, per thread, good enough to pick operations. */
static inline uint64_t stress_rnd(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * UINT64_C(2685821657736338717);
}

/* A seed for thread @i: distinct per thread, different on every run. */
static inline uint64_t stress_seed(unsigned i)
{
    return UINT64_C(0x9e3779b97f4a7c15) * (i + 1) ^ (uint64_t)time(NULL);
}

#endif /* MOOR_TESTS_STRESS_UTIL_H */
