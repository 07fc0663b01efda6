#!/bin/bash
# signal_stop.sh MPIEXEC "PREFLAGS" RANKS PROGRAM
# Starts a long quadratic run with --checkpoint and --trace, waits for trace rows (the trace is readable
# during the run), sends SIGTERM to the last rank process only, and checks: every rank exits (code 3), the
# summary says CANCELLED_SIGNAL, the checkpoint exists, and --restart continues to a finished run.
set -u
mpiexec=$1; pre=$2; ranks=$3; prog=$4
d=$(mktemp -d)
fail() { echo "FAIL: $*"; cat "$d/run.log" 2>/dev/null | tail -n 5; rm -rf "$d"; exit 1; }
args=(--problem quadratic --method aidcg -bilevel_quadratic_dim_lower 4000 -bilevel_checkpoint_interval 5)
"$mpiexec" $pre -np "$ranks" "$prog" "${args[@]}" --max-iter 100000000 --checkpoint "$d/c.ckpt" \
  --trace "$d/t.csv" --summary "$d/s.json" --quiet > "$d/run.log" 2>&1 &
mp=$!
for _ in $(seq 100); do
  [ -f "$d/t.csv" ] && [ "$(wc -l < "$d/t.csv")" -ge 4 ] && break
  sleep 0.2
done
[ -f "$d/t.csv" ] && [ "$(wc -l < "$d/t.csv")" -ge 4 ] || { kill -KILL $mp; fail "no trace rows during the run"; }
last=$(pgrep -P $mp | tail -n 1)
[ -n "$last" ] || { kill -KILL $mp; fail "no rank process under $mpiexec"; }
kill -TERM "$last"
for _ in $(seq 150); do kill -0 $mp 2>/dev/null || break; sleep 0.2; done
kill -0 $mp 2>/dev/null && { kill -KILL $mp; fail "still running 30 s after SIGTERM to one rank"; }
wait $mp; rc=$?
[ $rc -eq 3 ] || fail "exit code $rc, expected 3"
grep -q '"converged_reason": "CANCELLED_SIGNAL"' "$d/s.json" || fail "summary lacks CANCELLED_SIGNAL"
[ -s "$d/c.ckpt" ] || fail "no checkpoint"
n=$(grep -o '"outer_iterations": [0-9]*' "$d/s.json" | grep -o '[0-9]*$')
"$mpiexec" $pre -np "$ranks" "$prog" "${args[@]}" --max-iter $((n + 3)) --restart "$d/c.ckpt" \
  --trace "$d/t.csv" --summary "$d/s2.json" --quiet > "$d/run2.log" 2>&1 || fail "restart failed: $(tail -n 1 "$d/run2.log")"
grep -q '"converged_reason": "CONVERGED_MAX_IT"' "$d/s2.json" || fail "restarted run did not finish"
rows=$(tail -n +2 "$d/t.csv" | wc -l)
[ "$rows" -eq $((n + 4)) ] || fail "trace has $rows rows after the restart, expected $((n + 4)) (rows 0..$((n + 3)))"
rm -rf "$d"
echo "PASS: stopped after iteration $n with exit code 3; restart finished"
