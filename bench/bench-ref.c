/* SPDX-License-Identifier: MIT */
/*
 * bench/bench-ref.c - the cost of taking and dropping a reference.
 *
 * Each case does one "pair" per iteration on a counter that never leaves
 * the range [1, 1 + threads], so no pair ever frees anything:
 *
 *   atomic_pair         bare C11: fetch_add relaxed + fetch_sub release on
 *                       an int, results unused. The floor every refcount
 *                       pays; the baseline of the others.
 *   glib_refcount_pair  g_atomic_ref_count_inc + g_atomic_ref_count_dec,
 *                       as GLib ships them (out-of-line calls; the inline
 *                       macros need G_DISABLE_CHECKS). Only with GLib.
 *   moor_refcnt_pair    moor_refcnt_inc + moor_refcnt_dec_and_test.
 *   object_ref_unref    moor_ref + moor_unref on an object kept alive by
 *                       the harness's own reference.
 *   weak_get_unref      moor_weak_get + moor_unref through a weak
 *                       reference to such an object; its baseline is
 *                       object_ref_unref, so the ratio is the weak lookup's
 *                       price over a plain ref.
 *
 * Every case is BENCH_CONTENDED: at N threads all of them hammer the same
 * counter, which is what a hot shared object does.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include <moor/object.h>
#include <moor/ref.h>

#ifdef MOOR_BENCH_HAVE_GLIB
#include <glib.h>
#endif

#include "bench.h"

/* ---- atomic_pair ------------------------------------------------------ */

/* Own cache line, so that nothing else in the process shares it. */
struct atomic_state {
    _Alignas(64) atomic_int count;
};

static void *atomic_setup(void)
{
    struct atomic_state *s = aligned_alloc(64, sizeof(*s));

    if (!s)
        bench_fail("atomic_pair: out of memory");
    atomic_init(&s->count, 1);
    return s;
}

BENCH_LOOP(bench_loop_atomic_pair, state, iters)
{
    struct atomic_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&s->count, 1, memory_order_release);
        bench_clobber();
    }
}

/* ---- glib_refcount_pair ------------------------------------------------ */

#ifdef MOOR_BENCH_HAVE_GLIB
struct glib_state {
    _Alignas(64) gatomicrefcount count;
};

static void *glib_setup(void)
{
    struct glib_state *s = aligned_alloc(64, sizeof(*s));

    if (!s)
        bench_fail("glib_refcount_pair: out of memory");
    g_atomic_ref_count_init(&s->count);
    return s;
}

BENCH_LOOP(bench_loop_glib_refcount_pair, state, iters)
{
    struct glib_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        g_atomic_ref_count_inc(&s->count);
        if (g_atomic_ref_count_dec(&s->count))
            bench_fail("glib_refcount_pair: count reached zero");
        bench_clobber();
    }
}
#endif

/* ---- moor_refcnt_pair -------------------------------------------------- */

struct refcnt_state {
    _Alignas(64) moor_refcnt ref;
};

static void *refcnt_setup(void)
{
    struct refcnt_state *s = aligned_alloc(64, sizeof(*s));

    if (!s)
        bench_fail("moor_refcnt_pair: out of memory");
    moor_refcnt_init(&s->ref);
    return s;
}

BENCH_LOOP(bench_loop_moor_refcnt_pair, state, iters)
{
    struct refcnt_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        moor_refcnt_inc(&s->ref);
        if (moor_refcnt_dec_and_test(&s->ref))
            bench_fail("moor_refcnt_pair: count reached zero");
        bench_clobber();
    }
}

/* Shared by the three plain-counter cases. */
static void free_state(void *state)
{
    free(state);
}

/* ---- object_ref_unref, weak_get_unref --------------------------------- */

/* The object holds its own reference for the whole case; the weak
 * reference points at it. */
struct object_state {
    void *obj;
    moor_weak weak;
};

static const moor_class *bench_class(void)
{
    static const moor_class *klass;
    moor_error err = MOOR_ERROR_INIT;

    /* Setup runs in the main thread only: no race on @klass. */
    if (!klass)
        klass =
            moor_class_new("bench_object", moor_object_class(), sizeof(moor_object), NULL, &err);
    if (!klass)
        bench_fail("moor_class_new: %s", moor_error_message(&err));
    return klass;
}

static void *object_setup(void)
{
    struct object_state *s = calloc(1, sizeof(*s));

    if (!s)
        bench_fail("object setup: out of memory");
    s->obj = moor_object_new(bench_class());
    if (!s->obj)
        bench_fail("moor_object_new failed");
    moor_weak_set(&s->weak, s->obj);
    return s;
}

static void object_teardown(void *state)
{
    struct object_state *s = state;

    moor_weak_clear(&s->weak);
    moor_unref(s->obj);
    free(s);
}

BENCH_LOOP(bench_loop_object_ref_unref, state, iters)
{
    struct object_state *s = state;
    void *obj = s->obj;

    for (uint64_t i = 0; i < iters; i++) {
        moor_unref(moor_ref(obj));
        bench_clobber();
    }
}

BENCH_LOOP(bench_loop_weak_get_unref, state, iters)
{
    struct object_state *s = state;

    for (uint64_t i = 0; i < iters; i++) {
        void *obj = moor_weak_get(&s->weak);

        if (!obj)
            bench_fail("weak_get_unref: object gone");
        moor_unref(obj);
        bench_clobber();
    }
}

/* ---- registration ------------------------------------------------------ */

static const struct bench_case ref_cases[] = {
    {"atomic_pair", NULL, BENCH_CONTENDED, atomic_setup, free_state, bench_loop_atomic_pair},
#ifdef MOOR_BENCH_HAVE_GLIB
    {"glib_refcount_pair", "atomic_pair", BENCH_CONTENDED, glib_setup, free_state,
     bench_loop_glib_refcount_pair},
#endif
    {"moor_refcnt_pair", "atomic_pair", BENCH_CONTENDED, refcnt_setup, free_state,
     bench_loop_moor_refcnt_pair},
    {"object_ref_unref", "atomic_pair", BENCH_CONTENDED, object_setup, object_teardown,
     bench_loop_object_ref_unref},
    {"weak_get_unref", "object_ref_unref", BENCH_CONTENDED, object_setup, object_teardown,
     bench_loop_weak_get_unref},
};

BENCH_REGISTER(ref_cases);
