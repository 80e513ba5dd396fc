#!/usr/bin/env bash
# Shared build settings for scripts/test.sh, scripts/demo.sh and bench/run.sh.
# Source it; or run it to build the default (gcc) tree:
#   bash scripts/build.sh            # -> build/gcc
#   VK_BUILD_ROOT=/tmp/b bash scripts/build.sh

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BUILD_ROOT=${VK_BUILD_ROOT:-$ROOT/build}
BUILD_GCC=$BUILD_ROOT/gcc
BUILD_CLANG=$BUILD_ROOT/clang
BUILD_ASAN=$BUILD_ROOT/asan
BUILD_FUZZ=$BUILD_ROOT/fuzz
HARNESS=$ROOT/tests/harness/vkharness.py
JOBS=${VK_JOBS:-$(nproc 2>/dev/null || echo 2)}

# vk_build gcc|clang DIR [CMAKE ARGS...]: configures and builds one tree.
# Warnings are errors in the project's own flags (-Werror); Python is
# always Debian's /usr/bin/python3.
vk_build() {
  local cc=$1 dir=$2; shift 2
  local cxx=g++
  [ "$cc" = clang ] && cxx=clang++
  mkdir -p "$(dirname "$dir")"
  CC=$cc CXX=$cxx cmake -S "$ROOT" -B "$dir" \
    -DPython3_EXECUTABLE=/usr/bin/python3 "$@" >"$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log"; return 1; }
  cmake --build "$dir" -j"$JOBS"
}

# vk_build_fuzz DIR: the libFuzzer targets of tests/fuzz, built with clang.
vk_build_fuzz() {
  local dir=$1
  mkdir -p "$(dirname "$dir")"
  CC=clang CXX=clang++ cmake -S "$ROOT/tests/fuzz" -B "$dir" >"$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log"; return 1; }
  cmake --build "$dir" -j"$JOBS"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  mkdir -p "$BUILD_ROOT"
  vk_build gcc "$BUILD_GCC" "$@"
fi
