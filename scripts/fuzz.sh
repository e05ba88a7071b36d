#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo-fuzz, libFuzzer) for FUZZ_SECONDS each (default 60) and
# prints how many inputs each executed. Fails, naming the input that broke it, when a target
# panics or trips one of its assertions.
#
# - cargo-fuzz comes from scripts/ensure-cargo-fuzz.sh (built once).
# - The targets are built without a sanitizer (`-s none`), which the stable toolchain can do:
#   the code under test is safe Rust, so a bug shows as a panic, which libFuzzer reports.
# - The build and what the fuzzer learns are kept under $DAPR_TODO_CACHE/fuzz (default
#   ~/.cache/dapr-todo): a clean clone does not rebuild the instrumented dependencies, and
#   each run starts from the inputs earlier runs found, after the committed seeds
#   (fuzz/corpus/<target>/, and for the delivery reader the published event examples).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${FUZZ_SECONDS:-60}"
CACHE="${DAPR_TODO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dapr-todo}/fuzz"
TARGETS=(read_todo_event if_match cursor timestamp)
cargo_fuzz=$(scripts/ensure-cargo-fuzz.sh | tail -n 1)

export CARGO_TARGET_DIR="$CACHE/target"
cd fuzz
for target in "${TARGETS[@]}"; do
  "$cargo_fuzz" build --sanitizer none "$target" >&2
done
failed=0
for target in "${TARGETS[@]}"; do
  learned="$CACHE/corpus/$target"
  mkdir -p "$learned"
  seeds=("corpus/$target")
  if [ "$target" = read_todo_event ]; then
    seeds+=(../schemas/events/*/examples)
  fi
  log="$CACHE/$target.log"
  if "$cargo_fuzz" run --sanitizer none "$target" "$learned" "${seeds[@]}" -- \
      -max_total_time="$SECONDS_EACH" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    corpus=$(ls "$learned" | wc -l)
    echo "fuzz $target: $runs executions in ${SECONDS_EACH} s, nothing found; corpus $corpus inputs"
  else
    failed=1
    echo "fuzz $target: FAILED; the input is in fuzz/artifacts/$target/. The end of its log ($log):" >&2
    grep -v '^ *[0-9]*: \|^ *at ' "$log" | tail -n 25 >&2
  fi
done
exit "$failed"
