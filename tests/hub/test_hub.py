"""Model cards and push_to_hub, tested at the huggingface_hub boundary (the Hub is unreachable here)."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import EvalResult, ModelCard
from transformers import AutoModelForCausalLM

import hf_token_merge.hub.push as push_module
from hf_token_merge import TokenMergeConfig, apply_token_merge
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.hub import CardRow, build_model_card, push_to_hub, stage_folder
from tests.models import build_llama, sample_ids


@pytest.fixture
def merged():
    bundle = build_llama(n_speech=48, n_centers=8)
    result = apply_token_merge(
        bundle.model, TokenMergeConfig(preset="llasa", n_clusters=8), tokenizer=bundle.tokenizer, show_progress=False
    )
    card = build_model_card(
        repo_id="me/tiny-merged",
        base_model="me/tiny",
        model_config=bundle.model.config,
        config=result.plan.config,
        plan_statistics=result.plan.statistics,
        rows=[
            CardRow("WER", 0.100, 0.104),
            CardRow("parameters", result.parameters_before, result.parameters_after, ",.0f"),
        ],
        eval_results=[
            EvalResult(
                task_type="automatic-speech-recognition",
                dataset_type="librivox",
                dataset_name="LibriVox sonnets",
                metric_type="wer",
                metric_value=0.104,
            )
        ],
    )
    return bundle, result, card


def test_card_metadata_and_table(merged):
    _, result, card = merged
    data = card.data.to_dict()
    assert data["base_model"] == "me/tiny" and data["base_model_relation"] == "quantized"
    assert "hf-token-merge" in data["tags"] and data["library_name"] == "transformers"
    assert data["model-index"][0]["results"][0]["metrics"][0] == {"type": "wer", "value": 0.104}
    text = card.text
    assert "| WER | 0.1 | 0.104 | +0.004 (+4.0%) |" in text
    assert f"| parameters | {result.parameters_before:,} | {result.parameters_after:,} |" in text
    assert '"preset": "llasa"' in text and 'from_pretrained("me/tiny-merged")' in text
    assert "48 selected rows -> 8 merged rows" in text


def test_card_says_what_to_install_and_import(merged):
    text = merged[2].text
    assert "`pip install hf_token_merge` and `import hf_token_merge` before `from_pretrained`" in text
    assert "Unknown quantization type" in text and "ignore_mismatched_sizes=True" in text


def test_dry_run_writes_exactly_the_upload_folder(merged, tmp_path):
    bundle, result, card = merged
    folder = push_to_hub(
        bundle.model,
        "me/tiny-merged",
        tokenizer=bundle.tokenizer,
        card=card,
        plan=result.plan,
        staging_dir=tmp_path / "stage",
        dry_run=True,
    )
    names = {p.name for p in (tmp_path / "stage").iterdir()}
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "token_merge_config.json",
        "token_merge_plan.json",
        "token_merge_plan.safetensors",
    } <= names
    assert ModelCard.load(tmp_path / "stage" / "README.md").data.base_model == "me/tiny"
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    ids = sample_ids(bundle)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, bundle.model(ids).logits)
    with pytest.raises(ValueError, match="pass staging_dir"):
        push_to_hub(bundle.model, "me/x", dry_run=True)


class FakeApi:
    """Records the calls push_to_hub makes; upload can be made to fail."""

    calls: list = []
    fail = False

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        files = sorted(p.name for p in __import__("pathlib").Path(kwargs["folder_path"]).iterdir())
        FakeApi.calls.append(("upload_folder", kwargs, files))
        if FakeApi.fail:
            raise ConnectionError("simulated network failure")
        return type("Info", (), {"commit_url": f"https://hub/{kwargs['repo_id']}/commit/1", "pr_url": None})()


@pytest.fixture
def fake_api(monkeypatch):
    FakeApi.calls, FakeApi.fail = [], False
    monkeypatch.setattr(push_module, "HfApi", FakeApi)
    return FakeApi


def test_push_calls_the_hub_api_with_repo_files_and_options(merged, fake_api):
    bundle, result, card = merged
    url = push_to_hub(
        bundle.model,
        "me/tiny-merged",
        tokenizer=bundle.tokenizer,
        card=card,
        plan=result.plan,
        private=True,
        revision="v1",
        token="hf_x",
    )
    assert url == "https://hub/me/tiny-merged/commit/1"
    (create, repo, options), (branch, *_), (upload, kwargs, files) = fake_api.calls
    assert (create, repo, options) == (
        "create_repo",
        "me/tiny-merged",
        {"private": True, "exist_ok": True, "repo_type": "model"},
    )
    assert branch == "create_branch"
    assert kwargs["repo_id"] == "me/tiny-merged" and kwargs["revision"] == "v1" and kwargs["create_pr"] is False
    assert {"README.md", "model.safetensors", "token_merge_plan.safetensors"} <= set(files)


def test_create_pr_skips_the_branch(merged, fake_api):
    bundle, result, card = merged
    push_to_hub(bundle.model, "me/tiny-merged", card=card, create_pr=True, revision="main")
    assert [call[0] for call in fake_api.calls] == ["create_repo", "upload_folder"]
    assert fake_api.calls[1][1]["create_pr"] is True


def test_failed_upload_leaves_the_local_output_intact(merged, fake_api, tmp_path):
    bundle, result, card = merged
    fake_api.fail = True
    with pytest.raises(ConnectionError, match="simulated network failure"):
        push_to_hub(bundle.model, "me/tiny-merged", card=card, plan=result.plan, staging_dir=tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()
    # the staged folder is a complete merged checkpoint: it reloads and gives the merged model's logits
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    ids = sample_ids(bundle)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, bundle.model(ids).logits)
    assert reloaded.get_input_embeddings().weight.shape[0] == result.plan.num_rows


def test_staging_again_replaces_the_whole_folder_and_never_mixes_checkpoints(merged, tmp_path):
    bundle, result, card = merged
    folder = tmp_path / "stage"
    stage_folder(folder, bundle.model, tokenizer=bundle.tokenizer, card=card, plan=result.plan)
    # a shard of some earlier, larger save: a folder that mixed it with the new files would not load as one checkpoint
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"stale")
    stage_folder(folder, bundle.model, tokenizer=bundle.tokenizer, card=card, plan=result.plan)
    assert not (folder / "model-00001-of-00002.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]  # no staging or old folders left
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    ids = sample_ids(bundle)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, bundle.model(ids).logits)


def test_staging_refuses_a_users_folder_unless_overwrite(merged, tmp_path):
    bundle, result, _ = merged
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    with pytest.raises(TokenMergeError, match="was not written by hf_token_merge"):
        push_to_hub(bundle.model, "me/x", plan=result.plan, staging_dir=folder, dry_run=True)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    push_to_hub(bundle.model, "me/x", plan=result.plan, staging_dir=folder, dry_run=True, overwrite=True)
    assert (folder / "token_merge_plan.safetensors").is_file() and not (folder / "notes.txt").exists()


def test_the_marker_is_not_uploaded(merged, fake_api):
    bundle, result, _ = merged
    push_to_hub(bundle.model, "me/tiny-merged", plan=result.plan)
    (_, _, _), (_, kwargs, files) = fake_api.calls
    assert ".hf_token_merge" in files and kwargs["ignore_patterns"] == [".hf_token_merge"]
