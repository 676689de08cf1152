"""A random grouping: the control of the sweep and the budget search."""

from __future__ import annotations

import torch


def random_labels(n: int, k: int, seed: int) -> torch.Tensor:
    """A random grouping of n ids into exactly k non-empty clusters.

    Args:
        n: Ids to group.
        k: Clusters, in [1, n].
        seed: Seed of the draw.

    Returns:
        `(n,)` labels in 0..k-1, each used at least once.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.arange(k), torch.randint(k, (n - k,), generator=generator)])
    return labels[torch.randperm(n, generator=generator)]
