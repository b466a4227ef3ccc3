/* SPDX-License-Identifier: MIT */
/*
 * job.pml - Promela model of the grant logic of src/job.c.
 *
 * Everything src/job.c does to the job happens under the object mutex, so
 * each call (begin's fast path or queueing, end, async begin/end, a
 * timeout) is one atomic step here. The one thing done without the mutex
 * is a waiter's spin: queued, the mutex dropped, it polls its own state
 * for a while, then retakes the mutex and, if still waiting, marks itself
 * sleeping and sleeps on its own condition. A grant signals a waiter only
 * if it is marked sleeping; the sleeper wakes only on that signal (or its
 * own timeout). So a grant made while the waiter spun must be noticed by
 * the re-check under the mutex, or it is lost: a lost wake-up shows up as
 * a thread stuck forever.
 *
 * Threads (NT = 3):
 *   0  the async owner: begin an async job (mask: QUERY, DESTROY, ABORT),
 *      take nested MODIFY jobs around its "peer calls", stop early when an
 *      abort was requested, end the async job; or run a MODIFY (choice).
 *   1  a stream of QUERY jobs.
 *   2  chooses each round among MODIFY, QUERY, ABORT and DESTROY, or
 *      removes the object: under the mutex and without a job (as a
 *      registry removal may), or while holding a MODIFY.
 * Thread 2's waiting begins may also time out (a nondeterministic give-up
 * that re-runs the walk); threads 0 and 1 never time out, so a lost
 * wake-up or a deadlock leaves them stuck: an invalid end state.
 *
 * Safety (default build; run-spin.sh 'pass', pan with -DSAFETY), with
 * ROUNDS rounds per thread so that every thread ends:
 *   - never two exclusive holders, never an exclusive beside a shared one;
 *   - no sync job of a kind outside the async mask beside a foreign async
 *     job;
 *   - no overtaking: while a MODIFY waits and is not parked behind the
 *     async mask, no QUERY that queued after it is granted;
 *   - no deadlock or lost wake-up (every thread reaches its end state);
 *   - removal: no begin returns success (with the mutex retaken) on an
 *     object marked removed, and every waiter queued at the removal fails.
 *
 * Liveness (-DLIVE; pan -a -f, weak fairness): thread 1 runs QUERY jobs
 * forever and so does thread 0, while thread 2 runs MODIFY jobs forever
 * without timeouts; the LTL property `modify_runs` says a waiting MODIFY
 * is always eventually granted.
 *
 * Broken variants (must fail):
 *   -DBROKEN_BARGE: a newcomer QUERY takes the job whenever it is
 *     compatible with the holders, ignoring the queue (the broadcast-and-
 *     recheck scheme). The overtaking assertion fires, and under -DLIVE
 *     the MODIFY can starve.
 *   -DBROKEN_SLEEP_UNCHECKED: after spinning, the waiter goes to sleep
 *     without re-checking its state under the mutex; a grant made during
 *     the spin is never signalled, and the waiter sleeps forever.
 *   -DBROKEN_NO_REMOVED_RECHECK: a waiter does not re-check `removed`
 *     when it retakes the mutex after its wait; an end that granted it
 *     the job just before a removal makes its begin succeed on a removed
 *     object (what src/job.c did before it handed such a grant back).
 */

#ifndef ROUNDS
#define ROUNDS 2
#endif
#define NT 3

#define QUERY   0
#define MODIFY  1
#define DESTROY 2
#define ABORT   3
#define ASYNC   4 /* a waiter for the async slot */

#define MASKED(k) ((k) == QUERY || (k) == DESTROY || (k) == ABORT)
#define EXCL(k)   ((k) != QUERY)

#define IDLE    0
#define WAITING 1
#define GRANTED 2
#define FAILED  3 /* -ESRCH: removed */

/* The job, under the (implicit) object mutex. */
byte nshared = 0;
byte nexcl = 0;
bool async_active = false;
byte async_owner = 255;
bool abort_req = false;
bool removed = false;

/* Waiters: per thread its kind, state and ticket; queues are implicit in
 * the tickets (smaller ticket = earlier). DESTROY waiters come first. */
byte kind[NT];
byte st[NT];
byte ticket[NT];

/* The waiter's sleep: marked under the mutex; a grant signals a sleeper. */
bool sleeping[NT];
bool signalled[NT];

/* What each thread holds, for the exclusion assertions. */
byte holds[NT]; /* 255 = nothing; else a kind (ASYNC for the async job) */

#define NONE 255

/* RUN (0), BLOCKED (1) or PARKED (2) for thread t's waiter. */
#define RUN     0
#define BLOCKED 1
#define PARKED  2
byte verdict;

inline check(t)
{
    if
    :: kind[t] == ASYNC ->
        if
        :: async_active -> verdict = PARKED
        :: !async_active && nexcl > 0 -> verdict = BLOCKED
        :: else -> verdict = RUN /* shared holders are QUERY, in the mask */
        fi
    :: else ->
        if
        :: async_active && async_owner != t && !MASKED(kind[t]) -> verdict = PARKED
        :: else ->
            if
            :: EXCL(kind[t]) && (nshared + nexcl) > 0 -> verdict = BLOCKED
            :: !EXCL(kind[t]) && nexcl > 0 -> verdict = BLOCKED
            :: else -> verdict = RUN
            fi
        fi
    fi
}

/* Overtaking: a QUERY granted while a MODIFY that queued before it waits
 * and is not parked behind the async mask. */
inline no_overtake(t)
{
    byte o;
    for (o : 0 .. NT - 1) {
        assert(!(o != t && st[o] == WAITING && kind[o] == MODIFY && ticket[o] < ticket[t] &&
                 !(async_active && async_owner != o)))
    }
}

inline grant(t)
{
#ifndef LIVE /* under LIVE, starvation must show as the LTL failure */
    if
    :: kind[t] == QUERY -> no_overtake(t)
    :: else -> skip
    fi;
#endif
    st[t] = GRANTED;
    if
    :: kind[t] == ASYNC ->
        assert(!async_active && nexcl == 0);
        async_active = true; async_owner = t; abort_req = false
    :: kind[t] != ASYNC && EXCL(kind[t]) ->
        assert(nshared == 0 && nexcl == 0);
        nexcl++;
        if
        :: kind[t] == ABORT && async_active -> abort_req = true
        :: else -> skip
        fi
    :: else ->
        assert(nexcl == 0);
        nshared++
    fi;
    if
    :: kind[t] != ASYNC -> assert(!async_active || async_owner == t || MASKED(kind[t]))
    :: else -> skip
    fi;
    holds[t] = kind[t];
    if
    :: sleeping[t] -> signalled[t] = true
    :: else -> skip
    fi
}


/* The walk: DESTROY waiters in ticket order, then the others; stop at the
 * first one that must wait for holders, skip parked ones. */
byte best;
bool stopped;
inline grant_pass()
{
    byte u;
    byte done_mask = 0;
    stopped = false;
    /* DESTROY queue */
    do
    :: !stopped ->
        best = NONE;
        for (u : 0 .. NT - 1) {
            if
            :: st[u] == WAITING && kind[u] == DESTROY && !(done_mask & (1 << u)) &&
               (best == NONE || ticket[u] < ticket[best]) -> best = u
            :: else -> skip
            fi
        }
        if
        :: best == NONE -> break
        :: else ->
            check(best);
            if
            :: verdict == RUN -> grant(best)
            :: else -> stopped = true
            fi
        fi
    :: else -> break
    od;
    done_mask = 0;
    do
    :: !stopped ->
        best = NONE;
        for (u : 0 .. NT - 1) {
            if
            :: st[u] == WAITING && kind[u] != DESTROY && !(done_mask & (1 << u)) &&
               (best == NONE || ticket[u] < ticket[best]) -> best = u
            :: else -> skip
            fi
        }
        if
        :: best == NONE -> break
        :: else ->
            check(best);
            if
            :: verdict == RUN -> grant(best)
            :: verdict == PARKED -> done_mask = done_mask | (1 << best)
            :: else -> stopped = true
            fi
        fi
    :: else -> break
    od
}

/* Tickets are kept as ranks 1..n among the current waiters, so that the
 * state space stays finite; only their order matters. */
inline take_ticket(t)
{
    byte a, b, rank;
    for (a : 0 .. NT - 1) {
        if
        :: st[a] == WAITING ->
            rank = 1;
            for (b : 0 .. NT - 1) {
                if
                :: st[b] == WAITING && ticket[b] < ticket[a] -> rank++
                :: else -> skip
                fi
            };
            ticket[a] = rank
        :: else -> skip
        fi
    };
    rank = 1;
    for (a : 0 .. NT - 1) {
        if
        :: st[a] == WAITING -> rank++
        :: else -> skip
        fi
    };
    ticket[t] = rank;
    st[t] = WAITING;
    a = 0; b = 0; rank = 0
}

bool anyone_waits;
inline queue_empty()
{
    byte v;
    anyone_waits = false;
    for (v : 0 .. NT - 1) {
        if
        :: st[v] == WAITING -> anyone_waits = true
        :: else -> skip
        fi
    }
}

/* Under the mutex, not removed: the fast path, or queue + walk. */
inline begin_locked(t, k)
{
        queue_empty();
#ifdef BROKEN_BARGE
        take_ticket(t);
        check(t);
        if
        :: verdict == RUN && k == QUERY -> grant(t)
        :: else -> grant_pass()
        fi
#else
        check(t);
        if
        :: !anyone_waits && verdict == RUN -> ticket[t] = 0; grant(t)
        :: else ->
            take_ticket(t);
            grant_pass()
        fi
#endif
}

/* A begin that waited returns: the waiter has retaken the mutex. A grant
 * made before a removal that came before this moment is handed back, as
 * an end would (src/job.c: revoke_grant()). */
inline returned(t)
{
#ifndef BROKEN_NO_REMOVED_RECHECK
    if
    :: st[t] == GRANTED && removed ->
        if
        :: kind[t] == ASYNC -> async_active = false; async_owner = 255; abort_req = false
        :: kind[t] != ASYNC && EXCL(kind[t]) -> nexcl--
        :: else -> nshared--
        fi;
        holds[t] = NONE;
        st[t] = FAILED;
        /* src/job.c runs the walk here; it has nobody to grant: the
         * removal failed every waiter and no begin queues after it. */
        byte w;
        for (w : 0 .. NT - 1) { assert(st[w] != WAITING) }
    :: else -> skip
    fi;
#endif
    /* The contract: no begin succeeds on a removed object. */
    assert(!(st[t] == GRANTED && removed))
}

/* moor_job_mark_removed(), under the mutex: every waiter fails. */
inline remove_object()
{
    byte x;
    atomic {
        removed = true;
        for (x : 0 .. NT - 1) {
            if
            :: st[x] == WAITING ->
                st[x] = FAILED;
                if
                :: sleeping[x] -> signalled[x] = true
                :: else -> skip
                fi
            :: else -> skip
            fi
        }
    }
}

/* begin: the fast path, or queue + walk; then spin, and sleep until
 * settled (or time out, when allowed). */
inline begin(t, k, may_timeout)
{
    atomic {
        kind[t] = k;
        if
        :: removed -> st[t] = FAILED
        :: else -> begin_locked(t, k)
        fi
    };
    if
    :: st[t] == GRANTED || st[t] == FAILED -> skip
    :: st[t] == WAITING ->
        /* Spin, the mutex dropped: see the grant, or give up any time. */
        if
        :: st[t] != WAITING -> skip
        :: true -> skip
        fi;
        /* Retake the mutex. */
        atomic {
#ifdef BROKEN_SLEEP_UNCHECKED
            sleeping[t] = true
#else
            if
            :: st[t] == WAITING -> sleeping[t] = true
            :: else -> returned(t)
            fi
#endif
        };
        if
        :: sleeping[t] ->
            /* The condition wait: woken by a grant's signal, or (when
             * allowed) the deadline passes; then under the mutex again. */
            if
            :: signalled[t] -> atomic { sleeping[t] = false; signalled[t] = false; returned(t) }
            :: may_timeout ->
                atomic {
                    sleeping[t] = false;
                    signalled[t] = false;
                    if
                    :: st[t] == WAITING -> st[t] = IDLE; grant_pass()
                    :: else -> returned(t)
                    fi
                }
            fi
        :: else -> skip
        fi
    fi
}

inline end_sync(t)
{
    atomic {
        if
        :: EXCL(holds[t]) -> nexcl--
        :: else -> nshared--
        fi;
        holds[t] = NONE;
        st[t] = IDLE;
        grant_pass()
    }
}

inline end_async(t)
{
    atomic {
        assert(async_active && async_owner == t);
        async_active = false; async_owner = 255; abort_req = false;
        holds[t] = NONE;
        st[t] = IDLE;
        grant_pass()
    }
}

proctype owner()
{
    byte r;
#ifdef LIVE
    do
    :: begin(0, QUERY, false);
       if :: st[0] == GRANTED -> end_sync(0) :: else -> skip fi
    od
#else
    for (r : 1 .. ROUNDS) {
        if
        :: begin(0, ASYNC, false);
           if
           :: st[0] == GRANTED ->
               byte step;
               for (step : 1 .. 2) {
                   if
                   :: abort_req -> break
                   :: else -> skip
                   fi;
                   begin(0, MODIFY, false); /* nested: ignores the mask */
                   if
                   :: st[0] == GRANTED -> end_sync(0); st[0] = GRANTED; holds[0] = ASYNC
                   :: else -> st[0] = GRANTED; holds[0] = ASYNC; break
                   fi
               };
               kind[0] = ASYNC;
               end_async(0)
           :: else -> skip
           fi
        :: begin(0, MODIFY, false);
           if :: st[0] == GRANTED -> end_sync(0) :: else -> skip fi
        fi
    }
#endif
}

proctype stream()
{
    byte r;
#ifdef LIVE
    do
    :: begin(1, QUERY, false); end_sync(1)
    od
#else
    for (r : 1 .. ROUNDS) {
        begin(1, QUERY, false);
        if :: st[1] == GRANTED -> end_sync(1) :: else -> skip fi
    }
#endif
}

/* The MODIFY under test in LIVE mode. */
bool m_waiting = false;
bool m_granted = false;

proctype other()
{
    byte r;
#ifdef LIVE
    do
    :: atomic { m_waiting = true; m_granted = false };
       begin(2, MODIFY, false);
       atomic { m_granted = true; m_waiting = false };
       end_sync(2)
    od
#else
    for (r : 1 .. ROUNDS) {
        if
        :: begin(2, MODIFY, true)
        :: begin(2, QUERY, true)
        :: begin(2, ABORT, true)
        :: begin(2, DESTROY, true)
        :: !removed -> remove_object()
        :: begin(2, MODIFY, true);
           if :: st[2] == GRANTED -> remove_object() :: else -> skip fi
        fi;
        if :: st[2] == GRANTED -> end_sync(2) :: else -> skip fi
    }
#endif
}

#ifdef LIVE
ltl modify_runs { [] (m_waiting -> <> m_granted) }
#endif

init
{
    byte i;
    for (i : 0 .. NT - 1) { holds[i] = NONE }
    atomic {
        run owner();
        run stream();
        run other()
    }
}
