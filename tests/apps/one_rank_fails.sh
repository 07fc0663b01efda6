#!/bin/bash
# one_rank_fails.sh MPIEXEC "PREFLAGS" RANKS PROGRAM WHICH PATTERN ARGS...
# Plants an exception on rank WHICH (a rank number, or "all") just before the solve through
# BILEVEL_DEBUG_FAIL_RANK (read by bilevel-solve for this test only) while the other ranks go on into
# collectives. Passes when the job ends within 30 s with a non-zero exit code, prints exactly one line with
# "error:", that line contains PATTERN, and no summary file is left (core/app.hpp, guarded_main's rule).
set -u
mpiexec=$1; pre=$2; ranks=$3; prog=$4; which=$5; pattern=$6; shift 6
d=$(mktemp -d)
start=$(date +%s)
out=$(BILEVEL_DEBUG_FAIL_RANK=$which timeout 40 "$mpiexec" $pre -np "$ranks" "$prog" "$@" --summary "$d/s.json" 2>&1); rc=$?
seconds=$(( $(date +%s) - start ))
echo "$out" | tail -n 20
echo "exit code $rc after ${seconds} s"
fail() { echo "FAIL: $*"; rm -rf "$d"; exit 1; }
[ $rc -eq 124 ] && fail "timed out: the other ranks hang"
[ $rc -ne 0 ] || fail "exit code 0, expected an error"
[ "$seconds" -le 30 ] || fail "took ${seconds} s"
[ -e "$d/s.json" ] && fail "summary file left behind after an error"
n=$(echo "$out" | grep -c 'error:')
[ "$n" -eq 1 ] || fail "$n lines with 'error:', expected one"
line=$(echo "$out" | grep 'error:')
echo "$line" | grep -qF -- "$pattern" || fail "the error line lacks '$pattern'"
echo "$line" | grep -qF -- "BILEVEL_DEBUG_FAIL_RANK=$which" || fail "the error line is not the planted failure"
rm -rf "$d"
echo "PASS"
