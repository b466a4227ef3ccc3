/* SPDX-License-Identifier: MIT */
/*
 * http.c - libmicrohttpd on the moor loop.
 *
 * Theory of operation. MHD runs in "external epoll" mode: it keeps its
 * sockets in an epoll set of its own, whose descriptor the moor loop
 * watches; when it is readable, or when the timer armed from
 * MHD_get_timeout() fires, the loop thread calls MHD_run(). Every MHD call
 * happens on the loop thread, so MHD needs no locks of ours and the connection states
 * (struct conn, struct stream) are loop-thread data.
 *
 * A request: the first call of the access handler checks the peer's uid
 * and the announced length; the next ones collect the body (at most
 * VMD_MAX_BODY); the last one parses it (api.h) and either answers at once
 * or submits the typed request to the pool and suspends the connection.
 * The worker stores the response in the conn and schedules deliver() on
 * the loop, which resumes the connection; MHD then calls the handler once
 * more and it queues the response. While suspended a conn cannot be freed
 * (MHD does not complete a suspended connection), so the pointer the
 * worker holds stays valid.
 *
 * Refusal pacing: a call on a domain whose QEMU is marked unresponsive is
 * refused on this thread at once (vmd_domain_fail_fast, 504). A client
 * that retries in a loop would then turn each of its connections into a
 * busy loop through the daemon, taking the CPU from calls on healthy
 * domains. So a connection gets at most one such refusal per
 * opt.refusal_pace_ms: one that comes sooner is held (the connection
 * suspended, a one-shot loop timer) until the pace allows it. The first
 * refusal on a connection, and every other answer, is never delayed.
 * The time of a connection's last refusal lives in its socket context
 * (struct peer, MHD's per-connection notify), since struct conn lasts one
 * request. Held connections are on h->paced, so teardown can answer them.
 *
 * An event stream: a response whose content reader copies lines from the
 * bus. With no line ready the reader suspends the connection; the bus's
 * notify (on the publishing thread, bus mutex held) only schedules one
 * wake on the loop, which resumes every suspended stream. A duplicate of
 * the stream's socket is watched for hang-up, so a client that goes away
 * while nothing is published is noticed and its stream freed.
 */
#define _GNU_SOURCE /* struct ucred */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "events.h"
#include "log.h"
#include "request.h"

/* Event lines are copied to MHD in pieces of at most STREAM_BLOCK bytes, so
 * connections keep MHD's default memory (32 KiB): MHD clears a connection's
 * whole pool between keep-alive requests, so every KiB of it is paid on
 * every request. A line longer than STREAM_LINE_MAX would end the stream;
 * the bus never publishes one. */
#define STREAM_BLOCK    (4u * 1024u)
#define STREAM_LINE_MAX (1u << 20)
/* The bus caps its lines (events.h); a line needs one byte more than its
 * length (the NUL): every line fits. */
_Static_assert(STREAM_LINE_MAX > VMD_EVENTS_LINE_MAX, "event lines must fit a stream's buffer");
#define MHD_MAX_DELAY_MS 60000u /* timer period when MHD wants none */
#define FLUSH_MAX_MS     1000u  /* teardown: longest wait for held refusals to be sent */
#define LISTEN_BACKLOG   64

struct stream;

struct vmd_http {
    struct vmd *vmd;
    struct MHD_Daemon *mhd;
    char *socket_path;
    int listen_fd; /* ours until MHD_start_daemon; -1 once closed */
    uid_t uid;
    uint64_t epoll_id, timer_id;
    struct stream *streams;   /* loop thread only */
    atomic_bool wake_pending; /* a stream wake is scheduled; acq_rel exchange */
    atomic_uint n_streams;    /* open event streams; relaxed: a figure for /v1/debug */
    atomic_uint n_paced;      /* refusals held by the pace; relaxed: a figure for /v1/debug */
    bool stopping;            /* loop thread only: streams end */
    bool accepting;
    struct conn *paced; /* refusals held by the pace, loop thread only */
    unsigned flushing;  /* loop thread only: of those, answered by the teardown, not yet done */
};

/* Per connection (MHD's socket context): the pace's memory. */
struct peer {
    int64_t refused_ms; /* monotonic ms of the last fail-fast refusal sent; 0: none */
};

/* A request's state, MHD's con_cls. */
struct conn {
    struct vmd_http *http;
    struct MHD_Connection *mc;
    char *body;
    size_t len, cap;
    bool too_large;
    bool answered;   /* a response was queued */
    bool suspended;  /* waiting for a worker */
    bool resp_ready; /* resp holds the worker's answer */
    bool paced;      /* a refusal held by the pace (on http->paced) */
    bool flushing;   /* its refusal answered by the teardown (counted in http->flushing) */
    uint64_t pace_timer;
    struct conn *paced_prev, *paced_next;
    struct vmd_response resp;
    struct vmd_client peer; /* SO_PEERCRED, for long jobs' "client" */
};

struct stream {
    struct vmd_http *http;
    struct MHD_Connection *mc;
    struct stream *next;
    int sub;          /* event bus subscriber id */
    uint64_t cursor;  /* next line to read from the bus */
    char *line;       /* the line being sent, or NULL */
    size_t line_size; /* bytes allocated at line */
    size_t line_len;  /* its length */
    size_t line_off;  /* bytes of it already handed to MHD */
    int hup_fd;       /* our duplicate of the socket, watched for hang-up */
    uint64_t hup_id;
    bool suspended;
    bool gone;
};

/* ---- running MHD on the loop -------------------------------------------- */

static void run_mhd(struct vmd_http *h)
{
    MHD_UNSIGNED_LONG_LONG t;
    uint32_t delay = MHD_MAX_DELAY_MS;

    if (!h->mhd)
        return;
    MHD_run(h->mhd);
    if (MHD_get_timeout(h->mhd, &t) == MHD_YES)
        delay = t < MHD_MAX_DELAY_MS ? (uint32_t)t : MHD_MAX_DELAY_MS;
    moor_loop_update_timer(h->vmd->loop, h->timer_id, delay, 0, NULL);
}

static void on_epoll(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    (void)loop;
    (void)id;
    (void)fd;
    (void)revents;
    run_mhd(opaque);
}

static void on_timer(moor_loop *loop, uint64_t id, void *opaque)
{
    (void)loop;
    (void)id;
    run_mhd(opaque);
}

/* Run @fn(@arg) on the loop thread and wait for it. */
struct loop_call {
    void (*fn)(struct vmd_http *h);
    struct vmd_http *h;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
};

static void loop_call_cb(moor_loop *loop, void *opaque)
{
    struct loop_call *c = opaque;

    (void)loop;
    c->fn(c->h);
    pthread_mutex_lock(&c->lock);
    c->done = true;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void on_loop(struct vmd_http *h, void (*fn)(struct vmd_http *h))
{
    struct loop_call c = {.fn = fn, .h = h, .done = false};

    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.cond, NULL);
    /* Retry on -ENOMEM: a teardown step must not be skipped. */
    while (moor_loop_schedule(h->vmd->loop, loop_call_cb, &c, NULL, NULL) < 0)
        usleep(1000);
    pthread_mutex_lock(&c.lock);
    while (!c.done)
        pthread_cond_wait(&c.cond, &c.lock);
    pthread_mutex_unlock(&c.lock);
    pthread_cond_destroy(&c.cond);
    pthread_mutex_destroy(&c.lock);
}

/* ---- responses ---------------------------------------------------------- */

static enum MHD_Result queue(struct conn *c, struct vmd_response *resp)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(resp->len, resp->body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (resp->location)
        MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, resp->location);
    if (resp->allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, resp->allow);
    enum MHD_Result ret = MHD_queue_response(c->mc, resp->status, r);
    MHD_destroy_response(r);
    c->answered = true;
    vmd_response_clear(resp);
    return ret;
}

static enum MHD_Result queue_error(struct conn *c, int code, const char *message)
{
    struct vmd_response resp = {0};

    vmd_api_error(&resp, code, message);
    return queue(c, &resp);
}

/* On the loop thread: a worker's response is in c->resp. */
static void deliver(moor_loop *loop, void *opaque)
{
    struct conn *c = opaque;

    (void)loop;
    c->resp_ready = true;
    c->suspended = false;
    MHD_resume_connection(c->mc);
    run_mhd(c->http);
}

/* On a worker (or the draining thread): hand @resp to the loop thread.
 * Only the loop thread touches MHD, so a failed schedule (no memory) is
 * retried rather than resuming the connection from here. */
static void on_done(void *opaque, struct vmd_response *resp)
{
    struct conn *c = opaque;
    bool logged = false;

    c->resp = *resp; /* published to the loop by the schedule's mutex */
    while (moor_loop_schedule(c->http->vmd->loop, deliver, c, NULL, NULL) < 0) {
        if (!logged)
            vmd_log(VMD_LOG_ERR, NULL, NULL, "cannot schedule a response: retrying");
        logged = true;
        usleep(1000);
    }
}

/* ---- refusal pacing ------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct peer *peer_of(struct MHD_Connection *mc)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci ? ci->socket_context : NULL;
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)cls;
    (void)mc;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        *socket_context = calloc(1, sizeof(struct peer)); /* NULL: never paced */
    } else {
        free(*socket_context);
        *socket_context = NULL;
    }
}

static void paced_unlink(struct vmd_http *h, struct conn *c)
{
    if (c->paced_prev)
        c->paced_prev->paced_next = c->paced_next;
    else
        h->paced = c->paced_next;
    if (c->paced_next)
        c->paced_next->paced_prev = c->paced_prev;
    c->paced_prev = c->paced_next = NULL;
    c->paced = false;
    /* relaxed: a figure for a report. */
    atomic_fetch_sub_explicit(&h->n_paced, 1, memory_order_relaxed);
}

/* The pace allows a held refusal now: send it. */
static void paced_due(moor_loop *loop, uint64_t id, void *opaque)
{
    struct conn *c = opaque;
    struct peer *p = peer_of(c->mc);

    (void)id;
    c->pace_timer = 0;
    paced_unlink(c->http, c);
    if (p)
        p->refused_ms = mono_ms();
    deliver(loop, c);
}

/* @resp is a fail-fast refusal for @c. Returns true if it is held for
 * the pace (answered later by paced_due), false to answer now. */
static bool pace_refusal(struct conn *c, struct vmd_response *resp)
{
    struct vmd_http *h = c->http;
    struct peer *p = peer_of(c->mc);
    int64_t now = mono_ms(), pace = h->vmd->opt.refusal_pace_ms;

    if (!p || !pace || h->stopping || !p->refused_ms || now >= p->refused_ms + pace) {
        if (p)
            p->refused_ms = now;
        return false;
    }
    if (moor_loop_add_timer(h->vmd->loop, (uint32_t)(p->refused_ms + pace - now), 0, paced_due, c,
                            NULL, &c->pace_timer, NULL) < 0) {
        p->refused_ms = now; /* no memory for a timer: answer now */
        return false;
    }
    c->resp = *resp;
    c->paced = c->suspended = true;
    c->paced_next = h->paced;
    if (h->paced)
        h->paced->paced_prev = c;
    h->paced = c;
    /* relaxed: a figure for a report. */
    atomic_fetch_add_explicit(&h->n_paced, 1, memory_order_relaxed);
    MHD_suspend_connection(c->mc);
    return true;
}

/* Teardown: every held refusal is answered at once. */
static void paced_flush(struct vmd_http *h)
{
    while (h->paced) {
        struct conn *c = h->paced;

        if (c->pace_timer)
            moor_loop_remove(h->vmd->loop, c->pace_timer);
        c->pace_timer = 0;
        paced_unlink(h, c);
        c->resp_ready = true;
        c->suspended = false;
        c->flushing = true;
        h->flushing++;
        MHD_resume_connection(c->mc);
    }
}

/* Teardown, after paced_flush: run MHD until every refusal it resumed is
 * sent (or its client gone), at most FLUSH_MAX_MS. One MHD_run() applies
 * the resumes but need not write every answer, and MHD_stop_daemon()
 * drops what is unwritten. */
static void paced_drain(struct vmd_http *h)
{
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    int64_t deadline = mono_ms() + FLUSH_MAX_MS;

    MHD_run(h->mhd); /* applies the resumes */
    while (h->flushing && di) {
        int64_t left = deadline - mono_ms();
        MHD_UNSIGNED_LONG_LONG t;
        struct pollfd p = {.fd = di->epoll_fd, .events = POLLIN};

        if (left <= 0)
            break;
        if (MHD_get_timeout(h->mhd, &t) == MHD_YES && t < (MHD_UNSIGNED_LONG_LONG)left)
            left = (int64_t)t;
        poll(&p, 1, (int)left);
        MHD_run(h->mhd);
    }
}

/* ---- event streams -------------------------------------------------------- */

static void wake_streams(moor_loop *loop, void *opaque)
{
    struct vmd_http *h = opaque;
    bool any = false;

    (void)loop;
    /* acq_rel: a notify after this exchange schedules another wake. */
    atomic_exchange_explicit(&h->wake_pending, false, memory_order_acq_rel);
    for (struct stream *s = h->streams; s; s = s->next) {
        if (s->suspended) {
            s->suspended = false;
            MHD_resume_connection(s->mc);
            any = true;
        }
    }
    if (any)
        run_mhd(h);
}

/* The bus's notify: bus mutex held, any thread. Only schedules. */
static void stream_notify(void *opaque)
{
    struct stream *s = opaque;
    struct vmd_http *h = s->http;

    /* acq_rel: pairs with the exchange in wake_streams. */
    if (atomic_exchange_explicit(&h->wake_pending, true, memory_order_acq_rel))
        return;
    /* No memory: this wake is lost; the next line's notify tries again. */
    if (moor_loop_schedule(h->vmd->loop, wake_streams, h, NULL, NULL) < 0)
        atomic_store_explicit(&h->wake_pending, false, memory_order_release);
}

static void stream_hup(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct stream *s = opaque;

    (void)fd;
    (void)revents;
    moor_loop_remove(loop, id);
    s->hup_id = 0;
    s->gone = true;
    if (s->suspended) {
        s->suspended = false;
        MHD_resume_connection(s->mc);
        run_mhd(s->http);
    }
}

/* Read the next line of the bus into s->line, growing it up to
 * STREAM_LINE_MAX. Returns its length, 0 if none is ready, or -ENOBUFS
 * (too long) / -ENOMEM. */
static ssize_t stream_next_line(struct stream *s)
{
    for (;;) {
        ssize_t n = s->line
                        ? vmd_events_read(s->http->vmd->events, &s->cursor, s->line, s->line_size)
                        : -ENOBUFS;
        size_t size = s->line_size ? s->line_size * 2 : STREAM_BLOCK;
        char *p;

        if (n != -ENOBUFS)
            return n;
        if (s->line_size >= STREAM_LINE_MAX)
            return -ENOBUFS;
        p = realloc(s->line, size);
        if (!p)
            return -ENOMEM;
        s->line = p;
        s->line_size = size;
    }
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream *s = cls;
    size_t n;

    (void)pos;
    if (s->gone)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (s->line_off == s->line_len) {
        ssize_t len = stream_next_line(s);

        if (len < 0) {
            vmd_log(VMD_LOG_WARNING, NULL, "events", "event stream ended: %s",
                    len == -ENOBUFS ? "a line is over 1 MiB" : "out of memory");
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        s->line_len = (size_t)len;
        s->line_off = 0;
    }
    if (s->line_len > 0) {
        n = s->line_len - s->line_off < max ? s->line_len - s->line_off : max;
        memcpy(buf, s->line + s->line_off, n);
        s->line_off += n;
        return (ssize_t)n;
    }
    if (s->http->stopping)
        return MHD_CONTENT_READER_END_OF_STREAM;
    s->suspended = true;
    MHD_suspend_connection(s->mc);
    return 0;
}

/* MHD frees the response (the connection is done): loop thread. */
static void stream_free(void *cls)
{
    struct stream *s = cls;
    struct vmd_http *h = s->http;

    vmd_events_unsubscribe(h->vmd->events, s->sub);
    if (s->hup_id)
        moor_loop_remove(h->vmd->loop, s->hup_id);
    if (s->hup_fd >= 0)
        close(s->hup_fd);
    for (struct stream **pp = &h->streams; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    atomic_fetch_sub_explicit(&h->n_streams, 1, memory_order_relaxed);
    free(s->line);
    free(s);
}

static enum MHD_Result start_stream(struct conn *c)
{
    struct vmd_http *h = c->http;
    struct stream *s = calloc(1, sizeof(*s));

    if (!s)
        return queue_error(c, -ENOMEM, "no memory for an event stream");
    s->http = h;
    s->mc = c->mc;
    s->hup_fd = -1;
    s->sub = vmd_events_subscribe(h->vmd->events, stream_notify, s, &s->cursor);
    if (s->sub < 0) {
        int code = s->sub;
        free(s);
        return queue_error(c, code,
                           code == -EAGAIN ? "too many event streams" : "cannot subscribe");
    }
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK,
                                                               stream_read, s, stream_free);
    if (!r) {
        vmd_events_unsubscribe(h->vmd->events, s->sub);
        free(s);
        return queue_error(c, -ENOMEM, "no memory for an event stream");
    }
    s->next = h->streams;
    h->streams = s;
    atomic_fetch_add_explicit(&h->n_streams, 1, memory_order_relaxed);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci)
        s->hup_fd = fcntl(ci->connect_fd, F_DUPFD_CLOEXEC, 0);
    if (s->hup_fd >= 0 &&
        moor_loop_add_fd(h->vmd->loop, s->hup_fd, 0, stream_hup, s, NULL, &s->hup_id, NULL) < 0)
        s->hup_id = 0;
    /* A stream is idle by nature: the daemon's connection timeout is for
     * keep-alive and slow clients, not for it. MHD never times out a
     * suspended connection (a stream with no line is suspended); the zero
     * timeout keeps the stream exempt while resumed, too. */
    MHD_set_connection_option(c->mc, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-ndjson");
    enum MHD_Result ret = MHD_queue_response(c->mc, 200, r);
    MHD_destroy_response(r); /* the connection holds it; stream_free runs with it */
    c->answered = true;
    return ret;
}

/* ---- requests ------------------------------------------------------------ */

/* 0 if the peer of @mc may talk to us; -EPERM (logged) if not. */
static int check_peer(struct vmd_http *h, struct MHD_Connection *mc, struct vmd_client *peer)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct ucred cred;
    socklen_t len = sizeof(cred);

    if (!ci || getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        vmd_log(VMD_LOG_WARNING, NULL, NULL, "refused a connection: no peer credentials");
        return -EPERM;
    }
    *peer = (struct vmd_client){.known = true, .uid = (unsigned)cred.uid, .pid = (int)cred.pid};
    if (cred.uid == 0 || cred.uid == h->uid)
        return 0;
    vmd_log(VMD_LOG_WARNING, NULL, NULL, "refused a connection from uid %u (pid %d)",
            (unsigned)cred.uid, (int)cred.pid);
    return -EPERM;
}

/* Add @size bytes of body; past VMD_MAX_BODY only remember that it was. */
static void take_body(struct conn *c, const char *data, size_t size)
{
    if (c->too_large || c->len + size > VMD_MAX_BODY) {
        c->too_large = true;
        return;
    }
    if (c->len + size + 1 > c->cap) {
        size_t cap = c->cap ? c->cap : 1024;
        while (cap < c->len + size + 1)
            cap *= 2;
        char *body = realloc(c->body, cap);
        if (!body) {
            c->too_large = true; /* answered as 413: we cannot hold it */
            return;
        }
        c->body = body;
        c->cap = cap;
    }
    memcpy(c->body + c->len, data, size);
    c->len += size;
}

static enum MHD_Result first_call(struct vmd_http *h, struct MHD_Connection *mc, void **con_cls)
{
    struct conn *c = calloc(1, sizeof(*c));

    if (!c)
        return MHD_NO;
    c->http = h;
    c->mc = mc;
    *con_cls = c;
    if (check_peer(h, mc, &c->peer) < 0)
        return queue_error(c, -EPERM, "this socket serves its owner and root only");
    const char *cl =
        MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > VMD_MAX_BODY)
        return queue_error(c, -EMSGSIZE, "the body is over 1 MiB");
    return MHD_YES;
}

static enum MHD_Result dispatch(struct conn *c, const char *method, const char *url)
{
    struct vmd_http *h = c->http;
    struct vmd_request *req = NULL;
    struct vmd_response resp = {0};

    if (c->too_large)
        return queue_error(c, -EMSGSIZE, "the body is over 1 MiB");
    if (vmd_api_parse(h->vmd, method, url, c->body, c->len, &req, &resp) < 0)
        return queue(c, &resp);
    if (vmd_request_is_stream(req)) {
        vmd_request_free(req);
        return start_stream(c);
    }
    req->client = c->peer;
    int rc = vmd_api_submit(h->vmd, req, on_done, c, &resp);
    /* -ETIMEDOUT from the submit itself is a fail-fast refusal. */
    if (rc == -ETIMEDOUT && pace_refusal(c, &resp))
        return MHD_YES;
    if (rc < 0)
        return queue(c, &resp);
    c->suspended = true;
    MHD_suspend_connection(c->mc);
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct vmd_http *h = cls;
    struct conn *c = *con_cls;

    (void)version;
    if (!c)
        return first_call(h, mc, con_cls);
    if (c->resp_ready) {
        c->resp_ready = false;
        return queue(c, &c->resp);
    }
    if (*upload_data_size) {
        if (!c->answered) /* a refused request's body is dropped */
            take_body(c, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (c->answered || c->suspended)
        return MHD_YES;
    return dispatch(c, method, url);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct conn *c = *con_cls;

    (void)cls;
    (void)mc;
    (void)toe;
    if (!c)
        return;
    if (c->flushing)
        c->http->flushing--;
    free(c->body);
    vmd_response_clear(&c->resp);
    free(c);
    *con_cls = NULL;
}

static int hex_value(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* MHD's URL unescaper, in place: %HH is decoded unless it would give a
 * control character (NUL included, which would cut the path short as a C
 * string); those stay "%HH", which no route or id accepts. */
static size_t unescape(void *cls, struct MHD_Connection *mc, char *s)
{
    char *out = s;

    (void)cls;
    (void)mc;
    for (const char *in = s; *in;) {
        int hi = in[0] == '%' ? hex_value(in[1]) : -1;
        int lo = hi >= 0 ? hex_value(in[2]) : -1;
        int c = hi * 16 + lo;
        if (lo >= 0 && c >= 0x20 && c != 0x7f) {
            *out++ = (char)c;
            in += 3;
        } else {
            *out++ = *in++;
        }
    }
    *out = '\0';
    return (size_t)(out - s);
}

__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[256];

    (void)cls;
    vsnprintf(line, sizeof(line), fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    vmd_log(VMD_LOG_WARNING, NULL, NULL, "http: %s", line);
}

/* ---- the socket ------------------------------------------------------------ */

static void close_fdp(int *fd)
{
    if (*fd >= 0)
        close(*fd);
}

/* The socket's directory: made 0700 if missing. An existing one keeps its
 * mode: it must be a directory of ours or root's that no one else may
 * write to (else -EPERM), so no one else can swap the socket. */
static int prepare_dir(const char *path, moor_error *err)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct stat st;

    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    if (mkdir(dir, 0700) == 0) {
        /* ours, new: exactly 0700 whatever the umask */
        if (chmod(dir, 0700) < 0)
            return moor_error_set(err, -errno, "cannot make %s 0700: %s", dir, strerror(errno));
        return 0;
    }
    if (errno != EEXIST)
        return moor_error_set(err, -errno, "cannot create %s: %s", dir, strerror(errno));
    if (stat(dir, &st) < 0)
        return moor_error_set(err, -errno, "cannot stat %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return moor_error_set(err, -ENOTDIR, "%s is not a directory", dir);
    if (st.st_uid != geteuid() && st.st_uid != 0)
        return moor_error_set(err, -EPERM, "%s belongs to uid %u, not to us or root", dir,
                              (unsigned)st.st_uid);
    if (st.st_mode & 022)
        return moor_error_set(err, -EPERM, "%s is writable by others (mode %04o): refused", dir,
                              (unsigned)(st.st_mode & 07777));
    return 0;
}

/* Remove a socket file nobody answers on; refuse one a daemon serves. */
static int clear_stale(const struct sockaddr_un *addr, moor_error *err)
{
    struct stat st;

    if (lstat(addr->sun_path, &st) < 0)
        return errno == ENOENT ? 0 : moor_error_set(err, -errno, "cannot stat %s", addr->sun_path);
    if (!S_ISSOCK(st.st_mode))
        return moor_error_set(err, -EEXIST, "%s exists and is not a socket", addr->sun_path);
    __attribute__((cleanup(close_fdp))) int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return moor_error_set(err, -errno, "socket: %s", strerror(errno));
    if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0)
        return moor_error_set(err, -EADDRINUSE, "a daemon already serves %s", addr->sun_path);
    if (unlink(addr->sun_path) < 0 && errno != ENOENT)
        return moor_error_set(err, -errno, "cannot remove %s: %s", addr->sun_path, strerror(errno));
    return 0;
}

static int listen_socket(const char *path, moor_error *err)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};

    if (strlen(path) >= sizeof(addr.sun_path))
        return moor_error_set(err, -ENAMETOOLONG, "socket path too long: %s", path);
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int rc = prepare_dir(path, err);
    if (rc < 0)
        return rc;
    rc = clear_stale(&addr, err);
    if (rc < 0)
        return rc;
    __attribute__((cleanup(close_fdp))) int fd =
        socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return moor_error_set(err, -errno, "socket: %s", strerror(errno));
    /* Bound under umask 0177, the socket is 0600 from its first moment
     * (the directory may be searchable by others). The umask is the
     * process's: a file another thread creates meanwhile gets at most
     * 0600, never more. */
    mode_t old_mask = umask(0177);
    int bound = bind(fd, (const struct sockaddr *)&addr, sizeof(addr));
    int bind_errno = errno;
    umask(old_mask);
    if (bound < 0)
        return moor_error_set(err, -bind_errno, "cannot bind %s: %s", path, strerror(bind_errno));
    if (chmod(path, 0600) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        rc = moor_error_set(err, -errno, "cannot listen on %s: %s", path, strerror(errno));
        unlink(path);
        return rc;
    }
    int ret = fd;
    fd = -1;
    return ret;
}

/* ---- life ---------------------------------------------------------------------- */

static int start_mhd(struct vmd_http *h, moor_error *err)
{
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    unsigned timeout_s =
        h->vmd->opt.http_timeout_s ? h->vmd->opt.http_timeout_s : VMD_DEFAULT_HTTP_TIMEOUT_S;

    /* The timeout closes idle keep-alive and slow clients; a connection
     * waiting for a worker is suspended, and MHD does not time those out. */
    h->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
        MHD_OPTION_LISTEN_SOCKET, h->listen_fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_UNESCAPE_CALLBACK, unescape, h,
        MHD_OPTION_CONNECTION_TIMEOUT, timeout_s, MHD_OPTION_CONNECTION_LIMIT, VMD_MAX_CONNECTIONS,
        MHD_OPTION_END);
    if (!h->mhd)
        return moor_error_set(err, -EIO, "libmicrohttpd did not start on %s", h->socket_path);
    h->listen_fd = -1; /* MHD's now */
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di)
        return moor_error_set(err, -EIO, "libmicrohttpd has no epoll descriptor");
    /* The timer first, and not due before the epoll watch's first MHD_run
     * re-arms it: no callback reads timer_id before it is written. */
    int rc = moor_loop_add_timer(h->vmd->loop, MHD_MAX_DELAY_MS, 0, on_timer, h, NULL, &h->timer_id,
                                 err);
    if (rc < 0)
        return rc;
    return moor_loop_add_fd(h->vmd->loop, di->epoll_fd, MOOR_LOOP_IN, on_epoll, h, NULL,
                            &h->epoll_id, err);
}

static void stop_accepting_on_loop(struct vmd_http *h)
{
    if (!h->accepting)
        return;
    h->accepting = false;
    MHD_socket fd = MHD_quiesce_daemon(h->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    unlink(h->socket_path);
    run_mhd(h);
}

static void teardown_on_loop(struct vmd_http *h)
{
    h->stopping = true;
    paced_flush(h);
    for (struct stream *s = h->streams; s; s = s->next) {
        if (s->suspended) {
            s->suspended = false;
            MHD_resume_connection(s->mc);
        }
    }
    if (h->epoll_id)
        moor_loop_remove(h->vmd->loop, h->epoll_id);
    if (h->timer_id)
        moor_loop_remove(h->vmd->loop, h->timer_id);
    h->epoll_id = h->timer_id = 0;
    if (h->mhd) {
        paced_drain(h); /* applies the resumes: MHD stops only unsuspended connections */
        if (h->accepting) {
            MHD_socket fd = MHD_quiesce_daemon(h->mhd);
            if (fd != MHD_INVALID_SOCKET)
                close(fd);
            unlink(h->socket_path);
        }
        MHD_stop_daemon(h->mhd);
        h->mhd = NULL;
    }
}

static void nothing_on_loop(struct vmd_http *h)
{
    (void)h;
}

struct vmd_http *vmd_http_new(struct vmd *vmd, const char *socket_path, moor_error *err)
{
    struct vmd_http *h = calloc(1, sizeof(*h));

    if (!h || !(h->socket_path = strdup(socket_path))) {
        free(h);
        moor_error_set(err, -ENOMEM, "no memory for the HTTP server");
        return NULL;
    }
    h->vmd = vmd;
    h->uid = geteuid();
    h->listen_fd = listen_socket(socket_path, err);
    if (h->listen_fd < 0) {
        free(h->socket_path);
        free(h);
        return NULL;
    }
    h->accepting = true;
    /* Published before MHD serves a request (a worker's debug call reads
     * it); the pool's mutex orders this write before any worker's read. */
    struct vmd_http *prev = vmd->http;
    vmd->http = h;
    if (start_mhd(h, err) < 0) {
        vmd->http = prev;
        if (h->listen_fd >= 0) {
            close(h->listen_fd);
            unlink(h->socket_path);
            h->accepting = false;
        }
        vmd_http_free(h);
        return NULL;
    }
    return h;
}

void vmd_http_stop_accepting(struct vmd_http *http)
{
    if (http && http->mhd)
        on_loop(http, stop_accepting_on_loop);
}

void vmd_http_free(struct vmd_http *http)
{
    if (!http)
        return;
    on_loop(http, teardown_on_loop);
    /* A stream wake scheduled before the teardown has run by now (the
     * loop runs scheduled calls in order); one scheduled during it finds
     * mhd NULL and no streams. Wait for those too before freeing. */
    on_loop(http, nothing_on_loop);
    free(http->socket_path);
    free(http);
}

unsigned vmd_http_streams(struct vmd_http *http)
{
    /* relaxed: a figure for a report, ordered with nothing. */
    return atomic_load_explicit(&http->n_streams, memory_order_relaxed);
}

unsigned vmd_http_refusals_held(struct vmd_http *http)
{
    /* relaxed: a figure for a report, ordered with nothing. */
    return atomic_load_explicit(&http->n_paced, memory_order_relaxed);
}
