#!/usr/bin/env bash
# The nginx part of bench/run.sh: require "vkclient.ngx" against
# lua-resty-redis inside one nginx worker (Debian's nginx and
# libnginx-mod-http-lua, LuaJIT 2.1), driven over HTTP by wrk, against the
# server that bench/run.sh started (and pinned with it to one core):
#
#   NGX_MODULE_DIR=<Release build>/bindings/lua/luajit \
#     bash bench/nginx/run_nginx.sh HOST PORT [runs]
#
# On its own, with a server from the test harness:
#   taskset -c 0 /usr/bin/python3 tests/harness/vkharness.py run --plain-only -- \
#     env NGX_MODULE_DIR=build/bench-lua/bindings/lua/luajit bash bench/nginx/run_nginx.sh
#
# nginx (worker_processes 1) starts in a temporary prefix on a free
# loopback port with ngx_bench.lua's handlers (see nginx.conf.in); its
# worker inherits the pin of the server (bench/run.sh pins both to one
# core, VK_BENCH_CPU), so a Redis client's cost in the worker is measured
# with the server's next to it, as in the other benchmarks. wrk is the
# load, not a client under test: it runs on another core
# (VK_BENCH_WRK_CPU; the first other one by default; the same core when
# there is no other), so that its own cost does not dilute the ratios.
#
# Cases, each a wrk run of VK_BENCH_NGX_SECONDS (2) with VK_BENCH_NGX_CONNS
# (32) connections on 1 thread, the same for both clients; every case once per run, the order reversed every
# other run, after a warm-up of every endpoint; the report gives each
# case's median req/s and its runs, and each target is the median over the
# runs of the ratio within a run:
#   - GET of one key: vkclient.ngx (one client per worker, its connection
#     shared by the requests in flight) vs lua-resty-redis (connect and
#     set_keepalive per request, a pool of CONNS: one per request in flight)
#     - goal >= 1.0;
#   - a pipeline of 100 GETs per request - goal >= 1.5;
#   - a lock pair per request: vkclient.ngx try_lock + unlock vs
#     lua-resty-redis SET key token NX PX 10000 + EVAL compare-and-delete,
#     a key of its own per request - goal >= 1.3;
#   - slow requests: while 4 connections loop on BLPOP k 0.2 (an empty
#     list) through vkclient.ngx, wrk on vkclient.ngx GET: its p99 <= 20 ms,
#     and its req/s >= 0.8 x the same run's GET req/s without them (the
#     p99 of GET alone is printed next to it: other load on the machine
#     shows in both).
# A run with any failed request (non-2xx, socket error, timeout) or an
# error in nginx's error.log fails the benchmark: its numbers would not be
# those of the work above.
#
# wrk (Debian's package) is installed with apt-get when missing, as root;
# lua-resty-redis is read from VK_BENCH_RESTY_REDIS (default: the peers
# folder in shared/ beside the repository), never copied into it. When one
# of them, nginx or its Lua module is missing, the benchmark prints
# "nginx benchmark skipped: <reason>" and exits 0.
set -euo pipefail

ADDR=${VK_TEST_ADDR:-}
HOST=${1:-${ADDR%:*}}
PORT=${2:-${VK_TEST_PORT:-}}
RUNS=${3:-${RUNS:-5}}
if [ -z "$HOST" ] || [ -z "$PORT" ]; then
  echo "usage: run_nginx.sh HOST PORT [runs]" >&2
  exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MODULE_DIR=${NGX_MODULE_DIR:?NGX_MODULE_DIR must name the folder of the LuaJIT vkclient.so}
RESTY_REDIS=${VK_BENCH_RESTY_REDIS:-$ROOT/../shared/peers/lua-resty-redis}
SECONDS_PER_CASE=${VK_BENCH_NGX_SECONDS:-2}
CONNS=${VK_BENCH_NGX_CONNS:-32}
SLOW=4
CPU=${CPU:-${VK_BENCH_CPU:-0}}

skip() {
  echo "nginx benchmark skipped: $*"
  exit 0
}

# ---- what it needs ------------------------------------------------------------------

[ -f "$MODULE_DIR/vkclient.so" ] || { echo "run_nginx: missing $MODULE_DIR/vkclient.so" >&2; exit 1; }
MODULE_DIR=$(cd "$MODULE_DIR" && pwd)   # nginx reads relative paths from its prefix
[ -f "$RESTY_REDIS/lib/resty/redis.lua" ] ||
  skip "lua-resty-redis not found at $RESTY_REDIS (set VK_BENCH_RESTY_REDIS)"
command -v nginx >/dev/null || skip "nginx not installed (bash scripts/setup.sh)"

# wrk, as run_async.sh gets node: Debian's package, installed only as root.
if ! command -v wrk >/dev/null; then
  [ "$(id -u)" -eq 0 ] || skip "wrk not installed (as root: apt-get install wrk)"
  echo "installing Debian's wrk"
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  if ! { apt-get install -y -q --no-install-recommends wrk >"$log" 2>&1 ||
         { apt-get update -q >>"$log" 2>&1 &&
           apt-get install -y -q --no-install-recommends wrk >>"$log" 2>&1; }; }; then
    reason=$(tail -n 1 "$log")
    rm -f "$log"
    skip "apt-get install wrk failed: $reason"
  fi
  rm -f "$log"
fi

# The dynamic modules: lua-nginx-module needs the NDK loaded before it.
find_module() {
  local dir
  for dir in /usr/lib/nginx/modules /usr/share/nginx/modules; do
    [ -f "$dir/$1.so" ] && { echo "$dir/$1.so"; return 0; }
  done
  return 1
}
LOAD_MODULES=""
for module in ndk_http_module ngx_http_lua_module; do
  path=$(find_module "$module") || skip "nginx module $module not found (install libnginx-mod-http-lua)"
  LOAD_MODULES+="load_module $path;"$'\n'
done
# As root, the worker would switch to an unprivileged user that may not
# read the build tree: keep the current user.
USER_DIRECTIVE=""
[ "$(id -u)" -ne 0 ] || USER_DIRECTIVE="user $(id -un) $(id -gn);"

# wrk's core: VK_BENCH_WRK_CPU, or the first online one other than CPU
# that this process may use.
wrk_cpu() {
  if [ -n "${VK_BENCH_WRK_CPU:-}" ]; then
    echo "$VK_BENCH_WRK_CPU"
    return
  fi
  local c n
  n=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
  for (( c = 0; c < n; c++ )); do
    if [ "$c" != "$CPU" ] && taskset -c "$c" true 2>/dev/null; then
      echo "$c"
      return
    fi
  done
  echo "$CPU"
}
WRK_CPU=$(wrk_cpu)

# ---- nginx --------------------------------------------------------------------------

PREFIX=$(mktemp -d "${TMPDIR:-/tmp}/vk-ngx-bench.XXXXXX")
NGX_PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NGINX_PID=""
SLOW_PID=""

stop_nginx() {
  [ -n "$NGINX_PID" ] || return 0
  kill -QUIT "$NGINX_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$NGINX_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$NGINX_PID" 2>/dev/null; then
    local workers
    workers=$(ps -o pid= --ppid "$NGINX_PID" 2>/dev/null || true)
    # shellcheck disable=SC2086
    kill -KILL "$NGINX_PID" $workers 2>/dev/null || true
  fi
  wait "$NGINX_PID" 2>/dev/null || true
  NGINX_PID=""
}

cleanup() {
  local rc=$?
  if [ -n "$SLOW_PID" ]; then
    kill "$SLOW_PID" 2>/dev/null || true
    wait "$SLOW_PID" 2>/dev/null || true
  fi
  stop_nginx
  if [ "$rc" -ne 0 ] && [ -f "$PREFIX/error.log" ]; then
    echo "---- nginx error.log (last 40 lines) ----" >&2
    tail -n 40 "$PREFIX/error.log" >&2
  fi
  rm -rf "$PREFIX"
  exit "$rc"
}
trap cleanup EXIT

mkdir -p "$PREFIX/logs"
/usr/bin/python3 - "$HERE/nginx.conf.in" "$PREFIX/nginx.conf" <<EOF
import sys
text = open(sys.argv[1]).read()
values = {
    "@LOAD_MODULES@": """$LOAD_MODULES""",
    "@USER_DIRECTIVE@": "$USER_DIRECTIVE",
    "@PREFIX@": "$PREFIX",
    "@PORT@": "$NGX_PORT",
    "@CPATH@": "$MODULE_DIR/?.so",
    "@LUA_PATH@": "$HERE/?.lua;$ROOT/bindings/lua/?.lua;$RESTY_REDIS/lib/?.lua",
}
for key, value in values.items():
    text = text.replace(key, value)
open(sys.argv[2], "w").write(text)
EOF

export VK_BENCH_ADDR=$HOST:$PORT VK_BENCH_POOL=$CONNS
nginx -t -p "$PREFIX" -c "$PREFIX/nginx.conf" -e "$PREFIX/error.log" >"$PREFIX/check.log" 2>&1 ||
  { cat "$PREFIX/check.log" >&2; echo "run_nginx: nginx -t rejected the configuration" >&2; exit 1; }
nginx -p "$PREFIX" -c "$PREFIX/nginx.conf" -e "$PREFIX/error.log" &
NGINX_PID=$!
URL=http://127.0.0.1:$NGX_PORT
for _ in $(seq 1 100); do
  curl -s --max-time 1 -o /dev/null "$URL/ready" 2>/dev/null && break
  kill -0 "$NGINX_PID" 2>/dev/null || { echo "run_nginx: nginx exited during start-up" >&2; exit 1; }
  sleep 0.1
done

# The key every GET reads: three bytes, as in the other benchmarks.
valkey-cli -h "$HOST" -p "$PORT" SET bench:ngx:key xxx >/dev/null

# ---- measuring ----------------------------------------------------------------------

# wrk_run PATH SECONDS CONNS: wrk's result line (see wrk_report.lua);
# fails when a request failed.
wrk_run() {
  local out line
  out=$(taskset -c "$WRK_CPU" wrk -t 1 -c "$3" -d "${2}s" --timeout 5s -s "$HERE/wrk_report.lua" "$URL$1" 2>&1) ||
    { echo "$out" >&2; echo "run_nginx: wrk $1 failed" >&2; return 1; }
  line=$(echo "$out" | grep '^wrk-result ') || { echo "$out" >&2; echo "run_nginx: no result from wrk $1" >&2; return 1; }
  if ! echo "$line" | grep -q ' failed=0$'; then
    echo "$out" >&2
    echo "run_nginx: failed requests on $1 (nginx error.log below)" >&2
    return 1
  fi
  echo "$line"
}

field() { # LINE NAME
  echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# The median of the numbers on standard input.
median() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; m = int((NR + 1) / 2);
    if (NR % 2) print v[m]; else printf "%.6f\n", (v[m] + v[m + 1]) / 2 }'
}

echo "nginx (1 worker, lua-nginx-module $(nginx -V 2>&1 | sed -n 's/^nginx version: //p')): vkclient.ngx vs lua-resty-redis $(sed -n "s/^_M._VERSION = '\(.*\)'/\1/p" "$RESTY_REDIS/lib/resty/redis.lua")"
echo "nginx worker on cpu $(taskset -pc "$$" | sed 's/.*: //') (the server's: VK_BENCH_CPU), wrk on cpu $WRK_CPU; wrk -t 1 -c $CONNS, ${SECONDS_PER_CASE} s per case, median of $RUNS runs"

# Warm-up: connections, pools, JIT traces, the lock's script.
for path in /vk/get /resty/get /vk/pipeline /resty/pipeline /vk/lock /resty/lock; do
  wrk_run "$path" 1 "$CONNS" >/dev/null
done
wrk_run /vk/blpop 1 "$SLOW" >/dev/null

# slow_run: wrk on /vk/get while SLOW connections loop on /vk/blpop; sets
# slow_line (the GET run) and blpop_line.
slow_run() {
  local blpop_out="$PREFIX/blpop.out"
  taskset -c "$WRK_CPU" wrk -t 1 -c "$SLOW" -d "$(( SECONDS_PER_CASE + 1 ))s" --timeout 5s \
    -s "$HERE/wrk_report.lua" "$URL/vk/blpop" >"$blpop_out" 2>&1 &
  SLOW_PID=$!
  # Every slow connection has a BLPOP waiting before the GETs start.
  sleep 0.5
  slow_line=$(wrk_run /vk/get "$SECONDS_PER_CASE" "$CONNS")
  wait "$SLOW_PID" || { cat "$blpop_out" >&2; echo "run_nginx: wrk /vk/blpop failed" >&2; return 1; }
  SLOW_PID=""
  blpop_line=$(grep '^wrk-result ' "$blpop_out") ||
    { cat "$blpop_out" >&2; echo "run_nginx: no result from wrk /vk/blpop" >&2; return 1; }
  echo "$blpop_line" | grep -q ' failed=0$' ||
    { cat "$blpop_out" >&2; echo "run_nginx: failed requests on /vk/blpop" >&2; return 1; }
}

vk_get=() resty_get=() vk_pl=() resty_pl=() vk_lock=() resty_lock=()
slow_rps=() slow_p99=() base_p99=() blpop_n=() blpop_p50=()
for (( run = 0; run < RUNS; run++ )); do
  cases=(vk_get resty_get vk_pl resty_pl vk_lock resty_lock slow)
  (( run % 2 )) && cases=(slow resty_lock vk_lock resty_pl vk_pl resty_get vk_get)
  for c in "${cases[@]}"; do
    case $c in
      vk_get) line=$(wrk_run /vk/get "$SECONDS_PER_CASE" "$CONNS"); base_p99+=("$(field "$line" p99_ms)") ;;
      resty_get) line=$(wrk_run /resty/get "$SECONDS_PER_CASE" "$CONNS") ;;
      vk_pl) line=$(wrk_run /vk/pipeline "$SECONDS_PER_CASE" "$CONNS") ;;
      resty_pl) line=$(wrk_run /resty/pipeline "$SECONDS_PER_CASE" "$CONNS") ;;
      vk_lock) line=$(wrk_run /vk/lock "$SECONDS_PER_CASE" "$CONNS") ;;
      resty_lock) line=$(wrk_run /resty/lock "$SECONDS_PER_CASE" "$CONNS") ;;
      slow)
        slow_run
        slow_rps+=("$(field "$slow_line" rps)")
        slow_p99+=("$(field "$slow_line" p99_ms)")
        blpop_n+=("$(field "$blpop_line" requests)")
        blpop_p50+=("$(field "$blpop_line" p50_ms)")
        continue
        ;;
    esac
    eval "$c+=(\"\$(field \"\$line\" rps)\")"
  done
done

if grep -E '\[(alert|emerg|crit|error)\]|bench failure' "$PREFIX/error.log"; then
  echo "run_nginx: errors in nginx's error.log" >&2
  exit 1
fi

row() { # label, values...
  local label=$1; shift
  printf '%-58s %10.0f  runs:' "$label" "$(printf '%s\n' "$@" | median)"
  printf ' %.0f' "$@"
  printf '\n'
}
# ratio_median NUMERATORS... -- DENOMINATORS...: the median of the per-run ratios.
ratio_median() {
  local num=() den=()
  while [ "$1" != -- ]; do num+=("$1"); shift; done
  shift
  den=("$@")
  for i in "${!num[@]}"; do awk -v a="${num[$i]}" -v b="${den[$i]}" 'BEGIN { printf "%.6f\n", a / b }'; done | median
}
# target NAME VALUE OP GOAL: the line every benchmark prints per target.
target() {
  awk -v n="$1" -v v="$2" -v op="$3" -v g="$4" 'BEGIN {
    ok = (op == ">=") ? (v >= g) : (v <= g)
    printf "target %s %.2f (%s %s) %s\n", n, v, op, g, (ok ? "met" : "not met") }'
}

printf '%-58s %10s\n' "case" "req/s"
row "GET, vkclient.ngx" "${vk_get[@]}"
row "GET, lua-resty-redis (connect + set_keepalive)" "${resty_get[@]}"
row "pipeline of 100 GETs, vkclient.ngx" "${vk_pl[@]}"
row "pipeline of 100 GETs, lua-resty-redis" "${resty_pl[@]}"
row "lock pair, vkclient.ngx (try_lock + unlock)" "${vk_lock[@]}"
row "lock pair, lua-resty-redis (SET NX PX + EVAL)" "${resty_lock[@]}"
row "GET, vkclient.ngx, with $SLOW connections looping on BLPOP 0.2" "${slow_rps[@]}"
printf '%-58s %10.2f  runs:' "GET p99 (ms), vkclient.ngx, alone" "$(printf '%s\n' "${base_p99[@]}" | median)"
printf ' %.2f' "${base_p99[@]}"; printf '\n'
printf '%-58s %10.2f  runs:' "GET p99 (ms), vkclient.ngx, with the BLPOP loops" "$(printf '%s\n' "${slow_p99[@]}" | median)"
printf ' %.2f' "${slow_p99[@]}"; printf '\n'
printf '%-58s %10.0f  runs:' "BLPOP 0.2 requests completed during a slow run" "$(printf '%s\n' "${blpop_n[@]}" | median)"
printf ' %.0f' "${blpop_n[@]}"; printf '  (p50 %.0f ms)\n' "$(printf '%s\n' "${blpop_p50[@]}" | median)"
target ngx_get_vs_resty "$(ratio_median "${vk_get[@]}" -- "${resty_get[@]}")" ">=" 1.0
target ngx_pipeline100_vs_resty "$(ratio_median "${vk_pl[@]}" -- "${resty_pl[@]}")" ">=" 1.5
target ngx_lock_pair_vs_resty "$(ratio_median "${vk_lock[@]}" -- "${resty_lock[@]}")" ">=" 1.3
target ngx_slow_get_p99_ms "$(printf '%s\n' "${slow_p99[@]}" | median)" "<=" 20
target ngx_slow_get_vs_get "$(ratio_median "${slow_rps[@]}" -- "${vk_get[@]}")" ">=" 0.8
