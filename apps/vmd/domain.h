/* SPDX-License-Identifier: MIT */
/*
 * domain.h - domains and the operations the API calls on them.
 *
 * This is the one interface between the HTTP side (http.c, pool.c, api.c)
 * and the side that manages QEMU (domain.c, config.c, qmp.c, process.c,
 * store.c). The API side parses and validates a request into the typed
 * arguments below and calls exactly one vmd_domain_* operation from a
 * worker thread; it never sees a domain's fields or QEMU.
 *
 * Every operation:
 *   - runs on a worker thread (never the loop thread) with no lock held;
 *   - follows the seeds' pattern inside: lookup (owned reference) -> lock ->
 *     job begin -> unlock around QMP calls (moor_monitor_enter/exit) ->
 *     re-check -> job end -> moor_end_api;
 *   - blocks at most: job wait (opt.job_timeout_ms) + one QMP deadline
 *     (opt.qmp_timeout_ms) per QMP call it makes, documented per op;
 *   - returns 0 and sets *@out to a new JSON object (the response body; the
 *     caller puts it), or a negative errno with @err's message naming the
 *     domain, the operation and, for a wait, the holder. *@out is untouched
 *     on failure.
 *
 * Error codes and the HTTP status the API maps them to (api.c has the one
 * table; docs/vmd.md and docs/api/moor-vmd.yaml list them):
 *   -EINVAL     400  bad argument (a config field, a QMP command name)
 *   -ENOENT     404  no such domain (also: removed while we waited, -ESRCH)
 *   -EEXIST     409  name or uuid already defined
 *   -EBUSY      409  the domain is busy: a job did not come in time (names
 *                    the holder), or it is in the wrong state for this op
 *                    ("domain vm1 is running: undefine needs it shut off")
 *   -ENOTCONN   409  the domain is not running (no QEMU to talk to)
 *   -EAGAIN     503  too many requests queued (the pool's refusal)
 *   -ETIMEDOUT  504  QEMU did not answer in time, or its monitor is marked
 *                    unresponsive ("QEMU has not answered query-status for 12 s")
 *   -EREMOTEIO  502  QEMU refused the command (its QMP error text)
 *   -EPIPE      502  QEMU went away during the call
 *   -EMSGSIZE   413  body too large (the HTTP layer's)
 *   -EPERM      403  peer uid refused (the HTTP layer's)
 *   anything else 500.
 */
#ifndef MOOR_VMD_DOMAIN_H
#define MOOR_VMD_DOMAIN_H

#include <stdbool.h>
#include <stdint.h>

#include <moor/error.h>
#include <moor/registry.h>

#include "vmd.h"

struct json_object;

/* A domain: a lockable moor object in vmd->domains. Opaque outside domain.c. */
typedef struct vmd_domain vmd_domain;

enum vmd_machine { VMD_MACHINE_PC = 0, VMD_MACHINE_Q35, VMD_MACHINE_NONE };
enum vmd_accel { VMD_ACCEL_AUTO = 0, VMD_ACCEL_KVM, VMD_ACCEL_TCG };

#define VMD_EXTRA_ARGS_MAX 64
#define VMD_DISKS_MAX      16 /* disks per domain */

enum vmd_disk_bus { VMD_BUS_VIRTIO = 0, VMD_BUS_IDE };

/* One disk of a config: an image of the pool (image.h), by name. */
struct vmd_disk {
    char image[VMD_NAME_MAX + 1];
    enum vmd_disk_bus bus; /* default virtio */
    bool readonly;         /* default false; ide disks cannot be read-only */
};

/* A validated domain config (the body of POST /v1/domains, and the file
 * <state_dir>/domains/<uuid>.json). Owns its strings. */
struct vmd_domain_config {
    char name[VMD_NAME_MAX + 1];
    moor_uuid uuid;
    uint64_t memory_mib;      /* 1..1048576; default 128 */
    unsigned vcpus;           /* 1..64; default 1 */
    enum vmd_machine machine; /* default pc */
    char *emulator; /* absolute path or a name looked up on PATH; default qemu-system-x86_64 */
    enum vmd_accel accel; /* auto: kvm if /dev/kvm is usable, else tcg */
    char **extra_args;    /* NULL or n_extra_args strings: appended to QEMU's argv (unsafe) */
    unsigned n_extra_args;
    struct vmd_disk disks[VMD_DISKS_MAX]; /* disks[0..n_disks-1], image names all different */
    unsigned n_disks;
};

/*
 * vmd_config_parse - a config from JSON: every field checked, unknown
 * fields refused, defaults filled, a uuid generated if absent (config.c).
 * Ownership: *@out is the caller's (vmd_config_clear); untouched on failure.
 * Returns 0; -EINVAL naming the field and why; -ENOMEM.
 */
int vmd_config_parse(struct json_object *json, struct vmd_domain_config *out, moor_error *err);

/* vmd_config_to_json - the config as JSON (new object). NULL on -ENOMEM. */
struct json_object *vmd_config_to_json(const struct vmd_domain_config *cfg);

/* vmd_config_clear - free what @cfg owns and zero it. NULL-safe. */
void vmd_config_clear(struct vmd_domain_config *cfg);

/* vmd_config_copy - a deep copy of @src into *@dst (the caller's, to clear).
 * Returns 0 or -ENOMEM (*@dst untouched). */
int vmd_config_copy(struct vmd_domain_config *dst, const struct vmd_domain_config *src);

/* vmd_config_machine_name / vmd_config_accel_name - "pc", "tcg"... (static). */
const char *vmd_config_machine_name(enum vmd_machine m);
const char *vmd_config_accel_name(enum vmd_accel a);
const char *vmd_config_bus_name(enum vmd_disk_bus b);

/* vmd_config_name_ok - @name is [A-Za-z0-9._-]{1,64} and not "." or "..":
 * the rule for domain and image names (image names become file names). */
bool vmd_config_name_ok(const char *name);

/* ---- the state table ------------------------------------------------------ */

/* A domain's state and why it is in it (docs/vmd-api.md lists the pairs). */
enum vmd_state { VMD_STATE_SHUTOFF = 0, VMD_STATE_RUNNING, VMD_STATE_PAUSED, VMD_STATE__COUNT };

enum vmd_reason {
    VMD_REASON_NONE = 0, /* "not chosen yet" inside domain.c; never shown */
    VMD_REASON_DEFINED,  /* shutoff */
    VMD_REASON_SHUTDOWN,
    VMD_REASON_DESTROYED,
    VMD_REASON_CRASHED,
    VMD_REASON_FAILED,
    VMD_REASON_BOOTED, /* running */
    VMD_REASON_RESUMED,
    VMD_REASON_RESET,
    VMD_REASON_RECONNECTED, /* running or paused */
    VMD_REASON_USER,        /* paused */
    VMD_REASON_STARTING,
    VMD_REASON_QEMU,
    VMD_REASON_SAVING,    /* paused: a save runs */
    VMD_REASON_SAVED,     /* shutoff: its memory is in a save file */
    VMD_REASON_RESTORING, /* paused: a restore runs */
    VMD_REASON_RESTORED,  /* running or paused */
    VMD_REASON__COUNT
};

/* The operations of the table (one per route that acts on a domain). */
enum vmd_op {
    VMD_OP_INFO = 0,
    VMD_OP_STATE,
    VMD_OP_STATS,
    VMD_OP_START,
    VMD_OP_SHUTDOWN,
    VMD_OP_DESTROY,
    VMD_OP_SUSPEND,
    VMD_OP_RESUME,
    VMD_OP_RESET,
    VMD_OP_QMP,
    VMD_OP_UNDEFINE,
    VMD_OP_SAVE,
    VMD_OP_RESTORE,
    VMD_OP_JOB,
    VMD_OP_ABORT,
    VMD_OP_BACKUP,
    VMD_OP__COUNT
};

/* Names ("shutoff", "crashed", "suspend"); static strings, "?" if out of range. */
const char *vmd_state_name(enum vmd_state st);
const char *vmd_reason_name(enum vmd_reason r);
const char *vmd_op_name(enum vmd_op op);

/* vmd_op_allowed - the table: may @op run while the domain is in @st? */
bool vmd_op_allowed(enum vmd_op op, enum vmd_state st);

/*
 * vmd_op_check - the table's verdict as an error for domain @name:
 * 0; -ENOTCONN ("domain vm1 is not running: suspend needs it running")
 * when it needs QEMU and there is none; -EBUSY ("domain vm1 is running:
 * undefine needs it shut off") otherwise; -EINVAL for an unknown op/state.
 */
int vmd_op_check(enum vmd_op op, enum vmd_state st, const char *name, moor_error *err);

/* ---- the daemon's domains ------------------------------------------------ */

/*
 * vmd_domains_load - at start-up: load every config from the state dir and,
 * for each status file in the runtime dir, reconnect to the QEMU still
 * running (or clean up after one that is gone). Runs after vmd->loop,
 * vmd->domains and vmd->events exist and the loop thread runs.
 * Blocks: up to one QMP deadline per running domain (reconnects run in parallel).
 * Returns 0, or a negative errno when the state dir cannot be read.
 */
int vmd_domains_load(struct vmd *vmd, moor_error *err);

/*
 * vmd_domains_shutdown - at daemon exit: close every monitor and drop every
 * domain from the registry; QEMU processes keep running (their status files
 * stay, so the next daemon reconnects). Waits for no job: callers were
 * already drained by the pool.
 */
void vmd_domains_shutdown(struct vmd *vmd);

/*
 * vmd_domain_lookup - a domain by name or by canonical uuid text.
 * Lock-free (registry). Ownership: a new reference (moor_unref), or NULL.
 * Context: any thread, the loop thread included (never blocks).
 */
vmd_domain *vmd_domain_lookup(struct vmd *vmd, const char *name_or_uuid);

/* vmd_domain_uuid / vmd_domain_name - for the pool's lanes and log lines.
 * Borrowed while the caller holds a reference; the name may change only by
 * undefine+define (never in place), so it is stable for a reference. */
const moor_uuid *vmd_domain_uuid(vmd_domain *dom);
const char *vmd_domain_name(vmd_domain *dom);

/* ---- operations (one per route; see docs/vmd.md for each) ---------------- */

/* GET /v1/domains: {"domains": [<summary>...]} sorted by name. No job. */
int vmd_domain_list(struct vmd *vmd, struct json_object **out, moor_error *err);

/* POST /v1/domains: define. Consumes *@cfg (cleared on return, success or not).
 * Writes the config file atomically before the domain becomes visible.
 * -EEXIST naming the key that clashed. 201 with the domain's info. */
int vmd_domain_define(struct vmd *vmd, struct vmd_domain_config *cfg, struct json_object **out,
                      moor_error *err);

/* GET /v1/domains/{id}: info (config, state, reason, pid, tainted,
 * monitor responsiveness, current job). Mutex only, no job, no QEMU. */
int vmd_domain_info(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err);

/* DELETE /v1/domains/{id}: undefine; -EBUSY unless shut off. MODIFY job. */
int vmd_domain_undefine(struct vmd *vmd, vmd_domain *dom, struct json_object **out,
                        moor_error *err);

/* GET /v1/domains/{id}/state: {"state","reason","tainted","monitor"}.
 * Mutex only: never a job, never QEMU, so it answers during any job. */
int vmd_domain_state(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err);

/* GET /v1/domains/{id}/stats: QUERY job; asks QEMU (query-status,
 * query-cpus-fast, query-blockstats). */
int vmd_domain_stats(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err);

/* POST /v1/domains/{id}/start {"paused": bool}: MODIFY job; spawns QEMU,
 * connects QMP, `cont` unless paused. -EINVAL when the emulator is not
 * found; -EPIPE when QEMU exits before its monitor answers (the message
 * names QEMU's log). */
int vmd_domain_start(struct vmd *vmd, vmd_domain *dom, bool paused, struct json_object **out,
                     moor_error *err);

/* POST /v1/domains/{id}/shutdown {"timeout_ms": N} (0: opt.shutdown_ms):
 * MODIFY job; system_powerdown, then waits for QEMU to exit up to the
 * timeout; -ETIMEDOUT ("still running after N s") if it does not;
 * -EAGAIN if the daemon starts stopping meanwhile (QEMU keeps running). */
int vmd_domain_shutdown(struct vmd *vmd, vmd_domain *dom, unsigned timeout_ms,
                        struct json_object **out, moor_error *err);

/* POST /v1/domains/{id}/destroy: kills first, with no job: SIGTERM,
 * SIGKILL after opt.destroy_grace_ms (at once if the monitor is
 * unresponsive or the process stopped); only then a DESTROY job (jumps the
 * queue, allowed beside any job) to apply shutoff (destroyed). A job held
 * by another op never delays the kill: QEMU's exit ends its QMP call
 * (-EPIPE) or its wait. Never waits for QMP. Blocks: grace + 10 s for the
 * exit (-ETIMEDOUT) + the holders noticing it (opt.job_timeout_ms, -EBUSY). */
int vmd_domain_destroy(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err);

/* POST /v1/domains/{id}/{suspend,resume,reset}: MODIFY job; stop / cont /
 * system_reset. */
int vmd_domain_suspend(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err);
int vmd_domain_resume(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err);
int vmd_domain_reset(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err);

/* POST /v1/domains/{id}/qmp {"execute": "...", "arguments": {...}}: MODIFY
 * job; raw pass-through; marks the domain tainted. Takes a reference to
 * @arguments (may be NULL). {"return": ...} on success; a QMP error is
 * -EREMOTEIO with QEMU's class and text. */
int vmd_domain_qmp(struct vmd *vmd, vmd_domain *dom, const char *execute,
                   struct json_object *arguments, struct json_object **out, moor_error *err);

/* ---- long jobs: save, restore, job info, abort (domain-jobs.c) ---------- */

/* Who asked for a long job: the HTTP peer's credentials (SO_PEERCRED), when known. */
struct vmd_client {
    bool known;
    unsigned uid;
    int pid;
};

#define VMD_SAVE_MAGIC         "MOORSAVE" /* the save file's first 8 bytes */
#define VMD_SAVE_VERSION       1u
#define VMD_SAVE_ALIGN         4096u         /* QEMU's stream starts at a multiple of this */
#define VMD_SAVE_CONFIG_MAX    (64u * 1024u) /* the header's config JSON, bytes */
#define VMD_SAVE_PATH_MAX      1024u         /* a save file's path, bytes */
#define VMD_SAVE_BANDWIDTH_MAX 100000u       /* MiB/s, the most a save may ask for */

/* What a save or restore is asked to do (req-jobs.c fills it). */
struct vmd_longjob_args {
    char path[VMD_SAVE_PATH_MAX + 1]; /* absolute, no "." or ".." segment */
    unsigned bandwidth_mib_s;         /* save: 0 = QEMU's default */
    bool paused;                      /* restore: leave it paused */
    char target[VMD_NAME_MAX + 1];    /* backup: the image to create */
    char disk[VMD_NAME_MAX + 1];      /* backup: the disk's image ("": the first disk) */
    struct vmd_client client;
};

/*
 * POST /v1/domains/{id}/save: 202 with the job view. Creates the file
 * (O_CREAT|O_EXCL, 0600; -EEXIST when it exists, -ENOENT when its
 * directory does not), writes the header, records the job in the status
 * file, then hands the async job to a thread of its own that pauses,
 * passes the fd (getfd), migrates to it and follows query-migrate. -EBUSY
 * naming the running job when one runs. Blocks: the job wait
 * (opt.job_timeout_ms) and the file's creation, never the transfer.
 */
int vmd_domain_save(struct vmd *vmd, vmd_domain *dom, const struct vmd_longjob_args *args,
                    struct json_object **out, moor_error *err);

/*
 * POST /v1/domains/{id}/backup: 202 with the job view (domain-backup.c).
 * Blocks resize and delete of the disk's image, creates @args->target in
 * the pool (qcow2, the disk's virtual size, blocked from every use until
 * the job ends) and hands QEMU's blockdev-backup to a thread. -ENOTCONN
 * (not running), -ENOENT (no such disk), -EEXIST (target taken), -EBUSY
 * (a long job runs, or the image is blocked), -EIO (qemu-img).
 */
int vmd_domain_backup(struct vmd *vmd, vmd_domain *dom, const struct vmd_longjob_args *args,
                      struct json_object **out, moor_error *err);

/*
 * POST /v1/domains/restore: reads the header of @args->path, defines the
 * domain from it when no domain has its uuid (-EEXIST when its name is
 * another domain's), and starts the restore job on a thread (202). The
 * domain must be shut off (-EBUSY otherwise).
 */
int vmd_domain_restore(struct vmd *vmd, const struct vmd_longjob_args *args,
                       struct json_object **out, moor_error *err);

/* GET /v1/domains/{id}/job: the running job (kind, phase, bytes, rate,
 * elapsed, remaining, api, client) and the last one's outcome. Mutex only. */
int vmd_domain_job(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err);

/* DELETE /v1/domains/{id}/job: an ABORT job that asks the running long
 * job to stop; 200 at once with the job view (the job ends on its own
 * thread). -ENOENT when no long job runs. Blocks: the job wait. */
int vmd_domain_abort(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err);

/* vmd_longjobs_drain - at daemon exit, after vmd_domains_shutdown: wait
 * for every job thread to notice and return (they leave their record in
 * the status file for the next daemon). Blocks: one QMP deadline at most. */
void vmd_longjobs_drain(struct vmd *vmd);

/* GET /v1/debug, the domains' part: adds "census" (live objects per class),
 * "jobs" (each held or waited: domain, kind, api, thread, age_ms) and
 * "monitors" (each domain's pending QMP calls: command, age_ms, deadline_ms,
 * responsive) to @into. Never blocks on a job. */
int vmd_domains_debug(struct vmd *vmd, struct json_object *into, moor_error *err);

/*
 * vmd_domain_fail_fast - refuse, before it takes a worker, a call of op
 * @api (an op's name: "stats", "suspend"...; others are let through)
 * that could only fail: its op's first act is a QMP call, the domain's
 * state allows the op, and QEMU's monitor is marked unresponsive (qmp.h),
 * so the call would wait for its job and then fail at once with
 * -ETIMEDOUT anyway. The answer is the one the op would give ("domain
 * vm1: stats: QEMU has not answered query-status for 12 s"), minus the
 * wait; a call on a domain whose mutex is busy goes the normal way.
 * Ownership: @dom borrowed (the caller holds a reference).
 * Locks: none held; tries @dom's mutex (never waits for it) and takes the
 * QMP connection's leaf mutex. Blocks: never. Context: any thread, the
 * loop thread included.
 * Returns 0 (run the call) or -ETIMEDOUT with @err set.
 */
int vmd_domain_fail_fast(vmd_domain *dom, const char *api, moor_error *err);

/* ---- for store.c (the QEMU side's own files) ----------------------------- */

struct vmd_status;

/* vmd_domain_add_loaded - a config read at start-up becomes a shut-off
 * domain in the registry. Consumes *@cfg. Returns 0, -EEXIST, -ENOMEM. */
int vmd_domain_add_loaded(struct vmd *vmd, struct vmd_domain_config *cfg, moor_error *err);

/*
 * vmd_domain_reconnect - adopt the QEMU a status file describes: check the
 * pid is the process we started (start time, command line), connect to
 * its QMP socket, query-status, watch its pidfd. On failure the domain
 * stays shut off (reason crashed when its QEMU is gone) and the caller
 * removes the runtime files. Blocks: up to one QMP deadline.
 * Returns 0; -ENOENT (no such domain); -ESRCH (QEMU gone or not ours);
 * the codes of the QMP handshake and call.
 */
int vmd_domain_reconnect(struct vmd *vmd, const moor_uuid *uuid, const struct vmd_status *st,
                         moor_error *err);

/*
 * vmd_longjob_recover - after vmd_domain_reconnect (@reconnected: its
 * result) for a status file that records a long job: a save whose QEMU
 * still runs is finished when QEMU says the migration completed, and
 * cancelled otherwise (the partial file removed, the domain resumed if it
 * ran before); a restore's QEMU is killed (the domain shut off, failed).
 * When QEMU is gone, only the partial save file is removed. Blocks: a few
 * QMP deadlines.
 */
void vmd_longjob_recover(struct vmd *vmd, const moor_uuid *uuid, const struct vmd_status *st,
                         int reconnected);

#endif /* MOOR_VMD_DOMAIN_H */
