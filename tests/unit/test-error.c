/* SPDX-License-Identifier: MIT */
/*
 * test-error.c - moor_error: set, prefix, clear, is_set, message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include <moor/error.h>

#include "test-util.h"

/* A string of @n 'x' characters in @buf (which holds n + 1). */
static const char *xs(char *buf, size_t n)
{
    memset(buf, 'x', n);
    buf[n] = '\0';
    return buf;
}

static void test_init_is_empty(void **state)
{
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    assert_int_equal(err.code, 0);
    assert_false(moor_error_is_set(&err));
    assert_string_equal(moor_error_message(&err), "");
}

static void test_set_returns_code(void **state)
{
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    assert_int_equal(moor_error_set(&err, -ENOENT, "no vm named '%s'", "vm1"), -ENOENT);
    assert_int_equal(err.code, -ENOENT);
    assert_true(moor_error_is_set(&err));
    assert_string_equal(moor_error_message(&err), "no vm named 'vm1'");
}

static void test_set_replaces_earlier_error(void **state)
{
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    moor_error_set(&err, -ENOENT, "first");
    assert_int_equal(moor_error_set(&err, -EBUSY, "second %d", 2), -EBUSY);
    assert_int_equal(err.code, -EBUSY);
    assert_string_equal(moor_error_message(&err), "second 2");
}

static void test_set_non_negative_code_is_einval(void **state)
{
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    assert_int_equal(moor_error_set(&err, 0, "zero"), -EINVAL);
    assert_int_equal(err.code, -EINVAL);
    assert_string_equal(moor_error_message(&err), "zero");

    assert_int_equal(moor_error_set(&err, ENOENT, "positive"), -EINVAL);
    assert_int_equal(err.code, -EINVAL);
    assert_string_equal(moor_error_message(&err), "positive");

    assert_int_equal(moor_error_set(NULL, 0, "zero"), -EINVAL);
    assert_int_equal(moor_error_set(NULL, 7, "seven"), -EINVAL);
}

static void test_set_exact_fit_is_not_marked(void **state)
{
    char text[MOOR_ERROR_MESSAGE_SIZE];
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    /* 255 characters and the NUL fill the buffer exactly. */
    moor_error_set(&err, -EIO, "%s", xs(text, MOOR_ERROR_MESSAGE_SIZE - 1));
    assert_int_equal(strlen(moor_error_message(&err)), MOOR_ERROR_MESSAGE_SIZE - 1);
    assert_string_equal(moor_error_message(&err), text);
}

static void test_set_truncation_is_marked(void **state)
{
    char text[2 * MOOR_ERROR_MESSAGE_SIZE];
    moor_error err = MOOR_ERROR_INIT;
    const char *msg;
    size_t len;

    (void)state;
    /* One character too many. */
    moor_error_set(&err, -EIO, "%s", xs(text, MOOR_ERROR_MESSAGE_SIZE));
    msg = moor_error_message(&err);
    len = strlen(msg);
    assert_int_equal(len, MOOR_ERROR_MESSAGE_SIZE - 1);
    assert_string_equal(msg + len - 3, "...");
    assert_int_equal(strspn(msg, "x"), len - 3);

    /* Far too many, built from several arguments. */
    moor_error_set(&err, -EIO, "start %s %s end", xs(text, 300), "middle");
    msg = moor_error_message(&err);
    len = strlen(msg);
    assert_int_equal(len, MOOR_ERROR_MESSAGE_SIZE - 1);
    assert_memory_equal(msg, "start xxx", 9);
    assert_string_equal(msg + len - 3, "...");
    assert_int_equal(err.code, -EIO);
}

static void test_prefix_adds_context(void **state)
{
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    moor_error_set(&err, -ETIMEDOUT, "job MODIFY held by thread %d", 42);
    assert_int_equal(moor_error_prefix(&err, "while starting %s: ", "vm1"), -ETIMEDOUT);
    assert_int_equal(err.code, -ETIMEDOUT);
    assert_string_equal(moor_error_message(&err),
                        "while starting vm1: job MODIFY held by thread 42");

    /* Prefixes stack, outermost first. */
    assert_int_equal(moor_error_prefix(&err, "%s", "api: "), -ETIMEDOUT);
    assert_string_equal(moor_error_message(&err),
                        "api: while starting vm1: job MODIFY held by thread 42");
}

static void test_prefix_without_error_does_nothing(void **state)
{
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    assert_int_equal(moor_error_prefix(&err, "ctx: "), 0);
    assert_false(moor_error_is_set(&err));
    assert_string_equal(moor_error_message(&err), "");
    assert_string_equal(err.message, "");

    assert_int_equal(moor_error_prefix(NULL, "ctx: "), 0);
}

static void test_prefix_of_code_only_error_uses_strerror(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    char expected[MOOR_ERROR_MESSAGE_SIZE];

    (void)state;
    moor_error_set(&err, -ENOENT, "%s", "");
    assert_int_equal(moor_error_prefix(&err, "open %s: ", "/x"), -ENOENT);
    snprintf(expected, sizeof(expected), "open /x: %s", strerror(ENOENT));
    assert_string_equal(moor_error_message(&err), expected);
}

/* Same with a code strerror does not know: the fallback text may be a
 * short static string, and prefixing must not read past its end (ASan
 * checks this one: the fallback lives in the library's own globals). */
static void test_prefix_of_unknown_code(void **state)
{
    moor_error err = MOOR_ERROR_INIT;
    char before[MOOR_ERROR_MESSAGE_SIZE];
    char expected[MOOR_ERROR_MESSAGE_SIZE + 8];

    (void)state;
    moor_error_set(&err, -100000, "%s", "");
    snprintf(before, sizeof(before), "%s", moor_error_message(&err));
    assert_true(strlen(before) > 0);
    assert_int_equal(moor_error_prefix(&err, "ctx: "), -100000);
    snprintf(expected, sizeof(expected), "ctx: %s", before);
    assert_string_equal(moor_error_message(&err), expected);
}

static void test_prefix_truncation_is_marked(void **state)
{
    char text[MOOR_ERROR_MESSAGE_SIZE];
    moor_error err = MOOR_ERROR_INIT;
    const char *msg;
    size_t len;

    (void)state;
    moor_error_set(&err, -EIO, "%s", xs(text, 250));
    assert_int_equal(moor_error_prefix(&err, "context: "), -EIO);
    msg = moor_error_message(&err);
    len = strlen(msg);
    assert_int_equal(len, MOOR_ERROR_MESSAGE_SIZE - 1);
    assert_memory_equal(msg, "context: xxx", 12);
    assert_string_equal(msg + len - 3, "...");
}

static void test_clear(void **state)
{
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    moor_error_set(&err, -EBUSY, "busy");
    moor_error_clear(&err);
    assert_int_equal(err.code, 0);
    assert_false(moor_error_is_set(&err));
    assert_string_equal(moor_error_message(&err), "");
    assert_string_equal(err.message, "");

    /* Reusable after clearing. */
    assert_int_equal(moor_error_set(&err, -EAGAIN, "again"), -EAGAIN);
    assert_string_equal(moor_error_message(&err), "again");
}

static void test_null_safety(void **state)
{
    (void)state;
    assert_int_equal(moor_error_set(NULL, -ENOMEM, "out of %s", "memory"), -ENOMEM);
    assert_int_equal(moor_error_prefix(NULL, "x"), 0);
    moor_error_clear(NULL);
    assert_false(moor_error_is_set(NULL));
    assert_non_null(moor_error_message(NULL));
    assert_string_equal(moor_error_message(NULL), "");
}

static void test_message_falls_back_to_strerror(void **state)
{
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    moor_error_set(&err, -ENOENT, "%s", "");
    assert_true(moor_error_is_set(&err));
    assert_string_equal(moor_error_message(&err), strerror(ENOENT));

    moor_error_set(&err, -EBUSY, "%s", "");
    assert_string_equal(moor_error_message(&err), strerror(EBUSY));

    /* An out-of-range code still yields text, never NULL. */
    moor_error_set(&err, -100000, "%s", "");
    assert_non_null(moor_error_message(&err));
    assert_true(strlen(moor_error_message(&err)) > 0);
}

static void test_message_with_code_zero_is_empty(void **state)
{
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    /* A message without a code is not an error. */
    snprintf(err.message, sizeof(err.message), "stale");
    assert_false(moor_error_is_set(&err));
    assert_string_equal(moor_error_message(&err), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_init_is_empty),
        TU_TEST(test_set_returns_code),
        TU_TEST(test_set_replaces_earlier_error),
        TU_TEST(test_set_non_negative_code_is_einval),
        TU_TEST(test_set_exact_fit_is_not_marked),
        TU_TEST(test_set_truncation_is_marked),
        TU_TEST(test_prefix_adds_context),
        TU_TEST(test_prefix_without_error_does_nothing),
        TU_TEST(test_prefix_of_code_only_error_uses_strerror),
        TU_TEST(test_prefix_of_unknown_code),
        TU_TEST(test_prefix_truncation_is_marked),
        TU_TEST(test_clear),
        TU_TEST(test_null_safety),
        TU_TEST(test_message_falls_back_to_strerror),
        TU_TEST(test_message_with_code_zero_is_empty),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
