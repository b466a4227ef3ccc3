/* SPDX-License-Identifier: MIT */
/*
 * table.h - moor-vmctl's human output: aligned tables whose column widths
 * come from the data (as `virsh list` and `kubectl get` print them), and
 * durations and sizes written for people ("3 min 12 s", "1.5 GiB").
 *
 * Everything here runs on moor-vmctl's one thread; nothing blocks but the
 * final write to the FILE.
 */
#ifndef MOOR_VMCTL_TABLE_H
#define MOOR_VMCTL_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct vmctl_table;

/*
 * vmctl_table_new - a table of @ncols columns. @header (may be NULL: no
 * header line) names them; the strings are copied.
 * Ownership: the caller's; vmctl_table_free. Returns NULL on -ENOMEM.
 */
struct vmctl_table *vmctl_table_new(size_t ncols, const char *const *header);

/* vmctl_table_free - free the table and its cells. NULL-safe. */
void vmctl_table_free(struct vmctl_table *t);

/*
 * vmctl_table_add - append a row of the table's ncols cells; a NULL cell
 * prints as "-". The strings are copied.
 * Returns 0, or -ENOMEM (the table is unchanged).
 */
int vmctl_table_add(struct vmctl_table *t, const char *const *cells);

/*
 * vmctl_table_print - write the table to @f: each column as wide as its
 * widest cell (header included), columns @indent spaces in and two spaces
 * apart, the last column unpadded (no trailing blanks).
 * Returns 0, -ENOMEM, or -EIO when @f failed.
 */
int vmctl_table_print(const struct vmctl_table *t, FILE *f, size_t indent);

/* Cleanup attribute: the table is freed at scope exit. */
void vmctl_table_freep(struct vmctl_table **t);
#define vmctl_autotable __attribute__((cleanup(vmctl_table_freep)))

/*
 * vmctl_format_duration - @ms as people read it: "850 ms", "12.3 s",
 * "4 min 5 s", "2 h 7 min", "3 d 4 h". Writes at most @size bytes
 * (NUL included) to @buf and returns @buf.
 */
char *vmctl_format_duration(uint64_t ms, char *buf, size_t size);

/*
 * vmctl_format_bytes - @bytes in binary units: "512 B", "1.5 KiB",
 * "128 MiB", "2 GiB" (one decimal below 10 units, none above, and none
 * when the value is whole). Writes to @buf as vmctl_format_duration.
 */
char *vmctl_format_bytes(uint64_t bytes, char *buf, size_t size);

#endif /* MOOR_VMCTL_TABLE_H */
