#!/usr/bin/env bash
# `make run`: the whole system — todo, notification and analytics, each with its daprd — with
# `dapr run -f dapr/dapr.yaml`, the Dapr CLI and daprd of scripts/ensure-dapr.sh (an installed
# Dapr of the pinned release, else ours, built once). Expects the release binaries (make build).
# Ctrl-C (or SIGTERM) stops the CLI, which stops every app and daprd, then the scheduler and
# the broker this run started, if it started them.
#
# Redis: whatever scripts/ensure-redis.sh finds or starts. The run uses a copy of the run file
# and components under $RUN_DIR (default .run), with the Redis address put into
# components/pubsub.yaml (which names localhost:6379, where `dapr init` puts Redis) and the
# databases under $RUN_DIR/data. With PUBSUB=kafka (`make run-kafka`) the same, with the
# cluster's Kafka component instead.
#
# TRACING=1 (`make run TRACING=1`): Jaeger too (scripts/ensure-jaeger.sh, dapr/jaeger.yaml;
# its query API on http://127.0.0.1:16686), the services exporting their spans to it
# (OTEL_EXPORTER_OTLP_ENDPOINT) and every daprd too (dapr/config-tracing.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p "${RUN_DIR:-.run}"
RUN_DIR="$(cd "${RUN_DIR:-.run}" && pwd)"
say() { printf 'run: %s\n' "$*" >&2; }

dapr="$(scripts/ensure-dapr.sh)"
scheduler="$(scripts/ensure-dapr.sh --scheduler)"
# Whatever this run starts is stopped when it ends.
stop_at_exit=()
cleanup() {
  local step
  for step in "${stop_at_exit[@]}"; do eval "$step" || true; done
}
trap cleanup EXIT
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop_process() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}

mkdir -p "$RUN_DIR/data"

# Stages the run file one level down with components/ replaced by the files in $@, so the
# relative paths inside the run file still hold, and the databases under $RUN_DIR/data (the
# run file's DATA_DIR is relative to each app's directory, which is the repository's own).
stage() {
  staged="$RUN_DIR/stage"
  rm -rf "$staged"
  mkdir -p "$staged/dapr" "$staged/components"
  for file in "$@"; do cp "$file" "$staged/components/"; done
  if [ "${TRACING:-0}" = 1 ]; then
    cp dapr/config-tracing.yaml "$staged/dapr/config.yaml"
  else
    cp dapr/config.yaml "$staged/dapr/"
  fi
  ln -sfn "$PWD/services" "$staged/services"
  ln -sfn "$PWD/target" "$staged/target"
  run_file="$staged/dapr/dapr.yaml"
  grep -q '^    DATA_DIR: ../../.run/data$' dapr/dapr.yaml || { say "dapr/dapr.yaml: no DATA_DIR line to point at $RUN_DIR/data"; exit 1; }
  sed "s#^    DATA_DIR: ../../.run/data\$#    DATA_DIR: $RUN_DIR/data#" dapr/dapr.yaml > "$run_file"
}

if [ "${PUBSUB:-redis}" = kafka ]; then
  # `make run-kafka`: the cluster's Kafka component (k8s/base/dapr/pubsub.yaml) with only the
  # broker address changed, against an Apache Kafka set up like the cluster's (SCRAM,
  # the dapr-todo user, the KafkaTopics). The password comes from a local file secret store
  # named `kubernetes`, standing in for the Secret Strimzi creates in the cluster.
  kafka_dir="$RUN_DIR/kafka"
  password=dapr-todo-local
  if ! alive "$kafka_dir/kafka.pid"; then
    stop_at_exit+=("KAFKA_DIR='$kafka_dir' scripts/ensure-kafka.sh stop")
  fi
  brokers=$(KAFKA_DIR="$kafka_dir" OWN_KAFKA_PORT="${KAFKA_PORT:-59093}" KAFKA_SCRAM_USER=dapr-todo \
    KAFKA_SCRAM_PASSWORD=$password scripts/ensure-kafka.sh)
  parts="$RUN_DIR/kafka-components"
  rm -rf "$parts" && mkdir -p "$parts"
  sed "s#dapr-todo-kafka-bootstrap:9092#$brokers#" k8s/base/dapr/pubsub.yaml > "$parts/pubsub.yaml"
  cp k8s/base/dapr/resiliency.yaml "$parts/resiliency.yaml"
  printf '{"dapr-todo": {"password": "%s"}}\n' "$password" > "$kafka_dir/secrets.json"
  cat > "$parts/secretstore.yaml" <<EOF
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: kubernetes
spec:
  type: secretstores.local.file
  version: v1
  metadata:
    - name: secretsFile
      value: $kafka_dir/secrets.json
    - name: multiValued
      value: "true"
EOF
  stage "$parts"/*.yaml
  broker_note="Kafka (SCRAM) at $brokers"
else
  # A Redis of our own keeps its data under the run directory.
  redis_dir="${REDIS_DIR:-$RUN_DIR/redis}"
  if ! alive "$redis_dir/redis.pid"; then
    stop_at_exit+=("alive '$redis_dir/redis.pid' && kill \$(cat '$redis_dir/redis.pid')")
  fi
  redis=$(REDIS_DIR="$redis_dir" scripts/ensure-redis.sh)
  sed "s#localhost:6379#$redis#" components/pubsub.yaml > "$RUN_DIR/pubsub.yaml"
  stage "$RUN_DIR/pubsub.yaml" components/resiliency.yaml
  broker_note="Redis at $redis"
fi

# The Dapr scheduler on 127.0.0.1:50006, where dapr/dapr.yaml points every daprd (a daprd whose
# scheduler does not answer is never ready); one already there (`dapr init`) is used as it is.
listens() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
if ! listens 127.0.0.1:50006; then
  scheduler_dir="$RUN_DIR/scheduler"
  mkdir -p "$scheduler_dir"
  "$scheduler" --port 50006 --listen-address 127.0.0.1 \
    --healthz-port 58086 --healthz-listen-address 127.0.0.1 \
    --metrics-port 59096 --metrics-listen-address 127.0.0.1 \
    --etcd-data-dir "$scheduler_dir/etcd" --etcd-client-listen-address 127.0.0.1 --etcd-client-port 52379 \
    --etcd-initial-cluster dapr-scheduler-server-0=http://127.0.0.1:52380 \
    < /dev/null > "$scheduler_dir/scheduler.log" 2>&1 &
  scheduler_pid=$!
  # Its graceful shutdown has no time limit of its own: 10 s, then SIGKILL.
  stop_at_exit+=("stop_process $scheduler_pid")
  ready=
  for _ in $(seq 1 300); do
    if listens 127.0.0.1:50006; then ready=1; break; fi
    if ! kill -0 "$scheduler_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    say "the Dapr scheduler did not start listening on 127.0.0.1:50006; the end of $scheduler_dir/scheduler.log:"
    tail -n 5 "$scheduler_dir/scheduler.log" >&2
    exit 1
  fi
fi

if [ "${TRACING:-0}" = 1 ]; then
  jaeger="$(scripts/ensure-jaeger.sh)"
  jaeger_dir="$RUN_DIR/jaeger"
  mkdir -p "$jaeger_dir"
  if listens 127.0.0.1:4318; then
    say "something already takes OTLP on 127.0.0.1:4318: the spans go there"
  else
    "$jaeger" --config dapr/jaeger.yaml < /dev/null > "$jaeger_dir/jaeger.log" 2>&1 &
    jaeger_pid=$!
    stop_at_exit+=("stop_process $jaeger_pid")
    for _ in $(seq 1 300); do
      if listens 127.0.0.1:4318 || ! kill -0 "$jaeger_pid" 2>/dev/null; then break; fi
      sleep 0.1
    done
    listens 127.0.0.1:4318 || { say "Jaeger did not start; the end of $jaeger_dir/jaeger.log:"; tail -n 5 "$jaeger_dir/jaeger.log" >&2; exit 1; }
  fi
  # The Dapr CLI hands its environment to the apps it starts.
  export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318
  say "tracing: spans to Jaeger; e.g. curl 'http://127.0.0.1:16686/api/traces?service=todo&limit=5'"
fi

say "$broker_note; todo on http://127.0.0.1:8080, notification on :8081, analytics on :8082"
say "metrics: http://127.0.0.1:9464/metrics (todo), :9465 (notification), :9466 (analytics)"
say "admin API token (local only): dev-admin-token; Ctrl-C stops everything"
say "dapr run -f $run_file ($("$dapr" --version | tr -s ' \n' ' '))"
# In the background, so this script is there to clean up after it; Ctrl-C reaches the CLI
# through the trap (a background job of a script ignores SIGINT).
"$dapr" run -f "$run_file" &
cli=$!
trap 'kill -TERM "$cli" 2>/dev/null || true' INT TERM
status=0
while kill -0 "$cli" 2>/dev/null; do wait "$cli" || status=$?; done
exit "$status"
