/* SPDX-License-Identifier: MIT */
/*
 * req-misc.c - the daemon's own resources: version and debug. None has a body (vmd_parse_empty).
 */
#include <errno.h>
#include <json-c/json.h>

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
        json_object_object_add(o, "http", http);
    }
    *out = o;
    return 0;
}
