"""Whisper's English spelling map in the WER normaliser, where the ASR tokenizer provides it."""

from __future__ import annotations

from hf_token_merge.evaluation.text import ErrorCounts, error_counts, normalize_transcript, spelling_map_of
from hf_token_merge.reference.whisper import english_spelling_map


def test_spelling_map_normalises_british_spellings():
    spelling = english_spelling_map()
    assert len(spelling) == 1739 and spelling["colour"] == "color"
    assert normalize_transcript("The colour of Honour.", spelling) == "the color of honor"
    assert normalize_transcript("The colour of Honour.") == "the colour of honour"  # no map: unchanged
    assert error_counts("the colour", "the color", spelling=spelling) == ErrorCounts(hits=2)
    assert error_counts("the colour", "the color") == ErrorCounts(hits=1, substitutions=1)


def test_the_offline_whisper_tokenizer_provides_the_map(whisper_tiny_en):
    _, processor = whisper_tiny_en
    assert spelling_map_of(processor) == english_spelling_map()  # saved as normalizer.json and loaded back
    assert spelling_map_of(None) is None and spelling_map_of(object()) is None
