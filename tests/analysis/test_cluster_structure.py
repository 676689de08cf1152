"""cluster_structure: FSQ lattice neighbours and code frequency against merge clusters with known structure."""

from __future__ import annotations

import math

import pytest
import torch

from hf_token_merge.analysis.cluster_structure import (
    frequency_and_merging,
    lattice_neighbour_pairs,
    neighbour_sharing,
    structure_markdown,
)
from hf_token_merge.errors import TokenMergeError


def test_lattice_neighbours_of_a_small_codebook():
    # levels [3, 2]: code = d0 + 3 * d1
    pairs = {tuple(p) for p in lattice_neighbour_pairs([3, 2]).tolist()}
    assert pairs == {(0, 1), (1, 2), (3, 4), (4, 5), (0, 3), (1, 4), (2, 5)}


def test_lattice_neighbour_count_of_the_reference_codec():
    levels = [7, 5, 5, 5, 5]
    pairs = lattice_neighbour_pairs(levels)
    total = math.prod(levels)
    assert len(pairs) == sum((level - 1) * total // level for level in levels)
    assert len(pairs) == len({tuple(p) for p in pairs.tolist()})


def test_lines_along_one_dimension_share_far_above_chance():
    labels = torch.arange(64) // 4  # clusters are the lines along the first dimension of a 4x4x4 lattice
    result = neighbour_sharing(labels, [4, 4, 4], permutations=200)
    assert result.pairs == 144
    assert result.shared == pytest.approx(48 / 144)
    assert result.chance == pytest.approx(3 / 63, abs=0.01)  # a random pair shares a 4-code cluster
    assert result.ratio > 5
    assert result.p_value == pytest.approx(1 / 201)
    assert result.chance_low <= result.chance <= result.chance_high < result.shared


def test_random_clusters_share_at_chance():
    labels = torch.randint(0, 16, (256,), generator=torch.Generator().manual_seed(0))
    result = neighbour_sharing(labels, [4, 4, 4, 4], permutations=300)
    assert result.chance_low <= result.shared <= result.chance_high
    assert result.p_value > 0.05


def test_rows_restrict_pairs_and_permutations():
    labels = torch.arange(64) // 4
    used = torch.zeros(64, dtype=torch.bool)
    used[:16] = True  # the first 4x4 plane: 12 pairs along dim 0 (shared), 12 along dim 1
    result = neighbour_sharing(labels, [4, 4, 4], rows=used, permutations=50)
    assert result.pairs == 24
    assert result.shared == pytest.approx(0.5)
    same = neighbour_sharing(labels, [4, 4, 4], rows=torch.arange(16), permutations=50)
    assert same.to_dict() == result.to_dict()


def test_neighbour_sharing_errors_name_the_fix():
    with pytest.raises(TokenMergeError, match="one label per code"):
        neighbour_sharing(torch.zeros(10), [4, 4])
    with pytest.raises(TokenMergeError, match="levels must be integers >= 2"):
        lattice_neighbour_pairs([4, 1])
    with pytest.raises(TokenMergeError, match="widen `rows`"):
        neighbour_sharing(torch.arange(16), [4, 4], rows=torch.tensor([0, 5]))
    with pytest.raises(TokenMergeError, match=r"lie in \[0, 16\)"):
        neighbour_sharing(torch.arange(16), [4, 4], rows=torch.tensor([0, 16]))


def test_rare_rows_merging_gives_auc_one_and_exact_bins():
    counts = torch.arange(100)
    labels = torch.arange(100)
    labels[:30] = 0  # the 30 rarest rows form one cluster
    result = frequency_and_merging(labels, counts, bins=10)
    assert (result.rows, result.merged) == (100, 30)
    assert result.auc == pytest.approx(1.0)
    assert [b["merged_share"] for b in result.bins] == [1.0] * 3 + [0.0] * 7
    assert result.bins[0] == {"count_low": 0.0, "count_high": 9.0, "rows": 10, "merged_share": 1.0}
    frequent = frequency_and_merging(labels, counts.flip(0))
    assert frequent.auc == pytest.approx(0.0)


def test_ties_and_restricted_rows():
    labels = torch.tensor([0, 0, 1, 2, 3, 3])
    result = frequency_and_merging(labels, torch.ones(6), bins=3)
    assert result.auc == pytest.approx(0.5)
    # row 1 is outside the rows considered, yet row 0 still counts as merged: clusters span all rows
    only = frequency_and_merging(labels, torch.tensor([1, 9, 2, 3, 4, 5]), rows=torch.tensor([0, 2, 3]), bins=2)
    assert (only.rows, only.merged) == (3, 1)
    assert only.auc == pytest.approx(1.0)
    assert math.isnan(frequency_and_merging(torch.arange(4), torch.arange(4)).auc)
    with pytest.raises(TokenMergeError, match="one count per row"):
        frequency_and_merging(labels, torch.ones(5))


def test_markdown_shows_both_questions():
    labels = torch.arange(64) // 4
    text = structure_markdown(
        neighbour_sharing(labels, [4, 4, 4], permutations=20), frequency_and_merging(labels, torch.arange(64), bins=4)
    )
    assert "lattice neighbours in one cluster (144 pairs)" in text
    assert "33.3%" in text
    assert "| 0–15 | 16 | 100.0% |" in text


def test_structure_figure_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from hf_token_merge.analysis import plots

    labels = torch.arange(64) // 4
    path = plots.cluster_structure(
        neighbour_sharing(labels, [4, 4, 4], permutations=20),
        frequency_and_merging(labels, torch.arange(64), bins=4),
        str(tmp_path / "structure.png"),
    )
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
