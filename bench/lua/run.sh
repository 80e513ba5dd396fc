#!/usr/bin/env bash
# Benchmarks the Lua binding against redis-lua and raw hiredis (DESIGN §7):
# builds in Release mode, starts one server with the test harness, and runs
# bench_lua.lua under each interpreter, with the server and every client
# pinned to the same core.
#
#   bash bench/lua/run.sh [ops per case] [runs]
#   VK_BENCH_CPU=1 VK_BENCH_LUAS="luajit" bash bench/lua/run.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/build.sh
source "$ROOT/scripts/build.sh"
OPS=${1:-20000}
RUNS=${2:-5}
CPU=${VK_BENCH_CPU:-0}
SERVER=${VK_TEST_SERVER:-valkey-server}
LUAS=${VK_BENCH_LUAS:-luajit lua5.1 lua5.4}
BENCH_BUILD=$BUILD_ROOT/bench-lua

vk_build gcc "$BENCH_BUILD" -DCMAKE_BUILD_TYPE=Release -DVK_BUILD_TESTS=OFF \
  -DVK_BUILD_PYTHON=OFF -DVK_BUILD_LUA=ON -DVK_BUILD_RUBY=OFF -DVK_BUILD_EXAMPLES=OFF >/dev/null

export BENCH_CORE=$BENCH_BUILD/bench/c/bench_core BENCH_LUA=$ROOT/bench/lua/bench_lua.lua
export LUA_MODULES=$BENCH_BUILD/bindings/lua OPS RUNS CPU LUAS
# taskset on the harness pins everything it starts: the server (on a free
# port, stopped by PID when the benchmark ends) and the clients.
exec taskset -c "$CPU" /usr/bin/python3 "$HARNESS" run --plain-only --server "$SERVER" -- bash -c '
  set -euo pipefail
  echo "server: $VK_TEST_SERVER on 127.0.0.1:$VK_TEST_PORT; server and clients pinned to cpu $CPU"
  for lua in $LUAS; do
    case $lua in
      luajit) dir=luajit ;;
      lua5.1) dir=5.1 ;;
      lua5.4) dir=5.4 ;;
      *) echo "unknown interpreter $lua" >&2; exit 2 ;;
    esac
    echo
    VK_LUA_CPATH="$LUA_MODULES/$dir/?.so" "$lua" "$BENCH_LUA" 127.0.0.1 "$VK_TEST_PORT" "$OPS" "$RUNS"
  done
'
