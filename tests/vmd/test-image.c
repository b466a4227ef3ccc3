/* SPDX-License-Identifier: MIT */
/*
 * test-image.c - image.c called directly (real qemu-img): a job's own
 * block on an image (the backup job of issue 14 places one through
 * vmd_image_block) refuses resize and delete with the job's reason and
 * age, and lifting it lets both through; a block cannot be placed on an
 * image being deleted; QEMU node names derived from image names; every
 * image object is freed at the end (census).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <moor/debug.h>
#include <moor/object.h>

#include "test-util.h"
#include "vmd-test.h"

#include "image.h"

static void create(struct vt *t, const char *name, const char *backing)
{
    struct vmd_image_create c = {.format = VMD_IMAGE_QCOW2, .size_mib = backing ? 0 : 8};
    moor_error err = MOOR_ERROR_INIT;
    struct json_object *out = NULL;

    snprintf(c.name, sizeof(c.name), "%s", name);
    snprintf(c.backing, sizeof(c.backing), "%s", backing ? backing : "");
    if (vmd_image_create(&t->vmd, &c, &out, &err) != 0)
        fail_msg("create %s: %s", name, err.message);
    json_object_put(out);
}

static void test_job_block(void **state)
{
    struct vt t;
    moor_error err = MOOR_ERROR_INIT;
    struct json_object *out = NULL;
    moor_block_token backup = MOOR_BLOCK_TOKEN_NONE;

    (void)state;
    vt_init(&t, NULL, 5000);
    t.vmd.images = moor_registry_new(&err);
    assert_non_null(t.vmd.images);
    assert_int_equal(vmd_images_load(&t.vmd, &err), 0);
    create(&t, "src.qcow2", NULL);
    vmd_image *img = vmd_image_lookup(&t.vmd, "src.qcow2");
    assert_non_null(img);

    assert_int_equal(
        vmd_image_block(img,
                        MOOR_BLOCKER_OP(VMD_IMAGE_OP_RESIZE) | MOOR_BLOCKER_OP(VMD_IMAGE_OP_DELETE),
                        &backup, &err, "backup job of domain %s", "web1"),
        0);
    assert_int_equal(vmd_image_resize(&t.vmd, img, 16, &out, &err), -EBUSY);
    tu_assert_contains(err.message,
                       "resize of image src.qcow2 refused: backup job of domain web1 (blocked by "
                       "thread");
    tu_assert_contains(err.message, " s)"); /* its age */
    assert_int_equal(vmd_image_delete(&t.vmd, img, &out, &err), -EBUSY);
    tu_assert_contains(err.message, "delete of image src.qcow2 refused: backup job of domain web1");
    /* A second block into the same, live token is refused (blocker.h). */
    assert_int_equal(
        vmd_image_block(img, MOOR_BLOCKER_OP(VMD_IMAGE_OP_RESIZE), &backup, &err, "again"), -EBUSY);
    assert_int_equal(moor_unblock(&backup), 0);

    assert_int_equal(vmd_image_resize(&t.vmd, img, 16, &out, &err), 0);
    json_object_put(out);
    assert_int_equal(vmd_image_delete(&t.vmd, img, &out, &err), 0);
    json_object_put(out);
    /* Deleted: no new block (the caller still holds its reference). */
    assert_int_equal(
        vmd_image_block(img, MOOR_BLOCKER_OP(VMD_IMAGE_OP_DELETE), &backup, &err, "late backup"),
        -ENOENT);
    tu_assert_contains(err.message, "image src.qcow2 was deleted");
    moor_unref(img);

    vmd_images_shutdown(&t.vmd);
    moor_clear(&t.vmd.images); /* waits for the registry's deferred releases */
    vt_done(&t);
    assert_int_equal(moor_census_total(), 0);
}

/* An overlay holds its backing image alive (a reference), whatever the
 * pool does: with only the top of a chain held, all three images live on
 * after the registry let go of them, and unref of the top frees the chain
 * (each overlay's dispose drops its backing). */
static void test_chain_references(void **state)
{
    struct vt t;
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    vt_init(&t, NULL, 5000);
    t.vmd.images = moor_registry_new(&err);
    assert_int_equal(vmd_images_load(&t.vmd, &err), 0);
    size_t before = moor_census_total(); /* the vt's objects and the registry */
    create(&t, "base", NULL);
    create(&t, "mid", "base");
    create(&t, "top", "mid");
    assert_int_equal(moor_census_total(), before + 3);
    vmd_image *top = vmd_image_lookup(&t.vmd, "top");
    vmd_images_shutdown(&t.vmd);
    moor_clear(&t.vmd.images);
    assert_int_equal(moor_census_total(), before - 1 + 3); /* no registry, three images */
    moor_unref(top);
    assert_int_equal(moor_census_total(), before - 1);
    vt_done(&t);
    assert_int_equal(moor_census_total(), 0);
}

static void test_node_names(void **state)
{
    char node[VMD_IMAGE_NODE_MAX + 1];

    (void)state;
    vmd_image_node_name(0, "base.qcow2", node);
    assert_string_equal(node, "d0-base.qcow2");
    vmd_image_node_name(15, "a-very-long-image-name-of-sixty-four-characters-is-allowed.qcow2",
                        node);
    assert_int_equal(strlen(node), VMD_IMAGE_NODE_MAX);
    assert_string_equal(node, "d15-a-very-long-image-name-of-s");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_block),
        cmocka_unit_test(test_chain_references),
        cmocka_unit_test(test_node_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
