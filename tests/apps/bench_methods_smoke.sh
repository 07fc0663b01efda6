#!/bin/bash
# bench_methods_smoke.sh MPIEXEC "PREFLAGS" RANKS BENCH REPORT_SCRIPT
# Runs `bilevel-bench methods` on a tiny quadratic (aidcg and stocbio, one seed, 1-second budget) into a
# fresh folder and checks that every run left a trace CSV with rows and a JSON summary, that runs.csv has
# one line per run and failures.txt is empty; when Debian's python3 has numpy, that the report script
# writes the tables without matplotlib (hidden from it) and says so, and, when it has matplotlib too, that it
# draws the plot.
set -u
mpiexec=$1; pre=$2; ranks=$3; bench=$4; script=$5
d=$(mktemp -d)
fail() { echo "FAIL: $*"; rm -rf "$d"; exit 1; }
out=$(timeout 60 "$mpiexec" $pre -np "$ranks" "$bench" methods --out "$d/out" --problems quadratic \
      --methods aidcg,stocbio --seeds 1 --max-time 1 --no-report \
      -bilevel_quadratic_dim_lower 60 -bilevel_quadratic_dim_upper 6 2>&1); rc=$?
echo "$out" | tail -n 20
[ $rc -eq 124 ] && fail "timed out (hang?)"
[ $rc -eq 0 ] || fail "exit code $rc"
for m in aidcg stocbio; do
  csv=$d/out/quadratic/$m-seed0.csv; json=$d/out/quadratic/$m-seed0.json
  [ -f "$csv" ] || fail "no $csv"
  [ "$(wc -l < "$csv")" -ge 2 ] || fail "$csv has no rows"
  head -n 1 "$csv" | grep -q '^iteration,wall_time_s,upper_objective' || fail "$csv header"
  [ -f "$json" ] || fail "no $json"
  grep -q '"upper_objective": [-0-9]' "$json" || fail "$json lacks upper_objective"
  grep -q "^quadratic,$m,0,ok," "$d/out/runs.csv" || fail "runs.csv lacks an ok line for $m"
done
[ "$(wc -l < "$d/out/runs.csv")" -eq 3 ] || fail "runs.csv should have a header and 2 lines"
[ -f "$d/out/failures.txt" ] || fail "no failures.txt"
[ -s "$d/out/failures.txt" ] && fail "failures: $(cat "$d/out/failures.txt")"
if /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
  msg=$(/usr/bin/python3 -c "import sys; sys.modules['matplotlib'] = None; sys.argv = sys.argv[1:]
exec(compile(open(sys.argv[0]).read(), sys.argv[0], 'exec'))" "$script" "$d/out" --markdown "$d/tables.md") ||
    fail "report script failed without matplotlib"
  echo "$msg" | grep -q "matplotlib is not installed" || fail "no message about the missing matplotlib: $msg"
  grep -q '^| aidcg |' "$d/tables.md" || fail "no aidcg row in the tables-only report"
  grep -q 'png)' "$d/tables.md" && fail "the tables-only report links a plot"
fi
if /usr/bin/python3 -c 'import matplotlib, numpy' 2>/dev/null; then
  /usr/bin/python3 "$script" "$d/out" || fail "report script failed"
  [ -s "$d/out/img/methods-quadratic.png" ] || fail "no plot"
  grep -q '^| aidcg |' "$d/out/report.md" || fail "no aidcg row in report.md"
  grep -q 'methods-quadratic.png)' "$d/out/report.md" || fail "report.md does not link the plot"
fi
rm -rf "$d"
echo "PASS"
