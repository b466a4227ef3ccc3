/* SPDX-License-Identifier: MIT */
/*
 * moor/lockcnt.h - lock counter: a visit count and a mutex that know about
 * each other.
 *
 * A shared structure that is read far more often than it changes (a list of
 * handlers, a table of callbacks) can be read without a lock if readers
 * announce themselves and writers never free anything while someone is
 * reading. A moor_lockcnt is the announcement board: readers bracket each
 * visit with moor_lockcnt_inc()/moor_lockcnt_dec(); writers take the mutex
 * with moor_lockcnt_lock(). The two halves obey two rules, and every
 * function below exists to keep them:
 *
 *   1. Data guarded by a lock counter may be freed only by a thread that
 *      holds its mutex while the count is zero.
 *   2. A new visit cannot begin while the count is zero and the mutex is
 *      held by a thread that has seen it at zero - by taking the mutex at
 *      count zero, by a true moor_lockcnt_dec_and_lock() or
 *      moor_lockcnt_dec_if_lock(), or by reading moor_lockcnt_count() == 0
 *      under the mutex: moor_lockcnt_inc() waits for the unlock then. (A
 *      visit that begins after the count dropped to zero under the mutex
 *      but before the holder looked is simply counted, and the holder sees
 *      a count of one.)
 *
 * Visits nest (a callback may start a visit of the structure it is being
 * called from) and may come from any number of threads; the count is simply
 * the number of visits in progress. The mutex may be taken by a visitor;
 * holding it never waits for the count to drop, so a visitor that locks
 * cannot deadlock against other visitors.
 *
 * Readers still need the data itself to be published safely: writers store
 * pointers with release stores and readers load them with acquire loads (the
 * RCU idiom without RCU). moor/vlist.h packages this for the common case of
 * a list.
 *
 * Two implementations, same semantics, chosen per counter at init time:
 *
 *   MOOR_LOCKCNT_FUTEX     (Linux) the count, a three-state lock and a
 *                          "closed" bit share one 32-bit word; waiting uses
 *                          a futex. Starting a visit is one fetch-add of
 *                          that word, ending it one fetch-sub: the atomic
 *                          read-modify-writes of a bare atomic counter,
 *                          with no load before them (docs/lockcnt.md,
 *                          "Cost", has the measured figures).
 *   MOOR_LOCKCNT_PORTABLE  a pthread mutex beside an atomic count. Its
 *                          word is only a marker that sends the inline
 *                          inc and dec out of line (see the struct).
 *
 * moor_lockcnt_init() uses the one the library was built to prefer (the
 * futex word unless built with -Dportable_lockcnt=true or on a system
 * without futexes); moor_lockcnt_init_impl() picks one explicitly, which
 * is how tests and benchmarks run both in one process.
 *
 * Ordering, once for the whole file (each function repeats only its own):
 *   inc            acquire: a visitor sees everything written before the
 *                  last unlock of the mutex (pairs with unlock's release),
 *                  in particular that a freed node is no longer linked.
 *   dec            release: everything this visitor read happens-before a
 *                  free done later by a thread that saw the count at zero.
 *   lock           acquire, unlock release: an ordinary mutex.
 *   count          acquire: a zero read under the mutex orders the reads of
 *                  every finished visit before the caller's frees.
 *
 * A moor_lockcnt is embeddable and caller-allocated. It is not for sharing
 * between processes. The count is limited to 2^28 simultaneous visits.
 *
 * Misuse is reported through moor_debug_report(), never ignored and never
 * left to corrupt the word: an unmatched end of visit (dec, dec_and_lock,
 * dec_if_lock at count zero) is MOOR_MISUSE_LOCKCNT_UNDERFLOW and leaves
 * the count at zero with the lock state untouched; a begin of visit at the
 * limit is MOOR_MISUSE_REF_OVERFLOW and is refused (the count stays at the
 * limit), on every path of both implementations: the futex word's inline
 * inc tests the value its fetch-add returned and takes the increment back,
 * the portable inc compares before its CAS (docs/lockcnt.md, "The limit of
 * 2^28 visits", says why the futex word never wraps); destroying
 * a counter that is locked or visited is MOOR_MISUSE_DISPOSE_LOCKED and
 * leaves it as it was. The inline fast paths pay one test-and-branch for
 * this at most; the report and the repair are out of line.
 */
#ifndef MOOR_LOCKCNT_H
#define MOOR_LOCKCNT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <moor/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Which implementation a counter uses. */
typedef enum moor_lockcnt_impl {
    MOOR_LOCKCNT_DEFAULT = 0,  /* the library's build-time choice */
    MOOR_LOCKCNT_FUTEX = 1,    /* count + lock in one futex word (Linux) */
    MOOR_LOCKCNT_PORTABLE = 2, /* pthread mutex + atomic count */
} moor_lockcnt_impl;

/*
 * The fields are private; the layout is public so that the counter can be
 * embedded and its fast paths inlined. One set of inline functions serves
 * both implementations without telling them apart first: the inline inc
 * and dec are a blind fetch-add and fetch-sub of ONE on @word, and the
 * value they return sends them out of line when it is not an ordinary
 * futex word.
 *
 * Futex word: @word holds the count in bits 3..31, CLOSED in bit 2 and the
 * lock state (free, locked, locked with sleepers) in bits 0..1.
 *
 * Portable: the count is @pcount (a plain number of visits) and the lock
 * is @mutex; @sleepers is its tally of waiters. Its @word has bits 0..2
 * all set (the state 3 that no futex word has, and CLOSED), which adding
 * or subtracting multiples of ONE can never change; bits 3..31 are junk:
 * the inline inc adds ONE there, the inline dec subtracts it, and nothing
 * ever reads them, so their value (even wrapped) does not matter. CLOSED
 * sends every inline inc and dec out of line, to the portable code on
 * @pcount; the inline count() reads @pcount when it sees the marker.
 */
typedef struct moor_lockcnt {
    _Atomic uint32_t word;   /* futex word, or the portable marker + junk */
    _Atomic uint32_t pcount; /* portable: visits in progress */
    atomic_uint sleepers;    /* portable: threads waiting for @mutex */
    pthread_mutex_t mutex;   /* portable: the lock */
} moor_lockcnt;

/* Internal: the layout of @word and the out-of-line slow paths. Exported
 * only for the inline functions; not API. */
#define MOOR__LOCKCNT_STATE    3u          /* mask of the lock-state bits */
#define MOOR__LOCKCNT_PORTABLE 3u          /* state bits of a portable counter */
#define MOOR__LOCKCNT_CLOSED   4u          /* futex: locked and seen at count 0 */
#define MOOR__LOCKCNT_SHIFT    3           /* the count is @word >> SHIFT */
#define MOOR__LOCKCNT_ONE      8u          /* one visit */
#define MOOR__LOCKCNT_LIMIT    0x80000000u /* count 2^28: no visit beyond */
/* The inline inc's fetch-add returned @old with CLOSED or LIMIT set: a
 * portable counter (its inc, on @pcount), or a futex word that is closed
 * (wait for the unlock) or at the limit (refuse). */
MOOR_EXPORT void moor__lockcnt_inc_wait(moor_lockcnt *lc, uint32_t old);
/* The inline dec's fetch-sub returned @old with (old - ONE) & (LIMIT |
 * CLOSED) set: a portable counter (its dec, on @pcount), a futex word with
 * no visit to end (misuse: undone and reported), or a futex word above the
 * limit while refused increments are in flight (an ordinary end). */
MOOR_EXPORT void moor__lockcnt_dec_slow(moor_lockcnt *lc, uint32_t old);
/* Futex word locked at count 0 but not yet closed: close it; the count. */
MOOR_EXPORT unsigned moor__lockcnt_close(moor_lockcnt *lc);

/*
 * moor_lockcnt_init - prepare @lc with the build's default implementation:
 * count zero, unlocked.
 *
 * Not atomic with respect to other users of @lc: call it before @lc is
 * published. Ownership: @lc is the caller's storage; undo with
 * moor_lockcnt_destroy(). Locks: none. Blocks: never. Context: any thread.
 * Returns: nothing (cannot fail; @lc must not be NULL).
 */
MOOR_EXPORT void moor_lockcnt_init(moor_lockcnt *lc);

/*
 * moor_lockcnt_init_impl - as moor_lockcnt_init(), with @impl chosen by the
 * caller (MOOR_LOCKCNT_DEFAULT behaves as moor_lockcnt_init()).
 *
 * Returns: 0; -EINVAL if @lc is NULL or @impl unknown; -ENOTSUP for
 * MOOR_LOCKCNT_FUTEX on a system without futexes. On failure @lc is
 * untouched.
 * Ownership, Locks, Blocks: as moor_lockcnt_init() (none; never).
 */
MOOR_EXPORT int moor_lockcnt_init_impl(moor_lockcnt *lc, moor_lockcnt_impl impl);

/*
 * moor_lockcnt_default_impl - the implementation moor_lockcnt_init() picks
 * in this build (never MOOR_LOCKCNT_DEFAULT).
 * Ownership: nothing to free. Locks: none. Blocks: never.
 * Returns: MOOR_LOCKCNT_FUTEX or MOOR_LOCKCNT_PORTABLE.
 */
MOOR_EXPORT moor_lockcnt_impl moor_lockcnt_default_impl(void);

/*
 * moor_lockcnt_get_impl - the implementation @lc was initialised with
 * (never MOOR_LOCKCNT_DEFAULT). Blocks: never.
 * Ownership: nothing to free. Locks: none.
 * Returns: MOOR_LOCKCNT_FUTEX or MOOR_LOCKCNT_PORTABLE.
 */
MOOR_EXPORT moor_lockcnt_impl moor_lockcnt_get_impl(const moor_lockcnt *lc);

/*
 * moor_lockcnt_destroy - release what moor_lockcnt_init() set up.
 *
 * NULL-safe. @lc must be idle: count zero, unlocked, nobody waiting.
 * Misuse: destroying a counter that is locked or has visits in progress is
 * reported (MOOR_MISUSE_DISPOSE_LOCKED) and destroys nothing; @lc stays
 * usable, so the caller can finish with it and destroy it again.
 * Ownership: @lc's storage stays the caller's (only the portable mutex is
 * destroyed). Locks: the caller must not hold the mutex. Blocks: never.
 * Returns: nothing (misuse is reported, not returned).
 */
MOOR_EXPORT void moor_lockcnt_destroy(moor_lockcnt *lc);

/*
 * moor_lockcnt_inc - begin a visit.
 *
 * Locks: may be called with or without @lc's mutex held by the caller, but
 * a caller holding it once the count has been seen at zero waits for
 * itself forever (use moor_lockcnt_inc_and_unlock() for that case).
 * Misuse: a visit beyond the limit of 2^28 is reported
 * (MOOR_MISUSE_REF_OVERFLOW) and not counted; the count never wraps.
 * Blocks: only while the mutex is held by a thread that has seen the count
 * at zero (rule 2), until that thread unlocks. Never otherwise: with other
 * visits in progress, the increment proceeds even if the mutex is held.
 * Ordering: acquire (see the file comment).
 * Cost, futex word: one fetch-add and one test-and-branch when not waiting
 * (no load of the word first). Portable: that fetch-add of the marker word,
 * then out of line one load, one compare and one compare-and-swap of the
 * count when it is above zero and below the limit.
 */
static inline void moor_lockcnt_inc(moor_lockcnt *lc)
{
    /* acquire: see the file comment (a portable counter's acquire is its
     * out-of-line increment of @pcount). */
    uint32_t old = atomic_fetch_add_explicit(&lc->word, MOOR__LOCKCNT_ONE, memory_order_acquire);

    /* Entered unless the futex word was closed by its holder (we queue and
     * enter at its unlock) or at its limit (refused), or the word is a
     * portable counter's (CLOSED is part of its marker). */
    if (MOOR_LIKELY(!(old & (MOOR__LOCKCNT_CLOSED | MOOR__LOCKCNT_LIMIT))))
        return;
    moor__lockcnt_inc_wait(lc, old);
}

/*
 * moor_lockcnt_dec - end a visit, without ever taking the mutex.
 *
 * Use it when reaching zero needs no clean-up; otherwise use
 * moor_lockcnt_dec_and_lock() or moor_lockcnt_dec_if_lock().
 * Locks: none needed; may be called with the mutex held.
 * Blocks: never. Ordering: release. Cost, futex word: one atomic
 * read-modify-write and one compare-and-branch; portable: the same on the
 * marker word, then one fetch-sub of the count out of line.
 * Misuse: the caller must be in a visit; an unmatched dec (count already
 * zero) is reported as MOOR_MISUSE_LOCKCNT_UNDERFLOW and undone, leaving
 * the count at zero and the lock as it was.
 */
static inline void moor_lockcnt_dec(moor_lockcnt *lc)
{
    /* release: see the file comment (portable: its out-of-line decrement
     * of @pcount). */
    uint32_t old = atomic_fetch_sub_explicit(&lc->word, MOOR__LOCKCNT_ONE, memory_order_release);

    /* One test for: no visit to end (old < ONE wraps to bit 31), a closed
     * futex word (no visit is in progress then) or a portable marker (CLOSED
     * set), and a futex count above the limit (refused increments in
     * flight; an ordinary end). Subtracting ONE keeps bits 0..2. */
    if (MOOR_UNLIKELY((old - MOOR__LOCKCNT_ONE) & (MOOR__LOCKCNT_LIMIT | MOOR__LOCKCNT_CLOSED)))
        moor__lockcnt_dec_slow(lc, old);
}

/*
 * moor_lockcnt_dec_and_lock - end a visit; if it was the last one, return
 * with the mutex held.
 *
 * Locks: the caller must not hold the mutex. On true, the caller holds it,
 * the count is zero, and it stays zero until the caller unlocks (rule 2), so
 * the caller may free what visitors could have seen; it must then call
 * moor_lockcnt_unlock() or moor_lockcnt_inc_and_unlock(). On false, the
 * visit has ended and nothing is held.
 * Blocks: only when this may be the last visit and another thread holds
 * the mutex; then it waits for the mutex with the visit still counted, and
 * returns false if other visits began meanwhile.
 * Ordering: release for the visit being ended; acquire when returning true
 * (pairs with every other visitor's release dec).
 * Returns: true with the mutex held and count zero, false otherwise.
 * Misuse: at count zero (no visit to end) it is reported as
 * MOOR_MISUSE_LOCKCNT_UNDERFLOW, changes nothing and returns false.
 */
MOOR_EXPORT bool moor_lockcnt_dec_and_lock(moor_lockcnt *lc);

/*
 * moor_lockcnt_dec_if_lock - end a visit only if it is the last one, and
 * then return with the mutex held; otherwise change nothing.
 *
 * For visitors that want to clean up in the middle of a walk: on true the
 * caller holds the mutex at count zero and may free; it then resumes its
 * visit with moor_lockcnt_inc_and_unlock(). On false the caller is still
 * visiting, exactly as before.
 * Locks: the caller must not hold the mutex. Blocks: as
 * moor_lockcnt_dec_and_lock(). Ordering: as moor_lockcnt_dec_and_lock().
 * Returns: true (count now zero, mutex held) or false (count unchanged by
 * this call, nothing held).
 * Misuse: as moor_lockcnt_dec_and_lock().
 */
MOOR_EXPORT bool moor_lockcnt_dec_if_lock(moor_lockcnt *lc);

/*
 * moor_lockcnt_lock - take the mutex.
 *
 * It does not wait for visits to end: visits already in progress continue,
 * and new ones may still start while the count is above zero. Check
 * moor_lockcnt_count() under the mutex before freeing (rule 1). Taken at
 * count zero, the mutex holder has seen the zero (rule 2): new visits wait
 * for the unlock.
 * Locks: not recursive; the caller must not hold it already.
 * Blocks: until the current holder unlocks (no deadline: holders keep it
 * for short, non-blocking sections). Ordering: acquire.
 * Ownership: on return the caller holds the mutex; release it with
 * moor_lockcnt_unlock() or moor_lockcnt_inc_and_unlock(). Returns: nothing.
 */
MOOR_EXPORT void moor_lockcnt_lock(moor_lockcnt *lc);

/*
 * moor_lockcnt_unlock - release the mutex; wakes the threads waiting for it
 * in moor_lockcnt_lock() and those waiting to begin a visit (whose visits
 * begin at this unlock).
 *
 * Locks: the caller must hold the mutex. Blocks: never (one futex wake or
 * pthread unlock). Ordering: release.
 * Ownership: the caller gives up the mutex. Returns: nothing.
 */
MOOR_EXPORT void moor_lockcnt_unlock(moor_lockcnt *lc);

/*
 * moor_lockcnt_inc_and_unlock - begin a visit and release the mutex in one
 * step, so that nothing can be freed between the two.
 *
 * The counterpart of a true moor_lockcnt_dec_if_lock() (or of
 * moor_lockcnt_lock() by a thread that wants to visit what it just
 * changed). Locks: the caller must hold the mutex. Blocks: never.
 * Ordering: release (the caller already saw everything through the mutex).
 * Ownership: the caller gives up the mutex and is now in a visit, which it
 * ends with a moor_lockcnt_dec*() call. Returns: nothing.
 */
MOOR_EXPORT void moor_lockcnt_inc_and_unlock(moor_lockcnt *lc);

/*
 * moor_lockcnt_count - the number of visits in progress.
 *
 * Exact and stable only for a zero read by the holder of the mutex (nobody
 * can start a visit then); anything else is a snapshot for assertions and
 * reports. On the futex word, a zero read while the mutex is held (by
 * anyone) closes the word if it is not closed yet - one compare-and-swap,
 * out of line - which is what makes that zero stable (rule 2); visits that
 * try to begin while it is closed are queued, not counted here.
 * Locks: none needed. Blocks: never. Ordering: acquire.
 */
static inline unsigned moor_lockcnt_count(const moor_lockcnt *lc)
{
    /* acquire: see the file comment. */
    uint32_t v = atomic_load_explicit((_Atomic uint32_t *)&lc->word, memory_order_acquire);

    /* Futex word locked with no visit, not yet closed (the last visit
     * ended with moor_lockcnt_dec() under the lock): seeing the zero is
     * what closes it, out of line. */
    if (MOOR_UNLIKELY(v - 1u < 2u))
        return moor__lockcnt_close((moor_lockcnt *)lc);
    if (MOOR_LIKELY(!(v & MOOR__LOCKCNT_CLOSED)))
        return v >> MOOR__LOCKCNT_SHIFT;
    /* Closed futex word: the count bits are visits queued for the unlock,
     * not yet begun. Portable marker: the count is @pcount; acquire: see
     * the file comment. */
    if ((v & MOOR__LOCKCNT_STATE) != MOOR__LOCKCNT_PORTABLE)
        return 0;
    return atomic_load_explicit((_Atomic uint32_t *)&lc->pcount, memory_order_acquire);
}

/*
 * moor_lockcnt_has_waiters - whether some thread has announced that it is
 * waiting (or about to wait) for @lc's mutex, in moor_lockcnt_lock() or in
 * moor_lockcnt_inc() at count zero.
 *
 * A diagnostic for tests and reports: it can be stale, and for the futex
 * implementation it stays true until the next unlock even if the waiter has
 * left. Locks: none. Blocks: never. Ordering: relaxed.
 * Ownership: nothing to free. Returns: true if a waiter is announced.
 */
MOOR_EXPORT bool moor_lockcnt_has_waiters(const moor_lockcnt *lc);

#ifdef __cplusplus
}
#endif

#endif /* MOOR_LOCKCNT_H */
