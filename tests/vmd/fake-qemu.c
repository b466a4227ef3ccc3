/* SPDX-License-Identifier: MIT */
/*
 * fake-qemu - a stand-in for qemu-system-x86_64 that moor-vmd's tests
 * start instead of QEMU. It accepts the daemon's argv, serves QMP on the
 * monitor socket the argv names, and misbehaves on request.
 *
 * ARGV
 *   Honoured:  -name NAME[,...]   -pidfile FILE   -S   -smp N[,...]
 *              -chardev socket,id=ID,fd=N[,...]     accept on an inherited,
 *                                                   already listening socket
 *              -chardev socket,id=ID,path=P,server=on[,...]   listen on P
 *              -qmp unix:P,server=on[,...]          listen on P
 *              -fake-faults SPEC                    see FAULTS
 *   Known and ignored: -nodefaults -no-user-config -no-shutdown -no-reboot
 *              (no argument), and every other "-opt value" pair: -machine,
 *              -m, -display, -sandbox, -runas, -mon, -accel, ... An option
 *              this program does not know takes the next word as its value
 *              unless that word starts with '-'.
 *   One monitor connection is served at a time; when the client goes away
 *   the next one is accepted (QEMU's server chardev does the same), so a
 *   restarted daemon can reconnect.
 *
 * QMP
 *   Greeting, then capabilities negotiation (every other command before
 *   qmp_capabilities is refused with CommandNotFound, as QEMU does).
 *   Commands: qmp_capabilities, query-status ("prelaunch" under -S until
 *   the first cont, then "running"/"paused"), stop, cont, system_reset,
 *   system_powerdown (a running guest obeys ACPI: POWERDOWN, SHUTDOWN,
 *   exit 0; a paused one does so when resumed), quit, query-cpus-fast (one
 *   entry per -smp vCPU, thread-id = our pid), query-blockstats (empty:
 *   -nodefaults has no drives), query-version, getfd / closefd (getfd
 *   takes a descriptor that came with the command via SCM_RIGHTS),
 *   migrate-set-parameters (max-bandwidth; downtime-limit checked as QEMU
 *   does and logged), migrate {"uri": "fd:NAME"}
 *   (writes a stream of -m MiB to the getfd descriptor over time, paced by
 *   max-bandwidth, default 64 MiB/s), query-migrate (status, and "ram"
 *   transferred/total/remaining on the outgoing side), migrate_cancel,
 *   migrate-incoming {"uri": "fd:NAME"} (under -incoming defer: reads the
 *   stream back, checks its length, then the guest is paused), and
 *   CommandNotFound for anything else. The "id" of a command is echoed.
 *   Events carry "timestamp" as QEMU's do: STOP and RESUME are sent before
 *   the reply to stop/cont, RESET, POWERDOWN and SHUTDOWN after theirs.
 *   SIGTERM, SIGINT, SIGHUP: SHUTDOWN (reason host-signal), exit 0.
 *
 * FAULTS  (-fake-faults SPEC, and/or FAKE_QEMU_FAULTS=SPEC; both apply)
 *   SPEC is a comma-separated list of:
 *     stall:CMD           when CMD arrives, hang: no reply to it or to
 *                         anything after it, no events, no greeting on
 *                         later connections (the process still reads,
 *                         accepts and dies on signals): a hung QEMU
 *     stall-after:N       answer the first N commands (all connections
 *                         counted), then hang as stall does
 *     late:CMD:MS         answer CMD after MS milliseconds (nothing else is
 *                         answered meanwhile, as in QEMU's one main loop)
 *     die-before-greeting exit 1 on the first connection, before the greeting
 *     die-on:CMD          exit 1 when CMD arrives, without answering it
 *     error-on:CMD        answer CMD with a GenericError (QEMU refuses it)
 *     garbage-on:CMD      answer CMD with a line that is not JSON, then go on
 *     ignore-powerdown    system_powerdown is answered but the guest ignores it
 *     ignore-sigterm      SIGTERM is ignored (only SIGKILL ends the process)
 *     exit-after-ms:N     after N ms: SHUTDOWN (reason guest-shutdown), exit 0
 *     crash-after-ms:N    after N ms: SIGKILL itself
 *     die-mid-migrate     exit 1 once half of an outgoing migration is written
 *     stall-mid-migrate   hang as stall does once half of it is written
 *     migrate-bw:N        migrations (both ways) move N bytes/s unless
 *                         migrate-set-parameters says otherwise
 *     greedy-load         an incoming migration loads as QEMU 7.2 does: it
 *                         reads (and "loads" at the bandwidth) for as long as
 *                         the stream has bytes, answering nothing meanwhile,
 *                         and goes back to its main loop only when a read
 *                         would block (EAGAIN)
 *     fsize-limit:N       RLIMIT_FSIZE of N bytes (SIGXFSZ ignored): writes past
 *                         it fail with EFBIG, as on a full disk
 *   A malformed SPEC is a usage error: message on stderr, exit 2.
 *
 * EXIT STATUS  0 after quit, powerdown or a signal; 1 on a fault that dies
 *   or a monitor socket that cannot be set up; 2 on a usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#define FQ_MAX_FAULTS 16
#define FQ_MAX_FDS    16 /* descriptors received and not yet taken by getfd */
#define FQ_MAX_NAMED  16 /* descriptors held by getfd */
#define FQ_MAX_DISKS  16 /* -blockdev nodes */

/* A -blockdev node: block_resize changes its size, query-block shows it. */
struct fq_disk {
    char node[32];
    char file[512];
    int64_t size; /* 0 until block_resize: the fake does not read images */
    bool readonly;
};
#define FQ_READ_CHUNK 4096

enum fq_fault_kind {
    FQ_STALL,
    FQ_STALL_AFTER,
    FQ_LATE,
    FQ_DIE_BEFORE_GREETING,
    FQ_DIE_ON,
    FQ_ERROR_ON,
    FQ_GARBAGE_ON,
    FQ_IGNORE_POWERDOWN,
    FQ_IGNORE_SIGTERM,
    FQ_EXIT_AFTER_MS,
    FQ_CRASH_AFTER_MS,
    FQ_DIE_MID_MIGRATE,
    FQ_STALL_MID_MIGRATE,
    FQ_FSIZE_LIMIT,
    FQ_MIGRATE_BW,
    FQ_GREEDY_LOAD,
};

struct fq_fault {
    enum fq_fault_kind kind;
    char cmd[64]; /* the command it applies to, or "" */
    long n;       /* N or MS */
};

struct fq_named_fd {
    char name[64];
    int fd;
};

enum fq_run { FQ_PRELAUNCH, FQ_RUNNING, FQ_PAUSED, FQ_INMIGRATE, FQ_POSTMIGRATE };

#define FQ_MIG_MAGIC      "FAKEQEMU-MIGRATE" /* 16 bytes, then the length (8, LE), then data */
#define FQ_MIG_TICK_MS    20
#define FQ_MIG_DEFAULT_BW (64u * 1024u * 1024u)

enum fq_mig_dir { FQ_MIG_NONE = 0, FQ_MIG_OUT, FQ_MIG_IN };

/* The one migration (outgoing or incoming) this process runs. */
struct fq_mig {
    enum fq_mig_dir dir;
    const char *status; /* "none", "active", "completed", "failed", "cancelled" */
    int fd;
    uint64_t total, done; /* stream bytes after the 24-byte head */
    uint64_t bandwidth;   /* bytes/s */
    uint64_t last_ms;
    char error[160];
};

struct fq {
    const char *name;
    const char *pidfile;
    char *listen_path; /* we created it: unlinked at exit */
    int listen_fd;
    int conn_fd; /* -1: none */
    int sig_fd;
    unsigned smp;
    enum fq_run run;
    bool negotiated;
    bool stalled;
    bool powerdown_pending; /* asked while paused: honoured on cont */
    unsigned long commands; /* answered or taken, all connections */
    struct fq_fault faults[FQ_MAX_FAULTS];
    unsigned n_faults;
    uint64_t start_ms;
    json_tokener *tok;
    int fds[FQ_MAX_FDS]; /* received by SCM_RIGHTS, FIFO */
    unsigned n_fds;
    struct fq_named_fd named[FQ_MAX_NAMED];
    uint64_t mem_mib; /* -m */
    struct fq_mig mig;
    struct fq_disk disks[FQ_MAX_DISKS]; /* from -blockdev */
    unsigned n_disks;
};

static struct fq g; /* one per process; single-threaded */

static void fq_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fq_log(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "fake-qemu[%d] %s: ", (int)getpid(), g.name ? g.name : "-");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void fq_cleanup_files(void)
{
    if (g.listen_path)
        unlink(g.listen_path);
    if (g.pidfile)
        unlink(g.pidfile);
}

static _Noreturn void fq_exit(int status, const char *why)
{
    fq_log("exiting with status %d: %s", status, why);
    fq_cleanup_files();
    exit(status);
}

static uint64_t fq_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- faults ---------------------------------------------------------- */

static const struct {
    const char *word;
    enum fq_fault_kind kind;
    int args; /* 0: none; 1: CMD; 2: N; 3: CMD:MS */
} fq_fault_words[] = {
    {"stall", FQ_STALL, 1},
    {"stall-after", FQ_STALL_AFTER, 2},
    {"late", FQ_LATE, 3},
    {"die-before-greeting", FQ_DIE_BEFORE_GREETING, 0},
    {"die-on", FQ_DIE_ON, 1},
    {"error-on", FQ_ERROR_ON, 1},
    {"garbage-on", FQ_GARBAGE_ON, 1},
    {"ignore-powerdown", FQ_IGNORE_POWERDOWN, 0},
    {"ignore-sigterm", FQ_IGNORE_SIGTERM, 0},
    {"exit-after-ms", FQ_EXIT_AFTER_MS, 2},
    {"crash-after-ms", FQ_CRASH_AFTER_MS, 2},
    {"die-mid-migrate", FQ_DIE_MID_MIGRATE, 0},
    {"stall-mid-migrate", FQ_STALL_MID_MIGRATE, 0},
    {"fsize-limit", FQ_FSIZE_LIMIT, 2},
    {"migrate-bw", FQ_MIGRATE_BW, 2},
    {"greedy-load", FQ_GREEDY_LOAD, 0},
};

static bool fq_parse_number(const char *s, long *out)
{
    char *end;
    long v;

    if (!*s)
        return false;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < 0)
        return false;
    *out = v;
    return true;
}

/* A command name argument: non-empty, no ':', fits f->cmd. */
static bool fq_parse_cmd(const char *arg, struct fq_fault *f)
{
    if (!arg || !*arg || strchr(arg, ':') || strlen(arg) >= sizeof(f->cmd))
        return false;
    strcpy(f->cmd, arg);
    return true;
}

/* One "kind[:arg[:arg]]" item into @f. */
static bool fq_parse_fault(char *item, struct fq_fault *f)
{
    char *arg = strchr(item, ':'), *ms;

    if (arg)
        *arg++ = '\0';
    for (size_t i = 0; i < sizeof(fq_fault_words) / sizeof(fq_fault_words[0]); i++) {
        if (strcmp(item, fq_fault_words[i].word) != 0)
            continue;
        memset(f, 0, sizeof(*f));
        f->kind = fq_fault_words[i].kind;
        switch (fq_fault_words[i].args) {
        case 0:
            return arg == NULL;
        case 1:
            return fq_parse_cmd(arg, f);
        case 2:
            return arg && fq_parse_number(arg, &f->n);
        default: /* CMD:MS */
            ms = arg ? strchr(arg, ':') : NULL;
            if (!ms)
                return false;
            *ms++ = '\0';
            return fq_parse_cmd(arg, f) && fq_parse_number(ms, &f->n);
        }
    }
    return false;
}

static void fq_parse_faults(const char *spec)
{
    char *copy = strdup(spec);
    char *save = NULL;

    if (!copy)
        fq_exit(1, "out of memory");
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char shown[128];

        snprintf(shown, sizeof(shown), "%s", item);
        if (g.n_faults == FQ_MAX_FAULTS) {
            fq_log("too many faults (at most %d)", FQ_MAX_FAULTS);
            exit(2);
        }
        if (!fq_parse_fault(item, &g.faults[g.n_faults])) {
            fq_log("bad fault '%s' in '%s' (see the top of tests/vmd/fake-qemu.c)", shown, spec);
            exit(2);
        }
        g.n_faults++;
    }
    free(copy);
}

/* The first fault of @kind (for @cmd, when it names one), or NULL. */
static const struct fq_fault *fq_fault(enum fq_fault_kind kind, const char *cmd)
{
    for (unsigned i = 0; i < g.n_faults; i++) {
        const struct fq_fault *f = &g.faults[i];

        if (f->kind == kind && (!f->cmd[0] || (cmd && strcmp(f->cmd, cmd) == 0)))
            return f;
    }
    return NULL;
}

/* ---- output ---------------------------------------------------------- */

/* Send @obj as one line ending in CRLF, as QEMU does, and put it. A peer
 * that went away is noticed by the next read, so a failed write only drops
 * the line. */
static void fq_send(json_object *obj)
{
    const char *text = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN);
    size_t len = strlen(text), off = 0;
    char *line = malloc(len + 3);

    if (!line)
        fq_exit(1, "out of memory");
    memcpy(line, text, len);
    memcpy(line + len, "\r\n", 3);
    len += 2;
    while (g.conn_fd >= 0 && off < len) {
        ssize_t w = send(g.conn_fd, line + off, len - off, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            break;
        off += (size_t)w;
    }
    free(line);
    json_object_put(obj);
}

static json_object *fq_timestamp(void)
{
    struct timeval tv;
    json_object *ts = json_object_new_object();

    gettimeofday(&tv, NULL);
    json_object_object_add(ts, "seconds", json_object_new_int64(tv.tv_sec));
    json_object_object_add(ts, "microseconds", json_object_new_int64(tv.tv_usec));
    return ts;
}

/* An event; @data (may be NULL: no "data" member, as QEMU's STOP) is taken. */
static void fq_event(const char *name, json_object *data)
{
    json_object *ev = json_object_new_object();

    if (g.stalled || g.conn_fd < 0 || !g.negotiated) {
        json_object_put(data);
        json_object_put(ev);
        return;
    }
    json_object_object_add(ev, "event", json_object_new_string(name));
    if (data)
        json_object_object_add(ev, "data", data);
    json_object_object_add(ev, "timestamp", fq_timestamp());
    fq_send(ev);
}

static json_object *fq_shutdown_data(bool guest, const char *reason)
{
    json_object *d = json_object_new_object();

    json_object_object_add(d, "guest", json_object_new_boolean(guest));
    json_object_object_add(d, "reason", json_object_new_string(reason));
    return d;
}

/* A reply: @ret (taken) is the "return" value. @id (borrowed) may be NULL. */
static void fq_reply(json_object *id, json_object *ret)
{
    json_object *r = json_object_new_object();

    json_object_object_add(r, "return", ret);
    if (id)
        json_object_object_add(r, "id", json_object_get(id));
    fq_send(r);
}

static void fq_error(json_object *id, const char *klass, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fq_error(json_object *id, const char *klass, const char *fmt, ...)
{
    char desc[256];
    va_list ap;
    json_object *r = json_object_new_object(), *e = json_object_new_object();

    va_start(ap, fmt);
    vsnprintf(desc, sizeof(desc), fmt, ap);
    va_end(ap);
    json_object_object_add(e, "class", json_object_new_string(klass));
    json_object_object_add(e, "desc", json_object_new_string(desc));
    json_object_object_add(r, "error", e);
    if (id)
        json_object_object_add(r, "id", json_object_get(id));
    fq_send(r);
}

static void fq_greeting(void)
{
    json_object *ver = json_object_new_object(), *q = json_object_new_object();
    json_object *qmp = json_object_new_object(), *g_ = json_object_new_object();

    json_object_object_add(q, "major", json_object_new_int(8));
    json_object_object_add(q, "minor", json_object_new_int(2));
    json_object_object_add(q, "micro", json_object_new_int(0));
    json_object_object_add(ver, "qemu", q);
    json_object_object_add(ver, "package", json_object_new_string("fake-qemu"));
    json_object_object_add(qmp, "version", ver);
    json_object_object_add(qmp, "capabilities", json_object_new_array());
    json_object_object_add(g_, "QMP", qmp);
    fq_send(g_);
}

/* ---- the guest ------------------------------------------------------- */

static _Noreturn void fq_shutdown(bool guest, const char *reason)
{
    fq_event("SHUTDOWN", fq_shutdown_data(guest, reason));
    fq_exit(0, reason);
}

static void fq_powerdown(void)
{
    fq_event("POWERDOWN", NULL);
    if (fq_fault(FQ_IGNORE_POWERDOWN, NULL)) {
        fq_log("system_powerdown ignored (fault ignore-powerdown)");
        return;
    }
    if (g.run != FQ_RUNNING) {
        g.powerdown_pending = true; /* a stopped guest handles ACPI once resumed */
        return;
    }
    fq_shutdown(true, "guest-shutdown");
}

static void fq_hang(const char *why)
{
    fq_log("hung: %s", why);
    g.stalled = true;
}

/* ---- commands -------------------------------------------------------- */

static json_object *fq_query_status(void)
{
    static const char *const names[] = {"prelaunch", "running", "paused", "inmigrate",
                                        "postmigrate"};
    json_object *r = json_object_new_object();

    json_object_object_add(r, "status", json_object_new_string(names[g.run]));
    json_object_object_add(r, "singlestep", json_object_new_boolean(false));
    json_object_object_add(r, "running", json_object_new_boolean(g.run == FQ_RUNNING));
    return r;
}

static json_object *fq_query_cpus_fast(void)
{
    json_object *a = json_object_new_array();

    for (unsigned i = 0; i < g.smp; i++) {
        json_object *c = json_object_new_object(), *props = json_object_new_object();
        char path[64];

        snprintf(path, sizeof(path), "/machine/unattached/device[%u]", i);
        json_object_object_add(props, "core-id", json_object_new_int(0));
        json_object_object_add(props, "thread-id", json_object_new_int(0));
        json_object_object_add(props, "node-id", json_object_new_int(0));
        json_object_object_add(props, "socket-id", json_object_new_int((int)i));
        json_object_object_add(c, "cpu-index", json_object_new_int((int)i));
        json_object_object_add(c, "qom-path", json_object_new_string(path));
        json_object_object_add(c, "thread-id", json_object_new_int((int)getpid()));
        json_object_object_add(c, "props", props);
        json_object_object_add(c, "target", json_object_new_string("x86_64"));
        json_object_array_add(a, c);
    }
    return a;
}

static json_object *fq_query_version(void)
{
    json_object *ver = json_object_new_object(), *q = json_object_new_object();

    json_object_object_add(q, "major", json_object_new_int(8));
    json_object_object_add(q, "minor", json_object_new_int(2));
    json_object_object_add(q, "micro", json_object_new_int(0));
    json_object_object_add(ver, "qemu", q);
    json_object_object_add(ver, "package", json_object_new_string("fake-qemu"));
    return ver;
}

static const char *fq_arg_string(json_object *args, const char *key)
{
    json_object *v;

    if (!args || !json_object_object_get_ex(args, key, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static void fq_getfd(json_object *id, json_object *args)
{
    const char *name = fq_arg_string(args, "fdname");
    struct fq_named_fd *slot = NULL;

    if (!name || !*name || strlen(name) >= sizeof(slot->name)) {
        fq_error(id, "GenericError", "Parameter 'fdname' is missing or invalid");
        return;
    }
    if (g.n_fds == 0) {
        fq_error(id, "GenericError", "No file descriptor supplied via SCM_RIGHTS");
        return;
    }
    for (unsigned i = 0; i < FQ_MAX_NAMED && !slot; i++)
        if (g.named[i].fd >= 0 && strcmp(g.named[i].name, name) == 0)
            slot = &g.named[i];
    for (unsigned i = 0; i < FQ_MAX_NAMED && !slot; i++)
        if (g.named[i].fd < 0)
            slot = &g.named[i];
    if (!slot) {
        fq_error(id, "GenericError", "Too many named descriptors");
        return;
    }
    if (slot->fd >= 0)
        close(slot->fd); /* QEMU replaces a descriptor of the same name */
    slot->fd = g.fds[0];
    snprintf(slot->name, sizeof(slot->name), "%s", name);
    memmove(g.fds, g.fds + 1, (--g.n_fds) * sizeof(g.fds[0]));
    fq_reply(id, json_object_new_object());
}

static void fq_closefd(json_object *id, json_object *args)
{
    const char *name = fq_arg_string(args, "fdname");

    for (unsigned i = 0; name && i < FQ_MAX_NAMED; i++) {
        if (g.named[i].fd >= 0 && strcmp(g.named[i].name, name) == 0) {
            close(g.named[i].fd);
            g.named[i].fd = -1;
            fq_reply(id, json_object_new_object());
            return;
        }
    }
    fq_error(id, "GenericError", "File descriptor named '%s' not found", name ? name : "");
}

/* ---- migration ------------------------------------------------------ */

static void fq_fsize_limit(void)
{
    const struct fq_fault *f = fq_fault(FQ_FSIZE_LIMIT, NULL);
    struct rlimit rl;

    if (!f)
        return;
    signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG instead */
    rl.rlim_cur = rl.rlim_max = (rlim_t)f->n;
    if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
        fq_exit(1, "setrlimit(RLIMIT_FSIZE) failed");
}

/* Take the descriptor getfd named @uri's "fd:NAME" (-1: none). */
static int fq_take_named(const char *uri)
{
    if (!uri || strncmp(uri, "fd:", 3) != 0)
        return -1;
    for (unsigned i = 0; i < FQ_MAX_NAMED; i++) {
        if (g.named[i].fd >= 0 && strcmp(g.named[i].name, uri + 3) == 0) {
            int fd = g.named[i].fd;
            g.named[i].fd = -1;
            return fd;
        }
    }
    return -1;
}

static void fq_mig_end(const char *status, const char *error)
{
    g.mig.status = status;
    snprintf(g.mig.error, sizeof(g.mig.error), "%s", error ? error : "");
    if (g.mig.fd >= 0)
        close(g.mig.fd);
    g.mig.fd = -1;
    fq_log("migration %s%s%s", status, error ? ": " : "", error ? error : "");
    if (strcmp(status, "completed") == 0 && g.mig.dir == FQ_MIG_OUT)
        g.run = FQ_POSTMIGRATE;
    else if (strcmp(status, "completed") == 0)
        g.run = FQ_PAUSED; /* -S: the guest waits for cont */
}

static bool fq_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        len -= (size_t)w;
    }
    return true;
}

static bool fq_read_all(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        len -= (size_t)r;
    }
    return true;
}

/* This tick's share of the stream, by the bandwidth. */
static size_t fq_mig_chunk(void)
{
    uint64_t now = fq_now_ms(), ms = now - g.mig.last_ms;
    uint64_t n = g.mig.bandwidth * ms / 1000, left = g.mig.total - g.mig.done;

    if (n == 0)
        return 0;
    g.mig.last_ms = now;
    if (n > left)
        n = left;
    return n > (1u << 22) ? (1u << 22) : (size_t)n;
}

static void fq_mig_tick_out(void)
{
    static char buf[1u << 22];
    size_t n = fq_mig_chunk();

    if (n == 0 && g.mig.done < g.mig.total)
        return;
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)((g.mig.done + i) & 0xff);
    if (n && !fq_write_all(g.mig.fd, buf, n)) {
        char e[96];
        snprintf(e, sizeof(e), "Unable to write to file: %s", strerror(errno));
        fq_mig_end("failed", e);
        return;
    }
    bool half = g.mig.done < g.mig.total / 2 && g.mig.done + n >= g.mig.total / 2;
    g.mig.done += n;
    if (half && fq_fault(FQ_DIE_MID_MIGRATE, NULL))
        fq_exit(1, "fault die-mid-migrate");
    if (half && fq_fault(FQ_STALL_MID_MIGRATE, NULL))
        fq_hang("stall-mid-migrate");
    if (g.mig.done == g.mig.total)
        fq_mig_end("completed", NULL);
}

/* greedy-load: read and load (at the bandwidth) until a read would block,
 * the stream ends or it is all there; QMP waits meanwhile. */
static void fq_mig_load_greedy(void)
{
    static char buf[64 * 1024];
    uint64_t bw = g.mig.bandwidth ? g.mig.bandwidth : FQ_MIG_DEFAULT_BW;

    while (g.mig.done < g.mig.total) {
        ssize_t r = read(g.mig.fd, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return; /* QEMU's coroutine yields here */
        if (r <= 0) {
            fq_mig_end("failed", r < 0 ? "read error" : "the stream ended early");
            return;
        }
        uint64_t ns = (uint64_t)r * 1000000000u / bw;
        struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        g.mig.done += (uint64_t)r;
    }
    if (g.mig.done > g.mig.total)
        fq_mig_end("failed", "the stream is longer than it said");
    else
        fq_mig_end("completed", NULL);
}

static void fq_mig_tick_in(void)
{
    if (fq_fault(FQ_GREEDY_LOAD, NULL)) {
        fq_mig_load_greedy();
        return;
    }
    static char buf[1u << 22];
    size_t n = fq_mig_chunk(), got = 0;
    bool eof = false;

    while (got < n) { /* a pipe gives at most its buffer per read */
        ssize_t r = read(g.mig.fd, buf, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            break;
        if (r < 0) {
            fq_mig_end("failed", "read error");
            return;
        }
        if (r == 0) {
            eof = true;
            break;
        }
        got += (size_t)r;
    }
    g.mig.done += got;
    if (g.mig.done > g.mig.total)
        fq_mig_end("failed", "the stream is longer than it said");
    else if (g.mig.done == g.mig.total)
        fq_mig_end("completed", NULL);
    else if (eof)
        fq_mig_end("failed", "the stream ended early");
}

static void fq_mig_tick(void)
{
    if (g.mig.dir == FQ_MIG_OUT)
        fq_mig_tick_out();
    else
        fq_mig_tick_in();
}

static void fq_migrate(json_object *id, json_object *args)
{
    unsigned char head[24];
    int fd = fq_take_named(fq_arg_string(args, "uri"));

    if (fd < 0) {
        fq_error(id, "GenericError", "uri must be fd:NAME of a descriptor from getfd");
        return;
    }
    if (g.mig.dir && strcmp(g.mig.status, "active") == 0) {
        close(fd);
        fq_error(id, "GenericError", "There's a migration process in progress");
        return;
    }
    g.mig.total = g.mem_mib * 1024 * 1024;
    memcpy(head, FQ_MIG_MAGIC, 16);
    for (int i = 0; i < 8; i++)
        head[16 + i] = (unsigned char)(g.mig.total >> (8 * i));
    g.mig.dir = FQ_MIG_OUT;
    g.mig.fd = fd;
    g.mig.done = 0;
    g.mig.status = "active";
    g.mig.last_ms = fq_now_ms();
    fq_reply(id, json_object_new_object());
    if (!fq_write_all(fd, head, sizeof(head)))
        fq_mig_end("failed", "Unable to write to file");
}

static void fq_migrate_incoming(json_object *id, json_object *args)
{
    unsigned char head[24];
    int fd = fq_take_named(fq_arg_string(args, "uri"));

    if (g.run != FQ_INMIGRATE || g.mig.dir) {
        if (fd >= 0)
            close(fd);
        fq_error(id, "GenericError", "'-incoming' was not specified on the command line");
        return;
    }
    if (fd < 0) {
        fq_error(id, "GenericError", "uri must be fd:NAME of a descriptor from getfd");
        return;
    }
    g.mig.dir = FQ_MIG_IN;
    g.mig.fd = fd;
    g.mig.done = 0;
    g.mig.status = "active";
    g.mig.last_ms = fq_now_ms();
    fq_reply(id, json_object_new_object());
    if (!fq_read_all(fd, head, sizeof(head)) || memcmp(head, FQ_MIG_MAGIC, 16) != 0) {
        fq_mig_end("failed", "not a fake-qemu migration stream");
        return;
    }
    g.mig.total = 0;
    for (int i = 0; i < 8; i++)
        g.mig.total |= (uint64_t)head[16 + i] << (8 * i);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); /* the main loop must not block on it */
}

static json_object *fq_query_migrate(void)
{
    json_object *r = json_object_new_object();

    json_object_object_add(r, "status", json_object_new_string(g.mig.status));
    if (g.mig.dir == FQ_MIG_OUT) {
        json_object *ram = json_object_new_object();
        json_object_object_add(ram, "transferred", json_object_new_int64((int64_t)g.mig.done));
        json_object_object_add(ram, "total", json_object_new_int64((int64_t)g.mig.total));
        json_object_object_add(ram, "remaining",
                               json_object_new_int64((int64_t)(g.mig.total - g.mig.done)));
        json_object_object_add(r, "ram", ram);
    }
    if (strcmp(g.mig.status, "failed") == 0)
        json_object_object_add(r, "error-desc", json_object_new_string(g.mig.error));
    return r;
}

static void fq_set_parameters(json_object *id, json_object *args)
{
    json_object *v;

    if (args && json_object_object_get_ex(args, "downtime-limit", &v)) {
        int64_t ms = json_object_get_int64(v);
        if (!json_object_is_type(v, json_type_int) || ms < 0 || ms > 2000000) {
            fq_error(id, "GenericError",
                     "Parameter 'downtime_limit' expects an integer in the range of 0 to 2000 "
                     "seconds");
            return;
        }
        fq_log("migrate-set-parameters: downtime-limit %lld ms", (long long)ms);
    }

    if (args && json_object_object_get_ex(args, "max-bandwidth", &v) &&
        json_object_get_int64(v) > 0)
        g.mig.bandwidth = (uint64_t)json_object_get_int64(v);
    fq_reply(id, json_object_new_object());
}

/* The migration commands; false when @cmd is none of them. */
static bool fq_migrate_command(const char *cmd, json_object *id, json_object *args)
{
    if (strcmp(cmd, "migrate") == 0)
        fq_migrate(id, args);
    else if (strcmp(cmd, "migrate-incoming") == 0)
        fq_migrate_incoming(id, args);
    else if (strcmp(cmd, "query-migrate") == 0)
        fq_reply(id, fq_query_migrate());
    else if (strcmp(cmd, "migrate-set-parameters") == 0)
        fq_set_parameters(id, args);
    else if (strcmp(cmd, "migrate_cancel") == 0) {
        if (g.mig.dir == FQ_MIG_OUT && strcmp(g.mig.status, "active") == 0)
            fq_mig_end("cancelled", NULL);
        fq_reply(id, json_object_new_object());
    } else
        return false;
    return true;
}

/* -blockdev {"driver":..,"node-name":..,"read-only":..,"file":{"filename":..}} */
static void fq_blockdev(const char *v)
{
    json_object *j = json_tokener_parse(v), *node, *file, *name, *ro;
    struct fq_disk *d = g.n_disks < FQ_MAX_DISKS ? &g.disks[g.n_disks] : NULL;

    if (!d || !j || !json_object_object_get_ex(j, "node-name", &node) ||
        !json_object_object_get_ex(j, "file", &file) ||
        !json_object_object_get_ex(file, "filename", &name))
        fq_exit(2, "bad -blockdev");
    snprintf(d->node, sizeof(d->node), "%s", json_object_get_string(node));
    snprintf(d->file, sizeof(d->file), "%s", json_object_get_string(name));
    d->readonly = json_object_object_get_ex(j, "read-only", &ro) && json_object_get_boolean(ro);
    g.n_disks++;
    json_object_put(j);
}

static void fq_block_resize(json_object *id, json_object *args)
{
    const char *node = fq_arg_string(args, "node-name");
    json_object *size = NULL;

    json_object_object_get_ex(args, "size", &size);
    for (unsigned i = 0; node && i < g.n_disks; i++) {
        if (strcmp(g.disks[i].node, node) != 0)
            continue;
        if (g.disks[i].readonly) {
            fq_error(id, "GenericError", "Block node is read-only");
            return;
        }
        g.disks[i].size = json_object_get_int64(size);
        fq_reply(id, json_object_new_object());
        return;
    }
    fq_error(id, "GenericError", "Cannot find device='' nor node-name='%s'", node ? node : "");
}

static json_object *fq_query_block(void)
{
    json_object *arr = json_object_new_array();

    for (unsigned i = 0; i < g.n_disks; i++) {
        json_object *o = json_object_new_object(), *ins = json_object_new_object(),
                    *img = json_object_new_object();

        json_object_object_add(img, "filename", json_object_new_string(g.disks[i].file));
        json_object_object_add(img, "virtual-size", json_object_new_int64(g.disks[i].size));
        json_object_object_add(ins, "node-name", json_object_new_string(g.disks[i].node));
        json_object_object_add(ins, "file", json_object_new_string(g.disks[i].file));
        json_object_object_add(ins, "ro", json_object_new_boolean(g.disks[i].readonly));
        json_object_object_add(ins, "image", img);
        json_object_object_add(o, "device", json_object_new_string(""));
        json_object_object_add(o, "inserted", ins);
        json_object_array_add(arr, o);
    }
    return arr;
}

/* Run @cmd: reply and events as QEMU orders them. */
static void fq_execute(const char *cmd, json_object *id, json_object *args)
{
    if (strcmp(cmd, "qmp_capabilities") == 0) {
        if (g.negotiated) {
            fq_error(id, "CommandNotFound",
                     "Capabilities negotiation is already complete, command ignored");
            return;
        }
        g.negotiated = true;
        fq_reply(id, json_object_new_object());
    } else if (!g.negotiated) {
        fq_error(id, "CommandNotFound",
                 "Expecting capabilities negotiation with 'qmp_capabilities'");
    } else if (strcmp(cmd, "query-status") == 0) {
        fq_reply(id, fq_query_status());
    } else if (strcmp(cmd, "stop") == 0) {
        if (g.run == FQ_RUNNING) {
            g.run = FQ_PAUSED;
            fq_event("STOP", NULL);
        }
        fq_reply(id, json_object_new_object());
    } else if (strcmp(cmd, "cont") == 0) {
        if (g.run != FQ_RUNNING) {
            g.run = FQ_RUNNING;
            fq_event("RESUME", NULL);
        }
        fq_reply(id, json_object_new_object());
        if (g.powerdown_pending)
            fq_shutdown(true, "guest-shutdown");
    } else if (strcmp(cmd, "system_reset") == 0) {
        fq_reply(id, json_object_new_object());
        fq_event("RESET", fq_shutdown_data(false, "host-qmp-system-reset"));
    } else if (strcmp(cmd, "system_powerdown") == 0) {
        fq_reply(id, json_object_new_object());
        fq_powerdown();
    } else if (strcmp(cmd, "quit") == 0) {
        fq_reply(id, json_object_new_object());
        fq_shutdown(false, "host-qmp-quit");
    } else if (strcmp(cmd, "query-cpus-fast") == 0) {
        fq_reply(id, fq_query_cpus_fast());
    } else if (strcmp(cmd, "query-blockstats") == 0) {
        fq_reply(id, json_object_new_array());
    } else if (strcmp(cmd, "query-version") == 0) {
        fq_reply(id, fq_query_version());
    } else if (strcmp(cmd, "block_resize") == 0) {
        fq_block_resize(id, args);
    } else if (strcmp(cmd, "query-block") == 0) {
        fq_reply(id, fq_query_block());
    } else if (strcmp(cmd, "getfd") == 0) {
        fq_getfd(id, args);
    } else if (strcmp(cmd, "closefd") == 0) {
        fq_closefd(id, args);
    } else if (fq_migrate_command(cmd, id, args)) {
        /* answered */
    } else {
        fq_error(id, "CommandNotFound", "The command %s has not been found", cmd);
    }
}

/* A parsed message from the client: faults first, then the command. */
static void fq_handle(json_object *msg)
{
    json_object *exec = NULL, *id = NULL, *args = NULL;
    const struct fq_fault *f;
    const char *cmd;

    if (g.stalled)
        return;
    json_object_object_get_ex(msg, "id", &id);
    if (!json_object_is_type(msg, json_type_object) ||
        !json_object_object_get_ex(msg, "execute", &exec) ||
        !json_object_is_type(exec, json_type_string)) {
        fq_error(id, "GenericError", "QMP input must be a JSON object with 'execute'");
        return;
    }
    json_object_object_get_ex(msg, "arguments", &args);
    cmd = json_object_get_string(exec);
    f = fq_fault(FQ_STALL_AFTER, NULL);
    if (f && g.commands >= (unsigned long)f->n) {
        fq_hang("stall-after reached");
        return;
    }
    g.commands++;
    if (fq_fault(FQ_STALL, cmd)) {
        fq_hang(cmd);
        return;
    }
    if (fq_fault(FQ_DIE_ON, cmd))
        fq_exit(1, "fault die-on");
    if ((f = fq_fault(FQ_LATE, cmd))) {
        struct timespec ts = {f->n / 1000, (f->n % 1000) * 1000000L};

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
    if (fq_fault(FQ_ERROR_ON, cmd)) {
        fq_error(id, "GenericError", "fake-qemu refuses %s (fault error-on)", cmd);
        return;
    }
    if (fq_fault(FQ_GARBAGE_ON, cmd)) {
        static const char garbage[] = "}}not json\x01{{\r\n";

        if (send(g.conn_fd, garbage, sizeof(garbage) - 1, MSG_NOSIGNAL) < 0)
            fq_log("garbage not sent: %s", strerror(errno));
        return;
    }
    fq_execute(cmd, id, args);
}

/* ---- the monitor socket ---------------------------------------------- */

static void fq_close_conn(void)
{
    if (g.conn_fd < 0)
        return;
    close(g.conn_fd);
    g.conn_fd = -1;
    g.negotiated = false;
    for (unsigned i = 0; i < g.n_fds; i++)
        close(g.fds[i]);
    g.n_fds = 0;
    json_tokener_reset(g.tok);
}

static void fq_accept(void)
{
    int fd = accept4(g.listen_fd, NULL, NULL, SOCK_CLOEXEC);

    if (fd < 0) {
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
            fq_exit(1, "accept failed");
        return;
    }
    g.conn_fd = fd;
    g.negotiated = false;
    if (fq_fault(FQ_DIE_BEFORE_GREETING, NULL))
        fq_exit(1, "fault die-before-greeting");
    if (!g.stalled)
        fq_greeting();
}

/* Keep descriptors that came with the bytes (SCM_RIGHTS). */
static void fq_take_fds(struct msghdr *mh)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int fds[FQ_MAX_FDS];

        if (n > FQ_MAX_FDS)
            n = FQ_MAX_FDS;
        memcpy(fds, CMSG_DATA(c), n * sizeof(int));
        for (size_t i = 0; i < n; i++) {
            if (g.n_fds < FQ_MAX_FDS)
                g.fds[g.n_fds++] = fds[i];
            else
                close(fds[i]);
        }
    }
}

/* Feed @len bytes to the JSON parser; handle each complete message. */
static void fq_parse(const char *buf, size_t len)
{
    size_t off = 0;

    while (off < len && g.conn_fd >= 0) {
        json_object *msg;
        enum json_tokener_error jerr;

        while (off < len &&
               (buf[off] == ' ' || buf[off] == '\n' || buf[off] == '\r' || buf[off] == '\t'))
            off++;
        if (off == len)
            return;
        msg = json_tokener_parse_ex(g.tok, buf + off, (int)(len - off));
        jerr = json_tokener_get_error(g.tok);
        if (jerr == json_tokener_continue)
            return;
        if (jerr != json_tokener_success) {
            const char *nl = memchr(buf + off, '\n', len - off);

            json_tokener_reset(g.tok);
            if (!g.stalled)
                fq_error(NULL, "GenericError", "JSON parse error, %s",
                         json_tokener_error_desc(jerr));
            off = nl ? (size_t)(nl - buf) + 1 : len;
            continue;
        }
        off += (size_t)json_tokener_get_parse_end(g.tok);
        json_tokener_reset(g.tok);
        fq_handle(msg);
        json_object_put(msg);
    }
}

static void fq_read(void)
{
    char buf[FQ_READ_CHUNK];
    union {
        char buf[CMSG_SPACE(sizeof(int) * FQ_MAX_FDS)];
        struct cmsghdr align;
    } cbuf;
    struct iovec iov = {buf, sizeof(buf)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n;

    mh.msg_control = cbuf.buf;
    mh.msg_controllen = sizeof(cbuf.buf);
    n = recvmsg(g.conn_fd, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        fq_log("monitor client went away");
        fq_close_conn();
        return;
    }
    fq_take_fds(&mh);
    fq_parse(buf, (size_t)n);
}

static int fq_listen_path(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        fq_log("socket path too long: %s", path);
        exit(1);
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0) {
        fq_log("cannot listen on %s: %s", path, strerror(errno));
        exit(1);
    }
    g.listen_path = strdup(path);
    return fd;
}

static int fq_listen_inherited(const char *text)
{
    long fd;
    int on = 0;
    socklen_t len = sizeof(on);

    if (!fq_parse_number(text, &fd) || fd > INT_MAX ||
        getsockopt((int)fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0 || !on) {
        fq_log("fd=%s is not a listening socket", text);
        exit(1);
    }
    fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    return (int)fd;
}

/* The value of "key=" in a comma-separated option string, copied to @out. */
static bool fq_opt(const char *opts, const char *key, char *out, size_t size)
{
    size_t klen = strlen(key);

    for (const char *p = opts; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
            const char *v = p + klen + 1, *end = strchr(v, ',');
            size_t n = end ? (size_t)(end - v) : strlen(v);

            if (n >= size)
                return false;
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
    }
    return false;
}

/* -chardev socket,...: fd=N or path=P. */
static void fq_chardev(const char *opts)
{
    char v[PATH_MAX];

    if (strncmp(opts, "socket,", 7) != 0)
        return; /* other backends: not a monitor we serve */
    if (g.listen_fd >= 0) {
        fq_log("more than one socket chardev: serving the first");
        return;
    }
    if (fq_opt(opts, "fd", v, sizeof(v)))
        g.listen_fd = fq_listen_inherited(v);
    else if (fq_opt(opts, "path", v, sizeof(v)))
        g.listen_fd = fq_listen_path(v);
}

/* -qmp unix:PATH[,server=on,...] */
static void fq_qmp(const char *spec)
{
    char path[PATH_MAX];
    const char *comma;
    size_t n;

    if (strncmp(spec, "unix:", 5) != 0 || g.listen_fd >= 0)
        return;
    comma = strchr(spec + 5, ',');
    n = comma ? (size_t)(comma - spec - 5) : strlen(spec + 5);
    if (n == 0 || n >= sizeof(path))
        fq_exit(2, "bad -qmp");
    memcpy(path, spec + 5, n);
    path[n] = '\0';
    g.listen_fd = fq_listen_path(path);
}

static void fq_write_pidfile(void)
{
    char tmp[PATH_MAX];
    FILE *f;

    if (!g.pidfile)
        return;
    snprintf(tmp, sizeof(tmp), "%s.tmp%d", g.pidfile, (int)getpid());
    f = fopen(tmp, "we");
    if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0 ||
        fclose(f) != 0 || rename(tmp, g.pidfile) < 0) {
        fq_log("cannot write pidfile %s: %s", g.pidfile, strerror(errno));
        exit(1);
    }
}

static void fq_parse_argv(int argc, char **argv)
{
    static const char *const no_value[] = {"-S",           "-nodefaults", "-no-user-config",
                                           "-no-shutdown", "-no-reboot",  "-enable-kvm"};
    bool paused = false, incoming = false;

    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool flag = false;

        for (size_t k = 0; k < sizeof(no_value) / sizeof(no_value[0]); k++)
            flag |= strcmp(o, no_value[k]) == 0;
        if (strcmp(o, "-S") == 0)
            paused = true;
        if (flag || o[0] != '-' || !v || (v[0] == '-' && v[1] != '\0'))
            continue;
        i++;
        if (strcmp(o, "-name") == 0) {
            char *c = strdup(v);

            if (c && strchr(c, ','))
                *strchr(c, ',') = '\0';
            g.name = c;
        } else if (strcmp(o, "-pidfile") == 0) {
            g.pidfile = v;
        } else if (strcmp(o, "-smp") == 0) {
            long n;
            char first[16];

            snprintf(first, sizeof(first), "%.*s", (int)strcspn(v, ","), v);
            if (!fq_parse_number(first, &n) || n < 1 || n > 1024)
                fq_exit(2, "bad -smp");
            g.smp = (unsigned)n;
        } else if (strcmp(o, "-chardev") == 0) {
            fq_chardev(v);
        } else if (strcmp(o, "-blockdev") == 0) {
            fq_blockdev(v);
        } else if (strcmp(o, "-qmp") == 0) {
            fq_qmp(v);
        } else if (strcmp(o, "-fake-faults") == 0) {
            fq_parse_faults(v);
        } else if (strcmp(o, "-m") == 0) {
            long n;
            if (!fq_parse_number(v, &n) || n < 1)
                fq_exit(2, "bad -m");
            g.mem_mib = (uint64_t)n;
        } else if (strcmp(o, "-incoming") == 0) {
            if (strcmp(v, "defer") != 0)
                fq_exit(2, "only -incoming defer is supported");
            incoming = true;
        }
    }
    g.run = incoming ? FQ_INMIGRATE : paused ? FQ_PRELAUNCH : FQ_RUNNING;
}

/* ---- main loop ------------------------------------------------------- */

static int fq_signalfd(void)
{
    sigset_t set;
    int fd;

    /* Dispositions survive exec: a parent that ignored these (a daemon
     * often ignores SIGPIPE and may ignore others) must not make us deaf. */
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (fq_fault(FQ_IGNORE_SIGTERM, NULL))
        signal(SIGTERM, SIG_IGN);
    else
        sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    fd = signalfd(-1, &set, SFD_CLOEXEC);
    if (fd < 0)
        fq_exit(1, "signalfd failed");
    return fd;
}

static void fq_on_signal(void)
{
    struct signalfd_siginfo si;

    if (read(g.sig_fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
        return;
    fq_log("terminating on signal %u from pid %u", si.ssi_signo, si.ssi_pid);
    fq_shutdown(false, "host-signal");
}

/* Milliseconds until the next timed fault (-1: none); fires those due. */
static int fq_timers(void)
{
    uint64_t age = fq_now_ms() - g.start_ms;
    const struct fq_fault *crash = fq_fault(FQ_CRASH_AFTER_MS, NULL);
    const struct fq_fault *quit = fq_fault(FQ_EXIT_AFTER_MS, NULL);
    long next = -1;

    if (crash && age >= (uint64_t)crash->n) {
        fq_log("crashing (fault crash-after-ms)"); /* leaves its files, as a crash does */
        kill(getpid(), SIGKILL);
    }
    if (quit && age >= (uint64_t)quit->n)
        fq_shutdown(true, "guest-shutdown");
    if (crash)
        next = crash->n - (long)age;
    if (quit && (next < 0 || quit->n - (long)age < next))
        next = quit->n - (long)age;
    return next < 0 ? -1 : (int)next;
}

int main(int argc, char **argv)
{
    const char *env = getenv("FAKE_QEMU_FAULTS");

    g.listen_fd = g.conn_fd = -1;
    g.smp = 1;
    for (unsigned i = 0; i < FQ_MAX_NAMED; i++)
        g.named[i].fd = -1;
    g.start_ms = fq_now_ms();
    g.mem_mib = 128;
    g.mig.status = "none";
    g.mig.fd = -1;
    g.mig.bandwidth = FQ_MIG_DEFAULT_BW;
    g.tok = json_tokener_new_ex(32);
    if (!g.tok)
        fq_exit(1, "out of memory");
    if (env && *env)
        fq_parse_faults(env);
    fq_parse_argv(argc, argv);
    if (g.listen_fd < 0) {
        fq_log("no monitor: give -chardev socket,fd=N or path=P, or -qmp unix:P");
        exit(2);
    }
    g.sig_fd = fq_signalfd();
    fq_fsize_limit();
    if (fq_fault(FQ_MIGRATE_BW, NULL) && fq_fault(FQ_MIGRATE_BW, NULL)->n > 0)
        g.mig.bandwidth = (uint64_t)fq_fault(FQ_MIGRATE_BW, NULL)->n;
    fq_write_pidfile();
    fq_log("up, %s, monitor fd %d", g.run == FQ_RUNNING ? "running" : "prelaunch", g.listen_fd);
    for (;;) {
        struct pollfd p[2] = {{g.sig_fd, POLLIN, 0},
                              {g.conn_fd >= 0 ? g.conn_fd : g.listen_fd, POLLIN, 0}};
        int timeout = fq_timers();

        if (g.mig.dir && strcmp(g.mig.status, "active") == 0 && !g.stalled) {
            fq_mig_tick();
            if (timeout < 0 || timeout > FQ_MIG_TICK_MS)
                timeout = FQ_MIG_TICK_MS;
        }

        if (poll(p, 2, timeout) < 0 && errno != EINTR)
            fq_exit(1, "poll failed");
        if (p[0].revents & POLLIN)
            fq_on_signal();
        if (p[1].revents && g.conn_fd >= 0)
            fq_read();
        else if (p[1].revents)
            fq_accept();
    }
}
