#!/usr/bin/env bash
# Makes sure the Jaeger v2 binary of the pinned release is built, and prints its path on its
# last stdout line; everything else goes to stderr. Jaeger is the OpenTelemetry trace backend
# of the tests: daprd exports its spans to it over OTLP, and a test reads the trace back from
# its query API. dapr/jaeger.yaml is the configuration to run it with (loopback only, in-memory
# storage, its ports from the environment; the file says which and how to tell it is ready):
#
#   JAEGER_OTLP_HTTP_PORT=… JAEGER_OTLP_GRPC_PORT=… JAEGER_QUERY_PORT=… \
#     "$(scripts/ensure-jaeger.sh)" --config dapr/jaeger.yaml
#
# It is built from the Go module proxy (github.com/jaegertracing/jaeger/cmd/jaeger, the version
# tools/jaeger/go.mod requires: the place to change it) into
# $DAPR_TODO_CACHE/jaeger-<version>/jaeger (default cache ~/.cache/dapr-todo). A build that is
# current (same go.mod and go.sum under tools/jaeger, same script) is not redone; the Go module
# and build caches (~/go/pkg/mod, ~/.cache/go-build) make a rebuild after a version change
# incremental. Measured on 2 cores shared with a Rust build (load ~8), so an idle machine is
# faster (the CPU time, over 2 cores, is ~7.5 min):
#   nothing downloaded, empty build cache   21 min wall (805 s user + 81 s sys), 2.1 GiB peak
#   modules downloaded, empty build cache   15.5 min wall (798 s user + 86 s sys)
#   a full build cache (e.g. after an edit of this script)   9 s
#   current                                 0.02 s
# for an 81 MiB binary (-trimpath: the same bytes from any cache).
# The binary is built without the UI's assets (they are not in the Go module): the query API
# is all the tests use.
set -euo pipefail

say() { printf 'ensure-jaeger: %s\n' "$*" >&2; }

repo="$(cd "$(dirname "$0")/.." && pwd)"
module="$repo/tools/jaeger"
required() { awk -v path="$1" '$1 == path { sub(/^v/, "", $2); print $2; exit }' "$2"; }
# The Go module's version (v1.x; the release it is, v2.x, is looked up below).
JAEGER_VERSION="$(required github.com/jaegertracing/jaeger "$module/go.mod")"
CACHE="${DAPR_TODO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dapr-todo}"
dir="$CACHE/jaeger-$JAEGER_VERSION"
jaeger="$dir/jaeger"
stamp="$dir/built-from"

# Of the contents only: a clone elsewhere (CI's) finds the same build current.
sum_of() { cat "$1/go.mod" "$1/go.sum" | sha256sum | cut -c1-16; }
# The recipe is part of what a build is made from: this script's own hash too.
recipe="$(sha256sum "$0" | cut -c1-16)"
expected_stamp="jaeger $JAEGER_VERSION ($(sum_of "$module")); recipe $recipe"
current() { [ -x "$jaeger" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$expected_stamp" ]; }
if current; then echo "$jaeger"; exit 0; fi

# One build at a time (test processes may start together on a cold machine); who waited finds
# it done.
mkdir -p "$CACHE"
exec 9> "$dir.lock"
flock 9
if current; then echo "$jaeger"; exit 0; fi

if ! command -v go >/dev/null 2>&1; then
  say "Go is needed to build Jaeger $JAEGER_VERSION (install Go 1.26 or newer)"
  exit 1
fi
mkdir -p "$dir"
rm -f "$stamp"

# The version and commit are link-time variables, set as Jaeger's Makefile sets them
# (scripts/makefiles/BuildInfo.mk); without them `jaeger version` reports none. Its v2 release
# number stands beside the module version in the module's CHANGELOG ("v1.76.0 / v2.13.0").
info="$(cd "$module" && go mod download -json "github.com/jaegertracing/jaeger@v$JAEGER_VERSION")"
field() { awk -F'"' -v key="$1" '$2 == key { print $4; exit }' <<<"$info"; }
commit="$(field Hash)"
release="$(sed -nE "s|^v$JAEGER_VERSION / (v2\.[0-9]+\.[0-9]+).*|\1|p" "$(field Dir)/CHANGELOG.md" | head -n1)"
release="${release:-v$JAEGER_VERSION}"
pkg=github.com/jaegertracing/jaeger/internal/version

started=$SECONDS
say "building Jaeger $release (module v$JAEGER_VERSION) from the Go module proxy; the first build takes a few minutes"
# -buildvcs=false: the module sits inside this checkout, whose git state has nothing to do
# with Jaeger's, and stamping it fails in a clone that git does not trust.
(cd "$module" && go build -trimpath -buildvcs=false \
  -ldflags "-s -w -X $pkg.latestVersion=$release -X $pkg.commitSHA=$commit" \
  -o "$jaeger.new" github.com/jaegertracing/jaeger/cmd/jaeger) >&2
mv "$jaeger.new" "$jaeger"
if ! "$jaeger" version >/dev/null 2>&1; then
  say "the build does not run: $jaeger version"; exit 1
fi
echo "$expected_stamp" > "$stamp"
say "Jaeger $release built in $((SECONDS - started)) s: $jaeger"
echo "$jaeger"
