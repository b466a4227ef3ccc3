/* SPDX-License-Identifier: MIT */
/*
 * lockcnt-example.c - the example of docs/lockcnt.md: a configuration that
 * readers use without a lock while a writer replaces it, and old versions
 * freed by whoever is last to stop looking at them. Built and run by
 * `make check`.
 */
#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <moor/lockcnt.h>

struct config {
    int version;
    int timeout_ms;
    struct config *next_retired; /* under cfg_lc's mutex */
};

static moor_lockcnt cfg_lc;
static _Atomic(struct config *) current; /* stored under the mutex */
static struct config *retired;           /* replaced, not yet freed */
static int freed;                        /* under the mutex */

/* Mutex held and count zero: nobody can be looking at a retired version,
 * and nobody can start looking (rule 2) until we unlock. */
static void free_retired_locked(void)
{
    assert(moor_lockcnt_count(&cfg_lc) == 0);
    while (retired) {
        struct config *c = retired;

        retired = c->next_retired;
        free(c);
        freed++;
    }
}

static void set_config(int version)
{
    struct config *c = calloc(1, sizeof(*c));

    assert(c);
    c->version = version;
    c->timeout_ms = 100 * version;

    moor_lockcnt_lock(&cfg_lc);
    struct config *old = atomic_load_explicit(&current, memory_order_relaxed);
    /* release: readers that load the pointer see the fields set above. */
    atomic_store_explicit(&current, c, memory_order_release);
    if (old) {
        old->next_retired = retired;
        retired = old;
    }
    if (moor_lockcnt_count(&cfg_lc) == 0)
        free_retired_locked(); /* nobody visiting: free now */
    moor_lockcnt_unlock(&cfg_lc);
}

static int read_timeout(void)
{
    moor_lockcnt_inc(&cfg_lc);
    /* acquire: pairs with set_config()'s release store. */
    struct config *c = atomic_load_explicit(&current, memory_order_acquire);
    int t = c->timeout_ms; /* safe: c cannot be freed during the visit */
    assert(t == 100 * c->version);
    if (moor_lockcnt_dec_and_lock(&cfg_lc)) {
        free_retired_locked(); /* the last reader frees what was replaced */
        moor_lockcnt_unlock(&cfg_lc);
    }
    return t;
}

static void *reader(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100000; i++) {
        if (read_timeout() <= 0)
            abort();
    }
    return NULL;
}

int main(void)
{
    pthread_t r[2];

    moor_lockcnt_init(&cfg_lc);
    set_config(1);
    for (int i = 0; i < 2; i++)
        pthread_create(&r[i], NULL, reader, NULL);
    for (int v = 2; v <= 1000; v++)
        set_config(v);
    for (int i = 0; i < 2; i++)
        pthread_join(r[i], NULL);

    /* Every replaced version was freed, by the writer or by a reader. */
    moor_lockcnt_lock(&cfg_lc);
    free_retired_locked();
    moor_lockcnt_unlock(&cfg_lc);
    printf("lockcnt-example: 999 versions replaced, %d freed, timeout now %d ms\n", freed,
           read_timeout());
    assert(freed == 999);
    free(atomic_load(&current));
    moor_lockcnt_destroy(&cfg_lc);
    return 0;
}
