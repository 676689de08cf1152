"""Per-utterance records beside an evaluation's metrics, and the paired intervals they give a sweep's points.

An `evaluate(model)` callable of a sweep returns metrics, and may add per-utterance records under `"records"`
(`with_records(result, wer=result.wer)`: a bare list belongs to "wer"; a dict maps each metric to its records).
A sweep splits the two (`split_records`) and pairs each point's records with the baseline's (`paired_differences`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hf_token_merge.errors import TokenMergeError


def split_records(metrics: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, Sequence[dict]]]:
    """Split `evaluate`'s output into metrics and records per metric.

    Args:
        metrics: What `evaluate(model)` returned.

    Returns:
        `(metrics, records)`: the metrics without the records, and metric name -> per-utterance records (empty when
        `evaluate` returned none).
    """
    from hf_token_merge.analysis.budget import RECORDS_KEY

    metrics = dict(metrics)
    records = metrics.pop(RECORDS_KEY, None)
    if records is None:
        return metrics, {}
    records = dict(records) if isinstance(records, Mapping) else {"wer": records}
    missing = sorted(set(records) - set(metrics))
    if missing:
        raise TokenMergeError(
            f"evaluate returned records for {missing} but no such metric; return the metric beside its records "
            "(with_records(result, wer=result.wer))."
        )
    return metrics, records


def paired_differences(
    before: Mapping[str, Sequence[dict]], after: Mapping[str, Sequence[dict]], seed: int = 0
) -> dict[str, dict[str, Any]]:
    """The paired bootstrap interval of every metric's change, for the metrics with records on both sides.

    Args:
        before: Metric -> the baseline's per-utterance records.
        after: Metric -> the merged model's records of the same utterances.
        seed: Bootstrap seed.

    Returns:
        Metric -> `PairedDifference.to_dict()` (before, after, difference, ci_low, ci_high, units, ...).
    """
    from hf_token_merge.evaluation.confidence import compare_records

    return {
        name: compare_records(before[name], after[name], seed=seed, significance=False).to_dict()
        for name in before
        if name in after
    }


def difference_cell(difference: Mapping[str, Any] | None) -> str:
    """A table cell for one paired difference: `+0.0123 (-0.0040 to +0.0290)`, or empty where there is none.

    Args:
        difference: One value of `paired_differences`, or None.

    Returns:
        The cell's text.
    """
    if difference is None:
        return ""
    return f"{difference['difference']:+.4f} ({difference['ci_low']:+.4f} to {difference['ci_high']:+.4f})"
