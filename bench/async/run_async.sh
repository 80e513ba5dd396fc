#!/usr/bin/env bash
# The event-loop client's part of bench/run.sh, run against the server that
# bench/run.sh started (and pinned with it to the same core):
#
#   bash bench/async/run_async.sh HOST PORT [ops] [runs]    (BENCH_ASYNC_BIN=.../bench_async)
#
# GET of one key, each case once per run, the order alternating between
# runs; the report gives every run's ops/s, their medians, and for each
# target the median over the runs of the ratio within a run:
#   - the event-loop client (libuv) with 64 GETs in flight on its one
#     connection, against the blocking client from 64 threads sharing one
#     client (pool of 64), and against valkey-benchmark -c 1 -P 16 -t get;
#   - the event-loop client with 1 GET in flight against the blocking client
#     from 1 thread.
# Cases with many requests in flight send more GETs (EV_SCALE, BLOCKING_SCALE
# times ops) so that each lasts about as long as the others.
#
# For reference only (no target): lock pairs on the event loop (one key at a
# time, and 64 keys at once), and GLIDE for Node.js and ioredis, 64 GETs in
# flight on one client, installed with npm into a temporary folder that is
# removed at the end. When node or npm is missing, Debian's nodejs and npm
# are installed only when running as root; any failure there prints
# "reference skipped: <reason>" and the benchmark goes on.
set -euo pipefail

HOST=${1:?usage: run_async.sh HOST PORT [ops] [runs]}
PORT=${2:?usage: run_async.sh HOST PORT [ops] [runs]}
OPS=${3:-20000}
RUNS=${4:-5}
BIN=${BENCH_ASYNC_BIN:?BENCH_ASYNC_BIN must name the bench_async program}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INFLIGHT=64
THREADS=64
EV_SCALE=25
BLOCKING_SCALE=5
NODE_SCALE=5

EV_OPS=$(( OPS * EV_SCALE ))
BLOCKING_OPS=$(( OPS * BLOCKING_SCALE ))
NODE_OPS=$(( OPS * NODE_SCALE ))

# The median of the numbers on standard input.
median() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; m = int((NR + 1) / 2);
    if (NR % 2) print v[m]; else printf "%.6f\n", (v[m] + v[m + 1]) / 2 }'
}

# ops/s of one bench_async run: the figure of its summary line.
run_c() {
  local out
  out=$("$BIN" "$HOST" "$PORT" "$@" 1) || { echo "bench_async $* failed" >&2; return 1; }
  echo "$out" | awk '/ops\/s \(median/ { print $3 }'
}

# valkey-benchmark reads the key "key:__rand_int__" (without -r); give it the
# same three-byte value the other clients read, so every client gets the same
# reply.
valkey-cli -h "$HOST" -p "$PORT" SET key:__rand_int__ xxx >/dev/null
run_vb() {
  valkey-benchmark -h "$HOST" -p "$PORT" -c 1 -P 16 -t get -n "$EV_OPS" --csv 2>/dev/null |
    awk -F'"' '$2 == "GET" { print $4 }'
}

ev64=() ev1=() blk64=() blk1=() vb=()
for (( run = 0; run < RUNS; run++ )); do
  cases=(ev64 blk64 vb ev1 blk1)
  (( run % 2 )) && cases=(blk1 ev1 vb blk64 ev64)
  for c in "${cases[@]}"; do
    case $c in
      ev64) v=$(run_c evloop "$INFLIGHT" "$EV_OPS") ;;
      ev1) v=$(run_c evloop 1 "$OPS") ;;
      blk64) v=$(run_c blocking "$THREADS" "$BLOCKING_OPS") ;;
      blk1) v=$(run_c blocking 1 "$OPS") ;;
      vb) v=$(run_vb) ;;
    esac
    [ -n "$v" ] || { echo "run_async: no figure for $c" >&2; exit 1; }
    eval "$c+=(\"\$v\")"
  done
done

row() { # label, values...
  local label=$1; shift
  printf '%-48s %10.0f  runs:' "$label" "$(printf '%s\n' "$@" | median)"
  printf ' %.0f' "$@"
  printf '\n'
}
# target NAME GOAL NUMERATORS... -- DENOMINATORS...: the median of the
# per-run ratios.
target() {
  local name=$1 goal=$2; shift 2
  local num=() den=() r
  while [ "$1" != -- ]; do num+=("$1"); shift; done
  shift
  den=("$@")
  r=$(for i in "${!num[@]}"; do awk -v a="${num[$i]}" -v b="${den[$i]}" 'BEGIN { printf "%.6f\n", a / b }'; done | median)
  awk -v n="$name" -v r="$r" -v g="$goal" \
    'BEGIN { printf "target %s %.2f (>= %s) %s\n", n, r, g, (r >= g ? "met" : "not met") }'
}

echo "event-loop client (libuv, vkclient_async.h) vs blocking client, GET of one key, median of $RUNS runs"
printf '%-48s %10s\n' "case" "ops/s"
row "evloop, $INFLIGHT in flight ($EV_OPS GETs)" "${ev64[@]}"
row "evloop, 1 in flight ($OPS GETs)" "${ev1[@]}"
row "blocking, $THREADS threads, one client ($BLOCKING_OPS GETs)" "${blk64[@]}"
row "blocking, 1 thread ($OPS GETs)" "${blk1[@]}"
row "valkey-benchmark -c 1 -P 16 -t get ($EV_OPS)" "${vb[@]}"
target evloop_64_vs_blocking_64threads 4.0 "${ev64[@]}" -- "${blk64[@]}"
target evloop_64_vs_valkey_benchmark_P16 0.5 "${ev64[@]}" -- "${vb[@]}"
target evloop_1_vs_blocking 0.9 "${ev1[@]}" -- "${blk1[@]}"

# ---- reference: the lock on the event loop ---------------------------------
# Lock pairs (vk_async_lock_try + vk_async_lock_unlock, two round trips):
# one key at a time, and 64 keys at once on the same connection.
lk1=() lk64=()
for (( run = 0; run < RUNS; run++ )); do
  v=$(run_c evlock 1 "$OPS") || { echo "run_async: no figure for lock pairs" >&2; exit 1; }
  lk1+=("$v")
  v=$(run_c evlock "$INFLIGHT" "$BLOCKING_OPS") || { echo "run_async: no figure for lock pairs" >&2; exit 1; }
  lk64+=("$v")
done
echo
echo "reference (no target): lock pairs on the event loop (try + unlock), median of $RUNS runs"
row "evloop lock pairs, 1 key at a time ($OPS pairs)" "${lk1[@]}"
row "evloop lock pairs, $INFLIGHT keys at once ($BLOCKING_OPS pairs)" "${lk64[@]}"

# ---- reference: Node.js clients --------------------------------------------
echo
echo "reference (no target): Node.js clients, $INFLIGHT GETs in flight on one client ($NODE_OPS GETs, median of $RUNS runs)"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

skip() { echo "reference skipped: $*"; }

node_ready() {
  if command -v node >/dev/null && command -v npm >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    skip "node or npm not installed (as root: apt-get install nodejs npm)"
    return 1
  fi
  echo "installing Debian's nodejs and npm"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get install -y -q --no-install-recommends nodejs npm >"$TMP/apt.log" 2>&1 ||
         { apt-get update -q >>"$TMP/apt.log" 2>&1 &&
           apt-get install -y -q --no-install-recommends nodejs npm >>"$TMP/apt.log" 2>&1; }; }; then
    skip "apt-get install nodejs npm failed: $(tail -n 1 "$TMP/apt.log")"
    return 1
  fi
}

# npm_get DIR PACKAGE: installs PACKAGE into DIR/node_modules (log in
# DIR.log); the npm cache stays in the temporary folder too.
npm_get() {
  mkdir -p "$1"
  local rc=0
  timeout 300 npm install --prefix "$1" --cache "$TMP/npm-cache" --no-audit --no-fund \
    --loglevel=error "$2" >"$1.log" 2>&1 || rc=$?
  [ "$rc" -ne 124 ] || echo "npm error timed out after 300 s" >>"$1.log"
  return "$rc"
}

# Why an npm run failed, in one line: its error code and first message
# (npm 7+ writes "npm error", older ones "npm ERR!").
npm_reason() {
  local code msg
  code=$(sed -nE 's/^npm (error|ERR!) code //p' "$1" | head -n 1)
  msg=$(sed -nE 's/^npm (error|ERR!) //p' "$1" |
    grep -vE '^(code|syscall|errno) |^ +at |^A complete log|^[[:space:]]*$' | head -n 1)
  [ -n "$msg" ] || msg=$(grep -v '^[[:space:]]*$' "$1" | tail -n 1)
  echo "${code:+$code: }$msg"
}

# reference NAME PACKAGE MODULE SCRIPT: PACKAGE is what npm installs
# (with a version range or not), MODULE the name it is required by.
reference() {
  local name=$1 package=$2 module=$3 script=$4 dir=$TMP/$1 version
  if ! npm_get "$dir" "$package"; then
    skip "$name: npm install $package failed: $(npm_reason "$dir.log")"
    return 0
  fi
  version=$(node -p 'require(process.argv[1]).version' "$dir/node_modules/$module/package.json" \
    2>/dev/null || echo "?")
  echo "$name $version on node $(node --version)"
  if ! NODE_PATH=$dir/node_modules timeout 600 node "$HERE/$script" "$HOST" "$PORT" "$INFLIGHT" "$NODE_OPS" "$RUNS" \
      >"$dir.out" 2>&1; then
    skip "$name: $(tail -n 1 "$dir.out")"
    return 0
  fi
  grep -v '^run ' "$dir.out"
  grep '^run ' "$dir.out" | awk '{ printf " %s", $3 } END { print "" }' | sed 's/^/  runs:/'
  local ops
  ops=$(awk '/ops\/s \(median/ { print $3 }' "$dir.out")
  awk -v e="$(printf '%s\n' "${ev64[@]}" | median)" -v o="$ops" -v n="$name" \
    'BEGIN { printf "evloop %d in flight vs %s: %.2f\n", '"$INFLIGHT"', n, e / o }'
}

if node_ready; then
  # ioredis 6 needs node 20; Debian 12's node is 18, which ioredis 5 serves.
  ioredis_pkg=ioredis
  [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ] || ioredis_pkg=ioredis@5
  reference glide @valkey/valkey-glide @valkey/valkey-glide glide_get.js
  reference ioredis "$ioredis_pkg" ioredis ioredis_get.js
fi
