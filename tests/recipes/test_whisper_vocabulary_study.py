"""The issue-16 study's own logic (recipes/whisper_vocabulary): the `fused` ranking, its token-level calibration
file, and the dev choice rule."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

STUDY = Path(__file__).resolve().parents[2] / "recipes" / "whisper_vocabulary"


@pytest.fixture(scope="module")
def study():
    sys.path.insert(0, str(STUDY))
    sys.path.insert(0, str(STUDY.parent / "speech_codec"))
    try:
        import make_calibration
        import rankings
        import study_sets

        yield rankings, make_calibration, study_sets
    finally:
        sys.path.remove(str(STUDY))
        sys.path.remove(str(STUDY.parent / "speech_codec"))


def test_rank_fusion_keeps_the_best_place_of_each_id(study):
    rankings = study[0]
    low = rankings.SELECTED[0]
    first = np.zeros(rankings.VOCAB)
    second = np.zeros(rankings.VOCAB)
    first[[low + 5, low + 6, low + 7]] = [3.0, 2.0, 1.0]  # order: +5, +6, +7, then the rest by id
    second[[low + 9, low + 7]] = [5.0, 4.0]  # order: +9, +7, then the rest by id
    fused = rankings.rank_fusion(first, second)
    ranks = rankings.order_ranks(fused)
    # places: +5 -> 0, +9 -> 0, +6 -> 1, +7 -> 1 (second's place), then the others
    assert fused[low + 5] == fused[low + 9] == rankings.VOCAB
    assert fused[low + 6] == fused[low + 7] == rankings.VOCAB - 1
    assert sorted(rankings.kept_ids(fused, 4).tolist()) == [low + 5, low + 6, low + 7, low + 9]
    assert ranks[low + 5] == 0 and ranks[low + 9] == 1  # ties go to the smaller id
    assert fused[: rankings.SELECTED[0]].max() == 0  # the bytes are never ranked


def test_choose_within_budget_takes_the_cheapest_trial_inside_it(study):
    choose = study[2].choose_within_budget
    trials = [
        {"ranking": "a", "rows": 100, "delta_points": 0.9},
        {"ranking": "a", "rows": 200, "delta_points": 0.4},
        {"ranking": "a", "rows": 300, "delta_points": 0.1},
        {"ranking": "b", "rows": 200, "delta_points": 0.2},
        {"ranking": "b", "rows": 200, "delta_points": 0.3},
        {"ranking": "c", "rows": 100, "delta_points": 0.6},
    ]
    chosen = choose(trials, 0.5, cost="rows", group_by="ranking")
    assert chosen == {"a": trials[1], "b": trials[3]}  # c has no trial within +0.5 point


def test_fused_calibration_lines_count_each_token_its_score(study, whisper_tiny_en):
    _, make_calibration, _ = study
    tokenizer = whisper_tiny_en[1].tokenizer
    # a piece of a UTF-8 character is no text by itself: it is written as a character that holds it
    piece = tokenizer.convert_tokens_to_ids("âĢ")  # the first two bytes of ', ", -, ...
    text = make_calibration.completed_text(tokenizer, piece)
    assert text is not None and piece in tokenizer(text, add_special_tokens=False)["input_ids"]
    assert make_calibration.completed_text(tokenizer, tokenizer.convert_tokens_to_ids("Ġthe")) == " the"
