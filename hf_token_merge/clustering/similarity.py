"""Row similarities, computed block by block so that no N x N matrix is ever built."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def prepare_rows(rows: torch.Tensor, metric: str, copy: bool = True) -> torch.Tensor:
    """Return float32 rows ready for scoring: unit-norm rows for cosine.

    Args:
        rows: `(n, d)` weights of any floating dtype, on any device.
        metric: "cosine" or "euclidean".
        copy: Copy even when `rows` is float32 already. Pass False only for a tensor the caller owns
            (such as the result of an index), which is then normalised in place to save a copy.

    Returns:
        An `(n, d)` float32 tensor on the same device.
    """
    prepared = rows.detach().to(dtype=torch.float32, copy=copy)
    if metric == "cosine":
        prepared.div_(prepared.norm(dim=1, keepdim=True).clamp_min_(1e-12))
    return prepared


def scores(queries: torch.Tensor, keys: torch.Tensor, metric: str, keys_sq_norm: torch.Tensor | None = None):
    """Score every query against every key; larger means more similar.

    For cosine (unit-norm rows) this is the cosine similarity. For euclidean it is `2 q.k - |k|^2`, which
    orders keys exactly like the negative squared distance (the `|q|^2` term is the same for a query).

    Args:
        queries: `(b, d)` prepared rows.
        keys: `(m, d)` prepared rows.
        metric: "cosine" or "euclidean".
        keys_sq_norm: Optional cached `|k|^2`.

    Returns:
        A `(b, m)` score matrix.
    """
    product = queries @ keys.T
    if metric == "cosine":
        return product
    if keys_sq_norm is None:
        keys_sq_norm = keys.pow(2).sum(dim=1)
    return product.mul_(2).sub_(keys_sq_norm)


def squared_distances(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances `(b, m)`, clamped at zero against rounding."""
    return (queries.pow(2).sum(1, keepdim=True) + keys.pow(2).sum(1) - 2 * queries @ keys.T).clamp_min_(0)


def blocks(n: int, block_size: int) -> Iterator[slice]:
    """Yield consecutive slices of at most `block_size` covering `range(n)`."""
    for start in range(0, n, block_size):
        yield slice(start, min(start + block_size, n))
