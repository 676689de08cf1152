"""Paired bootstrap intervals, the paired permutation test, CER counts and provenance, on hand-made inputs."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.confidence import (
    compare_records,
    paired_bootstrap,
    paired_difference,
    paired_permutation_test,
)
from hf_token_merge.evaluation.provenance import library_versions, model_revision, provenance_of
from hf_token_merge.evaluation.text import ErrorCounts, character_error_counts
from tests.models import build_llama


def test_every_utterance_one_error_worse_gives_a_point_interval():
    # every resample has the same difference, 3 errors / 12 words
    result = paired_difference([0, 0, 0], [1, 1, 1], [4, 4, 4])
    assert (result.before, result.after, result.difference) == (0.0, 0.25, 0.25)
    assert (result.ci_low, result.ci_high) == (0.25, 0.25)
    # exact sign flips: |sum| = 3 only when all three signs agree, 2 of 8
    assert (result.p_value, result.test) == (0.25, "exact permutation")
    assert (result.utterances, result.units, result.unit_name) == (3, 12, "words")
    assert result.interval_text(100, "+.2f") == "95 % CI +25.00 to +25.00"
    assert result.summary() == (
        "+25.00 points (95 % CI +25.00 to +25.00; 12 words, 3 utterances; p = 0.25, exact permutation)"
    )


def test_the_interval_is_over_corpus_rates_not_mean_rates():
    # a: 1 error in 1 word after the merge, b: 0 in 9. Corpus difference 1/10 (a mean of rates would say 1/2).
    # Resamples are {a,a} -> 1.0, {a,b} -> 0.1, {b,b} -> 0.0 with probability 1/4, 1/2, 1/4, so the 2.5 % and
    # 97.5 % quantiles of 1,000 draws fall inside the {b,b} and {a,a} masses.
    result = paired_difference([0, 0], [1, 0], [1, 9], significance=False)
    assert result.difference == pytest.approx(0.1)
    assert (result.ci_low, result.ci_high) == (0.0, 1.0)
    assert result.p_value is None and result.test is None


def test_bootstrap_is_seeded():
    before, after, units = [1, 0, 3, 2, 0], [2, 1, 3, 0, 4], [5, 7, 6, 4, 9]
    first = paired_bootstrap(before, after, units, seed=7)
    assert paired_bootstrap(before, after, units, seed=7) == first
    assert paired_bootstrap(before, after, units, seed=8) != first
    assert first[0] <= 4 / 31 <= first[1]


def test_permutation_test_exact_and_monte_carlo():
    assert paired_permutation_test([0, 0], [1, 0]) == (1.0, "exact permutation")  # sums are +-1 under every flip
    assert paired_permutation_test([0, 0, 0, 0], [1, 1, 1, 0]) == (0.25, "exact permutation")  # 4 of 16 reach 3
    # 20 utterances, each one error worse: only 2 of 2^20 flips reach 20, so none of 10,000 seeded draws does
    p_value, test = paired_permutation_test([0] * 20, [1] * 20)
    assert (p_value, test) == (1 / 10001, "permutation (10,000 draws)")


def test_paired_inputs_are_validated():
    with pytest.raises(TokenMergeError, match=r"one value per utterance on each side; got \(2,\), \(3,\)"):
        paired_difference([0, 0], [1, 1, 1], [1, 1, 1])
    with pytest.raises(TokenMergeError, match="non-empty target text"):
        paired_difference([0], [0], [0])
    with pytest.raises(TokenMergeError, match="metric must be 'wer', 'cer' or 'nll'"):
        paired_difference([0], [0], [1], metric="bleu")


def _record(uid, target, prediction, counts: ErrorCounts):
    return {"id": uid, "target_normalized": target, "prediction_normalized": prediction, **counts.to_dict()}


def test_compare_records_wer_and_cer():
    before = [
        _record("a", "the cat", "the cat", ErrorCounts(hits=2)),
        _record("b", "a dog", "a dog", ErrorCounts(hits=2)),
    ]
    after = [
        _record("a", "the cat", "the bat", ErrorCounts(hits=1, substitutions=1)),
        _record("b", "a dog", "a dog", ErrorCounts(hits=2)),
    ]
    wer = compare_records(before, after)
    assert (wer.before, wer.after, wer.units) == (0.0, 0.25, 4)
    cer = compare_records(before, after, metric="cer")
    assert character_error_counts("the cat", "the bat") == ErrorCounts(hits=6, substitutions=1)
    assert (cer.after, cer.units, cer.unit_name) == (1 / 12, 12, "characters")
    with pytest.raises(TokenMergeError, match="did not score the same utterances"):
        compare_records(before, after[::-1])
    # records written before the rename name the ground truth "reference_normalized"; they are still read
    renamed = [{("reference_normalized" if k == "target_normalized" else k): v for k, v in r.items()} for r in after]
    old = compare_records(before, renamed, metric="cer")
    assert (old.after, old.units) == (cer.after, cer.units)


def test_character_error_counts_edges():
    assert character_error_counts("", "ab") == ErrorCounts(insertions=2)
    assert character_error_counts("ab", "") == ErrorCounts(deletions=2)


def test_provenance_of_a_model_and_a_dataset():
    model = build_llama().model
    model.config._name_or_path = "/cache/hub/models--HKUSTAudio--Llasa-1B/snapshots/" + "ab" * 20
    assert model_revision(model) == ("HKUSTAudio/Llasa-1B", "ab" * 20)
    model.config._commit_hash = "c" * 40  # from_pretrained records the commit here
    assert model_revision(model)[1] == "c" * 40
    data = Dataset.from_dict({"text": ["a", "b", "c"]}, split="test")
    record = provenance_of(model, data, dataset_name="librivox", units=7, generation={"do_sample": False}, asr="w")
    assert (record.dataset, record.split, record.examples, record.units) == ("librivox", "test", 3, 7)
    assert record.extra["asr"] == "w" and record.extra["dataset_fingerprint"] == data._fingerprint
    assert set(record.versions) == {"torch", "transformers", "accelerate", "datasets", "jiwer", "hf_token_merge"}
    assert record.versions["torch"] is not None and library_versions(("no-such-lib",)) == {"no-such-lib": None}
    lines = record.lines()
    assert lines[0] == "model: HKUSTAudio/Llasa-1B @ cccccccccccc"
    assert lines[1:4] == ["data: librivox, split test", "size: 3 examples, 7 words", "generation: do_sample=False"]
    assert provenance_of().lines()[0] == "model: unknown model (revision unknown)"
    assert record.markdown().startswith("- model: HKUSTAudio/Llasa-1B @ cccccccccccc\n- data: librivox, split test\n")


def test_compare_before_after_shows_the_interval_and_provenance(tmp_path):
    import copy

    from hf_token_merge import TokenMergeConfig, apply_token_merge
    from hf_token_merge.evaluation import compare_before_after
    from tests.evaluation.dist_eval import llama_data

    bundle = build_llama()
    merged = copy.deepcopy(bundle.model)
    apply_token_merge(merged, TokenMergeConfig(preset="llasa", n_clusters=8), tokenizer=bundle.tokenizer,
                      show_progress=False)  # fmt: skip
    sequences, _ = llama_data(bundle.tokenizer)
    result = compare_before_after(bundle.model, merged, sequences, task="perplexity", measure_disk=False,
                                  max_length=16, stride=5, show_progress=False, output_dir=tmp_path)  # fmt: skip
    difference = result.difference
    assert difference.metric == "nll" and difference.units == result.before.token_count
    assert difference.difference == pytest.approx(result.after.mean_nll - result.before.mean_nll)
    assert difference.ci_low <= difference.difference <= difference.ci_high
    row = result.row("mean_nll")
    assert row["interval"] == difference.interval_text(1, "+.4g")
    table = (tmp_path / "comparison.md").read_text()
    assert f"; 95 % CI {difference.ci_low:+.4g} to {difference.ci_high:+.4g} |" in table
    assert "\n- data: unnamed data\n- size: 7 examples" in table and "- versions: torch " in table
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["difference"]["ci_high"] == difference.ci_high
    assert saved["provenance"]["units"] == result.before.token_count
