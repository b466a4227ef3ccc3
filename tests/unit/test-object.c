/* SPDX-License-Identifier: MIT */
/*
 * test-object.c - classes, objects, lockable objects, weak references,
 * auto-unref helpers and the census, including every misuse report and
 * allocation failure they can meet.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include <moor/debug.h>
#include <moor/object.h>

#include "test-util.h"

#define THREADS 4

/* ---- classes used by the tests (created once, in main) ------------------ */

struct plain {
    moor_object parent;
    int value;
    char pad[40];
};

struct box {
    moor_lockable parent;
    int counter;
};

struct base {
    moor_lockable parent;
    int b;
};

struct mid {
    struct base parent;
    int m;
};

struct leaf {
    struct mid parent;
    int l;
};

static const moor_class *plain_class; /* "test.plain", child of moor_object */
static const moor_class *other_class; /* "test.other", child of moor_object */
static const moor_class *box_class;   /* "test.box", child of moor_lockable */
static const moor_class *base_class;  /* "test.base" < moor_lockable */
static const moor_class *mid_class;   /* "test.mid" < test.base */
static const moor_class *leaf_class;  /* "test.leaf" < test.mid */

/* What the dispose functions saw, in order. Only the test thread, or a
 * thread it joins before looking, disposes. */
static struct {
    int count;
    const char *order[8];
    void *last;
} disposed;

static void record_dispose(const char *who, void *obj)
{
    if (disposed.count < 8)
        disposed.order[disposed.count] = who;
    disposed.count++;
    disposed.last = obj;
}

static void reset_disposed(void)
{
    memset(&disposed, 0, sizeof(disposed));
}

/* Hooks that a test may point at to run code inside a dispose function. */
static void (*plain_dispose_hook)(struct plain *p);

static void plain_dispose(void *obj)
{
    record_dispose("plain", obj);
    if (plain_dispose_hook)
        plain_dispose_hook(obj);
}

static void box_dispose(void *obj)
{
    record_dispose("box", obj);
}

static void base_dispose(void *obj)
{
    record_dispose("base", obj);
}

static void mid_dispose(void *obj)
{
    record_dispose("mid", obj);
}

static void leaf_dispose(void *obj)
{
    record_dispose("leaf", obj);
}

static const moor_class *must_class(const char *name, const moor_class *parent, size_t size,
                                    moor_dispose_fn dispose)
{
    moor_error err = MOOR_ERROR_INIT;
    const moor_class *k = moor_class_new(name, parent, size, dispose, &err);

    if (!k) {
        fprintf(stderr, "moor_class_new(%s): %s\n", name, moor_error_message(&err));
        exit(1);
    }
    return k;
}

static int object_setup(void **state)
{
    reset_disposed();
    plain_dispose_hook = NULL;
    return tu_setup(state);
}

#define OBJ_TEST(fn) cmocka_unit_test_setup_teardown(fn, object_setup, tu_teardown)

/* A buffer that is not a moor object (its first word is not the magic). */
static long not_an_object[16] = {0x1234};

/* ---- thread helpers ------------------------------------------------------- */

static void *lock_try_thread(void *obj)
{
    int rc = moor_lock_try(obj);

    if (rc == 0)
        moor_unlock(obj);
    return (void *)(intptr_t)rc;
}

/* moor_lock_try() from another thread: 0 if @obj was free, -EBUSY if
 * held. */
static int lock_try_elsewhere(void *obj)
{
    return (int)(intptr_t)tu_in_thread(lock_try_thread, obj);
}

static void *lock_held_thread(void *obj)
{
    return (void *)(intptr_t)moor_lock_held(obj);
}

static void *unlock_thread(void *obj)
{
    moor_unlock(obj);
    return NULL;
}

/* ---- classes -------------------------------------------------------------- */

static void test_root_classes(void **state)
{
    (void)state;
    assert_string_equal(moor_class_name(moor_object_class()), "moor_object");
    assert_string_equal(moor_class_name(moor_lockable_class()), "moor_lockable");
    assert_null(moor_class_parent(moor_object_class()));
    assert_ptr_equal(moor_class_parent(moor_lockable_class()), moor_object_class());
    assert_int_equal(moor_class_live(moor_object_class()), 0);
    assert_int_equal(moor_class_live(moor_lockable_class()), 0);
}

static void test_class_introspection(void **state)
{
    (void)state;
    assert_string_equal(moor_class_name(leaf_class), "test.leaf");
    assert_ptr_equal(moor_class_parent(leaf_class), mid_class);
    assert_ptr_equal(moor_class_parent(mid_class), base_class);
    assert_ptr_equal(moor_class_parent(base_class), moor_lockable_class());
    assert_ptr_equal(moor_class_parent(plain_class), moor_object_class());

    /* Not a class: a fixed answer, no crash, no report. */
    assert_string_equal(moor_class_name(NULL), "(not a class)");
    assert_null(moor_class_parent(NULL));
    assert_int_equal(moor_class_live(NULL), 0);
    assert_string_equal(moor_class_name((const moor_class *)not_an_object), "(not a class)");
    assert_null(moor_class_parent((const moor_class *)not_an_object));
    assert_int_equal(moor_class_live((const moor_class *)not_an_object), 0);
    tu_expect_no_report();
}

static void test_class_new_copies_name(void **state)
{
    char name[32] = "test.copied";
    moor_error err = MOOR_ERROR_INIT;
    const moor_class *k;

    (void)state;
    k = moor_class_new(name, moor_object_class(), sizeof(moor_object), NULL, &err);
    assert_non_null(k);
    assert_false(moor_error_is_set(&err));
    memset(name, 'z', sizeof(name) - 1);
    assert_string_equal(moor_class_name(k), "test.copied");

    /* A class without a dispose function and without extra fields works. */
    moor_object *o = moor_object_new(k);
    assert_non_null(o);
    assert_ptr_equal(moor_object_get_class(o), k);
    assert_int_equal(moor_class_live(k), 1);
    moor_unref(o);
    assert_int_equal(moor_class_live(k), 0);
}

static void expect_class_einval(const char *name, const moor_class *parent, size_t size,
                                const char *text)
{
    moor_error err = MOOR_ERROR_INIT;

    assert_null(moor_class_new(name, parent, size, NULL, &err));
    assert_int_equal(err.code, -EINVAL);
    tu_assert_contains(moor_error_message(&err), text);
    /* Without an error record: same answer. */
    assert_null(moor_class_new(name, parent, size, NULL, NULL));
}

static void test_class_new_einval(void **state)
{
    const moor_class *fake = (const moor_class *)not_an_object;

    (void)state;
    expect_class_einval(NULL, moor_object_class(), sizeof(moor_object), "name is empty");
    expect_class_einval("", moor_object_class(), sizeof(moor_object), "name is empty");
    expect_class_einval("test.einval", NULL, sizeof(moor_object), "parent is not a moor class");
    expect_class_einval("test.einval", fake, sizeof(moor_object), "parent is not a moor class");
    expect_class_einval("test.einval", moor_object_class(), sizeof(moor_object) - 1,
                        "instance size");
    expect_class_einval("test.einval", moor_lockable_class(), sizeof(moor_object), "instance size");
    expect_class_einval("test.einval", leaf_class, sizeof(struct mid), "test.leaf");
    expect_class_einval("test.einval", moor_object_class(), (1u << 30) + 1, "instance size");
    expect_class_einval("test.einval", moor_object_class(), SIZE_MAX, "instance size");

    /* A failure changes nothing: the name is still free. */
    moor_error err = MOOR_ERROR_INIT;
    const moor_class *k =
        moor_class_new("test.einval", moor_object_class(), sizeof(moor_object), NULL, &err);
    assert_non_null(k);
    assert_false(moor_error_is_set(&err));
    tu_expect_no_report();
}

static void test_class_new_size_limit_is_inclusive(void **state)
{
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    /* 1 GiB exactly is allowed (no instance is made, so nothing is
     * allocated beyond the class). */
    assert_non_null(moor_class_new("test.huge", moor_object_class(), 1u << 30, NULL, &err));
    assert_false(moor_error_is_set(&err));
}

static void test_class_new_eexist(void **state)
{
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    assert_null(
        moor_class_new("test.plain", moor_object_class(), sizeof(struct plain), NULL, &err));
    assert_int_equal(err.code, -EEXIST);
    tu_assert_contains(moor_error_message(&err), "test.plain");

    /* Even with another parent, and for the root classes' names. */
    assert_null(
        moor_class_new("test.plain", moor_lockable_class(), sizeof(struct box), NULL, &err));
    assert_int_equal(err.code, -EEXIST);
    assert_null(
        moor_class_new("moor_object", moor_object_class(), sizeof(moor_object), NULL, &err));
    assert_int_equal(err.code, -EEXIST);
    assert_null(
        moor_class_new("moor_lockable", moor_lockable_class(), sizeof(moor_lockable), NULL, NULL));
    /* The existing class is untouched. */
    assert_ptr_equal(moor_class_parent(plain_class), moor_object_class());
}

static void test_class_new_enomem(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    const moor_class *k;

    (void)state;
    moor_debug_fail_alloc(1);
    assert_null(
        moor_class_new("test.enomem", moor_object_class(), sizeof(moor_object), NULL, &err));
    assert_int_equal(err.code, -ENOMEM);
    tu_assert_contains(moor_error_message(&err), "test.enomem");

    /* Nothing was registered: the same name works once memory is back. */
    moor_error_clear(&err);
    k = moor_class_new("test.enomem", moor_object_class(), sizeof(moor_object), NULL, &err);
    assert_non_null(k);
    assert_false(moor_error_is_set(&err));
    assert_string_equal(moor_class_name(k), "test.enomem");
}

/* ---- objects -------------------------------------------------------------- */

static void test_object_new_and_last_unref(void **state)
{
    struct plain *p;

    (void)state;
    p = moor_object_new(plain_class);
    assert_non_null(p);
    assert_int_equal(moor_object_refcount(p), 1);
    assert_ptr_equal(moor_object_get_class(p), plain_class);
    assert_int_equal(p->value, 0);
    for (size_t i = 0; i < sizeof(p->pad); i++)
        assert_int_equal(p->pad[i], 0);
    assert_int_equal(moor_class_live(plain_class), 1);
    assert_int_equal(moor_census_total(), 1);

    moor_unref(p);
    assert_int_equal(disposed.count, 1);
    assert_ptr_equal(disposed.last, p);
    assert_int_equal(moor_class_live(plain_class), 0);
    tu_expect_no_report();
}

static void test_ref_unref(void **state)
{
    struct plain *p = moor_object_new(plain_class);

    (void)state;
    assert_ptr_equal(moor_ref(p), p);
    assert_ptr_equal(moor_ref(p), p);
    assert_int_equal(moor_object_refcount(p), 3);
    moor_unref(p);
    moor_unref(p);
    assert_int_equal(moor_object_refcount(p), 1);
    assert_int_equal(disposed.count, 0);
    moor_unref(p);
    assert_int_equal(disposed.count, 1);

    /* NULL in, NULL out, nothing reported. */
    assert_null(moor_ref(NULL));
    moor_unref(NULL);
    tu_expect_no_report();
}

static void test_object_new_bad_class(void **state)
{
    (void)state;
    errno = 0;
    assert_null(moor_object_new(NULL));
    assert_int_equal(errno, EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "is not a moor class");

    errno = 0;
    assert_null(moor_object_new((const moor_class *)not_an_object));
    assert_int_equal(errno, EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, not_an_object, "is not a moor class");
}

/* Fail allocation N for N = 1, 2, ... until moor_object_new() succeeds:
 * each failure returns NULL with ENOMEM and leaves nothing behind. */
static int object_new_until_success(const moor_class *k, void **out)
{
    size_t total = moor_census_total();
    int n;

    for (n = 1; n < 100; n++) {
        moor_debug_fail_alloc((unsigned long)n);
        errno = 0;
        *out = moor_object_new(k);
        moor_debug_fail_alloc(0);
        if (*out)
            break;
        assert_int_equal(errno, ENOMEM);
        assert_int_equal(moor_class_live(k), 0);
        assert_int_equal(moor_census_total(), total);
        assert_int_equal(disposed.count, 0);
        tu_expect_no_report();
    }
    assert_non_null(*out);
    assert_int_equal(moor_class_live(k), 1);
    assert_int_equal(moor_census_total(), total + 1);
    assert_int_equal(moor_object_refcount(*out), 1);
    return n;
}

static void test_object_new_alloc_failure(void **state)
{
    const moor_class *classes[] = {plain_class, box_class, leaf_class};
    void *o;

    (void)state;
    moor_debug_set_flags(moor_debug_flags() & ~(unsigned)MOOR_DEBUG_LEAKS);
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++) {
        /* One allocation per object when not tracking leaks. */
        assert_int_equal(object_new_until_success(classes[i], &o), 2);
        if (moor_is_a(o, moor_lockable_class())) {
            moor_lock(o);
            assert_true(moor_lock_held(o));
            moor_unlock(o);
        }
        moor_unref(o);
        assert_int_equal(moor_class_live(classes[i]), 0);
        assert_true(disposed.count > 0);
        reset_disposed();
    }
}

static void test_object_new_alloc_failure_with_leak_tracking(void **state)
{
    char *text = NULL;
    size_t size = 0;
    FILE *f;
    void *o;

    (void)state;
    moor_debug_set_flags(moor_debug_flags() | MOOR_DEBUG_LEAKS);
    /* Allocation 1 is the object and fails it; allocation 2 is the
     * tracking record, which is best effort: the object is made anyway,
     * counted but not listed. */
    assert_int_equal(object_new_until_success(plain_class, &o), 2);

    f = open_memstream(&text, &size);
    assert_non_null(f);
    assert_int_equal(moor_census_print(f), 1);
    fclose(f);
    tu_assert_contains(text, "test.plain");
    tu_assert_not_contains(text, "refs=");
    free(text);
    moor_unref(o);

    /* With memory available, the object is tracked and listed. */
    o = moor_object_new(plain_class);
    f = open_memstream(&text, &size);
    assert_int_equal(moor_census_print(f), 1);
    fclose(f);
    tu_assert_contains(text, "refs=1");
    free(text);
    moor_unref(o);
}

static void test_dispose_order_child_first(void **state)
{
    struct leaf *l;

    (void)state;
    l = moor_object_new(leaf_class);
    assert_non_null(l);
    assert_int_equal(moor_class_live(leaf_class), 1);
    /* The census counts exact classes only. */
    assert_int_equal(moor_class_live(mid_class), 0);
    assert_int_equal(moor_class_live(base_class), 0);
    moor_unref(l);
    assert_int_equal(disposed.count, 3);
    assert_string_equal(disposed.order[0], "leaf");
    assert_string_equal(disposed.order[1], "mid");
    assert_string_equal(disposed.order[2], "base");
    assert_int_equal(moor_class_live(leaf_class), 0);
}

static void test_is_a_and_cast(void **state)
{
    struct leaf *l = moor_object_new(leaf_class);
    struct plain *p = moor_object_new(plain_class);

    (void)state;
    assert_true(moor_is_a(l, leaf_class));
    assert_true(moor_is_a(l, mid_class));
    assert_true(moor_is_a(l, base_class));
    assert_true(moor_is_a(l, moor_lockable_class()));
    assert_true(moor_is_a(l, moor_object_class()));
    assert_false(moor_is_a(l, plain_class));
    assert_true(moor_is_a(p, moor_object_class()));
    assert_false(moor_is_a(p, moor_lockable_class()));
    assert_false(moor_is_a(p, leaf_class));
    /* Questions, not assertions: no reports. */
    assert_false(moor_is_a(NULL, plain_class));
    assert_false(moor_is_a(p, NULL));
    assert_false(moor_is_a(not_an_object, moor_object_class()));
    assert_false(moor_is_a(p, (const moor_class *)not_an_object));
    tu_expect_no_report();

    assert_ptr_equal(moor_cast(l, mid_class), l);
    assert_ptr_equal(MOOR_CAST(struct base, l, base_class), &l->parent.parent);
    assert_null(moor_cast(NULL, mid_class));
    tu_expect_no_report();

    assert_null(moor_cast(p, mid_class));
    const tu_report *r = tu_expect_report(MOOR_MISUSE_BAD_CAST, p, "test.plain");
    tu_assert_contains(r->message, "'test.mid'");
    assert_null(MOOR_CAST(struct leaf, l, plain_class));
    r = tu_expect_report(MOOR_MISUSE_BAD_CAST, l, "'test.leaf' to 'test.plain'");

    assert_null(moor_cast(not_an_object, plain_class));
    tu_expect_report(MOOR_MISUSE_NOT_AN_OBJECT, not_an_object, "not a moor object");
    /* No reference was taken by any of this. */
    assert_int_equal(moor_object_refcount(l), 1);
    moor_unref(l);
    moor_unref(p);
}

static void test_non_object_is_reported(void **state)
{
    (void)state;
    /* ref returns its argument, takes nothing, reports. */
    assert_ptr_equal(moor_ref(not_an_object), not_an_object);
    tu_expect_report(MOOR_MISUSE_NOT_AN_OBJECT, not_an_object, "ref of");
    moor_unref(not_an_object);
    tu_expect_report(MOOR_MISUSE_NOT_AN_OBJECT, not_an_object, "unref of");
    assert_int_equal(not_an_object[0], 0x1234);

    assert_null(moor_object_get_class(not_an_object));
    tu_expect_report(MOOR_MISUSE_NOT_AN_OBJECT, not_an_object, "not a moor object");
    assert_null(moor_object_get_class(NULL));
    tu_expect_report(MOOR_MISUSE_NOT_AN_OBJECT, NULL, "not a moor object");

    /* refcount is for diagnostics: -1, silently. */
    assert_int_equal(moor_object_refcount(not_an_object), -1);
    assert_int_equal(moor_object_refcount(NULL), -1);
    tu_expect_no_report();
}

/* The header of an object that was disposed and freed, as the last unref
 * leaves it before the memory goes back to malloc ("dead", src/object.c).
 * Real freed memory may be reused by malloc at once, so this white-box
 * header is the reliable way to reach the "already freed" branch. */
#define FREED_MAGIC 0x64656164u

static void test_freed_object_is_reported(void **state)
{
    moor_object dead;

    (void)state;
    memset(&dead, 0, sizeof(dead));
    dead.magic = FREED_MAGIC;
    assert_ptr_equal(moor_ref(&dead), &dead);
    tu_expect_report(MOOR_MISUSE_DISPOSED_OBJECT, &dead, "already disposed and freed");
    moor_unref(&dead);
    tu_expect_report(MOOR_MISUSE_DISPOSED_OBJECT, &dead, "unref of object");
    assert_null(moor_object_get_class(&dead));
    tu_expect_report(MOOR_MISUSE_DISPOSED_OBJECT, &dead, "already disposed");
    assert_int_equal(moor_object_refcount(&dead), -1);
    assert_false(moor_is_a(&dead, moor_object_class()));
    tu_expect_no_report();
}

/* A real unref after the last one, in a child: the freed memory is read,
 * so this runs only where nothing checks that (not under ASan, TSan or
 * valgrind). malloc may already have reused the header, so either report
 * is right; what matters is that it is reported and nothing crashes. */
static int child_unref_after_free(void *arg)
{
    struct plain *p = moor_object_new(plain_class);

    (void)arg;
    tu_capture_start();
    moor_unref(p);
    moor_unref(p); /* one too many: use after free */
    moor_ref(p);
    const tu_report *a = tu_next_report(), *b = tu_next_report();
    if (!a || !b || tu_next_report()) {
        fprintf(stderr, "expected exactly 2 reports, got %u\n", tu_cap.count);
        return 1;
    }
    for (const tu_report *r = a; r; r = r == a ? b : NULL) {
        if (r->kind != MOOR_MISUSE_DISPOSED_OBJECT && r->kind != MOOR_MISUSE_NOT_AN_OBJECT) {
            fprintf(stderr, "unexpected report kind %d: %s\n", (int)r->kind, r->message);
            return 1;
        }
        fprintf(stderr, "reported: %s\n", r->message);
    }
    return disposed.count == 1 ? 0 : 2;
}

static void test_unref_after_free_is_reported(void **state)
{
    tu_child c;

    (void)state;
    if (TU_ASAN || TU_TSAN || tu_under_valgrind())
        skip();
    tu_fork(&c, child_unref_after_free, NULL);
    tu_assert_child_exited(&c, 0);
    tu_assert_contains(c.out, "reported: ref of");
}

/* Taking a reference inside dispose is misuse: the count is already zero. */
static void ref_in_dispose(struct plain *p)
{
    moor_ref(p);
}

static void test_ref_during_dispose_is_reported(void **state)
{
    struct plain *p = moor_object_new(plain_class);

    (void)state;
    plain_dispose_hook = ref_in_dispose;
    moor_unref(p);
    plain_dispose_hook = NULL;
    /* Disposal went on (the object is gone), and the ref was reported. */
    assert_int_equal(disposed.count, 1);
    assert_int_equal(moor_class_live(plain_class), 0);
    tu_expect_report(MOOR_MISUSE_REF_INC_FROM_ZERO, NULL, "after the last unref");
}

/* moor_clear() NULLs the variable before the unref runs dispose. */
static struct plain *cleared_var;
static int cleared_var_seen_null = -1;

static void look_at_cleared_var(struct plain *p)
{
    (void)p;
    cleared_var_seen_null = cleared_var == NULL;
}

static void test_clear(void **state)
{
    struct plain *p = NULL;

    (void)state;
    moor_clear(&p); /* NULL-safe */
    assert_null(p);

    /* Not the last reference: the variable is NULLed, the object lives. */
    p = moor_object_new(plain_class);
    cleared_var = moor_ref(p);
    moor_clear(&cleared_var);
    assert_null(cleared_var);
    assert_int_equal(moor_object_refcount(p), 1);
    assert_int_equal(disposed.count, 0);

    /* The last one: dispose already sees NULL in the variable. */
    cleared_var = moor_steal(&p);
    plain_dispose_hook = look_at_cleared_var;
    moor_clear(&cleared_var);
    plain_dispose_hook = NULL;
    assert_null(cleared_var);
    assert_int_equal(cleared_var_seen_null, 1);
    assert_int_equal(disposed.count, 1);
    assert_int_equal(moor_class_live(plain_class), 0);
}

static void test_autounref_and_steal(void **state)
{
    struct plain *kept;

    (void)state;
    {
        moor_autounref struct plain *p = moor_object_new(plain_class);

        assert_non_null(p);
        assert_int_equal(moor_class_live(plain_class), 1);
    }
    /* Dropped at scope exit. */
    assert_int_equal(disposed.count, 1);
    assert_int_equal(moor_class_live(plain_class), 0);

    {
        moor_autounref struct plain *p = moor_object_new(plain_class);
        moor_autounref struct plain *none = NULL; /* NULL at scope exit: fine */

        (void)none;
        kept = moor_steal(&p);
        assert_null(p);
    }
    /* Stolen: still alive, and its one reference is now ours. */
    assert_int_equal(disposed.count, 1);
    assert_int_equal(moor_object_refcount(kept), 1);

    {
        moor_autounref struct plain *extra = moor_ref(kept);

        assert_int_equal(moor_object_refcount(kept), 2);
        (void)extra;
    }
    assert_int_equal(moor_object_refcount(kept), 1);
    moor_unref(kept);
    assert_int_equal(disposed.count, 2);
}

/* ---- lockable objects --------------------------------------------------- */

static void test_lock_unlock(void **state)
{
    struct box *b = moor_object_new(box_class);

    (void)state;
    assert_false(moor_lock_held(b));
    moor_lock(b);
    assert_true(moor_lock_held(b));
    assert_false((bool)(intptr_t)tu_in_thread(lock_held_thread, b));
    assert_int_equal(lock_try_elsewhere(b), -EBUSY);
    moor_assert_locked(b);
    tu_expect_no_report();
    moor_unlock(b);
    assert_false(moor_lock_held(b));
    assert_int_equal(lock_try_elsewhere(b), 0);

    /* lock_held on things that cannot be locked: false, silently. */
    assert_false(moor_lock_held(NULL));
    assert_false(moor_lock_held(not_an_object));
    tu_expect_no_report();
    moor_unref(b);
    assert_int_equal(disposed.count, 1);
}

static void test_lock_try(void **state)
{
    struct box *b = moor_object_new(box_class);
    struct plain *p = moor_object_new(plain_class);

    (void)state;
    assert_int_equal(moor_lock_try(b), 0);
    assert_true(moor_lock_held(b));
    /* Held by this very thread: still -EBUSY, never a recursive hold. */
    assert_int_equal(moor_lock_try(b), -EBUSY);
    assert_int_equal(lock_try_elsewhere(b), -EBUSY);
    assert_true(moor_lock_held(b));
    moor_unlock(b);
    assert_false(moor_lock_held(b));
    assert_int_equal(lock_try_elsewhere(b), 0);
    tu_expect_no_report();

    assert_int_equal(moor_lock_try(p), -EINVAL);
    tu_expect_report(MOOR_MISUSE_BAD_CAST, p, "not lockable");
    assert_int_equal(moor_lock_try(not_an_object), -EINVAL);
    tu_expect_report(MOOR_MISUSE_NOT_AN_OBJECT, not_an_object, "moor_lock_try");
    moor_unref(b);
    moor_unref(p);
}

static void test_lock_non_lockable_is_reported(void **state)
{
    struct plain *p = moor_object_new(plain_class);

    (void)state;
    moor_lock(p);
    tu_expect_report(MOOR_MISUSE_BAD_CAST, p, "moor_lock of object");
    assert_false(moor_lock_held(p));
    moor_unlock(p);
    tu_expect_report(MOOR_MISUSE_BAD_CAST, p, "moor_unlock of object");
    moor_assert_locked(p);
    tu_expect_report(MOOR_MISUSE_BAD_CAST, p, "test.plain");
    moor_lock(not_an_object);
    tu_expect_report(MOOR_MISUSE_NOT_AN_OBJECT, not_an_object, "moor_lock of");
    moor_unlock(NULL);
    tu_expect_report(MOOR_MISUSE_NOT_AN_OBJECT, NULL, "moor_unlock of");
    moor_unref(p);
}

static void test_recursive_lock_reported_with_debug_locks(void **state)
{
    struct box *b = moor_object_new(box_class);

    (void)state;
    moor_debug_set_flags(moor_debug_flags() | MOOR_DEBUG_LOCKS);
    moor_lock(b);
    moor_lock(b); /* would self-deadlock without MOOR_DEBUG_LOCKS */
    tu_expect_report(MOOR_MISUSE_LOCK_RECURSIVE, b, "already held by this thread");
    assert_true(moor_lock_held(b));
    /* Still a single hold: one unlock frees it. */
    moor_unlock(b);
    assert_false(moor_lock_held(b));
    assert_int_equal(lock_try_elsewhere(b), 0);
    tu_expect_no_report();
    moor_unref(b);
}

static void test_unlock_by_non_owner_is_reported(void **state)
{
    struct box *b = moor_object_new(box_class);
    const tu_report *r;

    (void)state;
    moor_lock(b);
    tu_in_thread(unlock_thread, b);
    r = tu_expect_report(MOOR_MISUSE_UNLOCK_NOT_OWNER, b, "it is held by thread");
    tu_assert_contains(r->message, "left locked");
    /* The mutex was left as it was: still ours. */
    assert_true(moor_lock_held(b));
    assert_int_equal(lock_try_elsewhere(b), -EBUSY);
    moor_unlock(b);
    tu_expect_no_report();

    /* Unlocking an unlocked object, here or elsewhere: no stray thread id
     * 0, and no "left locked" about a mutex that is not locked. */
    moor_unlock(b);
    r = tu_expect_report(MOOR_MISUSE_UNLOCK_NOT_OWNER, b, "but it is not locked; nothing done");
    tu_assert_not_contains(r->message, "left locked");
    tu_assert_not_contains(r->message, "thread 0");
    tu_assert_not_contains(r->message, "locked 0");
    tu_in_thread(unlock_thread, b);
    r = tu_expect_report(MOOR_MISUSE_UNLOCK_NOT_OWNER, b, "but it is not locked; nothing done");
    tu_assert_not_contains(r->message, "left locked");
    tu_assert_not_contains(r->message, "thread 0");
    tu_assert_not_contains(r->message, "locked 0");
    assert_int_equal(lock_try_elsewhere(b), 0);
    moor_unref(b);
}

/* A thread that holds @obj until the test thread has looked. */
struct holder {
    void *obj;
    pthread_barrier_t locked, looked;
};

static void *holder_thread(void *arg)
{
    struct holder *h = arg;

    moor_lock(h->obj);
    pthread_barrier_wait(&h->locked);
    pthread_barrier_wait(&h->looked);
    moor_unlock(h->obj);
    return NULL;
}

static void test_assert_locked(void **state)
{
    struct holder h = {.obj = moor_object_new(box_class)};
    pthread_t t;

    const tu_report *r;

    (void)state;
    moor_assert_locked(h.obj);
    r = tu_expect_report(MOOR_MISUSE_NOT_LOCKED, h.obj, "but is not locked");
    tu_assert_not_contains(r->message, "thread 0");
    tu_assert_not_contains(r->message, "locked 0");

    moor_lock(h.obj);
    moor_assert_locked(h.obj);
    tu_expect_no_report();
    moor_unlock(h.obj);

    pthread_barrier_init(&h.locked, NULL, 2);
    pthread_barrier_init(&h.looked, NULL, 2);
    assert_int_equal(pthread_create(&t, NULL, holder_thread, &h), 0);
    pthread_barrier_wait(&h.locked);
    moor_assert_locked(h.obj);
    assert_false(moor_lock_held(h.obj));
    pthread_barrier_wait(&h.looked);
    tu_join(t, NULL);
    pthread_barrier_destroy(&h.locked);
    pthread_barrier_destroy(&h.looked);
    tu_expect_report(MOOR_MISUSE_NOT_LOCKED, h.obj, "is held by thread");

    moor_assert_locked(NULL);
    tu_expect_report(MOOR_MISUSE_NOT_AN_OBJECT, NULL, "moor_assert_locked");
    moor_unref(h.obj);
}

/* Dispose while locked: in a child, because the object is leaked on
 * purpose and must not show up in this process's census. The child keeps
 * it reachable from here so that valgrind's leak check in the child (which
 * runs even on _exit) does not count it as lost. */
static void *volatile child_keep;

static int child_dispose_while_locked(void *arg)
{
    struct box *b = moor_object_new(box_class);
    moor_weak w = MOOR_WEAK_INIT;
    int rc = 0;

    (void)arg;
    child_keep = b;
    tu_capture_start();
    moor_weak_set(&w, b);
    moor_lock(b);
    moor_unref(b);
    rc |= tu_child_check_report(MOOR_MISUSE_DISPOSE_LOCKED, "the object is leaked");
    if (disposed.count != 0 || moor_class_live(box_class) != 1) {
        fprintf(stderr, "disposed %d, live %zu\n", disposed.count, moor_class_live(box_class));
        rc |= 2;
    }
    /* The count reached zero: weak lookups fail, as for a disposed one. */
    if (moor_weak_get(&w) != NULL)
        rc |= 4;
    /* Another unref is one too many: reported once, then silent. */
    moor_unlock(b);
    moor_unref(b);
    rc |= tu_child_check_report(MOOR_MISUSE_REF_UNDERFLOW, "below zero") << 3;
    moor_unref(b);
    if (tu_next_report())
        rc |= 16;
    moor_weak_clear(&w);
    return rc;
}

static void test_dispose_while_locked(void **state)
{
    tu_child c;

    (void)state;
    tu_fork(&c, child_dispose_while_locked, NULL);
    tu_assert_child_exited(&c, 0);
}

static int child_dispose_while_locked_default_hook(void *arg)
{
    struct box *b = moor_object_new(box_class);

    (void)arg;
    child_keep = b;
    moor_debug_set_report(NULL, NULL);
    moor_lock(b);
    moor_unref(b);
    return moor_class_live(box_class) == 1 ? 0 : 1;
}

static void test_dispose_while_locked_default_hook(void **state)
{
    tu_child c;

    (void)state;
    tu_fork(&c, child_dispose_while_locked_default_hook, NULL);
    tu_assert_child_exited(&c, 0);
    tu_assert_contains(c.out, "moor: last unref of object");
    tu_assert_contains(c.out, "class 'test.box'");
    tu_assert_contains(c.out, "while its mutex is held");
}

static int child_unref_non_object_default_hook(void *arg)
{
    (void)arg;
    moor_debug_set_report(NULL, NULL);
    moor_unref(not_an_object);
    return 0;
}

static void test_non_object_default_hook(void **state)
{
    tu_child c;

    (void)state;
    tu_fork(&c, child_unref_non_object_default_hook, NULL);
    tu_assert_child_exited(&c, 0);
    tu_assert_contains(c.out, "moor: unref of ");
    tu_assert_contains(c.out, "not a moor object");
}

static void test_end_api(void **state)
{
    struct box *b = moor_object_new(box_class);
    struct box *call;

    (void)state;
    /* An API call: its own reference, the object locked. */
    call = moor_ref(b);
    moor_lock(call);
    moor_end_api(&call);
    assert_null(call);
    assert_false(moor_lock_held(b));
    assert_int_equal(lock_try_elsewhere(b), 0);
    assert_int_equal(moor_object_refcount(b), 1);
    assert_int_equal(disposed.count, 0);

    /* The call's reference is the last one: disposed, and not "while
     * locked", because end_api unlocks first. */
    call = b;
    b = NULL;
    moor_lock(call);
    moor_end_api(&call);
    assert_null(call);
    assert_int_equal(disposed.count, 1);
    assert_int_equal(moor_class_live(box_class), 0);

    /* Nothing to end. */
    moor_end_api(&call);
    assert_null(call);
    tu_expect_no_report();
}

static void *contend_thread(void *arg)
{
    struct box *b = arg;

    for (int i = 0; i < 2000; i++) {
        moor_lock(b);
        if (!moor_lock_held(b))
            return (void *)1;
        b->counter++;
        moor_unlock(b);
    }
    return NULL;
}

static void test_lock_contention(void **state)
{
    struct box *b = moor_object_new(box_class);
    pthread_t t[THREADS];
    void *failed;

    (void)state;
    moor_debug_set_flags(moor_debug_flags() | MOOR_DEBUG_LOCKS);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, contend_thread, b), 0);
    for (int i = 0; i < THREADS; i++) {
        tu_join(t[i], &failed);
        assert_null(failed);
    }
    moor_lock(b);
    assert_int_equal(b->counter, THREADS * 2000);
    moor_unlock(b);
    tu_expect_no_report();
    moor_unref(b);
}

/* ---- weak references ---------------------------------------------------- */

static void test_weak_set_get_clear(void **state)
{
    struct plain *p = moor_object_new(plain_class);
    moor_weak w = MOOR_WEAK_INIT;
    moor_weak z;
    struct plain *got;

    (void)state;
    memset(&z, 0, sizeof(z));
    assert_null(moor_weak_get(&w));
    assert_null(moor_weak_get(&z));

    moor_weak_set(&w, p);
    /* Weak: the count is unchanged. */
    assert_int_equal(moor_object_refcount(p), 1);
    got = moor_weak_get(&w);
    assert_ptr_equal(got, p);
    assert_int_equal(moor_object_refcount(p), 2);
    moor_unref(got);

    moor_weak_clear(&w);
    assert_null(moor_weak_get(&w));
    moor_weak_clear(&w); /* twice: fine */
    assert_int_equal(moor_object_refcount(p), 1);

    /* Setting NULL points at nothing. */
    moor_weak_set(&w, p);
    moor_weak_set(&w, NULL);
    assert_null(moor_weak_get(&w));

    moor_unref(p);
    assert_int_equal(disposed.count, 1);
    tu_expect_no_report();
}

static void test_weak_get_after_last_unref(void **state)
{
    struct box *b = moor_object_new(box_class);
    moor_weak w = MOOR_WEAK_INIT;

    (void)state;
    moor_weak_set(&w, b);
    moor_unref(b);
    assert_int_equal(disposed.count, 1);
    assert_null(moor_weak_get(&w));
    moor_weak_clear(&w); /* after the object went: a no-op */
    assert_null(moor_weak_get(&w));
    tu_expect_no_report();
}

/* During dispose, the object's weak references already yield NULL. */
static moor_weak dispose_weak;
static int dispose_weak_got = -1;

static void get_weak_in_dispose(struct plain *p)
{
    void *o = moor_weak_get(&dispose_weak);

    (void)p;
    dispose_weak_got = o != NULL;
    moor_unref(o);
}

static void test_weak_cleared_before_dispose(void **state)
{
    struct plain *p = moor_object_new(plain_class);

    (void)state;
    moor_weak_set(&dispose_weak, p);
    plain_dispose_hook = get_weak_in_dispose;
    moor_unref(p);
    plain_dispose_hook = NULL;
    assert_int_equal(dispose_weak_got, 0);
    assert_int_equal(disposed.count, 1);
    assert_null(moor_weak_get(&dispose_weak));
    tu_expect_no_report();
}

static void test_weak_reset_to_another_object(void **state)
{
    struct plain *a = moor_object_new(plain_class);
    struct plain *b = moor_object_new(plain_class);
    moor_weak w = MOOR_WEAK_INIT;
    void *got;

    (void)state;
    moor_weak_set(&w, a);
    moor_weak_set(&w, b);
    got = moor_weak_get(&w);
    assert_ptr_equal(got, b);
    moor_unref(got);

    /* The first object no longer knows the slot: its death leaves it. */
    moor_unref(a);
    assert_ptr_equal(disposed.last, a);
    got = moor_weak_get(&w);
    assert_ptr_equal(got, b);
    moor_unref(got);

    /* Same object again: still one slot, still valid. */
    moor_weak_set(&w, b);
    moor_weak_set(&w, b);
    got = moor_weak_get(&w);
    assert_ptr_equal(got, b);
    moor_unref(got);

    moor_unref(b);
    assert_null(moor_weak_get(&w));
    assert_int_equal(disposed.count, 2);
    tu_expect_no_report();
}

static void test_several_weak_refs_on_one_object(void **state)
{
    struct box *b = moor_object_new(box_class);
    moor_weak w[5];
    void *got;

    (void)state;
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 5; i++)
        moor_weak_set(&w[i], b);
    for (int i = 0; i < 5; i++) {
        got = moor_weak_get(&w[i]);
        assert_ptr_equal(got, b);
        moor_unref(got);
    }
    /* Remove from the middle, the newest (list head) and the oldest. */
    moor_weak_clear(&w[2]);
    moor_weak_clear(&w[4]);
    moor_weak_clear(&w[0]);
    assert_null(moor_weak_get(&w[2]));
    assert_null(moor_weak_get(&w[4]));
    assert_null(moor_weak_get(&w[0]));
    got = moor_weak_get(&w[1]);
    assert_ptr_equal(got, b);
    moor_unref(got);
    got = moor_weak_get(&w[3]);
    assert_ptr_equal(got, b);
    moor_unref(got);
    /* Re-add one; dispose must clear all that remain. */
    moor_weak_set(&w[2], b);
    assert_int_equal(moor_object_refcount(b), 1);

    moor_unref(b);
    assert_int_equal(disposed.count, 1);
    for (int i = 0; i < 5; i++)
        assert_null(moor_weak_get(&w[i]));
    for (int i = 0; i < 5; i++)
        moor_weak_clear(&w[i]);
    tu_expect_no_report();
}

static void test_weak_misuse(void **state)
{
    struct plain *p = moor_object_new(plain_class);
    moor_weak w = MOOR_WEAK_INIT;

    (void)state;
    assert_null(moor_weak_get(NULL));
    moor_weak_clear(NULL);
    tu_expect_no_report();

    moor_weak_set(NULL, p);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "NULL weak reference");

    moor_weak_set(&w, p);
    moor_weak_set(&w, not_an_object);
    tu_expect_report(MOOR_MISUSE_NOT_AN_OBJECT, not_an_object, "moor_weak_set");
    /* A failed set leaves the slot as it was. */
    void *got = moor_weak_get(&w);
    assert_ptr_equal(got, p);
    moor_unref(got);

    moor_unref(p);
    assert_null(moor_weak_get(&w));
}

/* Weak lookups race with the last unref: each lookup gets a live object or
 * NULL, the object is disposed exactly once, by whichever thread dropped
 * the last reference, and NULL is final. */
struct weak_race {
    moor_weak w;
    pthread_barrier_t start;
    atomic_int hits;
};

static void *weak_race_thread(void *arg)
{
    struct weak_race *wr = arg;
    void *o;

    pthread_barrier_wait(&wr->start);
    while ((o = moor_weak_get(&wr->w))) {
        if (!moor_is_a(o, plain_class))
            return (void *)1;
        atomic_fetch_add(&wr->hits, 1);
        moor_unref(o);
    }
    /* Once NULL, always NULL. */
    return moor_weak_get(&wr->w) ? (void *)2 : NULL;
}

static atomic_int race_disposals;

static void count_race_disposal(struct plain *p)
{
    (void)p;
    atomic_fetch_add(&race_disposals, 1);
}

static void test_weak_get_races_last_unref(void **state)
{
    (void)state;
    atomic_store(&race_disposals, 0);
    plain_dispose_hook = count_race_disposal;
    for (int round = 0; round < 50; round++) {
        struct weak_race wr = {.w = MOOR_WEAK_INIT};
        struct plain *p = moor_object_new(plain_class);
        pthread_t t[THREADS];
        void *failed;

        atomic_init(&wr.hits, 0);
        moor_weak_set(&wr.w, p);
        pthread_barrier_init(&wr.start, NULL, THREADS + 1);
        for (int i = 0; i < THREADS; i++)
            assert_int_equal(pthread_create(&t[i], NULL, weak_race_thread, &wr), 0);
        pthread_barrier_wait(&wr.start);
        moor_unref(p);
        for (int i = 0; i < THREADS; i++) {
            tu_join(t[i], &failed);
            assert_null(failed);
        }
        pthread_barrier_destroy(&wr.start);
        assert_null(moor_weak_get(&wr.w));
        assert_int_equal(atomic_load(&race_disposals), round + 1);
        moor_weak_clear(&wr.w);
    }
    plain_dispose_hook = NULL;
    assert_int_equal(moor_class_live(plain_class), 0);
    tu_expect_no_report();
}

/* ---- census ------------------------------------------------------------ */

static void test_census(void **state)
{
    void *p[3], *b[2], *l;
    moor_census_entry e[8];
    size_t n;

    (void)state;
    assert_int_equal(moor_census(NULL, 0), 0);
    for (int i = 0; i < 3; i++)
        p[i] = moor_object_new(plain_class);
    for (int i = 0; i < 2; i++)
        b[i] = moor_object_new(box_class);
    l = moor_object_new(leaf_class);

    assert_int_equal(moor_class_live(plain_class), 3);
    assert_int_equal(moor_class_live(box_class), 2);
    assert_int_equal(moor_class_live(leaf_class), 1);
    assert_int_equal(moor_class_live(other_class), 0);
    assert_int_equal(moor_census_total(), 6);

    /* Three classes have live objects; ask for fewer. */
    assert_int_equal(moor_census(NULL, 0), 3);
    e[1].class_name = "untouched";
    e[1].live = 99;
    assert_int_equal(moor_census(e, 1), 3);
    assert_string_equal(e[1].class_name, "untouched");
    assert_int_equal(e[1].live, 99);
    assert_non_null(e[0].class_name);

    n = moor_census(e, 8);
    assert_int_equal(n, 3);
    unsigned seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(e[i].class_name, "test.plain") == 0) {
            assert_int_equal(e[i].live, 3);
            seen |= 1;
        } else if (strcmp(e[i].class_name, "test.box") == 0) {
            assert_int_equal(e[i].live, 2);
            seen |= 2;
        } else if (strcmp(e[i].class_name, "test.leaf") == 0) {
            assert_int_equal(e[i].live, 1);
            seen |= 4;
        } else {
            fail_msg("unexpected class %s in the census", e[i].class_name);
        }
    }
    assert_int_equal(seen, 7);

    for (int i = 0; i < 3; i++)
        moor_unref(p[i]);
    assert_int_equal(moor_census(e, 8), 2);
    assert_int_equal(moor_census_total(), 3);
    for (int i = 0; i < 2; i++)
        moor_unref(b[i]);
    moor_unref(l);
    assert_int_equal(moor_census(e, 8), 0);
    assert_int_equal(moor_census_total(), 0);
}

static void test_census_print(void **state)
{
    char *text = NULL;
    size_t size = 0;
    char line[64];
    void *p[2], *b;
    FILE *f;

    (void)state;
    /* Nothing alive: nothing printed. */
    f = open_memstream(&text, &size);
    assert_non_null(f);
    assert_int_equal(moor_census_print(f), 0);
    fclose(f);
    assert_string_equal(text, "");
    free(text);

    /* Untracked objects: one line per class. "refs" (MOOR_DEBUG in the
     * environment) would track them too. */
    moor_debug_set_flags(moor_debug_flags() & ~(unsigned)(MOOR_DEBUG_LEAKS | MOOR_DEBUG_REFS));
    b = moor_object_new(box_class);
    /* Tracked objects: a line each with address and count. */
    moor_debug_set_flags(moor_debug_flags() | MOOR_DEBUG_LEAKS);
    p[0] = moor_object_new(plain_class);
    p[1] = moor_ref(moor_object_new(plain_class));

    f = open_memstream(&text, &size);
    assert_int_equal(moor_census_print(f), 3);
    fclose(f);
    tu_assert_contains(text, "test.plain");
    tu_assert_contains(text, " 2 live\n");
    tu_assert_contains(text, "test.box");
    tu_assert_contains(text, " 1 live\n");
    snprintf(line, sizeof(line), "%p refs=1\n", p[0]);
    tu_assert_contains(text, line);
    snprintf(line, sizeof(line), "%p refs=2\n", p[1]);
    tu_assert_contains(text, line);
    snprintf(line, sizeof(line), "%p", b);
    tu_assert_not_contains(text, line);
    free(text);

    moor_unref(p[0]);
    moor_unref(p[1]);
    moor_unref(p[1]);
    moor_unref(b);
}

int main(void)
{
    plain_class =
        must_class("test.plain", moor_object_class(), sizeof(struct plain), plain_dispose);
    other_class = must_class("test.other", moor_object_class(), sizeof(struct plain), NULL);
    box_class = must_class("test.box", moor_lockable_class(), sizeof(struct box), box_dispose);
    base_class = must_class("test.base", moor_lockable_class(), sizeof(struct base), base_dispose);
    mid_class = must_class("test.mid", base_class, sizeof(struct mid), mid_dispose);
    leaf_class = must_class("test.leaf", mid_class, sizeof(struct leaf), leaf_dispose);

    const struct CMUnitTest tests[] = {
        OBJ_TEST(test_root_classes),
        OBJ_TEST(test_class_introspection),
        OBJ_TEST(test_class_new_copies_name),
        OBJ_TEST(test_class_new_einval),
        OBJ_TEST(test_class_new_size_limit_is_inclusive),
        OBJ_TEST(test_class_new_eexist),
        OBJ_TEST(test_class_new_enomem),
        OBJ_TEST(test_object_new_and_last_unref),
        OBJ_TEST(test_ref_unref),
        OBJ_TEST(test_object_new_bad_class),
        OBJ_TEST(test_object_new_alloc_failure),
        OBJ_TEST(test_object_new_alloc_failure_with_leak_tracking),
        OBJ_TEST(test_dispose_order_child_first),
        OBJ_TEST(test_is_a_and_cast),
        OBJ_TEST(test_non_object_is_reported),
        OBJ_TEST(test_freed_object_is_reported),
        OBJ_TEST(test_unref_after_free_is_reported),
        OBJ_TEST(test_ref_during_dispose_is_reported),
        OBJ_TEST(test_clear),
        OBJ_TEST(test_autounref_and_steal),
        OBJ_TEST(test_lock_unlock),
        OBJ_TEST(test_lock_try),
        OBJ_TEST(test_lock_non_lockable_is_reported),
        OBJ_TEST(test_recursive_lock_reported_with_debug_locks),
        OBJ_TEST(test_unlock_by_non_owner_is_reported),
        OBJ_TEST(test_assert_locked),
        OBJ_TEST(test_dispose_while_locked),
        OBJ_TEST(test_dispose_while_locked_default_hook),
        OBJ_TEST(test_non_object_default_hook),
        OBJ_TEST(test_end_api),
        OBJ_TEST(test_lock_contention),
        OBJ_TEST(test_weak_set_get_clear),
        OBJ_TEST(test_weak_get_after_last_unref),
        OBJ_TEST(test_weak_cleared_before_dispose),
        OBJ_TEST(test_weak_reset_to_another_object),
        OBJ_TEST(test_several_weak_refs_on_one_object),
        OBJ_TEST(test_weak_misuse),
        OBJ_TEST(test_weak_get_races_last_unref),
        OBJ_TEST(test_census),
        OBJ_TEST(test_census_print),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
