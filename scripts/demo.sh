#!/usr/bin/env bash
# The demo command: installs what is missing, builds, starts a local valkey
# on a free loopback port, runs the examples against it (they contend on one
# lock key), and stops the server.
#
#   bash scripts/demo.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/build.sh
source "$ROOT/scripts/build.sh"

[ "${VK_SKIP_SETUP:-0}" = 1 ] || bash "$ROOT/scripts/setup.sh"
mkdir -p "$BUILD_ROOT"
echo "demo: building in $BUILD_GCC"
vk_build gcc "$BUILD_GCC" >"$BUILD_ROOT/demo-build.log" 2>&1 ||
  { tail -n 40 "$BUILD_ROOT/demo-build.log"; exit 1; }

export VK_BUILD_DIR=$BUILD_GCC ROOT
exec /usr/bin/python3 "$HARNESS" run --plain-only --server valkey-server -- \
  bash "$ROOT/scripts/demo_examples.sh"
