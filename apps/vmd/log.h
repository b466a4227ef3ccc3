/* SPDX-License-Identifier: MIT */
/*
 * log.h - moor-vmd's log: one line per event worth knowing (a domain
 * started or stopped, a timeout, a refusal), to stderr, as text or with
 * the systemd journal's priority prefixes.
 */
#ifndef MOOR_VMD_LOG_H
#define MOOR_VMD_LOG_H

#include <pthread.h>
#include <stdint.h>

#include "vmd.h"

enum vmd_log_level {
    VMD_LOG_ERR = 3, /* syslog priorities, as the journal reads them */
    VMD_LOG_WARNING = 4,
    VMD_LOG_NOTICE = 5,
    VMD_LOG_INFO = 6,
    VMD_LOG_DEBUG = 7,
};

/*
 * vmd_log_setup - choose the format (before any thread logs) and the
 * lowest level printed (VMD_LOG_INFO unless MOOR_VMD_DEBUG is set).
 * Locks: none. Blocks: no. Context: main thread, at start.
 */
void vmd_log_setup(enum vmd_log_format format);

/*
 * vmd_log - print one line. @domain and @api may be NULL (omitted).
 * The line is written with one write(2), so lines of different threads
 * never interleave. Locks: none held or taken. Blocks: on stderr only.
 * Context: any thread.
 */
__attribute__((format(printf, 4, 5))) void vmd_log(enum vmd_log_level level, const char *domain,
                                                   const char *api, const char *fmt, ...);

/*
 * A rate limit for a line that a client can make the daemon print at will
 * (a refusal that a retrying client provokes thousands of times a second:
 * a hung QEMU's 504s). Each limit lets VMD_LOG_BURST lines through per
 * VMD_LOG_WINDOW_MS window; the rest are counted, and the first line let
 * through in a later window is preceded by one "N similar lines
 * suppressed" line. One limit per call site, shared by every domain: the
 * summary says that lines were dropped, the first lines of each window
 * say what kind. Static storage: `static struct vmd_log_limit rl =
 * VMD_LOG_LIMIT_INIT;`.
 */
#define VMD_LOG_BURST     5u
#define VMD_LOG_WINDOW_MS 10000u

struct vmd_log_limit {
    pthread_mutex_t lock;
    int64_t window_start_ms; /* CLOCK_MONOTONIC; 0: no window yet */
    unsigned printed;        /* lines let through in this window */
    unsigned long suppressed;
};

#define VMD_LOG_LIMIT_INIT                                                                         \
    {                                                                                              \
        PTHREAD_MUTEX_INITIALIZER, 0, 0, 0                                                         \
    }

/*
 * vmd_log_limited - vmd_log() through @limit (see above). A line below the
 * printed level is dropped without touching @limit.
 * Locks: @limit's mutex, a leaf, briefly (never while writing).
 * Blocks: on stderr only. Context: any thread.
 */
__attribute__((format(printf, 5, 6))) void vmd_log_limited(struct vmd_log_limit *limit,
                                                           enum vmd_log_level level,
                                                           const char *domain, const char *api,
                                                           const char *fmt, ...);

#endif /* MOOR_VMD_LOG_H */
