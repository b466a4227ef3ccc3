/* SPDX-License-Identifier: MIT */
/*
 * test-vmctl.c - moor-vmctl against a scripted HTTP server.
 *
 * The daemon is not needed: a thread of this test listens on a UNIX socket,
 * records each request (method, path, body) and answers from a script
 * (status + body, or a stream of lines released one at a time by the
 * test), and at the end against moor-vmd's real HTTP side with in-memory
 * domains (moor-vmd-double, $MOOR_VMD_DOUBLE). moor-vmctl runs as a child process (fork + execve
 * with argv arrays, never a shell), its stdout and stderr captured through pipes; under `meson test
 * --setup valgrind` (MOOR_UNDER_VALGRIND=1) the child runs under memcheck too, and any error or
 * leak changes its exit status.
 *
 * Usage: test-vmctl PATH-TO-moor-vmctl
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pty.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char *vmctl_path;
static char *valgrind_path; /* set when the child runs under memcheck */
static int deadline_ms = 10000;

/* ---- time ------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining(int64_t deadline)
{
    int64_t left = deadline - now_ms();

    return left > 0 ? (int)left : 0;
}

/* ---- the scripted server ---------------------------------------------------- */

struct canned {
    int status;
    const char *body;         /* the whole body (NULL: empty) */
    const char *const *lines; /* or a stream of lines (NULL-terminated), sent as released */
};

struct request {
    char method[16];
    char path[256];
    char *body; /* NULL when the request had none */
};

#define MAX_REQUESTS 4

struct server {
    char dir[32];
    char path[64];
    int lfd;
    int stop[2]; /* written at teardown: wakes the thread from any poll */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct canned reply; /* the answer to every request */
    struct request req[MAX_REQUESTS];
    size_t nreq;
    size_t released; /* stream lines the test has let go */
    size_t sent;     /* stream lines written */
};

/* Wait until @fd is readable or the server stops; false on stop or the deadline. */
static bool wait_readable(struct server *s, int fd, int64_t deadline)
{
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = s->stop[0], .events = POLLIN}};

    while (poll(p, 2, remaining(deadline)) < 0)
        if (errno != EINTR)
            return false;
    return (p[0].revents & (POLLIN | POLLHUP)) && !p[1].revents;
}

/* Read one request: headers to the blank line, then Content-Length bytes. */
static bool read_request(struct server *s, int fd, struct request *r)
{
    char buf[8192], *end = NULL, *cl;
    size_t len = 0, want;
    int64_t deadline = now_ms() + deadline_ms;

    while (!end) {
        ssize_t n;

        if (len + 1 >= sizeof(buf) || !wait_readable(s, fd, deadline))
            return false;
        n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            return false;
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (sscanf(buf, "%15s %255s", r->method, r->path) != 2)
        return false;
    cl = strcasestr(buf, "\r\nContent-Length:");
    want = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
    if (strcasestr(buf, "\r\nExpect: 100-continue"))
        (void)!send(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25, MSG_NOSIGNAL);
    if (!cl)
        return true;
    r->body = calloc(1, want + 1);
    len -= (size_t)(end + 4 - buf);
    memcpy(r->body, end + 4, len < want ? len : want);
    while (len < want) {
        ssize_t n;

        if (!wait_readable(s, fd, deadline))
            return false;
        n = read(fd, r->body + len, want - len);
        if (n <= 0)
            return false;
        len += (size_t)n;
    }
    return true;
}

static void send_all(int fd, const char *text)
{
    size_t len = strlen(text);

    while (len > 0) {
        ssize_t n = send(fd, text, len, MSG_NOSIGNAL);

        if (n <= 0)
            return;
        text += n;
        len -= (size_t)n;
    }
}

/* The stream: each line once the test released it, then hold the
 * connection open until the client goes away or the server stops. */
static void send_stream(struct server *s, int fd, const char *const *lines)
{
    char discard[256];

    send_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                 "Connection: close\r\n\r\n");
    for (size_t i = 0; lines[i]; i++) {
        struct timespec until;

        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += deadline_ms / 1000 + 1;
        pthread_mutex_lock(&s->mu);
        while (s->released <= i)
            if (pthread_cond_timedwait(&s->cond, &s->mu, &until) == ETIMEDOUT)
                break;
        pthread_mutex_unlock(&s->mu);
        send_all(fd, lines[i]);
        send_all(fd, "\n");
        pthread_mutex_lock(&s->mu);
        s->sent = i + 1;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->mu);
    }
    while (wait_readable(s, fd, now_ms() + 4 * deadline_ms) &&
           read(fd, discard, sizeof(discard)) > 0)
        ;
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 409:
        return "Conflict";
    default:
        return "Status";
    }
}

static void serve(struct server *s, int fd)
{
    struct request r = {0};
    struct canned reply;
    char head[256];

    if (!read_request(s, fd, &r)) {
        free(r.body);
        return;
    }
    pthread_mutex_lock(&s->mu);
    reply = s->reply;
    if (s->nreq < MAX_REQUESTS)
        s->req[s->nreq++] = r;
    else
        free(r.body);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    if (reply.lines) {
        send_stream(s, fd, reply.lines);
        return;
    }
    snprintf(head, sizeof(head),
             "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n",
             reply.status, reason(reply.status), reply.body ? strlen(reply.body) : 0);
    send_all(fd, head);
    if (reply.body)
        send_all(fd, reply.body);
}

static void *server_thread(void *opaque)
{
    struct server *s = opaque;

    for (;;) {
        int fd;

        if (!wait_readable(s, s->lfd, now_ms() + 3600 * 1000))
            return NULL;
        fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        serve(s, fd);
        close(fd);
    }
}

static int server_setup(void **state)
{
    struct server *s = calloc(1, sizeof(*s));
    struct sockaddr_un addr = {.sun_family = AF_UNIX};

    assert_non_null(s);
    snprintf(s->dir, sizeof(s->dir), "/tmp/test-vmctl.XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->path, sizeof(s->path), "%s/vmd.sock", s->dir);
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", s->path);
    s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->lfd >= 0);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(listen(s->lfd, 8), 0);
    assert_int_equal(pipe2(s->stop, O_CLOEXEC), 0);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->reply = (struct canned){200, "{}", NULL};
    assert_int_equal(pthread_create(&s->thread, NULL, server_thread, s), 0);
    *state = s;
    return 0;
}

static void server_reset(struct server *s, struct canned reply)
{
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->nreq; i++)
        free(s->req[i].body);
    memset(s->req, 0, sizeof(s->req));
    s->nreq = 0;
    s->released = 0;
    s->sent = 0;
    s->reply = reply;
    pthread_mutex_unlock(&s->mu);
}

static int server_teardown(void **state)
{
    struct server *s = *state;
    char cmd[128];

    assert_int_equal(write(s->stop[1], "x", 1), 1);
    pthread_join(s->thread, NULL);
    server_reset(s, (struct canned){0});
    close(s->lfd);
    close(s->stop[0]);
    close(s->stop[1]);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    unlink(s->path);
    snprintf(cmd, sizeof(cmd), "%s/config.json", s->dir);
    unlink(cmd);
    rmdir(s->dir);
    free(s);
    return 0;
}

/* ---- running moor-vmctl --------------------------------------------------- */

struct proc {
    pid_t pid;
    int out, err;
    char out_buf[16384], err_buf[16384];
    size_t out_len, err_len;
    int status; /* the exit status, or 128 + signal */
};

/* The environment of the child: ours without the variables that choose a
 * socket, plus @extra ("NAME=value" strings, NULL-terminated, may be NULL). */
static char **child_env(const char *const *extra)
{
    size_t n = 0, k = 0;
    char **env;

    while (environ[n])
        n++;
    for (size_t i = 0; extra && extra[i]; i++)
        n++;
    env = calloc(n + 1, sizeof(*env));
    assert_non_null(env);
    for (size_t i = 0; environ[i]; i++)
        if (strncmp(environ[i], "MOOR_VMD_SOCKET=", 16) &&
            strncmp(environ[i], "XDG_RUNTIME_DIR=", 16))
            env[k++] = environ[i];
    for (size_t i = 0; extra && extra[i]; i++)
        env[k++] = (char *)extra[i];
    return env;
}

/* Start moor-vmctl with @args (NULL-terminated); @input goes to its stdin;
 * its stdout is a pipe, or a terminal (a pty) when @tty. */
static void spawn_io(struct proc *p, const char *const *args, const char *input,
                     const char *const *extra_env, bool tty)
{
    const char *argv[48];
    char **env = child_env(extra_env);
    size_t n = 0;
    int out[2], err[2], in[2];

    if (valgrind_path) {
        static const char *const vg[] = {"--quiet", "--error-exitcode=99", "--leak-check=full",
                                         "--show-leak-kinds=definite,indirect,possible",
                                         "--errors-for-leak-kinds=definite,indirect,possible"};

        argv[n++] = valgrind_path;
        for (size_t i = 0; i < sizeof(vg) / sizeof(vg[0]); i++)
            argv[n++] = vg[i];
    }
    argv[n++] = vmctl_path;
    for (size_t i = 0; args[i]; i++) {
        assert_true(n + 2 < sizeof(argv) / sizeof(argv[0]));
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    if (tty) {
        assert_int_equal(openpty(&out[0], &out[1], NULL, NULL, NULL), 0);
        assert_int_equal(fcntl(out[0], F_SETFD, FD_CLOEXEC), 0);
        assert_int_equal(fcntl(out[1], F_SETFD, FD_CLOEXEC), 0);
    } else
        assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    assert_int_equal(pipe2(err, O_CLOEXEC), 0);
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    memset(p, 0, sizeof(*p));
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        /* Only async-signal-safe calls between fork and exec. */
        if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0)
            _exit(127);
        execve(argv[0], (char *const *)argv, env);
        _exit(127);
    }
    free(env);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    if (input)
        assert_int_equal(write(in[1], input, strlen(input)), (ssize_t)strlen(input));
    close(in[1]);
    p->out = out[0];
    p->err = err[0];
}

static void spawn(struct proc *p, const char *const *args, const char *input,
                  const char *const *extra_env)
{
    spawn_io(p, args, input, extra_env, false);
}

/* Read what is ready on the pipes, waiting up to @timeout_ms; false when both are closed. */
static bool pump(struct proc *p, int timeout_ms)
{
    struct pollfd fds[2] = {{.fd = p->out, .events = POLLIN}, {.fd = p->err, .events = POLLIN}};
    char *buf[2] = {p->out_buf, p->err_buf};
    size_t *len[2] = {&p->out_len, &p->err_len};
    int *fd[2] = {&p->out, &p->err};

    if (p->out < 0 && p->err < 0)
        return false;
    if (poll(fds, 2, timeout_ms) <= 0)
        return true;
    for (int i = 0; i < 2; i++) {
        ssize_t n;

        if (!fds[i].revents)
            continue;
        n = read(*fd[i], buf[i] + *len[i], sizeof(p->out_buf) - 1 - *len[i]);
        if (n <= 0) {
            close(*fd[i]);
            *fd[i] = -1;
            continue;
        }
        *len[i] += (size_t)n;
        buf[i][*len[i]] = '\0';
    }
    return true;
}

/* Collect stdout until it contains @text; fails the test after the deadline. */
static void read_until(struct proc *p, const char *text)
{
    int64_t deadline = now_ms() + deadline_ms;

    while (!strstr(p->out_buf, text)) {
        if (!pump(p, remaining(deadline)) || remaining(deadline) == 0) {
            kill(p->pid, SIGKILL);
            fail_msg("moor-vmctl did not print '%s' within %d ms; stdout:\n%s\nstderr:\n%s", text,
                     deadline_ms, p->out_buf, p->err_buf);
        }
    }
}

/* Collect everything and the exit status; fails after the deadline. */
static void finish(struct proc *p)
{
    int64_t deadline = now_ms() + deadline_ms;
    int status;

    while (pump(p, remaining(deadline)))
        if (remaining(deadline) == 0) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, NULL, 0);
            fail_msg("moor-vmctl did not exit within %d ms; stdout:\n%s\nstderr:\n%s", deadline_ms,
                     p->out_buf, p->err_buf);
        }
    assert_int_equal(waitpid(p->pid, &status, 0), p->pid);
    p->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void run_env(struct proc *p, const char *const *args, const char *input,
                    const char *const *env)
{
    spawn(p, args, input, env);
    finish(p);
}

static void run(struct proc *p, const char *const *args)
{
    run_env(p, args, NULL, NULL);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void expect_status(const struct proc *p, int status)
{
    if (p->status != status)
        fail_msg("moor-vmctl exited with %d, expected %d; stdout:\n%s\nstderr:\n%s", p->status,
                 status, p->out_buf, p->err_buf);
}

static size_t requests(struct server *s)
{
    size_t n;

    pthread_mutex_lock(&s->mu);
    n = s->nreq;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---- usage ----------------------------------------------------------------- */

static void test_usage_errors(void **state)
{
    struct server *s = *state;
    static const struct {
        const char *args[6];
        const char *message;
    } cases[] = {
        {{NULL}, "moor-vmctl: missing command"},
        {{"frob"}, "moor-vmctl: unknown command 'frob'"},
        {{"start"}, "moor-vmctl: start: missing ID"},
        {{"start", "--paused"}, "moor-vmctl: start: missing ID"},
        {{"start", "vm1", "vm2"}, "moor-vmctl: start: unexpected argument 'vm2'"},
        {{"list", "--bogus"}, "moor-vmctl: list: unrecognized option '--bogus'"},
        {{"list", "--paused"}, "moor-vmctl: list: unrecognized option '--paused'"},
        {{"--timeout", "soon", "list"}, "moor-vmctl: invalid --timeout 'soon'"},
        {{"shutdown", "--timeout", "-1", "vm1"}, "moor-vmctl: shutdown: invalid --timeout '-1'"},
        {{"state", "--socket"}, "moor-vmctl: state: option '--socket' needs a value"},
        {{"start", "a/b"}, "moor-vmctl: start: invalid domain 'a/b'"},
        {{"start", ".."}, "moor-vmctl: start: invalid domain '..'"},
        {{"qmp", "vm1", "{\"execute\":"}, "moor-vmctl: qmp: not a JSON object"},
        {{"qmp", "vm1", "[1]"}, "moor-vmctl: qmp: not a JSON object"},
        {{"help", "frob"}, "moor-vmctl: help: unknown command 'frob'"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *args[10] = {"--socket", s->path};
        struct proc p;

        for (size_t k = 0; cases[i].args[k]; k++)
            args[2 + k] = cases[i].args[k];
        run(&p, args);
        expect_status(&p, 2);
        if (!strstr(p.err_buf, cases[i].message))
            fail_msg("case %zu: stderr lacks '%s':\n%s", i, cases[i].message, p.err_buf);
        assert_int_equal(p.out_len, 0);
    }
    assert_int_equal(requests(s), 0); /* nothing was sent */
}

/* The column at which the text after @prefix's first word run starts. */
static int second_column(const char *line)
{
    const char *p = line;

    while (*p == ' ')
        p++;
    while (*p && !(p[0] == ' ' && p[1] == ' '))
        p++;
    while (*p == ' ')
        p++;
    return *p ? (int)(p - line) : -1;
}

static void test_help(void **state)
{
    static const char *const commands[] = {
        "list",         "define",     "undefine", "start",      "shutdown",     "destroy",
        "suspend",      "resume",     "reset",    "state",      "info",         "stats",
        "qmp",          "events",     "debug",    "version",    "save",         "restore",
        "backup",       "job",        "abort",    "image-list", "image-create", "image-delete",
        "image-resize", "image-info", "help"};
    struct proc p, q;
    char *line, *save, *section;
    int column = -1;
    size_t seen = 0;

    (void)state;
    run(&p, ARGS("--help"));
    expect_status(&p, 0);
    assert_non_null(strstr(p.out_buf, "Usage: moor-vmctl [OPTION]... COMMAND [ARG]..."));
    section = strstr(p.out_buf, "\nCommands");
    assert_non_null(section);
    /* Every command listed once, its summary in one column for all. */
    for (line = strtok_r(strchr(section + 1, '\n') + 1, "\n", &save); line && *line == ' ';
         line = strtok_r(NULL, "\n", &save)) {
        int col = second_column(line);

        assert_true(seen < sizeof(commands) / sizeof(commands[0]));
        assert_true(strncmp(line + 2, commands[seen], strlen(commands[seen])) == 0);
        if (column < 0)
            column = col;
        if (col != column)
            fail_msg("summary at column %d, not %d: '%s'", col, column, line);
        seen++;
    }
    assert_int_equal(seen, sizeof(commands) / sizeof(commands[0]));

    run(&p, ARGS("help", "start"));
    expect_status(&p, 0);
    assert_non_null(strstr(p.out_buf, "Usage: moor-vmctl start [--paused] ID\n"));
    assert_non_null(strstr(p.out_buf, "--paused"));
    assert_non_null(strstr(p.out_buf, "POST /v1/domains/{id}/start"));
    run(&q, ARGS("start", "--help"));
    expect_status(&q, 0);
    assert_string_equal(p.out_buf, q.out_buf);
    run(&p, ARGS("shutdown", "-h"));
    expect_status(&p, 0);
    assert_non_null(strstr(p.out_buf, "-t, --timeout SECONDS"));
}

/* ---- requests ---------------------------------------------------------------- */

struct route_case {
    const char *args[6];
    const char *method, *path, *body; /* body NULL: none expected */
    const char *stdout_text;          /* a part of the human output */
};

static void check_request(struct server *s, const struct route_case *c, const struct proc *p)
{
    const struct request *r;

    assert_int_equal(requests(s), 1);
    r = &s->req[0];
    if (strcmp(r->method, c->method) || strcmp(r->path, c->path))
        fail_msg("'%s': sent %s %s, expected %s %s", c->args[0], r->method, r->path, c->method,
                 c->path);
    if (c->body && (!r->body || strcmp(r->body, c->body)))
        fail_msg("'%s': sent body '%s', expected '%s'", c->args[0], r->body ? r->body : "(none)",
                 c->body);
    if (!c->body && r->body && *r->body)
        fail_msg("'%s': sent body '%s', expected none", c->args[0], r->body);
    if (c->stdout_text && !strstr(p->out_buf, c->stdout_text))
        fail_msg("'%s': stdout lacks '%s':\n%s", c->args[0], c->stdout_text, p->out_buf);
}

static void test_routes(void **state)
{
    struct server *s = *state;
    static const struct route_case cases[] = {
        {{"list"}, "GET", "/v1/domains", NULL, "NAME"},
        {{"list", "--all"}, "GET", "/v1/domains", NULL, "NAME"},
        {{"undefine", "vm1"}, "DELETE", "/v1/domains/vm1", NULL, "Domain 'vm1' has been undefined"},
        {{"start", "vm1"}, "POST", "/v1/domains/vm1/start", NULL, "Domain 'vm1' started\n"},
        {{"start", "vm1", "--paused"},
         "POST",
         "/v1/domains/vm1/start",
         "{\"paused\":true}",
         "Domain 'vm1' started (paused)"},
        {{"shutdown", "vm1"}, "POST", "/v1/domains/vm1/shutdown", NULL, "Domain 'vm1' shut down"},
        {{"shutdown", "--timeout", "2.5", "vm1"},
         "POST",
         "/v1/domains/vm1/shutdown",
         "{\"timeout_ms\":2500}",
         NULL},
        {{"destroy", "vm1"}, "POST", "/v1/domains/vm1/destroy", NULL, "Domain 'vm1' destroyed"},
        {{"suspend", "vm1"}, "POST", "/v1/domains/vm1/suspend", NULL, "Domain 'vm1' suspended"},
        {{"resume", "vm1"}, "POST", "/v1/domains/vm1/resume", NULL, "Domain 'vm1' resumed"},
        {{"reset", "vm1"}, "POST", "/v1/domains/vm1/reset", NULL, "Domain 'vm1' was reset"},
        {{"state", "6a3c1f0e-9b2d-4c1e-8f00-0123456789ab"},
         "GET",
         "/v1/domains/6a3c1f0e-9b2d-4c1e-8f00-0123456789ab/state",
         NULL,
         NULL},
        {{"info", "vm.test_1"}, "GET", "/v1/domains/vm.test_1", NULL, "Name:"},
        {{"stats", "vm1"}, "GET", "/v1/domains/vm1/stats", NULL, "vCPUs:"},
        {{"qmp", "vm1", "{\"execute\":\"query-status\"}"},
         "POST",
         "/v1/domains/vm1/qmp",
         "{\"execute\":\"query-status\"}",
         NULL},
        {{"qmp", "vm1", "query-kvm"},
         "POST",
         "/v1/domains/vm1/qmp",
         "{\"execute\":\"query-kvm\"}",
         NULL},
        {{"debug"}, "GET", "/v1/debug", NULL, NULL},
        {{"version"}, "GET", "/v1/version", NULL, "Client:  moor-vmctl "},
        {{"job", "vm1"}, "GET", "/v1/domains/vm1/job", NULL, "No job running on domain 'vm1'"},
        {{"abort", "vm1"}, "DELETE", "/v1/domains/vm1/job", NULL, "Abort of the job"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *args[10] = {"--socket", s->path};
        struct proc p;

        for (size_t k = 0; cases[i].args[k]; k++)
            args[2 + k] = cases[i].args[k];
        server_reset(s, (struct canned){200, "{\"domains\":[]}", NULL});
        run(&p, args);
        expect_status(&p, 0);
        check_request(s, &cases[i], &p);
    }
}

static void test_define(void **state)
{
    struct server *s = *state;
    static const char config[] = "{\"name\":\"vm1\",\"memory_mib\":64}";
    static const char answer[] =
        "{\"name\":\"vm1\",\"uuid\":\"6a3c1f0e-9b2d-4c1e-8f00-0123456789ab\","
        "\"state\":\"shutoff\",\"reason\":\"defined\"}";
    static const struct route_case from_file = {
        {"define"}, "POST", "/v1/domains", config, "Domain 'vm1' defined from "};
    char file[128], sock_env[160];
    struct proc p;
    FILE *f;

    snprintf(file, sizeof(file), "%s/config.json", s->dir);
    f = fopen(file, "w");
    assert_non_null(f);
    fputs(config, f);
    fclose(f);
    server_reset(s, (struct canned){201, answer, NULL});
    run(&p, ARGS("--socket", s->path, "define", file));
    expect_status(&p, 0);
    check_request(s, &from_file, &p);
    assert_non_null(strstr(p.out_buf, "(uuid 6a3c1f0e-9b2d-4c1e-8f00-0123456789ab)"));

    /* From stdin, the socket from MOOR_VMD_SOCKET. */
    snprintf(sock_env, sizeof(sock_env), "MOOR_VMD_SOCKET=%s", s->path);
    server_reset(s, (struct canned){201, answer, NULL});
    run_env(&p, ARGS("define", "-"), config, ARGS(sock_env));
    expect_status(&p, 0);
    check_request(s, &from_file, &p);
    assert_non_null(strstr(p.out_buf, "defined from standard input"));

    /* Not JSON: refused before anything is sent. */
    server_reset(s, (struct canned){201, answer, NULL});
    run(&p, ARGS("--socket", s->path, "define", "-"));
    expect_status(&p, 1);
    assert_non_null(strstr(p.err_buf, "moor-vmctl: standard input: not a JSON object"));
    run(&p, ARGS("--socket", s->path, "define", "/nonexistent/vm.json"));
    expect_status(&p, 1);
    assert_non_null(strstr(p.err_buf, "moor-vmctl: /nonexistent/vm.json: No such file"));
    assert_int_equal(requests(s), 0);
}

/* ---- output ---------------------------------------------------------------- */

static const char list_body[] =
    "{\"domains\":["
    "{\"name\":\"a\",\"uuid\":\"00000000-0000-4000-8000-000000000001\",\"state\":\"running\","
    "\"reason\":\"booted\",\"pid\":4242},"
    "{\"name\":\"database-primary\",\"uuid\":\"00000000-0000-4000-8000-000000000002\","
    "\"state\":\"shutoff\",\"reason\":\"defined\"},"
    "{\"name\":\"web\",\"uuid\":\"00000000-0000-4000-8000-000000000003\",\"state\":\"paused\","
    "\"reason\":\"user\",\"pid\":17}]}";

static void test_list_table(void **state)
{
    struct server *s = *state;
    static const char *const header[] = {"NAME", "STATE", "REASON", "PID", "UUID"};
    static const char *const rows[3][5] = {
        {"a", "running", "booted", "4242", "00000000-0000-4000-8000-000000000001"},
        {"database-primary", "shutoff", "defined", "-", "00000000-0000-4000-8000-000000000002"},
        {"web", "paused", "user", "17", "00000000-0000-4000-8000-000000000003"},
    };
    char *lines[4], *save = NULL;
    int col[5];
    struct proc p;

    server_reset(s, (struct canned){200, list_body, NULL});
    run(&p, ARGS("--socket", s->path, "list"));
    expect_status(&p, 0);
    lines[0] = strtok_r(p.out_buf, "\n", &save);
    for (int i = 1; i < 4; i++)
        lines[i] = strtok_r(NULL, "\n", &save);
    assert_null(strtok_r(NULL, "\n", &save));
    /* Column starts come from the header; every row's cells start there,
     * after at least two spaces, and the widest name sets the width. */
    for (int c = 0; c < 5; c++) {
        char *at = strstr(lines[0], header[c]);

        assert_non_null(at);
        col[c] = (int)(at - lines[0]);
    }
    assert_int_equal(col[0], 0);
    assert_int_equal(col[1], (int)strlen("database-primary") + 2);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 5; c++) {
            const char *cell = lines[r + 1] + col[c];

            if (strncmp(cell, rows[r][c], strlen(rows[r][c])) ||
                (c > 0 && strncmp(cell - 2, "  ", 2)))
                fail_msg("row %d column %d: expected '%s' at %d in '%s'", r, c, rows[r][c], col[c],
                         lines[r + 1]);
        }
    for (int r = 0; r < 4; r++)
        assert_true(lines[r][strlen(lines[r]) - 1] != ' '); /* no trailing blanks */
}

static void test_json_output(void **state)
{
    struct server *s = *state;
    static const char state_body[] = "{\"name\":\"vm1\",\"uuid\":\"00000000-0000-4000-8000-"
                                     "000000000001\",\"state\":\"running\",\"reason\":\"booted\","
                                     "\"tainted\":false,\"monitor\":{\"responsive\":true}}";
    char expected[sizeof(list_body) + 1];
    struct proc p;

    snprintf(expected, sizeof(expected), "%s\n", list_body);
    server_reset(s, (struct canned){200, list_body, NULL});
    run(&p, ARGS("--json", "--socket", s->path, "list"));
    expect_status(&p, 0);
    assert_string_equal(p.out_buf, expected); /* not a terminal: one line, the body */
    server_reset(s, (struct canned){200, list_body, NULL});
    run(&p, ARGS("--socket", s->path, "list", "--json"));
    expect_status(&p, 0);
    assert_string_equal(p.out_buf, expected);

    server_reset(s, (struct canned){200, state_body, NULL});
    run(&p, ARGS("--socket", s->path, "state", "-j", "vm1"));
    expect_status(&p, 0);
    assert_int_equal(p.out_len, strlen(state_body) + 1);
    assert_memory_equal(p.out_buf, state_body, strlen(state_body));

    /* On a terminal: indented (the pty turns "\n" into "\r\n"). */
    server_reset(s, (struct canned){200, list_body, NULL});
    spawn_io(&p, ARGS("--socket", s->path, "--json", "list"), NULL, NULL, true);
    finish(&p);
    expect_status(&p, 0);
    assert_non_null(
        strstr(p.out_buf, "{\r\n  \"domains\": [\r\n    {\r\n      \"name\": \"a\",\r\n"));

    /* Without --json: the state and its reason. */
    server_reset(s, (struct canned){200, state_body, NULL});
    run(&p, ARGS("--socket", s->path, "state", "vm1"));
    expect_status(&p, 0);
    assert_string_equal(p.out_buf, "running (booted)\n");
}

/* Every line of @text has its value (after "Key:" and blanks) at one column. */
static void check_pairs_aligned(char *text, size_t nlines)
{
    char *save = NULL, *line;
    int column = -1;
    size_t n = 0;

    for (line = strtok_r(text, "\n", &save); line && n < nlines;
         line = strtok_r(NULL, "\n", &save), n++) {
        char *colon = strchr(line, ':');
        int col;

        assert_non_null(colon);
        col = (int)(colon + 1 - line + strspn(colon + 1, " "));
        if (column < 0)
            column = col;
        if (col != column)
            fail_msg("value at column %d, not %d: '%s'", col, column, line);
    }
    assert_int_equal(n, nlines);
}

static void test_info_human(void **state)
{
    struct server *s = *state;
    static const char body[] =
        "{\"name\":\"vm1\",\"uuid\":\"00000000-0000-4000-8000-000000000001\","
        "\"state\":\"running\",\"reason\":\"booted\",\"pid\":4242,\"tainted\":true,"
        "\"monitor\":{\"responsive\":false,\"unresponsive_since_ms\":12000},"
        "\"job\":{\"kind\":\"modify\",\"api\":\"suspend\",\"age_ms\":1500},"
        "\"config\":{\"name\":\"vm1\",\"memory_mib\":1536,\"vcpus\":2,\"machine\":\"q35\","
        "\"emulator\":\"/usr/bin/qemu-system-x86_64\",\"accel\":\"tcg\","
        "\"extra_args\":[\"-device\",\"virtio-rng-pci\"]}}";
    struct proc p;

    server_reset(s, (struct canned){200, body, NULL});
    run(&p, ARGS("--socket", s->path, "info", "vm1"));
    expect_status(&p, 0);
    assert_non_null(strstr(p.out_buf, "State:       running (booted)\n"));
    assert_non_null(strstr(p.out_buf, "Memory:      1.5 GiB\n"));
    assert_non_null(strstr(p.out_buf, "vCPUs:       2\n"));
    assert_non_null(strstr(p.out_buf, "Extra args:  -device virtio-rng-pci\n"));
    assert_non_null(strstr(p.out_buf, "Tainted:     yes\n"));
    assert_non_null(strstr(p.out_buf, "Monitor:     unresponsive for 12.0 s\n"));
    assert_non_null(strstr(p.out_buf, "Job:         modify (suspend), held for 1.5 s\n"));
    check_pairs_aligned(p.out_buf, 13);
}

static void test_stats_human(void **state)
{
    struct server *s = *state;
    static const char body[] =
        "{\"name\":\"vm1\",\"status\":{\"status\":\"running\",\"running\":true},"
        "\"vcpus\":[{\"cpu\":0,\"thread_id\":4250},{\"cpu\":1,\"thread_id\":4251}],"
        "\"block\":[{\"device\":\"\",\"qdev\":\"/machine/peripheral/disk0\",\"stats\":"
        "{\"rd_bytes\":10485760,\"wr_bytes\":512,\"rd_operations\":2560,"
        "\"wr_operations\":1,\"flush_operations\":0}}]}";
    struct proc p;

    server_reset(s, (struct canned){200, body, NULL});
    run(&p, ARGS("--socket", s->path, "stats", "vm1"));
    expect_status(&p, 0);
    assert_non_null(strstr(p.out_buf, "Status:  running\n"));
    assert_non_null(strstr(p.out_buf, "vCPUs:\n  CPU  THREAD\n  0    4250\n  1    4251\n"));
    assert_non_null(strstr(p.out_buf,
                           "  DEVICE                     READ    WRITTEN  READS  WRITES  "
                           "FLUSHES\n"
                           "  /machine/peripheral/disk0  10 MiB  512 B    2560   1       "
                           "0\n"));
}

static void test_debug_human(void **state)
{
    struct server *s = *state;
    static const char body[] =
        "{\"census\":{\"vmd_domain\":3,\"moor_monitor\":2},"
        "\"jobs\":[{\"domain\":\"vm1\",\"kind\":\"modify\",\"api\":\"start\",\"thread\":7,"
        "\"age_ms\":65000}],\"qmp_pending\":[],\"workers\":{\"busy\":1,\"max\":8}}";
    struct proc p;

    server_reset(s, (struct canned){200, body, NULL});
    run(&p, ARGS("--socket", s->path, "debug"));
    expect_status(&p, 0);
    assert_non_null(strstr(p.out_buf, "Census:\n  Vmd domain:    3\n  Moor monitor:  2\n"));
    assert_non_null(strstr(p.out_buf, "Jobs:\n  DOMAIN  KIND    API    THREAD  AGE\n"
                                      "  vm1     modify  start  7       1 min 5 s\n"));
    assert_non_null(strstr(p.out_buf, "QMP pending:  none\n"));
}

/* The library's snapshot ("moor"): its own tables, holders then waiters,
 * ages as durations, "-" for no deadline; the rest printed as before. */
static void test_debug_moor_tables(void **state)
{
    struct server *s = *state;
    static const char body[] =
        "{\"census\":{\"vmd_domain\":1},\"moor\":{\"version\":1,\"pid\":42,\"flags\":8,"
        "\"watchdog_ms\":2000,\"jobs\":["
        "{\"object\":\"vmd_domain 'web1'\",\"role\":\"holds\",\"kind\":\"MODIFY\","
        "\"api\":\"qmp\",\"thread\":7,\"age_ms\":8700,\"left_ms\":-1},"
        "{\"object\":\"vmd_domain 'web1'\",\"role\":\"waits\",\"kind\":\"MODIFY\","
        "\"api\":\"suspend\",\"thread\":8,\"age_ms\":2600,\"left_ms\":27300}],"
        "\"monitors\":[{\"name\":\"qmp web1\",\"state\":\"open\",\"pending\":["
        "{\"id\":2,\"command\":\"query-name\",\"thread\":7,\"age_ms\":8700,"
        "\"left_ms\":21200}]}]}}";
    struct proc p;

    server_reset(s, (struct canned){200, body, NULL});
    run(&p, ARGS("--socket", s->path, "debug"));
    expect_status(&p, 0);
    assert_non_null(strstr(p.out_buf, "Census:\n  Vmd domain:  1\n"));
    if (!strstr(p.out_buf,
                "Library snapshot: version 1, pid 42, watchdog 2000 ms (on)\n"
                "Jobs held and waited for:\n"
                "  OBJECT             ROLE   KIND    API      THREAD  SINCE  GIVES UP IN\n"
                "  vmd_domain 'web1'  holds  MODIFY  qmp      7       8.7 s  -\n"
                "  vmd_domain 'web1'  waits  MODIFY  suspend  8       2.6 s  27.3 s\n"
                "Monitor calls pending:\n"
                "  MONITOR   STATE  COMMAND     ID  THREAD  SINCE  DEADLINE IN\n"
                "  qmp web1  open   query-name  2   7       8.7 s  21.2 s\n"))
        fail_msg("debug printed:\n%s", p.out_buf);
    assert_null(strstr(p.out_buf, "Moor:")); /* not printed a second time, generically */
}

static void test_qmp_warns(void **state)
{
    struct server *s = *state;
    static const char reply[] = "{\"return\":{\"status\":\"running\",\"running\":true}}";
    struct proc p;

    server_reset(s, (struct canned){200, reply, NULL});
    run(&p, ARGS("--socket", s->path, "qmp", "vm1", "query-status"));
    expect_status(&p, 0);
    assert_non_null(strstr(p.err_buf, "moor-vmctl: warning: raw QMP taints domain 'vm1'"));
    assert_int_equal(p.out_len, strlen(reply) + 1);
    assert_memory_equal(p.out_buf, reply, strlen(reply));
}

/* ---- failures --------------------------------------------------------------- */

static void test_daemon_refuses(void **state)
{
    struct server *s = *state;
    static const char body[] = "{\"error\":{\"code\":\"EBUSY\",\"message\":\"domain vm1 is "
                               "running: start needs it shut off\"}}";
    struct proc p;

    server_reset(s, (struct canned){409, body, NULL});
    run(&p, ARGS("--socket", s->path, "start", "vm1"));
    expect_status(&p, 1);
    assert_string_equal(p.err_buf, "moor-vmctl: domain vm1 is running: start needs it shut off\n");
    assert_int_equal(p.out_len, 0);

    /* --json: the error body on stdout too, for scripts. */
    server_reset(s, (struct canned){409, body, NULL});
    run(&p, ARGS("--socket", s->path, "--json", "start", "vm1"));
    expect_status(&p, 1);
    assert_non_null(strstr(p.out_buf, "\"code\":\"EBUSY\""));

    /* An error answer to the stream: its message, not an event line. */
    server_reset(s, (struct canned){503,
                                    "{\"error\":{\"code\":\"EAGAIN\",\"message\":\"too many "
                                    "event readers (64)\"}}",
                                    NULL});
    run(&p, ARGS("--socket", s->path, "events"));
    expect_status(&p, 1);
    assert_string_equal(p.err_buf, "moor-vmctl: too many event readers (64)\n");
    assert_int_equal(p.out_len, 0);

    /* No error object: the status. */
    server_reset(s, (struct canned){500, NULL, NULL});
    run(&p, ARGS("--socket", s->path, "destroy", "vm1"));
    expect_status(&p, 1);
    assert_string_equal(p.err_buf, "moor-vmctl: moor-vmd answered HTTP 500\n");
}

static void test_no_daemon(void **state)
{
    struct server *s = *state;
    char missing[160], expected[256], env[200];
    struct proc p;

    snprintf(missing, sizeof(missing), "%s/none.sock", s->dir);
    snprintf(expected, sizeof(expected),
             "moor-vmctl: cannot connect to moor-vmd at %s: is it running?", missing);
    run(&p, ARGS("--socket", missing, "list"));
    expect_status(&p, 1);
    if (strncmp(p.err_buf, expected, strlen(expected)))
        fail_msg("stderr:\n%s\nexpected:\n%s", p.err_buf, expected);

    snprintf(env, sizeof(env), "MOOR_VMD_SOCKET=%s", missing);
    run_env(&p, ARGS("state", "vm1"), NULL, ARGS(env));
    expect_status(&p, 1);
    assert_true(strncmp(p.err_buf, expected, strlen(expected)) == 0);

    if (geteuid() != 0) { /* root's default is /run/moor-vmd/moor-vmd.sock */
        snprintf(env, sizeof(env), "XDG_RUNTIME_DIR=%s", s->dir);
        snprintf(expected, sizeof(expected),
                 "moor-vmctl: cannot connect to moor-vmd at %s/moor-vmd/moor-vmd.sock", s->dir);
        run_env(&p, ARGS("list"), NULL, ARGS(env));
        expect_status(&p, 1);
        assert_true(strncmp(p.err_buf, expected, strlen(expected)) == 0);
    }
}

/* ---- events -------------------------------------------------------------------- */

static const char *const event_lines[] = {
    "{\"seq\":1,\"time\":\"2026-12-07T02:19:13.123Z\",\"type\":\"lifecycle\",\"domain\":\"vm1\","
    "\"state\":\"running\",\"reason\":\"booted\"}",
    "{\"seq\":2,\"time\":\"2026-12-07T02:19:14.000Z\",\"type\":\"qmp\",\"domain\":\"vm1\","
    "\"event\":\"STOP\",\"data\":{}}",
    NULL,
};

/* Release stream line @i and wait until the server wrote it. */
static void release(struct server *s, size_t i)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += deadline_ms / 1000;
    pthread_mutex_lock(&s->mu);
    s->released = i + 1;
    pthread_cond_broadcast(&s->cond);
    while (s->sent <= i)
        if (pthread_cond_timedwait(&s->cond, &s->mu, &until) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&s->mu);
}

static void follow_events(struct server *s, bool json, const char *first, const char *second)
{
    struct proc p;

    server_reset(s, (struct canned){200, NULL, event_lines});
    spawn(&p,
          json ? ARGS("--socket", s->path, "events", "--json")
               : ARGS("--socket", s->path, "events"),
          NULL, NULL);
    /* Line 2 is held back until line 1 was printed: lines come as they arrive. */
    release(s, 0);
    read_until(&p, first);
    assert_null(strstr(p.out_buf, second));
    release(s, 1);
    read_until(&p, second);
    assert_int_equal(kill(p.pid, SIGINT), 0);
    finish(&p);
    expect_status(&p, 0);
    assert_int_equal(requests(s), 1);
    assert_string_equal(s->req[0].path, "/v1/events");
}

static void test_events(void **state)
{
    struct server *s = *state;
    char raw[2][512];

    follow_events(s, false, "2026-12-07T02:19:13.123Z  vm1  lifecycle  running (booted)\n",
                  "2026-12-07T02:19:14.000Z  vm1  qmp  event=STOP  data={}\n");
    snprintf(raw[0], sizeof(raw[0]), "%s\n", event_lines[0]);
    snprintf(raw[1], sizeof(raw[1]), "%s\n", event_lines[1]);
    follow_events(s, true, raw[0], raw[1]);
}

/* --timeout before `events`: follow for that long, then end with 0. */
static void test_events_timeout(void **state)
{
    struct server *s = *state;
    struct proc p;
    int64_t start = now_ms();

    server_reset(s, (struct canned){200, NULL, event_lines});
    spawn(&p, ARGS("--socket", s->path, "--timeout", "0.5", "events"), NULL, NULL);
    release(s, 1);
    read_until(&p, "qmp  event=STOP");
    finish(&p);
    expect_status(&p, 0);
    assert_true(now_ms() - start >= 500);
    assert_int_equal(p.err_len, 0);
}

/* ---- against moor-vmd ------------------------------------------------------- */

/* Wait up to the deadline for @pid to exit; its status, or -1 (then killed). */
static int wait_exit(pid_t pid)
{
    int64_t deadline = now_ms() + deadline_ms;
    int status = 0;
    pid_t got;

    while ((got = waitpid(pid, &status, WNOHANG)) == 0 && remaining(deadline) > 0)
        poll(NULL, 0, 10);
    if (got != pid) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

struct daemon {
    char dir[32];
    char sock[96];
    char file[96];
    pid_t pid; /* 0 once it exited */
};

/* Start moor-vmd-double on fresh directories and wait for its socket. */
static int daemon_setup(void **state)
{
    const char *bin = getenv("MOOR_VMD_DOUBLE");
    struct daemon *d = calloc(1, sizeof(*d));
    char state_dir[64], run_dir[64];
    int64_t deadline = now_ms() + deadline_ms;
    struct stat st;
    FILE *f;

    assert_non_null(d);
    *state = d;
    if (!bin)
        fail_msg("MOOR_VMD_DOUBLE is not set (meson test sets it)");
    snprintf(d->dir, sizeof(d->dir), "/tmp/test-vmctl-vmd.XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    snprintf(state_dir, sizeof(state_dir), "%s/state", d->dir);
    snprintf(run_dir, sizeof(run_dir), "%s/run", d->dir);
    snprintf(d->sock, sizeof(d->sock), "%s/moor-vmd.sock", run_dir);
    snprintf(d->file, sizeof(d->file), "%s/vm1.json", d->dir);
    f = fopen(d->file, "w");
    assert_non_null(f);
    fputs("{\"name\":\"vm1\",\"memory_mib\":64}\n", f);
    fclose(f);
    d->pid = fork();
    assert_true(d->pid >= 0);
    if (d->pid == 0) {
        execl(bin, bin, "--state-dir", state_dir, "--runtime-dir", run_dir, "--workers", "2",
              (char *)NULL);
        _exit(127);
    }
    while (stat(d->sock, &st) != 0 && remaining(deadline) > 0)
        poll(NULL, 0, 10);
    if (stat(d->sock, &st) != 0)
        fail_msg("moor-vmd-double did not create %s within %d ms", d->sock, deadline_ms);
    return 0;
}

/* Kill a daemon a failed test left running; remove its directories. */
static int daemon_teardown(void **state)
{
    struct daemon *d = *state;

    if (d->pid > 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
    }
    if (d->dir[0])
        nftw(d->dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(d);
    return 0;
}

/* The real HTTP side of moor-vmd (with the in-memory domain ops of
 * ops-double.c): a domain's life through moor-vmctl alone. */
static void test_against_daemon(void **state)
{
    struct daemon *d = *state;
    const char *sock = d->sock;
    struct proc p;
    int status;

    run(&p, ARGS("--socket", sock, "define", d->file));
    expect_status(&p, 0);
    assert_non_null(strstr(p.out_buf, "Domain 'vm1' defined from "));
    run(&p, ARGS("--socket", sock, "list"));
    expect_status(&p, 0);
    if (strncmp(p.out_buf, "NAME  STATE    REASON   PID  UUID\nvm1   shutoff  defined  -    ", 63))
        fail_msg("list printed:\n%s", p.out_buf);
    run(&p, ARGS("--socket", sock, "start", "vm1"));
    expect_status(&p, 0);
    run(&p, ARGS("--socket", sock, "state", "vm1"));
    expect_status(&p, 0);
    assert_true(strncmp(p.out_buf, "running (", 9) == 0);
    run(&p, ARGS("--socket", sock, "undefine", "vm1"));
    expect_status(&p, 1); /* running: the daemon says no, in its words */
    assert_true(strncmp(p.err_buf, "moor-vmctl: ", 12) == 0 && strstr(p.err_buf, "vm1"));
    run(&p, ARGS("--socket", sock, "info", "nosuch"));
    expect_status(&p, 1);
    assert_true(strncmp(p.err_buf, "moor-vmctl: ", 12) == 0 && strstr(p.err_buf, "nosuch"));
    /* save and restore, stdout a pipe: plain progress lines, one per step
     * (the double's job moves a quarter per GET), then the outcome. */
    run(&p, ARGS("--socket", sock, "save", "vm1", "/tmp/vm1.save"));
    expect_status(&p, 0);
    assert_null(strchr(p.out_buf, '\r')); /* no bar redrawn on a pipe */
    assert_null(strstr(p.out_buf, "\033["));
    assert_non_null(
        strstr(p.out_buf, "save vm1: 25% 16 MiB/64 MiB 16 MiB/s ETA 3.0 s (transfer)\n"));
    assert_non_null(strstr(p.out_buf, "save vm1: 75% "));
    assert_non_null(strstr(p.out_buf, "save vm1: completed in "));
    run(&p, ARGS("--socket", sock, "state", "vm1"));
    assert_true(strncmp(p.out_buf, "shutoff (saved)", 15) == 0);
    run(&p, ARGS("--socket", sock, "--json", "restore", "/tmp/vm1.save"));
    expect_status(&p, 0);
    assert_non_null(strstr(p.out_buf, "{\"kind\":\"restore\",\"phase\":\"transfer\""));
    assert_non_null(strstr(p.out_buf, "\"result\":\"completed\"}\n"));
    run(&p, ARGS("--socket", sock, "job", "vm1"));
    expect_status(&p, 0);
    assert_non_null(strstr(p.out_buf, "Last job:\n  Kind:       restore\n"));
    run(&p, ARGS("--socket", sock, "abort", "vm1"));
    expect_status(&p, 1);
    assert_non_null(strstr(p.err_buf, "no job"));
    /* backup: followed like a save (plain lines on a pipe, JSON lines with
     * --json); the domain keeps running */
    run(&p, ARGS("--socket", sock, "backup", "vm1", "bk.qcow2", "--disk", "base.qcow2"));
    expect_status(&p, 0);
    assert_null(strchr(p.out_buf, '\r'));
    assert_non_null(strstr(p.out_buf, "backup vm1: 25% "));
    assert_non_null(strstr(p.out_buf, "backup vm1: completed in "));
    run(&p, ARGS("--socket", sock, "--json", "backup", "-b", "8", "vm1", "bk2.qcow2"));
    expect_status(&p, 0);
    assert_non_null(strstr(p.out_buf, "{\"kind\":\"backup\""));
    assert_non_null(strstr(p.out_buf, "\"result\":\"completed\"}\n"));
    run(&p, ARGS("--socket", sock, "state", "vm1"));
    assert_true(strncmp(p.out_buf, "running (", 9) == 0);
    run(&p, ARGS("--socket", sock, "backup", "vm1"));
    expect_status(&p, 2);
    run(&p, ARGS("--socket", sock, "save", "vm1", "rel.save")); /* made absolute here */
    expect_status(&p, 0);
    assert_non_null(strstr(p.out_buf, "/rel.save)\n"));
    run(&p, ARGS("--socket", sock, "destroy", "vm1"));
    expect_status(&p, 0);
    run(&p, ARGS("--socket", sock, "undefine", "vm1"));
    expect_status(&p, 0);
    run(&p, ARGS("--socket", sock, "--json", "list"));
    expect_status(&p, 0);
    assert_string_equal(p.out_buf, "{\"domains\":[]}\n");

    assert_int_equal(kill(d->pid, SIGTERM), 0);
    status = wait_exit(d->pid);
    d->pid = 0;
    assert_int_equal(status, 0); /* 0: it stopped cleanly, census at zero */
}

/* ---- main -------------------------------------------------------------------- */

/* memcheck's path from PATH (a regular file: meson's PATH may start with a
 * library directory holding a "valgrind" directory), to run the child under
 * it too. */
static char *find_valgrind(void)
{
    const char *path = getenv("PATH");
    char *copy = strdup(path ? path : "/usr/bin"), *save = NULL, *dir, *found = NULL;

    for (dir = strtok_r(copy, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
        char candidate[512];

        struct stat st;

        snprintf(candidate, sizeof(candidate), "%s/valgrind", dir);
        if (stat(candidate, &st) == 0 && S_ISREG(st.st_mode) && access(candidate, X_OK) == 0)
            found = strdup(candidate);
    }
    free(copy);
    return found;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_usage_errors, server_setup, server_teardown),
        cmocka_unit_test(test_help),
        cmocka_unit_test_setup_teardown(test_routes, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_define, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_list_table, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_json_output, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_info_human, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_stats_human, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_debug_human, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_debug_moor_tables, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_qmp_warns, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_daemon_refuses, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_no_daemon, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_events, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_events_timeout, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_against_daemon, daemon_setup, daemon_teardown),
    };
    int rc;

    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH-TO-moor-vmctl\n", argv[0]);
        return 2;
    }
    vmctl_path = argv[1];
    if (getenv("MOOR_UNDER_VALGRIND")) {
        valgrind_path = find_valgrind();
        deadline_ms = 60000;
    }
    signal(SIGPIPE, SIG_IGN);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(valgrind_path);
    return rc;
}
