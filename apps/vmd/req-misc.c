/* SPDX-License-Identifier: MIT */
/*
 * req-misc.c - the daemon's own resources: version and debug. None has a body (vmd_parse_empty).
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include <moor/introspect.h>

#include "http.h"
#include "pool.h"
#include "request.h"

int vmd_run_version(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                    moor_error *err)
{
    (void)vmd;
    (void)req;
    struct json_object *o = json_object_new_object();
    if (!o)
        return moor_error_set(err, -ENOMEM, "no memory for the version");
    json_object_object_add(o, "version", json_object_new_string(VMD_VERSION));
    json_object_object_add(o, "api", json_object_new_string(VMD_API_VERSION));
    *out = o;
    return 0;
}

/* The JSON text of a snapshot, collected by moor_debug_snapshot_write_json. */
struct text {
    char *data;
    size_t len, cap;
};

static int text_append(const char *data, size_t len, void *opaque)
{
    struct text *t = opaque;

    if (len >= t->cap - t->len) {
        size_t cap = t->cap ? 2 * t->cap : 4096;
        char *p;

        while (cap - t->len <= len)
            cap *= 2;
        if (!(p = realloc(t->data, cap)))
            return -ENOMEM;
        t->data = p;
        t->cap = cap;
    }
    memcpy(t->data + t->len, data, len);
    t->len += len;
    t->data[t->len] = '\0';
    return 0;
}

/* The library's own view (moor/introspect.h): every job held or waited
 * for with its thread and age, every monitor call pending, the census.
 * The library writes it as JSON text without json-c; it is parsed back
 * here to sit in the response as the "moor" object. */
static int moor_snapshot_json(struct json_object **out, moor_error *err)
{
    moor_snapshot *snap = moor_debug_snapshot();
    struct text t = {0};
    int rc;

    if (!snap)
        return moor_error_set(err, -ENOMEM, "no memory for the library's snapshot");
    rc = moor_debug_snapshot_write_json(snap, text_append, &t);
    moor_debug_snapshot_free(snap);
    if (rc == 0 && !(*out = json_tokener_parse(t.data)))
        rc = -EPROTO;
    free(t.data);
    if (rc < 0)
        return moor_error_set(err, rc, "the library's snapshot: %s",
                              rc == -EPROTO ? "not valid JSON" : "out of memory");
    return 0;
}

int vmd_run_debug(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                  moor_error *err)
{
    (void)req;
    struct json_object *o = json_object_new_object();
    if (!o)
        return moor_error_set(err, -ENOMEM, "no memory for the debug report");
    int rc = vmd_domains_debug(vmd, o, err);
    if (rc < 0) {
        json_object_put(o);
        return rc;
    }
    if (vmd->pool) {
        struct json_object *pool = vmd_pool_stats(vmd->pool);
        if (!pool) {
            json_object_put(o);
            return moor_error_set(err, -ENOMEM, "no memory for the pool's figures");
        }
        json_object_object_add(o, "pool", pool);
    }
    if (vmd->http) {
        struct json_object *http = json_object_new_object();
        if (!http) {
            json_object_put(o);
            return moor_error_set(err, -ENOMEM, "no memory for the HTTP figures");
        }
        json_object_object_add(http, "streams", json_object_new_int64(vmd_http_streams(vmd->http)));
        json_object_object_add(http, "refusals_held",
                               json_object_new_int64(vmd_http_refusals_held(vmd->http)));
        json_object_object_add(o, "http", http);
    }
    struct json_object *lib = NULL;
    rc = moor_snapshot_json(&lib, err);
    if (rc < 0) {
        json_object_put(o);
        return rc;
    }
    json_object_object_add(o, "moor", lib);
    *out = o;
    return 0;
}
