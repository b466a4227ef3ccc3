/* SPDX-License-Identifier: MIT */
/*
 * test-http.c - moor-vmd's HTTP side over its real socket, with libcurl as
 * the client and the test double of domain.h (ops-double.c) behind it:
 * routes, the error table, limits, socket modes, peer uid, the pool's
 * lanes, the event stream, clean shutdown, the daemon's flags and signals,
 * and the OpenAPI document against the route table.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <json-c/json.h>

#include <moor/object.h>

#include "api.h"
#include "domain.h"
#include "events.h"
#include "http.h"
#include "ops-double.h"
#include "pool.h"
#include "rmrf.h"
#include "vmd.h"

#define WAIT_MS 10000 /* bound of every wait in this file */

/* ---- fixture ---------------------------------------------------------------- */

struct fx {
    char dir[128];
    char run[160];
    char sock[200];
    struct vmd vmd;
    bool torn_down;
};

/* The fixture of the running test, for fx_cleanup when it fails. */
static struct fx *live_fx;

/* A fixture whose daemon closes idle connections after @timeout_s (0: the
 * default, VMD_DEFAULT_HTTP_TIMEOUT_S) and paces a connection's fail-fast
 * refusals to one per @pace_ms (0: no pace). */
static struct fx *fx_new_full(unsigned workers, unsigned lane_cap, unsigned queue_max,
                              unsigned timeout_s, unsigned pace_ms)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    moor_error err = MOOR_ERROR_INIT;

    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/test-http.XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->run, sizeof(fx->run), "%s/run", fx->dir);
    snprintf(fx->sock, sizeof(fx->sock), "%s/moor-vmd.sock", fx->run);
    ops_double_reset();
    struct vmd *vmd = &fx->vmd;
    vmd->opt.workers = workers;
    vmd->opt.http_timeout_s = timeout_s;
    vmd->opt.refusal_pace_ms = pace_ms;
    vmd->loop = moor_loop_new(&err);
    assert_non_null(vmd->loop);
    assert_int_equal(moor_loop_thread_start(vmd->loop, &err), 0);
    vmd->domains = moor_registry_new(&err);
    assert_non_null(vmd->domains);
    vmd->events = vmd_events_new(0);
    assert_non_null(vmd->events);
    assert_int_equal(vmd_domains_load(vmd, &err), 0);
    vmd->pool = vmd_pool_new(workers, lane_cap, queue_max, &err);
    assert_non_null(vmd->pool);
    struct vmd_http *http = vmd_http_new(vmd, fx->sock, &err);
    if (!http)
        fail_msg("vmd_http_new: %s", moor_error_message(&err));
    assert_ptr_equal(vmd->http, http); /* set before it served (finding 9) */
    live_fx = fx;
    return fx;
}

static struct fx *fx_new_timeout(unsigned workers, unsigned lane_cap, unsigned queue_max,
                                 unsigned timeout_s)
{
    return fx_new_full(workers, lane_cap, queue_max, timeout_s, 0);
}

static struct fx *fx_new(unsigned workers, unsigned lane_cap, unsigned queue_max)
{
    return fx_new_timeout(workers, lane_cap, queue_max, 0);
}

/* The daemon's teardown order (main.c). */
static void fx_stop(struct fx *fx)
{
    struct vmd *vmd = &fx->vmd;

    if (fx->torn_down)
        return;
    fx->torn_down = true;
    vmd_http_stop_accepting(vmd->http);
    vmd_pool_drain(vmd->pool);
    vmd_http_free(vmd->http);
    vmd->http = NULL;
    vmd_pool_free(vmd->pool);
    vmd->pool = NULL;
    vmd_domains_shutdown(vmd);
    assert_int_equal(moor_loop_thread_stop(vmd->loop), 0);
    vmd_events_free(vmd->events);
    moor_clear(&vmd->domains);
    moor_clear(&vmd->loop);
}

static void fx_free(struct fx *fx)
{
    fx_stop(fx);
    if (moor_census_total() != 0) {
        moor_census_entry e[16];
        size_t n = moor_census(e, 16);
        for (size_t i = 0; i < n && i < 16; i++)
            fprintf(stderr, "live: %s %zu\n", e[i].class_name, e[i].live);
        fail_msg("%zu objects alive after the teardown", moor_census_total());
    }
    if (rmrf(fx->dir) < 0)
        fail_msg("removing %s: %s", fx->dir, strerror(errno));
    free(fx);
    live_fx = NULL;
}

/* Every test's teardown: a test that failed before fx_free still tears
 * its fixture down (ops unblocked first), so the census of the next test
 * starts from zero. */
static int fx_cleanup(void **state)
{
    (void)state;
    struct fx *fx = live_fx;

    if (!fx)
        return 0;
    live_fx = NULL;
    ops_double_reset();
    fx_stop(fx);
    int rc = rmrf(fx->dir);
    free(fx);
    return rc == 0 ? 0 : -1;
}

/* ---- client ---------------------------------------------------------------- */

struct reply {
    long status;
    char *body;
    size_t len;
    char allow[64];
    char location[128];
    CURLcode rc;
};

static size_t on_body(char *data, size_t size, size_t n, void *opaque)
{
    struct reply *r = opaque;
    char *body = realloc(r->body, r->len + size * n + 1);

    assert_non_null(body);
    memcpy(body + r->len, data, size * n);
    r->len += size * n;
    body[r->len] = '\0';
    r->body = body;
    return size * n;
}

static void copy_header(const char *line, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);

    if (len <= nl || strncasecmp(line, name, nl) != 0)
        return;
    line += nl;
    len -= nl;
    while (len && *line == ' ')
        line++, len--;
    while (len && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        len--;
    snprintf(out, cap, "%.*s", (int)len, line);
}

static size_t on_header(char *data, size_t size, size_t n, void *opaque)
{
    struct reply *r = opaque;

    copy_header(data, size * n, "Allow:", r->allow, sizeof(r->allow));
    copy_header(data, size * n, "Location:", r->location, sizeof(r->location));
    return size * n;
}

static void reply_clear(struct reply *r)
{
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* One request on @c (kept alive between calls on the same handle); the
 * reply in @r (reply_clear). */
static void call_on(CURL *c, const char *sock, const char *method, const char *path,
                    const char *body, size_t len, struct reply *r)
{
    char url[512];
    struct curl_slist *hdrs = NULL;

    memset(r, 0, sizeof(*r));
    assert_non_null(c);
    snprintf(url, sizeof(url), "http://localhost%s", path);
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)WAIT_MS);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        /* Over the limit, ask first: the daemon answers 413 to the headers
         * and the body is never sent (else MHD's answer and close may meet
         * curl still sending: CURLE_SEND_ERROR). */
        hdrs = curl_slist_append(hdrs, len > VMD_MAX_BODY ? "Expect: 100-continue" : "Expect:");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    r->rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, NULL);
    curl_slist_free_all(hdrs);
}

/* One request on a connection of its own. */
static void call_raw(const char *sock, const char *method, const char *path, const char *body,
                     size_t len, struct reply *r)
{
    CURL *c = curl_easy_init();

    call_on(c, sock, method, path, body, len, r);
    curl_easy_cleanup(c);
}

static void call(struct fx *fx, const char *method, const char *path, const char *body,
                 struct reply *r)
{
    call_raw(fx->sock, method, path, body, body ? strlen(body) : 0, r);
    if (r->rc != CURLE_OK)
        fail_msg("%s %s: %s", method, path, curl_easy_strerror(r->rc));
}

/* The error code of an error body ("EBUSY"), or "" */
static const char *error_code(const struct reply *r, char *out, size_t cap)
{
    struct json_object *o = json_tokener_parse(r->body ? r->body : "");
    struct json_object *e, *code;

    out[0] = '\0';
    if (o && json_object_object_get_ex(o, "error", &e) &&
        json_object_object_get_ex(e, "code", &code))
        snprintf(out, cap, "%s", json_object_get_string(code));
    json_object_put(o);
    return out;
}

static void expect(struct fx *fx, const char *method, const char *path, const char *body,
                   long status, const char *code)
{
    struct reply r;
    char got[32];

    call(fx, method, path, body, &r);
    if (r.status != status || (code && strcmp(error_code(&r, got, sizeof(got)), code) != 0))
        fail_msg("%s %s: want %ld %s, got %ld %s", method, path, status, code ? code : "", r.status,
                 r.body ? r.body : "");
    reply_clear(&r);
}

/* An integer at @path ("pool.lanes.0.queued") of GET /v1/debug; -1 if absent. */
static long debug_figure(struct fx *fx, const char *const *keys)
{
    struct reply r;
    long v = -1;

    call(fx, "GET", "/v1/debug", NULL, &r);
    struct json_object *o = json_tokener_parse(r.body), *cur = o;
    for (; cur && *keys; keys++) {
        struct json_object *next = NULL;
        if (json_object_is_type(cur, json_type_array))
            next = json_object_array_get_idx(cur, (size_t)atoi(*keys));
        else if (!json_object_object_get_ex(cur, *keys, &next))
            next = NULL;
        cur = next;
    }
    if (cur && !*keys)
        v = json_object_get_int64(cur);
    json_object_put(o);
    reply_clear(&r);
    return v;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Poll GET /v1/debug until the figure is @want, at most WAIT_MS. */
static void wait_figure(struct fx *fx, const char *const *keys, long want, const char *what)
{
    long got = -1;

    for (int i = 0; i < WAIT_MS / 5; i++) {
        if ((got = debug_figure(fx, keys)) == want)
            return;
        nap_ms(5);
    }
    fail_msg("%s: want %ld, still %ld after %d ms", what, want, got, WAIT_MS);
}

/* A request on a thread of its own. */
struct async_call {
    pthread_t thread;
    const char *sock, *method, *path, *body;
    struct reply r;
};

static void *async_main(void *arg)
{
    struct async_call *a = arg;

    call_raw(a->sock, a->method, a->path, a->body, a->body ? strlen(a->body) : 0, &a->r);
    return NULL;
}

static void async_start(struct async_call *a, struct fx *fx, const char *method, const char *path,
                        const char *body)
{
    memset(a, 0, sizeof(*a));
    a->sock = fx->sock;
    a->method = method;
    a->path = path;
    a->body = body;
    assert_int_equal(pthread_create(&a->thread, NULL, async_main, a), 0);
}

static void async_join(struct async_call *a, long status, const char *code)
{
    char got[32];

    pthread_join(a->thread, NULL);
    if (a->r.rc != CURLE_OK)
        fail_msg("%s %s: %s", a->method, a->path, curl_easy_strerror(a->r.rc));
    if (a->r.status != status || (code && strcmp(error_code(&a->r, got, sizeof(got)), code) != 0))
        fail_msg("%s %s: want %ld %s, got %ld %s", a->method, a->path, status, code ? code : "",
                 a->r.status, a->r.body ? a->r.body : "");
    reply_clear(&a->r);
}

/* ---- tests ------------------------------------------------------------------- */

static void test_routes(void **state)
{
    (void)state;
    struct fx *fx = fx_new(4, 0, 0);
    struct reply r;

    call(fx, "GET", "/v1/version", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"version\":\"" VMD_VERSION "\""));
    reply_clear(&r);

    call(fx, "POST", "/v1/domains", "{\"name\":\"vm1\",\"memory_mib\":64}", &r);
    assert_int_equal(r.status, 201);
    assert_int_equal(strncmp(r.location, "/v1/domains/", 12), 0);
    char by_uuid[128];
    snprintf(by_uuid, sizeof(by_uuid), "%s", r.location);
    reply_clear(&r);
    expect(fx, "POST", "/v1/domains", "{\"name\":\"vm1\"}", 409, "EEXIST");
    expect(fx, "GET", "/v1/domains/vm1", NULL, 200, NULL);
    expect(fx, "GET", by_uuid, NULL, 200, NULL);
    expect(fx, "GET", "/v1/domains/vm1/state", NULL, 200, NULL);
    expect(fx, "POST", "/v1/domains/vm1/suspend", NULL, 409, "ENOTCONN");
    expect(fx, "POST", "/v1/domains/vm1/start", "{\"paused\":true}", 200, NULL);
    expect(fx, "POST", "/v1/domains/vm1/resume", "{}", 200, NULL);
    expect(fx, "GET", "/v1/domains/vm1/stats", NULL, 200, NULL);
    expect(fx, "POST", "/v1/domains/vm1/reset", NULL, 200, NULL);
    expect(fx, "POST", "/v1/domains/vm1/qmp", "{\"execute\":\"query-status\"}", 200, NULL);
    expect(fx, "DELETE", "/v1/domains/vm1", NULL, 409, "EBUSY");
    expect(fx, "POST", "/v1/domains/vm1/shutdown", "{\"timeout_ms\":300000}", 200, NULL);
    expect(fx, "POST", "/v1/domains/vm1/destroy", NULL, 200, NULL);

    call(fx, "GET", "/v1/domains", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"name\":\"vm1\""));
    reply_clear(&r);
    call(fx, "GET", "/v1/domains/vm1", NULL, &r);
    assert_non_null(strstr(r.body, "\"tainted\":true"));
    reply_clear(&r);
    expect(fx, "DELETE", "/v1/domains/vm1", NULL, 200, NULL);
    expect(fx, "GET", "/v1/domains/vm1", NULL, 404, "ENOENT");
    expect(fx, "GET", by_uuid, NULL, 404, "ENOENT");

    call(fx, "GET", "/v1/debug", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"census\""));
    assert_non_null(strstr(r.body, "\"pool\":{\"workers\":4"));
    reply_clear(&r);
    fx_free(fx);
}

static void test_bad_requests(void **state)
{
    (void)state;
    struct fx *fx = fx_new(4, 0, 0);
    struct reply r;

    expect(fx, "POST", "/v1/domains", "{\"name\":\"ok\"}", 201, NULL);
    expect(fx, "GET", "/v1/nothing", NULL, 404, "ENOENT");
    expect(fx, "GET", "/v1/domains/ok/nothing", NULL, 404, "ENOENT");
    expect(fx, "GET", "/v1/domains/", NULL, 404, "ENOENT");
    expect(fx, "GET", "/v2/version", NULL, 404, "ENOENT");
    call(fx, "PUT", "/v1/domains", "{}", &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET, POST");
    reply_clear(&r);
    call(fx, "GET", "/v1/domains/ok/start", NULL, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "POST");
    reply_clear(&r);
    call(fx, "POST", "/v1/domains/ok", NULL, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET, DELETE");
    reply_clear(&r);
    /* ids: bad characters (percent-decoded by the server), too long */
    expect(fx, "GET", "/v1/domains/a%24b", NULL, 400, "EINVAL");
    expect(fx, "GET", "/v1/domains/a%01b", NULL, 400, "EINVAL");
    expect(fx, "GET",
           "/v1/domains/ab123456789012345678901234567890123456789012345678901234567890123", NULL,
           400, "EINVAL");
    expect(fx, "POST", "/v1/domains/ok%00/start", NULL, 400, "EINVAL");
    expect(fx, "GET", "/v1/version%00", NULL, 404, "ENOENT");
    /* review finding 8: bytes past ASCII are refused before routing, and
     * the error body (which would repeat the path) is ASCII */
    static const char *const non_ascii[] = {"/v1/%FF%FE", "/v1/domains/%C3%A9t%C3%A9",
                                            "/v1/domains/ok/\xc3\xa9"};
    for (size_t i = 0; i < 3; i++) {
        call(fx, "GET", non_ascii[i], NULL, &r);
        assert_int_equal(r.status, 400);
        assert_non_null(strstr(r.body, "printable ASCII"));
        for (size_t k = 0; k < r.len; k++)
            if ((unsigned char)r.body[k] >= 0x80)
                fail_msg("%s: byte 0x%02x at %zu of the error body", non_ascii[i],
                         (unsigned char)r.body[k], k);
        reply_clear(&r);
    }
    expect(fx, "GET", "/v1/domains/o%6B", NULL, 200, NULL);
    expect(fx, "GET", "/v1/domains/nosuch", NULL, 404, "ENOENT");
    /* bodies */
    expect(fx, "POST", "/v1/domains/ok/start", "{\"paused\":1}", 400, "EINVAL");
    expect(fx, "POST", "/v1/domains/ok/start", "{\"pause\":true}", 400, "EINVAL");
    expect(fx, "POST", "/v1/domains/ok/start", "[]", 400, "EINVAL");
    expect(fx, "POST", "/v1/domains/ok/start", "{\"paused\":", 400, "EINVAL");
    expect(fx, "POST", "/v1/domains/ok/start", "{} x", 400, "EINVAL");
    expect(fx, "POST", "/v1/domains/ok/shutdown", "{\"timeout_ms\":-1}", 400, "EINVAL");
    /* review finding 3: a shutdown may hold a worker 5 minutes, not a day */
    expect(fx, "POST", "/v1/domains/ok/shutdown", "{\"timeout_ms\":300001}", 400, "EINVAL");
    expect(fx, "POST", "/v1/domains/ok/shutdown", "{\"timeout_ms\":86400000}", 400, "EINVAL");
    expect(fx, "POST", "/v1/domains/ok/qmp", "{\"execute\":\"a b\"}", 400, "EINVAL");
    /* 65 characters: one over the bound the codec keeps (VMD_QMP_COMMAND_MAX) */
    expect(fx, "POST", "/v1/domains/ok/qmp",
           "{\"execute\":\"q1234567890123456789012345678901234567890123456789012345678901234\"}",
           400, "EINVAL");
    /* 64: the bound itself passes the parser (the domain is not running) */
    expect(fx, "POST", "/v1/domains/ok/qmp",
           "{\"execute\":\"q123456789012345678901234567890123456789012345678901234567890123\"}",
           409, "ENOTCONN");
    expect(fx, "POST", "/v1/domains/ok/qmp", "{\"execute\":\"x\",\"arguments\":[]}", 400, "EINVAL");
    expect(fx, "POST", "/v1/domains/ok/destroy", "{\"force\":true}", 400, "EINVAL");
    expect(fx, "POST", "/v1/domains", "{\"name\":\"a\",\"colour\":\"red\"}", 400, "EINVAL");
    expect(fx, "POST", "/v1/domains", NULL, 400, "EINVAL");
    /* nothing changed */
    call(fx, "GET", "/v1/domains/ok/state", NULL, &r);
    assert_non_null(strstr(r.body, "\"state\":\"shutoff\""));
    reply_clear(&r);
    fx_free(fx);
}

static void test_error_table(void **state)
{
    (void)state;
    struct fx *fx = fx_new(4, 0, 0);
    static const struct {
        int code;
        long status;
        const char *name;
    } cases[] = {
        {-EBUSY, 409, "EBUSY"},         {-ENOTCONN, 409, "ENOTCONN"},
        {-ETIMEDOUT, 504, "ETIMEDOUT"}, {-EREMOTEIO, 502, "EREMOTEIO"},
        {-EPIPE, 502, "EPIPE"},         {-EINVAL, 400, "EINVAL"},
        {-ESRCH, 404, "ENOENT"},        {-EAGAIN, 503, "EAGAIN"},
        {-EACCES, 500, "EACCES"},
    };

    expect(fx, "POST", "/v1/domains", "{\"name\":\"e\"}", 201, NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct reply r;
        ops_double_fail("e", cases[i].code);
        expect(fx, "POST", "/v1/domains/e/start", NULL, cases[i].status, cases[i].name);
        call(fx, "GET", "/v1/domains/e/stats", NULL, &r);
        assert_non_null(strstr(r.body, "domain e: failing as told"));
        reply_clear(&r);
    }
    ops_double_fail("e", 0);
    expect(fx, "POST", "/v1/domains/e/start", NULL, 200, NULL);
    assert_int_equal(vmd_api_status(-EMSGSIZE), 413);
    assert_int_equal(vmd_api_status(-EPERM), 403);
    fx_free(fx);
}

static void test_limits(void **state)
{
    (void)state;
    struct fx *fx = fx_new(4, 0, 0);
    size_t big = VMD_MAX_BODY + 1;
    char *body = malloc(big + 1);
    struct reply r;

    expect(fx, "POST", "/v1/domains", "{\"name\":\"lim\"}", 201, NULL);
    /* over 1 MiB: announced by Content-Length */
    memset(body, ' ', big);
    body[0] = '{';
    body[big - 1] = '}';
    body[big] = '\0';
    call_raw(fx->sock, "POST", "/v1/domains/lim/start", body, big, &r);
    /* review finding 6: the 413 is what counts; a send error after it (the
     * daemon closed while curl sent) is not a failure */
    if (r.rc != CURLE_OK && !(r.rc == CURLE_SEND_ERROR && r.status == 413))
        fail_msg("a body over 1 MiB: %s (status %ld)", curl_easy_strerror(r.rc), r.status);
    assert_int_equal(r.status, 413);
    reply_clear(&r);
    /* exactly 1 MiB is taken */
    body[big - 2] = '}';
    call_raw(fx->sock, "POST", "/v1/domains/lim/start", body, big - 1, &r);
    assert_int_equal(r.status, 200);
    reply_clear(&r);
    /* nesting (review finding 7): 16 levels, the object and 15 arrays, parse
     * (and are refused as an unknown field), 17 do not */
    char deep[128] = "{\"a\":", deeper[128] = "{\"a\":";
    for (int i = 0; i < 15; i++)
        strcat(deep, "[");
    strcat(deep, "1");
    for (int i = 0; i < 15; i++)
        strcat(deep, "]");
    strcat(deep, "}");
    for (int i = 0; i < 16; i++)
        strcat(deeper, "[");
    strcat(deeper, "1");
    for (int i = 0; i < 16; i++)
        strcat(deeper, "]");
    strcat(deeper, "}");
    call(fx, "POST", "/v1/domains/lim/reset", deep, &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "unknown field"));
    reply_clear(&r);
    call(fx, "POST", "/v1/domains/lim/reset", deeper, &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "nested deeper than 16"));
    reply_clear(&r);
    free(body);
    fx_free(fx);
}

static void test_socket_modes(void **state)
{
    (void)state;
    struct fx *fx = fx_new(2, 0, 0);
    struct vmd_http *first = fx->vmd.http;
    struct stat st;
    moor_error err = MOOR_ERROR_INIT;

    assert_int_equal(stat(fx->run, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(stat(fx->sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    /* a second server on a live socket is refused */
    assert_null(vmd_http_new(&fx->vmd, fx->sock, &err));
    assert_int_equal(err.code, -EADDRINUSE);
    moor_error_clear(&err);
    assert_ptr_equal(fx->vmd.http, first); /* a refused server leaves it alone */
    /* review finding 4: an existing directory keeps its mode; one that
     * others may write to is refused, its mode left alone */
    char shared[200], sock2[220];
    struct vmd v2 = fx->vmd;
    snprintf(shared, sizeof(shared), "%s/shared", fx->dir);
    snprintf(sock2, sizeof(sock2), "%s/s.sock", shared);
    assert_int_equal(mkdir(shared, 0755), 0);
    assert_int_equal(chmod(shared, 0755), 0);
    struct vmd_http *h2 = vmd_http_new(&v2, sock2, &err);
    if (!h2)
        fail_msg("vmd_http_new in a 0755 directory: %s", moor_error_message(&err));
    assert_ptr_equal(v2.http, h2);
    assert_int_equal(stat(shared, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0755);
    assert_int_equal(stat(sock2, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    vmd_http_stop_accepting(h2);
    vmd_http_free(h2);
    assert_int_equal(chmod(shared, 0777), 0);
    assert_null(vmd_http_new(&v2, sock2, &err));
    assert_int_equal(err.code, -EPERM);
    assert_non_null(strstr(err.message, "writable by others"));
    moor_error_clear(&err);
    assert_int_equal(stat(shared, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0777);
    fx_stop(fx);
    /* stop removes the path */
    assert_int_equal(stat(fx->sock, &st), -1);
    fx_free(fx);
}

/* In a child: connect as nobody and return 0 if the answer is 403. */
static int child_as_nobody(const char *sock)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    static const char req[] = "GET /v1/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char buf[512] = "";

    if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
        return 10;
    if (strlen(sock) >= sizeof(addr.sun_path))
        return 15;
    memcpy(addr.sun_path, sock, strlen(sock) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        return 11;
    /* bounded: a daemon that never answers makes read() fail, not hang */
    struct timeval tv = {.tv_sec = 5};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
        return 16;
    if (write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1))
        return 12;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0)
        return 13;
    return strncmp(buf, "HTTP/1.1 403", 12) == 0 && strstr(buf, "EPERM") ? 0 : 14;
}

/* Wait up to WAIT_MS for @pid to exit; false (still running) if not. */
static bool wait_exit(pid_t pid, int *status)
{
    pid_t got = 0;

    for (int i = 0; i < WAIT_MS / 10 && got == 0; i++) {
        got = waitpid(pid, status, WNOHANG);
        if (got == 0)
            nap_ms(10);
    }
    return got == pid;
}

static void test_other_uid(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        /* CI runs as root; a developer's unprivileged run cannot change uid. */
        fprintf(stderr, "test_other_uid: skipped: needs root to become nobody\n");
        skip();
    }
    struct fx *fx = fx_new(2, 0, 0);
    int status;

    /* Open the modes so that nobody can reach the socket at all: the peer
     * check must refuse it on its own. */
    assert_int_equal(chmod(fx->dir, 0711), 0);
    assert_int_equal(chmod(fx->run, 0711), 0);
    assert_int_equal(chmod(fx->sock, 0666), 0);
    /* the daemon's log (stderr) goes to a file for the refusal's line */
    char log_path[200], log[4096] = "";
    snprintf(log_path, sizeof(log_path), "%s/log", fx->dir);
    int log_fd = open(log_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int saved = dup(STDERR_FILENO);
    assert_true(log_fd >= 0 && saved >= 0);
    assert_int_equal(dup2(log_fd, STDERR_FILENO), STDERR_FILENO);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(child_as_nobody(fx->sock));
    bool exited = wait_exit(pid, &status);
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    dup2(saved, STDERR_FILENO);
    close(saved);
    assert_true(pread(log_fd, log, sizeof(log) - 1, 0) > 0);
    close(log_fd);
    if (!exited)
        fail_msg("the child as uid 65534 did not exit within %d ms (killed)", WAIT_MS);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_non_null(strstr(log, "refused a connection from uid 65534"));
    /* we (root / the owner) are still served */
    expect(fx, "GET", "/v1/version", NULL, 200, NULL);
    fx_free(fx);
}

static const char *const lane0_queued[] = {"pool", "lanes", "0", "queued", NULL};
static const char *const lane0_busy[] = {"pool", "lanes", "0", "busy", NULL};
static const char *const pool_busy[] = {"pool", "busy", NULL};
static const char *const pool_queued[] = {"pool", "queued", NULL};

/* Domains "hung" and "fine" defined and started; "hung"'s ops block, and a
 * stats call on it (@stuck, joined by the caller) is waited for, bounded,
 * until it is blocked in the op. */
static void hung_and_fine(struct fx *fx, struct async_call *stuck)
{
    expect(fx, "POST", "/v1/domains", "{\"name\":\"hung\"}", 201, NULL);
    expect(fx, "POST", "/v1/domains", "{\"name\":\"fine\"}", 201, NULL);
    expect(fx, "POST", "/v1/domains/hung/start", NULL, 200, NULL);
    expect(fx, "POST", "/v1/domains/fine/start", NULL, 200, NULL);
    ops_double_block("hung");
    async_start(stuck, fx, "GET", "/v1/domains/hung/stats", NULL);
    assert_int_equal(ops_double_wait_blocked("hung", 1, WAIT_MS), 1);
}

static void test_lanes(void **state)
{
    (void)state;
    /* 4 workers, one per domain, two queued per domain. */
    struct fx *fx = fx_new(4, 1, 2);
    struct async_call stuck[3];
    struct reply r;

    hung_and_fine(fx, &stuck[0]);
    async_start(&stuck[1], fx, "POST", "/v1/domains/hung/suspend", NULL);
    async_start(&stuck[2], fx, "POST", "/v1/domains/hung/qmp", "{\"execute\":\"stop\"}");
    wait_figure(fx, lane0_queued, 2, "requests queued in the hung domain's lane");
    assert_int_equal(debug_figure(fx, lane0_busy), 1);
    /* the lane is full: refused at once, naming the domain and the queue */
    call(fx, "POST", "/v1/domains/hung/reset", NULL, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "domain hung: 2 requests queued"));
    reply_clear(&r);
    /* others answer, calls that never block too */
    expect(fx, "GET", "/v1/domains/fine/stats", NULL, 200, NULL);
    expect(fx, "POST", "/v1/domains/fine/suspend", NULL, 200, NULL);
    expect(fx, "GET", "/v1/domains/hung/state", NULL, 200, NULL);
    assert_int_equal(ops_double_peak("hung"), 1);
    /* destroy skips the lane and frees the stuck call */
    expect(fx, "POST", "/v1/domains/hung/destroy", NULL, 200, NULL);
    async_join(&stuck[0], 502, "EPIPE");
    async_join(&stuck[1], 409, "ENOTCONN");
    async_join(&stuck[2], 409, "ENOTCONN");
    assert_int_equal(ops_double_peak("hung"), 1);
    fx_free(fx);
}

/* A call that could only time out on a hung QEMU is answered on the loop
 * thread: it needs no worker, so it is answered at once even while the
 * domain's lane is full, and the op never runs; calls that do not talk to
 * QEMU, and other domains, go the normal way. */
static void test_fail_fast(void **state)
{
    (void)state;
    struct fx *fx = fx_new(4, 1, 1);
    struct async_call stuck[2];
    struct reply r;

    hung_and_fine(fx, &stuck[0]);
    async_start(&stuck[1], fx, "POST", "/v1/domains/hung/suspend", NULL);
    wait_figure(fx, lane0_queued, 1, "a request queued in the hung domain's lane");
    /* the lane is full: without the mark, a call is refused with 503 */
    call(fx, "POST", "/v1/domains/hung/reset", NULL, &r);
    assert_int_equal(r.status, 503);
    reply_clear(&r);
    ops_double_hang("hung", true);
    static const char *const calls[][3] = {
        {"GET", "/v1/domains/hung/stats", NULL},
        {"POST", "/v1/domains/hung/suspend", NULL},
        {"POST", "/v1/domains/hung/resume", NULL},
        {"POST", "/v1/domains/hung/reset", NULL},
        {"POST", "/v1/domains/hung/shutdown", NULL},
        {"POST", "/v1/domains/hung/qmp", "{\"execute\":\"query-name\"}"}};
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        call(fx, calls[i][0], calls[i][1], calls[i][2], &r);
        assert_int_equal(r.status, 504);
        assert_non_null(strstr(r.body, "ETIMEDOUT"));
        assert_non_null(strstr(r.body, "QEMU has not answered query-status"));
        reply_clear(&r);
    }
    assert_int_equal(ops_double_peak("hung"), 1); /* none of them ran the op */
    expect(fx, "GET", "/v1/domains/hung/state", NULL, 200, NULL);
    expect(fx, "GET", "/v1/domains/fine/stats", NULL, 200, NULL);
    /* destroy is not refused: it frees the stuck calls */
    expect(fx, "POST", "/v1/domains/hung/destroy", NULL, 200, NULL);
    async_join(&stuck[0], 502, "EPIPE");
    async_join(&stuck[1], 409, "ENOTCONN");
    fx_free(fx);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* GET @path on @c: must be @status; returns how long it took in ms. */
static int64_t timed_get(struct fx *fx, CURL *c, const char *path, long status)
{
    struct reply r;
    int64_t t0 = now_ms();

    call_on(c, fx->sock, "GET", path, NULL, 0, &r);
    if (r.rc != CURLE_OK || r.status != status)
        fail_msg("GET %s: want %ld, got %ld %s (%s)", path, status, r.status, r.body ? r.body : "",
                 curl_easy_strerror(r.rc));
    reply_clear(&r);
    return now_ms() - t0;
}

#define PACE_MS 1000u

/* A connection's fail-fast refusals come at most one per pace; its other
 * calls, and other connections' first refusals, are not held. */
static void test_refusal_pace(void **state)
{
    (void)state;
    struct fx *fx = fx_new_full(4, 1, 1, 0, PACE_MS);
    CURL *k = curl_easy_init();

    assert_non_null(k);
    expect(fx, "POST", "/v1/domains", "{\"name\":\"hung\"}", 201, NULL);
    expect(fx, "POST", "/v1/domains", "{\"name\":\"fine\"}", 201, NULL);
    expect(fx, "POST", "/v1/domains/hung/start", NULL, 200, NULL);
    expect(fx, "POST", "/v1/domains/fine/start", NULL, 200, NULL);
    ops_double_hang("hung", true);
    int64_t t0 = now_ms();
    timed_get(fx, k, "/v1/domains/hung/stats", 504); /* the first: at once */
    int64_t fine_ms = timed_get(fx, k, "/v1/domains/fine/stats", 200);
    int64_t other_ms = -1;
    struct reply r;
    /* another connection's first refusal is its own: not held */
    int64_t t1 = now_ms();
    call(fx, "GET", "/v1/domains/hung/stats", NULL, &r);
    other_ms = now_ms() - t1;
    assert_int_equal(r.status, 504);
    reply_clear(&r);
    timed_get(fx, k, "/v1/domains/hung/stats", 504); /* held until the pace allows it */
    int64_t second_ms = now_ms() - t0;
    if (second_ms < (int64_t)PACE_MS)
        fail_msg("the second refusal came %" PRId64 " ms after the first call, pace %u ms",
                 second_ms, PACE_MS);
    if (fine_ms >= (int64_t)PACE_MS || other_ms >= (int64_t)PACE_MS)
        fail_msg("a call that is not a second refusal was held: %" PRId64 " / %" PRId64 " ms",
                 fine_ms, other_ms);
    assert_int_equal(ops_double_peak("hung"), 1); /* none of them ran the op */
    curl_easy_cleanup(k);
    fx_free(fx);
}

/* A connection paced for a long time. */
struct held_call {
    pthread_t thread;
    struct fx *fx;
    long second;
};

static void *held_main(void *arg)
{
    struct held_call *h = arg;
    CURL *k = curl_easy_init();
    struct reply r;

    call_on(k, h->fx->sock, "GET", "/v1/domains/hung/stats", NULL, 0, &r);
    reply_clear(&r);
    call_on(k, h->fx->sock, "GET", "/v1/domains/hung/stats", NULL, 0, &r);
    h->second = r.rc == CURLE_OK ? r.status : -1;
    reply_clear(&r);
    curl_easy_cleanup(k);
    return NULL;
}

static const char *const refusals_held[] = {"http", "refusals_held", NULL};

/* A refusal held by the pace is answered when the daemon stops, not left
 * to its timer (here a minute away). */
static void test_refusal_pace_teardown(void **state)
{
    (void)state;
    struct fx *fx = fx_new_full(4, 1, 1, 0, 60000);
    struct held_call h = {.fx = fx, .second = 0};

    expect(fx, "POST", "/v1/domains", "{\"name\":\"hung\"}", 201, NULL);
    expect(fx, "POST", "/v1/domains/hung/start", NULL, 200, NULL);
    ops_double_hang("hung", true);
    assert_int_equal(pthread_create(&h.thread, NULL, held_main, &h), 0);
    wait_figure(fx, refusals_held, 1, "the second refusal held by the pace");
    fx_stop(fx);
    pthread_join(h.thread, NULL);
    assert_int_equal(h.second, 504);
    fx_free(fx);
}

static void test_many_hung_domains(void **state)
{
    (void)state;
    /* 4 workers, 1 per domain: lane work may hold 2; the third worker stays
     * free for destroys, the fourth for calls that never block. */
    struct fx *fx = fx_new(4, 1, 4);
    struct async_call stuck[3];
    const char *names[3] = {"h0", "h1", "h2"};
    char path[64], body[64];

    for (int i = 0; i < 3; i++) {
        snprintf(body, sizeof(body), "{\"name\":\"%s\"}", names[i]);
        expect(fx, "POST", "/v1/domains", body, 201, NULL);
        ops_double_block(names[i]);
    }
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "/v1/domains/%s/start", names[i]);
        async_start(&stuck[i], fx, "POST", strdup(path), NULL);
    }
    unsigned blocked = 0;
    for (int i = 0; i < WAIT_MS / 5 && blocked < 2; i++) {
        blocked = ops_double_wait_blocked("h0", 1, 0) + ops_double_wait_blocked("h1", 1, 0) +
                  ops_double_wait_blocked("h2", 1, 0);
        if (blocked < 2)
            nap_ms(5);
    }
    if (blocked != 2)
        fail_msg("want 2 workers stuck in hung domains, got %u after %d ms", blocked, WAIT_MS);
    /* the third start may reach the daemon after the other two are stuck:
     * wait for it to queue (lane work holds 2 workers at most) */
    wait_figure(fx, pool_queued, 1, "the third start queued");
    /* two stuck, plus the worker answering this very debug call */
    assert_int_equal(debug_figure(fx, pool_busy), 3);
    expect(fx, "GET", "/v1/domains", NULL, 200, NULL);
    expect(fx, "GET", "/v1/domains/h2/state", NULL, 200, NULL);
    for (int i = 0; i < 3; i++)
        ops_double_release(names[i]);
    for (int i = 0; i < 3; i++) {
        free((char *)stuck[i].path);
        async_join(&stuck[i], 200, NULL);
    }
    fx_free(fx);
}

/* Several clients, each on one keep-alive connection, mixing calls that
 * skip the lanes with lane calls on four domains. */
struct hammer {
    pthread_t thread;
    const char *sock;
    int id;
    int ok, bad;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    CURL *c = curl_easy_init();
    struct reply r = {0};
    char url[128];

    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, h->sock);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)WAIT_MS);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    for (int i = 0; i < 40; i++) {
        static const char *const what[] = {"", "/state", "/stats"};
        snprintf(url, sizeof(url), "http://localhost/v1/domains/c%d%s", (h->id + i) % 4,
                 what[i % 3]);
        curl_easy_setopt(c, CURLOPT_URL, url);
        long status = 0;
        if (curl_easy_perform(c) == CURLE_OK &&
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status == 200)
            h->ok++;
        else
            h->bad++;
        free(r.body);
        r.body = NULL;
        r.len = 0;
    }
    curl_easy_cleanup(c);
    return NULL;
}

static void test_concurrent_clients(void **state)
{
    (void)state;
    struct fx *fx = fx_new(4, 0, 0);
    struct hammer h[8];
    char body[64];

    for (int i = 0; i < 4; i++) {
        snprintf(body, sizeof(body), "{\"name\":\"c%d\"}", i);
        expect(fx, "POST", "/v1/domains", body, 201, NULL);
        snprintf(body, sizeof(body), "/v1/domains/c%d/start", i);
        expect(fx, "POST", body, NULL, 200, NULL);
    }
    for (int i = 0; i < 8; i++) {
        h[i] = (struct hammer){.sock = fx->sock, .id = i};
        assert_int_equal(pthread_create(&h[i].thread, NULL, hammer_main, &h[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(h[i].thread, NULL);
        assert_int_equal(h[i].bad, 0);
        assert_int_equal(h[i].ok, 40);
    }
    fx_free(fx);
}

/* ---- events ---------------------------------------------------------------- */

struct stream_client {
    pthread_t thread;
    const char *sock;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    char buf[131072];
    size_t len;
    bool stop, done;
    long status;
};

static size_t stream_body(char *data, size_t size, size_t n, void *opaque)
{
    struct stream_client *s = opaque;

    pthread_mutex_lock(&s->lock);
    size_t room = sizeof(s->buf) - 1 - s->len;
    size_t take = size * n < room ? size * n : room;
    memcpy(s->buf + s->len, data, take);
    s->len += take;
    s->buf[s->len] = '\0';
    bool stop = s->stop;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return stop ? 0 : size * n;
}

static int stream_progress(void *opaque, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    struct stream_client *s = opaque;

    (void)a, (void)b, (void)c, (void)d;
    pthread_mutex_lock(&s->lock);
    bool stop = s->stop;
    pthread_mutex_unlock(&s->lock);
    return stop;
}

static void *stream_main(void *arg)
{
    struct stream_client *s = arg;
    CURL *c = curl_easy_init();

    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, s->sock);
    curl_easy_setopt(c, CURLOPT_URL, "http://localhost/v1/events");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stream_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, stream_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(3 * WAIT_MS));
    curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &s->status);
    curl_easy_cleanup(c);
    pthread_mutex_lock(&s->lock);
    s->done = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void stream_wait_for(struct stream_client *s, const char *text)
{
    struct timespec deadline;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&s->lock);
    while (!strstr(s->buf, text) && !s->done)
        if (pthread_cond_timedwait(&s->cond, &s->lock, &deadline) == ETIMEDOUT)
            break;
    bool found = strstr(s->buf, text) != NULL;
    pthread_mutex_unlock(&s->lock);
    if (!found)
        fail_msg("event stream: no \"%s\" within %d ms; got: %s", text, WAIT_MS, s->buf);
}

static void stream_stop(struct stream_client *s)
{
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
}

static const char *const http_streams[] = {"http", "streams", NULL};

static void stream_open(struct stream_client *s, struct fx *fx)
{
    memset(s, 0, sizeof(*s));
    s->sock = fx->sock;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    assert_int_equal(pthread_create(&s->thread, NULL, stream_main, s), 0);
}

static void test_events(void **state)
{
    (void)state;
    struct fx *fx = fx_new(4, 0, 0);
    struct stream_client s[2];

    stream_open(&s[0], fx);
    stream_open(&s[1], fx);
    wait_figure(fx, http_streams, 2, "event streams open");
    expect(fx, "POST", "/v1/domains", "{\"name\":\"ev1\"}", 201, NULL);
    stream_wait_for(&s[0], "\"domain\":\"ev1\"");
    stream_wait_for(&s[1], "\"domain\":\"ev1\"");
    expect(fx, "POST", "/v1/domains/ev1/start", NULL, 200, NULL);
    stream_wait_for(&s[0], "\"reason\":\"booted\"");
    /* a line longer than MHD's default buffers (40 KB) arrives whole */
    char *big = malloc(40001);
    assert_non_null(big);
    memset(big, 'x', 40000);
    memcpy(big + 40000 - 8, "THE-END!", 8);
    big[40000] = '\0';
    struct json_object *data = json_object_new_object();
    json_object_object_add(data, "blob", json_object_new_string(big));
    free(big);
    assert_int_equal(vmd_events_publish(fx->vmd.events, "qmp", "ev1", data), 0);
    stream_wait_for(&s[0], "THE-END!\"");
    stream_wait_for(&s[1], "THE-END!\"");
    /* review finding 10: a line over the bus's cap (and over the streams'
     * 1 MiB buffer) is published as a short marker; no stream ends */
    size_t huge = 2u << 20;
    big = malloc(huge + 1);
    assert_non_null(big);
    memset(big, 'y', huge);
    big[huge] = '\0';
    data = json_object_new_object();
    json_object_object_add(data, "blob", json_object_new_string(big));
    free(big);
    assert_int_equal(vmd_events_publish(fx->vmd.events, "qmp", "ev1", data), 0);
    data = json_object_new_object();
    json_object_object_add(data, "after", json_object_new_string("the-huge-one"));
    assert_int_equal(vmd_events_publish(fx->vmd.events, "qmp", "ev1", data), 0);
    for (int i = 0; i < 2; i++) {
        stream_wait_for(&s[i], "\"truncated\":true");
        stream_wait_for(&s[i], "\"after\":\"the-huge-one\"");
        pthread_mutex_lock(&s[i].lock);
        assert_null(strstr(s[i].buf, "yyyy"));
        assert_false(s[i].done);
        pthread_mutex_unlock(&s[i].lock);
    }
    assert_non_null(strstr(s[0].buf, "\"type\":\"lifecycle\""));
    /* a client that goes away while nothing is published is noticed */
    stream_stop(&s[0]);
    wait_figure(fx, http_streams, 1, "event streams after a client left");
    /* the other still gets lines */
    expect(fx, "POST", "/v1/domains/ev1/destroy", NULL, 200, NULL);
    stream_wait_for(&s[1], "\"reason\":\"destroyed\"");
    /* shutdown ends the open stream */
    fx_stop(fx);
    pthread_join(s[1].thread, NULL);
    assert_int_equal(s[1].status, 200);
    fx_free(fx);
}

static void *stopper_main(void *arg)
{
    fx_stop(arg);
    return NULL;
}

static void test_shutdown_drains(void **state)
{
    (void)state;
    struct fx *fx = fx_new(2, 1, 4);
    struct async_call running, queued[2];
    pthread_t stopper;
    struct stat st;

    expect(fx, "POST", "/v1/domains", "{\"name\":\"d1\"}", 201, NULL);
    ops_double_block("d1");
    async_start(&running, fx, "POST", "/v1/domains/d1/start", NULL);
    assert_int_equal(ops_double_wait_blocked("d1", 1, WAIT_MS), 1);
    async_start(&queued[0], fx, "GET", "/v1/domains/d1/stats", NULL);
    async_start(&queued[1], fx, "POST", "/v1/domains/d1/reset", NULL);
    wait_figure(fx, lane0_queued, 2, "requests queued behind the blocked one");
    assert_int_equal(pthread_create(&stopper, NULL, stopper_main, fx), 0);
    /* the queued ones are answered 503 while the running one still runs */
    async_join(&queued[0], 503, "EAGAIN");
    async_join(&queued[1], 503, "EAGAIN");
    assert_int_equal(stat(fx->sock, &st), -1);
    assert_int_equal(ops_double_wait_blocked("d1", 1, 0), 1);
    ops_double_release("d1");
    async_join(&running, 200, NULL);
    pthread_join(stopper, NULL);
    fx_free(fx);
}

static int raw_connect(const char *sock)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    assert_true(strlen(sock) < sizeof(addr.sun_path));
    memcpy(addr.sun_path, sock, strlen(sock) + 1);
    assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    return fd;
}

static void test_client_leaves_early(void **state)
{
    (void)state;
    struct fx *fx = fx_new(2, 1, 4);
    static const char req[] = "POST /v1/domains/gone/start HTTP/1.1\r\nHost: x\r\n"
                              "Content-Length: 0\r\n\r\n";

    expect(fx, "POST", "/v1/domains", "{\"name\":\"gone\"}", 201, NULL);
    ops_double_block("gone");
    int fd = raw_connect(fx->sock);
    assert_int_equal(write(fd, req, sizeof(req) - 1), (ssize_t)(sizeof(req) - 1));
    assert_int_equal(ops_double_wait_blocked("gone", 1, WAIT_MS), 1);
    /* a queued one too, then both clients go away */
    int fd2 = raw_connect(fx->sock);
    assert_int_equal(write(fd2, req, sizeof(req) - 1), (ssize_t)(sizeof(req) - 1));
    wait_figure(fx, lane0_queued, 1, "the second request queued");
    close(fd);
    close(fd2);
    ops_double_release("gone");
    /* their answers find no client; the daemon carries on */
    wait_figure(fx, pool_queued, 0, "queue empty");
    expect(fx, "GET", "/v1/domains/gone/state", NULL, 200, NULL);
    fx_free(fx);
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read @fd into @buf (NUL-terminated) until the peer closes it; fails the
 * test if it is still open after WAIT_MS. */
static void read_until_closed(int fd, char *buf, size_t size)
{
    size_t got = 0;

    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, WAIT_MS) != 1)
            fail_msg("the daemon did not close an idle connection within %d ms", WAIT_MS);
        ssize_t n = read(fd, buf + got, size - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        assert_true(got + 1 < size);
    }
    buf[got] = '\0';
}

/* A fixture paced to @pace_ms, its connections timed out after
 * @timeout_s (0: the default), with a domain "hung" whose QEMU hangs. */
static struct fx *hung_fx(unsigned timeout_s, unsigned pace_ms)
{
    struct fx *fx = fx_new_full(4, 1, 1, timeout_s, pace_ms);

    expect(fx, "POST", "/v1/domains", "{\"name\":\"hung\"}", 201, NULL);
    expect(fx, "POST", "/v1/domains/hung/start", NULL, 200, NULL);
    ops_double_hang("hung", true);
    return fx;
}

/* Two pipelined calls on hung's stats on a new connection: the first
 * refused at once, the second held by the pace; @held refusals are held
 * then. Returns the connection's fd. */
static int two_refusals(struct fx *fx, long held)
{
    static const char req[] = "GET /v1/domains/hung/stats HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /v1/domains/hung/stats HTTP/1.1\r\nHost: x\r\n\r\n";
    int fd = raw_connect(fx->sock);

    assert_int_equal(write(fd, req, sizeof(req) - 1), (ssize_t)(sizeof(req) - 1));
    wait_figure(fx, refusals_held, held, "the second refusal held by the pace");
    return fd;
}

/* A held refusal outlives the connection timeout: it is still answered. */
static void test_refusal_pace_timeout(void **state)
{
    (void)state;
    struct fx *fx = hung_fx(1, 2500);
    CURL *k = curl_easy_init();

    timed_get(fx, k, "/v1/domains/hung/stats", 504);
    int64_t ms = timed_get(fx, k, "/v1/domains/hung/stats", 504);
    if (ms < 2000)
        fail_msg("the second refusal came after %" PRId64 " ms, pace 2500 ms", ms);
    curl_easy_cleanup(k);
    fx_free(fx);
}

/* A client that leaves while its refusal is held: the timer answers a
 * closed connection, the daemon serves on. */
static void test_refusal_pace_gone(void **state)
{
    (void)state;
    struct fx *fx = hung_fx(0, 1000);

    close(two_refusals(fx, 1));
    wait_figure(fx, refusals_held, 0, "the held refusal of a closed connection sent");
    expect(fx, "GET", "/v1/domains/hung/state", NULL, 200, NULL);
    fx_free(fx);
}

/* A client that leaves while its refusal is held, then the daemon stops
 * before the pace's timer (a minute away). */
static void test_refusal_pace_gone_teardown(void **state)
{
    (void)state;
    struct fx *fx = hung_fx(0, 60000);

    close(two_refusals(fx, 1));
    fx_stop(fx);
    fx_free(fx);
}

/* Many held refusals: every one is answered when the daemon stops (one
 * MHD_run wrote only one of them). */
static void test_refusal_pace_teardown_many(void **state)
{
    (void)state;
    struct fx *fx = hung_fx(0, 60000);
    int fd[8];
    char buf[4096];

    for (int i = 0; i < 8; i++)
        fd[i] = two_refusals(fx, i + 1);
    fx_stop(fx);
    for (int i = 0; i < 8; i++) {
        read_until_closed(fd[i], buf, sizeof(buf));
        close(fd[i]);
        char *second = strstr(buf, "HTTP/1.1 504");
        if (!second || !strstr(second + 1, "HTTP/1.1 504"))
            fail_msg("connection %d: not two 504s: %s", i, buf);
    }
    fx_free(fx);
}

/* --http-timeout: a connection that sends nothing, before or after a
 * request, is closed after it; an event stream with nothing to send for
 * longer stays open and still gets lines. */
static void test_idle_timeout(void **state)
{
    (void)state;
    struct fx *fx = fx_new_timeout(2, 0, 0, 1);
    static const char req[] = "GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n";
    struct stream_client s;
    char buf[2048];

    stream_open(&s, fx);
    wait_figure(fx, http_streams, 1, "the event stream open");
    /* one line first: the stream has been resumed and has sent */
    expect(fx, "POST", "/v1/domains", "{\"name\":\"early\"}", 201, NULL);
    stream_wait_for(&s, "\"domain\":\"early\"");
    int64_t stream_since = mono_ms();
    /* idle from its accept */
    int64_t t0 = mono_ms();
    int fd = raw_connect(fx->sock);
    read_until_closed(fd, buf, sizeof(buf));
    close(fd);
    assert_string_equal(buf, "");
    if (mono_ms() - t0 < 900)
        fail_msg("an idle connection was closed after %lld ms, before its 1 s timeout",
                 (long long)(mono_ms() - t0));
    /* idle after a keep-alive request: the answer, then the close */
    fd = raw_connect(fx->sock);
    t0 = mono_ms();
    assert_int_equal(write(fd, req, sizeof(req) - 1), (ssize_t)(sizeof(req) - 1));
    read_until_closed(fd, buf, sizeof(buf));
    close(fd);
    assert_int_equal(strncmp(buf, "HTTP/1.1 200", 12), 0);
    assert_non_null(strstr(buf, VMD_VERSION));
    assert_true(mono_ms() - t0 >= 900);
    /* the stream, idle for two timeouts, is still there and still served */
    assert_true(mono_ms() - stream_since >= 1800);
    wait_figure(fx, http_streams, 1, "the event stream still open");
    pthread_mutex_lock(&s.lock);
    assert_false(s.done);
    pthread_mutex_unlock(&s.lock);
    expect(fx, "POST", "/v1/domains", "{\"name\":\"late\"}", 201, NULL);
    stream_wait_for(&s, "\"domain\":\"late\"");
    stream_stop(&s);
    fx_free(fx);
}

/* ---- the request path without a socket ---------------------------------- */

static void test_serve(void **state)
{
    (void)state;
    struct fx *fx = fx_new(2, 0, 0);
    struct vmd_response resp;

    assert_int_equal(vmd_api_serve(&fx->vmd, "POST", "/v1/domains", "{\"name\":\"s\"}", 12, &resp),
                     201);
    assert_int_equal(strncmp(resp.location, "/v1/domains/", 12), 0);
    vmd_response_clear(&resp);
    assert_int_equal(vmd_api_serve(&fx->vmd, "GET", "/v1/events", NULL, 0, &resp), 200);
    vmd_response_clear(&resp);
    assert_int_equal(vmd_api_serve(&fx->vmd, "GET\x01", "/v1/version", NULL, 0, &resp), 400);
    vmd_response_clear(&resp);
    assert_int_equal(vmd_api_serve(&fx->vmd, "GET", "/v1/domains/s\n", NULL, 0, &resp), 400);
    vmd_response_clear(&resp);
    assert_int_equal(vmd_api_serve(&fx->vmd, "POST", "/v1/domains/s/start", "{\"paused\":true}",
                                   VMD_MAX_BODY + 1, &resp),
                     413);
    vmd_response_clear(&resp);
    fx_free(fx);
}

/* ---- the OpenAPI document lists exactly the routes served ------------------ */

static void test_openapi_routes(void **state)
{
    (void)state;
    const char *path = getenv("MOOR_VMD_API_YAML");
    struct vmd_api_route routes[64];
    size_t n = vmd_api_routes(routes, 64);
    char line[512], cur[256] = "", doc[64][300];
    size_t ndoc = 0;

    if (!path)
        fail_msg("MOOR_VMD_API_YAML is not set (meson test sets it)");
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    bool in_paths = false;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] && line[0] != ' ' && line[0] != '#')
            in_paths = strcmp(line, "paths:") == 0;
        else if (in_paths && strncmp(line, "  /", 3) == 0 && line[strlen(line) - 1] == ':')
            snprintf(cur, sizeof(cur), "%.*s", (int)strlen(line) - 3, line + 2);
        else if (in_paths && cur[0] && strncmp(line, "    ", 4) == 0 && line[4] != ' ') {
            static const char *const methods[] = {"get", "post", "delete", "put", "patch"};
            for (size_t m = 0; m < 5; m++) {
                size_t ml = strlen(methods[m]);
                if (strncmp(line + 4, methods[m], ml) == 0 && strcmp(line + 4 + ml, ":") == 0) {
                    assert_true(ndoc < 64);
                    snprintf(doc[ndoc], sizeof(doc[ndoc]), "%s %s", methods[m], cur);
                    for (char *p = doc[ndoc]; *p != ' '; p++)
                        *p = (char)(*p - 'a' + 'A');
                    ndoc++;
                }
            }
        }
    }
    fclose(f);
    for (size_t i = 0; i < n; i++) {
        char want[300];
        bool found = false;
        snprintf(want, sizeof(want), "%s %s", routes[i].method, routes[i].path);
        for (size_t j = 0; j < ndoc; j++)
            found = found || strcmp(doc[j], want) == 0;
        if (!found)
            fail_msg("served but not in %s: %s", path, want);
    }
    for (size_t j = 0; j < ndoc; j++) {
        bool found = false;
        for (size_t i = 0; i < n; i++) {
            char have[300];
            snprintf(have, sizeof(have), "%s %s", routes[i].method, routes[i].path);
            found = found || strcmp(doc[j], have) == 0;
        }
        if (!found)
            fail_msg("in %s but not served: %s", path, doc[j]);
    }
    assert_true(n <= 64);
    assert_int_equal(ndoc, n);
}

/* ---- the daemon binary ---------------------------------------------------- */

/* Run @argv (no shell) with stdout into @out (NUL-terminated, truncated
 * to @size) and stderr discarded; its exit code, or -1 if it did not exit
 * normally. Bounded: WAIT_MS for the output and for the exit, then the
 * child is killed and the test fails. */
static int run_capture(char *const argv[], char *out, size_t size)
{
    int p[2], status = 0;
    size_t got = 0;

    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null < 0 || dup2(p[1], 1) < 0 || dup2(null, 2) < 0)
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    for (;;) {
        struct pollfd pf = {p[0], POLLIN, 0};
        if (poll(&pf, 1, WAIT_MS) != 1)
            break;
        ssize_t n = read(p[0], out + got, size - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got + 1 >= size)
            break;
    }
    out[got] = '\0';
    close(p[0]);
    if (!wait_exit(pid, &status)) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("%s did not exit within %d ms (killed)", argv[0], WAIT_MS);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Read the file @path into @buf (NUL-terminated, truncated to @size);
 * fails the test if it cannot be read. */
static void read_text(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, size - 1);

    if (fd >= 0)
        close(fd);
    if (n < 0)
        fail_msg("reading %s: %s", path, strerror(errno));
    buf[n] = '\0';
}

/* Whether one line of @text contains @first and, after it, @then. */
static bool line_has(const char *text, const char *first, const char *then)
{
    for (const char *at = strstr(text, first); at; at = strstr(at + 1, first)) {
        const char *end = strchrnul(at, '\n');
        const char *t = strstr(at + strlen(first), then);
        if (t && t + strlen(then) <= end)
            return true;
    }
    return false;
}

static void test_main_flags(void **state)
{
    (void)state;
    const char *bin = getenv("MOOR_VMD_DOUBLE");
    char out[4096];

    if (!bin)
        fail_msg("MOOR_VMD_DOUBLE is not set (meson test sets it)");
    assert_int_equal(run_capture((char *[]){(char *)bin, "--help", NULL}, out, sizeof(out)), 0);
    if (!line_has(out, "--workers N ", "(default: 8)"))
        fail_msg("--help does not show '--workers N ... (default: 8)':\n%s", out);
    if (!line_has(out, "--http-timeout SECONDS ", "close an idle"))
        fail_msg("--help does not show '--http-timeout SECONDS':\n%s", out);
    assert_int_equal(run_capture((char *[]){(char *)bin, "--version", NULL}, out, sizeof(out)), 0);
    if (strncmp(out, "moor-vmd " VMD_VERSION, strlen("moor-vmd " VMD_VERSION)) != 0)
        fail_msg("--version does not start with 'moor-vmd " VMD_VERSION "': %s", out);
    assert_int_equal(run_capture((char *[]){(char *)bin, "--workers", "0", NULL}, out, sizeof(out)),
                     2);
    assert_int_equal(
        run_capture((char *[]){(char *)bin, "--log-format", "xml", NULL}, out, sizeof(out)), 2);
    assert_int_equal(run_capture((char *[]){(char *)bin, "--bogus", NULL}, out, sizeof(out)), 2);
    assert_int_equal(
        run_capture((char *[]){(char *)bin, "--http-timeout", "0", NULL}, out, sizeof(out)), 2);
    assert_int_equal(run_capture((char *[]){(char *)bin, "--help", NULL}, out, sizeof(out)), 0);
    if (!line_has(out, "--refusal-pace MS ", "refused at"))
        fail_msg("--help does not show '--refusal-pace MS':\n%s", out);
    if (!strstr(out, "(default: 5; 0: no pace)"))
        fail_msg("--help does not show the refusal pace's default, 5 ms:\n%s", out);
    assert_int_equal(
        run_capture((char *[]){(char *)bin, "--refusal-pace", "60001", NULL}, out, sizeof(out)), 2);
    assert_int_equal(
        run_capture((char *[]){(char *)bin, "--refusal-pace", "5ms", NULL}, out, sizeof(out)), 2);
}

/* Every "--flag" in @text that starts a word after @lead ("\n  --" for
 * the help, "`--" for the table), each once, joined by spaces in @out. */
static void flags_of(const char *text, const char *lead, char *out, size_t size)
{
    size_t len = 0;

    out[0] = '\0';
    for (const char *at = strstr(text, lead); at; at = strstr(at + 1, lead)) {
        const char *name = at + strlen(lead) - 2;
        size_t n = strspn(name + 2, "abcdefghijklmnopqrstuvwxyz-") + 2;
        char word[64];
        snprintf(word, sizeof(word), " %.*s ", (int)n, name);
        if (strstr(out, word) || len + n + 2 >= size)
            continue;
        len += (size_t)snprintf(out + len, size - len, "%s", word + (len ? 1 : 0));
    }
}

/* `moor-vmd --help` and docs/vmd.md's flag table name the same flags. */
static void test_help_matches_docs(void **state)
{
    (void)state;
    const char *bin = getenv("MOOR_VMD_DOUBLE"), *yaml = getenv("MOOR_VMD_API_YAML");
    static char out[4096], doc[262144], table[8192], help[1024], documented[1024];
    char path[4096];

    if (!bin || !yaml)
        fail_msg("MOOR_VMD_DOUBLE or MOOR_VMD_API_YAML is not set (meson test sets them)");
    /* docs/api/moor-vmd.yaml -> docs/vmd.md */
    snprintf(path, sizeof(path), "%.4000s", yaml);
    char *slash = strrchr(path, '/');
    assert_non_null(slash);
    *slash = '\0';
    slash = strrchr(path, '/');
    assert_non_null(slash);
    snprintf(slash, sizeof(path) - (size_t)(slash - path), "/vmd.md");
    read_text(path, doc, sizeof(doc));
    /* the table's rows: lines that start "| `--" */
    size_t len = 0;
    for (const char *l = strstr(doc, "\n| `--"); l; l = strstr(l + 1, "\n| `--")) {
        const char *end = strchr(l + 1, '|');
        end = end ? strchr(end + 1, '|') : NULL; /* the first cell only */
        assert_non_null(end);
        assert_true(len + (size_t)(end - l) + 1 < sizeof(table));
        memcpy(table + len, l, (size_t)(end - l));
        len += (size_t)(end - l);
        table[len] = '\0';
    }
    assert_int_equal(run_capture((char *[]){(char *)bin, "--help", NULL}, out, sizeof(out)), 0);
    flags_of(out, "\n  --", help, sizeof(help));
    flags_of(table, "`--", documented, sizeof(documented));
    assert_true(strstr(help, "--refusal-pace") != NULL);
    if (strcmp(help, documented) != 0)
        fail_msg("--help names: %s\ndocs/vmd.md's table names: %s", help, documented);
}

/* Start moor-vmd-double on @state_dir and @run_dir (and --socket @sock
 * unless NULL), its stderr to @log. Returns its pid. */
static pid_t spawn_daemon(const char *bin, const char *state_dir, const char *run_dir,
                          const char *sock, const char *log)
{
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || dup2(fd, 2) < 0)
            _exit(126);
        if (sock)
            execl(bin, bin, "--state-dir", state_dir, "--runtime-dir", run_dir, "--workers", "2",
                  "--socket", sock, (char *)NULL);
        else
            execl(bin, bin, "--state-dir", state_dir, "--runtime-dir", run_dir, "--workers", "2",
                  (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Wait up to WAIT_MS for a daemon to create its socket @sock (it has its
 * lock by then). */
static void wait_serving(const char *sock)
{
    struct stat st;
    bool up = false;

    for (int i = 0; i < WAIT_MS / 10 && !up; i++) {
        up = stat(sock, &st) == 0;
        if (!up)
            nap_ms(10);
    }
    if (!up)
        fail_msg("moor-vmd-double did not create %s within %d ms", sock, WAIT_MS);
}

/* A daemon's directories under a new temporary one. */
struct daemon_dirs {
    char dir[64], state[80], run[80], sock[112], log[96];
};

static void daemon_dirs_make(struct daemon_dirs *d)
{
    snprintf(d->dir, sizeof(d->dir), "/tmp/test-vmd-main.XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    snprintf(d->state, sizeof(d->state), "%s/state", d->dir);
    snprintf(d->run, sizeof(d->run), "%s/run", d->dir);
    snprintf(d->sock, sizeof(d->sock), "%s/moor-vmd.sock", d->run);
    snprintf(d->log, sizeof(d->log), "%s/daemon.log", d->dir);
}

/* Wait for @pid's exit (after @sig, unless 0); SIGKILL it if it does not
 * come within WAIT_MS. Returns whether it exited by itself. */
static bool end_daemon(pid_t pid, int sig, int *status)
{
    if (sig)
        kill(pid, sig);
    if (wait_exit(pid, status))
        return true;
    kill(pid, SIGKILL);
    waitpid(pid, status, 0);
    return false;
}

/* Review finding 5: a second daemon on the same runtime directory (even
 * with a socket of its own) refuses to start, naming the lock. */
static void test_main_lock(void **state)
{
    (void)state;
    const char *bin = getenv("MOOR_VMD_DOUBLE");
    struct daemon_dirs d;
    char sock2[112], log2[112];
    int status = 0;

    if (!bin)
        fail_msg("MOOR_VMD_DOUBLE is not set (meson test sets it)");
    daemon_dirs_make(&d);
    snprintf(sock2, sizeof(sock2), "%s/second.sock", d.dir);
    snprintf(log2, sizeof(log2), "%s/second.log", d.dir);
    pid_t first = spawn_daemon(bin, d.state, d.run, NULL, d.log);
    wait_serving(d.sock);
    pid_t second = spawn_daemon(bin, d.state, d.run, sock2, log2);
    bool second_exited = end_daemon(second, 0, &status);
    int second_status = status;
    bool first_exited = end_daemon(first, SIGTERM, &status);
    if (!second_exited)
        fail_msg("a second daemon on %s was still running after %d ms", d.run, WAIT_MS);
    assert_true(WIFEXITED(second_status) && WEXITSTATUS(second_status) == 1);
    assert_true(first_exited);
    char text[4096];
    read_text(log2, text, sizeof(text));
    if (!line_has(text, "another moor-vmd holds ", "/run/moor-vmd.lock"))
        fail_msg("no 'another moor-vmd holds .../run/moor-vmd.lock' in %s:\n%s", log2, text);
    if (rmrf(d.dir) < 0)
        fail_msg("removing %s: %s", d.dir, strerror(errno));
}

static void test_main_signal(void **state)
{
    (void)state;
    const char *bin = getenv("MOOR_VMD_DOUBLE");
    struct daemon_dirs d;
    struct stat st;
    struct reply r;
    int status = 0;

    if (!bin)
        fail_msg("MOOR_VMD_DOUBLE is not set (meson test sets it)");
    daemon_dirs_make(&d);
    const char *sock = d.sock;
    pid_t pid = spawn_daemon(bin, d.state, d.run, NULL, d.log);
    wait_serving(sock);
    call_raw(sock, "GET", "/v1/version", NULL, 0, &r);
    assert_int_equal(r.status, 200);
    reply_clear(&r);
    call_raw(sock, "POST", "/v1/domains", "{\"name\":\"m\"}", 12, &r);
    assert_int_equal(r.status, 201);
    reply_clear(&r);
    if (!end_daemon(pid, SIGTERM, &status))
        fail_msg("moor-vmd-double did not exit within %d ms of SIGTERM", WAIT_MS);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0); /* 1 if the census was not zero */
    assert_int_equal(stat(sock, &st), -1);
    assert_int_equal(stat(d.state, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    if (rmrf(d.dir) < 0)
        fail_msg("removing %s: %s", d.dir, strerror(errno));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_routes, fx_cleanup),
        cmocka_unit_test_teardown(test_bad_requests, fx_cleanup),
        cmocka_unit_test_teardown(test_error_table, fx_cleanup),
        cmocka_unit_test_teardown(test_limits, fx_cleanup),
        cmocka_unit_test_teardown(test_socket_modes, fx_cleanup),
        cmocka_unit_test_teardown(test_other_uid, fx_cleanup),
        cmocka_unit_test_teardown(test_lanes, fx_cleanup),
        cmocka_unit_test_teardown(test_many_hung_domains, fx_cleanup),
        cmocka_unit_test_teardown(test_fail_fast, fx_cleanup),
        cmocka_unit_test_teardown(test_refusal_pace, fx_cleanup),
        cmocka_unit_test_teardown(test_refusal_pace_teardown, fx_cleanup),
        cmocka_unit_test_teardown(test_concurrent_clients, fx_cleanup),
        cmocka_unit_test_teardown(test_events, fx_cleanup),
        cmocka_unit_test_teardown(test_idle_timeout, fx_cleanup),
        cmocka_unit_test_teardown(test_refusal_pace_timeout, fx_cleanup),
        cmocka_unit_test_teardown(test_refusal_pace_gone, fx_cleanup),
        cmocka_unit_test_teardown(test_refusal_pace_gone_teardown, fx_cleanup),
        cmocka_unit_test_teardown(test_refusal_pace_teardown_many, fx_cleanup),
        cmocka_unit_test_teardown(test_shutdown_drains, fx_cleanup),
        cmocka_unit_test_teardown(test_client_leaves_early, fx_cleanup),
        cmocka_unit_test_teardown(test_serve, fx_cleanup),
        cmocka_unit_test_teardown(test_openapi_routes, fx_cleanup),
        cmocka_unit_test_teardown(test_main_flags, fx_cleanup),
        cmocka_unit_test_teardown(test_help_matches_docs, fx_cleanup),
        cmocka_unit_test_teardown(test_main_signal, fx_cleanup),
        cmocka_unit_test_teardown(test_main_lock, fx_cleanup),
    };

    signal(SIGPIPE, SIG_IGN);
    if (getenv("TEST_FILTER"))
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
