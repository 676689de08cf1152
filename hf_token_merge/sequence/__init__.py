"""Sequence-level merging: Affinity Pooling of speech positions at the decoder input and at a deep layer."""

from hf_token_merge.sequence.apply import (
    PrefillRecord,
    SequenceMergeHandle,
    StageStatistics,
    apply_sequence_merge,
    locate_decoder,
    sequence_merge_handle,
    speech_token_lookup,
)
from hf_token_merge.sequence.config import AFFINITY_SETTINGS, MergeStage, SequenceMergeConfig
from hf_token_merge.sequence.encoder import EncoderMergeHandle, apply_encoder_merge, encoder_merge_handle
from hf_token_merge.sequence.grouping import affinity_groups, oracle_groups, pool_groups

__all__ = [
    "AFFINITY_SETTINGS",
    "EncoderMergeHandle",
    "MergeStage",
    "PrefillRecord",
    "SequenceMergeConfig",
    "SequenceMergeHandle",
    "StageStatistics",
    "affinity_groups",
    "apply_encoder_merge",
    "apply_sequence_merge",
    "encoder_merge_handle",
    "locate_decoder",
    "oracle_groups",
    "pool_groups",
    "sequence_merge_handle",
    "speech_token_lookup",
]
