#!/bin/bash
# cli_case.sh MPIEXEC "PREFLAGS" RANKS PROGRAM EXPECTED_RC PATTERN ARGS...
# Runs PROGRAM on RANKS ranks with --summary into a fresh folder; passes when the exit code is EXPECTED_RC
# (0, or non-zero for 1; or exactly 2 or 3), the output contains PATTERN, an error run prints at most 3 lines, finishes within
# 40 s, and leaves no summary file behind.
set -u
mpiexec=$1; pre=$2; ranks=$3; prog=$4; expect=$5; pattern=$6; shift 6
d=$(mktemp -d)
summary=(--summary "$d/s.json")
for a in "$@"; do [ "$a" = --summary ] && summary=(); done  # the case tests --summary itself
out=$(timeout 40 "$mpiexec" $pre -np "$ranks" "$prog" "$@" "${summary[@]}" 2>&1); rc=$?
echo "$out" | tail -n 20
fail() { echo "FAIL: $*"; rm -rf "$d"; exit 1; }
[ $rc -eq 124 ] && fail "timed out (hang?)"
if [ "$expect" = 0 ] || [ "$expect" = 2 ] || [ "$expect" = 3 ]; then
  [ $rc -eq "$expect" ] || fail "exit code $rc, expected $expect"
else
  [ $rc -ne 0 ] || fail "exit code 0, expected an error"
  [ -e "$d/s.json" ] && fail "summary file left behind after an error"
  n=$(echo "$out" | grep -cv '^\s*$')
  [ "$n" -le 3 ] || fail "$n lines of output for an error, expected one"
fi
echo "$out" | grep -qF -- "$pattern" || fail "output lacks '$pattern'"
rm -rf "$d"
echo "PASS"
