"""Streaming compress: a checkpoint merged from its files equals the in-memory merge, and bad files leave nothing."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from hf_token_merge import MergePlan, TokenMergeConfig, apply_token_merge
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.serialization.streaming import (
    INDEX_FILE,
    SINGLE_FILE,
    StoredCheckpoint,
    available_memory,
    compress_streaming,
    needs_streaming,
)
from tests.models import build_llama, sample_ids

CASES = {
    "tied_sharded": ({"tied": True}, {}, "2KB"),
    "untied_sharded": ({"tied": False}, {}, "2KB"),
    "tied_single": ({"tied": True}, {}, None),
    "untied_drop": ({"tied": False}, {"lm_head": "drop"}, "2KB"),
    "tied_drop": ({"tied": True}, {"lm_head": "drop"}, "2KB"),
    "untied_keep": ({"tied": False}, {"lm_head": "keep"}, "2KB"),
    "bf16_medoid_both": (
        {"tied": False, "dtype": torch.bfloat16},
        {"merge_rule": "medoid", "similarity_source": "both"},
        "2KB",
    ),
}


def _checkpoint(tmp_path, build_kwargs, max_shard_size):
    bundle = build_llama(layers=2, **build_kwargs)
    folder = tmp_path / "original"
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    bundle.model.save_pretrained(folder, **kwargs)
    bundle.tokenizer.save_pretrained(folder)
    return bundle, folder


def _load(folder, dtype):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()


@pytest.mark.parametrize("case", list(CASES))
def test_streaming_equals_in_memory(case, tmp_path):
    build_kwargs, merge_kwargs, shard_size = CASES[case]
    bundle, folder = _checkpoint(tmp_path, build_kwargs, shard_size)
    dtype = build_kwargs.get("dtype", torch.float32)
    assert (folder / (INDEX_FILE if shard_size else SINGLE_FILE)).is_file()
    config = TokenMergeConfig(preset="llasa", n_clusters=bundle.n_centers, **merge_kwargs)

    streamed = compress_streaming(
        folder, config, tmp_path / "streamed", tokenizer=bundle.tokenizer, show_progress=False
    )

    in_memory = _load(folder, dtype)
    result = apply_token_merge(in_memory, config, tokenizer=bundle.tokenizer, show_progress=False)
    in_memory.save_pretrained(tmp_path / "in_memory")
    for field in ("old_to_new", "cluster_of_selected", "selected_ids", "member_log_share"):
        assert torch.equal(getattr(streamed.plan, field), getattr(result.plan, field)), field
    assert streamed.plan.fingerprint == result.plan.fingerprint
    assert streamed.parameters_before == result.parameters_before
    assert streamed.parameters_after == result.parameters_after

    a, b = _load(tmp_path / "in_memory", dtype), _load(tmp_path / "streamed", dtype)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert state_a[name].dtype == state_b[name].dtype, name
        assert torch.equal(state_a[name], state_b[name]), name
    ids = sample_ids(bundle)
    with torch.no_grad():
        logits_a, logits_b = a(ids).logits, b(ids).logits
    assert torch.equal(logits_a, logits_b)
    with torch.no_grad():  # and the reload answers like the merged model in memory
        assert torch.equal(in_memory(ids).logits, logits_b)

    out = tmp_path / "streamed"
    assert (out / "tokenizer.json").is_file()
    assert (out / "token_merge_config.json").is_file()
    assert MergePlan.from_pretrained(out).fingerprint == result.plan.fingerprint
    record = json.loads((out / "config.json").read_text())["quantization_config"]
    assert record["input_rows"] == result.plan.num_rows
    assert record["tied"] == build_kwargs["tied"]
    if shard_size:
        index = json.loads((out / INDEX_FILE).read_text())
        assert set(index["weight_map"]) == set(load_file_names(out))
        assert len(set(index["weight_map"].values())) > 1
    else:
        assert not (out / INDEX_FILE).exists() and (out / SINGLE_FILE).is_file()


def load_file_names(folder) -> list[str]:
    names = []
    for file in sorted(os.listdir(folder)):
        if file.endswith(".safetensors") and file.startswith("model"):
            names += list(load_file(folder / file))
    return names


def test_plan_from_the_in_memory_path_applies_to_the_files(tmp_path):
    bundle, folder = _checkpoint(tmp_path, {"tied": False}, "2KB")
    config = TokenMergeConfig(preset="llasa", n_clusters=bundle.n_centers)
    plan = apply_token_merge(_load(folder, torch.float32), config, tokenizer=bundle.tokenizer, show_progress=False).plan
    result = compress_streaming(folder, plan, tmp_path / "out", show_progress=False)
    assert result.plan is plan
    other = build_llama(layers=2, tied=False, seed=5)  # same shape, other rows: the plan's fingerprint refuses it
    other.model.save_pretrained(tmp_path / "other")
    with pytest.raises(TokenMergeError, match="fingerprint"):
        compress_streaming(tmp_path / "other", plan, tmp_path / "out2", show_progress=False)
    assert not (tmp_path / "out2").exists()


def _assert_nothing_left(tmp_path, name):
    assert not (tmp_path / name).exists()
    assert not [entry for entry in os.listdir(tmp_path) if name in entry], os.listdir(tmp_path)


def _config(bundle):
    return TokenMergeConfig(preset="llasa", n_clusters=bundle.n_centers)


def test_missing_shard_leaves_nothing(tmp_path):
    bundle, folder = _checkpoint(tmp_path, {"tied": True}, "2KB")
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=f"{shard.name}.*is missing"):
        compress_streaming(folder, _config(bundle), tmp_path / "out", tokenizer=bundle.tokenizer)
    _assert_nothing_left(tmp_path, "out")


def test_truncated_shard_leaves_nothing(tmp_path):
    bundle, folder = _checkpoint(tmp_path, {"tied": True}, "2KB")
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[:-10])
    with pytest.raises(TokenMergeError, match=rf"{shard.name} is damaged: it is truncated: .* {len(data) - 10}"):
        compress_streaming(folder, _config(bundle), tmp_path / "out", tokenizer=bundle.tokenizer)
    _assert_nothing_left(tmp_path, "out")


def test_unexpected_shape_leaves_nothing(tmp_path):
    bundle, folder = _checkpoint(tmp_path, {"tied": True}, None)
    tensors = load_file(folder / SINGLE_FILE)
    tensors["model.norm.weight"] = torch.ones(7)
    save_file(tensors, folder / SINGLE_FILE, metadata={"format": "pt"})
    with pytest.raises(TokenMergeError, match=r"'model.norm.weight' .* has shape \[7\], but .* describes \[32\]"):
        compress_streaming(folder, _config(bundle), tmp_path / "out", tokenizer=bundle.tokenizer)
    _assert_nothing_left(tmp_path, "out")


def test_index_naming_a_tensor_its_shard_lacks(tmp_path):
    bundle, folder = _checkpoint(tmp_path, {"tied": True}, "2KB")
    index = json.loads((folder / INDEX_FILE).read_text())
    index["weight_map"]["model.norm.weight"] = sorted(set(index["weight_map"].values()))[0]
    (folder / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(TokenMergeError, match=r"puts \['model.norm.weight'\] \(1 in all\) in shards"):
        compress_streaming(folder, _config(bundle), tmp_path / "out", tokenizer=bundle.tokenizer)
    _assert_nothing_left(tmp_path, "out")


def test_missing_tensor_and_no_safetensors(tmp_path):
    bundle, folder = _checkpoint(tmp_path, {"tied": True}, None)
    tensors = load_file(folder / SINGLE_FILE)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, folder / SINGLE_FILE, metadata={"format": "pt"})
    with pytest.raises(TokenMergeError, match=r"lacks \['model.layers.1.mlp.up_proj.weight'\] \(1 tensors"):
        compress_streaming(folder, _config(bundle), tmp_path / "out", tokenizer=bundle.tokenizer)
    (folder / SINGLE_FILE).unlink()
    with pytest.raises(TokenMergeError, match="holds no model.safetensors or model.safetensors.index.json"):
        compress_streaming(folder, _config(bundle), tmp_path / "out", tokenizer=bundle.tokenizer)
    with pytest.raises(FileNotFoundError, match="No checkpoint folder"):
        compress_streaming(tmp_path / "nowhere", _config(bundle), tmp_path / "out")
    _assert_nothing_left(tmp_path, "out")


def test_read_rows_any_order(tmp_path):
    bundle, folder = _checkpoint(tmp_path, {"tied": False}, None)
    checkpoint = StoredCheckpoint.open(folder)
    weight = bundle.model.get_input_embeddings().weight.detach()
    for ids in (torch.tensor([5, 3, 3, 40, 0]), torch.arange(10, 20), torch.tensor([0, weight.shape[0] - 1])):
        assert torch.equal(checkpoint.read_rows("model.embed_tokens.weight", ids), weight[ids])
    assert checkpoint.nbytes == sum(t.numel() * t.element_size() for t in load_file(folder / SINGLE_FILE).values())


def test_needs_streaming_compares_with_available_memory(tmp_path, monkeypatch):
    _, folder = _checkpoint(tmp_path, {"tied": True}, None)
    assert available_memory() > 0
    assert not needs_streaming(folder)
    monkeypatch.setattr("hf_token_merge.serialization.streaming.available_memory", lambda: 1000)
    assert needs_streaming(folder)


@pytest.mark.parametrize(
    "build_kwargs,merge_kwargs,pad",
    [({"tied": True}, {}, None), ({"tied": False}, {"lm_head": "drop"}, 64), ({"tied": False}, {}, None)],
)
def test_export_plain_streaming_equals_export_plain(build_kwargs, merge_kwargs, pad, tmp_path):
    from hf_token_merge import export_plain, export_plain_streaming

    bundle, folder = _checkpoint(tmp_path, build_kwargs, "2KB")
    config = TokenMergeConfig(preset="llasa", n_clusters=bundle.n_centers, **merge_kwargs)
    model = _load(folder, torch.float32)
    plan = apply_token_merge(model, config, tokenizer=bundle.tokenizer, show_progress=False).plan
    export_plain(model, plan, tmp_path / "memory", tokenizer=bundle.tokenizer, pad_vocab_to_multiple_of=pad)
    export_plain_streaming(folder, plan, tmp_path / "stream", tokenizer=bundle.tokenizer, pad_vocab_to_multiple_of=pad)

    a, b = _load(tmp_path / "memory", torch.float32), _load(tmp_path / "stream", torch.float32)
    assert b.config.vocab_size == a.config.vocab_size < bundle.vocab_size
    assert "quantization_config" not in json.loads((tmp_path / "stream" / "config.json").read_text())
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name
    assert b.generation_config.suppress_tokens == a.generation_config.suppress_tokens
    assert (tmp_path / "stream" / "tokenizer.json").read_text() == (tmp_path / "memory" / "tokenizer.json").read_text()
    ids = torch.randint(0, a.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)


def test_export_plain_streaming_refuses_keep_before_writing(tmp_path):
    from hf_token_merge import export_plain_streaming

    bundle, folder = _checkpoint(tmp_path, {"tied": False}, None)
    config = TokenMergeConfig(preset="llasa", n_clusters=bundle.n_centers, lm_head="keep")
    plan = compress_streaming(folder, config, tmp_path / "merged", tokenizer=bundle.tokenizer).plan
    with pytest.raises(TokenMergeError, match="cannot renumber an lm_head='keep' merge"):
        export_plain_streaming(folder, plan, tmp_path / "plain", tokenizer=bundle.tokenizer)
    _assert_nothing_left(tmp_path, "plain")
