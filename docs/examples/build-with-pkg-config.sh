#!/bin/sh
# Builds every example of this folder against an installed Bilevel with pkg-config alone (docs/library.md):
#
#   docs/examples/build-with-pkg-config.sh PREFIX OUT
#   mpirun -np 2 OUT/user_problem
#
# PREFIX is the folder given to `cmake --install build --prefix PREFIX`. The compilers are $CXX (default
# c++) and $CC (default cc). Each program records PREFIX's library folder as its run path, so it runs
# without LD_LIBRARY_PATH.
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 PREFIX OUT" >&2
  exit 2
fi
prefix=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)

pcdir=
for d in "$prefix"/lib/pkgconfig "$prefix"/lib64/pkgconfig "$prefix"/lib/*/pkgconfig; do
  if [ -f "$d/bilevel.pc" ]; then pcdir=$d; break; fi
done
if [ -z "$pcdir" ]; then
  echo "$0: no bilevel.pc under $prefix/lib*/" >&2
  exit 1
fi
export PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

cflags=$(pkg-config --cflags bilevel)
libdir=$(pkg-config --variable=libdir bilevel)
if [ -e "$libdir/libbilevel.so" ]; then
  libs=$(pkg-config --libs bilevel)
else
  libs=$(pkg-config --libs --static bilevel)  # a static libbilevel.a: its private libraries too
fi

mkdir -p "$out"
for source in "$here"/*.cpp "$here"/*.c; do
  [ -f "$source" ] || continue
  case $source in
    *.cpp) name=$(basename "$source" .cpp); set -- ${CXX:-c++} -std=c++20 ;;
    *.c) name=$(basename "$source" .c); set -- ${CC:-cc} ;;
  esac
  set -- "$@" -O2 $cflags "$source" -o "$out/$name" $libs -Wl,-rpath,"$libdir"
  echo "$*"
  "$@"
done
