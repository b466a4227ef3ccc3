/* SPDX-License-Identifier: MIT */
/*
 * domain-internal.h - the domain object's fields and domain.c's helpers,
 * shared with the files that add ops on domains beside domain.c (the long
 * jobs of domain-jobs.c). Nothing outside apps/vmd's QEMU side includes it:
 * the API side sees domain.h only.
 *
 * The rules of domain.c apply to every user: the mutex guards every field
 * below the config; a helper named _locked is called with it held (and
 * may release it inside, as its comment says); no helper here is called
 * on the loop thread unless it says so.
 */
#ifndef MOOR_VMD_DOMAIN_INTERNAL_H
#define MOOR_VMD_DOMAIN_INTERNAL_H

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <moor/job.h>
#include <moor/object.h>

#include "domain.h"
#include "qmp.h"

struct vmd_disk_refs; /* image.h */

struct json_object;
struct vmd_longjob; /* domain-jobs.c */

/* The QEMU a domain runs: all zero (pidfd -1) while shut off. */
struct proc {
    pid_t pid;
    int pidfd;        /* owned by the pidfd watch: valid while handler != 0 */
    uint64_t handler; /* the loop's id of the pidfd watch */
    bool child;       /* ours to reap (not one adopted after a restart) */
    uint64_t start_time;
    char **argv;
    vmd_qmp *qmp;
    char monitor_error[160]; /* why the QMP connection ended while QEMU lives on, or "" */
};

struct vmd_domain {
    moor_lockable parent;
    moor_job job;
    struct vmd *vmd;
    struct vmd_domain_config cfg; /* immutable after define: read without the mutex */
    char uuid_text[MOOR_UUID_STRING_SIZE];
    /* guarded by the mutex: */
    enum vmd_state state;
    enum vmd_reason reason;
    bool tainted;
    bool removed;                /* undefined or dropped at daemon exit */
    bool shutdown_seen;          /* QEMU sent SHUTDOWN: its exit is a shutdown */
    enum vmd_reason stop_reason; /* set by shutdown (and a failed start) before the exit */
    pid_t destroy_pid;           /* the QEMU a destroy is killing (0: none); wins over the above */
    enum vmd_reason expect;      /* reason for the state a MODIFY op's call causes */
    const char *excl_api;        /* API of the exclusive job held now (a literal), or NULL */
    int64_t excl_since_ms;       /* when it began (CLOCK_MONOTONIC) */
    struct proc proc;
    /* The long job running now (NULL: none) and the last one's outcome
     * (NULL: none yet); both owned, freed by dispose (domain-jobs.c). */
    struct vmd_longjob *longjob;
    struct vmd_longjob *last_longjob;
    struct vmd_disk_refs *disks; /* cfg's images (image.h); set at define, dropped at undefine */
};

/* Done after the mutex is dropped (see domain.c's file comment). */
struct teardown {
    vmd_qmp *qmp;
    uint64_t handler;
};

/* What start makes before the domain knows of it. */
struct launch {
    pid_t pid;
    int pidfd;
    uint64_t start_time;
    char **argv;
    vmd_qmp *qmp;
    const char *job;      /* NULL, or the long job this QEMU is for ("restore"):
                           * -incoming defer, recorded in the first status file */
    const char *job_path; /* that job's file, for the record */
};

/* ---- domain.c's helpers (see each definition's comment) ---------------- */

void add_str(struct json_object *o, const char *k, const char *v);
struct json_object *info_locked(vmd_domain *d);
int give(struct json_object *o, struct json_object **out, moor_error *err);
void set_state_locked(vmd_domain *d, enum vmd_state st, enum vmd_reason r);
void proc_stopped_locked(vmd_domain *d, struct teardown *td);
void teardown_finish(vmd_domain *d, struct teardown *td);
int64_t mono_ms(void);
int job_begin_locked(vmd_domain *d, unsigned kind, const char *api, moor_error *err);
void job_end_locked(vmd_domain *d, int rc);
int job_refusal_locked(vmd_domain *d, int rc, const char *api, moor_error *err);
int begin_locked(vmd_domain *d, enum vmd_op op, unsigned kind, const char *api, moor_error *err);
int qmp_locked(vmd_domain *d, const char *api, const char *cmd, struct json_object *args,
               struct json_object **ret, moor_error *err);
void status_save_locked(vmd_domain *d);
void launch_kill(struct launch *l, bool child);
void launch_clear(struct launch *l);
int launch(vmd_domain *d, struct launch *l, moor_error *err);
int launch_adopt_locked(vmd_domain *d, struct launch *l, bool child, moor_error *err);
bool kill_locked(vmd_domain *d, enum vmd_reason why);

/* ---- domain-jobs.c's hooks in domain.c and store.c -------------------- */

/* vmd_longjob_free - free a job record (dispose). NULL-safe. */
void vmd_longjob_free(struct vmd_longjob *j);

/* vmd_longjob_status_locked - copy the running job's record (kind, path,
 * the state before it) into @st for the status file. Mutex held. */
void vmd_longjob_status_locked(vmd_domain *d, struct vmd_status *st);

/* ---- domain-jobs.c's long-job helpers, for the kinds in other files ---- */

enum lj_kind { LJ_SAVE = 0, LJ_RESTORE, LJ_BACKUP };
struct vmd_backup;               /* domain-backup.c */
#define LJ_STOPPING (-ESHUTDOWN) /* the daemon is stopping: leave the job as it is */

/* A new job record (no lock). @a->target is a backup's path field. */
struct vmd_longjob *longjob_new(enum lj_kind kind, const struct vmd_longjob_args *a);
/* Take the async slot: 409 naming a running long job, or the table's verdict. */
int begin_longjob_locked(vmd_domain *d, enum vmd_op op, const char *api, uint32_t timeout,
                         moor_error *err);
/* Hand the async job to a new thread that runs d->longjob (job_main). */
int spawn_locked(vmd_domain *d, moor_error *err);
/* The job view of GET .../job. New object or NULL. */
struct json_object *job_view_locked(vmd_domain *d);
/* Phase and progress: the record, the async job, "job-progress" events. */
void set_phase_locked(vmd_domain *d, struct vmd_longjob *j, const char *phase);
void set_progress_locked(vmd_domain *d, struct vmd_longjob *j, uint64_t done, uint64_t total);
/* The re-check after each re-lock: 0, LJ_STOPPING, -EPIPE, -ECANCELED. */
int check_locked(vmd_domain *d, struct vmd_longjob *j, moor_error *err);
/* Sleep @ms with the mutex dropped. */
void sleep_unlocked(vmd_domain *d, unsigned ms);

/* ---- domain-backup.c's hooks in domain-jobs.c -------------------------- */

/* Attach @b (taken) to @j: freed with it. */
void longjob_set_backup(struct vmd_longjob *j, struct vmd_backup *b);
/* The job thread's run of a backup: returns with every block dropped and
 * the target gone unless it completed (or LJ_STOPPING: left for the next
 * daemon). Mutex held; dropped inside. */
int vmd_backup_run_locked(vmd_domain *d, struct vmd_longjob *j, struct vmd_backup *b,
                          moor_error *err);
/* The backup's fields of the job view ("disk", "target"). */
void vmd_backup_json(const struct vmd_backup *b, struct json_object *o);
/* Free the state (its blocks and references are gone by then). NULL-safe. */
void vmd_backup_free(struct vmd_backup *b);
/* A backup left by a killed daemon: cancel QEMU's job, delete the target. */
void vmd_backup_recover(struct vmd *vmd, const moor_uuid *uuid, const struct vmd_status *st,
                        int reconnected);

#endif /* MOOR_VMD_DOMAIN_INTERNAL_H */
