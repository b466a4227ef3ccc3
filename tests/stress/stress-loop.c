/* SPDX-License-Identifier: MIT */
/*
 * stress-loop.c - one event loop run by a loop thread and by several
 * threads taking turns, while other threads and the callbacks themselves
 * add, remove, remove_sync and update handlers, schedule callbacks and
 * re-enter the loop.
 *
 *     stress-loop [THREADS]      worker threads (default 4, 2..32): half
 *                                iterate the loop, half change it; plus the
 *                                loop's own thread
 *     MOOR_STRESS_SECONDS=S      run time (default 2; decimals allowed)
 *     MOOR_UNDER_VALGRIND=1      caps the threads at 4 and the time at 2 s
 *
 * Handlers belong to records (struct rec): an eventfd handler, a one-shot
 * timer or a periodic timer. A record lives in a slot of a table while its
 * handler may be removed; whoever takes it out of its slot (a changer
 * thread or a callback) is the only one to remove it, with moor_loop_remove
 * or moor_loop_remove_sync. A record has two references: the loop's,
 * dropped by the handler's free_fn, and the table's, dropped by its
 * remover. The last drop checks the record's history and frees it.
 *
 * Iterating threads mostly call moor_loop_iterate() with short timeouts,
 * sometimes moor_loop_run(), which changers end with moor_loop_quit() now
 * and then (and main at the end, until every thread is back).
 *
 * Callbacks (run by whichever thread holds the turn) drain their eventfd,
 * and now and then remove themselves or another record (plainly or with
 * remove_sync), add records, schedule callbacks, update timers, or run a
 * nested iteration.
 *
 * Checked:
 *   - one thread dispatches at a time: callbacks claim a global owner slot
 *     with their thread id (nesting in that thread allowed);
 *   - no recursion: a record's callback never starts while it is running;
 *   - moor_loop_in_loop() is true in every callback;
 *   - remove_sync: the callback is not running when it returns (unless the
 *     remover is that callback's own thread), and no callback of the record
 *     starts afterwards (its start count when remove_sync returned equals
 *     its final count);
 *   - plain remove returns -ENOENT only for a one-shot timer that fired;
 *   - every free_fn runs exactly once, never while a callback of its record
 *     runs, and promptly: at the end, records are removed while the loop
 *     thread sleeps, and each free_fn must come without further events, and never on a freed record
 * (poison word); every record is finally dropped; scheduled callbacks run at most once and are
 * freed exactly once (at dispose if they never ran);
 *   - no misuse report; the census is zero at the end.
 */
#define STRESS_PROG "stress-loop"
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <moor/loop.h>
#include <moor/object.h>

#include "stress-util.h"

#define MAX_THREADS      32
#define VALGRIND_THREADS 4
#define VALGRIND_SECONDS 2.0
#define SLOTS            48
#define MAX_NEST         3

#define REC_ALIVE 0x72656321u /* "rec!" */
#define REC_DEAD  0xdeadbeefu

enum { KIND_FD, KIND_ONESHOT, KIND_PERIODIC };

struct rec {
    uint32_t poison;
    atomic_int refs; /* the loop's (free_fn) + the table's (remover) */
    int kind;
    int fd;                    /* KIND_FD: an eventfd, closed at the last drop */
    atomic_int starts;         /* callbacks started */
    atomic_int running;        /* callbacks in progress (0 or 1) */
    atomic_int freed;          /* free_fn calls */
    atomic_bool claimed;       /* taken out of the table by its remover */
    atomic_bool synced;        /* removed with remove_sync */
    atomic_int starts_at_sync; /* starts when remove_sync returned */
};

enum { SLOT_EMPTY, SLOT_RESERVED, SLOT_READY };

static struct slot {
    int state;
    struct rec *rec;
    uint64_t id;
} slots[SLOTS];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;

static moor_loop *loop;
static atomic_int dispatcher;   /* tid of the thread running callbacks, 0 */
static _Thread_local int depth; /* callbacks nested in this thread */
static _Thread_local uint64_t cb_seed;

static atomic_long recs_created, recs_dropped, frees, removes, syncs;
static atomic_long cb_runs, nested_runs, sched_made, sched_ran, sched_freed, iterations, runs;
static atomic_int workers_left;

static int self_tid(void)
{
    static _Thread_local int tid;

    if (!tid)
        tid = (int)syscall(SYS_gettid);
    return tid;
}

/* ---- records -------------------------------------------------------------- */

static void rec_check(const struct rec *r, const char *where)
{
    if (r->poison != REC_ALIVE)
        fail("%s: record %p poison 0x%x: used after its last drop", where, (const void *)r,
             r->poison);
}

static void rec_put(struct rec *r)
{
    rec_check(r, "rec_put");
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    /* Last drop: the handler is gone and its remover is done. */
    if (atomic_load(&r->freed) != 1)
        fail("record %p dropped with %d free_fn calls", (void *)r, atomic_load(&r->freed));
    if (atomic_load(&r->synced) && atomic_load(&r->starts) != atomic_load(&r->starts_at_sync))
        fail("record %p: %d callback(s) started after remove_sync returned", (void *)r,
             atomic_load(&r->starts) - atomic_load(&r->starts_at_sync));
    if (r->fd >= 0)
        close(r->fd);
    r->poison = REC_DEAD;
    free(r);
    atomic_fetch_add(&recs_dropped, 1);
}

static void rec_free_fn(void *opaque)
{
    struct rec *r = opaque;

    rec_check(r, "free_fn");
    if (atomic_fetch_add(&r->freed, 1) != 0)
        fail("record %p: free_fn called twice", (void *)r);
    if (atomic_load(&r->running) != 0)
        fail("record %p: free_fn while its callback runs", (void *)r);
    atomic_fetch_add(&frees, 1);
    rec_put(r);
}

/* Take a random ready record out of the table (it is ours to remove). */
static bool claim(uint64_t *seed, struct rec *want, struct rec **r, uint64_t *id)
{
    bool found = false;

    pthread_mutex_lock(&slots_lock);
    for (unsigned i = 0, start = (unsigned)(stress_rnd(seed) % SLOTS); i < SLOTS; i++) {
        struct slot *s = &slots[(start + i) % SLOTS];

        if (s->state == SLOT_READY && (!want || s->rec == want)) {
            *r = s->rec;
            *id = s->id;
            atomic_store(&s->rec->claimed, true);
            s->state = SLOT_EMPTY;
            s->rec = NULL;
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&slots_lock);
    return found;
}

/* A new reference to a random ready record, left in the table. */
static bool peek(uint64_t *seed, struct rec **r, uint64_t *id)
{
    bool found = false;

    pthread_mutex_lock(&slots_lock);
    for (unsigned i = 0, start = (unsigned)(stress_rnd(seed) % SLOTS); i < SLOTS; i++) {
        struct slot *s = &slots[(start + i) % SLOTS];

        if (s->state == SLOT_READY) {
            *r = s->rec;
            *id = s->id;
            atomic_fetch_add(&s->rec->refs, 1);
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&slots_lock);
    return found;
}

static void remove_claimed(struct rec *r, uint64_t id, bool sync)
{
    int rc = sync ? moor_loop_remove_sync(loop, id) : moor_loop_remove(loop, id);

    if (rc == -ENOENT) {
        /* Only a one-shot timer that fired removes itself. */
        if (r->kind != KIND_ONESHOT || atomic_load(&r->starts) == 0)
            fail("remove of record %p (kind %d, %d starts): -ENOENT", (void *)r, r->kind,
                 atomic_load(&r->starts));
    } else if (rc != 0) {
        fail("remove: %d", rc);
    } else if (sync) {
        atomic_store(&r->starts_at_sync, atomic_load(&r->starts));
        atomic_store(&r->synced, true);
        /* From another thread, its callback cannot be running now; in the
         * dispatching thread a frame of it may be below us. */
        if (depth == 0 && atomic_load(&r->running) != 0)
            fail("record %p: callback running after remove_sync returned", (void *)r);
        atomic_fetch_add(&syncs, 1);
    }
    atomic_fetch_add(&removes, 1);
    rec_put(r);
}

static void fd_cb(moor_loop *l, uint64_t id, int fd, unsigned revents, void *opaque);
static void timer_cb(moor_loop *l, uint64_t id, void *opaque);

/* Add a record of a random kind into a free slot; false if the table is
 * full. */
static bool add_one(uint64_t *seed)
{
    struct slot *slot = NULL;
    struct rec *r;
    int rc;

    pthread_mutex_lock(&slots_lock);
    for (unsigned i = 0, start = (unsigned)(stress_rnd(seed) % SLOTS); i < SLOTS; i++) {
        if (slots[(start + i) % SLOTS].state == SLOT_EMPTY) {
            slot = &slots[(start + i) % SLOTS];
            slot->state = SLOT_RESERVED;
            break;
        }
    }
    pthread_mutex_unlock(&slots_lock);
    if (!slot)
        return false;

    r = calloc(1, sizeof(*r));
    if (!r) {
        fail("out of memory");
        return false;
    }
    r->poison = REC_ALIVE;
    atomic_init(&r->refs, 2);
    /* Half are eventfd handlers, ready from the start. */
    r->kind = stress_rnd(seed) % 2 ? KIND_FD : 1 + (int)(stress_rnd(seed) % 2);
    r->fd = -1;
    atomic_fetch_add(&recs_created, 1);

    uint64_t id = 0;

    if (r->kind == KIND_FD) {
        r->fd = eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);
        if (r->fd < 0)
            fail("eventfd failed");
        rc = moor_loop_add_fd(loop, r->fd, MOOR_LOOP_IN, fd_cb, r, rec_free_fn, &id, NULL);
    } else {
        uint32_t period = r->kind == KIND_PERIODIC ? 1 + (uint32_t)(stress_rnd(seed) % 3) : 0;

        rc = moor_loop_add_timer(loop, (uint32_t)(stress_rnd(seed) % 4), period, timer_cb, r,
                                 rec_free_fn, &id, NULL);
    }
    pthread_mutex_lock(&slots_lock);
    if (rc == 0) {
        slot->rec = r;
        slot->id = id;
        slot->state = SLOT_READY;
    } else {
        slot->state = SLOT_EMPTY;
    }
    pthread_mutex_unlock(&slots_lock);
    if (rc < 0) {
        fail("add: %d", rc);
        rec_put(r); /* the table's; free_fn dropped the loop's */
    }
    return true;
}

/* ---- scheduled callbacks -------------------------------------------------- */

struct sitem {
    uint32_t poison;
    atomic_int ran;
};

static void sched_cb(moor_loop *l, void *opaque)
{
    struct sitem *it = opaque;

    if (!moor_loop_in_loop(l))
        fail("scheduled callback outside the loop");
    if (it->poison != REC_ALIVE || atomic_fetch_add(&it->ran, 1) != 0)
        fail("scheduled callback run twice or freed");
    atomic_fetch_add(&sched_ran, 1);
}

static void sched_free(void *opaque)
{
    struct sitem *it = opaque;

    if (it->poison != REC_ALIVE)
        fail("scheduled item freed twice");
    it->poison = REC_DEAD;
    atomic_fetch_add(&sched_freed, 1);
    free(it);
}

static void schedule_one(void)
{
    struct sitem *it = malloc(sizeof(*it));

    if (!it) {
        fail("out of memory");
        return;
    }
    it->poison = REC_ALIVE;
    atomic_init(&it->ran, 0);
    if (moor_loop_schedule(loop, sched_cb, it, sched_free, NULL) != 0) {
        fail("schedule failed");
        free(it);
        return;
    }
    atomic_fetch_add(&sched_made, 1);
}

/* ---- callbacks -------------------------------------------------------------- */

static void enter_cb(moor_loop *l, struct rec *r)
{
    int me = self_tid(), expected = 0;

    if (!cb_seed)
        cb_seed = stress_seed((unsigned)me);
    rec_check(r, "callback");
    if (depth == 0 && !atomic_compare_exchange_strong(&dispatcher, &expected, me))
        fail("thread %d dispatches while thread %d does", me, expected);
    depth++;
    if (!moor_loop_in_loop(l))
        fail("callback with moor_loop_in_loop() false");
    if (atomic_fetch_add(&r->running, 1) != 0)
        fail("record %p: callback re-entered", (void *)r);
    if (atomic_load(&r->freed) != 0)
        fail("record %p: callback after its free_fn", (void *)r);
    atomic_fetch_add(&r->starts, 1);
    atomic_fetch_add(&cb_runs, 1);
}

static void leave_cb(struct rec *r)
{
    atomic_fetch_sub(&r->running, 1);
    if (--depth == 0)
        atomic_store(&dispatcher, 0);
}

/* What a callback may do to the loop it runs in. */
static void callback_actions(moor_loop *l, struct rec *self)
{
    struct rec *r;
    uint64_t id;
    unsigned op = (unsigned)(stress_rnd(&cb_seed) % 64);

    if (op < 3) {
        if (claim(&cb_seed, self, &r, &id)) /* remove self */
            remove_claimed(r, id, op == 0);
    } else if (op < 6) {
        if (claim(&cb_seed, NULL, &r, &id)) /* remove any, maybe self */
            remove_claimed(r, id, op == 3);
    } else if (op < 9) {
        add_one(&cb_seed);
    } else if (op < 11) {
        schedule_one();
    } else if (op < 13 && depth < MAX_NEST) {
        if (moor_loop_iterate(l, 0) < 0)
            fail("nested iterate failed");
        atomic_fetch_add(&nested_runs, 1);
    } else if (op < 14 && self->kind != KIND_FD) {
        if (peek(&cb_seed, &r, &id)) {
            if (r->kind != KIND_FD)
                moor_loop_update_timer(l, id, (uint32_t)(stress_rnd(&cb_seed) % 3),
                                       r->kind == KIND_PERIODIC ? 2 : 0, NULL);
            rec_put(r);
        }
    }
}

static void fd_cb(moor_loop *l, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct rec *r = opaque;
    uint64_t v;

    (void)id;
    enter_cb(l, r);
    if (!(revents & MOOR_LOOP_IN))
        fail("fd callback without IN: 0x%x", revents);
    /* Drain half the time; otherwise stay ready for the next iteration. */
    if (stress_rnd(&cb_seed) % 2 && read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        fail("eventfd read failed");
    callback_actions(l, r);
    leave_cb(r);
}

static void timer_cb(moor_loop *l, uint64_t id, void *opaque)
{
    struct rec *r = opaque;

    (void)id;
    enter_cb(l, r);
    callback_actions(l, r);
    leave_cb(r);
}

/* ---- threads ---------------------------------------------------------------- */

struct worker {
    pthread_t thread;
    unsigned index;
    bool iterator;
    struct timespec deadline;
};

static void *iterator_main(struct worker *w)
{
    uint64_t seed = stress_seed(w->index);

    for (unsigned round = 0; stress_go_on(&w->deadline, round); round++) {
        /* Now and then a run, which only a quit ends (changers quit now and
         * then, and main keeps quitting at the end until we are back). */
        bool run = stress_rnd(&seed) % 16 == 0;
        int rc = run ? moor_loop_run(loop) : moor_loop_iterate(loop, (int)(stress_rnd(&seed) % 3));

        if (rc < 0)
            fail("%s: %d", run ? "run" : "iterate", rc);
        atomic_fetch_add(run ? &runs : &iterations, 1);
        if (moor_loop_in_loop(loop))
            fail("in_loop after iterate returned");
    }
    return NULL;
}

static void *changer_main(struct worker *w)
{
    uint64_t seed = stress_seed(w->index);
    struct rec *r;
    uint64_t id;
    uint64_t one = 1;

    for (unsigned round = 0; stress_go_on(&w->deadline, round); round++) {
        unsigned op = (unsigned)(stress_rnd(&seed) % 32);

        if (op < 4) {
            add_one(&seed);
        } else if (op < 6) {
            if (claim(&seed, NULL, &r, &id))
                remove_claimed(r, id, false);
        } else if (op < 9) {
            if (claim(&seed, NULL, &r, &id))
                remove_claimed(r, id, true);
        } else if (op < 24) {
            if (peek(&seed, &r, &id)) {
                if (r->kind == KIND_FD && write(r->fd, &one, sizeof(one)) != sizeof(one))
                    fail("eventfd write failed");
                rec_put(r);
            }
        } else if (op < 27) {
            if (peek(&seed, &r, &id)) {
                int rc = r->kind == KIND_FD
                             ? moor_loop_update_fd(loop, id, MOOR_LOOP_IN, NULL)
                             : moor_loop_update_timer(loop, id, (uint32_t)(stress_rnd(&seed) % 3),
                                                      r->kind == KIND_PERIODIC ? 1 : 0, NULL);

                /* -ENOENT: removed since we looked, or a one-shot that fired. */
                if (rc == -ENOENT && !atomic_load(&r->claimed) &&
                    (r->kind != KIND_ONESHOT || atomic_load(&r->starts) == 0))
                    fail("update of a live record: -ENOENT");
                rec_put(r);
            }
        } else if (op < 31) {
            schedule_one();
        } else if (stress_rnd(&seed) % 4) {
            moor_loop_wakeup(loop);
        } else {
            moor_loop_quit(loop);
        }
        if (round % 64 == 63)
            sched_yield();
    }
    return NULL;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    void *ret = w->iterator ? iterator_main(w) : changer_main(w);

    atomic_fetch_sub(&workers_left, 1);
    return ret;
}

int main(int argc, char **argv)
{
    unsigned nthreads = stress_arg_threads(argc, argv, 4, MAX_THREADS);
    double seconds = stress_env_seconds(STRESS_DEFAULT_SECONDS);
    struct worker workers[MAX_THREADS];
    struct timespec deadline;
    moor_error err = MOOR_ERROR_INIT;
    int rc;

    if (nthreads < 2)
        nthreads = 2;
    stress_valgrind_caps(&nthreads, VALGRIND_THREADS, &seconds, VALGRIND_SECONDS);
    stress_catch_misuse();
    loop = moor_loop_new(&err);
    if (!loop) {
        fprintf(stderr, STRESS_PROG ": moor_loop_new: %s\n", err.message);
        return 1;
    }
    uint64_t seed = 7;
    for (int i = 0; i < SLOTS / 2; i++)
        add_one(&seed);
    if ((rc = moor_loop_thread_start(loop, &err)) < 0) {
        fprintf(stderr, STRESS_PROG ": thread_start: %s\n", err.message);
        return 1;
    }

    deadline = stress_add_seconds(stress_now(), seconds);
    atomic_store(&workers_left, (int)nthreads);
    for (unsigned i = 0; i < nthreads; i++) {
        workers[i] = (struct worker){.index = i + 1, .iterator = i % 2 == 0, .deadline = deadline};
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i])) {
            fprintf(stderr, STRESS_PROG ": pthread_create failed\n");
            return 1;
        }
    }
    /* Runs in progress end only with a quit: keep quitting until every
     * worker is back (bounded). */
    struct timespec back = stress_add_seconds(deadline, 30.0);
    while (atomic_load(&workers_left) > 0 && !stress_past(&back)) {
        moor_loop_quit(loop);
        sched_yield();
    }
    if (atomic_load(&workers_left) > 0) {
        fprintf(stderr, STRESS_PROG ": FAIL: %d worker(s) stuck 30 s after the end\n",
                atomic_load(&workers_left));
        return 1;
    }
    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(workers[i].thread, NULL);
    /* Only the loop thread iterates now, and once the timers are gone it
     * sleeps with no timeout: each removal from here must wake it (or find
     * no visit and free at once), or its free_fn never comes. */
    long removed_now = 0;
    struct rec *r;
    uint64_t id;

    /* Refill the table: fresh fd handlers are ready, so the loop thread is
     * busy dispatching them while they are removed. */
    while (!atomic_load(&stress_stop) && add_one(&seed))
        ;
    while (claim(&seed, NULL, &r, &id)) {
        remove_claimed(r, id, stress_rnd(&seed) % 2);
        removed_now++;
    }
    struct timespec grace = stress_add_seconds(stress_now(), 10.0);
    while (atomic_load(&recs_created) != atomic_load(&recs_dropped) && !stress_past(&grace))
        sched_yield();
    if (atomic_load(&recs_created) != atomic_load(&recs_dropped))
        fail("%ld records created, %ld dropped 10 s after removing all: a free_fn waits "
             "for a loop that was not woken",
             atomic_load(&recs_created), atomic_load(&recs_dropped));
    if ((rc = moor_loop_thread_stop(loop)) != 0)
        fail("thread_stop: %d", rc);
    moor_unref(loop);
    if (atomic_load(&sched_freed) != atomic_load(&sched_made))
        fail("%ld callbacks scheduled, %ld freed", atomic_load(&sched_made),
             atomic_load(&sched_freed));
    if (atomic_load(&sched_ran) > atomic_load(&sched_made))
        fail("more scheduled callbacks ran than were scheduled");
    if (atomic_load(&frees) != atomic_load(&recs_created))
        fail("%ld records, %ld free_fn calls", atomic_load(&recs_created), atomic_load(&frees));
    stress_check_census();

    printf(STRESS_PROG
           ": %u threads, %.1f s: %ld records, %ld callbacks (%ld nested "
           "iterations), %ld iterate calls, %ld runs, %ld removes (%ld sync), %ld scheduled "
           "(%ld ran), %ld removed at the end\n",
           nthreads, seconds, atomic_load(&recs_created), atomic_load(&cb_runs),
           atomic_load(&nested_runs), atomic_load(&iterations), atomic_load(&runs),
           atomic_load(&removes), atomic_load(&syncs), atomic_load(&sched_made),
           atomic_load(&sched_ran), removed_now);
    return stress_exit_status();
}
