"""Saving and loading merged models: the transformers quantizer plugin, the plain export, the atomic folder write."""

from hf_token_merge.atomic import MARKER_NAME, atomic_directory, check_target, is_library_folder
from hf_token_merge.serialization.export import (
    PlainLayout,
    export_plain,
    plain_layout,
    remap_token_ids,
    rewrite_tokenizer,
)
from hf_token_merge.serialization.quantizer import (
    TokenMergeHfQuantizer,
    TokenMergeQuantizationConfig,
    register,
)

__all__ = [
    "MARKER_NAME",
    "atomic_directory",
    "check_target",
    "is_library_folder",
    "export_plain",
    "PlainLayout",
    "plain_layout",
    "remap_token_ids",
    "rewrite_tokenizer",
    "TokenMergeHfQuantizer",
    "TokenMergeQuantizationConfig",
    "register",
]
