"""Merge Whisper tiny.en's 1500 timestamp tokens (<|0.02|> .. <|30.00|>) into 150 rows and compare WER
before/after on the built-in LibriVox utterances (transcription without timestamps never uses them).

    python recipes/compare_whisper_timestamps.py runs/whisper-timestamps
    accelerate launch --config_file recipes/launch/accelerate_cpu_2proc.yaml \
        recipes/compare_whisper_timestamps.py runs/whisper-timestamps      # same numbers, 2 processes

Writes comparison.json, comparison.md and both sides' predictions to the output folder.
"""

from __future__ import annotations

import sys

from accelerate import PartialState

from hf_token_merge import TokenMergeConfig, apply_token_merge
from hf_token_merge.evaluation import compare_before_after
from hf_token_merge.reference import load_librivox_sonnets, load_whisper_tiny_en


def main(output_dir: str) -> None:
    original, processor = load_whisper_tiny_en()
    merged, _ = load_whisper_tiny_en()
    config = TokenMergeConfig(token_id_range=(50364, 51864), allow_special_tokens=True, n_clusters=150)
    apply_token_merge(merged, config, show_progress=False)
    comparison = compare_before_after(
        original, merged, load_librivox_sonnets(), processor=processor, batch_size=4, output_dir=output_dir
    )
    if PartialState().is_main_process:
        print(comparison.to_markdown())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/whisper-timestamps")
