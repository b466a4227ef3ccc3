/* SPDX-License-Identifier: MIT */
/*
 * object.c - classes, objects, lockable objects, weak references, census.
 *
 * Theory of operation.
 *
 * Lifetime: an object's header holds a magic word and a moor_refcnt. The
 * inline moor_ref/moor_unref check the magic and move the counter; only the
 * thread that takes it to zero enters moor__object_last_unref(), so the
 * dispose sequence never races with itself. That sequence is: refuse (and
 * leak) if the object's mutex is held, detach weak references, run the
 * dispose functions from the most derived class up, update the census,
 * poison the magic, free.
 *
 * Weak references: a weak slot points at its object and sits on that
 * object's list of slots. Both are changed only under a striped leaf mutex
 * chosen by the object's address, so the stripe can be locked knowing only
 * the pointer value, even when the object may already be gone. A reader
 * loads the slot, locks the object's stripe, and trusts the pointer only if
 * the slot still points there: a slot pointing at an object is on its list,
 * and the last unref empties that list under the same stripe before the
 * memory is freed, so the object is still allocated and
 * moor_refcnt_inc_not_zero() decides whether it is still alive.
 *
 * Lock ownership: every lockable object records the kernel thread id of the
 * thread holding its mutex. Only the holder writes the field and everyone
 * else reads it for reports, so relaxed accesses suffice; it costs one
 * store per lock and unlock and buys exact moor_lock_held() answers and an
 * "unlock by non-owner" check that never passes a bad unlock to pthreads.
 *
 * Census: each class counts its live objects in one relaxed atomic. With
 * MOOR_DEBUG=leaks, objects are also put on a global list (one extra
 * allocation each) so that a leak report can name them.
 *
 * Reference tracing (MOOR_DEBUG=refs): an object created with it on is
 * tracked as for leaks, its record also holds a reftrace (reftrace.c), and
 * its magic word is MOOR__OBJECT_MAGIC_TRACED, which sends the inline
 * moor_ref/moor_unref to moor__ref_slow/moor__unref_slow: the fast path
 * of every other object is untouched. The lock checker (lockdep.c) hooks in
 * the existing MOOR_DEBUG=locks branch of moor_lock and in moor_unlock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moor/debug.h>
#include <moor/object.h>

#include "debug-internal.h"
#include "lockdep-internal.h"
#include "introspect-internal.h"
#include "object-internal.h"
#include "reftrace-internal.h"

#define CLASS_MAGIC     0x636c6173u /* "clas" */
#define OBJECT_FREED    0x64656164u /* "dead" */
#define CLASS_LOCKABLE  1u
#define CLASS_SIZE_MAX  (1u << 30)
#define WEAK_STRIPES    64
#define LEAK_LIST_SHOWN 8

struct moor_class {
    uint32_t magic;
    unsigned flags;
    const moor_class *parent;
    size_t size;
    moor_dispose_fn dispose;
    atomic_size_t live;
    moor_class *next; /* all classes, under class_lock */
    char name[];
};

/* A leak-tracking record: a node of the global list of tracked objects. */
struct track {
    moor_object *obj;
    struct track *prev, *next;
    struct moor__reftrace *refs; /* MOOR_DEBUG=refs, else NULL */
};

static pthread_mutex_t class_lock = PTHREAD_MUTEX_INITIALIZER; /* leaf */
static pthread_mutex_t track_lock = PTHREAD_MUTEX_INITIALIZER; /* leaf */

/* The census takes class_lock, and the watchdog's thread takes a census at
 * every look: held across fork() so a child never inherits it locked. */
__attribute__((constructor)) static void class_lock_fork_init(void)
{
    moor__live_lock_across_fork(&class_lock);
}
static struct track track_head = {NULL, &track_head, &track_head, NULL};
static pthread_mutex_t weak_locks[WEAK_STRIPES] = {[0 ... WEAK_STRIPES - 1] =
                                                       PTHREAD_MUTEX_INITIALIZER};

static void lockable_dispose(void *obj);

static moor_class object_root = {
    .magic = CLASS_MAGIC,
    .size = sizeof(moor_object),
    .name = "moor_object",
};

static moor_class lockable_root = {
    .magic = CLASS_MAGIC,
    .flags = CLASS_LOCKABLE,
    .parent = &object_root,
    .size = sizeof(moor_lockable),
    .dispose = lockable_dispose,
    .next = &object_root,
    .name = "moor_lockable",
};

static moor_class *class_list = &lockable_root; /* under class_lock */

/* ---- classes -------------------------------------------------------- */

const moor_class *moor_object_class(void)
{
    return &object_root;
}

const moor_class *moor_lockable_class(void)
{
    return &lockable_root;
}

static bool class_valid(const moor_class *klass)
{
    return klass && klass->magic == CLASS_MAGIC;
}

static moor_class *class_find_locked(const char *name)
{
    for (moor_class *k = class_list; k; k = k->next) {
        if (strcmp(k->name, name) == 0)
            return k;
    }
    return NULL;
}

static int class_check_args(const char *name, const moor_class *parent, size_t size,
                            moor_error *err)
{
    if (!name || !*name)
        return moor_error_set(err, -EINVAL, "moor_class_new: class name is empty");
    if (!class_valid(parent))
        return moor_error_set(err, -EINVAL, "moor_class_new(%s): parent is not a moor class", name);
    if (size < parent->size || size > CLASS_SIZE_MAX)
        return moor_error_set(err, -EINVAL,
                              "moor_class_new(%s): instance size %zu outside %zu..%u (parent "
                              "'%s')",
                              name, size, parent->size, CLASS_SIZE_MAX, parent->name);
    return 0;
}

const moor_class *moor_class_new(const char *name, const moor_class *parent, size_t size,
                                 moor_dispose_fn dispose, moor_error *err)
{
    moor_class *k;
    size_t len;

    if (class_check_args(name, parent, size, err) < 0)
        return NULL;
    len = strlen(name);
    k = moor__calloc(1, sizeof(*k) + len + 1);
    if (!k) {
        moor_error_set(err, -ENOMEM, "moor_class_new(%s): out of memory", name);
        return NULL;
    }
    k->magic = CLASS_MAGIC;
    k->flags = parent->flags;
    k->parent = parent;
    k->size = size;
    k->dispose = dispose;
    memcpy(k->name, name, len + 1);

    pthread_mutex_lock(&class_lock);
    if (class_find_locked(name)) {
        pthread_mutex_unlock(&class_lock);
        moor__free(k);
        moor_error_set(err, -EEXIST, "moor_class_new(%s): a class of that name exists", name);
        return NULL;
    }
    k->next = class_list;
    class_list = k;
    pthread_mutex_unlock(&class_lock);
    return k;
}

const char *moor_class_name(const moor_class *klass)
{
    return class_valid(klass) ? klass->name : "(not a class)";
}

const moor_class *moor_class_parent(const moor_class *klass)
{
    return class_valid(klass) ? klass->parent : NULL;
}

size_t moor_class_live(const moor_class *klass)
{
    /* relaxed: a statistic; see the header. */
    return class_valid(klass)
               ? atomic_load_explicit(&((moor_class *)klass)->live, memory_order_relaxed)
               : 0;
}

/* ---- leak tracking --------------------------------------------------- */

/* Track @o (created by the code at @ret); under MOOR_DEBUG=refs also
 * trace its references and give it the traced magic word. */
static void track_add(moor_object *o, const void *ret)
{
    struct track *t = moor__malloc(sizeof(*t));

    if (!t)
        return; /* tracking is best effort; the census still counts it */
    t->obj = o;
    t->refs = NULL;
    if (moor__debug_on(MOOR_DEBUG_REFS) && (t->refs = moor__reftrace_new(NULL, ret)))
        o->magic = MOOR__OBJECT_MAGIC_TRACED;
    pthread_mutex_lock(&track_lock);
    t->next = &track_head;
    t->prev = track_head.prev;
    track_head.prev->next = t;
    track_head.prev = t;
    pthread_mutex_unlock(&track_lock);
    o->track = t;
}

static void track_remove(moor_object *o)
{
    struct track *t = o->track;

    if (!t)
        return;
    pthread_mutex_lock(&track_lock);
    t->prev->next = t->next;
    t->next->prev = t->prev;
    pthread_mutex_unlock(&track_lock);
    moor__reftrace_free(t->refs);
    moor__free(t);
}

/* ---- objects -------------------------------------------------------- */

static bool object_live(const moor_object *o)
{
    return o && moor__object_magic_ok(o->magic);
}

static int lockable_init(moor_lockable *l)
{
    int rc = pthread_mutex_init(&l->mutex, NULL);

    atomic_init(&l->owner, 0);
    return -rc;
}

void *moor_object_new(const moor_class *klass)
{
    moor_object *o;

    if (!class_valid(klass)) {
        moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, klass,
                          "moor_object_new: %p is not a moor class", (const void *)klass);
        errno = EINVAL;
        return NULL;
    }
    o = moor__calloc(1, klass->size);
    if (!o)
        return NULL;
    if ((klass->flags & CLASS_LOCKABLE) && lockable_init((moor_lockable *)o) < 0) {
        moor__free(o);
        errno = ENOMEM;
        return NULL;
    }
    o->magic = MOOR__OBJECT_MAGIC;
    o->klass = klass;
    moor_refcnt_init(&o->ref);
    atomic_init(&o->weak, NULL);
    /* relaxed: a statistic; see the header. */
    atomic_fetch_add_explicit(&((moor_class *)klass)->live, 1, memory_order_relaxed);
    if (moor__debug_on(MOOR_DEBUG_LEAKS | MOOR_DEBUG_REFS))
        track_add(o, __builtin_return_address(0));
    return o;
}

void moor__object_misuse(const void *obj, const char *op)
{
    const moor_object *o = obj;

    if (o && o->magic == OBJECT_FREED)
        moor_debug_report(MOOR_MISUSE_DISPOSED_OBJECT, obj,
                          "%s of object %p, which was already disposed and freed", op, obj);
    else
        moor_debug_report(MOOR_MISUSE_NOT_AN_OBJECT, obj, "%s of %p, which is not a moor object",
                          op, obj);
}

/* The reference trace of traced object @o, else NULL. */
static struct moor__reftrace *refs_of(const moor_object *o)
{
    return o->magic == MOOR__OBJECT_MAGIC_TRACED ? ((struct track *)o->track)->refs : NULL;
}

void *moor__ref_slow(void *obj, const char *site)
{
    moor_object *o = obj;

    if (o->magic != MOOR__OBJECT_MAGIC_TRACED) {
        moor__object_misuse(o, "ref");
        return obj;
    }
    moor_refcnt_inc(&o->ref);
    moor__reftrace_take(refs_of(o), site, __builtin_return_address(0));
    return obj;
}

void moor__unref_slow(void *obj, const char *site)
{
    moor_object *o = obj;

    (void)site; /* a drop is matched by thread, not by site */
    if (o->magic != MOOR__OBJECT_MAGIC_TRACED) {
        moor__object_misuse(o, "unref");
        return;
    }
    /* Before the decrement: after it another thread may free @o. */
    moor__reftrace_drop(refs_of(o));
    if (moor_refcnt_dec_and_test(&o->ref))
        moor__object_last_unref(o);
}

void moor__object_ref_taken(void *obj, const void *ret)
{
    moor__reftrace_take(refs_of(obj), NULL, ret);
}

int moor_debug_dump_refs(const void *obj, FILE *f)
{
    const moor_object *o = obj;

    if (!object_live(o) || !f)
        return -EINVAL;
    if (!refs_of(o))
        return -ENOENT;
    fprintf(f, "object %p (class '%s') refs=%d:\n", obj, o->klass->name, moor_refcnt_read(&o->ref));
    return moor__reftrace_dump(refs_of(o), f, "    ");
}

const moor_class *moor_object_get_class(const void *obj)
{
    const moor_object *o = obj;

    if (!object_live(o)) {
        moor__object_misuse(obj, "moor_object_get_class");
        return NULL;
    }
    return o->klass;
}

int moor_object_refcount(const void *obj)
{
    const moor_object *o = obj;

    return object_live(o) ? moor_refcnt_read(&o->ref) : -1;
}

bool moor_is_a(const void *obj, const moor_class *klass)
{
    const moor_object *o = obj;

    if (!object_live(o) || !class_valid(klass))
        return false;
    for (const moor_class *k = o->klass; k; k = k->parent) {
        if (k == klass)
            return true;
    }
    return false;
}

void *moor_cast(const void *obj, const moor_class *klass)
{
    const moor_object *o = obj;

    if (!obj)
        return NULL;
    if (moor_is_a(obj, klass))
        return (void *)obj;
    if (!object_live(o))
        moor__object_misuse(obj, "cast");
    else
        moor_debug_report(MOOR_MISUSE_BAD_CAST, obj, "cast of object %p of class '%s' to '%s'", obj,
                          o->klass->name, moor_class_name(klass));
    return NULL;
}

/* ---- weak references (see the theory above) ------------------------- */

static pthread_mutex_t *weak_lock_for(const void *obj)
{
    uintptr_t h = (uintptr_t)obj >> 4;

    h ^= h >> 9;
    return &weak_locks[h % WEAK_STRIPES];
}

/* Called with the stripe of @o held. */
static void weak_link(moor_object *o, moor_weak *w)
{
    moor_weak *head = atomic_load_explicit(&o->weak, memory_order_relaxed);

    w->next = head;
    w->pprev = NULL;
    if (head)
        head->pprev = &w->next;
    /* relaxed: readers of w->obj recheck it under this same stripe. */
    atomic_store_explicit(&w->obj, o, memory_order_relaxed);
    /* release: pairs with the acquire load in weak_detach_all(). */
    atomic_store_explicit(&o->weak, w, memory_order_release);
}

/* Called with the stripe of @o held; @w is on @o's list. */
static void weak_unlink(moor_object *o, moor_weak *w)
{
    if (w->next)
        w->next->pprev = w->pprev;
    if (w->pprev)
        *w->pprev = w->next;
    else /* release: pairs with the acquire load in weak_detach_all(). */
        atomic_store_explicit(&o->weak, w->next, memory_order_release);
    w->next = NULL;
    w->pprev = NULL;
    /* release: a last unref detaches @w without its owner's lock; this
     * orders the link writes above before an owner's moor_weak_clear/set
     * that sees NULL (acquire there) and then relinks @w lock-free of us.
     * Weak gets need nothing: they recheck under the stripe. */
    atomic_store_explicit(&w->obj, NULL, memory_order_release);
}

void moor_weak_clear(moor_weak *w)
{
    moor_object *o;
    pthread_mutex_t *lock;

    if (!w)
        return;
    /* acquire: NULL may come from a concurrent last unref's weak_unlink;
     * pairs with its release store, so the caller (moor_weak_set) may then
     * rewrite w->next/pprev without racing with that unlink. Otherwise
     * only a hint of which stripe to lock; rechecked under it. */
    o = atomic_load_explicit(&w->obj, memory_order_acquire);
    if (!o)
        return;
    lock = weak_lock_for(o);
    pthread_mutex_lock(lock);
    /* relaxed: under the stripe that guards every change of w->obj to or
     * from @o. */
    if (atomic_load_explicit(&w->obj, memory_order_relaxed) == o)
        weak_unlink(o, w);
    pthread_mutex_unlock(lock);
}

void moor_weak_set(moor_weak *w, void *obj)
{
    moor_object *o = obj;
    pthread_mutex_t *lock;

    if (!w) {
        moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "moor_weak_set: NULL weak reference");
        return;
    }
    if (o && !object_live(o)) {
        moor__object_misuse(o, "moor_weak_set");
        return;
    }
    moor_weak_clear(w);
    if (!o)
        return;
    lock = weak_lock_for(o);
    pthread_mutex_lock(lock);
    weak_link(o, w);
    pthread_mutex_unlock(lock);
}

void *moor_weak_get(moor_weak *w)
{
    moor_object *o;
    pthread_mutex_t *lock;
    void *result = NULL;

    if (!w)
        return NULL;
    /* relaxed: only a hint of which stripe to lock; rechecked under it. */
    o = atomic_load_explicit(&w->obj, memory_order_relaxed);
    if (!o)
        return NULL;
    lock = weak_lock_for(o);
    pthread_mutex_lock(lock);
    /* relaxed: under the stripe (see moor_weak_clear); a match proves @o is
     * still allocated, inc_not_zero proves it is still alive. */
    if (atomic_load_explicit(&w->obj, memory_order_relaxed) == o &&
        moor__object_ref_not_zero(o, __builtin_return_address(0)))
        result = o;
    pthread_mutex_unlock(lock);
    return result;
}

/* Last unref: point every weak slot at nothing before the memory goes. */
static void weak_detach_all(moor_object *o)
{
    pthread_mutex_t *lock;
    moor_weak *w;

    /* acquire: pairs with the release stores of weak_link/weak_unlink, so
     * NULL here means every slot was detached before we free. */
    if (!atomic_load_explicit(&o->weak, memory_order_acquire))
        return;
    lock = weak_lock_for(o);
    pthread_mutex_lock(lock);
    while ((w = atomic_load_explicit(&o->weak, memory_order_relaxed)))
        weak_unlink(o, w);
    pthread_mutex_unlock(lock);
}

/* ---- last unref ------------------------------------------------------ */

/* acquire/release: the hook is a function pointer published once; nothing
 * else travels with it. */
static _Atomic(moor__dispose_check_fn) dispose_check;

void moor__set_dispose_check(moor__dispose_check_fn fn)
{
    /* release: see dispose_check. */
    atomic_store_explicit(&dispose_check, fn, memory_order_release);
}

void moor__lockable_embed(void *obj, int delta)
{
    ((moor_lockable *)obj)->embedded += (unsigned)delta;
}

bool moor__object_contains(const void *obj, const void *p, size_t len)
{
    const moor_object *o = obj;
    uintptr_t start = (uintptr_t)obj, at = (uintptr_t)p;

    return object_live(o) && at >= start && len <= o->klass->size &&
           at - start <= o->klass->size - len;
}

/* After the dispose functions, before the memory goes: embedded
 * primitives that were never destroyed would keep pointing into it (a
 * blocker's tokens) or leak (a job's holder array). */
static void check_undestroyed(moor_object *o)
{
    const moor_class *klass = o->klass;
    /* acquire: see dispose_check. */
    moor__dispose_check_fn check = atomic_load_explicit(&dispose_check, memory_order_acquire);

    if ((klass->flags & CLASS_LOCKABLE) && ((moor_lockable *)o)->embedded) {
        moor_debug_report(MOOR_MISUSE_NOT_DESTROYED, o,
                          "object %p (class '%s') disposed with %u job(s) still set up in it: "
                          "its dispose function must call moor_job_destroy()",
                          (void *)o, klass->name, ((moor_lockable *)o)->embedded);
        moor__job_forget(o, klass->size); /* off the live list before the memory goes */
    }
    if (check)
        check(o, klass->size, klass->name);
}

static void lockable_dispose(void *obj)
{
    pthread_mutex_destroy(&((moor_lockable *)obj)->mutex);
}

/* True (and reported) if the last unref found the object's mutex held. */
static bool disposed_while_locked(moor_object *o)
{
    moor_lockable *l = (moor_lockable *)o;

    if (!(o->klass->flags & CLASS_LOCKABLE))
        return false;
    if (pthread_mutex_trylock(&l->mutex) == 0) {
        pthread_mutex_unlock(&l->mutex);
        return false;
    }
    /* relaxed: only for the report. */
    int owner = atomic_load_explicit(&l->owner, memory_order_relaxed);
    moor_debug_report(MOOR_MISUSE_DISPOSE_LOCKED, o,
                      "last unref of object %p (class '%s') while its mutex is held by thread "
                      "%d; the object is leaked, not disposed",
                      (void *)o, o->klass->name, owner);
    return true;
}

void moor__object_last_unref(moor_object *o)
{
    moor_class *klass = (moor_class *)o->klass;

    if (disposed_while_locked(o))
        return;
    weak_detach_all(o);
    for (const moor_class *k = klass; k; k = k->parent) {
        if (k->dispose)
            k->dispose(o);
    }
    check_undestroyed(o);
    track_remove(o);
    /* relaxed: a statistic; see the header. */
    atomic_fetch_sub_explicit(&klass->live, 1, memory_order_relaxed);
    o->magic = OBJECT_FREED;
    moor__free(o);
}

/* ---- lockable objects ----------------------------------------------- */

static moor_lockable *lockable_of(const void *obj, const char *op)
{
    const moor_object *o = obj;

    if (!object_live(o)) {
        moor__object_misuse(obj, op);
        return NULL;
    }
    if (!(o->klass->flags & CLASS_LOCKABLE)) {
        moor_debug_report(MOOR_MISUSE_BAD_CAST, obj,
                          "%s of object %p of class '%s', which is "
                          "not lockable",
                          op, obj, o->klass->name);
        return NULL;
    }
    return (moor_lockable *)obj;
}

static int owner_of(moor_lockable *l)
{
    /* relaxed: exact for the calling thread's own id (only the holder
     * writes it); a stale value for others is fine in a report. */
    return atomic_load_explicit(&l->owner, memory_order_relaxed);
}

static void set_owner(moor_lockable *l, int tid)
{
    /* relaxed: the mutex orders consecutive holders; see owner_of(). */
    atomic_store_explicit(&l->owner, tid, memory_order_relaxed);
}

/* "held by thread N" or "not locked" (owner 0 is nobody, not a thread),
 * for misuse reports; written into @buf, which is returned. */
static const char *lock_state(int owner, char *buf, size_t size)
{
    if (owner)
        snprintf(buf, size, "held by thread %d", owner);
    else
        snprintf(buf, size, "not locked");
    return buf;
}

/* MOOR_DEBUG=locks, before waiting for @l: a recursive lock is reported
 * instead of deadlocking silently (true: the thread keeps its single hold
 * and must not lock again); anything else goes to the lock checker. */
static bool lock_debug(moor_lockable *l, unsigned subclass, const char *site, const void *ret)
{
    const moor_class *k = l->parent.klass;
    struct moor__lockdep_acq a = {l, k, k->name, subclass, MOOR__LD_OBJECT, false, site, ret};

    if (owner_of(l) == moor__thread_id()) {
        moor_debug_report(MOOR_MISUSE_LOCK_RECURSIVE, l,
                          "moor_lock of object %p (class '%s') already held by this thread "
                          "%d: would self-deadlock; not locked again",
                          (void *)l, k->name, moor__thread_id());
        return true;
    }
    if (a.subclass > MOOR_LOCK_SUBCLASS_MAX)
        a.subclass = MOOR_LOCK_SUBCLASS_MAX;
    moor__lockdep_acquire(&a);
    return false;
}

/* The lock itself: with MOOR_DEBUG=locks off, moor_lock is this after one
 * test of the flag word (the checked path is out of line, so the fast
 * path keeps nothing of it live across the calls). */
static inline __attribute__((always_inline)) void lock_plain(void *obj)
{
    moor_lockable *l = lockable_of(obj, "moor_lock");

    if (!l)
        return;
    pthread_mutex_lock(&l->mutex);
    set_owner(l, moor__thread_id());
}

static __attribute__((noinline)) void lock_checked(void *obj, unsigned subclass, const char *site,
                                                   const void *ret)
{
    moor_lockable *l = lockable_of(obj, "moor_lock");

    if (!l || lock_debug(l, subclass, site, ret))
        return;
    pthread_mutex_lock(&l->mutex);
    set_owner(l, moor__thread_id());
}

void moor_lock_at(void *obj, unsigned subclass, const char *site)
{
    if (moor__debug_on(MOOR_DEBUG_LOCKS))
        lock_checked(obj, subclass, site, __builtin_return_address(0));
    else
        lock_plain(obj);
}

void(moor_lock)(void *obj)
{
    if (moor__debug_on(MOOR_DEBUG_LOCKS))
        lock_checked(obj, 0, NULL, __builtin_return_address(0));
    else
        lock_plain(obj);
}

static inline __attribute__((always_inline)) int lock_try_impl(void *obj, const char *site,
                                                               const void *ret)
{
    moor_lockable *l = lockable_of(obj, "moor_lock_try");

    if (!l)
        return -EINVAL;
    if (pthread_mutex_trylock(&l->mutex) != 0)
        return -EBUSY;
    set_owner(l, moor__thread_id());
    if (moor__debug_on(MOOR_DEBUG_LOCKS)) {
        const moor_class *k = l->parent.klass;
        struct moor__lockdep_acq a = {l, k, k->name, 0, MOOR__LD_OBJECT, true, site, ret};

        moor__lockdep_acquire(&a);
    }
    return 0;
}

int moor_lock_try_at(void *obj, const char *site)
{
    return lock_try_impl(obj, site, __builtin_return_address(0));
}

int(moor_lock_try)(void *obj)
{
    return lock_try_impl(obj, NULL, __builtin_return_address(0));
}

/* @checked: MOOR_DEBUG=locks was on (a constant in each caller, so the
 * unchecked copy has no trace of the checker). */
static inline __attribute__((always_inline)) void unlock_impl(void *obj, bool checked,
                                                              const char *site, const void *ret)
{
    moor_lockable *l = lockable_of(obj, "moor_unlock");
    int owner;

    if (!l)
        return;
    owner = owner_of(l);
    if (owner != moor__thread_id() && !moor__thread_is_self(owner)) {
        char state[48];

        moor_debug_report(MOOR_MISUSE_UNLOCK_NOT_OWNER, obj,
                          "moor_unlock of object %p (class '%s') by thread %d, but it is %s; %s",
                          obj, l->parent.klass->name, moor__thread_id(),
                          lock_state(owner, state, sizeof(state)),
                          owner ? "left locked" : "nothing done");
        return;
    }
    if (checked)
        moor__lockdep_release(l, true, site, ret);
    set_owner(l, 0);
    pthread_mutex_unlock(&l->mutex);
}

static __attribute__((noinline)) void unlock_checked(void *obj, const char *site, const void *ret)
{
    unlock_impl(obj, true, site, ret);
}

void moor_unlock_at(void *obj, const char *site)
{
    if (moor__debug_on(MOOR_DEBUG_LOCKS))
        unlock_checked(obj, site, __builtin_return_address(0));
    else
        unlock_impl(obj, false, NULL, NULL);
}

void(moor_unlock)(void *obj)
{
    if (moor__debug_on(MOOR_DEBUG_LOCKS))
        unlock_checked(obj, NULL, __builtin_return_address(0));
    else
        unlock_impl(obj, false, NULL, NULL);
}

bool moor_lock_held(const void *obj)
{
    const moor_object *o = obj;

    if (!object_live(o) || !(o->klass->flags & CLASS_LOCKABLE))
        return false;
    return moor__thread_is_self(owner_of((moor_lockable *)obj));
}

void moor_assert_locked(const void *obj)
{
    moor_lockable *l = lockable_of(obj, "moor_assert_locked");
    char state[48];
    int owner;

    if (!l || moor__thread_is_self(owner = owner_of(l)))
        return;
    moor_debug_report(MOOR_MISUSE_NOT_LOCKED, obj,
                      "object %p (class '%s') must be locked by thread %d, but is %s", obj,
                      l->parent.klass->name, moor__thread_id(),
                      lock_state(owner, state, sizeof(state)));
}

void moor__end_api(void *obj, const char *site)
{
    if (!obj)
        return;
    if (moor__debug_on(MOOR_DEBUG_LOCKS))
        unlock_checked(obj, site, __builtin_return_address(0));
    else
        unlock_impl(obj, false, NULL, NULL);
    moor__unref_at(obj, site);
}

pthread_mutex_t *moor__lockable_mutex(void *obj)
{
    const moor_object *o = obj;

    if (!object_live(o) || !(o->klass->flags & CLASS_LOCKABLE))
        return NULL;
    return &((moor_lockable *)obj)->mutex;
}

void moor__lockable_owner_release(void *obj)
{
    set_owner(obj, 0);
}

void moor__lockable_owner_reacquire(void *obj)
{
    set_owner(obj, moor__thread_id());
}

const moor_class *moor__lazy_class_get(struct moor__lazy_class *lc, moor_error *err)
{
    /* acquire: pairs with the release below; the class is then complete. */
    const moor_class *k = atomic_load_explicit(&lc->klass, memory_order_acquire);

    if (k)
        return k;
    pthread_mutex_lock(&lc->lock);
    /* relaxed: lc->lock orders the writers. */
    k = atomic_load_explicit(&lc->klass, memory_order_relaxed);
    if (!k) {
        k = moor_class_new(lc->name, moor_object_class(), lc->size, lc->dispose, err);
        /* release: publishes the class to the lock-free readers above. */
        atomic_store_explicit(&lc->klass, k, memory_order_release);
    }
    pthread_mutex_unlock(&lc->lock);
    return k;
}

/* ---- census ---------------------------------------------------------- */

size_t moor_census(moor_census_entry *out, size_t cap)
{
    size_t n = 0;

    pthread_mutex_lock(&class_lock);
    for (moor_class *k = class_list; k; k = k->next) {
        size_t live = moor_class_live(k);

        if (!live)
            continue;
        if (n < cap)
            out[n] = (moor_census_entry){k->name, live};
        n++;
    }
    pthread_mutex_unlock(&class_lock);
    return n;
}

size_t moor_census_total(void)
{
    size_t total = 0;

    pthread_mutex_lock(&class_lock);
    for (moor_class *k = class_list; k; k = k->next)
        total += moor_class_live(k);
    pthread_mutex_unlock(&class_lock);
    return total;
}

static void print_tracked(FILE *f, const moor_class *k)
{
    pthread_mutex_lock(&track_lock);
    for (struct track *t = track_head.next; t != &track_head; t = t->next) {
        if (t->obj->klass != k)
            continue;
        fprintf(f, "    %p refs=%d\n", (void *)t->obj, moor_refcnt_read(&t->obj->ref));
        if (t->refs)
            moor__reftrace_dump(t->refs, f, "        ");
    }
    pthread_mutex_unlock(&track_lock);
}

size_t moor_census_print(FILE *f)
{
    size_t total = 0;

    pthread_mutex_lock(&class_lock);
    for (moor_class *k = class_list; k; k = k->next) {
        size_t live = moor_class_live(k);

        if (!live)
            continue;
        total += live;
        fprintf(f, "%-24s %zu live\n", k->name, live);
        print_tracked(f, k);
    }
    pthread_mutex_unlock(&class_lock);
    return total;
}

/* Up to LEAK_LIST_SHOWN tracked addresses of class @k, as text. */
static void tracked_addresses(const moor_class *k, char *buf, size_t size)
{
    size_t used = 0, shown = 0;

    buf[0] = '\0';
    pthread_mutex_lock(&track_lock);
    for (struct track *t = track_head.next; t != &track_head && used < size; t = t->next) {
        if (t->obj->klass != k)
            continue;
        if (shown++ == LEAK_LIST_SHOWN) {
            used += (size_t)snprintf(buf + used, size - used, " ...");
            break;
        }
        used += (size_t)snprintf(buf + used, size - used, " %p(refs=%d)", (void *)t->obj,
                                 moor_refcnt_read(&t->obj->ref));
    }
    pthread_mutex_unlock(&track_lock);
}

/* MOOR_DEBUG=refs: one report per traced leaked object of class @k (up to
 * LEAK_LIST_SHOWN), naming the code that holds each of its references. */
static void report_holders(const moor_class *k)
{
    size_t shown = 0;
    char holders[400];

    pthread_mutex_lock(&track_lock);
    for (struct track *t = track_head.next; t != &track_head && shown < LEAK_LIST_SHOWN;
         t = t->next) {
        if (t->obj->klass != k || !t->refs)
            continue;
        shown++;
        moor__reftrace_format(t->refs, holders, sizeof(holders));
        moor_debug_report(MOOR_MISUSE_LEAK, t->obj,
                          "leak: object %p (class '%s') refs=%d, held by: %s", (void *)t->obj,
                          k->name, moor_refcnt_read(&t->obj->ref), holders);
    }
    pthread_mutex_unlock(&track_lock);
}

size_t moor__census_report_leaks(void)
{
    size_t total = 0;
    char addrs[320];

    pthread_mutex_lock(&class_lock);
    for (moor_class *k = class_list; k; k = k->next) {
        size_t live = moor_class_live(k);

        if (!live)
            continue;
        total += live;
        tracked_addresses(k, addrs, sizeof(addrs));
        moor_debug_report(MOOR_MISUSE_LEAK, k, "leak: %zu object(s) of class '%s' still alive:%s",
                          live, k->name, addrs[0] ? addrs : " (not tracked)");
        report_holders(k);
    }
    pthread_mutex_unlock(&class_lock);
    return total;
}
