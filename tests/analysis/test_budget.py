"""compress_within_budget: bisection finds the known boundary of a synthetic metric, and merges in place."""

from __future__ import annotations

import pytest
import torch

from hf_token_merge import TokenMergeConfig
from hf_token_merge.analysis import bisect_smallest, compress_within_budget
from hf_token_merge.analysis.budget import describe_eval_set
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.remap import MergedEmbedding
from tests.models import build_llama, frequent_ids_shared_metric


@pytest.mark.parametrize("boundary", [1, 2, 17, 63, 64, 100])
def test_bisection_finds_the_boundary(boundary):
    calls = []

    def within(k):
        calls.append(k)
        return k >= boundary

    assert bisect_smallest(within, 1, 100) == boundary
    assert len(calls) <= 8  # log2(100) + 1
    assert 100 not in calls  # the upper end is known to pass and never evaluated


def test_bisection_with_a_step_stops_within_the_step():
    found = bisect_smallest(lambda k: k >= 37, 1, 100, step=8)
    assert 37 <= found < 37 + 8


def _rows_removed_metric(model):
    """A synthetic quality metric: 'WER' grows by one point per removed row, perplexity by 0.5."""
    embedding = model.get_input_embeddings()
    removed = embedding.vocab_size - embedding.num_embeddings if isinstance(embedding, MergedEmbedding) else 0
    return {"wer": 0.10 + 0.01 * removed, "perplexity": 20.0 + 0.5 * removed}


def test_budget_keeps_the_largest_merge_within_budget():
    bundle = build_llama(n_speech=48, n_centers=8)
    config = TokenMergeConfig(preset="llasa", target_ratio=0.5)  # the stopping option is replaced
    result = compress_within_budget(
        bundle.model,
        config,
        _rows_removed_metric,
        max_wer_increase=0.105,
        tokenizer=bundle.tokenizer,
        show_progress=False,
    )
    # 0.105 allows 10 removed rows: 48 speech rows -> 38
    assert result.n_clusters == 38
    assert result.ratio == pytest.approx(38 / 48)
    assert result.after["wer"] - result.before["wer"] == pytest.approx(0.10)
    assert isinstance(bundle.model.get_input_embeddings(), MergedEmbedding)  # merged in place at the end
    assert bundle.model.get_input_embeddings().num_embeddings == bundle.vocab_size - 10
    assert [t["within_budget"] for t in result.trials].count(True) >= 1
    assert all(t["within_budget"] == (t["n_clusters"] >= 38) for t in result.trials)


def test_the_tightest_of_several_budgets_wins():
    bundle = build_llama(n_speech=48, n_centers=8)
    result = compress_within_budget(
        bundle.model,
        TokenMergeConfig(preset="llasa", n_clusters=8),
        _rows_removed_metric,
        max_wer_increase=1.0,
        max_ppl_increase=2.0,
        tokenizer=bundle.tokenizer,
        show_progress=False,
    )
    assert result.n_clusters == 44  # perplexity: 2.0 / 0.5 = 4 removed rows


def test_no_merge_fits_the_budget_leaves_the_model_alone():
    bundle = build_llama(n_speech=48, n_centers=8)
    result = compress_within_budget(
        bundle.model,
        TokenMergeConfig(preset="llasa", n_clusters=8),
        _rows_removed_metric,
        max_wer_increase=0.005,
        tokenizer=bundle.tokenizer,
        show_progress=False,
    )
    assert result.plan is None and result.n_clusters == 48
    assert not isinstance(bundle.model.get_input_embeddings(), MergedEmbedding)


def test_budget_errors():
    bundle = build_llama()
    config = TokenMergeConfig(preset="llasa", n_clusters=8)
    with pytest.raises(ValueError, match="Give a budget"):
        compress_within_budget(bundle.model, config, _rows_removed_metric, tokenizer=bundle.tokenizer)
    with pytest.raises(ValueError, match="must be >= 0"):
        compress_within_budget(
            bundle.model, config, _rows_removed_metric, max_wer_increase=-1, tokenizer=bundle.tokenizer
        )
    threshold = TokenMergeConfig(preset="llasa", method="threshold", similarity_threshold=0.9)
    with pytest.raises(ValueError, match="sets a row count"):
        compress_within_budget(
            bundle.model, threshold, _rows_removed_metric, max_wer_increase=0.1, tokenizer=bundle.tokenizer
        )
    with pytest.raises(TokenMergeError, match=r"returned no 'wer'; it returned \[.cer.\]. Fix: return"):
        compress_within_budget(
            bundle.model, config, lambda m: {"cer": 0.1}, max_wer_increase=0.1, tokenizer=bundle.tokenizer
        )


@pytest.mark.parametrize(("allowed", "expected_k"), [(0.0, 11), (0.02, 9), (0.1, 1)])
def test_budget_with_the_frequency_strategy_keeps_the_frequent_ids(allowed, expected_k):
    bundle = build_llama(n_speech=48, n_centers=8)
    selected = bundle.selected_ids
    counts = torch.zeros(bundle.vocab_size)
    frequent = selected[[3, 40, 7, 22, 30, 11, 0, 47, 15, 19]]
    counts[frequent] = torch.arange(10, 0, -1, dtype=torch.float32)  # frequent[0] is the most frequent
    result = compress_within_budget(
        bundle.model,
        TokenMergeConfig(preset="llasa", n_clusters=8),
        frequent_ids_shared_metric(frequent),
        max_wer_increase=allowed,
        tokenizer=bundle.tokenizer,
        token_counts=counts,
        strategy="frequency",
        min_ratio=1 / 48,
        show_progress=False,
    )
    # k rows: the k - 1 most frequent ids stay alone, the other 48 - k + 1 ids share one row
    assert result.n_clusters == expected_k
    assert result.plan.num_clusters == expected_k
    sizes = result.plan.cluster_sizes
    assert int(sizes.max()) == 48 - expected_k + 1
    kept = frequent[: expected_k - 1]
    kept_clusters = result.plan.cluster_of_selected[torch.searchsorted(selected, kept)]
    assert (sizes[kept_clusters] == 1).all()


def test_budget_strategy_errors():
    bundle = build_llama()
    config = TokenMergeConfig(preset="llasa", n_clusters=8)
    with pytest.raises(ValueError, match="needs token_counts"):
        compress_within_budget(
            bundle.model,
            config,
            _rows_removed_metric,
            max_wer_increase=0.1,
            tokenizer=bundle.tokenizer,
            strategy="frequency",
        )
    with pytest.raises(ValueError, match="Unknown strategy 'nearest'"):
        compress_within_budget(
            bundle.model,
            config,
            _rows_removed_metric,
            max_wer_increase=0.1,
            tokenizer=bundle.tokenizer,
            strategy="nearest",
        )


# --- tune/report split and the upper-bound criterion ----------------------------------------------------------------


def _removed_rows(model) -> int:
    embedding = model.get_input_embeddings()
    return embedding.vocab_size - embedding.num_embeddings if isinstance(embedding, MergedEmbedding) else 0


def _records_metric(spread: bool, offset: int = 0):
    """20 utterances of 10 words; each removed row adds one inserted word to utterance 0 (spread=False) or one error to
    every utterance (spread=True)."""

    def evaluate(model):
        removed = _removed_rows(model)
        records = []
        for u in range(20):
            errors = (removed if u < 1 else 0) if not spread else removed
            records.append({"id": f"u{u + offset}", "hits": 10, "substitutions": 0, "deletions": 0,
                            "insertions": errors})  # fmt: skip
        wer = sum(r["insertions"] for r in records) / 200
        return {"wer": wer, "records": records}

    return evaluate


def _data(ids):
    return [{"id": i, "text": "x"} for i in ids]


def test_report_set_must_differ_from_the_tuning_set():
    bundle = build_llama(n_speech=48, n_centers=8)
    config = TokenMergeConfig(preset="llasa", n_clusters=8)
    tune = describe_eval_set(_rows_removed_metric, "dev", _data(["a", "b", "c"]))
    with pytest.raises(TokenMergeError, match="report_evaluate is the tuning evaluation itself"):
        compress_within_budget(bundle.model, config, tune, max_wer_increase=0.1, tokenizer=bundle.tokenizer,
                               report_evaluate=tune)  # fmt: skip

    def same(model):
        return _rows_removed_metric(model)

    describe_eval_set(same, "test", _data(["c", "b", "a"]))
    with pytest.raises(TokenMergeError, match=r"share 3 of 3 report examples .* — they are the same set"):
        compress_within_budget(bundle.model, config, tune, max_wer_increase=0.1, tokenizer=bundle.tokenizer,
                               report_evaluate=same)  # fmt: skip
    describe_eval_set(same, "test", _data(["c", "d"]))
    with pytest.raises(TokenMergeError, match=r"share 1 of 2 report examples \(e.g. 'c'\)"):
        compress_within_budget(bundle.model, config, tune, max_wer_increase=0.1, tokenizer=bundle.tokenizer,
                               report_evaluate=same)  # fmt: skip
    assert not isinstance(bundle.model.get_input_embeddings(), MergedEmbedding)  # refused before any merge
    with pytest.warns(UserWarning, match=r"share 1 of 2 report examples"):
        result = compress_within_budget(bundle.model, config, tune, max_wer_increase=0.105, tokenizer=bundle.tokenizer,
                                        report_evaluate=same, allow_overlap=True, show_progress=False)  # fmt: skip
    assert result.n_clusters == 38 and not result.tuned_on_report_set


def test_without_a_report_set_the_search_warns_loudly():
    bundle = build_llama(n_speech=48, n_centers=8)
    with pytest.warns(UserWarning, match="NO SEPARATE REPORT SET"):
        result = compress_within_budget(bundle.model, TokenMergeConfig(preset="llasa", n_clusters=8),
                                        _rows_removed_metric, max_wer_increase=0.105, tokenizer=bundle.tokenizer,
                                        show_progress=False)  # fmt: skip
    assert result.tuned_on_report_set and result.report_before is None
    assert result.to_dict()["report"] is None


def test_both_sets_are_reported_with_their_interval():
    bundle = build_llama(n_speech=48, n_centers=8)
    tune = describe_eval_set(_records_metric(spread=True), "dev", _data([f"u{i}" for i in range(20)]))
    report = describe_eval_set(
        _records_metric(spread=True, offset=100), "test", _data([f"u{i}" for i in range(100, 120)])
    )
    result = compress_within_budget(bundle.model, TokenMergeConfig(preset="llasa", n_clusters=8), tune,
                                    max_wer_increase=0.5, report_evaluate=report, tokenizer=bundle.tokenizer,
                                    show_progress=False)  # fmt: skip
    # each removed row adds 20 errors in 200 words: 0.1 per row, so 5 rows fit 0.5
    assert result.n_clusters == 43
    saved = result.to_dict()
    assert saved["tune"]["after"]["wer"] == pytest.approx(0.5) and "records" not in saved["tune"]["after"]
    assert saved["report"]["before"] == {"wer": 0.0} and saved["report"]["after"]["wer"] == pytest.approx(0.5)
    # every utterance changes alike, so the bootstrap interval is the point itself
    difference = saved["report"]["difference"]
    assert (difference["ci_low"], difference["ci_high"]) == pytest.approx((0.5, 0.5))
    assert (difference["utterances"], difference["units"]) == (20, 200)
    assert saved["tune"]["difference"]["difference"] == pytest.approx(0.5)


def test_upper_bound_criterion_is_stricter_when_the_loss_is_concentrated():
    # all of the damage falls on one utterance of 20: the point estimate is r/200, but a resample without that
    # utterance or with it twice moves a lot, so the 95 % upper bound is far above the estimate
    results = {}
    for criterion in ("estimate", "upper_bound"):
        bundle = build_llama(n_speech=48, n_centers=8)
        tune = describe_eval_set(_records_metric(spread=False), "dev", _data([f"u{i}" for i in range(20)]))
        report = describe_eval_set(_records_metric(spread=False, offset=100), "test", _data(["u100"]))
        results[criterion] = compress_within_budget(
            bundle.model, TokenMergeConfig(preset="llasa", n_clusters=8), tune, max_wer_increase=0.05,
            report_evaluate=report, criterion=criterion, tokenizer=bundle.tokenizer, show_progress=False,
        )  # fmt: skip
    assert results["estimate"].n_clusters == 38  # 10 rows: 10 errors / 200 words = 0.05
    strict = results["upper_bound"]
    assert strict.n_clusters > 38 and strict.criterion == "upper_bound"
    chosen = next(t for t in strict.trials if t["n_clusters"] == strict.n_clusters)
    assert chosen["metrics"]["wer_ci_high"] <= 0.05 < max(t["metrics"]["wer_ci_high"] for t in strict.trials)
    for trial in strict.trials:
        assert trial["within_budget"] == (trial["metrics"]["wer_ci_high"] <= 0.05 + 1e-12)
    with pytest.raises(TokenMergeError, match="needs per-utterance records"):
        compress_within_budget(build_llama().model, TokenMergeConfig(preset="llasa", n_clusters=8),
                               _rows_removed_metric, max_wer_increase=0.05, criterion="upper_bound",
                               report_evaluate=lambda m: {}, tokenizer=bundle.tokenizer)  # fmt: skip
    with pytest.raises(TokenMergeError, match="bounds the WER increase only"):
        compress_within_budget(build_llama().model, TokenMergeConfig(preset="llasa", n_clusters=8),
                               _rows_removed_metric, max_ppl_increase=1.0, criterion="upper_bound",
                               tokenizer=bundle.tokenizer)  # fmt: skip
