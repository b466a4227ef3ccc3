/* SPDX-License-Identifier: MIT */
/*
 * commands.c - moor-vmctl's sub-commands: each one makes one API call
 * (docs/vmd-api.md) and prints its answer, as the API's JSON with --json or
 * for a person otherwise (the wording of virsh's messages, the tables of
 * `virsh list` / `kubectl get`).
 *
 * A command checks its operands first (a bad one is a usage error, exit
 * 2, and nothing is sent), then calls vmctl_check on the answer, which
 * reports the daemon's refusal; only an accepted answer is printed.
 */
#include "vmctl.h"
#include "table.h"

#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
#include <string.h>
#include <unistd.h>

#include <moor/debug.h>

#define ID_MAX      64        /* a name: [A-Za-z0-9._-]{1,64}; a UUID has 36 */
#define CONFIG_MAX  (1 << 20) /* the daemon's body cap */
#define WAIT_MS_MAX 300000L   /* the daemon's cap on a shutdown's wait: 5 minutes */

volatile sig_atomic_t vmctl_stop;

/* ---- operands -------------------------------------------------------------- */

/* A domain name or UUID, checked so it can go into a URL path as it is. */
bool check_id(const char *cmd, const char *id)
{
    size_t len = strlen(id);

    if (len >= 1 && len <= ID_MAX &&
        strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789._-") == len &&
        strcmp(id, ".") != 0 && strcmp(id, "..") != 0)
        return true;
    fprintf(stderr,
            "moor-vmctl: %s: invalid domain '%s': a name is 1 to 64 of A-Z a-z 0-9 . _ -, or "
            "a UUID\n",
            cmd, id);
    return false;
}

/* "/v1/domains/ID" + @suffix ("" or "/start"...). */
static void domain_path(char *buf, size_t size, const char *id, const char *suffix)
{
    snprintf(buf, size, "/v1/domains/%s%s", id, suffix);
}

/* One request; the answer in @r, checked. Returns an exit status. */
static int call(struct vmctl_client *c, const struct vmctl_args *a, const char *method,
                const char *path, const char *body, struct vmctl_response *r)
{
    return vmctl_call(c, a, method, path, body, r);
}

/* The common end of a command whose answer people need not read: the JSON
 * with --json, else one line ("Domain 'vm1' destroyed"). */
static int done(const struct vmctl_args *a, const struct vmctl_response *r, const char *line)
{
    return vmctl_done(a, r, line);
}

/* ---- list ------------------------------------------------------------------ */

static int cmd_list(struct vmctl_client *c, const struct vmctl_args *a)
{
    static const char *const header[] = {"NAME", "STATE", "REASON", "PID", "UUID"};
    struct vmctl_response r vmctl_autoresponse = {0};
    vmctl_autotable struct vmctl_table *t = NULL;
    struct json_object *body, *domains;
    int rc = call(c, a, "GET", "/v1/domains", NULL, &r);

    if (rc || a->json)
        return rc ? rc : vmctl_print_json(r.json, a->pretty);
    body = vmctl_body(&r);
    if (!body)
        return VMCTL_EXIT_FAILED;
    if (!json_object_object_get_ex(body, "domains", &domains) ||
        !json_object_is_type(domains, json_type_array)) {
        vmctl_errorf("moor-vmd's list has no \"domains\" array");
        return VMCTL_EXIT_FAILED;
    }
    t = vmctl_table_new(5, header);
    for (size_t i = 0; t && i < json_object_array_length(domains); i++) {
        struct json_object *d = json_object_array_get_idx(domains, i);
        char cells[5][128];

        snprintf(cells[0], sizeof(cells[0]), "%s", vmctl_field(d, "name"));
        snprintf(cells[1], sizeof(cells[1]), "%s", vmctl_field(d, "state"));
        snprintf(cells[2], sizeof(cells[2]), "%s", vmctl_field(d, "reason"));
        snprintf(cells[3], sizeof(cells[3]), "%s", vmctl_field(d, "pid"));
        snprintf(cells[4], sizeof(cells[4]), "%s", vmctl_field(d, "uuid"));
        if (vmctl_table_add(
                t, (const char *const[]){cells[0], cells[1], cells[2], cells[3], cells[4]}) < 0)
            return VMCTL_EXIT_FAILED;
    }
    if (!t || vmctl_table_print(t, stdout, 0) < 0 || fflush(stdout) == EOF)
        return VMCTL_EXIT_FAILED;
    return VMCTL_EXIT_OK;
}

/* ---- define / undefine -------------------------------------------------------- */

/* All of @f, at most CONFIG_MAX bytes. Ownership: the caller's (free).
 * NULL with a message printed. */
static char *read_all(FILE *f, const char *name)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap + 1), *p;

    for (;;) {
        size_t n = buf ? fread(buf + len, 1, cap - len, f) : 0;

        len += n;
        if (!buf || n == 0)
            break;
        if (len > CONFIG_MAX) {
            vmctl_errorf("%s: over 1 MiB, the daemon's limit for a config", name);
            free(buf);
            return NULL;
        }
        if (len < cap)
            continue;
        p = realloc(buf, cap * 2 + 1);
        if (!p) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = p;
        cap *= 2;
    }
    if (!buf || ferror(f)) {
        vmctl_errorf("%s: %s", name, buf ? strerror(errno) : "out of memory");
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

/* The config text of FILE ("-": stdin), checked to be one JSON object. */
static char *read_config(const char *file)
{
    bool is_stdin = strcmp(file, "-") == 0;
    const char *name = is_stdin ? "standard input" : file;
    FILE *f = is_stdin ? stdin : fopen(file, "r");
    enum json_tokener_error jerr;
    struct json_object *json;
    char *text;

    if (!f) {
        vmctl_errorf("%s: %s", file, strerror(errno));
        return NULL;
    }
    text = read_all(f, name);
    if (!is_stdin)
        fclose(f);
    if (!text)
        return NULL;
    json = json_tokener_parse_verbose(text, &jerr);
    if (!json || !json_object_is_type(json, json_type_object)) {
        vmctl_errorf("%s: not a JSON object%s%s", name, json ? "" : ": ",
                     json ? "" : json_tokener_error_desc(jerr));
        json_object_put(json);
        free(text);
        return NULL;
    }
    json_object_put(json);
    return text;
}

static int cmd_define(struct vmctl_client *c, const struct vmctl_args *a)
{
    struct vmctl_response r vmctl_autoresponse = {0};
    vmctl_autofree char *config = read_config(a->argv[0]);
    char line[512];
    int rc;

    if (!config)
        return VMCTL_EXIT_FAILED;
    rc = call(c, a, "POST", "/v1/domains", config, &r);
    if (rc)
        return rc;
    snprintf(line, sizeof(line), "Domain '%s' defined from %s (uuid %s)",
             r.json ? vmctl_field(r.json, "name") : "?",
             strcmp(a->argv[0], "-") ? a->argv[0] : "standard input",
             r.json ? vmctl_field(r.json, "uuid") : "?");
    return done(a, &r, line);
}

/* A command on one domain: @method /v1/domains/ID@suffix with @body, then
 * "Domain 'ID' @what". */
static int domain_call(struct vmctl_client *c, const struct vmctl_args *a, const char *cmd,
                       const char *method, const char *suffix, const char *body, const char *what)
{
    struct vmctl_response r vmctl_autoresponse = {0};
    const char *id = a->argv[0];
    char path[128], line[256];
    int rc;

    if (!check_id(cmd, id))
        return VMCTL_EXIT_USAGE;
    domain_path(path, sizeof(path), id, suffix);
    rc = call(c, a, method, path, body, &r);
    if (rc)
        return rc;
    snprintf(line, sizeof(line), "Domain '%s' %s", id, what);
    return done(a, &r, line);
}

static int cmd_undefine(struct vmctl_client *c, const struct vmctl_args *a)
{
    return domain_call(c, a, "undefine", "DELETE", "", NULL, "has been undefined");
}

/* ---- lifecycle ------------------------------------------------------------- */

static int cmd_start(struct vmctl_client *c, const struct vmctl_args *a)
{
    return domain_call(c, a, "start", "POST", "/start", a->paused ? "{\"paused\":true}" : NULL,
                       a->paused ? "started (paused)" : "started");
}

static int cmd_shutdown(struct vmctl_client *c, const struct vmctl_args *a)
{
    char body[64];

    if (a->wait_ms > WAIT_MS_MAX) {
        fprintf(stderr, "moor-vmctl: shutdown: --timeout is at most %ld seconds\n",
                WAIT_MS_MAX / 1000);
        return VMCTL_EXIT_USAGE;
    }
    snprintf(body, sizeof(body), "{\"timeout_ms\":%ld}", a->wait_ms);
    return domain_call(c, a, "shutdown", "POST", "/shutdown", a->wait_ms >= 0 ? body : NULL,
                       "shut down");
}

static int cmd_destroy(struct vmctl_client *c, const struct vmctl_args *a)
{
    return domain_call(c, a, "destroy", "POST", "/destroy", NULL, "destroyed");
}

static int cmd_suspend(struct vmctl_client *c, const struct vmctl_args *a)
{
    return domain_call(c, a, "suspend", "POST", "/suspend", NULL, "suspended");
}

static int cmd_resume(struct vmctl_client *c, const struct vmctl_args *a)
{
    return domain_call(c, a, "resume", "POST", "/resume", NULL, "resumed");
}

static int cmd_reset(struct vmctl_client *c, const struct vmctl_args *a)
{
    return domain_call(c, a, "reset", "POST", "/reset", NULL, "was reset");
}

/* ---- state / info -------------------------------------------------------------- */

/* GET /v1/domains/ID@suffix into @r; 0, or an exit status. */
static int domain_get(struct vmctl_client *c, const struct vmctl_args *a, const char *cmd,
                      const char *suffix, struct vmctl_response *r)
{
    char path[128];

    if (!check_id(cmd, a->argv[0]))
        return VMCTL_EXIT_USAGE;
    domain_path(path, sizeof(path), a->argv[0], suffix);
    return call(c, a, "GET", path, NULL, r);
}

/* An integer field; @fallback when absent or not a number. */
static int64_t int_field(struct json_object *obj, const char *key, int64_t fallback)
{
    struct json_object *v;

    if (!json_object_object_get_ex(obj, key, &v) ||
        !(json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)))
        return fallback;
    return json_object_get_int64(v);
}

static bool bool_field(struct json_object *obj, const char *key)
{
    struct json_object *v;

    return json_object_object_get_ex(obj, key, &v) && json_object_get_boolean(v);
}

/* "running (booted)" */
static void state_text(struct json_object *obj, char *buf, size_t size)
{
    snprintf(buf, size, "%s (%s)", vmctl_field(obj, "state"), vmctl_field(obj, "reason"));
}

/* The object in field @key of @obj, or NULL (absent, or not an object). */
static struct json_object *object_field(struct json_object *obj, const char *key)
{
    struct json_object *v;

    return json_object_object_get_ex(obj, key, &v) && json_object_is_type(v, json_type_object)
               ? v
               : NULL;
}

/* "responsive", "unresponsive for 12.0 s", or "-" (no monitor: not running). */
static void monitor_text(struct json_object *obj, char *buf, size_t size)
{
    struct json_object *mon = object_field(obj, "monitor");
    char age[32];

    if (!mon) {
        snprintf(buf, size, "-");
        return;
    }
    if (bool_field(mon, "responsive")) {
        snprintf(buf, size, "responsive");
        return;
    }
    vmctl_format_duration((uint64_t)int_field(mon, "unresponsive_since_ms", 0), age, sizeof(age));
    snprintf(buf, size, "unresponsive for %s", age);
}

static int cmd_state(struct vmctl_client *c, const struct vmctl_args *a)
{
    struct vmctl_response r vmctl_autoresponse = {0};
    struct json_object *body;
    char state[160], monitor[64];
    int rc = domain_get(c, a, "state", "/state", &r);

    if (rc || a->json)
        return rc ? rc : vmctl_print_json(r.json, a->pretty);
    body = vmctl_body(&r);
    if (!body)
        return VMCTL_EXIT_FAILED;
    state_text(body, state, sizeof(state));
    monitor_text(body, monitor, sizeof(monitor));
    printf("%s%s%s%s\n", state, bool_field(body, "tainted") ? ", tainted" : "",
           strncmp(monitor, "un", 2) ? "" : ", monitor ", strncmp(monitor, "un", 2) ? "" : monitor);
    return fflush(stdout) == EOF ? VMCTL_EXIT_FAILED : VMCTL_EXIT_OK;
}

/* A key/value list (keys end in ':'), aligned like virsh dominfo. */
static int print_pairs(const char *const (*rows)[2], size_t n, size_t indent)
{
    vmctl_autotable struct vmctl_table *t = vmctl_table_new(2, NULL);

    for (size_t i = 0; t && i < n; i++)
        if (vmctl_table_add(t, rows[i]) < 0)
            return VMCTL_EXIT_FAILED;
    if (!t || vmctl_table_print(t, stdout, indent) < 0)
        return VMCTL_EXIT_FAILED;
    return VMCTL_EXIT_OK;
}

/* "modify (start), held for 1.2 s", or "-". */
static void job_text(struct json_object *obj, char *buf, size_t size)
{
    struct json_object *job = object_field(obj, "job");
    char age[32];

    if (!job) {
        snprintf(buf, size, "-");
        return;
    }
    vmctl_format_duration((uint64_t)int_field(job, "age_ms", 0), age, sizeof(age));
    snprintf(buf, size, "%s (%s), held for %s", vmctl_field(job, "kind"), vmctl_field(job, "api"),
             age);
}

/* The config's extra_args, space-separated, or "-". */
static void extra_args_text(struct json_object *config, char *buf, size_t size)
{
    struct json_object *args;
    size_t used = 0;

    snprintf(buf, size, "-");
    if (!json_object_object_get_ex(config, "extra_args", &args) ||
        !json_object_is_type(args, json_type_array))
        return;
    for (size_t i = 0; i < json_object_array_length(args) && used < size; i++) {
        int n = snprintf(buf + used, size - used, "%s%s", i ? " " : "",
                         json_object_get_string(json_object_array_get_idx(args, i)));

        used += n > 0 ? (size_t)n : 0;
    }
}

static int cmd_info(struct vmctl_client *c, const struct vmctl_args *a)
{
    struct vmctl_response r vmctl_autoresponse = {0};
    struct json_object *body, *config;
    char state[160], memory[32], monitor[64], job[160], extra[512], pid[24], vcpus[24];
    int rc = domain_get(c, a, "info", "", &r);

    if (rc || a->json)
        return rc ? rc : vmctl_print_json(r.json, a->pretty);
    body = vmctl_body(&r);
    if (!body)
        return VMCTL_EXIT_FAILED;
    config = object_field(body, "config");
    state_text(body, state, sizeof(state));
    monitor_text(body, monitor, sizeof(monitor));
    job_text(body, job, sizeof(job));
    extra_args_text(config, extra, sizeof(extra));
    vmctl_format_bytes((uint64_t)int_field(config, "memory_mib", 0) << 20, memory, sizeof(memory));
    snprintf(pid, sizeof(pid), "%s", vmctl_field(body, "pid"));
    snprintf(vcpus, sizeof(vcpus), "%s", vmctl_field(config, "vcpus"));
    {
        const char *const rows[][2] = {
            {"Name:", vmctl_field(body, "name")},
            {"UUID:", vmctl_field(body, "uuid")},
            {"State:", state},
            {"PID:", pid},
            {"Memory:", memory},
            {"vCPUs:", vcpus},
            {"Machine:", vmctl_field(config, "machine")},
            {"Accel:", vmctl_field(config, "accel")},
            {"Emulator:", vmctl_field(config, "emulator")},
            {"Extra args:", extra},
            {"Tainted:", bool_field(body, "tainted") ? "yes" : "no"},
            {"Monitor:", monitor},
            {"Job:", job},
        };

        return print_pairs(rows, sizeof(rows) / sizeof(rows[0]), 0);
    }
}

/* ---- stats ------------------------------------------------------------------ */

static int print_vcpus(struct json_object *vcpus)
{
    static const char *const header[] = {"CPU", "THREAD"};
    vmctl_autotable struct vmctl_table *t = vmctl_table_new(2, header);
    size_t n = json_object_is_type(vcpus, json_type_array) ? json_object_array_length(vcpus) : 0;

    printf("vCPUs:%s\n", n ? "" : " none");
    for (size_t i = 0; t && i < n; i++) {
        struct json_object *v = json_object_array_get_idx(vcpus, i);
        char cpu[24];

        snprintf(cpu, sizeof(cpu), "%s", vmctl_field(v, "cpu"));
        if (vmctl_table_add(t, (const char *const[]){cpu, vmctl_field(v, "thread_id")}) < 0)
            return VMCTL_EXIT_FAILED;
    }
    if (!t || (n && vmctl_table_print(t, stdout, 2) < 0))
        return VMCTL_EXIT_FAILED;
    return VMCTL_EXIT_OK;
}

/* One query-blockstats entry as a row: the device's name, then its counters. */
static int add_block_row(struct vmctl_table *t, struct json_object *b)
{
    static const char *const counters[] = {"rd_bytes", "wr_bytes", "rd_operations", "wr_operations",
                                           "flush_operations"};
    struct json_object *stats = NULL;
    char cell[5][32], name[128];
    const char *dev = vmctl_field(b, "device");

    if (!*dev || strcmp(dev, "-") == 0)
        dev = vmctl_field(b, "node-name");
    if (!*dev || strcmp(dev, "-") == 0)
        dev = vmctl_field(b, "qdev");
    snprintf(name, sizeof(name), "%s", dev);
    json_object_object_get_ex(b, "stats", &stats);
    for (size_t i = 0; i < 5; i++) {
        int64_t v = int_field(stats, counters[i], -1);

        if (v < 0)
            snprintf(cell[i], sizeof(cell[i]), "-");
        else if (i < 2)
            vmctl_format_bytes((uint64_t)v, cell[i], sizeof(cell[i]));
        else
            snprintf(cell[i], sizeof(cell[i]), "%lld", (long long)v);
    }
    return vmctl_table_add(
        t, (const char *const[]){name, cell[0], cell[1], cell[2], cell[3], cell[4]});
}

static int print_block(struct json_object *block)
{
    static const char *const header[] = {"DEVICE", "READ", "WRITTEN", "READS", "WRITES", "FLUSHES"};
    vmctl_autotable struct vmctl_table *t = vmctl_table_new(6, header);
    size_t n = json_object_is_type(block, json_type_array) ? json_object_array_length(block) : 0;

    printf("Block devices:%s\n", n ? "" : " none");
    for (size_t i = 0; t && i < n; i++)
        if (add_block_row(t, json_object_array_get_idx(block, i)) < 0)
            return VMCTL_EXIT_FAILED;
    if (!t || (n && vmctl_table_print(t, stdout, 2) < 0))
        return VMCTL_EXIT_FAILED;
    return VMCTL_EXIT_OK;
}

static int cmd_stats(struct vmctl_client *c, const struct vmctl_args *a)
{
    struct vmctl_response r vmctl_autoresponse = {0};
    struct json_object *body, *status = NULL, *vcpus = NULL, *block = NULL;
    char running[64];
    int rc = domain_get(c, a, "stats", "/stats", &r);

    if (rc || a->json)
        return rc ? rc : vmctl_print_json(r.json, a->pretty);
    body = vmctl_body(&r);
    if (!body)
        return VMCTL_EXIT_FAILED;
    json_object_object_get_ex(body, "status", &status);
    json_object_object_get_ex(body, "vcpus", &vcpus);
    json_object_object_get_ex(body, "block", &block);
    snprintf(running, sizeof(running), "%s", vmctl_field(status, "status"));
    {
        const char *const rows[][2] = {
            {"Name:", vmctl_field(body, "name")},
            {"Status:", running},
        };

        rc = print_pairs(rows, 2, 0);
    }
    if (rc == VMCTL_EXIT_OK)
        rc = print_vcpus(vcpus);
    if (rc == VMCTL_EXIT_OK)
        rc = print_block(block);
    return rc == VMCTL_EXIT_OK && fflush(stdout) == EOF ? VMCTL_EXIT_FAILED : rc;
}

/* ---- qmp ------------------------------------------------------------------- */

/* The body of POST .../qmp: JSON as given, or a bare command name
 * ([A-Za-z0-9_-]+) as {"execute":NAME}. Ownership: the caller's (free); NULL after a usage
 * message. */
static char *qmp_body(const char *arg)
{
    enum json_tokener_error jerr;
    struct json_object *json;
    char *body = NULL;

    if (!*arg) {
        fprintf(stderr, "moor-vmctl: qmp: empty command\n");
        return NULL;
    }
    if (strspn(arg, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") ==
        strlen(arg)) {
        json = json_object_new_object();
        if (json && json_object_object_add(json, "execute", json_object_new_string(arg)) == 0)
            body = strdup(json_object_to_json_string_ext(json, JSON_C_TO_STRING_PLAIN));
        json_object_put(json);
        if (!body)
            vmctl_errorf("out of memory");
        return body;
    }
    json = json_tokener_parse_verbose(arg, &jerr);
    if (!json || !json_object_is_type(json, json_type_object))
        fprintf(stderr, "moor-vmctl: qmp: not a JSON object: %s\n",
                json ? "another JSON value" : json_tokener_error_desc(jerr));
    else if (!(body = strdup(arg)))
        vmctl_errorf("out of memory");
    json_object_put(json);
    return body;
}

static int cmd_qmp(struct vmctl_client *c, const struct vmctl_args *a)
{
    struct vmctl_response r vmctl_autoresponse = {0};
    vmctl_autofree char *body = NULL;
    char path[128];
    int rc;

    if (!check_id("qmp", a->argv[0]))
        return VMCTL_EXIT_USAGE;
    body = qmp_body(a->argv[1]);
    if (!body)
        return VMCTL_EXIT_USAGE;
    fprintf(stderr,
            "moor-vmctl: warning: raw QMP taints domain '%s': moor-vmd no longer vouches for "
            "its state\n",
            a->argv[0]);
    domain_path(path, sizeof(path), a->argv[0], "/qmp");
    rc = call(c, a, "POST", path, body, &r);
    if (rc)
        return rc;
    if (!vmctl_body(&r))
        return VMCTL_EXIT_FAILED;
    /* People read QEMU's reply too: indented on a terminal either way. */
    return vmctl_print_json(r.json, a->json ? a->pretty : isatty(STDOUT_FILENO));
}

/* ---- events ---------------------------------------------------------------- */

/* One event for people: TIME DOMAIN TYPE details. */
static void print_event(struct json_object *ev)
{
    static const char *const known[] = {"seq", "time", "type", "domain"};
    const char *type = vmctl_field(ev, "type");

    printf("%s  %s  %s", vmctl_field(ev, "time"), vmctl_field(ev, "domain"), type);
    if (strcmp(type, "lifecycle") == 0) {
        printf("  %s (%s)\n", vmctl_field(ev, "state"), vmctl_field(ev, "reason"));
        return;
    }
    if (strcmp(type, "lost") == 0) {
        printf("  %s events skipped: this reader fell behind\n", vmctl_field(ev, "count"));
        return;
    }
    json_object_object_foreach(ev, key, val)
    {
        bool skip = false;

        (void)val;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            skip |= strcmp(key, known[i]) == 0;
        if (!skip)
            printf("  %s=%s", key, vmctl_field(ev, key));
    }
    putchar('\n');
}

static bool on_event(const char *line, size_t len, void *opaque)
{
    const struct vmctl_args *a = opaque;
    struct json_object *ev;

    if (len == 0)
        return !vmctl_stop;
    ev = a->json ? NULL : json_tokener_parse(line);
    if (a->json || !ev || !json_object_is_type(ev, json_type_object))
        printf("%s\n", line);
    else
        print_event(ev);
    json_object_put(ev);
    return fflush(stdout) != EOF && !vmctl_stop;
}

static void on_signal(int sig)
{
    (void)sig;
    vmctl_stop = 1;
}

static int cmd_events(struct vmctl_client *c, const struct vmctl_args *a)
{
    struct sigaction sa = {.sa_handler = on_signal};
    moor_error err = MOOR_ERROR_INIT;
    long status;

    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    vmctl_client_set_cancel(c, &vmctl_stop);
    status = vmctl_stream(c, "/v1/events", on_event, (void *)a, &err);
    if (vmctl_stop || (status == -ETIMEDOUT && a->timeout_given))
        return VMCTL_EXIT_OK; /* asked to stop: by a signal, or --timeout */
    if (status < 0 || status >= 300) {
        vmctl_errorf("%s", moor_error_message(&err));
        return VMCTL_EXIT_FAILED;
    }
    return VMCTL_EXIT_OK;
}

/* ---- debug ------------------------------------------------------------------ */

/* Words written in capitals wherever they appear in a label. */
static bool is_acronym(const char *word, size_t len)
{
    static const char *const acronyms[] = {"qmp", "uuid", "pid",  "api",
                                           "id",  "cpu",  "qemu", "http"};

    for (size_t i = 0; i < sizeof(acronyms) / sizeof(acronyms[0]); i++)
        if (strlen(acronyms[i]) == len && strncmp(word, acronyms[i], len) == 0)
            return true;
    return false;
}

/* A key as a label: "live_objects" -> "Live objects:", "qmp_pending" ->
 * "QMP pending:", "age_ms" -> "Age:"; @upper: a table header ("AGE"). */
static void key_label(const char *key, char *buf, size_t size, bool upper)
{
    size_t len = strlen(key), i, word = 0;

    if (len > 3 && strcmp(key + len - 3, "_ms") == 0)
        len -= 3;
    for (i = 0; i < len && i + 2 < size; i++) {
        bool sep = key[i] == '_' || key[i] == '-';
        bool caps = upper || i == 0 || is_acronym(key + word, strcspn(key + word, "_-"));

        if (sep)
            word = i + 1;
        buf[i] = sep ? ' ' : caps ? (char)toupper((unsigned char)key[i]) : key[i];
    }
    if (!upper)
        buf[i++] = ':';
    buf[i] = '\0';
}

/* A value for people: durations for *_ms, sizes for *_bytes. */
static const char *value_text(struct json_object *obj, const char *key, char *buf, size_t size)
{
    size_t len = strlen(key);
    int64_t v = int_field(obj, key, -1);

    if (v >= 0 && len > 3 && strcmp(key + len - 3, "_ms") == 0)
        return vmctl_format_duration((uint64_t)v, buf, size);
    if (v >= 0 && len > 6 && strcmp(key + len - 6, "_bytes") == 0)
        return vmctl_format_bytes((uint64_t)v, buf, size);
    return vmctl_field(obj, key);
}

static int print_object(struct json_object *obj, size_t indent);

/* An array of objects as a table whose columns are every key seen. */
static int print_array(struct json_object *arr, size_t indent)
{
    const char *keys[32];
    size_t nkeys = 0, n = json_object_array_length(arr);
    vmctl_autotable struct vmctl_table *t = NULL;
    char head[32][48];

    for (size_t i = 0; i < n; i++) {
        struct json_object *row = json_object_array_get_idx(arr, i);

        if (!json_object_is_type(row, json_type_object))
            continue;
        json_object_object_foreach(row, key, val)
        {
            size_t k = 0;

            (void)val;
            while (k < nkeys && strcmp(keys[k], key))
                k++;
            if (k == nkeys && nkeys < 32)
                keys[nkeys++] = key;
        }
    }
    if (nkeys == 0) {
        printf("%*s%s\n", (int)indent, "",
               json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN));
        return VMCTL_EXIT_OK;
    }
    {
        const char *header[32];

        for (size_t k = 0; k < nkeys; k++) {
            key_label(keys[k], head[k], sizeof(head[k]), true);
            header[k] = head[k];
        }
        t = vmctl_table_new(nkeys, header);
    }
    for (size_t i = 0; t && i < n; i++) {
        struct json_object *row = json_object_array_get_idx(arr, i);
        char cells[32][64], text[64];
        const char *cell[32];

        for (size_t k = 0; k < nkeys; k++) {
            snprintf(cells[k], sizeof(cells[k]), "%s",
                     value_text(row, keys[k], text, sizeof(text)));
            cell[k] = cells[k];
        }
        if (vmctl_table_add(t, cell) < 0)
            return VMCTL_EXIT_FAILED;
    }
    return t && vmctl_table_print(t, stdout, indent) == 0 ? VMCTL_EXIT_OK : VMCTL_EXIT_FAILED;
}

/* Print the scalars gathered so far as one aligned key/value list. */
static int flush_pairs(struct vmctl_table **pairs, size_t indent)
{
    int rc = VMCTL_EXIT_OK;

    if (*pairs && vmctl_table_print(*pairs, stdout, indent) < 0)
        rc = VMCTL_EXIT_FAILED;
    vmctl_table_free(*pairs);
    *pairs = NULL;
    return rc;
}

/* Any JSON object for people: scalars as aligned "Key: value" runs, nested
 * objects indented under their key, arrays of objects as tables. */
static int print_object(struct json_object *obj, size_t indent)
{
    vmctl_autotable struct vmctl_table *pairs = NULL;
    int rc = VMCTL_EXIT_OK;

    json_object_object_foreach(obj, key, val)
    {
        char label[64], text[64];
        bool nested =
            json_object_is_type(val, json_type_object) ||
            (json_object_is_type(val, json_type_array) && json_object_array_length(val) > 0);

        key_label(key, label, sizeof(label), false);
        if (!nested) {
            const char *v = json_object_is_type(val, json_type_array)
                                ? "none"
                                : value_text(obj, key, text, sizeof(text));
            char value[256];

            snprintf(value, sizeof(value), "%s", v);
            if (!pairs)
                pairs = vmctl_table_new(2, NULL);
            if (!pairs || vmctl_table_add(pairs, (const char *const[]){label, value}) < 0)
                return VMCTL_EXIT_FAILED;
            continue;
        }
        rc = flush_pairs(&pairs, indent);
        printf("%*s%s\n", (int)indent, "", label);
        if (rc == VMCTL_EXIT_OK)
            rc = json_object_is_type(val, json_type_object) ? print_object(val, indent + 2)
                                                            : print_array(val, indent + 2);
        if (rc)
            return rc;
    }
    return flush_pairs(&pairs, indent);
}

/* A duration field for people, or "-" when absent or negative. */
static const char *duration_cell(struct json_object *obj, const char *key, char *buf, size_t size)
{
    int64_t v = int_field(obj, key, -1);

    return v < 0 ? "-" : vmctl_format_duration((uint64_t)v, buf, size);
}

/* A row of five text cells (copied at once: vmctl_field's strings are
 * borrowed), then @obj's age_ms and left_ms as durations. */
static int add_timed_row(struct vmctl_table *t, const char *const text[5], struct json_object *obj)
{
    char cells[5][96], age[32], left[32];

    for (int i = 0; i < 5; i++)
        snprintf(cells[i], sizeof(cells[i]), "%s", text[i]);
    return vmctl_table_add(
        t, (const char *const[]){cells[0], cells[1], cells[2], cells[3], cells[4],
                                 duration_cell(obj, "age_ms", age, sizeof(age)),
                                 duration_cell(obj, "left_ms", left, sizeof(left))});
}

/* Who holds what, since when, who waits: the library's job entries (per
 * object: the async job, the holders, then the waiters in arrival order). */
static int print_moor_jobs(struct json_object *jobs)
{
    static const char *const header[] = {"OBJECT", "ROLE",  "KIND",       "API",
                                         "THREAD", "SINCE", "GIVES UP IN"};
    size_t n = json_object_array_length(jobs);
    vmctl_autotable struct vmctl_table *t = vmctl_table_new(7, header);

    if (!t)
        return VMCTL_EXIT_FAILED;
    for (size_t i = 0; i < n; i++) {
        struct json_object *j = json_object_array_get_idx(jobs, i);
        const char *text[5] = {vmctl_field(j, "object"), vmctl_field(j, "role"),
                               vmctl_field(j, "kind"), vmctl_field(j, "api"),
                               vmctl_field(j, "thread")};

        if (add_timed_row(t, text, j) < 0)
            return VMCTL_EXIT_FAILED;
    }
    printf("Jobs held and waited for:%s\n", n ? "" : " none");
    return n && vmctl_table_print(t, stdout, 2) < 0 ? VMCTL_EXIT_FAILED : VMCTL_EXIT_OK;
}

/* Every monitor call waiting for its reply. */
static int print_moor_calls(struct json_object *mons)
{
    static const char *const header[] = {"MONITOR", "STATE", "COMMAND",    "ID",
                                         "THREAD",  "SINCE", "DEADLINE IN"};
    vmctl_autotable struct vmctl_table *t = vmctl_table_new(7, header);
    size_t rows = 0;

    if (!t)
        return VMCTL_EXIT_FAILED;
    for (size_t i = 0; i < json_object_array_length(mons); i++) {
        struct json_object *m = json_object_array_get_idx(mons, i), *pending;

        if (!json_object_object_get_ex(m, "pending", &pending))
            continue;
        for (size_t k = 0; k < json_object_array_length(pending); k++, rows++) {
            struct json_object *c = json_object_array_get_idx(pending, k);
            const char *text[5] = {vmctl_field(m, "name"), vmctl_field(m, "state"),
                                   vmctl_field(c, "command"), vmctl_field(c, "id"),
                                   vmctl_field(c, "thread")};

            if (add_timed_row(t, text, c) < 0)
                return VMCTL_EXIT_FAILED;
        }
    }
    printf("Monitor calls pending:%s\n", rows ? "" : " none");
    return rows && vmctl_table_print(t, stdout, 2) < 0 ? VMCTL_EXIT_FAILED : VMCTL_EXIT_OK;
}

/* The library's snapshot ("moor" in GET /v1/debug). */
static int print_moor(struct json_object *lib)
{
    struct json_object *jobs, *mons;
    int rc = VMCTL_EXIT_OK;

    printf("Library snapshot: version %s, pid %s, watchdog %s ms%s\n", vmctl_field(lib, "version"),
           vmctl_field(lib, "pid"), vmctl_field(lib, "watchdog_ms"),
           int_field(lib, "flags", 0) & MOOR_DEBUG_WATCHDOG ? " (on)" : " (off)");
    if (json_object_object_get_ex(lib, "jobs", &jobs) && json_object_is_type(jobs, json_type_array))
        rc = print_moor_jobs(jobs);
    if (rc == VMCTL_EXIT_OK && json_object_object_get_ex(lib, "monitors", &mons) &&
        json_object_is_type(mons, json_type_array))
        rc = print_moor_calls(mons);
    return rc;
}

static int cmd_debug(struct vmctl_client *c, const struct vmctl_args *a)
{
    struct vmctl_response r vmctl_autoresponse = {0};
    struct json_object *body, *lib = NULL;
    int rc = call(c, a, "GET", "/v1/debug", NULL, &r);

    if (rc || a->json)
        return rc ? rc : vmctl_print_json(r.json, a->pretty);
    body = vmctl_body(&r);
    if (!body)
        return VMCTL_EXIT_FAILED;
    /* The library's part gets tables of its own, after the rest. */
    if (json_object_object_get_ex(body, "moor", &lib)) {
        json_object_get(lib);
        json_object_object_del(body, "moor");
    }
    rc = print_object(body, 0);
    if (rc == VMCTL_EXIT_OK && lib && json_object_is_type(lib, json_type_object))
        rc = print_moor(lib);
    json_object_put(lib);
    return rc == VMCTL_EXIT_OK && fflush(stdout) == EOF ? VMCTL_EXIT_FAILED : rc;
}

/* ---- version ---------------------------------------------------------------- */

static int cmd_version(struct vmctl_client *c, const struct vmctl_args *a)
{
    struct vmctl_response r vmctl_autoresponse = {0};
    struct json_object *body;
    char daemon[128], qemu[128];
    int rc;

    if (!a->json) {
        printf("Client:  moor-vmctl %s\n", VMCTL_VERSION);
        fflush(stdout);
    }
    rc = call(c, a, "GET", "/v1/version", NULL, &r);
    if (rc || a->json)
        return rc ? rc : vmctl_print_json(r.json, a->pretty);
    body = vmctl_body(&r);
    if (!body)
        return VMCTL_EXIT_FAILED;
    snprintf(daemon, sizeof(daemon), "moor-vmd %s (API %s)", vmctl_field(body, "version"),
             vmctl_field(body, "api"));
    snprintf(qemu, sizeof(qemu), "%s", vmctl_field(body, "qemu"));
    /* Same column as "Client:  " above; QEMU's only when the daemon knows it. */
    printf("Daemon:  %s\n", daemon);
    if (strcmp(qemu, "-") != 0)
        printf("QEMU:    %s\n", qemu);
    return fflush(stdout) == EOF ? VMCTL_EXIT_FAILED : VMCTL_EXIT_OK;
}

/* ---- the table -------------------------------------------------------------- */

const struct vmctl_command vmctl_commands[] = {
    {"list", "[--all]", "", "list every defined domain (running or not)", "GET /v1/domains",
     "Columns: NAME, STATE, REASON, PID (while running), UUID; sorted by name.\n", VMCTL_OPT_ALL, 0,
     0, cmd_list},
    {"define", "FILE", "FILE", "define a domain from a JSON config (FILE '-': stdin)",
     "POST /v1/domains",
     "The config's fields (name, uuid, memory_mib, vcpus, machine, emulator,\n"
     "accel, extra_args) are documented in docs/vmd-api.md.\n",
     0, 1, 1, cmd_define},
    {"undefine", "ID", "ID", "forget a shut-off domain", "DELETE /v1/domains/{id}", NULL, 0, 1, 1,
     cmd_undefine},
    {"start", "[--paused] ID", "ID", "start a shut-off domain", "POST /v1/domains/{id}/start", NULL,
     VMCTL_OPT_PAUSED, 1, 1, cmd_start},
    {"shutdown", "[--timeout SECONDS] ID", "ID",
     "ask the guest to power off (ACPI) and wait for QEMU to exit",
     "POST /v1/domains/{id}/shutdown",
     "Fails (exit 1) if the guest has not stopped within the timeout; `destroy`\n"
     "then stops it at once.\n",
     VMCTL_OPT_WAIT, 1, 1, cmd_shutdown},
    {"destroy", "ID", "ID", "stop QEMU at once (SIGTERM, then SIGKILL)",
     "POST /v1/domains/{id}/destroy", NULL, 0, 1, 1, cmd_destroy},
    {"suspend", "ID", "ID", "pause the vCPUs", "POST /v1/domains/{id}/suspend", NULL, 0, 1, 1,
     cmd_suspend},
    {"resume", "ID", "ID", "run paused vCPUs again", "POST /v1/domains/{id}/resume", NULL, 0, 1, 1,
     cmd_resume},
    {"reset", "ID", "ID", "reset the machine, like its reset button", "POST /v1/domains/{id}/reset",
     NULL, 0, 1, 1, cmd_reset},
    {"state", "ID", "ID", "the state and its reason (never waits for QEMU)",
     "GET /v1/domains/{id}/state", NULL, 0, 1, 1, cmd_state},
    {"info", "ID", "ID", "a domain's config, state, monitor and job (like dominfo)",
     "GET /v1/domains/{id}", NULL, 0, 1, 1, cmd_info},
    {"stats", "ID", "ID", "ask QEMU for its status, vCPU threads and block I/O",
     "GET /v1/domains/{id}/stats", NULL, 0, 1, 1, cmd_stats},
    {"qmp", "ID JSON", "ID JSON", "send a raw QMP command; marks the domain tainted",
     "POST /v1/domains/{id}/qmp",
     "JSON is a QMP command, '{\"execute\":\"query-status\"}', or just its name,\n"
     "query-status. QEMU's reply is printed as JSON. Like virsh\n"
     "qemu-monitor-command, this bypasses moor-vmd, which marks the domain\n"
     "tainted for good; a warning says so on stderr.\n",
     0, 2, 2, cmd_qmp},
    {"events", "", "", "print events as they happen, until Ctrl-C", "GET /v1/events",
     "One line per event: TIME DOMAIN TYPE details. With --json, the daemon's\n"
     "JSON lines as they are. Stops on SIGINT or SIGTERM (exit 0), when the daemon\n"
     "closes the stream, or after the global --timeout if one was given.\n",
     VMCTL_FOLLOWS, 0, 0, cmd_events},
    {"debug", "", "", "what the daemon holds: objects, jobs, QMP calls, workers", "GET /v1/debug",
     NULL, 0, 0, 0, cmd_debug},
    {"version", "", "", "the client's, the daemon's and QEMU's versions", "GET /v1/version", NULL,
     0, 0, 0, cmd_version},
    {"save", "[--bandwidth MIB] ID FILE", "ID FILE",
     "save a running domain's memory to a new FILE; it is shut off after",
     "POST /v1/domains/{id}/save",
     "Follows the job until it ends: a progress bar on a terminal, plain lines\n"
     "otherwise, JSON lines with --json. Ctrl-C stops following, not the save\n"
     "(`abort` stops it). FILE must not exist; its directory must.\n",
     VMCTL_OPT_BANDWIDTH, 2, 2, vmctl_cmd_save},
    {"restore", "[--paused] FILE", "FILE", "start a domain again from a save FILE",
     "POST /v1/domains/restore",
     "Defines the domain from the file when it is not defined. Follows the job as\n"
     "save does.\n",
     VMCTL_OPT_PAUSED, 1, 1, vmctl_cmd_restore},
    {"backup", "[--disk NAME] [--bandwidth MIB] ID TARGET", "ID TARGET",
     "copy a running domain's disk into a new image TARGET of the pool",
     "POST /v1/domains/{id}/backup",
     "Follows the job as save does. TARGET is created (qcow2, the disk's size);\n"
     "the disk's image cannot be resized or deleted until the backup ends. A\n"
     "backup that fails or is aborted leaves no TARGET.\n",
     VMCTL_OPT_BANDWIDTH | VMCTL_OPT_DISK, 2, 2, vmctl_cmd_backup},
    {"job", "ID", "ID", "the running save or restore, and the last one's outcome",
     "GET /v1/domains/{id}/job", NULL, 0, 1, 1, vmctl_cmd_job},
    {"abort", "ID", "ID", "stop the running save or restore", "DELETE /v1/domains/{id}/job", NULL,
     0, 1, 1, vmctl_cmd_abort},
    /* images.c */
    {"image-list", "", "", "list the image pool: format, size, backing, users, blocks",
     "GET /v1/images",
     "Columns: NAME, FORMAT, SIZE (virtual), BACKING (an overlay's base), USED BY\n"
     "(domains whose config names it), BLOCKED (operations refused now).\n",
     0, 0, 0, vmctl_cmd_image_list},
    {"image-create", "NAME SIZE_MIB [FORMAT]", "NAME SIZE_MIB",
     "create an image, or a qcow2 overlay on BASE", "POST /v1/images",
     "FORMAT is qcow2 (the default) or raw. For an overlay on image BASE:\n"
     "  moor-vmctl image-create NAME backing=BASE [SIZE_MIB]\n"
     "An overlay takes its base's size unless\n"
     "SIZE_MIB is given; the base cannot be resized, deleted or used writable\n"
     "while the overlay exists.\n",
     0, 2, 3, vmctl_cmd_image_create},
    {"image-delete", "NAME", "NAME", "delete an image nothing uses or blocks",
     "DELETE /v1/images/{name}",
     "Refused (exit 1) with the reason while a domain uses it, an overlay has it\n"
     "as its backing file, or a job blocks it.\n",
     0, 1, 1, vmctl_cmd_image_delete},
    {"image-resize", "NAME SIZE_MIB", "NAME SIZE_MIB", "grow an image (through QEMU if running)",
     "POST /v1/images/{name}/resize", NULL, 0, 2, 2, vmctl_cmd_image_resize},
    {"image-info", "NAME", "NAME", "an image's details, its users and what blocks it",
     "GET /v1/images/{name}", NULL, 0, 1, 1, vmctl_cmd_image_info},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, NULL},
};
