/* SPDX-License-Identifier: MIT */
/*
 * moor/monitor.h - a request/reply channel to a slow external process.
 *
 * A monitor talks to a peer (a QEMU process, a helper daemon) over a
 * connected stream socket that a moor_loop watches. The application brings
 * the protocol as a codec: how to cut the byte stream into messages, how
 * to encode a request with an id, and whether an incoming message is the
 * reply to an id, an unsolicited event, or a greeting. The monitor brings
 * the rest: ids, pipelining, deadlines, matching replies that arrive in any
 * order, delivering events, and failing everything at once when the peer
 * goes away.
 *
 * Threads. moor_monitor_call() blocks its caller until the reply, the
 * deadline or the end of the channel, so it is made from any thread except
 * the loop's (the loop is what reads the reply). Many threads may call at
 * once: their requests are written back to back and each waits for its own
 * id. Events, greetings and on_eof run on the loop thread.
 *
 * Lifetime. The monitor is a refcounted moor object (class
 * "moor_monitor"). It holds a reference to its loop and a WEAK reference
 * to its owner (the object the channel belongs to, which usually holds the
 * monitor): every callback gets a strong reference to the owner for its
 * duration, or does not run if the owner is gone. moor_monitor_close()
 * ends the channel; the last unref closes it too.
 *
 * Lock order (DESIGN rule 4): object mutex, then the monitor's internal
 * mutex. The monitor never holds its mutex while it calls the codec or a
 * callback, or while it takes an object mutex. Nothing here may be called
 * with an object mutex held when it can wait for I/O (call) or for a
 * callback (close, the last unref): enter/exit hand the object's mutex
 * over around a call:
 *
 *     moor_lock(vm);  ...job begun...
 *     mon = vm->mon;                              // read under vm's mutex
 *     if (moor_monitor_enter(mon, vm) == 0) {     // vm unlocked, mon held
 *         rc = moor_monitor_call(mon, &req, &reply, -1, err);
 *         if (moor_monitor_exit(mon, vm) < 0)     // vm locked again
 *             ... the peer went away meanwhile: re-check vm ...
 *     }
 *
 * When the channel ends. An end of file, a read or write error, an
 * oversized message or a message the codec cannot frame or classify
 * "breaks" the channel: every pending call fails at once with -EPIPE and a
 * message giving the reason, later calls fail with -EPIPE immediately, and
 * on_eof runs once on the loop thread. moor_monitor_close() ends it the
 * same way for pending calls, but never runs on_eof. See docs/monitor.md.
 */
#ifndef MOOR_MONITOR_H
#define MOOR_MONITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <moor/error.h>
#include <moor/export.h>
#include <moor/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moor_monitor moor_monitor;

/* What an incoming message is, as the codec's classify says. */
typedef enum moor_monitor_kind {
    MOOR_MONITOR_REPLY = 1, /* the answer to the request with the same id */
    MOOR_MONITOR_EVENT,     /* unsolicited: goes to on_event */
    MOOR_MONITOR_GREETING,  /* the peer's hello: goes to on_event too */
    MOOR_MONITOR_IGNORE,    /* understood but of no interest: dropped */
} moor_monitor_kind;

/* One classified message. The codec fills it in; the payload belongs to
 * the monitor from then on, which hands it to the caller of the matching
 * call (a reply) or lends it to on_event, and frees it with the codec's
 * free_payload otherwise. */
typedef struct moor_monitor_message {
    moor_monitor_kind kind;
    uint64_t id;       /* REPLY: the id given to encode for the request */
    int status;        /* REPLY: 0, or negative: the peer refused (its own
                        * error reply); the call then fails with -EREMOTEIO
                        * whatever the value (see moor_monitor_call) */
    const char *error; /* REPLY with status < 0: the peer's text (NULL: the
                        * text of errno -status); must stay valid until the
                        * payload is freed */
    void *payload;     /* the codec's, or NULL */
} moor_monitor_message;

/*
 * moor_monitor_codec - the protocol, supplied by the application.
 *
 * frame and classify run on the loop thread, one message at a time, never
 * concurrently for one monitor; encode and name run in the calling threads
 * and may run concurrently with each other and with frame/classify, so
 * they must be thread-safe. None of them may call into this monitor. The
 * structure is copied by moor_monitor_new(); @opaque must stay valid until
 * the monitor is disposed.
 */
typedef struct moor_monitor_codec {
    /* Find the first message at the start of @buf (@len > 0 bytes
     * received and not yet consumed). Returns its length (1..@len), 0 if
     * more bytes are needed, or a negative errno (with @err set) if @buf
     * cannot start a message: the stream is then unusable. */
    ssize_t (*frame)(void *opaque, const char *buf, size_t len, moor_error *err);

    /* Write the bytes of @request, tagged with @id, into @buf (@size bytes
     * of room), snprintf-style: returns the length of the encoding (> 0,
     * not counting a NUL, which may be written but is not sent); if that
     * is not less than @size, the output is incomplete and encode is
     * called again with @size = length + 1, and must then return the same
     * length. Or returns a negative errno with @err set: the call fails
     * with that code. */
    ssize_t (*encode)(void *opaque, const void *request, uint64_t id, char *buf, size_t size,
                      moor_error *err);

    /* Decode the @len-byte message @msg (as framed) into @out, which is
     * zeroed. Returns 0, or a negative errno with @err set when the message
     * is garbage (it then owns nothing: free what was allocated). */
    int (*classify)(void *opaque, const char *msg, size_t len, moor_monitor_message *out,
                    moor_error *err);

    /* Free a payload that classify produced. NULL: payloads need no
     * freeing. Never called with NULL. */
    void (*free_payload)(void *opaque, void *payload);

    /* A short name for @request in messages ("query-status"); NULL, or
     * returning NULL, gives "request". The string must live as long as
     * @request does. */
    const char *(*name)(void *opaque, const void *request);

    void *opaque;
} moor_monitor_codec;

/*
 * moor_monitor_callbacks - what the application hears about. Both run on
 * the loop thread with no monitor lock held, and with a strong reference to
 * the owner held for the call (@owner is NULL only for a monitor created
 * without an owner; when an owner was given and is gone, the callback is
 * not run). They may lock the owner, call moor_monitor_close() and unref
 * the monitor; they must not call moor_monitor_call() (-EDEADLK), and slow
 * work belongs in a worker thread.
 */
typedef struct moor_monitor_callbacks {
    /* An event or a greeting (@msg->kind says which). @msg->payload is
     * lent for the call; set it to NULL to keep it (then free it with
     * moor_monitor_payload_free() or the codec's own function). */
    void (*on_event)(moor_monitor *mon, void *owner, moor_monitor_message *msg, void *opaque);

    /* The channel broke (see the file comment); @why says how: its code is
     * -EPIPE (end of file), -EMSGSIZE (oversized message), -EPROTO
     * (garbage), or the -errno of a failed read or write. Runs at most
     * once per monitor, never after moor_monitor_close(). */
    void (*on_eof)(moor_monitor *mon, void *owner, const moor_error *why, void *opaque);

    void *opaque; /* must stay valid until the monitor is disposed */
} moor_monitor_callbacks;

/* Defaults of moor_monitor_options fields left at 0. */
#define MOOR_MONITOR_DEFAULT_TIMEOUT_MS  30000u
#define MOOR_MONITOR_DEFAULT_MAX_MESSAGE (16u << 20)
#define MOOR_MONITOR_MIN_MAX_MESSAGE     64u
/* max_backlog left at 0: this many times max_message (SIZE_MAX if larger). */
#define MOOR_MONITOR_DEFAULT_BACKLOG_FACTOR 4u
#define MOOR_MONITOR_NAME_MAX               64

/* Optional settings of a new monitor (NULL: all defaults). */
typedef struct moor_monitor_options {
    const char *name;            /* in every message, e.g. "qmp vm1"; copied;
                                  * NULL: "fd N"; at most NAME_MAX bytes */
    uint32_t default_timeout_ms; /* deadline of a call that asks for the
                                  * default; 0: DEFAULT_TIMEOUT_MS */
    size_t max_message;          /* largest message accepted either way, in
                                  * bytes; 0: DEFAULT_MAX_MESSAGE */
    size_t max_backlog;          /* most request bytes queued but not yet
                                  * sent (a peer that stops reading); at
                                  * least max_message; 0: max_message *
                                  * DEFAULT_BACKLOG_FACTOR */
} moor_monitor_options;

/* A call's timeout that means "the monitor's default". */
#define MOOR_MONITOR_TIMEOUT_DEFAULT (-1)

/* Where a monitor stands. */
typedef enum moor_monitor_state {
    MOOR_MONITOR_OPEN = 1, /* calls can be made */
    MOOR_MONITOR_BROKEN,   /* the peer went away or misbehaved */
    MOOR_MONITOR_CLOSED,   /* moor_monitor_close() (or the last unref) */
} moor_monitor_state;

/* Counters since the monitor was created (see moor_monitor_get_stats). */
typedef struct moor_monitor_stats {
    moor_monitor_state state;
    unsigned pending; /* calls waiting for their reply now */
    unsigned entered; /* moor_monitor_enter() without its exit yet */
    uint64_t calls;   /* requests queued for sending */
    uint64_t replies; /* replies handed to a waiting call */
    uint64_t stray;   /* replies nobody waited for (late or unknown id): dropped */
    uint64_t timeouts;
    uint64_t events;  /* events and greetings passed to on_event */
    uint64_t dropped; /* events and greetings dropped: owner gone */
    uint64_t ignored; /* messages classified MOOR_MONITOR_IGNORE */
} moor_monitor_stats;

/*
 * moor_monitor_new - start a channel on @fd, a connected stream socket.
 *
 * The socket is made non-blocking and watched by @loop. @codec and
 * @callbacks (NULL: none) are copied. @owner (may be NULL) is held weakly:
 * the monitor never keeps it alive, so the owner may hold the monitor.
 * Ownership: new reference. On success the monitor owns @fd (it closes it
 * when the loop has let go of it, after close or breakage); on failure the
 * caller still owns @fd, unchanged. The monitor holds a reference to @loop.
 * Locks: none needed. Blocks: no. Context: any thread.
 * Returns: the monitor, or NULL with @err set:
 *   -EINVAL    NULL @loop or @codec, a codec without frame, encode or
 *              classify, @fd < 0, @owner not a live object, options out of
 *              range (max_message below MIN_MAX_MESSAGE, max_backlog
 *              below max_message, name too long);
 *              all reported as misuse;
 *   -ENOTSOCK  @fd is not a socket; -EPROTOTYPE: not a stream socket;
 *   -EBADF     @fd is not open;
 *   -ENOMEM, or an error of moor_loop_add_fd().
 */
MOOR_EXPORT moor_monitor *moor_monitor_new(moor_loop *loop, int fd, const moor_monitor_codec *codec,
                                           const moor_monitor_callbacks *callbacks, void *owner,
                                           const moor_monitor_options *options, moor_error *err);

/*
 * moor_monitor_call - send @request and wait for its reply.
 *
 * The request gets the next id, is encoded, queued behind the requests of
 * other threads and written; the caller then waits until the reply with
 * that id arrives, the deadline passes, or the channel ends. A reply that
 * arrives after the deadline is dropped (counted as stray).
 * A timeout does not withdraw the request: one still queued (a peer slow
 * to read) is sent when the peer reads again, so a request that timed out
 * may still reach the peer and run there. Do not assume it did not.
 * The request bytes waiting to be sent are capped (options.max_backlog):
 * past the cap a call fails at once, queueing nothing.
 * @timeout_ms: 1..INT_MAX, or MOOR_MONITOR_TIMEOUT_DEFAULT.
 * Ownership: on success *@reply (may be NULL: then the payload is freed)
 * receives the reply's payload, to be freed with moor_monitor_payload_free()
 * (or the codec's own function); on failure *@reply is untouched.
 * Locks: the caller must hold no object mutex (it blocks on I/O): calling
 * with the owner's mutex held fails with -EDEADLK; other objects cannot be
 * checked. Blocks: up to @timeout_ms, less when the channel ends.
 * Context: any thread except one iterating the monitor's loop.
 * Returns: 0; or
 *   -EINVAL     NULL @mon or @request, bad @timeout_ms (reported as misuse);
 *   -EDEADLK    called on the loop thread, or with the owner locked;
 *   -EPIPE      the channel is not open, or ended while waiting (the
 *               message says why: end of file, closed, garbage...);
 *   -ETIMEDOUT  no reply in time (the message names the request, the
 *               monitor and the time waited);
 *   -EMSGSIZE   the encoded request is longer than max_message;
 *   -ENOBUFS    queueing it would pass max_backlog unsent bytes (the
 *               peer is not reading); nothing was queued;
 *   -ENOMEM;
 *   -EREMOTEIO  the peer refused: the codec classified its answer as a
 *               REPLY with a negative status. Always this code, whatever
 *               status the codec set, so that a refusal can never be
 *               taken for a broken (-EPIPE) or slow (-ETIMEDOUT) channel;
 *               the message carries the peer's text ("'device_del'
 *               refused by the peer: ..."). The channel stays open.
 *   or the error of the codec's encode (which never reached the peer).
 */
MOOR_EXPORT int moor_monitor_call(moor_monitor *mon, const void *request, void **reply,
                                  int timeout_ms, moor_error *err);

/* The most file descriptors one moor_monitor_call_fds() may carry. QMP's
 * getfd and add-fd take one each; a few more leave room for a peer that
 * takes a set (a pipe's two ends, a multi-queue tap), while the bound keeps
 * the sender's control buffer on its stack (the kernel allows 253). */
#define MOOR_MONITOR_MAX_FDS 16u

/*
 * moor_monitor_call_fds - moor_monitor_call() that also passes @nfds file
 * descriptors to the peer (SCM_RIGHTS), as QMP's getfd and add-fd expect.
 *
 * Why a function of its own and not an options struct: the descriptors are
 * the only thing a call carries besides its request, and keeping
 * moor_monitor_call() as it is means no existing caller changes; should a
 * call ever need more per-call settings, they would go in a struct then.
 *
 * The descriptors go with the request's own bytes: the sendmsg() that
 * writes its first byte carries them, starts at that byte and holds no
 * bytes of any other request, so a peer that reads with recvmsg() finds
 * the descriptors with the request they belong to (QEMU attaches them to
 * the command being read). They are sent once: a request that needs more
 * than one sendmsg() carries them on the first only.
 * Timeouts differ from moor_monitor_call() in one way: a request whose
 * first byte has not been written when its call returns (deadline, end of
 * the channel) is withdrawn from the queue, so neither it nor its
 * descriptors reach the peer. One partly or fully written went with its
 * descriptors, and may run at the peer as with moor_monitor_call().
 * @fds: @nfds open descriptors (any kind, duplicates allowed); @nfds 0
 * (then @fds may be NULL) makes a plain moor_monitor_call().
 * Ownership: the caller's descriptors stay the caller's, always: they are
 * duplicated (F_DUPFD_CLOEXEC) before the request is queued, so the caller
 * may close its own as soon as this returns, whatever it returns. The
 * monitor closes its duplicates once the kernel has taken them (the first
 * write of the request), and otherwise before this returns: when it
 * returns, no duplicate is left open in this process. *@reply as for
 * moor_monitor_call().
 * Locks: as moor_monitor_call(). Blocks: as moor_monitor_call(); on its
 * way out also for a writer of the monitor to leave its (non-blocking)
 * sendmsg(), when the request might still be in that write.
 * Context: any thread except one iterating the monitor's loop.
 * Returns: those of moor_monitor_call(), and
 *   -EINVAL     also: @nfds above MOOR_MONITOR_MAX_FDS, NULL @fds with
 *               @nfds > 0, or an entry that is not an open descriptor
 *               (reported as misuse);
 *   -ENOTSUP    @nfds > 0 and the monitor's socket is not AF_UNIX;
 *   -EMFILE, -ENFILE  no descriptor left to duplicate into;
 *   -EPIPE      also when the kernel refuses the descriptors at sending
 *               (e.g. ETOOMANYREFS: too many in flight): a failed write
 *               ends the channel, as with any request.
 */
MOOR_EXPORT int moor_monitor_call_fds(moor_monitor *mon, const void *request, const int *fds,
                                      unsigned nfds, void **reply, int timeout_ms, moor_error *err);

/*
 * moor_monitor_payload_free - free a payload received from
 * moor_monitor_call() or kept from on_event, with @mon's codec.
 * NULL-safe (both). Ownership: @payload is freed; @mon stays the
 * caller's. Locks: none. Blocks: no. Context: any thread.
 * Returns: nothing.
 */
MOOR_EXPORT void moor_monitor_payload_free(moor_monitor *mon, void *payload);

/*
 * moor_monitor_enter - hand a locked object over to a monitor call.
 *
 * @obj is a lockable object locked by the caller, who also holds a job on
 * it (DESIGN rule 5: the job, not the mutex, keeps others off during the
 * call). Takes a reference to @mon for the caller and unlocks @obj.
 * Pair with moor_monitor_exit(), which undoes both.
 *        thread A (holds a job on vm)       thread B
 *        lock(vm); enter(mon, vm)  --->     lock(vm) ok: job still keeps
 *        call(mon, ...) (vm unlocked)       B from changing vm's state
 *        exit(mon, vm): vm locked again
 * Ownership: the reference taken belongs to the exit. Locks: @obj's
 * mutex held on entry, released on success; the monitor's mutex briefly
 * inside it (order: object, monitor). Blocks: no. Context: any thread but
 * the loop's.
 * Returns: 0 (@obj unlocked); or, with @obj still locked and nothing
 * taken: -EINVAL (NULL, not a lockable object, or @obj not locked by the
 * caller: reported as misuse); -ESRCH (the channel is not open);
 * -EDEADLK (called on the loop thread, where no call can be made);
 * -ENOMEM (no memory to record the hand-off).
 */
MOOR_EXPORT int moor_monitor_enter(moor_monitor *mon, void *obj);

/*
 * moor_monitor_exit - end the hand-off begun by moor_monitor_enter():
 * drop its monitor reference, then lock @obj again.
 *
 * Always completes (the reference is dropped and @obj is locked, also on
 * -ESRCH); the result only says whether the world moved meanwhile. The
 * reference is dropped before @obj is locked: a last unref of the monitor
 * may drop the last reference to its loop too, whose dispose joins the
 * loop thread, and a callback running there may need @obj.
 * Ownership: drops the monitor reference taken by enter; the caller keeps
 * its own references. Locks: @obj must not be locked on entry; it is on
 * return.
 * Blocks: on @obj's mutex (short by rule 4). If the reference was the
 * last one: not on a monitor callback (each runs holding a reference, so
 * none is running), only on a dispatch that already found the monitor
 * gone, which runs no callback; and, if the monitor held the loop's last
 * reference, on the loop thread's join (see moor_loop_thread_stop).
 * Context: the thread that called moor_monitor_enter() for @obj.
 * Returns: 0; -ESRCH if the channel is no longer open (the peer went
 * away or it was closed while @obj was unlocked: re-check @obj's state);
 * -EINVAL (NULL @mon or @obj, @obj still locked, or no enter of @obj on
 * @mon by this thread left to end: reported as misuse, and nothing is
 * done).
 */
MOOR_EXPORT int moor_monitor_exit(moor_monitor *mon, void *obj);

/*
 * moor_monitor_close - end the channel: stop its I/O, fail every pending
 * call with -EPIPE ("closed"); later calls fail at once, and a later
 * moor_monitor_exit() returns -ESRCH. on_eof is not run. Idempotent; the
 * last unref does it if nobody did. The socket is shut down at once and
 * closed when the loop lets go of it. Does not drop a reference.
 * Ownership: the caller's reference stays the caller's; the monitor closes
 * the fd (as above).
 * Locks: the caller must hold no lock that on_event/on_eof take, such as
 * the owner's mutex: from a thread other than the loop's, close waits for
 * a callback in flight. (Closing with the owner locked is reported as
 * misuse, and then close does not wait.) Blocks: until a running callback
 * of the monitor returns, and until a thread writing to the socket is out
 * of its (non-blocking) sendmsg(). Context: any thread, including the
 * callbacks.
 * Returns: nothing. NULL-safe.
 */
MOOR_EXPORT void moor_monitor_close(moor_monitor *mon);

/*
 * moor_monitor_close_deadline - moor_monitor_close(), waiting at most
 * @timeout_ms for an event callback in flight (the only unbounded wait of
 * a close; a writer's sendmsg() is non-blocking).
 *
 * Whatever it returns but -EINVAL, the channel is closed: pending calls
 * have failed, later calls fail at once, the handler never starts again.
 * On -ETIMEDOUT an on_event/on_eof callback was still running in another
 * thread at the deadline (it holds its own reference to the monitor, so
 * the monitor stays valid; the socket is closed once it returns).
 * Ownership: as moor_monitor_close(). Locks: as moor_monitor_close().
 * Blocks: at most @timeout_ms (0: not at all) for that callback, plus
 * the few instructions a writer needs to leave sendmsg(). Ordering: as
 * moor_loop_remove_sync_deadline(). Context: any thread.
 * Returns: 0; -ETIMEDOUT (closed, a callback still running); -EINVAL
 * (NULL or not a monitor: reported as misuse).
 */
MOOR_EXPORT int moor_monitor_close_deadline(moor_monitor *mon, uint32_t timeout_ms);

/*
 * moor_monitor_get_stats - counters and state, for tests and
 * introspection; stale as soon as returned.
 * Ownership: plain copies into the caller's struct. Locks: the monitor's
 * mutex briefly. Blocks: no.
 * Returns: 0; -EINVAL (NULL argument, reported as misuse).
 */
MOOR_EXPORT int moor_monitor_get_stats(moor_monitor *mon, moor_monitor_stats *out);

/*
 * moor_monitor_name - the name used in messages. Ownership: borrowed,
 * lives as long as @mon. Locks: none. Blocks: never.
 * Returns: the name ("(null)" for NULL).
 */
MOOR_EXPORT const char *moor_monitor_name(const moor_monitor *mon);

#ifdef __cplusplus
}
#endif

#endif /* MOOR_MONITOR_H */
