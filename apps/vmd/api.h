/* SPDX-License-Identifier: MIT */
/*
 * api.h - moor-vmd's HTTP API without the HTTP: the route table, the
 * typed request it parses into, the op it runs, and the one mapping of
 * -errno to an HTTP status and error body (docs/vmd-api.md).
 *
 * The daemon's path: http.c calls vmd_api_parse() on the loop thread (no
 * blocking: the domain lookup is lock-free), then vmd_api_submit() hands
 * the request to the pool; a worker runs the op and calls the caller's
 * done function with the response. vmd_api_serve() does all of it on the
 * calling thread, for the fuzz target and tests.
 */
#ifndef MOOR_VMD_API_H
#define MOOR_VMD_API_H

#include <stdbool.h>
#include <stddef.h>

#include <moor/error.h>

#include "vmd.h"

/* A response: status, JSON body text (ends in a newline), and the headers
 * some statuses need. Owns body and location. */
struct vmd_response {
    unsigned status;
    char *body;
    size_t len;
    char *location;    /* 201: "/v1/domains/<uuid>", else NULL */
    const char *allow; /* 405: the methods the path takes (static), else NULL */
};

/* vmd_response_clear - free what @resp owns and zero it. NULL-safe. */
void vmd_response_clear(struct vmd_response *resp);

/*
 * vmd_api_error - fill @resp with the status and {"error":{"code","message"}}
 * body for -errno @code (the one table: EINVAL 400, EPERM 403, ENOENT and
 * ESRCH 404, EEXIST/EBUSY/ENOTCONN 409, EMSGSIZE 413, EREMOTEIO/EPIPE 502,
 * EAGAIN 503, ETIMEDOUT 504, anything else 500). @resp is cleared first.
 * Ownership: @resp's contents are the caller's. Blocks: no.
 */
void vmd_api_error(struct vmd_response *resp, int code, const char *message);

/* vmd_api_status - the HTTP status of -errno @code, from the same table. */
unsigned vmd_api_status(int code);

/* One route: what docs/api/moor-vmd.yaml must list. */
struct vmd_api_route {
    const char *method;
    const char *path; /* "/v1/domains/{id}/start" */
};

/* vmd_api_routes - the routes served, in table order: up to @cap of them
 * into @out (strings static). Returns how many there are (may exceed @cap).
 * Any thread; no locks. */
size_t vmd_api_routes(struct vmd_api_route *out, size_t cap);

struct vmd_request; /* request.h: a parsed, validated request */

/*
 * vmd_api_parse - @method + @url (path only, already percent-decoded) +
 * @body (@len bytes, may be 0) -> a request to run, or a response now
 * (unknown route 404, wrong method 405 with Allow, bad id or body 400, no
 * such domain 404).
 * Ownership: on 0, *@req is the caller's (vmd_api_submit, vmd_api_run, or
 * vmd_request_free) and @resp is untouched; on failure @resp is filled
 * (the caller's) and *@req untouched.
 * Locks: none taken but the registry's lock-free lookup. Blocks: no.
 * Context: any thread, the loop thread included.
 * Returns 0, or the negative errno whose response is in @resp.
 */
int vmd_api_parse(struct vmd *vmd, const char *method, const char *url, const char *body,
                  size_t len, struct vmd_request **req, struct vmd_response *resp);

/* vmd_request_is_stream - whether @req is GET /v1/events (served by the
 * caller as a stream, not run). */
bool vmd_request_is_stream(const struct vmd_request *req);

/* vmd_request_free - drop what @req owns (its domain reference included). NULL-safe. */
void vmd_request_free(struct vmd_request *req);

/* Called exactly once per submitted request, on a worker (or on the thread
 * draining the pool), with a response the callee then owns. */
typedef void (*vmd_api_done_fn)(void *opaque, struct vmd_response *resp);

/*
 * vmd_api_submit - run @req on vmd->pool in its lane; @done gets the
 * response. Ownership: @req is consumed, success or not.
 * Locks: the pool's mutex, briefly. Blocks: no. Context: any thread.
 * Returns 0 (@done will run); or a negative errno (-EAGAIN: the lane or
 * the pool is full, or draining) with @resp filled, and @done never runs.
 */
int vmd_api_submit(struct vmd *vmd, struct vmd_request *req, vmd_api_done_fn done, void *opaque,
                   struct vmd_response *resp);

/*
 * vmd_api_run - run @req's op on this thread and fill @resp (cleared
 * first). Ownership: @req is consumed. Blocks: as the op (domain.h).
 * Context: a worker, or a test/fuzz thread; never the loop thread.
 */
void vmd_api_run(struct vmd *vmd, struct vmd_request *req, struct vmd_response *resp);

/*
 * vmd_api_serve - parse and run one request on this thread, no socket:
 * the fuzz target's and tests' entry. GET /v1/events answers 200 with an
 * empty stream (a stream needs a connection).
 * Ownership: @resp is the caller's (vmd_response_clear). Blocks: as the op.
 * Returns the HTTP status (also in resp->status).
 */
unsigned vmd_api_serve(struct vmd *vmd, const char *method, const char *url, const char *body,
                       size_t len, struct vmd_response *resp);

#endif /* MOOR_VMD_API_H */
