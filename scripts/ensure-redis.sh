#!/usr/bin/env bash
# Prints host:port of a Redis server that the tests, benchmarks and `make run` may use.
#
# In order: $REDIS_HOST if it answers PING; a server on 127.0.0.1:6379; else a redis-server of
# our own on port 56379 (data under $REDIS_DIR, default a temp directory), started once and
# reused by later runs. Installs redis-server with apt-get when it is missing and we are root;
# otherwise says what to run. Everything but host:port goes to stderr.
set -euo pipefail

say() { printf 'ensure-redis: %s\n' "$*" >&2; }

OWN_PORT="${OWN_REDIS_PORT:-56379}"
OWN_DIR="${REDIS_DIR:-${TMPDIR:-/tmp}/dapr-todo-redis-$(id -u)}"

# True when host:port answers PING with PONG (redis-cli when present, else bash's /dev/tcp).
answers() {
  local host=${1%:*} port=${1##*:} reply
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h "$host" -p "$port" ping 2>/dev/null)" = "PONG" ]
    return
  fi
  reply=$( (exec 3<>"/dev/tcp/$host/$port" && printf 'PING\r\n' >&3 && timeout 2 head -c 7 <&3) 2>/dev/null || true)
  [ "${reply%$'\r'}" = "+PONG" ]
}

# The system tests start redis-servers of their own: NEED_REDIS_SERVER=1 (make test) installs
# the binary even when a Redis already answers.
install_redis_server() {
  if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing redis-server (apt-get install redis-server)"
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
    else
      say "redis-server is not installed. Install it with: sudo apt-get install -y redis-server"
      say "or point REDIS_HOST at a running Redis (host:port)."
      exit 1
    fi
  fi
}
if [ -n "${NEED_REDIS_SERVER:-}" ]; then install_redis_server; fi

if [ -n "${REDIS_HOST:-}" ]; then
  if answers "$REDIS_HOST"; then echo "$REDIS_HOST"; exit 0; fi
  say "REDIS_HOST=$REDIS_HOST does not answer PING"; exit 1
fi

if answers "127.0.0.1:6379"; then echo "127.0.0.1:6379"; exit 0; fi
if answers "127.0.0.1:$OWN_PORT"; then echo "127.0.0.1:$OWN_PORT"; exit 0; fi

say "no Redis on 127.0.0.1:6379; starting one on port $OWN_PORT (data in $OWN_DIR)"
install_redis_server

mkdir -p "$OWN_DIR"
redis-server --port "$OWN_PORT" --bind 127.0.0.1 --dir "$OWN_DIR" --daemonize yes \
  --logfile "$OWN_DIR/redis.log" --pidfile "$OWN_DIR/redis.pid" --save "" --appendonly no >&2
for _ in $(seq 1 100); do
  if answers "127.0.0.1:$OWN_PORT"; then echo "127.0.0.1:$OWN_PORT"; exit 0; fi
  sleep 0.1
done
say "redis-server started but does not answer on 127.0.0.1:$OWN_PORT; see $OWN_DIR/redis.log"; exit 1
