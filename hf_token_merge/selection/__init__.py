"""Which vocabulary rows may merge: ids, ranges, regexes over the tokenizer, family presets."""

from hf_token_merge.selection.presets import PRESETS, Preset
from hf_token_merge.selection.select import match_vocabulary, protected_token_ids, select_token_ids

__all__ = ["PRESETS", "Preset", "match_vocabulary", "protected_token_ids", "select_token_ids"]
