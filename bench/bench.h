/* SPDX-License-Identifier: MIT */
/*
 * bench/bench.h - the registration API of the moor benchmark harness.
 *
 * One harness (moor-bench.c) runs every case; each primitive contributes
 * its cases from bench/bench-NAME.c. A case is a loop over one operation
 * (usually a pair, such as ref + unref) plus the state it works on.
 *
 * Adding a file of cases takes three things:
 *
 *   1. bench/bench-NAME.c with a table of cases and, at its end, the one
 *      registration line
 *
 *          BENCH_REGISTER(NAME_cases);
 *
 *   2. 'bench-NAME.c' in the sources list of bench/meson.build;
 *   3. nothing else: BENCH_REGISTER uses a constructor, so the harness
 *      finds the table before main() runs. The bench files are linked
 *      into the executable itself (never through a static library), so
 *      the linker cannot drop them.
 *
 * A case:
 *
 *     static void *pair_setup(void);                 // shared state
 *     static void pair_teardown(void *state);
 *     BENCH_LOOP(bench_loop_my_pair, state, iters)    // the timed loop
 *     {
 *         struct pair *p = state;
 *
 *         for (uint64_t i = 0; i < iters; i++) {
 *             op_a(p);
 *             op_b(p);
 *             bench_clobber();
 *         }
 *     }
 *     static const struct bench_case my_cases[] = {
 *         {"my_pair", "atomic_pair", BENCH_CONTENDED, pair_setup, pair_teardown,
 *          bench_loop_my_pair},
 *     };
 *     BENCH_REGISTER(my_cases);
 *
 * Rules that keep cases comparable:
 *   - the loop function is named bench_loop_CASE and is never inlined, so
 *     bench/callgrind.sh can count its instructions with --toggle-collect;
 *   - every iteration ends with bench_clobber(), a compiler barrier that
 *     forces memory to be re-read, so no case gets loads hoisted out of its
 *     loop that a real call site would pay (a magic number, a pointer in a
 *     struct). Values in registers stay there, so a test of the loop's own
 *     pointer (moor_ref's NULL check) may be hoisted, as at a call site
 *     that has already checked it. (Hiding the pointer behind an asm
 *     operand was tried: gcc then adds register moves no real site has.)
 *   - results a real caller would test (dec_and_test, weak_get) are
 *     tested, and a failure calls bench_fail();
 *   - the baseline is named by the case and measured in the same process
 *     and the same run, at the same thread count, even when --filter
 *     would leave it out: by default in alternating rounds with the case,
 *     so both cases' states are alive at once (moor-bench.c, the top);
 *   - so a case whose state has activity of its own (a thread that
 *     writes, a stream of jobs) does not start it in setup, where it
 *     would also run during the baseline's runs: it starts it in
 *     begin_run and stops it, fully (threads joined, deferred work
 *     drained), in end_run. The harness calls the two around every run of
 *     that case, calibration and warm-up included, outside the timed
 *     interval. Anything the case reports (a rate, a CPU share) is summed
 *     over the runs and printed by teardown. A thread that only waits
 *     (an echo peer blocked in read()) may stay up from setup.
 *
 * Threads: a BENCH_CONTENDED case is also run by N threads at once on the
 * same state, all released together by a barrier. Its figure is
 *     ns/op = (last thread's end - first thread's start) / iters
 * where iters is the count each thread did: the cost of one operation as
 * seen by each thread while all N contend. The loop, setup and teardown
 * must therefore be safe to share; setup and teardown run in one thread.
 */
#ifndef MOOR_BENCH_H
#define MOOR_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* A case's flags. */
enum {
    BENCH_CONTENDED = 1u << 0, /* also run by 2..N threads on shared state */
};

/* The timed loop: do the operation @iters times on @state. */
typedef void (*bench_loop_fn)(void *state, uint64_t iters);

struct bench_case {
    const char *name;     /* unique; [a-z0-9_] */
    const char *baseline; /* name of the case to compare with, or NULL */
    unsigned flags;       /* BENCH_* */
    void *(*setup)(void); /* shared state (NULL is fine); bench_fail() on error */
    void (*teardown)(void *state);
    bench_loop_fn loop;
    /* Optional (NULL, or left out of a positional initialiser): called
     * just before and just after every run of this case's loop, outside
     * the time, to start and stop background activity (see the top). */
    void (*begin_run)(void *state);
    void (*end_run)(void *state);
};

/* Declare a timed loop; @fn should be bench_loop_CASE (see the top). */
#define BENCH_LOOP(fn, state, iters)                                                               \
    static __attribute__((noinline, used)) void fn(void *state, uint64_t iters)

/* Compiler barrier, once per iteration in every case: memory may have
 * changed, so nothing is cached across iterations. Emits no instruction. */
static inline void bench_clobber(void)
{
    __asm__ volatile("" ::: "memory");
}

/* Report a broken case (a failed setup, a count that reached zero) and
 * exit. For setup and loops; never returns. */
__attribute__((noreturn, format(printf, 1, 2))) void bench_fail(const char *fmt, ...);

/* Add @n cases; used by BENCH_REGISTER before main(). */
void bench_register(const struct bench_case *cases, size_t n);

#define BENCH_REGISTER(cases)                                                                      \
    static __attribute__((constructor)) void bench_register_##cases(void)                          \
    {                                                                                              \
        bench_register((cases), sizeof(cases) / sizeof((cases)[0]));                               \
    }                                                                                              \
    struct bench__register_##cases##_semicolon

#endif /* MOOR_BENCH_H */
