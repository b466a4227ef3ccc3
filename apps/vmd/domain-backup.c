/* SPDX-License-Identifier: MIT */
/*
 * domain-backup.c - the backup long job: QEMU's blockdev-backup of a
 * running domain's disk into a new image of the pool.
 *
 * Theory of operation. A backup is a long job like a save (domain-jobs.c:
 * one async job on the domain, a record, a thread, the same job view,
 * progress events, abort and restart record); what is its own is here.
 *
 * Start (the API's pool worker): take the domain's async slot (409 naming
 * a running long job), then with the domain's mutex dropped (an image's
 * mutex and a domain's are never held at once): block the source image's
 * resize and delete ("backup job of domain web1 (disk base.qcow2 into
 * bk.qcow2)"; the refusal adds the age), create the target (qcow2, the
 * source's virtual size) with a hold on every operation placed before the
 * create's own block goes, so nobody can use, resize or delete a half
 * written copy. Then the record (status file: job "backup", the target's
 * name) and the thread.
 *
 * Run (the job's thread, each QMP call with the mutex dropped):
 * blockdev-add a qcow2 node BK_NODE on the target's file, blockdev-backup
 * (sync full, job-id BK_JOB, auto-dismiss off so that the outcome stays
 * readable in query-jobs), then query-jobs every LJ_POLL_MS until our job
 * is "concluded" (an "error" there is the failure: ENOSPC, I/O). An abort
 * is job-cancel and a wait for "concluded". Then job-dismiss and
 * blockdev-del. After a monitor timeout (a stalled QEMU) no further QMP
 * call is made: the monitor is marked unresponsive, destroy kills at once.
 *
 * End: with the mutex dropped, the source's block goes; the target's hold
 * goes, and on any failure the target is deleted in the same image-mutex
 * hold as the hold is dropped (vmd_image_delete_held). A daemon stopping
 * (LJ_STOPPING) leaves the target and the record to the next daemon,
 * which cancels QEMU's job and deletes the target (vmd_backup_recover).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <json-c/json.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moor/job.h>
#include <moor/object.h>

#include "domain-internal.h"
#include "domain.h"
#include "image.h"
#include "log.h"
#include "store.h"

#define BK_NODE         "moor-backup-target" /* the target's node in QEMU */
#define BK_JOB          "moor-backup"        /* QEMU's job id */
#define BK_POLL_MS      100u                 /* query-jobs period */
#define BK_CANCEL_POLLS 100u                 /* 50 ms apart: 5 s for a cancel to conclude */
#define BK_IMG_OPS      (MOOR_BLOCKER_OP(VMD_IMAGE_OP_RESIZE) | MOOR_BLOCKER_OP(VMD_IMAGE_OP_DELETE))

struct vmd_backup {
    struct vmd *vmd;
    char domain[VMD_NAME_MAX + 1];
    char disk[VMD_NAME_MAX + 1]; /* the source image */
    char target[VMD_NAME_MAX + 1];
    char node[VMD_IMAGE_NODE_MAX + 1]; /* the disk's node in QEMU */
    unsigned bandwidth_mib_s;
    vmd_image *src, *dst; /* owned references until the end */
    moor_block_token src_block, dst_block;
    bool node_added, job_started, concluded;
};

void vmd_backup_free(struct vmd_backup *b)
{
    free(b); /* its blocks and references went in backup_release */
}

void vmd_backup_json(const struct vmd_backup *b, struct json_object *o)
{
    add_str(o, "disk", b->disk);
    add_str(o, "target", b->target);
}

/* Drop the blocks and references; delete the target unless @keep. No
 * domain mutex held. */
static void backup_release(struct vmd_backup *b, bool keep)
{
    moor_error err = MOOR_ERROR_INIT;

    moor_unblock(&b->src_block);
    if (b->dst && !keep) {
        struct json_object *o = NULL;
        if (vmd_image_delete_held(b->vmd, b->dst, &b->dst_block, &o, &err) < 0)
            vmd_log(VMD_LOG_ERR, b->domain, "backup", "cannot delete the partial target: %s",
                    moor_error_message(&err));
        else
            vmd_log(VMD_LOG_INFO, b->domain, "backup", "removed the partial target %s", b->target);
        json_object_put(o);
    }
    moor_unblock(&b->dst_block);
    moor_clear(&b->src);
    moor_clear(&b->dst);
    moor_error_clear(&err);
}

/* ---- QMP (mutex held; dropped for each call) --------------------------------- */

static int qmp_put_locked(vmd_domain *d, const char *cmd, struct json_object *args, moor_error *err)
{
    int rc = args ? qmp_locked(d, "backup", cmd, args, NULL, err)
                  : moor_error_set(err, -ENOMEM, "out of memory");

    json_object_put(args);
    return rc;
}

static struct json_object *args_id(const char *key, const char *value)
{
    struct json_object *o = json_object_new_object();

    if (o)
        add_str(o, key, value);
    return o;
}

/* What query-jobs says of our job: status ("" when QEMU has none), bytes,
 * and the error of a concluded job ("" if none). */
struct qjob {
    char status[24];
    char error[200];
    uint64_t done, total;
};

static void qjob_parse(struct json_object *ret, struct qjob *q)
{
    struct json_object *v;

    memset(q, 0, sizeof(*q));
    for (size_t i = 0;
         json_object_is_type(ret, json_type_array) && i < json_object_array_length(ret); i++) {
        struct json_object *e = json_object_array_get_idx(ret, i);
        if (!json_object_object_get_ex(e, "id", &v) ||
            strcmp(json_object_get_string(v), BK_JOB) != 0)
            continue;
        if (json_object_object_get_ex(e, "status", &v))
            snprintf(q->status, sizeof(q->status), "%s", json_object_get_string(v));
        if (json_object_object_get_ex(e, "current-progress", &v))
            q->done = (uint64_t)json_object_get_int64(v);
        if (json_object_object_get_ex(e, "total-progress", &v))
            q->total = (uint64_t)json_object_get_int64(v);
        if (json_object_object_get_ex(e, "error", &v))
            snprintf(q->error, sizeof(q->error), "%s", json_object_get_string(v));
        return;
    }
}

static int query_job_locked(vmd_domain *d, struct qjob *q, moor_error *err)
{
    struct json_object *ret = NULL;
    int rc = qmp_locked(d, "backup", "query-jobs", NULL, &ret, err);

    if (rc == 0)
        qjob_parse(ret, q);
    json_object_put(ret);
    return rc;
}

/* job-cancel, then wait (bounded) for QEMU to conclude the job, so that
 * it no longer writes the target we are about to delete. */
static bool cancel_job_locked(vmd_domain *d)
{
    moor_error err = MOOR_ERROR_INIT;
    struct qjob q;

    if (qmp_put_locked(d, "job-cancel", args_id("id", BK_JOB), &err) < 0)
        vmd_log(VMD_LOG_WARNING, d->cfg.name, "backup", "%s", moor_error_message(&err));
    for (unsigned i = 0; i < BK_CANCEL_POLLS && d->proc.qmp; i++) {
        moor_error_clear(&err);
        if (query_job_locked(d, &q, &err) < 0)
            break;
        if (!q.status[0] || strcmp(q.status, "concluded") == 0)
            return true;
        sleep_unlocked(d, BK_POLL_MS / 2);
    }
    moor_error_clear(&err);
    return false;
}

/* job-dismiss (a concluded job) and blockdev-del of the target's node. */
static void qemu_cleanup_locked(vmd_domain *d, bool dismiss, bool node)
{
    moor_error err = MOOR_ERROR_INIT;

    if (dismiss && qmp_put_locked(d, "job-dismiss", args_id("id", BK_JOB), &err) < 0)
        vmd_log(VMD_LOG_WARNING, d->cfg.name, "backup", "%s", moor_error_message(&err));
    moor_error_clear(&err);
    if (node && qmp_put_locked(d, "blockdev-del", args_id("node-name", BK_NODE), &err) < 0)
        vmd_log(VMD_LOG_WARNING, d->cfg.name, "backup", "%s", moor_error_message(&err));
    moor_error_clear(&err);
}

/* ---- the job's thread ---------------------------------------------------------- */

static int backup_start_locked(vmd_domain *d, struct vmd_longjob *j, struct vmd_backup *b,
                               moor_error *err)
{
    char path[PATH_MAX];

    set_phase_locked(d, j, "setup");
    if (vmd_image_path(&d->vmd->opt, b->target, path) < 0)
        return moor_error_set(err, -ENAMETOOLONG, "image %s: path too long", b->target);
    struct json_object *args = json_object_new_object(), *file = json_object_new_object();
    if (args && file) {
        add_str(args, "driver", "qcow2");
        add_str(args, "node-name", BK_NODE);
        add_str(file, "driver", "file");
        add_str(file, "filename", path);
        json_object_object_add(args, "file", file);
        file = NULL;
    }
    json_object_put(file);
    int rc = qmp_put_locked(d, "blockdev-add", args, err);
    b->node_added = rc == 0;
    rc = rc ?: check_locked(d, j, err);
    if (rc < 0)
        return rc;
    args = json_object_new_object();
    if (args) {
        add_str(args, "job-id", BK_JOB);
        add_str(args, "device", b->node);
        add_str(args, "target", BK_NODE);
        add_str(args, "sync", "full");
        json_object_object_add(args, "auto-dismiss", json_object_new_boolean(false));
        if (b->bandwidth_mib_s)
            json_object_object_add(args, "speed",
                                   json_object_new_int64((int64_t)b->bandwidth_mib_s << 20));
    }
    rc = qmp_put_locked(d, "blockdev-backup", args, err);
    b->job_started = rc == 0;
    return rc;
}

/* Poll query-jobs until our job concludes. */
static int backup_follow_locked(vmd_domain *d, struct vmd_longjob *j, struct vmd_backup *b,
                                moor_error *err)
{
    struct qjob q;

    set_phase_locked(d, j, "transfer");
    for (;;) {
        sleep_unlocked(d, BK_POLL_MS);
        int rc = check_locked(d, j, err);
        rc = rc ?: query_job_locked(d, &q, err);
        if (rc < 0)
            return rc;
        if (!q.status[0])
            return moor_error_set(err, -EIO, "domain %s: backup: QEMU has no job %s any more",
                                  d->cfg.name, BK_JOB);
        if (strcmp(q.status, "concluded") != 0) {
            set_progress_locked(d, j, q.done, q.total);
            continue;
        }
        b->concluded = true;
        if (q.error[0])
            return moor_error_set(err, strstr(q.error, "No space") ? -ENOSPC : -EIO,
                                  "domain %s: backup: QEMU's job failed: %s", d->cfg.name, q.error);
        set_progress_locked(d, j, q.total, q.total);
        return 0;
    }
}

int vmd_backup_run_locked(vmd_domain *d, struct vmd_longjob *j, struct vmd_backup *b,
                          moor_error *err)
{
    int rc = check_locked(d, j, err);

    rc = rc ?: backup_start_locked(d, j, b, err);
    rc = rc ?: backup_follow_locked(d, j, b, err);
    /* relaxed: a hint; a monitor closed by the daemon's exit ends a call with -EPIPE */
    bool stopping =
        rc == LJ_STOPPING ||
        (rc < 0 && (d->removed || atomic_load_explicit(&d->vmd->stopping, memory_order_relaxed)));
    /* After a timeout QEMU is hung (the monitor is marked): no more calls. */
    bool talk = !stopping && rc != -ETIMEDOUT && d->proc.qmp;
    if (talk && b->job_started && !b->concluded)
        b->concluded = cancel_job_locked(d);
    if (rc == 0)
        set_phase_locked(d, j, "finish");
    if (talk && d->proc.qmp)
        qemu_cleanup_locked(d, b->job_started && b->concluded, b->node_added);
    moor_unlock(d);
    backup_release(b, rc == 0 || stopping);
    moor_lock(d);
    return stopping ? LJ_STOPPING : rc;
}

/* ---- restart ---------------------------------------------------------------- */

/* QEMU's side of a backup a killed daemon left: a job that concluded
 * without error is kept (true); any other is cancelled. Mutex held. */
static bool recover_qemu_locked(vmd_domain *d)
{
    moor_error err = MOOR_ERROR_INIT;
    struct qjob q = {0};
    bool done = false;

    if (query_job_locked(d, &q, &err) == 0 && q.status[0]) {
        done = strcmp(q.status, "concluded") == 0 && !q.error[0];
        bool concluded = done || strcmp(q.status, "concluded") == 0 || cancel_job_locked(d);
        qemu_cleanup_locked(d, concluded, true);
    } else if (d->proc.qmp) {
        qemu_cleanup_locked(d, false, true); /* a node added before the job began */
    }
    vmd_log(VMD_LOG_NOTICE, d->cfg.name, "backup", "after restart QEMU's job was %s%s%s",
            q.status[0] ? q.status : "gone", q.error[0] ? ": " : "", q.error);
    moor_error_clear(&err);
    return done;
}

void vmd_backup_recover(struct vmd *vmd, const moor_uuid *uuid, const struct vmd_status *st,
                        int reconnected)
{
    moor_error err = MOOR_ERROR_INIT;
    vmd_domain *d = reconnected == 0 ? moor_registry_find_uuid(vmd->domains, uuid) : NULL;
    bool keep = false, held = false;

    if (d) {
        moor_lock(d);
        held = job_begin_locked(d, MOOR_JOB_MODIFY, "recover", &err) == 0;
        if (held)
            keep = recover_qemu_locked(d);
        else
            vmd_log(VMD_LOG_ERR, d->cfg.name, "backup", "not recovered: %s",
                    moor_error_message(&err));
        moor_unlock(d);
    }
    vmd_image *t = keep ? NULL : vmd_image_lookup(vmd, st->job_path);
    struct json_object *o = NULL;
    moor_error_clear(&err);
    if (t && vmd_image_delete(vmd, t, &o, &err) < 0)
        vmd_log(VMD_LOG_ERR, NULL, "backup", "cannot delete the partial target %s: %s",
                st->job_path, moor_error_message(&err));
    else if (t)
        vmd_log(VMD_LOG_NOTICE, NULL, "backup", "removed the partial target %s after restart",
                st->job_path);
    else if (keep)
        vmd_log(VMD_LOG_NOTICE, NULL, "backup", "had completed before the restart: %s kept",
                st->job_path);
    json_object_put(o);
    moor_clear(&t);
    moor_error_clear(&err);
    if (!d)
        return;
    moor_lock(d);
    status_save_locked(d); /* the record goes with the job's outcome applied */
    if (held)
        job_end_locked(d, 0);
    moor_end_api(&d);
}

/* The source: the disk named (or the first); its node name. No lock. */
static int backup_source(vmd_domain *d, const struct vmd_longjob_args *a, struct vmd_backup *b,
                         moor_error *err)
{
    const struct vmd_domain_config *cfg = &d->cfg; /* immutable */

    for (unsigned i = 0; i < cfg->n_disks; i++) {
        if (a->disk[0] && strcmp(a->disk, cfg->disks[i].image) != 0)
            continue;
        snprintf(b->disk, sizeof(b->disk), "%s", cfg->disks[i].image);
        vmd_image_node_name(i, b->disk, b->node);
        return 0;
    }
    if (a->disk[0])
        return moor_error_set(err, -ENOENT, "domain %s has no disk on image %s", cfg->name,
                              a->disk);
    return moor_error_set(err, -ENOENT, "domain %s has no disk to back up", cfg->name);
}

/* Block the source, create the target with our hold. No domain mutex. */
static int backup_images(struct vmd_backup *b, moor_error *err)
{
    struct vmd_image_create req = {.format = VMD_IMAGE_QCOW2};
    char hold[256];

    b->src = vmd_image_lookup(b->vmd, b->disk);
    if (!b->src)
        return moor_error_set(err, -ENOENT, "domain %s: backup: its disk's image %s is missing",
                              b->domain, b->disk);
    int rc =
        vmd_image_block(b->src, BK_IMG_OPS, &b->src_block, err,
                        "backup job of domain %s (disk %s into %s)", b->domain, b->disk, b->target);
    if (rc < 0)
        return rc;
    req.size_bytes = vmd_image_size(b->src);
    snprintf(req.name, sizeof(req.name), "%s", b->target);
    snprintf(hold, sizeof(hold), "image %s is the target of the backup job of domain %s", b->target,
             b->domain);
    struct json_object *view = NULL;
    rc = vmd_image_create_held(b->vmd, &req, hold, &b->dst_block, &view, err);
    json_object_put(view);
    if (rc < 0)
        return rc;
    b->dst = vmd_image_lookup(b->vmd, b->target);
    return b->dst ? 0 : moor_error_set(err, -ENOENT, "image %s vanished", b->target);
}

static struct vmd_backup *backup_new(struct vmd *vmd, vmd_domain *d,
                                     const struct vmd_longjob_args *a)
{
    struct vmd_backup *b = calloc(1, sizeof(*b));

    if (!b)
        return NULL;
    b->vmd = vmd;
    snprintf(b->domain, sizeof(b->domain), "%s", d->cfg.name);
    snprintf(b->target, sizeof(b->target), "%s", a->target);
    b->bandwidth_mib_s = a->bandwidth_mib_s;
    return b;
}

int vmd_domain_backup(struct vmd *vmd, vmd_domain *dom, const struct vmd_longjob_args *args,
                      struct json_object **out, moor_error *err)
{
    vmd_domain *d = moor_ref(dom);
    struct vmd_backup *b = backup_new(vmd, d, args);
    struct vmd_longjob *j = b ? longjob_new(LJ_BACKUP, args) : NULL;
    int rc = j ? backup_source(d, args, b, err) : moor_error_set(err, -ENOMEM, "out of memory");

    moor_lock(d);
    rc = rc ?: begin_longjob_locked(d, VMD_OP_BACKUP, "backup", MOOR_JOB_TIMEOUT_DEFAULT, err);
    if (rc < 0) {
        vmd_log(VMD_LOG_NOTICE, d->cfg.name, "backup", "refused: %s", moor_error_message(err));
        vmd_longjob_free(j);
        vmd_backup_free(b);
        moor_end_api(&d);
        return rc;
    }
    moor_unlock(d);
    rc = backup_images(b, err);
    moor_lock(d);
    if (rc == 0 && !d->proc.qmp)
        rc = moor_error_set(err, -ENOTCONN, "domain %s: backup: QEMU went away", d->cfg.name);
    if (rc == 0) {
        longjob_set_backup(j, b);
        d->longjob = j;
        status_save_locked(d); /* the record: a daemon killed from now on finds it */
        rc = spawn_locked(d, err);
        if (rc < 0) {
            d->longjob = NULL;
            status_save_locked(d);
            longjob_set_backup(j, NULL);
        }
    }
    if (rc < 0) {
        moor_unlock(d);
        backup_release(b, false);
        moor_lock(d);
        vmd_log(VMD_LOG_NOTICE, d->cfg.name, "backup", "refused: %s", moor_error_message(err));
        vmd_longjob_free(j);
        vmd_backup_free(b);
        moor_job_end_async(&d->job);
        moor_end_api(&d);
        return rc;
    }
    vmd_log(VMD_LOG_INFO, d->cfg.name, "backup", "backing up disk %s into %s", b->disk, b->target);
    rc = give(job_view_locked(d), out, err);
    moor_end_api(&d);
    return rc;
}
