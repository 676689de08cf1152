"""Plan a merge without touching the model: `plan_token_merge` -> `MergePlan`.

The plan maps every original token id to a row of the merged ("compact") embedding. Unselected ids keep a
row of their own; each cluster of selected ids shares one row. Compact rows are ordered by the smallest
original id they hold, so every id below the first merged token keeps its number.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hf_token_merge.clustering import canonical_labels, cluster_rows, prepare_rows
from hf_token_merge.clustering.kmeans import LARGE_WORK
from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.remap.locate import EmbeddingPair, locate_embeddings
from hf_token_merge.selection import protected_token_ids, select_token_ids

logger = logging.getLogger(__name__)

PLAN_TENSORS_NAME = "token_merge_plan.safetensors"
PLAN_META_NAME = "token_merge_plan.json"
PLAN_TENSOR_FIELDS = (
    "selected_ids",
    "cluster_of_selected",
    "old_to_new",
    "cluster_rows",
    "representative_ids",
    "medoid_ids",
    "member_weights",
    "member_log_share",
)


@dataclass
class MergePlan:
    """Where every original token id goes.

    Attributes:
        config: The config the plan was computed from.
        vocab_size: Rows of the original input embedding.
        tied: Whether the model ties its LM head to its input embedding.
        selected_ids: `(n,)` sorted ids that were allowed to merge.
        cluster_of_selected: `(n,)` cluster of each selected id, clusters numbered by their smallest member.
        old_to_new: `(vocab_size,)` merged-embedding row of every original id.
        cluster_rows: `(k,)` merged-embedding row of every cluster.
        representative_ids: `(k,)` the id a cluster decodes to: the member the merged model's argmax picks
            (the most frequent member under frequency correction, else the smallest id).
        medoid_ids: `(k,)` the member row closest to all others in its cluster.
        member_weights: `(n,)` weight of each selected id inside its cluster (for `weighted_mean`).
        member_log_share: `(n,)` log of each selected id's share of its cluster's probability.
        statistics: Summary numbers (rows before/after, cluster sizes, similarity to the merged row).
        fingerprint: `"sha256:<hex>"` of the rows the plan was made from (see `row_fingerprint`);
            `apply_token_merge` refuses a model whose rows differ. None for plans saved before fingerprints.
    """

    config: TokenMergeConfig
    vocab_size: int
    tied: bool
    selected_ids: torch.Tensor
    cluster_of_selected: torch.Tensor
    old_to_new: torch.Tensor
    cluster_rows: torch.Tensor
    representative_ids: torch.Tensor
    medoid_ids: torch.Tensor
    member_weights: torch.Tensor
    member_log_share: torch.Tensor
    statistics: dict[str, Any] = field(default_factory=dict)
    fingerprint: str | None = None

    @property
    def num_clusters(self) -> int:
        """Number of merged rows that hold selected ids."""
        return int(self.cluster_rows.numel())

    @property
    def num_rows(self) -> int:
        """Rows of the merged input embedding."""
        return self.vocab_size - int(self.selected_ids.numel()) + self.num_clusters

    @property
    def cluster_sizes(self) -> torch.Tensor:
        """`(k,)` members per cluster."""
        return torch.bincount(self.cluster_of_selected, minlength=self.num_clusters)

    def members(self, cluster: int) -> torch.Tensor:
        """The original ids merged into `cluster`."""
        return self.selected_ids[self.cluster_of_selected == cluster]

    def head_layout(self) -> tuple[int, torch.Tensor, torch.Tensor]:
        """How the LM head maps its rows back to original ids.

        Returns:
            `(num_head_rows, head_index_map, logit_offset)`: logits over original ids are
            `compact_logits[..., head_index_map] + logit_offset`. Dropped ids get an offset of -inf.
        """
        mode = self.config.lm_head
        offset = torch.zeros(self.vocab_size, dtype=torch.float32)
        if mode == "merge":
            offset[self.selected_ids] = self.member_log_share
            return self.num_rows, self.old_to_new.clone(), offset
        if mode == "drop":
            offset[self.selected_ids] = float("-inf")
            if self.tied:  # the head shares the merged embedding; merged rows are simply never emitted
                index = self.old_to_new.clone()
                index[self.selected_ids] = 0
                return self.num_rows, index, offset
            kept = torch.ones(self.vocab_size, dtype=torch.bool)
            kept[self.selected_ids] = False
            index = torch.zeros(self.vocab_size, dtype=torch.long)
            index[kept] = torch.arange(int(kept.sum()))
            return int(kept.sum()), index, offset
        return self.vocab_size, torch.arange(self.vocab_size), offset

    def head_source_ids(self) -> torch.Tensor | None:
        """For an untied dropped head: the original id behind each head row (None otherwise)."""
        if self.config.lm_head != "drop" or self.tied:
            return None
        kept = torch.ones(self.vocab_size, dtype=torch.bool)
        kept[self.selected_ids] = False
        return kept.nonzero().flatten()

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write the plan as safetensors (maps) plus JSON (config, statistics) into a folder, atomically.

        The folder goes through `atomic_directory` with `keep_existing=True`: its other files (a model saved there)
        stay, and a crash leaves either the old folder or the new one, never one plan file of each.

        Args:
            save_directory: Folder to write into; created if missing.
        """
        # imported here: serialization imports this module, so a module-level import would be circular
        from hf_token_merge.atomic import atomic_directory

        tensors = {name: getattr(self, name).contiguous() for name in PLAN_TENSOR_FIELDS}
        meta = {
            "config": self.config.to_dict(),
            "vocab_size": self.vocab_size,
            "tied": self.tied,
            "statistics": self.statistics,
            "fingerprint": self.fingerprint,
        }
        with atomic_directory(save_directory, keep_existing=True) as staging:
            save_file(tensors, os.path.join(staging, PLAN_TENSORS_NAME))
            _write_json(os.path.join(staging, PLAN_META_NAME), meta)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> MergePlan:
        """Load a plan written by `save_pretrained`."""
        with open(os.path.join(directory, PLAN_META_NAME), encoding="utf-8") as handle:
            meta = json.load(handle)
        tensors = load_file(os.path.join(directory, PLAN_TENSORS_NAME))
        return cls(
            config=TokenMergeConfig.from_dict(meta["config"]),
            vocab_size=meta["vocab_size"],
            tied=meta["tied"],
            statistics=meta["statistics"],
            fingerprint=meta.get("fingerprint"),  # absent in plans saved before fingerprints
            **tensors,
        )


def _write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)


@dataclass
class RowScan:
    """What one pass over the selected rows found.

    Attributes:
        fingerprint: `"sha256:<hex>"` of the selected ids and rows (see `scan_rows`).
        non_finite_input: Selected ids whose input row holds NaN or inf.
        non_finite_output: Selected ids whose (untied) output row holds NaN or inf.
    """

    fingerprint: str
    non_finite_input: list[int]
    non_finite_output: list[int]


@dataclass
class EmbeddingRows:
    """The rows a plan is made from, read on demand: the planner never needs more than the tables' selected rows.

    A loaded model gives them through its modules (`from_pair`); a checkpoint on disk through readers of its
    safetensors files (`hf_token_merge.serialization.streaming`), so a plan never needs the model in memory.

    Attributes:
        input_name: Dotted path of the input embedding (for messages and the merge record).
        output_name: Dotted path of the LM head, or None when there is none.
        vocab_size: Rows of the input embedding.
        tied: Whether the LM head shares the input embedding's weight.
        read_input: `ids -> rows` of the input embedding: a new `(len(ids), d)` tensor, in the order of `ids`.
        read_output: The same for the LM head, or None when there is none.
    """

    input_name: str
    output_name: str | None
    vocab_size: int
    tied: bool
    read_input: Callable[[torch.Tensor], torch.Tensor]
    read_output: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def from_pair(cls, pair: EmbeddingPair) -> EmbeddingRows:
        """The rows of a located embedding pair (an index of the modules' weights)."""
        return cls.from_tensors(
            pair.input_module.weight,
            pair.output_module.weight if pair.output_module is not None else None,
            input_name=pair.input_name,
            output_name=pair.output_name,
            tied=pair.tied,
        )

    @classmethod
    def from_tensors(
        cls,
        input_weight: torch.Tensor,
        output_weight: torch.Tensor | None = None,
        *,
        input_name: str = "input_embedding",
        output_name: str | None = "lm_head",
        tied: bool | None = None,
    ) -> EmbeddingRows:
        """The rows of bare tables.

        Args:
            input_weight: `(vocab, d)` input embedding.
            output_weight: `(vocab, d)` LM head, or None.
            input_name: Name of the input table in messages.
            output_name: Name of the head in messages.
            tied: Whether the head is the embedding (default: whether the two are the same tensor).

        Returns:
            The rows.
        """

        def reader(weight: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
            # index_select: the same rows as weight[ids], 40 % faster on the CPU for 2,048-wide rows
            return lambda ids: weight.detach().index_select(0, ids.to(weight.device))

        return cls(
            input_name=input_name,
            output_name=output_name if output_weight is not None else None,
            vocab_size=int(input_weight.shape[0]),
            tied=(output_weight is input_weight) if tied is None else tied,
            read_input=reader(input_weight),
            read_output=reader(output_weight) if output_weight is not None else None,
        )


def _scan_table(read: Callable[[torch.Tensor], torch.Tensor], selected: torch.Tensor, digest, block_size: int):
    bad: list[int] = []
    for part in range(0, selected.numel(), block_size):
        ids = selected[part : part + block_size]
        rows = read(ids)
        flat = rows.flatten(1)
        # A NaN or inf makes the row's sum NaN or inf; a finite row's sum only overflows in rare cases, which the
        # exact test settles. The sum is a fraction of the cost of isfinite's full boolean copy of the block.
        finite = flat.sum(dim=1).isfinite()
        if not bool(finite.all()):
            suspects = (~finite).nonzero().flatten()
            finite[suspects] = torch.isfinite(flat[suspects]).all(dim=1)
        finite = finite.cpu()
        if not bool(finite.all()):
            bad.extend(ids[~finite].tolist())
        # bfloat16 bytes: a plan made on a float32 load of a checkpoint still fits its bfloat16 load
        digest.update(rows.to(torch.bfloat16).cpu().contiguous().view(torch.int16).numpy().tobytes())
    return bad


def scan_rows(pair: EmbeddingPair | EmbeddingRows, selected: torch.Tensor, block_size: int = 8192) -> RowScan:
    """Fingerprint the selected rows and find those holding NaN or inf, in one blockwise pass.

    The fingerprint is the sha256 of the selected ids (int64), then the selected input rows and, for an untied
    model, the selected output rows, each rounded to bfloat16. It costs one read of the selected block.

    Args:
        pair: The model's embeddings, or their `EmbeddingRows`.
        selected: Sorted selected ids.
        block_size: Rows read at a time.

    Returns:
        The `RowScan`.
    """
    rows = pair if isinstance(pair, EmbeddingRows) else EmbeddingRows.from_pair(pair)
    digest = hashlib.sha256(selected.to(torch.int64).cpu().contiguous().numpy().tobytes())
    bad_input = _scan_table(rows.read_input, selected, digest, block_size)
    bad_output: list[int] = []
    if rows.read_output is not None and not rows.tied:
        bad_output = _scan_table(rows.read_output, selected, digest, block_size)
    return RowScan(f"sha256:{digest.hexdigest()}", bad_input, bad_output)


def _refuse_non_finite(scan: RowScan, config: TokenMergeConfig, pair: EmbeddingPair | EmbeddingRows) -> None:
    uses_output = config.lm_head == "merge" or config.similarity_source != "input"
    for name, bad in ((pair.input_name, scan.non_finite_input), (pair.output_name, scan.non_finite_output)):
        if bad and (name == pair.input_name or uses_output):
            raise TokenMergeError(
                f"{len(bad)} selected row(s) of {name} hold NaN or inf (ids {bad[:5]}{' ...' if len(bad) > 5 else ''}"
                f"); merging them would make every row they join, and its logits, NaN. Fix: repair the checkpoint, "
                "or keep these ids out of the merge with exclude_token_ids."
            )


def check_plan_rows(plan: MergePlan, pair: EmbeddingPair | EmbeddingRows) -> None:
    """Refuse to apply `plan` to rows other than those it was made from, or to rows holding NaN or inf.

    Args:
        plan: The plan about to be applied.
        pair: The embeddings of the model it is applied to (or their `EmbeddingRows`).

    Raises:
        TokenMergeError: When the fingerprint differs or a used row is not finite. A plan without a fingerprint
            (saved before fingerprints existed) only warns.
    """
    scan = scan_rows(pair, plan.selected_ids)
    if plan.fingerprint is None:
        warnings.warn(
            "This MergePlan has no fingerprint (it was saved by an older hf_token_merge), so it cannot be checked "
            "against the model's rows; make sure it was planned on this very model, or plan again and save the "
            "new plan.",
            UserWarning,
            stacklevel=3,
        )
    elif scan.fingerprint != plan.fingerprint:
        raise TokenMergeError(
            "The plan was made from other rows than this model's selected rows (fingerprint "
            f"{plan.fingerprint[:19]}... vs {scan.fingerprint[:19]}...): it belongs to another model or fine-tune "
            "of the same shape. Fix: plan again on this model with plan_token_merge(model, plan.config, ...)."
        )
    _refuse_non_finite(scan, plan.config, pair)


def _similarity_rows(rows: EmbeddingRows, config: TokenMergeConfig, selected: torch.Tensor) -> torch.Tensor:
    def side(read: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        # a read returns a new tensor, so the rows can be prepared in place: one copy of the block, not two
        return prepare_rows(read(selected), config.metric, copy=False)

    if config.similarity_source == "input":
        return side(rows.read_input)
    if config.similarity_source == "output":
        return side(rows.read_output)
    inputs = side(rows.read_input)
    outputs = side(rows.read_output).to(inputs.device)
    both = torch.cat([inputs, outputs], dim=1)
    if config.metric == "cosine":  # the cosine of the joined unit halves is the mean of the two cosines
        both /= math.sqrt(2.0)
    return both


def _fit_to_merged_row(rows: torch.Tensor, labels: torch.Tensor, sizes: torch.Tensor, config: TokenMergeConfig):
    """Similarity (cosine) or distance (euclidean) of every row to its cluster's mean, block by block."""
    k = sizes.numel()
    centroids = torch.zeros(k, rows.shape[1], dtype=rows.dtype, device=rows.device).index_add_(0, labels, rows)
    centroids /= sizes.to(rows.dtype)[:, None]
    fit = torch.empty(rows.shape[0], dtype=rows.dtype, device=rows.device)
    for part in range(0, rows.shape[0], config.block_size):
        block, centre = rows[part : part + config.block_size], centroids[labels[part : part + config.block_size]]
        if config.metric == "cosine":
            # cosine_similarity's own kernel is several times slower than these three row reductions
            norms = (block.norm(dim=1) * centre.norm(dim=1)).clamp_min_(1e-8)
            fit[part : part + config.block_size] = (block * centre).sum(dim=1).div_(norms)
        else:
            fit[part : part + config.block_size] = (block - centre).norm(dim=1)
    name = "cosine_to_merged_row" if config.metric == "cosine" else "distance_to_merged_row"
    return fit, name


def _medoids(rows: torch.Tensor, labels: torch.Tensor, k: int, metric: str, block_size: int) -> torch.Tensor:
    """Index (into rows) of each cluster's medoid: the member with the best total score to its mates."""
    if metric == "cosine" and rows.shape[0] * k * rows.shape[1] >= LARGE_WORK:
        return _cosine_medoids(rows, labels, k, block_size)
    order = torch.argsort(labels, stable=True)
    sizes = torch.bincount(labels, minlength=k).tolist()
    medoids = torch.empty(k, dtype=torch.long)
    start = 0
    for cluster, size in enumerate(sizes):
        members = order[start : start + size]
        start += size
        if size <= 2:  # either member of a pair is a medoid; take the first, like a singleton
            medoids[cluster] = members[0]
            continue
        member_rows = rows[members]
        totals = torch.empty(size, dtype=rows.dtype, device=rows.device)
        for part in range(0, size, block_size):
            chunk = member_rows[part : part + block_size]
            if metric == "cosine":
                totals[part : part + block_size] = -(chunk @ member_rows.T).sum(1)
            else:
                gaps = chunk.pow(2).sum(1, keepdim=True) + member_rows.pow(2).sum(1) - 2 * chunk @ member_rows.T
                totals[part : part + block_size] = gaps.clamp_min_(0).sqrt_().sum(1)
        medoids[cluster] = members[int(totals.argmin())]
    return medoids


def _cosine_medoids(rows: torch.Tensor, labels: torch.Tensor, k: int, block_size: int) -> torch.Tensor:
    """`_medoids` for cosine without a Python loop over clusters (8 s for 8,192 clusters at the Llasa shape).

    A member's total cosine to its mates is its dot product with the sum of the cluster's rows. The totals are summed
    in another order than the loop's, so on large problems (the only ones sent here) a member within rounding of the
    best may win instead; ties go to the lowest index, as in the loop.
    """
    n = rows.shape[0]
    sums = torch.zeros(k, rows.shape[1], dtype=rows.dtype, device=rows.device).index_add_(0, labels, rows)
    totals = torch.empty(n, dtype=rows.dtype, device=rows.device)
    for start in range(0, n, block_size):
        part = slice(start, start + block_size)
        totals[part] = (rows[part] * sums[labels[part]]).sum(1)
    index = torch.arange(n, device=rows.device)
    best = torch.full((k,), -math.inf, dtype=rows.dtype, device=rows.device).scatter_reduce_(0, labels, totals, "amax")
    winners = torch.where(totals == best[labels], index, n)
    medoids = torch.full((k,), n, device=rows.device).scatter_reduce_(0, labels, winners, "amin")
    first = torch.full((k,), n, device=rows.device).scatter_reduce_(0, labels, index, "amin")
    pairs = torch.bincount(labels, minlength=k) <= 2  # either member of a pair is a medoid: the first, as in the loop
    return torch.where(pairs, first, medoids).cpu()


def _model_configs(model: torch.nn.Module) -> tuple[Any, ...]:
    """The model's config and generation config, whose special ids are protected from merging."""
    return getattr(model, "config", None), getattr(model, "generation_config", None)


def _select(vocab_size: int, config: TokenMergeConfig, tokenizer: Any, protected_configs: tuple[Any, ...]):
    protected = protected_token_ids(tokenizer, *protected_configs)
    selected = select_token_ids(config, vocab_size, tokenizer, protected)
    if config.allow_special_tokens:
        merged_special = sorted(set(selected.tolist()) & protected)
        if merged_special:
            warnings.warn(
                f"allow_special_tokens=True lets special tokens {merged_special[:5]} ({len(merged_special)} in all) "
                "merge; a merged bos/eos/pad or prompt marker can change how the model starts and stops.",
                UserWarning,
                stacklevel=4,
            )
    return selected


def resolve_selection(model: torch.nn.Module, config: TokenMergeConfig, tokenizer: Any = None) -> torch.Tensor:
    """The sorted ids a config selects in `model`, with the model's and tokenizer's special tokens protected.

    Args:
        model: The model whose input embedding defines the vocabulary size.
        config: The selection.
        tokenizer: Needed for regex/preset selections.

    Returns:
        Sorted int64 ids, in the order `MergePlan.selected_ids` and `plan_token_merge(labels=...)` use.
    """
    pair = locate_embeddings(model, config)
    return _select(pair.input_module.weight.shape[0], config, tokenizer, _model_configs(model))


def _checked_counts(
    token_counts: torch.Tensor | None, vocab_size: int, config: TokenMergeConfig
) -> torch.Tensor | None:
    """`token_counts` as a flat CPU tensor, refused when misshapen, non-finite, negative, or missing but needed."""
    if token_counts is None:
        if config.needs_token_counts:
            raise TokenMergeError(
                "method='frequency', merge_rule='weighted_mean' and logit_correction='frequency' need calibration "
                "counts: pass token_counts=hf_token_merge.count_tokens(calibration_ids, vocab_size)."
            )
        return None
    token_counts = torch.as_tensor(token_counts).flatten().cpu()
    if token_counts.numel() != vocab_size:
        raise TokenMergeError(
            f"token_counts has {token_counts.numel()} entries but the vocabulary has {vocab_size} rows; "
            "count every id (see hf_token_merge.count_tokens)."
        )
    non_finite = (~torch.isfinite(token_counts)).nonzero().flatten().tolist()
    if non_finite:
        raise TokenMergeError(
            f"token_counts holds NaN or inf at {len(non_finite)} id(s) ({non_finite[:5]}"
            f"{' ...' if len(non_finite) > 5 else ''}); every logit would become NaN. Fix: pass finite counts "
            "(see hf_token_merge.count_tokens)."
        )
    if (token_counts < 0).any():
        raise TokenMergeError("token_counts must be non-negative. Fix: pass counts of occurrences (>= 0).")
    return token_counts


def _given_labels(labels: Any, n: int) -> torch.Tensor:
    labels = torch.as_tensor(labels).flatten().cpu().long()
    if labels.numel() != n or (labels < 0).any():
        raise TokenMergeError(
            f"labels must give a non-negative cluster for each of the {n} selected ids, got {labels.numel()} "
            "values; compute them over plan selection order (sorted ids)."
        )
    return canonical_labels(labels)


def _compact_order(
    labels: torch.Tensor, selected: torch.Tensor, k: int, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(old_to_new, cluster_rows, first_member)`: every group is keyed by its smallest original id."""
    first_member = torch.full((k,), vocab_size, dtype=torch.long).scatter_reduce_(0, labels, selected, "amin")
    group_key = torch.arange(vocab_size)
    group_key[selected] = first_member[labels]
    keys = torch.unique(group_key)  # sorted
    return torch.searchsorted(keys, group_key), torch.searchsorted(keys, first_member), first_member


@dataclass
class _Shares:
    """How each cluster's probability and row are shared among its members."""

    member_weights: torch.Tensor
    member_log_share: torch.Tensor
    representatives: torch.Tensor


def _member_shares(
    labels: torch.Tensor,
    selected: torch.Tensor,
    selected_counts: torch.Tensor | None,
    sizes: torch.Tensor,
    first_member: torch.Tensor,
    vocab_size: int,
    correction: str,
) -> _Shares:
    n, k = selected.numel(), sizes.numel()
    smoothed = selected_counts + 1.0 if selected_counts is not None else torch.ones(n, dtype=torch.float64)
    cluster_mass = torch.zeros(k, dtype=torch.float64).index_add_(0, labels, smoothed)
    if correction == "uniform":
        member_log_share = -torch.log(sizes[labels].to(torch.float64))
    elif correction == "frequency":
        member_log_share = torch.log(smoothed / cluster_mass[labels])
    else:
        member_log_share = torch.zeros(n, dtype=torch.float64)
    representatives = first_member
    if correction == "frequency":
        # argmax over equal logits picks the first index, so among the most frequent the smallest id wins
        best = torch.full((k,), -1.0, dtype=torch.float64).scatter_reduce_(0, labels, smoothed, "amax")
        candidate = torch.where(smoothed == best[labels], selected, torch.full_like(selected, vocab_size))
        representatives = torch.full((k,), vocab_size, dtype=torch.long).scatter_reduce_(0, labels, candidate, "amin")
    return _Shares(
        member_weights=(smoothed / cluster_mass[labels]).to(torch.float32),
        member_log_share=member_log_share.to(torch.float32),
        representatives=representatives,
    )


def _plan_statistics(
    rows: torch.Tensor, labels: torch.Tensor, sizes: torch.Tensor, config: TokenMergeConfig, vocab_size: int
) -> dict[str, Any]:
    n, k = labels.numel(), sizes.numel()
    fit, fit_name = _fit_to_merged_row(rows, labels.to(rows.device), sizes.to(rows.device), config)
    in_clusters = (sizes[labels] > 1).to(fit.device)
    worst = None
    if in_clusters.any():
        worst = float(fit[in_clusters].min() if config.metric == "cosine" else fit[in_clusters].max())
    return {
        "vocab_size": vocab_size,
        "selected_rows": n,
        "clusters": k,
        "rows_removed": n - k,
        "rows_after": vocab_size - n + k,
        "singleton_clusters": int((sizes == 1).sum()),
        "largest_cluster": int(sizes.max()),
        f"mean_{fit_name}": float(fit[in_clusters].mean()) if in_clusters.any() else None,
        f"worst_{fit_name}": worst,
    }


def plan_token_merge(
    model: torch.nn.Module,
    config: TokenMergeConfig,
    *,
    tokenizer: Any = None,
    token_counts: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    show_progress: bool = True,
) -> MergePlan:
    """Compute a merge plan. Reads the model's weights and never changes the model.

    Args:
        model: A transformers model (decoder-only LM or encoder-decoder such as Whisper).
        config: What to merge and how.
        tokenizer: Needed for `token_pattern`/`preset`; its special tokens are protected.
        token_counts: `(vocab_size,)` token counts from calibration data; needed by `method='frequency'`,
            `merge_rule='weighted_mean'` and `logit_correction='frequency'`, and used to visit frequent rows
            first in threshold clustering.
        labels: Cluster of each selected id (in sorted id order) to use instead of clustering, for ablations
            such as random merges; the config's stopping option is then ignored.
        show_progress: Show tqdm progress bars.

    Returns:
        The plan; pass it to `apply_token_merge`.
    """
    pair = locate_embeddings(model, config)
    return plan_located(model, pair, config, tokenizer, token_counts, labels, show_progress)


def plan_located(
    model: torch.nn.Module,
    pair: EmbeddingPair,
    config: TokenMergeConfig,
    tokenizer: Any = None,
    token_counts: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    show_progress: bool = True,
) -> MergePlan:
    """`plan_token_merge` on embeddings the caller has already located (so `apply_token_merge` locates once)."""
    return plan_from_rows(
        EmbeddingRows.from_pair(pair),
        config,
        tokenizer=tokenizer,
        protected_configs=_model_configs(model),
        token_counts=token_counts,
        labels=labels,
        show_progress=show_progress,
    )


def plan_from_rows(
    rows: EmbeddingRows,
    config: TokenMergeConfig,
    *,
    tokenizer: Any = None,
    protected_configs: tuple[Any, ...] = (),
    token_counts: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    show_progress: bool = True,
) -> MergePlan:
    """Compute a merge plan from the embedding and head rows alone, without a model.

    `plan_token_merge` is this function over a loaded model's modules; the streaming compress calls it over readers
    of a checkpoint's files. Both give the same plan for the same rows.

    Args:
        rows: The tables' rows (`EmbeddingRows.from_tensors` for bare tensors).
        config: What to merge and how.
        tokenizer: Needed for `token_pattern`/`preset`; its special tokens are protected.
        protected_configs: Model and generation configs whose bos/eos/pad/decoder-start ids are protected.
        token_counts: `(vocab_size,)` calibration counts (see `plan_token_merge`).
        labels: Cluster of each selected id to use instead of clustering (see `plan_token_merge`).
        show_progress: Show tqdm progress bars.

    Returns:
        The plan.
    """
    vocab_size = rows.vocab_size
    token_counts = _checked_counts(token_counts, vocab_size, config)
    selected = _select(vocab_size, config, tokenizer, protected_configs)
    scan = scan_rows(rows, selected)
    _refuse_non_finite(scan, config, rows)
    if rows.read_output is None and config.similarity_source != "input":
        raise TokenMergeError(
            f"similarity_source={config.similarity_source!r} needs an LM head; use similarity_source='input'."
        )
    similarity = _similarity_rows(rows, config, selected)
    selected_counts = token_counts[selected].to(torch.float64) if token_counts is not None else None
    if labels is None:
        logger.info("clustering %d selected rows with method=%r", selected.numel(), config.method)
        labels = cluster_rows(similarity, config, counts=selected_counts, show_progress=show_progress).cpu()
    else:
        labels = _given_labels(labels, selected.numel())
    sizes = torch.bincount(labels)
    k = sizes.numel()
    old_to_new, cluster_row, first_member = _compact_order(labels, selected, k, vocab_size)
    shares = _member_shares(labels, selected, selected_counts, sizes, first_member, vocab_size, config.logit_correction)
    statistics = _plan_statistics(similarity, labels, sizes, config, vocab_size)
    logger.info(
        "plan: %d selected rows -> %d merged rows (%d -> %d embedding rows)",
        selected.numel(),
        k,
        vocab_size,
        statistics["rows_after"],
    )
    return MergePlan(
        config=config,
        vocab_size=vocab_size,
        tied=rows.tied,
        selected_ids=selected,
        cluster_of_selected=labels,
        old_to_new=old_to_new,
        cluster_rows=cluster_row,
        representative_ids=shares.representatives,
        medoid_ids=selected[
            _medoids(similarity, labels.to(similarity.device), k, config.metric, config.block_size).cpu()
        ],
        member_weights=shares.member_weights,
        member_log_share=shares.member_log_share,
        statistics=statistics,
        fingerprint=scan.fingerprint,
    )
