/* SPDX-License-Identifier: MIT */
/*
 * drive.h - driving a real moor-vmd from outside, shared by the demo
 * (apps/demo/demo.c) and the daemon's benchmark (bench/vmd/vmd-bench.c):
 *
 *   - a daemon under our control: temporary state/runtime dirs, fork+exec of
 *     moor-vmd with its flags, "ready" = GET /v1/version answers, SIGKILL and
 *     restart on the same dirs, SIGTERM at the end;
 *   - domain helpers over the one HTTP client (apps/vmctl/client.h): define,
 *     start, pid, destroy, undefine, each checking the documented status;
 *   - QEMU processes by pid: alive or gone (a zombie counts as gone), and a
 *     last-resort SIGKILL that first checks the pid is still our QEMU;
 *   - a load generator: N client threads, each with its own client, calling
 *     what a caller-supplied picker chooses until told to stop, recording
 *     every call (kind, domain, start, latency, status, error code);
 *   - percentiles of the recorded latencies.
 *
 * Nothing here is shared between threads except the load's stop flag and
 * what the picker's opaque data chooses to share (its own locking).
 */
#ifndef MOOR_DEMO_DRIVE_H
#define MOOR_DEMO_DRIVE_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <moor/error.h>

#include "client.h"

/* CLOCK_MONOTONIC in nanoseconds. Any thread; never blocks. */
uint64_t drive_now_ns(void);

/* A response cleared at scope exit (vmctl_response_clear). */
void drive__response_cleanup(struct vmctl_response *r);
#define drive_autoresponse __attribute__((cleanup(drive__response_cleanup)))

/* ---- the daemon --------------------------------------------------------- */

#define DRIVE_MAX_FLAGS 16

struct drive_daemon {
    char exe[PATH_MAX];
    char base[PATH_MAX];                /* the temporary directory holding everything below */
    char state_dir[PATH_MAX];           /* <base>/state */
    char runtime_dir[PATH_MAX];         /* <base>/run */
    char socket_path[PATH_MAX];         /* <base>/run/moor-vmd.sock */
    char log_path[PATH_MAX];            /* <base>/moor-vmd.log: the daemon's stderr, appended */
    const char *flags[DRIVE_MAX_FLAGS]; /* extra flags (borrowed, NULL-terminated) */
    pid_t pid;                          /* 0 when not running */
};

/*
 * drive_daemon_init - fill @d and create its temporary directories under
 * $TMPDIR (or /tmp), named after @tag. @flags: extra flags for every start
 * (borrowed for @d's life; NULL-terminated, at most DRIVE_MAX_FLAGS - 1).
 * Does not start anything. Ownership: @d is the caller's; drive_daemon_cleanup.
 * Returns 0; -EINVAL (too many flags, path too long); -errno of mkdir.
 */
int drive_daemon_init(struct drive_daemon *d, const char *exe, const char *tag,
                      const char *const *flags, moor_error *err);

/*
 * drive_daemon_start - fork+exec moor-vmd on @d's dirs and socket (stdout
 * and stderr appended to d->log_path), then wait until GET /v1/version
 * answers 200. The daemon is SIGKILLed by the kernel if the calling thread
 * exits first (PR_SET_PDEATHSIG): call it from the main thread. Blocks: up to @timeout_ms. On
 * failure the process, if it started, is killed and reaped (d->pid back to 0). Returns 0; -EALREADY
 * (already running); -ETIMEDOUT (not ready in time); -ECHILD (it exited: the message gives its
 * status); -errno of fork.
 */
int drive_daemon_start(struct drive_daemon *d, unsigned timeout_ms, moor_error *err);

/* drive_daemon_kill - SIGKILL and reap it (d->pid back to 0). Blocks until
 * reaped (a SIGKILLed process always is). No-op when not running. */
void drive_daemon_kill(struct drive_daemon *d);

/*
 * drive_daemon_stop - SIGTERM, wait up to @timeout_ms for its exit, then
 * SIGKILL. Returns 0 when it exited on its own with status 0; -ETIMEDOUT
 * (it had to be killed); -ECHILD (non-zero exit or a signal: the message
 * says which). d->pid is 0 afterwards in every case.
 */
int drive_daemon_stop(struct drive_daemon *d, unsigned timeout_ms, moor_error *err);

/* drive_daemon_cleanup - kill it if running, then remove d->base and all
 * below it unless @keep (then its path stays for a person to read). */
void drive_daemon_cleanup(struct drive_daemon *d, bool keep);

/*
 * drive_find_daemon - the moor-vmd to run: @given when not NULL/empty, else
 * @rel (e.g. "../vmd/moor-vmd") from the directory of this executable (the
 * build tree's layout). Fills @out (PATH_MAX bytes).
 * Returns 0; -ENOENT (not executable there: the message names the path).
 */
int drive_find_daemon(const char *given, const char *rel, char *out, moor_error *err);

/* ---- calls -------------------------------------------------------------- */

/*
 * drive_call - one request that must answer @want (an HTTP status).
 * Blocks: up to the client's timeout. Ownership: *@out (when not NULL) is
 * the caller's on success (vmctl_response_clear).
 * Returns 0; -EPROTO when another status came (the message holds the
 * method, path, status and the daemon's error code and message); the
 * transport errors of vmctl_request.
 */
int drive_call(struct vmctl_client *c, const char *method, const char *path, const char *body,
               long want, struct vmctl_response *out, moor_error *err);

/*
 * drive_domain_define - POST /v1/domains with a small `-machine none` TCG
 * domain named @name (@memory_mib of RAM; QEMU found on PATH).
 * Returns as drive_call (201 wanted).
 */
int drive_domain_define(struct vmctl_client *c, const char *name, unsigned memory_mib,
                        moor_error *err);

/*
 * drive_domain_launch - define @name (as drive_domain_define), start it,
 * and read its QEMU pid into *@pid. Returns 0, or the first step's error
 * (a domain defined but not started stays defined).
 */
int drive_domain_launch(struct vmctl_client *c, const char *name, unsigned memory_mib, pid_t *pid,
                        moor_error *err);

/* drive_domain_op - POST /v1/domains/@name/@op (start, destroy, ...) with
 * no body; 200 wanted. Returns as drive_call. */
int drive_domain_op(struct vmctl_client *c, const char *name, const char *op, moor_error *err);

/* drive_domain_undefine - DELETE /v1/domains/@name; 200 wanted. */
int drive_domain_undefine(struct vmctl_client *c, const char *name, moor_error *err);

/*
 * drive_domain_pid - the QEMU pid of running domain @name (GET
 * /v1/domains/@name, field "pid"); with @reason (may be NULL) filled with
 * the state's reason (NUL-terminated, truncated to @reason_len).
 * Returns 0; -ESRCH (no pid: not running); the errors of drive_call.
 */
int drive_domain_pid(struct vmctl_client *c, const char *name, pid_t *pid, char *reason,
                     size_t reason_len, moor_error *err);

/*
 * drive_wait_stats - poll GET /v1/domains/{name}/stats for each of the @n
 * domains @names until every one has answered 200 once (any other answer,
 * or none, is retried 2 ms later). Blocks: up to @timeout_ms.
 * Returns 0; -ETIMEDOUT with the message naming how many, the first one
 * still silent and its last answer.
 */
int drive_wait_stats(struct vmctl_client *c, const char *const *names, size_t n,
                     unsigned timeout_ms, moor_error *err);

/* ---- QEMU processes by pid ---------------------------------------------- */

/* drive_pid_alive - @pid exists and is not a zombie (reads /proc). */
bool drive_pid_alive(pid_t pid);

/*
 * drive_wait_pids_gone - wait until none of the @n pids is alive, polling
 * every millisecond. Blocks: up to @timeout_ms. Returns 0, or -ETIMEDOUT
 * with the message naming the first pid still alive.
 */
int drive_wait_pids_gone(const pid_t *pids, size_t n, unsigned timeout_ms, moor_error *err);

/*
 * drive_kill_qemu - last resort on a failure path: SIGKILL @pid if it is
 * alive and its /proc cmdline still names qemu-system and @name (so a pid
 * reused by someone else is left alone); a SIGSTOPped one dies too.
 * Returns true if a signal was sent.
 */
bool drive_kill_qemu(pid_t pid, const char *name);

/*
 * drive_find_qemu - any live process whose /proc cmdline names qemu-system
 * and @name (a unique domain name): its pid, or 0 when there is none. Scans
 * /proc once; never blocks.
 */
pid_t drive_find_qemu(const char *name);

/* ---- load --------------------------------------------------------------- */

enum drive_kind {
    DRIVE_VERSION = 0, /* GET /v1/version: HTTP round trip only */
    DRIVE_STATE,       /* GET /v1/domains/{id}/state: never talks to QEMU */
    DRIVE_STATS,       /* GET /v1/domains/{id}/stats: one QMP round trip or more */
    DRIVE_SUSPEND,     /* POST /v1/domains/{id}/suspend */
    DRIVE_RESUME,      /* POST /v1/domains/{id}/resume */
    DRIVE_NKINDS
};

/* drive_kind_name - "version", "state", ... */
const char *drive_kind_name(enum drive_kind k);

#define DRIVE_CODE_LEN 14

/* One call as the load recorded it. */
struct drive_rec {
    uint64_t start_ns;         /* drive_now_ns() when sent */
    uint64_t lat_ns;           /* until the whole answer arrived */
    uint16_t status;           /* HTTP status; 0 for a transport error */
    uint8_t kind;              /* enum drive_kind */
    uint8_t tag;               /* the picker's own label (drive_op.tag) */
    uint16_t dom;              /* the picker's domain index */
    char code[DRIVE_CODE_LEN]; /* the error's "code", "" on 2xx */
};

/* What a picker chooses for the next call. */
struct drive_op {
    enum drive_kind kind;
    unsigned dom; /* index into drive_load.domains (ignored for VERSION) */
    uint8_t tag;  /* copied into the record (e.g. "domain was frozen") */
};

struct drive_load;

/* One client thread; its records are readable after drive_load_stop. */
struct drive_thread {
    struct drive_load *load;
    unsigned index;
    pthread_t tid;
    struct vmctl_client *client;
    struct drive_rec *recs;
    size_t n_recs, cap_recs;
    /* Free for the picker (e.g. a round-robin position); 0 at start. Other
     * per-thread picker data belongs in the load's opaque data, by index:
     * a thread runs as soon as drive_load_start creates it. */
    uint64_t cursor;
    int failed; /* 0, or -ENOMEM when a record could not be kept */
};

/*
 * A load: @n_threads client threads over the domains @domains[0..n_domains).
 * pick(t, op) runs on thread t before each call and returns false to end
 * that thread; done(t, op, rec, message) (may be NULL) runs after each
 * call with its record and, for an error, the daemon's message (borrowed
 * for the call; NULL when none), e.g. to flip a suspended flag. Both run
 * on the load's threads, concurrently across threads: what they share is
 * theirs to guard.
 */
struct drive_load {
    const char *socket_path;
    const char *const *domains;
    unsigned n_domains;
    unsigned n_threads;
    long timeout_ms; /* per request (client timeout) */
    bool (*pick)(struct drive_thread *t, struct drive_op *op);
    void (*done)(struct drive_thread *t, const struct drive_op *op, const struct drive_rec *rec,
                 const char *message);
    void *opaque;
    atomic_bool stop; /* relaxed: a flag polled between calls, no data hangs on it */
    struct drive_thread *threads;
    unsigned started;
};

/*
 * drive_load_start - create the clients and start the threads; the load's
 * fields above `stop` must be set. Returns 0; -ENOMEM; -errno of
 * pthread_create (the threads already started are stopped and joined).
 * Success or not, drive_load_free releases what it made.
 */
int drive_load_start(struct drive_load *l, moor_error *err);

/*
 * drive_load_stop - ask every thread to stop after its current call and
 * join them. Blocks: until each thread's call in flight ends (bounded by
 * timeout_ms). Returns 0, or -ENOMEM if a thread lost records.
 */
int drive_load_stop(struct drive_load *l);

/* drive_load_free - free the threads, clients and records. NULL-safe fields. */
void drive_load_free(struct drive_load *l);

/* ---- figures ------------------------------------------------------------ */

/* Latencies (ns) of a selection of records. */
struct drive_lat {
    uint64_t *ns;
    size_t n, cap;
};

/* drive_lat_add - append; returns 0 or -ENOMEM. */
int drive_lat_add(struct drive_lat *l, uint64_t ns);

/* drive_lat_pct - the @p-th percentile (0..100, nearest rank) of @l; sorts
 * @l in place. 0 when empty. */
uint64_t drive_lat_pct(struct drive_lat *l, double p);

/* drive_lat_free - free and zero. */
void drive_lat_free(struct drive_lat *l);

/* drive_median - the median of @n doubles (sorted in place); 0 if @n is 0. */
double drive_median(double *v, size_t n);

#endif /* MOOR_DEMO_DRIVE_H */
