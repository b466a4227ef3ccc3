/* SPDX-License-Identifier: MIT */
/*
 * object-internal.h - what other moor source files need from object.c.
 * Not installed.
 */
#ifndef MOOR_OBJECT_INTERNAL_H
#define MOOR_OBJECT_INTERNAL_H

#include <moor/object.h>

/* Report every class with live objects through the misuse hook (used at
 * exit under MOOR_DEBUG=leaks). Returns the number of live objects. */
size_t moor__census_report_leaks(void);

/* The mutex of a lockable object, for primitives layered on it (jobs wait
 * on a condition variable bound to it). NULL if @obj is not lockable. */
pthread_mutex_t *moor__lockable_mutex(void *obj);

/* Bookkeeping around a condition wait that releases and retakes the mutex
 * behind moor_lock's back: call _release before and _reacquire after. */
void moor__lockable_owner_release(void *obj);
void moor__lockable_owner_reacquire(void *obj);

#endif /* MOOR_OBJECT_INTERNAL_H */
