/* SPDX-License-Identifier: MIT */
/*
 * moor/debug.h - run-time debug switches and the misuse report hook.
 *
 * Debug checks are chosen per run with the environment variable
 * MOOR_DEBUG, a comma-separated list of: locks, refs, leaks, watchdog
 * (or watchdog=MS, its threshold in ms; see moor/introspect.h), abort (or
 * "all"). It is read once when the library is loaded; tests and
 * daemons may change the set later with moor_debug_set_flags(). A check
 * that is off costs one relaxed load.
 *
 * With "locks", moor keeps per thread the stack of moor locks held (object
 * mutexes, registry internals, lock counters' mutex side, monitor
 * sections) and reports lock-order inversions, rule-4 nestings, blocking
 * calls made while holding locks, and out-of-order unlocks, each naming
 * the sites involved. With "refs", each reference to an object created
 * from then on is recorded with its site, so the leak report at exit (and
 * moor_debug_dump_refs) says who still holds it. See docs/debug.md.
 *
 * Misuse (a saturated reference count, an unref of something that is not a
 * live object, a dispose while locked, an unlock by a thread that does not
 * own the lock...) is never silently ignored and never crashes by itself:
 * it goes to one report hook. The default hook prints one line to stderr
 * and, when "abort" is in MOOR_DEBUG, aborts so a core dump shows the site.
 */
#ifndef MOOR_DEBUG_H
#define MOOR_DEBUG_H

#include <stdio.h>

#include <moor/export.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    MOOR_DEBUG_LOCKS = 1u << 0,    /* lock owner checks, held-lock stacks */
    MOOR_DEBUG_REFS = 1u << 1,     /* reference holder tracing */
    MOOR_DEBUG_LEAKS = 1u << 2,    /* list objects still alive at exit */
    MOOR_DEBUG_WATCHDOG = 1u << 3, /* report long-held jobs and calls */
    MOOR_DEBUG_ABORT = 1u << 4,    /* abort() after reporting misuse */
};

/* What kind of misuse a report is about. */
typedef enum moor_misuse {
    MOOR_MISUSE_REF_INC_FROM_ZERO, /* ref of a counter already at zero */
    MOOR_MISUSE_REF_UNDERFLOW,     /* unref of a counter already at zero */
    MOOR_MISUSE_REF_OVERFLOW,      /* counter would pass INT_MAX */
    MOOR_MISUSE_NOT_AN_OBJECT,     /* pointer without a moor object header */
    MOOR_MISUSE_DISPOSED_OBJECT,   /* object already being disposed or freed */
    MOOR_MISUSE_BAD_CAST,          /* object is not of the class asked for */
    MOOR_MISUSE_DISPOSE_LOCKED,    /* last unref while the object is locked */
    MOOR_MISUSE_UNLOCK_NOT_OWNER,  /* unlock by a thread not holding it */
    MOOR_MISUSE_NOT_LOCKED,        /* moor_assert_locked() failed */
    MOOR_MISUSE_LOCK_RECURSIVE,    /* moor_lock by the thread holding it */
    MOOR_MISUSE_BAD_ARGUMENT,      /* a NULL or invalid argument */
    MOOR_MISUSE_LEAK,              /* objects still alive at exit */
    MOOR_MISUSE_LOCKCNT_UNDERFLOW, /* end of a visit that was never begun */
    MOOR_MISUSE_BLOCKS_LEFT,       /* blocker set destroyed with blocks in place */
    MOOR_MISUSE_UNBLOCK_UNKNOWN,   /* unblock of a token that names no block */
    MOOR_MISUSE_NOT_DESTROYED,     /* object freed with a job or blocker set in it
                                    * still set up (dispose forgot _destroy) */
    /* MOOR_DEBUG=locks (docs/debug.md shows a report of each): */
    MOOR_MISUSE_LOCK_ORDER,       /* two lock classes taken in both orders */
    MOOR_MISUSE_LOCK_NESTED,      /* object mutex taken holding another (rule 4) */
    MOOR_MISUSE_LOCK_BLOCKING,    /* blocking call made holding a lock it must not */
    MOOR_MISUSE_MONITOR_LOCKED,   /* monitor entered holding a second object's
                                   * mutex or an internal lock */
    MOOR_MISUSE_UNLOCK_ORDER,     /* object mutex released before one nested in it */
    MOOR_MISUSE_BLOCK_TOKEN_LIVE, /* moor_block into a token that still names a block */
    MOOR_MISUSE_STUCK_JOB,        /* watchdog: a job held or waited for too long */
    MOOR_MISUSE_STUCK_CALL,       /* watchdog: a monitor call pending too long */
    MOOR_MISUSE_STUCK_LOCKCNT,    /* watchdog: asleep in a lock counter too long */
} moor_misuse;

/*
 * moor_report_fn - receives one misuse report.
 *
 * @kind says what went wrong, @subject is the address concerned (object,
 * counter or lock; may be NULL), @message a one-line description naming the
 * object, its class and the operation. The hook runs in the thread that
 * misbehaved, possibly with moor or application locks held: it must not
 * call back into moor except moor_debug_* and must not block.
 */
typedef void (*moor_report_fn)(moor_misuse kind, const void *subject, const char *message,
                               void *opaque);

/*
 * moor_debug_flags - the current set of MOOR_DEBUG_* flags.
 * Ordering: relaxed; a flag change is seen by other threads "soon", which is
 * all a debugging switch needs. Locks: none. Blocks: never.
 * Returns: the flags.
 */
MOOR_EXPORT unsigned moor_debug_flags(void);

/*
 * moor_debug_set_flags - replace the flag set; returns the previous one.
 *
 * Turning "leaks" on arranges (once) for the census to be listed at exit.
 * Objects created while "leaks" was off are counted but not listed.
 * Turning "watchdog" on starts its thread; turning it off stops it and
 * joins it (from the watchdog's own report hook it only tells it to end).
 * Locks: the caller must hold no moor lock while turning the watchdog
 * off (the join waits for the thread's current look). Blocks: only then,
 * for that look (about 10 ms per busy object at most); never otherwise.
 * Ordering: relaxed (the flag word). Returns: the previous flags.
 */
MOOR_EXPORT unsigned moor_debug_set_flags(unsigned flags);

/*
 * moor_debug_parse - turn a MOOR_DEBUG-style string into flags.
 *
 * Locks: none. Blocks: never.
 * "watchdog=MS" (1 <= MS <= 86400000) also sets the watchdog threshold,
 * as moor_debug_set_watchdog_ms() does, when the whole string is valid.
 * Returns: the flags (>= 0), or -EINVAL if a word or a threshold is
 * unknown or invalid; in that case nothing is changed anywhere. NULL or ""
 * parses to 0.
 */
MOOR_EXPORT int moor_debug_parse(const char *spec);

/*
 * moor_debug_report_stderr - the default hook: prints "moor: MESSAGE" and
 * a newline to stderr. A chained hook may call it as the previous one.
 * Locks: none. Blocks: on the write to stderr. Context: any thread.
 */
MOOR_EXPORT void moor_debug_report_stderr(moor_misuse kind, const void *subject,
                                          const char *message, void *opaque);

/*
 * moor_debug_set_report - install the misuse hook @fn with @opaque (NULL
 * @fn: the default, moor_debug_report_stderr, with a NULL opaque).
 * moor_debug_swap_report - the same, and also stores the previous hook's
 *   opaque pointer in *@prev_opaque (unless @prev_opaque is NULL), read
 *   in the same critical section as the hook: what a component needs to
 *   chain to whichever hook was there before it:
 *
 *       static moor_report_fn prev_fn;
 *       static void *prev_opaque;
 *
 *       static void my_hook(moor_misuse k, const void *s, const char *m, void *o)
 *       {
 *           ... my own handling ...
 *           prev_fn(k, s, m, prev_opaque);
 *       }
 *       ...
 *       prev_fn = moor_debug_swap_report(my_hook, me, &prev_opaque);
 *
 * Reports already in progress in other threads may still reach the
 * previous hook. Ownership: nothing to free; @opaque is borrowed while the
 * hook is installed. Locks: takes an internal leaf mutex briefly.
 * Blocks: no. Context: any thread, a hook included.
 * Returns: the previous hook, never NULL (the default one if no other was
 * installed).
 */
MOOR_EXPORT moor_report_fn moor_debug_set_report(moor_report_fn fn, void *opaque);
MOOR_EXPORT moor_report_fn moor_debug_swap_report(moor_report_fn fn, void *opaque,
                                                  void **prev_opaque);

/*
 * moor_debug_report - send a misuse report to the installed hook.
 *
 * For moor's own layers and for applications building their own checked
 * primitives. Formats the message like printf. With MOOR_DEBUG_ABORT set,
 * aborts after the hook returns. Locks: takes the hook's leaf mutex only
 * to read the hook, not while calling it. Blocks: only as long as the hook
 * does. Returns: nothing (unless it aborts).
 */
MOOR_EXPORT void moor_debug_report(moor_misuse kind, const void *subject, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * moor_debug_dump_refs - write to @f who holds references to @obj: one line
 * per outstanding reference with the site that took it ("file.c:LINE" for
 * the moor_ref/moor_unref macros, "function+0xOFF (binary)" for a
 * reference a moor call returned, such as moor_object_new or a registry
 * lookup) and the thread that took it.
 *
 * Only objects created while MOOR_DEBUG=refs was on are traced. An unref
 * does not say which of the references it drops, so it is matched with the
 * newest one its own thread took, or else with the oldest one (a reference
 * handed to another thread); the lines left are the references nobody
 * dropped yet. Ownership: the caller keeps @obj alive across the call.
 * Locks: an internal leaf mutex of @obj's trace. Blocks: on @f's I/O.
 * Ordering: the trace's mutex (what other threads recorded before it).
 * Context: any thread; not from a report hook.
 * Returns: the number of lines written (references traced), -EINVAL if @obj
 * is not a live object or @f is NULL, -ENOENT if @obj is not traced.
 */
MOOR_EXPORT int moor_debug_dump_refs(const void *obj, FILE *f);

/*
 * moor_debug_fail_alloc - fault injection for allocation-failure tests.
 *
 * After this call, the @nth allocation moor makes (1 = the next one) fails
 * as if malloc had returned NULL; 0 turns injection off. Only one failure is
 * injected per call. Counting is process-wide: use it from single-threaded
 * tests. Locks: none. Blocks: never. Returns: nothing.
 */
MOOR_EXPORT void moor_debug_fail_alloc(unsigned long nth);

#ifdef __cplusplus
}
#endif

#endif /* MOOR_DEBUG_H */
