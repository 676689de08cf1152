#!/usr/bin/env bash
# Evaluate a model on 2 CPU processes with accelerate (sharded data, identical metrics to 1 process).
#
#   recipes/launch/evaluate.sh [evaluate options...]
#   recipes/launch/evaluate.sh --model whisper-tiny-en --dataset librivox --output-dir runs/whisper-2proc
#
# Any `hf-token-merge evaluate` option can be passed; --device cpu is added. Set NUM_PROCESSES to change
# the process count and MAIN_PROCESS_PORT if 29500 is taken.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec accelerate launch \
    --config_file "$here/accelerate_cpu_2proc.yaml" \
    --num_processes "${NUM_PROCESSES:-2}" \
    --main_process_port "${MAIN_PROCESS_PORT:-29500}" \
    -m hf_token_merge.cli.main evaluate --device cpu "$@"
