"""The built-in grouping methods, each registered under its `TokenMergeConfig.method` name."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hf_token_merge.clustering.agglomerative import average_linkage
from hf_token_merge.clustering.frequency import least_frequent_labels
from hf_token_merge.clustering.kmeans import kmeans
from hf_token_merge.clustering.random_grouping import random_labels
from hf_token_merge.clustering.registry import COUNT_STOPS, THRESHOLD_STOPS, register_grouping_method
from hf_token_merge.clustering.threshold import leader_clustering
from hf_token_merge.errors import TokenMergeError

if TYPE_CHECKING:
    from hf_token_merge.config import TokenMergeConfig


@register_grouping_method("threshold", stops=THRESHOLD_STOPS)
def group_by_threshold(
    rows: torch.Tensor, config: TokenMergeConfig, k: int | None, counts: torch.Tensor | None, show_progress: bool
) -> torch.Tensor:
    """Greedy leader clustering; with counts, frequent rows lead first."""
    threshold = config.similarity_threshold if config.metric == "cosine" else config.distance_threshold
    # Stable sort keeps id order among equally frequent rows.
    order = None if counts is None else torch.sort(-counts.to(torch.float64), stable=True).indices
    return leader_clustering(
        rows, config.metric, threshold, order=order, block_size=config.block_size, show_progress=show_progress
    )


@register_grouping_method("kmeans", stops=COUNT_STOPS)
def group_by_kmeans(
    rows: torch.Tensor, config: TokenMergeConfig, k: int | None, counts: torch.Tensor | None, show_progress: bool
) -> torch.Tensor:
    """Lloyd's k-means to k rows."""
    return kmeans(
        rows,
        k,
        config.metric,
        seed=config.seed,
        max_iter=config.max_iter,
        tol=config.tol,
        projection_dim=config.projection_dim,
        block_size=config.block_size,
        show_progress=show_progress,
    )


@register_grouping_method("agglomerative", stops=COUNT_STOPS + THRESHOLD_STOPS)
def group_by_average_linkage(
    rows: torch.Tensor, config: TokenMergeConfig, k: int | None, counts: torch.Tensor | None, show_progress: bool
) -> torch.Tensor:
    """Exact average linkage to k rows or to a threshold (an n x n matrix, so at most `agglomerative_max_rows`)."""
    n = rows.shape[0]
    if n > config.agglomerative_max_rows:
        raise TokenMergeError(
            f"Agglomerative clustering of {n} rows needs an {n} x {n} distance matrix "
            f"({n * n * 4 / 2**30:.1f} GiB); select fewer rows, raise agglomerative_max_rows, "
            "or use method='kmeans' or 'threshold', which work blockwise."
        )
    max_distance = None
    if config.similarity_threshold is not None:
        max_distance = 1.0 - config.similarity_threshold
    elif config.distance_threshold is not None:
        max_distance = config.distance_threshold
    return average_linkage(
        rows,
        config.metric,
        n_clusters=k,
        max_distance=max_distance,
        block_size=config.block_size,
        show_progress=show_progress,
    )


@register_grouping_method("frequency", stops=COUNT_STOPS, needs_counts=True, by_similarity=False)
def group_by_frequency(
    rows: torch.Tensor, config: TokenMergeConfig, k: int | None, counts: torch.Tensor | None, show_progress: bool
) -> torch.Tensor:
    """The k - 1 most frequent rows stay alone, all others share one (see `least_frequent_labels`)."""
    return least_frequent_labels(counts, k)


@register_grouping_method("random", stops=COUNT_STOPS, by_similarity=False)
def group_at_random(
    rows: torch.Tensor, config: TokenMergeConfig, k: int | None, counts: torch.Tensor | None, show_progress: bool
) -> torch.Tensor:
    """A random grouping into k rows, seeded by `config.seed`: the control of sweeps and budget searches."""
    return random_labels(rows.shape[0], k, config.seed)
