"""The last prompt position is never merged, even a speech token; `labels=` is refused on a merged model."""

import pytest
import torch

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.sequence import MergeStage, SequenceMergeConfig, apply_sequence_merge
from tests.models import SPEECH_START, SPEECH_VOCAB, build_speech_decoder
from tests.sequence.test_apply import manual_logits

SPEECH = (SPEECH_START, SPEECH_VOCAB)
# bos, two text tokens, speech of distinct sounds (32, 34), then two tokens of one sound (33, 41) at the very end
ENDS_IN_A_RUN = [0, 5, 6, 32, 34, 33, 41]
# one span of three sounds, the last run (33, 41) ending the prompt
ENDS_IN_SPEECH = [0, 5, 6, 32, 40, 48, 33, 41]


def config(*stages: MergeStage, strategy: str = "first") -> SequenceMergeConfig:
    return SequenceMergeConfig(stages=list(stages), token_id_range=SPEECH, position_strategy=strategy)


def logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(input_ids=ids, **kwargs).logits


@pytest.mark.parametrize("strategy", ["first", "mean", "contiguous"])
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_final_speech_run_is_not_pooled_so_the_last_logits_are_the_original(family, strategy):
    model = build_speech_decoder(family)
    ids = torch.tensor([ENDS_IN_A_RUN])
    before = logits(model, ids)
    # tau 0.9 would pool the final run (33, 41); everything else is a singleton, so the merge is a no-op
    with apply_sequence_merge(model, config(MergeStage(layer=0, threshold=0.9), strategy=strategy)) as handle:
        after = logits(model, ids)
        assert handle.statistics[0].tokens_out == len(ENDS_IN_A_RUN)
    assert after.shape == before.shape
    assert torch.equal(after[:, -1], before[:, -1])


@pytest.mark.parametrize("deep", [False, True])
def test_the_last_position_is_never_pooled(deep):
    model = build_speech_decoder()
    ids = torch.tensor([ENDS_IN_SPEECH])
    stages = [MergeStage(layer=0, threshold=-1.0)]  # every speech token would join one group
    if deep:
        stages = [MergeStage(layer=0, threshold=1.0), MergeStage(layer=2, threshold=-1.0, window=3)]
    cfg = config(*stages)
    seen = {}
    layer = model.model.layers[stages[-1].layer]
    with apply_sequence_merge(model, cfg) as handle:
        capture = layer.register_forward_pre_hook(lambda m, args: seen.setdefault("hidden", args[0]))
        merged_logits = logits(model, ids)
        capture.remove()
        last_stage = handle.statistics[-1]
    # 3 text tokens, one pooled speech token, and the final speech token on its own
    assert merged_logits.shape[1] == 5
    assert (last_stage.tokens_out, last_stage.speech_out) == (5, 1)
    if not deep:
        embeddings = model.model.embed_tokens.weight.detach()
        assert torch.equal(seen["hidden"][0, -1], embeddings[ENDS_IN_SPEECH[-1]])
        assert torch.allclose(seen["hidden"][0, 3], embeddings[ENDS_IN_SPEECH[3:7]].mean(0), atol=1e-6)
    # the same as a from-scratch forward in which only the positions before the last may merge
    expected = manual_logits(model, ids, cfg, prompt_length=len(ENDS_IN_SPEECH) - 1)
    torch.testing.assert_close(merged_logits[:, -1], expected[:, -1], rtol=1e-5, atol=1e-5)


def test_right_padded_rows_keep_their_last_real_position():
    model = build_speech_decoder()
    short = ENDS_IN_SPEECH[:-1] + [2]  # ends in 33, then one padding position
    ids = torch.tensor([ENDS_IN_SPEECH, short])
    mask = torch.tensor([[1] * 8, [1] * 7 + [0]])
    with apply_sequence_merge(model, config(MergeStage(layer=0, threshold=-1.0))) as handle:
        logits(model, ids, attention_mask=mask)
        tokens, speech = handle.records[0].after_stage[0]
    # row 0: 32 40 48 33 pooled + 41 alone; row 1: 32 40 48 pooled + 33 alone (its last real position)
    assert tokens.tolist() == [5, 5] and speech.tolist() == [1, 1]


def test_generate_from_a_prompt_ending_in_speech():
    model = build_speech_decoder()
    ids = torch.tensor([ENDS_IN_A_RUN])
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=4, do_sample=False)
        with apply_sequence_merge(model, config(MergeStage(layer=0, threshold=0.9))):
            merged = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(merged, expected)


def test_labels_are_refused_with_a_message():
    model = build_speech_decoder()
    ids = torch.tensor([ENDS_IN_SPEECH])
    with apply_sequence_merge(model, config(MergeStage(layer=0, threshold=0.9))):
        with pytest.raises(TokenMergeError, match=r"cannot be scored against labels=.*Fix: call the model without"):
            model(input_ids=ids, labels=ids)
        assert logits(model, ids).shape[1] < ids.shape[1]  # still usable without labels
    assert model(input_ids=ids, labels=ids).loss is not None  # removed: labels work again
