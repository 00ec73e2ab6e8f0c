#!/usr/bin/env bash
# A throwaway PostgreSQL 15 for the store's test suite.
#
#   scripts/test-postgres.sh start   # init + start on a free 127.0.0.1 port; prints ONLY the URL
#   scripts/test-postgres.sh url     # prints the URL of the running server
#   scripts/test-postgres.sh stop    # stops it and deletes its data directory
#
#   export WXHUB_TEST_POSTGRES_URL=$(scripts/test-postgres.sh start)
#   cargo test -p store
#   scripts/test-postgres.sh stop
#
# The server listens on 127.0.0.1 only, with trust authentication for the superuser `wxhub`
# (it may CREATE DATABASE; the tests create one database per test). Durability is off
# (fsync=off): it is for tests only. PostgreSQL refuses to run as root, so when run as root
# the server runs as the system user `wxhub-pg` (created if missing). Logs go to stderr and
# to postgres.log in the data directory; stdout carries nothing but the URL.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
STATE_FILE="${TMPDIR:-/tmp}/wxhub-test-postgres.state"
DB_USER=wxhub
RUN_USER_WHEN_ROOT=wxhub-pg

log() { printf 'test-postgres: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Runs a command as the user that owns the server.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u "$RUN_USER_WHEN_ROOT" -- "$@"
  else
    "$@"
  fi
}

state_get() { sed -n "s/^$1=//p" "$STATE_FILE" 2>/dev/null | head -n 1; }

is_running() {
  local data
  data=$(state_get data)
  [ -n "$data" ] && [ -d "$data" ] && (cd / && as_pg "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1)
}

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
  else
    local port
    for _ in $(seq 1 50); do
      port=$(( 20000 + RANDOM % 40000 ))
      # Nothing answers on the port: bash's /dev/tcp connect fails.
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "$port"
        return 0
      fi
    done
    return 1
  fi
}

ensure_run_user() {
  [ "$(id -u)" -eq 0 ] || return 0
  if ! id -u "$RUN_USER_WHEN_ROOT" >/dev/null 2>&1; then
    log "creating system user $RUN_USER_WHEN_ROOT (PostgreSQL does not run as root)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$RUN_USER_WHEN_ROOT" >&2
  fi
}

url_for() { echo "postgres://$DB_USER@127.0.0.1:$1/postgres"; }

cmd_start() {
  if is_running; then
    log "already running (state in $STATE_FILE)"
    url_for "$(state_get port)"
    return 0
  fi
  [ -f "$STATE_FILE" ] && { log "removing stale state"; cmd_stop >/dev/null 2>&1 || true; }
  for tool in initdb pg_ctl pg_isready; do
    [ -x "$PG_BIN/$tool" ] || die "$PG_BIN/$tool not found (install postgresql-15 or set PG_BIN)"
  done
  ensure_run_user

  local base="${TMPDIR:-/tmp}"
  # The server's user must be able to reach its directory; fall back to /tmp if it cannot.
  if ! (cd / && as_pg test -x "$base"); then base=/tmp; fi
  local dir
  dir=$(mktemp -d "$base/wxhub-test-postgres.XXXXXX")
  chmod 700 "$dir"
  if [ "$(id -u)" -eq 0 ]; then chown "$RUN_USER_WHEN_ROOT:" "$dir"; fi
  local data="$dir/data" logfile="$dir/postgres.log"
  # Record the directory at once so `stop` can clean up even if start fails half-way.
  printf 'dir=%s\ndata=%s\n' "$dir" "$data" >"$STATE_FILE"

  log "initdb in $data"
  (cd / && as_pg "$PG_BIN/initdb" -D "$data" -U "$DB_USER" --auth=trust --encoding=UTF8 \
    --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1) \
    || (cd / && as_pg "$PG_BIN/initdb" -D "$data" -U "$DB_USER" --auth=trust --encoding=UTF8 \
      --locale=C --no-sync >"$dir/initdb.log" 2>&1) \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }

  local port started=""
  for attempt in 1 2 3 4 5; do
    port=$(free_port) || die "no free port found"
    log "starting on 127.0.0.1:$port (attempt $attempt)"
    if (cd / && as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$logfile" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir \
          -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
          -c max_connections=300" start >&2); then
      started=yes
      break
    fi
    tail -n 20 "$logfile" >&2 2>/dev/null || true
  done
  [ -n "$started" ] || die "PostgreSQL did not start; log: $logfile"

  for _ in $(seq 1 60); do
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$DB_USER"; then
      printf 'dir=%s\ndata=%s\nport=%s\n' "$dir" "$data" "$port" >"$STATE_FILE"
      log "ready; stop with: $0 stop"
      url_for "$port"
      return 0
    fi
    sleep 0.5
  done
  die "PostgreSQL did not become ready; log: $logfile"
}

cmd_stop() {
  [ -f "$STATE_FILE" ] || { log "not running (no $STATE_FILE)"; return 0; }
  local dir data
  dir=$(state_get dir)
  data=$(state_get data)
  if [ -n "$data" ] && [ -d "$data" ]; then
    (cd / && as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >&2) || log "pg_ctl stop failed"
  fi
  case "$dir" in
    */wxhub-test-postgres.*) rm -rf -- "$dir" ;;
    *) [ -z "$dir" ] || log "not removing unexpected directory $dir" ;;
  esac
  rm -f -- "$STATE_FILE"
  log "stopped"
}

cmd_url() {
  is_running || die "not running"
  url_for "$(state_get port)"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  url) cmd_url ;;
  *) die "usage: $0 start|stop|url" ;;
esac
