#!/usr/bin/env bash
# What tracing costs per gateway request, counted in CPU instructions under valgrind's callgrind:
# deterministic, so the answer does not drift with the load of a shared machine the way wrk's
# requests/s do (telemetry.sh measures throughput; this one settles small differences).
#
# For each configuration, a release `stanna serve` (the whole system in one process) runs under
# callgrind, forwarding to nginx; one key is warmed (its argon2 and store lookup happen before
# counting), the counters are zeroed, REQUESTS requests go through the gateway one after another
# on one keep-alive connection, the process gets two seconds to export what it sampled, and the
# counters are dumped. Background timers are set to their longest (the change poll 30 s, the
# last-used flush an hour) so almost only request work is counted (a poll or two per run: well
# under 0.1 % of the total).
#   off   — no OTEL_EXPORTER_OTLP_ENDPOINT (the default)
#   1pct  — exporting 1 % (OTEL_TRACES_SAMPLER=traceidratio, OTEL_TRACES_SAMPLER_ARG=0.01)
#   all   — exporting every trace (always_on)
#   nolog — as off, with the access log off (STANNA_ACCESS_LOG=off): what the access log costs
#           (user-space instructions only; the write(2) itself is kernel time, not counted)
#   bare  — the gateway as a bare proxy (STANNA_BENCH_NO_AUTH=true: no Verify, no quota; tracing off)
#           — not run by default: CONFIGS="off bare" gives what authentication and quota cost
# The instructions of the OTLP sink (another process) are not counted; the encoding and sending
# of the spans are.
#
# Needs: valgrind, nginx, grpcurl, python3. Usage: services/stanna/bench/telemetry_instructions.sh [requests]
# With KEEP_DUMPS=DIR the dumps are kept as DIR/callgrind.CONFIG (for callgrind_annotate);
# CONFIGS="off" runs only those; STANNA_BIN=PATH counts another build (an earlier commit's).
set -euo pipefail
if [ -n "${KEEP_DUMPS:-}" ]; then mkdir -p "$KEEP_DUMPS"; KEEP_DUMPS="$(cd "$KEEP_DUMPS" && pwd)"; fi
BENCH="$(cd "$(dirname "$0")" && pwd)"
cd "$BENCH/../../.."
REQUESTS="${1:-3000}" # at most 9950: the key's windows are 10 000 (the largest limit allowed)
. "$BENCH/lib.sh"
require_tools valgrind callgrind_control nginx grpcurl python3
require_free_ports 18081 18200 18251 18252 18253 14318
[ -n "${STANNA_BIN:-}" ] || cargo build --release --quiet -p stanna --bin stanna --features bench-no-auth
cargo build --release --quiet -p stanna-telemetry --example otlp_sink
BIN="${STANNA_BIN:-$PWD/target/release/stanna}"

# callgrind in front of the binary; start_stanna runs "$STANNA serve".
cat > "$WORK/stanna-under-callgrind" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --compress-strings=no --callgrind-out-file=$WORK/callgrind.out.%p $BIN "\$@"
EOF
chmod +x "$WORK/stanna-under-callgrind"
STANNA="$WORK/stanna-under-callgrind"

start_nginx
"$PWD/target/release/examples/otlp_sink" 127.0.0.1:14318 > "$WORK/sink.log" 2>&1 & PIDS+=($!)

# The client: warm up, zero the counters, REQUESTS requests, let the exporter run, dump.
cat > "$WORK/client.py" <<'EOF'
import http.client, subprocess, sys, time
port, key, pid, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
conn = http.client.HTTPConnection("127.0.0.1", port)
def run(count):
    for _ in range(count):
        conn.request("GET", "/bench", headers={"Authorization": "Bearer " + key})
        r = conn.getresponse(); r.read()
        if r.status != 200:
            sys.exit(f"status {r.status}")
run(50)
subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
run(n)
time.sleep(2)
subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
EOF

declare -A PER_REQUEST
for config in ${CONFIGS:-off 1pct all}; do
  case $config in
    off) extra=() ;;
    nolog) extra=(STANNA_ACCESS_LOG=off) ;;
    bare) extra=(STANNA_BENCH_NO_AUTH=true) ;;
    1pct) extra=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14318 OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.01) ;;
    all) extra=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14318 OTEL_TRACES_SAMPLER=always_on) ;;
  esac
  start_stanna "$config" 18200 18251 STANNA_RATE_LIMIT_BURST=10000/60s STANNA_RATE_LIMIT_HOURLY=10000/3600s \
    STANNA_CHANGE_POLL_INTERVAL=30s STANNA_LAST_USED_FLUSH=1h OTEL_BSP_SCHEDULE_DELAY=200 ${extra[@]+"${extra[@]}"}
  pid=${PIDS[-1]} # env, the wrapper and valgrind each exec: one process
  for _ in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null && ! curl -s -o /dev/null http://127.0.0.1:18200/healthz || break; sleep 0.2
  done
  kill -0 "$pid" 2>/dev/null || { echo "stanna did not start under callgrind:" >&2; cat "$WORK/$config.log" >&2; exit 1; }
  key=$(grpcurl -plaintext -max-time 60 -H "authorization: Bearer $TOKEN" \
    -d '{"workspace_id":"bench","user_id":"u","name":"bench"}' \
    127.0.0.1:18251 stanna.keys.v1.KeyRegistry/CreateKey | sed -n 's/.*"secret": "\(sk-[^"]*\)".*/\1/p')
  python3 "$WORK/client.py" 18200 "$key" "$pid" "$REQUESTS"
  dump=$(ls -t "$WORK"/callgrind.out."$pid".* | head -1)
  [ -n "${KEEP_DUMPS:-}" ] && cp "$dump" "$KEEP_DUMPS/callgrind.$config"
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
  PER_REQUEST[$config]=$((total / REQUESTS))
  echo "$config: $total instructions for $REQUESTS requests = ${PER_REQUEST[$config]} per request"
  kill "$pid" 2>/dev/null || true; for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  rm -f "$WORK"/*.db*
done
echo
for config in ${CONFIGS:-off 1pct all}; do
  if [ "$config" = off ] || [ -z "${PER_REQUEST[off]:-}" ]; then continue; fi
  awk -v c="$config" -v a="${PER_REQUEST[$config]}" -v b="${PER_REQUEST[off]}" \
    'BEGIN {printf "  %-4s ÷ off: %.3f× the instructions per request (%+.1f %%)\n", c, a/b, (a/b-1)*100}'
done
sleep 1
echo "  the sink received: $(tail -1 "$WORK/sink.log")"
