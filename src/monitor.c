/* SPDX-License-Identifier: MIT */
/*
 * monitor.c - a request/reply channel to an external peer, driven by a
 * moor_loop.
 *
 * Theory of operation.
 *
 * Threads and data. Three kinds of thread touch a monitor: callers (in
 * moor_monitor_call and friends), the loop thread (in the fd handler) and
 * whoever drops the last reference (dispose). Everything shared between
 * them is guarded by mon->lock, a leaf below object mutexes: it is never
 * held while the codec, a callback, or moor_lock() runs. The input buffer
 * is the exception: only the reader touches it, and the reader is the fd
 * handler, which the loop never runs twice at once; dispose frees it after
 * the last reference, i.e. after the reader let go of its own.
 *
 * The handler and the fd. The loop handler's opaque is a small "link"
 * holding a weak reference to the monitor and the fd. The handler takes a
 * strong reference (moor_weak_get) for the length of each dispatch, so the
 * monitor outlives any callout it makes, and a dispatch that starts while
 * the monitor is being disposed simply returns. The link's free_fn, run
 * by the loop when the handler is gone for good, closes the fd: so the fd
 * number is never released while the loop might still use it, whichever
 * thread removed the handler and whether or not a dispatch was running.
 * mon->fd is the same descriptor for writers and shutdown(); it is set to
 * -1 (under the lock) before anyone removes the handler, and nobody removes
 * the handler while a writer is sending (see below), so a thread that sees
 * mon->fd >= 0 under the lock knows the descriptor stays open until it has
 * finished its write.
 *
 * Calls. A call takes an id (an atomic counter), encodes its request
 * outside the lock into a node of its own, then under the lock appends the
 * node to the output queue and links a record (on its own stack) into the
 * pending list.
 *
 * Writing. One writer at a time (mon->writing) gathers the queued nodes
 * into one sendmsg() and sends with the lock dropped, so no syscall runs
 * under the lock and callers keep queueing meanwhile: the next round sends
 * them together. Nodes are immutable once queued and only the writer (or
 * close, or dispose, once no writer is left) frees them, so the writer's
 * iovecs stay valid while it is unlocked. Who writes: a caller that finds
 * nobody writing, the socket not known to be full and the reader not
 * dispatching; else the reader, which (awake anyway) writes what was
 * queued while it dispatched when it is done (mon->reading): callers it
 * has just woken thus send their next requests in one batch; else, when
 * the socket is full, the loop on OUT readiness (want_out). Invariant
 * while open: a non-empty queue means someone is writing, the reader is
 * dispatching, or want_out is set. A close, or the end of the channel,
 * waits (writer_done) for a writer in its sendmsg() before the handler,
 * and with it the fd, may go.
 *
 * Waiting. The caller waits on a semaphore in its record until its
 * deadline. The reader matches a reply by id, moves the payload into the
 * record and unlinks it under the lock, and posts the semaphore after
 * unlocking, so that the woken caller does not run into the lock still
 * held (glibc does not hand waiters over from a condition variable to the
 * mutex: two more futex calls and a context switch per reply). A caller
 * whose deadline passes unlinks its own record unless it was completed,
 * in which case it consumes the post that is on its way; a reply that
 * comes later finds no record and is dropped (counted as stray).
 *
 * Breaking. EOF, a read or write error, an oversized or garbage message
 * move OPEN to BROKEN (break_locked): every pending record is completed
 * with -EPIPE and the reason, and the socket is shut down. The shutdown
 * matters when the break happens in a caller's thread (a failed write):
 * it wakes the loop with HUP, and it is always the loop thread that then
 * runs notify_eof(): it removes the handler and calls on_eof exactly once
 * (eof_notified). close moves any state to CLOSED the same way but never
 * leads to on_eof, and waits (remove_sync) for a dispatch in flight unless
 * it runs on the loop thread, where no other dispatch can be running.
 *
 * Input. The reader reads into a buffer that grows by doubling up to
 * max_message, asks the codec to frame each message, classifies it and
 * dispatches it: a reply to its waiter, an event or greeting to on_event
 * (with a strong reference to the owner, taken from the weak one), an
 * IGNORE to nowhere. A partial message of max_message bytes that the codec
 * still cannot frame is oversized; a frame or classify error is garbage;
 * both break the channel. After every callout the reader re-checks that
 * the channel is still open, since on_event may have closed it.
 *
 * Descriptors. moor_monitor_call_fds() duplicates its descriptors into
 * its record (on its stack, like the rest of it) and links record and node
 * both ways. The writer sends such a node in a sendmsg() of its own that
 * starts at the node's first byte and carries the descriptors as
 * SCM_RIGHTS; once the kernel took any bytes of it, the descriptors went
 * with them: the writer closes them and cuts the links, and the node is an
 * ordinary one from then on. Links cut means descriptors gone: whoever
 * frees a node still linked (close, a withdrawal) closes them. The caller,
 * however its wait ended, waits out a writer in flight and then, if its
 * node is still linked (not one byte sent), withdraws it from the queue:
 * so no node ever points into a record that has returned, and no
 * duplicate outlives the call unless the peer has it.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <moor/debug.h>
#include <moor/loop.h>
#include <moor/monitor.h>
#include <moor/object.h>

#include "debug-internal.h"
#include "lockdep-internal.h"
#include "introspect-internal.h"
#include "monitor-internal.h"
#include "object-internal.h"

#ifdef MOOR_TSAN
#include <sanitizer/tsan_interface.h>
/* ThreadSanitizer does not model sem_clockwait() (clang 14 has no
 * interceptor for it): the post-to-wait ordering of a pending record is
 * annotated on the record's address. */
#define tsan_release(p) __tsan_release((void *)(p))
#define tsan_acquire(p) __tsan_acquire((void *)(p))
#else
#define tsan_release(p) ((void)(p))
#define tsan_acquire(p) ((void)(p))
#endif

/* Whether a reply may be posted after unlocking (see deliver_reply): only
 * where sem_post touches the semaphore no more once a waiter can return,
 * which holds for glibc's 64-bit semaphore (value and waiters in one word)
 * but not, e.g., for its 32-bit one. Elsewhere post under the lock, and the
 * waiter takes the lock once before its semaphore goes. */
#if defined(__GLIBC__) && UINTPTR_MAX == UINT64_MAX
#define POST_UNLOCKED 1
#else
#define POST_UNLOCKED 0
#endif

#define IN_FIRST         4096u       /* first size of the input buffer */
#define IN_KEEP          (64u << 10) /* an idle input buffer above this is freed */
#define READS_PER_WAKEUP 16          /* then let the loop serve other handlers */
#define ENCODE_STACK     512         /* requests up to this are encoded on the stack */
#define WRITE_IOV        32          /* queued requests gathered per sendmsg() */

/* A call waiting for its reply. On the caller's stack; while linked, its
 * fields are guarded by the monitor's mutex. Whoever completes it (sets
 * @done) posts @sem exactly once, possibly after unlocking; the waiter
 * returns only after that post. */
struct pending {
    struct pending *prev, *next;
    uint64_t id;
    sem_t sem;
    bool done;
    int rc;                             /* 0, -EPIPE or -EREMOTEIO (refused) */
    void *payload;                      /* rc == 0: the reply's payload */
    char text[MOOR_ERROR_MESSAGE_SIZE]; /* rc < 0: why */
    /* moor_monitor_call_fds() only: duplicates not yet sent, and the node
     * that carries them while queued (see the theory). */
    struct outnode *node;
    unsigned nfds;
    int fds[MOOR_MONITOR_MAX_FDS];
    /* For introspection (introspect.h): set before it is linked. */
    const char *what;         /* the request's name, valid during the call */
    int thread;               /* the caller */
    uint32_t ms;              /* its timeout */
    struct timespec deadline; /* CLOCK_MONOTONIC */
};

/* One queued request: its bytes, sent up to @off. Immutable once queued,
 * apart from @off, @next and @fds_of (under the monitor's lock). */
struct outnode {
    struct outnode *next;
    size_t len, off;
    struct pending *fds_of; /* non-NULL: descriptors to send with the first
                             * byte, in fds_of->fds (then @off is 0) */
    char data[];
};

/* One moor_monitor_enter() not yet ended: who entered, with which object.
 * An exit must match one, so that an exit by a thread that never entered
 * cannot drop the reference another thread's hand-off still needs. */
struct entry {
    struct entry *next;
    pthread_t thread;
    const void *obj;
};

/* The loop handler's opaque (see the theory). */
struct link {
    moor_weak mon;
    int fd; /* closed by link_free; -1 until the handler exists */
};

struct moor_monitor {
    moor_object parent;

    /* Set by moor_monitor_new, read-only afterwards. */
    moor_loop *loop; /* a reference */
    moor_monitor_codec codec;
    moor_monitor_callbacks cb;
    bool has_owner;
    moor_weak owner;
    char name[MOOR_MONITOR_NAME_MAX + 1];
    uint32_t default_timeout_ms;
    size_t max_message;
    size_t max_backlog; /* cap on out_bytes: a call past it fails -ENOBUFS */
    bool unix_socket;   /* AF_UNIX: descriptors can be passed */

    pthread_mutex_t lock;
    /* Guarded by lock. */
    moor_monitor_state state;
    bool eof_notified;
    bool want_out;              /* the loop waits for OUT readiness for us */
    bool writing;               /* a writer is in sendmsg() with the lock dropped */
    bool reading;               /* the reader is dispatching input, and writes
                                 * what is queued meanwhile when it is done */
    pthread_cond_t writer_done; /* signalled when it is back */
    int fd;                     /* -1 once the handler is (being) removed */
    uint64_t handler;           /* 0: none */
    struct pending *head, *tail;
    moor_error why;                       /* BROKEN: the reason */
    struct outnode *out_head, **out_tail; /* requests not yet (fully) sent */
    size_t out_bytes;                     /* their bytes not yet sent */
    moor_monitor_stats stats;             /* state, pending and entered are kept here too */
    struct entry *entries;                /* stats.entered of them */

    /* relaxed fetch_add: ids only need to be unique, not ordered with
     * anything (the record is published under the lock). */
    atomic_uint_fast64_t next_id;

    /* The reader's (see the theory). */
    char *in; /* bytes [in_off, in_len) received, not yet consumed */
    size_t in_off, in_len, in_cap;

    /* On the live list (under live_lock) from new to dispose. */
    moor__live_node live;
};

/* ---- class -------------------------------------------------------------- */

static void monitor_dispose(void *obj);
static struct moor__lazy_class monitor_klass =
    MOOR__LAZY_CLASS_INIT("moor_monitor", sizeof(moor_monitor), monitor_dispose);

/* Whether @mon is a live monitor (a question, no report). */
static bool is_monitor(const void *mon)
{
    const moor_class *k = moor__lazy_class_peek(&monitor_klass);

    return mon && k && moor_is_a(mon, k);
}

static int misuse(const void *subject, moor_misuse kind, moor_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Report a programmer error and fail with -EINVAL carrying the same text. */
static int misuse(const void *subject, moor_misuse kind, moor_error *err, const char *fmt, ...)
{
    char text[MOOR_ERROR_MESSAGE_SIZE];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    moor_debug_report(kind, subject, "%s", text);
    return moor_error_set(err, -EINVAL, "%s", text);
}

/* ---- pending calls (lock held) --------------------------------------------- */

static void pending_link_locked(moor_monitor *mon, struct pending *p)
{
    p->next = NULL;
    p->prev = mon->tail;
    if (mon->tail)
        mon->tail->next = p;
    else
        mon->head = p;
    mon->tail = p;
    mon->stats.pending++;
}

static void pending_unlink_locked(moor_monitor *mon, struct pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        mon->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        mon->tail = p->prev;
    p->prev = p->next = NULL;
    mon->stats.pending--;
}

/* Oldest first: replies mostly come in the order of the requests. */
static struct pending *pending_find_locked(moor_monitor *mon, uint64_t id)
{
    for (struct pending *p = mon->head; p; p = p->next)
        if (p->id == id)
            return p;
    return NULL;
}

/* Fill in the result and unlink; the caller posts p->sem. */
static void pending_complete_locked(moor_monitor *mon, struct pending *p, int rc, void *payload,
                                    const char *text)
{
    pending_unlink_locked(mon, p);
    p->done = true;
    p->rc = rc;
    p->payload = payload;
    snprintf(p->text, sizeof(p->text), "%s", text ? text : "");
}

/* The channel ended: fail every call (posted under the lock: a rare path,
 * where a woken waiter meeting a held mutex costs nothing that matters). */
static void fail_pending_locked(moor_monitor *mon, const char *why)
{
    while (mon->head) {
        struct pending *p = mon->head;

        pending_complete_locked(mon, p, -EPIPE, NULL, why);
        tsan_release(p);
        sem_post(&p->sem);
    }
}

/* ---- the output queue and its writer (lock held) ----------------------------- */

/* The default cap on unsent bytes: room for a few requests of the largest
 * size, so a stalled peer cannot make the queue grow without bound. */
static size_t default_backlog(size_t max_message)
{
    return max_message > SIZE_MAX / MOOR_MONITOR_DEFAULT_BACKLOG_FACTOR
               ? SIZE_MAX
               : max_message * MOOR_MONITOR_DEFAULT_BACKLOG_FACTOR;
}

/* Close @n descriptors of @fds (duplicates the monitor owns). */
static void close_fds(const int *fds, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        close(fds[i]);
}

/* @o's descriptors went out with its first byte, or never will: close
 * them and cut the links between @o and its record. Lock held. */
static void out_release_fds_locked(struct outnode *o)
{
    struct pending *p = o->fds_of;

    if (!p)
        return;
    close_fds(p->fds, p->nfds);
    p->nfds = 0;
    p->node = NULL;
    o->fds_of = NULL;
}

static void out_free_all_locked(moor_monitor *mon)
{
    while (mon->out_head) {
        struct outnode *o = mon->out_head;

        mon->out_head = o->next;
        out_release_fds_locked(o);
        moor__free(o);
    }
    mon->out_tail = &mon->out_head;
    mon->out_bytes = 0;
}

/* Wait until no writer is in sendmsg() (before the fd may go). */
static void wait_writer_locked(moor_monitor *mon)
{
    while (mon->writing)
        pthread_cond_wait(&mon->writer_done, &mon->lock);
}

/* ---- breaking and closing ---------------------------------------------------- */

static void break_locked(moor_monitor *mon, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* OPEN -> BROKEN (see the theory). Lock held. */
static void break_locked(moor_monitor *mon, int code, const char *fmt, ...)
{
    char why[MOOR_ERROR_MESSAGE_SIZE];
    va_list ap;

    if (mon->state != MOOR_MONITOR_OPEN)
        return;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    mon->state = MOOR_MONITOR_BROKEN;
    mon->stats.state = MOOR_MONITOR_BROKEN;
    moor_error_set(&mon->why, code, "%s", why);
    fail_pending_locked(mon, why);
    if (mon->fd >= 0)
        shutdown(mon->fd, SHUT_RDWR);
}

static bool is_open(moor_monitor *mon)
{
    bool open;

    pthread_mutex_lock(&mon->lock);
    open = mon->state == MOOR_MONITOR_OPEN;
    pthread_mutex_unlock(&mon->lock);
    return open;
}

/* A strong reference to the owner for a callback; false if there is an
 * owner and it is gone (the callback must then not run). */
static bool owner_get(moor_monitor *mon, void **owner)
{
    *owner = mon->has_owner ? moor_weak_get(&mon->owner) : NULL;
    return !mon->has_owner || *owner;
}

/* Loop thread (or moor__monitor_feed): after a break, run on_eof once,
 * then remove the handler. The handler stays registered while on_eof runs,
 * so that a close from another thread meanwhile finds it and waits for
 * this dispatch (remove_sync) instead of returning while on_eof still
 * uses what the caller of close may free. */
static void notify_eof(moor_monitor *mon)
{
    moor_error why;
    uint64_t handler;
    void *owner;

    pthread_mutex_lock(&mon->lock);
    if (mon->state != MOOR_MONITOR_BROKEN || mon->eof_notified) {
        pthread_mutex_unlock(&mon->lock);
        return;
    }
    mon->eof_notified = true;
    why = mon->why;
    mon->fd = -1; /* no more writes or shutdowns: the socket is done */
    pthread_mutex_unlock(&mon->lock);
    if (mon->cb.on_eof && owner_get(mon, &owner)) {
        mon->cb.on_eof(mon, owner, &why, mon->cb.opaque);
        moor_unref(owner);
    }
    pthread_mutex_lock(&mon->lock);
    wait_writer_locked(mon);
    handler = mon->handler; /* 0 if a close took it meanwhile */
    mon->handler = 0;
    pthread_mutex_unlock(&mon->lock);
    if (handler)
        moor_loop_remove(mon->loop, handler);
}

#define CLOSE_WAIT_FOREVER UINT32_MAX

/* Any state -> CLOSED; waits for a dispatch in flight if @may_wait and
 * not on the loop thread, for at most @ms (CLOSE_WAIT_FOREVER: no limit).
 * Returns 0, or -ETIMEDOUT (closed, a dispatch still running). */
static int close_channel(moor_monitor *mon, bool may_wait, uint32_t ms)
{
    uint64_t handler;

    pthread_mutex_lock(&mon->lock);
    if (mon->state == MOOR_MONITOR_CLOSED) {
        pthread_mutex_unlock(&mon->lock);
        return 0;
    }
    mon->state = MOOR_MONITOR_CLOSED;
    mon->stats.state = MOOR_MONITOR_CLOSED;
    fail_pending_locked(mon, "the monitor was closed");
    if (mon->fd >= 0)
        shutdown(mon->fd, SHUT_RDWR); /* also ends a writer's sendmsg() early */
    mon->fd = -1;
    wait_writer_locked(mon);
    out_free_all_locked(mon);
    handler = mon->handler;
    mon->handler = 0;
    pthread_mutex_unlock(&mon->lock);
    if (!handler)
        return 0;
    if (!may_wait || moor_loop_in_loop(mon->loop))
        moor_loop_remove(mon->loop, handler);
    else if (ms == CLOSE_WAIT_FOREVER)
        moor_loop_remove_sync(mon->loop, handler);
    else if (moor_loop_remove_sync_deadline(mon->loop, handler, ms) == -ETIMEDOUT)
        return -ETIMEDOUT;
    return 0;
}

/* ---- writing (lock held) ------------------------------------------------------ */

/* @n more bytes went out: advance, and free the nodes fully sent. */
static void out_consume_locked(moor_monitor *mon, size_t n)
{
    mon->out_bytes -= n;
    while (n > 0) {
        struct outnode *o = mon->out_head;
        size_t left = o->len - o->off;

        if (n < left) {
            o->off += n;
            return;
        }
        n -= left;
        mon->out_head = o->next;
        if (!mon->out_head)
            mon->out_tail = &mon->out_head;
        out_release_fds_locked(o); /* none left: sent with the first byte */
        moor__free(o);
    }
}

/* Tell the loop whether we need OUT readiness (only on a change). */
static void want_out_locked(moor_monitor *mon, bool want)
{
    moor_error e = MOOR_ERROR_INIT;
    int rc;

    if (want == mon->want_out || mon->state != MOOR_MONITOR_OPEN)
        return;
    rc = moor_loop_update_fd(mon->loop, mon->handler, MOOR_LOOP_IN | (want ? MOOR_LOOP_OUT : 0u),
                             &e);
    if (rc < 0)
        break_locked(mon, rc, "cannot watch the socket: %s", moor_error_message(&e));
    else
        mon->want_out = want;
}

/* Room for the most descriptors one request carries. */
union fds_control {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * MOOR_MONITOR_MAX_FDS)];
};

/* Fill @mh with the next batch: the queued nodes from the head, up to one
 * that carries descriptors, which goes alone, with its descriptors in
 * @ctl. Returns that node, or NULL if the batch carries none. */
static struct outnode *gather_locked(moor_monitor *mon, struct msghdr *mh, struct iovec *iov,
                                     union fds_control *ctl)
{
    for (struct outnode *o = mon->out_head; o && mh->msg_iovlen < WRITE_IOV; o = o->next) {
        struct pending *p = o->fds_of;
        struct cmsghdr *c;

        if (p && mh->msg_iovlen > 0)
            break; /* its first byte starts a sendmsg() of its own */
        iov[mh->msg_iovlen++] = (struct iovec){o->data + o->off, o->len - o->off};
        if (!p)
            continue;
        mh->msg_control = ctl->buf;
        mh->msg_controllen = CMSG_SPACE(sizeof(int) * p->nfds);
        memset(ctl->buf, 0, mh->msg_controllen); /* the alignment padding too */
        c = CMSG_FIRSTHDR(mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * p->nfds);
        memcpy(CMSG_DATA(c), p->fds, sizeof(int) * p->nfds);
        return o;
    }
    return NULL;
}

/* Be the writer (unless someone is): send the queue in batches with the
 * lock dropped around each sendmsg(), until it is empty, the socket is
 * full (then the loop takes over on OUT readiness) or the channel ends. */
static void write_out_locked(moor_monitor *mon)
{
    struct iovec iov[WRITE_IOV];
    union fds_control ctl;

    if (mon->writing)
        return;
    mon->writing = true;
    while (mon->state == MOOR_MONITOR_OPEN && mon->out_head) {
        struct msghdr mh = {.msg_iov = iov};
        struct outnode *carrier = gather_locked(mon, &mh, iov, &ctl);
        int fd = mon->fd, err;
        ssize_t n;

        pthread_mutex_unlock(&mon->lock);
        n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        err = errno;
        pthread_mutex_lock(&mon->lock);
        if (n >= 0) {
            if (carrier && n > 0)
                out_release_fds_locked(carrier); /* the kernel has them now */
            out_consume_locked(mon, (size_t)n);
            continue;
        }
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK)
            break;
        break_locked(mon, -err, "write error: %s", strerror(err));
    }
    mon->writing = false;
    pthread_cond_broadcast(&mon->writer_done);
    want_out_locked(mon, mon->out_head != NULL);
}

/* ---- input (the reader) ---------------------------------------------------------- */

static void break_channel(moor_monitor *mon, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void break_channel(moor_monitor *mon, int code, const char *fmt, ...)
{
    char why[MOOR_ERROR_MESSAGE_SIZE];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&mon->lock);
    break_locked(mon, code, "%s", why);
    pthread_mutex_unlock(&mon->lock);
}

/* Room at the end of the input buffer (in_off is 0 here), grown up to
 * max_message. The buffer is never full at the cap: a partial message of
 * max_message bytes has been refused by process_input() already. Returns
 * the room, or 0 after breaking the channel for want of memory. */
static size_t in_room(moor_monitor *mon)
{
    size_t cap;
    char *p;

    if (mon->in_len < mon->in_cap)
        return mon->in_cap - mon->in_len;
    assert(mon->in_cap < mon->max_message);
    cap = mon->in_cap ? mon->in_cap * 2 : IN_FIRST;
    if (cap > mon->max_message)
        cap = mon->max_message;
    if (!(p = moor__malloc(cap))) {
        break_channel(mon, -ENOMEM, "out of memory for a message");
        return 0;
    }
    if (mon->in_len)
        memcpy(p, mon->in, mon->in_len);
    moor__free(mon->in);
    mon->in = p;
    mon->in_cap = cap;
    return cap - mon->in_len;
}

/* Move the unconsumed bytes to the front; free a large idle buffer. */
static void in_compact(moor_monitor *mon)
{
    size_t left = mon->in_len - mon->in_off;

    if (left && mon->in_off)
        memmove(mon->in, mon->in + mon->in_off, left);
    mon->in_off = 0;
    mon->in_len = left;
    if (!left && mon->in_cap > IN_KEEP) {
        moor__free(mon->in);
        mon->in = NULL;
        mon->in_cap = 0;
    }
}

/* The reader starts or stops dispatching. While it dispatches, callers
 * only queue their requests: it writes them all at once when it stops,
 * being awake anyway, instead of one sendmsg() per caller it woke. */
static void set_reading(moor_monitor *mon, bool on)
{
    pthread_mutex_lock(&mon->lock);
    mon->reading = on && mon->state == MOOR_MONITOR_OPEN;
    if (!on && mon->out_head && !mon->want_out)
        write_out_locked(mon);
    pthread_mutex_unlock(&mon->lock);
}

static void deliver_event(moor_monitor *mon, moor_monitor_message *msg)
{
    void *owner;
    bool open, alive = owner_get(mon, &owner);

    pthread_mutex_lock(&mon->lock);
    open = mon->state == MOOR_MONITOR_OPEN;
    if (open && alive)
        mon->stats.events++;
    else if (open)
        mon->stats.dropped++;
    pthread_mutex_unlock(&mon->lock);
    if (open && alive && mon->cb.on_event) {
        /* A callback may take long: do not hold queued requests back. */
        set_reading(mon, false);
        mon->cb.on_event(mon, owner, msg, mon->cb.opaque);
        set_reading(mon, true);
    }
    moor_unref(owner);
}

/* Complete the waiting call, and wake it only after unlocking: a waiter
 * woken under the lock would at once block on it again (glibc does not
 * move waiters from a condition to the mutex), costing two more futex
 * calls and a context switch per reply. A semaphore allows it: the waiter
 * returns only after the post, and glibc's 64-bit sem_post touches the
 * semaphore no more once a waiter can return (so the waiter may destroy it
 * then). Without that guarantee (!POST_UNLOCKED) it posts under the lock. */
static void deliver_reply(moor_monitor *mon, moor_monitor_message *msg)
{
    struct pending *p;

    pthread_mutex_lock(&mon->lock);
    p = pending_find_locked(mon, msg->id);
    if (!p) {
        mon->stats.stray++;
    } else if (msg->status < 0) {
        /* A refusal is always -EREMOTEIO to the caller, whatever code the
         * codec chose: the channel's own failures (-EPIPE, -ETIMEDOUT...)
         * must stay distinguishable from the peer saying no. */
        mon->stats.replies++;
        pending_complete_locked(mon, p, -EREMOTEIO, NULL,
                                msg->error ? msg->error : strerror(-msg->status));
    } else {
        mon->stats.replies++;
        pending_complete_locked(mon, p, 0, msg->payload, NULL);
        msg->payload = NULL;
    }
    if (p && !POST_UNLOCKED) {
        tsan_release(p);
        sem_post(&p->sem); /* the waiter takes the lock before @p goes */
    }
    pthread_mutex_unlock(&mon->lock);
    if (p && POST_UNLOCKED) {
        tsan_release(p);
        sem_post(&p->sem); /* the last access to @p */
    }
}

/* Hand one classified message on; its payload is freed unless taken. */
static void dispatch(moor_monitor *mon, moor_monitor_message *msg)
{
    switch (msg->kind) {
    case MOOR_MONITOR_REPLY:
        deliver_reply(mon, msg);
        break;
    case MOOR_MONITOR_EVENT:
    case MOOR_MONITOR_GREETING:
        deliver_event(mon, msg);
        break;
    case MOOR_MONITOR_IGNORE:
        pthread_mutex_lock(&mon->lock);
        mon->stats.ignored++;
        pthread_mutex_unlock(&mon->lock);
        break;
    }
    if (msg->payload && mon->codec.free_payload)
        mon->codec.free_payload(mon->codec.opaque, msg->payload);
}

static const char *codec_text(const moor_error *e, ssize_t code)
{
    return moor_error_is_set(e) ? moor_error_message(e) : strerror((int)-code);
}

/* Frame, classify and dispatch every complete message buffered. */
static void process_input(moor_monitor *mon)
{
    while (mon->in_off < mon->in_len) {
        const char *p = mon->in + mon->in_off;
        size_t avail = mon->in_len - mon->in_off;
        moor_error e = MOOR_ERROR_INIT;
        moor_monitor_message msg = {0};
        ssize_t n = mon->codec.frame(mon->codec.opaque, p, avail, &e);
        int rc;

        if (n == 0 && avail >= mon->max_message) {
            break_channel(mon, -EMSGSIZE, "the peer sent a message longer than %zu bytes",
                          mon->max_message);
            return;
        }
        if (n == 0)
            break;
        if (n < 0) {
            break_channel(mon, -EPROTO, "garbage from the peer: cannot frame it: %s",
                          codec_text(&e, n));
            return;
        }
        if ((size_t)n > avail) {
            break_channel(mon, -EPROTO, "codec error: a frame of %zd bytes in %zu", n, avail);
            return;
        }
        rc = mon->codec.classify(mon->codec.opaque, p, (size_t)n, &msg, &e);
        if (rc >= 0 &&
            (msg.kind < MOOR_MONITOR_REPLY || msg.kind > MOOR_MONITOR_IGNORE || msg.status > 0)) {
            if (msg.payload && mon->codec.free_payload)
                mon->codec.free_payload(mon->codec.opaque, msg.payload);
            moor_error_set(&e, -EPROTO, "codec error: kind %d, status %d", (int)msg.kind,
                           msg.status);
            rc = -EPROTO;
        }
        if (rc < 0) {
            break_channel(mon, -EPROTO, "garbage from the peer: %s", codec_text(&e, rc));
            return;
        }
        mon->in_off += (size_t)n;
        dispatch(mon, &msg);
        if (!is_open(mon))
            return;
    }
    in_compact(mon);
}

static void read_some(moor_monitor *mon, int fd)
{
    for (int i = 0; i < READS_PER_WAKEUP && is_open(mon); i++) {
        size_t room = in_room(mon);
        ssize_t n;

        if (!room)
            return;
        n = read(fd, mon->in + mon->in_len, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0) {
            int code = -errno;

            break_channel(mon, code, "read error: %s", strerror(-code));
            return;
        }
        if (n == 0) {
            break_channel(mon, -EPIPE, "the peer closed the connection");
            return;
        }
        mon->in_len += (size_t)n;
        process_input(mon);
        /* A short read drained the socket: no need to read again to hear
         * EAGAIN (the fd is level-triggered: more data wakes us again). */
        if ((size_t)n < room)
            return;
    }
}

static void read_input(moor_monitor *mon, int fd)
{
    set_reading(mon, true);
    read_some(mon, fd);
    set_reading(mon, false);
}

static void on_fd(moor_loop *loop, uint64_t id, int fd, unsigned revents, void *opaque)
{
    struct link *link = opaque;
    moor_monitor *mon = moor_weak_get(&link->mon);

    (void)loop;
    (void)id;
    if (!mon)
        return; /* being disposed: its close is removing this handler */
    if (revents & MOOR_LOOP_OUT) {
        pthread_mutex_lock(&mon->lock);
        write_out_locked(mon);
        pthread_mutex_unlock(&mon->lock);
    }
    if (revents & (MOOR_LOOP_IN | MOOR_LOOP_ERR | MOOR_LOOP_HUP))
        read_input(mon, fd);
    notify_eof(mon);
    moor_unref(mon);
}

static void link_free(void *opaque)
{
    struct link *link = opaque;

    moor_weak_clear(&link->mon);
    if (link->fd >= 0)
        close(link->fd);
    moor__free(link);
}

int moor__monitor_feed(moor_monitor *mon, const void *data, size_t len)
{
    const char *p = data;

    if (!mon)
        return -EINVAL;
    set_reading(mon, true); /* as read_input() does */
    while (len > 0 && is_open(mon)) {
        size_t room = in_room(mon), n = room < len ? room : len;

        if (!room)
            break;
        memcpy(mon->in + mon->in_len, p, n);
        mon->in_len += n;
        p += n;
        len -= n;
        process_input(mon);
    }
    set_reading(mon, false);
    notify_eof(mon);
    return is_open(mon) ? 0 : -EPIPE;
}

/* ---- the live list (introspect.h) ---------------------------------------------------- */

/* Every monitor from new to dispose. A leaf above the monitors' own
 * mutexes: moor__monitor_collect takes each of those inside it, and
 * nothing takes live_lock while holding one. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static moor__live_node *live_first;

#define MONITOR_OF(node) MOOR__LIVE_ENTRY(node, moor_monitor, live)

__attribute__((constructor)) static void live_fork_init(void)
{
    moor__live_lock_across_fork(&live_lock);
}

static const char *state_name(moor_monitor_state state)
{
    switch (state) {
    case MOOR_MONITOR_OPEN:
        return "open";
    case MOOR_MONITOR_BROKEN:
        return "broken";
    case MOOR_MONITOR_CLOSED:
        return "closed";
    }
    return "new";
}

static int64_t ms_until(const struct timespec *t, const struct timespec *now)
{
    return (int64_t)(t->tv_sec - now->tv_sec) * 1000 + (t->tv_nsec - now->tv_nsec) / 1000000;
}

/* @mon's pending calls into @m; the caller holds mon->lock. */
static int collect_calls_locked(moor_monitor *mon, moor_debug_monitor *m,
                                const struct timespec *now)
{
    size_t i = 0;

    if (!mon->stats.pending)
        return 0;
    /* plain calloc: moor_debug_fail_alloc() counts the library's own work. */
    if (!(m->pending = calloc(mon->stats.pending, sizeof(*m->pending))))
        return -ENOMEM;
    for (struct pending *p = mon->head; p && i < mon->stats.pending; p = p->next, i++) {
        moor_debug_call *c = &m->pending[i];
        int64_t left = ms_until(&p->deadline, now);

        c->id = p->id;
        snprintf(c->command, sizeof(c->command), "%s", p->what ? p->what : "?");
        c->thread = p->thread;
        c->left_ms = left;
        c->age_ms = (int64_t)p->ms - left;
    }
    m->ncalls = i;
    return 0;
}

static int collect_one(moor_monitor *mon, struct moor__vec *v)
{
    moor_debug_monitor *m = moor__vec_push(v);
    struct timespec now;
    int rc;

    if (!m)
        return -ENOMEM;
    m->monitor = mon;
    snprintf(m->name, sizeof(m->name), "%s", mon->name);
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&mon->lock);
    snprintf(m->state, sizeof(m->state), "%s", state_name(mon->state));
    m->entered = mon->stats.entered;
    m->calls = mon->stats.calls;
    m->replies = mon->stats.replies;
    m->timeouts = mon->stats.timeouts;
    rc = collect_calls_locked(mon, m, &now);
    pthread_mutex_unlock(&mon->lock);
    return rc;
}

int moor__monitor_collect(struct moor__vec *mons)
{
    int rc = 0;

    pthread_mutex_lock(&live_lock);
    for (moor__live_node *n = live_first; n && rc == 0; n = n->next)
        rc = collect_one(MONITOR_OF(n), mons);
    pthread_mutex_unlock(&live_lock);
    return rc;
}

/* ---- new / dispose ------------------------------------------------------------------ */

static void monitor_dispose(void *obj)
{
    moor_monitor *mon = obj;

    moor__live_unregister(&live_lock, &live_first, &mon->live);
    /* No reference is left, so no dispatch holds one: a remove_sync only
     * waits for a dispatch that found the weak reference dead. */
    close_channel(mon, true, CLOSE_WAIT_FOREVER);
    moor_weak_clear(&mon->owner);
    moor_unref(mon->loop);
    moor__free(mon->in);
    out_free_all_locked(mon); /* no lock needed: nobody else is left */
    /* Each entry holds a reference, so there are none left by now. */
    while (mon->entries) {
        struct entry *e = mon->entries;

        mon->entries = e->next;
        moor__free(e);
    }
    pthread_cond_destroy(&mon->writer_done);
    pthread_mutex_destroy(&mon->lock);
}

static int check_new_args(moor_loop *loop, int fd, const moor_monitor_codec *codec, void *owner,
                          const moor_monitor_options *o, moor_error *err)
{
    size_t max_message;

    if (!loop || !codec)
        return misuse(NULL, MOOR_MISUSE_BAD_ARGUMENT, err, "moor_monitor_new: NULL %s",
                      !loop ? "loop" : "codec");
    if (!codec->frame || !codec->encode || !codec->classify)
        return misuse(codec, MOOR_MISUSE_BAD_ARGUMENT, err,
                      "moor_monitor_new: the codec lacks a %s function",
                      !codec->frame    ? "frame"
                      : !codec->encode ? "encode"
                                       : "classify");
    if (fd < 0)
        return misuse(NULL, MOOR_MISUSE_BAD_ARGUMENT, err, "moor_monitor_new: fd %d", fd);
    if (owner && !moor_is_a(owner, moor_object_class()))
        return misuse(owner, MOOR_MISUSE_NOT_AN_OBJECT, err,
                      "moor_monitor_new: owner %p is not a live moor object", owner);
    if (o && o->max_message && o->max_message < MOOR_MONITOR_MIN_MAX_MESSAGE)
        return misuse(NULL, MOOR_MISUSE_BAD_ARGUMENT, err,
                      "moor_monitor_new: max_message %zu is below %u", o->max_message,
                      MOOR_MONITOR_MIN_MAX_MESSAGE);
    if (o && o->max_message > SSIZE_MAX)
        return misuse(NULL, MOOR_MISUSE_BAD_ARGUMENT, err,
                      "moor_monitor_new: max_message %zu is too large", o->max_message);
    max_message = o && o->max_message ? o->max_message : MOOR_MONITOR_DEFAULT_MAX_MESSAGE;
    if (o && o->max_backlog && o->max_backlog < max_message)
        return misuse(NULL, MOOR_MISUSE_BAD_ARGUMENT, err,
                      "moor_monitor_new: max_backlog %zu is below max_message %zu (the "
                      "largest request could never be queued)",
                      o->max_backlog, max_message);
    if (o && o->name && strlen(o->name) > MOOR_MONITOR_NAME_MAX)
        return misuse(NULL, MOOR_MISUSE_BAD_ARGUMENT, err,
                      "moor_monitor_new: name longer than %d bytes", MOOR_MONITOR_NAME_MAX);
    return 0;
}

static int check_socket(int fd, moor_error *err)
{
    int type = 0;
    socklen_t len = sizeof(type);

    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        int code = -errno;

        return moor_error_set(err, code, "moor_monitor_new: fd %d: %s", fd, strerror(-code));
    }
    if (type != SOCK_STREAM)
        return moor_error_set(err, -EPROTOTYPE, "moor_monitor_new: fd %d is not a stream socket",
                              fd);
    return 0;
}

/* Whether @fd (a stream socket) can carry descriptors. */
static bool socket_is_unix(int fd)
{
    int domain = 0;
    socklen_t len = sizeof(domain);

    return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX;
}

/* Register the handler and open the channel; on failure nothing of @fd
 * changed and @link is freed (by the loop, through link_free). */
static int start_io(moor_monitor *mon, struct link *link, int fd, moor_error *err)
{
    int flags = fcntl(fd, F_GETFL);
    uint64_t id;
    int rc;

    if (flags < 0 || (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)) {
        int code = -errno;

        link_free(link);
        return moor_error_set(err, code, "moor_monitor_new: fd %d: %s", fd, strerror(-code));
    }
    /* Under the lock: a dispatch that starts at once waits until the
     * monitor is open. */
    pthread_mutex_lock(&mon->lock);
    rc = moor_loop_add_fd(mon->loop, fd, MOOR_LOOP_IN, on_fd, link, link_free, &id, err);
    if (rc == 0) {
        /* Read by link_free only after the handler is removed, which the
         * loop orders after this store (its own mutex). */
        link->fd = fd;
        mon->fd = fd;
        mon->handler = id;
        mon->state = MOOR_MONITOR_OPEN;
        mon->stats.state = MOOR_MONITOR_OPEN;
    }
    pthread_mutex_unlock(&mon->lock);
    if (rc < 0) {
        if (!(flags & O_NONBLOCK))
            fcntl(fd, F_SETFL, flags);
        moor_error_prefix(err, "moor_monitor_new: ");
        return rc;
    }
    return 0;
}

moor_monitor *moor_monitor_new(moor_loop *loop, int fd, const moor_monitor_codec *codec,
                               const moor_monitor_callbacks *callbacks, void *owner,
                               const moor_monitor_options *options, moor_error *err)
{
    const moor_class *klass;
    moor_autounref moor_monitor *mon = NULL;
    pthread_mutexattr_t attr;
    struct link *link;

    if (check_new_args(loop, fd, codec, owner, options, err) < 0 || check_socket(fd, err) < 0)
        return NULL;
    if (!(klass = moor__lazy_class_get(&monitor_klass, err)))
        return NULL;
    if (!(mon = moor_object_new(klass))) {
        moor_error_set(err, -ENOMEM, "moor_monitor_new: out of memory");
        return NULL;
    }
    /* moor_object_new zeroed it: state 0 means "not started", which
     * dispose treats like closed with nothing to remove. */
    /* Adaptive: held for a few instructions at a time by up to every caller
     * and the reader at once; a short spin beats a futex sleep there. */
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&mon->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    pthread_cond_init(&mon->writer_done, NULL);
    mon->out_tail = &mon->out_head;
    mon->loop = moor_ref(loop);
    mon->codec = *codec;
    if (callbacks)
        mon->cb = *callbacks;
    mon->fd = -1;
    mon->unix_socket = socket_is_unix(fd);
    atomic_init(&mon->next_id, 1);
    mon->default_timeout_ms = options && options->default_timeout_ms
                                  ? options->default_timeout_ms
                                  : MOOR_MONITOR_DEFAULT_TIMEOUT_MS;
    mon->max_message =
        options && options->max_message ? options->max_message : MOOR_MONITOR_DEFAULT_MAX_MESSAGE;
    mon->max_backlog =
        options && options->max_backlog ? options->max_backlog : default_backlog(mon->max_message);
    if (options && options->name)
        snprintf(mon->name, sizeof(mon->name), "%s", options->name);
    else
        snprintf(mon->name, sizeof(mon->name), "fd %d", fd);
    if (owner) {
        mon->has_owner = true;
        moor_weak_set(&mon->owner, owner);
    }
    if (!(link = moor__calloc(1, sizeof(*link)))) {
        moor_error_set(err, -ENOMEM, "moor_monitor_new(%s): out of memory", mon->name);
        return NULL;
    }
    link->fd = -1;
    moor_weak_set(&link->mon, mon);
    if (start_io(mon, link, fd, err) < 0)
        return NULL;
    moor__live_register(&live_lock, &live_first, &mon->live);
    return moor_steal(&mon);
}

/* ---- calls ----------------------------------------------------------------------------- */

static const char *request_name(const moor_monitor *mon, const void *request)
{
    const char *name = mon->codec.name ? mon->codec.name(mon->codec.opaque, request) : NULL;

    return name ? name : "request";
}

/* Whether the calling thread holds the owner's mutex. */
static bool owner_locked_here(moor_monitor *mon)
{
    void *owner;
    bool held;

    if (!mon->has_owner || !(owner = moor_weak_get(&mon->owner)))
        return false;
    held = moor_lock_held(owner);
    moor_unref(owner);
    return held;
}

/* A node holding @request encoded with @id: encoded on the stack first
 * and copied, or, if larger, encoded again straight into the node.
 * Returns 0 with the node in *@out, or the -errno (also in @err). */
static int encode(moor_monitor *mon, const void *request, const char *what, uint64_t id,
                  struct outnode **out, moor_error *err)
{
    moor_error e = MOOR_ERROR_INIT;
    char stack[ENCODE_STACK];
    ssize_t n = mon->codec.encode(mon->codec.opaque, request, id, stack, sizeof(stack), &e);
    struct outnode *o;

    if (n <= 0)
        return moor_error_set(err, n < 0 ? (int)n : -EINVAL, "monitor '%s': cannot encode '%s': %s",
                              mon->name, what, n < 0 ? codec_text(&e, n) : "empty request");
    if ((size_t)n > mon->max_message)
        return moor_error_set(err, -EMSGSIZE,
                              "monitor '%s': '%s' encodes to %zd bytes, more than %zu", mon->name,
                              what, n, mon->max_message);
    if (!(o = moor__malloc(sizeof(*o) + (size_t)n + 1)))
        return moor_error_set(err, -ENOMEM, "monitor '%s': out of memory for '%s'", mon->name,
                              what);
    o->next = NULL;
    o->len = (size_t)n;
    o->off = 0;
    o->fds_of = NULL;
    if (n < ENCODE_STACK) {
        memcpy(o->data, stack, (size_t)n);
        *out = o;
        return 0;
    }
    ssize_t again = mon->codec.encode(mon->codec.opaque, request, id, o->data, (size_t)n + 1, &e);
    if (again == n) {
        *out = o;
        return 0;
    }
    moor__free(o);
    return moor_error_set(
        err, again < 0 ? (int)again : -EINVAL, "monitor '%s': cannot encode '%s': %s", mon->name,
        what, again < 0 ? codec_text(&e, again) : "the codec changed its mind about the length");
}

/* Wait for the post that completes @p, or for the deadline. Returns 0
 * (done: the results are in @p) or -ETIMEDOUT (unlinked, never done). */
static int wait_done(moor_monitor *mon, struct pending *p, const struct timespec *deadline)
{
    int r;

    do
        r = sem_clockwait(&p->sem, CLOCK_MONOTONIC, deadline);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        pthread_mutex_lock(&mon->lock);
        if (!p->done) {
            pending_unlink_locked(mon, p);
            mon->stats.timeouts++;
            pthread_mutex_unlock(&mon->lock);
            return -ETIMEDOUT;
        }
        pthread_mutex_unlock(&mon->lock);
        /* Completed as the deadline passed: its post is on the way (its
         * completer is past the point of no return, a few instructions
         * from sem_post), and must be consumed before @p goes. */
        while (sem_wait(&p->sem) < 0 && errno == EINTR)
            ;
    } else if (!POST_UNLOCKED) {
        /* The post was made under the lock: once we hold it, sem_post has
         * returned and the semaphore may go. */
        pthread_mutex_lock(&mon->lock);
        pthread_mutex_unlock(&mon->lock);
    }
    tsan_acquire(p);
    return 0;
}

/* Queue @o (which the queue then owns, linked with @p if @p carries
 * descriptors) and wait for the record to complete or time out. Returns 0
 * (the record is done, see p->rc), -ETIMEDOUT, or -EPIPE or -ENOBUFS with
 * p->text set (not queued: @o is freed, @p's descriptors are still its
 * own). */
static int queue_and_wait(moor_monitor *mon, struct pending *p, struct outnode *o,
                          const struct timespec *deadline)
{
    pthread_mutex_lock(&mon->lock);
    if (mon->state != MOOR_MONITOR_OPEN) {
        snprintf(p->text, sizeof(p->text), "%s",
                 mon->state == MOOR_MONITOR_CLOSED ? "the monitor was closed"
                                                   : moor_error_message(&mon->why));
        pthread_mutex_unlock(&mon->lock);
        moor__free(o);
        return -EPIPE;
    }
    if (o->len > mon->max_backlog - mon->out_bytes) {
        snprintf(p->text, sizeof(p->text),
                 "%zu bytes are queued unsent already (the peer is not reading?); %zu more "
                 "would pass the cap of %zu",
                 mon->out_bytes, o->len, mon->max_backlog);
        pthread_mutex_unlock(&mon->lock);
        moor__free(o);
        return -ENOBUFS;
    }
    *mon->out_tail = o;
    mon->out_tail = &o->next;
    mon->out_bytes += o->len;
    if (p->nfds) {
        o->fds_of = p;
        p->node = o;
    }
    pending_link_locked(mon, p);
    mon->stats.calls++;
    if (!mon->want_out && !mon->reading)
        write_out_locked(mon); /* unless someone writes; may complete p */
    pthread_mutex_unlock(&mon->lock);
    return wait_done(mon, p, deadline);
}

/* Withdraw @o, queued and not one byte of it sent, from the queue. */
static void out_withdraw_locked(moor_monitor *mon, struct outnode *o)
{
    struct outnode **pp = &mon->out_head;

    assert(o->off == 0);
    while (*pp != o)
        pp = &(*pp)->next;
    *pp = o->next;
    if (mon->out_tail == &o->next)
        mon->out_tail = pp;
    mon->out_bytes -= o->len;
    out_release_fds_locked(o);
    moor__free(o);
}

/* After the wait of a call with descriptors, however it ended: once no
 * writer is in flight, a node still linked to @p has sent nothing (see the
 * theory) and is withdrawn, closing the duplicates; a request never queued
 * still has its duplicates, closed here. Afterwards nothing points to @p.
 * @p's fields are read under the lock: until then a writer or a close may
 * be releasing them. */
static void settle_fds(moor_monitor *mon, struct pending *p)
{
    pthread_mutex_lock(&mon->lock);
    if (p->node)
        wait_writer_locked(mon);
    if (p->node)
        out_withdraw_locked(mon, p->node);
    pthread_mutex_unlock(&mon->lock);
    close_fds(p->fds, p->nfds); /* not queued: still ours */
    p->nfds = 0;
}

static int check_call(moor_monitor *mon, const char *fn, const void *request, int timeout_ms,
                      moor_error *err)
{
    if (!is_monitor(mon))
        return misuse(mon, MOOR_MISUSE_BAD_ARGUMENT, err, "%s: %p is not a monitor", fn,
                      (void *)mon);
    if (!request)
        return misuse(mon, MOOR_MISUSE_BAD_ARGUMENT, err, "%s(%s): NULL request", fn, mon->name);
    if (timeout_ms < 1 && timeout_ms != MOOR_MONITOR_TIMEOUT_DEFAULT)
        return misuse(mon, MOOR_MISUSE_BAD_ARGUMENT, err,
                      "%s(%s): timeout %d ms (want >= 1, or -1 for the default)", fn, mon->name,
                      timeout_ms);
    return 0;
}

/* Duplicate @fds into @p (all or none). Returns 0 or the -errno. */
static int dup_fds(moor_monitor *mon, const int *fds, unsigned nfds, struct pending *p,
                   moor_error *err)
{
    for (unsigned i = 0; i < nfds; i++) {
        int fd = fcntl(fds[i], F_DUPFD_CLOEXEC, 0), code = -errno;

        if (fd >= 0) {
            p->fds[p->nfds++] = fd;
            continue;
        }
        close_fds(p->fds, p->nfds);
        p->nfds = 0;
        if (code == -EBADF)
            return misuse(mon, MOOR_MISUSE_BAD_ARGUMENT, err,
                          "moor_monitor_call_fds(%s): fds[%u] = %d is not an open descriptor",
                          mon->name, i, fds[i]);
        return moor_error_set(err, code, "monitor '%s': cannot duplicate fds[%u] = %d: %s",
                              mon->name, i, fds[i], strerror(-code));
    }
    return 0;
}

/* The body of both calls (the arguments checked). Duplicates of @fds, if
 * any, are made once the request is encoded, and are sent or closed when
 * this returns. */
static int call(moor_monitor *mon, const void *request, const int *fds, unsigned nfds, void **reply,
                int timeout_ms, moor_error *err)
{
    struct pending p = {0};
    struct timespec deadline;
    struct outnode *o = NULL;
    const char *what;
    uint32_t ms;
    int rc;

    what = request_name(mon, request);
    if (moor_loop_in_loop(mon->loop))
        return moor_error_set(err, -EDEADLK,
                              "monitor '%s': '%s' called on the loop thread, which would have "
                              "to read its own reply",
                              mon->name, what);
    if (owner_locked_here(mon))
        return moor_error_set(err, -EDEADLK,
                              "monitor '%s': '%s' called with the owner's mutex held (a call "
                              "blocks on I/O: use moor_monitor_enter/exit)",
                              mon->name, what);
    ms =
        timeout_ms == MOOR_MONITOR_TIMEOUT_DEFAULT ? mon->default_timeout_ms : (uint32_t)timeout_ms;
    /* relaxed: see next_id. */
    p.id = atomic_fetch_add_explicit(&mon->next_id, 1, memory_order_relaxed);
    if ((rc = encode(mon, request, what, p.id, &o, err)) < 0)
        return rc;
    if (nfds && (rc = dup_fds(mon, fds, nfds, &p, err)) < 0) {
        moor__free(o);
        return rc;
    }
    sem_init(&p.sem, 0, 0);
    deadline = moor__deadline_after_ms(ms);
    p.what = what;
    p.thread = moor__thread_id();
    p.ms = ms;
    p.deadline = deadline;
    rc = queue_and_wait(mon, &p, o, &deadline);
    sem_destroy(&p.sem);
    if (nfds)
        settle_fds(mon, &p); /* sent, or closed */

    if (rc == -ENOBUFS) /* not queued: p.rc was never set */
        return moor_error_set(err, rc, "monitor '%s': '%s' not queued: %s", mon->name, what,
                              p.text);
    if (rc == -ETIMEDOUT)
        return moor_error_set(err, rc, "monitor '%s': no reply to '%s' (id %" PRIu64 ") in %u ms",
                              mon->name, what, p.id, ms);
    if (rc == 0)
        rc = p.rc;
    if (rc == -EPIPE)
        return moor_error_set(err, rc, "monitor '%s': '%s' failed: %s", mon->name, what, p.text);

    if (rc < 0)
        return moor_error_set(err, rc, "monitor '%s': '%s' refused by the peer: %s", mon->name,
                              what, p.text);
    if (reply)
        *reply = p.payload;
    else
        moor_monitor_payload_free(mon, p.payload);
    return 0;
}

int moor_monitor_call(moor_monitor *mon, const void *request, void **reply, int timeout_ms,
                      moor_error *err)
{
    int rc = check_call(mon, "moor_monitor_call", request, timeout_ms, err);

    if (rc < 0)
        return rc;
    if (moor__debug_on(MOOR_DEBUG_LOCKS) && !owner_locked_here(mon)) /* else -EDEADLK */
        moor__lockdep_blocking("moor_monitor_call", NULL, true, __builtin_return_address(0));
    return call(mon, request, NULL, 0, reply, timeout_ms, err);
}

int moor_monitor_call_fds(moor_monitor *mon, const void *request, const int *fds, unsigned nfds,
                          void **reply, int timeout_ms, moor_error *err)
{
    int rc = check_call(mon, "moor_monitor_call_fds", request, timeout_ms, err);

    if (rc < 0)
        return rc;
    if (nfds > MOOR_MONITOR_MAX_FDS || (nfds && !fds))
        return misuse(mon, MOOR_MISUSE_BAD_ARGUMENT, err,
                      "moor_monitor_call_fds(%s): %u descriptors at %p (want at most %u)",
                      mon->name, nfds, (const void *)fds, MOOR_MONITOR_MAX_FDS);
    if (nfds && !mon->unix_socket)
        return moor_error_set(err, -ENOTSUP,
                              "monitor '%s': cannot pass descriptors: the socket is not AF_UNIX",
                              mon->name);
    if (moor__debug_on(MOOR_DEBUG_LOCKS) && !owner_locked_here(mon)) /* else -EDEADLK */
        moor__lockdep_blocking("moor_monitor_call_fds", NULL, true, __builtin_return_address(0));
    return call(mon, request, fds, nfds, reply, timeout_ms, err);
}

void moor_monitor_payload_free(moor_monitor *mon, void *payload)
{
    if (!payload)
        return;
    if (!is_monitor(mon)) {
        misuse(mon, MOOR_MISUSE_BAD_ARGUMENT, NULL,
               "moor_monitor_payload_free: %p is not a monitor (payload %p leaked)", (void *)mon,
               payload);
        return;
    }
    if (mon->codec.free_payload)
        mon->codec.free_payload(mon->codec.opaque, payload);
}

/* ---- enter / exit / close ----------------------------------------------------------------- */

int moor_monitor_enter(moor_monitor *mon, void *obj)
{
    struct entry *e;
    int rc = 0;

    if (!is_monitor(mon) || !obj)
        return misuse(mon, MOOR_MISUSE_BAD_ARGUMENT, NULL, "moor_monitor_enter: %s",
                      !obj ? "NULL object" : "not a monitor");
    if (!moor_lock_held(obj))
        return misuse(obj, MOOR_MISUSE_NOT_LOCKED, NULL,
                      "moor_monitor_enter(%s): object %p is not locked by the calling thread",
                      mon->name, obj);
    if (moor_loop_in_loop(mon->loop))
        return -EDEADLK;
    if (!(e = moor__malloc(sizeof(*e))))
        return -ENOMEM;
    e->thread = pthread_self();
    e->obj = obj;
    pthread_mutex_lock(&mon->lock);
    if (mon->state == MOOR_MONITOR_OPEN) {
        e->next = mon->entries;
        mon->entries = e;
        mon->stats.entered++;
    } else {
        rc = -ESRCH;
    }
    pthread_mutex_unlock(&mon->lock);
    if (rc < 0) {
        moor__free(e);
        return rc;
    }
    moor__lockdep_note_monitor_enter(mon, mon->name, obj, __builtin_return_address(0));
    moor_ref(mon);
    moor_unlock(obj);
    return 0;
}

int moor_monitor_exit(moor_monitor *mon, void *obj)
{
    struct entry **pp, *e = NULL;
    bool open;

    if (!is_monitor(mon) || !obj)
        return misuse(mon, MOOR_MISUSE_BAD_ARGUMENT, NULL, "moor_monitor_exit: %s",
                      !obj ? "NULL object" : "not a monitor");
    if (moor_lock_held(obj))
        return misuse(obj, MOOR_MISUSE_LOCK_RECURSIVE, NULL,
                      "moor_monitor_exit(%s): object %p is still locked by the calling thread",
                      mon->name, obj);
    pthread_mutex_lock(&mon->lock);
    for (pp = &mon->entries; *pp; pp = &(*pp)->next) {
        if (pthread_equal((*pp)->thread, pthread_self()) && (*pp)->obj == obj) {
            e = *pp;
            *pp = e->next;
            mon->stats.entered--;
            break;
        }
    }
    open = mon->state == MOOR_MONITOR_OPEN;
    pthread_mutex_unlock(&mon->lock);
    if (!e)
        return misuse(mon, MOOR_MISUSE_BAD_ARGUMENT, NULL,
                      "moor_monitor_exit(%s): no moor_monitor_enter to end for object %p on "
                      "this thread",
                      mon->name, obj);
    moor__lockdep_internal_unlock(mon, NULL, __builtin_return_address(0)); /* the section */
    moor__free(e);
    moor_unref(mon); /* before the lock: see the header */
    moor_lock(obj);
    return open ? 0 : -ESRCH;
}

static int close_common(moor_monitor *mon, uint32_t ms, const char *fn)
{
    bool owner_locked;

    if (!is_monitor(mon))
        return misuse(mon, MOOR_MISUSE_BAD_ARGUMENT, NULL, "%s: %p is not a monitor", fn,
                      (void *)mon);
    owner_locked = owner_locked_here(mon);
    if (owner_locked && !moor_loop_in_loop(mon->loop))
        moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, mon,
                          "%s(%s) with the owner's mutex held: it cannot wait "
                          "for an event callback in flight, which may need that mutex",
                          fn, mon->name);
    return close_channel(mon, !owner_locked, ms);
}

void moor_monitor_close(moor_monitor *mon)
{
    if (mon)
        close_common(mon, CLOSE_WAIT_FOREVER, "moor_monitor_close");
}

int moor_monitor_close_deadline(moor_monitor *mon, uint32_t timeout_ms)
{
    if (timeout_ms == CLOSE_WAIT_FOREVER)
        timeout_ms--; /* a bounded wait, as asked: 49.7 days */
    return close_common(mon, timeout_ms, "moor_monitor_close_deadline");
}

int moor_monitor_get_stats(moor_monitor *mon, moor_monitor_stats *out)
{
    if (!is_monitor(mon) || !out)
        return misuse(mon, MOOR_MISUSE_BAD_ARGUMENT, NULL, "moor_monitor_get_stats: %s",
                      !out ? "NULL out" : "not a monitor");
    pthread_mutex_lock(&mon->lock);
    *out = mon->stats;
    pthread_mutex_unlock(&mon->lock);
    return 0;
}

const char *moor_monitor_name(const moor_monitor *mon)
{
    return is_monitor(mon) ? mon->name : "(null)";
}
