/* SPDX-License-Identifier: MIT */
/*
 * fuzz/fuzz-api.c - libFuzzer target: moor-vmd's request path without a
 * socket (apps/vmd/api.c: route match, id check, body JSON with its depth
 * cap, the per-resource parsers, one op, the errno table), behind the test
 * double of domain.h (tests/vmd/ops-double.c), so defines, lookups and
 * state changes are real in-memory ones.
 *
 * Input layout: up to 8 requests, each
 *   byte 0         method: low 2 bits pick GET, POST, DELETE, or the raw
 *                  method text up to the first space of the URL line
 *   URL line       up to '\n' (raw bytes: control characters included)
 *   2 bytes        body length, little-endian (cut to what is left)
 *   body           that many bytes
 * Domains defined by one input are dropped at its end.
 *
 * Checked on every request (abort, so libFuzzer keeps the input): the
 * status is one the API documents (never 500 with the double behind it);
 * the body is one JSON object; every error has {"error":{"code","message"}};
 * 201 comes with a Location; 405 with an Allow.
 */
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moor/loop.h>
#include <moor/registry.h>

#include "api.h"
#include "domain.h"
#include "events.h"
#include "vmd.h"

#define MAX_REQUESTS 8

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz-api: check failed: %s (line %d)\n", #cond, __LINE__);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static struct vmd vmd;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    vmd.opt.workers = 1;
    vmd.domains = moor_registry_new(NULL);
    vmd.events = vmd_events_new(16);
    CHECK(vmd.domains && vmd.events);
    CHECK(vmd_domains_load(&vmd, NULL) == 0);
    return 0;
}

static bool status_documented(unsigned status)
{
    static const unsigned ok[] = {200, 201, 400, 403, 404, 405, 409, 413, 502, 503, 504};

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (ok[i] == status)
            return true;
    return false;
}

static void check_response(const char *url, const struct vmd_response *resp)
{
    CHECK(status_documented(resp->status));
    CHECK(resp->status != 201 || resp->location);
    CHECK(resp->status != 405 || resp->allow);
    if (resp->len == 0) {
        CHECK(resp->status == 200 && strcmp(url, "/v1/events") == 0);
        return;
    }
    CHECK(resp->body && resp->body[resp->len - 1] == '\n');
    struct json_object *o = json_tokener_parse(resp->body);
    CHECK(o && json_object_is_type(o, json_type_object));
    if (resp->status >= 400) {
        struct json_object *e, *code, *msg;
        CHECK(json_object_object_get_ex(o, "error", &e));
        CHECK(json_object_object_get_ex(e, "code", &code));
        CHECK(json_object_object_get_ex(e, "message", &msg));
        CHECK(json_object_get_string_len(code) > 0 && json_object_get_string_len(msg) > 0);
    }
    json_object_put(o);
}

/* One request from *@data; false when the input is used up. */
static bool one_request(const uint8_t **data, size_t *size)
{
    static const char *const methods[] = {"GET", "POST", "DELETE"};
    char method[16], url[512];
    struct vmd_response resp;

    if (*size < 1)
        return false;
    uint8_t pick = (*data)[0];
    (*data)++, (*size)--;
    const uint8_t *nl = memchr(*data, '\n', *size);
    size_t line = nl ? (size_t)(nl - *data) : *size;
    size_t ulen = line < sizeof(url) - 1 ? line : sizeof(url) - 1;
    memcpy(url, *data, ulen);
    url[ulen] = '\0'; /* a NUL inside ends the URL early, as in C strings */
    *data += line + (nl ? 1 : 0);
    *size -= line + (nl ? 1 : 0);
    if ((pick & 3) < 3) {
        snprintf(method, sizeof(method), "%s", methods[pick & 3]);
    } else {
        char *sp = strchr(url, ' ');
        size_t mlen = sp ? (size_t)(sp - url) : 0;
        snprintf(method, sizeof(method), "%.*s", (int)(mlen < 15 ? mlen : 15), url);
        if (sp)
            memmove(url, sp + 1, strlen(sp + 1) + 1);
    }
    size_t blen = 0;
    if (*size >= 2) {
        blen = (size_t)(*data)[0] | (size_t)(*data)[1] << 8;
        *data += 2, *size -= 2;
    }
    if (blen > *size)
        blen = *size;
    char *body = malloc(blen + 1);
    CHECK(body);
    memcpy(body, *data, blen);
    body[blen] = '\0';
    *data += blen, *size -= blen;

    unsigned status = vmd_api_serve(&vmd, method, url, body, blen, &resp);
    CHECK(status == resp.status);
    check_response(url, &resp);
    vmd_response_clear(&resp);
    free(body);
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int i = 0; i < MAX_REQUESTS && one_request(&data, &size); i++)
        ;
    vmd_domains_shutdown(&vmd);
    return 0;
}
