/* SPDX-License-Identifier: MIT */
/*
 * output.c - what every moor-vmctl sub-command prints the same way: the
 * API's JSON for --json, the daemon's errors on stderr, and fields of an
 * answer turned into text for the human tables.
 */
#include "vmctl.h"

#include <json-c/json.h>
#include <stdarg.h>
#include <string.h>

void vmctl_freep(void *p)
{
    free(*(void **)p);
}

void vmctl_response_clearp(struct vmctl_response *r)
{
    vmctl_response_clear(r);
}

void vmctl_errorf(const char *fmt, ...)
{
    va_list ap;

    fputs("moor-vmctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int vmctl_print_json(struct json_object *json, bool pretty)
{
    int flags =
        JSON_C_TO_STRING_NOSLASHESCAPE |
        (pretty ? JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED : JSON_C_TO_STRING_PLAIN);

    if (puts(json_object_to_json_string_ext(json, flags)) == EOF || fflush(stdout) == EOF) {
        vmctl_errorf("cannot write to stdout");
        return VMCTL_EXIT_FAILED;
    }
    return VMCTL_EXIT_OK;
}

/* The daemon's own words, or the status line when it sent none. */
static void report_http_error(const struct vmctl_response *r)
{
    const char *nl;

    if (r->error_message && *r->error_message) {
        vmctl_errorf("%s", r->error_message);
        return;
    }
    nl = strchr(r->body, '\n');
    vmctl_errorf("moor-vmd answered HTTP %ld%s%.*s", r->status, r->body_len ? ": " : "",
                 (int)(nl ? (size_t)(nl - r->body) : r->body_len), r->body);
}

int vmctl_check(int rc, const moor_error *err, const struct vmctl_response *r,
                const struct vmctl_args *a)
{
    if (rc < 0) {
        vmctl_errorf("%s", moor_error_message(err));
        return VMCTL_EXIT_FAILED;
    }
    if (r->status >= 200 && r->status < 300)
        return VMCTL_EXIT_OK;
    if (a->json && r->json)
        vmctl_print_json(r->json, a->pretty);
    report_http_error(r);
    return VMCTL_EXIT_FAILED;
}

const char *vmctl_field(struct json_object *obj, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(obj, key, &v) || !v)
        return "-";
    switch (json_object_get_type(v)) {
    case json_type_object:
    case json_type_array:
        return json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
                                                     JSON_C_TO_STRING_NOSLASHESCAPE);
    case json_type_boolean:
        return json_object_get_boolean(v) ? "yes" : "no";
    default:
        return json_object_get_string(v);
    }
}

struct json_object *vmctl_body(const struct vmctl_response *r)
{
    if (!r->json || !json_object_is_type(r->json, json_type_object)) {
        vmctl_errorf("moor-vmd sent no JSON object (HTTP %ld)", r->status);
        return NULL;
    }
    return r->json;
}

int vmctl_call(struct vmctl_client *c, const struct vmctl_args *a, const char *method,
               const char *path, const char *body, struct vmctl_response *r)
{
    moor_error err = MOOR_ERROR_INIT;
    int rc = vmctl_request(c, method, path, body, r, &err);

    return vmctl_check(rc, &err, r, a);
}

int vmctl_done(const struct vmctl_args *a, const struct vmctl_response *r, const char *line)
{
    if (a->json)
        return r->json ? vmctl_print_json(r->json, a->pretty) : VMCTL_EXIT_OK;
    printf("%s\n", line);
    return fflush(stdout) == EOF ? VMCTL_EXIT_FAILED : VMCTL_EXIT_OK;
}
