"""`sweep`: evaluate a grid of compression levels and strategies, the ablation behind every merge setting.

A strategy is a grouping method that takes a row count (the vocabulary of `TokenMergeConfig.method`, see
`hf_token_merge.clustering.grouping_methods`):
* "kmeans", "agglomerative": merge by similarity to the level's row count;
* "frequency": keep the k - 1 most frequent rows and collapse all the others into one row (an ablation that removes
  rows, as far as an index remap can: the removed ids share one averaged row); needs calibration counts;
* "random": a random grouping into the same number of rows, as a control.

"threshold" takes no row count: `thresholds=` adds one point per similarity (cosine) or distance (euclidean)
threshold, placed on the same axis by the rows its plan keeps.

When `evaluate` also returns per-utterance records (`with_records(result, wer=result.wer)`, or
`{"records": {"asr_wer": ..., "tts_wer": ...}}` for several metrics), every point carries the paired bootstrap
interval of its increase over the baseline, and the curves draw it as a band. With calibration counts, every point
also says how many of the *used* rows (count > 0) it removed: never-used rows say nothing about redundancy.

The old name "drop_least_frequent" still works as a deprecated alias of "frequency".
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from hf_token_merge.analysis.records import difference_cell, paired_differences, split_records
from hf_token_merge.clustering import grouping_method, grouping_methods
from hf_token_merge.clustering.random_grouping import random_labels
from hf_token_merge.clustering.registry import DEPRECATED_ALIASES, resolve_method_name
from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.remap import MergePlan, apply_token_merge, plan_token_merge, resolve_selection
from hf_token_merge.tables import markdown_table

SIMILARITY_METHODS = tuple(m.name for m in grouping_methods().values() if m.by_similarity and m.takes_row_count)
STRATEGIES = tuple(m.name for m in grouping_methods().values() if m.takes_row_count)
STRATEGY_ALIASES = dict(DEPRECATED_ALIASES)

__all__ = [
    "SIMILARITY_METHODS",
    "STRATEGIES",
    "STRATEGY_ALIASES",
    "SweepPoint",
    "random_labels",
    "require_token_counts",
    "resolve_strategy",
    "save_sweep",
    "strategy_config",
    "strategy_labels",
    "sweep",
    "sweep_markdown",
    "threshold_config",
    "used_rows_removed",
]


@dataclass
class SweepPoint:
    """One evaluated model of a sweep.

    Attributes:
        strategy: The grouping method ("baseline" for the unmerged model).
        ratio: Merged rows / selected rows.
        rows_kept: Rows left for the selected ids.
        rows_removed: Rows removed.
        metrics: What `evaluate` returned (without its records).
        differences: Per metric with records, the paired difference to the baseline (`PairedDifference.to_dict()`:
            `difference`, `ci_low`, `ci_high`, `units`, ...).
        used_rows: Selected rows with a calibration count above 0 (None without counts).
        used_rows_removed: How many of them the merge removed: used rows minus the clusters that hold a used row.
        threshold: The similarity (or distance) threshold of a "threshold" point; None otherwise.
    """

    strategy: str
    ratio: float
    rows_kept: int
    rows_removed: int
    metrics: dict[str, float]
    differences: dict[str, dict[str, Any]] = field(default_factory=dict)
    used_rows: int | None = None
    used_rows_removed: int | None = None
    threshold: float | None = None


def resolve_strategy(strategy: str) -> str:
    """The method name of a strategy: one of `STRATEGIES`, or a deprecated alias (which warns).

    Raises:
        TokenMergeError: On a name that is not a method taking a row count.
    """
    if strategy not in STRATEGIES and strategy not in STRATEGY_ALIASES:
        raise TokenMergeError(
            f"Unknown strategy {strategy!r}; choose from {list(STRATEGIES)} (sweeps and budget searches set a row "
            "count, so 'threshold' is none)."
        )
    return resolve_method_name(strategy, kind="strategy")


def strategy_config(config: TokenMergeConfig, strategy: str, k: int, seed: int | None = None) -> TokenMergeConfig:
    """The config of one trial: `config` grouped by `strategy` into k rows.

    Args:
        config: Selection and merge settings.
        strategy: One of `STRATEGIES` (or a deprecated alias).
        k: Rows to keep for the selected ids.
        seed: Seed of "random" (None: the config's seed).

    Returns:
        The validated config (its stopping option is `n_clusters=k`).
    """
    method = resolve_strategy(strategy)
    changes: dict[str, Any] = {"method": method, "n_clusters": k}
    if method == "random" and seed is not None:
        changes["seed"] = seed
    return config.with_stop(**changes)


def threshold_config(config: TokenMergeConfig, threshold: float) -> TokenMergeConfig:
    """The config of one threshold point: leader clustering stopped at `threshold`.

    Args:
        config: Selection and merge settings.
        threshold: A cosine similarity (metric="cosine") or a Euclidean distance (metric="euclidean").

    Returns:
        The validated config (a bad threshold raises `TokenMergeError` here, before any model work).
    """
    field_name = "similarity_threshold" if config.metric == "cosine" else "distance_threshold"
    return config.with_stop(method="threshold", **{field_name: threshold})


def require_token_counts(configs: Iterable[TokenMergeConfig], token_counts: torch.Tensor | None) -> None:
    """Refuse, before any evaluation, trials that need calibration counts when none were given.

    Raises:
        TokenMergeError: Naming the first config that needs them and how to count.
    """
    if token_counts is not None:
        return
    for config in configs:
        if config.needs_token_counts:
            raise TokenMergeError(
                f"method={config.method!r} (merge_rule={config.merge_rule!r}, logit_correction="
                f"{config.logit_correction!r}) needs token_counts=count_tokens(calibration_ids, vocab) "
                "(or calibration_counts(tokenizer, file, vocab))."
            )


def strategy_labels(
    strategy: str, selected: torch.Tensor, k: int, token_counts: torch.Tensor | None = None, seed: int = 0
) -> torch.Tensor | None:
    """The fixed grouping a non-similarity strategy gives the selected ids at k rows (None: cluster by similarity).

    Args:
        strategy: One of `STRATEGIES`.
        selected: The sorted selected ids (`resolve_selection`).
        k: Rows to keep for them.
        token_counts: `(vocab_size,)` calibration counts; needed by "frequency".
        seed: Seed of "random".

    Returns:
        `(n,)` labels in selection order, or None for a similarity method.
    """
    method = grouping_method(resolve_strategy(strategy))
    if method.by_similarity:
        return None
    config = strategy_config(TokenMergeConfig(token_ids=selected.tolist(), seed=seed, n_clusters=1), method.name, k)
    require_token_counts([config], token_counts)
    counts = None if token_counts is None else torch.as_tensor(token_counts)[selected]
    return method.group(torch.empty(selected.numel(), 0), config, k, counts, False)


def used_rows_removed(plan: MergePlan, token_counts: torch.Tensor) -> tuple[int, int]:
    """How many of a plan's used rows (calibration count > 0) a merge removes.

    Args:
        plan: A merge plan.
        token_counts: `(vocab_size,)` calibration counts.

    Returns:
        `(used, removed)`: the selected rows with a count above 0, and that number minus the clusters holding them.
    """
    used = torch.as_tensor(token_counts)[plan.selected_ids] > 0
    return int(used.sum()), int(used.sum()) - int(plan.cluster_of_selected[used].unique().numel())


def sweep(
    model: torch.nn.Module,
    config: TokenMergeConfig,
    evaluate: Callable[[torch.nn.Module], dict[str, float]],
    *,
    ratios: Sequence[float] = (0.5, 0.25, 0.125, 0.0625),
    strategies: Sequence[str] = ("kmeans", "frequency", "random"),
    thresholds: Sequence[float] = (),
    tokenizer: Any = None,
    token_counts: torch.Tensor | None = None,
    output_dir: str | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> list[SweepPoint]:
    """Evaluate the unmerged model and every (strategy, ratio) merge of a fresh copy of it.

    Args:
        model: The original model (left unchanged).
        config: Selection and merge settings; the stopping option and method are set per point.
        evaluate: `model -> metrics`, e.g. a closure over `evaluate_wer`/`evaluate_perplexity`; with records
            (`with_records`, or a `"records"` dict per metric) the points get paired confidence intervals.
        ratios: Compression levels as merged rows / selected rows.
        strategies: Any of `STRATEGIES` (grouping methods; "drop_least_frequent" is a deprecated alias of
            "frequency"). Points record the method name.
        thresholds: Also one "threshold" point per value: a cosine similarity (metric="cosine") or a Euclidean
            distance (metric="euclidean") at which leader clustering stops.
        tokenizer: For regex/preset selections.
        token_counts: Calibration counts; needed by "frequency" (and by configs that weight by frequency).
        output_dir: If given, writes `sweep.json`, `sweep.md` and one PNG per metric (needs matplotlib).
        seed: Seed of the random control.
        show_progress: Show a tqdm bar over points.

    Returns:
        The baseline point, then one point per strategy and ratio.
    """
    unknown = [s for s in strategies if s not in STRATEGIES and s not in STRATEGY_ALIASES]
    if unknown:
        raise TokenMergeError(f"Unknown strategies {unknown}; choose from {list(STRATEGIES)}.")
    if any(not 0 < r <= 1 for r in ratios):
        raise TokenMergeError(f"ratios must lie in (0, 1], got {list(ratios)}.")
    methods = [resolve_strategy(s) for s in strategies]
    trials = [(m, r, strategy_config(config, m, 1, seed)) for m in methods for r in ratios]
    trials += [("threshold", t, threshold_config(config, t)) for t in thresholds]
    require_token_counts([trial_config for *_, trial_config in trials], token_counts)
    selected = resolve_selection(model, config, tokenizer)
    n = selected.numel()
    metrics, baseline_records = split_records(evaluate(model))
    used = None if token_counts is None else int((torch.as_tensor(token_counts)[selected] > 0).sum())
    points = [SweepPoint("baseline", 1.0, n, 0, metrics, used_rows=used, used_rows_removed=None if used is None else 0)]
    for method, level, trial_config in tqdm(trials, desc="sweep", disable=not show_progress, leave=False):
        if method != "threshold":
            trial_config = strategy_config(config, method, max(1, math.ceil(level * n)), seed)
        plan = plan_token_merge(
            model, trial_config, tokenizer=tokenizer, token_counts=token_counts, show_progress=False
        )
        trial = copy.deepcopy(model)
        apply_token_merge(trial, plan, show_progress=False)
        metrics, records = split_records(evaluate(trial))
        del trial
        k = plan.num_clusters
        point = SweepPoint(method, k / n, k, n - k, metrics, paired_differences(baseline_records, records, seed))
        point.threshold = level if method == "threshold" else None
        if token_counts is not None:
            point.used_rows, point.used_rows_removed = used_rows_removed(plan, token_counts)
        points.append(point)
    if output_dir is not None:
        save_sweep(points, output_dir)
    return points


def sweep_markdown(points: Sequence[SweepPoint]) -> str:
    """The sweep as a Markdown table, one column per metric."""
    names = sorted({name for point in points for name in point.metrics})
    compared = sorted({name for point in points for name in point.differences})
    with_used = any(p.used_rows is not None for p in points)
    rows = []
    for p in points:
        name = p.strategy if p.threshold is None else f"{p.strategy} {p.threshold:g}"
        row = [name, f"{p.ratio:.4f}", p.rows_kept, p.rows_removed]
        if with_used:
            row.append("" if not p.used_rows else f"{p.used_rows_removed:,} of {p.used_rows:,}")
        row += [f"{p.metrics[name]:.4f}" if name in p.metrics else "" for name in names]
        row += [difference_cell(p.differences.get(name)) for name in compared]
        rows.append(row)
    header = ["strategy", "ratio", "rows kept", "rows removed", *(["used rows removed"] if with_used else []), *names]
    return markdown_table([*header, *(f"Δ {name} (95 % CI)" for name in compared)], rows)


def save_sweep(points: Sequence[SweepPoint], output_dir: str) -> dict[str, str]:
    """Write `sweep.json`, `sweep.md` and `sweep_<metric>.png` (metric against rows removed, per strategy)."""
    from hf_token_merge.analysis import plots

    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, "sweep.json"), "md": os.path.join(output_dir, "sweep.md")}
    with open(paths["json"], "w", encoding="utf-8") as handle:
        json.dump([dataclasses.asdict(p) for p in points], handle, indent=2)
    with open(paths["md"], "w", encoding="utf-8") as handle:
        handle.write(sweep_markdown(points))
    for name in sorted({name for point in points for name in point.metrics}):
        paths[name] = plots.sweep_curve(points, name, plots.figure_path(output_dir, f"sweep_{name}"))
    return paths
