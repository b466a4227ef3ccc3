#!/bin/sh
# SPDX-License-Identifier: MIT
#
# run-spin.sh - check a Promela model exhaustively with spin, as a test.
#
#   run-spin.sh SPIN CC MODEL EXPECT [SPIN_OPTION...]
#
# SPIN and CC are the spin and C compiler commands, MODEL the .pml file,
# EXPECT one of:
#   pass           the full state space is explored with no error;
#   fail-assert    spin must find an assertion violation;
#   fail-deadlock  spin must find an invalid end state (deadlock, or a
#                  thread left asleep: a lost wakeup).
# A "fail-*" run is how a deliberately broken variant proves that the model
# and its properties can fail at all. SPIN_OPTIONs (e.g. -DBROKEN_INC,
# -DROUNDS=2) are passed to `spin -a`.
#
# Everything happens in a temporary directory; pan is built with -DSAFETY
# (assertions and invalid end states, no liveness) and run with a search
# depth large enough that a truncated search is itself an error.
set -eu

[ $# -ge 4 ] || { echo "usage: $0 SPIN CC MODEL EXPECT [SPIN_OPTION...]" >&2; exit 2; }
spin=$1 cc=$2 model=$3 expect=$4
shift 4

case $model in
/*) ;;
*) model=$(pwd)/$model ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
cp "$model" model.pml

"$spin" -a "$@" model.pml >spin.out 2>&1 || { cat spin.out; echo "spin -a failed" >&2; exit 1; }
"$cc" -O2 -w -DSAFETY -o pan pan.c || { echo "compiling pan failed" >&2; exit 1; }
# -m: search depth bound; -w: 2^N hash slots; -c1: stop at the first error.
./pan -m2000000 -w24 -c1 >pan.out 2>&1 || true

errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' pan.out | tail -n 1)
summary=$(grep -E 'State-vector|states, stored|^pan:' pan.out || true)
echo "model: $(basename "$model") $* (expect: $expect)"
echo "$summary"

if [ -z "$errors" ]; then
    cat pan.out
    echo "FAIL: pan did not report a result" >&2
    exit 1
fi
if grep -qE 'max search depth too small|out of memory|search not completed' pan.out; then
    cat pan.out
    echo "FAIL: the search was truncated; the result is not exhaustive" >&2
    exit 1
fi

case $expect in
pass)
    if [ "$errors" != 0 ]; then
        cat pan.out
        echo "--- counterexample ---"
        "$spin" -t -p "$@" model.pml 2>&1 | tail -n 60
        echo "FAIL: spin found $errors error(s)" >&2
        exit 1
    fi
    echo "PASS: no assertion violation, no invalid end state"
    ;;
fail-assert | fail-deadlock)
    want='assertion violated'
    [ "$expect" = fail-deadlock ] && want='invalid end state'
    if [ "$errors" = 0 ]; then
        echo "FAIL: the broken model passed; the model cannot detect this bug" >&2
        exit 1
    fi
    if ! grep -q "$want" pan.out; then
        cat pan.out
        echo "FAIL: spin found an error, but not \"$want\"" >&2
        exit 1
    fi
    echo "PASS: spin found the expected error (\"$want\"); counterexample tail:"
    "$spin" -t -p "$@" model.pml 2>&1 | grep -vE '^\s*$' | tail -n 12
    ;;
*)
    echo "unknown expectation: $expect" >&2
    exit 2
    ;;
esac
