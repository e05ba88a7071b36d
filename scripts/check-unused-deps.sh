#!/usr/bin/env bash
# Fails when a crate of the workspace declares a dependency its code does not use.
#
# The check is cargo-machete (crates.io), pinned below. It is used from PATH when that is the
# pinned version; otherwise it is built once (about 3 minutes on 2 cores) into
# $DAPR_TODO_CACHE/cargo-machete-<version> (default ~/.cache/dapr-todo) and reused from there.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.9.2
CACHE="${DAPR_TODO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dapr-todo}"
ROOT="$CACHE/cargo-machete-$VERSION"

machete=""
if command -v cargo-machete >/dev/null && [ "$(cargo-machete --version 2>/dev/null)" = "$VERSION" ]; then
  machete=$(command -v cargo-machete)
elif [ -x "$ROOT/bin/cargo-machete" ]; then
  machete="$ROOT/bin/cargo-machete"
else
  echo "check-unused-deps: building cargo-machete $VERSION into $ROOT (once)" >&2
  cargo install cargo-machete --version "$VERSION" --locked --root "$ROOT" >&2
  machete="$ROOT/bin/cargo-machete"
fi
"$machete"
