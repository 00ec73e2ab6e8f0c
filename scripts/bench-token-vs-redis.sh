#!/usr/bin/env bash
# The token API against Redis, as the operator would deploy both: `wxhub demo` (release build,
# SQLite, the simulator) serving GET /api/v1/accounts/{appid}/access_token to wrk, and a local
# redis-server serving GET of a value the size of that answer to redis-benchmark, at the same
# concurrency, one after the other on the same machine. Prints requests/s and p99 for both and
# their ratio. Needs wrk, redis-server and redis-benchmark (apt-get install wrk redis-server).
#
#   scripts/bench-token-vs-redis.sh [CONNECTIONS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-32}
secs=${2:-10}
for tool in wrk redis-server redis-benchmark; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (apt-get install wrk redis-server)" >&2; exit 1; }
done

work=$(mktemp -d)
cleanup() {
  [ -n "${hub_pid:-}" ] && kill "$hub_pid" 2>/dev/null || true
  [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet -p wxhub
bin=target/release/wxhub
appid=wx5a1e0d3c0ffee001
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hub_port=$(free_port); sim_port=$(free_port); site_port=$(free_port); redis_port=$(free_port)

WXHUB_LOG=warn "$bin" --data-dir "$work/data" --listen "127.0.0.1:$hub_port" demo \
  --sim-listen "127.0.0.1:$sim_port" --site-listen "127.0.0.1:$site_port" >"$work/demo.log" 2>&1 &
hub_pid=$!
url="http://127.0.0.1:$hub_port/api/v1/accounts/$appid/access_token"
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$hub_port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
key=$("$bin" --data-dir "$work/data" --dev-keyring apikey create "$appid" --label bench | sed -n 's/.*\(wxk_[A-Za-z0-9_-]*\).*/\1/p' | head -n 1)
[ -n "$key" ] || { echo "could not create an API key" >&2; cat "$work/demo.log" >&2; exit 1; }
answer=$(curl -sf -H "Authorization: Bearer $key" "$url")
size=${#answer}

echo "token API: wrk -c $conns for ${secs}s (answer $size bytes)"
wrk -t2 -c"$conns" -d"${secs}s" --latency -H "Authorization: Bearer $key" "$url" >"$work/wrk.txt"
hub_rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
hub_p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
kill "$hub_pid"; wait "$hub_pid" 2>/dev/null || true; hub_pid=

redis-server --port "$redis_port" --save '' --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
requests=$(python3 -c "print(int(float('$hub_rps') * $secs))")
echo "redis: redis-benchmark GET -c $conns, $requests requests of $size bytes"
redis-benchmark -p "$redis_port" -c "$conns" -n "$requests" -d "$size" -t set,get >"$work/redis.txt" 2>&1
redis_rps=$(awk '/====== GET ======/ {g=1} g && /throughput summary/ {print $3; exit}' "$work/redis.txt")
redis_p99=$(awk '/====== GET ======/ {g=1} g && /latency summary/ {getline; getline; print $5; exit}' "$work/redis.txt")

printf '\n%-28s %12s %12s\n' "" "requests/s" "p99"
printf '%-28s %12s %12s\n' "wxhub token API (wrk)" "$hub_rps" "$hub_p99"
printf '%-28s %12s %12s\n' "redis GET (redis-benchmark)" "$redis_rps" "${redis_p99} ms"
python3 -c "print(f'throughput ratio wxhub/redis: {float(\"$hub_rps\")/float(\"$redis_rps\"):.2f}x')"
