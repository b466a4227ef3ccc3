/* SPDX-License-Identifier: MIT */
/*
 * bench/bench-registry.c - looking an object up and dropping the reference.
 *
 * Every case does, per iteration, one lookup of a random key that is
 * present (a miss is a bench failure) and the unref that ends it, on a
 * world of 1k or 100k lockable objects. The keys looked up come from the
 * bench's own arrays, as a request's key would come from a message: every
 * table compares them against its own copy.
 *
 *   lfht_{uuid,name}_N    the floor: a bare liburcu cds_lfht lookup (same
 *                         hash functions, RCU flavour and table sizing as
 *                         the registry) inside rcu_read_lock/unlock,
 *                         moor_ref on the object found, moor_unref after.
 *                         Its nodes are the best a bare table can have:
 *                         one cache line each, key inside, in one aligned
 *                         array (the registry allocates per member).
 *   reg_{uuid,name}_N     moor_registry_find_uuid/find_name + moor_unref.
 *                         Baseline: lfht_*; the target is a ratio <= 1.25.
 *   ghash_{uuid,name}_N   libvirt's design: a GHashTable under a GRWLock,
 *                         taken for reading around lookup + moor_ref, then
 *                         moor_unref. The table owns copies of its keys
 *                         (g_memdup2/g_strdup), as libvirt's hash table
 *                         does. Baseline: reg_*, so the ratio is the
 *                         registry's speed-up (target >= 2 at 2 threads).
 *   lfht_uuid_1k_noref    the floor's lookup alone, no reference taken:
 *                         how much of lfht_uuid_1k is the object's counter,
 *                         alone and when threads share the objects.
 *   {reg,ghash}_uuid_1k_half
 *                         as reg_uuid_1k and ghash_uuid_1k, but each loop
 *                         looks up one half of the keys (the loops of a
 *                         run take the halves in turn), so at 2 threads
 *                         no object's counter is shared: what is left
 *                         shared is the table (the GRWLock's counter, or
 *                         nothing written for the registry). Baselines:
 *                         reg_uuid_1k, and reg_uuid_1k_half for ghash.
 *   reg_{uuid,name}_N_writer
 *                         reg_* while a writer thread adds and removes
 *                         other objects in the same registry as fast as
 *                         it can with a WRITER_PAUSE_NS nanosleep between
 *                         two add + remove pairs (several thousand pairs
 *                         per second: a stress rate, not a daemon's).
 *   reg_uuid_N_writer{100,1000}
 *                         the same with the writer paced at 100 or 1000
 *                         pairs per second (absolute deadlines), the
 *                         rates of a busy daemon. For every writer case
 *                         the rate reached and the CPU time the writer
 *                         thread used are printed to stderr, so the
 *                         readers' cost can be read as a function of the
 *                         write rate. Baseline: reg_*; the target, a
 *                         loss under 20 % of the readers' throughput,
 *                         is a ratio under 1.25.
 *                         The writer runs only during the case's own
 *                         runs (the harness alternates them with the
 *                         baseline's, on the same world): begin_run starts
 *                         it and returns once its pool of objects is
 *                         built; end_run stops and joins it and waits
 *                         (rcu_barrier) for the releases it deferred. The
 *                         stderr report sums over those runs, calibration
 *                         and warm-up included.
 *
 * Table sizing. The registry sizes its tables itself: created with 64
 * buckets, no CDS_LFHT_AUTO_RESIZE, doubled with cds_lfht_resize() by the
 * add that makes the count exceed the bucket count (src/registry.c, "Table
 * sizes"). The bare lfht_* tables get the same: same creation parameters,
 * and world_bare() doubles them at the same counts, so both have the same
 * bucket count (1024 at 1k, 131072 at 100k) and the ratio measures the
 * registry's own cost, not a difference in chain lengths. (With liburcu's
 * lazy automatic resizing both stayed under-sized for seconds after the
 * build, which made the 100k figures meaningless.)
 *
 * Every case is BENCH_CONTENDED: at N threads all look up in the same
 * table, random keys over the same objects, so the objects' counters are
 * shared between the threads (as in a daemon whose workers serve requests
 * about the same domains). The worlds are built once per size and kept
 * for the whole run (building 100k objects for every figure would
 * dominate the run time).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <urcu-bp.h>
#include <urcu/rculfhash.h>

#include <moor/object.h>
#include <moor/registry.h>

#ifdef MOOR_BENCH_HAVE_GLIB
#include <glib.h>
#endif

#include "bench.h"

#define NAME_SIZE       24
#define WRITER_PAUSE_NS 20000 /* between two add+remove pairs of the writer */
#define WRITER_POOL     64    /* objects the writer cycles through */
#define TABLE_BUCKETS   64    /* as in src/registry.c */

/* The bare tables' nodes: one per key, the key inside, one cache line
 * each, in two aligned arrays: the best layout a bare table can have. */
struct bare_uuid {
    _Alignas(64) struct cds_lfht_node node;
    moor_uuid uuid;
    void *obj;
};

struct bare_name {
    _Alignas(64) struct cds_lfht_node node;
    void *obj;
    size_t len;
    char name[NAME_SIZE];
};

struct name_key {
    const char *s;
    size_t len;
};

struct world {
    size_t n;
    void **objs;
    moor_uuid *uuids;
    char (*names)[NAME_SIZE];
    moor_registry *reg;
    struct cds_lfht *lfht_uuid, *lfht_name;
    struct bare_uuid *bare_uuid;
    struct bare_name *bare_name;
    void **spacers; /* see world_new() */
#ifdef MOOR_BENCH_HAVE_GLIB
    GRWLock lock;
    GHashTable *by_uuid, *by_name;
#endif
    atomic_uint turn; /* see key_range() */
};

/* A *_writer case's state: the world its readers use and the writer,
 * which runs only during the case's own runs (writer_begin_run). */
struct writer {
    struct world *w;
    long period_ns; /* 0: as fast as WRITER_PAUSE_NS allows */
    pthread_t thread;
    pthread_barrier_t ready; /* the writer has built its pool */
    atomic_bool stop;
    unsigned long pairs; /* this run's; written by the writer, read after the join */
    double cpu_ns;       /* the writer's CPU time while writing; the same */
    double t0;           /* when this run's writing began */
    /* summed over every run, for the report at teardown (main thread) */
    unsigned runs;
    unsigned long total_pairs;
    double total_wall_ns, total_cpu_ns;
};

static const moor_class *obj_class;

/* ---- the same hash functions as the registry (well-known mixers) ------ */

/* A copy of src/registry.c's, on purpose: the bench sees only the public
 * headers, and the floor must hash exactly as the registry does for the
 * ratio to measure the registry's own cost. Change both together. */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}

static uint64_t load_short(const unsigned char *s, size_t n)
{
    uint32_t lo, hi;

    if (n < 4)
        return (uint64_t)s[0] << 16 | (uint64_t)s[n / 2] << 8 | s[n - 1];
    memcpy(&lo, s, 4);
    memcpy(&hi, s + n - 4, 4);
    return (uint64_t)hi << 32 | lo;
}

static uint64_t hash_step(uint64_t h, uint64_t w)
{
    h = (h ^ w) * UINT64_C(0x9e3779b97f4a7c15);
    return h ^ h >> 32;
}

static unsigned long hash_bytes(const void *key, size_t len)
{
    const unsigned char *s = key, *end = s + len;
    uint64_t h = (uint64_t)len * UINT64_C(0xc2b2ae3d27d4eb4f);
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

static unsigned long hash_uuid(const moor_uuid *u)
{
    return hash_bytes(u->bytes, sizeof(u->bytes));
}

static unsigned long hash_name(const char *s, size_t len)
{
    return hash_bytes(s, len);
}

static int match_uuid(struct cds_lfht_node *node, const void *key)
{
    struct bare_uuid *b = caa_container_of(node, struct bare_uuid, node);

    return memcmp(b->uuid.bytes, key, sizeof(b->uuid.bytes)) == 0;
}

static int match_name(struct cds_lfht_node *node, const void *key)
{
    struct bare_name *b = caa_container_of(node, struct bare_name, node);
    const struct name_key *k = key;

    return b->len == k->len && memcmp(b->name, k->s, k->len) == 0;
}

#ifdef MOOR_BENCH_HAVE_GLIB
static guint g_uuid_hash(gconstpointer key)
{
    return (guint)hash_uuid(key);
}

static gboolean g_uuid_equal(gconstpointer a, gconstpointer b)
{
    return memcmp(a, b, sizeof(moor_uuid)) == 0;
}
#endif

/* ---- worlds ------------------------------------------------------------- */

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);

    if (!p)
        bench_fail("registry bench: out of memory");
    return p;
}

/* The registry's sizing, applied by hand: the same creation parameters,
 * and the bucket count doubled (outside the read-side section, as
 * cds_lfht_resize() requires) by the add that makes the count exceed it. */
static void world_bare(struct world *w)
{
    unsigned long buckets = TABLE_BUCKETS;

    w->lfht_uuid = cds_lfht_new(TABLE_BUCKETS, TABLE_BUCKETS, 0, 0, NULL);
    w->lfht_name = cds_lfht_new(TABLE_BUCKETS, TABLE_BUCKETS, 0, 0, NULL);
    w->bare_uuid = aligned_alloc(64, w->n * sizeof(*w->bare_uuid));
    w->bare_name = aligned_alloc(64, w->n * sizeof(*w->bare_name));
    if (!w->lfht_uuid || !w->lfht_name || !w->bare_uuid || !w->bare_name)
        bench_fail("bare tables: out of memory");
    for (size_t i = 0; i < w->n; i++) {
        struct bare_uuid *u = &w->bare_uuid[i];
        struct bare_name *m = &w->bare_name[i];

        cds_lfht_node_init(&u->node);
        u->uuid = w->uuids[i];
        u->obj = w->objs[i];
        cds_lfht_node_init(&m->node);
        m->obj = w->objs[i];
        m->len = strlen(w->names[i]);
        memcpy(m->name, w->names[i], m->len + 1);
        rcu_read_lock();
        cds_lfht_add(w->lfht_uuid, hash_uuid(&u->uuid), &u->node);
        cds_lfht_add(w->lfht_name, hash_name(m->name, m->len), &m->node);
        rcu_read_unlock();
        if (i + 1 > buckets) {
            buckets *= 2;
            cds_lfht_resize(w->lfht_uuid, buckets);
            cds_lfht_resize(w->lfht_name, buckets);
        }
    }
}

static struct world *world_new(size_t n)
{
    struct world *w = xcalloc(1, sizeof(*w));
    moor_error err = MOOR_ERROR_INIT;

    if (!obj_class)
        obj_class = moor_class_new("bench_reg_obj", moor_lockable_class(), sizeof(moor_lockable),
                                   NULL, &err);
    w->reg = obj_class ? moor_registry_new(&err) : NULL;
    if (!w->reg)
        bench_fail("registry setup: %s", moor_error_message(&err));
    w->n = n;
    w->objs = xcalloc(n, sizeof(*w->objs));
    w->uuids = xcalloc(n, sizeof(*w->uuids));
    w->names = xcalloc(n, sizeof(*w->names));
#ifdef MOOR_BENCH_HAVE_GLIB
    g_rw_lock_init(&w->lock);
    w->by_uuid = g_hash_table_new_full(g_uuid_hash, g_uuid_equal, g_free, NULL);
    w->by_name = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
#endif
    /* Per object, as a daemon would: the object, then each table's
     * allocations for it, close to it. GHashTable's key copies go first:
     * allocated last they would sit just before the next object, in the
     * cache line of its counter, which other threads' lookups write (a
     * false sharing that slowed ghash_name_1k at 2 threads by 10-15 % in
     * one layout). The registry's block follows; lookups read only its
     * first part. Then a spacer of 0-48 bytes: without it every member
     * lies at the same offset from a cache-line boundary (each member's
     * allocations add up to a multiple of 64 bytes), so whether a
     * lookup's fields straddle two lines is decided once for all members
     * by where the heap happened to start, which moved figures by up to
     * 10 % from one build to the next. */
    w->spacers = xcalloc(n, sizeof(*w->spacers));
    for (size_t i = 0; i < n; i++) {
        w->objs[i] = moor_object_new(obj_class);
        snprintf(w->names[i], NAME_SIZE, "domain-%zu", i);
        if (!w->objs[i] || moor_uuid_generate(&w->uuids[i], &err) < 0)
            bench_fail("registry setup: %s", moor_error_message(&err));
#ifdef MOOR_BENCH_HAVE_GLIB
        g_hash_table_insert(w->by_uuid, g_memdup2(&w->uuids[i], sizeof(w->uuids[i])), w->objs[i]);
        g_hash_table_insert(w->by_name, g_strdup(w->names[i]), w->objs[i]);
#endif
        if (moor_registry_add(w->reg, w->objs[i], &w->uuids[i], w->names[i], &err) < 0)
            bench_fail("registry setup: %s", moor_error_message(&err));
        w->spacers[i] = xcalloc(1, 16 * (size_t)(mix64(i) % 4) + 1);
    }
    world_bare(w);
    return w;
}

/* Built on first use, then kept; setup and teardown run in the main thread. */
static struct world *world_1k, *world_100k;

static void *setup_1k(void)
{
    if (!world_1k)
        world_1k = world_new(1000);
    return world_1k;
}

static void *setup_100k(void)
{
    if (!world_100k)
        world_100k = world_new(100000);
    return world_100k;
}

static void keep_world(void *state)
{
    (void)state;
}

/* ---- the writer --------------------------------------------------------- */

/* Sleep until the next pair is due: WRITER_PAUSE_NS after the last one, or
 * at the next multiple of the period (deadlines missed are not made up). */
static void writer_wait(const struct writer *wr, struct timespec *next)
{
    struct timespec pause = {0, WRITER_PAUSE_NS};

    if (!wr->period_ns) {
        nanosleep(&pause, NULL);
        return;
    }
    next->tv_nsec += wr->period_ns;
    while (next->tv_nsec >= 1000000000) {
        next->tv_nsec -= 1000000000;
        next->tv_sec++;
    }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, next, NULL);
}

static double thread_cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void *writer_main(void *arg)
{
    struct writer *wr = arg;
    struct timespec next;
    void *objs[WRITER_POOL];
    moor_uuid uuids[WRITER_POOL];
    char name[NAME_SIZE];
    moor_error err = MOOR_ERROR_INIT;
    unsigned long i = 0;
    double cpu0;

    for (int k = 0; k < WRITER_POOL; k++) {
        objs[k] = moor_object_new(obj_class);
        if (!objs[k] || moor_uuid_generate(&uuids[k], &err) < 0)
            bench_fail("writer setup: %s", moor_error_message(&err));
    }
    pthread_barrier_wait(&wr->ready);
    cpu0 = thread_cpu_ns();
    clock_gettime(CLOCK_MONOTONIC, &next);
    /* relaxed: a stop flag; the join orders everything else. */
    while (!atomic_load_explicit(&wr->stop, memory_order_relaxed)) {
        unsigned k = (unsigned)(i % WRITER_POOL);

        snprintf(name, sizeof(name), "writer-%u", k);
        if (moor_registry_add(wr->w->reg, objs[k], &uuids[k], name, &err) < 0 ||
            moor_registry_remove(wr->w->reg, objs[k], &err) < 0)
            bench_fail("writer: %s", moor_error_message(&err));
        i++;
        writer_wait(wr, &next);
    }
    wr->cpu_ns = thread_cpu_ns() - cpu0;
    wr->pairs = i;
    for (int k = 0; k < WRITER_POOL; k++)
        moor_unref(objs[k]); /* the registry's references go after a grace period */
    return NULL;
}

static void *writer_new(struct world *w, long period_ns)
{
    struct writer *wr = xcalloc(1, sizeof(*wr));

    wr->w = w;
    wr->period_ns = period_ns;
    if (pthread_barrier_init(&wr->ready, NULL, 2))
        bench_fail("pthread_barrier_init failed");
    return wr;
}

static void *setup_1k_writer(void)
{
    return writer_new(setup_1k(), 0);
}

static void *setup_100k_writer(void)
{
    return writer_new(setup_100k(), 0);
}

static void *setup_1k_writer100(void)
{
    return writer_new(setup_1k(), 10000000);
}

static void *setup_1k_writer1000(void)
{
    return writer_new(setup_1k(), 1000000);
}

static void *setup_100k_writer100(void)
{
    return writer_new(setup_100k(), 10000000);
}

static void *setup_100k_writer1000(void)
{
    return writer_new(setup_100k(), 1000000);
}

/* Before each run: start the writer; return once it is about to write. */
static void writer_begin_run(void *state)
{
    struct writer *wr = state;

    /* relaxed: pthread_create orders it before the writer's first load. */
    atomic_store_explicit(&wr->stop, false, memory_order_relaxed);
    if (pthread_create(&wr->thread, NULL, writer_main, wr))
        bench_fail("pthread_create failed");
    pthread_barrier_wait(&wr->ready);
    wr->t0 = now_ns();
}

/* After each run: stop the writer, run the releases it deferred (so that
 * they do not fall into another case's run), add up its figures. */
static void writer_end_run(void *state)
{
    struct writer *wr = state;

    wr->total_wall_ns += now_ns() - wr->t0;
    /* relaxed: a stop flag; the join orders everything else. */
    atomic_store_explicit(&wr->stop, true, memory_order_relaxed);
    pthread_join(wr->thread, NULL);
    rcu_barrier();
    wr->runs++;
    wr->total_pairs += wr->pairs;
    wr->total_cpu_ns += wr->cpu_ns;
}

/* The writer's rate and CPU use over all the case's runs, to stderr. */
static void writer_teardown(void *state)
{
    struct writer *wr = state;
    double secs = wr->total_wall_ns / 1e9;

    if (wr->runs)
        fprintf(stderr,
                "  (writer on %zu objects, %u runs, %.2f s: %.0f add+remove pairs/s, %.1f%% of a "
                "CPU, %.1f us CPU per pair)\n",
                wr->w->n, wr->runs, secs, (double)wr->total_pairs / secs,
                wr->total_cpu_ns / 1e9 / secs * 100,
                wr->total_cpu_ns / 1e3 / (double)(wr->total_pairs + 1));
    pthread_barrier_destroy(&wr->ready);
    free(wr);
}

/* ---- the loops ---------------------------------------------------------- */

/* A per-thread sequence of random indexes. */
static inline size_t next_index(uint64_t *x, size_t n)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return (size_t)(*x % n);
}

#define SEED(x) uint64_t x = ((uint64_t)(uintptr_t)&x * UINT64_C(0x9e3779b97f4a7c15)) | 1

/* The keys a loop looks up: all of them, or (@half) one half of them,
 * the two halves taken in turn by the loops that start, so that the two
 * threads of a 2-thread run share no object. */
static void key_range(struct world *w, bool half, size_t *base, size_t *span)
{
    /* relaxed: only hands out halves; the harness's barrier orders the rest. */
    unsigned turn = atomic_fetch_add_explicit(&w->turn, 1, memory_order_relaxed);

    *span = half ? w->n / 2 : w->n;
    *base = half && (turn & 1) ? w->n / 2 : 0;
}

static inline void loop_reg_uuid(struct world *w, uint64_t iters, bool half)
{
    size_t base, span;
    SEED(x);

    key_range(w, half, &base, &span);
    for (uint64_t i = 0; i < iters; i++) {
        void *obj = moor_registry_find_uuid(w->reg, &w->uuids[base + next_index(&x, span)]);

        if (!obj)
            bench_fail("reg_uuid: miss");
        moor_unref(obj);
        bench_clobber();
    }
}

static inline void loop_reg_name(struct world *w, uint64_t iters)
{
    SEED(x);

    for (uint64_t i = 0; i < iters; i++) {
        void *obj = moor_registry_find_name(w->reg, w->names[next_index(&x, w->n)]);

        if (!obj)
            bench_fail("reg_name: miss");
        moor_unref(obj);
        bench_clobber();
    }
}

/* @ref false: the lookup alone, no reference taken (lfht_uuid_1k_noref):
 * what the object's counter costs, alone and when threads share objects. */
static inline void loop_lfht_uuid(struct world *w, uint64_t iters, bool ref)
{
    SEED(x);

    for (uint64_t i = 0; i < iters; i++) {
        const moor_uuid *key = &w->uuids[next_index(&x, w->n)];
        struct cds_lfht_iter it;
        struct cds_lfht_node *node;
        void *obj = NULL;

        rcu_read_lock();
        cds_lfht_lookup(w->lfht_uuid, hash_uuid(key), match_uuid, key, &it);
        node = cds_lfht_iter_get_node(&it);
        if (node)
            obj = caa_container_of(node, struct bare_uuid, node)->obj;
        if (ref)
            moor_ref(obj);
        rcu_read_unlock();
        if (!obj)
            bench_fail("lfht_uuid: miss");
        if (ref)
            moor_unref(obj);
        bench_clobber();
    }
}

static inline void loop_lfht_name(struct world *w, uint64_t iters)
{
    SEED(x);

    for (uint64_t i = 0; i < iters; i++) {
        const char *name = w->names[next_index(&x, w->n)];
        struct name_key key = {name, strlen(name)};
        struct cds_lfht_iter it;
        struct cds_lfht_node *node;
        void *obj = NULL;

        rcu_read_lock();
        cds_lfht_lookup(w->lfht_name, hash_name(key.s, key.len), match_name, &key, &it);
        node = cds_lfht_iter_get_node(&it);
        if (node)
            obj = moor_ref(caa_container_of(node, struct bare_name, node)->obj);
        rcu_read_unlock();
        if (!obj)
            bench_fail("lfht_name: miss");
        moor_unref(obj);
        bench_clobber();
    }
}

#ifdef MOOR_BENCH_HAVE_GLIB
static inline void loop_ghash(struct world *w, GHashTable *table, bool by_uuid, uint64_t iters,
                              bool half)
{
    size_t base, span;
    SEED(x);

    key_range(w, half, &base, &span);
    for (uint64_t i = 0; i < iters; i++) {
        size_t k = base + next_index(&x, span);
        const void *key = by_uuid ? (const void *)&w->uuids[k] : (const void *)w->names[k];
        void *obj;

        g_rw_lock_reader_lock(&w->lock);
        obj = moor_ref(g_hash_table_lookup(table, key));
        g_rw_lock_reader_unlock(&w->lock);
        if (!obj)
            bench_fail("ghash: miss");
        moor_unref(obj);
        bench_clobber();
    }
}
#endif

#define REG_LOOPS(size)                                                                            \
    BENCH_LOOP(bench_loop_lfht_uuid_##size, state, iters)                                          \
    {                                                                                              \
        loop_lfht_uuid(state, iters, true);                                                        \
    }                                                                                              \
    BENCH_LOOP(bench_loop_lfht_name_##size, state, iters)                                          \
    {                                                                                              \
        loop_lfht_name(state, iters);                                                              \
    }                                                                                              \
    BENCH_LOOP(bench_loop_reg_uuid_##size, state, iters)                                           \
    {                                                                                              \
        loop_reg_uuid(state, iters, false);                                                        \
    }                                                                                              \
    BENCH_LOOP(bench_loop_reg_name_##size, state, iters)                                           \
    {                                                                                              \
        loop_reg_name(state, iters);                                                               \
    }                                                                                              \
    BENCH_LOOP(bench_loop_reg_uuid_##size##_writer, state, iters)                                  \
    {                                                                                              \
        loop_reg_uuid(((struct writer *)state)->w, iters, false);                                  \
    }                                                                                              \
    BENCH_LOOP(bench_loop_reg_name_##size##_writer, state, iters)                                  \
    {                                                                                              \
        loop_reg_name(((struct writer *)state)->w, iters);                                         \
    }                                                                                              \
    struct bench__reg_loops_##size##_semicolon

REG_LOOPS(1k);
REG_LOOPS(100k);

BENCH_LOOP(bench_loop_lfht_uuid_1k_noref, state, iters)
{
    loop_lfht_uuid(state, iters, false);
}

BENCH_LOOP(bench_loop_reg_uuid_1k_half, state, iters)
{
    loop_reg_uuid(state, iters, true);
}

#ifdef MOOR_BENCH_HAVE_GLIB
#define GHASH_LOOPS(size)                                                                          \
    BENCH_LOOP(bench_loop_ghash_uuid_##size, state, iters)                                         \
    {                                                                                              \
        struct world *w = state;                                                                   \
        loop_ghash(w, w->by_uuid, true, iters, false);                                             \
    }                                                                                              \
    BENCH_LOOP(bench_loop_ghash_name_##size, state, iters)                                         \
    {                                                                                              \
        struct world *w = state;                                                                   \
        loop_ghash(w, w->by_name, false, iters, false);                                            \
    }                                                                                              \
    struct bench__ghash_loops_##size##_semicolon

GHASH_LOOPS(1k);
GHASH_LOOPS(100k);

BENCH_LOOP(bench_loop_ghash_uuid_1k_half, state, iters)
{
    struct world *w = state;
    loop_ghash(w, w->by_uuid, true, iters, true);
}
#endif

/* ---- registration --------------------------------------------------------- */

#define C BENCH_CONTENDED
static const struct bench_case registry_cases[] = {
    {"lfht_uuid_1k", NULL, C, setup_1k, keep_world, bench_loop_lfht_uuid_1k},
    {"reg_uuid_1k", "lfht_uuid_1k", C, setup_1k, keep_world, bench_loop_reg_uuid_1k},
    {"lfht_uuid_1k_noref", "lfht_uuid_1k", C, setup_1k, keep_world, bench_loop_lfht_uuid_1k_noref},
    {"reg_uuid_1k_half", "reg_uuid_1k", C, setup_1k, keep_world, bench_loop_reg_uuid_1k_half},
    {"lfht_name_1k", NULL, C, setup_1k, keep_world, bench_loop_lfht_name_1k},
    {"reg_name_1k", "lfht_name_1k", C, setup_1k, keep_world, bench_loop_reg_name_1k},
    {"lfht_uuid_100k", NULL, C, setup_100k, keep_world, bench_loop_lfht_uuid_100k},
    {"reg_uuid_100k", "lfht_uuid_100k", C, setup_100k, keep_world, bench_loop_reg_uuid_100k},
    {"lfht_name_100k", NULL, C, setup_100k, keep_world, bench_loop_lfht_name_100k},
    {"reg_name_100k", "lfht_name_100k", C, setup_100k, keep_world, bench_loop_reg_name_100k},
#ifdef MOOR_BENCH_HAVE_GLIB
    {"ghash_uuid_1k", "reg_uuid_1k", C, setup_1k, keep_world, bench_loop_ghash_uuid_1k},
    {"ghash_name_1k", "reg_name_1k", C, setup_1k, keep_world, bench_loop_ghash_name_1k},
    {"ghash_uuid_100k", "reg_uuid_100k", C, setup_100k, keep_world, bench_loop_ghash_uuid_100k},
    {"ghash_name_100k", "reg_name_100k", C, setup_100k, keep_world, bench_loop_ghash_name_100k},
    {"ghash_uuid_1k_half", "reg_uuid_1k_half", C, setup_1k, keep_world,
     bench_loop_ghash_uuid_1k_half},
#endif
    {"reg_uuid_1k_writer", "reg_uuid_1k", C, setup_1k_writer, writer_teardown,
     bench_loop_reg_uuid_1k_writer, writer_begin_run, writer_end_run},
    {"reg_name_1k_writer", "reg_name_1k", C, setup_1k_writer, writer_teardown,
     bench_loop_reg_name_1k_writer, writer_begin_run, writer_end_run},
    {"reg_uuid_100k_writer", "reg_uuid_100k", C, setup_100k_writer, writer_teardown,
     bench_loop_reg_uuid_100k_writer, writer_begin_run, writer_end_run},
    {"reg_name_100k_writer", "reg_name_100k", C, setup_100k_writer, writer_teardown,
     bench_loop_reg_name_100k_writer, writer_begin_run, writer_end_run},
    {"reg_uuid_1k_writer100", "reg_uuid_1k", C, setup_1k_writer100, writer_teardown,
     bench_loop_reg_uuid_1k_writer, writer_begin_run, writer_end_run},
    {"reg_uuid_1k_writer1000", "reg_uuid_1k", C, setup_1k_writer1000, writer_teardown,
     bench_loop_reg_uuid_1k_writer, writer_begin_run, writer_end_run},
    {"reg_uuid_100k_writer100", "reg_uuid_100k", C, setup_100k_writer100, writer_teardown,
     bench_loop_reg_uuid_100k_writer, writer_begin_run, writer_end_run},
    {"reg_uuid_100k_writer1000", "reg_uuid_100k", C, setup_100k_writer1000, writer_teardown,
     bench_loop_reg_uuid_100k_writer, writer_begin_run, writer_end_run},
};
#undef C

BENCH_REGISTER(registry_cases);
