/* SPDX-License-Identifier: MIT */
/*
 * test-log.c - moor-vmd's log lines: one line per call with control
 * characters replaced, and the rate limit of vmd_log_limited (a burst per
 * window, then one "suppressed" line before the next line let through).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* stderr goes to a temporary file while @fn runs; returns what it wrote. */
static char *capture(void (*fn)(void *), void *arg)
{
    static char buf[16384];
    FILE *tmp = tmpfile();
    int saved = dup(STDERR_FILENO);

    assert_non_null(tmp);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    fn(arg);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    rewind(tmp);
    size_t n = fread(buf, 1, sizeof(buf) - 1, tmp);
    buf[n] = '\0';
    fclose(tmp);
    return buf;
}

static unsigned count(const char *s, const char *needle)
{
    unsigned n = 0;

    for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static void plain_lines(void *arg)
{
    (void)arg;
    vmd_log(VMD_LOG_WARNING, "vm1", "stats", "504: %s", "no answer\nforged: line");
    vmd_log(VMD_LOG_DEBUG, NULL, NULL, "not printed below the level");
}

static void test_line(void **state)
{
    (void)state;
    const char *out = capture(plain_lines, NULL);

    assert_string_equal(out, "moor-vmd: warning: domain vm1: stats: 504: no answer?forged: line\n");
}

static struct vmd_log_limit limit = VMD_LOG_LIMIT_INIT;

static void flood(void *arg)
{
    unsigned n = *(unsigned *)arg;

    for (unsigned i = 0; i < n; i++)
        vmd_log_limited(&limit, VMD_LOG_WARNING, "hung", "stats", "504: call %u", i);
}

static void test_rate_limit(void **state)
{
    (void)state;
    unsigned n = 1000;
    const char *out = capture(flood, &n);

    /* the burst, then silence: nothing about the rest yet */
    assert_int_equal(count(out, "\n"), VMD_LOG_BURST);
    assert_int_equal(count(out, "504: call "), VMD_LOG_BURST);
    assert_null(strstr(out, "suppressed"));
    /* the window has passed: the count comes first, then the line */
    limit.window_start_ms -= VMD_LOG_WINDOW_MS;
    n = 1;
    out = capture(flood, &n);
    char want[128];
    snprintf(want, sizeof(want),
             "moor-vmd: warning: %u similar lines suppressed (at most %u per %u s)\n"
             "moor-vmd: warning: domain hung: stats: 504: call 0\n",
             1000 - VMD_LOG_BURST, VMD_LOG_BURST, VMD_LOG_WINDOW_MS / 1000);
    assert_string_equal(out, want);
    /* nothing was left over: the next line has no count before it */
    out = capture(flood, &n);
    assert_string_equal(out, "moor-vmd: warning: domain hung: stats: 504: call 0\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line),
        cmocka_unit_test(test_rate_limit),
    };

    vmd_log_setup(VMD_LOG_TEXT);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
