#!/bin/bash
# restart_other_ranks.sh MPIEXEC "PREFLAGS" PROGRAM METHOD: a checkpoint written at 2 ranks continues at 3 ranks
# (and one written at 3 at 1) to the uninterrupted 2-rank run's result within rounding (relative 1e-9), as
# the rank-invariance tests ask of runs at different rank counts.
set -u
mpiexec=$1; pre=$2; prog=$3; method=$4
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
args=(--problem quadratic --method "$method" --seed 3 --quiet -bilevel_quadratic_dim_lower 300 -bilevel_batch_size 0)
run() { local np=$1; shift; "$mpiexec" $pre -np "$np" "$prog" "${args[@]}" "$@" > "$d/log" 2>&1 || { echo "FAIL: $(tail -n 1 "$d/log")"; exit 1; }; }
value() { grep -o "\"$2\": [-0-9.e+]*" "$1" | grep -o '[-0-9.e+]*$'; }
run 2 --max-iter 30 --summary "$d/full.json"
for pair in "2 3" "3 1"; do
  set -- $pair
  run "$1" --max-iter 15 --checkpoint "$d/c.ckpt"
  run "$2" --max-iter 30 --restart "$d/c.ckpt" --summary "$d/rest.json"
  a=$(value "$d/full.json" upper_objective); b=$(value "$d/rest.json" upper_objective)
  /usr/bin/python3 -c "import sys; a, b = float('$a'), float('$b'); sys.exit(0 if abs(a - b) <= 1e-9 * abs(a) else 1)" ||
    { echo "FAIL: $method checkpoint at $1 ranks, restart at $2: upper objective $b, uninterrupted $a"; exit 1; }
  grep -q '"restarted_from_iteration": 15' "$d/rest.json" || { echo "FAIL: the run at $2 ranks did not restart"; exit 1; }
  echo "checkpoint at $1 ranks, restart at $2: $b (uninterrupted at 2 ranks: $a)"
done
echo "PASS"
