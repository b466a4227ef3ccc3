/* SPDX-License-Identifier: MIT */
/*
 * test-real-qemu.c - moor-vmd driving real qemu-system-x86_64 (-machine
 * none, TCG, 16 MiB: no guest, little CPU): the whole lifecycle over the
 * socket with the events it publishes, and a SIGKILL of the daemon with
 * three running domains followed by a restart that reconnects to all
 * three. A missing QEMU is a failure, never a skip (`make deps` installs
 * qemu-system-x86). After each test no QEMU it started is left, checked
 * pid by pid (harness.h, vh_finish).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "vh-fx.h"

static int rq_setup(void **state)
{
    static const char *const flags[] = {"--qmp-timeout", "10", NULL};

    return vh_fx_setup(state, flags);
}

static void post(struct vh_fx *rq, long status, const char *name, const char *op, const char *body)
{
    char path[160];

    snprintf(path, sizeof(path), "/v1/domains/%s/%s", name, op);
    if (vh_expect(rq->c, status, NULL, "POST", path, body ? "%s" : NULL, body) != 0)
        fail_msg("POST %s: expected %ld (see above)", path, status);
}

/* ---- events ------------------------------------------------------------- */

struct seen {
    const struct vh_daemon *d;
    atomic_uint mask; /* EV_* seen for "real1" */
    atomic_bool bad;
    long status;
};

enum {
    EV_PAUSED = 1u << 0,  /* lifecycle paused */
    EV_RUNNING = 1u << 1, /* lifecycle running */
    EV_STOP = 1u << 2,    /* qmp STOP */
    EV_RESUME = 1u << 3,  /* qmp RESUME */
    EV_RESET = 1u << 4,   /* qmp RESET */
    EV_OFF = 1u << 5,     /* lifecycle shutoff, once it ran (not "defined") */
};

static bool on_line(const char *line, size_t len, void *opaque)
{
    struct seen *s = opaque;
    json_object *j = json_tokener_parse(line);
    const char *type = vh_json_str(j, "type"), *dom = vh_json_str(j, "domain");
    const char *st = vh_json_str(j, "state"), *ev = vh_json_str(j, "event");
    const char *why = vh_json_str(j, "reason");
    unsigned bit = 0;

    (void)len;
    if (!j || !type || !vh_json_get(j, "seq"))
        atomic_store(&s->bad, true);
    if (type && dom && strcmp(dom, "real1") == 0) {
        if (strcmp(type, "lifecycle") == 0 && st)
            bit = !strcmp(st, "paused")                                          ? EV_PAUSED
                  : !strcmp(st, "running")                                       ? EV_RUNNING
                  : !strcmp(st, "shutoff") && why && strcmp(why, "defined") != 0 ? EV_OFF
                                                                                 : 0;
        if (strcmp(type, "qmp") == 0 && ev)
            bit = !strcmp(ev, "STOP")     ? EV_STOP
                  : !strcmp(ev, "RESUME") ? EV_RESUME
                  : !strcmp(ev, "RESET")  ? EV_RESET
                                          : 0;
    }
    atomic_fetch_or(&s->mask, bit);
    json_object_put(j);
    return !(atomic_load(&s->mask) & EV_OFF);
}

static void *events_thread(void *arg)
{
    struct seen *s = arg;
    struct vmctl_client *c = vmctl_client_new(s->d->socket_path, 60000, NULL);

    s->status = c ? vmctl_stream(c, "/v1/events", on_line, s, NULL) : -ENOMEM;
    vmctl_client_free(c);
    return NULL;
}

/* define -> start (paused) -> resume -> suspend -> resume -> stats ->
 * reset -> shutdown (machine none has no ACPI: refused in time, or obeyed)
 * -> destroy -> undefine, with the events of each step on /v1/events. */
static void test_lifecycle(void **state)
{
    struct vh_fx *rq = *state;
    static struct seen s; /* static: outlives a failed test's frame (its thread may still run) */
    struct vmctl_response r;
    pthread_t t;
    pid_t pid;
    unsigned want = EV_PAUSED | EV_RUNNING | EV_STOP | EV_RESUME | EV_RESET | EV_OFF;
    time_t end;

    memset(&s, 0, sizeof(s));
    s.d = &rq->d;
    assert_int_equal(pthread_create(&t, NULL, events_thread, &s), 0);
    assert_int_equal(vh_define_real(&rq->d, rq->c, "real1"), 0);
    pid = vh_start_domain(&rq->d, rq->c, "real1", true);
    assert_true(pid > 0);
    assert_int_equal(vh_wait_state(rq->c, "real1", "paused", "starting"), 0);
    /* The stream reports only what happens after it connected: resume and
     * suspend until its first STOP line shows it is there (bounded). */
    end = time(NULL) + 10;
    while (!(atomic_load(&s.mask) & EV_STOP)) {
        if (time(NULL) > end)
            fail_msg("/v1/events showed no STOP of real1 within 10 s");
        post(rq, 200, "real1", "resume", NULL);
        post(rq, 200, "real1", "suspend", NULL);
    }
    post(rq, 200, "real1", "resume", NULL);
    assert_int_equal(vh_wait_state(rq->c, "real1", "running", NULL), 0);
    post(rq, 200, "real1", "suspend", NULL);
    assert_int_equal(vh_wait_state(rq->c, "real1", "paused", "user"), 0);
    post(rq, 200, "real1", "resume", NULL);
    assert_int_equal(vh_expect(rq->c, 200, &r, "GET", "/v1/domains/real1/stats", NULL), 0);
    assert_string_equal(vh_json_str(vh_json_get(r.json, "status"), "status"), "running");
    assert_non_null(vh_json_get(r.json, "vcpus"));
    assert_non_null(vh_json_get(r.json, "block"));
    vmctl_response_clear(&r);
    post(rq, 200, "real1", "reset", NULL);
    assert_int_equal(vh_wait_state(rq->c, "real1", "running", NULL), 0);
    assert_int_equal(
        vh_call(rq->c, &r, "POST", "/v1/domains/real1/shutdown", "{\"timeout_ms\":1000}"), 0);
    assert_true(r.status == 200 || r.status == 504);
    if (r.status == 504) /* no ACPI on -machine none: the guest cannot obey */
        post(rq, 200, "real1", "destroy", NULL);
    vmctl_response_clear(&r);
    assert_int_equal(vh_wait_state(rq->c, "real1", "shutoff", NULL), 0);
    assert_int_equal(vh_wait_pid_gone(pid, VH_EXIT_MS), 0);
    assert_int_equal(vh_expect(rq->c, 200, NULL, "DELETE", "/v1/domains/real1", NULL), 0);
    pthread_join(t, NULL); /* bounded: the stream client's 60 s timeout */
    assert_false(atomic_load(&s.bad));
    if ((atomic_load(&s.mask) & want) != want)
        fail_msg("events seen for real1: 0x%x, expected 0x%x", atomic_load(&s.mask), want);
}

/* SIGKILL of the daemon with three running domains; the restarted daemon
 * reconnects to all three, which then answer and can be destroyed. */
static void test_kill9_restart_three(void **state)
{
    static const char *const names[] = {"q1", "q2", "q3"};
    struct vh_fx *rq = *state;
    struct vmctl_response r;
    pid_t pids[3];

    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(vh_define_real(&rq->d, rq->c, names[i]), 0);
        pids[i] = vh_start_domain(&rq->d, rq->c, names[i], false);
        assert_true(pids[i] > 0);
    }
    assert_int_equal(vh_kill9(&rq->d), 0);
    for (size_t i = 0; i < 3; i++)
        assert_true(vh_pid_alive(pids[i]));
    vmctl_client_free(rq->c);
    assert_int_equal(vh_start(&rq->d), 0);
    rq->c = vh_client_new(&rq->d);
    assert_non_null(rq->c);
    for (size_t i = 0; i < 3; i++) {
        char path[160];

        assert_int_equal(vh_wait_state(rq->c, names[i], "running", "reconnected"), 0);
        assert_int_equal(vh_domain_pid(rq->c, names[i]), pids[i]);
        snprintf(path, sizeof(path), "/v1/domains/%s/stats", names[i]);
        assert_int_equal(vh_expect(rq->c, 200, &r, "GET", path, NULL), 0);
        vmctl_response_clear(&r);
    }
    post(rq, 200, "q2", "suspend", NULL);
    assert_int_equal(vh_wait_state(rq->c, "q2", "paused", NULL), 0);
    for (size_t i = 0; i < 3; i++) {
        post(rq, 200, names[i], "destroy", NULL);
        assert_int_equal(vh_wait_pid_gone(pids[i], VH_EXIT_MS), 0);
    }
}

/* Poll GET job until no job runs; the last job's result must be @want. */
static void wait_job(struct vh_fx *rq, const char *name, const char *want)
{
    char path[128];
    struct timespec pause = {0, 50 * 1000000L};

    snprintf(path, sizeof(path), "/v1/domains/%s/job", name);
    for (int i = 0; i < 1200; i++) { /* 60 s */
        struct vmctl_response r;
        assert_int_equal(vh_expect(rq->c, 200, &r, "GET", path, NULL), 0);
        if (!json_object_get_boolean(vh_json_get(r.json, "active"))) {
            json_object *last = vh_json_get(r.json, "last");
            const char *res = vh_json_str(last, "result");
            if (!res || strcmp(res, want) != 0)
                fail_msg("%s: job ended %s: %s", name, res ? res : "?", r.body);
            vmctl_response_clear(&r);
            return;
        }
        vmctl_response_clear(&r);
        nanosleep(&pause, NULL);
    }
    fail_msg("%s: the job did not end in 60 s", name);
}

/* A running pc guest of 256 MiB: save, then restore from the file alone;
 * QEMU's own query-status says running afterwards. */
static void test_save_restore_pc(void **state)
{
    struct vh_fx *rq = *state;
    char file[PATH_MAX], body[PATH_MAX + 32];

    assert_int_equal(vh_expect(rq->c, 201, NULL, "POST", "/v1/domains",
                               "{\"name\":\"pc1\",\"machine\":\"pc\",\"accel\":\"tcg\","
                               "\"memory_mib\":256}"),
                     0);
    pid_t pid = vh_start_domain(&rq->d, rq->c, "pc1", false);
    assert_true(pid > 0);
    snprintf(file, sizeof(file), "%s/pc1.save", rq->d.root);
    snprintf(body, sizeof(body), "{\"path\":\"%s\"}", file);
    assert_int_equal(vh_expect(rq->c, 202, NULL, "POST", "/v1/domains/pc1/save", "%s", body), 0);
    wait_job(rq, "pc1", "completed");
    assert_int_equal(vh_wait_state(rq->c, "pc1", "shutoff", "saved"), 0);
    assert_int_equal(vh_wait_pid_gone(pid, VH_EXIT_MS), 0);
    assert_int_equal(vh_expect(rq->c, 202, NULL, "POST", "/v1/domains/restore", "%s", body), 0);
    wait_job(rq, "pc1", "completed");
    assert_int_equal(vh_wait_state(rq->c, "pc1", "running", "restored"), 0);
    pid = vh_domain_pid(rq->c, "pc1");
    assert_true(pid > 0);
    vh_note_pid(&rq->d, pid);
    struct vmctl_response r;
    assert_int_equal(
        vh_expect(rq->c, 200, &r, "POST", "/v1/domains/pc1/qmp", "{\"execute\":\"query-status\"}"),
        0);
    json_object *ret = vh_json_get(r.json, "return");
    assert_string_equal(vh_json_str(ret, "status"), "running");
    vmctl_response_clear(&r);
    unlink(file);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lifecycle, rq_setup, vh_fx_teardown),
        cmocka_unit_test_setup_teardown(test_kill9_restart_three, rq_setup, vh_fx_teardown),
        cmocka_unit_test_setup_teardown(test_save_restore_pc, rq_setup, vh_fx_teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    if (!vh_program_found("qemu-system-x86_64", "REAL_QEMU")) {
        fprintf(stderr, "test-real-qemu: FAIL: qemu-system-x86_64 is not installed (make deps "
                        "installs qemu-system-x86); this suite never skips\n");
        return 1;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
