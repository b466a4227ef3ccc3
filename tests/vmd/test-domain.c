/* SPDX-License-Identifier: MIT */
/*
 * test-domain.c - the domain ops called directly (no HTTP): the state
 * table exhaustively, then real QEMU (qemu-system-x86_64 -machine none):
 * the whole lifecycle, a paused start, a QEMU killed with SIGKILL, a QEMU
 * frozen with SIGSTOP, and a daemon restart that reconnects. A missing
 * QEMU fails these tests: it is never a skip.
 */
#define _GNU_SOURCE /* nftw() in rmrf.h, via vmd-test.h */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <pwd.h>

#include "test-util.h"
#include "vmd-test.h"

TU_TSAN_IGNORE_LIBURCU;

/* ---- the state table ------------------------------------------------------ */

/* The table as the API document states it, written out independently. */
static const char *const expected[VMD_OP__COUNT] = {
    /*             shutoff running paused */
    [VMD_OP_INFO] = "yyy",    [VMD_OP_STATE] = "yyy",    [VMD_OP_STATS] = "nyy",
    [VMD_OP_START] = "ynn",   [VMD_OP_SHUTDOWN] = "nyy", [VMD_OP_DESTROY] = "nyy",
    [VMD_OP_SUSPEND] = "nyn", [VMD_OP_RESUME] = "nny",   [VMD_OP_RESET] = "nyy",
    [VMD_OP_QMP] = "nyy",     [VMD_OP_UNDEFINE] = "ynn", [VMD_OP_SAVE] = "nyy",
    [VMD_OP_RESTORE] = "ynn", [VMD_OP_JOB] = "yyy",      [VMD_OP_ABORT] = "yyy",
    [VMD_OP_BACKUP] = "nyy",
};

static void test_state_table(void **state)
{
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    for (int op = 0; op < VMD_OP__COUNT; op++) {
        for (int st = 0; st < VMD_STATE__COUNT; st++) {
            bool want = expected[op][st] == 'y';
            moor_error_clear(&err);
            int rc = vmd_op_check(op, st, "vm1", &err);
            if (vmd_op_allowed(op, st) != want)
                fail_msg("%s in %s: table says %d", vmd_op_name(op), vmd_state_name(st), !want);
            if (want) {
                assert_int_equal(rc, 0);
                continue;
            }
            assert_int_equal(rc, st == VMD_STATE_SHUTOFF ? -ENOTCONN : -EBUSY);
            tu_assert_contains(moor_error_message(&err), "domain vm1 is ");
            tu_assert_contains(moor_error_message(&err), vmd_op_name(op));
        }
    }
    assert_int_equal(vmd_op_check(VMD_OP_UNDEFINE, VMD_STATE_RUNNING, "vm1", &err), -EBUSY);
    assert_string_equal(moor_error_message(&err),
                        "domain vm1 is running: undefine needs it shut off");
    assert_int_equal(vmd_op_check(VMD_OP_SUSPEND, VMD_STATE_SHUTOFF, "vm1", &err), -ENOTCONN);
    assert_string_equal(moor_error_message(&err),
                        "domain vm1 is not running: suspend needs it running");
    assert_int_equal(vmd_op_check(VMD_OP__COUNT, VMD_STATE_RUNNING, "vm1", &err), -EINVAL);
    assert_int_equal(vmd_op_check(VMD_OP_INFO, VMD_STATE__COUNT, "vm1", &err), -EINVAL);
    assert_false(vmd_op_allowed(VMD_OP__COUNT, VMD_STATE_SHUTOFF));
    assert_string_equal(vmd_state_name(VMD_STATE__COUNT), "?");
    for (int r = 1; r < VMD_REASON__COUNT; r++)
        assert_string_not_equal(vmd_reason_name(r), "?");
}

/* ---- real QEMU ------------------------------------------------------------- */

static int vt_setup(void **state)
{
    tu_setup(state);
    assert_int_equal(access("/usr/bin/qemu-system-x86_64", X_OK), 0); /* fail, never skip */
    return 0;
}

static int vt_teardown(void **state)
{
    vt_kill_leftovers();
    return tu_teardown(state);
}

#define VT_TEST(fn) cmocka_unit_test_setup_teardown(fn, vt_setup, vt_teardown)

#define OK(call)                                                                                   \
    do {                                                                                           \
        struct json_object *out_ = NULL;                                                           \
        moor_error e_ = MOOR_ERROR_INIT;                                                           \
        int rc_ = call(&t.vmd, d, &out_, &e_);                                                     \
        if (rc_ < 0)                                                                               \
            fail_msg("%s: %d %s", #call, rc_, moor_error_message(&e_));                            \
        json_object_put(out_);                                                                     \
    } while (0)

#define FAILS(call, code, text)                                                                    \
    do {                                                                                           \
        struct json_object *out_ = NULL;                                                           \
        moor_error e_ = MOOR_ERROR_INIT;                                                           \
        int rc_ = call(&t.vmd, d, &out_, &e_);                                                     \
        if (rc_ != (code))                                                                         \
            fail_msg("%s: expected %d, got %d %s", #call, (code), rc_, moor_error_message(&e_));   \
        tu_assert_contains(moor_error_message(&e_), text);                                         \
        assert_null(out_);                                                                         \
    } while (0)

static int start_running(struct vmd *v, vmd_domain *d, struct json_object **out, moor_error *e)
{
    return vmd_domain_start(v, d, false, out, e);
}

static int start_paused(struct vmd *v, vmd_domain *d, struct json_object **out, moor_error *e)
{
    return vmd_domain_start(v, d, true, out, e);
}

static const char *stats_status(struct vt *t, vmd_domain *d)
{
    static char buf[32];
    struct json_object *o = NULL, *s, *v;
    moor_error err = MOOR_ERROR_INIT;

    if (vmd_domain_stats(&t->vmd, d, &o, &err) < 0)
        fail_msg("stats: %s", moor_error_message(&err));
    assert_true(json_object_object_get_ex(o, "status", &s));
    assert_true(json_object_object_get_ex(s, "status", &v));
    snprintf(buf, sizeof(buf), "%s", json_object_get_string(v));
    assert_true(json_object_object_get_ex(o, "vcpus", &v));
    assert_true(json_object_is_type(v, json_type_array));
    json_object_put(o);
    return buf;
}

static void test_lifecycle(void **state)
{
    struct vt t;
    moor_error err = MOOR_ERROR_INIT;
    struct json_object *out = NULL;

    (void)state;
    vt_init(&t, NULL, 5000);
    vmd_domain *d = vt_define(&t, "life");
    vt_assert_state(&t, d, "shutoff", "defined");
    FAILS(vmd_domain_suspend, -ENOTCONN, "domain life is not running");
    FAILS(vmd_domain_destroy, -ENOTCONN, "not running");

    /* a second define of the name is refused */
    struct vmd_domain_config cfg;
    struct json_object *o = json_tokener_parse("{\"name\":\"life\"}");
    assert_int_equal(vmd_config_parse(o, &cfg, &err), 0);
    json_object_put(o);
    assert_int_equal(vmd_domain_define(&t.vmd, &cfg, &out, &err), -EEXIST);
    tu_assert_contains(moor_error_message(&err), "name life is taken");

    OK(start_running);
    vt_assert_state(&t, d, "running", "booted");
    pid_t pid = vt_pid(&t, d);
    assert_true(pid > 0);
    assert_int_equal(kill(pid, 0), 0);
    FAILS(start_running, -EBUSY, "domain life is running: start needs it shut off");
    FAILS(vmd_domain_undefine, -EBUSY, "undefine needs it shut off");
    FAILS(vmd_domain_resume, -EBUSY, "resume needs it paused");

    OK(vmd_domain_suspend);
    vt_assert_state(&t, d, "paused", "user");
    assert_string_equal(stats_status(&t, d), "paused");
    OK(vmd_domain_resume);
    vt_assert_state(&t, d, "running", "resumed");
    assert_string_equal(stats_status(&t, d), "running");
    OK(vmd_domain_reset);
    vt_assert_state(&t, d, "running", "reset");

    /* raw QMP: a reply, a refusal with QEMU's class, and the taint */
    assert_int_equal(vmd_domain_qmp(&t.vmd, d, "query-version", NULL, &out, &err), 0);
    struct json_object *ret, *q;
    assert_true(json_object_object_get_ex(out, "return", &ret));
    assert_true(json_object_object_get_ex(ret, "qemu", &q));
    json_object_put(out);
    out = NULL;
    assert_int_equal(vmd_domain_qmp(&t.vmd, d, "no-such-command", NULL, &out, &err), -EREMOTEIO);
    tu_assert_contains(moor_error_message(&err), "CommandNotFound");
    assert_null(out);
    assert_int_equal(vmd_domain_qmp(&t.vmd, d, "bad name", NULL, &out, &err), -EINVAL);
    char buf[32];
    vt_field(&t, d, "tainted", buf, sizeof(buf));
    assert_string_equal(buf, "true");

    /* the list and the debug view */
    assert_int_equal(vmd_domain_list(&t.vmd, &out, &err), 0);
    tu_assert_contains(json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN),
                       "\"name\":\"life\"");
    json_object_put(out);
    out = json_object_new_object();
    assert_int_equal(vmd_domains_debug(&t.vmd, out, &err), 0);
    tu_assert_contains(json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN),
                       "\"responsive\":true");
    tu_assert_contains(json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN), "vmd_domain");
    json_object_put(out);

    OK(vmd_domain_destroy);
    vt_assert_state(&t, d, "shutoff", "destroyed");
    vt_assert_gone(pid);
    assert_int_equal(vt_pid(&t, d), 0);
    assert_true(vt_event_seen(&t, "\"reason\":\"destroyed\""));
    assert_true(vt_event_seen(&t, "\"event\":\"STOP\""));

    OK(vmd_domain_undefine);
    FAILS(vmd_domain_undefine, -ENOENT, "no longer defined");
    moor_unref(d);
    assert_null(vmd_domain_lookup(&t.vmd, "life"));
    vt_done(&t);
}

static void test_start_paused(void **state)
{
    struct vt t;

    (void)state;
    vt_init(&t, NULL, 5000);
    vmd_domain *d = vt_define(&t, "paused1");
    OK(start_paused);
    vt_assert_state(&t, d, "paused", "starting");
    pid_t pid = vt_pid(&t, d);
    assert_string_equal(stats_status(&t, d), "prelaunch");
    OK(vmd_domain_resume);
    vt_assert_state(&t, d, "running", "resumed");
    OK(vmd_domain_destroy);
    vt_assert_gone(pid);
    moor_unref(d);
    vt_done(&t);
}

struct call {
    struct vt *t;
    vmd_domain *d;
    int (*fn)(struct vmd *, vmd_domain *, struct json_object **, moor_error *);
    int rc;
    int64_t took_ms;
    moor_error err;
};

static void *call_main(void *arg)
{
    struct call *c = arg;
    struct json_object *out = NULL;
    int64_t t0 = vt_now_ms();

    moor_error_clear(&c->err);
    c->rc = c->fn(&c->t->vmd, c->d, &out, &c->err);
    c->took_ms = vt_now_ms() - t0;
    json_object_put(out);
    return NULL;
}

/* Poll the debug view until @text shows in it, for up to 5 s. */
static void wait_debug(struct vt *t, const char *text)
{
    int64_t deadline = vt_now_ms() + 5000;
    for (;;) {
        struct json_object *o = json_object_new_object();
        moor_error err = MOOR_ERROR_INIT;
        assert_int_equal(vmd_domains_debug(&t->vmd, o, &err), 0);
        bool seen = strstr(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), text) != NULL;
        json_object_put(o);
        if (seen)
            return;
        if (vt_now_ms() > deadline)
            fail_msg("'%s' not in the debug view after 5 s", text);
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
}

static int stats_op(struct vmd *v, vmd_domain *d, struct json_object **out, moor_error *e)
{
    return vmd_domain_stats(v, d, out, e);
}

static void test_sigkill_crashes_and_frees_waiters(void **state)
{
    struct vt t;
    pthread_t ta, tb;

    (void)state;
    vt_init(&t, NULL, 4000);
    vmd_domain *d = vt_define(&t, "crash");
    OK(start_running);
    pid_t pid = vt_pid(&t, d);

    /* Freeze QEMU so stats sits in its QMP call holding a QUERY job, and
     * suspend queues behind it for the MODIFY job. */
    vt_freeze(pid);
    struct call a = {.t = &t, .d = d, .fn = stats_op};
    struct call b = {.t = &t, .d = d, .fn = vmd_domain_suspend};
    assert_int_equal(pthread_create(&ta, NULL, call_main, &a), 0);
    wait_debug(&t, "\"command\":\"query-status\"");
    assert_int_equal(pthread_create(&tb, NULL, call_main, &b), 0);
    wait_debug(&t, "\"waiters\":1");

    int64_t t0 = vt_now_ms();
    assert_int_equal(kill(pid, SIGKILL), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    /* Both freed by the exit, well before the 4 s QMP deadline. */
    assert_true(vt_now_ms() - t0 < 3000);
    assert_int_equal(a.rc, -EPIPE);
    tu_assert_contains(moor_error_message(&a.err), "domain crash: stats: ");
    /* The waiter is freed by the exit (the usual order: "stopped
     * (crashed) while suspend waited"); or the monitor's end of file ended
     * the stats job first and suspend then found the domain shut off, or
     * its monitor closed. Each says the domain's QEMU went away. */
    if (b.rc != -ENOTCONN && b.rc != -EPIPE)
        fail_msg("suspend: expected -ENOTCONN or -EPIPE, got %d %s", b.rc,
                 moor_error_message(&b.err));
    tu_assert_contains(moor_error_message(&b.err), "domain crash");
    vt_wait_state(&t, d, "shutoff");
    vt_assert_state(&t, d, "shutoff", "crashed");
    assert_true(vt_event_seen(&t, "\"reason\":\"crashed\""));
    vt_assert_gone(pid);

    /* it starts again */
    OK(start_running);
    pid = vt_pid(&t, d);
    OK(vmd_domain_destroy);
    vt_assert_gone(pid);
    moor_unref(d);
    vt_done(&t);
}

static void test_sigstop_times_out_then_fails_fast(void **state)
{
    struct vt t;
    struct json_object *out = NULL;
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    vt_init(&t, NULL, 500);
    vmd_domain *d = vt_define(&t, "frozen");
    OK(start_running);
    pid_t pid = vt_pid(&t, d);
    vt_freeze(pid);

    int64_t t0 = vt_now_ms();
    assert_int_equal(vmd_domain_stats(&t.vmd, d, &out, &err), -ETIMEDOUT);
    int64_t first = vt_now_ms() - t0;
    assert_true(first >= 450 && first < 5000);
    assert_null(out);

    t0 = vt_now_ms();
    assert_int_equal(vmd_domain_stats(&t.vmd, d, &out, &err), -ETIMEDOUT);
    assert_true(vt_now_ms() - t0 < 200);
    tu_assert_contains(moor_error_message(&err), "QEMU has not answered query-status for");
    assert_int_equal(vmd_domain_suspend(&t.vmd, d, &out, &err), -ETIMEDOUT);

    assert_int_equal(vmd_domain_state(&t.vmd, d, &out, &err), 0);
    tu_assert_contains(json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN),
                       "\"responsive\":false");
    json_object_put(out);
    out = NULL;

    /* destroy does not wait for the grace period: SIGKILL at once */
    t0 = vt_now_ms();
    OK(vmd_domain_destroy);
    assert_true(vt_now_ms() - t0 < 900);
    vt_assert_state(&t, d, "shutoff", "destroyed");
    vt_assert_gone(pid);
    moor_unref(d);
    vt_done(&t);
}

static void test_destroy_stopped_without_timeout(void **state)
{
    struct vt t;

    (void)state;
    vt_init(&t, NULL, 5000);
    vmd_domain *d = vt_define(&t, "stopped");
    OK(start_running);
    pid_t pid = vt_pid(&t, d);
    vt_freeze(pid); /* 'T' in /proc: SIGKILL at once, not SIGTERM and a 1 s grace */
    int64_t t0 = vt_now_ms();
    OK(vmd_domain_destroy);
    assert_true(vt_now_ms() - t0 < 900);
    vt_assert_state(&t, d, "shutoff", "destroyed");
    vt_assert_gone(pid);
    moor_unref(d);
    vt_done(&t);
}

static void test_reconnect_after_restart(void **state)
{
    struct vt t, t2;
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    vt_init(&t, NULL, 5000);
    vmd_domain *d = vt_define(&t, "r1");
    OK(start_running);
    pid_t p1 = vt_pid(&t, d);
    moor_unref(d);
    d = vt_define(&t, "r2");
    OK(start_paused);
    pid_t p2 = vt_pid(&t, d);
    moor_unref(d);
    moor_unref(vt_define(&t, "r3")); /* never started */

    char root[64];
    snprintf(root, sizeof(root), "%s", t.root);
    /* r2 as if the daemon died between fork and the status file naming
     * the pid: pid 0 there, and QEMU's -pidfile says which one it is. */
    d = vmd_domain_lookup(&t.vmd, "r2");
    struct vmd_status st;
    assert_int_equal(vmd_store_status_load(&t.vmd.opt, vmd_domain_uuid(d), &st, &err), 0);
    assert_int_equal(st.pid, p2);
    st.pid = 0;
    st.start_time = 0;
    assert_int_equal(vmd_store_status_save(&t.vmd.opt, vmd_domain_uuid(d), &st, &err), 0);
    vmd_status_clear(&st);
    moor_unref(d);
    vt_fini(&t); /* the daemon goes; QEMU stays */
    assert_int_equal(kill(p1, 0), 0);
    assert_int_equal(kill(p2, 0), 0);

    vt_init(&t2, root, 5000);
    assert_int_equal(vmd_domains_load(&t2.vmd, &err), 0);
    assert_int_equal(moor_registry_count(t2.vmd.domains), 3);
    d = vmd_domain_lookup(&t2.vmd, "r1");
    assert_non_null(d);
    vt_assert_state(&t2, d, "running", "reconnected");
    assert_int_equal(vt_pid(&t2, d), p1);
    assert_string_equal(stats_status(&t2, d), "running");
    struct json_object *out = NULL;
    assert_int_equal(vmd_domain_destroy(&t2.vmd, d, &out, &err), 0);
    json_object_put(out);
    vt_assert_gone(p1);
    moor_unref(d);

    d = vmd_domain_lookup(&t2.vmd, "r2");
    vt_assert_state(&t2, d, "paused", "reconnected");
    assert_int_equal(vt_pid(&t2, d), p2);
    assert_int_equal(vmd_domain_resume(&t2.vmd, d, &out, &err), 0);
    json_object_put(out);
    vt_assert_state(&t2, d, "running", "resumed");
    /* kill -9 of QEMU while adopted: no child of ours, the pidfd still tells */
    assert_int_equal(kill(p2, SIGKILL), 0);
    vt_wait_state(&t2, d, "shutoff");
    vt_assert_state(&t2, d, "shutoff", "crashed");
    vt_assert_gone(p2);
    moor_unref(d);

    d = vmd_domain_lookup(&t2.vmd, "r3");
    vt_assert_state(&t2, d, "shutoff", "defined");
    moor_unref(d);
    vt_fini(&t2);
    vt_rmrf(root);
}

static int shutdown_300ms(struct vmd *v, vmd_domain *d, struct json_object **out, moor_error *e)
{
    return vmd_domain_shutdown(v, d, 300, out, e);
}

static int qmp_quit(struct vmd *v, vmd_domain *d, struct json_object **out, moor_error *e)
{
    return vmd_domain_qmp(v, d, "quit", NULL, out, e);
}

static void test_shutdown_and_guest_quit(void **state)
{
    struct vt t;

    (void)state;
    vt_init(&t, NULL, 5000);
    vmd_domain *d = vt_define(&t, "down");
    OK(start_running);
    pid_t pid = vt_pid(&t, d);
    /* -machine none has no ACPI: the powerdown request changes nothing */
    int64_t t0 = vt_now_ms();
    FAILS(shutdown_300ms, -ETIMEDOUT, "domain down: shutdown: still running 0.3 s after");
    assert_true(vt_now_ms() - t0 >= 250);
    vt_assert_state(&t, d, "running", "booted");
    /* QEMU leaving on its own after SHUTDOWN is a shutdown, not a crash */
    OK(qmp_quit);
    vt_wait_state(&t, d, "shutoff");
    vt_assert_state(&t, d, "shutoff", "shutdown");
    assert_true(vt_event_seen(&t, "\"event\":\"SHUTDOWN\""));
    vt_assert_gone(pid);
    moor_unref(d);
    vt_done(&t);
}

static void test_argv(void **state)
{
    struct vmd_domain_config cfg;
    moor_error err = MOOR_ERROR_INIT;
    char **argv;

    (void)state;
    struct json_object *o =
        json_tokener_parse("{\"name\":\"a1\",\"machine\":\"q35\",\"accel\":\"tcg\",\"vcpus\":2,"
                           "\"memory_mib\":256,\"emulator\":\"/usr/bin/qemu-system-x86_64\","
                           "\"extra_args\":[\"-device\",\"x y\"]}");
    assert_int_equal(vmd_config_parse(o, &cfg, &err), 0);
    json_object_put(o);
    struct vmd_process_spec spec = {
        .cfg = &cfg, .pidfile = "/r/u.pid", .runas = "nobody", .log_path = "/l/a1.log"};
    assert_int_equal(vmd_process_argv(&spec, &argv, &err), 0);
    static const char *const want[] = {
        "/usr/bin/qemu-system-x86_64",
        "-S",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-name",
        "a1",
        "-machine",
        "q35,accel=tcg",
        "-m",
        "256",
        "-smp",
        "2",
        "-pidfile",
        "/r/u.pid",
        "-sandbox",
        "on,obsolete=deny,spawn=deny,resourcecontrol=deny", /* runas: no elevateprivileges */
        "-runas",
        "nobody",
        "-chardev",
        "socket,id=qmp,fd=3,server=on,wait=off",
        "-mon",
        "chardev=qmp,mode=control",
        "-device",
        "x y",
        NULL};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (!want[i]) {
            assert_null(argv[i]);
            break;
        }
        assert_non_null(argv[i]);
        assert_string_equal(argv[i], want[i]);
    }
    vmd_process_argv_free(argv);

    /* a bare name is looked up on PATH */
    free(cfg.emulator);
    cfg.emulator = strdup("no-such-emulator-here");
    assert_int_equal(vmd_process_argv(&spec, &argv, &err), -ENOENT);
    tu_assert_contains(moor_error_message(&err), "no-such-emulator-here' not found on PATH");
    vmd_config_clear(&cfg);
}

/* A command line far over 64 KiB (64 extra_args of 4 KiB are allowed) is
 * compared whole: equal, and unequal when only its last byte differs. */
static void test_cmdline_long(void **state)
{
    enum { N = 40, LEN = 4000 };
    static char big[N][LEN + 1];
    char *argv[N + 5];

    (void)state;
    argv[0] = "/bin/sh";
    argv[1] = "-c";
    argv[2] = "read x";
    argv[3] = "sh";
    for (int i = 0; i < N; i++) {
        memset(big[i], 'a' + i % 26, LEN);
        argv[4 + i] = big[i];
    }
    argv[N + 4] = NULL;
    int in[2];
    assert_int_equal(pipe(in), 0);
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) {
        dup2(in[0], 0);
        close(in[0]);
        close(in[1]); /* so that closing ours ends its read */
        execv(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    /* until the child has exec'd: its command line is then ours, bounded */
    int64_t deadline = vt_now_ms() + 10000;
    bool same;
    while (!(same = vmd_process_cmdline_is(p, argv)) && vt_now_ms() < deadline) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    big[N - 1][LEN - 1] = 'z';
    bool other = vmd_process_cmdline_is(p, argv);
    argv[N + 3] = NULL;
    bool shorter = vmd_process_cmdline_is(p, argv);
    close(in[1]); /* read x sees end of file: the shell exits */
    assert_int_equal(waitpid(p, NULL, 0), p);
    if (!same)
        fail_msg("a %d KiB command line was not recognised in 10 s", N * LEN / 1024);
    assert_false(other);
    assert_false(shorter);
}

/* ---- spawn: the pid is recorded before QEMU runs ----------------------- */

struct spawn_probe {
    char **argv;
    pid_t pid;
    bool execd_early; /* the child had exec'd before the callback ran */
    int rc;
};

static int probe_spawned(pid_t pid, void *opaque, moor_error *err)
{
    struct spawn_probe *p = opaque;
    p->pid = pid;
    p->execd_early = vmd_process_cmdline_is(pid, p->argv);
    return p->rc < 0 ? moor_error_set(err, p->rc, "refused by the test") : 0;
}

/* The child execs only after the parent's callback accepted its pid (a
 * daemon that dies before recording it leaves no QEMU behind); a refusal
 * means no exec at all, and the child is reaped. */
static void test_spawn_waits_for_record(void **state)
{
    char dir[] = "/tmp/vmd-spawn-XXXXXX", log[64], line[64] = "";
    char *argv[] = {"/bin/sh", "-c", "echo ran", NULL};
    moor_error err = MOOR_ERROR_INIT;
    pid_t pid = 0;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(log, sizeof(log), "%s/out.log", dir);
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);

    struct spawn_probe refused = {.argv = argv, .rc = -ECANCELED};
    assert_int_equal(vmd_process_spawn(argv, log, fd, probe_spawned, &refused, &pid, &err),
                     -ECANCELED);
    tu_assert_contains(moor_error_message(&err), "refused by the test");
    assert_true(refused.pid > 0);
    assert_false(refused.execd_early);
    assert_int_equal(kill(refused.pid, 0), -1); /* reaped */

    struct spawn_probe ok = {.argv = argv};
    assert_int_equal(vmd_process_spawn(argv, log, fd, probe_spawned, &ok, &pid, &err), 0);
    assert_int_equal(pid, ok.pid);
    assert_false(ok.execd_early);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    close(fd);
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof(line), f)); /* one run: the refused child never ran */
    assert_string_equal(line, "ran\n");
    assert_null(fgets(line, sizeof(line), f));
    fclose(f);
    vt_rmrf(dir);
}

/* The uid line ("Uid: real effective saved fs") of /proc/@pid/status. */
static void proc_uids(pid_t pid, char *buf, size_t size)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    buf[0] = '\0';
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "Uid:", 4) == 0)
            snprintf(buf, size, "%s", line);
    fclose(f);
}

/* --runas: QEMU starts, drops to the user after the sandbox is on, and
 * answers (the sandbox must not kill it for the set*id calls). Root only. */
static void test_start_runas(void **state)
{
    struct vt t;
    char uids[256];

    (void)state;
    if (geteuid() != 0)
        skip(); /* only root can make QEMU change user */
    struct passwd *pw = getpwnam("nobody");
    assert_non_null(pw);
    vt_init(&t, NULL, 5000);
    t.vmd.opt.runas = "nobody";
    vmd_domain *d = vt_define(&t, "dropped");
    OK(start_running);
    pid_t pid = vt_pid(&t, d);
    assert_true(pid > 0);
    assert_string_equal(stats_status(&t, d), "running");
    proc_uids(pid, uids, sizeof(uids));
    char want[64];
    snprintf(want, sizeof(want), "\t%u\t%u\t", (unsigned)pw->pw_uid, (unsigned)pw->pw_uid);
    tu_assert_contains(uids, want);
    OK(vmd_domain_destroy);
    vt_assert_state(&t, d, "shutoff", "destroyed");
    vt_assert_gone(pid);
    t.vmd.opt.runas = NULL; /* not ours to free */
    moor_unref(d);
    vt_done(&t);
}

/* Define @name (-machine none, tcg) with the extra config @fields. */
static vmd_domain *define_with(struct vt *t, const char *name, const char *fields)
{
    struct vmd_domain_config cfg;
    moor_error err = MOOR_ERROR_INIT;
    struct json_object *out = NULL;
    char text[512];

    snprintf(text, sizeof(text), "{\"name\":\"%s\",\"machine\":\"none\",\"accel\":\"tcg\",%s}",
             name, fields);
    struct json_object *o = json_tokener_parse(text);
    assert_non_null(o);
    assert_int_equal(vmd_config_parse(o, &cfg, &err), 0);
    json_object_put(o);
    assert_int_equal(vmd_domain_define(&t->vmd, &cfg, &out, &err), 0);
    json_object_put(out);
    vmd_domain *d = vmd_domain_lookup(&t->vmd, name);
    assert_non_null(d);
    return d;
}

static void test_start_failure(void **state)
{
    struct vt t;
    struct vmd_domain_config cfg;
    moor_error err = MOOR_ERROR_INIT;
    struct json_object *out = NULL;

    (void)state;
    vt_init(&t, NULL, 5000);
    /* QEMU refuses an unknown option and exits: start fails, shutoff (failed) */
    struct json_object *o = json_tokener_parse(
        "{\"name\":\"bad\",\"machine\":\"none\",\"accel\":\"tcg\",\"extra_args\":[\"-bogus\"]}");
    assert_int_equal(vmd_config_parse(o, &cfg, &err), 0);
    json_object_put(o);
    assert_int_equal(vmd_domain_define(&t.vmd, &cfg, &out, &err), 0);
    json_object_put(out);
    vmd_domain *d = vmd_domain_lookup(&t.vmd, "bad");
    assert_non_null(d);
    FAILS(start_running, -EPIPE, "domain bad: start: ");
    vt_assert_state(&t, d, "shutoff", "failed");
    assert_int_equal(vt_pid(&t, d), 0);
    /* its log says why */
    char log[256], line[512] = "";
    snprintf(log, sizeof(log), "%s/bad.log", t.vmd.opt.log_dir);
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    tu_assert_contains(line, "-bogus");
    moor_unref(d);

    /* A QEMU gone before the connect or during the handshake: -EPIPE either
     * way (true exits at once: mostly before the connect), naming the log */
    d = define_with(&t, "quick", "\"emulator\":\"/bin/true\"");
    for (int i = 0; i < 5; i++) {
        FAILS(start_running, -EPIPE, "domain quick: start: ");
        FAILS(start_running, -EPIPE, "/log/quick.log)");
    }
    vt_assert_state(&t, d, "shutoff", "failed");
    moor_unref(d);

    /* no such emulator: a bad config field (400), never "no such domain" */
    d = define_with(&t, "noemu", "\"emulator\":\"no-such-qemu-here\"");
    FAILS(start_running, -EINVAL, "emulator 'no-such-qemu-here' not found on PATH");
    vt_assert_state(&t, d, "shutoff", "failed");
    moor_unref(d);
    vt_done(&t);
}

/* A status file for @d claiming @pid runs @argv0. */
static void fake_status(struct vt *t, vmd_domain *d, pid_t pid, const char *argv0)
{
    char *argv[] = {(char *)argv0, NULL};
    struct vmd_status st = {.pid = pid, .start_time = 1, .argv = argv, .state = "running"};
    moor_error err = MOOR_ERROR_INIT;
    assert_int_equal(vmd_store_status_save(&t->vmd.opt, vmd_domain_uuid(d), &st, &err), 0);
}

static bool status_exists(struct vt *t, const moor_uuid *u)
{
    char path[PATH_MAX];
    assert_int_equal(vmd_store_runtime_path(&t->vmd.opt, u, ".status", path), 0);
    return access(path, F_OK) == 0;
}

static void test_load_cleans_up(void **state)
{
    struct vt t;
    moor_error err = MOOR_ERROR_INIT;
    char root[64];

    (void)state;
    vt_init(&t, NULL, 500);
    snprintf(root, sizeof(root), "%s", t.root);
    /* gone: a pid that exited */
    pid_t dead = fork();
    if (dead == 0)
        _exit(0);
    assert_int_equal(waitpid(dead, NULL, 0), dead);
    vmd_domain *gone = vt_define(&t, "gone");
    fake_status(&t, gone, dead, "/usr/bin/qemu-system-x86_64");
    /* alive but not ours: this very test process */
    vmd_domain *other = vt_define(&t, "other");
    fake_status(&t, other, getpid(), "/usr/bin/qemu-system-x86_64");
    /* ours but its domain's config is gone: killed, never left unmanaged */
    vmd_domain *orphan = vt_define(&t, "orphan");
    struct json_object *out = NULL;
    assert_int_equal(vmd_domain_start(&t.vmd, orphan, false, &out, &err), 0);
    json_object_put(out);
    pid_t p_orphan = vt_pid(&t, orphan);
    moor_uuid u_orphan = *vmd_domain_uuid(orphan), u_gone = *vmd_domain_uuid(gone),
              u_other = *vmd_domain_uuid(other);
    /* ours but hung: it cannot be reconnected, so it is killed too */
    vmd_domain *hung = vt_define(&t, "hung");
    assert_int_equal(vmd_domain_start(&t.vmd, hung, false, &out, &err), 0);
    json_object_put(out);
    pid_t p_hung = vt_pid(&t, hung);
    moor_unref(gone);
    moor_unref(other);
    moor_unref(orphan);
    moor_unref(hung);
    assert_int_equal(vmd_store_config_remove(&t.vmd.opt, &u_orphan, &err), 0);
    vt_fini(&t);
    vt_freeze(p_hung);

    /* a torn write's temporary file and a corrupt config are skipped */
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/state/domains/%s", root,
             "11111111-2222-4333-8444-555555555555.json");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"name\": \"torn", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/state/domains/x.json.tmp.1.2", root);
    assert_non_null(f = fopen(path, "w"));
    fclose(f);
    /* strays of interrupted atomic writes are deleted */
    char tmp_cfg[PATH_MAX], tmp_status[PATH_MAX];
    snprintf(tmp_cfg, sizeof(tmp_cfg), "%s/state/domains/%s", root,
             "11111111-2222-4333-8444-555555555555.json.tmp.77.3");
    assert_non_null(f = fopen(tmp_cfg, "w"));
    fclose(f);
    snprintf(tmp_status, sizeof(tmp_status), "%s/run/%s", root,
             "11111111-2222-4333-8444-555555555555.status.tmp.77.4");
    assert_non_null(f = fopen(tmp_status, "w"));
    fclose(f);
    /* a config whose uuid is not its file's, or has none, is refused */
    snprintf(path, sizeof(path), "%s/state/domains/%s", root,
             "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee.json");
    assert_non_null(f = fopen(path, "w"));
    fputs("{\"name\":\"copy\",\"uuid\":\"12345678-1234-4234-8234-123456789abc\"}", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/state/domains/%s", root,
             "bbbbbbbb-bbbb-4ccc-8ddd-eeeeeeeeeeee.json");
    assert_non_null(f = fopen(path, "w"));
    fputs("{\"name\":\"nouuid\"}", f);
    fclose(f);

    vt_init(&t, root, 500);
    int64_t t0 = vt_now_ms();
    assert_int_equal(vmd_domains_load(&t.vmd, &err), 0);
    assert_true(vt_now_ms() - t0 < 5000);
    assert_int_equal(moor_registry_count(t.vmd.domains), 3);
    assert_null(vmd_domain_lookup(&t.vmd, "copy"));
    assert_null(vmd_domain_lookup(&t.vmd, "nouuid"));
    assert_int_equal(access(tmp_cfg, F_OK), -1);
    assert_int_equal(access(tmp_status, F_OK), -1);
    vmd_domain *d = vmd_domain_lookup(&t.vmd, "gone");
    vt_assert_state(&t, d, "shutoff", "crashed");
    moor_unref(d);
    d = vmd_domain_lookup(&t.vmd, "other");
    vt_assert_state(&t, d, "shutoff", "crashed");
    moor_unref(d);
    d = vmd_domain_lookup(&t.vmd, "hung");
    vt_assert_state(&t, d, "shutoff", "failed");
    moor_unref(d);
    assert_null(vmd_domain_lookup(&t.vmd, "orphan"));
    assert_false(status_exists(&t, &u_gone));
    assert_false(status_exists(&t, &u_other));
    assert_false(status_exists(&t, &u_orphan));
    vt_assert_gone(p_orphan);
    vt_assert_gone(p_hung);
    assert_int_equal(kill(getpid(), 0), 0);
    vt_fini(&t);
    vt_rmrf(root);
}

struct hammer {
    struct vt *t;
    vmd_domain *d;
    int ok, failed;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < 25; i++) {
        struct json_object *out = NULL;
        moor_error err = MOOR_ERROR_INIT;
        if (vmd_domain_stats(&h->t->vmd, h->d, &out, &err) == 0)
            h->ok++;
        else
            h->failed++;
        json_object_put(out);
    }
    return NULL;
}

/* Shared QUERY jobs from four threads while the main thread suspends and
 * resumes (exclusive MODIFY jobs): every call succeeds, none starves. */
static void test_concurrent_ops(void **state)
{
    struct vt t;
    pthread_t th[4];
    struct hammer h[4];

    (void)state;
    vt_init(&t, NULL, 5000);
    vmd_domain *d = vt_define(&t, "busy");
    OK(start_running);
    pid_t pid = vt_pid(&t, d);
    for (int i = 0; i < 4; i++) {
        h[i] = (struct hammer){.t = &t, .d = d};
        assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
    }
    for (int i = 0; i < 10; i++) {
        OK(vmd_domain_suspend);
        OK(vmd_domain_resume);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(h[i].ok, 25);
        assert_int_equal(h[i].failed, 0);
    }
    vt_assert_state(&t, d, "running", "resumed");
    OK(vmd_domain_destroy);
    vt_assert_gone(pid);
    moor_unref(d);
    vt_done(&t);
}

/* ---- destroy never waits behind a job -------------------------------------- */

/* An op run on its own thread, timed. */
struct side_op {
    struct vt *t;
    vmd_domain *d;
    int (*fn)(struct vmd *, vmd_domain *, struct json_object **, moor_error *);
    int rc;
    int64_t took_ms;
    moor_error err;
};

static void *side_op_main(void *arg)
{
    struct side_op *s = arg;
    struct json_object *out = NULL;
    int64_t t0 = vt_now_ms();

    s->err = (moor_error)MOOR_ERROR_INIT;
    s->rc = s->fn(&s->t->vmd, s->d, &out, &s->err);
    s->took_ms = vt_now_ms() - t0;
    json_object_put(out);
    return NULL;
}

static int shutdown_60s(struct vmd *v, vmd_domain *d, struct json_object **out, moor_error *e)
{
    return vmd_domain_shutdown(v, d, 60000, out, e);
}

/* Wait (up to 10 s) until the info view shows a job held by @api. */
static void wait_job_held(struct vt *t, vmd_domain *d, const char *api)
{
    int64_t deadline = vt_now_ms() + 10000;

    for (;;) {
        struct json_object *o = NULL, *j, *v;
        moor_error err = MOOR_ERROR_INIT;
        assert_int_equal(vmd_domain_info(&t->vmd, d, &o, &err), 0);
        bool held = json_object_object_get_ex(o, "job", &j) &&
                    json_object_object_get_ex(j, "api", &v) &&
                    strcmp(json_object_get_string(v), api) == 0;
        json_object_put(o);
        if (held)
            return;
        if (vt_now_ms() > deadline)
            fail_msg("no job held by %s 10 s later", api);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

/*
 * Destroy while a MODIFY job (shutdown, waiting up to 60 s for a guest
 * that ignores ACPI) and then a QUERY job (stats, stuck in a call to a
 * frozen QEMU with a 60 s deadline) are held: destroy kills QEMU first,
 * so the holder's wait ends at once and destroy's job follows. The job
 * timeout (4 s) is what destroy would have hit had it waited behind them.
 */
static void destroy_beside(void **state, bool frozen)
{
    struct vt t;
    pthread_t th;

    (void)state;
    vt_init(&t, NULL, 60000);
    t.vmd.opt.job_timeout_ms = 4000;
    vmd_domain *d = vt_define(&t, frozen ? "hung" : "acpi");
    OK(start_running);
    pid_t pid = vt_pid(&t, d);
    if (frozen)
        vt_freeze(pid);
    struct side_op s = {.t = &t, .d = d, .fn = frozen ? vmd_domain_stats : shutdown_60s};
    assert_int_equal(pthread_create(&th, NULL, side_op_main, &s), 0);
    wait_job_held(&t, d, frozen ? "stats" : "shutdown");

    struct json_object *out = NULL;
    moor_error err = MOOR_ERROR_INIT;
    int64_t t0 = vt_now_ms();
    int rc = vmd_domain_destroy(&t.vmd, d, &out, &err);
    int64_t took = vt_now_ms() - t0;
    json_object_put(out);
    pthread_join(th, NULL);
    if (rc != 0)
        fail_msg("destroy beside %s: %d after %" PRId64 " ms: %s", frozen ? "stats" : "shutdown",
                 rc, took, moor_error_message(&err));
    assert_true(took < 4000); /* grace (1 s) + exit, never the job timeout */
    vt_assert_state(&t, d, "shutoff", "destroyed");
    vt_assert_gone(pid);
    /* the holder ended when QEMU did, not at its own deadline */
    assert_true(s.took_ms < 30000);
    if (frozen ? s.rc != -EPIPE : s.rc != 0 && s.rc != -EPIPE)
        fail_msg("%s beside destroy: %d %s", frozen ? "stats" : "shutdown", s.rc,
                 moor_error_message(&s.err));
    moor_unref(d);
    vt_done(&t);
}

static void test_destroy_beside_shutdown(void **state)
{
    destroy_beside(state, false);
}

static void test_destroy_beside_hung_stats(void **state)
{
    destroy_beside(state, true);
}

/* The daemon stopping ends a long shutdown wait at once (-EAGAIN: try
 * again later); QEMU keeps running. */
static void test_shutdown_ends_when_daemon_stops(void **state)
{
    struct vt t;
    pthread_t th;

    (void)state;
    vt_init(&t, NULL, 5000);
    vmd_domain *d = vt_define(&t, "stopping");
    OK(start_running);
    pid_t pid = vt_pid(&t, d);
    struct side_op s = {.t = &t, .d = d, .fn = shutdown_60s};
    assert_int_equal(pthread_create(&th, NULL, side_op_main, &s), 0);
    wait_job_held(&t, d, "shutdown");
    int64_t t0 = vt_now_ms();
    atomic_store(&t.vmd.stopping, true);
    pthread_join(th, NULL);
    int64_t took = vt_now_ms() - t0;
    if (s.rc != -EAGAIN)
        fail_msg("shutdown: %d %s", s.rc, moor_error_message(&s.err));
    tu_assert_contains(moor_error_message(&s.err), "moor-vmd is stopping");
    assert_true(took < 10000); /* a slice is 100 ms; the wait was 60 s */
    vt_assert_state(&t, d, "running", "booted");
    atomic_store(&t.vmd.stopping, false);
    OK(vmd_domain_destroy);
    vt_assert_gone(pid);
    moor_unref(d);
    vt_done(&t);
}

/* Raw QMP taints the domain, and the status file says so at once, so a
 * restarted daemon still knows. */
static void test_raw_qmp_taint_saved(void **state)
{
    struct vt t;
    struct json_object *out = NULL;
    moor_error err = MOOR_ERROR_INIT;
    struct vmd_status st = {0};

    (void)state;
    vt_init(&t, NULL, 5000);
    vmd_domain *d = vt_define(&t, "raw");
    OK(start_running);
    pid_t pid = vt_pid(&t, d);
    assert_int_equal(vmd_store_status_load(&t.vmd.opt, vmd_domain_uuid(d), &st, &err), 0);
    assert_false(st.tainted);
    vmd_status_clear(&st);
    assert_int_equal(vmd_domain_qmp(&t.vmd, d, "query-status", NULL, &out, &err), 0);
    json_object_put(out);
    assert_int_equal(vmd_store_status_load(&t.vmd.opt, vmd_domain_uuid(d), &st, &err), 0);
    assert_true(st.tainted);
    assert_int_equal(st.pid, pid);
    vmd_status_clear(&st);
    OK(vmd_domain_destroy);
    vt_assert_gone(pid);
    moor_unref(d);
    vt_done(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_state_table),
        VT_TEST(test_lifecycle),
        VT_TEST(test_start_paused),
        VT_TEST(test_sigkill_crashes_and_frees_waiters),
        VT_TEST(test_sigstop_times_out_then_fails_fast),
        VT_TEST(test_destroy_stopped_without_timeout),
        VT_TEST(test_reconnect_after_restart),
        VT_TEST(test_shutdown_and_guest_quit),
        TU_TEST(test_argv),
        TU_TEST(test_cmdline_long),
        TU_TEST(test_spawn_waits_for_record),
        VT_TEST(test_start_runas),
        VT_TEST(test_start_failure),
        VT_TEST(test_load_cleans_up),
        VT_TEST(test_concurrent_ops),
        VT_TEST(test_destroy_beside_shutdown),
        VT_TEST(test_destroy_beside_hung_stats),
        VT_TEST(test_shutdown_ends_when_daemon_stops),
        VT_TEST(test_raw_qmp_taint_saved),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
