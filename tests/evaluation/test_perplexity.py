"""Sliding-window perplexity: border bookkeeping, a hand computation, merged models, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from hf_token_merge import TokenMergeConfig, apply_token_merge
from hf_token_merge.evaluation import evaluate_perplexity, sequence_nll, window_plan
from tests.models import build_llama


@pytest.mark.parametrize("length", [0, 1, 2, 5, 16, 17, 18, 40, 53])
@pytest.mark.parametrize(("max_length", "stride"), [(16, 5), (16, 16), (16, 1), (4, 3), (1, 1)])
def test_every_target_is_scored_once_with_context_inside_the_window(length, max_length, stride):
    seen = []
    for a, s, e in window_plan(length, max_length, stride):
        assert 0 <= a < s < e <= length
        assert e - 1 - a <= max_length  # ids fed to the model
        seen.extend(range(s, e))
        # the target with the least context still sees as much as the window allows
        assert s - a == min(s, max_length - (e - s) + 1)
    assert seen == list(range(1, length))


def test_window_plan_rejects_bad_stride():
    with pytest.raises(ValueError, match="stride <= max_length"):
        window_plan(10, 4, 5)
    with pytest.raises(ValueError, match="1 <= stride"):
        window_plan(10, 4, 0)


@torch.no_grad()
def hand_nll(model, ids: list[int], max_length: int, stride: int) -> float:
    """Score token t alone, from the explicit context of the window that owns it."""
    total = 0.0
    for t in range(1, len(ids)):
        a = next(a for a, s, e in window_plan(len(ids), max_length, stride) if s <= t < e)
        logits = model(input_ids=torch.tensor([ids[a:t]])).logits[0, -1].double()
        total -= torch.log_softmax(logits, -1)[ids[t]].item()
    return total


def test_sliding_window_equals_hand_computation():
    bundle = build_llama()
    ids = torch.randint(0, bundle.vocab_size, (37,), generator=torch.Generator().manual_seed(3)).tolist()
    nll, count = sequence_nll(bundle.model, ids, max_length=12, stride=5)
    assert count == 36
    assert nll == pytest.approx(hand_nll(bundle.model, ids, 12, 5), rel=1e-5)

    # Contexts that reach back to the sequence start: one window, equal to the model's own mean loss.
    nll_full, count_full = sequence_nll(bundle.model, ids, max_length=36, stride=7)
    with torch.no_grad():
        loss = bundle.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    assert count_full == 36
    assert nll_full / 36 == pytest.approx(loss, rel=1e-5)
    assert nll_full != pytest.approx(nll, rel=1e-6)  # the window really cut the context


def test_result_fields_and_token_count():
    bundle = build_llama()
    sequences = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [4], [5, 6]]
    result = evaluate_perplexity(bundle.model, sequences, max_length=4, stride=2, show_progress=False)
    assert result.token_count == 10 + 0 + 1
    assert result.mean_nll == pytest.approx(result.nll_sum / 11)
    assert result.perplexity == pytest.approx(math.exp(result.mean_nll))
    assert result.bits_per_token == pytest.approx(result.mean_nll / math.log(2))
    assert result.nll_sum == sum(record["nll_sum"] for record in result.per_sequence)


def test_singleton_merge_gives_identical_perplexity(llasa_tok):
    bundle, merged = build_llama(), build_llama()
    apply_token_merge(
        merged.model,
        TokenMergeConfig(preset="llasa", n_clusters=merged.selected_ids.numel()),
        tokenizer=merged.tokenizer,
        show_progress=False,
    )
    sequences = torch.randint(0, bundle.vocab_size, (3, 30), generator=torch.Generator().manual_seed(5)).tolist()
    kwargs = {"max_length": 10, "stride": 4, "show_progress": False}
    before = evaluate_perplexity(bundle.model, sequences, **kwargs)
    after = evaluate_perplexity(merged.model, sequences, **kwargs)
    assert after.metrics() == before.metrics()


def test_real_merge_scores_over_original_ids_as_a_distribution():
    """A merge with uniform logit correction still gives a proper distribution over the original vocabulary."""
    bundle = build_llama()
    apply_token_merge(
        bundle.model,
        TokenMergeConfig(preset="llasa", n_clusters=bundle.n_centers),
        tokenizer=bundle.tokenizer,
        show_progress=False,
    )
    with torch.no_grad():
        logits = bundle.model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.shape[-1] == bundle.vocab_size
    assert torch.logsumexp(logits.double().log_softmax(-1), -1).abs().max() < 1e-9
    result = evaluate_perplexity(bundle.model, [bundle.selected_ids.tolist()], max_length=8, stride=4)
    assert math.isfinite(result.perplexity) and result.token_count == bundle.selected_ids.numel() - 1


def test_compact_logits_are_refused():
    bundle = build_llama()
    apply_token_merge(
        bundle.model,
        TokenMergeConfig(preset="llasa", n_clusters=bundle.n_centers, compact_logits=True),
        tokenizer=bundle.tokenizer,
        show_progress=False,
    )
    with pytest.raises(ValueError, match="compact_logits"):
        evaluate_perplexity(bundle.model, [[bundle.vocab_size - 1] * 6], max_length=8, stride=4)


def test_bad_input(whisper, llasa_tok):
    with pytest.raises(ValueError, match="encoder-decoder.*evaluate_wer"):
        evaluate_perplexity(whisper.model, [[1, 2, 3]])
    model = build_llama().model
    with pytest.raises(ValueError, match="empty"):
        evaluate_perplexity(model, [])
    with pytest.raises(ValueError, match="2 or more tokens"):
        evaluate_perplexity(model, [[1], [2]])
    with pytest.raises(ValueError, match="no tokenizer"):
        evaluate_perplexity(model, ["hello world"])
    with pytest.raises(ValueError, match="no column 'input_ids/text'"):
        evaluate_perplexity(model, [{"ids": [1, 2]}])
    with pytest.raises(ValueError, match="stride"):
        evaluate_perplexity(model, [[1, 2, 3]], max_length=4, stride=8)
    result = evaluate_perplexity(model, [{"text": "hello world the cat"}], tokenizer=llasa_tok, show_progress=False)
    assert result.token_count == 4  # <bos> hello world the cat: 4 scored tokens


def test_a_sequence_merged_model_is_refused():
    from hf_token_merge.sequence import MergeStage, SequenceMergeConfig, apply_sequence_merge
    from tests.models import build_speech_decoder

    model = build_speech_decoder()
    config = SequenceMergeConfig(stages=[MergeStage(layer=0, threshold=0.9)], token_id_range=(32, 64))
    with (
        apply_sequence_merge(model, config),
        pytest.raises(ValueError, match="a sequence merge is installed and shortens the input"),
    ):
        evaluate_perplexity(model, [[0, 32, 40, 5]], device="cpu", show_progress=False)
