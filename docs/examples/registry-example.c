/* SPDX-License-Identifier: MIT */
/*
 * registry-example.c - the example of docs/registry.md: a registry of
 * "domains", an API call written as lookup -> lock -> work -> end, a rename,
 * and a snapshot-then-work bulk operation.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>

#include <moor/object.h>
#include <moor/registry.h>

struct domain {
    moor_lockable parent;
    bool running; /* under the object mutex */
};

static const moor_class *domain_class;

/* An API call: find the domain, locked and still registered, change it,
 * end the call. A job would be begun here for anything slow (see
 * docs/registry.md). */
static int domain_start(moor_registry *reg, const moor_uuid *uuid)
{
    struct domain *dom = moor_registry_find_uuid_locked(reg, uuid);

    if (!dom)
        return -ENOENT;
    if (dom->running) {
        moor_end_api(&dom);
        return -EBUSY;
    }
    dom->running = true;
    moor_end_api(&dom); /* unlock, unref, dom = NULL */
    return 0;
}

/* "Undefine": remove from the registry while holding the lock; callers in
 * flight keep their references and find the domain gone when they lock. */
static int domain_undefine(moor_registry *reg, const char *name)
{
    struct domain *dom = moor_registry_find_name_locked(reg, name);
    int rc;

    if (!dom)
        return -ENOENT;
    rc = moor_registry_remove(reg, dom, NULL);
    moor_end_api(&dom);
    return rc;
}

static bool is_running(void *obj, void *opaque)
{
    struct domain *dom = obj;
    bool running;

    (void)opaque;
    moor_lock(dom);
    running = dom->running;
    moor_unlock(dom);
    return running;
}

/* Bulk work: snapshot the running domains, then handle each on its own. */
static int stop_all(moor_registry *reg)
{
    void **doms;
    int n = moor_registry_collect(reg, is_running, NULL, &doms, NULL);

    if (n < 0)
        return n;
    for (int i = 0; i < n; i++) {
        struct domain *dom = doms[i];

        moor_lock(dom);
        dom->running = false; /* re-checked state would go here */
        moor_unlock(dom);
    }
    moor_registry_array_free(doms);
    return n;
}

int main(void)
{
    moor_error err = MOOR_ERROR_INIT;
    char text[MOOR_UUID_STRING_SIZE];
    moor_registry *reg;
    moor_uuid uuid;
    struct domain *dom;
    int rc;

    domain_class =
        moor_class_new("example.domain", moor_lockable_class(), sizeof(struct domain), NULL, &err);
    reg = domain_class ? moor_registry_new(&err) : NULL;
    if (!reg || moor_uuid_generate(&uuid, &err) < 0) {
        fprintf(stderr, "setup: %s\n", moor_error_message(&err));
        return 1;
    }

    dom = moor_object_new(domain_class);
    if (!dom || moor_registry_add(reg, dom, &uuid, "web1", &err) < 0) {
        fprintf(stderr, "add: %s\n", moor_error_message(&err));
        return 1;
    }
    moor_unref(dom); /* the registry keeps its own reference */

    /* A clash names the key and the object holding it. */
    dom = moor_object_new(domain_class);
    if (moor_registry_add(reg, dom, &uuid, "web2", &err) == -EEXIST)
        printf("add refused: %s\n", moor_error_message(&err));
    moor_unref(dom);

    rc = domain_start(reg, &uuid);
    printf("start %s: %d\n", moor_uuid_format(&uuid, text), rc);
    if (rc != 0 || domain_start(reg, &uuid) != -EBUSY)
        return 1;

    /* Rename: at no instant do both names, or neither, resolve. */
    dom = moor_registry_find_uuid(reg, &uuid);
    rc = moor_registry_rename(reg, dom, "frontend", &err);
    moor_unref(dom);
    if (rc < 0) {
        fprintf(stderr, "rename: %s\n", moor_error_message(&err));
        return 1;
    }
    struct domain *old_name = moor_registry_find_name(reg, "web1");
    struct domain *new_name = moor_registry_find_name(reg, "frontend");

    printf("renamed: 'web1' %s, 'frontend' %s\n", old_name ? "found" : "gone",
           new_name ? "found" : "gone");
    moor_unref(old_name);
    moor_unref(new_name);

    printf("stopped %d running domain(s)\n", stop_all(reg));
    rc = domain_undefine(reg, "frontend");
    printf("undefine: %d, %zu left\n", rc, moor_registry_count(reg));
    moor_unref(reg); /* waits for deferred releases */
    return rc == 0 && moor_census_total() == 0 ? 0 : 1;
}
