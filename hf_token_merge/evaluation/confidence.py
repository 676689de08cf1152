"""How sure a before/after difference is: a paired bootstrap confidence interval and a paired permutation test.

The metric is a corpus rate, `sum(errors) / sum(units)` (WER: word errors over target words; CER: character
errors over target characters), never a mean of per-utterance rates. Both models are scored on the same
utterances, so the comparison is paired: a bootstrap resample draws utterances with replacement (with a fixed
seed) and recomputes BOTH corpus rates on the same draw; the interval is the percentile interval of the
differences `after - before`. The permutation test swaps each utterance's before/after errors with probability
1/2 (exactly, over all 2^n swaps, for n <= 16 utterances; else by Monte Carlo with the same seed) and reports the
two-sided p-value of the observed difference.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hf_token_merge.errors import TokenMergeError

EXACT_PERMUTATION_LIMIT = 16


@dataclass(frozen=True)
class PairedDifference:
    """A before/after difference of a corpus error rate with its confidence interval.

    Attributes:
        metric: `"wer"`, `"cer"` or `"nll"` (mean NLL per token: summed NLL over tokens).
        before: Corpus rate of the first model.
        after: Corpus rate of the second model.
        difference: `after - before`.
        ci_low: Lower end of the bootstrap interval of the difference.
        ci_high: Upper end.
        confidence: Confidence level of the interval (e.g. 0.95).
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.
        utterances: Utterances scored (pairs).
        units: Reference words (WER) or characters (CER).
        p_value: Two-sided paired permutation p-value (None when not computed).
        test: How the p-value was computed (`"exact permutation"`, `"permutation (N draws)"`) or None.
    """

    metric: str
    before: float
    after: float
    difference: float
    ci_low: float
    ci_high: float
    confidence: float
    resamples: int
    seed: int
    utterances: int
    units: int
    p_value: float | None = None
    test: str | None = None

    @property
    def unit_name(self) -> str:
        """`"words"` or `"characters"`."""
        return {"cer": "characters", "nll": "tokens"}.get(self.metric, "words")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return asdict(self)

    def interval_text(self, scale: float = 1.0, fmt: str = "+.4g") -> str:
        """The interval as `95 % CI +0.004 to +0.021` (values times `scale`, e.g. 100 for points)."""
        low, high = format(scale * self.ci_low, fmt), format(scale * self.ci_high, fmt)
        return f"{100 * self.confidence:g} % CI {low} to {high}"

    def summary(self) -> str:
        """One line in points, e.g. `+1.20 points (95 % CI +0.40 to +2.10; 1,234 words, 100 utterances; p = 0.004)`."""
        level = f"{100 * self.confidence:g} %"
        scale, unit, fmt = (1, " nats/token", "+.4f") if self.metric == "nll" else (100, " points", "+.2f")
        low, high = format(scale * self.ci_low, fmt), format(scale * self.ci_high, fmt)
        text = (
            f"{format(scale * self.difference, fmt)}{unit} ({level} CI {low} to {high}; "
            f"{self.units:,} {self.unit_name}, {self.utterances:,} utterances"
        )
        if self.p_value is not None:
            text += f"; p = {self.p_value:.3g}, {self.test}"
        return text + ")"


def _arrays(errors_before, errors_after, units) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    before, after, units = (np.asarray(x, dtype=np.float64) for x in (errors_before, errors_after, units))
    if not before.shape == after.shape == units.shape or before.ndim != 1:
        raise TokenMergeError(
            f"Paired scores need one value per utterance on each side; got {before.shape}, {after.shape} and "
            f"{units.shape}. Fix: score both models on the same utterances, in the same order."
        )
    if before.size == 0 or units.sum() <= 0:
        raise TokenMergeError("Paired scores need at least one utterance with a non-empty target text. Fix: pass data.")
    if (before < 0).any() or (after < 0).any() or (units < 0).any():
        raise TokenMergeError("Error and unit counts must be non-negative. Fix: pass counts, not rates.")
    return before, after, units


def paired_bootstrap(
    errors_before: Sequence[float],
    errors_after: Sequence[float],
    units: Sequence[float],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `sum(after)/sum(units) - sum(before)/sum(units)` over utterances.

    Args:
        errors_before: Errors per utterance, first model.
        errors_after: Errors per utterance, second model (same utterances, same order).
        units: Reference words (or characters) per utterance.
        resamples: Bootstrap resamples.
        confidence: Level of the interval, in (0, 1).
        seed: Seed of numpy's PCG64 generator: the same inputs and seed give the same interval.

    Returns:
        `(low, high)`.
    """
    before, after, units = _arrays(errors_before, errors_after, units)
    if not 0 < confidence < 1 or resamples < 1:
        raise TokenMergeError(
            f"Need 0 < confidence < 1 and resamples >= 1; got {confidence} and {resamples}. Fix: e.g. 0.95 and 1000."
        )
    rng = np.random.Generator(np.random.PCG64(seed))
    draws = rng.integers(0, before.size, size=(resamples, before.size))
    total = units[draws].sum(axis=1)
    # a resample of only empty targets has no rate; such draws are left out (possible only with tiny inputs)
    keep = total > 0
    differences = (after[draws].sum(axis=1)[keep] - before[draws].sum(axis=1)[keep]) / total[keep]
    alpha = 1 - confidence
    low, high = np.quantile(differences, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def paired_permutation_test(
    errors_before: Sequence[float],
    errors_after: Sequence[float],
    *,
    resamples: int = 10000,
    seed: int = 0,
) -> tuple[float, str]:
    """Two-sided paired permutation (sign-flip) test of the corpus-rate difference.

    The units are the same on both sides, so the statistic is `sum(after - before)`; each utterance's pair is
    swapped with probability 1/2 under the null hypothesis.

    Args:
        errors_before: Errors per utterance, first model.
        errors_after: Errors per utterance, second model.
        resamples: Monte Carlo draws when there are more than 16 utterances.
        seed: Seed of the draws.

    Returns:
        `(p_value, description)`; exact over all 2^n swaps for n <= 16, else `(1 + hits) / (1 + resamples)`.
    """
    before, after, _ = _arrays(errors_before, errors_after, np.ones(len(errors_before)))
    d = after - before
    observed = abs(d.sum())
    tolerance = 1e-9 * max(1.0, observed)
    if d.size <= EXACT_PERMUTATION_LIMIT:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        hits = int((np.abs(signs @ d) >= observed - tolerance).sum())
        return hits / len(signs), "exact permutation"
    rng = np.random.Generator(np.random.PCG64(seed))
    signs = rng.choice(np.array([1.0, -1.0]), size=(resamples, d.size))
    hits = int((np.abs(signs @ d) >= observed - tolerance).sum())
    return (1 + hits) / (1 + resamples), f"permutation ({resamples:,} draws)"


def paired_difference(
    errors_before: Sequence[float],
    errors_after: Sequence[float],
    units: Sequence[float],
    *,
    metric: str = "wer",
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    significance: bool = True,
) -> PairedDifference:
    """Corpus rates of both models, their difference, its bootstrap interval and (optionally) a p-value.

    Args:
        errors_before: Errors per utterance, first model.
        errors_after: Errors per utterance, second model.
        units: Reference words (`metric="wer"`), characters (`"cer"`) or tokens (`"nll"`) per utterance.
        metric: Name of the rate.
        resamples: Bootstrap resamples.
        confidence: Level of the interval.
        seed: Seed of the bootstrap and of a Monte Carlo permutation test.
        significance: Also run the paired permutation test.

    Returns:
        A `PairedDifference`.
    """
    if metric not in ("wer", "cer", "nll"):
        raise TokenMergeError(f"metric must be 'wer', 'cer' or 'nll', got {metric!r}.")
    before, after, counts = _arrays(errors_before, errors_after, units)
    low, high = paired_bootstrap(before, after, counts, resamples=resamples, confidence=confidence, seed=seed)
    p_value, test = paired_permutation_test(before, after, seed=seed) if significance else (None, None)
    total = counts.sum()
    return PairedDifference(
        metric=metric,
        before=float(before.sum() / total),
        after=float(after.sum() / total),
        difference=float((after.sum() - before.sum()) / total),
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        utterances=int(before.size),
        units=int(total),
        p_value=p_value,
        test=test,
    )


def _errors_and_units(records: Sequence[Mapping[str, Any]], metric: str) -> tuple[list[float], list[float], list]:
    errors, units, keys = [], [], []
    for record in records:
        if metric == "wer":
            errors.append(record["substitutions"] + record["deletions"] + record["insertions"])
            units.append(record["substitutions"] + record["deletions"] + record["hits"])
        else:
            from hf_token_merge.evaluation.text import character_error_counts

            # files written before the rename name the ground truth "reference_normalized"
            target = record["target_normalized"] if "target_normalized" in record else record["reference_normalized"]
            counts = character_error_counts(target, record["prediction_normalized"])
            errors.append(counts.errors)
            units.append(counts.target_words)
        keys.append(record.get("id", record.get("index")))
    return errors, units, keys


def compare_records(
    before: Sequence[Mapping[str, Any]],
    after: Sequence[Mapping[str, Any]],
    *,
    metric: str = "wer",
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    significance: bool = True,
) -> PairedDifference:
    """`paired_difference` from two evaluations' per-utterance records (`WerResult.predictions`).

    Args:
        before: Records of the first model (`hits`, `substitutions`, `deletions`, `insertions`, and for CER
            `target_normalized` / `prediction_normalized`; the older `reference_normalized` is read too).
        after: Records of the second model, same utterances in the same order.
        metric: `"wer"` or `"cer"` (characters of the normalised texts, spaces included).
        resamples: Bootstrap resamples.
        confidence: Level of the interval.
        seed: Seed.
        significance: Also run the permutation test.

    Returns:
        A `PairedDifference`.
    """
    errors_before, units, keys_before = _errors_and_units(before, metric)
    errors_after, units_after, keys_after = _errors_and_units(after, metric)
    if keys_before != keys_after or units != units_after:
        raise TokenMergeError(
            "The two evaluations did not score the same utterances in the same order (ids or target lengths "
            "differ). Fix: evaluate both models on the same data, with the same normaliser."
        )
    return paired_difference(
        errors_before,
        errors_after,
        units,
        metric=metric,
        resamples=resamples,
        confidence=confidence,
        seed=seed,
        significance=significance,
    )
