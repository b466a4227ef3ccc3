/* SPDX-License-Identifier: MIT */
/*
 * moor/loop.h - an epoll event loop whose handler table may change under
 * its feet.
 *
 * A loop watches file descriptors, runs monotonic timers, and runs one-shot
 * callbacks scheduled from any thread (an eventfd wakes it). The handler
 * table is a visit list (moor/vlist.h), so a callback may add or remove
 * any handler, itself included, and may run a nested iteration of the same
 * loop; removal only marks a handler and the last visitor frees it.
 *
 * Handlers are named by ids (never reused within a loop), not pointers: a
 * remove of a handler that already went away is a clean -ENOENT instead of
 * a use-after-free. Each handler carries @opaque and an optional @free_fn,
 * called exactly once, with no loop lock held, when the handler is gone for
 * good (removed and no callback of it running or about to run), or when
 * adding it fails after all. That is the moment @opaque may be freed.
 *
 * Who iterates. A loop is run by one thread at a time: the thread inside
 * moor_loop_iterate() owns it, and another thread that calls iterate waits
 * for its turn (bounded by its own timeout). The owner may iterate again
 * from inside a callback (a nested iteration). Several threads may take
 * turns running one loop; a dedicated thread is started with
 * moor_loop_thread_start(). Everything else below may be called from any
 * thread, including from callbacks.
 *
 * Re-entrancy: a handler is not dispatched again while its own callback is
 * running (a nested iteration skips it, as GLib does for sources that
 * cannot recurse); fd handlers are level-triggered, so the event is seen
 * again on the next iteration after the callback returns. Meanwhile its fd
 * is disarmed, so a nested iteration sleeps instead of spinning on it (a
 * hang-up, which epoll cannot mask, may wake one nested iteration once).
 *
 * Lock order: no loop function may be called with a lock held that a
 * callback of the same loop takes, when the function can block (iterate,
 * remove_sync, thread_stop). The loop holds no lock of its own while a
 * callback runs.
 *
 * The loop is a refcounted moor object (class "moor_loop"): moor_ref() /
 * moor_unref(). Its last unref stops its thread (if started), gives every
 * handler and pending scheduled callback back through its free_fn without
 * running it, and closes the epoll and eventfd descriptors; those free_fns
 * must not use the loop any more (calls on it fail with -EINVAL).
 * moor_loop_iterate() holds a reference of its own while it runs, so a
 * callback that drops its caller's reference does not dispose the loop
 * under it; the last unref then happens when iterate returns. The loop
 * thread holds one only while it dispatches: if the last other reference
 * goes meanwhile, the teardown happens on the loop thread when that
 * dispatch ends, after the caller's moor_unref() returned. Call
 * moor_loop_thread_stop() first for a teardown that is complete when
 * moor_unref() returns. A last unref while a thread iterates (only
 * possible with a reference dropped twice) is reported as misuse
 * (MOOR_MISUSE_DISPOSE_LOCKED).
 */
#ifndef MOOR_LOOP_H
#define MOOR_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include <moor/error.h>
#include <moor/export.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moor_loop moor_loop;

/* fd event bits: IN and OUT may be asked for; ERR and HUP are always
 * reported when they happen. */
enum {
    MOOR_LOOP_IN = 1u << 0,
    MOOR_LOOP_OUT = 1u << 1,
    MOOR_LOOP_ERR = 1u << 2,
    MOOR_LOOP_HUP = 1u << 3,
};

/* Callbacks run in the thread that iterates @loop, with no loop lock held,
 * and may call any function in this header on @loop (remove_sync of their
 * own handler returns at once: see moor_loop_remove_sync()). */
typedef void (*moor_loop_fd_fn)(moor_loop *loop, uint64_t id, int fd, unsigned revents,
                                void *opaque);
typedef void (*moor_loop_timer_fn)(moor_loop *loop, uint64_t id, void *opaque);
typedef void (*moor_loop_call_fn)(moor_loop *loop, void *opaque);
typedef void (*moor_loop_free_fn)(void *opaque);

/*
 * moor_loop_new - a loop with no handlers.
 * Ownership: new reference (drop with moor_unref()). Locks: none.
 * Blocks: no. Returns: the loop, or NULL with @err set: -ENOMEM, or the
 * -errno of epoll_create1()/eventfd() (-EMFILE, -ENFILE).
 */
MOOR_EXPORT moor_loop *moor_loop_new(moor_error *err);

/*
 * moor_loop_add_fd - call @fn when @fd is ready for @events (IN and/or OUT;
 * 0 = only ERR/HUP; ERR and HUP bits in @events are accepted and change
 * nothing).
 *
 * Ownership: @fd stays the caller's: the loop never closes it, and the
 * caller must not close it before the handler is removed (remove_sync, or
 * in @free_fn; a remove that finds the fd closed reports it as misuse).
 * @opaque goes to @free_fn (may be NULL) when the handler is
 * gone, or at once if the add fails for any reason, -EINVAL included
 * (unlike moor_loop_schedule(), which never calls it on failure).
 * Locks: none held by the caller that a callback takes is fine: add never
 * blocks on a callback. Blocks: briefly on the handler table's mutex.
 * Context: any thread.
 * Returns: 0 and the new handler's id in *@id (may be NULL); or
 *   -EINVAL  NULL @loop/@fn, @fd < 0, unknown bits in @events;
 *   -EEXIST  @fd already has a handler on this loop;
 *   -ENOMEM, or the -errno of epoll_ctl() (-EBADF, -EPERM for regular
 *   files).
 */
MOOR_EXPORT int moor_loop_add_fd(moor_loop *loop, int fd, unsigned events, moor_loop_fd_fn fn,
                                 void *opaque, moor_loop_free_fn free_fn, uint64_t *id,
                                 moor_error *err);

/*
 * moor_loop_update_fd - change the events fd handler @id waits for.
 * Ownership: nothing changes hands. Locks, Blocks, Context: as
 * moor_loop_add_fd().
 * Returns: 0; -ENOENT (no such live fd handler); -EINVAL (bad @events);
 * or the -errno of epoll_ctl(). Nothing changes on failure.
 */
MOOR_EXPORT int moor_loop_update_fd(moor_loop *loop, uint64_t id, unsigned events, moor_error *err);

/*
 * moor_loop_add_timer - call @fn @delay_ms from now on the monotonic clock,
 * then every @period_ms if that is not 0.
 *
 * A one-shot timer (period 0) is removed after its callback returns, unless
 * the callback re-armed it with moor_loop_update_timer() (its @free_fn runs
 * when the iteration that fired it, or the outermost one it is nested in,
 * ends). Timers due in one iteration run in deadline order,
 * ties in the order they were added. A periodic timer is rescheduled from
 * its previous deadline, skipping periods it missed, so it never fires in a
 * burst. Ownership, Locks, Blocks, Context: as moor_loop_add_fd().
 * Returns: 0 and the id in *@id (may be NULL); -EINVAL (NULL @loop/@fn);
 * -ENOMEM.
 */
MOOR_EXPORT int moor_loop_add_timer(moor_loop *loop, uint32_t delay_ms, uint32_t period_ms,
                                    moor_loop_timer_fn fn, void *opaque, moor_loop_free_fn free_fn,
                                    uint64_t *id, moor_error *err);

/*
 * moor_loop_update_timer - re-arm timer @id: due @delay_ms from now, then
 * every @period_ms (0: one-shot). Works from the timer's own callback (the
 * new schedule holds after it returns).
 * Ownership: nothing changes hands. Locks, Blocks: as add.
 * Returns: 0; -ENOENT (no such live timer).
 */
MOOR_EXPORT int moor_loop_update_timer(moor_loop *loop, uint64_t id, uint32_t delay_ms,
                                       uint32_t period_ms, moor_error *err);

/*
 * moor_loop_remove - remove handler @id (fd or timer).
 *
 * No dispatch of it starts after this returns. A callback already running
 * in another thread's iteration may still be running: the free_fn runs once
 * it has returned (and no visit can see the handler any more). Use
 * moor_loop_remove_sync() to wait for that. When no iteration is in
 * progress the free_fn runs in the calling thread before this returns;
 * otherwise in the thread whose iteration ends last.
 * Ownership: the handler's opaque goes back through its free_fn (see
 * above). Locks: none that the free_fn takes. Blocks: briefly on the handler
 * table's mutex, plus the free_fn when it runs here; never on a callback.
 * Context: any thread, including any callback.
 * Returns: 0; -ENOENT if @id is not a live handler of @loop (never added,
 * already removed, or a one-shot timer that fired); -EINVAL (NULL @loop).
 */
MOOR_EXPORT int moor_loop_remove(moor_loop *loop, uint64_t id);

/*
 * moor_loop_remove_sync - as moor_loop_remove(), and return only when the
 * handler's callback is not running in any other thread and will not run
 * again, so the caller may free what the callback uses.
 *
 * Called from inside the handler's own callback (or from an iteration
 * nested under it) the calling thread's own frames cannot finish first:
 * it does not wait for them, and the removed handler is never started
 * again; what the running callback uses must then be freed in free_fn.
 * Ownership: as moor_loop_remove(). Locks: the caller must hold no lock
 * that the callback takes.
 * Blocks: until the callback running in another thread returns (unbounded:
 * as long as that callback runs). Context: any thread.
 * Returns: as moor_loop_remove().
 */
MOOR_EXPORT int moor_loop_remove_sync(moor_loop *loop, uint64_t id);

/*
 * moor_loop_remove_sync_deadline - moor_loop_remove_sync(), waiting at
 * most @timeout_ms for a callback running in another thread.
 *
 * Whatever it returns but -ENOENT/-EINVAL, the handler is removed and
 * never starts again. On -ETIMEDOUT its callback was still running at the
 * deadline: what it uses must not be freed by the caller yet; free_fn
 * still runs once that callback has returned (so leave freeing to it).
 * Ownership: as moor_loop_remove(). Locks: as moor_loop_remove_sync().
 * Blocks: at most @timeout_ms (0: not at all). Ordering: as
 * moor_loop_remove_sync() (seq_cst with the dispatcher). Context: any
 * thread; from the callback itself it never waits (see remove_sync).
 * Returns: 0; -ETIMEDOUT (removed, still running, see above); -ENOENT
 * (not a live handler of @loop); -EINVAL (NULL @loop).
 */
MOOR_EXPORT int moor_loop_remove_sync_deadline(moor_loop *loop, uint64_t id, uint32_t timeout_ms);

/*
 * moor_loop_schedule - run @fn(@loop, @opaque) once, soon, on the loop.
 *
 * Scheduled callbacks run in the order they were scheduled, in the thread
 * iterating @loop, each after the fd and timer callbacks of the iteration
 * that finds it; a sleeping loop is woken. @free_fn (may be NULL) runs
 * right after @fn, or instead of it if @loop is disposed first.
 * Ownership: @opaque goes to @free_fn on success only; on any failure
 * @free_fn is not called and @opaque stays the caller's (unlike
 * moor_loop_add_fd/add_timer, which free it on failure). Locks: none.
 * Blocks: no (one allocation and at most one eventfd write).
 * Context: any thread.
 * Returns: 0; -EINVAL (NULL @loop/@fn); -ENOMEM. Nothing is scheduled
 * and @free_fn is not called on either.
 */
MOOR_EXPORT int moor_loop_schedule(moor_loop *loop, moor_loop_call_fn fn, void *opaque,
                                   moor_loop_free_fn free_fn, moor_error *err);

/*
 * moor_loop_iterate - wait up to @timeout_ms (-1: no limit, 0: poll) for
 * events, then dispatch every ready fd handler, due timer and scheduled
 * callback once.
 *
 * Returns early, dispatching what is ready, when woken by
 * moor_loop_wakeup(), moor_loop_quit() or a schedule (or by a remove or a
 * timer change from another thread, or another thread waiting for its
 * turn). A thread waiting for its turn returns 0 when its timeout passes
 * or a wakeup/quit comes first; turns are handed over in FIFO order.
 * Ownership: iterate holds a reference of its own while it runs; nothing
 * else changes hands. Locks: see the file comment. Blocks: up to @timeout_ms for events (also
 * to get its turn if another thread is iterating), plus the time the
 * callbacks take. Context: any thread; may nest inside a callback of
 * @loop in the thread that owns the iteration.
 * Returns: the number of callbacks run (0 on timeout); -EINVAL (NULL
 * @loop, @timeout_ms < -1); or the -errno of epoll_wait() other than
 * EINTR (an EINTR counts as an early wake-up).
 */
MOOR_EXPORT int moor_loop_iterate(moor_loop *loop, int timeout_ms);

/*
 * moor_loop_run - iterate until moor_loop_quit().
 * A quit ends every run of @loop in progress when it is made (nested ones
 * and other threads' included); a later run starts afresh.
 * Ownership, Locks, Blocks, Context: as moor_loop_iterate(), until quit.
 * Returns: 0 after a quit; -EINVAL; or the first hard error of iterate.
 */
MOOR_EXPORT int moor_loop_run(moor_loop *loop);

/*
 * moor_loop_quit - make the runs in progress return (see moor_loop_run()).
 * moor_loop_wakeup - make a sleeping iteration return early.
 * Ownership: nothing changes hands. Returns: nothing.
 * Locks: none. Blocks: no (one eventfd write). Context: any thread,
 * including callbacks. NULL-safe.
 */
MOOR_EXPORT void moor_loop_quit(moor_loop *loop);
MOOR_EXPORT void moor_loop_wakeup(moor_loop *loop);

/*
 * moor_loop_thread_start - run @loop in a new thread of its own until
 * moor_loop_thread_stop() (or the last unref) ends it; moor_loop_quit()
 * does not (it ends runs, and the thread is not one). Other threads may
 * still iterate: they take turns with it.
 * Ownership: the thread belongs to @loop. Locks: none. Blocks: while
 * another thread's moor_loop_thread_stop() joins the thread (not when
 * called from the loop thread itself).
 * Returns: 0; -EINVAL (NULL); -EALREADY (a loop thread runs already,
 * or this is it);
 * the -errno of pthread_create() (-EAGAIN).
 */
MOOR_EXPORT int moor_loop_thread_start(moor_loop *loop, moor_error *err);

/*
 * moor_loop_thread_stop - quit the loop thread and join it.
 * Ownership: the thread is joined; @loop stays the caller's.
 * Locks: none that a callback of @loop takes. Blocks: until the running
 * callbacks return (and a concurrent stop's join ends). Context: any
 * thread; from the loop thread itself it fails at once, even while
 * another thread is stopping it.
 * Returns: 0; -EINVAL (NULL); -ESRCH (no loop thread); -EDEADLK (called
 * from the loop thread).
 */
MOOR_EXPORT int moor_loop_thread_stop(moor_loop *loop);

/*
 * moor_loop_in_loop - whether the calling thread is iterating @loop now
 * (inside moor_loop_iterate(), typically in one of its callbacks).
 * Ownership: none. Locks: none. Blocks: no.
 * Returns: true or false (false for NULL).
 */
MOOR_EXPORT bool moor_loop_in_loop(const moor_loop *loop);

#ifdef __cplusplus
}
#endif

#endif /* MOOR_LOOP_H */
