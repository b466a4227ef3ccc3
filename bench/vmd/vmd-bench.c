/* SPDX-License-Identifier: MIT */
/*
 * vmd-bench.c - moor-vmd-bench: the daemon's figures, against a real
 * moor-vmd driving real QEMU (`qemu-system-x86_64 -machine none`, TCG:
 * a real QMP server that runs no guest code). Registered with meson
 * benchmark() (suite vmd-bench), never run by `meson test`; `make bench-vmd`.
 *
 * Usage: moor-vmd-bench [--daemon PATH] [--runs N] [--seconds S] [--quick] [--json]
 *                       [--refusal-pace MS]
 *        moor-vmd-bench --longjob ...      (queries during a save/restore: longjob.c)
 *        moor-vmd-bench --vs-libvirt ...   (side by side with libvirtd: vs-libvirt.c)
 * (--help prints every mode's flags.)
 *
 * One daemon (--qmp-timeout 1, and --refusal-pace MS if given: its
 * pace of a connection's fail-fast refusals, default 5 ms) with 32 running
 * domains serves every run;
 * each run measures, in this order (S = --seconds per window):
 *   state.cN        N = 1, 4, 8 clients calling GET .../state round-robin
 *                   over the 32 domains for S s: calls/s, p50, p99. Baseline,
 *                   same run, same clients: GET /v1/version (the HTTP round
 *                   trip alone), so the ratio is what a domain lookup, its
 *                   lock and the JSON of its state add.
 *   frozen.*        one QEMU SIGSTOPped; 32 clients call stats on it while 4
 *                   call state and stats on the other 31, for 1 s + S s.
 *                   others.p99: the 4 clients' p99; baseline "unfrozen": the
 *                   same 36 clients just before with nothing frozen (goal:
 *                   ratio <= 1.2). others.p99.vs_alone: the same p99 beside
 *                   the 4 clients alone (baseline "alone"): what the 32 extra
 *                   callers cost the others, frozen or not, on this machine.
 *                   others.p99.vs_busy: beside the same 36 clients with the
 *                   32 calling GET /v1/version in a loop, nothing frozen
 *                   (baseline "busy"): 32 clients that get an answer at once,
 *                   as the frozen domain's do once they fail fast, with no
 *                   domain in the way; a ratio near 1 says the frozen domain
 *                   costs the others nothing beyond the CPU its callers'
 *                   loops take. daemon_cpu_per_call: the daemon's CPU time
 *                   (/proc, all threads) per call answered in the frozen
 *                   window, beside the same in the busy one.
 *                   failfast.p50/p99: latency of the frozen domain's calls
 *                   that started after its first 504 came back (goal < 10 ms);
 *                   failfast.calls_per_s: how many of those the 32 callers
 *                   made per second (they compete with the others for CPU).
 *                   Then SIGCONT, and the domain must answer stats again.
 *   start8          8 new domains started at once by 8 clients, until all
 *                   8 answered; baseline: one domain started alone.
 *   reconnect32     SIGKILL of the daemon, restart on the same dirs, until
 *                   all 32 domains answer stats; baseline: a daemon started
 *                   on empty dirs until /v1/version answers.
 * Every figure is the median over the runs, with min and max; a ratio is
 * the median of the per-run ratios. --json prints one object per figure:
 *   {"bench":NAME,"unit":U,"runs":N,"median":X,"min":X,"max":X
 *    [,"baseline":B,"baseline_median":X,"ratio":X][,"goal":G]}
 * Errors: any error but the frozen domain's 504 ETIMEDOUT / 503 EAGAIN
 * fails the benchmark (exit 1) with the daemon's message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "drive.h"
#include "longjob.h"
#ifdef MOOR_VMD_BENCH_LIBVIRT
#include "vs-libvirt.h"
#endif

#define N_DOMAINS     32
#define N_START       8
#define N_FROZEN_CLI  32
#define N_OTHER_CLI   4
#define MAX_RUNS      20
#define QMP_TIMEOUT_S 1

enum plan_mode { PLAN_VERSION, PLAN_STATE, PLAN_MIX, PLAN_FROZEN, PLAN_BUSY };

struct bench {
    const char *exe;
    struct drive_daemon d, cold;
    struct vmctl_client *c;
    char names[N_DOMAINS][32];
    const char *domv[N_DOMAINS];
    pid_t pids[N_DOMAINS];
    char start_names[N_START + 1][32];
    pid_t start_pids[N_START + 1];
    unsigned runs;
    double seconds;
    bool json;
    bool longjob;         /* --longjob: longjob.c's figures instead */
    const char *pace;     /* --refusal-pace MS for the daemon, or NULL: its default */
    const char *flags[6]; /* the daemon's flags (drive_daemon_init borrows them) */
    enum plan_mode mode;  /* read by the pickers; set before a load starts */
    char error[512];      /* the first unexpected error (guarded by lock) */
    pthread_mutex_t lock;
};

/* ---- figures ------------------------------------------------------------ */

struct fig {
    const char *name, *unit, *baseline, *goal;
    double v[MAX_RUNS], b[MAX_RUNS];
    unsigned n;
};

enum {
    F_STATE_CPS_1,
    F_STATE_P50_1,
    F_STATE_P99_1,
    F_STATE_CPS_4,
    F_STATE_P50_4,
    F_STATE_P99_4,
    F_STATE_CPS_8,
    F_STATE_P50_8,
    F_STATE_P99_8,
    F_OTHERS_P99,
    F_OTHERS_P99_ALONE,
    F_OTHERS_P99_BUSY,
    F_DAEMON_CPU,
    F_FAILFAST_P50,
    F_FAILFAST_P99,
    F_FAILFAST_CPS,
    F_FIRST_TIMEOUT,
    F_START8,
    F_RECONNECT32,
    N_FIGS
};

static struct fig figs[N_FIGS] = {
    [F_STATE_CPS_1] = {.name = "vmd.state.c1.calls_per_s",
                       .unit = "calls/s",
                       .baseline = "version",
                       .goal = NULL},
    [F_STATE_P50_1] = {.name = "vmd.state.c1.p50",
                       .unit = "us",
                       .baseline = "version",
                       .goal = NULL},
    [F_STATE_P99_1] = {.name = "vmd.state.c1.p99",
                       .unit = "us",
                       .baseline = "version",
                       .goal = NULL},
    [F_STATE_CPS_4] = {.name = "vmd.state.c4.calls_per_s",
                       .unit = "calls/s",
                       .baseline = "version",
                       .goal = NULL},
    [F_STATE_P50_4] = {.name = "vmd.state.c4.p50",
                       .unit = "us",
                       .baseline = "version",
                       .goal = NULL},
    [F_STATE_P99_4] = {.name = "vmd.state.c4.p99",
                       .unit = "us",
                       .baseline = "version",
                       .goal = NULL},
    [F_STATE_CPS_8] = {.name = "vmd.state.c8.calls_per_s",
                       .unit = "calls/s",
                       .baseline = "version",
                       .goal = NULL},
    [F_STATE_P50_8] = {.name = "vmd.state.c8.p50",
                       .unit = "us",
                       .baseline = "version",
                       .goal = NULL},
    [F_STATE_P99_8] = {.name = "vmd.state.c8.p99",
                       .unit = "us",
                       .baseline = "version",
                       .goal = NULL},
    [F_OTHERS_P99] = {.name = "vmd.frozen.others.p99",
                      .unit = "us",
                      .baseline = "unfrozen",
                      .goal = "ratio <= 1.2"},
    [F_OTHERS_P99_ALONE] = {.name = "vmd.frozen.others.p99.vs_alone",
                            .unit = "us",
                            .baseline = "alone",
                            .goal = NULL},
    [F_OTHERS_P99_BUSY] = {.name = "vmd.frozen.others.p99.vs_busy",
                           .unit = "us",
                           .baseline = "busy",
                           .goal = NULL},
    [F_DAEMON_CPU] = {.name = "vmd.frozen.daemon_cpu_per_call",
                      .unit = "us",
                      .baseline = "busy",
                      .goal = NULL},
    [F_FAILFAST_P50] = {.name = "vmd.frozen.failfast.p50",
                        .unit = "us",
                        .baseline = NULL,
                        .goal = "< 10000 us"},
    [F_FAILFAST_P99] = {.name = "vmd.frozen.failfast.p99",
                        .unit = "us",
                        .baseline = NULL,
                        .goal = "< 10000 us"},
    [F_FAILFAST_CPS] = {.name = "vmd.frozen.failfast.calls_per_s",
                        .unit = "calls/s",
                        .baseline = NULL,
                        .goal = NULL},
    [F_FIRST_TIMEOUT] = {.name = "vmd.frozen.first_timeout",
                         .unit = "ms",
                         .baseline = NULL,
                         .goal = "~ the 1 s QMP deadline"},
    [F_START8] = {.name = "vmd.start8", .unit = "ms", .baseline = "start1", .goal = NULL},
    [F_RECONNECT32] = {.name = "vmd.reconnect32",
                       .unit = "ms",
                       .baseline = "cold_start",
                       .goal = NULL},
};

static void fig_add(int f, double v, double base)
{
    if (figs[f].n < MAX_RUNS) {
        figs[f].v[figs[f].n] = v;
        figs[f].b[figs[f].n] = base;
        figs[f].n++;
    }
}

static void print_figs(bool json)
{
    if (!json)
        printf("%-32s %-7s %10s %10s %10s  %-10s %10s %7s  %s\n", "figure", "unit", "median", "min",
               "max", "baseline", "its median", "ratio", "goal");
    for (int f = 0; f < N_FIGS; f++) {
        struct fig *g = &figs[f];
        double v[MAX_RUNS], r[MAX_RUNS], b[MAX_RUNS], med, bmed = 0, rmed = 0, lo, hi;

        if (!g->n)
            continue;
        memcpy(v, g->v, sizeof(v));
        memcpy(b, g->b, sizeof(b));
        for (unsigned i = 0; i < g->n; i++)
            r[i] = g->b[i] > 0 ? g->v[i] / g->b[i] : 0;
        med = drive_median(v, g->n); /* sorts v */
        lo = v[0];
        hi = v[g->n - 1];
        if (g->baseline) {
            bmed = drive_median(b, g->n);
            rmed = drive_median(r, g->n);
        }
        if (json) {
            printf("{\"bench\":\"%s\",\"unit\":\"%s\",\"runs\":%u,\"median\":%.1f,\"min\":%.1f,"
                   "\"max\":%.1f",
                   g->name, g->unit, g->n, med, lo, hi);
            if (g->baseline)
                printf(",\"baseline\":\"%s\",\"baseline_median\":%.1f,\"ratio\":%.3f", g->baseline,
                       bmed, rmed);
            if (g->goal)
                printf(",\"goal\":\"%s\"", g->goal);
            printf("}\n");
        } else {
            char bm[16] = "-", ra[16] = "-";

            if (g->baseline) {
                snprintf(bm, sizeof(bm), "%.1f", bmed);
                snprintf(ra, sizeof(ra), "%.3f", rmed);
            }
            printf("%-32s %-7s %10.1f %10.1f %10.1f  %-10s %10s %7s  %s\n", g->name, g->unit, med,
                   lo, hi, g->baseline ? g->baseline : "-", bm, ra, g->goal ? g->goal : "");
        }
    }
}

/* ---- loads -------------------------------------------------------------- */

/* The plan of b->mode; tag 1 marks a call on the frozen domain 0. */
static bool bench_pick(struct drive_thread *t, struct drive_op *op)
{
    struct bench *b = t->load->opaque;
    uint64_t s = t->cursor++;

    op->tag = 0;
    switch (b->mode) {
    case PLAN_VERSION:
        op->kind = DRIVE_VERSION;
        op->dom = 0;
        return true;
    case PLAN_STATE:
        op->kind = DRIVE_STATE;
        op->dom = (unsigned)((t->index * 7 + s) % N_DOMAINS);
        return true;
    case PLAN_BUSY:
        if (t->index < N_FROZEN_CLI) {
            op->kind = DRIVE_VERSION;
            op->dom = 0;
            op->tag = 2;
            return true;
        }
        __attribute__((fallthrough)); /* the others: the mix */
    case PLAN_FROZEN:
        if (b->mode == PLAN_FROZEN && t->index < N_FROZEN_CLI) {
            op->kind = DRIVE_STATS;
            op->dom = 0;
            op->tag = 1;
            return true;
        }
        __attribute__((fallthrough)); /* the others: the mix */
    case PLAN_MIX:
    default:
        op->kind = s % 2 ? DRIVE_STATS : DRIVE_STATE;
        op->dom = 1 + (unsigned)((t->index * 5 + s / 2) % (N_DOMAINS - 1));
        return true;
    }
}

static void bench_done(struct drive_thread *t, const struct drive_op *op, const struct drive_rec *r,
                       const char *message)
{
    struct bench *b = t->load->opaque;

    if (r->status == 200)
        return;
    if (op->tag == 1 && ((r->status == 504 && !strcmp(r->code, "ETIMEDOUT")) ||
                         (r->status == 503 && !strcmp(r->code, "EAGAIN"))))
        return;
    pthread_mutex_lock(&b->lock);
    if (!b->error[0])
        snprintf(b->error, sizeof(b->error), "%s %s: %u %s: %s", drive_kind_name(op->kind),
                 op->kind == DRIVE_VERSION ? "-" : b->names[op->dom], r->status, r->code,
                 message ? message : "(no message)");
    pthread_mutex_unlock(&b->lock);
}

static void nap(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Run @threads clients on plan @mode for @secs; the records stay in @l. */
static int run_load(struct bench *b, struct drive_load *l, enum plan_mode mode, unsigned threads,
                    double secs, moor_error *err)
{
    int rc;

    b->mode = mode;
    *l = (struct drive_load){.socket_path = b->d.socket_path,
                             .domains = b->domv,
                             .n_domains = N_DOMAINS,
                             .n_threads = threads,
                             .timeout_ms = 30000,
                             .pick = bench_pick,
                             .done = bench_done,
                             .opaque = b};
    if ((rc = drive_load_start(l, err)) < 0) {
        drive_load_free(l);
        return rc;
    }
    nap(secs);
    rc = drive_load_stop(l);
    if (rc < 0) {
        drive_load_free(l);
        return moor_error_set(err, rc, "a client thread ran out of memory");
    }
    if (b->error[0]) {
        drive_load_free(l);
        return moor_error_set(err, -EPROTO, "unexpected error: %s", b->error);
    }
    return 0;
}

/* Latencies of the records with @tag, status 200 or @status, started at or after @from. */
static void select_lat(const struct drive_load *l, int tag, unsigned status, uint64_t from,
                       struct drive_lat *out)
{
    for (unsigned i = 0; i < l->n_threads; i++)
        for (size_t j = 0; j < l->threads[i].n_recs; j++) {
            const struct drive_rec *r = &l->threads[i].recs[j];

            if (r->tag == tag && r->status == status && r->start_ns >= from)
                drive_lat_add(out, r->lat_ns);
        }
}

struct load_fig {
    double cps, p50_us, p99_us;
    double cpu_per_call_us; /* the daemon's CPU time (all threads) per call answered */
};

/* CPU time the daemon has used so far (user + system, all threads), in µs;
 * 0 if /proc cannot tell. */
static double daemon_cpu_us(const struct bench *b)
{
    char path[64], buf[1024];
    unsigned long ut = 0, st = 0;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)b->d.pid);
    if (!(f = fopen(path, "r")))
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* fields 14 and 15 come after the name */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

/* Every call of @l answered (any status). */
static size_t calls_answered(const struct drive_load *l)
{
    size_t n = 0;

    for (unsigned i = 0; i < l->n_threads; i++)
        for (size_t j = 0; j < l->threads[i].n_recs; j++)
            n += l->threads[i].recs[j].status != 0;
    return n;
}

static int measure(struct bench *b, enum plan_mode mode, unsigned threads, struct load_fig *f,
                   moor_error *err)
{
    struct drive_load l;
    struct drive_lat lat = {0};
    int rc;

    double cpu0 = daemon_cpu_us(b);
    if ((rc = run_load(b, &l, mode, threads, b->seconds, err)) < 0)
        return rc;
    size_t answered = calls_answered(&l);
    f->cpu_per_call_us = answered ? (daemon_cpu_us(b) - cpu0) / (double)answered : 0;
    select_lat(&l, 0, 200, 0, &lat);
    f->cps = (double)lat.n / b->seconds;
    f->p50_us = (double)drive_lat_pct(&lat, 50) / 1e3;
    f->p99_us = (double)drive_lat_pct(&lat, 99) / 1e3;
    drive_lat_free(&lat);
    drive_load_free(&l);
    return 0;
}

static int state_scaling(struct bench *b, moor_error *err)
{
    static const unsigned clients[3] = {1, 4, 8};
    int rc;

    for (int i = 0; i < 3; i++) {
        struct load_fig base, st;

        if ((rc = measure(b, PLAN_VERSION, clients[i], &base, err)) < 0 ||
            (rc = measure(b, PLAN_STATE, clients[i], &st, err)) < 0)
            return rc;
        fig_add(F_STATE_CPS_1 + 3 * i, st.cps, base.cps);
        fig_add(F_STATE_P50_1 + 3 * i, st.p50_us, base.p50_us);
        fig_add(F_STATE_P99_1 + 3 * i, st.p99_us, base.p99_us);
    }
    return 0;
}

/* Until domain 0 answers stats again after SIGCONT (its late reply clears
 * the unresponsive mark). */
static int wait_thawed(struct bench *b, moor_error *err)
{
    int rc = drive_wait_stats(b->c, b->domv, 1, 15000, err);

    if (rc < 0)
        moor_error_prefix(err, "after SIGCONT: ");
    return rc;
}

static int frozen(struct bench *b, moor_error *err)
{
    struct drive_load l;
    struct drive_lat lat = {0};
    struct load_fig alone, unfrozen, busy;
    uint64_t t0, first = UINT64_MAX, last = 0;
    double p99;
    int rc;

    if ((rc = measure(b, PLAN_MIX, N_OTHER_CLI, &alone, err)) < 0 ||
        (rc = measure(b, PLAN_FROZEN, N_FROZEN_CLI + N_OTHER_CLI, &unfrozen, err)) < 0 ||
        (rc = measure(b, PLAN_BUSY, N_FROZEN_CLI + N_OTHER_CLI, &busy, err)) < 0)
        return rc;
    t0 = drive_now_ns();
    kill(b->pids[0], SIGSTOP);
    double cpu0 = daemon_cpu_us(b);
    rc = run_load(b, &l, PLAN_FROZEN, N_FROZEN_CLI + N_OTHER_CLI, QMP_TIMEOUT_S + b->seconds, err);
    double cpu = daemon_cpu_us(b) - cpu0;
    kill(b->pids[0], SIGCONT);
    if (rc < 0)
        return rc;
    size_t answered = calls_answered(&l);
    fig_add(F_DAEMON_CPU, answered ? cpu / (double)answered : 0, busy.cpu_per_call_us);
    select_lat(&l, 0, 200, 0, &lat);
    p99 = (double)drive_lat_pct(&lat, 99) / 1e3;
    fig_add(F_OTHERS_P99, p99, unfrozen.p99_us);
    fig_add(F_OTHERS_P99_ALONE, p99, alone.p99_us);
    fig_add(F_OTHERS_P99_BUSY, p99, busy.p99_us);
    drive_lat_free(&lat);
    for (unsigned i = 0; i < l.n_threads; i++)
        for (size_t j = 0; j < l.threads[i].n_recs; j++) {
            const struct drive_rec *r = &l.threads[i].recs[j];

            if (r->tag == 1 && r->status == 504 && r->start_ns + r->lat_ns < first)
                first = r->start_ns + r->lat_ns;
            if (r->tag == 1 && r->start_ns + r->lat_ns > last)
                last = r->start_ns + r->lat_ns;
        }
    if (first == UINT64_MAX) {
        drive_load_free(&l);
        return moor_error_set(err, -EPROTO, "no call on the frozen domain failed with 504");
    }
    fig_add(F_FIRST_TIMEOUT, (double)(first - t0) / 1e6, 0);
    select_lat(&l, 1, 504, first, &lat);
    fig_add(F_FAILFAST_P50, (double)drive_lat_pct(&lat, 50) / 1e3, 0);
    fig_add(F_FAILFAST_P99, (double)drive_lat_pct(&lat, 99) / 1e3, 0);
    /* How hard the 32 callers hammer the daemon once their calls fail fast:
     * context for others.p99 on a machine with few cores. */
    if (last > first)
        fig_add(F_FAILFAST_CPS, (double)lat.n / ((double)(last - first) / 1e9), 0);
    drive_lat_free(&lat);
    drive_load_free(&l);
    return wait_thawed(b, err);
}

/* ---- start and reconnect ------------------------------------------------ */

struct starter {
    struct bench *b;
    unsigned i;
    pthread_t tid;
    int rc;
    moor_error err;
};

static void *start_one(void *opaque)
{
    struct starter *s = opaque;
    struct vmctl_client *c = vmctl_client_new(s->b->d.socket_path, 60000, &s->err);

    if (!c) {
        s->rc = s->err.code;
        return NULL;
    }
    s->rc = drive_domain_op(c, s->b->start_names[s->i], "start", &s->err);
    vmctl_client_free(c);
    return NULL;
}

/* Record the pids of start domains [from, to) (for the last-resort kill). */
static void note_start_pids(struct bench *b, unsigned from, unsigned to)
{
    for (unsigned i = from; i < to; i++)
        drive_domain_pid(b->c, b->start_names[i], &b->start_pids[i], NULL, 0, NULL);
}

/* Destroy + undefine the start domains, and wait for their QEMUs to go. */
static int unstart(struct bench *b, moor_error *err)
{
    int rc;

    for (unsigned i = 0; i <= N_START; i++)
        if ((rc = drive_domain_op(b->c, b->start_names[i], "destroy", err)) < 0 ||
            (rc = drive_domain_undefine(b->c, b->start_names[i], err)) < 0)
            return rc;
    return drive_wait_pids_gone(b->start_pids, N_START + 1, 5000, err);
}

static int start8(struct bench *b, moor_error *err)
{
    struct starter s[N_START + 1];
    uint64_t t, one;
    int rc;

    memset(s, 0, sizeof(s));
    memset(b->start_pids, 0, sizeof(b->start_pids));
    for (unsigned i = 0; i <= N_START; i++)
        if ((rc = drive_domain_define(b->c, b->start_names[i], 32, err)) < 0)
            return rc;
    t = drive_now_ns();
    if ((rc = drive_domain_op(b->c, b->start_names[N_START], "start", err)) < 0)
        return rc;
    one = drive_now_ns() - t;
    note_start_pids(b, N_START, N_START + 1);
    t = drive_now_ns();
    for (unsigned i = 0; i < N_START; i++) {
        s[i] = (struct starter){.b = b, .i = i};
        pthread_create(&s[i].tid, NULL, start_one, &s[i]);
    }
    for (unsigned i = 0; i < N_START; i++)
        pthread_join(s[i].tid, NULL);
    fig_add(F_START8, (double)(drive_now_ns() - t) / 1e6, (double)one / 1e6);
    note_start_pids(b, 0, N_START);
    for (unsigned i = 0; i < N_START; i++)
        if (s[i].rc < 0)
            return moor_error_set(err, s[i].rc, "%s", s[i].err.message);
    return unstart(b, err);
}

static int reconnect32(struct bench *b, moor_error *err)
{
    uint64_t t, cold;
    int rc;

    t = drive_now_ns();
    if ((rc = drive_daemon_start(&b->cold, 10000, err)) < 0)
        return rc;
    cold = drive_now_ns() - t;
    if ((rc = drive_daemon_stop(&b->cold, 10000, err)) < 0)
        return rc;
    drive_daemon_kill(&b->d);
    t = drive_now_ns();
    if ((rc = drive_daemon_start(&b->d, 10000, err)) < 0)
        return rc;
    if ((rc = drive_wait_stats(b->c, b->domv, N_DOMAINS, 30000, err)) < 0)
        return rc;
    fig_add(F_RECONNECT32, (double)(drive_now_ns() - t) / 1e6, (double)cold / 1e6);
    return 0;
}

/* ---- set-up and main ---------------------------------------------------- */

static int setup(struct bench *b, moor_error *err)
{
    const char *flags[] = {"--qmp-timeout", "1", b->pace ? "--refusal-pace" : NULL, b->pace, NULL};
    int rc;

    memcpy(b->flags, flags, sizeof(flags));
    if ((rc = drive_daemon_init(&b->d, b->exe, "moor-vmd-bench", b->flags, err)) < 0 ||
        (rc = drive_daemon_init(&b->cold, b->exe, "moor-vmd-bench-cold", NULL, err)) < 0 ||
        (rc = drive_daemon_start(&b->d, 10000, err)) < 0)
        return rc;
    if (!(b->c = vmctl_client_new(b->d.socket_path, 60000, err)))
        return err->code;
    for (unsigned i = 0; i < N_DOMAINS; i++)
        if ((rc = drive_domain_launch(b->c, b->names[i], 32, &b->pids[i], err)) < 0)
            return rc;
    return 0;
}

static int teardown(struct bench *b, moor_error *err)
{
    int rc;

    for (unsigned i = 0; i < N_DOMAINS; i++)
        if ((rc = drive_domain_op(b->c, b->names[i], "destroy", err)) < 0 ||
            (rc = drive_domain_undefine(b->c, b->names[i], err)) < 0)
            return rc;
    if ((rc = drive_daemon_stop(&b->d, 10000, err)) < 0)
        return rc;
    return drive_wait_pids_gone(b->pids, N_DOMAINS, 5000, err);
}

static int bench_run(struct bench *b, moor_error *err)
{
    int rc;

    if ((rc = setup(b, err)) < 0)
        return rc;
    for (unsigned r = 0; r < b->runs; r++) {
        if ((rc = state_scaling(b, err)) < 0 || (rc = frozen(b, err)) < 0 ||
            (rc = start8(b, err)) < 0 || (rc = reconnect32(b, err)) < 0)
            return rc;
        if (!b->json)
            fprintf(stderr, "moor-vmd-bench: run %u of %u done\n", r + 1, b->runs);
    }
    return teardown(b, err);
}

static void kill_leftovers(struct bench *b)
{
    vmctl_client_free(b->c);
    b->c = NULL;
    drive_daemon_kill(&b->d);
    drive_daemon_kill(&b->cold);
    for (unsigned i = 0; i < N_DOMAINS; i++)
        drive_kill_qemu(b->pids[i], b->names[i]);
    for (unsigned i = 0; i <= N_START; i++)
        drive_kill_qemu(b->start_pids[i], b->start_names[i]);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: moor-vmd-bench [--daemon PATH] [--runs N] [--seconds S] [--quick] "
               "[--json]\n"
               "       moor-vmd-bench --longjob [--daemon PATH] [--runs N] [--json]\n"
               "       moor-vmd-bench --vs-libvirt [--daemon PATH] [--seconds S] [--cap S] "
               "[--quick] [--json] [--only LIST]\n"
               "moor-vmd's own figures (default mode):\n"
               "  --daemon PATH  moor-vmd (default: ../apps/vmd/moor-vmd next to this program)\n"
               "  --runs N       repeated runs, medians reported (default 5, --quick 3)\n"
               "  --seconds S    length of each load window (default 2, --quick 0.5)\n"
               "  --json         one JSON object per figure\n"
               "  --refusal-pace MS  the daemon's --refusal-pace (default: the daemon's, 5)\n"
               "  --longjob      instead: state/stats/job latency during a save and a restore\n"
               "  --vs-libvirt   instead: moor-vmd and libvirtd side by side, one table (what\n"
               "                 `make bench-vmd` runs; as root, libvirt installed)\n"
               "with --vs-libvirt:\n"
               "  --seconds S    each load window (default 10, --quick 2)\n"
               "  --cap S        the hung-QEMU window, the cap on a call that never returns "
               "(default 60, --quick 15)\n"
               "  --only LIST    only these workloads, e.g. 1,3 (1: workloads 1 and 2)\n");
}

static int parse_args(int argc, char **argv, struct bench *b, char *daemon)
{
    static const struct option opts[] = {{"daemon", required_argument, NULL, 'd'},
                                         {"runs", required_argument, NULL, 'r'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {"quick", no_argument, NULL, 'q'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"longjob", no_argument, NULL, 'l'},
                                         {"refusal-pace", required_argument, NULL, 'p'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    bool quick = false;
    int runs = 0, c;
    double secs = 0;
    moor_error err = MOOR_ERROR_INIT;
    const char *given = NULL;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            given = optarg;
            break;
        case 'r':
            runs = atoi(optarg);
            break;
        case 's':
            secs = strtod(optarg, NULL);
            break;
        case 'q':
            quick = true;
            break;
        case 'j':
            b->json = true;
            break;
        case 'l':
            b->longjob = true;
            break;
        case 'p':
            b->pace = optarg; /* the daemon checks it */
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 2;
        }
    }
    b->runs = runs ? (unsigned)runs : quick ? 3 : 5;
    b->seconds = secs > 0 ? secs : quick ? 0.5 : 2;
    if (b->runs < 1 || b->runs > MAX_RUNS || b->seconds < 0.1 || b->seconds > 60) {
        fprintf(stderr, "moor-vmd-bench: --runs 1..%d, --seconds 0.1..60\n", MAX_RUNS);
        return 2;
    }
    if (drive_find_daemon(given, "../../apps/vmd/moor-vmd", daemon, &err) < 0) {
        fprintf(stderr, "moor-vmd-bench: %s\n", err.message);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct bench b;
    static char daemon[PATH_MAX];
    moor_error err = MOOR_ERROR_INIT;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--vs-libvirt") != 0)
            continue;
#ifdef MOOR_VMD_BENCH_LIBVIRT
        return vs_libvirt_main(argc, argv);
#else
        fprintf(stderr, "moor-vmd-bench: built without libvirt (libvirt-dev): `make deps-bench`, "
                        "then `meson setup --reconfigure` the build directory\n");
        return 2;
#endif
    }
    if ((rc = parse_args(argc, argv, &b, daemon)) != 0)
        return rc;
    signal(SIGPIPE, SIG_IGN);
    if (b.longjob)
        return longjob_bench(daemon, b.runs, b.json);
    pthread_mutex_init(&b.lock, NULL);
    b.exe = daemon;
    for (unsigned i = 0; i < N_DOMAINS; i++) {
        snprintf(b.names[i], sizeof(b.names[i]), "bench-%02u-%d", i, (int)getpid());
        b.domv[i] = b.names[i];
    }
    for (unsigned i = 0; i <= N_START; i++)
        snprintf(b.start_names[i], sizeof(b.start_names[i]), "start-%u-%d", i, (int)getpid());
    rc = bench_run(&b, &err);
    if (rc < 0) {
        fprintf(stderr, "moor-vmd-bench: FAILED: %s\n", err.message);
        kill_leftovers(&b);
        fprintf(stderr, "moor-vmd-bench: the daemon's log is %s\n", b.d.log_path);
        drive_daemon_cleanup(&b.cold, false);
        drive_daemon_cleanup(&b.d, true);
        return 1;
    }
    vmctl_client_free(b.c);
    drive_daemon_cleanup(&b.cold, false);
    drive_daemon_cleanup(&b.d, false);
    if (!b.json)
        printf("moor-vmd-bench: %u runs, %.1f s windows, 32 domains of real qemu-system-x86_64 "
               "-machine none (TCG), --qmp-timeout %d, --refusal-pace %s\n",
               b.runs, b.seconds, QMP_TIMEOUT_S, b.pace ? b.pace : "5 (default)");
    print_figs(b.json);
    return 0;
}
