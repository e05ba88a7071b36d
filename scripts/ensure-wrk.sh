#!/usr/bin/env bash
# Prints the path of wrk (Debian's `wrk` package), the HTTP load generator `make bench-write`
# runs in a process of its own. Installs it with apt-get when it is missing and we are root;
# otherwise says what to run and fails (the benchmark then loads the service from its own
# process, and says so). Everything but the path goes to stderr.
set -euo pipefail

say() { printf 'ensure-wrk: %s\n' "$*" >&2; }

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing wrk (apt-get install wrk)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
  else
    say "wrk is not installed. Install it with: sudo apt-get install -y wrk"
    exit 1
  fi
fi
command -v wrk
