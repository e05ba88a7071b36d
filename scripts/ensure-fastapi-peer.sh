#!/usr/bin/env bash
# Prints the path of the python of a virtual environment holding the FastAPI comparison peer's
# packages (bench/fastapi-peer/requirements.txt, every version pinned), for
# `make bench-write PEER=1`.
#
# The venv is built once with the machine's python3 (3.9 or newer) under
# ${XDG_CACHE_HOME:-$HOME/.cache}/dapr-todo/fastapi-peer-venv-<hash of requirements.txt> and
# reused while requirements.txt is unchanged; an edit to it makes a new one. Only the path goes
# to stdout, everything else to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQUIREMENTS="$ROOT/bench/fastapi-peer/requirements.txt"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/dapr-todo"
HASH="$(sha256sum "$REQUIREMENTS" | cut -c1-16)"
VENV="$CACHE/fastapi-peer-venv-$HASH"
PYTHON="$VENV/bin/python"
# Written last, so a venv whose install was cut short is not taken for a finished one.
DONE="$VENV/.installed"

if [ -x "$PYTHON" ] && [ -f "$DONE" ]; then
  echo "$PYTHON"
  exit 0
fi
command -v python3 >/dev/null || { echo "ensure-fastapi-peer: python3 is needed (3.9 or newer)" >&2; exit 1; }
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
  || { echo "ensure-fastapi-peer: python3 is $(python3 --version 2>&1); 3.9 or newer is needed" >&2; exit 1; }
echo "ensure-fastapi-peer: installing bench/fastapi-peer/requirements.txt into $VENV (once)" >&2
started=$SECONDS
mkdir -p "$CACHE"
rm -rf "$VENV"
# A venv records its own path in its scripts, so it is built where it will live; a failed
# install is removed rather than left half-made.
trap 'rm -rf "$VENV"' ERR
python3 -m venv "$VENV" >&2
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input -r "$REQUIREMENTS" >&2
"$PYTHON" -c 'import fastapi, uvicorn, uvloop, httptools, aiosqlite, asyncpg, httpx, orjson, uuid_utils' >&2
touch "$DONE"
echo "ensure-fastapi-peer: installed in $((SECONDS - started)) s" >&2
echo "$PYTHON"
