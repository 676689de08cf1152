"""Plan and apply a vocabulary merge through an index remap."""

from hf_token_merge.remap.apply import MergeResult, apply_token_merge, model_size
from hf_token_merge.remap.calibration import calibration_counts, count_text_tokens, count_tokens, read_calibration_text
from hf_token_merge.remap.locate import swap_module
from hf_token_merge.remap.modules import MergedEmbedding, MergedLMHead
from hf_token_merge.remap.plan import MergePlan, plan_token_merge, resolve_selection

__all__ = [
    "MergePlan",
    "MergeResult",
    "MergedEmbedding",
    "MergedLMHead",
    "apply_token_merge",
    "calibration_counts",
    "count_text_tokens",
    "count_tokens",
    "model_size",
    "plan_token_merge",
    "read_calibration_text",
    "resolve_selection",
    "swap_module",
]
