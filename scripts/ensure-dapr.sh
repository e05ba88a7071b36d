#!/usr/bin/env bash
# Makes sure the Dapr CLI, daprd and the Dapr scheduler of the pinned release are there, and
# prints the path of the `dapr` CLI on its last stdout line (`--daprd`, `--scheduler`: the path of
# that binary instead). Used by `make run`, `make test` and `.ci/run`; everything but the path
# goes to stderr. The scheduler is what `dapr run` points every daprd at (the CLI gives no way
# to turn that off in a run file), so `make run` starts one; the services schedule no jobs.
#
# 1. An installed Dapr is used as it is when its runtime is the pinned release and its CLI at
#    least $DAPR_CLI_VERSION: `dapr` on PATH with ~/.dapr/bin/daprd and scheduler, as
#    `dapr init --slim` leaves them.
# 2. Otherwise both are built from the Go module proxy into a runtime path of our own,
#    $DAPR_TODO_CACHE/dapr-<version> (default cache ~/.cache/dapr-todo), never over ~/.dapr:
#      <runtime path>/.dapr/bin/daprd   what `dapr run --runtime-path <runtime path>` runs
#      <runtime path>/.dapr/bin/scheduler
#      <runtime path>/bin/dapr          the CLI, a wrapper that sets DAPR_RUNTIME_PATH so that
#                                       `dapr run` and `dapr --version` find that daprd
#    A build that is current (same go.mod and go.sum under tools/, same script) is not redone; the Go
#    module and build caches (~/go/pkg/mod, ~/.cache/go-build) make a rebuild after a version
#    change incremental.
#
# The versions are the ones tools/daprd/go.mod and tools/dapr-cli/go.mod require (the places to
# change them); why those releases is in tools/README.md.
set -euo pipefail

say() { printf 'ensure-dapr: %s\n' "$*" >&2; }

repo="$(cd "$(dirname "$0")/.." && pwd)"
module="$repo/tools/daprd"
cli_module="$repo/tools/dapr-cli"
required() { awk -v path="$1" '$1 == path { sub(/^v/, "", $2); print $2; exit }' "$2"; }
DAPR_VERSION="$(required github.com/dapr/dapr "$module/go.mod")"
DAPR_CLI_VERSION="$(required github.com/dapr/cli "$cli_module/go.mod")"
# The components daprd is built with (tools/README.md).
DAPR_BUILD_TAGS="${DAPR_BUILD_TAGS:-stablecomponents}"
CACHE="${DAPR_TODO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dapr-todo}"
RUNTIME_PATH="$CACHE/dapr-$DAPR_VERSION"

want=cli
case "${1:-}" in
  --daprd) want=daprd ;;
  --scheduler) want=scheduler ;;
esac

answer() { # the directory of daprd and the scheduler, the CLI's path
  case "$want" in
    daprd) echo "$1/daprd" ;;
    scheduler) echo "$1/scheduler" ;;
    *) echo "$2" ;;
  esac
  exit 0
}

# "CLI version: X \nRuntime version: Y" -> the field asked for.
version_field() { awk -F': *' -v field="$1" '$1 == field { gsub(/[ \r]/, "", $2); print $2 }'; }
at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

# 1. An installed Dapr of the pinned release.
if installed="$(command -v dapr 2>/dev/null)" && [ -x "$HOME/.dapr/bin/daprd" ] && [ -x "$HOME/.dapr/bin/scheduler" ]; then
  versions="$(DAPR_RUNTIME_PATH="$HOME" "$installed" --version 2>/dev/null || true)"
  cli="$(version_field "CLI version" <<<"$versions")"
  runtime="$(version_field "Runtime version" <<<"$versions")"
  if [ "$runtime" = "$DAPR_VERSION" ] && at_least "${cli:-0}" "$DAPR_CLI_VERSION"; then
    say "using the installed Dapr: CLI $cli ($installed), runtime $runtime ($HOME/.dapr/bin/daprd)"
    answer "$HOME/.dapr/bin" "$installed"
  fi
  say "the installed Dapr (CLI ${cli:-?}, runtime ${runtime:-?}) is not release $DAPR_VERSION: using one of our own"
fi

# 2. Ours, built when not current.
bin="$RUNTIME_PATH/.dapr/bin"
daprd="$bin/daprd"
scheduler="$bin/scheduler"
cli_bin="$RUNTIME_PATH/bin/dapr-cli"
wrapper="$RUNTIME_PATH/bin/dapr"
stamp="$RUNTIME_PATH/built-from"
# Of the contents only: a clone elsewhere (CI's) finds the same build current.
sum_of() { cat "$1/go.mod" "$1/go.sum" | sha256sum | cut -c1-16; }
# The recipe is part of what a build is made from: this script's own hash too.
recipe="$(sha256sum "$0" | cut -c1-16)"
expected_stamp="daprd $DAPR_VERSION ($DAPR_BUILD_TAGS, $(sum_of "$module")); cli $DAPR_CLI_VERSION ($(sum_of "$cli_module")); recipe $recipe"
current() {
  [ -x "$daprd" ] && [ -x "$scheduler" ] && [ -x "$cli_bin" ] && [ -x "$wrapper" ] &&
    [ "$(cat "$stamp" 2>/dev/null)" = "$expected_stamp" ]
}
if current; then answer "$bin" "$wrapper"; fi

# One build at a time (`make run` and `make test` may start together on a cold machine); who
# waited finds it done.
mkdir -p "$CACHE"
exec 9> "$RUNTIME_PATH.lock"
flock 9
if current; then answer "$bin" "$wrapper"; fi

if ! command -v go >/dev/null 2>&1; then
  say "Go is needed to build daprd and the Dapr CLI $DAPR_VERSION (install Go 1.26 or newer,"
  say "or install Dapr $DAPR_VERSION yourself: dapr init --slim --runtime-version $DAPR_VERSION)"
  exit 1
fi
mkdir -p "$RUNTIME_PATH/.dapr/bin" "$RUNTIME_PATH/bin"
rm -f "$stamp"

# daprd's version and commit are link-time variables, set as dapr/dapr's Makefile sets them
# (pkg/buildinfo, and the `ver` of every log line in github.com/dapr/kit/logger); without them
# it reports "edge" and logs "unknown".
commit="$(cd "$module" && go mod download -json "github.com/dapr/dapr@v$DAPR_VERSION" |
  awk -F'"' '$2 == "Hash" { print $4; exit }')"
# -buildvcs=false: the modules under tools/ sit inside this checkout, whose git state has nothing
# to do with Dapr's, and stamping it fails in a clone that git does not trust.
started=$SECONDS
say "building daprd $DAPR_VERSION (tags $DAPR_BUILD_TAGS) from the Go module proxy; the first build takes a while"
(cd "$module" && go build -trimpath -buildvcs=false -tags "$DAPR_BUILD_TAGS" \
  -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$DAPR_VERSION \
    -X github.com/dapr/dapr/pkg/buildinfo.gitversion=v$DAPR_VERSION \
    -X github.com/dapr/dapr/pkg/buildinfo.gitcommit=$commit \
    -X github.com/dapr/kit/logger.DaprVersion=$DAPR_VERSION" \
  -o "$daprd.new" github.com/dapr/dapr/cmd/daprd) >&2
mv "$daprd.new" "$daprd"
say "daprd built in $((SECONDS - started)) s"
started=$SECONDS
(cd "$module" && go build -trimpath -buildvcs=false -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$DAPR_VERSION \
    -X github.com/dapr/kit/logger.DaprVersion=$DAPR_VERSION" \
  -o "$scheduler.new" github.com/dapr/dapr/cmd/scheduler) >&2
mv "$scheduler.new" "$scheduler"
say "the scheduler built in $((SECONDS - started)) s"

started=$SECONDS
say "building the Dapr CLI $DAPR_CLI_VERSION from the Go module proxy"
(cd "$cli_module" && go build -trimpath -buildvcs=false \
  -ldflags "-s -w -X main.version=$DAPR_CLI_VERSION -X main.apiVersion=1.0" \
  -o "$cli_bin.new" github.com/dapr/cli) >&2
mv "$cli_bin.new" "$cli_bin"
say "the Dapr CLI built in $((SECONDS - started)) s"

cat > "$wrapper" <<EOF
#!/bin/sh
# The Dapr CLI $DAPR_CLI_VERSION with the daprd $DAPR_VERSION beside it (scripts/ensure-dapr.sh).
DAPR_RUNTIME_PATH="$RUNTIME_PATH" exec "$cli_bin" "\$@"
EOF
chmod +x "$wrapper"

versions="$("$wrapper" --version)"
if [ "$(version_field "Runtime version" <<<"$versions")" != "$DAPR_VERSION" ] ||
   [ "$(version_field "CLI version" <<<"$versions")" != "$DAPR_CLI_VERSION" ]; then
  say "the build does not report its versions: $versions"; exit 1
fi
echo "$expected_stamp" > "$stamp"
say "Dapr ready under $RUNTIME_PATH: $(tr '\n' ' ' <<<"$versions")"
answer "$bin" "$wrapper"
