#!/usr/bin/env bash
# Benchmarks vkclient against its peers on one local server (DESIGN §7):
# the C core against raw hiredis, and without sinks against release 1.0
# (bench/sinks_cost.sh), then valkey-benchmark -c 1 -P 1 for
# reference, and the lock pairs also against redis-py's Lock (Debian's
# python3-redis); then the event-loop client against the blocking client
# and valkey-benchmark -c 1 -P 16, with GLIDE for Node.js and ioredis for
# reference (bench/async/run_async.sh); then vkclient.asyncio against
# redis.asyncio and the blocking client from threads, and the blocking
# client with the Prometheus adapter against none
# (bench/python/bench_asyncio.py); last, require "vkclient.ngx" against
# lua-resty-redis in one nginx worker under wrk (bench/nginx/run_nginx.sh).
# Client and server are pinned to the same core, so the numbers show each
# client's own cost rather than the cross-core loopback latency (wrk, the
# nginx benchmark's load, runs on another core).
#
#   bash bench/run.sh [ops per case] [runs]
#   VK_BENCH_CPU=1 bash bench/run.sh      # pin to another core
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/build.sh
source "$ROOT/scripts/build.sh"
OPS=${1:-20000}
RUNS=${2:-5}
CPU=${VK_BENCH_CPU:-0}
SERVER=${VK_TEST_SERVER:-valkey-server}
BENCH_BUILD=$BUILD_ROOT/bench

vk_build gcc "$BENCH_BUILD" -DCMAKE_BUILD_TYPE=Release -DVK_BUILD_TESTS=OFF \
  -DVK_BUILD_PYTHON=OFF -DVK_BUILD_LUA=OFF -DVK_BUILD_RUBY=OFF >/dev/null
# The Python binding, optimised, for the asyncio benchmark.
BENCH_PY_BUILD=$BUILD_ROOT/bench-python
vk_build gcc "$BENCH_PY_BUILD" -DCMAKE_BUILD_TYPE=Release -DVK_BUILD_TESTS=OFF \
  -DVK_BUILD_BENCH=OFF -DVK_BUILD_EXAMPLES=OFF -DVK_BUILD_LUA=OFF -DVK_BUILD_RUBY=OFF >/dev/null
# The Lua binding, optimised, for the nginx benchmark (the tree and flags of
# bench/lua/run.sh).
BENCH_LUA_BUILD=$BUILD_ROOT/bench-lua
vk_build gcc "$BENCH_LUA_BUILD" -DCMAKE_BUILD_TYPE=Release -DVK_BUILD_TESTS=OFF \
  -DVK_BUILD_PYTHON=OFF -DVK_BUILD_LUA=ON -DVK_BUILD_RUBY=OFF -DVK_BUILD_EXAMPLES=OFF >/dev/null

# taskset on the harness pins everything it starts: the server (started on
# a free port and stopped by PID when the benchmark ends) and the clients.
export BENCH_BIN=$BENCH_BUILD/bench/c/bench_core LOCK_BENCH_BIN=$BENCH_BUILD/bench/c/bench_lock
export BENCH_GET_BIN=$BENCH_BUILD/bench/c/bench_get BENCH_LIB_DIR=$BENCH_BUILD
export SINKS_COST=$ROOT/bench/sinks_cost.sh
export RP_LOCK_BENCH=$ROOT/bench/python/redis_py_lock_pairs.py
export BENCH_ASYNC_BIN=$BENCH_BUILD/bench/c/bench_async ASYNC_RUN=$ROOT/bench/async/run_async.sh
export ASYNCIO_BENCH=$ROOT/bench/python/bench_asyncio.py ASYNCIO_PYTHONPATH=$BENCH_PY_BUILD/bindings/python
export NGX_RUN=$ROOT/bench/nginx/run_nginx.sh NGX_MODULE_DIR=$BENCH_LUA_BUILD/bindings/lua/luajit
export OPS RUNS CPU
exec taskset -c "$CPU" /usr/bin/python3 "$HARNESS" run --plain-only --server "$SERVER" -- bash -c '
  set -euo pipefail
  echo "server: $VK_TEST_SERVER on 127.0.0.1:$VK_TEST_PORT; server and clients pinned to cpu $CPU"
  echo
  "$BENCH_BIN" 127.0.0.1 "$VK_TEST_PORT" "$OPS" "$RUNS"
  echo
  bash "$SINKS_COST" 127.0.0.1 "$VK_TEST_PORT" "$OPS" "$(( RUNS * 2 + 1 ))" "$BENCH_GET_BIN" "$BENCH_LIB_DIR"
  echo
  pairs=""
  if [ -x "$LOCK_BENCH_BIN" ]; then
    lock_out=$("$LOCK_BENCH_BIN" 127.0.0.1 "$VK_TEST_PORT" "$OPS" "$RUNS")
    echo "$lock_out"
    pairs=$(echo "$lock_out" | awk -F: "/vkclient try_lock\+unlock/ { gsub(/ /, \"\", \$2); print \$2 }")
    echo
  fi
  echo "reference: valkey-benchmark -c 1 -P 1 -t set,get -n $OPS"
  ref=$(valkey-benchmark -h 127.0.0.1 -p "$VK_TEST_PORT" -c 1 -P 1 -t set,get -n "$OPS" -q 2>&1 |
    tr "\r" "\n" | grep "requests per second")
  echo "$ref"
  # A lock pair is two round trips: half of valkey-benchmark'\''s SET rate is
  # the limit for one connection.
  set_rps=$(echo "$ref" | awk "/^SET:/ { print \$2 }")
  if [ -n "$pairs" ] && [ -n "$set_rps" ]; then
    awk -v p="$pairs" -v r="$set_rps" "BEGIN { printf \"lock pairs vs the two-round-trip limit (valkey-benchmark SET / 2 = %.0f/s): %.2f\\n\", r / 2, p / (r / 2) }"
  fi
  if [ -n "$pairs" ]; then
    rp_out=$(/usr/bin/python3 "$RP_LOCK_BENCH" 127.0.0.1 "$VK_TEST_PORT" "$(( OPS / 4 ))" "$RUNS")
    echo "$rp_out"
    rp_pairs=$(echo "$rp_out" | awk -F: "{ gsub(/ /, \"\", \$2); print \$2 }")
    awk -v p="$pairs" -v r="$rp_pairs" "BEGIN { printf \"lock pairs vs redis-py Lock: %.2f\\n\", p / r }"
  fi
  echo
  bash "$ASYNC_RUN" 127.0.0.1 "$VK_TEST_PORT" "$OPS" "$RUNS"
  echo
  PYTHONPATH=$ASYNCIO_PYTHONPATH /usr/bin/python3 "$ASYNCIO_BENCH" --ops "$OPS" --runs "$RUNS"
  echo
  bash "$NGX_RUN" 127.0.0.1 "$VK_TEST_PORT" "$RUNS"
'
