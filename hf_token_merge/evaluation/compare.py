"""Evaluate an original and a merged model on the same data and tabulate the change."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.confidence import PairedDifference, compare_records, paired_difference
from hf_token_merge.evaluation.perplexity import evaluate_perplexity
from hf_token_merge.evaluation.provenance import Provenance, model_revision, provenance_of
from hf_token_merge.evaluation.runner import get_accelerator
from hf_token_merge.evaluation.wer import evaluate_wer
from hf_token_merge.remap.apply import model_size
from hf_token_merge.tables import CHANGE_COLUMNS, ChangeRow, change_table, number_format

TABLE_COLUMNS = CHANGE_COLUMNS


def safetensors_bytes(folder: str | os.PathLike[str]) -> int:
    """Total size of the `model*.safetensors` shards in a saved folder (a merge plan beside them is not counted)."""
    files = list(Path(folder).glob("model*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{folder} holds no .safetensors files. Fix: save the model with save_pretrained first."
        )
    return sum(path.stat().st_size for path in files)


def bytes_on_disk(model, path: str | os.PathLike[str] | None = None) -> int:
    """Safetensors bytes of `model`: of `path` if given, else of a temporary `save_pretrained` copy."""
    if path is not None:
        return safetensors_bytes(path)
    with tempfile.TemporaryDirectory(prefix="hf_token_merge_size_") as folder:
        model.save_pretrained(folder)
        return safetensors_bytes(folder)


def embedding_rows(model) -> int:
    """Rows of the input embedding table (merged rows for a merged model)."""
    return int(model.get_input_embeddings().weight.shape[0])


@dataclass
class Comparison:
    """Before/after numbers of `compare_before_after`.

    Attributes:
        task: `"wer"` or `"perplexity"`.
        before: Evaluation result of the original model.
        after: Evaluation result of the merged model.
        changes: One `tables.ChangeRow` per metric (the table's rows; the WER / mean-NLL row carries the interval).
        difference: The paired comparison of the main metric (WER, or mean NLL per token) with its interval.
        provenance: What the numbers were measured on.
    """

    task: str
    before: Any
    after: Any
    changes: list[ChangeRow] = field(default_factory=list)
    difference: PairedDifference | None = None
    provenance: Provenance | None = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """`{"metric", "before", "after", "absolute_change", "relative_change"}` per metric."""
        return [change.to_dict() for change in self.changes]

    def row(self, metric: str) -> dict[str, Any]:
        """The row of one metric."""
        for change in self.changes:
            if change.metric == metric:
                return change.to_dict()
        raise KeyError(metric)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "rows": self.rows,
            "difference": self.difference.to_dict() if self.difference else None,
            "provenance": self.provenance.to_dict() if self.provenance else None,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        """The before/after table (metric, before, after, change with the relative change), as everywhere else."""
        table = change_table(self.changes)
        return table + ("\n" + self.provenance.markdown() if self.provenance is not None else "")

    def save(self, output_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write `comparison.json`, `comparison.md` and each side's predictions/sequences."""
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "comparison.json").write_text(self.to_json() + "\n", encoding="utf-8")
        (folder / "comparison.md").write_text(self.to_markdown(), encoding="utf-8")
        self.before.save(folder, prefix=f"before_{self.task}")
        self.after.save(folder, prefix=f"after_{self.task}")
        return {"json": folder / "comparison.json", "markdown": folder / "comparison.md"}


def _row(metric: str, before: Any, after: Any) -> ChangeRow:
    return ChangeRow(metric, before, after, number_format(before, after))


def quality_rows(task: str, before: Any, after: Any) -> list[ChangeRow]:
    """The metric rows of two evaluation results (`WerResult` or `PerplexityResult`) of one task, with the speed."""
    if task == "wer":
        keys, speed = ("wer", "substitutions", "deletions", "insertions", "hits", "target_words"), "rtfx"
        speed_name = "RTFx (audio s / compute s)"
    else:
        keys, speed = ("perplexity", "mean_nll", "bits_per_token", "token_count"), "tokens_per_second"
        speed_name = "tokens per second"
    rows = [_row(key, before.metrics()[key], after.metrics()[key]) for key in keys]
    return rows + [_row(speed_name, getattr(before, speed), getattr(after, speed))]


def size_rows(original, merged) -> list[ChangeRow]:
    """Embedding rows, parameters and bytes in memory of the original and the merged model."""
    params_before, bytes_before = model_size(original)
    params_after, bytes_after = model_size(merged)
    return [
        _row("embedding rows", embedding_rows(original), embedding_rows(merged)),
        _row("parameters", params_before, params_after),
        _row("bytes in memory", bytes_before, bytes_after),
    ]


def compare_before_after(
    original,
    merged,
    data,
    *,
    task: str | None = None,
    original_path: str | os.PathLike[str] | None = None,
    merged_path: str | os.PathLike[str] | None = None,
    measure_disk: bool = True,
    output_dir: str | os.PathLike[str] | None = None,
    accelerator=None,
    **evaluate_kwargs: Any,
) -> Comparison:
    """Evaluate the original and the merged model on the same data.

    Args:
        original: The model before merging.
        merged: The merged model (a separate object, e.g. merged from a second copy or loaded from disk).
        data: Evaluation data (see `evaluate_wer` / `evaluate_perplexity`).
        task: `"wer"` or `"perplexity"`; default: WER for encoder-decoders, perplexity for causal LMs.
        original_path: Saved folder of the original (its safetensors are summed); default: save to a temp dir.
        merged_path: Saved folder of the merged model; default: save to a temp dir.
        measure_disk: Measure bytes on disk (set False to skip the saves).
        output_dir: Write `comparison.json`, `comparison.md` and predictions there (main process).
        accelerator: An `accelerate.Accelerator`; default: a new one.
        **evaluate_kwargs: Passed to the evaluation function (processor=, tokenizer=, batch_size=, ...).

    Returns:
        A `Comparison` with `.rows`, `.to_json()` and `.to_markdown()`.
    """
    if task is None:
        task = "wer" if getattr(original.config, "is_encoder_decoder", False) else "perplexity"
    if task not in ("wer", "perplexity"):
        raise TokenMergeError(f"Unknown task {task!r}. Fix: use task='wer' or task='perplexity'.")
    accelerator = get_accelerator(accelerator, evaluate_kwargs.get("device"))
    evaluate = evaluate_wer if task == "wer" else evaluate_perplexity
    before = evaluate(original, data, accelerator=accelerator, **evaluate_kwargs)
    after = evaluate(merged, data, accelerator=accelerator, **evaluate_kwargs)

    comparison = Comparison(task, before, after, quality_rows(task, before, after) + size_rows(original, merged))
    if task == "wer":
        difference, main_key = compare_records(before.predictions, after.predictions), "wer"
    else:
        # the mean NLL per token is a corpus rate too (summed NLL / tokens), so the same paired bootstrap applies
        counts = [record["token_count"] for record in before.per_sequence]
        nll_before = [record["nll_sum"] for record in before.per_sequence]
        nll_after = [record["nll_sum"] for record in after.per_sequence]
        difference = paired_difference(nll_before, nll_after, counts, metric="nll", significance=False)
        main_key = "mean_nll"
    comparison.difference = difference
    main_row = next(change for change in comparison.changes if change.metric == main_key)
    main_row.interval = difference.interval_text(1, "+.4g")
    comparison.provenance = provenance_of(
        merged,
        data if hasattr(data, "__len__") else None,
        units=difference.units,
        unit_name="words" if task == "wer" else "tokens",
        generation={"decoding": "greedy"} if task == "wer" else {"teacher_forced": True},
        original=model_revision(original)[0],
    )
    if measure_disk:
        sizes = [None, None]
        if accelerator.is_main_process:
            sizes = [bytes_on_disk(original, original_path), bytes_on_disk(merged, merged_path)]
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            sizes = broadcast_object_list(sizes)
        comparison.changes.append(_row("bytes on disk (safetensors)", *sizes))
    if output_dir is not None and accelerator.is_main_process:
        comparison.save(output_dir)
    return comparison
