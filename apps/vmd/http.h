/* SPDX-License-Identifier: MIT */
/*
 * http.h - moor-vmd's HTTP server: libmicrohttpd driven by the moor loop
 * on the daemon's UNIX socket.
 *
 * All of libmicrohttpd runs on the loop thread: the loop watches MHD's
 * epoll descriptor and a timer for MHD's own timeouts, and calls MHD_run.
 * A request is parsed there (api.h), its connection suspended, and the
 * work handed to the pool; the worker's response comes back through
 * moor_loop_schedule and the loop thread queues it and resumes the
 * connection. GET /v1/events is a stream fed by the event bus.
 * See docs/vmd.md, "Threads".
 */
#ifndef MOOR_VMD_HTTP_H
#define MOOR_VMD_HTTP_H

#include <moor/error.h>

#include "vmd.h"

struct vmd_http;

/*
 * vmd_http_new - create the socket at @socket_path (its directory made
 * 0700 if missing; an existing one, left as it is, must be ours or root's
 * and not group- or world-writable; the socket bound 0600; a stale socket
 * replaced, a live one refused) and serve it on vmd->loop, whose thread
 * must run. Needs vmd->pool and vmd->events. Sets vmd->http to the server
 * before it serves (left as it was on failure).
 * Ownership: the caller's; vmd_http_free. Locks: none held.
 * Blocks: no (one connect() to probe a stale socket).
 * Returns the server, or NULL with @err: -EADDRINUSE (a daemon answers on
 * the socket), -EPERM (the directory is another user's or writable by
 * others), -ENOTDIR, -ENAMETOOLONG,
 * -ENOMEM, or the -errno of mkdir/socket/bind/listen, or -EIO (MHD).
 */
struct vmd_http *vmd_http_new(struct vmd *vmd, const char *socket_path, moor_error *err);

/*
 * vmd_http_stop_accepting - close the listening socket (and remove its
 * path); connections already open are still served. Idempotent.
 * Blocks: until the loop thread has run the change. Context: any thread
 * but the loop thread.
 */
void vmd_http_stop_accepting(struct vmd_http *http);

/*
 * vmd_http_free - end every event stream, answer every refusal held by
 * the refusal pace, close every connection, stop MHD and free the server.
 * Call after vmd_pool_drain (no request may be waiting for a worker).
 * NULL-safe.
 * Blocks: until the loop thread has run the teardown, which waits at most
 * 1 s for held refusals to be sent. Context: any thread but the loop
 * thread.
 */
void vmd_http_free(struct vmd_http *http);

/* vmd_http_streams - event streams open now (for GET /v1/debug). Any thread. */
unsigned vmd_http_streams(struct vmd_http *http);

/* vmd_http_refusals_held - fail-fast refusals held back by the refusal pace
 * now (--refusal-pace; for GET /v1/debug). Any thread; never blocks. */
unsigned vmd_http_refusals_held(struct vmd_http *http);

#endif /* MOOR_VMD_HTTP_H */
