/* SPDX-License-Identifier: MIT */
/*
 * pool.c - worker threads and per-domain lanes under one mutex.
 *
 * Theory of operation. Four kinds of queue hold work that no worker runs
 * yet: `fast` (calls that never block), `dready` (destroys their lane has
 * admitted), `ready` (lane work its lane has admitted) and, in each lane,
 * `waiting` (lane work beyond the lane's cap) and `dwaiting` (destroys
 * behind the lane's running one). A lane admits an item into `ready` while
 * fewer than lane_cap of its items are admitted (in `ready` or running),
 * and one destroy at a time into `dready`; when one finishes, the lane's
 * oldest waiting item of the same class is admitted in its place. A worker
 * takes from `fast` first, then from `dready`, then from `ready`, with two
 * limits: lane work and destroys together hold at most block_limit
 * workers (workers - 1), and lane work alone at most lane_limit (workers -
 * 2), so one worker is always left for fast calls and one for destroys
 * (with three workers or more; see vmd_pool_new for fewer). Each class has its own queue bound, so
 * a full class never refuses another. Lanes exist only while they hold work and are found by a
 * linear walk: there are as many as domains with calls in flight, a handful. The pool mutex is a
 * leaf: no callback runs under it.
 */
#include "pool.h"

#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmd.h"

struct work_queue {
    struct vmd_work *head, *tail;
    unsigned n;
};

struct vmd_lane {
    struct vmd_lane *next;
    moor_uuid uuid;
    char name[VMD_NAME_MAX + 1];
    unsigned admitted; /* LANE items in `ready` or running */
    unsigned running;  /* items of this lane on a worker, destroy included */
    bool destroying;   /* a DESTROY item in `dready` or running */
    struct work_queue waiting, dwaiting;
};

struct vmd_pool {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* work to take, or draining */
    pthread_t *threads;
    unsigned workers, lane_cap, queue_max, lane_limit, block_limit;
    unsigned busy;         /* workers running an item */
    unsigned lane_busy;    /* workers running a LANE item */
    unsigned destroy_busy; /* workers running a DESTROY item */
    unsigned lane_queued;  /* LANE items not running: `ready` and lanes' `waiting` */
    struct work_queue fast, dready, ready;
    struct vmd_lane *lanes;
    bool draining;
    bool joined;
};

static void queue_push(struct work_queue *q, struct vmd_work *w)
{
    w->next = NULL;
    if (q->tail)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
    q->n++;
}

static struct vmd_work *queue_pop(struct work_queue *q)
{
    struct vmd_work *w = q->head;

    if (!w)
        return NULL;
    q->head = w->next;
    if (!q->head)
        q->tail = NULL;
    q->n--;
    w->next = NULL;
    return w;
}

static struct vmd_lane *lane_find(struct vmd_pool *pool, const moor_uuid *uuid)
{
    for (struct vmd_lane *l = pool->lanes; l; l = l->next)
        if (moor_uuid_equal(&l->uuid, uuid))
            return l;
    return NULL;
}

static struct vmd_lane *lane_get(struct vmd_pool *pool, const moor_uuid *uuid, const char *name)
{
    struct vmd_lane *l = lane_find(pool, uuid);

    if (l)
        return l;
    l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->uuid = *uuid;
    snprintf(l->name, sizeof(l->name), "%s", name ? name : "");
    l->next = pool->lanes;
    pool->lanes = l;
    return l;
}

/* Free @l if nothing refers to it any more. Pool mutex held. */
static void lane_put(struct vmd_pool *pool, struct vmd_lane *l)
{
    if (l->admitted || l->running || l->destroying || l->waiting.n || l->dwaiting.n)
        return;
    for (struct vmd_lane **pp = &pool->lanes; *pp; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    }
    free(l);
}

/* Items queued in every queue, for the figures. Pool mutex held. */
static unsigned queued_total(const struct vmd_pool *pool)
{
    unsigned n = pool->fast.n + pool->dready.n + pool->lane_queued;

    for (const struct vmd_lane *l = pool->lanes; l; l = l->next)
        n += l->dwaiting.n;
    return n;
}

/* The next item a worker may start, or NULL. Pool mutex held. */
static struct vmd_work *take(struct vmd_pool *pool)
{
    bool block_free = pool->lane_busy + pool->destroy_busy < pool->block_limit;
    struct vmd_work *w = queue_pop(&pool->fast);

    if (!w && block_free && (w = queue_pop(&pool->dready)))
        pool->destroy_busy++;
    if (!w && block_free && pool->lane_busy < pool->lane_limit && (w = queue_pop(&pool->ready))) {
        pool->lane_busy++;
        pool->lane_queued--;
    }
    if (!w)
        return NULL;
    pool->busy++;
    if (w->lane)
        w->lane->running++;
    return w;
}

/* Account for a finished item of class @cls in @lane. Pool mutex held. */
static void finish(struct vmd_pool *pool, int cls, struct vmd_lane *lane)
{
    pool->busy--;
    if (cls == VMD_WORK_LANE)
        pool->lane_busy--;
    if (cls == VMD_WORK_DESTROY)
        pool->destroy_busy--;
    if (lane) {
        lane->running--;
        if (cls == VMD_WORK_DESTROY) {
            struct vmd_work *next = queue_pop(&lane->dwaiting);
            lane->destroying = next != NULL;
            if (next)
                queue_push(&pool->dready, next);
        }
        if (cls == VMD_WORK_LANE) {
            lane->admitted--;
            struct vmd_work *next = queue_pop(&lane->waiting);
            if (next) {
                lane->admitted++;
                queue_push(&pool->ready, next);
            }
        }
        lane_put(pool, lane);
    }
    /* No wake-up here: the worker that finished looks for work itself
     * next, and take() is the same for every idle worker, so what it
     * cannot take now no sleeping worker could either (a broadcast here
     * woke every idle worker after every call, only for all but one to
     * sleep again: some 20 futex calls per API call). */
}

/* Whether items are queued where take() looks. Pool mutex held. */
static bool ready_queued(const struct vmd_pool *pool)
{
    return pool->fast.n || pool->dready.n || pool->ready.n;
}

static void *worker_main(void *arg)
{
    struct vmd_pool *pool = arg;

    pthread_mutex_lock(&pool->lock);
    for (;;) {
        struct vmd_work *w = take(pool);
        if (!w) {
            if (pool->draining)
                break;
            pthread_cond_wait(&pool->wake, &pool->lock);
            continue;
        }
        /* More to take: pass the wake-up on to one more worker (each
         * submit wakes one; a worker that takes an item while others wait
         * wakes the next, so queued items never wait for a sleeping one). */
        if (ready_queued(pool))
            pthread_cond_signal(&pool->wake);
        int cls = w->cls;
        struct vmd_lane *lane = w->lane;
        pthread_mutex_unlock(&pool->lock);
        w->run(w); /* may free w */
        pthread_mutex_lock(&pool->lock);
        finish(pool, cls, lane);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

struct vmd_pool *vmd_pool_new(unsigned workers, unsigned lane_cap, unsigned queue_max,
                              moor_error *err)
{
    if (workers == 0) {
        moor_error_set(err, -EINVAL, "the pool needs at least one worker");
        return NULL;
    }
    struct vmd_pool *pool = calloc(1, sizeof(*pool));
    if (!pool || !(pool->threads = calloc(workers, sizeof(*pool->threads)))) {
        free(pool);
        moor_error_set(err, -ENOMEM, "no memory for a pool of %u workers", workers);
        return NULL;
    }
    pool->lane_cap = lane_cap ? lane_cap : (workers / 4 ? workers / 4 : 1);
    pool->queue_max = queue_max ? queue_max : 4 * workers;
    /* W >= 3: one worker kept for fast calls, one more for destroys. W = 2:
     * destroys never wait for lane work; fast calls may wait for a
     * destroy. W = 1: all share the one worker. */
    pool->block_limit = workers > 2 ? workers - 1 : workers;
    pool->lane_limit = workers > 2 ? workers - 2 : 1;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    for (unsigned i = 0; i < workers; i++) {
        int rc = pthread_create(&pool->threads[i], NULL, worker_main, pool);
        if (rc != 0) {
            moor_error_set(err, -rc, "cannot start worker %u of %u", i + 1, workers);
            pool->workers = i;
            vmd_pool_free(pool);
            return NULL;
        }
        pool->workers = i + 1;
    }
    return pool;
}

/* Queue FAST @work, or refuse it with -EAGAIN. Pool mutex held. */
static int submit_fast(struct vmd_pool *pool, struct vmd_work *work, moor_error *err)
{
    unsigned limit = pool->queue_max * pool->workers;

    if (pool->fast.n >= limit)
        return moor_error_set(err, -EAGAIN, "%u quick calls queued in the daemon (limit %u)",
                              pool->fast.n, limit);
    queue_push(&pool->fast, work);
    return 0;
}

/* Queue DESTROY @work in @lane: admitted at once unless the lane's destroy
 * is queued or running, then behind it (holding no worker). Pool mutex
 * held. */
static int submit_destroy(struct vmd_pool *pool, struct vmd_lane *lane, struct vmd_work *work,
                          moor_error *err)
{
    if (!lane->destroying) {
        lane->destroying = true;
        queue_push(&pool->dready, work);
    } else if (lane->dwaiting.n >= pool->queue_max) {
        return moor_error_set(err, -EAGAIN,
                              "domain %s: %u destroys queued behind the running one (limit %u)",
                              lane->name, lane->dwaiting.n, pool->queue_max);
    } else {
        queue_push(&lane->dwaiting, work);
    }
    work->lane = lane;
    return 0;
}

/* Queue LANE @work in @lane: admitted under the lane's cap, else in its
 * queue; refused past the lane's or the daemon's bound. Pool mutex held. */
static int submit_lane(struct vmd_pool *pool, struct vmd_lane *lane, struct vmd_work *work,
                       moor_error *err)
{
    unsigned limit = pool->queue_max * pool->workers;
    bool admit = lane->admitted < pool->lane_cap;

    if (!admit && lane->waiting.n >= pool->queue_max)
        return moor_error_set(err, -EAGAIN,
                              "domain %s: %u requests queued behind %u busy ones (limit %u)",
                              lane->name, lane->waiting.n, lane->admitted, pool->queue_max);
    if (pool->lane_queued >= limit)
        return moor_error_set(err, -EAGAIN, "%u domain requests queued in the daemon (limit %u)",
                              pool->lane_queued, limit);
    if (admit) {
        lane->admitted++;
        queue_push(&pool->ready, work);
    } else {
        queue_push(&lane->waiting, work);
    }
    work->lane = lane;
    pool->lane_queued++;
    return 0;
}

int vmd_pool_submit(struct vmd_pool *pool, enum vmd_work_class cls, const moor_uuid *uuid,
                    const char *name, struct vmd_work *work, moor_error *err)
{
    if (!pool || !work || !work->run || !work->cancel || cls < VMD_WORK_FAST ||
        cls > VMD_WORK_DESTROY || (cls != VMD_WORK_FAST && !uuid))
        return moor_error_set(err, -EINVAL, "bad arguments to the worker pool");
    pthread_mutex_lock(&pool->lock);
    int rc;
    struct vmd_lane *lane = NULL;
    work->cls = cls;
    work->lane = NULL;
    if (pool->draining) {
        rc = moor_error_set(err, -EAGAIN, "the daemon is shutting down");
    } else if (cls == VMD_WORK_FAST) {
        rc = submit_fast(pool, work, err);
    } else if (!(lane = lane_get(pool, uuid, name))) {
        rc = moor_error_set(err, -ENOMEM, "no memory for the lane of domain %s", name);
    } else {
        rc = cls == VMD_WORK_DESTROY ? submit_destroy(pool, lane, work, err)
                                     : submit_lane(pool, lane, work, err);
        if (rc < 0)
            lane_put(pool, lane); /* a lane made for a refused item */
    }
    if (rc == 0)
        pthread_cond_signal(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    return rc;
}

/* Move every queued item to @out and fix the counters. Pool mutex held. */
static void unqueue_all(struct vmd_pool *pool, struct work_queue *out)
{
    struct vmd_work *w;

    while ((w = queue_pop(&pool->fast)))
        queue_push(out, w);
    while ((w = queue_pop(&pool->dready))) {
        w->lane->destroying = false;
        queue_push(out, w);
    }
    while ((w = queue_pop(&pool->ready))) {
        w->lane->admitted--;
        queue_push(out, w);
    }
    for (struct vmd_lane *l = pool->lanes; l; l = l->next) {
        while ((w = queue_pop(&l->waiting)))
            queue_push(out, w);
        while ((w = queue_pop(&l->dwaiting)))
            queue_push(out, w);
    }
    pool->lane_queued = 0;
    for (struct vmd_lane *l = pool->lanes, *next; l; l = next) {
        next = l->next;
        lane_put(pool, l);
    }
}

void vmd_pool_drain(struct vmd_pool *pool)
{
    struct work_queue cancelled = {0};

    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    bool join = !pool->joined;
    pool->draining = true;
    pool->joined = true;
    unqueue_all(pool, &cancelled);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);

    struct vmd_work *w;
    while ((w = queue_pop(&cancelled)))
        w->cancel(w, -EAGAIN, "the daemon is shutting down");
    if (join)
        for (unsigned i = 0; i < pool->workers; i++)
            pthread_join(pool->threads[i], NULL);
}

void vmd_pool_free(struct vmd_pool *pool)
{
    if (!pool)
        return;
    vmd_pool_drain(pool);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    free(pool->threads);
    free(pool);
}

static struct json_object *lane_json(const struct vmd_lane *l)
{
    char uuid[MOOR_UUID_STRING_SIZE];
    struct json_object *o = json_object_new_object();

    if (!o)
        return NULL;
    json_object_object_add(o, "domain", json_object_new_string(l->name));
    json_object_object_add(o, "uuid", json_object_new_string(moor_uuid_format(&l->uuid, uuid)));
    json_object_object_add(o, "busy", json_object_new_int64(l->running));
    json_object_object_add(o, "queued", json_object_new_int64(l->waiting.n + l->dwaiting.n));
    json_object_object_add(o, "destroying", json_object_new_boolean(l->destroying));
    return o;
}

struct json_object *vmd_pool_stats(struct vmd_pool *pool)
{
    struct json_object *o = json_object_new_object();
    struct json_object *lanes = json_object_new_array();

    if (!o || !lanes) {
        json_object_put(o);
        json_object_put(lanes);
        return NULL;
    }
    pthread_mutex_lock(&pool->lock);
    json_object_object_add(o, "workers", json_object_new_int64(pool->workers));
    json_object_object_add(o, "busy", json_object_new_int64(pool->busy));
    json_object_object_add(o, "lane_cap", json_object_new_int64(pool->lane_cap));
    json_object_object_add(o, "queue_max", json_object_new_int64(pool->queue_max));
    json_object_object_add(o, "queued", json_object_new_int64(queued_total(pool)));
    for (struct vmd_lane *l = pool->lanes; l; l = l->next)
        json_object_array_add(lanes, lane_json(l));
    pthread_mutex_unlock(&pool->lock);
    json_object_object_add(o, "lanes", lanes);
    return o;
}
