#!/usr/bin/env bash
# The token API against Redis, as the operator would deploy both: `wxhub demo` (release build,
# SQLite, the simulator) serving GET /api/v1/accounts/{appid}/access_token, and a local
# redis-server serving GET of the same bytes. Both are driven by one client,
# crates/scheduler/examples/loadgen.rs (the same code for both, one thread, the same number of
# connections), in rounds that take the two sides in turn, the order swapped every round; it
# prints each round and the median ratio with its spread. Needs redis-server
# (apt-get install redis-server).
#
#   scripts/bench-token-vs-redis.sh [CONNECTIONS] [SECONDS_PER_SIDE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-32}
secs=${2:-5}
rounds=${3:-7}
command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }

work=$(mktemp -d)
cleanup() {
  [ -n "${hub_pid:-}" ] && kill "$hub_pid" 2>/dev/null || true
  [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet -p wxhub
cargo build --release --quiet -p scheduler --example loadgen
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
# The hub forgets what it verified of an account's keys when it learns of a change to them from
# the database's change feed (a poll on SQLite): let it learn of this key's creation before the
# load starts, or 32 connections at once find the key unverified and meet the limit on lookups.
sleep 3
redis-server --port "$redis_port" --save '' --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break
  sleep 0.1
done
target/release/examples/loadgen --http "$url" --bearer "$key" --redis "127.0.0.1:$redis_port" \
  --connections "$conns" --seconds "$secs" --rounds "$rounds" --hub-pid "$hub_pid" --redis-pid "$redis_pid"
