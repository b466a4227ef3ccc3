/* SPDX-License-Identifier: MIT */
/*
 * test-api.c - moor-vmd as a black box over its real socket, on the fake
 * QEMU (tests/vmd/fake-qemu.c): every resource and every error status of
 * docs/vmd-api.md, the fault cases of the fake's fault script, a hung QEMU
 * with more callers on it than there are workers, a request from another
 * uid, and a kill -9 + restart with running domains.
 *
 * Each test starts its own daemon on fresh directories (harness.h) and ends
 * by destroying and undefining every domain, stopping the daemon with
 * SIGTERM (it must exit 0: its census is zero) and checking that no QEMU
 * process it started is left. A fault test also keeps a healthy bystander
 * domain and checks it still answers at the end.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <grp.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "vh-fx.h"

#define QMP_TIMEOUT_S "1" /* --qmp-timeout of the fault tests */
#define FAST_MS       500 /* "at once": a call that must not wait for QEMU */

static int fx_setup_flags(void **state, const char *const *flags)
{
    return vh_fx_setup(state, flags);
}

static int fx_setup(void **state)
{
    return fx_setup_flags(state, NULL);
}

static int fx_setup_faults(void **state)
{
    static const char *const flags[] = {"--qmp-timeout", QMP_TIMEOUT_S, "--job-timeout", "3", NULL};

    return fx_setup_flags(state, flags);
}

static int fx_setup_queue(void **state)
{
    static const char *const flags[] = {
        "--workers",     "2", "--domain-workers", "1", "--queue-max", "1",
        "--qmp-timeout", "2", "--job-timeout",    "3", NULL};

    return fx_setup_flags(state, flags);
}

static int fx_setup_hung(void **state)
{
    static const char *const flags[] = {"--workers", "4", "--qmp-timeout", "2", "--job-timeout",
                                        "3",         NULL};

    return fx_setup_flags(state, flags);
}

/* ---- small helpers ------------------------------------------------------- */

static void expect(struct vh_fx *fx, long status, const char *method, const char *path,
                   const char *body)
{
    if (vh_expect(fx->c, status, NULL, method, path, body ? "%s" : NULL, body) != 0)
        fail_msg("%s %s: expected %ld (see above)", method, path, status);
}

static void dom_path(char *buf, size_t size, const char *name, const char *sub)
{
    snprintf(buf, size, "/v1/domains/%s%s%s", name, sub ? "/" : "", sub ? sub : "");
}

static void op(struct vh_fx *fx, long status, const char *name, const char *sub, const char *body)
{
    char path[160];

    dom_path(path, sizeof(path), name, sub);
    expect(fx, status, "POST", path, body);
}

static void op_error(struct vh_fx *fx, long status, const char *code, const char *needle,
                     const char *name, const char *sub, const char *body)
{
    char path[160];

    dom_path(path, sizeof(path), name, sub);
    vh_fx_error(fx->c, status, code, needle, "POST", path, body);
}

static json_object *get(struct vh_fx *fx, const char *name, const char *sub)
{
    char path[160];

    dom_path(path, sizeof(path), name, sub);
    return vh_fx_json(fx->c, 200, "GET", path, NULL);
}

static void assert_state(struct vh_fx *fx, const char *name, const char *state, const char *reason)
{
    assert_int_equal(vh_wait_state(fx->c, name, state, reason), 0);
}

static void define_fake(struct vh_fx *fx, const char *name, const char *faults)
{
    assert_int_equal(vh_define_fake(&fx->d, fx->c, name, faults), 0);
}

static pid_t start(struct vh_fx *fx, const char *name, bool paused)
{
    pid_t pid = vh_start_domain(&fx->d, fx->c, name, paused);

    assert_true(pid > 0);
    assert_true(vh_pid_alive(pid));
    return pid;
}

/* A healthy domain that must keep answering while another one misbehaves. */
static void bystander_start(struct vh_fx *fx)
{
    define_fake(fx, "bystander", NULL);
    start(fx, "bystander", false);
}

static void bystander_check(struct vh_fx *fx)
{
    uint64_t t0 = vh_fx_now_ms();
    json_object *s = get(fx, "bystander", "stats");

    json_object_put(s);
    if (vh_fx_now_ms() - t0 > FAST_MS * 2)
        fail_msg("bystander stats took %llu ms", (unsigned long long)(vh_fx_now_ms() - t0));
    assert_state(fx, "bystander", "running", NULL);
}

static size_t domain_count(struct vh_fx *fx)
{
    json_object *l = vh_fx_json(fx->c, 200, "GET", "/v1/domains", NULL);
    size_t n = json_object_array_length(vh_json_get(l, "domains"));

    json_object_put(l);
    return n;
}

/* ---- resources ---------------------------------------------------------- */

static void test_version(void **state)
{
    struct vh_fx *fx = *state;
    json_object *v = vh_fx_json(fx->c, 200, "GET", "/v1/version", NULL);

    assert_non_null(vh_json_str(v, "version"));
    assert_true(*vh_json_str(v, "version"));
    assert_string_equal(vh_json_str(v, "api"), "v1");
    json_object_put(v);
}

static void test_define_list_info_undefine(void **state)
{
    struct vh_fx *fx = *state;
    json_object *l, *i, *by_uuid, *cfg;
    char uuid[40], body[PATH_MAX + 128], path[160];

    define_fake(fx, "vm-b", NULL);
    define_fake(fx, "vm-a", NULL);
    l = vh_fx_json(fx->c, 200, "GET", "/v1/domains", NULL);
    assert_int_equal(json_object_array_length(vh_json_get(l, "domains")), 2);
    assert_string_equal(
        vh_json_str(json_object_array_get_idx(vh_json_get(l, "domains"), 0), "name"),
        "vm-a"); /* sorted by name */
    assert_string_equal(
        vh_json_str(json_object_array_get_idx(vh_json_get(l, "domains"), 1), "state"), "shutoff");
    json_object_put(l);

    i = get(fx, "vm-a", NULL);
    assert_string_equal(vh_json_str(i, "state"), "shutoff");
    assert_string_equal(vh_json_str(i, "reason"), "defined");
    assert_false(json_object_get_boolean(vh_json_get(i, "tainted")));
    assert_null(vh_json_get(i, "pid"));
    cfg = vh_json_get(i, "config");
    assert_string_equal(vh_json_str(cfg, "name"), "vm-a");
    assert_int_equal(json_object_get_int(vh_json_get(cfg, "memory_mib")), 16);
    assert_int_equal(json_object_get_int(vh_json_get(cfg, "vcpus")), 1); /* default */
    assert_non_null(vh_json_str(i, "uuid"));
    snprintf(uuid, sizeof(uuid), "%s", vh_json_str(i, "uuid"));
    json_object_put(i);
    by_uuid = get(fx, uuid, NULL); /* {id} is a name or a uuid */
    assert_string_equal(vh_json_str(by_uuid, "name"), "vm-a");
    json_object_put(by_uuid);

    /* Taken name, taken uuid: 409 EEXIST naming the key; nothing changes. */
    snprintf(body, sizeof(body), "{\"name\":\"vm-a\",\"emulator\":\"%s\"}", fx->d.fake_qemu);
    vh_fx_error(fx->c, 409, "EEXIST", "vm-a", "POST", "/v1/domains", body);
    snprintf(body, sizeof(body), "{\"name\":\"vm-c\",\"uuid\":\"%s\"}", uuid);
    vh_fx_error(fx->c, 409, "EEXIST", NULL, "POST", "/v1/domains", body);
    /* A uuid given is kept. */
    expect(fx, 201, "POST", "/v1/domains",
           "{\"name\":\"vm-u\",\"uuid\":\"0f8fad5b-d9cb-469f-a165-70867728950e\"}");
    i = get(fx, "0f8fad5b-d9cb-469f-a165-70867728950e", NULL);
    assert_string_equal(vh_json_str(i, "name"), "vm-u");
    json_object_put(i);
    assert_int_equal(domain_count(fx), 3);

    dom_path(path, sizeof(path), uuid, NULL);
    expect(fx, 200, "DELETE", path, NULL);
    vh_fx_error(fx->c, 404, "ENOENT", NULL, "GET", "/v1/domains/vm-a", NULL);
    vh_fx_error(fx->c, 404, "ENOENT", NULL, "DELETE", "/v1/domains/vm-a", NULL);
    assert_int_equal(domain_count(fx), 2);
    /* The name is free again. */
    define_fake(fx, "vm-a", NULL);
    assert_int_equal(domain_count(fx), 3);
}

static void test_bad_input_400(void **state)
{
    static const char *const bodies[] = {
        "{",                                     /* malformed */
        "[]",                                    /* not an object */
        "\"vm\"",                                /* not an object */
        "{\"name\":\"vm1\",\"colour\":\"red\"}", /* unknown field */
        "{}",                                    /* name missing */
        "{\"name\":\"\"}",
        "{\"name\":\"a b\"}",
        "{\"name\":\"a/b\"}",
        "{\"name\":\"a\\u0001b\"}", /* control character */
        "{\"name\":\"a\\nb\"}",
        "{\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}", /* 65 */
        "{\"name\":\"vm1\",\"memory_mib\":0}",
        "{\"name\":\"vm1\",\"memory_mib\":\"128\"}",
        "{\"name\":\"vm1\",\"vcpus\":65}",
        "{\"name\":\"vm1\",\"machine\":\"isapc\"}",
        "{\"name\":\"vm1\",\"accel\":\"hvf\"}",
        "{\"name\":\"vm1\",\"uuid\":\"not-a-uuid\"}",
        "{\"name\":\"vm1\",\"emulator\":\"qemu\\u0007\"}",
        "{\"name\":\"vm1\",\"extra_args\":\"-S\"}",
        "{\"name\":\"vm1\",\"extra_args\":[1]}",
    };
    struct vh_fx *fx = *state;

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct vmctl_response r;

        if (vh_expect(fx->c, 400, &r, "POST", "/v1/domains", "%s", bodies[i]) != 0)
            fail_msg("define with body %s: expected 400", bodies[i]);
        assert_string_equal(r.error_code, "EINVAL");
        vmctl_response_clear(&r);
    }
    assert_int_equal(domain_count(fx), 0); /* nothing was defined */
    define_fake(fx, "vm1", NULL);
    /* Bad bodies on a domain's operations; bad ids. */
    op_error(fx, 400, "EINVAL", NULL, "vm1", "start", "{\"paused\":1}");
    op_error(fx, 400, "EINVAL", NULL, "vm1", "start", "{\"paused\":true,\"fast\":true}");
    op_error(fx, 400, "EINVAL", NULL, "vm1", "shutdown", "{\"timeout_ms\":\"soon\"}");
    op_error(fx, 400, "EINVAL", NULL, "vm1", "qmp", "{\"arguments\":{}}");
    op_error(fx, 400, "EINVAL", NULL, "vm1", "qmp", "{\"execute\":42}");
    vh_fx_error(fx->c, 400, "EINVAL", NULL, "GET", "/v1/domains/a%01b", NULL);
    assert_state(fx, "vm1", "shutoff", "defined");
}

/* Bodies over 1 MiB: 413. Nesting past the cap: 400. Nothing changes. */
static void test_limits_413_and_nesting(void **state)
{
    struct vh_fx *fx = *state;
    size_t big = (1u << 20) + 4096, depth = 64;
    char *body = malloc(big + 64), *deep = malloc(depth * 2 + 128), *p;

    assert_non_null(body);
    assert_non_null(deep);
    p = body + sprintf(body, "{\"name\":\"big\",\"extra_args\":[\"");
    memset(p, 'a', big);
    strcpy(p + big, "\"]}");
    vh_fx_error(fx->c, 413, "EMSGSIZE", NULL, "POST", "/v1/domains", body);
    free(body);

    p = deep + sprintf(deep, "{\"name\":\"deep\",\"extra_args\":");
    for (size_t i = 0; i < depth; i++)
        *p++ = '[';
    for (size_t i = 0; i < depth; i++)
        *p++ = ']';
    strcpy(p, "}");
    vh_fx_error(fx->c, 400, "EINVAL", NULL, "POST", "/v1/domains", deep);
    free(deep);
    vh_fx_error(fx->c, 404, "ENOENT", NULL, "GET", "/v1/domains/big", NULL);
    vh_fx_error(fx->c, 404, "ENOENT", NULL, "GET", "/v1/domains/deep", NULL);
    assert_int_equal(domain_count(fx), 0);
    /* And the daemon still serves. */
    define_fake(fx, "after", NULL);
}

static void test_routes_404_405(void **state)
{
    struct vh_fx *fx = *state;

    vh_fx_error(fx->c, 404, "ENOENT", "nosuch", "GET", "/v1/domains/nosuch", NULL);
    vh_fx_error(fx->c, 404, "ENOENT", NULL, "GET", "/v1/domains/nosuch/state", NULL);
    vh_fx_error(fx->c, 404, "ENOENT", NULL, "POST", "/v1/domains/nosuch/start", NULL);
    vh_fx_error(fx->c, 404, "ENOENT", NULL, "GET", "/v1/nothing", NULL);
    vh_fx_error(fx->c, 404, "ENOENT", NULL, "GET", "/v2/domains", NULL);
    define_fake(fx, "vm1", NULL);
    vh_fx_error(fx->c, 404, "ENOENT", NULL, "POST", "/v1/domains/vm1/explode", NULL);
    vh_fx_error(fx->c, 405, "EINVAL", NULL, "DELETE", "/v1/version", NULL);
    vh_fx_error(fx->c, 405, "EINVAL", NULL, "PUT", "/v1/domains", "{}");
    vh_fx_error(fx->c, 405, "EINVAL", NULL, "POST", "/v1/domains/vm1/state", NULL);
    vh_fx_error(fx->c, 405, "EINVAL", NULL, "GET", "/v1/domains/vm1/start", NULL);
    vh_fx_error(fx->c, 405, "EINVAL", NULL, "POST", "/v1/debug", NULL);
}

static void test_lifecycle(void **state)
{
    struct vh_fx *fx = *state;
    json_object *j;
    pid_t pid;

    define_fake(fx, "vm1", NULL);
    pid = start(fx, "vm1", true);
    assert_state(fx, "vm1", "paused", "starting");
    assert_int_equal(vh_domain_pid(fx->c, "vm1"), pid);
    op(fx, 200, "vm1", "resume", NULL);
    assert_state(fx, "vm1", "running", "resumed");
    op(fx, 200, "vm1", "suspend", NULL);
    assert_state(fx, "vm1", "paused", "user");
    op(fx, 200, "vm1", "resume", "{}");
    op(fx, 200, "vm1", "reset", NULL);
    assert_state(fx, "vm1", "running", "reset");

    j = get(fx, "vm1", "stats");
    assert_string_equal(vh_json_str(j, "name"), "vm1");
    assert_string_equal(vh_json_str(vh_json_get(j, "status"), "status"), "running");
    assert_int_equal(json_object_array_length(vh_json_get(j, "vcpus")), 1);
    assert_int_equal(json_object_get_int(vh_json_get(
                         json_object_array_get_idx(vh_json_get(j, "vcpus"), 0), "thread_id")),
                     pid); /* the fake's one thread */
    assert_non_null(vh_json_get(j, "block"));
    json_object_put(j);

    j = get(fx, "vm1", "state");
    assert_string_equal(vh_json_str(j, "name"), "vm1");
    assert_non_null(vh_json_str(j, "uuid"));
    assert_false(json_object_get_boolean(vh_json_get(j, "tainted")));
    assert_true(json_object_get_boolean(vh_json_get(vh_json_get(j, "monitor"), "responsive")));
    json_object_put(j);

    /* Shutdown: ACPI, the fake obeys, QEMU exits. */
    op(fx, 200, "vm1", "shutdown", "{\"timeout_ms\":5000}");
    assert_state(fx, "vm1", "shutoff", "shutdown");
    assert_int_equal(vh_wait_pid_gone(pid, VH_EXIT_MS), 0);

    /* Again, ended by destroy. */
    pid = start(fx, "vm1", false);
    assert_state(fx, "vm1", "running", "booted");
    op(fx, 200, "vm1", "destroy", NULL);
    assert_state(fx, "vm1", "shutoff", "destroyed");
    assert_int_equal(vh_wait_pid_gone(pid, VH_EXIT_MS), 0);
    expect(fx, 200, "DELETE", "/v1/domains/vm1", NULL);
}

static void test_wrong_state_409(void **state)
{
    struct vh_fx *fx = *state;

    define_fake(fx, "vm1", NULL);
    /* Not running: no QEMU to talk to. */
    op_error(fx, 409, "ENOTCONN", "vm1", "vm1", "suspend", NULL);
    op_error(fx, 409, "ENOTCONN", "vm1", "vm1", "resume", NULL);
    op_error(fx, 409, "ENOTCONN", "vm1", "vm1", "reset", NULL);
    op_error(fx, 409, "ENOTCONN", "vm1", "vm1", "shutdown", NULL);
    op_error(fx, 409, "ENOTCONN", "vm1", "vm1", "destroy", NULL);
    op_error(fx, 409, "ENOTCONN", "vm1", "vm1", "qmp", "{\"execute\":\"query-status\"}");
    vh_fx_error(fx->c, 409, "ENOTCONN", "vm1", "GET", "/v1/domains/vm1/stats", NULL);
    start(fx, "vm1", false);
    /* Running: no second start, no undefine. */
    op_error(fx, 409, "EBUSY", "vm1", "vm1", "start", NULL);
    vh_fx_error(fx->c, 409, "EBUSY", "vm1", "DELETE", "/v1/domains/vm1", NULL);
    /* Wrong state while running: resume needs it paused. */
    op_error(fx, 409, "EBUSY", "resume", "vm1", "resume", NULL);
    assert_state(fx, "vm1", "running", "booted");
    op(fx, 200, "vm1", "suspend", NULL);
    op_error(fx, 409, "EBUSY", "suspend", "vm1", "suspend", NULL);
    assert_state(fx, "vm1", "paused", "user");
}

static void test_qmp_passthrough(void **state)
{
    struct vh_fx *fx = *state;
    json_object *j;

    define_fake(fx, "vm1", NULL);
    start(fx, "vm1", false);
    j = vh_fx_json(fx->c, 200, "POST", "/v1/domains/vm1/qmp", "{\"execute\":\"query-status\"}");
    assert_string_equal(vh_json_str(vh_json_get(j, "return"), "status"), "running");
    json_object_put(j);
    j = get(fx, "vm1", "state");
    assert_true(json_object_get_boolean(vh_json_get(j, "tainted")));
    json_object_put(j);
    j = get(fx, "vm1", NULL);
    assert_true(json_object_get_boolean(vh_json_get(j, "tainted")));
    json_object_put(j);
    /* With arguments; a command QEMU does not know is QEMU's refusal. */
    j = vh_fx_json(fx->c, 200, "POST", "/v1/domains/vm1/qmp",
                   "{\"execute\":\"query-version\",\"arguments\":{}}");
    assert_non_null(vh_json_get(vh_json_get(j, "return"), "qemu"));
    json_object_put(j);
    op_error(fx, 502, "EREMOTEIO", "CommandNotFound", "vm1", "qmp", "{\"execute\":\"no-such\"}");
    /* A pass-through stop: the daemon learns of it from the STOP event. */
    expect(fx, 200, "POST", "/v1/domains/vm1/qmp", "{\"execute\":\"stop\"}");
    assert_state(fx, "vm1", "paused", NULL);
}

/* ---- events ------------------------------------------------------------- */

struct ev_reader {
    const struct vh_daemon *d;
    atomic_int lines;      /* lines seen so far */
    atomic_bool seen_stop; /* a qmp STOP line for ev1 */
    atomic_bool seen_off;  /* a lifecycle shutoff line for ev1 */
    atomic_bool seen_job;  /* a job begin line for ev1's suspend */
    atomic_bool seen_end;  /* a job end line for ev1's destroy: ok, with held_ms */
    atomic_bool bad;       /* a line that is not a well-formed event */
    char bad_line[256];
    long status;
};

static bool ev_line(const char *line, size_t len, void *opaque)
{
    struct ev_reader *r = opaque;
    json_object *j = json_tokener_parse(line);
    const char *type = vh_json_str(j, "type"), *dom = vh_json_str(j, "domain");

    (void)len;
    if (!j || !type || !vh_json_get(j, "seq") || !vh_json_str(j, "time")) {
        snprintf(r->bad_line, sizeof(r->bad_line), "%s", line);
        atomic_store(&r->bad, true);
    }
    if (type && dom && strcmp(dom, "ev1") == 0) {
        const char *ev = vh_json_str(j, "event"), *st = vh_json_str(j, "state");

        if (strcmp(type, "qmp") == 0 && ev && strcmp(ev, "STOP") == 0)
            atomic_store(&r->seen_stop, true);
        const char *why = vh_json_str(j, "reason");

        if (strcmp(type, "lifecycle") == 0 && st && strcmp(st, "shutoff") == 0 && why &&
            strcmp(why, "destroyed") == 0)
            atomic_store(&r->seen_off, true);
        const char *phase = vh_json_str(j, "phase"), *api = vh_json_str(j, "api");
        const char *res = vh_json_str(j, "result");

        if (strcmp(type, "job") == 0 && phase && api && strcmp(phase, "begin") == 0 &&
            strcmp(api, "suspend") == 0)
            atomic_store(&r->seen_job, true);
        if (strcmp(type, "job") == 0 && phase && api && res && strcmp(phase, "end") == 0 &&
            strcmp(api, "destroy") == 0 && strcmp(res, "ok") == 0 && vh_json_get(j, "held_ms"))
            atomic_store(&r->seen_end, true);
    }
    json_object_put(j);
    atomic_fetch_add(&r->lines, 1);
    return !(atomic_load(&r->seen_off) && atomic_load(&r->seen_end));
}

static void *ev_thread(void *arg)
{
    struct ev_reader *r = arg;
    struct vmctl_client *c = vmctl_client_new(r->d->socket_path, 20000, NULL);

    r->status = c ? vmctl_stream(c, "/v1/events", ev_line, r, NULL) : -ENOMEM;
    vmctl_client_free(c);
    return NULL;
}

static void test_events_stream(void **state)
{
    struct vh_fx *fx = *state;
    static struct ev_reader r; /* static: outlives a failed test's frame */
    pthread_t t;
    uint64_t end;

    memset(&r, 0, sizeof(r));
    r.d = &fx->d;
    define_fake(fx, "ev1", NULL);
    start(fx, "ev1", false);
    assert_int_equal(pthread_create(&t, NULL, ev_thread, &r), 0);
    /* The stream shows only what happens after it connected: suspend and
     * resume until a line arrives (bounded), then end the domain. */
    end = vh_fx_now_ms() + 10000;
    while (!atomic_load(&r.seen_stop) || !atomic_load(&r.seen_job)) {
        if (vh_fx_now_ms() > end)
            fail_msg("no STOP and suspend job lines of ev1 on /v1/events within 10 s");
        op(fx, 200, "ev1", "suspend", NULL);
        op(fx, 200, "ev1", "resume", NULL);
    }
    op(fx, 200, "ev1", "destroy", NULL);
    pthread_join(t, NULL); /* bounded: the stream client's 20 s timeout */
    if (atomic_load(&r.bad))
        fail_msg("malformed event line: %s", r.bad_line);
    assert_true(atomic_load(&r.seen_off));
    assert_true(atomic_load(&r.seen_job));
    assert_true(atomic_load(&r.seen_end));
    assert_int_equal(r.status, 200);
}

static void test_debug(void **state)
{
    struct vh_fx *fx = *state;
    json_object *j;

    define_fake(fx, "vm1", NULL);
    start(fx, "vm1", false);
    j = vh_fx_json(fx->c, 200, "GET", "/v1/debug", NULL);
    assert_non_null(vh_json_get(j, "census"));
    assert_non_null(vh_json_get(j, "jobs"));
    assert_non_null(vh_json_get(j, "monitors"));
    json_object_put(j);
}

/* ---- faults --------------------------------------------------------------- */

/* A stalled query-status: the first call waits one QMP deadline and gets
 * 504 naming the command; the next fail at once; state still answers. */
static void test_stall_504(void **state)
{
    struct vh_fx *fx = *state;
    struct vmctl_response r;
    json_object *j;
    uint64_t t0, dt;
    pid_t pid;

    bystander_start(fx);
    define_fake(fx, "hung", "stall:query-status");
    t0 = vh_fx_now_ms();
    assert_int_equal(vh_call(fx->c, &r, "POST", "/v1/domains/hung/start", NULL), 0);
    if (r.status == 200) {
        /* Start does not ask query-status: the first stats call meets the stall. */
        vmctl_response_clear(&r);
        pid = vh_domain_pid(fx->c, "hung");
        assert_true(pid > 0);
        vh_note_pid(&fx->d, pid);
        t0 = vh_fx_now_ms();
        vh_fx_error(fx->c, 504, "ETIMEDOUT", "query-status", "GET", "/v1/domains/hung/stats", NULL);
        dt = vh_fx_now_ms() - t0;
        assert_true(dt >= 900 && dt < 1000 * 3);
    } else {
        /* Start asked and met the stall: that was the first call. */
        assert_int_equal(r.status, 504);
        assert_non_null(strstr(r.error_message, "query-status"));
        vmctl_response_clear(&r);
        assert_true(vh_fx_now_ms() - t0 >= 900);
    }
    /* Every later call that needs QEMU fails at once, naming the command. */
    for (int i = 0; i < 3; i++) {
        t0 = vh_fx_now_ms();
        assert_int_equal(vh_call(fx->c, &r, "GET", "/v1/domains/hung/stats", NULL), 0);
        dt = vh_fx_now_ms() - t0;
        if (r.status == 504) {
            assert_non_null(strstr(r.error_message, "query-status"));
            if (dt > FAST_MS)
                fail_msg("second 504 took %llu ms", (unsigned long long)dt);
        } else {
            assert_int_equal(r.status, 409); /* start failed: shut off, no QEMU */
        }
        vmctl_response_clear(&r);
    }
    /* So does every op whose first act is a QMP call (answered before it
     * takes a worker: vmd_domain_fail_fast), naming the stuck command. */
    static const char *const qmp_first[][3] = {
        {"POST", "/v1/domains/hung/suspend", NULL},
        {"POST", "/v1/domains/hung/reset", NULL},
        {"POST", "/v1/domains/hung/shutdown", NULL},
        {"POST", "/v1/domains/hung/qmp", "{\"execute\":\"query-name\"}"}};
    for (size_t i = 0; i < sizeof(qmp_first) / sizeof(qmp_first[0]); i++) {
        t0 = vh_fx_now_ms();
        if (qmp_first[i][2])
            assert_int_equal(
                vh_call(fx->c, &r, qmp_first[i][0], qmp_first[i][1], "%s", qmp_first[i][2]), 0);
        else
            assert_int_equal(vh_call(fx->c, &r, qmp_first[i][0], qmp_first[i][1], NULL), 0);
        dt = vh_fx_now_ms() - t0;
        if (r.status == 504) {
            assert_non_null(strstr(r.error_message, "has not answered query-status"));
            if (dt > FAST_MS)
                fail_msg("%s: 504 took %llu ms", qmp_first[i][1], (unsigned long long)dt);
        } else {
            assert_int_equal(r.status, 409); /* start failed: shut off, no QEMU */
        }
        vmctl_response_clear(&r);
    }
    j = get(fx, "hung", "state");
    if (strcmp(vh_json_str(j, "state"), "shutoff") != 0)
        assert_false(json_object_get_boolean(vh_json_get(vh_json_get(j, "monitor"), "responsive")));
    json_object_put(j);
    bystander_check(fx);
    /* Destroy never waits for QMP. */
    t0 = vh_fx_now_ms();
    assert_int_equal(vh_call(fx->c, &r, "POST", "/v1/domains/hung/destroy", NULL), 0);
    assert_true(r.status == 200 || r.status == 409);
    vmctl_response_clear(&r);
    assert_true(vh_fx_now_ms() - t0 < 3000);
    assert_state(fx, "hung", "shutoff", NULL);
}

/* A late answer clears the unresponsive mark. */
static void test_late_reply_clears(void **state)
{
    struct vh_fx *fx = *state;
    json_object *j;
    uint64_t end;
    bool responsive = false;

    define_fake(fx, "slow", "late:query-name:1800");
    start(fx, "slow", false);
    op_error(fx, 504, "ETIMEDOUT", "query-name", "slow", "qmp", "{\"execute\":\"query-name\"}");
    end = vh_fx_now_ms() + 5000;
    while (!responsive) {
        if (vh_fx_now_ms() > end)
            fail_msg("monitor of 'slow' still unresponsive 5 s after its late reply");
        j = get(fx, "slow", "state");
        responsive = json_object_get_boolean(vh_json_get(vh_json_get(j, "monitor"), "responsive"));
        json_object_put(j);
        if (!responsive)
            poll(NULL, 0, 20); /* the reply is 0.8 s away: look again, bounded */
    }
    json_object_put(get(fx, "slow", "stats"));
}

/* QEMU refuses cont: 502 with QEMU's text; the domain stays paused. */
static void test_refused_cont_502(void **state)
{
    struct vh_fx *fx = *state;

    bystander_start(fx);
    define_fake(fx, "refuse", "error-on:cont");
    start(fx, "refuse", true);
    op_error(fx, 502, "EREMOTEIO", "cont", "refuse", "resume", NULL);
    assert_state(fx, "refuse", "paused", NULL);
    bystander_check(fx);
}

/* QEMU dies during cont: 502 EPIPE; the domain is shut off (crashed). */
static void test_death_during_cont_502(void **state)
{
    struct vh_fx *fx = *state;
    pid_t pid;

    bystander_start(fx);
    define_fake(fx, "dies", "die-on:cont");
    pid = start(fx, "dies", true);
    op_error(fx, 502, "EPIPE", "dies", "dies", "resume", NULL);
    assert_state(fx, "dies", "shutoff", "crashed");
    assert_int_equal(vh_wait_pid_gone(pid, VH_EXIT_MS), 0);
    op_error(fx, 409, NULL, "dies", "dies", "resume", NULL); /* nothing to talk to now */
    /* It can start again (without the fault it would run: here it dies again
     * on cont, so start paused). */
    start(fx, "dies", true);
    bystander_check(fx);
}

/* QEMU dies before the greeting: start fails, the domain is shut off. */
static void test_death_before_greeting(void **state)
{
    struct vh_fx *fx = *state;
    struct vmctl_response r;

    bystander_start(fx);
    define_fake(fx, "nogreet", "die-before-greeting");
    assert_int_equal(vh_call(fx->c, &r, "POST", "/v1/domains/nogreet/start", NULL), 0);
    assert_int_equal(r.status, 502); /* QEMU went away during the start */
    assert_string_equal(r.error_code, "EPIPE");
    assert_non_null(strstr(r.error_message, "nogreet"));
    vmctl_response_clear(&r);
    assert_state(fx, "nogreet", "shutoff", "failed");
    bystander_check(fx);
}

/* Garbage on the monitor: the call fails with an error object; the daemon
 * keeps serving and the domain ends in a documented state. */
static void test_garbage_reply(void **state)
{
    struct vh_fx *fx = *state;
    struct vmctl_response r;
    json_object *j;

    bystander_start(fx);
    define_fake(fx, "babble", "garbage-on:query-name");
    start(fx, "babble", false);
    assert_int_equal(
        vh_call(fx->c, &r, "POST", "/v1/domains/babble/qmp", "{\"execute\":\"query-name\"}"), 0);
    assert_int_equal(r.status, 502);
    assert_non_null(strstr(r.error_message, "query-name"));
    vmctl_response_clear(&r);
    /* QEMU lives on, unreachable: state says so (the monitor's end is
     * recorded by the loop thread just after the call failed: bounded wait). */
    uint64_t deadline = vh_fx_now_ms() + 5000;
    const char *why = NULL;
    for (;;) {
        j = get(fx, "babble", "state");
        assert_string_equal(vh_json_str(j, "state"), "running");
        json_object *m = vh_json_get(j, "monitor");
        assert_non_null(m);
        why = vh_json_str(m, "error");
        if (why) {
            assert_false(json_object_get_boolean(vh_json_get(m, "responsive")));
            json_object_put(j);
            break;
        }
        json_object_put(j);
        if (vh_fx_now_ms() >= deadline)
            fail_msg("the monitor's error on babble not seen within 5 s");
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    /* ... and so does /v1/debug's entry for its monitor. */
    j = vh_fx_json(fx->c, 200, "GET", "/v1/debug", NULL);
    bool seen = false;
    json_object *mons = vh_json_get(j, "monitors");
    for (size_t i = 0; mons && i < json_object_array_length(mons); i++) {
        json_object *m = json_object_array_get_idx(mons, i);
        if (strcmp(vh_json_str(m, "domain"), "babble") == 0) {
            assert_false(json_object_get_boolean(vh_json_get(m, "responsive")));
            assert_non_null(vh_json_str(m, "error"));
            seen = true;
        }
    }
    assert_true(seen);
    json_object_put(j);
    bystander_check(fx);
    /* Further calls fail at once with 502, and destroy ends it. */
    assert_int_equal(
        vh_call(fx->c, &r, "POST", "/v1/domains/babble/qmp", "{\"execute\":\"query-name\"}"), 0);
    assert_int_equal(r.status, 502);
    vmctl_response_clear(&r);
    op(fx, 200, "babble", "destroy", NULL);
    assert_state(fx, "babble", "shutoff", "destroyed");
}

/* A QEMU that ignores SIGTERM is SIGKILLed after the grace. */
static void test_destroy_ignoring_sigterm(void **state)
{
    struct vh_fx *fx = *state;
    uint64_t t0;
    pid_t pid;

    define_fake(fx, "stubborn", "ignore-sigterm");
    pid = start(fx, "stubborn", false);
    t0 = vh_fx_now_ms();
    op(fx, 200, "stubborn", "destroy", NULL);
    assert_true(vh_fx_now_ms() - t0 < 4000);
    assert_int_equal(vh_wait_pid_gone(pid, VH_EXIT_MS), 0);
    assert_state(fx, "stubborn", "shutoff", "destroyed");
}

/* A guest that ignores ACPI: shutdown reports the timeout; still running. */
static void test_shutdown_ignored_504(void **state)
{
    struct vh_fx *fx = *state;

    define_fake(fx, "deaf", "ignore-powerdown");
    start(fx, "deaf", false);
    op_error(fx, 504, "ETIMEDOUT", "deaf", "deaf", "shutdown", "{\"timeout_ms\":300}");
    assert_state(fx, "deaf", "running", NULL);
}

/* QEMU crashing (SIGKILL) or exiting on its own is noticed. */
static void test_crash_and_exit(void **state)
{
    struct vh_fx *fx = *state;
    pid_t a, b;

    bystander_start(fx);
    define_fake(fx, "crash", "crash-after-ms:300");
    define_fake(fx, "quit", "exit-after-ms:300");
    a = start(fx, "crash", false);
    b = start(fx, "quit", false);
    assert_state(fx, "crash", "shutoff", "crashed");
    assert_state(fx, "quit", "shutoff", "shutdown");
    assert_int_equal(vh_wait_pid_gone(a, VH_EXIT_MS), 0);
    assert_int_equal(vh_wait_pid_gone(b, VH_EXIT_MS), 0);
    op_error(fx, 409, NULL, "crash", "crash", "suspend", NULL);
    bystander_check(fx);
}

/* ---- a hung QEMU --------------------------------------------------------- */

#define HUNG_CALLERS 12 /* three times the daemon's 4 workers */

struct hung_caller {
    const struct vh_daemon *d;
    long status;
    uint64_t ms;
};

static void *hung_call(void *arg)
{
    struct hung_caller *h = arg;
    struct vmctl_client *c = vh_client_new(h->d);
    struct vmctl_response r;
    uint64_t t0 = vh_fx_now_ms();

    h->status = -1;
    if (c && vh_call(c, &r, "GET", "/v1/domains/frozen/stats", NULL) == 0) {
        h->status = r.status;
        if (r.status >= 300 && !r.error_message)
            h->status = -2; /* no error object */
        vmctl_response_clear(&r);
    }
    h->ms = vh_fx_now_ms() - t0;
    vmctl_client_free(c);
    return NULL;
}

static void test_hung_qemu(void **state)
{
    struct vh_fx *fx = *state;
    static struct hung_caller callers[HUNG_CALLERS]; /* outlive a failed test's frame */
    pthread_t threads[HUNG_CALLERS];
    static const char *const others[] = {"ok1", "ok2", "ok3"};
    uint64_t t0, worst = 0;
    pid_t frozen;

    for (size_t i = 0; i < 3; i++) {
        define_fake(fx, others[i], NULL);
        start(fx, others[i], false);
    }
    define_fake(fx, "frozen", NULL);
    frozen = start(fx, "frozen", false);
    assert_int_equal(kill(frozen, SIGSTOP), 0); /* as the demo freezes one */
    for (size_t i = 0; i < HUNG_CALLERS; i++) {
        callers[i] = (struct hung_caller){.d = &fx->d};
        assert_int_equal(pthread_create(&threads[i], NULL, hung_call, &callers[i]), 0);
    }
    /* Meanwhile the other domains answer, each call in bounded time (well
     * under the 2 s QMP deadline the frozen one's callers wait). */
    for (int round = 0; round < 10; round++) {
        for (size_t i = 0; i < 3; i++) {
            char path[160];
            uint64_t dt;

            t0 = vh_fx_now_ms();
            dom_path(path, sizeof(path), others[i], "stats");
            json_object_put(vh_fx_json(fx->c, 200, "GET", path, NULL));
            dt = vh_fx_now_ms() - t0;
            worst = dt > worst ? dt : worst;
        }
    }
    if (worst > 1500)
        fail_msg("a stats call on a healthy domain took %llu ms while one QEMU was frozen",
                 (unsigned long long)worst);
    /* The frozen one's state never waits: no job, no QEMU. */
    t0 = vh_fx_now_ms();
    json_object_put(get(fx, "frozen", "state"));
    if (vh_fx_now_ms() - t0 > FAST_MS)
        fail_msg("state of the frozen domain took %llu ms",
                 (unsigned long long)(vh_fx_now_ms() - t0));
    /* Once a call has timed out, a new one fails at once (504, naming the
     * command), even with the others still queued. */
    t0 = vh_fx_now_ms();
    for (;;) {
        struct vmctl_response r;
        uint64_t t1 = vh_fx_now_ms();
        long last;

        assert_int_equal(vh_call(fx->c, &r, "GET", "/v1/domains/frozen/stats", NULL), 0);
        if (r.status == 504 && vh_fx_now_ms() - t1 <= FAST_MS) {
            assert_non_null(strstr(r.error_message, "query-"));
            vmctl_response_clear(&r);
            break;
        }
        last = r.status;
        vmctl_response_clear(&r);
        if (vh_fx_now_ms() - t0 > 2000 + 3000 + 2000)
            fail_msg("stats on the frozen domain never failed fast (last: %ld after %llu ms)", last,
                     (unsigned long long)(vh_fx_now_ms() - t1));
    }
    /* Destroy of the frozen one returns within a bound, jumping the queue. */
    t0 = vh_fx_now_ms();
    op(fx, 200, "frozen", "destroy", NULL);
    if (vh_fx_now_ms() - t0 > 3000)
        fail_msg("destroy of a frozen QEMU took %llu ms",
                 (unsigned long long)(vh_fx_now_ms() - t0));
    assert_int_equal(vh_wait_pid_gone(frozen, VH_EXIT_MS), 0);
    for (size_t i = 0; i < HUNG_CALLERS; i++) {
        pthread_join(threads[i], NULL); /* each bounded: below */
        if (callers[i].ms > 2000 + 3000 + 2000)
            fail_msg("caller %zu on the frozen domain waited %llu ms", i,
                     (unsigned long long)callers[i].ms);
        switch (callers[i].status) {
        case 409: /* job wait ran out, or shut off by the destroy */
        case 502: /* QEMU went away during the call */
        case 503: /* the domain's queue was full */
        case 504: /* QMP deadline, or marked unresponsive */
            break;
        default:
            fail_msg("caller %zu on the frozen domain got %ld", i, callers[i].status);
        }
    }
    assert_state(fx, "frozen", "shutoff", "destroyed");
    for (size_t i = 0; i < 3; i++)
        assert_state(fx, others[i], "running", NULL);
}

/* A domain's queue is bounded: past it, callers are refused at once (503). */
static void test_queue_full_503(void **state)
{
    static struct hung_caller callers[6]; /* outlive a failed test's frame */
    pthread_t threads[6];
    struct vh_fx *fx = *state;
    unsigned refused = 0;
    pid_t frozen;

    define_fake(fx, "frozen", NULL);
    frozen = start(fx, "frozen", false);
    assert_int_equal(kill(frozen, SIGSTOP), 0);
    for (size_t i = 0; i < 6; i++) {
        callers[i] = (struct hung_caller){.d = &fx->d};
        assert_int_equal(pthread_create(&threads[i], NULL, hung_call, &callers[i]), 0);
    }
    for (size_t i = 0; i < 6; i++) {
        pthread_join(threads[i], NULL); /* each bounded by the QMP and job deadlines */
        if (callers[i].status == 503) {
            refused++;
            if (callers[i].ms > FAST_MS)
                fail_msg("a 503 took %llu ms", (unsigned long long)callers[i].ms);
        } else if (callers[i].status != 504 && callers[i].status != 409) {
            fail_msg("caller %zu got %ld", i, callers[i].status);
        }
    }
    /* One worker for the domain, one request queued: at least 6 - 2 refused,
     * unless a timeout already failed the next ones fast (504). */
    if (refused == 0)
        fail_msg("no 503 with 6 callers on a frozen domain, 1 worker and a queue of 1");
    op(fx, 200, "frozen", "destroy", NULL);
    assert_int_equal(vh_wait_pid_gone(frozen, VH_EXIT_MS), 0);
}

/* ---- security -------------------------------------------------------------- */

/* Send @req (with "Connection: close") on a new connection to @socket_path
 * and read the answer into @buf, NUL-ended: until the peer closes, @buf is
 * full, or, with @headers_only, the headers ended. Each read waits at most
 * 5 s. Returns 0, or 1 (connect), 2 (write). */
static int raw_request(const char *socket_path, const char *req, char *buf, size_t size,
                       bool headers_only)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t got = 0;
    int fd;

    buf[0] = '\0';
    if (strlen(socket_path) >= sizeof(sa.sun_path))
        return 1;
    memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (fd >= 0)
            close(fd);
        return 1;
    }
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        close(fd);
        return 2;
    }
    while (got + 1 < size && !(headers_only && strstr(buf, "\r\n\r\n"))) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t n;

        if (poll(&p, 1, 5000) != 1)
            break;
        n = read(fd, buf + got, size - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        buf[got] = '\0';
    }
    close(fd);
    return 0;
}

/* In a child as uid/gid 65534: one request; 0 if it got 403 EPERM. */
static int nobody_request(const char *socket_path)
{
    static const char req[] = "GET /v1/version HTTP/1.1\r\nHost: localhost\r\n"
                              "Connection: close\r\n\r\n";
    char buf[1024];
    int rc;

    if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
        return 90;
    rc = raw_request(socket_path, req, buf, sizeof(buf), false);
    if (rc)
        return 90 + rc;
    if (strncmp(buf, "HTTP/1.1 403", 12) != 0 && strncmp(buf, "HTTP/1.0 403", 12) != 0)
        return 93;
    return strstr(buf, "EPERM") ? 0 : 94;
}

/* Whether the daemon's log contains @needle. */
static bool log_has(const struct vh_daemon *d, const char *needle)
{
    FILE *f = fopen(d->log_path, "r");
    char line[1024];
    bool found = false;

    while (f && !found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return found;
}

static void test_security(void **state)
{
    struct vh_fx *fx = *state;
    struct stat st;
    pid_t child;
    int status;

    assert_int_equal(lstat(fx->d.socket_path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(stat(fx->d.runtime_dir, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    if (geteuid() != 0) {
        /* CI runs as root; a developer's unprivileged run cannot change uid. */
        fprintf(stderr, "test_security: other-uid part skipped: needs root to become nobody\n");
        skip();
    }
    /* The modes keep other users out before they reach the daemon; to test
     * the daemon's own check (SO_PEERCRED) the test opens them for a moment. */
    assert_int_equal(chmod(fx->d.root, 0711), 0);
    assert_int_equal(chmod(fx->d.runtime_dir, 0711), 0);
    assert_int_equal(chmod(fx->d.socket_path, 0666), 0);
    child = fork();
    assert_true(child >= 0);
    if (child == 0)
        _exit(nobody_request(fx->d.socket_path));
    assert_int_equal(waitpid(child, &status, 0), child); /* bounded: its poll */
    assert_int_equal(chmod(fx->d.socket_path, 0600), 0);
    assert_int_equal(chmod(fx->d.runtime_dir, 0700), 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("request as uid 65534: wait status 0x%x (90 setuid, 91 connect, 92 write, "
                 "93 not 403, 94 no EPERM code)",
                 status);
    assert_true(log_has(&fx->d, "uid 65534")); /* the refusal is logged */
    /* The daemon goes on serving its owner. */
    json_object_put(vh_fx_json(fx->c, 200, "GET", "/v1/version", NULL));
}

/* What the JSON client does not show: headers the contract names. */
static void test_headers(void **state)
{
    struct vh_fx *fx = *state;
    char buf[2048], req[PATH_MAX + 512], body[PATH_MAX + 128], want[80];
    json_object *i;

    snprintf(body, sizeof(body), "{\"name\":\"hdr\",\"emulator\":\"%s\"}", fx->d.fake_qemu);
    snprintf(req, sizeof(req),
             "POST /v1/domains HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    assert_int_equal(raw_request(fx->d.socket_path, req, buf, sizeof(buf), false), 0);
    assert_int_equal(strncmp(buf, "HTTP/1.1 201", 12), 0);
    i = get(fx, "hdr", NULL);
    snprintf(want, sizeof(want), "Location: /v1/domains/%s\r\n", vh_json_str(i, "uuid"));
    json_object_put(i);
    if (!strcasestr(buf, want))
        fail_msg("define: no '%s' in %s", want, buf);
    /* 405 lists what is allowed. */
    assert_int_equal(raw_request(fx->d.socket_path,
                                 "DELETE /v1/version HTTP/1.1\r\nHost: localhost\r\n"
                                 "Connection: close\r\n\r\n",
                                 buf, sizeof(buf), false),
                     0);
    assert_int_equal(strncmp(buf, "HTTP/1.1 405", 12), 0);
    if (!strcasestr(buf, "\r\nAllow: GET"))
        fail_msg("405 without 'Allow: GET': %s", buf);
    /* JSON answers say so; the event stream is ndjson. */
    assert_int_equal(raw_request(fx->d.socket_path,
                                 "GET /v1/domains HTTP/1.1\r\nHost: localhost\r\n"
                                 "Connection: close\r\n\r\n",
                                 buf, sizeof(buf), false),
                     0);
    if (!strcasestr(buf, "\r\nContent-Type: application/json"))
        fail_msg("GET /v1/domains: no JSON content type: %s", buf);
    assert_int_equal(raw_request(fx->d.socket_path,
                                 "GET /v1/events HTTP/1.1\r\nHost: localhost\r\n"
                                 "Connection: close\r\n\r\n",
                                 buf, sizeof(buf), true),
                     0);
    assert_int_equal(strncmp(buf, "HTTP/1.1 200", 12), 0);
    if (!strcasestr(buf, "\r\nContent-Type: application/x-ndjson"))
        fail_msg("GET /v1/events: not application/x-ndjson: %s", buf);
}

/* ---- restart ---------------------------------------------------------------- */

static void test_restart_reconnects(void **state)
{
    static const char *const names[] = {"r1", "r2", "r3", "r4"};
    struct vh_fx *fx = *state;
    pid_t pids[4];
    int status;

    for (size_t i = 0; i < 4; i++) {
        define_fake(fx, names[i], NULL);
        pids[i] = start(fx, names[i], i == 3);
    }
    define_fake(fx, "off", NULL);
    assert_int_equal(vh_kill9(&fx->d), 0);
    for (size_t i = 0; i < 4; i++)
        assert_true(vh_pid_alive(pids[i])); /* QEMU outlives the daemon */
    vmctl_client_free(fx->c);
    assert_int_equal(vh_start(&fx->d), 0);
    fx->c = vh_client_new(&fx->d);
    assert_non_null(fx->c);
    for (size_t i = 0; i < 4; i++) {
        assert_state(fx, names[i], i == 3 ? "paused" : "running", "reconnected");
        assert_int_equal(vh_domain_pid(fx->c, names[i]), pids[i]);
        json_object_put(get(fx, names[i], "stats")); /* the monitor answers */
    }
    assert_state(fx, "off", "shutoff", NULL);
    op(fx, 200, "r4", "resume", NULL);
    op(fx, 200, "r1", "suspend", NULL);

    /* SIGTERM: exit 0, QEMUs keep running; the next daemon finds them. */
    assert_int_equal(vh_stop(&fx->d, &status), 0);
    for (size_t i = 0; i < 4; i++)
        assert_true(vh_pid_alive(pids[i]));
    vmctl_client_free(fx->c);
    assert_int_equal(vh_start(&fx->d), 0);
    fx->c = vh_client_new(&fx->d);
    assert_non_null(fx->c);
    assert_state(fx, "r1", "paused", NULL);
    assert_state(fx, "r4", "running", NULL);
    /* A QEMU that died while no daemon ran is found gone. */
    assert_int_equal(vh_kill9(&fx->d), 0);
    kill(pids[1], SIGKILL);
    assert_int_equal(vh_wait_pid_gone(pids[1], VH_EXIT_MS), 0);
    vmctl_client_free(fx->c);
    assert_int_equal(vh_start(&fx->d), 0);
    fx->c = vh_client_new(&fx->d);
    assert_non_null(fx->c);
    assert_state(fx, "r2", "shutoff", NULL);
    assert_state(fx, "r3", "running", NULL);
}

/* ---- who holds what: GET /v1/debug's "moor" part and moor-vmctl debug ---------- */

static int fx_setup_long_qmp(void **state)
{
    static const char *const flags[] = {"--qmp-timeout", "20", "--job-timeout", "3", NULL};

    return fx_setup_flags(state, flags);
}

struct stuck_call {
    struct vh_daemon *d;
    long status;
};

/* A raw QMP call that meets the stall: it holds the domain's MODIFY job
 * (api "qmp") until destroy ends it. */
static void *stuck_qmp_main(void *arg)
{
    struct stuck_call *sc = arg;
    struct vmctl_client *c = vh_client_new(sc->d);
    struct vmctl_response r;

    if (c && vh_call(c, &r, "POST", "/v1/domains/held/qmp", "{\"execute\":\"query-name\"}") == 0) {
        sc->status = r.status;
        vmctl_response_clear(&r);
    }
    vmctl_client_free(c);
    return NULL;
}

/* Whether the library's part of /v1/debug shows the domain's job held by
 * the qmp API, and its monitor call pending. */
static bool debug_shows_holder(struct vh_fx *fx)
{
    json_object *j = vh_fx_json(fx->c, 200, "GET", "/v1/debug", NULL);
    json_object *jobs = vh_json_get(vh_json_get(j, "moor"), "jobs");
    bool held = false;

    for (size_t i = 0; jobs && i < json_object_array_length(jobs); i++) {
        json_object *e = json_object_array_get_idx(jobs, i);

        held |= strcmp(vh_json_str(e, "object"), "vmd_domain 'held'") == 0 &&
                strcmp(vh_json_str(e, "role"), "holds") == 0 &&
                strcmp(vh_json_str(e, "api"), "qmp") == 0;
    }
    json_object_put(j);
    return held;
}

/* moor-vmctl --socket SOCK debug; its standard output in @out. */
static void run_vmctl_debug(struct vh_fx *fx, char *out, size_t size)
{
    const char *vmctl = getenv("MOOR_VMCTL");
    size_t len = 0;
    int fds[2], status;
    ssize_t n;
    pid_t pid;

    if (!vmctl)
        fail_msg("MOOR_VMCTL is not set (meson test sets it)");
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl(vmctl, vmctl, "--socket", fx->d.socket_path, "debug", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    while (len + 1 < size && (n = read(fds[0], out + len, size - len - 1)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("moor-vmctl debug: status 0x%x, output:\n%s", status, out);
}

static void test_debug_shows_holder(void **state)
{
    struct vh_fx *fx = *state;
    struct stuck_call sc = {&fx->d, 0};
    char out[16384], line[256];
    uint64_t deadline;
    pthread_t t;

    define_fake(fx, "held", "stall:query-name");
    start(fx, "held", false);
    assert_int_equal(pthread_create(&t, NULL, stuck_qmp_main, &sc), 0);
    deadline = vh_fx_now_ms() + 10000;
    while (!debug_shows_holder(fx)) {
        if (vh_fx_now_ms() >= deadline)
            fail_msg("the held job did not show in /v1/debug within 10 s");
        poll(NULL, 0, 10);
    }
    run_vmctl_debug(fx, out, sizeof(out));
    if (!strstr(out, "Jobs held and waited for:\n  OBJECT") ||
        !strstr(out, "Monitor calls pending:\n  MONITOR"))
        fail_msg("no job or call table in:\n%s", out);
    /* The holder's row: object, role, kind, API, then its thread. */
    snprintf(line, sizeof(line), "vmd_domain 'held'  holds  MODIFY  qmp  ");
    if (!strstr(out, line) || !strstr(out, "query-name"))
        fail_msg("the holder (%s) or its QMP call is not in:\n%s", line, out);
    op(fx, 200, "held", "destroy", NULL);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(sc.status >= 500); /* QEMU went away under the call */
}

/* The end-of-test check is not vacuous: a QEMU left running is found,
 * counted and killed. */
static void test_harness_finds_leftovers(void **state)
{
    struct vh_fx *fx = *state;
    pid_t pid;

    define_fake(fx, "left", NULL);
    pid = start(fx, "left", false);
    assert_int_equal(vh_kill9(&fx->d), 0); /* nobody will destroy it now */
    assert_true(vh_pid_alive(pid));
    assert_int_equal(vh_finish(&fx->d), 1);
    assert_false(vh_pid_alive(pid));
}

#define T(fn)       cmocka_unit_test_setup_teardown(fn, fx_setup, vh_fx_teardown)
#define T_FAULT(fn) cmocka_unit_test_setup_teardown(fn, fx_setup_faults, vh_fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_version),
        T(test_define_list_info_undefine),
        T(test_bad_input_400),
        T(test_limits_413_and_nesting),
        T(test_routes_404_405),
        T(test_lifecycle),
        T(test_wrong_state_409),
        T(test_qmp_passthrough),
        T(test_events_stream),
        T(test_debug),
        T_FAULT(test_stall_504),
        T_FAULT(test_late_reply_clears),
        T_FAULT(test_refused_cont_502),
        T_FAULT(test_death_during_cont_502),
        T_FAULT(test_death_before_greeting),
        T_FAULT(test_garbage_reply),
        T_FAULT(test_destroy_ignoring_sigterm),
        T_FAULT(test_shutdown_ignored_504),
        T_FAULT(test_crash_and_exit),
        cmocka_unit_test_setup_teardown(test_hung_qemu, fx_setup_hung, vh_fx_teardown),
        cmocka_unit_test_setup_teardown(test_queue_full_503, fx_setup_queue, vh_fx_teardown),
        T(test_security),
        T(test_headers),
        T(test_restart_reconnects),
        T(test_harness_finds_leftovers),
        cmocka_unit_test_setup_teardown(test_debug_shows_holder, fx_setup_long_qmp, vh_fx_teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
