/* SPDX-License-Identifier: MIT */
/*
 * bench/bench-blocker.c - what asking "is this operation blocked?" costs,
 * against the obvious alternative: a bitmask of busy operations under a
 * pthread mutex (which says nothing about why or who).
 *
 *   atomic_mask_check      one relaxed load of an atomic uint64_t mask and
 *                          a bit test: the cheapest peer of a check that
 *                          finds the operation free, and the baseline of
 *                          blocker_check_free.
 *   mutex_mask_check       lock; test a bit of a uint64_t mask; unlock.
 *                          The baseline of blocker_check_busy (a check
 *                          that must look at the blocks takes a lock).
 *   blocker_check_free     moor_blocker_check of an operation nobody
 *                          blocks, while another operation of the same set
 *                          is blocked: the fast path (one relaxed load).
 *   blocker_check_busy     moor_blocker_check of a blocked operation with
 *                          a moor_error: lock, walk to the block, format
 *                          the message. Paid only by a refusal.
 *   mutex_mask_set_clear   lock; set a bit; unlock; lock; clear it; unlock.
 *                          The baseline of the pair below.
 *   blocker_block_unblock  moor_block + moor_unblock: a formatted, copied
 *                          reason, one allocation, the process-wide token
 *                          table and the set's lock, each taken twice.
 *
 * All are BENCH_CONTENDED: at N threads every thread works on the same
 * set (or mask), as API threads of a daemon asking about one disk would.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <moor/blocker.h>

#include "bench.h"

enum { OP_RESIZE, OP_DELETE, OP_SNAPSHOT, NOPS };
static const char *const op_names[NOPS] = {"resize", "delete", "snapshot"};

/* ---- baselines: an atomic mask, a mask under a mutex ------------------------ */

struct atomic_mask_state {
    _Alignas(64) _Atomic uint64_t busy;
};

static void *atomic_mask_setup(void)
{
    struct atomic_mask_state *s = aligned_alloc(64, 64);

    if (!s)
        bench_fail("atomic_mask_setup: out of memory");
    atomic_init(&s->busy, UINT64_C(1) << OP_DELETE);
    return s;
}

static void atomic_mask_teardown(void *state)
{
    free(state);
}

BENCH_LOOP(bench_loop_atomic_mask_check, state, iters)
{
    struct atomic_mask_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        /* relaxed: as moor_blocker_check's fast path, a hint to test. */
        if (atomic_load_explicit(&s->busy, memory_order_relaxed) & (UINT64_C(1) << OP_RESIZE))
            bench_fail("atomic_mask_check: resize is busy");
        bench_clobber();
    }
}

struct mask_state {
    _Alignas(64) pthread_mutex_t lock;
    uint64_t busy;
};

static void *mask_setup(void)
{
    struct mask_state *s = aligned_alloc(64, 128);

    if (!s)
        bench_fail("mask_setup: out of memory");
    memset(s, 0, 128);
    pthread_mutex_init(&s->lock, NULL);
    s->busy = UINT64_C(1) << OP_DELETE;
    return s;
}

static void mask_teardown(void *state)
{
    struct mask_state *s = state;

    pthread_mutex_destroy(&s->lock);
    free(s);
}

BENCH_LOOP(bench_loop_mutex_mask_check, state, iters)
{
    struct mask_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        bool busy;

        pthread_mutex_lock(&s->lock);
        busy = s->busy & (UINT64_C(1) << OP_RESIZE);
        pthread_mutex_unlock(&s->lock);
        if (busy)
            bench_fail("mutex_mask_check: resize is busy");
        bench_clobber();
    }
}

BENCH_LOOP(bench_loop_mutex_mask_set_clear, state, iters)
{
    struct mask_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        pthread_mutex_lock(&s->lock);
        s->busy |= UINT64_C(1) << OP_SNAPSHOT;
        pthread_mutex_unlock(&s->lock);
        pthread_mutex_lock(&s->lock);
        s->busy &= ~(UINT64_C(1) << OP_SNAPSHOT);
        pthread_mutex_unlock(&s->lock);
        bench_clobber();
    }
}

/* ---- blocker cases ---------------------------------------------------------- */

struct blocker_state {
    _Alignas(64) moor_blocker_set set;
    moor_block_token delete_block;
};

static void *blocker_setup(void)
{
    struct blocker_state *s = aligned_alloc(64, (sizeof(*s) + 63) & ~(size_t)63);

    if (!s)
        bench_fail("blocker_setup: out of memory");
    s->delete_block = MOOR_BLOCK_TOKEN_NONE;
    if (moor_blocker_init(&s->set, "disk 'bench.qcow2'", op_names, NOPS) < 0 ||
        moor_block(&s->set, MOOR_BLOCKER_OP(OP_DELETE), &s->delete_block, NULL,
                   "backup job 'nightly' reads it") < 0)
        bench_fail("blocker_setup: set-up failed");
    return s;
}

static void blocker_teardown(void *state)
{
    struct blocker_state *s = state;

    moor_unblock(&s->delete_block);
    moor_blocker_destroy(&s->set);
    free(s);
}

BENCH_LOOP(bench_loop_blocker_check_free, state, iters)
{
    struct blocker_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        if (moor_blocker_check(&s->set, OP_RESIZE, NULL) != 0)
            bench_fail("blocker_check_free: resize is blocked");
        bench_clobber();
    }
}

BENCH_LOOP(bench_loop_blocker_check_busy, state, iters)
{
    struct blocker_state *s = state;
    moor_error err;

    for (uint64_t i = 0; i < iters; i++) {
        if (moor_blocker_check(&s->set, OP_DELETE, &err) != -EBUSY)
            bench_fail("blocker_check_busy: delete is not blocked");
        bench_clobber();
    }
}

BENCH_LOOP(bench_loop_blocker_block_unblock, state, iters)
{
    struct blocker_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        moor_block_token t = MOOR_BLOCK_TOKEN_NONE;

        if (moor_block(&s->set, MOOR_BLOCKER_OP(OP_SNAPSHOT), &t, NULL, "snapshot of vm '%s'",
                       "web1") < 0 ||
            moor_unblock(&t) < 0)
            bench_fail("blocker_block_unblock: failed");
        bench_clobber();
    }
}

static const struct bench_case blocker_cases[] = {
    {"atomic_mask_check", NULL, BENCH_CONTENDED, atomic_mask_setup, atomic_mask_teardown,
     bench_loop_atomic_mask_check},
    {"mutex_mask_check", NULL, BENCH_CONTENDED, mask_setup, mask_teardown,
     bench_loop_mutex_mask_check},
    {"blocker_check_free", "atomic_mask_check", BENCH_CONTENDED, blocker_setup, blocker_teardown,
     bench_loop_blocker_check_free},
    {"blocker_check_busy", "mutex_mask_check", BENCH_CONTENDED, blocker_setup, blocker_teardown,
     bench_loop_blocker_check_busy},
    {"mutex_mask_set_clear", NULL, BENCH_CONTENDED, mask_setup, mask_teardown,
     bench_loop_mutex_mask_set_clear},
    {"blocker_block_unblock", "mutex_mask_set_clear", BENCH_CONTENDED, blocker_setup,
     blocker_teardown, bench_loop_blocker_block_unblock},
};

BENCH_REGISTER(blocker_cases);
