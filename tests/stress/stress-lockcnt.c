/* SPDX-License-Identifier: MIT */
/*
 * stress-lockcnt.c - threads visit a pointer guarded by one lock counter
 * while others replace it and free what they replaced, with every usage
 * pattern of the lock counter API mixed at random.
 *
 *     stress-lockcnt [THREADS [futex|portable|default]]   (default 4, default)
 *     MOOR_STRESS_SECONDS=S      run time (default 2; decimals allowed)
 *     MOOR_UNDER_VALGRIND=1      caps the threads at 4
 *
 * The guarded datum is `current`, a pointer to a heap block that writers
 * replace under the mutex (release store) and put on a retired list; the
 * retired blocks are freed by whoever holds the mutex at count zero. The
 * operations, the patterns of docs/lockcnt.md and the model's:
 *   - a visit ended by a plain dec;
 *   - a visit ended by dec_and_lock, which frees the retired blocks when it
 *     was the last (a visit list's end of visit);
 *   - a nested visit (two incs), ended by dec then dec_and_lock;
 *   - a writer: lock, replace, free if moor_lockcnt_count() is zero;
 *   - a writer inside its own visit that ends the visit with a plain dec
 *     while holding the mutex and then checks the count: the path where
 *     the count reaches zero under the mutex and only the holder's count
 *     read closes the futex word;
 *   - a mid-visit clean-up: dec_if_lock, free, inc_and_unlock, carry on.
 * With threads waiting for the unlock at count zero (queued increments on
 * the futex word) as a frequent side effect of the writers.
 *
 * Checked:
 *   - never freed while visited: a visitor checks the block's poison word
 *     after every acquire load of `current`; a freed block is poisoned DEAD
 *     and kept in a quarantine ring before free(), so a late read sees DEAD
 *     deterministically (and ASan/valgrind see the rest);
 *   - a ghost tally of visits (incremented after inc returns, decremented
 *     before the dec) must be zero whenever a block is freed: it never
 *     exceeds the number of visits in progress, so a positive tally at a
 *     free is a visit overlapping it (rules 1 and 2);
 *   - at the end: the count is zero, and every block created was freed
 *     exactly once (created == freed after the final clean-up);
 *   - no misuse report.
 * Any failure prints "stress-lockcnt: FAIL: ..." and the exit status is 1.
 */
#define _GNU_SOURCE
#define STRESS_PROG "stress-lockcnt"
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <moor/lockcnt.h>

#include "stress-util.h"

#define MAX_THREADS     64
#define VALGRIND_THREAD 4
#define QUARANTINE      64
#define BATCH           256

enum { ALIVE = 0x600d, DEAD = 0xdead };

struct block {
    atomic_uint poison;
    struct block *next_retired; /* under the mutex */
};

static moor_lockcnt lc;
static _Atomic(struct block *) current;
static struct block *retired;                /* under the mutex */
static struct block *quarantine[QUARANTINE]; /* under the mutex */
static size_t quarantine_next;               /* under the mutex */
static atomic_long ghost_visits;
static atomic_long created, freed, frees_by_last, frees_by_writer, frees_mid_visit;

static struct block *new_block(void)
{
    struct block *b = malloc(sizeof(*b));

    if (!b) {
        fail("out of memory");
        abort();
    }
    atomic_init(&b->poison, ALIVE);
    b->next_retired = NULL;
    atomic_fetch_add(&created, 1);
    return b;
}

/* The caller holds the mutex and has seen the count at zero. Now and then
 * it lingers there (a yield), so that a visit wrongly let in while the
 * holder frees has time to show in the ghost tally. */
static void free_retired_locked(atomic_long *by)
{
    static unsigned lingers; /* under the mutex */

    if (!retired)
        return;
    if (atomic_load(&ghost_visits) == 0 && ++lingers % 8 == 0)
        sched_yield();
    long ghosts = atomic_load(&ghost_visits);
    if (ghosts != 0)
        fail("freeing with %ld visit(s) in progress", ghosts);
    while (retired) {
        struct block *b = retired;

        retired = b->next_retired;
        atomic_store(&b->poison, DEAD);
        free(quarantine[quarantine_next]);
        quarantine[quarantine_next] = b;
        quarantine_next = (quarantine_next + 1) % QUARANTINE;
        atomic_fetch_add(&freed, 1);
        atomic_fetch_add(by, 1);
    }
}

static void begin(void)
{
    moor_lockcnt_inc(&lc);
    atomic_fetch_add(&ghost_visits, 1);
}

static void look(void)
{
    struct block *b = atomic_load_explicit(&current, memory_order_acquire);

    if (atomic_load_explicit(&b->poison, memory_order_relaxed) != ALIVE)
        fail("a visit read a freed block %p", (void *)b);
}

static void end_plain(void)
{
    atomic_fetch_sub(&ghost_visits, 1);
    moor_lockcnt_dec(&lc);
}

static void end_last(void)
{
    atomic_fetch_sub(&ghost_visits, 1);
    if (moor_lockcnt_dec_and_lock(&lc)) {
        free_retired_locked(&frees_by_last);
        moor_lockcnt_unlock(&lc);
    }
}

/* With the mutex held: replace the datum, retire the old one. */
static void replace_locked(void)
{
    struct block *old = atomic_exchange_explicit(&current, new_block(), memory_order_acq_rel);

    old->next_retired = retired;
    retired = old;
}

static void writer(void)
{
    moor_lockcnt_lock(&lc);
    replace_locked();
    if (moor_lockcnt_count(&lc) == 0)
        free_retired_locked(&frees_by_writer);
    moor_lockcnt_unlock(&lc);
}

static void writer_in_visit(void)
{
    begin();
    look();
    moor_lockcnt_lock(&lc);
    replace_locked();
    end_plain(); /* the count may reach zero here, under the mutex */
    if (moor_lockcnt_count(&lc) == 0)
        free_retired_locked(&frees_by_writer);
    moor_lockcnt_unlock(&lc);
}

static void mid_visit_cleanup(void)
{
    begin();
    look();
    atomic_fetch_sub(&ghost_visits, 1); /* the visit may end in dec_if_lock */
    if (moor_lockcnt_dec_if_lock(&lc)) {
        free_retired_locked(&frees_mid_visit);
        moor_lockcnt_inc_and_unlock(&lc);
    }
    atomic_fetch_add(&ghost_visits, 1); /* visiting again either way */
    look();
    end_last();
}

static void one_op(uint64_t *seed)
{
    switch (stress_rnd(seed) % 8) {
    case 0:
    case 1:
        begin();
        look();
        end_plain();
        break;
    case 2:
    case 3:
        begin();
        look();
        end_last();
        break;
    case 4:
        begin();
        begin();
        look();
        end_plain();
        look();
        end_last();
        break;
    case 5:
        writer();
        break;
    case 6:
        writer_in_visit();
        break;
    default:
        mid_visit_cleanup();
        break;
    }
}

static struct timespec deadline;

static void *thread_main(void *arg)
{
    uint64_t seed = stress_seed((unsigned)(uintptr_t)arg);

    for (unsigned round = 0; stress_go_on(&deadline, round); round++)
        for (int i = 0; i < BATCH; i++)
            one_op(&seed);
    return NULL;
}

/* Everything stopped: the count is zero and every block is freed. */
static void final_checks(void)
{
    if (moor_lockcnt_count(&lc) != 0)
        fail("count %u at the end", moor_lockcnt_count(&lc));
    moor_lockcnt_lock(&lc);
    if (moor_lockcnt_count(&lc) == 0) {
        struct block *last = atomic_exchange(&current, NULL);

        last->next_retired = retired;
        retired = last;
        free_retired_locked(&frees_by_writer);
    }
    moor_lockcnt_unlock(&lc);
    for (size_t i = 0; i < QUARANTINE; i++)
        free(quarantine[i]);
    if (atomic_load(&created) != atomic_load(&freed))
        fail("created %ld blocks, freed %ld", atomic_load(&created), atomic_load(&freed));
}

int main(int argc, char **argv)
{
    unsigned nthreads;
    moor_lockcnt_impl impl;
    double seconds = stress_env_seconds(STRESS_DEFAULT_SECONDS);
    pthread_t threads[MAX_THREADS];

    stress_args_lockcnt(argc, argv, MAX_THREADS, &nthreads, &impl);
    stress_valgrind_caps(&nthreads, VALGRIND_THREAD, NULL, 0);
    stress_catch_misuse();

    int ret = moor_lockcnt_init_impl(&lc, impl);
    if (ret < 0) {
        fprintf(stderr, "stress-lockcnt: init: %s\n", strerror(-ret));
        return 1;
    }
    atomic_init(&current, new_block());
    deadline = stress_add_seconds(stress_now(), seconds);
    for (unsigned i = 0; i < nthreads; i++) {
        if (pthread_create(&threads[i], NULL, thread_main, (void *)(uintptr_t)(i + 1))) {
            fprintf(stderr, "stress-lockcnt: pthread_create failed\n");
            return 1;
        }
    }
    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    final_checks();
    moor_lockcnt_destroy(&lc);

    printf("stress-lockcnt: %s, %u threads, %.1fs: %ld blocks created, %ld freed (%ld by the "
           "last visitor, %ld by a writer, %ld mid-visit), %d failures\n",
           moor_lockcnt_get_impl(&lc) == MOOR_LOCKCNT_FUTEX ? "futex" : "portable", nthreads,
           seconds, atomic_load(&created), atomic_load(&freed), atomic_load(&frees_by_last),
           atomic_load(&frees_by_writer), atomic_load(&frees_mid_visit),
           atomic_load(&stress_failures));
    return stress_exit_status();
}
