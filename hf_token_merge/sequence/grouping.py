"""Which positions of a sequence become one token, and how they are pooled.

Every grouping returns `group` of shape `(batch, length)`: the output token (numbered from 0 in sequence order
within each row) that each position joins, or -1 for a position that is removed (padding, or a token an oracle
drop discards). Text positions are always groups of their own, so they are never merged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.sequence.config import MergeStage


def affinity_groups(
    hidden: torch.Tensor, valid: torch.Tensor, mergeable: torch.Tensor, threshold: float, window: int
) -> torch.Tensor:
    """Affinity Pooling's grouping: one greedy scan from left to right.

    A mergeable token joins the open group when the group is made of mergeable tokens and the token's cosine
    similarity to any of the group's last `window` members is at least `threshold`; otherwise the group closes
    and the token opens a new one. Text tokens and padding always close the open group.

    Args:
        hidden: `(batch, length, dim)` hidden states.
        valid: `(batch, length)` bool, False at padding.
        mergeable: `(batch, length)` bool, True at speech positions.
        threshold: Cosine threshold tau.
        window: How many of the open group's last members are compared (omega).

    Returns:
        `(batch, length)` int64 group of every position, -1 at padding.
    """
    batch, length = valid.shape
    mergeable = mergeable & valid
    unit = torch.nn.functional.normalize(hidden.float(), dim=-1)
    # similarity[b, i, j - 1] = cos(h_i, h_{i-j}); positions before the row start can never be in the group
    similarity = torch.full((batch, length, window), float("-inf"))
    for back in range(1, min(window, length - 1) + 1):
        similarity[:, back:, back - 1] = (unit[:, back:] * unit[:, :-back]).sum(-1).cpu()
    passes = similarity >= threshold
    if window == 1:  # the open group's last member is always the previous token: no scan needed
        joins = torch.zeros(batch, length, dtype=torch.bool)
        joins[:, 1:] = mergeable[:, 1:].cpu() & mergeable[:, :-1].cpu() & passes[:, 1:, 0]
        return _number_groups(valid.cpu(), joins)
    joins = torch.zeros(batch, length, dtype=torch.bool)
    mergeable_rows, passes_rows = mergeable.cpu().tolist(), passes.tolist()
    for row in range(batch):
        group_start, open_speech = 0, False
        for i in range(length):
            speech = mergeable_rows[row][i]
            reach = min(window, i - group_start)
            if speech and open_speech and any(passes_rows[row][i][: max(reach, 0)]):
                joins[row, i] = True
            else:
                group_start, open_speech = i, speech
    return _number_groups(valid.cpu(), joins)


def oracle_groups(
    valid: torch.Tensor, mergeable: torch.Tensor, mode: str, retention: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Groupings that ignore the hidden states, for oracle interventions.

    Each maximal run of consecutive speech positions (a span of n tokens) keeps `max(1, round(n * retention))`
    tokens. 'uniform_merge' mean-pools equal consecutive groups, 'uniform_drop' keeps the first token of each
    such group, 'random_drop' keeps a random subset.

    Args:
        valid: `(batch, length)` bool, False at padding.
        mergeable: `(batch, length)` bool, True at speech positions.
        mode: 'uniform_merge', 'uniform_drop' or 'random_drop'.
        retention: Share of each span that survives, in (0, 1].
        generator: Random source for 'random_drop'.

    Returns:
        `(batch, length)` int64 group of every position, -1 at padding and dropped tokens.
    """
    valid, mergeable = valid.cpu(), (mergeable & valid).cpu()
    batch, length = valid.shape
    joins = torch.zeros(batch, length, dtype=torch.bool)
    removed = ~valid.clone()
    for row in range(batch):
        for start, end in _spans(mergeable[row]):
            n = end - start
            kept = max(1, round(n * retention))
            slot = torch.arange(n) * kept // n  # equal consecutive groups
            if mode == "uniform_merge":
                joins[row, start + 1 : end] = slot[1:] == slot[:-1]
            elif mode == "uniform_drop":
                removed[row, start + 1 : end] = slot[1:] == slot[:-1]
            elif mode == "random_drop":
                keep = torch.randperm(n, generator=generator)[:kept]
                drop = torch.ones(n, dtype=torch.bool)
                drop[keep] = False
                removed[row, start:end] = drop
            else:
                raise TokenMergeError(f"Unknown oracle mode {mode!r}.")
    return _number_groups(valid & ~removed, joins)


def split_groups_at(group: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Cut every group that spans position `ends[row]` in two, so no group holds frames on both sides.

    Args:
        group: `(batch, length)` groups from a grouping function (no removed positions).
        ends: `(batch,)` first position after the cut.

    Returns:
        `(batch, length)` renumbered groups.
    """
    length = group.shape[1]
    joins = torch.zeros_like(group, dtype=torch.bool)
    joins[:, 1:] = group[:, 1:] == group[:, :-1]
    joins &= torch.arange(length, device=group.device)[None] != ends.to(group.device)[:, None]
    return _number_groups(group >= 0, joins)


def stage_groups(
    stage: MergeStage,
    hidden: torch.Tensor,
    valid: torch.Tensor,
    mergeable: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The grouping a stage asks for (see `affinity_groups` and `oracle_groups`)."""
    if stage.mode == "affinity":
        return affinity_groups(hidden, valid, mergeable, stage.threshold, stage.window)
    return oracle_groups(valid, mergeable, stage.mode, stage.retention, generator)


def _spans(mask: torch.Tensor) -> list[tuple[int, int]]:
    """Maximal runs of True in a 1-D bool tensor, as half-open (start, end)."""
    padded = torch.cat([torch.zeros(1, dtype=torch.int8), mask.to(torch.int8), torch.zeros(1, dtype=torch.int8)])
    edges = torch.diff(padded).nonzero().flatten().tolist()
    return list(zip(edges[::2], edges[1::2], strict=True))


def _number_groups(kept: torch.Tensor, joins: torch.Tensor) -> torch.Tensor:
    """Number groups in order: a kept position opens a new group unless it joins the previous one."""
    opens = kept & ~joins
    group = torch.cumsum(opens.long(), dim=1) - 1
    return torch.where(kept, group, torch.full_like(group, -1))


@dataclass
class Pooled:
    """A merged, left-padded batch.

    Attributes:
        hidden: `(batch, merged_length, dim)` mean of each group's members, in the input dtype.
        valid: `(batch, merged_length)` bool, False at the left padding.
        positions: `(batch, merged_length)` float64 position of every token.
        speech: `(batch, merged_length)` bool, True for tokens pooled from speech positions.
        slot: `(batch, length)` int64 output index of every input position, -1 where removed.
    """

    hidden: torch.Tensor
    valid: torch.Tensor
    positions: torch.Tensor
    speech: torch.Tensor
    slot: torch.Tensor


def pool_groups(
    hidden: torch.Tensor, group: torch.Tensor, positions: torch.Tensor, speech: torch.Tensor, position_strategy: str
) -> Pooled:
    """Mean-pool every group into one token and pack the rows to the left-padded merged length.

    Args:
        hidden: `(batch, length, dim)` hidden states.
        group: `(batch, length)` from a grouping function.
        positions: `(batch, length)` positions of the input tokens.
        speech: `(batch, length)` bool, True at speech positions.
        position_strategy: 'first', 'mean' or 'contiguous' (see `SequenceMergeConfig`).

    Returns:
        The pooled batch.
    """
    device = hidden.device
    batch, length, dim = hidden.shape
    group = group.to(device)
    counts_per_row = group.max(dim=1).values + 1  # groups per row
    merged_length = max(int(counts_per_row.max()), 1)
    kept = group >= 0
    slot = torch.where(kept, group + (merged_length - counts_per_row)[:, None], torch.full_like(group, -1))
    flat = (slot + torch.arange(batch, device=device)[:, None] * merged_length)[kept]

    total = torch.zeros(batch * merged_length, dim, dtype=torch.float32, device=device)
    total.index_add_(0, flat, hidden[kept].float())
    count = torch.zeros(batch * merged_length, dtype=torch.float32, device=device)
    count.index_add_(0, flat, torch.ones_like(flat, dtype=torch.float32))
    pooled = (total / count.clamp_min(1.0)[:, None]).to(hidden.dtype).view(batch, merged_length, dim)
    valid = (count > 0).view(batch, merged_length)

    positions = positions.to(device=device, dtype=torch.float64)
    if position_strategy == "mean":
        summed = torch.zeros(batch * merged_length, dtype=torch.float64, device=device)
        merged_positions = summed.index_add_(0, flat, positions[kept]) / count.double().clamp_min(1.0)
    else:
        first = torch.full((batch * merged_length,), float("inf"), dtype=torch.float64, device=device)
        merged_positions = first.scatter_reduce_(0, flat, positions[kept], "amin")
    merged_positions = merged_positions.view(batch, merged_length)
    if position_strategy == "contiguous":
        row_start = torch.where(valid, merged_positions, torch.full_like(merged_positions, float("inf"))).amin(1)
        merged_positions = row_start[:, None] + (torch.cumsum(valid.long(), dim=1) - 1).double()
    merged_positions = torch.where(valid, merged_positions, torch.zeros_like(merged_positions))

    merged_speech = torch.zeros(batch * merged_length, dtype=torch.bool, device=device)
    merged_speech[flat] = speech.to(device)[kept]
    return Pooled(
        hidden=pooled,
        valid=valid,
        positions=merged_positions,
        speech=merged_speech.view(batch, merged_length),
        slot=slot,
    )
