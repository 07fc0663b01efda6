#!/bin/bash
# Whether every registered method reaches, with its default settings, the best single-regulariser test
# log-loss of a 13-point grid on a LIBSVM binary set (issue 14, item 4): per-feature HO, training file ->
# lower level, test file -> upper level, at RANKS ranks (2), each method stopped after SECONDS_PER (180) s.
#
#   cluster/testing/defaults-libsvm.sh TRAIN TEST [extra bilevel-solve options...]
#
# The grid is λ = 10^k, k = -6, -5.5, ..., 0 (one regulariser, `--max-iter 0`: the exact lower solve at
# that λ, then the test log-loss); the target is its best value + 1%. One PASS/FAIL line per method and a
# verdict line; exit 0 only when every method passed. Extra options go to every run (for example
# `-bilevel_logreg_positive_classes 10-19` to binarize 20 Newsgroups); they are the same for every method,
# so no method gets settings of its own. BUILD (default build), METHODS (default every registered one),
# KEEP=1 keeps the folder with the logs and summaries. Not part of ctest: it takes up to 14 x SECONDS_PER
# seconds (docs/benchmarks.md has the runs).
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: $0 TRAIN TEST [bilevel-solve options...]"; exit 2; }
train=$1; test=$2; shift 2
root=$(cd "$(dirname "$0")/../.." && pwd)
exe=${BUILD:-$root/build}/apps/bilevel-solve
ranks=${RANKS:-2}; per=${SECONDS_PER:-180}
py=/usr/bin/python3
[ -x "$exe" ] || { echo "FAIL: no $exe (build first)"; exit 1; }
for f in "$train" "$test"; do [ -r "$f" ] || { echo "FAIL: cannot read $f"; exit 1; }; done
d=$(mktemp -d); [ "${KEEP:-0}" = 1 ] && echo "logs in $d" || trap 'rm -rf "$d"' EXIT
run() { timeout "$limit" mpirun --allow-run-as-root -np "$ranks" "$exe" --problem logreg --train "$train" --validation "$test" --test "$test" "$@"; }
limit=600
key() { "$py" -c 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print("null" if v is None else v)' "$1" "$2"; }

best=""
for k in -6 -5.5 -5 -4.5 -4 -3.5 -3 -2.5 -2 -1.5 -1 -0.5 0; do
  x=$("$py" -c "import math; print(repr($k * math.log(10)))")
  run --method aidcg --max-iter 0 -bilevel_logreg_scalar true -bilevel_logreg_initial_x "$x" "$@" \
    --summary "$d/grid$k.json" > "$d/grid$k.log" 2>&1 || { echo "FAIL: grid point 1e$k: $(tail -n1 "$d/grid$k.log")"; exit 1; }
  f=$(key "$d/grid$k.json" upper_objective)
  echo "  grid λ = 1e$k: test log-loss $f"
  best=$("$py" -c "import sys; a, b = sys.argv[1], float(sys.argv[2]); print(b if a == '' else min(float(a), b))" "$best" "$f")
done
target=$("$py" -c "print($best * 1.01)")
echo "  best of the grid $best; target $target"

methods=${METHODS:-$(mpirun --allow-run-as-root -np 1 "$exe" --method no-such-method 2>&1 | grep -o 'one of .*' | sed 's/one of //; s/[,.]/ /g')}
[ -n "$methods" ] || { echo "FAIL: could not list the registered methods"; exit 1; }
nbad=0; n=0
for m in $methods; do
  n=$((n + 1)); t0=$SECONDS
  if ! limit=$per run --method "$m" --summary "$d/$m.json" "$@" > "$d/$m.log" 2>&1; then
    echo "FAIL: $m: exit or timeout after $((SECONDS - t0)) s ($(tail -n1 "$d/$m.log"))"; nbad=$((nbad + 1)); continue
  fi
  f=$(key "$d/$m.json" upper_objective); it=$(key "$d/$m.json" outer_iterations); w=$(key "$d/$m.json" wall_time_s)
  if "$py" -c "import sys; sys.exit(0 if float('$f') <= $target else 1)"; then
    echo "PASS: $m: test log-loss $f ($it iterations, $w s)"
  else
    echo "FAIL: $m: test log-loss $f > $target ($it iterations, $w s)"; nbad=$((nbad + 1))
  fi
done
[ "$nbad" -eq 0 ] && { echo "PASS: all $n methods within 1% of the grid's $best ($SECONDS s)"; exit 0; }
echo "FAIL: $nbad of $n methods missed $target ($SECONDS s)"; exit 1
