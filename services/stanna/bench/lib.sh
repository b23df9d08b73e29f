# Shared by the bench scripts (sourced, not run): temp dir and cleanup, the nginx upstream,
# starting release `stanna serve` processes, waiting for them, the 300 bench keys, medians.
# Sourcing it sets $TOKEN, a temp dir $WORK removed on exit, and the PIDS array of what the run
# started (stopped on exit); the script sets $STANNA (the binary).
TOKEN=bench-admin-token-0123456789
WORK="$(mktemp -d)"
PIDS=()
trap bench_cleanup EXIT

# Stops everything this run started and removes its files.
bench_cleanup() { for p in "${PIDS[@]}"; do [ -z "$p" ] || kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }

# Exits unless every tool named is installed.
require_tools() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
  done
}

# Exits when any of the ports is already taken (a previous run still going?).
require_free_ports() {
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port is already in use (a previous run still going?)" >&2; exit 1
    fi
  done
}

# nginx answering "ok" on 127.0.0.1:18081; with an argument PORT, also proxy_pass to it there.
start_nginx() {
  local proxy_port="${1:-}"
  mkdir -p "$WORK/nginx"
  {
    echo "worker_processes 1; error_log $WORK/nginx/error.log warn; pid $WORK/nginx/nginx.pid;"
    echo "events { worker_connections 4096; }"
    echo "http { access_log off; keepalive_requests 1000000;"
    echo "  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;"
    echo "  fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;"
    echo "  upstream origin { server 127.0.0.1:18081; keepalive 128; }"
    echo "  server { listen 127.0.0.1:18081; location / { return 200 \"ok\"; } }"
    if [ -n "$proxy_port" ]; then
      echo "  server { listen 127.0.0.1:$proxy_port; location / {"
      echo "    proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
    fi
    echo "}"
  } > "$WORK/nginx/nginx.conf"
  nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' & PIDS+=($!)
}

# start_stanna NAME GATEWAY_PORT BASE_PORT [VAR=value ...]: a release `stanna serve` (registry on
# BASE, auth-check BASE+1, quota BASE+2) forwarding to nginx, its database in $WORK/$DB_NAME.db
# (DB_NAME defaults to NAME), logs in $WORK/NAME.log.
start_stanna() {
  local name=$1 port=$2 base=$3; shift 3
  (cd "$WORK" && exec env -i PATH="$PATH" STANNA_ADMIN_TOKEN="$TOKEN" RUST_LOG=warn \
    STANNA_DATABASE_URL="sqlite://$WORK/${DB_NAME:-$name}.db?mode=rwc" \
    STANNA_GATEWAY_ADDR="127.0.0.1:$port" STANNA_REGISTRY_ADDR="127.0.0.1:$base" \
    STANNA_AUTH_CHECK_ADDR="127.0.0.1:$((base+1))" STANNA_QUOTA_ADDR="127.0.0.1:$((base+2))" \
    STANNA_METRICS_ADDR=127.0.0.1:0 STANNA_UPSTREAM_URL=http://127.0.0.1:18081 \
    "$@" "$STANNA" serve >"$WORK/$name.log" 2>&1) &
  PIDS+=($!)
}

# Waits until each port answers HTTP, then exits unless every started process is alive.
wait_until_up() {
  for port in "$@"; do
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
  done
  for pid in "${PIDS[@]}"; do
    [ -n "$pid" ] || continue
    kill -0 "$pid" 2>/dev/null || { echo "a server did not start; logs:" >&2; cat "$WORK"/*.log >&2; exit 1; }
  done
}

# write_keys_lua REGISTRY_PORT: 300 keys (10 000 per window each: 50 000 req/s for a whole minute,
# 3 M in the hour) and a wrk script rotating over them, in $WORK/keys.lua.
write_keys_lua() {
  local keys=()
  for i in $(seq 1 300); do
    keys+=("$(grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
      -d "{\"workspace_id\":\"bench\",\"user_id\":\"u$i\",\"name\":\"bench $i\"}" \
      "127.0.0.1:$1" stanna.keys.v1.KeyRegistry/CreateKey | sed -n 's/.*"secret": "\(sk-[^"]*\)".*/\1/p')")
  done
  {
    echo "local keys = {"; for k in "${keys[@]}"; do echo "  \"$k\","; done; echo "}"
    echo 'local i = 0'
    echo 'request = function()'
    echo '  i = i + 1'
    echo '  return wrk.format("GET", "/bench", { ["Authorization"] = "Bearer " .. keys[(i % #keys) + 1] })'
    echo 'end'
  } > "$WORK/keys.lua"
  FIRST_KEY="${keys[0]}"
}

# The median of whitespace-separated numbers on stdin.
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
