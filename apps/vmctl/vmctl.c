/* SPDX-License-Identifier: MIT */
/*
 * vmctl.c - moor-vmctl's command line: global options, then a sub-command
 * and its own options (GNU getopt_long, permuted, so `start vm1 --paused`
 * and `start --paused vm1` are the same), then one call into commands.c.
 *
 *   moor-vmctl [--socket PATH] [--timeout SECONDS] [--json] COMMAND [ARG]...
 *
 * Usage errors are found before anything is sent and exit with 2; the
 * daemon's refusals and transport failures exit with 1 (see vmctl_check).
 */
#define _GNU_SOURCE /* asprintf */
#include "vmctl.h"
#include "table.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#ifndef VMCTL_VERSION
#error "VMCTL_VERSION comes from meson.build"
#endif

#define DEFAULT_TIMEOUT_MS  120000L
#define SHUTDOWN_MARGIN_MS  30000L /* the daemon's job wait on top of the shutdown wait */
#define DEFAULT_SHUTDOWN_MS 30000L
#define MAX_SECONDS         31536000.0 /* a year */

/* ---- help ---------------------------------------------------------------- */

static void print_rows(FILE *f, const char *const (*rows)[2], size_t n)
{
    vmctl_autotable struct vmctl_table *t = vmctl_table_new(2, NULL);

    for (size_t i = 0; t && i < n; i++)
        if (vmctl_table_add(t, rows[i]) < 0)
            return;
    if (t)
        vmctl_table_print(t, f, 2);
}

static const char *const global_options[][2] = {
    {"-s, --socket PATH", "the daemon's socket (default: $MOOR_VMD_SOCKET, else"},
    {"", "/run/moor-vmd/moor-vmd.sock as root, else"},
    {"", "$XDG_RUNTIME_DIR/moor-vmd/moor-vmd.sock)"},
    {"-t, --timeout SECONDS", "bound each request (default 120; 0: none)"},
    {"-j, --json", "print the API's JSON: indented on a terminal, one line"},
    {"", "otherwise (also accepted after the command)"},
    {"-h, --help", "this help (`moor-vmctl help COMMAND`: a command's)"},
    {"-V, --version", "the client's version (`version` asks the daemon too)"},
};

static void usage_tool(FILE *f)
{
    vmctl_autotable struct vmctl_table *t = vmctl_table_new(2, NULL);

    fprintf(f, "Usage: moor-vmctl [OPTION]... COMMAND [ARG]...\n"
               "Manage moor-vmd's virtual machines through the daemon's UNIX socket.\n\n"
               "Options:\n");
    print_rows(f, global_options, sizeof(global_options) / sizeof(global_options[0]));
    fprintf(f, "\nCommands (ID is a domain's name or UUID):\n");
    for (const struct vmctl_command *cmd = vmctl_commands; t && cmd->name; cmd++) {
        char left[64];

        snprintf(left, sizeof(left), "%s%s%s", cmd->name, *cmd->synopsis ? " " : "", cmd->synopsis);
        if (vmctl_table_add(t, (const char *const[]){left, cmd->summary}) < 0)
            return;
    }
    if (t && vmctl_table_add(t, (const char *const[]){"help [COMMAND]", "this help, or a "
                                                                        "command's"}) == 0)
        vmctl_table_print(t, f, 2);
    fprintf(f, "\nExit status: 0 done, 1 failed (the daemon refused, or is not running),\n"
               "2 usage error.\n");
}

static void usage_command(FILE *f, const struct vmctl_command *cmd)
{
    const char *const rows[][2] = {
        {"    --paused", "leave the vCPUs stopped (`resume` runs them)"},
        {"-t, --timeout SECONDS", "how long the daemon waits for the guest to stop"},
        {"", "(default: the daemon's, 30 s)"},
        {"-a, --all", "accepted for virsh users: every defined domain is"},
        {"", "always listed, running or not"},
        {"-b, --bandwidth MIB", "QEMU's bandwidth for this save, MiB/s"},
        {"-d, --disk NAME", "the image of the disk to copy (default: the first disk)"},
        {"-j, --json", "print the API's JSON"},
        {"-s, --socket PATH", "the daemon's socket"},
        {"-h, --help", "this help"},
    };
    const char *chosen[sizeof(rows) / sizeof(rows[0])][2];
    size_t n = 0;

    fprintf(f, "Usage: moor-vmctl %s%s%s\n%c%s.\n", cmd->name, *cmd->synopsis ? " " : "",
            cmd->synopsis, toupper((unsigned char)cmd->summary[0]), cmd->summary + 1);
    if (cmd->details)
        fprintf(f, "\n%s", cmd->details);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        bool take = i < 1   ? cmd->options & VMCTL_OPT_PAUSED
                    : i < 3 ? cmd->options & VMCTL_OPT_WAIT
                    : i < 5 ? cmd->options & VMCTL_OPT_ALL
                    : i < 6 ? cmd->options & VMCTL_OPT_BANDWIDTH
                    : i < 7 ? cmd->options & VMCTL_OPT_DISK
                            : true;

        if (take) {
            chosen[n][0] = rows[i][0];
            chosen[n++][1] = rows[i][1];
        }
    }
    fprintf(f, "\nOptions:\n");
    print_rows(f, (const char *const(*)[2])chosen, n);
    fprintf(f, "\nAPI: %s (see docs/vmd-api.md)\n", cmd->route);
}

static const struct vmctl_command *find_command(const char *name)
{
    for (const struct vmctl_command *cmd = vmctl_commands; cmd->name; cmd++)
        if (strcmp(cmd->name, name) == 0)
            return cmd;
    return NULL;
}

static int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "moor-vmctl: %s%s", cmd ? cmd : "", cmd ? ": " : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'moor-vmctl %s%s--help' for more information.\n", cmd ? cmd : "",
            cmd ? " " : "");
    return VMCTL_EXIT_USAGE;
}

/* ---- option values --------------------------------------------------------- */

/* SECONDS (a decimal number, 0 allowed) as milliseconds; -1 when invalid. */
static long parse_seconds(const char *text)
{
    char *end;
    double s;

    errno = 0;
    s = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(s) || s < 0 || s > MAX_SECONDS)
        return -1;
    return (long)llround(s * 1000.0);
}

/* The socket of the daemon when --socket is not given: as moor-vmd's default.
 * Ownership: the caller's (free). NULL when nothing names one, or -ENOMEM. */
static char *default_socket(void)
{
    const char *env = getenv("MOOR_VMD_SOCKET"), *xdg = getenv("XDG_RUNTIME_DIR");
    char *path = NULL;

    if (env && *env)
        return strdup(env);
    if (geteuid() == 0)
        return strdup("/run/moor-vmd/moor-vmd.sock");
    if (!xdg || !*xdg)
        return NULL;
    if (asprintf(&path, "%s/moor-vmd/moor-vmd.sock", xdg) < 0)
        return NULL;
    return path;
}

/* ---- parsing ------------------------------------------------------------- */

/* One option of either parse; returns -1 when @opt is not one of the
 * options both parses share, else an exit status (0 to go on). */
static int common_option(int opt, const char *cmd, struct vmctl_args *a)
{
    switch (opt) {
    case 'j':
        a->json = true;
        return 0;
    case 's':
        if (!*optarg)
            return usage_error(cmd, "%s", "--socket needs a path");
        a->socket_path = optarg;
        return 0;
    default:
        return -1;
    }
}

static int bad_option(const char *cmd, int opt, char **argv)
{
    const char *last = argv[optind - 1];
    char shortopt[3] = {'-', (char)optopt, '\0'};
    const char *name = strncmp(last, "--", 2) == 0 ? last : shortopt;
    int len = (int)strcspn(name, "=");

    if (opt == ':')
        return usage_error(cmd, "option '%.*s' needs a value", len, name);
    return usage_error(cmd, "unrecognized option '%.*s'", len, name);
}

/* Global options; on return *@first is the index of the command in argv. */
static int parse_global(int argc, char **argv, struct vmctl_args *a, int *first)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'}, {"timeout", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},         {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0},
    };
    int opt;

    opterr = 0;
    while ((optopt = 0, opt = getopt_long(argc, argv, "+:s:t:jhV", longopts, NULL)) != -1) {
        int rc = opt == ':' ? -1 : common_option(opt, NULL, a);

        if (rc >= 0) {
            if (rc)
                return rc;
            continue;
        }
        switch (opt) {
        case 't':
            a->timeout_ms = parse_seconds(optarg);
            if (a->timeout_ms < 0)
                return usage_error(NULL, "invalid --timeout '%s': expected seconds", optarg);
            a->timeout_given = true;
            break;
        case 'h':
            usage_tool(stdout);
            exit(VMCTL_EXIT_OK);
        case 'V':
            printf("moor-vmctl %s\n", VMCTL_VERSION);
            exit(VMCTL_EXIT_OK);
        default:
            return bad_option(NULL, opt, argv);
        }
    }
    *first = optind;
    return 0;
}

/* The sub-command's options and arguments: argv[0] is the command's name. */
static int parse_command(const struct vmctl_command *cmd, int argc, char **argv,
                         struct vmctl_args *a)
{
    struct option longopts[10] = {
        {"help", no_argument, NULL, 'h'},
        {"json", no_argument, NULL, 'j'},
        {"socket", required_argument, NULL, 's'},
    };
    char shortopts[16] = ":hjs:";
    size_t n = 3;
    int opt, nargs;

    if (cmd->options & VMCTL_OPT_PAUSED)
        longopts[n++] = (struct option){"paused", no_argument, NULL, 'p'};
    if (cmd->options & VMCTL_OPT_WAIT) {
        longopts[n++] = (struct option){"timeout", required_argument, NULL, 't'};
        strcat(shortopts, "t:");
    }
    if (cmd->options & VMCTL_OPT_ALL) {
        longopts[n++] = (struct option){"all", no_argument, NULL, 'a'};
        strcat(shortopts, "a");
    }
    if (cmd->options & VMCTL_OPT_BANDWIDTH) {
        longopts[n++] = (struct option){"bandwidth", required_argument, NULL, 'b'};
        strcat(shortopts, "b:");
    }
    if (cmd->options & VMCTL_OPT_DISK) {
        longopts[n++] = (struct option){"disk", required_argument, NULL, 'd'};
        strcat(shortopts, "d:");
    }
    optind = 0; /* glibc: start a new scan (and re-read the optstring) */
    while ((optopt = 0, opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        int rc = opt == ':' ? -1 : common_option(opt, cmd->name, a);

        if (rc >= 0) {
            if (rc)
                return rc;
            continue;
        }
        switch (opt) {
        case 'h':
            usage_command(stdout, cmd);
            exit(VMCTL_EXIT_OK);
        case 'p':
            a->paused = true;
            break;
        case 'a':
            break;
        case 'b': {
            char *end;
            a->bandwidth_mib_s = strtol(optarg, &end, 10);
            if (*end || end == optarg || a->bandwidth_mib_s < 1 || a->bandwidth_mib_s > 100000)
                return usage_error(cmd->name, "invalid --bandwidth '%s': expected MiB/s, 1..100000",
                                   optarg);
            break;
        }
        case 'd':
            a->disk = optarg;
            break;
        case 't':
            a->wait_ms = parse_seconds(optarg);
            if (a->wait_ms < 0)
                return usage_error(cmd->name, "invalid --timeout '%s': expected seconds", optarg);
            break;
        default:
            return bad_option(cmd->name, opt, argv);
        }
    }
    a->argv = argv + optind;
    a->argc = argc - optind;
    nargs = a->argc;
    if (nargs < cmd->min_args)
        return usage_error(cmd->name, "missing %s", cmd->operands);
    if (nargs > cmd->max_args)
        return usage_error(cmd->name, "unexpected argument '%s'", a->argv[cmd->max_args]);
    return 0;
}

/* `help [COMMAND]` */
static int help(int argc, char **argv)
{
    const struct vmctl_command *cmd;

    if (argc < 2) {
        usage_tool(stdout);
        return VMCTL_EXIT_OK;
    }
    cmd = find_command(argv[1]);
    if (!cmd)
        return usage_error("help", "unknown command '%s'", argv[1]);
    usage_command(stdout, cmd);
    return VMCTL_EXIT_OK;
}

/* The bound of each request: none for a stream unless asked for; the
 * shutdown wait must fit inside it. */
static long request_timeout(const struct vmctl_command *cmd, const struct vmctl_args *a)
{
    long need;

    if ((cmd->options & VMCTL_FOLLOWS) && !a->timeout_given)
        return 0;
    if (!(cmd->options & VMCTL_OPT_WAIT) || a->timeout_ms == 0)
        return a->timeout_ms;
    need = (a->wait_ms >= 0 ? a->wait_ms : DEFAULT_SHUTDOWN_MS) + SHUTDOWN_MARGIN_MS;
    return a->timeout_ms > need ? a->timeout_ms : need;
}

static int run(const struct vmctl_command *cmd, struct vmctl_args *a)
{
    vmctl_autofree char *fallback = NULL;
    struct vmctl_client *c;
    moor_error err = MOOR_ERROR_INIT;
    int rc;

    if (!a->socket_path) {
        a->socket_path = fallback = default_socket();
        if (!a->socket_path) {
            vmctl_errorf("no socket to use: give --socket PATH, or set MOOR_VMD_SOCKET or "
                         "XDG_RUNTIME_DIR");
            return VMCTL_EXIT_FAILED;
        }
    }
    a->pretty = a->json && isatty(STDOUT_FILENO);
    c = vmctl_client_new(a->socket_path, request_timeout(cmd, a), &err);
    if (!c) {
        vmctl_errorf("%s", moor_error_message(&err));
        return VMCTL_EXIT_FAILED;
    }
    rc = cmd->run(c, a);
    vmctl_client_free(c);
    return rc;
}

int main(int argc, char **argv)
{
    struct vmctl_args a = {.timeout_ms = DEFAULT_TIMEOUT_MS, .wait_ms = -1};
    const struct vmctl_command *cmd;
    int first = 0, rc;

    rc = parse_global(argc, argv, &a, &first);
    if (rc)
        return rc;
    if (first >= argc)
        return usage_error(NULL, "%s", "missing command");
    if (strcmp(argv[first], "help") == 0)
        return help(argc - first, argv + first);
    cmd = find_command(argv[first]);
    if (!cmd)
        return usage_error(NULL, "unknown command '%s'", argv[first]);
    rc = parse_command(cmd, argc - first, argv + first, &a);
    if (rc)
        return rc;
    return run(cmd, &a);
}
