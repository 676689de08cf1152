"""hf_token_merge: merge near-duplicate token rows of Hugging Face speech-LLMs in place.

    >>> from hf_token_merge import TokenMergeConfig, apply_token_merge
    >>> result = apply_token_merge(model, TokenMergeConfig(preset="llasa", target_ratio=0.125), tokenizer=tok)

Importing the package registers the merged-checkpoint loader with transformers, so a merged checkpoint
reloads with `AutoModelForCausalLM.from_pretrained(path)`.
"""

from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.families import Recipe, list_recipes, load_recipe
from hf_token_merge.remap import (
    MergedEmbedding,
    MergedLMHead,
    MergePlan,
    MergeResult,
    apply_token_merge,
    calibration_counts,
    count_text_tokens,
    count_tokens,
    plan_token_merge,
    read_calibration_text,
)
from hf_token_merge.selection import PRESETS
from hf_token_merge.serialization import (
    TokenMergeQuantizationConfig,
    compress_streaming,
    export_plain,
    export_plain_streaming,
    register,
)

__version__ = "0.1.0.dev0"

register()

__all__ = [
    "PRESETS",
    "Recipe",
    "MergePlan",
    "MergeResult",
    "MergedEmbedding",
    "MergedLMHead",
    "TokenMergeConfig",
    "TokenMergeQuantizationConfig",
    "apply_token_merge",
    "calibration_counts",
    "count_text_tokens",
    "count_tokens",
    "compress_streaming",
    "export_plain",
    "export_plain_streaming",
    "list_recipes",
    "load_recipe",
    "plan_token_merge",
    "read_calibration_text",
]
