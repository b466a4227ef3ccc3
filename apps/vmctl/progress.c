/* SPDX-License-Identifier: MIT */
/*
 * progress.c - a long job's progress on a terminal, in plain lines, or as
 * JSON lines (see progress.h). The job view is the daemon's; this file
 * only formats it, so save, restore and backup share it.
 */
#include "progress.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "table.h"
#include "vmctl.h"

#define BAR_WIDTH     24
#define POLL_MS       200
#define LINE_STEP_PCT 10

enum vmctl_progress_mode vmctl_progress_mode_for(FILE *out, bool json)
{
    if (json)
        return VMCTL_PROGRESS_JSON;
    return isatty(fileno(out)) ? VMCTL_PROGRESS_BAR : VMCTL_PROGRESS_LINES;
}

void vmctl_progress_init(struct vmctl_progress *p, FILE *out, enum vmctl_progress_mode mode,
                         const char *label)
{
    memset(p, 0, sizeof(*p));
    p->out = out;
    p->mode = mode;
    p->last_step = -1;
    snprintf(p->label, sizeof(p->label), "%s", label);
}

static int64_t num(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : -1;
}

static const char *str(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

/* "8.0/16.0 MiB  4.0 MiB/s  ETA 2 s" (@sep between the parts). */
static void figures(struct json_object *job, const char *sep, char *buf, size_t size)
{
    char done[32], total[32], rate[32], eta[32] = "-";
    int64_t d = num(job, "bytes_done"), t = num(job, "bytes_total");
    int64_t r = num(job, "rate_bytes_s"), left = num(job, "remaining_ms");

    vmctl_format_bytes(d > 0 ? (uint64_t)d : 0, done, sizeof(done));
    vmctl_format_bytes(t > 0 ? (uint64_t)t : 0, total, sizeof(total));
    vmctl_format_bytes(r > 0 ? (uint64_t)r : 0, rate, sizeof(rate));
    if (left >= 0)
        vmctl_format_duration((uint64_t)left, eta, sizeof(eta));
    snprintf(buf, size, "%s/%s%s%s/s%sETA %s", done, total, sep, rate, sep, eta);
}

static double percent(struct json_object *job)
{
    int64_t d = num(job, "bytes_done"), t = num(job, "bytes_total");
    return t > 0 && d >= 0 ? 100.0 * (double)d / (double)t : 0.0;
}

static int draw_bar(struct vmctl_progress *p, struct json_object *job)
{
    char bar[BAR_WIDTH + 1], fig[128];
    double pct = percent(job);
    int fill = (int)(pct * BAR_WIDTH / 100.0);

    for (int i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[BAR_WIDTH] = '\0';
    figures(job, "  ", fig, sizeof(fig));
    const char *phase = str(job, "phase");
    /* \r and erase to the end of the line: the new one may be shorter. */
    fprintf(p->out, "\r%s [%s] %3.0f%%  %s  %s\033[K", p->label, bar, pct, fig, phase ? phase : "");
    p->drawn = true;
    return fflush(p->out) == EOF ? -EIO : 0;
}

static int print_line(struct vmctl_progress *p, struct json_object *job)
{
    const char *phase = str(job, "phase");
    int step = (int)(percent(job) / LINE_STEP_PCT);
    char fig[128];

    if (step == p->last_step && phase && strcmp(phase, p->last_phase) == 0)
        return 0;
    p->last_step = step;
    snprintf(p->last_phase, sizeof(p->last_phase), "%s", phase ? phase : "");
    figures(job, " ", fig, sizeof(fig));
    fprintf(p->out, "%s: %.0f%% %s (%s)\n", p->label, percent(job), fig, phase ? phase : "-");
    return fflush(p->out) == EOF ? -EIO : 0;
}

static int print_json(struct vmctl_progress *p, struct json_object *job)
{
    fprintf(p->out, "%s\n",
            json_object_to_json_string_ext(job, JSON_C_TO_STRING_PLAIN |
                                                    JSON_C_TO_STRING_NOSLASHESCAPE));
    return fflush(p->out) == EOF ? -EIO : 0;
}

int vmctl_progress_update(struct vmctl_progress *p, struct json_object *job)
{
    if (!job)
        return 0;
    switch (p->mode) {
    case VMCTL_PROGRESS_BAR:
        return draw_bar(p, job);
    case VMCTL_PROGRESS_LINES:
        return print_line(p, job);
    default:
        return print_json(p, job);
    }
}

int vmctl_progress_end(struct vmctl_progress *p, struct json_object *last)
{
    const char *result = last ? str(last, "result") : NULL;
    bool ok = result && strcmp(result, "completed") == 0;
    int64_t ms = last ? num(last, "elapsed_ms") : -1;
    char took[32] = "-", fig[128] = "";

    if (p->mode == VMCTL_PROGRESS_JSON) {
        if (last && print_json(p, last) < 0)
            return -EIO;
    } else {
        if (last && ok)
            vmctl_progress_update(p, last); /* the full bar, 100 % */
        if (p->drawn)
            fputc('\n', p->out);
        p->drawn = false;
        vmctl_format_duration(ms > 0 ? (uint64_t)ms : 0, took, sizeof(took));
        if (last)
            figures(last, " ", fig, sizeof(fig));
        if (ok)
            fprintf(p->out, "%s: completed in %s (%s)\n", p->label, took, str(last, "path"));
        if (fflush(p->out) == EOF)
            return -EIO;
    }
    if (ok)
        return 0;
    vmctl_errorf("%s: %s%s%s", p->label, result ? result : "ended without a result",
                 last && str(last, "error") ? ": " : "",
                 last && str(last, "error") ? str(last, "error") : "");
    return 1;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int vmctl_follow_job(struct vmctl_client *c, const struct vmctl_args *a, const char *id,
                     struct vmctl_progress *p)
{
    char path[128];

    snprintf(path, sizeof(path), "/v1/domains/%s/job", id);
    for (;;) {
        vmctl_autoresponse struct vmctl_response r = {0};
        moor_error err = MOOR_ERROR_INIT;
        int rc = vmctl_request(c, "GET", path, NULL, &r, &err);
        bool failed = rc < 0 || r.status != 200;

        if (failed && p->drawn)
            fputc('\n', p->out);
        if (failed)
            return vmctl_check(rc, &err, &r, a);
        struct json_object *body = vmctl_body(&r), *v;
        if (!body)
            return VMCTL_EXIT_FAILED;
        bool active = json_object_object_get_ex(body, "active", &v) && json_object_get_boolean(v);
        struct json_object *job = json_object_object_get_ex(body, "job", &v) ? v : NULL;
        struct json_object *last = json_object_object_get_ex(body, "last", &v) ? v : NULL;
        if (!active) {
            rc = vmctl_progress_end(p, last);
            return rc == 0 ? VMCTL_EXIT_OK : VMCTL_EXIT_FAILED;
        }
        if (vmctl_progress_update(p, job) < 0)
            return VMCTL_EXIT_FAILED;
        if (vmctl_stop) {
            if (p->drawn)
                fputc('\n', p->out);
            vmctl_errorf("%s: still running; `moor-vmctl job %s` shows it, `moor-vmctl abort "
                         "%s` stops it",
                         p->label, id, id);
            return VMCTL_EXIT_FAILED;
        }
        sleep_ms(POLL_MS);
    }
}
