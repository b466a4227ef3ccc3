#!/bin/sh
# SPDX-License-Identifier: MIT
#
# bench/callgrind.sh - instructions per iteration of each single-thread
# pair case, and how many more than the bare atomic pair.
#
# Usage: bench/callgrind.sh path/to/moor-bench [ITERS]
#
# Method: one valgrind run per case, `moor-bench --filter CASE --threads 1
# --runs 1 --iters ITERS` (default ITERS 1000000), with collection switched
# on only inside the case's loop function, bench_loop_CASE (never inlined;
# see bench/bench.h), callees included. moor-bench runs that loop twice per
# figure (warm-up + one run), so instructions per iteration = total Ir /
# (2 * ITERS); the loop's entry and exit add under 0.0001 at 1000000.
# Instruction counts do not depend on the machine's load, unlike times.
#
# Output: a table for people, then one JSON object per case (lines starting
# with '{'; `grep '^{'` extracts them):
#   {"bench": NAME, "ir_per_iter": X, "delta_vs_atomic_pair": X}
set -eu

exe=${1:?usage: bench/callgrind.sh path/to/moor-bench [ITERS]}
iters=${2:-1000000}
# Every registered case but the slow set-ups (100k-object tables, a
# background writer), the event-loop dispatch cases (three system calls
# per iteration: minutes each under valgrind, and their baseline is the bare
# epoll loop, not the atomic pair; see docs/loop.md for their command) and
# the monitor's round trips (threads and sockets, not a fast path);
# CALLGRIND_CASES="a b" picks others.
cases=${CALLGRIND_CASES:-$("$exe" --list | awk '$1 !~ /100k|writer|_dispatch$|monitor_/ { print $1 }')}

command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind not found" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Instructions per iteration of case $1, from the callgrind totals.
ir_per_iter() {
    out="$tmp/callgrind.out.$1"
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        --toggle-collect="bench_loop_$1" \
        "$exe" --filter "$1" --threads 1 --runs 1 --iters "$iters" --json \
        >/dev/null 2>"$tmp/valgrind.log" ||
        { cat "$tmp/valgrind.log" >&2; exit 1; }
    awk -v iters="$iters" '/^(summary|totals):/ { ir = $2 }
        END { printf "%.3f\n", ir / (2 * iters) }' "$out"
}

known=$("$exe" --list | awk '{ print $1 }')
results=""
for c in $cases; do
    if ! echo "$known" | grep -qx "$c"; then
        echo "callgrind.sh: $c not built (GLib missing?), skipped" >&2
        continue
    fi
    results="$results $c=$(ir_per_iter "$c")"
done

base=$(echo "$results" | tr ' ' '\n' | awk -F= '$1 == "atomic_pair" { print $2 }')
printf '# callgrind, %s iterations: instructions per iteration (loop + callees)\n' "$iters"
printf '%-24s %12s %22s\n' bench ir_per_iter delta_vs_atomic_pair
for r in $results; do
    printf '%-24s %12s %22s\n' "${r%%=*}" "${r#*=}" \
        "$(awk -v a="${r#*=}" -v b="$base" 'BEGIN { printf "%+.3f", a - b }')"
done
for r in $results; do
    awk -v n="${r%%=*}" -v a="${r#*=}" -v b="$base" 'BEGIN {
        printf "{\"bench\": \"%s\", \"ir_per_iter\": %.3f, \"delta_vs_atomic_pair\": %.3f}\n",
            n, a, a - b }'
done
