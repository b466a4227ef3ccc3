/* SPDX-License-Identifier: MIT */
/*
 * bench/bench-loop.c - the cost of one event through moor's loop against a
 * minimal hand-written epoll loop, on the same event source.
 *
 *   epoll_eventfd_dispatch   the floor: an eventfd registered with a bare
 *                            epoll instance; per event, write 1 to the
 *                            eventfd, epoll_wait(), call the handler found
 *                            through data.ptr, which reads the eventfd.
 *                            Three syscalls, no locking, no bookkeeping.
 *   loop_eventfd_dispatch    the same event through moor_loop_iterate(): a
 *                            fd handler whose callback reads the eventfd.
 *                            What is added: the turn (who iterates), the
 *                            visit of the handler list, the remove_sync
 *                            handshake per dispatch, the loop reference.
 *                            Baseline: epoll_eventfd_dispatch.
 *   loop_schedule_dispatch   moor_loop_schedule() + moor_loop_iterate(): a
 *                            scheduled callback's whole trip (allocation,
 *                            queue, eventfd wake-up, dispatch, free).
 *                            Baseline: epoll_eventfd_dispatch, the same
 *                            three syscalls with nothing else.
 *
 * Single-threaded: the figure is the dispatch path, not contention.
 */
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <moor/loop.h>
#include <moor/object.h>

#include "bench.h"

static int efd_new(const char *what)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

    if (fd < 0)
        bench_fail("%s: eventfd failed", what);
    return fd;
}

static void efd_write(int fd)
{
    uint64_t one = 1;

    if (write(fd, &one, sizeof(one)) != sizeof(one))
        bench_fail("eventfd write failed");
}

static void efd_read(int fd)
{
    uint64_t v;

    if (read(fd, &v, sizeof(v)) != sizeof(v) || v != 1)
        bench_fail("eventfd read failed");
}

/* ---- epoll_eventfd_dispatch ------------------------------------------- */

struct raw_handler {
    void (*fn)(struct raw_handler *h, uint32_t revents);
    int fd;
    uint64_t calls;
};

struct raw_state {
    int epfd;
    struct raw_handler h;
};

static void raw_cb(struct raw_handler *h, uint32_t revents)
{
    if (!(revents & EPOLLIN))
        bench_fail("epoll_eventfd_dispatch: no EPOLLIN");
    efd_read(h->fd);
    h->calls++;
}

static void *raw_setup(void)
{
    struct raw_state *s = calloc(1, sizeof(*s));
    struct epoll_event ev = {.events = EPOLLIN};

    if (!s)
        bench_fail("epoll_eventfd_dispatch: out of memory");
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->h.fn = raw_cb;
    s->h.fd = efd_new("epoll_eventfd_dispatch");
    ev.data.ptr = &s->h;
    if (s->epfd < 0 || epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->h.fd, &ev) < 0)
        bench_fail("epoll_eventfd_dispatch: epoll set-up failed");
    return s;
}

static void raw_teardown(void *state)
{
    struct raw_state *s = state;

    close(s->h.fd);
    close(s->epfd);
    free(s);
}

BENCH_LOOP(bench_loop_epoll_eventfd_dispatch, state, iters)
{
    struct raw_state *s = state;
    struct epoll_event events[64];

    for (uint64_t i = 0; i < iters; i++) {
        efd_write(s->h.fd);
        int n = epoll_wait(s->epfd, events, 64, -1);

        if (n != 1)
            bench_fail("epoll_eventfd_dispatch: epoll_wait returned %d", n);
        for (int j = 0; j < n; j++) {
            struct raw_handler *h = events[j].data.ptr;

            h->fn(h, events[j].events);
        }
        bench_clobber();
    }
}

/* ---- loop_eventfd_dispatch -------------------------------------------- */

struct loop_state {
    moor_loop *loop;
    int fd;
    uint64_t calls;
};

static void loop_cb(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct loop_state *s = opaque;

    (void)loop;
    (void)id;
    if (!(revents & MOOR_LOOP_IN))
        bench_fail("loop_eventfd_dispatch: no MOOR_LOOP_IN");
    efd_read(fd);
    s->calls++;
}

static void *loop_setup(void)
{
    struct loop_state *s = calloc(1, sizeof(*s));

    if (!s)
        bench_fail("loop: out of memory");
    s->loop = moor_loop_new(NULL);
    if (!s->loop)
        bench_fail("loop: moor_loop_new failed");
    s->fd = efd_new("loop");
    if (moor_loop_add_fd(s->loop, s->fd, MOOR_LOOP_IN, loop_cb, s, NULL, NULL, NULL) < 0)
        bench_fail("loop_eventfd_dispatch: moor_loop_add_fd failed");
    return s;
}

static void loop_teardown(void *state)
{
    struct loop_state *s = state;

    moor_unref(s->loop);
    close(s->fd);
    free(s);
}

BENCH_LOOP(bench_loop_loop_eventfd_dispatch, state, iters)
{
    struct loop_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        efd_write(s->fd);
        int n = moor_loop_iterate(s->loop, -1);

        if (n != 1)
            bench_fail("loop_eventfd_dispatch: iterate returned %d", n);
        bench_clobber();
    }
}

/* ---- loop_schedule_dispatch ------------------------------------------- */

static void sched_cb(moor_loop *loop, void *opaque)
{
    (void)loop;
    ((struct loop_state *)opaque)->calls++;
}

static void *sched_setup(void)
{
    struct loop_state *s = calloc(1, sizeof(*s));

    if (!s)
        bench_fail("loop_schedule_dispatch: out of memory");
    s->loop = moor_loop_new(NULL);
    if (!s->loop)
        bench_fail("loop_schedule_dispatch: moor_loop_new failed");
    s->fd = -1;
    return s;
}

static void sched_teardown(void *state)
{
    struct loop_state *s = state;

    moor_unref(s->loop);
    free(s);
}

BENCH_LOOP(bench_loop_loop_schedule_dispatch, state, iters)
{
    struct loop_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        if (moor_loop_schedule(s->loop, sched_cb, s, NULL, NULL) < 0)
            bench_fail("loop_schedule_dispatch: schedule failed");
        int n = moor_loop_iterate(s->loop, -1);

        if (n != 1)
            bench_fail("loop_schedule_dispatch: iterate returned %d", n);
        bench_clobber();
    }
}

static const struct bench_case loop_cases[] = {
    {"epoll_eventfd_dispatch", NULL, 0, raw_setup, raw_teardown, bench_loop_epoll_eventfd_dispatch},
    {"loop_eventfd_dispatch", "epoll_eventfd_dispatch", 0, loop_setup, loop_teardown,
     bench_loop_loop_eventfd_dispatch},
    {"loop_schedule_dispatch", "epoll_eventfd_dispatch", 0, sched_setup, sched_teardown,
     bench_loop_loop_schedule_dispatch},
};

BENCH_REGISTER(loop_cases);
