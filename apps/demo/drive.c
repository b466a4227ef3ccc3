/* SPDX-License-Identifier: MIT */
/*
 * drive.c - see drive.h. The daemon is our child (fork+exec, argv only);
 * its QEMUs are not (they run in their own session, reparented to init when
 * the daemon dies), so they are followed by pid through /proc. The load's
 * threads each own one client and one record array; nothing but the stop
 * flag crosses threads until drive_load_stop has joined them.
 */
#define _GNU_SOURCE
#include "drive.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

uint64_t drive_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void drive__response_cleanup(struct vmctl_response *r)
{
    vmctl_response_clear(r);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- the daemon --------------------------------------------------------- */

static int path_join(char *dst, const char *a, const char *b, moor_error *err)
{
    if ((size_t)snprintf(dst, PATH_MAX, "%s/%s", a, b) >= PATH_MAX)
        return moor_error_set(err, -EINVAL, "path too long: %s/%s", a, b);
    return 0;
}

int drive_daemon_init(struct drive_daemon *d, const char *exe, const char *tag,
                      const char *const *flags, moor_error *err)
{
    const char *tmp = getenv("TMPDIR");
    size_t n = 0;
    int rc;

    memset(d, 0, sizeof(*d));
    if (strlen(exe) >= sizeof(d->exe))
        return moor_error_set(err, -EINVAL, "daemon path too long");
    strcpy(d->exe, exe);
    for (; flags && flags[n]; n++) {
        if (n + 1 >= DRIVE_MAX_FLAGS)
            return moor_error_set(err, -EINVAL, "more than %d daemon flags", DRIVE_MAX_FLAGS - 1);
        d->flags[n] = flags[n];
    }
    if ((size_t)snprintf(d->base, sizeof(d->base), "%s/%s.XXXXXX", tmp && *tmp ? tmp : "/tmp",
                         tag) >= sizeof(d->base))
        return moor_error_set(err, -EINVAL, "TMPDIR too long");
    if (!mkdtemp(d->base))
        return moor_error_set(err, -errno, "mkdtemp %s: %s", d->base, strerror(errno));
    if ((rc = path_join(d->state_dir, d->base, "state", err)) < 0 ||
        (rc = path_join(d->runtime_dir, d->base, "run", err)) < 0 ||
        (rc = path_join(d->socket_path, d->runtime_dir, "moor-vmd.sock", err)) < 0 ||
        (rc = path_join(d->log_path, d->base, "moor-vmd.log", err)) < 0)
        return rc;
    if (mkdir(d->state_dir, 0700) < 0 || mkdir(d->runtime_dir, 0700) < 0)
        return moor_error_set(err, -errno, "mkdir under %s: %s", d->base, strerror(errno));
    return 0;
}

/* In the child: stdout/stderr to the log, then exec. Never returns. The
 * daemon gets SIGKILL if we die first (a crashed demo leaves no daemon;
 * drive_daemon_start runs on the main thread, which lives to the end). */
static void exec_daemon(const struct drive_daemon *d)
{
    const char *argv[DRIVE_MAX_FLAGS + 8];
    size_t n = 0;
    int fd = open(d->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

    prctl(PR_SET_PDEATHSIG, SIGKILL);

    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
    }
    argv[n++] = d->exe;
    argv[n++] = "--state-dir";
    argv[n++] = d->state_dir;
    argv[n++] = "--runtime-dir";
    argv[n++] = d->runtime_dir;
    argv[n++] = "--socket";
    argv[n++] = d->socket_path;
    for (size_t i = 0; d->flags[i]; i++)
        argv[n++] = d->flags[i];
    argv[n] = NULL;
    execv(d->exe, (char *const *)argv);
    dprintf(STDERR_FILENO, "exec %s: %s\n", d->exe, strerror(errno));
    _exit(127);
}

static void describe_status(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "wait status %#x", status);
}

/* The daemon answers GET /v1/version with 200. */
static bool daemon_ready(struct vmctl_client *c)
{
    drive_autoresponse struct vmctl_response r = {0};

    return vmctl_request(c, "GET", "/v1/version", NULL, &r, NULL) == 0 && r.status == 200;
}

int drive_daemon_start(struct drive_daemon *d, unsigned timeout_ms, moor_error *err)
{
    uint64_t deadline = drive_now_ns() + (uint64_t)timeout_ms * 1000000u;
    struct vmctl_client *c;
    char why[96];
    int status;
    pid_t pid;

    if (d->pid)
        return moor_error_set(err, -EALREADY, "moor-vmd already running (pid %d)", (int)d->pid);
    c = vmctl_client_new(d->socket_path, 1000, err);
    if (!c)
        return err ? err->code : -ENOMEM;
    pid = fork();
    if (pid < 0) {
        vmctl_client_free(c);
        return moor_error_set(err, -errno, "fork: %s", strerror(errno));
    }
    if (pid == 0)
        exec_daemon(d);
    d->pid = pid;
    for (;;) {
        if (daemon_ready(c)) {
            vmctl_client_free(c);
            return 0;
        }
        if (waitpid(pid, &status, WNOHANG) == pid) {
            d->pid = 0;
            vmctl_client_free(c);
            describe_status(status, why, sizeof(why));
            return moor_error_set(err, -ECHILD, "moor-vmd %s before it was ready (log: %s)", why,
                                  d->log_path);
        }
        if (drive_now_ns() > deadline)
            break;
        sleep_ms(2);
    }
    vmctl_client_free(c);
    drive_daemon_kill(d);
    return moor_error_set(err, -ETIMEDOUT,
                          "moor-vmd did not answer /v1/version within %u ms (log: %s)", timeout_ms,
                          d->log_path);
}

void drive_daemon_kill(struct drive_daemon *d)
{
    if (!d->pid)
        return;
    kill(d->pid, SIGKILL);
    while (waitpid(d->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    d->pid = 0;
}

int drive_daemon_stop(struct drive_daemon *d, unsigned timeout_ms, moor_error *err)
{
    uint64_t deadline = drive_now_ns() + (uint64_t)timeout_ms * 1000000u;
    char why[96];
    int status;

    if (!d->pid)
        return 0;
    kill(d->pid, SIGTERM);
    while (waitpid(d->pid, &status, WNOHANG) != d->pid) {
        if (drive_now_ns() > deadline) {
            drive_daemon_kill(d);
            return moor_error_set(err, -ETIMEDOUT,
                                  "moor-vmd did not exit within %u ms of SIGTERM (log: %s)",
                                  timeout_ms, d->log_path);
        }
        sleep_ms(2);
    }
    d->pid = 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    describe_status(status, why, sizeof(why));
    return moor_error_set(err, -ECHILD, "moor-vmd %s after SIGTERM (log: %s)", why, d->log_path);
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    remove(path);
    return 0;
}

void drive_daemon_cleanup(struct drive_daemon *d, bool keep)
{
    drive_daemon_kill(d);
    if (!keep && d->base[0])
        nftw(d->base, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

int drive_find_daemon(const char *given, const char *rel, char *out, moor_error *err)
{
    char self[PATH_MAX];
    ssize_t n;

    if (given && *given) {
        snprintf(out, PATH_MAX, "%s", given);
    } else {
        n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n < 0)
            return moor_error_set(err, -errno, "readlink /proc/self/exe: %s", strerror(errno));
        self[n] = '\0';
        *strrchr(self, '/') = '\0';
        if ((size_t)snprintf(out, PATH_MAX, "%s/%s", self, rel) >= PATH_MAX)
            return moor_error_set(err, -ENOENT, "path too long: %s/%s", self, rel);
    }
    if (access(out, X_OK) < 0)
        return moor_error_set(err, -ENOENT, "no moor-vmd at %s (use --daemon PATH)", out);
    return 0;
}

/* ---- calls -------------------------------------------------------------- */

int drive_call(struct vmctl_client *c, const char *method, const char *path, const char *body,
               long want, struct vmctl_response *out, moor_error *err)
{
    struct vmctl_response r;
    int rc = vmctl_request(c, method, path, body, &r, err);

    if (rc < 0)
        return rc;
    if (r.status != want) {
        rc = moor_error_set(err, -EPROTO, "%s %s: %ld %s: %s (wanted %ld)", method, path, r.status,
                            r.error_code ? r.error_code : "?",
                            r.error_message ? r.error_message : r.body, want);
        vmctl_response_clear(&r);
        return rc;
    }
    if (out)
        *out = r;
    else
        vmctl_response_clear(&r);
    return 0;
}

int drive_domain_define(struct vmctl_client *c, const char *name, unsigned memory_mib,
                        moor_error *err)
{
    char body[256];

    snprintf(body, sizeof(body),
             "{\"name\":\"%s\",\"machine\":\"none\",\"accel\":\"tcg\",\"memory_mib\":%u}", name,
             memory_mib);
    return drive_call(c, "POST", "/v1/domains", body, 201, NULL, err);
}

int drive_domain_launch(struct vmctl_client *c, const char *name, unsigned memory_mib, pid_t *pid,
                        moor_error *err)
{
    int rc;

    if ((rc = drive_domain_define(c, name, memory_mib, err)) < 0 ||
        (rc = drive_domain_op(c, name, "start", err)) < 0)
        return rc;
    return drive_domain_pid(c, name, pid, NULL, 0, err);
}

int drive_domain_op(struct vmctl_client *c, const char *name, const char *op, moor_error *err)
{
    char path[160];

    snprintf(path, sizeof(path), "/v1/domains/%s/%s", name, op);
    return drive_call(c, "POST", path, NULL, 200, NULL, err);
}

int drive_domain_undefine(struct vmctl_client *c, const char *name, moor_error *err)
{
    char path[160];

    snprintf(path, sizeof(path), "/v1/domains/%s", name);
    return drive_call(c, "DELETE", path, NULL, 200, NULL, err);
}

int drive_domain_pid(struct vmctl_client *c, const char *name, pid_t *pid, char *reason,
                     size_t reason_len, moor_error *err)
{
    drive_autoresponse struct vmctl_response r = {0};
    struct json_object *v;
    char path[160];
    int rc;

    snprintf(path, sizeof(path), "/v1/domains/%s", name);
    if ((rc = drive_call(c, "GET", path, NULL, 200, &r, err)) < 0)
        return rc;
    if (!r.json || !json_object_object_get_ex(r.json, "pid", &v) || json_object_get_int(v) <= 0)
        return moor_error_set(err, -ESRCH, "domain %s has no pid: %s", name, r.body);
    *pid = (pid_t)json_object_get_int(v);
    if (reason) {
        snprintf(reason, reason_len, "%s",
                 json_object_object_get_ex(r.json, "reason", &v) ? json_object_get_string(v) : "?");
    }
    return 0;
}

/* One stats call on @name: 200 or not; the last answer kept in @last. */
static bool stats_ok(struct vmctl_client *c, const char *name, char *last, size_t len)
{
    drive_autoresponse struct vmctl_response r = {0};
    moor_error e = MOOR_ERROR_INIT;
    char path[160];

    snprintf(path, sizeof(path), "/v1/domains/%s/stats", name);
    if (vmctl_request(c, "GET", path, NULL, &r, &e) < 0)
        snprintf(last, len, "%s", e.message);
    else
        snprintf(last, len, "%ld %s", r.status, r.body);
    return r.status == 200;
}

int drive_wait_stats(struct vmctl_client *c, const char *const *names, size_t n,
                     unsigned timeout_ms, moor_error *err)
{
    uint64_t deadline = drive_now_ns() + (uint64_t)timeout_ms * 1000000u;
    char last[160] = "";
    size_t left = n, first = 0;
    bool *ok = calloc(n ? n : 1, sizeof(*ok));

    if (!ok)
        return moor_error_set(err, -ENOMEM, "out of memory");
    for (;;) {
        for (size_t i = 0; i < n; i++) {
            if (!ok[i] && stats_ok(c, names[i], last, sizeof(last))) {
                ok[i] = true;
                left--;
            }
        }
        if (!left)
            break;
        if (drive_now_ns() > deadline) {
            while (ok[first])
                first++;
            free(ok);
            return moor_error_set(err, -ETIMEDOUT,
                                  "%zu of %zu domains did not answer stats within %u ms; %s: %s",
                                  left, n, timeout_ms, names[first], last);
        }
        sleep_ms(2);
    }
    free(ok);
    return 0;
}

/* ---- QEMU processes by pid ---------------------------------------------- */

bool drive_pid_alive(pid_t pid)
{
    char path[64], buf[256], *p;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return false;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "pid (comm) S ...": the state follows the last ')'. */
    p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

int drive_wait_pids_gone(const pid_t *pids, size_t n, unsigned timeout_ms, moor_error *err)
{
    uint64_t deadline = drive_now_ns() + (uint64_t)timeout_ms * 1000000u;

    for (size_t i = 0; i < n; i++) {
        while (pids[i] > 0 && drive_pid_alive(pids[i])) {
            if (drive_now_ns() > deadline)
                return moor_error_set(err, -ETIMEDOUT, "QEMU pid %d still alive after %u ms",
                                      (int)pids[i], timeout_ms);
            sleep_ms(1);
        }
    }
    return 0;
}

/* /proc/@pid/cmdline contains @what (arguments are NUL-separated). */
static bool cmdline_has(pid_t pid, const char *what)
{
    char path[64], buf[8192];
    size_t n, wl = strlen(what);
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return false;
    n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    for (size_t i = 0; i + wl <= n; i++)
        if (memcmp(buf + i, what, wl) == 0)
            return true;
    return false;
}

bool drive_kill_qemu(pid_t pid, const char *name)
{
    if (pid <= 0 || !drive_pid_alive(pid) || !cmdline_has(pid, "qemu-system") ||
        !cmdline_has(pid, name))
        return false;
    return kill(pid, SIGKILL) == 0;
}

pid_t drive_find_qemu(const char *name)
{
    DIR *proc = opendir("/proc");
    struct dirent *e;
    pid_t found = 0;

    if (!proc)
        return 0;
    while (!found && (e = readdir(proc))) {
        pid_t pid = (pid_t)strtol(e->d_name, NULL, 10);

        if (pid > 0 && drive_pid_alive(pid) && cmdline_has(pid, "qemu-system") &&
            cmdline_has(pid, name))
            found = pid;
    }
    closedir(proc);
    return found;
}

/* ---- load --------------------------------------------------------------- */

static const char *const kind_names[DRIVE_NKINDS] = {
    [DRIVE_VERSION] = "version", [DRIVE_STATE] = "state",   [DRIVE_STATS] = "stats",
    [DRIVE_SUSPEND] = "suspend", [DRIVE_RESUME] = "resume",
};

const char *drive_kind_name(enum drive_kind k)
{
    return (unsigned)k < DRIVE_NKINDS ? kind_names[k] : "?";
}

static void op_request(const struct drive_load *l, const struct drive_op *op, const char **method,
                       char *path, size_t len)
{
    const char *dom = op->dom < l->n_domains ? l->domains[op->dom] : "-";

    *method = "GET";
    switch (op->kind) {
    case DRIVE_VERSION:
        snprintf(path, len, "/v1/version");
        return;
    case DRIVE_STATE:
    case DRIVE_STATS:
        snprintf(path, len, "/v1/domains/%s/%s", dom, kind_names[op->kind]);
        return;
    case DRIVE_SUSPEND:
    case DRIVE_RESUME:
    default:
        *method = "POST";
        snprintf(path, len, "/v1/domains/%s/%s", dom, drive_kind_name(op->kind));
        return;
    }
}

static struct drive_rec *rec_next(struct drive_thread *t)
{
    if (t->n_recs == t->cap_recs) {
        size_t cap = t->cap_recs ? t->cap_recs * 2 : 4096;
        struct drive_rec *p = realloc(t->recs, cap * sizeof(*p));

        if (!p)
            return NULL;
        t->recs = p;
        t->cap_recs = cap;
    }
    return &t->recs[t->n_recs];
}

/* The error code of a transport failure, for the record. */
static const char *transport_code(int rc)
{
    switch (rc) {
    case -ECONNREFUSED:
        return "ECONNREFUSED";
    case -ENOENT:
        return "ENOENT";
    case -ETIMEDOUT:
        return "ETIMEDOUT";
    case -ENOMEM:
        return "ENOMEM";
    default:
        return "EIO";
    }
}

static void *load_thread(void *opaque)
{
    struct drive_thread *t = opaque;
    struct drive_load *l = t->load;
    struct drive_op op;

    while (!atomic_load_explicit(&l->stop, memory_order_relaxed) && l->pick(t, &op)) {
        struct vmctl_response r = {0};
        struct drive_rec *rec = rec_next(t);
        const char *method;
        char path[192];
        int rc;

        if (!rec) {
            t->failed = -ENOMEM;
            break;
        }
        op_request(l, &op, &method, path, sizeof(path));
        memset(rec, 0, sizeof(*rec));
        rec->kind = (uint8_t)op.kind;
        rec->tag = op.tag;
        rec->dom = (uint16_t)op.dom;
        rec->start_ns = drive_now_ns();
        rc = vmctl_request(t->client, method, path, NULL, &r, NULL);
        rec->lat_ns = drive_now_ns() - rec->start_ns;
        if (rc < 0) {
            snprintf(rec->code, sizeof(rec->code), "%s", transport_code(rc));
        } else {
            rec->status = (uint16_t)r.status;
            if (r.status >= 300)
                snprintf(rec->code, sizeof(rec->code), "%s",
                         r.error_code ? r.error_code : "(none)");
        }
        t->n_recs++;
        if (l->done)
            l->done(t, &op, rec, rc < 0 ? "no answer (transport error)" : r.error_message);
        vmctl_response_clear(&r);
    }
    return NULL;
}

int drive_load_start(struct drive_load *l, moor_error *err)
{
    int rc;

    atomic_store_explicit(&l->stop, false, memory_order_relaxed);
    l->started = 0;
    l->threads = calloc(l->n_threads, sizeof(*l->threads));
    if (!l->threads)
        return moor_error_set(err, -ENOMEM, "out of memory for %u threads", l->n_threads);
    for (unsigned i = 0; i < l->n_threads; i++) {
        struct drive_thread *t = &l->threads[i];

        t->load = l;
        t->index = i;
        t->client = vmctl_client_new(l->socket_path, l->timeout_ms, err);
        if (!t->client)
            return err ? err->code : -ENOMEM;
    }
    for (unsigned i = 0; i < l->n_threads; i++) {
        rc = pthread_create(&l->threads[i].tid, NULL, load_thread, &l->threads[i]);
        if (rc) {
            drive_load_stop(l);
            return moor_error_set(err, -rc, "pthread_create: %s", strerror(rc));
        }
        l->started++;
    }
    return 0;
}

int drive_load_stop(struct drive_load *l)
{
    int rc = 0;

    atomic_store_explicit(&l->stop, true, memory_order_relaxed);
    for (unsigned i = 0; i < l->started; i++) {
        pthread_join(l->threads[i].tid, NULL);
        if (l->threads[i].failed)
            rc = l->threads[i].failed;
    }
    l->started = 0;
    return rc;
}

void drive_load_free(struct drive_load *l)
{
    if (!l->threads)
        return;
    for (unsigned i = 0; i < l->n_threads; i++) {
        vmctl_client_free(l->threads[i].client);
        free(l->threads[i].recs);
    }
    free(l->threads);
    l->threads = NULL;
}

/* ---- figures ------------------------------------------------------------ */

int drive_lat_add(struct drive_lat *l, uint64_t ns)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        uint64_t *p = realloc(l->ns, cap * sizeof(*p));

        if (!p)
            return -ENOMEM;
        l->ns = p;
        l->cap = cap;
    }
    l->ns[l->n++] = ns;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

uint64_t drive_lat_pct(struct drive_lat *l, double p)
{
    size_t rank;

    if (!l->n)
        return 0;
    qsort(l->ns, l->n, sizeof(*l->ns), cmp_u64);
    rank = (size_t)(p / 100.0 * (double)l->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > l->n)
        rank = l->n;
    return l->ns[rank - 1];
}

void drive_lat_free(struct drive_lat *l)
{
    free(l->ns);
    memset(l, 0, sizeof(*l));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

double drive_median(double *v, size_t n)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
