#!/usr/bin/env bash
# Runs the examples against $VK_TEST_ADDR (started by scripts/demo.sh):
# first each on its own, then all at once on the shared lock key, and checks
# that no increment of the shared counter was lost.
set -euo pipefail

ROUNDS=5
export VK_DEMO_ADDR=$VK_TEST_ADDR
C_DEMO=$VK_BUILD_DIR/examples/c/lock_demo
C_LOOP_DEMO=$VK_BUILD_DIR/examples/c/async_lock_demo

declare -a NAMES=() COMMANDS=()
add() { NAMES+=("$1"); COMMANDS+=("$2"); }

add C "\"$C_DEMO\" \"$VK_DEMO_ADDR\" $ROUNDS"
if [ -x "$C_LOOP_DEMO" ]; then
  add "C (event loop)" "\"$C_LOOP_DEMO\" \"$VK_DEMO_ADDR\" $ROUNDS"
fi
if [ -f "$ROOT/examples/python/lock_demo.py" ]; then
  add Python "PYTHONPATH=\"$VK_BUILD_DIR/bindings/python\" /usr/bin/python3 \"$ROOT/examples/python/lock_demo.py\" \"$VK_DEMO_ADDR\" $ROUNDS"
fi
if [ -f "$ROOT/examples/lua/lock_demo.lua" ]; then
  add Lua "LUA_CPATH=\"$VK_BUILD_DIR/bindings/lua/5.1/?.so;;\" lua5.1 \"$ROOT/examples/lua/lock_demo.lua\" \"$VK_DEMO_ADDR\" $ROUNDS"
fi
if [ -f "$ROOT/examples/ruby/lock_demo.rb" ]; then
  add Ruby "RUBYLIB=\"$VK_BUILD_DIR/bindings/ruby\" ruby \"$ROOT/examples/ruby/lock_demo.rb\" \"$VK_DEMO_ADDR\" $ROUNDS"
fi

echo "demo: valkey on $VK_DEMO_ADDR"
for i in "${!NAMES[@]}"; do
  printf '\n--- %s example ---\n' "${NAMES[$i]}"
  bash -c "${COMMANDS[$i]}"
done

counter() {
  local value
  value=$(valkey-cli -h 127.0.0.1 -p "$VK_TEST_PORT" --raw GET vkclient:demo:counter)
  echo "${value:-0}"
}

before=$(counter)
printf '\n--- all %d examples at once on the lock "vkclient:demo:lock" ---\n' "${#NAMES[@]}"
pids=()
for i in "${!NAMES[@]}"; do
  bash -c "${COMMANDS[$i]}" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
after=$(counter)
expected=$(( before + ROUNDS * ${#NAMES[@]} ))
echo
echo "demo: counter went from $before to $after under the lock (expected $expected)"
[ "$status" -eq 0 ] && [ "$after" -eq "$expected" ] || { echo "demo: FAILED"; exit 1; }
echo "demo: done"
