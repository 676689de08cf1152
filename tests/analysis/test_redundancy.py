"""analyze_redundancy: numbers on planted structure, figures as real PNGs, bounded memory at N = 65,536."""

from __future__ import annotations

import json
import resource

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_token_merge import TokenMergeConfig
from hf_token_merge.analysis import analyze_redundancy
from hf_token_merge.analysis import rows as row_stats
from hf_token_merge.analysis.layers import cka_matrix, linear_cka
from tests.models import build_llama, sample_ids

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_planted_near_duplicates_are_found(tmp_path):
    bundle = build_llama(n_speech=48, n_centers=8)  # rows = 8 centres + 1e-3 noise
    config = TokenMergeConfig(preset="llasa", n_clusters=8)
    report = analyze_redundancy(
        bundle.model,
        config,
        str(tmp_path),
        tokenizer=bundle.tokenizer,
        maps=(),
        thresholds=(0.5, 0.999, 1.0),
        show_progress=False,
    )
    assert report.selected_rows == 48
    # every row has 5 near-copies: its nearest neighbour is almost identical
    assert report.nearest_neighbour["p05"] > 0.999
    # at 0.999 the curve finds exactly the planted clusters; at 1.0 nothing merges (noise makes rows distinct)
    assert dict(report.threshold_curve)[0.999] == 8
    assert dict(report.threshold_curve)[1.0] == 48
    assert report.plan_statistics["clusters"] == 8
    assert report.plan_statistics["mean_cosine_to_merged_row"] > 0.999
    # 8 random directions: 8 components hold the variance (7 after centring, plus noise)
    assert report.components_99 <= 8


def test_pairwise_values_match_a_direct_computation():
    rows = torch.randn(50, 6)
    values = row_stats.pairwise_values(rows, "euclidean", block_size=7)
    expected = torch.pdist(rows)
    assert torch.allclose(values, expected, atol=1e-5)
    cosines = row_stats.pairwise_values(rows, "cosine", block_size=7)
    unit = torch.nn.functional.normalize(rows, dim=1)
    i, j = torch.triu_indices(50, 50, offset=1)
    assert torch.allclose(cosines, (unit @ unit.T)[i, j], atol=1e-6)


def test_nearest_neighbour_excludes_the_row_itself():
    rows = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    distances = row_stats.nearest_neighbour_values(rows, "euclidean", torch.arange(3), block_size=2)
    assert distances.tolist() == pytest.approx([1.0, (9 + 9) ** 0.5, 1.0])


def test_spectrum_and_effective_rank():
    rows = torch.zeros(100, 4)
    rows[:, 0] = torch.randn(100)
    rows[:, 1] = torch.randn(100)
    spectrum = row_stats.pca_spectrum(rows)
    assert spectrum.sum() == pytest.approx(1.0)
    assert float(spectrum[2:].sum()) < 1e-6
    assert 1.5 < row_stats.effective_rank(spectrum) <= 2.0
    assert row_stats.components_for(spectrum, 0.999) == 2


def test_linear_cka_is_one_for_rotations_and_low_for_independent_data():
    x = torch.randn(400, 8)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8))
    assert linear_cka(x, x @ rotation * 3.0) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x, torch.randn(400, 8)) < 0.2
    matrix = cka_matrix([x, x @ rotation, torch.randn(400, 8)])
    assert torch.allclose(matrix, matrix.T) and torch.equal(matrix.diagonal(), torch.ones(3))


def test_figures_are_png_and_reports_embed_them(tmp_path):
    bundle = build_llama(n_speech=48, n_centers=8, layers=2)
    inputs = list(sample_ids(bundle, shape=(3, 32)))
    report = analyze_redundancy(
        bundle.model,
        TokenMergeConfig(preset="llasa", n_clusters=8),
        str(tmp_path),
        tokenizer=bundle.tokenizer,
        inputs=inputs,
        maps=("tsne", "umap"),
        map_rows=48,
        show_progress=False,
    )
    expected = {
        "pairwise",
        "nearest_neighbour",
        "threshold_curve",
        "pca_spectrum",
        "tsne",
        "umap",
        "layer_adjacent_cosine",
        "layer_cka",
    }
    assert set(report.figures) == expected
    for path in report.figures.values():
        with open(path, "rb") as handle:
            assert handle.read(8) == PNG_MAGIC, path
    assert len(report.layer_adjacent_cosine) == 3  # embeddings + 2 layers
    assert len(report.layer_cka) == 3 and report.layer_cka[0][0] == pytest.approx(1.0)
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(expected)
    markdown = (tmp_path / "report.md").read_text()
    assert all(f"({name}.png)" in markdown for name in expected)
    assert json.loads((tmp_path / "report.json").read_text())["selected_rows"] == 48


def test_large_vocabulary_stays_blockwise(tmp_path):
    # 65,536 selected rows: an N x N float32 matrix would need 16 GiB; the analysis must stay far below
    n, width = 65_536, 8
    config = LlamaConfig(
        vocab_size=n + 4,
        hidden_size=width,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    model = LlamaForCausalLM(config).eval()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report = analyze_redundancy(
        model,
        TokenMergeConfig(token_id_range=(4, n + 4), n_clusters=64, projection_dim=None),
        str(tmp_path),
        maps=(),
        sample_size=2048,
        thresholds=(0.9,),
        show_progress=False,
    )
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert report.selected_rows == n
    assert report.pair_sample_rows == 2048 and report.neighbour_sample_rows == 2048
    assert grown < 2 * 2**30, f"peak RSS grew by {grown / 2**30:.1f} GiB"
