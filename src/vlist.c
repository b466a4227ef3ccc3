/* SPDX-License-Identifier: MIT */
/*
 * vlist.c - visit lists: a singly linked list walked without a lock.
 *
 * Theory of operation.
 *
 * The list is guarded by a moor_lockcnt: walks are visits, and every change
 * to the links happens under its mutex. Walkers read links with acquire
 * loads; inserts initialise the node first and link it with one release
 * store, so a walker sees the new node whole or not at all. Links are only
 * ever rewritten to skip nodes by the sweep below, which runs when nobody
 * can be walking, so a walker never sees a link change under its feet
 * except by gaining a node.
 *
 * Removal takes the mutex and first looks for the node on the list,
 * comparing pointers only: a node that is not linked was swept and given
 * back already (or never inserted), its memory may be gone, so it is not
 * read and the misuse is reported. A linked node is marked
 * (node->removed), with an atomic exchange so that a second removal
 * during a visit is noticed (-EALREADY). A marked node stays linked and
 * allocated; walks skip it. The remover, still under the mutex, records
 * that the list is dirty and, if the count is zero, sweeps; if the count is not zero, some
 * visit is in progress and the visitor that takes the count to zero does it
 * in moor_vlist_visit_end() with moor_lockcnt_dec_and_lock(). No sweep can
 * be missed: the remover's critical section and the count's last decrement
 * are ordered by the mutex (the last decrement happens with the mutex
 * acquired), so either the remover sees count zero and sweeps, or the last
 * visitor locks after the remover unlocked and sees the mark and the dirty
 * flag.
 *
 * The sweep holds the mutex at count zero, so by rule 2 of lockcnt.h no
 * walker exists or can start; it unlinks the marked nodes onto a private
 * chain (relaxed stores suffice: the next walker acquires through the lock
 * counter, which pairs with the unlock that follows), recomputes the tail,
 * unlocks, and only then calls the free callbacks. Unlinked nodes are
 * unreachable, so freeing them after the unlock still keeps rule 1, and the
 * callbacks are free to use the list again.
 *
 * A remover must not touch the node after marking it: if nobody is
 * visiting, a concurrent sweep may free it at once. Inside a visit the
 * count keeps every node alive, which is what makes "remove self" and
 * "remove next" safe for callbacks.
 */
#include <assert.h>
#include <errno.h>

#include <moor/debug.h>
#include <moor/vlist.h>

typedef _Atomic(moor_vlist_node *) link_t;

static void free_chain(moor_vlist *list, moor_vlist_node *n)
{
    while (n) {
        /* relaxed: the chain is private to this thread since the sweep. */
        moor_vlist_node *next = atomic_load_explicit(&n->next, memory_order_relaxed);

        n->free_fn(list, n);
        n = next;
    }
}

/* Whether @node is linked on @list; the mutex is held, so the links are
 * stable. Compares pointers only: @node itself is not read, since a node
 * that is not linked may have been freed already. */
static bool linked_locked(moor_vlist *list, const moor_vlist_node *node)
{
    /* relaxed: links change only under the mutex, which we hold. */
    for (moor_vlist_node *n = atomic_load_explicit(&list->head, memory_order_relaxed); n;
         n = atomic_load_explicit(&n->next, memory_order_relaxed))
        if (n == node)
            return true;
    return false;
}

/* Unlink every marked node; the mutex is held and the count is zero.
 * Returns the unlinked nodes, chained through ->next, in list order. */
static moor_vlist_node *sweep_locked(moor_vlist *list)
{
    link_t *link = &list->head, freed, *freed_tail = &freed;
    moor_vlist_node *n;

    assert(moor_lockcnt_count(&list->lc) == 0);
    /* relaxed, the links in the whole loop: nobody else reads or writes
     * them while the mutex is held at count zero; the unlock publishes the
     * result. */
    while ((n = atomic_load_explicit(link, memory_order_relaxed))) {
        /* acquire: pairs with the remover's release mark, which may not
         * have reached the mutex yet; its mark must happen-before our
         * free of the node. */
        if (atomic_load_explicit(&n->removed, memory_order_acquire)) {
            atomic_store_explicit(link, atomic_load_explicit(&n->next, memory_order_relaxed),
                                  memory_order_relaxed);
            atomic_store_explicit(freed_tail, n, memory_order_relaxed);
            freed_tail = &n->next;
        } else {
            link = &n->next;
        }
    }
    atomic_store_explicit(freed_tail, NULL, memory_order_relaxed);
    list->tail = link;
    list->dirty = false;
    return atomic_load_explicit(&freed, memory_order_relaxed);
}

int moor_vlist_init_impl(moor_vlist *list, moor_lockcnt_impl impl)
{
    if (!list)
        return -EINVAL;
    int ret = moor_lockcnt_init_impl(&list->lc, impl);
    if (ret < 0)
        return ret;
    atomic_init(&list->head, NULL);
    list->tail = &list->head;
    list->dirty = false;
    return 0;
}

void moor_vlist_init(moor_vlist *list)
{
    int ret = moor_vlist_init_impl(list, MOOR_LOCKCNT_DEFAULT);

    assert(ret == 0);
    (void)ret;
}

void moor_vlist_destroy(moor_vlist *list)
{
    if (!list)
        return;
    assert(moor_lockcnt_count(&list->lc) == 0);
    /* Free callbacks may insert (vlist.h allows it), so detach and free
     * until the list stays empty; only then is the lock counter unused. */
    for (;;) {
        /* relaxed: the caller guarantees the list is no longer shared, so
         * every insert since the last pass (by a free callback) happened in
         * this thread or was ordered before its return by the callback. */
        moor_vlist_node *n = atomic_load_explicit(&list->head, memory_order_relaxed);

        if (!n)
            break;
        /* relaxed: as above, nobody else reads the list any more. */
        atomic_store_explicit(&list->head, NULL, memory_order_relaxed);
        list->tail = &list->head;
        list->dirty = false;
        free_chain(list, n);
    }
    moor_lockcnt_destroy(&list->lc);
}

static void node_prepare(moor_vlist_node *node, moor_vlist_node *next, moor_vlist_free_fn free_fn)
{
    /* Not yet reachable by anyone: plain initialisation. */
    atomic_init(&node->next, next);
    atomic_init(&node->removed, false);
    node->free_fn = free_fn;
}

int moor_vlist_insert_head(moor_vlist *list, moor_vlist_node *node, moor_vlist_free_fn free_fn)
{
    if (!list || !node || !free_fn)
        return -EINVAL;
    moor_lockcnt_lock(&list->lc);
    /* relaxed: links change only under the mutex, which we hold. */
    node_prepare(node, atomic_load_explicit(&list->head, memory_order_relaxed), free_fn);
    /* release: a walker that loads this link sees the node initialised. */
    atomic_store_explicit(&list->head, node, memory_order_release);
    if (list->tail == &list->head)
        list->tail = &node->next;
    moor_lockcnt_unlock(&list->lc);
    return 0;
}

int moor_vlist_insert_tail(moor_vlist *list, moor_vlist_node *node, moor_vlist_free_fn free_fn)
{
    if (!list || !node || !free_fn)
        return -EINVAL;
    moor_lockcnt_lock(&list->lc);
    node_prepare(node, NULL, free_fn);
    /* release: as moor_vlist_insert_head(). */
    atomic_store_explicit(list->tail, node, memory_order_release);
    list->tail = &node->next;
    moor_lockcnt_unlock(&list->lc);
    return 0;
}

int moor_vlist_remove(moor_vlist *list, moor_vlist_node *node)
{
    moor_vlist_node *freed = NULL;

    if (!list || !node)
        return -EINVAL;
    moor_lockcnt_lock(&list->lc);
    if (!linked_locked(list, node)) {
        moor_lockcnt_unlock(&list->lc);
        moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, node,
                          "moor_vlist_remove of node %p, which is not on list %p: removed (and "
                          "given back) already, or never inserted; not touched",
                          (void *)node, (void *)list);
        return -ENOENT;
    }
    /* release: pairs with the sweep's acquire load (the sweep also runs
     * under the mutex, so the mutex alone would do; the pair keeps the
     * mark ordered before the free wherever the sweep runs). Last access
     * to @node when nobody visits: see the file comment. */
    if (atomic_exchange_explicit(&node->removed, true, memory_order_release)) {
        moor_lockcnt_unlock(&list->lc);
        return -EALREADY;
    }
    list->dirty = true;
    if (moor_lockcnt_count(&list->lc) == 0)
        freed = sweep_locked(list);
    moor_lockcnt_unlock(&list->lc);
    free_chain(list, freed);
    return 0;
}

void moor_vlist_visit_begin(moor_vlist *list)
{
    moor_lockcnt_inc(&list->lc);
}

void moor_vlist_visit_end(moor_vlist *list)
{
    if (!moor_lockcnt_dec_and_lock(&list->lc))
        return;

    moor_vlist_node *freed = list->dirty ? sweep_locked(list) : NULL;

    moor_lockcnt_unlock(&list->lc);
    free_chain(list, freed);
}

int moor_vlist_walk(moor_vlist *list, moor_vlist_walk_fn fn, void *opaque)
{
    moor_vlist_node *n;
    int ret = 0;

    if (!list || !fn)
        return -EINVAL;
    moor_vlist_visit_begin(list);
    moor_vlist_foreach (n, list) {
        ret = fn(n, opaque);
        if (ret)
            break;
    }
    moor_vlist_visit_end(list);
    return ret;
}

bool moor_vlist_is_removed(const moor_vlist_node *node)
{
    /* relaxed: a snapshot; see moor_vlist_remove(). */
    return atomic_load_explicit((atomic_bool *)&node->removed, memory_order_relaxed);
}
