#!/usr/bin/env bash
# The test command: builds vkclient with gcc and clang, checks the exported
# symbols and the installed package, runs the C suite (plain, under
# AddressSanitizer+UBSan and under Valgrind) against valkey-server and
# redis-server, runs the fuzz targets for a bounded time, then every binding
# suite that exists. Prints a summary; exits non-zero if any stage failed.
#
# Environment:
#   VK_BUILD_ROOT     where the build trees go (default: <repo>/build)
#   VK_FUZZ_SECONDS   time per fuzz target (default: 10)
#   VK_SKIP_SETUP=1   do not run scripts/setup.sh (packages already there)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/build.sh
source "$ROOT/scripts/build.sh"

FUZZ_SECONDS=${VK_FUZZ_SECONDS:-10}
SERVERS=(valkey-server redis-server)
STARTED=$(date +%s)

declare -a SUMMARY=()
FAILED=0

# record NAME RC SECONDS [SLOT]: a stage's line in the summary (at index
# SLOT when given, else appended).
record() {
  local line
  if [ "$2" -eq 0 ]; then
    line="PASS  $1 ($3s)"
  else
    line="FAIL  $1 ($3s, exit $2)"
    FAILED=1
  fi
  if [ -n "${4:-}" ]; then SUMMARY[$4]=$line; else SUMMARY+=("$line"); fi
}

# stage NAME COMMAND...: runs one stage, records its result and duration.
stage() {
  local name=$1; shift
  local t0 rc
  t0=$(date +%s)
  printf '\n===== %s =====\n' "$name"
  "$@"
  rc=$?
  record "$name" "$rc" "$(( $(date +%s) - t0 ))"
  return "$rc"
}

# Stages that mostly wait (on servers, timers, failovers) run side by side:
# stage_bg NAME COMMAND... starts one, its output going to a file, and
# keeps its place in the summary; stage_wait waits for all started ones and
# prints each one's output under its heading, in the order they started.
BG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/vk-stages.XXXXXX")
trap 'rm -rf "$BG_DIR"' EXIT
declare -a BG_NAMES=() BG_PIDS=() BG_SLOTS=()

stage_bg() {
  local name=$1 n=${#BG_PIDS[@]}; shift
  (
    t0=$(date +%s)
    "$@" >"$BG_DIR/$n.out" 2>&1 </dev/null
    echo "$? $(( $(date +%s) - t0 ))" >"$BG_DIR/$n.result"
  ) &
  BG_PIDS+=("$!")
  BG_NAMES+=("$name")
  BG_SLOTS+=("${#SUMMARY[@]}")
  SUMMARY+=("----  $name: did not finish")
}

stage_wait() {
  local i rc took
  for i in "${!BG_PIDS[@]}"; do
    wait "${BG_PIDS[$i]}"
    printf '\n===== %s =====\n' "${BG_NAMES[$i]}"
    cat "$BG_DIR/$i.out" 2>/dev/null
    read -r rc took <"$BG_DIR/$i.result" 2>/dev/null || { rc=1; took=0; }
    record "${BG_NAMES[$i]}" "$rc" "$took" "${BG_SLOTS[$i]}"
    rm -f "$BG_DIR/$i.out" "$BG_DIR/$i.result"
  done
  BG_NAMES=() BG_PIDS=() BG_SLOTS=()
}

# skip NAME REASON: a stage whose files do not exist yet.
skip() {
  printf '\n===== %s =====\n%s\n' "$1" "$2"
  SUMMARY+=("----  $1: $2")
}

summary() {
  printf '\n===== summary (%ss) =====\n' "$(( $(date +%s) - STARTED ))"
  printf '%s\n' "${SUMMARY[@]}"
  if [ "$FAILED" -ne 0 ]; then
    echo "RESULT: FAILED"
  else
    echo "RESULT: ALL PASSED"
  fi
}

# has_files DIR PATTERN: true when DIR has a file matching PATTERN (any depth).
has_files() {
  [ -d "$1" ] && [ -n "$(find "$1" -name "$2" -type f -print -quit)" ]
}

# ---- stages ---------------------------------------------------------------

check_exports() {
  local lib="$BUILD_GCC/libvkclient.so" bad
  [ -f "$lib" ] || { echo "missing $lib"; return 1; }
  # Absolute symbols ("A") are the version-script node names, not code.
  bad=$(nm -D --defined-only "$lib" | awk '$2 != "A" { print $3 }' | grep -v '^vk_' || true)
  if [ -n "$bad" ]; then
    echo "symbols exported without the vk_ prefix:"; echo "$bad"; return 1
  fi
  local soname
  soname=$(objdump -p "$lib" | awk '$1 == "SONAME" { print $2 }')
  [ "$soname" = "libvkclient.so.1" ] || { echo "unexpected SONAME '$soname'"; return 1; }
  # Every public function is exported, and listed by name in a version node
  # of core/vkclient.map (a symbol added in 1.x goes into VKCLIENT_1.x).
  local declared exported listed
  declared=$(cat "$ROOT"/core/include/vkclient*.h | grep -oE '^VK_API[^(]*\b(vk_[a-z0-9_]+)\(' |
    grep -oE 'vk_[a-z0-9_]+\($' | tr -d '(' | sort -u)
  exported=$(nm -D --defined-only "$lib" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' | sort -u)
  listed=$(grep -oE '^[[:space:]]+vk_[a-z0-9_]+;' "$ROOT/core/vkclient.map" | tr -d ' ;' | sort -u)
  bad=$(comm -3 <(echo "$declared") <(echo "$exported"))
  [ -z "$bad" ] || { echo "declared in the public headers but not exported, or the reverse:"; echo "$bad"; return 1; }
  bad=$(comm -23 <(echo "$declared") <(echo "$listed"))
  [ -z "$bad" ] || { echo "public functions missing from core/vkclient.map:"; echo "$bad"; return 1; }
  echo "$(echo "$exported" | wc -l) symbols, all vk_*, each in a version node; SONAME $soname"
}

check_install() {
  local prefix="$BUILD_ROOT/install" consumer="$BUILD_ROOT/consumer"
  rm -rf "$prefix" "$consumer"
  cmake --install "$BUILD_GCC" --prefix "$prefix" >/dev/null || return 1
  mkdir -p "$consumer"
  cat >"$consumer/main.c" <<'EOF'
#include <stdio.h>
#include <string.h>
#include <vkclient.h>

int main(void)
{
    vk_config *cfg = NULL;
    if (vk_config_new(&cfg) != VK_OK)
        return 1;
    /* No topology: validation must fail with the contract's text. */
    vk_status st = vk_config_validate(cfg);
    vk_config_free(cfg);
    if (st != VK_ERR_INVALID_CONFIG)
        return 1;
    printf("vkclient %s: %s\n", vk_version(), vk_last_error());
    return strcmp(vk_version(), VK_VERSION_STRING) != 0;
}
EOF
  local pcdir
  pcdir=$(dirname "$(find "$prefix" -name vkclient.pc | head -n 1)")
  local libdir
  libdir=$(PKG_CONFIG_PATH=$pcdir pkg-config --variable=libdir vkclient)
  echo "-- pkg-config, shared"
  # shellcheck disable=SC2046
  cc -std=c11 -Wall -Werror -o "$consumer/pc_shared" "$consumer/main.c" \
    $(PKG_CONFIG_PATH=$pcdir pkg-config --cflags --libs vkclient) || return 1
  LD_LIBRARY_PATH=$libdir "$consumer/pc_shared" || return 1
  echo "-- pkg-config, static library"
  # The dependencies are linked as the shared libraries Debian ships:
  # libcurl's static closure (pkg-config --static) is not installable there.
  # shellcheck disable=SC2046
  cc -std=c11 -Wall -Werror -o "$consumer/pc_static" "$consumer/main.c" \
    $(PKG_CONFIG_PATH=$pcdir pkg-config --cflags vkclient) \
    -Wl,-Bstatic -L"$libdir" -lvkclient -Wl,-Bdynamic \
    $(pkg-config --libs hiredis openssl libcurl libcjson) -lpthread || return 1
  "$consumer/pc_static" || return 1
  echo "-- CMake find_package(vkclient)"
  cat >"$consumer/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.18)
project(vkclient_consumer C)
find_package(vkclient 1 REQUIRED)
add_executable(cm_shared main.c)
target_link_libraries(cm_shared PRIVATE vkclient::vkclient)
add_executable(cm_static main.c)
target_link_libraries(cm_static PRIVATE vkclient::vkclient_static)
EOF
  cmake -S "$consumer" -B "$consumer/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null &&
    cmake --build "$consumer/build" >/dev/null || return 1
  LD_LIBRARY_PATH=$libdir "$consumer/build/cm_shared" && "$consumer/build/cm_static"
}

# The Lua rock: luarocks builds bindings/lua's rockspec against the core
# that check_install installed, for Lua 5.1 (also loaded by LuaJIT) and 5.4,
# and each interpreter talks to a real server through it.
check_rock() {
  local prefix="$BUILD_ROOT/install" work="$BUILD_ROOT/rock" version lua
  [ -f "$prefix/include/vkclient.h" ] || { echo "the core is not installed in $prefix"; return 1; }
  rm -rf "$work"
  mkdir -p "$work/bindings/lua"
  # luarocks make builds in the current folder: give it a copy.
  cp "$ROOT"/bindings/lua/vklua.h "$ROOT"/bindings/lua/vklua_*.c "$work/bindings/lua/"
  cp -r "$ROOT"/bindings/lua/vkclient "$work/bindings/lua/"
  cp "$ROOT"/bindings/lua/*.rockspec "$work/"
  for version in 5.1 5.4; do
    (cd "$work" && luarocks --lua-version="$version" --tree="$work/tree" \
       make ./*.rockspec VKCLIENT_DIR="$prefix") >"$work/luarocks-$version.log" 2>&1 ||
      { cat "$work/luarocks-$version.log"; return 1; }
  done
  for lua in lua5.1 luajit lua5.4; do
    version=5.1
    [ "$lua" = lua5.4 ] && version=5.4
    /usr/bin/python3 "$HARNESS" run --plain-only --server valkey-server -- "$lua" -e "
      package.cpath = '$work/tree/lib/lua/$version/?.so'
      assert(io.open('$work/tree/share/lua/$version/vkclient/ngx.lua'), 'vkclient.ngx is not installed')
      local vk = require 'vkclient'
      local client = assert(vk.new{ standalone = os.getenv('VK_TEST_ADDR') })
      assert(client:call('PING') == 'PONG')
      client:close()
      print('$lua: the rock loads vkclient ' .. vk.version .. ' and talks to the server')" ||
      return 1
  done
}

run_ctest() {
  ctest --test-dir "$1" --output-on-failure --no-tests=error -j2 --timeout 600
}

# Runs every ctest test command (with its environment) under Valgrind.
run_valgrind() {
  local build=$1
  # Tests stretch their time bounds by this factor (vkt_scaled_ms).
  VK_TEST_TIME_SCALE=10 /usr/bin/python3 "$ROOT/scripts/run_wrapped.py" --build "$build" --jobs 2 -- \
    valgrind --quiet --error-exitcode=99 --leak-check=full \
    --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
    --suppressions="$ROOT/scripts/valgrind.supp" --track-fds=no
}

# fuzz_one TARGET: runs one fuzz target for FUZZ_SECONDS; its output goes
# to $BUILD_FUZZ/<target>.log and its exit status to <target>.rc.
fuzz_one() {
  local target=$1 name
  name=$(basename "$target")
  mkdir -p "$BUILD_FUZZ/corpus/$name"
  # The corpus directory (first) collects new inputs; the seeds are only read.
  "$target" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$BUILD_FUZZ/" \
    "$BUILD_FUZZ/corpus/$name" "$ROOT/tests/fuzz/seeds/$name" 2>"$BUILD_FUZZ/$name.log"
  echo "$?" >"$BUILD_FUZZ/$name.rc"
}

# Each target is one process on one core: $JOBS of them run at a time. The
# results are printed in the targets' order once all have run.
run_fuzz() {
  local failed=0 target name rc
  local -a names=() pids=()
  for target in "$BUILD_FUZZ"/fuzz_*; do
    [ -x "$target" ] || continue
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    name=$(basename "$target")
    rm -f "$BUILD_FUZZ/$name.rc"
    fuzz_one "$target" &
    pids+=("$!")
    names+=("$name")
  done
  wait "${pids[@]}" 2>/dev/null
  for name in "${names[@]}"; do
    echo "-- $name for ${FUZZ_SECONDS}s"
    rc=$(cat "$BUILD_FUZZ/$name.rc" 2>/dev/null || echo missing)
    if [ "$rc" != 0 ]; then
      tail -n 60 "$BUILD_FUZZ/$name.log"
      failed=1
    else
      grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units)' "$BUILD_FUZZ/$name.log" | tail -n 1
    fi
  done
  return $failed
}

with_servers() {
  local server=$1; shift
  /usr/bin/python3 "$HARNESS" run --server "$server" -- "$@"
}

# The same plus a Sentinel group and a Cluster (VK_TEST_SENTINEL_*, VK_TEST_CLUSTER_ADDRS).
with_topologies() {
  local server=$1; shift
  /usr/bin/python3 "$HARNESS" run --topologies --server "$server" -- "$@"
}

pytest_suite() {
  # pytest exits 5 when it collected nothing: that is a failure here. A
  # skipped or xfail test fails the run too (tests/python/conftest.py);
  # -rsxX lists them with their reasons.
  PYTHONPATH="$BUILD_GCC/bindings/python${PYTHONPATH:+:$PYTHONPATH}" \
    with_topologies "$1" /usr/bin/python3 -m pytest -q -rsxX -p no:cacheprovider "$ROOT/tests/python"
}

busted_suite() {
  local server=$1 lua=$2
  with_topologies "$server" env VK_LUA="$lua" \
    busted --lua="$(command -v "$lua")" "$ROOT/tests/lua"
}

minitest_suite() {
  # Every tests/ruby/**/test_*.rb in one process; minitest runs them at exit.
  with_topologies "$1" ruby -I"$ROOT/tests/ruby" -e '
    require "minitest/autorun"
    files = Dir[File.join(ARGV[0], "**", "test_*.rb")].sort
    abort "no Ruby test files found" if files.empty?
    files.each { |f| require File.expand_path(f) }' "$ROOT/tests/ruby"
}

# ---- run ------------------------------------------------------------------

export VK_BUILD_DIR=$BUILD_GCC  # the bindings' suites load their modules from here

if [ "${VK_SKIP_SETUP:-0}" = 1 ]; then
  skip "setup" "skipped (VK_SKIP_SETUP=1)"
else
  stage "setup (scripts/setup.sh)" bash "$ROOT/scripts/setup.sh" || { summary; exit 1; }
fi

# The harness self-test mostly waits on its servers: it runs while the
# compilers work.
stage_bg "harness self-test" /usr/bin/python3 -m pytest -q -p no:cacheprovider "$ROOT/tests/harness"
stage "build gcc -Werror" vk_build gcc "$BUILD_GCC"
GCC_OK=$?
stage "build clang -Werror" vk_build clang "$BUILD_CLANG" \
  -DVK_BUILD_PYTHON=OFF -DVK_BUILD_LUA=OFF -DVK_BUILD_RUBY=OFF
# The optimised build the benchmarks use: -O2 sees warnings the others do not.
stage "build gcc Release -Werror" vk_build gcc "$BUILD_ROOT/release" -DCMAKE_BUILD_TYPE=Release \
  -DVK_BUILD_TESTS=OFF -DVK_BUILD_PYTHON=OFF -DVK_BUILD_LUA=OFF -DVK_BUILD_RUBY=OFF
stage_wait
if [ "$GCC_OK" -eq 0 ]; then
  stage "exported symbols (vk_* only)" check_exports
  stage "install: pkg-config and find_package" check_install &&
    stage "Lua rock (luarocks make)" check_rock
  stage "C suite (valkey + redis)" run_ctest "$BUILD_GCC"
  stage "C suite under Valgrind" run_valgrind "$BUILD_GCC"
fi
if stage "build ASan+UBSan" vk_build gcc "$BUILD_ASAN" -DVK_SANITIZE=address,undefined \
     -DVK_BUILD_PYTHON=OFF -DVK_BUILD_LUA=OFF -DVK_BUILD_RUBY=OFF \
     -DVK_BUILD_BENCH=OFF -DVK_BUILD_EXAMPLES=OFF; then
  # Instrumented code runs slower: time bounds stretch (vkt_scaled_ms).
  VK_TEST_TIME_SCALE=2 \
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    stage "C suite under ASan+UBSan" run_ctest "$BUILD_ASAN"
fi
if [ -f "$ROOT/tests/fuzz/CMakeLists.txt" ]; then
  stage "build fuzz targets (clang libFuzzer)" vk_build_fuzz "$BUILD_FUZZ" &&
    stage "fuzz (${FUZZ_SECONDS}s per target)" run_fuzz
else
  skip "fuzz" "no fuzz targets yet"
fi

if [ "$GCC_OK" -ne 0 ]; then
  skip "binding suites" "not run: the gcc build failed"
else
  # The binding suites run side by side (the two runs of Python; the six of
  # Lua; Ruby with nginx): each run has its own servers, and mostly waits on
  # them.
  if has_files "$ROOT/tests/python" 'test_*.py'; then
    for s in "${SERVERS[@]}"; do stage_bg "Python suite ($s)" pytest_suite "$s"; done
    stage_wait
  else
    skip "Python suite" "no Python suite yet"
  fi
  if has_files "$ROOT/tests/lua" '*_spec.lua'; then
    for lua in lua5.1 luajit lua5.4; do
      for s in "${SERVERS[@]}"; do stage_bg "Lua suite ($lua, $s)" busted_suite "$s" "$lua"; done
    done
    stage_wait
  else
    skip "Lua suite" "no Lua suite yet"
  fi
  if has_files "$ROOT/tests/ruby" 'test_*.rb'; then
    for s in "${SERVERS[@]}"; do stage_bg "Ruby suite ($s)" minitest_suite "$s"; done
  else
    skip "Ruby suite" "no Ruby suite yet"
  fi
  if [ -x "$ROOT/tests/nginx/run.sh" ]; then
    for s in "${SERVERS[@]}"; do stage_bg "nginx suite ($s)" with_servers "$s" "$ROOT/tests/nginx/run.sh"; done
  else
    skip "nginx suite" "no nginx suite yet"
  fi
  # These suites are part of the tree: a missing one fails its stage.
  for s in "${SERVERS[@]}"; do
    stage_bg "nginx vkclient.ngx suite ($s)" with_topologies "$s" "$ROOT/tests/nginx/run_ngx.sh"
  done
  for s in "${SERVERS[@]}"; do
    stage_bg "nginx vkclient.prometheus suite ($s)" with_servers "$s" "$ROOT/tests/nginx/run_metrics.sh"
  done
  stage_wait
fi

summary
exit "$FAILED"
