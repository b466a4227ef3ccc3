/* SPDX-License-Identifier: MIT */
/*
 * monitor-example.c - the example of docs/monitor.md: a tiny line
 * protocol, a peer thread that speaks it, and an API call that talks to
 * the peer through the enter/exit hand-off while holding a job on its
 * object.
 *
 * Protocol, one message per line:
 *   request  "<id> <word>"           reply  "<id> ok <WORD>"   (upper case)
 *                                    or     "<id> err <why>"   (word "fail")
 *   event    "! <text>"              sent by the peer on its own
 *   request  "<id> cat" with a descriptor attached (SCM_RIGHTS): the peer
 *            replies "<id> ok <TEXT>", TEXT read from the descriptor
 */
#define _GNU_SOURCE
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <moor/job.h>
#include <moor/loop.h>
#include <moor/monitor.h>
#include <moor/object.h>

/* ---- the codec ------------------------------------------------------------ */

static ssize_t line_frame(void *opaque, const char *buf, size_t len, moor_error *err)
{
    const char *nl = memchr(buf, '\n', len);

    (void)opaque;
    (void)err;
    return nl ? nl - buf + 1 : 0; /* 0: wait for more bytes */
}

static ssize_t line_encode(void *opaque, const void *request, uint64_t id, char *buf, size_t size,
                           moor_error *err)
{
    (void)opaque;
    (void)err;
    return snprintf(buf, size, "%" PRIu64 " %s\n", id, (const char *)request);
}

/* The payload of a reply or event: its text, malloc'ed. */
static int line_classify(void *opaque, const char *msg, size_t len, moor_monitor_message *out,
                         moor_error *err)
{
    char *text = strndup(msg, len - 1); /* without the '\n' */
    char *rest;

    (void)opaque;
    if (!text)
        return moor_error_set(err, -ENOMEM, "out of memory");
    if (text[0] == '!') {
        out->kind = MOOR_MONITOR_EVENT;
        out->payload = text;
        return 0;
    }
    out->kind = MOOR_MONITOR_REPLY;
    out->id = strtoull(text, &rest, 10);
    out->payload = text;
    if (!strncmp(rest, " ok ", 4))
        return 0;
    if (!strncmp(rest, " err ", 5)) {
        out->status = -EREMOTEIO;
        out->error = rest + 5; /* lives in the payload */
        return 0;
    }
    free(text);
    out->payload = NULL;
    return moor_error_set(err, -EPROTO, "not a reply: %.40s", msg);
}

static void line_free(void *opaque, void *payload)
{
    (void)opaque;
    free(payload);
}

static const char *line_name(void *opaque, const void *request)
{
    (void)opaque;
    return request; /* the word is the command */
}

/* ---- the peer: answers every request, and says hello with an event --------- */

/* read() that also keeps a descriptor sent along (the last one, as QEMU's
 * getfd does: it arrives with the bytes of the request it belongs to). */
static ssize_t read_keep_fd(int fd, char *buf, size_t size, int *passed)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = {buf, size};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = ctl.buf,
                        .msg_controllen = sizeof(ctl.buf)};
    ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL;

    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        if (*passed >= 0)
            close(*passed);
        memcpy(passed, CMSG_DATA(c), sizeof(int));
    }
    return n;
}

/* The answer to "cat": what the passed descriptor holds. */
static void cat_passed(int *passed, char *word, size_t size)
{
    ssize_t n = *passed >= 0 ? read(*passed, word, size - 1) : -1;

    word[n > 0 ? n : 0] = '\0';
    if (*passed >= 0)
        close(*passed);
    *passed = -1;
}

static void *peer_main(void *arg)
{
    int fd = *(int *)arg, passed = -1;
    char buf[256], line[300];
    size_t len = 0;
    ssize_t n;

    dprintf(fd, "! peer ready\n");
    while ((n = read_keep_fd(fd, buf + len, sizeof(buf) - 1 - len, &passed)) > 0) {
        char *nl;

        len += (size_t)n;
        buf[len] = '\0';
        while ((nl = strchr(buf, '\n'))) {
            unsigned long long id;
            char word[64];

            *nl = '\0';
            if (sscanf(buf, "%llu %63s", &id, word) == 2) {
                if (!strcmp(word, "cat"))
                    cat_passed(&passed, word, sizeof(word));
                if (!strcmp(word, "fail")) {
                    snprintf(line, sizeof(line), "%llu err cannot do that\n", id);
                } else {
                    for (char *c = word; *c; c++)
                        *c = (char)toupper((unsigned char)*c);
                    snprintf(line, sizeof(line), "%llu ok %s\n", id, word);
                }
                if (write(fd, line, strlen(line)) < 0)
                    return NULL;
            }
            len -= (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, len + 1);
        }
    }
    return NULL; /* end of file: the monitor was closed */
}

/* ---- the object that owns the channel ----------------------------------------- */

struct vm {
    moor_lockable parent;
    moor_job job;
    moor_monitor *mon; /* guarded by the vm's mutex */
    int events;        /* likewise */
};

static void vm_dispose(void *obj)
{
    struct vm *vm = obj;

    moor_unref(vm->mon);
    moor_job_destroy(&vm->job);
}

/* Events run on the loop thread with a reference to the vm held. */
static void vm_on_event(moor_monitor *mon, void *owner, moor_monitor_message *msg, void *opaque)
{
    struct vm *vm = owner;

    (void)mon;
    (void)opaque;
    moor_lock(vm);
    vm->events++;
    moor_unlock(vm);
    printf("event: %s\n", (const char *)msg->payload);
}

/* An API call: job on the vm, mutex handed over around the peer call,
 * which passes @nfds descriptors along (0: a plain call). */
static int vm_call(struct vm *vm, const char *word, const int *fds, unsigned nfds, char **answer,
                   moor_error *err)
{
    void *reply = NULL;
    int rc;

    moor_lock(vm);
    if ((rc = moor_job_begin(&vm->job, MOOR_JOB_MODIFY, "vm_call", err)) < 0) {
        moor_unlock(vm);
        return rc;
    }
    moor_monitor *mon = moor_ref(vm->mon); /* our own reference for the call */
    if ((rc = moor_monitor_enter(mon, vm)) == 0) {
        /* vm unlocked */
        rc = nfds ? moor_monitor_call_fds(mon, word, fds, nfds, &reply, 2000, err)
                  : moor_monitor_call(mon, word, &reply, 2000, err);
        if (moor_monitor_exit(mon, vm) < 0 && rc == 0) /* vm locked */
            rc = moor_error_set(err, -ESRCH, "the peer went away");
    }
    moor_job_end(&vm->job);
    moor_unlock(vm);
    moor_unref(mon);
    if (rc == 0)
        *answer = reply;
    else
        free(reply);
    return rc;
}

static int vm_shout(struct vm *vm, const char *word, char **answer, moor_error *err)
{
    return vm_call(vm, word, NULL, 0, answer, err);
}

/* Hand the peer a pipe to read from, as moor-vmd hands QEMU a file. */
static int vm_cat(struct vm *vm, const char *text, char **answer, moor_error *err)
{
    int p[2], rc;

    if (pipe2(p, O_CLOEXEC) < 0)
        return moor_error_set(err, -errno, "pipe: %s", strerror(errno));
    rc = write(p[1], text, strlen(text)) == (ssize_t)strlen(text) ? 0 : -EIO;
    close(p[1]);
    if (rc == 0)
        rc = vm_call(vm, "cat", &p[0], 1, answer, err);
    close(p[0]); /* at once: the monitor sent (or closed) its own copy */
    return rc;
}

int main(void)
{
    moor_error err = MOOR_ERROR_INIT;
    const moor_class *vm_class =
        moor_class_new("example_vm", moor_lockable_class(), sizeof(struct vm), vm_dispose, NULL);
    moor_loop *loop = moor_loop_new(NULL);
    struct vm *vm = moor_object_new(vm_class);
    moor_monitor_codec codec = {line_frame, line_encode, line_classify, line_free, line_name, NULL};
    moor_monitor_callbacks cb = {.on_event = vm_on_event};
    moor_monitor_options opts = {.name = "example peer"};
    pthread_t peer;
    char *answer = NULL;
    int sv[2];

    assert(vm_class && loop && vm);
    assert(moor_job_init(&vm->job, vm, "vm1") == 0);
    assert(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    assert(moor_loop_thread_start(loop, NULL) == 0);
    assert(pthread_create(&peer, NULL, peer_main, &sv[1]) == 0);

    vm->mon = moor_monitor_new(loop, sv[0], &codec, &cb, vm, &opts, &err);
    assert(vm->mon);

    assert(vm_shout(vm, "hello", &answer, &err) == 0);
    printf("reply: %s\n", answer);
    assert(strstr(answer, "ok HELLO"));
    free(answer);

    assert(vm_cat(vm, "through a pipe", &answer, &err) == 0);
    printf("reply: %s\n", answer);
    assert(strstr(answer, "ok THROUGH"));
    free(answer);

    assert(vm_shout(vm, "fail", &answer, &err) == -EREMOTEIO);
    printf("error: %s\n", moor_error_message(&err));
    assert(strstr(moor_error_message(&err), "cannot do that"));

    /* Close: the peer sees end of file; later calls fail at once. */
    moor_monitor_close(vm->mon);
    assert(vm_shout(vm, "again", &answer, &err) == -ESRCH);
    assert(pthread_join(peer, NULL) == 0);
    close(sv[1]);

    assert(moor_loop_thread_stop(loop) == 0);
    /* The peer's hello came before its first reply, so it was handled
     * before the first call returned. */
    moor_lock(vm);
    printf("events seen: %d\n", vm->events);
    assert(vm->events == 1);
    moor_unlock(vm);
    moor_unref(vm);
    moor_unref(loop);
    return moor_census_total() == 0 ? 0 : 1;
}
