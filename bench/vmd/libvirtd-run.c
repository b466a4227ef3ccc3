/* SPDX-License-Identifier: MIT */
/*
 * libvirtd-run.c - see libvirtd-run.h. Every program is run with fork and
 * execv of an argv array; nothing goes through a shell.
 */
#define _GNU_SOURCE
#include "libvirtd-run.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define QEMU_CONF       "/etc/libvirt/qemu.conf"
#define LOG_DIR         "/var/log/libvirt"
#define VIRTLOGD        "/usr/sbin/virtlogd"
#define LIBVIRTD        "/usr/sbin/libvirtd"
#define VIRTLOGD_SOCK   "/run/libvirt/virtlogd-sock"
#define STOP_GRACE_MS   15000
#define REPLY_WAIT_MS   40000
#define QEMU_USER_GROUP "libvirt-qemu"

enum { CMD_KILL = 'K', CMD_START = 'L', CMD_QUIT = 'Q' };

struct reply {
    int rc;
    pid_t libvirtd, virtlogd;
    char msg[240];
};

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void nap_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- configuration ------------------------------------------------------ */

/* Run @argv (argv[0] an absolute path) and wait; 0 when it exited 0. */
static int run_argv(const char *const *argv, moor_error *err)
{
    int status;
    pid_t pid = fork();

    if (pid < 0)
        return moor_error_set(err, -errno, "fork: %s", strerror(errno));
    if (pid == 0) {
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return moor_error_set(err, -errno, "waitpid: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return moor_error_set(err, -ECHILD, "%s failed (wait status %#x)", argv[0], status);
    return 0;
}

static int ensure_user_group(moor_error *err)
{
    static const char *const groupadd[] = {"/usr/sbin/groupadd", "--system", QEMU_USER_GROUP, NULL};
    static const char *const useradd[] = {"/usr/sbin/useradd",
                                          "--system",
                                          "--no-create-home",
                                          "-g",
                                          QEMU_USER_GROUP,
                                          "-d",
                                          "/var/lib/libvirt",
                                          "-s",
                                          "/usr/sbin/nologin",
                                          QEMU_USER_GROUP,
                                          NULL};
    int rc;

    if (!getgrnam(QEMU_USER_GROUP) && (rc = run_argv(groupadd, err)) < 0)
        return rc;
    if (!getpwnam(QEMU_USER_GROUP) && (rc = run_argv(useradd, err)) < 0)
        return rc;
    return 0;
}

/* The value of an uncommented `@key = ...` line of @f, trimmed, in @val
 * (empty when the key is not set). */
static void conf_value(FILE *f, const char *key, char *val, size_t len)
{
    char line[512];
    size_t kl = strlen(key);

    val[0] = '\0';
    rewind(f);
    while (fgets(line, sizeof(line), f)) {
        char *p = line, *end;

        while (isspace((unsigned char)*p))
            p++;
        if (strncmp(p, key, kl) != 0)
            continue;
        p += kl;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p++ != '=')
            continue;
        while (*p == ' ' || *p == '\t')
            p++;
        end = p + strlen(p);
        while (end > p && isspace((unsigned char)end[-1]))
            *--end = '\0';
        snprintf(val, len, "%s", p);
    }
}

/* `user = "root"` and `group = "root"` in qemu.conf: appended when unset. */
static int ensure_qemu_conf(moor_error *err)
{
    static const char *const keys[] = {"user", "group"};
    FILE *f = fopen(QEMU_CONF, "a+e");
    int rc = 0;

    if (!f)
        return moor_error_set(err, -errno, "open %s: %s", QEMU_CONF, strerror(errno));
    for (int i = 0; i < 2 && !rc; i++) {
        char val[256];

        conf_value(f, keys[i], val, sizeof(val));
        if (!val[0]) {
            if (fprintf(f, "# moor-vmd-bench: QEMU runs as root here (no systemd)\n%s = \"root\"\n",
                        keys[i]) < 0 ||
                fflush(f) != 0)
                rc = moor_error_set(err, -EIO, "append to %s failed", QEMU_CONF);
        } else if (strcmp(val, "\"root\"") != 0) {
            rc = moor_error_set(err, -EEXIST,
                                "%s sets %s = %s; the benchmark needs \"root\" and does not "
                                "change a setting it did not make",
                                QEMU_CONF, keys[i], val);
        }
    }
    fclose(f);
    return rc;
}

/* The live pid in @pidfile whose comm is @comm, or 0. */
static pid_t running_from_pidfile(const char *pidfile, const char *comm)
{
    char path[64], buf[64] = "";
    long pid = 0;
    FILE *f = fopen(pidfile, "re");

    if (!f)
        return 0;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
    fclose(f);
    if (pid <= 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
    f = fopen(path, "re");
    if (!f)
        return 0;
    if (!fgets(buf, sizeof(buf), f))
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
    return strcmp(buf, comm) == 0 ? (pid_t)pid : 0;
}

int lvd_setup(moor_error *err)
{
    pid_t other;
    int rc;

    if (geteuid() != 0)
        return moor_error_set(err, -EPERM,
                              "libvirtd's qemu:///system needs root: run the benchmark as root");
    if ((other = running_from_pidfile("/run/libvirtd.pid", "libvirtd")) ||
        (other = running_from_pidfile("/run/virtlogd.pid", "virtlogd")))
        return moor_error_set(err, -EALREADY,
                              "a libvirtd or virtlogd is already running (pid %d): the benchmark "
                              "starts and stops its own; stop that one first",
                              (int)other);
    if ((rc = ensure_user_group(err)) < 0)
        return rc;
    if (mkdir(LOG_DIR, 0700) < 0 && errno != EEXIST)
        return moor_error_set(err, -errno, "mkdir %s: %s", LOG_DIR, strerror(errno));
    return ensure_qemu_conf(err);
}

/* ---- the runner (a child process) --------------------------------------- */

struct runner_state {
    pid_t libvirtd, virtlogd;
    char log_dir[PATH_MAX];
    sigset_t old_mask;
};

/* fork + exec @argv in the foreground, stdout/stderr appended to
 * <log_dir>/@log. Never through a shell. */
static pid_t spawn(struct runner_state *st, const char *const *argv, const char *log)
{
    char path[PATH_MAX + 32];
    pid_t pid;

    snprintf(path, sizeof(path), "%s/%s", st->log_dir, log);
    pid = fork();
    if (pid != 0)
        return pid;
    sigprocmask(SIG_SETMASK, &st->old_mask, NULL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int out = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);

    if (out >= 0) {
        dup2(out, STDOUT_FILENO);
        dup2(out, STDERR_FILENO);
    }
    if (in >= 0)
        dup2(in, STDIN_FILENO);
    if (chdir("/") < 0)
        _exit(126);
    execv(argv[0], (char *const *)argv);
    dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* Reap every exited child at once; forget the daemons that went. */
static void reap_all(struct runner_state *st)
{
    pid_t p;

    while ((p = waitpid(-1, NULL, WNOHANG)) > 0) {
        if (p == st->libvirtd)
            st->libvirtd = 0;
        if (p == st->virtlogd)
            st->virtlogd = 0;
    }
}

static bool sock_accepts(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok;

    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static void start_daemons(struct runner_state *st, struct reply *rep)
{
    static const char *const virtlogd[] = {VIRTLOGD, NULL};
    static const char *const libvirtd[] = {LIBVIRTD, NULL};
    uint64_t deadline = now_ms() + 10000;

    st->virtlogd = spawn(st, virtlogd, "virtlogd.log");
    if (st->virtlogd < 0) {
        st->virtlogd = 0;
        rep->rc = -errno;
        snprintf(rep->msg, sizeof(rep->msg), "fork: %s", strerror(errno));
        return;
    }
    while (!sock_accepts(VIRTLOGD_SOCK)) {
        reap_all(st);
        if (!st->virtlogd || now_ms() > deadline) {
            rep->rc = st->virtlogd ? -ETIMEDOUT : -ECHILD;
            snprintf(rep->msg, sizeof(rep->msg), "virtlogd %s (log: %.100s/virtlogd.log)",
                     st->virtlogd ? "never accepted on " VIRTLOGD_SOCK : "exited at once",
                     st->log_dir);
            return;
        }
        nap_ms(5);
    }
    st->libvirtd = spawn(st, libvirtd, "libvirtd.log");
    if (st->libvirtd < 0) {
        st->libvirtd = 0;
        rep->rc = -errno;
        snprintf(rep->msg, sizeof(rep->msg), "fork: %s", strerror(errno));
    }
}

/* Wait until *@pid (kept up to date by reap_all) is 0; false on timeout. */
static bool wait_reaped(struct runner_state *st, const pid_t *pid, unsigned ms)
{
    uint64_t deadline = now_ms() + ms;

    for (;;) {
        reap_all(st);
        if (!*pid)
            return true;
        if (now_ms() > deadline)
            return false;
        nap_ms(2);
    }
}

/* SIGTERM, then SIGKILL after the grace; false when SIGKILL was needed. */
static bool stop_one(struct runner_state *st, pid_t *pid)
{
    if (!*pid)
        return true;
    kill(*pid, SIGTERM);
    if (wait_reaped(st, pid, STOP_GRACE_MS))
        return true;
    kill(*pid, SIGKILL);
    wait_reaped(st, pid, STOP_GRACE_MS);
    return false;
}

/* SIGKILL every process whose parent is us (QEMUs libvirtd left), reap them;
 * the count of those killed. */
static int kill_children(struct runner_state *st)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    if (!d)
        return 0;
    while ((e = readdir(d))) {
        char path[64], buf[512], *p;
        long pid = strtol(e->d_name, NULL, 10), ppid = 0;
        FILE *f;

        if (pid <= 0)
            continue;
        snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
        if (!(f = fopen(path, "re")))
            continue;
        buf[fread(buf, 1, sizeof(buf) - 1, f)] = '\0';
        fclose(f);
        p = strrchr(buf, ')');
        if (p && sscanf(p + 2, "%*c %ld", &ppid) == 1 && ppid == (long)getpid() &&
            kill((pid_t)pid, SIGKILL) == 0)
            n++;
    }
    closedir(d);
    for (uint64_t deadline = now_ms() + 5000; now_ms() < deadline;) {
        if (waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD)
            break;
        nap_ms(2);
    }
    (void)st;
    return n;
}

static void do_quit(struct runner_state *st, struct reply *rep)
{
    bool lv = stop_one(st, &st->libvirtd), lg = stop_one(st, &st->virtlogd);
    int left = kill_children(st);

    if (!lv || !lg || left) {
        rep->rc = lv && lg ? -ECHILD : -ETIMEDOUT;
        snprintf(rep->msg, sizeof(rep->msg),
                 "%s%s%d process(es) of libvirtd's still running were killed",
                 lv ? "" : "libvirtd needed SIGKILL; ", lg ? "" : "virtlogd needed SIGKILL; ",
                 left);
    }
}

static void do_command(struct runner_state *st, char cmd, struct reply *rep)
{
    static const char *const libvirtd[] = {LIBVIRTD, NULL};

    switch (cmd) {
    case CMD_KILL:
        if (!st->libvirtd) {
            rep->rc = -ESRCH;
            snprintf(rep->msg, sizeof(rep->msg), "libvirtd is not running");
            return;
        }
        kill(st->libvirtd, SIGKILL);
        wait_reaped(st, &st->libvirtd, STOP_GRACE_MS);
        return;
    case CMD_START:
        if (st->libvirtd) {
            rep->rc = -EALREADY;
            snprintf(rep->msg, sizeof(rep->msg), "libvirtd already running (pid %d)",
                     (int)st->libvirtd);
            return;
        }
        if ((st->libvirtd = spawn(st, libvirtd, "libvirtd.log")) < 0) {
            st->libvirtd = 0;
            rep->rc = -errno;
            snprintf(rep->msg, sizeof(rep->msg), "fork: %s", strerror(errno));
        }
        return;
    default:
        do_quit(st, rep);
        return;
    }
}

static void send_reply(int fd, struct runner_state *st, struct reply *rep)
{
    rep->libvirtd = st->libvirtd;
    rep->virtlogd = st->virtlogd;
    if (send(fd, rep, sizeof(*rep), MSG_NOSIGNAL) < 0)
        rep->rc = -EPIPE;
}

static __attribute__((noreturn)) void runner_main(int fd, const char *log_dir)
{
    struct runner_state st = {0};
    struct reply rep = {0};
    sigset_t chld;
    int sfd;

    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_SET_NAME, "lvd-runner");
    snprintf(st.log_dir, sizeof(st.log_dir), "%s", log_dir);
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &st.old_mask);
    sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    start_daemons(&st, &rep);
    send_reply(fd, &st, &rep);
    for (;;) {
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        struct signalfd_siginfo si;
        char cmd = CMD_QUIT;

        if (poll(p, 2, sfd < 0 ? 100 : -1) < 0 && errno != EINTR)
            break;
        while (sfd >= 0 && read(sfd, &si, sizeof(si)) == sizeof(si))
            ;
        reap_all(&st);
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (recv(fd, &cmd, 1, 0) != 1)
            cmd = CMD_QUIT; /* the benchmark is gone: clean up */
        memset(&rep, 0, sizeof(rep));
        do_command(&st, cmd, &rep);
        send_reply(fd, &st, &rep);
        if (cmd == CMD_QUIT)
            break;
    }
    do_quit(&st, &rep);
    _exit(0);
}

/* ---- the benchmark's side ----------------------------------------------- */

static int get_reply(struct lvd_runner *r, moor_error *err)
{
    struct pollfd p = {.fd = r->fd, .events = POLLIN};
    struct reply rep;
    ssize_t n;

    if (poll(&p, 1, REPLY_WAIT_MS) <= 0)
        return moor_error_set(err, -ETIMEDOUT, "the libvirtd runner did not answer in %d ms",
                              REPLY_WAIT_MS);
    n = recv(r->fd, &rep, sizeof(rep), 0);
    if (n != (ssize_t)sizeof(rep))
        return moor_error_set(err, -EPIPE, "the libvirtd runner is gone");
    r->libvirtd = rep.libvirtd;
    r->virtlogd = rep.virtlogd;
    rep.msg[sizeof(rep.msg) - 1] = '\0';
    if (rep.rc < 0)
        return moor_error_set(err, rep.rc, "%s", rep.msg);
    return 0;
}

static int command(struct lvd_runner *r, char cmd, moor_error *err)
{
    if (!r->pid)
        return moor_error_set(err, -EPIPE, "the libvirtd runner is not running");
    if (send(r->fd, &cmd, 1, MSG_NOSIGNAL) != 1)
        return moor_error_set(err, -EPIPE, "the libvirtd runner is gone");
    return get_reply(r, err);
}

int lvd_runner_start(struct lvd_runner *r, const char *log_dir, moor_error *err)
{
    int sv[2], rc;

    memset(r, 0, sizeof(*r));
    r->fd = -1;
    snprintf(r->log_dir, sizeof(r->log_dir), "%s", log_dir);
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return moor_error_set(err, -errno, "socketpair: %s", strerror(errno));
    r->pid = fork();
    if (r->pid < 0) {
        rc = -errno;
        close(sv[0]);
        close(sv[1]);
        r->pid = 0;
        return moor_error_set(err, rc, "fork: %s", strerror(-rc));
    }
    if (r->pid == 0) {
        close(sv[0]);
        runner_main(sv[1], r->log_dir);
    }
    close(sv[1]);
    r->fd = sv[0];
    if ((rc = get_reply(r, err)) < 0) {
        moor_error stop_err = MOOR_ERROR_INIT;

        lvd_runner_stop(r, &stop_err);
    }
    return rc;
}

int lvd_runner_kill_libvirtd(struct lvd_runner *r, moor_error *err)
{
    return command(r, CMD_KILL, err);
}

int lvd_runner_start_libvirtd(struct lvd_runner *r, moor_error *err)
{
    return command(r, CMD_START, err);
}

int lvd_runner_stop(struct lvd_runner *r, moor_error *err)
{
    int rc;

    if (!r->pid)
        return 0;
    rc = command(r, CMD_QUIT, err);
    close(r->fd);
    r->fd = -1;
    if (rc == -ETIMEDOUT || rc == -EPIPE)
        kill(r->pid, SIGKILL); /* the daemons die with it (PR_SET_PDEATHSIG) */
    while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    r->pid = 0;
    r->libvirtd = 0;
    r->virtlogd = 0;
    return rc;
}
