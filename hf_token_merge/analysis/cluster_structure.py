"""What the merged clusters of an FSQ speech vocabulary look like: lattice neighbours and code frequency.

An FSQ codec (Llasa's X-codec2, the reference codec) numbers its codes as mixed-radix digits, one digit per latent
dimension, so two codes one level apart in one dimension decode to nearly the same sound. If merging by row
similarity puts such lattice neighbours into one cluster more often than chance, the codec's geometry predicts
which rows can merge, and that carries over to other FSQ vocabularies. Code frequency is the other candidate: rare
codes get few gradient updates, so their rows may stay close to each other (or to their initialisation).

* `lattice_neighbour_pairs(levels)`: every pair of codes one level apart in one dimension;
* `neighbour_sharing(labels, levels, rows=...)`: the share of those pairs that fall into one cluster, against the
  same share under random permutations of the cluster labels (which keeps every cluster's size);
* `frequency_and_merging(labels, counts, rows=...)`: whether a row's frequency predicts that it was merged (its
  cluster has another member): a rank AUC and the merged share per frequency bin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.tables import markdown_table

__all__ = [
    "FrequencyMerging",
    "NeighbourSharing",
    "frequency_and_merging",
    "lattice_neighbour_pairs",
    "neighbour_sharing",
    "structure_markdown",
]


@dataclass
class NeighbourSharing:
    """How often FSQ lattice neighbours share a cluster, against chance.

    Attributes:
        pairs: Lattice-neighbour pairs with both codes among the rows considered.
        shared: Share of those pairs whose two codes are in one cluster.
        chance: Mean of that share when the cluster labels are permuted among the rows considered.
        chance_low: 2.5th percentile of the permuted shares.
        chance_high: 97.5th percentile of the permuted shares.
        p_value: One-sided permutation p-value of `shared` being this high by chance.
        permutations: Number of permutations.
    """

    pairs: int
    shared: float
    chance: float
    chance_low: float
    chance_high: float
    p_value: float
    permutations: int

    @property
    def ratio(self) -> float:
        """`shared / chance` (inf when chance is 0 and some pairs are shared)."""
        if self.chance == 0:
            return math.inf if self.shared > 0 else 1.0
        return self.shared / self.chance

    def to_dict(self) -> dict[str, float]:
        """The fields and the ratio, for JSON."""
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class FrequencyMerging:
    """Whether a row's frequency predicts that it was merged.

    Attributes:
        rows: Rows considered.
        merged: Rows whose cluster has at least one other member.
        auc: Probability that a merged row is rarer than a row left alone (ties count half); 0.5 is no relation,
            above 0.5 means rare rows merge more. NaN when either group is empty.
        bins: Per frequency bin (rows sorted by count, split into equal-sized bins): the lowest and highest count,
            the number of rows and the share merged.
    """

    rows: int
    merged: int
    auc: float
    bins: list[dict[str, float]]

    def to_dict(self) -> dict:
        """The fields, for JSON."""
        return asdict(self)


def _checked_levels(levels: Sequence[int]) -> torch.Tensor:
    levels_t = torch.tensor([int(level) for level in levels], dtype=torch.int64)
    if levels_t.numel() == 0 or bool((levels_t < 2).any()):
        raise TokenMergeError(f"FSQ levels must be integers >= 2, one per dimension; got {list(levels)}.")
    return levels_t


def lattice_neighbour_pairs(levels: Sequence[int]) -> torch.Tensor:
    """All pairs of FSQ codes that differ by one level in exactly one dimension.

    Codes are mixed-radix numbers with the first dimension least significant, as `SpeechCodec` and X-codec2 number
    them.

    Args:
        levels: FSQ levels per dimension, e.g. `[7, 5, 5, 5, 5]` (4,375 codes) or Llasa's `[4] * 8`.

    Returns:
        An int64 tensor (pairs, 2), the smaller code first.
    """
    levels_t = _checked_levels(levels)
    basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.int64), levels_t[:-1]]), 0)
    codes = torch.arange(int(levels_t.prod()))
    pairs = []
    for dimension in range(levels_t.numel()):
        digit = (codes // basis[dimension]) % levels_t[dimension]
        lower = codes[digit < levels_t[dimension] - 1]
        pairs.append(torch.stack([lower, lower + basis[dimension]], 1))
    return torch.cat(pairs)


def _considered(rows: torch.Tensor | None, n: int) -> torch.Tensor:
    """A boolean mask of the rows to consider (all when `rows` is None)."""
    if rows is None:
        return torch.ones(n, dtype=torch.bool)
    rows = torch.as_tensor(rows)
    if rows.dtype == torch.bool:
        if rows.numel() != n:
            raise TokenMergeError(f"The row mask has {rows.numel()} entries for {n} labels; pass one per row.")
        return rows.clone()
    mask = torch.zeros(n, dtype=torch.bool)
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n):
        raise TokenMergeError(f"Row indices must lie in [0, {n}); got {int(rows.min())}..{int(rows.max())}.")
    mask[rows.long()] = True
    return mask


def neighbour_sharing(
    labels: torch.Tensor,
    levels: Sequence[int],
    rows: torch.Tensor | None = None,
    permutations: int = 1000,
    seed: int = 0,
) -> NeighbourSharing:
    """How often FSQ lattice neighbours fall into one cluster, against label permutations.

    Args:
        labels: Cluster label per code (`prod(levels)` entries), e.g. a merge plan's labels over the speech rows.
        levels: FSQ levels per dimension.
        rows: The codes to consider (a boolean mask or indices), e.g. the codes used in calibration data: pairs
            need both codes among them, and permutations shuffle labels among them only. None: all codes.
        permutations: Random permutations for the chance level.
        seed: Seed of the permutations.

    Returns:
        A `NeighbourSharing`.
    """
    labels = torch.as_tensor(labels).long().flatten()
    n = int(_checked_levels(levels).prod())
    if labels.numel() != n:
        raise TokenMergeError(
            f"{labels.numel()} cluster labels for FSQ levels {list(levels)} ({n} codes); pass one label per code."
        )
    if permutations < 1:
        raise TokenMergeError(f"permutations must be >= 1; got {permutations}.")
    mask = _considered(rows, n)
    pairs = lattice_neighbour_pairs(levels)
    pairs = pairs[mask[pairs[:, 0]] & mask[pairs[:, 1]]]
    if len(pairs) == 0:
        raise TokenMergeError("No lattice-neighbour pair has both codes among the rows considered; widen `rows`.")
    observed = (labels[pairs[:, 0]] == labels[pairs[:, 1]]).double().mean().item()
    considered = mask.nonzero().flatten()
    generator = torch.Generator().manual_seed(seed)
    shuffled = labels.clone()
    chance = torch.empty(permutations, dtype=torch.float64)
    for index in range(permutations):
        shuffled[considered] = labels[considered[torch.randperm(len(considered), generator=generator)]]
        chance[index] = (shuffled[pairs[:, 0]] == shuffled[pairs[:, 1]]).double().mean()
    return NeighbourSharing(
        pairs=len(pairs),
        shared=observed,
        chance=chance.mean().item(),
        chance_low=torch.quantile(chance, 0.025).item(),
        chance_high=torch.quantile(chance, 0.975).item(),
        p_value=(1 + int((chance >= observed).sum())) / (1 + permutations),
        permutations=permutations,
    )


def _rank_auc(low_group: torch.Tensor, high_group: torch.Tensor) -> float:
    """P(a value of `low_group` < a value of `high_group`), ties counting half (Mann-Whitney U / n1 n2)."""
    if len(low_group) == 0 or len(high_group) == 0:
        return math.nan
    values = torch.cat([low_group, high_group]).double()
    order = values.argsort()
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    # average ranks over ties
    unique, inverse = values.unique(return_inverse=True)
    rank_sums = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, ranks)
    tie_counts = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
    ranks = (rank_sums / tie_counts)[inverse]
    n_high = len(high_group)
    u_high = ranks[len(low_group) :].sum().item() - n_high * (n_high + 1) / 2
    return u_high / (len(low_group) * n_high)


def frequency_and_merging(
    labels: torch.Tensor,
    counts: torch.Tensor,
    rows: torch.Tensor | None = None,
    bins: int = 10,
) -> FrequencyMerging:
    """Whether rare rows are the ones that merge.

    A row counts as merged when its cluster (over all labels, not only the rows considered) has another member.

    Args:
        labels: Cluster label per row.
        counts: Occurrences per row in calibration data (same length).
        rows: The rows to consider (a boolean mask or indices), e.g. the used ones. None: all rows.
        bins: Frequency bins for the table (rows sorted by count, split into this many near-equal parts).

    Returns:
        A `FrequencyMerging`.
    """
    labels = torch.as_tensor(labels).long().flatten()
    counts = torch.as_tensor(counts).flatten()
    if counts.numel() != labels.numel():
        raise TokenMergeError(f"{counts.numel()} counts for {labels.numel()} labels; pass one count per row.")
    if bins < 1:
        raise TokenMergeError(f"bins must be >= 1; got {bins}.")
    mask = _considered(rows, labels.numel())
    _, inverse, sizes = labels.unique(return_inverse=True, return_counts=True)
    merged = (sizes[inverse] > 1)[mask]
    counts = counts[mask].double()
    order = counts.argsort(stable=True)
    table = []
    for part in torch.tensor_split(order, min(bins, len(order))):
        table.append(
            {
                "count_low": counts[part].min().item(),
                "count_high": counts[part].max().item(),
                "rows": len(part),
                "merged_share": merged[part].double().mean().item(),
            }
        )
    # AUC > 0.5 when merged rows tend to be rarer: merged counts play the "low" group
    auc = _rank_auc(counts[merged], counts[~merged])
    return FrequencyMerging(rows=int(mask.sum()), merged=int(merged.sum()), auc=auc, bins=table)


def structure_markdown(sharing: NeighbourSharing, frequency: FrequencyMerging) -> str:
    """One table: lattice-neighbour sharing against chance, and the frequency AUC, with the merged share per bin."""
    summary = markdown_table(
        ["question", "measured", "chance", "ratio / p"],
        [
            [
                f"lattice neighbours in one cluster ({sharing.pairs:,} pairs)",
                f"{sharing.shared:.1%}",
                f"{sharing.chance:.1%} ({sharing.chance_low:.1%}–{sharing.chance_high:.1%})",
                f"{sharing.ratio:.1f}× / p = {sharing.p_value:.3g}",
            ],
            [
                f"merged rows are rarer (AUC; {frequency.merged:,} of {frequency.rows:,} rows merged)",
                f"{frequency.auc:.3f}",
                "0.500",
                "",
            ],
        ],
    )
    per_bin = markdown_table(
        ["count range", "rows", "merged"],
        [
            [f"{b['count_low']:g}–{b['count_high']:g}", f"{b['rows']:,}", f"{b['merged_share']:.1%}"]
            for b in frequency.bins
        ],
    )
    return f"{summary}\n\nMerged share by code frequency:\n\n{per_bin}"
