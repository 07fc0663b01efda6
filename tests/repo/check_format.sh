#!/bin/bash
# check_format.sh SOURCE_DIR: passes when every C/C++ file under src/, include/, apps/ and tests/ is as
# clang-format (the repository's .clang-format) would write it. To fix: clang-format -i on the files listed.
set -u
src=$1
cf=$(command -v clang-format) || { echo "FAIL: clang-format not found (Debian package clang-format)"; exit 1; }
cd "$src" || exit 1
mapfile -t files < <(find src include apps tests \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' -o -name '*.c' \) | sort)
[ "${#files[@]}" -gt 0 ] || { echo "FAIL: no sources found under $src"; exit 1; }
bad=()
for f in "${files[@]}"; do
  "$cf" --style=file --dry-run --Werror "$f" > /dev/null 2>&1 || bad+=("$f")
done
if [ "${#bad[@]}" -gt 0 ]; then
  printf '  %s\n' "${bad[@]}" | head -n 20
  echo "FAIL: ${#bad[@]} of ${#files[@]} files differ from clang-format's output (clang-format -i FILE)"
  exit 1
fi
echo "PASS: ${#files[@]} files as clang-format writes them"
