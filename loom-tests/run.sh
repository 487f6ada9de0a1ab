#!/usr/bin/env bash
# Runs every loom model of segment-accountant in release mode with debug
# assertions, printing each model's explored-interleaving count.
#
#   loom-tests/run.sh                 # all models (LOOM_MAX_PREEMPTIONS defaults to 2)
#   loom-tests/run.sh --seeded-bugs   # expect each seeded bug to be caught by some model
#
# Exits non-zero if a model fails (normal mode) or a seeded bug goes
# uncaught (seeded-bugs mode).
set -euo pipefail
cd "$(dirname "$0")/.."

export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
# `seeded_bugs` compiles the deliberately broken variants (src/seeded.rs);
# each stays off unless SEGMENT_ACCOUNTANT_SEEDED_BUG names it.
export RUSTFLAGS="--cfg loom --cfg crossbeam_loom --cfg seeded_bugs -C debug-assertions"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"
# loom prints its own backtraces on failure; keep them short.
export RUST_BACKTRACE=0

MODELS=(
  model_1_epoch_deferral
  model_2_cross_segment_replace
  model_3_concurrent_stabilize
  model_4_double_emptying
  model_5_next_next_free
  model_6_sequencer
  model_7_clean_vs_reuse
  model_8_pause_vs_next
  model_9_same_lsn_twice
)

build() {
  cargo test --release -p loom-tests --test models --no-run 2>&1 | tail -n 2
}

run_model() { # name -> exit status of that model alone
  cargo test --release -p loom-tests --test models -q -- --exact "$1" --nocapture --test-threads=1
}

echo "loom: LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS"
build

if [ "${1:-}" != "--seeded-bugs" ]; then
  failed=0
  for m in "${MODELS[@]}"; do
    start=$(date +%s)
    if out=$(run_model "$m" 2>&1); then
      echo "$out" | grep -E '^model ' || true
      echo "  ok: $m ($(( $(date +%s) - start ))s)"
    else
      echo "$out" | tail -n 30
      echo "  FAILED: $m"
      failed=1
    fi
  done
  exit $failed
fi

# Seeded-bug mode: each bug, with the models most likely to catch it first.
declare -A FIRST=(
  [relaxed-combiner-token]="model_3_concurrent_stabilize"
  [skip-epoch-deferral]="model_1_epoch_deferral"
  [claim-with-store]="model_5_next_next_free"
  [pause-without-waiting]="model_8_pause_vs_next"
  [shrink-without-claim]="model_6_sequencer"
)
uncaught=0
for bug in relaxed-combiner-token skip-epoch-deferral claim-with-store pause-without-waiting shrink-without-claim; do
  caught=""
  order=("${FIRST[$bug]}")
  for m in "${MODELS[@]}"; do [ "$m" != "${FIRST[$bug]}" ] && order+=("$m"); done
  for m in "${order[@]}"; do
    if ! out=$(SEGMENT_ACCOUNTANT_SEEDED_BUG="$bug" run_model "$m" 2>&1); then
      caught="$m"
      why=$(echo "$out" | grep -A1 -m1 'panicked at' | tail -n 1)
      break
    fi
  done
  if [ -n "$caught" ]; then
    echo "seeded bug $bug: caught by $caught"
    echo "    ($why)"
  else
    echo "seeded bug $bug: NOT CAUGHT"
    uncaught=1
  fi
done
exit $uncaught
