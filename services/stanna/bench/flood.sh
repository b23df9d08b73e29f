#!/usr/bin/env bash
# Made-up keys against the store. A release all-in-one on PostgreSQL takes a flood of well-formed
# keys with random ids (valid checksums, 20 000 different ids: key ids are public, so anyone can
# build these) and, in the same run, a flood of malformed keys. For each: requests, the answers'
# statuses, the PostgreSQL transactions it caused (pg_stat_database) and the process's CPU per
# request (/proc). During the random flood a key is created through the registry and timed until
# it verifies through the gateway, with every answer it got on the way.
#
# With BASELINE_BIN=PATH (another build, e.g. the previous commit's) that build is measured the
# same way first, each on a database of its own, so "before" and "after" come from one run.
#
# Needs: wrk, python3, psql, grpcurl, curl; PostgreSQL at DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/test: the run creates its databases beside it, drops them after).
# Usage: services/stanna/bench/flood.sh [seconds-per-flood]   (default 10)
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
cd "$BENCH/../../.."
SECONDS_PER_RUN="${1:-10}"
. "$BENCH/lib.sh"
require_tools wrk python3 psql grpcurl curl
require_free_ports 18081 18151 18152 18153 18190
ADMIN_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
if [ -z "${STANNA_BIN:-}" ]; then cargo build --release --quiet -p stanna --bin stanna; fi
NEW_BIN="${STANNA_BIN:-$PWD/target/release/stanna}"
DATABASES=()
drop_databases() {
  for db in "${DATABASES[@]}"; do psql -q "$ADMIN_URL" -c "drop database if exists $db with (force)" >/dev/null 2>&1 || true; done
}
trap 'bench_cleanup; drop_databases' EXIT
start_nginx

# 20 000 random well-formed keys, and as many malformed ones (a wrong checksum), as wrk scripts
# that count the statuses they get.
python3 - "$WORK" <<'EOF'
import random, sys, zlib
A = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
def checksum(body):
    v, out = zlib.crc32(body.encode()), []
    for _ in range(6):
        out.append(A[v % 62]); v //= 62
    return "".join(reversed(out))
rng = random.SystemRandom()
def script(name, keys):
    with open(f"{sys.argv[1]}/{name}.lua", "w") as f:
        f.write("local keys = {\n" + "".join(f'  "{k}",\n' for k in keys) + "}\n")
        f.write("""local i = 0
s200, s401, s429, s503, other = 0, 0, 0, 0, 0
request = function()
  i = i + 1
  return wrk.format("GET", "/flood", { ["Authorization"] = "Bearer " .. keys[(i % #keys) + 1] })
end
response = function(status)
  if status == 200 then s200 = s200 + 1 elseif status == 401 then s401 = s401 + 1
  elseif status == 429 then s429 = s429 + 1 elseif status == 503 then s503 = s503 + 1
  else other = other + 1 end
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function()
  local t = threads[1]
  io.write(string.format("STATUSES 200=%d 401=%d 429=%d 503=%d other=%d\\n",
    t:get("s200"), t:get("s401"), t:get("s429"), t:get("s503"), t:get("other")))
end
""")
bodies = ["sk-" + "".join(rng.choice(A) for _ in range(44)) for _ in range(20000)]
script("random", [b + checksum(b) for b in bodies])
script("malformed", [b + ("000000" if checksum(b) != "000000" else "000001") for b in bodies])
EOF

transactions() { psql -tA "$ADMIN_URL" -c "select xact_commit + xact_rollback from pg_stat_database where datname = '$1'"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)

# flood LABEL DB PID SCRIPT: one wrk flood, then its figures as one table row.
flood() {
  local label=$1 db=$2 pid=$3 script=$4 tx0 tx1 cpu0 cpu1 out requests
  tx0=$(transactions "$db"); cpu0=$(cpu_ticks "$pid")
  out=$(wrk -t1 -c64 -d"${SECONDS_PER_RUN}s" -s "$WORK/$script.lua" http://127.0.0.1:18190/flood)
  tx1=$(transactions "$db"); cpu1=$(cpu_ticks "$pid")
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  printf '| %s | %s | %s | %.0f | %s | %.0f | %.1f | %s |\n' "$label" "$script" "$requests" \
    "$(echo "$requests / $SECONDS_PER_RUN" | bc -l)" "$((tx1 - tx0))" \
    "$(echo "($tx1 - $tx0) / $SECONDS_PER_RUN" | bc -l)" \
    "$(echo "($cpu1 - $cpu0) * 1000000 / $TICKS / $requests" | bc -l)" \
    "$(echo "$out" | sed -n 's/^STATUSES //p')" >> "$WORK/table"
}

# created_mid_flood: after 3 s of the flood, creates a key and asks with it until it is let
# through; prints how long that took and every status seen on the way.
created_mid_flood() {
  sleep 3
  local key start now statuses="" code
  key=$(grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
    -d '{"workspace_id":"flood","user_id":"u1","name":"created mid-flood"}' \
    127.0.0.1:18151 stanna.keys.v1.KeyRegistry/CreateKey | sed -n 's/.*"secret": "\(sk-[^"]*\)".*/\1/p')
  start=$(date +%s%N)
  for _ in $(seq 1 500); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" http://127.0.0.1:18190/flood)
    statuses+="$code "
    [ "$code" = 200 ] && break
    sleep 0.01
  done
  now=$(date +%s%N)
  echo "$1: a key created mid-flood was let through after $(( (now - start) / 1000000 )) ms; answers: $statuses" >> "$WORK/created"
}

measure() {
  local label=$1 bin=$2 db="stanna_flood_$$_$1" pid
  psql -q "$ADMIN_URL" -c "create database $db" >/dev/null
  DATABASES+=("$db")
  local url="${ADMIN_URL%/*}/$db"
  # The per-address failure limit off: the flood stands for many addresses (an older build
  # ignores the variable).
  STANNA="$bin" start_stanna "$label" 18190 18151 STANNA_DATABASE_URL="$url" \
    STANNA_UNAUTHENTICATED_RATE_LIMIT=off
  pid=${PIDS[-1]}
  wait_until_up 18190
  for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:18190/readyz && break; sleep 0.1; done
  # Warm the connection pools on both kinds of key.
  wrk -t1 -c64 -d2s -s "$WORK/malformed.lua" http://127.0.0.1:18190/flood >/dev/null
  wrk -t1 -c64 -d2s -s "$WORK/random.lua" http://127.0.0.1:18190/flood >/dev/null
  created_mid_flood "$label" & local creator=$!
  flood "$label" "$db" "$pid" random
  wait "$creator"
  flood "$label" "$db" "$pid" malformed
  kill "$pid"; wait "$pid" 2>/dev/null || true
  PIDS=("${PIDS[@]/$pid}")
}

[ -z "${BASELINE_BIN:-}" ] || measure before "$BASELINE_BIN"
measure after "$NEW_BIN"

echo "Flood of made-up keys, ${SECONDS_PER_RUN}s each, wrk 64 connections, PostgreSQL store:"
echo "| build | keys | requests | req/s | PostgreSQL transactions | per second | CPU µs/request | statuses |"
echo "|---|---|---|---|---|---|---|---|"
cat "$WORK/table"
cat "$WORK/created"
