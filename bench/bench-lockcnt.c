/* SPDX-License-Identifier: MIT */
/*
 * bench/bench-lockcnt.c - the cost of visits: lock counters and visit
 * lists, each on both implementations, against what they replace.
 *
 *   mutex_counter_pair       a counter protected by a pthread mutex, lock;
 *                            ++; unlock; lock; --; unlock - what a lock
 *                            counter replaces. Baseline: atomic_pair.
 *   lockcnt_futex_pair       moor_lockcnt_inc + moor_lockcnt_dec, futex
 *                            word. Baseline: atomic_pair (bench-ref.c), the
 *                            bare fetch_add + fetch_sub.
 *   lockcnt_futex_pair_qemu_style
 *                            the same pair on a QEMU-style lock counter,
 *                            written here from QemuLockCnt's documented
 *                            algorithm (docs/devel/lockcnt.rst): count and
 *                            lock state in one word; inc loads the word
 *                            and, if the count is non-zero or the lock
 *                            free, adds one with a compare-and-swap
 *                            (retrying on failure); dec is a fetch-sub;
 *                            both out of line, as QEMU ships them.
 *                            Baseline: lockcnt_futex_pair, so the ratio is
 *                            moor's lead over that design (above 1: moor
 *                            is faster), in every run that filters on
 *                            lockcnt_futex_pair.
 *   lockcnt_portable_pair    the same on the portable implementation. At
 *                            one thread every inc starts from zero, so it
 *                            takes the mutex: its worst case. (Its inc and
 *                            dec also pay the blind add and sub of the
 *                            marker word that the futex word's fast path
 *                            is, and a call each.)
 *   lockcnt_futex_last       moor_lockcnt_inc + moor_lockcnt_dec_and_lock,
 *                            and on true the deferred-free path: look at a
 *                            list of retired items (empty), unlock. At one
 *                            thread every iteration is the last visitor.
 *                            Baseline: lockcnt_futex_pair.
 *   lockcnt_portable_last    the same, portable. Baseline:
 *                            lockcnt_portable_pair.
 *   list_walk_64             a bare walk of a 64-node singly linked list
 *                            (acquire loads, a per-node check) with no
 *                            protection at all: the floor.
 *   mutex_list_walk_64       the same walk under a pthread mutex.
 *                            Baseline: list_walk_64.
 *   vlist_futex_visit_64     moor_vlist_visit_begin + foreach over 64 nodes
 *                            + moor_vlist_visit_end. Baseline: list_walk_64.
 *   vlist_portable_visit_64  the same, portable.
 *
 * All cases are BENCH_CONTENDED: at N threads all visit the same counter or
 * list, which is the shared-handler-list situation lock counters are for.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <moor/lockcnt.h>
#include <moor/vlist.h>

#include "bench.h"

#define LIST_LEN 64

static void *aligned_zalloc(size_t size, const char *what)
{
    size_t rounded = (size + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded);

    if (!p)
        bench_fail("%s: out of memory", what);
    memset(p, 0, rounded);
    return p;
}

/* ---- mutex_counter_pair ----------------------------------------------- */

struct mutex_state {
    _Alignas(64) pthread_mutex_t lock;
    long count;
};

static void *mutex_setup(void)
{
    struct mutex_state *s = aligned_zalloc(sizeof(*s), "mutex_counter_pair");

    pthread_mutex_init(&s->lock, NULL);
    return s;
}

static void mutex_teardown(void *state)
{
    struct mutex_state *s = state;

    pthread_mutex_destroy(&s->lock);
    free(s);
}

BENCH_LOOP(bench_loop_mutex_counter_pair, state, iters)
{
    struct mutex_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        pthread_mutex_lock(&s->lock);
        s->count++;
        pthread_mutex_unlock(&s->lock);
        pthread_mutex_lock(&s->lock);
        s->count--;
        pthread_mutex_unlock(&s->lock);
        bench_clobber();
    }
}

/* ---- lock counter pairs ------------------------------------------------ */

struct lockcnt_state {
    _Alignas(64) moor_lockcnt lc;
    void *retired; /* under lc's mutex; always NULL here */
};

static void *lockcnt_setup(moor_lockcnt_impl impl)
{
    struct lockcnt_state *s = aligned_zalloc(sizeof(*s), "lockcnt");

    if (moor_lockcnt_init_impl(&s->lc, impl) < 0)
        bench_fail("moor_lockcnt_init_impl(%d) failed", (int)impl);
    return s;
}

static void *lockcnt_futex_setup(void)
{
    return lockcnt_setup(MOOR_LOCKCNT_FUTEX);
}

static void *lockcnt_portable_setup(void)
{
    return lockcnt_setup(MOOR_LOCKCNT_PORTABLE);
}

static void lockcnt_teardown(void *state)
{
    struct lockcnt_state *s = state;

    if (moor_lockcnt_count(&s->lc) != 0)
        bench_fail("lockcnt: count %u left at teardown", moor_lockcnt_count(&s->lc));
    moor_lockcnt_destroy(&s->lc);
    free(s);
}

/* The two implementations share these loops (they share the fast paths);
 * separate functions so that callgrind can tell them apart. */
BENCH_LOOP(bench_loop_lockcnt_futex_pair, state, iters)
{
    struct lockcnt_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        moor_lockcnt_inc(&s->lc);
        moor_lockcnt_dec(&s->lc);
        bench_clobber();
    }
}

BENCH_LOOP(bench_loop_lockcnt_portable_pair, state, iters)
{
    struct lockcnt_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        moor_lockcnt_inc(&s->lc);
        moor_lockcnt_dec(&s->lc);
        bench_clobber();
    }
}

/* ---- QEMU-style baseline ---------------------------------------------- */

/* Our own rendering of the documented design, not QEMU's code: the lock
 * is never taken in this benchmark, so the wait is a yield and retry. */
#define QSTYLE_STEP  4u /* one visit; the low two bits are the lock state */
#define QSTYLE_STATE 3u

struct qstyle_state {
    _Alignas(64) _Atomic uint32_t word;
};

static void *qstyle_setup(void)
{
    return aligned_zalloc(sizeof(struct qstyle_state), "lockcnt_futex_pair_qemu_style");
}

static void qstyle_teardown(void *state)
{
    struct qstyle_state *s = state;

    if (atomic_load(&s->word) != 0)
        bench_fail("qemu_style: word %#x left at teardown", (unsigned)atomic_load(&s->word));
    free(s);
}

static __attribute__((noinline)) void qstyle_inc(struct qstyle_state *s)
{
    /* relaxed: a guess for the CAS, which re-validates it. */
    uint32_t v = atomic_load_explicit(&s->word, memory_order_relaxed);

    for (;;) {
        if (v >= QSTYLE_STEP || (v & QSTYLE_STATE) == 0) {
            /* acquire: the visit sees what the last unlock published. */
            if (atomic_compare_exchange_weak_explicit(&s->word, &v, v + QSTYLE_STEP,
                                                      memory_order_acquire, memory_order_relaxed))
                return;
            continue;
        }
        sched_yield(); /* count zero and locked: never here */
        v = atomic_load_explicit(&s->word, memory_order_relaxed); /* relaxed: as above */
    }
}

static __attribute__((noinline)) void qstyle_dec(struct qstyle_state *s)
{
    /* release: the visit's reads happen-before a later free. */
    atomic_fetch_sub_explicit(&s->word, QSTYLE_STEP, memory_order_release);
}

BENCH_LOOP(bench_loop_lockcnt_futex_pair_qemu_style, state, iters)
{
    struct qstyle_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        qstyle_inc(s);
        qstyle_dec(s);
        bench_clobber();
    }
}

static inline void last_visit(struct lockcnt_state *s)
{
    moor_lockcnt_inc(&s->lc);
    if (moor_lockcnt_dec_and_lock(&s->lc)) {
        /* The deferred-free path: nothing was retired in this case. */
        if (s->retired)
            bench_fail("lockcnt_last: unexpected retired item");
        moor_lockcnt_unlock(&s->lc);
    }
}

BENCH_LOOP(bench_loop_lockcnt_futex_last, state, iters)
{
    for (uint64_t i = 0; i < iters; i++) {
        last_visit(state);
        bench_clobber();
    }
}

BENCH_LOOP(bench_loop_lockcnt_portable_last, state, iters)
{
    for (uint64_t i = 0; i < iters; i++) {
        last_visit(state);
        bench_clobber();
    }
}

/* ---- list walks --------------------------------------------------------- */

struct plain_node {
    _Atomic(struct plain_node *) next;
    int alive;
};

struct list_state {
    _Alignas(64) pthread_mutex_t lock;
    _Atomic(struct plain_node *) head;
    struct plain_node nodes[LIST_LEN];
};

static void *list_setup(void)
{
    struct list_state *s = aligned_zalloc(sizeof(*s), "list_walk_64");

    pthread_mutex_init(&s->lock, NULL);
    for (int i = LIST_LEN - 1; i >= 0; i--) {
        s->nodes[i].alive = 1;
        atomic_init(&s->nodes[i].next, i + 1 < LIST_LEN ? &s->nodes[i + 1] : NULL);
    }
    atomic_init(&s->head, &s->nodes[0]);
    return s;
}

static void list_teardown(void *state)
{
    struct list_state *s = state;

    pthread_mutex_destroy(&s->lock);
    free(s);
}

static inline int plain_walk(struct list_state *s)
{
    int n = 0;

    /* acquire: what a lock-free reader of a published list must pay. */
    for (struct plain_node *p = atomic_load_explicit(&s->head, memory_order_acquire); p;
         p = atomic_load_explicit(&p->next, memory_order_acquire))
        n += p->alive;
    return n;
}

BENCH_LOOP(bench_loop_list_walk_64, state, iters)
{
    for (uint64_t i = 0; i < iters; i++) {
        if (plain_walk(state) != LIST_LEN)
            bench_fail("list_walk_64: wrong length");
        bench_clobber();
    }
}

BENCH_LOOP(bench_loop_mutex_list_walk_64, state, iters)
{
    struct list_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        pthread_mutex_lock(&s->lock);
        int n = plain_walk(s);
        pthread_mutex_unlock(&s->lock);
        if (n != LIST_LEN)
            bench_fail("mutex_list_walk_64: wrong length");
        bench_clobber();
    }
}

struct vnode {
    moor_vlist_node node;
    int alive;
};

struct vlist_state {
    _Alignas(64) moor_vlist list;
    struct vnode nodes[LIST_LEN];
};

static void vnode_free(moor_vlist *list, moor_vlist_node *node)
{
    (void)list, (void)node; /* the nodes live in the state */
}

static void *vlist_setup(moor_lockcnt_impl impl)
{
    struct vlist_state *s = aligned_zalloc(sizeof(*s), "vlist");

    if (moor_vlist_init_impl(&s->list, impl) < 0)
        bench_fail("moor_vlist_init_impl(%d) failed", (int)impl);
    for (int i = 0; i < LIST_LEN; i++) {
        s->nodes[i].alive = 1;
        if (moor_vlist_insert_tail(&s->list, &s->nodes[i].node, vnode_free) < 0)
            bench_fail("moor_vlist_insert_tail failed");
    }
    return s;
}

static void *vlist_futex_setup(void)
{
    return vlist_setup(MOOR_LOCKCNT_FUTEX);
}

static void *vlist_portable_setup(void)
{
    return vlist_setup(MOOR_LOCKCNT_PORTABLE);
}

static void vlist_teardown(void *state)
{
    struct vlist_state *s = state;

    moor_vlist_destroy(&s->list);
    free(s);
}

static inline int vlist_visit(struct vlist_state *s)
{
    moor_vlist_node *n;
    int count = 0;

    moor_vlist_visit_begin(&s->list);
    moor_vlist_foreach (n, &s->list) {
        count += moor_vlist_entry(n, struct vnode, node)->alive;
    }
    moor_vlist_visit_end(&s->list);
    return count;
}

BENCH_LOOP(bench_loop_vlist_futex_visit_64, state, iters)
{
    for (uint64_t i = 0; i < iters; i++) {
        if (vlist_visit(state) != LIST_LEN)
            bench_fail("vlist_futex_visit_64: wrong length");
        bench_clobber();
    }
}

BENCH_LOOP(bench_loop_vlist_portable_visit_64, state, iters)
{
    for (uint64_t i = 0; i < iters; i++) {
        if (vlist_visit(state) != LIST_LEN)
            bench_fail("vlist_portable_visit_64: wrong length");
        bench_clobber();
    }
}

/* ---- registration ------------------------------------------------------ */

static const struct bench_case lockcnt_cases[] = {
    {"mutex_counter_pair", "atomic_pair", BENCH_CONTENDED, mutex_setup, mutex_teardown,
     bench_loop_mutex_counter_pair},
    {"lockcnt_futex_pair", "atomic_pair", BENCH_CONTENDED, lockcnt_futex_setup, lockcnt_teardown,
     bench_loop_lockcnt_futex_pair},
    {"lockcnt_futex_pair_qemu_style", "lockcnt_futex_pair", BENCH_CONTENDED, qstyle_setup,
     qstyle_teardown, bench_loop_lockcnt_futex_pair_qemu_style},
    {"lockcnt_portable_pair", "atomic_pair", BENCH_CONTENDED, lockcnt_portable_setup,
     lockcnt_teardown, bench_loop_lockcnt_portable_pair},
    {"lockcnt_futex_last", "lockcnt_futex_pair", BENCH_CONTENDED, lockcnt_futex_setup,
     lockcnt_teardown, bench_loop_lockcnt_futex_last},
    {"lockcnt_portable_last", "lockcnt_portable_pair", BENCH_CONTENDED, lockcnt_portable_setup,
     lockcnt_teardown, bench_loop_lockcnt_portable_last},
    {"list_walk_64", NULL, BENCH_CONTENDED, list_setup, list_teardown, bench_loop_list_walk_64},
    {"mutex_list_walk_64", "list_walk_64", BENCH_CONTENDED, list_setup, list_teardown,
     bench_loop_mutex_list_walk_64},
    {"vlist_futex_visit_64", "list_walk_64", BENCH_CONTENDED, vlist_futex_setup, vlist_teardown,
     bench_loop_vlist_futex_visit_64},
    {"vlist_portable_visit_64", "list_walk_64", BENCH_CONTENDED, vlist_portable_setup,
     vlist_teardown, bench_loop_vlist_portable_visit_64},
};

BENCH_REGISTER(lockcnt_cases);
