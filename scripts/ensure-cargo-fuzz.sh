#!/usr/bin/env bash
# Prints the path of a cargo-fuzz (crates.io) of the pinned version, for `make fuzz`.
#
# It is used from PATH when that is the pinned version; otherwise it is built once (about two
# minutes on 2 cores) into $DAPR_TODO_CACHE/cargo-fuzz-<version> (default ~/.cache/dapr-todo).
set -euo pipefail

VERSION=0.13.2
CACHE="${DAPR_TODO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dapr-todo}"
ROOT="$CACHE/cargo-fuzz-$VERSION"

if command -v cargo-fuzz >/dev/null && cargo-fuzz --version 2>/dev/null | grep -q " $VERSION"; then
  command -v cargo-fuzz
elif [ -x "$ROOT/bin/cargo-fuzz" ]; then
  echo "$ROOT/bin/cargo-fuzz"
else
  echo "ensure-cargo-fuzz: building cargo-fuzz $VERSION into $ROOT (once)" >&2
  cargo install cargo-fuzz --version "$VERSION" --locked --root "$ROOT" >&2
  echo "$ROOT/bin/cargo-fuzz"
fi
