#!/bin/bash
# bench_scale_smoke.sh MPIEXEC "PREFLAGS" RANKS BENCH
# `bilevel-bench scale` on a tiny generated problem (3,000 x 500, 10 per row): the generated LIBSVM file is
# the same byte for byte at RANKS ranks as at 1 rank (each rank writes its block of rows), has the asked
# shape, and the summary has every key docs/scaling.md reads, with sane values (bytes sent are 0 at one rank
# and positive at more, and the library's count agrees with the PMPI count within 5%; the data share is the
# CSR arrays of train + validation).
set -u
mpiexec=$1; pre=$2; ranks=$3; bench=$4
d=$(mktemp -d)
fail() { echo "FAIL: $*"; rm -rf "$d"; exit 1; }
G="--rows 3000 --cols 500 --nnz-per-row 10 --seed 7 --iterations 2 --keep-data"
for n in 1 "$ranks"; do
  mkdir -p "$d/r$n"
  out=$(timeout 120 "$mpiexec" $pre -np "$n" "$bench" scale $G --data-dir "$d/r$n" --summary "$d/r$n/s.json" 2>&1)
  rc=$?
  echo "$out" | tail -n 6
  [ $rc -eq 124 ] && fail "timed out at $n rank(s) (hang?)"
  [ $rc -eq 0 ] || fail "exit code $rc at $n rank(s)"
done
f=scale-3000x500x10-seed7.train.svm
cmp -s "$d/r1/$f" "$d/r$ranks/$f" || fail "the generated file differs between 1 and $ranks ranks"
[ "$(wc -l < "$d/r1/$f")" -eq 3000 ] || fail "$f should have 3000 lines"
[ "$(head -n 1 "$d/r1/$f" | wc -w)" -eq 11 ] || fail "a row should have a label and 10 entries"
/usr/bin/python3 - "$d/r$ranks/s.json" "$ranks" <<'PYEOF' || fail "summary check"
import json, sys
s = json.load(open(sys.argv[1])); n = int(sys.argv[2])
keys = ["load_seconds", "peak_rss_bytes", "data_bytes_per_rank", "hvp_fraction_of_triad", "iteration_seconds",
        "bytes_communicated_per_iteration", "coordinator_fraction"]
missing = [k for k in keys if s.get(k) is None]
if missing: sys.exit("missing or null: " + ", ".join(missing))
# 3000 + 150 rows, 10 nonzeros each, 8-byte values + 4-byte indices + row offsets + labels, split over n
full = 3150 * 10 * 12
assert full / n * 0.9 < s["data_bytes_per_rank"] < full / n * 1.5 + 3150 * 16, s["data_bytes_per_rank"]
assert s["peak_rss_bytes"] > s["data_bytes_per_rank"], s
assert 0 < s["coordinator_fraction"] < 1, s
assert (s["bytes_communicated_per_iteration"] > 0) == (n > 1), s
# the library's count against the PMPI cross-check over the same records: they agree within 5% (PMPI also
# sees PETSc's own scalar reductions, which the library does not count)
lib, pmpi = s["bytes_check_library_all_ranks"], s["bytes_check_pmpi_all_ranks"]
assert (lib > 0) == (n > 1) and (pmpi > 0) == (n > 1), s
assert s["bytes_check_difference"] <= 0.05, f"library {lib} vs PMPI {pmpi} bytes per iteration"
assert s["outer_iterations"] == 2, s
print("ok:", {k: s[k] for k in keys})
PYEOF
rm -rf "$d"
echo PASS
