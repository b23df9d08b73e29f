#!/usr/bin/env bash
# Slow clients against a release all-in-one: N connections (default 3 000) that send a request
# line and then one header every 5 s (reconnecting when closed), one that stops mid-headers and
# one that sends nothing. Reports how many slow connections are still open 15 s in (past the
# 10 s header timeout), when the two others were closed, and the latency of /healthz and of an
# authenticated request while it lasts (p50 / p99 over one request every 20 ms each).
#
# With BASELINE_BIN=PATH that build is measured the same way first ("before" and "after" in one
# run). Needs: python3, grpcurl, curl. Usage: services/stanna/bench/slow_clients.sh [connections]
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
cd "$BENCH/../../.."
CONNECTIONS="${1:-3000}"
. "$BENCH/lib.sh"
require_tools python3 grpcurl curl
require_free_ports 18081 18251 18252 18253 18290
ulimit -n 20000 2>/dev/null || true
if [ -z "${STANNA_BIN:-}" ]; then cargo build --release --quiet -p stanna --bin stanna; fi
NEW_BIN="${STANNA_BIN:-$PWD/target/release/stanna}"
start_nginx

measure() {
  local label=$1 bin=$2 pid key
  # Limits raised so the prober's authenticated requests are answered, not 429.
  STANNA="$bin" start_stanna "$label" 18290 18251 \
    STANNA_RATE_LIMIT_BURST=10000/60s STANNA_RATE_LIMIT_HOURLY=10000/3600s
  pid=${PIDS[-1]}
  wait_until_up 18290
  key=$(grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
    -d '{"workspace_id":"slow","user_id":"u1","name":"slow"}' \
    127.0.0.1:18251 stanna.keys.v1.KeyRegistry/CreateKey | sed -n 's/.*"secret": "\(sk-[^"]*\)".*/\1/p')
  curl -s -o /dev/null -H "Authorization: Bearer $key" http://127.0.0.1:18290/v1/me
  python3 - "$label" "$CONNECTIONS" "$key" <<'EOF'
import socket, sys, threading, time, urllib.request
label, n, key = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ADDR = ("127.0.0.1", 18290)
def connect():
    s = socket.create_connection(ADDR)
    s.sendall(b"GET /v1/me HTTP/1.1\r\nHost: x\r\n")
    return s
slow = [connect() for _ in range(n)]
reconnects = 0
mid = socket.create_connection(ADDR); mid.sendall(b"GET /v1/me HTTP/1.1\r\nHost: x\r\nX-Half")
silent = socket.create_connection(ADDR)
closed_at = {}
started = time.time()
stop = started + 16
def watch(name, s):
    s.settimeout(20)
    try:
        s.recv(1)
    except Exception:
        pass
    closed_at[name] = time.time() - started
for name, s in (("stopped mid-headers", mid), ("sent nothing", silent)):
    threading.Thread(target=watch, args=(name, s), daemon=True).start()
lat = {"healthz": [], "authenticated": []}
failed = {}
def probe():
    while time.time() < stop:
        for name, headers in (("healthz", {}), ("authenticated", {"Authorization": "Bearer " + key})):
            path = "/healthz" if name == "healthz" else "/v1/me"
            t = time.time()
            try:
                urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:18290" + path, headers=headers), timeout=5).read()
                lat[name].append(time.time() - t)
            except Exception:
                failed[name] = failed.get(name, 0) + 1
        time.sleep(0.02)
prober = threading.Thread(target=probe); prober.start()
# Dribble one header every 5 s; a connection the server closed is replaced. Before the last
# round, count the connections older than the header timeout + 1 s that are still open.
opened = [started] * n
old_open = None
for round_at in (5, 10, 15):
    time.sleep(max(0.0, started + round_at - time.time()))
    if round_at == 15:
        old_open = 0
        for i, s in enumerate(slow):
            if time.time() - opened[i] < 11:
                continue
            s.setblocking(False)
            try:
                old_open += 1 if s.recv(1) else 0
            except BlockingIOError:
                old_open += 1
            except Exception:
                pass
            s.setblocking(True)
        break
    for i, s in enumerate(slow):
        try:
            s.sendall(b"X-Slow: 1\r\n")
        except Exception:
            reconnects += 1
            try:
                s.close()
            except Exception:
                pass
            slow[i] = connect()
            opened[i] = time.time()
prober.join()
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000 if xs else float("nan")
print(f"| {label} | {n} | {old_open} open for over 11 s; {reconnects} closed and reopened | "
      + ", ".join(f"{k} {closed_at[k]:.1f} s" if k in closed_at else f"{k}: still open at 16 s" for k in ("stopped mid-headers", "sent nothing"))
      + " | " + "; ".join(f"{k} p50 {pct(v, .5):.1f} ms p99 {pct(v, .99):.1f} ms ({len(v)} answered, {failed.get(k, 0)} failed)" for k, v in lat.items()) + " |")
EOF
  kill "$pid"; wait "$pid" 2>/dev/null || true
  PIDS=("${PIDS[@]/$pid}")
}

echo "| build | slow connections | at 15 s | the two others closed after | latency meanwhile |"
echo "|---|---|---|---|---|"
[ -z "${BASELINE_BIN:-}" ] || measure before "$BASELINE_BIN"
measure after "$NEW_BIN"
