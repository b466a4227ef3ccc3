/* SPDX-License-Identifier: MIT */
/*
 * vmd.h - moor-vmd's shared context: the daemon's options and the handles
 * every part of it reaches through one `struct vmd`.
 *
 * Who owns what (one file per concern, see docs/vmd.md):
 *   main.c     flags -> struct vmd_options; creates the loop, the domain
 *              registry, the event bus, the worker pool and the HTTP server,
 *              in that order, and tears them down in reverse.
 *   http.c     libmicrohttpd on the moor loop; the socket; peer credentials.
 *   pool.c     the bounded worker pool and its per-domain lanes.
 *   api.c      the route table: URL + method -> parsed request -> an op.
 *   domain.c   domain objects, their state table and the ops of domain.h.
 *   domain-jobs.c  long jobs (save, restore, job info, abort) on a thread
 *              each, and their recovery after a restart; domain-internal.h
 *              shares domain.c's object and helpers with it.
 *   domain-backup.c  the backup long job (blockdev-backup), on those helpers.
 *   req-jobs.c the long jobs' request bodies.
 *   image.c    the image pool: image objects, users, blocks, qemu-img.
 *   config.c   a domain's config: JSON <-> struct, validated field by field.
 *   qmp.c      the QMP codec and calls (deadline, unresponsive flag).
 *   process.c  fork+exec of QEMU (argv only), pidfd, signals; run-and-capture.
 *   store.c    atomic files, status files, restart and reconnect.
 *   events.c   the event bus behind GET /v1/events.
 *   log.c      one line per event worth knowing.
 */
#ifndef MOOR_VMD_H
#define MOOR_VMD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <moor/loop.h>
#include <moor/registry.h>

#define VMD_VERSION     "0.1.0"
#define VMD_API_VERSION "v1"

/* Defaults of the daemon's flags (documented in moor-vmd --help and docs/vmd.md). */
#define VMD_DEFAULT_WORKERS          8u
#define VMD_DEFAULT_QMP_TIMEOUT_MS   10000u
#define VMD_DEFAULT_JOB_TIMEOUT_MS   30000u
#define VMD_DEFAULT_DESTROY_GRACE_MS 1000u
#define VMD_DEFAULT_SHUTDOWN_MS      30000u
#define VMD_DEFAULT_HTTP_TIMEOUT_S   60u        /* an idle or stalled API connection is closed */
#define VMD_DEFAULT_REFUSAL_PACE_MS  5u         /* one fail-fast refusal per connection per 5 ms */
#define VMD_MAX_CONNECTIONS          256u       /* API connections open at once; more are refused */
#define VMD_MAX_BODY                 (1u << 20) /* request body cap, bytes */
#define VMD_MAX_JSON_DEPTH           16         /* JSON nesting cap */
#define VMD_NAME_MAX                 64         /* [A-Za-z0-9._-]{1,64} */

enum vmd_log_format {
    VMD_LOG_TEXT = 0, /* "moor-vmd: <level>: [domain] [api] message" on stderr */
    VMD_LOG_JOURNAL,  /* systemd journal's "<N>" priority prefixes on stderr */
};

/* The daemon's options: flags, with the defaults above filled in by main.c.
 * Strings are owned by the struct (freed by vmd_options_clear in main.c). */
struct vmd_options {
    char *state_dir;           /* configs: <state_dir>/domains/<uuid>.json */
    char *runtime_dir;         /* status files, QMP sockets, pid files */
    char *log_dir;             /* QEMU logs: <log_dir>/<name>.log (default <state_dir>/log) */
    char *socket_path;         /* default <runtime_dir>/moor-vmd.sock */
    char *runas;               /* NULL, or the user QEMU runs as (-runas) */
    unsigned workers;          /* worker threads (default VMD_DEFAULT_WORKERS) */
    unsigned domain_workers;   /* most workers busy on one domain (0: workers / 4, at least 1) */
    unsigned queue_max;        /* requests queued per domain beyond that (0: 4 * workers) */
    unsigned qmp_timeout_ms;   /* deadline of every QMP call */
    unsigned job_timeout_ms;   /* deadline of a job wait */
    unsigned destroy_grace_ms; /* SIGTERM -> SIGKILL */
    unsigned shutdown_ms;      /* ACPI powerdown -> report */
    unsigned http_timeout_s;   /* idle API connection timeout (0: VMD_DEFAULT_HTTP_TIMEOUT_S) */
    unsigned refusal_pace_ms;  /* a connection's fail-fast refusals, one per this (0: not paced) */
    enum vmd_log_format log_format;
};

struct vmd_events; /* events.h */
struct vmd_pool;   /* pool.h */
struct vmd_http;   /* http.h */

/* The daemon. One per process; created and destroyed by main.c (or by a
 * test). Fields are set before any thread but main's runs and are then
 * read-only, except `stopping`. */
struct vmd {
    struct vmd_options opt;
    moor_loop *loop;           /* one loop thread: HTTP fds, QMP monitors, pidfds */
    moor_registry *domains;    /* every defined domain, by uuid and by name */
    moor_registry *images;     /* the image pool (image.h), by name (and a uuid) */
    struct vmd_events *events; /* GET /v1/events */
    struct vmd_pool *pool;     /* API calls run here, never on the loop */
    struct vmd_http *http;     /* the API socket; set by vmd_http_new before it serves */
    uint64_t started_ns;       /* CLOCK_MONOTONIC at start, for uptime */
    atomic_bool stopping;      /* SIGTERM/SIGINT seen; relaxed: a hint only */
};

#endif /* MOOR_VMD_H */
