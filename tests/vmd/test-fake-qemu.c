/* SPDX-License-Identifier: MIT */
/*
 * test-fake-qemu.c - the fake QEMU on its own, before the daemon's tests
 * rely on it: its argv, its QMP (greeting, negotiation, every command and
 * the events around them, reconnects, SCM_RIGHTS) and each fault of its
 * fault script. The program's path comes from FAKE_QEMU (meson sets it).
 *
 * Every wait is bounded (FQT_WAIT_MS unless a test says otherwise) and a
 * wait that runs out fails the test with what it waited for.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#define FQT_WAIT_MS  5000 /* bound of every wait for something that must happen */
#define FQT_QUIET_MS 300  /* how long "nothing arrives" is watched */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- the fake QEMU as a child ------------------------------------------ */

struct fq_child {
    pid_t pid;
    char dir[64];      /* a temporary directory for its files */
    char sock[128];    /* its monitor socket */
    char pidfile[128]; /* its -pidfile */
    int listen_fd;     /* ours, when it was handed an fd (else -1) */
};

/* Start the fake QEMU with @faults in FAKE_QEMU_FAULTS (NULL: unset) and
 * @args after the standard ones; a NULL-terminated list. With @by_fd the
 * test creates the listening socket and passes it as -chardev fd=N, as
 * the daemon does; otherwise -chardev path=P,server=on. */
/* A copy of the last child started (a failed test's own struct is gone
 * with its frame): the teardown reaps what it left. */
static struct fq_child fq_last;

static void fq_start(struct fq_child *c, bool by_fd, const char *faults, ...)
{
    const char *prog = getenv("FAKE_QEMU");
    const char *argv[48];
    char chardev[256], fdtext[16];
    int n = 0;
    va_list ap;

    assert_non_null(prog);
    memset(c, 0, sizeof(*c));
    c->listen_fd = -1;
    snprintf(c->dir, sizeof(c->dir), "/tmp/fq-test.XXXXXX");
    assert_non_null(mkdtemp(c->dir));
    snprintf(c->sock, sizeof(c->sock), "%s/qmp.sock", c->dir);
    snprintf(c->pidfile, sizeof(c->pidfile), "%s/qemu.pid", c->dir);
    if (by_fd) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};

        c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(c->listen_fd >= 0);
        assert_true(strlen(c->sock) < sizeof(sa.sun_path));
        memcpy(sa.sun_path, c->sock, strlen(c->sock) + 1);
        assert_int_equal(bind(c->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        assert_int_equal(listen(c->listen_fd, 4), 0);
        snprintf(fdtext, sizeof(fdtext), "%d", c->listen_fd);
        snprintf(chardev, sizeof(chardev), "socket,id=qmp,fd=%s,server=on,wait=off", fdtext);
    } else {
        snprintf(chardev, sizeof(chardev), "socket,id=qmp,path=%s,server=on,wait=off", c->sock);
    }
    argv[n++] = "fake-qemu";
    argv[n++] = "-nodefaults";
    argv[n++] = "-no-user-config";
    argv[n++] = "-display";
    argv[n++] = "none";
    argv[n++] = "-name";
    argv[n++] = "fq1,debug-threads=on";
    argv[n++] = "-machine";
    argv[n++] = "none,accel=tcg";
    argv[n++] = "-m";
    argv[n++] = "16";
    argv[n++] = "-pidfile";
    argv[n++] = c->pidfile;
    argv[n++] = "-sandbox";
    argv[n++] = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
    argv[n++] = "-chardev";
    argv[n++] = chardev;
    argv[n++] = "-mon";
    argv[n++] = "chardev=qmp,mode=control";
    va_start(ap, faults);
    for (const char *a = va_arg(ap, const char *); a; a = va_arg(ap, const char *)) {
        assert_true(n < 46);
        argv[n++] = a;
    }
    va_end(ap);
    argv[n] = NULL;
    c->pid = fork();
    assert_true(c->pid >= 0);
    if (c->pid == 0) {
        if (c->listen_fd >= 0)
            fcntl(c->listen_fd, F_SETFD, 0); /* inherited, as the daemon hands it */
        if (faults)
            setenv("FAKE_QEMU_FAULTS", faults, 1);
        else
            unsetenv("FAKE_QEMU_FAULTS");
        execv(prog, (char **)argv);
        _exit(127);
    }
    fq_last = *c;
}

/* Wait (bounded) for the child to exit; returns its wait status. A pidfd
 * bounds the wait; without one (valgrind does not know pidfd_open),
 * WNOHANG looks every 5 ms until the same bound. */
static int fq_wait(struct fq_child *c, int bound_ms)
{
    int fd = (int)syscall(SYS_pidfd_open, c->pid, 0);
    uint64_t end = now_ms() + (uint64_t)bound_ms;
    int status = -1;

    if (fd >= 0) {
        struct pollfd p = {fd, POLLIN, 0};

        if (poll(&p, 1, bound_ms) != 1)
            fail_msg("fake-qemu (pid %d) did not exit within %d ms", (int)c->pid, bound_ms);
        close(fd);
        assert_int_equal(waitpid(c->pid, &status, 0), c->pid);
    } else {
        while (waitpid(c->pid, &status, WNOHANG) != c->pid) {
            if (now_ms() > end)
                fail_msg("fake-qemu (pid %d) did not exit within %d ms", (int)c->pid, bound_ms);
            poll(NULL, 0, 5);
        }
    }
    if (fq_last.pid == c->pid)
        fq_last.pid = 0;
    c->pid = 0;
    return status;
}

static void fq_assert_exit(struct fq_child *c, int code)
{
    int status = fq_wait(c, FQT_WAIT_MS);

    if (!WIFEXITED(status) || WEXITSTATUS(status) != code)
        fail_msg("fake-qemu: wait status 0x%x, expected exit %d", status, code);
}

/* Kill what is left and remove the files. */
static void fq_reap(struct fq_child *c)
{
    char path[160];

    if (c->pid > 0) {
        kill(c->pid, SIGKILL);
        fq_wait(c, FQT_WAIT_MS);
    }
    if (c->listen_fd >= 0)
        close(c->listen_fd);
    unlink(c->sock);
    unlink(c->pidfile);
    snprintf(path, sizeof(path), "%s/qemu.log", c->dir);
    unlink(path);
    rmdir(c->dir);
    if (strcmp(fq_last.dir, c->dir) == 0)
        memset(&fq_last, 0, sizeof(fq_last));
    c->dir[0] = '\0';
    c->listen_fd = -1;
}

/* After each test: what a failed test left behind (a passed one left nothing). */
static int fq_teardown(void **state)
{
    struct fq_child c = fq_last;

    (void)state;
    if (c.dir[0])
        fq_reap(&c);
    return 0;
}

/* ---- a QMP client ------------------------------------------------------ */

struct qc {
    int fd;
    char buf[65536];
    size_t len;
    json_object *events[32]; /* events seen while waiting for replies */
    unsigned n_events;
    unsigned next_id;
};

/* Connect (bounded: the socket appears once the child listens). */
static void qc_connect(struct qc *q, const struct fq_child *c)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    uint64_t end = now_ms() + FQT_WAIT_MS;

    memset(q, 0, sizeof(*q));
    assert_true(strlen(c->sock) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, c->sock, strlen(c->sock) + 1);
    for (;;) {
        q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(q->fd >= 0);
        if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            return;
        close(q->fd);
        if (now_ms() > end)
            fail_msg("cannot connect to %s within %d ms: %s", c->sock, FQT_WAIT_MS,
                     strerror(errno));
        poll(NULL, 0, 5); /* the child is still starting: try again, bounded above */
    }
}

static void qc_close(struct qc *q)
{
    for (unsigned i = 0; i < q->n_events; i++)
        json_object_put(q->events[i]);
    if (q->fd >= 0)
        close(q->fd);
    q->fd = -1;
    q->n_events = 0;
}

/* The next line within @bound_ms, without CRLF, into a malloc'd string;
 * NULL at EOF or when the bound passed (*@eof tells which). */
static char *qc_line(struct qc *q, int bound_ms, bool *eof)
{
    uint64_t end = now_ms() + (uint64_t)bound_ms;

    *eof = false;
    for (;;) {
        char *nl = memchr(q->buf, '\n', q->len);

        if (nl) {
            size_t n = (size_t)(nl - q->buf) + 1;
            char *line = strndup(q->buf, n);

            memmove(q->buf, q->buf + n, q->len - n);
            q->len -= n;
            line[strcspn(line, "\r\n")] = '\0';
            return line;
        }
        uint64_t t = now_ms();
        struct pollfd p = {q->fd, POLLIN, 0};

        if (t >= end || poll(&p, 1, (int)(end - t)) == 0)
            return NULL;
        assert_true(q->len < sizeof(q->buf));
        ssize_t r = read(q->fd, q->buf + q->len, sizeof(q->buf) - q->len);
        if (r <= 0) {
            *eof = true;
            return NULL;
        }
        q->len += (size_t)r;
    }
}

/* The next message (bounded; the test fails on EOF, timeout or non-JSON). */
static json_object *qc_msg(struct qc *q, int bound_ms, const char *what)
{
    bool eof;
    char *line = qc_line(q, bound_ms, &eof);
    json_object *m;

    if (!line)
        fail_msg("%s: %s within %d ms", what, eof ? "EOF" : "nothing", bound_ms);
    m = json_tokener_parse(line);
    if (!m)
        fail_msg("%s: not JSON: %s", what, line);
    free(line);
    return m;
}

/* Assert that nothing arrives for FQT_QUIET_MS. */
static void qc_assert_quiet(struct qc *q, const char *what)
{
    bool eof;
    char *line = qc_line(q, FQT_QUIET_MS, &eof);

    if (line || eof)
        fail_msg("%s: expected silence, got %s", what, line ? line : "EOF");
}

/* Assert EOF within the bound (the child closed or died). */
static void qc_assert_eof(struct qc *q, const char *what)
{
    bool eof;
    char *line = qc_line(q, FQT_WAIT_MS, &eof);

    if (!eof)
        fail_msg("%s: expected EOF, got %s", what, line ? line : "nothing");
}

static void qc_send_raw(struct qc *q, const char *text)
{
    size_t len = strlen(text);

    assert_int_equal(send(q->fd, text, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* Send @cmd with @args (JSON text or NULL) and a fresh numeric id. */
static unsigned qc_send(struct qc *q, const char *cmd, const char *args)
{
    char text[512];
    unsigned id = ++q->next_id;

    snprintf(text, sizeof(text), "{\"execute\":\"%s\"%s%s,\"id\":%u}\n", cmd,
             args ? ",\"arguments\":" : "", args ? args : "", id);
    qc_send_raw(q, text);
    return id;
}

static const char *js(json_object *o, const char *key)
{
    json_object *v;

    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static json_object *jget(json_object *o, const char *key)
{
    json_object *v;

    return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

/* Events keep their order in q->events; each must carry a timestamp. */
static void qc_keep_event(struct qc *q, json_object *m)
{
    json_object *ts = jget(m, "timestamp");

    assert_non_null(ts);
    assert_non_null(jget(ts, "seconds"));
    assert_non_null(jget(ts, "microseconds"));
    assert_true(q->n_events < 32);
    q->events[q->n_events++] = m;
}

/* Wait for the reply with @id, keeping events seen before it. */
static json_object *qc_reply(struct qc *q, unsigned id, int bound_ms)
{
    uint64_t end = now_ms() + (uint64_t)bound_ms;

    for (;;) {
        uint64_t t = now_ms();
        json_object *m = qc_msg(q, t < end ? (int)(end - t) : 0, "waiting for a reply");

        if (jget(m, "event")) {
            qc_keep_event(q, m);
            continue;
        }
        assert_non_null(jget(m, "id"));
        assert_int_equal(json_object_get_int(jget(m, "id")), id);
        return m;
    }
}

/* Run @cmd and return its "return" (asserted present), as a new reference. */
static json_object *qc_ok(struct qc *q, const char *cmd, const char *args)
{
    json_object *r = qc_reply(q, qc_send(q, cmd, args), FQT_WAIT_MS);
    json_object *ret = jget(r, "return");

    if (!ret)
        fail_msg("%s: expected a return, got %s", cmd, json_object_to_json_string(r));
    json_object_get(ret);
    json_object_put(r);
    return ret;
}

/* Run @cmd and assert an error of @klass. */
static void qc_err(struct qc *q, const char *cmd, const char *args, const char *klass)
{
    json_object *r = qc_reply(q, qc_send(q, cmd, args), FQT_WAIT_MS);
    json_object *e = jget(r, "error");

    if (!e || !js(e, "class") || strcmp(js(e, "class"), klass) != 0 || !js(e, "desc"))
        fail_msg("%s: expected error %s, got %s", cmd, klass, json_object_to_json_string(r));
    json_object_put(r);
}

/* The next event: from those kept, else from the socket. Asserts its name. */
static json_object *qc_event(struct qc *q, const char *name)
{
    json_object *m;

    if (q->n_events) {
        m = q->events[0];
        memmove(q->events, q->events + 1, --q->n_events * sizeof(q->events[0]));
    } else {
        m = qc_msg(q, FQT_WAIT_MS, name);
        assert_non_null(jget(m, "event"));
        qc_keep_event(q, m);
        q->n_events--;
    }
    if (strcmp(js(m, "event"), name) != 0)
        fail_msg("expected event %s, got %s", name, json_object_to_json_string(m));
    return m;
}

static void qc_event_put(struct qc *q, const char *name)
{
    json_object_put(qc_event(q, name));
}

/* Greeting, then qmp_capabilities. */
static void qc_handshake(struct qc *q)
{
    json_object *g = qc_msg(q, FQT_WAIT_MS, "greeting");
    json_object *qmp = jget(g, "QMP");

    assert_non_null(qmp);
    assert_non_null(jget(jget(qmp, "version"), "qemu"));
    assert_non_null(jget(qmp, "capabilities"));
    json_object_put(g);
    json_object_put(qc_ok(q, "qmp_capabilities", NULL));
}

static void assert_status(struct qc *q, const char *status, bool running)
{
    json_object *r = qc_ok(q, "query-status", NULL);

    assert_string_equal(js(r, "status"), status);
    assert_int_equal(json_object_get_boolean(jget(r, "running")), running);
    json_object_put(r);
}

/* ---- tests ------------------------------------------------------------- */

static void test_greeting_and_negotiation(void **state)
{
    struct fq_child c;
    struct qc q;
    json_object *g, *r;

    (void)state;
    fq_start(&c, false, NULL, NULL);
    qc_connect(&q, &c);
    g = qc_msg(&q, FQT_WAIT_MS, "greeting");
    assert_int_equal(
        json_object_get_int(jget(jget(jget(jget(g, "QMP"), "version"), "qemu"), "major")), 8);
    json_object_put(g);
    qc_err(&q, "query-status", NULL, "CommandNotFound"); /* before negotiation */
    json_object_put(qc_ok(&q, "qmp_capabilities", NULL));
    qc_err(&q, "qmp_capabilities", NULL, "CommandNotFound"); /* twice */
    r = qc_ok(&q, "query-version", NULL);
    assert_int_equal(json_object_get_int(jget(jget(r, "qemu"), "major")), 8);
    json_object_put(r);
    qc_err(&q, "no-such-command", NULL, "CommandNotFound");
    /* A string id is echoed as it came. */
    qc_send_raw(&q, "{\"execute\":\"query-version\",\"id\":\"abc\"}\n");
    r = qc_msg(&q, FQT_WAIT_MS, "string id");
    assert_string_equal(js(r, "id"), "abc");
    json_object_put(r);
    /* Bad JSON: a GenericError, and the monitor goes on. */
    qc_send_raw(&q, "{\"execute\": ]\n");
    r = qc_msg(&q, FQT_WAIT_MS, "parse error");
    assert_string_equal(js(jget(r, "error"), "class"), "GenericError");
    json_object_put(r);
    assert_status(&q, "running", true); /* started without -S */
    qc_close(&q);
    kill(c.pid, SIGTERM);
    fq_assert_exit(&c, 0);
    fq_reap(&c);
}

static void test_lifecycle_and_pidfile(void **state)
{
    struct fq_child c;
    struct qc q;
    json_object *r, *ev;
    char text[32] = "";
    FILE *f;

    (void)state;
    fq_start(&c, true, NULL, "-S", "-smp", "2,sockets=2", NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);
    f = fopen(c.pidfile, "r");
    assert_non_null(f); /* written before the monitor answers */
    assert_non_null(fgets(text, sizeof(text), f));
    fclose(f);
    assert_int_equal(atoi(text), c.pid);

    assert_status(&q, "prelaunch", false);
    json_object_put(qc_ok(&q, "cont", NULL));
    qc_event_put(&q, "RESUME");
    assert_status(&q, "running", true);
    json_object_put(qc_ok(&q, "stop", NULL));
    qc_event_put(&q, "STOP");
    assert_status(&q, "paused", false);
    json_object_put(qc_ok(&q, "stop", NULL)); /* no second STOP */
    json_object_put(qc_ok(&q, "system_reset", NULL));
    ev = qc_event(&q, "RESET");
    assert_string_equal(js(jget(ev, "data"), "reason"), "host-qmp-system-reset");
    json_object_put(ev);

    r = qc_ok(&q, "query-cpus-fast", NULL);
    assert_int_equal(json_object_array_length(r), 2);
    assert_int_equal(json_object_get_int(jget(json_object_array_get_idx(r, 1), "cpu-index")), 1);
    assert_int_equal(json_object_get_int(jget(json_object_array_get_idx(r, 0), "thread-id")),
                     c.pid);
    json_object_put(r);
    r = qc_ok(&q, "query-blockstats", NULL);
    assert_int_equal(json_object_array_length(r), 0);
    json_object_put(r);

    /* Powerdown of a paused guest: only POWERDOWN until it runs again. */
    json_object_put(qc_ok(&q, "system_powerdown", NULL));
    qc_event_put(&q, "POWERDOWN");
    assert_status(&q, "paused", false);
    json_object_put(qc_ok(&q, "cont", NULL));
    qc_event_put(&q, "RESUME");
    ev = qc_event(&q, "SHUTDOWN");
    assert_true(json_object_get_boolean(jget(jget(ev, "data"), "guest")));
    json_object_put(ev);
    qc_assert_eof(&q, "after the guest shut down");
    fq_assert_exit(&c, 0);
    assert_int_equal(access(c.pidfile, F_OK), -1); /* removed at exit, as QEMU does */
    qc_close(&q);
    fq_reap(&c);
}

static void test_powerdown_running_and_quit(void **state)
{
    struct fq_child c;
    struct qc q;
    json_object *ev;

    (void)state;
    fq_start(&c, true, NULL, NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);
    json_object_put(qc_ok(&q, "system_powerdown", NULL));
    qc_event_put(&q, "POWERDOWN");
    qc_event_put(&q, "SHUTDOWN");
    fq_assert_exit(&c, 0);
    qc_close(&q);
    fq_reap(&c);

    fq_start(&c, false, NULL, NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);
    json_object_put(qc_ok(&q, "quit", NULL));
    ev = qc_event(&q, "SHUTDOWN");
    assert_string_equal(js(jget(ev, "data"), "reason"), "host-qmp-quit");
    json_object_put(ev);
    fq_assert_exit(&c, 0);
    qc_close(&q);
    fq_reap(&c);
}

/* After a client leaves, the next one gets a greeting and must negotiate. */
static void test_reconnect(void **state)
{
    struct fq_child c;
    struct qc q;

    (void)state;
    fq_start(&c, true, NULL, "-S", NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);
    json_object_put(qc_ok(&q, "cont", NULL));
    qc_close(&q);
    for (int round = 0; round < 3; round++) {
        qc_connect(&q, &c);
        json_object_put(qc_msg(&q, FQT_WAIT_MS, "greeting after reconnect"));
        qc_err(&q, "query-status", NULL, "CommandNotFound");
        json_object_put(qc_ok(&q, "qmp_capabilities", NULL));
        assert_status(&q, "running", true); /* the guest's state survived */
        qc_close(&q);
    }
    kill(c.pid, SIGTERM);
    fq_assert_exit(&c, 0);
    fq_reap(&c);
}

static void send_with_fd(struct qc *q, const char *text, int fd)
{
    struct iovec iov = {(void *)text, strlen(text)};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } cbuf;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    struct cmsghdr *cm;

    memset(&cbuf, 0, sizeof(cbuf)); /* the kernel reads the padding too */
    mh.msg_control = cbuf.buf;
    mh.msg_controllen = sizeof(cbuf.buf);
    cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    assert_int_equal(sendmsg(q->fd, &mh, MSG_NOSIGNAL), (ssize_t)strlen(text));
}

static void test_getfd(void **state)
{
    struct fq_child c;
    struct qc q;
    json_object *r;
    int pipefd[2];

    (void)state;
    fq_start(&c, true, NULL, NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);
    qc_err(&q, "getfd", "{\"fdname\":\"f1\"}", "GenericError"); /* no descriptor came */
    assert_int_equal(pipe(pipefd), 0);
    send_with_fd(&q, "{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"f1\"},\"id\":77}\n",
                 pipefd[1]);
    close(pipefd[1]);
    r = qc_reply(&q, 77, FQT_WAIT_MS);
    assert_non_null(jget(r, "return"));
    json_object_put(r);
    json_object_put(qc_ok(&q, "closefd", "{\"fdname\":\"f1\"}"));
    qc_err(&q, "closefd", "{\"fdname\":\"f1\"}", "GenericError");
    /* The fake held the pipe's only other write end: closed, we see EOF. */
    {
        char b;
        struct pollfd p = {pipefd[0], POLLIN, 0};

        assert_int_equal(poll(&p, 1, FQT_WAIT_MS), 1);
        assert_int_equal(read(pipefd[0], &b, 1), 0);
    }
    close(pipefd[0]);
    qc_close(&q);
    kill(c.pid, SIGINT);
    fq_assert_exit(&c, 0);
    fq_reap(&c);
}

/* getfd @path opened with @flags as @name. */
static void give_file(struct qc *q, const char *path, int flags, const char *name)
{
    char text[160];
    int fd = open(path, flags | O_CLOEXEC, 0600);

    assert_true(fd >= 0);
    snprintf(text, sizeof(text),
             "{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"%s\"},"
             "\"id\":91}\n",
             name);
    send_with_fd(q, text, fd);
    close(fd);
    json_object_put(qc_reply(q, 91, FQT_WAIT_MS));
}

/* Poll query-migrate until its status is not "active"; returns it (a new
 * reference). */
static json_object *migrate_end(struct qc *q)
{
    for (uint64_t end = now_ms() + FQT_WAIT_MS;;) {
        json_object *r = qc_ok(q, "query-migrate", NULL);
        if (strcmp(js(r, "status"), "active") != 0)
            return r;
        json_object_put(r);
        assert_true(now_ms() < end);
        poll(NULL, 0, 10);
    }
}

/* migrate to a file, then migrate-incoming from it in a second fake under
 * -incoming defer. */
static void test_migrate_round_trip(void **state)
{
    struct fq_child a, b;
    struct qc q;
    char path[PATH_MAX];
    struct stat sb;

    (void)state;
    fq_start(&a, true, NULL, NULL);
    snprintf(path, sizeof(path), "%s/mig.bin", a.dir);
    qc_connect(&q, &a);
    qc_handshake(&q);
    json_object *ret = migrate_end(&q);
    assert_string_equal(js(ret, "status"), "none");
    json_object_put(ret);
    give_file(&q, path, O_WRONLY | O_CREAT | O_EXCL, "out");
    json_object_put(qc_ok(&q, "migrate-set-parameters", "{\"max-bandwidth\":67108864}"));
    json_object_put(qc_ok(&q, "migrate", "{\"uri\":\"fd:out\"}"));
    ret = migrate_end(&q);
    assert_string_equal(js(ret, "status"), "completed");
    assert_int_equal(json_object_get_int64(jget(jget(ret, "ram"), "transferred")), 16 << 20);
    json_object_put(ret);
    assert_status(&q, "postmigrate", false);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, 24 + (16 << 20));
    qc_close(&q);
    kill(a.pid, SIGINT);
    fq_assert_exit(&a, 0);
    fq_reap(&a);

    fq_start(&b, true, NULL, "-S", "-incoming", "defer", NULL);
    qc_connect(&q, &b);
    qc_handshake(&q);
    assert_status(&q, "inmigrate", false);
    give_file(&q, path, O_RDONLY, "in");
    json_object_put(qc_ok(&q, "migrate-incoming", "{\"uri\":\"fd:in\"}"));
    ret = migrate_end(&q);
    assert_string_equal(js(ret, "status"), "completed");
    json_object_put(ret);
    assert_status(&q, "paused", false);
    qc_close(&q);
    kill(b.pid, SIGINT);
    fq_assert_exit(&b, 0);
    fq_reap(&b);
}

static void test_fault_migrate(void **state)
{
    struct fq_child c;
    struct qc q;
    char path[PATH_MAX];

    (void)state;
    /* A full disk: the write fails, the migration says why. */
    fq_start(&c, true, "fsize-limit:65536", NULL);
    snprintf(path, sizeof(path), "%s/full.bin", c.dir);
    qc_connect(&q, &c);
    qc_handshake(&q);
    give_file(&q, path, O_WRONLY | O_CREAT | O_EXCL, "out");
    json_object_put(qc_ok(&q, "migrate", "{\"uri\":\"fd:out\"}"));
    json_object *ret = migrate_end(&q);
    assert_string_equal(js(ret, "status"), "failed");
    assert_non_null(strstr(js(ret, "error-desc"), "File too large"));
    json_object_put(ret);
    qc_close(&q);
    kill(c.pid, SIGINT);
    fq_assert_exit(&c, 0);
    fq_reap(&c);
    /* Death half-way through. */
    fq_start(&c, true, "die-mid-migrate,migrate-bw:16777216", NULL);
    snprintf(path, sizeof(path), "%s/half.bin", c.dir);
    qc_connect(&q, &c);
    qc_handshake(&q);
    give_file(&q, path, O_WRONLY | O_CREAT | O_EXCL, "out");
    json_object_put(qc_ok(&q, "migrate", "{\"uri\":\"fd:out\"}"));
    qc_assert_eof(&q, "die-mid-migrate");
    fq_assert_exit(&c, 1);
    qc_close(&q);
    fq_reap(&c);
}

static void test_sigterm_sends_shutdown(void **state)
{
    struct fq_child c;
    struct qc q;
    json_object *ev;

    (void)state;
    fq_start(&c, true, NULL, NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);
    kill(c.pid, SIGTERM);
    ev = qc_event(&q, "SHUTDOWN");
    assert_string_equal(js(jget(ev, "data"), "reason"), "host-signal");
    json_object_put(ev);
    fq_assert_exit(&c, 0);
    qc_close(&q);
    fq_reap(&c);
}

/* ---- faults ------------------------------------------------------------ */

static void test_fault_stall(void **state)
{
    struct fq_child c;
    struct qc q;

    (void)state;
    fq_start(&c, true, "stall:query-status", NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);
    json_object_put(qc_ok(&q, "query-version", NULL));
    qc_send(&q, "query-status", NULL);
    qc_assert_quiet(&q, "stalled query-status");
    qc_send(&q, "query-version", NULL); /* hung: nothing after it either */
    qc_assert_quiet(&q, "command after the stall");
    qc_close(&q);
    qc_connect(&q, &c); /* the kernel accepts; the hung process greets nobody */
    qc_assert_quiet(&q, "greeting of a hung QEMU");
    qc_close(&q);
    kill(c.pid, SIGTERM); /* signals still end it */
    fq_assert_exit(&c, 0);
    fq_reap(&c);
}

static void test_fault_stall_after(void **state)
{
    struct fq_child c;
    struct qc q;

    (void)state;
    fq_start(&c, true, NULL, "-fake-faults", "stall-after:3", NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);                                  /* 1 */
    json_object_put(qc_ok(&q, "query-version", NULL)); /* 2 */
    json_object_put(qc_ok(&q, "query-status", NULL));  /* 3 */
    qc_send(&q, "query-status", NULL);
    qc_assert_quiet(&q, "fourth command");
    qc_close(&q);
    fq_reap(&c);
}

static void test_fault_late(void **state)
{
    struct fq_child c;
    struct qc q;
    uint64_t t0, dt;

    (void)state;
    fq_start(&c, true, "late:query-status:400", NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);
    t0 = now_ms();
    json_object_put(qc_ok(&q, "query-version", NULL));
    assert_true(now_ms() - t0 < 400); /* only the named command is late */
    t0 = now_ms();
    json_object_put(qc_ok(&q, "query-status", NULL));
    dt = now_ms() - t0;
    if (dt < 400)
        fail_msg("late:query-status:400 answered after %llu ms", (unsigned long long)dt);
    qc_close(&q);
    fq_reap(&c);
}

static void test_fault_die_before_greeting(void **state)
{
    struct fq_child c;
    struct qc q;

    (void)state;
    fq_start(&c, true, "die-before-greeting", NULL);
    qc_connect(&q, &c);
    qc_assert_eof(&q, "die-before-greeting");
    fq_assert_exit(&c, 1);
    qc_close(&q);
    fq_reap(&c);
}

static void test_fault_die_on(void **state)
{
    struct fq_child c;
    struct qc q;

    (void)state;
    fq_start(&c, true, "die-on:cont", "-S", NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);
    assert_status(&q, "prelaunch", false);
    qc_send(&q, "cont", NULL);
    qc_assert_eof(&q, "die-on:cont");
    fq_assert_exit(&c, 1);
    qc_close(&q);
    fq_reap(&c);
}

static void test_fault_error_on(void **state)
{
    struct fq_child c;
    struct qc q;

    (void)state;
    fq_start(&c, true, NULL, "-S", "-fake-faults", "error-on:cont", NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);
    qc_err(&q, "cont", NULL, "GenericError");
    assert_status(&q, "prelaunch", false); /* refused: nothing changed */
    qc_close(&q);
    fq_reap(&c);
}

static void test_fault_garbage_on(void **state)
{
    struct fq_child c;
    struct qc q;
    bool eof;
    char *line;

    (void)state;
    fq_start(&c, true, "garbage-on:query-status", NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);
    qc_send(&q, "query-status", NULL);
    line = qc_line(&q, FQT_WAIT_MS, &eof);
    assert_non_null(line);
    assert_null(json_tokener_parse(line));
    free(line);
    json_object_put(qc_ok(&q, "query-version", NULL)); /* and it goes on */
    qc_close(&q);
    fq_reap(&c);
}

static void test_fault_ignore_powerdown(void **state)
{
    struct fq_child c;
    struct qc q;

    (void)state;
    fq_start(&c, true, "ignore-powerdown", NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);
    json_object_put(qc_ok(&q, "system_powerdown", NULL));
    qc_event_put(&q, "POWERDOWN");
    assert_status(&q, "running", true);
    qc_assert_quiet(&q, "a guest that ignores ACPI");
    qc_close(&q);
    fq_reap(&c);
}

static void test_fault_ignore_sigterm(void **state)
{
    struct fq_child c;
    struct qc q;
    int status;

    (void)state;
    fq_start(&c, true, "ignore-sigterm", NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);
    kill(c.pid, SIGTERM);
    assert_status(&q, "running", true); /* answered after the SIGTERM */
    qc_assert_quiet(&q, "after SIGTERM");
    kill(c.pid, SIGKILL);
    status = fq_wait(&c, FQT_WAIT_MS);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    qc_close(&q);
    fq_reap(&c);
}

static void test_fault_exit_after(void **state)
{
    struct fq_child c;
    struct qc q;

    (void)state;
    fq_start(&c, true, "exit-after-ms:300", NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);
    qc_event_put(&q, "SHUTDOWN");
    fq_assert_exit(&c, 0);
    qc_close(&q);
    fq_reap(&c);
}

static void test_fault_crash_after(void **state)
{
    struct fq_child c;
    uint64_t t0 = now_ms();
    int status;

    (void)state;
    fq_start(&c, true, NULL, "-fake-faults", "crash-after-ms:200", NULL);
    status = fq_wait(&c, FQT_WAIT_MS);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_true(now_ms() - t0 >= 200);
    fq_reap(&c);
}

/* Faults from both places apply; a bad spec is a usage error. */
static void test_fault_spec(void **state)
{
    static const char *const bad[] = {"stall",         "late:cont",
                                      "late:cont:x",   "exit-after-ms:-1",
                                      "no-such-fault", "die-before-greeting:1"};
    struct fq_child c;
    struct qc q;

    (void)state;
    fq_start(&c, true, "error-on:stop", "-fake-faults", "error-on:cont,ignore-powerdown", NULL);
    qc_connect(&q, &c);
    qc_handshake(&q);
    qc_err(&q, "stop", NULL, "GenericError");
    qc_err(&q, "cont", NULL, "GenericError");
    qc_close(&q);
    fq_reap(&c);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fq_start(&c, true, bad[i], NULL);
        fq_assert_exit(&c, 2);
        fq_reap(&c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_greeting_and_negotiation, fq_teardown),
        cmocka_unit_test_teardown(test_lifecycle_and_pidfile, fq_teardown),
        cmocka_unit_test_teardown(test_powerdown_running_and_quit, fq_teardown),
        cmocka_unit_test_teardown(test_reconnect, fq_teardown),
        cmocka_unit_test_teardown(test_getfd, fq_teardown),
        cmocka_unit_test_teardown(test_migrate_round_trip, fq_teardown),
        cmocka_unit_test_teardown(test_fault_migrate, fq_teardown),
        cmocka_unit_test_teardown(test_sigterm_sends_shutdown, fq_teardown),
        cmocka_unit_test_teardown(test_fault_stall, fq_teardown),
        cmocka_unit_test_teardown(test_fault_stall_after, fq_teardown),
        cmocka_unit_test_teardown(test_fault_late, fq_teardown),
        cmocka_unit_test_teardown(test_fault_die_before_greeting, fq_teardown),
        cmocka_unit_test_teardown(test_fault_die_on, fq_teardown),
        cmocka_unit_test_teardown(test_fault_error_on, fq_teardown),
        cmocka_unit_test_teardown(test_fault_garbage_on, fq_teardown),
        cmocka_unit_test_teardown(test_fault_ignore_powerdown, fq_teardown),
        cmocka_unit_test_teardown(test_fault_ignore_sigterm, fq_teardown),
        cmocka_unit_test_teardown(test_fault_exit_after, fq_teardown),
        cmocka_unit_test_teardown(test_fault_crash_after, fq_teardown),
        cmocka_unit_test_teardown(test_fault_spec, fq_teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
