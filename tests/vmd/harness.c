/* SPDX-License-Identifier: MIT */
/*
 * harness.c - a real moor-vmd under test (see harness.h).
 *
 * The daemon is our child: started with PR_SET_PDEATHSIG so a test that
 * crashes does not leave it behind, reaped with waitpid after a pidfd
 * poll bounds the wait. Its QEMUs are not our children (they run in their
 * own session and outlive the daemon by design), so "gone" means: no such
 * pid, or a zombie waiting for its new parent. Every process this harness
 * causes to exist has the root directory in its command line (the daemon's
 * flags, QEMU's -pidfile and monitor paths), which is how vh_finish finds
 * leftovers it was never told about; a noted pid is only killed while its
 * command line still names the root, so a reused pid is never hit.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <json-c/json.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void vh_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void vh_log(const char *fmt, ...)
{
    va_list ap;

    fputs("harness: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static uint64_t vh_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Print the last lines of the daemon's log, to explain a failure. */
static void vh_log_tail(const struct vh_daemon *d)
{
    char buf[16384]; /* a sanitizer report with its stacks fits */
    int fd = open(d->log_path, O_RDONLY | O_CLOEXEC);
    off_t size;
    ssize_t n;

    if (fd < 0)
        return;
    size = lseek(fd, 0, SEEK_END);
    lseek(fd, size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0, SEEK_SET);
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n > 0) {
        buf[n] = '\0';
        fprintf(stderr, "harness: --- tail of %s ---\n%s\nharness: ---\n", d->log_path, buf);
    }
}

static bool vh_executable(const char *var, char *out, size_t size)
{
    const char *p = getenv(var);
    char abs[PATH_MAX];

    /* Absolute: the daemon refuses a relative emulator path, and runs elsewhere. */
    if (!p || !*p || access(p, X_OK) != 0 || !realpath(p, abs) || strlen(abs) >= size) {
        vh_log("$%s must name an executable (meson sets it), got '%s'", var, p ? p : "");
        return false;
    }
    strcpy(out, abs);
    return true;
}

int vh_init(struct vh_daemon *d, const char *const *flags)
{
    bool has_qmp = false;
    unsigned n = 0;

    memset(d, 0, sizeof(*d));
    pthread_mutex_init(&d->lock, NULL);
    if (!vh_executable("MOOR_VMD", d->vmd_path, sizeof(d->vmd_path)) ||
        !vh_executable("FAKE_QEMU", d->fake_qemu, sizeof(d->fake_qemu)))
        return -ENOENT;
    snprintf(d->root, sizeof(d->root), "/tmp/vmdt.XXXXXX");
    if (!mkdtemp(d->root)) {
        vh_log("mkdtemp: %s", strerror(errno));
        return -errno;
    }
    snprintf(d->state_dir, sizeof(d->state_dir), "%s/state", d->root);
    snprintf(d->runtime_dir, sizeof(d->runtime_dir), "%s/run", d->root);
    snprintf(d->socket_path, sizeof(d->socket_path), "%s/run/moor-vmd.sock", d->root);
    snprintf(d->log_path, sizeof(d->log_path), "%s/vmd.log", d->root);
    for (; flags && flags[n]; n++) {
        if (n + 2 >= VH_MAX_FLAGS)
            return -E2BIG;
        d->flags[n] = strdup(flags[n]);
        has_qmp |= strncmp(flags[n], "--qmp-timeout", 13) == 0;
    }
    if (!has_qmp) {
        d->flags[n++] = strdup("--qmp-timeout");
        d->flags[n++] = strdup(VH_DEFAULT_QMP);
    }
    return 0;
}

static void vh_exec_daemon(const struct vh_daemon *d)
{
    const char *argv[VH_MAX_FLAGS + 16];
    unsigned n = 0;
    int log = open(d->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (log < 0 || dup2(log, STDERR_FILENO) < 0 || dup2(log, STDOUT_FILENO) < 0)
        _exit(126);
    argv[n++] = d->vmd_path;
    argv[n++] = "--state-dir";
    argv[n++] = d->state_dir;
    argv[n++] = "--runtime-dir";
    argv[n++] = d->runtime_dir;
    argv[n++] = "--socket";
    argv[n++] = d->socket_path;
    for (unsigned i = 0; d->flags[i]; i++)
        argv[n++] = d->flags[i];
    argv[n] = NULL;
    execv(d->vmd_path, (char **)argv);
    _exit(127);
}

/* Wait up to @bound_ms for our child @pid to exit; reap it into *@status.
 * A pidfd bounds the wait; where there is none (valgrind does not know
 * pidfd_open), WNOHANG looks every 5 ms until the same bound. */
static int vh_reap(pid_t pid, int bound_ms, int *status)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    uint64_t end = vh_now_ms() + (uint64_t)bound_ms;

    if (fd >= 0) {
        struct pollfd p = {fd, POLLIN, 0};
        int ready = poll(&p, 1, bound_ms);

        close(fd);
        if (ready != 1)
            return -ETIMEDOUT;
        return waitpid(pid, status, 0) == pid ? 0 : -errno;
    }
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);

        if (r == pid)
            return 0;
        if (r < 0)
            return -errno;
        if (vh_now_ms() > end)
            return -ETIMEDOUT;
        poll(NULL, 0, 5);
    }
}

/* GET /v1/version answers 200. */
static bool vh_answers(const struct vh_daemon *d)
{
    struct vmctl_client *c = vmctl_client_new(d->socket_path, 1000, NULL);
    struct vmctl_response r = {0};
    bool ok;

    if (!c)
        return false;
    ok = vmctl_request(c, "GET", "/v1/version", NULL, &r, NULL) == 0 && r.status == 200;
    vmctl_response_clear(&r);
    vmctl_client_free(c);
    return ok;
}

int vh_start(struct vh_daemon *d)
{
    uint64_t end = vh_now_ms() + VH_START_MS;
    int status;

    if (d->pid > 0)
        return -EALREADY;
    d->pid = fork();
    if (d->pid < 0) {
        d->pid = 0;
        return -errno;
    }
    if (d->pid == 0)
        vh_exec_daemon(d);
    d->starts++;
    while (!vh_answers(d)) {
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            vh_log("moor-vmd exited while starting (wait status 0x%x)", status);
            vh_log_tail(d);
            d->pid = 0;
            return -ECHILD;
        }
        if (vh_now_ms() > end) {
            vh_log("moor-vmd did not answer GET /v1/version on %s within %d ms", d->socket_path,
                   VH_START_MS);
            vh_log_tail(d);
            return -ETIMEDOUT;
        }
        poll(NULL, 0, 20); /* starting: look again, bounded by `end` */
    }
    return 0;
}

int vh_kill9(struct vh_daemon *d)
{
    int status, rc;

    if (d->pid <= 0)
        return 0;
    kill(d->pid, SIGKILL);
    rc = vh_reap(d->pid, VH_EXIT_MS, &status);
    if (rc < 0)
        vh_log("moor-vmd (pid %d) did not die of SIGKILL within %d ms", (int)d->pid, VH_EXIT_MS);
    d->pid = 0;
    return rc;
}

int vh_restart(struct vh_daemon *d)
{
    int rc = vh_kill9(d);

    return rc < 0 ? rc : vh_start(d);
}

int vh_stop(struct vh_daemon *d, int *status)
{
    int rc;

    *status = -1;
    if (d->pid <= 0)
        return -ESRCH;
    kill(d->pid, SIGTERM);
    rc = vh_reap(d->pid, VH_STOP_MS, status);
    if (rc == -ETIMEDOUT) {
        vh_log("moor-vmd did not exit within %d ms of SIGTERM; killing it", VH_STOP_MS);
        vh_log_tail(d);
        vh_kill9(d);
        return rc;
    }
    d->pid = 0;
    if (rc < 0)
        return rc;
    if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
        vh_log("moor-vmd ended with wait status 0x%x after SIGTERM (expected exit 0)", *status);
        vh_log_tail(d);
        return -ECANCELED;
    }
    return 0;
}

void vh_note_pid(struct vh_daemon *d, pid_t pid)
{
    pthread_mutex_lock(&d->lock);
    if (d->n_qemu < VH_MAX_QEMU)
        d->qemu_pids[d->n_qemu++] = pid;
    pthread_mutex_unlock(&d->lock);
}

/* The state letter of /proc/@pid/stat, or 0 if there is no such process. */
static char vh_proc_state(pid_t pid)
{
    char path[64], buf[512], *p;
    int fd;
    ssize_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* the command name may hold spaces and parens */
    return p && p[1] == ' ' ? p[2] : 0;
}

bool vh_pid_alive(pid_t pid)
{
    char s = vh_proc_state(pid);

    return s != 0 && s != 'Z' && s != 'X';
}

int vh_wait_pid_gone(pid_t pid, int bound_ms)
{
    uint64_t end = vh_now_ms() + (uint64_t)bound_ms;

    while (vh_pid_alive(pid)) {
        if (vh_now_ms() > end)
            return -ETIMEDOUT;
        poll(NULL, 0, 5); /* not our child: no pidfd wait for a zombie; bounded */
    }
    return 0;
}

/* Whether /proc/@pid/cmdline contains @needle. */
static bool vh_cmdline_has(pid_t pid, const char *needle)
{
    char path[64], buf[8192];
    int fd;
    ssize_t n;

    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* SIGKILL a leftover and wait until it is gone. */
static void vh_kill_leftover(const struct vh_daemon *d, pid_t pid)
{
    char what[256] = "";
    char path[64];
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, what, sizeof(what) - 1);

        close(fd);
        for (ssize_t i = 0; i < n; i++)
            if (what[i] == '\0')
                what[i] = ' ';
    }
    vh_log("leftover process %d of %s: %s", (int)pid, d->root, what);
    kill(pid, SIGKILL);
    if (vh_wait_pid_gone(pid, VH_EXIT_MS) < 0)
        vh_log("leftover %d still alive %d ms after SIGKILL", (int)pid, VH_EXIT_MS);
}

static int vh_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

int vh_finish(struct vh_daemon *d)
{
    int leftovers = 0;
    DIR *proc;
    struct dirent *e;

    vh_kill9(d);
    pthread_mutex_lock(&d->lock);
    for (unsigned i = 0; i < d->n_qemu; i++) {
        if (vh_pid_alive(d->qemu_pids[i]) && vh_cmdline_has(d->qemu_pids[i], d->root)) {
            vh_kill_leftover(d, d->qemu_pids[i]);
            leftovers++;
        }
    }
    pthread_mutex_unlock(&d->lock);
    proc = opendir("/proc");
    while (proc && (e = readdir(proc))) {
        pid_t pid = (pid_t)atoi(e->d_name);

        if (pid > 0 && pid != getpid() && vh_pid_alive(pid) && vh_cmdline_has(pid, d->root)) {
            vh_kill_leftover(d, pid);
            leftovers++;
        }
    }
    if (proc)
        closedir(proc);
    if (leftovers)
        vh_log_tail(d);
    nftw(d->root, vh_rm, 16, FTW_DEPTH | FTW_PHYS);
    for (unsigned i = 0; d->flags[i]; i++)
        free(d->flags[i]);
    memset(d->flags, 0, sizeof(d->flags));
    return leftovers;
}

/* ---- requests ------------------------------------------------------------ */

struct vmctl_client *vh_client_new(const struct vh_daemon *d)
{
    moor_error err = {0};
    struct vmctl_client *c = vmctl_client_new(d->socket_path, VH_REQUEST_MS, &err);

    if (!c)
        vh_log("vmctl_client_new: %s", moor_error_message(&err));
    moor_error_clear(&err);
    return c;
}

static int vh_vcall(struct vmctl_client *c, struct vmctl_response *out, const char *method,
                    const char *path, const char *body_fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));
static int vh_vcall(struct vmctl_client *c, struct vmctl_response *out, const char *method,
                    const char *path, const char *body_fmt, va_list ap)
{
    char *body = NULL;
    moor_error err = {0};
    int rc;

    if (body_fmt && vasprintf(&body, body_fmt, ap) < 0)
        return -ENOMEM;
    memset(out, 0, sizeof(*out));
    rc = vmctl_request(c, method, path, body, out, &err);
    if (rc < 0)
        vh_log("%s %s: no answer: %s", method, path, moor_error_message(&err));
    moor_error_clear(&err);
    free(body);
    return rc;
}

int vh_call(struct vmctl_client *c, struct vmctl_response *out, const char *method,
            const char *path, const char *body_fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, body_fmt);
    rc = vh_vcall(c, out, method, path, body_fmt, ap);
    va_end(ap);
    return rc;
}

int vh_expect(struct vmctl_client *c, long status, struct vmctl_response *out, const char *method,
              const char *path, const char *body_fmt, ...)
{
    struct vmctl_response r;
    va_list ap;
    int rc;

    va_start(ap, body_fmt);
    rc = vh_vcall(c, &r, method, path, body_fmt, ap);
    va_end(ap);
    if (rc < 0)
        return rc;
    if (r.status != status) {
        vh_log("%s %s: status %ld, expected %ld; body: %s", method, path, r.status, status, r.body);
        rc = -EPROTO;
    } else if (status >= 300 && (!r.error_code || !r.error_message || !*r.error_message)) {
        vh_log("%s %s: status %ld without an error object: %s", method, path, r.status, r.body);
        rc = -EPROTO;
    } else if (status < 300 && status != 204 && !r.json) {
        vh_log("%s %s: status %ld with a body that is not JSON: %s", method, path, r.status,
               r.body);
        rc = -EPROTO;
    }
    if (rc == 0 && out)
        *out = r;
    else
        vmctl_response_clear(&r);
    return rc;
}

const char *vh_json_str(struct json_object *obj, const char *key)
{
    struct json_object *v;

    if (!obj || !json_object_object_get_ex(obj, key, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

struct json_object *vh_json_get(struct json_object *obj, const char *key)
{
    struct json_object *v;

    return obj && json_object_object_get_ex(obj, key, &v) ? v : NULL;
}

int vh_define_fake(struct vh_daemon *d, struct vmctl_client *c, const char *name,
                   const char *faults)
{
    if (!faults)
        return vh_expect(c, 201, NULL, "POST", "/v1/domains",
                         "{\"name\":\"%s\",\"emulator\":\"%s\",\"machine\":\"none\","
                         "\"accel\":\"tcg\",\"memory_mib\":16}",
                         name, d->fake_qemu);
    return vh_expect(c, 201, NULL, "POST", "/v1/domains",
                     "{\"name\":\"%s\",\"emulator\":\"%s\",\"machine\":\"none\","
                     "\"accel\":\"tcg\",\"memory_mib\":16,"
                     "\"extra_args\":[\"-fake-faults\",\"%s\"]}",
                     name, d->fake_qemu, faults);
}

int vh_define_real(struct vh_daemon *d, struct vmctl_client *c, const char *name)
{
    const char *emu = getenv("REAL_QEMU");

    (void)d;
    return vh_expect(c, 201, NULL, "POST", "/v1/domains",
                     "{\"name\":\"%s\",\"emulator\":\"%s\",\"machine\":\"none\","
                     "\"accel\":\"tcg\",\"memory_mib\":16}",
                     name, emu && *emu ? emu : "qemu-system-x86_64");
}

static pid_t vh_pid_of(struct json_object *info)
{
    struct json_object *v = vh_json_get(info, "pid");

    return v && json_object_is_type(v, json_type_int) ? (pid_t)json_object_get_int(v) : -ESRCH;
}

pid_t vh_start_domain(struct vh_daemon *d, struct vmctl_client *c, const char *name, bool paused)
{
    struct vmctl_response r;
    char path[160];
    pid_t pid;
    int rc;

    snprintf(path, sizeof(path), "/v1/domains/%s/start", name);
    rc = vh_expect(c, 200, &r, "POST", path, "{\"paused\":%s}", paused ? "true" : "false");
    if (rc < 0)
        return rc;
    pid = vh_pid_of(r.json);
    if (pid <= 0)
        vh_log("start %s: no pid in the answer: %s", name, r.body);
    else
        vh_note_pid(d, pid);
    vmctl_response_clear(&r);
    return pid;
}

pid_t vh_domain_pid(struct vmctl_client *c, const char *name)
{
    struct vmctl_response r;
    char path[160];
    pid_t pid;
    int rc;

    snprintf(path, sizeof(path), "/v1/domains/%s", name);
    rc = vh_expect(c, 200, &r, "GET", path, NULL);
    if (rc < 0)
        return rc;
    pid = vh_pid_of(r.json);
    vmctl_response_clear(&r);
    return pid;
}

int vh_wait_state(struct vmctl_client *c, const char *name, const char *state, const char *reason)
{
    uint64_t end = vh_now_ms() + VH_STATE_MS;
    char path[160], last[512] = "(no answer)";

    snprintf(path, sizeof(path), "/v1/domains/%s/state", name);
    for (;;) {
        struct vmctl_response r;
        bool ok = false;

        if (vh_call(c, &r, "GET", path, NULL) == 0) {
            const char *s = vh_json_str(r.json, "state"), *why = vh_json_str(r.json, "reason");

            ok = r.status == 200 && s && strcmp(s, state) == 0 &&
                 (!reason || (why && strcmp(why, reason) == 0));
            snprintf(last, sizeof(last), "%ld %s", r.status, r.body);
            vmctl_response_clear(&r);
        }
        if (ok)
            return 0;
        if (vh_now_ms() > end) {
            vh_log("%s did not reach %s%s%s within %d ms; last: %s", name, state, reason ? "/" : "",
                   reason ? reason : "", VH_STATE_MS, last);
            return -ETIMEDOUT;
        }
        poll(NULL, 0, 10); /* the state changes on QEMU's time: look again, bounded */
    }
}

int vh_destroy_all(struct vh_daemon *d, struct vmctl_client *c)
{
    struct vmctl_response r;
    struct json_object *list;
    int rc, first = 0;

    (void)d;
    rc = vh_expect(c, 200, &r, "GET", "/v1/domains", NULL);
    if (rc < 0)
        return rc;
    list = vh_json_get(r.json, "domains");
    for (size_t i = 0; list && i < json_object_array_length(list); i++) {
        struct json_object *dom = json_object_array_get_idx(list, i);
        const char *name = vh_json_str(dom, "name"), *state = vh_json_str(dom, "state");
        char path[160];

        if (!name || !state)
            continue;
        if (strcmp(state, "shutoff") != 0) {
            struct vmctl_response dr;

            /* 409: it stopped on its own since the list (a crash fault). */
            snprintf(path, sizeof(path), "/v1/domains/%s/destroy", name);
            rc = vh_call(c, &dr, "POST", path, NULL);
            if (rc == 0 && dr.status != 200 && dr.status != 409) {
                vh_log("POST %s: status %ld: %s", path, dr.status, dr.body);
                rc = -EPROTO;
            }
            if (rc == 0)
                vmctl_response_clear(&dr);
            first = first ? first : rc;
        }
        snprintf(path, sizeof(path), "/v1/domains/%s", name);
        rc = vh_expect(c, 200, NULL, "DELETE", path, NULL);
        first = first ? first : rc;
    }
    vmctl_response_clear(&r);
    return first;
}

bool vh_program_found(const char *name, const char *env)
{
    const char *given = env ? getenv(env) : NULL;
    char *path = getenv("PATH") ? strdup(getenv("PATH")) : NULL, *save = NULL;
    bool found = false;

    if (given && *given) {
        free(path);
        return access(given, X_OK) == 0;
    }
    for (char *dir = path ? strtok_r(path, ":", &save) : NULL; dir && !found;
         dir = strtok_r(NULL, ":", &save)) {
        char full[4096];

        snprintf(full, sizeof(full), "%s/%s", dir, name);
        found = access(full, X_OK) == 0;
    }
    free(path);
    return found;
}
