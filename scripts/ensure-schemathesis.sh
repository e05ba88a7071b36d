#!/usr/bin/env bash
# Prints the path of a schemathesis CLI of the pinned version (PyPI), for the property-based API
# tests (`make test-api-properties`, part of `make test`).
#
# It is installed once into a virtual environment under $DAPR_TODO_CACHE/schemathesis-<version>
# (default cache ~/.cache/dapr-todo) with the machine's python3, and reused from there.
set -euo pipefail

VERSION=4.32.5
CACHE="${DAPR_TODO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dapr-todo}"
VENV="$CACHE/schemathesis-$VERSION"
CLI="$VENV/bin/schemathesis"

if [ -x "$CLI" ] && "$CLI" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "$CLI"
  exit 0
fi
command -v python3 >/dev/null || { echo "ensure-schemathesis: python3 is needed (3.9 or newer)" >&2; exit 1; }
echo "ensure-schemathesis: installing schemathesis $VERSION into $VENV (once)" >&2
mkdir -p "$CACHE"
rm -rf "$VENV"
# A venv records its own path in its scripts, so it is built where it will live; a failed
# install is removed rather than left half-made.
trap 'rm -rf "$VENV"' ERR
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION" >&2
"$CLI" --version >&2
echo "$CLI"
