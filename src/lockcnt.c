/* SPDX-License-Identifier: MIT */
/*
 * lockcnt.c - the lock counter's slow paths, in two implementations.
 *
 * Theory of operation.
 *
 * The inline fast paths in lockcnt.h are shared by both implementations
 * and do not tell them apart before they act: a visit begins with a blind
 * fetch-add of ONE on lc->word and ends with a blind fetch-sub, and the
 * value returned decides whether to go out of line. Bits 0..2 of the word:
 *
 *     0  FREE      futex: unlocked
 *     1  LOCKED    futex: locked, nobody asleep on the word
 *     2  SLEEPERS  futex: locked, and some thread may be asleep on the word
 *     3  PORTABLE  portable: the lock is lc->mutex; these bits never change
 *     4  CLOSED    futex, with LOCKED or SLEEPERS: the holder has seen the
 *                  count at zero; portable: always set, with PORTABLE
 *
 * A futex word keeps its visit count in bits 3..31. A portable counter
 * keeps it in lc->pcount; its word is the marker 7 (PORTABLE | CLOSED)
 * plus junk in bits 3..31 (see "Portable" below).
 *
 * Futex word: beginning a visit. A visit begins with one fetch-add of ONE,
 * whatever the word holds; the value it returns says whether the visit
 * has begun. It has unless the word was CLOSED. CLOSED is "locked, and
 * the holder has seen the count at zero", and every transition into that
 * state sets it in the same atomic step as the transition:
 *
 *   - lock taking a free word with count zero;
 *   - dec_and_lock and dec_if_lock taking the last visit and the lock
 *     (when the lock is free: one CAS; when it is held: after waiting for
 *     it with the visit still counted, one CAS ends the visit and closes);
 *   - moor_lockcnt_count() finding "locked, count zero, not closed" (the
 *     last visit ended with a plain dec under the lock): it closes the
 *     word with a CAS before it returns zero (moor__lockcnt_close()).
 *
 * Only unlock and inc_and_unlock clear it. So a holder that concluded
 * "zero" has CLOSED set, and no increment can begin a visit until the
 * unlock - rule 2 where it matters. An increment that finds CLOSED is not
 * undone: it stays in the count as a queued visit, and the thread waits
 * (as any waiter: marks SLEEPERS, sleeps on the word) until CLOSED is
 * clear; at that moment its visit has begun, ordered after the unlock. While
 * CLOSED is set, the count bits are exactly the queued visits (there are
 * no real ones), so moor_lockcnt_count() reports zero. Nothing can close
 * the word again while a queued increment is in the count, since closing
 * needs count bits of zero; so a queued thread that sees CLOSED clear is
 * never looking at a later closed period. Without the bit - undoing the
 * increment when it found "count 0, locked", and trusting a plain zero -
 * the undone increment's transient count of one lets a third thread's
 * increment see "count 1" and begin a visit while the holder frees:
 * models/lockcnt.pml has that variant (BROKEN_UNDO) and spin finds it.
 *
 * A visit may begin while the word is "locked, count zero, not closed":
 * the holder has not concluded anything yet, and when it looks it sees the
 * new visit. Two consequences: the holder's zero check must be the closing
 * count read (BROKEN_COUNT_NO_CLOSE in the model shows what happens
 * otherwise), and a holder that wants to free has to look.
 *
 * Futex word: the lock. Every change is one atomic read-modify-write of the
 * word, so the count, CLOSED and the lock state are always seen together.
 * A thread that must wait - for the lock, or for CLOSED to clear - first
 * moves LOCKED to SLEEPERS and then sleeps with FUTEX_WAIT on the value it
 * wrote; if the word changed in between, the kernel refuses to sleep and
 * the thread looks again. Unlock clears the state bits and CLOSED (keeping
 * the count, which now counts the queued visits as begun) in one fetch-and,
 * and if it saw SLEEPERS it wakes every sleeper. Waking all rather than
 * one is deliberate: the sleepers are of two kinds, lock waiters (of whom
 * only one can win) and queued visits (which can all proceed at once), and
 * two bits cannot say which kind is asleep. Contention is rare by design of
 * the users, and a woken thread that loses simply marks SLEEPERS again. A
 * thread that won after sleeping takes the lock as plain LOCKED: every
 * thread that was asleep at the unlock is being woken by it, and anyone who
 * goes to sleep later has to mark SLEEPERS first (its FUTEX_WAIT value
 * includes it). So the invariant "a thread asleep on the word implies the
 * state is SLEEPERS" holds and no wakeup is lost; models/lockcnt.pml checks
 * this protocol exhaustively with three threads.
 *
 * Because the lock state and the count share the word, count changes make
 * a pending FUTEX_WAIT return early (the value differs); waiters loop, so
 * that only costs a retry. Happens-before never relies on the futex: a
 * woken thread re-reads the word with an acquire load or takes the lock
 * with an acquire CAS, and every change of the word is a read-modify-write
 * (so each unlock's release sequence reaches every later read), which
 * ThreadSanitizer understands without annotations.
 *
 * Portable. The count is lc->pcount, a plain number of visits; the lock
 * is a pthread mutex. Leaving the count at zero or starting a visit at
 * zero happens only under the mutex, which gives both rules; everything
 * else is lock-free: a visit begins with a load and a CAS that adds one to
 * a count above zero (a blind fetch-add would need the futex word's CLOSED
 * scheme, which the portable counter deliberately does not have: it stays
 * the simple reference), and ends with a fetch-sub. @sleepers counts
 * threads that found the mutex busy, only for moor_lockcnt_has_waiters().
 *
 * Its word exists only so that the inline functions need no test before
 * their read-modify-write. It is initialised to the marker PORTABLE |
 * CLOSED, and exactly two operations ever change it afterwards: the inline
 * inc adds ONE, the inline dec subtracts ONE. Nothing else touches it (the
 * portable code below works on lc->pcount only), and nothing reads bits
 * 3..31: they are junk. Balance is not needed: adding or subtracting ONE
 * (8) never changes bits 0..2, whatever the junk and however it wraps, so
 * the marker is permanent. That is what the design rests on, and why the
 * marker includes CLOSED rather than relying on the LIMIT bit, which a
 * junk carry could clear: with it in the marker, the inline inc's test
 * (CLOSED | LIMIT) and the inline dec's test ((old - ONE) & (CLOSED |
 * LIMIT)) are true for every portable word, which goes out of line to the
 * code on lc->pcount; moor_lockcnt_count() reads lc->pcount when it sees
 * CLOSED with state PORTABLE, get_impl() and has_waiters() read the state
 * bits. The orderings of the portable counter are those of its operations
 * on lc->pcount (acquire inc, release dec, ...); the junk RMWs carry none
 * that anyone relies on. (A transient +1 in the junk does not affect
 * anyone: nobody reads it as a count, unlike the bug of issue 16.)
 *
 * Misuse. Counting is modular. On the futex word a visit is +ONE and -ONE,
 * and the count occupies the top 29 bits, so a carry or borrow out of the
 * count leaves CLOSED and the state bits alone. An unmatched
 * moor_lockcnt_dec() (its fetch-sub saw a count of zero, or a closed word,
 * whose count bits are only queued visits) therefore took one from the
 * count bits and kept the rest; adding ONE back undoes exactly that one
 * decrement whatever else happened to the word meanwhile, so the repair is
 * a plain fetch-add rather than a store that could erase a racing visit or
 * lock. The portable dec does the same on lc->pcount. dec_and_lock and
 * dec_if_lock check before they change anything, so they only report. The
 * limit is 2^28 visits, bit 31 of the futex word: its inline inc tests it
 * in the value its fetch-add returns (the same test as CLOSED) and
 * inc_wait takes the increment back; a carry out of the count could only
 * come from 2^28 more refused increments in flight at once, and a process
 * has at most 2^22 threads (docs/lockcnt.md). While refused increments are
 * in flight the count bits can exceed the limit, so the inline dec's test
 * sends those decrements out of line too, where they are ordinary ends of
 * visits. The portable inc compares against the limit before its CAS and
 * refuses to pass it: a portable count never exceeds it.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <limits.h>

#include <moor/debug.h>
#include <moor/lockcnt.h>

#include "lockdep-internal.h"
#include "introspect-internal.h" /* watchdog records of sleeps */

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#define HAVE_FUTEX 1
#else
#define HAVE_FUTEX 0
#endif

#define ONE    MOOR__LOCKCNT_ONE
#define CLOSED MOOR__LOCKCNT_CLOSED
#define LIMIT  MOOR__LOCKCNT_LIMIT
/* The limit in visits, for the portable count. */
#define PORTABLE_LIMIT (LIMIT >> MOOR__LOCKCNT_SHIFT)

enum { FREE = 0, LOCKED = 1, SLEEPERS = 2, PORTABLE = MOOR__LOCKCNT_PORTABLE };

/* Which operation met a bad counter, for the report. */
enum { OP_DEC, OP_DEC_AND_LOCK, OP_DEC_IF_LOCK };

static inline uint32_t state_of(uint32_t v)
{
    return v & MOOR__LOCKCNT_STATE;
}

/* The count, in place (a multiple of ONE): for a closed futex word, the
 * visits queued for the unlock. */
static inline uint32_t count_bits(uint32_t v)
{
    return v & ~(MOOR__LOCKCNT_STATE | CLOSED);
}

static inline uint32_t load_relaxed(moor_lockcnt *lc)
{
    /* relaxed: every caller feeds the value to a CAS that re-validates it,
     * or only tests the never-changing implementation marker. */
    return atomic_load_explicit(&lc->word, memory_order_relaxed);
}

static inline uint32_t load_pcount_relaxed(moor_lockcnt *lc)
{
    /* relaxed: every caller feeds the value to a CAS that re-validates it,
     * or to a decision that the CAS or the mutex then re-validates. */
    return atomic_load_explicit(&lc->pcount, memory_order_relaxed);
}

static inline bool is_portable(moor_lockcnt *lc)
{
    return state_of(load_relaxed(lc)) == PORTABLE;
}

static const char *op_name(int op)
{
    switch (op) {
    case OP_DEC:
        return "moor_lockcnt_dec";
    case OP_DEC_AND_LOCK:
        return "moor_lockcnt_dec_and_lock";
    default:
        return "moor_lockcnt_dec_if_lock";
    }
}

/* @op found the count at zero before changing the word: report only. */
static void report_underflow(moor_lockcnt *lc, int op)
{
    moor_debug_report(MOOR_MISUSE_LOCKCNT_UNDERFLOW, lc,
                      "lock counter %p: %s with no visit in progress (unmatched end of visit); "
                      "ignored, count stays 0",
                      (void *)lc, op_name(op));
}

/* The count is at its limit: refuse the new visit and report. */
static void report_overflow(moor_lockcnt *lc)
{
    moor_debug_report(MOOR_MISUSE_REF_OVERFLOW, lc,
                      "lock counter %p: moor_lockcnt_inc past the limit of %u visits; refused, "
                      "the visit is not counted",
                      (void *)lc, (unsigned)(LIMIT >> MOOR__LOCKCNT_SHIFT));
}

/* As futex_misuse(), for the portable count. */
static void portable_misuse(moor_lockcnt *lc, int op)
{
    /* relaxed: as futex_misuse(), on lc->pcount. */
    atomic_fetch_add_explicit(&lc->pcount, 1, memory_order_relaxed);
    report_underflow(lc, op);
}

/* ---- futex word ------------------------------------------------------ */

#if HAVE_FUTEX
/* @op's fetch-sub took the futex word's count bits below zero (or took a
 * queued visit of a closed word): undo that decrement and report. */
static void futex_misuse(moor_lockcnt *lc, int op)
{
    /* relaxed: undoes our own decrement, which ended no visit and so
     * released nothing anybody may rely on; an RMW, so it composes with
     * any racing change of the word (see "Misuse" above). */
    atomic_fetch_add_explicit(&lc->word, ONE, memory_order_relaxed);
    report_underflow(lc, op);
}

static void futex_wait(moor_lockcnt *lc, uint32_t expected)
{
    /* EAGAIN (the word changed), EINTR and spurious returns are all
     * handled by the caller looking at the word again. */
    syscall(SYS_futex, (void *)&lc->word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_all(moor_lockcnt *lc)
{
    syscall(SYS_futex, (void *)&lc->word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* @v was read with the lock held (LOCKED or SLEEPERS). Announce a sleeper
 * and sleep until an unlock, or return at once if the word has moved on;
 * either way the caller re-reads the word. */
static void sleep_while_locked(moor_lockcnt *lc, uint32_t v)
{
    assert(state_of(v) == LOCKED || state_of(v) == SLEEPERS);
    if (state_of(v) == LOCKED) {
        uint32_t marked = (v & ~MOOR__LOCKCNT_STATE) | SLEEPERS; /* keeps CLOSED */

        /* relaxed: the mark publishes no data; it only obliges the next
         * unlock (an RMW on the same word, so it cannot miss it) to wake. */
        if (!atomic_compare_exchange_strong_explicit(&lc->word, &v, marked, memory_order_relaxed,
                                                     memory_order_relaxed))
            return;
        v = marked;
    }
    struct moor__wait w; /* for the watchdog (introspect-internal.h) */

    moor__wait_begin(&w, lc, "lockcnt");
    futex_wait(lc, v);
    moor__wait_end(&w);
}

static void futex_lock(moor_lockcnt *lc)
{
    uint32_t v = load_relaxed(lc);

    for (;;) {
        if (state_of(v) == FREE) {
            /* Taking the lock with no visit in progress closes the word:
             * the holder has seen the count at zero. */
            uint32_t locked = v | LOCKED | (count_bits(v) == 0 ? CLOSED : 0);

            /* acquire: pairs with the previous holder's release unlock. */
            if (atomic_compare_exchange_weak_explicit(&lc->word, &v, locked, memory_order_acquire,
                                                      memory_order_relaxed))
                return;
            continue;
        }
        sleep_while_locked(lc, v);
        v = load_relaxed(lc);
    }
}

static void futex_unlock(moor_lockcnt *lc)
{
    /* release: the critical section happens-before the next lock and every
     * visit that begins after it (queued or not: all acquire this word). */
    uint32_t old =
        atomic_fetch_and_explicit(&lc->word, ~(MOOR__LOCKCNT_STATE | CLOSED), memory_order_release);

    assert(state_of(old) == LOCKED || state_of(old) == SLEEPERS);
    if (state_of(old) == SLEEPERS)
        futex_wake_all(lc);
}

static void futex_inc_and_unlock(moor_lockcnt *lc)
{
    uint32_t v = load_relaxed(lc);

    /* release: as futex_unlock(); the caller already holds everything it
     * needs through the lock, so no acquire. Queued visits (the count bits
     * of a closed word) begin with ours. */
    while (!atomic_compare_exchange_weak_explicit(&lc->word, &v, count_bits(v) + ONE,
                                                  memory_order_release, memory_order_relaxed))
        ;
    assert(state_of(v) == LOCKED || state_of(v) == SLEEPERS);
    if (state_of(v) == SLEEPERS)
        futex_wake_all(lc);
}

/* The caller holds the lock and is in a visit: end it, closing the word if
 * it was the last. Returns true (still locked, closed) if it was. */
static bool futex_end_visit_locked(moor_lockcnt *lc, int op)
{
    uint32_t v = load_relaxed(lc);
    uint32_t next;

    do {
        if (MOOR_UNLIKELY(count_bits(v) == 0)) { /* someone else's unmatched dec */
            report_underflow(lc, op);
            futex_unlock(lc);
            return false;
        }
        next = count_bits(v) == ONE ? (v - ONE) | CLOSED : v - ONE;
        /* acq_rel: release ends our visit; acquire pairs with the other
         * visitors' release decrements before a true return. */
    } while (!atomic_compare_exchange_weak_explicit(&lc->word, &v, next, memory_order_acq_rel,
                                                    memory_order_relaxed));
    if (next & CLOSED)
        return true;
    futex_unlock(lc);
    return false;
}

static bool futex_dec_and_lock(moor_lockcnt *lc)
{
    uint32_t v = load_relaxed(lc);

    for (;;) {
        if (MOOR_UNLIKELY(count_bits(v) == 0)) {
            report_underflow(lc, OP_DEC_AND_LOCK);
            return false;
        }
        if (count_bits(v) > ONE) {
            /* release: an ordinary end of visit, as moor_lockcnt_dec().
             * Relaxed here would still pass on x86 (every locked RMW is a
             * full barrier); only TSan's stress-vlist-futex catches it
             * (the mutant tests/mutants/lockcnt-dec-and-lock-relaxed). */
            if (atomic_compare_exchange_weak_explicit(&lc->word, &v, v - ONE, memory_order_release,
                                                      memory_order_relaxed))
                return false;
        } else if (state_of(v) == FREE) {
            /* acq_rel: release ends our visit; acquire takes the lock and
             * pairs with the other visitors' release decrements. The word
             * is closed in the same step. */
            if (atomic_compare_exchange_weak_explicit(&lc->word, &v, (v - ONE) | LOCKED | CLOSED,
                                                      memory_order_acq_rel, memory_order_relaxed))
                return true;
        } else {
            break;
        }
    }

    /* Last visit, lock busy: wait for it with our visit still counted
     * (count above zero, so futex_lock() does not close), then decide. */
    futex_lock(lc);
    return futex_end_visit_locked(lc, OP_DEC_AND_LOCK);
}

static bool futex_dec_if_lock(moor_lockcnt *lc)
{
    uint32_t v = load_relaxed(lc);

    for (;;) {
        if (MOOR_UNLIKELY(count_bits(v) == 0)) {
            report_underflow(lc, OP_DEC_IF_LOCK);
            return false;
        }
        if (count_bits(v) != ONE)
            return false;
        if (state_of(v) != FREE)
            break;
        /* acq_rel: as futex_dec_and_lock(). */
        if (atomic_compare_exchange_weak_explicit(&lc->word, &v, (v - ONE) | LOCKED | CLOSED,
                                                  memory_order_acq_rel, memory_order_relaxed))
            return true;
    }

    futex_lock(lc);
    v = load_relaxed(lc);
    for (;;) {
        if (count_bits(v) != ONE) {
            futex_unlock(lc);
            return false;
        }
        /* acq_rel: as futex_dec_and_lock(); the state bits (ours) stay and
         * the word closes. */
        if (atomic_compare_exchange_weak_explicit(&lc->word, &v, (v - ONE) | CLOSED,
                                                  memory_order_acq_rel, memory_order_relaxed))
            return true;
    }
}

static void futex_inc_wait(moor_lockcnt *lc, uint32_t old)
{
    if (MOOR_UNLIKELY(old & LIMIT)) {
        /* relaxed: takes back our own increment, which began no visit;
         * an RMW, so it composes with any racing change of the word. */
        atomic_fetch_sub_explicit(&lc->word, ONE, memory_order_relaxed);
        report_overflow(lc);
        return;
    }
    /* The word was closed: our increment stays in the count as a queued
     * visit, which begins when the holder clears CLOSED (unlock or
     * inc_and_unlock). Nobody can close it again before we end that visit:
     * closing needs count bits of zero. */
    for (;;) {
        /* acquire: pairs with the release of the unlock that cleared
         * CLOSED (every later change is an RMW, in its release sequence). */
        uint32_t v = atomic_load_explicit(&lc->word, memory_order_acquire);

        if (!(v & CLOSED))
            return;
        sleep_while_locked(lc, v);
    }
}

static unsigned futex_close(moor_lockcnt *lc)
{
    /* acquire: as moor_lockcnt_count(). */
    uint32_t v = atomic_load_explicit(&lc->word, memory_order_acquire);

    for (;;) {
        if (v & CLOSED)
            return 0;
        if (count_bits(v) != 0 || state_of(v) == FREE)
            return count_bits(v) >> MOOR__LOCKCNT_SHIFT;
        /* acquire, also on failure: the count returned is an acquire read
         * (it pairs with the last visitor's release dec). */
        if (atomic_compare_exchange_weak_explicit(&lc->word, &v, v | CLOSED, memory_order_acquire,
                                                  memory_order_acquire))
            return 0;
    }
}
#endif /* HAVE_FUTEX */

/* ---- portable: pthread mutex + atomic count -------------------------- */

static void portable_lock(moor_lockcnt *lc)
{
    if (pthread_mutex_trylock(&lc->mutex) == 0)
        return;
    /* relaxed: a diagnostic tally, see moor_lockcnt_has_waiters(). */
    atomic_fetch_add_explicit(&lc->sleepers, 1, memory_order_relaxed);
    struct moor__wait w; /* for the watchdog (introspect-internal.h) */

    moor__wait_begin(&w, lc, "lockcnt");
    pthread_mutex_lock(&lc->mutex);
    moor__wait_end(&w);
    /* relaxed: as above. */
    atomic_fetch_sub_explicit(&lc->sleepers, 1, memory_order_relaxed);
}

static void portable_unlock(moor_lockcnt *lc)
{
    pthread_mutex_unlock(&lc->mutex);
}

/* Add a visit to lc->pcount, unless it is at the limit (reported, and
 * the visit refused). Only to a count above zero unless @from_zero (the
 * caller holds the mutex). Returns false, changing nothing, if the count
 * was zero and !@from_zero; true otherwise. */
static bool portable_add(moor_lockcnt *lc, bool from_zero)
{
    uint32_t c = load_pcount_relaxed(lc);

    do {
        if (c == 0 && !from_zero)
            return false;
        if (MOOR_UNLIKELY(c >= PORTABLE_LIMIT)) {
            report_overflow(lc);
            return true;
        }
        /* acq_rel: acquire, see lockcnt.h (inc); release so that lock-free
         * incrementers that later read what a from-zero increment (under
         * the mutex) wrote inherit what the mutex gave it (the last
         * holder's frees); every change of lc->pcount is an RMW. */
    } while (!atomic_compare_exchange_weak_explicit(&lc->pcount, &c, c + 1, memory_order_acq_rel,
                                                    memory_order_relaxed));
    return true;
}

static void portable_inc(moor_lockcnt *lc)
{
    if (portable_add(lc, false))
        return;
    /* From zero only under the mutex: waits out a holder at count zero. */
    portable_lock(lc);
    portable_add(lc, true);
    portable_unlock(lc);
}

static void portable_dec(moor_lockcnt *lc)
{
    /* release: see lockcnt.h (dec). */
    uint32_t old = atomic_fetch_sub_explicit(&lc->pcount, 1, memory_order_release);

    if (MOOR_UNLIKELY(old == 0))
        portable_misuse(lc, OP_DEC);
}

static bool portable_dec_and_lock(moor_lockcnt *lc)
{
    uint32_t c = load_pcount_relaxed(lc);

    while (c > 1) {
        /* release: an ordinary end of visit, as moor_lockcnt_dec(). */
        if (atomic_compare_exchange_weak_explicit(&lc->pcount, &c, c - 1, memory_order_release,
                                                  memory_order_relaxed))
            return false;
    }
    if (MOOR_UNLIKELY(c == 0)) {
        report_underflow(lc, OP_DEC_AND_LOCK);
        return false;
    }
    portable_lock(lc);
    /* acq_rel: release ends our visit, acquire pairs with the other
     * visitors' release decrements. */
    uint32_t old = atomic_fetch_sub_explicit(&lc->pcount, 1, memory_order_acq_rel);
    if (old == 1)
        return true;
    if (MOOR_UNLIKELY(old == 0)) /* someone else's unmatched dec */
        portable_misuse(lc, OP_DEC_AND_LOCK);
    portable_unlock(lc);
    return false;
}

static bool portable_dec_if_lock(moor_lockcnt *lc)
{
    uint32_t c = load_pcount_relaxed(lc);

    if (MOOR_UNLIKELY(c == 0)) {
        report_underflow(lc, OP_DEC_IF_LOCK);
        return false;
    }
    if (c != 1)
        return false;
    portable_lock(lc);
    c = 1;
    /* acq_rel: as portable_dec_and_lock(). Fails if a visit began since. */
    if (atomic_compare_exchange_strong_explicit(&lc->pcount, &c, 0, memory_order_acq_rel,
                                                memory_order_relaxed))
        return true;
    portable_unlock(lc);
    return false;
}

static void portable_inc_and_unlock(moor_lockcnt *lc)
{
    /* release: as a from-zero increment in portable_add(). */
    atomic_fetch_add_explicit(&lc->pcount, 1, memory_order_release);
    portable_unlock(lc);
}

/* ---- API ------------------------------------------------------------- */

moor_lockcnt_impl moor_lockcnt_default_impl(void)
{
#if HAVE_FUTEX && !defined(MOOR_LOCKCNT_PREFER_PORTABLE)
    return MOOR_LOCKCNT_FUTEX;
#else
    return MOOR_LOCKCNT_PORTABLE;
#endif
}

int moor_lockcnt_init_impl(moor_lockcnt *lc, moor_lockcnt_impl impl)
{
    if (!lc)
        return -EINVAL;
    if (impl == MOOR_LOCKCNT_DEFAULT)
        impl = moor_lockcnt_default_impl();
    switch (impl) {
    case MOOR_LOCKCNT_FUTEX:
        if (!HAVE_FUTEX)
            return -ENOTSUP;
        atomic_init(&lc->word, FREE);
        atomic_init(&lc->pcount, 0);
        atomic_init(&lc->sleepers, 0);
        return 0;
    case MOOR_LOCKCNT_PORTABLE:
        /* Default attributes: glibc's init cannot fail with them. */
        pthread_mutex_init(&lc->mutex, NULL);
        /* The permanent marker (see "Portable" above); the count is pcount. */
        atomic_init(&lc->word, PORTABLE | CLOSED);
        atomic_init(&lc->pcount, 0);
        atomic_init(&lc->sleepers, 0);
        return 0;
    default:
        return -EINVAL;
    }
}

void moor_lockcnt_init(moor_lockcnt *lc)
{
    int ret = moor_lockcnt_init_impl(lc, MOOR_LOCKCNT_DEFAULT);

    assert(ret == 0);
    (void)ret;
}

moor_lockcnt_impl moor_lockcnt_get_impl(const moor_lockcnt *lc)
{
    return is_portable((moor_lockcnt *)lc) ? MOOR_LOCKCNT_PORTABLE : MOOR_LOCKCNT_FUTEX;
}

static void report_busy(moor_lockcnt *lc, uint32_t visits, bool locked)
{
    moor_debug_report(MOOR_MISUSE_DISPOSE_LOCKED, lc,
                      "lock counter %p: moor_lockcnt_destroy while %s (%u visit(s) in progress); "
                      "not destroyed",
                      (void *)lc, locked ? "locked" : "not idle", (unsigned)visits);
}

void moor_lockcnt_destroy(moor_lockcnt *lc)
{
    if (!lc)
        return;
    /* acquire: a zero count read here orders every finished visit (and
     * the last unlock) before the teardown, as moor_lockcnt_count(). */
    uint32_t v = atomic_load_explicit(&lc->word, memory_order_acquire);

    if (state_of(v) != PORTABLE) {
        if (count_bits(v) != 0 || state_of(v) != FREE)
            report_busy(lc, count_bits(v) >> MOOR__LOCKCNT_SHIFT, state_of(v) != FREE);
        return; /* the futex word owns nothing */
    }
    /* acquire: as above, for the portable count. */
    uint32_t visits = atomic_load_explicit(&lc->pcount, memory_order_acquire);

    /* Probe the mutex rather than trusting pthread_mutex_destroy()'s EBUSY
     * (optional in POSIX, and undefined behaviour to sanitizers): a held
     * mutex is left alone, a free one is destroyed only if idle. */
    if (pthread_mutex_trylock(&lc->mutex) != 0) {
        report_busy(lc, visits, true);
        return;
    }
    pthread_mutex_unlock(&lc->mutex);
    if (visits != 0) {
        report_busy(lc, visits, false);
        return;
    }
    if (pthread_mutex_destroy(&lc->mutex) == EBUSY) /* locked since the probe */
        report_busy(lc, visits, true);
}

void moor__lockcnt_inc_wait(moor_lockcnt *lc, uint32_t old)
{
    if (state_of(old) == PORTABLE) {
        portable_inc(lc); /* the marker's junk keeps our ONE: see "Portable" */
        return;
    }
#if HAVE_FUTEX
    futex_inc_wait(lc, old);
#else
    assert(!"moor__lockcnt_inc_wait: a futex word without futexes");
#endif
}

void moor__lockcnt_dec_slow(moor_lockcnt *lc, uint32_t old)
{
    if (state_of(old) == PORTABLE) {
        portable_dec(lc); /* the junk gave back its ONE: see "Portable" */
        return;
    }
#if HAVE_FUTEX
    /* No visit to end: count bits zero, or a closed word (whose count bits
     * are queued visits, not begun). Otherwise the count bits were above
     * the limit, with refused increments in flight: an ordinary end of
     * visit, already done by the fetch-sub. */
    if (count_bits(old) == 0 || (old & CLOSED))
        futex_misuse(lc, OP_DEC);
#else
    assert(!"moor__lockcnt_dec_slow: a futex word without futexes");
#endif
}

unsigned moor__lockcnt_close(moor_lockcnt *lc)
{
#if HAVE_FUTEX
    return futex_close(lc);
#else
    (void)lc; /* only a futex word is ever "locked at count 0, open" */
    assert(!"moor__lockcnt_close without futexes");
    return 0;
#endif
}

static inline bool dec_and_lock_impl(moor_lockcnt *lc)
{
#if HAVE_FUTEX
    if (!is_portable(lc))
        return futex_dec_and_lock(lc);
#endif
    return portable_dec_and_lock(lc);
}

static inline bool dec_if_lock_impl(moor_lockcnt *lc)
{
#if HAVE_FUTEX
    if (!is_portable(lc))
        return futex_dec_if_lock(lc);
#endif
    return portable_dec_if_lock(lc);
}

static inline void lock_impl(moor_lockcnt *lc)
{
#if HAVE_FUTEX
    if (!is_portable(lc)) {
        futex_lock(lc);
        return;
    }
#endif
    portable_lock(lc);
}

static inline void unlock_impl(moor_lockcnt *lc)
{
#if HAVE_FUTEX
    if (!is_portable(lc)) {
        futex_unlock(lc);
        return;
    }
#endif
    portable_unlock(lc);
}

static inline void inc_and_unlock_impl(moor_lockcnt *lc)
{
#if HAVE_FUTEX
    if (!is_portable(lc)) {
        futex_inc_and_unlock(lc);
        return;
    }
#endif
    portable_inc_and_unlock(lc);
}

/*
 * MOOR_DEBUG=locks: every lock counter's mutex side is one lock class.
 * Each public lock-side call tests the flag once and otherwise runs as it
 * did before the checker; the checked versions are out of line so the
 * unchecked path keeps no value alive for them. A dec_and_lock or
 * dec_if_lock that took the lock is recorded after the fact (whether it
 * locks is known only then).
 */
static const struct moor__lockdep_key lockcnt_key = {"moor_lockcnt"};

static __attribute__((noinline)) bool dec_and_lock_checked(moor_lockcnt *lc, const void *ret)
{
    bool locked = dec_and_lock_impl(lc);

    if (locked)
        moor__lockdep_internal_lock(lc, &lockcnt_key, NULL, ret);
    return locked;
}

static __attribute__((noinline)) bool dec_if_lock_checked(moor_lockcnt *lc, const void *ret)
{
    bool locked = dec_if_lock_impl(lc);

    if (locked)
        moor__lockdep_internal_lock(lc, &lockcnt_key, NULL, ret);
    return locked;
}

static __attribute__((noinline)) void lock_checked(moor_lockcnt *lc, const void *ret)
{
    moor__lockdep_internal_lock(lc, &lockcnt_key, NULL, ret); /* before: it may wait */
    lock_impl(lc);
}

static __attribute__((noinline)) void unlock_checked(moor_lockcnt *lc, bool inc, const void *ret)
{
    moor__lockdep_internal_unlock(lc, NULL, ret);
    if (inc)
        inc_and_unlock_impl(lc);
    else
        unlock_impl(lc);
}

bool moor_lockcnt_dec_and_lock(moor_lockcnt *lc)
{
    if (moor__debug_on(MOOR_DEBUG_LOCKS))
        return dec_and_lock_checked(lc, __builtin_return_address(0));
    return dec_and_lock_impl(lc);
}

bool moor_lockcnt_dec_if_lock(moor_lockcnt *lc)
{
    if (moor__debug_on(MOOR_DEBUG_LOCKS))
        return dec_if_lock_checked(lc, __builtin_return_address(0));
    return dec_if_lock_impl(lc);
}

void moor_lockcnt_lock(moor_lockcnt *lc)
{
    if (moor__debug_on(MOOR_DEBUG_LOCKS))
        lock_checked(lc, __builtin_return_address(0));
    else
        lock_impl(lc);
}

void moor_lockcnt_unlock(moor_lockcnt *lc)
{
    if (moor__debug_on(MOOR_DEBUG_LOCKS))
        unlock_checked(lc, false, __builtin_return_address(0));
    else
        unlock_impl(lc);
}

void moor_lockcnt_inc_and_unlock(moor_lockcnt *lc)
{
    if (moor__debug_on(MOOR_DEBUG_LOCKS))
        unlock_checked(lc, true, __builtin_return_address(0));
    else
        inc_and_unlock_impl(lc);
}

bool moor_lockcnt_has_waiters(const moor_lockcnt *lc)
{
    moor_lockcnt *l = (moor_lockcnt *)lc;

    if (is_portable(l))
        /* relaxed: a diagnostic snapshot. */
        return atomic_load_explicit(&l->sleepers, memory_order_relaxed) != 0;
    return state_of(load_relaxed(l)) == SLEEPERS;
}
