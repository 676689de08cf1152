"""Refusals that keep a merge from being silently wrong: non-finite counts or rows, and plans of other rows."""

from __future__ import annotations

import copy
import json
import re
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_token_merge import MergePlan, TokenMergeConfig, apply_token_merge, plan_token_merge
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.remap.plan import PLAN_META_NAME, EmbeddingRows, scan_rows
from tests.models import assert_unchanged, build_llama, logits_of, sample_ids, snapshot

# --- non-finite calibration counts and rows ------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_token_counts_are_refused(llama_tied, bad):
    counts = torch.ones(llama_tied.vocab_size, dtype=torch.float32)
    counts[int(llama_tied.selected_ids[3])] = bad
    before = snapshot(llama_tied.model)
    config = TokenMergeConfig(preset="llasa", n_clusters=8, merge_rule="weighted_mean")
    with pytest.raises(
        TokenMergeError, match=rf"token_counts holds NaN or inf at 1 id\(s\) \(\[{int(llama_tied.selected_ids[3])}\]\)"
    ):
        apply_token_merge(
            llama_tied.model, config, tokenizer=llama_tied.tokenizer, token_counts=counts, show_progress=False
        )
    assert_unchanged(llama_tied.model, before)


METHODS = [
    {"method": "kmeans", "n_clusters": 8},
    {"method": "agglomerative", "n_clusters": 8},
    {"method": "agglomerative", "similarity_threshold": 0.9},
    {"method": "threshold", "similarity_threshold": 0.9},
    {"method": "threshold", "metric": "euclidean", "distance_threshold": 0.5},
]


@pytest.mark.parametrize("stop", METHODS, ids=lambda stop: "-".join(str(v) for v in stop.values()))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_selected_rows_are_refused_naming_ids(stop, bad):
    bundle = build_llama(tied=True)
    ids = [int(i) for i in bundle.selected_ids[[2, 5, 7, 11, 13, 17, 19]]]
    with torch.no_grad():
        bundle.model.get_input_embeddings().weight[ids, 1] = bad
    before = bundle.model.get_input_embeddings().weight.clone()
    config = TokenMergeConfig(preset="llasa", **stop)
    with pytest.raises(
        TokenMergeError, match=re.escape(f"7 selected row(s) of model.embed_tokens hold NaN or inf (ids {ids[:5]} ...)")
    ) as info:
        apply_token_merge(bundle.model, config, tokenizer=bundle.tokenizer, show_progress=False)
    assert "exclude_token_ids" in str(info.value)
    embedding = bundle.model.get_input_embeddings()
    assert type(embedding) is torch.nn.Embedding  # not swapped; assert_unchanged cannot compare NaN
    assert torch.allclose(embedding.weight, before, rtol=0, atol=0, equal_nan=True)


def test_non_finite_output_rows_of_an_untied_head_are_refused(llama_untied):
    bad_id = int(llama_untied.selected_ids[0])
    with torch.no_grad():
        llama_untied.model.get_output_embeddings().weight[bad_id, 0] = float("nan")
    with pytest.raises(TokenMergeError, match=rf"1 selected row\(s\) of lm_head hold NaN or inf \(ids \[{bad_id}\]\)"):
        plan_token_merge(
            llama_untied.model,
            TokenMergeConfig(preset="llasa", n_clusters=8),
            tokenizer=llama_untied.tokenizer,
            show_progress=False,
        )
    # a kept head never reads those rows
    plan = plan_token_merge(
        llama_untied.model,
        TokenMergeConfig(preset="llasa", n_clusters=8, lm_head="keep"),
        tokenizer=llama_untied.tokenizer,
        show_progress=False,
    )
    assert plan.num_clusters == 8


def test_non_finite_unselected_rows_do_not_matter(llama_tied):
    with torch.no_grad():
        llama_tied.model.get_input_embeddings().weight[1, 0] = float("nan")  # a text row, never merged
    plan = plan_token_merge(
        llama_tied.model,
        TokenMergeConfig(preset="llasa", n_clusters=8),
        tokenizer=llama_tied.tokenizer,
        show_progress=False,
    )
    assert plan.num_clusters == 8


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_row_scan_names_non_finite_rows_and_not_rows_whose_sum_overflows(dtype):
    """The scan finds NaN and inf rows from row sums; a finite row whose sum overflows is checked exactly."""
    big = torch.finfo(dtype).max
    weight = torch.zeros(6, 4, dtype=dtype)
    weight[1, 2] = float("nan")
    weight[2, 0], weight[2, 1] = big, big  # finite elements, sum overflows to inf
    weight[3, 3] = float("-inf")
    weight[4, 0], weight[4, 1] = float("inf"), float("-inf")  # sum NaN
    weight[5, 0], weight[5, 1] = -big, -big
    scan = scan_rows(EmbeddingRows.from_tensors(weight), torch.arange(6), block_size=4)
    assert scan.non_finite_input == [1, 3, 4]


# --- plan fingerprints ---------------------------------------------------------------------------------------


def _plan(bundle, **kwargs):
    config = TokenMergeConfig(preset="llasa", n_clusters=8, **kwargs)
    return plan_token_merge(bundle.model, config, tokenizer=bundle.tokenizer, show_progress=False)


@pytest.mark.parametrize("tied", [True, False])
def test_plan_for_another_model_of_the_same_shape_is_refused(tied):
    source, other = build_llama(tied=tied, seed=0), build_llama(tied=tied, seed=1)
    plan = _plan(source)
    assert plan.fingerprint.startswith("sha256:") and len(plan.fingerprint) == 7 + 64
    before = snapshot(other.model)
    with pytest.raises(TokenMergeError, match=r"plan was made from other rows than this model's.*Fix: plan again"):
        apply_token_merge(other.model, plan)
    assert_unchanged(other.model, before)


def test_plan_for_a_model_with_one_changed_output_row_is_refused():
    source, other = build_llama(tied=False), build_llama(tied=False)
    with torch.no_grad():
        other.model.get_output_embeddings().weight[int(other.selected_ids[-1])] *= 2
    with pytest.raises(TokenMergeError, match="plan was made from other rows"):
        apply_token_merge(other.model, _plan(source))


def test_plan_fits_a_copy_and_another_dtype_of_the_same_rows(tmp_path):
    source = build_llama(tied=True)
    source.model.to(torch.bfloat16)
    plan = _plan(source)
    plan.save_pretrained(tmp_path)
    restored = MergePlan.from_pretrained(tmp_path)
    assert restored.fingerprint == plan.fingerprint
    copy = build_llama(tied=True)
    copy.model.to(torch.bfloat16)
    widened = copy.model.float()  # the same bfloat16 rows, loaded as float32
    ids = sample_ids(copy)
    apply_token_merge(widened, restored)
    assert torch.isfinite(logits_of(widened, ids)).all()


def test_plan_without_a_fingerprint_applies_with_a_warning(tmp_path):
    source, copy = build_llama(tied=True), build_llama(tied=True)
    _plan(source).save_pretrained(tmp_path)
    meta_path = tmp_path / PLAN_META_NAME
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    del meta["fingerprint"]  # as saved before fingerprints existed
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    old = MergePlan.from_pretrained(tmp_path)
    assert old.fingerprint is None
    with pytest.warns(UserWarning, match="MergePlan has no fingerprint"):
        result = apply_token_merge(copy.model, old)
    assert result.plan.num_clusters == 8
    # a plan that carries one applies silently
    fresh = build_llama(tied=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_token_merge(fresh.model, _plan(build_llama(tied=True)))


# --- resize_token_embeddings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_resize_token_embeddings_of_a_merged_model_is_refused(tmp_path, tied):
    bundle = build_llama(tied=tied)
    apply_token_merge(bundle.model, _plan(bundle))
    before = snapshot(bundle.model)
    for target in (bundle.model, bundle.model.model, copy.deepcopy(bundle.model)):
        with pytest.raises(TokenMergeError, match=r"resize_token_embeddings is not supported.*Fix: add the tokens"):
            target.resize_token_embeddings(bundle.vocab_size + 8)
    assert_unchanged(bundle.model, before)
    bundle.model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    with pytest.raises(TokenMergeError, match="resize_token_embeddings is not supported"):
        reloaded.resize_token_embeddings(bundle.vocab_size + 8)


def test_resize_of_an_unmerged_model_still_works():
    bundle = build_llama(tied=True)
    rows = bundle.model.get_input_embeddings().weight.shape[0]
    bundle.model.resize_token_embeddings(rows + 8)
    assert bundle.model.get_input_embeddings().weight.shape[0] == rows + 8
