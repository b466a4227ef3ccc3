/* SPDX-License-Identifier: MIT */
/*
 * reftrace-internal.h - MOOR_DEBUG=refs: the record of who holds the
 * references to one traced object. Not installed.
 *
 * object.c creates one per object made while "refs" is on, hangs it on the
 * object's tracking record, and calls take/drop from the out-of-line ref
 * and unref of traced objects (see MOOR__OBJECT_MAGIC_TRACED in
 * moor/object.h) and from the places that take references without
 * moor_ref (weak references, registry lookups).
 */
#ifndef MOOR_REFTRACE_INTERNAL_H
#define MOOR_REFTRACE_INTERNAL_H

#include <stddef.h>
#include <stdio.h>

struct moor__reftrace;

/* A new record holding the creator's reference (site or return address).
 * NULL when out of memory (the object is then not traced). */
struct moor__reftrace *moor__reftrace_new(const char *site, const void *ret);
void moor__reftrace_free(struct moor__reftrace *rt);

/* One reference taken / dropped at @site (NULL: named by @ret). */
void moor__reftrace_take(struct moor__reftrace *rt, const char *site, const void *ret);
void moor__reftrace_drop(struct moor__reftrace *rt);

/* "SITE (thread N); SITE (thread M) ..." into @buf, for one-line reports. */
void moor__reftrace_format(struct moor__reftrace *rt, char *buf, size_t size);

/* One line per outstanding reference to @f, each prefixed with @indent.
 * Returns the number of lines. */
int moor__reftrace_dump(struct moor__reftrace *rt, FILE *f, const char *indent);

#endif /* MOOR_REFTRACE_INTERNAL_H */
