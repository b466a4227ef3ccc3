/* SPDX-License-Identifier: MIT */
/*
 * log.h - moor-vmd's log: one line per event worth knowing (a domain
 * started or stopped, a timeout, a refusal), to stderr, as text or with
 * the systemd journal's priority prefixes.
 */
#ifndef MOOR_VMD_LOG_H
#define MOOR_VMD_LOG_H

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

#endif /* MOOR_VMD_LOG_H */
