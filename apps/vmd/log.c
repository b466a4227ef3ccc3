/* SPDX-License-Identifier: MIT */
/*
 * log.c - moor-vmd's log lines. Each line is formatted into a stack buffer
 * and written with one write(2) (atomic for a pipe or the journal's stream
 * up to PIPE_BUF, and in practice for a terminal), so no lock is needed.
 */
#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum vmd_log_format log_format = VMD_LOG_TEXT;
static enum vmd_log_level log_max = VMD_LOG_INFO;

void vmd_log_setup(enum vmd_log_format format)
{
    log_format = format;
    log_max = getenv("MOOR_VMD_DEBUG") ? VMD_LOG_DEBUG : VMD_LOG_INFO;
}

static const char *level_name(enum vmd_log_level level)
{
    switch (level) {
    case VMD_LOG_ERR:
        return "error";
    case VMD_LOG_WARNING:
        return "warning";
    case VMD_LOG_NOTICE:
        return "notice";
    case VMD_LOG_INFO:
        return "info";
    case VMD_LOG_DEBUG:
        return "debug";
    }
    return "?";
}

/* Append to @buf at *@len what fits of the format; *@len never passes size - 1. */
__attribute__((format(printf, 4, 0))) static void append(char *buf, size_t size, size_t *len,
                                                         const char *fmt, va_list ap)
{
    int n;

    if (*len >= size - 1)
        return;
    n = vsnprintf(buf + *len, size - *len, fmt, ap);
    if (n > 0)
        *len += (size_t)n < size - *len ? (size_t)n : size - *len - 1;
}

__attribute__((format(printf, 4, 5))) static void appendf(char *buf, size_t size, size_t *len,
                                                          const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    append(buf, size, len, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 4, 0))) static void
log_line(enum vmd_log_level level, const char *domain, const char *api, const char *fmt, va_list ap)
{
    char buf[1024];
    size_t len = 0;

    if (log_format == VMD_LOG_JOURNAL)
        appendf(buf, sizeof(buf), &len, "<%d>", (int)level);
    else
        appendf(buf, sizeof(buf), &len, "moor-vmd: %s: ", level_name(level));
    if (domain)
        appendf(buf, sizeof(buf), &len, "domain %s: ", domain);
    if (api)
        appendf(buf, sizeof(buf), &len, "%s: ", api);
    append(buf, sizeof(buf), &len, fmt, ap);
    /* Control characters (a newline in a name would forge a line) become '?'. */
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
            buf[i] = '?';
    buf[len++] = '\n';
    if (write(STDERR_FILENO, buf, len) < 0) {
        /* Nowhere left to say it. */
    }
}

void vmd_log(enum vmd_log_level level, const char *domain, const char *api, const char *fmt, ...)
{
    va_list ap;

    if (level > log_max)
        return;
    va_start(ap, fmt);
    log_line(level, domain, api, fmt, ap);
    va_end(ap);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether a line may pass @limit now; *@dropped gets the count of lines
 * suppressed in earlier windows, to report first (0: none). */
static bool limit_pass(struct vmd_log_limit *limit, unsigned long *dropped)
{
    int64_t now = now_ms();
    bool pass;

    pthread_mutex_lock(&limit->lock);
    *dropped = 0;
    if (!limit->window_start_ms || now - limit->window_start_ms >= VMD_LOG_WINDOW_MS) {
        limit->window_start_ms = now;
        limit->printed = 0;
    }
    pass = limit->printed < VMD_LOG_BURST;
    if (pass) {
        limit->printed++;
        *dropped = limit->suppressed;
        limit->suppressed = 0;
    } else {
        limit->suppressed++;
    }
    pthread_mutex_unlock(&limit->lock);
    return pass;
}

void vmd_log_limited(struct vmd_log_limit *limit, enum vmd_log_level level, const char *domain,
                     const char *api, const char *fmt, ...)
{
    unsigned long dropped;
    va_list ap;

    if (level > log_max || !limit_pass(limit, &dropped))
        return;
    if (dropped)
        vmd_log(level, NULL, NULL, "%lu similar lines suppressed (at most %u per %u s)", dropped,
                VMD_LOG_BURST, VMD_LOG_WINDOW_MS / 1000);
    va_start(ap, fmt);
    log_line(level, domain, api, fmt, ap);
    va_end(ap);
}
