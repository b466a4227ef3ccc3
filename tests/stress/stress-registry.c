/* SPDX-License-Identifier: MIT */
/*
 * stress-registry.c - threads looking objects up in one registry while
 * others add, remove, rename and collect, until the clock runs out.
 *
 *     stress-registry [THREADS]        worker threads (default 4), plus one
 *                                      renamer thread
 *     MOOR_STRESS_SECONDS=S            run time (default 2; decimals allowed)
 *     MOOR_UNDER_VALGRIND=1            caps threads and time
 *
 * World: SLOTS fixed UUIDs; at most one object per UUID is in the registry
 * at a time (the registry enforces it). Names come from a pool of
 * 2 * SLOTS names, so adds and renames clash often. Every worker picks
 * random operations: lookups by UUID or name, plain or *_locked (locking
 * and mutating the object), add of a fresh object under a slot's UUID,
 * removal (after a *_locked lookup, or with the object unlocked), rename
 * (always with the object locked, by this test's convention), collect,
 * and a check of rename atomicity. A dedicated renamer thread flips one
 * object, kept out of everyone else's way, between "ren-a" and "ren-b".
 *
 * Checked:
 *   - no lookup returns an object whose dispose ran (flag and poison word);
 *   - a *_locked lookup returns a member: while its mutex is held, a
 *     lookup by its UUID finds that very object;
 *   - removal after a *_locked lookup always succeeds (nobody can remove a
 *     locked object); a rename under the lock is visible at once;
 *   - every object is disposed exactly once, at refcount 0, and never while
 *     it is still in the registry (its state says "removed" or "never
 *     added");
 *   - rename is atomic: with d renames completed before a pair of lookups
 *     ("ren-a" and "ren-b", in random order) and s started after it, if
 *     s == d exactly one lookup succeeds; if s == d + 1 (one rename at
 *     some instant L) then old-then-new cannot both fail and new-then-old
 *     cannot both succeed, as either would put L before the first lookup
 *     and after the second;
 *   - count and collect are snapshots: never more than SLOTS + 1 objects,
 *     never two objects with the same UUID in one collect; at the end,
 *     collect, count and the test's own tally agree;
 *   - after the registry is dropped, created == disposed and the census is
 *     zero; no misuse report was made.
 * Any failure prints "stress-registry: FAIL: ..." and exits with 1.
 */
#define _GNU_SOURCE
#define STRESS_PROG "stress-registry"
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
#include <moor/registry.h>

#include "stress-util.h"

#ifdef MOOR_TSAN
/* ThreadSanitizer: liburcu is not instrumented. Its own threads (call_rcu,
 * the hash-table resize worker) free heap blocks that liburcu allocated in
 * ours, ordered by atomics and futexes TSan cannot see; ignore only the
 * malloc/free interceptors called from inside liburcu (our code stays
 * checked; the ordering liburcu gives us is annotated in registry.c). */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "called_from_lib:liburcu-bp.so\n"
           "called_from_lib:liburcu-cds.so\n";
}
#endif

#define MAX_THREADS     32
#define SLOTS           48
#define NAMES           (2 * SLOTS)
#define CLOCK_EVERY     64
#define VALGRIND_SECS   4.0
#define VALGRIND_THREAD 3

#define POISON_ALIVE UINT64_C(0xa11ea11ea11ea11e)
#define POISON_DEAD  UINT64_C(0xdeaddeaddeaddead)

enum { NEVER_ADDED, ADDED, REMOVED };

struct sobj {
    moor_lockable parent;
    uint64_t poison; /* POISON_ALIVE until dispose */
    uint64_t id;
    moor_uuid uuid;
    long a, b;           /* under the lock: always equal between locks */
    atomic_int state;    /* NEVER_ADDED -> ADDED -> REMOVED */
    atomic_int disposed; /* set once by dispose */
};

struct worker {
    pthread_t thread;
    uint64_t rng;
    uint64_t lookups, hits, adds, removes, renames, collects, rename_checks;
};

static const moor_class *sobj_class;
static moor_registry *reg;
static moor_uuid slot_uuid[SLOTS];
static char names[NAMES][16];
static struct worker workers[MAX_THREADS];
static unsigned nworkers;
static struct timespec deadline;

static struct sobj *flipper; /* renamed only by the renamer thread */
static atomic_ulong renames_started, renames_done;

static atomic_long members; /* the test's own tally of registry members */
static atomic_uint_fast64_t created, disposed;

/* ---- objects -------------------------------------------------------- */

static void sobj_dispose(void *p)
{
    struct sobj *o = p;

    if (moor_object_refcount(o) != 0)
        fail("dispose of object #%" PRIu64 " with refcount %d", o->id, moor_object_refcount(o));
    if (atomic_exchange(&o->disposed, 1))
        fail("object #%" PRIu64 " disposed twice", o->id);
    if (atomic_load(&o->state) == ADDED)
        fail("object #%" PRIu64 " disposed while still in the registry", o->id);
    if (o->poison != POISON_ALIVE || o->a != o->b)
        fail("dispose of object #%" PRIu64 ": poison %#" PRIx64 ", a=%ld b=%ld", o->id, o->poison,
             o->a, o->b);
    o->poison = POISON_DEAD;
    atomic_fetch_add(&disposed, 1);
}

static struct sobj *sobj_new(const moor_uuid *uuid)
{
    struct sobj *o = moor_object_new(sobj_class);

    if (!o) {
        fail("moor_object_new: %s", strerror(errno));
        return NULL;
    }
    o->poison = POISON_ALIVE;
    o->uuid = *uuid;
    o->id = atomic_fetch_add(&created, 1);
    return o;
}

/* A reference from a lookup: the object must be alive. */
static void check_alive(struct sobj *o, const char *where)
{
    if (atomic_load(&o->disposed) || moor_object_refcount(o) < 1)
        fail("%s returned object #%" PRIu64 " after its dispose (refcount %d)", where, o->id,
             moor_object_refcount(o));
}

/* With @o locked by a *_locked lookup: alive, a member, not torn. */
static void check_locked_member(struct sobj *o, const char *where)
{
    struct sobj *again;

    check_alive(o, where);
    if (o->poison != POISON_ALIVE || o->a != o->b)
        fail("%s: object #%" PRIu64 " poison %#" PRIx64 " a=%ld b=%ld", where, o->id, o->poison,
             o->a, o->b);
    again = moor_registry_find_uuid(reg, &o->uuid);
    if (again != o)
        fail("%s returned object #%" PRIu64 " locked, but it is not (or no longer) a member", where,
             o->id);
    moor_unref(again);
    o->a++;
    o->b++;
}

/* ---- helpers -------------------------------------------------------- */

static uint64_t rnd(struct worker *w)
{
    return stress_rnd(&w->rng);
}

static const moor_uuid *any_uuid(struct worker *w)
{
    return &slot_uuid[rnd(w) % SLOTS];
}

static const char *any_name(struct worker *w)
{
    return names[rnd(w) % NAMES];
}

/* ---- operations ----------------------------------------------------- */

static void op_lookup(struct worker *w)
{
    uint64_t r = rnd(w);
    struct sobj *o;

    w->lookups++;
    if (r & 1) {
        o = r & 2 ? moor_registry_find_uuid(reg, any_uuid(w))
                  : moor_registry_find_name(reg, any_name(w));
        if (o) {
            w->hits++;
            check_alive(o, "find");
            moor_unref(o);
        }
        return;
    }
    o = r & 2 ? moor_registry_find_uuid_locked(reg, any_uuid(w))
              : moor_registry_find_name_locked(reg, any_name(w));
    if (o) {
        w->hits++;
        check_locked_member(o, "find_locked");
        moor_end_api(&o);
    }
}

static void op_add(struct worker *w)
{
    struct sobj *o = sobj_new(any_uuid(w));
    moor_error err = MOOR_ERROR_INIT;
    int rc;

    if (!o)
        return;
    moor_lock(o);
    rc = moor_registry_add(reg, o, &o->uuid, any_name(w), &err);
    if (rc == 0) {
        atomic_store(&o->state, ADDED);
        atomic_fetch_add(&members, 1);
        w->adds++;
    } else if (rc != -EEXIST) {
        fail("add: %d %s", rc, moor_error_message(&err));
    }
    moor_unlock(o);
    moor_unref(o); /* on success the registry's reference remains */
}

/* Mark @o (locked, just removed by us) as gone from the registry. */
static void note_removed(struct worker *w, struct sobj *o)
{
    atomic_store(&o->state, REMOVED);
    atomic_fetch_sub(&members, 1);
    w->removes++;
}

static void op_remove(struct worker *w)
{
    moor_error err = MOOR_ERROR_INIT;
    struct sobj *o;
    int rc;

    if (rnd(w) & 1) { /* the usual way: find locked, remove, end */
        o = moor_registry_find_uuid_locked(reg, any_uuid(w));
        if (!o)
            return;
        rc = moor_registry_remove(reg, o, &err);
        if (rc != 0)
            fail("remove of a locked member #%" PRIu64 ": %d %s", o->id, rc,
                 moor_error_message(&err));
        else
            note_removed(w, o);
        moor_end_api(&o);
        return;
    }
    /* Unlocked: remove locks it; a racing remover may win (-ENOENT). */
    o = moor_registry_find_uuid(reg, any_uuid(w));
    if (!o)
        return;
    if (o == flipper) {
        moor_unref(o);
        return;
    }
    rc = moor_registry_remove(reg, o, &err);
    if (rc == 0) {
        moor_lock(o);
        note_removed(w, o);
        moor_unlock(o);
    } else if (rc != -ENOENT) {
        fail("remove: %d %s", rc, moor_error_message(&err));
    }
    moor_unref(o);
}

static void op_rename(struct worker *w)
{
    moor_error err = MOOR_ERROR_INIT;
    const char *to = any_name(w);
    struct sobj *o = moor_registry_find_name_locked(reg, any_name(w));
    struct sobj *check;
    int rc;

    if (!o)
        return;
    if (o == flipper) {
        moor_end_api(&o);
        return;
    }
    rc = moor_registry_rename(reg, o, to, &err);
    if (rc == 0) {
        /* Renames are made under the object lock in this test, so ours is
         * the current name until we unlock. */
        check = moor_registry_find_name(reg, to);
        if (check != o)
            fail("rename of #%" PRIu64 " to '%s' succeeded but the name finds %p", o->id, to,
                 (void *)check);
        moor_unref(check);
        w->renames++;
    } else if (rc != -EEXIST) {
        fail("rename of a locked member #%" PRIu64 ": %d %s", o->id, rc, moor_error_message(&err));
    }
    moor_end_api(&o);
}

static void op_collect(struct worker *w)
{
    moor_error err = MOOR_ERROR_INIT;
    size_t count = moor_registry_count(reg);
    void **objs = NULL;
    int n = moor_registry_collect(reg, NULL, NULL, &objs, &err);

    if (count > SLOTS + 1)
        fail("count %zu > %d possible members", count, SLOTS + 1);
    if (n < 0) {
        fail("collect: %d %s", n, moor_error_message(&err));
        return;
    }
    if (n > SLOTS + 1)
        fail("collect returned %d > %d possible members", n, SLOTS + 1);
    for (int i = 0; i < n; i++) {
        struct sobj *o = objs[i];

        check_alive(o, "collect");
        for (int j = 0; j < i; j++)
            if (moor_uuid_equal(&o->uuid, &((struct sobj *)objs[j])->uuid))
                fail("collect is not a snapshot: objects #%" PRIu64 " and #%" PRIu64
                     " share a UUID",
                     o->id, ((struct sobj *)objs[j])->id);
    }
    moor_registry_array_free(objs);
    w->collects++;
}

/* See the top comment: a pair of lookups against the renamer's counters. */
static void op_rename_check(struct worker *w)
{
    bool a_first = rnd(w) & 1;
    unsigned long done = atomic_load(&renames_done);
    struct sobj *first = moor_registry_find_name(reg, a_first ? "ren-a" : "ren-b");
    struct sobj *second = moor_registry_find_name(reg, a_first ? "ren-b" : "ren-a");
    unsigned long started = atomic_load(&renames_started);
    /* Rename number k (from 0) goes a -> b when k is even. */
    bool now_a = done % 2 == 0;
    bool first_is_old = a_first == now_a;
    bool found_a = a_first ? first : second, found_b = a_first ? second : first;

    if (started == done && found_a + found_b != 1)
        fail("no rename in flight, yet ren-a %s and ren-b %s", found_a ? "found" : "missing",
             found_b ? "found" : "missing");
    /* With one rename at instant L: old first, both failing would need
     * t_new < L < t_old while t_old < t_new; new first, both succeeding
     * would need t_old < L < t_new while t_new < t_old. */
    if (started == done + 1 && !first && !second && first_is_old)
        fail("during one rename, the old name stopped resolving before the new one started");
    if (started == done + 1 && first && second && !first_is_old)
        fail("during one rename, the new name resolved before the old one still did");
    moor_unref(first);
    moor_unref(second);
    w->rename_checks++;
}

static void do_op(struct worker *w)
{
    switch (rnd(w) % 16) {
    case 0:
    case 1:
        op_add(w);
        break;
    case 2:
    case 3:
        op_remove(w);
        break;
    case 4:
    case 5:
        op_rename(w);
        break;
    case 6:
        op_collect(w);
        break;
    case 7:
    case 8:
        op_rename_check(w);
        break;
    default:
        op_lookup(w);
        break;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    for (unsigned round = 0; stress_go_on(&deadline, round); round++)
        for (unsigned i = 0; i < CLOCK_EVERY; i++)
            do_op(w);
    return NULL;
}

static void *renamer_main(void *arg)
{
    moor_error err = MOOR_ERROR_INIT;
    unsigned long k = 0;

    (void)arg;
    while (!atomic_load_explicit(&stress_stop, memory_order_relaxed) &&
           !(k % 64 == 0 && stress_past(&deadline))) {
        atomic_fetch_add(&renames_started, 1);
        if (moor_registry_rename(reg, flipper, k % 2 == 0 ? "ren-b" : "ren-a", &err) != 0)
            fail("renamer: %s", moor_error_message(&err));
        atomic_fetch_add(&renames_done, 1);
        k++;
    }
    return NULL;
}

/* ---- set-up and final checks ---------------------------------------- */

static void setup_world(void)
{
    moor_error err = MOOR_ERROR_INIT;
    moor_uuid fu;

    sobj_class = moor_class_new("stress_reg_obj", moor_lockable_class(), sizeof(struct sobj),
                                sobj_dispose, &err);
    reg = sobj_class ? moor_registry_new(&err) : NULL;
    if (!reg) {
        fprintf(stderr, "stress-registry: set-up: %s\n", moor_error_message(&err));
        exit(1);
    }
    for (unsigned i = 0; i < SLOTS; i++)
        if (moor_uuid_generate(&slot_uuid[i], &err) < 0) {
            fprintf(stderr, "stress-registry: %s\n", moor_error_message(&err));
            exit(1);
        }
    for (unsigned i = 0; i < NAMES; i++)
        snprintf(names[i], sizeof(names[i]), "vm-%u", i);
    if (moor_uuid_generate(&fu, &err) < 0 || !(flipper = sobj_new(&fu)) ||
        moor_registry_add(reg, flipper, &fu, "ren-a", &err) < 0) {
        fprintf(stderr, "stress-registry: flipper: %s\n", moor_error_message(&err));
        exit(1);
    }
    atomic_store(&flipper->state, ADDED);
    atomic_fetch_add(&members, 1);
    for (unsigned i = 0; i < nworkers; i++)
        workers[i].rng = stress_seed(i);
}

/* Quiescent: collect, count and the tally agree; then empty the registry. */
static void final_checks_and_drain(void)
{
    void **objs = NULL;
    moor_error err = MOOR_ERROR_INIT;
    int n = moor_registry_collect(reg, NULL, NULL, &objs, &err);

    if (n < 0) {
        fail("final collect: %s", moor_error_message(&err));
        return;
    }
    if ((size_t)n != moor_registry_count(reg) || n != atomic_load(&members))
        fail("at rest: collect %d, count %zu, tally %ld", n, moor_registry_count(reg),
             atomic_load(&members));
    for (int i = 0; i < n; i++) {
        struct sobj *o = objs[i];

        moor_lock(o);
        if (moor_registry_remove(reg, o, &err) != 0)
            fail("final remove: %s", moor_error_message(&err));
        atomic_store(&o->state, REMOVED);
        moor_unlock(o);
    }
    moor_registry_array_free(objs);
    if (moor_registry_count(reg) != 0)
        fail("count %zu after removing everything", moor_registry_count(reg));
}

static void start_threads(pthread_t *renamer)
{
    unsigned started = 0;

    for (unsigned i = 0; i < nworkers; i++, started++)
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0)
            break;
    if (started != nworkers) {
        fail("only %u of %u threads started", started, nworkers);
        nworkers = started;
    }
    if (pthread_create(renamer, NULL, renamer_main, NULL) != 0) {
        fail("renamer thread did not start");
        *renamer = pthread_self();
    }
}

int main(int argc, char **argv)
{
    unsigned threads = stress_arg_threads(argc, argv, 4, MAX_THREADS);
    double seconds = stress_env_seconds(STRESS_DEFAULT_SECONDS);
    struct worker total = {0};
    pthread_t renamer;
    size_t census;

    stress_valgrind_caps(&threads, VALGRIND_THREAD, &seconds, VALGRIND_SECS);
    nworkers = threads;
    stress_catch_misuse();
    setup_world();

    deadline = stress_add_seconds(stress_now(), seconds);
    start_threads(&renamer);
    for (unsigned i = 0; i < nworkers; i++)
        pthread_join(workers[i].thread, NULL);
    if (!pthread_equal(renamer, pthread_self()))
        pthread_join(renamer, NULL);

    final_checks_and_drain();
    moor_clear(&flipper);
    moor_clear(&reg); /* waits for every deferred release */

    for (unsigned i = 0; i < nworkers; i++) {
        total.lookups += workers[i].lookups;
        total.hits += workers[i].hits;
        total.adds += workers[i].adds;
        total.removes += workers[i].removes;
        total.renames += workers[i].renames;
        total.collects += workers[i].collects;
        total.rename_checks += workers[i].rename_checks;
    }
    stress_check_all_disposed(atomic_load(&created), atomic_load(&disposed));
    census = stress_check_census();
    if (total.lookups == 0 || total.adds == 0 || total.removes == 0)
        fail("too little happened (lookups %" PRIu64 ", adds %" PRIu64 ", removes %" PRIu64 ")",
             total.lookups, total.adds, total.removes);

    printf("stress-registry: %u threads + renamer, %.2f s: lookups %" PRIu64 " (%" PRIu64
           " hits), adds %" PRIu64 ", removes %" PRIu64 ", renames %" PRIu64 " + %lu flips, "
           "collects %" PRIu64 ", rename checks %" PRIu64 "; objects created %" PRIuFAST64
           ", disposed %" PRIuFAST64 "; census %zu: %s\n",
           nworkers, seconds, total.lookups, total.hits, total.adds, total.removes, total.renames,
           atomic_load(&renames_done), total.collects, total.rename_checks, atomic_load(&created),
           atomic_load(&disposed), census, stress_exit_status() ? "FAIL" : "OK");
    return stress_exit_status();
}
