/* SPDX-License-Identifier: MIT */
/*
 * tests/common/qmp-peer.h - the peer's side of the QMP-style codec, for
 * the fake peers of tests and benchmarks: blocking line reads, command
 * parsing and replies. Plain C and json-c; no moor calls.
 */
#ifndef MOOR_TESTS_QMP_PEER_H
#define MOOR_TESTS_QMP_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <json-c/json.h>

/* Most descriptors a line buffer holds between reads (more are closed). */
#define QMP_PEER_MAX_FDS 32

/* Bytes read from the socket and not yet returned as lines. */
typedef struct qmp_linebuf {
    char *data;
    size_t len, cap;
    size_t line_len; /* length of the line last returned, consumed next time */
    /* qmp_read_line_fds() only: descriptors received and not yet handed
     * out, each with the offset in @data of the last byte of the read that
     * brought it (the kernel ends such a read within the bytes the sender
     * attached them to). */
    int fds[QMP_PEER_MAX_FDS];
    size_t fd_at[QMP_PEER_MAX_FDS];
    unsigned nfds;
    unsigned fds_dropped; /* received beyond QMP_PEER_MAX_FDS: closed */
    size_t read_size;     /* most bytes per read; 0: as many as fit (1 pins
                           * descriptors to the very byte they came with) */
} qmp_linebuf;

/* Free what @lb holds, closing the descriptors it holds; it may be used
 * again afterwards. */
void qmp_linebuf_free(qmp_linebuf *lb);

/* The next line from @fd (blocking), without its '\n', NUL-terminated, in
 * *@line (valid until the next call). Returns its length; -1 at end of
 * file (a last line without '\n' is dropped) or on a read error (errno
 * set). */
ssize_t qmp_read_line(int fd, qmp_linebuf *lb, char **line);

/* qmp_read_line() with recvmsg(): also returns in @fds (room for @max)
 * the descriptors (SCM_RIGHTS, close-on-exec) that came with the bytes of
 * the returned line, in *@nfds; the caller owns them. Those beyond @max
 * are closed and counted in lb->fds_dropped. */
ssize_t qmp_read_line_fds(int fd, qmp_linebuf *lb, char **line, int *fds, unsigned max,
                          unsigned *nfds);

/* A command line sent by the codec. */
typedef struct qmp_request_in {
    char execute[64];
    uint64_t id;
    struct json_object *arguments; /* a reference, or NULL; put it when done */
} qmp_request_in;

/* Parse @line; false if it is not a command the codec could have sent. */
bool qmp_parse_request(const char *line, qmp_request_in *out);

/* Write all of @buf (blocking, no SIGPIPE). Returns 0 or -errno. */
int qmp_write_all(int fd, const void *buf, size_t len);

/* printf-style, then qmp_write_all(); the format must end in "\n" where
 * a whole line is meant. Returns 0 or -errno. */
int qmp_writef(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The common messages. @json_value is JSON text ("{}", "42"). */
int qmp_send_return(int fd, uint64_t id, const char *json_value);
int qmp_send_error(int fd, uint64_t id, const char *klass, const char *desc);
int qmp_send_event(int fd, const char *name, long seq);
int qmp_send_greeting(int fd);

#endif /* MOOR_TESTS_QMP_PEER_H */
