"""`sweep`: evaluate a grid of compression levels and strategies, the ablation behind every merge setting.

Strategies:
* a grouping method ("kmeans", "agglomerative"): merge by similarity to the level's row count;
* "drop_least_frequent": keep the most frequent rows and collapse all the others into one row (an ablation
  that removes rows, as far as an index remap can: the removed ids share one averaged row);
* "random": a random grouping into the same number of rows, as a control.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from hf_token_merge.clustering.frequency import least_frequent_labels
from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.remap import apply_token_merge, plan_token_merge, resolve_selection

SIMILARITY_METHODS = ("kmeans", "agglomerative")
STRATEGIES = (*SIMILARITY_METHODS, "drop_least_frequent", "random")


@dataclass
class SweepPoint:
    """One evaluated model of a sweep.

    Attributes:
        strategy: How rows were grouped ("baseline" for the unmerged model).
        ratio: Merged rows / selected rows.
        rows_kept: Rows left for the selected ids.
        rows_removed: Rows removed.
        metrics: What `evaluate` returned.
    """

    strategy: str
    ratio: float
    rows_kept: int
    rows_removed: int
    metrics: dict[str, float]


def random_labels(n: int, k: int, seed: int) -> torch.Tensor:
    """A random grouping of n ids into exactly k non-empty clusters."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.arange(k), torch.randint(k, (n - k,), generator=generator)])
    return labels[torch.randperm(n, generator=generator)]


def strategy_labels(
    strategy: str, selected: torch.Tensor, k: int, token_counts: torch.Tensor | None = None, seed: int = 0
) -> torch.Tensor | None:
    """The fixed grouping a non-similarity strategy gives the selected ids at k rows (None: cluster by similarity).

    Args:
        strategy: One of `STRATEGIES`.
        selected: The sorted selected ids (`resolve_selection`).
        k: Rows to keep for them.
        token_counts: `(vocab_size,)` calibration counts; needed by "drop_least_frequent".
        seed: Seed of "random".

    Returns:
        `(n,)` labels in selection order, or None for a similarity method.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; choose from {list(STRATEGIES)}.")
    if strategy == "random":
        return random_labels(selected.numel(), k, seed)
    if strategy == "drop_least_frequent":
        if token_counts is None:
            raise ValueError(
                "strategy 'drop_least_frequent' needs token_counts=count_tokens(calibration_ids, vocab) "
                "(or calibration_counts(tokenizer, file, vocab))."
            )
        return least_frequent_labels(torch.as_tensor(token_counts)[selected], k)
    return None


def sweep(
    model: torch.nn.Module,
    config: TokenMergeConfig,
    evaluate: Callable[[torch.nn.Module], dict[str, float]],
    *,
    ratios: Sequence[float] = (0.5, 0.25, 0.125, 0.0625),
    strategies: Sequence[str] = ("kmeans", "drop_least_frequent", "random"),
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
        evaluate: `model -> metrics`, e.g. a closure over `evaluate_wer`/`evaluate_perplexity`.
        ratios: Compression levels as merged rows / selected rows.
        strategies: Any of `STRATEGIES`.
        tokenizer: For regex/preset selections.
        token_counts: Calibration counts; needed by "drop_least_frequent".
        output_dir: If given, writes `sweep.json`, `sweep.md` and one PNG per metric (needs matplotlib).
        seed: Seed of the random control.
        show_progress: Show a tqdm bar over points.

    Returns:
        The baseline point, then one point per strategy and ratio.
    """
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"Unknown strategies {unknown}; choose from {list(STRATEGIES)}.")
    if "drop_least_frequent" in strategies and token_counts is None:
        raise ValueError("strategy 'drop_least_frequent' needs token_counts=count_tokens(calibration_ids, vocab).")
    if any(not 0 < r <= 1 for r in ratios):
        raise ValueError(f"ratios must lie in (0, 1], got {list(ratios)}.")
    selected = resolve_selection(model, config, tokenizer)
    n = selected.numel()
    points = [SweepPoint("baseline", 1.0, n, 0, evaluate(model))]
    grid = [(strategy, ratio) for strategy in strategies for ratio in ratios]
    for strategy, ratio in tqdm(grid, desc="sweep", disable=not show_progress, leave=False):
        k = max(1, math.ceil(ratio * n))
        method = strategy if strategy in SIMILARITY_METHODS else config.method
        if method == "threshold":
            method = "kmeans"
        point_config = dataclasses.replace(
            config,
            method=method,
            n_clusters=k,
            target_ratio=None,
            similarity_threshold=None,
            distance_threshold=None,
        )
        labels = strategy_labels(strategy, selected, k, token_counts, seed)
        plan = plan_token_merge(
            model, point_config, tokenizer=tokenizer, token_counts=token_counts, labels=labels, show_progress=False
        )
        trial = copy.deepcopy(model)
        apply_token_merge(trial, plan, show_progress=False)
        points.append(SweepPoint(strategy, k / n, k, n - k, evaluate(trial)))
        del trial
    if output_dir is not None:
        save_sweep(points, output_dir)
    return points


def sweep_markdown(points: Sequence[SweepPoint]) -> str:
    """The sweep as a Markdown table, one column per metric."""
    names = sorted({name for point in points for name in point.metrics})
    lines = [
        "| strategy | ratio | rows kept | rows removed | " + " | ".join(names) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(names),
    ]
    for p in points:
        values = " | ".join(f"{p.metrics[name]:.4f}" if name in p.metrics else "" for name in names)
        lines.append(f"| {p.strategy} | {p.ratio:.4f} | {p.rows_kept} | {p.rows_removed} | {values} |")
    return "\n".join(lines) + "\n"


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
