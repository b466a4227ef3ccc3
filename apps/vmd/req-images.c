/* SPDX-License-Identifier: MIT */
/*
 * req-images.c - the image resource: create and resize bodies parsed into
 * typed requests (every field known, typed and bounded here), and each
 * request's one op from image.h.
 *
 *   POST /v1/images               {"name", "format": "qcow2"|"raw", "size_mib"}
 *                                 or {"name", "backing": NAME[, "size_mib"]}
 *   POST /v1/images/{name}/resize {"size_mib"}
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "request.h"

/* A name field: [A-Za-z0-9._-]{1,64}, not "." or "..", into @out. */
int vmd_image_name_field(struct json_object *body, const char *key, char *out, moor_error *err)
{
    struct json_object *v;

    if (!json_object_object_get_ex(body, key, &v))
        return 1; /* absent */
    const char *s = json_object_get_string(v);
    if (!json_object_is_type(v, json_type_string) ||
        strlen(s) != (size_t)json_object_get_string_len(v) || !vmd_config_name_ok(s))
        return moor_error_set(err, -EINVAL,
                              "\"%s\" must be an image name [A-Za-z0-9._-]{1,%d}, not . or ..", key,
                              VMD_NAME_MAX);
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

/* "size_mib": an integer 1..VMD_IMAGE_SIZE_MIB_MAX; 1 when absent. */
static int get_size(struct json_object *body, uint64_t *out, moor_error *err)
{
    struct json_object *v;

    if (!json_object_object_get_ex(body, "size_mib", &v))
        return 1;
    int64_t n = json_object_get_int64(v);
    if (!json_object_is_type(v, json_type_int) || n < 1 || n > VMD_IMAGE_SIZE_MIB_MAX)
        return moor_error_set(err, -EINVAL, "\"size_mib\" must be an integer in 1..%u",
                              VMD_IMAGE_SIZE_MIB_MAX);
    *out = (uint64_t)n;
    return 0;
}

static int get_format(struct json_object *body, enum vmd_image_format *out, moor_error *err)
{
    struct json_object *v;

    if (!json_object_object_get_ex(body, "format", &v))
        return 1;
    const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
    if (strcmp(s, "qcow2") == 0)
        *out = VMD_IMAGE_QCOW2;
    else if (strcmp(s, "raw") == 0)
        *out = VMD_IMAGE_RAW;
    else
        return moor_error_set(err, -EINVAL, "\"format\" must be \"qcow2\" or \"raw\"");
    return 0;
}

int vmd_parse_image_create(struct json_object *body, struct vmd_request *req, moor_error *err)
{
    static const char *const known[] = {"name", "format", "size_mib", "backing", NULL};
    struct vmd_image_create c = {.format = VMD_IMAGE_QCOW2};
    int rc, has_fmt, has_size, has_backing;

    if (!body)
        return moor_error_set(err, -EINVAL, "image create needs {\"name\", ...} in the body");
    if ((rc = vmd_check_fields(body, known, err)) < 0)
        return rc;
    if ((rc = vmd_image_name_field(body, "name", c.name, err)) != 0)
        return rc < 0 ? rc : moor_error_set(err, -EINVAL, "\"name\" is required");
    if ((has_backing = vmd_image_name_field(body, "backing", c.backing, err)) < 0)
        return has_backing;
    if ((has_fmt = get_format(body, &c.format, err)) < 0)
        return has_fmt;
    if ((has_size = get_size(body, &c.size_mib, err)) < 0)
        return has_size;
    if (has_backing == 0 && has_fmt == 0 && c.format != VMD_IMAGE_QCOW2)
        return moor_error_set(err, -EINVAL, "an overlay (\"backing\") is always qcow2");
    if (has_backing != 0 && has_size != 0)
        return moor_error_set(err, -EINVAL, "\"size_mib\" is required (or \"backing\")");
    if (has_backing == 0 && strcmp(c.backing, c.name) == 0)
        return moor_error_set(err, -EINVAL, "image %s cannot be its own backing file", c.name);
    req->u.image_create = c;
    return 0;
}

int vmd_parse_image_resize(struct json_object *body, struct vmd_request *req, moor_error *err)
{
    static const char *const known[] = {"size_mib", NULL};
    int rc;

    if (!body)
        return moor_error_set(err, -EINVAL, "resize needs {\"size_mib\": N} in the body");
    if ((rc = vmd_check_fields(body, known, err)) < 0)
        return rc;
    rc = get_size(body, &req->u.size_mib, err);
    return rc > 0 ? moor_error_set(err, -EINVAL, "\"size_mib\" is required") : rc;
}

int vmd_run_image_list(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                       moor_error *err)
{
    (void)req;
    return vmd_image_list(vmd, out, err);
}

int vmd_run_image_create(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                         moor_error *err)
{
    return vmd_image_create(vmd, &req->u.image_create, out, err);
}

int vmd_run_image_info(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                       moor_error *err)
{
    return vmd_image_info(vmd, req->img, out, err);
}

int vmd_run_image_delete(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                         moor_error *err)
{
    return vmd_image_delete(vmd, req->img, out, err);
}

int vmd_run_image_resize(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                         moor_error *err)
{
    return vmd_image_resize(vmd, req->img, req->u.size_mib, out, err);
}
