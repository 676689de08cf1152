"""`TokenMergeConfig`: what to merge, how far, and how the merged rows behave."""

from hf_token_merge.config.presets import PRESETS, Preset
from hf_token_merge.config.token_merge_config import CONFIG_NAME, STOPPING_FIELDS, TokenMergeConfig, replace_stop

__all__ = ["CONFIG_NAME", "PRESETS", "STOPPING_FIELDS", "Preset", "TokenMergeConfig", "replace_stop"]
