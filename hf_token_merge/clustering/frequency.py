"""Grouping by calibration frequency instead of similarity: the frequent ids keep rows of their own."""

from __future__ import annotations

import torch

from hf_token_merge.errors import TokenMergeError


def least_frequent_labels(counts: torch.Tensor, k: int) -> torch.Tensor:
    """The k - 1 most frequent ids stay alone; every other id joins one shared cluster.

    Args:
        counts: `(n,)` calibration counts of the selected ids, in selection order.
        k: Rows to keep for them (at least 1).

    Returns:
        `(n,)` labels: 0..k-2 for the most frequent ids (ties go to the earlier id), k - 1 for all the others.
    """
    if k < 1:
        raise TokenMergeError(f"k must be >= 1, got {k}.")
    order = torch.sort(-counts.to(torch.float64), stable=True).indices
    labels = torch.full((counts.numel(),), k - 1, dtype=torch.long)
    labels[order[: k - 1]] = torch.arange(min(k - 1, counts.numel()))
    return labels
