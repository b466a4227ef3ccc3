/* SPDX-License-Identifier: MIT */
/*
 * test-drive.c - the parts of drive.c that the demo's and the bench's
 * figures and clean-up rest on, without a daemon: percentiles and medians,
 * "is this pid alive" (a zombie is not), the bounded wait for pids to go,
 * the last-resort kill that spares a pid which is not our QEMU, and the
 * daemon launcher's two failures (exits at once, never gets ready).
 * The end-to-end test is the demo itself (test 'vmd-demo').
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "drive.h"

static void test_percentiles(void **state)
{
    struct drive_lat l = {0};

    (void)state;
    assert_int_equal(drive_lat_pct(&l, 50), 0);
    /* 100 down to 1: nearest rank on the sorted values. */
    for (uint64_t v = 100; v >= 1; v--)
        assert_int_equal(drive_lat_add(&l, v), 0);
    assert_int_equal(drive_lat_pct(&l, 50), 50);
    assert_int_equal(drive_lat_pct(&l, 99), 99);
    assert_int_equal(drive_lat_pct(&l, 100), 100);
    assert_int_equal(drive_lat_pct(&l, 0), 1);
    drive_lat_free(&l);
    assert_null(l.ns);
    assert_int_equal(drive_lat_add(&l, 7), 0);
    assert_int_equal(drive_lat_pct(&l, 99), 7);
    drive_lat_free(&l);
}

static void test_median(void **state)
{
    double odd[] = {5, 1, 3}, even[] = {4, 1, 3, 2};

    (void)state;
    assert_true(drive_median(odd, 3) == 3);
    assert_true(drive_median(even, 4) == 2.5);
    assert_true(drive_median(NULL, 0) == 0);
}

/* A child that waits until killed. */
static pid_t spawn_pause(void)
{
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        pause();
        _exit(0);
    }
    return pid;
}

static void test_pid_alive(void **state)
{
    pid_t child = fork();
    siginfo_t si;

    (void)state;
    assert_true(drive_pid_alive(getpid()));
    assert_true(child >= 0);
    if (child == 0)
        _exit(0);
    /* Exited but not reaped: a zombie, which counts as gone. */
    assert_int_equal(waitid(P_PID, (id_t)child, &si, WEXITED | WNOWAIT), 0);
    assert_false(drive_pid_alive(child));
    assert_int_equal(waitpid(child, NULL, 0), child);
    assert_false(drive_pid_alive(child));
}

static void test_wait_pids_gone(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    pid_t pids[2] = {spawn_pause(), 0};
    char want[64];

    (void)state;
    assert_int_equal(drive_wait_pids_gone(pids, 2, 50, &err), -ETIMEDOUT);
    snprintf(want, sizeof(want), "pid %d still alive", (int)pids[0]);
    assert_non_null(strstr(err.message, want));
    /* Not our QEMU: the last-resort kill leaves it alone. */
    assert_false(drive_kill_qemu(pids[0], "demo-0"));
    assert_true(drive_pid_alive(pids[0]));
    assert_int_equal(drive_find_qemu("no-such-domain-name-for-this-test"), 0);
    kill(pids[0], SIGKILL);
    assert_int_equal(drive_wait_pids_gone(pids, 2, 5000, &err), 0);
    waitpid(pids[0], NULL, 0);
}

/* A "daemon" script in @d->base that runs @body. */
static void write_script(struct drive_daemon *d, const char *body, char *path)
{
    FILE *f;

    assert_true((size_t)snprintf(path, PATH_MAX, "%.*s/fake-vmd.sh", PATH_MAX - 16, d->base) <
                PATH_MAX);
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\n%s\n", body);
    fclose(f);
    assert_int_equal(chmod(path, 0700), 0);
    snprintf(d->exe, sizeof(d->exe), "%s", path);
}

static void test_daemon_fails(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    struct drive_daemon d;
    char path[PATH_MAX], base[PATH_MAX];
    struct stat st;

    (void)state;
    assert_int_equal(drive_daemon_init(&d, "/nonexistent", "test-drive", NULL, &err), 0);
    assert_int_equal(stat(d.state_dir, &st), 0);
    assert_int_equal(stat(d.runtime_dir, &st), 0);

    write_script(&d, "exit 3", path);
    assert_int_equal(drive_daemon_start(&d, 5000, &err), -ECHILD);
    assert_non_null(strstr(err.message, "exited with status 3"));
    assert_int_equal(d.pid, 0);

    write_script(&d, "exec sleep 100", path);
    assert_int_equal(drive_daemon_start(&d, 100, &err), -ETIMEDOUT);
    assert_non_null(strstr(err.message, "/v1/version"));
    assert_int_equal(d.pid, 0); /* killed and reaped */

    snprintf(base, sizeof(base), "%s", d.base);
    drive_daemon_cleanup(&d, false);
    assert_int_equal(stat(base, &st), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percentiles),  cmocka_unit_test(test_median),
        cmocka_unit_test(test_pid_alive),    cmocka_unit_test(test_wait_pids_gone),
        cmocka_unit_test(test_daemon_fails),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
