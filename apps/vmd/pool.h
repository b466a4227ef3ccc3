/* SPDX-License-Identifier: MIT */
/*
 * pool.h - moor-vmd's bounded worker pool with per-domain lanes.
 *
 * Every API call runs on one of a fixed number of worker threads, in one
 * of three classes:
 *  - FAST calls never wait for a job or for QEMU (state, info, list,
 *    version, debug, define; define does wait for its own disk writes,
 *    an fsync): they take any free worker first;
 *  - LANE calls may wait on a domain's QEMU or job: at most `lane_cap` of
 *    one domain hold a worker at once, the rest wait in that domain's lane
 *    queue, which holds no worker;
 *  - DESTROY: at most one per domain holds a worker (or is next to); later
 *    destroys of that domain wait behind it holding no worker.
 * With W >= 3 workers, LANE and DESTROY calls together hold at most W - 1
 * workers and LANE calls at most W - 2, so a fast call always finds a
 * worker, and a destroy never waits for lane work, whatever the mix. (With
 * W = 2, lane work holds at most one worker and a destroy the other, so a
 * fast call may wait for a destroy; with W = 1 all share the one worker.)
 * Each class has its own queue bound, refused at once with -EAGAIN: fast
 * calls queue_max * W in all; lane calls queue_max per domain and
 * queue_max * W in all; destroys queue_max per domain.
 *
 * See docs/vmd.md, "The worker pool".
 */
#ifndef MOOR_VMD_POOL_H
#define MOOR_VMD_POOL_H

#include <stdbool.h>

#include <moor/error.h>
#include <moor/registry.h>

struct json_object;
struct vmd_pool;
struct vmd_lane;

enum vmd_work_class {
    VMD_WORK_FAST = 0, /* never blocks: no lane, any free worker */
    VMD_WORK_LANE,     /* may wait on the domain: its lane's cap and queue */
    VMD_WORK_DESTROY,  /* one per domain at a time, ahead of lane work */
};

/* A unit of work, embedded in the caller's request. */
struct vmd_work {
    /* Runs on a worker thread, with no pool lock held. It may free the
     * struct that embeds this one: the pool no longer touches it. */
    void (*run)(struct vmd_work *work);
    /* Runs instead of run when the pool refuses work it had queued (at
     * drain): @code is -EAGAIN and @message says why. Same rules as run.
     * Runs on the draining thread. */
    void (*cancel)(struct vmd_work *work, int code, const char *message);
    /* The pool's own fields. */
    struct vmd_work *next;
    struct vmd_lane *lane;
    int cls; /* enum vmd_work_class */
};

/*
 * vmd_pool_new - start @workers threads (>= 1). @lane_cap (0: workers / 4,
 * at least 1) is the most workers lane work of one domain may hold;
 * @queue_max (0: 4 * workers) the most lane calls (and, apart, destroys)
 * waiting in one lane, and, times @workers, the most lane calls and the
 * most fast calls queued in the whole pool.
 * Ownership: the caller's; vmd_pool_free. Blocks: no.
 * Returns the pool, or NULL with @err: -EINVAL (0 workers), -ENOMEM, or
 * pthread_create's -EAGAIN.
 */
struct vmd_pool *vmd_pool_new(unsigned workers, unsigned lane_cap, unsigned queue_max,
                              moor_error *err);

/*
 * vmd_pool_submit - run @work on a worker. @uuid and @name (the domain,
 * for the lane key and for messages) are needed unless @class is FAST.
 * Ownership: @work is the pool's until its run or cancel starts; on
 * failure it stays the caller's and neither runs.
 * Locks: takes the pool mutex (a leaf). Blocks: no. Context: any thread
 * (the HTTP loop thread in the daemon).
 * Returns 0; -EAGAIN with @err naming the domain and how many requests
 * are queued (lane or destroy queue full), or the class's daemon-wide
 * queue full, or the pool is draining; -ENOMEM (a new lane); -EINVAL.
 */
int vmd_pool_submit(struct vmd_pool *pool, enum vmd_work_class cls, const moor_uuid *uuid,
                    const char *name, struct vmd_work *work, moor_error *err);

/*
 * vmd_pool_drain - refuse new work, cancel every queued item (its cancel
 * runs on this thread with -EAGAIN), wait for the running ones to return
 * and join the workers. Idempotent.
 * Locks: none may be held that a work item takes. Blocks: until the
 * running items return (each is bounded by the op's own deadlines).
 * Context: any thread but a worker.
 */
void vmd_pool_drain(struct vmd_pool *pool);

/* vmd_pool_free - drain (if not yet) and free. NULL-safe. */
void vmd_pool_free(struct vmd_pool *pool);

/*
 * vmd_pool_stats - a new JSON object: {"workers","busy","lane_cap",
 * "queue_max","queued","lanes":[{"domain","uuid","busy","queued",
 * "destroying"}...]}.
 * Locks: the pool mutex, briefly. Blocks: no. Returns NULL on -ENOMEM.
 */
struct json_object *vmd_pool_stats(struct vmd_pool *pool);

#endif /* MOOR_VMD_POOL_H */
