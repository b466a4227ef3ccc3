/* SPDX-License-Identifier: MIT */
/*
 * test-vlist.c - unit tests of moor/vlist.h, on both lock counter
 * implementations (the cmocka prestate of each test).
 *
 * The re-entrancy contract of the header is tested item by item: a visitor
 * that removes itself, removes the next node, inserts at either end, and
 * re-enters the walk; plus removal from another thread during a visit and
 * free callbacks that use the list. Nodes are heap-allocated and poisoned
 * by their free callback, so a use after free shows up under ASan and
 * valgrind as well as in the explicit checks.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdatomic.h>

#include <moor/vlist.h>

#include "test-util.h"

static moor_lockcnt_impl impl_futex = MOOR_LOCKCNT_FUTEX;
static moor_lockcnt_impl impl_portable = MOOR_LOCKCNT_PORTABLE;

#define ITEM_LIVE 0x4c495645u /* "LIVE" */
#define ITEM_DEAD 0xdeaddeadu

struct item {
    unsigned magic;
    int id;
    moor_vlist_node node;
};

static atomic_int items_freed;
static int free_order[64];

static void item_free(moor_vlist *list, moor_vlist_node *node)
{
    (void)list;
    struct item *it = moor_vlist_entry(node, struct item, node);
    int n = atomic_fetch_add(&items_freed, 1);

    assert_int_equal(it->magic, ITEM_LIVE);
    if (n < 64)
        free_order[n] = it->id;
    it->magic = ITEM_DEAD;
    free(it);
}

static struct item *item_new(int id)
{
    struct item *it = calloc(1, sizeof(*it));

    assert_non_null(it);
    it->magic = ITEM_LIVE;
    it->id = id;
    return it;
}

static struct item *add_tail(moor_vlist *l, int id)
{
    struct item *it = item_new(id);

    assert_int_equal(moor_vlist_insert_tail(l, &it->node, item_free), 0);
    return it;
}

static struct item *add_head(moor_vlist *l, int id)
{
    struct item *it = item_new(id);

    assert_int_equal(moor_vlist_insert_head(l, &it->node, item_free), 0);
    return it;
}

static void list_init(void **state, moor_vlist *l)
{
    atomic_store(&items_freed, 0);
    assert_int_equal(moor_vlist_init_impl(l, *(moor_lockcnt_impl *)*state), 0);
}

/* The ids a fresh walk sees, as a string like "1 2 3". */
static const char *ids(moor_vlist *l)
{
    static char buf[256];
    size_t len = 0;
    moor_vlist_node *n;

    buf[0] = '\0';
    moor_vlist_visit_begin(l);
    moor_vlist_foreach (n, l) {
        struct item *it = moor_vlist_entry(n, struct item, node);

        assert_int_equal(it->magic, ITEM_LIVE);
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%d", len ? " " : "", it->id);
    }
    moor_vlist_visit_end(l);
    return buf;
}

/* ---- basics ------------------------------------------------------------ */

static void test_init_destroy_empty(void **state)
{
    moor_vlist l;

    list_init(state, &l);
    assert_string_equal(ids(&l), "");
    moor_vlist_destroy(&l);
    moor_vlist_destroy(NULL);

    moor_vlist_init(&l);
    moor_vlist_destroy(&l);
    assert_int_equal(moor_vlist_init_impl(NULL, MOOR_LOCKCNT_DEFAULT), -EINVAL);
    assert_int_equal(moor_vlist_init_impl(&l, (moor_lockcnt_impl)42), -EINVAL);
}

static void test_insert_order(void **state)
{
    moor_vlist l;

    list_init(state, &l);
    add_tail(&l, 2);
    add_head(&l, 1);
    add_tail(&l, 3);
    add_head(&l, 0);
    assert_string_equal(ids(&l), "0 1 2 3");
    moor_vlist_destroy(&l); /* frees what is still on the list, in order */
    assert_int_equal(atomic_load(&items_freed), 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(free_order[i], i);
}

static void test_bad_arguments(void **state)
{
    moor_vlist l;
    struct item *it = item_new(1);

    list_init(state, &l);
    assert_int_equal(moor_vlist_insert_tail(NULL, &it->node, item_free), -EINVAL);
    assert_int_equal(moor_vlist_insert_tail(&l, NULL, item_free), -EINVAL);
    assert_int_equal(moor_vlist_insert_head(&l, &it->node, NULL), -EINVAL);
    assert_int_equal(moor_vlist_remove(NULL, &it->node), -EINVAL);
    assert_int_equal(moor_vlist_remove(&l, NULL), -EINVAL);
    assert_int_equal(moor_vlist_walk(&l, NULL, NULL), -EINVAL);
    assert_string_equal(ids(&l), ""); /* nothing changed */
    free(it);
    moor_vlist_destroy(&l);
}

/* Outside any visit, removal frees at once. */
static void test_remove_outside_visit(void **state)
{
    moor_vlist l;

    list_init(state, &l);
    add_tail(&l, 1);
    struct item *two = add_tail(&l, 2);
    add_tail(&l, 3);
    assert_int_equal(moor_vlist_remove(&l, &two->node), 0);
    assert_int_equal(atomic_load(&items_freed), 1);
    assert_string_equal(ids(&l), "1 3");
    add_tail(&l, 4); /* the tail survived the unlink */
    assert_string_equal(ids(&l), "1 3 4");
    moor_vlist_destroy(&l);
    assert_int_equal(atomic_load(&items_freed), 4);
}

/* Removing the last node must move the tail back. */
static void test_remove_tail_then_append(void **state)
{
    moor_vlist l;

    list_init(state, &l);
    add_tail(&l, 1);
    struct item *two = add_tail(&l, 2);
    assert_int_equal(moor_vlist_remove(&l, &two->node), 0);
    add_tail(&l, 3);
    assert_string_equal(ids(&l), "1 3");
    moor_vlist_destroy(&l);
}

static void test_remove_all_then_reuse(void **state)
{
    moor_vlist l;
    struct item *a, *b;

    list_init(state, &l);
    a = add_tail(&l, 1);
    b = add_head(&l, 0);
    assert_int_equal(moor_vlist_remove(&l, &a->node), 0);
    assert_int_equal(moor_vlist_remove(&l, &b->node), 0);
    assert_string_equal(ids(&l), "");
    add_head(&l, 5); /* on an empty list, head insert also sets the tail */
    add_tail(&l, 6);
    assert_string_equal(ids(&l), "5 6");
    moor_vlist_destroy(&l);
    assert_int_equal(atomic_load(&items_freed), 4);
}

/* ---- re-entrancy contract ------------------------------------------------ */

static void test_remove_self_during_walk(void **state)
{
    moor_vlist l;
    moor_vlist_node *n;
    char seen[64] = "";

    list_init(state, &l);
    for (int i = 1; i <= 4; i++)
        add_tail(&l, i);
    moor_vlist_visit_begin(&l);
    moor_vlist_foreach (n, &l) {
        struct item *it = moor_vlist_entry(n, struct item, node);

        snprintf(seen + strlen(seen), sizeof(seen) - strlen(seen), "%d", it->id);
        if (it->id % 2 == 0) {
            assert_int_equal(moor_vlist_remove(&l, n), 0);
            assert_true(moor_vlist_is_removed(n));
            assert_int_equal(moor_vlist_remove(&l, n), -EALREADY);
            /* Still valid, still linked: the walk goes on from it. */
            assert_int_equal(it->magic, ITEM_LIVE);
        }
    }
    assert_int_equal(atomic_load(&items_freed), 0); /* not while visiting */
    moor_vlist_visit_end(&l);
    assert_int_equal(atomic_load(&items_freed), 2); /* the last visitor freed */
    assert_string_equal(seen, "1234");
    assert_string_equal(ids(&l), "1 3");
    moor_vlist_destroy(&l);
}

static void test_remove_next_during_walk(void **state)
{
    moor_vlist l;
    moor_vlist_node *n;
    char seen[64] = "";

    list_init(state, &l);
    for (int i = 1; i <= 5; i++)
        add_tail(&l, i);
    moor_vlist_visit_begin(&l);
    moor_vlist_foreach (n, &l) {
        struct item *it = moor_vlist_entry(n, struct item, node);

        snprintf(seen + strlen(seen), sizeof(seen) - strlen(seen), "%d", it->id);
        moor_vlist_node *next = moor_vlist_next(n);
        if (next)
            assert_int_equal(moor_vlist_remove(&l, next), 0); /* skip it */
    }
    moor_vlist_visit_end(&l);
    assert_string_equal(seen, "135");
    assert_string_equal(ids(&l), "1 3 5");
    assert_int_equal(atomic_load(&items_freed), 2);
    moor_vlist_destroy(&l);
}

static void test_insert_during_walk(void **state)
{
    moor_vlist l;
    moor_vlist_node *n;
    char seen[64] = "";

    list_init(state, &l);
    add_tail(&l, 1);
    add_tail(&l, 2);
    moor_vlist_visit_begin(&l);
    moor_vlist_foreach (n, &l) {
        struct item *it = moor_vlist_entry(n, struct item, node);

        snprintf(seen + strlen(seen), sizeof(seen) - strlen(seen), "%d", it->id);
        if (it->id == 1) {
            add_tail(&l, 3); /* ahead of us: reached */
            add_head(&l, 0); /* behind us: not reached */
        }
    }
    moor_vlist_visit_end(&l);
    assert_string_equal(seen, "123");
    assert_string_equal(ids(&l), "0 1 2 3");
    moor_vlist_destroy(&l);
}

struct reenter {
    moor_vlist *l;
    int depth;
    char trace[128];
};

static int reenter_cb(moor_vlist_node *n, void *opaque)
{
    struct reenter *r = opaque;
    struct item *it = moor_vlist_entry(n, struct item, node);
    size_t len = strlen(r->trace);

    assert_int_equal(it->magic, ITEM_LIVE);
    snprintf(r->trace + len, sizeof(r->trace) - len, "%s%d", r->depth ? "+" : " ", it->id);
    if (r->depth == 0 && it->id == 2) {
        /* Remove ourselves and the next node, add one at the tail, and walk
         * the whole list again from inside this callback. */
        assert_int_equal(moor_vlist_remove(r->l, n), 0);
        moor_vlist_node *next = moor_vlist_next(n);
        assert_non_null(next);
        assert_int_equal(moor_vlist_remove(r->l, next), 0);
        add_tail(r->l, 9);
        r->depth++;
        assert_int_equal(moor_vlist_walk(r->l, reenter_cb, r), 0);
        r->depth--;
        /* The nested visit ended, but ours keeps both removed nodes alive. */
        assert_int_equal(atomic_load(&items_freed), 0);
        assert_int_equal(it->magic, ITEM_LIVE);
    }
    return 0;
}

static void test_reenter_walk(void **state)
{
    moor_vlist l;
    struct reenter r = {.l = &l};

    list_init(state, &l);
    for (int i = 1; i <= 4; i++)
        add_tail(&l, i);
    assert_int_equal(moor_vlist_walk(&l, reenter_cb, &r), 0);
    /* Outer: 1 2 [nested: 1 4 9] 4 9 */
    assert_string_equal(r.trace, " 1 2+1+4+9 4 9");
    assert_int_equal(atomic_load(&items_freed), 2);
    assert_string_equal(ids(&l), "1 4 9");
    moor_vlist_destroy(&l);
}

static int stop_at_3(moor_vlist_node *n, void *opaque)
{
    int *calls = opaque;

    (*calls)++;
    return moor_vlist_entry(n, struct item, node)->id == 3 ? 42 : 0;
}

static void test_walk_stops(void **state)
{
    moor_vlist l;
    int calls = 0;

    list_init(state, &l);
    for (int i = 1; i <= 5; i++)
        add_tail(&l, i);
    assert_int_equal(moor_vlist_walk(&l, stop_at_3, &calls), 42);
    assert_int_equal(calls, 3);
    moor_vlist_destroy(&l);
}

/* A free callback may use the list (it is told which): here it inserts a
 * replacement. */
static void free_and_replace(moor_vlist *list, moor_vlist_node *node)
{
    struct item *it = moor_vlist_entry(node, struct item, node);
    int id = it->id;

    item_free(list, node);
    add_tail(list, id * 10);
}

static void test_free_callback_uses_list(void **state)
{
    moor_vlist l;
    struct item *it = item_new(7);

    list_init(state, &l);
    assert_int_equal(moor_vlist_insert_tail(&l, &it->node, free_and_replace), 0);
    add_tail(&l, 8);
    moor_vlist_visit_begin(&l);
    assert_int_equal(moor_vlist_remove(&l, &it->node), 0);
    moor_vlist_visit_end(&l); /* frees 7, whose callback adds 70 */
    assert_string_equal(ids(&l), "8 70");
    moor_vlist_destroy(&l);
    assert_int_equal(atomic_load(&items_freed), 3);
}

/* A free callback that inserts while the list is being destroyed: destroy
 * must give the new nodes back too (a chain of them, to need several
 * passes), with the lock counter still alive for the inserts. */
static int refill_budget, refill_created;

static void free_and_refill(moor_vlist *list, moor_vlist_node *node)
{
    item_free(list, node);
    if (refill_budget > 0) {
        struct item *it = item_new(100 + refill_created);

        refill_budget--;
        refill_created++;
        assert_int_equal(moor_vlist_insert_tail(list, &it->node, free_and_refill), 0);
    }
}

static void test_destroy_frees_nodes_inserted_by_callbacks(void **state)
{
    moor_vlist l;

    list_init(state, &l);
    refill_budget = 5;
    refill_created = 0;
    for (int i = 0; i < 2; i++) {
        struct item *it = item_new(i);

        refill_created++;
        assert_int_equal(moor_vlist_insert_tail(&l, &it->node, free_and_refill), 0);
    }
    moor_vlist_destroy(&l);
    assert_int_equal(refill_budget, 0);
    assert_int_equal(refill_created, 7);
    assert_int_equal(atomic_load(&items_freed), refill_created); /* created == freed */
    for (int i = 0; i < 2; i++)
        assert_int_equal(free_order[i], i);
    for (int i = 2; i < 7; i++)
        assert_int_equal(free_order[i], 100 + i);
}

/* ---- other threads --------------------------------------------------------- */

struct visitor {
    moor_vlist *l;
    atomic_int phase; /* 0 start, 1 inside the visit, 2 may leave, 3 left */
    int freed_inside;
};

static void *visitor_main(void *arg)
{
    struct visitor *v = arg;
    moor_vlist_node *n;

    moor_vlist_visit_begin(v->l);
    n = moor_vlist_first(v->l); /* stand on the first node */
    atomic_store(&v->phase, 1);
    tu_wait_for_in_thread(atomic_load(&v->phase) == 2, "the main thread's removal (phase 2)");
    /* Removed by the main thread meanwhile, but not freed: we visit. */
    assert_int_equal(moor_vlist_entry(n, struct item, node)->magic, ITEM_LIVE);
    v->freed_inside = atomic_load(&items_freed);
    moor_vlist_visit_end(v->l); /* the last visitor: frees here */
    atomic_store(&v->phase, 3);
    return NULL;
}

static void test_remove_while_other_thread_visits(void **state)
{
    moor_vlist l;
    struct visitor v = {.l = &l};
    pthread_t t;

    list_init(state, &l);
    struct item *first = add_tail(&l, 1);
    add_tail(&l, 2);
    assert_int_equal(pthread_create(&t, NULL, visitor_main, &v), 0);
    tu_wait_for(atomic_load(&v.phase) == 1, "the visitor to stand on the first node");
    assert_int_equal(moor_vlist_remove(&l, &first->node), 0);
    assert_int_equal(atomic_load(&items_freed), 0); /* deferred */
    atomic_store(&v.phase, 2);
    tu_join(t, NULL);
    assert_int_equal(v.freed_inside, 0);
    assert_int_equal(atomic_load(&items_freed), 1);
    assert_string_equal(ids(&l), "2");
    moor_vlist_destroy(&l);
}

/* Issue 11, point 7: a free callback is told its list, so it reaches the
 * list's owner without a global; a second removal outside a visit (the
 * node already given back) is reported and refused without touching the
 * node; so is the removal of a node that was never inserted. */
struct owner {
    int freed;
    moor_vlist list;
};

static void kept_free(moor_vlist *list, moor_vlist_node *node)
{
    struct owner *o = moor_vlist_entry(list, struct owner, list);
    struct item *it = moor_vlist_entry(node, struct item, node);

    o->freed++;
    it->magic = ITEM_DEAD; /* kept, not freed: the test looks at it after */
}

static void test_double_remove_and_free_context(void **state)
{
    struct owner o = {0};
    struct item kept = {.magic = ITEM_LIVE, .id = 7};
    struct item stranger = {.magic = ITEM_LIVE, .id = 8};
    struct item before, before_stranger;

    assert_int_equal(moor_vlist_init_impl(&o.list, *(moor_lockcnt_impl *)*state), 0);
    assert_int_equal(moor_vlist_insert_tail(&o.list, &kept.node, kept_free), 0);
    assert_int_equal(moor_vlist_remove(&o.list, &kept.node), 0);
    assert_int_equal(o.freed, 1); /* nobody visits: given back at once, with its list */

    before = kept;
    assert_int_equal(moor_vlist_remove(&o.list, &kept.node), -ENOENT);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, &kept.node, "which is not on list");
    assert_memory_equal(&before, &kept, sizeof(kept)); /* not written */
    assert_int_equal(o.freed, 1);                      /* not given back twice */

    before_stranger = stranger;
    assert_int_equal(moor_vlist_remove(&o.list, &stranger.node), -ENOENT);
    tu_expect_report(MOOR_MISUSE_BAD_ARGUMENT, &stranger.node, "never inserted");
    assert_memory_equal(&before_stranger, &stranger, sizeof(stranger));

    /* Inside a visit the node stays linked: a second removal is -EALREADY
     * (as before), not a report. */
    kept.magic = ITEM_LIVE;
    assert_int_equal(moor_vlist_insert_tail(&o.list, &kept.node, kept_free), 0);
    moor_vlist_visit_begin(&o.list);
    assert_int_equal(moor_vlist_remove(&o.list, &kept.node), 0);
    assert_int_equal(moor_vlist_remove(&o.list, &kept.node), -EALREADY);
    assert_int_equal(o.freed, 1);
    moor_vlist_visit_end(&o.list);
    assert_int_equal(o.freed, 2);
    tu_expect_no_report();
    moor_vlist_destroy(&o.list);
}

#define BOTH(fn)                                                                                   \
    cmocka_unit_test_prestate_setup_teardown(fn, tu_setup, tu_teardown, &impl_futex),              \
        cmocka_unit_test_prestate_setup_teardown(fn, tu_setup, tu_teardown, &impl_portable)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_init_destroy_empty),
        BOTH(test_insert_order),
        BOTH(test_bad_arguments),
        BOTH(test_remove_outside_visit),
        BOTH(test_remove_tail_then_append),
        BOTH(test_remove_all_then_reuse),
        BOTH(test_remove_self_during_walk),
        BOTH(test_remove_next_during_walk),
        BOTH(test_insert_during_walk),
        BOTH(test_reenter_walk),
        BOTH(test_walk_stops),
        BOTH(test_free_callback_uses_list),
        BOTH(test_destroy_frees_nodes_inserted_by_callbacks),
        BOTH(test_remove_while_other_thread_visits),
        BOTH(test_double_remove_and_free_context),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
