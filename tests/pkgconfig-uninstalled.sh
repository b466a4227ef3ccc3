#!/bin/sh
# SPDX-License-Identifier: MIT
#
# pkgconfig-uninstalled.sh - the uninstalled pkg-config file offers what an
# outside user may include and nothing more:
#
#   pkgconfig-uninstalled.sh PKG_CONFIG CC BUILD_ROOT
#
# With only its Cflags, <moor/object.h> compiles and the library's private
# headers (src/*-internal.h, src/*-priv.h) cannot be found. Any private
# header reachable that way fails the test, naming it.
set -eu

[ $# -eq 3 ] || { echo "usage: $0 PKG_CONFIG CC BUILD_ROOT" >&2; exit 2; }
pkgconfig=$1 cc=$2 build=$3
srcdir=$(dirname "$0")/..

cflags=$(PKG_CONFIG_PATH="$build/meson-uninstalled" "$pkgconfig" --cflags moor)
echo "Cflags: $cflags"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

printf '#include <moor/object.h>\nint main(void) { return 0; }\n' >"$tmp/public.c"
# shellcheck disable=SC2086 # the flags are words
if ! "$cc" $cflags -fsyntax-only "$tmp/public.c"; then
    echo "FAIL: <moor/object.h> does not compile with the uninstalled Cflags" >&2
    exit 1
fi

bad=0
for h in "$srcdir"/src/*-internal.h "$srcdir"/src/*-priv.h; do
    [ -e "$h" ] || continue
    name=$(basename "$h")
    printf '#include "%s"\n' "$name" >"$tmp/private.c"
    # shellcheck disable=SC2086
    if "$cc" $cflags -fsyntax-only "$tmp/private.c" 2>/dev/null; then
        echo "FAIL: private header $name is reachable through the uninstalled Cflags" >&2
        bad=1
    fi
done
[ "$bad" = 0 ] && echo "PASS: only the public headers are reachable"
exit "$bad"
