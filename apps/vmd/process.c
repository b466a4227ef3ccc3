/* SPDX-License-Identifier: MIT */
/*
 * process.c - QEMU's process: argv, spawn, pidfd, /proc.
 *
 * Spawning. Everything the child needs is prepared before fork (the argv,
 * the log fd, /dev/null, a close-on-exec status pipe), because between
 * fork and exec a multi-threaded parent's child may only make
 * async-signal-safe calls. The child moves its fds to 0..3 (through fds
 * above 10, so no source is overwritten before it is copied), closes the
 * rest, starts a new session (the daemon's death, or a signal to its
 * process group, never reaches QEMU), resets its signal mask and SIGPIPE
 * and execs. If exec fails the child writes errno to the pipe; the parent
 * reads either that or end-of-file (exec worked: the pipe closed on exec).
 */
#define _GNU_SOURCE
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "image.h"

#define ARGV_MAX (40 + VMD_EXTRA_ARGS_MAX + 4 * VMD_DISKS_MAX)

void vmd_process_argv_free(char **argv)
{
    if (!argv)
        return;
    for (char **p = argv; *p; p++)
        free(*p);
    free(argv);
}

/* The emulator's path: as given if absolute, else the first executable
 * match on PATH. Ownership: *@out is the caller's. */
static int resolve_emulator(const char *name, char **out, moor_error *err)
{
    if (name[0] == '/')
        return (*out = strdup(name)) ? 0 : moor_error_set(err, -ENOMEM, "out of memory");
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t len = end ? (size_t)(end - path) : strlen(path);
        char buf[PATH_MAX];
        if (len > 0 &&
            (size_t)snprintf(buf, sizeof(buf), "%.*s/%s", (int)len, path, name) < sizeof(buf)) {
            if (access(buf, X_OK) == 0)
                return (*out = strdup(buf)) ? 0 : moor_error_set(err, -ENOMEM, "out of memory");
        }
        path += len + (end ? 1 : 0);
    }
    return moor_error_set(err, -ENOENT, "emulator '%s' not found on PATH", name);
}

static const char *accel_for(enum vmd_accel a)
{
    if (a == VMD_ACCEL_KVM)
        return "kvm";
    if (a == VMD_ACCEL_TCG)
        return "tcg";
    return access("/dev/kvm", R_OK | W_OK) == 0 ? "kvm" : "tcg";
}

/* Append a printf-formatted argument. */
__attribute__((format(printf, 3, 4))) static int add(char **argv, unsigned *n, const char *fmt, ...)
{
    va_list ap;
    char *s;

    if (*n + 1 >= ARGV_MAX)
        return -E2BIG;
    va_start(ap, fmt);
    int rc = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (rc < 0)
        return -ENOMEM;
    argv[(*n)++] = s;
    return 0;
}

static int fill_argv(const struct vmd_process_spec *spec, char **argv, unsigned *n)
{
    const struct vmd_domain_config *c = spec->cfg;
    int rc = 0;

    rc = rc ?: add(argv, n, "-S");
    rc = rc ?: add(argv, n, "-nodefaults");
    rc = rc ?: add(argv, n, "-no-user-config");
    rc = rc ?: add(argv, n, "-display");
    rc = rc ?: add(argv, n, "none");
    rc = rc ?: add(argv, n, "-name");
    rc = rc ?: add(argv, n, "%s", c->name);
    rc = rc ?: add(argv, n, "-machine");
    rc =
        rc ?: add(argv, n, "%s,accel=%s", vmd_config_machine_name(c->machine), accel_for(c->accel));
    rc = rc ?: add(argv, n, "-m");
    rc = rc ?: add(argv, n, "%" PRIu64, c->memory_mib);
    rc = rc ?: add(argv, n, "-smp");
    rc = rc ?: add(argv, n, "%u", c->vcpus);
    rc = rc ?: add(argv, n, "-pidfile");
    rc = rc ?: add(argv, n, "%s", spec->pidfile);
    /* -runas changes user after the sandbox is installed: with
     * elevateprivileges=deny its setgid/setuid would kill QEMU (SIGSYS).
     * Once changed, QEMU has no privilege left to elevate to. */
    rc = rc ?: add(argv, n, "-sandbox");
    rc = rc
             ?: add(argv, n, "on,obsolete=deny,%sspawn=deny,resourcecontrol=deny",
                    spec->runas ? "" : "elevateprivileges=deny,");
    if (spec->runas) {
        rc = rc ?: add(argv, n, "-runas");
        rc = rc ?: add(argv, n, "%s", spec->runas);
    }
    rc = rc ?: add(argv, n, "-chardev");
    rc = rc ?: add(argv, n, "socket,id=qmp,fd=%d,server=on,wait=off", VMD_PROCESS_QMP_FD);
    rc = rc ?: add(argv, n, "-mon");
    rc = rc ?: add(argv, n, "chardev=qmp,mode=control");
    if (spec->incoming_defer) {
        rc = rc ?: add(argv, n, "-incoming");
        rc = rc ?: add(argv, n, "defer");
    }
    for (unsigned i = 0; rc == 0 && i < c->n_disks && spec->disks; i++) {
        char *blockdev = NULL, *device = NULL;

        rc = vmd_disk_args(spec->disks, c, i, spec->opt, &blockdev, &device);
        rc = rc ?: add(argv, n, "-blockdev");
        rc = rc ?: add(argv, n, "%s", blockdev);
        rc = rc ?: add(argv, n, "-device");
        rc = rc ?: add(argv, n, "%s", device);
        free(blockdev);
        free(device);
    }
    for (unsigned i = 0; i < c->n_extra_args; i++)
        rc = rc ?: add(argv, n, "%s", c->extra_args[i]);
    return rc;
}

int vmd_process_argv(const struct vmd_process_spec *spec, char ***out, moor_error *err)
{
    char **argv = calloc(ARGV_MAX, sizeof(*argv));
    unsigned n = 1;

    if (!argv)
        return moor_error_set(err, -ENOMEM, "out of memory");
    int rc = resolve_emulator(spec->cfg->emulator, &argv[0], err);
    if (rc == 0 && (rc = fill_argv(spec, argv, &n)) < 0)
        moor_error_set(err, rc, "cannot build QEMU's command line: %s", strerror(-rc));
    if (rc < 0) {
        vmd_process_argv_free(argv);
        return rc;
    }
    *out = argv;
    return 0;
}

static int unix_address(const char *path, struct sockaddr_un *sa, moor_error *err)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path))
        return moor_error_set(err, -ENAMETOOLONG, "socket path too long: %s", path);
    strcpy(sa->sun_path, path);
    return 0;
}

/* A UNIX stream socket on @path: bound and listening, or connected. */
static int unix_socket(const char *path, bool server, int *out, moor_error *err)
{
    struct sockaddr_un sa;
    int rc = unix_address(path, &sa, err);

    if (rc < 0)
        return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return moor_error_set(err, -errno, "socket: %s", strerror(errno));
    bool ok = server ? bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 1) == 0
                     : connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    if (!ok) {
        rc = moor_error_set(err, -errno, "cannot %s %s: %s", server ? "listen on" : "connect to",
                            path, strerror(errno));
        close(fd);
        return rc;
    }
    *out = fd;
    return 0;
}

int vmd_process_listen(const char *path, int *out, moor_error *err)
{
    return unix_socket(path, true, out, err);
}

int vmd_process_connect(const char *path, int *out, moor_error *err)
{
    return unix_socket(path, false, out, err);
}

/* In the child: async-signal-safe calls only. */
__attribute__((noreturn)) static void child(char *const *argv, int null_fd, int log_fd, int qmp_fd,
                                            int status_fd, const int go[2])
{
    char c;
    ssize_t n;

    /* Wait for the parent's go: it has recorded our pid first. Its end of
     * file (the daemon died, or refused us) means exit without exec. */
    close(go[1]);
    do
        n = read(go[0], &c, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        _exit(127);
    close(go[0]);
    int src[4] = {null_fd, log_fd, log_fd, qmp_fd};
    int high[4];
    sigset_t all;

    for (int i = 0; i < 4; i++)
        if ((high[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 10)) < 0)
            goto fail;
    int st = fcntl(status_fd, F_DUPFD_CLOEXEC, 10);
    if (st < 0)
        goto fail;
    status_fd = st;
    for (int i = 0; i < 4; i++)
        if (dup2(high[i], i) < 0) /* dup2 clears close-on-exec on the copy */
            goto fail;
    for (int fd = 4; fd < 10; fd++)
        close(fd);
    for (int i = 0; i < 4; i++)
        close(high[i]);
    /* Everything from 10 up but the status pipe (close-on-exec). */
    if ((status_fd > 10 && close_range(10, (unsigned)status_fd - 1, 0) < 0) ||
        close_range((unsigned)status_fd + 1, ~0u, 0) < 0)
        goto fail;
    if (setsid() < 0)
        goto fail;
    /* Dispositions the daemon set (ignored SIGPIPE, say) must not leak
     * into QEMU; handlers are reset by exec anyway. */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL); /* fails harmlessly for reserved ones */
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    execv(argv[0], argv);
fail:;
    int e = errno;
    ssize_t unused = write(status_fd, &e, sizeof(e));
    (void)unused;
    _exit(127);
}

/* The child's exec result: 0 (exec'd) or its errno, read from @fd. */
static int exec_result(int fd)
{
    int e = 0;
    ssize_t n;

    do
        n = read(fd, &e, sizeof(e));
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof(e) ? e : 0;
}

/* Let the child exec (one byte on @go) once @spawned accepted it; or not
 * (close @go unwritten: the child exits) and reap it. Returns @spawned's. */
static int release_child(pid_t p, int go, int (*spawned)(pid_t, void *, moor_error *), void *opaque,
                         moor_error *err)
{
    int rc = spawned ? spawned(p, opaque, err) : 0;
    if (rc == 0 && write(go, "g", 1) != 1)
        rc = moor_error_set(err, -errno, "cannot release QEMU: %s", strerror(errno));
    close(go);
    if (rc < 0)
        while (waitpid(p, NULL, 0) < 0 && errno == EINTR)
            ;
    return rc;
}

int vmd_process_spawn(char *const *argv, const char *log_path, int qmp_fd,
                      int (*spawned)(pid_t pid, void *opaque, moor_error *err), void *opaque,
                      pid_t *pid, moor_error *err)
{
    int pfd[2] = {-1, -1}, go[2] = {-1, -1};
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0)
        return moor_error_set(err, -errno, "cannot open %s: %s", log_path, strerror(errno));
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0 || pipe2(pfd, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0) {
        int rc = moor_error_set(err, -errno, "cannot prepare QEMU's fds: %s", strerror(errno));
        int fds[] = {log_fd, null_fd, pfd[0], pfd[1], go[0], go[1]};
        for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
            if (fds[i] >= 0)
                close(fds[i]);
        return rc;
    }
    pid_t p = fork();
    if (p == 0)
        child(argv, null_fd, log_fd, qmp_fd, pfd[1], go);
    int fork_errno = errno;
    close(pfd[1]);
    close(go[0]);
    close(log_fd);
    close(null_fd);
    int rc = 0;
    if (p < 0) {
        close(go[1]);
        rc = moor_error_set(err, -fork_errno, "fork: %s", strerror(fork_errno));
    } else if ((rc = release_child(p, go[1], spawned, opaque, err)) == 0) {
        int e = exec_result(pfd[0]);
        if (e) {
            rc = moor_error_set(err, -e, "cannot run %s: %s", argv[0], strerror(e));
            while (waitpid(p, NULL, 0) < 0 && errno == EINTR)
                ;
        } else {
            *pid = p;
        }
    }
    close(pfd[0]);
    return rc;
}

int vmd_process_pidfd(pid_t pid, moor_error *err)
{
    int fd = pidfd_open(pid, 0);
    if (fd < 0)
        return moor_error_set(err, -errno, "pidfd_open(%d): %s", (int)pid, strerror(errno));
    /* pidfd_open's fds are close-on-exec already. */
    return fd;
}

int vmd_process_signal(int pidfd, int sig)
{
    return pidfd_send_signal(pidfd, sig, NULL, 0) < 0 ? -errno : 0;
}

bool vmd_process_wait_exit(int pidfd, unsigned timeout_ms)
{
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    struct timespec start, now;

    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t spent =
            (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        int left = spent >= timeout_ms ? 0 : (int)(timeout_ms - spent);
        int n = poll(&p, 1, left);
        if (n > 0)
            return true;
        if (n == 0 || errno != EINTR)
            return false;
    }
}

static int read_file(const char *path, char *buf, size_t size, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? -ESRCH : -errno;
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    *len = got;
    return 0;
}

int vmd_process_stat(pid_t pid, char *state, uint64_t *start_time)
{
    char path[64], buf[1024];
    size_t len = 0;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int rc = read_file(path, buf, sizeof(buf) - 1, &len);
    if (rc < 0)
        return rc;
    buf[len] = '\0';
    /* "pid (comm) S ppid ..." - comm may hold anything, so start after the
     * last ')'. Field 3 is the state, field 22 the start time. */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || !p[2])
        return -EIO;
    p += 2;
    char st = *p;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return -EIO;
        p++;
    }
    char *end;
    errno = 0;
    unsigned long long t = strtoull(p, &end, 10);
    if (errno || end == p)
        return -EIO;
    if (state)
        *state = st;
    if (start_time)
        *start_time = t;
    return 0;
}

/* Whether @buf[0..@n) continues @argv's strings (each with its NUL) from
 * the position *@a, *@at; advances the position. */
static bool cmdline_step(const char *buf, size_t n, char *const **a, size_t *at)
{
    for (size_t i = 0; i < n; i++) {
        if (!**a || buf[i] != (**a)[*at])
            return false;
        if (buf[i] == '\0') {
            (*a)++;
            *at = 0;
        } else {
            (*at)++;
        }
    }
    return true;
}

/* Compared while reading, so a command line of any length is checked
 * whole (extra_args may make it far longer than any fixed buffer). */
bool vmd_process_cmdline_is(pid_t pid, char *const *argv)
{
    char path[64], buf[4096];
    char *const *a = argv;
    size_t at = 0;
    bool same = true;

    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            same = same && n == 0;
            break;
        }
        if (!(same = cmdline_step(buf, (size_t)n, &a, &at)))
            break;
    }
    close(fd);
    return same && !*a && at == 0;
}

/* ---- run and capture (qemu-img) ------------------------------------------------ */

struct capture {
    int fd;
    char *buf;
    size_t size, used;
};

/* Read what is there into @c (the rest is dropped once full); -1 at EOF. */
static int capture_read(struct capture *c)
{
    char scratch[4096];
    char *dst = c->buf && c->used + 1 < c->size ? c->buf + c->used : scratch;
    size_t room = dst == scratch ? sizeof(scratch) : c->size - c->used - 1;
    ssize_t n = read(c->fd, dst, room);

    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 0;
    if (n <= 0)
        return -1;
    if (dst != scratch) {
        c->used += (size_t)n;
        c->buf[c->used] = '\0';
    }
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Drain both pipes until EOF on both or the deadline. */
static bool capture_all(struct capture *c, int64_t deadline)
{
    while (c[0].fd >= 0 || c[1].fd >= 0) {
        struct pollfd p[2] = {{.fd = c[0].fd, .events = POLLIN}, {.fd = c[1].fd, .events = POLLIN}};
        int64_t left = deadline - now_ms();

        if (left <= 0)
            return false;
        if (poll(p, 2, (int)left) < 0 && errno != EINTR)
            return false;
        for (int i = 0; i < 2; i++) {
            if (c[i].fd >= 0 && p[i].revents && capture_read(&c[i]) < 0) {
                close(c[i].fd);
                c[i].fd = -1;
            }
        }
    }
    return true;
}

static int spawn_captured(char *const *argv, int outfd, int errfd, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    int rc;

    if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
        return -rc;
    rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    rc = rc ?: posix_spawn_file_actions_adddup2(&fa, outfd, 1);
    rc = rc ?: posix_spawn_file_actions_adddup2(&fa, errfd, 2);
    rc = rc ?: posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    rc = rc ?: posix_spawnp(pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return -rc;
}

int vmd_process_run(char *const *argv, char *out, size_t out_size, char *errout, size_t errout_size,
                    unsigned timeout_ms, moor_error *err)
{
    int po[2] = {-1, -1}, pe[2] = {-1, -1}, status = 0;
    pid_t pid;

    if (out && out_size)
        out[0] = '\0';
    if (errout && errout_size)
        errout[0] = '\0';
    if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0) {
        int e = errno;
        for (int i = 0; i < 2; i++) {
            if (po[i] >= 0)
                close(po[i]);
        }
        return moor_error_set(err, -e, "%s: pipe: %s", argv[0], strerror(e));
    }
    int rc = spawn_captured(argv, po[1], pe[1], &pid);
    close(po[1]);
    close(pe[1]);
    if (rc < 0) {
        close(po[0]);
        close(pe[0]);
        return moor_error_set(err, rc, "cannot run %s: %s", argv[0], strerror(-rc));
    }
    struct capture c[2] = {{po[0], out, out_size, 0}, {pe[0], errout, errout_size, 0}};
    bool done = capture_all(c, now_ms() + timeout_ms);
    for (int i = 0; i < 2; i++)
        if (c[i].fd >= 0)
            close(c[i].fd);
    if (!done)
        kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!done)
        return moor_error_set(err, -ETIMEDOUT, "%s did not finish in %u ms", argv[0], timeout_ms);
    if (WIFSIGNALED(status))
        return moor_error_set(err, -EINTR, "%s was killed by signal %d", argv[0], WTERMSIG(status));
    if (WEXITSTATUS(status) == 127)
        return moor_error_set(err, -ENOENT, "cannot run %s (not found on PATH?)", argv[0]);
    return WEXITSTATUS(status);
}
