/* SPDX-License-Identifier: MIT */
/*
 * vmd-test.h - a minimal struct vmd for tests that call the domain ops
 * directly: dirs under one temporary root, a loop thread, the domain
 * registry and an event bus; and helpers to read the ops' JSON and to
 * check that a QEMU pid is gone. Header-only, like test-util.h; include
 * after it.
 */
#ifndef MOOR_VMD_TEST_H
#define MOOR_VMD_TEST_H

#include <errno.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "domain.h"
#include "events.h"
#include "process.h"
#include "rmrf.h"
#include "store.h"
#include "vmd.h"

struct vt {
    struct vmd vmd;
    char root[64];
};

/* Every QEMU pid a test saw, SIGKILLed by vt_kill_leftovers() if a failed
 * test left one behind. */
static pid_t vt_pids[32];
static unsigned vt_npids;

static inline int64_t vt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline char *vt_path(const char *root, const char *leaf)
{
    size_t n = strlen(root) + strlen(leaf) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", root, leaf);
    return p;
}

/* A vmd on @root (NULL: a new temporary root). */
static inline void vt_init(struct vt *t, const char *root, unsigned qmp_timeout_ms)
{
    moor_error err = MOOR_ERROR_INIT;

    memset(t, 0, sizeof(*t));
    if (root) {
        snprintf(t->root, sizeof(t->root), "%s", root);
    } else {
        snprintf(t->root, sizeof(t->root), "/tmp/vmd-test-XXXXXX");
        assert_non_null(mkdtemp(t->root));
    }
    struct vmd_options *o = &t->vmd.opt;
    o->state_dir = vt_path(t->root, "state");
    o->runtime_dir = vt_path(t->root, "run");
    o->log_dir = vt_path(t->root, "log");
    o->qmp_timeout_ms = qmp_timeout_ms;
    o->job_timeout_ms = 10000;
    o->destroy_grace_ms = 1000;
    o->shutdown_ms = 1000;
    assert_int_equal(vmd_store_prepare(o, &err), 0);
    t->vmd.loop = moor_loop_new(&err);
    assert_non_null(t->vmd.loop);
    assert_int_equal(moor_loop_thread_start(t->vmd.loop, &err), 0);
    t->vmd.domains = moor_registry_new(&err);
    assert_non_null(t->vmd.domains);
    t->vmd.events = vmd_events_new(0);
    assert_non_null(t->vmd.events);
}

/* Tear the vmd down; QEMUs keep running (the daemon's exit). */
static inline void vt_fini(struct vt *t)
{
    vmd_domains_shutdown(&t->vmd);
    moor_unref(t->vmd.domains); /* waits for deferred releases */
    moor_loop_thread_stop(t->vmd.loop);
    moor_unref(t->vmd.loop);
    vmd_events_free(t->vmd.events);
    free(t->vmd.opt.state_dir);
    free(t->vmd.opt.runtime_dir);
    free(t->vmd.opt.log_dir);
}

static inline void vt_rmrf(const char *root)
{
    if (rmrf(root) < 0)
        fail_msg("removing %s: %s", root, strerror(errno));
}

/* The end of a test: tear down and remove the root. */
static inline void vt_done(struct vt *t)
{
    vt_fini(t);
    vt_rmrf(t->root);
}

static inline void vt_kill_leftovers(void)
{
    for (unsigned i = 0; i < vt_npids; i++) {
        if (kill(vt_pids[i], SIGKILL) == 0)
            fprintf(stderr, "vt: killed leftover QEMU pid %d\n", (int)vt_pids[i]);
        waitpid(vt_pids[i], NULL, WNOHANG);
    }
    vt_npids = 0;
}

/* Define a cheap QEMU domain (-machine none, tcg, 16 MiB). */
static inline vmd_domain *vt_define(struct vt *t, const char *name)
{
    struct vmd_domain_config cfg;
    moor_error err = MOOR_ERROR_INIT;
    struct json_object *out = NULL;
    char text[256];

    snprintf(text, sizeof(text),
             "{\"name\":\"%s\",\"machine\":\"none\",\"accel\":\"tcg\",\"memory_mib\":16}", name);
    struct json_object *o = json_tokener_parse(text);
    assert_int_equal(vmd_config_parse(o, &cfg, &err), 0);
    json_object_put(o);
    int rc = vmd_domain_define(&t->vmd, &cfg, &out, &err);
    if (rc < 0)
        fail_msg("define %s: %s", name, moor_error_message(&err));
    json_object_put(out);
    vmd_domain *d = vmd_domain_lookup(&t->vmd, name);
    assert_non_null(d);
    return d;
}

/* A string field of the info view. */
static inline void vt_field(struct vt *t, vmd_domain *d, const char *key, char *buf, size_t size)
{
    struct json_object *o = NULL, *v;
    moor_error err = MOOR_ERROR_INIT;

    assert_int_equal(vmd_domain_info(&t->vmd, d, &o, &err), 0);
    snprintf(buf, size, "%s",
             json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "");
    json_object_put(o);
}

#define vt_assert_state(t, d, st, why)                                                             \
    do {                                                                                           \
        char s_[32], r_[32];                                                                       \
        vt_field((t), (d), "state", s_, sizeof(s_));                                               \
        vt_field((t), (d), "reason", r_, sizeof(r_));                                              \
        if (strcmp(s_, (st)) || strcmp(r_, (why)))                                                 \
            fail_msg("domain is %s (%s), expected %s (%s)", s_, r_, (st), (why));                  \
    } while (0)

/* Wait (up to 5 s) until the domain is in @st: the loop thread applies
 * a QEMU exit a moment after the monitor's end of file fails the calls. */
static inline void vt_wait_state(struct vt *t, vmd_domain *d, const char *st)
{
    int64_t deadline = vt_now_ms() + 5000;
    char s[32];

    for (vt_field(t, d, "state", s, sizeof(s)); strcmp(s, st) != 0;
         vt_field(t, d, "state", s, sizeof(s))) {
        if (vt_now_ms() > deadline)
            fail_msg("domain still %s 5 s later, expected %s", s, st);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

/* The QEMU pid (0 when shut off); recorded for vt_kill_leftovers. */
static inline pid_t vt_pid(struct vt *t, vmd_domain *d)
{
    char buf[32];
    vt_field(t, d, "pid", buf, sizeof(buf));
    pid_t pid = (pid_t)atoi(buf);
    if (pid > 0 && vt_npids < 32)
        vt_pids[vt_npids++] = pid;
    return pid;
}

/* @pid has exited (reaped here if it is a zombie child), within 10 s. */
static inline void vt_assert_gone(pid_t pid)
{
    int64_t deadline = vt_now_ms() + 10000;
    for (;;) {
        pid_t w = waitpid(pid, NULL, WNOHANG);
        if (w == pid || (kill(pid, 0) < 0 && errno == ESRCH))
            return;
        if (vt_now_ms() > deadline)
            fail_msg("QEMU pid %d still alive 10 s after it should have gone", (int)pid);
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
}

/* SIGSTOP @pid and wait (up to 5 s) until /proc shows it stopped ('T'):
 * from then on it answers nothing. */
static inline void vt_freeze(pid_t pid)
{
    int64_t deadline = vt_now_ms() + 5000;
    char st = 0;

    assert_int_equal(kill(pid, SIGSTOP), 0);
    while (vmd_process_stat(pid, &st, NULL) == 0 && st != 'T') {
        if (vt_now_ms() > deadline)
            fail_msg("pid %d not stopped 5 s after SIGSTOP", (int)pid);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(st, 'T');
}

/* Whether the bus has published a lifecycle line with @text in it. */
static inline bool vt_event_seen(struct vt *t, const char *text)
{
    char buf[4096];
    uint64_t cursor = 0;
    ssize_t n;
    while ((n = vmd_events_read(t->vmd.events, &cursor, buf, sizeof(buf) - 1)) > 0) {
        buf[n] = '\0';
        if (strstr(buf, text))
            return true;
    }
    return false;
}

#endif /* MOOR_VMD_TEST_H */
