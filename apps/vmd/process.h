/* SPDX-License-Identifier: MIT */
/*
 * process.h - QEMU as a process: the QMP listening socket, fork+exec with
 * an argv (never a shell), pidfds, signals, and what /proc says about a
 * pid (start time, run state, command line).
 *
 * None of these take a lock or touch a domain: domain.c calls them with
 * no mutex held (they block on fork, file and socket I/O).
 */
#ifndef MOOR_VMD_PROCESS_H
#define MOOR_VMD_PROCESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <moor/error.h>

#include "domain.h"

struct vmd_disk_refs;

/* The fd number QEMU finds its QMP listening socket at. */
#define VMD_PROCESS_QMP_FD 3

/* What to run. Strings borrowed for the call. */
struct vmd_process_spec {
    const struct vmd_domain_config *cfg;
    const char *pidfile;           /* -pidfile */
    const char *runas;             /* NULL: no -runas */
    const char *log_path;          /* stdout and stderr, appended */
    bool incoming_defer;           /* -incoming defer: QEMU waits for migrate-incoming (restore) */
    const struct vmd_options *opt; /* for the image pool's paths */
    const struct vmd_disk_refs *disks; /* cfg's disks' images (image.h); NULL: none */
};

/*
 * vmd_process_argv - QEMU's argv for @spec: a NULL-terminated array whose
 * first element is the emulator resolved on PATH.
 * Ownership: *@argv is the caller's (vmd_process_argv_free).
 * Returns: 0; -ENOENT (emulator not found on PATH, named in @err); -ENOMEM.
 */
int vmd_process_argv(const struct vmd_process_spec *spec, char ***argv, moor_error *err);

/* vmd_process_argv_free - free what vmd_process_argv made. NULL-safe. */
void vmd_process_argv_free(char **argv);

/*
 * vmd_process_listen - create a UNIX stream socket bound to @path (which
 * must not exist: a stale file is the caller's to remove) and listening.
 * Ownership: *@fd is the caller's (close-on-exec). Blocks: no.
 * Returns: 0; -ENAMETOOLONG; the -errno of socket/bind/listen.
 */
int vmd_process_listen(const char *path, int *fd, moor_error *err);

/*
 * vmd_process_connect - connect to the UNIX socket @path (close-on-exec).
 * Returns: 0 with *@fd the caller's; -ENAMETOOLONG; the connect -errno.
 */
int vmd_process_connect(const char *path, int *fd, moor_error *err);

/*
 * vmd_process_spawn - fork and exec @argv in a new session: stdin
 * /dev/null, stdout and stderr appended to @log_path, @qmp_fd at
 * VMD_PROCESS_QMP_FD, every other fd closed, signals reset.
 * After the fork and before the exec, @spawned (if not NULL) is called in
 * the parent with the child's pid (to record it: a daemon that dies after
 * that finds the pid; one that dies before it leaves no QEMU, since the
 * child then exits without exec). If @spawned fails, the child exits
 * unexec'd, is reaped, and its error is returned.
 * An exec failure is reported back through a close-on-exec pipe.
 * Ownership: *@pid is our child (reap it). @qmp_fd stays the caller's.
 * Blocks: until the child has exec'd or failed to (and for @spawned).
 * Returns: 0; -errno of open/pipe/fork; @spawned's error; or the exec's
 * errno ("cannot run /usr/bin/qemu: Permission denied"), the child reaped
 * then.
 */
int vmd_process_spawn(char *const *argv, const char *log_path, int qmp_fd,
                      int (*spawned)(pid_t pid, void *opaque, moor_error *err), void *opaque,
                      pid_t *pid, moor_error *err);

/* vmd_process_pidfd - pidfd_open(@pid). Ownership: the fd is the caller's
 * (close it). Locks: none. Blocks: no. Returns the fd (close-on-exec) or
 * -errno. */
int vmd_process_pidfd(pid_t pid, moor_error *err);

/* vmd_process_signal - pidfd_send_signal(@pidfd, @sig). @pidfd stays the
 * caller's. Locks: none. Blocks: no (the signal is sent, not waited for).
 * Returns 0 or -errno (-ESRCH: it exited already). */
int vmd_process_signal(int pidfd, int sig);

/*
 * vmd_process_wait_exit - wait until the process behind @pidfd has exited,
 * up to @timeout_ms. @pidfd stays the caller's; it does not reap.
 * Locks: must hold none (no domain mutex; never on the loop thread).
 * Blocks: up to @timeout_ms (poll on the pidfd). Returns true if it has.
 */
bool vmd_process_wait_exit(int pidfd, unsigned timeout_ms);

/*
 * vmd_process_stat - from /proc/@pid/stat: the run state letter ('R',
 * 'S', 'T', 'Z'...) and the start time (clock ticks after boot); either
 * pointer may be NULL (the outputs are the caller's). Locks: none.
 * Blocks: reads /proc only. Returns 0; -ESRCH (no such process); -EIO
 * (unparsable).
 */
int vmd_process_stat(pid_t pid, char *state, uint64_t *start_time);

/*
 * vmd_process_cmdline_is - whether /proc/@pid/cmdline is exactly @argv
 * (compared while reading: any length). Blocks: reads /proc only.
 * Returns false also when it cannot be read.
 */
bool vmd_process_cmdline_is(pid_t pid, char *const *argv);

/*
 * vmd_process_run - run @argv (argv[0] looked up on PATH; no shell) with
 * stdin /dev/null, wait for it up to @timeout_ms, and capture its stdout
 * into @out (@out_size bytes, NUL-terminated, cut) and its stderr into
 * @errout (likewise); either may be NULL to discard. Used for qemu-img.
 * Locks: must hold none (blocks on the child). Blocks: up to @timeout_ms,
 * then SIGKILLs the child and reaps it.
 * Returns: the exit status (0..255) when it exited; -ETIMEDOUT (killed);
 * -ENOENT (no such program); -EINTR (killed by a signal); -errno of
 * pipe/posix_spawn.
 */
int vmd_process_run(char *const *argv, char *out, size_t out_size, char *errout, size_t errout_size,
                    unsigned timeout_ms, moor_error *err);

#endif /* MOOR_VMD_PROCESS_H */
