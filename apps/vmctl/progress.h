/* SPDX-License-Identifier: MIT */
/*
 * progress.h - how moor-vmctl shows a long job (save, restore, and later
 * backup) while it runs, from the daemon's job view (GET
 * /v1/domains/{id}/job, docs/vmd-api.md):
 *   - on a terminal, one line redrawn in place:
 *       save vm1 [##########..........]  50%  8.0/16.0 MiB  4.0 MiB/s  ETA 2 s
 *   - when stdout is not a terminal, plain lines, one per phase change and
 *     per 10 % step ("save vm1: 50% 8.0/16.0 MiB 4.0 MiB/s ETA 2 s (transfer)");
 *   - with --json, each job object the daemon sent as one JSON line, then
 *     the last job's outcome.
 * Single-threaded like the rest of moor-vmctl; no lock.
 */
#ifndef MOOR_VMCTL_PROGRESS_H
#define MOOR_VMCTL_PROGRESS_H

#include <stdbool.h>
#include <stdio.h>

struct json_object;
struct vmctl_client;
struct vmctl_args;

enum vmctl_progress_mode {
    VMCTL_PROGRESS_BAR = 0, /* a terminal */
    VMCTL_PROGRESS_LINES,   /* a pipe or a file */
    VMCTL_PROGRESS_JSON,    /* --json */
};

struct vmctl_progress {
    FILE *out;
    enum vmctl_progress_mode mode;
    char label[96]; /* "save vm1" */
    int last_step;  /* LINES: the last 10 % step printed (-1: none) */
    char last_phase[24];
    bool drawn; /* BAR: a line is on screen, not yet ended */
};

/* vmctl_progress_init - @label (copied) names the job in every line;
 * @mode as the command line and stdout decide (vmctl_progress_mode_for). */
void vmctl_progress_init(struct vmctl_progress *p, FILE *out, enum vmctl_progress_mode mode,
                         const char *label);

/* vmctl_progress_mode_for - JSON with --json, BAR when @out is a terminal,
 * else LINES. */
enum vmctl_progress_mode vmctl_progress_mode_for(FILE *out, bool json);

/* vmctl_progress_update - show the running job @job (a LongJob object,
 * borrowed). Returns 0, or -EIO when @out failed. */
int vmctl_progress_update(struct vmctl_progress *p, struct json_object *job);

/* vmctl_progress_end - show the ended job @last (borrowed; its "result"
 * and "error"). Returns 0 when it completed, 1 when it failed or was
 * cancelled or @last is NULL (the message on stderr), -EIO on output failure. */
int vmctl_progress_end(struct vmctl_progress *p, struct json_object *last);

/*
 * vmctl_follow_job - poll GET /v1/domains/@id/job every 200 ms and show
 * each answer through @p until no job runs, then its outcome. Stops early
 * (exit status 1, the job left running) on vmctl_stop (SIGINT/SIGTERM).
 * Returns an exit status (enum in vmctl.h).
 */
int vmctl_follow_job(struct vmctl_client *c, const struct vmctl_args *a, const char *id,
                     struct vmctl_progress *p);

#endif /* MOOR_VMCTL_PROGRESS_H */
