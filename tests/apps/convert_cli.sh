#!/bin/bash
# convert_cli.sh MPIEXEC "PREFLAGS" RANKS CONVERT SOLVE
# bilevel-convert: -help exits 0; bad input is one line and exit 1; a multi-class LIBSVM file (xz) converted
# to a PETSc binary data set gives bilevel-solve logreg (label map 1,3 -> +1, validation split from the
# training file) the same upper objective as the text file, on RANKS ranks.
set -u
mpiexec=$1; pre=$2; ranks=$3; convert=$4; solve=$5
d=$(mktemp -d)
fail() { echo "FAIL: $*"; rm -rf "$d"; exit 1; }
"$convert" -help | grep -q "usage: bilevel-convert" || fail "-help"
out=$("$convert" --index-base 2 a b 2>&1) && fail "bad --index-base accepted"
[ "$(echo "$out" | wc -l)" -eq 1 ] && grep -q -- "--index-base" <<< "$out" || fail "bad --index-base: '$out'"
out=$("$convert" "$d/missing.svm" "$d/x.petsc" 2>&1) && fail "missing input accepted"
grep -q "cannot open $d/missing.svm" <<< "$out" || fail "missing input: '$out'"
# 80 rows, 5 classes, 12 features, 1-based
awk 'BEGIN { srand(3); for (i = 0; i < 80; i++) { l = i % 5; s = l; for (j = 1; j <= 12; j++)
       if (rand() < 0.4 || j == 12 && i == 0) s = s " " j ":" (l % 2 ? 1 : -1) * (0.5 + rand()); print s } }' \
  > "$d/train.svm"
xz -k "$d/train.svm"
"$convert" "$d/train.svm.xz" "$d/train.petsc" | grep -q "80 rows x 12 features" || fail "conversion summary"
[ -s "$d/train.petsc.meta" ] || fail "no .meta"
run() {
  timeout 120 "$mpiexec" $pre -np "$ranks" "$solve" --problem logreg --train "$1" --max-iter 3 --quiet \
    -bilevel_logreg_positive_classes 1,3 -bilevel_logreg_n_val 20 2>&1 | grep -o "upper objective [0-9.e+-]*"
}
a=$(run "$d/train.svm") || fail "text run"
b=$(run "$d/train.petsc") || fail "binary run"
[ -n "$a" ] && [ "$a" = "$b" ] || fail "text '$a' and binary '$b' differ"
rm -rf "$d"
echo "PASS ($a)"
