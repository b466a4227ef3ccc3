/* SPDX-License-Identifier: MIT */
/*
 * bench/moor-bench.c - the one benchmark harness of moor.
 *
 * Usage: moor-bench [--filter SUBSTR] [--threads N] [--runs R] [--iters I] [--json] [--list]
 *
 * Method, per case and thread count:
 *   1. calibrate: run the loop with growing iteration counts until one run
 *      takes at least 20 ms, then size it for ~30 ms (each run then lasts
 *      20-50 ms on a quiet machine). --iters I skips this and uses I, for
 *      instruction counting under callgrind;
 *   2. one warm-up run, not recorded (so a figure executes the loop R + 1
 *      times; bench/callgrind.sh counts on that);
 *   3. R recorded runs (default 11); the figures are the median, minimum
 *      and maximum over them, in nanoseconds per operation.
 *
 * Threads: a single-thread case runs in the main thread. At N > 1 threads
 * (BENCH_CONTENDED cases only), N fresh threads meet at a barrier and each
 * does the full iteration count on the same shared state; a run's time is
 * from the earliest start to the latest end, and ns/op is that wall time
 * divided by the per-thread iteration count: the cost of one operation as
 * each thread sees it while all N contend. Thread counts run: 1, then
 * powers of two below N, then N (default N = 2, so 1 and 2).
 *
 * Baselines: a case names another case as its baseline; the harness
 * measures the baseline first, at the same thread count and in the same
 * run, even if --filter leaves it out, and reports ratio = median /
 * baseline median.
 *
 * Output: a table for people, or with --json one object per line:
 *   {"bench": NAME, "threads": N, "median_ns": X, "min_ns": X, "max_ns": X,
 *    "baseline": NAME-or-null, "ratio": X-or-null}
 * The registry of cases is filled by constructors (see bench.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

#define MAX_GROUPS    64
#define MAX_THREADS   256
#define DEFAULT_RUNS  11
#define MIN_RUN_NS    20e6 /* calibration stops once a run lasts this long */
#define TARGET_RUN_NS 30e6 /* ... and then sizes runs for this */

/* ---- registry ------------------------------------------------------------ */

/* Filled by constructors before main(), read-only afterwards: no lock. */
static struct {
    const struct bench_case *cases;
    size_t n;
} groups[MAX_GROUPS];
static size_t ngroups;

void bench_register(const struct bench_case *cases, size_t n)
{
    if (ngroups == MAX_GROUPS)
        bench_fail("too many bench files; raise MAX_GROUPS");
    groups[ngroups].cases = cases;
    groups[ngroups].n = n;
    ngroups++;
}

void bench_fail(const char *fmt, ...)
{
    va_list ap;

    fputs("moor-bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* ---- options --------------------------------------------------------------- */

struct options {
    const char *filter; /* NULL: every case */
    int max_threads;
    int runs;
    uint64_t iters; /* 0: calibrate */
    bool json;
    bool list;
};

static void usage(FILE *f)
{
    fputs("usage: moor-bench [--filter SUBSTR] [--threads N] [--runs R] [--iters I] [--json]\n"
          "                  [--list]\n"
          "  --filter SUBSTR  only cases whose name contains SUBSTR (and their baselines)\n"
          "  --threads N      run contended cases at 1, 2, 4, ... and N threads (default 2)\n"
          "  --runs R         recorded runs per figure (default 11)\n"
          "  --iters I        iterations per run and thread, instead of calibrating\n"
          "  --json           one JSON object per line instead of a table\n"
          "  --list           print each case's name and baseline, run nothing\n",
          f);
}

static long parse_number(const char *opt, const char *arg, long min, long max)
{
    char *end;
    long v;

    if (!arg)
        bench_fail("%s needs a value", opt);
    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < min || v > max)
        bench_fail("%s: expected a number in [%ld, %ld], got '%s'", opt, min, max, arg);
    return v;
}

static void parse_options(int argc, char **argv, struct options *o)
{
    *o = (struct options){NULL, 2, DEFAULT_RUNS, 0, false, false};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (!strcmp(a, "--list")) {
            o->list = true;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--filter")) {
            if (!v)
                bench_fail("--filter needs a value");
            o->filter = v;
        } else if (!strcmp(a, "--threads")) {
            o->max_threads = (int)parse_number(a, v, 1, MAX_THREADS);
        } else if (!strcmp(a, "--runs")) {
            o->runs = (int)parse_number(a, v, 1, 1000);
        } else if (!strcmp(a, "--iters")) {
            o->iters = (uint64_t)parse_number(a, v, 1, 1L << 40);
        } else {
            usage(stderr);
            exit(2);
        }
        i++;
    }
}

/* ---- timing ------------------------------------------------------------------ */

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

struct worker {
    pthread_t thread;
    pthread_barrier_t *start;
    const struct bench_case *c;
    void *state;
    uint64_t iters;
    double t0, t1;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    pthread_barrier_wait(w->start);
    w->t0 = now_ns();
    w->c->loop(w->state, w->iters);
    w->t1 = now_ns();
    return NULL;
}

/* One run of @threads threads on shared @state; returns the wall time. */
static double run_threads(const struct bench_case *c, void *state, int threads, uint64_t iters)
{
    struct worker w[MAX_THREADS];
    pthread_barrier_t start;
    double first, last;

    if (pthread_barrier_init(&start, NULL, (unsigned)threads))
        bench_fail("pthread_barrier_init failed");
    for (int i = 0; i < threads; i++) {
        w[i] = (struct worker){.start = &start, .c = c, .state = state, .iters = iters};
        if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]))
            bench_fail("pthread_create failed");
    }
    for (int i = 0; i < threads; i++)
        pthread_join(w[i].thread, NULL);
    pthread_barrier_destroy(&start);
    first = w[0].t0;
    last = w[0].t1;
    for (int i = 1; i < threads; i++) {
        first = w[i].t0 < first ? w[i].t0 : first;
        last = w[i].t1 > last ? w[i].t1 : last;
    }
    return last - first;
}

/* One run; returns its wall time in ns. */
static double run_once(const struct bench_case *c, void *state, int threads, uint64_t iters)
{
    double t0;

    if (threads > 1)
        return run_threads(c, state, threads, iters);
    t0 = now_ns();
    c->loop(state, iters);
    return now_ns() - t0;
}

/* Iterations per thread that make one run last about TARGET_RUN_NS. */
static uint64_t calibrate(const struct bench_case *c, void *state, int threads)
{
    uint64_t iters = 1000;
    double t;

    while ((t = run_once(c, state, threads, iters)) < MIN_RUN_NS) {
        /* Grow at most 10x per step: the first runs are noisy. */
        double scale = t > 0 ? TARGET_RUN_NS / t : 10.0;

        iters = (uint64_t)((double)iters * (scale > 10.0 ? 10.0 : scale)) + 1;
    }
    return (uint64_t)((double)iters * TARGET_RUN_NS / t) + 1;
}

/* ---- one figure --------------------------------------------------------- */

struct result {
    bool done, running;
    uint64_t iters;
    double median, min, max; /* ns per op (per thread) */
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static void measure(const struct bench_case *c, int threads, const struct options *o,
                    struct result *r)
{
    double ns[1000];
    void *state = c->setup ? c->setup() : NULL;

    r->iters = o->iters ? o->iters : calibrate(c, state, threads);
    run_once(c, state, threads, r->iters); /* warm-up */
    for (int i = 0; i < o->runs; i++)
        ns[i] = run_once(c, state, threads, r->iters) / (double)r->iters;
    if (c->teardown)
        c->teardown(state);
    qsort(ns, (size_t)o->runs, sizeof(ns[0]), cmp_double);
    r->min = ns[0];
    r->max = ns[o->runs - 1];
    r->median = o->runs % 2 ? ns[o->runs / 2] : (ns[o->runs / 2 - 1] + ns[o->runs / 2]) / 2;
}

/* ---- output -------------------------------------------------------------- */

static void print_header(const struct options *o)
{
    if (o->json)
        return;
    printf("# moor-bench: %d runs per figure, ns per operation per thread, "
           "ratio = median / baseline median (same run, same threads)\n",
           o->runs);
    printf("%-24s %7s %12s %10s %10s %10s %7s  %s\n", "bench", "threads", "iters", "median_ns",
           "min_ns", "max_ns", "ratio", "baseline");
}

static void print_result(const struct bench_case *c, int threads, const struct result *r,
                         const struct result *base, const struct options *o)
{
    double ratio = base ? r->median / base->median : 0;

    if (o->json) {
        printf("{\"bench\": \"%s\", \"threads\": %d, \"median_ns\": %.3f, \"min_ns\": %.3f, "
               "\"max_ns\": %.3f, ",
               c->name, threads, r->median, r->min, r->max);
        if (base)
            printf("\"baseline\": \"%s\", \"ratio\": %.3f}\n", c->baseline, ratio);
        else
            printf("\"baseline\": null, \"ratio\": null}\n");
    } else {
        printf("%-24s %7d %12llu %10.2f %10.2f %10.2f ", c->name, threads,
               (unsigned long long)r->iters, r->median, r->min, r->max);
        if (base)
            printf("%7.3f  %s\n", ratio, c->baseline);
        else
            printf("%7s  %s\n", "-", c->baseline ? c->baseline : "-");
    }
    fflush(stdout);
}

/* ---- the run -------------------------------------------------------------- */

/* Every case, flattened; results[i * nthreads + t] per thread-count index. */
static const struct bench_case **cases;
static size_t ncases;

static void collect_cases(void)
{
    for (size_t g = 0; g < ngroups; g++) {
        const struct bench_case **grown = realloc(cases, (ncases + groups[g].n) * sizeof(*cases));

        if (!grown)
            bench_fail("out of memory");
        cases = grown;
        for (size_t i = 0; i < groups[g].n; i++)
            cases[ncases++] = &groups[g].cases[i];
    }
}

static long find_case(const char *name)
{
    for (size_t i = 0; i < ncases; i++)
        if (!strcmp(cases[i]->name, name))
            return (long)i;
    return -1;
}

static bool runs_at(const struct bench_case *c, int threads)
{
    return threads == 1 || (c->flags & BENCH_CONTENDED);
}

/* Measure case @i at @threads (index @t), its baseline first. */
static void ensure(size_t i, int threads, size_t t, size_t nthreads, struct result *results,
                   const struct options *o)
{
    const struct bench_case *c = cases[i];
    struct result *r = &results[i * nthreads + t];
    const struct result *base = NULL;

    if (r->done || r->running)
        return;
    r->running = true;
    if (c->baseline) {
        long b = find_case(c->baseline);

        if (b < 0)
            bench_fail("%s: unknown baseline '%s'", c->name, c->baseline);
        if (runs_at(cases[b], threads)) {
            ensure((size_t)b, threads, t, nthreads, results, o);
            base = &results[(size_t)b * nthreads + t];
            base = base->done ? base : NULL;
        }
    }
    measure(c, threads, o, r);
    r->done = true;
    print_result(c, threads, r, base, o);
}

static int list_cases(void)
{
    for (size_t i = 0; i < ncases; i++)
        printf("%s %s\n", cases[i]->name, cases[i]->baseline ? cases[i]->baseline : "-");
    return 0;
}

/* 1, the powers of two below @max, and @max. */
static size_t thread_counts(int max, int *out)
{
    size_t n = 0;

    for (int t = 1; t < max; t *= 2)
        out[n++] = t;
    out[n++] = max;
    return n;
}

int main(int argc, char **argv)
{
    struct options o;
    int counts[32];
    size_t nthreads;
    struct result *results;

    parse_options(argc, argv, &o);
    collect_cases();
    if (o.list)
        return list_cases();
    nthreads = thread_counts(o.max_threads, counts);
    results = calloc(ncases * nthreads + 1, sizeof(*results));
    if (!results)
        bench_fail("out of memory");
    print_header(&o);
    for (size_t t = 0; t < nthreads; t++)
        for (size_t i = 0; i < ncases; i++)
            if (runs_at(cases[i], counts[t]) && (!o.filter || strstr(cases[i]->name, o.filter)))
                ensure(i, counts[t], t, nthreads, results, &o);
    free(results);
    free(cases);
    return 0;
}
