/* SPDX-License-Identifier: MIT */
/*
 * fuzz/fuzz-qmp.c - libFuzzer target: moor-vmd's QMP codec
 * (apps/vmd/qmp.c, vmd_qmp_codec()) on arbitrary bytes from QEMU, and its
 * encoder on requests built from the input.
 *
 * Input layout: byte 0 picks the read size the rest is cut into (1..64
 * bytes, or everything at once), byte 1 the max_message cap (64..4159
 * bytes) and, in bit 7, whether on_event steals the payloads. The rest is
 * what QEMU "sent". It goes three ways:
 *
 *   1. Straight through the codec, as a reader would: each read is
 *      appended to a buffer, frame() cuts messages off its front until it
 *      needs more bytes, classify() decodes each one, payloads are freed.
 *      A frame() error ends the stream, as it breaks a monitor's channel.
 *   2. Into a real moor monitor with the same codec, over a socketpair,
 *      pushed through moor__monitor_feed() as fuzz-monitor does.
 *   3. As a request: the first line (up to 80 bytes) is the command name,
 *      the next 8 bytes the id, the rest (as a JSON object if it parses
 *      as one, else as a string under "data") the arguments; encode()
 *      must follow its snprintf-style contract and the bytes must parse
 *      back to the same command, id and arguments.
 *   4. Into vmd_qmp_handshake() over a socketpair (up to the last newline,
 *      then EOF, so that it never waits): it reads whole lines only and
 *      sends qmp_capabilities once it has seen a greeting.
 *
 * Checked on every input (abort on failure, so libFuzzer keeps it): frame
 * returns 0..len, or a negative errno with the error set; classify returns
 * 0 with a valid kind, or a negative errno with the error set and nothing
 * owned; a REPLY's status is 0, or negative with a message; events and
 * greetings have a payload; the monitor's eof/events agree with its
 * counters; no live object is left; ASan/UBSan/LSan see nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
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

#include "monitor-internal.h"
#include "qmp.h"

#define FUZZ_NAME "fuzz-qmp"
#include "fuzz-common.h"

#define NAME_MAX_FUZZ 80

static moor_loop *loop;
static const moor_class *owner_class;

/* The input, split into its three parts. */
struct input {
    size_t chunk;       /* bytes per read */
    size_t max_message; /* the monitor's cap, and ours in part 1 */
    bool steal;         /* on_event takes the payload */
    const uint8_t *data;
    size_t size;
};

static bool error_is_set(const moor_error *e, ssize_t rc)
{
    return e->code == rc && e->code < 0 && e->message[0] != '\0';
}

/* ---- 1. the codec alone --------------------------------------------------- */

/* Classify one framed message, check what came out and free it. */
static void classify_one(const moor_monitor_codec *c, const char *msg, size_t len)
{
    moor_monitor_message out = {0};
    moor_error err = {0};

    int rc = c->classify(c->opaque, msg, len, &out, &err);
    if (rc < 0) {
        CHECK(error_is_set(&err, rc));
        CHECK(out.payload == NULL); /* it owns nothing */
        return;
    }
    CHECK(rc == 0);
    CHECK(out.kind >= MOOR_MONITOR_REPLY && out.kind <= MOOR_MONITOR_IGNORE);
    switch (out.kind) {
    case MOOR_MONITOR_REPLY:
        /* The id came from a JSON integer >= 0. */
        CHECK(out.id <= (uint64_t)INT64_MAX);
        CHECK(out.status == 0 || out.status == -EREMOTEIO);
        if (out.status < 0) {
            CHECK(out.error != NULL && out.error[0] != '\0');
            CHECK(out.payload != NULL);
            CHECK(strlen(out.error) < MOOR_ERROR_MESSAGE_SIZE);
        }
        break;
    case MOOR_MONITOR_EVENT:
    case MOOR_MONITOR_GREETING:
        CHECK(out.payload != NULL);
        CHECK(json_object_to_json_string(out.payload) != NULL);
        break;
    case MOOR_MONITOR_IGNORE:
        CHECK(out.payload == NULL);
        break;
    }
    if (out.payload)
        c->free_payload(c->opaque, out.payload);
}

/* Cut every complete message off the front of @buf (@*len bytes).
 * Returns false once frame() failed: the stream is then unusable. */
static bool frame_all(const moor_monitor_codec *c, char *buf, size_t *len)
{
    while (*len) {
        moor_error err = {0};
        ssize_t n = c->frame(c->opaque, buf, *len, &err);
        if (n < 0) {
            CHECK(error_is_set(&err, n));
            return false;
        }
        CHECK((size_t)n <= *len);
        if (n == 0)
            return true;
        classify_one(c, buf, (size_t)n);
        memmove(buf, buf + n, *len - (size_t)n);
        *len -= (size_t)n;
    }
    return true;
}

static void codec_stream(const struct input *in)
{
    const moor_monitor_codec c = vmd_qmp_codec();
    char *buf = malloc(in->max_message + NAME_MAX_FUZZ + 64);
    size_t len = 0;

    CHECK(buf != NULL);
    for (size_t off = 0; off < in->size; off += in->chunk) {
        size_t n = in->size - off < in->chunk ? in->size - off : in->chunk;
        /* A reader with a bounded buffer: a message that does not fit is
         * where a monitor breaks with -EMSGSIZE. */
        if (len + n > in->max_message + NAME_MAX_FUZZ + 64)
            break;
        memcpy(buf + len, in->data + off, n);
        len += n;
        if (!frame_all(&c, buf, &len))
            break;
    }
    free(buf);
}

/* ---- 2. a real monitor ---------------------------------------------------- */

static void monitor_stream(const struct input *in)
{
    const moor_monitor_codec codec = vmd_qmp_codec();
    struct run r = {.steal = in->steal};
    const moor_monitor_callbacks cb = {on_event, on_eof, &r};
    moor_monitor_options opts = {.name = "fuzz-qmp", .max_message = in->max_message};
    moor_monitor_stats st;
    moor_monitor *mon;
    void *owner;
    int sv[2], rc = 0;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK((owner = moor_object_new(owner_class)) != NULL);
    mon = moor_monitor_new(loop, sv[0], &codec, &cb, owner, &opts, NULL);
    CHECK(mon != NULL);
    for (size_t off = 0; off < in->size && rc == 0; off += in->chunk)
        rc = moor__monitor_feed(mon, in->data + off,
                                in->size - off < in->chunk ? in->size - off : in->chunk);
    CHECK(moor_monitor_get_stats(mon, &st) == 0);
    CHECK(r.eofs <= 1);
    CHECK((rc == -EPIPE) == (st.state == MOOR_MONITOR_BROKEN));
    CHECK((r.eofs == 1) == (st.state == MOOR_MONITOR_BROKEN));
    CHECK(r.eofs == 0 || r.eof_code == -EPROTO || r.eof_code == -EMSGSIZE || r.eof_code == -ENOMEM);
    CHECK(st.pending == 0 && st.replies == 0); /* nobody called: every reply is stray */
    CHECK(r.events == st.events);

    moor_monitor_close(mon);
    moor_unref(mon);
    moor_unref(owner);
    close(sv[1]);
    /* Let the loop free the removed handler (which closes sv[0]). */
    CHECK(moor_loop_iterate(loop, 0) >= 0);
    CHECK(moor_census_total() == 1); /* the loop */
}

/* ---- 3. encode ------------------------------------------------------------ */

/* The arguments from @data: a JSON object if it parses as one, else
 * {"data": the bytes as a string}. Ownership: a new reference or NULL. */
static struct json_object *make_arguments(const uint8_t *data, size_t size)
{
    if (size == 0)
        return NULL;
    struct json_tokener *tok = json_tokener_new_ex(16);
    CHECK(tok != NULL);
    struct json_object *o = json_tokener_parse_ex(tok, (const char *)data, (int)size);
    json_tokener_free(tok);
    if (json_object_is_type(o, json_type_object))
        return o;
    json_object_put(o);
    o = json_object_new_object();
    CHECK(o != NULL);
    CHECK(json_object_object_add(o, "data",
                                 json_object_new_string_len((const char *)data, (int)size)) == 0);
    return o;
}

/* Parse what encode wrote and compare it with the request. */
static void check_encoding(const char *buf, size_t n, const struct vmd_qmp_cmd *cmd, uint64_t id)
{
    struct json_object *o, *v;

    CHECK(n > 0 && buf[n - 1] == '\n' && buf[n] == '\0' && strlen(buf) == n);
    CHECK(memchr(buf, '\n', n) == buf + n - 1); /* one line: frame() would cut it whole */
    o = json_tokener_parse(buf);
    CHECK(json_object_is_type(o, json_type_object));
    CHECK(json_object_object_get_ex(o, "execute", &v));
    CHECK(strcmp(json_object_get_string(v), cmd->execute) == 0);
    CHECK(json_object_object_get_ex(o, "id", &v));
    CHECK(json_object_get_uint64(v) == id);
    if (cmd->arguments) {
        CHECK(json_object_object_get_ex(o, "arguments", &v));
        /* Doubles compare by the text json-c kept from the input (NaN is
         * not equal to itself). */
        CHECK(json_object_equal(v, cmd->arguments) ||
              strcmp(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN),
                     json_object_to_json_string_ext(cmd->arguments, JSON_C_TO_STRING_PLAIN)) == 0);
    } else {
        CHECK(!json_object_object_get_ex(o, "arguments", NULL));
    }
    json_object_put(o);
}

static void encode_request(const uint8_t *data, size_t size)
{
    const moor_monitor_codec c = vmd_qmp_codec();
    char name[NAME_MAX_FUZZ + 1];
    const uint8_t *nl = memchr(data, '\n', size < NAME_MAX_FUZZ ? size : NAME_MAX_FUZZ);
    size_t name_len = nl ? (size_t)(nl - data) : (size < NAME_MAX_FUZZ ? size : NAME_MAX_FUZZ);
    uint64_t id = 0;
    moor_error err = {0};
    char small[1];

    memcpy(name, data, name_len);
    name[name_len] = '\0'; /* a NUL inside ends the name early: fine */
    data += name_len + (nl != NULL);
    size -= name_len + (nl != NULL);
    for (int i = 0; i < 8 && size; i++, data++, size--)
        id = id << 8 | *data;

    struct vmd_qmp_cmd cmd = {.execute = name, .arguments = make_arguments(data, size)};
    CHECK(strcmp(c.name(c.opaque, &cmd), name) == 0);
    ssize_t n = c.encode(c.opaque, &cmd, id, small, 0, &err);
    if (!vmd_qmp_command_ok(name)) {
        CHECK(n == -EINVAL && error_is_set(&err, n));
    } else {
        CHECK(n > 0);
        char *buf = malloc((size_t)n + 1);
        CHECK(buf != NULL);
        /* Too small by half: the same length, a NUL-terminated prefix. */
        size_t half = (size_t)n / 2 + 1;
        CHECK(c.encode(c.opaque, &cmd, id, buf, half, &err) == n);
        CHECK(strlen(buf) == half - 1);
        CHECK(c.encode(c.opaque, &cmd, id, buf, (size_t)n + 1, &err) == n);
        check_encoding(buf, (size_t)n, &cmd, id);
        free(buf);
    }
    json_object_put(cmd.arguments);
}

/* ---- 4. the handshake ----------------------------------------------------- */

/*
 * vmd_qmp_handshake() on a socketpair holding the input up to its last
 * newline, with the writing end shut: every line it reads is complete and
 * the end is EOF, so it never waits (-ETIMEDOUT is a failure). It must
 * read whole lines only, leave the rest in the socket, and send
 * qmp_capabilities exactly once if it got past a greeting.
 */
static void handshake(const uint8_t *data, size_t size)
{
    static const char caps[] = "{\"execute\":\"qmp_capabilities\",\"id\":0}\n";
    char sent[sizeof(caps) + 1];
    moor_error err = {0};
    int sv[2];

    while (size && data[size - 1] != '\n')
        size--;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    if (size && send(sv[1], data, size, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)size) {
        close(sv[0]);
        close(sv[1]);
        return; /* more than the socket holds: not this part's concern */
    }
    CHECK(shutdown(sv[1], SHUT_WR) == 0);
    int rc = vmd_qmp_handshake(sv[0], 10000, &err);
    CHECK(rc == 0 || rc == -EPIPE || rc == -EPROTO || rc == -EREMOTEIO);
    CHECK(rc == 0 ? err.code == 0 : error_is_set(&err, rc));

    /* What is left is a suffix of the input that starts a line. */
    char *rest = malloc(size + 1);
    CHECK(rest != NULL);
    ssize_t left = recv(sv[0], rest, size + 1, MSG_DONTWAIT);
    if (left < 0) {
        CHECK(errno == EAGAIN);
        left = 0;
    }
    CHECK((size_t)left <= size);
    CHECK(memcmp(rest, data + size - (size_t)left, (size_t)left) == 0);
    CHECK((size_t)left == size || data[size - (size_t)left - 1] == '\n');
    CHECK(rc == -EPIPE || rc == -EPROTO || (size_t)left < size);
    free(rest);

    /* The capabilities request went out once, whole, or not at all. */
    ssize_t n = recv(sv[1], sent, sizeof(sent), MSG_DONTWAIT);
    if (n < 0) {
        CHECK(errno == EAGAIN);
        n = 0;
    }
    CHECK(n == 0 || (n == (ssize_t)sizeof(caps) - 1 && memcmp(sent, caps, (size_t)n) == 0));
    CHECK(rc == -EPIPE || rc == -EPROTO || n > 0);
    close(sv[0]);
    close(sv[1]);
}

/* ---- entry points --------------------------------------------------------- */

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
    struct input in;

    if (size < 2)
        return 0;
    in.chunk = data[0] < 192 ? 1u + data[0] % 64u : size;
    in.max_message = 64u + (size_t)(data[1] & 0x7f) * 32u;
    in.steal = data[1] & 0x80;
    in.data = data + 2;
    in.size = size - 2;

    codec_stream(&in);
    monitor_stream(&in);
    handshake(in.data, in.size);
    if (in.size)
        encode_request(in.data, in.size);
    return 0;
}
