#!/usr/bin/env bash
# Compress a model with a recipe, then evaluate the original and the merged model on N CPU processes.
#
#   recipes/launch/compress_and_evaluate.sh MODEL RECIPE OUTPUT_DIR [evaluate options...]
#   recipes/launch/compress_and_evaluate.sh whisper-tiny-en whisper runs/whisper --dataset librivox
#
# The merge itself runs in one process (it is a few seconds of clustering); both evaluations run under
# `accelerate launch` through evaluate.sh and write their reports to OUTPUT_DIR/eval-{before,after}.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
model="$1"; recipe="$2"; output="$3"; shift 3
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
hf-token-merge compress --model "$model" --recipe "$recipe" --output-dir "$output"
"$here/evaluate.sh" --model "$model" --output-dir "$output/eval-before" "$@"
"$here/evaluate.sh" --model "$output/model" --output-dir "$output/eval-after" "$@"
echo "before: $output/eval-before  after: $output/eval-after  model: $output/model"
