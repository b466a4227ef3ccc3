/* SPDX-License-Identifier: MIT */
/*
 * moor/job.h - per-object jobs: long, named, fair tokens for state changes.
 *
 * An object mutex is held for field accesses only. Anything long (a call
 * to a peer process, a file write, a migration) holds a *job* on the object
 * instead, and drops the mutex around the slow part. A job says what kind
 * of work is running, for which API, in which thread and since when, so a
 * second caller can wait for it (the mutex released meanwhile) or fail
 * with a message that names it.
 *
 * A moor_job is embedded in the instance struct of a lockable object and
 * set up with moor_job_init() by whoever creates the object:
 *
 *     struct vm {
 *         moor_lockable parent;
 *         moor_job job;        // guarded by the vm's own mutex
 *         ...
 *     };
 *
 * Embedding (rather than a separate refcounted job object) means no
 * allocation per object or per job, no second lifetime to manage, and a
 * condition wait bound to the very mutex that guards the object.
 *
 * Every call below except init/destroy, kind registration and
 * moor_job_set_current_api() is made with the object's mutex held (the
 * whole module is "_locked", so the suffix is left out of the names), and
 * is checked: a call without the mutex is reported as misuse and fails
 * with -EINVAL. Waiting releases the mutex and retakes it before
 * returning, so after any begin that waited the caller must re-check the
 * object's state (rule 5 in docs/concepts.md).
 *
 * Kinds. A sync job has a kind, a small integer:
 *   MOOR_JOB_QUERY    shared: any number at once; reads only.
 *   MOOR_JOB_MODIFY   exclusive.
 *   MOOR_JOB_DESTROY  exclusive; allowed during any async job and placed
 *                     at the head of the queue, ahead of every other waiter.
 *   MOOR_JOB_ABORT    exclusive; when it starts while an async job runs,
 *                     it sets that job's abort request.
 * Applications name further kinds with moor_job_kind_register(), each
 * shared or exclusive.
 *
 * Async jobs (save, migrate, backup) occupy one async slot per object and
 * declare which sync kinds other threads may start beside them. The
 * owner's own sync jobs ("nested" jobs, taken around each peer call) are
 * never held back by that mask.
 *
 * Fairness. Waiters queue in ticket (arrival) order. A waiter is granted
 * as soon as it is compatible with the holders and with every waiter ahead
 * of it that could run were it not for the holders: a waiting MODIFY is
 * never overtaken by a QUERY that arrived later, so a stream of QUERY jobs
 * cannot starve it. A waiter that only an async job's end can release (its
 * kind is outside the async mask) does not hold back the waiters behind
 * it. End, abort and removal wake exactly the waiters that can proceed.
 *
 * Deadlines. Every wait is bounded: by the call's timeout, or by the
 * object's default (30 s unless changed with moor_job_set_default_timeout).
 * The _try variant never waits. An optional cap limits queued waiters.
 *
 * Lifetime. A job does not take references: whoever waits for or holds a
 * job must own a reference to the object for that whole time (an API
 * call does anyway), and an async job handed to another thread travels
 * with a reference owned by that thread.
 *
 * Strings. API names passed to begin (or set with moor_job_set_current_api)
 * are borrowed until the job ends: pass string literals. Labels, async
 * names, phases and stage texts are copied.
 */
#ifndef MOOR_JOB_H
#define MOOR_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include <moor/error.h>
#include <moor/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Built-in kinds. Kinds are bit numbers of a uint32_t mask. */
#define MOOR_JOB_QUERY     0u
#define MOOR_JOB_MODIFY    1u
#define MOOR_JOB_DESTROY   2u
#define MOOR_JOB_ABORT     3u
#define MOOR_JOB_KINDS_MAX 32u

#define MOOR_JOB_MASK(kind) (UINT32_C(1) << (kind))

/* What an async job allows beside it when the caller has no better idea:
 * monitoring, destruction and a request to stop. */
#define MOOR_JOB_ASYNC_DEFAULT_MASK                                                                \
    (MOOR_JOB_MASK(MOOR_JOB_QUERY) | MOOR_JOB_MASK(MOOR_JOB_DESTROY) |                             \
     MOOR_JOB_MASK(MOOR_JOB_ABORT))

/* Timeouts in milliseconds: this one selects the object's default. */
#define MOOR_JOB_TIMEOUT_DEFAULT    UINT32_MAX
#define MOOR_JOB_DEFAULT_TIMEOUT_MS 30000u

/* How a kind shares the object with other sync jobs. */
typedef enum moor_job_mode {
    MOOR_JOB_SHARED = 0,
    MOOR_JOB_EXCLUSIVE = 1,
} moor_job_mode;

/* Sizes of the copied strings (including the NUL). */
#define MOOR_JOB_LABEL_SIZE 48
#define MOOR_JOB_NAME_SIZE  32
#define MOOR_JOB_STAGE_SIZE 64
#define MOOR_JOB_INLINE     4 /* holder records kept inside moor_job */

/* ---- the embedded struct (private fields; public for embedding) ------- */

typedef struct moor_job_holder {
    const char *api;
    int64_t start_ns;
    int thread;
    unsigned kind;
} moor_job_holder;

typedef struct moor__job_waiter moor__job_waiter;

/* A link in one of moor's lists of live things (moor/introspect.h). */
typedef struct moor__live_node {
    struct moor__live_node *prev, *next;
} moor__live_node;

typedef struct moor_job {
    void *obj;                /* the lockable object it is embedded in */
    moor_job_holder *holders; /* inline_holders, or a heap array */
    unsigned nholders, nexclusive, capacity;
    unsigned nwaiters, max_waiters;
    uint32_t default_timeout_ms;
    bool removed;
    moor__job_waiter *head, *tail;                 /* ticket order */
    moor__job_waiter *destroy_head, *destroy_tail; /* DESTROY waiters */
    uint64_t next_ticket;
    struct {
        bool active, abort_requested;
        int owner; /* thread id; 0 while handed off */
        uint32_t allowed;
        const char *api;
        int64_t start_ns;
        uint64_t done, total;
        char name[MOOR_JOB_NAME_SIZE];
        char phase[MOOR_JOB_NAME_SIZE];
        char stage[MOOR_JOB_STAGE_SIZE];
    } async;
    moor_job_holder inline_holders[MOOR_JOB_INLINE];
    char label[MOOR_JOB_LABEL_SIZE];
    moor__live_node live; /* on the list of every set-up job (introspect.h) */
} moor_job;

/* ---- kinds ------------------------------------------------------------ */

/*
 * moor_job_kind_register - name a new sync kind, shared or exclusive.
 *
 * For finer names in messages and masks ("snapshot-list" as a QUERY,
 * "set-memory" as a MODIFY). Call at start-up; kinds live for the program.
 * @name is copied (up to MOOR_JOB_NAME_SIZE - 1 bytes).
 * Ownership: nothing to free. Locks: takes an internal leaf mutex; no
 * object mutex needed. Blocks: no. Context: any thread.
 * Returns: the new kind (4..31), or:
 *   -EINVAL  @name empty, NULL or too long, @mode not a moor_job_mode;
 *   -EEXIST  a kind of that name exists;
 *   -ENOSPC  all 32 kinds are taken.
 */
MOOR_EXPORT int moor_job_kind_register(const char *name, moor_job_mode mode, moor_error *err);

/*
 * moor_job_kind_name - the name of @kind ("QUERY", ...), or "?" if @kind
 * is not registered.
 * Ownership: borrowed, static storage; do not free. Locks: none.
 * Blocks: never. Returns: the name, never NULL.
 */
MOOR_EXPORT const char *moor_job_kind_name(unsigned kind);

/*
 * moor_job_set_current_api - set the calling thread's "current API" name,
 * used by every begin that is passed a NULL api. A dispatcher sets it
 * before calling a handler and restores the previous value after.
 * Ownership: @api is borrowed until every job begun under it has ended
 * (use literals). Locks: none. Blocks: never. Context: thread-local.
 * Returns: the previous value (may be NULL).
 */
MOOR_EXPORT const char *moor_job_set_current_api(const char *api);

/* ---- set-up ------------------------------------------------------------ */

/*
 * moor_job_init - set up @job, embedded in the lockable object @obj.
 *
 * @label names the object in messages ("web1"), copied; NULL names it by
 * address. Defaults: timeout MOOR_JOB_DEFAULT_TIMEOUT_MS, no waiter cap.
 * @job must lie inside @obj's instance (checked) and must not be moved or
 * copied afterwards. Pair it with moor_job_destroy() in the object's
 * dispose function: an object freed with a job still set up in it is
 * reported (MOOR_MISUSE_NOT_DESTROYED), always, not only under MOOR_DEBUG.
 * MOOR_JOB_INIT(obj, member, label) names the object once.
 * Ownership: @job stays the caller's; @obj is borrowed (the job lives
 * inside it). Locks: none needed (the object is not shared yet).
 * Blocks: no. Returns: 0, or -EINVAL (also reported as misuse) when @job
 * is NULL, @obj is not a lockable object, or @job is not inside @obj.
 */
MOOR_EXPORT int moor_job_init(moor_job *job, void *obj, const char *label);

/* MOOR_JOB_INIT - moor_job_init() of the job that is member @member of
 * object pointer @obj: MOOR_JOB_INIT(vm, job, "web1") sets up vm->job in
 * vm. @obj is evaluated twice. */
#define MOOR_JOB_INIT(obj, member, label) moor_job_init(&(obj)->member, (obj), (label))

/*
 * moor_job_destroy - release what @job holds; NULL-safe. Call from the
 * object's dispose function (forgetting it is reported when the object is
 * freed, see moor_job_init). A job still held or waited for is reported
 * as misuse (it cannot happen when every holder owns a reference).
 * Ownership: frees the heap holder array, if any; @job's storage stays
 * the caller's. Locks: none (the object is being disposed). Blocks: no.
 * Returns: nothing.
 */
MOOR_EXPORT void moor_job_destroy(moor_job *job);

/*
 * moor_job_set_label - rename the object in later messages (copied).
 * moor_job_set_default_timeout - default deadline of waiting begins, in
 *   ms (0 makes every default begin a _try).
 * moor_job_set_max_waiters - cap on queued waiters; 0 = no cap. A begin
 *   that would have to wait behind @max waiters fails with -EBUSY instead
 *   (DESTROY is exempt). Waiters already queued stay.
 * Locks: the object's mutex. Blocks: never.
 * Returns: 0, or -EINVAL when called without the mutex (misuse).
 */
MOOR_EXPORT int moor_job_set_label(moor_job *job, const char *label);
MOOR_EXPORT int moor_job_set_default_timeout(moor_job *job, uint32_t timeout_ms);
MOOR_EXPORT int moor_job_set_max_waiters(moor_job *job, unsigned max);

/* ---- sync jobs ---------------------------------------------------------- */

/*
 * moor_job_begin_timeout - start a sync job of @kind, waiting up to
 * @timeout_ms (MOOR_JOB_TIMEOUT_DEFAULT: the object's default; 0: never
 * wait).
 *
 * @api names the caller in messages and in moor_job_info(); NULL takes the
 * thread's current API (moor_job_set_current_api), or "(unknown)".
 * A thread holds at most one sync job per object.
 *
 * Ownership: the caller must own a reference to the object until the job
 *   ends. On success the calling thread holds the job; end it with
 *   moor_job_end() from the same thread.
 * Locks: the object's mutex, held on entry and on return; released while
 *   waiting (the waiter at the front of the queue spins up to 20 us, then
 *   any waiter sleeps in a condition wait on CLOCK_MONOTONIC). No other
 *   object mutex or monitor may be held (rule 4).
 * Blocks: up to @timeout_ms, only when the job cannot start at once.
 * Context: any thread.
 * Returns: 0 when the job is held; on failure nothing changed and:
 *   -ETIMEDOUT  the deadline passed; the message names the wanted job,
 *               the object, and every holder (kind, API, thread, held
 *               for how long);
 *   -EBUSY      no wait allowed (@timeout_ms 0), or the waiter cap was
 *               reached; message as for -ETIMEDOUT;
 *   -ESRCH      the object was marked removed (before or during the
 *               wait, or after the job was granted but before this
 *               thread retook the mutex: the grant is handed back), or
 *               inactive during the wait (not for DESTROY);
 *   -EDEADLK    this thread already holds a sync job on the object
 *               (waiting would deadlock; also reported as misuse);
 *   -ENOMEM     no memory for one more holder record (more than
 *               MOOR_JOB_INLINE holders and waiters at once);
 *   -EINVAL     unknown @kind, NULL @job, or the mutex not held (misuse).
 */
MOOR_EXPORT int moor_job_begin_timeout(moor_job *job, unsigned kind, const char *api,
                                       uint32_t timeout_ms, moor_error *err);

/* moor_job_begin - moor_job_begin_timeout() with the object's default
 * deadline. Ownership, Locks, Returns: as moor_job_begin_timeout().
 * Blocks: up to the object's default timeout (30 s unless changed). */
MOOR_EXPORT int moor_job_begin(moor_job *job, unsigned kind, const char *api, moor_error *err);

/* moor_job_begin_try - moor_job_begin_timeout() with no wait: -EBUSY at
 * once when the job cannot start. Blocks: never; the mutex is not released.
 * Ownership, Locks, Returns: as moor_job_begin_timeout() (no -ETIMEDOUT). */
MOOR_EXPORT int moor_job_begin_try(moor_job *job, unsigned kind, const char *api, moor_error *err);

/*
 * moor_job_end - end the sync job the calling thread holds on @job and
 * grant the job to every waiter that can now proceed (each is woken;
 * nobody else is).
 * Locks: the object's mutex (kept). Blocks: never.
 * Returns: 0, or -EINVAL (reported as misuse: "end without begin") when
 * the thread holds no sync job here or does not hold the mutex.
 */
MOOR_EXPORT int moor_job_end(moor_job *job);

/*
 * moor_job_held - whether the calling thread holds a sync job on @job.
 * For assertions. Ownership: nothing to free. Locks: the object's mutex
 * (not checked). Blocks: never. Returns: true if held; false otherwise or
 * for a NULL @job.
 */
MOOR_EXPORT bool moor_job_held(const moor_job *job);

/* ---- async jobs --------------------------------------------------------- */

/*
 * moor_job_begin_async - take the async slot for a long operation named
 * @name (copied; "migration out"), allowing sync kinds in @allowed beside
 * it (DESTROY is always added). It starts when no other async job runs, no
 * exclusive sync job is held, and every shared holder's kind is in
 * @allowed; waiting is fair as for sync jobs.
 *
 * The calling thread becomes the owner: its own sync jobs ignore the
 * mask. It must not hold a sync job on the object.
 * Ownership/Locks/Blocks/Context: as moor_job_begin_timeout().
 * Returns: 0, or the codes of moor_job_begin_timeout() (-EDEADLK if this
 * thread holds a sync job or already owns the async job; -EINVAL for an
 * empty @name).
 */
MOOR_EXPORT int moor_job_begin_async(moor_job *job, const char *name, uint32_t allowed,
                                     const char *api, uint32_t timeout_ms, moor_error *err);

/*
 * moor_job_end_async - end the async job, which the calling thread owns,
 * and grant the job to every waiter that can now proceed.
 * Locks: the object's mutex. Blocks: never.
 * Returns: 0, or -EINVAL (misuse) when no async job runs or the caller
 * does not own it.
 */
MOOR_EXPORT int moor_job_end_async(moor_job *job);

/*
 * moor_job_async_set_phase - name the current phase ("perform"), copied.
 * moor_job_async_set_progress - record @done of @total units and a
 *   free-form @stage text (copied; NULL keeps the old one).
 * moor_job_async_set_mask - change which sync kinds may start beside the
 *   async job (DESTROY always added); waiters now allowed are granted.
 * Only the owner may call them. Readers see the values through
 * moor_job_info() under the mutex (a QUERY holder does exactly that).
 * Locks: the object's mutex. Blocks: never.
 * Returns: 0, or -EINVAL (misuse) without an owned async job.
 */
MOOR_EXPORT int moor_job_async_set_phase(moor_job *job, const char *phase);
MOOR_EXPORT int moor_job_async_set_progress(moor_job *job, uint64_t done, uint64_t total,
                                            const char *stage);
MOOR_EXPORT int moor_job_async_set_mask(moor_job *job, uint32_t allowed);

/*
 * moor_job_abort_requested - whether an ABORT job has asked the running
 * async job to stop. The async job's loop checks it after each re-lock.
 * Locks: the object's mutex. Blocks: never. Returns: false when no async
 * job runs.
 */
MOOR_EXPORT bool moor_job_abort_requested(const moor_job *job);

/*
 * moor_job_async_release, moor_job_async_adopt - hand the async job to
 * another thread: the owner calls _release (the job stays active, owned by
 * nobody: no thread's sync jobs bypass the mask), then the new thread
 * calls _adopt and becomes the owner. The reference the job needs travels
 * with it (the releasing thread hands one to the adopting thread).
 * Locks: the object's mutex. Blocks: never.
 * Returns: 0, or -EINVAL (misuse): _release by a non-owner, _adopt of a
 * job that is not released (or no async job).
 */
MOOR_EXPORT int moor_job_async_release(moor_job *job);
MOOR_EXPORT int moor_job_async_adopt(moor_job *job);

/* ---- the object going away ---------------------------------------------- */

/*
 * moor_job_mark_inactive - the object stopped being active (its process
 * died, it was shut down): every waiter except DESTROY waiters fails with
 * -ESRCH, since what it waited to act on is gone. Later begins proceed as
 * usual (they re-check the state themselves). Holders are not affected.
 * moor_job_mark_removed - the object was removed (from its registry): every
 * waiter fails with -ESRCH and so does every later begin, including async
 * ones. Not undoable. A waiter that an end had already granted, but that
 * has not yet retaken the mutex to return from its begin, fails too: it
 * hands the job back and returns -ESRCH, so no begin ever returns 0 on a
 * removed object. Such a waiter is a holder at the time of this call and
 * is not counted in the result.
 * Locks: the object's mutex. Blocks: never.
 * Returns: how many waiters were failed, or -EINVAL (misuse) without the
 * mutex.
 */
MOOR_EXPORT int moor_job_mark_inactive(moor_job *job);
MOOR_EXPORT int moor_job_mark_removed(moor_job *job);

/*
 * moor_job_is_removed - whether moor_job_mark_removed() was called on @job:
 * rule 5's re-check after re-locking the object ("was it removed while I
 * had it unlocked?"), without taking a whole moor_job_info() snapshot.
 *
 *     moor_monitor_exit(mon, vm);          // the object is locked again
 *     if (moor_job_is_removed(&vm->job))   // removed meanwhile: stop here
 *         ...end the job, report -ESRCH...
 *
 * Ownership: nothing to free. Locks: the object's mutex (the answer holds
 * while it stays held: removal is not undoable). Blocks: never.
 * Returns: true if removed; also true, after reporting misuse, for a NULL
 * or uninitialised @job or when the mutex is not held (the answer that
 * makes a caller back out rather than go on with a stale "no").
 */
MOOR_EXPORT bool moor_job_is_removed(const moor_job *job);

/* ---- introspection -------------------------------------------------------- */

#define MOOR_JOB_INFO_HOLDERS 8

/* Held-for times (held_ns here, "for 1.250 s" in messages) are exact to
 * one tick of CLOCK_MONOTONIC_COARSE, which records every start time:
 * clock_getres() of that clock, 1 to 10 ms depending on the kernel. */

typedef struct moor_job_holder_info {
    unsigned kind;
    const char *kind_name; /* static */
    const char *api;       /* borrowed: valid while the job is held */
    int thread;
    uint64_t held_ns;
} moor_job_holder_info;

typedef struct moor_job_snapshot {
    char object[MOOR_JOB_LABEL_SIZE + 40]; /* "class 'label'" */
    bool removed;
    unsigned holders;                                   /* sync holders, all of them */
    unsigned exclusive;                                 /* 0 or 1 */
    moor_job_holder_info holder[MOOR_JOB_INFO_HOLDERS]; /* the first ones */
    unsigned waiters;                                   /* queued begins, every kind */
    unsigned destroy_waiters;                           /* of which DESTROY */
    struct {
        bool active, abort_requested;
        int owner; /* 0 while handed off */
        uint32_t allowed;
        const char *api;
        uint64_t held_ns, done, total;
        char name[MOOR_JOB_NAME_SIZE];
        char phase[MOOR_JOB_NAME_SIZE];
        char stage[MOOR_JOB_STAGE_SIZE];
    } async;
} moor_job_snapshot;

/*
 * moor_job_info - a snapshot of @job in @out (plain copies, valid after
 * the mutex is dropped, except the borrowed API names).
 * Locks: the object's mutex. Blocks: never.
 * Returns: 0, or -EINVAL (misuse) without the mutex or with NULL @out;
 * @out is untouched then.
 */
MOOR_EXPORT int moor_job_info(const moor_job *job, moor_job_snapshot *out);

#ifdef __cplusplus
}
#endif

#endif /* MOOR_JOB_H */
