"""Persistence through transformers' quantizer plugin API.

Why this route: `AutoModelForCausalLM.from_pretrained(path)` builds the model on the meta device and only
then reads the checkpoint. A registered quantizer is the one documented hook that runs in between
(`_process_model_before_weight_loading`), so the merged modules can be put in place with their compact
shapes and the slim safetensors load straight into them: no full-size allocation, no remote code, and
device_map/dtype handling stay transformers' own. The record in `config.json` is a
`quantization_config` with `quant_method: "token_merge"`.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.quantizers import HfQuantizer
from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING
from transformers.utils.quantization_config import QuantizationConfigMixin

from hf_token_merge.remap.modules import MergedEmbedding, MergedLMHead

QUANT_METHOD = "token_merge"


class TokenMergeQuantizationConfig(QuantizationConfigMixin):
    """The `config.json` record of a merged model: enough to rebuild the merged modules' shapes.

    Args:
        vocab_size: Original id space.
        input_embedding: Dotted path of the merged input embedding.
        input_rows: Rows of the merged input embedding.
        padding_idx: Merged row of the padding token, or None.
        output_embedding: Dotted path of the merged LM head, or None when the head was kept.
        output_rows: Rows of the merged LM head.
        output_bias: Whether the head has a bias.
        compact_logits: Whether the head returns merged-row logits.
        tied: Whether the head shares the embedding's weight.
        merge_config: The `TokenMergeConfig` used, as a dict (for provenance).
        statistics: Plan statistics (rows before and after, cluster sizes).
    """

    def __init__(
        self,
        vocab_size: int,
        input_embedding: str,
        input_rows: int,
        padding_idx: int | None = None,
        output_embedding: str | None = None,
        output_rows: int | None = None,
        output_bias: bool = False,
        compact_logits: bool = False,
        tied: bool = False,
        merge_config: dict[str, Any] | None = None,
        statistics: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.quant_method = QUANT_METHOD
        self.vocab_size = vocab_size
        self.input_embedding = input_embedding
        self.input_rows = input_rows
        self.padding_idx = padding_idx
        self.output_embedding = output_embedding
        self.output_rows = output_rows
        self.output_bias = output_bias
        self.compact_logits = compact_logits
        self.tied = tied
        self.merge_config = merge_config or {}
        self.statistics = statistics or {}

    @classmethod
    def from_plan(cls, plan, pair, embedding: MergedEmbedding, head: MergedLMHead | None):
        """Describe a merge that `apply_token_merge` is about to install."""
        return cls(
            vocab_size=plan.vocab_size,
            input_embedding=pair.input_name,
            input_rows=embedding.num_embeddings,
            padding_idx=embedding.padding_idx,
            output_embedding=pair.output_name if head is not None else None,
            output_rows=head.out_features if head is not None else None,
            output_bias=head is not None and head.bias is not None,
            compact_logits=head is not None and head.compact_logits,
            tied=pair.tied,
            merge_config=plan.config.to_dict(),
            statistics=plan.statistics,
        )


def build_merged_modules(model: torch.nn.Module, record: TokenMergeQuantizationConfig) -> None:
    """Replace the embedding (and head) of a freshly built model with empty merged modules of the right shape.

    Runs on the meta device inside `from_pretrained`; the checkpoint then fills weights and index maps.
    """
    from hf_token_merge.remap.apply import _swap

    old = model.get_submodule(record.input_embedding)
    embedding = MergedEmbedding(
        record.input_rows,
        old.embedding_dim,
        record.vocab_size,
        padding_idx=record.padding_idx,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    _swap(model, record.input_embedding, embedding)
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
        _swap(model, record.output_embedding, head)


class TokenMergeHfQuantizer(HfQuantizer):
    """Loads token-merged checkpoints: swaps in merged modules before the weights are read."""

    requires_calibration = True  # a merge is computed by apply_token_merge, never at load time

    def validate_environment(self, *args: Any, **kwargs: Any) -> None:
        if not self.pre_quantized:
            raise ValueError(
                "TokenMergeQuantizationConfig describes an already merged checkpoint; to merge a model, load it "
                "normally and call hf_token_merge.apply_token_merge(model, TokenMergeConfig(...))."
            )

    def _process_model_before_weight_loading(self, model, **kwargs: Any):
        build_merged_modules(model, self.quantization_config)
        return model

    def _process_model_after_weight_loading(self, model, **kwargs: Any):
        return model

    def is_serializable(self, safe_serialization: Any = None) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return True


def register() -> None:
    """Register the config and quantizer with transformers (idempotent; runs on `import hf_token_merge`)."""
    AUTO_QUANTIZATION_CONFIG_MAPPING.setdefault(QUANT_METHOD, TokenMergeQuantizationConfig)
    AUTO_QUANTIZER_MAPPING.setdefault(QUANT_METHOD, TokenMergeHfQuantizer)
