"""Saving and loading merged models: the transformers quantizer plugin, the plain export, the atomic folder write,
and the streaming compress of checkpoints larger than memory."""

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
from hf_token_merge.serialization.streaming import (
    StoredCheckpoint,
    compress_streaming,
    export_plain_streaming,
    needs_streaming,
    plan_streaming,
    write_streaming_checkpoint,
)

__all__ = [
    "MARKER_NAME",
    "atomic_directory",
    "check_target",
    "is_library_folder",
    "export_plain",
    "compress_streaming",
    "export_plain_streaming",
    "needs_streaming",
    "plan_streaming",
    "StoredCheckpoint",
    "write_streaming_checkpoint",
    "PlainLayout",
    "plain_layout",
    "remap_token_ids",
    "rewrite_tokenizer",
    "TokenMergeHfQuantizer",
    "TokenMergeQuantizationConfig",
    "register",
]
