#!/usr/bin/env bash
# Prints host:port of a Kafka-protocol broker for `make test-kafka`.
#
# In order: $TEST_KAFKA_BROKERS if it accepts connections; else a tansu broker of our own on
# 127.0.0.1:59092 (SQLite storage under $KAFKA_DIR, default a temp directory), started once and
# reused by later runs. tansu comes from crates.io: when it is missing it is installed with
# `cargo install` (about 15 minutes on 2 cores, once; the binary stays in ~/.cargo/bin).
# Everything but host:port goes to stderr.
set -euo pipefail

say() { printf 'ensure-kafka: %s\n' "$*" >&2; }

PORT="${OWN_KAFKA_PORT:-59092}"
DIR="${KAFKA_DIR:-${TMPDIR:-/tmp}/dapr-todo-tansu-$(id -u)}"

listens() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

if [ -n "${TEST_KAFKA_BROKERS:-}" ]; then
  if listens "$TEST_KAFKA_BROKERS"; then echo "$TEST_KAFKA_BROKERS"; exit 0; fi
  say "TEST_KAFKA_BROKERS=$TEST_KAFKA_BROKERS does not accept connections"; exit 1
fi
if listens "127.0.0.1:$PORT"; then echo "127.0.0.1:$PORT"; exit 0; fi

if ! command -v tansu >/dev/null 2>&1; then
  if ! command -v cargo >/dev/null 2>&1; then say "cargo is needed to install tansu"; exit 1; fi
  say "installing tansu from crates.io (cargo install tansu --locked --features dynostore,libsql; ~15 minutes once)"
  cargo install tansu --locked --features dynostore,libsql >&2
  export PATH="$HOME/.cargo/bin:$PATH"
fi

mkdir -p "$DIR"
say "starting tansu on 127.0.0.1:$PORT (storage $DIR/tansu.db, log $DIR/tansu.log)"
# tansu reads the path of a sqlite:// URL relative to its working directory: run it there.
# Every descriptor goes to the log, or the caller's $(…) would wait for the broker to exit.
(cd "$DIR" && exec nohup tansu broker \
  --listener-url "tcp://127.0.0.1:$PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$PORT" \
  --storage-engine "sqlite://tansu.db") < /dev/null > "$DIR/tansu.log" 2>&1 &
for _ in $(seq 1 300); do
  if listens "127.0.0.1:$PORT"; then echo "127.0.0.1:$PORT"; exit 0; fi
  sleep 0.1
done
say "tansu did not start listening; see $DIR/tansu.log"; exit 1
