/* SPDX-License-Identifier: MIT */
/*
 * debug-example.c - the example of docs/debug.md: a daemon's own misuse
 * hook (here it counts reports and logs them) catching an unref too many.
 */
#include <stdio.h>

#include <moor/debug.h>
#include <moor/object.h>

static int reports;

static void log_misuse(moor_misuse kind, const void *subject, const char *message, void *opaque)
{
    (void)subject;
    fprintf(opaque, "[misuse %d] %s\n", (int)kind, message);
    reports++;
}

int main(void)
{
    moor_refcnt counter = MOOR_REFCNT_INIT;

    moor_debug_set_report(log_misuse, stdout);
    (void)moor_refcnt_dec_and_test(&counter); /* the owner drops its reference */
    (void)moor_refcnt_dec_and_test(&counter); /* one too many: saturated */
    (void)moor_refcnt_dec_and_test(&counter); /* stays saturated, no new report */
    printf("saturated: %s, reports: %d\n", moor_refcnt_is_saturated(&counter) ? "yes" : "no",
           reports);
    moor_debug_set_report(NULL, NULL); /* back to stderr */
    return reports == 1 ? 0 : 1;
}
