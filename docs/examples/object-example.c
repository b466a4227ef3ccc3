/* SPDX-License-Identifier: MIT */
/*
 * object-example.c - the example of README.md and docs/object.md: a class,
 * an object shared by a "registry" and an API call, and the end-API rule.
 * Built and run by `make check`.
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moor/object.h>

struct vm {
    moor_lockable parent; /* lockable: carries the object mutex */
    char *name;
    int state;
};

static const moor_class *vm_class;
static int disposed;

static void vm_dispose(void *obj)
{
    struct vm *vm = obj;

    free(vm->name);
    disposed++;
}

static void define_classes(void)
{
    moor_error err = MOOR_ERROR_INIT;

    vm_class = moor_class_new("vm", moor_lockable_class(), sizeof(struct vm), vm_dispose, &err);
    if (!vm_class) {
        fprintf(stderr, "%s\n", moor_error_message(&err));
        exit(1);
    }
}

/* An "API call": it owns its own reference for as long as it runs. */
static void start_vm(struct vm *registry_ref)
{
    struct vm *vm = moor_ref(registry_ref);

    moor_lock(vm);
    vm->state = 1;
    moor_end_api(&vm); /* unlock + unref + vm = NULL */
    assert(vm == NULL);
}

int main(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, define_classes);

    /* The creator owns one reference; here it plays the registry. */
    moor_autounref struct vm *registered = moor_object_new(vm_class);
    assert(registered);
    registered->name = strdup("vm1");

    start_vm(registered);
    printf("%s state=%d refs=%d\n", registered->name, registered->state,
           moor_object_refcount(registered));

    moor_clear(&registered); /* the last reference: dispose runs now */
    assert(disposed == 1 && moor_census_total() == 0);
    return 0;
}
