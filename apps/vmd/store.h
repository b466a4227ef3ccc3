/* SPDX-License-Identifier: MIT */
/*
 * store.h - what moor-vmd keeps on disk.
 *
 *   <state_dir>/domains/<uuid>.json   a domain's config (survives reboots)
 *   <runtime_dir>/<uuid>.status       a running domain: pid, start time,
 *                                     QMP socket, argv, state (a hint)
 *   <runtime_dir>/<uuid>.qmp          QEMU's QMP socket (bound by us)
 *   <runtime_dir>/<uuid>.pid          QEMU's -pidfile
 *   <log_dir>/<name>.log              QEMU's stdout and stderr
 *
 * Every write is atomic: a temporary file in the same directory, fsync,
 * rename over the old name, fsync of the directory. A daemon killed at any
 * moment leaves either the old file or the new one, never a torn one.
 * No function here takes a lock; all block on file I/O, so callers hold
 * no object mutex.
 */
#ifndef MOOR_VMD_STORE_H
#define MOOR_VMD_STORE_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <moor/error.h>
#include <moor/registry.h>

#include "domain.h"

struct json_object;

/* vmd_store_prepare - create the state, domains, runtime and log dirs
 * (0700) if missing. Returns 0 or -errno naming the directory. */
int vmd_store_prepare(const struct vmd_options *opt, moor_error *err);

/* vmd_store_write_json - write @o to @path atomically (0600). Does not
 * take @o (borrowed). Blocks on the disk (write, fsync of the file and of
 * its directory): never call it on the loop thread or with a domain's
 * mutex held. Returns 0 or -errno naming the step that failed (the old
 * file stays). */
int vmd_store_write_json(const char *path, struct json_object *o, moor_error *err);

/* vmd_store_runtime_path - "<runtime_dir>/<uuid><suffix>" into @buf
 * (PATH_MAX bytes). Returns 0 or -ENAMETOOLONG. */
int vmd_store_runtime_path(const struct vmd_options *opt, const moor_uuid *uuid, const char *suffix,
                           char *buf);

/* vmd_store_log_path - "<log_dir>/<name>.log" into @buf (PATH_MAX). */
int vmd_store_log_path(const struct vmd_options *opt, const char *name, char *buf);

/* vmd_store_config_save / _remove - a domain's config file. _remove of a
 * missing file succeeds. Both block on the disk (fsync of the file and/or
 * its directory): never call them on the loop thread or with a domain's
 * mutex held. Returns 0 or -errno. */
int vmd_store_config_save(const struct vmd_options *opt, const struct vmd_domain_config *cfg,
                          moor_error *err);
int vmd_store_config_remove(const struct vmd_options *opt, const moor_uuid *uuid, moor_error *err);

/* What a status file says. Owns its strings. */
struct vmd_status {
    pid_t pid;           /* 0: spawn in progress (see the pidfile) */
    uint64_t start_time; /* /proc/PID/stat field 22 */
    char **argv;         /* what was exec'd: NULL-terminated */
    char state[16];      /* a hint: query-status decides on reconnect */
    char reason[16];
    bool tainted;
    /* A long job that was running (domain-jobs.c): "" or "save"/"restore",
     * its file, and the state the domain was in before it ("running"). */
    char job[16];
    char job_path[PATH_MAX];
    char job_prior[16];
};

/* vmd_store_status_save - write the status file of @uuid atomically. @st
 * is borrowed. Blocks on the disk (as vmd_store_write_json): never call it
 * on the loop thread or with a domain's mutex held. Returns 0 or -errno. */
int vmd_store_status_save(const struct vmd_options *opt, const moor_uuid *uuid,
                          const struct vmd_status *st, moor_error *err);

/* vmd_store_status_load - read it. Ownership: *@st is the caller's
 * (vmd_status_clear); untouched on failure. Returns 0; -ENOENT; -EINVAL
 * (unparsable, named); -errno. */
int vmd_store_status_load(const struct vmd_options *opt, const moor_uuid *uuid,
                          struct vmd_status *st, moor_error *err);

/* vmd_store_runtime_remove - unlink the status file, the QMP socket and
 * the pidfile of @uuid (missing ones are fine); with @sync, fsync the
 * directory too. Without it this never waits for the disk, so the loop
 * thread may call it under a domain mutex: a lost unlink only leaves a
 * status file whose pid is gone, which the next start-up cleans up. */
void vmd_store_runtime_remove(const struct vmd_options *opt, const moor_uuid *uuid, bool sync);

/* vmd_status_clear - free what @st owns and zero it. NULL-safe. */
void vmd_status_clear(struct vmd_status *st);

/*
 * vmd_store_pidfile_read - the pid QEMU wrote to its -pidfile for @uuid.
 * Returns the pid (> 0) or -errno (-ENOENT: not written yet).
 */
int vmd_store_pidfile_read(const struct vmd_options *opt, const moor_uuid *uuid);

#endif /* MOOR_VMD_STORE_H */
