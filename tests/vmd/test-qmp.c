/* SPDX-License-Identifier: MIT */
/*
 * test-qmp.c - vmd's QMP codec on crafted input, the handshake, and calls
 * through a real moor monitor to a scripted peer thread: a reply, a
 * refusal, a timeout that marks the connection unresponsive, the next call
 * refused at once, and a late reply that clears the mark.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <json-c/json.h>
#include <sys/socket.h>
#include <time.h>

#include <moor/loop.h>

#include "qmp-peer.h"
#include "qmp.h"
#include "test-util.h"

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int classify(const char *line, moor_monitor_message *m, moor_error *err)
{
    moor_monitor_codec c = vmd_qmp_codec();
    memset(m, 0, sizeof(*m));
    return c.classify(c.opaque, line, strlen(line), m, err);
}

static void free_msg(moor_monitor_message *m)
{
    moor_monitor_codec c = vmd_qmp_codec();
    if (m->payload)
        c.free_payload(c.opaque, m->payload);
}

static void test_frame(void **state)
{
    moor_monitor_codec c = vmd_qmp_codec();
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    assert_int_equal(c.frame(NULL, "{\"a\":1}", 7, &err), 0);
    assert_int_equal(c.frame(NULL, "{\"a\":1}\n{\"b\"", 12, &err), 8);
    assert_int_equal(c.frame(NULL, "{\"a\0\":1}\n", 9, &err), -EPROTO);
    tu_assert_contains(moor_error_message(&err), "NUL byte");
}

static void test_classify(void **state)
{
    moor_monitor_message m;
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    assert_int_equal(classify("{\"QMP\":{\"version\":{}}}\n", &m, &err), 0);
    assert_int_equal(m.kind, MOOR_MONITOR_GREETING);
    free_msg(&m);

    assert_int_equal(classify("{\"event\":\"STOP\",\"timestamp\":{}}\r\n", &m, &err), 0);
    assert_int_equal(m.kind, MOOR_MONITOR_EVENT);
    assert_string_equal(json_object_get_string(json_object_object_get(m.payload, "event")), "STOP");
    free_msg(&m);

    assert_int_equal(classify("{\"return\":{\"status\":\"running\"},\"id\":42}", &m, &err), 0);
    assert_int_equal(m.kind, MOOR_MONITOR_REPLY);
    assert_int_equal(m.id, 42);
    assert_int_equal(m.status, 0);
    assert_string_equal(json_object_get_string(json_object_object_get(m.payload, "status")),
                        "running");
    free_msg(&m);

    assert_int_equal(classify("{\"return\":null,\"id\":0}", &m, &err), 0);
    assert_int_equal(m.kind, MOOR_MONITOR_REPLY);
    assert_null(m.payload);

    assert_int_equal(
        classify("{\"error\":{\"class\":\"CommandNotFound\",\"desc\":\"no such\"},\"id\":7}", &m,
                 &err),
        0);
    assert_int_equal(m.kind, MOOR_MONITOR_REPLY);
    assert_int_equal(m.id, 7);
    assert_int_equal(m.status, -EREMOTEIO);
    assert_string_equal(m.error, "CommandNotFound: no such");
    free_msg(&m);

    assert_int_equal(classify("{\"error\":{},\"id\":8}", &m, &err), 0);
    assert_string_equal(m.error, "GenericError: (no description)");
    free_msg(&m);

    assert_int_equal(classify("{\"timestamp\":{}}", &m, &err), 0);
    assert_int_equal(m.kind, MOOR_MONITOR_IGNORE);
    assert_int_equal(classify("  \n", &m, &err), 0);
    assert_int_equal(m.kind, MOOR_MONITOR_IGNORE);

    static const struct {
        const char *line, *why;
    } bad[] = {
        {"{\"return\":{}}", "without an unsigned integer id"},
        {"{\"return\":{},\"id\":-1}", "without an unsigned integer id"},
        {"{\"return\":{},\"id\":\"x\"}", "without an unsigned integer id"},
        {"{\"error\":{},\"id\":1.5}", "error reply without"},
        {"{\"event\":3}", "event whose name is not a string"},
        {"[1,2]", "not a JSON object"},
        {"{\"a\":1} {\"b\":2}", "trailing bytes"},
        {"{\"a\":", "not one JSON value"},
        {"garbage", "not one JSON value"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        moor_error_clear(&err);
        assert_int_equal(classify(bad[i].line, &m, &err), -EPROTO);
        tu_assert_contains(moor_error_message(&err), bad[i].why);
    }
}

static void test_encode(void **state)
{
    moor_monitor_codec c = vmd_qmp_codec();
    moor_error err = MOOR_ERROR_INIT;
    char buf[256], tiny[8];

    (void)state;
    struct vmd_qmp_cmd plain = {.execute = "query-status"};
    ssize_t n = c.encode(NULL, &plain, 5, buf, sizeof(buf), &err);
    assert_string_equal(buf, "{\"execute\":\"query-status\",\"id\":5}\n");
    assert_int_equal(n, strlen(buf));
    assert_int_equal(c.encode(NULL, &plain, 5, tiny, sizeof(tiny), &err), n);

    struct json_object *args = json_tokener_parse("{\"device\":\"x\"}");
    struct vmd_qmp_cmd with = {.execute = "eject", .arguments = args};
    assert_true(c.encode(NULL, &with, 9, buf, sizeof(buf), &err) > 0);
    assert_string_equal(buf, "{\"execute\":\"eject\",\"arguments\":{\"device\":\"x\"},\"id\":9}\n");
    json_object_put(args);

    struct json_object *arr = json_object_new_array();
    struct vmd_qmp_cmd notobj = {.execute = "eject", .arguments = arr};
    assert_int_equal(c.encode(NULL, &notobj, 1, buf, sizeof(buf), &err), -EINVAL);
    json_object_put(arr);
    static const char *const badnames[] = {
        "", "a b", "x\"y", "quit\n",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof(badnames) / sizeof(badnames[0]); i++) {
        struct vmd_qmp_cmd bad = {.execute = badnames[i]};
        assert_int_equal(c.encode(NULL, &bad, 1, buf, sizeof(buf), &err), -EINVAL);
        assert_false(vmd_qmp_command_ok(badnames[i]));
    }
    assert_true(vmd_qmp_command_ok("query-cpus-fast"));
    assert_false(vmd_qmp_command_ok(NULL));
}

/* ---- a scripted peer --------------------------------------------------- */

struct peer {
    int fd;
    int go[2]; /* the test writes a byte: send the late reply */
    bool greeting_garbage;
    bool event_in_call; /* answer "stall" with an event only, never a reply */
};

static bool read_req(struct peer *p, qmp_linebuf *lb, qmp_request_in *req, const char *want)
{
    char *line;
    if (qmp_read_line(p->fd, lb, &line) < 0 || !qmp_parse_request(line, req))
        return false;
    if (req->arguments)
        json_object_put(req->arguments);
    return strcmp(req->execute, want) == 0;
}

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    qmp_linebuf lb = {0};
    qmp_request_in req;
    char c;

    if (p->greeting_garbage) {
        qmp_writef(p->fd, "{\"hello\":1}\n");
        goto out;
    }
    qmp_send_greeting(p->fd);
    if (!read_req(p, &lb, &req, "qmp_capabilities"))
        goto out;
    qmp_send_return(p->fd, req.id, "{}");
    if (p->event_in_call) {
        if (read_req(p, &lb, &req, "stall"))
            qmp_send_event(p->fd, "RTC_CHANGE", 1);
        read_req(p, &lb, &req, "never"); /* until the monitor closes */
        goto out;
    }
    if (!read_req(p, &lb, &req, "query-status"))
        goto out;
    qmp_send_return(p->fd, req.id, "{\"status\":\"running\",\"running\":true}");
    if (!read_req(p, &lb, &req, "bogus"))
        goto out;
    qmp_send_error(p->fd, req.id, "CommandNotFound", "The command bogus has not been found");
    if (!read_req(p, &lb, &req, "stall"))
        goto out;
    if (read(p->go[0], &c, 1) != 1) /* the test says when */
        goto out;
    qmp_send_return(p->fd, req.id, "{}"); /* late: stray */
    if (!read_req(p, &lb, &req, "query-status"))
        goto out;
    qmp_send_return(p->fd, req.id, "{\"status\":\"paused\",\"running\":false}");
    read_req(p, &lb, &req, "never"); /* until the monitor closes */
out:
    qmp_linebuf_free(&lb);
    return NULL;
}

static void test_handshake_refuses_non_qmp(void **state)
{
    int sv[2];
    struct peer p = {.greeting_garbage = true};
    moor_error err = MOOR_ERROR_INIT;
    pthread_t t;

    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    p.fd = sv[1];
    assert_int_equal(pthread_create(&t, NULL, peer_main, &p), 0);
    assert_int_equal(vmd_qmp_handshake(sv[0], 2000, &err), -EPROTO);
    tu_assert_contains(moor_error_message(&err), "not a greeting");
    pthread_join(t, NULL);
    close(sv[1]);
    /* the peer is gone: end of file */
    assert_int_equal(vmd_qmp_handshake(sv[0], 2000, &err), -EPIPE);
    close(sv[0]);

    /* half a greeting, then end of file: -EPIPE at once, not the deadline */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(write(sv[1], "{\"QMP\": {", 9), 9);
    close(sv[1]);
    int64_t t1 = mono_ms();
    assert_int_equal(vmd_qmp_handshake(sv[0], 5000, &err), -EPIPE);
    tu_assert_contains(moor_error_message(&err), "in the middle of");
    assert_true(mono_ms() - t1 < 2500);
    close(sv[0]);

    /* silence: a timeout, bounded */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int64_t t0 = mono_ms();
    assert_int_equal(vmd_qmp_handshake(sv[0], 100, &err), -ETIMEDOUT);
    assert_true(mono_ms() - t0 < 2000);
    close(sv[0]);
    close(sv[1]);
}

static void test_calls_and_unresponsive_mark(void **state)
{
    int sv[2];
    struct peer p = {0};
    moor_error err = MOOR_ERROR_INIT;
    pthread_t t;
    struct json_object *ret = NULL;

    (void)state;
    moor_loop *loop = moor_loop_new(&err);
    assert_non_null(loop);
    assert_int_equal(moor_loop_thread_start(loop, &err), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(pipe(p.go), 0);
    p.fd = sv[1];
    assert_int_equal(pthread_create(&t, NULL, peer_main, &p), 0);

    assert_int_equal(vmd_qmp_handshake(sv[0], 5000, &err), 0);
    vmd_qmp *q = vmd_qmp_new(loop, sv[0], NULL, NULL, "qmp test", 300, &err);
    assert_non_null(q);

    assert_int_equal(vmd_qmp_call(q, "query-status", NULL, &ret, &err), 0);
    assert_string_equal(json_object_get_string(json_object_object_get(ret, "status")), "running");
    json_object_put(ret);

    assert_int_equal(vmd_qmp_call(q, "bogus", NULL, NULL, &err), -EREMOTEIO);
    tu_assert_contains(moor_error_message(&err), "CommandNotFound: The command bogus");

    assert_int_equal(vmd_qmp_call(q, "bad name", NULL, NULL, &err), -EINVAL);
    assert_true(vmd_qmp_responsive(q, NULL, NULL, 0));

    /* The peer sits on "stall": the call times out after ~300 ms. */
    int64_t t0 = mono_ms();
    assert_int_equal(vmd_qmp_call(q, "stall", NULL, NULL, &err), -ETIMEDOUT);
    int64_t waited = mono_ms() - t0;
    assert_true(waited >= 250 && waited < 5000);
    uint64_t since = 0;
    char cmd[32];
    assert_false(vmd_qmp_responsive(q, &since, cmd, sizeof(cmd)));
    assert_string_equal(cmd, "stall");
    assert_true(since >= 250);

    /* Marked: the next call fails at once, naming the stuck command. */
    t0 = mono_ms();
    assert_int_equal(vmd_qmp_call(q, "query-status", NULL, NULL, &err), -ETIMEDOUT);
    assert_true(mono_ms() - t0 < 100);
    /* (how many seconds depends on how long the timed-out call took) */
    tu_assert_contains(moor_error_message(&err), "QEMU has not answered stall for ");

    /* The late reply clears the mark (bounded wait for the loop to read it). */
    assert_int_equal(write(p.go[1], "x", 1), 1);
    int64_t deadline = mono_ms() + 5000;
    while (!vmd_qmp_responsive(q, NULL, NULL, 0)) {
        if (mono_ms() > deadline)
            fail_msg("the late reply did not clear the unresponsive mark in 5 s");
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(vmd_qmp_call(q, "query-status", NULL, &ret, &err), 0);
    assert_string_equal(json_object_get_string(json_object_object_get(ret, "status")), "paused");
    json_object_put(ret);
    struct json_object *dbg = vmd_qmp_debug(q);
    assert_int_equal(json_object_array_length(dbg), 0);
    json_object_put(dbg);

    vmd_qmp_close(q);
    assert_int_equal(vmd_qmp_call(q, "query-status", NULL, NULL, &err), -EPIPE);
    moor_unref(q);
    pthread_join(t, NULL); /* the close shut the socket down: the peer saw EOF */
    close(sv[1]);
    close(p.go[0]);
    close(p.go[1]);
    moor_loop_thread_stop(loop);
    moor_unref(loop);
}

/*
 * Whatever QEMU says after a call was sent counts against the mark that
 * call sets: here an event arrives during a call that then times out (as
 * a late reply can arrive between the timeout and the mark). QEMU is
 * alive, so the mark must clear and the next call go out; before, the
 * event was counted as heard before the mark, and the mark stayed forever.
 */
static void test_heard_during_call_clears_mark(void **state)
{
    int sv[2];
    struct peer p = {.event_in_call = true};
    moor_error err = MOOR_ERROR_INIT;
    pthread_t t;

    (void)state;
    moor_loop *loop = moor_loop_new(&err);
    assert_non_null(loop);
    assert_int_equal(moor_loop_thread_start(loop, &err), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    p.fd = sv[1];
    assert_int_equal(pthread_create(&t, NULL, peer_main, &p), 0);
    assert_int_equal(vmd_qmp_handshake(sv[0], 5000, &err), 0);
    vmd_qmp *q = vmd_qmp_new(loop, sv[0], NULL, NULL, "qmp test", 1000, &err);
    assert_non_null(q);

    assert_int_equal(vmd_qmp_call(q, "stall", NULL, NULL, &err), -ETIMEDOUT);
    int64_t deadline = mono_ms() + 5000;
    while (!vmd_qmp_responsive(q, NULL, NULL, 0)) {
        if (mono_ms() > deadline)
            fail_msg("an event heard during the call did not clear the mark in 5 s");
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    moor_monitor_stats st;
    assert_int_equal(moor_monitor_get_stats(vmd_qmp_monitor(q), &st), 0);
    assert_int_equal(st.events, 1);

    vmd_qmp_close(q);
    moor_unref(q);
    pthread_join(t, NULL);
    close(sv[1]);
    moor_loop_thread_stop(loop);
    moor_unref(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_frame),
        TU_TEST(test_classify),
        TU_TEST(test_encode),
        TU_TEST(test_handshake_refuses_non_qmp),
        TU_TEST(test_calls_and_unresponsive_mark),
        TU_TEST(test_heard_during_call_clears_mark),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
