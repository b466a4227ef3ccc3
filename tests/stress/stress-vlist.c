/* SPDX-License-Identifier: MIT */
/*
 * stress-vlist.c - threads walk one visit list while others (and the
 * walkers' own callbacks) insert and remove nodes and re-enter the walk.
 *
 *     stress-vlist [THREADS [futex|portable|default]]   (default 4, default)
 *     MOOR_STRESS_SECONDS=S      run time (default 2; decimals allowed)
 *     MOOR_UNDER_VALGRIND=1      caps the threads at 4 (the valgrind setup
 *                                serialises threads)
 *
 * Each thread picks random operations: walk the list with moor_vlist_walk()
 * (the callback may remove its own node, remove the next node, insert at
 * either end, or walk again from inside, up to a small depth), walk it with
 * visit_begin/foreach/visit_end and remove a node found on the way, or
 * insert. Some nodes' free callbacks insert a replacement, so the list is
 * also used from free callbacks. The list size is kept between two bounds.
 *
 * Removal outside any visit: each thread also inserts "owned" nodes, keeps
 * up to OWN_MAX of them, and later removes them itself with no visit in
 * progress in that thread, while the others walk, insert and remove. Owned
 * nodes are never removed from inside a visit (the in-visit removers skip
 * them), so their owner knows they are alive until its own remove call; it
 * does not touch them after it. Depending on whether any visit is in
 * progress, such a removal either sweeps (and frees the node) itself or
 * leaves the node to the last visitor's moor_vlist_visit_end(): both sides
 * of vlist.c's "no sweep can be missed" argument run against each other.
 * A thread-local note tells the free callback which node its thread is
 * removing, so the two outcomes are counted and printed.
 *
 * Threads work in epochs of EPOCH_OPS operations separated by a barrier.
 * At each barrier nobody visits or changes the list, so every node removed
 * so far must already have been freed (a missed sweep shows here, not only
 * at the very end), and the count must be zero.
 *
 * Checked:
 *   - never freed while visited: a walker checks the node's poison word on
 *     every step and holds a per-node "being looked at" count while its
 *     callback runs; the free callback requires that count to be zero and
 *     the poison to be ALIVE, then writes DEAD. Freed nodes go to a
 *     quarantine ring before being released with free(), so a late access
 *     reads DEAD deterministically (and ASan/valgrind see the rest);
 *   - freed exactly once: a per-node flag exchanged by the free callback;
 *   - owned nodes are freed only after their owner removed them (a flag
 *     the owner sets just before its remove call), or by destroy;
 *   - removing an owned node never returns -EALREADY (nobody else does);
 *   - at every barrier: count zero, freed == removed (no sweep missed),
 *     and a walk finds created - removed live nodes;
 *   - runs longer than 0.5 s: at least one removal outside a visit, and at
 *     least one that swept its own node (the count-zero path of remove);
 *   - at the end (after moor_vlist_destroy()): created == freed, and the
 *     number of successful removals plus the nodes still listed at the end
 *     equals the number created.
 * Any failure prints "stress-vlist: FAIL: ..." and the exit status is 1.
 */
#define _GNU_SOURCE
#define STRESS_PROG "stress-vlist"
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <moor/vlist.h>

#include "stress-util.h"

#define MAX_THREADS     64
#define VALGRIND_THREAD 4
#define EPOCH_OPS       128 /* operations per thread between two barriers */
#define OWN_MAX         4   /* owned nodes a thread keeps at most */
#define LIST_MIN        16
#define LIST_MAX        200
#define MAX_DEPTH       3
#define QUARANTINE      4096

#define POISON_ALIVE UINT64_C(0xa11ea11ea11ea11e)
#define POISON_DEAD  UINT64_C(0xdeaddeaddeaddead)

struct snode {
    _Atomic uint64_t poison; /* ALIVE until the free callback */
    uint64_t id;
    uint64_t payload;    /* plain field: written at insert and by the free
                          * callback, read by walkers; races show in TSan */
    atomic_int looking;  /* walkers whose callback is on this node */
    atomic_bool freed;   /* set once by the free callback */
    bool replace;        /* its free callback inserts a new node */
    bool owned;          /* removed only by its inserter, outside a visit */
    atomic_bool claimed; /* owned: set by the owner just before removing */
    moor_vlist_node node;
};

static moor_vlist list;
static atomic_bool shutting_down;
static atomic_long created, freed, removed;
static atomic_long outside_removed; /* owned nodes removed outside a visit */
static atomic_long self_swept;      /* ... and freed by that remove call itself */
static pthread_barrier_t epoch_barrier;
static atomic_bool epoch_stop; /* written by the barrier's serial thread */

/* The owned node this thread is removing outside a visit, and whether its
 * free callback ran in this thread during that remove call. */
static _Thread_local struct snode *removing;
static _Thread_local bool removing_freed;

static pthread_mutex_t quarantine_lock = PTHREAD_MUTEX_INITIALIZER;
static struct snode *quarantine[QUARANTINE]; /* under quarantine_lock */
static size_t quarantine_next;               /* under quarantine_lock */

static uint64_t rnd(uint64_t *s)
{
    /* xorshift64: cheap, per thread, good enough to pick operations. */
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static struct snode *to_snode(moor_vlist_node *n)
{
    return moor_vlist_entry(n, struct snode, node);
}

static void check_alive(struct snode *sn, const char *where)
{
    /* relaxed: the lock counter orders the free against this read; a DEAD
     * value here means that ordering was broken. */
    uint64_t p = atomic_load_explicit(&sn->poison, memory_order_relaxed);

    if (p != POISON_ALIVE)
        fail("%s: node %" PRIu64 " is %s while visited", where, sn->id,
             p == POISON_DEAD ? "freed" : "garbage");
    else if (sn->payload != ~sn->id)
        fail("%s: node %" PRIu64 " has a bad payload", where, sn->id);
}

static struct snode *insert_one(uint64_t *seed, bool owned);
static long listed(void);

static void snode_free(moor_vlist *l, moor_vlist_node *n)
{
    struct snode *sn = to_snode(n);
    struct snode *old;

    if (atomic_exchange(&sn->freed, true))
        fail("node %" PRIu64 " freed twice", sn->id);
    if (l != &list)
        fail("node %" PRIu64 " given back with list %p, not its own", sn->id, (void *)l);
    check_alive(sn, "free callback");
    if (atomic_load(&sn->looking) != 0)
        fail("node %" PRIu64 " freed while a walker's callback is on it", sn->id);
    if (sn->owned && !atomic_load(&sn->claimed) && !atomic_load(&shutting_down))
        fail("owned node %" PRIu64 " freed but its owner did not remove it", sn->id);
    if (sn == removing)
        removing_freed = true; /* freed by its remover's own sweep */
    atomic_store_explicit(&sn->poison, POISON_DEAD, memory_order_relaxed);
    sn->payload = 0;
    atomic_fetch_add(&freed, 1);

    pthread_mutex_lock(&quarantine_lock);
    old = quarantine[quarantine_next];
    quarantine[quarantine_next] = sn;
    quarantine_next = (quarantine_next + 1) % QUARANTINE;
    pthread_mutex_unlock(&quarantine_lock);
    free(old);

    if (sn->replace && !atomic_load(&shutting_down) && listed() < LIST_MAX) {
        uint64_t seed = sn->id * 2654435761u + 1;

        insert_one(&seed, false); /* a free callback may use the list */
    }
}

static struct snode *insert_one(uint64_t *seed, bool owned)
{
    struct snode *sn = calloc(1, sizeof(*sn));

    if (!sn) {
        fail("out of memory");
        return NULL;
    }
    atomic_init(&sn->poison, POISON_ALIVE);
    sn->id = (uint64_t)atomic_fetch_add(&created, 1);
    sn->payload = ~sn->id;
    sn->replace = rnd(seed) % 8 == 0;
    sn->owned = owned;
    atomic_init(&sn->claimed, false);
    int ret = rnd(seed) % 2 ? moor_vlist_insert_tail(&list, &sn->node, snode_free)
                            : moor_vlist_insert_head(&list, &sn->node, snode_free);
    if (ret != 0) {
        fail("insert: %d", ret);
        return NULL; /* not listed: leaks, and created != freed says so */
    }
    return sn;
}

static long listed(void)
{
    return atomic_load(&created) - atomic_load(&removed);
}

/* Inside a visit: remove @n unless it is owned (left to its owner). */
static void remove_one(moor_vlist_node *n, const char *where)
{
    if (to_snode(n)->owned)
        return;

    int ret = moor_vlist_remove(&list, n);

    if (ret == 0)
        atomic_fetch_add(&removed, 1);
    else if (ret != -EALREADY)
        fail("%s: remove: %d", where, ret);
}

struct walker {
    uint64_t seed;
    int depth;
};

static int walk_cb(moor_vlist_node *n, void *opaque)
{
    struct walker *w = opaque;
    struct snode *sn = to_snode(n);
    uint64_t r = rnd(&w->seed);

    atomic_fetch_add(&sn->looking, 1);
    check_alive(sn, "walk");
    switch (r % 16) {
    case 0: /* remove self */
        if (listed() > LIST_MIN)
            remove_one(n, "remove self");
        break;
    case 1: { /* remove next */
        moor_vlist_node *next = moor_vlist_next(n);

        if (next && listed() > LIST_MIN)
            remove_one(next, "remove next");
        break;
    }
    case 2: /* insert */
        if (listed() < LIST_MAX)
            insert_one(&w->seed, false);
        break;
    case 3: /* re-enter */
        if (w->depth < MAX_DEPTH) {
            w->depth++;
            moor_vlist_walk(&list, walk_cb, w);
            w->depth--;
        }
        break;
    default:
        break;
    }
    check_alive(sn, "walk, after the callback's changes");
    atomic_fetch_sub(&sn->looking, 1);
    /* Stop some walks early, so that visits end at random places. */
    return r % 64 == 63;
}

/* visit_begin/foreach/visit_end by hand; remove the k-th live node. */
static void manual_walk_remove(uint64_t *seed)
{
    moor_vlist_node *n;
    long k = (long)(rnd(seed) % LIST_MAX), i = 0;

    moor_vlist_visit_begin(&list);
    moor_vlist_foreach (n, &list) {
        check_alive(to_snode(n), "manual walk");
        if (i++ == k) {
            if (listed() > LIST_MIN)
                remove_one(n, "manual walk");
            check_alive(to_snode(n), "manual walk, after removing");
            break;
        }
    }
    moor_vlist_visit_end(&list);
}

struct owner {
    struct snode *owned[OWN_MAX]; /* inserted by this thread, not yet removed */
    unsigned n;
};

/* Outside any visit: insert an owned node, or remove one of ours. */
static void owned_op(struct owner *o, uint64_t *seed)
{
    if (o->n < OWN_MAX && (o->n == 0 || rnd(seed) % 2) && listed() < LIST_MAX) {
        struct snode *sn = insert_one(seed, true);

        if (sn)
            o->owned[o->n++] = sn;
        return;
    }
    if (o->n == 0)
        return;

    unsigned i = (unsigned)(rnd(seed) % o->n);
    struct snode *sn = o->owned[i];

    o->owned[i] = o->owned[--o->n];
    /* Alive: only this thread removes it, and it has not yet. */
    check_alive(sn, "owned node, before removing it");
    atomic_store(&sn->claimed, true);
    removing = sn;
    removing_freed = false;
    int ret = moor_vlist_remove(&list, &sn->node);
    removing = NULL;
    /* From here on @sn may be freed: not touched again. */
    if (ret != 0) {
        fail("remove outside a visit: %d", ret);
        return;
    }
    atomic_fetch_add(&removed, 1);
    atomic_fetch_add(&outside_removed, 1);
    if (removing_freed)
        atomic_fetch_add(&self_swept, 1);
}

static int count_cb(moor_vlist_node *n, void *opaque)
{
    check_alive(to_snode(n), "count");
    ++*(long *)opaque;
    return 0;
}

/* At a barrier: nobody else visits or changes the list. */
static void quiescent_check(void)
{
    long nr_created = atomic_load(&created), nr_removed = atomic_load(&removed);
    long nr_freed = atomic_load(&freed), live = 0;

    if (moor_lockcnt_count(&list.lc) != 0)
        fail("count %u at a barrier", moor_lockcnt_count(&list.lc));
    /* Before the walk below, whose visit_end would sweep what was missed. */
    if (nr_freed != nr_removed)
        fail("%ld nodes removed but %ld freed with nobody visiting: a sweep was missed", nr_removed,
             nr_freed);
    moor_vlist_walk(&list, count_cb, &live);
    if (live != nr_created - nr_removed)
        fail("%ld live nodes listed, expected %ld", live, nr_created - nr_removed);
}

static void *thread_main(void *arg)
{
    struct walker w = {.seed = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15u + 1};
    struct owner o = {.n = 0};

    for (;;) {
        for (unsigned ops = 0; ops < EPOCH_OPS; ops++) {
            switch (rnd(&w.seed) % 16) {
            case 0:
            case 1:
            case 2:
            case 3:
            case 4:
            case 5:
            case 6:
                moor_vlist_walk(&list, walk_cb, &w);
                break;
            case 7:
            case 8:
            case 9:
                manual_walk_remove(&w.seed);
                break;
            case 10:
            case 11:
            case 12:
                if (listed() < LIST_MAX)
                    insert_one(&w.seed, false);
                break;
            default:
                owned_op(&o, &w.seed);
                break;
            }
        }
        if (pthread_barrier_wait(&epoch_barrier) == PTHREAD_BARRIER_SERIAL_THREAD) {
            quiescent_check();
            atomic_store(&epoch_stop, atomic_load(&stress_stop));
        }
        pthread_barrier_wait(&epoch_barrier);
        if (atomic_load(&epoch_stop))
            break;
    }
    /* Owned nodes still listed are freed by moor_vlist_destroy(). */
    return NULL;
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

    int ret = moor_vlist_init_impl(&list, impl);
    if (ret < 0) {
        fprintf(stderr, "stress-vlist: init: %s\n", strerror(-ret));
        return 1;
    }
    uint64_t seed = 42;
    for (int i = 0; i < LIST_MIN * 2; i++)
        insert_one(&seed, false);
    if (pthread_barrier_init(&epoch_barrier, NULL, nthreads)) {
        fprintf(stderr, "stress-vlist: pthread_barrier_init failed\n");
        return 1;
    }

    for (unsigned i = 0; i < nthreads; i++) {
        if (pthread_create(&threads[i], NULL, thread_main, (void *)(uintptr_t)(i + 1))) {
            fprintf(stderr, "stress-vlist: pthread_create failed\n");
            return 1;
        }
    }
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
    atomic_store(&stress_stop, true);
    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&epoch_barrier);

    const char *impl_name =
        moor_lockcnt_get_impl(&list.lc) == MOOR_LOCKCNT_FUTEX ? "futex" : "portable";
    long still_listed = listed();
    long freed_before_destroy = atomic_load(&freed);
    if (freed_before_destroy != atomic_load(&removed))
        fail("%ld nodes removed but %ld freed before destroy: a sweep was missed",
             atomic_load(&removed), freed_before_destroy);
    atomic_store(&shutting_down, true);
    moor_vlist_destroy(&list);

    if (atomic_load(&freed) - freed_before_destroy != still_listed)
        fail("destroy freed %ld nodes, expected %ld still listed",
             atomic_load(&freed) - freed_before_destroy, still_listed);
    if (atomic_load(&created) != atomic_load(&freed))
        fail("created %ld nodes, freed %ld", atomic_load(&created), atomic_load(&freed));
    for (size_t i = 0; i < QUARANTINE; i++)
        free(quarantine[i]);
    if (seconds > 0.5 && atomic_load(&outside_removed) == 0)
        fail("no removal outside a visit in %.1fs", seconds);
    if (seconds > 0.5 && atomic_load(&self_swept) == 0)
        fail("no removal outside a visit swept its own node in %.1fs", seconds);

    printf("stress-vlist: %s, %u threads, %.1fs: %ld nodes created, %ld removed (%ld outside a "
           "visit: %ld swept by the remover, %ld left to others), %ld freed, %d failures\n",
           impl_name, nthreads, seconds, atomic_load(&created), atomic_load(&removed),
           atomic_load(&outside_removed), atomic_load(&self_swept),
           atomic_load(&outside_removed) - atomic_load(&self_swept), atomic_load(&freed),
           atomic_load(&stress_failures));
    return stress_exit_status();
}
