#!/usr/bin/env bash
# Runs every loom model of segment-accountant in release mode with debug
# assertions, printing each model's explored-interleaving count and time.
#
#   loom-tests/run.sh                 # all models (LOOM_MAX_PREEMPTIONS defaults to 2;
#                                     # a few heavy models cap it lower)
#   loom-tests/run.sh --seeded-bugs   # expect each seeded bug to be caught by some model
#   loom-tests/run.sh --deep          # before a release: bound 3 (or LOOM_MAX_PREEMPTIONS),
#                                     # no per-model caps; hours, not minutes
#   loom-tests/run.sh model_10_link_vs_seal ...   # only the named models
#
# Exits non-zero if a model fails (normal and deep modes) or a seeded bug
# goes uncaught (seeded-bugs mode).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=normal
case "${1:-}" in
  --seeded-bugs) mode=seeded; shift ;;
  --deep) mode=deep; shift; export LOOM_DEEP=1
          export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}" ;;
esac

export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
# `seeded_bugs` compiles the deliberately broken variants (src/seeded.rs);
# each stays off unless SEGMENT_ACCOUNTANT_SEEDED_BUG names it.
export RUSTFLAGS="--cfg loom --cfg crossbeam_loom --cfg seeded_bugs -C debug-assertions"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"
# loom prints its own backtraces on failure; keep them short.
export RUST_BACKTRACE=0

# Every model, as test-file:function.
MODELS=(
  models:model_1_epoch_deferral
  models:model_2_cross_segment_replace
  models:model_3_concurrent_stabilize
  models:model_4_double_emptying
  models:model_5_next_next_free
  models:model_6_sequencer
  models:model_7_clean_vs_reuse
  models:model_8_pause_vs_next
  models:model_9_same_lsn_twice
  models:model_10_link_vs_seal
  models:model_11_replace_vs_seal_of_new
  models:model_12_replace_vs_seal_of_old
  models:model_13_next_vs_seal_of_its_lsn
  models:model_14_fresh_next_vs_covering_stabilize
  models:model_15_clean_vs_replace_of_pick
  models:model_16_drain_start_vs_clean
  models:model_17_audit_vs_stabilize
  models:model_18_heads_out_of_order
  models:model_19_table_growth_vs_lookup
  models:model_20_shrink_vs_pause
  models:model_21_failed_truncation_retried
  models:model_22_recovered_frees_vs_stabilize_and_next
  models:model_23_queue_stand_in_is_not_stronger
  models:model_24_free_tree_claim_vs_free
  models:model_25_free_tree_claim_vs_claim
  models:model_26_stabilize_bound_vs_next_and_seal
  models:model_27_landing_sets_the_bit_before_the_word
  models:model_28_waiting_drain_start_vs_seal_bound
  unwind:model_u1_panicking_pass_hands_the_token_on
)

if [ $# -gt 0 ]; then
  wanted=("$@")
  selected=()
  for m in "${MODELS[@]}"; do
    for w in "${wanted[@]}"; do [ "${m#*:}" = "$w" ] && selected+=("$m"); done
  done
  MODELS=("${selected[@]}")
fi

build() {
  cargo test --release -p loom-tests --tests --no-run 2>&1 | tail -n 2
}

run_model() { # file:name -> exit status of that model alone
  cargo test --release -p loom-tests --test "${1%%:*}" -q -- --exact "${1#*:}" --nocapture --test-threads=1
}

echo "loom: LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS${LOOM_DEEP:+ (deep: no per-model caps)}"
build

if [ "$mode" != seeded ]; then
  failed=0
  for m in "${MODELS[@]}"; do
    start=$(date +%s)
    if out=$(run_model "$m" 2>&1); then
      echo "$out" | grep -E '^model ' || true
      echo "  ok: ${m#*:} ($(( $(date +%s) - start ))s)"
    else
      echo "$out" | tail -n 30
      echo "  FAILED: ${m#*:}"
      failed=1
    fi
  done
  exit $failed
fi

# Seeded-bug mode: each bug, with the model most likely to catch it first.
declare -A FIRST=(
  [relaxed-combiner-token]="models:model_3_concurrent_stabilize"
  [skip-epoch-deferral]="models:model_1_epoch_deferral"
  [claim-with-store]="models:model_5_next_next_free"
  [pause-without-waiting]="models:model_8_pause_vs_next"
  [shrink-without-claim]="models:model_6_sequencer"
  [replace-check-outside-lock]="models:model_11_replace_vs_seal_of_new"
  [check-outside-lock]="models:model_10_link_vs_seal"
  [publish-after-remove]="models:model_13_next_vs_seal_of_its_lsn"
  [check-before-reserve]="models:model_13_next_vs_seal_of_its_lsn"
  [skip-announce]="models:model_14_fresh_next_vs_covering_stabilize"
  [queue-orders-too-much]="models:model_23_queue_stand_in_is_not_stronger"
  [retire-without-recheck]="models:model_24_free_tree_claim_vs_free"
  [flag-before-record]="models:model_12_replace_vs_seal_of_old"
  [settle-without-refresh]="models:model_12_replace_vs_seal_of_old"
  [drain-before-seal-bound]="models:model_28_waiting_drain_start_vs_seal_bound"
  [bound-before-set]="models:model_26_stabilize_bound_vs_next_and_seal"
  [free-word-before-bit]="models:model_27_landing_sets_the_bit_before_the_word"
)
BUGS=(relaxed-combiner-token skip-epoch-deferral claim-with-store pause-without-waiting
      shrink-without-claim replace-check-outside-lock check-outside-lock publish-after-remove
      check-before-reserve skip-announce queue-orders-too-much retire-without-recheck
      flag-before-record settle-without-refresh bound-before-set free-word-before-bit
      drain-before-seal-bound)
uncaught=0
caught_count=0
for bug in "${BUGS[@]}"; do
  caught=""
  order=("${FIRST[$bug]}")
  for m in "${MODELS[@]}"; do [ "$m" != "${FIRST[$bug]}" ] && order+=("$m"); done
  for m in "${order[@]}"; do
    if ! out=$(SEGMENT_ACCOUNTANT_SEEDED_BUG="$bug" run_model "$m" 2>&1); then
      caught="${m#*:}"
      # `|| true`: grep -m1 stops reading early, and under pipefail the
      # echo's SIGPIPE would end the script.
      why=$(echo "$out" | grep -A1 -m1 'panicked at' | tail -n 1) || true
      break
    fi
  done
  if [ -n "$caught" ]; then
    echo "seeded bug $bug: caught by $caught"
    echo "    ($why)"
    caught_count=$((caught_count + 1))
  else
    echo "seeded bug $bug: NOT CAUGHT"
    uncaught=1
  fi
done
echo "seeded bugs caught: $caught_count of ${#BUGS[@]}"
exit $uncaught
