/* SPDX-License-Identifier: MIT */
/*
 * vh-fx.h - the cmocka fixture the daemon test files share: one moor-vmd
 * (harness.h) and a client per test, started with the file's own flags and
 * ended with every domain destroyed and undefined, SIGTERM (exit 0) and no
 * QEMU left; and the call/expect helpers that assert on an answer.
 * Header-only (static inline, so a file uses what it needs); include after
 * cmocka.h and harness.h. Not thread-safe: the test's thread only.
 */
#ifndef MOOR_TESTS_VMD_VH_FX_H
#define MOOR_TESTS_VMD_VH_FX_H

#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

/*
 * vh_fx_open - vh_init with @flags (NULL-terminated, may be NULL), vh_start
 * and a client into *@c, each asserted. Blocks: up to VH_START_MS.
 */
static inline void vh_fx_open(struct vh_daemon *d, struct vmctl_client **c,
                              const char *const *flags)
{
    assert_int_equal(vh_init(d, flags), 0);
    assert_int_equal(vh_start(d), 0);
    *c = vh_client_new(d);
    assert_non_null(*c);
}

/*
 * vh_fx_close - when the daemon runs, vh_destroy_all (asserted 0); free @c;
 * SIGTERM it (vh_stop) if it runs; vh_finish (asserted: no QEMU left).
 * Blocks: up to VH_STOP_MS plus vh_finish's bounds. Returns vh_stop's
 * result (0 when the daemon exited 0 or was not running): the caller frees
 * its fixture, then asserts it is 0.
 */
static inline int vh_fx_close(struct vh_daemon *d, struct vmctl_client *c)
{
    int status, rc;

    if (d->pid > 0)
        assert_int_equal(vh_destroy_all(d, c), 0);
    vmctl_client_free(c);
    rc = d->pid > 0 ? vh_stop(d, &status) : 0;
    assert_int_equal(vh_finish(d), 0);
    return rc;
}

/* The fixture of a file that needs no more than a daemon and a client. */
struct vh_fx {
    struct vh_daemon d;
    struct vmctl_client *c;
};

/* vh_fx_setup - a cmocka setup: a new vh_fx in *@state, vh_fx_open'ed with
 * @flags. Ownership: vh_fx_teardown frees it. Returns 0 (fails the test
 * otherwise). */
static inline int vh_fx_setup(void **state, const char *const *flags)
{
    struct vh_fx *fx = calloc(1, sizeof(*fx));

    assert_non_null(fx);
    vh_fx_open(&fx->d, &fx->c, flags);
    *state = fx;
    return 0;
}

/* vh_fx_teardown - a cmocka teardown: vh_fx_close, free the fixture, and
 * assert the daemon exited 0. Returns 0. */
static inline int vh_fx_teardown(void **state)
{
    struct vh_fx *fx = *state;
    int rc = vh_fx_close(&fx->d, fx->c);

    free(fx);
    assert_int_equal(rc, 0);
    return 0;
}

/* vh_fx_json - @method @path with @body (may be NULL), status asserted to be
 * @status; the answer's JSON as a new reference (json_object_put). */
static inline json_object *vh_fx_json(struct vmctl_client *c, long status, const char *method,
                                      const char *path, const char *body)
{
    struct vmctl_response r;
    json_object *j;

    if (vh_expect(c, status, &r, method, path, body ? "%s" : NULL, body) != 0)
        fail_msg("%s %s %s: expected %ld (see above)", method, path, body ? body : "", status);
    j = json_object_get(r.json);
    vmctl_response_clear(&r);
    return j;
}

/* vh_fx_ok - vh_fx_json, the answer dropped. */
static inline void vh_fx_ok(struct vmctl_client *c, long status, const char *method,
                            const char *path, const char *body)
{
    json_object_put(vh_fx_json(c, status, method, path, body));
}

/* vh_fx_error2 - an error answer asserted: @status, the code @code (unless
 * NULL) and a message containing @needle and @needle2 (each unless NULL). */
static inline void vh_fx_error2(struct vmctl_client *c, long status, const char *code,
                                const char *needle, const char *needle2, const char *method,
                                const char *path, const char *body)
{
    struct vmctl_response r;

    if (vh_expect(c, status, &r, method, path, body ? "%s" : NULL, body) != 0)
        fail_msg("%s %s: expected %ld (see above)", method, path, status);
    if (code && strcmp(r.error_code, code) != 0)
        fail_msg("%s %s: error code %s, expected %s (%s)", method, path, r.error_code, code,
                 r.error_message);
    if (needle && !strstr(r.error_message, needle))
        fail_msg("%s %s: message '%s' does not name '%s'", method, path, r.error_message, needle);
    if (needle2 && !strstr(r.error_message, needle2))
        fail_msg("%s %s: message '%s' does not name '%s'", method, path, r.error_message, needle2);
    vmctl_response_clear(&r);
}

/* vh_fx_error - vh_fx_error2 with one needle. */
static inline void vh_fx_error(struct vmctl_client *c, long status, const char *code,
                               const char *needle, const char *method, const char *path,
                               const char *body)
{
    vh_fx_error2(c, status, code, needle, NULL, method, path, body);
}

/* vh_fx_now_ms - CLOCK_MONOTONIC in milliseconds. */
static inline uint64_t vh_fx_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* vh_fx_sleep_ms - sleep @ms milliseconds (a poll's interval, never a wait
 * for a condition by itself). */
static inline void vh_fx_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* vh_fx_job - GET /v1/domains/@name/job (200 asserted): a new reference. */
static inline json_object *vh_fx_job(struct vmctl_client *c, const char *name)
{
    char path[128];

    snprintf(path, sizeof(path), "/v1/domains/%s/job", name);
    return vh_fx_json(c, 200, "GET", path, NULL);
}

/*
 * vh_fx_wait_job_end - poll @name's job every 20 ms until none is active;
 * fails (naming @what, "job" or "backup") after @bound_ms. Blocks: up to
 * @bound_ms. Returns the last job's outcome (asserted present), a new
 * reference.
 */
static inline json_object *vh_fx_wait_job_end(struct vmctl_client *c, const char *name,
                                              const char *what, int bound_ms)
{
    uint64_t end = vh_fx_now_ms() + (uint64_t)bound_ms;

    for (;;) {
        json_object *j = vh_fx_job(c, name);
        if (!json_object_get_boolean(vh_json_get(j, "active"))) {
            json_object *last = json_object_get(vh_json_get(j, "last"));
            json_object_put(j);
            assert_non_null(last);
            return last;
        }
        json_object_put(j);
        if (vh_fx_now_ms() > end)
            fail_msg("%s: the %s did not end in %d ms", name, what, bound_ms);
        vh_fx_sleep_ms(20);
    }
}

/* vh_fx_job_result - assert a job's outcome @last (borrowed) has the result
 * @result and, unless @needle is NULL, an error naming @needle; @what names
 * the job in the failure. */
static inline void vh_fx_job_result(json_object *last, const char *what, const char *result,
                                    const char *needle)
{
    const char *r = vh_json_str(last, "result"), *e = vh_json_str(last, "error");

    if (!r || strcmp(r, result) != 0)
        fail_msg("%s result %s (%s), expected %s", what, r ? r : "(none)", e ? e : "", result);
    if (needle && (!e || !strstr(e, needle)))
        fail_msg("%s error '%s' does not name '%s'", what, e ? e : "", needle);
}

#endif /* MOOR_TESTS_VMD_VH_FX_H */
