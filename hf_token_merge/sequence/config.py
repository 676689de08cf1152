"""The sequence-merge configuration: which positions may merge, where in the decoder, and how.

A merge *stage* runs at the input of one decoder layer. Stage `layer=0` is the decoder's input (after the
embeddings, and after the audio projector in models such as Qwen2-Audio); a later layer is a deep stage. Affinity
Pooling as published ("Dual") is one stage at layer 0 and one deep stage; `SequenceMergeConfig.dual` builds it.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

from hf_token_merge.config.field_types import check_field_types
from hf_token_merge.config.json_config import JsonConfigMixin
from hf_token_merge.config.selection_fields import adopt_deprecated_aliases, validate_selection_fields
from hf_token_merge.errors import TokenMergeError

SEQUENCE_CONFIG_NAME = "sequence_merge_config.json"

StageMode = Literal["affinity", "uniform_merge", "uniform_drop", "random_drop"]
PositionStrategy = Literal["first", "mean", "contiguous"]
STAGE_MODES = ("affinity", "uniform_merge", "uniform_drop", "random_drop")
POSITION_STRATEGIES = ("first", "mean", "contiguous")

# (tau_in, tau_deep, omega_in, omega_deep) of the published settings
DEPRECATED_ALIASES = {
    "speech_token_ids": "token_ids",
    "speech_token_range": "token_id_range",
    "speech_token_pattern": "token_pattern",
}

AFFINITY_SETTINGS = {
    "aggressive": (0.8, 0.7, 1, 3),
    "conservative": (0.9, 0.8, 1, 3),
}


@dataclass
class MergeStage:
    """One place in the decoder where speech positions merge.

    Example:
        >>> MergeStage(layer=0, threshold=0.8, window=1)                  # Affinity Pooling at the input
        >>> MergeStage(layer=3, mode="uniform_drop", retention=0.25)       # an oracle intervention
    """

    layer: int = field(
        metadata={"help": "Decoder layer whose input is merged; 0 is the decoder input (after the embeddings)."}
    )
    mode: StageMode = field(
        default="affinity",
        metadata={
            "help": "'affinity': Affinity Pooling (greedy left-to-right groups, mean-pooled). Oracle interventions "
            "for analysis: 'uniform_merge' (equal consecutive groups, mean-pooled), 'uniform_drop' (keep evenly "
            "spaced tokens), 'random_drop' (keep a random subset)."
        },
    )
    threshold: float | None = field(
        default=None,
        metadata={
            "help": "Affinity only: a token joins the open group when its cosine similarity to any of the "
            "group's last `window` tokens is at least this (tau)."
        },
    )
    window: int = field(default=1, metadata={"help": "Affinity only: how many of the group's last tokens to compare."})
    retention: float | None = field(
        default=None,
        metadata={"help": "Oracle modes only: the share of each speech span's tokens that survives, in (0, 1]."},
    )

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.layer < 0:
            raise TokenMergeError(
                f"MergeStage.layer must be a non-negative int (0 = decoder input), got {self.layer!r}."
            )
        if self.mode not in STAGE_MODES:
            raise TokenMergeError(f"MergeStage.mode must be one of {STAGE_MODES}, got {self.mode!r}.")
        if self.mode == "affinity":
            if self.threshold is None or not -1.0 <= self.threshold <= 1.0:
                raise TokenMergeError(
                    f"An affinity stage needs a cosine threshold in [-1, 1], got {self.threshold!r}; "
                    "the published values are 0.8/0.9 at the input and 0.7/0.8 deep."
                )
            if self.retention is not None:
                raise TokenMergeError(
                    "retention is for the oracle modes; an affinity stage is set by threshold/window."
                )
            if self.window < 1:
                raise TokenMergeError(f"MergeStage.window must be an int >= 1, got {self.window!r}.")
            if self.threshold <= 0.0:
                warnings.warn(
                    f"MergeStage(layer={self.layer}) has threshold={self.threshold}: every pair of consecutive speech "
                    "tokens that is not anti-correlated merges, so whole speech spans collapse. The published "
                    "thresholds are 0.7-0.9; use mode='uniform_merge' for a deliberate collapse.",
                    UserWarning,
                    stacklevel=3,
                )
        else:
            if self.retention is None or not 0.0 < self.retention <= 1.0:
                raise TokenMergeError(f"Mode {self.mode!r} needs retention in (0, 1], got {self.retention!r}.")
            if self.threshold is not None:
                raise TokenMergeError(f"Mode {self.mode!r} is set by retention; remove threshold.")


@dataclass
class SequenceMergeConfig(JsonConfigMixin):
    """Configuration of a sequence merge (Affinity Pooling or an oracle intervention).

    Speech positions are selected with the same fields as `TokenMergeConfig`'s rows: the union of `token_ids`,
    `token_id_range`, `token_pattern` and `preset`, minus `exclude_token_ids` and `exclude_pattern`; special tokens
    are refused unless `allow_special_tokens=True`. With no selector, the model's audio placeholder id
    (`config.audio_token_id`, as in Qwen2-Audio) is used. Text positions never merge. The old names
    `speech_token_ids`, `speech_token_range` and `speech_token_pattern` still work, with a `FutureWarning`.

    Example:
        >>> SequenceMergeConfig.dual("aggressive", deep_layer=20, token_id_range=(151665, 168049))
    """

    config_file_name: ClassVar[str] = SEQUENCE_CONFIG_NAME

    stages: list[MergeStage] = field(
        default_factory=list, metadata={"help": "Merge stages, in increasing layer order (at most one per layer)."}
    )
    token_ids: list[int] | None = field(default=None, metadata={"help": "Ids of speech tokens."})
    token_id_range: tuple[int, int] | None = field(
        default=None, metadata={"help": "Half-open id range [start, end) of speech tokens."}
    )
    token_pattern: str | None = field(
        default=None, metadata={"help": "Regex over token strings naming speech tokens; needs a tokenizer."}
    )
    preset: str | None = field(
        default=None, metadata={"help": "A family preset from `hf_token_merge.PRESETS`; needs a tokenizer."}
    )
    exclude_token_ids: list[int] | None = field(
        default=None, metadata={"help": "Ids never treated as speech, even when a selector matches them."}
    )
    exclude_pattern: str | None = field(
        default=None, metadata={"help": "Regex over token strings; matching tokens are never treated as speech."}
    )
    allow_special_tokens: bool = field(
        default=False,
        metadata={"help": "Let special tokens (bos/eos/pad and the tokenizer's special tokens) be merged as speech."},
    )
    position_strategy: PositionStrategy = field(
        default="first",
        metadata={
            "help": "Position (RoPE) of a merged token: 'first' (its first member's), 'mean' (the members' mean, "
            "fractional), 'contiguous' (renumbered as if the sequence were shorter). Tokens generated later "
            "continue after the last position."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of 'random_drop'."})
    # Deprecated names of token_ids / token_id_range / token_pattern (before the selection was shared with
    # TokenMergeConfig); __post_init__ moves them onto the new fields with a FutureWarning.
    speech_token_ids: list[int] | None = field(default=None, metadata={"help": "Deprecated: use token_ids."})
    speech_token_range: tuple[int, int] | None = field(
        default=None, metadata={"help": "Deprecated: use token_id_range."}
    )
    speech_token_pattern: str | None = field(default=None, metadata={"help": "Deprecated: use token_pattern."})

    def __post_init__(self) -> None:
        if isinstance(self.stages, (list, tuple)):
            self.stages = [MergeStage(**stage) if isinstance(stage, dict) else stage for stage in self.stages]
        check_field_types(self)
        not_stages = [stage for stage in self.stages if not isinstance(stage, MergeStage)]
        if not_stages:
            raise TokenMergeError(
                f"SequenceMergeConfig.stages must hold MergeStage objects or dicts of their fields, got "
                f"{not_stages[0]!r} ({type(not_stages[0]).__name__}). Fix: pass MergeStage(layer=..., ...)."
            )
        if not self.stages:
            raise TokenMergeError("SequenceMergeConfig needs at least one stage, e.g. SequenceMergeConfig.dual(...).")
        layers = [stage.layer for stage in self.stages]
        if layers != sorted(set(layers)):
            raise TokenMergeError(f"Stages must have strictly increasing layers (one stage per layer), got {layers}.")
        if self.position_strategy not in POSITION_STRATEGIES:
            raise TokenMergeError(
                f"position_strategy must be one of {POSITION_STRATEGIES}, got {self.position_strategy!r}."
            )
        adopt_deprecated_aliases(self, DEPRECATED_ALIASES)
        validate_selection_fields(self, required=False)

    @classmethod
    def dual(
        cls, setting: str = "aggressive", *, deep_layer: int, input_stage: bool = True, **kwargs: Any
    ) -> SequenceMergeConfig:
        """Affinity Pooling as published: one stage at the decoder input and one deep stage.

        Args:
            setting: 'aggressive' (tau 0.8/0.7) or 'conservative' (tau 0.9/0.8); windows 1 (input) and 3 (deep).
            deep_layer: Decoder layer of the deep stage (the study avoids middle layers).
            input_stage: Set False for the deep stage alone.
            **kwargs: Other `SequenceMergeConfig` fields (speech-token selection, position strategy).

        Returns:
            The config.
        """
        if setting not in AFFINITY_SETTINGS:
            raise TokenMergeError(f"Unknown setting {setting!r}; choose one of {sorted(AFFINITY_SETTINGS)}.")
        tau_in, tau_deep, omega_in, omega_deep = AFFINITY_SETTINGS[setting]
        stages = [MergeStage(layer=0, threshold=tau_in, window=omega_in)] if input_stage else []
        if deep_layer is not None:
            if input_stage and deep_layer == 0:
                raise TokenMergeError(
                    "deep_layer=0 is the input stage; pick a deep layer (the study uses late layers)."
                )
            stages.append(MergeStage(layer=deep_layer, threshold=tau_deep, window=omega_deep))
        return cls(stages=stages, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-serialisable dict."""
        data = asdict(self)
        for old in DEPRECATED_ALIASES:  # always None after __post_init__: saved under the new names only
            data.pop(old)
        if data["token_id_range"] is not None:
            data["token_id_range"] = list(data["token_id_range"])
        return data
