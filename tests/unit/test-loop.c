/* SPDX-License-Identifier: MIT */
/*
 * test-loop.c - the event loop: fd handlers, timers, scheduled callbacks,
 * changes to the handler table from inside callbacks and nested
 * iterations, remove_sync against another thread, whose turn it is to
 * iterate, quit/run, the loop thread, every error code, allocation
 * failures, and the census.
 *
 * fd sources are eventfds: readable while their counter is non-zero, so a
 * callback that does not read keeps its handler ready (level-triggered).
 * Nothing sleeps to let another thread get somewhere: threads meet on
 * semaphores, and "thread B is inside remove_sync" is observed through the
 * loop itself (the handler's id stops being live) by a bounded poll.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>

#include <moor/debug.h>
#include <moor/loop.h>
#include <moor/object.h>

#include "test-util.h"

#define FOREVER_MS 60000 /* longer than any test: a hang fails by timeout */

/* ---- helpers ------------------------------------------------------------ */

static moor_loop *loop_new(void)
{
    moor_error err = MOOR_ERROR_INIT;
    moor_loop *loop = moor_loop_new(&err);

    if (!loop)
        fail_msg("moor_loop_new: %s", err.message);
    return loop;
}

static int efd_new(void)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

    assert_true(fd >= 0);
    return fd;
}

static void efd_signal(int fd)
{
    uint64_t one = 1;

    assert_int_equal(write(fd, &one, sizeof(one)), sizeof(one));
}

static uint64_t efd_drain(int fd)
{
    uint64_t v = 0;

    if (read(fd, &v, sizeof(v)) != sizeof(v))
        return 0;
    return v;
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The last unref may happen on the loop thread (it holds a reference while
 * it dispatches): the census drops there, right after dispose. */
static void wait_census_zero(void)
{
    tu_wait_for(moor_census_total() == 0, "the census to drop to zero (%zu live)",
                (size_t)moor_census_total());
}

/* A free_fn that counts its calls in the atomic_int at the start of the
 * struct it is given (every struct passed to it starts with `freed`). */
static void count_free(void *opaque)
{
    atomic_fetch_add((atomic_int *)opaque, 1);
}

/* Records of what callbacks saw, in order. */
#define MAX_LOG 64
struct log {
    int n;
    int what[MAX_LOG];
};

static void log_add(struct log *l, int what)
{
    assert_true(l->n < MAX_LOG);
    l->what[l->n++] = what;
}

/* ---- basic dispatch ----------------------------------------------------- */

struct fdrec {
    atomic_int freed; /* first: see count_free() */
    moor_loop *loop;
    int fd;
    int calls;
    unsigned revents;
    uint64_t id, seen_id;
    bool drain;
};

static void fdrec_cb(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct fdrec *r = opaque;

    assert_ptr_equal(loop, r->loop);
    assert_int_equal(fd, r->fd);
    assert_true(moor_loop_in_loop(loop));
    r->seen_id = id;
    r->revents = revents;
    r->calls++;
    if (r->drain)
        efd_drain(fd);
}

static void test_fd_dispatch(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    struct fdrec r = {.loop = loop, .fd = efd_new(), .drain = true};

    assert_false(moor_loop_in_loop(loop));
    assert_int_equal(
        moor_loop_add_fd(loop, r.fd, MOOR_LOOP_IN, fdrec_cb, &r, count_free, &r.id, NULL), 0);
    assert_true(r.id != 0);
    /* Nothing ready: a poll runs nothing. */
    assert_int_equal(moor_loop_iterate(loop, 0), 0);
    efd_signal(r.fd);
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.seen_id, r.id);
    assert_int_equal(r.revents, MOOR_LOOP_IN);
    /* Drained: not ready any more. */
    assert_int_equal(moor_loop_iterate(loop, 0), 0);
    /* OUT: an eventfd is always writable. */
    assert_int_equal(moor_loop_update_fd(loop, r.id, MOOR_LOOP_OUT, NULL), 0);
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    assert_int_equal(r.revents, MOOR_LOOP_OUT);
    /* 0: only ERR/HUP, which an eventfd never has. */
    assert_int_equal(moor_loop_update_fd(loop, r.id, 0, NULL), 0);
    efd_signal(r.fd);
    assert_int_equal(moor_loop_iterate(loop, 0), 0);
    assert_int_equal(moor_loop_update_fd(loop, r.id, MOOR_LOOP_IN, NULL), 0);
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    assert_int_equal(r.calls, 3);

    assert_int_equal(moor_loop_remove(loop, r.id), 0);
    assert_int_equal(atomic_load(&r.freed), 1);
    efd_signal(r.fd);
    assert_int_equal(moor_loop_iterate(loop, 0), 0);
    assert_int_equal(moor_loop_remove(loop, r.id), -ENOENT);
    moor_unref(loop);
    assert_int_equal(atomic_load(&r.freed), 1);
    close(r.fd);
}

static void hup_cb(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    (void)fd;
    *(unsigned *)opaque = revents;
    moor_loop_remove(loop, id);
}

static void test_fd_hup(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    int p[2];
    unsigned revents = 0;

    assert_int_equal(pipe(p), 0);
    assert_int_equal(moor_loop_add_fd(loop, p[0], 0, hup_cb, &revents, NULL, NULL, NULL), 0);
    close(p[1]);
    assert_int_equal(moor_loop_iterate(loop, FOREVER_MS), 1);
    assert_true(revents & MOOR_LOOP_HUP);
    assert_int_equal(moor_loop_iterate(loop, 0), 0);
    moor_unref(loop);
    close(p[0]);
}

/* ---- changing the table from callbacks ---------------------------------- */

struct self_remover {
    atomic_int freed; /* first: see count_free() */
    moor_loop *loop;
    int calls;
    bool sync;
    int freed_inside; /* freed as seen from inside the callback */
};

static void remove_self_cb(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct self_remover *r = opaque;

    (void)fd;
    (void)revents;
    r->calls++;
    assert_int_equal(r->sync ? moor_loop_remove_sync(loop, id) : moor_loop_remove(loop, id), 0);
    /* Still allocated: the iteration's visit keeps it until it ends. */
    assert_int_equal(r->sync ? moor_loop_remove_sync(loop, id) : moor_loop_remove(loop, id),
                     -ENOENT);
    r->freed_inside = atomic_load(&r->freed);
}

static void check_remove_self(bool sync)
{
    moor_loop *loop = loop_new();
    int fd = efd_new();
    struct self_remover r = {.loop = loop, .sync = sync};

    efd_signal(fd); /* never drained: ready on every iteration */
    assert_int_equal(
        moor_loop_add_fd(loop, fd, MOOR_LOOP_IN, remove_self_cb, &r, count_free, NULL, NULL), 0);
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.freed_inside, 0);
    assert_int_equal(atomic_load(&r.freed), 1);
    assert_int_equal(moor_loop_iterate(loop, 0), 0);
    assert_int_equal(r.calls, 1);
    moor_unref(loop);
    close(fd);
}

static void test_remove_self(void **state)
{
    (void)state;
    check_remove_self(false);
}

static void test_remove_sync_self(void **state)
{
    (void)state;
    check_remove_self(true);
}

/* Two ready handlers, each removing the other: whichever runs first wins,
 * the other must not run. */
struct pair {
    atomic_int freed; /* first: see count_free() */
    uint64_t id[2];
    int calls[2];
};

static void pair_cb(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct pair *p = opaque;
    int me = id == p->id[0] ? 0 : 1;

    (void)fd;
    (void)revents;
    /* The first call removes the other one; later calls find it gone. */
    assert_int_equal(moor_loop_remove(loop, p->id[!me]), p->calls[me]++ == 0 ? 0 : -ENOENT);
}

static void test_remove_other(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    int fd[2] = {efd_new(), efd_new()};
    struct pair p = {0};

    for (int i = 0; i < 2; i++) {
        efd_signal(fd[i]);
        assert_int_equal(
            moor_loop_add_fd(loop, fd[i], MOOR_LOOP_IN, pair_cb, &p, count_free, &p.id[i], NULL),
            0);
    }
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    assert_int_equal(p.calls[0] + p.calls[1], 1);
    assert_int_equal(atomic_load(&p.freed), 1);
    /* The winner is still there and still ready. */
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    assert_int_equal(p.calls[0] + p.calls[1], 2);
    assert_true(p.calls[0] == 2 || p.calls[1] == 2);
    moor_unref(loop);
    assert_int_equal(atomic_load(&p.freed), 2);
    close(fd[0]);
    close(fd[1]);
}

struct adder {
    int fd_new;
    uint64_t added;
    struct fdrec child;
};

static void adder_cb(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct adder *a = opaque;

    (void)revents;
    efd_drain(fd);
    assert_int_equal(moor_loop_add_fd(loop, a->fd_new, MOOR_LOOP_IN, fdrec_cb, &a->child,
                                      count_free, &a->added, NULL),
                     0);
    assert_true(a->added > id);
    /* The same fd twice: refused, and the free_fn gets its opaque back. */
    atomic_int freed = 0;
    assert_int_equal(
        moor_loop_add_fd(loop, a->fd_new, MOOR_LOOP_IN, fdrec_cb, &freed, count_free, NULL, NULL),
        -EEXIST);
    assert_int_equal(atomic_load(&freed), 1);
}

static void test_add_in_callback(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    int fd = efd_new();
    struct adder a = {.fd_new = efd_new()};
    uint64_t id;

    a.child.loop = loop;
    a.child.fd = a.fd_new;
    a.child.drain = true;
    efd_signal(fd);
    efd_signal(a.fd_new);
    assert_int_equal(moor_loop_add_fd(loop, fd, MOOR_LOOP_IN, adder_cb, &a, NULL, &id, NULL), 0);
    /* epoll_wait was called before the add: the new handler waits a turn. */
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    assert_int_equal(a.child.calls, 0);
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    assert_int_equal(a.child.calls, 1);
    assert_int_equal(a.child.seen_id, a.added);
    assert_int_equal(moor_loop_remove(loop, a.added), 0);
    assert_int_equal(atomic_load(&a.child.freed), 1);
    moor_unref(loop);
    close(fd);
    close(a.fd_new);
}

/* ---- nested iterations --------------------------------------------------- */

struct nest {
    atomic_int inner_freed; /* first: see count_free() */
    moor_loop *loop;
    uint64_t outer_id, inner_id;
    int inner_fd;
    int outer_calls, inner_calls;
    int nested_ran;
    int64_t nested_ms;
    int inner_freed_in_outer; /* after the nested iteration, inside outer */
};

static void nest_inner_cb(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct nest *n = opaque;

    (void)fd;
    (void)revents;
    n->inner_calls++;
    assert_int_equal(moor_loop_remove(loop, id), 0);
}

static void nest_outer_cb(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct nest *n = opaque;
    int64_t t0;

    (void)fd;
    (void)revents;
    (void)id;
    n->outer_calls++;
    efd_signal(n->inner_fd);
    /* Nested: the inner handler runs and removes itself; this handler is
     * ready too (never drained) but must not recurse. */
    n->nested_ran = moor_loop_iterate(loop, 0);
    n->inner_freed_in_outer = atomic_load(&n->inner_freed);
    /* Parked, not spinning: a nested iteration with only this (running)
     * handler ready sleeps its whole timeout. */
    t0 = mono_ms();
    assert_int_equal(moor_loop_iterate(loop, 30), 0);
    n->nested_ms = mono_ms() - t0;
}

static void test_nested_iteration(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    int fo = efd_new(), fi = efd_new();
    struct nest n = {.loop = loop, .inner_fd = fi};

    efd_signal(fo);
    assert_int_equal(
        moor_loop_add_fd(loop, fo, MOOR_LOOP_IN, nest_outer_cb, &n, NULL, &n.outer_id, NULL), 0);
    assert_int_equal(
        moor_loop_add_fd(loop, fi, MOOR_LOOP_IN, nest_inner_cb, &n, count_free, &n.inner_id, NULL),
        0);
    /* The inner handler becomes ready only once the outer callback runs,
     * so the nested iteration is the one that sees it (and counts it). */
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    assert_int_equal(n.outer_calls, 1);
    assert_int_equal(n.inner_calls, 1);
    assert_int_equal(n.nested_ran, 1);
    /* Removed inside the nested iteration: freed only when the outermost
     * visit ended. */
    assert_int_equal(n.inner_freed_in_outer, 0);
    assert_int_equal(atomic_load(&n.inner_freed), 1);
    assert_true(n.nested_ms >= 25);
    /* Re-armed after its callback returned: ready again. */
    n.nested_ms = 0;
    efd_drain(fi);
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    assert_int_equal(n.outer_calls, 2);
    moor_unref(loop);
    close(fo);
    close(fi);
}

static void hup_nested_cb(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    int *nested = opaque;
    int64_t end = mono_ms() + 30;

    (void)fd;
    (void)id;
    assert_true(revents & MOOR_LOOP_HUP);
    /* A nested wait of 30 ms, as a callback waiting for something would
     * do it. Parking may let one more HUP through (a hang-up cannot be
     * masked), then nothing: a handful of iterations, not thousands. */
    while (mono_ms() < end) {
        assert_int_equal(moor_loop_iterate(loop, (int)(end - mono_ms()) + 1), 0);
        (*nested)++;
    }
}

/* A hung-up fd cannot be masked with events: parking must still keep the
 * nested iteration from spinning on it. */
static void test_nested_hup_parked(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    int p[2];
    int nested = 0;
    uint64_t id;

    assert_int_equal(pipe(p), 0);
    close(p[1]);
    assert_int_equal(
        moor_loop_add_fd(loop, p[0], MOOR_LOOP_IN, hup_nested_cb, &nested, NULL, &id, NULL), 0);
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    assert_true(nested >= 1 && nested <= 4);
    assert_int_equal(moor_loop_remove(loop, id), 0);
    moor_unref(loop);
    close(p[0]);
}

/* update_fd while parked: the new events hold once the callback returns. */
static void update_parked_cb(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    int *calls = opaque;

    (void)fd;
    (void)revents;
    if ((*calls)++ == 0) {
        assert_int_equal(moor_loop_iterate(loop, 0), 0); /* parks this handler */
        assert_int_equal(moor_loop_update_fd(loop, id, MOOR_LOOP_OUT, NULL), 0);
        assert_int_equal(moor_loop_iterate(loop, 0), 0); /* still parked */
    } else {
        assert_int_equal(revents, MOOR_LOOP_OUT);
    }
}

static void test_update_fd_parked(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    int fd = efd_new(), calls = 0;

    efd_signal(fd);
    assert_int_equal(
        moor_loop_add_fd(loop, fd, MOOR_LOOP_IN, update_parked_cb, &calls, NULL, NULL, NULL), 0);
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    efd_drain(fd); /* no IN any more: only the updated OUT can fire */
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    assert_int_equal(calls, 2);
    moor_unref(loop);
    close(fd);
}

/* ---- remove_sync against another thread ---------------------------------- */

struct gated {
    moor_loop *loop;
    int fd;
    uint64_t id;
    sem_t entered, gate, freed_sem, marker;
    atomic_int in_cb, calls, calls_at_return, freed;
    atomic_bool returned, bad;
    bool sync;
};

static void gated_cb(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct gated *g = opaque;

    (void)loop;
    (void)id;
    (void)fd;
    (void)revents;
    atomic_store(&g->in_cb, 1);
    if (atomic_fetch_add(&g->calls, 1) == 0) {
        sem_post(&g->entered);
        sem_wait(&g->gate);
        /* The remover is inside remove_sync (the test saw to that): it must
         * still be there. */
        if (g->sync && atomic_load(&g->returned))
            atomic_store(&g->bad, true);
    }
    atomic_store(&g->in_cb, 0);
}

static void gated_free(void *opaque)
{
    struct gated *g = opaque;

    atomic_fetch_add(&g->freed, 1);
    sem_post(&g->freed_sem);
}

static void *remover_main(void *arg)
{
    struct gated *g = arg;
    int rc = g->sync ? moor_loop_remove_sync(g->loop, g->id) : moor_loop_remove(g->loop, g->id);

    if (g->sync && atomic_load(&g->in_cb))
        atomic_store(&g->bad, true);
    atomic_store(&g->calls_at_return, atomic_load(&g->calls));
    atomic_store(&g->returned, true);
    return (void *)(intptr_t)rc;
}

static void marker_cb(moor_loop *loop, void *opaque)
{
    (void)loop;
    sem_post(opaque);
}

/* Wait until @id is no longer a live fd handler (the remover detached it). */
static void wait_detached(moor_loop *loop, uint64_t id)
{
    tu_wait_for(moor_loop_update_fd(loop, id, MOOR_LOOP_IN, NULL) == -ENOENT,
                "fd handler %" PRIu64 " to be detached", id);
}

static void check_remove_from_thread(bool sync)
{
    struct gated g = {.sync = sync};
    pthread_t remover;
    void *rc;

    g.loop = loop_new();
    g.fd = efd_new();
    sem_init(&g.entered, 0, 0);
    sem_init(&g.gate, 0, 0);
    sem_init(&g.freed_sem, 0, 0);
    sem_init(&g.marker, 0, 0);
    efd_signal(g.fd); /* never drained: the callback would run on and on */
    assert_int_equal(
        moor_loop_add_fd(g.loop, g.fd, MOOR_LOOP_IN, gated_cb, &g, gated_free, &g.id, NULL), 0);
    assert_int_equal(moor_loop_thread_start(g.loop, NULL), 0);
    sem_wait(&g.entered);
    assert_int_equal(pthread_create(&remover, NULL, remover_main, &g), 0);
    wait_detached(g.loop, g.id);
    if (!sync) {
        /* remove returns at once; the running callback keeps the handler
         * allocated, so its free_fn waits. */
        assert_int_equal(pthread_join(remover, &rc), 0);
        assert_int_equal((intptr_t)rc, 0);
        assert_int_equal(atomic_load(&g.freed), 0);
        assert_int_equal(atomic_load(&g.in_cb), 1);
    }
    sem_post(&g.gate);
    if (sync) {
        assert_int_equal(pthread_join(remover, &rc), 0);
        assert_int_equal((intptr_t)rc, 0);
    }
    /* The free_fn runs once the loop thread's visit ends. */
    sem_wait(&g.freed_sem);
    /* One more full iteration of the loop thread: the fd is still ready,
     * the callback must not have run again. */
    assert_int_equal(moor_loop_schedule(g.loop, marker_cb, &g.marker, NULL, NULL), 0);
    sem_wait(&g.marker);
    assert_int_equal(atomic_load(&g.calls), 1);
    if (sync)
        assert_int_equal(atomic_load(&g.calls_at_return), 1);
    assert_false(atomic_load(&g.bad));
    assert_int_equal(moor_loop_thread_stop(g.loop), 0);
    assert_int_equal(atomic_load(&g.freed), 1);
    moor_unref(g.loop);
    assert_int_equal(atomic_load(&g.freed), 1);
    close(g.fd);
    sem_destroy(&g.entered);
    sem_destroy(&g.gate);
    sem_destroy(&g.freed_sem);
    sem_destroy(&g.marker);
}

static void test_remove_sync_other_thread(void **state)
{
    (void)state;
    check_remove_from_thread(true);
}

static void test_remove_other_thread(void **state)
{
    (void)state;
    check_remove_from_thread(false);
}

/* remove_sync of an idle handler does not wait, and from a thread that
 * is not iterating frees at once. */
static void test_remove_sync_idle(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    int fd = efd_new();
    atomic_int freed = 0;
    uint64_t id;

    assert_int_equal(
        moor_loop_add_fd(loop, fd, MOOR_LOOP_IN, fdrec_cb, &freed, count_free, &id, NULL), 0);
    assert_int_equal(moor_loop_remove_sync(loop, id), 0);
    assert_int_equal(atomic_load(&freed), 1);
    assert_int_equal(moor_loop_remove_sync(loop, id), -ENOENT);
    moor_unref(loop);
    close(fd);
}

/* ---- timers -------------------------------------------------------------- */

struct tlog {
    atomic_int freed; /* first: see count_free() */
    struct log log;
    uint64_t ids[8];
    int64_t due_ms[8];
};

static int tlog_index(struct tlog *t, uint64_t id)
{
    for (int i = 0; i < 8; i++)
        if (t->ids[i] == id)
            return i;
    fail_msg("unknown timer id %" PRIu64, id);
    return -1;
}

static void tlog_cb(moor_loop *loop, uint64_t id, void *opaque)
{
    struct tlog *t = opaque;
    int i = tlog_index(t, id);

    (void)loop;
    /* Never early. */
    assert_true(mono_ms() >= t->due_ms[i]);
    log_add(&t->log, i);
}

/* One iteration that may sleep, but no longer than a bounded poll. */
static void iterate_once(moor_loop *loop)
{
    assert_true(moor_loop_iterate(loop, tu_poll_ms()) >= 0);
}

static void spin_until_ms(int64_t when)
{
    while (mono_ms() < when)
        sched_yield();
}

static void test_timer_order(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    struct tlog t = {0};
    static const uint32_t delay[] = {30, 10, 20, 10, 0, 20};
    int64_t t0 = mono_ms();

    for (int i = 0; i < 6; i++) {
        t.due_ms[i] = mono_ms() + delay[i];
        assert_int_equal(
            moor_loop_add_timer(loop, delay[i], 0, tlog_cb, &t, count_free, &t.ids[i], NULL), 0);
    }
    /* Let every deadline pass, then one iteration runs them all in
     * deadline order, ties in the order they were added. */
    spin_until_ms(t0 + 40);
    assert_int_equal(moor_loop_iterate(loop, 0), 6);
    static const int want[] = {4, 1, 3, 2, 5, 0};
    assert_int_equal(t.log.n, 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(t.log.what[i], want[i]);
    /* One-shot: gone after firing, free_fn done. */
    assert_int_equal(atomic_load(&t.freed), 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(moor_loop_remove(loop, t.ids[i]), -ENOENT);
    assert_int_equal(moor_loop_iterate(loop, 0), 0);
    moor_unref(loop);
}

/* iterate sleeps until the nearest timer and not longer, and never wakes
 * before it. */
static void test_timer_wakes_iterate(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    struct tlog t = {0};

    t.due_ms[0] = mono_ms() + 20;
    assert_int_equal(moor_loop_add_timer(loop, 20, 0, tlog_cb, &t, NULL, &t.ids[0], NULL), 0);
    t.due_ms[1] = mono_ms() + FOREVER_MS;
    assert_int_equal(moor_loop_add_timer(loop, FOREVER_MS, 0, tlog_cb, &t, NULL, &t.ids[1], NULL),
                     0);
    tu_wait_for((iterate_once(loop), t.log.n != 0), "the 20 ms timer to fire");
    assert_int_equal(t.log.what[0], 0);
    assert_true(mono_ms() < t.due_ms[1]);
    /* A timeout shorter than the next timer wins. */
    assert_int_equal(moor_loop_iterate(loop, 1), 0);
    moor_unref(loop);
}

struct periodic {
    atomic_int freed; /* first: see count_free() */
    int calls;
    int64_t last_ms;
};

static void periodic_cb(moor_loop *loop, uint64_t id, void *opaque)
{
    struct periodic *p = opaque;

    (void)loop;
    (void)id;
    p->calls++;
    p->last_ms = mono_ms();
}

static void test_timer_periodic(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    struct periodic p = {0};
    uint64_t id;
    int64_t t0 = mono_ms();

    assert_int_equal(moor_loop_add_timer(loop, 5, 5, periodic_cb, &p, count_free, &id, NULL), 0);
    tu_wait_for((iterate_once(loop), p.calls >= 3), "three periods of a 5 ms timer (%d calls)",
                p.calls);
    /* Three periods at least. */
    assert_true(p.last_ms - t0 >= 15);
    /* Miss several periods: one call, not a burst. */
    spin_until_ms(mono_ms() + 30);
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    assert_int_equal(p.calls, 4);
    /* Rescheduled past now, on the period grid: not due at once (unless
     * this thread stalls a whole period, which a loaded machine can do, so
     * that is not asserted). */
    assert_int_equal(atomic_load(&p.freed), 0);
    assert_int_equal(moor_loop_remove(loop, id), 0);
    assert_int_equal(atomic_load(&p.freed), 1);
    moor_unref(loop);
}

struct rearm {
    atomic_int freed; /* first: see count_free() */
    int calls;
    uint64_t fd_id;
    int update_fd_rc;
};

static void rearm_cb(moor_loop *loop, uint64_t id, void *opaque)
{
    struct rearm *r = opaque;

    if (++r->calls < 3)
        assert_int_equal(moor_loop_update_timer(loop, id, 0, 0, NULL), 0);
    r->update_fd_rc = moor_loop_update_fd(loop, id, MOOR_LOOP_IN, NULL);
}

static void test_update_timer(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    struct rearm r = {0};
    struct periodic p = {0};
    uint64_t id, pid;
    int fd = efd_new();

    /* Re-armed from its own callback: a one-shot fires again, once per
     * iteration, and goes after the callback that does not re-arm it. */
    assert_int_equal(moor_loop_add_timer(loop, 0, 0, rearm_cb, &r, count_free, &id, NULL), 0);
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    assert_int_equal(r.update_fd_rc, -ENOENT); /* a timer is not an fd handler */
    assert_int_equal(moor_loop_iterate(loop, FOREVER_MS), 1);
    assert_int_equal(moor_loop_iterate(loop, FOREVER_MS), 1);
    assert_int_equal(r.calls, 3);
    assert_int_equal(atomic_load(&r.freed), 1);
    assert_int_equal(moor_loop_update_timer(loop, id, 0, 0, NULL), -ENOENT);

    /* Postponed from outside: does not fire at its old deadline. */
    assert_int_equal(moor_loop_add_timer(loop, 0, 0, periodic_cb, &p, count_free, &pid, NULL), 0);
    assert_int_equal(moor_loop_update_timer(loop, pid, FOREVER_MS, 0, NULL), 0);
    assert_int_equal(moor_loop_iterate(loop, 5), 0);
    /* ... and brought forward again, now periodic. */
    assert_int_equal(moor_loop_update_timer(loop, pid, 0, 1, NULL), 0);
    assert_int_equal(moor_loop_iterate(loop, FOREVER_MS), 1);
    assert_int_equal(moor_loop_iterate(loop, FOREVER_MS), 1);
    assert_int_equal(p.calls, 2);
    assert_int_equal(moor_loop_remove(loop, pid), 0);
    assert_int_equal(atomic_load(&p.freed), 1);

    /* An fd handler is not a timer. */
    uint64_t fid;
    assert_int_equal(moor_loop_add_fd(loop, fd, MOOR_LOOP_IN, fdrec_cb, NULL, NULL, &fid, NULL), 0);
    moor_error err = MOOR_ERROR_INIT;
    assert_int_equal(moor_loop_update_timer(loop, fid, 1, 0, &err), -ENOENT);
    tu_assert_contains(err.message, "no timer");
    assert_int_equal(moor_loop_remove(loop, fid), 0);
    moor_unref(loop);
    close(fd);
}

/* A timer callback that removes a later due timer: it does not run. */
struct tkill {
    atomic_int freed; /* first: see count_free() */
    uint64_t ids[2];
    int calls[2];
};

static void tkill_cb(moor_loop *loop, uint64_t id, void *opaque)
{
    struct tkill *k = opaque;
    int me = id == k->ids[0] ? 0 : 1;

    k->calls[me]++;
    if (me == 0)
        assert_int_equal(moor_loop_remove(loop, k->ids[1]), 0);
}

static void test_timer_removes_other(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    struct tkill k = {0};

    assert_int_equal(moor_loop_add_timer(loop, 0, 0, tkill_cb, &k, count_free, &k.ids[0], NULL), 0);
    assert_int_equal(moor_loop_add_timer(loop, 0, 0, tkill_cb, &k, count_free, &k.ids[1], NULL), 0);
    spin_until_ms(mono_ms() + 2);
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    assert_int_equal(k.calls[0], 1);
    assert_int_equal(k.calls[1], 0);
    assert_int_equal(atomic_load(&k.freed), 2);
    moor_unref(loop);
}

/* ---- scheduled callbacks ------------------------------------------------- */

struct slog {
    struct log log;
    moor_loop *loop;
    atomic_int freed;
};

static void slog_cb(moor_loop *loop, void *opaque);

struct sitem {
    struct slog *s;
    int what;
};

static struct sitem items[8];

static void slog_cb(moor_loop *loop, void *opaque)
{
    struct sitem *it = opaque;

    assert_true(moor_loop_in_loop(loop));
    log_add(&it->s->log, it->what);
    /* Scheduled from a scheduled callback: runs in a later iteration. */
    if (it->what == 1)
        assert_int_equal(moor_loop_schedule(loop, slog_cb, &items[7], NULL, NULL), 0);
}

static void sitem_free(void *opaque)
{
    struct sitem *it = opaque;

    atomic_fetch_add(&it->s->freed, 1);
}

static void sched_fd_cb(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct slog *s = opaque;

    (void)loop;
    (void)id;
    (void)revents;
    efd_drain(fd);
    log_add(&s->log, 100);
}

static void test_schedule(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    struct slog s = {.loop = loop};
    int fd = efd_new();

    for (int i = 0; i < 8; i++)
        items[i] = (struct sitem){&s, i};
    assert_int_equal(moor_loop_add_fd(loop, fd, MOOR_LOOP_IN, sched_fd_cb, &s, NULL, NULL, NULL),
                     0);
    efd_signal(fd);
    for (int i = 0; i < 3; i++)
        assert_int_equal(moor_loop_schedule(loop, slog_cb, &items[i], sitem_free, NULL), 0);
    /* A sleeping iterate is woken by a schedule: -1 returns. */
    assert_int_equal(moor_loop_iterate(loop, -1), 4);
    static const int want[] = {100, 0, 1, 2};
    assert_int_equal(s.log.n, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(s.log.what[i], want[i]);
    assert_int_equal(atomic_load(&s.freed), 3);
    assert_int_equal(moor_loop_iterate(loop, -1), 1);
    assert_int_equal(s.log.what[4], 7);
    assert_int_equal(moor_loop_iterate(loop, 0), 0);

    /* Dropped, with free_fn, when the loop goes first. */
    assert_int_equal(moor_loop_schedule(loop, slog_cb, &items[5], sitem_free, NULL), 0);
    assert_int_equal(moor_loop_schedule(loop, slog_cb, &items[6], sitem_free, NULL), 0);
    moor_unref(loop);
    assert_int_equal(s.log.n, 5);
    assert_int_equal(atomic_load(&s.freed), 5);
    close(fd);
}

#define SCHED_THREADS 4
#define SCHED_EACH    500

struct many {
    moor_loop *loop;
    atomic_int next_expected[SCHED_THREADS];
    atomic_int ran, freed, bad;
    sem_t done;
};

struct many_item {
    struct many *m;
    int thread, seq;
};

static void many_cb(moor_loop *loop, void *opaque)
{
    struct many_item *it = opaque;
    struct many *m = it->m;

    (void)loop;
    /* FIFO per scheduling thread, each exactly once. */
    if (atomic_load(&m->next_expected[it->thread]) != it->seq)
        atomic_fetch_add(&m->bad, 1);
    atomic_store(&m->next_expected[it->thread], it->seq + 1);
    if (atomic_fetch_add(&m->ran, 1) + 1 == SCHED_THREADS * SCHED_EACH)
        sem_post(&m->done);
}

static void many_free(void *opaque)
{
    struct many_item *it = opaque;

    atomic_fetch_add(&it->m->freed, 1);
    free(it);
}

struct many_arg {
    struct many *m;
    int thread;
};

static void *many_main(void *arg)
{
    struct many_arg *a = arg;

    for (int i = 0; i < SCHED_EACH; i++) {
        struct many_item *it = malloc(sizeof(*it));

        if (!it) {
            atomic_fetch_add(&a->m->bad, 1);
            break;
        }
        *it = (struct many_item){a->m, a->thread, i};
        if (moor_loop_schedule(a->m->loop, many_cb, it, many_free, NULL) != 0) {
            atomic_fetch_add(&a->m->bad, 1);
            free(it);
        }
    }
    return NULL;
}

static void test_schedule_many_threads(void **state)
{
    (void)state;
    struct many m = {0};
    pthread_t t[SCHED_THREADS];
    struct many_arg a[SCHED_THREADS];

    m.loop = loop_new();
    sem_init(&m.done, 0, 0);
    assert_int_equal(moor_loop_thread_start(m.loop, NULL), 0);
    for (int i = 0; i < SCHED_THREADS; i++) {
        a[i] = (struct many_arg){&m, i};
        assert_int_equal(pthread_create(&t[i], NULL, many_main, &a[i]), 0);
    }
    for (int i = 0; i < SCHED_THREADS; i++)
        tu_join(t[i], NULL);
    sem_wait(&m.done);
    assert_int_equal(moor_loop_thread_stop(m.loop), 0);
    assert_int_equal(atomic_load(&m.bad), 0);
    assert_int_equal(atomic_load(&m.ran), SCHED_THREADS * SCHED_EACH);
    assert_int_equal(atomic_load(&m.freed), SCHED_THREADS * SCHED_EACH);
    for (int i = 0; i < SCHED_THREADS; i++)
        assert_int_equal(atomic_load(&m.next_expected[i]), SCHED_EACH);
    moor_unref(m.loop);
    sem_destroy(&m.done);
}

/* ---- run, quit, wakeup --------------------------------------------------- */

static void quit_cb(moor_loop *loop, uint64_t id, void *opaque)
{
    (void)id;
    (*(int *)opaque)++;
    moor_loop_quit(loop);
}

struct nested_run {
    int outer_calls;
    int nested_rc;
    int after_quit;
};

static void nested_run_cb(moor_loop *loop, uint64_t id, void *opaque)
{
    struct nested_run *n = opaque;

    (void)id;
    n->outer_calls++;
    assert_int_equal(moor_loop_add_timer(loop, 1, 0, quit_cb, &n->after_quit, NULL, NULL, NULL), 0);
    /* Ends when the timer quits: the quit ends this run and the outer. */
    n->nested_rc = moor_loop_run(loop);
}

static void *quitter_main(void *arg)
{
    moor_loop_quit(arg);
    return NULL;
}

static void *waker_main(void *arg)
{
    moor_loop_wakeup(arg);
    return NULL;
}

static void test_run_quit(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    int quits = 0;
    struct nested_run n = {0};
    pthread_t t;

    assert_int_equal(moor_loop_add_timer(loop, 1, 0, quit_cb, &quits, NULL, NULL, NULL), 0);
    assert_int_equal(moor_loop_run(loop), 0);
    assert_int_equal(quits, 1);

    /* Nested run inside a callback: one quit ends both. */
    assert_int_equal(moor_loop_add_timer(loop, 0, 0, nested_run_cb, &n, NULL, NULL, NULL), 0);
    assert_int_equal(moor_loop_run(loop), 0);
    assert_int_equal(n.outer_calls, 1);
    assert_int_equal(n.nested_rc, 0);
    assert_int_equal(n.after_quit, 1);

    /* A quit from another thread, before or during the run: a quit made
     * before run started does not end it, so start the quitter from a
     * callback of this run. */
    moor_loop_quit(loop); /* no run in progress: forgotten */
    assert_int_equal(pthread_create(&t, NULL, quitter_main, loop), 0);
    tu_join(t, NULL);
    assert_int_equal(moor_loop_add_timer(loop, 1, 0, quit_cb, &quits, NULL, NULL, NULL), 0);
    assert_int_equal(moor_loop_run(loop), 0);
    assert_int_equal(quits, 2);

    /* wakeup from another thread ends a sleeping iterate with 0. */
    assert_int_equal(pthread_create(&t, NULL, waker_main, loop), 0);
    assert_int_equal(moor_loop_iterate(loop, -1), 0);
    tu_join(t, NULL);
    moor_loop_quit(NULL);
    moor_loop_wakeup(NULL);
    moor_unref(loop);
}

/* ---- the loop thread and turns ------------------------------------------- */

struct where {
    sem_t ran;
    atomic_int tid;
    atomic_bool in_loop;
    atomic_int stop_rc;
    moor_loop *loop;
};

static void where_cb(moor_loop *loop, void *opaque)
{
    struct where *w = opaque;

    atomic_store(&w->tid, (int)syscall(SYS_gettid));
    atomic_store(&w->in_loop, moor_loop_in_loop(loop));
    atomic_store(&w->stop_rc, moor_loop_thread_stop(loop));
    sem_post(&w->ran);
}

static void test_thread_start_stop(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    struct where w = {.loop = loop};
    moor_error err = MOOR_ERROR_INIT;

    sem_init(&w.ran, 0, 0);
    assert_int_equal(moor_loop_thread_stop(loop), -ESRCH);
    assert_int_equal(moor_loop_thread_start(loop, NULL), 0);
    assert_int_equal(moor_loop_thread_start(loop, &err), -EALREADY);
    tu_assert_contains(err.message, "has a thread already");
    assert_int_equal(moor_loop_schedule(loop, where_cb, &w, NULL, NULL), 0);
    sem_wait(&w.ran);
    assert_int_not_equal(atomic_load(&w.tid), (int)syscall(SYS_gettid));
    assert_true(atomic_load(&w.in_loop));
    assert_false(moor_loop_in_loop(loop));
    assert_int_equal(atomic_load(&w.stop_rc), -EDEADLK);
    /* While the thread runs, another thread's iterate(0) does not get a
     * turn the thread holds... or gets it between two iterations: either
     * way it returns at once. */
    assert_true(moor_loop_iterate(loop, 0) >= 0);
    assert_int_equal(moor_loop_thread_stop(loop), 0);
    assert_int_equal(moor_loop_thread_stop(loop), -ESRCH);
    /* Again, after a stop. */
    assert_int_equal(moor_loop_thread_start(loop, NULL), 0);
    assert_int_equal(moor_loop_schedule(loop, where_cb, &w, NULL, NULL), 0);
    sem_wait(&w.ran);
    /* The last unref stops it (here, or at the end of the dispatch that
     * posted the semaphore). */
    moor_unref(loop);
    wait_census_zero();
    sem_destroy(&w.ran);
}

/* A callback on the loop thread calls thread_stop while another thread is
 * inside thread_stop, joining it: the callback gets -EDEADLK at once and
 * both calls return. The callback waits for the stopper to be asleep in
 * the kernel (its /proc state turns to S: it is in the join) before it
 * calls, so the two really overlap. */
struct stop_race {
    moor_loop *loop;
    sem_t running, go;
    int stopper_tid;
    atomic_int stop_rc;
};

static bool tid_sleeping(int tid)
{
    char path[64], buf[256];
    FILE *f;
    char *paren;
    bool sleeping = false;

    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
    f = fopen(path, "r");
    if (!f)
        return false;
    if (fgets(buf, sizeof(buf), f)) {
        paren = strrchr(buf, ')'); /* "tid (comm) S ..." */
        sleeping = paren && paren[1] == ' ' && paren[2] == 'S';
    }
    fclose(f);
    return sleeping;
}

static void stop_race_cb(moor_loop *loop, void *opaque)
{
    struct stop_race *r = opaque;

    sem_post(&r->running);
    sem_wait(&r->go);
    tu_wait_for_in_thread(tid_sleeping(r->stopper_tid), "the stopping thread %d to sleep",
                          (int)r->stopper_tid);
    atomic_store(&r->stop_rc, moor_loop_thread_stop(loop));
}

static void test_thread_stop_from_callback_while_stopping(void **state)
{
    (void)state;
    struct stop_race r = {.loop = loop_new(), .stopper_tid = (int)syscall(SYS_gettid)};

    sem_init(&r.running, 0, 0);
    sem_init(&r.go, 0, 0);
    atomic_init(&r.stop_rc, 1);
    assert_int_equal(moor_loop_thread_start(r.loop, NULL), 0);
    assert_int_equal(moor_loop_schedule(r.loop, stop_race_cb, &r, NULL, NULL), 0);
    sem_wait(&r.running); /* the callback runs: the thread cannot leave first */
    sem_post(&r.go);
    assert_int_equal(moor_loop_thread_stop(r.loop), 0);
    assert_int_equal(atomic_load(&r.stop_rc), -EDEADLK);
    assert_int_equal(moor_loop_thread_stop(r.loop), -ESRCH);
    moor_unref(r.loop);
    sem_destroy(&r.go);
    sem_destroy(&r.running);
}

/* The last reference dropped by a callback on the loop thread: dispose
 * runs there, the thread leaves on its own. */
struct last_on_thread {
    moor_loop *loop;
    sem_t freed;
    atomic_int freed_count;
};

static void drop_loop_cb(moor_loop *loop, void *opaque)
{
    (void)opaque;
    moor_unref(loop);
}

static void lot_free(void *opaque)
{
    struct last_on_thread *l = opaque;

    atomic_fetch_add(&l->freed_count, 1);
    sem_post(&l->freed);
}

static void test_last_unref_on_loop_thread(void **state)
{
    (void)state;
    struct last_on_thread l = {0};
    int fd = efd_new();

    sem_init(&l.freed, 0, 0);
    l.loop = loop_new();
    assert_int_equal(moor_loop_add_fd(l.loop, fd, MOOR_LOOP_IN, fdrec_cb, &l, lot_free, NULL, NULL),
                     0);
    assert_int_equal(moor_loop_thread_start(l.loop, NULL), 0);
    /* Hand our reference to the loop thread. */
    assert_int_equal(moor_loop_schedule(l.loop, drop_loop_cb, NULL, NULL, NULL), 0);
    sem_wait(&l.freed);
    assert_int_equal(atomic_load(&l.freed_count), 1);
    wait_census_zero();
    close(fd);
    sem_destroy(&l.freed);
}

/* ---- whose turn ------------------------------------------------------------ */

struct turn {
    moor_loop *loop;
    int fd_a, fd_b;
    sem_t in_cb, release;
    atomic_int other_tid, b_tid;
    atomic_bool other_bad, b_in_loop, other_returned;
    atomic_int other_rc;
    int a_calls;
};

static void turn_a_cb(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct turn *t = opaque;

    (void)loop;
    (void)id;
    (void)revents;
    efd_drain(fd);
    t->a_calls++;
    sem_post(&t->in_cb);
    sem_wait(&t->release);
}

static void turn_b_cb(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct turn *t = opaque;

    (void)id;
    (void)revents;
    efd_drain(fd);
    atomic_store(&t->b_tid, (int)syscall(SYS_gettid));
    atomic_store(&t->b_in_loop, moor_loop_in_loop(loop));
}

static void *turn_other_main(void *arg)
{
    struct turn *t = arg;
    int64_t t0, end;

    atomic_store(&t->other_tid, (int)syscall(SYS_gettid));
    sem_wait(&t->in_cb);
    /* The main thread is inside a callback: it holds the turn. A poll
     * returns at once; a timed iterate returns 0 after its timeout. */
    t0 = mono_ms();
    if (moor_loop_iterate(t->loop, 0) != 0 || moor_loop_iterate(t->loop, 20) != 0 ||
        mono_ms() - t0 < 15 || moor_loop_in_loop(t->loop))
        atomic_store(&t->other_bad, true);
    efd_signal(t->fd_b);
    sem_post(&t->release);
    /* Our turn comes once the main thread's iteration ends. */
    end = mono_ms() + FOREVER_MS;
    while (atomic_load(&t->b_tid) == 0 && mono_ms() < end)
        if (moor_loop_iterate(t->loop, 100) < 0)
            atomic_store(&t->other_bad, true);
    return NULL;
}

static void test_turns(void **state)
{
    (void)state;
    struct turn t = {0};
    pthread_t other;

    t.loop = loop_new();
    t.fd_a = efd_new();
    t.fd_b = efd_new();
    sem_init(&t.in_cb, 0, 0);
    sem_init(&t.release, 0, 0);
    assert_int_equal(
        moor_loop_add_fd(t.loop, t.fd_a, MOOR_LOOP_IN, turn_a_cb, &t, NULL, NULL, NULL), 0);
    assert_int_equal(
        moor_loop_add_fd(t.loop, t.fd_b, MOOR_LOOP_IN, turn_b_cb, &t, NULL, NULL, NULL), 0);
    assert_int_equal(pthread_create(&other, NULL, turn_other_main, &t), 0);
    efd_signal(t.fd_a);
    /* fd_b is signalled only after our epoll_wait: this iteration runs A. */
    assert_int_equal(moor_loop_iterate(t.loop, FOREVER_MS), 1);
    tu_join(other, NULL);
    assert_false(atomic_load(&t.other_bad));
    assert_int_equal(atomic_load(&t.b_tid), atomic_load(&t.other_tid));
    assert_true(atomic_load(&t.b_in_loop));
    assert_int_equal(t.a_calls, 1);
    moor_unref(t.loop);
    close(t.fd_a);
    close(t.fd_b);
    sem_destroy(&t.in_cb);
    sem_destroy(&t.release);
}

/* A thread waiting for its turn is released by a wake-up (with 0). */
static void *turn_waiter_main(void *arg)
{
    struct turn *t = arg;

    sem_wait(&t->in_cb);
    atomic_store(&t->other_rc, moor_loop_iterate(t->loop, FOREVER_MS));
    atomic_store(&t->other_returned, true);
    return NULL;
}

static void wake_waiter_cb(moor_loop *loop, void *opaque)
{
    struct turn *t = opaque;

    sem_post(&t->in_cb);
    /* Wake until the other iterate returns: it may not be queued yet when
     * we first wake. */
    tu_wait_for_in_thread((moor_loop_wakeup(loop), atomic_load(&t->other_returned)),
                          "the waiting iterate to return after a wakeup");
}

static void test_turn_wakeup(void **state)
{
    (void)state;
    struct turn t = {0};
    pthread_t other;

    t.loop = loop_new();
    sem_init(&t.in_cb, 0, 0);
    atomic_store(&t.other_rc, -1);
    assert_int_equal(pthread_create(&other, NULL, turn_waiter_main, &t), 0);
    assert_int_equal(moor_loop_schedule(t.loop, wake_waiter_cb, &t, NULL, NULL), 0);
    assert_int_equal(moor_loop_iterate(t.loop, FOREVER_MS), 1);
    tu_join(other, NULL);
    /* It returned while we held the turn, with nothing run. */
    assert_true(atomic_load(&t.other_returned));
    assert_int_equal(atomic_load(&t.other_rc), 0);
    moor_unref(t.loop);
    sem_destroy(&t.in_cb);
}

/* Two threads in moor_loop_run() taking turns; one quit ends both. */
struct two_runs {
    moor_loop *loop;
    atomic_int main_tid, other_tid;
    atomic_bool main_seen, other_seen;
    atomic_int other_rc;
    atomic_int quits; /* callbacks that saw both threads */
};

static void two_runs_cb(moor_loop *loop, uint64_t id, void *opaque)
{
    struct two_runs *r = opaque;
    int me = (int)syscall(SYS_gettid);

    (void)id;
    if (me == atomic_load(&r->main_tid))
        atomic_store(&r->main_seen, true);
    else if (me == atomic_load(&r->other_tid))
        atomic_store(&r->other_seen, true);
    /* The timer may fire again in the run that has not returned yet. */
    if (atomic_load(&r->main_seen) && atomic_load(&r->other_seen) &&
        atomic_fetch_add(&r->quits, 1) == 0)
        moor_loop_quit(loop);
}

static void *two_runs_other(void *arg)
{
    struct two_runs *r = arg;

    atomic_store(&r->other_tid, (int)syscall(SYS_gettid));
    atomic_store(&r->other_rc, moor_loop_run(r->loop));
    return NULL;
}

static void test_two_runs_one_quit(void **state)
{
    (void)state;
    struct two_runs r = {0};
    pthread_t other;
    uint64_t id;

    r.loop = loop_new();
    atomic_store(&r.main_tid, (int)syscall(SYS_gettid));
    atomic_store(&r.other_rc, -1);
    assert_int_equal(moor_loop_add_timer(r.loop, 1, 1, two_runs_cb, &r, NULL, &id, NULL), 0);
    assert_int_equal(pthread_create(&other, NULL, two_runs_other, &r), 0);
    assert_int_equal(moor_loop_run(r.loop), 0);
    tu_join(other, NULL);
    assert_int_equal(atomic_load(&r.other_rc), 0);
    assert_true(atomic_load(&r.quits) >= 1);
    assert_int_equal(moor_loop_remove(r.loop, id), 0);
    moor_unref(r.loop);
}

/* ---- errors ---------------------------------------------------------------- */

static void nop_fd_cb(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    (void)loop;
    (void)id;
    (void)fd;
    (void)revents;
    (void)opaque;
}

static void nop_timer_cb(moor_loop *loop, uint64_t id, void *opaque)
{
    (void)loop;
    (void)id;
    (void)opaque;
}

static void nop_call_cb(moor_loop *loop, void *opaque)
{
    (void)loop;
    (void)opaque;
}

/* A failed add gives the opaque back through free_fn, exactly once. */
#define ASSERT_ADD_FAILS(call, want, text)                                                         \
    do {                                                                                           \
        moor_error err_ = MOOR_ERROR_INIT;                                                         \
        atomic_int freed_ = 0;                                                                     \
        void *const opaque_ = &freed_;                                                             \
        moor_error *const e_ = &err_;                                                              \
        assert_int_equal((call), (want));                                                          \
        assert_int_equal(err_.code, (want));                                                       \
        tu_assert_contains(err_.message, (text));                                                  \
        assert_int_equal(atomic_load(&freed_), 1);                                                 \
        (void)opaque_;                                                                             \
        (void)e_;                                                                                  \
    } while (0)

static void test_errors(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    moor_error err = MOOR_ERROR_INIT;
    int fd = efd_new(), closed = efd_new();
    FILE *regular = tmpfile();
    uint64_t id = 12345, fid;

    assert_non_null(regular);
    close(closed);

    /* add_fd */
    ASSERT_ADD_FAILS(
        moor_loop_add_fd(NULL, fd, MOOR_LOOP_IN, nop_fd_cb, opaque_, count_free, &id, e_), -EINVAL,
        "NULL loop");
    ASSERT_ADD_FAILS(moor_loop_add_fd(loop, fd, MOOR_LOOP_IN, NULL, opaque_, count_free, &id, e_),
                     -EINVAL, "NULL callback");
    ASSERT_ADD_FAILS(
        moor_loop_add_fd(loop, -1, MOOR_LOOP_IN, nop_fd_cb, opaque_, count_free, &id, e_), -EINVAL,
        "negative fd");
    ASSERT_ADD_FAILS(moor_loop_add_fd(loop, fd, 0x100, nop_fd_cb, opaque_, count_free, &id, e_),
                     -EINVAL, "unknown event bits");
    ASSERT_ADD_FAILS(
        moor_loop_add_fd(loop, closed, MOOR_LOOP_IN, nop_fd_cb, opaque_, count_free, &id, e_),
        -EBADF, "epoll");
    ASSERT_ADD_FAILS(moor_loop_add_fd(loop, fileno(regular), MOOR_LOOP_IN, nop_fd_cb, opaque_,
                                      count_free, &id, e_),
                     -EPERM, "epoll");
    assert_int_equal(id, 12345); /* untouched by every failure */
    assert_int_equal(moor_loop_add_fd(loop, fd, MOOR_LOOP_IN | MOOR_LOOP_ERR | MOOR_LOOP_HUP,
                                      nop_fd_cb, NULL, NULL, &fid, NULL),
                     0);
    ASSERT_ADD_FAILS(
        moor_loop_add_fd(loop, fd, MOOR_LOOP_OUT, nop_fd_cb, opaque_, count_free, NULL, e_),
        -EEXIST, "already has a handler");
    /* A failed add without free_fn is fine too. */
    assert_int_equal(moor_loop_add_fd(loop, fd, MOOR_LOOP_IN, nop_fd_cb, NULL, NULL, NULL, NULL),
                     -EEXIST);

    /* update_fd */
    assert_int_equal(moor_loop_update_fd(NULL, fid, MOOR_LOOP_IN, &err), -EINVAL);
    assert_int_equal(moor_loop_update_fd(loop, fid, 0x40, &err), -EINVAL);
    tu_assert_contains(err.message, "unknown event bits");
    assert_int_equal(moor_loop_update_fd(loop, fid + 1000, MOOR_LOOP_IN, &err), -ENOENT);
    tu_assert_contains(err.message, "no fd handler");

    /* add_timer, update_timer */
    ASSERT_ADD_FAILS(moor_loop_add_timer(NULL, 1, 0, nop_timer_cb, opaque_, count_free, &id, e_),
                     -EINVAL, "NULL loop");
    ASSERT_ADD_FAILS(moor_loop_add_timer(loop, 1, 0, NULL, opaque_, count_free, &id, e_), -EINVAL,
                     "NULL callback");
    assert_int_equal(id, 12345);
    assert_int_equal(moor_loop_update_timer(NULL, 1, 0, 0, &err), -EINVAL);
    assert_int_equal(moor_loop_update_timer(loop, 999999, 0, 0, &err), -ENOENT);

    /* remove */
    assert_int_equal(moor_loop_remove(NULL, fid), -EINVAL);
    assert_int_equal(moor_loop_remove_sync(NULL, fid), -EINVAL);
    assert_int_equal(moor_loop_remove(loop, 0), -ENOENT);
    assert_int_equal(moor_loop_remove_sync(loop, 999999), -ENOENT);

    /* schedule: no free_fn on failure */
    atomic_int freed = 0;
    assert_int_equal(moor_loop_schedule(NULL, nop_call_cb, &freed, count_free, &err), -EINVAL);
    assert_int_equal(moor_loop_schedule(loop, NULL, &freed, count_free, &err), -EINVAL);
    tu_assert_contains(err.message, "NULL callback");
    assert_int_equal(atomic_load(&freed), 0);

    /* iterate, run, threads */
    assert_int_equal(moor_loop_iterate(NULL, 0), -EINVAL);
    assert_int_equal(moor_loop_iterate(loop, -2), -EINVAL);
    assert_int_equal(moor_loop_run(NULL), -EINVAL);
    assert_int_equal(moor_loop_thread_start(NULL, &err), -EINVAL);
    assert_int_equal(moor_loop_thread_stop(NULL), -EINVAL);
    assert_int_equal(moor_loop_thread_stop(loop), -ESRCH);
    assert_false(moor_loop_in_loop(NULL));
    /* err may be NULL. */
    moor_loop *second = moor_loop_new(NULL);
    assert_non_null(second);
    assert_int_equal(moor_class_live(moor_object_get_class(loop)), 2);
    moor_unref(second);

    assert_int_equal(moor_loop_remove(loop, fid), 0);
    moor_unref(loop);
    close(fd);
    fclose(regular);
}

/* ---- allocation failures --------------------------------------------------- */

static void test_oom(void **state)
{
    (void)state;
    moor_error err = MOOR_ERROR_INIT;
    moor_loop *loop = NULL;
    unsigned long n;
    int fd = efd_new();
    uint64_t id = 0;
    atomic_int freed; /* the free_fn of each attempt; outlives the handler */

    for (n = 1; !loop; n++) {
        moor_debug_fail_alloc(n);
        loop = moor_loop_new(&err);
        moor_debug_fail_alloc(0);
        if (!loop) {
            assert_int_equal(err.code, -ENOMEM);
            assert_int_equal(moor_census_total(), 0);
        }
    }
    assert_true(n > 2); /* the object and its id table */

    /* add_fd: the handler; a failure gives opaque back and changes nothing. */
    for (n = 1;; n++) {
        int rc;

        atomic_store(&freed, 0);
        moor_debug_fail_alloc(n);
        rc = moor_loop_add_fd(loop, fd, MOOR_LOOP_IN, nop_fd_cb, &freed, count_free, &id, &err);
        moor_debug_fail_alloc(0);
        if (rc == 0)
            break;
        assert_int_equal(rc, -ENOMEM);
        assert_int_equal(atomic_load(&freed), 1);
        assert_int_equal(id, 0);
    }
    assert_int_equal(moor_loop_remove(loop, id), 0);
    assert_int_equal(atomic_load(&freed), 1);

    /* add_timer: the handler, then the heap. */
    unsigned long timer_allocs = 0;
    for (n = 1;; n++) {
        int rc;

        atomic_store(&freed, 0);
        id = 0;
        moor_debug_fail_alloc(n);
        rc = moor_loop_add_timer(loop, 0, 0, nop_timer_cb, &freed, count_free, &id, &err);
        moor_debug_fail_alloc(0);
        if (rc == 0)
            break;
        assert_int_equal(rc, -ENOMEM);
        tu_assert_contains(err.message, "out of memory");
        assert_int_equal(atomic_load(&freed), 1);
        assert_int_equal(id, 0);
        timer_allocs++;
    }
    assert_int_equal(timer_allocs, 2);
    assert_int_equal(moor_loop_iterate(loop, FOREVER_MS), 1);
    assert_int_equal(atomic_load(&freed), 1);

    /* Growing the id table may fail: the add still succeeds. */
    uint64_t ids[40];
    for (int i = 0; i < 40; i++) {
        int rc;

        for (n = 1;; n++) {
            moor_debug_fail_alloc(n);
            rc = moor_loop_add_timer(loop, FOREVER_MS, 0, nop_timer_cb, NULL, NULL, &ids[i], &err);
            moor_debug_fail_alloc(0);
            if (rc == 0)
                break;
            assert_int_equal(rc, -ENOMEM);
        }
    }
    for (int i = 0; i < 40; i++)
        assert_int_equal(moor_loop_remove(loop, ids[i]), 0);

    /* schedule: nothing queued, free_fn not called. */
    for (n = 1;; n++) {
        int rc;

        atomic_store(&freed, 0);
        moor_debug_fail_alloc(n);
        rc = moor_loop_schedule(loop, nop_call_cb, &freed, count_free, &err);
        moor_debug_fail_alloc(0);
        if (rc == 0)
            break;
        assert_int_equal(rc, -ENOMEM);
        assert_int_equal(atomic_load(&freed), 0);
        assert_int_equal(moor_loop_iterate(loop, 0), 0);
    }
    assert_int_equal(moor_loop_iterate(loop, 0), 1);
    moor_unref(loop);
    close(fd);
}

/* ---- misuse ---------------------------------------------------------------- */

static void test_misuse_not_a_loop(void **state)
{
    (void)state;
    void *obj = moor_object_new(moor_object_class());
    moor_error err = MOOR_ERROR_INIT;

    assert_non_null(obj);
    assert_int_equal(moor_loop_iterate(obj, 0), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, obj, "is not a live moor_loop");
    assert_int_equal(moor_loop_schedule(obj, nop_call_cb, NULL, NULL, &err), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, obj, "moor_loop_schedule");
    tu_assert_contains(err.message, "not a live moor_loop");
    assert_false(moor_loop_in_loop(obj));
    moor_loop_wakeup(obj); /* ignored */
    moor_unref(obj);
}

static void test_misuse_fd_closed_first(void **state)
{
    (void)state;
    moor_loop *loop = loop_new();
    int fd = efd_new();
    uint64_t id;

    assert_int_equal(moor_loop_add_fd(loop, fd, MOOR_LOOP_IN, nop_fd_cb, NULL, NULL, &id, NULL), 0);
    close(fd);
    assert_int_equal(moor_loop_remove(loop, id), 0);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, loop, "was closed before its handler was removed");
    moor_unref(loop);
}

/* In a child: a callback drops the caller's reference and the one
 * moor_loop_iterate() holds, so dispose runs inside the callback. */
static void over_unref_cb(moor_loop *loop, void *opaque)
{
    (void)opaque;
    moor_unref(loop);
    moor_unref(loop);
}

static int child_dispose_in_callback(void *arg)
{
    (void)arg;
    moor_loop *loop = moor_loop_new(NULL);

    moor_debug_set_report(NULL, NULL);
    moor_debug_set_flags(moor_debug_flags() | MOOR_DEBUG_ABORT);
    moor_loop_schedule(loop, over_unref_cb, NULL, NULL, NULL);
    moor_loop_iterate(loop, 0);
    return 3; /* not reached: the report aborts */
}

static void test_misuse_dispose_while_iterating(void **state)
{
    (void)state;
    tu_child c;

    tu_fork(&c, child_dispose_in_callback, NULL);
    tu_assert_child_signaled(&c, SIGABRT);
    tu_assert_contains(c.out, "last unref while thread");
    tu_assert_contains(c.out, "inside its own callback");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_fd_dispatch),
        TU_TEST(test_fd_hup),
        TU_TEST(test_remove_self),
        TU_TEST(test_remove_sync_self),
        TU_TEST(test_remove_other),
        TU_TEST(test_add_in_callback),
        TU_TEST(test_nested_iteration),
        TU_TEST(test_nested_hup_parked),
        TU_TEST(test_update_fd_parked),
        TU_TEST(test_remove_sync_other_thread),
        TU_TEST(test_remove_other_thread),
        TU_TEST(test_remove_sync_idle),
        TU_TEST(test_timer_order),
        TU_TEST(test_timer_wakes_iterate),
        TU_TEST(test_timer_periodic),
        TU_TEST(test_update_timer),
        TU_TEST(test_timer_removes_other),
        TU_TEST(test_schedule),
        TU_TEST(test_schedule_many_threads),
        TU_TEST(test_run_quit),
        TU_TEST(test_thread_start_stop),
        TU_TEST(test_thread_stop_from_callback_while_stopping),
        TU_TEST(test_last_unref_on_loop_thread),
        TU_TEST(test_turns),
        TU_TEST(test_turn_wakeup),
        TU_TEST(test_two_runs_one_quit),
        TU_TEST(test_errors),
        TU_TEST(test_oom),
        TU_TEST(test_misuse_not_a_loop),
        TU_TEST(test_misuse_fd_closed_first),
        TU_TEST(test_misuse_dispose_while_iterating),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
