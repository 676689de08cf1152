"""Saving and loading merged models: the transformers quantizer plugin and the plain export."""

from hf_token_merge.serialization.quantizer import (
    TokenMergeHfQuantizer,
    TokenMergeQuantizationConfig,
    register,
)

__all__ = ["TokenMergeHfQuantizer", "TokenMergeQuantizationConfig", "register"]
