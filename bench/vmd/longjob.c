/* SPDX-License-Identifier: MIT */
/*
 * longjob.c - moor-vmd-bench --longjob: how fast state, stats and job answer
 * on a domain while a long job runs on it (issue 14, acceptance 3).
 *
 * One daemon (--qmp-timeout 10), one real `pc` guest (TCG) of 256 MiB whose
 * RAM holds 192 MiB of random bytes from the start (-device loader), so the
 * save really moves them: zero pages would cost QEMU nothing. Then, per run:
 *   save      POST save with bandwidth_mib_s = 64 (about 3 s for 192 MiB),
 *             while 4 clients call GET state, GET stats and GET job on the
 *             domain in turn, each call timed, until the job ends;
 *   restore   POST restore of that file (not throttled: QEMU reads as fast
 *             as it can), the same 4 clients, until the job ends.
 * Reported per window: the job's duration, the calls made, and p50 / p99 /
 * max over all calls and for each kind (goal: p99 < 50 ms). A stats call
 * while no QEMU runs (a restore's QEMU not started yet, a save's stopped at
 * its end) is refused by design (409 ENOTCONN or 502 EPIPE): counted apart
 * and still timed. Any other failure fails the bench.
 *
 * Baseline, same run: before the save, an "idle" window of LJ_IDLE_S s in
 * which the same 4 clients make the same calls on the same running domain
 * with no job. Each job window's p99 is printed beside the idle one's, as a
 * ratio: what the job itself adds. On a shared machine this tells the job's
 * cost apart from the CPU the machine's other tenants take: `stats` waits
 * for QEMU's main loop, and a QEMU that gets half a CPU answers late with
 * or without a job.
 */
#define _GNU_SOURCE
#include "longjob.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "drive.h"

#define LJ_CLIENTS   4
#define LJ_MEM_MIB   256
#define LJ_FILL_MIB  192
#define LJ_BW_MIB_S  64
#define LJ_MAX_CALLS 200000
#define LJ_KINDS     3
#define LJ_BUCKETS   4 /* the kinds, and stats refused for want of a QEMU */
#define LJ_IDLE_S    2 /* the idle baseline window */

static const char *const kind_names[LJ_BUCKETS] = {"state", "stats", "job", "stats-noqemu"};

struct lj_client {
    pthread_t thread;
    struct lj_bench *b;
    unsigned id;
};

struct lj_bench {
    struct drive_daemon d;
    struct vmctl_client *c;
    char name[64];
    char fill[PATH_MAX];
    char save[PATH_MAX];
    atomic_bool stop;
    pthread_mutex_t lock;
    uint64_t *lat[LJ_BUCKETS]; /* ns, guarded by lock */
    size_t n[LJ_BUCKETS];
    unsigned errors;
    unsigned refused; /* stats answered "QEMU is not running" (still timed) */
    char error[256];
    double idle_p99[LJ_BUCKETS + 1]; /* ms, from this run's idle window; 0: none */
};

static void *client_main(void *arg)
{
    struct lj_client *cl = arg;
    struct lj_bench *b = cl->b;
    moor_error err = MOOR_ERROR_INIT;
    struct vmctl_client *c = vmctl_client_new(b->d.socket_path, 30000, &err);
    char paths[LJ_KINDS][128];

    for (unsigned k = 0; k < LJ_KINDS; k++)
        snprintf(paths[k], sizeof(paths[k]), "/v1/domains/%s/%s", b->name, kind_names[k]);
    for (unsigned i = cl->id; c && !atomic_load(&b->stop); i++) {
        unsigned k = i % LJ_KINDS;
        struct vmctl_response r = {0};
        uint64_t t0 = drive_now_ns();
        int rc = vmctl_request(c, "GET", paths[k], NULL, &r, &err);
        uint64_t ns = drive_now_ns() - t0;
        /* stats before QEMU runs (restore's start) or after it stopped
         * (save's end) is refused by design: 409 ENOTCONN, 502 EPIPE. */
        bool no_qemu = rc == 0 && k == 1 && (r.status == 409 || r.status == 502) && r.error_code &&
                       (!strcmp(r.error_code, "ENOTCONN") || !strcmp(r.error_code, "EPIPE"));
        pthread_mutex_lock(&b->lock);
        b->refused += no_qemu;
        if (!no_qemu && (rc < 0 || r.status != 200)) {
            if (!b->errors++)
                snprintf(b->error, sizeof(b->error), "GET %s: %ld %s", paths[k], r.status,
                         rc < 0 ? moor_error_message(&err) : r.body);
        } else if (b->n[no_qemu ? 3 : k] < LJ_MAX_CALLS) {
            unsigned at = no_qemu ? 3 : k;
            b->lat[at][b->n[at]++] = ns;
        }
        pthread_mutex_unlock(&b->lock);
        if (rc == 0)
            vmctl_response_clear(&r);
    }
    vmctl_client_free(c);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(const uint64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return (double)v[i] / 1e6;
}

static void report(struct lj_bench *b, const char *window, double job_s, bool json)
{
    uint64_t *all = malloc(sizeof(uint64_t) * LJ_MAX_CALLS * LJ_BUCKETS);
    size_t na = 0;

    for (unsigned k = 0; k <= LJ_BUCKETS; k++) {
        uint64_t *v = k < LJ_BUCKETS ? b->lat[k] : all;
        size_t n = k < LJ_BUCKETS ? b->n[k] : na;
        if (k < LJ_BUCKETS && all) {
            memcpy(all + na, v, n * sizeof(*v));
            na += n;
        }
        if (k == LJ_BUCKETS && !all)
            break;
        qsort(v, n, sizeof(*v), cmp_u64);
        const char *kind = k < LJ_BUCKETS ? kind_names[k] : "all";
        /* No ratio for "all": a job window's includes the quick refusals
         * of stats while no QEMU runs, which the idle window never has. */
        double p99 = pct_ms(v, n, 0.99), base = k < LJ_BUCKETS ? b->idle_p99[k] : 0;
        bool idle = !strcmp(window, "idle");
        if (idle)
            b->idle_p99[k] = n ? p99 : 0;
        if (json) {
            printf("{\"bench\":\"longjob.%s.%s\",\"unit\":\"ms\",\"job_s\":%.2f,\"calls\":%zu,"
                   "\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f",
                   window, kind, job_s, n, pct_ms(v, n, 0.5), p99, pct_ms(v, n, 1.0));
            if (!idle && n && base > 0)
                printf(",\"baseline\":\"idle\",\"baseline_p99\":%.3f,\"ratio\":%.3f", base,
                       p99 / base);
            printf("%s}\n", idle ? "" : ",\"goal\":\"p99 < 50\"");
        } else {
            printf("  %-8s %-12s calls %6zu  p50 %7.3f ms  p99 %7.3f ms  max %7.3f ms", window,
                   kind, n, pct_ms(v, n, 0.5), p99, pct_ms(v, n, 1.0));
            if (!idle && n && base > 0)
                printf("  idle p99 %7.3f ms  ratio %5.2f", base, p99 / base);
            putchar('\n');
        }
    }
    free(all);
}

/* Wait until the domain's job is over; its result must be "completed".
 * *@transfer_s: about how long its transfer phase lasted (polled). */
static int wait_job(struct lj_bench *b, double *transfer_s, moor_error *err)
{
    char path[128];
    uint64_t t_start = 0;

    snprintf(path, sizeof(path), "/v1/domains/%s/job", b->name);
    for (int i = 0; i < 6000; i++) {
        struct vmctl_response r = {0};
        int rc = drive_call(b->c, "GET", path, NULL, 200, &r, err);
        if (rc < 0)
            return rc;
        struct json_object *v, *last, *cur;
        bool active = json_object_object_get_ex(r.json, "active", &v) && json_object_get_boolean(v);
        bool transfer = active && json_object_object_get_ex(r.json, "job", &cur) &&
                        json_object_object_get_ex(cur, "phase", &v) &&
                        strcmp(json_object_get_string(v), "transfer") == 0;
        if (transfer && !t_start)
            t_start = drive_now_ns();
        if (!transfer && t_start && !*transfer_s)
            *transfer_s = (double)(drive_now_ns() - t_start) / 1e9;
        if (!active) {
            bool ok = json_object_object_get_ex(r.json, "last", &last) &&
                      json_object_object_get_ex(last, "result", &v) &&
                      strcmp(json_object_get_string(v), "completed") == 0;
            rc = ok ? 0 : moor_error_set(err, -EIO, "the job did not complete: %s", r.body);
            vmctl_response_clear(&r);
            return rc;
        }
        vmctl_response_clear(&r);
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return moor_error_set(err, -ETIMEDOUT, "the job did not end in 120 s");
}

/* One window: start the job with POST @path @body, load it with the
 * clients until it ends, report. @path NULL: the idle baseline, LJ_IDLE_S s
 * of the same calls with no job. */
static int window(struct lj_bench *b, const char *label, const char *path, const char *body,
                  bool json, moor_error *err)
{
    struct lj_client cl[LJ_CLIENTS];

    memset(b->n, 0, sizeof(b->n));
    b->refused = 0;
    atomic_store(&b->stop, false);
    uint64_t t0 = drive_now_ns();
    int rc = path ? drive_call(b->c, "POST", path, body, 202, NULL, err) : 0;
    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < LJ_CLIENTS; i++) {
        cl[i] = (struct lj_client){.b = b, .id = i};
        pthread_create(&cl[i].thread, NULL, client_main, &cl[i]);
    }
    double transfer_s = 0;
    if (path) {
        rc = wait_job(b, &transfer_s, err);
    } else {
        struct timespec ts = {LJ_IDLE_S, 0};
        nanosleep(&ts, NULL);
    }
    double job_s = (double)(drive_now_ns() - t0) / 1e9;
    atomic_store(&b->stop, true);
    for (unsigned i = 0; i < LJ_CLIENTS; i++)
        pthread_join(cl[i].thread, NULL);
    if (rc == 0 && b->errors)
        rc = moor_error_set(err, -EIO, "%u calls failed, the first: %s", b->errors, b->error);
    if (rc == 0) {
        if (!json && !path)
            printf("%s: %.2f s, no job, %u clients: the baseline of the windows below\n", label,
                   job_s, LJ_CLIENTS);
        else if (!json)
            printf("%s: %.2f s from the POST to the job's end (transfer phase about %.2f s), "
                   "%u clients (%u stats calls found no QEMU: before it started or after it "
                   "stopped)\n",
                   label, job_s, transfer_s, LJ_CLIENTS, b->refused);
        report(b, label, job_s, json);
    }
    return rc;
}

/* 192 MiB of random bytes for the guest's RAM. */
static int make_fill(struct lj_bench *b, moor_error *err)
{
    int in = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    int out = open(b->fill, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    static char buf[1 << 20];
    int rc = in >= 0 && out >= 0 ? 0 : -errno;

    for (unsigned i = 0; rc == 0 && i < LJ_FILL_MIB; i++)
        if (read(in, buf, sizeof(buf)) != (ssize_t)sizeof(buf) ||
            write(out, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
            rc = -EIO;
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    return rc < 0 ? moor_error_set(err, rc, "cannot write %s", b->fill) : 0;
}

static int setup(struct lj_bench *b, const char *exe, moor_error *err)
{
    static const char *const flags[] = {"--qmp-timeout", "10", NULL};
    char body[PATH_MAX + 512];

    int rc = drive_daemon_init(&b->d, exe, "longjob", flags, err);
    rc = rc ?: drive_daemon_start(&b->d, 10000, err);
    if (rc < 0)
        return rc;
    b->c = vmctl_client_new(b->d.socket_path, 60000, err);
    if (!b->c)
        return -ENOMEM;
    snprintf(b->fill, sizeof(b->fill), "%.4000s/fill.bin", b->d.base);
    snprintf(b->save, sizeof(b->save), "%.4000s/guest.save", b->d.base);
    if ((rc = make_fill(b, err)) < 0)
        return rc;
    snprintf(body, sizeof(body),
             "{\"name\":\"%s\",\"machine\":\"pc\",\"accel\":\"tcg\",\"memory_mib\":%d,"
             "\"extra_args\":[\"-device\",\"loader,file=%s,addr=0x1000000,force-raw=on\"]}",
             b->name, LJ_MEM_MIB, b->fill);
    rc = drive_call(b->c, "POST", "/v1/domains", body, 201, NULL, err);
    snprintf(body, sizeof(body), "/v1/domains/%s/start", b->name);
    return rc ?: drive_call(b->c, "POST", body, NULL, 200, NULL, err);
}

int longjob_bench(const char *exe, unsigned runs, bool json)
{
    static struct lj_bench b;
    moor_error err = MOOR_ERROR_INIT;
    char path[128], body[PATH_MAX + 64];

    snprintf(b.name, sizeof(b.name), "longjob-%d", (int)getpid());
    pthread_mutex_init(&b.lock, NULL);
    for (unsigned k = 0; k < LJ_BUCKETS; k++)
        b.lat[k] = calloc(LJ_MAX_CALLS, sizeof(uint64_t));
    int rc = setup(&b, exe, &err);
    if (!json && rc == 0)
        printf("moor-vmd-bench --longjob: a pc guest of %d MiB (TCG), %d MiB of it random; "
               "save at %d MiB/s; %u runs\n",
               LJ_MEM_MIB, LJ_FILL_MIB, LJ_BW_MIB_S, runs);
    for (unsigned i = 0; rc == 0 && i < runs; i++) {
        rc = window(&b, "idle", NULL, NULL, json, &err);
        if (rc < 0)
            break;
        snprintf(path, sizeof(path), "/v1/domains/%s/save", b.name);
        snprintf(body, sizeof(body), "{\"path\":\"%s\",\"bandwidth_mib_s\":%d}", b.save,
                 LJ_BW_MIB_S);
        rc = window(&b, "save", path, body, json, &err);
        snprintf(body, sizeof(body), "{\"path\":\"%s\"}", b.save);
        rc = rc ?: window(&b, "restore", "/v1/domains/restore", body, json, &err);
        unlink(b.save);
    }
    if (rc < 0)
        fprintf(stderr, "moor-vmd-bench --longjob: FAILED: %s (log %s)\n", moor_error_message(&err),
                b.d.log_path);
    if (b.c) {
        snprintf(path, sizeof(path), "/v1/domains/%s/destroy", b.name);
        struct vmctl_response r = {0};
        if (vmctl_request(b.c, "POST", path, NULL, &r, NULL) == 0)
            vmctl_response_clear(&r);
        vmctl_client_free(b.c);
    }
    unlink(b.fill);
    drive_daemon_cleanup(&b.d, rc < 0);
    for (unsigned k = 0; k < LJ_BUCKETS; k++)
        free(b.lat[k]);
    return rc < 0 ? 1 : 0;
}
