"""export_plain: a renumbered checkpoint that plain transformers loads, with a rewritten tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from hf_token_merge import TokenMergeConfig, apply_token_merge, export_plain
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.serialization import remap_token_ids
from tests.models import build_llama, build_qwen2


def _representative_of(plan) -> torch.Tensor:
    """Original id -> the id it decodes to after the merge (its cluster's representative)."""
    table = torch.arange(plan.vocab_size)
    table[plan.selected_ids] = plan.representative_ids[plan.cluster_of_selected]
    return table


def _merge(bundle, **overrides):
    config = TokenMergeConfig(**bundle.selection, n_clusters=bundle.n_centers, logit_correction="none", **overrides)
    return apply_token_merge(bundle.model, config, tokenizer=bundle.tokenizer, show_progress=False)


@pytest.mark.parametrize("builder", [build_llama, build_qwen2], ids=["llama-llasa", "qwen2-spark"])
def test_tokenize_generate_decode_agrees_with_in_place_model(builder, tmp_path):
    bundle = builder()
    result = _merge(bundle)
    tokenizer = bundle.tokenizer
    speech = [tokenizer.convert_ids_to_tokens(int(i)) for i in bundle.selected_ids[1:12:3]]
    prompt = "hello world " + " ".join(speech)

    encoded = tokenizer(prompt, return_tensors="pt")
    in_place = bundle.model.generate(**encoded, max_new_tokens=10, do_sample=False, min_new_tokens=10)
    expected = tokenizer.decode(_representative_of(result.plan)[in_place[0]])

    export_plain(bundle.model, result.plan, tmp_path / "plain", tokenizer=tokenizer)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "plain").eval()
    # PreTrainedTokenizerFast reads tokenizer.json as written; AutoTokenizer would pick Qwen2Tokenizer from
    # config.json, which rebuilds a byte-level BPE around this test's word-level vocabulary.
    plain_tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp_path / "plain")
    plain_encoded = plain_tokenizer(prompt, return_tensors="pt")
    assert plain_encoded.input_ids.tolist() == result.plan.old_to_new[encoded.input_ids].tolist()
    generated = plain.generate(**plain_encoded, max_new_tokens=10, do_sample=False, min_new_tokens=10)
    assert plain_tokenizer.decode(generated[0]) == expected

    with torch.no_grad():
        in_place_logits = bundle.model(**encoded).logits
        plain_logits = plain(**plain_encoded).logits
    # correction 'none': the in-place logits are the plain logits read through the index map, exactly
    assert torch.equal(plain_logits[..., result.plan.old_to_new], in_place_logits)


def test_plain_config_and_tokenizer_are_renumbered(tmp_path):
    bundle = build_llama()
    result = _merge(bundle)
    plan, tokenizer = result.plan, bundle.tokenizer
    export_plain(bundle.model, plan, tmp_path, tokenizer=tokenizer)

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["vocab_size"] == plan.num_rows < plan.vocab_size
    assert "quantization_config" not in config
    plain_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        old = getattr(bundle.model.config, key)
        assert config[key] == int(plan.old_to_new[old])
        assert plain_tokenizer.convert_ids_to_tokens(config[key]) == tokenizer.convert_ids_to_tokens(old)

    for cluster in range(plan.num_clusters):
        representative = tokenizer.convert_ids_to_tokens(int(plan.representative_ids[cluster]))
        merged_id = int(plan.cluster_rows[cluster])
        assert plain_tokenizer.decode([merged_id]) == representative
        for member in plan.members(cluster).tolist():
            text = tokenizer.convert_ids_to_tokens(member)
            assert plain_tokenizer(text, add_special_tokens=False).input_ids == [merged_id], text


def test_plain_export_loads_without_the_plugin(tmp_path):
    bundle = build_llama()
    result = _merge(bundle)
    export_plain(bundle.model, result.plan, tmp_path, tokenizer=bundle.tokenizer)
    script = (
        "import sys, transformers\n"
        f"m = transformers.AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})\n"
        "assert 'hf_token_merge' not in sys.modules\n"
        "print(type(m.model.embed_tokens).__name__, m.model.embed_tokens.weight.shape[0])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["Embedding", str(result.plan.num_rows)]


def test_dropped_rows_are_suppressed_in_plain_export(tmp_path):
    bundle = build_llama(tied=False)
    result = _merge(bundle, lm_head="drop")
    export_plain(bundle.model, result.plan, tmp_path)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path)
    clusters = result.plan.cluster_rows
    assert torch.count_nonzero(plain.lm_head.weight[clusters]) == 0
    assert set(clusters.tolist()) <= set(plain.generation_config.suppress_tokens)
    kept = torch.ones(result.plan.vocab_size, dtype=torch.bool)
    kept[result.plan.selected_ids] = False
    original_ids = kept.nonzero().flatten()
    assert torch.equal(plain.lm_head.weight[result.plan.old_to_new[original_ids]], bundle.model.lm_head.weight)


def test_failed_export_leaves_target_untouched(tmp_path):
    bundle = build_llama()
    result = _merge(bundle)
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("previous export")
    with pytest.raises(ValueError, match="fast tokenizers"):
        export_plain(bundle.model, result.plan, target, tokenizer=object())
    assert (target / "keep.txt").read_text() == "previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left behind


def test_export_refuses_unmerged_model_and_foreign_plan(tmp_path):
    merged = build_llama()
    result = _merge(merged)
    with pytest.raises(ValueError, match="not token-merged"):
        export_plain(build_llama().model, result.plan, tmp_path / "a")
    other = build_llama(seed=5, n_centers=6)
    other_result = _merge(other)
    with pytest.raises(ValueError, match="does not match"):
        export_plain(merged.model, other_result.plan, tmp_path / "b")


def test_remap_token_ids_covers_whisper_style_keys():
    old_to_new = torch.tensor([0, 1, 1, 2, 3, 4])
    config = {
        "eos_token_id": 5,
        "pad_token_id": [3, 4],
        "suppress_tokens": [2, 5],
        "begin_suppress_tokens": [3],
        "forced_decoder_ids": [[1, 5], [2, 3]],
        "lang_to_id": {"<|en|>": 4},
        "bad_words_ids": [[2, 3]],
        "decoder": {"decoder_start_token_id": 3},
        "num_layers": 5,
        "id2label": {0: "a"},
    }
    assert remap_token_ids(config, old_to_new) == {
        "eos_token_id": 4,
        "pad_token_id": [2, 3],
        "suppress_tokens": [1, 4],
        "begin_suppress_tokens": [2],
        "forced_decoder_ids": [[1, 4], [2, 2]],
        "lang_to_id": {"<|en|>": 3},
        "bad_words_ids": [[1, 2]],
        "decoder": {"decoder_start_token_id": 2},
        "num_layers": 5,
        "id2label": {0: "a"},
    }


def test_export_refuses_a_users_folder_unless_overwrite(tmp_path):
    bundle = build_llama()
    result = _merge(bundle)
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("my notes")
    with pytest.raises(TokenMergeError, match=r"was not written by hf_token_merge.*overwrite=True"):
        export_plain(bundle.model, result.plan, target)
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]

    export_plain(bundle.model, result.plan, target, overwrite=True)
    assert json.loads((target / "config.json").read_text())["vocab_size"] == result.plan.num_rows
    assert not (target / "notes.txt").exists()
    export_plain(bundle.model, result.plan, target)  # the library's own export: replaced without asking
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize("relative", [".", ".."])
def test_export_never_replaces_the_current_directory_or_a_parent(tmp_path, monkeypatch, relative):
    bundle = build_llama()
    result = _merge(bundle)
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "data.txt").write_text("keep")
    monkeypatch.chdir(cwd)
    with pytest.raises(TokenMergeError, match="current directory or one of its parents"):
        export_plain(bundle.model, result.plan, relative, overwrite=True)
    assert (cwd / "data.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_export_keeps_the_previous_export_until_the_new_one_is_complete(tmp_path, monkeypatch):
    bundle = build_llama()
    result = _merge(bundle)
    export_plain(bundle.model, result.plan, tmp_path / "plain")
    before = (tmp_path / "plain" / "model.safetensors").read_bytes()

    import transformers

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt  # interrupted while writing the new export

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        export_plain(bundle.model, result.plan, tmp_path / "plain")
    assert (tmp_path / "plain" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


def test_export_refuses_an_lm_head_keep_merge_up_front(tmp_path):
    bundle = build_llama(tied=False)
    result = _merge(bundle, lm_head="keep")
    with pytest.raises(TokenMergeError, match=r"lm_head='keep'.*Fix: merge with lm_head='merge'"):
        export_plain(bundle.model, result.plan, tmp_path / "plain")
    assert list(tmp_path.iterdir()) == []
