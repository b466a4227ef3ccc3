/* SPDX-License-Identifier: MIT */
/*
 * tests/common/qmp-codec.h - a QMP-style JSON-lines codec for moor
 * monitors, on json-c, shared by the monitor's tests, benchmark and fuzz
 * target (the library itself knows no JSON).
 *
 * Wire format: one JSON object per line.
 *   peer -> us: {"QMP": {...}}                          greeting
 *               {"return": VALUE, "id": N}              reply
 *               {"error": {"class": C, "desc": D}, "id": N}   refusal
 *               {"event": NAME, "timestamp": {...}, ...}      event
 *               any other object                        ignored
 *   us -> peer: {"execute": NAME, "arguments": {...}, "id": N}
 * Payloads are json_object references: a reply's is its "return" value
 * (NULL for JSON null), an event's or greeting's the whole message. A
 * refusal has status -EREMOTEIO and its "desc" as text. A line that is not
 * one JSON object, or a reply without an unsigned integer id, is garbage;
 * a NUL byte anywhere is a framing error.
 */
#ifndef MOOR_TESTS_QMP_CODEC_H
#define MOOR_TESTS_QMP_CODEC_H

#include <json-c/json.h>

#include <moor/monitor.h>

/* A request for moor_monitor_call(): the command and its arguments
 * (borrowed; NULL for none). @execute must be [A-Za-z0-9_-]+. */
typedef struct qmp_cmd {
    const char *execute;
    struct json_object *arguments;
} qmp_cmd;

/* The codec (stateless: one may serve any number of monitors). */
moor_monitor_codec qmp_codec(void);

#endif /* MOOR_TESTS_QMP_CODEC_H */
