/* SPDX-License-Identifier: MIT */
/*
 * loop.c - an epoll event loop whose handler table may change under its feet.
 *
 * Theory of operation.
 *
 * Handlers. Every fd and timer handler is a node of a visit list
 * (loop->handlers), and that list is what keeps handlers allocated: an
 * iteration is one visit, begun before epoll_wait() and ended after the
 * last callback, so every pointer epoll_wait() hands back (epoll_event's
 * data.ptr is the handler) stays valid for the whole iteration even if
 * another thread, or a callback, removes the handler meanwhile. Removal
 * marks the node; the last visitor to leave, or the remover if nobody is
 * visiting, frees it and calls its free_fn. The list is never walked to
 * dispatch (epoll and the timer heap say what is ready); it only decides
 * when memory may go.
 *
 * Names. Handlers are found by id through a small hash table (ids are
 * sequential, so the low bits spread them) guarded by loop->lock, a leaf
 * mutex that is never held across a callback, a free_fn or a wait other
 * than its own condition variables. Removing a handler takes it out of the
 * table, sets its `dead` flag, takes its fd out of epoll (or its timer out
 * of the heap) and only then marks its list node. Only the thread that took
 * a handler out of the table marks its node, so the node is marked once and
 * the free_fn runs once.
 *
 * Who iterates. loop->owner is the thread id of the one thread iterating;
 * loop->depth counts its nested iterations. Another thread that wants to
 * iterate queues a waiter record (FIFO) and kicks the eventfd so that a
 * sleeping owner ends its iteration; the owner hands the turn directly to
 * the first waiter when its outermost iteration ends. Because callbacks
 * only run in the owner thread, "a callback of handler h is running" always
 * means "in the owner's stack".
 *
 * remove_sync. h->running counts the callbacks of h in progress (all in the
 * owner thread). The dispatcher increments it and then reads h->dead; the
 * remover sets h->dead and then reads h->running; all four accesses are
 * seq_cst, so (Dekker) either the dispatcher sees dead and skips, or the
 * remover sees the callback running and waits on loop->idle_cond, which the
 * dispatcher signals when a dead handler's count drops to zero. A remover
 * that is the owner itself does not wait: every running frame is its own.
 *
 * Re-entrancy. A nested iteration never dispatches a handler whose callback
 * is running. A level-triggered fd whose callback is running would make
 * every nested epoll_wait() return at once, so the nested iteration parks
 * it: it is re-armed with EPOLLONESHOT and no events, which reports at most
 * one more ERR/HUP and then nothing, and re-armed for real when its
 * callback returns.
 *
 * Timers live in a binary min-heap ordered by (deadline, id) under
 * loop->lock. An iteration picks, one at a time, the smallest timer that is
 * due, not running and not yet fired by this iteration (a depth-first walk
 * over due nodes that stops at the first eligible node of each branch),
 * reschedules it (periodic: the first multiple of the period after now;
 * one-shot: out of the heap), and calls it. The heap's capacity always
 * covers every live timer, so re-arming a one-shot timer never allocates.
 *
 * Scheduled callbacks are a FIFO under loop->lock, each with a sequence
 * number; an iteration runs those numbered below the counter it read when it
 * started on them, one at a time from the head, so nested iterations keep
 * the global order. The eventfd is written only when the queue goes from
 * empty to non-empty; an iteration that starts with callbacks queued does
 * not sleep.
 *
 * Lifetime. moor_loop_iterate() holds a reference for its whole duration,
 * so a callback cannot drop the last one under it. The loop thread holds
 * none while it sleeps (it would keep the loop alive forever); it takes one
 * with moor_refcnt_inc_not_zero() before dispatching, so the last unref
 * either happens elsewhere (dispose stops and joins the thread) or at the
 * end of its own dispatch (dispose then detaches the thread, which exits
 * without touching the loop again).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <moor/debug.h>
#include <moor/loop.h>
#include <moor/object.h>
#include <moor/vlist.h>

#include "debug-internal.h"
#include "lockdep-internal.h"
#include "object-internal.h"

#define LOOP_MAGIC    0x6c6f6f70u /* "loop" */
#define LOOP_DEAD     0x64656164u /* "dead" */
#define NO_HEAP       SIZE_MAX
#define MAX_EVENTS    64
#define FIRST_BUCKETS 16
#define ITER_DISPOSED (-1000) /* internal: the loop thread's loop is gone */
#define ALL_EVENTS    (MOOR_LOOP_IN | MOOR_LOOP_OUT | MOOR_LOOP_ERR | MOOR_LOOP_HUP)
#define NS_PER_MS     INT64_C(1000000)

enum { KIND_FD, KIND_TIMER };

struct handler {
    moor_vlist_node node;    /* on loop->handlers: owns the memory */
    struct handler *id_next; /* hash chain, under loop->lock */
    uint64_t id;
    int kind;
    bool indexed;        /* in the id table (live), under loop->lock */
    atomic_bool dead;    /* removed; seq_cst, see the file comment */
    atomic_uint running; /* callbacks in progress; seq_cst */
    void *opaque;
    moor_loop_free_fn free_fn;
    moor_loop_fd_fn fd_fn;
    moor_loop_timer_fn timer_fn;
    /* fd handlers */
    int fd;
    unsigned events;    /* MOOR_LOOP_IN/OUT asked for, under loop->lock */
    atomic_bool parked; /* disarmed by a nested iteration; see the top */
    /* timers, under loop->lock */
    int64_t deadline; /* CLOCK_MONOTONIC ns */
    uint64_t period;  /* ns; 0 for one-shot */
    size_t heap_idx;  /* NO_HEAP when not armed */
    uint64_t fired_serial;
};

struct sched {
    struct sched *next;
    uint64_t seq;
    moor_loop_call_fn fn;
    void *opaque;
    moor_loop_free_fn free_fn;
};

/* A thread waiting for its turn to iterate; on its stack, under loop->lock. */
struct turn_waiter {
    struct turn_waiter *next;
    int tid;
    bool granted;
};

struct moor_loop {
    moor_object parent;
    uint32_t magic;
    int epfd, evfd;
    moor_vlist handlers;
    bool handlers_ready, lock_ready, turn_ready, idle_ready, thread_lock_ready;

    pthread_mutex_t lock;     /* leaf: everything marked "under lock" */
    pthread_cond_t turn_cond; /* turn handed over, or wake_gen changed */
    pthread_cond_t idle_cond; /* a dead handler's last callback returned */

    /* under lock */
    struct handler **buckets;
    size_t nbuckets, nindexed;
    uint64_t next_id;
    struct handler **heap;
    size_t heap_len, heap_cap, timers_live;
    struct sched *sched_head, **sched_tail;
    uint64_t sched_next_seq;
    struct turn_waiter *turn_head, **turn_tail;
    unsigned depth;
    uint64_t wake_gen;
    uint64_t serial; /* iterations so far (owner thread, under lock) */

    atomic_int owner;            /* tid iterating, 0 = none; written under lock */
    atomic_size_t heap_count;    /* heap_len, for a lock-free "any timers?" */
    atomic_size_t sched_pending; /* queued scheduled callbacks */
    atomic_uint quit_gen;
    atomic_bool disposing;

    /* the loop thread, under thread_lock (taken before lock, never inside) */
    pthread_mutex_t thread_lock;
    pthread_t thread;
    bool thread_running;
    atomic_bool thread_stop;
};

/* Set by dispose when it runs on the loop's own thread; that thread then
 * leaves without touching the loop. Compared, never dereferenced. */
static _Thread_local const moor_loop *disposed_here;

/* The loop whose own thread this is (set by loop_thread_main). Lets
 * thread_start/thread_stop refuse the loop thread before taking
 * thread_lock, which another thread may hold while it joins this one.
 * Compared, never dereferenced. */
static _Thread_local const moor_loop *thread_of;

#define cached_tid moor__tid /* see debug-internal.h */

static inline int self_tid(void)
{
    if (MOOR_UNLIKELY(!cached_tid))
        cached_tid = moor__thread_id();
    return cached_tid;
}

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec ns_to_timespec(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};

    return ts;
}

static void loop_dispose(void *obj);
static struct moor__lazy_class loop_klass =
    MOOR__LAZY_CLASS_INIT("moor_loop", sizeof(moor_loop), loop_dispose);

/* A live loop: a moor object of class moor_loop (its header checked first,
 * so any moor object can be asked) that is not being disposed. */
static bool loop_valid(const moor_loop *loop)
{
    return loop && moor__object_magic_ok(loop->parent.magic) &&
           loop->parent.klass == moor__lazy_class_peek(&loop_klass) && loop->magic == LOOP_MAGIC;
}

/* -EINVAL for a NULL or non-loop pointer; a non-loop is also reported. */
static int check_loop(const moor_loop *loop, const char *op, moor_error *err)
{
    if (MOOR_LIKELY(loop_valid(loop)))
        return 0;
    if (loop)
        moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, loop, "%s: %p is not a live moor_loop", op,
                          (const void *)loop);
    return moor_error_set(err, -EINVAL, "%s: %s", op, loop ? "not a live moor_loop" : "NULL loop");
}

static void kick(moor_loop *loop)
{
    uint64_t one = 1;

    /* EAGAIN only if the counter is near 2^64: it is then readable anyway. */
    while (write(loop->evfd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

/* ---- handlers: memory and the id table ---------------------------------- */

/* The visit list gives a handler back here, exactly once. */
static void handler_release(moor_vlist *list, moor_vlist_node *node)
{
    (void)list;
    struct handler *h = moor_vlist_entry(node, struct handler, node);

    if (h->free_fn)
        h->free_fn(h->opaque);
    moor__free(h);
}

static struct handler **bucket_of(moor_loop *loop, uint64_t id)
{
    return &loop->buckets[id & (loop->nbuckets - 1)];
}

static struct handler *index_find_locked(moor_loop *loop, uint64_t id)
{
    for (struct handler *h = *bucket_of(loop, id); h; h = h->id_next)
        if (h->id == id)
            return h;
    return NULL;
}

/* Double the table when it gets crowded; if that allocation fails the
 * chains just get longer. */
static void index_grow_locked(moor_loop *loop)
{
    size_t n = loop->nbuckets * 2;
    struct handler **b;

    if (loop->nindexed < loop->nbuckets || n > SIZE_MAX / sizeof(*b))
        return;
    b = moor__calloc(n, sizeof(*b));
    if (!b)
        return;
    for (size_t i = 0; i < loop->nbuckets; i++) {
        struct handler *h = loop->buckets[i], *next;

        for (; h; h = next) {
            next = h->id_next;
            h->id_next = b[h->id & (n - 1)];
            b[h->id & (n - 1)] = h;
        }
    }
    moor__free(loop->buckets);
    loop->buckets = b;
    loop->nbuckets = n;
}

static void index_add_locked(moor_loop *loop, struct handler *h)
{
    index_grow_locked(loop);
    struct handler **b = bucket_of(loop, h->id);

    h->id_next = *b;
    *b = h;
    h->indexed = true;
    loop->nindexed++;
}

static void index_del_locked(moor_loop *loop, struct handler *h)
{
    struct handler **p = bucket_of(loop, h->id);

    while (*p != h)
        p = &(*p)->id_next;
    *p = h->id_next;
    h->indexed = false;
    loop->nindexed--;
}

/* ---- the timer heap (under lock) ---------------------------------------- */

static bool timer_before(const struct handler *a, const struct handler *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->id < b->id);
}

static void heap_set(moor_loop *loop, size_t i, struct handler *h)
{
    loop->heap[i] = h;
    h->heap_idx = i;
}

static void heap_sift_up(moor_loop *loop, size_t i)
{
    struct handler *h = loop->heap[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (!timer_before(h, loop->heap[parent]))
            break;
        heap_set(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_set(loop, i, h);
}

static void heap_sift_down(moor_loop *loop, size_t i)
{
    struct handler *h = loop->heap[i];

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= loop->heap_len)
            break;
        if (c + 1 < loop->heap_len && timer_before(loop->heap[c + 1], loop->heap[c]))
            c++;
        if (!timer_before(loop->heap[c], h))
            break;
        heap_set(loop, i, loop->heap[c]);
        i = c;
    }
    heap_set(loop, i, h);
}

static void heap_count_publish(moor_loop *loop)
{
    /* relaxed: a hint read before taking the lock; a stale zero is fixed
     * by the wake-up that add/update sends to a sleeping loop. */
    atomic_store_explicit(&loop->heap_count, loop->heap_len, memory_order_relaxed);
}

/* Capacity is reserved by add_timer (heap_cap >= timers_live). */
static void heap_push_locked(moor_loop *loop, struct handler *h)
{
    heap_set(loop, loop->heap_len++, h);
    heap_sift_up(loop, h->heap_idx);
    heap_count_publish(loop);
}

static void heap_remove_locked(moor_loop *loop, struct handler *h)
{
    size_t i = h->heap_idx;
    struct handler *last = loop->heap[--loop->heap_len];

    h->heap_idx = NO_HEAP;
    if (last != h) {
        heap_set(loop, i, last);
        heap_sift_up(loop, i);
        heap_sift_down(loop, last->heap_idx);
    }
    heap_count_publish(loop);
}

/* After h's deadline changed. */
static void heap_fix_locked(moor_loop *loop, struct handler *h)
{
    heap_sift_up(loop, h->heap_idx);
    heap_sift_down(loop, h->heap_idx);
}

static bool timer_eligible(const struct handler *h, uint64_t serial)
{
    /* relaxed: only the owner thread changes running outside the lock, and
     * only the owner thread (this one) picks timers. */
    return atomic_load_explicit((atomic_uint *)&h->running, memory_order_relaxed) == 0 &&
           (serial == 0 || h->fired_serial != serial);
}

/* The smallest timer in the subtree at @i with deadline <= @limit that is
 * eligible (serial 0: any timer not running), or @best if none beats it. Visits only ineligible
 * nodes and the first eligible node of each branch. */
static struct handler *heap_pick(moor_loop *loop, size_t i, int64_t limit, uint64_t serial,
                                 struct handler *best)
{
    if (i >= loop->heap_len)
        return best;

    struct handler *h = loop->heap[i];

    if (h->deadline > limit || (best && !timer_before(h, best)))
        return best;
    if (timer_eligible(h, serial))
        return h;
    best = heap_pick(loop, 2 * i + 1, limit, serial, best);
    return heap_pick(loop, 2 * i + 2, limit, serial, best);
}

/* ---- removal ------------------------------------------------------------ */

static void fd_del_locked(moor_loop *loop, struct handler *h)
{
    if (epoll_ctl(loop->epfd, EPOLL_CTL_DEL, h->fd, NULL) < 0)
        moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, loop,
                          "moor_loop_remove: loop %p, handler %" PRIu64
                          ": fd %d was closed before its handler was removed (%s)",
                          (void *)loop, h->id, h->fd, strerror(errno));
}

/* Take @h out of the table, epoll and the heap, and mark it dead. The
 * caller then marks its node with moor_vlist_remove(), after unlocking. */
static void detach_locked(moor_loop *loop, struct handler *h)
{
    index_del_locked(loop, h);
    /* seq_cst: the Dekker pair with the dispatcher (see the file comment). */
    atomic_store(&h->dead, true);
    if (h->kind == KIND_FD) {
        fd_del_locked(loop, h);
    } else {
        if (h->heap_idx != NO_HEAP)
            heap_remove_locked(loop, h);
        loop->timers_live--;
    }
}

/* A callback of @h returned (or a dispatch was abandoned). */
static void running_put(moor_loop *loop, struct handler *h)
{
    /* seq_cst: the Dekker pair with the remover (see the file comment). */
    if (atomic_fetch_sub(&h->running, 1) != 1)
        return;
    /* seq_cst: as above. */
    if (atomic_load(&h->dead)) {
        pthread_mutex_lock(&loop->lock);
        pthread_cond_broadcast(&loop->idle_cond);
        pthread_mutex_unlock(&loop->lock);
        return;
    }
    /* relaxed: only the owner thread (this one) parks and unparks. */
    if (h->kind == KIND_FD && atomic_load_explicit(&h->parked, memory_order_relaxed)) {
        pthread_mutex_lock(&loop->lock);
        /* relaxed: dead is set under the lock, which we hold. */
        if (!atomic_load_explicit(&h->dead, memory_order_relaxed)) {
            struct epoll_event ev = {.events = 0, .data.ptr = h};

            if (h->events & MOOR_LOOP_IN)
                ev.events |= EPOLLIN;
            if (h->events & MOOR_LOOP_OUT)
                ev.events |= EPOLLOUT;
            if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, h->fd, &ev) < 0)
                moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, loop,
                                  "loop %p, handler %" PRIu64 ": cannot re-arm fd %d (%s)",
                                  (void *)loop, h->id, h->fd, strerror(errno));
        }
        /* relaxed: owner thread only (see above). */
        atomic_store_explicit(&h->parked, false, memory_order_relaxed);
        pthread_mutex_unlock(&loop->lock);
    }
}

/* Wait (loop->lock held) until @h's callbacks have returned, at most
 * until @deadline (NULL: no limit). Returns 0, or -ETIMEDOUT. */
static int wait_not_running_locked(moor_loop *loop, struct handler *h,
                                   const struct timespec *deadline)
{
    /* seq_cst: the Dekker pair with the dispatcher. */
    while (atomic_load(&h->running) != 0) {
        if (!deadline)
            pthread_cond_wait(&loop->idle_cond, &loop->lock);
        else if (pthread_cond_timedwait(&loop->idle_cond, &loop->lock, deadline) == ETIMEDOUT &&
                 atomic_load(&h->running) != 0) /* seq_cst: as above */
            return -ETIMEDOUT;
    }
    return 0;
}

/* @deadline: for a sync remove, how long to wait at most (NULL: forever). */
static int remove_common(moor_loop *loop, uint64_t id, bool sync, const struct timespec *deadline,
                         const char *op)
{
    struct handler *h;
    int me = self_tid();
    bool owner_is_me;
    int rc = 0;

    if (check_loop(loop, op, NULL) < 0)
        return -EINVAL;
    pthread_mutex_lock(&loop->lock);
    h = index_find_locked(loop, id);
    if (!h) {
        pthread_mutex_unlock(&loop->lock);
        return -ENOENT;
    }
    detach_locked(loop, h);
    /* relaxed: owner is written under the lock, which we hold; and only we
     * can make it equal to our own id. */
    owner_is_me = atomic_load_explicit(&loop->owner, memory_order_relaxed) == me;
    /* The owner's running frames are all its own: it must not wait. */
    if (sync && !owner_is_me)
        rc = wait_not_running_locked(loop, h, deadline);
    pthread_mutex_unlock(&loop->lock);
    moor_vlist_remove(&loop->handlers, &h->node);
    /*
     * If a visit is still counted, the node waits for the last visitor,
     * which may be an iteration asleep in epoll_wait(): wake it, so that the
     * node is freed now rather than at its next event. The count, not a
     * look at loop->owner, decides: the owner may have ended its iteration
     * and begun the next one (a new visit) since we looked. A count read
     * as zero here means the last visitor has already taken the mutex to
     * sweep, after our mark (moor_vlist_remove saw the count above zero
     * under that mutex, and the count reaches zero only with it held).
     * Our own iteration, if we are the owner, sweeps when it ends.
     */
    if (!owner_is_me && moor_lockcnt_count(&loop->handlers.lc) != 0)
        kick(loop);
    return rc;
}

int moor_loop_remove(moor_loop *loop, uint64_t id)
{
    return remove_common(loop, id, false, NULL, "moor_loop_remove");
}

int moor_loop_remove_sync(moor_loop *loop, uint64_t id)
{
    moor__lockdep_check_blocking("moor_loop_remove_sync", NULL, false, __builtin_return_address(0));
    return remove_common(loop, id, true, NULL, "moor_loop_remove_sync");
}

int moor_loop_remove_sync_deadline(moor_loop *loop, uint64_t id, uint32_t timeout_ms)
{
    struct timespec deadline = moor__deadline_after_ms(timeout_ms);

    moor__lockdep_check_blocking("moor_loop_remove_sync_deadline", NULL, false,
                                 __builtin_return_address(0));
    return remove_common(loop, id, true, &deadline, "moor_loop_remove_sync_deadline");
}

/* ---- adding ------------------------------------------------------------- */

static struct handler *handler_new(int kind, void *opaque, moor_loop_free_fn free_fn)
{
    struct handler *h = moor__calloc(1, sizeof(*h));

    if (!h)
        return NULL;
    h->kind = kind;
    h->opaque = opaque;
    h->free_fn = free_fn;
    h->heap_idx = NO_HEAP;
    atomic_init(&h->dead, false);
    atomic_init(&h->running, 0);
    atomic_init(&h->parked, false);
    return h;
}

/* A failed add gives @opaque back at once (see loop.h). */
static int add_failed(moor_loop_free_fn free_fn, void *opaque, int code)
{
    if (free_fn)
        free_fn(opaque);
    return code;
}

static uint32_t epoll_bits(unsigned events)
{
    return ((events & MOOR_LOOP_IN) ? EPOLLIN : 0u) | ((events & MOOR_LOOP_OUT) ? EPOLLOUT : 0u);
}

static unsigned moor_bits(uint32_t revents)
{
    return ((revents & (EPOLLIN | EPOLLPRI)) ? MOOR_LOOP_IN : 0u) |
           ((revents & EPOLLOUT) ? MOOR_LOOP_OUT : 0u) |
           ((revents & EPOLLERR) ? MOOR_LOOP_ERR : 0u) |
           ((revents & (EPOLLHUP | EPOLLRDHUP)) ? MOOR_LOOP_HUP : 0u);
}

int moor_loop_add_fd(moor_loop *loop, int fd, unsigned events, moor_loop_fd_fn fn, void *opaque,
                     moor_loop_free_fn free_fn, uint64_t *id, moor_error *err)
{
    struct epoll_event ev;
    struct handler *h;
    uint64_t new_id;

    if (check_loop(loop, "moor_loop_add_fd", err) < 0)
        return add_failed(free_fn, opaque, -EINVAL);
    if (!fn || fd < 0 || (events & ~(unsigned)ALL_EVENTS))
        return add_failed(free_fn, opaque,
                          moor_error_set(err, -EINVAL,
                                         "moor_loop_add_fd(fd %d, events 0x%x) on loop %p: %s", fd,
                                         events, (void *)loop,
                                         !fn      ? "NULL callback"
                                         : fd < 0 ? "negative fd"
                                                  : "unknown event bits"));
    h = handler_new(KIND_FD, opaque, free_fn);
    if (!h)
        return add_failed(free_fn, opaque,
                          moor_error_set(err, -ENOMEM,
                                         "moor_loop_add_fd(fd %d) on loop %p: out of "
                                         "memory",
                                         fd, (void *)loop));
    h->fd = fd;
    h->fd_fn = fn;
    h->events = events & (MOOR_LOOP_IN | MOOR_LOOP_OUT);
    ev.events = epoll_bits(h->events);
    ev.data.ptr = h;

    pthread_mutex_lock(&loop->lock);
    h->id = new_id = ++loop->next_id;
    /* Once added, epoll may hand @h to an iteration: it is complete, and
     * nothing can remove (free) it before it is in the table below. */
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int e = errno;

        pthread_mutex_unlock(&loop->lock);
        moor__free(h);
        if (e == EEXIST)
            return add_failed(free_fn, opaque,
                              moor_error_set(err, -EEXIST,
                                             "moor_loop_add_fd: fd %d already has a handler on "
                                             "loop %p",
                                             fd, (void *)loop));
        return add_failed(free_fn, opaque,
                          moor_error_set(err, -e, "moor_loop_add_fd(fd %d) on loop %p: epoll: %s",
                                         fd, (void *)loop, strerror(e)));
    }
    moor_vlist_insert_tail(&loop->handlers, &h->node, handler_release);
    index_add_locked(loop, h);
    pthread_mutex_unlock(&loop->lock);
    if (id)
        *id = new_id;
    return 0;
}

int moor_loop_update_fd(moor_loop *loop, uint64_t id, unsigned events, moor_error *err)
{
    struct handler *h;
    int rc = 0, fd;

    if (check_loop(loop, "moor_loop_update_fd", err) < 0)
        return -EINVAL;
    if (events & ~(unsigned)ALL_EVENTS)
        return moor_error_set(err, -EINVAL,
                              "moor_loop_update_fd(handler %" PRIu64 ", events 0x%x) on loop %p: "
                              "unknown event bits",
                              id, events, (void *)loop);
    events &= MOOR_LOOP_IN | MOOR_LOOP_OUT;
    pthread_mutex_lock(&loop->lock);
    h = index_find_locked(loop, id);
    if (!h || h->kind != KIND_FD) {
        pthread_mutex_unlock(&loop->lock);
        return moor_error_set(err, -ENOENT,
                              "moor_loop_update_fd: no fd handler %" PRIu64 " on loop %p", id,
                              (void *)loop);
    }
    /* relaxed: parked changes under the lock (or in the owner thread, which
     * then takes the lock before re-arming); a parked handler gets its new
     * events when it is re-armed. */
    if (!atomic_load_explicit(&h->parked, memory_order_relaxed)) {
        struct epoll_event ev = {.events = epoll_bits(events), .data.ptr = h};

        if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, h->fd, &ev) < 0)
            rc = -errno;
    }
    if (rc == 0)
        h->events = events;
    fd = h->fd; /* copied under the lock: a remove may free h once it drops */
    pthread_mutex_unlock(&loop->lock);
    if (rc < 0)
        return moor_error_set(
            err, rc, "moor_loop_update_fd(handler %" PRIu64 ", fd %d) on loop %p: epoll: %s", id,
            fd, (void *)loop, strerror(-rc));
    return 0;
}

/* Make room in the heap for one more live timer. */
static int heap_reserve_locked(moor_loop *loop)
{
    size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 16;
    struct handler **heap;

    if (loop->timers_live < loop->heap_cap)
        return 0;
    if (cap > SIZE_MAX / sizeof(*heap))
        return -ENOMEM;
    heap = moor__malloc(cap * sizeof(*heap));
    if (!heap)
        return -ENOMEM;
    if (loop->heap_len)
        memcpy(heap, loop->heap, loop->heap_len * sizeof(*heap));
    moor__free(loop->heap);
    loop->heap = heap;
    loop->heap_cap = cap;
    return 0;
}

/* Someone else is iterating: its sleep may be longer than a new deadline. */
static void kick_other_owner(moor_loop *loop)
{
    /* relaxed: a hint; the owner re-reads the heap under the lock. */
    int owner = atomic_load_explicit(&loop->owner, memory_order_relaxed);

    if (owner != 0 && owner != self_tid())
        kick(loop);
}

int moor_loop_add_timer(moor_loop *loop, uint32_t delay_ms, uint32_t period_ms,
                        moor_loop_timer_fn fn, void *opaque, moor_loop_free_fn free_fn,
                        uint64_t *id, moor_error *err)
{
    struct handler *h;
    uint64_t new_id;

    if (check_loop(loop, "moor_loop_add_timer", err) < 0)
        return add_failed(free_fn, opaque, -EINVAL);
    if (!fn)
        return add_failed(free_fn, opaque,
                          moor_error_set(err, -EINVAL,
                                         "moor_loop_add_timer on loop %p: NULL "
                                         "callback",
                                         (void *)loop));
    h = handler_new(KIND_TIMER, opaque, free_fn);
    if (!h)
        return add_failed(free_fn, opaque,
                          moor_error_set(err, -ENOMEM,
                                         "moor_loop_add_timer on loop %p: out of "
                                         "memory",
                                         (void *)loop));
    h->timer_fn = fn;
    h->fd = -1;
    h->period = (uint64_t)period_ms * NS_PER_MS;
    h->deadline = now_ns() + (int64_t)delay_ms * NS_PER_MS;

    pthread_mutex_lock(&loop->lock);
    if (heap_reserve_locked(loop) < 0) {
        pthread_mutex_unlock(&loop->lock);
        moor__free(h);
        return add_failed(free_fn, opaque,
                          moor_error_set(err, -ENOMEM,
                                         "moor_loop_add_timer on loop %p: out of memory for the "
                                         "timer heap",
                                         (void *)loop));
    }
    h->id = new_id = ++loop->next_id;
    loop->timers_live++;
    moor_vlist_insert_tail(&loop->handlers, &h->node, handler_release);
    index_add_locked(loop, h);
    heap_push_locked(loop, h);
    pthread_mutex_unlock(&loop->lock);
    kick_other_owner(loop);
    if (id)
        *id = new_id;
    return 0;
}

int moor_loop_update_timer(moor_loop *loop, uint64_t id, uint32_t delay_ms, uint32_t period_ms,
                           moor_error *err)
{
    struct handler *h;
    int64_t deadline = now_ns() + (int64_t)delay_ms * NS_PER_MS;

    if (check_loop(loop, "moor_loop_update_timer", err) < 0)
        return -EINVAL;
    pthread_mutex_lock(&loop->lock);
    h = index_find_locked(loop, id);
    if (!h || h->kind != KIND_TIMER) {
        pthread_mutex_unlock(&loop->lock);
        return moor_error_set(err, -ENOENT,
                              "moor_loop_update_timer: no timer %" PRIu64 " on loop %p", id,
                              (void *)loop);
    }
    h->deadline = deadline;
    h->period = (uint64_t)period_ms * NS_PER_MS;
    /* A re-armed timer may fire again in this same iteration only if it was
     * not fired by it already. */
    if (h->heap_idx == NO_HEAP)
        heap_push_locked(loop, h);
    else
        heap_fix_locked(loop, h);
    pthread_mutex_unlock(&loop->lock);
    kick_other_owner(loop);
    return 0;
}

/* ---- scheduled callbacks ------------------------------------------------ */

int moor_loop_schedule(moor_loop *loop, moor_loop_call_fn fn, void *opaque,
                       moor_loop_free_fn free_fn, moor_error *err)
{
    struct sched *s;
    bool was_empty;

    if (check_loop(loop, "moor_loop_schedule", err) < 0)
        return -EINVAL;
    if (!fn)
        return moor_error_set(err, -EINVAL, "moor_loop_schedule on loop %p: NULL callback",
                              (void *)loop);
    s = moor__malloc(sizeof(*s));
    if (!s)
        return moor_error_set(err, -ENOMEM, "moor_loop_schedule on loop %p: out of memory",
                              (void *)loop);
    s->next = NULL;
    s->fn = fn;
    s->opaque = opaque;
    s->free_fn = free_fn;
    pthread_mutex_lock(&loop->lock);
    s->seq = loop->sched_next_seq++;
    was_empty = !loop->sched_head;
    *loop->sched_tail = s;
    loop->sched_tail = &s->next;
    /* relaxed: a hint for the iteration's "do not sleep" check; the queue
     * itself is read under the lock. See the file comment. */
    atomic_fetch_add_explicit(&loop->sched_pending, 1, memory_order_relaxed);
    pthread_mutex_unlock(&loop->lock);
    if (was_empty)
        kick(loop);
    return 0;
}

/* Run the callbacks queued before @limit, in order, one at a time. */
static int run_scheduled(moor_loop *loop)
{
    uint64_t limit;
    int ran = 0;

    pthread_mutex_lock(&loop->lock);
    limit = loop->sched_next_seq;
    for (;;) {
        struct sched *s = loop->sched_head;

        if (!s || s->seq >= limit)
            break;
        loop->sched_head = s->next;
        if (!loop->sched_head)
            loop->sched_tail = &loop->sched_head;
        /* relaxed: see moor_loop_schedule(). */
        atomic_fetch_sub_explicit(&loop->sched_pending, 1, memory_order_relaxed);
        pthread_mutex_unlock(&loop->lock);
        s->fn(loop, s->opaque);
        if (s->free_fn)
            s->free_fn(s->opaque);
        moor__free(s);
        ran++;
        pthread_mutex_lock(&loop->lock);
    }
    pthread_mutex_unlock(&loop->lock);
    return ran;
}

/* ---- dispatch ----------------------------------------------------------- */

/* A nested iteration met @h, whose callback is running in this thread. */
static void park(moor_loop *loop, struct handler *h)
{
    /* relaxed: owner thread only. */
    if (atomic_load_explicit(&h->parked, memory_order_relaxed))
        return;
    pthread_mutex_lock(&loop->lock);
    /* relaxed: dead is set under the lock. */
    if (!atomic_load_explicit(&h->dead, memory_order_relaxed)) {
        struct epoll_event ev = {.events = EPOLLONESHOT, .data.ptr = h};

        /* A failure leaves it armed: the nested iteration then sees it
         * again, which costs time, not correctness. */
        if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, h->fd, &ev) == 0)
            /* relaxed: owner thread only; under the lock for update_fd. */
            atomic_store_explicit(&h->parked, true, memory_order_relaxed);
    }
    pthread_mutex_unlock(&loop->lock);
}

static int dispatch_fd(moor_loop *loop, struct handler *h, uint32_t revents)
{
    /* seq_cst: the Dekker pair with the remover (see the file comment). */
    if (atomic_fetch_add(&h->running, 1) != 0) {
        park(loop, h);
        running_put(loop, h);
        return 0;
    }
    /* seq_cst: as above. */
    if (atomic_load(&h->dead)) {
        running_put(loop, h);
        return 0;
    }
    h->fd_fn(loop, h->id, h->fd, moor_bits(revents), h->opaque);
    running_put(loop, h);
    return 1;
}

static int dispatch_timers(moor_loop *loop)
{
    int64_t now = now_ns();
    uint64_t serial;
    int ran = 0;

    pthread_mutex_lock(&loop->lock);
    serial = ++loop->serial;
    for (;;) {
        struct handler *h = heap_pick(loop, 0, now, serial, NULL);

        if (!h)
            break;
        h->fired_serial = serial;
        if (h->period) {
            uint64_t late = (uint64_t)(now - h->deadline);

            h->deadline += (int64_t)((late / h->period + 1) * h->period);
            heap_fix_locked(loop, h);
        } else {
            heap_remove_locked(loop, h);
        }
        /* seq_cst: the remover sets dead under the lock we hold, so it
         * cannot be set here; seq_cst keeps the pairing uniform. */
        atomic_fetch_add(&h->running, 1);
        pthread_mutex_unlock(&loop->lock);

        h->timer_fn(loop, h->id, h->opaque);
        ran++;

        bool gone = false;

        pthread_mutex_lock(&loop->lock);
        /* A one-shot timer that was not re-armed nor removed goes now. */
        if (h->indexed && h->heap_idx == NO_HEAP) {
            detach_locked(loop, h);
            gone = true;
        }
        pthread_mutex_unlock(&loop->lock);
        running_put(loop, h);
        if (gone)
            moor_vlist_remove(&loop->handlers, &h->node);
        pthread_mutex_lock(&loop->lock);
    }
    pthread_mutex_unlock(&loop->lock);
    return ran;
}

/* ---- whose turn --------------------------------------------------------- */

enum { TURN_NO, TURN_YES, TURN_WOKEN };

/* Become the iterating thread, or nest. TURN_NO when the turn did not come
 * within @timeout_ms (-1: no limit) or a wake-up/quit came first;
 * TURN_WOKEN when it came together with a wake-up, whose eventfd write
 * another owner may have consumed: the caller must not sleep then. */
static int turn_acquire(moor_loop *loop, int me, int timeout_ms, int64_t start)
{
    struct turn_waiter w = {.next = NULL, .tid = me, .granted = false};
    int got;

    pthread_mutex_lock(&loop->lock);
    /* relaxed: written under the lock, which we hold. */
    int owner = atomic_load_explicit(&loop->owner, memory_order_relaxed);

    /* A free loop has no waiters: turn_release hands the turn to the first
     * waiter under the lock, so owner is 0 only with an empty queue. */
    if (owner == me || owner == 0) {
        if (owner == 0) /* relaxed: under the lock; readers outside it only
                         * compare with their own id. */
            atomic_store_explicit(&loop->owner, me, memory_order_relaxed);
        loop->depth++;
        pthread_mutex_unlock(&loop->lock);
        return TURN_YES;
    }
    if (timeout_ms == 0) {
        pthread_mutex_unlock(&loop->lock);
        return TURN_NO;
    }

    uint64_t gen = loop->wake_gen;
    struct timespec until = ns_to_timespec(start + (int64_t)timeout_ms * NS_PER_MS);

    *loop->turn_tail = &w;
    loop->turn_tail = &w.next;
    /* A sleeping owner would keep the turn until its next event. */
    kick(loop);
    while (!w.granted && loop->wake_gen == gen) {
        if (timeout_ms < 0)
            pthread_cond_wait(&loop->turn_cond, &loop->lock);
        else if (pthread_cond_timedwait(&loop->turn_cond, &loop->lock, &until) == ETIMEDOUT)
            break;
    }
    got = !w.granted ? TURN_NO : loop->wake_gen == gen ? TURN_YES : TURN_WOKEN;
    if (!w.granted) {
        struct turn_waiter **p = &loop->turn_head;

        while (*p != &w)
            p = &(*p)->next;
        *p = w.next;
        if (loop->turn_tail == &w.next)
            loop->turn_tail = p;
    }
    pthread_mutex_unlock(&loop->lock);
    return got;
}

static void turn_release(moor_loop *loop)
{
    pthread_mutex_lock(&loop->lock);
    if (--loop->depth == 0) {
        struct turn_waiter *w = loop->turn_head;

        if (w) {
            loop->turn_head = w->next;
            if (!loop->turn_head)
                loop->turn_tail = &loop->turn_head;
            w->granted = true;
            loop->depth = 1;
            /* relaxed: under the lock (see turn_acquire). */
            atomic_store_explicit(&loop->owner, w->tid, memory_order_relaxed);
            pthread_cond_broadcast(&loop->turn_cond);
        } else {
            /* relaxed: as above. */
            atomic_store_explicit(&loop->owner, 0, memory_order_relaxed);
            /* dispose may wait for a misbehaving iteration to end. */
            /* relaxed: a flag set before its kick; a late look only delays
             * dispose to the broadcast of the next release. */
            if (atomic_load_explicit(&loop->disposing, memory_order_relaxed))
                pthread_cond_broadcast(&loop->turn_cond);
        }
    }
    pthread_mutex_unlock(&loop->lock);
}

/* ---- iterate ------------------------------------------------------------ */

/* The epoll timeout: @timeout_ms left of the caller's budget, shortened to
 * the nearest timer that may fire, 0 if callbacks are queued or the caller
 * must not sleep (@no_sleep). */
static int sleep_ms(moor_loop *loop, int timeout_ms, int64_t start, bool no_sleep)
{
    int64_t until = timeout_ms < 0 ? INT64_MAX : start + (int64_t)timeout_ms * NS_PER_MS;
    int64_t now;

    if (timeout_ms == 0 || no_sleep ||
        /* relaxed: see moor_loop_schedule() and heap_count_publish(). */
        atomic_load_explicit(&loop->sched_pending, memory_order_relaxed) != 0)
        return 0;
    if (atomic_load_explicit(&loop->heap_count, memory_order_relaxed) != 0) {
        pthread_mutex_lock(&loop->lock);
        /* serial 0: leave out only the running timers. */
        struct handler *h = heap_pick(loop, 0, INT64_MAX, 0, NULL);

        if (h && h->deadline < until)
            until = h->deadline;
        pthread_mutex_unlock(&loop->lock);
    }
    if (until == INT64_MAX)
        return -1;
    now = now_ns();
    if (until <= now)
        return 0;
    /* Round up: a timer must never be found not yet due on waking. */
    int64_t ms = (until - now + NS_PER_MS - 1) / NS_PER_MS;

    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

static void clear_eventfd(moor_loop *loop)
{
    uint64_t v;

    /* Non-blocking: EAGAIN if another read beat us to it. */
    while (read(loop->evfd, &v, sizeof(v)) < 0 && errno == EINTR)
        ;
}

/*
 * Whether the caller's reason to stop came since it last looked: a quit
 * for a run (@quit_snap: the generation it started with), a stop for the
 * loop thread. Checked right before sleeping: the wake-up that came with
 * it is an eventfd write that another thread's iteration may have consumed.
 * seq_cst, with the quitter's/stopper's seq_cst store: if we read the old
 * value, their eventfd write comes after our read, while we own the loop
 * (only the owner reads the eventfd), so our epoll_wait sees it.
 */
static bool stop_requested(moor_loop *loop, bool thread, const unsigned *quit_snap)
{
    if (thread)
        return atomic_load(&loop->thread_stop);
    return quit_snap && atomic_load(&loop->quit_gen) != *quit_snap;
}

/*
 * One iteration. @thread: called by the loop thread, which holds no
 * reference; it takes one for the dispatch only if the loop is still alive,
 * and returns ITER_DISPOSED if its own unref was the last. @quit_snap: see
 * stop_requested().
 */
static int iterate_common(moor_loop *loop, int timeout_ms, bool thread, const unsigned *quit_snap)
{
    struct epoll_event events[MAX_EVENTS];
    int me = self_tid(), n, ran = 0, turn;
    int64_t start = timeout_ms > 0 ? now_ns() : 0;

    turn = turn_acquire(loop, me, timeout_ms, start);
    if (turn == TURN_NO)
        return 0;
    moor_vlist_visit_begin(&loop->handlers);
    bool no_sleep = turn == TURN_WOKEN || stop_requested(loop, thread, quit_snap);

    n = epoll_wait(loop->epfd, events, MAX_EVENTS, sleep_ms(loop, timeout_ms, start, no_sleep));
    if (n < 0) {
        int e = errno;

        moor_vlist_visit_end(&loop->handlers);
        turn_release(loop);
        return e == EINTR ? 0 : -e;
    }
    /* relaxed: set before the kick that woke us; a late look means one
     * more dispatch by a loop that is still whole. */
    bool alive = !atomic_load_explicit(&loop->disposing, memory_order_relaxed) &&
                 (!thread || moor__object_ref_not_zero(&loop->parent, NULL));

    if (alive) {
        for (int i = 0; i < n; i++) {
            struct handler *h = events[i].data.ptr;

            if (!h)
                clear_eventfd(loop);
            else
                ran += dispatch_fd(loop, h, events[i].events);
        }
        /* relaxed: a timer armed by another thread is either seen here (its
         * store came before our turn_acquire took the lock) or its adder saw
         * us as owner and kicked us (kick_other_owner): next iteration. */
        if (atomic_load_explicit(&loop->heap_count, memory_order_relaxed) != 0)
            ran += dispatch_timers(loop);
        /* relaxed: see moor_loop_schedule(). */
        if (atomic_load_explicit(&loop->sched_pending, memory_order_relaxed) != 0)
            ran += run_scheduled(loop);
    }
    moor_vlist_visit_end(&loop->handlers);
    turn_release(loop);
    if (thread && alive) {
        moor_unref(loop);
        if (disposed_here == loop)
            return ITER_DISPOSED;
    }
    return ran;
}

/* An iteration by a caller that owns a reference. */
static int iterate_ref(moor_loop *loop, int timeout_ms, const unsigned *quit_snap)
{
    int ran;

    /* Our own reference: a callback cannot drop the last one under us. */
    moor_ref(loop);
    ran = iterate_common(loop, timeout_ms, false, quit_snap);
    moor_unref(loop);
    return ran;
}

int moor_loop_iterate(moor_loop *loop, int timeout_ms)
{
    if (check_loop(loop, "moor_loop_iterate", NULL) < 0 || timeout_ms < -1)
        return -EINVAL;
    return iterate_ref(loop, timeout_ms, NULL);
}

int moor_loop_run(moor_loop *loop)
{
    unsigned gen;

    if (check_loop(loop, "moor_loop_run", NULL) < 0)
        return -EINVAL;
    /* acquire: pairs with moor_loop_quit()'s release, so a quit that ended an
     * earlier run is behind us. */
    gen = atomic_load_explicit(&loop->quit_gen, memory_order_acquire);
    for (;;) {
        int rc = iterate_ref(loop, -1, &gen);

        if (rc < 0)
            return rc;
        /* acquire: as above. */
        if (atomic_load_explicit(&loop->quit_gen, memory_order_acquire) != gen)
            return 0;
    }
}

void moor_loop_wakeup(moor_loop *loop)
{
    if (!loop_valid(loop))
        return;
    pthread_mutex_lock(&loop->lock);
    loop->wake_gen++;
    if (loop->turn_head)
        pthread_cond_broadcast(&loop->turn_cond);
    pthread_mutex_unlock(&loop->lock);
    kick(loop);
}

void moor_loop_quit(moor_loop *loop)
{
    if (!loop_valid(loop))
        return;
    /* seq_cst: release, so that a run that sees the new generation also
     * sees what the quitter did before quitting; and the store side of
     * stop_requested()'s argument. */
    atomic_fetch_add(&loop->quit_gen, 1);
    moor_loop_wakeup(loop);
}

bool moor_loop_in_loop(const moor_loop *loop)
{
    /* relaxed: only a comparison with our own id, which only we store. */
    return loop_valid(loop) &&
           atomic_load_explicit((atomic_int *)&loop->owner, memory_order_relaxed) == self_tid();
}

/* ---- the loop thread ---------------------------------------------------- */

static void *loop_thread_main(void *arg)
{
    moor_loop *loop = arg;

    thread_of = loop;
    /* relaxed: set before the wake-up that makes us look again. */
    while (!atomic_load_explicit(&loop->thread_stop, memory_order_relaxed)) {
        int rc = iterate_common(loop, -1, true, NULL);

        if (rc == ITER_DISPOSED)
            return NULL; /* the loop is gone; dispose detached us */
        if (rc < 0) {
            moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, loop,
                              "loop %p: its thread stops: epoll_wait failed: %s", (void *)loop,
                              strerror(-rc));
            break;
        }
    }
    return NULL;
}

int moor_loop_thread_start(moor_loop *loop, moor_error *err)
{
    int rc;

    if (check_loop(loop, "moor_loop_thread_start", err) < 0)
        return -EINVAL;
    if (thread_of == loop) /* without thread_lock: a stopper may hold it */
        return moor_error_set(err, -EALREADY,
                              "moor_loop_thread_start: loop %p: called from its own thread",
                              (void *)loop);
    pthread_mutex_lock(&loop->thread_lock);
    if (loop->thread_running) {
        pthread_mutex_unlock(&loop->thread_lock);
        return moor_error_set(err, -EALREADY,
                              "moor_loop_thread_start: loop %p has a thread already", (void *)loop);
    }
    /* relaxed: the thread is created after this store. */
    atomic_store_explicit(&loop->thread_stop, false, memory_order_relaxed);
    rc = pthread_create(&loop->thread, NULL, loop_thread_main, loop);
    if (rc == 0)
        loop->thread_running = true;
    pthread_mutex_unlock(&loop->thread_lock);
    if (rc)
        return moor_error_set(err, -rc, "moor_loop_thread_start: loop %p: pthread_create: %s",
                              (void *)loop, strerror(rc));
    return 0;
}

/* Stop and join the loop thread; thread_lock held. */
static void thread_join_locked(moor_loop *loop)
{
    /* seq_cst: see stop_requested(); the wake-up below ends a sleep or a
     * wait for the turn that began before. */
    atomic_store(&loop->thread_stop, true);
    moor_loop_wakeup(loop);
    pthread_join(loop->thread, NULL);
    loop->thread_running = false;
}

int moor_loop_thread_stop(moor_loop *loop)
{
    if (check_loop(loop, "moor_loop_thread_stop", NULL) < 0)
        return -EINVAL;
    /* Checked before thread_lock: another thread in thread_stop holds it
     * while it joins us, so waiting for it here would hang both. */
    if (thread_of == loop)
        return -EDEADLK;
    pthread_mutex_lock(&loop->thread_lock);
    if (!loop->thread_running) {
        pthread_mutex_unlock(&loop->thread_lock);
        return -ESRCH;
    }
    thread_join_locked(loop);
    pthread_mutex_unlock(&loop->thread_lock);
    return 0;
}

/* ---- new and dispose ---------------------------------------------------- */

static bool cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    bool ok;

    if (pthread_condattr_init(&a))
        return false;
    ok = !pthread_condattr_setclock(&a, CLOCK_MONOTONIC) && !pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return ok;
}

moor_loop *moor_loop_new(moor_error *err)
{
    const moor_class *klass = moor__lazy_class_get(&loop_klass, err);
    moor_loop *loop;

    if (!klass)
        return NULL;
    loop = moor_object_new(klass);
    if (!loop) {
        moor_error_set(err, -ENOMEM, "moor_loop_new: out of memory");
        return NULL;
    }
    loop->epfd = loop->evfd = -1;
    loop->sched_tail = &loop->sched_head;
    loop->turn_tail = &loop->turn_head;
    atomic_init(&loop->owner, 0);
    atomic_init(&loop->heap_count, 0);
    atomic_init(&loop->sched_pending, 0);
    atomic_init(&loop->quit_gen, 0);
    atomic_init(&loop->disposing, false);
    atomic_init(&loop->thread_stop, false);
    moor_vlist_init(&loop->handlers);
    loop->handlers_ready = true;
    loop->lock_ready = pthread_mutex_init(&loop->lock, NULL) == 0;
    loop->thread_lock_ready = pthread_mutex_init(&loop->thread_lock, NULL) == 0;
    loop->turn_ready = cond_init_monotonic(&loop->turn_cond);
    loop->idle_ready = cond_init_monotonic(&loop->idle_cond);
    loop->nbuckets = FIRST_BUCKETS;
    loop->buckets = moor__calloc(FIRST_BUCKETS, sizeof(*loop->buckets));
    if (!loop->lock_ready || !loop->thread_lock_ready || !loop->turn_ready || !loop->idle_ready ||
        !loop->buckets) {
        moor_unref(loop);
        moor_error_set(err, -ENOMEM, "moor_loop_new: out of memory");
        return NULL;
    }
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd >= 0)
        loop->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop->epfd < 0 || loop->evfd < 0) {
        int e = errno;
        const char *what = loop->epfd < 0 ? "epoll_create1" : "eventfd";

        moor_unref(loop);
        moor_error_set(err, -e, "moor_loop_new: %s: %s", what, strerror(e));
        return NULL;
    }

    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};

    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->evfd, &ev) < 0) {
        int e = errno;

        moor_unref(loop);
        moor_error_set(err, -e, "moor_loop_new: epoll_ctl(eventfd): %s", strerror(e));
        return NULL;
    }
    loop->magic = LOOP_MAGIC;
    return loop;
}

static void loop_dispose(void *obj)
{
    moor_loop *loop = obj;

    if (loop->thread_lock_ready) {
        pthread_mutex_lock(&loop->thread_lock);
        if (loop->thread_running) {
            if (pthread_equal(loop->thread, pthread_self())) {
                /* Our own last unref, at the end of a dispatch: the thread
                 * leaves as soon as this returns (see loop_thread_main). */
                disposed_here = loop;
                pthread_detach(loop->thread);
                loop->thread_running = false;
            } else {
                thread_join_locked(loop);
            }
        }
        pthread_mutex_unlock(&loop->thread_lock);
    }
    if (loop->lock_ready && loop->turn_ready) {
        int me = self_tid();

        pthread_mutex_lock(&loop->lock);
        /* relaxed: under the lock. */
        int owner = atomic_load_explicit(&loop->owner, memory_order_relaxed);

        if (owner != 0) {
            moor_debug_report(MOOR_MISUSE_DISPOSE_LOCKED, loop,
                              "moor_loop %p: last unref while thread %d iterates it%s",
                              (void *)loop, owner, owner == me ? " (inside its own callback)" : "");
            if (owner != me) {
                /* relaxed: the kick below orders it for the iteration. */
                atomic_store_explicit(&loop->disposing, true, memory_order_relaxed);
                kick(loop);
                /* relaxed: under the lock. */
                while (atomic_load_explicit(&loop->owner, memory_order_relaxed) != 0)
                    pthread_cond_wait(&loop->turn_cond, &loop->lock);
            }
        }
        pthread_mutex_unlock(&loop->lock);
    }
    loop->magic = LOOP_DEAD;

    /* Nothing else can reach the loop now: no lock needed below. */
    for (struct sched *s = loop->sched_head, *next; s; s = next) {
        next = s->next;
        if (s->free_fn)
            s->free_fn(s->opaque);
        moor__free(s);
    }
    loop->sched_head = NULL;
    loop->heap_len = 0;
    if (loop->handlers_ready)
        moor_vlist_destroy(&loop->handlers);
    moor__free(loop->heap);
    moor__free(loop->buckets);
    if (loop->evfd >= 0)
        close(loop->evfd);
    if (loop->epfd >= 0)
        close(loop->epfd);
    if (loop->idle_ready)
        pthread_cond_destroy(&loop->idle_cond);
    if (loop->turn_ready)
        pthread_cond_destroy(&loop->turn_cond);
    if (loop->thread_lock_ready)
        pthread_mutex_destroy(&loop->thread_lock);
    if (loop->lock_ready)
        pthread_mutex_destroy(&loop->lock);
}
