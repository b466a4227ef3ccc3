/* SPDX-License-Identifier: MIT */
/*
 * vs-libvirt.h - moor-vmd and libvirtd side by side (`moor-vmd-bench
 * --vs-libvirt`, what `make bench-vmd` runs): the same workloads against
 * both daemons, the same QEMU binary and the same domains, interleaved,
 * printed as one table (workload, moor-vmd, libvirtd, ratio) or JSON.
 * Built only when meson finds libvirt (a bench-only dependency).
 *
 * Each daemon is a "side": a small table of operations (per-thread
 * connections and calls, domain life cycle, pids, restart) that the
 * workloads use without knowing which daemon they drive. The long-job
 * workload lives in vs-longjob.c so it can grow on its own.
 */
#ifndef MOOR_BENCH_VS_LIBVIRT_H
#define MOOR_BENCH_VS_LIBVIRT_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <moor/error.h>

#define VS_DOMAINS  32 /* running on each daemon throughout */
#define VS_NAME_LEN 48
#define VS_MEMORY   64 /* MiB, `pc`, TCG, no disk, no graphics */
#define VS_NOTE_LEN 64
#define VS_LONG     VS_DOMAINS /* names[VS_LONG]: workload 4's domain, while it exists */

/* The calls a load thread makes. */
enum vs_op {
    VS_STATE,   /* moor-vmd GET .../state; libvirt virDomainGetState */
    VS_STATS,   /* moor-vmd GET .../stats; libvirt virDomainListGetStats(STATE|VCPU|BLOCK) */
    VS_QMP,     /* query-status through each daemon's QMP pass-through */
    VS_JOBINFO, /* moor-vmd GET .../job; libvirt virDomainGetJobInfo */
};

struct vs_side;

/* What a workload can ask of a daemon. Every call takes a connection made
 * by open() and used by one thread at a time; names are the side's. */
struct vs_ops {
    int (*open)(struct vs_side *s, void **conn, moor_error *err);
    void (*close)(void *conn);
    /* One call on domain @dom (index into s->names); 0 or -errno with the
     * daemon's message in @msg. */
    int (*call)(struct vs_side *s, void *conn, enum vs_op op, unsigned dom, char *msg, size_t len);
    /* @blob (may be NULL): a file QEMU loads into the guest's RAM at 16 MiB
     * (`-device loader`), so that memory is not all zero pages. */
    int (*define)(struct vs_side *s, void *conn, const char *name, unsigned memory_mib,
                  const char *blob, moor_error *err);
    int (*start)(struct vs_side *s, void *conn, const char *name, moor_error *err);
    int (*destroy)(struct vs_side *s, void *conn, const char *name, moor_error *err);
    int (*undefine)(struct vs_side *s, void *conn, const char *name, moor_error *err);
    /* The QEMU pid of running domain @name. */
    int (*qemu_pid)(struct vs_side *s, void *conn, const char *name, pid_t *pid, moor_error *err);
    /* SIGKILL the daemon and start it again: ms until it answered at all,
     * and until all VS_DOMAINS domains answered a stats call. */
    int (*restart)(struct vs_side *s, double *first_ms, double *all_ms, moor_error *err);
    /* Save running domain @name to the file @path (it stops) and restore it
     * from there; NULL when the daemon cannot (workload 4 then says so). */
    int (*save)(struct vs_side *s, void *conn, const char *name, const char *path, moor_error *err);
    int (*restore)(struct vs_side *s, void *conn, const char *name, const char *path,
                   moor_error *err);
};

struct vs_side {
    const char *label; /* "moor-vmd", "libvirtd" */
    const struct vs_ops *ops;
    void *main_conn;                         /* the main thread's connection */
    char names[VS_DOMAINS + 1][VS_NAME_LEN]; /* [VS_LONG] empty but in workload 4 */
    pid_t qemu_pids[VS_DOMAINS];
    pid_t daemon_pid; /* kept current by the side (restart changes it) */
    pid_t helper_pid; /* libvirtd's virtlogd; 0 for moor-vmd */
    const char *qemu; /* the one QEMU binary, absolute */
    char prefix[24];  /* of every domain name this side defines */
    void *priv;       /* the side's own state */
};

/* A cell of the table: a number, a lower bound ("> 60 s") or a note. */
struct vs_cell {
    double v;
    bool set, bound;
    char note[VS_NOTE_LEN];
};

/* Shared settings (vs-libvirt.c owns them). */
struct vs_cfg {
    double secs;  /* each load window */
    double cap_s; /* the hung-QEMU window and cap on a never-returning call */
    bool quick, json;
};

/*
 * vs_longjob - workload 4 on @s: save and restore of a running 256 MiB
 * guest while other threads call state, stats and job info on it and on
 * another domain. Fills @p50/@p99/@gap (ms: calls on the saving or
 * restoring domain; the longest gap between answers on another domain)
 * and @save/@restore (ms), each a number or a note ("not available: ...").
 * Blocks: the save and restore plus a few seconds. Returns 0 (also when
 * the side cannot do it: the cells say so); -errno on a failure.
 */
int vs_longjob(struct vs_side *s, const struct vs_cfg *cfg, struct vs_cell *save,
               struct vs_cell *restore, struct vs_cell *p50, struct vs_cell *p99,
               struct vs_cell *gap, moor_error *err);

/*
 * The two sides. vs_moor_init starts moor-vmd (@daemon: its path) on
 * temporary directories with its default flags; vs_lv_init makes the
 * libvirtd configuration, starts virtlogd and libvirtd under the runner
 * (libvirtd-run.h) and waits until qemu:///system connects (up to 30 s),
 * removing domains a crashed earlier run left (names with the prefix).
 * Neither defines a domain. vs_*_fini stop everything the side started
 * (its daemon and, by pid, any QEMU of its domains still alive); @keep_logs
 * leaves the daemons' logs (moor-vmd's directory, libvirtd's and
 * virtlogd's stderr) for reading; otherwise they are removed. Context: the main thread.
 * Returns 0 or -errno with @err set.
 */
int vs_moor_init(struct vs_side *s, const char *daemon, const char *qemu, moor_error *err);
int vs_moor_fini(struct vs_side *s, bool keep_logs, moor_error *err);
int vs_lv_init(struct vs_side *s, const char *qemu, moor_error *err);
int vs_lv_fini(struct vs_side *s, bool keep_logs, moor_error *err);

/* vs_libvirt_main - the whole side-by-side run; argv as moor-vmd-bench's
 * with --vs-libvirt among them. Returns the process exit status. */
int vs_libvirt_main(int argc, char **argv);

/* Helpers shared by the vs-*.c files. */
uint64_t vs_now_ns(void);
void vs_nap(double secs);
void vs_cell_num(struct vs_cell *c, double v);
void vs_cell_note(struct vs_cell *c, const char *note);

#endif /* MOOR_BENCH_VS_LIBVIRT_H */
