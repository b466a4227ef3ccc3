/* SPDX-License-Identifier: MIT */
/*
 * main.c - moor-vmd: flags, wiring, signals.
 *
 * Creation order: the loop and its thread, the domain registry, the event
 * bus, the domains (loaded, QEMUs reconnected), the worker pool, the HTTP
 * server. SIGTERM/SIGINT arrive through a signalfd on the loop, which wakes
 * the main thread; it then tears down in reverse: stop accepting, drain
 * the pool (queued requests answered 503, running ones finish), close the
 * HTTP side, let go of the domains (QEMUs keep running), stop the loop.
 * The live-object census must be zero at the end.
 */
#define _GNU_SOURCE /* asprintf */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <moor/object.h>

#include "domain.h"
#include "events.h"
#include "http.h"
#include "image.h"
#include "log.h"
#include "pool.h"
#include "vmd.h"

#define MAX_WORKERS     256u
#define MAX_TIMEOUT_SEC 3600u
#define MAX_GRACE_MS    60000u

static void usage(void)
{
    printf("Usage: moor-vmd [OPTION]...\n"
           "Manage QEMU virtual machines; serve the API over a UNIX socket (foreground).\n"
           "\n"
           "  --state-dir DIR         configs and logs (default: /var/lib/moor-vmd as root,\n"
           "                          else $XDG_STATE_HOME/moor-vmd or ~/.local/state/moor-vmd)\n"
           "  --runtime-dir DIR       status files, QMP sockets (default: /run/moor-vmd as root,\n"
           "                          else $XDG_RUNTIME_DIR/moor-vmd)\n"
           "  --socket PATH           the API socket (default: RUNTIME-DIR/moor-vmd.sock)\n"
           "  --workers N             worker threads for API calls (default: %u)\n"
           "  --domain-workers N      most workers one domain's calls may hold (default:\n"
           "                          workers/4, at least 1)\n"
           "  --queue-max N           most calls queued per domain beyond that (default:\n"
           "                          4*workers)\n"
           "  --qmp-timeout SECONDS   deadline of every QMP call (default: %u)\n"
           "  --job-timeout SECONDS   deadline of a wait for a domain's job (default: %u)\n"
           "  --destroy-grace MS      SIGTERM to SIGKILL on destroy (default: %u)\n"
           "  --http-timeout SECONDS  close an idle or stalled API connection (event\n"
           "                          streams excepted) after SECONDS (default: %u)\n"
           "  --refusal-pace MS       a connection's calls on a hung QEMU are refused at\n"
           "                          once, then at most one per MS (default: %u; 0: no pace)\n"
           "  --runas USER            run QEMU as USER (default: the daemon's user)\n"
           "  --log-format FORMAT     text or journal (default: text)\n"
           "  --help                  print this help and exit\n"
           "  --version               print the version and exit\n",
           VMD_DEFAULT_WORKERS, VMD_DEFAULT_QMP_TIMEOUT_MS / 1000,
           VMD_DEFAULT_JOB_TIMEOUT_MS / 1000, VMD_DEFAULT_DESTROY_GRACE_MS,
           VMD_DEFAULT_HTTP_TIMEOUT_S, VMD_DEFAULT_REFUSAL_PACE_MS);
}

enum {
    OPT_STATE_DIR = 256,
    OPT_RUNTIME_DIR,
    OPT_SOCKET,
    OPT_WORKERS,
    OPT_DOMAIN_WORKERS,
    OPT_QUEUE_MAX,
    OPT_QMP_TIMEOUT,
    OPT_JOB_TIMEOUT,
    OPT_DESTROY_GRACE,
    OPT_HTTP_TIMEOUT,
    OPT_REFUSAL_PACE,
    OPT_RUNAS,
    OPT_LOG_FORMAT,
    OPT_HELP,
    OPT_VERSION,
};

static const struct option long_options[] = {
    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
    {"runtime-dir", required_argument, NULL, OPT_RUNTIME_DIR},
    {"socket", required_argument, NULL, OPT_SOCKET},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"domain-workers", required_argument, NULL, OPT_DOMAIN_WORKERS},
    {"queue-max", required_argument, NULL, OPT_QUEUE_MAX},
    {"qmp-timeout", required_argument, NULL, OPT_QMP_TIMEOUT},
    {"job-timeout", required_argument, NULL, OPT_JOB_TIMEOUT},
    {"destroy-grace", required_argument, NULL, OPT_DESTROY_GRACE},
    {"http-timeout", required_argument, NULL, OPT_HTTP_TIMEOUT},
    {"refusal-pace", required_argument, NULL, OPT_REFUSAL_PACE},
    {"runas", required_argument, NULL, OPT_RUNAS},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static void usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "moor-vmd: %s '%s'\nTry 'moor-vmd --help' for more information.\n", what, arg);
}

/* @arg as an integer in @min..@max, or -EINVAL (reported). */
static int parse_uint(const char *name, const char *arg, unsigned min, unsigned max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(arg, &end, 10);

    if (errno || end == arg || *end || arg[0] == '-' || v < min || v > max) {
        fprintf(stderr, "moor-vmd: --%s wants an integer in %u..%u, not '%s'\n", name, min, max,
                arg);
        return -EINVAL;
    }
    *out = (unsigned)v;
    return 0;
}

static int set_string(char **field, const char *arg)
{
    free(*field);
    *field = strdup(arg);
    return *field ? 0 : -ENOMEM;
}

static void options_clear(struct vmd_options *opt)
{
    free(opt->state_dir);
    free(opt->runtime_dir);
    free(opt->log_dir);
    free(opt->socket_path);
    free(opt->runas);
    memset(opt, 0, sizeof(*opt));
}

/* One flag. Returns 0, 1 (exit 0 after --help/--version) or -EINVAL. */
static int apply_option(struct vmd_options *opt, int c, const char *arg)
{
    unsigned secs;
    int rc = 0;

    switch (c) {
    case OPT_STATE_DIR:
        return set_string(&opt->state_dir, arg);
    case OPT_RUNTIME_DIR:
        return set_string(&opt->runtime_dir, arg);
    case OPT_SOCKET:
        return set_string(&opt->socket_path, arg);
    case OPT_RUNAS:
        if (!getpwnam(arg)) {
            fprintf(stderr, "moor-vmd: --runas: no user '%s'\n", arg);
            return -EINVAL;
        }
        return set_string(&opt->runas, arg);
    case OPT_WORKERS:
        return parse_uint("workers", arg, 1, MAX_WORKERS, &opt->workers);
    case OPT_DOMAIN_WORKERS:
        return parse_uint("domain-workers", arg, 1, MAX_WORKERS, &opt->domain_workers);
    case OPT_QUEUE_MAX:
        return parse_uint("queue-max", arg, 1, 1u << 16, &opt->queue_max);
    case OPT_QMP_TIMEOUT:
        rc = parse_uint("qmp-timeout", arg, 1, MAX_TIMEOUT_SEC, &secs);
        opt->qmp_timeout_ms = rc == 0 ? secs * 1000u : opt->qmp_timeout_ms;
        return rc;
    case OPT_JOB_TIMEOUT:
        rc = parse_uint("job-timeout", arg, 1, MAX_TIMEOUT_SEC, &secs);
        opt->job_timeout_ms = rc == 0 ? secs * 1000u : opt->job_timeout_ms;
        return rc;
    case OPT_DESTROY_GRACE:
        return parse_uint("destroy-grace", arg, 0, MAX_GRACE_MS, &opt->destroy_grace_ms);
    case OPT_HTTP_TIMEOUT:
        return parse_uint("http-timeout", arg, 1, MAX_TIMEOUT_SEC, &opt->http_timeout_s);
    case OPT_REFUSAL_PACE:
        return parse_uint("refusal-pace", arg, 0, MAX_GRACE_MS, &opt->refusal_pace_ms);
    case OPT_LOG_FORMAT:
        if (strcmp(arg, "text") == 0)
            opt->log_format = VMD_LOG_TEXT;
        else if (strcmp(arg, "journal") == 0)
            opt->log_format = VMD_LOG_JOURNAL;
        else {
            usage_error("--log-format is text or journal, not", arg);
            return -EINVAL;
        }
        return 0;
    case OPT_HELP:
        usage();
        return 1;
    case OPT_VERSION:
        printf("moor-vmd %s (API %s)\n", VMD_VERSION, VMD_API_VERSION);
        return 1;
    default:
        fprintf(stderr, "Try 'moor-vmd --help' for more information.\n");
        return -EINVAL;
    }
}

/* The directories' defaults: root's system paths, else the XDG ones. */
static int fill_defaults(struct vmd_options *opt)
{
    const char *xdg_state = getenv("XDG_STATE_HOME");
    const char *xdg_run = getenv("XDG_RUNTIME_DIR");
    const char *home = getenv("HOME");
    bool root = geteuid() == 0;

    if (!opt->state_dir) {
        int n = root                      ? asprintf(&opt->state_dir, "/var/lib/moor-vmd")
                : xdg_state && *xdg_state ? asprintf(&opt->state_dir, "%s/moor-vmd", xdg_state)
                : home && *home ? asprintf(&opt->state_dir, "%s/.local/state/moor-vmd", home)
                                : -1;
        if (n < 0) {
            fprintf(stderr,
                    "moor-vmd: no state directory: set --state-dir, XDG_STATE_HOME or HOME\n");
            return -EINVAL;
        }
    }
    if (!opt->runtime_dir) {
        int n = root                  ? asprintf(&opt->runtime_dir, "/run/moor-vmd")
                : xdg_run && *xdg_run ? asprintf(&opt->runtime_dir, "%s/moor-vmd", xdg_run)
                                      : -1;
        if (n < 0) {
            fprintf(stderr,
                    "moor-vmd: no runtime directory: set --runtime-dir or XDG_RUNTIME_DIR\n");
            return -EINVAL;
        }
    }
    if (!opt->log_dir && asprintf(&opt->log_dir, "%s/log", opt->state_dir) < 0)
        return -ENOMEM;
    if (!opt->socket_path && asprintf(&opt->socket_path, "%s/moor-vmd.sock", opt->runtime_dir) < 0)
        return -ENOMEM;
    if (!opt->workers)
        opt->workers = VMD_DEFAULT_WORKERS;
    if (!opt->domain_workers)
        opt->domain_workers = opt->workers / 4 ? opt->workers / 4 : 1;
    if (!opt->queue_max)
        opt->queue_max = 4 * opt->workers;
    return 0;
}

/* Returns 0 to run, 1 to exit 0, -EINVAL to exit 2. */
static int parse_args(int argc, char **argv, struct vmd_options *opt)
{
    int c;

    opt->qmp_timeout_ms = VMD_DEFAULT_QMP_TIMEOUT_MS;
    opt->job_timeout_ms = VMD_DEFAULT_JOB_TIMEOUT_MS;
    opt->destroy_grace_ms = VMD_DEFAULT_DESTROY_GRACE_MS;
    opt->http_timeout_s = VMD_DEFAULT_HTTP_TIMEOUT_S;
    opt->refusal_pace_ms = VMD_DEFAULT_REFUSAL_PACE_MS;
    opt->shutdown_ms = VMD_DEFAULT_SHUTDOWN_MS;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        int rc = apply_option(opt, c, optarg);
        if (rc != 0)
            return rc;
    }
    if (optind < argc) {
        usage_error("unexpected argument", argv[optind]);
        return -EINVAL;
    }
    return fill_defaults(opt);
}

/* mkdir -p @path, the last component with @mode. */
static int make_dirs(const char *path, mode_t mode)
{
    char buf[4096];

    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/*
 * The daemon's lock: an exclusive, non-blocking flock on
 * RUNTIME-DIR/moor-vmd.lock, held until the process exits. Taken before
 * the socket or any domain is touched, so a second daemon on the same
 * runtime directory never binds, loads configs or reconnects to QMP, even
 * while the first is shutting down and its socket is gone.
 * Returns the locked fd (the caller closes it last), or -EBUSY naming the
 * lock when another process holds it, -ENAMETOOLONG, or open's/flock's
 * -errno, with @err. Blocks: no.
 */
static int take_lock(const char *runtime_dir, moor_error *err)
{
    char path[4096];

    if (snprintf(path, sizeof(path), "%s/moor-vmd.lock", runtime_dir) >= (int)sizeof(path))
        return moor_error_set(err, -ENAMETOOLONG, "runtime directory path too long");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return moor_error_set(err, -errno, "cannot open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            return moor_error_set(err, -EBUSY, "another moor-vmd holds %s", path);
        return moor_error_set(err, -e, "cannot lock %s: %s", path, strerror(e));
    }
    /* the holder's pid, for people; the lock is the flock, not the text */
    if (ftruncate(fd, 0) == 0)
        dprintf(fd, "%ld\n", (long)getpid());
    return fd;
}

/* ---- stop ------------------------------------------------------------------ */

static pthread_mutex_t stop_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cond = PTHREAD_COND_INITIALIZER;
static int stop_signal; /* guarded by stop_lock */

static void on_signal(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct vmd *vmd = opaque;
    struct signalfd_siginfo si;

    (void)loop;
    (void)id;
    (void)revents;
    if (read(fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
        return;
    /* relaxed: a hint for long ops; the teardown is ordered by stop_lock. */
    atomic_store_explicit(&vmd->stopping, true, memory_order_relaxed);
    pthread_mutex_lock(&stop_lock);
    stop_signal = (int)si.ssi_signo;
    pthread_cond_signal(&stop_cond);
    pthread_mutex_unlock(&stop_lock);
}

static int wait_for_stop(void)
{
    pthread_mutex_lock(&stop_lock);
    while (!stop_signal)
        pthread_cond_wait(&stop_cond, &stop_lock);
    int sig = stop_signal;
    pthread_mutex_unlock(&stop_lock);
    return sig;
}

/* ---- the daemon -------------------------------------------------------------- */

struct daemon_state {
    struct vmd vmd;
    int sigfd;
    int lock_fd; /* take_lock's, closed last */
    uint64_t sig_id;
    bool domains_loaded;
};

static void teardown(struct daemon_state *d)
{
    struct vmd *vmd = &d->vmd;

    if (vmd->http)
        vmd_http_stop_accepting(vmd->http);
    vmd_pool_drain(vmd->pool);
    vmd_http_free(vmd->http);
    vmd->http = NULL;
    vmd_pool_free(vmd->pool);
    vmd->pool = NULL;
    if (d->domains_loaded)
        vmd_domains_shutdown(vmd);
    if (d->domains_loaded)
        vmd_longjobs_drain(vmd); /* job threads hold the loop's monitors: before the loop stops */
    vmd_images_shutdown(vmd);
    if (d->sig_id)
        moor_loop_remove_sync(vmd->loop, d->sig_id);
    if (vmd->loop)
        moor_loop_thread_stop(vmd->loop);
    if (d->sigfd >= 0)
        close(d->sigfd);
    vmd_events_free(vmd->events);
    moor_clear(&vmd->domains);
    moor_clear(&vmd->images);
    moor_clear(&vmd->loop);
    options_clear(&vmd->opt);
    if (d->lock_fd >= 0)
        close(d->lock_fd);
}

static int setup(struct daemon_state *d, const sigset_t *sigs, moor_error *err)
{
    struct vmd *vmd = &d->vmd;
    struct timespec now;
    int rc;

    clock_gettime(CLOCK_MONOTONIC, &now);
    vmd->started_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    if ((rc = make_dirs(vmd->opt.state_dir, 0700)) < 0 ||
        (rc = make_dirs(vmd->opt.runtime_dir, 0700)) < 0 ||
        (rc = make_dirs(vmd->opt.log_dir, 0700)) < 0)
        return moor_error_set(err, rc, "cannot create the daemon's directories: %s", strerror(-rc));
    if ((d->lock_fd = take_lock(vmd->opt.runtime_dir, err)) < 0)
        return d->lock_fd;
    if (!(vmd->loop = moor_loop_new(err)))
        return err->code;
    if ((rc = moor_loop_thread_start(vmd->loop, err)) < 0)
        return rc;
    if (!(vmd->domains = moor_registry_new(err)))
        return err->code;
    if (!(vmd->events = vmd_events_new(0)))
        return moor_error_set(err, -ENOMEM, "no memory for the event bus");
    d->sigfd = signalfd(-1, sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    if (d->sigfd < 0)
        return moor_error_set(err, -errno, "signalfd: %s", strerror(errno));
    rc = moor_loop_add_fd(vmd->loop, d->sigfd, MOOR_LOOP_IN, on_signal, vmd, NULL, &d->sig_id, err);
    if (rc < 0)
        return rc;
    if (!(vmd->images = moor_registry_new(err)))
        return err->code;
    if ((rc = vmd_images_load(vmd, err)) < 0) /* before the domains: they name images */
        return rc;
    if ((rc = vmd_domains_load(vmd, err)) < 0)
        return rc;
    d->domains_loaded = true;
    if (!(vmd->pool =
              vmd_pool_new(vmd->opt.workers, vmd->opt.domain_workers, vmd->opt.queue_max, err)))
        return err->code;
    if (!vmd_http_new(vmd, vmd->opt.socket_path, err)) /* sets vmd->http */
        return err->code;
    return 0;
}

int main(int argc, char **argv)
{
    struct daemon_state d = {.sigfd = -1, .lock_fd = -1};
    moor_error err = MOOR_ERROR_INIT;
    sigset_t sigs;

    int rc = parse_args(argc, argv, &d.vmd.opt);
    if (rc != 0) {
        options_clear(&d.vmd.opt);
        return rc > 0 ? 0 : 2;
    }
    vmd_log_setup(d.vmd.opt.log_format);
    /* Every thread is created after this, so all inherit the mask and the
     * signals reach only the signalfd. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    rc = setup(&d, &sigs, &err);
    if (rc < 0) {
        vmd_log(VMD_LOG_ERR, NULL, NULL, "cannot start: %s", moor_error_message(&err));
        teardown(&d);
        return 1;
    }
    vmd_log(VMD_LOG_NOTICE, NULL, NULL, "moor-vmd %s serving %s with %u workers", VMD_VERSION,
            d.vmd.opt.socket_path, d.vmd.opt.workers);
    int sig = wait_for_stop();
    vmd_log(VMD_LOG_NOTICE, NULL, NULL, "%s: stopping (running domains keep running)",
            strsignal(sig));
    teardown(&d);
    size_t live = moor_census_total();
    if (live) {
        vmd_log(VMD_LOG_ERR, NULL, NULL, "%zu objects still alive at exit", live);
        return 1;
    }
    return 0;
}
