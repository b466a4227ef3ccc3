/* SPDX-License-Identifier: MIT */
/*
 * moor/ref.h - saturating atomic reference count.
 *
 * A moor_refcnt is one atomic int, embeddable in any struct. It counts
 * owners: the thing it guards is freed by whoever takes it from 1 to 0.
 *
 * Misuse never frees twice. Incrementing from zero (a use after the last
 * owner left), decrementing below zero (an unref too many) and overflowing
 * past INT_MAX all park the counter at MOOR_REFCNT_SATURATED, far from zero,
 * and send one report through moor_debug_report(). A saturated counter
 * stays saturated: the guarded object leaks instead of being freed while a
 * miscounted owner still uses it, and later operations on it stay silent.
 *
 * The fast paths are inline: one atomic read-modify-write plus a
 * compare-and-branch each.
 *
 * Ordering, once for the whole file:
 *   inc           relaxed: a new owner can only come from an existing one,
 *                 which already orders its view of the object.
 *   dec           release: this owner's writes to the object happen-before
 *                 the free done by the last owner.
 *   dec to zero   acquire fence: the freeing thread sees every other
 *                 owner's writes (pairs with their release decrements).
 *   inc_not_zero  relaxed on success: callers reach the counter through a
 *                 publication (RCU, a lock) that already orders the rest.
 */
#ifndef MOOR_REF_H
#define MOOR_REF_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <moor/export.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moor_refcnt {
    atomic_int count;
} moor_refcnt;

/* Where a misused counter is parked: half-way to INT_MIN, so that neither
 * racing increments nor racing decrements can walk it back to zero. */
#define MOOR_REFCNT_SATURATED (INT_MIN / 2)

/* A counter owned by its creator. */
#define MOOR_REFCNT_INIT                                                                           \
    {                                                                                              \
        1                                                                                          \
    }

/* Which operation met a bad counter; passed to the out-of-line slow path. */
enum { MOOR__REF_OP_INC, MOOR__REF_OP_DEC, MOOR__REF_OP_INC_NOT_ZERO };

/* Internal: saturate and report. Exported only for the inline fast paths;
 * not part of the API. */
MOOR_EXPORT void moor__refcnt_misuse(moor_refcnt *r, int old, int op);

/*
 * moor_refcnt_init - set @r to 1, owned by the caller.
 * Not atomic with respect to other users of @r: call before publishing @r.
 */
static inline void moor_refcnt_init(moor_refcnt *r)
{
    atomic_init(&r->count, 1);
}

/*
 * moor_refcnt_inc - add an owner. The caller must already own one.
 *
 * Locks: none. Blocks: never. Context: any thread.
 * Misuse: @r at 0 or INT_MAX is saturated and reported once.
 */
static inline void moor_refcnt_inc(moor_refcnt *r)
{
    /* relaxed: see the file comment. */
    int old = atomic_fetch_add_explicit(&r->count, 1, memory_order_relaxed);

    /* One unsigned compare catches 0, negative and INT_MAX. */
    if (MOOR_UNLIKELY((unsigned)old - 1u >= (unsigned)INT_MAX - 1u))
        moor__refcnt_misuse(r, old, MOOR__REF_OP_INC);
}

/*
 * moor_refcnt_inc_not_zero - add an owner unless the count reached zero.
 *
 * For lock-free lookups and weak references: the caller does not own a
 * reference and has only made sure the memory of @r is still there (RCU
 * read side, a lock the freeing path also takes).
 * Locks: none. Blocks: never (a CAS loop that retries only when another
 * thread changed the count).
 * Returns: true if the caller now owns a reference. A saturated counter
 * counts as alive (it leaks and stays readable).
 */
static inline bool moor_refcnt_inc_not_zero(moor_refcnt *r)
{
    /* relaxed load and CAS: see the file comment. */
    int old = atomic_load_explicit(&r->count, memory_order_relaxed);

    do {
        if (old == 0)
            return false;
        if (MOOR_UNLIKELY(old < 0 || old == INT_MAX)) {
            moor__refcnt_misuse(r, old, MOOR__REF_OP_INC_NOT_ZERO);
            return true;
        }
    } while (!atomic_compare_exchange_weak_explicit(&r->count, &old, old + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

/*
 * moor_refcnt_dec_and_test - drop an owner; true if it was the last.
 *
 * On true, the caller is the only thread that may touch the guarded data
 * and must free it. Locks: none. Blocks: never. Context: any thread.
 * Misuse: dropping below zero is saturated, reported, and returns false.
 */
static inline bool moor_refcnt_dec_and_test(moor_refcnt *r)
{
#ifdef MOOR_TSAN
    /* TSan does not model the fence below; acq_rel gives it the same
     * happens-before edges at a cost that only instrumented builds pay. */
    int old = atomic_fetch_sub_explicit(&r->count, 1, memory_order_acq_rel);
#else
    /* release: see the file comment. */
    int old = atomic_fetch_sub_explicit(&r->count, 1, memory_order_release);
#endif

    if (MOOR_LIKELY(old > 1))
        return false;
    if (old == 1) {
        /* acquire: see the file comment. */
        atomic_thread_fence(memory_order_acquire);
        return true;
    }
    moor__refcnt_misuse(r, old, MOOR__REF_OP_DEC);
    return false;
}

/*
 * moor_refcnt_dec_and_lock - drop an owner; if it was the last, return
 * true with @mutex locked.
 *
 * For containers that must unlink an object before freeing it: the count
 * can only reach zero under @mutex, so a lookup holding @mutex either
 * finds the count above zero or does not find the object. Non-final drops
 * never touch @mutex.
 *
 * Locks: @mutex must not be held by the caller. On true, the caller holds
 * it and must unlock it. Blocks: on @mutex, only when the count is 1.
 * Ordering: as moor_refcnt_dec_and_test(), plus the mutex's own.
 * Misuse: as moor_refcnt_dec_and_test(); returns false, mutex not held.
 */
MOOR_EXPORT bool moor_refcnt_dec_and_lock(moor_refcnt *r, pthread_mutex_t *mutex);

/*
 * moor_refcnt_read - the current count, for assertions and reports only:
 * it may be stale by the time the caller looks at it.
 * Ordering: relaxed. Locks: none. Blocks: never.
 */
static inline int moor_refcnt_read(const moor_refcnt *r)
{
    /* relaxed: a snapshot for diagnostics, not a synchronisation point. */
    return atomic_load_explicit((atomic_int *)&r->count, memory_order_relaxed);
}

/*
 * moor_refcnt_is_saturated - whether @r was parked by a misuse report.
 */
static inline bool moor_refcnt_is_saturated(const moor_refcnt *r)
{
    return moor_refcnt_read(r) < 0;
}

#ifdef __cplusplus
}
#endif

#endif /* MOOR_REF_H */
