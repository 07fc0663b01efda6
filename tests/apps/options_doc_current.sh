#!/bin/bash
# options_doc_current.sh MPIEXEC "PREFLAGS" PROGRAM SOURCE_DIR: passes when docs/options.md is what
# docs/options.sh makes from PROGRAM's help now, i.e. the options reference is true to the code.
set -u
mpiexec=$1; pre=$2; prog=$3; src=$4
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
"$src/docs/options.sh" "$prog" "$mpiexec" "$pre" > "$d/options.md" || { echo "FAIL: docs/options.sh failed"; exit 1; }
grep -q '^| `-bilevel_pzobo_directions` |' "$d/options.md" || { echo "FAIL: no pzobo options in the generated text"; exit 1; }
if ! diff -u "$src/docs/options.md" "$d/options.md" > "$d/diff"; then
  head -40 "$d/diff"
  echo "FAIL: docs/options.md is stale; run docs/options.sh build/apps/bilevel-solve > docs/options.md"
  exit 1
fi
echo "PASS: docs/options.md lists $(grep -c '^| `-bilevel_' "$d/options.md") options, as the program does"
