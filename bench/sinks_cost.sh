#!/usr/bin/env bash
# What the sinks cost when none is configured: blocking GETs without a
# logger, metrics or tracer (bench/c/bench_get.c, which calls only 1.0
# functions) against this tree's library and against release 1.0's (built
# from this checkout's history into a temporary folder), run after run,
# alternating, on the same server. Prints the median of each and
#   target no_sinks_get_vs_1_0 <ratio> (>= 0.97) met|not met
#
#   bash bench/sinks_cost.sh HOST PORT OPS RUNS BENCH_GET LIBDIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOST=$1 PORT=$2 OPS=$3 RUNS=$4 BENCH_GET=$5 LIBDIR=$6
# The last commit of 1.0, before 1.1 began.
V1_0=9b269ba

if ! git -C "$ROOT" cat-file -e "$V1_0^{commit}" 2>/dev/null; then
  echo "no_sinks_get_vs_1_0: not measured: this checkout has no history of 1.0 ($V1_0)"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$ROOT" archive "$V1_0" | tar -x -C "$tmp" --one-top-level=src
cmake -S "$tmp/src" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release -DVK_BUILD_TESTS=OFF \
  -DVK_BUILD_BENCH=OFF -DVK_BUILD_PYTHON=OFF -DVK_BUILD_LUA=OFF -DVK_BUILD_RUBY=OFF \
  -DVK_BUILD_EXAMPLES=OFF >"$tmp/configure.log" 2>&1
cmake --build "$tmp/build" --target vkclient -j2 >"$tmp/build.log" 2>&1

now=() old=()
for _ in $(seq "$RUNS"); do
  read -r rate version < <(LD_LIBRARY_PATH=$tmp/build "$BENCH_GET" "$HOST" "$PORT" "$OPS")
  old+=("$rate") old_version=$version
  read -r rate version < <(LD_LIBRARY_PATH=$LIBDIR "$BENCH_GET" "$HOST" "$PORT" "$OPS")
  now+=("$rate") now_version=$version
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
m_old=$(median "${old[@]}") m_now=$(median "${now[@]}")
echo "blocking GET without sinks, median of $RUNS runs of $OPS:"
echo "  vkclient $old_version (release 1.0): $m_old ops/s"
echo "  vkclient $now_version (this tree):   $m_now ops/s"
awk -v n="$m_now" -v o="$m_old" 'BEGIN {
  r = n / o; printf "target no_sinks_get_vs_1_0 %.2f (>= 0.97) %s\n", r, (r >= 0.97) ? "met" : "not met" }'
