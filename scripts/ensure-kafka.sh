#!/usr/bin/env bash
# Prints host:port of a Kafka-protocol broker for `make test-kafka`, after making sure what the
# Kafka build and tests need is there: OpenSSL's headers (librdkafka needs them for SASL/SCRAM,
# which the cluster's component uses) and the tansu binary (the system tests start brokers of
# their own from it).
#
# In order: $TEST_KAFKA_BROKERS if it accepts connections; else a tansu broker of our own on
# 127.0.0.1:$OWN_KAFKA_PORT (default 59092; SQLite storage under $KAFKA_DIR, default a temp
# directory), started once and reused by later runs. With $KAFKA_SCRAM_USER set, that broker is
# set up like the cluster's instead (see below). tansu comes from crates.io: when it is missing it is installed with
# `cargo install` (about 15 minutes on 2 cores, once; the binary stays in ~/.cargo/bin).
# Everything but host:port goes to stderr.
set -euo pipefail

say() { printf 'ensure-kafka: %s\n' "$*" >&2; }

PORT="${OWN_KAFKA_PORT:-59092}"
DIR="${KAFKA_DIR:-${TMPDIR:-/tmp}/dapr-todo-tansu-$(id -u)}"

listens() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# librdkafka is built from source with OpenSSL for SCRAM: the headers and pkg-config.
if ! { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl; }; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing OpenSSL headers for librdkafka (apt-get install libssl-dev pkg-config)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config >&2
  else
    say "OpenSSL headers are missing. Install them with: sudo apt-get install -y libssl-dev pkg-config"; exit 1
  fi
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v tansu >/dev/null 2>&1; then
  if ! command -v cargo >/dev/null 2>&1; then say "cargo is needed to install tansu"; exit 1; fi
  # Pinned: the tests drive its command line (broker, user create).
  version="${TANSU_VERSION:-0.6.0}"
  say "installing tansu $version from crates.io (cargo install tansu --locked --features dynostore,libsql; ~15 minutes once)"
  cargo install tansu --version "$version" --locked --features dynostore,libsql >&2
fi

# `--tools-only`: just the OpenSSL headers and tansu (before a Kafka build).
if [ "${1:-}" = --tools-only ]; then exit 0; fi

# A tansu broker on $PORT with storage in $DIR; the arguments are extra flags.
start_tansu() {
  local attempt pid
  for attempt in 1 2 3; do
    # tansu reads the path of a sqlite:// URL relative to its working directory: run it there.
    # Every descriptor goes to the log, or the caller's $(…) would wait for the broker to exit.
    (cd "$DIR" && NO_COLOR=1 RUST_BACKTRACE=0 exec nohup tansu broker \
      --listener-url "tcp://127.0.0.1:$PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$PORT" \
      --storage-engine "sqlite://tansu.db" "$@") < /dev/null >> "$DIR/tansu.log" 2>&1 &
    pid=$!
    echo "$pid" > "$DIR/tansu.pid"
    for _ in $(seq 1 300); do
      if listens "127.0.0.1:$PORT"; then return 0; fi
      # A broker that exits before it listens (its port taken meanwhile, say) does not get
      # better by waiting: start it again, and show why if it never does.
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    say "tansu did not start listening on 127.0.0.1:$PORT (attempt $attempt); the end of $DIR/tansu.log:"
    tail -n 5 "$DIR/tansu.log" >&2 || true
    sleep 1  # back off before the next attempt
  done
  exit 1
}

# Stops the broker started last and waits until it has exited, not just closed its listener
# (on SIGTERM tansu closes that first, then gives its tasks up to 5 s), so the next broker on
# this storage and port starts alone.
stop_tansu() {
  local pid
  pid="$(cat "$DIR/tansu.pid")"
  # SIGINT: tansu aborts its tasks at once (SIGTERM gives them 5 s).
  kill -INT "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

if [ -n "${KAFKA_SCRAM_USER:-}" ]; then
  # Set up as the cluster's Kafka is (for `make run-kafka`): SCRAM required, the user
  # $KAFKA_SCRAM_USER with $KAFKA_SCRAM_PASSWORD, and the topics of k8s/base/kafka/topics.yaml
  # (not created on use). Set up once; the storage under $DIR keeps them.
  if listens "127.0.0.1:$PORT"; then echo "127.0.0.1:$PORT"; exit 0; fi
  mkdir -p "$DIR"
  if [ ! -e "$DIR/set-up" ]; then
    say "setting up tansu on 127.0.0.1:$PORT (storage $DIR): user $KAFKA_SCRAM_USER and the cluster's topics"
    # With authentication on, tansu refuses all but the SASL requests, the user's creation
    # included: set up without it first.
    start_tansu
    broker="tcp://127.0.0.1:$PORT"
    tansu user create --broker "$broker" --mechanism scram512 "$KAFKA_SCRAM_USER" "$KAFKA_SCRAM_PASSWORD" >&2
    awk '/topicName:/ {name = $2} /partitions:/ {print name, $2}' \
      "$(dirname "$0")/../k8s/base/kafka/topics.yaml" | while read -r topic partitions; do
      tansu topic create --broker "$broker" --partitions "$partitions" "$topic" >&2
    done
    stop_tansu
    touch "$DIR/set-up"
  fi
  say "starting tansu on 127.0.0.1:$PORT with SCRAM authentication (log $DIR/tansu.log)"
  start_tansu --authentication
  echo "127.0.0.1:$PORT"; exit 0
fi

if [ -n "${TEST_KAFKA_BROKERS:-}" ]; then
  if listens "$TEST_KAFKA_BROKERS"; then echo "$TEST_KAFKA_BROKERS"; exit 0; fi
  say "TEST_KAFKA_BROKERS=$TEST_KAFKA_BROKERS does not accept connections"; exit 1
fi
if listens "127.0.0.1:$PORT"; then echo "127.0.0.1:$PORT"; exit 0; fi

mkdir -p "$DIR"
say "starting tansu on 127.0.0.1:$PORT (storage $DIR/tansu.db, log $DIR/tansu.log)"
start_tansu
echo "127.0.0.1:$PORT"
