"""Both merges together on the codec speech-LLM (issue 17, part 4): the budgeted vocabulary merge (the
`reference_codec` recipe) plus one sequence merge (`--stage`, chosen on dev), reported on one split.

Four evaluations of the same utterances, each paired against the unmerged model:
1. no merge;
2. the sequence merge alone (installed, measured, removed);
3. the vocabulary merge alone (`apply_token_merge` with the recipe);
4. both (the sequence merge installed on the vocabulary-merged model).

Each row gives parameters, safetensors bytes, analytic prefill FLOPs and ASR WER (4 beams) with its paired 95 %
bootstrap interval. Prefill FLOPs follow `hf_token_merge.sequence.flops`; the vocabulary merge changes them only
through the LM head's product at the last position, over its merged rows. Writes `combined.json` and `combined.md`.

    python recipes/speech_llm/combined.py --output-dir runs/combined --stage 0:0.9:1
    python recipes/speech_llm/combined.py --output-dir runs/smoke --limit 4 --stage 3:0.9:3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hf_token_merge import apply_token_merge, load_recipe
from hf_token_merge.analysis.budget import with_records
from hf_token_merge.analysis.records import difference_cell, paired_differences, split_records
from hf_token_merge.codec_job import codec_asr_wer
from hf_token_merge.evaluation.compare import bytes_on_disk
from hf_token_merge.reference.codec_corpus import load_codec_corpus
from hf_token_merge.reference.codec_llm import load_codec_speech_llm
from hf_token_merge.sequence import MergeStage, SequenceMergeConfig, apply_sequence_merge
from hf_token_merge.tables import markdown_table

RECIPE = "reference_codec"


def parse_stage(text: str) -> MergeStage:
    """`LAYER:TAU:WINDOW` -> an Affinity Pooling stage (e.g. `0:0.9:1`, the conservative input stage)."""
    try:
        layer, threshold, window = text.split(":")
        return MergeStage(layer=int(layer), threshold=float(threshold), window=int(window))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LAYER:TAU:WINDOW, e.g. 0:0.9:1 ({error})") from None


def measure(model, tokenizer, data, sequence: SequenceMergeConfig | None) -> tuple[dict, dict, tuple[float, ...]]:
    """ASR WER (metrics, records) and, with `sequence` installed, the `(without, with)` sequence merge prefill FLOPs
    of the model as it is (a vocabulary-merged LM head counts its merged rows)."""

    def evaluate():
        result = codec_asr_wer(model, tokenizer, data, show_progress=True)
        return split_records(with_records(result, wer=result.wer))

    if sequence is None:
        return (*evaluate(), ())
    with apply_sequence_merge(model, sequence, tokenizer=tokenizer) as handle:
        metrics, records = evaluate()
        return metrics, records, handle.prefill_flops()


def run(args: argparse.Namespace) -> dict:
    """The four rows of the study, as a JSON-ready dict."""
    torch.set_num_threads(args.threads)
    data = load_codec_corpus(args.split)
    data = data.select(range(min(args.limit, len(data)))) if args.limit else data
    sequence = SequenceMergeConfig(stages=args.stage, position_strategy=args.position_strategy, preset="reference")
    vocabulary = load_recipe(RECIPE).config
    model, tokenizer = load_codec_speech_llm(args.model)
    parameters, size = model.num_parameters(), bytes_on_disk(model)
    rows, started = [], time.perf_counter()

    def add(name: str, metrics: dict, records: dict | None, flops_ratio: float) -> None:
        rows.append({
            "name": name, "parameters": parameters, "safetensors_bytes": size, "flops_ratio": flops_ratio,
            "wer": metrics["wer"], "difference": paired_differences(baseline, records)["wer"] if records else None,
        })  # fmt: skip

    metrics, baseline, _ = measure(model, tokenizer, data, None)
    add("no merge", metrics, None, 1.0)
    metrics, records, (full, merged) = measure(model, tokenizer, data, sequence)
    add("sequence merge", metrics, records, merged / full)

    result = apply_token_merge(model, vocabulary, tokenizer=tokenizer)
    parameters, size = result.parameters_after, bytes_on_disk(model)
    metrics, records, _ = measure(model, tokenizer, data, None)
    both_metrics, both_records, (vocabulary_only, merged) = measure(model, tokenizer, data, sequence)
    # the prompts are the same, so the FLOPs of the vocabulary merge alone come from the last run's baseline
    add("vocabulary merge", metrics, records, vocabulary_only / full)
    add("both", both_metrics, both_records, merged / full)

    settings = {key: value for key, value in vars(args).items() if key != "stage"}
    return {"settings": settings, "recipe": vocabulary.to_dict(), "sequence": sequence.to_dict(),
            "utterances": len(data), "rows": rows, "seconds": time.perf_counter() - started}  # fmt: skip


def combined_markdown(study: dict) -> str:
    """The study's table: parameters, bytes, prefill FLOPs and WER with the paired interval of each change."""
    first = study["rows"][0]
    table = [
        [
            row["name"],
            f"{row['parameters']:,} ({row['parameters'] / first['parameters']:.1%})",
            f"{row['safetensors_bytes']:,} ({row['safetensors_bytes'] / first['safetensors_bytes']:.1%})",
            f"{row['flops_ratio']:.3%}",  # the vocabulary merge alone saves a few thousandths of a percent
            f"{row['wer']:.4f}",
            difference_cell(row["difference"]),
        ]
        for row in study["rows"]
    ]
    header = ["merge", "parameters", "safetensors bytes", "prefill FLOPs", "ASR WER", "Δ WER (95 % CI)"]
    return (
        f"# Both merges together (codec speech-LLM, {study['settings']['split']} split, {study['utterances']} "
        f"utterances, ASR with 4 beams)\n\n{markdown_table(header, table)}\n"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--model", default=None, help="codec speech-LLM folder; default: the bundled one")
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--limit", type=int, default=None, help="only the first N utterances")
    parser.add_argument(
        "--stage", type=parse_stage, action="append", required=True, help="LAYER:TAU:WINDOW; repeat for Dual"
    )
    parser.add_argument("--position-strategy", default="first", choices=["first", "mean", "contiguous"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    study = run(args)
    (output / "combined.json").write_text(json.dumps(study, indent=2))
    table = combined_markdown(study)
    (output / "combined.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
