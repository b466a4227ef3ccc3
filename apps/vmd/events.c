/* SPDX-License-Identifier: MIT */
/*
 * events.c - the event bus: a ring of the newest lines under one mutex.
 *
 * Lines are formatted once, at publish time, so readers only copy bytes.
 * Sequence numbers start at 0; the line with number s lives in slot
 * s % capacity while s >= next - capacity. The mutex is a leaf except for
 * the subscribers' notify functions, which only wake their readers.
 */
#include "events.h"

#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct subscriber {
    void (*notify)(void *opaque);
    void *opaque;
};

struct vmd_events {
    pthread_mutex_t lock;
    char **ring; /* capacity lines, NULL until written */
    size_t *lens;
    size_t capacity;
    uint64_t next; /* sequence number of the next line */
    uint64_t lost; /* lines dropped for lack of memory */
    struct subscriber subs[VMD_EVENTS_MAX_SUBSCRIBERS];
};

struct vmd_events *vmd_events_new(size_t capacity)
{
    struct vmd_events *ev = calloc(1, sizeof(*ev));

    if (!ev)
        return NULL;
    ev->capacity = capacity ? capacity : VMD_EVENTS_DEFAULT_CAPACITY;
    ev->ring = calloc(ev->capacity, sizeof(*ev->ring));
    ev->lens = calloc(ev->capacity, sizeof(*ev->lens));
    if (!ev->ring || !ev->lens || pthread_mutex_init(&ev->lock, NULL) != 0) {
        free(ev->ring);
        free(ev->lens);
        free(ev);
        return NULL;
    }
    return ev;
}

void vmd_events_free(struct vmd_events *ev)
{
    if (!ev)
        return;
    for (size_t i = 0; i < ev->capacity; i++)
        free(ev->ring[i]);
    free(ev->ring);
    free(ev->lens);
    pthread_mutex_destroy(&ev->lock);
    free(ev);
}

static void format_time(char out[32])
{
    struct timespec ts;
    struct tm tm;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* A new line object with the header fields, or NULL (-ENOMEM). */
static struct json_object *line_header(uint64_t seq, const char *when, const char *type,
                                       const char *domain)
{
    struct json_object *line = json_object_new_object();

    if (!line)
        return NULL;
    json_object_object_add(line, "seq", json_object_new_uint64(seq));
    json_object_object_add(line, "time", json_object_new_string(when));
    json_object_object_add(line, "type", json_object_new_string(type));
    if (domain)
        json_object_object_add(line, "domain", json_object_new_string(domain));
    return line;
}

/* @line as text with a newline, in a new buffer; *@len its length. */
static char *line_text(struct json_object *line, size_t *len)
{
    const char *text = json_object_to_json_string_ext(line, JSON_C_TO_STRING_PLAIN);
    char *copy = NULL;

    if (text) {
        *len = strlen(text) + 1;
        copy = malloc(*len + 1);
        if (copy) {
            memcpy(copy, text, *len - 1);
            copy[*len - 1] = '\n';
            copy[*len] = '\0';
        }
    }
    return copy;
}

/* The line for @seq: the header fields first, then the publisher's. A
 * line over VMD_EVENTS_LINE_MAX is replaced by its header fields and
 * "truncated":true,"bytes":N (its length), so no reader ever meets a line
 * too long to send. */
static char *format_line(uint64_t seq, const char *type, const char *domain,
                         struct json_object *data, size_t *len)
{
    char when[32];

    format_time(when);
    struct json_object *line = line_header(seq, when, type, domain);
    if (!line)
        return NULL;
    if (data && json_object_is_type(data, json_type_object)) {
        json_object_object_foreach(data, key, val)
        {
            if (!json_object_object_get_ex(line, key, NULL))
                json_object_object_add(line, key, json_object_get(val));
        }
    }
    char *copy = line_text(line, len);
    json_object_put(line);
    if (!copy || *len <= VMD_EVENTS_LINE_MAX)
        return copy;
    size_t full = *len;
    free(copy);
    if (!(line = line_header(seq, when, type, domain)))
        return NULL;
    json_object_object_add(line, "truncated", json_object_new_boolean(true));
    json_object_object_add(line, "bytes", json_object_new_uint64(full));
    copy = line_text(line, len);
    json_object_put(line);
    return copy;
}

int vmd_events_publish(struct vmd_events *ev, const char *type, const char *domain,
                       struct json_object *data)
{
    char *text;
    size_t len = 0;
    uint64_t seq;
    size_t slot;

    if (!ev || !type) {
        json_object_put(data);
        return -EINVAL;
    }
    pthread_mutex_lock(&ev->lock);
    seq = ev->next;
    /* Formatting under the lock keeps sequence numbers in line order. */
    text = format_line(seq, type, domain, data, &len);
    json_object_put(data);
    if (!text) {
        ev->lost++;
        pthread_mutex_unlock(&ev->lock);
        return -ENOMEM;
    }
    slot = seq % ev->capacity;
    free(ev->ring[slot]);
    ev->ring[slot] = text;
    ev->lens[slot] = len;
    ev->next = seq + 1;
    for (size_t i = 0; i < VMD_EVENTS_MAX_SUBSCRIBERS; i++)
        if (ev->subs[i].notify)
            ev->subs[i].notify(ev->subs[i].opaque);
    pthread_mutex_unlock(&ev->lock);
    return 0;
}

int vmd_events_subscribe(struct vmd_events *ev, void (*notify)(void *opaque), void *opaque,
                         uint64_t *cursor)
{
    int id = -EAGAIN;

    if (!ev || !notify || !cursor)
        return -EINVAL;
    pthread_mutex_lock(&ev->lock);
    for (size_t i = 0; i < VMD_EVENTS_MAX_SUBSCRIBERS; i++) {
        if (!ev->subs[i].notify) {
            ev->subs[i].notify = notify;
            ev->subs[i].opaque = opaque;
            *cursor = ev->next;
            id = (int)i;
            break;
        }
    }
    pthread_mutex_unlock(&ev->lock);
    return id;
}

void vmd_events_unsubscribe(struct vmd_events *ev, int id)
{
    if (!ev || id < 0 || (size_t)id >= VMD_EVENTS_MAX_SUBSCRIBERS)
        return;
    pthread_mutex_lock(&ev->lock);
    ev->subs[id].notify = NULL;
    ev->subs[id].opaque = NULL;
    pthread_mutex_unlock(&ev->lock);
}

ssize_t vmd_events_read(struct vmd_events *ev, uint64_t *cursor, char *buf, size_t size)
{
    uint64_t oldest;
    ssize_t n = 0;
    size_t slot;

    if (!ev || !cursor || !buf)
        return -EINVAL;
    pthread_mutex_lock(&ev->lock);
    oldest = ev->next > ev->capacity ? ev->next - ev->capacity : 0;
    if (*cursor < oldest) {
        int len = snprintf(buf, size, "{\"type\":\"lost\",\"count\":%llu}\n",
                           (unsigned long long)(oldest - *cursor));

        if (len < 0 || (size_t)len >= size) {
            n = -ENOBUFS;
        } else {
            *cursor = oldest;
            n = len;
        }
    } else if (*cursor < ev->next) {
        slot = *cursor % ev->capacity;
        if (ev->lens[slot] >= size) {
            n = -ENOBUFS;
        } else {
            memcpy(buf, ev->ring[slot], ev->lens[slot] + 1);
            n = (ssize_t)ev->lens[slot];
            (*cursor)++;
        }
    }
    pthread_mutex_unlock(&ev->lock);
    return n;
}

uint64_t vmd_events_published(struct vmd_events *ev)
{
    uint64_t n;

    pthread_mutex_lock(&ev->lock);
    n = ev->next;
    pthread_mutex_unlock(&ev->lock);
    return n;
}
