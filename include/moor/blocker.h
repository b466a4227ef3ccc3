/* SPDX-License-Identifier: MIT */
/*
 * moor/blocker.h - busy markers: "don't start X on this, because Y".
 *
 * A reference answers "may I still touch this memory?"; a blocker answers
 * "may I start this operation now?". They are independent on purpose
 * (rule 3 in docs/concepts.md): a disk image used as a backing file by a
 * VM and read by a backup job is kept alive by the references those two
 * hold, and kept from being resized or deleted by the blocks they place,
 * each with its own reason. Counting references to decide "is it busy"
 * gets both questions wrong; a blocker never keeps anything alive.
 *
 * A moor_blocker_set is embedded in whatever can be blocked (an object's
 * instance struct, usually) and set up with moor_blocker_init():
 *
 *     enum { DISK_RESIZE, DISK_DELETE, DISK_SNAPSHOT, DISK_NOPS };
 *     static const char *const disk_ops[DISK_NOPS] = {"resize", "delete",
 *                                                     "snapshot"};
 *     moor_blocker_init(&disk->blockers, "disk 'base.qcow2'", disk_ops, DISK_NOPS);
 *
 * Operations are application-defined small integers 0..63, one vocabulary
 * per set, named by a table the application passes at init (so messages
 * say "resize", not "op 0"); a block covers a mask of them, built with
 * MOOR_BLOCKER_OP(). Several blocks may cover the same operation; a check
 * names the oldest one that covers it (and how many others do).
 *
 *     moor_block(&disk->blockers, MOOR_BLOCKER_OP(DISK_RESIZE) |
 *                MOOR_BLOCKER_OP(DISK_DELETE), &job->disk_block, err,
 *                "backup job '%s' reads it", job->name);
 *     ...
 *     rc = moor_blocker_check(&disk->blockers, DISK_RESIZE, err);
 *     // -EBUSY: "resize of disk 'base.qcow2' refused: backup job
 *     //          'nightly' reads it (blocked by thread 4121 for 12.3 s)"
 *
 * Locks. Each set has its own small mutex, a leaf: moor never takes
 * another lock or calls out while holding it, so every call may be made
 * with an object mutex (or any other application lock) held. A check of
 * an operation that nobody blocks does not even take it: it is one relaxed
 * load of the union of all masks. A check is an answer for the moment
 * it is made: to start an operation only if it is not blocked, make the
 * check and the start under the object mutex, and place blocks under that
 * mutex too (the pattern in docs/blocker.md).
 *
 * Tokens. moor_block() hands back a moor_block_token: a 64-bit number,
 * unique for the life of the process and never reused, not a pointer.
 * moor_unblock() looks the number up in a process-wide table before
 * touching anything. So a second unblock of the same token, an unblock
 * after the set was destroyed (even after its memory was freed and
 * reused), or an unblock of a made-up value finds nothing, is reported as
 * misuse and returns -EINVAL: it can never touch freed memory, and never
 * removes somebody else's block. A pointer token could do neither; a
 * number with a generation in a per-set slot could not survive the set's
 * memory going away. The price is one process-wide leaf mutex taken by
 * block and unblock (short: a hash-bucket insert or removal and a list
 * link); moor_blocker_check() and moor_blocker_info() never take it. The
 * token is a struct so that it cannot be confused with an operation mask.
 * The same token may be unblocked from any thread, not only the one that
 * placed the block (a backup job ends where it ends). moor_unblock() takes
 * the token by address and clears it, and moor_block() refuses to
 * overwrite a token that still names a block, so the classic slip, a
 * token field reused for a second block before the first was removed, is
 * reported instead of leaking a block nobody can remove.
 *
 * Fork. The token table's mutex is taken around fork() (pthread_atfork:
 * the parent waits for any holder to leave, both sides release it), so a
 * child forked while another thread was placing or removing a block finds
 * it free and may block and unblock. A set's own mutex is not covered: it
 * is held only inside these calls, briefly, but a child should use only
 * sets it sets up itself, like any other lock it inherits.
 *
 * Lifetime. A block does not keep the set, or the object around it,
 * alive; whoever places a block should own a reference to the object
 * until it unblocks (it needs the object then anyway). Destroying a set
 * with blocks still in place is misuse: it is reported, the blocks are
 * dropped, and their tokens become void (a later unblock is reported,
 * naming the destroyed set).
 *
 * Strings. The label and reasons are copied (cut at the sizes below). The
 * operation-name table and its strings are borrowed for the life of the
 * set: pass a static table.
 */
#ifndef MOOR_BLOCKER_H
#define MOOR_BLOCKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <moor/error.h>
#include <moor/export.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOOR_BLOCKER_OPS_MAX 64u /* operations per set: bits of a uint64_t */

/* The mask of operation @op, for moor_block(). */
#define MOOR_BLOCKER_OP(op) (UINT64_C(1) << (op))

/* Sizes of the copied strings, including the NUL. */
#define MOOR_BLOCKER_LABEL_SIZE  48
#define MOOR_BLOCKER_REASON_SIZE 128

/* A placed block: its number, never 0 for a real block. */
typedef struct moor_block_token {
    uint64_t id;
} moor_block_token;

/* "No block": what moor_unblock() ignores. */
#define MOOR_BLOCK_TOKEN_NONE ((moor_block_token){0})

/* ---- the embedded struct (private fields; public for embedding) ------- */

typedef struct moor__block moor__block;

typedef struct moor_blocker_set {
    uint32_t magic;              /* alive or destroyed: catches use of either */
    unsigned nops;               /* operations 0..nops-1 are valid */
    const char *const *op_names; /* borrowed; NULL: "op N" */
    _Atomic uint64_t blocked;    /* union of the masks below (a hint) */
    pthread_mutex_t lock;        /* leaf: guards everything below */
    moor__block *head, *tail;    /* blocks, oldest first */
    unsigned count;
    char label[MOOR_BLOCKER_LABEL_SIZE];
    /* MOOR_DEBUG=leaks at init: on the process-wide list of sets that the
     * last unref of an object checks (under the token table's lock). */
    bool tracked;
    struct moor_blocker_set *tracked_prev, *tracked_next;
} moor_blocker_set;

/* ---- set-up ------------------------------------------------------------ */

/*
 * moor_blocker_init - set up @b for operations 0..@nops-1.
 *
 * @label names what is blocked in messages ("disk 'base.qcow2'"), copied;
 * NULL names it by address. @op_names, if not NULL, is a table of @nops
 * names (an entry may be NULL: "op N" then), borrowed for the life of @b.
 * @b must not be moved or copied afterwards.
 * Ownership: @b stays the caller's. Locks: none needed (@b is not shared
 * yet). Blocks: no. Context: any thread.
 * Under MOOR_DEBUG=leaks (when this init runs), a set embedded in a moor
 * object that is still set up when the object is freed (its dispose did
 * not call moor_blocker_destroy) is reported as MOOR_MISUSE_NOT_DESTROYED
 * and destroyed then, so that no token is left pointing into freed
 * memory. Without that flag nothing is tracked and nothing is checked.
 * Returns: 0, or -EINVAL (also reported as misuse) when @b is NULL or
 *   @nops is 0 or above MOOR_BLOCKER_OPS_MAX; or the -errno of
 *   pthread_mutex_init() (-ENOMEM, -EAGAIN; not on glibc, where it cannot
 *   fail). @b is untouched on any failure.
 */
MOOR_EXPORT int moor_blocker_init(moor_blocker_set *b, const char *label,
                                  const char *const *op_names, unsigned nops);

/*
 * moor_blocker_destroy - tear @b down; NULL-safe, and a set that is zeroed
 * (never initialised) or already destroyed is left alone. Call from the
 * owning object's dispose function.
 *
 * Blocks still in place are misuse (a holder that did not own a reference,
 * or forgot to unblock): one report names them, then they are dropped and
 * their tokens become void.
 * Ownership: frees the block records; @b's storage stays the caller's.
 * Locks: takes the token table's and @b's leaf mutexes; no other thread
 *   may use @b any more. Blocks: no. Context: any thread (the one that
 *   drops the last reference). Returns: nothing.
 */
MOOR_EXPORT void moor_blocker_destroy(moor_blocker_set *b);

/*
 * moor_blocker_relabel - name @b differently in later messages (copied;
 * the object was renamed). Ownership: nothing to free. Locks: @b's leaf
 * mutex, briefly; any other lock may be held. Blocks: no. Context: any
 * thread.
 * Returns: 0, or -EINVAL (misuse) for a NULL or uninitialised @b.
 */
MOOR_EXPORT int moor_blocker_relabel(moor_blocker_set *b, const char *label);

/* ---- blocking ------------------------------------------------------------ */

/*
 * moor_block - place a block on the operations in @ops, for the reason
 * formatted from @fmt (copied; cut at MOOR_BLOCKER_REASON_SIZE - 1 bytes,
 * ending in "..."). The block records the calling thread and the time.
 *
 * *@token must hold MOOR_BLOCK_TOKEN_NONE or a token that no longer names
 * a block (one that moor_unblock() cleared, or whose set was destroyed):
 * initialise token variables and fields with MOOR_BLOCK_TOKEN_NONE.
 * Overwriting a token that still names a block would lose the only handle
 * on that block (it could never be removed), so that is refused.
 * Ownership: on success *@token holds the new block's token; the caller
 *   owns the block and removes it with moor_unblock(&token). On failure
 *   *@token is untouched and nothing was placed.
 * Locks: takes the token table's leaf mutex, then @b's; any other lock
 *   may be held. Blocks: no (one allocation). Context: any thread.
 * Returns: 0, or:
 *   -ENOMEM  no memory for the block record;
 *   -EBUSY   (also reported as MOOR_MISUSE_BLOCK_TOKEN_LIVE) *@token still
 *            names a block in place (on any set), which is left as it is;
 *   -EINVAL  (also reported as misuse) NULL or uninitialised @b, NULL
 *            @token, @ops empty or naming an operation >= the set's nops,
 *            NULL or empty reason.
 */
MOOR_EXPORT int moor_block(moor_blocker_set *b, uint64_t ops, moor_block_token *token,
                           moor_error *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/*
 * moor_unblock - remove the block *@token stands for and clear *@token to
 * MOOR_BLOCK_TOKEN_NONE, so the variable can neither be unblocked twice
 * nor hide a live block from a later moor_block(). A NULL @token, or one
 * holding MOOR_BLOCK_TOKEN_NONE (id 0), does nothing and returns 0, so a
 * token field that was never set, or was already cleared, can be passed.
 *
 * A token that names no block in place (its set destroyed, or never
 * handed out, or copied and unblocked through the copy) touches nothing;
 * it is reported as misuse, saying which of those it was while the
 * process still remembers (the last 64 retired tokens), and *@token is
 * left as it was (a failure changes nothing).
 * Ownership: frees the block record. Locks: takes the token table's leaf
 *   mutex, then the set's; any other lock may be held. Blocks: no.
 *   Context: any thread (not necessarily the one that placed the block).
 *   Ordering: under the set's mutex, which every check whose mask bit is
 *   set also takes, so such a check sees the block gone once this returns.
 * Returns: 0 (also for NULL / NONE), or -EINVAL for a token that names no
 *   block in place.
 */
MOOR_EXPORT int moor_unblock(moor_block_token *token);

/* ---- asking -------------------------------------------------------------- */

/*
 * moor_blocker_check - may operation @op start on @b now?
 *
 * When some block covers @op, the error names the operation, the set's
 * label and, of the oldest block covering it, the reason, the thread that
 * placed it and how long ago; then how many other blocks also cover it:
 *   "resize of disk 'base.qcow2' refused: backup job 'nightly' reads it
 *    (blocked by thread 4121 for 12.3 s)"
 *   "... (blocked by thread 4121 for 12.3 s; 1 more block)"
 * Ownership: @err stays the caller's. Locks: none when @op is not
 *   blocked (one relaxed load); else @b's leaf mutex, briefly. Any other
 *   lock may be held. Blocks: no. Context: any thread.
 * Returns: 0 when no block covers @op, or:
 *   -EBUSY   a block covers @op (message as above);
 *   -EINVAL  (also reported as misuse) NULL or uninitialised @b, or @op
 *            >= the set's nops.
 */
MOOR_EXPORT int moor_blocker_check(moor_blocker_set *b, unsigned op, moor_error *err);

/*
 * moor_blocker_mask - the operations some block covers right now (the
 * union of all masks), for "what can't I do with this disk" displays.
 * Ordering: relaxed; a moment's answer, like moor_blocker_check().
 * Ownership: nothing to free. Locks: none. Blocks: never. Context: any
 * thread. Returns: the mask; 0 for a NULL or uninitialised @b.
 */
MOOR_EXPORT uint64_t moor_blocker_mask(const moor_blocker_set *b);

/*
 * moor_blocker_op_name - the name of operation @op in @b's vocabulary:
 * the table entry, or NULL when it has none (the caller then prints
 * "op N"); NULL also for a NULL @b or an @op out of range.
 * Ownership: borrowed from the table passed to moor_blocker_init().
 * Locks: none. Blocks: never. Context: any thread. Returns: the name, or
 * NULL.
 */
MOOR_EXPORT const char *moor_blocker_op_name(const moor_blocker_set *b, unsigned op);

/* ---- introspection ------------------------------------------------------- */

typedef struct moor_block_info {
    moor_block_token token;
    uint64_t ops;    /* the mask the block covers */
    int thread;      /* kernel thread id of the thread that placed it */
    uint64_t age_ns; /* how long it has been in place */
    char reason[MOOR_BLOCKER_REASON_SIZE];
} moor_block_info;

/*
 * moor_blocker_info - copy the blocks in place on @b, oldest first, into
 * @out[0..@cap-1], for debug tooling. Plain copies: valid after the call.
 * Like snprintf, it returns the total, which may exceed @cap: call with
 * @cap 0 (and @out NULL) to count, or with a bigger array again.
 * Ownership: @out stays the caller's; nothing is allocated.
 * Locks: @b's leaf mutex, briefly. Blocks: no. Context: any thread.
 * Returns: the number of blocks in place (>= 0), or -EINVAL (misuse) for
 *   a NULL or uninitialised @b or a NULL @out with @cap > 0; @out is
 *   untouched then.
 */
MOOR_EXPORT int moor_blocker_info(moor_blocker_set *b, moor_block_info *out, unsigned cap);

#ifdef __cplusplus
}
#endif

#endif /* MOOR_BLOCKER_H */
