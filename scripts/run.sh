#!/usr/bin/env bash
# `make run`: the whole system — todo, notification and analytics, each with its sidecar — from
# dapr/dapr.yaml. Uses the real Dapr CLI (`dapr run -f`) when it is installed, else the dev
# sidecar (`devsidecar run -f`). Expects the release binaries (make build).
#
# Redis: whatever scripts/ensure-redis.sh finds or starts. components/pubsub.yaml names
# localhost:6379 (where `dapr init` puts Redis); when Redis is elsewhere, the run uses a copy of
# the run file and components under $RUN_DIR with the address replaced.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR="${RUN_DIR:-.run}"
say() { printf 'run: %s\n' "$*" >&2; }

# A Redis of our own keeps its data under the run directory.
redis=$(REDIS_DIR="${REDIS_DIR:-$PWD/$RUN_DIR/redis}" scripts/ensure-redis.sh)
mkdir -p "$RUN_DIR/data"
run_file=dapr/dapr.yaml
if [ "$redis" != "127.0.0.1:6379" ] && [ "$redis" != "localhost:6379" ]; then
  # Same layout one level down, so the relative paths inside the run file still hold.
  staged="$RUN_DIR/stage"
  rm -rf "$staged"
  mkdir -p "$staged/dapr" "$staged/components"
  sed "s#localhost:6379#$redis#" components/pubsub.yaml > "$staged/components/pubsub.yaml"
  cp components/resiliency.yaml "$staged/components/"
  cp dapr/config.yaml "$staged/dapr/"
  ln -sfn "$PWD/services" "$staged/services"
  ln -sfn "$PWD/target" "$staged/target"
  ln -sfn "$PWD/$RUN_DIR" "$staged/.run"
  run_file="$staged/dapr/dapr.yaml"
  cp dapr/dapr.yaml "$run_file"
fi

say "Redis at $redis; todo on http://127.0.0.1:8080, notification on :8081, analytics on :8082"
say "admin API token (local only): dev-admin-token; Ctrl-C stops everything"
if command -v dapr >/dev/null 2>&1; then
  say "using the Dapr CLI: dapr run -f $run_file"
  exec dapr run -f "$run_file"
fi
say "no Dapr CLI found: using the dev sidecar (target/release/devsidecar)"
exec ./target/release/devsidecar run -f "$run_file"
