"""sweep: strategies, levels and outputs on planted structure with a distortion metric."""

from __future__ import annotations

import json

import pytest
import torch

from hf_token_merge import TokenMergeConfig, count_tokens, plan_token_merge
from hf_token_merge.analysis import sweep
from hf_token_merge.analysis.sweep import random_labels, strategy_config, strategy_labels, used_rows_removed
from hf_token_merge.clustering.frequency import least_frequent_labels
from tests.models import build_llama


def _distortion_metric(original_rows: torch.Tensor, ids: torch.Tensor):
    def evaluate(model):
        rows = model.get_input_embeddings()(ids)
        return {"distortion": float((rows - original_rows).pow(2).sum(1).mean())}

    return evaluate


def test_similarity_merge_beats_the_controls(tmp_path):
    bundle = build_llama(n_speech=48, n_centers=8)
    ids = bundle.selected_ids
    evaluate = _distortion_metric(bundle.model.get_input_embeddings()(ids).detach(), ids)
    counts = count_tokens(torch.arange(bundle.vocab_size).repeat_interleave(2), bundle.vocab_size)
    counts[ids[:4]] += 10  # a few frequent speech tokens
    points = sweep(
        bundle.model,
        TokenMergeConfig(preset="llasa", n_clusters=8),
        evaluate,
        ratios=(0.5, 8 / 48),
        strategies=("kmeans", "agglomerative", "frequency", "random"),
        tokenizer=bundle.tokenizer,
        token_counts=counts,
        output_dir=str(tmp_path),
        show_progress=False,
    )
    by_key = {(p.strategy, p.rows_kept): p for p in points}
    assert points[0].strategy == "baseline" and points[0].metrics["distortion"] == 0.0
    assert len(points) == 1 + 4 * 2
    assert by_key[("kmeans", 8)].rows_removed == 40
    for method in ("kmeans", "agglomerative"):  # the planted clusters: almost no distortion
        assert by_key[(method, 8)].metrics["distortion"] < 1e-4
    for control in ("random", "frequency"):
        assert by_key[(control, 8)].metrics["distortion"] > 100 * by_key[("kmeans", 8)].metrics["distortion"] + 0.1
    assert type(bundle.model.get_input_embeddings()) is torch.nn.Embedding  # the original is left unmerged
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert len(saved) == len(points)
    assert (tmp_path / "sweep_distortion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| kmeans | 0.1667 | 8 | 40 |" in (tmp_path / "sweep.md").read_text()


def test_control_groupings():
    labels = random_labels(20, 6, seed=1)
    assert sorted(labels.unique().tolist()) == list(range(6))
    assert torch.equal(labels, random_labels(20, 6, seed=1))
    counts = torch.tensor([5, 1, 9, 0, 3])
    assert least_frequent_labels(counts, 3).tolist() == [1, 2, 0, 2, 2]  # 9 and 5 stay, the rest share a row


def test_sweep_errors():
    bundle = build_llama()
    config = TokenMergeConfig(preset="llasa", n_clusters=8)
    with pytest.raises(ValueError, match="Unknown strategies"):
        sweep(bundle.model, config, lambda m: {}, strategies=("magic",), tokenizer=bundle.tokenizer)
    with pytest.raises(ValueError, match="needs token_counts"):
        sweep(bundle.model, config, lambda m: {}, strategies=("frequency",), tokenizer=bundle.tokenizer)
    with pytest.raises(ValueError, match="Unknown strategies \\['threshold'\\]"):
        sweep(bundle.model, config, lambda m: {}, strategies=("threshold",), tokenizer=bundle.tokenizer)


def test_the_old_strategy_name_is_a_deprecated_alias_of_the_frequency_method():
    bundle = build_llama(n_speech=48, n_centers=8)
    counts = count_tokens(torch.arange(bundle.vocab_size), bundle.vocab_size)
    config = TokenMergeConfig(preset="llasa", n_clusters=8)
    with pytest.warns(FutureWarning, match="'drop_least_frequent' is deprecated; use 'frequency'"):
        points = sweep(
            bundle.model,
            config,
            lambda m: {"rows": float(m.get_input_embeddings().num_embeddings)},
            ratios=(0.25,),
            strategies=("drop_least_frequent",),
            tokenizer=bundle.tokenizer,
            token_counts=counts,
            show_progress=False,
        )
    assert [(p.strategy, p.rows_kept) for p in points] == [("baseline", 48), ("frequency", 12)]
    assert points[1].metrics["rows"] == points[0].metrics["rows"] - 36
    assert strategy_config(config, "random", 5, seed=3).to_dict() == {
        **config.to_dict(),
        "method": "random",
        "n_clusters": 5,
        "seed": 3,
    }


def test_strategy_labels():
    selected = torch.tensor([2, 4, 6, 8, 10])
    counts = torch.zeros(12)
    counts[[4, 10]] = torch.tensor([3.0, 7.0])
    assert strategy_labels("kmeans", selected, 3) is None
    assert strategy_labels("agglomerative", selected, 3) is None
    # ids 10 and 4 are the most frequent; ties among the zero counts go to the smaller id (2 comes before 6 and 8)
    assert strategy_labels("frequency", selected, 3, counts).tolist() == [2, 1, 2, 2, 0]
    assert strategy_labels("frequency", selected, 4, counts).tolist() == [2, 1, 3, 3, 0]
    with pytest.warns(FutureWarning, match="deprecated"):
        assert strategy_labels("drop_least_frequent", selected, 3, counts).tolist() == [2, 1, 2, 2, 0]
    assert torch.equal(strategy_labels("random", selected, 3, seed=4), random_labels(5, 3, seed=4))
    with pytest.raises(ValueError, match="needs token_counts"):
        strategy_labels("frequency", selected, 3)
    with pytest.raises(ValueError, match="Unknown strategy 'magic'"):
        strategy_labels("magic", selected, 3)


def _record_metric(original_rows: torch.Tensor, ids: torch.Tensor):
    """One 'utterance' of 10 words per selected id: its word errors grow with the distortion of its row."""

    def evaluate(model):
        gaps = (model.get_input_embeddings()(ids) - original_rows).pow(2).sum(1)
        errors = (gaps * 10).clamp(max=10).round().long().tolist()
        records = [
            {"id": i, "hits": 10 - e, "substitutions": e, "deletions": 0, "insertions": 0} for i, e in enumerate(errors)
        ]
        return {"wer": sum(errors) / (10 * len(errors)), "records": {"wer": records}}

    return evaluate


def test_points_carry_paired_intervals_and_used_rows(tmp_path):
    bundle = build_llama(n_speech=48, n_centers=8)
    ids = bundle.selected_ids
    evaluate = _record_metric(bundle.model.get_input_embeddings()(ids).detach(), ids)
    counts = torch.zeros(bundle.vocab_size, dtype=torch.long)
    counts[ids[:20]] = 3  # 20 of the 48 speech rows are used
    points = sweep(
        bundle.model,
        TokenMergeConfig(preset="llasa", n_clusters=8),
        evaluate,
        ratios=(8 / 48,),
        strategies=("kmeans", "random"),
        tokenizer=bundle.tokenizer,
        token_counts=counts,
        output_dir=str(tmp_path),
        show_progress=False,
    )
    baseline, *merged = points
    assert baseline.differences == {} and (baseline.used_rows, baseline.used_rows_removed) == (20, 0)
    for point in merged:
        d = point.differences["wer"]
        assert d["difference"] == pytest.approx(point.metrics["wer"] - baseline.metrics["wer"])
        assert d["ci_low"] <= d["difference"] <= d["ci_high"] and d["units"] == 480
        assert point.used_rows == 20 and 0 <= point.used_rows_removed <= 20 - 1
    by_strategy = {p.strategy: p for p in merged}
    assert by_strategy["random"].differences["wer"]["ci_low"] > by_strategy["kmeans"].differences["wer"]["ci_high"]
    table = (tmp_path / "sweep.md").read_text()
    assert "used rows removed" in table and "Δ wer (95 % CI)" in table
    assert f"{by_strategy['kmeans'].used_rows_removed} of 20" in table
    assert json.loads((tmp_path / "sweep.json").read_text())[1]["differences"]["wer"]["units"] == 480
    assert (tmp_path / "sweep_wer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_used_rows_removed_counts_clusters_holding_used_rows():
    bundle = build_llama(n_speech=48, n_centers=8)
    config = TokenMergeConfig(preset="llasa", n_clusters=8)
    plan = plan_token_merge(bundle.model, config, tokenizer=bundle.tokenizer, show_progress=False)
    counts = torch.zeros(bundle.vocab_size, dtype=torch.long)
    counts[plan.selected_ids] = 1
    assert used_rows_removed(plan, counts) == (48, 40)
    counts[plan.selected_ids[plan.cluster_of_selected != 0]] = 0  # only cluster 0's members are used
    size = int((plan.cluster_of_selected == 0).sum())
    assert used_rows_removed(plan, counts) == (size, size - 1)


def test_records_without_their_metric_are_refused():
    bundle = build_llama()
    with pytest.raises(ValueError, match=r"records for \['tts_wer'\] but no such metric"):
        sweep(
            bundle.model,
            TokenMergeConfig(preset="llasa", n_clusters=8),
            lambda m: {"wer": 0.1, "records": {"tts_wer": []}},
            strategies=("kmeans",),
            tokenizer=bundle.tokenizer,
        )


def test_threshold_points_sit_on_the_rows_removed_axis(tmp_path):
    bundle = build_llama(n_speech=48, n_centers=8)
    ids = bundle.selected_ids
    evaluate = _distortion_metric(bundle.model.get_input_embeddings()(ids).detach(), ids)
    config = TokenMergeConfig(preset="llasa", n_clusters=8)
    points = sweep(
        bundle.model,
        config,
        evaluate,
        ratios=(),
        strategies=(),
        thresholds=(0.999999, 0.9),
        tokenizer=bundle.tokenizer,
        output_dir=str(tmp_path),
        show_progress=False,
    )
    strict, loose = points[1:]
    assert (strict.strategy, strict.threshold, loose.threshold) == ("threshold", 0.999999, 0.9)
    expected = plan_token_merge(
        bundle.model, config.with_stop(method="threshold", similarity_threshold=0.9), tokenizer=bundle.tokenizer
    ).num_clusters
    assert loose.rows_kept == expected and loose.rows_removed == 48 - expected
    assert loose.rows_removed >= strict.rows_removed
    assert "| threshold 0.9 |" in (tmp_path / "sweep.md").read_text()
