"""The built-in job on the older 512-unit reference speech-LLM (`hf-token-merge run --model units`): analyse ->
merge -> evaluate before and after -> report. The default `hf-token-merge run` is `codec_job.run_codec_job`.

    hf-token-merge run --model units      # or: python -m hf_token_merge.job --model units

It needs nothing but the installed package: the reference speech-LLM, its tokenizer and its held-out test split
(speech units + transcripts) ship inside it. The report (Markdown, HTML with the figures, JSON) and the merged
model go to `outputs/reference-job/` unless another folder is given.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import torch

from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.job_steps import analyse_merge_evaluate, job_folders, write_job_outputs

DEFAULT_OUTPUT_DIR = os.path.join("outputs", "reference-job")


def _continuation_sequences(tokenizer, eval_set: Sequence[dict]) -> list[list[int]]:
    """`<|bos|> <|continue|> units <|eos|>` id sequences: what unit perplexity is measured on."""
    from hf_token_merge.reference.speech_llm import BOS, CONTINUE, EOS, unit_token

    ids = tokenizer.convert_tokens_to_ids
    return [[ids(BOS), ids(CONTINUE), *ids([unit_token(u) for u in row["units"]]), ids(EOS)] for row in eval_set]


def evaluate_reference_wer(model, tokenizer, eval_set: Sequence[dict], show_progress: bool = True):
    """WER of a reference speech-LLM on the ASR task (greedy, batches of 16): a `WerResult`."""
    from hf_token_merge.evaluation import evaluate_wer, unit_prompt_builder
    from hf_token_merge.reference.speech_llm import ASR, TEXT_END, TEXT_START

    builder = unit_prompt_builder(tokenizer, units_column="units", prefix=[ASR], suffix=[TEXT_START])
    return evaluate_wer(
        model,
        list(eval_set),
        tokenizer=tokenizer,
        prompt_builder=builder,
        eos_token_id=tokenizer.convert_tokens_to_ids(TEXT_END),
        batch_size=16,
        show_progress=show_progress,
    )


def evaluate_reference(model, tokenizer, eval_set: Sequence[dict], show_progress: bool = True) -> dict[str, Any]:
    """WER (ASR task) and unit perplexity (continuation task) of a reference speech-LLM on its test split."""
    from hf_token_merge.evaluation import evaluate_perplexity

    wer = evaluate_reference_wer(model, tokenizer, eval_set, show_progress=show_progress)
    perplexity = evaluate_perplexity(model, _continuation_sequences(tokenizer, eval_set), show_progress=show_progress)
    return {"wer": wer, "perplexity": perplexity}


def run_reference_job(
    output_dir: str = DEFAULT_OUTPUT_DIR,
    config: TokenMergeConfig | None = None,
    *,
    limit: int | None = None,
    maps: tuple[str, ...] = ("tsne", "umap"),
    show_progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Analyse, merge, evaluate before and after, and write the report.

    Args:
        output_dir: Where the report, the figures and the merged model go.
        config: The merge; defaults to the `reference` recipe (`recipes/reference.yaml`).
        limit: Evaluate only the first `limit` test utterances (for quick checks).
        maps: The 2-D maps of the analysis ("tsne", "umap").
        show_progress: Show tqdm bars.
        overwrite: Replace `original/` and `merged/` even when hf_token_merge did not write them.

    Returns:
        The numbers of the report (also in `report.json`).
    """
    from hf_token_merge.evaluation.compare import embedding_rows, safetensors_bytes
    from hf_token_merge.evaluation.confidence import compare_records
    from hf_token_merge.evaluation.provenance import provenance_of
    from hf_token_merge.recipes import load_recipe
    from hf_token_merge.reference.speech_llm import load_reference_eval_set, load_reference_speech_llm
    from hf_token_merge.tables import ChangeRow

    original_dir, merged_dir = job_folders(output_dir, overwrite)  # before any work
    config = config or load_recipe("reference").config
    os.makedirs(output_dir, exist_ok=True)
    model, tokenizer = load_reference_speech_llm()
    eval_set = load_reference_eval_set()[:limit]
    inputs = [torch.tensor(ids) for ids in _continuation_sequences(tokenizer, eval_set)]
    run = analyse_merge_evaluate(
        model, tokenizer, config, output_dir, lambda m: evaluate_reference(m, tokenizer, eval_set, show_progress),
        inputs=inputs, maps=maps, show_progress=show_progress, overwrite=overwrite,
    )  # fmt: skip
    before, after, result = run.before, run.after, run.result
    difference = compare_records(before["wer"].predictions, after["wer"].predictions)
    record = provenance_of(
        run.merged,
        eval_set,
        dataset_name="reference speech-LLM synthetic test split",
        split="test",
        units=difference.units,
        generation={"decoding": "greedy", "batch_size": 16},
    )
    rows = [
        ChangeRow("WER (test split)", before["wer"].wer, after["wer"].wer, ".4f", difference.interval_text(1, "+.4f")),
        ChangeRow("unit perplexity", before["perplexity"].perplexity, after["perplexity"].perplexity, ".3f"),
        ChangeRow("embedding rows", embedding_rows(model), embedding_rows(run.merged), ",d"),
        ChangeRow("parameters", result.parameters_before, result.parameters_after, ",d"),
        ChangeRow("safetensors bytes", safetensors_bytes(original_dir), safetensors_bytes(merged_dir), ",d"),
    ]
    intro = (
        f"Evaluated on the {len(eval_set)}-utterance held-out synthetic test split (greedy ASR; unit perplexity "
        "on the continuation task).\n\n"
    )
    extra = {"utterances": len(eval_set), "wer_difference": difference.to_dict()}
    return write_job_outputs(output_dir, "Reference speech-LLM: merge report", intro, run, config, rows, extra, record)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m hf_token_merge.job [--output-dir DIR] [--model codec|units]`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR)
    parser.add_argument("--overwrite", action="store_true", help="replace original/ and merged/ written elsewhere")
    parser.add_argument("--model", choices=("codec", "units"), default="codec", help="units: the 512-unit model")
    args = parser.parse_args(argv)
    if args.model == "units":
        run_reference_job(args.output_dir, overwrite=args.overwrite)
    else:
        from hf_token_merge.codec_job import run_codec_job

        run_codec_job(args.output_dir, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
