/* SPDX-License-Identifier: MIT */
/*
 * client.h - a small HTTP client for moor-vmd's API over its UNIX socket
 * (libcurl + json-c). moor-vmctl, the demo, the daemon's benchmark and its
 * tests all talk to the daemon through it, so there is one client.
 *
 * A client is one libcurl easy handle: it keeps its connection alive
 * between requests (HTTP/1.1 keep-alive) and must be used by one thread at
 * a time. Make one per thread.
 */
#ifndef MOOR_VMCTL_CLIENT_H
#define MOOR_VMCTL_CLIENT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include <moor/error.h>

struct json_object;
struct vmctl_client;

/* The answer to one request. */
struct vmctl_response {
    long status;              /* HTTP status (200, 404, ...) */
    struct json_object *json; /* the body parsed, or NULL (empty or not JSON) */
    char *body;               /* the raw body, NUL-terminated (never NULL on success) */
    size_t body_len;
    const char
        *error_code; /* for a non-2xx with an error object: its "code" (borrowed from json) */
    const char *error_message; /* ... and its "message" (borrowed from json) */
};

/*
 * vmctl_client_new - a client for the daemon listening on @socket_path.
 * Connects lazily, at the first request. @timeout_ms bounds each whole
 * request (0: no bound). Ownership: the caller's; vmctl_client_free.
 * Returns NULL with @err set: -EINVAL (path NULL or too long), -ENOMEM.
 */
struct vmctl_client *vmctl_client_new(const char *socket_path, long timeout_ms, moor_error *err);

/* vmctl_client_free - close the connection and free. NULL-safe. */
void vmctl_client_free(struct vmctl_client *c);

/*
 * vmctl_request - send @method @path (e.g. "GET", "/v1/domains") with
 * @body (a JSON text, or NULL for none) and wait for the whole answer.
 * Blocks: up to the client's timeout. Ownership: *@out is the caller's
 * (vmctl_response_clear), filled on success only.
 * Returns 0 when an HTTP answer arrived (whatever its status); or
 * -ECONNREFUSED / -ENOENT (no daemon at the socket: the message is
 * "cannot connect to moor-vmd at PATH: is it running?"), -EACCES,
 * -ETIMEDOUT, -ECANCELED (the cancel flag was raised), -EIO (another
 * transport failure: the message is libcurl's), -ENOMEM.
 */
int vmctl_request(struct vmctl_client *c, const char *method, const char *path, const char *body,
                  struct vmctl_response *out, moor_error *err);

/*
 * vmctl_stream - GET @path and call @on_line for each complete line of the
 * body as it arrives (a streaming response such as /v1/events). @on_line
 * returns true to go on, false to stop (the connection is then closed).
 * Ownership: @line is the client's, valid during the call only (copy what
 * is kept); @opaque stays the caller's. Locks: none; @c is used by one
 * thread at a time. Blocks until the stream ends, @on_line stops it, the
 * cancel flag is raised, or the timeout.
 * Returns: the HTTP status (> 0) when the stream ended or was stopped (by
 * @on_line or the cancel flag); a negative errno as vmctl_request. For a
 * non-2xx status @on_line is never called and @err holds the daemon's
 * error message (or the status line).
 */
long vmctl_stream(struct vmctl_client *c, const char *path,
                  bool (*on_line)(const char *line, size_t len, void *opaque), void *opaque,
                  moor_error *err);

/*
 * vmctl_client_set_cancel - make @c's requests give up soon (within about
 * a second: libcurl's idle progress tick) once *@flag is non-zero, e.g. set
 * by a SIGINT handler. NULL: no cancel flag (the default). Ownership: the
 * flag stays the caller's and must outlive the client. Locks: none (the
 * flag is only read, from the thread running a request). Blocks: no.
 */
void vmctl_client_set_cancel(struct vmctl_client *c, const volatile sig_atomic_t *flag);

/* vmctl_response_clear - free what @r holds and zero it. NULL-safe. */
void vmctl_response_clear(struct vmctl_response *r);

#endif /* MOOR_VMCTL_CLIENT_H */
