/* SPDX-License-Identifier: MIT */
/*
 * vmctl.h - what moor-vmctl's files share: the parsed command line, the
 * sub-command table (commands.c) and the output helpers (output.c).
 *
 *   vmctl.c     main: global options, the sub-command's options, --help.
 *   commands.c  one function per sub-command: request, then output.
 *   output.c    JSON printing, the daemon's errors, key/value lists.
 *   table.c     aligned tables, durations and sizes.
 *   images.c    the image-* sub-commands (the image pool).
 *
 * moor-vmctl is single-threaded; nothing here takes a lock.
 */
#ifndef MOOR_VMCTL_H
#define MOOR_VMCTL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "client.h"

/* Exit statuses. */
enum {
    VMCTL_EXIT_OK = 0,
    VMCTL_EXIT_FAILED = 1, /* the daemon said no, or could not be reached */
    VMCTL_EXIT_USAGE = 2,  /* bad command line */
};

/* Options a sub-command may take (a bit mask in struct vmctl_command). */
enum {
    VMCTL_OPT_PAUSED = 1u << 0,    /* start --paused */
    VMCTL_OPT_WAIT = 1u << 1,      /* shutdown --timeout SECONDS */
    VMCTL_OPT_ALL = 1u << 2,       /* list --all (accepted; every domain is listed) */
    VMCTL_FOLLOWS = 1u << 3,       /* a stream: unbounded unless --timeout is given */
    VMCTL_OPT_BANDWIDTH = 1u << 4, /* save --bandwidth MIB */
    VMCTL_OPT_DISK = 1u << 5,      /* backup --disk NAME */
};

/* The command line, parsed. Strings point into argv. */
struct vmctl_args {
    const char *socket_path; /* never NULL once parsed */
    long timeout_ms;         /* each request's bound; 0: none */
    bool timeout_given;      /* --timeout was on the command line */
    bool json;               /* --json */
    bool pretty;             /* --json on a terminal */
    bool paused;             /* start --paused */
    long wait_ms;            /* shutdown --timeout, or -1 for the daemon's default */
    long bandwidth_mib_s;    /* save --bandwidth, 0: QEMU's default */
    const char *disk;        /* backup --disk, NULL: the first disk */
    int argc;                /* the sub-command's positional arguments */
    char **argv;
};

struct vmctl_command {
    const char *name;
    const char *synopsis; /* after "moor-vmctl NAME " */
    const char *operands; /* what a missing-argument error names ("ID JSON") */
    const char *summary;  /* one line */
    const char *route;    /* the API call it makes, for --help */
    const char *details;  /* NULL, or more lines for --help */
    unsigned options;     /* VMCTL_OPT_* */
    int min_args, max_args;
    /* Runs the sub-command on a connected client; returns an exit status. */
    int (*run)(struct vmctl_client *c, const struct vmctl_args *a);
};

/* Every sub-command, in --help order, ending with a zeroed entry (commands.c). */
extern const struct vmctl_command vmctl_commands[];

/* The long-job sub-commands (cmd-jobs.c). */
int vmctl_cmd_save(struct vmctl_client *c, const struct vmctl_args *a);
int vmctl_cmd_restore(struct vmctl_client *c, const struct vmctl_args *a);
int vmctl_cmd_job(struct vmctl_client *c, const struct vmctl_args *a);
int vmctl_cmd_abort(struct vmctl_client *c, const struct vmctl_args *a);
int vmctl_cmd_backup(struct vmctl_client *c, const struct vmctl_args *a);

/* check_id - whether @id can go in a URL as a domain id; a usage message
 * naming @cmd on stderr when not (commands.c). */
bool check_id(const char *cmd, const char *id);
/* images.c: image-list, image-create, image-delete, image-resize, image-info. */
int vmctl_cmd_image_list(struct vmctl_client *c, const struct vmctl_args *a);
int vmctl_cmd_image_create(struct vmctl_client *c, const struct vmctl_args *a);
int vmctl_cmd_image_delete(struct vmctl_client *c, const struct vmctl_args *a);
int vmctl_cmd_image_resize(struct vmctl_client *c, const struct vmctl_args *a);
int vmctl_cmd_image_info(struct vmctl_client *c, const struct vmctl_args *a);

/* Set by SIGINT/SIGTERM while `events` follows the stream (commands.c). */
extern volatile sig_atomic_t vmctl_stop;

/* ---- output.c ---------------------------------------------------------- */

/* Print @json to stdout as --json asks: indented when @pretty, else one line.
 * Returns an exit status (1 when stdout failed). */
int vmctl_print_json(struct json_object *json, bool pretty);

/*
 * vmctl_check - the common tail of a request: a transport failure (@rc < 0)
 * or a non-2xx answer is reported on stderr as "moor-vmctl: <message>" (with
 * --json, an error body is also printed on stdout) and gives 1; a 2xx
 * gives 0 and prints nothing.
 */
int vmctl_check(int rc, const moor_error *err, const struct vmctl_response *r,
                const struct vmctl_args *a);

/* vmctl_call - one request, its answer in @r, checked as vmctl_check does.
 * Returns an exit status. */
int vmctl_call(struct vmctl_client *c, const struct vmctl_args *a, const char *method,
               const char *path, const char *body, struct vmctl_response *r);

/* vmctl_done - the end of a command whose answer people need not read: the
 * JSON with --json, else @line. Returns an exit status. */
int vmctl_done(const struct vmctl_args *a, const struct vmctl_response *r, const char *line);

/* Print "moor-vmctl: <fmt...>" on stderr. */
void vmctl_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A field of @obj as a string ("-" when absent or null; numbers and
 * booleans as text; objects and arrays as one-line JSON). Borrowed from
 * @obj: valid while @obj lives and the same field is not asked again in
 * another form. */
const char *vmctl_field(struct json_object *obj, const char *key);

/* The response's JSON object, or NULL after reporting "moor-vmd sent no
 * JSON" on stderr (a daemon bug). */
struct json_object *vmctl_body(const struct vmctl_response *r);

/* Cleanup attributes. */
void vmctl_freep(void *p);
void vmctl_response_clearp(struct vmctl_response *r);
#define vmctl_autofree     __attribute__((cleanup(vmctl_freep)))
#define vmctl_autoresponse __attribute__((cleanup(vmctl_response_clearp)))

#endif /* MOOR_VMCTL_H */
