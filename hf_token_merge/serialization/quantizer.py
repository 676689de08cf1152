"""Persistence through transformers' quantizer plugin API.

Why this route: `AutoModelForCausalLM.from_pretrained(path)` builds the model on the meta device and only
then reads the checkpoint. A registered quantizer is the one documented hook that runs in between
(`_process_model_before_weight_loading`), so the merged modules can be put in place with their compact
shapes and the slim safetensors load straight into them: no full-size allocation, no remote code, and
device_map/dtype handling stay transformers' own. The record in `config.json` is a `quantization_config` whose
`quant_method` is `QUANT_METHOD` and whose `version` is `FORMAT_VERSION`.

Why the long `quant_method`: in a process that has not imported this package, transformers' first words about the
checkpoint are its own warning "Unknown quantization type, got <quant_method>", before a size-mismatch error (or,
with `ignore_mismatched_sizes=True`, a randomly initialised embedding). Transformers offers no hook there, so the
name itself tells the user what to install and import. Checkpoints written with the old name `token_merge` load too.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from safetensors import safe_open
from transformers.quantizers import HfQuantizer
from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.remap import MergedEmbedding, MergedLMHead, swap_module
from hf_token_merge.remap.record import (  # defined with the merged modules; importable from here as before
    FORMAT_VERSION,
    LEGACY_QUANT_METHODS,
    QUANT_METHOD,
    QUANT_METHODS,
    RESAVE_FIX,
    TokenMergeQuantizationConfig,
)

__all__ = [
    "FORMAT_VERSION",
    "LEGACY_QUANT_METHODS",
    "QUANT_METHOD",
    "QUANT_METHODS",
    "TokenMergeHfQuantizer",
    "TokenMergeQuantizationConfig",
    "build_merged_modules",
    "check_checkpoint_tensors",
    "check_merged_modules",
    "expected_tensors",
    "register",
]

_INDEX_DTYPES = ("I32", "I64")


def _submodule(model: torch.nn.Module, name: str) -> torch.nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def build_merged_modules(model: torch.nn.Module, record: TokenMergeQuantizationConfig) -> None:
    """Replace the embedding (and head) of a freshly built model with empty merged modules of the right shape.

    Runs on the meta device inside `from_pretrained`; the checkpoint then fills weights and index maps.
    """
    for name in (record.input_embedding, record.output_embedding):
        if name is not None and not isinstance(_submodule(model, name), torch.nn.Module):
            raise TokenMergeError(
                f"The merged checkpoint records its merged module at {name!r}, but {type(model).__name__} has no such "
                "module. Fix: load it with the model class that saved it (e.g. AutoModelForCausalLM)."
            )
    old = model.get_submodule(record.input_embedding)
    embedding = MergedEmbedding(
        record.input_rows,
        old.embedding_dim,
        record.vocab_size,
        padding_idx=record.padding_idx,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    swap_module(model, record.input_embedding, embedding)
    if record.output_embedding is not None:
        old_head = model.get_submodule(record.output_embedding)
        head = MergedLMHead(
            record.output_rows,
            old_head.in_features,
            record.vocab_size,
            bias=record.output_bias,
            compact_logits=record.compact_logits,
            device=old_head.weight.device,
            dtype=old_head.weight.dtype,
        )
        swap_module(model, record.output_embedding, head)


def expected_tensors(record: TokenMergeQuantizationConfig) -> dict[str, tuple[tuple[int, ...] | None, tuple[str, ...]]]:
    """The merged modules' tensors a checkpoint must hold: name -> (shape or None for 'any', allowed dtypes).

    Args:
        record: The checkpoint's quantization record.

    Returns:
        One entry per tensor; weight shapes are checked on their row count only (the first dimension).
    """
    vocab = record.vocab_size
    tensors: dict[str, tuple[tuple[int, ...] | None, tuple[str, ...]]] = {
        f"{record.input_embedding}.weight": ((record.input_rows,), ()),
        f"{record.input_embedding}.index_map": ((vocab,), _INDEX_DTYPES),
    }
    if record.output_embedding is not None:
        head = record.output_embedding
        if not record.tied:  # a tied head's weight is the embedding's and is saved once
            tensors[f"{head}.weight"] = ((record.output_rows,), ())
        tensors[f"{head}.index_map"] = ((vocab,), _INDEX_DTYPES)
        tensors[f"{head}.logit_offset"] = ((vocab,), ("F32", "F16", "BF16", "F64"))
        if record.output_bias:
            tensors[f"{head}.bias"] = ((record.output_rows,), ())
    return tensors


def check_checkpoint_tensors(record: TokenMergeQuantizationConfig, checkpoint_files: Any) -> None:
    """Refuse a checkpoint that lacks a merged-module tensor or holds one of the wrong shape or dtype.

    Reads only the safetensors headers, before any weight is loaded. Without safetensors files (a `state_dict=`
    load, `.bin` files) nothing is read here; `check_merged_modules` still checks the loaded values.

    Args:
        record: The checkpoint's quantization record.
        checkpoint_files: The files `from_pretrained` is about to read.

    Raises:
        TokenMergeError: Naming the tensor and what is wrong with it.
    """
    files = [os.fspath(f) for f in checkpoint_files or [] if os.fspath(f).endswith(".safetensors")]
    if not files or len(files) != len(checkpoint_files):
        return
    found: dict[str, tuple[tuple[int, ...], str]] = {}
    for path in files:
        with safe_open(path, framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                part = handle.get_slice(key)
                found[key] = (tuple(part.get_shape()), part.get_dtype())
    for name, (shape, dtypes) in expected_tensors(record).items():
        if name not in found:
            raise TokenMergeError(
                f"The merged checkpoint has no tensor {name!r}, which its token-merge record needs (without it the "
                f"model would compute with uninitialised memory). The files are incomplete or were edited. "
                f"Fix: {RESAVE_FIX}."
            )
        got_shape, got_dtype = found[name]
        wrong_shape = shape is not None and got_shape[: len(shape)] != shape
        if wrong_shape or (dtypes and got_dtype not in dtypes):
            want = f"shape {shape}{'+' if name.endswith(('.weight', '.bias')) else ''}" + (
                f" and dtype {'/'.join(dtypes)}" if dtypes else ""
            )
            raise TokenMergeError(
                f"The merged checkpoint's tensor {name!r} has shape {got_shape} and dtype {got_dtype}, but its "
                f"token-merge record needs {want}. Fix: {RESAVE_FIX}."
            )


def check_merged_modules(model: torch.nn.Module, record: TokenMergeQuantizationConfig) -> None:
    """After loading: every index map points at an existing row and no logit offset is NaN or +inf.

    Args:
        model: The loaded model.
        record: Its quantization record.

    Raises:
        TokenMergeError: Naming the module and the bad entries.
    """
    modules = [(record.input_embedding, model.get_submodule(record.input_embedding))]
    if record.output_embedding is not None:
        modules.append((record.output_embedding, model.get_submodule(record.output_embedding)))
    for name, module in modules:
        index_map = module.index_map
        if index_map.device.type == "meta":  # offloaded: checked by nobody, like any offloaded weight
            continue
        rows = module.weight.shape[0]
        bad = ((index_map < 0) | (index_map >= rows)).nonzero().flatten()
        if index_map.dtype.is_floating_point or index_map.shape != (record.vocab_size,) or bad.numel():
            raise TokenMergeError(
                f"{name}.index_map of the merged checkpoint is damaged: it must hold {record.vocab_size} row indices "
                f"in [0, {rows}), got dtype {index_map.dtype}, shape {tuple(index_map.shape)}"
                + (f", out-of-range entries at ids {bad[:5].tolist()} ({bad.numel()} in all)" if bad.numel() else "")
                + f". Fix: {RESAVE_FIX}."
            )
        if isinstance(module, MergedLMHead):
            offset = module.logit_offset
            bad = (torch.isnan(offset) | (offset == float("inf"))).nonzero().flatten()
            if bad.numel():
                raise TokenMergeError(
                    f"{name}.logit_offset of the merged checkpoint holds NaN or +inf at ids {bad[:5].tolist()} "
                    f"({bad.numel()} in all); every logit there would be wrong. Fix: {RESAVE_FIX}."
                )


class TokenMergeHfQuantizer(HfQuantizer):
    """Loads token-merged checkpoints: swaps in merged modules before the weights are read."""

    requires_calibration = True  # a merge is computed by apply_token_merge, never at load time

    def validate_environment(self, *args: Any, **kwargs: Any) -> None:
        if not self.pre_quantized:
            raise TokenMergeError(
                "TokenMergeQuantizationConfig describes an already merged checkpoint; to merge a model, load it "
                "normally and call hf_token_merge.apply_token_merge(model, TokenMergeConfig(...))."
            )

    def _process_model_before_weight_loading(self, model, checkpoint_files: Any = None, **kwargs: Any):
        from hf_token_merge.remap.apply import refuse_resize

        build_merged_modules(model, self.quantization_config)  # first: it names a record/model-class mismatch
        check_checkpoint_tensors(self.quantization_config, checkpoint_files)
        refuse_resize(model)
        return model

    def _process_model_after_weight_loading(self, model, **kwargs: Any):
        check_merged_modules(model, self.quantization_config)
        return model

    def is_serializable(self, safe_serialization: Any = None) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return True


def register() -> None:
    """Register the config and quantizer with transformers (idempotent; runs on `import hf_token_merge`)."""
    for name in QUANT_METHODS:
        AUTO_QUANTIZATION_CONFIG_MAPPING.setdefault(name, TokenMergeQuantizationConfig)
        AUTO_QUANTIZER_MAPPING.setdefault(name, TokenMergeHfQuantizer)
