"""Saving and loading merged models: the transformers quantizer plugin and the plain export."""

from hf_token_merge.serialization.export import export_plain, remap_token_ids, rewrite_tokenizer
from hf_token_merge.serialization.quantizer import (
    TokenMergeHfQuantizer,
    TokenMergeQuantizationConfig,
    register,
)

__all__ = [
    "export_plain",
    "remap_token_ids",
    "rewrite_tokenizer",
    "TokenMergeHfQuantizer",
    "TokenMergeQuantizationConfig",
    "register",
]
