/* SPDX-License-Identifier: MIT */
/*
 * cmd-jobs.c - the long-job sub-commands: save, restore and backup (start the job,
 * then follow it with progress.c until it ends), job (its view) and abort.
 */
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "progress.h"
#include "table.h"
#include "vmctl.h"

static void on_stop(int sig)
{
    (void)sig;
    vmctl_stop = 1;
}

/* Ctrl-C while following stops following, not the job. */
static void catch_stop(void)
{
    struct sigaction sa = {.sa_handler = on_stop};

    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* @path made absolute against the working directory (the daemon's is not
 * ours), as a JSON string literal's content. Returns false after a usage
 * message. */
static bool absolute(const char *cmd, const char *path, char *buf, size_t size)
{
    char cwd[PATH_MAX];
    int n;

    if (path[0] == '/')
        n = snprintf(buf, size, "%s", path);
    else if (getcwd(cwd, sizeof(cwd)))
        n = snprintf(buf, size, "%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, path);
    else
        n = -1;
    if (n < 0 || (size_t)n >= size) {
        vmctl_errorf("%s: path too long: %s", cmd, path);
        return false;
    }
    return true;
}

/* POST @path with @body, then follow the job of domain @id. */
static int start_and_follow(struct vmctl_client *c, const struct vmctl_args *a, const char *kind,
                            const char *path, struct json_object *body, const char *id_hint)
{
    vmctl_autoresponse struct vmctl_response r = {0};
    moor_error err = MOOR_ERROR_INIT;
    struct vmctl_progress p;
    char label[96], id[72];

    int rc = vmctl_request(c, "POST", path,
                           json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN), &r, &err);
    rc = vmctl_check(rc, &err, &r, a);
    if (rc)
        return rc;
    struct json_object *view = vmctl_body(&r), *v;
    if (!view)
        return VMCTL_EXIT_FAILED;
    snprintf(id, sizeof(id), "%s",
             json_object_object_get_ex(view, "name", &v) ? json_object_get_string(v) : id_hint);
    snprintf(label, sizeof(label), "%s %s", kind, id);
    vmctl_progress_init(&p, stdout, vmctl_progress_mode_for(stdout, a->json), label);
    catch_stop();
    return vmctl_follow_job(c, a, id, &p);
}

int vmctl_cmd_save(struct vmctl_client *c, const struct vmctl_args *a)
{
    char file[PATH_MAX], path[128];
    const char *id = a->argv[0];

    if (!check_id("save", id) || !absolute("save", a->argv[1], file, sizeof(file)))
        return VMCTL_EXIT_USAGE;
    struct json_object *body = json_object_new_object();
    if (!body)
        return VMCTL_EXIT_FAILED;
    json_object_object_add(body, "path", json_object_new_string(file));
    if (a->bandwidth_mib_s > 0)
        json_object_object_add(body, "bandwidth_mib_s", json_object_new_int64(a->bandwidth_mib_s));
    snprintf(path, sizeof(path), "/v1/domains/%s/save", id);
    int rc = start_and_follow(c, a, "save", path, body, id);
    json_object_put(body);
    return rc;
}

int vmctl_cmd_restore(struct vmctl_client *c, const struct vmctl_args *a)
{
    char file[PATH_MAX];

    if (!absolute("restore", a->argv[0], file, sizeof(file)))
        return VMCTL_EXIT_USAGE;
    struct json_object *body = json_object_new_object();
    if (!body)
        return VMCTL_EXIT_FAILED;
    json_object_object_add(body, "path", json_object_new_string(file));
    if (a->paused)
        json_object_object_add(body, "paused", json_object_new_boolean(true));
    int rc = start_and_follow(c, a, "restore", "/v1/domains/restore", body, "?");
    json_object_put(body);
    return rc;
}

int vmctl_cmd_backup(struct vmctl_client *c, const struct vmctl_args *a)
{
    char path[128];
    const char *id = a->argv[0];

    if (!check_id("backup", id))
        return VMCTL_EXIT_USAGE;
    struct json_object *body = json_object_new_object();
    if (!body)
        return VMCTL_EXIT_FAILED;
    json_object_object_add(body, "target", json_object_new_string(a->argv[1]));
    if (a->disk)
        json_object_object_add(body, "disk", json_object_new_string(a->disk));
    if (a->bandwidth_mib_s > 0)
        json_object_object_add(body, "bandwidth_mib_s", json_object_new_int64(a->bandwidth_mib_s));
    snprintf(path, sizeof(path), "/v1/domains/%s/backup", id);
    int rc = start_and_follow(c, a, "backup", path, body, id);
    json_object_put(body);
    return rc;
}

static const char *text(struct json_object *o, const char *key)
{
    struct json_object *v;
    return o && json_object_object_get_ex(o, key, &v) && !json_object_is_type(v, json_type_null)
               ? json_object_get_string(v)
               : "-";
}

static void print_job(const char *title, struct json_object *j)
{
    char done[32], total[32], rate[32], took[32], left[32] = "-";
    struct json_object *v;

    vmctl_format_bytes(
        (uint64_t)json_object_get_int64(json_object_object_get_ex(j, "bytes_done", &v) ? v : NULL),
        done, sizeof(done));
    vmctl_format_bytes(
        (uint64_t)json_object_get_int64(json_object_object_get_ex(j, "bytes_total", &v) ? v : NULL),
        total, sizeof(total));
    vmctl_format_bytes((uint64_t)json_object_get_int64(
                           json_object_object_get_ex(j, "rate_bytes_s", &v) ? v : NULL),
                       rate, sizeof(rate));
    vmctl_format_duration(
        (uint64_t)json_object_get_int64(json_object_object_get_ex(j, "elapsed_ms", &v) ? v : NULL),
        took, sizeof(took));
    if (json_object_object_get_ex(j, "remaining_ms", &v))
        vmctl_format_duration((uint64_t)json_object_get_int64(v), left, sizeof(left));
    printf("%s\n", title);
    printf("  Kind:       %s\n", text(j, "kind"));
    printf("  Phase:      %s\n", text(j, "phase"));
    if (json_object_object_get_ex(j, "disk", &v))
        printf("  Disk:       %s\n  Target:     %s\n", text(j, "disk"), text(j, "target"));
    else
        printf("  File:       %s\n", text(j, "path"));
    printf("  Progress:   %s of %s (%.1f%%)\n", done, total,
           json_object_get_double(json_object_object_get_ex(j, "percent", &v) ? v : NULL));
    printf("  Rate:       %s/s\n", rate);
    printf("  Elapsed:    %s\n", took);
    printf("  Remaining:  %s\n", left);
    struct json_object *client = json_object_object_get_ex(j, "client", &v) ? v : NULL;
    printf("  Started by: %s (uid %s, pid %s)\n", text(j, "api"), text(client, "uid"),
           text(client, "pid"));
    const char *result =
        json_object_object_get_ex(j, "result", &v) ? json_object_get_string(v) : NULL;
    const char *error =
        json_object_object_get_ex(j, "error", &v) ? json_object_get_string(v) : NULL;
    if (result)
        printf("  Result:     %s%s%s\n", result, error ? ": " : "", error ? error : "");
}

/* @method /v1/domains/ID/job for sub-command @cmd; the answer in @r.
 * Returns an exit status. */
static int job_call(struct vmctl_client *c, const struct vmctl_args *a, const char *method,
                    const char *cmd, struct vmctl_response *r)
{
    moor_error err = MOOR_ERROR_INIT;
    char path[128];

    if (!check_id(cmd, a->argv[0]))
        return VMCTL_EXIT_USAGE;
    snprintf(path, sizeof(path), "/v1/domains/%s/job", a->argv[0]);
    return vmctl_check(vmctl_request(c, method, path, NULL, r, &err), &err, r, a);
}

int vmctl_cmd_job(struct vmctl_client *c, const struct vmctl_args *a)
{
    vmctl_autoresponse struct vmctl_response r = {0};
    int rc = job_call(c, a, "GET", "job", &r);

    if (rc || a->json)
        return rc ? rc : vmctl_print_json(r.json, a->pretty);
    struct json_object *body = vmctl_body(&r), *v;
    if (!body)
        return VMCTL_EXIT_FAILED;
    if (json_object_object_get_ex(body, "job", &v) && v)
        print_job("Running job:", v);
    else
        printf("No job running on domain '%s'.\n", a->argv[0]);
    if (json_object_object_get_ex(body, "last", &v) && v)
        print_job("Last job:", v);
    return fflush(stdout) == EOF ? VMCTL_EXIT_FAILED : VMCTL_EXIT_OK;
}

int vmctl_cmd_abort(struct vmctl_client *c, const struct vmctl_args *a)
{
    vmctl_autoresponse struct vmctl_response r = {0};
    int rc = job_call(c, a, "DELETE", "abort", &r);

    if (rc || a->json)
        return rc ? rc : vmctl_print_json(r.json, a->pretty);
    printf("Abort of the job on domain '%s' requested\n", a->argv[0]);
    return fflush(stdout) == EOF ? VMCTL_EXIT_FAILED : VMCTL_EXIT_OK;
}
