#!/usr/bin/env bash
# Prints the URL of a PostgreSQL server the tests and benchmarks may create databases on.
#
# In order: $TEST_POSTGRES_URL if it answers; a server on 127.0.0.1:5432 that lets user
# `postgres` in without a password; else a throwaway cluster of our own (initdb under a temp
# directory, port 55432, fsync off), started once and reused by later runs. Installs the
# PostgreSQL server with apt-get when it is missing and we are root; otherwise says what to run.
# Everything but the URL goes to stderr.
set -euo pipefail

say() { printf 'ensure-postgres: %s\n' "$*" >&2; }

THROWAWAY_PORT="${THROWAWAY_PG_PORT:-55432}"
THROWAWAY_DIR="${THROWAWAY_PG_DIR:-${TMPDIR:-/tmp}/dapr-todo-postgres-$(id -u)}"

find_pg_bin() {
  local name=$1 candidate
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  for candidate in /usr/lib/postgresql/*/bin/"$name"; do
    [ -x "$candidate" ] && { echo "$candidate"; return 0; }
  done
  return 1
}

# True when a server at the URL accepts a query (psql), or at least answers (pg_isready), or
# at least listens (bash's /dev/tcp), depending on which client tools exist.
answers() {
  local url=$1 psql_bin isready_bin hostport host port
  if psql_bin=$(find_pg_bin psql); then
    "$psql_bin" "$url" -qAtc 'SELECT 1' >/dev/null 2>&1
    return
  fi
  hostport=${url#*@}; hostport=${hostport%%/*}; host=${hostport%%:*}; port=${hostport##*:}
  if isready_bin=$(find_pg_bin pg_isready); then
    "$isready_bin" -q -h "$host" -p "$port"
    return
  fi
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

if [ -n "${TEST_POSTGRES_URL:-}" ]; then
  if answers "$TEST_POSTGRES_URL"; then echo "$TEST_POSTGRES_URL"; exit 0; fi
  say "TEST_POSTGRES_URL=$TEST_POSTGRES_URL does not answer"; exit 1
fi

DEFAULT_URL="${LOCAL_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if answers "$DEFAULT_URL"; then echo "$DEFAULT_URL"; exit 0; fi

THROWAWAY_URL="postgres://postgres@127.0.0.1:${THROWAWAY_PORT}/postgres"
if answers "$THROWAWAY_URL"; then echo "$THROWAWAY_URL"; exit 0; fi

say "no PostgreSQL on 127.0.0.1:5432; starting a throwaway cluster on port $THROWAWAY_PORT"
if ! initdb=$(find_pg_bin initdb) || ! pg_ctl=$(find_pg_bin pg_ctl); then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing the PostgreSQL server (apt-get install postgresql)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    initdb=$(find_pg_bin initdb); pg_ctl=$(find_pg_bin pg_ctl)
  else
    say "PostgreSQL is not installed. Install it with: sudo apt-get install -y postgresql"
    say "or point TEST_POSTGRES_URL at a server where user postgres may create databases."
    exit 1
  fi
fi

# initdb refuses to run as root; run the cluster as the postgres system user then.
run_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$THROWAWAY_DIR" postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

mkdir -p "$THROWAWAY_DIR"
[ "$(id -u)" -eq 0 ] && chown postgres "$THROWAWAY_DIR" 2>/dev/null || true
if [ ! -f "$THROWAWAY_DIR/data/PG_VERSION" ]; then
  run_as_owner "$initdb" -D "$THROWAWAY_DIR/data" -U postgres -A trust --no-sync >/dev/null
fi
run_as_owner "$pg_ctl" -D "$THROWAWAY_DIR/data" -l "$THROWAWAY_DIR/server.log" -w -t 60 \
  -o "-p $THROWAWAY_PORT -k $THROWAWAY_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" \
  start >&2 || { say "could not start it; see $THROWAWAY_DIR/server.log"; exit 1; }
if answers "$THROWAWAY_URL"; then echo "$THROWAWAY_URL"; exit 0; fi
say "the throwaway cluster started but does not answer at $THROWAWAY_URL"; exit 1
