/* SPDX-License-Identifier: MIT */
/*
 * test-blocker.c - busy markers: the exact -EBUSY text, several blocks on
 * one set (the oldest covering the operation is named), masks, unnamed
 * operations, snapshots, every bad argument, allocation failure, the
 * misuse reports (destroy with blocks left, unblock twice, unblock after
 * the set is gone), blocks that outlive nothing (a reference is not a
 * block), and threads racing block/check/unblock and double unblocks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include <moor/blocker.h>
#include <moor/debug.h>
#include <moor/object.h>

#include "test-util.h"

enum { DISK_RESIZE, DISK_DELETE, DISK_SNAPSHOT, DISK_NOPS };

static const char *const disk_ops[DISK_NOPS] = {"resize", "delete", "snapshot"};

#define RESIZE   MOOR_BLOCKER_OP(DISK_RESIZE)
#define DELETE   MOOR_BLOCKER_OP(DISK_DELETE)
#define SNAPSHOT MOOR_BLOCKER_OP(DISK_SNAPSHOT)

static int gettid_(void)
{
    return (int)syscall(SYS_gettid);
}

static void disk_init(moor_blocker_set *b)
{
    assert_int_equal(moor_blocker_init(b, "disk 'base.qcow2'", disk_ops, DISK_NOPS), 0);
}

static moor_block_token block_ok(moor_blocker_set *b, uint64_t ops, const char *reason)
{
    moor_block_token t = MOOR_BLOCK_TOKEN_NONE;

    assert_int_equal(moor_block(b, ops, &t, NULL, "%s", reason), 0);
    assert_true(t.id != 0);
    return t;
}

/* The error text of checking @op, asserting -EBUSY. */
static const char *busy_text(moor_blocker_set *b, unsigned op, moor_error *err)
{
    moor_error_clear(err);
    assert_int_equal(moor_blocker_check(b, op, err), -EBUSY);
    assert_int_equal(err->code, -EBUSY);
    return err->message;
}

/* ---- set-up ---------------------------------------------------------------- */

static void test_init_destroy(void **state)
{
    moor_blocker_set b, zeroed;
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    disk_init(&b);
    assert_int_equal(moor_blocker_mask(&b), 0);
    assert_int_equal(moor_blocker_info(&b, NULL, 0), 0);
    assert_string_equal(moor_blocker_op_name(&b, DISK_DELETE), "delete");
    assert_null(moor_blocker_op_name(&b, DISK_NOPS));
    for (unsigned op = 0; op < DISK_NOPS; op++)
        assert_int_equal(moor_blocker_check(&b, op, &err), 0);
    assert_false(moor_error_is_set(&err));
    moor_blocker_destroy(&b);
    /* NULL, destroyed and zeroed sets are left alone, without a report. */
    moor_blocker_destroy(&b);
    moor_blocker_destroy(NULL);
    memset(&zeroed, 0, sizeof(zeroed));
    moor_blocker_destroy(&zeroed);
}

static void test_init_bad_args(void **state)
{
    moor_blocker_set b, before;

    (void)state;
    assert_int_equal(moor_blocker_init(NULL, "x", disk_ops, DISK_NOPS), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "moor_blocker_init");
    memset(&b, 0xa5, sizeof(b));
    memcpy(&before, &b, sizeof(b));
    assert_int_equal(moor_blocker_init(&b, "disk x", disk_ops, 0), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "0 operations for 'disk x' (want 1..64)");
    assert_int_equal(moor_blocker_init(&b, "disk x", NULL, MOOR_BLOCKER_OPS_MAX + 1), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "65 operations");
    assert_memory_equal(&b, &before, sizeof(b)); /* a failed init changes nothing */
}

/* All 64 operations: the top bit is usable and nothing overflows. */
static void test_sixty_four_ops(void **state)
{
    moor_blocker_set b;
    moor_error err = MOOR_ERROR_INIT;
    moor_block_token t = MOOR_BLOCK_TOKEN_NONE;

    (void)state;
    assert_int_equal(moor_blocker_init(&b, "wide", NULL, MOOR_BLOCKER_OPS_MAX), 0);
    t = block_ok(&b, MOOR_BLOCKER_OP(63) | MOOR_BLOCKER_OP(0), "edges");
    assert_int_equal(moor_blocker_mask(&b), MOOR_BLOCKER_OP(63) | 1u);
    tu_assert_contains(busy_text(&b, 63, &err), "op 63 of wide refused: edges (");
    assert_int_equal(moor_blocker_check(&b, 62, NULL), 0);
    assert_int_equal(moor_unblock(&t), 0);
    moor_blocker_destroy(&b);
}

/* ---- the message ------------------------------------------------------------ */

static void test_check_exact_message(void **state)
{
    moor_blocker_set b;
    moor_error err = MOOR_ERROR_INIT;
    moor_block_token t = MOOR_BLOCK_TOKEN_NONE;
    char want[MOOR_ERROR_MESSAGE_SIZE];

    (void)state;
    disk_init(&b);
    t = block_ok(&b, RESIZE | DELETE, "backup job 'nightly' reads it");
    assert_int_equal(moor_blocker_mask(&b), RESIZE | DELETE);
    snprintf(want, sizeof(want),
             "resize of disk 'base.qcow2' refused: backup job 'nightly' reads it "
             "(blocked by thread %d for 0.0 s)",
             gettid_());
    assert_string_equal(busy_text(&b, DISK_RESIZE, &err), want);
    tu_assert_contains(busy_text(&b, DISK_DELETE, &err), "delete of disk 'base.qcow2' refused");
    assert_int_equal(moor_blocker_check(&b, DISK_SNAPSHOT, NULL), 0);
    assert_int_equal(moor_blocker_check(&b, DISK_RESIZE, NULL), -EBUSY); /* err optional */

    assert_int_equal(moor_unblock(&t), 0);
    assert_int_equal(moor_blocker_mask(&b), 0);
    moor_error_clear(&err);
    assert_int_equal(moor_blocker_check(&b, DISK_RESIZE, &err), 0);
    assert_false(moor_error_is_set(&err));
    moor_blocker_destroy(&b);
}

/* Several blocks: the oldest covering the operation is named, then how
 * many more cover it; unblocking in any order keeps the rest. */
static void test_first_match(void **state)
{
    moor_blocker_set b;
    moor_error err = MOOR_ERROR_INIT;
    moor_block_token a = MOOR_BLOCK_TOKEN_NONE, bb = MOOR_BLOCK_TOKEN_NONE,
                     c = MOOR_BLOCK_TOKEN_NONE, d = MOOR_BLOCK_TOKEN_NONE;

    (void)state;
    disk_init(&b);
    a = block_ok(&b, RESIZE, "A: vm 'web1' uses it as a backing file");
    bb = block_ok(&b, RESIZE | DELETE, "B: backup job reads it");
    c = block_ok(&b, DELETE, "C: exported over NBD");
    d = block_ok(&b, RESIZE, "D: mirror target");
    assert_int_equal(moor_blocker_mask(&b), RESIZE | DELETE);

    tu_assert_contains(busy_text(&b, DISK_RESIZE, &err), "refused: A: vm 'web1' uses it");
    tu_assert_contains(err.message, "s; 2 more blocks)");
    tu_assert_contains(busy_text(&b, DISK_DELETE, &err), "refused: B: backup job reads it");
    tu_assert_contains(err.message, "s; 1 more block)");
    assert_int_equal(moor_blocker_check(&b, DISK_SNAPSHOT, &err), 0);

    assert_int_equal(moor_unblock(&a), 0);
    tu_assert_contains(busy_text(&b, DISK_RESIZE, &err), "refused: B: backup job");
    tu_assert_contains(err.message, "s; 1 more block)");
    assert_int_equal(moor_unblock(&bb), 0);
    tu_assert_contains(busy_text(&b, DISK_RESIZE, &err), "refused: D: mirror target");
    tu_assert_not_contains(err.message, "more block");
    tu_assert_contains(busy_text(&b, DISK_DELETE, &err), "refused: C: exported over NBD");
    assert_int_equal(moor_blocker_mask(&b), RESIZE | DELETE);
    assert_int_equal(moor_unblock(&d), 0);
    assert_int_equal(moor_blocker_mask(&b), DELETE);
    assert_int_equal(moor_blocker_check(&b, DISK_RESIZE, &err), 0);
    assert_int_equal(moor_unblock(&c), 0);
    assert_int_equal(moor_blocker_mask(&b), 0);
    assert_int_equal(moor_blocker_info(&b, NULL, 0), 0);
    moor_blocker_destroy(&b);
}

/* Operations without a name are "op N"; a label-less set is named by its
 * address; a relabel shows in later messages. */
static void test_names_and_labels(void **state)
{
    static const char *const partial[3] = {"start", NULL, "stop"};
    moor_blocker_set b, anon;
    moor_error err = MOOR_ERROR_INIT;
    char want[64];

    (void)state;
    assert_int_equal(moor_blocker_init(&b, "vm 'web1'", partial, 3), 0);
    assert_null(moor_blocker_op_name(&b, 1));
    block_ok(&b, MOOR_BLOCKER_OP(1) | MOOR_BLOCKER_OP(2), "migrating");
    tu_assert_contains(busy_text(&b, 1, &err), "op 1 of vm 'web1' refused: migrating (");
    tu_assert_contains(busy_text(&b, 2, &err), "stop of vm 'web1' refused");
    assert_int_equal(moor_blocker_relabel(&b, "vm 'web2'"), 0);
    tu_assert_contains(busy_text(&b, 2, &err), "stop of vm 'web2' refused");
    moor_blocker_destroy(&b); /* with the block still there */
    tu_expect_report(MOOR_MISUSE_BLOCKS_LEFT, &b, "on vm 'web2'");

    assert_int_equal(moor_blocker_init(&anon, NULL, NULL, 1), 0);
    assert_null(moor_blocker_op_name(&anon, 0));
    moor_block_token t = block_ok(&anon, 1, "x");
    snprintf(want, sizeof(want), "op 0 of blocker set %p refused: x", (void *)&anon);
    tu_assert_contains(busy_text(&anon, 0, &err), want);
    assert_int_equal(moor_unblock(&t), 0);
    moor_blocker_destroy(&anon);
}

/* The reason is formatted, copied, and cut with "..." when too long. */
static void test_reason_copied_and_cut(void **state)
{
    moor_blocker_set b;
    moor_error err = MOOR_ERROR_INIT;
    moor_block_info info[2];
    moor_block_token t1 = MOOR_BLOCK_TOKEN_NONE, t2 = MOOR_BLOCK_TOKEN_NONE;
    char buf[300];

    (void)state;
    disk_init(&b);
    snprintf(buf, sizeof(buf), "job %d", 7);
    assert_int_equal(moor_block(&b, SNAPSHOT, &t1, NULL, "%s in %s", buf, "progress"), 0);
    strcpy(buf, "overwritten");
    tu_assert_contains(busy_text(&b, DISK_SNAPSHOT, &err), "refused: job 7 in progress (");

    memset(buf, 'r', sizeof(buf) - 1);
    buf[sizeof(buf) - 1] = '\0';
    assert_int_equal(moor_block(&b, RESIZE, &t2, NULL, "%s", buf), 0);
    assert_int_equal(moor_blocker_info(&b, info, 2), 2);
    assert_int_equal(strlen(info[1].reason), MOOR_BLOCKER_REASON_SIZE - 1);
    assert_string_equal(info[1].reason + MOOR_BLOCKER_REASON_SIZE - 4, "...");
    assert_int_equal(info[1].reason[0], 'r');
    /* The message still fits moor_error, cut at its end if need be. */
    busy_text(&b, DISK_RESIZE, &err);
    assert_true(strlen(err.message) < MOOR_ERROR_MESSAGE_SIZE);
    assert_int_equal(moor_unblock(&t1), 0);
    assert_int_equal(moor_unblock(&t2), 0);
    moor_blocker_destroy(&b);
}

/* ---- another thread's block -------------------------------------------------- */

struct placer {
    moor_blocker_set *b;
    moor_block_token token;
    int tid, rc;
};

/* No cmocka assertion here: its longjmp only works in the test's thread. */
static void *place_block(void *arg)
{
    struct placer *p = arg;

    p->tid = gettid_();
    p->rc = moor_block(p->b, DELETE, &p->token, NULL, "used by thread %d", p->tid);
    return NULL;
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The block names the thread that placed it and its age; any thread may
 * unblock it. */
static void test_holder_and_age(void **state)
{
    moor_blocker_set b;
    moor_error err = MOOR_ERROR_INIT;
    moor_block_info info;
    struct placer p = {.b = &b};
    char want[96];
    double age;
    const char *s;
    int64_t deadline;

    (void)state;
    disk_init(&b);
    tu_in_thread(place_block, &p);
    assert_int_equal(p.rc, 0);
    assert_int_not_equal(p.tid, gettid_());
    /* Wait (bounded) until the block is 150 ms old by its own clock. */
    deadline = mono_ms() + 10000;
    do {
        assert_int_equal(moor_blocker_info(&b, &info, 1), 1);
        if (mono_ms() >= deadline)
            fail_msg("the block was not 150 ms old within 10 s (%llu ns)",
                     (unsigned long long)info.age_ns);
    } while (info.age_ns < 150000000u);
    assert_int_equal(info.thread, p.tid);
    assert_int_equal(info.ops, DELETE);
    assert_true(info.token.id == p.token.id);

    snprintf(want, sizeof(want), "refused: used by thread %d (blocked by thread %d for ", p.tid,
             p.tid);
    tu_assert_contains(busy_text(&b, DISK_DELETE, &err), want);
    s = strstr(err.message, " for ");
    assert_non_null(s);
    age = strtod(s + 5, NULL);
    assert_true(age >= 0.1 && age < 10.0);

    assert_int_equal(moor_unblock(&p.token), 0); /* not the placing thread: fine */
    assert_int_equal(moor_blocker_check(&b, DISK_DELETE, NULL), 0);
    moor_blocker_destroy(&b);
}

/* ---- snapshot ------------------------------------------------------------------ */

static void test_info(void **state)
{
    moor_blocker_set b;
    moor_block_info info[3];
    moor_block_token t[3];

    (void)state;
    disk_init(&b);
    t[0] = block_ok(&b, RESIZE, "first");
    t[1] = block_ok(&b, DELETE | SNAPSHOT, "second");
    t[2] = block_ok(&b, SNAPSHOT, "third");
    assert_true(t[0].id < t[1].id && t[1].id < t[2].id);
    memset(info, 0x5a, sizeof(info));
    assert_int_equal(moor_blocker_info(&b, info, 2), 3); /* more than fit */
    assert_true(info[0].token.id == t[0].id);
    assert_int_equal(info[0].ops, RESIZE);
    assert_string_equal(info[0].reason, "first");
    assert_int_equal(info[0].thread, gettid_());
    assert_true(info[1].token.id == t[1].id);
    assert_int_equal(info[1].ops, DELETE | SNAPSHOT);
    assert_string_equal(info[1].reason, "second");
    assert_int_equal((unsigned char)info[2].reason[0], 0x5a); /* beyond cap: untouched */
    assert_int_equal(moor_blocker_info(&b, NULL, 0), 3);

    assert_int_equal(moor_unblock(&t[1]), 0);
    assert_int_equal(moor_blocker_info(&b, info, 3), 2);
    assert_string_equal(info[0].reason, "first");
    assert_string_equal(info[1].reason, "third");
    assert_int_equal(moor_unblock(&t[0]), 0);
    assert_int_equal(moor_unblock(&t[2]), 0);
    assert_int_equal(moor_blocker_info(&b, info, 3), 0);
    moor_blocker_destroy(&b);
}

/* ---- bad arguments ---------------------------------------------------------------- */

static void test_bad_args(void **state)
{
    moor_blocker_set b, zeroed, dead;
    moor_error err = MOOR_ERROR_INIT;
    moor_block_token t = {42};
    moor_block_info info;

    (void)state;
    disk_init(&b);
    disk_init(&dead);
    moor_blocker_destroy(&dead);
    memset(&zeroed, 0, sizeof(zeroed));

    assert_int_equal(moor_block(NULL, RESIZE, &t, &err, "x"), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "moor_block on (no blocker set)");
    assert_string_equal(err.message, "moor_block on (no blocker set): NULL blocker set");
    assert_int_equal(moor_block(&zeroed, RESIZE, &t, &err, "x"), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "is not initialised");
    assert_int_equal(moor_block(&dead, RESIZE, &t, &err, "x"), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "is destroyed");
    assert_int_equal(moor_block(&b, RESIZE, NULL, &err, "x"), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, &b, "moor_block on disk 'base.qcow2'");
    assert_string_equal(err.message, "moor_block on disk 'base.qcow2': NULL token");
    assert_int_equal(moor_block(&b, 0, &t, &err, "x"), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, &b, "ops 0x0 empty or outside the set's 0x7");
    assert_int_equal(moor_block(&b, RESIZE | MOOR_BLOCKER_OP(3), &t, &err, "x"), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, &b, "ops 0x9 empty");
    assert_int_equal(moor_block(&b, RESIZE, &t, &err, NULL), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, &b, "a block needs a reason");
    assert_int_equal(moor_block(&b, RESIZE, &t, &err, "%s", ""), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, &b, "a block needs a reason");
    assert_int_equal(err.code, -EINVAL);
    assert_true(t.id == 42); /* untouched */
    assert_int_equal(moor_blocker_mask(&b), 0);
    assert_int_equal(moor_blocker_info(&b, NULL, 0), 0);

    assert_int_equal(moor_blocker_check(NULL, 0, &err), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "moor_blocker_check");
    assert_int_equal(moor_blocker_check(&dead, 0, &err), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "is destroyed");
    assert_int_equal(moor_blocker_check(&b, DISK_NOPS, &err), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, &b, "op 3 out of range (the set has 3)");
    assert_string_equal(err.message,
                        "moor_blocker_check on disk 'base.qcow2': op 3 out of range (the set "
                        "has 3)");

    assert_int_equal(moor_blocker_info(NULL, &info, 1), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "moor_blocker_info");
    assert_int_equal(moor_blocker_info(&b, NULL, 1), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, &b, "NULL out with cap 1");
    assert_int_equal(moor_blocker_relabel(NULL, "x"), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "moor_blocker_relabel");
    assert_int_equal(moor_blocker_relabel(&zeroed, "x"), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "not initialised");

    /* Quiet ones: answers, not actions. */
    assert_int_equal(moor_blocker_mask(NULL), 0);
    assert_int_equal(moor_blocker_mask(&dead), 0);
    assert_null(moor_blocker_op_name(NULL, 0));
    assert_null(moor_blocker_op_name(&dead, 0));
    assert_int_equal(moor_unblock(&(moor_block_token){0}), 0);
    assert_int_equal(moor_unblock(NULL), 0);
    moor_blocker_destroy(&b);
}

/* ---- tokens that name no block ------------------------------------------------------ */

static void test_unblock_twice(void **state)
{
    moor_blocker_set b;
    moor_block_token t = MOOR_BLOCK_TOKEN_NONE, keep = MOOR_BLOCK_TOKEN_NONE, copy;
    char want[128];

    (void)state;
    disk_init(&b);
    t = block_ok(&b, RESIZE, "once");
    copy = t;
    keep = block_ok(&b, RESIZE, "another holder's block");
    assert_int_equal(moor_unblock(&t), 0);
    assert_true(t.id == 0); /* cleared: the variable cannot be unblocked twice */
    assert_int_equal(moor_unblock(&t), 0);
    tu_expect_no_report();
    /* A copy made before the unblock still can: it is reported. */
    t = copy;
    assert_int_equal(moor_unblock(&copy), -EINVAL);
    assert_true(copy.id == t.id); /* a failure changes nothing */
    snprintf(want, sizeof(want),
             "moor_unblock of block #%" PRIu64 " by thread %d: already unblocked by thread %d "
             "(on disk 'base.qcow2')",
             t.id, gettid_(), gettid_());
    tu_expect_report(MOOR_MISUSE_UNBLOCK_UNKNOWN, NULL, want);
    /* The second unblock removed nobody else's block. */
    assert_int_equal(moor_blocker_info(&b, NULL, 0), 1);
    assert_int_equal(moor_blocker_check(&b, DISK_RESIZE, NULL), -EBUSY);

    assert_int_equal(moor_unblock(&(moor_block_token){UINT64_MAX}), -EINVAL);
    tu_expect_report(MOOR_MISUSE_UNBLOCK_UNKNOWN, NULL, "no block with that token was ever placed");
    assert_int_equal(moor_unblock(&keep), 0);
    moor_blocker_destroy(&b);
}

/* Destroy with blocks left: reported, blocks dropped, tokens void. The set
 * lives on the heap and is freed before the late unblock: the token must
 * not lead anywhere near the freed memory (ASan would say so). */
static void test_destroy_with_blocks(void **state)
{
    moor_blocker_set *b = malloc(sizeof(*b));
    moor_block_token t1 = MOOR_BLOCK_TOKEN_NONE, t2 = MOOR_BLOCK_TOKEN_NONE;
    char want[128];

    (void)state;
    assert_non_null(b);
    disk_init(b);
    t1 = block_ok(b, RESIZE | DELETE, "backup job 'nightly' reads it");
    t2 = block_ok(b, SNAPSHOT, "second");
    moor_blocker_destroy(b);
    tu_expect_report(MOOR_MISUSE_BLOCKS_LEFT, b,
                     "moor_blocker_destroy on disk 'base.qcow2' by thread");
    tu_assert_contains(tu_cap.reports[tu_cap.consumed - 1].message,
                       "2 block(s) still in place, the oldest: resize|delete blocked by thread");
    tu_assert_contains(tu_cap.reports[tu_cap.consumed - 1].message,
                       ": backup job 'nightly' reads it; a holder did not unblock");
    memset(b, 0x6b, sizeof(*b));
    free(b);

    assert_int_equal(moor_unblock(&t2), -EINVAL);
    snprintf(want, sizeof(want),
             "its blocker set disk 'base.qcow2' was destroyed with the block in place (by "
             "thread %d)",
             gettid_());
    tu_expect_report(MOOR_MISUSE_UNBLOCK_UNKNOWN, NULL, want);
    assert_int_equal(moor_unblock(&t1), -EINVAL);
    tu_expect_report(MOOR_MISUSE_UNBLOCK_UNKNOWN, NULL, "was destroyed with the block in place");
}

/* A token retired long ago (pushed out of the memory of recent ones) is
 * still refused, with a vaguer reason. */
static void test_unblock_long_ago(void **state)
{
    moor_blocker_set b;
    moor_block_token old = MOOR_BLOCK_TOKEN_NONE;

    (void)state;
    disk_init(&b);
    old = block_ok(&b, RESIZE, "old");
    moor_block_token stale = old;
    assert_int_equal(moor_unblock(&old), 0);
    for (int i = 0; i < 100; i++) {
        moor_block_token churn = block_ok(&b, DELETE, "churn");
        assert_int_equal(moor_unblock(&churn), 0);
    }
    assert_int_equal(moor_unblock(&stale), -EINVAL);
    tu_expect_report(MOOR_MISUSE_UNBLOCK_UNKNOWN, NULL,
                     "no block in place (unblocked or destroyed long ago)");
    moor_blocker_destroy(&b);
}

/* Two sets: a token only ever removes its own block. */
static void test_tokens_per_set(void **state)
{
    moor_blocker_set a, b;
    moor_block_token ta = MOOR_BLOCK_TOKEN_NONE, tb = MOOR_BLOCK_TOKEN_NONE;

    (void)state;
    disk_init(&a);
    assert_int_equal(moor_blocker_init(&b, "disk 'other'", disk_ops, DISK_NOPS), 0);
    ta = block_ok(&a, RESIZE, "on a");
    tb = block_ok(&b, RESIZE, "on b");
    assert_int_equal(moor_unblock(&tb), 0);
    assert_int_equal(moor_blocker_check(&a, DISK_RESIZE, NULL), -EBUSY);
    assert_int_equal(moor_blocker_check(&b, DISK_RESIZE, NULL), 0);
    assert_int_equal(moor_unblock(&ta), 0);
    moor_blocker_destroy(&a);
    moor_blocker_destroy(&b);
}

/* ---- allocation failure ------------------------------------------------------------- */

static void test_oom(void **state)
{
    moor_blocker_set b;
    moor_error err = MOOR_ERROR_INIT;
    moor_block_token t = MOOR_BLOCK_TOKEN_NONE;
    unsigned long n;
    int rc;

    (void)state;
    disk_init(&b);
    /* Fail allocation 1, 2, ... until moor_block stops allocating. */
    for (n = 1;; n++) {
        moor_error_clear(&err);
        moor_debug_fail_alloc(n);
        rc = moor_block(&b, RESIZE, &t, &err, "resize blocked by %s", "test");
        moor_debug_fail_alloc(0);
        if (rc == 0)
            break;
        assert_int_equal(rc, -ENOMEM);
        assert_string_equal(err.message, "moor_block on disk 'base.qcow2': no memory for the "
                                         "block (resize blocked by test)");
        assert_true(t.id == 0); /* untouched */
        assert_int_equal(moor_blocker_mask(&b), 0);
        assert_int_equal(moor_blocker_info(&b, NULL, 0), 0);
    }
    assert_int_equal(n, 2); /* one allocation per block */
    assert_int_equal(moor_blocker_check(&b, DISK_RESIZE, NULL), -EBUSY);
    assert_int_equal(moor_unblock(&t), 0);
    moor_blocker_destroy(&b);
}

/* ---- with objects: a reference is not a block --------------------------------------- */

struct disk {
    moor_lockable parent;
    moor_blocker_set blockers;
};

static const moor_class *disk_class;

static void disk_dispose(void *obj)
{
    moor_blocker_destroy(&((struct disk *)obj)->blockers);
}

static struct disk *disk_new(void)
{
    struct disk *d = moor_object_new(disk_class);

    assert_non_null(d);
    disk_init(&d->blockers);
    return d;
}

static void test_object_embedding(void **state)
{
    struct disk *d = disk_new(), *vm_ref;
    moor_block_token backing = MOOR_BLOCK_TOKEN_NONE;

    (void)state;
    /* A VM holds a reference (lifetime) and a block (busy): separate. */
    vm_ref = moor_ref(d);
    moor_lock(d);
    assert_int_equal(moor_block(&d->blockers, DELETE, &backing, NULL, "backing file of vm 'web1'"),
                     0);
    /* Checks are made with the object mutex held: the set's lock is a leaf. */
    assert_int_equal(moor_blocker_check(&d->blockers, DISK_DELETE, NULL), -EBUSY);
    assert_int_equal(moor_blocker_check(&d->blockers, DISK_RESIZE, NULL), 0);
    moor_unlock(d);
    /* More references do not make it busy; fewer do not make it idle. */
    moor_unref(vm_ref);
    assert_int_equal(moor_blocker_check(&d->blockers, DISK_DELETE, NULL), -EBUSY);
    assert_int_equal(moor_unblock(&backing), 0);
    assert_int_equal(moor_blocker_check(&d->blockers, DISK_DELETE, NULL), 0);
    moor_unref(d);

    /* The last unref with a block left: disposal reports it. */
    d = disk_new();
    block_ok(&d->blockers, RESIZE, "forgotten");
    moor_unref(d);
    tu_expect_report(MOOR_MISUSE_BLOCKS_LEFT, NULL, "1 block(s) still in place");
}

/* Issue 11, point 8: under MOOR_DEBUG=leaks, a blocker set still set up
 * when the object around it is freed (dispose forgot moor_blocker_destroy)
 * is reported and destroyed then: its tokens are void, not pointers into
 * freed memory (ASan would catch the unblock below otherwise). */
static const moor_class *forgetful_disk_class;

static void forgetful_dispose(void *obj)
{
    (void)obj; /* forgets moor_blocker_destroy() */
}

static void test_forgotten_destroy_reported(void **state)
{
    unsigned flags = moor_debug_flags();
    struct disk *d;
    moor_block_token t = MOOR_BLOCK_TOKEN_NONE;

    (void)state;
    moor_debug_set_flags(flags | MOOR_DEBUG_LEAKS);
    d = moor_object_new(forgetful_disk_class);
    assert_non_null(d);
    disk_init(&d->blockers);
    t = block_ok(&d->blockers, DELETE, "backing file of vm 'web1'");
    moor_unref(d);
    tu_expect_report(MOOR_MISUSE_NOT_DESTROYED, NULL,
                     "blocker set disk 'base.qcow2' inside object");
    tu_assert_contains(tu_cap.reports[tu_cap.consumed - 1].message,
                       "(class 'forgetful-disk') still set up when the object was freed: its "
                       "dispose function must call moor_blocker_destroy(); destroyed now");
    tu_expect_report(MOOR_MISUSE_BLOCKS_LEFT, NULL, "1 block(s) still in place");
    assert_int_equal(moor_unblock(&t), -EINVAL);
    tu_expect_report(MOOR_MISUSE_UNBLOCK_UNKNOWN, NULL, "was destroyed with the block in place");

    /* A dispose that does destroy its set: nothing to report. */
    d = disk_new();
    moor_unref(d);
    tu_expect_no_report();
    moor_debug_set_flags(flags);
}

/* ---- the default report hook, in a child -------------------------------------------- */

static int child_destroy_with_block(void *arg)
{
    moor_blocker_set b;
    moor_block_token t = MOOR_BLOCK_TOKEN_NONE;

    moor_debug_set_report(NULL, NULL);
    moor_debug_set_flags(arg ? MOOR_DEBUG_ABORT : 0);
    moor_blocker_init(&b, "disk 'child'", disk_ops, DISK_NOPS);
    moor_block(&b, RESIZE, &t, NULL, "held by the child");
    moor_blocker_destroy(&b);
    return moor_unblock(&t) == -EINVAL ? 0 : 3;
}

static void test_default_hook(void **state)
{
    tu_child c;

    (void)state;
    tu_fork(&c, child_destroy_with_block, NULL);
    tu_assert_child_exited(&c, 0);
    tu_assert_contains(c.out, "moor_blocker_destroy on disk 'child'");
    tu_assert_contains(c.out, "held by the child");
    tu_assert_contains(c.out, "was destroyed with the block in place");

    tu_fork(&c, child_destroy_with_block, &c);
    tu_assert_child_signaled(&c, SIGABRT);
    tu_assert_contains(c.out, "1 block(s) still in place");
}

/* ---- threads ------------------------------------------------------------------------- */

#define RACE_THREADS 4
#define RACE_ROUNDS  2000

struct racer {
    pthread_t thread;
    moor_blocker_set *b;
    unsigned index;
    unsigned rounds;
    atomic_bool *start;
    int failures;
};

/* Each racer owns operation index+1 (nobody else blocks it) and shares
 * operation 0 with the others: its own block must always be seen while in
 * place and never after it is gone, whatever the others do. */
static void *racer_main(void *arg)
{
    struct racer *r = arg;
    moor_error err = MOOR_ERROR_INIT;
    char mine[32];
    unsigned own = r->index + 1;

    snprintf(mine, sizeof(mine), "racer %u round ", r->index);
    /* acquire: pairs with the release that opens the gate. */
    tu_wait_for_in_thread(atomic_load_explicit(r->start, memory_order_acquire),
                          "racer %u: the start gate", r->index);
    for (unsigned i = 0; i < r->rounds; i++) {
        moor_block_token t = MOOR_BLOCK_TOKEN_NONE;
        uint64_t ops = MOOR_BLOCKER_OP(own) | (i % 2 ? MOOR_BLOCKER_OP(0) : 0);

        if (moor_block(r->b, ops, &t, NULL, "racer %u round %u", r->index, i) < 0) {
            r->failures++;
            continue;
        }
        moor_error_clear(&err);
        if (moor_blocker_check(r->b, own, &err) != -EBUSY || !strstr(err.message, mine))
            r->failures++;
        if (i % 2 && moor_blocker_check(r->b, 0, NULL) != -EBUSY)
            r->failures++;
        if (moor_unblock(&t) != 0)
            r->failures++;
        if (moor_blocker_check(r->b, own, NULL) != 0)
            r->failures++;
    }
    return NULL;
}

static void test_threads_never_lose_a_block(void **state)
{
    moor_blocker_set b;
    struct racer r[RACE_THREADS];
    atomic_bool start = false;
    moor_block_info info[8];
    unsigned rounds = tu_under_valgrind() ? 200 : RACE_ROUNDS;

    (void)state;
    assert_int_equal(moor_blocker_init(&b, "raced", NULL, RACE_THREADS + 1), 0);
    for (unsigned i = 0; i < RACE_THREADS; i++) {
        r[i] = (struct racer){.b = &b, .index = i, .rounds = rounds, .start = &start};
        assert_int_equal(pthread_create(&r[i].thread, NULL, racer_main, &r[i]), 0);
    }
    /* release: the racers' set-up before they start. */
    atomic_store_explicit(&start, true, memory_order_release);
    /* Meanwhile, snapshots must always be well-formed. */
    for (unsigned i = 0; i < rounds; i++) {
        int n = moor_blocker_info(&b, info, 8);

        assert_true(n >= 0 && n <= RACE_THREADS);
        for (int k = 0; k < n && k < 8; k++) {
            assert_true(info[k].ops != 0);
            assert_int_equal(strncmp(info[k].reason, "racer ", 6), 0);
        }
    }
    for (unsigned i = 0; i < RACE_THREADS; i++) {
        tu_join(r[i].thread, NULL);
        assert_int_equal(r[i].failures, 0);
    }
    assert_int_equal(moor_blocker_mask(&b), 0);
    assert_int_equal(moor_blocker_info(&b, NULL, 0), 0);
    moor_blocker_destroy(&b);
}

/* Two threads unblock the same token at once: exactly one wins, the other
 * is reported, and nothing else is touched. */
#define DOUBLE_ROUNDS 16

struct doubler {
    pthread_barrier_t *go;
    moor_block_token token;
    int rc;
};

static void *doubler_main(void *arg)
{
    struct doubler *d = arg;

    pthread_barrier_wait(d->go);
    d->rc = moor_unblock(&d->token);
    return NULL;
}

static void test_concurrent_double_unblock(void **state)
{
    moor_blocker_set b;
    moor_block_token bystander = MOOR_BLOCK_TOKEN_NONE;
    pthread_barrier_t go;

    (void)state;
    disk_init(&b);
    bystander = block_ok(&b, SNAPSHOT, "bystander");
    for (int round = 0; round < DOUBLE_ROUNDS; round++) {
        struct doubler d[2];
        pthread_t t[2];
        moor_block_token tok = block_ok(&b, RESIZE, "raced");

        assert_int_equal(pthread_barrier_init(&go, NULL, 2), 0);
        for (int i = 0; i < 2; i++) {
            d[i] = (struct doubler){.go = &go, .token = tok};
            assert_int_equal(pthread_create(&t[i], NULL, doubler_main, &d[i]), 0);
        }
        for (int i = 0; i < 2; i++)
            tu_join(t[i], NULL);
        pthread_barrier_destroy(&go);
        assert_true((d[0].rc == 0 && d[1].rc == -EINVAL) || (d[0].rc == -EINVAL && d[1].rc == 0));
        tu_expect_report(MOOR_MISUSE_UNBLOCK_UNKNOWN, NULL, "already unblocked by thread");
        assert_int_equal(moor_blocker_info(&b, NULL, 0), 1);
    }
    assert_int_equal(moor_blocker_mask(&b), SNAPSHOT);
    assert_int_equal(moor_unblock(&bystander), 0);
    moor_blocker_destroy(&b);
}

/* ---- token variables (issue 14) ------------------------------------------------------ */

/* moor_block into a variable that still holds a block in place is refused
 * (the block it names would become unremovable); into a cleared or void
 * one it is fine. */
static void test_block_into_live_token(void **state)
{
    moor_blocker_set b, other;
    moor_error err = MOOR_ERROR_INIT;
    moor_block_token t = MOOR_BLOCK_TOKEN_NONE, held;

    (void)state;
    disk_init(&b);
    disk_init(&other);
    assert_int_equal(moor_block(&b, RESIZE, &t, &err, "first"), 0);
    held = t;
    assert_int_equal(moor_block(&other, DELETE, &t, &err, "second"), -EBUSY);
    assert_true(t.id == held.id); /* untouched */
    assert_int_equal(moor_blocker_mask(&other), 0);
    tu_assert_contains(err.message, "the token still holds block #");
    tu_expect_report(MOOR_MISUSE_BLOCK_TOKEN_LIVE, &other, "unblock it first");
    assert_int_equal(moor_blocker_check(&b, DISK_RESIZE, NULL), -EBUSY); /* still in place */

    assert_int_equal(moor_unblock(&t), 0);
    assert_int_equal(moor_block(&other, DELETE, &t, &err, "second"), 0); /* cleared: fine */
    assert_true(t.id > held.id);
    moor_blocker_destroy(&other); /* reported: its token becomes void */
    tu_expect_report(MOOR_MISUSE_BLOCKS_LEFT, NULL, "1 block(s) still in place");
    assert_int_equal(moor_block(&b, DELETE, &t, &err, "third"), 0); /* void token: fine */
    assert_int_equal(moor_unblock(&t), 0);
    moor_blocker_destroy(&b);
}

/* Fork while another thread holds the token table's mutex: the child must
 * find it free (atfork handlers) and be able to block and unblock.
 *
 * Set-up, made deterministic: this thread holds set A's mutex (a field of
 * the public struct), so a thread calling moor_block(A) takes the table's
 * mutex and then sleeps on A's: it holds the table's mutex while it sleeps.
 * A third thread then forks; with the handlers its fork waits for the
 * table's mutex, which this thread sees as that thread sleeping, and only
 * then releases A. Without them the fork happens at once with the table
 * locked, and the child hangs (killed after 10 s: the test fails). */
struct forker {
    moor_blocker_set *a;
    _Atomic int tid;
    int rc;
    int status;
};

static char thread_state(int tid)
{
    char path[64], buf[256];
    FILE *f;
    char *p;

    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
    f = fopen(path, "re");
    if (!f)
        return '?';
    p = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
    fclose(f);
    return p && p[1] == ' ' ? p[2] : '?';
}

static void *blocker_in_a(void *arg)
{
    struct forker *f = arg;
    moor_block_token t = MOOR_BLOCK_TOKEN_NONE;

    atomic_store(&f->tid, gettid_());
    f->rc = moor_block(f->a, RESIZE, &t, NULL, "placed while the table was held");
    if (f->rc == 0)
        f->rc = moor_unblock(&t);
    return NULL;
}

static int child_block_unblock(void)
{
    moor_blocker_set c;
    moor_block_token t = MOOR_BLOCK_TOKEN_NONE;

    if (moor_blocker_init(&c, "disk 'in the child'", disk_ops, DISK_NOPS) != 0 ||
        moor_block(&c, DELETE, &t, NULL, "child") != 0 || moor_unblock(&t) != 0)
        return 3;
    moor_blocker_destroy(&c);
    return 0;
}

/* The child reports through a pipe, not its exit status: under valgrind a
 * forked child of a threaded process exits with leak errors of its own
 * (the other threads' stacks), whatever it did. */
static void *forker_main(void *arg)
{
    struct forker *f = arg;
    struct pollfd pfd;
    int p[2];
    char verdict = 'x';
    pid_t pid;

    f->status = -1;
    if (pipe(p) < 0)
        return NULL;
    atomic_store(&f->tid, gettid_());
    pid = fork();
    if (pid == 0) {
        char r = child_block_unblock() == 0 ? 'y' : 'n';

        if (write(p[1], &r, 1) != 1)
            _exit(4);
        _exit(0);
    }
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        return NULL;
    }
    pfd = (struct pollfd){.fd = p[0], .events = POLLIN};
    if (poll(&pfd, 1, 10000) == 1 && read(p[0], &verdict, 1) == 1)
        f->status = verdict == 'y' ? 0 : 3;
    else
        f->status = -2; /* hung: the table was inherited locked */
    close(p[0]);
    kill(pid, SIGKILL); /* gone already, or hung */
    waitpid(pid, NULL, 0);
    return NULL;
}

static void test_fork_while_table_locked(void **state)
{
    moor_blocker_set a;
    struct forker placer = {.a = &a}, forker = {.a = &a};
    pthread_t tp, tf;

    (void)state;
    disk_init(&a);
    pthread_mutex_lock(&a.lock);
    assert_int_equal(pthread_create(&tp, NULL, blocker_in_a, &placer), 0);
    tu_wait_for(atomic_load(&placer.tid) && thread_state(atomic_load(&placer.tid)) == 'S',
                "the placing thread to sleep on set A's mutex");
    assert_int_equal(pthread_create(&tf, NULL, forker_main, &forker), 0);
    /* With the handlers the forker sleeps in fork's prepare step; without
     * them it sleeps in waitpid's poll: either way it sleeps soon. */
    tu_wait_for(atomic_load(&forker.tid) && thread_state(atomic_load(&forker.tid)) == 'S',
                "the forking thread to wait");
    pthread_mutex_unlock(&a.lock);
    tu_join(tp, NULL);
    tu_join(tf, NULL);
    assert_int_equal(placer.rc, 0);
    if (forker.status != 0)
        fail_msg("the child forked while the table was held: %s",
                 forker.status == -2  ? "hung (the table was inherited locked)"
                 : forker.status == 3 ? "its block or unblock failed"
                                      : "fork or pipe failed");
    moor_blocker_destroy(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_init_destroy),
        TU_TEST(test_init_bad_args),
        TU_TEST(test_sixty_four_ops),
        TU_TEST(test_check_exact_message),
        TU_TEST(test_first_match),
        TU_TEST(test_names_and_labels),
        TU_TEST(test_reason_copied_and_cut),
        TU_TEST(test_holder_and_age),
        TU_TEST(test_info),
        TU_TEST(test_bad_args),
        TU_TEST(test_unblock_twice),
        TU_TEST(test_destroy_with_blocks),
        TU_TEST(test_unblock_long_ago),
        TU_TEST(test_tokens_per_set),
        TU_TEST(test_oom),
        TU_TEST(test_object_embedding),
        TU_TEST(test_forgotten_destroy_reported),
        TU_TEST(test_default_hook),
        TU_TEST(test_threads_never_lose_a_block),
        TU_TEST(test_concurrent_double_unblock),
        TU_TEST(test_block_into_live_token),
        TU_TEST(test_fork_while_table_locked),
    };

    disk_class =
        moor_class_new("disk", moor_lockable_class(), sizeof(struct disk), disk_dispose, NULL);
    forgetful_disk_class = moor_class_new("forgetful-disk", moor_lockable_class(),
                                          sizeof(struct disk), forgetful_dispose, NULL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
