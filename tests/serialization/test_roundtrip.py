"""Persistence: merged checkpoints reload through transformers' quantizer plugin; plans round-trip."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoModelForCausalLM, WhisperForConditionalGeneration

from hf_token_merge import (
    MergedEmbedding,
    MergedLMHead,
    MergePlan,
    TokenMergeConfig,
    TokenMergeQuantizationConfig,
    apply_token_merge,
    plan_token_merge,
)
from hf_token_merge.remap.plan import PLAN_TENSOR_FIELDS
from hf_token_merge.serialization.quantizer import FORMAT_VERSION, QUANT_METHOD
from tests.models import build_llama, build_qwen2, build_whisper, logits_of, sample_ids

WEIGHTS = "model.safetensors"


def _merge(bundle, **kwargs):
    stop = {} if any(k in kwargs for k in ("n_clusters", "target_ratio")) else {"n_clusters": bundle.n_centers}
    config = TokenMergeConfig(**bundle.selection, **stop, **kwargs)
    return apply_token_merge(bundle.model, config, tokenizer=bundle.tokenizer, show_progress=False)


def _tensor_bytes(path: str) -> dict[str, int]:
    sizes = {}
    with safe_open(path, framework="pt") as handle:
        for name in handle.keys():  # noqa: SIM118  (safe_open is not a mapping)
            tensor = handle.get_tensor(name)
            sizes[name] = tensor.numel() * tensor.element_size()
    return sizes


CASES = {
    "tied": ({"tied": True}, {}),
    "untied": ({"tied": False}, {}),
    "tied_drop": ({"tied": True}, {"lm_head": "drop"}),
    "untied_drop": ({"tied": False}, {"lm_head": "drop"}),
    "untied_keep": ({"tied": False}, {"lm_head": "keep"}),
    "bf16": ({"tied": True, "dtype": torch.bfloat16}, {"logit_correction": "frequency"}),
    "compact": ({"tied": False}, {"compact_logits": True, "merge_rule": "medoid"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_save_and_reload_merged_model(case, tmp_path):
    build_kwargs, merge_kwargs = CASES[case]
    bundle = build_llama(**build_kwargs)
    model = bundle.model
    tied = build_kwargs["tied"]
    dtype = build_kwargs.get("dtype", torch.float32)
    model.save_pretrained(tmp_path / "original")
    if merge_kwargs.get("logit_correction") == "frequency":
        counts = torch.arange(bundle.vocab_size) % 7
        config = TokenMergeConfig(**bundle.selection, n_clusters=bundle.n_centers, **merge_kwargs)
        result = apply_token_merge(model, config, tokenizer=bundle.tokenizer, token_counts=counts, show_progress=False)
    else:
        result = _merge(bundle, **merge_kwargs)
    ids = sample_ids(bundle)
    expected = logits_of(model, ids)
    model.save_pretrained(tmp_path / "merged")

    # config.json carries the record
    with open(tmp_path / "merged" / "config.json", encoding="utf-8") as handle:
        record = json.load(handle)["quantization_config"]
    assert record["quant_method"] == QUANT_METHOD
    assert record["version"] == FORMAT_VERSION
    assert record["input_rows"] == result.plan.num_rows
    assert record["merge_config"] == result.plan.config.to_dict()

    # the checkpoint shrinks by the removed rows, less the index maps it gains
    hidden, item = model.config.hidden_size, dtype.itemsize
    removed = len(bundle.selected_ids) - bundle.n_centers
    lm_head = merge_kwargs.get("lm_head", "merge")
    removed_head_rows = (
        0 if tied or lm_head == "keep" else (removed if lm_head == "merge" else len(bundle.selected_ids))
    )
    has_head = lm_head != "keep"
    index_bytes = 4 * bundle.vocab_size * (2 if has_head else 1) + (item * bundle.vocab_size if has_head else 0)
    saving = (removed + removed_head_rows) * hidden * item - index_bytes
    before = _tensor_bytes(str(tmp_path / "original" / WEIGHTS))
    after = _tensor_bytes(str(tmp_path / "merged" / WEIGHTS))
    assert sum(before.values()) - sum(after.values()) == saving
    assert ("lm_head.weight" in after) == (not tied)
    file_saving = os.path.getsize(tmp_path / "original" / WEIGHTS) - os.path.getsize(tmp_path / "merged" / WEIGHTS)
    assert abs(file_saving - saving) < 512  # the safetensors header differs by a few entries

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert isinstance(reloaded.model.embed_tokens, MergedEmbedding)
    if lm_head == "keep":
        assert type(reloaded.lm_head) is nn.Linear
        assert reloaded.lm_head.weight.shape == (bundle.vocab_size, hidden)
    else:
        assert isinstance(reloaded.lm_head, MergedLMHead)
        assert reloaded.lm_head.compact_logits == merge_kwargs.get("compact_logits", False)
    assert (reloaded.lm_head.weight is reloaded.model.embed_tokens.weight) == tied
    assert reloaded.dtype == dtype
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    assert torch.equal(logits_of(reloaded, ids), expected)
    assert isinstance(reloaded.config.quantization_config, TokenMergeQuantizationConfig)

    # a reloaded merged model is still refused a second merge
    with pytest.raises(ValueError, match="already token-merged"):
        _merge(dataclasses.replace(bundle, model=reloaded))

    # and saves again to the same checkpoint
    reloaded.save_pretrained(tmp_path / "again")
    assert _tensor_bytes(str(tmp_path / "again" / WEIGHTS)) == after
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again")
    assert torch.equal(logits_of(again, ids), expected)


def test_reload_qwen2(tmp_path):
    bundle = build_qwen2()
    _merge(bundle, merge_rule="medoid")
    ids = sample_ids(bundle)
    expected = logits_of(bundle.model, ids)
    bundle.model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
    assert torch.equal(logits_of(reloaded, ids), expected)


def test_reload_whisper(tmp_path):
    bundle = build_whisper()
    _merge(bundle)
    ids = sample_ids(bundle)
    expected = logits_of(bundle.model, ids)
    bundle.model.save_pretrained(tmp_path)
    reloaded = WhisperForConditionalGeneration.from_pretrained(tmp_path).eval()
    decoder_embedding = reloaded.model.decoder.embed_tokens
    assert isinstance(decoder_embedding, MergedEmbedding)
    assert isinstance(reloaded.proj_out, MergedLMHead)
    assert reloaded.proj_out.weight is decoder_embedding.weight
    assert decoder_embedding.padding_idx == bundle.model.model.decoder.embed_tokens.padding_idx
    assert torch.equal(logits_of(reloaded, ids), expected)


def test_reload_with_device_map_and_dtype(tmp_path):
    bundle = build_llama(tied=False)
    _merge(bundle)
    ids = sample_ids(bundle)
    expected = logits_of(bundle.model, ids)
    bundle.model.save_pretrained(tmp_path)
    on_cpu = AutoModelForCausalLM.from_pretrained(tmp_path, device_map="cpu")
    assert isinstance(on_cpu.model.embed_tokens, MergedEmbedding)
    assert on_cpu.lm_head.weight.device.type == "cpu"
    assert torch.equal(logits_of(on_cpu, ids), expected)
    half = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert half.model.embed_tokens.weight.dtype == half.lm_head.weight.dtype == torch.bfloat16
    assert torch.equal(half.model.embed_tokens.index_map, bundle.model.model.embed_tokens.index_map)
    torch.testing.assert_close(logits_of(half, ids).float(), expected, rtol=0.05, atol=0.05)


def test_plan_round_trip(tmp_path):
    bundle = build_llama(tied=False)
    counts = torch.arange(bundle.vocab_size) % 5
    config = TokenMergeConfig(
        **bundle.selection, n_clusters=8, merge_rule="weighted_mean", logit_correction="frequency"
    )
    plan = plan_token_merge(bundle.model, config, tokenizer=bundle.tokenizer, token_counts=counts, show_progress=False)
    plan.save_pretrained(tmp_path / "plan")
    # the plan's two files and the marker that says hf_token_merge wrote the folder
    assert sorted(os.listdir(tmp_path / "plan")) == [
        ".hf_token_merge",
        "token_merge_plan.json",
        "token_merge_plan.safetensors",
    ]
    loaded = MergePlan.from_pretrained(tmp_path / "plan")
    assert loaded.config == plan.config
    assert (loaded.vocab_size, loaded.tied) == (plan.vocab_size, plan.tied)
    assert loaded.statistics == plan.statistics
    tensor_fields = {f.name for f in dataclasses.fields(plan) if isinstance(getattr(plan, f.name), torch.Tensor)}
    assert set(PLAN_TENSOR_FIELDS) == tensor_fields  # every tensor of the plan is saved
    for name in PLAN_TENSOR_FIELDS:
        original, restored = getattr(plan, name), getattr(loaded, name)
        assert restored.dtype == original.dtype, name
        assert torch.equal(restored, original), name

    twin = build_llama(tied=False)
    apply_token_merge(bundle.model, plan)
    apply_token_merge(twin.model, loaded)
    ids = sample_ids(bundle)
    assert torch.equal(logits_of(twin.model, ids), logits_of(bundle.model, ids))


def test_quantization_config_record_round_trips():
    bundle = build_llama(tied=True)
    _merge(bundle)
    record = bundle.model.config.quantization_config
    restored = TokenMergeQuantizationConfig.from_dict(json.loads(json.dumps(record.to_dict())))
    assert restored.to_dict() == record.to_dict()
    assert restored.quant_method == QUANT_METHOD
    assert (restored.input_embedding, restored.output_embedding, restored.tied) == (
        "model.embed_tokens",
        "lm_head",
        True,
    )
