/* SPDX-License-Identifier: MIT */
/*
 * events.h - the event bus behind GET /v1/events.
 *
 * Publishers (the loop thread on QMP events and QEMU exits, workers on
 * state changes and job progress) add one JSON object per event; the bus
 * stamps it with a sequence number and the wall-clock time and keeps the
 * newest `capacity` lines in a ring. Readers (the HTTP layer's streaming
 * responses) hold a cursor; a reader that falls behind by more than the
 * ring skips ahead and is told how many lines it lost.
 *
 * A line is: {"seq":N,"time":"2026-12-07T02:19:13.123Z","type":"lifecycle",
 *             "domain":"vm1",...the publisher's fields...}\n
 * of at most VMD_EVENTS_LINE_MAX bytes (newline included): a longer one is
 * published as its header fields and "truncated":true,"bytes":N instead.
 */
#ifndef MOOR_VMD_EVENTS_H
#define MOOR_VMD_EVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct json_object;
struct vmd_events;

#define VMD_EVENTS_DEFAULT_CAPACITY 1024u
#define VMD_EVENTS_MAX_SUBSCRIBERS  64u
#define VMD_EVENTS_LINE_MAX         (64u * 1024u) /* bytes of one line, newline included */

/*
 * vmd_events_new - an empty bus keeping the newest @capacity lines
 * (0: the default). Ownership: the caller's; free with vmd_events_free.
 * Returns NULL on -ENOMEM.
 */
struct vmd_events *vmd_events_new(size_t capacity);

/* vmd_events_free - free the bus. No subscriber may be left. NULL-safe. */
void vmd_events_free(struct vmd_events *ev);

/*
 * vmd_events_publish - add an event of @type ("lifecycle", "job", ...)
 * about @domain (may be NULL). @data (may be NULL) is a JSON object whose
 * fields are added to the line; the bus takes the caller's reference to it.
 * Then every subscriber's notify runs, on this thread.
 * Locks: takes the bus mutex (a leaf but for the notify functions); the
 * caller may hold a domain mutex. Blocks: no (allocates).
 * Returns: 0, or -ENOMEM (the event is lost and counted).
 */
int vmd_events_publish(struct vmd_events *ev, const char *type, const char *domain,
                       struct json_object *data);

/*
 * vmd_events_subscribe - be told of each new line. @notify runs with the
 * bus mutex held, on the publishing thread: it must only wake a reader up
 * (moor_loop_schedule, an eventfd write) and never call into the bus.
 * *@cursor is set to the sequence number of the next line to be published.
 * Ownership: @opaque stays the caller's and must outlive the subscription
 * (until vmd_events_unsubscribe returns). Locks: the bus mutex, briefly;
 * not from a notify. Blocks: no.
 * Returns: a subscriber id (>= 0); -EAGAIN (VMD_EVENTS_MAX_SUBSCRIBERS
 * reached); -EINVAL.
 */
int vmd_events_subscribe(struct vmd_events *ev, void (*notify)(void *opaque), void *opaque,
                         uint64_t *cursor);

/* vmd_events_unsubscribe - after it returns, @id's notify never runs
 * again (a notify running meanwhile holds the bus mutex, which this
 * takes), so its opaque may be freed. Locks: the bus mutex, briefly; not
 * from a notify. Blocks: only for a notify in progress. */
void vmd_events_unsubscribe(struct vmd_events *ev, int id);

/*
 * vmd_events_read - copy the line at *@cursor (with its newline) into
 * @buf and advance *@cursor. A cursor older than the ring is moved to the
 * oldest line kept, and a {"type":"lost","count":N} line is returned first.
 * Returns: the length copied; 0 when no line is ready; -ENOBUFS when the
 * line does not fit in @size bytes (the cursor stays: retry larger).
 * Locks: the bus mutex, briefly. Blocks: no.
 */
ssize_t vmd_events_read(struct vmd_events *ev, uint64_t *cursor, char *buf, size_t size);

/* vmd_events_published - lines published so far (the next sequence
 * number). Locks: the bus mutex, briefly; not from a notify. Blocks: no. */
uint64_t vmd_events_published(struct vmd_events *ev);

#endif /* MOOR_VMD_EVENTS_H */
