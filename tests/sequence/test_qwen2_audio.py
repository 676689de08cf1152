"""Sequence merging on a tiny local Qwen2-Audio replica: merges audio positions after the projector."""

import pytest
import torch

from hf_token_merge.sequence import MergeStage, SequenceMergeConfig, apply_sequence_merge, locate_decoder
from tests.models import build_qwen2_audio

AUDIO = 60


def inputs(batch: int = 1):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(batch, 8, 40, generator=generator)
    # the processor's expanded form: one <|AUDIO|> per audio frame (40 feature frames -> 10 tokens)
    ids = torch.tensor([[1, 2] + [AUDIO] * 10 + [3, 4]] * batch)
    return {
        "input_ids": ids,
        "input_features": features,
        "feature_attention_mask": torch.ones(batch, 40, dtype=torch.long),
        "attention_mask": torch.ones_like(ids),
    }


def test_the_decoder_is_found_and_the_audio_token_is_read_from_the_config():
    model = build_qwen2_audio(audio_token_id=AUDIO)
    assert locate_decoder(model) is model.model.language_model
    cfg = SequenceMergeConfig(stages=[MergeStage(layer=0, threshold=-1.0)])  # no selection: config.audio_token_id
    with apply_sequence_merge(model, cfg) as handle, torch.no_grad():
        out = model(**inputs())
        assert handle.statistics[0].speech_in == 10 and handle.statistics[0].speech_out == 1
    assert out.logits.shape == (1, 4 + 1, 64)


def test_threshold_one_keeps_the_logits():
    model = build_qwen2_audio(audio_token_id=AUDIO)
    with torch.no_grad():
        before = model(**inputs(2)).logits
        cfg = SequenceMergeConfig.dual("aggressive", deep_layer=2, position_strategy="mean")
        cfg.stages = [MergeStage(layer=0, threshold=1.0), MergeStage(layer=2, threshold=1.0, window=3)]
        with apply_sequence_merge(model, cfg):
            assert torch.equal(model(**inputs(2)).logits, before)


@pytest.mark.parametrize("strategy", ["first", "mean"])
def test_merged_forward_equals_the_language_model_on_the_merged_embeddings(strategy):
    model = build_qwen2_audio(audio_token_id=AUDIO)
    cfg = SequenceMergeConfig(
        stages=[MergeStage(layer=0, mode="uniform_merge", retention=0.3)], position_strategy=strategy
    )
    seen = {}
    with apply_sequence_merge(model, cfg), torch.no_grad():
        capture = model.model.language_model.layers[0].register_forward_pre_hook(
            lambda m, args, kwargs: seen.update(hidden=args[0]), with_kwargs=True
        )
        merged = model(**inputs()).logits
        capture.remove()
    assert merged.shape[1] == 4 + 3
    expected_positions = {"first": [0, 1, 2, 6, 9, 12, 13], "mean": [0, 1, 3.5, 7, 10, 12, 13]}[strategy]
    with torch.no_grad():
        direct = model.lm_head(
            model.model.language_model(
                inputs_embeds=seen["hidden"],
                position_ids=torch.tensor([expected_positions]),
                attention_mask=torch.ones(1, 7, dtype=torch.long),
            ).last_hidden_state
        )
    torch.testing.assert_close(merged, direct, atol=1e-5, rtol=1e-5)


def test_generate_prefills_the_shortened_sequence_then_decodes():
    model = build_qwen2_audio(audio_token_id=AUDIO)
    cfg = SequenceMergeConfig.dual("aggressive", deep_layer=3)
    cfg.stages = [MergeStage(layer=0, mode="uniform_merge", retention=0.5), MergeStage(layer=3, threshold=-1.0)]
    with apply_sequence_merge(model, cfg) as handle, torch.no_grad():
        out = model.generate(**inputs(), max_new_tokens=4, do_sample=False)
        assert handle.retention == 0.1  # 10 audio tokens -> 5 at the input -> 1 at layer 3
        first_logits = model(**inputs()).logits[0, -1]
    assert out.shape == (1, 14 + 4)
    assert int(out[0, 14]) == int(first_logits.argmax())
