/* SPDX-License-Identifier: MIT */
/*
 * stress-monitor.c - many threads calling a peer that stalls, reorders,
 * refuses, babbles and dies, and is reconnected with a new monitor.
 *
 *     stress-monitor [THREADS]         callers (default 4)
 *     MOOR_STRESS_SECONDS=S            run time (default 2; decimals allowed)
 *     MOOR_UNDER_VALGRIND=1            caps threads and time, widens the slack
 *     MOOR_STRESS_MONITOR_SLACK_MS=M   lateness allowed past a deadline
 *                                      (default 100, also under ASan and
 *                                      TSan; 1000 under valgrind)
 *
 * One owner object (a lockable "vm" with a job) holds the current monitor.
 * Callers pick at random between the two ways an application calls: the
 * hand-off (lock, QUERY job, enter, call, exit, end job, unlock) and a plain
 * call on a monitor reference taken under the lock. Each call has a random
 * deadline of 10..200 ms and a unique number that the peer must echo back.
 * One call in four passes 1..3 descriptors of one shared memory file
 * (moor_monitor_call_fds) and says how many in its arguments; the peer
 * reads with recvmsg() and checks that each request came with exactly that
 * many, all of that file.
 *
 * The peer (one thread per connection, QMP-style JSON lines over a
 * socketpair) answers most requests at once and otherwise: holds a few and
 * answers them in reverse order, stalls for up to 300 ms, refuses, sends an
 * event first, sends a garbage line (which breaks the channel), or dies.
 * (The stall is a nanosleep in the peer: simulated slowness of the
 * process at the other end, not a way to let threads finish.)
 * The main thread reconnects (new socketpair, peer and monitor, swapped in
 * under a MODIFY job; the old monitor closed and dropped) whenever a channel
 * ends, and every ~0.4 s anyway, so closes land in the middle of calls.
 *
 * Invariants: every call returns exactly once, with a result from the
 * allowed set; a successful call got the reply to its own request; no call
 * returns later than its deadline + the slack, measured on every call (on
 * a quiet machine the worst is a few ms; a machine loaded by other jobs
 * can add scheduling delays, hence the knob; ASan and TSan runs keep the
 * 100 ms bound, only valgrind, which runs one thread at a time, gets a
 * wider default); a call that was pending when its channel broke fails
 * with -EPIPE, never -ETIMEDOUT (a timeout whose deadline lies after the
 * on_eof of its connection is a call the break should have failed);
 * on_eof runs at most once per monitor, always
 * with the owner; a closed monitor has nothing pending; at the end nothing
 * is entered, no misuse was reported, the census is zero and the process
 * has the descriptors it had at the start (no duplicate left behind by a
 * timeout, a close or a dying peer). Prints counts and the worst lateness
 * past a deadline.
 */
#define _GNU_SOURCE
#define STRESS_PROG "stress-monitor"
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <moor/debug.h>
#include <moor/job.h>
#include <moor/loop.h>
#include <moor/monitor.h>
#include <moor/object.h>

#include "qmp.h"
#include "qmp-peer.h"
#include "stress-util.h"

#define MAX_THREADS       64
#define VALGRIND_THR      2
#define VALGRIND_SECS     2.0
#define SLACK_MS          100.0
#define VALGRIND_SLACK_MS 1000.0 /* valgrind runs one thread at a time */

#define MIN_DEADLINE_MS 10
#define MAX_DEADLINE_MS 200
#define MAX_STALL_MS    300
#define RECONNECT_MS    400 /* the main thread reconnects at least this often */
#define REORDER_MAX     4
#define MAX_PASSED      3 /* descriptors per call that passes some */

/* ---- the owner and its connections ----------------------------------------- */

/* When on_eof ran for connection gen (ns, CLOCK_MONOTONIC; 0: not yet),
 * indexed by gen % GEN_RING. Relaxed: a caller that misses a store only
 * checks less; on_eof runs after the break failed the pending calls, so a
 * time seen here is never earlier than the break. */
#define GEN_RING 4096
static atomic_int_fast64_t eof_ns[GEN_RING];

struct vm {
    moor_lockable parent;
    moor_job job;
    moor_monitor *mon; /* the current monitor; under the vm's mutex */
    unsigned gen;      /* its connection's number; likewise */
};

static const moor_class *vm_class;
static struct vm *vm;
static moor_loop *loop;
static double slack_ms = SLACK_MS;
static int shared_file = -1; /* the memory file whose descriptors calls pass */
static struct stat shared_st;

/* One connection: socketpair, peer thread and monitor. */
struct conn {
    unsigned gen;
    int peer_fd;
    pthread_t peer;
    uint64_t seed;
    moor_monitor *mon; /* the main thread's reference */
    atomic_int eofs;   /* on_eof calls; relaxed: a counter read after joins */
    struct conn *next_retired;
};

/* The main thread sleeps here until a channel ends or it is time to
 * reconnect anyway. */
static pthread_mutex_t mgr_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mgr_cond; /* CLOCK_MONOTONIC; set up in setup() */
static bool mgr_wanted;

static void mgr_wake(void)
{
    pthread_mutex_lock(&mgr_lock);
    mgr_wanted = true;
    pthread_cond_signal(&mgr_cond);
    pthread_mutex_unlock(&mgr_lock);
}

/* Callers that found the channel broken wait here for the next one
 * instead of spinning (a real daemon would not hammer a dead peer). They
 * do not wake the main thread themselves: on_eof and a dying peer do, and
 * a channel that was closed has been replaced already. */
static pthread_mutex_t gen_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gen_cond; /* CLOCK_MONOTONIC; set up in setup() */
static unsigned published_gen;
static struct timespec deadline;

static void publish_gen(unsigned gen)
{
    pthread_mutex_lock(&gen_lock);
    published_gen = gen;
    pthread_cond_broadcast(&gen_cond);
    pthread_mutex_unlock(&gen_lock);
}

static void wait_for_next_gen(unsigned seen)
{
    pthread_mutex_lock(&gen_lock);
    while (published_gen == seen && !stress_past(&deadline) && !atomic_load(&stress_stop))
        pthread_cond_timedwait(&gen_cond, &gen_lock, &deadline);
    pthread_mutex_unlock(&gen_lock);
}

/* Tallies; relaxed atomics: counters read after every thread is joined. */
static atomic_uint_fast64_t n_started, n_returned, n_ok, n_timeout, n_pipe, n_refused, n_srch,
    n_events, n_eofs, n_conns, n_handoff, n_with_fds, n_fds_seen;
static atomic_int_fast64_t worst_late_us = INT64_MIN; /* max(returned - deadline) */

static void count(atomic_uint_fast64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static void on_event(moor_monitor *mon, void *owner, moor_monitor_message *msg, void *opaque)
{
    (void)mon;
    (void)opaque;
    if (owner != vm)
        fail("on_event with owner %p, expected %p", owner, (void *)vm);
    if (msg->kind != MOOR_MONITOR_EVENT && msg->kind != MOOR_MONITOR_GREETING)
        fail("on_event with kind %d", (int)msg->kind);
    count(&n_events);
}

static void on_eof(moor_monitor *mon, void *owner, const moor_error *why, void *opaque)
{
    struct conn *c = opaque;

    (void)mon;
    if (owner != vm)
        fail("on_eof with owner %p, expected %p", owner, (void *)vm);
    if (why->code >= 0)
        fail("on_eof with code %d", why->code);
    atomic_store_explicit(&eof_ns[c->gen % GEN_RING], stress_ns(stress_now()),
                          memory_order_relaxed);
    if (atomic_fetch_add_explicit(&c->eofs, 1, memory_order_relaxed) != 0)
        fail("on_eof twice on connection %u", c->gen);
    count(&n_eofs);
    mgr_wake();
}

/* ---- the peer ------------------------------------------------------------------ */

static void sleep_ms(unsigned ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&t, &t) < 0 && errno == EINTR)
        ;
}

static int reply_to(int fd, const qmp_request_in *req)
{
    const char *args = req->arguments
                           ? json_object_to_json_string_ext(req->arguments, JSON_C_TO_STRING_PLAIN)
                           : "{}";

    return qmp_send_return(fd, req->id, args);
}

/* Check the descriptors that came with @req's bytes: as many as its
 * "fds" argument says, all of the shared file; then close them. */
static void check_passed(struct conn *c, const qmp_request_in *req, const int *fds, unsigned nfds)
{
    struct json_object *v;
    unsigned want = 0;

    if (req->arguments && json_object_object_get_ex(req->arguments, "fds", &v))
        want = (unsigned)json_object_get_int(v);
    if (nfds != want)
        fail("peer %u: request %" PRIu64 " came with %u descriptors, not %u", c->gen, req->id, nfds,
             want);
    for (unsigned i = 0; i < nfds; i++) {
        struct stat st;

        if (fstat(fds[i], &st) < 0 || st.st_ino != shared_st.st_ino ||
            st.st_dev != shared_st.st_dev)
            fail("peer %u: request %" PRIu64 ": descriptor %u is not the shared file", c->gen,
                 req->id, i);
        close(fds[i]);
    }
    if (nfds)
        count(&n_fds_seen);
}

/* Answer the held requests, last first. */
static bool flush_held(struct conn *c, qmp_request_in *held, unsigned *nheld)
{
    bool alive = true;

    while (*nheld && alive) {
        --*nheld;
        alive = reply_to(c->peer_fd, &held[*nheld]) == 0;
        json_object_put(held[*nheld].arguments);
        held[*nheld].arguments = NULL;
    }
    return alive;
}

static void *peer_main(void *arg)
{
    struct conn *c = arg;
    qmp_request_in held[REORDER_MAX];
    unsigned nheld = 0;
    qmp_linebuf lb = {0};
    bool alive = qmp_send_greeting(c->peer_fd) == 0;
    char *line;

    while (alive) {
        struct pollfd pfd = {c->peer_fd, POLLIN, 0};
        int fds[QMP_PEER_MAX_FDS];
        qmp_request_in req;
        unsigned dice, nfds;

        /* Held requests are answered once no new one comes for a moment
         * (their callers may be all there is). */
        if (nheld && lb.len == lb.line_len && poll(&pfd, 1, 5) == 0) {
            alive = flush_held(c, held, &nheld);
            continue;
        }
        if (qmp_read_line_fds(c->peer_fd, &lb, &line, fds, QMP_PEER_MAX_FDS, &nfds) < 0)
            break;
        dice = (unsigned)(stress_rnd(&c->seed) % 1000);
        if (!qmp_parse_request(line, &req)) {
            fail("peer %u: not a request: %.60s", c->gen, line);
            break;
        }
        check_passed(c, &req, fds, nfds);
        if (dice < 100 && nheld < REORDER_MAX) {
            held[nheld++] = req; /* answered later, in reverse */
            req.arguments = NULL;
        } else if (dice < 103) {
            shutdown(c->peer_fd, SHUT_RDWR); /* dies */
            alive = false;
            mgr_wake();
        } else if (dice < 105) {
            alive = qmp_writef(c->peer_fd, "garbage, not JSON\n") == 0;
        } else if (dice < 110) {
            sleep_ms(1 + (unsigned)(stress_rnd(&c->seed) % MAX_STALL_MS));
            alive = reply_to(c->peer_fd, &req) == 0;
        } else if (dice < 200) {
            alive = qmp_send_error(c->peer_fd, req.id, "GenericError", "refused") == 0;
        } else if (dice < 300) {
            alive = qmp_send_event(c->peer_fd, "TICK", (long)req.id) == 0 &&
                    reply_to(c->peer_fd, &req) == 0;
        } else {
            alive = reply_to(c->peer_fd, &req) == 0;
        }
        json_object_put(req.arguments);
        if (alive && nheld && (nheld == REORDER_MAX || stress_rnd(&c->seed) % 4 == 0))
            alive = flush_held(c, held, &nheld);
    }
    while (nheld)
        json_object_put(held[--nheld].arguments);
    if (lb.fds_dropped)
        fail("peer %u: %u descriptors beyond what one request carries", c->gen, lb.fds_dropped);
    qmp_linebuf_free(&lb);
    mgr_wake();
    return NULL;
}

/* ---- connections ----------------------------------------------------------------- */

static struct conn *conn_open(unsigned gen)
{
    const moor_monitor_codec codec = vmd_qmp_codec();
    moor_error err = MOOR_ERROR_INIT;
    struct conn *c = calloc(1, sizeof(*c));
    char name[32];
    int sv[2];

    if (!c || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        fail("out of memory or sockets");
        free(c);
        return NULL;
    }
    c->gen = gen;
    atomic_store_explicit(&eof_ns[gen % GEN_RING], 0, memory_order_relaxed);
    c->peer_fd = sv[1];
    c->seed = stress_seed(gen + 1000);
    snprintf(name, sizeof(name), "peer %u", gen);
    const moor_monitor_callbacks cb = {on_event, on_eof, c};
    const moor_monitor_options opts = {.name = name, .max_message = 4096};
    c->mon = moor_monitor_new(loop, sv[0], &codec, &cb, vm, &opts, &err);
    if (!c->mon) {
        fail("moor_monitor_new: %s", moor_error_message(&err));
        close(sv[0]);
        close(sv[1]);
        free(c);
        return NULL;
    }
    if (pthread_create(&c->peer, NULL, peer_main, c) != 0) {
        fail("pthread_create");
        moor_unref(c->mon);
        close(sv[1]);
        free(c);
        return NULL;
    }
    count(&n_conns);
    return c;
}

/* Close @c's monitor (pending calls fail at once) and check it; its peer
 * sees the end, and is joined later by reap(): a stalled peer takes up to
 * MAX_STALL_MS to notice, and reconnecting must not wait for that. */
static struct conn *retired;

static void conn_retire(struct conn *c)
{
    moor_monitor_stats st;

    moor_monitor_close(c->mon);
    if (moor_monitor_get_stats(c->mon, &st) < 0 || st.pending != 0 ||
        st.state != MOOR_MONITOR_CLOSED)
        fail("connection %u after close: %u pending, state %d", c->gen, st.pending, (int)st.state);
    moor_clear(&c->mon);
    shutdown(c->peer_fd, SHUT_RDWR); /* a stalled peer wakes to an error */
    c->next_retired = retired;
    retired = c;
}

/* Join the peers of retired connections that have ended (all of them if
 * @wait) and free those connections. */
static void reap(bool wait)
{
    struct conn **pp = &retired;

    while (*pp) {
        struct conn *c = *pp;

        if (wait ? pthread_join(c->peer, NULL) != 0 : pthread_tryjoin_np(c->peer, NULL) != 0) {
            pp = &c->next_retired;
            continue;
        }
        *pp = c->next_retired;
        close(c->peer_fd);
        /* relaxed: ordered by the close (no callback after it). */
        if (atomic_load_explicit(&c->eofs, memory_order_relaxed) > 1)
            fail("connection %u: on_eof ran %d times", c->gen, atomic_load(&c->eofs));
        free(c);
    }
}

/* Make @next's monitor the vm's (NULL: none) under a MODIFY job, as a
 * state change of the vm; the vm's reference to the old one is dropped
 * (the old connection still holds its own). */
static void install(struct conn *next)
{
    moor_error err = MOOR_ERROR_INIT;

    moor_lock(vm);
    if (moor_job_begin(&vm->job, MOOR_JOB_MODIFY, "reconnect", &err) < 0)
        fail("reconnect job: %s", moor_error_message(&err));
    moor_unref(vm->mon);
    vm->mon = next ? moor_ref(next->mon) : NULL;
    vm->gen = next ? next->gen : UINT32_MAX;
    publish_gen(vm->gen); /* before the unlock: whoever sees the new gen
                           * in vm sees it published (gen_lock is a leaf) */
    moor_job_end(&vm->job);
    moor_unlock(vm);
}

/* ---- callers ------------------------------------------------------------------------- */

struct caller {
    pthread_t thread;
    unsigned index;
    uint64_t seed;
};

static double ms_since(const struct timespec *t0)
{
    return stress_elapsed(t0) * 1e3;
}

/* A timeout on connection @gen for a call that began at @t0 with
 * @timeout_ms: fail if the channel broke while the call was pending. The
 * call's own deadline is at least t0 + timeout; if on_eof (which follows
 * the break) ran more than a millisecond before that, the call was
 * pending at the break (a call begun after it fails at once with -EPIPE)
 * and the break owed it -EPIPE. */
static void check_timeout_not_owed_epipe(uint64_t n, unsigned gen, const struct timespec *t0,
                                         int timeout_ms)
{
    /* relaxed: see eof_ns. */
    int_fast64_t eof = atomic_load_explicit(&eof_ns[gen % GEN_RING], memory_order_relaxed);
    int_fast64_t due = stress_ns(*t0) + (int_fast64_t)timeout_ms * 1000000;

    if (eof && eof + 1000000 < due)
        fail("call %" PRIu64 " on connection %u timed out, but the channel broke (on_eof) %.1f ms "
             "before its deadline: a call pending at EOF is owed -EPIPE",
             n, gen, (double)(due - eof) / 1e6);
}

/* One call on connection @gen; checks the result, the reply and the time
 * taken. Returns the call's result. */
static int one_call(struct caller *w, moor_monitor *mon, unsigned gen, uint64_t n)
{
    int timeout =
        MIN_DEADLINE_MS + (int)(stress_rnd(&w->seed) % (MAX_DEADLINE_MS - MIN_DEADLINE_MS + 1));
    struct json_object *args = json_object_new_object(), *v;
    unsigned nfds = stress_rnd(&w->seed) % 4 ? 0 : 1 + (unsigned)(n % MAX_PASSED);
    const int fds[MAX_PASSED] = {shared_file, shared_file, shared_file};
    moor_error err = MOOR_ERROR_INIT;
    void *reply = NULL;
    struct timespec t0;
    double took;
    int rc;

    json_object_object_add(args, "n", json_object_new_int64((int64_t)n));
    if (nfds) {
        json_object_object_add(args, "fds", json_object_new_int((int)nfds));
        count(&n_with_fds);
    }
    struct vmd_qmp_cmd cmd = {"echo", args};
    count(&n_started);
    t0 = stress_now();
    rc = nfds ? moor_monitor_call_fds(mon, &cmd, fds, nfds, &reply, timeout, &err)
              : moor_monitor_call(mon, &cmd, &reply, timeout, &err);
    took = ms_since(&t0);
    count(&n_returned);

    int_fast64_t late = (int_fast64_t)((took - timeout) * 1e3);
    int_fast64_t worst = atomic_load_explicit(&worst_late_us, memory_order_relaxed);
    /* relaxed: a maximum read after the joins. */
    while (late > worst &&
           !atomic_compare_exchange_weak_explicit(&worst_late_us, &worst, late,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
    if (took > timeout + slack_ms)
        fail("call %" PRIu64 " returned %.1f ms after its %d ms deadline (rc %d)", n,
             took - timeout, timeout, rc);
    switch (rc) {
    case 0:
        if (!json_object_object_get_ex(reply, "n", &v) || (uint64_t)json_object_get_int64(v) != n)
            fail("call %" PRIu64 " got someone else's reply: %s", n,
                 json_object_to_json_string(reply));
        count(&n_ok);
        break;
    case -ETIMEDOUT:
        check_timeout_not_owed_epipe(n, gen, &t0, timeout);
        count(&n_timeout);
        break;
    case -EPIPE:
        count(&n_pipe);
        break;
    case -EREMOTEIO:
        count(&n_refused);
        break;
    default:
        fail("call %" PRIu64 ": unexpected %d: %s", n, rc, moor_error_message(&err));
    }
    moor_monitor_payload_free(mon, reply);
    json_object_put(args);
    return rc;
}

static void *caller_main(void *arg)
{
    struct caller *w = arg;
    moor_error err = MOOR_ERROR_INIT;

    for (uint64_t i = 0; stress_go_on(&deadline, (unsigned)i); i++) {
        uint64_t n = ((uint64_t)w->index << 40) | i;
        moor_monitor *mon;
        unsigned gen;
        bool broken;

        moor_lock(vm);
        if (stress_rnd(&w->seed) % 2) {
            /* The hand-off, as an API call does it. */
            if (moor_job_begin(&vm->job, MOOR_JOB_QUERY, "stress_query", &err) < 0) {
                fail("QUERY job: %s", moor_error_message(&err));
                moor_unlock(vm);
                break;
            }
            /* Read with the job held: a begin that waited dropped the
             * mutex, and a reconnect may have changed both meanwhile. */
            mon = vm->mon;
            gen = vm->gen;
            int rc = moor_monitor_enter(mon, vm);
            if (rc == 0) {
                broken = one_call(w, mon, gen, n) == -EPIPE;
                rc = moor_monitor_exit(mon, vm);
                if (rc != 0 && rc != -ESRCH)
                    fail("exit: %d", rc);
                count(&n_handoff);
            } else if (rc != -ESRCH) {
                fail("enter: %d", rc);
            }
            if (rc == -ESRCH)
                count(&n_srch);
            broken = rc == -ESRCH;
            moor_job_end(&vm->job);
            moor_unlock(vm);
        } else {
            mon = moor_ref(vm->mon);
            gen = vm->gen;
            moor_unlock(vm);
            broken = one_call(w, mon, gen, n) == -EPIPE;
            moor_unref(mon);
        }
        if (broken)
            wait_for_next_gen(gen);
    }
    return NULL;
}

/* ---- main ------------------------------------------------------------------------------- */

static void vm_dispose(void *obj)
{
    struct vm *v = obj;

    moor_unref(v->mon);
    moor_job_destroy(&v->job);
}

static void setup(void)
{
    moor_error err = MOOR_ERROR_INIT;
    pthread_condattr_t attr;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&mgr_cond, &attr);
    pthread_cond_init(&gen_cond, &attr);
    pthread_condattr_destroy(&attr);
    vm_class =
        moor_class_new("stress.vm", moor_lockable_class(), sizeof(struct vm), vm_dispose, &err);
    loop = moor_loop_new(&err);
    vm = vm_class ? moor_object_new(vm_class) : NULL;
    if (!vm || !loop || moor_job_init(&vm->job, vm, "vm") < 0 ||
        moor_loop_thread_start(loop, &err) < 0) {
        fprintf(stderr, STRESS_PROG ": setup failed: %s\n", moor_error_message(&err));
        exit(1);
    }
}

/* The descriptors open in this process (the directory's own not counted). */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (!d) {
        fail("/proc/self/fd: %s", strerror(errno));
        return -1;
    }
    while ((e = readdir(d)))
        n += e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d);
    closedir(d);
    return n;
}

/* Wait until a channel ended or RECONNECT_MS passed. */
static void wait_for_reason(void)
{
    struct timespec until = stress_add_seconds(stress_now(), RECONNECT_MS / 1e3);

    if (deadline.tv_sec < until.tv_sec ||
        (deadline.tv_sec == until.tv_sec && deadline.tv_nsec < until.tv_nsec))
        until = deadline;
    pthread_mutex_lock(&mgr_lock);
    while (!mgr_wanted && !stress_past(&until))
        pthread_cond_timedwait(&mgr_cond, &mgr_lock, &until);
    mgr_wanted = false;
    pthread_mutex_unlock(&mgr_lock);
}

int main(int argc, char **argv)
{
    unsigned threads = stress_arg_threads(argc, argv, 4, MAX_THREADS);
    double seconds = stress_env_seconds(STRESS_DEFAULT_SECONDS);
    struct caller callers[MAX_THREADS];
    struct timespec start;
    struct conn *cur;
    unsigned gen = 0, ncallers = 0;
    int fds_at_start;

    stress_valgrind_caps(&threads, VALGRIND_THR, &seconds, VALGRIND_SECS);
    if (stress_under_valgrind())
        slack_ms = VALGRIND_SLACK_MS;
    if (getenv("MOOR_STRESS_MONITOR_SLACK_MS")) {
        char *end;

        slack_ms = strtod(getenv("MOOR_STRESS_MONITOR_SLACK_MS"), &end);
        if (*end || !(slack_ms >= 0)) {
            fprintf(stderr, STRESS_PROG ": MOOR_STRESS_MONITOR_SLACK_MS: want milliseconds\n");
            return 2;
        }
    }
    stress_catch_misuse();
    fds_at_start = count_fds();
    shared_file = memfd_create("stress-monitor", MFD_CLOEXEC);
    if (shared_file < 0 || fstat(shared_file, &shared_st) < 0) {
        fprintf(stderr, STRESS_PROG ": memfd_create: %s\n", strerror(errno));
        return 1;
    }
    setup();
    start = stress_now();
    deadline = stress_add_seconds(start, seconds);
    if (!(cur = conn_open(gen++)))
        return 1;
    install(cur);
    for (unsigned i = 0; i < threads; i++) {
        callers[i] = (struct caller){.index = i, .seed = stress_seed(i)};
        if (pthread_create(&callers[i].thread, NULL, caller_main, &callers[i]) != 0) {
            fail("pthread_create");
            break;
        }
        ncallers++;
    }
    while (!stress_past(&deadline) && !atomic_load(&stress_stop)) {
        struct conn *next;

        wait_for_reason();
        reap(false);
        if (stress_past(&deadline) || !(next = conn_open(gen++)))
            break;
        install(next);
        conn_retire(cur);
        cur = next;
    }
    for (unsigned i = 0; i < ncallers; i++)
        pthread_join(callers[i].thread, NULL);

    moor_monitor_stats st;
    if (moor_monitor_get_stats(cur->mon, &st) == 0 && st.entered != 0)
        fail("%u enter(s) without exit at the end", st.entered);
    install(NULL);
    conn_retire(cur);
    reap(true);
    moor_unref(vm);
    moor_loop_thread_stop(loop);
    moor_unref(loop);
    close(shared_file);
    if (count_fds() != fds_at_start)
        fail("%d descriptors open at the end, %d at the start", count_fds(), fds_at_start);

    /* relaxed loads: every thread that counted has been joined. */
    if (atomic_load(&n_started) != atomic_load(&n_returned))
        fail("%" PRIuFAST64 " calls started, %" PRIuFAST64 " returned", atomic_load(&n_started),
             atomic_load(&n_returned));
    if (atomic_load(&n_ok) + atomic_load(&n_timeout) + atomic_load(&n_pipe) +
            atomic_load(&n_refused) !=
        atomic_load(&n_returned))
        fail("results do not add up");
    if (stress_misuse_reports())
        fail("%d misuse reports", stress_misuse_reports());
    stress_check_census();
    printf(STRESS_PROG ": %u callers, %.1f s, %" PRIuFAST64 " connections: %" PRIuFAST64
                       " calls (ok %" PRIuFAST64 ", timed out %" PRIuFAST64 ", broken %" PRIuFAST64
                       ", refused %" PRIuFAST64 "), %" PRIuFAST64 " hand-offs, %" PRIuFAST64
                       " enters refused, %" PRIuFAST64 " events, %" PRIuFAST64
                       " on_eof, %" PRIuFAST64 " calls passed descriptors (%" PRIuFAST64
                       " received); latest return %.1f ms after a deadline (limit %.0f)\n",
           ncallers, stress_elapsed(&start), atomic_load(&n_conns), atomic_load(&n_returned),
           atomic_load(&n_ok), atomic_load(&n_timeout), atomic_load(&n_pipe),
           atomic_load(&n_refused), atomic_load(&n_handoff), atomic_load(&n_srch),
           atomic_load(&n_events), atomic_load(&n_eofs), atomic_load(&n_with_fds),
           atomic_load(&n_fds_seen), (double)atomic_load(&worst_late_us) / 1e3, slack_ms);
    printf(STRESS_PROG ": %s\n", stress_exit_status() ? "FAIL" : "OK");
    return stress_exit_status();
}
