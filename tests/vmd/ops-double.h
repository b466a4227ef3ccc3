/* SPDX-License-Identifier: MIT */
/*
 * ops-double.h - controls of the test double of domain.h (ops-double.c):
 * an in-memory implementation whose ops that would talk to QEMU can be
 * told to fail with a code or to block until released, so the HTTP side
 * (routing, errors, lanes, shutdown) can be tested without QEMU.
 * All functions: any thread; they take the double's one mutex.
 */
#ifndef MOOR_VMD_OPS_DOUBLE_H
#define MOOR_VMD_OPS_DOUBLE_H

#include <stdbool.h>

/* Ops on @name (stats, start, shutdown, suspend, resume, reset, qmp,
 * undefine) fail with -errno @code (0: succeed again). */
void ops_double_fail(const char *name, int code);

/* While @hung, vmd_domain_fail_fast refuses the calls on @name whose op
 * starts with a QMP call (-ETIMEDOUT), as the real one does for a domain
 * whose monitor is marked unresponsive. */
void ops_double_hang(const char *name, bool hung);

/* Ops on @name block until ops_double_release(@name) or a destroy of it
 * (then they fail with -EPIPE, as when QEMU is killed), or 30 s pass
 * (-ETIMEDOUT). */
void ops_double_block(const char *name);
void ops_double_release(const char *name);

/* Wait up to @timeout_ms for @n callers to be blocked on @name.
 * Returns how many are (check it against @n). */
unsigned ops_double_wait_blocked(const char *name, unsigned n, int timeout_ms);

/* The most callers ever inside an op on @name at once. */
unsigned ops_double_peak(const char *name);

/* Forget every control and figure. */
void ops_double_reset(void);

#endif /* MOOR_VMD_OPS_DOUBLE_H */
