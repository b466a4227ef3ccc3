/* SPDX-License-Identifier: MIT */
/*
 * moor/object.h - classes, reference-counted objects, lockable objects and
 * weak references.
 *
 * An object is created with one reference owned by its creator, and the
 * only way it ever dies is the last moor_unref(): there is no free, delete
 * or destroy. Every holder (a container, an API call in flight, a queued
 * event) owns its own reference and drops it when done; nobody borrows.
 *
 * Classes form a single-inheritance chain rooted at moor_object_class().
 * A class's instance struct starts with its parent's instance struct:
 *
 *     struct vm {
 *         moor_lockable parent;   // lockable: has a mutex
 *         char *name;
 *     };
 *
 * When the last reference goes, the dispose functions run from the most
 * derived class up to the root, then the memory is freed.
 *
 * Ownership vocabulary used below: "new reference" means the caller owns
 * one reference in the result and must drop it; "borrowed" means it must
 * not.
 */
#ifndef MOOR_OBJECT_H
#define MOOR_OBJECT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <pthread.h>

#include <moor/error.h>
#include <moor/export.h>
#include <moor/ref.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moor_class moor_class; /* opaque; lives for the program */
typedef struct moor_weak moor_weak;

/* Called once per class in the chain, most derived first, when the last
 * reference is dropped. It must release what the class owns and must not
 * take new references to @obj. It runs in whichever thread dropped the last
 * reference, with no moor lock held. */
typedef void (*moor_dispose_fn)(void *obj);

/* Instance header of every object. The fields are private: reach them only
 * through the functions below. The layout is public so that instance
 * structs can embed it and so that ref/unref can be inlined. */
typedef struct moor_object {
    moor_refcnt ref; /* first: ref/unref address it without arithmetic */
    uint32_t magic;
    const moor_class *klass;
    _Atomic(moor_weak *) weak; /* weak references pointing here */
    void *track;               /* leak-tracking record (MOOR_DEBUG=leaks) */
} moor_object;

/* Instance header of lockable objects: an object plus a non-recursive
 * mutex and the id of the thread holding it (0 when free). Private fields,
 * as above. */
typedef struct moor_lockable {
    moor_object parent;
    pthread_mutex_t mutex;
    atomic_int owner;
    unsigned embedded; /* jobs set up in it and not yet destroyed */
} moor_lockable;

/* A weak reference: embeddable, caller-allocated, zero-initialisable. It
 * does not keep its object alive; moor_weak_get() yields a strong one while
 * the object lives. Private fields. */
struct moor_weak {
    _Atomic(moor_object *) obj;
    moor_weak *next;
    moor_weak **pprev;
};

#define MOOR_WEAK_INIT                                                                             \
    {                                                                                              \
        NULL, NULL, NULL                                                                           \
    }

/* ---- classes -------------------------------------------------------- */

/*
 * moor_object_class, moor_lockable_class - the two root classes.
 * Ownership: static, never freed. Locks: none. Blocks: never.
 */
MOOR_EXPORT const moor_class *moor_object_class(void);
MOOR_EXPORT const moor_class *moor_lockable_class(void);

/*
 * moor_class_new - define a class.
 *
 * @name must be non-empty and unique in the process (the census and every
 * misuse report name objects by it); @parent is moor_object_class(),
 * moor_lockable_class() or a class derived from them; @size is the size of
 * the instance struct, which starts with the parent's; @dispose may be
 * NULL. @name is copied.
 *
 * Which thread disposes: whichever drops the last reference. That may be
 * a thread the application did not create: an object removed from a
 * registry whose reference was the last one is disposed in liburcu's
 * call_rcu thread (moor_registry_remove). So a dispose function must not
 * rely on thread-local state, a particular thread or signal mask, and
 * must not block for long; moor_registry_barrier() waits until such
 * deferred disposals have run.
 *
 * Call once per class, typically from pthread_once() or at start-up.
 * Ownership: the class lives for the rest of the program; never freed.
 * Locks: takes an internal leaf mutex. Blocks: no.
 * Returns: the class, or NULL with @err set:
 *   -EINVAL  empty or NULL name, NULL parent, @size smaller than the parent's
 *            or larger than 1 GiB;
 *   -EEXIST  a class with this name exists already;
 *   -ENOMEM  out of memory.
 */
MOOR_EXPORT const moor_class *moor_class_new(const char *name, const moor_class *parent,
                                             size_t size, moor_dispose_fn dispose, moor_error *err);

/*
 * moor_class_name, moor_class_parent - introspection.
 * Ownership: borrowed; both live for the program. Locks: none. Blocks:
 * never. Returns: the name ("(not a class)" for an invalid @klass); the
 * parent (NULL for moor_object_class() or an invalid @klass).
 */
MOOR_EXPORT const char *moor_class_name(const moor_class *klass);
MOOR_EXPORT const moor_class *moor_class_parent(const moor_class *klass);

/*
 * moor_class_live - objects of exactly @klass (not subclasses) that exist
 * now. Ordering: relaxed; exact once the threads creating and dropping
 * objects of the class have been joined. Locks: none. Blocks: never.
 * Returns: the count; 0 for an invalid @klass.
 */
MOOR_EXPORT size_t moor_class_live(const moor_class *klass);

/* ---- objects -------------------------------------------------------- */

/*
 * moor_object_new - allocate a zeroed instance of @klass.
 *
 * Ownership: new reference (count 1), owned by the caller.
 * Locks: none needed; the new object is unlocked. Blocks: no (allocates).
 * Returns: the object, or NULL with errno set: ENOMEM when memory (or the
 * mutex of a lockable class) could not be had, EINVAL when @klass is NULL
 * (also reported as misuse).
 */
MOOR_EXPORT void *moor_object_new(const moor_class *klass);

/* Internal helpers of the inline functions and macros below; not API.
 * An object created while MOOR_DEBUG=refs is on carries the second magic
 * word, so its ref and unref leave the inline fast path for the
 * out-of-line ones, which record the site: tracing costs nothing on
 * objects created without it. MOOR__SITE is "file.c:LINE" of the macro's
 * caller, the site debug reports name. */
#define MOOR__OBJECT_MAGIC        0x6d6f6f72u /* "moor" */
#define MOOR__OBJECT_MAGIC_TRACED 0x6d6f6f52u /* "mooR": MOOR_DEBUG=refs */
#define MOOR__STR2(x)             #x
#define MOOR__STR(x)              MOOR__STR2(x)
#define MOOR__SITE                __FILE__ ":" MOOR__STR(__LINE__)
MOOR_EXPORT void moor__object_misuse(const void *obj, const char *op);
MOOR_EXPORT void moor__object_last_unref(moor_object *obj);
MOOR_EXPORT void *moor__ref_slow(void *obj, const char *site);
MOOR_EXPORT void moor__unref_slow(void *obj, const char *site);
MOOR_EXPORT void moor__end_api(void *obj, const char *site);

/*
 * moor_ref - take a new reference to @obj and return @obj.
 *
 * The caller must own a reference already (or hold a lock that keeps one
 * alive). NULL gives NULL. Something that is not a live object is reported
 * and returned without a reference taken.
 * Ownership: the result is a new reference. Locks: none. Blocks: never.
 * Ordering: relaxed (see ref.h).
 */
static inline void *moor__ref_at(void *obj, const char *site)
{
    moor_object *o = (moor_object *)obj;

    if (!o)
        return NULL;
    if (MOOR_UNLIKELY(o->magic != MOOR__OBJECT_MAGIC))
        return moor__ref_slow(o, site); /* traced, or misuse */
    moor_refcnt_inc(&o->ref);
    return obj;
}

static inline void *(moor_ref)(void *obj)
{
    return moor__ref_at(obj, NULL);
}

/*
 * moor_unref - drop one reference; the last one disposes and frees @obj.
 *
 * NULL-safe. After the call the caller must not touch @obj. A non-object,
 * an already freed object, or a last unref while the object is locked is
 * reported (and in the last case the object is leaked, not freed).
 * Locks: the caller must not hold @obj's mutex if this may be the last
 * reference; the dispose functions run in this thread with no moor lock
 * held. Blocks: only as long as the dispose functions do.
 * Ordering: release, plus acquire before disposing (see ref.h).
 */
static inline void moor__unref_at(void *obj, const char *site)
{
    moor_object *o = (moor_object *)obj;

    if (!o)
        return;
    if (MOOR_UNLIKELY(o->magic != MOOR__OBJECT_MAGIC)) {
        moor__unref_slow(o, site); /* traced, or misuse */
        return;
    }
    if (moor_refcnt_dec_and_test(&o->ref))
        moor__object_last_unref(o);
}

static inline void(moor_unref)(void *obj)
{
    moor__unref_at(obj, NULL);
}

/* The call forms above record their caller's file:line as the site of the
 * reference under MOOR_DEBUG=refs; (moor_ref) and (moor_unref), the
 * functions, may still be taken by address. */
#define moor_ref(obj)   moor__ref_at((obj), MOOR__SITE)
#define moor_unref(obj) moor__unref_at((obj), MOOR__SITE)

static inline void moor__autounref_cleanup(void *pp)
{
    moor__unref_at(*(void **)pp, "(moor_autounref scope exit)");
}

/*
 * moor_autounref - declare a pointer whose reference is dropped when it
 * goes out of scope:
 *
 *     moor_autounref struct vm *vm = moor_object_new(vm_class);
 *
 * Pair with moor_steal() to hand the reference on instead.
 */
#define moor_autounref __attribute__((cleanup(moor__autounref_cleanup)))

/*
 * moor_clear - drop the reference held in *@pp and set *@pp to NULL.
 * The pointer is cleared before the unref, so dispose code that looks at
 * the same variable sees NULL. NULL-safe on *@pp.
 */
#define moor_clear(pp)                                                                             \
    do {                                                                                           \
        __typeof__(pp) moor__clear_pp = (pp);                                                      \
        __typeof__(*moor__clear_pp) moor__clear_v = *moor__clear_pp;                               \
        *moor__clear_pp = NULL;                                                                    \
        moor_unref(moor__clear_v);                                                                 \
    } while (0)

/*
 * moor_steal - move the reference out of *@pp: evaluates to the old value
 * and leaves NULL behind, so a moor_autounref variable can hand its
 * reference to a container or a caller.
 */
#define moor_steal(pp)                                                                             \
    __extension__({                                                                                \
        __typeof__(pp) moor__steal_pp = (pp);                                                      \
        __typeof__(*moor__steal_pp) moor__steal_v = *moor__steal_pp;                               \
        *moor__steal_pp = NULL;                                                                    \
        moor__steal_v;                                                                             \
    })

/*
 * moor_object_get_class - the class of @obj.
 * Ownership: borrowed, lives for the program. Locks: none. Blocks: never.
 * Returns: the class, or NULL (reported) if @obj is not a live object.
 */
MOOR_EXPORT const moor_class *moor_object_get_class(const void *obj);

/*
 * moor_object_refcount - the reference count, for diagnostics and tests
 * only (stale as soon as it is read). Locks: none. Blocks: never.
 * Returns: the count, or -1 if @obj is not a live object.
 */
MOOR_EXPORT int moor_object_refcount(const void *obj);

/*
 * moor_is_a - whether @obj is a live object of @klass or of a subclass.
 * NULL or a non-object gives false without a report (this is a question,
 * not an assertion). Locks: none. Blocks: never. Returns: the answer.
 */
MOOR_EXPORT bool moor_is_a(const void *obj, const moor_class *klass);

/*
 * moor_cast - @obj if it is a @klass, else NULL with a misuse report
 * naming both classes. NULL gives NULL silently. MOOR_CAST adds the C type.
 * Ownership: borrowed, no reference is taken. Locks: none. Blocks: never.
 * Returns: @obj or NULL.
 */
MOOR_EXPORT void *moor_cast(const void *obj, const moor_class *klass);
#define MOOR_CAST(type, obj, klass) ((type *)moor_cast((obj), (klass)))

/* ---- lockable objects ----------------------------------------------- */

/*
 * moor_lock - lock a lockable object's mutex.
 *
 * Non-recursive: locking an object the thread already holds deadlocks;
 * with MOOR_DEBUG=locks it is reported instead and the call returns without
 * locking again. A non-lockable object is reported and not locked.
 * With MOOR_DEBUG=locks the acquisition is also checked against the locks
 * this thread holds: another object's mutex (rule 4, unless taken with
 * moor_lock_nested) and an order between lock classes that was seen the
 * other way round are reported, naming both sites (docs/debug.md).
 * Locks: the caller must own a reference to @obj and, by the lock order,
 * must not hold another object's mutex or a monitor. Blocks: until the
 * current holder unlocks; holders only keep it for short field accesses,
 * never across I/O (that is what jobs are for).
 */
MOOR_EXPORT void(moor_lock)(void *obj);

/*
 * moor_lock_nested - moor_lock() for a deliberate nesting: lock @obj while
 * this thread holds another object's mutex.
 *
 * Rule 4 (docs/concepts.md) forbids waiting for an object's mutex while
 * holding another's, and MOOR_DEBUG=locks reports a plain moor_lock() that
 * does. Where a design really needs two objects at once (a parent and its
 * child, two domains in a fixed order), the inner acquisition says so with
 * @subclass 1..7: it is then not reported as a nesting, and the lock-order
 * checker treats (class, @subclass) as a lock class of its own, so the
 * order "subclass 0, then subclass 1" is legal between two objects of one
 * class while the reverse, or a second lock at the same subclass, is
 * reported. Between objects of different classes the order is checked by
 * class alone, whatever the subclasses. @subclass 0 is moor_lock().
 * Locks, Blocks: as moor_lock(). Returns: nothing; a @subclass above 7 is
 * taken as 7.
 */
#define MOOR_LOCK_SUBCLASS_MAX          7u
#define moor_lock(obj)                  moor_lock_at((obj), 0, MOOR__SITE)
#define moor_lock_nested(obj, subclass) moor_lock_at((obj), (subclass), MOOR__SITE)

/*
 * moor_lock_at, moor_lock_try_at, moor_unlock_at - what the moor_lock,
 * moor_lock_nested, moor_lock_try and moor_unlock macros call, with the
 * caller's "file:line" as @site for MOOR_DEBUG=locks reports (NULL: the
 * return address is named instead, as the plain functions do). Contract
 * otherwise as the macro's.
 * Ownership: @site is borrowed for the process's lifetime (a literal).
 * Locks, Blocks: as moor_lock(), moor_lock_try(), moor_unlock().
 * Ordering: the mutex's acquire (lock) and release (unlock).
 * Context: as the macro's. Returns: as the macro's.
 */
MOOR_EXPORT void moor_lock_at(void *obj, unsigned subclass, const char *site);
MOOR_EXPORT int moor_lock_try_at(void *obj, const char *site);
MOOR_EXPORT void moor_unlock_at(void *obj, const char *site);

/*
 * moor_lock_try - lock @obj if nobody holds it.
 * Locks: as moor_lock(); on 0 the caller holds @obj's mutex. Blocks: never. Returns: 0 when locked;
 * -EBUSY when held (by anyone, this thread included); -EINVAL when @obj is not a lockable object
 * (also reported as misuse: it is a programmer error, not a busy lock).
 */
MOOR_EXPORT int(moor_lock_try)(void *obj);
#define moor_lock_try(obj) moor_lock_try_at((obj), MOOR__SITE)

/*
 * moor_unlock - unlock @obj, which this thread must hold.
 *
 * An unlock by a thread that does not hold the mutex is reported and
 * leaves the mutex as it was (unlocking someone else's mutex is undefined
 * behaviour in pthreads, so it is never passed on). With MOOR_DEBUG=locks,
 * unlocking an object while an object mutex taken after it is still held
 * is reported (nested locks are released innermost first); it unlocks.
 * Locks: the caller must hold @obj's mutex; afterwards it does not.
 * Blocks: never. Returns: nothing (misuse is reported, not returned).
 */
MOOR_EXPORT void(moor_unlock)(void *obj);
#define moor_unlock(obj) moor_unlock_at((obj), MOOR__SITE)

/*
 * moor_lock_held - whether the calling thread holds @obj's mutex. For
 * assertions. Ordering: relaxed; exact for the calling thread's own
 * answer. Locks: none. Blocks: never. Returns: false also for anything
 * that is not a live lockable object.
 */
MOOR_EXPORT bool moor_lock_held(const void *obj);

/*
 * moor_assert_locked - report MOOR_MISUSE_NOT_LOCKED unless the calling
 * thread holds @obj's mutex. Always active (it is one relaxed load), so
 * functions named *_locked can check their contract in release builds.
 * Locks: none taken. Blocks: never. Returns: nothing.
 */
MOOR_EXPORT void moor_assert_locked(const void *obj);

/*
 * moor_end_api - end an API call on a locked object: unlock it, drop the
 * call's reference and set the caller's pointer to NULL so it cannot be
 * used afterwards. *@pp may be NULL (nothing happens).
 *
 * Locks: the caller holds *@pp's mutex; afterwards it holds nothing.
 * Blocks: only as long as a last unref's dispose functions do.
 */
#define moor_end_api(pp)                                                                           \
    do {                                                                                           \
        __typeof__(pp) moor__end_pp = (pp);                                                        \
        void *moor__end_v = *moor__end_pp;                                                         \
        *moor__end_pp = NULL;                                                                      \
        moor__end_api(moor__end_v, MOOR__SITE);                                                    \
    } while (0)

/* ---- weak references ------------------------------------------------- */

/*
 * moor_weak_set - point @w at @obj (NULL: point at nothing).
 *
 * The caller must own a reference to @obj for the duration of the call.
 * @w must be zero-initialised (or MOOR_WEAK_INIT) before first use and
 * cleared with moor_weak_clear() before its memory goes away.
 * Concurrency: set and clear of one @w must be serialised by the caller;
 * moor_weak_get() may run concurrently with anything.
 * Locks: takes internal leaf locks. Blocks: no. Returns: nothing; a
 * non-object @obj or a NULL @w is reported and changes nothing.
 */
MOOR_EXPORT void moor_weak_set(moor_weak *w, void *obj);

/*
 * moor_weak_get - a new strong reference to the object @w points at, or
 * NULL once that object's last reference has been dropped (disposal has
 * begun) or @w points at nothing. Safe against a concurrent last unref.
 *
 * Ownership: new reference. Locks: takes an internal leaf lock.
 * Blocks: no (the leaf lock is held for a few instructions).
 * Returns: the object or NULL; never an error code.
 */
MOOR_EXPORT void *moor_weak_get(moor_weak *w);

/*
 * moor_weak_clear - point @w at nothing. NULL-safe. Safe against a
 * concurrent last unref of the object. Locks/Blocks: as moor_weak_set().
 * Returns: nothing.
 */
MOOR_EXPORT void moor_weak_clear(moor_weak *w);

/* ---- census ---------------------------------------------------------- */

typedef struct moor_census_entry {
    const char *class_name; /* borrowed, static */
    size_t live;
} moor_census_entry;

/*
 * moor_census - live objects per class, for classes with at least one.
 *
 * Fills up to @cap entries of @out (may be NULL when @cap is 0).
 * Returns: how many classes have live objects (may exceed @cap, so a
 * caller can size its array and ask again). Locks: an internal leaf
 * mutex. Blocks: no. Ordering: relaxed counters (see moor_class_live).
 */
MOOR_EXPORT size_t moor_census(moor_census_entry *out, size_t cap);

/*
 * moor_census_total - all live objects of every class.
 * Locks: an internal leaf mutex. Blocks: no. Ordering: as moor_census().
 * Returns: the total.
 */
MOOR_EXPORT size_t moor_census_total(void);

/*
 * moor_census_print - write the census to @f, one class per line and, for
 * objects created while MOOR_DEBUG=leaks was on, one line per object with
 * its address and reference count.
 * Returns: the total live objects. Locks: internal leaf mutexes (the
 * caller must not hold one; a report hook must not call this). Blocks: on
 * @f's I/O.
 */
MOOR_EXPORT size_t moor_census_print(FILE *f);

#ifdef __cplusplus
}
#endif

#endif /* MOOR_OBJECT_H */
