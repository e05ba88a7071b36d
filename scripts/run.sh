#!/usr/bin/env bash
# `make run`: the whole system — todo, notification and analytics, each with its sidecar — from
# dapr/dapr.yaml. Uses the real Dapr CLI (`dapr run -f`) when it is installed, else the dev
# sidecar (`devsidecar run -f`). Expects the release binaries (make build).
#
# Redis: whatever scripts/ensure-redis.sh finds or starts. components/pubsub.yaml names
# localhost:6379 (where `dapr init` puts Redis); when Redis is elsewhere, the run uses a copy of
# the run file and components under $RUN_DIR with the address replaced. With PUBSUB=kafka
# (`make run-kafka`) the same, with the cluster's Kafka component instead.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR="${RUN_DIR:-.run}"
say() { printf 'run: %s\n' "$*" >&2; }

mkdir -p "$RUN_DIR/data"
run_file=dapr/dapr.yaml

# Stages the run file one level down with components/ replaced by the files in $@, so the
# relative paths inside the run file still hold.
stage() {
  staged="$RUN_DIR/stage"
  rm -rf "$staged"
  mkdir -p "$staged/dapr" "$staged/components"
  for file in "$@"; do cp "$file" "$staged/components/"; done
  cp dapr/config.yaml "$staged/dapr/"
  ln -sfn "$PWD/services" "$staged/services"
  ln -sfn "$PWD/target" "$staged/target"
  ln -sfn "$PWD/$RUN_DIR" "$staged/.run"
  run_file="$staged/dapr/dapr.yaml"
  cp dapr/dapr.yaml "$run_file"
}

if [ "${PUBSUB:-redis}" = kafka ]; then
  # `make run-kafka`: the cluster's Kafka component (k8s/base/dapr/pubsub.yaml) with only the
  # broker address changed, against a tansu broker set up like the cluster's Kafka (SCRAM,
  # the dapr-todo user, the KafkaTopics). The password comes from a local file secret store
  # named `kubernetes`, standing in for the Secret Strimzi creates in the cluster.
  kafka_dir="$PWD/$RUN_DIR/kafka"
  password=dapr-todo-local
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
  broker_note="Kafka (tansu, SCRAM) at $brokers"
else
  # A Redis of our own keeps its data under the run directory.
  redis=$(REDIS_DIR="${REDIS_DIR:-$PWD/$RUN_DIR/redis}" scripts/ensure-redis.sh)
  if [ "$redis" != "127.0.0.1:6379" ] && [ "$redis" != "localhost:6379" ]; then
    sed "s#localhost:6379#$redis#" components/pubsub.yaml > "$RUN_DIR/pubsub.yaml"
    stage "$RUN_DIR/pubsub.yaml" components/resiliency.yaml
  fi
  broker_note="Redis at $redis"
fi

say "$broker_note; todo on http://127.0.0.1:8080, notification on :8081, analytics on :8082"
say "admin API token (local only): dev-admin-token; Ctrl-C stops everything"
if command -v dapr >/dev/null 2>&1; then
  say "using the Dapr CLI: dapr run -f $run_file"
  exec dapr run -f "$run_file"
fi
say "no Dapr CLI found: using the dev sidecar (target/release/devsidecar)"
exec ./target/release/devsidecar run -f "$run_file"
