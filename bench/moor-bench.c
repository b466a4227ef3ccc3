/* SPDX-License-Identifier: MIT */
/*
 * bench/moor-bench.c - the one benchmark harness of moor.
 *
 * Usage: moor-bench [--filter SUBSTR] [--threads N] [--runs R] [--iters I] [--unpaired]
 *                   [--json] [--list]
 *
 * Runs: a run is one call of a case's loop (in N threads at once at N > 1),
 * timed from the start to the end; the case's begin_run and end_run hooks,
 * if any, are called just before and after it, outside the time. Every
 * run below, calibration and warm-up included, is such a run.
 *
 * Calibration: run the loop with growing iteration counts until one run
 * takes at least 20 ms, then size it for ~30 ms (each run then lasts 20-50
 * ms on a quiet machine). --iters I skips this and uses I, for instruction
 * counting under callgrind.
 *
 * A case without a baseline (or with --unpaired): set up, calibrate, one
 * warm-up run, not recorded, then R recorded runs (default 11); teardown.
 * The figures are the median, minimum and maximum over the R runs, in
 * nanoseconds per operation. The loop runs R + 1 times after calibration
 * (bench/callgrind.sh counts on that, and passes --unpaired).
 *
 * A case with a baseline (paired, the default): the host this was written
 * on changes speed by 30-50 % over tens of seconds, and a ratio of two
 * blocks of runs, one after the other, takes in any such shift between
 * them. Instead both states are set up (baseline first), each is
 * calibrated on its own, each gets one warm-up run, then R rounds of one
 * run of each, alternating which goes first (B C, C B, B C, ...). The
 * case's figures are its median, minimum and maximum over its R runs; the
 * baseline's median over its R paired runs is reported beside them, and
 * the ratio is the median of the R per-round ratios case / baseline (each
 * in ns per op), with their minimum and maximum. A drift much slower than
 * a round (~60 ms) thus mostly cancels out of each round's ratio, and the
 * alternation keeps a steady trend from always favouring one side. Both
 * states are alive through the rounds, which is why background activity
 * belongs in begin_run/end_run, never in setup (see bench.h). The loop of
 * each also runs R + 1 times after calibration.
 *
 * The baseline's own line: before its first paired use at a thread count,
 * a baseline gets its own figure, as any case (stand-alone if it has no
 * baseline itself, otherwise paired with its own). A chain such as
 * ghash_uuid_1k -> reg_uuid_1k -> lfht_uuid_1k is thus measured pair by
 * pair: lfht alone, lfht with reg, reg with ghash; each ratio comes from
 * its own pair. The middle of a chain, and any baseline shared by several
 * cases, is therefore run once more per case that uses it: a full run
 * takes about twice as long as with --unpaired.
 *
 * --unpaired: the former method, kept for comparison. The baseline's own
 * figure (measured first, above) is the one compared with; the case is
 * measured stand-alone afterwards; ratio = median / baseline median.
 *
 * Threads: a single-thread case runs in the main thread. At N > 1 threads
 * (BENCH_CONTENDED cases only), N fresh threads meet at a barrier and each
 * does the full iteration count on the same shared state; a run's time is
 * from the earliest start to the latest end, and ns/op is that wall time
 * divided by the per-thread iteration count: the cost of one operation as
 * each thread sees it while all N contend. Thread counts run: 1, then
 * powers of two below N, then N (default N = 2, so 1 and 2). A baseline
 * is used at the same thread count only, and measured even if --filter
 * leaves it out. Before any case, the harness creates and joins one
 * thread, so that even a single-thread case runs in a multi-threaded
 * process, as in a daemon (glibc's locks are cheaper before a process's
 * first thread; see go_multithreaded()).
 *
 * Output: a table for people, or with --json one object per line:
 *   {"bench": NAME, "threads": N, "median_ns": X, "min_ns": X, "max_ns": X,
 *    "baseline": NAME-or-null, "ratio": X-or-null, "paired": BOOL,
 *    "baseline_median_ns": X-or-null, "ratio_min": X-or-null,
 *    "ratio_max": X-or-null}
 * "paired" says how the ratio was measured (above); ratio_min and
 * ratio_max are null when unpaired; the baseline fields are null when the
 * case has no baseline at this thread count.
 * The registry of cases is filled by constructors (see bench.h).
 */
#include <errno.h>
#include <math.h>
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
#define MAX_RUNS      1000
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
    /* Case tables leave the optional hooks out positionally (the bench is
     * built without -Wmissing-field-initializers), so a row that also
     * lost a required field would compile: refuse it here. */
    for (size_t i = 0; i < n; i++)
        if (!cases[i].name || !cases[i].loop)
            bench_fail("case %zu of a bench file has no %s", i, cases[i].name ? "loop" : "name");
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
    bool unpaired;
    bool json;
    bool list;
};

static void usage(FILE *f)
{
    fputs("usage: moor-bench [--filter SUBSTR] [--threads N] [--runs R] [--iters I] [--unpaired]\n"
          "                  [--json] [--list]\n"
          "  --filter SUBSTR  only cases whose name contains SUBSTR (and their baselines)\n"
          "  --threads N      run contended cases at 1, 2, 4, ... and N threads (default 2)\n"
          "  --runs R         recorded runs (rounds, when paired) per figure (default 11)\n"
          "  --iters I        iterations per run and thread, instead of calibrating\n"
          "  --unpaired       measure a baseline and its case one after the other, not in\n"
          "                   alternating rounds\n"
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

/* A flag without a value: sets it and returns true, or returns false. */
static bool parse_flag(const char *a, struct options *o)
{
    if (!strcmp(a, "--json"))
        o->json = true;
    else if (!strcmp(a, "--list"))
        o->list = true;
    else if (!strcmp(a, "--unpaired"))
        o->unpaired = true;
    else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
        usage(stdout);
        exit(0);
    } else
        return false;
    return true;
}

static void parse_options(int argc, char **argv, struct options *o)
{
    *o = (struct options){.max_threads = 2, .runs = DEFAULT_RUNS};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (parse_flag(a, o))
            continue;
        if (!strcmp(a, "--filter")) {
            if (!v)
                bench_fail("--filter needs a value");
            o->filter = v;
        } else if (!strcmp(a, "--threads")) {
            o->max_threads = (int)parse_number(a, v, 1, MAX_THREADS);
        } else if (!strcmp(a, "--runs")) {
            o->runs = (int)parse_number(a, v, 1, MAX_RUNS);
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

/* One run between the case's per-run hooks; returns its wall time in ns
 * (the hooks' time excluded). */
static double run_once(const struct bench_case *c, void *state, int threads, uint64_t iters)
{
    double t;

    if (c->begin_run)
        c->begin_run(state);
    if (threads > 1) {
        t = run_threads(c, state, threads, iters);
    } else {
        t = now_ns();
        c->loop(state, iters);
        t = now_ns() - t;
    }
    if (c->end_run)
        c->end_run(state);
    return t;
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

struct stats {
    double median, min, max;
};

struct result {
    bool done, running;
    bool has_base; /* a baseline was measured at this thread count */
    bool paired;   /* ... in the same rounds as the case */
    uint64_t iters;
    struct stats ns;    /* ns per op (per thread) */
    double base_median; /* the baseline's: from the paired runs, or its own figure */
    struct stats ratio; /* unpaired: median / base_median, min and max NAN */
};

/* A case during a figure: its state, iterations per run, recorded runs. */
struct subject {
    const struct bench_case *c;
    void *state;
    uint64_t iters;
    double ns[MAX_RUNS]; /* ns per op of each recorded run */
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Median, minimum and maximum of @v[0..n); sorts @v. */
static struct stats summarize(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(v[0]), cmp_double);
    return (struct stats){
        .median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2,
        .min = v[0],
        .max = v[n - 1],
    };
}

static void subject_setup(struct subject *s, const struct bench_case *c)
{
    s->c = c;
    s->state = c->setup ? c->setup() : NULL;
}

static void subject_calibrate(struct subject *s, int threads, const struct options *o)
{
    s->iters = o->iters ? o->iters : calibrate(s->c, s->state, threads);
}

/* One run of @s; returns its ns per op. */
static double subject_run(struct subject *s, int threads)
{
    return run_once(s->c, s->state, threads, s->iters) / (double)s->iters;
}

static void subject_teardown(struct subject *s)
{
    if (s->c->teardown)
        s->c->teardown(s->state);
}

/* @c alone: warm-up, then o->runs recorded runs. */
static void measure_alone(const struct bench_case *c, int threads, const struct options *o,
                          struct result *r)
{
    struct subject s;

    subject_setup(&s, c);
    subject_calibrate(&s, threads, o);
    subject_run(&s, threads); /* warm-up */
    for (int i = 0; i < o->runs; i++)
        s.ns[i] = subject_run(&s, threads);
    subject_teardown(&s);
    r->iters = s.iters;
    r->ns = summarize(s.ns, o->runs);
}

/* @c and its baseline @b in alternating rounds (see the top). */
static void measure_paired(const struct bench_case *c, const struct bench_case *b, int threads,
                           const struct options *o, struct result *r)
{
    struct subject base, cs;
    double ratio[MAX_RUNS];

    subject_setup(&base, b);
    subject_setup(&cs, c);
    subject_calibrate(&base, threads, o);
    subject_calibrate(&cs, threads, o);
    subject_run(&base, threads); /* warm-ups */
    subject_run(&cs, threads);
    for (int i = 0; i < o->runs; i++) {
        struct subject *first = i % 2 ? &cs : &base, *second = i % 2 ? &base : &cs;

        first->ns[i] = subject_run(first, threads);
        second->ns[i] = subject_run(second, threads);
        ratio[i] = cs.ns[i] / base.ns[i];
    }
    subject_teardown(&cs);
    subject_teardown(&base);
    r->iters = cs.iters;
    r->ns = summarize(cs.ns, o->runs);
    r->base_median = summarize(base.ns, o->runs).median;
    r->ratio = summarize(ratio, o->runs);
    r->has_base = r->paired = true;
}

/* @c with --unpaired: alone, compared with its baseline's own figure. */
static void measure_unpaired(const struct bench_case *c, const struct result *base, int threads,
                             const struct options *o, struct result *r)
{
    measure_alone(c, threads, o, r);
    r->has_base = true;
    r->base_median = base->ns.median;
    r->ratio = (struct stats){r->ns.median / base->ns.median, NAN, NAN};
}

/* ---- output -------------------------------------------------------------- */

static void print_header(const struct options *o)
{
    if (o->json)
        return;
    if (o->unpaired)
        printf("# moor-bench (unpaired): %d runs per figure, ns per operation per thread; "
               "ratio = median / the baseline's median, measured just before\n",
               o->runs);
    else
        printf("# moor-bench: %d runs per figure, ns per operation per thread; with a baseline, "
               "%d rounds of one run of each (base_ns: its median there), ratio = median of the "
               "rounds' ratios, r_min and r_max their range\n",
               o->runs, o->runs);
    printf("%-24s %7s %12s %10s %10s %10s %10s %7s %7s %7s  %s\n", "bench", "threads", "iters",
           "median_ns", "min_ns", "max_ns", "base_ns", "ratio", "r_min", "r_max", "baseline");
}

/* A number, or null if it is not finite (NAN: no such figure). */
static void print_json_number(const char *key, double v, const char *sep)
{
    if (!isfinite(v))
        printf("\"%s\": null%s", key, sep);
    else
        printf("\"%s\": %.3f%s", key, v, sep);
}

static void print_json(const struct bench_case *c, int threads, const struct result *r)
{
    printf("{\"bench\": \"%s\", \"threads\": %d, \"median_ns\": %.3f, \"min_ns\": %.3f, "
           "\"max_ns\": %.3f, ",
           c->name, threads, r->ns.median, r->ns.min, r->ns.max);
    if (!r->has_base) {
        printf("\"baseline\": null, \"ratio\": null, \"paired\": false, "
               "\"baseline_median_ns\": null, \"ratio_min\": null, \"ratio_max\": null}\n");
        return;
    }
    printf("\"baseline\": \"%s\", ", c->baseline);
    print_json_number("ratio", r->ratio.median, ", ");
    printf("\"paired\": %s, ", r->paired ? "true" : "false");
    print_json_number("baseline_median_ns", r->base_median, ", ");
    print_json_number("ratio_min", r->ratio.min, ", ");
    print_json_number("ratio_max", r->ratio.max, "}\n");
}

/* A table cell: " " and the number, or "-" if it is not finite. */
static void print_cell(int width, int precision, double v)
{
    if (!isfinite(v))
        printf(" %*s", width, "-");
    else
        printf(" %*.*f", width, precision, v);
}

static void print_row(const struct bench_case *c, int threads, const struct result *r)
{
    printf("%-24s %7d %12llu %10.2f %10.2f %10.2f", c->name, threads, (unsigned long long)r->iters,
           r->ns.median, r->ns.min, r->ns.max);
    if (!r->has_base) {
        printf(" %10s %7s %7s %7s  %s\n", "-", "-", "-", "-", c->baseline ? c->baseline : "-");
        return;
    }
    print_cell(10, 2, r->base_median);
    print_cell(7, 3, r->ratio.median);
    print_cell(7, 3, r->ratio.min);
    print_cell(7, 3, r->ratio.max);
    printf("  %s\n", c->baseline);
}

static void print_result(const struct bench_case *c, int threads, const struct result *r,
                         const struct options *o)
{
    if (o->json)
        print_json(c, threads, r);
    else
        print_row(c, threads, r);
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

/* The index of @c's baseline if it runs at @threads, else -1. */
static long baseline_at(const struct bench_case *c, int threads)
{
    long b;

    if (!c->baseline)
        return -1;
    b = find_case(c->baseline);
    if (b < 0)
        bench_fail("%s: unknown baseline '%s'", c->name, c->baseline);
    return runs_at(cases[b], threads) ? b : -1;
}

/* Measure case @i at @threads (index @t), its baseline's own figure first. */
static void ensure(size_t i, int threads, size_t t, size_t nthreads, struct result *results,
                   const struct options *o)
{
    const struct bench_case *c = cases[i];
    struct result *r = &results[i * nthreads + t];
    long b = baseline_at(c, threads);
    const struct result *base = NULL;

    if (r->done || r->running)
        return;
    r->running = true;
    if (b >= 0) {
        ensure((size_t)b, threads, t, nthreads, results, o);
        base = &results[(size_t)b * nthreads + t];
        base = base->done ? base : NULL; /* NULL: a cycle of baselines */
    }
    if (!base)
        measure_alone(c, threads, o, r);
    else if (o->unpaired)
        measure_unpaired(c, base, threads, o, r);
    else
        measure_paired(c, cases[b], threads, o, r);
    r->done = true;
    print_result(c, threads, r, o);
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

static void *noop_thread(void *arg)
{
    return arg;
}

/* glibc's locks skip their atomic instructions until a process first
 * creates a thread (a pthread mutex lock + unlock: 4.6 against 13.2 ns
 * here), and the process never goes back. A daemon always has threads, so
 * every case runs as in one: otherwise a pthread baseline would measure
 * 3x faster alone than after any contended case of the same run. */
static void go_multithreaded(void)
{
    pthread_t t;

    if (pthread_create(&t, NULL, noop_thread, NULL) || pthread_join(t, NULL))
        bench_fail("pthread_create failed");
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
    go_multithreaded();
    print_header(&o);
    for (size_t t = 0; t < nthreads; t++)
        for (size_t i = 0; i < ncases; i++)
            if (runs_at(cases[i], counts[t]) && (!o.filter || strstr(cases[i]->name, o.filter)))
                ensure(i, counts[t], t, nthreads, results, &o);
    free(results);
    free(cases);
    return 0;
}
