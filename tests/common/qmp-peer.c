/* SPDX-License-Identifier: MIT */
/*
 * tests/common/qmp-peer.c - see qmp-peer.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "qmp-peer.h"

void qmp_linebuf_free(qmp_linebuf *lb)
{
    for (unsigned i = 0; i < lb->nfds; i++)
        close(lb->fds[i]);
    free(lb->data);
    *lb = (qmp_linebuf){.read_size = lb->read_size};
}

/* Drop the line returned last; the descriptors' offsets move with it. */
static void consume_line(qmp_linebuf *lb)
{
    if (!lb->line_len)
        return;
    memmove(lb->data, lb->data + lb->line_len, lb->len - lb->line_len);
    lb->len -= lb->line_len;
    for (unsigned i = 0; i < lb->nfds; i++)
        lb->fd_at[i] -= lb->line_len;
    lb->line_len = 0;
}

/* Keep the descriptors of @mh's SCM_RIGHTS, tagged with offset @at. */
static void keep_fds(qmp_linebuf *lb, struct msghdr *mh, size_t at)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        size_t n;

        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;

            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (lb->nfds < QMP_PEER_MAX_FDS) {
                lb->fds[lb->nfds] = fd;
                lb->fd_at[lb->nfds++] = at;
            } else {
                close(fd);
                lb->fds_dropped++;
            }
        }
    }
}

/* Read more bytes into @lb: read(), or recvmsg() keeping descriptors. */
static ssize_t read_more(int fd, qmp_linebuf *lb, bool with_fds)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * QMP_PEER_MAX_FDS)];
    } ctl;
    struct iovec iov = {lb->data + lb->len, lb->cap - lb->len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n;

    if (lb->read_size && iov.iov_len > lb->read_size)
        iov.iov_len = lb->read_size;

    if (!with_fds)
        return read(fd, iov.iov_base, iov.iov_len);
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    if (n > 0) {
        keep_fds(lb, &mh, lb->len + (size_t)n - 1);
        if (mh.msg_flags & MSG_CTRUNC)
            lb->fds_dropped++;
    }
    return n;
}

/* Hand out (up to @max, closing the rest) the descriptors that came with
 * the line just found, [0, lb->line_len). */
static void take_fds(qmp_linebuf *lb, int *fds, unsigned max, unsigned *nfds)
{
    unsigned kept = 0;

    *nfds = 0;
    for (unsigned i = 0; i < lb->nfds; i++) {
        if (lb->fd_at[i] >= lb->line_len) {
            lb->fds[kept] = lb->fds[i];
            lb->fd_at[kept++] = lb->fd_at[i];
        } else if (*nfds < max) {
            fds[(*nfds)++] = lb->fds[i];
        } else {
            close(lb->fds[i]);
            lb->fds_dropped++;
        }
    }
    lb->nfds = kept;
}

static ssize_t read_line(int fd, qmp_linebuf *lb, char **line, bool with_fds)
{
    size_t scanned = 0;

    consume_line(lb);
    for (;;) {
        char *nl = lb->len > scanned ? memchr(lb->data + scanned, '\n', lb->len - scanned) : NULL;
        ssize_t n;

        if (nl) {
            *nl = '\0';
            lb->line_len = (size_t)(nl - lb->data) + 1;
            *line = lb->data;
            return nl - lb->data;
        }
        scanned = lb->len;
        if (lb->cap - lb->len < 4096) {
            size_t cap = lb->cap ? lb->cap * 2 : 8192;
            char *p = realloc(lb->data, cap);

            if (!p)
                return -1;
            lb->data = p;
            lb->cap = cap;
        }
        n = read_more(fd, lb, with_fds);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        lb->len += (size_t)n;
    }
}

ssize_t qmp_read_line(int fd, qmp_linebuf *lb, char **line)
{
    return read_line(fd, lb, line, false);
}

ssize_t qmp_read_line_fds(int fd, qmp_linebuf *lb, char **line, int *fds, unsigned max,
                          unsigned *nfds)
{
    ssize_t n = read_line(fd, lb, line, true);

    *nfds = 0;
    if (n >= 0)
        take_fds(lb, fds, max, nfds);
    return n;
}

bool qmp_parse_request(const char *line, qmp_request_in *out)
{
    struct json_object *o = json_tokener_parse(line), *v;
    bool ok = false;

    *out = (qmp_request_in){0};
    if (o && json_object_object_get_ex(o, "execute", &v) &&
        json_object_is_type(v, json_type_string) &&
        strlen(json_object_get_string(v)) < sizeof(out->execute)) {
        strcpy(out->execute, json_object_get_string(v));
        if (json_object_object_get_ex(o, "id", &v) && json_object_is_type(v, json_type_int) &&
            json_object_get_int64(v) >= 0) {
            out->id = (uint64_t)json_object_get_int64(v);
            if (json_object_object_get_ex(o, "arguments", &v))
                out->arguments = json_object_get(v);
            ok = true;
        }
    }
    json_object_put(o);
    return ok;
}

int qmp_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int qmp_writef(int fd, const char *fmt, ...)
{
    char stack[512], *heap = NULL;
    va_list ap;
    int n, rc;

    va_start(ap, fmt);
    n = vsnprintf(stack, sizeof(stack), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n >= sizeof(stack)) {
        if (!(heap = malloc((size_t)n + 1)))
            return -ENOMEM;
        va_start(ap, fmt);
        vsnprintf(heap, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    rc = qmp_write_all(fd, heap ? heap : stack, (size_t)n);
    free(heap);
    return rc;
}

int qmp_send_return(int fd, uint64_t id, const char *json_value)
{
    return qmp_writef(fd, "{\"return\": %s, \"id\": %" PRIu64 "}\n", json_value, id);
}

int qmp_send_error(int fd, uint64_t id, const char *klass, const char *desc)
{
    return qmp_writef(fd,
                      "{\"error\": {\"class\": \"%s\", \"desc\": \"%s\"}, \"id\": %" PRIu64 "}\n",
                      klass, desc, id);
}

int qmp_send_event(int fd, const char *name, long seq)
{
    return qmp_writef(fd,
                      "{\"event\": \"%s\", \"data\": {\"seq\": %ld}, "
                      "\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\n",
                      name, seq);
}

int qmp_send_greeting(int fd)
{
    return qmp_writef(fd, "{\"QMP\": {\"version\": {\"qemu\": {\"major\": 8}}, "
                          "\"capabilities\": []}}\n");
}
