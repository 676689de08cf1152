"""Row selection: ids, ranges, regexes and presets over a real tokenizer, and protection of special tokens."""

from __future__ import annotations

import re

import pytest
import torch

from hf_token_merge import PRESETS, TokenMergeConfig
from hf_token_merge.selection import protected_token_ids, select_token_ids
from tests.models import build_qwen2, build_whisper, llasa_tokenizer

N_SPEECH = 48


def _speech_ids(tokenizer, n=N_SPEECH):
    return [tokenizer.convert_tokens_to_ids(f"<|s_{i}|>") for i in range(n)]


def _select(tokenizer, vocab_size=None, protected=None, **kwargs):
    config = TokenMergeConfig(n_clusters=1, **kwargs)
    vocab_size = len(tokenizer) if vocab_size is None else vocab_size
    return select_token_ids(config, vocab_size, tokenizer, protected)


def test_preset_llasa_selects_exactly_the_speech_tokens(llasa_tok):
    selected = _select(llasa_tok, preset="llasa")
    assert selected.dtype == torch.long
    assert selected.tolist() == sorted(_speech_ids(llasa_tok))
    # Each selected id really is a speech token string, and nothing else in the vocabulary is.
    names = llasa_tok.convert_ids_to_tokens(selected.tolist())
    assert all(re.fullmatch(r"<\|s_\d+\|>", name) for name in names)
    assert len(names) == N_SPEECH


def test_token_pattern_matches_whole_token_strings(llasa_tok):
    # fullmatch: '<|s_1|>' must not pick '<|s_10|>' .. '<|s_19|>'
    assert _select(llasa_tok, token_pattern=r"<\|s_1\|>").tolist() == _speech_ids(llasa_tok)[1:2]
    assert _select(llasa_tok, token_pattern=r"<\|s_1\d\|>").tolist() == _speech_ids(llasa_tok)[10:20]
    with pytest.raises(ValueError, match=r"matches no token.*must match whole token strings"):
        _select(llasa_tok, token_pattern=r"s_\d+")


def test_spark_tts_preset_skips_global_tokens():
    bundle = build_qwen2()
    tokenizer = bundle.tokenizer
    semantic = _select(tokenizer, preset="spark_tts")
    assert semantic.tolist() == bundle.selected_ids.tolist()
    assert not set(semantic.tolist()) & set(bundle.extra["global"])
    assert _select(tokenizer, preset="spark_tts_global").tolist() == bundle.extra["global"]


def test_selectors_combine_by_union(llasa_tok):
    speech = _speech_ids(llasa_tok)
    selected = _select(
        llasa_tok,
        token_ids=[speech[0], 3, 3],
        token_id_range=(speech[0] - 2, speech[0]),
        token_pattern=r"<\|s_4[0-7]\|>",
        allow_special_tokens=True,
    )
    expected = sorted({3, speech[0], speech[0] - 2, speech[0] - 1, *speech[40:48]})
    assert selected.tolist() == expected


def test_ids_and_ranges_without_tokenizer():
    config = TokenMergeConfig(token_ids=[9, 2], token_id_range=(4, 6), n_clusters=1)
    assert select_token_ids(config, 10).tolist() == [2, 4, 5, 9]


def test_out_of_range_ids_are_rejected():
    config = TokenMergeConfig(token_ids=[1, 10, 12], n_clusters=1)
    with pytest.raises(ValueError, match=r"token_ids \[10, 12\] are out of range.*valid ids are 0\.\.9"):
        select_token_ids(config, 10)


def test_range_past_vocabulary_is_rejected():
    config = TokenMergeConfig(token_id_range=(5, 11), n_clusters=1)
    with pytest.raises(ValueError, match=r"ends past the vocabulary of 10 rows; use an end <= 10"):
        select_token_ids(config, 10)
    assert select_token_ids(TokenMergeConfig(token_id_range=(5, 10), n_clusters=1), 10).tolist() == [5, 6, 7, 8, 9]


def test_pattern_needs_a_tokenizer():
    with pytest.raises(ValueError, match="needs a tokenizer: pass tokenizer="):
        select_token_ids(TokenMergeConfig(preset="llasa", n_clusters=1), 100)


def test_tokenizer_larger_than_embedding_is_rejected(llasa_tok):
    with pytest.raises(ValueError, match="beyond the embedding's 30 rows; the tokenizer does not belong"):
        _select(llasa_tok, vocab_size=30, preset="llasa")


def test_protected_ids_collect_tokenizer_and_config_ids(llasa_tok):
    whisper = build_whisper().model
    protected = protected_token_ids(llasa_tok, whisper.config, whisper.generation_config)
    named = {llasa_tok.bos_token_id, llasa_tok.eos_token_id, llasa_tok.pad_token_id, llasa_tok.unk_token_id}
    assert named <= protected
    assert {2, 3} <= protected  # Whisper's bos/eos/pad and decoder_start_token_id
    assert not protected & set(_speech_ids(llasa_tok))
    assert protected_token_ids(None) == set()


def test_protected_ids_accept_eos_lists():
    class Config:
        eos_token_id = [5, 6]
        pad_token_id = None

    assert protected_token_ids(None, Config(), None) == {5, 6}


def test_special_tokens_are_refused_unless_allowed(llasa_tok):
    protected = protected_token_ids(llasa_tok)
    bos = llasa_tok.bos_token_id
    speech = _speech_ids(llasa_tok)
    kwargs = {"token_ids": [bos, speech[0]], "token_id_range": (speech[1], speech[3])}
    with pytest.raises(ValueError, match=rf"special tokens \[{bos}\] \(1 in all\).*allow_special_tokens=True"):
        _select(llasa_tok, protected=protected, **kwargs)
    allowed = _select(llasa_tok, protected=protected, allow_special_tokens=True, **kwargs)
    assert allowed.tolist() == [bos, speech[0], speech[1], speech[2]]


def test_added_special_markers_are_protected(llasa_tok):
    # <|SPEECH_GENERATION_START|> and friends are added tokens flagged special, not bos/eos/pad/unk
    markers = llasa_tok.convert_tokens_to_ids(["<|TEXT_UNDERSTANDING_START|>", "<|SPEECH_GENERATION_END|>"])
    protected = protected_token_ids(llasa_tok)
    assert set(markers) <= protected
    first_speech = _speech_ids(llasa_tok)[0]
    with pytest.raises(ValueError, match=r"special tokens .*\(\d+ in all\)"):
        _select(llasa_tok, protected=protected, token_id_range=(markers[0], first_speech + 4))
    # the Llasa preset never touches them
    assert not set(_select(llasa_tok, protected=protected, preset="llasa").tolist()) & protected


@pytest.mark.parametrize(
    ("preset", "positive", "negatives"),
    [
        ("llasa", "<|s_65535|>", ["<|s_|>", "<|s_1|>x", "s_1"]),
        ("orpheus", "<custom_token_4107>", ["<custom_token_>", "<|custom_token_1|>"]),
        ("spark_tts", "<|bicodec_semantic_8191|>", ["<|bicodec_global_3|>"]),
        ("spark_tts_global", "<|bicodec_global_3|>", ["<|bicodec_semantic_3|>"]),
        ("outetts", "<|c2_1023|>", ["<|c3_1|>", "<|c1_|>", "<|4099|>"]),
        ("outetts_v02", "<|4099|>", ["<|c1_3|>", "<|t_0.12|>", "<|-1|>", "<|audio_3|>"]),
        ("spiritlm", "[Hu499]", ["[Pi3]", "Hu499"]),
        ("spiritlm_pitch", "[Pi63]", ["[Hu3]", "[St3]", "Pi63"]),
        ("spiritlm_style", "[St99]", ["[Hu3]", "[Pi3]", "St99"]),
        ("speechgpt", "<812>", ["<a1>", "812"]),
        ("glm4_voice", "<|audio_16383|>", ["<|audio_|>"]),
    ],
)
def test_preset_patterns(preset, positive, negatives):
    pattern = re.compile(PRESETS[preset].pattern)
    assert pattern.fullmatch(positive)
    for negative in negatives:
        assert not pattern.fullmatch(negative), negative


def test_speech_tokens_survive_a_real_tokenizer_round_trip(llasa_tok):
    # The tokenizer is a real fast tokenizer: speech tokens are single tokens, not split.
    speech = _speech_ids(llasa_tok)
    encoded = llasa_tok("hello <|s_3|><|s_47|> world", add_special_tokens=False).input_ids
    words = llasa_tok.convert_tokens_to_ids(["hello", "world"])
    assert encoded == [words[0], speech[3], speech[47], words[1]]
    assert len(llasa_tokenizer(n_speech=5)) == len(llasa_tok) - (N_SPEECH - 5)


def test_exclusions_are_taken_out_of_the_selection(llasa_tok):
    speech = _speech_ids(llasa_tok)
    selected = _select(llasa_tok, preset="llasa", exclude_token_ids=[speech[0]], exclude_pattern=r"<\|s_4\d\|>")
    expected = [i for i in speech[1:] if not re.fullmatch(r"<\|s_4\d\|>", llasa_tok.convert_ids_to_tokens(i))]
    assert selected.tolist() == sorted(expected)
    assert len(selected) == len(speech) - 1 - 8  # <|s_40|>..<|s_47|>


def test_excluding_everything_leaves_an_empty_selection(llasa_tok):
    with pytest.raises(ValueError, match="no token id is left to merge"):
        _select(llasa_tok, preset="llasa", exclude_pattern=r"<\|s_\d+\|>")
    with pytest.raises(ValueError, match="exclude_pattern .* needs a tokenizer"):
        select_token_ids(TokenMergeConfig(token_id_range=(0, 4), exclude_pattern="x", n_clusters=1), 10)


def test_bytes_vocabulary_keys_are_decoded_not_fatal():
    # GLM-4-Voice's remote-code tokenizer returns bytes keys for its base vocabulary (str for added tokens); before,
    # the regex raised "TypeError: cannot use a string pattern on a bytes-like object".
    from hf_token_merge.selection.select import vocabulary_strings
    from tests.recipes.replicas import glm4_voice_tokenizer

    tokenizer = glm4_voice_tokenizer(8)
    audio = tokenizer.convert_tokens_to_ids([f"<|audio_{i}|>" for i in range(8)])
    assert _select(tokenizer, preset="glm4_voice").tolist() == audio
    strings = dict(vocabulary_strings(tokenizer))
    assert strings["hello"] == tokenizer.convert_tokens_to_ids("hello") and strings["中"] == tokenizer.vocab_size - 2
    # invalid UTF-8 fragments decode with U+FFFD, so they stay selectable and never raise
    fragments = _select(tokenizer, token_pattern=".*\ufffd.*").tolist()
    assert [tokenizer.convert_ids_to_tokens(i) for i in fragments] == [b"\xe4\xb8", b"\xad"]
    # patterns select and exclude base (bytes) and added (str) tokens alike
    both = _select(tokenizer, token_pattern=r"hello|<\|audio_[0-3]\|>", exclude_pattern=r"<\|audio_0\|>")
    assert both.tolist() == [tokenizer.convert_tokens_to_ids("hello"), *audio[1:4]]
