"""How far the codec speech-LLM's speech-token rows merge (issue 17, part 1 and 2): sweep, budgets, cluster structure.

The rules of every number here:
* the grid and the budget searches run on the **dev** split (its first `--asr-limit` / `--tts-limit` utterances);
  the budgeted merges are reported on the **test** split (`--report-asr-limit` / `--report-tts-limit`), with paired
  bootstrap intervals (1,000 resamples, seed 0);
* calibration counts are the codes of the **train** split: rows whose code never occurs there are counted apart,
  and merges are given as a share of all 4,375 speech rows and of the used ones.

Stages (`--stages`, all by default):
1. `sweep`: ASR WER, TTS WER and KL against rows removed on dev, for k-means, frequency and the random control with
   `merge_rule=mean`, k-means with `weighted_mean`, and `--thresholds` points of threshold merging; one PNG per
   metric with confidence bands (`sweep/`).
2. `budget`: the largest k-means merge whose dev WER increase has its 95 % upper bound within `--max-wer-increase`,
   for ASR and for TTS separately, then reported on test (`budget_asr.json`, `budget_tts.json`).
3. `structure`: on the ASR budget's plan, do FSQ lattice neighbours share clusters more often than chance, and are
   the merged rows the rare ones (`structure.md`, `structure.png`).

`study.json` and `study.md` gather the numbers, with the issue's goal (75 % of the used rows within +1 point, upper
bound, both directions) marked as met or not.

    python recipes/speech_llm/merge_study.py --output-dir runs/merge-study
    python recipes/speech_llm/merge_study.py --output-dir runs/smoke --asr-limit 4 --tts-limit 2 \\
        --report-asr-limit 4 --report-tts-limit 2 --ratios 0.5 --strategies random --min-ratio 0.5
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from hf_token_merge import count_tokens, load_recipe
from hf_token_merge.analysis import compress_within_budget, frequency_and_merging, neighbour_sharing, sweep
from hf_token_merge.analysis.budget import describe_eval_set, with_records
from hf_token_merge.analysis.cluster_structure import structure_markdown
from hf_token_merge.analysis.sweep import save_sweep, sweep_markdown, used_rows_removed
from hf_token_merge.codec_job import codec_asr_wer, codec_tts_wer, tts_sequences
from hf_token_merge.evaluation.kl import evaluate_kl
from hf_token_merge.evaluation.tts.evaluate import whisper_asr
from hf_token_merge.reference import load_reference_speech_codec
from hf_token_merge.reference.codec_corpus import load_codec_corpus
from hf_token_merge.reference.codec_llm import CodecSequenceBuilder, load_codec_speech_llm
from hf_token_merge.remap import resolve_selection

GOAL_SHARE = 0.75  # of the used speech rows, merged within the budget's upper bound, in both directions


def first(split: str, count: int):
    """The first `count` utterances of a codec-corpus split."""
    data = load_codec_corpus(split)
    return data.select(range(min(count, len(data))))


def train_code_counts(tokenizer) -> torch.Tensor:
    """How often each token id occurs as a code of the train split: the calibration counts of the study."""
    builder = CodecSequenceBuilder(tokenizer)
    return count_tokens([builder.code_ids(codes) for codes in load_codec_corpus("train")["codes"]], len(tokenizer))


def sweep_evaluation(original, tokenizer, asr_data, tts_data, codec, asr):
    """`model -> metrics` of the sweep: ASR WER, TTS WER (with records, for paired intervals) and KL to `original`."""
    sequences = tts_sequences(tokenizer, asr_data)
    reference = copy.deepcopy(original)  # evaluate_kl refuses one object twice (the baseline point scores 0)

    def evaluate(model):
        asr_result = codec_asr_wer(model, tokenizer, asr_data, show_progress=False)
        tts_result = codec_tts_wer(model, tokenizer, tts_data, codec, asr, show_progress=False)
        kl = evaluate_kl(reference, model, sequences, device="cpu", show_progress=False).mean_kl
        return {
            "asr_wer": asr_result.wer,
            "tts_wer": tts_result.wer,
            "kl": kl,
            "records": {"asr_wer": asr_result.predictions, "tts_wer": tts_result.predictions},
        }

    return evaluate


def direction_evaluation(direction: str, tokenizer, data, codec, asr, name: str):
    """`model -> with_records(wer)` for one direction on one set, labelled so that the budget refuses overlaps."""

    def evaluate(model):
        if direction == "asr":
            result = codec_asr_wer(model, tokenizer, data, show_progress=False)
        else:
            result = codec_tts_wer(model, tokenizer, data, codec, asr, show_progress=False)
        return with_records(result, wer=result.wer)

    return describe_eval_set(evaluate, name, data)


def run_sweep(args, model, tokenizer, config, counts, codec, asr, output: Path) -> dict:
    """Stage 1: the grid on dev."""
    evaluate = sweep_evaluation(
        model, tokenizer, first("dev", args.asr_limit), first("dev", args.tts_limit), codec, asr
    )
    points = sweep(
        model, config.with_stop(merge_rule="mean", n_clusters=1), evaluate, ratios=args.ratios,
        strategies=args.strategies, thresholds=args.thresholds, tokenizer=tokenizer, token_counts=counts,
    )  # fmt: skip
    if args.weighted_mean:
        weighted = sweep(
            model, config.with_stop(merge_rule="weighted_mean", n_clusters=1), evaluate, ratios=args.ratios,
            strategies=["kmeans"], tokenizer=tokenizer, token_counts=counts,
        )  # fmt: skip
        for point in weighted[1:]:
            point.strategy = "kmeans, weighted_mean"
        points += weighted[1:]
    paths = save_sweep(points, str(output / "sweep"))
    return {"points": len(points), "files": paths, "table": sweep_markdown(points)}


def run_budget(args, direction: str, tokenizer, config, counts, codec, asr) -> tuple[dict, object]:
    """Stage 2 for one direction: the largest merge within budget on dev, reported on test."""
    dev_limit, test_limit = (
        (args.asr_limit, args.report_asr_limit) if direction == "asr" else (args.tts_limit, args.report_tts_limit)
    )
    tune = direction_evaluation(direction, tokenizer, first("dev", dev_limit), codec, asr, f"dev ({direction})")
    report = direction_evaluation(direction, tokenizer, first("test", test_limit), codec, asr, f"test ({direction})")
    model, _ = load_codec_speech_llm(args.model)  # merged in place by the search
    selected = resolve_selection(model, config, tokenizer)
    used = int((counts[selected] > 0).sum())
    result = compress_within_budget(
        model, config.with_stop(n_clusters=1), tune, max_wer_increase=args.max_wer_increase, token_counts=counts,
        min_ratio=args.min_ratio, tolerance=args.tolerance, report_evaluate=report, criterion="upper_bound",
        tokenizer=tokenizer,
    )  # fmt: skip
    # n_clusters is the selection's size when nothing fits the budget (no plan)
    used_removed = 0 if result.plan is None else used_rows_removed(result.plan, counts)[1]
    numbers = result.to_dict()
    numbers.update(
        speech_rows=selected.numel(), rows_removed=selected.numel() - result.n_clusters, used_rows=used,
        used_rows_removed=used_removed, used_share_removed=used_removed / used,
    )  # fmt: skip
    return numbers, result.plan


def run_structure(plan, counts: torch.Tensor, codec, output: Path) -> dict:
    """Stage 3: lattice neighbours and frequency on a plan over all speech rows."""
    from hf_token_merge.analysis import plots

    labels = plan.cluster_of_selected
    code_counts = counts[plan.selected_ids]
    used = code_counts > 0
    sharing = neighbour_sharing(labels, codec.config.levels, rows=used)
    frequency = frequency_and_merging(labels, code_counts, rows=used)
    (output / "structure.md").write_text(structure_markdown(sharing, frequency) + "\n", encoding="utf-8")
    plots.cluster_structure(sharing, frequency, str(output / "structure.png"))
    return {"neighbour_sharing": sharing.to_dict(), "frequency": frequency.to_dict()}


def summary_markdown(study: dict) -> str:
    """The study's headline: rows removed within budget per direction, and whether the goal is met."""
    lines = ["# Speech-token rows merged within budget (codec speech-LLM)", ""]
    for direction, budget in study.get("budget", {}).items():
        report = budget["report"]["difference"]
        if budget["rows_removed"] == 0:
            lines.append(f"- **{direction.upper()}**: no merge fits the budget on dev; nothing removed.")
            continue
        lines.append(
            f"- **{direction.upper()}**: {budget['rows_removed']:,} of {budget['speech_rows']:,} speech rows removed "
            f"({budget['rows_removed'] / budget['speech_rows']:.1%}); {budget['used_rows_removed']:,} of "
            f"{budget['used_rows']:,} used rows ({budget['used_share_removed']:.1%}). Test: WER "
            f"{report['before']:.4f} → {report['after']:.4f}, {100 * report['difference']:+.2f} points "
            f"(95 % CI {100 * report['ci_low']:+.2f} to {100 * report['ci_high']:+.2f}; {report['units']:,} words)."
        )
    if "goal" in study:
        goal = study["goal"]
        lines += ["", f"Goal ({GOAL_SHARE:.0%} of the used rows in both directions): **{goal['verdict']}**."]
    if "sweep" in study:
        lines += ["", "## Sweep on dev", "", study["sweep"]["table"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--model", default=None, help="codec speech-LLM folder; default: the bundled one")
    parser.add_argument("--stages", default="sweep,budget,structure")
    parser.add_argument("--asr-limit", type=int, default=100, help="dev utterances for ASR (grid and budget)")
    parser.add_argument("--tts-limit", type=int, default=32, help="dev sentences for TTS (grid and budget)")
    parser.add_argument("--report-asr-limit", type=int, default=600, help="test utterances for ASR")
    parser.add_argument("--report-tts-limit", type=int, default=100, help="test sentences for TTS")
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.5, 0.25, 0.125, 0.0625])
    parser.add_argument("--strategies", nargs="+", default=["kmeans", "frequency", "random"])
    parser.add_argument("--thresholds", nargs="*", type=float, default=[0.9, 0.8, 0.7])
    parser.add_argument("--no-weighted-mean", dest="weighted_mean", action="store_false")
    parser.add_argument("--max-wer-increase", type=float, default=0.01)
    parser.add_argument("--min-ratio", type=float, default=1 / 64)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - {"sweep", "budget", "structure"})
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from sweep, budget, structure")
    if "structure" in stages and "budget" not in stages:
        parser.error("the structure stage reads the ASR budget's plan; add 'budget' to --stages")
    torch.set_num_threads(args.threads)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)

    config = load_recipe("reference_codec").config
    model, tokenizer = load_codec_speech_llm(args.model)
    counts = train_code_counts(tokenizer)
    codec, asr = load_reference_speech_codec(), whisper_asr(features=True)
    study: dict = {"settings": vars(args), "seconds": {}}
    started = time.perf_counter()
    if "sweep" in stages:
        study["sweep"] = run_sweep(args, model, tokenizer, config, counts, codec, asr, output)
        study["seconds"]["sweep"] = time.perf_counter() - started
    plans = {}
    if "budget" in stages:
        study["budget"] = {}
        for direction in ("asr", "tts"):
            begun = time.perf_counter()
            study["budget"][direction], plans[direction] = run_budget(
                args, direction, tokenizer, config, counts, codec, asr
            )
            (output / f"budget_{direction}.json").write_text(json.dumps(study["budget"][direction], indent=2))
            study["seconds"][f"budget_{direction}"] = time.perf_counter() - begun
        shares = [study["budget"][d]["used_share_removed"] for d in ("asr", "tts")]
        study["goal"] = {"shares": shares, "verdict": "met" if min(shares) >= GOAL_SHARE else "not met"}
    if "structure" in stages and plans.get("asr") is not None:
        study["structure"] = run_structure(plans["asr"], counts, codec, output)
    (output / "study.json").write_text(json.dumps(study, indent=2, default=str), encoding="utf-8")
    (output / "study.md").write_text(summary_markdown(study), encoding="utf-8")
    print(summary_markdown(study))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
