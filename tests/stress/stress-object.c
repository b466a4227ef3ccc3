/* SPDX-License-Identifier: MIT */
/*
 * stress-object.c - many threads sharing lockable objects, strong and weak
 * references, until the clock runs out; then every counter must be back to
 * zero.
 *
 *     stress-object [THREADS]          (default 4)
 *     MOOR_STRESS_SECONDS=S            run time (default 2; decimals allowed)
 *     MOOR_UNDER_VALGRIND=1            caps threads and time (set by the
 *                                      valgrind setup, which serialises
 *                                      threads)
 *
 * World: a pool of slots, each owning one reference to an object and a
 * weak reference to it; shared weak slots whose set/clear is serialised by
 * a mutex per slot while moor_weak_get() on them runs unlocked from every
 * thread; per thread, a few "hands" holding strong references, a few weak
 * slots (set/clear only by their owner, weak_get by anyone) and a small
 * locked mailbox through which other threads hand it references.
 *
 * Each thread picks random operations: take a reference from the pool,
 * replace a pool entry (dropping the pool's reference, often the last one
 * while weak gets race on weak slots still pointing there), pass a
 * reference to another thread, drop one, duplicate one, lock an object and
 * mutate it, and set/clear/get weak references.
 *
 * Checked: dispose runs once per object (a disposed flag and a poison word,
 * checked under the object's lock) and only at refcount zero; moor_weak_get
 * never returns an object whose dispose ran, and returns NULL for an object
 * being disposed; updates made under the lock are never lost (a locked pair
 * of plain counters against an atomic tally); no misuse report is made; at
 * the end, with every strong holder gone, every weak get gives NULL,
 * created == disposed and the census is zero. Any failure prints
 * "stress-object: FAIL: ..." and the exit status is 1.
 */
#define _GNU_SOURCE
#define STRESS_PROG "stress-object"
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

#include <moor/debug.h>
#include <moor/object.h>

#include "stress-util.h"

#define MAX_THREADS     64
#define POOL_SIZE       32
#define SHARED_WEAKS    16
#define HANDS           8
#define LOCAL_WEAKS     4
#define MAILBOX_CAP     16
#define CLOCK_EVERY     128 /* operations between two looks at the clock */
#define VALGRIND_SECS   5.0
#define VALGRIND_THREAD 4

#define POISON_ALIVE UINT64_C(0xa11ea11ea11ea11e)
#define POISON_DEAD  UINT64_C(0xdeaddeaddeaddead)

struct sobj {
    moor_lockable parent;
    uint64_t poison;       /* POISON_ALIVE until dispose; under the lock */
    uint64_t id;           /* creation number, for messages */
    long a, b;             /* under the lock: always equal between locks */
    atomic_long mutations; /* how many times a and b were bumped */
    atomic_int disposed;   /* set once by dispose */
};

struct slot { /* a pool entry */
    pthread_mutex_t lock;
    struct sobj *obj; /* owned reference; under lock */
    moor_weak weak;   /* set under lock, weak_get by anyone */
};

struct shared_weak {
    pthread_mutex_t lock; /* serialises set/clear of weak */
    moor_weak weak;
};

struct mailbox {
    pthread_mutex_t lock;
    struct sobj *ring[MAILBOX_CAP]; /* owned references */
    unsigned head, count;
};

struct worker {
    pthread_t thread;
    unsigned index;
    uint64_t rng;
    struct sobj *hands[HANDS];    /* owned references; this thread only */
    moor_weak weaks[LOCAL_WEAKS]; /* set/clear by this thread only */
    struct mailbox mailbox;       /* references handed to this thread */
    /* statistics, read by main after join */
    uint64_t ops, weak_hits, weak_misses, passes, locked_updates, replaced;
};

static const moor_class *sobj_class;
static struct slot pool[POOL_SIZE];
static struct shared_weak shared[SHARED_WEAKS];
static struct worker workers[MAX_THREADS];
static unsigned nworkers;
static struct timespec deadline;

static atomic_uint_fast64_t created, disposed;

/* ---- objects -------------------------------------------------------- */

/* Check, under @o's lock, that it is alive and that no locked update was
 * lost or torn. */
static void check_locked(struct sobj *o, const char *where)
{
    if (o->poison != POISON_ALIVE || atomic_load(&o->disposed))
        fail("%s: object #%" PRIu64 " %p used after its dispose (poison %#" PRIx64 ")", where,
             o->id, (void *)o, o->poison);
    if (o->a != o->b)
        fail("%s: object #%" PRIu64 ": torn update under the lock (a=%ld b=%ld)", where, o->id,
             o->a, o->b);
}

static void sobj_dispose(void *p)
{
    struct sobj *o = p;
    int refs = moor_object_refcount(o);

    if (refs != 0)
        fail("dispose of object #%" PRIu64 " with refcount %d", o->id, refs);
    if (atomic_exchange(&o->disposed, 1))
        fail("object #%" PRIu64 " %p disposed twice", o->id, (void *)o);

    /* Weak references were detached before dispose: none may yield @o. */
    for (unsigned i = 0; i < SHARED_WEAKS; i++) {
        struct sobj *got = moor_weak_get(&shared[i].weak);

        if (got == o)
            fail("moor_weak_get returned object #%" PRIu64 " during its dispose", o->id);
        else
            moor_unref(got); /* a different object; not ours to keep */
    }

    moor_lock(o);
    if (o->poison != POISON_ALIVE)
        fail("dispose of object #%" PRIu64 " %p found poison %#" PRIx64 " (disposed twice?)", o->id,
             (void *)o, o->poison);
    if (o->a != o->b)
        fail("dispose: object #%" PRIu64 ": torn update under the lock (a=%ld b=%ld)", o->id, o->a,
             o->b);
    /* acquire ordering comes from the last unref (see ref.h). */
    if (o->a != atomic_load_explicit(&o->mutations, memory_order_relaxed))
        fail("object #%" PRIu64 ": lost update: %ld locked increments, %ld recorded", o->id, o->a,
             atomic_load(&o->mutations));
    o->poison = POISON_DEAD;
    moor_unlock(o);
    atomic_fetch_add_explicit(&disposed, 1, memory_order_relaxed);
}

static struct sobj *sobj_new(void)
{
    struct sobj *o = moor_object_new(sobj_class);

    if (!o) {
        fail("moor_object_new: %s", strerror(errno));
        return NULL;
    }
    o->poison = POISON_ALIVE;
    /* relaxed: a unique number, nothing is published through it. */
    o->id = atomic_fetch_add_explicit(&created, 1, memory_order_relaxed);
    return o;
}

/* Lock @o (a reference owned by the caller), check and bump it. */
static void mutate(struct worker *w, struct sobj *o, const char *where)
{
    if (atomic_load(&o->disposed))
        fail("%s: object #%" PRIu64 " already disposed", where, o->id);
    if (w->rng & 1) {
        moor_lock(o);
    } else if (moor_lock_try(o) < 0) {
        return; /* busy: fine, try-lock never blocks */
    }
    if (!moor_lock_held(o))
        fail("%s: moor_lock_held false right after locking", where);
    check_locked(o, where);
    o->a++;
    o->b++;
    atomic_fetch_add_explicit(&o->mutations, 1, memory_order_relaxed);
    moor_unlock(o);
    w->locked_updates++;
}

/* ---- helpers -------------------------------------------------------- */

static uint64_t rnd(struct worker *w)
{
    return stress_rnd(&w->rng);
}

/* Put @o (an owned reference) in hand @h, dropping what was there. */
static void hold(struct worker *w, unsigned h, struct sobj *o)
{
    struct sobj *old = w->hands[h];

    w->hands[h] = o;
    moor_unref(old);
}

/* A reference returned by moor_weak_get: check it, use it, keep or drop. */
static void use_weak_result(struct worker *w, struct sobj *got, const char *where)
{
    if (!got) {
        w->weak_misses++;
        return;
    }
    w->weak_hits++;
    if (moor_object_refcount(got) < 1)
        fail("%s: weak get returned object #%" PRIu64 " with refcount %d", where, got->id,
             moor_object_refcount(got));
    switch (rnd(w) % 3) {
    case 0: /* lock, check, end the "API call" in one go */
        moor_lock(got);
        check_locked(got, where);
        got->a++;
        got->b++;
        atomic_fetch_add_explicit(&got->mutations, 1, memory_order_relaxed);
        moor_end_api(&got);
        if (got)
            fail("moor_end_api did not clear the pointer");
        w->locked_updates++;
        break;
    case 1: /* keep it: a weak-got reference becomes a strong holder */
        mutate(w, got, where);
        hold(w, (unsigned)(rnd(w) % HANDS), got);
        break;
    default:
        mutate(w, got, where);
        moor_unref(got);
        break;
    }
}

static bool mailbox_push(struct worker *to, struct sobj *o)
{
    struct mailbox *mb = &to->mailbox;
    bool ok = false;

    pthread_mutex_lock(&mb->lock);
    if (mb->count < MAILBOX_CAP) {
        mb->ring[(mb->head + mb->count) % MAILBOX_CAP] = o;
        mb->count++;
        ok = true;
    }
    pthread_mutex_unlock(&mb->lock);
    return ok;
}

static struct sobj *mailbox_pop(struct worker *w)
{
    struct mailbox *mb = &w->mailbox;
    struct sobj *o = NULL;

    pthread_mutex_lock(&mb->lock);
    if (mb->count) {
        o = mb->ring[mb->head];
        mb->ring[mb->head] = NULL;
        mb->head = (mb->head + 1) % MAILBOX_CAP;
        mb->count--;
    }
    pthread_mutex_unlock(&mb->lock);
    return o;
}

/* ---- operations ----------------------------------------------------- */

static void op_take(struct worker *w, unsigned h)
{
    struct slot *s = &pool[rnd(w) % POOL_SIZE];
    struct sobj *o;

    pthread_mutex_lock(&s->lock);
    o = moor_ref(s->obj); /* the pool's reference keeps it alive here */
    pthread_mutex_unlock(&s->lock);
    hold(w, h, o);
}

/* Replace a pool entry. The old object's pool reference is dropped while
 * the slot's weak reference still points at it, so weak gets on the slot
 * race with what may be the last unref. */
static void op_replace(struct worker *w)
{
    struct slot *s = &pool[rnd(w) % POOL_SIZE];
    struct sobj *fresh = sobj_new();
    struct sobj *old;

    if (!fresh)
        return;
    pthread_mutex_lock(&s->lock);
    old = s->obj;
    s->obj = fresh;
    pthread_mutex_unlock(&s->lock);
    moor_unref(old);

    pthread_mutex_lock(&s->lock);
    moor_weak_set(&s->weak, s->obj); /* set is serialised by s->lock */
    pthread_mutex_unlock(&s->lock);
    w->replaced++;
}

static void op_pass(struct worker *w, unsigned h)
{
    struct sobj *o = w->hands[h];

    if (!o)
        return;
    w->hands[h] = NULL;
    if (mailbox_push(&workers[rnd(w) % nworkers], o))
        w->passes++;
    else
        moor_unref(o); /* mailbox full: the reference is simply dropped */
}

static void op_receive(struct worker *w, unsigned h)
{
    struct sobj *o = mailbox_pop(w);

    if (o) {
        mutate(w, o, "received");
        hold(w, h, o);
    }
}

static void op_shared_weak_set(struct worker *w, unsigned h)
{
    struct shared_weak *sw = &shared[rnd(w) % SHARED_WEAKS];

    pthread_mutex_lock(&sw->lock);
    if (w->hands[h])
        moor_weak_set(&sw->weak, w->hands[h]);
    else
        moor_weak_clear(&sw->weak);
    pthread_mutex_unlock(&sw->lock);
}

/* A short-lived object that shared weak slots point at when it dies. */
static void op_ephemeral(struct worker *w)
{
    struct shared_weak *sw = &shared[rnd(w) % SHARED_WEAKS];
    struct sobj *o = sobj_new();

    if (!o)
        return;
    pthread_mutex_lock(&sw->lock);
    moor_weak_set(&sw->weak, o);
    pthread_mutex_unlock(&sw->lock);
    if (rnd(w) & 1)
        mutate(w, o, "ephemeral");
    moor_unref(o); /* usually the last reference, unless a weak get won */
}

static void do_op(struct worker *w)
{
    uint64_t r = rnd(w);
    unsigned h = (unsigned)((r >> 8) % HANDS);
    unsigned lw = (unsigned)((r >> 16) % LOCAL_WEAKS);

    switch (r % 18) {
    case 0:
    case 1:
        op_take(w, h);
        break;
    case 2:
        op_replace(w);
        break;
    case 3:
        hold(w, h, NULL); /* drop */
        break;
    case 4:
        op_pass(w, h);
        break;
    case 5:
        op_receive(w, h);
        break;
    case 6:
        if (w->hands[h])
            mutate(w, w->hands[h], "hand");
        break;
    case 7: /* duplicate a reference into another hand */
        hold(w, (h + 1) % HANDS, moor_ref(w->hands[h]));
        break;
    case 8:
        if (w->hands[h])
            moor_weak_set(&w->weaks[lw], w->hands[h]);
        break;
    case 9:
        moor_weak_clear(&w->weaks[lw]);
        break;
    case 10: /* weak get on any thread's local slots, racing its set/clear */
        use_weak_result(w, moor_weak_get(&workers[(r >> 24) % nworkers].weaks[lw]), "local weak");
        break;
    case 11:
        op_shared_weak_set(w, h);
        break;
    case 12:
    case 13:
        use_weak_result(w, moor_weak_get(&shared[(r >> 24) % SHARED_WEAKS].weak), "shared weak");
        break;
    case 14:
    case 15:
        use_weak_result(w, moor_weak_get(&pool[(r >> 24) % POOL_SIZE].weak), "pool weak");
        break;
    case 16:
        op_ephemeral(w);
        break;
    default:
        /* drop every hand at once: bursts of possibly-last unrefs */
        for (unsigned i = 0; i < HANDS; i++)
            hold(w, i, NULL);
        break;
    }
    w->ops++;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    for (unsigned round = 0; stress_go_on(&deadline, round); round++)
        for (unsigned i = 0; i < CLOCK_EVERY; i++)
            do_op(w);
    return NULL;
}

/* ---- set-up and final checks ---------------------------------------- */

static void setup_world(void)
{
    moor_error err = {0};

    sobj_class = moor_class_new("stress_obj", moor_lockable_class(), sizeof(struct sobj),
                                sobj_dispose, &err);
    if (!sobj_class) {
        fprintf(stderr, "stress-object: moor_class_new: %s\n", moor_error_message(&err));
        exit(1);
    }
    for (unsigned i = 0; i < POOL_SIZE; i++) {
        pthread_mutex_init(&pool[i].lock, NULL);
        pool[i].obj = sobj_new();
        if (!pool[i].obj)
            exit(1);
        moor_weak_set(&pool[i].weak, pool[i].obj);
    }
    for (unsigned i = 0; i < SHARED_WEAKS; i++)
        pthread_mutex_init(&shared[i].lock, NULL);
    for (unsigned i = 0; i < nworkers; i++) {
        workers[i].index = i;
        workers[i].rng = stress_seed(i);
        pthread_mutex_init(&workers[i].mailbox.lock, NULL);
    }
}

/* Drop every strong reference the world holds. Threads are joined. */
static void drop_strong(void)
{
    for (unsigned i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];
        struct sobj *o;

        for (unsigned h = 0; h < HANDS; h++)
            hold(w, h, NULL);
        while ((o = mailbox_pop(w)))
            moor_unref(o);
    }
    for (unsigned i = 0; i < POOL_SIZE; i++)
        moor_clear(&pool[i].obj);
}

/* With no strong holder left, every weak slot must read as empty. */
static void check_and_clear_weak(void)
{
    moor_weak *all[POOL_SIZE + SHARED_WEAKS + MAX_THREADS * LOCAL_WEAKS];
    unsigned n = 0;

    for (unsigned i = 0; i < POOL_SIZE; i++)
        all[n++] = &pool[i].weak;
    for (unsigned i = 0; i < SHARED_WEAKS; i++)
        all[n++] = &shared[i].weak;
    for (unsigned i = 0; i < nworkers; i++)
        for (unsigned j = 0; j < LOCAL_WEAKS; j++)
            all[n++] = &workers[i].weaks[j];

    for (unsigned i = 0; i < n; i++) {
        struct sobj *got = moor_weak_get(all[i]);

        if (got) {
            fail("after the last strong reference went, a weak get still returned object "
                 "#%" PRIu64 " (refcount %d)",
                 got->id, moor_object_refcount(got));
            moor_unref(got);
        }
        moor_weak_clear(all[i]);
    }
}

int main(int argc, char **argv)
{
    unsigned threads = stress_arg_threads(argc, argv, 4, MAX_THREADS);
    double seconds = stress_env_seconds(STRESS_DEFAULT_SECONDS);
    struct worker total = {0};
    struct timespec start;
    double elapsed;
    size_t census;

    stress_valgrind_caps(&threads, VALGRIND_THREAD, &seconds, VALGRIND_SECS);
    nworkers = threads;
    stress_catch_misuse();
    setup_world();

    start = stress_now();
    deadline = stress_add_seconds(start, seconds);

    for (unsigned i = 0; i < nworkers; i++) {
        int rc = pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);

        if (rc) {
            fprintf(stderr, "stress-object: pthread_create: %s\n", strerror(rc));
            atomic_store(&stress_stop, true);
            nworkers = i;
            break;
        }
    }
    for (unsigned i = 0; i < nworkers; i++)
        pthread_join(workers[i].thread, NULL);
    elapsed = stress_elapsed(&start);
    if (nworkers != threads)
        fail("only %u of %u threads started", nworkers, threads);

    drop_strong();
    check_and_clear_weak();

    for (unsigned i = 0; i < nworkers; i++) {
        total.ops += workers[i].ops;
        total.weak_hits += workers[i].weak_hits;
        total.weak_misses += workers[i].weak_misses;
        total.passes += workers[i].passes;
        total.locked_updates += workers[i].locked_updates;
        total.replaced += workers[i].replaced;
    }
    stress_check_all_disposed(atomic_load(&created), atomic_load(&disposed));
    if (moor_class_live(sobj_class) != 0)
        fail("moor_class_live(stress_obj) = %zu at the end", moor_class_live(sobj_class));
    census = stress_check_census();
    if (total.ops == 0)
        fail("no operation ran");

    printf("stress-object: %u threads, %.2f s: %" PRIu64 " ops (%" PRIu64 " locked updates, "
           "%" PRIu64 " passes, %" PRIu64 " pool replacements, weak gets %" PRIu64 " hit/%" PRIu64
           " miss); objects created %" PRIuFAST64 ", disposed %" PRIuFAST64
           "; census %zu; misuse reports %d: %s\n",
           nworkers, elapsed, total.ops, total.locked_updates, total.passes, total.replaced,
           total.weak_hits, total.weak_misses, atomic_load(&created), atomic_load(&disposed),
           census, stress_misuse_reports(), stress_exit_status() ? "FAIL" : "OK");

    for (unsigned i = 0; i < POOL_SIZE; i++)
        pthread_mutex_destroy(&pool[i].lock);
    for (unsigned i = 0; i < SHARED_WEAKS; i++)
        pthread_mutex_destroy(&shared[i].lock);
    for (unsigned i = 0; i < nworkers; i++)
        pthread_mutex_destroy(&workers[i].mailbox.lock);
    return stress_exit_status();
}
