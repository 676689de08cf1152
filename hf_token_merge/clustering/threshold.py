"""Greedy leader clustering at a similarity (or distance) threshold.

Rows are visited in order (most frequent first when counts are known). A row joins the most similar
existing leader if that leader is within the threshold; otherwise it becomes a leader itself. So every
member is within the threshold of its cluster's leader, and no two leaders are. The scan is blockwise:
each block is scored against all leaders at once, and only the rows that found no leader are resolved
one by one against each other.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from hf_token_merge.clustering.similarity import blocks, scores


def _limit(metric: str, threshold: float, queries: torch.Tensor) -> torch.Tensor | float:
    """The score a key must reach to be within `threshold` of each query (see `scores`)."""
    if metric == "cosine":
        return threshold
    # 2 q.k - |k|^2 >= |q|^2 - t^2   <=>   |q - k|^2 <= t^2
    return queries.pow(2).sum(1) - threshold**2


def leader_clustering(
    rows: torch.Tensor,
    metric: str,
    threshold: float,
    *,
    order: torch.Tensor | None = None,
    block_size: int = 4096,
    show_progress: bool = True,
) -> torch.Tensor:
    """Cluster prepared rows so that each member is within `threshold` of its leader.

    Args:
        rows: `(n, d)` rows from `prepare_rows`.
        metric: "cosine" (threshold is a minimum similarity) or "euclidean" (a maximum distance).
        threshold: The similarity or distance threshold.
        order: Visiting order (a permutation of `range(n)`); defaults to the row order.
        block_size: Rows per block.
        show_progress: Show a tqdm bar over blocks.

    Returns:
        Labels of length n (cluster ids in order of leader creation).
    """
    n = rows.shape[0]
    order = torch.arange(n, device=rows.device) if order is None else order.to(rows.device)
    labels = torch.full((n,), -1, dtype=torch.long, device=rows.device)
    leaders = rows.new_empty(0, rows.shape[1])
    for part in tqdm(list(blocks(n, block_size)), desc="threshold clustering", disable=not show_progress, leave=False):
        index = order[part]
        block = rows[index]
        if leaders.shape[0]:
            best, nearest = scores(block, leaders, metric).max(dim=1)
            joined = best >= _limit(metric, threshold, block)
            labels[index[joined]] = nearest[joined]
            free = (~joined).nonzero().flatten()
        else:
            free = torch.arange(len(index), device=rows.device)
        if len(free) == 0:
            continue
        candidates = block[free]
        limit = _limit(metric, threshold, candidates)
        within = scores(candidates, candidates, metric) >= (limit if metric == "cosine" else limit[:, None])
        taken = torch.zeros(len(free), dtype=torch.bool, device=rows.device)
        new_leaders = []
        for position in range(len(free)):
            if taken[position]:
                continue
            members = within[position] & ~taken
            members[position] = True
            taken |= members
            labels[index[free[members]]] = leaders.shape[0] + len(new_leaders)
            new_leaders.append(position)
        leaders = torch.cat([leaders, candidates[new_leaders]])
    return labels
