/* SPDX-License-Identifier: MIT */
/*
 * stress-vmd.c - a real moor-vmd under THREADS clients (default 8), each
 * making random API calls on 32 fake-QEMU domains for MOOR_STRESS_SECONDS:
 * define and undefine of the same names race each other and every other
 * call, and some definitions carry `crash-after-ms:N`, so their QEMUs die
 * on their own at random moments (fake-qemu.c); saves to, and restores
 * from, one file per domain name race them all, with job queries and
 * aborts.
 *
 * Checked on every answer: it came (no transport error), its status is one
 * the API documents for that call (docs/vmd-api.md), a 2xx body is JSON and
 * a non-2xx body is an error object whose code matches its status. At the
 * end: every domain destroyed and undefined, the daemon exits 0 on SIGTERM
 * (it exits 1 when its live-object census is not zero: apps/vmd/main.c),
 * and no QEMU it started is left (harness.h), and every save file left
 * is a complete one (a save that did not complete removed its file).
 *
 * Suite 'stress': the sanitizer builds run it with the daemon built under
 * the same sanitizer, so a report inside the daemon fails its exit status.
 */
#define _GNU_SOURCE
#define STRESS_PROG "stress-vmd"
#include "stress-util.h"

#include <json-c/json.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"

#define SV_DOMAINS     32
#define SV_MAX_THREADS 64

enum sv_op {
    SV_VERSION,
    SV_LIST,
    SV_DEBUG,
    SV_INFO,
    SV_STATE,
    SV_STATS,
    SV_DEFINE,
    SV_UNDEFINE,
    SV_START,
    SV_START_PAUSED,
    SV_SUSPEND,
    SV_RESUME,
    SV_RESET,
    SV_SHUTDOWN,
    SV_DESTROY,
    SV_QMP,
    SV_SAVE,
    SV_RESTORE,
    SV_JOB,
    SV_ABORT,
    SV_NOPS,
};

static const char *const sv_op_names[SV_NOPS] = {
    "version",  "list",  "debug",   "info",    "state",  "stats", "define",
    "undefine", "start", "start-p", "suspend", "resume", "reset", "shutdown",
    "destroy",  "qmp",   "save",    "restore", "job",    "abort",
};

static struct vh_daemon sv_daemon;
static atomic_ulong sv_calls[SV_NOPS];
static atomic_ulong sv_by_status[600];

/* Whether @status is documented for @op. */
static bool sv_status_ok(enum sv_op op, long status)
{
    switch (op) {
    case SV_VERSION:
    case SV_LIST:
    case SV_DEBUG:
        return status == 200;
    case SV_INFO:
    case SV_STATE:
        return status == 200 || status == 404 || status == 503;
    case SV_DEFINE:
        return status == 201 || status == 409 || status == 503;
    case SV_UNDEFINE:
        return status == 200 || status == 404 || status == 409 || status == 503;
    case SV_SAVE:
        return status == 202 || status == 404 || status == 409 || status == 503;
    case SV_RESTORE:
        return status == 202 || status == 400 || status == 404 || status == 409 || status == 503;
    case SV_JOB:
        return status == 200 || status == 404 || status == 503;
    case SV_ABORT:
        return status == 200 || status == 404 || status == 409 || status == 503;
    default: /* the calls that talk to QEMU or wait for a job */
        return status == 200 || status == 404 || status == 409 || status == 502 || status == 503 ||
               status == 504;
    }
}

/* Whether an error object's @code fits its @status (docs/vmd-api.md). */
static bool sv_code_ok(long status, const char *code)
{
    switch (status) {
    case 400:
        return strcmp(code, "EINVAL") == 0;
    case 404:
        return strcmp(code, "ENOENT") == 0;
    case 409:
        return !strcmp(code, "EBUSY") || !strcmp(code, "EEXIST") || !strcmp(code, "ENOTCONN");
    case 502:
        return !strcmp(code, "EREMOTEIO") || !strcmp(code, "EPIPE");
    case 503:
        return strcmp(code, "EAGAIN") == 0;
    case 504:
        return strcmp(code, "ETIMEDOUT") == 0;
    default:
        return false;
    }
}

/* One random call; checks its answer. */
static void sv_call(struct vmctl_client *c, unsigned *seed)
{
    enum sv_op op = (enum sv_op)(rand_r(seed) % SV_NOPS);
    char name[16], path[128], body[PATH_MAX + 256] = "";
    const char *method = "POST", *sub = NULL;
    struct vmctl_response r;

    snprintf(name, sizeof(name), "s%02d", rand_r(seed) % SV_DOMAINS);
    switch (op) {
    case SV_VERSION:
        method = "GET";
        snprintf(path, sizeof(path), "/v1/version");
        break;
    case SV_LIST:
        method = "GET";
        snprintf(path, sizeof(path), "/v1/domains");
        break;
    case SV_DEBUG:
        method = "GET";
        snprintf(path, sizeof(path), "/v1/debug");
        break;
    case SV_DEFINE:
        snprintf(path, sizeof(path), "/v1/domains");
        if (rand_r(seed) % 2)
            snprintf(body, sizeof(body),
                     "{\"name\":\"%s\",\"emulator\":\"%s\",\"machine\":\"none\","
                     "\"accel\":\"tcg\",\"memory_mib\":16,"
                     "\"extra_args\":[\"-fake-faults\",\"crash-after-ms:%d\"]}",
                     name, sv_daemon.fake_qemu, 100 + rand_r(seed) % 3000);
        else
            snprintf(body, sizeof(body),
                     "{\"name\":\"%s\",\"emulator\":\"%s\",\"machine\":\"none\","
                     "\"accel\":\"tcg\",\"memory_mib\":16}",
                     name, sv_daemon.fake_qemu);
        break;
    case SV_INFO:
    case SV_UNDEFINE:
        method = op == SV_INFO ? "GET" : "DELETE";
        snprintf(path, sizeof(path), "/v1/domains/%s", name);
        break;
    case SV_STATE:
    case SV_STATS:
        method = "GET";
        sub = op == SV_STATE ? "state" : "stats";
        break;
    case SV_START_PAUSED:
        snprintf(body, sizeof(body), "{\"paused\":true}");
        sub = "start";
        break;
    case SV_SHUTDOWN:
        snprintf(body, sizeof(body), "{\"timeout_ms\":%d}", 50 + rand_r(seed) % 500);
        sub = "shutdown";
        break;
    case SV_SAVE:
        snprintf(body, sizeof(body), "{\"path\":\"%s/%s.save\",\"bandwidth_mib_s\":32}",
                 sv_daemon.root, name);
        sub = "save";
        break;
    case SV_RESTORE:
        snprintf(path, sizeof(path), "/v1/domains/restore");
        snprintf(body, sizeof(body), "{\"path\":\"%s/%s.save\"}", sv_daemon.root, name);
        break;
    case SV_JOB:
    case SV_ABORT:
        method = op == SV_JOB ? "GET" : "DELETE";
        sub = "job";
        break;
    case SV_QMP:
        snprintf(body, sizeof(body), "{\"execute\":\"%s\"}",
                 rand_r(seed) % 4 ? "query-status" : "no-such-command");
        sub = "qmp";
        break;
    default:
        sub = sv_op_names[op];
        break;
    }
    if (sub)
        snprintf(path, sizeof(path), "/v1/domains/%s/%s", name, sub);
    if (vh_call(c, &r, method, path, *body ? "%s" : NULL, body) != 0) {
        fail("%s %s: no answer (see above)", method, path);
        return;
    }
    atomic_fetch_add_explicit(&sv_calls[op], 1, memory_order_relaxed); /* a tally only */
    if (r.status >= 100 && r.status < 600)
        atomic_fetch_add_explicit(&sv_by_status[r.status], 1, memory_order_relaxed); /* tally */
    if (!sv_status_ok(op, r.status))
        fail("%s %s: undocumented status %ld: %s", method, path, r.status, r.body);
    else if (r.status < 300 && !json_object_is_type(r.json, json_type_object))
        fail("%s %s: %ld with a body that is not a JSON object: %s", method, path, r.status,
             r.body);
    else if (r.status >= 300 && (!r.error_code || !r.error_message || !*r.error_message ||
                                 !sv_code_ok(r.status, r.error_code)))
        fail("%s %s: %ld with a bad error object: %s", method, path, r.status, r.body);
    else if ((op == SV_START || op == SV_START_PAUSED) && r.status == 200) {
        json_object *pid = vh_json_get(r.json, "pid");

        const char *st = vh_json_str(r.json, "state");

        /* No pid only if QEMU is already gone again: a destroy (which
         * signals without waiting for start's job) or a scripted crash
         * came between the start and its answer. */
        if (pid)
            vh_note_pid(&sv_daemon, (pid_t)json_object_get_int(pid));
        else if (!st || strcmp(st, "shutoff") != 0)
            fail("start %s: 200 without a pid, not shut off: %s", name, r.body);
    }
    vmctl_response_clear(&r);
}

struct sv_thread {
    pthread_t tid;
    unsigned seed;
    struct timespec end;
};

static void *sv_worker(void *arg)
{
    struct sv_thread *t = arg;
    struct vmctl_client *c = vh_client_new(&sv_daemon);

    if (!c) {
        fail("no client");
        return NULL;
    }
    while (!atomic_load(&stress_stop)) {
        struct timespec now = stress_now();

        if (now.tv_sec > t->end.tv_sec ||
            (now.tv_sec == t->end.tv_sec && now.tv_nsec >= t->end.tv_nsec))
            break;
        sv_call(c, &t->seed);
    }
    vmctl_client_free(c);
    return NULL;
}

/* After the run: every save file left must be complete (header + the
 * fake's whole stream of 16 MiB); returns how many there are. */
static unsigned sv_check_saves(void)
{
    unsigned n = 0;

    for (int i = 0; i < SV_DOMAINS; i++) {
        char path[PATH_MAX], magic[9] = "";
        struct stat sb;

        snprintf(path, sizeof(path), "%s/s%02d.save", sv_daemon.root, i);
        if (stat(path, &sb) != 0)
            continue;
        n++;
        FILE *f = fopen(path, "rb");
        if (!f || fread(magic, 1, 8, f) != 8 || strcmp(magic, "MOORSAVE") != 0)
            fail("%s: not a save file", path);
        if (f)
            fclose(f);
        if (sb.st_size != 4096 + 24 + 16 * 1024 * 1024)
            fail("%s: %lld bytes: a partial save was left behind", path, (long long)sb.st_size);
    }
    return n;
}

int main(int argc, char **argv)
{
    static const char *const flags[] = {"--workers", "8", "--qmp-timeout", "2", "--job-timeout",
                                        "5",         NULL};
    unsigned threads = stress_arg_threads(argc, argv, 8, SV_MAX_THREADS);
    double seconds = stress_env_seconds(STRESS_DEFAULT_SECONDS * 2);
    struct sv_thread th[SV_MAX_THREADS];
    struct vmctl_client *c;
    struct timespec end;
    int status, leftovers;
    unsigned long total = 0;

    signal(SIGPIPE, SIG_IGN);
    stress_valgrind_caps(&threads, 2, &seconds, 2.0);
    if (vh_init(&sv_daemon, flags) != 0 || vh_start(&sv_daemon) != 0)
        return 1;
    c = vh_client_new(&sv_daemon);
    for (int i = 0; c && i < SV_DOMAINS; i++) {
        char name[16];

        snprintf(name, sizeof(name), "s%02d", i);
        if (vh_define_fake(&sv_daemon, c, name, i % 4 == 0 ? "crash-after-ms:1500" : NULL) != 0)
            fail("define %s", name);
    }
    end = stress_add_seconds(stress_now(), seconds);
    for (unsigned i = 0; i < threads; i++) {
        th[i].seed = 0x5eed + i * 7919;
        th[i].end = end;
        if (pthread_create(&th[i].tid, NULL, sv_worker, &th[i]) != 0) {
            fail("pthread_create");
            threads = i;
        }
    }
    for (unsigned i = 0; i < threads; i++)
        pthread_join(th[i].tid, NULL); /* each ends at `end` + one bounded call */
    if (!c || vh_destroy_all(&sv_daemon, c) != 0)
        fail("cleaning up the domains (see above)");
    vmctl_client_free(c);
    if (vh_stop(&sv_daemon, &status) != 0)
        fail("moor-vmd did not exit 0 on SIGTERM (wait status 0x%x): census or crash", status);
    unsigned saves = sv_check_saves();
    leftovers = vh_finish(&sv_daemon);
    if (leftovers != 0)
        fail("%d QEMU processes left after the daemon stopped", leftovers);
    for (int i = 0; i < SV_NOPS; i++)
        total += atomic_load(&sv_calls[i]);
    if (total < threads)
        fail("only %lu calls answered in %.1f s", total, seconds);
    printf(STRESS_PROG ": %u threads, %.1f s, %lu calls, %u save files left (all complete):",
           threads, seconds, total, saves);
    for (int s = 100; s < 600; s++)
        if (atomic_load(&sv_by_status[s]))
            printf(" %d=%lu", s, atomic_load(&sv_by_status[s]));
    printf("\n");
    return stress_exit_status();
}
