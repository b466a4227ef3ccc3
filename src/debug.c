/* SPDX-License-Identifier: MIT */
/*
 * debug.c - MOOR_DEBUG flags, the misuse report hook, thread ids and the
 * fault-injecting allocator.
 *
 * Theory of operation: the flag word is read with one relaxed load on every
 * checked path, so it is a plain atomic initialised from the environment by
 * a constructor. The report hook and its opaque pointer change together, so
 * they sit behind a small leaf mutex; a report copies them out and calls the
 * hook unlocked, which lets a hook install another hook. Reports are rare by
 * nature, so the mutex costs nothing that matters.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <moor/introspect.h>

#include "debug-internal.h"
#include "object-internal.h"

#define MAX_WATCHDOG_MS 86400000ul /* a day */

atomic_uint moor__debug_flags;

static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
static moor_report_fn report_fn = moor_debug_report_stderr; /* never NULL */
static void *report_opaque;
static atomic_bool leak_report_armed;
static atomic_ulong fail_alloc_countdown;

static const struct {
    const char *word;
    unsigned flags;
} debug_words[] = {
    {"locks", MOOR_DEBUG_LOCKS},
    {"refs", MOOR_DEBUG_REFS},
    {"leaks", MOOR_DEBUG_LEAKS},
    {"watchdog", MOOR_DEBUG_WATCHDOG},
    {"abort", MOOR_DEBUG_ABORT},
    {"all", MOOR_DEBUG_LOCKS | MOOR_DEBUG_REFS | MOOR_DEBUG_LEAKS | MOOR_DEBUG_WATCHDOG},
};

static int word_flags(const char *word, size_t len)
{
    for (size_t i = 0; i < sizeof(debug_words) / sizeof(debug_words[0]); i++) {
        if (strlen(debug_words[i].word) == len && strncmp(debug_words[i].word, word, len) == 0)
            return (int)debug_words[i].flags;
    }
    return -EINVAL;
}

/* "watchdog=MS": the flag, with the threshold in *@ms. */
static int watchdog_word(const char *word, size_t len, uint32_t *ms)
{
    static const char prefix[] = "watchdog=";
    char digits[16];
    char *end;
    unsigned long v;

    if (len <= sizeof(prefix) - 1 || strncmp(word, prefix, sizeof(prefix) - 1) != 0)
        return -EINVAL;
    len -= sizeof(prefix) - 1;
    word += sizeof(prefix) - 1;
    if (len >= sizeof(digits) || strspn(word, "0123456789") < len)
        return -EINVAL;
    memcpy(digits, word, len);
    digits[len] = '\0';
    v = strtoul(digits, &end, 10);
    if (v < 1 || v > MAX_WATCHDOG_MS)
        return -EINVAL;
    *ms = (uint32_t)v;
    return MOOR_DEBUG_WATCHDOG;
}

int moor_debug_parse(const char *spec)
{
    uint32_t ms = 0;
    int flags = 0;

    while (spec && *spec) {
        size_t len = strcspn(spec, ",");
        int f = len ? word_flags(spec, len) : 0;

        if (f < 0)
            f = watchdog_word(spec, len, &ms);
        if (f < 0)
            return f;
        flags |= f;
        spec += len;
        if (*spec == ',')
            spec++;
    }
    if (ms)
        moor_debug_set_watchdog_ms(ms);
    return flags;
}

unsigned moor_debug_flags(void)
{
    /* relaxed: see moor__debug_on(). */
    return atomic_load_explicit(&moor__debug_flags, memory_order_relaxed);
}

static void leak_report_at_exit(void)
{
    if (moor__debug_on(MOOR_DEBUG_LEAKS))
        moor__census_report_leaks();
}

/* The flag word and the leak report, without the watchdog: what the
 * constructor may do before main (no thread is started there). */
static unsigned set_flags(unsigned flags)
{
    /* relaxed: a debugging switch needs no ordering with anything. */
    unsigned old = atomic_exchange_explicit(&moor__debug_flags, flags, memory_order_relaxed);

    /* relaxed: atexit() itself serialises; this only avoids arming twice. */
    if ((flags & MOOR_DEBUG_LEAKS) &&
        !atomic_exchange_explicit(&leak_report_armed, true, memory_order_relaxed))
        atexit(leak_report_at_exit);
    return old;
}

unsigned moor_debug_set_flags(unsigned flags)
{
    unsigned old = set_flags(flags);

    moor__watchdog_sync();
    return old;
}

__attribute__((constructor)) static void debug_init_from_env(void)
{
    const char *spec = getenv("MOOR_DEBUG");
    int flags = moor_debug_parse(spec);

    if (flags < 0) {
        fprintf(stderr,
                "moor: MOOR_DEBUG=%s: unknown word; known: locks, refs, leaks, "
                "watchdog, watchdog=MS, abort, all\n",
                spec);
        flags = 0;
    }
    if (flags)
        set_flags((unsigned)flags); /* the watchdog starts at the first job or monitor */
}

void moor_debug_report_stderr(moor_misuse kind, const void *subject, const char *message,
                              void *opaque)
{
    (void)kind, (void)subject, (void)opaque;
    fprintf(stderr, "moor: %s\n", message);
}

moor_report_fn moor_debug_swap_report(moor_report_fn fn, void *opaque, void **prev_opaque)
{
    moor_report_fn prev;

    pthread_mutex_lock(&report_lock);
    prev = report_fn;
    if (prev_opaque)
        *prev_opaque = report_opaque;
    report_fn = fn ? fn : moor_debug_report_stderr;
    report_opaque = fn ? opaque : NULL;
    pthread_mutex_unlock(&report_lock);
    return prev;
}

moor_report_fn moor_debug_set_report(moor_report_fn fn, void *opaque)
{
    return moor_debug_swap_report(fn, opaque, NULL);
}

void moor_debug_report(moor_misuse kind, const void *subject, const char *fmt, ...)
{
    char message[512];
    moor_report_fn fn;
    void *opaque;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);

    pthread_mutex_lock(&report_lock);
    fn = report_fn;
    opaque = report_opaque;
    pthread_mutex_unlock(&report_lock);

    fn(kind, subject, message, opaque);
    if (moor__debug_on(MOOR_DEBUG_ABORT))
        abort();
}

/*
 * Thread ids after fork(). The child's one thread is a new kernel thread
 * with its own id, but inherits the parent thread's TLS, so the cached id
 * is cleared in the child (pthread_atfork) and fetched again. The old id
 * is kept as that thread's fork alias: a mutex the parent thread held
 * across fork() is recorded under the old id, and the owner checks accept
 * the alias, so the child can still unlock it (docs/object.md, "fork").
 */
__thread int moor__tid __attribute__((tls_model("initial-exec")));
__thread int moor__fork_alias __attribute__((tls_model("initial-exec")));

int moor__thread_id(void)
{
    if (!moor__tid)
        moor__tid = (int)syscall(SYS_gettid);
    return moor__tid;
}

static void thread_id_after_fork(void)
{
    if (moor__tid)
        moor__fork_alias = moor__tid;
    moor__tid = 0;
    moor__watchdog_after_fork();
    /* A thread reading or swapping the hook at the fork held report_lock
     * for a few instructions; it does not exist here, so the child's first
     * report would hang on it. A fresh mutex instead: no prepare handler,
     * which would order report_lock against the locks that other prepare
     * handlers take and under which moor reports. (A swap cut in half by
     * the fork leaves the child the old hook or the new one with the
     * other's opaque: a program that forks while it installs its hook.) */
    report_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
}

__attribute__((constructor)) static void thread_id_init(void)
{
    pthread_atfork(NULL, NULL, thread_id_after_fork);
}

void moor_debug_fail_alloc(unsigned long nth)
{
    /* relaxed: fault injection is for single-threaded tests (see header). */
    atomic_store_explicit(&fail_alloc_countdown, nth, memory_order_relaxed);
}

/* True when this allocation is the one chosen to fail. */
static bool alloc_should_fail(void)
{
    /* relaxed: fault injection is for single-threaded tests (see header). */
    unsigned long n = atomic_load_explicit(&fail_alloc_countdown, memory_order_relaxed);

    if (MOOR_LIKELY(n == 0))
        return false;
    atomic_store_explicit(&fail_alloc_countdown, n - 1, memory_order_relaxed);
    return n == 1;
}

void *moor__malloc(size_t size)
{
    if (alloc_should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    return malloc(size);
}

void *moor__calloc(size_t n, size_t size)
{
    if (alloc_should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    return calloc(n, size);
}

void moor__free(void *p)
{
    free(p);
}
