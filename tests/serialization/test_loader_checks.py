"""Loading a merged checkpoint: damaged files and records fail at from_pretrained with a clear error, older
records still load, and a process without the plugin is told what to install and import."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from hf_token_merge import MergedEmbedding, TokenMergeConfig, apply_token_merge
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.serialization.quantizer import FORMAT_VERSION, QUANT_METHOD
from tests.models import build_llama, logits_of, sample_ids

WEIGHTS = "model.safetensors"


def _saved(tmp_path, *, tied: bool, lm_head: str = "merge"):
    bundle = build_llama(tied=tied)
    config = TokenMergeConfig(preset="llasa", n_clusters=8, lm_head=lm_head)
    apply_token_merge(bundle.model, config, tokenizer=bundle.tokenizer, show_progress=False)
    bundle.model.save_pretrained(tmp_path)
    ids = sample_ids(bundle)
    return ids, logits_of(bundle.model, ids)


def _edit_tensors(folder, edit) -> None:
    tensors = load_file(os.path.join(folder, WEIGHTS))
    edit(tensors)
    save_file(tensors, os.path.join(folder, WEIGHTS), metadata={"format": "pt"})


def _edit_record(folder, edit) -> None:
    path = os.path.join(folder, "config.json")
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    edit(config["quantization_config"])
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(config, handle)


# --- the merged modules' tensors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tied", "name"),
    [
        (True, "lm_head.logit_offset"),
        (True, "model.embed_tokens.index_map"),
        (True, "lm_head.index_map"),
        (False, "lm_head.weight"),
        (False, "lm_head.logit_offset"),
    ],
)
def test_missing_merged_tensor_is_refused(tmp_path, tied, name):
    _saved(tmp_path, tied=tied)
    _edit_tensors(tmp_path, lambda tensors: tensors.pop(name))
    with pytest.raises(TokenMergeError, match=rf"merged checkpoint has no tensor '{re.escape(name)}'.*Fix: re-save"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("name", "replace", "match"),
    [
        ("model.embed_tokens.index_map", lambda t: t[:-1], r"has shape \(74,\) and dtype I32.*needs shape \(75,\)"),
        ("lm_head.index_map", lambda t: t.float(), r"has shape \(75,\) and dtype F32.*dtype I32/I64"),
        ("lm_head.logit_offset", lambda t: t.to(torch.int32), r"has shape \(75,\) and dtype I32.*dtype F32"),
        ("model.embed_tokens.weight", lambda t: t[:-1], r"'model.embed_tokens.weight' has shape \(34, 32\).*\(35,\)\+"),
    ],
)
def test_wrong_shape_or_dtype_is_refused(tmp_path, name, replace, match):
    _saved(tmp_path, tied=True)

    def edit(tensors):
        tensors[name] = replace(tensors[name]).contiguous()

    _edit_tensors(tmp_path, edit)
    with pytest.raises(TokenMergeError, match=match):
        AutoModelForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["model.embed_tokens.index_map", "lm_head.index_map"])
@pytest.mark.parametrize("value", [-1, 35])
def test_out_of_range_index_map_is_refused(tmp_path, name, value):
    _saved(tmp_path, tied=True)

    def edit(tensors):
        tensors[name][7] = value

    _edit_tensors(tmp_path, edit)
    module = name.rpartition(".")[0]
    with pytest.raises(TokenMergeError, match=rf"{re.escape(module)}.index_map .* damaged.*at ids \[7\] \(1 in all\)"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_nan_logit_offset_is_refused(tmp_path):
    _saved(tmp_path, tied=True)

    def edit(tensors):
        tensors["lm_head.logit_offset"][[3, 9]] = float("nan")

    _edit_tensors(tmp_path, edit)
    with pytest.raises(TokenMergeError, match=r"lm_head.logit_offset .* NaN or \+inf at ids \[3, 9\] \(2 in all\)"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_dropped_head_with_minus_inf_offsets_loads(tmp_path):
    ids, expected = _saved(tmp_path, tied=False, lm_head="drop")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.isinf(reloaded.lm_head.logit_offset).any()
    assert torch.equal(logits_of(reloaded, ids), expected)


# --- the record in config.json -----------------------------------------------------------------------------


def test_record_carries_the_format_version(tmp_path):
    _saved(tmp_path, tied=True)
    with open(tmp_path / "config.json", encoding="utf-8") as handle:
        record = json.load(handle)["quantization_config"]
    assert record["version"] == FORMAT_VERSION == 1
    assert record["quant_method"] == QUANT_METHOD
    assert "pip install hf_token_merge" in QUANT_METHOD and "import hf_token_merge" in QUANT_METHOD


@pytest.mark.parametrize("legacy_name", [False, True])
def test_record_without_version_still_loads(tmp_path, legacy_name):
    ids, expected = _saved(tmp_path, tied=False)

    def edit(record):
        del record["version"]  # as written before versions existed
        if legacy_name:
            record["quant_method"] = "token_merge"

    _edit_record(tmp_path, edit)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(reloaded.model.embed_tokens, MergedEmbedding)
    assert torch.equal(logits_of(reloaded, ids), expected)
    assert reloaded.config.quantization_config.version == FORMAT_VERSION
    with pytest.raises(ValueError, match="already token-merged"):  # the old name is recognised as merged too
        apply_token_merge(reloaded, TokenMergeConfig(preset="llasa", n_clusters=4), show_progress=False)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda r: r.update(version=99),
            r"format version 99, but this hf_token_merge reads versions 1\.\.1.*pip install -U",
        ),
        (lambda r: r.update(version=0), r"format version 0"),
        (lambda r: r.update(version="1"), r"version='1' \(str\); it must be a whole number"),
        (lambda r: r.pop("input_rows"), r"input_rows=None \(NoneType\); it must be a whole number >= 1"),
        (lambda r: r.pop("vocab_size"), r"vocab_size=None"),
        (lambda r: r.pop("input_embedding"), r"input_embedding=None"),
        (lambda r: r.update(input_rows="35"), r"input_rows='35' \(str\)"),
        (lambda r: r.update(input_rows=500), r"input_rows=500 .* at most vocab_size=75"),
        (lambda r: r.update(tied="yes"), r"tied='yes' \(str\); it must be true or false"),
        (lambda r: r.update(output_rows=None), r"output_rows=None .* when output_embedding is set"),
        (lambda r: r.update(padding_idx=35), r"padding_idx=35 .* None or a row in \[0, 35\)"),
        (lambda r: r.update(input_embedding="model.nope"), r"records its merged module at 'model.nope'"),
    ],
)
def test_damaged_or_unknown_record_is_refused(tmp_path, edit, match):
    _saved(tmp_path, tied=True)
    _edit_record(tmp_path, edit)
    with pytest.raises(TokenMergeError, match=match):
        AutoModelForCausalLM.from_pretrained(tmp_path)


# --- a process that never imported the plugin --------------------------------------------------------------

_NOTICE = re.compile(r"(?i)error|warn|unknown|mismatch|missing|unexpected|traceback|reinit")


def _load_without_plugin(folder, extra: str = "") -> tuple[int, str]:
    code = (
        "import sys\n"
        "from transformers import AutoModelForCausalLM\n"
        f"model = AutoModelForCausalLM.from_pretrained({str(folder)!r}{extra})\n"
        "print('PLUGIN IMPORTED' if 'hf_token_merge' in sys.modules else 'PLUGIN NOT IMPORTED')\n"
    )
    env = {key: value for key, value in os.environ.items() if key not in ("TRANSFORMERS_VERBOSITY", "PYTHONPATH")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=folder,  # not the checkout: nothing can import the plugin by accident
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout


@pytest.mark.parametrize("ignore_mismatched_sizes", [False, True])
def test_loading_without_the_plugin_names_the_package_first(tmp_path, ignore_mismatched_sizes):
    _saved(tmp_path, tied=True)
    extra = ", ignore_mismatched_sizes=True" if ignore_mismatched_sizes else ""
    status, output = _load_without_plugin(tmp_path, extra)
    notices = [line for line in output.splitlines() if _NOTICE.search(line)]
    assert notices, output
    first = notices[0]
    assert "pip install hf_token_merge" in first and "import hf_token_merge" in first, output
    if ignore_mismatched_sizes:  # the random embedding it loads comes with the message, never without
        assert status == 0 and "PLUGIN NOT IMPORTED" in output, output
    else:
        assert status != 0 and "PLUGIN" not in output, output
