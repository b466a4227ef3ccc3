/* SPDX-License-Identifier: MIT */
/*
 * longjob.h - moor-vmd-bench --longjob (longjob.c): state, stats and job
 * latency from 4 clients during a real save and a real restore.
 */
#ifndef MOOR_BENCH_VMD_LONGJOB_H
#define MOOR_BENCH_VMD_LONGJOB_H

#include <stdbool.h>

/* Run @runs save + restore windows on a daemon started from @exe; print
 * the figures (one JSON object per figure with @json). Returns the exit
 * status (0, or 1 after a message on stderr). */
int longjob_bench(const char *exe, unsigned runs, bool json);

#endif /* MOOR_BENCH_VMD_LONGJOB_H */
