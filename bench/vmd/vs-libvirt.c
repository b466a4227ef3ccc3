/* SPDX-License-Identifier: MIT */
/*
 * vs-libvirt.c - `moor-vmd-bench --vs-libvirt` (what `make bench-vmd`
 * runs): moor-vmd and libvirtd side by side, see vs-libvirt.h and
 * docs/vmd.md "Side by side with libvirtd".
 *
 * Usage: moor-vmd-bench --vs-libvirt [--daemon PATH] [--seconds S] [--cap S]
 *                       [--quick] [--json] [--only LIST]
 *
 * Both daemons run at once, each with the same 32 domains (64 MiB, `pc`,
 * TCG, no disk, no graphics) of the same QEMU binary. Every workload runs
 * on one daemon and then on the other (the order alternates), each client
 * thread with its own kept-alive connection (moor-vmd: one HTTP
 * connection over the UNIX socket; libvirt: one virConnect):
 *   1 state   N = 1, 4, 8 clients calling state round-robin over the 32
 *             domains for S s (default 10): calls/s, p50, p99;
 *   2 stats   the same with each daemon's stats call (it asks QEMU), and
 *             with a raw QMP query-status through each daemon (4 clients);
 *   7 footprint RSS and threads with 32 domains; daemon CPU seconds for
 *             10,000 state calls from 4 clients;
 *   3 hung    one QEMU SIGSTOPped: 25 clients call stats on it while 4
 *             call state and stats on the 31 others, for the cap C
 *             (default 60 s); the frozen domain is then destroyed with
 *             the pile still there. Baseline: the same 29 clients with
 *             nothing frozen, S s;
 *   4 long job vs-longjob.c;
 *   5 start/destroy 8 new domains started at once by 8 threads, then
 *             destroyed at once;
 *   6 restart SIGKILL of the daemon with 32 domains running, start it
 *             again: until it answers, until all 32 answer stats.
 * The whole run takes about 8 minutes (--quick: S = 2, C = 15: 2.5-4.5).
 * Any error on a call that should succeed fails the run (exit 1).
 */
#define _GNU_SOURCE
#include "vs-libvirt.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "drive.h"

#define N_PILED   25 /* clients on the frozen domain */
#define N_HEALTHY 4  /* clients on the others */
#define N_START   8
#define MAX_ROWS  64
#define CPU_CALLS 10000u

/* ---- helpers ------------------------------------------------------------ */

uint64_t vs_now_ns(void)
{
    return drive_now_ns();
}

void vs_nap(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

void vs_cell_num(struct vs_cell *c, double v)
{
    c->v = v;
    c->set = true;
}

void vs_cell_note(struct vs_cell *c, const char *note)
{
    snprintf(c->note, sizeof(c->note), "%s", note);
}

static double ms_of(uint64_t ns)
{
    return (double)ns / 1e6;
}

/* ---- the table ---------------------------------------------------------- */

struct row {
    char workload[40];
    const char *metric, *unit;
    bool higher_better;
    struct vs_cell c[2]; /* [0] moor-vmd, [1] libvirtd */
};

static struct row rows[MAX_ROWS];
static unsigned n_rows;
static char footnotes[8][320];
static unsigned n_footnotes;

static struct row *row_add(const char *workload, const char *metric, const char *unit,
                           bool higher_better)
{
    struct row *r = &rows[n_rows < MAX_ROWS - 1 ? n_rows++ : n_rows];

    memset(r, 0, sizeof(*r));
    snprintf(r->workload, sizeof(r->workload), "%s", workload);
    r->metric = metric;
    r->unit = unit;
    r->higher_better = higher_better;
    return r;
}

/* A line under the table: "@who: @what". */
static void footnote(const char *who, const char *what)
{
    if (n_footnotes < 8)
        snprintf(footnotes[n_footnotes++], sizeof(footnotes[0]), "%s: %s", who, what);
}

static void fmt_num(char *buf, size_t len, double v, const char *unit)
{
    if (!strcmp(unit, "calls/s") || !strcmp(unit, "threads") ||
        (!strcmp(unit, "switches") && v >= 10))
        snprintf(buf, len, "%.0f", v);
    else if (v < 10)
        snprintf(buf, len, "%.2f", v);
    else if (v < 100)
        snprintf(buf, len, "%.1f", v);
    else
        snprintf(buf, len, "%.0f", v);
}

static void fmt_cell(char *buf, size_t len, const struct vs_cell *c, const char *unit)
{
    char n[32];

    if (c->note[0] && !c->set) {
        snprintf(buf, len, "%s", c->note);
        return;
    }
    if (!c->set) {
        snprintf(buf, len, "-");
        return;
    }
    fmt_num(n, sizeof(n), c->v, unit);
    snprintf(buf, len, "%s%s", c->bound ? "> " : "", n);
}

/* moor-vmd / libvirtd, with "<"/">" when one side is a bound; false when
 * there is no ratio. */
static bool ratio(const struct row *r, double *q, char *rel)
{
    const struct vs_cell *m = &r->c[0], *l = &r->c[1];

    *rel = ' ';
    if (!m->set || !l->set || l->v <= 0 || (m->bound && l->bound))
        return false;
    *q = m->v / l->v;
    if (l->bound)
        *rel = '<';
    else if (m->bound)
        *rel = '>';
    return true;
}

static const char *better(const struct row *r, double q, char rel)
{
    bool moor;

    if ((rel == '<' && q > 1) || (rel == '>' && q < 1) || (q > 0.97 && q < 1.03))
        return "~";
    moor = r->higher_better ? q > 1 : q < 1;
    return moor ? "moor-vmd" : "libvirtd";
}

static void print_json(void)
{
    for (unsigned i = 0; i < n_rows; i++) {
        const struct row *r = &rows[i];
        double q;
        char rel;

        printf("{\"workload\":\"%s\",\"metric\":\"%s\",\"unit\":\"%s\"", r->workload, r->metric,
               r->unit);
        for (int k = 0; k < 2; k++) {
            const struct vs_cell *c = &r->c[k];

            printf(",\"%s\":", k ? "libvirtd" : "moor_vmd");
            if (c->set)
                printf("{\"value\":%.3f%s}", c->v, c->bound ? ",\"lower_bound\":true" : "");
            else
                printf("{\"value\":null,\"note\":\"%s\"}", c->note);
        }
        if (ratio(r, &q, &rel))
            printf(",\"ratio\":%.3f%s", q,
                   rel == ' '   ? ""
                   : rel == '<' ? ",\"ratio_is\":\"<\""
                                : ",\"ratio_is\":\">\"");
        printf(",\"higher_is_better\":%s}\n", r->higher_better ? "true" : "false");
    }
}

static void print_table(void)
{
    printf("%-30s %-23s %-7s %14s %14s %9s  %s\n", "workload", "metric", "unit", "moor-vmd",
           "libvirtd", "ratio", "better");
    for (unsigned i = 0; i < n_rows; i++) {
        const struct row *r = &rows[i];
        char a[VS_NOTE_LEN + 8], b[VS_NOTE_LEN + 8], q[24] = "-";
        const char *w = "";
        double v;
        char rel;

        fmt_cell(a, sizeof(a), &r->c[0], r->unit);
        fmt_cell(b, sizeof(b), &r->c[1], r->unit);
        if (ratio(r, &v, &rel)) {
            snprintf(q, sizeof(q), "%s%.2f", rel == ' ' ? "" : rel == '<' ? "< " : "> ", v);
            w = better(r, v, rel);
        }
        printf("%-30s %-23s %-7s %14s %14s %9s  %s\n",
               i && !strcmp(rows[i - 1].workload, r->workload) ? "" : r->workload, r->metric,
               r->unit, a, b, q, w);
    }
    for (unsigned i = 0; i < n_footnotes; i++)
        printf("%s\n", footnotes[i]);
}

/* ---- loads -------------------------------------------------------------- */

enum plan { P_STATE, P_STATS, P_QMP, P_HUNG };

struct rec {
    uint64_t start, lat;
    uint8_t tag; /* 1: a call on the frozen domain */
    bool ok;
};

struct load;

struct worker {
    struct load *l;
    unsigned idx;
    pthread_t tid;
    void *conn;
    struct rec *recs;
    size_t n, cap;
    uint64_t seq;
    bool oom;
};

struct load {
    struct vs_side *s;
    enum plan plan;
    unsigned n;
    uint64_t per_thread; /* calls per thread; 0: until stopped */
    atomic_bool stop;    /* relaxed: a flag polled between calls */
    struct worker *w;
    unsigned started;
    pthread_mutex_t lock; /* guards the error fields */
    unsigned errors;      /* failed calls with tag 0 */
    char first_err[320], first_frozen_err[256];
};

static void pick(struct worker *w, enum vs_op *op, unsigned *dom, uint8_t *tag)
{
    uint64_t s = w->seq++;

    *tag = 0;
    *dom = (unsigned)((w->idx * 7 + s) % VS_DOMAINS);
    switch (w->l->plan) {
    case P_STATE:
        *op = VS_STATE;
        return;
    case P_STATS:
        *op = VS_STATS;
        return;
    case P_QMP:
        *op = VS_QMP;
        return;
    case P_HUNG:
    default:
        if (w->idx < N_PILED) {
            *op = VS_STATS;
            *dom = 0;
            *tag = 1;
            return;
        }
        *op = s % 2 ? VS_STATS : VS_STATE;
        *dom = 1 + (unsigned)((w->idx * 5 + s / 2) % (VS_DOMAINS - 1));
        return;
    }
}

static void note_error(struct load *l, uint8_t tag, const struct vs_side *s, unsigned dom,
                       const char *msg)
{
    pthread_mutex_lock(&l->lock);
    if (tag == 0) {
        if (!l->errors++)
            snprintf(l->first_err, sizeof(l->first_err), "%s: %s", s->names[dom], msg);
    } else if (!l->first_frozen_err[0]) {
        snprintf(l->first_frozen_err, sizeof(l->first_frozen_err), "%s", msg);
    }
    pthread_mutex_unlock(&l->lock);
}

static void *worker_main(void *opaque)
{
    struct worker *w = opaque;
    struct load *l = w->l;

    while (!atomic_load_explicit(&l->stop, memory_order_relaxed) &&
           (!l->per_thread || w->seq < l->per_thread)) {
        char msg[240];
        struct rec *r;
        enum vs_op op;
        unsigned dom;
        uint8_t tag;

        if (w->n == w->cap) {
            size_t cap = w->cap ? w->cap * 2 : 4096;
            struct rec *p = realloc(w->recs, cap * sizeof(*p));

            if (!p) {
                w->oom = true;
                break;
            }
            w->recs = p;
            w->cap = cap;
        }
        pick(w, &op, &dom, &tag);
        r = &w->recs[w->n];
        r->tag = tag;
        r->start = vs_now_ns();
        r->ok = l->s->ops->call(l->s, w->conn, op, dom, msg, sizeof(msg)) == 0;
        r->lat = vs_now_ns() - r->start;
        w->n++;
        if (!r->ok)
            note_error(l, tag, l->s, dom, msg);
    }
    return NULL;
}

static void load_free(struct load *l)
{
    for (unsigned i = 0; l->w && i < l->n; i++) {
        if (l->w[i].conn)
            l->s->ops->close(l->w[i].conn);
        free(l->w[i].recs);
    }
    free(l->w);
    l->w = NULL;
    pthread_mutex_destroy(&l->lock);
}

/* Join the threads (after the stop flag, or once each made its calls). */
static int load_join(struct load *l, moor_error *err)
{
    bool oom = false;

    for (unsigned i = 0; i < l->started; i++) {
        pthread_join(l->w[i].tid, NULL);
        oom |= l->w[i].oom;
    }
    l->started = 0;
    if (oom)
        return moor_error_set(err, -ENOMEM, "a client thread ran out of memory");
    return 0;
}

static int load_start(struct load *l, struct vs_side *s, enum plan plan, unsigned n,
                      uint64_t per_thread, moor_error *err)
{
    int rc;

    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->lock, NULL);
    l->s = s;
    l->plan = plan;
    l->n = n;
    l->per_thread = per_thread;
    if (!(l->w = calloc(n, sizeof(*l->w))))
        return moor_error_set(err, -ENOMEM, "out of memory");
    for (unsigned i = 0; i < n; i++) {
        l->w[i].l = l;
        l->w[i].idx = i;
        if ((rc = s->ops->open(s, &l->w[i].conn, err)) < 0)
            return rc;
    }
    for (unsigned i = 0; i < n; i++) {
        if ((rc = pthread_create(&l->w[i].tid, NULL, worker_main, &l->w[i])) != 0) {
            atomic_store_explicit(&l->stop, true, memory_order_relaxed);
            load_join(l, NULL);
            return moor_error_set(err, -rc, "pthread_create: %s", strerror(rc));
        }
        l->started++;
    }
    return 0;
}

static void load_stop_flag(struct load *l)
{
    atomic_store_explicit(&l->stop, true, memory_order_relaxed);
}

/* Latencies of the records with @tag started in [@from, @to), @ok_only. */
static void select_lat(const struct load *l, int tag, uint64_t from, uint64_t to, bool ok_only,
                       struct drive_lat *out)
{
    for (unsigned i = 0; i < l->n; i++)
        for (size_t j = 0; j < l->w[i].n; j++) {
            const struct rec *r = &l->w[i].recs[j];

            if (r->tag == tag && r->start >= from && r->start < to && (r->ok || !ok_only))
                drive_lat_add(out, r->lat);
        }
}

/* A timed window of @plan with @n threads; fails on any error of tag 0. */
static int window(struct vs_side *s, enum plan plan, unsigned n, double secs, struct load *l,
                  moor_error *err)
{
    int rc = load_start(l, s, plan, n, 0, err);

    if (rc == 0) {
        vs_nap(secs);
        load_stop_flag(l);
        rc = load_join(l, err);
    }
    if (rc == 0 && l->errors)
        rc = moor_error_set(err, -EPROTO, "%s: %u calls failed, the first: %s", s->label, l->errors,
                            l->first_err);
    if (rc < 0)
        load_free(l);
    return rc;
}

/* ---- workloads 1 and 2: throughput -------------------------------------- */

static struct vs_side *sides[2];
static struct vs_cfg cfg;
static unsigned turn; /* alternates which side goes first */

/* The order of the two sides for the next step. */
static void order(int o[2])
{
    o[0] = (int)(turn & 1);
    o[1] = 1 - o[0];
    turn++;
}

static int grid_point(enum plan plan, const char *name, unsigned clients, moor_error *err)
{
    char w[40];
    struct row *cps, *p50, *p99;
    int o[2], rc;

    snprintf(w, sizeof(w), "%s, %u client%s", name, clients, clients > 1 ? "s" : "");
    cps = row_add(w, "calls", "calls/s", true);
    p50 = row_add(w, "latency p50", "ms", false);
    p99 = row_add(w, "latency p99", "ms", false);
    order(o);
    for (int k = 0; k < 2; k++) {
        struct vs_side *s = sides[o[k]];
        struct drive_lat lat = {0};
        struct load l;

        if ((rc = window(s, plan, clients, cfg.secs, &l, err)) < 0)
            return rc;
        select_lat(&l, 0, 0, UINT64_MAX, true, &lat);
        vs_cell_num(&cps->c[o[k]], (double)lat.n / cfg.secs);
        vs_cell_num(&p50->c[o[k]], ms_of(drive_lat_pct(&lat, 50)));
        vs_cell_num(&p99->c[o[k]], ms_of(drive_lat_pct(&lat, 99)));
        drive_lat_free(&lat);
        load_free(&l);
    }
    return 0;
}

static int w_throughput(moor_error *err)
{
    static const unsigned clients[3] = {1, 4, 8};
    int rc;

    for (int i = 0; i < 3; i++)
        if ((rc = grid_point(P_STATE, "1 state", clients[i], err)) < 0)
            return rc;
    for (int i = 0; i < 3; i++)
        if ((rc = grid_point(P_STATS, "2 stats", clients[i], err)) < 0)
            return rc;
    return grid_point(P_QMP, "2 qmp query-status", 4, err);
}

/* ---- workload 7: footprint ---------------------------------------------- */

/* VmRSS (KiB) and Threads of @pid from /proc. */
static void proc_status(pid_t pid, double *rss_kib, double *threads)
{
    char path[64], line[256];
    FILE *f;

    *rss_kib = *threads = 0;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "re")))
        return;
    while (fgets(line, sizeof(line), f)) {
        sscanf(line, "VmRSS: %lf", rss_kib);
        sscanf(line, "Threads: %lf", threads);
    }
    fclose(f);
}

/* utime + stime of @pid in seconds. */
static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (!(f = fopen(path, "re")))
        return 0;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (!(p = strrchr(buf, ')')))
        return 0;
    /* after "pid (comm)": state ppid pgrp session tty tpgid flags minflt
     * cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Context switches (voluntary and not) of all of @pid's threads. */
static double proc_switches(pid_t pid)
{
    char path[64], line[256];
    double sum = 0, v;
    struct dirent *e;
    DIR *d;

    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    if (!(d = opendir(path)))
        return 0;
    while ((e = readdir(d))) {
        char sp[400];
        FILE *f;

        if (e->d_name[0] == '.')
            continue;
        snprintf(sp, sizeof(sp), "%s/%s/status", path, e->d_name);
        if (!(f = fopen(sp, "re")))
            continue;
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "voluntary_ctxt_switches: %lf", &v) == 1 ||
                sscanf(line, "nonvoluntary_ctxt_switches: %lf", &v) == 1)
                sum += v;
        fclose(f);
    }
    closedir(d);
    return sum;
}

static int w_footprint(moor_error *err)
{
    struct row *rss = row_add("7 footprint, 32 domains", "RSS of the daemon", "MiB", false);
    struct row *all = row_add("7 footprint, 32 domains", "RSS with helpers", "MiB", false);
    struct row *thr = row_add("7 footprint, 32 domains", "threads", "threads", false);
    struct row *cpu = row_add("7 footprint, 32 domains", "CPU per 10k state", "s", false);
    struct row *cli = row_add("7 footprint, 32 domains", "client CPU, 10k state", "s", false);
    struct row *csw =
        row_add("7 footprint, 32 domains", "ctx switches per state", "switches", false);
    int o[2], rc;

    order(o);
    for (int k = 0; k < 2; k++) {
        struct vs_side *s = sides[o[k]];
        double r, t, hr = 0, ht = 0, c0, m0, x0;
        struct load l;

        proc_status(s->daemon_pid, &r, &t);
        if (s->helper_pid)
            proc_status(s->helper_pid, &hr, &ht);
        vs_cell_num(&rss->c[o[k]], r / 1024);
        vs_cell_num(&all->c[o[k]], (r + hr) / 1024);
        vs_cell_num(&thr->c[o[k]], t);
        c0 = proc_cpu_s(s->daemon_pid);
        m0 = proc_cpu_s(getpid());
        x0 = proc_switches(s->daemon_pid);
        if ((rc = load_start(&l, s, P_STATE, 4, CPU_CALLS / 4, err)) < 0 ||
            (rc = load_join(&l, err)) < 0) {
            load_free(&l);
            return rc;
        }
        vs_cell_num(&cpu->c[o[k]], proc_cpu_s(s->daemon_pid) - c0);
        vs_cell_num(&cli->c[o[k]], proc_cpu_s(getpid()) - m0);
        vs_cell_num(&csw->c[o[k]], (proc_switches(s->daemon_pid) - x0) / CPU_CALLS);
        load_free(&l);
    }
    return 0;
}

/* ---- workload 3: hung QEMU ---------------------------------------------- */

struct hung {
    double base_p99, p99, max, first, later_p50, later_p99, destroy;
    bool first_bound;
    unsigned later_n;
    char first_msg[256];
};

/* Until domain @dom answers stats (after a restart of its QEMU). */
static int wait_answers(struct vs_side *s, unsigned dom, moor_error *err)
{
    uint64_t deadline = vs_now_ns() + 30000000000ull;
    char msg[256] = "";

    while (s->ops->call(s, s->main_conn, VS_STATS, dom, msg, sizeof(msg)) < 0) {
        if (vs_now_ns() > deadline)
            return moor_error_set(err, -ETIMEDOUT, "%s: %s does not answer stats: %s", s->label,
                                  s->names[dom], msg);
        vs_nap(0.005);
    }
    return 0;
}

/* The first call on the frozen domain and the later ones that ended in
 * the window. */
static void frozen_calls(const struct load *l, uint64_t t0, uint64_t t_end, struct hung *h)
{
    const struct rec *first = NULL;
    struct drive_lat lat = {0};

    for (unsigned i = 0; i < l->n; i++)
        for (size_t j = 0; j < l->w[i].n; j++) {
            const struct rec *r = &l->w[i].recs[j];

            if (r->tag == 1 && r->start >= t0 && (!first || r->start < first->start))
                first = r;
        }
    for (unsigned i = 0; i < l->n; i++)
        for (size_t j = 0; j < l->w[i].n; j++) {
            const struct rec *r = &l->w[i].recs[j];

            if (r->tag == 1 && r != first && r->start >= t0 && r->start + r->lat <= t_end)
                drive_lat_add(&lat, r->lat);
        }
    h->first_bound = !first || first->start + first->lat > t_end;
    h->first = first && !h->first_bound ? ms_of(first->lat) : cfg.cap_s * 1e3;
    h->later_n = (unsigned)lat.n;
    h->later_p50 = ms_of(drive_lat_pct(&lat, 50));
    h->later_p99 = ms_of(drive_lat_pct(&lat, 99));
    drive_lat_free(&lat);
}

static int hung_side(struct vs_side *s, struct hung *h, moor_error *err)
{
    struct drive_lat lat = {0};
    uint64_t t0, t_end, td;
    struct load l;
    pid_t pid;
    int rc;

    memset(h, 0, sizeof(*h));
    if ((rc = window(s, P_HUNG, N_PILED + N_HEALTHY, cfg.secs, &l, err)) < 0)
        return rc;
    select_lat(&l, 0, 0, UINT64_MAX, true, &lat);
    h->base_p99 = ms_of(drive_lat_pct(&lat, 99));
    drive_lat_free(&lat);
    load_free(&l);
    if ((rc = s->ops->qemu_pid(s, s->main_conn, s->names[0], &pid, err)) < 0)
        return rc;
    kill(pid, SIGSTOP);
    t0 = vs_now_ns();
    if ((rc = load_start(&l, s, P_HUNG, N_PILED + N_HEALTHY, 0, err)) < 0) {
        kill(pid, SIGCONT);
        load_free(&l);
        return rc;
    }
    vs_nap(cfg.cap_s);
    t_end = vs_now_ns();
    load_stop_flag(&l);
    td = vs_now_ns();
    rc = s->ops->destroy(s, s->main_conn, s->names[0], err);
    h->destroy = ms_of(vs_now_ns() - td);
    if (rc < 0)
        kill(pid, SIGCONT);
    rc = rc ?: load_join(&l, err);
    if (rc == 0 && l.errors)
        rc = moor_error_set(err, -EPROTO, "%s: %u calls on healthy domains failed, the first: %s",
                            s->label, l.errors, l.first_err);
    if (rc < 0) {
        load_free(&l);
        return rc;
    }
    select_lat(&l, 0, t0, t_end, false, &lat);
    h->p99 = ms_of(drive_lat_pct(&lat, 99));
    h->max = ms_of(drive_lat_pct(&lat, 100));
    drive_lat_free(&lat);
    frozen_calls(&l, t0, t_end, h);
    snprintf(h->first_msg, sizeof(h->first_msg), "%s", l.first_frozen_err);
    load_free(&l);
    if ((rc = s->ops->start(s, s->main_conn, s->names[0], err)) < 0 ||
        (rc = s->ops->qemu_pid(s, s->main_conn, s->names[0], &s->qemu_pids[0], err)) < 0)
        return rc;
    return wait_answers(s, 0, err);
}

static int w_hung(moor_error *err)
{
    static const char w[] = "3 hung QEMU, 25+4 clients";
    struct row *bp = row_add(w, "healthy p99, no hang", "ms", false);
    struct row *fp = row_add(w, "healthy p99, 1 frozen", "ms", false);
    struct row *fr = row_add(w, "healthy p99 frozen/not", "x", false);
    struct row *mx = row_add(w, "healthy longest call", "ms", false);
    struct row *fc = row_add(w, "frozen: first call", "ms", false);
    struct row *l5 = row_add(w, "frozen: later p50", "ms", false);
    struct row *l9 = row_add(w, "frozen: later p99", "ms", false);
    struct row *ds = row_add(w, "destroy the frozen one", "ms", false);
    int o[2], rc;

    order(o);
    for (int k = 0; k < 2; k++) {
        struct vs_side *s = sides[o[k]];
        int i = o[k];
        struct hung h;

        if ((rc = hung_side(s, &h, err)) < 0)
            return rc;
        vs_cell_num(&bp->c[i], h.base_p99);
        vs_cell_num(&fp->c[i], h.p99);
        vs_cell_num(&fr->c[i], h.base_p99 > 0 ? h.p99 / h.base_p99 : 0);
        vs_cell_num(&mx->c[i], h.max);
        vs_cell_num(&fc->c[i], h.first);
        fc->c[i].bound = h.first_bound;
        if (h.later_n) {
            vs_cell_num(&l5->c[i], h.later_p50);
            vs_cell_num(&l9->c[i], h.later_p99);
        } else {
            vs_cell_note(&l5->c[i], "none ended");
            vs_cell_note(&l9->c[i], "none ended");
        }
        vs_cell_num(&ds->c[i], h.destroy);
        if (h.first_msg[0]) {
            char what[300];

            snprintf(what, sizeof(what), "first error on the frozen domain: %s", h.first_msg);
            footnote(s->label, what);
        }
    }
    return 0;
}

/* ---- workload 4: long job (vs-longjob.c) -------------------------------- */

static int w_longjob(moor_error *err)
{
    static const char w[] = "4 long job (save/restore)";
    struct row *sv = row_add(w, "save", "ms", false);
    struct row *rs = row_add(w, "restore", "ms", false);
    struct row *p5 = row_add(w, "calls on it p50", "ms", false);
    struct row *p9 = row_add(w, "calls on it p99", "ms", false);
    struct row *gp = row_add(w, "others' longest gap", "ms", false);
    int o[2], rc;

    order(o);
    for (int k = 0; k < 2; k++) {
        int i = o[k];

        if ((rc = vs_longjob(sides[i], &cfg, &sv->c[i], &rs->c[i], &p5->c[i], &p9->c[i], &gp->c[i],
                             err)) < 0)
            return rc;
        if (!sv->c[i].set) {
            char what[200];

            snprintf(what, sizeof(what), "workload 4 not available: %s has no save/restore",
                     sides[i]->label);
            footnote(sides[i]->label, what);
        }
    }
    return 0;
}

/* ---- workload 5: start/destroy 8 at once -------------------------------- */

struct par {
    struct vs_side *s;
    void *conn;
    char name[VS_NAME_LEN];
    int (*fn)(struct vs_side *, void *, const char *, moor_error *);
    pthread_t tid;
    int rc;
    moor_error err;
};

static void *par_main(void *opaque)
{
    struct par *p = opaque;

    p->rc = p->fn(p->s, p->conn, p->name, &p->err);
    return NULL;
}

/* Run @fn on the N_START domains at once, one thread each; the ms until all
 * returned. */
static int par_run(struct par *p, int (*fn)(struct vs_side *, void *, const char *, moor_error *),
                   double *ms, moor_error *err)
{
    uint64_t t = vs_now_ns();

    bool threaded[N_START];

    for (unsigned i = 0; i < N_START; i++) {
        p[i].fn = fn;
        p[i].err = (moor_error)MOOR_ERROR_INIT;
        threaded[i] = pthread_create(&p[i].tid, NULL, par_main, &p[i]) == 0;
        if (!threaded[i])
            par_main(&p[i]); /* no thread: run it here instead */
    }
    for (unsigned i = 0; i < N_START; i++)
        if (threaded[i])
            pthread_join(p[i].tid, NULL);
    *ms = ms_of(vs_now_ns() - t);
    for (unsigned i = 0; i < N_START; i++)
        if (p[i].rc < 0)
            return moor_error_set(err, p[i].rc, "%s: %s", p[i].s->label, p[i].err.message);
    return 0;
}

static int startstop_side(struct vs_side *s, double *start_ms, double *destroy_ms, moor_error *err)
{
    struct par p[N_START];
    int rc = 0;

    memset(p, 0, sizeof(p));
    for (unsigned i = 0; i < N_START && !rc; i++) {
        p[i].s = s;
        snprintf(p[i].name, sizeof(p[i].name), "%ss%u", s->prefix, i);
        rc = s->ops->define(s, s->main_conn, p[i].name, VS_MEMORY, NULL, err);
        rc = rc ?: s->ops->open(s, &p[i].conn, err);
    }
    rc = rc ?: par_run(p, s->ops->start, start_ms, err);
    rc = rc ?: par_run(p, s->ops->destroy, destroy_ms, err);
    for (unsigned i = 0; i < N_START; i++) {
        if (p[i].conn)
            s->ops->close(p[i].conn);
        if (!rc)
            rc = s->ops->undefine(s, s->main_conn, p[i].name, err);
    }
    return rc;
}

static int w_startstop(moor_error *err)
{
    static const char w[] = "5 start/destroy 8 at once";
    struct row *st = row_add(w, "start 8", "ms", false);
    struct row *ds = row_add(w, "destroy 8", "ms", false);
    int o[2], rc;

    order(o);
    for (int k = 0; k < 2; k++) {
        double a, b;

        if ((rc = startstop_side(sides[o[k]], &a, &b, err)) < 0)
            return rc;
        vs_cell_num(&st->c[o[k]], a);
        vs_cell_num(&ds->c[o[k]], b);
    }
    return 0;
}

/* ---- workload 6: restart ------------------------------------------------ */

static int w_restart(moor_error *err)
{
    static const char w[] = "6 SIGKILL + restart, 32";
    struct row *fa = row_add(w, "first answer", "ms", false);
    struct row *al = row_add(w, "all 32 answer stats", "ms", false);
    int o[2], rc;

    order(o);
    for (int k = 0; k < 2; k++) {
        double a, b;

        if ((rc = sides[o[k]]->ops->restart(sides[o[k]], &a, &b, err)) < 0)
            return rc;
        vs_cell_num(&fa->c[o[k]], a);
        vs_cell_num(&al->c[o[k]], b);
    }
    return 0;
}

/* ---- set-up, teardown, main --------------------------------------------- */

#define N_LAUNCHERS 4

struct launcher {
    struct vs_side *s;
    unsigned first;
    pthread_t tid;
    int rc;
    moor_error err;
};

/* Define, start and note the pid of domains first, first + N_LAUNCHERS, ...
 * on a connection of its own. */
static void *launcher_main(void *opaque)
{
    struct launcher *w = opaque;
    struct vs_side *s = w->s;
    void *conn = NULL;

    if ((w->rc = s->ops->open(s, &conn, &w->err)) < 0)
        return NULL;
    for (unsigned i = w->first; i < VS_DOMAINS && !w->rc; i += N_LAUNCHERS) {
        w->rc = s->ops->define(s, conn, s->names[i], VS_MEMORY, NULL, &w->err);
        w->rc = w->rc ?: s->ops->start(s, conn, s->names[i], &w->err);
        w->rc = w->rc ?: s->ops->qemu_pid(s, conn, s->names[i], &s->qemu_pids[i], &w->err);
    }
    s->ops->close(conn);
    return NULL;
}

/* The 32 domains of @s, started by N_LAUNCHERS threads (set-up time only;
 * nothing is measured). */
static int launch_all(struct vs_side *s, moor_error *err)
{
    struct launcher w[N_LAUNCHERS];
    bool threaded[N_LAUNCHERS];

    for (unsigned i = 0; i < VS_DOMAINS; i++)
        snprintf(s->names[i], sizeof(s->names[i]), "%s%02u", s->prefix, i);
    for (unsigned k = 0; k < N_LAUNCHERS; k++) {
        w[k] = (struct launcher){.s = s, .first = k, .err = MOOR_ERROR_INIT};
        threaded[k] = pthread_create(&w[k].tid, NULL, launcher_main, &w[k]) == 0;
        if (!threaded[k])
            launcher_main(&w[k]);
    }
    for (unsigned k = 0; k < N_LAUNCHERS; k++)
        if (threaded[k])
            pthread_join(w[k].tid, NULL);
    for (unsigned k = 0; k < N_LAUNCHERS; k++)
        if (w[k].rc < 0)
            return moor_error_set(err, w[k].rc, "%s: %s", s->label, w[k].err.message);
    return 0;
}

static int remove_all(struct vs_side *s, moor_error *err)
{
    int rc;

    for (unsigned i = 0; i < VS_DOMAINS; i++) {
        if (!s->names[i][0])
            continue;
        if ((rc = s->ops->destroy(s, s->main_conn, s->names[i], err)) < 0 ||
            (rc = s->ops->undefine(s, s->main_conn, s->names[i], err)) < 0)
            return rc;
    }
    return drive_wait_pids_gone(s->qemu_pids, VS_DOMAINS, 15000, err);
}

/* SIGKILL any QEMU whose command line names @prefix (a domain of this run
 * the failure path did not reach by pid). */
static void kill_strays(const char *prefix)
{
    for (int i = 0; i < 200; i++) {
        pid_t pid = drive_find_qemu(prefix);

        if (!pid)
            return;
        kill(pid, SIGKILL);
        vs_nap(0.01);
    }
}

/* Workload @w is to run (--only, e.g. "1,4"; 1 covers 1 and 2). */
static const char *only;

static bool wanted(char w)
{
    return !only || strchr(only, w);
}

static int run_all(const char *daemon, const char *qemu, moor_error *err)
{
    int rc;

    if ((rc = vs_lv_init(sides[1], qemu, err)) < 0 ||
        (rc = vs_moor_init(sides[0], daemon, qemu, err)) < 0 ||
        (rc = launch_all(sides[0], err)) < 0 || (rc = launch_all(sides[1], err)) < 0)
        return rc;
    if (!cfg.json)
        fprintf(stderr, "moor-vmd-bench: 2 x %d domains running; workloads 1, 2 ...\n", VS_DOMAINS);
    if ((wanted('1') && (rc = w_throughput(err)) < 0) ||
        (wanted('7') && (rc = w_footprint(err)) < 0))
        return rc;
    if (!cfg.json && wanted('3'))
        fprintf(stderr, "moor-vmd-bench: workload 3 (hung QEMU, %.0f s per daemon) ...\n",
                cfg.cap_s);
    if ((wanted('3') && (rc = w_hung(err)) < 0) || (wanted('4') && (rc = w_longjob(err)) < 0) ||
        (wanted('5') && (rc = w_startstop(err)) < 0) || (wanted('6') && (rc = w_restart(err)) < 0))
        return rc;
    if ((rc = remove_all(sides[0], err)) < 0 || (rc = remove_all(sides[1], err)) < 0)
        return rc;
    return 0;
}

static void print_header(const char *qemu, time_t started)
{
    struct utsname u;
    double load[3] = {0};
    char when[64];

    uname(&u);
    getloadavg(load, 3);
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M UTC", gmtime(&started));
    printf("moor-vmd vs libvirtd, %s, %s (%s %s, %ld CPUs, load %.2f at the end), %.0f s "
           "windows, hung window %.0f s\n",
           when, u.nodename, u.sysname, u.release, sysconf(_SC_NPROCESSORS_ONLN), load[0], cfg.secs,
           cfg.cap_s);
    printf("same QEMU %s; %d domains each: 64 MiB, pc, TCG, no disk, no graphics; ratio = "
           "moor-vmd / libvirtd\n",
           qemu, VS_DOMAINS);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: moor-vmd-bench --vs-libvirt [--daemon PATH] [--seconds S] [--cap S] "
               "[--quick] [--json] [--only LIST]\n"
               "  --seconds S  each load window (default 10, --quick 2)\n"
               "  --cap S      the hung-QEMU window, the cap on a call that never returns "
               "(default 60, --quick 15)\n"
               "  --only LIST  only these workloads, e.g. 1,3 (1: workloads 1 and 2)\n");
}

static int parse(int argc, char **argv, char *daemon)
{
    static const struct option opts[] = {{"vs-libvirt", no_argument, NULL, 'v'},
                                         {"daemon", required_argument, NULL, 'd'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {"cap", required_argument, NULL, 'c'},
                                         {"quick", no_argument, NULL, 'q'},
                                         {"only", required_argument, NULL, 'o'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *given = NULL;
    moor_error err = MOOR_ERROR_INIT;
    double secs = 0, cap = 0;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'v':
            break;
        case 'd':
            given = optarg;
            break;
        case 's':
            secs = strtod(optarg, NULL);
            break;
        case 'c':
            cap = strtod(optarg, NULL);
            break;
        case 'q':
            cfg.quick = true;
            break;
        case 'o':
            only = optarg;
            break;
        case 'j':
            cfg.json = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 2;
        }
    }
    cfg.secs = secs > 0 ? secs : cfg.quick ? 2 : 10;
    cfg.cap_s = cap > 0 ? cap : cfg.quick ? 15 : 60;
    if (cfg.secs < 0.5 || cfg.secs > 60 || cfg.cap_s < 12 || cfg.cap_s > 300) {
        fprintf(stderr, "moor-vmd-bench: --seconds 0.5..60, --cap 12..300 (more than "
                        "moor-vmd's 10 s QMP deadline)\n");
        return 2;
    }
    if (drive_find_daemon(given, "../../apps/vmd/moor-vmd", daemon, &err) < 0) {
        fprintf(stderr, "moor-vmd-bench: %s\n", err.message);
        return 2;
    }
    return 0;
}

/* The QEMU both daemons run: qemu-system-x86_64 on PATH, absolute. */
static int find_qemu(char *out, moor_error *err)
{
    const char *path = getenv("PATH");
    char buf[4096];

    snprintf(buf, sizeof(buf), "%s", path && *path ? path : "/usr/bin:/bin");
    for (char *save, *dir = strtok_r(buf, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        snprintf(out, PATH_MAX, "%s/qemu-system-x86_64", dir);
        if (dir[0] == '/' && access(out, X_OK) == 0)
            return 0;
    }
    return moor_error_set(err, -ENOENT, "no qemu-system-x86_64 on PATH (make deps)");
}

int vs_libvirt_main(int argc, char **argv)
{
    static struct vs_side moor, lv;
    static char daemon[PATH_MAX], qemu[PATH_MAX];
    moor_error err = MOOR_ERROR_INIT, e2 = MOOR_ERROR_INIT;
    time_t started = time(NULL);
    int rc;

    if ((rc = parse(argc, argv, daemon)) != 0)
        return rc;
    signal(SIGPIPE, SIG_IGN);
    sides[0] = &moor;
    sides[1] = &lv;
    rc = find_qemu(qemu, &err);
    rc = rc ?: run_all(daemon, qemu, &err);
    if (rc < 0)
        fprintf(stderr, "moor-vmd-bench: FAILED: %s\n", err.message);
    if (vs_moor_fini(&moor, rc < 0, &e2) < 0 && rc == 0)
        rc = moor_error_set(&err, e2.code, "stopping moor-vmd: %s", e2.message);
    e2 = (moor_error)MOOR_ERROR_INIT;
    if (vs_lv_fini(&lv, rc < 0, &e2) < 0)
        fprintf(stderr, "moor-vmd-bench: stopping libvirtd: %s\n", e2.message);
    kill_strays(moor.prefix[0] ? moor.prefix : "vsl-m-none");
    kill_strays(lv.prefix[0] ? lv.prefix : "vsl-l-none");
    if (rc < 0)
        return 1;
    if (cfg.json) {
        print_json();
    } else {
        print_header(qemu, started);
        print_table();
        printf("total run time: %.0f s\n", difftime(time(NULL), started));
    }
    return 0;
}
