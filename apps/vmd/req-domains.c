/* SPDX-License-Identifier: MIT */
/*
 * req-domains.c - the domain resource: its bodies parsed into typed
 * requests, and each request's one op from domain.h. The bodies are small
 * and closed: every field is known, typed and range-checked here; anything
 * else is -EINVAL naming the field.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "request.h"

int vmd_check_fields(struct json_object *body, const char *const *known, moor_error *err)
{
    json_object_object_foreach(body, key, val)
    {
        (void)val;
        bool ok = false;
        for (const char *const *k = known; *k; k++)
            ok = ok || strcmp(*k, key) == 0;
        if (!ok)
            return moor_error_set(err, -EINVAL, "unknown field \"%.64s\"", key);
    }
    return 0;
}

int vmd_parse_empty(struct json_object *body, struct vmd_request *req, moor_error *err)
{
    static const char *const known[] = {NULL};

    (void)req;
    return body ? vmd_check_fields(body, known, err) : 0;
}

int vmd_parse_define(struct json_object *body, struct vmd_request *req, moor_error *err)
{
    if (!body)
        return moor_error_set(err, -EINVAL, "define needs a config in the body");
    return vmd_config_parse(body, &req->u.define, err);
}

int vmd_parse_start(struct json_object *body, struct vmd_request *req, moor_error *err)
{
    static const char *const known[] = {"paused", NULL};
    struct json_object *v;

    req->u.paused = false;
    if (!body)
        return 0;
    int rc = vmd_check_fields(body, known, err);
    if (rc < 0)
        return rc;
    if (json_object_object_get_ex(body, "paused", &v)) {
        if (!json_object_is_type(v, json_type_boolean))
            return moor_error_set(err, -EINVAL, "\"paused\" must be true or false");
        req->u.paused = json_object_get_boolean(v);
    }
    return 0;
}

int vmd_parse_shutdown(struct json_object *body, struct vmd_request *req, moor_error *err)
{
    static const char *const known[] = {"timeout_ms", NULL};
    struct json_object *v;

    req->u.timeout_ms = 0;
    if (!body)
        return 0;
    int rc = vmd_check_fields(body, known, err);
    if (rc < 0)
        return rc;
    if (json_object_object_get_ex(body, "timeout_ms", &v)) {
        int64_t ms = json_object_get_int64(v);
        if (!json_object_is_type(v, json_type_int) || ms < 1 || ms > VMD_SHUTDOWN_MAX_MS)
            return moor_error_set(err, -EINVAL, "\"timeout_ms\" must be an integer in 1..%u",
                                  VMD_SHUTDOWN_MAX_MS);
        req->u.timeout_ms = (unsigned)ms;
    }
    return 0;
}

int vmd_parse_qmp(struct json_object *body, struct vmd_request *req, moor_error *err)
{
    static const char *const known[] = {"execute", "arguments", NULL};
    struct json_object *exec, *args = NULL;

    if (!body)
        return moor_error_set(err, -EINVAL, "qmp needs {\"execute\": ...} in the body");
    int rc = vmd_check_fields(body, known, err);
    if (rc < 0)
        return rc;
    if (!json_object_object_get_ex(body, "execute", &exec) ||
        !json_object_is_type(exec, json_type_string))
        return moor_error_set(err, -EINVAL, "\"execute\" must be a string");
    const char *name = json_object_get_string(exec);
    size_t len = (size_t)json_object_get_string_len(exec);
    if (!vmd_token_valid(name, len, VMD_QMP_COMMAND_MAX, "_-") || strlen(name) != len)
        return moor_error_set(err, -EINVAL, "\"execute\" must match [A-Za-z0-9_-]{1,%d}",
                              VMD_QMP_COMMAND_MAX);
    if (json_object_object_get_ex(body, "arguments", &args) &&
        !json_object_is_type(args, json_type_object))
        return moor_error_set(err, -EINVAL, "\"arguments\" must be an object");
    memcpy(req->u.qmp.execute, name, len + 1);
    req->u.qmp.arguments = args ? json_object_get(args) : NULL;
    return 0;
}

void vmd_request_clear_domains(struct vmd_request *req)
{
    if (req->parse == vmd_parse_define)
        vmd_config_clear(&req->u.define);
    else if (req->parse == vmd_parse_qmp)
        json_object_put(req->u.qmp.arguments);
}

int vmd_run_list(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                 moor_error *err)
{
    (void)req;
    return vmd_domain_list(vmd, out, err);
}

int vmd_run_define(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                   moor_error *err)
{
    return vmd_domain_define(vmd, &req->u.define, out, err);
}

int vmd_run_info(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                 moor_error *err)
{
    return vmd_domain_info(vmd, req->dom, out, err);
}

int vmd_run_undefine(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                     moor_error *err)
{
    return vmd_domain_undefine(vmd, req->dom, out, err);
}

int vmd_run_state(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                  moor_error *err)
{
    return vmd_domain_state(vmd, req->dom, out, err);
}

int vmd_run_stats(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                  moor_error *err)
{
    return vmd_domain_stats(vmd, req->dom, out, err);
}

int vmd_run_start(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                  moor_error *err)
{
    return vmd_domain_start(vmd, req->dom, req->u.paused, out, err);
}

int vmd_run_shutdown(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                     moor_error *err)
{
    return vmd_domain_shutdown(vmd, req->dom, req->u.timeout_ms, out, err);
}

int vmd_run_destroy(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                    moor_error *err)
{
    return vmd_domain_destroy(vmd, req->dom, out, err);
}

int vmd_run_suspend(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                    moor_error *err)
{
    return vmd_domain_suspend(vmd, req->dom, out, err);
}

int vmd_run_resume(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                   moor_error *err)
{
    return vmd_domain_resume(vmd, req->dom, out, err);
}

int vmd_run_reset(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                  moor_error *err)
{
    return vmd_domain_reset(vmd, req->dom, out, err);
}

int vmd_run_qmp(struct vmd *vmd, struct vmd_request *req, struct json_object **out, moor_error *err)
{
    return vmd_domain_qmp(vmd, req->dom, req->u.qmp.execute, req->u.qmp.arguments, out, err);
}
