"""Grouping of selected rows: `cluster_rows` looks the config's method up in the registry (`registry.py`).

The built-in methods (threshold, kmeans, agglomerative, frequency, random) register themselves in `methods.py`,
imported here for that side effect; a new method registers with `register_grouping_method` the same way.
"""

from __future__ import annotations

import math

import torch

from hf_token_merge.clustering import methods as _methods  # noqa: F401  (registers the built-in methods)
from hf_token_merge.clustering.registry import (
    GroupingMethod,
    grouping_method,
    grouping_methods,
    register_grouping_method,
)
from hf_token_merge.clustering.similarity import prepare_rows, scores
from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.errors import TokenMergeError

__all__ = [
    "GroupingMethod",
    "canonical_labels",
    "cluster_rows",
    "grouping_method",
    "grouping_methods",
    "prepare_rows",
    "register_grouping_method",
    "scores",
    "target_cluster_count",
]


def target_cluster_count(config: TokenMergeConfig, n_rows: int) -> int | None:
    """The number of clusters a config asks for, or None when it stops at a threshold.

    Raises:
        TokenMergeError: When `n_clusters` exceeds the number of selected rows.
    """
    if config.n_clusters is not None:
        if config.n_clusters > n_rows:
            raise TokenMergeError(
                f"n_clusters={config.n_clusters} is more than the {n_rows} selected rows; "
                f"use n_clusters <= {n_rows} or select more rows."
            )
        return config.n_clusters
    if config.target_ratio is not None:
        return max(1, math.ceil(config.target_ratio * n_rows))
    return None


def canonical_labels(labels: torch.Tensor) -> torch.Tensor:
    """Renumber cluster labels 0..k-1 in order of each cluster's first (lowest-index) member."""
    _, first_seen = torch.unique(labels, return_inverse=True)
    k = int(first_seen.max()) + 1
    first_member = torch.full((k,), labels.numel(), dtype=torch.long, device=labels.device)
    first_member.scatter_reduce_(0, first_seen, torch.arange(labels.numel(), device=labels.device), "amin")
    rank = torch.empty_like(first_member)
    rank[first_member.argsort()] = torch.arange(k, device=labels.device)
    return rank[first_seen]


def _share_clusters(total: int, sizes: list[int]) -> list[int]:
    """Split `total` clusters among blocks in proportion to their sizes (largest remainder), each in [1, size]."""
    if total < len(sizes):
        raise TokenMergeError(
            f"n_clusters={total} is fewer than the {len(sizes)} partitions (partition_size); every partition keeps "
            f"at least one row, so use n_clusters >= {len(sizes)}."
        )
    exact = [total * size / sum(sizes) for size in sizes]
    shares = [max(1, min(size, math.floor(x))) for x, size in zip(exact, sizes, strict=True)]
    order = sorted(range(len(sizes)), key=lambda i: exact[i] - math.floor(exact[i]), reverse=True)
    while sum(shares) != total:
        step = 1 if sum(shares) < total else -1
        for i in order:
            if sum(shares) == total:
                break
            if 1 <= shares[i] + step <= sizes[i]:
                shares[i] += step
    return shares


def cluster_rows(
    rows: torch.Tensor,
    config: TokenMergeConfig,
    *,
    counts: torch.Tensor | None = None,
    show_progress: bool = True,
) -> torch.Tensor:
    """Group rows as the config says (within each partition when `partition_size` is set).

    Args:
        rows: `(n, d)` rows from `prepare_rows(..., config.metric)`, in selected-id order.
        config: Method, metric, stopping option and partitioning.
        counts: Optional token counts; threshold clustering then visits frequent rows first.
        show_progress: Show tqdm progress bars.

    Returns:
        Canonical labels (see `canonical_labels`) of length n.
    """
    n = rows.shape[0]
    k = target_cluster_count(config, n)
    if config.partition_size is None or config.partition_size >= n:
        return _cluster(rows, config, k, counts, show_progress)
    bounds = list(range(0, n, config.partition_size)) + [n]
    sizes = [end - start for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
    shares = _share_clusters(config.n_clusters, sizes) if config.n_clusters is not None else [None] * len(sizes)
    labels = torch.empty(n, dtype=torch.long, device=rows.device)
    offset = 0
    for start, end, share in zip(bounds[:-1], bounds[1:], shares, strict=True):
        part_k = share if share is not None else target_cluster_count(config, end - start)
        part_counts = counts[start:end] if counts is not None else None
        part = _cluster(rows[start:end], config, part_k, part_counts, show_progress)
        labels[start:end] = part + offset
        offset += int(part.max()) + 1
    return canonical_labels(labels)


def _cluster(
    rows: torch.Tensor, config: TokenMergeConfig, k: int | None, counts: torch.Tensor | None, show_progress: bool
) -> torch.Tensor:
    method = grouping_method(config.method)
    if method.needs_counts and counts is None:
        raise TokenMergeError(
            f"method={config.method!r} needs calibration counts; pass token_counts to plan_token_merge."
        )
    return canonical_labels(method.group(rows, config, k, counts, show_progress))
