/* SPDX-License-Identifier: MIT */
/*
 * job-example.c - the four job patterns of docs/jobs.md in one program:
 * a QUERY, a MODIFY, an async "migration" with nested jobs around each
 * peer call and an ABORT from another thread, and a DESTROY that removes
 * the object while a MODIFY waits for it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <moor/job.h>
#include <moor/object.h>

struct vm {
    moor_lockable parent;
    moor_job job; /* guarded by the vm's mutex, like every field below */
    int memory_mb;
    int running;
};

static const moor_class *vm_class;

static void vm_dispose(void *obj)
{
    moor_job_destroy(&((struct vm *)obj)->job);
}

/* A stand-in for a slow call to the peer process (QEMU, say). */
static int peer_call(const char *what)
{
    (void)what;
    return 0;
}

/* QUERY: shared with other queries; reads only. */
static int vm_get_memory(struct vm *vm, int *out, moor_error *err)
{
    int rc;

    moor_lock(vm);
    rc = moor_job_begin(&vm->job, MOOR_JOB_QUERY, "vm_get_memory", err);
    if (rc == 0) {
        *out = vm->memory_mb;
        moor_job_end(&vm->job);
    }
    moor_unlock(vm);
    return rc;
}

/* MODIFY: exclusive; the mutex is dropped around the peer call and the
 * state re-checked after taking it back. */
static int vm_set_memory(struct vm *vm, int mb, moor_error *err)
{
    int rc;

    moor_lock(vm);
    rc = moor_job_begin(&vm->job, MOOR_JOB_MODIFY, "vm_set_memory", err);
    if (rc < 0) {
        moor_unlock(vm);
        return rc;
    }
    moor_unlock(vm);
    rc = peer_call("balloon");
    moor_lock(vm);
    if (rc == 0 && vm->running) /* re-check: the world may have moved */
        vm->memory_mb = mb;
    moor_job_end(&vm->job);
    moor_unlock(vm);
    return rc;
}

/* Async: a long job that allows QUERY/DESTROY/ABORT beside it and takes a
 * nested MODIFY around each step's peer call. Returns how many steps ran. */
static int vm_migrate(struct vm *vm, int steps, moor_error *err)
{
    int done = 0;
    int rc;

    moor_lock(vm);
    rc = moor_job_begin_async(&vm->job, "migration out", MOOR_JOB_ASYNC_DEFAULT_MASK, "vm_migrate",
                              MOOR_JOB_TIMEOUT_DEFAULT, err);
    if (rc < 0) {
        moor_unlock(vm);
        return rc;
    }
    moor_job_async_set_phase(&vm->job, "perform");
    while (done < steps && !moor_job_abort_requested(&vm->job)) {
        if (moor_job_begin(&vm->job, MOOR_JOB_MODIFY, "vm_migrate", err) < 0)
            break;
        moor_unlock(vm);
        peer_call("migrate-step");
        moor_lock(vm);
        moor_job_end(&vm->job);
        done++;
        moor_job_async_set_progress(&vm->job, (uint64_t)done, (uint64_t)steps, "copying");
    }
    moor_job_end_async(&vm->job);
    moor_unlock(vm);
    return done;
}

/* ABORT, from another thread: asks the running async job to stop. */
static void *abort_thread(void *arg)
{
    struct vm *vm = arg;

    moor_lock(vm);
    if (moor_job_begin(&vm->job, MOOR_JOB_ABORT, "vm_abort_job", NULL) == 0)
        moor_job_end(&vm->job);
    moor_unlock(vm);
    return NULL;
}

/* A MODIFY that finds the job taken and waits for it. */
static void *late_modify_thread(void *arg)
{
    struct vm *vm = arg;
    moor_error err = MOOR_ERROR_INIT;
    static int rc;

    rc = vm_set_memory(vm, 4096, &err);
    if (rc == -ESRCH)
        printf("late vm_set_memory: %s\n", moor_error_message(&err));
    return &rc;
}

/* DESTROY: jumps every queue; marking the object removed fails the
 * waiters (-ESRCH) and every later begin. */
static void vm_destroy(struct vm *vm)
{
    pthread_t late;
    moor_job_snapshot s;
    int *late_rc;

    moor_lock(vm);
    moor_job_begin(&vm->job, MOOR_JOB_DESTROY, "vm_destroy", NULL);
    moor_unlock(vm);
    pthread_create(&late, NULL, late_modify_thread, vm);
    do { /* wait until the late MODIFY is queued (a handshake, no sleep) */
        moor_lock(vm);
        moor_job_info(&vm->job, &s);
        moor_unlock(vm);
    } while (s.waiters == 0);
    moor_lock(vm);
    vm->running = 0;
    moor_job_mark_removed(&vm->job);
    moor_job_end(&vm->job);
    moor_unlock(vm);
    pthread_join(late, (void **)&late_rc);
    printf("the waiting MODIFY got %s\n", *late_rc == -ESRCH ? "-ESRCH" : "something else");
}

int main(void)
{
    moor_error err = MOOR_ERROR_INIT;
    struct vm *vm;
    pthread_t t;
    int mb = 0, steps;

    vm_class = moor_class_new("vm", moor_lockable_class(), sizeof(struct vm), vm_dispose, &err);
    vm = vm_class ? moor_object_new(vm_class) : NULL;
    if (!vm || MOOR_JOB_INIT(vm, job, "web1") < 0)
        return 1;
    vm->memory_mb = 1024;
    vm->running = 1;

    if (vm_set_memory(vm, 2048, &err) < 0 || vm_get_memory(vm, &mb, &err) < 0)
        return 1;
    printf("memory: %d MiB\n", mb);

    steps = vm_migrate(vm, 3, &err);
    printf("migration ran %d of 3 steps\n", steps);

    /* An abort that arrives while the async job runs stops it early. */
    moor_lock(vm);
    moor_job_begin_async(&vm->job, "migration out", MOOR_JOB_ASYNC_DEFAULT_MASK, "vm_migrate",
                         MOOR_JOB_TIMEOUT_DEFAULT, NULL);
    moor_unlock(vm);
    pthread_create(&t, NULL, abort_thread, vm);
    pthread_join(t, NULL);
    moor_lock(vm);
    printf("abort requested: %s\n", moor_job_abort_requested(&vm->job) ? "yes" : "no");
    moor_job_end_async(&vm->job);
    moor_unlock(vm);

    vm_destroy(vm);
    moor_unref(vm);
    return moor_census_total() == 0 ? 0 : 1;
}
