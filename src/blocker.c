/* SPDX-License-Identifier: MIT */
/*
 * blocker.c - busy markers with reasons.
 *
 * Theory of operation.
 *
 * A block is a heap record: the mask of operations it covers, its reason
 * (copied into the record), the thread that placed it and when. Each
 * record sits on two lists:
 *
 *   - its set's list, oldest first, guarded by the set's leaf mutex; this
 *     is what checks and snapshots read;
 *   - a bucket of the process-wide token table (id -> record), guarded by
 *     the table's leaf mutex; this is how moor_unblock() finds the record
 *     from a plain number without trusting any pointer.
 *
 * Lock order: token table, then set. Block, unblock and destroy take both
 * (in that order) and change both lists in one critical section, so a
 * record is in the table exactly when it is in a live set's list: an
 * unblock that finds its id in the table may follow the record's set
 * pointer, and one that does not touches nothing. Checks and snapshots
 * take only the set's mutex. Neither mutex is held while calling out (the
 * misuse hook is called after both are released) or while taking any
 * other lock, so both are leaves for everyone outside this file.
 *
 * Ids come from a 64-bit counter under the table mutex, starting at 1:
 * never reused (2^64 blocks would take centuries), so a stale token can
 * never name a newer block. Buckets are indexed by the low bits of the id;
 * ids are consecutive, so live blocks spread evenly. The table has a
 * fixed number of buckets: a daemon has tens or hundreds of blocks in
 * place, not millions.
 *
 * Fork: pthread_atfork handlers hold the table mutex across fork(), so the
 * child never inherits it locked (see fork_prepare()).
 *
 * For better misuse reports the table also remembers the last few retired
 * tokens (a ring): an unknown token is then reported as "unblocked before
 * by thread T" or "its set was destroyed", not just "unknown".
 *
 * Fast check. Each set keeps the union of its blocks' masks in an atomic
 * word, rewritten under the set mutex after every change. A check whose
 * bit is clear there returns 0 after one relaxed load; only a check whose
 * bit is set takes the mutex, walks the list and formats the message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <moor/blocker.h>
#include <moor/debug.h>

#include "debug-internal.h"
#include "object-internal.h"

#define SET_ALIVE     0x626c6b73u /* "blks" */
#define SET_DESTROYED 0x64656164u /* "dead" */

#define NBUCKETS 256u /* token table buckets (a power of two) */
#define NRETIRED 64u  /* retired tokens remembered for reports */

struct moor__block {
    moor__block *prev, *next; /* in the set's list, oldest first */
    moor__block *hnext;       /* in the token table's bucket */
    moor__block **hpprev;     /* the pointer that points at us there */
    moor_blocker_set *set;
    uint64_t id, ops;
    int64_t since_ns;
    int thread;
    char reason[]; /* NUL-terminated, < MOOR_BLOCKER_REASON_SIZE */
};

struct retired {
    uint64_t id;
    int thread;     /* who unblocked it or destroyed its set */
    bool destroyed; /* retired by moor_blocker_destroy() */
    char label[MOOR_BLOCKER_LABEL_SIZE];
};

/* The process-wide token table: every field under @lock. */
static struct {
    pthread_mutex_t lock;
    uint64_t next_id;
    moor__block *bucket[NBUCKETS];
    struct retired retired[NRETIRED];
    unsigned nretired;         /* retirements so far (the ring index is mod NRETIRED) */
    moor_blocker_set *tracked; /* sets set up under MOOR_DEBUG=leaks */
} tokens = {.lock = PTHREAD_MUTEX_INITIALIZER, .next_id = 1};

/* How many sets are tracked: lets the check at every last unref skip the
 * lock when there are none. relaxed: a hint read without the lock; a set
 * tracked after an object's dispose began cannot lie in that object
 * (its memory is not being set up any more). */
static atomic_uint ntracked;

/* ---- fork --------------------------------------------------------------------- */

/* The table's mutex is held across fork() by the forking thread: prepare
 * waits for any other holder (each holds it for a few instructions), and
 * both parent and child release it. Without this, a child forked while
 * another thread was inside block/unblock would inherit a mutex locked by
 * a thread that does not exist there, and its first block would hang. */
static void fork_prepare(void)
{
    pthread_mutex_lock(&tokens.lock);
}

static void fork_release(void)
{
    pthread_mutex_unlock(&tokens.lock);
}

__attribute__((constructor)) static void fork_handlers_install(void)
{
    pthread_atfork(fork_prepare, fork_release, fork_release);
}

/* ---- small helpers ---------------------------------------------------------- */

static int64_t coarse_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t age_ns(int64_t since, int64_t now)
{
    return now > since ? (uint64_t)(now - since) : 0;
}

static bool set_alive(const moor_blocker_set *b)
{
    return b && b->magic == SET_ALIVE;
}

/* The operations @b knows, as a mask. */
static uint64_t valid_ops(const moor_blocker_set *b)
{
    return b->nops >= MOOR_BLOCKER_OPS_MAX ? UINT64_MAX : MOOR_BLOCKER_OP(b->nops) - 1;
}

static void set_label(moor_blocker_set *b, const char *label)
{
    if (label)
        snprintf(b->label, sizeof(b->label), "%s", label);
    else
        snprintf(b->label, sizeof(b->label), "blocker set %p", (void *)b);
}

/* "resize", or "op 5" when the vocabulary has no name for it. */
static void op_text(const moor_blocker_set *b, unsigned op, char *buf, size_t size)
{
    const char *name = moor_blocker_op_name(b, op);

    if (name)
        snprintf(buf, size, "%s", name);
    else
        snprintf(buf, size, "op %u", op);
}

/* "resize|delete" for a mask. */
static void ops_text(const moor_blocker_set *b, uint64_t ops, char *buf, size_t size)
{
    size_t used = 0;

    buf[0] = '\0';
    for (unsigned op = 0; op < MOOR_BLOCKER_OPS_MAX && used < size; op++) {
        char one[40];

        if (!(ops & MOOR_BLOCKER_OP(op)))
            continue;
        op_text(b, op, one, sizeof(one));
        used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? "|" : "", one);
    }
}

/* A copy of @b's label, taken under its mutex (moor_blocker_relabel may
 * change it at any time); "(no blocker set)" for a dead or NULL @b. */
static void label_copy(moor_blocker_set *b, char *buf)
{
    if (!set_alive(b)) {
        snprintf(buf, MOOR_BLOCKER_LABEL_SIZE, "(no blocker set)");
        return;
    }
    pthread_mutex_lock(&b->lock);
    memcpy(buf, b->label, MOOR_BLOCKER_LABEL_SIZE);
    pthread_mutex_unlock(&b->lock);
}

/* Report misuse by @op of @b (may be NULL or dead), record the same text
 * in @err and return -EINVAL. Called with no lock held. */
__attribute__((format(printf, 5, 6))) static int
misuse(moor_blocker_set *b, moor_error *err, moor_misuse kind, const char *op, const char *fmt, ...)
{
    char what[200], label[MOOR_BLOCKER_LABEL_SIZE];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    label_copy(b, label);
    moor_debug_report(kind, b, "%s on %s by thread %d: %s", op, label, moor__thread_id(), what);
    return moor_error_set(err, -EINVAL, "%s on %s: %s", op, label, what);
}

/* The entry check of every call on a set. */
static int check_set(moor_blocker_set *b, moor_error *err, const char *op)
{
    if (!b)
        return misuse(NULL, err, MOOR_MISUSE_BAD_ARGUMENT, op, "NULL blocker set");
    if (b->magic != SET_ALIVE)
        return misuse(NULL, err, MOOR_MISUSE_BAD_ARGUMENT, op, "blocker set %p is %s", (void *)b,
                      b->magic == SET_DESTROYED ? "destroyed" : "not initialised");
    return 0;
}

/* ---- the token table (tokens.lock held) ------------------------------------- */

static moor__block **bucket_of(uint64_t id)
{
    return &tokens.bucket[id & (NBUCKETS - 1)];
}

static void table_insert(moor__block *rec)
{
    moor__block **head = bucket_of(rec->id);

    rec->hnext = *head;
    rec->hpprev = head;
    if (*head)
        (*head)->hpprev = &rec->hnext;
    *head = rec;
}

static void table_remove(moor__block *rec)
{
    *rec->hpprev = rec->hnext;
    if (rec->hnext)
        rec->hnext->hpprev = rec->hpprev;
}

static moor__block *table_find(uint64_t id)
{
    for (moor__block *rec = *bucket_of(id); rec; rec = rec->hnext)
        if (rec->id == id)
            return rec;
    return NULL;
}

/* Remember that @id was retired; @label is its set's. */
static void retire(uint64_t id, int thread, bool destroyed, const char *label)
{
    struct retired *r = &tokens.retired[tokens.nretired++ % NRETIRED];

    r->id = id;
    r->thread = thread;
    r->destroyed = destroyed;
    memcpy(r->label, label, sizeof(r->label));
}

/* What the table knows about an id that names no block, as a sentence. */
static void explain_unknown(uint64_t id, char *buf, size_t size)
{
    for (unsigned i = 0; i < NRETIRED && i < tokens.nretired; i++) {
        const struct retired *r = &tokens.retired[i];

        if (r->id != id)
            continue;
        if (r->destroyed)
            snprintf(buf, size,
                     "its blocker set %s was destroyed with the block in place "
                     "(by thread %d)",
                     r->label, r->thread);
        else
            snprintf(buf, size, "already unblocked by thread %d (on %s)", r->thread, r->label);
        return;
    }
    if (id >= tokens.next_id)
        snprintf(buf, size, "no block with that token was ever placed");
    else
        snprintf(buf, size, "no block in place (unblocked or destroyed long ago)");
}

/* ---- the set's list (set lock held) ----------------------------------------- */

static void list_append(moor_blocker_set *b, moor__block *rec)
{
    rec->next = NULL;
    rec->prev = b->tail;
    if (b->tail)
        b->tail->next = rec;
    else
        b->head = rec;
    b->tail = rec;
    b->count++;
    /* relaxed: the hint is only a shortcut for "no record covers this op";
     * the records themselves are read under the mutex. A check that
     * happens after this block returns reads this store or a later one
     * (write-read coherence), so it never misses the block. */
    atomic_fetch_or_explicit(&b->blocked, rec->ops, memory_order_relaxed);
}

static void list_remove(moor_blocker_set *b, moor__block *rec)
{
    uint64_t mask = 0;

    if (rec->prev)
        rec->prev->next = rec->next;
    else
        b->head = rec->next;
    if (rec->next)
        rec->next->prev = rec->prev;
    else
        b->tail = rec->prev;
    b->count--;
    for (const moor__block *r = b->head; r; r = r->next)
        mask |= r->ops;
    /* relaxed: as in list_append(); a check that still sees a stale bit
     * takes the mutex and finds no record. */
    atomic_store_explicit(&b->blocked, mask, memory_order_relaxed);
}

/* ---- set-up ------------------------------------------------------------------ */

/* Put @b on / take it off the tracked list; tokens.lock held. */
static void track_locked(moor_blocker_set *b)
{
    b->tracked = true;
    b->tracked_prev = NULL;
    b->tracked_next = tokens.tracked;
    if (tokens.tracked)
        tokens.tracked->tracked_prev = b;
    tokens.tracked = b;
    /* relaxed: see ntracked. */
    atomic_fetch_add_explicit(&ntracked, 1, memory_order_relaxed);
}

static void untrack_locked(moor_blocker_set *b)
{
    if (!b->tracked)
        return;
    if (b->tracked_prev)
        b->tracked_prev->tracked_next = b->tracked_next;
    else
        tokens.tracked = b->tracked_next;
    if (b->tracked_next)
        b->tracked_next->tracked_prev = b->tracked_prev;
    b->tracked = false;
    /* relaxed: see ntracked. */
    atomic_fetch_sub_explicit(&ntracked, 1, memory_order_relaxed);
}

/* The last unref of object @obj (@size bytes, class @cls) after its
 * dispose functions: report and destroy every tracked set inside it. */
static void check_object(void *obj, size_t size, const char *cls)
{
    moor_blocker_set *left[16];
    unsigned n;

    /* relaxed: see ntracked. */
    if (!atomic_load_explicit(&ntracked, memory_order_relaxed))
        return;
    do {
        n = 0;
        pthread_mutex_lock(&tokens.lock);
        for (moor_blocker_set *b = tokens.tracked; b && n < 16; b = b->tracked_next)
            if ((uintptr_t)b >= (uintptr_t)obj &&
                (uintptr_t)b + sizeof(*b) <= (uintptr_t)obj + size)
                left[n++] = b;
        for (unsigned i = 0; i < n; i++)
            untrack_locked(left[i]);
        pthread_mutex_unlock(&tokens.lock);
        for (unsigned i = 0; i < n; i++) {
            moor_debug_report(MOOR_MISUSE_NOT_DESTROYED, left[i],
                              "blocker set %s inside object %p (class '%s') still set up when "
                              "the object was freed: its dispose function must call "
                              "moor_blocker_destroy(); destroyed now",
                              left[i]->label, obj, cls);
            moor_blocker_destroy(left[i]);
        }
    } while (n == 16);
}

int moor_blocker_init(moor_blocker_set *b, const char *label, const char *const *op_names,
                      unsigned nops)
{
    int rc;

    if (!b)
        return misuse(NULL, NULL, MOOR_MISUSE_BAD_ARGUMENT, "moor_blocker_init",
                      "NULL blocker set");
    if (nops == 0 || nops > MOOR_BLOCKER_OPS_MAX)
        return misuse(NULL, NULL, MOOR_MISUSE_BAD_ARGUMENT, "moor_blocker_init",
                      "%u operations for '%s' (want 1..%u)", nops, label ? label : "(no label)",
                      MOOR_BLOCKER_OPS_MAX);
    if ((rc = pthread_mutex_init(&b->lock, NULL)) != 0)
        return -rc;
    b->nops = nops;
    b->op_names = op_names;
    /* relaxed: @b is not shared yet. */
    atomic_init(&b->blocked, 0);
    b->head = b->tail = NULL;
    b->count = 0;
    set_label(b, label);
    b->tracked = false;
    b->tracked_prev = b->tracked_next = NULL;
    b->magic = SET_ALIVE;
    if (moor__debug_on(MOOR_DEBUG_LEAKS)) {
        moor__set_dispose_check(check_object);
        pthread_mutex_lock(&tokens.lock);
        track_locked(b);
        pthread_mutex_unlock(&tokens.lock);
    }
    return 0;
}

void moor_blocker_destroy(moor_blocker_set *b)
{
    moor__block *list;
    unsigned count;
    int self = moor__thread_id();
    int64_t now = coarse_ns();
    char first[MOOR_BLOCKER_REASON_SIZE + 160] = "", label[MOOR_BLOCKER_LABEL_SIZE];

    if (!set_alive(b))
        return;
    pthread_mutex_lock(&tokens.lock);
    untrack_locked(b);
    pthread_mutex_lock(&b->lock);
    list = b->head;
    count = b->count;
    if (list) {
        char ops[160];

        ops_text(b, list->ops, ops, sizeof(ops));
        snprintf(first, sizeof(first), "%s blocked by thread %d for %.1f s: %s", ops, list->thread,
                 (double)age_ns(list->since_ns, now) / 1e9, list->reason);
    }
    for (moor__block *rec = list; rec; rec = rec->next) {
        table_remove(rec);
        retire(rec->id, self, true, b->label);
    }
    b->head = b->tail = NULL;
    b->count = 0;
    /* relaxed: no thread may use @b any more (the contract of destroy). */
    atomic_store_explicit(&b->blocked, 0, memory_order_relaxed);
    b->magic = SET_DESTROYED;
    memcpy(label, b->label, sizeof(label));
    pthread_mutex_unlock(&b->lock);
    pthread_mutex_unlock(&tokens.lock);
    if (count)
        moor_debug_report(MOOR_MISUSE_BLOCKS_LEFT, b,
                          "moor_blocker_destroy on %s by thread %d: %u block(s) still in place, "
                          "the oldest: %s; a holder did not unblock, its token is now void",
                          label, self, count, first);
    while (list) {
        moor__block *next = list->next;

        moor__free(list);
        list = next;
    }
    pthread_mutex_destroy(&b->lock);
}

int moor_blocker_relabel(moor_blocker_set *b, const char *label)
{
    int rc = check_set(b, NULL, "moor_blocker_relabel");

    if (rc < 0)
        return rc;
    pthread_mutex_lock(&b->lock);
    set_label(b, label);
    pthread_mutex_unlock(&b->lock);
    return 0;
}

/* ---- blocking ---------------------------------------------------------------- */

int moor_block(moor_blocker_set *b, uint64_t ops, moor_block_token *token, moor_error *err,
               const char *fmt, ...)
{
    char reason[MOOR_BLOCKER_REASON_SIZE];
    moor__block *rec;
    size_t len;
    va_list ap;
    char label[MOOR_BLOCKER_LABEL_SIZE];
    int n, rc = check_set(b, err, "moor_block");

    if (rc < 0)
        return rc;
    if (!token)
        return misuse(b, err, MOOR_MISUSE_BAD_ARGUMENT, "moor_block", "NULL token");
    if (!ops || (ops & ~valid_ops(b)))
        return misuse(b, err, MOOR_MISUSE_BAD_ARGUMENT, "moor_block",
                      "ops 0x%" PRIx64 " empty or outside the set's 0x%" PRIx64, ops, valid_ops(b));
    n = 0;
    if (fmt) {
        va_start(ap, fmt);
        n = vsnprintf(reason, sizeof(reason), fmt, ap);
        va_end(ap);
    }
    if (n <= 0)
        return misuse(b, err, MOOR_MISUSE_BAD_ARGUMENT, "moor_block", "a block needs a reason");
    if ((size_t)n >= sizeof(reason))
        memcpy(reason + sizeof(reason) - 4, "...", 4);
    len = strlen(reason);
    rec = moor__malloc(sizeof(*rec) + len + 1);
    if (!rec) {
        label_copy(b, label);
        return moor_error_set(err, -ENOMEM, "moor_block on %s: no memory for the block (%s)", label,
                              reason);
    }
    memcpy(rec->reason, reason, len + 1);
    rec->set = b;
    rec->ops = ops;
    rec->thread = moor__thread_id();
    rec->since_ns = coarse_ns();

    pthread_mutex_lock(&tokens.lock);
    if (token->id && table_find(token->id)) {
        uint64_t live = token->id;

        pthread_mutex_unlock(&tokens.lock);
        moor__free(rec);
        label_copy(b, label);
        moor_debug_report(MOOR_MISUSE_BLOCK_TOKEN_LIVE, b,
                          "moor_block on %s by thread %d: the token variable still holds block "
                          "#%" PRIu64 ", which is in place; unblock it first (overwriting it "
                          "would leave a block nobody can remove)",
                          label, moor__thread_id(), live);
        return moor_error_set(err, -EBUSY,
                              "moor_block on %s: the token still holds block #%" PRIu64
                              ", which is in place",
                              label, live);
    }
    rec->id = tokens.next_id++;
    table_insert(rec);
    pthread_mutex_lock(&b->lock);
    list_append(b, rec);
    pthread_mutex_unlock(&b->lock);
    *token = (moor_block_token){rec->id};
    pthread_mutex_unlock(&tokens.lock);
    return 0;
}

int moor_unblock(moor_block_token *token)
{
    moor__block *rec;
    char why[MOOR_BLOCKER_LABEL_SIZE + 100];
    uint64_t id = token ? token->id : 0;
    int self;

    if (id == 0)
        return 0;
    self = moor__thread_id();
    pthread_mutex_lock(&tokens.lock);
    rec = table_find(id);
    if (!rec) {
        explain_unknown(id, why, sizeof(why));
        pthread_mutex_unlock(&tokens.lock);
        moor_debug_report(MOOR_MISUSE_UNBLOCK_UNKNOWN, NULL,
                          "moor_unblock of block #%" PRIu64 " by thread %d: %s", id, self, why);
        return -EINVAL;
    }
    table_remove(rec);
    pthread_mutex_lock(&rec->set->lock);
    list_remove(rec->set, rec);
    retire(rec->id, self, false, rec->set->label);
    pthread_mutex_unlock(&rec->set->lock);
    pthread_mutex_unlock(&tokens.lock);
    *token = MOOR_BLOCK_TOKEN_NONE;
    moor__free(rec);
    return 0;
}

/* ---- asking -------------------------------------------------------------------- */

int moor_blocker_check(moor_blocker_set *b, unsigned op, moor_error *err)
{
    char reason[MOOR_BLOCKER_REASON_SIZE], label[MOOR_BLOCKER_LABEL_SIZE], name[40], more[32];
    const moor__block *first = NULL;
    unsigned others = 0;
    uint64_t bit, age = 0;
    int thread = 0, rc = check_set(b, err, "moor_blocker_check");

    if (rc < 0)
        return rc;
    if (op >= b->nops)
        return misuse(b, err, MOOR_MISUSE_BAD_ARGUMENT, "moor_blocker_check",
                      "op %u out of range (the set has %u)", op, b->nops);
    bit = MOOR_BLOCKER_OP(op);
    /* relaxed: see list_append(); a clear bit means no block placed before
     * this call covers @op. */
    if (MOOR_LIKELY(!(atomic_load_explicit(&b->blocked, memory_order_relaxed) & bit)))
        return 0;

    pthread_mutex_lock(&b->lock);
    for (const moor__block *r = b->head; r; r = r->next) {
        if (!(r->ops & bit))
            continue;
        if (first) {
            others++;
            continue;
        }
        first = r;
        memcpy(reason, r->reason, strlen(r->reason) + 1);
        thread = r->thread;
        age = age_ns(r->since_ns, coarse_ns());
    }
    memcpy(label, b->label, sizeof(label));
    pthread_mutex_unlock(&b->lock);
    if (!first) /* unblocked between the hint and the walk */
        return 0;

    op_text(b, op, name, sizeof(name));
    if (others)
        snprintf(more, sizeof(more), "; %u more block%s", others, others == 1 ? "" : "s");
    else
        more[0] = '\0';
    return moor_error_set(err, -EBUSY, "%s of %s refused: %s (blocked by thread %d for %.1f s%s)",
                          name, label, reason, thread, (double)age / 1e9, more);
}

uint64_t moor_blocker_mask(const moor_blocker_set *b)
{
    /* relaxed: a moment's answer (see list_append()). */
    return set_alive(b) ? atomic_load_explicit(&b->blocked, memory_order_relaxed) : 0;
}

const char *moor_blocker_op_name(const moor_blocker_set *b, unsigned op)
{
    if (!set_alive(b) || op >= b->nops || !b->op_names)
        return NULL;
    return b->op_names[op];
}

/* ---- introspection -------------------------------------------------------------- */

int moor_blocker_info(moor_blocker_set *b, moor_block_info *out, unsigned cap)
{
    int64_t now = coarse_ns();
    unsigned i = 0;
    int rc = check_set(b, NULL, "moor_blocker_info");

    if (rc < 0)
        return rc;
    if (!out && cap)
        return misuse(b, NULL, MOOR_MISUSE_BAD_ARGUMENT, "moor_blocker_info",
                      "NULL out with cap %u", cap);
    pthread_mutex_lock(&b->lock);
    for (const moor__block *r = b->head; r && i < cap; r = r->next, i++) {
        moor_block_info *o = &out[i];

        o->token = (moor_block_token){r->id};
        o->ops = r->ops;
        o->thread = r->thread;
        o->age_ns = age_ns(r->since_ns, now);
        memcpy(o->reason, r->reason, strlen(r->reason) + 1);
    }
    rc = (int)b->count;
    pthread_mutex_unlock(&b->lock);
    return rc;
}
