#!/usr/bin/env bash
# The quota script's cost in redis-server instructions per decision, counted under callgrind
# (repeatable on a noisy machine, unlike µs): the batched script against the previous one
# (crates/quota/tests/fixtures/rolling_log_v1.lua), on a redis-server of its own per count.
# Each figure is (instructions for 2N decisions − for N) ÷ N, so start-up and warm-up cancel.
#
#   services/stanna/bench/redis_script_instructions.sh [N]     (default 1600; ~10 min)
#
# Scenarios as redis_script.sh: the defaults over 3000 keys and the largest limits over 300,
# every decision admitted; the batched script with 1 and 32 decisions per call.
# Needs: valgrind, redis-server, redis-cli, python3.
set -euo pipefail
cd "$(dirname "$0")/../../.."
N=${1:-1600}
N=$(( (N + 31) / 32 * 32 ))
PORT=${PORT:-18392}
LOAD=services/stanna/bench/redis_script_load.py
NEW=crates/quota/src/rolling_log.lua
OLD=crates/quota/tests/fixtures/rolling_log_v1.lua

# count SCRIPT KEYS DECISIONS BATCH WINDOWS…: redis-server instructions after the warm-up
count() {
  local script=$1 keys=$2 decisions=$3 batch=$4; shift 4
  local dir; dir=$(mktemp -d)
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" redis-server --port "$PORT" \
    --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/log" 2>&1 &
  local vg=$!
  for _ in $(seq 200); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.2; done
  local sha; sha=$(redis-cli -p "$PORT" SCRIPT LOAD "$(cat "$script")")
  # Warm-up: every key's state made (its first decision rebuilds it), and one more round.
  EVERY_KEY=1 python3 "$LOAD" "$PORT" "$sha" "$keys" $((keys * 2)) "$batch" "$@" >/dev/null
  callgrind_control -z "$vg" >/dev/null
  python3 "$LOAD" "$PORT" "$sha" "$keys" "$decisions" "$batch" "$@" >/dev/null
  redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
  wait "$vg" 2>/dev/null || true
  awk '/^summary:/ {print $2}' "$dir"/cg.out*
  rm -rf "$dir"
}
per_decision() {
  local a b
  a=$(count "$1" "$2" "$N" "${@:3}")
  b=$(count "$1" "$2" $((2 * N)) "${@:3}")
  echo $(( (b - a) / N ))
}

printf '%-40s %s\n' scenario 'instructions per decision'
for scenario in "defaults 3000 100 60000 1000 3600000" "largest 300 10000 60000 10000 3600000"; do
  set -- $scenario
  name=$1 keys=$2; shift 2
  printf '%-40s %s\n' "$name, previous script" "$(per_decision "$OLD" "$keys" 0 "$@")"
  for b in 1 32; do
    printf '%-40s %s\n' "$name, batched script, $b per call" "$(per_decision "$NEW" "$keys" "$b" "$@")"
  done
done
