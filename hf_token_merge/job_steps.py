"""The steps both built-in jobs share (`job.run_reference_job`, `codec_job.run_codec_job`): check the output
folders, analyse, merge a copy, evaluate before and after, and write the report files.

Below both jobs in the import layers (`job > codec_job > job_steps`), so that neither job imports the other's code.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.remap import apply_token_merge


def job_folders(output_dir: str, overwrite: bool) -> tuple[str, str]:
    """The `original/` and `merged/` folders of a job, checked before any work.

    Args:
        output_dir: The job's output folder.
        overwrite: Replace the folders even when hf_token_merge did not write them.

    Returns:
        `(original_dir, merged_dir)`.

    Raises:
        TokenMergeError: For a folder hf_token_merge did not write, without `overwrite`.
    """
    from hf_token_merge.atomic import check_target

    original_dir, merged_dir = os.path.join(output_dir, "original"), os.path.join(output_dir, "merged")
    for folder in (original_dir, merged_dir):
        check_target(folder, overwrite=overwrite)
    return original_dir, merged_dir


@dataclass
class JobRun:
    """The steps every built-in job shares: the analysis, the merge, and the evaluations before and after.

    Attributes:
        analysis: The `RedundancyReport` of the unmerged model.
        before: `evaluate(model)` of the unmerged model.
        merged: The merged copy (the unmerged model is left as it was).
        result: `apply_token_merge`'s result.
        after: `evaluate(merged)`.
    """

    analysis: Any
    before: Any
    merged: Any
    result: Any
    after: Any


def analyse_merge_evaluate(
    model,
    tokenizer,
    config: TokenMergeConfig,
    output_dir: str,
    evaluate: Callable[[Any], Any],
    *,
    inputs: list[torch.Tensor],
    maps: tuple[str, ...],
    show_progress: bool,
    overwrite: bool,
) -> JobRun:
    """Analyse, evaluate, save `original/`, merge a copy, save `merged/`, evaluate it: the body of every job.

    Args:
        model: The unmerged model (not modified).
        tokenizer: Its tokenizer, saved with both models.
        config: The merge.
        output_dir: The job's folder (`analysis/`, `original/`, `merged/` go there; see `job_folders`).
        evaluate: `model -> results` (the same function before and after).
        inputs: Id tensors the analysis runs the model on (layer statistics).
        maps: The 2-D maps of the analysis ("tsne", "umap").
        show_progress: Show tqdm bars.
        overwrite: Replace `original/` and `merged/` even when hf_token_merge did not write them.

    Returns:
        A `JobRun`.
    """
    from hf_token_merge.analysis import analyze_redundancy
    from hf_token_merge.atomic import atomic_directory

    analysis_dir = os.path.join(output_dir, "analysis")
    analysis = analyze_redundancy(
        model, config, analysis_dir, tokenizer=tokenizer, inputs=inputs, maps=maps, show_progress=show_progress
    )
    before = evaluate(model)
    merged = copy.deepcopy(model)
    result = apply_token_merge(merged, config, tokenizer=tokenizer, show_progress=show_progress)
    for name, saved in (("original", model), ("merged", merged)):
        with atomic_directory(os.path.join(output_dir, name), overwrite=overwrite) as folder:
            saved.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
    return JobRun(analysis, before, merged, result, evaluate(merged))


def write_job_outputs(
    output_dir: str, title: str, intro: str, run: JobRun, config: TokenMergeConfig, rows: list, extra: dict, record
) -> dict[str, Any]:
    """The before/after table, `report.json`, `.md` and `.html` of a job (the table is printed too).

    Args:
        output_dir: The job's folder.
        title: The report's heading.
        intro: What was measured on what, before the table (ends with a blank line).
        run: The job's `JobRun`.
        config: The merge.
        rows: The table's `ChangeRow`s.
        extra: The job's own numbers, written between the shared ones and the provenance.
        record: The evaluation's `Provenance`.

    Returns:
        The numbers (also in `report.json`).
    """
    from hf_token_merge.analysis.report_html import write_job_report
    from hf_token_merge.tables import change_table

    table = change_table(rows)
    analysis = run.analysis
    numbers = {
        "config": config.to_dict(),
        "table": [{"metric": row.metric, "before": row.before, "after": row.after} for row in rows],
        "plan": run.result.plan.statistics,
        "analysis": {"effective_rank": analysis.effective_rank, "threshold_curve": analysis.threshold_curve},
        **extra,
        "provenance": record.to_dict(),
    }
    merge = json.dumps({k: v for k, v in config.to_dict().items() if v is not None})
    report = f"# {title}\n\n{run.result}\n\nMerge: `{merge}`\n\n" + intro + table + "\n" + record.markdown()
    write_job_report(output_dir, numbers, report, analysis.to_markdown(figure_folder="analysis"), title)
    print("\n" + table)
    print(f"report: {os.path.join(output_dir, 'report.md')}")
    return numbers
