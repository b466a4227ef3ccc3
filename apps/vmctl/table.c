/* SPDX-License-Identifier: MIT */
/*
 * table.c - aligned tables and human-readable numbers for moor-vmctl.
 *
 * A table keeps every cell (copied) until it is printed, because a column
 * is as wide as its widest cell and that is known only at the end. Cells
 * are stored row-major in one growing array of strings; row 0 is the
 * header when there is one.
 */
#include "table.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

struct vmctl_table {
    size_t ncols;
    size_t nrows; /* the header included */
    size_t cap;   /* rows allocated */
    bool has_header;
    char **cells; /* nrows * ncols strings */
};

struct vmctl_table *vmctl_table_new(size_t ncols, const char *const *header)
{
    struct vmctl_table *t;

    if (ncols == 0)
        return NULL;
    t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->ncols = ncols;
    if (header && vmctl_table_add(t, header) < 0) {
        vmctl_table_free(t);
        return NULL;
    }
    t->has_header = header != NULL;
    return t;
}

void vmctl_table_free(struct vmctl_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

void vmctl_table_freep(struct vmctl_table **t)
{
    vmctl_table_free(*t);
}

static int grow(struct vmctl_table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 8;
    char **cells;

    if (t->nrows < t->cap)
        return 0;
    cells = realloc(t->cells, cap * t->ncols * sizeof(*cells));
    if (!cells)
        return -ENOMEM;
    t->cells = cells;
    t->cap = cap;
    return 0;
}

int vmctl_table_add(struct vmctl_table *t, const char *const *cells)
{
    char **row;
    size_t i;

    if (grow(t) < 0)
        return -ENOMEM;
    row = t->cells + t->nrows * t->ncols;
    for (i = 0; i < t->ncols; i++) {
        row[i] = strdup(cells[i] ? cells[i] : "-");
        if (!row[i])
            break;
    }
    if (i < t->ncols) {
        while (i-- > 0)
            free(row[i]);
        return -ENOMEM;
    }
    t->nrows++;
    return 0;
}

int vmctl_table_print(const struct vmctl_table *t, FILE *f, size_t indent)
{
    size_t *width = calloc(t->ncols, sizeof(*width));

    if (!width)
        return -ENOMEM;
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t len = strlen(t->cells[r * t->ncols + c]);

            if (len > width[c])
                width[c] = len;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        const char *const *row = (const char *const *)t->cells + r * t->ncols;

        fprintf(f, "%*s", (int)indent, "");
        for (size_t c = 0; c + 1 < t->ncols; c++)
            fprintf(f, "%-*s  ", (int)width[c], row[c]);
        fprintf(f, "%s\n", row[t->ncols - 1]);
    }
    free(width);
    return ferror(f) ? -EIO : 0;
}

char *vmctl_format_duration(uint64_t ms, char *buf, size_t size)
{
    uint64_t s = ms / 1000;

    if (ms < 1000)
        snprintf(buf, size, "%" PRIu64 " ms", ms);
    else if (ms < 60 * 1000)
        snprintf(buf, size, "%" PRIu64 ".%" PRIu64 " s", s, ms % 1000 / 100);
    else if (s < 3600)
        snprintf(buf, size, "%" PRIu64 " min %" PRIu64 " s", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, size, "%" PRIu64 " h %" PRIu64 " min", s / 3600, s % 3600 / 60);
    else
        snprintf(buf, size, "%" PRIu64 " d %" PRIu64 " h", s / 86400, s % 86400 / 3600);
    return buf;
}

char *vmctl_format_bytes(uint64_t bytes, char *buf, size_t size)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    uint64_t whole = bytes, rest = 0;
    size_t u = 0;

    while (whole >= 1024 && u + 1 < sizeof(unit) / sizeof(unit[0])) {
        rest = whole % 1024;
        whole /= 1024;
        u++;
    }
    /* One decimal (tenths of the unit, rounded down) below 10 units. */
    if (u > 0 && whole < 10 && rest * 10 / 1024 > 0)
        snprintf(buf, size, "%" PRIu64 ".%" PRIu64 " %s", whole, rest * 10 / 1024, unit[u]);
    else
        snprintf(buf, size, "%" PRIu64 " %s", whole, unit[u]);
    return buf;
}
