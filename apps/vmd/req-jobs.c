/* SPDX-License-Identifier: MIT */
/*
 * req-jobs.c - the long jobs' resource: save and restore bodies parsed
 * into struct vmd_longjob_args (every field known, typed and bounded), and
 * each request's one op (domain-jobs.c).
 *
 * A path is absolute, at most VMD_SAVE_PATH_MAX bytes, printable ASCII,
 * without "." or ".." segments or doubled slashes: it names the file
 * exactly, so the messages and the status file name it as the client did.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "request.h"

static bool path_ok(const char *p, size_t len)
{
    if (len < 2 || len > VMD_SAVE_PATH_MAX || p[0] != '/' || p[len - 1] == '/' || strlen(p) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] >= 0x7f)
            return false;
    for (const char *s = p; s; s = strchr(s + 1, '/')) {
        size_t n = strcspn(s + 1, "/");
        if (n == 0 || (n == 1 && s[1] == '.') || (n == 2 && s[1] == '.' && s[2] == '.'))
            return false;
    }
    return true;
}

static int parse_path(struct json_object *body, struct vmd_longjob_args *a, moor_error *err)
{
    struct json_object *v;

    if (!json_object_object_get_ex(body, "path", &v) || !json_object_is_type(v, json_type_string))
        return moor_error_set(err, -EINVAL, "\"path\" must be a string");
    const char *p = json_object_get_string(v);
    size_t len = (size_t)json_object_get_string_len(v);
    if (!path_ok(p, len))
        return moor_error_set(err, -EINVAL,
                              "\"path\" must be an absolute path of at most %u printable bytes, "
                              "without \".\", \"..\" or empty segments",
                              VMD_SAVE_PATH_MAX);
    memcpy(a->path, p, len + 1);
    return 0;
}

static int parse_common(struct json_object *body, const char *const *known, struct vmd_request *req,
                        moor_error *err)
{
    memset(&req->u.longjob, 0, sizeof(req->u.longjob));
    if (!body)
        return moor_error_set(err, -EINVAL, "%s needs {\"path\": ...} in the body",
                              known[1] && strcmp(known[1], "paused") == 0 ? "restore" : "save");
    int rc = vmd_check_fields(body, known, err);
    return rc ?: parse_path(body, &req->u.longjob, err);
}

int vmd_parse_save(struct json_object *body, struct vmd_request *req, moor_error *err)
{
    static const char *const known[] = {"path", "bandwidth_mib_s", NULL};
    struct json_object *v;

    int rc = parse_common(body, known, req, err);
    if (rc < 0)
        return rc;
    if (json_object_object_get_ex(body, "bandwidth_mib_s", &v)) {
        int64_t bw = json_object_get_int64(v);
        if (!json_object_is_type(v, json_type_int) || bw < 1 || bw > VMD_SAVE_BANDWIDTH_MAX)
            return moor_error_set(err, -EINVAL, "\"bandwidth_mib_s\" must be an integer in 1..%u",
                                  VMD_SAVE_BANDWIDTH_MAX);
        req->u.longjob.bandwidth_mib_s = (unsigned)bw;
    }
    return 0;
}

int vmd_parse_restore(struct json_object *body, struct vmd_request *req, moor_error *err)
{
    static const char *const known[] = {"path", "paused", NULL};
    struct json_object *v;

    int rc = parse_common(body, known, req, err);
    if (rc < 0)
        return rc;
    if (json_object_object_get_ex(body, "paused", &v)) {
        if (!json_object_is_type(v, json_type_boolean))
            return moor_error_set(err, -EINVAL, "\"paused\" must be true or false");
        req->u.longjob.paused = json_object_get_boolean(v);
    }
    return 0;
}

/* {"target": NAME, "disk": NAME (optional), "bandwidth_mib_s": N (optional)} */
int vmd_parse_backup(struct json_object *body, struct vmd_request *req, moor_error *err)
{
    static const char *const known[] = {"target", "disk", "bandwidth_mib_s", NULL};
    struct vmd_longjob_args *a = &req->u.longjob;
    struct json_object *v;

    memset(a, 0, sizeof(*a));
    if (!body)
        return moor_error_set(err, -EINVAL, "backup needs {\"target\": ...} in the body");
    int rc = vmd_check_fields(body, known, err);
    if (rc < 0)
        return rc;
    rc = vmd_image_name_field(body, "target", a->target, err);
    if (rc == 1)
        return moor_error_set(err, -EINVAL, "\"target\" (the image to create) is required");
    if (rc < 0 || vmd_image_name_field(body, "disk", a->disk, err) < 0)
        return -EINVAL;
    if (json_object_object_get_ex(body, "bandwidth_mib_s", &v)) {
        int64_t bw = json_object_get_int64(v);
        if (!json_object_is_type(v, json_type_int) || bw < 1 || bw > VMD_SAVE_BANDWIDTH_MAX)
            return moor_error_set(err, -EINVAL, "\"bandwidth_mib_s\" must be an integer in 1..%u",
                                  VMD_SAVE_BANDWIDTH_MAX);
        a->bandwidth_mib_s = (unsigned)bw;
    }
    return 0;
}

int vmd_run_backup(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                   moor_error *err)
{
    req->u.longjob.client = req->client;
    return vmd_domain_backup(vmd, req->dom, &req->u.longjob, out, err);
}

int vmd_run_save(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                 moor_error *err)
{
    req->u.longjob.client = req->client;
    return vmd_domain_save(vmd, req->dom, &req->u.longjob, out, err);
}

int vmd_run_restore(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                    moor_error *err)
{
    req->u.longjob.client = req->client;
    return vmd_domain_restore(vmd, &req->u.longjob, out, err);
}

int vmd_run_job(struct vmd *vmd, struct vmd_request *req, struct json_object **out, moor_error *err)
{
    return vmd_domain_job(vmd, req->dom, out, err);
}

int vmd_run_abort(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                  moor_error *err)
{
    return vmd_domain_abort(vmd, req->dom, out, err);
}
