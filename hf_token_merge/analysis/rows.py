"""How redundant are the selected rows? Similarity distributions, nearest neighbours, the threshold curve, PCA.

Everything is blockwise: for large N the pairwise distribution is taken over a random sample of rows (the size
is reported), and nearest neighbours of a sample of queries are searched among all rows, block by block.
"""

from __future__ import annotations

import math

import torch

from hf_token_merge.clustering.similarity import blocks, prepare_rows, squared_distances
from hf_token_merge.clustering.threshold import leader_clustering


def sample_rows(n: int, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of `min(n, size)` rows drawn without replacement (all rows when `n <= size`)."""
    if n <= size:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


def _values(queries: torch.Tensor, keys: torch.Tensor, metric: str) -> torch.Tensor:
    """Cosine similarities (unit-norm rows) or Euclidean distances, `(b, m)`."""
    return queries @ keys.T if metric == "cosine" else squared_distances(queries, keys).sqrt_()


def pairwise_values(rows: torch.Tensor, metric: str, block_size: int = 2048) -> torch.Tensor:
    """All `i < j` pair similarities (cosine) or distances (euclidean) of `rows`: `n (n - 1) / 2` values.

    Callers pass a sample, so the output stays small (4,096 rows give 8.4 M values).
    """
    prepared = prepare_rows(rows, metric)
    values = []
    for part in blocks(prepared.shape[0], block_size):
        block = prepared[part]
        scores = _values(block, prepared, metric)
        row_index = torch.arange(part.start, part.stop)[:, None]
        upper = torch.arange(prepared.shape[0])[None, :] > row_index
        values.append(scores[upper])
    return torch.cat(values)


def nearest_neighbour_values(
    rows: torch.Tensor, metric: str, queries: torch.Tensor, block_size: int = 4096
) -> torch.Tensor:
    """Similarity (cosine) or distance (euclidean) of each query row to its nearest other row among all rows.

    Args:
        rows: `(n, d)` rows.
        metric: "cosine" or "euclidean".
        queries: Indices of the query rows.
        block_size: Key rows per block.

    Returns:
        One value per query.
    """
    prepared = prepare_rows(rows, metric)
    query_rows = prepared[queries]
    best = torch.full((len(queries),), -math.inf if metric == "cosine" else math.inf)
    for part in blocks(prepared.shape[0], block_size):
        keys = prepared[part]
        scores = _values(query_rows, keys, metric)
        fill = -math.inf if metric == "cosine" else math.inf
        inside = ((queries >= part.start) & (queries < part.stop)).nonzero().flatten()
        scores[inside, queries[inside] - part.start] = fill  # a row is not its own neighbour
        if metric == "cosine":
            best = torch.maximum(best, scores.amax(dim=1))
        else:
            best = torch.minimum(best, scores.amin(dim=1))
    return best


def threshold_curve(
    rows: torch.Tensor, metric: str, thresholds: list[float], block_size: int = 4096
) -> list[tuple[float, int]]:
    """Clusters left by leader clustering at each threshold: the "how much could merge" curve.

    Returns:
        `(threshold, clusters)` pairs, in the order given.
    """
    prepared = prepare_rows(rows, metric)
    curve = []
    for threshold in thresholds:
        labels = leader_clustering(prepared, metric, threshold, block_size=block_size, show_progress=False)
        curve.append((float(threshold), int(labels.max()) + 1))
    return curve


def pca_spectrum(rows: torch.Tensor, block_size: int = 8192) -> torch.Tensor:
    """Explained-variance ratios of the principal components of `rows`, largest first."""
    data = rows.detach().to(torch.float32)
    mean = data.mean(dim=0)
    covariance = torch.zeros(data.shape[1], data.shape[1])
    for part in blocks(data.shape[0], block_size):
        centred = data[part] - mean
        covariance.addmm_(centred.T, centred)
    eigenvalues = torch.linalg.eigvalsh(covariance.double()).flip(0).clamp_min(0)
    return (eigenvalues / eigenvalues.sum()).to(torch.float32)


def effective_rank(spectrum: torch.Tensor) -> float:
    """Roy & Vetterli's effective rank: exp of the entropy of the normalised spectrum."""
    p = spectrum[spectrum > 0].double()
    return float(torch.exp(-(p * p.log()).sum()))


def components_for(spectrum: torch.Tensor, fraction: float) -> int:
    """Smallest number of leading components explaining at least `fraction` of the variance."""
    cumulative = spectrum.double().cumsum(0)
    return int((cumulative < fraction - 1e-12).sum()) + 1
