/* SPDX-License-Identifier: MIT */
/*
 * test-pool.c - the worker pool and its per-domain lanes on their own:
 * the cap per lane, the lane queue and its refusal, the workers kept free
 * for fast work and destroy, one destroy per domain, each class's own
 * queue bound, FIFO within a lane, the drain.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "pool.h"

#define WAIT_MS 10000

/* A shared gate the items wait at, and what happened to them. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static unsigned waiting, done, cancelled, order_len;
static int order[32];

struct item {
    struct vmd_work work;
    int id;
    bool blocks;
    int cancel_code;
};

static void reset(void)
{
    gate_open = false;
    waiting = done = cancelled = order_len = 0;
}

static void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
}

static void item_run(struct vmd_work *w)
{
    struct item *it = (struct item *)w;
    struct timespec deadline;

    deadline_in(&deadline, WAIT_MS);
    pthread_mutex_lock(&lock);
    if (order_len < 32)
        order[order_len++] = it->id;
    if (it->blocks) {
        waiting++;
        pthread_cond_broadcast(&cond);
        while (!gate_open)
            if (pthread_cond_timedwait(&cond, &lock, &deadline) == ETIMEDOUT)
                break;
        waiting--;
    }
    done++;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
}

static void item_cancel(struct vmd_work *w, int code, const char *message)
{
    struct item *it = (struct item *)w;

    assert_non_null(strstr(message, "shutting down"));
    pthread_mutex_lock(&lock);
    it->cancel_code = code;
    cancelled++;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
}

static struct item make(int id, bool blocks)
{
    return (struct item){
        .work = {.run = item_run, .cancel = item_cancel}, .id = id, .blocks = blocks};
}

/* Wait until *@counter reaches @want; fail naming @what after WAIT_MS. */
static void wait_count(unsigned *counter, unsigned want, const char *what)
{
    struct timespec deadline;

    deadline_in(&deadline, WAIT_MS);
    pthread_mutex_lock(&lock);
    while (*counter < want)
        if (pthread_cond_timedwait(&cond, &lock, &deadline) == ETIMEDOUT)
            break;
    unsigned got = *counter;
    pthread_mutex_unlock(&lock);
    if (got < want)
        fail_msg("%s: want %u, got %u after %d ms", what, want, got, WAIT_MS);
}

static void open_gate(void)
{
    pthread_mutex_lock(&lock);
    gate_open = true;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
}

static long lane_figure(struct vmd_pool *pool, const char *key)
{
    struct json_object *st = vmd_pool_stats(pool), *lanes, *v;
    long r = -1;

    assert_non_null(st);
    if (json_object_object_get_ex(st, "lanes", &lanes) && json_object_array_length(lanes) > 0 &&
        json_object_object_get_ex(json_object_array_get_idx(lanes, 0), key, &v))
        r = json_object_get_int64(v);
    json_object_put(st);
    return r;
}

static const moor_uuid uuid_a = {{1}}, uuid_b = {{2}}, uuid_c = {{3}}, uuid_d = {{4}};

static void test_lane_cap_queue_destroy(void **state)
{
    (void)state;
    moor_error err = MOOR_ERROR_INIT;
    struct vmd_pool *pool = vmd_pool_new(4, 1, 2, &err);
    struct item it[6] = {make(0, true),  make(1, false), make(2, false),
                         make(3, false), make(4, false), make(5, false)};

    reset();
    assert_non_null(pool);
    assert_int_equal(vmd_pool_submit(pool, VMD_WORK_LANE, &uuid_a, "a", &it[0].work, &err), 0);
    wait_count(&waiting, 1, "the first item of lane a running");
    assert_int_equal(vmd_pool_submit(pool, VMD_WORK_LANE, &uuid_a, "a", &it[1].work, &err), 0);
    assert_int_equal(vmd_pool_submit(pool, VMD_WORK_LANE, &uuid_a, "a", &it[2].work, &err), 0);
    assert_int_equal(lane_figure(pool, "queued"), 2);
    assert_int_equal(lane_figure(pool, "busy"), 1);
    /* full: refused at once, naming the domain and the queue */
    assert_int_equal(vmd_pool_submit(pool, VMD_WORK_LANE, &uuid_a, "a", &it[3].work, &err),
                     -EAGAIN);
    assert_non_null(strstr(err.message, "domain a: 2 requests queued"));
    /* other lanes, fast work and destroy still run */
    assert_int_equal(vmd_pool_submit(pool, VMD_WORK_LANE, &uuid_b, "b", &it[3].work, &err), 0);
    assert_int_equal(vmd_pool_submit(pool, VMD_WORK_FAST, NULL, NULL, &it[4].work, &err), 0);
    assert_int_equal(vmd_pool_submit(pool, VMD_WORK_DESTROY, &uuid_a, "a", &it[5].work, &err), 0);
    wait_count(&done, 3, "lane b, fast and destroy items done beside the stuck one");
    open_gate();
    wait_count(&done, 6, "every item done");
    /* within lane a: FIFO */
    int pos1 = -1, pos2 = -1;
    for (unsigned i = 0; i < order_len; i++) {
        pos1 = order[i] == 1 ? (int)i : pos1;
        pos2 = order[i] == 2 ? (int)i : pos2;
    }
    assert_true(pos1 >= 0 && pos2 > pos1);
    vmd_pool_free(pool);
}

/* Submit @cls @work, asserting it is accepted. */
static void submit_ok(struct vmd_pool *pool, enum vmd_work_class cls, const moor_uuid *uuid,
                      struct item *it)
{
    moor_error err = MOOR_ERROR_INIT;
    int rc = vmd_pool_submit(pool, cls, uuid, "x", &it->work, &err);

    if (rc != 0)
        fail_msg("item %d refused: %d (%s)", it->id, rc, err.message);
}

static void assert_waiting(unsigned want)
{
    pthread_mutex_lock(&lock);
    unsigned got = waiting;
    pthread_mutex_unlock(&lock);
    assert_int_equal(got, want);
}

static void test_fast_worker_kept(void **state)
{
    (void)state;
    moor_error err = MOOR_ERROR_INIT;
    struct vmd_pool *pool = vmd_pool_new(4, 1, 4, &err);
    struct item it[5] = {make(0, true), make(1, true), make(2, true), make(3, true),
                         make(4, false)};
    const moor_uuid *lanes[4] = {&uuid_a, &uuid_b, &uuid_c, &uuid_d};

    reset();
    for (int i = 0; i < 4; i++)
        submit_ok(pool, VMD_WORK_LANE, lanes[i], &it[i]);
    wait_count(&waiting, 2, "two lane items stuck");
    /* lane work holds workers - 2 at most: the fast item runs */
    submit_ok(pool, VMD_WORK_FAST, NULL, &it[4]);
    wait_count(&done, 1, "the fast item done");
    assert_waiting(2);
    open_gate();
    wait_count(&done, 5, "every item done");
    vmd_pool_free(pool);
}

/* Review finding 1: destroys of one domain run one at a time; a burst of
 * them holds one worker, and a fast call still runs. */
static void test_destroy_one_per_domain(void **state)
{
    (void)state;
    moor_error err = MOOR_ERROR_INIT;
    struct vmd_pool *pool = vmd_pool_new(4, 1, 4, &err);
    struct item it[6] = {make(0, true), make(1, true),  make(2, true),
                         make(3, true), make(4, false), make(5, false)};

    reset();
    for (int i = 0; i < 4; i++)
        submit_ok(pool, VMD_WORK_DESTROY, &uuid_a, &it[i]);
    wait_count(&waiting, 1, "the first destroy running");
    submit_ok(pool, VMD_WORK_FAST, NULL, &it[4]);
    wait_count(&done, 1, "the fast item done beside the destroys");
    assert_waiting(1);
    assert_int_equal(lane_figure(pool, "busy"), 1);
    assert_int_equal(lane_figure(pool, "queued"), 3);
    /* the destroy queue is bounded by queue_max (4) */
    submit_ok(pool, VMD_WORK_DESTROY, &uuid_a, &it[5]);
    struct item extra = make(6, false);
    assert_int_equal(vmd_pool_submit(pool, VMD_WORK_DESTROY, &uuid_a, "a", &extra.work, &err),
                     -EAGAIN);
    assert_non_null(strstr(err.message, "domain x: 4 destroys queued"));
    open_gate();
    wait_count(&done, 6, "every item done");
    static const int fifo[5] = {0, 1, 2, 3, 5}; /* the destroys, in order */
    unsigned next = 0;
    for (unsigned i = 0; i < order_len; i++)
        if (order[i] != 4)
            assert_int_equal(order[i], fifo[next++]);
    assert_int_equal(next, 5);
    vmd_pool_free(pool);
}

/* Any mix: stuck lane work on many domains and stuck destroys on many
 * domains still leave a worker for destroy (behind lane work) and one for
 * fast calls. */
static void test_mix_keeps_workers(void **state)
{
    (void)state;
    moor_error err = MOOR_ERROR_INIT;
    struct vmd_pool *pool = vmd_pool_new(4, 1, 4, &err);
    struct item it[9] = {make(0, true), make(1, true), make(2, true),  make(3, true), make(4, true),
                         make(5, true), make(6, true), make(7, false), make(8, false)};
    const moor_uuid *lanes[4] = {&uuid_a, &uuid_b, &uuid_c, &uuid_d};

    reset();
    for (int i = 0; i < 4; i++)
        submit_ok(pool, VMD_WORK_LANE, lanes[i], &it[i]);
    wait_count(&waiting, 2, "lane work holding workers - 2");
    /* a destroy finds the worker lane work may not take */
    submit_ok(pool, VMD_WORK_DESTROY, &uuid_c, &it[4]);
    wait_count(&waiting, 3, "the destroy running beside the stuck lane work");
    /* more destroys of other domains wait: the last worker is for fast calls */
    submit_ok(pool, VMD_WORK_DESTROY, &uuid_d, &it[5]);
    submit_ok(pool, VMD_WORK_DESTROY, &uuid_a, &it[6]);
    submit_ok(pool, VMD_WORK_FAST, NULL, &it[7]);
    submit_ok(pool, VMD_WORK_FAST, NULL, &it[8]);
    wait_count(&done, 2, "both fast items done");
    assert_waiting(3);
    open_gate();
    wait_count(&done, 9, "every item done");
    vmd_pool_free(pool);
}

/* Two workers: stuck lane work leaves the other to destroy. */
static void test_two_workers(void **state)
{
    (void)state;
    moor_error err = MOOR_ERROR_INIT;
    struct vmd_pool *pool = vmd_pool_new(2, 2, 4, &err);
    struct item it[4] = {make(0, true), make(1, true), make(2, true), make(3, false)};

    reset();
    submit_ok(pool, VMD_WORK_LANE, &uuid_a, &it[0]);
    submit_ok(pool, VMD_WORK_LANE, &uuid_b, &it[1]);
    wait_count(&waiting, 1, "one lane item stuck");
    submit_ok(pool, VMD_WORK_DESTROY, &uuid_a, &it[2]);
    wait_count(&waiting, 2, "the destroy running beside the stuck lane item");
    submit_ok(pool, VMD_WORK_FAST, NULL, &it[3]);
    open_gate();
    wait_count(&done, 4, "every item done");
    vmd_pool_free(pool);
}

/* Review finding 2: lane work that fills the daemon-wide queue does not
 * refuse fast calls or destroy. */
static void test_class_bounds(void **state)
{
    (void)state;
    moor_error err = MOOR_ERROR_INIT;
    struct vmd_pool *pool = vmd_pool_new(4, 1, 1, &err);
    struct item it[12];
    moor_uuid uuids[10];

    reset();
    for (int i = 0; i < 12; i++)
        it[i] = make(i, i < 10);
    for (int i = 0; i < 10; i++)
        uuids[i] = (moor_uuid){{(uint8_t)(0x10 + i)}};
    submit_ok(pool, VMD_WORK_LANE, &uuids[0], &it[0]);
    submit_ok(pool, VMD_WORK_LANE, &uuids[1], &it[1]);
    wait_count(&waiting, 2, "lane work holding workers - 2");
    /* 4 more admitted but not running: the daemon-wide bound (1 x 4) */
    int accepted = 2, rc = 0;
    for (int i = 2; i < 10 && rc == 0; i++) {
        rc = vmd_pool_submit(pool, VMD_WORK_LANE, &uuids[i], "x", &it[i].work, &err);
        accepted += rc == 0;
    }
    assert_int_equal(rc, -EAGAIN);
    assert_int_equal(accepted, 6);
    /* fast calls and destroy are still taken and run */
    submit_ok(pool, VMD_WORK_FAST, NULL, &it[10]);
    submit_ok(pool, VMD_WORK_DESTROY, &uuids[9], &it[11]);
    assert_non_null(strstr(err.message, "4 domain requests queued in the daemon (limit 4)"));
    wait_count(&done, 2, "the fast item and the destroy done");
    open_gate();
    wait_count(&done, 8, "every accepted item done");
    vmd_pool_free(pool);
}

struct drainer {
    pthread_t thread;
    struct vmd_pool *pool;
};

static void *drain_main(void *arg)
{
    vmd_pool_drain(((struct drainer *)arg)->pool);
    return NULL;
}

static void test_drain(void **state)
{
    (void)state;
    moor_error err = MOOR_ERROR_INIT;
    struct vmd_pool *pool = vmd_pool_new(2, 1, 4, &err);
    struct item it[4] = {make(0, true), make(1, false), make(2, false), make(3, false)};
    struct drainer d = {.pool = pool};

    reset();
    assert_int_equal(vmd_pool_submit(pool, VMD_WORK_LANE, &uuid_a, "a", &it[0].work, &err), 0);
    wait_count(&waiting, 1, "the running item");
    assert_int_equal(vmd_pool_submit(pool, VMD_WORK_LANE, &uuid_a, "a", &it[1].work, &err), 0);
    assert_int_equal(vmd_pool_submit(pool, VMD_WORK_LANE, &uuid_a, "a", &it[2].work, &err), 0);
    assert_int_equal(pthread_create(&d.thread, NULL, drain_main, &d), 0);
    /* the queued ones are cancelled while the running one still runs */
    wait_count(&cancelled, 2, "queued items cancelled");
    assert_int_equal(it[1].cancel_code, -EAGAIN);
    assert_int_equal(it[2].cancel_code, -EAGAIN);
    assert_int_equal(vmd_pool_submit(pool, VMD_WORK_FAST, NULL, NULL, &it[3].work, &err), -EAGAIN);
    pthread_mutex_lock(&lock);
    assert_int_equal(done, 0);
    pthread_mutex_unlock(&lock);
    open_gate();
    pthread_join(d.thread, NULL);
    assert_int_equal(done, 1);
    vmd_pool_drain(pool); /* idempotent */
    vmd_pool_free(pool);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    moor_error err = MOOR_ERROR_INIT;
    struct item it = make(0, false);

    assert_null(vmd_pool_new(0, 0, 0, &err));
    assert_int_equal(err.code, -EINVAL);
    struct vmd_pool *pool = vmd_pool_new(1, 0, 0, &err);
    assert_non_null(pool);
    assert_int_equal(vmd_pool_submit(pool, VMD_WORK_LANE, NULL, "a", &it.work, &err), -EINVAL);
    it.work.cancel = NULL;
    assert_int_equal(vmd_pool_submit(pool, VMD_WORK_FAST, NULL, NULL, &it.work, &err), -EINVAL);
    vmd_pool_free(pool);
    vmd_pool_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lane_cap_queue_destroy),
        cmocka_unit_test(test_fast_worker_kept),
        cmocka_unit_test(test_destroy_one_per_domain),
        cmocka_unit_test(test_mix_keeps_workers),
        cmocka_unit_test(test_class_bounds),
        cmocka_unit_test(test_two_workers),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_bad_arguments),
    };

    if (getenv("TEST_FILTER"))
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
