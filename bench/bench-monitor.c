/* SPDX-License-Identifier: MIT */
/*
 * bench/bench-monitor.c - monitor round trips over a socketpair to an echo
 * peer thread, one caller against eight pipelined callers.
 *
 *   monitor_raw_rtt   the floor: the same request line written to the
 *                     same echo peer and its reply line read back, with
 *                     blocking write()/read() and no monitor, no codec.
 *   monitor_call_1    one thread calling moor_monitor_call() in a loop
 *                     (QMP-style JSON codec from tests/common; the loop
 *                     thread reads and classifies the replies). One op =
 *                     one call. Baseline: monitor_raw_rtt.
 *   monitor_call_8    the same total number of calls made by 8 caller
 *                     threads at once, so their requests are pipelined and
 *                     the peer answers batches. One op = one call; the
 *                     figure is wall time / calls, i.e. 1 / throughput.
 *                     Baseline: monitor_call_1, so ratio < 0.5 means
 *                     pipelining more than doubles the throughput.
 *
 * The peer is one thread that reads whatever has arrived, answers every
 * complete request in it with one write, and reads again: like a real
 * peer, it answers a batch in one go when requests queue up.
 * These are not fast-path figures (each op crosses threads and sockets),
 * so bench/callgrind.sh leaves them out.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <moor/loop.h>
#include <moor/monitor.h>
#include <moor/object.h>

#include "bench.h"
#include "qmp.h"

#define CALLERS    8
#define TIMEOUT_MS 10000

/* ---- the echo peer ------------------------------------------------------- */

/* Answer every complete request line in @in[0..*len) into @out; keep the
 * incomplete tail. Returns the bytes of replies written to @out. */
static size_t answer_batch(char *in, size_t *len, char *out, size_t cap)
{
    size_t used = 0, start = 0;
    char *nl;

    while ((nl = memchr(in + start, '\n', *len - start))) {
        const char *id = memmem(in + start, (size_t)(nl - (in + start)), "\"id\":", 5);

        if (!id)
            bench_fail("peer: request without an id");
        used += (size_t)snprintf(out + used, cap - used, "{\"return\": {}, \"id\": %" PRIu64 "}\n",
                                 (uint64_t)strtoull(id + 5, NULL, 10));
        if (used >= cap - 64)
            bench_fail("peer: reply buffer too small");
        start = (size_t)(nl - in) + 1;
    }
    memmove(in, in + start, *len - start);
    *len -= start;
    return used;
}

static void *echo_peer(void *arg)
{
    int fd = *(int *)arg;
    static __thread char in[1 << 16], out[1 << 17];
    size_t len = 0;

    for (;;) {
        ssize_t n = read(fd, in + len, sizeof(in) - len);
        size_t m;

        if (n <= 0)
            return NULL; /* end of file: the bench is over */
        len += (size_t)n;
        m = answer_batch(in, &len, out, sizeof(out));
        for (size_t off = 0; off < m;) {
            ssize_t w = send(fd, out + off, m - off, MSG_NOSIGNAL);

            if (w <= 0)
                return NULL;
            off += (size_t)w;
        }
    }
}

/* ---- state -------------------------------------------------------------- */

struct mb {
    moor_loop *loop;
    moor_monitor *mon; /* NULL for the raw case */
    int sv[2];         /* sv[1] is the peer's */
    pthread_t peer;

    /* the 8-caller case: persistent callers released per run */
    pthread_t callers[CALLERS];
    pthread_barrier_t start, done;
    uint64_t share[CALLERS];
    bool quit;
    unsigned ncallers;
};

static void mb_peer_start(struct mb *b)
{
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, b->sv) < 0)
        bench_fail("socketpair: %s", strerror(errno));
    if (pthread_create(&b->peer, NULL, echo_peer, &b->sv[1]) != 0)
        bench_fail("pthread_create failed");
}

static void *raw_setup(void)
{
    struct mb *b = calloc(1, sizeof(*b));

    if (!b)
        bench_fail("out of memory");
    mb_peer_start(b);
    return b;
}

static void *mon_setup(void)
{
    const moor_monitor_codec codec = vmd_qmp_codec();
    const moor_monitor_options opts = {.name = "bench peer"};
    moor_error err = MOOR_ERROR_INIT;
    struct mb *b = raw_setup();

    b->loop = moor_loop_new(&err);
    if (!b->loop || moor_loop_thread_start(b->loop, &err) < 0)
        bench_fail("loop: %s", moor_error_message(&err));
    b->mon = moor_monitor_new(b->loop, b->sv[0], &codec, NULL, NULL, &opts, &err);
    if (!b->mon)
        bench_fail("moor_monitor_new: %s", moor_error_message(&err));
    return b;
}

static void mb_teardown(void *state)
{
    struct mb *b = state;

    if (b->ncallers) {
        b->quit = true;
        pthread_barrier_wait(&b->start);
        for (unsigned i = 0; i < b->ncallers; i++)
            pthread_join(b->callers[i], NULL);
        pthread_barrier_destroy(&b->start);
        pthread_barrier_destroy(&b->done);
    }
    if (b->mon) {
        moor_monitor_close(b->mon); /* the peer sees end of file */
        moor_unref(b->mon);
        moor_loop_thread_stop(b->loop);
        moor_unref(b->loop);
    } else {
        shutdown(b->sv[0], SHUT_RDWR);
        close(b->sv[0]);
    }
    pthread_join(b->peer, NULL);
    close(b->sv[1]);
    free(b);
}

/* ---- the cases ------------------------------------------------------------ */

static const char request_line[] = "{\"execute\":\"ping\",\"id\":1}\n";

BENCH_LOOP(bench_loop_monitor_raw_rtt, state, iters)
{
    struct mb *b = state;
    char reply[128];

    for (uint64_t i = 0; i < iters; i++) {
        size_t got = 0;

        if (write(b->sv[0], request_line, sizeof(request_line) - 1) !=
            (ssize_t)sizeof(request_line) - 1)
            bench_fail("write failed");
        do {
            ssize_t n = read(b->sv[0], reply + got, sizeof(reply) - got);

            if (n <= 0)
                bench_fail("read failed");
            got += (size_t)n;
        } while (reply[got - 1] != '\n');
        bench_clobber();
    }
}

static void call_n(moor_monitor *mon, uint64_t n)
{
    const struct vmd_qmp_cmd cmd = {"ping", NULL};
    moor_error err = MOOR_ERROR_INIT;

    for (uint64_t i = 0; i < n; i++) {
        if (moor_monitor_call(mon, &cmd, NULL, TIMEOUT_MS, &err) != 0)
            bench_fail("moor_monitor_call: %s", moor_error_message(&err));
        bench_clobber();
    }
}

BENCH_LOOP(bench_loop_monitor_call_1, state, iters)
{
    call_n(((struct mb *)state)->mon, iters);
}

struct caller_arg {
    struct mb *b;
    unsigned index;
};

static struct caller_arg caller_args[CALLERS];

static void *caller_main(void *arg)
{
    struct caller_arg *a = arg;
    struct mb *b = a->b;

    for (;;) {
        pthread_barrier_wait(&b->start);
        if (b->quit)
            return NULL;
        call_n(b->mon, b->share[a->index]);
        pthread_barrier_wait(&b->done);
    }
}

static void *mon8_setup(void)
{
    struct mb *b = mon_setup();

    if (pthread_barrier_init(&b->start, NULL, CALLERS + 1) ||
        pthread_barrier_init(&b->done, NULL, CALLERS + 1))
        bench_fail("pthread_barrier_init failed");
    for (unsigned i = 0; i < CALLERS; i++) {
        caller_args[i] = (struct caller_arg){b, i};
        if (pthread_create(&b->callers[i], NULL, caller_main, &caller_args[i]) != 0)
            bench_fail("pthread_create failed");
        b->ncallers++;
    }
    return b;
}

/* The barriers order @share and @quit between this thread and the callers. */
BENCH_LOOP(bench_loop_monitor_call_8, state, iters)
{
    struct mb *b = state;

    for (unsigned i = 0; i < CALLERS; i++)
        b->share[i] = iters / CALLERS + (i < iters % CALLERS ? 1 : 0);
    pthread_barrier_wait(&b->start);
    pthread_barrier_wait(&b->done);
    bench_clobber();
}

static const struct bench_case monitor_cases[] = {
    {"monitor_raw_rtt", NULL, 0, raw_setup, mb_teardown, bench_loop_monitor_raw_rtt},
    {"monitor_call_1", "monitor_raw_rtt", 0, mon_setup, mb_teardown, bench_loop_monitor_call_1},
    {"monitor_call_8", "monitor_call_1", 0, mon8_setup, mb_teardown, bench_loop_monitor_call_8},
};
BENCH_REGISTER(monitor_cases);
