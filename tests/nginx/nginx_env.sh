# shellcheck shell=bash
# Sourced by the nginx suites (run.sh, run_ngx.sh, run_metrics.sh): what
# they all need to run Debian's nginx with lua-nginx-module in a temporary
# prefix. The sourcing script defines fail() before, and NGINX_PID after.

# The load_module lines of the dynamic modules: lua-nginx-module needs the
# NDK loaded before it.
# shellcheck disable=SC2034  # used by the scripts that source this one
NGX_LOAD_MODULES=""
for ngx_module in ndk_http_module ngx_http_lua_module; do
  ngx_path=""
  for ngx_dir in /usr/lib/nginx/modules /usr/share/nginx/modules; do
    [ -f "$ngx_dir/$ngx_module.so" ] && { ngx_path=$ngx_dir/$ngx_module.so; break; }
  done
  [ -n "$ngx_path" ] || fail "nginx module $ngx_module not found (install libnginx-mod-http-lua)"
  NGX_LOAD_MODULES+="load_module $ngx_path;"$'\n'
done
unset ngx_module ngx_path ngx_dir

# As root, the workers would switch to an unprivileged user that may not
# read the build tree: keep the current user.
# shellcheck disable=SC2034
NGX_USER_DIRECTIVE=""
if [ "$(id -u)" = 0 ]; then
  NGX_USER_DIRECTIVE="user $(id -un) $(id -gn);"
fi

# A free loopback port, from the harness.
ngx_free_port() {
  /usr/bin/python3 -c '
import os, sys
sys.path.insert(0, os.path.dirname(os.environ["VK_TEST_HARNESS"]))
from vkharness import free_port
print(free_port())'
}

# Stops the nginx of $NGINX_PID: QUIT (graceful), then, after $1 seconds,
# KILL for the master and the workers it had (by their PIDs). Returns 1
# when it had to kill.
ngx_stop() {
  [ -n "$NGINX_PID" ] || return 0
  local wait_s=$1 workers slow=0
  workers=$(ps -o pid= --ppid "$NGINX_PID" 2>/dev/null || true)
  kill -QUIT "$NGINX_PID" 2>/dev/null || true
  for _ in $(seq 1 $((wait_s * 10))); do
    kill -0 "$NGINX_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$NGINX_PID" 2>/dev/null; then
    slow=1
    echo "nginx did not stop within $wait_s s of QUIT: killing it and its workers" >&2
    ps -o pid,etimes,args --ppid "$NGINX_PID" >&2 || true
    # shellcheck disable=SC2086
    kill -KILL "$NGINX_PID" $workers 2>/dev/null || true
  fi
  wait "$NGINX_PID" 2>/dev/null || true
  NGINX_PID=""
  return "$slow"
}
