#!/bin/sh
# SPDX-License-Identifier: MIT
#
# bench/vmd/callgrind-state.sh - instructions moor-vmd executes per
# GET /v1/domains/{id}/state (all its threads: the loop thread's HTTP work
# and the worker's call), beside GET /v1/version (the HTTP path alone).
#
# Usage: bench/vmd/callgrind-state.sh path/to/moor-vmd [N]     (N default 1000)
#
# Method: difference of totals, no toggling. moor-vmd runs three times
# under `valgrind --tool=callgrind` (its QEMU child is not traced), each
# time doing the same things, start-up to SIGTERM: define one domain, then
# one curl process (one kept-alive connection) sends A: N state calls;
# B: 2N state calls; C: N state + N version calls; then undefine, SIGTERM.
# The domain stays shut off: under valgrind (3.19) moor-vmd cannot start
# QEMU (valgrind answers pidfd_open with ENOSYS), and a state call never
# talks to QEMU anyway; a running domain's state adds only its monitor's
# "responsive" fields. Everything but the calls is the same in
# the three runs, so
#   ir_per_state   = (Ir(B) - Ir(A)) / N
#   ir_per_version = (Ir(C) - Ir(A)) / N
# What is not the same: the idle loop's wake-ups over a longer run (none
# unless a timer is armed) and allocator growth; both vanish as N grows.
# (Toggling collection with callgrind_control around the calls would need
# vgdb to reach a daemon asleep in epoll_wait; differencing does not.)
#
# Output: a line for people, then one JSON object per call kind:
#   {"bench": "vmd.state", "ir_per_call": X, "calls": N, "method": "..."}
set -eu

daemon=${1:?usage: bench/vmd/callgrind-state.sh path/to/moor-vmd [N]}
n=${2:-1000}
command -v valgrind >/dev/null || { echo "callgrind-state.sh: valgrind not found" >&2; exit 1; }
command -v curl >/dev/null || { echo "callgrind-state.sh: curl not found" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moor-vmd-callgrind.XXXXXX")
vg_pid=
cleanup() {
    rm -rf "$tmp"
}
trap cleanup EXIT
dom="cg-$$"

# curl -K file with $2 lines `url = http://localhost$1`.
urls() {
    i=0
    while [ "$i" -lt "$2" ]; do
        printf 'url = "http://localhost%s"\noutput = "/dev/null"\n' "$1"
        i=$((i + 1))
    done
}

api() { # METHOD PATH [BODY]: fails, saying why, unless 2xx
    code=$(curl -s --unix-socket "$sock" -X "$1" -o "$tmp/body" -w '%{http_code}' \
        ${3:+-H 'Content-Type: application/json' -d "$3"} "http://localhost$2") || code=000
    case $code in
    2*) return 0 ;;
    esac
    echo "callgrind-state.sh: $1 $2: $code $(cat "$tmp/body" 2>/dev/null)" >&2
    return 1
}

# run NAME STATE_CALLS VERSION_CALLS: total Ir of one daemon run.
run() {
    dir="$tmp/$1"
    mkdir -p "$dir/state" "$dir/run"
    sock="$dir/run/moor-vmd.sock"
    valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
        "$daemon" --state-dir "$dir/state" --runtime-dir "$dir/run" --socket "$sock" \
        >"$dir/log" 2>&1 &
    vg_pid=$!
    # A subshell ($(run ...)) has its own trap: on a failure, kill the daemon.
    trap 'kill -KILL "$vg_pid" 2>/dev/null || :' EXIT
    i=0
    until curl -sf --unix-socket "$sock" http://localhost/v1/version >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -lt 600 ] || { echo "callgrind-state.sh: moor-vmd not ready after 60 s" >&2; cat "$dir/log" >&2; exit 1; }
        sleep 0.1
    done
    api POST /v1/domains "{\"name\":\"$dom\",\"machine\":\"none\",\"accel\":\"tcg\",\"memory_mib\":32}"
    { urls "/v1/domains/$dom/state" "$2"; urls /v1/version "$3"; } >"$dir/urls"
    curl -sf --unix-socket "$sock" -K "$dir/urls"
    api DELETE "/v1/domains/$dom"
    kill -TERM "$vg_pid"
    wait "$vg_pid" || { echo "callgrind-state.sh: moor-vmd failed" >&2; cat "$dir/log" >&2; exit 1; }
    vg_pid=
    trap - EXIT
    awk '/^events:/ { for (i = 2; i <= NF; i++) if ($i == "Ir") c = i }
         /^(summary|totals):/ { v = $c } END { print v }' "$dir/callgrind.out"
}

a=$(run a "$n" 0)
b=$(run b "$((2 * n))" 0)
c=$(run c "$n" "$n")
state=$(awk -v a="$a" -v b="$b" -v n="$n" 'BEGIN { printf "%.0f", (b - a) / n }')
version=$(awk -v a="$a" -v c="$c" -v n="$n" 'BEGIN { printf "%.0f", (c - a) / n }')
method="difference of totals: (Ir(2N state) - Ir(N state)) / N, whole daemon, all threads"
printf '# callgrind, N = %s: moor-vmd instructions per call (%s)\n' "$n" "$method"
printf '%-12s %12s\n' call ir_per_call state "$state" version "$version"
printf '{"bench": "vmd.state", "ir_per_call": %s, "calls": %s, "method": "%s"}\n' "$state" "$n" "$method"
printf '{"bench": "vmd.version", "ir_per_call": %s, "calls": %s, "method": "%s"}\n' "$version" "$n" \
    "difference of totals: (Ir(N state + N version) - Ir(N state)) / N"
