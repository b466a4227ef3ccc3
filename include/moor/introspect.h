/* SPDX-License-Identifier: MIT */
/*
 * moor/introspect.h - who holds what: a snapshot of the library's live
 * state, its JSON form, and the stuck-wait watchdog.
 *
 * moor_debug_snapshot() copies, at one moment, the census per class, every
 * job held or waited for (object, kind, API, thread, age), every monitor
 * with its calls waiting for a reply (command, age, deadline), and the lock
 * classes. The copy is plain C owned by the caller: nothing in it points
 * into the library, so it may be kept, printed or sent anywhere.
 *
 * The watchdog (MOOR_DEBUG=watchdog or watchdog=MS) is a thread that takes
 * such a snapshot a few times per threshold and reports, through the
 * misuse hook, every job held or waited for and every monitor call pending
 * for longer than the threshold (default 10 s), and every thread asleep
 * that long in a lock counter: once per episode, i.e. once until that
 * hold, wait, call or sleep ends.
 *
 * The library keeps every moor_job (moor_job_init .. moor_job_destroy)
 * and every moor_monitor (new .. last unref) on a process-wide list under a
 * leaf mutex, always, so a snapshot is complete whatever the debug flags;
 * the cost is one short critical section at set-up and tear-down, none on
 * begin/end or a call.
 */
#ifndef MOOR_INTROSPECT_H
#define MOOR_INTROSPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <moor/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The layout below; bumped whenever a field is added or changed. */
#define MOOR_DEBUG_SNAPSHOT_VERSION 2u

#define MOOR_DEBUG_TEXT_SIZE 64 /* every text field, NUL included */

/* The default watchdog threshold (MOOR_DEBUG=watchdog without =MS). */
#define MOOR_DEBUG_WATCHDOG_DEFAULT_MS 10000u

typedef struct moor_debug_class {
    char name[MOOR_DEBUG_TEXT_SIZE];
    size_t live;
} moor_debug_class;

/* What a job entry is about. */
typedef enum moor_debug_job_role {
    MOOR_DEBUG_JOB_HOLDS = 0, /* a sync job is held */
    MOOR_DEBUG_JOB_ASYNC = 1, /* the object's async job is running */
    MOOR_DEBUG_JOB_WAITS = 2, /* a thread waits to begin a job */
    MOOR_DEBUG_JOB_BUSY = 3,  /* the object's mutex stayed busy: not read */
} moor_debug_job_role;

typedef struct moor_debug_job {
    const void *job;    /* identity only: never dereference */
    const void *object; /* the object it is embedded in; identity only */
    char object_class[MOOR_DEBUG_TEXT_SIZE];
    char label[MOOR_DEBUG_TEXT_SIZE]; /* moor_job_init's label; may be "" */
    moor_debug_job_role role;
    char kind[MOOR_DEBUG_TEXT_SIZE]; /* "MODIFY", or the async job's name */
    char api[MOOR_DEBUG_TEXT_SIZE];
    int thread;       /* kernel thread id; 0: an async job handed off */
    uint64_t ticket;  /* WAITS: arrival order on this object */
    int64_t age_ms;   /* since it was granted (HOLDS, ASYNC) or queued */
    int64_t left_ms;  /* WAITS: until it gives up; -1 otherwise */
    int64_t since_ns; /* CLOCK_MONOTONIC_COARSE start: with the fields
                       * above, names one episode */
} moor_debug_job;

typedef struct moor_debug_call {
    uint64_t id; /* the call's id on its monitor */
    char command[MOOR_DEBUG_TEXT_SIZE];
    int thread;
    int64_t age_ms;  /* since the call was queued */
    int64_t left_ms; /* until its deadline (negative: passed) */
} moor_debug_call;

typedef struct moor_debug_monitor {
    const void *monitor; /* identity only */
    char name[MOOR_DEBUG_TEXT_SIZE + 8];
    char state[16]; /* "new", "open", "broken", "closed" */
    unsigned entered;
    uint64_t calls, replies, timeouts;
    size_t ncalls;
    moor_debug_call *pending; /* ncalls of them, oldest first */
} moor_debug_monitor;

/* A thread asleep in a lock counter (its lock side, or a visit waiting for
 * the lock to go), recorded only while MOOR_DEBUG=watchdog is on. The
 * lock side records no owner: the lock counter's holder is not known. */
typedef struct moor_debug_wait {
    const void *subject;             /* the moor_lockcnt; identity only */
    char what[MOOR_DEBUG_TEXT_SIZE]; /* "lockcnt lock", "lockcnt visit" */
    int thread;
    int64_t age_ms;
    int64_t since_ns; /* CLOCK_MONOTONIC */
} moor_debug_wait;

/* A lock class. Registered by the checker: @name is the moor class or
 * internal lock's name, "/N" added for subclass N (moor_lock_nested), and
 * @what is "object mutex", "internal lock" or "monitor section". Built in
 * (checker off): one of moor's kinds of lock and what it is. */
typedef struct moor_debug_lock_class {
    char name[MOOR_DEBUG_TEXT_SIZE];
    char what[MOOR_DEBUG_TEXT_SIZE];
} moor_debug_lock_class;

/* An order the checker has seen: class @to taken while @from was held,
 * the first time, by @thread at the two sites ("file.c:LINE", or a
 * resolved return address; cut to fit). */
typedef struct moor_debug_lock_order {
    size_t from, to; /* indexes into moor_snapshot.lock_classes */
    int thread;
    char from_site[2 * MOOR_DEBUG_TEXT_SIZE]; /* where @from was taken */
    char to_site[2 * MOOR_DEBUG_TEXT_SIZE];   /* where @to was taken */
} moor_debug_lock_order;

typedef struct moor_snapshot {
    unsigned version; /* MOOR_DEBUG_SNAPSHOT_VERSION */
    int pid;
    int64_t taken_ms;     /* CLOCK_REALTIME, ms since the epoch */
    unsigned flags;       /* moor_debug_flags() then */
    uint32_t watchdog_ms; /* its threshold then */
    size_t nclasses;
    moor_debug_class *classes; /* classes with live objects */
    size_t njobs;
    moor_debug_job *jobs; /* per object: async, holders, then waiters */
    size_t nmonitors;
    moor_debug_monitor *monitors;
    /* Lock classes: with @lock_checked, the classes the lock-order
     * checker (MOOR_DEBUG=locks) has registered since the process began
     * (classes stay registered when the checker is turned off again);
     * else, no class registered yet, moor's built-in kinds of lock. */
    bool lock_checked;
    size_t nlock_classes;
    moor_debug_lock_class *lock_classes;
    size_t nlock_orders;
    moor_debug_lock_order *lock_orders; /* the checker's order edges */
    size_t nwaits;
    moor_debug_wait *waits; /* lock-counter sleeps (watchdog on only) */
} moor_snapshot;

/*
 * moor_debug_snapshot - copy the library's live state (see the top).
 *
 * Each object's job state is read under that object's mutex, taken with
 * trylock only (retried for up to ~10 ms): an object whose mutex stays busy
 * appears as one MOOR_DEBUG_JOB_BUSY entry. A caller holding an object's
 * mutex itself gets that object read directly. Monitors are read under
 * their leaf mutex. The lock checker's classes and orders are read without
 * its lock (they are only ever appended, each published by a release).
 * Ownership: new; free with moor_debug_snapshot_free(). Locks: the caller
 * may hold object mutexes (they are never waited for) but not a monitor's
 * or the registry's internals; takes the live-list leaf mutexes.
 * Blocks: about 10 ms per busy object at most. Ordering: each part is
 * read under the lock that guards it; parts are not one atomic moment.
 * Context: any thread but a report hook. Returns: the snapshot, or NULL
 * when out of memory.
 */
MOOR_EXPORT moor_snapshot *moor_debug_snapshot(void);

/*
 * moor_debug_snapshot_free - free @snap and everything in it. NULL-safe.
 * Ownership: takes @snap. Locks: none. Blocks: no. Ordering: none (plain
 * memory the caller owns). Context: any thread.
 * Returns: nothing.
 */
MOOR_EXPORT void moor_debug_snapshot_free(moor_snapshot *snap);

/* Receives the JSON text in pieces; returns 0, or a negative value that
 * stops the writer, which then returns that value. */
typedef int (*moor_debug_write_fn)(const char *data, size_t len, void *opaque);

/*
 * moor_debug_snapshot_write_json - write @snap as one JSON object:
 *   {"version","pid","taken_ms","flags","watchdog_ms",
 *    "census":[{"class","live"}],
 *    "jobs":[{"object","class","label","role","kind","api","thread",
 *             "age_ms","left_ms","ticket"}],
 *    "monitors":[{"name","state","entered","calls","replies","timeouts",
 *                 "pending":[{"id","command","thread","age_ms","left_ms"}]}],
 *    "lock_checked", "lock_classes":[{"name","what"}],
 *    "lock_orders":[{"from","to","thread","from_site","to_site"}],
 *    "waits":[{"what","thread","age_ms"}]}
 * "object" is "class 'label'" or "class 0x..." (as in every job message);
 * "role" is "holds", "async", "waits" or "busy"; a lock order's "from"
 * and "to" are class names. Strings are escaped.
 * The JSON is produced here, with no JSON library, so that any program
 * can emit it.
 * Ownership: @snap is borrowed. Locks: none. Blocks: as @fn does.
 * Ordering: none (it reads only @snap). Context: any thread (it touches nothing but @snap and @fn).
 * Returns: 0; -EINVAL for a NULL @snap or @fn; or @fn's negative value.
 */
MOOR_EXPORT int moor_debug_snapshot_write_json(const moor_snapshot *snap, moor_debug_write_fn fn,
                                               void *opaque);

/*
 * moor_debug_set_watchdog_ms - set the watchdog threshold (@ms >= 1; 0
 * restores the default). Turning the watchdog on or off is done with the
 * MOOR_DEBUG_WATCHDOG flag (moor_debug_set_flags); MOOR_DEBUG=watchdog=MS
 * sets both. A running watchdog picks up the new threshold at its next
 * look, within 250 ms.
 * Ownership: nothing. Ordering: relaxed (a debugging knob). Locks: none.
 * Blocks: no. Context: any thread, a report hook included.
 * Returns: the previous threshold.
 */
MOOR_EXPORT uint32_t moor_debug_set_watchdog_ms(uint32_t ms);

/*
 * moor_debug_watchdog_ms - the current watchdog threshold.
 * Ownership: nothing. Ordering: relaxed. Locks: none. Blocks: no. Context: any thread.
 * Returns: the threshold.
 */
MOOR_EXPORT uint32_t moor_debug_watchdog_ms(void);

#ifdef __cplusplus
}
#endif

#endif /* MOOR_INTROSPECT_H */
