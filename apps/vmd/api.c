/* SPDX-License-Identifier: MIT */
/*
 * api.c - the route table and the request path without the socket.
 *
 * Theory of operation. A request is matched against one table (method,
 * path pattern, parser, runner, work class). The path is split at '/';
 * a pattern segment "{id}" takes any one segment, which must then be a
 * domain name ([A-Za-z0-9._-]{1,64}; a canonical UUID is one too). A path
 * no route has is 404; a path some route has with another method is 405
 * with Allow. The body becomes JSON (depth capped, one object, nothing
 * after it), the domain is looked up (lock-free) and the route's parser
 * fills the typed request; only that request reaches a worker, where the
 * route's runner calls one op. Every failure, ours or an op's, becomes a
 * status and error body through one errno table.
 */
#define _GNU_SOURCE /* asprintf, strerrorname_np */
#include "api.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "log.h"
#include "pool.h"
#include "request.h"

/* ---- errors ------------------------------------------------------------ */

static const struct {
    int code; /* positive errno */
    unsigned status;
    const char *name;
} errno_table[] = {
    {EINVAL, 400, "EINVAL"},     {EPERM, 403, "EPERM"},       {ENOENT, 404, "ENOENT"},
    {ESRCH, 404, "ENOENT"},      {EEXIST, 409, "EEXIST"},     {EBUSY, 409, "EBUSY"},
    {ENOTCONN, 409, "ENOTCONN"}, {EMSGSIZE, 413, "EMSGSIZE"}, {EREMOTEIO, 502, "EREMOTEIO"},
    {EPIPE, 502, "EPIPE"},       {EAGAIN, 503, "EAGAIN"},     {ETIMEDOUT, 504, "ETIMEDOUT"},
    {ENOMEM, 500, "ENOMEM"},     {EIO, 500, "EIO"},
};

unsigned vmd_api_status(int code)
{
    for (size_t i = 0; i < sizeof(errno_table) / sizeof(errno_table[0]); i++)
        if (errno_table[i].code == -code)
            return errno_table[i].status;
    return 500;
}

static const char *errno_name(int code)
{
    for (size_t i = 0; i < sizeof(errno_table) / sizeof(errno_table[0]); i++)
        if (errno_table[i].code == -code)
            return errno_table[i].name;
    const char *name = strerrorname_np(-code);
    return name ? name : "EIO";
}

void vmd_response_clear(struct vmd_response *resp)
{
    if (!resp)
        return;
    free(resp->body);
    free(resp->location);
    memset(resp, 0, sizeof(*resp));
}

/* Put @obj's text (plus a newline) in @resp with @status; consumes @obj. */
static int set_body(struct vmd_response *resp, unsigned status, struct json_object *obj)
{
    size_t len;
    const char *text = json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN, &len);
    char *body = text ? malloc(len + 2) : NULL;

    if (!body) {
        json_object_put(obj);
        return -ENOMEM;
    }
    memcpy(body, text, len);
    body[len] = '\n';
    body[len + 1] = '\0';
    json_object_put(obj);
    resp->status = status;
    resp->body = body;
    resp->len = len + 1;
    return 0;
}

/* The last resort when even the error body cannot be built. */
static void set_static_error(struct vmd_response *resp)
{
    static const char text[] = "{\"error\":{\"code\":\"ENOMEM\",\"message\":\"out of memory\"}}\n";

    resp->status = 500;
    resp->body = strdup(text);
    resp->len = resp->body ? sizeof(text) - 1 : 0;
}

void vmd_api_error(struct vmd_response *resp, int code, const char *message)
{
    vmd_response_clear(resp);
    if (code >= 0)
        code = -EIO;
    struct json_object *e = json_object_new_object();
    struct json_object *o = json_object_new_object();
    if (!e || !o) {
        json_object_put(e);
        json_object_put(o);
        set_static_error(resp);
        return;
    }
    json_object_object_add(e, "code", json_object_new_string(errno_name(code)));
    json_object_object_add(e, "message",
                           json_object_new_string(message && *message ? message : strerror(-code)));
    json_object_object_add(o, "error", e);
    if (set_body(resp, vmd_api_status(code), o) < 0)
        set_static_error(resp);
}

static void error_from(struct vmd_response *resp, int code, const moor_error *err)
{
    vmd_api_error(resp, code, moor_error_message(err));
}

/* ---- routes ------------------------------------------------------------ */

struct route {
    const char *method;
    const char *path;
    vmd_parse_fn parse;
    vmd_run_fn run; /* NULL: the event stream */
    enum vmd_work_class cls;
    unsigned ok_status;
};

static const struct route routes[] = {
    {"GET", "/v1/version", vmd_parse_empty, vmd_run_version, VMD_WORK_FAST, 200},
    {"GET", "/v1/debug", vmd_parse_empty, vmd_run_debug, VMD_WORK_FAST, 200},
    {"GET", "/v1/events", vmd_parse_empty, NULL, VMD_WORK_FAST, 200},
    {"GET", "/v1/domains", vmd_parse_empty, vmd_run_list, VMD_WORK_FAST, 200},
    {"POST", "/v1/domains", vmd_parse_define, vmd_run_define, VMD_WORK_FAST, 201},
    {"GET", "/v1/domains/{id}", vmd_parse_empty, vmd_run_info, VMD_WORK_FAST, 200},
    {"DELETE", "/v1/domains/{id}", vmd_parse_empty, vmd_run_undefine, VMD_WORK_LANE, 200},
    {"GET", "/v1/domains/{id}/state", vmd_parse_empty, vmd_run_state, VMD_WORK_FAST, 200},
    {"GET", "/v1/domains/{id}/stats", vmd_parse_empty, vmd_run_stats, VMD_WORK_LANE, 200},
    {"POST", "/v1/domains/{id}/start", vmd_parse_start, vmd_run_start, VMD_WORK_LANE, 200},
    {"POST", "/v1/domains/{id}/shutdown", vmd_parse_shutdown, vmd_run_shutdown, VMD_WORK_LANE, 200},
    {"POST", "/v1/domains/{id}/destroy", vmd_parse_empty, vmd_run_destroy, VMD_WORK_DESTROY, 200},
    {"POST", "/v1/domains/{id}/suspend", vmd_parse_empty, vmd_run_suspend, VMD_WORK_LANE, 200},
    {"POST", "/v1/domains/{id}/resume", vmd_parse_empty, vmd_run_resume, VMD_WORK_LANE, 200},
    {"POST", "/v1/domains/{id}/reset", vmd_parse_empty, vmd_run_reset, VMD_WORK_LANE, 200},
    {"POST", "/v1/domains/{id}/qmp", vmd_parse_qmp, vmd_run_qmp, VMD_WORK_LANE, 200},
    {"POST", "/v1/domains/{id}/save", vmd_parse_save, vmd_run_save, VMD_WORK_LANE, 202},
    {"POST", "/v1/domains/restore", vmd_parse_restore, vmd_run_restore, VMD_WORK_FAST, 202},
    {"GET", "/v1/domains/{id}/job", vmd_parse_empty, vmd_run_job, VMD_WORK_FAST, 200},
    {"DELETE", "/v1/domains/{id}/job", vmd_parse_empty, vmd_run_abort, VMD_WORK_LANE, 200},
    {"POST", "/v1/domains/{id}/backup", vmd_parse_backup, vmd_run_backup, VMD_WORK_LANE, 202},
    /* images: "{name}" is an image name; lanes are per image */
    {"GET", "/v1/images", vmd_parse_empty, vmd_run_image_list, VMD_WORK_FAST, 200},
    {"POST", "/v1/images", vmd_parse_image_create, vmd_run_image_create, VMD_WORK_LANE, 201},
    {"GET", "/v1/images/{name}", vmd_parse_empty, vmd_run_image_info, VMD_WORK_LANE, 200},
    {"DELETE", "/v1/images/{name}", vmd_parse_empty, vmd_run_image_delete, VMD_WORK_LANE, 200},
    {"POST", "/v1/images/{name}/resize", vmd_parse_image_resize, vmd_run_image_resize,
     VMD_WORK_LANE, 200},
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

size_t vmd_api_routes(struct vmd_api_route *out, size_t cap)
{
    for (size_t i = 0; i < N_ROUTES && i < cap; i++)
        out[i] = (struct vmd_api_route){routes[i].method, routes[i].path};
    return N_ROUTES;
}

/* Whether @path matches @pattern; the "{id}" segment goes to @id. */
static bool path_match(const char *pattern, const char *path, const char **id, size_t *id_len)
{
    while (*pattern && *path) {
        if (*pattern != '/' || *path != '/')
            return false;
        pattern++;
        path++;
        size_t pl = strcspn(pattern, "/");
        size_t sl = strcspn(path, "/");
        bool var = (pl == 4 && memcmp(pattern, "{id}", 4) == 0) ||
                   (pl == 6 && memcmp(pattern, "{name}", 6) == 0);
        if (var && sl > 0) {
            *id = path;
            *id_len = sl;
        } else if (pl != sl || memcmp(pattern, path, pl) != 0) {
            return false;
        }
        pattern += pl;
        path += sl;
    }
    return !*pattern && !*path;
}

bool vmd_token_valid(const char *s, size_t len, size_t max, const char *punct)
{
    if (len < 1 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (c && strchr(punct, c));
        if (!ok)
            return false;
    }
    return true;
}

/* Whether @s has a byte that is not printable ASCII: a control character,
 * DEL, or a byte >= 0x80. Error messages repeat the path, and must stay
 * valid UTF-8 (JSON) however they are cut. */
static bool has_unprintable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            return true;
    return false;
}

/* Find the route; on no match fill @resp with 404 or 405. */
static const struct route *route_find(const char *method, const char *url, const char **id,
                                      size_t *id_len, struct vmd_response *resp)
{
    static const char *const allow_sets[] = {"GET", "POST", "DELETE", "GET, POST", "GET, DELETE"};
    bool get = false, post = false, del = false;

    for (size_t i = 0; i < N_ROUTES; i++) {
        *id = NULL; /* a pattern that matched the path but not the method left its id */
        *id_len = 0;
        if (!path_match(routes[i].path, url, id, id_len))
            continue;
        if (strcmp(routes[i].method, method) == 0)
            return &routes[i];
        get = get || strcmp(routes[i].method, "GET") == 0;
        post = post || strcmp(routes[i].method, "POST") == 0;
        del = del || strcmp(routes[i].method, "DELETE") == 0;
    }
    if (!get && !post && !del) {
        char msg[160];
        snprintf(msg, sizeof(msg), "no route %.100s", url);
        vmd_api_error(resp, -ENOENT, msg);
        return NULL;
    }
    char msg[200];
    const char *allow = get && post  ? allow_sets[3]
                        : get && del ? allow_sets[4]
                        : get        ? allow_sets[0]
                        : post       ? allow_sets[1]
                                     : allow_sets[2];
    snprintf(msg, sizeof(msg), "%.100s takes %s, not %.16s", url, allow, method);
    vmd_api_error(resp, -EINVAL, msg);
    resp->status = 405;
    resp->allow = allow;
    return NULL;
}

/* @body (@len bytes) -> one JSON object, or NULL when empty. */
static int parse_body(const char *body, size_t len, struct json_object **out, moor_error *err)
{
    *out = NULL;
    if (len == 0)
        return 0;
    /* json-c's depth counts one more than the nesting levels it accepts */
    struct json_tokener *tok = json_tokener_new_ex(VMD_MAX_JSON_DEPTH + 1);
    if (!tok)
        return moor_error_set(err, -ENOMEM, "no memory for the JSON parser");
    struct json_object *obj = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    int rc = 0;
    if (jerr == json_tokener_error_depth)
        rc = moor_error_set(err, -EINVAL, "the body is nested deeper than %d levels",
                            VMD_MAX_JSON_DEPTH);
    else if (jerr == json_tokener_continue || (jerr == json_tokener_success && !obj))
        rc = moor_error_set(err, -EINVAL, "the body is not a complete JSON value");
    else if (jerr != json_tokener_success)
        rc = moor_error_set(err, -EINVAL, "the body is not JSON: %s at byte %zu",
                            json_tokener_error_desc(jerr), end);
    else if (!json_object_is_type(obj, json_type_object))
        rc = moor_error_set(err, -EINVAL, "the body must be a JSON object");
    for (size_t i = end; rc == 0 && i < len; i++)
        if (!strchr(" \t\r\n", body[i]))
            rc = moor_error_set(err, -EINVAL, "data after the JSON object at byte %zu", i);
    if (rc < 0) {
        json_object_put(obj);
        return rc;
    }
    *out = obj;
    return 0;
}

static void json_putp(struct json_object **p)
{
    json_object_put(*p);
}

int vmd_api_parse(struct vmd *vmd, const char *method, const char *url, const char *body,
                  size_t len, struct vmd_request **req, struct vmd_response *resp)
{
    moor_error err = MOOR_ERROR_INIT;
    const char *id = NULL;
    size_t id_len = 0;

    if (!method || !url || has_unprintable(method) || has_unprintable(url)) {
        vmd_api_error(resp, -EINVAL, "the request line must be printable ASCII");
        return -EINVAL;
    }
    const struct route *r = route_find(method, url, &id, &id_len, resp);
    if (!r)
        return resp->status == 404 ? -ENOENT : -EINVAL;
    bool image = strncmp(r->path, "/v1/images/", 11) == 0;
    if (id && (!vmd_token_valid(id, id_len, VMD_NAME_MAX, "._-") ||
               (image && id[0] == '.' && (id_len == 1 || (id_len == 2 && id[1] == '.'))))) {
        vmd_api_error(resp, -EINVAL,
                      image ? "an image name is [A-Za-z0-9._-]{1,64}, not . or .."
                            : "a domain id is a name [A-Za-z0-9._-]{1,64} or a UUID");
        return -EINVAL;
    }
    __attribute__((cleanup(json_putp))) struct json_object *json = NULL;
    int rc = parse_body(body, len, &json, &err);
    if (rc < 0) {
        error_from(resp, rc, &err);
        return rc;
    }
    struct vmd_request *q = calloc(1, sizeof(*q));
    if (!q) {
        vmd_api_error(resp, -ENOMEM, "no memory for the request");
        return -ENOMEM;
    }
    q->api = r->path;
    q->parse = r->parse;
    q->run = r->run;
    q->cls = r->cls;
    q->ok_status = r->ok_status;
    if (id) {
        char name[VMD_NAME_MAX + 1];
        memcpy(name, id, id_len);
        name[id_len] = '\0';
        if (image)
            q->img = vmd_image_lookup(vmd, name);
        else
            q->dom = vmd_domain_lookup(vmd, name);
        if (!q->dom && !q->img) {
            free(q);
            moor_error_set(&err, -ENOENT, "no %s %s", image ? "image" : "domain", name);
            error_from(resp, -ENOENT, &err);
            return -ENOENT;
        }
    }
    rc = r->parse(json, q, &err);
    if (rc < 0) {
        moor_unref(q->dom);
        moor_unref(q->img);
        free(q);
        error_from(resp, rc, &err);
        return rc;
    }
    *req = q;
    return 0;
}

bool vmd_request_is_stream(const struct vmd_request *req)
{
    return req->run == NULL;
}

void vmd_request_free(struct vmd_request *req)
{
    if (!req)
        return;
    vmd_request_clear_domains(req);
    moor_unref(req->dom);
    moor_unref(req->img);
    free(req);
}

/* ---- running ------------------------------------------------------------ */

/* Location of a new domain (its uuid) or image (its name), from the answer. */
static char *location_of(const struct vmd_request *req, struct json_object *info)
{
    bool image = strcmp(req->api, "/v1/images") == 0;
    struct json_object *key;
    char *loc;

    if (!json_object_object_get_ex(info, image ? "name" : "uuid", &key) ||
        !json_object_is_type(key, json_type_string))
        return NULL;
    if (asprintf(&loc, "/v1/%s/%s", image ? "images" : "domains", json_object_get_string(key)) < 0)
        return NULL;
    return loc;
}

void vmd_api_run(struct vmd *vmd, struct vmd_request *req, struct vmd_response *resp)
{
    moor_error err = MOOR_ERROR_INIT;
    struct json_object *out = NULL;

    vmd_response_clear(resp);
    int rc = req->run(vmd, req, &out, &err);
    if (rc < 0) {
        unsigned status = vmd_api_status(rc);
        static struct vmd_log_limit failed = VMD_LOG_LIMIT_INIT;

        if (status >= 500)
            vmd_log_limited(&failed, VMD_LOG_WARNING, req->dom ? vmd_domain_name(req->dom) : NULL,
                            req->api, "%u: %s", status, moor_error_message(&err));
        error_from(resp, rc, &err);
    } else {
        char *loc = req->ok_status == 201 ? location_of(req, out) : NULL;
        if (set_body(resp, req->ok_status, out) < 0) {
            free(loc);
            vmd_api_error(resp, -ENOMEM, "no memory for the response");
        } else {
            resp->location = loc;
        }
    }
    vmd_request_free(req);
}

static void work_run(struct vmd_work *work)
{
    struct vmd_request *req =
        (struct vmd_request *)((char *)work - offsetof(struct vmd_request, work));
    struct vmd_response resp = {0};
    vmd_api_done_fn done = req->done;
    void *opaque = req->opaque;

    vmd_api_run(req->vmd, req, &resp);
    done(opaque, &resp);
}

static void work_cancel(struct vmd_work *work, int code, const char *message)
{
    struct vmd_request *req =
        (struct vmd_request *)((char *)work - offsetof(struct vmd_request, work));
    struct vmd_response resp = {0};
    vmd_api_done_fn done = req->done;
    void *opaque = req->opaque;

    vmd_request_free(req);
    vmd_api_error(&resp, code, message);
    done(opaque, &resp);
}

int vmd_api_submit(struct vmd *vmd, struct vmd_request *req, vmd_api_done_fn done, void *opaque,
                   struct vmd_response *resp)
{
    moor_error err = MOOR_ERROR_INIT;

    req->vmd = vmd;
    req->done = done;
    req->opaque = opaque;
    req->work.run = work_run;
    req->work.cancel = work_cancel;
    /* Lane work with no object of its own yet (an image create runs
     * qemu-img for up to a minute) shares the image pool's lane, so it
     * never takes the workers kept for calls that never block. */
    static const moor_uuid pool_lane = {
        {'m', 'o', 'o', 'r', '-', 'i', 'm', 'a', 'g', 'e', '-', 'p', 'o', 'o', 'l', 0}};
    const moor_uuid *uuid = req->dom   ? vmd_domain_uuid(req->dom)
                            : req->img ? vmd_image_uuid(req->img)
                                       : &pool_lane;
    const char *name = req->dom   ? vmd_domain_name(req->dom)
                       : req->img ? vmd_image_name(req->img)
                                  : "image pool";
    static struct vmd_log_limit refused = VMD_LOG_LIMIT_INIT;
    /* A call that could only time out on a hung QEMU is answered here, on
     * the loop thread, without a worker (vmd_domain_fail_fast). */
    const char *op = strrchr(req->api, '/'); /* the op: the path's last part */
    int rc = req->dom && req->cls == VMD_WORK_LANE && op
                 ? vmd_domain_fail_fast(req->dom, op + 1, &err)
                 : 0;
    if (rc == 0)
        rc = vmd_pool_submit(vmd->pool, req->cls, uuid, name, &req->work, &err);
    if (rc < 0) {
        vmd_log_limited(&refused, VMD_LOG_WARNING, name, req->api, "%u: %s", vmd_api_status(rc),
                        moor_error_message(&err));
        vmd_request_free(req);
        error_from(resp, rc, &err);
    }
    return rc;
}

unsigned vmd_api_serve(struct vmd *vmd, const char *method, const char *url, const char *body,
                       size_t len, struct vmd_response *resp)
{
    struct vmd_request *req = NULL;

    memset(resp, 0, sizeof(*resp));
    if (len > VMD_MAX_BODY) {
        vmd_api_error(resp, -EMSGSIZE, "the body is over 1 MiB");
        return resp->status;
    }
    if (vmd_api_parse(vmd, method, url, body, len, &req, resp) < 0)
        return resp->status;
    if (vmd_request_is_stream(req)) {
        vmd_request_free(req);
        resp->status = 200;
        resp->body = strdup("");
        resp->len = 0;
        if (!resp->body)
            vmd_api_error(resp, -ENOMEM, "no memory for the response");
        return resp->status;
    }
    vmd_api_run(vmd, req, resp);
    return resp->status;
}
