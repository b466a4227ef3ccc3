/* SPDX-License-Identifier: MIT */
/*
 * object-internal.h - what other moor source files need from object.c.
 * Not installed.
 */
#ifndef MOOR_OBJECT_INTERNAL_H
#define MOOR_OBJECT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <moor/error.h>
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

/* A class of moor's own (loop, monitor, registry): created by whichever
 * thread first needs it, then read without a lock. One static instance per
 * class, initialised with MOOR__LAZY_CLASS_INIT. */
struct moor__lazy_class {
    _Atomic(const moor_class *) klass;
    pthread_mutex_t lock; /* leaf: serialises the creation */
    const char *name;
    size_t size;
    moor_dispose_fn dispose;
};

#define MOOR__LAZY_CLASS_INIT(name, size, dispose)                                                 \
    {                                                                                              \
        NULL, PTHREAD_MUTEX_INITIALIZER, (name), (size), (dispose)                                 \
    }

/* The class, created (parent moor_object_class()) on the first call. NULL
 * with @err set if that failed (out of memory); a later call tries again.
 * Takes @lc's leaf mutex only until the class exists. */
const moor_class *moor__lazy_class_get(struct moor__lazy_class *lc, moor_error *err);

/* The class if it was created, else NULL: for telling whether an object
 * is of this class. */
static inline const moor_class *moor__lazy_class_peek(struct moor__lazy_class *lc)
{
    /* relaxed: the pointer is only compared with an object's class, which
     * that object's creator published; it is not dereferenced here. */
    return atomic_load_explicit(&lc->klass, memory_order_relaxed);
}

/* Jobs embedded in lockable object @obj: moor_job_init() counts +1,
 * moor_job_destroy() -1. The last unref reports a count left above zero
 * (a dispose function that forgot moor_job_destroy). Called only while
 * @obj is not shared (init) or being disposed (destroy): a plain field. */
void moor__lockable_embed(void *obj, int delta);

/* job.c: take every job lying in the @size bytes at @obj off the live
 * list (moor/introspect.h), for an object freed with its jobs never
 * destroyed. Takes the live list's leaf mutex. */
void moor__job_forget(void *obj, size_t size);

/* Whether the @len bytes at @p lie inside live object @obj's instance. */
bool moor__object_contains(const void *obj, const void *p, size_t len);

/* A check a higher layer (blocker.c) installs to find its embedded
 * structs still set up in an object whose memory is about to be freed:
 * called at every last unref, after the dispose functions, with the
 * instance's address, size and class name. Once installed it stays. */
typedef void (*moor__dispose_check_fn)(void *obj, size_t size, const char *class_name);
void moor__set_dispose_check(moor__dispose_check_fn fn);

/* Whether @magic is a live object's (traced by MOOR_DEBUG=refs or not). */
static inline bool moor__object_magic_ok(uint32_t magic)
{
    return magic == MOOR__OBJECT_MAGIC || magic == MOOR__OBJECT_MAGIC_TRACED;
}

/* A reference to traced @obj was taken without moor_ref (a weak get, a
 * registry lookup): record it as taken by the code at @ret. */
void moor__object_ref_taken(void *obj, const void *ret);

/* moor_refcnt_inc_not_zero() on @obj's count, recorded (MOOR_DEBUG=refs)
 * as taken by the code at @ret when it succeeds. */
static inline bool moor__object_ref_not_zero(moor_object *obj, const void *ret)
{
    if (!moor_refcnt_inc_not_zero(&obj->ref))
        return false;
    if (MOOR_UNLIKELY(obj->magic == MOOR__OBJECT_MAGIC_TRACED))
        moor__object_ref_taken(obj, ret);
    return true;
}

#endif /* MOOR_OBJECT_INTERNAL_H */
