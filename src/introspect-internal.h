/* SPDX-License-Identifier: MIT */
/*
 * introspect-internal.h - what job.c and monitor.c give introspect.c: each
 * keeps its live instances on a list of its own (under a leaf mutex) and
 * copies their state into a snapshot's arrays on request. Not installed.
 */
#ifndef MOOR_INTROSPECT_INTERNAL_H
#define MOOR_INTROSPECT_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include <moor/introspect.h>
#include <moor/job.h> /* moor__live_node */

/* The lists of live things (jobs, monitors, sleeps): newest first, each
 * guarded by its owner's leaf mutex, which the caller holds. */
static inline void moor__live_add(moor__live_node **first, moor__live_node *n)
{
    n->prev = NULL;
    n->next = *first;
    if (*first)
        (*first)->prev = n;
    *first = n;
}

/* Whether @n itself is on the list: a copy of a linked struct carries the
 * original's links, which must not be followed. */
static inline bool moor__live_linked(moor__live_node *const *first, const moor__live_node *n)
{
    return n->prev ? n->prev->next == n : *first == n;
}

/* Take @n off the list if it is on it. */
static inline void moor__live_del(moor__live_node **first, moor__live_node *n)
{
    if (!moor__live_linked(first, n))
        return;
    if (n->prev)
        n->prev->next = n->next;
    else
        *first = n->next;
    if (n->next)
        n->next->prev = n->prev;
    n->prev = n->next = NULL;
}

/* Add @n under @lock (a leaf mutex), then start the watchdog if it is
 * switched on and not running yet (so that it starts at the first job or
 * monitor, never before main). */
void moor__live_register(pthread_mutex_t *lock, moor__live_node **first, moor__live_node *n);

/* Take @n off under @lock, if it is on the list. */
void moor__live_unregister(pthread_mutex_t *lock, moor__live_node **first, moor__live_node *n);

/* Hold @lock, a live list's leaf mutex (or the class list's), across every fork() (from a
 * constructor: before any fork). A child forked while another thread held
 * one (a snapshot, the watchdog's look, a job set up) would inherit it
 * locked by a thread that does not exist there, with the list maybe half
 * relinked. None of these locks is taken inside another, so the order in
 * which the prepare handler takes them does not matter. */
void moor__live_lock_across_fork(pthread_mutex_t *lock);

#define MOOR__LIVE_ENTRY(node, type, member) ((type *)((char *)(node)-offsetof(type, member)))

/* A growing array of @size-byte items. */
struct moor__vec {
    void *items;
    size_t n, cap, size;
};

/* Room for one more item, zeroed; NULL when out of memory. */
void *moor__vec_push(struct moor__vec *v);

/* Copy the state of every live job into @jobs (moor_debug_job items):
 * per object, the async job, the holders, then the waiters. Returns 0 or
 * -ENOMEM (what was copied stays). Locks: the jobs' live-list leaf mutex,
 * and each object's mutex by trylock (see moor_debug_snapshot). */
int moor__job_collect(struct moor__vec *jobs);

/* Copy every live monitor into @mons (moor_debug_monitor items, each
 * with its own pending array). Returns 0 or -ENOMEM. Locks: the monitors'
 * live-list leaf mutex, then each monitor's leaf mutex. */
int moor__monitor_collect(struct moor__vec *mons);

/* A sleep in a lock counter, on the sleeper's stack (see moor_debug_wait). */
struct moor__wait {
    moor__live_node live;
    const void *subject; /* NULL: not recorded */
    const char *what;    /* a literal */
    int thread;
    int64_t since_ns;
};

/* Record the calling thread's sleep on @subject in @w, if the watchdog is
 * on (else one relaxed load); moor__wait_end() takes it off again. For
 * slow paths about to sleep: takes a leaf mutex. */
void moor__wait_begin(struct moor__wait *w, const void *subject, const char *what);
void moor__wait_end(struct moor__wait *w);

#endif /* MOOR_INTROSPECT_INTERNAL_H */
