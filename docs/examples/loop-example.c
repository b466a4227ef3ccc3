/* SPDX-License-Identifier: MIT */
/*
 * loop-example.c - the example of docs/loop.md: a loop thread reads from a
 * connection and ticks a timer; the main thread feeds the connection,
 * hands a job to the loop thread with moor_loop_schedule(), and tears the
 * connection down with moor_loop_remove_sync() before freeing it. Built and
 * run by `make check`.
 */
#include <assert.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <moor/loop.h>
#include <moor/object.h>

struct conn {
    int rfd, wfd;
    size_t bytes; /* touched by the loop thread only, until remove_sync */
    sem_t got_all;
};

struct ticker {
    int ticks;
    sem_t done;
};

/* Loop thread: the connection has data. */
static void on_readable(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct conn *c = opaque;
    char buf[64];
    ssize_t n = read(fd, buf, sizeof(buf));

    (void)loop;
    (void)id;
    (void)revents;
    if (n > 0 && (c->bytes += (size_t)n) == strlen("hello"))
        sem_post(&c->got_all);
}

/* Loop thread: every millisecond, three times, then the timer removes
 * itself (removing the running handler is allowed). */
static void on_tick(moor_loop *loop, uint64_t id, void *opaque)
{
    struct ticker *t = opaque;

    if (++t->ticks == 3) {
        moor_loop_remove(loop, id);
        sem_post(&t->done);
    }
}

/* Loop thread: a job handed over by another thread. */
static void report(moor_loop *loop, void *opaque)
{
    struct conn *c = opaque;

    assert(moor_loop_in_loop(loop));
    printf("loop thread: %zu bytes received\n", c->bytes);
}

static void report_done(void *opaque)
{
    sem_post(&((struct conn *)opaque)->got_all);
}

int main(void)
{
    moor_error err = MOOR_ERROR_INIT;
    moor_loop *loop = moor_loop_new(&err);
    struct conn *c = calloc(1, sizeof(*c));
    struct ticker t = {0};
    int fds[2];
    uint64_t conn_id;

    if (!loop || !c || pipe(fds) < 0) {
        fprintf(stderr, "loop-example: set-up failed\n");
        return 1;
    }
    c->rfd = fds[0];
    c->wfd = fds[1];
    sem_init(&c->got_all, 0, 0);
    sem_init(&t.done, 0, 0);

    if (moor_loop_add_fd(loop, c->rfd, MOOR_LOOP_IN, on_readable, c, NULL, &conn_id, &err) < 0 ||
        moor_loop_add_timer(loop, 1, 1, on_tick, &t, NULL, NULL, &err) < 0 ||
        moor_loop_thread_start(loop, &err) < 0) {
        fprintf(stderr, "loop-example: %s\n", err.message);
        return 1;
    }

    /* Feed the connection; the loop thread counts the bytes. */
    if (write(c->wfd, "hello", 5) != 5)
        return 1;
    sem_wait(&c->got_all);
    sem_wait(&t.done);

    /* Hand a job to the loop thread; its free_fn tells us it ran. */
    if (moor_loop_schedule(loop, report, c, report_done, &err) < 0) {
        fprintf(stderr, "loop-example: %s\n", err.message);
        return 1;
    }
    sem_wait(&c->got_all);

    /* Tear down: once remove_sync returns, on_readable is not running and
     * never will again, so the connection may be closed and freed. */
    if (moor_loop_remove_sync(loop, conn_id) < 0)
        return 1;
    close(c->rfd);
    close(c->wfd);
    sem_destroy(&c->got_all);
    free(c);

    moor_loop_thread_stop(loop); /* then the unref's teardown is done here */
    moor_unref(loop);
    printf("main: %d ticks, connection closed, loop gone\n", t.ticks);
    sem_destroy(&t.done);
    return t.ticks == 3 ? 0 : 1;
}
