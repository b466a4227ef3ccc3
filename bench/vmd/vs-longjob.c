/* SPDX-License-Identifier: MIT */
/*
 * vs-longjob.c - workload 4 of the side-by-side benchmark: a long job.
 *
 * A running 256 MiB guest whose RAM holds 192 MiB of pseudo-random bytes
 * (loaded by `-device loader`, so the save cannot skip zero pages) is
 * saved to a file and restored from it. Throughout, three threads call
 * state, stats and job info on it and a fourth calls state round-robin on
 * the 32 other domains, each starting a call every 10 ms (or as soon as the
 * last one returned, when it took longer) on its own connection. Reported:
 * the save and restore times, p50/p99 of every call on the saving or
 * restoring domain (answered or refused: the point is how long a caller
 * waits), and the longest call on the other domains (the stall).
 *
 * Each side's save op limits the save's bandwidth to 48 MiB/s so that it
 * lasts about 4 s: moor-vmd through the save call's bandwidth_mib_s, and
 * libvirtd through a QMP migrate-set-parameters once its save job shows
 * (vs-lv.c). Neither side's restore is limited. The save and restore
 * times are from the request until the job ended: libvirt's calls block
 * until then; moor-vmd's answer 202 at once and the op polls GET .../job
 * every 5 ms (vs-moor.c). A side without save/restore ops gets "not
 * available" cells, never figures.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "drive.h"
#include "vs-libvirt.h"

#define LONG_MIB 256
#define BLOB_MIB 192
#define N_WATCH  4           /* state, stats, job info on it; state on the others */
#define PACE_NS  10000000ull /* each watcher starts a call every 10 ms */

struct watch {
    struct vs_side *s;
    void *conn;
    enum vs_op op;
    bool others;
    atomic_bool *stop; /* relaxed: polled between calls */
    pthread_t tid;
    bool started;
    struct drive_lat lat;
    unsigned failed;
};

static void *watch_main(void *opaque)
{
    struct watch *w = opaque;
    unsigned next = 0;

    while (!atomic_load_explicit(w->stop, memory_order_relaxed)) {
        unsigned dom = w->others ? next++ % VS_DOMAINS : VS_LONG;
        uint64_t t = vs_now_ns(), lat;
        char msg[256];

        if (w->s->ops->call(w->s, w->conn, w->op, dom, msg, sizeof(msg)) < 0)
            w->failed++;
        lat = vs_now_ns() - t;
        drive_lat_add(&w->lat, lat);
        /* Paced, not back to back: a refused call comes back at once, and
         * a spinning caller would only take the CPU from the job. */
        if (lat < PACE_NS)
            vs_nap((double)(PACE_NS - lat) / 1e9);
    }
    return NULL;
}

/* @path filled with @mib MiB of xorshift bytes. */
static int make_blob(const char *path, unsigned mib, moor_error *err)
{
    static uint64_t buf[1 << 17]; /* 1 MiB */
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    if (fd < 0)
        return moor_error_set(err, -errno, "create %s: %s", path, strerror(errno));
    for (unsigned m = 0; m < mib; m++) {
        for (size_t i = 0; i < sizeof(buf) / sizeof(buf[0]); i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = x;
        }
        if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf)) {
            close(fd);
            return moor_error_set(err, -EIO, "write %s failed", path);
        }
    }
    close(fd);
    return 0;
}

static void not_available(struct vs_side *s, struct vs_cell *c[5])
{
    (void)s;
    for (int i = 0; i < 5; i++)
        vs_cell_note(c[i], "n/a: no save/restore");
}

static int watch_start(struct vs_side *s, struct watch *w, atomic_bool *stop, moor_error *err)
{
    static const enum vs_op ops[N_WATCH] = {VS_STATE, VS_STATS, VS_JOBINFO, VS_STATE};
    int rc;

    for (int i = 0; i < N_WATCH; i++) {
        w[i] = (struct watch){.s = s, .op = ops[i], .others = i == 3, .stop = stop};
        if ((rc = s->ops->open(s, &w[i].conn, err)) < 0)
            return rc;
    }
    for (int i = 0; i < N_WATCH; i++) {
        if ((rc = pthread_create(&w[i].tid, NULL, watch_main, &w[i])) != 0)
            return moor_error_set(err, -rc, "pthread_create: %s", strerror(rc));
        w[i].started = true;
    }
    return 0;
}

static void watch_stop(struct vs_side *s, struct watch *w, atomic_bool *stop)
{
    atomic_store_explicit(stop, true, memory_order_relaxed);
    for (int i = 0; i < N_WATCH; i++) {
        if (w[i].started)
            pthread_join(w[i].tid, NULL);
        if (w[i].conn)
            s->ops->close(w[i].conn);
        w[i].conn = NULL;
    }
}

/* Save and restore with the watchers running; the figures into @c. */
static int save_restore(struct vs_side *s, const char *file, struct vs_cell *c[5], moor_error *err)
{
    struct watch w[N_WATCH];
    struct drive_lat on = {0};
    atomic_bool stop = false;
    uint64_t t;
    int rc;

    memset(w, 0, sizeof(w));
    if ((rc = watch_start(s, w, &stop, err)) == 0) {
        vs_nap(0.2);
        t = vs_now_ns();
        rc = s->ops->save(s, s->main_conn, s->names[VS_LONG], file, err);
        vs_cell_num(c[0], (double)(vs_now_ns() - t) / 1e6);
        t = vs_now_ns();
        rc = rc ?: s->ops->restore(s, s->main_conn, s->names[VS_LONG], file, err);
        vs_cell_num(c[1], (double)(vs_now_ns() - t) / 1e6);
        vs_nap(0.2);
    }
    watch_stop(s, w, &stop);
    for (int i = 0; i < 3 && !rc; i++)
        for (size_t j = 0; j < w[i].lat.n; j++)
            drive_lat_add(&on, w[i].lat.ns[j]);
    if (!rc) {
        vs_cell_num(c[2], (double)drive_lat_pct(&on, 50) / 1e6);
        vs_cell_num(c[3], (double)drive_lat_pct(&on, 99) / 1e6);
        vs_cell_num(c[4], (double)drive_lat_pct(&w[3].lat, 100) / 1e6);
    }
    drive_lat_free(&on);
    for (int i = 0; i < N_WATCH; i++)
        drive_lat_free(&w[i].lat);
    return rc;
}

int vs_longjob(struct vs_side *s, const struct vs_cfg *cfg, struct vs_cell *save,
               struct vs_cell *restore, struct vs_cell *p50, struct vs_cell *p99,
               struct vs_cell *gap, moor_error *err)
{
    struct vs_cell *c[5] = {save, restore, p50, p99, gap};
    const char *tmp = getenv("TMPDIR");
    char blob[PATH_MAX], file[PATH_MAX];
    moor_error e2 = MOOR_ERROR_INIT;
    int rc;

    (void)cfg;
    if (!s->ops->save || !s->ops->restore) {
        not_available(s, c);
        return 0;
    }
    snprintf(blob, sizeof(blob), "%s/%sblob", tmp && *tmp ? tmp : "/tmp", s->prefix);
    snprintf(file, sizeof(file), "%s/%ssave", tmp && *tmp ? tmp : "/tmp", s->prefix);
    snprintf(s->names[VS_LONG], VS_NAME_LEN, "%slong", s->prefix);
    rc = make_blob(blob, BLOB_MIB, err);
    rc = rc ?: s->ops->define(s, s->main_conn, s->names[VS_LONG], LONG_MIB, blob, err);
    rc = rc ?: s->ops->start(s, s->main_conn, s->names[VS_LONG], err);
    rc = rc ?: save_restore(s, file, c, err);
    if (s->ops->destroy(s, s->main_conn, s->names[VS_LONG], &e2) < 0 && !rc)
        rc = moor_error_set(err, e2.code, "%s", e2.message);
    if (s->ops->undefine(s, s->main_conn, s->names[VS_LONG], &e2) < 0 && !rc)
        rc = moor_error_set(err, e2.code, "%s", e2.message);
    s->names[VS_LONG][0] = '\0';
    unlink(blob);
    unlink(file);
    return rc;
}
