"""`compress_within_budget`: the most compression whose quality loss stays inside a budget.

The knob is the number of merged rows k (fewer rows = more compression). Each trial merges a fresh copy of the
model to k rows and evaluates it; bisection assumes quality degrades monotonically as k shrinks and finds the
smallest k within budget up to one row (or `tolerance` of the selected rows).

The search is tuned on one set and reported on another: `evaluate` (the tuning set) drives every trial, and
`report_evaluate` (a separate report set) measures the original and the chosen model once, so the published number
was not selected on the data it reports. The two must differ (the same callable, or sets that share example ids,
are refused); without a report set the search warns loudly. With `criterion="upper_bound"` a trial passes only if
the upper end of the paired bootstrap interval of the WER increase is within budget ("+1 point with 95 %
confidence"); that needs per-utterance records from `evaluate` (see `with_records`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from hf_token_merge.analysis.sweep import require_token_counts, resolve_strategy, strategy_config
from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.remap import MergePlan, MergeResult, apply_token_merge, plan_token_merge, resolve_selection

logger = logging.getLogger(__name__)

Metrics = dict[str, float]
BUDGET_KEYS = {"max_wer_increase": "wer", "max_ppl_increase": "perplexity"}
CRITERIA = ("estimate", "upper_bound")
RECORDS_KEY = "records"


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
        criterion: `"estimate"` (the point estimate must fit) or `"upper_bound"` (the interval's upper end must).
        tune_difference: The tuning set's paired WER difference of the chosen merge (`PairedDifference.to_dict()`),
            when `evaluate` returns records.
        report_before: Report-set metrics of the original model (None without `report_evaluate`).
        report_after: Report-set metrics of the compressed model.
        report_difference: The report set's paired WER difference with its interval, when records are returned.
        tuned_on_report_set: True when no separate report set was given (the numbers are tuned on what they report).
    """

    n_clusters: int
    ratio: float
    plan: MergePlan | None
    result: MergeResult | None
    before: Metrics
    after: Metrics
    trials: list[dict[str, Any]] = field(default_factory=list)
    criterion: str = "estimate"
    tune_difference: dict[str, Any] | None = None
    report_before: Metrics | None = None
    report_after: Metrics | None = None
    report_difference: dict[str, Any] | None = None
    tuned_on_report_set: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The numbers of `budget.json`: rows, both sets' results, the criterion and every trial."""
        return {
            "n_clusters": self.n_clusters,
            "ratio": self.ratio,
            "criterion": self.criterion,
            "tune": {"before": self.before, "after": self.after, "difference": self.tune_difference},
            "report": None
            if self.report_before is None
            else {"before": self.report_before, "after": self.report_after, "difference": self.report_difference},
            "tuned_on_report_set": self.tuned_on_report_set,
            "before": self.before,
            "after": self.after,
            "trials": self.trials,
        }


def example_ids(data: Any) -> list[str]:
    """Stable ids of an evaluation set's examples: its `id` column, else a hash of each example.

    Args:
        data: A `datasets.Dataset` or a sequence of dicts.

    Returns:
        One string per example.
    """
    names = list(data.column_names) if hasattr(data, "column_names") else list(data[0]) if len(data) else []
    if "id" in names:
        return [str(value) for value in (data["id"] if hasattr(data, "column_names") else [e["id"] for e in data])]
    keys = [name for name in names if name != "audio"]  # audio is a path or bytes; the text identifies an example
    out = []
    for example in data:
        payload = json.dumps({key: example[key] for key in keys}, sort_keys=True, default=str)
        out.append(hashlib.sha256(payload.encode()).hexdigest()[:16])
    return out


def describe_eval_set(evaluate: Callable, name: str, data: Any) -> Callable:
    """Label an evaluation callable with its set, so the budget search can check the tune/report split.

    Args:
        evaluate: `model -> metrics`.
        name: The set's name (for messages and `budget.json`).
        data: The set's examples (their ids are compared, see `example_ids`).

    Returns:
        `evaluate` itself, with `eval_set_name` and `eval_set_ids` attributes.
    """
    evaluate.eval_set_name = name  # type: ignore[attr-defined]
    evaluate.eval_set_ids = example_ids(data)  # type: ignore[attr-defined]
    return evaluate


def with_records(result: Any, **metrics: float) -> Metrics:
    """Metrics plus the per-utterance records `criterion="upper_bound"` needs, from an evaluation result.

    Args:
        result: A `WerResult` (or anything with `.predictions` records holding error counts).
        **metrics: The metrics to report (e.g. `wer=result.wer`).

    Returns:
        `{**metrics, "records": result.predictions}` (the records are kept out of `budget.json`).
    """
    return {**metrics, RECORDS_KEY: result.predictions}


def check_split(tune: Callable, report: Callable | None, allow_overlap: bool = False) -> bool:
    """Refuse a report set that is the tuning set; warn loudly when there is no report set.

    Args:
        tune: The tuning evaluation.
        report: The report evaluation, or None.
        allow_overlap: Downgrade shared example ids from an error to a warning.

    Returns:
        Whether the results are tuned on the set they report (no report set given).
    """
    if report is None:
        warnings.warn(
            "compress_within_budget: NO SEPARATE REPORT SET. The row count is chosen on the evaluation set and its "
            "numbers are reported on that same set, so they are optimistic. Fix: pass report_evaluate= (a held-out "
            "set), or on the CLI --report-eval / --split-eval.",
            UserWarning,
            stacklevel=3,
        )
        return True
    if report is tune:
        raise TokenMergeError(
            "compress_within_budget: report_evaluate is the tuning evaluation itself, so the result would be reported "
            "on the data it was tuned on. Fix: pass an evaluation of a separate, held-out set."
        )
    tune_ids, report_ids = getattr(tune, "eval_set_ids", None), getattr(report, "eval_set_ids", None)
    if tune_ids is not None and report_ids is not None:
        shared = set(tune_ids) & set(report_ids)
        if shared:
            names = f"{getattr(tune, 'eval_set_name', 'tuning')!r} and {getattr(report, 'eval_set_name', 'report')!r}"
            message = (
                f"compress_within_budget: the tuning and report sets ({names}) share {len(shared)} of "
                f"{len(set(report_ids))} report examples (e.g. {sorted(shared)[0]!r})"
                + (" — they are the same set" if set(tune_ids) == set(report_ids) else "")
                + ". Fix: report on held-out examples (e.g. --split-eval 0.5 splits one set in two)."
            )
            if not allow_overlap or set(tune_ids) == set(report_ids):
                raise TokenMergeError(message)
            warnings.warn(message, UserWarning, stacklevel=3)
    return False


def _split_records(metrics: dict[str, Any]) -> tuple[Metrics, Sequence[dict] | None]:
    metrics = dict(metrics)
    return metrics, metrics.pop(RECORDS_KEY, None)


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
                raise TokenMergeError(
                    f"The evaluation returned no {name!r}; it returned {sorted(after)}. Fix: return every metric "
                    "the budget names, or budget the metrics it returns."
                )
            # the upper-bound criterion puts the interval's upper end of the WER increase in "wer_ci_high"
            increase = after[f"{name}_ci_high"] if f"{name}_ci_high" in after else after[name] - before[name]
            if increase > allowed + 1e-12:
                return False
        return True

    return check


def budget_limits(
    max_wer_increase: float | None, max_ppl_increase: float | None, max_increase: dict[str, float] | None
) -> dict[str, float]:
    """`metric -> allowed absolute increase` of a budget.

    Raises:
        TokenMergeError: Without any budget, or with a negative one.
    """
    budget = dict(max_increase or {})
    for argument, metric in BUDGET_KEYS.items():
        value = {"max_wer_increase": max_wer_increase, "max_ppl_increase": max_ppl_increase}[argument]
        if value is not None:
            budget[metric] = value
    if not budget:
        raise TokenMergeError("Give a budget: max_wer_increase=, max_ppl_increase= or max_increase={metric: allowed}.")
    if any(allowed < 0 for allowed in budget.values()):
        raise TokenMergeError(f"Budgets are allowed increases and must be >= 0, got {budget}.")
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
    report_evaluate: Callable[[torch.nn.Module], Metrics] | None = None,
    criterion: str = "estimate",
    confidence: float = 0.95,
    allow_overlap: bool = False,
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
        seed: Seed of the "random" strategy (and of the bootstrap).
        report_evaluate: `model -> metrics` on a separate report set, run on the original and the chosen model
            only. Refused when it is `evaluate` itself or (see `describe_eval_set`) shares examples with it;
            None warns loudly that the numbers are tuned on the set they report.
        criterion: `"estimate"`: a trial passes when the metric's increase fits the budget; `"upper_bound"`: when
            the upper end of the paired bootstrap interval of the WER increase does (needs `evaluate` to return
            per-utterance records, see `with_records`).
        confidence: Level of the intervals.
        allow_overlap: Only warn when the two sets share some (not all) examples.
        show_progress: Show a tqdm bar over trials.

    Returns:
        The chosen row count, plan, merge result, both sets' metrics before and after, and every trial.
    """
    budget = budget_limits(max_wer_increase, max_ppl_increase, max_increase)
    method = _checked_search_settings(config, strategy, token_counts, min_ratio, criterion, budget, seed)
    tuned_on_report_set = check_split(evaluate, report_evaluate, allow_overlap)
    n = resolve_selection(model, config, tokenizer).numel()
    before, before_records = _split_records(evaluate(model))
    if criterion == "upper_bound" and before_records is None:
        raise TokenMergeError(
            "criterion='upper_bound' needs per-utterance records from the evaluation. Fix: return "
            "hf_token_merge.analysis.budget.with_records(wer_result, wer=wer_result.wer) from evaluate."
        )
    report_before, report_before_records = (
        _split_records(report_evaluate(model)) if report_evaluate is not None else (None, None)
    )
    search = _BudgetSearch(
        model, config, method, evaluate, _budget_of(budget), before, before_records, n,
        tokenizer=tokenizer, token_counts=token_counts, seed=seed, criterion=criterion, confidence=confidence,
    )  # fmt: skip
    with tqdm(desc="budget search", disable=not show_progress, leave=False) as search.progress:
        best = bisect_smallest(search.within, max(1, int(min_ratio * n)), n, step=max(1, int(tolerance * n)))
    common = {"criterion": criterion, "tuned_on_report_set": tuned_on_report_set}
    if best == n:  # nothing could merge within budget: leave the model as it is
        logger.info("budget search: no merge of the %d selected rows fits the budget %s", n, budget)
        return BudgetResult(
            n, 1.0, None, None, before, before, search.trials, report_before=report_before,
            report_after=report_before, **common,
        )  # fmt: skip
    plan, after = search.plans[best]
    logger.info("budget search: %d of %d selected rows kept after %d trials", best, n, len(search.trials))
    result = apply_token_merge(model, plan, show_progress=False)
    report_after, report_difference = None, None
    if report_evaluate is not None:
        report_after, report_after_records = _split_records(report_evaluate(model))
        report_difference = search.difference(report_before_records, report_after_records, significance=True)
    return BudgetResult(
        best, best / n, plan, result, before, after, search.trials, tune_difference=search.differences.get(best),
        report_before=report_before, report_after=report_after, report_difference=report_difference, **common,
    )  # fmt: skip


def _checked_search_settings(
    config: TokenMergeConfig,
    strategy: str | None,
    token_counts: torch.Tensor | None,
    min_ratio: float,
    criterion: str,
    budget: dict[str, float],
    seed: int,
) -> str:
    """The grouping method the search uses, after refusing settings it cannot search with."""
    method = config.method if strategy is None else resolve_strategy(strategy)
    if method == "threshold":
        raise TokenMergeError("The budget search sets a row count; use method='kmeans' or 'agglomerative'.")
    require_token_counts([strategy_config(config, method, 1, seed)], token_counts)
    if not 0 < min_ratio <= 1:
        raise TokenMergeError(f"min_ratio must lie in (0, 1], got {min_ratio}.")
    if criterion not in CRITERIA:
        raise TokenMergeError(f"Unknown criterion {criterion!r}. Fix: use one of {list(CRITERIA)}.")
    if criterion == "upper_bound" and set(budget) != {"wer"}:
        raise TokenMergeError(
            f"criterion='upper_bound' bounds the WER increase only; got budgets on {sorted(budget)}. "
            "Fix: pass max_wer_increase alone, or use criterion='estimate'."
        )
    return method


@dataclass
class _BudgetSearch:
    """The trials of one budget search: each row count tried merges a copy of the model and evaluates it."""

    model: torch.nn.Module
    config: TokenMergeConfig
    method: str
    evaluate: Callable[[torch.nn.Module], Metrics]
    check: Callable[[Metrics, Metrics], bool]
    before: Metrics
    before_records: Sequence[dict] | None
    n: int
    tokenizer: Any = None
    token_counts: torch.Tensor | None = None
    seed: int = 0
    criterion: str = "estimate"
    confidence: float = 0.95
    progress: Any = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    plans: dict[int, tuple[MergePlan, Metrics]] = field(default_factory=dict)
    differences: dict[int, dict[str, Any] | None] = field(default_factory=dict)

    def difference(
        self, records_before: Sequence[dict] | None, records_after: Sequence[dict] | None, significance: bool
    ) -> dict[str, Any] | None:
        """The paired bootstrap difference of two record sets (None without records)."""
        from hf_token_merge.evaluation.confidence import compare_records

        if records_before is None or records_after is None:
            return None
        return compare_records(
            records_before, records_after, confidence=self.confidence, seed=self.seed, significance=significance
        ).to_dict()

    def within(self, k: int) -> bool:
        """Whether merging into `k` rows keeps the metrics within the budget (the trial is recorded)."""
        plan = plan_token_merge(
            self.model,
            strategy_config(self.config, self.method, k, self.seed),
            tokenizer=self.tokenizer,
            token_counts=self.token_counts,
            show_progress=False,
        )
        trial = copy.deepcopy(self.model)
        apply_token_merge(trial, plan, show_progress=False)
        metrics, records = _split_records(self.evaluate(trial))
        self.differences[k] = self.difference(self.before_records, records, significance=False)
        if self.criterion == "upper_bound":
            metrics["wer_ci_high"] = self.differences[k]["ci_high"]
        ok = self.check(self.before, metrics)
        self.trials.append({"n_clusters": k, "ratio": k / self.n, "metrics": metrics, "within_budget": ok})
        self.plans[k] = (plan, metrics)
        logger.info("budget trial: %d rows -> %s (%s)", k, metrics, "within" if ok else "over")
        if self.progress is not None:
            self.progress.update()
            self.progress.set_postfix(k=k, ok=ok)
        return ok
