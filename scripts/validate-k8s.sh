#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests (part of `make test`): renders every overlay
# with `kubectl kustomize` (or, without kubectl, kustomize built once from the Go module proxy
# into ~/.cache/dapr-todo) and checks it with scripts/validate_k8s.py — core objects against
# the Kubernetes 1.32 schemas (kubernetes-validate), Dapr/Strimzi/CloudNativePG/Prometheus
# Operator objects against the JSON Schemas in k8s/schemas (check-jsonschema; k8s/schemas/README.md
# says where they come from), Dapr component metadata names, and the project's invariants — and
# checks the monitoring of k8s/base/monitoring with promtool (scripts/ensure-promtool.sh builds
# it once): `promtool check rules` on the rendered PrometheusRule's groups, `promtool test rules`
# of k8s/base/monitoring/tests/alerts.test.yaml, and every dashboard expression parsed. The
# Python tools live in a project-local virtualenv (.venv-k8s).
#
#   scripts/validate-k8s.sh                  all of the above
#   scripts/validate-k8s.sh --metric-names   only print the metric names the alert rules and the
#                                            dashboard use (every dapr_... identifier, one a line)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'validate-k8s: %s\n' "$*" >&2; }
VENV="${K8S_VENV:-.venv-k8s}"
KUSTOMIZE_VERSION=v5.7.1
CACHE="${DAPR_TODO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dapr-todo}"

if ! "$VENV/bin/python" -c 'import yaml' 2>/dev/null || [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/check-jsonschema" ]; then
  say "installing kubernetes-validate, check-jsonschema and PyYAML into $VENV"
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing Python's venv module (apt-get install python3-venv)"
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    else
      say "Python 3 with its venv module is needed: sudo apt-get install -y python3-venv"; exit 1
    fi
  fi
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate check-jsonschema pyyaml
fi

if [ "${1:-}" = --metric-names ]; then
  exec "$VENV/bin/python" scripts/validate_k8s.py --metric-names \
    k8s/base/monitoring/alerts.yaml k8s/base/monitoring/dashboards/dapr-todo.json
fi

if command -v kubectl >/dev/null 2>&1; then
  render() { kubectl kustomize "$1"; }
else
  kustomize="$CACHE/kustomize-$KUSTOMIZE_VERSION/kustomize"
  if [ ! -x "$kustomize" ]; then
    command -v go >/dev/null 2>&1 || { say "kubectl, or Go to build kustomize, is needed to render the overlays"; exit 1; }
    say "no kubectl: building kustomize $KUSTOMIZE_VERSION from the Go module proxy (about 2 minutes, once)"
    GOBIN="$(dirname "$kustomize")" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2
  fi
  render() { "$kustomize" build "$1"; }
fi
promtool="$(scripts/ensure-promtool.sh | tail -n1)"

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
for overlay in k8s/overlays/*/; do
  name=$(basename "$overlay")
  render "$overlay" > "$rendered/$name.yaml"
done
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/python" scripts/validate_k8s.py --schemas k8s/schemas --repo . \
  --promtool "$promtool" --alert-tests k8s/base/monitoring/tests/alerts.test.yaml "$rendered"/*.yaml
