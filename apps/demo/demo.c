/* SPDX-License-Identifier: MIT */
/*
 * demo.c - moor-vmd-demo: `make demo`. One run of the daemon against real
 * QEMU, showing what the design promises:
 *
 *   1. start moor-vmd (--qmp-timeout 2) on temporary dirs; define and start
 *      8 `-machine none` TCG domains (no guest code runs: little CPU);
 *   2. 4 client threads call state/stats/suspend/resume across them;
 *   3. one QEMU is frozen (SIGSTOP): its QMP calls fail with 504 ETIMEDOUT,
 *      after the first deadline at once, while the other 7 keep answering;
 *      then it is destroyed (timed);
 *   4. the daemon is SIGKILLed and restarted on the same dirs: it reconnects
 *      to the 7 QEMUs still running (timed until all 7 answer stats);
 *   5. everything is destroyed and undefined; no QEMU pid may be left.
 *
 * Every call is recorded (drive.c); an error is expected only where the
 * plan says so (a QMP call on the frozen domain), any other fails the demo.
 * Each thread owns two domains for suspend/resume (so a suspend never
 * meets a domain another thread paused: no 409 is expected) and calls
 * state and stats on the 7 that stay healthy; one thread also calls the
 * domain that gets frozen (see demo_pick).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "drive.h"

#define N_DOMAINS     8
#define N_CLIENTS     4
#define FROZEN        (N_DOMAINS - 1)
#define QMP_TIMEOUT_S 2

/* Where a domain stands, as the pickers see it (dom_phase). */
enum { DOM_HEALTHY = 0, DOM_FROZEN, DOM_RETIRED };
/* The windows of the run, for the per-window figures; a record's tag is
 * the window it was picked in. */
enum { WIN_HEALTHY = 0, WIN_FROZEN, WIN_AFTER, N_WINDOWS };
static const char *const window_names[N_WINDOWS] = {"all 8 healthy", "1 frozen", "after destroy"};

/* One client thread's own picker state (only that thread touches it while
 * the load runs): which of its owned domains it has paused. */
struct demo_thread {
    bool paused[N_DOMAINS];
};

struct demo {
    const char *exe; /* moor-vmd */
    struct drive_daemon d;
    struct vmctl_client *c;
    char names[N_DOMAINS][32];
    const char *domv[N_DOMAINS];
    pid_t pids[N_DOMAINS];
    double seconds; /* length of the load, split 30/45/25 over the windows */
    bool keep;
    uint64_t t0;
    /* Shared with the load threads; relaxed: each is a flag or a counter
     * read for progress lines, and no other data is published through it. */
    atomic_int dom_phase[N_DOMAINS];
    atomic_int window;
    atomic_ullong calls, other_calls, frozen_fails, unexpected;
    atomic_ullong freeze_ns, destroy_start_ns; /* 0 until SIGSTOP / destroy */
    /* Guards the messages below (written by load threads, read by main). */
    pthread_mutex_t lock;
    char first_unexpected[384];
    char first_timeout[256];               /* the frozen domain's first 504 message */
    char last_fast[256];                   /* its latest 504 that came back fast */
    bool timeout_shown;                    /* main: first_timeout already printed */
    struct demo_thread threads[N_CLIENTS]; /* [i]: client thread i's */
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static double secs_since(const struct demo *dm, uint64_t ns)
{
    return (double)(ns - dm->t0) / 1e9;
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

/* A progress line: "[ 12.3s] ...". Main thread only. */
__attribute__((format(printf, 2, 3))) static void say(const struct demo *dm, const char *fmt, ...)
{
    va_list ap;

    printf("[%5.1fs] ", secs_since(dm, drive_now_ns()));
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* Sleep @s seconds in small steps; false if interrupted (Ctrl-C). */
static bool nap(double s)
{
    uint64_t until = drive_now_ns() + (uint64_t)(s * 1e9);

    while (!interrupted && drive_now_ns() < until) {
        struct timespec ts = {0, 20 * 1000000L};

        nanosleep(&ts, NULL);
    }
    return !interrupted;
}

/* ---- the plan ----------------------------------------------------------- */

/* Is the frozen domain still called (not yet destroyed)? */
static bool frozen_live(struct demo *dm)
{
    return atomic_load_explicit(&dm->dom_phase[FROZEN], memory_order_relaxed) != DOM_RETIRED;
}

/*
 * Every thread calls state and stats on the domains 0..6 in turn and, one
 * call in 5, suspends or resumes (whichever flips it) one of the two
 * domains it owns: t and t + N_CLIENTS. Only the last thread calls the
 * domain that gets frozen (half of its state/stats calls), so while that
 * domain's first QMP deadline runs, one client waits for it and the other
 * three keep their pace: a client thread is synchronous, and one stuck on
 * the frozen domain would measure itself, not the daemon.
 */
static bool demo_pick(struct drive_thread *t, struct drive_op *op)
{
    struct demo *dm = t->load->opaque;
    struct demo_thread *st = &dm->threads[t->index];
    uint64_t s = t->cursor++, idx = s - s / 5; /* idx: count of state/stats picks */
    int win = atomic_load_explicit(&dm->window, memory_order_relaxed);

    if (s % 5 == 4) {
        unsigned own = t->index + ((s / 5) % 2 ? N_CLIENTS : 0);

        if (own == FROZEN && !frozen_live(dm))
            own = t->index;
        op->dom = own;
        op->kind = st->paused[own] ? DRIVE_RESUME : DRIVE_SUSPEND;
    } else if (t->index == N_CLIENTS - 1 && idx % 4 < 2 && frozen_live(dm)) {
        op->dom = FROZEN;
        op->kind = idx % 2 ? DRIVE_STATS : DRIVE_STATE;
    } else {
        op->dom = (unsigned)((t->index * 2 + idx) % (N_DOMAINS - 1));
        op->kind = idx % 2 ? DRIVE_STATS : DRIVE_STATE;
    }
    op->tag = (uint8_t)win;
    return true;
}

/*
 * Is @r one of the errors the plan expects? Only a QMP call (stats,
 * suspend, resume) on the frozen domain that ended after the SIGSTOP: 504
 * ETIMEDOUT (its deadline, then the unresponsive mark) or 503 EAGAIN (the
 * daemon's per-domain queue full); and, for one that ended after the
 * destroy began, 409 ENOTCONN or 502 EPIPE.
 */
static bool expected_error(const struct demo *dm, const struct drive_rec *r)
{
    uint64_t freeze = atomic_load_explicit(&dm->freeze_ns, memory_order_relaxed);
    uint64_t destroy = atomic_load_explicit(&dm->destroy_start_ns, memory_order_relaxed);
    uint64_t end = r->start_ns + r->lat_ns;

    if (r->dom != FROZEN || r->kind == DRIVE_STATE || !freeze || end < freeze)
        return false;
    if ((r->status == 504 && !strcmp(r->code, "ETIMEDOUT")) ||
        (r->status == 503 && !strcmp(r->code, "EAGAIN")))
        return true;
    return destroy && end >= destroy &&
           ((r->status == 409 && !strcmp(r->code, "ENOTCONN")) ||
            (r->status == 502 && !strcmp(r->code, "EPIPE")));
}

static void demo_done(struct drive_thread *t, const struct drive_op *op, const struct drive_rec *r,
                      const char *message)
{
    struct demo *dm = t->load->opaque;
    struct demo_thread *st = &dm->threads[t->index];

    atomic_fetch_add_explicit(&dm->calls, 1, memory_order_relaxed);
    if (op->dom != FROZEN)
        atomic_fetch_add_explicit(&dm->other_calls, 1, memory_order_relaxed);
    if (r->status == 200) {
        if (op->kind == DRIVE_SUSPEND || op->kind == DRIVE_RESUME)
            st->paused[op->dom] = op->kind == DRIVE_SUSPEND;
        return;
    }
    if (expected_error(dm, r)) {
        atomic_fetch_add_explicit(&dm->frozen_fails, 1, memory_order_relaxed);
        pthread_mutex_lock(&dm->lock);
        if (!dm->first_timeout[0])
            snprintf(dm->first_timeout, sizeof(dm->first_timeout), "%u %s after %.2f s: %s",
                     r->status, r->code, (double)r->lat_ns / 1e9, message ? message : "");
        else if (r->lat_ns < 100 * 1000000u)
            snprintf(dm->last_fast, sizeof(dm->last_fast), "%u %s after %.2f ms: %s", r->status,
                     r->code, ms(r->lat_ns), message ? message : "");
        pthread_mutex_unlock(&dm->lock);
        return;
    }
    if (atomic_fetch_add_explicit(&dm->unexpected, 1, memory_order_relaxed) == 0) {
        pthread_mutex_lock(&dm->lock);
        snprintf(dm->first_unexpected, sizeof(dm->first_unexpected), "%s %s: %u %s: %s",
                 drive_kind_name(op->kind), dm->names[op->dom], r->status, r->code,
                 message ? message : "(no message)");
        pthread_mutex_unlock(&dm->lock);
    }
}

/* ---- steps -------------------------------------------------------------- */

static int start_domains(struct demo *dm, moor_error *err)
{
    uint64_t t = drive_now_ns();
    int rc;

    for (unsigned i = 0; i < N_DOMAINS; i++) {
        if ((rc = drive_domain_launch(dm->c, dm->names[i], 32, &dm->pids[i], err)) < 0)
            return rc;
    }
    say(dm, "defined and started %d domains (-machine none, TCG, 32 MiB) in %.0f ms", N_DOMAINS,
        ms(drive_now_ns() - t));
    return 0;
}

/* One progress line while the load runs, after the frozen domain's first
 * 504 when it came since the last one. */
static void progress(struct demo *dm, uint64_t since, unsigned long long others0)
{
    pthread_mutex_lock(&dm->lock);
    if (dm->first_timeout[0] && !dm->timeout_shown) {
        say(dm, "%s: %s", dm->names[FROZEN], dm->first_timeout);
        dm->timeout_shown = true;
    }
    pthread_mutex_unlock(&dm->lock);

    unsigned long long others = atomic_load_explicit(&dm->other_calls, memory_order_relaxed);
    double s = (double)(drive_now_ns() - since) / 1e9;

    say(dm,
        "  %llu calls; %.0f/s on the other %d domains; %llu failed as expected, %llu "
        "unexpected",
        (unsigned long long)atomic_load_explicit(&dm->calls, memory_order_relaxed),
        s > 0 ? (double)(others - others0) / s : 0.0, N_DOMAINS - 1,
        (unsigned long long)atomic_load_explicit(&dm->frozen_fails, memory_order_relaxed),
        (unsigned long long)atomic_load_explicit(&dm->unexpected, memory_order_relaxed));
}

/* Let the load run @s seconds, a progress line every 2 s. */
static bool run_for(struct demo *dm, double s)
{
    uint64_t end = drive_now_ns() + (uint64_t)(s * 1e9);

    while (drive_now_ns() < end) {
        uint64_t since = drive_now_ns();
        unsigned long long c0 = atomic_load_explicit(&dm->other_calls, memory_order_relaxed);
        double left = (double)(end - drive_now_ns()) / 1e9;

        if (!nap(left < 2 ? left : 2))
            return false;
        progress(dm, since, c0);
    }
    return true;
}

/* Freeze, keep calling, destroy (timed), keep calling. */
static int freeze_and_destroy(struct demo *dm, uint64_t *destroy_ns, moor_error *err)
{
    uint64_t t;
    int rc;

    atomic_store_explicit(&dm->window, WIN_FROZEN, memory_order_relaxed);
    atomic_store_explicit(&dm->dom_phase[FROZEN], DOM_FROZEN, memory_order_relaxed);
    atomic_store_explicit(&dm->freeze_ns, drive_now_ns(), memory_order_relaxed);
    if (kill(dm->pids[FROZEN], SIGSTOP) < 0)
        return moor_error_set(err, -errno, "SIGSTOP %d: %s", (int)dm->pids[FROZEN],
                              strerror(errno));
    say(dm, "froze %s: SIGSTOP to QEMU pid %d (its QMP calls now time out after %d s)",
        dm->names[FROZEN], (int)dm->pids[FROZEN], QMP_TIMEOUT_S);
    if (!run_for(dm, dm->seconds * 0.45))
        return moor_error_set(err, -EINTR, "interrupted");
    atomic_store_explicit(&dm->dom_phase[FROZEN], DOM_RETIRED, memory_order_relaxed);
    atomic_store_explicit(&dm->window, WIN_AFTER, memory_order_relaxed);
    t = drive_now_ns();
    atomic_store_explicit(&dm->destroy_start_ns, t, memory_order_relaxed);
    if ((rc = drive_domain_op(dm->c, dm->names[FROZEN], "destroy", err)) < 0)
        return rc;
    *destroy_ns = drive_now_ns() - t;
    if ((rc = drive_wait_pids_gone(&dm->pids[FROZEN], 1, 5000, err)) < 0)
        return rc;
    say(dm, "destroyed the frozen %s in %.1f ms; its QEMU pid %d is gone", dm->names[FROZEN],
        ms(*destroy_ns), (int)dm->pids[FROZEN]);
    return run_for(dm, dm->seconds * 0.25) ? 0 : moor_error_set(err, -EINTR, "interrupted");
}

/* SIGKILL the daemon, restart it, time until the 7 live domains answer stats. */
static int kill_and_reconnect(struct demo *dm, uint64_t *ready_ns, uint64_t *all_ns,
                              moor_error *err)
{
    uint64_t t;
    char reason[32];
    int rc;

    drive_daemon_kill(&dm->d);
    say(dm, "killed moor-vmd with SIGKILL; restarting it on the same dirs");
    t = drive_now_ns();
    if ((rc = drive_daemon_start(&dm->d, 10000, err)) < 0)
        return rc;
    *ready_ns = drive_now_ns() - t;
    if ((rc = drive_wait_stats(dm->c, dm->domv, N_DOMAINS - 1, 30000, err)) < 0)
        return rc;
    *all_ns = drive_now_ns() - t;
    for (unsigned i = 0; i < N_DOMAINS - 1; i++) {
        pid_t pid;

        if ((rc = drive_domain_pid(dm->c, dm->names[i], &pid, reason, sizeof(reason), err)) < 0)
            return rc;
        if (pid != dm->pids[i])
            return moor_error_set(err, -ESTALE, "%s: pid %d after the restart, %d before",
                                  dm->names[i], (int)pid, (int)dm->pids[i]);
    }
    say(dm,
        "restarted: API ready in %.0f ms; all %d QEMUs reconnected (same pids, reason %s), "
        "answering stats after %.0f ms",
        ms(*ready_ns), N_DOMAINS - 1, reason, ms(*all_ns));
    return 0;
}

/* Destroy + undefine everything, stop the daemon, check every pid is gone. */
static int shut_down(struct demo *dm, moor_error *err)
{
    uint64_t t = drive_now_ns();
    int rc;

    for (unsigned i = 0; i < N_DOMAINS; i++) {
        if (i != FROZEN && (rc = drive_domain_op(dm->c, dm->names[i], "destroy", err)) < 0)
            return rc;
        if ((rc = drive_domain_undefine(dm->c, dm->names[i], err)) < 0)
            return rc;
    }
    say(dm, "destroyed %d and undefined %d domains in %.0f ms", N_DOMAINS - 1, N_DOMAINS,
        ms(drive_now_ns() - t));
    vmctl_client_free(dm->c);
    dm->c = NULL;
    if ((rc = drive_daemon_stop(&dm->d, 10000, err)) < 0)
        return rc;
    if ((rc = drive_wait_pids_gone(dm->pids, N_DOMAINS, 5000, err)) < 0)
        return rc;
    for (unsigned i = 0; i < N_DOMAINS; i++) {
        pid_t stray = drive_find_qemu(dm->names[i]);

        if (stray)
            return moor_error_set(err, -EEXIST, "a QEMU for %s is still running: pid %d",
                                  dm->names[i], (int)stray);
    }
    say(dm,
        "moor-vmd stopped (SIGTERM, exit 0); none of the %d QEMU pids is alive, and no "
        "process in /proc is a QEMU of these domains",
        N_DOMAINS);
    return 0;
}

/* ---- the report --------------------------------------------------------- */

struct err_count {
    uint8_t kind;
    uint16_t status;
    char code[DRIVE_CODE_LEN];
    unsigned long n;
};

static void count_error(struct err_count *v, size_t *n, size_t cap, const struct drive_rec *r)
{
    for (size_t i = 0; i < *n; i++) {
        if (v[i].kind == r->kind && v[i].status == r->status && !strcmp(v[i].code, r->code)) {
            v[i].n++;
            return;
        }
    }
    if (*n < cap) {
        v[*n] = (struct err_count){.kind = r->kind, .status = r->status, .n = 1};
        memcpy(v[*n].code, r->code, sizeof(r->code));
        (*n)++;
    }
}

/* Window starts and ends (ns) for calls/s per window. */
struct windows {
    uint64_t start[N_WINDOWS + 1];
};

static void report_latency(const struct drive_load *l, const struct windows *w)
{
    printf("  calls on the %d domains never frozen, all answered 200 (latency in ms):\n",
           N_DOMAINS - 1);
    printf("    %-8s %-14s %8s %9s %8s %8s\n", "call", "window", "calls", "calls/s", "p50", "p99");
    for (int k = DRIVE_STATE; k <= DRIVE_RESUME; k++) {
        for (int win = 0; win < N_WINDOWS; win++) {
            struct drive_lat lat = {0};
            double secs = (double)(w->start[win + 1] - w->start[win]) / 1e9;

            for (unsigned i = 0; i < l->n_threads; i++)
                for (size_t j = 0; j < l->threads[i].n_recs; j++) {
                    const struct drive_rec *r = &l->threads[i].recs[j];

                    if (r->kind == k && r->tag == win && r->dom != FROZEN && r->status == 200)
                        drive_lat_add(&lat, r->lat_ns);
                }
            printf("    %-8s %-14s %8zu %9.0f %8.2f %8.2f\n", drive_kind_name(k), window_names[win],
                   lat.n, secs > 0 ? (double)lat.n / secs : 0, ms(drive_lat_pct(&lat, 50)),
                   ms(drive_lat_pct(&lat, 99)));
            drive_lat_free(&lat);
        }
    }
}

/* The frozen domain: its first failure, and how fast the rest failed. */
static void report_frozen(const struct demo *dm, const struct drive_load *l, uint64_t freeze_ns)
{
    struct drive_lat fast = {0}, state = {0};
    uint64_t first_end = UINT64_MAX, first_lat = 0;

    for (unsigned i = 0; i < l->n_threads; i++)
        for (size_t j = 0; j < l->threads[i].n_recs; j++) {
            const struct drive_rec *r = &l->threads[i].recs[j];

            if (r->dom != FROZEN || r->start_ns + r->lat_ns < freeze_ns)
                continue;
            if (r->kind == DRIVE_STATE && r->status == 200 && r->start_ns >= freeze_ns)
                drive_lat_add(&state, r->lat_ns);
            else if (r->status == 504 && r->start_ns + r->lat_ns < first_end) {
                first_end = r->start_ns + r->lat_ns;
                first_lat = r->lat_ns;
            }
        }
    for (unsigned i = 0; i < l->n_threads; i++)
        for (size_t j = 0; j < l->threads[i].n_recs; j++) {
            const struct drive_rec *r = &l->threads[i].recs[j];

            if (r->dom == FROZEN && r->status == 504 && r->start_ns >= first_end)
                drive_lat_add(&fast, r->lat_ns);
        }
    printf("  frozen %s:\n", dm->names[FROZEN]);
    printf("    state (no QMP): %zu calls answered 200, p50 %.2f ms, p99 %.2f ms\n", state.n,
           ms(drive_lat_pct(&state, 50)), ms(drive_lat_pct(&state, 99)));
    if (first_end == UINT64_MAX) {
        printf("    no QMP call on it failed with 504\n");
    } else {
        printf("    first 504 ETIMEDOUT %.2f s after the SIGSTOP (the call that timed out waited "
               "%.2f s)\n",
               (double)(first_end - freeze_ns) / 1e9, (double)first_lat / 1e9);
        printf("    then %zu calls failed fast with 504 ETIMEDOUT: p50 %.2f ms, p99 %.2f ms, "
               "max %.2f ms\n",
               fast.n, ms(drive_lat_pct(&fast, 50)), ms(drive_lat_pct(&fast, 99)),
               ms(drive_lat_pct(&fast, 100)));
    }
    if (dm->last_fast[0])
        printf("    the last of them: %s\n", dm->last_fast);
    drive_lat_free(&fast);
    drive_lat_free(&state);
}

/* Print the report; returns the number of unexpected errors. */
static unsigned long report(const struct demo *dm, const struct drive_load *l,
                            const struct windows *w, uint64_t destroy_ns, uint64_t ready_ns,
                            uint64_t reconnect_ns)
{
    struct err_count errs[32];
    size_t n_errs = 0, total = 0;
    unsigned long unexpected = 0;
    double secs = (double)(w->start[N_WINDOWS] - w->start[0]) / 1e9;

    for (unsigned i = 0; i < l->n_threads; i++) {
        total += l->threads[i].n_recs;
        for (size_t j = 0; j < l->threads[i].n_recs; j++) {
            const struct drive_rec *r = &l->threads[i].recs[j];

            if (r->status == 200)
                continue;
            count_error(errs, &n_errs, 32, r);
            unexpected += !expected_error(dm, r);
        }
    }
    printf("\nmoor-vmd demo report\n");
    printf("  load: %u client threads, %.1f s, %zu calls, %.0f calls/s\n", l->n_threads, secs,
           total, secs > 0 ? (double)total / secs : 0);
    report_latency(l, w);
    report_frozen(dm, l, atomic_load_explicit(&dm->freeze_ns, memory_order_relaxed));
    printf("  errors by call and status:%s\n", n_errs ? "" : " none");
    for (size_t i = 0; i < n_errs; i++)
        printf("    %-8s %3u %-12s %8lu\n", drive_kind_name(errs[i].kind), errs[i].status,
               errs[i].code, errs[i].n);
    printf("    (expected: only QMP calls on the frozen domain: 504 ETIMEDOUT, or 503 EAGAIN)\n");
    printf("  destroy of the frozen domain: %.1f ms\n", ms(destroy_ns));
    printf("  after SIGKILL + restart: API ready in %.0f ms, all %d running domains answering "
           "stats in %.0f ms\n",
           ms(ready_ns), N_DOMAINS - 1, ms(reconnect_ns));
    if (unexpected)
        printf("  UNEXPECTED ERRORS: %lu; the first: %s\n", unexpected, dm->first_unexpected);
    return unexpected;
}

/* ---- main --------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: moor-vmd-demo [--daemon PATH] [--seconds N] [--keep]\n"
               "  --daemon PATH  the moor-vmd executable (default: ../vmd/moor-vmd next to this "
               "program)\n"
               "  --seconds N    length of the load (default 20)\n"
               "  --keep         keep the temporary directory (daemon log, state)\n");
}

static int parse_args(int argc, char **argv, char *daemon, double *seconds, bool *keep)
{
    static const struct option opts[] = {{"daemon", required_argument, NULL, 'd'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {"keep", no_argument, NULL, 'k'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    moor_error err = MOOR_ERROR_INIT;
    const char *given = NULL;
    int c;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            given = optarg;
            break;
        case 's':
            *seconds = strtod(optarg, NULL);
            if (*seconds < 4 || *seconds > 600) {
                fprintf(stderr, "moor-vmd-demo: --seconds must be 4..600\n");
                return 2;
            }
            break;
        case 'k':
            *keep = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 2;
        }
    }
    if (drive_find_daemon(given, "../vmd/moor-vmd", daemon, &err) < 0) {
        fprintf(stderr, "moor-vmd-demo: %s\n", err.message);
        return 2;
    }
    return 0;
}

/* The load from start to stop, with the freeze and destroy inside it. */
static int run_load(struct demo *dm, struct drive_load *l, struct windows *w, uint64_t *destroy_ns,
                    moor_error *err)
{
    int rc;

    *l = (struct drive_load){.socket_path = dm->d.socket_path,
                             .domains = dm->domv,
                             .n_domains = N_DOMAINS,
                             .n_threads = N_CLIENTS,
                             .timeout_ms = 30000,
                             .pick = demo_pick,
                             .done = demo_done,
                             .opaque = dm};
    if ((rc = drive_load_start(l, err)) < 0)
        return rc;
    w->start[WIN_HEALTHY] = drive_now_ns();
    say(dm, "%d client threads calling state/stats/suspend/resume on all %d domains", N_CLIENTS,
        N_DOMAINS);
    if (!run_for(dm, dm->seconds * 0.30)) {
        drive_load_stop(l);
        return moor_error_set(err, -EINTR, "interrupted");
    }
    w->start[WIN_FROZEN] = drive_now_ns();
    rc = freeze_and_destroy(dm, destroy_ns, err);
    w->start[WIN_AFTER] = atomic_load_explicit(&dm->destroy_start_ns, memory_order_relaxed);
    if (drive_load_stop(l) < 0 && rc == 0)
        rc = moor_error_set(err, -ENOMEM, "a client thread ran out of memory for its records");
    w->start[N_WINDOWS] = drive_now_ns();
    if (rc == 0)
        say(dm, "stopped the clients");
    return rc;
}

static int run(struct demo *dm, moor_error *err)
{
    static const char *const flags[] = {"--qmp-timeout", "2", NULL};
    struct drive_load l = {0};
    struct windows w = {{0}};
    uint64_t destroy_ns = 0, ready_ns = 0, reconnect_ns = 0;
    int rc;

    if ((rc = drive_daemon_init(&dm->d, dm->exe, "moor-vmd-demo", flags, err)) < 0)
        return rc;
    say(dm, "starting %s (--qmp-timeout %d) in %s", dm->d.exe, QMP_TIMEOUT_S, dm->d.base);
    if ((rc = drive_daemon_start(&dm->d, 10000, err)) < 0)
        return rc;
    if (!(dm->c = vmctl_client_new(dm->d.socket_path, 60000, err)))
        return err->code;
    if ((rc = start_domains(dm, err)) < 0)
        return rc;
    rc = run_load(dm, &l, &w, &destroy_ns, err);
    if (rc == 0)
        rc = kill_and_reconnect(dm, &ready_ns, &reconnect_ns, err);
    if (rc == 0)
        rc = shut_down(dm, err);
    if (rc == 0 && report(dm, &l, &w, destroy_ns, ready_ns, reconnect_ns))
        rc = moor_error_set(err, -EPROTO, "unexpected errors (see the report)");
    drive_load_free(&l);
    return rc;
}

/* On failure: kill what is left of ours (the daemon, our QEMUs by pid). */
static void fail_cleanup(struct demo *dm)
{
    vmctl_client_free(dm->c);
    dm->c = NULL;
    drive_daemon_kill(&dm->d);
    for (unsigned i = 0; i < N_DOMAINS; i++) {
        pid_t pid = dm->pids[i] > 0 ? dm->pids[i] : drive_find_qemu(dm->names[i]);

        /* The pid we know, then any other QEMU of that name (one whose
         * start failed before we learnt its pid); a few rounds at most. */
        for (int round = 0; round < 4 && pid > 0; round++) {
            if (drive_kill_qemu(pid, dm->names[i]))
                fprintf(stderr, "moor-vmd-demo: killed leftover QEMU pid %d (%s)\n", (int)pid,
                        dm->names[i]);
            pid = drive_find_qemu(dm->names[i]);
        }
    }
}

int main(int argc, char **argv)
{
    static struct demo dm;
    moor_error err = MOOR_ERROR_INIT;
    struct sigaction sa = {.sa_handler = on_signal};
    char daemon[PATH_MAX] = "";
    int rc;

    dm.seconds = 20;
    if ((rc = parse_args(argc, argv, daemon, &dm.seconds, &dm.keep)) != 0)
        return rc;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&dm.lock, NULL);
    dm.exe = daemon;
    for (unsigned i = 0; i < N_DOMAINS; i++) {
        snprintf(dm.names[i], sizeof(dm.names[i]), "demo-%u-%d", i, (int)getpid());
        dm.domv[i] = dm.names[i];
    }
    dm.t0 = drive_now_ns();
    rc = run(&dm, &err);
    if (rc < 0) {
        fprintf(stderr, "moor-vmd-demo: FAILED: %s\n", err.message);
        fail_cleanup(&dm);
        if (dm.d.base[0])
            fprintf(stderr, "moor-vmd-demo: the daemon's log and state are in %s\n", dm.d.base);
        drive_daemon_cleanup(&dm.d, true);
        return 1;
    }
    drive_daemon_cleanup(&dm.d, dm.keep);
    printf("  total run time: %.1f s\n", secs_since(&dm, drive_now_ns()));
    return 0;
}
