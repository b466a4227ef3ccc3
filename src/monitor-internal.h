/* SPDX-License-Identifier: MIT */
/*
 * monitor-internal.h - entry points of monitor.c for tests and the fuzz
 * target. Not installed; reached only by linking the static library.
 */
#ifndef MOOR_MONITOR_INTERNAL_H
#define MOOR_MONITOR_INTERNAL_H

#include <stddef.h>

#include <moor/monitor.h>

/*
 * moor__monitor_feed - push @len bytes into @mon's input path as if they
 * had been read from its socket: framing, classification, reply matching,
 * event delivery and, if the bytes break the channel, on_eof - all in the
 * calling thread. For the fuzz target, whose loop is never iterated: it
 * must not run while a loop thread serves @mon's socket.
 * Returns: 0 while the channel is open; -EPIPE once it is not (broken by
 * these bytes or earlier, or closed); -EINVAL for a NULL @mon.
 */
int moor__monitor_feed(moor_monitor *mon, const void *data, size_t len);

#endif /* MOOR_MONITOR_INTERNAL_H */
