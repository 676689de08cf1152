"""The encoder-decoder analogue on a tiny Whisper: pooled encoder frames, masked cross-attention."""

import pytest
import torch

from hf_token_merge.sequence import apply_encoder_merge, encoder_merge_handle
from hf_token_merge.sequence.encoder import audio_end_frames
from hf_token_merge.sequence.grouping import split_groups_at
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


def _planted_frames(model, frames: torch.Tensor):
    """Replace the encoder's output with `frames` (registered before the merge, so the merge pools these)."""

    def hook(module, args, output):
        output.last_hidden_state = frames.expand(output.last_hidden_state.shape[0], -1, -1).clone()
        return output

    return model.get_encoder().register_forward_hook(hook)


def test_proportional_attention_makes_pooling_duplicates_exact():
    model = build_whisper().model
    features, decoder_ids = whisper_inputs(batch=1)
    generator = torch.Generator().manual_seed(5)
    a, b, c = torch.randn(3, 1, model.config.d_model, generator=generator)
    frames = torch.cat([a, a, a, b, c, c, c, c])[None]  # runs of 3, 1 and 4 identical frames
    with torch.no_grad():
        planted = _planted_frames(model, frames)
        before = model(input_features=features, decoder_input_ids=decoder_ids).logits
        with apply_encoder_merge(model, threshold=0.999) as handle:  # proportional attention is the default
            exact = model(input_features=features, decoder_input_ids=decoder_ids).logits
            assert handle.frames_out == 3 and handle.sizes.tolist() == [[3.0, 1.0, 4.0]]
        with apply_encoder_merge(model, threshold=0.999, proportional_attention=False):
            plain = model(input_features=features, decoder_input_ids=decoder_ids).logits
        planted.remove()
    torch.testing.assert_close(exact, before, atol=1e-5, rtol=1e-5)
    assert (plain - before).abs().max() > 1e-3  # without the log-size bias the 3 frames draw a third of their mass


def test_split_at_audio_end_never_pools_speech_into_padding():
    model = build_whisper().model
    features, decoder_ids = whisper_inputs(batch=2)
    frames = torch.ones(1, 8, model.config.d_model)  # all identical: plain pooling keeps one frame
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[0, 9:] = 0  # 9 real mel frames -> 5 encoder frames (rounded up); row 1 is all audio
    split = [[5.0, 3.0], [0.0, 8.0]]
    with torch.no_grad():
        planted = _planted_frames(model, frames)
        with apply_encoder_merge(model, threshold=0.999, split_at_audio_end=True) as handle:
            model.generate(features, attention_mask=mask, max_new_tokens=2, do_sample=False)  # mask -> encoder
            assert handle.sizes.tolist() == split
            assert handle.valid.tolist() == [[True, True], [False, True]]
            # a plain forward does not hand the mask to the encoder: the zero padding's floor gives the end
            padded = features.clone()
            padded[0, :, 9:] = padded[0].min()
            model(input_features=padded, decoder_input_ids=decoder_ids)
            assert handle.sizes.tolist() == split
        with apply_encoder_merge(model, threshold=0.999) as handle:
            model.generate(features, attention_mask=mask, max_new_tokens=2, do_sample=False)
            assert handle.sizes.tolist() == [[8.0], [8.0]]
        planted.remove()


def test_audio_end_from_mask_or_from_the_padding_floor():
    features = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(1))
    features[0, :, 11:] = features[0].min()  # Whisper's zero padding: every bin at the row's floor
    assert audio_end_frames(features, None, 8).tolist() == [6, 8]
    mask = torch.zeros(2, 16, dtype=torch.long)
    mask[0, :3], mask[1, :16] = 1, 1
    assert audio_end_frames(features, mask, 8).tolist() == [2, 8]
    group = torch.tensor([[0, 0, 0, 1, 1], [0, 1, 1, 1, 1]])
    assert split_groups_at(group, torch.tensor([2, 5])).tolist() == [[0, 0, 1, 2, 2], [0, 1, 1, 1, 1]]
