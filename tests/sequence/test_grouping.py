"""Groupings and pooling on constructed inputs with known answers."""

import math

import pytest
import torch

from hf_token_merge.sequence import MergeStage, affinity_groups, oracle_groups, pool_groups


def unit(angle_degrees: float) -> list[float]:
    return [math.cos(math.radians(angle_degrees)), math.sin(math.radians(angle_degrees))]


def test_affinity_window_one_compares_with_the_previous_token():
    # cos(0°, 20°) = 0.94, cos(20°, 40°) = 0.94, cos(40°, 90°) = 0.64, cos(90°, 95°) = 0.996
    hidden = torch.tensor([[unit(0), unit(20), unit(40), unit(90), unit(95), unit(180)]])
    valid = torch.ones(1, 6, dtype=torch.bool)
    speech = torch.ones(1, 6, dtype=torch.bool)
    groups = affinity_groups(hidden, valid, speech, threshold=0.9, window=1)
    assert groups.tolist() == [[0, 0, 0, 1, 1, 2]]


def test_affinity_window_three_reaches_back_inside_the_group_only():
    # token 1 (24°) joins token 0 (0°, cos 0.914); token 2 (-8°) is far from token 1 (cos 0.848) but close to
    # token 0 (cos 0.990): window 3 joins it, window 1 does not
    hidden = torch.tensor([[unit(0), unit(24), unit(-8), unit(170), unit(0)]])
    valid = torch.ones(1, 5, dtype=torch.bool)
    speech = torch.ones(1, 5, dtype=torch.bool)
    assert affinity_groups(hidden, valid, speech, threshold=0.9, window=1).tolist() == [[0, 0, 1, 2, 3]]
    # token 4 (0°) matches tokens 0 and 2, but they belong to a closed group, so it opens its own
    assert affinity_groups(hidden, valid, speech, threshold=0.9, window=3).tolist() == [[0, 0, 0, 1, 2]]


def test_text_and_padding_break_groups_and_never_merge():
    same = unit(0)
    hidden = torch.tensor([[same] * 7])
    valid = torch.tensor([[False, True, True, True, True, True, True]])
    speech = torch.tensor([[True, True, True, False, False, True, True]])
    for window in (1, 3):
        groups = affinity_groups(hidden, valid, speech, threshold=0.5, window=window)
        # padding -1; speech run (1, 2) merges; both text tokens stay alone; speech run (5, 6) merges
        assert groups.tolist() == [[-1, 0, 0, 1, 2, 3, 3]]


def test_affinity_threshold_one_keeps_distinct_tokens_apart():
    hidden = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(0))
    valid = torch.ones(2, 12, dtype=torch.bool)
    speech = torch.ones(2, 12, dtype=torch.bool)
    for window in (1, 3):
        groups = affinity_groups(hidden, valid, speech, threshold=1.0, window=window)
        assert torch.equal(groups, torch.arange(12).expand(2, 12))


def test_oracle_groups_uniform_and_random():
    valid = torch.ones(1, 12, dtype=torch.bool)
    speech = torch.tensor([[False] + [True] * 10 + [False]])
    merged = oracle_groups(valid, speech, "uniform_merge", 0.3)
    # 10 speech tokens keep 3: groups of 4, 3, 3 (slot = t * 3 // 10); the text tokens stay alone
    assert merged.tolist() == [[0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4]]
    dropped = oracle_groups(valid, speech, "uniform_drop", 0.3)
    assert dropped.tolist() == [[0, 1, -1, -1, -1, 2, -1, -1, 3, -1, -1, 4]]
    first = oracle_groups(valid, speech, "random_drop", 0.3, torch.Generator().manual_seed(0))
    again = oracle_groups(valid, speech, "random_drop", 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(first, again)
    assert (first[0, 1:11] >= 0).sum() == 3 and first[0, 0] == 0 and first[0, 11] == 4


def test_pool_groups_means_positions_and_left_padding():
    hidden = torch.arange(2 * 5 * 2, dtype=torch.float32).view(2, 5, 2)
    group = torch.tensor([[0, 1, 1, 1, 2], [-1, 0, 0, 1, 2]])
    positions = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 1, 2, 3]])
    speech = torch.tensor([[False, True, True, True, False], [False, True, True, False, False]])
    first = pool_groups(hidden, group, positions, speech, "first")
    assert torch.equal(first.hidden[0], torch.stack([hidden[0, 0], hidden[0, 1:4].mean(0), hidden[0, 4]]))
    assert torch.equal(first.hidden[1], torch.stack([hidden[1, 1:3].mean(0), hidden[1, 3], hidden[1, 4]]))
    assert first.valid.all()
    assert first.positions.tolist() == [[0, 1, 4], [0, 2, 3]]
    assert first.speech.tolist() == [[False, True, False], [True, False, False]]
    assert first.slot.tolist() == [[0, 1, 1, 1, 2], [-1, 0, 0, 1, 2]]
    assert pool_groups(hidden, group, positions, speech, "mean").positions.tolist() == [[0, 2, 4], [0.5, 2, 3]]
    assert pool_groups(hidden, group, positions, speech, "contiguous").positions.tolist() == [[0, 1, 2], [0, 1, 2]]

    uneven = torch.tensor([[0, 0, 0, 0, 1], [-1, 0, 1, 2, 3]])
    packed = pool_groups(hidden, uneven, positions, speech, "first")
    assert packed.valid.tolist() == [[False, False, True, True], [True, True, True, True]]  # left padding
    assert torch.equal(packed.hidden[0, 2], hidden[0, :4].mean(0))


def test_stage_validation_messages():
    with pytest.raises(ValueError, match="threshold in \\[-1, 1\\]"):
        MergeStage(layer=0)
    with pytest.raises(ValueError, match="needs retention"):
        MergeStage(layer=2, mode="uniform_drop")
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        MergeStage(layer=0, threshold=0.8, window=0)
    with pytest.raises(ValueError, match="non-negative int"):
        MergeStage(layer=-1, threshold=0.8)
