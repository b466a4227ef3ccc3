/* SPDX-License-Identifier: MIT */
/*
 * pool.c - worker threads and per-domain lanes under one mutex.
 *
 * Theory of operation. Three kinds of queue hold work that no worker runs
 * yet: `fast` (calls that never block, and destroy), `ready` (lane work a
 * lane has admitted) and each lane's own `waiting` queue (lane work beyond
 * the lane's cap). A lane admits an item into `ready` while fewer than
 * lane_cap of its items are admitted (in `ready` or running); when one
 * finishes, the lane's oldest waiting item is admitted in its place. A
 * worker takes from `fast` first, then from `ready` as long as lane work
 * holds fewer than lane_limit workers (workers - 1, so one worker is always
 * left for fast calls). Lanes exist only while they hold work and are
 * found by a linear walk: there are as many as domains with calls in
 * flight, a handful. The pool mutex is a leaf: no callback runs under it.
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
    unsigned destroys; /* DESTROY items queued or running */
    struct work_queue waiting;
};

struct vmd_pool {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* work to take, or draining */
    pthread_t *threads;
    unsigned workers, lane_cap, queue_max, lane_limit;
    unsigned busy;      /* workers running an item */
    unsigned lane_busy; /* workers running a LANE item */
    unsigned queued;    /* items not running yet, every queue */
    struct work_queue fast, ready;
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
    if (l->admitted || l->running || l->destroys || l->waiting.n)
        return;
    for (struct vmd_lane **pp = &pool->lanes; *pp; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    }
    free(l);
}

/* The next item a worker may start, or NULL. Pool mutex held. */
static struct vmd_work *take(struct vmd_pool *pool)
{
    struct vmd_work *w = queue_pop(&pool->fast);

    if (!w && pool->ready.n && pool->lane_busy < pool->lane_limit) {
        w = queue_pop(&pool->ready);
        pool->lane_busy++;
    }
    if (!w)
        return NULL;
    pool->queued--;
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
    if (lane) {
        lane->running--;
        if (cls == VMD_WORK_DESTROY)
            lane->destroys--;
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
    /* A lane slot or a lane-work slot may have opened: anyone may take. */
    pthread_cond_broadcast(&pool->wake);
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
    pool->lane_limit = workers > 1 ? workers - 1 : 1;
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

int vmd_pool_submit(struct vmd_pool *pool, enum vmd_work_class cls, const moor_uuid *uuid,
                    const char *name, struct vmd_work *work, moor_error *err)
{
    if (!pool || !work || !work->run || !work->cancel || (cls != VMD_WORK_FAST && !uuid))
        return moor_error_set(err, -EINVAL, "bad arguments to the worker pool");
    pthread_mutex_lock(&pool->lock);
    int rc = 0;
    if (pool->draining) {
        rc = moor_error_set(err, -EAGAIN, "the daemon is shutting down");
    } else if (pool->queued >= pool->queue_max * pool->workers) {
        rc = moor_error_set(err, -EAGAIN, "%u requests queued in the daemon (limit %u)",
                            pool->queued, pool->queue_max * pool->workers);
    } else {
        work->cls = cls;
        work->lane = NULL;
        struct vmd_lane *lane = cls == VMD_WORK_FAST ? NULL : lane_get(pool, uuid, name);
        if (cls != VMD_WORK_FAST && !lane) {
            rc = moor_error_set(err, -ENOMEM, "no memory for the lane of domain %s", name);
        } else if (cls == VMD_WORK_FAST) {
            queue_push(&pool->fast, work);
        } else if (cls == VMD_WORK_DESTROY) {
            work->lane = lane;
            lane->destroys++;
            queue_push(&pool->fast, work);
        } else if (lane->admitted < pool->lane_cap) {
            work->lane = lane;
            lane->admitted++;
            queue_push(&pool->ready, work);
        } else if (lane->waiting.n >= pool->queue_max) {
            rc = moor_error_set(err, -EAGAIN,
                                "domain %s: %u requests queued behind %u busy ones (limit %u)",
                                lane->name, lane->waiting.n, lane->admitted, pool->queue_max);
        } else {
            work->lane = lane;
            queue_push(&lane->waiting, work);
        }
        if (rc == 0) {
            pool->queued++;
            pthread_cond_signal(&pool->wake);
        }
    }
    pthread_mutex_unlock(&pool->lock);
    return rc;
}

/* Move every queued item to @out and fix the counters. Pool mutex held. */
static void unqueue_all(struct vmd_pool *pool, struct work_queue *out)
{
    struct vmd_work *w;

    while ((w = queue_pop(&pool->fast))) {
        if (w->cls == VMD_WORK_DESTROY)
            w->lane->destroys--;
        queue_push(out, w);
    }
    while ((w = queue_pop(&pool->ready))) {
        w->lane->admitted--;
        queue_push(out, w);
    }
    for (struct vmd_lane *l = pool->lanes; l; l = l->next)
        while ((w = queue_pop(&l->waiting)))
            queue_push(out, w);
    pool->queued -= out->n;
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
    json_object_object_add(o, "queued", json_object_new_int64(l->waiting.n));
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
    json_object_object_add(o, "queued", json_object_new_int64(pool->queued));
    for (struct vmd_lane *l = pool->lanes; l; l = l->next)
        json_object_array_add(lanes, lane_json(l));
    pthread_mutex_unlock(&pool->lock);
    json_object_object_add(o, "lanes", lanes);
    return o;
}
