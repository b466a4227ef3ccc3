/* SPDX-License-Identifier: MIT */
/*
 * ref-example.c - the example of docs/ref.md: an embeddable counter guarding
 * a cache entry, freed under the cache mutex with moor_refcnt_dec_and_lock()
 * so a lookup can never find an entry whose count already reached zero.
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include <moor/ref.h>

struct entry {
    moor_refcnt ref;
    int key;
    struct entry *next;
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *cache;

/* Returns a new reference, or NULL. */
static struct entry *cache_get(int key)
{
    struct entry *e;

    pthread_mutex_lock(&cache_lock);
    for (e = cache; e && e->key != key; e = e->next)
        ;
    if (e)
        moor_refcnt_inc(&e->ref); /* the cache's reference keeps it above 0 */
    pthread_mutex_unlock(&cache_lock);
    return e;
}

static void cache_put(struct entry *e)
{
    if (!moor_refcnt_dec_and_lock(&e->ref, &cache_lock))
        return;
    /* Last reference, and cache_lock is held: unlink, then free. */
    for (struct entry **p = &cache; *p; p = &(*p)->next) {
        if (*p == e) {
            *p = e->next;
            break;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    free(e);
}

int main(void)
{
    struct entry *e = calloc(1, sizeof(*e));

    assert(e);
    moor_refcnt_init(&e->ref); /* this reference is the cache's */
    e->key = 7;
    cache = e;

    struct entry *found = cache_get(7);
    if (!found)
        return 1;
    printf("found key %d, refs %d\n", found->key, moor_refcnt_read(&found->ref));
    cache_put(found); /* back to the cache's single reference */
    cache_put(e);     /* the cache lets go: unlinked and freed */
    assert(cache == NULL);
    return 0;
}
