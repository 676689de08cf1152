"""`TokenMergeConfig`: what to merge, how far, and how the merged rows behave."""

from hf_token_merge.config.token_merge_config import CONFIG_NAME, STOPPING_OPTIONS, TokenMergeConfig, replace_stop

__all__ = ["CONFIG_NAME", "STOPPING_OPTIONS", "TokenMergeConfig", "replace_stop"]
