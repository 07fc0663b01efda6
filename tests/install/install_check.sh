#!/bin/bash
# install_check.sh CMAKE BUILD_DIR SOURCE_DIR WORK_DIR MPIEXEC "PREFLAGS"
# The install route of docs/library.md, as a user takes it, against the build tree BUILD_DIR:
#   1. cmake --install into WORK_DIR/staged, then move the tree to WORK_DIR/prefix (it must be relocatable);
#   2. the installed library: SONAME and version, no MPI C++ binding referenced (nm -C);
#   3. the installed programs run without LD_LIBRARY_PATH; bilevel-solve finds the installed tuned settings,
#      bilevel-bench the installed report script;
#   4. find_package(bilevel) leaves the caller's PETSC_* variables alone and needs neither C nor a C++
#      standard (tests/install/consumer_variables, configure only);
#   5. docs/examples built with CMake (cmake -S docs/examples -DCMAKE_PREFIX_PATH=PREFIX) and with
#      docs/examples/build-with-pkg-config.sh PREFIX OUT; every example of both builds runs at 2 ranks
#      with no arguments and exits 0.
# Writes only below WORK_DIR (emptied first). Prints "install_check: PASS" at the end, or the failed step.
set -u
cmake=$1; build=$2; src=$3; work=$4; mpiexec=$5; pre=$6
fail() { echo "install_check: FAILED: $*"; exit 1; }
step() { echo; echo "== $*"; }
unset LD_LIBRARY_PATH
rm -rf "$work" && mkdir -p "$work" || fail "cannot create $work"
# The installed copy must not outlive the test: tools that look for a program under the build folder (the
# acceptance checks' `find build -name bilevel-solve`) would find a stale one.
trap 'rm -rf "$work"' EXIT
launcher=()
if command -v ccache > /dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi

step "1. cmake --install $build --prefix $work/staged; mv to $work/prefix"
"$cmake" --install "$build" --prefix "$work/staged" > "$work/install.log" || { cat "$work/install.log"; fail "install"; }
mv "$work/staged" "$work/prefix" || fail "mv"
P=$(cd "$work/prefix" && pwd -P)
libdir=$(dirname "$(find "$P" -name 'libbilevel.*' -print -quit)")
[ -d "$libdir" ] || fail "no libbilevel in $P"
echo "prefix $P, library folder $libdir"
for f in include/bilevel/bilevel.hpp share/bilevel/report_methods.py bin/bilevel-solve bin/bilevel-bench bin/bilevel-convert; do
  [ -e "$P/$f" ] || fail "not installed: $f"
done
ls "$P"/share/bilevel/tuned/*/*.opts > /dev/null 2>&1 || fail "no tuned settings in $P/share/bilevel/tuned"
[ -f "$libdir/cmake/bilevel/bilevelConfig.cmake" ] || fail "no CMake package in $libdir/cmake/bilevel"
[ -f "$libdir/pkgconfig/bilevel.pc" ] || fail "no $libdir/pkgconfig/bilevel.pc"

step "2. the library"
if [ -e "$libdir/libbilevel.so" ]; then
  lib=$(readlink -f "$libdir/libbilevel.so")
  soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  echo "$(basename "$lib"), SONAME $soname"
  [[ "$(basename "$lib")" =~ ^libbilevel\.so\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "no versioned file name: $lib"
  [ -n "$soname" ] && [ -e "$libdir/$soname" ] || fail "SONAME '$soname' missing or not installed"
  symbols=$(nm -C -D "$lib")
else
  soname=
  lib=$libdir/libbilevel.a
  [ -f "$lib" ] || fail "neither libbilevel.so nor libbilevel.a"
  echo "static $lib"
  symbols=$(nm -C "$lib" 2> /dev/null)
fi
[ -n "$symbols" ] || fail "nm found no symbols in $lib"
if grep -q ' MPI::' <<< "$symbols"; then
  grep ' MPI::' <<< "$symbols" | head -5
  fail "the library references MPI's C++ bindings"
fi
echo "no MPI:: symbol"

step "3. installed programs (no LD_LIBRARY_PATH)"
help=$("$mpiexec" $pre -np 1 "$P/bin/bilevel-solve" -help 2>&1) || { echo "$help" | tail; fail "bilevel-solve -help"; }
grep -A3 'Tuned settings' <<< "$help"
grep -q "Tuned settings (PROBLEM/METHOD.opts in $P/share/bilevel/tuned;" <<< "$help" \
  || fail "the installed bilevel-solve does not list $P/share/bilevel/tuned"
bench=$("$mpiexec" $pre -np 1 "$P/bin/bilevel-bench" methods --out "$work/bench" --problems quadratic \
        --methods aidcg --seeds 1 --max-time 1 -bilevel_quadratic_dim_lower 30 -bilevel_quadratic_dim_upper 3 2>&1)
grep '^bilevel-bench: .*report_methods' <<< "$bench"
grep -q "bilevel-bench: .*$P/share/bilevel/report_methods.py" <<< "$bench" \
  || fail "the installed bilevel-bench does not use $P/share/bilevel/report_methods.py"

step "4. find_package(bilevel) in a project with its own PETSC_* variables"
"$cmake" -S "$src/tests/install/consumer_variables" -B "$work/consumer_variables" -DCMAKE_PREFIX_PATH="$P" \
  > "$work/consumer_variables.log" 2>&1 || { cat "$work/consumer_variables.log"; fail "consumer_variables"; }
grep 'find_package(bilevel' "$work/consumer_variables.log"

step "5a. docs/examples with CMake"
"$cmake" -S "$src/docs/examples" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$P" "${launcher[@]}" \
  > "$work/cmake-configure.log" 2>&1 || { cat "$work/cmake-configure.log"; fail "configure docs/examples"; }
"$cmake" --build "$work/cmake-build" -j2 > "$work/cmake-build.log" 2>&1 \
  || { tail -40 "$work/cmake-build.log"; fail "build docs/examples with CMake"; }
echo "built"

step "5b. docs/examples with pkg-config"
if [ -z "$soname" ]; then
  # A static libbilevel.a links with pkg-config --static, which also expands PETSc's Libs.private: the
  # libraries of a static PETSc, some of them not on the linker's path for a shared PETSc (Debian: -lhdf5).
  # Copies of PETSc's and SLEPc's .pc files without Libs.private leave exactly bilevel.pc's own private
  # libraries to check.
  mkdir -p "$work/pc-shared-petsc"
  for m in petsc PETSc slepc SLEPc; do
    pc=$(pkg-config --path "$m" 2> /dev/null) || continue
    grep -v '^Libs.private' "$pc" > "$work/pc-shared-petsc/$m.pc"
  done
  export PKG_CONFIG_PATH="$work/pc-shared-petsc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
fi
CXX="${launcher:+ccache }${CXX:-c++}" "$src/docs/examples/build-with-pkg-config.sh" "$P" "$work/pc-build" \
  > "$work/pc-build.log" 2>&1 || { tail -40 "$work/pc-build.log"; fail "build-with-pkg-config.sh"; }
echo "built"

step "5c. every example at 2 ranks, no arguments"
n=0
for source in "$src"/docs/examples/*.cpp "$src"/docs/examples/*.c; do
  [ -f "$source" ] || continue
  name=$(basename "${source%.*}")
  for dir in cmake-build pc-build; do
    exe=$work/$dir/$name
    [ -x "$exe" ] || fail "$dir did not build $name"
    out=$(timeout 120 "$mpiexec" $pre -np 2 "$exe" 2>&1); rc=$?
    echo "$dir/$name: rc $rc: $(tail -n 1 <<< "$out")"
    [ $rc -eq 0 ] || { echo "$out" | tail -20; fail "$dir/$name exited with $rc"; }
    if grep -Eq '\[ *[0-9]+\] *[0-9]+ bytes [A-Za-z_0-9]+\(\) at' <<< "$out"; then
      echo "$out" | tail -20
      fail "$dir/$name leaks PETSc memory (-malloc_dump)"
    fi
    n=$((n + 1))
  done
done
[ $n -ge 4 ] || fail "only $n example runs"

step "5d. two prefixed solvers in one process, and the Python example with the installed module"
out=$(timeout 120 "$mpiexec" $pre -np 2 "$work/cmake-build/two_solvers" -a_bilevel_type qnbo -b_bilevel_type aidcg \
      -a_bilevel_view 2>&1) || { echo "$out" | tail -20; fail "two_solvers with prefixes"; }
grep -q "solver a_ ran qnbo" <<< "$out" && grep -q "solver b_ ran aidcg" <<< "$out" \
  && grep -q "BilevelSolver (a_): method qnbo" <<< "$out" || { echo "$out"; fail "prefixes a_/b_ not honoured"; }
if [ -f "$P/lib/python3/dist-packages/bilevel/__init__.py" ]; then
  out=$(env -i PATH=/usr/bin:/bin HOME="${HOME:-/root}" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        PYTHONPATH="$P/lib/python3/dist-packages" timeout 120 "$mpiexec" $pre -np 2 /usr/bin/python3 \
        "$src/docs/examples/python/user_problem.py" 2>&1) || { echo "$out" | tail -20; fail "the Python example"; }
  echo "python: $(tail -n 1 <<< "$out")"
  n=$((n + 1))
elif [ -e "$libdir/libbilevel.so" ]; then
  fail "no Python module under $P/lib/python3/dist-packages"
fi
echo
echo "install_check: PASS ($n example runs)"
