/* SPDX-License-Identifier: MIT */
/*
 * libvirtd-run.h - running Debian's libvirtd (monolithic, 9.0) for the
 * side-by-side benchmark (vs-libvirt.c), without systemd and without a
 * shell:
 *
 *   - lvd_setup: the configuration qemu:///system needs here, made
 *     idempotently: the libvirt-qemu user and group (groupadd/useradd by
 *     argv when missing), /var/log/libvirt, and `user = "root"` /
 *     `group = "root"` in /etc/libvirt/qemu.conf (appended when absent; a
 *     different value already there is an error, never overwritten);
 *   - a runner: a child process of the benchmark that is a child
 *     subreaper (PR_SET_CHILD_SUBREAPER) and reaps every child at once, as
 *     systemd would. It runs virtlogd and then libvirtd in the foreground
 *     as its own children, so the QEMUs libvirtd daemonizes are
 *     reparented to it and reaped the moment they exit (this sandbox's
 *     PID 1 reaps only every ~1.4 s, and libvirtd waits for the reap under
 *     the domain's lock). The benchmark talks to it over a socketpair:
 *     kill libvirtd (SIGKILL, reaped), start it again, stop everything.
 *
 * Stopping (lvd_runner_stop, or the benchmark dying: the socketpair
 * closes) ends libvirtd and virtlogd by pid with SIGTERM (SIGKILL after
 * 15 s) and SIGKILLs every process still the runner's child (a QEMU
 * libvirtd left running), then the runner exits: nothing it started is
 * left running.
 */
#ifndef MOOR_BENCH_LIBVIRTD_RUN_H
#define MOOR_BENCH_LIBVIRTD_RUN_H

#include <limits.h>
#include <sys/types.h>

#include <moor/error.h>

struct lvd_runner {
    pid_t pid;              /* the runner; 0 when not running */
    int fd;                 /* our end of the command socketpair */
    pid_t libvirtd;         /* as the runner last reported; 0 when not running */
    pid_t virtlogd;         /* likewise */
    char log_dir[PATH_MAX]; /* libvirtd.log and virtlogd.log (their stderr) */
};

/*
 * lvd_setup - make the system configuration described above. Must run as
 * root. Blocks: until groupadd/useradd exit (a second or so), when they run.
 * Returns 0; -EPERM (not root); -EEXIST (qemu.conf sets user or group to
 * something else: the message names the line); -EALREADY (a libvirtd is
 * already running: its pid in the message); -ECHILD (groupadd/useradd
 * failed); -errno of the file operations.
 */
int lvd_setup(moor_error *err);

/*
 * lvd_runner_start - fork the runner, which starts virtlogd, waits until
 * its socket accepts (up to 10 s), then starts libvirtd and reports both
 * pids. Does not wait for libvirtd to answer (the caller times that).
 * @log_dir: an existing directory for the daemons' logs (copied).
 * Ownership: @r is the caller's; lvd_runner_stop ends it. Context: the
 * main thread, before any libvirt connection is opened.
 * Returns 0; -ETIMEDOUT (virtlogd's socket never accepted); -ECHILD (a
 * daemon exited at once: see its log); -errno of fork/socketpair.
 */
int lvd_runner_start(struct lvd_runner *r, const char *log_dir, moor_error *err);

/*
 * lvd_runner_kill_libvirtd - SIGKILL libvirtd and wait until the runner
 * has reaped it. Its QEMUs keep running (now the runner's children).
 * Blocks: until reaped (milliseconds). Returns 0; -ESRCH (not running);
 * -EPIPE (the runner is gone).
 */
int lvd_runner_kill_libvirtd(struct lvd_runner *r, moor_error *err);

/*
 * lvd_runner_start_libvirtd - start libvirtd again (after a kill); the
 * new pid in r->libvirtd. Returns 0; -EALREADY; -EPIPE; -errno of fork.
 */
int lvd_runner_start_libvirtd(struct lvd_runner *r, moor_error *err);

/*
 * lvd_runner_stop - stop libvirtd and virtlogd (SIGTERM, SIGKILL after
 * 15 s), SIGKILL any QEMU still the runner's child, wait for the runner to
 * exit. No-op when not running. Blocks: up to ~35 s. Returns 0, or
 * -ETIMEDOUT/-ECHILD when something had to be killed (the message says
 * what); r->pid is 0 afterwards in every case.
 */
int lvd_runner_stop(struct lvd_runner *r, moor_error *err);

#endif /* MOOR_BENCH_LIBVIRTD_RUN_H */
