/* SPDX-License-Identifier: MIT */
/*
 * stress-images.c - a real moor-vmd (real qemu-img, fake QEMU) under
 * THREADS clients (default 8) racing, for MOOR_STRESS_SECONDS, image
 * create (qcow2, raw, overlays on random images), delete and resize with
 * domain define (one or two random disks) and undefine, start and destroy,
 * backups of a running domain's disk into one of the image names (so a
 * target races creates and deletes of that name), saves, aborts of either
 * and removals of the save files, over 8 image names and 8 domain names.
 *
 * Every answer must have a status the API documents for that call and a
 * well-formed body. About every 300 ms the clients pause (a rwlock: each
 * call holds it shared, the check exclusive) and the pool is checked
 * against the domains and the disk: every disk of every defined domain and
 * every overlay's backing is an image of the pool, and the files in
 * <state>/images are exactly the pool's images (a backup target that its
 * job is deleting on its own thread meanwhile, after a failure or an
 * abort, may have lost its file already: it shows the job's hold or the
 * delete's block). So no image is ever
 * deleted while referenced or blocked. At the end everything is undefined
 * and deleted, the pool directory must be empty, and the daemon must exit
 * 0 on SIGTERM: it does only with its live-object census at zero (no
 * image or domain object leaked).
 */
#define _GNU_SOURCE
#define STRESS_PROG "stress-images"
#include "stress-util.h"

#include <dirent.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define SI_IMAGES        8
#define SI_DOMAINS       8
#define SI_MAX_THREADS   32
#define SI_CHECK_MS      300
#define SI_DELETE_ROUNDS 250

enum si_op {
    SI_CREATE,
    SI_DELETE,
    SI_RESIZE,
    SI_DEFINE,
    SI_UNDEFINE,
    SI_START,
    SI_DESTROY,
    SI_BACKUP,
    SI_SAVE,
    SI_ABORT,
    SI_UNLINK_SAVE,
    SI_NOPS
};

static struct vh_daemon si_daemon;
static pthread_rwlock_t si_pause; /* writer-preferring: the check is not starved */
static atomic_ulong si_calls, si_checks, si_by_status[600], si_backups, si_saves;

static bool si_status_ok(enum si_op op, long status)
{
    switch (op) {
    case SI_CREATE:
        return status == 201 || status == 404 || status == 409 || status == 503;
    case SI_DELETE:
    case SI_UNDEFINE:
        return status == 200 || status == 404 || status == 409 || status == 503;
    case SI_DEFINE:
        return status == 201 || status == 404 || status == 409 || status == 503;
    case SI_BACKUP:
    case SI_SAVE:
        return status == 202 || status == 404 || status == 409 || status == 502 || status == 503 ||
               status == 504;
    case SI_RESIZE:
        return status == 200 || status == 400 || status == 404 || status == 409 || status == 502 ||
               status == 503 || status == 504;
    default:
        return status == 200 || status == 404 || status == 409 || status == 502 || status == 503 ||
               status == 504;
    }
}

static void si_call(struct vmctl_client *c, unsigned *seed)
{
    enum si_op op = (enum si_op)(rand_r(seed) % SI_NOPS);
    char img[16], other[16], dom[16], bk[16], path[128], body[PATH_MAX + 256] = "";
    const char *method = "POST";
    struct vmctl_response r;

    snprintf(img, sizeof(img), "i%d", rand_r(seed) % SI_IMAGES);
    snprintf(other, sizeof(other), "i%d", rand_r(seed) % SI_IMAGES);
    snprintf(dom, sizeof(dom), "d%d", rand_r(seed) % SI_DOMAINS);
    snprintf(bk, sizeof(bk), "b%d", rand_r(seed) % 4);
    switch (op) {
    case SI_CREATE:
        snprintf(path, sizeof(path), "/v1/images");
        if (rand_r(seed) % 3 == 0 && strcmp(img, other) != 0)
            snprintf(body, sizeof(body), "{\"name\":\"%s\",\"backing\":\"%s\"}", img, other);
        else
            snprintf(body, sizeof(body), "{\"name\":\"%s\",\"format\":\"%s\",\"size_mib\":%d}", img,
                     rand_r(seed) % 2 ? "qcow2" : "raw", 1 + rand_r(seed) % 16);
        break;
    case SI_DELETE: /* a pool image, or a backup's (see SI_BACKUP) */
        method = "DELETE";
        snprintf(path, sizeof(path), "/v1/images/%s", rand_r(seed) % 3 ? img : bk);
        break;
    case SI_RESIZE:
        snprintf(path, sizeof(path), "/v1/images/%s/resize", img);
        snprintf(body, sizeof(body), "{\"size_mib\":%d}", 1 + rand_r(seed) % 32);
        break;
    case SI_DEFINE:
        snprintf(path, sizeof(path), "/v1/domains");
        if (strcmp(img, other) != 0 && rand_r(seed) % 2)
            snprintf(body, sizeof(body),
                     "{\"name\":\"%s\",\"emulator\":\"%s\",\"machine\":\"none\",\"memory_mib\":16,"
                     "\"disks\":[{\"image\":\"%s\",\"readonly\":%s},{\"image\":\"%s\","
                     "\"readonly\":true}]}",
                     dom, si_daemon.fake_qemu, img, rand_r(seed) % 2 ? "true" : "false", other);
        else
            snprintf(body, sizeof(body),
                     "{\"name\":\"%s\",\"emulator\":\"%s\",\"machine\":\"none\",\"memory_mib\":16,"
                     "\"disks\":[{\"image\":\"%s\",\"readonly\":%s}]}",
                     dom, si_daemon.fake_qemu, img, rand_r(seed) % 2 ? "true" : "false");
        break;
    case SI_UNDEFINE:
        method = "DELETE";
        snprintf(path, sizeof(path), "/v1/domains/%s", dom);
        break;
    case SI_START:
    case SI_DESTROY:
        snprintf(path, sizeof(path), "/v1/domains/%s/%s", dom,
                 op == SI_START ? "start" : "destroy");
        break;
    case SI_BACKUP:
        snprintf(path, sizeof(path), "/v1/domains/%s/backup", dom);
        /* into a name of its own (b0..b3), or one that creates race for */
        snprintf(body, sizeof(body), "{\"target\":\"%s\",\"bandwidth_mib_s\":%d}",
                 rand_r(seed) % 4 ? bk : other, 8 + rand_r(seed) % 56);
        break;
    case SI_SAVE:
        snprintf(path, sizeof(path), "/v1/domains/%s/save", dom);
        snprintf(body, sizeof(body), "{\"path\":\"%s/%s.save\"}", si_daemon.root, dom);
        break;
    case SI_ABORT:
        method = "DELETE";
        snprintf(path, sizeof(path), "/v1/domains/%s/job", dom);
        break;
    case SI_UNLINK_SAVE: /* so that saves go on (one never overwrites) */
        snprintf(path, sizeof(path), "%s/%s.save", si_daemon.root, dom);
        unlink(path);
        return;
    default:
        return;
    }
    pthread_rwlock_rdlock(&si_pause);
    int rc = vh_call(c, &r, method, path, *body ? "%s" : NULL, body);
    pthread_rwlock_unlock(&si_pause);
    if (rc != 0) {
        fail("%s %s: no answer (see above)", method, path);
        return;
    }
    atomic_fetch_add_explicit(&si_calls, 1, memory_order_relaxed); /* a tally */
    if (r.status >= 100 && r.status < 600)
        atomic_fetch_add_explicit(&si_by_status[r.status], 1, memory_order_relaxed); /* tally */
    if (!si_status_ok(op, r.status))
        fail("%s %s %s: undocumented status %ld: %s", method, path, body, r.status, r.body);
    else if (r.status >= 300 && (!r.error_code || !r.error_message || !*r.error_message))
        fail("%s %s: %ld with a bad error object: %s", method, path, r.status, r.body);
    else if (r.status == 202) /* a tally */
        atomic_fetch_add_explicit(op == SI_BACKUP ? &si_backups : &si_saves, 1,
                                  memory_order_relaxed);
    else if (op == SI_START && r.status == 200 && vh_json_get(r.json, "pid"))
        vh_note_pid(&si_daemon, (pid_t)json_object_get_int(vh_json_get(r.json, "pid")));
    vmctl_response_clear(&r);
}

/* ---- the consistency check (clients paused) ------------------------------- */

static bool si_in(json_object *images, const char *name)
{
    for (size_t i = 0; i < json_object_array_length(images); i++)
        if (strcmp(vh_json_str(json_object_array_get_idx(images, i), "name"), name) == 0)
            return true;
    return false;
}

/* Whether @img may have lost its file while the clients are paused: a
 * backup's target, which its job deletes on its own thread. */
static bool si_going(json_object *img)
{
    json_object *blocks = vh_json_get(img, "blocks");

    for (size_t i = 0; blocks && i < json_object_array_length(blocks); i++) {
        const char *why = vh_json_str(json_object_array_get_idx(blocks, i), "reason");
        if (why && (strstr(why, "target of the backup job") || strstr(why, "being deleted")))
            return true;
    }
    return false;
}

/* The files of the pool directory vs the pool's images. */
static void si_check_files(json_object *images)
{
    char dir[PATH_MAX + 16], file[PATH_MAX + 96];
    struct dirent *e;
    size_t files = 0, going = 0;

    snprintf(dir, sizeof(dir), "%s/images", si_daemon.state_dir);
    DIR *d = opendir(dir);
    if (!d) {
        fail("cannot read %s", dir);
        return;
    }
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        files++;
        if (!si_in(images, e->d_name))
            fail("file %s/%s is in the pool directory but not in the pool", dir, e->d_name);
    }
    closedir(d);
    for (size_t i = 0; i < json_object_array_length(images); i++) {
        json_object *img = json_object_array_get_idx(images, i);
        snprintf(file, sizeof(file), "%s/%s", dir, vh_json_str(img, "name"));
        if (access(file, F_OK) == 0)
            continue;
        if (!si_going(img))
            fail("image %s is in the pool but its file is gone", vh_json_str(img, "name"));
        going++;
    }
    if (files + going != json_object_array_length(images))
        fail("%zu files in the pool directory, %zu images in the pool", files,
             json_object_array_length(images));
}

static void si_check(struct vmctl_client *c)
{
    struct vmctl_response ri, rd;

    if (vh_expect(c, 200, &ri, "GET", "/v1/images", NULL) != 0)
        return fail("GET /v1/images");
    if (vh_expect(c, 200, &rd, "GET", "/v1/domains", NULL) != 0) {
        vmctl_response_clear(&ri);
        return fail("GET /v1/domains");
    }
    json_object *images = vh_json_get(ri.json, "images"), *doms = vh_json_get(rd.json, "domains");
    for (size_t i = 0; i < json_object_array_length(images); i++) {
        const char *b = vh_json_str(json_object_array_get_idx(images, i), "backing");
        if (b && !si_in(images, b))
            fail("image %s: its backing %s was deleted",
                 vh_json_str(json_object_array_get_idx(images, i), "name"), b);
    }
    for (size_t i = 0; i < json_object_array_length(doms); i++) {
        const char *name = vh_json_str(json_object_array_get_idx(doms, i), "name");
        char path[96];
        struct vmctl_response info;

        snprintf(path, sizeof(path), "/v1/domains/%s", name);
        if (vh_expect(c, 200, &info, "GET", path, NULL) != 0) {
            fail("GET %s", path);
            continue;
        }
        json_object *disks = vh_json_get(vh_json_get(info.json, "config"), "disks");
        for (size_t k = 0; k < json_object_array_length(disks); k++) {
            const char *img = vh_json_str(json_object_array_get_idx(disks, k), "image");
            if (!si_in(images, img))
                fail("domain %s: its disk image %s was deleted", name, img);
        }
        vmctl_response_clear(&info);
    }
    si_check_files(images);
    atomic_fetch_add_explicit(&si_checks, 1, memory_order_relaxed); /* a tally */
    vmctl_response_clear(&ri);
    vmctl_response_clear(&rd);
}

/* ---- threads --------------------------------------------------------------- */

struct si_thread {
    pthread_t tid;
    unsigned seed;
    struct timespec end;
};

static void *si_worker(void *arg)
{
    struct si_thread *t = arg;
    struct vmctl_client *c = vh_client_new(&si_daemon);

    if (!c) {
        fail("no client");
        return NULL;
    }
    while (!atomic_load(&stress_stop) && !stress_past(&t->end))
        si_call(c, &t->seed);
    vmctl_client_free(c);
    return NULL;
}

/* Delete every image: overlays go first, so a few rounds are needed, and
 * a backup target goes when its job (failing: its QEMU was destroyed)
 * notices, within a poll period: the rounds are 20 ms apart, 5 s in all. */
static void si_delete_all(struct vmctl_client *c)
{
    for (int round = 0; round < SI_DELETE_ROUNDS; round++) {
        if (round)
            poll(NULL, 0, 20);
        struct vmctl_response r;
        size_t n;

        if (vh_expect(c, 200, &r, "GET", "/v1/images", NULL) != 0)
            return fail("GET /v1/images");
        json_object *images = vh_json_get(r.json, "images");
        n = json_object_array_length(images);
        for (size_t i = 0; i < n; i++) {
            char path[96];
            struct vmctl_response d;

            snprintf(path, sizeof(path), "/v1/images/%s",
                     vh_json_str(json_object_array_get_idx(images, i), "name"));
            if (vh_call(c, &d, "DELETE", path, NULL) == 0)
                vmctl_response_clear(&d);
        }
        vmctl_response_clear(&r);
        if (n == 0)
            return;
    }
    fail("images left after %d rounds of deletes", SI_DELETE_ROUNDS);
}

int main(int argc, char **argv)
{
    static const char *const flags[] = {"--workers", "8", "--qmp-timeout", "2", "--job-timeout",
                                        "5",         NULL};
    unsigned threads = stress_arg_threads(argc, argv, 8, SI_MAX_THREADS);
    double seconds = stress_env_seconds(STRESS_DEFAULT_SECONDS * 2);
    struct si_thread th[SI_MAX_THREADS];
    struct vmctl_client *c;
    int status, leftovers;

    pthread_rwlockattr_t attr;

    signal(SIGPIPE, SIG_IGN);
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&si_pause, &attr);
    pthread_rwlockattr_destroy(&attr);
    stress_valgrind_caps(&threads, 2, &seconds, 2.0);
    if (vh_init(&si_daemon, flags) != 0 || vh_start(&si_daemon) != 0)
        return 1;
    c = vh_client_new(&si_daemon);
    struct timespec end = stress_add_seconds(stress_now(), seconds);
    for (unsigned i = 0; i < threads; i++) {
        th[i].seed = 0x1a6e + i * 7919;
        th[i].end = end;
        if (pthread_create(&th[i].tid, NULL, si_worker, &th[i]) != 0) {
            fail("pthread_create");
            threads = i;
        }
    }
    while (c && !atomic_load(&stress_stop) && !stress_past(&end)) {
        struct timespec next = stress_add_seconds(stress_now(), SI_CHECK_MS / 1000.0);

        while (!stress_past(&next) && !stress_past(&end))
            poll(NULL, 0, 20);
        pthread_rwlock_wrlock(&si_pause);
        si_check(c);
        pthread_rwlock_unlock(&si_pause);
    }
    for (unsigned i = 0; i < threads; i++)
        pthread_join(th[i].tid, NULL); /* each ends at `end` + one bounded call */
    if (c) {
        si_check(c);
        if (vh_destroy_all(&si_daemon, c) != 0)
            fail("cleaning up the domains (see above)");
        si_delete_all(c);
        si_check(c); /* the pool and its directory are empty now */
    }
    vmctl_client_free(c);
    if (vh_stop(&si_daemon, &status) != 0)
        fail("moor-vmd did not exit 0 on SIGTERM (wait status 0x%x): census or crash", status);
    leftovers = vh_finish(&si_daemon);
    if (leftovers != 0)
        fail("%d QEMU processes left after the daemon stopped", leftovers);
    if (atomic_load(&si_calls) < threads || atomic_load(&si_checks) < 2)
        fail("only %lu calls and %lu checks in %.1f s", atomic_load(&si_calls),
             atomic_load(&si_checks), seconds);
    printf(STRESS_PROG ": %u threads, %.1f s, %lu calls (%lu backups, %lu saves started), %lu "
                       "checks:",
           threads, seconds, atomic_load(&si_calls), atomic_load(&si_backups),
           atomic_load(&si_saves), atomic_load(&si_checks));
    for (int s = 100; s < 600; s++)
        if (atomic_load(&si_by_status[s]))
            printf(" %d=%lu", s, atomic_load(&si_by_status[s]));
    printf("\n");
    return stress_exit_status();
}
