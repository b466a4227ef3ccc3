/* SPDX-License-Identifier: MIT */
/*
 * moor/registry.h - a registry of lockable objects, found by a 16-byte UUID
 * or by a unique name.
 *
 * The registry owns one reference to every object in it. A lookup never
 * lends that reference out: it hands the caller a reference of its own, so
 * a concurrent removal only drops the registry's share and the caller
 * finishes on memory that is still there. Lookups are lock-free (RCU and an
 * increment-unless-zero of the object's count): they never wait for a
 * writer, and a writer never waits for them.
 *
 * The usual API call is lookup -> lock -> (job) -> end:
 *
 *     struct vm *vm = moor_registry_find_uuid_locked(reg, &uuid);
 *
 *     if (!vm)
 *         return -ENOENT;
 *     ... short field accesses, or begin a job and unlock around slow work ...
 *     moor_end_api(&vm);
 *
 * Bulk work is snapshot-then-work: moor_registry_collect() returns an array
 * of references; the caller locks each object on its own. No callback ever
 * runs under the registry's lock.
 *
 * RCU: the registry uses liburcu's "bulletproof" flavour internally. Threads
 * are registered with it automatically on their first lookup and
 * unregistered when they exit; callers never call rcu_register_thread() and
 * need not know RCU is there. An application that uses liburcu itself may
 * use any flavour: the flavours do not share state.
 *
 * ThreadSanitizer: liburcu is not built with TSan, and its call_rcu and
 * resize threads free memory that liburcu allocated in the caller's
 * threads, ordered by atomics TSan cannot see; TSan then reports races
 * that are not there. moor installs the suppressions for exactly those
 * (and nothing in moor or the application): pass
 *     TSAN_OPTIONS=suppressions=$(pkg-config --variable=tsan_suppressions moor)
 * (installed as <datadir>/moor/tsan.supp; in the source tree,
 * data/tsan.supp). docs/registry.md says more.
 *
 * Naming note: the *_locked lookups *return* the object locked (they are
 * "find, then lock"); they are not called with a lock held.
 */
#ifndef MOOR_REGISTRY_H
#define MOOR_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <moor/error.h>
#include <moor/export.h>
#include <moor/object.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- UUIDs ------------------------------------------------------------ */

/* A UUID as 16 bytes in network (big-endian, RFC 4122) order. */
typedef struct moor_uuid {
    uint8_t bytes[16];
} moor_uuid;

/* Room for the canonical text form "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
 * and its NUL. */
#define MOOR_UUID_STRING_SIZE 37

/*
 * moor_uuid_parse - read the canonical text form of a UUID.
 *
 * Accepts exactly 36 characters: 8-4-4-4-12 hexadecimal digits (either
 * case) separated by '-'. No braces, no "urn:uuid:", no surrounding space.
 * Ownership: writes *@out only on success. Locks: none. Blocks: never.
 * Context: any thread.
 * Returns: 0; or -EINVAL (@text or @out NULL, or @text not in that form;
 *   the message quotes the text and says which character is wrong).
 */
MOOR_EXPORT int moor_uuid_parse(const char *text, moor_uuid *out, moor_error *err);

/*
 * moor_uuid_format - write @uuid in canonical lower-case text form.
 *
 * @out must have room for MOOR_UUID_STRING_SIZE bytes; it is always
 * NUL-terminated. Ownership: @out is the caller's. Locks: none.
 * Blocks: never. Returns: @out, for use in printf arguments.
 */
MOOR_EXPORT char *moor_uuid_format(const moor_uuid *uuid, char out[MOOR_UUID_STRING_SIZE]);

/*
 * moor_uuid_generate - a random (version 4, RFC 4122 variant) UUID.
 *
 * Uses getrandom(2) without GRND_NONBLOCK (retried on EINTR).
 * Blocks: only early in boot, until the kernel entropy pool is initialised
 * (once per boot; no fixed bound, usually seconds); never afterwards.
 * Ownership: writes *@out only on success. Locks: none. Context: any
 * thread.
 * Returns: 0; -EINVAL if @out is NULL; or the -errno of getrandom (e.g.
 *   -ENOSYS on a kernel without it).
 */
MOOR_EXPORT int moor_uuid_generate(moor_uuid *out, moor_error *err);

/* moor_uuid_equal - whether @a and @b hold the same 16 bytes.
 * Ownership: nothing to free. Locks: none. Blocks: never.
 * Returns: true if equal; false if they differ or either is NULL. */
MOOR_EXPORT bool moor_uuid_equal(const moor_uuid *a, const moor_uuid *b);

/* ---- the registry ----------------------------------------------------- */

/* Longest name accepted, in bytes, not counting the terminating NUL. */
#define MOOR_REGISTRY_NAME_MAX 255

/* A registry: a refcounted moor object (class "moor_registry"); drop it
 * with moor_unref(). Opaque. Every function below that takes @reg requires
 * the caller to own a reference to it for the whole call: removal and the
 * _locked lookups touch registry entries outside any lock or RCU section,
 * which is safe only while the registry itself cannot be disposed. */
typedef struct moor_registry moor_registry;

/*
 * moor_registry_filter_fn - chooses which objects moor_registry_collect()
 * keeps. Called once per object of the snapshot, in the collecting thread,
 * with a reference held for it and no registry lock held; it may lock @obj
 * (and must unlock it before returning). Returns true to keep @obj.
 */
typedef bool (*moor_registry_filter_fn)(void *obj, void *opaque);

/*
 * moor_registry_new - an empty registry.
 *
 * Ownership: new reference. The last moor_unref() drops the registry's
 * reference to every object still in it and waits (rcu_barrier) until the
 * references of objects removed earlier, whose release was deferred past
 * an RCU grace period, have been dropped too; see moor_registry_remove().
 * That last unref must not be made inside an RCU read-side section or with
 * an object mutex held (dispose functions may run meanwhile). Exception: if
 * the last reference is dropped in liburcu's call_rcu thread (an object's
 * dispose dropping it), the wait is skipped, because that thread cannot
 * wait for its own queue; the pending releases still run afterwards and
 * never touch the registry.
 * Locks: none. Blocks: no (allocates).
 * Returns: the registry, or NULL with @err set: -ENOMEM.
 */
MOOR_EXPORT moor_registry *moor_registry_new(moor_error *err);

/*
 * moor_registry_add - put @obj in @reg under @uuid and @name.
 *
 * Both keys must be free and @obj must not already be in @reg. @name must
 * be 1..MOOR_REGISTRY_NAME_MAX bytes of valid UTF-8 without ASCII control
 * characters (bytes 0x00-0x1f and 0x7f); it is copied. An object may be in
 * several registries at once.
 * Ownership: @reg takes a new reference of its own; the caller keeps its
 * own. Locks: the registry's internal leaf mutex; the caller may hold
 * @obj's mutex (or any one object mutex). Blocks: allocates; when the add
 * grows the tables it resizes them outside the registry mutex, and may wait
 * (bounded by one table resize) for another add's resize to finish.
 * Returns: 0; or, with @reg unchanged:
 *   -EINVAL  @reg, @obj, @uuid or @name NULL; @obj not a lockable object;
 *            @name empty, longer than MOOR_REGISTRY_NAME_MAX, not UTF-8,
 *            or holding a control character (the message gives its
 *            offset);
 *   -EEXIST  @uuid or @name is taken (the message names the key and the
 *            object holding it), or @obj is in @reg already;
 *   -ENOMEM  out of memory.
 */
MOOR_EXPORT int moor_registry_add(moor_registry *reg, void *obj, const moor_uuid *uuid,
                                  const char *name, moor_error *err);

/*
 * moor_registry_remove - take @obj out of @reg.
 *
 * From the moment it returns, no lookup finds @obj, and a *_locked lookup
 * that found it earlier but had not yet locked it returns NULL. Callers in
 * flight keep their own references. The registry's reference is dropped
 * after an RCU grace period (lookups that started before the removal may
 * still be touching the object's counter), in liburcu's call_rcu thread:
 * if it is the last one, @obj's dispose functions run there, with no moor
 * lock held: on a thread the application did not create (see
 * moor_registry_barrier() to wait for it).
 * Locks: may be called with @obj's mutex held (the usual case: found with
 * a *_locked lookup); otherwise with no object mutex held, and @obj is
 * locked briefly. The registry's mutex is a leaf taken inside.
 * Blocks: only on @obj's mutex when the caller does not hold it.
 * Returns: 0; or, with @reg unchanged:
 *   -EINVAL  @reg or @obj NULL or not a registry / lockable object;
 *   -ENOENT  @obj is not in @reg.
 */
MOOR_EXPORT int moor_registry_remove(moor_registry *reg, void *obj, moor_error *err);

/*
 * moor_registry_barrier - wait until every release that registries
 * deferred before this call has run: the registry's reference to each
 * object removed so far has been dropped, and the dispose functions of
 * those for which it was the last have returned (in liburcu's call_rcu
 * thread). For a clean shutdown, a test's census check, or before
 * unloading what a dispose function needs.
 *
 * Process-wide: it covers every registry. Releases deferred after the
 * call begins may or may not be waited for.
 * Ownership: nothing to free. Locks: must be called with no object mutex
 * held and outside any RCU read-side section (the releases may need the
 * mutexes; the grace period needs the section to end).
 * Blocks: for one RCU grace period plus the releases queued before it
 * (normally milliseconds; as long as a dispose function takes).
 * Context: any thread but liburcu's call_rcu thread (a dispose function).
 * Returns: 0; or -EDEADLK (nothing waited for) when called from the
 *   call_rcu thread, which runs the very releases it would wait for.
 */
MOOR_EXPORT int moor_registry_barrier(moor_error *err);

/*
 * moor_registry_rename - give @obj, already in @reg, the name @new_name.
 *
 * Atomic for lookups: there is one instant before which a lookup by the old
 * name finds @obj and one by @new_name does not, and after which it is the
 * other way round. Renaming to the current name succeeds and does nothing.
 * Locks: the registry's internal leaf mutex; the caller may hold @obj's
 * mutex. Blocks: no (allocates).
 * Returns: 0; or, with @reg unchanged:
 *   -EINVAL  a NULL argument, or @new_name invalid (as for add);
 *   -ENOENT  @obj is not in @reg;
 *   -EEXIST  another object has @new_name (the message names it);
 *   -ENOMEM  out of memory.
 */
MOOR_EXPORT int moor_registry_rename(moor_registry *reg, void *obj, const char *new_name,
                                     moor_error *err);

/*
 * moor_registry_find_uuid, moor_registry_find_name - look an object up.
 *
 * Ownership: new reference, or NULL when no object has that key (a name
 * that could not be registered, such as "" or non-UTF-8, is simply not
 * found). Locks: none taken, none required; lock-free: never waits for a
 * writer. Blocks: never (the calling thread's first lookup registers it
 * with RCU, which allocates once). Ordering: the lookup is atomic with
 * respect to add, remove and rename; the reference is taken with an
 * increment-unless-zero, so an object whose last reference is gone is
 * never returned. Context: any thread, also one never seen by liburcu.
 * Returns: the object, or NULL: key not found (also a name longer than
 * MOOR_REGISTRY_NAME_MAX), or a NULL @reg or key (reported as misuse).
 */
MOOR_EXPORT void *moor_registry_find_uuid(moor_registry *reg, const moor_uuid *uuid);
MOOR_EXPORT void *moor_registry_find_name(moor_registry *reg, const char *name);

/*
 * moor_registry_find_uuid_locked, moor_registry_find_name_locked - look up,
 * then lock the object.
 *
 * Returns NULL also when the object was removed from @reg between the
 * lookup and the lock: a non-NULL result is locked and still in @reg, and
 * stays in it until the caller unlocks (removal needs the object's mutex).
 * A rename in that window is not a removal: the result may already carry
 * another name. Ownership: new reference; end with moor_end_api().
 * Locks: the caller must hold no object mutex; on success it holds the
 * result's. Blocks: on the object's mutex (short by the lock rules).
 */
MOOR_EXPORT void *moor_registry_find_uuid_locked(moor_registry *reg, const moor_uuid *uuid);
MOOR_EXPORT void *moor_registry_find_name_locked(moor_registry *reg, const char *name);

/*
 * moor_registry_count - how many objects @reg holds.
 * Ordering: relaxed; exact at some instant during the call. Locks: none.
 * Blocks: never. Returns 0 for a NULL @reg (reported as misuse).
 */
MOOR_EXPORT size_t moor_registry_count(moor_registry *reg);

/*
 * moor_registry_collect - snapshot the objects of @reg.
 *
 * Takes a reference to every object in @reg at one instant (under the
 * registry's mutex), then, with no registry lock held, calls @filter (NULL:
 * keep all) on each and keeps those it accepts. *@out receives a
 * NULL-terminated array of new references, in no particular order; free it
 * with moor_registry_array_free(). The objects may be removed, renamed or
 * changed by others as soon as the snapshot is taken: lock each one and
 * re-check before acting on it.
 * Ownership: *@out and every reference in it are the caller's.
 * Locks: the registry's leaf mutex during the snapshot; the caller must hold
 * no object mutex if @filter locks objects. Blocks: only in @filter.
 * Returns: the number of objects in *@out (>= 0); or, with *@out untouched
 *   and no reference left over: -EINVAL (@reg or @out NULL), -ENOMEM.
 */
MOOR_EXPORT int moor_registry_collect(moor_registry *reg, moor_registry_filter_fn filter,
                                      void *opaque, void ***out, moor_error *err);

/*
 * moor_registry_array_free - drop every reference in the NULL-terminated
 * array @objs (from moor_registry_collect()) and free it. NULL-safe.
 * Ownership: takes @objs and its references; do not use them afterwards.
 * Returns: nothing.
 * Locks: the caller must not hold the mutex of any object in it.
 * Blocks: only as long as dispose functions of last references do.
 */
MOOR_EXPORT void moor_registry_array_free(void **objs);

#ifdef __cplusplus
}
#endif

#endif /* MOOR_REGISTRY_H */
