/* SPDX-License-Identifier: MIT */
/*
 * stress-blocker.c - threads block, check and unblock one shared set at
 * once; a block must be seen by every check while it is in place and by
 * none after it is gone.
 *
 * The set lives in a lockable object ("disk"). Operation 0 is shared by
 * everyone; every worker owns one more operation (nobody else blocks it).
 * Each round a worker does one of:
 *   - own: block its own operation (and sometimes operation 0), check its
 *     own operation (-EBUSY naming this very block, about half the time
 *     with the object's mutex held, as real callers do), unblock, check
 *     again (0: nothing was left behind);
 *   - hand-off: block operation 0 (and check it is blocked) and put the
 *     token in a shared slot; take whatever token is in another slot and
 *     unblock it: blocks are removed by threads other than the one that
 *     placed them, and every token is unblocked exactly once;
 *   - private: a set of its own on the stack, init, block, check, unblock,
 *     destroy: sets come and go while the token table is shared.
 * One inspector thread takes snapshots meanwhile and checks each entry
 * is well-formed (ops within the set, a reason from a worker).
 *
 * At the end: every hand-off slot drained, counters of placed and removed
 * blocks equal, the set empty (mask 0, no entry), no misuse report, and
 * the census at zero after the disk's last unref.
 *
 * Usage: stress-blocker [THREADS]   (1..32, default 4; MOOR_STRESS_SECONDS)
 */
#define STRESS_PROG "stress-blocker"

#include <pthread.h>
#include <sched.h>

#include <moor/blocker.h>
#include <moor/object.h>

#include "stress-util.h"

#define MAX_THREADS     32
#define DEFAULT_THREADS 4
#define VG_THREADS      2
#define VG_SECONDS      1.0
#define BATCH           64

struct disk {
    moor_lockable parent;
    moor_blocker_set blockers;
};

static struct disk *disk;
static unsigned nthreads;
static struct timespec deadline;

/* Hand-off slots: a token id or 0. */
static _Atomic uint64_t slots[MAX_THREADS];

static atomic_uint_fast64_t placed, removed; /* blocks, by every path */
static atomic_bool inspector_stop;

static void disk_dispose(void *obj)
{
    moor_blocker_destroy(&((struct disk *)obj)->blockers);
}

static int check_own(unsigned own, const char *mine, bool locked)
{
    moor_error err = MOOR_ERROR_INIT;
    int rc;

    if (locked)
        moor_lock(disk);
    rc = moor_blocker_check(&disk->blockers, own, &err);
    if (locked)
        moor_unlock(disk);
    if (rc != -EBUSY)
        fail("check of own op %u returned %d with the block in place", own, rc);
    else if (!strstr(err.message, mine))
        fail("check of own op %u names another block: %s", own, err.message);
    return rc;
}

static void round_own(unsigned idx, uint64_t rnd, uint64_t n)
{
    unsigned own = idx + 1;
    uint64_t ops = MOOR_BLOCKER_OP(own) | (rnd & 1 ? MOOR_BLOCKER_OP(0) : 0);
    moor_block_token t = MOOR_BLOCK_TOKEN_NONE;
    char mine[64];
    int rc;

    snprintf(mine, sizeof(mine), "refused: worker %u block %" PRIu64 " (", idx, n);
    if ((rc = moor_block(&disk->blockers, ops, &t, NULL, "worker %u block %" PRIu64, idx, n)) < 0) {
        fail("moor_block: %d", rc);
        return;
    }
    atomic_fetch_add_explicit(&placed, 1, memory_order_relaxed); /* a tally, read after join */
    check_own(own, mine, rnd & 2);
    if ((ops & 1) && moor_blocker_check(&disk->blockers, 0, NULL) != -EBUSY)
        fail("op 0 not blocked while worker %u blocks it", idx);
    if ((rc = moor_unblock(&t)) != 0)
        fail("moor_unblock of own block: %d", rc);
    atomic_fetch_add_explicit(&removed, 1, memory_order_relaxed); /* a tally */
    if ((rc = moor_blocker_check(&disk->blockers, own, NULL)) != 0)
        fail("own op %u still blocked (%d) after unblock", own, rc);
}

static void round_handoff(unsigned idx, uint64_t rnd)
{
    moor_block_token t = MOOR_BLOCK_TOKEN_NONE;
    uint64_t theirs;
    int rc;

    /* Our slot is empty: only we fill it, and we fill it once until taken. */
    if (atomic_load_explicit(&slots[idx], memory_order_relaxed) == 0) {
        if ((rc = moor_block(&disk->blockers, MOOR_BLOCKER_OP(0), &t, NULL, "worker %u hand-off",
                             idx)) < 0) {
            fail("moor_block (hand-off): %d", rc);
            return;
        }
        atomic_fetch_add_explicit(&placed, 1, memory_order_relaxed); /* a tally */
        /* Checked before it is published: after that, anyone may remove it. */
        if (moor_blocker_check(&disk->blockers, 0, NULL) != -EBUSY)
            fail("op 0 not blocked while worker %u holds a hand-off block", idx);
        /* relaxed: only the token number travels; unblock looks it up
         * under the token table's mutex. */
        atomic_store_explicit(&slots[idx], t.id, memory_order_relaxed);
    }
    /* relaxed: exchange makes exactly one thread the taker of a token. */
    theirs = atomic_exchange_explicit(&slots[rnd % nthreads], 0, memory_order_relaxed);
    if (theirs) {
        if ((rc = moor_unblock(&(moor_block_token){theirs})) != 0)
            fail("moor_unblock of a handed-off token: %d", rc);
        atomic_fetch_add_explicit(&removed, 1, memory_order_relaxed); /* a tally */
    }
}

static void round_private(unsigned idx)
{
    static const char *const names[2] = {"start", "stop"};
    moor_blocker_set mine;
    moor_error err = MOOR_ERROR_INIT;
    moor_block_token t = MOOR_BLOCK_TOKEN_NONE;
    char label[32];

    snprintf(label, sizeof(label), "private %u", idx);
    if (moor_blocker_init(&mine, label, names, 2) < 0 ||
        moor_block(&mine, MOOR_BLOCKER_OP(1), &t, NULL, "worker %u", idx) < 0) {
        fail("private set set-up failed");
        return;
    }
    if (moor_blocker_check(&mine, 1, &err) != -EBUSY || !strstr(err.message, label))
        fail("private set: %s", err.message);
    if (moor_blocker_check(&mine, 0, NULL) != 0)
        fail("private set: op 0 blocked");
    if (moor_unblock(&t) != 0)
        fail("private set: unblock failed");
    moor_blocker_destroy(&mine);
}

static void *worker(void *arg)
{
    unsigned idx = (unsigned)(uintptr_t)arg;
    uint64_t seed = stress_seed(idx), n = 0;

    for (unsigned round = 0; stress_go_on(&deadline, round); round++) {
        for (int i = 0; i < BATCH; i++, n++) {
            uint64_t r = stress_rnd(&seed);

            switch (r % 8) {
            case 0:
            case 1:
                round_handoff(idx, r >> 8);
                break;
            case 2:
                round_private(idx);
                break;
            default:
                round_own(idx, r >> 8, n);
                break;
            }
        }
    }
    return NULL;
}

static void *inspector(void *arg)
{
    moor_block_info info[3 * MAX_THREADS + 1];
    uint64_t valid = MOOR_BLOCKER_OP(nthreads + 1) - 1;

    (void)arg;
    while (!atomic_load_explicit(&inspector_stop, memory_order_relaxed)) {
        int n = moor_blocker_info(&disk->blockers, info, 3 * MAX_THREADS + 1);

        /* Per worker at most: its own block, the block in its slot, and
         * one it took from a slot and is removing. */
        if (n < 0 || n > (int)(3 * nthreads)) {
            fail("snapshot of %d blocks", n);
            break;
        }
        for (int i = 0; i < n; i++)
            if (!info[i].ops || (info[i].ops & ~valid) || strncmp(info[i].reason, "worker ", 7))
                fail("bad snapshot entry: ops 0x%" PRIx64 " reason '%s'", info[i].ops,
                     info[i].reason);
        sched_yield();
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t threads[MAX_THREADS], insp;
    const moor_class *disk_class;
    double seconds = stress_env_seconds(STRESS_DEFAULT_SECONDS);
    uint64_t left;
    int n;

    nthreads = stress_arg_threads(argc, argv, DEFAULT_THREADS, MAX_THREADS);
    stress_valgrind_caps(&nthreads, VG_THREADS, &seconds, VG_SECONDS);
    stress_catch_misuse();
    disk_class = moor_class_new("stress_disk", moor_lockable_class(), sizeof(struct disk),
                                disk_dispose, NULL);
    disk = disk_class ? moor_object_new(disk_class) : NULL;
    if (!disk || moor_blocker_init(&disk->blockers, "disk 'stress'", NULL, nthreads + 1) < 0) {
        fprintf(stderr, STRESS_PROG ": set-up failed\n");
        return 1;
    }
    deadline = stress_add_seconds(stress_now(), seconds);
    if (pthread_create(&insp, NULL, inspector, NULL) != 0)
        return 1;
    for (unsigned i = 0; i < nthreads; i++)
        if (pthread_create(&threads[i], NULL, worker, (void *)(uintptr_t)i) != 0)
            return 1;
    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    atomic_store(&inspector_stop, true);
    pthread_join(insp, NULL);

    /* Drain the hand-off slots: their blocks are the only ones left. */
    for (unsigned i = 0; i < nthreads; i++) {
        uint64_t id = atomic_exchange(&slots[i], 0);

        if (id) {
            if (moor_unblock(&(moor_block_token){id}) != 0)
                fail("draining slot %u failed", i);
            atomic_fetch_add(&removed, 1);
        }
    }
    left = moor_blocker_mask(&disk->blockers);
    n = moor_blocker_info(&disk->blockers, NULL, 0);
    if (left || n)
        fail("at the end: mask 0x%" PRIx64 ", %d block(s) left", left, n);
    if (atomic_load(&placed) != atomic_load(&removed))
        fail("%" PRIuFAST64 " blocks placed, %" PRIuFAST64 " removed", atomic_load(&placed),
             atomic_load(&removed));
    moor_clear(&disk);
    stress_check_census();
    printf(STRESS_PROG ": %u threads, %.1f s, %" PRIuFAST64 " blocks, %d misuse report(s): %s\n",
           nthreads, seconds, atomic_load(&placed), stress_misuse_reports(),
           stress_exit_status() ? "FAIL" : "ok");
    return stress_exit_status();
}
