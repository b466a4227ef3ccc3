/* SPDX-License-Identifier: MIT */
/*
 * lockcnt.pml - Promela model of the futex word of src/lockcnt.c.
 *
 * The word is modelled as three variables, `count`, `closed` and `state`,
 * that are only ever read or changed together inside one atomic step, as
 * the single 32-bit word is. Every read-modify-write of the C code (a
 * fetch-add, a fetch-sub, a fetch-and, a successful compare-and-swap) is
 * one atomic step here; a failed CAS changes nothing, so a CAS loop is a
 * re-read and a guarded atomic step. FUTEX_WAIT is "compare the word, and
 * if equal go to sleep" in one atomic step, then a block until a
 * FUTEX_WAKE clears our sleep flag. Spurious wakeups are not modelled: the
 * C code tolerates them (it re-reads the word), and allowing them here
 * would hide exactly the lost wakeups we look for.
 *
 * Scope. Only the futex word is modelled. The C inline inc is exactly the
 * fetch-add modelled here, with nothing read before it (an earlier version
 * loaded the word first to tell a portable counter apart; the model never
 * had that load, and removing it changed nothing in the futex protocol). A
 * portable counter's word is a permanent marker (state 3 plus CLOSED) with
 * junk in the count bits: every inline operation on it goes out of line to
 * the mutex + count code (src/lockcnt.c, "Portable"), so it never takes
 * part in this protocol and is not modelled.
 *
 * The protocol. A visit begins with one fetch-add of the count. It has
 * begun unless the word was CLOSED: closed means "locked by a thread that
 * has seen the count at zero", and every transition into that state sets
 * it in the same atomic step - lock at count zero, dec_and_lock and
 * dec_if_lock taking the last visit, and the holder's count read that
 * finds zero (after the last visit ended with a plain dec under the
 * lock). An increment that finds the word closed stays in the count as a
 * queued visit and begins when the holder clears CLOSED (unlock,
 * inc_and_unlock); it waits like any sleeper. Nothing can close the word
 * while a queued increment is in the count (closing needs a count of zero),
 * so a queued visit can never be fooled into entering a later closed
 * period.
 *
 * NTHREADS threads (default 3) each run ROUNDS rounds (default 1; the slow
 * suite runs 2), choosing in every round one of the four usage patterns of
 * the API (see proctype thread), so every interleaving of every mix of
 * patterns is explored.
 *
 * Checked (spin -a; pan compiled with -DSAFETY; see run-spin.sh):
 *   - mutual exclusion: at most one holder of the lock (assertion);
 *   - rule 1, never free during a visit: when data is freed, no thread is
 *     between the begin of a visit and its end (assertion);
 *   - rule 2, no visit begins while the holder frees (assertion on
 *     beginning a visit);
 *   - no deadlock and no lost wakeup: every thread reaches its end; a
 *     thread left asleep on the futex, or waiting forever, is an invalid
 *     end state;
 *   - with -DCHECK_CLEANUP (every visit then ends with dec_and_lock, as a
 *     visit list's does): no deferred free is lost - whatever a writer
 *     left because the count was not zero has been freed by the last
 *     visitor when all threads are done (assertion).
 *
 * Deliberately broken variants, selected with -D (each must FAIL):
 *   BROKEN_NO_SLEEPERS  waiters sleep without announcing themselves, so
 *                       unlock does not know to wake them (lost wakeup);
 *   BROKEN_WAKE_ONE     unlock wakes one sleeper instead of all (a woken
 *                       visitor does not pass the wakeup on: lost wakeup);
 *   BROKEN_INC          inc ignores CLOSED (rule 2 broken, so a visit
 *                       overlaps a free);
 *   BROKEN_UNDO         no CLOSED bit at all: an inc whose fetch-add finds
 *                       "count 0, locked" takes its increment back and
 *                       waits, and the holder trusts a count of zero. The
 *                       transient count of 1 lets a third thread's inc
 *                       begin a visit while the holder frees;
 *   BROKEN_DEC_AND_LOCK_NO_WAIT  with CHECK_CLEANUP: dec_and_lock of the
 *                       last visit, finding the lock held, just ends the
 *                       visit and returns false instead of waiting for
 *                       the lock; the holder saw the visit and left its
 *                       free to it, so the free is lost;
 *   BROKEN_COUNT_NO_CLOSE  the holder's count read does not close the word
 *                       when it finds zero: after a plain dec took the
 *                       last visit under the lock, a new visit begins
 *                       while the holder frees.
 */

#ifndef NTHREADS
#define NTHREADS 3
#endif
#ifndef ROUNDS
#define ROUNDS 1
#endif

#define FREE     0
#define LOCKED   1
#define SLEEPERS 2

/* The futex word. */
byte count = 0;
bool closed = false;
byte state = FREE;

/* The futex wait queue: asleep[i] while thread i is in FUTEX_WAIT. */
bool asleep[NTHREADS];

/* Ghost state for the properties. */
byte visitors = 0; /* threads inside a visit (may read the data) */
byte holders = 0;  /* threads holding the lock */
bool freeing = false;
bool retired = false; /* a writer left something for the last visitor */

#define WORD_IS(c, cl, s) (count == (c) && closed == (cl) && state == (s))

/* Every transition into "locked, seen at count 0" sets CLOSED in the same
 * step; BROKEN_UNDO has no such bit. */
#ifdef BROKEN_UNDO
#define CLOSE skip
#else
#define CLOSE closed = true
#endif

/* A writer leaves its free to the last visitor (tracked only when it is
 * checked: the flag would double the state space for nothing). */
#ifdef CHECK_CLEANUP
#define RETIRE retired = true
#else
#define RETIRE skip
#endif

/* A visit begins (ghost bookkeeping and the rule-2 check). */
#define BEGIN_VISIT assert(!freeing); visitors++

/* FUTEX_WAIT(word, expected): sleep only if the word still matches. */
inline futex_wait(ec, ecl, es)
{
    atomic {
        if
        :: WORD_IS(ec, ecl, es) -> asleep[_pid - 1] = true
        :: else -> skip
        fi
    };
    (!asleep[_pid - 1])
}

inline futex_wake()
{
    atomic {
        i = 0;
        do
        :: i < NTHREADS ->
#ifdef BROKEN_WAKE_ONE
            if
            :: asleep[i] -> asleep[i] = false; break
            :: else -> skip
            fi;
#else
            asleep[i] = false;
#endif
            i++
        :: else -> break
        od;
        i = 0
    }
}

/* (vc, vcl, vs) was read with the lock held: announce a sleeper, then
 * sleep unless the word moved on (in which case the caller simply looks
 * again). */
inline sleep_while_locked()
{
#ifdef BROKEN_NO_SLEEPERS
    futex_wait(vc, vcl, vs)
#else
    if
    :: vs == LOCKED ->
        atomic {
            if
            :: WORD_IS(vc, vcl, LOCKED) -> state = SLEEPERS; ok = true
            :: else -> ok = false
            fi
        };
        if
        :: ok -> futex_wait(vc, vcl, SLEEPERS)
        :: else -> skip
        fi
    :: else -> futex_wait(vc, vcl, vs)
    fi
#endif
}

inline lc_inc()
{
    do
    :: /* the fetch-add, and what its old value says */
        atomic {
#if defined(BROKEN_INC)
            ok = true;
#elif defined(BROKEN_UNDO)
            ok = (count > 0 || state == FREE);
#else
            ok = !closed;
#endif
            count++;
            if
            :: ok -> BEGIN_VISIT
            :: else -> skip
            fi
        };
        if
        :: ok -> break
        :: else ->
#ifdef BROKEN_UNDO
            /* take the increment back, wait for the unlock, start over */
            atomic { count-- };
            atomic { vc = count; vcl = closed; vs = state };
            if
            :: (vc == 0 && vs != FREE) -> sleep_while_locked()
            :: else -> skip
            fi
#else
            /* queued: the visit begins when CLOSED is cleared */
            do
            :: atomic {
                    if
                    :: !closed -> BEGIN_VISIT; ok = true
                    :: else -> vc = count; vcl = closed; vs = state; ok = false
                    fi
                };
                if
                :: ok -> break
                :: else -> sleep_while_locked()
                fi
            od;
            break
#endif
        fi
    od
}

inline lc_dec()
{
    atomic { visitors--; count-- }
}

inline lc_lock()
{
    do
    :: atomic { vc = count; vcl = closed; vs = state };
        if
        :: vs == FREE ->
            atomic {
                if
                :: WORD_IS(vc, vcl, FREE) ->
                    state = LOCKED;
                    if
                    :: count == 0 -> CLOSE
                    :: else -> skip
                    fi;
                    ok = true;
                    holders++;
                    assert(holders == 1)   /* mutual exclusion */
                :: else -> ok = false
                fi
            };
            if
            :: ok -> break
            :: else -> skip
            fi
        :: else -> sleep_while_locked()
        fi
    od
}

inline lc_unlock()
{
    atomic { holders--; vs = state; state = FREE; closed = false };
    if
    :: vs == SLEEPERS -> futex_wake()
    :: else -> skip
    fi
}

inline lc_inc_and_unlock()
{
    atomic {
        holders--; vs = state; state = FREE; closed = false;
        count++; BEGIN_VISIT
    };
    if
    :: vs == SLEEPERS -> futex_wake()
    :: else -> skip
    fi
}

/* The holder's moor_lockcnt_count(): a zero it sees closes the word. */
inline lc_count()
{
    atomic {
        if
        :: closed -> cnt = 0
#ifndef BROKEN_COUNT_NO_CLOSE
        :: (!closed && count == 0 && state != FREE) -> CLOSE; cnt = 0
        :: (!closed && (count != 0 || state == FREE)) -> cnt = count
#else
        :: !closed -> cnt = count
#endif
        fi
    }
}

/* With the lock held and a visit counted: end it, closing if last. */
inline end_visit_locked()
{
    atomic {
        old = count; count--; visitors--;
        if
        :: old == 1 -> CLOSE
        :: else -> skip
        fi
    };
    if
    :: old == 1 -> result = true
    :: else -> lc_unlock(); result = false
    fi
}

/* Ends the caller's visit; result: true with the lock held at count 0. */
inline lc_dec_and_lock()
{
    do
    :: atomic { vc = count; vcl = closed; vs = state };
        if
        :: vc > 1 ->
            atomic {
                if
                :: WORD_IS(vc, vcl, vs) -> count--; visitors--; ok = true
                :: else -> ok = false
                fi
            };
            if
            :: ok -> result = false; break
            :: else -> skip
            fi
        :: (vc == 1 && vs == FREE) ->
            atomic {
                if
                :: WORD_IS(1, vcl, FREE) ->
                    count = 0; state = LOCKED; CLOSE; visitors--; holders++;
                    assert(holders == 1); ok = true
                :: else -> ok = false
                fi
            };
            if
            :: ok -> result = true; break
            :: else -> skip
            fi
        :: (vc == 1 && vs != FREE) ->
#ifdef BROKEN_DEC_AND_LOCK_NO_WAIT
            atomic {
                if
                :: WORD_IS(vc, vcl, vs) -> count--; visitors--; ok = true
                :: else -> ok = false
                fi
            };
            if
            :: ok -> result = false; break
            :: else -> skip
            fi
#else
            /* wait for the lock with the visit still counted */
            lc_lock();
            end_visit_locked();
            break
#endif
        fi
    od
}

/* The caller stays in its visit unless result is true (then: lock held,
 * count 0, visit ended). */
inline lc_dec_if_lock()
{
    do
    :: atomic { vc = count; vcl = closed; vs = state };
        if
        :: vc != 1 -> result = false; break
        :: (vc == 1 && vs == FREE) ->
            atomic {
                if
                :: WORD_IS(1, vcl, FREE) ->
                    count = 0; state = LOCKED; CLOSE; visitors--; holders++;
                    assert(holders == 1); ok = true
                :: else -> ok = false
                fi
            };
            if
            :: ok -> result = true; break
            :: else -> skip
            fi
        :: (vc == 1 && vs != FREE) ->
            lc_lock();
            do
            :: atomic { vc = count; vcl = closed; vs = state };
                if
                :: vc != 1 -> lc_unlock(); result = false; break
                :: else ->
                    atomic {
                        if
                        :: WORD_IS(vc, vcl, vs) ->
                            count--; CLOSE; visitors--; ok = true
                        :: else -> ok = false
                        fi
                    };
                    if
                    :: ok -> result = true; break
                    :: else -> skip
                    fi
                fi
            od;
            break
        fi
    od
}

/* Free the guarded data: only with the lock held and nobody visiting. */
inline free_data()
{
    atomic { assert(holders == 1 && visitors == 0); freeing = true; retired = false };
    freeing = false
}

/* End a visit. CHECK_CLEANUP: every visit ends as moor_vlist_visit_end()
 * does, with dec_and_lock and the deferred free; otherwise a plain dec
 * (which the API allows when no clean-up is needed). */
inline end_visit()
{
#ifdef CHECK_CLEANUP
    lc_dec_and_lock();
    if
    :: result -> free_data(); lc_unlock()
    :: else -> skip
    fi
#else
    lc_dec()
#endif
}

proctype thread()
{
    byte vc, vs, old, cnt, i, round;
    bool vcl, ok, result;

    round = 0;
    do
    :: round < ROUNDS ->
        if
        :: /* a visit that needs no clean-up */
            lc_inc(); end_visit()
        :: /* the last visitor frees (deferred free) */
            lc_inc();
            lc_dec_and_lock();
            if
            :: result -> free_data(); lc_unlock()
            :: else -> skip
            fi
        :: /* a writer frees if nobody visits */
            lc_lock();
            lc_count();
            if
            :: cnt == 0 -> free_data()
            :: else -> RETIRE /* for the last visitor */
            fi;
            lc_unlock()
        :: /* clean up in the middle of a visit, then resume it */
            lc_inc();
            lc_dec_if_lock();
            if
            :: result -> free_data(); lc_inc_and_unlock()
            :: else -> skip
            fi;
            end_visit()
        fi;
        /* forget the scratch locals: states that differ only in stale
         * scratch values are one state (a third fewer states) */
        d_step { vc = 0; vcl = false; vs = 0; ok = false; old = 0; cnt = 0; result = false };
        round++
    :: else -> break
    od
}

init {
    byte t;

    atomic {
        t = 0;
        do
        :: t < NTHREADS -> run thread(); t++
        :: else -> break
        od
    };
#ifdef CHECK_CLEANUP
    /* all threads done: whatever a writer retired was freed by the last
     * visitor (no deferred free is lost, e.g. to a queued increment) */
    (_nr_pr == 1);
    assert(!retired)
#endif
}
