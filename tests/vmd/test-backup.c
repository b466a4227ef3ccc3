/* SPDX-License-Identifier: MIT */
/*
 * test-backup.c - the backup long job (POST /v1/domains/{id}/backup) over
 * moor-vmd's real socket, with the fake QEMU's block jobs and real
 * qemu-img (a missing one fails every test): a backup that completes,
 * with the source image's resize and delete refused naming the backup, its
 * domain and its age while it runs, the target blocked from every use, and
 * both free again after; abort; QEMU dying, hanging and the target's disk
 * filling mid-backup; SIGKILL and SIGTERM of the daemon mid-backup; the
 * refusals. Every case ends in the state docs/vmd.md's failure table
 * gives, with no partial target left in the pool.
 *
 * Each test runs its own daemon (harness.h) and stops it with SIGTERM: it
 * must exit 0, which it does only with its live-object census at zero (no
 * image object, block or job leaked).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "vh-fx.h"

#define FAST_MS     500   /* "at once": an answer that must not wait for the job */
#define JOB_WAIT_MS 20000 /* the most a fake backup may take here */
#define DISK_MIB    64
#define SLOW        ",\"bandwidth_mib_s\":16" /* 64 MiB in 4 s */

static int fx_setup(void **state)
{
    static const char *const flags[] = {"--qmp-timeout", "1", "--job-timeout", "5", NULL};

    return vh_fx_setup(state, flags);
}

static void reconnect(struct vh_fx *fx)
{
    vmctl_client_free(fx->c);
    fx->c = vh_client_new(&fx->d);
    assert_non_null(fx->c);
}

/* ---- helpers -------------------------------------------------------------- */

static bool image_file(struct vh_fx *fx, const char *name)
{
    char path[PATH_MAX + 80];

    snprintf(path, sizeof(path), "%s/images/%s", fx->d.state_dir, name);
    return access(path, F_OK) == 0;
}

/* The pool's listing has @name. */
static bool listed(struct vh_fx *fx, const char *name)
{
    json_object *j = vh_fx_json(fx->c, 200, "GET", "/v1/images", NULL),
                *arr = vh_json_get(j, "images");
    bool found = false;

    for (size_t i = 0; arr && i < json_object_array_length(arr); i++)
        found |= strcmp(vh_json_str(json_object_array_get_idx(arr, i), "name"), name) == 0;
    json_object_put(j);
    return found;
}

/* No target left: neither file nor image. */
static void no_target(struct vh_fx *fx, const char *name)
{
    assert_false(image_file(fx, name));
    assert_false(listed(fx, name));
}

/* base.qcow2 (64 MiB) and domain @name using it, started with @faults. */
static pid_t domain_with_disk(struct vh_fx *fx, const char *name, const char *faults)
{
    char body[160];

    snprintf(body, sizeof(body),
             "{\"name\":\"base-%s.qcow2\",\"format\":\"qcow2\",\"size_mib\":%d}", name, DISK_MIB);
    vh_fx_ok(fx->c, 201, "POST", "/v1/images", body);
    if (vh_expect(fx->c, 201, NULL, "POST", "/v1/domains",
                  "{\"name\":\"%s\",\"emulator\":\"%s\",\"machine\":\"none\",\"accel\":\"tcg\","
                  "\"memory_mib\":16,\"disks\":[{\"image\":\"base-%s.qcow2\"}]%s%s%s}",
                  name, fx->d.fake_qemu, name, faults ? ",\"extra_args\":[\"-fake-faults\",\"" : "",
                  faults ? faults : "", faults ? "\"]" : "") != 0)
        fail_msg("define %s: see above", name);
    pid_t pid = vh_start_domain(&fx->d, fx->c, name, false);
    assert_true(pid > 0);
    return pid;
}

static void backup(struct vh_fx *fx, const char *name, const char *target, const char *extra)
{
    char path[128], body[256];

    snprintf(path, sizeof(path), "/v1/domains/%s/backup", name);
    snprintf(body, sizeof(body), "{\"target\":\"%s\"%s}", target, extra ? extra : "");
    json_object *j = vh_fx_json(fx->c, 202, "POST", path, body), *job = vh_json_get(j, "job");
    assert_string_equal(vh_json_str(job, "kind"), "backup");
    assert_string_equal(vh_json_str(job, "target"), target);
    json_object_put(j);
}

/* Poll until the job copies (bytes_done > 0); fails after JOB_WAIT_MS. */
static void wait_transfer(struct vh_fx *fx, const char *name)
{
    uint64_t end = vh_fx_now_ms() + JOB_WAIT_MS;

    for (;;) {
        json_object *j = vh_fx_job(fx->c, name), *cur = vh_json_get(j, "job");
        const char *p = cur ? vh_json_str(cur, "phase") : NULL;
        bool moved = cur && json_object_get_int64(vh_json_get(cur, "bytes_done")) > 0;
        if (moved)
            assert_int_equal(json_object_get_int64(vh_json_get(cur, "bytes_total")),
                             (int64_t)DISK_MIB << 20);
        bool transfer = p && strcmp(p, "transfer") == 0 && moved;
        json_object_put(j);
        if (transfer)
            return;
        if (vh_fx_now_ms() > end)
            fail_msg("%s: the backup never copied", name);
        vh_fx_sleep_ms(10);
    }
}

/* Poll until no job runs; the last job's outcome (a new reference). */
static json_object *wait_end(struct vh_fx *fx, const char *name)
{
    return vh_fx_wait_job_end(fx->c, name, "backup", JOB_WAIT_MS);
}

static void assert_result(json_object *last, const char *result, const char *needle)
{
    vh_fx_job_result(last, "backup", result, needle);
    assert_string_equal(vh_json_str(last, "kind"), "backup");
    json_object_put(last);
}

/* The source's blocks are gone: resize (through the domain or offline)
 * is allowed again. */
static void source_free(struct vh_fx *fx, const char *name, int mib)
{
    char path[128], body[64];

    snprintf(path, sizeof(path), "/v1/images/base-%s.qcow2/resize", name);
    snprintf(body, sizeof(body), "{\"size_mib\":%d}", mib);
    vh_fx_ok(fx->c, 200, "POST", path, body);
}

/* ---- tests ------------------------------------------------------------------ */

/* A backup that completes; meanwhile the source cannot be resized or
 * deleted (named: the backup, its domain, its age), the target cannot be
 * used, resized or deleted, queries answer at once, a second long job is
 * refused; after, all of it is allowed again. */
static void test_backup_completes(void **state)
{
    struct vh_fx *fx = *state;

    domain_with_disk(fx, "vm", NULL);
    backup(fx, "vm", "bk.qcow2", SLOW);
    wait_transfer(fx, "vm");
    vh_fx_error2(fx->c, 409, "EBUSY", "backup job of domain vm", " s)", "POST",
                 "/v1/images/base-vm.qcow2/resize", "{\"size_mib\":128}");
    vh_fx_error2(fx->c, 409, "EBUSY", "backup job of domain vm", " s)", "DELETE",
                 "/v1/images/base-vm.qcow2", NULL);
    vh_fx_error(fx->c, 409, "EBUSY", "target of the backup job of domain vm", "DELETE",
                "/v1/images/bk.qcow2", NULL);
    vh_fx_error(fx->c, 409, "EBUSY", "target of the backup job of domain vm", "POST",
                "/v1/images/bk.qcow2/resize", "{\"size_mib\":128}");
    vh_fx_error(fx->c, 409, "EBUSY", "target of the backup job of domain vm", "POST", "/v1/domains",
                "{\"name\":\"user\",\"emulator\":\"/bin/true\",\"machine\":\"none\","
                "\"disks\":[{\"image\":\"bk.qcow2\",\"readonly\":true}]}");
    vh_fx_error(fx->c, 409, "EBUSY", "a backup job", "POST", "/v1/domains/vm/backup",
                "{\"target\":\"other.qcow2\"}");
    vh_fx_error(fx->c, 409, "EBUSY", "a backup job", "POST", "/v1/domains/vm/save",
                "{\"path\":\"/tmp/never-made.save\"}");
    uint64_t t0 = vh_fx_now_ms();
    vh_fx_ok(fx->c, 200, "GET", "/v1/domains/vm/state", NULL);
    vh_fx_ok(fx->c, 200, "GET", "/v1/domains/vm/stats", NULL);
    assert_true(vh_fx_now_ms() - t0 < 2 * FAST_MS);
    assert_result(wait_end(fx, "vm"), "completed", NULL);
    assert_true(image_file(fx, "bk.qcow2"));
    assert_int_equal(vh_wait_state(fx->c, "vm", "running", NULL), 0);
    json_object *info = vh_fx_json(fx->c, 200, "GET", "/v1/images/bk.qcow2", NULL);
    assert_int_equal(json_object_get_int64(vh_json_get(info, "virtual_size")),
                     (int64_t)DISK_MIB << 20);
    assert_string_equal(vh_json_str(info, "format"), "qcow2");
    json_object_put(info);
    source_free(fx, "vm", 96);
    vh_fx_ok(fx->c, 200, "POST", "/v1/images/bk.qcow2/resize", "{\"size_mib\":96}");
    vh_fx_ok(fx->c, 200, "DELETE", "/v1/images/bk.qcow2", NULL);
    no_target(fx, "bk.qcow2");
    /* and a second backup of the same disk runs (QEMU's job was dismissed,
     * its node deleted) */
    backup(fx, "vm", "bk2.qcow2", NULL);
    assert_result(wait_end(fx, "vm"), "completed", NULL);
    assert_true(image_file(fx, "bk2.qcow2"));
}

static void test_abort(void **state)
{
    struct vh_fx *fx = *state;

    domain_with_disk(fx, "ab", NULL);
    backup(fx, "ab", "t.qcow2", SLOW);
    wait_transfer(fx, "ab");
    json_object *j = vh_fx_json(fx->c, 200, "DELETE", "/v1/domains/ab/job", NULL);
    json_object_put(j);
    assert_result(wait_end(fx, "ab"), "cancelled", "aborted");
    no_target(fx, "t.qcow2");
    assert_int_equal(vh_wait_state(fx->c, "ab", "running", NULL), 0);
    source_free(fx, "ab", 80);
    /* the job and the node are gone from QEMU: the same target name works */
    backup(fx, "ab", "t.qcow2", NULL);
    assert_result(wait_end(fx, "ab"), "completed", NULL);
}

static void test_qemu_dies(void **state)
{
    struct vh_fx *fx = *state;

    domain_with_disk(fx, "die", "die-mid-backup");
    backup(fx, "die", "t.qcow2", SLOW);
    assert_result(wait_end(fx, "die"), "failed", NULL);
    assert_int_equal(vh_wait_state(fx->c, "die", "shutoff", "crashed"), 0);
    no_target(fx, "t.qcow2");
    source_free(fx, "die", 80); /* offline now */
}

/* QEMU hangs mid-backup: the job fails after one monitor deadline, the
 * domain is destroyable at once, the target goes. */
static void test_stall(void **state)
{
    struct vh_fx *fx = *state;

    domain_with_disk(fx, "st", "stall-mid-backup");
    uint64_t t0 = vh_fx_now_ms();
    backup(fx, "st", "t.qcow2", SLOW);
    assert_result(wait_end(fx, "st"), "failed", "no reply");
    assert_true(vh_fx_now_ms() - t0 < 10000);
    no_target(fx, "t.qcow2");
    t0 = vh_fx_now_ms();
    vh_fx_ok(fx->c, 200, "POST", "/v1/domains/st/destroy", NULL);
    if (vh_fx_now_ms() - t0 > 2 * FAST_MS)
        fail_msg("destroy of a hung QEMU took %llu ms", (unsigned long long)(vh_fx_now_ms() - t0));
    assert_int_equal(vh_wait_state(fx->c, "st", "shutoff", "destroyed"), 0);
    source_free(fx, "st", 80);
}

static void test_disk_full(void **state)
{
    struct vh_fx *fx = *state;

    domain_with_disk(fx, "full", "backup-enospc");
    backup(fx, "full", "t.qcow2", NULL);
    assert_result(wait_end(fx, "full"), "failed", "No space left on device");
    assert_int_equal(vh_wait_state(fx->c, "full", "running", NULL), 0);
    no_target(fx, "t.qcow2");
    source_free(fx, "full", 80);
}

static void test_destroy_mid_backup(void **state)
{
    struct vh_fx *fx = *state;

    domain_with_disk(fx, "kd", NULL);
    backup(fx, "kd", "t.qcow2", SLOW);
    wait_transfer(fx, "kd");
    vh_fx_ok(fx->c, 200, "POST", "/v1/domains/kd/destroy", NULL);
    assert_result(wait_end(fx, "kd"), "failed", NULL);
    assert_int_equal(vh_wait_state(fx->c, "kd", "shutoff", "destroyed"), 0);
    no_target(fx, "t.qcow2");
    source_free(fx, "kd", 80);
}

/* The daemon dies mid-backup; the next one cancels QEMU's job and deletes
 * the partial target; the guest runs on, the source is free. */
static void test_kill9_mid_backup(void **state)
{
    struct vh_fx *fx = *state;
    pid_t pid = domain_with_disk(fx, "k9", NULL);

    backup(fx, "k9", "t.qcow2", SLOW);
    wait_transfer(fx, "k9");
    assert_int_equal(vh_kill9(&fx->d), 0);
    assert_true(vh_pid_alive(pid));
    assert_int_equal(vh_start(&fx->d), 0);
    reconnect(fx);
    assert_int_equal(vh_wait_state(fx->c, "k9", "running", NULL), 0);
    assert_int_equal(vh_domain_pid(fx->c, "k9"), pid);
    no_target(fx, "t.qcow2");
    json_object *j = vh_fx_job(fx->c, "k9");
    assert_false(json_object_get_boolean(vh_json_get(j, "active")));
    json_object_put(j);
    source_free(fx, "k9", 80);
    /* QEMU has neither the job nor the node any more */
    backup(fx, "k9", "t.qcow2", NULL);
    assert_result(wait_end(fx, "k9"), "completed", NULL);
}

/* SIGTERM mid-backup: exit 0 (census zero), the next daemon cleans up. */
static void test_sigterm_mid_backup(void **state)
{
    struct vh_fx *fx = *state;
    int status;
    pid_t pid = domain_with_disk(fx, "term", NULL);

    backup(fx, "term", "t.qcow2", SLOW);
    wait_transfer(fx, "term");
    assert_int_equal(vh_stop(&fx->d, &status), 0);
    assert_true(vh_pid_alive(pid));
    assert_int_equal(vh_start(&fx->d), 0);
    reconnect(fx);
    assert_int_equal(vh_wait_state(fx->c, "term", "running", NULL), 0);
    no_target(fx, "t.qcow2");
    source_free(fx, "term", 80);
}

static void test_refusals(void **state)
{
    struct vh_fx *fx = *state;

    domain_with_disk(fx, "r", NULL);
    vh_fx_error(fx->c, 400, "EINVAL", "target", "POST", "/v1/domains/r/backup", "{}");
    vh_fx_error(fx->c, 400, "EINVAL", "target", "POST", "/v1/domains/r/backup", NULL);
    vh_fx_error(fx->c, 400, "EINVAL", "must be an image name", "POST", "/v1/domains/r/backup",
                "{\"target\":\"../x\"}");
    vh_fx_error(fx->c, 400, "EINVAL", "must be an image name", "POST", "/v1/domains/r/backup",
                "{\"target\":\"x\",\"disk\":7}");
    vh_fx_error(fx->c, 400, "EINVAL", "speed", "POST", "/v1/domains/r/backup",
                "{\"target\":\"x\",\"speed\":7}");
    vh_fx_error(fx->c, 400, "EINVAL", "bandwidth_mib_s", "POST", "/v1/domains/r/backup",
                "{\"target\":\"x\",\"bandwidth_mib_s\":0}");
    vh_fx_error(fx->c, 404, "ENOENT", "no disk on image nope", "POST", "/v1/domains/r/backup",
                "{\"target\":\"x\",\"disk\":\"nope\"}");
    vh_fx_error(fx->c, 409, "EEXIST", "base-r.qcow2", "POST", "/v1/domains/r/backup",
                "{\"target\":\"base-r.qcow2\"}");
    vh_fx_error(fx->c, 404, "ENOENT", NULL, "POST", "/v1/domains/ghost/backup",
                "{\"target\":\"x\"}");
    /* a refused backup left no block: the source resizes */
    source_free(fx, "r", 80);
    assert_int_equal(vh_define_fake(&fx->d, fx->c, "nodisk", NULL), 0);
    assert_true(vh_start_domain(&fx->d, fx->c, "nodisk", false) > 0);
    vh_fx_error(fx->c, 404, "ENOENT", "no disk to back up", "POST", "/v1/domains/nodisk/backup",
                "{\"target\":\"x\"}");
    vh_fx_ok(fx->c, 200, "POST", "/v1/domains/r/destroy", NULL);
    vh_fx_error(fx->c, 409, "ENOTCONN", "backup needs it running", "POST", "/v1/domains/r/backup",
                "{\"target\":\"x\"}");
    no_target(fx, "x");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, vh_fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_backup_completes), T(test_abort),
        T(test_qemu_dies),        T(test_stall),
        T(test_disk_full),        T(test_destroy_mid_backup),
        T(test_kill9_mid_backup), T(test_sigterm_mid_backup),
        T(test_refusals),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
