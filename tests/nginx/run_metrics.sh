#!/usr/bin/env bash
# require "vkclient.prometheus" (bindings/lua/vkclient/prometheus.lua) in a
# real nginx with lua-nginx-module (Debian's nginx and
# libnginx-mod-http-lua, LuaJIT 2.1, lua-resty-core), against the
# harness's server:
#
#   /usr/bin/python3 tests/harness/vkharness.py run -- tests/nginx/run_metrics.sh
#
# It starts nginx (2 workers) in a temporary prefix on a free loopback port
# with the LuaJIT build of vkclient.so ($VK_BUILD_DIR/bindings/lua/luajit)
# and bindings/lua/?.lua; each worker records the metrics of a vkclient.ngx
# client and of a blocking client into one lua_shared_dict (handlers:
# metrics_app.lua). metrics_driver.py runs a workload in both workers,
# scrapes /metrics and checks the text against what it did. Then the
# example examples/lua/openresty_prometheus.conf runs as it is written, but
# for its port, its module paths and the server address: its /counter and
# /metrics are checked the same way. nginx is stopped by its PID.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/nginx
BUILD=${VK_BUILD_DIR:-$ROOT/build/gcc}
MODULE_DIR=$BUILD/bindings/lua/luajit
: "${VK_TEST_ADDR:?run this under tests/harness/vkharness.py}"
: "${VK_TEST_HARNESS:?run this under tests/harness/vkharness.py}"

fail() {
  echo "nginx vkclient.prometheus test: FAIL: $*" >&2
  exit 1
}

[ -f "$MODULE_DIR/vkclient.so" ] || fail "missing $MODULE_DIR/vkclient.so (build with -DVK_BUILD_LUA=ON)"

# shellcheck source=tests/nginx/nginx_env.sh
source "$HERE/nginx_env.sh"
PREFIX=$(mktemp -d "${TMPDIR:-/tmp}/vk-ngx-metrics.XXXXXX")
PORT=$(ngx_free_port)
NGINX_PID=""

cleanup() {
  local rc=$?
  ngx_stop 10 || true
  if [ "$rc" -ne 0 ]; then
    for log in "$PREFIX/error.log" "$PREFIX/example/logs/error.log"; do
      [ -f "$log" ] || continue
      echo "---- $log (last 60 lines) ----" >&2
      tail -n 60 "$log" >&2
    done
  fi
  rm -rf "$PREFIX"
  exit "$rc"
}
trap cleanup EXIT

mkdir -p "$PREFIX/logs"

/usr/bin/python3 - "$HERE/metrics.conf.in" "$PREFIX/nginx.conf" <<PY
import sys
text = open(sys.argv[1]).read()
values = {
    "@LOAD_MODULES@": """$NGX_LOAD_MODULES""",
    "@USER_DIRECTIVE@": "$NGX_USER_DIRECTIVE",
    "@PREFIX@": "$PREFIX",
    "@PORT@": "$PORT",
    "@CPATH@": "$MODULE_DIR/?.so",
    "@LUA_PATH@": "$HERE/?.lua;$ROOT/bindings/lua/?.lua",
}
for key, value in values.items():
    text = text.replace(key, value)
open(sys.argv[2], "w").write(text)
PY

nginx -t -p "$PREFIX" -c "$PREFIX/nginx.conf" -e "$PREFIX/error.log" >"$PREFIX/check.log" 2>&1 ||
  { cat "$PREFIX/check.log" >&2; fail "nginx -t rejected the configuration"; }
nginx -p "$PREFIX" -c "$PREFIX/nginx.conf" -e "$PREFIX/error.log" &
NGINX_PID=$!

for _ in $(seq 1 100); do
  curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$PORT/metrics" 2>/dev/null && break
  kill -0 "$NGINX_PID" 2>/dev/null || fail "nginx exited during start-up"
  sleep 0.1
done

NGX_URL=http://127.0.0.1:$PORT NGX_ERROR_LOG=$PREFIX/error.log \
  /usr/bin/python3 "$HERE/metrics_driver.py" || fail "the checks above failed"

ngx_stop 10 || true
# The full dict's warning is expected (once per worker); nothing worse.
if grep -E '\[(alert|emerg|crit|error)\]' "$PREFIX/error.log"; then
  fail "errors in nginx's error.log"
fi

# The example, with this machine's module paths, a free port, the build
# tree's modules and the harness's server.
EXAMPLE=$PREFIX/example
mkdir -p "$EXAMPLE/logs"
EXAMPLE_PORT=$(/usr/bin/python3 -c '
import os, sys
sys.path.insert(0, os.path.dirname(os.environ["VK_TEST_HARNESS"]))
from vkharness import free_port
print(free_port())')
/usr/bin/python3 - "$ROOT/examples/lua/openresty_prometheus.conf" "$EXAMPLE/nginx.conf" <<PY || fail "the example is not as expected"
import re, sys
text = open(sys.argv[1]).read()
def sub(pattern, value, count=1):
    global text
    text, n = re.subn(pattern, lambda m: value, text, flags=re.M)
    if n != count:
        sys.exit("the example has %d lines matching %r (want %d)" % (n, pattern, count))
sub(r"^load_module .*ndk_http_module\.so;\n", "")
sub(r"^load_module .*ngx_http_lua_module\.so;\n", """$NGX_LOAD_MODULES$NGX_USER_DIRECTIVE\n""")
sub(r"listen 127\.0\.0\.1:8080;", "listen 127.0.0.1:$EXAMPLE_PORT;")
sub(r"/usr/local/share/lua/5\.1/\?\.lua", "$ROOT/bindings/lua/?.lua")
sub(r"/usr/local/lib/lua/5\.1/\?\.so", "$MODULE_DIR/?.so")
open(sys.argv[2], "w").write(text)
PY
REDIS_ADDR=$VK_TEST_ADDR nginx -t -p "$EXAMPLE" -c "$EXAMPLE/nginx.conf" -g 'daemon off;' \
  >"$EXAMPLE/check.log" 2>&1 ||
  { cat "$EXAMPLE/check.log" >&2; fail "nginx -t rejected the example"; }
REDIS_ADDR=$VK_TEST_ADDR nginx -p "$EXAMPLE" -c "$EXAMPLE/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
for _ in $(seq 1 100); do
  curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$EXAMPLE_PORT/metrics" 2>/dev/null && break
  kill -0 "$NGINX_PID" 2>/dev/null || fail "nginx (the example) exited during start-up"
  sleep 0.1
done
NGX_URL=http://127.0.0.1:$EXAMPLE_PORT \
  /usr/bin/python3 "$HERE/metrics_driver.py" example || fail "the example's checks above failed"
ngx_stop 10 || true
if grep -E '\[(alert|emerg|crit|error)\]' "$EXAMPLE/logs/error.log"; then
  fail "errors in the example's error.log"
fi
echo "nginx vkclient.prometheus test: OK"
