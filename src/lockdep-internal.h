/* SPDX-License-Identifier: MIT */
/*
 * lockdep-internal.h - the MOOR_DEBUG=locks checker's hooks, for the moor
 * layers that take locks or block. Not installed.
 *
 * Every hook is called only behind moor__debug_on(MOOR_DEBUG_LOCKS) (the
 * inline wrappers below test it), so a checker that is off costs one
 * relaxed load per hooked lock operation and nothing where a fast path
 * (an object's existing debug branch, a job that needs no wait) already
 * had that load or never blocks.
 *
 * Sites are "file.c:LINE" strings (MOOR__SITE) or, where a public function
 * has none from its caller, its return address (resolved with dladdr() in
 * the report).
 */
#ifndef MOOR_LOCKDEP_INTERNAL_H
#define MOOR_LOCKDEP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "debug-internal.h"

/* A class of moor's own internal locks: one static instance per kind of
 * lock (every registry's mutex is one class, every lock counter's another). */
struct moor__lockdep_key {
    const char *name;
};

enum moor__lockdep_kind {
    MOOR__LD_OBJECT,   /* an object's mutex: rule 4 applies */
    MOOR__LD_INTERNAL, /* an internal lock: order-checked, no rule 4 */
    MOOR__LD_MONITOR,  /* inside moor_monitor_enter/exit: not a mutex */
};

/* What a tracked acquisition is. @key identifies the class (a moor_class
 * or a moor__lockdep_key), @name names it in reports. */
struct moor__lockdep_acq {
    const void *lock;
    const void *key;
    const char *name;
    unsigned subclass;
    enum moor__lockdep_kind kind;
    bool trylock;     /* never waited: no rule 4, no order edge */
    const char *site; /* NULL: use ret */
    const void *ret;  /* return address naming the site */
};

/* Check an acquisition about to wait (or just made, for a trylock) against
 * what this thread holds, then push it on the thread's held stack. */
void moor__lockdep_acquire(const struct moor__lockdep_acq *acq);

/* Pop @lock from this thread's held stack (ignored if it is not there: it
 * was taken while the checker was off). @check_order: report releasing an
 * object mutex below another object mutex still held. */
void moor__lockdep_release(const void *lock, bool check_order, const char *site, const void *ret);

/* A blocking call @what (named "from" @ret) is about to wait; report any
 * held lock but @allowed (the object whose mutex a job wait releases; NULL:
 * none) and, if @allow_monitor, monitor sections. */
void moor__lockdep_blocking(const char *what, const void *allowed, bool allow_monitor,
                            const void *ret);

/* A job wait on lockable @obj for @api: moor__lockdep_blocking() with
 * @obj's mutex allowed (the wait releases it). */
void moor__lockdep_job_wait(const void *obj, const char *api);

/* moor_monitor_enter(@mon, @obj) succeeded: report any object mutex held
 * but @obj's, or an internal lock, then push the monitor section. */
void moor__lockdep_monitor_enter(const void *mon, const char *mon_name, const void *obj,
                                 const void *ret);

/* @site, or else @ret resolved to "symbol+0xOFF (binary)" or
 * "binary+0xOFF" (feed the offset to addr2line -e binary); written into
 * @buf unless @site is returned. */
const char *moor__site_text(const char *site, const void *ret, char *buf, size_t size);

struct moor__vec;

/* Copy the classes registered so far into @classes (moor_debug_lock_class
 * items, "name" or "name/SUBCLASS") and the order edges among them into
 * @orders (moor_debug_lock_order items, indexes into @classes). Lock-free:
 * reads only what node_get() and edge_add() published. Returns 0 or
 * -ENOMEM (what was copied stays). */
int moor__lockdep_collect(struct moor__vec *classes, struct moor__vec *orders);

/* Internal lock @lock of class @key taken / released at @site (NULL: by
 * the code at @ret). */
static inline void moor__lockdep_internal_lock(const void *lock,
                                               const struct moor__lockdep_key *key,
                                               const char *site, const void *ret)
{
    if (moor__debug_on(MOOR_DEBUG_LOCKS)) {
        struct moor__lockdep_acq a = {lock, key, key->name, 0, MOOR__LD_INTERNAL, false, site, ret};

        moor__lockdep_acquire(&a);
    }
}

static inline void moor__lockdep_internal_unlock(const void *lock, const char *site,
                                                 const void *ret)
{
    if (moor__debug_on(MOOR_DEBUG_LOCKS))
        moor__lockdep_release(lock, false, site, ret);
}

static inline void moor__lockdep_check_blocking(const char *what, const void *allowed,
                                                bool allow_monitor, const void *ret)
{
    if (moor__debug_on(MOOR_DEBUG_LOCKS))
        moor__lockdep_blocking(what, allowed, allow_monitor, ret);
}

static inline void moor__lockdep_note_monitor_enter(const void *mon, const char *mon_name,
                                                    const void *obj, const void *ret)
{
    if (moor__debug_on(MOOR_DEBUG_LOCKS))
        moor__lockdep_monitor_enter(mon, mon_name, obj, ret);
}

#endif /* MOOR_LOCKDEP_INTERNAL_H */
