#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (docs/security.md, "Fuzzing"), one after the other on one core.
#
#   .ci/fuzz.sh [SECONDS [RUNS]] [TARGET...]   each target for SECONDS (default 60) or RUNS
#                                             executions, whichever comes first; inputs that
#                                             reach new code are added to fuzz/corpus/TARGET
#   .ci/fuzz.sh --smoke                       every target for 10,000 executions (at most 30 s)
#                                             from the kept corpus, leaving the tree as it was
#
# Works on the stable toolchain: `--sanitizer none` (AddressSanitizer needs nightly flags; the
# crate forbids `unsafe`), `-O` with `-a` (optimised, with debug assertions and overflow checks).
# Installs cargo-fuzz if it is missing. Set FUZZ_LOGS=DIR to keep each target's output there.
# A failing target leaves its input in fuzz/artifacts/TARGET; the others still run, and the
# script exits non-zero. Minimise a grown corpus before committing it:
#   (cd fuzz && cargo fuzz cmin --sanitizer none -O -a TARGET -- -dict=dicts/TARGET.dict)
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=false
seconds=60
runs=-1
if [ "${1:-}" = "--smoke" ]; then
  smoke=true
  seconds=30
  runs=10000
  shift
else
  if [[ "${1:-}" =~ ^[0-9]+$ ]]; then seconds=$1; shift; fi
  if [[ "${1:-}" =~ ^[0-9]+$ ]]; then runs=$1; shift; fi
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing: cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

flags=(--sanitizer none -O -a)
cd fuzz
if (($#)); then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build "${flags[@]}"

scratch=""
if $smoke; then
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
fi

failed=()
for target in "${targets[@]}"; do
  corpus=(corpus/"$target")
  # The smoke run adds what it finds to a scratch folder and only reads the kept corpus.
  if $smoke; then corpus=("$scratch/$target" corpus/"$target"); fi
  mkdir -p "${corpus[@]}"
  options=(-max_total_time="$seconds" -runs="$runs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  if [ -f "dicts/$target.dict" ]; then options+=(-dict="dicts/$target.dict"); fi
  echo "== $target"
  log=/dev/stdout
  if [ -n "${FUZZ_LOGS:-}" ]; then
    mkdir -p "$FUZZ_LOGS"
    log="$FUZZ_LOGS/$target.log"
  fi
  if ! cargo fuzz run "${flags[@]}" "$target" "${corpus[@]}" -- "${options[@]}" >"$log" 2>&1; then
    failed+=("$target")
    [ "$log" = /dev/stdout ] || tail -n 40 "$log"
  elif [ "$log" != /dev/stdout ]; then
    grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs)' "$log" || true
  fi
done

if ((${#failed[@]})); then
  echo "fuzz targets failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
