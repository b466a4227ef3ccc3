/* SPDX-License-Identifier: MIT */
/*
 * test-real-images.c - the image pool with real qemu-img and real
 * qemu-system-x86_64 (machine pc, TCG, 32 MiB, no bootable disk: the
 * firmware idles): an overlay on a base image, whose delete is refused
 * naming the overlay until the overlay goes; a domain with a 64 MiB qcow2
 * disk that starts, shows the disk in QMP query-block, and grows it
 * through block_resize while it runs; a backup of that running domain's
 * disk (written with qemu-io before the start) whose target qemu-img
 * compare finds identical to the source and qemu-io finds the data in,
 * and a slow backup of it aborted mid-copy (job-cancel; no target left).
 * A missing qemu-img, qemu-io or QEMU fails
 * the suite (never a skip). No QEMU is left after a test (vh_finish).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "vh-fx.h"

static int rq_setup(void **state)
{
    static const char *const flags[] = {"--qmp-timeout", "10", NULL};

    return vh_fx_setup(state, flags);
}

static void refused(struct vh_fx *rq, const char *needle, const char *method, const char *path)
{
    vh_fx_error(rq->c, 409, NULL, needle, method, path, NULL);
}

static void test_overlay_on_base(void **state)
{
    struct vh_fx *rq = *state;
    json_object *j;

    vh_fx_ok(rq->c, 201, "POST", "/v1/images",
             "{\"name\":\"base.qcow2\",\"format\":\"qcow2\",\"size_mib\":64}");
    vh_fx_ok(rq->c, 201, "POST", "/v1/images",
             "{\"name\":\"web1.qcow2\",\"backing\":\"base.qcow2\"}");
    j = vh_fx_json(rq->c, 200, "GET", "/v1/images/web1.qcow2", NULL);
    json_object *q = vh_json_get(j, "qemu_img");
    assert_string_equal(vh_json_str(q, "backing-filename"), "base.qcow2");
    assert_true(json_object_get_int64(vh_json_get(q, "virtual-size")) == 64 << 20);
    json_object_put(j);

    refused(rq, "image base.qcow2 is the backing file of overlay web1.qcow2", "DELETE",
            "/v1/images/base.qcow2");
    vh_fx_ok(rq->c, 200, "DELETE", "/v1/images/web1.qcow2", NULL);
    vh_fx_ok(rq->c, 200, "DELETE", "/v1/images/base.qcow2", NULL);
    j = vh_fx_json(rq->c, 200, "GET", "/v1/images", NULL);
    assert_int_equal(json_object_array_length(vh_json_get(j, "images")), 0);
    json_object_put(j);
}

/* query-block's entry for node @node, or NULL. Borrowed from @ret. */
static json_object *block_of(json_object *ret, const char *node)
{
    for (size_t i = 0; i < json_object_array_length(ret); i++) {
        json_object *ins = vh_json_get(json_object_array_get_idx(ret, i), "inserted");
        const char *n = vh_json_str(ins, "node-name");

        if (n && strcmp(n, node) == 0)
            return ins;
    }
    return NULL;
}

static int64_t running_size(struct vh_fx *rq)
{
    json_object *j =
        vh_fx_json(rq->c, 200, "POST", "/v1/domains/real1/qmp", "{\"execute\":\"query-block\"}");
    json_object *ins = block_of(vh_json_get(j, "return"), "d0-disk.qcow2");

    if (!ins)
        fail_msg("query-block does not show node d0-disk.qcow2: %s", json_object_to_json_string(j));
    assert_false(json_object_get_boolean(vh_json_get(ins, "ro")));
    int64_t size = json_object_get_int64(vh_json_get(vh_json_get(ins, "image"), "virtual-size"));
    json_object_put(j);
    return size;
}

static void test_domain_with_disk(void **state)
{
    struct vh_fx *rq = *state;
    const char *emu = getenv("REAL_QEMU");
    pid_t pid;

    vh_fx_ok(rq->c, 201, "POST", "/v1/images",
             "{\"name\":\"disk.qcow2\",\"format\":\"qcow2\",\"size_mib\":64}");
    if (vh_expect(rq->c, 201, NULL, "POST", "/v1/domains",
                  "{\"name\":\"real1\",\"emulator\":\"%s\",\"machine\":\"pc\",\"accel\":\"tcg\","
                  "\"memory_mib\":32,\"disks\":[{\"image\":\"disk.qcow2\",\"bus\":\"virtio\"}]}",
                  emu && *emu ? emu : "qemu-system-x86_64") != 0)
        fail_msg("define real1 (see above)");
    pid = vh_start_domain(&rq->d, rq->c, "real1", false);
    assert_true(pid > 0);
    assert_true(running_size(rq) == 64 << 20);

    /* Grown while it runs: through QEMU, which then reports the new size. */
    vh_fx_ok(rq->c, 200, "POST", "/v1/images/disk.qcow2/resize", "{\"size_mib\":96}");
    assert_true(running_size(rq) == 96 << 20);
    refused(rq, "image disk.qcow2 is used by domain real1", "DELETE", "/v1/images/disk.qcow2");

    vh_fx_ok(rq->c, 200, "POST", "/v1/domains/real1/destroy", NULL);
    assert_int_equal(vh_wait_pid_gone(pid, VH_EXIT_MS), 0);
    vh_fx_ok(rq->c, 200, "DELETE", "/v1/domains/real1", NULL);
    json_object *j = vh_fx_json(rq->c, 200, "GET", "/v1/images/disk.qcow2", NULL);
    assert_true(json_object_get_int64(vh_json_get(vh_json_get(j, "qemu_img"), "virtual-size")) ==
                96 << 20);
    json_object_put(j);
    vh_fx_ok(rq->c, 200, "DELETE", "/v1/images/disk.qcow2", NULL);
}

/* Run @argv (no shell), its output to /dev/null; its exit status, or -1. */
static int run(char *const argv[])
{
    pid_t pid = fork();
    int status;

    if (pid == 0) {
        FILE *null = freopen("/dev/null", "w", stdout);
        (void)null;
        execvp(argv[0], argv);
        _exit(127);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void image_path(struct vh_fx *rq, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/images/%s", rq->d.state_dir, name);
}

/* Poll the job of @name until it is over; its result (static). */
static const char *backup_result(struct vh_fx *rq, const char *name)
{
    static char result[32];
    char path[128];
    struct timespec ts = {0, 50 * 1000000L};

    snprintf(path, sizeof(path), "/v1/domains/%s/job", name);
    for (int i = 0; i < 1200; i++) { /* 60 s */
        json_object *j = vh_fx_json(rq->c, 200, "GET", path, NULL);
        if (!json_object_get_boolean(vh_json_get(j, "active"))) {
            json_object *last = vh_json_get(j, "last");
            snprintf(result, sizeof(result), "%s", vh_json_str(last, "result"));
            if (strcmp(result, "completed") != 0)
                fprintf(stderr, "backup: %s\n", json_object_to_json_string(last));
            json_object_put(j);
            return result;
        }
        json_object_put(j);
        nanosleep(&ts, NULL);
    }
    fail_msg("the backup of %s did not end in 60 s", name);
    return NULL;
}

/* A running pc domain's 64 MiB qcow2 disk, with two patterns written
 * before the start, is backed up; the target matches. */
static void test_backup_running(void **state)
{
    struct vh_fx *rq = *state;
    const char *emu = getenv("REAL_QEMU");
    char src[PATH_MAX + 64], dst[PATH_MAX + 64];

    vh_fx_ok(rq->c, 201, "POST", "/v1/images",
             "{\"name\":\"src.qcow2\",\"format\":\"qcow2\",\"size_mib\":64}");
    image_path(rq, "src.qcow2", src, sizeof(src));
    image_path(rq, "bk.qcow2", dst, sizeof(dst));
    char *write[] = {
        "qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 4M", "-c", "write -P 0x5c 60M 1M",
        src,       NULL};
    assert_int_equal(run(write), 0);
    if (vh_expect(rq->c, 201, NULL, "POST", "/v1/domains",
                  "{\"name\":\"real2\",\"emulator\":\"%s\",\"machine\":\"pc\",\"accel\":\"tcg\","
                  "\"memory_mib\":32,\"disks\":[{\"image\":\"src.qcow2\"}]}",
                  emu && *emu ? emu : "qemu-system-x86_64") != 0)
        fail_msg("define real2 (see above)");
    pid_t pid = vh_start_domain(&rq->d, rq->c, "real2", false);
    assert_true(pid > 0);

    vh_fx_ok(rq->c, 202, "POST", "/v1/domains/real2/backup", "{\"target\":\"bk.qcow2\"}");
    assert_string_equal(backup_result(rq, "real2"), "completed");
    char *compare[] = {"qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", src, dst, NULL};
    assert_int_equal(run(compare), 0);
    char *read1[] = {"qemu-io",
                     "-r",
                     "-U",
                     "-f",
                     "qcow2",
                     "-c",
                     "read -P 0xab 1M 4M",
                     "-c",
                     "read -P 0x5c 60M 1M",
                     "-c",
                     "read -P 0 8M 1M",
                     dst,
                     NULL};
    assert_int_equal(run(read1), 0);
    /* QEMU let go of the target (blockdev-del): it can be deleted at once */
    vh_fx_ok(rq->c, 200, "DELETE", "/v1/images/bk.qcow2", NULL);

    /* A slow one (1 MiB/s) aborted mid-copy: QEMU's job-cancel, the target
     * deleted, the source free again, the guest still running. */
    vh_fx_ok(rq->c, 202, "POST", "/v1/domains/real2/backup",
             "{\"target\":\"slow.qcow2\",\"bandwidth_mib_s\":1}");
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
    vh_fx_ok(rq->c, 200, "DELETE", "/v1/domains/real2/job", NULL);
    assert_string_equal(backup_result(rq, "real2"), "cancelled");
    assert_true(access(dst, F_OK) != 0);
    image_path(rq, "slow.qcow2", dst, sizeof(dst));
    assert_true(access(dst, F_OK) != 0);
    json_object *st = vh_fx_json(rq->c, 200, "GET", "/v1/domains/real2/state", NULL);
    assert_string_equal(vh_json_str(st, "state"), "running");
    json_object_put(st);
    vh_fx_ok(rq->c, 200, "POST", "/v1/images/src.qcow2/resize", "{\"size_mib\":80}");
    vh_fx_ok(rq->c, 200, "POST", "/v1/domains/real2/destroy", NULL);
    assert_int_equal(vh_wait_pid_gone(pid, VH_EXIT_MS), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_overlay_on_base, rq_setup, vh_fx_teardown),
        cmocka_unit_test_setup_teardown(test_domain_with_disk, rq_setup, vh_fx_teardown),
        cmocka_unit_test_setup_teardown(test_backup_running, rq_setup, vh_fx_teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    if (!vh_program_found("qemu-system-x86_64", "REAL_QEMU") ||
        !vh_program_found("qemu-img", NULL) || !vh_program_found("qemu-io", NULL)) {
        fprintf(stderr, "test-real-images: FAIL: qemu-system-x86_64, qemu-img or qemu-io is not "
                        "installed "
                        "(make deps installs qemu-system-x86 and qemu-utils); this suite never "
                        "skips\n");
        return 1;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
