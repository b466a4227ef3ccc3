/* SPDX-License-Identifier: MIT */
/*
 * watchdog-example.c - docs/debug.md's watchdog and snapshot example: a
 * job held too long, a thread waiting behind it, a call to a peer that
 * never answers; the watchdog's reports go to stderr (the default hook),
 * the snapshot's JSON to stdout.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <moor/debug.h>
#include <moor/introspect.h>
#include <moor/job.h>
#include <moor/loop.h>
#include <moor/monitor.h>
#include <moor/object.h>

struct vm {
    moor_lockable parent;
    moor_job job;
};

static void vm_dispose(void *obj)
{
    moor_job_destroy(&((struct vm *)obj)->job);
}

static atomic_int reports;

/* Count the reports, then print them as the default hook does. */
static void count_and_print(moor_misuse kind, const void *subject, const char *msg, void *opaque)
{
    atomic_fetch_add(&reports, 1);
    moor_debug_report_stderr(kind, subject, msg, opaque);
}

/* A line protocol: "ID TEXT\n" out, "ID ...\n" back (never, here). */
static ssize_t frame(void *o, const char *buf, size_t len, moor_error *err)
{
    const char *nl = memchr(buf, '\n', len);

    (void)o, (void)err;
    return nl ? nl - buf + 1 : 0;
}

static ssize_t encode(void *o, const void *req, uint64_t id, char *buf, size_t size,
                      moor_error *err)
{
    (void)o, (void)err;
    return snprintf(buf, size, "%" PRIu64 " %s\n", id, (const char *)req);
}

static int classify(void *o, const char *msg, size_t len, moor_monitor_message *out,
                    moor_error *err)
{
    (void)o, (void)len, (void)err;
    out->kind = MOOR_MONITOR_REPLY;
    sscanf(msg, "%" SCNu64, &out->id);
    return 0;
}

static const char *name(void *o, const void *req)
{
    (void)o;
    return req;
}

static void *waiter(void *arg)
{
    struct vm *vm = arg;

    moor_lock(vm);
    if (moor_job_begin_timeout(&vm->job, MOOR_JOB_QUERY, "info", 5000, NULL) == 0)
        moor_job_end(&vm->job);
    moor_unlock(vm);
    return NULL;
}

static void *caller(void *arg)
{
    moor_monitor_call(arg, "query-status", NULL, 5000, NULL);
    return NULL;
}

static int write_stdout(const char *data, size_t len, void *opaque)
{
    (void)opaque;
    return fwrite(data, 1, len, stdout) == len ? 0 : -EIO;
}

int main(void)
{
    const moor_monitor_codec codec = {frame, encode, classify, NULL, name, NULL};
    const moor_monitor_options opts = {.name = "qmp web1"};
    const moor_class *k =
        moor_class_new("vm", moor_lockable_class(), sizeof(struct vm), vm_dispose, NULL);
    moor_loop *loop = moor_loop_new(NULL);
    struct vm *vm = moor_object_new(k);
    moor_monitor *mon;
    moor_snapshot *snap;
    pthread_t w, c;
    int sv[2];

    moor_debug_set_report(count_and_print, NULL);
    moor_debug_set_watchdog_ms(300);
    moor_debug_set_flags(moor_debug_flags() | MOOR_DEBUG_WATCHDOG);
    moor_job_init(&vm->job, vm, "web1");
    moor_loop_thread_start(loop, NULL);
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv); /* sv[1]: a peer that never answers */
    mon = moor_monitor_new(loop, sv[0], &codec, NULL, NULL, &opts, NULL);

    moor_lock(vm);
    moor_job_begin(&vm->job, MOOR_JOB_MODIFY, "migrate", NULL);
    moor_unlock(vm);
    pthread_create(&w, NULL, waiter, vm);
    pthread_create(&c, NULL, caller, mon);
    /* Three reports: held, waited for, call pending; 10 s at most. */
    for (int i = 0; atomic_load(&reports) < 3; i++) {
        if (i == 1000)
            return 1;
        usleep(10000);
    }

    snap = moor_debug_snapshot();
    moor_debug_snapshot_write_json(snap, write_stdout, NULL);
    putchar('\n');
    moor_debug_snapshot_free(snap);

    moor_lock(vm);
    moor_job_end(&vm->job);
    moor_unlock(vm);
    moor_monitor_close(mon); /* the call fails with -EPIPE */
    pthread_join(w, NULL);
    pthread_join(c, NULL);
    moor_debug_set_flags(moor_debug_flags() & ~(unsigned)MOOR_DEBUG_WATCHDOG);
    moor_unref(mon);
    close(sv[1]);
    moor_loop_thread_stop(loop);
    moor_unref(loop);
    moor_unref(vm);
    return 0;
}
