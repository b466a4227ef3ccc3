/* SPDX-License-Identifier: MIT */
/*
 * ops-double.c - a small, real, in-memory implementation of domain.h for
 * the HTTP side's tests: domains are lockable moor objects in vmd->domains;
 * "running" is a field; ops that would talk to QEMU pass a gate that a
 * test can close (block), poison (fail with a code) or observe (how many
 * callers are inside, and the peak).
 */
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <moor/object.h>

#include "domain.h"
#include "events.h"
#include "image.h"
#include "ops-double.h"

#define GATES        16
#define GATE_WAIT_MS 30000

struct vmd_domain {
    moor_lockable parent;
    char name[VMD_NAME_MAX + 1];
    moor_uuid uuid;
    uint64_t memory_mib;
    unsigned vcpus;
    const char *state; /* "shutoff", "running", "paused"; under the object mutex */
    const char *reason;
    bool tainted;
    /* A long job (save, restore): each GET of its info moves it a quarter on. */
    const char *job_kind;  /* NULL: none ran yet */
    unsigned job_quarters; /* 0..4; 4: over */
    char job_path[VMD_SAVE_PATH_MAX + 1];
};

/* ---- gates ---------------------------------------------------------------- */

struct gate {
    char name[VMD_NAME_MAX + 1];
    int fail;
    bool blocked;
    bool hung;           /* vmd_domain_fail_fast refuses QMP-first calls */
    unsigned generation; /* bumped by release and destroy */
    int release_code;    /* what blocked callers return when released */
    unsigned inside, waiting, peak;
};

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static struct gate gates[GATES];

static struct gate *gate_get(const char *name)
{
    struct gate *free_slot = NULL;

    for (int i = 0; i < GATES; i++) {
        if (gates[i].name[0] && strcmp(gates[i].name, name) == 0)
            return &gates[i];
        if (!gates[i].name[0] && !free_slot)
            free_slot = &gates[i];
    }
    if (free_slot)
        snprintf(free_slot->name, sizeof(free_slot->name), "%s", name);
    return free_slot;
}

static void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Enter an op on @dom: 0 to go on, or the code to fail with. */
static int gate_enter(vmd_domain *dom, moor_error *err)
{
    struct timespec deadline;
    int rc = 0;

    deadline_in(&deadline, GATE_WAIT_MS);
    pthread_mutex_lock(&gate_lock);
    struct gate *g = gate_get(dom->name);
    if (!g) {
        pthread_mutex_unlock(&gate_lock);
        return moor_error_set(err, -ENOMEM, "ops-double: out of gates");
    }
    g->inside++;
    if (g->inside > g->peak)
        g->peak = g->inside;
    unsigned gen = g->generation;
    if (g->blocked) {
        g->waiting++;
        pthread_cond_broadcast(&gate_cond);
        while (g->blocked && g->generation == gen && rc == 0)
            if (pthread_cond_timedwait(&gate_cond, &gate_lock, &deadline) == ETIMEDOUT)
                rc = moor_error_set(err, -ETIMEDOUT, "domain %s: the double's gate stayed shut",
                                    dom->name);
        g->waiting--;
        if (rc == 0 && g->generation != gen && g->release_code)
            rc = moor_error_set(err, g->release_code, "domain %s: QEMU went away during the call",
                                dom->name);
    }
    if (rc == 0 && g->fail)
        rc = moor_error_set(err, g->fail, "domain %s: failing as told (%s)", dom->name,
                            strerror(-g->fail));
    if (rc < 0)
        g->inside--;
    pthread_mutex_unlock(&gate_lock);
    return rc;
}

static void gate_leave(vmd_domain *dom)
{
    pthread_mutex_lock(&gate_lock);
    struct gate *g = gate_get(dom->name);
    if (g)
        g->inside--;
    pthread_mutex_unlock(&gate_lock);
}

static void gate_open(const char *name, int code)
{
    pthread_mutex_lock(&gate_lock);
    struct gate *g = gate_get(name);
    if (g) {
        g->blocked = false;
        g->generation++;
        g->release_code = code;
        pthread_cond_broadcast(&gate_cond);
    }
    pthread_mutex_unlock(&gate_lock);
}

void ops_double_fail(const char *name, int code)
{
    pthread_mutex_lock(&gate_lock);
    struct gate *g = gate_get(name);
    if (g)
        g->fail = code;
    pthread_mutex_unlock(&gate_lock);
}

void ops_double_hang(const char *name, bool hung)
{
    pthread_mutex_lock(&gate_lock);
    struct gate *g = gate_get(name);
    if (g)
        g->hung = hung;
    pthread_mutex_unlock(&gate_lock);
}

int vmd_domain_fail_fast(vmd_domain *dom, const char *api, moor_error *err)
{
    static const char *const qmp_first[] = {"stats", "suspend",  "resume", "reset",
                                            "qmp",   "shutdown", "save"};
    bool hung = false;

    pthread_mutex_lock(&gate_lock);
    for (int i = 0; i < GATES; i++)
        if (gates[i].name[0] && strcmp(gates[i].name, vmd_domain_name(dom)) == 0)
            hung = gates[i].hung;
    pthread_mutex_unlock(&gate_lock);
    for (size_t i = 0; hung && i < sizeof(qmp_first) / sizeof(qmp_first[0]); i++)
        if (!strcmp(api, qmp_first[i]))
            return moor_error_set(err, -ETIMEDOUT,
                                  "domain %s: %s: QEMU has not answered query-status for 0 s",
                                  vmd_domain_name(dom), api);
    return 0;
}

void ops_double_block(const char *name)
{
    pthread_mutex_lock(&gate_lock);
    struct gate *g = gate_get(name);
    if (g)
        g->blocked = true;
    pthread_mutex_unlock(&gate_lock);
}

void ops_double_release(const char *name)
{
    gate_open(name, 0);
}

unsigned ops_double_wait_blocked(const char *name, unsigned n, int timeout_ms)
{
    struct timespec deadline;
    unsigned got = 0;

    deadline_in(&deadline, timeout_ms);
    pthread_mutex_lock(&gate_lock);
    struct gate *g = gate_get(name);
    while (g && (got = g->waiting) < n)
        if (pthread_cond_timedwait(&gate_cond, &gate_lock, &deadline) == ETIMEDOUT) {
            got = g->waiting;
            break;
        }
    pthread_mutex_unlock(&gate_lock);
    return got;
}

unsigned ops_double_peak(const char *name)
{
    pthread_mutex_lock(&gate_lock);
    struct gate *g = gate_get(name);
    unsigned peak = g ? g->peak : 0;
    pthread_mutex_unlock(&gate_lock);
    return peak;
}

void ops_double_reset(void)
{
    pthread_mutex_lock(&gate_lock);
    memset(gates, 0, sizeof(gates));
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

/* ---- configs -------------------------------------------------------------- */

static bool name_valid(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > VMD_NAME_MAX)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return false;
    return true;
}

static int int_field(struct json_object *v, const char *key, int64_t min, int64_t max, int64_t *out,
                     moor_error *err)
{
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < min ||
        json_object_get_int64(v) > max)
        return moor_error_set(err, -EINVAL, "\"%s\" must be an integer in %lld..%lld", key,
                              (long long)min, (long long)max);
    *out = json_object_get_int64(v);
    return 0;
}

int vmd_config_parse(struct json_object *json, struct vmd_domain_config *out, moor_error *err)
{
    struct vmd_domain_config cfg = {.memory_mib = 128, .vcpus = 1};
    bool have_uuid = false, have_name = false;
    int64_t v;
    int rc = 0;

    json_object_object_foreach(json, key, val)
    {
        if (rc < 0)
            break;
        if (strcmp(key, "name") == 0) {
            const char *s = json_object_get_string(val);
            if (!json_object_is_type(val, json_type_string) || !name_valid(s))
                rc = moor_error_set(err, -EINVAL, "\"name\" must match [A-Za-z0-9._-]{1,64}");
            else
                snprintf(cfg.name, sizeof(cfg.name), "%s", s);
            have_name = true;
        } else if (strcmp(key, "uuid") == 0) {
            rc = json_object_is_type(val, json_type_string)
                     ? moor_uuid_parse(json_object_get_string(val), &cfg.uuid, err)
                     : moor_error_set(err, -EINVAL, "\"uuid\" must be a string");
            have_uuid = true;
        } else if (strcmp(key, "memory_mib") == 0) {
            rc = int_field(val, key, 1, 1048576, &v, err);
            cfg.memory_mib = (uint64_t)v;
        } else if (strcmp(key, "vcpus") == 0) {
            rc = int_field(val, key, 1, 64, &v, err);
            cfg.vcpus = (unsigned)v;
        } else {
            rc = moor_error_set(err, -EINVAL, "unknown field \"%.64s\"", key);
        }
    }
    if (rc == 0 && !have_name)
        rc = moor_error_set(err, -EINVAL, "\"name\" is required");
    if (rc == 0 && !have_uuid)
        rc = moor_uuid_generate(&cfg.uuid, err);
    if (rc < 0)
        return rc;
    *out = cfg;
    return 0;
}

struct json_object *vmd_config_to_json(const struct vmd_domain_config *cfg)
{
    char uuid[MOOR_UUID_STRING_SIZE];
    struct json_object *o = json_object_new_object();

    if (!o)
        return NULL;
    json_object_object_add(o, "name", json_object_new_string(cfg->name));
    json_object_object_add(o, "uuid", json_object_new_string(moor_uuid_format(&cfg->uuid, uuid)));
    json_object_object_add(o, "memory_mib", json_object_new_int64((int64_t)cfg->memory_mib));
    json_object_object_add(o, "vcpus", json_object_new_int64(cfg->vcpus));
    return o;
}

void vmd_config_clear(struct vmd_domain_config *cfg)
{
    if (!cfg)
        return;
    for (unsigned i = 0; i < cfg->n_extra_args; i++)
        free(cfg->extra_args[i]);
    free(cfg->extra_args);
    free(cfg->emulator);
    memset(cfg, 0, sizeof(*cfg));
}

/* ---- domains -------------------------------------------------------------- */

static const moor_class *domain_class;
static pthread_once_t class_once = PTHREAD_ONCE_INIT;

static void class_init(void)
{
    domain_class = moor_class_new("vmd_domain_double", moor_lockable_class(),
                                  sizeof(struct vmd_domain), NULL, NULL);
}

int vmd_domains_load(struct vmd *vmd, moor_error *err)
{
    (void)vmd;
    pthread_once(&class_once, class_init);
    return domain_class ? 0 : moor_error_set(err, -ENOMEM, "no domain class");
}

void vmd_domains_shutdown(struct vmd *vmd)
{
    void **all = NULL;

    if (moor_registry_collect(vmd->domains, NULL, NULL, &all, NULL) < 0)
        return;
    for (void **p = all; *p; p++)
        moor_registry_remove(vmd->domains, *p, NULL);
    moor_registry_array_free(all);
}

vmd_domain *vmd_domain_lookup(struct vmd *vmd, const char *name_or_uuid)
{
    moor_uuid uuid;

    if (moor_uuid_parse(name_or_uuid, &uuid, NULL) == 0)
        return moor_registry_find_uuid(vmd->domains, &uuid);
    return moor_registry_find_name(vmd->domains, name_or_uuid);
}

const moor_uuid *vmd_domain_uuid(vmd_domain *dom)
{
    return &dom->uuid;
}

const char *vmd_domain_name(vmd_domain *dom)
{
    return dom->name;
}

/* Under @dom's mutex. */
static struct json_object *state_json(vmd_domain *dom)
{
    char uuid[MOOR_UUID_STRING_SIZE];
    struct json_object *o = json_object_new_object();

    if (!o)
        return NULL;
    json_object_object_add(o, "name", json_object_new_string(dom->name));
    json_object_object_add(o, "uuid", json_object_new_string(moor_uuid_format(&dom->uuid, uuid)));
    json_object_object_add(o, "state", json_object_new_string(dom->state));
    json_object_object_add(o, "reason", json_object_new_string(dom->reason));
    json_object_object_add(o, "tainted", json_object_new_boolean(dom->tainted));
    return o;
}

static int answer(vmd_domain *dom, struct json_object **out, moor_error *err)
{
    moor_lock(dom);
    struct json_object *o = state_json(dom);
    moor_unlock(dom);
    if (!o)
        return moor_error_set(err, -ENOMEM, "no memory");
    *out = o;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(vmd_domain *const *)a)->name, (*(vmd_domain *const *)b)->name);
}

int vmd_domain_list(struct vmd *vmd, struct json_object **out, moor_error *err)
{
    void **all = NULL;
    int n = moor_registry_collect(vmd->domains, NULL, NULL, &all, err);

    if (n < 0)
        return n;
    qsort(all, (size_t)n, sizeof(*all), by_name);
    struct json_object *arr = json_object_new_array();
    for (int i = 0; i < n; i++) {
        moor_lock(all[i]);
        json_object_array_add(arr, state_json(all[i]));
        moor_unlock(all[i]);
    }
    moor_registry_array_free(all);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "domains", arr);
    *out = o;
    return 0;
}

static void publish(struct vmd *vmd, vmd_domain *dom, const char *state, const char *reason)
{
    struct json_object *data = json_object_new_object();

    json_object_object_add(data, "state", json_object_new_string(state));
    json_object_object_add(data, "reason", json_object_new_string(reason));
    vmd_events_publish(vmd->events, "lifecycle", dom->name, data);
}

int vmd_domain_define(struct vmd *vmd, struct vmd_domain_config *cfg, struct json_object **out,
                      moor_error *err)
{
    pthread_once(&class_once, class_init);
    moor_autounref vmd_domain *dom = moor_object_new(domain_class);
    if (!dom) {
        vmd_config_clear(cfg);
        return moor_error_set(err, -ENOMEM, "no memory for a domain");
    }
    memcpy(dom->name, cfg->name, sizeof(dom->name));
    dom->uuid = cfg->uuid;
    dom->memory_mib = cfg->memory_mib;
    dom->vcpus = cfg->vcpus;
    dom->state = "shutoff";
    dom->reason = "defined";
    vmd_config_clear(cfg);
    int rc = moor_registry_add(vmd->domains, dom, &dom->uuid, dom->name, err);
    if (rc < 0)
        return rc;
    publish(vmd, dom, "shutoff", "defined");
    return answer(dom, out, err);
}

int vmd_domain_info(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    (void)vmd;
    return answer(dom, out, err);
}

int vmd_domain_state(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    (void)vmd;
    return answer(dom, out, err);
}

int vmd_domain_undefine(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    int rc = gate_enter(dom, err);
    if (rc < 0)
        return rc;
    moor_lock(dom);
    bool off = strcmp(dom->state, "shutoff") == 0;
    moor_unlock(dom);
    if (!off)
        rc = moor_error_set(err, -EBUSY, "domain %s is %s: undefine needs it shut off", dom->name,
                            dom->state);
    else
        rc = moor_registry_remove(vmd->domains, dom, err);
    if (rc == 0)
        rc = answer(dom, out, err);
    gate_leave(dom);
    return rc == -ENOENT ? moor_error_set(err, -ENOENT, "no domain %s", dom->name) : rc;
}

/* An op that needs QEMU: gate, state check, change, event. */
static int qemu_op(struct vmd *vmd, vmd_domain *dom, const char *api, const char *need,
                   const char *state, const char *reason, struct json_object **out, moor_error *err)
{
    int rc = gate_enter(dom, err);
    if (rc < 0)
        return rc;
    moor_lock(dom);
    bool ok = need ? strcmp(dom->state, need) == 0 : strcmp(dom->state, "shutoff") != 0;
    const char *was = dom->state;
    if (ok && state) {
        dom->state = state;
        dom->reason = reason;
    }
    moor_unlock(dom);
    if (!ok)
        rc = need && strcmp(need, "shutoff") == 0
                 ? moor_error_set(err, -EBUSY, "domain %s is %s: %s needs it shut off", dom->name,
                                  was, api)
                 : moor_error_set(err, -ENOTCONN, "domain %s is %s: %s needs it running", dom->name,
                                  was, api);
    if (ok && state)
        publish(vmd, dom, state, reason);
    if (ok)
        rc = answer(dom, out, err);
    gate_leave(dom);
    return rc;
}

int vmd_domain_stats(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    return qemu_op(vmd, dom, "stats", NULL, NULL, NULL, out, err);
}

int vmd_domain_start(struct vmd *vmd, vmd_domain *dom, bool paused, struct json_object **out,
                     moor_error *err)
{
    return qemu_op(vmd, dom, "start", "shutoff", paused ? "paused" : "running",
                   paused ? "starting" : "booted", out, err);
}

int vmd_domain_shutdown(struct vmd *vmd, vmd_domain *dom, unsigned timeout_ms,
                        struct json_object **out, moor_error *err)
{
    (void)timeout_ms;
    return qemu_op(vmd, dom, "shutdown", NULL, "shutoff", "shutdown", out, err);
}

int vmd_domain_suspend(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    return qemu_op(vmd, dom, "suspend", "running", "paused", "user", out, err);
}

int vmd_domain_resume(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    return qemu_op(vmd, dom, "resume", "paused", "running", "resumed", out, err);
}

int vmd_domain_reset(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    return qemu_op(vmd, dom, "reset", NULL, NULL, NULL, out, err);
}

int vmd_domain_qmp(struct vmd *vmd, vmd_domain *dom, const char *execute,
                   struct json_object *arguments, struct json_object **out, moor_error *err)
{
    (void)vmd;
    int rc = gate_enter(dom, err);
    if (rc < 0)
        return rc;
    moor_lock(dom);
    bool running = strcmp(dom->state, "shutoff") != 0;
    if (running)
        dom->tainted = true;
    moor_unlock(dom);
    gate_leave(dom);
    if (!running)
        return moor_error_set(err, -ENOTCONN, "domain %s is not running: no QEMU for %s", dom->name,
                              execute);
    struct json_object *o = json_object_new_object();
    struct json_object *ret = json_object_new_object();
    json_object_object_add(ret, "execute", json_object_new_string(execute));
    if (arguments)
        json_object_object_add(ret, "arguments", json_object_get(arguments));
    json_object_object_add(o, "return", ret);
    *out = o;
    return 0;
}

/* Never gated: it is what frees the callers stuck on a hung domain. */
int vmd_domain_destroy(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    moor_lock(dom);
    bool running = strcmp(dom->state, "shutoff") != 0;
    dom->state = "shutoff";
    dom->reason = "destroyed";
    moor_unlock(dom);
    gate_open(dom->name, -EPIPE);
    if (running)
        publish(vmd, dom, "shutoff", "destroyed");
    return answer(dom, out, err);
}

int vmd_domains_debug(struct vmd *vmd, struct json_object *into, moor_error *err)
{
    moor_census_entry entries[32];
    size_t n = moor_census(entries, 32);
    struct json_object *census = json_object_new_object();

    (void)vmd;
    if (!census)
        return moor_error_set(err, -ENOMEM, "no memory");
    for (size_t i = 0; i < n && i < 32; i++)
        json_object_object_add(census, entries[i].class_name,
                               json_object_new_int64((int64_t)entries[i].live));
    json_object_object_add(into, "census", census);
    json_object_object_add(into, "jobs", json_object_new_array());
    json_object_object_add(into, "monitors", json_object_new_array());
    return 0;
}

/* ---- long jobs: a save or restore that advances by a quarter per GET job ---- */

#define DOUBLE_JOB_BYTES (64u * 1024u * 1024u)

/* Under @dom's mutex. */
static struct json_object *job_json(vmd_domain *dom)
{
    struct json_object *o = json_object_new_object(), *j = json_object_new_object();
    uint64_t done = (uint64_t)DOUBLE_JOB_BYTES / 4 * dom->job_quarters;
    bool active = dom->job_kind && dom->job_quarters < 4;

    json_object_object_add(o, "name", json_object_new_string(dom->name));
    json_object_object_add(o, "state", json_object_new_string(dom->state));
    json_object_object_add(o, "reason", json_object_new_string(dom->reason));
    json_object_object_add(o, "active", json_object_new_boolean(active));
    json_object_object_add(j, "kind", json_object_new_string(dom->job_kind ? dom->job_kind : ""));
    json_object_object_add(j, "phase", json_object_new_string(active ? "transfer" : "finish"));
    json_object_object_add(j, "path", json_object_new_string(dom->job_path));
    json_object_object_add(j, "bytes_done", json_object_new_int64((int64_t)done));
    json_object_object_add(j, "bytes_total", json_object_new_int64(DOUBLE_JOB_BYTES));
    json_object_object_add(j, "percent", json_object_new_double(25.0 * dom->job_quarters));
    json_object_object_add(j, "rate_bytes_s", json_object_new_int64(DOUBLE_JOB_BYTES / 4));
    json_object_object_add(j, "elapsed_ms", json_object_new_int64(1000 * dom->job_quarters));
    if (active) {
        json_object_object_add(j, "remaining_ms",
                               json_object_new_int64(1000 * (4 - dom->job_quarters)));
        json_object_object_add(o, "job", j);
        json_object_object_add(o, "last", NULL);
    } else {
        json_object_object_add(j, "result", json_object_new_string("completed"));
        json_object_object_add(o, "job", NULL);
        json_object_object_add(o, "last", dom->job_kind ? j : NULL);
        if (!dom->job_kind)
            json_object_put(j);
    }
    return o;
}

static int job_answer(vmd_domain *dom, struct json_object **out, moor_error *err)
{
    struct json_object *o = job_json(dom);
    moor_unlock(dom);
    if (!o)
        return moor_error_set(err, -ENOMEM, "no memory");
    *out = o;
    return 0;
}

/* ---- images (image.h): the double has an empty pool ------------------------- */

bool vmd_config_name_ok(const char *name)
{
    size_t len = strlen(name);

    return len >= 1 && len <= VMD_NAME_MAX && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 &&
           strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == len;
}

int vmd_images_load(struct vmd *vmd, moor_error *err)
{
    (void)vmd;
    (void)err;
    return 0;
}

void vmd_images_shutdown(struct vmd *vmd)
{
    (void)vmd;
}

vmd_image *vmd_image_lookup(struct vmd *vmd, const char *name)
{
    (void)vmd;
    (void)name;
    return NULL;
}

const char *vmd_image_name(vmd_image *img)
{
    (void)img;
    return "";
}

const moor_uuid *vmd_image_uuid(vmd_image *img)
{
    (void)img;
    return NULL;
}

int vmd_image_list(struct vmd *vmd, struct json_object **out, moor_error *err)
{
    struct json_object *o = json_object_new_object();

    (void)vmd;
    if (!o)
        return moor_error_set(err, -ENOMEM, "out of memory");
    json_object_object_add(o, "images", json_object_new_array());
    *out = o;
    return 0;
}

int vmd_domain_save(struct vmd *vmd, vmd_domain *dom, const struct vmd_longjob_args *args,
                    struct json_object **out, moor_error *err)
{
    (void)vmd;
    moor_lock(dom);
    if (strcmp(dom->state, "shutoff") == 0) {
        moor_unlock(dom);
        return moor_error_set(err, -ENOTCONN, "domain %s is not running: save needs it running",
                              dom->name);
    }
    if (dom->job_kind && dom->job_quarters < 4) {
        moor_unlock(dom);
        return moor_error_set(err, -EBUSY, "domain %s: save refused: a %s job runs", dom->name,
                              dom->job_kind);
    }
    dom->job_kind = "save";
    dom->job_quarters = 0;
    snprintf(dom->job_path, sizeof(dom->job_path), "%s", args->path);
    dom->state = "paused";
    dom->reason = "saving";
    return job_answer(dom, out, err);
}

/* A backup: a job like a save's that leaves the state alone; the target
 * is its path. */
int vmd_domain_backup(struct vmd *vmd, vmd_domain *dom, const struct vmd_longjob_args *args,
                      struct json_object **out, moor_error *err)
{
    (void)vmd;
    moor_lock(dom);
    if (strcmp(dom->state, "shutoff") == 0) {
        moor_unlock(dom);
        return moor_error_set(err, -ENOTCONN, "domain %s is not running: backup needs it running",
                              dom->name);
    }
    if (dom->job_kind && dom->job_quarters < 4) {
        moor_unlock(dom);
        return moor_error_set(err, -EBUSY, "domain %s: backup refused: a %s job runs", dom->name,
                              dom->job_kind);
    }
    dom->job_kind = "backup";
    dom->job_quarters = 0;
    snprintf(dom->job_path, sizeof(dom->job_path), "%s", args->target);
    return job_answer(dom, out, err);
}

int vmd_domain_restore(struct vmd *vmd, const struct vmd_longjob_args *args,
                       struct json_object **out, moor_error *err)
{
    void **objs;
    int n = moor_registry_collect(vmd->domains, NULL, NULL, &objs, err);
    vmd_domain *dom = NULL;

    if (n < 0)
        return n;
    for (int i = 0; i < n && !dom; i++) {
        vmd_domain *d = objs[i];
        moor_lock(d);
        if (d->job_kind && strcmp(d->job_path, args->path) == 0)
            dom = moor_ref(d);
        moor_unlock(d);
    }
    moor_registry_array_free(objs);
    if (!dom)
        return moor_error_set(err, -ENOENT, "restore: cannot open %s: no such file", args->path);
    moor_lock(dom);
    dom->job_kind = "restore";
    dom->job_quarters = 0;
    dom->state = "paused";
    dom->reason = "restoring";
    int rc = job_answer(dom, out, err);
    moor_unref(dom);
    return rc;
}

int vmd_domain_job(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    (void)vmd;
    moor_lock(dom);
    if (dom->job_kind && dom->job_quarters < 4 && ++dom->job_quarters == 4 &&
        strcmp(dom->job_kind, "backup") != 0) {
        bool save = strcmp(dom->job_kind, "save") == 0;
        dom->state = save ? "shutoff" : "running";
        dom->reason = save ? "saved" : "restored";
    }
    return job_answer(dom, out, err);
}

int vmd_domain_abort(struct vmd *vmd, vmd_domain *dom, struct json_object **out, moor_error *err)
{
    (void)vmd;
    moor_lock(dom);
    if (!dom->job_kind || dom->job_quarters >= 4) {
        moor_unlock(dom);
        return moor_error_set(err, -ENOENT, "domain %s has no job to abort", dom->name);
    }
    dom->job_quarters = 4;
    if (strcmp(dom->job_kind, "backup") != 0) {
        dom->state = strcmp(dom->job_kind, "save") == 0 ? "running" : "shutoff";
        dom->reason = "resumed";
    }
    return job_answer(dom, out, err);
}

void vmd_longjobs_drain(struct vmd *vmd)
{
    (void)vmd;
}

int vmd_image_create(struct vmd *vmd, const struct vmd_image_create *req, struct json_object **out,
                     moor_error *err)
{
    (void)vmd;
    (void)out;
    /* 404, a documented status (fuzz-api allows no 500 behind the double) */
    return moor_error_set(err, -ENOENT, "the double has no image pool (%s)", req->name);
}

/* Unreachable: lookup never finds an image. */
int vmd_image_info(struct vmd *vmd, vmd_image *img, struct json_object **out, moor_error *err)
{
    (void)vmd;
    (void)img;
    (void)out;
    return moor_error_set(err, -ENOTSUP, "the double has no image pool");
}

int vmd_image_delete(struct vmd *vmd, vmd_image *img, struct json_object **out, moor_error *err)
{
    return vmd_image_info(vmd, img, out, err);
}

int vmd_image_resize(struct vmd *vmd, vmd_image *img, uint64_t size_mib, struct json_object **out,
                     moor_error *err)
{
    (void)size_mib;
    return vmd_image_info(vmd, img, out, err);
}
