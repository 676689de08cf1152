"""The family presets (defined in `hf_token_merge.config.presets`, the layer that validates their names)."""

from hf_token_merge.config.presets import PRESETS, Preset

__all__ = ["PRESETS", "Preset"]
