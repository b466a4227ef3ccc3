/* SPDX-License-Identifier: MIT */
/*
 * harness.h - run a real moor-vmd for black-box tests: fresh temporary
 * state and runtime directories, its socket waited for with a bound, a
 * vmctl client per thread, domains on the fake QEMU (or real QEMU), kill -9
 * and restart, SIGTERM with its exit status checked, and at the end a
 * check that no QEMU process it started is left.
 *
 * Paths come from the environment (meson sets them): MOOR_VMD (the
 * daemon), FAKE_QEMU (tests/vmd/fake-qemu). REAL_QEMU optionally names the
 * real emulator (default qemu-system-x86_64 on PATH).
 *
 * Failures: every function that can fail prints "harness: <what, and what
 * it waited for>" on stderr and returns a negative errno (or NULL); tests
 * assert on the return. Every wait is bounded (VH_*_MS). Not thread-safe
 * unless a function says so: one thread drives a vh_daemon; worker threads
 * make their own clients (vh_client_new) and record pids (vh_note_pid).
 */
#ifndef MOOR_TESTS_VMD_HARNESS_H
#define MOOR_TESTS_VMD_HARNESS_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

#include "client.h"

#define VH_START_MS    10000 /* the daemon's socket answers */
#define VH_STOP_MS     15000 /* the daemon exits after SIGTERM */
#define VH_EXIT_MS     5000  /* a QEMU process is gone after SIGKILL */
#define VH_STATE_MS    10000 /* a domain reaches a state */
#define VH_REQUEST_MS  60000 /* one HTTP request (the client's own bound) */
#define VH_MAX_FLAGS   16
#define VH_MAX_QEMU    512
#define VH_DEFAULT_QMP "2" /* --qmp-timeout, seconds */

struct vh_daemon {
    char root[64];                 /* mkdtemp: everything below lives here */
    char state_dir[PATH_MAX];      /* <root>/state */
    char runtime_dir[PATH_MAX];    /* <root>/run (0700) */
    char socket_path[PATH_MAX];    /* <root>/run/moor-vmd.sock */
    char log_path[PATH_MAX];       /* <root>/vmd.log: the daemon's stderr */
    char vmd_path[PATH_MAX];       /* $MOOR_VMD */
    char fake_qemu[PATH_MAX];      /* $FAKE_QEMU */
    char *flags[VH_MAX_FLAGS + 1]; /* extra daemon flags (copies) */
    pid_t pid;                     /* the daemon, 0 when not running */
    int starts;                    /* how many times it was started */
    pthread_mutex_t lock;          /* guards qemu_pids/n_qemu */
    pid_t qemu_pids[VH_MAX_QEMU];  /* every QEMU pid seen (vh_note_pid) */
    unsigned n_qemu;
};

/*
 * vh_init - fresh directories and paths; does not start the daemon.
 * @flags: extra daemon flags, NULL-terminated (may be NULL), copied; when
 * they do not give --qmp-timeout, "--qmp-timeout VH_DEFAULT_QMP" is added.
 * Returns 0; -ENOENT ($MOOR_VMD or $FAKE_QEMU unset or not executable);
 * -errno of mkdtemp/mkdir.
 */
int vh_init(struct vh_daemon *d, const char *const *flags);

/*
 * vh_start - run the daemon (its stderr appended to log_path) and wait up
 * to VH_START_MS until GET /v1/version answers 200 on its socket.
 * Returns 0; -ETIMEDOUT (not answering: the log's tail is printed);
 * -ECHILD (it exited while starting); -EALREADY (already running).
 */
int vh_start(struct vh_daemon *d);

/* vh_kill9 - SIGKILL the daemon and reap it. Its QEMUs keep running.
 * Blocks: up to VH_EXIT_MS. Returns 0 (also when it was not running), or
 * -ETIMEDOUT / waitpid's -errno. */
int vh_kill9(struct vh_daemon *d);

/* vh_restart - vh_kill9 (if running), then vh_start. */
int vh_restart(struct vh_daemon *d);

/*
 * vh_stop - SIGTERM, wait up to VH_STOP_MS; *@status gets the wait status.
 * Returns 0 when it exited with status 0; -ECANCELED when it exited
 * otherwise (the status is printed with the log's tail); -ETIMEDOUT (then
 * it is SIGKILLed).
 */
int vh_stop(struct vh_daemon *d, int *status);

/*
 * vh_finish - the end of a test: SIGKILL the daemon if still running, then
 * look for QEMU processes it started that are still alive (every pid
 * noted, and any process whose command line names this harness's root),
 * SIGKILL each and wait (bounded) until it is gone, and remove the root.
 * Returns the number of leftovers found (0: clean), or a negative errno.
 */
int vh_finish(struct vh_daemon *d);

/* vh_note_pid - remember a QEMU pid for vh_finish (at most VH_MAX_QEMU).
 * Locks: d->lock, briefly. Context: any thread. */
void vh_note_pid(struct vh_daemon *d, pid_t pid);

/* vh_pid_alive - @pid exists and is not a zombie (/proc). Any thread. */
bool vh_pid_alive(pid_t pid);

/* vh_wait_pid_gone - wait up to @bound_ms for @pid (not necessarily our
 * child) to be gone or a zombie. Any thread. Returns 0 or -ETIMEDOUT. */
int vh_wait_pid_gone(pid_t pid, int bound_ms);

/* vh_client_new - a client for the calling thread, each request bounded
 * by VH_REQUEST_MS. Ownership: the caller's (vmctl_client_free). Returns
 * NULL on -ENOMEM (printed). Any thread. */
struct vmctl_client *vh_client_new(const struct vh_daemon *d);

/*
 * vh_call - one request; @body_fmt (may be NULL) is printf-style JSON.
 * *@out is filled (vmctl_response_clear) when 0 is returned.
 * Returns 0 when an HTTP answer came; the transport's -errno otherwise
 * (printed).
 */
int vh_call(struct vmctl_client *c, struct vmctl_response *out, const char *method,
            const char *path, const char *body_fmt, ...) __attribute__((format(printf, 5, 6)));

/*
 * vh_expect - vh_call, then check the status is @status and, for a
 * non-2xx, that the body is an error object {"error":{"code","message"}}
 * with a non-empty message. Prints the request and the answer on a
 * mismatch. Returns 0 (and *@out filled if @out is not NULL) or -EPROTO.
 */
int vh_expect(struct vmctl_client *c, long status, struct vmctl_response *out, const char *method,
              const char *path, const char *body_fmt, ...) __attribute__((format(printf, 6, 7)));

/*
 * vh_define_fake - define @name on the fake QEMU (machine none, 16 MiB)
 * with the fault script @faults (NULL: none) in extra_args. Expects 201.
 */
int vh_define_fake(struct vh_daemon *d, struct vmctl_client *c, const char *name,
                   const char *faults);

/* vh_define_real - define @name on real QEMU (machine none, tcg, 16 MiB). */
int vh_define_real(struct vh_daemon *d, struct vmctl_client *c, const char *name);

/*
 * vh_start_domain - POST start (paused or not), expect 200 and a pid in
 * the answer; note the pid. Returns the pid (> 0) or a negative errno.
 */
pid_t vh_start_domain(struct vh_daemon *d, struct vmctl_client *c, const char *name, bool paused);

/* vh_domain_pid - the pid of a running domain (GET info): > 0, or -ESRCH
 * (no pid in the info), -EPROTO (not 200), a transport -errno. */
pid_t vh_domain_pid(struct vmctl_client *c, const char *name);

/*
 * vh_wait_state - GET state until it is @state (and @reason unless NULL),
 * up to VH_STATE_MS. Returns 0, or -ETIMEDOUT printing the last state seen.
 */
int vh_wait_state(struct vmctl_client *c, const char *name, const char *state, const char *reason);

/*
 * vh_destroy_all - destroy every running or paused domain (200, or 409
 * when it stopped on its own meanwhile) and undefine every domain (200),
 * for test ends. Returns 0 or the first failure.
 */
int vh_destroy_all(struct vh_daemon *d, struct vmctl_client *c);

/* vh_program_found - whether $@env (when @env is not NULL and the variable
 * is set and not empty) is executable, else whether @name is found on PATH:
 * the real-QEMU suites fail, never skip, when QEMU or qemu-img is missing. */
bool vh_program_found(const char *name, const char *env);

/* vh_json_str - the string at @key of @obj, or NULL. Borrowed. */
const char *vh_json_str(struct json_object *obj, const char *key);

/* vh_json_get - the member @key of @obj, or NULL. Borrowed. */
struct json_object *vh_json_get(struct json_object *obj, const char *key);

#endif /* MOOR_TESTS_VMD_HARNESS_H */
