/* SPDX-License-Identifier: MIT */
/*
 * test-longjobs.c - save, restore, job info and abort as a black box over
 * the daemon's socket, on the fake QEMU (its migration commands and
 * faults: tests/vmd/fake-qemu.c): the round trip, queries answered while a
 * job runs (restore too), the refusals, an abort in each phase, QEMU dying
 * or hanging mid-save, a full disk, and the daemon killed mid-save and
 * mid-restore then restarted, and a restore on a QEMU that answers no QMP
 * while its stream has bytes (the fake's greedy-load). Every case ends in
 * a documented state (docs/vmd.md, "Long jobs") with no stray file.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "vh-fx.h"

#define FAST_MS     500   /* "at once": an answer that must not wait for the job */
#define JOB_WAIT_MS 20000 /* the most a fake job may take in these tests */
#define MIB         (1024 * 1024)
/* 16 MiB at 4 MiB/s: a transfer of about 4 s, long enough to act during it. */
#define SLOW "migrate-bw:4194304"

struct fx {
    struct vh_daemon d;
    struct vmctl_client *c;
    char file[PATH_MAX]; /* <root>/vm.save */
};

static int fx_setup(void **state)
{
    static const char *const flags[] = {"--qmp-timeout", "1", "--job-timeout", "5", NULL};
    struct fx *fx = calloc(1, sizeof(*fx));

    assert_non_null(fx);
    vh_fx_open(&fx->d, &fx->c, flags);
    snprintf(fx->file, sizeof(fx->file), "%s/vm.save", fx->d.root);
    *state = fx;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *fx = *state;
    int rc = vh_fx_close(&fx->d, fx->c);

    free(fx);
    assert_int_equal(rc, 0);
    return 0;
}

static void reconnect(struct fx *fx)
{
    vmctl_client_free(fx->c);
    fx->c = vh_client_new(&fx->d);
    assert_non_null(fx->c);
}

/* ---- helpers -------------------------------------------------------------- */

static void save(struct fx *fx, const char *name, const char *extra)
{
    char path[128], body[PATH_MAX + 64];

    snprintf(path, sizeof(path), "/v1/domains/%s/save", name);
    snprintf(body, sizeof(body), "{\"path\":\"%s\"%s}", fx->file, extra ? extra : "");
    json_object_put(vh_fx_json(fx->c, 202, "POST", path, body));
}

static void restore(struct fx *fx, bool paused)
{
    char body[PATH_MAX + 64];

    snprintf(body, sizeof(body), "{\"path\":\"%s\"%s}", fx->file, paused ? ",\"paused\":true" : "");
    json_object_put(vh_fx_json(fx->c, 202, "POST", "/v1/domains/restore", body));
}

/* Poll the job until its phase is @phase (and, for "transfer", some bytes
 * moved). Fails after JOB_WAIT_MS. */
static void wait_phase(struct fx *fx, const char *name, const char *phase)
{
    uint64_t end = vh_fx_now_ms() + JOB_WAIT_MS;

    for (;;) {
        json_object *j = vh_fx_job(fx->c, name), *cur = vh_json_get(j, "job");
        const char *p = cur ? vh_json_str(cur, "phase") : NULL;
        bool moved = cur && json_object_get_int64(vh_json_get(cur, "bytes_done")) > 0;
        bool ok = p && strcmp(p, phase) == 0 && (strcmp(phase, "transfer") != 0 || moved);
        json_object_put(j);
        if (ok)
            return;
        if (vh_fx_now_ms() > end)
            fail_msg("%s: job never reached phase %s", name, phase);
        vh_fx_sleep_ms(10);
    }
}

/* Poll until no job runs; the last job's outcome (a new reference). */
static json_object *wait_end(struct fx *fx, const char *name)
{
    return vh_fx_wait_job_end(fx->c, name, "job", JOB_WAIT_MS);
}

static void assert_result(json_object *last, const char *result, const char *needle)
{
    vh_fx_job_result(last, "job", result, needle);
    json_object_put(last);
}

static void assert_state(struct fx *fx, const char *name, const char *state, const char *reason)
{
    assert_int_equal(vh_wait_state(fx->c, name, state, reason), 0);
}

static bool file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* A GET that must answer at once while a job runs. */
static void quick(struct fx *fx, const char *name, const char *sub)
{
    char path[128];
    uint64_t t0 = vh_fx_now_ms();

    snprintf(path, sizeof(path), "/v1/domains/%s/%s", name, sub);
    json_object_put(vh_fx_json(fx->c, 200, "GET", path, NULL));
    if (vh_fx_now_ms() - t0 > FAST_MS)
        fail_msg("GET %s took %llu ms during a job", path,
                 (unsigned long long)(vh_fx_now_ms() - t0));
}

static pid_t define_start(struct fx *fx, const char *name, const char *faults)
{
    assert_int_equal(vh_define_fake(&fx->d, fx->c, name, faults), 0);
    pid_t pid = vh_start_domain(&fx->d, fx->c, name, false);
    assert_true(pid > 0);
    return pid;
}

/* ---- the event stream --------------------------------------------------------- */

struct watch {
    struct fx *fx;
    pthread_t thread;
    atomic_bool transfer, completed, bad;
    atomic_bool ready; /* the stream answered: its first line, or a wake-up */
    long status;
};

/* job-progress lines of domain "vm": a transfer, then the completed end. */
static bool on_line(const char *line, size_t len, void *opaque)
{
    struct watch *w = opaque;
    json_object *j = json_tokener_parse(line), *job = vh_json_get(j, "job");
    const char *type = vh_json_str(j, "type"), *dom = vh_json_str(j, "domain");

    (void)len;
    if (type && dom && !strcmp(type, "job-progress") && !strcmp(dom, "vm")) {
        const char *phase = vh_json_str(job, "phase"), *res = vh_json_str(job, "result");
        if (!phase || !vh_json_get(job, "bytes_done"))
            atomic_store(&w->bad, true);
        if (phase && !strcmp(phase, "transfer"))
            atomic_store(&w->transfer, true);
        if (res && !strcmp(res, "completed") && vh_json_str(job, "kind") &&
            !strcmp(vh_json_str(job, "kind"), "save"))
            atomic_store(&w->completed, true);
    }
    json_object_put(j);
    return !atomic_load(&w->completed);
}

static void *watch_main(void *arg)
{
    struct watch *w = arg;
    struct vmctl_client *c = vh_client_new(&w->fx->d);

    w->status = c ? vmctl_stream(c, "/v1/events", on_line, w, NULL) : -ENOMEM;
    vmctl_client_free(c);
    return NULL;
}

/* ---- tests ------------------------------------------------------------------ */

/* Save then restore; queries answer during both; the file is ours. */
static void test_round_trip(void **state)
{
    struct fx *fx = *state;
    pid_t pid = define_start(fx, "vm", SLOW);
    char body[PATH_MAX + 64];

    struct watch w = {.fx = fx};
    assert_int_equal(pthread_create(&w.thread, NULL, watch_main, &w), 0);
    /* The stream starts at the next event: wait until the daemon counts it. */
    for (uint64_t end = vh_fx_now_ms() + JOB_WAIT_MS;; vh_fx_sleep_ms(10)) {
        json_object *dbg = vh_fx_json(fx->c, 200, "GET", "/v1/debug", NULL);
        int n = json_object_get_int(vh_json_get(vh_json_get(dbg, "http"), "streams"));
        json_object_put(dbg);
        if (n == 1)
            break;
        if (vh_fx_now_ms() > end)
            fail_msg("the event stream never opened");
    }
    save(fx, "vm", NULL);
    wait_phase(fx, "vm", "transfer");
    assert_state(fx, "vm", "paused", "saving");
    json_object *cur = vh_fx_job(fx->c, "vm"),
                *who = vh_json_get(vh_json_get(cur, "job"), "client");
    assert_int_equal(json_object_get_int(vh_json_get(who, "pid")), getpid()); /* SO_PEERCRED */
    assert_int_equal(json_object_get_int(vh_json_get(who, "uid")), getuid());
    assert_true(json_object_get_int64(vh_json_get(vh_json_get(cur, "job"), "bytes_total")) > 0);
    json_object_put(cur);
    cur = vh_fx_json(fx->c, 200, "GET", "/v1/domains/vm", NULL); /* info names the long job too */
    assert_string_equal(vh_json_str(vh_json_get(cur, "job"), "kind"), "ASYNC");
    assert_string_equal(vh_json_str(vh_json_get(cur, "job"), "api"), "save");
    json_object_put(cur);
    quick(fx, "vm", "state");
    quick(fx, "vm", "stats");
    quick(fx, "vm", "job");
    /* A second save is refused, naming the running one. */
    snprintf(body, sizeof(body), "{\"path\":\"%s.2\"}", fx->file);
    vh_fx_error(fx->c, 409, "EBUSY", "save job", "POST", "/v1/domains/vm/save", body);
    /* So is anything that changes the domain, after the job wait. */
    assert_result(wait_end(fx, "vm"), "completed", NULL);
    assert_state(fx, "vm", "shutoff", "saved");
    assert_int_equal(vh_wait_pid_gone(pid, VH_EXIT_MS), 0);
    pthread_join(w.thread, NULL); /* ends at the completed line (or the client's bound) */
    assert_true(atomic_load(&w.transfer));
    assert_true(atomic_load(&w.completed));
    assert_false(atomic_load(&w.bad));

    /* The save shortened QEMU's final stop-the-world write (docs/vmd.md,
     * "Queries during a save"): the fake logs the downtime-limit it got. */
    char log[PATH_MAX + 16], line[512];
    bool downtime = false;
    snprintf(log, sizeof(log), "%s/log/vm.log", fx->d.state_dir);
    FILE *lf = fopen(log, "r");
    assert_non_null(lf);
    while (!downtime && fgets(line, sizeof(line), lf))
        downtime = strstr(line, "migrate-set-parameters: downtime-limit 10 ms") != NULL;
    fclose(lf);
    assert_true(downtime);

    /* The header and QEMU's stream: 4096 + 24 + 16 MiB. */
    struct stat sb;
    assert_int_equal(stat(fx->file, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(sb.st_size, 4096 + 24 + 16 * MIB);
    FILE *f = fopen(fx->file, "rb");
    char magic[9] = "";
    assert_non_null(f);
    assert_int_equal(fread(magic, 1, 8, f), 8);
    fclose(f);
    assert_string_equal(magic, "MOORSAVE");

    restore(fx, false);
    wait_phase(fx, "vm", "transfer");
    assert_state(fx, "vm", "paused", "restoring");
    quick(fx, "vm", "state");
    quick(fx, "vm", "stats"); /* beyond libvirt: queries during an incoming migration */
    assert_result(wait_end(fx, "vm"), "completed", NULL);
    assert_state(fx, "vm", "running", "restored");
    assert_true(file_exists(fx->file)); /* restore never removes its input */
    pid = vh_domain_pid(fx->c, "vm");
    assert_true(pid > 0);
    vh_note_pid(&fx->d, pid);

    /* The file alone is enough: an undefined domain is defined again. */
    json_object_put(vh_fx_json(fx->c, 200, "POST", "/v1/domains/vm/destroy", NULL));
    json_object_put(vh_fx_json(fx->c, 200, "DELETE", "/v1/domains/vm", NULL));
    restore(fx, true);
    assert_result(wait_end(fx, "vm"), "completed", NULL);
    assert_state(fx, "vm", "paused", "restored");
    vh_note_pid(&fx->d, vh_domain_pid(fx->c, "vm"));
    unlink(fx->file);
}

static void test_refusals(void **state)
{
    struct fx *fx = *state;
    char body[PATH_MAX + 64];

    assert_int_equal(vh_define_fake(&fx->d, fx->c, "off", NULL), 0);
    vh_fx_error(fx->c, 400, "EINVAL", "path", "POST", "/v1/domains/off/save", "{\"path\":\"rel\"}");
    vh_fx_error(fx->c, 400, "EINVAL", "path", "POST", "/v1/domains/off/save",
                "{\"path\":\"/tmp/../etc/x\"}");
    vh_fx_error(fx->c, 400, "EINVAL", "unknown", "POST", "/v1/domains/off/save",
                "{\"path\":\"/tmp/x\",\"force\":true}");
    vh_fx_error(fx->c, 400, "EINVAL", "bandwidth", "POST", "/v1/domains/off/save",
                "{\"path\":\"/tmp/x\",\"bandwidth_mib_s\":0}");
    vh_fx_error(fx->c, 400, "EINVAL", NULL, "POST", "/v1/domains/off/save", NULL);
    snprintf(body, sizeof(body), "{\"path\":\"%s\"}", fx->file);
    vh_fx_error(fx->c, 409, "ENOTCONN", "save", "POST", "/v1/domains/off/save", body);
    vh_fx_error(fx->c, 404, "ENOENT", "no job", "DELETE", "/v1/domains/off/job", NULL);

    define_start(fx, "on", NULL);
    snprintf(body, sizeof(body), "{\"path\":\"%s/missing/vm.save\"}", fx->d.root);
    vh_fx_error(fx->c, 404, "ENOENT", "missing", "POST", "/v1/domains/on/save", body);
    FILE *f = fopen(fx->file, "w"); /* save never overwrites */
    assert_non_null(f);
    fclose(f);
    snprintf(body, sizeof(body), "{\"path\":\"%s\"}", fx->file);
    vh_fx_error(fx->c, 409, "EEXIST", "exists", "POST", "/v1/domains/on/save", body);
    /* Restore of something that is not a save file, or not there. */
    vh_fx_error(fx->c, 400, "EINVAL", "not a moor-vmd save file", "POST", "/v1/domains/restore",
                body);
    unlink(fx->file);
    vh_fx_error(fx->c, 404, "ENOENT", NULL, "POST", "/v1/domains/restore", body);
    assert_state(fx, "on", "running", NULL);
    json_object *j = vh_fx_job(fx->c, "on");
    assert_false(json_object_get_boolean(vh_json_get(j, "active")));
    json_object_put(j);
}

/* Abort in each phase of a save: the domain runs again, no file left. */
static void abort_save_in(struct fx *fx, const char *name, const char *faults, const char *phase)
{
    char path[128];

    define_start(fx, name, faults);
    save(fx, name, NULL);
    wait_phase(fx, name, phase);
    snprintf(path, sizeof(path), "/v1/domains/%s/job", name);
    json_object *j = vh_fx_json(fx->c, 200, "DELETE", path, NULL);
    assert_true(json_object_get_boolean(vh_json_get(vh_json_get(j, "job"), "abort_requested")));
    json_object_put(j);
    assert_result(wait_end(fx, name), "cancelled", "aborted");
    assert_state(fx, name, "running", NULL);
    assert_false(file_exists(fx->file));
}

static void test_abort_save_setup(void **state)
{
    /* getfd answered late: the abort arrives while the job sets up. */
    abort_save_in(*state, "a1", SLOW ",late:getfd:600", "setup");
}

static void test_abort_save_pause(void **state)
{
    /* stop answered late: the abort arrives while the job pauses the guest. */
    abort_save_in(*state, "a0", SLOW ",late:stop:600", "pause");
}

/* Abort a restore while it sets up (getfd answered late). */
static void test_abort_restore_setup(void **state)
{
    struct fx *fx = *state;

    define_start(fx, "rs", SLOW ",late:getfd:600");
    save(fx, "rs", ",\"bandwidth_mib_s\":256");
    assert_result(wait_end(fx, "rs"), "completed", NULL);
    restore(fx, false);
    wait_phase(fx, "rs", "setup");
    pid_t pid = vh_domain_pid(fx->c, "rs");
    assert_true(pid > 0);
    vh_note_pid(&fx->d, pid);
    json_object_put(vh_fx_json(fx->c, 200, "DELETE", "/v1/domains/rs/job", NULL));
    assert_result(wait_end(fx, "rs"), "cancelled", NULL);
    assert_state(fx, "rs", "shutoff", "saved");
    assert_int_equal(vh_wait_pid_gone(pid, VH_EXIT_MS), 0);
    assert_true(file_exists(fx->file));
    unlink(fx->file);
}

static void test_abort_save_transfer(void **state)
{
    abort_save_in(*state, "a2", SLOW, "transfer");
}

/* @name saved (fast), then restoring (slowly) from the file: in the
 * transfer phase on return. Returns the restore's QEMU pid (noted). */
static pid_t restoring(struct fx *fx, const char *name)
{
    define_start(fx, name, SLOW);
    save(fx, name, ",\"bandwidth_mib_s\":256");
    assert_result(wait_end(fx, name), "completed", NULL);
    restore(fx, false);
    wait_phase(fx, name, "transfer");
    pid_t pid = vh_domain_pid(fx->c, name);
    assert_true(pid > 0);
    vh_note_pid(&fx->d, pid);
    return pid;
}

/* Abort a restore mid-transfer: QEMU killed, shut off as before, file kept. */
static void test_abort_restore(void **state)
{
    struct fx *fx = *state;

    pid_t pid = restoring(fx, "r");
    json_object_put(vh_fx_json(fx->c, 200, "DELETE", "/v1/domains/r/job", NULL));
    assert_result(wait_end(fx, "r"), "cancelled", NULL);
    assert_state(fx, "r", "shutoff", "saved");
    assert_int_equal(vh_wait_pid_gone(pid, VH_EXIT_MS), 0);
    assert_true(file_exists(fx->file));
    unlink(fx->file);
}

static void test_qemu_dies_mid_save(void **state)
{
    struct fx *fx = *state;

    define_start(fx, "d", SLOW ",die-mid-migrate");
    save(fx, "d", NULL);
    assert_result(wait_end(fx, "d"), "failed", NULL);
    assert_state(fx, "d", "shutoff", "crashed");
    assert_false(file_exists(fx->file));
}

/* QEMU hangs mid-save: the job fails after one monitor deadline; destroy
 * works at once; no file. */
static void test_stall_mid_save(void **state)
{
    struct fx *fx = *state;

    define_start(fx, "s", SLOW ",stall-mid-migrate");
    uint64_t t0 = vh_fx_now_ms();
    save(fx, "s", NULL);
    assert_result(wait_end(fx, "s"), "failed", "no reply");
    assert_true(vh_fx_now_ms() - t0 < 10000);
    assert_false(file_exists(fx->file));
    assert_state(fx, "s", "paused", NULL);
    t0 = vh_fx_now_ms();
    json_object_put(vh_fx_json(fx->c, 200, "POST", "/v1/domains/s/destroy", NULL));
    if (vh_fx_now_ms() - t0 > 2 * FAST_MS)
        fail_msg("destroy of a hung QEMU took %llu ms", (unsigned long long)(vh_fx_now_ms() - t0));
    assert_state(fx, "s", "shutoff", "destroyed");
}

static void test_disk_full(void **state)
{
    struct fx *fx = *state;

    define_start(fx, "full", "fsize-limit:1048576");
    save(fx, "full", NULL);
    assert_result(wait_end(fx, "full"), "failed", "File too large");
    assert_state(fx, "full", "running", "resumed");
    assert_false(file_exists(fx->file));
}

static void test_destroy_mid_save(void **state)
{
    struct fx *fx = *state;

    define_start(fx, "k", SLOW);
    save(fx, "k", NULL);
    wait_phase(fx, "k", "transfer");
    uint64_t t0 = vh_fx_now_ms();
    json_object_put(vh_fx_json(fx->c, 200, "POST", "/v1/domains/k/destroy", NULL));
    assert_true(vh_fx_now_ms() - t0 < 3000);
    assert_result(wait_end(fx, "k"), "failed", NULL);
    assert_state(fx, "k", "shutoff", "destroyed");
    assert_false(file_exists(fx->file));
}

/* Destroy mid-restore: shut off (destroyed), the file kept. */
static void test_destroy_mid_restore(void **state)
{
    struct fx *fx = *state;

    restoring(fx, "kd");
    json_object_put(vh_fx_json(fx->c, 200, "POST", "/v1/domains/kd/destroy", NULL));
    assert_result(wait_end(fx, "kd"), "failed", NULL);
    assert_state(fx, "kd", "shutoff", "destroyed");
    assert_true(file_exists(fx->file));
    unlink(fx->file);
}

/* The daemon dies mid-save; the next one cancels the save, resumes the
 * guest and removes the partial file. */
static void test_kill9_mid_save(void **state)
{
    struct fx *fx = *state;
    pid_t pid = define_start(fx, "ks", SLOW);

    save(fx, "ks", NULL);
    wait_phase(fx, "ks", "transfer");
    assert_int_equal(vh_kill9(&fx->d), 0);
    assert_true(vh_pid_alive(pid));
    assert_int_equal(vh_start(&fx->d), 0);
    reconnect(fx);
    assert_state(fx, "ks", "running", NULL);
    assert_int_equal(vh_domain_pid(fx->c, "ks"), pid);
    assert_false(file_exists(fx->file));
    json_object *j = vh_fx_job(fx->c, "ks");
    assert_false(json_object_get_boolean(vh_json_get(j, "active")));
    json_object_put(j);
}

/* The daemon dies mid-restore; the next one kills the incoming QEMU and
 * shuts the domain off (failed); the save file stays. */
static void test_kill9_mid_restore(void **state)
{
    struct fx *fx = *state;

    pid_t pid = restoring(fx, "kr");
    assert_int_equal(vh_kill9(&fx->d), 0);
    assert_int_equal(vh_start(&fx->d), 0);
    reconnect(fx);
    assert_state(fx, "kr", "shutoff", "failed");
    assert_int_equal(vh_wait_pid_gone(pid, VH_EXIT_MS), 0);
    assert_true(file_exists(fx->file));
    unlink(fx->file);
}

/* SIGTERM mid-save: the daemon exits 0 and leaves the job to the next one. */
static void test_sigterm_mid_save(void **state)
{
    struct fx *fx = *state;
    int status;
    pid_t pid = define_start(fx, "t", SLOW);

    save(fx, "t", NULL);
    wait_phase(fx, "t", "transfer");
    assert_int_equal(vh_stop(&fx->d, &status), 0);
    assert_true(vh_pid_alive(pid));
    assert_int_equal(vh_start(&fx->d), 0);
    reconnect(fx);
    assert_state(fx, "t", "running", NULL);
    assert_false(file_exists(fx->file));
}

/* Beyond libvirt, against a QEMU that answers no QMP while its incoming
 * stream has bytes to read (as QEMU 7.2's loading coroutine does): the
 * restore's feeder holds the stream back while a QMP call waits, so stats
 * is answered mid-transfer, by a QEMU still "inmigrate". A feeder that kept
 * the pipe full would leave every call unanswered for the whole 2 s load,
 * past the 1 s QMP deadline (504), and fail the job's own query-migrate. */
static void test_restore_greedy_qemu(void **state)
{
    struct fx *fx = *state;
    unsigned inmigrate = 0;

    /* 16 MiB loaded at 8 MiB/s: 2 s; the save is not throttled. */
    define_start(fx, "g", "migrate-bw:8388608,greedy-load");
    save(fx, "g", ",\"bandwidth_mib_s\":1024");
    assert_result(wait_end(fx, "g"), "completed", NULL);
    restore(fx, false);
    wait_phase(fx, "g", "transfer");
    vh_note_pid(&fx->d, vh_domain_pid(fx->c, "g"));
    for (unsigned i = 0; i < 200 && inmigrate < 5; i++) {
        json_object *st = vh_fx_json(fx->c, 200, "GET", "/v1/domains/g/stats", NULL);
        const char *s = vh_json_str(vh_json_get(st, "status"), "status");
        assert_non_null(s);
        json_object *j = vh_fx_job(fx->c, "g"), *cur = vh_json_get(j, "job");
        const char *phase = cur ? vh_json_str(cur, "phase") : NULL;
        /* QEMU leaves "inmigrate" only once it has loaded it all */
        if (phase && strcmp(phase, "transfer") == 0 && strcmp(s, "inmigrate") == 0)
            inmigrate++;
        json_object_put(j);
        json_object_put(st);
        if (!phase)
            break;
    }
    if (inmigrate < 5)
        fail_msg("stats answered mid-transfer %u times, expected 5", inmigrate);
    assert_result(wait_end(fx, "g"), "completed", NULL);
    assert_state(fx, "g", "running", "restored");
    unlink(fx->file);
}

/* A save on a QEMU whose monitor is marked unresponsive fails at once
 * with 504 naming the stuck command, as the other QMP-first ops do: no
 * 202 for a job that could only fail, no file. */
static void test_save_hung(void **state)
{
    struct fx *fx = *state;
    char body[PATH_MAX + 64];

    define_start(fx, "h", "stall:query-name");
    vh_fx_error(fx->c, 504, "ETIMEDOUT", "query-name", "POST", "/v1/domains/h/qmp",
                "{\"execute\":\"query-name\"}");
    snprintf(body, sizeof(body), "{\"path\":\"%s\"}", fx->file);
    uint64_t t0 = vh_fx_now_ms();
    vh_fx_error(fx->c, 504, "ETIMEDOUT", "query-name", "POST", "/v1/domains/h/save", body);
    if (vh_fx_now_ms() - t0 > FAST_MS)
        fail_msg("save on a hung QEMU took %llu ms", (unsigned long long)(vh_fx_now_ms() - t0));
    assert_false(file_exists(fx->file));
    json_object *j = vh_fx_job(fx->c, "h");
    assert_false(json_object_get_boolean(vh_json_get(j, "active")));
    assert_null(vh_json_get(j, "last"));
    json_object_put(j);
    assert_state(fx, "h", "running", NULL);
}

/* Restore from a FIFO: refused at once (400), without a worker stuck in
 * open() waiting for a writer. */
static void test_restore_fifo(void **state)
{
    struct fx *fx = *state;
    char body[PATH_MAX + 64];

    assert_int_equal(mkfifo(fx->file, 0600), 0);
    snprintf(body, sizeof(body), "{\"path\":\"%s\"}", fx->file);
    uint64_t t0 = vh_fx_now_ms();
    vh_fx_error(fx->c, 400, "EINVAL", "not a regular file", "POST", "/v1/domains/restore", body);
    if (vh_fx_now_ms() - t0 > FAST_MS)
        fail_msg("restore of a FIFO took %llu ms", (unsigned long long)(vh_fx_now_ms() - t0));
    unlink(fx->file);
}

/* The daemon's open files, from /proc. */
static int fd_count(pid_t pid)
{
    char path[64];
    int n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *dir = opendir(path);
    assert_non_null(dir);
    for (struct dirent *e; (e = readdir(dir));)
        n += e->d_name[0] != '.';
    closedir(dir);
    return n;
}

/* Every failing path of save and restore, then an aborted and a completed
 * save and a restore: the daemon holds no more files afterwards. */
static void fd_round(struct fx *fx)
{
    char body[PATH_MAX + 64];

    snprintf(body, sizeof(body), "{\"path\":\"%s/missing/vm.save\"}", fx->d.root);
    vh_fx_error(fx->c, 404, "ENOENT", "missing", "POST", "/v1/domains/fd/save", body);
    FILE *f = fopen(fx->file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(body, sizeof(body), "{\"path\":\"%s\"}", fx->file);
    vh_fx_error(fx->c, 409, "EEXIST", "exists", "POST", "/v1/domains/fd/save", body);
    vh_fx_error(fx->c, 400, "EINVAL", "not a moor-vmd save file", "POST", "/v1/domains/restore",
                body);
    unlink(fx->file);
    save(fx, "fd", NULL);
    wait_phase(fx, "fd", "transfer");
    json_object_put(vh_fx_json(fx->c, 200, "DELETE", "/v1/domains/fd/job", NULL));
    assert_result(wait_end(fx, "fd"), "cancelled", NULL);
    assert_state(fx, "fd", "running", NULL);
    assert_false(file_exists(fx->file));
    save(fx, "fd", ",\"bandwidth_mib_s\":256");
    assert_result(wait_end(fx, "fd"), "completed", NULL);
    restore(fx, false);
    assert_result(wait_end(fx, "fd"), "completed", NULL);
    assert_state(fx, "fd", "running", "restored");
    vh_note_pid(&fx->d, vh_domain_pid(fx->c, "fd"));
    unlink(fx->file);
}

#define FD_SETTLE_MS 2000

static void test_no_fd_leak(void **state)
{
    struct fx *fx = *state;

    define_start(fx, "fd", SLOW);
    fd_round(fx); /* warm-up: first-use files (logs, sockets) */
    int before = fd_count(fx->d.pid);
    fd_round(fx);
    fd_round(fx);
    /* A job's end is reported before its last descriptors are closed (the
     * feeder's file, QEMU's sockets as its exit is handled): let the count
     * settle, for at most FD_SETTLE_MS, before calling it a leak. */
    int after = fd_count(fx->d.pid);
    for (int waited = 0; after > before && waited < FD_SETTLE_MS; waited += 10) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
        after = fd_count(fx->d.pid);
    }
    if (after > before)
        fail_msg("moor-vmd holds %d files after two rounds, %d before (%d ms later)", after, before,
                 FD_SETTLE_MS);
}

/* SIGTERM while a restore launches its QEMU (a slow QMP handshake): the
 * daemon must not adopt that QEMU into a domain it has already dropped
 * (a pidfd watch and a monitor outliving the registry: objects alive at
 * exit). It exits 0; the next daemon finds the domain shut off. */
static void test_sigterm_mid_restore_start(void **state)
{
    struct fx *fx = *state;
    int status;

    define_start(fx, "ts", "late:qmp_capabilities:700");
    save(fx, "ts", ",\"bandwidth_mib_s\":256");
    assert_result(wait_end(fx, "ts"), "completed", NULL);
    restore(fx, false);
    wait_phase(fx, "ts", "start");
    assert_int_equal(vh_stop(&fx->d, &status), 0);
    assert_int_equal(vh_start(&fx->d), 0);
    reconnect(fx);
    assert_state(fx, "ts", "shutoff", NULL);
    assert_true(file_exists(fx->file)); /* restore never removes its input */
    unlink(fx->file);
}

/* Whether process @pid holds a descriptor on a file whose path contains
 * @needle (a removed file shows as "... (deleted)"). */
static bool holds_file(pid_t pid, const char *needle)
{
    char dir[64], link[PATH_MAX], target[PATH_MAX];
    bool found = false;

    snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; !found && (e = readdir(d));) {
        snprintf(link, sizeof(link), "%s/%s", dir, e->d_name);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        target[n > 0 ? n : 0] = '\0';
        found = n > 0 && strstr(target, needle);
    }
    closedir(d);
    return found;
}

/* A save aborted after getfd handed QEMU the file but before migrate took
 * it: QEMU must not keep that descriptor (the removed file's space, and
 * one more fd per failed save, for QEMU's whole life). */
static void test_abort_save_closefd(void **state)
{
    struct fx *fx = *state;
    pid_t pid = define_start(fx, "cf", SLOW ",late:getfd:600");

    save(fx, "cf", NULL);
    wait_phase(fx, "cf", "setup");
    json_object_put(vh_fx_json(fx->c, 200, "DELETE", "/v1/domains/cf/job", NULL));
    assert_result(wait_end(fx, "cf"), "cancelled", "aborted");
    assert_state(fx, "cf", "running", NULL);
    assert_false(file_exists(fx->file));
    if (holds_file(pid, "vm.save"))
        fail_msg("QEMU pid %d still holds the aborted save's file", (int)pid);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_round_trip),          T(test_refusals),
        T(test_abort_save_pause),    T(test_abort_save_setup),
        T(test_abort_restore_setup), T(test_abort_save_transfer),
        T(test_abort_restore),       T(test_qemu_dies_mid_save),
        T(test_stall_mid_save),      T(test_disk_full),
        T(test_destroy_mid_save),    T(test_destroy_mid_restore),
        T(test_kill9_mid_save),      T(test_kill9_mid_restore),
        T(test_sigterm_mid_save),    T(test_restore_greedy_qemu),
        T(test_save_hung),           T(test_restore_fifo),
        T(test_no_fd_leak),          T(test_sigterm_mid_restore_start),
        T(test_abort_save_closefd),
    };

    signal(SIGPIPE, SIG_IGN);
    if (getenv("TEST_FILTER"))
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
