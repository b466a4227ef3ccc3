/* SPDX-License-Identifier: MIT */
/*
 * tests/common/qmp-codec.c - see qmp-codec.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "qmp-codec.h"

static ssize_t qmp_frame(void *opaque, const char *buf, size_t len, moor_error *err)
{
    const char *nl = memchr(buf, '\n', len);
    size_t n = nl ? (size_t)(nl - buf) + 1 : len;

    (void)opaque;
    if (memchr(buf, '\0', n))
        return moor_error_set(err, -EPROTO, "NUL byte in a line");
    return nl ? (ssize_t)n : 0;
}

static bool command_name_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_'))
            return false;
    return true;
}

static ssize_t qmp_encode(void *opaque, const void *request, uint64_t id, char *buf, size_t size,
                          moor_error *err)
{
    const qmp_cmd *cmd = request;
    const char *args = NULL;
    int n;

    (void)opaque;
    if (!cmd->execute || !command_name_ok(cmd->execute))
        return moor_error_set(err, -EINVAL, "bad command name");
    /* The arguments belong to this caller's request: serialising them
     * (which caches the text inside the object) races with nobody. */
    if (cmd->arguments)
        args = json_object_to_json_string_ext(cmd->arguments, JSON_C_TO_STRING_PLAIN);
    n = snprintf(buf, size, "{\"execute\":\"%s\"%s%s,\"id\":%" PRIu64 "}\n", cmd->execute,
                 args ? ",\"arguments\":" : "", args ? args : "", id);
    return n < 0 ? moor_error_set(err, -EINVAL, "snprintf failed") : n;
}

/* A reply's id: a JSON integer >= 0. */
static bool reply_id(struct json_object *o, uint64_t *id)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, "id", &v) || !json_object_is_type(v, json_type_int))
        return false;
    errno = 0;
    int64_t n = json_object_get_int64(v);
    if (n < 0 || errno)
        return false;
    *id = (uint64_t)n;
    return true;
}

static int classify_object(struct json_object *o, moor_monitor_message *out, moor_error *err)
{
    struct json_object *v, *desc;

    if (json_object_object_get_ex(o, "QMP", NULL)) {
        out->kind = MOOR_MONITOR_GREETING;
        out->payload = json_object_get(o);
        return 0;
    }
    if (json_object_object_get_ex(o, "event", &v)) {
        if (!json_object_is_type(v, json_type_string))
            return moor_error_set(err, -EPROTO, "an event whose name is not a string");
        out->kind = MOOR_MONITOR_EVENT;
        out->payload = json_object_get(o);
        return 0;
    }
    if (json_object_object_get_ex(o, "return", &v)) {
        if (!reply_id(o, &out->id))
            return moor_error_set(err, -EPROTO, "a reply without an unsigned integer id");
        out->kind = MOOR_MONITOR_REPLY;
        out->payload = json_object_get(v);
        return 0;
    }
    if (json_object_object_get_ex(o, "error", &v)) {
        if (!reply_id(o, &out->id))
            return moor_error_set(err, -EPROTO, "an error reply without an unsigned integer id");
        out->kind = MOOR_MONITOR_REPLY;
        out->status = -EREMOTEIO;
        if (json_object_object_get_ex(v, "desc", &desc) &&
            json_object_is_type(desc, json_type_string))
            out->error = json_object_get_string(desc);
        out->payload = json_object_get(o); /* keeps the text alive */
        return 0;
    }
    out->kind = MOOR_MONITOR_IGNORE;
    return 0;
}

static int qmp_classify(void *opaque, const char *msg, size_t len, moor_monitor_message *out,
                        moor_error *err)
{
    struct json_tokener *tok;
    struct json_object *o;
    int rc;

    (void)opaque;
    while (len && (msg[len - 1] == '\n' || msg[len - 1] == '\r' || msg[len - 1] == ' ' ||
                   msg[len - 1] == '\t'))
        len--;
    if (!len) {
        out->kind = MOOR_MONITOR_IGNORE;
        return 0;
    }
    if (len > INT32_MAX)
        return moor_error_set(err, -EPROTO, "line too long for json-c");
    if (!(tok = json_tokener_new()))
        return moor_error_set(err, -ENOMEM, "json_tokener_new failed");
    o = json_tokener_parse_ex(tok, msg, (int)len);
    if (!o || json_tokener_get_error(tok) != json_tokener_success ||
        json_tokener_get_parse_end(tok) != len) {
        rc = moor_error_set(err, -EPROTO, "not one JSON value: %s",
                            o ? "trailing bytes"
                              : json_tokener_error_desc(json_tokener_get_error(tok)));
    } else if (!json_object_is_type(o, json_type_object)) {
        rc = moor_error_set(err, -EPROTO, "not a JSON object");
    } else {
        rc = classify_object(o, out, err);
    }
    json_object_put(o);
    json_tokener_free(tok);
    return rc;
}

static void qmp_free_payload(void *opaque, void *payload)
{
    (void)opaque;
    json_object_put(payload);
}

static const char *qmp_name(void *opaque, const void *request)
{
    (void)opaque;
    return ((const qmp_cmd *)request)->execute;
}

moor_monitor_codec qmp_codec(void)
{
    return (moor_monitor_codec){
        .frame = qmp_frame,
        .encode = qmp_encode,
        .classify = qmp_classify,
        .free_payload = qmp_free_payload,
        .name = qmp_name,
        .opaque = NULL,
    };
}
