/* SPDX-License-Identifier: MIT */
/*
 * blocker-example.c - the example of docs/blocker.md: a disk image that is
 * the backing file of a VM and is read by a backup job. Each of the two
 * holds a reference (keeps the image alive) and a block (keeps it from
 * being resized or deleted, and says why). The references and the blocks
 * are dropped independently; the image can be deleted only once nobody
 * blocks it, and is freed only once nobody refers to it.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>

#include <moor/blocker.h>
#include <moor/object.h>

enum { IMG_RESIZE, IMG_DELETE, IMG_NOPS };
static const char *const image_ops[IMG_NOPS] = {"resize", "delete"};

struct image {
    moor_lockable parent;
    moor_blocker_set blockers; /* has its own leaf lock */
    uint64_t size;             /* guarded by the image's mutex */
    int deleted;
};

static const moor_class *image_class;
static int disposed;

static void image_dispose(void *obj)
{
    moor_blocker_destroy(&((struct image *)obj)->blockers);
    disposed = 1;
}

static struct image *image_new(const char *label, uint64_t size)
{
    struct image *img = moor_object_new(image_class);

    if (img && moor_blocker_init(&img->blockers, label, image_ops, IMG_NOPS) < 0)
        moor_clear(&img);
    if (img)
        img->size = size;
    return img;
}

/* A user of the image: its reference and its block travel together. */
struct user {
    struct image *img;      /* owned reference */
    moor_block_token block; /* owned block; MOOR_BLOCK_TOKEN_NONE when none */
};

static int user_attach(struct user *u, struct image *img, uint64_t ops, const char *why,
                       moor_error *err)
{
    int rc;

    moor_lock(img);
    rc = moor_block(&img->blockers, ops, &u->block, err, "%s", why);
    moor_unlock(img);
    if (rc == 0)
        u->img = moor_ref(img);
    return rc;
}

static void user_detach(struct user *u)
{
    moor_unblock(&u->block); /* clears u->block */
    moor_clear(&u->img);
}

/* Check and act under the image's mutex, so no block can slip in between. */
static int image_resize(struct image *img, uint64_t size, moor_error *err)
{
    int rc;

    moor_lock(img);
    rc = moor_blocker_check(&img->blockers, IMG_RESIZE, err);
    if (rc == 0)
        img->size = size;
    moor_unlock(img);
    return rc;
}

static int image_delete(struct image *img, moor_error *err)
{
    int rc;

    moor_lock(img);
    rc = moor_blocker_check(&img->blockers, IMG_DELETE, err);
    if (rc == 0)
        img->deleted = 1; /* unlink the file, drop it from the catalogue... */
    moor_unlock(img);
    return rc;
}

int main(void)
{
    moor_error err = MOOR_ERROR_INIT;
    struct user vm = {0}, backup = {0};
    struct image *img;
    int failures = 0;

    image_class =
        moor_class_new("image", moor_lockable_class(), sizeof(struct image), image_dispose, NULL);
    img = image_new("image 'base.qcow2'", UINT64_C(10) << 30);
    if (!img)
        return 1;

    user_attach(&vm, img, MOOR_BLOCKER_OP(IMG_RESIZE) | MOOR_BLOCKER_OP(IMG_DELETE),
                "backing file of vm 'web1'", NULL);
    user_attach(&backup, img, MOOR_BLOCKER_OP(IMG_DELETE), "read by backup job 'nightly'", NULL);

    if (image_resize(img, UINT64_C(20) << 30, &err) == -EBUSY)
        printf("resize: %s\n", moor_error_message(&err));
    else
        failures++;

    user_detach(&vm); /* the VM was shut down: its block and reference go */
    if (image_resize(img, UINT64_C(20) << 30, &err) == 0)
        printf("resize: done, %llu GiB\n", (unsigned long long)(img->size >> 30));
    else
        failures++;
    if (image_delete(img, &err) == -EBUSY)
        printf("delete: %s\n", moor_error_message(&err));
    else
        failures++;

    user_detach(&backup); /* the backup finished */
    if (image_delete(img, &err) == 0)
        printf("delete: done\n");
    else
        failures++;

    /* Deleted, but still alive while we hold our reference; freed now. */
    moor_clear(&img);
    printf("image disposed: %s\n", disposed ? "yes" : "no");
    return failures || !disposed;
}
