/* SPDX-License-Identifier: MIT */
/*
 * reftrace.c - MOOR_DEBUG=refs: per object, who holds its references.
 *
 * Theory of operation: a traced object owns an array of records, one per
 * outstanding reference, each with the site that took it and the taking
 * thread. A take appends. An unref cannot say which reference it drops,
 * so a drop removes the newest record of the dropping thread (a function
 * that took a reference and now drops it) or, if that thread holds none,
 * the oldest record (a reference handed to another thread, such as a
 * queued event's). What is left when an object leaks names the code that
 * never dropped its reference. The array has its own leaf mutex: takes and
 * drops of one object race freely between threads.
 */
#include <pthread.h>
#include <string.h>

#include "debug-internal.h"
#include "lockdep-internal.h"
#include "reftrace-internal.h"

#define SITE_TEXT 160

struct rec {
    const char *site;
    const void *ret;
    int tid;
};

struct moor__reftrace {
    pthread_mutex_t lock; /* leaf */
    size_t n, cap;
    struct rec *recs;
};

struct moor__reftrace *moor__reftrace_new(const char *site, const void *ret)
{
    struct moor__reftrace *rt = moor__calloc(1, sizeof(*rt));

    if (!rt)
        return NULL;
    pthread_mutex_init(&rt->lock, NULL);
    moor__reftrace_take(rt, site, ret);
    return rt;
}

void moor__reftrace_free(struct moor__reftrace *rt)
{
    if (!rt)
        return;
    pthread_mutex_destroy(&rt->lock);
    moor__free(rt->recs);
    moor__free(rt);
}

/* Room for one more record; false when out of memory. Under rt->lock. */
static bool reserve_locked(struct moor__reftrace *rt)
{
    struct rec *grown;
    size_t cap;

    if (rt->n < rt->cap)
        return true;
    cap = rt->cap ? rt->cap * 2 : 4;
    grown = moor__malloc(cap * sizeof(*grown));
    if (!grown)
        return false;
    if (rt->n)
        memcpy(grown, rt->recs, rt->n * sizeof(*grown));
    moor__free(rt->recs);
    rt->recs = grown;
    rt->cap = cap;
    return true;
}

void moor__reftrace_take(struct moor__reftrace *rt, const char *site, const void *ret)
{
    if (!rt)
        return;
    pthread_mutex_lock(&rt->lock);
    if (reserve_locked(rt)) /* else best effort: this reference goes unnamed */
        rt->recs[rt->n++] = (struct rec){site, ret, moor__thread_id()};
    pthread_mutex_unlock(&rt->lock);
}

void moor__reftrace_drop(struct moor__reftrace *rt)
{
    int tid = moor__thread_id();
    size_t i;

    if (!rt)
        return;
    pthread_mutex_lock(&rt->lock);
    for (i = rt->n; i-- > 0;) {
        if (rt->recs[i].tid == tid)
            break;
    }
    if (i >= rt->n)
        i = 0; /* none of this thread's: the oldest */
    if (rt->n) {
        memmove(&rt->recs[i], &rt->recs[i + 1], (rt->n - i - 1) * sizeof(rt->recs[0]));
        rt->n--;
    }
    pthread_mutex_unlock(&rt->lock);
}

void moor__reftrace_format(struct moor__reftrace *rt, char *buf, size_t size)
{
    size_t used = 0;

    buf[0] = '\0';
    if (!rt)
        return;
    pthread_mutex_lock(&rt->lock);
    for (size_t i = 0; i < rt->n && used < size; i++) {
        char text[SITE_TEXT];

        used +=
            (size_t)snprintf(buf + used, size - used, "%s%s (thread %d)", i ? "; " : "",
                             moor__site_text(rt->recs[i].site, rt->recs[i].ret, text, sizeof(text)),
                             rt->recs[i].tid);
    }
    pthread_mutex_unlock(&rt->lock);
}

int moor__reftrace_dump(struct moor__reftrace *rt, FILE *f, const char *indent)
{
    int lines;

    pthread_mutex_lock(&rt->lock);
    for (size_t i = 0; i < rt->n; i++) {
        char text[SITE_TEXT];

        fprintf(f, "%sreference taken at %s by thread %d\n", indent,
                moor__site_text(rt->recs[i].site, rt->recs[i].ret, text, sizeof(text)),
                rt->recs[i].tid);
    }
    lines = (int)rt->n;
    pthread_mutex_unlock(&rt->lock);
    return lines;
}
