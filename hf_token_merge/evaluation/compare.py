"""Evaluate an original and a merged model on the same data and tabulate the change."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_token_merge.evaluation.perplexity import evaluate_perplexity
from hf_token_merge.evaluation.runner import get_accelerator
from hf_token_merge.evaluation.wer import evaluate_wer
from hf_token_merge.remap.apply import model_size

TABLE_COLUMNS = ("metric", "before", "after", "absolute change", "relative change")


def safetensors_bytes(folder: str | os.PathLike[str]) -> int:
    """Total size of the `model*.safetensors` shards in a saved folder (a merge plan beside them is not counted)."""
    files = list(Path(folder).glob("model*.safetensors"))
    if not files:
        raise ValueError(f"{folder} holds no .safetensors files. Fix: save the model with save_pretrained first.")
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
        rows: `{"metric", "before", "after", "absolute_change", "relative_change"}` per metric.
    """

    task: str
    before: Any
    after: Any
    rows: list[dict[str, Any]] = field(default_factory=list)

    def row(self, metric: str) -> dict[str, Any]:
        """The row of one metric."""
        for row in self.rows:
            if row["metric"] == metric:
                return row
        raise KeyError(metric)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "rows": self.rows, "before": self.before.to_dict(), "after": self.after.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        """A Markdown table: metric, before, after, absolute and relative change."""

        def fmt(value: Any) -> str:
            if value is None:
                return "–"
            if isinstance(value, int):
                return f"{value:,}"
            return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"

        def rel(value: Any) -> str:
            return "–" if value is None else f"{100 * value:+.2f}%"

        lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
        for row in self.rows:
            change = row["absolute_change"]
            sign = "+" if change is not None and change > 0 else ""
            lines.append(
                f"| {row['metric']} | {fmt(row['before'])} | {fmt(row['after'])} | "
                f"{sign}{fmt(change)} | {rel(row['relative_change'])} |"
            )
        return "\n".join(lines) + "\n"

    def save(self, output_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write `comparison.json`, `comparison.md` and each side's predictions/sequences."""
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "comparison.json").write_text(self.to_json() + "\n", encoding="utf-8")
        (folder / "comparison.md").write_text(self.to_markdown(), encoding="utf-8")
        self.before.save(folder, prefix=f"before_{self.task}")
        self.after.save(folder, prefix=f"after_{self.task}")
        return {"json": folder / "comparison.json", "markdown": folder / "comparison.md"}


def _row(metric: str, before: Any, after: Any) -> dict[str, Any]:
    if before is None or after is None:
        change, relative = None, None
    else:
        change = after - before
        relative = change / before if before else (0.0 if change == 0 else None)
    return {"metric": metric, "before": before, "after": after, "absolute_change": change, "relative_change": relative}


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
        raise ValueError(f"Unknown task {task!r}. Fix: use task='wer' or task='perplexity'.")
    accelerator = get_accelerator(accelerator, evaluate_kwargs.get("device"))
    evaluate = evaluate_wer if task == "wer" else evaluate_perplexity
    before = evaluate(original, data, accelerator=accelerator, **evaluate_kwargs)
    after = evaluate(merged, data, accelerator=accelerator, **evaluate_kwargs)

    comparison = Comparison(task, before, after)
    if task == "wer":
        for key in ("wer", "substitutions", "deletions", "insertions", "hits", "reference_words"):
            comparison.rows.append(_row(key, before.metrics()[key], after.metrics()[key]))
        comparison.rows.append(_row("RTFx (audio s / compute s)", before.rtfx, after.rtfx))
    else:
        for key in ("perplexity", "mean_nll", "bits_per_token", "token_count"):
            comparison.rows.append(_row(key, before.metrics()[key], after.metrics()[key]))
        comparison.rows.append(_row("tokens per second", before.tokens_per_second, after.tokens_per_second))
    params_before, bytes_before = model_size(original)
    params_after, bytes_after = model_size(merged)
    comparison.rows.append(_row("embedding rows", embedding_rows(original), embedding_rows(merged)))
    comparison.rows.append(_row("parameters", params_before, params_after))
    comparison.rows.append(_row("bytes in memory", bytes_before, bytes_after))
    if measure_disk:
        sizes = [None, None]
        if accelerator.is_main_process:
            sizes = [bytes_on_disk(original, original_path), bytes_on_disk(merged, merged_path)]
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            sizes = broadcast_object_list(sizes)
        comparison.rows.append(_row("bytes on disk (safetensors)", *sizes))
    if output_dir is not None and accelerator.is_main_process:
        comparison.save(output_dir)
    return comparison
