/* SPDX-License-Identifier: MIT */
/*
 * qmp.h - QMP for moor monitors: the codec, the handshake and calls with a
 * deadline that mark a hung QEMU as unresponsive.
 *
 * Wire format (QEMU's QMP, one JSON object per line):
 *   QEMU -> us: {"QMP": {...}}                                greeting
 *               {"return": VALUE, "id": N}                    reply
 *               {"error": {"class": C, "desc": D}, "id": N}   refusal
 *               {"event": NAME, "data": {...}, "timestamp": {...}}
 *               any other object: ignored
 *   us -> QEMU: {"execute": NAME, "arguments": {...}, "id": N}
 *
 * Payloads are json_object references: a reply's is its "return" value
 * (NULL for JSON null); an event's or greeting's the whole message; a
 * refusal's the whole message (status -EREMOTEIO, text "Class: desc").
 *
 * The unresponsive mark (beyond libvirt): a call that times out marks the
 * connection unresponsive with the command and the time. Until QEMU sends
 * anything again (a late reply or an event, seen in the monitor's
 * counters), every call fails at once with -ETIMEDOUT ("QEMU has not
 * answered query-status for 12 s"): a hung QEMU costs later callers
 * microseconds, and a job never waits more than one deadline for it.
 */
#ifndef MOOR_VMD_QMP_H
#define MOOR_VMD_QMP_H

#include <stdbool.h>
#include <stdint.h>

#include <moor/error.h>
#include <moor/monitor.h>

struct json_object;

/* A request for moor_monitor_call() with vmd_qmp_codec(): borrowed
 * strings and arguments (NULL: none). @execute: [A-Za-z0-9_-]{1,64}. */
struct vmd_qmp_cmd {
    const char *execute;
    struct json_object *arguments;
};

/* The codec (stateless, thread-safe: one serves every monitor; the fuzz
 * target and tests use it as is). */
moor_monitor_codec vmd_qmp_codec(void);

/* The longest QMP command name we send or accept from a client: QEMU's own
 * are under 40 characters. One bound for the API's parser and the codec. */
#define VMD_QMP_COMMAND_MAX 64

/* vmd_qmp_command_ok - whether @name may be sent as a QMP command:
 * [A-Za-z0-9_-]{1,VMD_QMP_COMMAND_MAX}. */
bool vmd_qmp_command_ok(const char *name);

/* A QMP connection: a moor object (class "vmd_qmp") owning the monitor
 * and the unresponsive mark. Thread-safe. Lock order: its mutex may be
 * taken under an object mutex, and takes only the monitor's internal
 * mutex inside (to read its counters). */
typedef struct vmd_qmp vmd_qmp;

/*
 * vmd_qmp_handshake - on a connected, blocking-or-not socket @fd: read
 * QEMU's greeting, send qmp_capabilities, read its reply. Reads exactly the
 * bytes of those lines (MSG_PEEK), so what follows is left for the monitor.
 * Locks: none held (it blocks). Blocks: up to @timeout_ms in all.
 * Returns: 0; -ETIMEDOUT; -EPIPE (QEMU closed); -EPROTO (not QMP);
 * -EREMOTEIO (capabilities refused); another -errno of poll/recv/send.
 */
int vmd_qmp_handshake(int fd, unsigned timeout_ms, moor_error *err);

/*
 * vmd_qmp_new - a connection on @fd (after the handshake), a monitor on
 * @loop owned (weakly) by @owner with @cb, named @name ("qmp vm1"), each
 * call bounded by @timeout_ms.
 * Ownership: a new reference; on success the connection owns @fd, on
 * failure the caller still does. Locks: none needed. Blocks: no.
 * Returns: the connection, or NULL with @err set (moor_monitor_new's codes).
 */
vmd_qmp *vmd_qmp_new(moor_loop *loop, int fd, void *owner, const moor_monitor_callbacks *cb,
                     const char *name, unsigned timeout_ms, moor_error *err);

/* vmd_qmp_monitor - the monitor, for moor_monitor_enter/exit. Borrowed
 * for as long as the caller holds a reference to @q. */
moor_monitor *vmd_qmp_monitor(vmd_qmp *q);

/*
 * vmd_qmp_call - run @execute with @arguments (borrowed; NULL: none).
 * Fails at once with -ETIMEDOUT while the connection is marked
 * unresponsive; marks it when this call times out.
 * Ownership: *@ret (may be NULL) receives the "return" value (a new
 * json_object reference, NULL for JSON null); untouched on failure.
 * Locks: no object mutex held (between moor_monitor_enter and _exit).
 * Blocks: up to the connection's timeout.
 * Returns: 0; -ETIMEDOUT (no answer, or marked unresponsive); -EREMOTEIO
 * (QEMU refused: the message has its class and text); -EPIPE (QEMU went
 * away); -EINVAL (bad command name); the other codes of moor_monitor_call.
 */
int vmd_qmp_call(vmd_qmp *q, const char *execute, struct json_object *arguments,
                 struct json_object **ret, moor_error *err);

/*
 * vmd_qmp_call_fds - vmd_qmp_call() that passes @nfds descriptors with the
 * command (SCM_RIGHTS, for getfd); they stay the caller's (duplicated
 * inside, see moor_monitor_call_fds). Locks, Blocks, Returns: as
 * vmd_qmp_call().
 */
int vmd_qmp_call_fds(vmd_qmp *q, const char *execute, struct json_object *arguments, const int *fds,
                     unsigned nfds, struct json_object **ret, moor_error *err);

/*
 * vmd_qmp_responsive - whether @q is not marked unresponsive (a late answer
 * clears the mark here too). When marked, *@since_ms (may be NULL) gets
 * how long ago the command that timed out was sent and @cmd (may be NULL,
 * @cmd_size bytes) its name. Locks: @q's leaf mutex. Blocks: no.
 */
bool vmd_qmp_responsive(vmd_qmp *q, uint64_t *since_ms, char *cmd, size_t cmd_size);

/*
 * vmd_qmp_calls - how many calls have started on @q (registered: not
 * refused at once for the unresponsive mark) and how many have ended
 * (answered, refused, timed out or cut by the close), since @q was made.
 * Both only grow; started > ended means a call waits for QEMU now. A
 * restore's feeder uses it to let QEMU's main loop answer (domain-jobs.c).
 * Either pointer may be NULL. Locks: none. Blocks: no. Ordering: relaxed
 * loads (counts, nothing published through them), so the two may be from
 * slightly different moments.
 */
void vmd_qmp_calls(vmd_qmp *q, uint64_t *started, uint64_t *ended);

/*
 * vmd_qmp_debug - the calls in flight as a JSON array of
 * {"command","age_ms","deadline_ms"}. Ownership: new object; NULL on
 * -ENOMEM. Locks: @q's leaf mutex. Blocks: no.
 */
struct json_object *vmd_qmp_debug(vmd_qmp *q);

/* vmd_qmp_close - end the channel (moor_monitor_close): pending calls fail
 * with -EPIPE. Must not be called with the owner's mutex held. NULL-safe. */
void vmd_qmp_close(vmd_qmp *q);

#endif /* MOOR_VMD_QMP_H */
