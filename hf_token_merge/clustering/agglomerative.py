"""Exact average-linkage agglomerative clustering.

It keeps the full N x N distance matrix, so it is only offered up to a configured number of rows;
above that, k-means and threshold clustering work blockwise. Merging always takes the globally closest
pair (found through a per-row nearest-neighbour cache) and updates distances with the Lance-Williams
formula, so the result is the textbook average-linkage hierarchy cut at the stopping point.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from hf_token_merge.clustering.similarity import blocks, squared_distances


def _distance_matrix(rows: torch.Tensor, metric: str, block_size: int) -> torch.Tensor:
    n = rows.shape[0]
    distances = torch.empty(n, n, dtype=rows.dtype, device=rows.device)
    for part in blocks(n, block_size):
        if metric == "cosine":
            distances[part] = 1.0 - rows[part] @ rows.T
        else:
            distances[part] = squared_distances(rows[part], rows).sqrt_()
    distances.fill_diagonal_(float("inf"))
    return distances


def average_linkage(
    rows: torch.Tensor,
    metric: str,
    *,
    n_clusters: int | None = None,
    max_distance: float | None = None,
    block_size: int = 4096,
    show_progress: bool = True,
) -> torch.Tensor:
    """Merge clusters pairwise until `n_clusters` remain or the closest pair is farther than `max_distance`.

    Args:
        rows: `(n, d)` rows from `prepare_rows`.
        metric: "cosine" (distance `1 - cos`) or "euclidean".
        n_clusters: Stop at this many clusters.
        max_distance: Stop when the average-linkage distance of the closest pair exceeds this.
        block_size: Rows per block while building the distance matrix.
        show_progress: Show a tqdm bar over merges.

    Returns:
        Labels of length n (each row labelled by the index of its cluster's surviving root row).
    """
    n = rows.shape[0]
    distances = _distance_matrix(rows, metric, block_size)
    sizes = torch.ones(n, dtype=rows.dtype, device=rows.device)
    root = torch.arange(n, device=rows.device)
    nearest_distance, nearest = distances.min(dim=1)
    target = n_clusters if n_clusters is not None else 1
    inf = float("inf")
    for _ in tqdm(range(n - target), desc="agglomerative", disable=not show_progress, leave=False):
        i = int(nearest_distance.argmin())
        gap = float(nearest_distance[i])
        if gap == inf or (max_distance is not None and gap > max_distance):
            break
        j = int(nearest[i])
        size_i, size_j = sizes[i], sizes[j]
        merged = (size_i * distances[i] + size_j * distances[j]) / (size_i + size_j)
        merged[i] = inf
        merged[j] = inf
        distances[i] = merged
        distances[:, i] = merged
        distances[j] = inf
        distances[:, j] = inf
        sizes[i] += size_j
        root[root == j] = i
        nearest_distance[j] = inf

        # Rows whose nearest cluster was i or j must look again; the rest can only have come closer to i.
        stale = (nearest == i) | (nearest == j)
        stale[i] = True
        stale &= nearest_distance != inf
        stale_rows = stale.nonzero().flatten()
        if len(stale_rows):
            nearest_distance[stale_rows], nearest[stale_rows] = distances[stale_rows].min(dim=1)
        closer = merged < nearest_distance
        nearest_distance[closer] = merged[closer]
        nearest[closer] = i
    return root
