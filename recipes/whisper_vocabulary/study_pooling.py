"""Encoder-frame pooling of Whisper tiny.en (Affinity Pooling before cross-attention) on speech nobody tuned on.

Every run decodes from the cached encoder outputs of `study_sets.py` (pooling sits after the encoder, so the
encoder's output is the same with or without it) through `apply_encoder_merge`, in one of four forms:

* `plain`: the method as before issue 16;
* `proportional`: `proportional_attention=True` (a pooled frame's cross-attention score gets `+ log(size)`);
* `split`: `split_at_audio_end=True` (no group spans the end of the real audio);
* `both`.

`tune` runs thresholds x forms on the dev subset; `report` runs the chosen (threshold, form) pairs on the report
sets, per voice, with paired bootstrap intervals against the unpooled baseline and the frames kept (of all
1,500 per utterance, and of the real-audio frames).

    PYTHONPATH=. python recipes/whisper_vocabulary/study_pooling.py tune --thresholds 0.99 0.97 0.95 \
        --forms plain both
    PYTHONPATH=. python recipes/whisper_vocabulary/study_pooling.py report --runs plain:0.99 both:0.99 \
        --sets everyday librivox test --output pooling_report.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_sets as S  # noqa: E402

# every option spelled out: `apply_encoder_merge`'s defaults changed with this study (proportional attention is on)
FORMS = {
    "plain": {"proportional_attention": False, "split_at_audio_end": False},
    "proportional": {"proportional_attention": True, "split_at_audio_end": False},
    "split": {"proportional_attention": False, "split_at_audio_end": True},
    "both": {"proportional_attention": True, "split_at_audio_end": True},
}


def pooled_run(model, processor, name: str, form: str, threshold: float, spelling) -> tuple[list[dict], dict]:
    """Records of a set decoded with pooled frames, and the frame counts."""
    from hf_token_merge.sequence import apply_encoder_merge

    base = S.baseline(name)
    hidden = S.cached_encoder(name, base)
    frames = [r["frames"] for r in base]
    kept_real = []
    with apply_encoder_merge(model, threshold, **FORMS[form]) as handle:
        texts, _ = S.decode_cached(model, processor, hidden, frames)
        retention = handle.retention
    # frames kept per utterance, recomputed without the decoder (the handle sums over batches)
    import numpy as np
    import torch

    from hf_token_merge.sequence.grouping import affinity_groups, split_groups_at

    kept_all = []
    for array, count in zip(hidden, frames, strict=True):
        h = torch.from_numpy(array)[None]
        valid = torch.ones(1, h.shape[1], dtype=torch.bool)
        group = affinity_groups(h, valid, valid, threshold, 1)
        end = (count + 1) // 2
        if FORMS[form].get("split_at_audio_end"):
            group = split_groups_at(group, torch.tensor([end]))
        kept_all.append(int(group.max()) + 1)
        kept_real.append(int(group[0, end - 1]) + 1)  # groups that hold real-audio frames
    stats = {
        "retention": retention,
        "frames_kept_mean": float(np.mean(kept_all)),
        "real_frames_mean": float(np.mean([(c + 1) // 2 for c in frames])),
        "groups_with_real_audio_mean": float(np.mean(kept_real)),
    }
    return S.records(S.load_set(name), texts, spelling), stats


def run(args, model, processor) -> None:
    from hf_token_merge.evaluation.confidence import compare_records
    from hf_token_merge.evaluation.text import spelling_map_of

    spelling = spelling_map_of(processor)
    if args.command == "tune":
        runs = [(form, t) for t in args.thresholds for form in args.forms]
        sets = ["dev"]
    else:
        runs = [(spec.split(":")[0], float(spec.split(":")[1])) for spec in args.runs]
        sets = args.sets
    out = []
    for name in sets:
        base = S.baseline(name)
        rows = S.load_set(name)
        for form, threshold in runs:
            start = time.perf_counter()
            after, stats = pooled_run(model, processor, name, form, threshold, spelling)
            for group, index in S.groups_of(name, rows).items():
                diff = compare_records([base[i] for i in index], [after[i] for i in index])
                result = {"set": group, "form": form, "threshold": threshold, **stats, **diff.to_dict()}
                result["delta_points"] = 100 * diff.difference
                out.append(result)
                print(
                    f"{group} {form} tau {threshold}: frames kept {stats['retention']:.3f} "
                    f"(real-audio groups {stats['groups_with_real_audio_mean']:.0f} of "
                    f"{stats['real_frames_mean']:.0f} frames); WER {diff.before:.4f} -> {diff.after:.4f}, "
                    f"{diff.summary()}",
                    flush=True,
                )
            print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    if args.command == "tune":
        trials = [r for r in out if r["set"] == "dev"]
        for form, trial in S.choose_within_budget(trials, args.max_wer_increase, "retention", "form").items():
            print(
                f"chosen on dev for {form}: tau {trial['threshold']} (frames kept {trial['retention']:.3f}), "
                f"{trial['delta_points']:+.2f} points",
                flush=True,
            )
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tune")
    p.add_argument("--thresholds", type=float, nargs="+", required=True)
    p.add_argument("--forms", nargs="+", default=list(FORMS), choices=list(FORMS))
    p.add_argument("--max-wer-increase", type=float, default=0.5, help="dev budget in WER points for the choice")
    p.add_argument("--output")
    p = sub.add_parser("report")
    p.add_argument("--runs", nargs="+", required=True, help="FORM:THRESHOLD, e.g. both:0.99")
    p.add_argument("--sets", nargs="+", default=["everyday", "librivox", "test"])
    p.add_argument("--output")
    args = parser.parse_args()

    import torch

    from hf_token_merge.reference import load_whisper_tiny_en

    torch.set_num_threads(1)
    model, processor = load_whisper_tiny_en()
    run(args, model, processor)


if __name__ == "__main__":
    main()
