"""The encoder-decoder analogue on a tiny Whisper: pooled encoder frames, masked cross-attention."""

import pytest
import torch

from hf_token_merge.sequence import apply_encoder_merge, encoder_merge_handle
from tests.models import build_speech_decoder, build_whisper, whisper_inputs


def test_threshold_one_keeps_the_logits():
    model = build_whisper().model
    features, decoder_ids = whisper_inputs()
    with torch.no_grad():
        before = model(input_features=features, decoder_input_ids=decoder_ids).logits
        with apply_encoder_merge(model, threshold=1.0) as handle:
            after = model(input_features=features, decoder_input_ids=decoder_ids).logits
            assert handle.retention == 1.0
    assert torch.equal(after, before)


def test_full_merge_is_cross_attention_over_the_mean_frame():
    model = build_whisper().model
    features, decoder_ids = whisper_inputs(batch=1)
    with torch.no_grad():
        with apply_encoder_merge(model, threshold=-1.0) as handle:
            merged = model(input_features=features, decoder_input_ids=decoder_ids).logits
            assert handle.frames_out == 1
        frames = model.model.encoder(features).last_hidden_state
        direct = model.proj_out(
            model.model.decoder(input_ids=decoder_ids, encoder_hidden_states=frames.mean(1, keepdim=True))[0]
        )
    torch.testing.assert_close(merged, direct, atol=1e-5, rtol=1e-5)


def test_rows_of_a_batch_with_different_lengths_match_rows_alone():
    model = build_whisper().model
    features, decoder_ids = whisper_inputs(batch=2)
    features[1] *= 5  # a louder second clip pools into a different number of frames at this threshold
    with torch.no_grad(), apply_encoder_merge(model, threshold=0.93) as handle:
        together = model(input_features=features, decoder_input_ids=decoder_ids).logits
        lengths = handle.valid.sum(1).tolist()
        alone = [
            model(input_features=features[i : i + 1], decoder_input_ids=decoder_ids[i : i + 1]).logits for i in (0, 1)
        ]
    assert lengths[0] != lengths[1]  # the padded row really is masked
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-5)


def test_generate_runs_on_pooled_frames():
    model = build_whisper().model
    features, _ = whisper_inputs(batch=2)
    with torch.no_grad(), apply_encoder_merge(model, threshold=0.93) as handle:
        out = model.generate(features, max_new_tokens=4, do_sample=False)
        assert 0 < handle.retention < 1
    assert out.shape[0] == 2


def test_bad_input():
    with pytest.raises(ValueError, match="for decoder-only speech-LLMs use apply_sequence_merge"):
        apply_encoder_merge(build_speech_decoder(), threshold=0.9)
    model = build_whisper().model
    with pytest.raises(ValueError, match="threshold in \\[-1, 1\\] and window >= 1"):
        apply_encoder_merge(model, threshold=1.5)
    assert encoder_merge_handle(model) is None
    with apply_encoder_merge(model, 0.9) as handle, pytest.raises(ValueError, match="already installed"):
        assert encoder_merge_handle(model) is handle
        apply_encoder_merge(model, 0.9)
    assert encoder_merge_handle(model) is None and not hasattr(model, "_encoder_merge_handle")
