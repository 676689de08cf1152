"""The `config.json` record of a merged model (`quantization_config`; its `quant_method` is `QUANT_METHOD`).

`apply_token_merge` writes it into `model.config`, so it lives beside the merged modules it describes;
`hf_token_merge.serialization` registers it with transformers, checks it and rebuilds the modules from it when loading
(see there why `QUANT_METHOD` is a sentence).
"""

from __future__ import annotations

from typing import Any

from transformers.utils.quantization_config import QuantizationConfigMixin

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.remap.modules import MergedEmbedding, MergedLMHead

QUANT_METHOD = "hf_token_merge (pip install hf_token_merge, then import hf_token_merge before from_pretrained)"
LEGACY_QUANT_METHODS = ("token_merge",)  # written by versions before FORMAT_VERSION existed; still loaded
QUANT_METHODS = (QUANT_METHOD, *LEGACY_QUANT_METHODS)
FORMAT_VERSION = 1  # the layout of the record and of the merged modules' tensors; raise it when either changes
RESAVE_FIX = "re-save the checkpoint from the merged model (model.save_pretrained) or merge the original model again"


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
        version: Format version of the record; None (records written before versions existed) reads as 1.

    Raises:
        TokenMergeError: On a missing or mistyped field or a version this hf_token_merge cannot read.
    """

    def __init__(
        self,
        vocab_size: int | None = None,
        input_embedding: str | None = None,
        input_rows: int | None = None,
        padding_idx: int | None = None,
        output_embedding: str | None = None,
        output_rows: int | None = None,
        output_bias: bool = False,
        compact_logits: bool = False,
        tied: bool = False,
        merge_config: dict[str, Any] | None = None,
        statistics: dict[str, Any] | None = None,
        version: int | None = None,
        **kwargs: Any,
    ) -> None:
        _check_version(version)
        self.quant_method = QUANT_METHOD
        self.version = FORMAT_VERSION
        self.vocab_size = vocab_size
        self.input_embedding = input_embedding
        self.input_rows = input_rows
        self.padding_idx = padding_idx
        self.output_embedding = output_embedding
        self.output_rows = output_rows
        self.output_bias = output_bias
        self.compact_logits = compact_logits
        self.tied = tied
        self.merge_config = {} if merge_config is None else merge_config
        self.statistics = {} if statistics is None else statistics
        self._check_fields()

    def _check_fields(self) -> None:
        def refuse(name: str, expected: str) -> TokenMergeError:
            value = getattr(self, name)
            return TokenMergeError(
                f"The token-merge quantization_config in config.json has {name}={value!r} "
                f"({type(value).__name__}); it must be {expected}. The record is damaged or was edited by hand. "
                f"Fix: {RESAVE_FIX}."
            )

        def whole(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        for name in ("vocab_size", "input_rows"):
            if not whole(getattr(self, name)) or getattr(self, name) < 1:
                raise refuse(name, "a whole number >= 1")
        if self.input_rows > self.vocab_size:
            raise refuse("input_rows", f"at most vocab_size={self.vocab_size}")
        if not isinstance(self.input_embedding, str) or not self.input_embedding:
            raise refuse("input_embedding", "the dotted module path of the input embedding")
        if self.padding_idx is not None and not (whole(self.padding_idx) and 0 <= self.padding_idx < self.input_rows):
            raise refuse("padding_idx", f"None or a row in [0, {self.input_rows})")
        if self.output_embedding is not None:
            if not isinstance(self.output_embedding, str) or not self.output_embedding:
                raise refuse("output_embedding", "None or the dotted module path of the LM head")
            if not whole(self.output_rows) or self.output_rows < 1:
                raise refuse("output_rows", "a whole number >= 1 when output_embedding is set")
        for name in ("output_bias", "compact_logits", "tied"):
            if not isinstance(getattr(self, name), bool):
                raise refuse(name, "true or false")
        for name in ("merge_config", "statistics"):
            if not isinstance(getattr(self, name), dict):
                raise refuse(name, "a JSON object")

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
            version=FORMAT_VERSION,
        )


def _check_version(version: Any) -> None:
    if version is None:  # written before the record had a version: the same layout as version 1
        return
    if not isinstance(version, int) or isinstance(version, bool):
        raise TokenMergeError(
            f"The token-merge quantization_config in config.json has version={version!r} "
            f"({type(version).__name__}); it must be a whole number. Fix: {RESAVE_FIX}."
        )
    if not 1 <= version <= FORMAT_VERSION:
        raise TokenMergeError(
            f"This checkpoint was merged in token-merge format version {version}, but this hf_token_merge reads "
            f"versions 1..{FORMAT_VERSION}. Fix: pip install -U hf_token_merge (a newer release reads it)."
        )
