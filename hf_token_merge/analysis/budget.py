"""`compress_within_budget`: the most compression whose quality loss stays inside a budget.

The knob is the number of merged rows k (fewer rows = more compression). Each trial merges a fresh copy of the
model to k rows and evaluates it; bisection assumes quality degrades monotonically as k shrinks and finds the
smallest k within budget up to one row (or `tolerance` of the selected rows).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from hf_token_merge.analysis.sweep import require_token_counts, resolve_strategy, strategy_config
from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.remap import MergePlan, MergeResult, apply_token_merge, plan_token_merge, resolve_selection

Metrics = dict[str, float]
BUDGET_KEYS = {"max_wer_increase": "wer", "max_ppl_increase": "perplexity"}


@dataclass
class BudgetResult:
    """The outcome of a budgeted compression.

    Attributes:
        n_clusters: Merged rows kept for the selected ids (the selection's size means nothing merged).
        ratio: `n_clusters / selected rows`.
        plan: The applied plan (None when even the mildest merge broke the budget).
        result: What `apply_token_merge` did to the model (None likewise).
        before: Metrics of the original model.
        after: Metrics of the compressed model.
        trials: Every evaluated `(n_clusters, metrics, within_budget)`, in order.
    """

    n_clusters: int
    ratio: float
    plan: MergePlan | None
    result: MergeResult | None
    before: Metrics
    after: Metrics
    trials: list[dict[str, Any]] = field(default_factory=list)


def bisect_smallest(within: Callable[[int], bool], low: int, high: int, step: int = 1) -> int:
    """Smallest `k` in `[low, high]` with `within(k)`, assuming `within` is monotone and `within(high)` holds.

    Args:
        within: The budget test.
        low: Smallest candidate.
        high: A candidate known to pass (it is not evaluated).
        step: Stop once the bracket is this narrow; the answer is then the passing end.

    Returns:
        The smallest passing `k` found.
    """
    if within(low):
        return low
    failing, passing = low, high
    while passing - failing > step:
        middle = (failing + passing) // 2
        if within(middle):
            passing = middle
        else:
            failing = middle
    return passing


def _budget_of(max_increase: dict[str, float]) -> Callable[[Metrics, Metrics], bool]:
    def check(before: Metrics, after: Metrics) -> bool:
        for name, allowed in max_increase.items():
            if name not in after or name not in before:
                raise KeyError(f"The evaluation returned no {name!r}; it returned {sorted(after)}.")
            if after[name] - before[name] > allowed + 1e-12:
                return False
        return True

    return check


def budget_limits(
    max_wer_increase: float | None, max_ppl_increase: float | None, max_increase: dict[str, float] | None
) -> dict[str, float]:
    """`metric -> allowed absolute increase` of a budget.

    Raises:
        ValueError: Without any budget, or with a negative one.
    """
    budget = dict(max_increase or {})
    for argument, metric in BUDGET_KEYS.items():
        value = {"max_wer_increase": max_wer_increase, "max_ppl_increase": max_ppl_increase}[argument]
        if value is not None:
            budget[metric] = value
    if not budget:
        raise ValueError("Give a budget: max_wer_increase=, max_ppl_increase= or max_increase={metric: allowed}.")
    if any(allowed < 0 for allowed in budget.values()):
        raise ValueError(f"Budgets are allowed increases and must be >= 0, got {budget}.")
    return budget


def compress_within_budget(
    model: torch.nn.Module,
    config: TokenMergeConfig,
    evaluate: Callable[[torch.nn.Module], Metrics],
    *,
    max_wer_increase: float | None = None,
    max_ppl_increase: float | None = None,
    max_increase: dict[str, float] | None = None,
    tokenizer: Any = None,
    token_counts: torch.Tensor | None = None,
    min_ratio: float = 1 / 64,
    tolerance: float = 0.0,
    strategy: str | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> BudgetResult:
    """Merge `model` in place as far as the budget allows.

    Args:
        model: The original model; it is merged in place at the end (trials run on copies).
        config: Selection and merge settings; its stopping option is replaced by the searched row count.
        evaluate: `model -> metrics` (e.g. `{"wer": 0.091, "perplexity": 12.3}`), lower is better.
        max_wer_increase: Allowed absolute WER increase (0.01 = one WER point).
        max_ppl_increase: Allowed absolute perplexity increase.
        max_increase: Further `metric -> allowed absolute increase` entries.
        tokenizer: For regex/preset selections.
        token_counts: Calibration counts, where the config needs them.
        min_ratio: The strongest merge tried, as merged rows / selected rows.
        tolerance: Stop bisecting once the bracket is this fraction of the selected rows (0: exact to one row).
        strategy: How k rows are formed, a grouping method of `sweep.STRATEGIES` (None: the config's method):
            "kmeans"/"agglomerative" cluster by similarity; "frequency" keeps the k - 1 most frequent selected ids
            (by `token_counts`, ties by id) and collapses the rest into one row; "random" is the control.
            "drop_least_frequent" is a deprecated alias of "frequency".
        seed: Seed of the "random" strategy.
        show_progress: Show a tqdm bar over trials.

    Returns:
        The chosen row count, plan, merge result, metrics before and after, and every trial.
    """
    budget = budget_limits(max_wer_increase, max_ppl_increase, max_increase)
    method = config.method if strategy is None else resolve_strategy(strategy)
    if method == "threshold":
        raise TokenMergeError("The budget search sets a row count; use method='kmeans' or 'agglomerative'.")
    require_token_counts([strategy_config(config, method, 1, seed)], token_counts)
    if not 0 < min_ratio <= 1:
        raise ValueError(f"min_ratio must lie in (0, 1], got {min_ratio}.")

    selected = resolve_selection(model, config, tokenizer)
    n = selected.numel()
    check = _budget_of(budget)
    before = evaluate(model)
    trials: list[dict[str, Any]] = []
    plans: dict[int, tuple[MergePlan, Metrics]] = {}
    progress = tqdm(desc="budget search", disable=not show_progress, leave=False)

    def within(k: int) -> bool:
        plan = plan_token_merge(
            model,
            strategy_config(config, method, k, seed),
            tokenizer=tokenizer,
            token_counts=token_counts,
            show_progress=False,
        )
        trial = copy.deepcopy(model)
        apply_token_merge(trial, plan, show_progress=False)
        metrics = evaluate(trial)
        ok = check(before, metrics)
        trials.append({"n_clusters": k, "ratio": k / n, "metrics": metrics, "within_budget": ok})
        plans[k] = (plan, metrics)
        progress.update()
        progress.set_postfix(k=k, ok=ok)
        return ok

    low = max(1, int(min_ratio * n))
    best = bisect_smallest(within, low, n, step=max(1, int(tolerance * n)))
    progress.close()
    if best == n:  # nothing could merge within budget: leave the model as it is
        return BudgetResult(n, 1.0, None, None, before, before, trials)
    plan, after = plans[best]
    result = apply_token_merge(model, plan, show_progress=False)
    return BudgetResult(best, best / n, plan, result, before, after, trials)
