"""`apply_token_merge`: rewrite a model's embedding and LM head in place, through an index remap."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.remap.locate import EmbeddingPair, locate_embeddings, swap_module
from hf_token_merge.remap.modules import MergedEmbedding, MergedLMHead
from hf_token_merge.remap.plan import MergePlan, check_plan_rows, plan_located
from hf_token_merge.remap.record import TokenMergeQuantizationConfig

logger = logging.getLogger(__name__)


@dataclass
class MergeResult:
    """What `apply_token_merge` did.

    Attributes:
        plan: The plan that was applied.
        parameters_before: Parameters of the model before (tied tensors counted once).
        parameters_after: Parameters after.
        bytes_before: Bytes of parameters and buffers before.
        bytes_after: Bytes the merged model's tensors need (index maps included), which is what
            `save_pretrained` writes. With `reuse_storage=True` the process keeps the original allocation until
            the model is saved and reloaded or moved with `.to()`.
    """

    plan: MergePlan
    parameters_before: int
    parameters_after: int
    bytes_before: int
    bytes_after: int

    def to_dict(self) -> dict[str, Any]:
        """Numbers of the result, JSON-serialisable."""
        return {
            "parameters_before": self.parameters_before,
            "parameters_after": self.parameters_after,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            **self.plan.statistics,
        }

    def __str__(self) -> str:
        stats = self.plan.statistics
        return (
            f"merged {stats['selected_rows']} rows into {stats['clusters']} "
            f"({stats['vocab_size']} -> {stats['rows_after']} rows); parameters "
            f"{self.parameters_before:,} -> {self.parameters_after:,}; "
            f"tensor bytes in memory {self.bytes_before:,} -> {self.bytes_after:,}"
        )


def _unique_tensors(model: nn.Module):
    seen: dict[int, torch.Tensor] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        seen.setdefault(id(tensor), tensor)
    return seen.values()


def model_size(model: nn.Module) -> tuple[int, int]:
    """`(parameters, bytes)` of a model, tied tensors counted once, buffers included in bytes."""
    parameters = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    size = sum(t.numel() * t.element_size() for t in _unique_tensors(model))
    return parameters, size


def merged_rows(
    read: Callable[[torch.Tensor], torch.Tensor],
    plan: MergePlan,
    *,
    dtype: torch.dtype,
    row_shape: tuple[int, ...],
    device: torch.device | str = "cpu",
    start: int = 0,
    source_ids: torch.Tensor | None = None,
    block_size: int = 8192,
) -> torch.Tensor:
    """Rows `[start, end)` of the merged table for one side (input rows, output rows or a bias), from a row reader.

    Rows are read, copied and summed block by block, so the only large allocation is the result itself: the
    reader may be an index of a loaded table or a reader of a checkpoint file (the streaming compress).

    Args:
        read: `ids -> rows` of the original table, a new tensor in the order of `ids`.
        plan: The merge plan.
        dtype: Dtype of the original table (the result keeps it).
        row_shape: Shape of one row (`(d,)` for a weight, `()` for a bias).
        device: Where the result is built.
        start: First merged row to build; rows before it equal the original rows at the same index.
        source_ids: For an untied dropped head, the original id behind each head row.
        block_size: Rows per block.

    Returns:
        The `(rows - start, *row_shape)` merged rows.
    """
    if source_ids is not None:  # untied dropped head: the unselected rows, in order
        ids = source_ids[start:]
        merged = torch.empty((ids.numel(), *row_shape), dtype=dtype, device=device)
        for part in range(0, ids.numel(), block_size):
            merged[part : part + block_size] = read(ids[part : part + block_size])
        return merged
    merged = torch.empty((plan.num_rows - start, *row_shape), dtype=dtype, device=device)
    unselected = torch.ones(plan.vocab_size, dtype=torch.bool)
    unselected[plan.selected_ids] = False
    unselected[:start] = False
    keep = unselected.nonzero().flatten()
    for part in range(0, keep.numel(), block_size):
        ids = keep[part : part + block_size]
        merged[(plan.old_to_new[ids] - start).to(device)] = read(ids).to(device)

    cluster_rows = (plan.cluster_rows - start).to(device)
    rule = plan.config.merge_rule
    if rule == "medoid":
        merged[cluster_rows] = read(plan.medoid_ids).to(device)
        return merged
    labels = plan.cluster_of_selected.to(device)
    shares = plan.member_weights if rule == "weighted_mean" else 1.0 / plan.cluster_sizes[plan.cluster_of_selected]
    shares = shares.to(device=device, dtype=torch.float32)
    shape = (-1,) + (1,) * len(row_shape)
    sums = torch.zeros((plan.num_clusters, *row_shape), dtype=torch.float32, device=device)
    for part in range(0, plan.selected_ids.numel(), block_size):
        rows = read(plan.selected_ids[part : part + block_size]).to(device=device, dtype=torch.float32)
        sums.index_add_(0, labels[part : part + block_size], rows.mul_(shares[part : part + block_size].view(shape)))
    merged[cluster_rows] = sums.to(dtype)
    return merged


def _merged_rows(
    weight: torch.Tensor, plan: MergePlan, start: int, source_ids: torch.Tensor | None = None, block_size: int = 8192
) -> torch.Tensor:
    """`merged_rows` of a loaded table."""
    return merged_rows(
        lambda ids: weight.index_select(0, ids.to(weight.device)),  # as weight[ids], faster on the CPU
        plan,
        dtype=weight.dtype,
        row_shape=tuple(weight.shape[1:]),
        device=weight.device,
        start=start,
        source_ids=source_ids,
        block_size=block_size,
    )


@dataclass
class _Table:
    """A merged table ready to install: `tensor` is what the new module holds; `finish` completes it.

    With storage reuse, `tensor` is a view of the first rows of the original storage and `finish` writes
    the merged tail into it; it runs only after the modules are swapped in, as the last step.
    """

    tensor: torch.Tensor
    finish: Callable[[], None]


def _merged_table(
    weight: torch.Tensor, plan: MergePlan, rows: int, reuse_storage: bool, source_ids: torch.Tensor | None = None
) -> _Table:
    # Rows below the smallest selected id keep their index (compact ordering), so they can stay where they are.
    start = min(int(plan.selected_ids[0]), rows) if reuse_storage else 0
    tail = _merged_rows(weight, plan, start, source_ids)
    if not reuse_storage:
        return _Table(tail, lambda: None)

    def finish() -> None:
        weight[start:rows].copy_(tail)

    return _Table(weight[:rows], finish)


def merged_embedding(plan: MergePlan, weight: torch.Tensor, padding_idx: int | None) -> MergedEmbedding:
    """The `MergedEmbedding` of a plan around its merged table.

    Args:
        plan: The merge plan.
        weight: The `(plan.num_rows, d)` merged table (used as is, not copied).
        padding_idx: The original embedding's padding id, or None.

    Returns:
        The module, its index map filled.
    """
    module = MergedEmbedding(
        plan.num_rows,
        weight.shape[1],
        plan.vocab_size,
        padding_idx=int(plan.old_to_new[padding_idx]) if padding_idx is not None else None,
        weight=weight,
    )
    module.index_map.copy_(plan.old_to_new)
    return module


def merged_head(plan: MergePlan, weight: torch.Tensor, bias: torch.Tensor | None = None) -> MergedLMHead:
    """The `MergedLMHead` of a plan around its merged rows.

    Args:
        plan: The merge plan.
        weight: The merged head rows (`plan.head_layout()[0]` of them); a Parameter stays shared (tied heads).
        bias: The merged bias, or None.

    Returns:
        The module, its index map and logit offset filled.
    """
    rows, index, offset = plan.head_layout()
    module = MergedLMHead(
        rows, weight.shape[1], plan.vocab_size, compact_logits=plan.config.compact_logits, weight=weight, bias=bias
    )
    module.index_map.copy_(index)
    with torch.no_grad():
        module.logit_offset.copy_(offset)
    return module


def _check_plan_fits(plan: MergePlan, pair: EmbeddingPair) -> None:
    rows = pair.input_module.weight.shape[0]
    if rows != plan.vocab_size:
        raise TokenMergeError(
            f"The plan was made for a vocabulary of {plan.vocab_size} rows but {pair.input_name} has {rows}; "
            "plan again on this model."
        )
    if pair.tied != plan.tied:
        raise TokenMergeError(
            f"The plan was made for a model with {'tied' if plan.tied else 'untied'} embeddings; this one is "
            f"{'tied' if pair.tied else 'untied'}. Plan again on this model."
        )


def _refuse_resize(*args: Any, **kwargs: Any) -> None:
    raise TokenMergeError(
        "resize_token_embeddings is not supported on a token-merged model: its embedding is a MergedEmbedding "
        "read through an index map of the original ids, and a resized plain table would silently break that map. "
        "Fix: add the tokens to the original model and resize it before merging, or export_plain(model, plan, path) "
        "and resize the plain checkpoint."
    )


def refuse_resize(model: nn.Module) -> None:
    """Make `resize_token_embeddings` of `model` (and of its inner transformers models) raise `TokenMergeError`.

    transformers' resize builds a plain `nn.Embedding` from the merged table's rows, dropping the index map; a
    merged model would then address wrong rows without a word. An instance attribute shadows the method.

    Args:
        model: A model whose embedding was just replaced by a `MergedEmbedding`.
    """
    for module in model.modules():
        if callable(getattr(type(module), "resize_token_embeddings", None)):
            module.resize_token_embeddings = _refuse_resize


def apply_token_merge(
    model: nn.Module,
    config_or_plan: TokenMergeConfig | MergePlan,
    *,
    tokenizer: Any = None,
    token_counts: torch.Tensor | None = None,
    reuse_storage: bool = True,
    show_progress: bool = True,
) -> MergeResult:
    """Merge token rows of `model` in place.

    The input embedding becomes a `MergedEmbedding` and the LM head a `MergedLMHead` (unless
    `lm_head='keep'`). Token ids and, by default, logits stay in the original id space, so the tokenizer,
    `generate()` and `labels=` losses work unchanged. Everything is validated and built before the model is
    touched; on any error the model is left as it was.

    Args:
        model: A transformers `PreTrainedModel` (or a module with `get_input_embeddings`).
        config_or_plan: A `TokenMergeConfig` (planned here) or a `MergePlan` from `plan_token_merge`.
        tokenizer: Needed for regex/preset selections when a config is given.
        token_counts: Calibration counts for `weighted_mean`/`frequency` when a config is given.
        reuse_storage: Build the merged tables inside the original weight storage (rows below the first merged
            id stay where they are, only the merged tail is written). Peak memory then grows by little more
            than the selected block, but the process keeps the original allocation until the model is saved
            and reloaded or moved (`.to()`). With False, new tables are allocated and the original storage is
            freed: memory shrinks at once, at the cost of a peak of model + merged tables. Either way, tensors
            of the original embedding that the caller still holds must not be used afterwards.
        show_progress: Show tqdm progress bars while planning.

    Returns:
        A `MergeResult` with the plan and the sizes before and after.
    """
    if not isinstance(config_or_plan, (MergePlan, TokenMergeConfig)):
        raise TypeError(f"Expected a TokenMergeConfig or MergePlan, got {type(config_or_plan).__name__}.")
    given_plan = isinstance(config_or_plan, MergePlan)
    config = config_or_plan.config if given_plan else config_or_plan
    pair = locate_embeddings(model, config)  # once: planning, checks and the swap all use this pair
    if given_plan:
        plan = config_or_plan
        _check_plan_fits(plan, pair)
        check_plan_rows(plan, pair)  # a plan made here was scanned while planning
    else:
        plan = plan_located(model, pair, config, tokenizer, token_counts, show_progress=show_progress)
    parameters_before, bytes_before = model_size(model)

    # Build everything first; the model is untouched until _install.
    new_embedding, embedding_table = _build_embedding(pair, plan, reuse_storage)
    new_head, head_table = _build_head(pair, plan, new_embedding, reuse_storage)
    record = TokenMergeQuantizationConfig.from_plan(plan, pair, new_embedding, new_head)
    _install(model, pair, new_embedding, new_head, record)
    with torch.no_grad():
        for table in (embedding_table, head_table):  # the one step that writes into original storage, last
            if table is not None:
                table.finish()
    refuse_resize(model)

    parameters_after, bytes_after = model_size(model)
    logger.info(
        "merge applied: %d -> %d embedding rows, %s -> %s bytes",
        plan.vocab_size,
        plan.num_rows,
        f"{bytes_before:,}",
        f"{bytes_after:,}",
    )
    _warn_if_larger(bytes_before, bytes_after, new_embedding, new_head)
    return MergeResult(plan, parameters_before, parameters_after, bytes_before, bytes_after)


def _build_embedding(pair: EmbeddingPair, plan: MergePlan, reuse_storage: bool) -> tuple[MergedEmbedding, _Table]:
    """The merged input embedding (not yet installed) and the table step that completes it."""
    old_embedding = pair.input_module
    padding_idx = old_embedding.padding_idx
    with torch.no_grad():
        table = _merged_table(old_embedding.weight.detach(), plan, plan.num_rows, reuse_storage)
    new_embedding = merged_embedding(plan, table.tensor, padding_idx)
    new_embedding.weight.requires_grad_(old_embedding.weight.requires_grad)
    return new_embedding, table


def _build_head(
    pair: EmbeddingPair, plan: MergePlan, new_embedding: MergedEmbedding, reuse_storage: bool
) -> tuple[MergedLMHead | None, _Table | None]:
    """The merged LM head (None with lm_head='keep' or no head) and, for an untied head, its table step."""
    if plan.config.lm_head == "keep" or pair.output_module is None:
        return None, None
    old_head = pair.output_module
    source_ids = plan.head_source_ids()
    head_weight, table = new_embedding.weight, None
    if not pair.tied:
        head_rows = plan.head_layout()[0]
        with torch.no_grad():
            table = _merged_table(old_head.weight.detach(), plan, head_rows, reuse_storage, source_ids)
        head_weight = nn.Parameter(table.tensor, requires_grad=old_head.weight.requires_grad)
    bias = None
    if old_head.bias is not None:  # small: always a new tensor
        with torch.no_grad():
            bias = _merged_rows(old_head.bias.detach(), plan, 0, source_ids)
    return merged_head(plan, head_weight, bias), table


def _install(
    model: nn.Module,
    pair: EmbeddingPair,
    new_embedding: MergedEmbedding,
    new_head: MergedLMHead | None,
    record: TokenMergeQuantizationConfig,
) -> None:
    """Swap the merged modules in and record the merge on the config; on any failure, swap the old ones back."""
    swapped: list[tuple[str, nn.Module]] = []
    try:
        swapped.append((pair.input_name, swap_module(model, pair.input_name, new_embedding)))
        if new_head is not None:
            swapped.append((pair.output_name, swap_module(model, pair.output_name, new_head)))
        if getattr(model, "config", None) is not None:
            model.config.quantization_config = record
    except BaseException:
        for name, old in reversed(swapped):
            swap_module(model, name, old)
        raise


def _warn_if_larger(bytes_before: int, bytes_after: int, *modules: nn.Module | None) -> None:
    """Warn when the index maps cost more bytes than the merged rows saved (a merge too small to pay)."""
    if bytes_after < bytes_before:
        return
    maps = sum(
        buffer.numel() * buffer.element_size()
        for module in modules
        if module is not None
        for buffer in module.buffers()
    )
    saved = bytes_before - bytes_after + maps
    warnings.warn(
        f"This merge makes the model larger: it saves {saved:,} bytes of rows, but its index maps take {maps:,} "
        f"bytes ({bytes_before:,} -> {bytes_after:,} bytes in all). Fix: merge more rows (a lower target_ratio or "
        "n_clusters), or keep the original model.",
        UserWarning,
        stacklevel=3,
    )
