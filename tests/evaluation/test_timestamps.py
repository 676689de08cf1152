"""Timestamp segments and their error: exact parsing and scoring on hand-made ids, and the real Whisper tiny.en on
a LibriVox utterance, where merging the timestamp tokens collapses two segments into one."""

from __future__ import annotations

import pytest

from hf_token_merge import TokenMergeConfig, apply_token_merge
from hf_token_merge.evaluation.timestamps import (
    Segment,
    boundaries,
    compare_timestamps,
    inner_boundaries_in_pauses,
    timestamp_segments,
    transcribe_segments,
)
from hf_token_merge.reference import decode_audio

BEGIN, SPECIAL = 100, 50  # <|0.00|> and the first non-text id of a toy vocabulary


def test_segments_open_and_close_at_timestamps():
    # <|sot|> <|0.00|> a b <|1.32|><|1.32|> c <|2.00|> <|eot|>
    ids = [60, BEGIN, 1, 2, BEGIN + 66, BEGIN + 66, 3, BEGIN + 100, SPECIAL]
    assert timestamp_segments(ids, BEGIN, SPECIAL) == [Segment(0.0, 1.32, (1, 2)), Segment(1.32, 2.0, (3,))]
    # a segment the output never closed keeps end=None; timestamps without text between reopen the segment
    assert timestamp_segments([BEGIN, 1, 2], BEGIN, SPECIAL) == [Segment(0.0, None, (1, 2))]
    assert timestamp_segments([BEGIN + 5, BEGIN + 10, 7, BEGIN + 20, BEGIN + 20], BEGIN, SPECIAL) == [
        Segment(0.2, 0.4, (7,))
    ]
    assert timestamp_segments([60, 1, 2, SPECIAL], BEGIN, SPECIAL) == []  # no timestamps at all


def test_compare_timestamps_scores_lost_boundaries():
    before = [[Segment(0.0, 9.32), Segment(9.32, 14.36)], [Segment(0.0, 9.0)]]
    after = [[Segment(0.0, 14.26)], [Segment(0.0, 9.0)]]
    score = compare_timestamps(before, after, tolerance=0.5)
    assert (score.utterances, score.reference_segments, score.predicted_segments, score.same_count) == (2, 3, 2, 1)
    # boundaries 0, 9.32, 14.36 vs 0, 14.26: distances 0, 4.94, 0.10; then 0, 9.0 vs 0, 9.0: 0, 0
    assert score.boundary_error == pytest.approx((4.94 + 0.10) / 5)
    assert score.boundary_recall == pytest.approx(4 / 5)
    assert score.per_utterance[0] == {
        "reference": [0.0, 9.32, 14.36],
        "predicted": [0.0, 14.26],
        "boundary_error": pytest.approx(5.04 / 3),
    }
    assert compare_timestamps(before, before).boundary_error == 0.0
    with pytest.raises(ValueError, match="2 reference utterances but 1 predicted"):
        compare_timestamps(before, after[:1])


def test_inner_boundaries_in_pauses():
    segments = [Segment(0.0, 9.32), Segment(9.32, 14.36)]
    assert boundaries(segments) == [0.0, 9.32, 14.36]
    assert inner_boundaries_in_pauses(segments, [(9.4, 9.9)]) == (1, 1)  # 9.32 is within 0.25 s of the pause
    assert inner_boundaries_in_pauses(segments, [(2.0, 3.0)]) == (0, 1)
    assert inner_boundaries_in_pauses([Segment(0.0, 14.26)], [(9.4, 9.9)]) == (0, 0)


def test_merged_timestamp_tokens_collapse_the_segments(whisper_tiny_en, librivox, reference_cache):
    from hf_token_merge.reference.whisper import load_whisper_tiny_en

    original, processor = whisper_tiny_en
    merged, _ = load_whisper_tiny_en(cache_dir=reference_cache)
    config = TokenMergeConfig(token_id_range=(50364, 51864), allow_special_tokens=True, n_clusters=150)
    apply_token_merge(merged, config, show_progress=False)
    audio = [decode_audio(librivox[0]["audio"])]  # sonnet001_1: heading + lines 1-4, 14.8 s
    before = transcribe_segments(original, processor, audio)[0]
    after = transcribe_segments(merged, processor, audio)[0]
    assert len(before) == 2 and before[0].start == 0.0 and before[0].end == before[1].start
    assert 9.0 < before[0].end < 9.6 and 14.0 < before[1].end < 14.8
    assert len(after) == 1 and after[0].start == 0.0
    score = compare_timestamps([before], [after])
    assert score.boundary_recall == pytest.approx(2 / 3)  # the inner boundary is lost
    assert score.boundary_error > 1.0
    # the words are the same: the text tokens of both sides agree
    assert [t for s in before for t in s.token_ids] == list(after[0].token_ids)
