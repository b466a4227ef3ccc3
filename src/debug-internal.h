/* SPDX-License-Identifier: MIT */
/*
 * debug-internal.h - helpers shared by moor's own source files: the debug
 * flag test, thread ids for reports, and the allocator with fault
 * injection. Not installed.
 */
#ifndef MOOR_DEBUG_INTERNAL_H
#define MOOR_DEBUG_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <moor/debug.h>

extern atomic_uint moor__debug_flags;

/* One relaxed load: the cost of a debug check that is off. */
static inline bool moor__debug_on(unsigned flag)
{
    /* relaxed: a debugging switch needs no ordering with anything. */
    return (atomic_load_explicit(&moor__debug_flags, memory_order_relaxed) & flag) != 0;
}

/* The kernel's id of the calling thread (what gdb and /proc show); never 0.
 * moor__tid caches it (0 until the first call, and again in a fork child);
 * fast paths read it directly and call moor__thread_id() when it is 0. */
extern __thread int moor__tid __attribute__((tls_model("initial-exec")));
int moor__thread_id(void);

/* Whether @id (an owner or holder field) names the calling thread: its
 * id, or, in a fork child, the id its thread had in the parent (a lock
 * held across fork() stays the child's to release). For slow paths. */
extern __thread int moor__fork_alias __attribute__((tls_model("initial-exec")));
static inline bool moor__thread_is_self(int id)
{
    return id != 0 && (id == moor__thread_id() || id == moor__fork_alias);
}

/* The watchdog (introspect.c): start or stop its thread to match the
 * MOOR_DEBUG_WATCHDOG flag. Takes the watchdog's leaf mutex; may join the
 * thread. Not from a report hook. */
void moor__watchdog_sync(void);

/* In a fork child: the watchdog thread did not survive; forget it. */
void moor__watchdog_after_fork(void);

/* The CLOCK_MONOTONIC time @ms milliseconds from now: the absolute
 * deadline of a bounded wait (condition variables set to that clock,
 * sem_clockwait). */
static inline struct timespec moor__deadline_after_ms(uint32_t ms)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* malloc/calloc/free that honour moor_debug_fail_alloc(). */
void *moor__malloc(size_t size);
void *moor__calloc(size_t n, size_t size);
void moor__free(void *p);

#endif /* MOOR_DEBUG_INTERNAL_H */
