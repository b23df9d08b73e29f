#!/usr/bin/env bash
# Split mode's cost per request counted in CPU instructions under valgrind's callgrind
# (deterministic, unlike split.sh's req/s and CPU seconds on a shared machine): the gateway,
# auth-check and quota processes each under callgrind, on a Redis of the run's own, forwarding to
# nginx; beside them the all-in-one (`stanna serve`, quota in the same Redis) under callgrind, and
# the floor of a hop: empty unary RPCs (grpc.health Check) to the quota process, its server side
# counted there and the tonic client (examples/rpc_floor, one call at a time) counted whole.
# One key is warmed before counting (argon2 and the store lookup are not counted); then REQUESTS
# requests go one after another on one keep-alive connection. Background timers are set to their
# longest, as in telemetry_instructions.sh. The registry (not on the request path) is not counted,
# nor are Redis's instructions (INFO commandstats gives those in split.sh).
#
# Needs: valgrind, nginx, grpcurl, python3, redis-server.
# Usage: services/stanna/bench/split_instructions.sh [requests]   (default 2000; at most 9950)
#   STANNA_BIN=PATH counts another build (an earlier commit's).
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
cd "$BENCH/../../.."
REQUESTS="${1:-2000}"
. "$BENCH/lib.sh"
require_tools valgrind callgrind_control nginx grpcurl python3 redis-server
require_free_ports 18081 18300 18301 18302 18303 18310 18351 18352 18353 18379
[ -n "${STANNA_BIN:-}" ] || cargo build --release --quiet -p stanna --bin stanna
cargo build --release --quiet -p stanna --example rpc_floor
BIN="${STANNA_BIN:-$PWD/target/release/stanna}"
GRIND=(valgrind --tool=callgrind --compress-strings=no)
TIMERS=(STANNA_CHANGE_POLL_INTERVAL=30s STANNA_LAST_USED_FLUSH=1h)
LIMITS=(STANNA_RATE_LIMIT_BURST=10000/60s STANNA_RATE_LIMIT_HOURLY=10000/3600s)

redis-server --port 18379 --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
start_nginx

# grind_one NAME VAR=value ... : `stanna serve NAME` under callgrind (NAME "all": the all-in-one).
grind_one() {
  local name=$1; shift
  local args=(serve); [ "$name" = all ] || args+=("$name")
  (cd "$WORK" && exec env -i PATH="$PATH" RUST_LOG=warn STANNA_METRICS_ADDR=127.0.0.1:0 \
    STANNA_ADMIN_TOKEN="$TOKEN" STANNA_GATEWAY_TOKEN=bench-gateway-token-0123456789 \
    STANNA_SESSION_SECRET=bench-session-secret-0123456789abcdef0123456789 \
    STANNA_UPSTREAM_URL=http://127.0.0.1:18081 "${TIMERS[@]}" "$@" \
    "${GRIND[@]}" --callgrind-out-file="$WORK/callgrind.$name.%p" "$BIN" "${args[@]}" >"$WORK/$name.log" 2>&1) &
  PIDS+=($!)
}
SPLIT_DB="STANNA_DATABASE_URL=sqlite://$WORK/split.db?mode=rwc"
(cd "$WORK" && exec env -i PATH="$PATH" RUST_LOG=warn STANNA_METRICS_ADDR=127.0.0.1:0 "$SPLIT_DB" \
  STANNA_ADMIN_TOKEN="$TOKEN" STANNA_GATEWAY_TOKEN=bench-gateway-token-0123456789 \
  STANNA_SESSION_SECRET=bench-session-secret-0123456789abcdef0123456789 \
  STANNA_REGISTRY_ADDR=127.0.0.1:18351 "$BIN" serve registry >"$WORK/registry.log" 2>&1) &
PIDS+=($!)
for _ in $(seq 1 100); do grpcurl -plaintext 127.0.0.1:18351 list >/dev/null 2>&1 && break; sleep 0.1; done
grind_one quota STANNA_QUOTA_ADDR=127.0.0.1:18353 STANNA_REDIS_URL=redis://127.0.0.1:18379
QUOTA_PID=${PIDS[-1]}
grind_one auth-check "$SPLIT_DB" STANNA_AUTH_CHECK_ADDR=127.0.0.1:18352 STANNA_QUOTA_URL=http://127.0.0.1:18353 "${LIMITS[@]}"
AUTH_PID=${PIDS[-1]}
grind_one gateway STANNA_GATEWAY_ADDR=127.0.0.1:18300 STANNA_AUTH_CHECK_URL=http://127.0.0.1:18352 \
  STANNA_REGISTRY_URL=http://127.0.0.1:18351
GATEWAY_PID=${PIDS[-1]}
grind_one all "STANNA_DATABASE_URL=sqlite://$WORK/all.db?mode=rwc" STANNA_GATEWAY_ADDR=127.0.0.1:18310 \
  STANNA_REGISTRY_ADDR=127.0.0.1:18301 STANNA_AUTH_CHECK_ADDR=127.0.0.1:18302 STANNA_QUOTA_ADDR=127.0.0.1:18303 \
  STANNA_REDIS_URL=redis://127.0.0.1:18379 "${LIMITS[@]}"
ALL_PID=${PIDS[-1]}
for port in 18300 18310; do
  for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.2; done
done
for pid in "${PIDS[@]}"; do
  kill -0 "$pid" 2>/dev/null || { echo "a server did not start; logs:" >&2; cat "$WORK"/*.log >&2; exit 1; }
done

new_key() {
  grpcurl -plaintext -max-time 60 -H "authorization: Bearer $TOKEN" \
    -d '{"workspace_id":"bench","user_id":"u","name":"bench"}' \
    "127.0.0.1:$1" stanna.keys.v1.KeyRegistry/CreateKey | sed -n 's/.*"secret": "\(sk-[^"]*\)".*/\1/p'
}
cat > "$WORK/client.py" <<'PY'
import http.client, subprocess, sys, time
port, key, n, pids = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
def run(count):
    for _ in range(count):
        conn.request("GET", "/bench", headers={"Authorization": "Bearer " + key})
        r = conn.getresponse(); r.read()
        if r.status != 200:
            sys.exit(f"status {r.status}")
run(50)
for pid in pids:
    subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
run(n)
for pid in pids:
    subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
PY
# instructions PID: the total of its newest dump.
instructions() { awk '/^(summary|totals):/ {print $2; exit}' "$(ls -t "$WORK"/callgrind.*."$1".* | head -1)"; }

python3 "$WORK/client.py" 18300 "$(new_key 18351)" "$REQUESTS" "$GATEWAY_PID" "$AUTH_PID" "$QUOTA_PID"
G=$(( $(instructions "$GATEWAY_PID") / REQUESTS )); A=$(( $(instructions "$AUTH_PID") / REQUESTS ))
Q=$(( $(instructions "$QUOTA_PID") / REQUESTS ))
python3 "$WORK/client.py" 18310 "$(new_key 18301)" "$REQUESTS" "$ALL_PID"
ALL=$(( $(instructions "$ALL_PID") / REQUESTS ))

# The floor: the quota process's server side of empty RPCs, and the client whole.
callgrind_control --zero "$QUOTA_PID" >/dev/null
out=$("${GRIND[@]}" --callgrind-out-file="$WORK/callgrind.floor" \
  "$PWD/target/release/examples/rpc_floor" 127.0.0.1:18353 1 10 2>/dev/null)
callgrind_control --dump "$QUOTA_PID" >/dev/null
calls=$(echo "$out" | sed -n 's/.*calls=\([0-9]*\).*/\1/p')
FS=$(( $(instructions "$QUOTA_PID") / calls ))
FC=$(( $(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/callgrind.floor") / calls ))

echo "instructions per request, $REQUESTS requests one at a time (Redis's own not counted):"
echo "  split:  gateway $G + auth-check $A + quota $Q = $((G + A + Q))"
echo "  all-in-one (quota in Redis): $ALL"
echo "  empty-RPC floor ($calls calls): server $FS + tonic client $FC = $((FS + FC)) (the client's start-up included)"
awk -v s=$((G + A + Q)) -v a="$ALL" -v f=$((FS + FC)) 'BEGIN {
  hop = (s - a) / 2
  printf "  split ÷ all-in-one: %.2f×; each extra hop: %d instructions = %.2f× the floor\n", s/a, hop, hop/f
}'
