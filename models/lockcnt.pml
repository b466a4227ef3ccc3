/* SPDX-License-Identifier: MIT */
/*
 * lockcnt.pml - Promela model of the futex word of src/lockcnt.c.
 *
 * The word is modelled as two variables, `count` and `state`, that are only
 * ever read or changed together inside one atomic step, as the single
 * 32-bit word is. Every compare-and-swap of the C code is one atomic step
 * here; the C fast paths (one load, one CAS) are the first iteration of the
 * modelled slow paths, so they add no behaviour of their own. FUTEX_WAIT is
 * "compare the word, and if equal go to sleep" in one atomic step, then a
 * block until a FUTEX_WAKE clears our sleep flag. Spurious wakeups are not
 * modelled: the C code tolerates them (it re-reads the word), and allowing
 * them here would hide exactly the lost wakeups we look for.
 *
 * NTHREADS threads (default 3) each run ROUNDS rounds (default 1; the slow
 * suite runs 2), choosing in every round one of the four usage patterns of
 * the API (see proctype thread), so every interleaving of every mix of
 * patterns is explored.
 *
 * Checked (spin -a; pan compiled with -DSAFETY; see run-spin.sh):
 *   - mutual exclusion: at most one holder of the lock (assertion);
 *   - rule 1, never free during a visit: when data is freed, no thread is
 *     between a successful inc and its dec (assertion);
 *   - rule 2, no visit begins while the count is zero and the lock is held
 *     for a free (assertion on entering a visit);
 *   - no deadlock and no lost wakeup: every thread reaches its end; a
 *     thread left asleep on the futex, or waiting forever, is an invalid
 *     end state.
 *
 * Deliberately broken variants, selected with -D (each must FAIL):
 *   BROKEN_NO_SLEEPERS  waiters sleep without announcing themselves, so
 *                       unlock does not know to wake them (lost wakeup);
 *   BROKEN_WAKE_ONE     unlock wakes one sleeper instead of all (a woken
 *                       visitor does not pass the wakeup on: lost wakeup);
 *   BROKEN_INC          inc ignores the lock at count zero (rule 2 broken,
 *                       so a visit overlaps a free).
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
byte state = FREE;

/* The futex wait queue: asleep[i] while thread i is in FUTEX_WAIT. */
bool asleep[NTHREADS];

/* Ghost state for the properties. */
byte visitors = 0; /* threads inside a visit (may read the data) */
byte holders = 0;  /* threads holding the lock */
bool freeing = false;

/* FUTEX_WAIT(word, expected): sleep only if the word still matches. */
inline futex_wait(ec, es)
{
    atomic {
        if
        :: (count == ec && state == es) -> asleep[_pid - 1] = true
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

/* Read with the lock held: announce a sleeper, then sleep unless the word
 * moved on (in which case the caller simply looks again). */
inline sleep_while_locked()
{
#ifdef BROKEN_NO_SLEEPERS
    futex_wait(vc, vs)
#else
    if
    :: vs == LOCKED ->
        atomic {
            if
            :: (count == vc && state == LOCKED) -> state = SLEEPERS; ok = true
            :: else -> ok = false
            fi
        };
        if
        :: ok -> futex_wait(vc, SLEEPERS)
        :: else -> skip
        fi
    :: else -> futex_wait(vc, vs)
    fi
#endif
}

inline lc_inc()
{
    do
    :: atomic { vc = count; vs = state };
#ifdef BROKEN_INC
        if
        :: true ->
#else
        if
        :: (vc > 0 || vs == FREE) ->
#endif
            atomic {
                if
                :: (count == vc && state == vs) ->
                    count++; ok = true;
                    assert(!freeing);   /* rule 2 */
                    visitors++
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

inline lc_dec()
{
    atomic { visitors--; count-- }
}

inline lc_lock()
{
    do
    :: atomic { vc = count; vs = state };
        if
        :: vs == FREE ->
            atomic {
                if
                :: (count == vc && state == FREE) ->
                    state = LOCKED; ok = true;
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
    atomic { holders--; vs = state; state = FREE };
    if
    :: vs == SLEEPERS -> futex_wake()
    :: else -> skip
    fi
}

inline lc_inc_and_unlock()
{
    atomic {
        holders--; vs = state; state = FREE;
        count++; assert(!freeing); visitors++
    };
    if
    :: vs == SLEEPERS -> futex_wake()
    :: else -> skip
    fi
}

/* Ends the caller's visit; result: true with the lock held at count 0. */
inline lc_dec_and_lock()
{
    do
    :: atomic { vc = count; vs = state };
        if
        :: vc > 1 ->
            atomic {
                if
                :: (count == vc && state == vs) -> count--; visitors--; ok = true
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
                :: (count == 1 && state == FREE) ->
                    count = 0; state = LOCKED; visitors--; holders++;
                    assert(holders == 1); ok = true
                :: else -> ok = false
                fi
            };
            if
            :: ok -> result = true; break
            :: else -> skip
            fi
        :: (vc == 1 && vs != FREE) ->
            /* wait for the lock with the visit still counted */
            lc_lock();
            atomic { old = count; count--; visitors-- };
            if
            :: old == 1 -> result = true
            :: else -> lc_unlock(); result = false
            fi;
            break
        fi
    od
}

/* The caller stays in its visit unless result is true (then: lock held,
 * count 0, visit ended). */
inline lc_dec_if_lock()
{
    do
    :: atomic { vc = count; vs = state };
        if
        :: vc != 1 -> result = false; break
        :: (vc == 1 && vs == FREE) ->
            atomic {
                if
                :: (count == 1 && state == FREE) ->
                    count = 0; state = LOCKED; visitors--; holders++;
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
            :: atomic { vc = count; vs = state };
                if
                :: vc != 1 -> lc_unlock(); result = false; break
                :: else ->
                    atomic {
                        if
                        :: (count == vc && state == vs) ->
                            count--; visitors--; ok = true
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
    atomic { assert(holders == 1 && visitors == 0); freeing = true };
    freeing = false
}

proctype thread()
{
    byte vc, vs, old, i, round;
    bool ok, result;

    round = 0;
    do
    :: round < ROUNDS ->
        if
        :: /* a visit that needs no clean-up */
            lc_inc(); lc_dec()
        :: /* the last visitor frees (deferred free) */
            lc_inc();
            lc_dec_and_lock();
            if
            :: result -> free_data(); lc_unlock()
            :: else -> skip
            fi
        :: /* a writer frees if nobody visits */
            lc_lock();
            if
            :: count == 0 -> free_data()
            :: else -> skip
            fi;
            lc_unlock()
        :: /* clean up in the middle of a visit, then resume it */
            lc_inc();
            lc_dec_if_lock();
            if
            :: result -> free_data(); lc_inc_and_unlock()
            :: else -> skip
            fi;
            lc_dec()
        fi;
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
    }
}
