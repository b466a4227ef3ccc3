/* SPDX-License-Identifier: MIT */
/*
 * test-registry.c - the object registry and the UUID helpers: every
 * function, every error path, key validation at and beyond its limits, the
 * removal window of the *_locked lookups, deferred release, and a registry
 * destroyed from liburcu's own reclamation thread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <moor/debug.h>
#include <moor/object.h>
#include <moor/registry.h>

#include "test-util.h"

TU_TSAN_IGNORE_LIBURCU;

struct vm {
    moor_lockable parent;
    int value;
};

/* An object that owns a registry, to drop its last reference from a
 * dispose function. */
struct holder {
    moor_lockable parent;
    moor_registry *inner;
};

static const moor_class *vm_class;
static const moor_class *holder_class;
static const moor_class *plain_class; /* not lockable */
static atomic_int vm_disposed;

static void vm_dispose(void *obj)
{
    (void)obj;
    atomic_fetch_add(&vm_disposed, 1);
}

static void holder_dispose(void *obj)
{
    struct holder *h = obj;

    moor_unref(h->inner);
}

static const char *const UUID_A = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
static const char *const UUID_B = "00000000-0000-4000-8000-000000000002";
static const char *const UUID_C = "ffffffff-ffff-4fff-bfff-fffffffffffc";

static moor_uuid uuid_of(const char *text)
{
    moor_uuid u;

    assert_int_equal(moor_uuid_parse(text, &u, NULL), 0);
    return u;
}

static struct vm *vm_new(void)
{
    struct vm *vm = moor_object_new(vm_class);

    assert_non_null(vm);
    return vm;
}

static moor_registry *reg_new(void)
{
    moor_error err = MOOR_ERROR_INIT;
    moor_registry *reg = moor_registry_new(&err);

    if (!reg)
        fail_msg("moor_registry_new: %s", moor_error_message(&err));
    return reg;
}

/* Add @vm under @uuid_text and @name; the call must succeed. */
static void must_add(moor_registry *reg, struct vm *vm, const char *uuid_text, const char *name)
{
    moor_error err = MOOR_ERROR_INIT;
    moor_uuid u = uuid_of(uuid_text);

    if (moor_registry_add(reg, vm, &u, name, &err) != 0)
        fail_msg("moor_registry_add(%s): %s", name, moor_error_message(&err));
}

/* Releases deferred past a grace period happen in another thread: wait
 * (bounded) for @obj's count to reach @want. */
static void wait_refcount(void *obj, int want)
{
    tu_wait_for(moor_object_refcount(obj) == want, "a reference count of %d (%d now)", want,
                moor_object_refcount(obj));
}

static int reg_setup(void **state)
{
    atomic_store(&vm_disposed, 0);
    return tu_setup(state);
}

#define REG_TEST(fn) cmocka_unit_test_setup_teardown(fn, reg_setup, tu_teardown)

/* ---- UUIDs ------------------------------------------------------------- */

static void test_uuid_parse_format(void **state)
{
    char text[MOOR_UUID_STRING_SIZE];
    moor_uuid u;

    (void)state;
    assert_int_equal(moor_uuid_parse(UUID_A, &u, NULL), 0);
    assert_int_equal(u.bytes[0], 0x6f);
    assert_int_equal(u.bytes[15], 0x4b);
    assert_string_equal(moor_uuid_format(&u, text), UUID_A);

    /* Upper case is accepted; formatting is always lower case. */
    assert_int_equal(moor_uuid_parse("6F1C2A3B-4D5E-4F60-8A7B-9C0D1E2F3A4B", &u, NULL), 0);
    assert_string_equal(moor_uuid_format(&u, text), UUID_A);
    assert_string_equal(moor_uuid_format(NULL, text), "(null)");
}

static void expect_parse_error(const char *text, const char *why)
{
    moor_error err = MOOR_ERROR_INIT;
    moor_uuid u, before;

    memset(&u, 0x5a, sizeof(u));
    before = u;
    assert_int_equal(moor_uuid_parse(text, &u, &err), -EINVAL);
    assert_int_equal(err.code, -EINVAL);
    tu_assert_contains(moor_error_message(&err), why);
    assert_memory_equal(&u, &before, sizeof(u)); /* untouched */
}

static void test_uuid_parse_errors(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    moor_uuid u;

    (void)state;
    expect_parse_error("", "text ends at offset 0");
    expect_parse_error("6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4", "text ends at offset 35");
    expect_parse_error("6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b0", "longer than the 36");
    expect_parse_error("6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4g", "offset 35, expected a hex digit");
    expect_parse_error("6f1c2a3bx4d5e-4f60-8a7b-9c0d1e2f3a4b", "offset 8, expected '-'");
    expect_parse_error("{6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b}", "offset 0");
    expect_parse_error(" 6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b", "offset 0");
    expect_parse_error("6f1c2a3b4d5e4f608a7b9c0d1e2f3a4b", "offset 8");
    assert_int_equal(moor_uuid_parse(NULL, &u, &err), -EINVAL);
    tu_assert_contains(moor_error_message(&err), "text is NULL");
    assert_int_equal(moor_uuid_parse(UUID_A, NULL, &err), -EINVAL);
    tu_assert_contains(moor_error_message(&err), "out is NULL");
}

static void test_uuid_generate(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    moor_uuid a, b;

    (void)state;
    assert_int_equal(moor_uuid_generate(&a, &err), 0);
    assert_int_equal(moor_uuid_generate(&b, &err), 0);
    assert_false(moor_uuid_equal(&a, &b));
    assert_int_equal(a.bytes[6] >> 4, 4);      /* version 4 */
    assert_int_equal(a.bytes[8] & 0xc0, 0x80); /* RFC 4122 variant */
    assert_int_equal(moor_uuid_generate(NULL, &err), -EINVAL);
    tu_assert_contains(moor_error_message(&err), "out is NULL");
}

static void test_uuid_equal(void **state)
{
    moor_uuid a = uuid_of(UUID_A), a2 = uuid_of(UUID_A), b = uuid_of(UUID_B);

    (void)state;
    assert_true(moor_uuid_equal(&a, &a2));
    assert_false(moor_uuid_equal(&a, &b));
    assert_false(moor_uuid_equal(&a, NULL));
    assert_false(moor_uuid_equal(NULL, NULL));
}

/* ---- life cycle ----------------------------------------------------------- */

static void test_new_unref(void **state)
{
    moor_registry *reg = reg_new();

    (void)state;
    assert_int_equal(moor_registry_count(reg), 0);
    assert_string_equal(moor_class_name(moor_object_get_class(reg)), "moor_registry");
    assert_int_equal(moor_census_total(), 1);
    moor_unref(reg);
    moor_unref(NULL); /* as every unref */
}

static void test_new_out_of_memory(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    moor_registry *reg = NULL;

    (void)state;
    /* The first allocation is the object itself; the hash tables are
     * liburcu's and are not counted by the fault injector. */
    moor_debug_fail_alloc(1);
    reg = moor_registry_new(&err);
    assert_null(reg);
    assert_int_equal(err.code, -ENOMEM);
    tu_assert_contains(moor_error_message(&err), "moor_registry_new: out of memory");
    moor_debug_fail_alloc(0);
}

static void test_unref_drops_every_reference(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *a = vm_new(), *b = vm_new();

    (void)state;
    must_add(reg, a, UUID_A, "a");
    must_add(reg, b, UUID_B, "b");
    assert_int_equal(moor_object_refcount(a), 2);
    assert_true(moor_registry_remove(reg, b, NULL) == 0); /* release deferred */
    moor_unref(reg); /* drops a's and waits for b's deferred release */
    assert_int_equal(moor_object_refcount(a), 1);
    assert_int_equal(moor_object_refcount(b), 1);
    assert_int_equal(atomic_load(&vm_disposed), 0);
    moor_unref(a);
    moor_unref(b);
    assert_int_equal(atomic_load(&vm_disposed), 2);
}

/* The registry's last reference can go inside liburcu's call_rcu thread:
 * a removed object whose last reference was the registry's is disposed
 * there, and its dispose drops the last reference of another registry. */
static void test_destroy_from_reclaim_thread(void **state)
{
    moor_registry *outer = reg_new();
    struct holder *h = moor_object_new(holder_class);
    struct vm *vm = vm_new();
    moor_uuid u = uuid_of(UUID_A);

    (void)state;
    assert_non_null(h);
    h->inner = reg_new();
    must_add(h->inner, vm, UUID_B, "inside");
    assert_int_equal(moor_registry_add(outer, h, &u, "holder", NULL), 0);
    moor_unref(h); /* outer's reference is the last */
    assert_int_equal(moor_registry_remove(outer, h, NULL), 0);
    moor_unref(outer); /* barrier: h, and with it inner, are gone */
    wait_refcount(vm, 1);
    moor_unref(vm);
}

/* ---- add -------------------------------------------------------------- */

static void test_add_find(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *vm = vm_new();
    moor_uuid u = uuid_of(UUID_A), other = uuid_of(UUID_B);
    struct vm *got;

    (void)state;
    must_add(reg, vm, UUID_A, "web1");
    assert_int_equal(moor_registry_count(reg), 1);
    assert_int_equal(moor_object_refcount(vm), 2); /* ours and the registry's */

    got = moor_registry_find_uuid(reg, &u);
    assert_ptr_equal(got, vm);
    assert_int_equal(moor_object_refcount(vm), 3);
    moor_unref(got);
    got = moor_registry_find_name(reg, "web1");
    assert_ptr_equal(got, vm);
    moor_unref(got);

    assert_null(moor_registry_find_uuid(reg, &other));
    assert_null(moor_registry_find_name(reg, "web2"));
    assert_null(moor_registry_find_name(reg, "web"));
    assert_null(moor_registry_find_name(reg, "web10"));
    assert_null(moor_registry_find_name(reg, ""));
    assert_null(moor_registry_find_name(reg, "\xff"));
    assert_int_equal(moor_object_refcount(vm), 2);

    moor_unref(reg);
    moor_unref(vm);
}

/* Keys are hashed and compared a word at a time, with separate paths for
 * short keys and for a last partial word: every length up to 40 and the
 * limit must be found, and a key one byte off (first, middle or last
 * byte), one shorter or one longer must not be. */
#define LEN_COUNT 41

static void name_of_length(char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)('a' + (i * 7) % 26);
    buf[len] = '\0';
}

/* Lengths 1..40, then the limit. */
static size_t len_at(size_t k)
{
    return k + 1 < LEN_COUNT ? k + 1 : MOOR_REGISTRY_NAME_MAX;
}

static void test_keys_of_every_length(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *vms[LEN_COUNT];
    char name[MOOR_REGISTRY_NAME_MAX + 2], uuid_text[MOOR_UUID_STRING_SIZE];
    moor_uuid u;

    (void)state;
    for (size_t k = 0; k < LEN_COUNT; k++) {
        vms[k] = vm_new();
        snprintf(uuid_text, sizeof(uuid_text), "00000000-0000-4000-8000-%012zx", k + 1);
        name_of_length(name, len_at(k));
        must_add(reg, vms[k], uuid_text, name);
    }
    for (size_t k = 0; k < LEN_COUNT; k++) {
        size_t len = len_at(k);
        size_t spots[3] = {0, len / 2, len - 1};
        void *got;

        name_of_length(name, len);
        got = moor_registry_find_name(reg, name);
        assert_ptr_equal(got, vms[k]);
        moor_unref(got);
        for (int s = 0; s < 3; s++) {
            name_of_length(name, len);
            name[spots[s]] = name[spots[s]] == 'Z' ? 'Y' : 'Z';
            assert_null(moor_registry_find_name(reg, name));
        }
        if (len > 1 && (k == 0 || len - 1 != len_at(k - 1))) {
            name_of_length(name, len - 1);
            assert_null(moor_registry_find_name(reg, name));
        }
        if (len < MOOR_REGISTRY_NAME_MAX && (k + 1 == LEN_COUNT || len + 1 != len_at(k + 1))) {
            name_of_length(name, len + 1);
            assert_null(moor_registry_find_name(reg, name));
        }
        /* UUIDs: the registered one, and one off in its first or last byte */
        snprintf(uuid_text, sizeof(uuid_text), "00000000-0000-4000-8000-%012zx", k + 1);
        u = uuid_of(uuid_text);
        got = moor_registry_find_uuid(reg, &u);
        assert_ptr_equal(got, vms[k]);
        moor_unref(got);
        u.bytes[0] ^= 0x80;
        assert_null(moor_registry_find_uuid(reg, &u));
        u.bytes[0] ^= 0x80;
        u.bytes[15] ^= 0x80;
        assert_null(moor_registry_find_uuid(reg, &u));
    }
    moor_unref(reg);
    for (size_t k = 0; k < LEN_COUNT; k++)
        moor_unref(vms[k]);
}

/* An add that must fail with @code and a message containing @text, and
 * change nothing. */
static void expect_add_error(moor_registry *reg, void *obj, const moor_uuid *u, const char *name,
                             int code, const char *text)
{
    moor_error err = MOOR_ERROR_INIT;
    size_t count = reg ? moor_registry_count(reg) : 0;
    int refs = moor_object_refcount(obj);

    assert_int_equal(moor_registry_add(reg, obj, u, name, &err), code);
    assert_int_equal(err.code, code);
    tu_assert_contains(moor_error_message(&err), text);
    if (reg)
        assert_int_equal(moor_registry_count(reg), count);
    assert_int_equal(moor_object_refcount(obj), refs);
    /* Without a moor_error the code is the same. */
    assert_int_equal(moor_registry_add(reg, obj, u, name, NULL), code);
}

static void test_add_bad_arguments(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *vm = vm_new();
    void *plain = moor_object_new(plain_class);
    moor_uuid u = uuid_of(UUID_A);

    (void)state;
    expect_add_error(NULL, vm, &u, "x", -EINVAL, "is not a registry");
    assert_int_equal(moor_registry_add((moor_registry *)vm, vm, &u, "x", NULL), -EINVAL);
    expect_add_error(reg, NULL, &u, "x", -EINVAL, "is not a lockable moor object");
    expect_add_error(reg, plain, &u, "x", -EINVAL, "is not a lockable moor object");
    expect_add_error(reg, vm, NULL, "x", -EINVAL, "uuid is NULL");
    expect_add_error(reg, vm, &u, NULL, -EINVAL, "name is NULL");
    assert_null(moor_registry_find_uuid(reg, &u));
    moor_unref(plain);
    moor_unref(reg);
    moor_unref(vm);
}

static void test_add_name_validation(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *vm = vm_new();
    moor_uuid u = uuid_of(UUID_A);
    char longest[MOOR_REGISTRY_NAME_MAX + 1];
    char too_long[MOOR_REGISTRY_NAME_MAX + 2];
    struct vm *got;

    (void)state;
    expect_add_error(reg, vm, &u, "", -EINVAL, "name is empty");
    memset(too_long, 'n', sizeof(too_long) - 1);
    too_long[sizeof(too_long) - 1] = '\0';
    expect_add_error(reg, vm, &u, too_long, -EINVAL, "longer than the limit of 255 bytes");
    expect_add_error(reg, vm, &u, "bad\xff", -EINVAL,
                     "name is not valid UTF-8 (byte 0xff at offset 3)");
    expect_add_error(reg, vm, &u, "\xc0\xaf", -EINVAL, "not valid UTF-8");     /* overlong '/' */
    expect_add_error(reg, vm, &u, "\xed\xa0\x80", -EINVAL, "not valid UTF-8"); /* surrogate */
    expect_add_error(reg, vm, &u, "\xf4\x90\x80\x80", -EINVAL, "not valid UTF-8"); /* >10FFFF */
    expect_add_error(reg, vm, &u, "cut\xe2\x82", -EINVAL, "offset 3");
    expect_add_error(reg, vm, &u, "\x80", -EINVAL, "offset 0");
    assert_int_equal(moor_registry_count(reg), 0);

    /* Exactly at the limit is fine, and so is any valid UTF-8. */
    memset(longest, 'n', sizeof(longest) - 1);
    longest[sizeof(longest) - 1] = '\0';
    must_add(reg, vm, UUID_A, longest);
    got = moor_registry_find_name(reg, longest);
    assert_ptr_equal(got, vm);
    moor_unref(got);
    assert_null(moor_registry_find_name(reg, too_long)); /* over the limit: never found */

    assert_int_equal(
        moor_registry_rename(reg, vm, "d\xc3\xb3main-\xe6\x97\xa5\xf0\x9f\x90\x84", NULL), 0);
    got = moor_registry_find_name(reg, "d\xc3\xb3main-\xe6\x97\xa5\xf0\x9f\x90\x84");
    assert_ptr_equal(got, vm);
    moor_unref(got);
    moor_unref(reg);
    moor_unref(vm);
}

/* Names with ASCII control characters are refused by add and rename: they
 * would break every log line and table that prints them. */
static void test_name_control_characters(void **state)
{
    static const char *const bad[] = {"web\n1",    "\tweb1",  "web1\r",
                                      "a\x1b[2Jb", "del\x7f", "x\x01"};
    moor_registry *reg = reg_new();
    struct vm *vm = vm_new();
    moor_uuid u = uuid_of(UUID_A);
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    expect_add_error(reg, vm, &u, "web\n1", -EINVAL,
                     "name contains a control character (byte 0x0a at offset 3)");
    expect_add_error(reg, vm, &u, "del\x7f", -EINVAL, "(byte 0x7f at offset 3)");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_add_error(reg, vm, &u, bad[i], -EINVAL, "control character");
    assert_int_equal(moor_registry_count(reg), 0);

    must_add(reg, vm, UUID_A, "web 1 ~"); /* space and '~' are printable */
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(moor_registry_rename(reg, vm, bad[i], &err), -EINVAL);
        tu_assert_contains(moor_error_message(&err), "moor_registry_rename: name contains a "
                                                     "control character");
    }
    struct vm *got = moor_registry_find_name(reg, "web 1 ~");
    assert_ptr_equal(got, vm);
    moor_unref(got);
    moor_unref(reg);
    moor_unref(vm);
}

static void test_add_duplicates(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *a = vm_new(), *b = vm_new();
    moor_uuid ua = uuid_of(UUID_A), ub = uuid_of(UUID_B);
    struct vm *got;

    (void)state;
    must_add(reg, a, UUID_A, "alpha");
    expect_add_error(reg, b, &ua, "beta", -EEXIST,
                     "uuid 6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b is already used by object");
    expect_add_error(reg, b, &ua, "beta", -EEXIST, "(class 'test.vm', name 'alpha')");
    expect_add_error(reg, b, &ub, "alpha", -EEXIST, "name 'alpha' is already used by object");
    expect_add_error(reg, b, &ub, "alpha", -EEXIST, "uuid 6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b)");
    expect_add_error(reg, a, &ub, "beta", -EEXIST, "is already registered, as 'alpha'");

    /* Nothing changed: b is nowhere, a is still found by both keys. */
    assert_null(moor_registry_find_uuid(reg, &ub));
    assert_null(moor_registry_find_name(reg, "beta"));
    got = moor_registry_find_name(reg, "alpha");
    assert_ptr_equal(got, a);
    moor_unref(got);
    got = moor_registry_find_uuid(reg, &ua);
    assert_ptr_equal(got, a);
    moor_unref(got);
    assert_int_equal(moor_object_refcount(b), 1);

    /* An object may be in two registries. */
    moor_registry *other = reg_new();
    must_add(other, a, UUID_A, "alpha");
    assert_int_equal(moor_object_refcount(a), 3);
    moor_unref(other);
    moor_unref(reg);
    moor_unref(a);
    moor_unref(b);
}

static void test_add_out_of_memory(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *vm = vm_new();
    moor_uuid u = uuid_of(UUID_A);
    moor_error err = MOOR_ERROR_INIT;

    unsigned long nth = 1;
    int rc;

    (void)state;
    /* Fail the 1st, 2nd, ... allocation until the add allocates no more
     * than that: every failure is clean. */
    for (;; nth++) {
        moor_debug_fail_alloc(nth);
        rc = moor_registry_add(reg, vm, &u, "web1", &err);
        if (rc == 0)
            break;
        assert_int_equal(rc, -ENOMEM);
        tu_assert_contains(moor_error_message(&err),
                           "moor_registry_add(name 'web1'): out of memory");
        assert_int_equal(moor_registry_count(reg), 0);
        assert_int_equal(moor_object_refcount(vm), 1);
    }
    moor_debug_fail_alloc(0);
    assert_true(nth > 1); /* the add allocates */
    assert_int_equal(moor_registry_count(reg), 1);
    moor_unref(reg);
    moor_unref(vm);
}

/* ---- remove --------------------------------------------------------------- */

static void test_remove(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *vm = vm_new();
    moor_uuid u = uuid_of(UUID_A);
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    must_add(reg, vm, UUID_A, "web1");
    assert_int_equal(moor_registry_remove(reg, vm, &err), 0);
    assert_false(moor_lock_held(vm)); /* locked and unlocked inside */
    assert_null(moor_registry_find_uuid(reg, &u));
    assert_null(moor_registry_find_name(reg, "web1"));
    assert_int_equal(moor_registry_count(reg), 0);
    wait_refcount(vm, 1); /* the registry's reference goes after a grace period */

    /* Removing a non-member (again) fails and names the object. */
    assert_int_equal(moor_registry_remove(reg, vm, &err), -ENOENT);
    tu_assert_contains(moor_error_message(&err), "moor_registry_remove: object");
    tu_assert_contains(moor_error_message(&err), "(class 'test.vm') is not in registry");

    /* The keys are free again. */
    must_add(reg, vm, UUID_A, "web1");
    assert_int_equal(moor_object_refcount(vm), 2);
    moor_unref(reg);
    moor_unref(vm);
}

static void test_remove_with_lock_held(void **state)
{
    moor_registry *reg = reg_new();
    moor_uuid u = uuid_of(UUID_A);
    struct vm *vm = vm_new();

    (void)state;
    must_add(reg, vm, UUID_A, "web1");
    moor_unref(vm);
    vm = moor_registry_find_uuid_locked(reg, &u); /* the usual API call */
    assert_non_null(vm);
    assert_true(moor_lock_held(vm));
    assert_int_equal(moor_registry_remove(reg, vm, NULL), 0);
    assert_true(moor_lock_held(vm)); /* still ours */
    assert_null(moor_registry_find_uuid(reg, &u));
    assert_int_equal(atomic_load(&vm_disposed), 0);
    moor_end_api(&vm); /* maybe the last reference, maybe the registry's */
    assert_null(vm);
    moor_unref(reg);
    assert_int_equal(atomic_load(&vm_disposed), 1);
}

/* moor_registry_barrier(): after it, the deferred release of a removed
 * object has run; its dispose ran on liburcu's thread, not ours, and a
 * barrier called there refuses with -EDEADLK instead of hanging. */
struct barrier_probe {
    moor_lockable parent;
};

static const moor_class *probe_class;
static atomic_int probe_disposed, probe_barrier_rc, probe_dispose_tid;

static void probe_dispose(void *obj)
{
    moor_error err = MOOR_ERROR_INIT;

    (void)obj;
    atomic_store(&probe_dispose_tid, (int)syscall(SYS_gettid));
    atomic_store(&probe_barrier_rc, moor_registry_barrier(&err));
    atomic_fetch_add(&probe_disposed, 1);
}

static void test_barrier(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *vm = vm_new();
    struct barrier_probe *p = moor_object_new(probe_class);
    moor_uuid u = uuid_of(UUID_B);
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    assert_non_null(p);
    atomic_store(&probe_disposed, 0);
    must_add(reg, vm, UUID_A, "web1");
    assert_int_equal(moor_registry_add(reg, p, &u, "probe", &err), 0);
    moor_unref(vm); /* the registry's references are the last ones */
    moor_unref(p);
    assert_int_equal(moor_registry_remove(reg, vm, NULL), 0);
    assert_int_equal(moor_registry_remove(reg, p, NULL), 0);
    assert_int_equal(moor_registry_barrier(&err), 0);
    assert_int_equal(atomic_load(&vm_disposed), 1);
    assert_int_equal(atomic_load(&probe_disposed), 1);
    assert_int_equal(moor_census_total(), 1); /* only the registry */
    assert_int_not_equal(atomic_load(&probe_dispose_tid), (int)syscall(SYS_gettid));
    assert_int_equal(atomic_load(&probe_barrier_rc), -EDEADLK);
    moor_unref(reg);
}

static void test_remove_bad_arguments(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *vm = vm_new();
    void *plain = moor_object_new(plain_class);
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    assert_int_equal(moor_registry_remove(NULL, vm, &err), -EINVAL);
    tu_assert_contains(moor_error_message(&err), "moor_registry_remove: (nil) is not a registry");
    assert_int_equal(moor_registry_remove(reg, NULL, &err), -EINVAL);
    assert_int_equal(moor_registry_remove(reg, plain, &err), -EINVAL);
    tu_assert_contains(moor_error_message(&err), "is not a lockable moor object");
    assert_int_equal(moor_registry_remove(reg, vm, NULL), -ENOENT);
    moor_unref(plain);
    moor_unref(reg);
    moor_unref(vm);
}

/* ---- rename --------------------------------------------------------------- */

static void test_rename(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *a = vm_new(), *b = vm_new();
    moor_uuid ua = uuid_of(UUID_A);
    moor_error err = MOOR_ERROR_INIT;
    struct vm *got;

    (void)state;
    must_add(reg, a, UUID_A, "alpha");
    must_add(reg, b, UUID_B, "beta");
    assert_int_equal(moor_registry_rename(reg, a, "gamma", &err), 0);
    assert_null(moor_registry_find_name(reg, "alpha"));
    got = moor_registry_find_name(reg, "gamma");
    assert_ptr_equal(got, a);
    moor_unref(got);
    got = moor_registry_find_uuid(reg, &ua); /* the uuid is unaffected */
    assert_ptr_equal(got, a);
    moor_unref(got);

    /* To its own name: nothing to do. */
    assert_int_equal(moor_registry_rename(reg, a, "gamma", &err), 0);

    /* The old name is free for others. */
    assert_int_equal(moor_registry_rename(reg, b, "alpha", &err), 0);
    got = moor_registry_find_name(reg, "alpha");
    assert_ptr_equal(got, b);
    moor_unref(got);

    /* Renamed again, then back to the name it was added with (its first
     * name node, kept with the entry, stays unlinked; a new one is made). */
    assert_int_equal(moor_registry_rename(reg, b, "delta", &err), 0);
    assert_int_equal(moor_registry_rename(reg, b, "beta", &err), 0);
    assert_null(moor_registry_find_name(reg, "alpha"));
    assert_null(moor_registry_find_name(reg, "delta"));
    got = moor_registry_find_name(reg, "beta");
    assert_ptr_equal(got, b);
    moor_unref(got);
    assert_int_equal(moor_registry_count(reg), 2);
    moor_unref(reg);
    moor_unref(a);
    moor_unref(b);
}

static void test_rename_errors(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *a = vm_new(), *b = vm_new(), *stranger = vm_new();
    moor_error err = MOOR_ERROR_INIT;
    char too_long[MOOR_REGISTRY_NAME_MAX + 2];
    struct vm *got;

    (void)state;
    must_add(reg, a, UUID_A, "alpha");
    must_add(reg, b, UUID_C, "beta");

    assert_int_equal(moor_registry_rename(reg, a, "beta", &err), -EEXIST);
    tu_assert_contains(moor_error_message(&err),
                       "moor_registry_rename('alpha' to 'beta'): name 'beta' is already used by");
    tu_assert_contains(moor_error_message(&err), "uuid ffffffff-ffff-4fff-bfff-fffffffffffc)");
    assert_int_equal(moor_registry_rename(reg, stranger, "delta", &err), -ENOENT);
    tu_assert_contains(moor_error_message(&err), "is not in registry");
    assert_int_equal(moor_registry_rename(reg, a, "", &err), -EINVAL);
    tu_assert_contains(moor_error_message(&err), "moor_registry_rename: name is empty");
    memset(too_long, 'x', sizeof(too_long) - 1);
    too_long[sizeof(too_long) - 1] = '\0';
    assert_int_equal(moor_registry_rename(reg, a, too_long, &err), -EINVAL);
    tu_assert_contains(moor_error_message(&err), "longer than the limit");
    assert_int_equal(moor_registry_rename(reg, a, "\xfe", &err), -EINVAL);
    tu_assert_contains(moor_error_message(&err), "not valid UTF-8");
    assert_int_equal(moor_registry_rename(reg, a, NULL, &err), -EINVAL);
    assert_int_equal(moor_registry_rename(NULL, a, "x", &err), -EINVAL);
    assert_int_equal(moor_registry_rename(reg, NULL, "x", &err), -EINVAL);

    moor_debug_fail_alloc(1);
    assert_int_equal(moor_registry_rename(reg, a, "delta", &err), -ENOMEM);
    tu_assert_contains(moor_error_message(&err), "moor_registry_rename(to 'delta'): out of memory");
    moor_debug_fail_alloc(0);

    /* Nothing changed. */
    got = moor_registry_find_name(reg, "alpha");
    assert_ptr_equal(got, a);
    moor_unref(got);
    assert_null(moor_registry_find_name(reg, "delta"));
    moor_unref(reg);
    moor_unref(a);
    moor_unref(b);
    moor_unref(stranger);
}

/* ---- lookups ---------------------------------------------------------------- */

static void test_find_locked(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *vm = vm_new();
    moor_uuid u = uuid_of(UUID_A), other = uuid_of(UUID_B);
    struct vm *got;

    (void)state;
    must_add(reg, vm, UUID_A, "web1");
    got = moor_registry_find_uuid_locked(reg, &u);
    assert_ptr_equal(got, vm);
    assert_true(moor_lock_held(vm));
    got->value = 1;
    moor_end_api(&got);
    assert_false(moor_lock_held(vm));

    got = moor_registry_find_name_locked(reg, "web1");
    assert_ptr_equal(got, vm);
    assert_true(moor_lock_held(vm));
    moor_end_api(&got);

    assert_null(moor_registry_find_uuid_locked(reg, &other));
    assert_null(moor_registry_find_name_locked(reg, "web2"));
    assert_int_equal(moor_object_refcount(vm), 2);
    moor_unref(reg);
    moor_unref(vm);
}

struct race {
    moor_registry *reg;
    moor_uuid uuid;
    bool by_name;
    atomic_int started;
    void *result;
    bool found;  /* what the lookup returned, kept past moor_end_api() */
    bool locked; /* it returned the object with its mutex held */
};

static void *find_locked_thread(void *arg)
{
    struct race *r = arg;

    atomic_store(&r->started, 1);
    if (r->by_name)
        r->result = moor_registry_find_name_locked(r->reg, "web1");
    else
        r->result = moor_registry_find_uuid_locked(r->reg, &r->uuid);
    /* Record the outcome before moor_end_api() NULLs the pointer. */
    r->found = r->result != NULL;
    r->locked = r->found && moor_lock_held(r->result);
    if (r->result)
        moor_end_api(&r->result);
    return NULL;
}

/* A *_locked lookup that found the object, then waited for its mutex while
 * the holder removed it, returns NULL. (If the lookup comes after the
 * removal it returns NULL too: the test cannot force the order, only make
 * the interesting one likely.) */
static void removed_while_waiting(bool by_name)
{
    struct race r = {.reg = reg_new(), .uuid = uuid_of(UUID_A), .by_name = by_name};
    struct vm *vm = vm_new();
    pthread_t t;

    must_add(r.reg, vm, UUID_A, "web1");
    moor_lock(vm);
    assert_int_equal(pthread_create(&t, NULL, find_locked_thread, &r), 0);
    /* The lookup takes its own reference before it blocks on the mutex we
     * hold: a count of 3 (registry, us, lookup) proves it found the object,
     * so the removal below really lands between its find and its lock. */
    wait_refcount(vm, 3);
    assert_int_equal(moor_registry_remove(r.reg, vm, NULL), 0);
    moor_unlock(vm);
    tu_join(t, NULL);
    if (r.found)
        fail_msg("find_%s_locked returned the object it found (%s) although it was removed "
                 "while the lookup waited for its mutex",
                 by_name ? "name" : "uuid", r.locked ? "locked" : "unlocked");
    moor_unref(r.reg);
    assert_int_equal(moor_object_refcount(vm), 1);
    moor_unref(vm);
}

static void test_find_locked_removed_meanwhile(void **state)
{
    (void)state;
    removed_while_waiting(false);
    removed_while_waiting(true);
}

static void *find_in_thread(void *reg)
{
    return moor_registry_find_name(reg, "web1");
}

/* A thread liburcu has never seen may look up: it registers itself. */
static void test_find_from_fresh_threads(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *vm = vm_new();

    (void)state;
    must_add(reg, vm, UUID_A, "web1");
    for (int i = 0; i < 4; i++) {
        void *got = tu_in_thread(find_in_thread, reg);

        assert_ptr_equal(got, vm);
        moor_unref(got);
    }
    moor_unref(reg);
    moor_unref(vm);
}

static void test_find_bad_arguments(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *vm = vm_new();
    moor_uuid u = uuid_of(UUID_A);

    (void)state;
    assert_null(moor_registry_find_uuid(NULL, &u));
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL,
                     "moor_registry_find_uuid: (nil) is not a registry");
    assert_null(moor_registry_find_uuid(reg, NULL));
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, reg, "moor_registry_find_uuid: NULL key");
    assert_null(moor_registry_find_name(reg, NULL));
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, reg, "moor_registry_find_name: NULL key");
    assert_null(moor_registry_find_uuid_locked((moor_registry *)vm, &u));
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, vm, "moor_registry_find_uuid_locked");
    assert_null(moor_registry_find_name_locked(NULL, "x"));
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "moor_registry_find_name_locked");
    assert_int_equal(moor_registry_count(NULL), 0);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, NULL, "moor_registry_count");
    moor_unref(reg);
    moor_unref(vm);
}

/* ---- count and collect ---------------------------------------------------- */

static bool keep_odd(void *obj, void *opaque)
{
    struct vm *vm = obj;
    bool keep;

    (*(int *)opaque)++;
    moor_lock(vm); /* a filter may lock the object */
    keep = vm->value % 2 == 1;
    moor_unlock(vm);
    return keep;
}

static void test_collect(void **state)
{
    moor_registry *reg = reg_new();
    const char *uuids[3] = {UUID_A, UUID_B, UUID_C};
    const char *names[3] = {"zero", "one", "two"};
    struct vm *vms[3];
    void **objs = NULL;
    int calls = 0;

    (void)state;
    assert_int_equal(moor_registry_collect(reg, NULL, NULL, &objs, NULL), 0);
    assert_non_null(objs);
    assert_null(objs[0]);
    moor_registry_array_free(objs);

    for (int i = 0; i < 3; i++) {
        vms[i] = vm_new();
        vms[i]->value = i;
        must_add(reg, vms[i], uuids[i], names[i]);
    }
    assert_int_equal(moor_registry_count(reg), 3);
    assert_int_equal(moor_registry_collect(reg, NULL, NULL, &objs, NULL), 3);
    assert_null(objs[3]);
    for (int i = 0; i < 3; i++)
        assert_int_equal(moor_object_refcount(vms[i]), 3);
    moor_registry_array_free(objs);

    assert_int_equal(moor_registry_collect(reg, keep_odd, &calls, &objs, NULL), 1);
    assert_int_equal(calls, 3);
    assert_ptr_equal(objs[0], vms[1]);
    assert_null(objs[1]);
    assert_int_equal(moor_object_refcount(vms[0]), 2); /* filtered out: dropped */
    moor_registry_array_free(objs);
    moor_registry_array_free(NULL);

    moor_unref(reg);
    for (int i = 0; i < 3; i++)
        moor_unref(vms[i]);
}

static void test_collect_errors(void **state)
{
    moor_registry *reg = reg_new();
    struct vm *vm = vm_new();
    void **objs = (void **)&objs; /* a sentinel that must survive failures */
    void **sentinel = objs;
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    must_add(reg, vm, UUID_A, "web1");
    assert_int_equal(moor_registry_collect(NULL, NULL, NULL, &objs, &err), -EINVAL);
    tu_assert_contains(moor_error_message(&err), "moor_registry_collect: (nil) is not a registry");
    assert_int_equal(moor_registry_collect(reg, NULL, NULL, NULL, &err), -EINVAL);
    tu_assert_contains(moor_error_message(&err), "out is NULL");
    moor_debug_fail_alloc(1);
    assert_int_equal(moor_registry_collect(reg, NULL, NULL, &objs, &err), -ENOMEM);
    moor_debug_fail_alloc(0);
    tu_assert_contains(moor_error_message(&err), "moor_registry_collect: out of memory");
    assert_ptr_equal(objs, sentinel);
    assert_int_equal(moor_object_refcount(vm), 2); /* no reference left over */
    moor_unref(reg);
    moor_unref(vm);
}

/* ---- table sizing ---------------------------------------------------------- */

#define GROW_COUNT 3000 /* crosses six doublings of the 64-bucket tables */

struct grow_watch {
    moor_registry *reg;
    moor_uuid uuid; /* of the first member, added before the thread starts */
    atomic_bool stop;
    atomic_long misses, lookups;
};

/* Looks the first member up while the tables grow under it. */
static void *grow_watch_thread(void *arg)
{
    struct grow_watch *g = arg;

    while (!atomic_load(&g->stop)) {
        void *a = moor_registry_find_uuid(g->reg, &g->uuid);
        void *b = moor_registry_find_name(g->reg, "grow-0");

        if (!a || !b || a != b)
            atomic_fetch_add(&g->misses, 1);
        moor_unref(a);
        moor_unref(b);
        atomic_fetch_add(&g->lookups, 1);
    }
    return NULL;
}

/* Adds resize the tables as the count grows (see registry.c, "Table
 * sizes"): every member stays reachable by both keys, during the resizes
 * (another thread keeps looking one up) and after them, and removing them
 * all leaves an empty registry that can grow again. */
static void test_grow_keeps_every_member(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    struct grow_watch g = {.reg = reg_new()};
    struct vm **vms = calloc(GROW_COUNT, sizeof(*vms));
    moor_uuid *uuids = calloc(GROW_COUNT, sizeof(*uuids));
    pthread_t watcher;
    char name[32];

    (void)state;
    assert_non_null(vms);
    assert_non_null(uuids);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < GROW_COUNT; i++) {
            if (round == 0)
                vms[i] = vm_new();
            assert_int_equal(moor_uuid_generate(&uuids[i], &err), 0);
            snprintf(name, sizeof(name), "grow-%d", i);
            if (moor_registry_add(g.reg, vms[i], &uuids[i], name, &err) != 0)
                fail_msg("moor_registry_add(%s): %s", name, moor_error_message(&err));
            if (i == 0) {
                g.uuid = uuids[0];
                atomic_store(&g.stop, false);
                assert_int_equal(pthread_create(&watcher, NULL, grow_watch_thread, &g), 0);
            }
        }
        atomic_store(&g.stop, true);
        tu_join(watcher, NULL);
        assert_int_equal(atomic_load(&g.misses), 0);
        assert_int_equal(moor_registry_count(g.reg), GROW_COUNT);
        for (int i = 0; i < GROW_COUNT; i++) {
            void *a = moor_registry_find_uuid(g.reg, &uuids[i]);

            snprintf(name, sizeof(name), "grow-%d", i);
            assert_ptr_equal(a, vms[i]);
            moor_unref(a);
            a = moor_registry_find_name(g.reg, name);
            assert_ptr_equal(a, vms[i]);
            moor_unref(a);
        }
        for (int i = 0; i < GROW_COUNT; i++)
            assert_int_equal(moor_registry_remove(g.reg, vms[i], &err), 0);
        assert_int_equal(moor_registry_count(g.reg), 0);
        assert_null(moor_registry_find_uuid(g.reg, &uuids[0]));
    }
    moor_unref(g.reg); /* waits for the deferred releases */
    for (int i = 0; i < GROW_COUNT; i++) {
        assert_int_equal(moor_object_refcount(vms[i]), 1);
        moor_unref(vms[i]);
    }
    free(vms);
    free(uuids);
}

int main(void)
{
    moor_error err = MOOR_ERROR_INIT;
    const struct CMUnitTest tests[] = {
        REG_TEST(test_uuid_parse_format),
        REG_TEST(test_uuid_parse_errors),
        REG_TEST(test_uuid_generate),
        REG_TEST(test_uuid_equal),
        REG_TEST(test_new_unref),
        REG_TEST(test_new_out_of_memory),
        REG_TEST(test_unref_drops_every_reference),
        REG_TEST(test_destroy_from_reclaim_thread),
        REG_TEST(test_add_find),
        REG_TEST(test_keys_of_every_length),
        REG_TEST(test_add_bad_arguments),
        REG_TEST(test_add_name_validation),
        REG_TEST(test_add_duplicates),
        REG_TEST(test_add_out_of_memory),
        REG_TEST(test_remove),
        REG_TEST(test_remove_with_lock_held),
        REG_TEST(test_remove_bad_arguments),
        REG_TEST(test_rename),
        REG_TEST(test_rename_errors),
        REG_TEST(test_find_locked),
        REG_TEST(test_find_locked_removed_meanwhile),
        REG_TEST(test_find_from_fresh_threads),
        REG_TEST(test_find_bad_arguments),
        REG_TEST(test_collect),
        REG_TEST(test_collect_errors),
        REG_TEST(test_grow_keeps_every_member),
        REG_TEST(test_name_control_characters),
        REG_TEST(test_barrier),
    };

    vm_class =
        moor_class_new("test.vm", moor_lockable_class(), sizeof(struct vm), vm_dispose, &err);
    holder_class = moor_class_new("test.holder", moor_lockable_class(), sizeof(struct holder),
                                  holder_dispose, &err);
    plain_class =
        moor_class_new("test.plain", moor_object_class(), sizeof(moor_object), NULL, &err);
    probe_class = moor_class_new("test.barrier-probe", moor_lockable_class(),
                                 sizeof(struct barrier_probe), probe_dispose, &err);
    if (!vm_class || !holder_class || !plain_class || !probe_class) {
        fprintf(stderr, "moor_class_new: %s\n", moor_error_message(&err));
        return 1;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
