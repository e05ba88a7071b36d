#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests (part of `make test`): renders every overlay
# with `kubectl kustomize` and checks it with scripts/validate_k8s.py — core objects against
# the Kubernetes 1.32 schemas (kubernetes-validate), Dapr/Strimzi/CloudNativePG objects against
# the JSON Schemas in shared/schemas (check-jsonschema), Dapr component metadata names, and the
# project's invariants. The Python tools live in a project-local virtualenv (.venv-k8s).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'validate-k8s: %s\n' "$*" >&2; }
SHARED="${SHARED_DIR:-../shared}"
VENV="${K8S_VENV:-.venv-k8s}"

if [ ! -d "$SHARED/schemas" ]; then
  say "no $SHARED/schemas (the project's shared directory beside the repository; set SHARED_DIR)"; exit 1
fi
if ! command -v kubectl >/dev/null 2>&1; then
  say "kubectl is needed to render the overlays: install it (Debian: apt-get install kubectl, or the upstream package)"; exit 1
fi
if ! "$VENV/bin/python" -c 'import yaml' 2>/dev/null || [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/check-jsonschema" ]; then
  say "installing kubernetes-validate, check-jsonschema and PyYAML into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate check-jsonschema pyyaml
fi

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
for overlay in k8s/overlays/*/; do
  name=$(basename "$overlay")
  kubectl kustomize "$overlay" > "$rendered/$name.yaml"
done
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/python" scripts/validate_k8s.py --shared "$SHARED" --repo . "$rendered"/*.yaml
