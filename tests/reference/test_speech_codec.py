"""The reference speech codec: FSQ arithmetic, log-mel parity with Whisper, determinism, shapes, persistence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.reference.speech_codec import (
    FSQ,
    SpeechCodec,
    SpeechCodecConfig,
    load_reference_speech_codec,
)


@pytest.fixture(scope="module")
def codec() -> SpeechCodec:
    return load_reference_speech_codec()


def _chirp(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_fsq_codes_are_a_bijection_on_the_grid():
    fsq = FSQ([7, 5, 5, 5, 5])
    codes = torch.arange(fsq.codebook_size)
    assert fsq.codebook_size == 4_375
    assert torch.equal(fsq.codes_from_quantized(fsq.quantized_from_codes(codes)), codes)


@pytest.mark.parametrize("levels", [[8, 5], [7, 6, 5]])
def test_fsq_rounds_to_exactly_levels_values_per_dimension(levels):
    fsq = FSQ(levels)
    z = torch.linspace(-20, 20, 4001).unsqueeze(1).expand(-1, len(levels))
    quantized = fsq.quantize(z)
    for dim, level in enumerate(levels):
        assert quantized[:, dim].unique().numel() == level
    assert int(fsq.codes_from_quantized(quantized).max()) == math.prod(levels) - 1


def test_log_mel_matches_whisper_feature_extractor(codec):
    from transformers import WhisperFeatureExtractor

    audio = _chirp(1.234)
    reference = WhisperFeatureExtractor()(audio, sampling_rate=16_000, return_tensors="np").input_features[0]
    mel = codec.log_mel(audio)
    assert mel.shape == (80, math.ceil(audio.size / 160))
    np.testing.assert_allclose(mel.numpy(), reference[:, : mel.shape[1]], atol=2e-5)
    np.testing.assert_allclose(codec.whisper_input(audio).numpy(), reference, atol=2e-5)


def test_codes_are_deterministic_and_round_trip_shapes_follow_the_frame_rate(codec):
    audio = _chirp(2.05)
    first, second = codec.encode(audio), codec.encode(audio.copy())
    assert torch.equal(first, second)
    assert first.dtype == torch.int64
    frames = math.ceil(audio.size / 160)
    assert first.shape == (math.ceil(frames / codec.config.frames_per_code),)
    assert codec.frame_rate == 100 / codec.config.frames_per_code
    assert int(first.min()) >= 0 and int(first.max()) < codec.codebook_size
    decoded = codec.decode(first)
    assert decoded.shape == (80, first.numel() * codec.config.frames_per_code)
    # Encoding log-mel directly is the same as encoding the audio.
    assert torch.equal(codec.encode(codec.log_mel(audio)), first)


def test_to_whisper_features_pads_with_the_floor(codec):
    decoded = codec.decode(codec.encode(_chirp(1.0)))
    features = codec.to_whisper_features(decoded)
    floor = decoded.max() - 2.0
    assert features.shape == (80, 3000)
    assert torch.all(features[:, decoded.shape[1] :] == floor)
    assert float(features.min()) >= float(floor)
    with pytest.raises(TokenMergeError, match="3000 frames"):
        codec.to_whisper_features(torch.zeros(80, 3001))


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    codec = SpeechCodec(SpeechCodecConfig(levels=[5, 3], hidden=16, encoder_blocks=1, decoder_blocks=1))
    codec.save_pretrained(tmp_path / "codec")
    loaded = SpeechCodec.from_pretrained(tmp_path / "codec")
    audio = _chirp(0.7)
    assert loaded.config == codec.config
    assert loaded.codebook_size == 15
    assert torch.equal(loaded.encode(audio), codec.encode(audio))
    assert torch.allclose(loaded.decode([0, 14, 7]), codec.decode([0, 14, 7]))


def test_bad_input_is_refused(codec, tmp_path):
    with pytest.raises(TokenMergeError, match="ids in"):
        codec.decode([0, codec.codebook_size])
    with pytest.raises(TokenMergeError, match="log-mel"):
        codec.encode(np.zeros((40, 10), dtype=np.float32))
    with pytest.raises(TokenMergeError, match="levels"):
        SpeechCodecConfig(levels=[1, 4]).validate()
    with pytest.raises(FileNotFoundError, match="config.json"):
        SpeechCodec.from_pretrained(tmp_path)
