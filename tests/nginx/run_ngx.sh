#!/usr/bin/env bash
# require "vkclient.ngx" (bindings/lua/vkclient/ngx.lua: the client and
# lock on cosockets) inside a real nginx with lua-nginx-module (Debian's
# nginx and libnginx-mod-http-lua, LuaJIT 2.1, lua-resty-core), against the
# harness's servers:
#
#   /usr/bin/python3 tests/harness/vkharness.py run [--topologies] -- tests/nginx/run_ngx.sh
#
# It starts nginx (2 workers) in a temporary prefix on a free loopback port
# with the LuaJIT build of vkclient.so ($VK_BUILD_DIR/bindings/lua/luajit)
# and bindings/lua/?.lua, trusting the harness's CA through
# lua_ssl_trusted_certificate; ngx_driver.py then sends the requests and
# checks the handlers of ngx_app.lua (commands from many concurrent
# requests, BLPOP next to quick GETs, locks contended by both workers and
# by a Python process, calls from init_worker and the log phase, a closed
# client, TLS, Sentinel and Cluster when --topologies gave them, parity
# with require "vkclient", values exchanged with lua-resty-redis, GCP IAM
# tokens rotating under load, connections kept in nginx's keepalive pool
# across the driver's idle periods and never reused after a password
# change or a token rotation, and with --topologies a Sentinel failover and
# a Cluster slot migration under load on a group and a cluster of the
# driver's own). nginx must then stop within NGX_QUIT_WAIT seconds of a
# graceful QUIT (default 10), and a closed client's connections leave the
# server within NGX_CLOSE_WAIT seconds (default 3).
#
# lua-resty-redis (the interop peer, a test dependency only, never shipped)
# is read from NGX_RESTY_REDIS_LIB (default: the peers' copy beside the
# repository, ../shared/peers/lua-resty-redis/lib, the folder holding
# resty/redis.lua); without it the interop check is reported as not run.
#
# It also starts tests/harness/iam_env.py: a TLS server whose passwords are
# GCP IAM tokens, minted by the harness's Google stand-in. Everything
# started here is stopped by PID.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/nginx
BUILD=${VK_BUILD_DIR:-$ROOT/build/gcc}
MODULE_DIR=$BUILD/bindings/lua/luajit
: "${VK_TEST_ADDR:?run this under tests/harness/vkharness.py}"
: "${VK_TEST_HARNESS:?run this under tests/harness/vkharness.py}"
: "${VK_TEST_TLS_ADDR:?run this under tests/harness/vkharness.py without --plain-only}"

fail() {
  echo "nginx vkclient.ngx test: FAIL: $*" >&2
  exit 1
}

[ -f "$MODULE_DIR/vkclient.so" ] || fail "missing $MODULE_DIR/vkclient.so (build with -DVK_BUILD_LUA=ON)"
[ -f "$BUILD/bindings/python/vkclient/__init__.py" ] ||
  fail "missing $BUILD/bindings/python (the Python binding holds the lock from outside nginx)"

# shellcheck source=tests/nginx/nginx_env.sh
source "$HERE/nginx_env.sh"
PREFIX=$(mktemp -d "${TMPDIR:-/tmp}/vk-ngx.XXXXXX")
PORT=$(ngx_free_port)
NGINX_PID=""
IAM_PID=""

# How long nginx may take to stop after QUIT (graceful shutdown) before it
# is killed, and the test fails.
QUIT_WAIT=${NGX_QUIT_WAIT:-10}
QUIT_SLOW=""

# Stops nginx (nginx_env.sh), and says how long it took.
stop_nginx() {
  [ -n "$NGINX_PID" ] || return 0
  local t0
  t0=$(date +%s%N)
  ngx_stop "$QUIT_WAIT" || QUIT_SLOW=yes
  echo "nginx stopped $(( ($(date +%s%N) - t0) / 1000000 )) ms after QUIT"
}

# Stops iam_env.py (its stop file, then TERM by PID): it stops its server
# and the Google stand-in by their PIDs.
stop_iam() {
  [ -n "$IAM_PID" ] || return 0
  : >"$PREFIX/iam/stop"
  for _ in $(seq 1 100); do
    kill -0 "$IAM_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -TERM "$IAM_PID" 2>/dev/null || true
  wait "$IAM_PID" 2>/dev/null || true
  IAM_PID=""
}

cleanup() {
  local rc=$?
  stop_nginx || true
  stop_iam || true
  if [ "$rc" -ne 0 ] && [ -f "$PREFIX/error.log" ]; then
    echo "---- nginx error.log (last 80 lines) ----" >&2
    tail -n 80 "$PREFIX/error.log" >&2
  fi
  rm -rf "$PREFIX"
  exit "$rc"
}
trap cleanup EXIT

mkdir -p "$PREFIX/logs" "$PREFIX/iam"

# The IAM server and the Google stand-in start while nginx is set up.
VK_TEST_SERVER=${VK_TEST_SERVER:-valkey-server} \
  /usr/bin/python3 "$ROOT/tests/harness/iam_env.py" "$PREFIX/iam" >"$PREFIX/iam.log" 2>&1 &
IAM_PID=$!

# lua-resty-redis, for the interop check.
RESTY_REDIS_LIB=${NGX_RESTY_REDIS_LIB:-$ROOT/../shared/peers/lua-resty-redis/lib}
LUA_PATH="$HERE/?.lua;$ROOT/bindings/lua/?.lua"
if [ -f "$RESTY_REDIS_LIB/resty/redis.lua" ]; then
  LUA_PATH+=";$RESTY_REDIS_LIB/?.lua"
  echo "lua-resty-redis: $RESTY_REDIS_LIB/resty/redis.lua"
else
  echo "lua-resty-redis: not found in $RESTY_REDIS_LIB (set NGX_RESTY_REDIS_LIB): interop not run"
fi

# The CA files: the harness's (trusted) and an unrelated one (/t/wrong_ca).
CA_FILE=${VK_TEST_CA_FILE:?}
echo "${VK_TEST_OTHER_CA_B64:?}" | base64 -d >"$PREFIX/other_ca.pem"

for _ in $(seq 1 600); do
  [ -f "$PREFIX/iam/ready" ] && break
  kill -0 "$IAM_PID" 2>/dev/null || { cat "$PREFIX/iam.log" >&2; fail "iam_env.py exited"; }
  sleep 0.1
done
[ -f "$PREFIX/iam/ready" ] || { cat "$PREFIX/iam.log" >&2; fail "the IAM servers did not start"; }
while IFS='=' read -r key value; do
  export "VK_IAM_$key=$value"
done <"$PREFIX/iam/ready"
echo "$VK_IAM_CA_B64" | base64 -d >"$PREFIX/iam_ca.pem"

/usr/bin/python3 - "$HERE/ngx.conf.in" "$PREFIX/nginx.conf" <<EOF
import sys
text = open(sys.argv[1]).read()
values = {
    "@LOAD_MODULES@": """$NGX_LOAD_MODULES""",
    "@USER_DIRECTIVE@": "$NGX_USER_DIRECTIVE",
    "@PREFIX@": "$PREFIX",
    "@PORT@": "$PORT",
    "@CPATH@": "$MODULE_DIR/?.so",
    "@LUA_PATH@": "$LUA_PATH",
    "@CA_FILE@": "$CA_FILE",
    "@IAM_CA_FILE@": "$PREFIX/iam_ca.pem",
    "@OTHER_CA_FILE@": "$PREFIX/other_ca.pem",
}
for key, value in values.items():
    text = text.replace(key, value)
open(sys.argv[2], "w").write(text)
EOF

nginx -t -p "$PREFIX" -c "$PREFIX/nginx.conf" -e "$PREFIX/error.log" >"$PREFIX/check.log" 2>&1 ||
  { cat "$PREFIX/check.log" >&2; fail "nginx -t rejected the configuration"; }
nginx -p "$PREFIX" -c "$PREFIX/nginx.conf" -e "$PREFIX/error.log" &
NGINX_PID=$!

# Ready when nginx answers (the clients connect on first use).
for _ in $(seq 1 100); do
  curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$PORT/log_phase" 2>/dev/null && break
  kill -0 "$NGINX_PID" 2>/dev/null || fail "nginx exited during start-up"
  sleep 0.1
done

NGX_URL=http://127.0.0.1:$PORT NGX_ERROR_LOG=$PREFIX/error.log \
  PYTHONPATH="$BUILD/bindings/python${PYTHONPATH:+:$PYTHONPATH}" \
  /usr/bin/python3 "$HERE/ngx_driver.py" || fail "the checks above failed"

# nginx stops on QUIT although its workers hold cosockets.
stop_nginx
stop_iam
[ -z "$QUIT_SLOW" ] || fail "nginx (graceful QUIT) did not stop within $QUIT_WAIT s"
if grep -E '\[(alert|emerg|crit)\]|\[error\]' "$PREFIX/error.log" |
   grep -v -E 'lua ssl certificate verify error|certificate verify failed'; then
  fail "errors in nginx's error.log"
fi
echo "nginx vkclient.ngx test: OK"
