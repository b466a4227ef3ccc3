/* SPDX-License-Identifier: MIT */
/*
 * lockdep.c - MOOR_DEBUG=locks: held-lock stacks, lock classes, and the
 * reports that come from them.
 *
 * Theory of operation.
 *
 * Held stacks: each thread keeps, in thread-local storage, the locks it
 * holds in the order it took them, each with the site that took it. Only
 * the owning thread touches its stack, so it needs no lock. A lock taken
 * while the checker was off is simply not on the stack; its release is
 * ignored. Past HELD_MAX nested locks the deeper ones go untracked.
 *
 * Classes: locks are grouped like Linux's lockdep groups them. Every
 * object of one moor class is one class (all domains are one lock), split
 * further only by the subclass a moor_lock_nested() declares; each kind of
 * internal lock (registry mutex, lock counter) is one class. Classes are
 * nodes in a fixed table, appended under graph_lock and read without it:
 * a node is complete before the count that publishes it is stored
 * (release) and the count is loaded with acquire.
 *
 * Order graph: taking class B while holding class A records the edge
 * A->B once, with the two sites and the thread. A new edge is checked for
 * a path back from B to A (depth-first, under graph_lock); if there is
 * one, the two orders were both seen, which is a deadlock waiting for the
 * right interleaving, and it is reported with the sites of both. The edge
 * is kept either way, so one inversion is reported once. Edges are
 * appended like nodes (published by a release store of the count), so the
 * common case, an edge already known, is a lock-free scan of a few slots.
 * Between two objects of different classes the edge joins the classes'
 * subclass-0 nodes (order by class alone); within one class it joins the
 * subclass nodes, which is what lets "subclass 0 then 1" be legal.
 *
 * Reports are formatted under graph_lock when they need the graph, and
 * sent after it is released: the hook may take its own locks.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <moor/debug.h>
#include <moor/introspect.h>

#include "introspect-internal.h"
#include "lockdep-internal.h"

#define HELD_MAX  48
#define NODES_MAX 512
#define EDGES_MAX 48
#define SITE_TEXT 160
#define MSG_MAX   512

struct node;

struct edge {
    struct node *to;
    const char *from_site, *to_site;
    const void *from_ret, *to_ret;
    int tid;
};

struct node {
    const void *key;
    unsigned subclass;
    const char *name;
    enum moor__lockdep_kind kind;
    atomic_uint nedges;
    unsigned mark; /* depth-first search generation, under graph_lock */
    struct edge edges[EDGES_MAX];
};

struct held {
    const void *lock;
    struct node *node, *base; /* base: the subclass-0 node of its class */
    const void *key;
    const char *name;
    unsigned subclass;
    enum moor__lockdep_kind kind;
    const char *site;
    const void *ret;
};

static pthread_mutex_t graph_lock = PTHREAD_MUTEX_INITIALIZER; /* leaf */
static struct node nodes[NODES_MAX];
static atomic_uint nnodes;
static unsigned search_gen;       /* under graph_lock */
static atomic_bool full_reported; /* a table ran out: said once */

/* initial-exec: see moor__thread_id(). */
static _Thread_local struct held held[HELD_MAX] __attribute__((tls_model("initial-exec")));
static _Thread_local unsigned nheld __attribute__((tls_model("initial-exec")));

/* ---- fork ----------------------------------------------------------- */

/* A child forked while another thread was inside node_get() or edge_add()
 * would inherit graph_lock locked by a thread that does not exist there,
 * and its first new class or order would hang. The tables need no repair:
 * a node or edge is visible only once its count's release store is done,
 * so one half-written at the fork is invisible and is written again. The
 * child gets a fresh, unlocked mutex instead (no prepare handler: holding
 * graph_lock across fork would put it in an order against every other
 * library's prepare handler). */
static void graph_lock_after_fork(void)
{
    graph_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
}

__attribute__((constructor)) static void lockdep_fork_init(void)
{
    pthread_atfork(NULL, NULL, graph_lock_after_fork);
}

/* ---- sites ---------------------------------------------------------- */

const char *moor__site_text(const char *site, const void *ret, char *buf, size_t size)
{
    Dl_info info;

    if (site)
        return site;
    if (!ret || !dladdr(ret, &info) || !info.dli_fname) {
        snprintf(buf, size, "%p", ret);
        return buf;
    }
    const char *file = strrchr(info.dli_fname, '/');

    file = file ? file + 1 : info.dli_fname;
    if (info.dli_sname && info.dli_saddr)
        snprintf(buf, size, "%s+%#lx (%s)", info.dli_sname,
                 (unsigned long)((const char *)ret - (const char *)info.dli_saddr), file);
    else
        snprintf(buf, size, "%s+%#lx", file,
                 (unsigned long)((const char *)ret - (const char *)info.dli_fbase));
    return buf;
}

/* ---- classes -------------------------------------------------------- */

static struct node *node_scan(const void *key, unsigned subclass, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (nodes[i].key == key && nodes[i].subclass == subclass)
            return &nodes[i];
    }
    return NULL;
}

/* The node of class (@key, @subclass), created on first use; NULL when the
 * table is full (reported once; that class then goes unchecked). */
static struct node *node_get(const void *key, unsigned subclass, const char *name,
                             enum moor__lockdep_kind kind)
{
    /* acquire: pairs with the release below; the nodes below it are complete. */
    struct node *n = node_scan(key, subclass, atomic_load_explicit(&nnodes, memory_order_acquire));
    unsigned count;

    if (n)
        return n;
    pthread_mutex_lock(&graph_lock);
    /* relaxed: graph_lock orders the writers. */
    count = atomic_load_explicit(&nnodes, memory_order_relaxed);
    n = node_scan(key, subclass, count);
    if (!n && count < NODES_MAX) {
        n = &nodes[count];
        n->key = key;
        n->subclass = subclass;
        n->name = name;
        n->kind = kind;
        /* release: publishes the node's fields to node_scan() readers. */
        atomic_store_explicit(&nnodes, count + 1, memory_order_release);
    }
    pthread_mutex_unlock(&graph_lock);
    /* relaxed: only avoids a second report. */
    if (!n && !atomic_exchange_explicit(&full_reported, true, memory_order_relaxed))
        moor_debug_report(MOOR_MISUSE_LOCK_ORDER, NULL,
                          "lockdep: more than %d lock classes; new ones are not checked",
                          NODES_MAX);
    return n;
}

/* ---- order graph ---------------------------------------------------- */

static bool edge_known(struct node *from, struct node *to, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (from->edges[i].to == to)
            return true;
    }
    return false;
}

/* Depth-first: the first edge of a path from @at to @target, or NULL.
 * Under graph_lock. */
static struct edge *path_to(struct node *at, struct node *target, unsigned *len)
{
    /* relaxed: under graph_lock, which orders every edge writer. */
    unsigned n = atomic_load_explicit(&at->nedges, memory_order_relaxed);

    at->mark = search_gen;
    for (unsigned i = 0; i < n; i++) {
        struct edge *e = &at->edges[i];

        if (e->to == target || (e->to->mark != search_gen && path_to(e->to, target, len))) {
            ++*len;
            return e;
        }
    }
    return NULL;
}

static const char *class_text(const struct node *n, char *buf, size_t size)
{
    if (n->subclass)
        snprintf(buf, size, "%s/%u", n->name, n->subclass);
    else
        snprintf(buf, size, "%s", n->name);
    return buf;
}

/* Format the inversion report: @h held, @a being taken, @back the first
 * edge of the path seen earlier from @a's class back to @h's. */
static void format_inversion(char *msg, const struct held *h, const struct moor__lockdep_acq *a,
                             struct node *from, struct node *to, const struct edge *back,
                             unsigned len)
{
    char s1[SITE_TEXT], s2[SITE_TEXT], s3[SITE_TEXT], s4[SITE_TEXT];
    char c1[96], c2[96], c3[96];

    int n = snprintf(
        msg, MSG_MAX,
        "lock order inversion: thread %d takes '%s' at %s while holding '%s' (taken at %s); "
        "thread %d took them the other way: '%s' at %s, then '%s' at %s%s",
        moor__thread_id(), class_text(to, c1, sizeof(c1)),
        moor__site_text(a->site, a->ret, s1, sizeof(s1)), class_text(from, c2, sizeof(c2)),
        moor__site_text(h->site, h->ret, s2, sizeof(s2)), back->tid, c1,
        moor__site_text(back->from_site, back->from_ret, s3, sizeof(s3)),
        class_text(back->to, c3, sizeof(c3)),
        moor__site_text(back->to_site, back->to_ret, s4, sizeof(s4)),
        len > 1 ? " (and on through more classes back to the first)" : "");

    if (n >= MSG_MAX) /* cut short: the sites come first, so they survive */
        msg[MSG_MAX - 1] = '\0';
}

/* Record @from -> @to if new; on a new edge closing a cycle (or the first
 * edge that finds no room), write the report into @msg and return true. */
static bool edge_add(struct node *from, struct node *to, const struct held *h,
                     const struct moor__lockdep_acq *a, char *msg)
{
    struct edge *back;
    unsigned n, len = 0;
    bool cycle = false;

    /* acquire: pairs with the release below; the edges below it are complete. */
    if (edge_known(from, to, atomic_load_explicit(&from->nedges, memory_order_acquire)))
        return false;
    pthread_mutex_lock(&graph_lock);
    /* relaxed: graph_lock orders the writers. */
    n = atomic_load_explicit(&from->nedges, memory_order_relaxed);
    if (!edge_known(from, to, n)) {
        search_gen++;
        back = path_to(to, from, &len);
        if (back) {
            format_inversion(msg, h, a, from, to, back, len);
            cycle = true;
        }
        if (n < EDGES_MAX) {
            from->edges[n] = (struct edge){to, h->site, a->site, h->ret, a->ret, moor__thread_id()};
            /* release: publishes the edge to edge_known() readers. */
            atomic_store_explicit(&from->nedges, n + 1, memory_order_release);
        } else if (!cycle &&
                   !atomic_exchange_explicit(&full_reported, true, memory_order_relaxed)) {
            /* relaxed: only avoids a second report. */
            snprintf(msg, MSG_MAX,
                     "lockdep: class '%s' was held while taking more than %d other classes; "
                     "orders after those are not checked",
                     from->name, EDGES_MAX);
            cycle = true;
        }
    }
    pthread_mutex_unlock(&graph_lock);
    return cycle;
}

/* The order edge for taking @a (nodes @node/@base) while holding @h. */
static void order_check(const struct held *h, const struct moor__lockdep_acq *a, struct node *node,
                        struct node *base)
{
    bool same_class = h->key == a->key;
    struct node *from = same_class ? h->node : h->base;
    struct node *to = same_class ? node : base;
    char msg[MSG_MAX];

    if (!from || !to || from == to || h->kind == MOOR__LD_MONITOR)
        return;
    if (edge_add(from, to, h, a, msg))
        moor_debug_report(MOOR_MISUSE_LOCK_ORDER, a->lock, "%s", msg);
}

/* ---- rule 4 ----------------------------------------------------------- */

/* The newest held object mutex other than @lock, or NULL. */
static const struct held *held_object(const void *lock)
{
    for (unsigned i = nheld; i-- > 0;) {
        if (held[i].kind == MOOR__LD_OBJECT && held[i].lock != lock)
            return &held[i];
    }
    return NULL;
}

static void nesting_check(const struct moor__lockdep_acq *a)
{
    char s1[SITE_TEXT], s2[SITE_TEXT];
    const struct held *h = NULL;

    if (a->subclass == 0) {
        h = held_object(a->lock);
    } else { /* annotated: only a second lock at the same class and subclass */
        for (unsigned i = nheld; i-- > 0 && !h;) {
            if (held[i].kind == MOOR__LD_OBJECT && held[i].key == a->key &&
                held[i].subclass == a->subclass)
                h = &held[i];
        }
    }
    if (!h)
        return;
    moor_debug_report(MOOR_MISUSE_LOCK_NESTED, a->lock,
                      "rule 4: thread %d locks object %p (class '%s', subclass %u) at %s while "
                      "holding object %p (class '%s', subclass %u) taken at %s; a legal nesting "
                      "takes the inner one with moor_lock_nested() and a subclass of its own",
                      moor__thread_id(), a->lock, a->name, a->subclass,
                      moor__site_text(a->site, a->ret, s1, sizeof(s1)), h->lock, h->name,
                      h->subclass, moor__site_text(h->site, h->ret, s2, sizeof(s2)));
}

/* ---- hooks ------------------------------------------------------------ */

void moor__lockdep_acquire(const struct moor__lockdep_acq *a)
{
    struct node *node = node_get(a->key, a->subclass, a->name, a->kind);
    struct node *base = a->subclass ? node_get(a->key, 0, a->name, a->kind) : node;

    if (!a->trylock && a->kind != MOOR__LD_MONITOR) {
        if (a->kind == MOOR__LD_OBJECT)
            nesting_check(a);
        for (unsigned i = 0; i < nheld; i++)
            order_check(&held[i], a, node, base);
    }
    if (nheld == HELD_MAX)
        return; /* deeper than anything sane: left untracked */
    held[nheld++] =
        (struct held){a->lock, node, base, a->key, a->name, a->subclass, a->kind, a->site, a->ret};
}

static void unlock_order_report(const struct held *h, const struct held *later, const char *site,
                                const void *ret)
{
    char s1[SITE_TEXT], s2[SITE_TEXT], s3[SITE_TEXT];

    moor_debug_report(MOOR_MISUSE_UNLOCK_ORDER, h->lock,
                      "unlock out of order: thread %d unlocks object %p (class '%s', taken at %s) "
                      "at %s while object %p (class '%s') taken after it at %s is still held; "
                      "release nested locks innermost first",
                      moor__thread_id(), h->lock, h->name,
                      moor__site_text(h->site, h->ret, s1, sizeof(s1)),
                      moor__site_text(site, ret, s2, sizeof(s2)), later->lock, later->name,
                      moor__site_text(later->site, later->ret, s3, sizeof(s3)));
}

void moor__lockdep_release(const void *lock, bool check_order, const char *site, const void *ret)
{
    unsigned i = nheld;

    while (i-- > 0) {
        if (held[i].lock == lock)
            break;
    }
    if (i >= nheld)
        return; /* taken while the checker was off, or untracked */
    for (unsigned j = i + 1; check_order && j < nheld; j++) {
        if (held[j].kind == MOOR__LD_OBJECT) {
            unlock_order_report(&held[i], &held[j], site, ret);
            break;
        }
    }
    memmove(&held[i], &held[i + 1], (nheld - i - 1) * sizeof(held[0]));
    nheld--;
}

static const char *kind_text(enum moor__lockdep_kind kind)
{
    switch (kind) {
    case MOOR__LD_OBJECT:
        return "object";
    case MOOR__LD_MONITOR:
        return "monitor section of";
    default:
        return "internal lock";
    }
}

void moor__lockdep_blocking(const char *what, const void *allowed, bool allow_monitor,
                            const void *ret)
{
    char s1[SITE_TEXT + 8], s2[SITE_TEXT];

    for (unsigned i = nheld; i-- > 0;) {
        const struct held *h = &held[i];

        if (h->lock == allowed || (allow_monitor && h->kind == MOOR__LD_MONITOR))
            continue;
        if (ret)
            snprintf(s1, sizeof(s1), " (from %s)", moor__site_text(NULL, ret, s2, sizeof(s2)));
        else
            s1[0] = '\0';
        moor_debug_report(MOOR_MISUSE_LOCK_BLOCKING, h->lock,
                          "blocking while holding a lock: thread %d is about to wait in %s%s "
                          "while holding %s %p ('%s') taken at %s",
                          moor__thread_id(), what, s1, kind_text(h->kind), h->lock, h->name,
                          moor__site_text(h->site, h->ret, s2, sizeof(s2)));
        return;
    }
}

void moor__lockdep_job_wait(const void *obj, const char *api)
{
    char what[160];

    snprintf(what, sizeof(what), "a job wait (API '%s') on object %p", api ? api : "?", obj);
    moor__lockdep_blocking(what, obj, false, NULL);
}

static const struct moor__lockdep_key monitor_key = {"moor_monitor"};

void moor__lockdep_monitor_enter(const void *mon, const char *mon_name, const void *obj,
                                 const void *ret)
{
    char s1[SITE_TEXT], s2[SITE_TEXT];
    struct moor__lockdep_acq a = {mon,  &monitor_key, monitor_key.name, 0, MOOR__LD_MONITOR, false,
                                  NULL, ret};

    for (unsigned i = nheld; i-- > 0;) {
        const struct held *h = &held[i];

        if (h->lock == obj || h->kind == MOOR__LD_MONITOR)
            continue;
        moor_debug_report(MOOR_MISUSE_MONITOR_LOCKED, mon,
                          "monitor entered while holding a lock: thread %d enters monitor '%s' "
                          "for object %p (from %s) while holding %s %p ('%s') taken at %s; "
                          "moor_monitor_enter releases only its own object's mutex",
                          moor__thread_id(), mon_name, obj,
                          moor__site_text(NULL, ret, s1, sizeof(s1)), kind_text(h->kind), h->lock,
                          h->name, moor__site_text(h->site, h->ret, s2, sizeof(s2)));
        break;
    }
    moor__lockdep_acquire(&a);
}

/* ---- the snapshot's view ---------------------------------------------- */

static const char *node_what(enum moor__lockdep_kind kind)
{
    switch (kind) {
    case MOOR__LD_OBJECT:
        return "object mutex";
    case MOOR__LD_MONITOR:
        return "monitor section";
    default:
        return "internal lock";
    }
}

static int collect_orders(unsigned count, struct moor__vec *orders)
{
    char buf[SITE_TEXT];

    for (unsigned i = 0; i < count; i++) {
        /* acquire: pairs with edge_add()'s release; edges below it are complete. */
        unsigned n = atomic_load_explicit(&nodes[i].nedges, memory_order_acquire);

        for (unsigned j = 0; j < n; j++) {
            const struct edge *e = &nodes[i].edges[j];
            size_t to = (size_t)(e->to - nodes);
            moor_debug_lock_order *o;

            if (to >= count) /* a class registered after the count was read */
                continue;
            if (!(o = moor__vec_push(orders)))
                return -ENOMEM;
            o->from = i;
            o->to = to;
            o->thread = e->tid;
            snprintf(o->from_site, sizeof(o->from_site), "%s",
                     moor__site_text(e->from_site, e->from_ret, buf, sizeof(buf)));
            snprintf(o->to_site, sizeof(o->to_site), "%s",
                     moor__site_text(e->to_site, e->to_ret, buf, sizeof(buf)));
        }
    }
    return 0;
}

int moor__lockdep_collect(struct moor__vec *classes, struct moor__vec *orders)
{
    /* acquire: pairs with node_get()'s release; nodes below it are complete. */
    unsigned count = atomic_load_explicit(&nnodes, memory_order_acquire);

    for (unsigned i = 0; i < count; i++) {
        moor_debug_lock_class *c = moor__vec_push(classes);

        if (!c)
            return -ENOMEM;
        class_text(&nodes[i], c->name, sizeof(c->name));
        snprintf(c->what, sizeof(c->what), "%s", node_what(nodes[i].kind));
    }
    return collect_orders(count, orders);
}
