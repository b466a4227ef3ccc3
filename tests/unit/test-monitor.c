/* SPDX-License-Identifier: MIT */
/*
 * test-monitor.c - the monitor against a fake QMP peer written here: a
 * thread on the other end of a socketpair that runs a per-test script.
 *
 * Covered: calls and greetings; pipelined calls from several threads
 * answered out of order with events in between; a deadline that expires
 * and the late reply that follows; the peer closing in the middle of calls
 * (every waiter fails fast, on_eof once); garbage, unframable and
 * oversized input; refusals; large requests and replies (partial writes);
 * events whose owner is gone; enter/exit, also with the owner removed from
 * a registry and the monitor closed while a caller is inside; closing and
 * dropping the last reference from the monitor's own callbacks; a write
 * error in the caller's thread; misuse; out-of-memory walks.
 *
 * Synchronisation is by condition variables ("gates") and joins; the peer
 * tells the test what it has received, the test tells the peer when to go
 * on. Deadlines in the tests are generous (FOREVER) except where a
 * deadline is what is tested.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

#include <moor/debug.h>
#include <moor/job.h>
#include <moor/loop.h>
#include <moor/monitor.h>
#include <moor/object.h>
#include <moor/registry.h>

#include "qmp.h"
#include "qmp-peer.h"
#include "test-util.h"

/* test_enter_exit_owner_removed uses a registry. */
TU_TSAN_IGNORE_LIBURCU;

#define FOREVER   20000 /* ms: longer than any test step; a hang fails */
#define CALLERS   8
#define SMALL_CAP 256u

/* ---- the owner: a lockable object with a job and the monitor -------------- */

struct vm {
    moor_lockable parent;
    moor_job job;
    moor_monitor *mon; /* guarded by the vm's mutex */
};

static const moor_class *vm_class;

static void vm_dispose(void *obj)
{
    struct vm *vm = obj;

    moor_unref(vm->mon);
    moor_job_destroy(&vm->job);
}

static struct vm *vm_new(void)
{
    struct vm *vm = moor_object_new(vm_class);

    assert_non_null(vm);
    assert_int_equal(moor_job_init(&vm->job, vm, "vm1"), 0);
    return vm;
}

/* ---- gates: "n things happened", waited for with a deadline ----------------- */

struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int n;
};

#define GATE_INIT                                                                                  \
    {                                                                                              \
        PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0                                     \
    }

static void gate_add(struct gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->n++;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static int gate_get(struct gate *g)
{
    int n;

    pthread_mutex_lock(&g->lock);
    n = g->n;
    pthread_mutex_unlock(&g->lock);
    return n;
}

/* Wait until the gate reached @n; false after FOREVER ms. */
static bool gate_wait(struct gate *g, int n)
{
    struct timespec dl;
    bool ok = true;

    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += FOREVER / 1000;
    pthread_mutex_lock(&g->lock);
    while (g->n < n && ok)
        ok = pthread_cond_timedwait(&g->cond, &g->lock, &dl) != ETIMEDOUT || g->n >= n;
    pthread_mutex_unlock(&g->lock);
    return ok;
}

static double now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* ---- the fixture ------------------------------------------------------------- */

struct fx;
typedef void (*peer_fn)(struct fx *fx);

struct fx {
    moor_loop *loop;
    int sv[2]; /* sv[0]: the monitor's; sv[1]: the peer's */
    struct vm *vm;
    moor_monitor *mon; /* the test's reference */
    pthread_t peer;
    peer_fn script;
    qmp_linebuf lb;

    /* what the callbacks saw */
    struct gate events, greetings, eofs;
    int eof_code;
    char eof_text[MOOR_ERROR_MESSAGE_SIZE];
    bool eof_on_loop, events_on_loop, owner_ok;
    int last_seq;
    void *expect_owner; /* set before the monitor exists, then constant */
    /* a callback's extra action: set before the monitor exists */
    void (*on_event_extra)(struct fx *fx, moor_monitor *mon, void *owner);
    void (*on_eof_extra)(struct fx *fx, moor_monitor *mon, void *owner);

    /* peer <-> test handshakes */
    struct gate received; /* requests the peer has read */
    struct gate go;       /* the test lets the peer go on */
    struct gate peer_done;
};

static void cb_event(moor_monitor *mon, void *owner, moor_monitor_message *msg, void *opaque)
{
    struct fx *fx = opaque;
    struct json_object *data, *seq;

    fx->events_on_loop = moor_loop_in_loop(fx->loop);
    fx->owner_ok = owner == fx->expect_owner;
    if (msg->kind == MOOR_MONITOR_GREETING) {
        gate_add(&fx->greetings);
        return;
    }
    if (json_object_object_get_ex(msg->payload, "data", &data) &&
        json_object_object_get_ex(data, "seq", &seq))
        fx->last_seq = json_object_get_int(seq);
    if (fx->on_event_extra)
        fx->on_event_extra(fx, mon, owner);
    gate_add(&fx->events);
}

static void cb_eof(moor_monitor *mon, void *owner, const moor_error *why, void *opaque)
{
    struct fx *fx = opaque;

    fx->eof_on_loop = moor_loop_in_loop(fx->loop);
    fx->owner_ok = owner == fx->expect_owner;
    fx->eof_code = why->code;
    snprintf(fx->eof_text, sizeof(fx->eof_text), "%s", moor_error_message(why));
    if (fx->on_eof_extra)
        fx->on_eof_extra(fx, mon, owner);
    gate_add(&fx->eofs);
}

static void *peer_main(void *arg)
{
    struct fx *fx = arg;

    fx->script(fx);
    gate_add(&fx->peer_done);
    return NULL;
}

static void fx_init(struct fx *fx)
{
    const struct gate g = GATE_INIT;

    memset(fx, 0, sizeof(*fx));
    fx->events = fx->greetings = fx->eofs = fx->received = fx->go = fx->peer_done = g;
    fx->sv[0] = fx->sv[1] = -1;
}

/* After fx_init(): loop (with its thread unless @manual), socketpair,
 * owner, monitor, and the peer thread running @script (if not NULL). */
static void fx_begin(struct fx *fx, peer_fn script, const moor_monitor_options *opts, bool manual)
{
    moor_error err = MOOR_ERROR_INIT;
    const moor_monitor_codec codec = vmd_qmp_codec();
    const moor_monitor_callbacks cb = {cb_event, cb_eof, fx};

    assert_non_null(fx->loop = moor_loop_new(&err));
    if (!manual)
        assert_int_equal(moor_loop_thread_start(fx->loop, &err), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fx->sv), 0);
    fx->vm = vm_new();
    fx->expect_owner = fx->vm;
    fx->mon = moor_monitor_new(fx->loop, fx->sv[0], &codec, &cb, fx->vm, opts, &err);
    if (!fx->mon)
        fail_msg("moor_monitor_new: %s", moor_error_message(&err));
    moor_lock(fx->vm); /* the callbacks read it under the lock */
    fx->vm->mon = moor_ref(fx->mon);
    moor_unlock(fx->vm);
    fx->script = script;
    if (script)
        assert_int_equal(pthread_create(&fx->peer, NULL, peer_main, fx), 0);
}

static void fx_start(struct fx *fx, peer_fn script)
{
    const moor_monitor_options opts = {.name = "test-mon"};

    fx_init(fx);
    fx_begin(fx, script, &opts, false);
}

/* The same with @opts. */
static void fx_start_opts(struct fx *fx, peer_fn script, const moor_monitor_options *opts)
{
    fx_init(fx);
    fx_begin(fx, script, opts, false);
}

/* One iteration that may sleep, but no longer than a bounded poll. */
static void iterate_once(moor_loop *loop)
{
    assert_true(moor_loop_iterate(loop, tu_poll_ms()) >= 0);
}

static void wait_state(moor_monitor *mon, moor_monitor_state state)
{
    double deadline = now_ms() + FOREVER;
    moor_monitor_stats st;

    do {
        assert_int_equal(moor_monitor_get_stats(mon, &st), 0);
        if (st.state == state)
            return;
        sched_yield();
    } while (now_ms() < deadline);
    fail_msg("monitor state %d, expected %d", (int)st.state, (int)state);
}

/* Close the monitor (the peer then sees end of file), join the peer, drop
 * everything. */
static void fx_stop(struct fx *fx)
{
    if (fx->mon)
        moor_monitor_close(fx->mon);
    if (fx->script)
        tu_join(fx->peer, NULL);
    moor_clear(&fx->mon);
    if (fx->vm) {
        moor_lock(fx->vm);
        moor_monitor *mon = fx->vm->mon;
        fx->vm->mon = NULL;
        moor_unlock(fx->vm);
        moor_unref(mon);
    }
    moor_clear(&fx->vm);
    moor_loop_thread_stop(fx->loop); /* -ESRCH if none was started */
    moor_clear(&fx->loop);
    close(fx->sv[1]);
    qmp_linebuf_free(&fx->lb);
}

/* ---- peer helpers -------------------------------------------------------------- */

/* Read the next request; false at end of file. */
static bool peer_next(struct fx *fx, qmp_request_in *req)
{
    char *line;

    while (qmp_read_line(fx->sv[1], &fx->lb, &line) >= 0) {
        if (qmp_parse_request(line, req)) {
            gate_add(&fx->received);
            return true;
        }
        fprintf(stderr, "peer: not a request: %.80s\n", line);
    }
    return false;
}

/* Echo every request's arguments until end of file. */
static void peer_echo_rest(struct fx *fx)
{
    qmp_request_in req;

    while (peer_next(fx, &req)) {
        const char *args =
            req.arguments ? json_object_to_json_string_ext(req.arguments, JSON_C_TO_STRING_PLAIN)
                          : "{}";

        qmp_send_return(fx->sv[1], req.id, args);
        json_object_put(req.arguments);
    }
}

static void peer_echo(struct fx *fx)
{
    qmp_send_greeting(fx->sv[1]);
    peer_echo_rest(fx);
}

/* ---- callers -------------------------------------------------------------------- */

struct caller {
    struct fx *fx;
    moor_monitor *mon;
    const char *execute;
    int n;          /* sent as {"n": n} */
    int timeout_ms; /* 0: FOREVER */
    int rc;
    int got_n;     /* the reply's "n", -1 if none */
    double ms;     /* how long the call took */
    double end_ms; /* when it returned (now_ms) */
    moor_error err;
};

static struct json_object *args_n(int n)
{
    struct json_object *a = json_object_new_object();

    json_object_object_add(a, "n", json_object_new_int(n));
    return a;
}

static void *caller_main(void *arg)
{
    struct caller *c = arg;
    struct json_object *args = args_n(c->n);
    struct vmd_qmp_cmd cmd = {c->execute ? c->execute : "echo", args};
    void *reply = NULL;
    struct json_object *v;
    double t0 = now_ms();

    c->rc =
        moor_monitor_call(c->mon, &cmd, &reply, c->timeout_ms ? c->timeout_ms : FOREVER, &c->err);
    c->end_ms = now_ms();
    c->ms = c->end_ms - t0;
    c->got_n = -1;
    if (reply && json_object_object_get_ex(reply, "n", &v))
        c->got_n = json_object_get_int(v);
    json_object_put(reply);
    json_object_put(args);
    return NULL;
}

static int call_simple(moor_monitor *mon, const char *execute, int timeout_ms, moor_error *err)
{
    struct vmd_qmp_cmd cmd = {execute, NULL};

    return moor_monitor_call(mon, &cmd, NULL, timeout_ms, err);
}

static moor_monitor_stats stats_of(moor_monitor *mon)
{
    moor_monitor_stats st;

    assert_int_equal(moor_monitor_get_stats(mon, &st), 0);
    return st;
}

/* ---- basic calls ------------------------------------------------------------------ */

static void test_call_and_greeting(void **state)
{
    struct fx fx;
    struct caller c = {0};
    moor_monitor_stats st;

    (void)state;
    fx_start(&fx, peer_echo);
    assert_true(gate_wait(&fx.greetings, 1));
    assert_true(fx.events_on_loop);
    assert_true(fx.owner_ok);
    assert_string_equal(moor_monitor_name(fx.mon), "test-mon");

    c = (struct caller){.fx = &fx, .mon = fx.mon, .n = 42};
    caller_main(&c);
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.got_n, 42);
    assert_int_equal(call_simple(fx.mon, "ping", -1, NULL), 0);

    st = stats_of(fx.mon);
    assert_int_equal(st.state, MOOR_MONITOR_OPEN);
    assert_int_equal(st.calls, 2);
    assert_int_equal(st.replies, 2);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.events, 1); /* the greeting */
    assert_int_equal(st.stray, 0);
    fx_stop(&fx);
    assert_int_equal(gate_get(&fx.eofs), 0); /* closed, not broken */
}

/* Eight callers at once; the peer waits until it has all eight requests
 * (so they really are in flight together), then answers in reverse order
 * with an event before each reply. */
static void peer_reverse(struct fx *fx)
{
    qmp_request_in req[CALLERS];

    for (int i = 0; i < CALLERS; i++)
        if (!peer_next(fx, &req[i]))
            return;
    for (int i = CALLERS - 1; i >= 0; i--) {
        const char *args = json_object_to_json_string_ext(req[i].arguments, JSON_C_TO_STRING_PLAIN);

        qmp_send_event(fx->sv[1], "TICK", i);
        qmp_send_return(fx->sv[1], req[i].id, args);
        json_object_put(req[i].arguments);
    }
    qmp_send_event(fx->sv[1], "DONE", 99);
    peer_echo_rest(fx);
}

static void test_pipelined_out_of_order(void **state)
{
    struct fx fx;
    struct caller c[CALLERS];
    pthread_t t[CALLERS];
    moor_monitor_stats st;

    (void)state;
    fx_start(&fx, peer_reverse);
    for (int i = 0; i < CALLERS; i++) {
        c[i] = (struct caller){.fx = &fx, .mon = fx.mon, .n = 100 + i};
        assert_int_equal(pthread_create(&t[i], NULL, caller_main, &c[i]), 0);
    }
    for (int i = 0; i < CALLERS; i++) {
        tu_join(t[i], NULL);
        if (c[i].rc)
            fail_msg("caller %d: %s", i, moor_error_message(&c[i].err));
        assert_int_equal(c[i].got_n, 100 + i);
    }
    assert_true(gate_wait(&fx.events, CALLERS + 1));
    assert_int_equal(fx.last_seq, 99);
    st = stats_of(fx.mon);
    assert_int_equal(st.calls, CALLERS);
    assert_int_equal(st.replies, CALLERS);
    assert_int_equal(st.events, CALLERS + 1);
    assert_int_equal(st.pending, 0);
    fx_stop(&fx);
}

/* ---- deadlines ------------------------------------------------------------------------ */

/* Holds the first request until the test says go, then answers it (too
 * late) and echoes the rest. */
static void peer_late(struct fx *fx)
{
    qmp_request_in req;

    if (!peer_next(fx, &req))
        return;
    gate_wait(&fx->go, 1);
    qmp_send_return(fx->sv[1], req.id, "{\"late\": true}");
    json_object_put(req.arguments);
    peer_echo_rest(fx);
}

static void test_deadline_then_late_reply(void **state)
{
    struct fx fx;
    moor_error err = MOOR_ERROR_INIT;
    struct caller c;
    moor_monitor_stats st;
    double t0, took;

    (void)state;
    fx_start(&fx, peer_late);
    t0 = now_ms();
    assert_int_equal(call_simple(fx.mon, "query-slow", 100, &err), -ETIMEDOUT);
    took = now_ms() - t0;
    assert_true(took >= 99.0);
    assert_true(took < 100.0 + 5000.0); /* not a performance check: "did not hang" */
    tu_assert_contains(err.message, "'query-slow'");
    tu_assert_contains(err.message, "'test-mon'");
    tu_assert_contains(err.message, "100 ms");
    st = stats_of(fx.mon);
    assert_int_equal(st.timeouts, 1);
    assert_int_equal(st.pending, 0);

    /* The late reply comes before the next call's reply, so once that call
     * returns it has been dropped. */
    gate_add(&fx.go);
    c = (struct caller){.fx = &fx, .mon = fx.mon, .n = 7};
    caller_main(&c);
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.got_n, 7);
    st = stats_of(fx.mon);
    assert_int_equal(st.stray, 1);
    assert_int_equal(st.replies, 1);
    assert_int_equal(st.state, MOOR_MONITOR_OPEN);

    /* The default deadline applies to -1. */
    fx_stop(&fx);
}

static void test_default_deadline(void **state)
{
    const moor_monitor_options opts = {.name = "short", .default_timeout_ms = 50};
    moor_error err = MOOR_ERROR_INIT;
    struct fx fx;

    (void)state;
    fx_start_opts(&fx, peer_late, &opts);
    assert_int_equal(call_simple(fx.mon, "x", MOOR_MONITOR_TIMEOUT_DEFAULT, &err), -ETIMEDOUT);
    tu_assert_contains(err.message, "50 ms");
    gate_add(&fx.go);
    fx_stop(&fx);
}

/* ---- the peer goes away ------------------------------------------------------------------ */

static void peer_read_then_close(struct fx *fx)
{
    qmp_request_in req;

    for (int i = 0; i < CALLERS; i++) {
        if (!peer_next(fx, &req))
            return;
        json_object_put(req.arguments);
    }
    gate_wait(&fx->go, 1);
    shutdown(fx->sv[1], SHUT_RDWR);
}

static void test_peer_closes_mid_call(void **state)
{
    struct fx fx;
    struct caller c[CALLERS];
    pthread_t t[CALLERS];
    moor_error err = MOOR_ERROR_INIT;
    double closed_at;

    (void)state;
    fx_start(&fx, peer_read_then_close);
    for (int i = 0; i < CALLERS; i++) {
        c[i] = (struct caller){.fx = &fx, .mon = fx.mon, .execute = "hang", .n = i};
        assert_int_equal(pthread_create(&t[i], NULL, caller_main, &c[i]), 0);
    }
    assert_true(gate_wait(&fx.received, CALLERS)); /* all eight are pending */
    closed_at = now_ms();
    gate_add(&fx.go);
    for (int i = 0; i < CALLERS; i++) {
        tu_join(t[i], NULL);
        assert_int_equal(c[i].rc, -EPIPE);
        tu_assert_contains(c[i].err.message, "'hang' failed");
        tu_assert_contains(c[i].err.message, "closed the connection");
        /* at once, not at the deadline */
        assert_true(c[i].end_ms - closed_at < FOREVER / 4);
    }
    assert_true(gate_wait(&fx.eofs, 1));
    assert_true(fx.eof_on_loop);
    assert_true(fx.owner_ok);
    assert_int_equal(fx.eof_code, -EPIPE);
    tu_assert_contains(fx.eof_text, "closed the connection");

    /* Afterwards: immediate -EPIPE, enter refused, still one on_eof. */
    assert_int_equal(call_simple(fx.mon, "later", FOREVER, &err), -EPIPE);
    tu_assert_contains(err.message, "closed the connection");
    moor_lock(fx.vm);
    assert_int_equal(moor_monitor_enter(fx.mon, fx.vm), -ESRCH);
    assert_true(moor_lock_held(fx.vm));
    moor_unlock(fx.vm);
    assert_int_equal(stats_of(fx.mon).state, MOOR_MONITOR_BROKEN);
    assert_int_equal(stats_of(fx.mon).pending, 0);
    fx_stop(&fx);
    assert_int_equal(gate_get(&fx.eofs), 1);
}

/* ---- bad input ----------------------------------------------------------------------------- */

static const char *bad_line; /* what peer_bad sends in answer to a request */

static void peer_bad(struct fx *fx)
{
    qmp_request_in req;

    if (!peer_next(fx, &req))
        return;
    json_object_put(req.arguments);
    qmp_write_all(fx->sv[1], bad_line, strlen(bad_line));
    peer_echo_rest(fx); /* until the monitor hangs up */
}

/* Send @line in answer to a call; check the call's and on_eof's errors. */
static void check_bad_input(const char *line, size_t len, const moor_monitor_options *opts,
                            int eof_code, const char *text)
{
    char *copy = malloc(len + 1);
    moor_error err = MOOR_ERROR_INIT;
    struct fx fx;

    assert_non_null(copy);
    memcpy(copy, line, len);
    copy[len] = '\0';
    bad_line = copy;
    fx_start_opts(&fx, peer_bad, opts);
    assert_int_equal(call_simple(fx.mon, "victim", FOREVER, &err), -EPIPE);
    tu_assert_contains(err.message, "'victim' failed");
    tu_assert_contains(err.message, text);
    assert_true(gate_wait(&fx.eofs, 1));
    assert_int_equal(fx.eof_code, eof_code);
    tu_assert_contains(fx.eof_text, text);
    assert_int_equal(call_simple(fx.mon, "after", FOREVER, &err), -EPIPE);
    fx_stop(&fx);
    assert_int_equal(gate_get(&fx.eofs), 1);
    free(copy);
}

static void test_garbage(void **state)
{
    const moor_monitor_options opts = {.name = "g"};
    static const char *const lines[] = {
        "this is not json\n",
        "[1, 2, 3]\n",
        "{\"return\": {}}\n",                /* reply without id */
        "{\"return\": {}, \"id\": \"7\"}\n", /* id not a number */
        "{\"return\": {}, \"id\": 1} trailing\n",
        "{\"event\": 5}\n",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        check_bad_input(lines[i], strlen(lines[i]), &opts, -EPROTO, "garbage from the peer");
}

static void peer_nul(struct fx *fx)
{
    static const char bytes[] = "{\"return\": {}, \0 \"id\": 1}\n";
    qmp_request_in req;

    if (!peer_next(fx, &req))
        return;
    qmp_write_all(fx->sv[1], bytes, sizeof(bytes) - 1);
    peer_echo_rest(fx);
}

static void test_unframable(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    struct fx fx;

    (void)state;
    fx_start(&fx, peer_nul);
    assert_int_equal(call_simple(fx.mon, "victim", FOREVER, &err), -EPIPE);
    tu_assert_contains(err.message, "cannot frame it: QMP: NUL byte");
    assert_true(gate_wait(&fx.eofs, 1));
    assert_int_equal(fx.eof_code, -EPROTO);
    fx_stop(&fx);
}

static void test_oversized(void **state)
{
    const moor_monitor_options opts = {.name = "small", .max_message = SMALL_CAP};
    char line[1100];
    char big[600];
    moor_error err = MOOR_ERROR_INIT;
    struct fx fx;

    (void)state;
    /* A request over the cap is refused before anything is sent. */
    fx_start_opts(&fx, peer_echo, &opts);
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    struct json_object *args = json_object_new_object();
    json_object_object_add(args, "blob", json_object_new_string(big));
    struct vmd_qmp_cmd cmd = {"big", args};
    void *reply = (void *)&err; /* must stay untouched */
    assert_int_equal(moor_monitor_call(fx.mon, &cmd, &reply, FOREVER, &err), -EMSGSIZE);
    assert_ptr_equal(reply, &err);
    tu_assert_contains(err.message, "more than 256");
    /* Without an error record the code is the same, not a generic one. */
    assert_int_equal(moor_monitor_call(fx.mon, &cmd, &reply, FOREVER, NULL), -EMSGSIZE);
    assert_ptr_equal(reply, &err);
    json_object_put(args);
    assert_int_equal(call_simple(fx.mon, "still-fine", FOREVER, NULL), 0);
    fx_stop(&fx);

    /* A reply over the cap, with and without its newline in sight. */
    snprintf(line, sizeof(line), "{\"return\": \"%.1000s\", \"id\": 1}\n", big);
    check_bad_input(line, strlen(line), &opts, -EMSGSIZE, "longer than 256 bytes");
    line[strlen(line) - 1] = ' ';
    check_bad_input(line, strlen(line), &opts, -EMSGSIZE, "longer than 256 bytes");
    /* Exactly the cap is fine: the frame includes the newline. */
    memset(line, ' ', sizeof(line));
    snprintf(line, sizeof(line), "{\"return\": {}, \"id\": 1}");
    line[strlen(line)] = ' ';
    line[SMALL_CAP - 1] = '\n';
    line[SMALL_CAP] = '\0';
    bad_line = line;
    fx_start_opts(&fx, peer_bad, &opts);
    assert_int_equal(call_simple(fx.mon, "exact", FOREVER, &err), 0);
    fx_stop(&fx);
}

/* ---- refusals and big messages ------------------------------------------------------------- */

static void peer_refuse(struct fx *fx)
{
    qmp_request_in req;

    while (peer_next(fx, &req)) {
        qmp_send_error(fx->sv[1], req.id, "GenericError", "device 'disk9' not found");
        json_object_put(req.arguments);
    }
}

static void test_refusal(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    struct fx fx;
    struct vmd_qmp_cmd cmd = {"device_del", NULL};
    void *reply = (void *)&fx;

    (void)state;
    fx_start(&fx, peer_refuse);
    assert_int_equal(moor_monitor_call(fx.mon, &cmd, &reply, FOREVER, &err), -EREMOTEIO);
    assert_ptr_equal(reply, &fx);
    tu_assert_contains(err.message, "'device_del' refused by the peer");
    tu_assert_contains(err.message, "device 'disk9' not found");
    tu_assert_contains(err.message, "'test-mon'");
    assert_int_equal(stats_of(fx.mon).state, MOOR_MONITOR_OPEN); /* a refusal is not a break */
    fx_stop(&fx);
}

/* Issue 11, point 6: whatever negative status a codec gives a refusal
 * (here codes that name transport failures), the call fails with
 * -EREMOTEIO and the peer's text, and the channel stays open. */
static int refusal_status;

static int classify_odd_status(void *opaque, const char *msg, size_t len, moor_monitor_message *out,
                               moor_error *err)
{
    int rc = vmd_qmp_codec().classify(opaque, msg, len, out, err);

    if (rc == 0 && out->kind == MOOR_MONITOR_REPLY && out->status < 0)
        out->status = refusal_status;
    return rc;
}

static void test_refusal_is_always_eremoteio(void **state)
{
    static const int odd[] = {-EPIPE, -ETIMEDOUT, -ENOENT};
    moor_error err = MOOR_ERROR_INIT;
    moor_monitor_codec codec = vmd_qmp_codec();
    struct fx fx;

    (void)state;
    codec.classify = classify_odd_status;
    fx_init(&fx);
    assert_non_null(fx.loop = moor_loop_new(&err));
    assert_int_equal(moor_loop_thread_start(fx.loop, &err), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fx.sv), 0);
    fx.mon = moor_monitor_new(fx.loop, fx.sv[0], &codec, NULL, NULL, NULL, &err);
    assert_non_null(fx.mon);
    fx.script = peer_refuse;
    assert_int_equal(pthread_create(&fx.peer, NULL, peer_main, &fx), 0);
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        refusal_status = odd[i];
        assert_int_equal(call_simple(fx.mon, "device_del", FOREVER, &err), -EREMOTEIO);
        tu_assert_contains(err.message,
                           "'device_del' refused by the peer: GenericError: device 'disk9' "
                           "not found");
        assert_int_equal(stats_of(fx.mon).state, MOOR_MONITOR_OPEN);
    }
    fx_stop(&fx);
}

#define BIG (3u << 20)

/* Answers with the length of the request's "blob" and then a reply with a
 * blob of BIG bytes. */
static void peer_big(struct fx *fx)
{
    qmp_request_in req;
    struct json_object *blob;
    char *reply = malloc(BIG + 64);

    assert_non_null(reply);
    while (peer_next(fx, &req)) {
        size_t n = json_object_object_get_ex(req.arguments, "blob", &blob)
                       ? strlen(json_object_get_string(blob))
                       : 0;
        int len = snprintf(reply, 64, "{\"return\": {\"n\": %zu, \"blob\": \"", n);

        memset(reply + len, 'y', BIG);
        len += (int)BIG;
        len += sprintf(reply + len, "\"}, \"id\": %" PRIu64 "}\n", req.id);
        qmp_write_all(fx->sv[1], reply, (size_t)len);
        json_object_put(req.arguments);
    }
    free(reply);
}

static void test_big_messages(void **state)
{
    const moor_monitor_options opts = {.name = "big", .max_message = 8u << 20};
    char *blob = malloc(BIG + 1);
    struct json_object *args = json_object_new_object(), *v;
    moor_error err = MOOR_ERROR_INIT;
    void *reply = NULL;
    struct fx fx;

    (void)state;
    assert_non_null(blob);
    memset(blob, 'x', BIG);
    blob[BIG] = '\0';
    json_object_object_add(args, "blob", json_object_new_string(blob));
    struct vmd_qmp_cmd cmd = {"big", args};

    fx_start_opts(&fx, peer_big, &opts);
    for (int round = 0; round < 2; round++) {
        if (moor_monitor_call(fx.mon, &cmd, &reply, FOREVER, &err))
            fail_msg("%s", err.message);
        assert_true(json_object_object_get_ex(reply, "n", &v));
        assert_int_equal(json_object_get_int64(v), BIG);
        assert_true(json_object_object_get_ex(reply, "blob", &v));
        assert_int_equal(strlen(json_object_get_string(v)), BIG);
        moor_monitor_payload_free(fx.mon, reply);
    }
    fx_stop(&fx);
    json_object_put(args);
    free(blob);
}

/* ---- events and the owner ------------------------------------------------------------------ */

/* An event, then the reply to each request. */
static void peer_event_then_reply(struct fx *fx)
{
    qmp_request_in req;

    while (peer_next(fx, &req)) {
        qmp_send_event(fx->sv[1], "STOP", (long)req.id);
        qmp_send_return(fx->sv[1], req.id, "{}");
        json_object_put(req.arguments);
    }
}

static void test_events_owner_gone(void **state)
{
    struct fx fx;
    moor_monitor_stats st;

    (void)state;
    fx_start(&fx, peer_event_then_reply);
    assert_int_equal(call_simple(fx.mon, "one", FOREVER, NULL), 0);
    assert_true(gate_wait(&fx.events, 1));
    assert_true(fx.owner_ok);

    /* The owner goes; the monitor (weakly held by nobody now) stays ours. */
    moor_lock(fx.vm);
    moor_clear(&fx.vm->mon);
    moor_unlock(fx.vm);
    moor_clear(&fx.vm);
    assert_int_equal(call_simple(fx.mon, "two", FOREVER, NULL), 0);
    st = stats_of(fx.mon);
    assert_int_equal(st.events, 1);
    assert_int_equal(st.dropped, 1);
    assert_int_equal(gate_get(&fx.events), 1);

    /* The peer hangs up: no owner, so no on_eof, but the state says it. */
    shutdown(fx.sv[1], SHUT_RDWR);
    tu_join(fx.peer, NULL);
    fx.script = NULL;
    wait_state(fx.mon, MOOR_MONITOR_BROKEN);
    assert_int_equal(call_simple(fx.mon, "three", FOREVER, NULL), -EPIPE);
    fx_stop(&fx);
    assert_int_equal(gate_get(&fx.eofs), 0);
}

static void test_no_owner_no_callbacks(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    const moor_monitor_codec codec = vmd_qmp_codec();
    struct fx fx;
    moor_monitor *mon;

    (void)state;
    fx_init(&fx);
    fx.loop = moor_loop_new(&err);
    assert_non_null(fx.loop);
    assert_int_equal(moor_loop_thread_start(fx.loop, &err), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fx.sv), 0);
    mon = moor_monitor_new(fx.loop, fx.sv[0], &codec, NULL, NULL, NULL, &err);
    assert_non_null(mon);
    tu_assert_contains(moor_monitor_name(mon), "fd ");
    fx.mon = mon;
    fx.script = peer_event_then_reply;
    assert_int_equal(pthread_create(&fx.peer, NULL, peer_main, &fx), 0);
    assert_int_equal(call_simple(mon, "one", FOREVER, NULL), 0);
    assert_int_equal(stats_of(mon).events, 1); /* delivered to nobody */
    fx_stop(&fx);
}

/* A peer that never reads: once the socket is full, requests queue up
 * (each call timing out) until max_backlog bytes wait unsent; the next
 * call fails at once with -ENOBUFS and queues nothing. When the peer
 * reads again, every request that timed out still reaches it. */
static void test_backlog_cap(void **state)
{
    const moor_monitor_options opts = {.name = "stalled", .max_message = 256, .max_backlog = 1024};
    moor_error err = MOOR_ERROR_INIT;
    moor_monitor_stats st;
    int small = 1, rc = -ETIMEDOUT;
    unsigned tries = 0, seen = 0;
    struct fx fx;
    char *line;

    (void)state;
    fx_start_opts(&fx, NULL, &opts); /* nobody reads sv[1] */
    /* Small buffers: the kernel rounds up to its minimum. */
    assert_int_equal(setsockopt(fx.sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    assert_int_equal(setsockopt(fx.sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    while (rc == -ETIMEDOUT) {
        assert_true(++tries < 100000);
        rc = call_simple(fx.mon, "stuck", 1, &err);
    }
    assert_int_equal(rc, -ENOBUFS);
    tu_assert_contains(err.message, "monitor 'stalled'");
    tu_assert_contains(err.message, "'stuck' not queued");
    tu_assert_contains(err.message, "cap of 1024");
    assert_true(tries > 1);
    assert_int_equal(moor_monitor_get_stats(fx.mon, &st), 0);
    assert_int_equal(st.calls, tries - 1); /* the refused one was not queued */
    assert_int_equal(st.timeouts, tries - 1);
    /* Refused again at once while nothing moves. */
    assert_int_equal(call_simple(fx.mon, "stuck", FOREVER, NULL), -ENOBUFS);

    /* The peer reads: the timed-out requests all arrive. */
    while (seen < st.calls && qmp_read_line(fx.sv[1], &fx.lb, &line) > 0)
        seen++;
    assert_int_equal(seen, st.calls);
    assert_int_equal(call_simple(fx.mon, "flows", 1, NULL), -ETIMEDOUT);
    fx_stop(&fx);
}

/* ---- enter / exit ---------------------------------------------------------------------------- */

static void test_enter_exit(void **state)
{
    struct fx fx;
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    fx_start(&fx, peer_echo);
    moor_lock(fx.vm);
    assert_int_equal(moor_job_begin(&fx.vm->job, MOOR_JOB_MODIFY, "test_enter_exit", &err), 0);
    assert_int_equal(moor_monitor_enter(fx.mon, fx.vm), 0);
    assert_false(moor_lock_held(fx.vm));
    assert_int_equal(stats_of(fx.mon).entered, 1);
    /* Someone else can lock the vm meanwhile: the job keeps them out of
     * state changes, not the mutex. */
    assert_int_equal(moor_lock_try(fx.vm), 0);
    moor_unlock(fx.vm);
    assert_int_equal(call_simple(fx.mon, "query-status", FOREVER, &err), 0);
    assert_int_equal(moor_monitor_exit(fx.mon, fx.vm), 0);
    assert_true(moor_lock_held(fx.vm));
    assert_int_equal(stats_of(fx.mon).entered, 0);
    moor_job_end(&fx.vm->job);
    moor_unlock(fx.vm);
    fx_stop(&fx);
}

/* An exit must match an enter by the same thread for the same object: an
 * exit from a thread that never entered is refused and takes nothing from
 * the thread that did. */
struct stray_exit {
    moor_monitor *mon;
    void *obj;
};

static void *stray_exit_main(void *arg)
{
    struct stray_exit *x = arg;

    return (void *)(intptr_t)moor_monitor_exit(x->mon, x->obj);
}

static void test_exit_matches_enter(void **state)
{
    struct fx fx;
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    fx_start(&fx, peer_echo);
    moor_lock(fx.vm);
    assert_int_equal(moor_job_begin(&fx.vm->job, MOOR_JOB_MODIFY, "test_exit_matches", &err), 0);
    assert_int_equal(moor_monitor_enter(fx.mon, fx.vm), 0);
    struct stray_exit x = {fx.mon, fx.vm};
    assert_int_equal((intptr_t)tu_in_thread(stray_exit_main, &x), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, fx.mon, "no moor_monitor_enter to end");
    assert_false(moor_lock_held(fx.vm));
    /* Same thread, another object: refused too (the loop is any object). */
    assert_int_equal(moor_monitor_exit(fx.mon, fx.loop), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, fx.mon, "no moor_monitor_enter to end");
    assert_int_equal(stats_of(fx.mon).entered, 1);
    /* The real hand-off still works, and only once. */
    assert_int_equal(call_simple(fx.mon, "still-entered", FOREVER, &err), 0);
    assert_int_equal(moor_monitor_exit(fx.mon, fx.vm), 0);
    assert_true(moor_lock_held(fx.vm));
    assert_int_equal(stats_of(fx.mon).entered, 0);
    moor_unlock(fx.vm);
    assert_int_equal(moor_monitor_exit(fx.mon, fx.vm), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, fx.mon, "no moor_monitor_enter to end");
    moor_lock(fx.vm);
    /* Out of memory for the record: nothing taken, the object stays locked. */
    moor_debug_fail_alloc(1);
    assert_int_equal(moor_monitor_enter(fx.mon, fx.vm), -ENOMEM);
    moor_debug_fail_alloc(0);
    assert_true(moor_lock_held(fx.vm));
    assert_int_equal(stats_of(fx.mon).entered, 0);
    moor_job_end(&fx.vm->job);
    moor_unlock(fx.vm);
    fx_stop(&fx);
}

/* Thread A runs an API call on vm (found in a registry) that calls the
 * peer through enter/exit; meanwhile the main thread removes the vm from
 * the registry and closes its monitor. */
struct api_call {
    moor_registry *reg;
    moor_uuid uuid;
    int call_rc, exit_rc;
    moor_error err;
    bool still_registered;
};

static void *api_thread(void *arg)
{
    struct api_call *a = arg;
    struct vm *vm = moor_registry_find_uuid_locked(a->reg, &a->uuid);
    moor_monitor *mon;

    if (!vm)
        return NULL;
    if (moor_job_begin(&vm->job, MOOR_JOB_MODIFY, "vm_query", &a->err) == 0) {
        mon = vm->mon;
        if (moor_monitor_enter(mon, vm) == 0) {
            /* vm unlocked; mon kept alive by the enter's reference */
            a->call_rc = call_simple(mon, "hang", FOREVER, &a->err);
            a->exit_rc = moor_monitor_exit(mon, vm);
            /* vm locked again: re-check before trusting what we knew */
            struct vm *again = moor_registry_find_uuid(a->reg, &a->uuid);

            a->still_registered = again != NULL;
            moor_unref(again);
        }
        moor_job_end(&vm->job);
    }
    moor_end_api(&vm);
    return NULL;
}

static void peer_hold(struct fx *fx)
{
    qmp_request_in req;

    while (peer_next(fx, &req))
        json_object_put(req.arguments); /* never answers */
}

static void test_enter_exit_owner_removed(void **state)
{
    struct fx fx;
    struct api_call a = {0};
    moor_error err = MOOR_ERROR_INIT;
    pthread_t t;
    struct vm *vm;
    moor_monitor *mon;

    (void)state;
    fx_start(&fx, peer_hold);
    assert_non_null(a.reg = moor_registry_new(&err));
    assert_int_equal(moor_uuid_generate(&a.uuid, &err), 0);
    assert_int_equal(moor_registry_add(a.reg, fx.vm, &a.uuid, "vm1", &err), 0);
    moor_clear(&fx.vm);  /* the registry's reference is the vm's only one */
    moor_clear(&fx.mon); /* and the vm's is the monitor's */

    assert_int_equal(pthread_create(&t, NULL, api_thread, &a), 0);
    assert_true(gate_wait(&fx.received, 1)); /* A is inside the call */

    /* Another API: find, remove, close the monitor. The vm's mutex is free
     * (A handed it over), its job is A's. */
    vm = moor_registry_find_uuid_locked(a.reg, &a.uuid);
    assert_non_null(vm);
    assert_int_equal(moor_registry_remove(a.reg, vm, &err), 0);
    mon = vm->mon;
    vm->mon = NULL;
    moor_end_api(&vm);
    moor_monitor_close(mon);
    moor_unref(mon); /* A's enter reference keeps it alive */

    tu_join(t, NULL);
    assert_int_equal(a.call_rc, -EPIPE);
    tu_assert_contains(a.err.message, "closed");
    assert_int_equal(a.exit_rc, -ESRCH);
    assert_false(a.still_registered);
    assert_int_equal(gate_get(&fx.eofs), 0);
    moor_unref(a.reg);
    tu_join(fx.peer, NULL);
    fx.script = NULL;
    fx_stop(&fx);
}

/* ---- callbacks that close or drop the monitor ----------------------------------------------- */

static void close_from_event(struct fx *fx, moor_monitor *mon, void *owner)
{
    (void)fx;
    (void)owner;
    moor_monitor_close(mon);
}

static void test_close_in_event_callback(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    struct fx fx;

    (void)state;
    fx_init(&fx);
    fx.on_event_extra = close_from_event;
    fx_begin(&fx, peer_event_then_reply, NULL, false);
    /* The event before the reply closes the monitor: the call fails. */
    assert_int_equal(call_simple(fx.mon, "one", FOREVER, &err), -EPIPE);
    tu_assert_contains(err.message, "the monitor was closed");
    assert_true(gate_wait(&fx.events, 1)); /* counted after the close returned */
    assert_int_equal(stats_of(fx.mon).replies, 0);
    assert_int_equal(stats_of(fx.mon).state, MOOR_MONITOR_CLOSED);
    fx_stop(&fx);
    assert_int_equal(gate_get(&fx.eofs), 0);
}

/* on_eof takes the monitor from its owner and drops the last reference:
 * the monitor is disposed inside its own dispatch. */
static void drop_from_eof(struct fx *fx, moor_monitor *mon, void *owner)
{
    struct vm *vm = owner;
    moor_monitor *m;

    (void)fx;
    moor_lock(vm);
    m = vm->mon;
    vm->mon = NULL;
    moor_unlock(vm);
    assert_ptr_equal(m, mon);
    moor_monitor_close(m);
    moor_unref(m);
}

static void peer_close_at_once(struct fx *fx)
{
    shutdown(fx->sv[1], SHUT_RDWR);
}

static void test_last_unref_in_eof_callback(void **state)
{
    struct fx fx;

    (void)state;
    fx_init(&fx);
    fx.on_eof_extra = drop_from_eof;
    fx_begin(&fx, NULL, NULL, false);
    moor_clear(&fx.mon); /* only the vm holds it now */
    fx.script = peer_close_at_once;
    assert_int_equal(pthread_create(&fx.peer, NULL, peer_main, &fx), 0);
    assert_true(gate_wait(&fx.eofs, 1));
    assert_int_equal(fx.eof_code, -EPIPE);
    fx_stop(&fx);
}

/* A close from another thread while on_eof runs waits for it to return
 * (the caller of close may free what the callback uses). */
static struct gate eof_entered = GATE_INIT, eof_go = GATE_INIT;
static atomic_bool close_returned; /* seq_cst: polled across threads */
static atomic_bool returned_early;

static void hold_in_eof(struct fx *fx, moor_monitor *mon, void *owner)
{
    (void)fx;
    (void)mon;
    (void)owner;
    gate_add(&eof_entered);
    gate_wait(&eof_go, 1);
    atomic_store(&returned_early, atomic_load(&close_returned));
}

static void *closer(void *arg)
{
    moor_monitor_close(arg);
    atomic_store(&close_returned, true);
    return NULL;
}

static void test_close_waits_for_eof_callback(void **state)
{
    struct fx fx;
    pthread_t t;
    double until;

    (void)state;
    eof_entered = (struct gate)GATE_INIT;
    eof_go = (struct gate)GATE_INIT;
    atomic_store(&close_returned, false);
    atomic_store(&returned_early, false);
    fx_init(&fx);
    fx.on_eof_extra = hold_in_eof;
    fx_begin(&fx, peer_close_at_once, NULL, false);
    assert_true(gate_wait(&eof_entered, 1)); /* on_eof is running */
    assert_int_equal(pthread_create(&t, NULL, closer, fx.mon), 0);
    wait_state(fx.mon, MOOR_MONITOR_CLOSED); /* the closer is inside close */
    /* Give a wrong close time to return (bounded: 100 ms). */
    until = now_ms() + 100;
    while (!atomic_load(&close_returned) && now_ms() < until)
        sched_yield();
    assert_false(atomic_load(&close_returned));
    gate_add(&eof_go);
    tu_join(t, NULL);
    assert_false(atomic_load(&returned_early));
    assert_int_equal(gate_get(&fx.eofs), 1);
    fx_stop(&fx);
}

/* ---- a write error in the caller's thread --------------------------------------------------- */

struct loop_check {
    moor_monitor *mon;
    int rc;
    bool ran;
};

static void call_from_loop(moor_loop *loop, void *opaque)
{
    struct loop_check *lc = opaque;

    (void)loop;
    lc->rc = call_simple(lc->mon, "from-loop", FOREVER, NULL);
    lc->ran = true;
}

static void test_write_error_and_loop_thread(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    struct loop_check lc = {0};
    struct fx fx;

    (void)state;
    fx_init(&fx);
    fx_begin(&fx, NULL, NULL, true); /* nobody iterates the loop yet */

    /* A call on the loop thread is refused. */
    lc.mon = fx.mon;
    assert_int_equal(moor_loop_schedule(fx.loop, call_from_loop, &lc, NULL, &err), 0);
    tu_wait_for((iterate_once(fx.loop), lc.ran), "the call scheduled on the loop thread to run");
    assert_int_equal(lc.rc, -EDEADLK);

    /* The peer is gone; the loop has not noticed, the caller's send does. */
    close(fx.sv[1]);
    fx.sv[1] = -1;
    assert_int_equal(call_simple(fx.mon, "write", FOREVER, &err), -EPIPE);
    tu_assert_contains(err.message, "write error");
    assert_int_equal(gate_get(&fx.eofs), 0);
    /* The loop learns of it on its next iteration and runs on_eof. */
    tu_wait_for((iterate_once(fx.loop), gate_get(&fx.eofs) != 0), "on_eof after a write error");
    assert_int_equal(fx.eof_code, -EPIPE);
    tu_assert_contains(fx.eof_text, "write error");
    assert_true(fx.eof_on_loop);
    assert_int_equal(moor_loop_iterate(fx.loop, 0), 0);
    assert_int_equal(gate_get(&fx.eofs), 1);
    fx_stop(&fx);
}

/* ---- misuse and bad arguments ---------------------------------------------------------------- */

static void test_bad_arguments(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    moor_monitor_codec codec = vmd_qmp_codec();
    moor_monitor_codec no_frame = codec;
    moor_monitor_options tiny = {.max_message = 10};
    moor_monitor_options small_backlog = {.max_message = 256, .max_backlog = 255};
    moor_monitor_options long_name = {.name = "0123456789012345678901234567890123456789"
                                              "0123456789012345678901234567890123456789"};
    moor_loop *loop = moor_loop_new(NULL);
    int sv[2], pfd[2], dg[2], flags;

    (void)state;
    no_frame.frame = NULL;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(pipe(pfd), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM, 0, dg), 0);
    flags = fcntl(sv[0], F_GETFL);

    assert_null(moor_monitor_new(NULL, sv[0], &codec, NULL, NULL, NULL, &err));
    assert_int_equal(err.code, -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "NULL loop");
    assert_null(moor_monitor_new(loop, sv[0], NULL, NULL, NULL, NULL, &err));
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "NULL codec");
    assert_null(moor_monitor_new(loop, sv[0], &no_frame, NULL, NULL, NULL, &err));
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "lacks a frame function");
    assert_null(moor_monitor_new(loop, -1, &codec, NULL, NULL, NULL, &err));
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "fd -1");
    assert_null(moor_monitor_new(loop, sv[0], &codec, NULL, &err, NULL, &err));
    tu_expect_report(MOOR_MISUSE_NOT_AN_OBJECT, NULL, "not a live moor object");
    assert_null(moor_monitor_new(loop, sv[0], &codec, NULL, NULL, &tiny, &err));
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "max_message 10 is below 64");
    assert_null(moor_monitor_new(loop, sv[0], &codec, NULL, NULL, &small_backlog, &err));
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "max_backlog 255 is below max_message 256");
    assert_null(moor_monitor_new(loop, sv[0], &codec, NULL, NULL, &long_name, &err));
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "name longer than 64");
    /* Runtime errors, not misuse. */
    assert_null(moor_monitor_new(loop, pfd[0], &codec, NULL, NULL, NULL, &err));
    assert_int_equal(err.code, -ENOTSOCK);
    assert_null(moor_monitor_new(loop, dg[0], &codec, NULL, NULL, NULL, &err));
    assert_int_equal(err.code, -EPROTOTYPE);
    tu_assert_contains(err.message, "not a stream socket");
    assert_null(moor_monitor_new(loop, 1000, &codec, NULL, NULL, NULL, &err));
    assert_int_equal(err.code, -EBADF);
    /* None of it touched the fd. */
    assert_int_equal(fcntl(sv[0], F_GETFL), flags);
    tu_expect_no_report();

    /* The other entry points. */
    assert_int_equal(moor_monitor_call(NULL, "x", NULL, 1, &err), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "not a monitor");
    assert_int_equal(moor_monitor_enter(NULL, loop), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "not a monitor");
    assert_int_equal(moor_monitor_exit(NULL, loop), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "not a monitor");
    assert_int_equal(moor_monitor_get_stats(NULL, NULL), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "moor_monitor_get_stats");
    moor_monitor_close(NULL); /* NULL-safe, silent */
    moor_monitor_payload_free(NULL, NULL);
    assert_string_equal(moor_monitor_name(NULL), "(null)");

    moor_unref(loop);
    close(sv[0]);
    close(sv[1]);
    close(pfd[0]);
    close(pfd[1]);
    close(dg[0]);
    close(dg[1]);
}

static void test_misuse(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    struct fx fx;
    struct vmd_qmp_cmd bad_name = {"no spaces", NULL};

    (void)state;
    fx_start(&fx, peer_echo);

    assert_int_equal(moor_monitor_call(fx.mon, NULL, NULL, 1, &err), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, fx.mon, "NULL request");
    assert_int_equal(call_simple(fx.mon, "x", 0, &err), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, fx.mon, "timeout 0 ms");
    assert_int_equal(call_simple(fx.mon, "x", -2, &err), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, fx.mon, "timeout -2 ms");
    /* The codec refuses: its error, with the monitor's context. */
    assert_int_equal(moor_monitor_call(fx.mon, &bad_name, NULL, 1, &err), -EINVAL);
    tu_assert_contains(err.message, "cannot encode 'no spaces': QMP: bad command name");

    /* A call with the owner locked would block on I/O under its mutex. */
    moor_lock(fx.vm);
    assert_int_equal(call_simple(fx.mon, "locked", FOREVER, &err), -EDEADLK);
    tu_assert_contains(err.message, "owner's mutex held");
    moor_unlock(fx.vm);

    /* enter needs the object locked; exit needs an enter and no lock. */
    assert_int_equal(moor_monitor_enter(fx.mon, fx.vm), -EINVAL);
    tu_expect_report(MOOR_MISUSE_NOT_LOCKED, fx.vm, "not locked by the calling thread");
    assert_int_equal(moor_monitor_exit(fx.mon, fx.vm), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, fx.mon, "no moor_monitor_enter to end");
    assert_false(moor_lock_held(fx.vm));
    moor_lock(fx.vm);
    assert_int_equal(moor_monitor_exit(fx.mon, fx.vm), -EINVAL);
    tu_expect_report(MOOR_MISUSE_LOCK_RECURSIVE, fx.vm, "still locked");
    assert_int_equal(moor_monitor_enter(fx.mon, fx.vm), 0);
    assert_int_equal(moor_monitor_exit(fx.mon, fx.vm), 0);

    /* Close with the owner locked: reported, and it does not wait. */
    moor_monitor_close(fx.mon);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, fx.mon, "owner's mutex held");
    moor_unlock(fx.vm);
    moor_monitor_close(fx.mon); /* idempotent */
    tu_expect_no_report();
    fx_stop(&fx);
}

/* ---- out of memory ------------------------------------------------------------------------------
 */

static void test_oom_new(void **state)
{
    const moor_monitor_codec codec = vmd_qmp_codec();
    const moor_monitor_options opts = {.name = "oom"};
    moor_loop *loop = moor_loop_new(NULL);
    struct vm *vm = vm_new();
    moor_monitor *mon = NULL;
    unsigned long n;
    int sv[2], flags;
    size_t base = moor_census_total();

    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    flags = fcntl(sv[0], F_GETFL);
    for (n = 1; n < 100 && !mon; n++) {
        moor_error err = MOOR_ERROR_INIT;

        moor_debug_fail_alloc(n);
        mon = moor_monitor_new(loop, sv[0], &codec, NULL, vm, &opts, &err);
        moor_debug_fail_alloc(0);
        if (mon)
            break;
        assert_int_equal(err.code, -ENOMEM);
        /* Failure changes nothing: the fd is open, still blocking. */
        assert_int_equal(fcntl(sv[0], F_GETFL), flags);
        assert_int_equal(moor_census_total(), base);
    }
    assert_non_null(mon);
    assert_true(n > 1); /* at least one failure was walked */
    moor_monitor_close(mon);
    moor_unref(mon);
    moor_unref(vm);
    moor_unref(loop); /* gives the handler back: closes sv[0] */
    close(sv[1]);
}

struct oom_call {
    moor_monitor *mon;
    int rc;
    moor_error err;
    atomic_bool done; /* seq_cst: the loop below polls it */
};

static void *oom_caller(void *arg)
{
    struct oom_call *oc = arg;
    struct json_object *args = json_object_new_object();
    char big[2000];
    struct vmd_qmp_cmd cmd = {"oom", args};

    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    json_object_object_add(args, "blob", json_object_new_string(big)); /* heap-encoded */
    oc->rc = moor_monitor_call(oc->mon, &cmd, NULL, FOREVER, &oc->err);
    json_object_put(args);
    atomic_store(&oc->done, true);
    return NULL;
}

/* One allocation fails per round: in the call (encoding, output queue) or
 * in the reader (input buffer). The caller thread and the loop (iterated
 * here) allocate one after the other, so the order is fixed. */
static void test_oom_call(void **state)
{
    bool saw_enomem = false, saw_reader = false;
    int rc = -1;

    (void)state;
    for (unsigned long n = 1; n < 50 && rc != 0; n++) {
        struct oom_call oc = {0};
        pthread_t t;
        struct fx fx;

        fx_init(&fx);
        fx_begin(&fx, peer_echo_rest, NULL, true); /* no greeting: one input only */
        oc.mon = fx.mon;
        moor_debug_fail_alloc(n);
        assert_int_equal(pthread_create(&t, NULL, oom_caller, &oc), 0);
        tu_wait_for((assert_true(moor_loop_iterate(fx.loop, 10) >= 0), atomic_load(&oc.done)),
                    "the call with allocation %lu failing to return", n);
        tu_join(t, NULL);
        moor_debug_fail_alloc(0);
        rc = oc.rc;
        if (rc == -ENOMEM) {
            saw_enomem = true;
        } else if (rc == -EPIPE) {
            tu_assert_contains(oc.err.message, "out of memory");
            saw_reader = true;
            tu_wait_for((iterate_once(fx.loop), gate_get(&fx.eofs) != 0),
                        "on_eof after allocation %lu failed", n);
            assert_int_equal(fx.eof_code, -ENOMEM);
        } else if (rc != 0) {
            fail_msg("round %lu: %d %s", n, rc, oc.err.message);
        }
        fx_stop(&fx);
        assert_int_equal(moor_census_total(), 0);
    }
    assert_int_equal(rc, 0);
    assert_true(saw_enomem);
    assert_true(saw_reader);
}

/* ---- passing descriptors ----------------------------------------------------------------------
 */

#define FD_ROUNDS 24

/* The descriptors open in this process but @skip (and the directory's own). */
static int count_fds_but(int skip)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);

        n += e->d_name[0] != '.' && fd != skip && fd != dirfd(d);
    }
    closedir(d);
    return n;
}

static int count_fds(void)
{
    return count_fds_but(-1);
}

/* A memory file holding @text, at offset 0. */
static int memfd_with(const char *text)
{
    int fd = memfd_create("moor-test", MFD_CLOEXEC);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    return fd;
}

/* What the peer found behind one descriptor. */
static struct json_object *describe_fd(int fd)
{
    struct json_object *o = json_object_new_object();
    char buf[64];
    struct stat st;
    ssize_t n;

    assert_int_equal(fstat(fd, &st), 0);
    n = pread(fd, buf, sizeof(buf) - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    json_object_object_add(o, "ino", json_object_new_int64((int64_t)st.st_ino));
    json_object_object_add(o, "dev", json_object_new_int64((int64_t)st.st_dev));
    json_object_object_add(o, "data", json_object_new_string(buf));
    return o;
}

/* Answer every request with its "n" and, for each descriptor that came
 * with its bytes, what is behind it; then close them. */
static void peer_fds(struct fx *fx)
{
    int fds[QMP_PEER_MAX_FDS];
    unsigned nfds;
    char *line;

    while (qmp_read_line_fds(fx->sv[1], &fx->lb, &line, fds, QMP_PEER_MAX_FDS, &nfds) >= 0) {
        struct json_object *r = json_object_new_object(), *list = json_object_new_array(), *n;
        qmp_request_in req;

        if (!qmp_parse_request(line, &req))
            fail_msg("peer: not a request: %.80s", line);
        gate_add(&fx->received);
        for (unsigned i = 0; i < nfds; i++) {
            json_object_array_add(list, describe_fd(fds[i]));
            close(fds[i]);
        }
        if (req.arguments && json_object_object_get_ex(req.arguments, "n", &n))
            json_object_object_add(r, "n", json_object_get(n));
        json_object_object_add(r, "fds", list);
        qmp_send_return(fx->sv[1], req.id,
                        json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
        json_object_put(r);
        json_object_put(req.arguments);
    }
    assert_int_equal(fx->lb.fds_dropped, 0);
}

/* One call with @nfds fresh memory files holding "@tag-i" (and @pad bytes
 * of padding in the request); the caller's own descriptors are closed as
 * soon as the call returned, and the reply must show the same files
 * (inode, device, contents) in order. */
static int call_with_files_pad(moor_monitor *mon, const char *tag, int n, unsigned nfds, size_t pad,
                               moor_error *err)
{
    struct json_object *args = args_n(n), *v, *list, *f;
    struct vmd_qmp_cmd cmd = {"getfd", args};
    int fds[MOOR_MONITOR_MAX_FDS];
    struct stat st[MOOR_MONITOR_MAX_FDS];
    char text[64];
    void *reply = NULL;
    int rc;

    if (pad) {
        char *blob = malloc(pad + 1);

        assert_non_null(blob);
        memset(blob, 'p', pad);
        blob[pad] = '\0';
        json_object_object_add(args, "pad", json_object_new_string(blob));
        free(blob);
    }
    for (unsigned i = 0; i < nfds; i++) {
        snprintf(text, sizeof(text), "%s-%u", tag, i);
        fds[i] = memfd_with(text);
        assert_int_equal(fstat(fds[i], &st[i]), 0);
    }
    rc = moor_monitor_call_fds(mon, &cmd, fds, nfds, &reply, FOREVER, err);
    for (unsigned i = 0; i < nfds; i++)
        close(fds[i]);
    json_object_put(args);
    if (rc < 0)
        return rc;
    assert_true(json_object_object_get_ex(reply, "n", &v));
    assert_int_equal(json_object_get_int(v), n);
    assert_true(json_object_object_get_ex(reply, "fds", &list));
    assert_int_equal(json_object_array_length(list), nfds);
    for (unsigned i = 0; i < nfds; i++) {
        f = json_object_array_get_idx(list, i);
        snprintf(text, sizeof(text), "%s-%u", tag, i);
        assert_true(json_object_object_get_ex(f, "data", &v));
        assert_string_equal(json_object_get_string(v), text);
        assert_true(json_object_object_get_ex(f, "ino", &v));
        assert_true(json_object_get_int64(v) == (int64_t)st[i].st_ino);
        assert_true(json_object_object_get_ex(f, "dev", &v));
        assert_true(json_object_get_int64(v) == (int64_t)st[i].st_dev);
    }
    moor_monitor_payload_free(mon, reply);
    return 0;
}

static int call_with_files(moor_monitor *mon, const char *tag, int n, unsigned nfds,
                           moor_error *err)
{
    return call_with_files_pad(mon, tag, n, nfds, 0, err);
}

static void test_fds_passed(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    struct fx fx;
    int base;

    (void)state;
    fx_start(&fx, peer_fds);
    base = count_fds();
    if (call_with_files(fx.mon, "one", 1, 1, &err) < 0)
        fail_msg("%s", err.message);
    if (call_with_files(fx.mon, "many", 2, MOOR_MONITOR_MAX_FDS, &err) < 0)
        fail_msg("%s", err.message);
    /* No descriptors: a plain call, the peer sees none. */
    if (call_with_files(fx.mon, "none", 3, 0, &err) < 0)
        fail_msg("%s", err.message);
    assert_int_equal(count_fds(), base);
    assert_int_equal(stats_of(fx.mon).calls, 3);
    fx_stop(&fx);
}

/* peer_fds reading one byte at a time: each descriptor then arrives with
 * the first byte of the sendmsg() that carried it, which must be the first
 * byte of its own request. */
static void peer_fds_bytewise(struct fx *fx)
{
    fx->lb.read_size = 1;
    peer_fds(fx);
}

struct fd_caller {
    moor_monitor *mon;
    int id;
    int failures;
    moor_error err;
};

/* FD_ROUNDS calls with 0..3 descriptors, each checked against its reply. */
static void *fd_caller_main(void *arg)
{
    struct fd_caller *c = arg;
    char tag[32];

    for (int r = 0; r < FD_ROUNDS; r++) {
        snprintf(tag, sizeof(tag), "c%d-r%d", c->id, r);
        if (call_with_files(c->mon, tag, c->id * 1000 + r, (unsigned)(r + c->id) % 4, &c->err) < 0)
            c->failures++;
    }
    return NULL;
}

/* Callers in several threads pipeline calls with and without descriptors:
 * each file reaches the peer with the bytes of its own request. */
static void test_fds_pipelined(void **state)
{
    struct fd_caller c[CALLERS];
    pthread_t t[CALLERS];
    struct fx fx;
    int base;

    (void)state;
    fx_start(&fx, peer_fds_bytewise);
    base = count_fds();
    for (int i = 0; i < CALLERS; i++) {
        c[i] = (struct fd_caller){.mon = fx.mon, .id = i, .err = MOOR_ERROR_INIT};
        assert_int_equal(pthread_create(&t[i], NULL, fd_caller_main, &c[i]), 0);
    }
    for (int i = 0; i < CALLERS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        if (c[i].failures)
            fail_msg("caller %d: %d failures, last: %s", i, c[i].failures, c[i].err.message);
    }
    assert_int_equal(count_fds(), base);
    assert_int_equal(stats_of(fx.mon).calls, CALLERS * FD_ROUNDS);
    fx_stop(&fx);
}

/* Wait until @mon has queued @n calls in all. */
static void wait_calls(moor_monitor *mon, uint64_t n)
{
    double deadline = now_ms() + FOREVER;

    while (stats_of(mon).calls < n) {
        if (now_ms() > deadline)
            fail_msg("%" PRIu64 " calls queued, expected %" PRIu64, stats_of(mon).calls, n);
        sched_yield();
    }
}

#define STUCK_BYTES (64u << 10)

/* Stop the monitor's writing: tiny socket buffers, nobody reading sv[1],
 * and a request far larger than they hold, timed out but still queued
 * (moor_monitor_call does not withdraw it): whatever is queued next
 * waits behind it until the peer reads. */
static void fx_start_stuck(struct fx *fx)
{
    const moor_monitor_options opts = {.name = "stuck", .max_message = 1u << 20};
    struct json_object *args = json_object_new_object();
    char *blob = malloc(STUCK_BYTES + 1);
    int small = 1;
    struct vmd_qmp_cmd cmd = {"big", args};

    assert_non_null(blob);
    memset(blob, 'x', STUCK_BYTES);
    blob[STUCK_BYTES] = '\0';
    json_object_object_add(args, "blob", json_object_new_string(blob));
    fx_start_opts(fx, NULL, &opts);
    assert_int_equal(setsockopt(fx->sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    assert_int_equal(setsockopt(fx->sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    assert_int_equal(moor_monitor_call(fx->mon, &cmd, NULL, 1, NULL), -ETIMEDOUT);
    json_object_put(args);
    free(blob);
}

struct fd_waiter {
    moor_monitor *mon;
    int rc;
    moor_error err;
};

static void *fd_waiter_main(void *arg)
{
    struct fd_waiter *w = arg;
    int fd = memfd_with("never");
    struct vmd_qmp_cmd cmd = {"getfd", NULL};

    w->rc = moor_monitor_call_fds(w->mon, &cmd, &fd, 1, NULL, FOREVER, &w->err);
    close(fd);
    return NULL;
}

/* A call whose deadline passes before its first byte is written is
 * withdrawn: its duplicate is closed when it returns, and the peer never
 * sees it; the stream stays whole for the calls that follow. */
static void test_fds_timeout_before_sending(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    struct vmd_qmp_cmd cmd = {"getfd", NULL};
    struct fx fx;
    int base, fd;

    (void)state;
    fx_start_stuck(&fx);
    base = count_fds();
    fd = memfd_with("late");
    assert_int_equal(moor_monitor_call_fds(fx.mon, &cmd, &fd, 1, NULL, 50, &err), -ETIMEDOUT);
    tu_assert_contains(err.message, "no reply to 'getfd'");
    assert_int_equal(count_fds(), base + 1); /* only the caller's own */
    close(fd);
    assert_int_equal(stats_of(fx.mon).timeouts, 2);

    /* The peer reads again: the big request, then only what comes next. */
    fx.script = peer_fds;
    assert_int_equal(pthread_create(&fx.peer, NULL, peer_main, &fx), 0);
    if (call_with_files(fx.mon, "after", 7, 1, &err) < 0)
        fail_msg("%s", err.message);
    assert_int_equal(gate_get(&fx.received), 2); /* "big" and "after" */
    assert_int_equal(count_fds(), base);
    fx_stop(&fx);
}

/* The channel ends while a call's request (with its descriptor) is queued
 * unsent: by the peer's end of file, or by a close. The call fails with
 * -EPIPE and leaves no duplicate behind. */
static void check_fds_dropped(bool by_close)
{
    struct fd_waiter w = {.err = MOOR_ERROR_INIT};
    struct fx fx;
    pthread_t t;
    int base;

    fx_start_stuck(&fx);
    /* Not counting the monitor's socket, which the end of the channel
     * closes on the loop thread in its own time. */
    base = count_fds_but(fx.sv[0]);
    w.mon = fx.mon;
    assert_int_equal(pthread_create(&t, NULL, fd_waiter_main, &w), 0);
    wait_calls(fx.mon, 2);
    if (by_close)
        moor_monitor_close(fx.mon);
    else
        shutdown(fx.sv[1], SHUT_RDWR);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(w.rc, -EPIPE);
    tu_assert_contains(w.err.message, by_close ? "closed" : "the peer closed the connection");
    assert_int_equal(count_fds_but(fx.sv[0]), base);
    if (!by_close)
        assert_true(gate_wait(&fx.eofs, 1));
    fx_stop(&fx);
}

static void test_fds_peer_eof(void **state)
{
    (void)state;
    check_fds_dropped(false);
}

static void test_fds_close(void **state)
{
    (void)state;
    check_fds_dropped(true);
}

struct order_caller {
    moor_monitor *mon;
    const char *tag;
    unsigned nfds;
    size_t pad;
    int rc;
    moor_error err;
};

static void *order_caller_main(void *arg)
{
    struct order_caller *c = arg;

    c->rc = call_with_files_pad(c->mon, c->tag, 5, c->nfds, c->pad, &c->err);
    return NULL;
}

/* Requests queued in a known order behind a stuck one: a plain one, one
 * with descriptors and larger than the socket's buffer (so it takes
 * several sendmsg() calls), another plain one. Read a byte at a time, the
 * descriptors arrive with the first byte of their own request, and once:
 * not with the plain one before (as one batch would do), not again with
 * the later parts. */
static void test_fds_first_byte_once(void **state)
{
    struct order_caller c[3] = {
        {.tag = "before", .nfds = 0},
        {.tag = "carrier", .nfds = 2, .pad = 3 * STUCK_BYTES / 4},
        {.tag = "after", .nfds = 0},
    };
    pthread_t t[3];
    struct fx fx;

    (void)state;
    fx_start_stuck(&fx);
    for (int i = 0; i < 3; i++) {
        c[i].mon = fx.mon;
        c[i].err = (moor_error)MOOR_ERROR_INIT;
        assert_int_equal(pthread_create(&t[i], NULL, order_caller_main, &c[i]), 0);
        wait_calls(fx.mon, 2 + (uint64_t)i); /* queued in this order */
    }
    fx.script = peer_fds_bytewise;
    assert_int_equal(pthread_create(&fx.peer, NULL, peer_main, &fx), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        if (c[i].rc < 0)
            fail_msg("%s: %s", c[i].tag, c[i].err.message);
    }
    fx_stop(&fx);
}

/* The peer takes the descriptor, then hangs up without answering: the
 * duplicate went with the request (nothing of ours is left open). */
static void peer_take_then_hang_up(struct fx *fx)
{
    int fds[QMP_PEER_MAX_FDS];
    unsigned nfds;
    char *line;

    assert_true(qmp_read_line_fds(fx->sv[1], &fx->lb, &line, fds, QMP_PEER_MAX_FDS, &nfds) > 0);
    assert_int_equal(nfds, 1);
    close(fds[0]);
    shutdown(fx->sv[1], SHUT_RDWR);
}

static void test_fds_sent_then_eof(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    struct vmd_qmp_cmd cmd = {"getfd", NULL};
    struct fx fx;
    int base, fd;

    (void)state;
    fx_start(&fx, peer_take_then_hang_up);
    base = count_fds_but(fx.sv[0]);
    fd = memfd_with("taken");
    assert_int_equal(moor_monitor_call_fds(fx.mon, &cmd, &fd, 1, NULL, FOREVER, &err), -EPIPE);
    close(fd);
    assert_int_equal(pthread_join(fx.peer, NULL), 0); /* its copy is closed too */
    fx.script = NULL;
    assert_int_equal(count_fds_but(fx.sv[0]), base);
    fx_stop(&fx);
}

/* A TCP connection over loopback: a stream socket that is not AF_UNIX.
 * Returns false if the machine has no loopback network. */
static bool tcp_pair(int sv[2])
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) < 0) {
        if (l >= 0)
            close(l);
        return false;
    }
    sv[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(sv[0] >= 0);
    assert_int_equal(connect(sv[0], (struct sockaddr *)&a, sizeof(a)), 0);
    sv[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    assert_true(sv[1] >= 0);
    close(l);
    return true;
}

static void test_fds_bad_arguments(void **state)
{
    const moor_monitor_codec codec = vmd_qmp_codec();
    moor_error err = MOOR_ERROR_INIT;
    int fds[MOOR_MONITOR_MAX_FDS + 1], saved, closed, base, tcp[2];
    struct vmd_qmp_cmd cmd = {"getfd", NULL};
    moor_monitor *tmon;
    struct fx fx;

    (void)state;
    fx_start(&fx, peer_fds);
    base = count_fds();
    for (unsigned i = 0; i <= MOOR_MONITOR_MAX_FDS; i++)
        fds[i] = memfd_with("ok");
    saved = fds[1];
    /* Not open, and far above the numbers the duplicates will take (a
     * freed low number would be reused by the duplicate of fds[0]). */
    closed = 900;
    assert_true(fcntl(closed, F_GETFD) < 0);

    assert_int_equal(
        moor_monitor_call_fds(fx.mon, &cmd, fds, MOOR_MONITOR_MAX_FDS + 1, NULL, FOREVER, &err),
        -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, fx.mon, "17 descriptors");
    assert_int_equal(moor_monitor_call_fds(fx.mon, &cmd, NULL, 1, NULL, FOREVER, &err), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, fx.mon, "1 descriptors at (nil)");
    fds[1] = -1;
    assert_int_equal(moor_monitor_call_fds(fx.mon, &cmd, fds, 2, NULL, FOREVER, &err), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, fx.mon, "fds[1] = -1 is not an open descriptor");
    fds[1] = closed;
    assert_int_equal(moor_monitor_call_fds(fx.mon, &cmd, fds, 3, NULL, FOREVER, &err), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, fx.mon, "is not an open descriptor");
    assert_int_equal(moor_monitor_call_fds(fx.mon, NULL, fds, 1, NULL, FOREVER, &err), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, fx.mon, "moor_monitor_call_fds(test-mon): NULL");
    assert_int_equal(moor_monitor_call_fds(NULL, &cmd, fds, 1, NULL, FOREVER, &err), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "not a monitor");
    assert_int_equal(moor_monitor_call_fds(fx.mon, &cmd, fds, 1, NULL, 0, &err), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, fx.mon, "timeout 0 ms");
    /* Nothing was queued, no duplicate is left (only the test's own files). */
    assert_int_equal(stats_of(fx.mon).calls, 0);
    assert_int_equal(count_fds(), base + MOOR_MONITOR_MAX_FDS + 1);
    fds[1] = saved;

    /* Out of descriptors to duplicate into: a runtime error, not misuse. */
    if (!tu_under_valgrind()) { /* valgrind keeps its own descriptor limit */
        struct rlimit old, low;
        int probe = dup(0);

        assert_true(probe >= 0);
        close(probe);
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
        low = old;
        low.rlim_cur = (rlim_t)probe; /* the lowest free number is out of reach */
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
        assert_int_equal(moor_monitor_call_fds(fx.mon, &cmd, fds, 1, NULL, FOREVER, &err), -EMFILE);
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
        tu_assert_contains(err.message, "cannot duplicate fds[0]");
        assert_int_equal(stats_of(fx.mon).calls, 0);
    }
    tu_expect_no_report();

    /* Not AF_UNIX: -ENOTSUP, queueing nothing; without descriptors the
     * call is a plain one (here it times out: nobody answers). */
    if (tcp_pair(tcp)) {
        assert_non_null(tmon = moor_monitor_new(fx.loop, tcp[0], &codec, NULL, NULL, NULL, &err));
        assert_int_equal(moor_monitor_call_fds(tmon, &cmd, fds, 1, NULL, FOREVER, &err), -ENOTSUP);
        tu_assert_contains(err.message, "not AF_UNIX");
        assert_int_equal(moor_monitor_call_fds(tmon, &cmd, NULL, 0, NULL, 1, &err), -ETIMEDOUT);
        assert_int_equal(stats_of(tmon).calls, 1);
        moor_monitor_close(tmon);
        moor_unref(tmon);
        close(tcp[1]);
    }
    tu_expect_no_report();
    for (unsigned i = 0; i <= MOOR_MONITOR_MAX_FDS; i++)
        close(fds[i]);
    fx_stop(&fx);
}

/* A registry removal starts liburcu's call_rcu worker thread, which lives
 * until exit (see tests/valgrind.supp). Start it here, before any other
 * thread: created later, it could reuse the cached stack of a joined
 * thread, and valgrind would blame that thread's creator for its TLS,
 * which the suppression (keyed on liburcu's pthread_create) would miss. */
static void start_call_rcu_thread(void)
{
    moor_registry *reg = moor_registry_new(NULL);
    struct vm *vm = vm_new();
    moor_uuid uuid;

    if (!reg || moor_uuid_generate(&uuid, NULL) ||
        moor_registry_add(reg, vm, &uuid, "warm", NULL) || moor_registry_remove(reg, vm, NULL))
        abort();
    moor_unref(vm);
    moor_unref(reg); /* waits for the deferred release */
}

int main(void)
{
    moor_error err = MOOR_ERROR_INIT;

    vm_class =
        moor_class_new("test.vm", moor_lockable_class(), sizeof(struct vm), vm_dispose, &err);
    if (!vm_class)
        return 1;
    start_call_rcu_thread();

    const struct CMUnitTest tests[] = {
        TU_TEST(test_call_and_greeting),
        TU_TEST(test_pipelined_out_of_order),
        TU_TEST(test_deadline_then_late_reply),
        TU_TEST(test_default_deadline),
        TU_TEST(test_peer_closes_mid_call),
        TU_TEST(test_garbage),
        TU_TEST(test_unframable),
        TU_TEST(test_oversized),
        TU_TEST(test_refusal),
        TU_TEST(test_refusal_is_always_eremoteio),
        TU_TEST(test_big_messages),
        TU_TEST(test_events_owner_gone),
        TU_TEST(test_no_owner_no_callbacks),
        TU_TEST(test_backlog_cap),
        TU_TEST(test_enter_exit),
        TU_TEST(test_exit_matches_enter),
        TU_TEST(test_enter_exit_owner_removed),
        TU_TEST(test_close_in_event_callback),
        TU_TEST(test_last_unref_in_eof_callback),
        TU_TEST(test_close_waits_for_eof_callback),
        TU_TEST(test_write_error_and_loop_thread),
        TU_TEST(test_bad_arguments),
        TU_TEST(test_misuse),
        TU_TEST(test_oom_new),
        TU_TEST(test_oom_call),
        TU_TEST(test_fds_passed),
        TU_TEST(test_fds_pipelined),
        TU_TEST(test_fds_timeout_before_sending),
        TU_TEST(test_fds_peer_eof),
        TU_TEST(test_fds_close),
        TU_TEST(test_fds_first_byte_once),
        TU_TEST(test_fds_sent_then_eof),
        TU_TEST(test_fds_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
