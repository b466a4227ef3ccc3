/* SPDX-License-Identifier: MIT */
/*
 * registry.c - objects found by UUID or name, lock-free for readers.
 *
 * Theory of operation.
 *
 * Structures. Each member object has one entry, which holds the registry's
 * reference to it, its UUID and a pointer to its current name node. Three
 * liburcu lock-free hash tables (cds_lfht) index the entries: by UUID (the
 * node is in the entry), by name (separate name nodes, one per name, each
 * pointing back at its entry) and by object address (writers only, to
 * find an object's entry for remove and rename). Writers (add, remove,
 * rename, the collect snapshot) serialise on one leaf mutex; lookups take
 * no lock at all.
 *
 * Lookups. A reader enters an RCU read-side section, finds the entry, takes
 * a reference with moor_refcnt_inc_not_zero() and leaves. Entries, name
 * nodes and the registry's reference to the object are only released
 * through call_rcu(), i.e. after every reader that could have seen them has
 * left its section; so what a reader finds is still allocated, and while
 * it is reachable the object's count is at least the registry's 1. The
 * increment-unless-zero is the second line of defence the contract
 * promises: an object whose count reached zero is never handed out.
 *
 * Removal and the *_locked lookups. Removal runs with the object's mutex
 * held (taken by remove itself if the caller does not hold it) and, inside
 * it, the registry mutex: it sets entry->removing, unlinks the entry from
 * the three tables and defers the rest. A *_locked lookup pins the entry
 * (entry->pins, a small count: 1 for membership, dropped by the deferred
 * reclaim, plus 1 per lookup between finding and checking), leaves RCU,
 * locks the object and then reads entry->removing under the object mutex:
 * true means a removal got in between, and the lookup returns NULL. A
 * removal cannot happen while the mutex is held, so a non-NULL result stays
 * a member until the caller unlocks.
 *
 * Rename. A lookup by name finds a name node and accepts it only if it is
 * the entry's current one (entry->name == node). Rename, under the registry
 * mutex, inserts the new node (not yet current: lookups by the new name
 * still fail), then switches entry->name to it with one store - the instant
 * at which the old name stops and the new one starts to resolve - and then
 * unlinks the old node (already non-current). So no instant exists at which
 * both names, or neither, resolve. Under the registry mutex only current
 * nodes are in the name table, which keeps the uniqueness checks simple.
 * So that a lookup need not read entry->name (often one more cache line)
 * in the common case, each node has a `trusted` flag, in the line the
 * lookup reads anyway: a trusted node is current. Rename clears the old
 * node's flag before the switch and sets the new one's after it; a lookup
 * that finds an untrusted node falls back to the entry->name check. The
 * protocol, and that both orders matter, is checked in models/registry.pml.
 *
 * Table sizes. The registry sizes its tables itself; liburcu's automatic
 * resizing is off. That resizing is lazy: it is queued through call_rcu
 * and done by the call_rcu thread (which batches at 10 ms intervals),
 * triggered by sampled counters, so after a burst of adds the tables
 * stayed too small for seconds and 100k-member lookups walked long chains.
 * Instead, the writer that makes the count pass the bucket count doubles
 * the target (reg->buckets_want, decided under reg->lock) and, after
 * dropping reg->lock and leaving RCU, resizes all three tables to it with
 * cds_lfht_resize() under reg->resize_lock (fit_tables). So the load
 * factor stays at most 1 (plus the adds racing with a resize), and growth
 * costs O(1) amortised per add, with no grace period (liburcu's grow
 * populates bucket nodes; only a shrink waits for readers). Tables never
 * shrink: their size is the high-water mark of the count, 48 bytes at
 * most per member of that peak, and remove never blocks on a resize.
 * resize_lock nests inside an object mutex (add may be called with one
 * held) and is never taken with reg->lock held, which stays a leaf;
 * nothing under resize_lock waits for a moor lock or for liburcu's
 * call_rcu thread, so a resize cannot deadlock with deferred releases.
 * cds_lfht_resize() must not run inside a read-side section: if the
 * caller is in one (its own liburcu-bp section), the resize is left to
 * the next add that is not.
 *
 * Memory layout. With many members a lookup is a chain of cache misses
 * (bucket, node, object), and in a VM every TLB miss is a costly
 * two-level page walk, so the layout keeps a member's parts together
 * and small. A member is one block: its first name node, then the entry.
 * A lookup by name reads the name node only (its key, its trusted flag and
 * a copy of the object pointer, so the object's line is fetched at once),
 * and a lookup by UUID the entry's first 40 bytes (the UUID node, the UUID
 * and the object pointer). Names given by rename get blocks of their own.
 * What writers store to all the time (the registry's mutexes and count) is
 * kept off the lines readers read.
 *
 * RCU flavour. liburcu-bp ("bulletproof"): threads register themselves on
 * their first read-side section and unregister at exit, so any thread may
 * call a lookup without knowing about RCU. Its read side costs a little
 * more than the memb flavour's with explicit registration, and much less
 * than a lock; see docs/registry.md for the measured figures.
 *
 * Destruction. The registry is a moor object; its dispose (last unref: no
 * lookup can be running, lookups need a reference) unlinks every entry
 * through the same deferred path and then waits with rcu_barrier() until
 * every deferred release, earlier removals included, has run. If that last
 * unref happens in liburcu's call_rcu thread (an object disposed there
 * dropped it), waiting for that thread from itself would deadlock, so the
 * barrier is skipped: the deferred callbacks never touch the registry
 * itself and run soon after.
 *
 * ThreadSanitizer does not see the ordering that happens inside liburcu
 * (which is not instrumented): publication through cds_lfht_add, and the
 * grace period between a reader's last access and call_rcu's callback. Both
 * are modelled with explicit annotations on the node concerned (see
 * tsan_publish/tsan_consume below), in TSan builds only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <urcu-bp.h>
#include <urcu/rculfhash.h>

#include <moor/debug.h>
#include <moor/registry.h>

#include "debug-internal.h"
#include "lockdep-internal.h"
#include "object-internal.h"

#ifdef MOOR_TSAN
#include <sanitizer/tsan_interface.h>
/* What liburcu orders without TSan seeing it: a node initialised before
 * publication, or a reader's accesses before the grace period that ends in
 * the node's reclaim. @p is only used as a key; it is never dereferenced. */
#define tsan_publish(p) __tsan_release((void *)(p))
#define tsan_consume(p) __tsan_acquire((void *)(p))
#else
#define tsan_publish(p) ((void)(p))
#define tsan_consume(p) ((void)(p))
#endif

#define REGISTRY_MAGIC   0x72656769u /* "regi" */
#define REGISTRY_DEAD    0x64656164u /* "dead" */
#define TABLE_BUCKETS    64          /* initial and minimum bucket count */
#define TABLE_MIN_ALLOC  64          /* buckets allocated in the first chunk */
#define UUID_TEXT_LEN    36
#define NAME_QUOTE_BYTES 48 /* how much of a bad name an error message quotes */

#define CACHE_LINE 64

struct entry;

/* One name of an entry: the member's first name lives in the entry's own
 * block (see entry_new); a name given by rename is allocated on its own,
 * behind a struct rcu_head (see name_node_new). */
struct name_node {
    struct cds_lfht_node node; /* in by_name */
    struct entry *entry;       /* set before publication, then constant */
    moor_object *obj;          /* entry->obj, so a lookup fetches both at once */
    uint16_t len;
    atomic_bool trusted; /* current, and no rename is moving away from it */
    char name[];
};

/* One member, allocated right behind its first name node. */
struct entry {
    /* what lookups by UUID read, right behind the name node */
    struct cds_lfht_node uuid_node; /* in by_uuid */
    moor_uuid uuid;
    moor_object *obj; /* the registry's reference */
    /* read by lookups by name only when they meet an untrusted node */
    _Atomic(struct name_node *) name; /* the current name node */
    /* writers, the deferred release, *_locked lookups */
    struct name_node *first;       /* the start of the block */
    struct cds_lfht_node obj_node; /* in by_obj */
    atomic_int pins;               /* membership + *_locked lookups in flight */
    bool removing;                 /* under obj's mutex (and the registry's) */
    struct rcu_head rcu;
};

/* The fields every lookup reads (and the magic, next to the header
 * nobody writes on the lookup path) sit between two cache lines of
 * padding, away from the mutexes and counters writers store to, so that
 * a busy writer does not keep taking those lines out of the readers'
 * caches. (Objects are only 16-byte aligned: padding, not _Alignas.) */
struct moor_registry {
    moor_object parent;
    uint32_t magic; /* right after the header, where registry_valid() can
                     * read it in whatever lockable object it is given */
    char pad_head[CACHE_LINE];
    uint64_t seed; /* hash seed: precomputed colliding keys do not work */
    struct cds_lfht *by_uuid, *by_name;
    char pad_tail[CACHE_LINE];
    struct cds_lfht *by_obj;
    bool lock_ready;
    pthread_mutex_t lock; /* leaf: writers and collect snapshots */
    bool resize_lock_ready;
    pthread_mutex_t resize_lock; /* serialises fit_tables; never under lock */
    atomic_size_t buckets_want;  /* target bucket count, raised under lock */
    atomic_size_t buckets_have;  /* what the tables were resized to */
    atomic_size_t count;
};

struct name_key {
    const char *s;
    size_t len;
};

/* ---- small helpers --------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}

/* Bytes @s[0..@n), 1 <= @n <= 7, as one word (for short keys). */
static uint64_t load_short(const unsigned char *s, size_t n)
{
    uint32_t lo, hi;

    if (n < 4)
        return (uint64_t)s[0] << 16 | (uint64_t)s[n / 2] << 8 | s[n - 1];
    memcpy(&lo, s, 4);
    memcpy(&hi, s + n - 4, 4);
    return (uint64_t)hi << 32 | lo;
}

/* Fold one word into the running state. */
static uint64_t hash_step(uint64_t h, uint64_t w)
{
    h = (h ^ w) * UINT64_C(0x9e3779b97f4a7c15);
    return h ^ h >> 32;
}

/* Keys are hashed a word at a time (names byte by byte cost a multiply
 * per byte on the lookup's critical path), the last word overlapping the
 * one before it when the length is not a multiple of 8; the length and
 * the seed start the state, and mix64 spreads every bit to the low ones
 * the table indexes with. */
static unsigned long hash_bytes(uint64_t seed, const void *key, size_t len)
{
    const unsigned char *s = key, *end = s + len;
    uint64_t h = seed ^ (uint64_t)len * UINT64_C(0xc2b2ae3d27d4eb4f);
    uint64_t w;

    if (len < 8)
        return (unsigned long)mix64(hash_step(h, len ? load_short(s, len) : 0));
    for (; end - s > 8; s += 8) {
        memcpy(&w, s, 8);
        h = hash_step(h, w);
    }
    memcpy(&w, end - 8, 8);
    return (unsigned long)mix64(hash_step(h, w));
}

/* Whether @a and @b hold the same @len bytes. Not memcmp: for short
 * lengths glibc's loads a whole 32-byte vector from each side, which from
 * a name node's name reaches into the next cache line, one more miss per
 * lookup. This reads only the @len bytes. */
static bool bytes_equal(const void *a, const void *b, size_t len)
{
    const unsigned char *p = a, *q = b;
    uint64_t x, y;

    if (len < 8)
        return len == 0 || load_short(p, len) == load_short(q, len);
    for (; len > 8; p += 8, q += 8, len -= 8) {
        memcpy(&x, p, 8);
        memcpy(&y, q, 8);
        if (x != y)
            return false;
    }
    memcpy(&x, p + len - 8, 8);
    memcpy(&y, q + len - 8, 8);
    return x == y;
}

static unsigned long hash_uuid(uint64_t seed, const moor_uuid *u)
{
    return hash_bytes(seed, u->bytes, sizeof(u->bytes));
}

static unsigned long hash_name(uint64_t seed, const char *s, size_t len)
{
    return hash_bytes(seed, s, len);
}

static unsigned long hash_ptr(uint64_t seed, const void *p)
{
    return (unsigned long)mix64((uint64_t)(uintptr_t)p ^ seed);
}

/* Length of a valid UTF-8 sequence starting at @s (at most @left bytes), or
 * 0 if it is not one: overlong forms, surrogates and code points above
 * U+10FFFF are rejected. */
static size_t utf8_sequence(const unsigned char *s, size_t left)
{
    size_t n;
    uint32_t cp, min;

    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0)
        n = 2, cp = s[0] & 0x1f, min = 0x80;
    else if ((s[0] & 0xf0) == 0xe0)
        n = 3, cp = s[0] & 0x0f, min = 0x800;
    else if ((s[0] & 0xf8) == 0xf0)
        n = 4, cp = s[0] & 0x07, min = 0x10000;
    else
        return 0;
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* Offset of the first byte that is not valid UTF-8, or @len if none. */
static size_t utf8_invalid_at(const char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        size_t n = utf8_sequence((const unsigned char *)s + i, len - i);

        if (!n)
            return i;
        i += n;
    }
    return len;
}

/* The offset of the first ASCII control character (0x00-0x1f, 0x7f) in
 * the @len bytes of @s, or @len: such names would break every log line,
 * table and protocol that prints them. */
static size_t control_at(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f)
            return i;
    return len;
}

/* Check a name for add/rename; on success *@len is its length. */
static int check_name(const char *name, size_t *len, const char *op, moor_error *err)
{
    size_t n, bad;

    if (!name)
        return moor_error_set(err, -EINVAL, "%s: name is NULL", op);
    n = strnlen(name, MOOR_REGISTRY_NAME_MAX + 1);
    if (n == 0)
        return moor_error_set(err, -EINVAL, "%s: name is empty", op);
    if (n > MOOR_REGISTRY_NAME_MAX)
        return moor_error_set(err, -EINVAL,
                              "%s: name '%.*s...' is longer than the limit of %d bytes", op,
                              NAME_QUOTE_BYTES, name, MOOR_REGISTRY_NAME_MAX);
    bad = utf8_invalid_at(name, n);
    if (bad != n)
        return moor_error_set(err, -EINVAL,
                              "%s: name is not valid UTF-8 (byte 0x%02x at offset %zu)", op,
                              (unsigned char)name[bad], bad);
    bad = control_at(name, n);
    if (bad != n)
        return moor_error_set(err, -EINVAL,
                              "%s: name contains a control character (byte 0x%02x at offset %zu)",
                              op, (unsigned char)name[bad], bad);
    *len = n;
    return 0;
}

int moor_registry_barrier(moor_error *err)
{
    /* The releases run in the call_rcu thread: waiting for its queue from
     * inside it would never end. */
    if (get_thread_call_rcu_data())
        return moor_error_set(err, -EDEADLK,
                              "moor_registry_barrier: called from liburcu's call_rcu thread (a "
                              "dispose function), which runs the releases it would wait for");
    if (moor__debug_on(MOOR_DEBUG_LOCKS))
        moor__lockdep_blocking("moor_registry_barrier", NULL, false, __builtin_return_address(0));
    rcu_barrier();
    return 0;
}

/* MOOR_DEBUG=locks: every registry's mutex is one lock class. */
static const struct moor__lockdep_key reg_lock_key = {"moor_registry.lock"};

static void reg_lock(moor_registry *reg, const char *site)
{
    moor__lockdep_internal_lock(&reg->lock, &reg_lock_key, site, NULL);
    pthread_mutex_lock(&reg->lock);
}

static void reg_unlock(moor_registry *reg, const char *site)
{
    moor__lockdep_internal_unlock(&reg->lock, site, NULL);
    pthread_mutex_unlock(&reg->lock);
}

static bool registry_valid(const moor_registry *reg)
{
    return reg && reg->magic == REGISTRY_MAGIC;
}

static void *bad_lookup(const moor_registry *reg, const void *key, const char *op)
{
    if (!registry_valid(reg))
        moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, reg, "%s: %p is not a registry", op,
                          (const void *)reg);
    else if (!key)
        moor_debug_report(MOOR_MISUSE_BAD_ARGUMENT, reg, "%s: NULL key", op);
    return NULL;
}

static const char *class_of(const void *obj)
{
    return moor_class_name(moor_object_get_class(obj));
}

/* ---- the class --------------------------------------------------------- */

static void registry_dispose(void *obj);

static struct moor__lazy_class registry_klass =
    MOOR__LAZY_CLASS_INIT("moor_registry", sizeof(moor_registry), registry_dispose);

/* ---- entries and name nodes ------------------------------------------- */

/* Bytes from the start of a name node of @len bytes to what follows it. */
static size_t name_node_size(size_t len)
{
    size_t size = offsetof(struct name_node, name) + len + 1;

    return (size + _Alignof(struct entry) - 1) & ~(_Alignof(struct entry) - 1);
}

/* @trusted: a member's first node is current from its publication on; a
 * rename's new node becomes trusted only after the switch. */
static void name_node_init(struct name_node *n, const char *name, size_t len, bool trusted)
{
    cds_lfht_node_init(&n->node);
    n->entry = NULL;
    n->obj = NULL;
    n->len = (uint16_t)len;
    atomic_init(&n->trusted, trusted);
    memcpy(n->name, name, len);
    n->name[len] = '\0';
}

/* A name node for rename, behind the rcu_head that defers its free. */
static struct name_node *name_node_new(const char *name, size_t len)
{
    char *block = moor__malloc(sizeof(struct rcu_head) + name_node_size(len));
    struct name_node *n;

    if (!block)
        return NULL;
    n = (struct name_node *)(block + sizeof(struct rcu_head));
    name_node_init(n, name, len, false);
    return n;
}

static struct rcu_head *name_node_head(struct name_node *n)
{
    return (struct rcu_head *)((char *)n - sizeof(struct rcu_head));
}

/*
 * A new entry and its first name node in one block: the name node, then
 * the entry. A lookup by name reads the node, a lookup by UUID the 40
 * bytes just behind it: for short names, one or two adjacent cache lines
 * each, wherever the allocator put the block, and adjacent lines are
 * cheap to fetch together (one page, one TLB entry, and the CPU's
 * adjacent-line prefetch). A single block aligned to a cache line, with
 * each part in a line of its own, models as many misses as the bare
 * table but measured no faster and, alone, grew the heap by 291 bytes
 * per member against 164 (posix_memalign's leftovers).
 * Tried and measured worse at 100k members: each part cache-line aligned
 * in its own block (one line per lookup, but 70 % more memory and parts
 * farther apart; see docs/registry.md).
 */
static struct entry *entry_new(const moor_uuid *uuid, const char *name, size_t len)
{
    size_t off = name_node_size(len);
    char *block = moor__calloc(1, off + sizeof(struct entry));
    struct name_node *n;
    struct entry *e;

    if (!block)
        return NULL;
    n = (struct name_node *)block;
    e = (struct entry *)(block + off);
    name_node_init(n, name, len, true);
    n->entry = e;
    cds_lfht_node_init(&e->uuid_node);
    cds_lfht_node_init(&e->obj_node);
    e->uuid = *uuid;
    e->first = n;
    atomic_init(&e->name, n);
    atomic_init(&e->pins, 1); /* membership */
    return e;
}

/* Drop one pin; the last frees the entry and drops the registry's
 * reference to the object. */
static void entry_put(struct entry *e)
{
    moor_object *obj;

    /* acq_rel: release this holder's accesses to @e; the last one acquires
     * everyone's before freeing. */
    if (atomic_fetch_sub_explicit(&e->pins, 1, memory_order_acq_rel) != 1)
        return;
    obj = e->obj;
    moor__free(e->first);
    moor_unref(obj);
}

static void name_node_reclaim(struct rcu_head *head)
{
    tsan_consume((char *)head + sizeof(*head)); /* the node, as readers publish it */
    moor__free(head);
}

static void entry_reclaim(struct rcu_head *head)
{
    struct entry *e = caa_container_of(head, struct entry, rcu);
    struct name_node *n;

    tsan_consume(e);
    /* relaxed: no rename after removal; the grace period orders the rest. */
    n = atomic_load_explicit(&e->name, memory_order_relaxed);
    tsan_consume(n);
    if (n != e->first)
        moor__free(name_node_head(n)); /* the first goes with the entry */
    entry_put(e);                      /* the membership pin */
}

/* Defer the release of an unlinked entry past a grace period. */
static void entry_defer(struct entry *e)
{
    tsan_publish(e);
    call_rcu(&e->rcu, entry_reclaim);
}

/* ---- table access (RCU read side held) --------------------------------- */

static int match_uuid(struct cds_lfht_node *node, const void *key)
{
    struct entry *e = caa_container_of(node, struct entry, uuid_node);

    tsan_consume(e);
    return memcmp(e->uuid.bytes, key, sizeof(e->uuid.bytes)) == 0;
}

static int match_name(struct cds_lfht_node *node, const void *key)
{
    struct name_node *n = caa_container_of(node, struct name_node, node);
    const struct name_key *k = key;

    tsan_consume(n);
    return n->len == k->len && bytes_equal(n->name, k->s, k->len);
}

static int match_obj(struct cds_lfht_node *node, const void *key)
{
    return caa_container_of(node, struct entry, obj_node)->obj == key;
}

static struct entry *lookup_uuid_rcu(moor_registry *reg, const moor_uuid *uuid)
{
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;

    cds_lfht_lookup(reg->by_uuid, hash_uuid(reg->seed, uuid), match_uuid, uuid, &it);
    node = cds_lfht_iter_get_node(&it);
    return node ? caa_container_of(node, struct entry, uuid_node) : NULL;
}

/* The entry whose current name is @name (*@via: the node that matched). */
static struct entry *lookup_name_rcu(moor_registry *reg, const char *name, size_t len,
                                     struct name_node **via)
{
    struct name_key key = {name, len};
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;
    struct name_node *n;

    cds_lfht_lookup(reg->by_name, hash_name(reg->seed, name, len), match_name, &key, &it);
    node = cds_lfht_iter_get_node(&it);
    if (!node)
        return NULL;
    n = caa_container_of(node, struct name_node, node);
    *via = n;
    /* acquire: pairs with the release store after rename's switch; a
     * trusted node is current (models/registry.pml). */
    if (atomic_load_explicit(&n->trusted, memory_order_acquire))
        return n->entry;
    /* acquire: pairs with the release store of rename; a node that is no
     * longer current is an old name, which no longer resolves. */
    if (atomic_load_explicit(&n->entry->name, memory_order_acquire) != n)
        return NULL;
    return n->entry;
}

static struct entry *lookup_obj_rcu(moor_registry *reg, const void *obj)
{
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;

    cds_lfht_lookup(reg->by_obj, hash_ptr(reg->seed, obj), match_obj, obj, &it);
    node = cds_lfht_iter_get_node(&it);
    return node ? caa_container_of(node, struct entry, obj_node) : NULL;
}

/* Under reg->lock and the read side; obj's mutex held (or no lookup can
 * reach the registry any more). */
static void unlink_entry(moor_registry *reg, struct entry *e)
{
    /* relaxed: under reg->lock, which serialises every writer. */
    struct name_node *n = atomic_load_explicit(&e->name, memory_order_relaxed);

    e->removing = true;
    cds_lfht_del(reg->by_uuid, &e->uuid_node);
    cds_lfht_del(reg->by_name, &n->node);
    cds_lfht_del(reg->by_obj, &e->obj_node);
    /* relaxed: a statistic read without ordering; writers hold reg->lock. */
    atomic_fetch_sub_explicit(&reg->count, 1, memory_order_relaxed);
}

/* ---- life cycle ----------------------------------------------------------- */

static void drain(moor_registry *reg)
{
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;

    /* Not cds_lfht_for_each_entry: it computes container_of(NULL) at the
     * end of the table, which is undefined behaviour. */
    rcu_read_lock();
    cds_lfht_for_each(reg->by_obj, &it, node)
    {
        struct entry *e = caa_container_of(node, struct entry, obj_node);

        unlink_entry(reg, e);
        entry_defer(e);
    }
    rcu_read_unlock();
}

static void destroy_table(struct cds_lfht *ht)
{
    if (ht && cds_lfht_destroy(ht, NULL) != 0)
        moor_debug_report(MOOR_MISUSE_LEAK, ht, "registry: hash table %p not empty at destroy",
                          (void *)ht);
}

static void registry_dispose(void *obj)
{
    moor_registry *reg = obj;

    if (reg->by_uuid && reg->by_name && reg->by_obj)
        drain(reg);
    /* Waiting for the call_rcu thread from inside it would never end. */
    if (!get_thread_call_rcu_data())
        rcu_barrier();
    destroy_table(reg->by_uuid);
    destroy_table(reg->by_name);
    destroy_table(reg->by_obj);
    if (reg->lock_ready)
        pthread_mutex_destroy(&reg->lock);
    if (reg->resize_lock_ready)
        pthread_mutex_destroy(&reg->resize_lock);
    reg->magic = REGISTRY_DEAD;
}

static uint64_t random_seed(const void *salt)
{
    uint64_t seed;
    struct timespec ts;

    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == (ssize_t)sizeof(seed))
        return seed;
    /* No entropy yet (early boot): a per-process value still defeats
     * precomputed collisions. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return mix64((uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 32 ^ (uintptr_t)salt);
}

/* No CDS_LFHT_AUTO_RESIZE (nor the CDS_LFHT_ACCOUNTING it feeds on): the
 * registry sizes its tables itself; see "Table sizes" at the top. */
static struct cds_lfht *new_table(void)
{
    return cds_lfht_new(TABLE_BUCKETS, TABLE_MIN_ALLOC, 0, 0, NULL);
}

/* Under reg->lock, after the count changed: raise the target bucket count
 * if the count passed it. Returns whether the tables need a resize. */
static bool grow_target_locked(moor_registry *reg)
{
    /* relaxed: both under reg->lock, where they change. */
    size_t count = atomic_load_explicit(&reg->count, memory_order_relaxed);
    size_t want = atomic_load_explicit(&reg->buckets_want, memory_order_relaxed);

    if (count <= want)
        return false;
    while (want < count && want <= SIZE_MAX / 2)
        want *= 2;
    /* relaxed: fit_tables() reads it under resize_lock; see there. */
    atomic_store_explicit(&reg->buckets_want, want, memory_order_relaxed);
    return true;
}

/* Outside reg->lock and RCU: resize the tables to the latest target. May
 * wait for another thread's resize; never for a grace period (a grow
 * does not need one). */
static void fit_tables(moor_registry *reg)
{
    size_t want;

    if (rcu_read_ongoing())
        return; /* the caller's own read-side section: a later add fits */
    pthread_mutex_lock(&reg->resize_lock);
    /* relaxed: the thread that last raised the target calls this after
     * its store; resize_lock orders the callers, so each one reads a
     * target at least as recent as the one applied before it, and the
     * last target raised is applied last. */
    want = atomic_load_explicit(&reg->buckets_want, memory_order_relaxed);
    /* relaxed: written only here, under resize_lock. */
    if (want > atomic_load_explicit(&reg->buckets_have, memory_order_relaxed)) {
        cds_lfht_resize(reg->by_uuid, want);
        cds_lfht_resize(reg->by_name, want);
        cds_lfht_resize(reg->by_obj, want);
        /* relaxed: a hint for the unlocked check in add; see above. */
        atomic_store_explicit(&reg->buckets_have, want, memory_order_relaxed);
    }
    pthread_mutex_unlock(&reg->resize_lock);
}

moor_registry *moor_registry_new(moor_error *err)
{
    const moor_class *klass = moor__lazy_class_get(&registry_klass, err);
    moor_registry *reg;

    if (!klass)
        return NULL;
    reg = moor_object_new(klass);
    if (!reg) {
        moor_error_set(err, -ENOMEM, "moor_registry_new: out of memory");
        return NULL;
    }
    reg->lock_ready = pthread_mutex_init(&reg->lock, NULL) == 0;
    reg->resize_lock_ready = pthread_mutex_init(&reg->resize_lock, NULL) == 0;
    reg->by_uuid = new_table();
    reg->by_name = new_table();
    reg->by_obj = new_table();
    reg->seed = random_seed(reg);
    atomic_init(&reg->count, 0);
    atomic_init(&reg->buckets_want, TABLE_BUCKETS);
    atomic_init(&reg->buckets_have, TABLE_BUCKETS);
    if (!reg->lock_ready || !reg->resize_lock_ready || !reg->by_uuid || !reg->by_name ||
        !reg->by_obj) {
        moor_unref(reg);
        moor_error_set(err, -ENOMEM, "moor_registry_new: out of memory for the hash tables");
        return NULL;
    }
    reg->magic = REGISTRY_MAGIC;
    return reg;
}

/* ---- add ------------------------------------------------------------------ */

static int check_member_args(moor_registry *reg, void *obj, const char *op, moor_error *err)
{
    if (!registry_valid(reg))
        return moor_error_set(err, -EINVAL, "%s: %p is not a registry", op, (void *)reg);
    if (!moor_is_a(obj, moor_lockable_class()))
        return moor_error_set(err, -EINVAL, "%s: %p is not a lockable moor object", op, obj);
    return 0;
}

/* Under reg->lock and the read side: refuse if a key or @obj is taken. */
static int check_free_keys(moor_registry *reg, void *obj, const struct entry *e,
                           const struct name_node *n, moor_error *err)
{
    char us[MOOR_UUID_STRING_SIZE], them[MOOR_UUID_STRING_SIZE];
    struct name_node *via;
    struct entry *old;

    moor_uuid_format(&e->uuid, us);
    old = lookup_obj_rcu(reg, obj);
    if (old)
        return moor_error_set(err, -EEXIST,
                              "moor_registry_add(uuid %s, name '%s'): object %p (class '%s') is "
                              "already registered, as '%s'",
                              us, n->name, obj, class_of(obj),
                              atomic_load_explicit(&old->name, memory_order_relaxed)->name);
    old = lookup_uuid_rcu(reg, &e->uuid);
    if (old)
        return moor_error_set(err, -EEXIST,
                              "moor_registry_add(uuid %s, name '%s'): uuid %s is already used by "
                              "object %p (class '%s', name '%s')",
                              us, n->name, us, (void *)old->obj, class_of(old->obj),
                              atomic_load_explicit(&old->name, memory_order_relaxed)->name);
    old = lookup_name_rcu(reg, n->name, n->len, &via);
    if (old)
        return moor_error_set(err, -EEXIST,
                              "moor_registry_add(uuid %s, name '%s'): name '%s' is already used "
                              "by object %p (class '%s', uuid %s)",
                              us, n->name, n->name, (void *)old->obj, class_of(old->obj),
                              moor_uuid_format(&old->uuid, them));
    return 0;
}

/* Under reg->lock and the read side. Returns 1 if the tables should now
 * grow (see fit_tables), 0, or a negative errno. (relaxed loads of entry
 * names in the messages above: under reg->lock, which every writer of them
 * holds.) */
static int add_locked(moor_registry *reg, void *obj, struct entry *e, moor_error *err)
{
    struct name_node *n = e->first;
    int rc = check_free_keys(reg, obj, e, n, err);

    if (rc < 0)
        return rc;
    e->obj = moor_ref(obj);
    n->obj = e->obj;
    tsan_publish(n);
    tsan_publish(e);
    cds_lfht_add(reg->by_obj, hash_ptr(reg->seed, obj), &e->obj_node);
    cds_lfht_add(reg->by_name, hash_name(reg->seed, n->name, n->len), &n->node);
    cds_lfht_add(reg->by_uuid, hash_uuid(reg->seed, &e->uuid), &e->uuid_node);
    /* relaxed: a statistic; see moor_registry_count(). */
    atomic_fetch_add_explicit(&reg->count, 1, memory_order_relaxed);
    return grow_target_locked(reg) ? 1 : 0;
}

int moor_registry_add(moor_registry *reg, void *obj, const moor_uuid *uuid, const char *name,
                      moor_error *err)
{
    struct entry *e;
    size_t len;
    int rc;

    rc = check_member_args(reg, obj, "moor_registry_add", err);
    if (rc < 0)
        return rc;
    if (!uuid)
        return moor_error_set(err, -EINVAL, "moor_registry_add: uuid is NULL");
    rc = check_name(name, &len, "moor_registry_add", err);
    if (rc < 0)
        return rc;
    e = entry_new(uuid, name, len);
    if (!e)
        return moor_error_set(err, -ENOMEM, "moor_registry_add(name '%s'): out of memory", name);
    reg_lock(reg, MOOR__SITE);
    rcu_read_lock();
    rc = add_locked(reg, obj, e, err);
    rcu_read_unlock();
    reg_unlock(reg, MOOR__SITE);
    if (rc < 0) {
        moor__free(e->first);
        return rc;
    }
    /* relaxed: hints; fit_tables() rereads under resize_lock. A resize
     * skipped earlier (inside a caller's read-side section) is retried. */
    if (rc > 0 || atomic_load_explicit(&reg->buckets_have, memory_order_relaxed) !=
                      atomic_load_explicit(&reg->buckets_want, memory_order_relaxed))
        fit_tables(reg);
    return 0;
}

/* ---- remove --------------------------------------------------------------- */

int moor_registry_remove(moor_registry *reg, void *obj, moor_error *err)
{
    int rc = check_member_args(reg, obj, "moor_registry_remove", err);
    bool held;
    struct entry *e;

    if (rc < 0)
        return rc;
    /* The removing flag is written under the object's mutex, which is what
     * the *_locked lookups read it under. */
    held = moor_lock_held(obj);
    if (!held)
        moor_lock(obj);
    reg_lock(reg, MOOR__SITE);
    rcu_read_lock();
    e = lookup_obj_rcu(reg, obj);
    if (e)
        unlink_entry(reg, e);
    rcu_read_unlock();
    reg_unlock(reg, MOOR__SITE);
    if (!held)
        moor_unlock(obj);
    if (!e)
        return moor_error_set(err, -ENOENT,
                              "moor_registry_remove: object %p (class '%s') is not in registry %p",
                              obj, class_of(obj), (void *)reg);
    entry_defer(e);
    return 0;
}

/* ---- rename --------------------------------------------------------------- */

/* Under reg->lock and the read side. Returns 1 if @n is now the name
 * (*@old: the node it replaced, to reclaim after a grace period, or NULL
 * when that was the entry's first node, freed with the entry), 0 if the
 * name did not change (@n unused), or a negative errno (@n unused). */
static int rename_locked(moor_registry *reg, void *obj, struct name_node *n, struct name_node **old,
                         moor_error *err)
{
    struct entry *e = lookup_obj_rcu(reg, obj);
    struct name_node *cur, *via;
    struct entry *clash;

    if (!e)
        return moor_error_set(err, -ENOENT,
                              "moor_registry_rename(to '%s'): object %p (class '%s') is not in "
                              "registry %p",
                              n->name, obj, class_of(obj), (void *)reg);
    /* relaxed: under reg->lock, which every writer of e->name holds. */
    cur = atomic_load_explicit(&e->name, memory_order_relaxed);
    if (cur->len == n->len && memcmp(cur->name, n->name, n->len) == 0)
        return 0;
    clash = lookup_name_rcu(reg, n->name, n->len, &via);
    if (clash) {
        char them[MOOR_UUID_STRING_SIZE];

        return moor_error_set(err, -EEXIST,
                              "moor_registry_rename('%s' to '%s'): name '%s' is already used by "
                              "object %p (class '%s', uuid %s)",
                              cur->name, n->name, n->name, (void *)clash->obj, class_of(clash->obj),
                              moor_uuid_format(&clash->uuid, them));
    }
    n->entry = e;
    n->obj = e->obj;
    tsan_publish(n);
    cds_lfht_add(reg->by_name, hash_name(reg->seed, n->name, n->len), &n->node);
    /* relaxed: the release store of the switch below orders it before the
     * switch, so whoever has seen the switch sees the old node untrusted. */
    atomic_store_explicit(&cur->trusted, false, memory_order_relaxed);
    /* release: the switch-over instant; pairs with the acquire load in
     * lookup_name_rcu(). */
    atomic_store_explicit(&e->name, n, memory_order_release);
    /* release: a lookup that trusts the new node has seen the switch (and
     * the old node's flag cleared before it). */
    atomic_store_explicit(&n->trusted, true, memory_order_release);
    cds_lfht_del(reg->by_name, &cur->node);
    *old = cur == e->first ? NULL : cur;
    return 1;
}

int moor_registry_rename(moor_registry *reg, void *obj, const char *new_name, moor_error *err)
{
    struct name_node *n, *old = NULL;
    size_t len;
    int rc;

    rc = check_member_args(reg, obj, "moor_registry_rename", err);
    if (rc < 0)
        return rc;
    rc = check_name(new_name, &len, "moor_registry_rename", err);
    if (rc < 0)
        return rc;
    n = name_node_new(new_name, len);
    if (!n)
        return moor_error_set(err, -ENOMEM, "moor_registry_rename(to '%s'): out of memory",
                              new_name);
    reg_lock(reg, MOOR__SITE);
    rcu_read_lock();
    rc = rename_locked(reg, obj, n, &old, err);
    rcu_read_unlock();
    reg_unlock(reg, MOOR__SITE);
    if (rc <= 0) {
        moor__free(name_node_head(n)); /* never published */
        return rc;
    }
    if (old) {
        tsan_publish(old);
        call_rcu(name_node_head(old), name_node_reclaim);
    }
    return 0;
}

/* ---- lookups ---------------------------------------------------------------- */

/* Under the read side, @obj reached through a member's entry or name
 * node (or NULL): a reference to it, or NULL. */
static inline __attribute__((always_inline)) moor_object *ref_rcu(moor_object *obj)
{
    /* Inlined into the public lookup: its caller takes the reference. */
    if (!obj || !moor__object_ref_not_zero(obj, __builtin_return_address(0)))
        return NULL;
    return obj;
}

void *moor_registry_find_uuid(moor_registry *reg, const moor_uuid *uuid)
{
    struct entry *e;
    moor_object *obj;

    if (MOOR_UNLIKELY(!registry_valid(reg) || !uuid))
        return bad_lookup(reg, uuid, "moor_registry_find_uuid");
    rcu_read_lock();
    e = lookup_uuid_rcu(reg, uuid);
    obj = ref_rcu(e ? e->obj : NULL);
    tsan_publish(e); /* this reader's last access to @e */
    rcu_read_unlock();
    return obj;
}

void *moor_registry_find_name(moor_registry *reg, const char *name)
{
    struct name_node *via = NULL;
    struct entry *e;
    moor_object *obj;
    size_t len;

    if (MOOR_UNLIKELY(!registry_valid(reg) || !name))
        return bad_lookup(reg, name, "moor_registry_find_name");
    len = strnlen(name, MOOR_REGISTRY_NAME_MAX + 1);
    if (len > MOOR_REGISTRY_NAME_MAX)
        return NULL;
    rcu_read_lock();
    e = lookup_name_rcu(reg, name, len, &via);
    /* The object through the name node rather than the entry: its address
     * does not wait for the entry's line, so both misses overlap. */
    obj = ref_rcu(e ? via->obj : NULL);
    tsan_publish(via);
    tsan_publish(e);
    rcu_read_unlock();
    return obj;
}

/* Under the read side: reference @e's object and pin @e, or return false. */
static inline __attribute__((always_inline)) bool pin_rcu(struct entry *e)
{
    if (!e || !ref_rcu(e->obj))
        return false;
    /* relaxed: the membership pin keeps the count above zero until after
     * this read-side section; entry_put() orders the release. */
    atomic_fetch_add_explicit(&e->pins, 1, memory_order_relaxed);
    return true;
}

/* Outside RCU, with @e pinned and its object referenced: lock it and
 * return it, or NULL if it was removed in between. */
static void *lock_pinned(struct entry *e)
{
    moor_object *obj = e->obj;
    bool removed;

    moor_lock(obj);
    removed = e->removing; /* written under the mutex we now hold */
    if (removed)
        moor_unlock(obj);
    entry_put(e);
    if (removed) {
        moor_unref(obj);
        return NULL;
    }
    return obj;
}

void *moor_registry_find_uuid_locked(moor_registry *reg, const moor_uuid *uuid)
{
    struct entry *e;
    bool pinned;

    if (MOOR_UNLIKELY(!registry_valid(reg) || !uuid))
        return bad_lookup(reg, uuid, "moor_registry_find_uuid_locked");
    rcu_read_lock();
    e = lookup_uuid_rcu(reg, uuid);
    pinned = pin_rcu(e);
    tsan_publish(e);
    rcu_read_unlock();
    return pinned ? lock_pinned(e) : NULL;
}

void *moor_registry_find_name_locked(moor_registry *reg, const char *name)
{
    struct name_node *via = NULL;
    struct entry *e;
    bool pinned;
    size_t len;

    if (MOOR_UNLIKELY(!registry_valid(reg) || !name))
        return bad_lookup(reg, name, "moor_registry_find_name_locked");
    len = strnlen(name, MOOR_REGISTRY_NAME_MAX + 1);
    if (len > MOOR_REGISTRY_NAME_MAX)
        return NULL;
    rcu_read_lock();
    e = lookup_name_rcu(reg, name, len, &via);
    pinned = pin_rcu(e);
    tsan_publish(via);
    tsan_publish(e);
    rcu_read_unlock();
    return pinned ? lock_pinned(e) : NULL;
}

/* ---- count and collect ---------------------------------------------------- */

size_t moor_registry_count(moor_registry *reg)
{
    if (MOOR_UNLIKELY(!registry_valid(reg))) {
        bad_lookup(reg, reg, "moor_registry_count");
        return 0;
    }
    /* relaxed: one counter, changed only under reg->lock; any value read
     * was the exact count at some instant. */
    return atomic_load_explicit(&reg->count, memory_order_relaxed);
}

/* Under reg->lock: references to every member, in @objs (room for @cap). */
static size_t snapshot_locked(moor_registry *reg, void **objs, size_t cap)
{
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;
    size_t n = 0;

    rcu_read_lock();
    cds_lfht_for_each(reg->by_obj, &it, node)
    {
        struct entry *e = caa_container_of(node, struct entry, obj_node);

        if (n == cap)
            break;                    /* cannot happen: cap is the count under the same lock */
        objs[n++] = moor_ref(e->obj); /* the registry's reference keeps it alive */
    }
    rcu_read_unlock();
    objs[n] = NULL;
    return n;
}

/* A NULL-terminated array of references to every member, at one instant. */
static int snapshot(moor_registry *reg, void ***out, size_t *count, moor_error *err)
{
    for (;;) {
        size_t cap = moor_registry_count(reg) + 16; /* room for a few adds */
        void **objs;

        if (cap > (size_t)INT_MAX)
            return moor_error_set(err, -EOVERFLOW,
                                  "moor_registry_collect: %zu objects do not fit an int", cap);
        objs = moor__malloc((cap + 1) * sizeof(*objs));
        if (!objs)
            return moor_error_set(err, -ENOMEM,
                                  "moor_registry_collect: out of memory for %zu "
                                  "references",
                                  cap);
        reg_lock(reg, MOOR__SITE);
        /* relaxed: under reg->lock, where the count changes. */
        if (atomic_load_explicit(&reg->count, memory_order_relaxed) <= cap) {
            *count = snapshot_locked(reg, objs, cap);
            reg_unlock(reg, MOOR__SITE);
            *out = objs;
            return 0;
        }
        reg_unlock(reg, MOOR__SITE);
        moor__free(objs); /* grew meanwhile: size again */
    }
}

/* Run @filter over @objs, dropping and squeezing out what it refuses. */
static size_t apply_filter(void **objs, size_t n, moor_registry_filter_fn filter, void *opaque)
{
    size_t kept = 0;

    for (size_t i = 0; i < n; i++) {
        if (!filter || filter(objs[i], opaque))
            objs[kept++] = objs[i];
        else
            moor_unref(objs[i]);
    }
    objs[kept] = NULL;
    return kept;
}

int moor_registry_collect(moor_registry *reg, moor_registry_filter_fn filter, void *opaque,
                          void ***out, moor_error *err)
{
    void **objs = NULL;
    size_t n = 0;
    int rc;

    if (!registry_valid(reg))
        return moor_error_set(err, -EINVAL, "moor_registry_collect: %p is not a registry",
                              (void *)reg);
    if (!out)
        return moor_error_set(err, -EINVAL, "moor_registry_collect: out is NULL");
    rc = snapshot(reg, &objs, &n, err);
    if (rc < 0)
        return rc;
    n = apply_filter(objs, n, filter, opaque);
    *out = objs;
    return (int)n;
}

void moor_registry_array_free(void **objs)
{
    if (!objs)
        return;
    for (void **p = objs; *p; p++)
        moor_unref(*p);
    moor__free(objs);
}

/* ---- UUIDs ------------------------------------------------------------------ */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool dash_at(size_t i)
{
    return i == 8 || i == 13 || i == 18 || i == 23;
}

/* Offset of the first character out of place, or UUID_TEXT_LEN if none. */
static size_t uuid_text_bad_at(const char *text)
{
    for (size_t i = 0; i < UUID_TEXT_LEN; i++) {
        if (text[i] == '\0' || (dash_at(i) ? text[i] != '-' : hex_value(text[i]) < 0))
            return i;
    }
    return text[UUID_TEXT_LEN] == '\0' ? UUID_TEXT_LEN : UUID_TEXT_LEN + 1;
}

int moor_uuid_parse(const char *text, moor_uuid *out, moor_error *err)
{
    moor_uuid u;
    size_t bad, b = 0;

    if (!text || !out)
        return moor_error_set(err, -EINVAL, "moor_uuid_parse: %s is NULL", text ? "out" : "text");
    bad = uuid_text_bad_at(text);
    if (bad > UUID_TEXT_LEN)
        return moor_error_set(err, -EINVAL,
                              "moor_uuid_parse('%.40s'): longer than the %d characters of a UUID",
                              text, UUID_TEXT_LEN);
    if (bad < UUID_TEXT_LEN)
        return moor_error_set(err, -EINVAL,
                              "moor_uuid_parse('%.40s'): %s at offset %zu, expected %s", text,
                              text[bad] ? "unexpected character" : "text ends", bad,
                              dash_at(bad) ? "'-'" : "a hex digit");
    for (size_t i = 0; i < UUID_TEXT_LEN; i += dash_at(i) ? 1 : 2) {
        if (dash_at(i))
            continue;
        u.bytes[b++] = (uint8_t)(hex_value(text[i]) << 4 | hex_value(text[i + 1]));
    }
    *out = u;
    return 0;
}

char *moor_uuid_format(const moor_uuid *uuid, char out[MOOR_UUID_STRING_SIZE])
{
    static const char digits[] = "0123456789abcdef";
    size_t o = 0;

    if (!uuid) {
        snprintf(out, MOOR_UUID_STRING_SIZE, "(null)");
        return out;
    }
    for (size_t i = 0; i < sizeof(uuid->bytes); i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = digits[uuid->bytes[i] >> 4];
        out[o++] = digits[uuid->bytes[i] & 0xf];
    }
    out[o] = '\0';
    return out;
}

int moor_uuid_generate(moor_uuid *out, moor_error *err)
{
    moor_uuid u;
    size_t got = 0;

    if (!out)
        return moor_error_set(err, -EINVAL, "moor_uuid_generate: out is NULL");
    while (got < sizeof(u.bytes)) {
        ssize_t n = getrandom(u.bytes + got, sizeof(u.bytes) - got, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;

            return moor_error_set(err, -e, "moor_uuid_generate: getrandom: %s", strerror(e));
        }
        got += (size_t)n;
    }
    u.bytes[6] = (uint8_t)((u.bytes[6] & 0x0f) | 0x40); /* version 4 */
    u.bytes[8] = (uint8_t)((u.bytes[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    *out = u;
    return 0;
}

bool moor_uuid_equal(const moor_uuid *a, const moor_uuid *b)
{
    return a && b && memcmp(a->bytes, b->bytes, sizeof(a->bytes)) == 0;
}
