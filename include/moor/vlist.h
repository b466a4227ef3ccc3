/* SPDX-License-Identifier: MIT */
/*
 * moor/vlist.h - visit lists: an intrusive singly linked list that can be
 * changed while it is being walked, by other threads or by the walker
 * itself from inside a callback.
 *
 * The list is what an event loop's handler table or a notifier chain needs:
 * walks are frequent and must not take a lock (a callback may run for a
 * while, may add or remove handlers, may even walk the list again), while
 * changes are rare and short. A moor_vlist is a moor_lockcnt plus a list:
 *
 *   - a walk is a visit: moor_vlist_visit_begin() counts it, then nodes are
 *     read with acquire loads, and moor_vlist_visit_end() uncounts it;
 *   - insertion takes the lock counter's mutex and publishes the node with
 *     a release store, so a concurrent walker sees either the list without
 *     the node or the node fully initialised;
 *   - removal only marks the node. Walks skip marked nodes; the node stays
 *     linked and allocated, so a walker standing on it (or about to step
 *     onto it) is safe. Whoever is last to leave - the last visitor in
 *     moor_vlist_visit_end(), or the remover itself if nobody is visiting -
 *     unlinks every marked node under the mutex at count zero and then
 *     calls each one's free callback, exactly once.
 *
 * It is a separate primitive built on moor/lockcnt.h rather than a feature
 * of it because the lock counter is useful for guarding things that are not
 * lists (a single pointer, a table that is swapped whole), while the
 * deferred-free bookkeeping here (marks, the sweep, who calls the free
 * callback) is specific to linked nodes and would tie every lock counter
 * user to one data structure.
 *
 * Walking:
 *
 *     moor_vlist_node *n;
 *
 *     moor_vlist_visit_begin(&list);
 *     moor_vlist_foreach(n, &list) {
 *         struct handler *h = moor_vlist_entry(n, struct handler, node);
 *         h->fn(h);
 *     }
 *     moor_vlist_visit_end(&list);
 *
 * or moor_vlist_walk(&list, fn, opaque), which does the same.
 *
 * What code running inside a visit (a loop body or walk callback) may do:
 *   - remove the current node: it is marked, stays valid until the
 *     outermost visit of every thread has ended, and iteration continues
 *     from it normally;
 *   - remove any other node, including the next one: iteration skips it;
 *   - insert nodes: a node inserted at the tail is reached by this walk if
 *     the walk has not passed the end yet; one inserted at the head is not;
 *   - start a nested visit of the same list (re-enter), in the same thread
 *     or by waking another thread: visits nest and the count just grows;
 *   - take other locks and block: nothing in a visit holds a lock. Only the
 *     mutex of this list must not be held across a visit_begin (see
 *     moor_lockcnt_inc()), which the API never does for the caller.
 *
 * Node ownership: moor_vlist_insert_*() hands the node to the list. The list
 * gives it back exactly once, through the free callback passed at insert,
 * when it has been removed and no visit that could see it is in progress, or
 * from moor_vlist_destroy(). Free callbacks run with no list lock held and
 * outside any visit of their own; they may use the list (insert, remove,
 * walk), but must not free the list itself.
 */
#ifndef MOOR_VLIST_H
#define MOOR_VLIST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <moor/export.h>
#include <moor/lockcnt.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moor_vlist_node moor_vlist_node;

typedef struct moor_vlist moor_vlist;

/* Gives a node back to its owner after removal (see the file comment).
 * @list is the list it was on: a callback reaches its list's owner from it
 * (moor_vlist_entry-style, the list being embedded in that owner), no
 * global needed. */
typedef void (*moor_vlist_free_fn)(moor_vlist *list, moor_vlist_node *node);

/* Embed one per list the containing struct can be on. Fields are private. */
struct moor_vlist_node {
    _Atomic(moor_vlist_node *) next;
    atomic_bool removed;
    moor_vlist_free_fn free_fn;
};

/* Fields are private; the layout is public so that lists can be embedded. */
struct moor_vlist {
    moor_lockcnt lc;                  /* visits + the writers' mutex */
    _Atomic(moor_vlist_node *) head;  /* stores under the mutex, loads anywhere */
    _Atomic(moor_vlist_node *) *tail; /* link to store a tail insert into */
    bool dirty;                       /* under the mutex: may hold marked nodes */
};

/* The struct that embeds @node as @member. */
#define moor_vlist_entry(node, type, member) ((type *)((char *)(node)-offsetof(type, member)))

/*
 * moor_vlist_init - an empty list using the build's default lock counter.
 *
 * Call before the list is shared. Ownership: caller's storage; undo with
 * moor_vlist_destroy(). Locks: none. Blocks: never.
 * Returns: nothing (cannot fail; @list must not be NULL).
 */
MOOR_EXPORT void moor_vlist_init(moor_vlist *list);

/*
 * moor_vlist_init_impl - as moor_vlist_init() with an explicit lock counter
 * implementation (see moor_lockcnt_init_impl()).
 * Returns: 0; -EINVAL or -ENOTSUP as moor_lockcnt_init_impl(), with @list
 * untouched. Ownership, Locks, Blocks: as moor_vlist_init().
 */
MOOR_EXPORT int moor_vlist_init_impl(moor_vlist *list, moor_lockcnt_impl impl);

/*
 * moor_vlist_destroy - give every node still on the list (removed or not)
 * back through its free callback, in list order, and release the lock
 * counter. NULL-safe.
 *
 * A free callback may insert into the list (see the file comment): nodes
 * it inserts are given back too, in further passes, until the list stays
 * empty; a callback that inserts every time it runs keeps destroy going
 * forever.
 *
 * Ownership: every node goes back to its owner; @list's storage stays the
 * caller's. Locks: nobody may be visiting or changing the list (asserted:
 * count zero); the mutex is not taken. Blocks: only as long as the free
 * callbacks do. Returns: nothing.
 */
MOOR_EXPORT void moor_vlist_destroy(moor_vlist *list);

/*
 * moor_vlist_insert_head / moor_vlist_insert_tail - put @node first / last.
 *
 * Ownership: the list owns @node until it calls @free_fn (non-NULL) for it.
 * @node must not be on any list; its fields are initialised here.
 * Locks: takes the list's mutex briefly; the caller must not hold it. May be
 * called inside a visit. Blocks: while another thread holds the mutex
 * (another insert, a remove, or a sweep of removed nodes).
 * Ordering: release; a walker that loads the link sees an initialised node.
 * Returns: 0, or -EINVAL if an argument is NULL (nothing changed).
 */
MOOR_EXPORT int moor_vlist_insert_head(moor_vlist *list, moor_vlist_node *node,
                                       moor_vlist_free_fn free_fn);
MOOR_EXPORT int moor_vlist_insert_tail(moor_vlist *list, moor_vlist_node *node,
                                       moor_vlist_free_fn free_fn);

/*
 * moor_vlist_remove - take @node off the list.
 *
 * Walks that reach @node after this call skip it. If nobody is visiting,
 * @node is unlinked and freed (its free callback runs) before this returns;
 * otherwise the last visitor to leave does it. Either way the caller must
 * not touch @node afterwards, except inside a visit that was already in
 * progress when it called: there @node stays valid until that visit ends.
 * Locks: takes the list's mutex briefly; the caller must not hold it. May be
 * called inside a visit, including on the node being visited.
 * Blocks: on the mutex (held while it looks for @node: a walk of the list
 * up to @node), and for as long as the free callback runs.
 * Returns: 0; or, with nothing changed:
 *   -EALREADY  @node was already removed but a visit still keeps it
 *              (only then can it be asked);
 *   -ENOENT    @node is not on @list: removed and given back already (a
 *              second removal outside a visit), or never inserted. Also
 *              reported as misuse; @node's memory is not touched, so a
 *              node freed by its callback is not written to;
 *   -EINVAL    an argument is NULL.
 */
MOOR_EXPORT int moor_vlist_remove(moor_vlist *list, moor_vlist_node *node);

/*
 * moor_vlist_visit_begin / moor_vlist_visit_end - bracket a walk.
 *
 * Between them, nodes reached through moor_vlist_first/next stay allocated
 * even if removed. Visits nest. visit_end of the last visit frees the nodes
 * removed meanwhile (their free callbacks run in that thread).
 * Locks: the caller must not hold the list's mutex (it cannot: the API
 * never leaves it held). Blocks: visit_begin waits while another thread
 * holds the mutex at count zero (an insert, remove or sweep; short);
 * visit_end of the last visit may wait for the mutex and runs the free
 * callbacks. Ordering: as moor_lockcnt_inc/dec.
 * Ownership: nothing to free; visit_end gives swept nodes back through
 * their free callbacks. Returns: nothing.
 */
MOOR_EXPORT void moor_vlist_visit_begin(moor_vlist *list);
MOOR_EXPORT void moor_vlist_visit_end(moor_vlist *list);

/*
 * moor_vlist_first / moor_vlist_next - the first node, or the node after
 * @node, that is not marked removed; NULL at the end.
 *
 * Only inside a visit. @node may itself be marked (removed during the
 * walk). Inline: a walk costs two loads per node and no call.
 * Locks: none. Blocks: never. Ordering: acquire loads of the links (pair
 * with the inserts' release stores); the removal mark is read relaxed: a
 * stale "not removed" hands out a node that the visit still keeps
 * allocated, which is all a racing removal in another thread can promise.
 */
static inline moor_vlist_node *moor__vlist_skip_removed(moor_vlist_node *n)
{
    /* relaxed mark, acquire link: see above. */
    while (n && atomic_load_explicit(&n->removed, memory_order_relaxed))
        n = atomic_load_explicit(&n->next, memory_order_acquire);
    return n;
}

static inline moor_vlist_node *moor_vlist_first(moor_vlist *list)
{
    /* acquire: see above. */
    return moor__vlist_skip_removed(atomic_load_explicit(&list->head, memory_order_acquire));
}

static inline moor_vlist_node *moor_vlist_next(moor_vlist_node *node)
{
    /* acquire: see above. */
    return moor__vlist_skip_removed(atomic_load_explicit(&node->next, memory_order_acquire));
}

/* Walk the live nodes; only between visit_begin and visit_end. */
#define moor_vlist_foreach(node, list)                                                             \
    for ((node) = moor_vlist_first(list); (node); (node) = moor_vlist_next(node))

/* A walk callback; a non-zero return stops the walk and is returned. */
typedef int (*moor_vlist_walk_fn)(moor_vlist_node *node, void *opaque);

/*
 * moor_vlist_walk - visit_begin, call @fn on each live node in order until
 * it returns non-zero, visit_end.
 *
 * @fn may do anything listed in the file comment. Locks/Blocks: as the
 * visit functions, plus whatever @fn does. Context: any thread.
 * Returns: the first non-zero value @fn returned, or 0; -EINVAL (and no
 * call of @fn) if @list or @fn is NULL.
 */
MOOR_EXPORT int moor_vlist_walk(moor_vlist *list, moor_vlist_walk_fn fn, void *opaque);

/*
 * moor_vlist_is_removed - whether @node has been removed. Inside a visit
 * only (outside it the node may be gone). Ordering: relaxed.
 * Ownership: @node stays the list's. Locks: none. Blocks: never.
 * Returns: true once moor_vlist_remove() marked @node, else false.
 */
MOOR_EXPORT bool moor_vlist_is_removed(const moor_vlist_node *node);

#ifdef __cplusplus
}
#endif

#endif /* MOOR_VLIST_H */
