"""The codec-free proxy: per-token KL(unmerged || merged), teacher-forced, with exact expectations."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from hf_token_merge import TokenMergeConfig, apply_token_merge
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.kl import evaluate_kl
from tests.evaluation.dist_eval import llama_data
from tests.models import CustomConfig, CustomModel, build_llama


class ConstantModel(CustomModel):
    def get_input_embeddings(self):
        return self.tok_emb


def constant_model(logits: list[float]) -> CustomModel:
    """A model whose next-token logits are `logits` at every position (zero weights, the head's bias only)."""
    model = ConstantModel(CustomConfig(vocab_size=len(logits), hidden_size=2))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.out_head.bias.copy_(torch.tensor(logits))
    return model.eval()


def test_kl_equals_the_hand_computed_value():
    # P uniform over 3 ids; Q = (1/2, 1/4, 1/4). KL(P || Q) = 1/3 (log(2/3) + 2 log(4/3)) = 1/3 log(32/27) per token.
    reference, merged = constant_model([0.0, 0.0, 0.0]), constant_model([math.log(2.0), 0.0, 0.0])
    result = evaluate_kl(reference, merged, [[0, 1, 2, 0], [2, 2]], show_progress=False)
    assert result.token_count == 4 and result.num_sequences == 2
    assert result.mean_kl == pytest.approx(math.log(32 / 27) / 3, rel=1e-6)
    assert result.per_sequence[0]["kl_sum"] == pytest.approx(math.log(32 / 27), rel=1e-6)
    # targets 1, 2, 0 | 2: NLL log 3 each under P; log 4, log 4, log 2 | log 4 under Q
    assert result.baseline_nll_sum == pytest.approx(4 * math.log(3), rel=1e-6)
    assert result.merged_nll_sum == pytest.approx(math.log(4 * 4 * 2 * 4), rel=1e-6)
    assert result.nll_increase == pytest.approx((math.log(128) - 4 * math.log(3)) / 4, rel=1e-6)


def test_identity_merge_has_zero_kl_and_a_real_merge_matches_a_direct_computation(tmp_path):
    bundle = build_llama()
    sequences, _ = llama_data(bundle.tokenizer)
    identity = copy.deepcopy(bundle.model)
    n = bundle.selected_ids.numel()
    apply_token_merge(identity, TokenMergeConfig(preset="llasa", n_clusters=n), tokenizer=bundle.tokenizer,
                      show_progress=False)  # fmt: skip
    result = evaluate_kl(bundle.model, identity, sequences, max_length=16, stride=5, show_progress=False)
    assert result.kl_sum == 0.0 and result.merged_nll_sum == result.baseline_nll_sum
    assert result.token_count == sum(len(s) - 1 for s in sequences)

    merged = copy.deepcopy(bundle.model)
    apply_token_merge(merged, TokenMergeConfig(preset="llasa", n_clusters=8), tokenizer=bundle.tokenizer,
                      show_progress=False)  # fmt: skip
    # one window per sequence (max_length >= every length): compare with a full forward pass computed here
    result = evaluate_kl(bundle.model, merged, sequences, max_length=64, stride=64, output_dir=tmp_path,
                         show_progress=False)  # fmt: skip
    expected = 0.0
    with torch.no_grad():
        for sequence in sequences:
            if len(sequence) < 2:
                continue
            ids = torch.tensor([sequence[:-1]])
            p = torch.log_softmax(bundle.model(input_ids=ids).logits[0].double(), -1)
            q = torch.log_softmax(merged(input_ids=ids).logits[0].double(), -1)
            expected += float((p.exp() * (p - q)).sum())
    assert result.kl_sum == pytest.approx(expected, rel=1e-5)
    assert result.mean_kl > 1e-4
    saved = json.loads((tmp_path / "kl.json").read_text())
    assert saved["task"] == "kl" and saved["metrics"]["kl_sum"] == result.kl_sum
    assert len((tmp_path / "kl_sequences.jsonl").read_text().splitlines()) == len(sequences)


def test_kl_refuses_what_it_cannot_compare():
    bundle = build_llama()
    with pytest.raises(TokenMergeError, match="got the same model object twice"):
        evaluate_kl(bundle.model, bundle.model, [[0, 1, 2]], show_progress=False)
    compact = copy.deepcopy(bundle.model)
    apply_token_merge(compact, TokenMergeConfig(preset="llasa", n_clusters=8, compact_logits=True),
                      tokenizer=bundle.tokenizer, show_progress=False)  # fmt: skip
    with pytest.raises(TokenMergeError, match="compact_logits=True returns merged-row logits"):
        evaluate_kl(bundle.model, compact, [[0, 1, 2]], show_progress=False)
    with pytest.raises(TokenMergeError, match=r"holds id\(s\) \[99999\] outside the model's vocabulary"):
        evaluate_kl(bundle.model, compact, [[0, 99999]], show_progress=False)
