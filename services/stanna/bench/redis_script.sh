#!/usr/bin/env bash
# The quota script's Redis CPU per decision, the batched script against the previous one
# (crates/quota/tests/fixtures/rolling_log_v1.lua), in one run on a redis-server of its own:
# INFO commandstats µs per EVALSHA ÷ decisions per call, pipelined from one client (what the
# server spends, not what a client waits). Rounds are interleaved.
#
#   services/stanna/bench/redis_script.sh [rounds]
#
# Scenarios: the product's defaults (100/min + 1000/h) over 3000 keys and the largest limits
# (10 000 + 10 000) over 300, every decision admitted (the steady state of a gateway load: nothing
# leaves a window within the run); batches of 1, 8 and 32 decisions per call.
# Needs: redis-server, redis-cli, python3.
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROUNDS=${1:-3}
PORT=${PORT:-18391}
WORK=$(mktemp -d)
trap 'redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
LOAD=services/stanna/bench/redis_script_load.py
NEW=crates/quota/src/rolling_log.lua
OLD=crates/quota/tests/fixtures/rolling_log_v1.lua

# one SCRIPT KEYS DECISIONS BATCH WINDOWS…: µs per decision (batch 0 = the previous script)
one() {
  local script=$1 keys=$2 decisions=$3 batch=$4; shift 4
  redis-cli -p "$PORT" FLUSHALL >/dev/null
  local sha; sha=$(redis-cli -p "$PORT" SCRIPT LOAD "$(cat "$script")")
  EVERY_KEY=1 python3 "$LOAD" "$PORT" "$sha" "$keys" $((keys * 20)) "$batch" "$@" >/dev/null
  redis-cli -p "$PORT" CONFIG RESETSTAT >/dev/null
  python3 "$LOAD" "$PORT" "$sha" "$keys" "$decisions" "$batch" "$@" >/dev/null
  redis-cli -p "$PORT" INFO commandstats | tr -d '\r' |
    awk -F'[=,]' -v b="$batch" '/^cmdstat_evalsha:/ {printf "%.2f", $6 / (b > 0 ? b : 1)}'
}

printf '%-6s %-34s %s\n' round scenario 'µs per decision'
for r in $(seq "$ROUNDS"); do
  for scenario in "defaults 3000 100 60000 1000 3600000" "largest 300 10000 60000 10000 3600000"; do
    set -- $scenario
    name=$1 keys=$2; shift 2
    printf '%-6s %-34s %s\n' "$r" "$name previous script" "$(one "$OLD" "$keys" 60000 0 "$@")"
    for b in 1 8 32; do
      printf '%-6s %-34s %s\n' "$r" "$name batched script, $b per call" "$(one "$NEW" "$keys" 60000 "$b" "$@")"
    done
  done
done
