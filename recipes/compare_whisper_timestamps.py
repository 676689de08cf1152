"""Merge Whisper tiny.en's 1500 timestamp tokens (<|0.02|> .. <|30.00|>) into 150 rows and compare, on the built-in
LibriVox utterances, WER (transcription without timestamps never uses these tokens) and the timestamps themselves
(`generate(return_timestamps=True)`): segment counts, and how far the merged model's segment boundaries lie from
the unmerged model's and from the pauses in the audio.

    python recipes/compare_whisper_timestamps.py runs/whisper-timestamps
    accelerate launch --config_file recipes/launch/accelerate_cpu_2proc.yaml \
        recipes/compare_whisper_timestamps.py runs/whisper-timestamps      # same numbers, 2 processes (WER part)

Writes comparison.json, comparison.md, both sides' predictions, and timestamps.json / timestamps.md to the output
folder.
"""

from __future__ import annotations

import json
import os
import sys

from accelerate import PartialState

from hf_token_merge import TokenMergeConfig, apply_token_merge
from hf_token_merge.evaluation import compare_before_after
from hf_token_merge.evaluation.timestamps import compare_timestamps, inner_boundaries_in_pauses, transcribe_segments
from hf_token_merge.reference import decode_audio, load_librivox_sonnets, load_whisper_tiny_en
from hf_token_merge.reference.librivox import find_pauses


def timestamp_table(original, merged, processor, dataset) -> tuple[str, dict]:
    """Segments of both models on `dataset`, scored against the unmerged model's and against the audio's pauses."""
    audios = [decode_audio(row["audio"]) for row in dataset]
    before = transcribe_segments(original, processor, audios, batch_size=4)
    after = transcribe_segments(merged, processor, audios, batch_size=4)
    score = compare_timestamps(before, after, tolerance=0.5)
    pauses = [find_pauses(audio) for audio in audios]
    in_pause = {}
    for name, segments in (("before", before), ("after", after)):
        counts = [inner_boundaries_in_pauses(s, p) for s, p in zip(segments, pauses, strict=True)]
        in_pause[name] = [sum(inside for inside, _ in counts), sum(inner for _, inner in counts)]
    report = {
        "score": score.to_dict(),
        "inner_boundaries_in_pause": in_pause,
        "utterances": [
            {
                "id": row["id"],
                "before": [[s.start, s.end] for s in b],
                "after": [[s.start, s.end] for s in a],
            }
            for row, b, a in zip(dataset, before, after, strict=True)
        ],
    }
    lines = [
        "| timestamps (LibriVox, 12 utterances) | before | after |",
        "|---|---:|---:|",
        f"| segments | {score.reference_segments} | {score.predicted_segments} |",
        f"| utterances with the unmerged model's segment count | {score.utterances} | {score.same_count} |",
        f"| mean boundary error vs the unmerged model (s) | 0.00 | {score.boundary_error:.2f} |",
        f"| boundaries within {score.tolerance} s of the unmerged model's | 100 % "
        f"| {100 * score.boundary_recall:.0f} % |",
        "| inner boundaries inside a pause of the audio (±0.25 s) | "
        f"{in_pause['before'][0]} of {in_pause['before'][1]} | {in_pause['after'][0]} of {in_pause['after'][1]} |",
    ]
    return "\n".join(lines) + "\n", report


def main(output_dir: str) -> None:
    original, processor = load_whisper_tiny_en()
    merged, _ = load_whisper_tiny_en()
    config = TokenMergeConfig(token_id_range=(50364, 51864), allow_special_tokens=True, n_clusters=150)
    apply_token_merge(merged, config, show_progress=False)
    dataset = load_librivox_sonnets()
    comparison = compare_before_after(
        original, merged, dataset, processor=processor, batch_size=4, output_dir=output_dir
    )
    if not PartialState().is_main_process:
        return
    print(comparison.to_markdown())
    table, report = timestamp_table(original, merged, processor, dataset)
    print(table)
    with open(os.path.join(output_dir, "timestamps.md"), "w", encoding="utf-8") as handle:
        handle.write(table)
    with open(os.path.join(output_dir, "timestamps.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/whisper-timestamps")
