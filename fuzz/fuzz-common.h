/* SPDX-License-Identifier: MIT */
/*
 * fuzz/fuzz-common.h - what the fuzz targets that drive a real monitor
 * share: a check that aborts (the fuzzer's crash), a misuse hook that
 * aborts, and the monitor callbacks that check each event and end of file
 * and count them. Header-only, included by one target per executable.
 * Define FUZZ_NAME (the target's name, for messages) before including it.
 */
#ifndef MOOR_FUZZ_COMMON_H
#define MOOR_FUZZ_COMMON_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <moor/debug.h>
#include <moor/monitor.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, FUZZ_NAME ": check failed: %s (line %d)\n", #cond, __LINE__);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* What one input did to its monitor (the callbacks' opaque). */
struct run {
    unsigned eofs;
    int eof_code;
    unsigned events;
    bool steal; /* on_event keeps (and frees) the payload instead of lending it back */
};

static inline void on_misuse(moor_misuse kind, const void *subject, const char *message,
                             void *opaque)
{
    (void)opaque;
    fprintf(stderr, FUZZ_NAME ": misuse report %d about %p: %s\n", (int)kind, subject, message);
    abort();
}

static inline void on_event(moor_monitor *mon, void *owner, moor_monitor_message *msg, void *opaque)
{
    struct run *r = opaque;

    CHECK(owner != NULL);
    CHECK(msg->kind == MOOR_MONITOR_EVENT || msg->kind == MOOR_MONITOR_GREETING);
    CHECK(msg->payload != NULL);
    /* Touch the payload as a handler would. */
    CHECK(json_object_to_json_string(msg->payload) != NULL);
    r->events++;
    if (r->steal) {
        void *kept = msg->payload;

        msg->payload = NULL;
        moor_monitor_payload_free(mon, kept);
    }
}

static inline void on_eof(moor_monitor *mon, void *owner, const moor_error *why, void *opaque)
{
    struct run *r = opaque;

    (void)mon;
    CHECK(owner != NULL);
    CHECK(why->code < 0);
    r->eofs++;
    r->eof_code = why->code;
}

#endif /* MOOR_FUZZ_COMMON_H */
