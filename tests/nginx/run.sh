#!/usr/bin/env bash
# The Lua binding inside a real nginx with lua-nginx-module (Debian's nginx
# and libnginx-mod-http-lua, which run LuaJIT 2.1). Run it under the test
# harness, which provides the Redis/Valkey server:
#
#   /usr/bin/python3 tests/harness/vkharness.py run -- tests/nginx/run.sh
#
# It starts nginx in a temporary prefix on a free loopback port with the
# LuaJIT build of vkclient.so ($VK_BUILD_DIR/bindings/lua/luajit), plus a
# TLS server taking GCP IAM tokens from the harness's Google stand-in
# (tests/harness/iam_env.py), checks the handlers of vkclient_app.lua over plain
# HTTP (status, IAM refresh by ngx.timer.every + client:tick(), locks, an
# error under the lock, 40 concurrent locked increments over 2 workers), and
# stops everything by PID.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/nginx
BUILD=${VK_BUILD_DIR:-$ROOT/build/gcc}
MODULE_DIR=$BUILD/bindings/lua/luajit
: "${VK_TEST_ADDR:?run this under tests/harness/vkharness.py}"
: "${VK_TEST_HARNESS:?run this under tests/harness/vkharness.py}"

fail() {
  echo "nginx test: FAIL: $*" >&2
  exit 1
}

[ -f "$MODULE_DIR/vkclient.so" ] || fail "missing $MODULE_DIR/vkclient.so (build with -DVK_BUILD_LUA=ON)"

# shellcheck source=tests/nginx/nginx_env.sh
source "$HERE/nginx_env.sh"
PREFIX=$(mktemp -d "${TMPDIR:-/tmp}/vk-nginx.XXXXXX")
PORT=$(ngx_free_port)
NGINX_PID=""
IAM_PID=""

cleanup() {
  local rc=$?
  if [ -n "$IAM_PID" ]; then
    : >"$PREFIX/iam/stop"
    for _ in $(seq 1 100); do
      kill -0 "$IAM_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -TERM "$IAM_PID" 2>/dev/null || true
    wait "$IAM_PID" 2>/dev/null || true
  fi
  ngx_stop 5 || true
  if [ "$rc" -ne 0 ] && [ -f "$PREFIX/error.log" ]; then
    echo "---- nginx error.log ----" >&2
    tail -n 60 "$PREFIX/error.log" >&2
  fi
  rm -rf "$PREFIX"
  exit "$rc"
}
trap cleanup EXIT

mkdir -p "$PREFIX/logs" "$PREFIX/iam"

# A TLS server taking GCP IAM tokens from the harness's Google stand-in.
/usr/bin/python3 "$ROOT/tests/harness/iam_env.py" "$PREFIX/iam" >"$PREFIX/iam.log" 2>&1 &
IAM_PID=$!
for _ in $(seq 1 600); do
  [ -f "$PREFIX/iam/ready" ] && break
  kill -0 "$IAM_PID" 2>/dev/null || { cat "$PREFIX/iam.log" >&2; fail "iam_env.py exited"; }
  sleep 0.1
done
[ -f "$PREFIX/iam/ready" ] || fail "the IAM servers did not start"
while IFS='=' read -r key value; do
  export "VK_IAM_$key=$value"
done <"$PREFIX/iam/ready"
/usr/bin/python3 - "$HERE/nginx.conf.in" "$PREFIX/nginx.conf" <<EOF
import sys
text = open(sys.argv[1]).read()
values = {
    "@LOAD_MODULES@": """$NGX_LOAD_MODULES""",
    "@USER_DIRECTIVE@": "$NGX_USER_DIRECTIVE",
    "@PREFIX@": "$PREFIX",
    "@PORT@": "$PORT",
    "@CPATH@": "$MODULE_DIR/?.so",
    "@LUA_PATH@": "$HERE/?.lua",
}
for key, value in values.items():
    text = text.replace(key, value)
open(sys.argv[2], "w").write(text)
EOF

nginx -t -p "$PREFIX" -c "$PREFIX/nginx.conf" -e "$PREFIX/error.log" >"$PREFIX/check.log" 2>&1 ||
  { cat "$PREFIX/check.log" >&2; fail "nginx -t rejected the configuration"; }
nginx -p "$PREFIX" -c "$PREFIX/nginx.conf" -e "$PREFIX/error.log" &
NGINX_PID=$!

URL=http://127.0.0.1:$PORT
get() {
  curl -sS --max-time 10 -o - -w '\n%{http_code}\n' "$URL$1"
}

# Ready when both workers have a connected client.
for _ in $(seq 1 100); do
  if curl -s --max-time 1 "$URL/status" 2>/dev/null | grep -q "connected=true"; then
    break
  fi
  kill -0 "$NGINX_PID" 2>/dev/null || fail "nginx exited during start-up"
  sleep 0.1
done

echo "-- status: a per-worker client in driven mode, ticked by ngx.timer.every"
sleep 0.5
body=$(get /status)
echo "$body"
echo "$body" | grep -q "connected=true refresh_loop_running=false" || fail "unexpected /status"
ticks=$(echo "$body" | sed -n 's/.*ticks=\([0-9]*\).*/\1/p')
[ "${ticks:-0}" -gt 0 ] || fail "the tick timer never ran"
echo "$body" | grep -q "null_is_ngx_null=true" || fail "vk.null is not ngx.null"

echo "-- IAM tokens refreshed by client:tick() from ngx.timer.every (driven mode)"
refreshed=""
for _ in $(seq 1 100); do
  body=$(get /iam)
  if echo "$body" | grep -q "refreshed=true"; then
    refreshed=yes
    break
  fi
  sleep 0.1
done
echo "$body"
[ -n "$refreshed" ] || fail "the IAM token was never refreshed by the tick timer"
echo "$body" | grep -q "^whoami=default refreshed=true loop=true error=nil$" || fail "unexpected /iam"
# The first tokens expire after 3 s and leave the server's ACL.
sleep 3.5
body=$(get /iam)
echo "$body"
echo "$body" | grep -q "^whoami=default .* error=nil$" || fail "IAM client broken after token expiry"

echo "-- one lock round trip"
body=$(get "/lock?key=nginx:single")
echo "$body"
echo "$body" | grep -q "^locked token=[0-9]* counter=1 worker=" || fail "unexpected /lock"
echo "$body" | tail -n 1 | grep -q '^200$' || fail "/lock did not answer 200"

echo "-- an error raised under the lock is returned, and the lock released"
body=$(get "/lock?key=nginx:raise&fail=1")
echo "$body"
echo "$body" | grep -q "^error LOCK_FN: distributed lock: function execution: handler failure" ||
  fail "unexpected /lock?fail=1"
body=$(get "/lock?key=nginx:raise")
echo "$body" | grep -q "^locked token=" || fail "the lock was not released after the error"

echo "-- 40 concurrent requests over 2 workers: mutual exclusion keeps every increment"
seq 1 40 | xargs -P 8 -I{} curl -sS --max-time 30 -o /dev/null -w '%{http_code}\n' "$URL/lock" >"$PREFIX/codes.txt"
if grep -v '^200$' "$PREFIX/codes.txt"; then
  fail "some locked requests failed"
fi
body=$(get /counter)
echo "$body"
echo "$body" | grep -q "^counter=42$" || fail "lost increments under the lock (expected 42)"

if grep -E '\[(alert|emerg|crit)\]|\[error\].*(vkclient|lua)' "$PREFIX/error.log" | grep -v "handler failure"; then
  fail "errors in nginx's error.log"
fi
echo "nginx test: OK"
