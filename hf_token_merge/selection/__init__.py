"""Which token ids a config selects: ids, ranges, regexes over the tokenizer, family presets, exclusions.

One resolution (`resolve_token_ids`) serves both merges: the rows a `TokenMergeConfig` merges and the speech
positions of a `SequenceMergeConfig`.
"""

from hf_token_merge.selection.presets import PRESETS, Preset
from hf_token_merge.selection.select import (
    match_vocabulary,
    protected_token_ids,
    resolve_token_ids,
    select_token_ids,
)

__all__ = ["PRESETS", "Preset", "match_vocabulary", "protected_token_ids", "resolve_token_ids", "select_token_ids"]
