#!/usr/bin/env bash
# What tracing costs the gateway, measured with wrk in one run (rounds interleaved, medians and
# per-round ratios reported): three release `stanna serve` processes over one SQLite file and the
# same fast upstream (nginx answering "ok"):
#   off   — no OTEL_EXPORTER_OTLP_ENDPOINT (the default)
#   all   — exporting every trace (OTEL_TRACES_SAMPLER=always_on) to an OTLP sink
#   1pct  — exporting 1 % (OTEL_TRACES_SAMPLER=traceidratio, OTEL_TRACES_SAMPLER_ARG=0.01)
# The sink (crates/telemetry/examples/otlp_sink.rs) counts and drops spans.
#
# Needs: wrk, nginx, grpcurl. Usage: services/gateway/bench/telemetry.sh [seconds] [rounds]
set -euo pipefail
cd "$(dirname "$0")/../../.."
SECONDS_PER_RUN="${1:-6}"
ROUNDS="${2:-3}"
TOKEN=bench-admin-token-0123456789
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
for tool in wrk nginx grpcurl; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
for port in 18081 18100 18101 18102 18151 18161 18171 14317; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use (a previous run still going?)" >&2; exit 1
  fi
done
cargo build --release --quiet -p stanna --bin stanna
cargo build --release --quiet -p stanna-telemetry --example otlp_sink
STANNA="$PWD/target/release/stanna"

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:18081; location / { return 200 "ok"; } }
}
CONF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' & PIDS+=($!)
"$PWD/target/release/examples/otlp_sink" 127.0.0.1:14317 > "$WORK/sink.log" 2>&1 & PIDS+=($!)

start_stanna() { # name, gateway port, base port, extra env...
  local name=$1 port=$2 base=$3; shift 3
  (cd "$WORK" && exec env -i PATH="$PATH" STANNA_ADMIN_TOKEN=$TOKEN RUST_LOG=warn \
    STANNA_DATABASE_URL="sqlite://$WORK/keys.db?mode=rwc" \
    STANNA_GATEWAY_ADDR=127.0.0.1:$port STANNA_REGISTRY_ADDR=127.0.0.1:$base \
    STANNA_AUTH_CHECK_ADDR=127.0.0.1:$((base+1)) STANNA_QUOTA_ADDR=127.0.0.1:$((base+2)) \
    STANNA_METRICS_ADDR=127.0.0.1:0 STANNA_RATE_LIMIT_BURST=10000/60s STANNA_RATE_LIMIT_HOURLY=10000/3600s \
    STANNA_UPSTREAM_URL=http://127.0.0.1:18081 "$@" "$STANNA" serve >"$WORK/$name.log" 2>&1) &
  PIDS+=($!)
  sleep 1
}
start_stanna off 18100 18151
start_stanna all 18101 18161 OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14317 OTEL_TRACES_SAMPLER=always_on
start_stanna 1pct 18102 18171 OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14317 \
  OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.01
for port in 18081 18100 18101 18102; do
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
done
for pid in "${PIDS[@]}"; do
  kill -0 "$pid" 2>/dev/null || { echo "a server did not start:" >&2; cat "$WORK"/*.log >&2; exit 1; }
done

# 300 keys (10 000 per window each), in the one shared store.
KEYS=()
for i in $(seq 1 300); do
  KEYS+=("$(grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
    -d "{\"workspace_id\":\"bench\",\"user_id\":\"u$i\",\"name\":\"bench $i\"}" \
    127.0.0.1:18151 stanna.keys.v1.KeyRegistry/CreateKey | sed -n 's/.*"secret": "\(sk-[^"]*\)".*/\1/p')")
done
{
  echo "local keys = {"; for k in "${KEYS[@]}"; do echo "  \"$k\","; done; echo "}"
  cat <<'LUA'
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/bench", { ["Authorization"] = "Bearer " .. keys[(i % #keys) + 1] })
end
LUA
} > "$WORK/keys.lua"
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
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    RPS[$name]+="$rps "
    echo "round $round $name: $rps req/s, p50/p99 $(echo "$out" | awk '$1=="50%" {print $2}')/$(echo "$out" | awk '$1=="99%" {print $2}')"
  done
  last() { echo "${RPS[$1]}" | awk '{print $NF}'; }
  R_ALL+="$(awk -v a="$(last all)" -v b="$(last off)" 'BEGIN {printf "%.3f", a/b}') "
  R_1PCT+="$(awk -v a="$(last 1pct)" -v b="$(last off)" 'BEGIN {printf "%.3f", a/b}') "
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "median of $ROUNDS rounds, wrk -t1 -c64 -d${SECONDS_PER_RUN}s:"
for name in off all 1pct; do printf '  %-5s %10s req/s\n' "$name" "$(echo "${RPS[$name]}" | median)"; done
echo "  export 100 % / off per round: $R_ALL -> median $(echo "$R_ALL" | median)"
echo "  export 1 %   / off per round: $R_1PCT -> median $(echo "$R_1PCT" | median)"
sleep 6
echo "  the sink received: $(tail -1 "$WORK/sink.log")"
