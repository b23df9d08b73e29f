#!/usr/bin/env bash
# What tracing costs the gateway, measured with wrk in one run (rounds interleaved, medians and
# per-round ratios reported): three release `stanna serve` processes over one SQLite file and the
# same fast upstream (nginx answering "ok"):
#   off   — no OTEL_EXPORTER_OTLP_ENDPOINT (the default)
#   all   — exporting every trace (OTEL_TRACES_SAMPLER=always_on) to an OTLP sink
#   1pct  — exporting 1 % (OTEL_TRACES_SAMPLER=traceidratio, OTEL_TRACES_SAMPLER_ARG=0.01)
# The sink (crates/telemetry/examples/otlp_sink.rs) counts and drops spans.
#
# Needs: wrk, nginx, grpcurl. Usage: services/stanna/bench/telemetry.sh [seconds] [rounds]
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
cd "$BENCH/../../.."
SECONDS_PER_RUN="${1:-6}"
ROUNDS="${2:-3}"
. "$BENCH/lib.sh"
require_tools wrk nginx grpcurl
require_free_ports 18081 18100 18101 18102 18151 18161 18171 14317
cargo build --release --quiet -p stanna --bin stanna
cargo build --release --quiet -p stanna-telemetry --example otlp_sink
STANNA="$PWD/target/release/stanna"

start_nginx
"$PWD/target/release/examples/otlp_sink" 127.0.0.1:14317 > "$WORK/sink.log" 2>&1 & PIDS+=($!)

# One store for all three; the same limits.
export DB_NAME=keys
LIMITS=(STANNA_RATE_LIMIT_BURST=10000/60s STANNA_RATE_LIMIT_HOURLY=10000/3600s)
start_stanna off 18100 18151 "${LIMITS[@]}"
sleep 1
start_stanna all 18101 18161 "${LIMITS[@]}" OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14317 OTEL_TRACES_SAMPLER=always_on
start_stanna 1pct 18102 18171 "${LIMITS[@]}" OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14317 \
  OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.01
wait_until_up 18081 18100 18101 18102
# 300 keys (10 000 per window each), in the one shared store.
write_keys_lua 18151
for port in 18100 18101 18102; do
  wrk -t1 -c16 -d8s -s "$WORK/keys.lua" "http://127.0.0.1:$port/bench" >/dev/null
done

declare -A RPS
R_ALL="" R_1PCT=""
for round in $(seq 1 "$ROUNDS"); do
  for target in off:18100 all:18101 1pct:18102; do
    name=${target%%:*}; port=${target##*:}
    out=$(wrk -t1 -c64 -d"${SECONDS_PER_RUN}s" --latency -s "$WORK/keys.lua" "http://127.0.0.1:$port/bench")
    if echo "$out" | grep -q "Non-2xx"; then echo "$name: non-2xx answers:"; echo "$out"; exit 1; fi
    # The exporting processes keep encoding and sending their last batches for a moment after
    # wrk stops: let that finish so it does not land in the next target's run.
    sleep 3
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    RPS[$name]+="$rps "
    echo "round $round $name: $rps req/s, p50/p99 $(echo "$out" | awk '$1=="50%" {print $2}')/$(echo "$out" | awk '$1=="99%" {print $2}')"
  done
  last() { echo "${RPS[$1]}" | awk '{print $NF}'; }
  R_ALL+="$(awk -v a="$(last all)" -v b="$(last off)" 'BEGIN {printf "%.3f", a/b}') "
  R_1PCT+="$(awk -v a="$(last 1pct)" -v b="$(last off)" 'BEGIN {printf "%.3f", a/b}') "
done
echo
echo "median of $ROUNDS rounds, wrk -t1 -c64 -d${SECONDS_PER_RUN}s:"
for name in off all 1pct; do printf '  %-5s %10s req/s\n' "$name" "$(echo "${RPS[$name]}" | median)"; done
echo "  export 100 % / off per round: $R_ALL -> median $(echo "$R_ALL" | median)"
echo "  export 1 %   / off per round: $R_1PCT -> median $(echo "$R_1PCT" | median)"
sleep 6
echo "  the sink received: $(tail -1 "$WORK/sink.log")"
