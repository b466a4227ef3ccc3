/* SPDX-License-Identifier: MIT */
/*
 * qmp.c - the QMP codec, the handshake, and calls with the unresponsive
 * mark.
 *
 * The codec is stateless: frame cuts at '\n', classify parses one line
 * with json-c, encode prints {"execute":..,"arguments":..,"id":N}.
 *
 * A vmd_qmp holds the monitor and a leaf mutex guarding the mark and the
 * list of calls in flight (nodes on the callers' stacks). The mark records
 * the sum of the monitor's "something came from QEMU" counters (replies,
 * stray replies, events, ignored messages) when it was set; a later sum
 * that differs means QEMU spoke again, and the mark is cleared. So a late
 * reply to the very call that timed out (counted as stray) revives the
 * connection without any callback from the loop thread.
 */
#define _GNU_SOURCE /* POLLRDHUP */
#include "qmp.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <moor/object.h>

#include "log.h"

#define QMP_LINE_MAX      (64u << 10) /* a handshake line */
#define VMD_QMP_DEPTH_MAX 64          /* JSON nesting QEMU never exceeds */

/* ---- codec -------------------------------------------------------------- */

static ssize_t qmp_frame(void *opaque, const char *buf, size_t len, moor_error *err)
{
    const char *nl = memchr(buf, '\n', len);
    size_t n = nl ? (size_t)(nl - buf) + 1 : len;

    (void)opaque;
    if (memchr(buf, '\0', n))
        return moor_error_set(err, -EPROTO, "QMP: NUL byte in a line");
    return nl ? (ssize_t)n : 0;
}

bool vmd_qmp_command_ok(const char *s)
{
    size_t n = 0;

    if (!s || !*s)
        return false;
    for (; *s; s++, n++) {
        if (n >= VMD_QMP_COMMAND_MAX)
            return false;
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_'))
            return false;
    }
    return true;
}

static ssize_t qmp_encode(void *opaque, const void *request, uint64_t id, char *buf, size_t size,
                          moor_error *err)
{
    const struct vmd_qmp_cmd *cmd = request;
    const char *args = NULL;

    (void)opaque;
    if (!vmd_qmp_command_ok(cmd->execute))
        return moor_error_set(err, -EINVAL, "QMP: bad command name");
    if (cmd->arguments && !json_object_is_type(cmd->arguments, json_type_object))
        return moor_error_set(err, -EINVAL, "QMP: %s: arguments must be an object", cmd->execute);
    /* The arguments are this caller's alone: json-c caches the text in
     * the object, which races with nobody. */
    if (cmd->arguments)
        args = json_object_to_json_string_ext(cmd->arguments, JSON_C_TO_STRING_PLAIN);
    int n = snprintf(buf, size, "{\"execute\":\"%s\"%s%s,\"id\":%" PRIu64 "}\n", cmd->execute,
                     args ? ",\"arguments\":" : "", args ? args : "", id);
    return n < 0 ? moor_error_set(err, -EINVAL, "QMP: snprintf failed") : n;
}

/* A reply's id: a JSON integer >= 0. */
static bool reply_id(struct json_object *o, uint64_t *id)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, "id", &v) || !json_object_is_type(v, json_type_int))
        return false;
    errno = 0;
    int64_t n = json_object_get_int64(v);
    if (n < 0 || errno)
        return false;
    *id = (uint64_t)n;
    return true;
}

static const char *string_field(struct json_object *o, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* A refusal: the text "Class: desc" is kept inside the payload (under a
 * key QEMU never sends) so it lives exactly as long as the payload. */
static int classify_error(struct json_object *o, struct json_object *e, moor_monitor_message *out,
                          moor_error *err)
{
    char text[MOOR_ERROR_MESSAGE_SIZE];
    const char *cls = json_object_is_type(e, json_type_object) ? string_field(e, "class") : NULL;
    const char *desc = json_object_is_type(e, json_type_object) ? string_field(e, "desc") : NULL;

    if (!reply_id(o, &out->id))
        return moor_error_set(err, -EPROTO, "QMP: an error reply without an unsigned integer id");
    snprintf(text, sizeof(text), "%s: %s", cls ? cls : "GenericError",
             desc ? desc : "(no description)");
    struct json_object *t = json_object_new_string(text);
    if (!t || json_object_object_add(o, "moor-vmd-text", t) < 0) {
        json_object_put(t);
        return moor_error_set(err, -ENOMEM, "QMP: out of memory");
    }
    out->kind = MOOR_MONITOR_REPLY;
    out->status = -EREMOTEIO;
    out->error = json_object_get_string(t);
    out->payload = json_object_get(o);
    return 0;
}

static int classify_object(struct json_object *o, moor_monitor_message *out, moor_error *err)
{
    struct json_object *v;

    if (json_object_object_get_ex(o, "QMP", NULL)) {
        out->kind = MOOR_MONITOR_GREETING;
        out->payload = json_object_get(o);
        return 0;
    }
    if (json_object_object_get_ex(o, "event", &v)) {
        if (!json_object_is_type(v, json_type_string))
            return moor_error_set(err, -EPROTO, "QMP: an event whose name is not a string");
        out->kind = MOOR_MONITOR_EVENT;
        out->payload = json_object_get(o);
        return 0;
    }
    if (json_object_object_get_ex(o, "return", &v)) {
        if (!reply_id(o, &out->id))
            return moor_error_set(err, -EPROTO, "QMP: a reply without an unsigned integer id");
        out->kind = MOOR_MONITOR_REPLY;
        out->payload = json_object_get(v);
        return 0;
    }
    if (json_object_object_get_ex(o, "error", &v))
        return classify_error(o, v, out, err);
    out->kind = MOOR_MONITOR_IGNORE;
    return 0;
}

/* Parse one line (trailing blanks allowed) into one JSON object.
 * Ownership: *@out is a new reference. */
static int parse_line(const char *msg, size_t len, struct json_object **out, moor_error *err)
{
    while (len && (msg[len - 1] == '\n' || msg[len - 1] == '\r' || msg[len - 1] == ' ' ||
                   msg[len - 1] == '\t'))
        len--;
    if (!len) {
        *out = NULL;
        return 0;
    }
    if (len > INT32_MAX)
        return moor_error_set(err, -EPROTO, "QMP: line too long");
    struct json_tokener *tok = json_tokener_new_ex(VMD_QMP_DEPTH_MAX);
    if (!tok)
        return moor_error_set(err, -ENOMEM, "QMP: out of memory");
    struct json_object *o = json_tokener_parse_ex(tok, msg, (int)len);
    int rc = 0;
    if (!o || json_tokener_get_error(tok) != json_tokener_success ||
        json_tokener_get_parse_end(tok) != len)
        rc = moor_error_set(err, -EPROTO, "QMP: not one JSON value: %s",
                            o ? "trailing bytes"
                              : json_tokener_error_desc(json_tokener_get_error(tok)));
    else if (!json_object_is_type(o, json_type_object))
        rc = moor_error_set(err, -EPROTO, "QMP: not a JSON object");
    json_tokener_free(tok);
    if (rc < 0) {
        json_object_put(o);
        return rc;
    }
    *out = o;
    return 0;
}

static int qmp_classify(void *opaque, const char *msg, size_t len, moor_monitor_message *out,
                        moor_error *err)
{
    struct json_object *o;

    (void)opaque;
    int rc = parse_line(msg, len, &o, err);
    if (rc < 0)
        return rc;
    if (!o) {
        out->kind = MOOR_MONITOR_IGNORE;
        return 0;
    }
    rc = classify_object(o, out, err);
    json_object_put(o);
    return rc;
}

static void qmp_free_payload(void *opaque, void *payload)
{
    (void)opaque;
    json_object_put(payload);
}

static const char *qmp_name(void *opaque, const void *request)
{
    (void)opaque;
    return ((const struct vmd_qmp_cmd *)request)->execute;
}

moor_monitor_codec vmd_qmp_codec(void)
{
    return (moor_monitor_codec){
        .frame = qmp_frame,
        .encode = qmp_encode,
        .classify = qmp_classify,
        .free_payload = qmp_free_payload,
        .name = qmp_name,
        .opaque = NULL,
    };
}

/* ---- handshake ------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until @fd is ready for @events or @deadline (now_ms) passes. */
static int wait_fd(int fd, short events, int64_t deadline, const char *what, moor_error *err)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return moor_error_set(err, -ETIMEDOUT, "QMP handshake: no %s in time", what);
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)(left > 1000000 ? 1000000 : left));
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return moor_error_set(err, -errno, "QMP handshake: poll: %s", strerror(errno));
    }
}

/* Read one line (exactly its bytes) and parse it. *@out: new reference. */
/* Has the peer shut down its side (no more bytes will come)? Never blocks. */
static bool peer_hung_up(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};

    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP));
}

static int read_line(int fd, int64_t deadline, const char *what, struct json_object **out,
                     moor_error *err)
{
    char *buf = malloc(QMP_LINE_MAX);
    if (!buf)
        return moor_error_set(err, -ENOMEM, "QMP handshake: out of memory");
    int rc;
    for (;;) {
        if ((rc = wait_fd(fd, POLLIN, deadline, what, err)) < 0)
            break;
        /* Hang-up seen before the peek: the peek then holds all QEMU sent. */
        bool hup = peer_hung_up(fd);
        ssize_t n = recv(fd, buf, QMP_LINE_MAX, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            rc = moor_error_set(err, -EPIPE, "QMP handshake: QEMU closed before its %s", what);
            break;
        }
        if (n < 0) {
            rc = moor_error_set(err, -errno, "QMP handshake: recv: %s", strerror(errno));
            break;
        }
        char *nl = memchr(buf, '\n', (size_t)n);
        if (!nl) {
            if ((size_t)n == QMP_LINE_MAX) {
                rc = moor_error_set(err, -EPROTO, "QMP handshake: %s line too long", what);
                break;
            }
            if (hup) {
                rc = moor_error_set(err, -EPIPE,
                                    "QMP handshake: QEMU closed in the middle of its %s", what);
                break;
            }
            /* A partial line: wait for more (poll would spin on the peeked
             * bytes, so sleep a little between peeks). */
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        size_t len = (size_t)(nl - buf) + 1;
        if (recv(fd, buf, len, MSG_DONTWAIT) != (ssize_t)len) {
            rc = moor_error_set(err, -EIO, "QMP handshake: short read");
            break;
        }
        rc = parse_line(buf, len, out, err);
        if (rc == 0 && !*out)
            continue; /* an empty line */
        break;
    }
    free(buf);
    return rc;
}

static int send_all(int fd, const char *s, size_t len, int64_t deadline, moor_error *err)
{
    while (len) {
        int rc = wait_fd(fd, POLLOUT, deadline, "room to send qmp_capabilities", err);
        if (rc < 0)
            return rc;
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n < 0)
            return moor_error_set(err, -errno, "QMP handshake: send: %s", strerror(errno));
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_capabilities_reply(int fd, int64_t deadline, moor_error *err)
{
    for (;;) {
        struct json_object *o;
        int rc = read_line(fd, deadline, "reply to qmp_capabilities", &o, err);
        if (rc < 0)
            return rc;
        bool ret = json_object_object_get_ex(o, "return", NULL);
        struct json_object *e;
        bool refused = json_object_object_get_ex(o, "error", &e);
        const char *desc = refused ? string_field(e, "desc") : NULL;
        if (refused)
            rc = moor_error_set(err, -EREMOTEIO, "QMP handshake: qmp_capabilities refused: %s",
                                desc ? desc : "(no description)");
        json_object_put(o);
        if (ret || refused)
            return rc;
        /* an event before the reply: not ours to handle yet */
    }
}

int vmd_qmp_handshake(int fd, unsigned timeout_ms, moor_error *err)
{
    static const char caps[] = "{\"execute\":\"qmp_capabilities\",\"id\":0}\n";
    int64_t deadline = now_ms() + timeout_ms;
    struct json_object *greeting;

    int rc = read_line(fd, deadline, "greeting", &greeting, err);
    if (rc < 0)
        return rc;
    bool is_qmp = json_object_object_get_ex(greeting, "QMP", NULL);
    json_object_put(greeting);
    if (!is_qmp)
        return moor_error_set(err, -EPROTO, "QMP handshake: the first line is not a greeting");
    rc = send_all(fd, caps, sizeof(caps) - 1, deadline, err);
    return rc < 0 ? rc : read_capabilities_reply(fd, deadline, err);
}

/* ---- connections ---------------------------------------------------------- */

/* A call in flight, on its caller's stack. */
struct inflight {
    const char *command;
    int64_t start_ms;
    uint64_t heard_before; /* heard() before the command was sent */
    struct inflight *next;
};

struct vmd_qmp {
    moor_object parent;
    moor_monitor *mon;
    unsigned timeout_ms;
    pthread_mutex_t lock; /* leaf: guards everything below */
    bool unresponsive;
    char stuck_cmd[VMD_QMP_COMMAND_MAX + 1];
    int64_t stuck_since_ms;
    uint64_t heard_at_mark; /* heard() before the stuck command was sent */
    struct inflight *inflight;
    /* Calls registered and calls ended (answered, failed or timed out),
     * both only growing; written under lock, read without it. */
    _Atomic uint64_t calls_started, calls_ended;
};

static void qmp_dispose(void *obj)
{
    vmd_qmp *q = obj;

    moor_monitor_close(q->mon);
    moor_unref(q->mon);
    pthread_mutex_destroy(&q->lock);
}

static const moor_class *qmp_class;
static pthread_once_t qmp_class_once = PTHREAD_ONCE_INIT;

static void qmp_class_init(void)
{
    qmp_class = moor_class_new("vmd_qmp", moor_object_class(), sizeof(vmd_qmp), qmp_dispose, NULL);
}

vmd_qmp *vmd_qmp_new(moor_loop *loop, int fd, void *owner, const moor_monitor_callbacks *cb,
                     const char *name, unsigned timeout_ms, moor_error *err)
{
    pthread_once(&qmp_class_once, qmp_class_init);
    if (!qmp_class) {
        moor_error_set(err, -ENOMEM, "vmd_qmp: no class");
        return NULL;
    }
    moor_monitor_codec codec = vmd_qmp_codec();
    moor_monitor_options opts = {.name = name, .default_timeout_ms = timeout_ms};
    vmd_qmp *q = moor_object_new(qmp_class);
    if (!q) {
        moor_error_set(err, -ENOMEM, "vmd_qmp: out of memory");
        return NULL;
    }
    pthread_mutex_init(&q->lock, NULL);
    q->timeout_ms = timeout_ms ? timeout_ms : MOOR_MONITOR_DEFAULT_TIMEOUT_MS;
    q->mon = moor_monitor_new(loop, fd, &codec, cb, owner, &opts, err);
    if (!q->mon) {
        moor_unref(q);
        return NULL;
    }
    return q;
}

moor_monitor *vmd_qmp_monitor(vmd_qmp *q)
{
    return q->mon;
}

/* Messages received from QEMU so far, of any kind. */
static uint64_t heard(vmd_qmp *q)
{
    moor_monitor_stats st;

    if (moor_monitor_get_stats(q->mon, &st) < 0)
        return 0;
    return st.replies + st.stray + st.events + st.ignored;
}

/* With q->lock held: clear the mark if QEMU spoke since it was set. */
static bool still_unresponsive_locked(vmd_qmp *q)
{
    if (q->unresponsive && heard(q) != q->heard_at_mark) {
        q->unresponsive = false;
        vmd_log(VMD_LOG_NOTICE, NULL, NULL, "%s: QEMU answers again after %.3f s",
                moor_monitor_name(q->mon), (double)(now_ms() - q->stuck_since_ms) / 1000.0);
    }
    return q->unresponsive;
}

bool vmd_qmp_responsive(vmd_qmp *q, uint64_t *since_ms, char *cmd, size_t cmd_size)
{
    pthread_mutex_lock(&q->lock);
    bool stuck = still_unresponsive_locked(q);
    if (stuck && since_ms)
        *since_ms = (uint64_t)(now_ms() - q->stuck_since_ms);
    if (stuck && cmd && cmd_size)
        snprintf(cmd, cmd_size, "%s", q->stuck_cmd);
    pthread_mutex_unlock(&q->lock);
    return !stuck;
}

/* Register the call, or refuse it at once while marked. */
static int call_start(vmd_qmp *q, struct inflight *node, moor_error *err)
{
    int rc = 0;

    pthread_mutex_lock(&q->lock);
    if (still_unresponsive_locked(q)) {
        rc = moor_error_set(err, -ETIMEDOUT, "QEMU has not answered %s for %" PRId64 " s",
                            q->stuck_cmd, (now_ms() - q->stuck_since_ms) / 1000);
    } else {
        /* Before the send: a reply (or anything) that comes late, even
         * between the timeout and call_end, then counts as heard since. */
        node->heard_before = heard(q);
        node->next = q->inflight;
        q->inflight = node;
        /* relaxed: a count for vmd_qmp_calls, publishes nothing */
        atomic_fetch_add_explicit(&q->calls_started, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

static void call_end(vmd_qmp *q, struct inflight *node, bool timed_out)
{
    pthread_mutex_lock(&q->lock);
    for (struct inflight **pp = &q->inflight; *pp; pp = &(*pp)->next) {
        if (*pp == node) {
            *pp = node->next;
            break;
        }
    }
    /* relaxed: a count for vmd_qmp_calls, publishes nothing */
    atomic_fetch_add_explicit(&q->calls_ended, 1, memory_order_relaxed);
    bool newly = timed_out && !q->unresponsive;
    if (newly) {
        q->unresponsive = true;
        snprintf(q->stuck_cmd, sizeof(q->stuck_cmd), "%s", node->command);
        q->stuck_since_ms = node->start_ms;
        q->heard_at_mark = node->heard_before;
    }
    pthread_mutex_unlock(&q->lock);
    if (newly)
        vmd_log(VMD_LOG_WARNING, NULL, NULL, "%s: %s got no answer in %u ms: marked unresponsive",
                moor_monitor_name(q->mon), node->command, q->timeout_ms);
}

int vmd_qmp_call(vmd_qmp *q, const char *execute, struct json_object *arguments,
                 struct json_object **ret, moor_error *err)
{
    return vmd_qmp_call_fds(q, execute, arguments, NULL, 0, ret, err);
}

int vmd_qmp_call_fds(vmd_qmp *q, const char *execute, struct json_object *arguments, const int *fds,
                     unsigned nfds, struct json_object **ret, moor_error *err)
{
    struct vmd_qmp_cmd cmd = {.execute = execute, .arguments = arguments};
    struct inflight node = {.command = execute, .start_ms = now_ms()};
    void *payload = NULL;

    if (!vmd_qmp_command_ok(execute))
        return moor_error_set(err, -EINVAL, "QMP: '%.64s' is not a command name",
                              execute ? execute : "(null)");
    int rc = call_start(q, &node, err);
    if (rc < 0)
        return rc;
    rc = moor_monitor_call_fds(q->mon, &cmd, fds, nfds, &payload, (int)q->timeout_ms, err);
    call_end(q, &node, rc == -ETIMEDOUT);
    if (rc < 0)
        return rc;
    if (ret)
        *ret = payload;
    else
        json_object_put(payload);
    return 0;
}

void vmd_qmp_calls(vmd_qmp *q, uint64_t *started, uint64_t *ended)
{
    /* relaxed: counts; the caller only compares them */
    if (started)
        *started = atomic_load_explicit(&q->calls_started, memory_order_relaxed);
    if (ended)
        *ended = atomic_load_explicit(&q->calls_ended, memory_order_relaxed);
}

struct json_object *vmd_qmp_debug(vmd_qmp *q)
{
    struct json_object *arr = json_object_new_array();
    if (!arr)
        return NULL;
    pthread_mutex_lock(&q->lock);
    int64_t now = now_ms();
    for (struct inflight *n = q->inflight; n; n = n->next) {
        struct json_object *o = json_object_new_object();
        if (!o || json_object_array_add(arr, o) < 0) {
            json_object_put(o);
            break;
        }
        json_object_object_add(o, "command", json_object_new_string(n->command));
        json_object_object_add(o, "age_ms", json_object_new_int64(now - n->start_ms));
        json_object_object_add(o, "deadline_ms", json_object_new_int64(q->timeout_ms));
    }
    pthread_mutex_unlock(&q->lock);
    return arr;
}

void vmd_qmp_close(vmd_qmp *q)
{
    if (q)
        moor_monitor_close(q->mon);
}
