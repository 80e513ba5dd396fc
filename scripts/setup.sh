#!/usr/bin/env bash
# Installs everything vkclient needs to build, test and benchmark on Debian 12.
# valkey 8 comes from bookworm-backports; the suite is added with the same
# URIs as the machine's existing Debian apt source, read at run time.
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

PACKAGES=(
  build-essential cmake pkg-config clang libclang-rt-14-dev gdb valgrind util-linux procps openssl
  libhiredis-dev libssl-dev libcurl4-openssl-dev libcjson-dev libuv1-dev libevent-dev
  swig python3 python3-dev python3-pytest python3-pytest-asyncio python3-uvloop python3-pip python3-setuptools python3-wheel python3-cryptography python3-prometheus-client
  ruby ruby-dev ruby-minitest rake
  lua5.1 liblua5.1-0-dev luajit2 libluajit2-5.1-dev lua5.4 liblua5.4-dev lua-busted luarocks
  redis-server redis-sentinel redis-tools
  python3-redis python3-hiredis ruby-redis lua-redis
  nginx libnginx-mod-http-lua wrk
)
BACKPORTS_PACKAGES=(valkey-server valkey-sentinel valkey-tools)

# The URIs of the first deb entry that carries the "bookworm" suite.
debian_uris() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN{RS=""; IGNORECASE=1}
         /(^|\n)Suites:[^\n]*(^|[ \t])bookworm([ \t]|\n|$)/ && !/(^|\n)Enabled:[ \t]*no/ {
           if (match($0, /(^|\n)URIs:[ \t]*[^\n]*/)) {
             s = substr($0, RSTART, RLENGTH); sub(/^\n?URIs:[ \t]*/, "", s); print s; exit
           }
         }' "$f" && return 0
  done | head -n 1
}
debian_uris_legacy() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1=="deb" { i=2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i+1)=="bookworm") { print $i; exit } }'
}

enable_backports() {
  local target=/etc/apt/sources.list.d/vkclient-bookworm-backports.sources
  if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    return 0
  fi
  local uris
  uris=$(debian_uris)
  [ -n "$uris" ] || uris=$(debian_uris_legacy)
  if [ -z "$uris" ]; then
    echo "setup: no apt source for the bookworm suite found; cannot add bookworm-backports" >&2
    exit 1
  fi
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uris" | as_root tee "$target" >/dev/null
  echo "setup: enabled bookworm-backports"
}

missing=()
for p in "${PACKAGES[@]}" "${BACKPORTS_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
enable_backports
as_root apt-get update -q
as_root apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
as_root apt-get install -y -q --no-install-recommends -t bookworm-backports "${BACKPORTS_PACKAGES[@]}"
# Packaged servers must not keep running system-wide instances: tests start their own.
for svc in redis-server redis-sentinel valkey-server valkey-sentinel nginx; do
  as_root systemctl disable --now "$svc" >/dev/null 2>&1 || true
  as_root service "$svc" stop >/dev/null 2>&1 || true
done
echo "setup: done"
