#!/usr/bin/env bash
# Makes sure promtool of the pinned Prometheus release is there, and prints its path on its last
# stdout line; everything else goes to stderr. Used by scripts/validate-k8s.sh (`make test`) to
# check the alert rules of k8s/base/monitoring (`promtool check rules`) and to run their unit
# tests (`promtool test rules`).
#
# promtool is built from the Go module proxy with tools/promtool/go.mod (the place to change the
# version; Prometheus 3.x.y is the Go module version v0.3xx.y) into
#   $DAPR_TODO_CACHE/promtool-<version>/promtool   (default cache ~/.cache/dapr-todo)
# A build that is current (same go.mod and go.sum under tools/promtool, same script) is not
# redone; the Go module and build caches make a rebuild after a version change incremental.
# An installed promtool is not used: rule unit tests depend on the PromQL engine's version.
set -euo pipefail

say() { printf 'ensure-promtool: %s\n' "$*" >&2; }

repo="$(cd "$(dirname "$0")/.." && pwd)"
module="$repo/tools/promtool"
MODULE_VERSION="$(awk '$1 == "github.com/prometheus/prometheus" { print $2; exit }' "$module/go.mod")"
# v0.316.0 -> 3.16.0
PROMETHEUS_VERSION="$(awk -F. '{ sub(/^v/, "", $1); printf "%d.%d.%s\n", $2 / 100, $2 % 100, $3 }' <<<"$MODULE_VERSION")"
CACHE="${DAPR_TODO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dapr-todo}"
dir="$CACHE/promtool-$PROMETHEUS_VERSION"
promtool="$dir/promtool"
stamp="$dir/built-from"

# Of the contents only: a clone elsewhere (CI's) finds the same build current.
sum_of() { cat "$1/go.mod" "$1/go.sum" | sha256sum | cut -c1-16; }
# The recipe is part of what a build is made from: this script's own hash too.
recipe="$(sha256sum "$0" | cut -c1-16)"
expected_stamp="promtool $PROMETHEUS_VERSION ($MODULE_VERSION, $(sum_of "$module")); recipe $recipe"
current() { [ -x "$promtool" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$expected_stamp" ]; }
if current; then echo "$promtool"; exit 0; fi

# One build at a time; who waited finds it done.
mkdir -p "$CACHE"
exec 9> "$dir.lock"
flock 9
if current; then echo "$promtool"; exit 0; fi

if ! command -v go >/dev/null 2>&1; then
  say "Go is needed to build promtool $PROMETHEUS_VERSION (install Go 1.26.7 or newer)"
  exit 1
fi
mkdir -p "$dir"
rm -f "$stamp"

# The version is a link-time variable, set as Prometheus's .promu.yml sets it; without it
# `promtool --version` reports nothing. netgo: the tag Prometheus's own builds use.
# remove_all_sd: without the service-discovery plugins (the cloud SDKs, the Kubernetes client),
# which only `promtool check service-discovery` and SD configs in `check config` need; the rule
# checks and tests do not. -buildvcs=false: tools/promtool sits inside this checkout, whose git
# state is not Prometheus's.
started=$SECONDS
say "building promtool $PROMETHEUS_VERSION ($MODULE_VERSION) from the Go module proxy; the first build takes a few minutes"
(cd "$module" && go build -trimpath -buildvcs=false -tags netgo,remove_all_sd \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION \
    -X github.com/prometheus/common/version.Branch=$MODULE_VERSION" \
  -o "$promtool.new" github.com/prometheus/prometheus/cmd/promtool) >&2
mv "$promtool.new" "$promtool"
say "promtool built in $((SECONDS - started)) s"

reported="$("$promtool" --version 2>&1 | head -n1)"
case "$reported" in
  *"version $PROMETHEUS_VERSION "*) ;;
  *) say "the build does not report its version: $reported"; exit 1 ;;
esac
echo "$expected_stamp" > "$stamp"
say "promtool ready: $reported"
echo "$promtool"
