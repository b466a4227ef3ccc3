#!/bin/sh
# SPDX-License-Identifier: MIT
#
# bench/callgrind.sh - instructions per iteration of each single-thread
# pair case, and how many more than the bare atomic pair.
#
# Usage: bench/callgrind.sh path/to/moor-bench [ITERS]
#
# Method: one valgrind run per case, `moor-bench --filter CASE --threads 1
# --runs 1 --iters ITERS --unpaired` (default ITERS 1000000), with
# collection switched on only inside the case's loop function,
# bench_loop_CASE (never inlined; see bench/bench.h), callees included.
# Unpaired, moor-bench measures each case once and runs its loop twice
# (warm-up + one run), so instructions per iteration = total Ir /
# (2 * ITERS); the loop's entry and exit add under 0.0001 at 1000000.
# (Paired, a case that is also the baseline of another case the filter
# matches would run again in that case's rounds and be counted twice.)
# Instruction counts do not depend on the machine's load, unlike times.
#
# Output: a table for people, then one JSON object per case (lines starting
# with '{'; `grep '^{'` extracts them):
#   {"bench": NAME, "ir_per_iter": X, "delta_vs_atomic_pair": X}
#
# CALLGRIND_CACHE=1 also runs callgrind's cache model and adds, per
# iteration, the simulated first-level data read misses (d1_miss) and
# last-level ones (ll_miss): a machine- and load-independent count of the
# memory traffic a lookup causes, for cases whose cost is cache misses
# (the 100k registry cases; name them with CALLGRIND_CASES). The model's
# caches are CALLGRIND_CACHE_ARGS, by default a 48 KiB 12-way L1 and an
# 8 MiB 16-way last level, 64-byte lines. It models neither TLBs nor
# prefetching nor other cores, so it ranks layouts, it does not time them.
set -eu

exe=${1:?usage: bench/callgrind.sh path/to/moor-bench [ITERS]}
iters=${2:-1000000}
cache=${CALLGRIND_CACHE:-0}
cache_args=${CALLGRIND_CACHE_ARGS:---D1=49152,12,64 --LL=8388608,16,64}
# Every registered case but the slow set-ups (100k-object tables, a
# background writer), the event-loop dispatch cases (three system calls
# per iteration: minutes each under valgrind, and their baseline is the bare
# epoll loop, not the atomic pair; see docs/loop.md for their command), the
# monitor's round trips (threads and sockets, not a fast path) and the
# job fairness trials (each one waits for sleeping threads, up to 5 ms:
# ITERS of them take hours); CALLGRIND_CASES="a b" picks others.
cases=${CALLGRIND_CASES:-$("$exe" --list | awk '$1 !~ /100k|writer|_dispatch$|monitor_|fair_/ { print $1 }')}

command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind not found" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Instructions (and with CALLGRIND_CACHE=1, "IR D1 LL" misses) per
# iteration of case $1, from the callgrind totals.
ir_per_iter() {
    out="$tmp/callgrind.out.$1"
    if [ "$cache" = 1 ]; then
        # shellcheck disable=SC2086 # cache_args is a list of options
        set -- "$1" --cache-sim=yes $cache_args
    fi
    c=$1
    shift
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        --toggle-collect="bench_loop_$c" "$@" \
        "$exe" --filter "$c" --threads 1 --runs 1 --iters "$iters" --unpaired --json \
        >/dev/null 2>"$tmp/valgrind.log" ||
        { cat "$tmp/valgrind.log" >&2; exit 1; }
    awk -v iters="$iters" -v cache="$cache" '
        /^events:/ { for (i = 2; i <= NF; i++) col[$i] = i }
        /^(summary|totals):/ { for (i = 2; i <= NF; i++) v[i] = $i }
        END {
            n = 2 * iters
            if (cache == 1)
                printf "%.3f:%.3f:%.3f\n", v[col["Ir"]] / n, v[col["D1mr"]] / n, v[col["DLmr"]] / n
            else
                printf "%.3f\n", v[col["Ir"]] / n
        }' "$out"
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

base=$(echo "$results" | tr ' ' '\n' | awk -F'[=:]' '$1 == "atomic_pair" { print $2 }')
printf '# callgrind, %s iterations: instructions per iteration (loop + callees)\n' "$iters"
if [ "$cache" = 1 ]; then
    printf '# cache model: %s; d1_miss, ll_miss: data read misses per iteration\n' "$cache_args"
    printf '%-24s %12s %22s %9s %9s\n' bench ir_per_iter delta_vs_atomic_pair d1_miss ll_miss
else
    printf '%-24s %12s %22s\n' bench ir_per_iter delta_vs_atomic_pair
fi
for r in $results; do
    echo "${r#*=}" | awk -F: -v n="${r%%=*}" -v b="$base" '{
        d = b == "" ? "-" : sprintf("%+.3f", $1 - b)
        if (NF == 3)
            printf "%-24s %12s %22s %9s %9s\n", n, $1, d, $2, $3
        else
            printf "%-24s %12s %22s\n", n, $1, d }'
done
for r in $results; do
    echo "${r#*=}" | awk -F: -v n="${r%%=*}" -v b="$base" '{
        d = b == "" ? "null" : sprintf("%.3f", $1 - b)
        printf "{\"bench\": \"%s\", \"ir_per_iter\": %.3f, \"delta_vs_atomic_pair\": %s", n, $1, d
        if (NF == 3)
            printf ", \"d1_miss\": %.3f, \"ll_miss\": %.3f", $2, $3
        printf "}\n" }'
done
