/* SPDX-License-Identifier: MIT */
/*
 * ref.c - slow paths of the saturating reference count.
 *
 * Theory of operation: the inline fast paths in ref.h do one atomic RMW and
 * test the old value. Anything outside 1..INT_MAX-1 lands here. The counter
 * is then stored as MOOR_REFCNT_SATURATED, which is ~2^30 steps away from
 * both zero and overflow: racing threads that keep incrementing or
 * decrementing a saturated counter cannot bring it back to zero in any
 * realistic time, so the guarded object is never freed by a miscount. Only
 * the transition into saturation is reported; a counter found already near
 * MOOR_REFCNT_SATURATED is re-parked silently ("reported once").
 */
#include <errno.h>
#include <stdio.h>

#include <moor/debug.h>
#include <moor/ref.h>

/* Width of the band around MOOR_REFCNT_SATURATED treated as "already
 * saturated": far wider than any number of racing threads. */
#define SATURATED_BAND (1 << 28)

static bool already_saturated(int old)
{
    return old < MOOR_REFCNT_SATURATED + SATURATED_BAND &&
           old > MOOR_REFCNT_SATURATED - SATURATED_BAND;
}

static moor_misuse classify(int old, int op)
{
    if (old == 0)
        return op == MOOR__REF_OP_DEC ? MOOR_MISUSE_REF_UNDERFLOW : MOOR_MISUSE_REF_INC_FROM_ZERO;
    if (op == MOOR__REF_OP_DEC && old < 0 && old > -SATURATED_BAND)
        return MOOR_MISUSE_REF_UNDERFLOW;
    return MOOR_MISUSE_REF_OVERFLOW;
}

static const char *describe(moor_misuse what)
{
    switch (what) {
    case MOOR_MISUSE_REF_INC_FROM_ZERO:
        return "reference taken on a counter already at zero (use after the last unref)";
    case MOOR_MISUSE_REF_UNDERFLOW:
        return "reference dropped below zero (one unref too many)";
    default:
        return "reference count overflow";
    }
}

void moor__refcnt_misuse(moor_refcnt *r, int old, int op)
{
    /* relaxed: the value only parks the counter; no data is published. */
    atomic_store_explicit(&r->count, MOOR_REFCNT_SATURATED, memory_order_relaxed);
    if (already_saturated(old))
        return;

    moor_misuse what = classify(old, op);
    moor_debug_report(what, r, "refcount %p: %s; saturated, the object will leak (was %d)",
                      (void *)r, describe(what), old);
}

bool moor_refcnt_dec_and_lock(moor_refcnt *r, pthread_mutex_t *mutex)
{
    /* relaxed load: the CAS below re-validates; see ref.h for the rest. */
    int old = atomic_load_explicit(&r->count, memory_order_relaxed);

    /* Fast path: not the last reference, drop it without the mutex. */
    while (old > 1) {
        /* release: as moor_refcnt_dec_and_test(). */
        if (atomic_compare_exchange_weak_explicit(&r->count, &old, old - 1, memory_order_release,
                                                  memory_order_relaxed))
            return false;
    }

    /* Possibly the last: decide under the mutex, so that anyone finding the
     * object through a structure guarded by @mutex sees it either alive or
     * already unreachable. */
    pthread_mutex_lock(mutex);
    if (moor_refcnt_dec_and_test(r))
        return true;
    pthread_mutex_unlock(mutex);
    return false;
}
