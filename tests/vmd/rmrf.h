/* SPDX-License-Identifier: MIT */
/*
 * rmrf.h - remove a test's temporary tree without a shell: nftw() walks it
 * depth-first (contents before their directory) and unlinks or rmdirs each
 * entry, never following a symlink. Header-only; the includer defines
 * _GNU_SOURCE (or builds as gnu11, as meson does) before any include.
 */
#ifndef MOOR_TEST_RMRF_H
#define MOOR_TEST_RMRF_H

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static inline int rmrf_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return (flag == FTW_DP ? rmdir(path) : unlink(path)) < 0 ? -1 : 0;
}

/* Remove @root and everything under it. 0 on success (a missing @root
 * included), else -1 with errno set by the failed step. Does not block
 * beyond the filesystem calls; the caller owns @root. */
static inline int rmrf(const char *root)
{
    struct stat st;

    if (lstat(root, &st) < 0 && errno == ENOENT)
        return 0;
    return nftw(root, rmrf_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
