/* SPDX-License-Identifier: MIT */
/*
 * fuzz/fuzz-monitor.c - libFuzzer target: arbitrary bytes from the peer
 * into a monitor's input path (framing, the QMP-style codec's classify,
 * reply matching, event delivery, breaking the channel).
 *
 * Input layout: byte 0 picks the chunk size the rest is fed in (1..64
 * bytes, or everything at once), byte 1 the max_message cap (64..4159
 * bytes, so that oversized messages are common), and bit 7 of byte 1
 * whether on_event keeps (steals) the payloads. The rest is what the peer
 * "sent", pushed through moor__monitor_feed() as if read from the socket;
 * the loop is never iterated for I/O, only polled to let go of removed
 * handlers.
 *
 * Checked on every input (abort on failure, so libFuzzer keeps the
 * input): on_eof runs at most once, and exactly once if and only if the
 * channel broke; every event has a valid kind; no misuse report; no live
 * object is left once the monitor, its owner and the loop's handlers are
 * gone; ASan/UBSan/LSan see nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <moor/debug.h>
#include <moor/loop.h>
#include <moor/monitor.h>
#include <moor/object.h>

#include <json-c/json.h>

#include "monitor-internal.h"
#include "qmp.h"

#define FUZZ_NAME "fuzz-monitor"
#include "fuzz-common.h"

static moor_loop *loop;
static const moor_class *owner_class;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    moor_debug_set_report(on_misuse, NULL);
    loop = moor_loop_new(NULL);
    owner_class =
        moor_class_new("fuzz_owner", moor_lockable_class(), sizeof(moor_lockable), NULL, NULL);
    CHECK(loop && owner_class);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const moor_monitor_codec codec = vmd_qmp_codec();
    struct run r = {0};
    const moor_monitor_callbacks cb = {on_event, on_eof, &r};
    moor_monitor_options opts = {.name = "fuzz"};
    moor_monitor_stats st;
    moor_monitor *mon;
    void *owner;
    size_t chunk;
    int sv[2], rc = 0;

    if (size < 2)
        return 0;
    chunk = data[0] < 192 ? 1u + data[0] % 64u : size;
    opts.max_message = 64u + (size_t)(data[1] & 0x7f) * 32u;
    r.steal = data[1] & 0x80;
    data += 2;
    size -= 2;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK((owner = moor_object_new(owner_class)) != NULL);
    mon = moor_monitor_new(loop, sv[0], &codec, &cb, owner, &opts, NULL);
    CHECK(mon != NULL);
    for (size_t off = 0; off < size && rc == 0; off += chunk)
        rc = moor__monitor_feed(mon, data + off, size - off < chunk ? size - off : chunk);
    CHECK(moor_monitor_get_stats(mon, &st) == 0);
    CHECK(r.eofs <= 1);
    CHECK((rc == -EPIPE) == (st.state == MOOR_MONITOR_BROKEN));
    CHECK((r.eofs == 1) == (st.state == MOOR_MONITOR_BROKEN));
    CHECK(r.eofs == 0 || r.eof_code == -EPROTO || r.eof_code == -EMSGSIZE);
    CHECK(st.pending == 0 && st.replies == 0); /* nobody called: every reply is stray */
    CHECK(r.events == st.events);

    moor_monitor_close(mon);
    moor_unref(mon);
    moor_unref(owner);
    close(sv[1]);
    /* Let the loop free the removed handler (which closes sv[0]). */
    CHECK(moor_loop_iterate(loop, 0) >= 0);
    CHECK(moor_census_total() == 1); /* the loop */
    return 0;
}
