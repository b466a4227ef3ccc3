/* SPDX-License-Identifier: MIT */
/*
 * tests/common/qmp-peer.c - see qmp-peer.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "qmp-peer.h"

void qmp_linebuf_free(qmp_linebuf *lb)
{
    free(lb->data);
    *lb = (qmp_linebuf){0};
}

ssize_t qmp_read_line(int fd, qmp_linebuf *lb, char **line)
{
    size_t scanned = 0;

    if (lb->line_len) {
        memmove(lb->data, lb->data + lb->line_len, lb->len - lb->line_len);
        lb->len -= lb->line_len;
        lb->line_len = 0;
    }
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
        n = read(fd, lb->data + lb->len, lb->cap - lb->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        lb->len += (size_t)n;
    }
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
