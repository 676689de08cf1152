"""`hf-token-merge evaluate`: a saved model, a manifest, the report files, one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from hf_token_merge.cli.main import main
from tests.models import build_llama


@pytest.fixture
def saved_llama(tmp_path):
    bundle = build_llama()
    folder = tmp_path / "llama"
    bundle.model.save_pretrained(folder)
    bundle.tokenizer.save_pretrained(folder)
    return bundle, folder


def test_evaluate_perplexity_of_a_saved_model(saved_llama, tmp_path):
    bundle, folder = saved_llama
    sequences = torch.randint(0, bundle.vocab_size, (3, 20), generator=torch.Generator().manual_seed(0)).tolist()
    manifest = tmp_path / "seqs.jsonl"
    manifest.write_text("\n".join(json.dumps({"input_ids": ids}) for ids in sequences))
    out = tmp_path / "out"
    argv = ["evaluate", "--model", str(folder), "--manifest", str(manifest), "--output-dir", str(out)]
    assert main([*argv, "--max-length", "8", "--stride", "3", "--no-progress"]) == 0
    report = json.loads((out / "perplexity.json").read_text())
    assert report["task"] == "perplexity" and report["metrics"]["token_count"] == 57
    assert "| perplexity |" in (out / "perplexity.md").read_text()
    assert len((out / "perplexity_sequences.jsonl").read_text().splitlines()) == 3


def test_evaluate_speech_llm_wer_from_a_manifest(saved_llama, tmp_path):
    _, folder = saved_llama
    manifest = tmp_path / "units.jsonl"
    manifest.write_text("\n".join(json.dumps({"units": [i, i + 1, 7], "text": "hello world"}) for i in range(3)))
    out = tmp_path / "out"
    argv = ["evaluate", "--model", str(folder), "--task", "wer", "--manifest", str(manifest), "--output-dir", str(out)]
    prompt = ["--prompt-prefix", "<|TEXT_UNDERSTANDING_START|>", "--prompt-suffix", "<|TEXT_UNDERSTANDING_END|>"]
    assert main([*argv, *prompt, "--max-new-tokens", "3", "--no-progress"]) == 0
    assert json.loads((out / "wer.json").read_text())["metrics"]["target_words"] == 6
    assert len((out / "wer_predictions.jsonl").read_text().splitlines()) == 3


def test_bad_input_exits_with_one_line(saved_llama, tmp_path, capsys):
    _, folder = saved_llama
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--dataset", "librivox", "--output-dir", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no config.json" in err and "Fix:" in err

    out = str(tmp_path / "out")
    assert main(["evaluate", "--model", str(folder), "--dataset", "librivox", "--output-dir", out]) == 2
    assert "Fix: pass --manifest" in capsys.readouterr().err

    argv = ["evaluate", "--model", str(folder), "--task", "wer", "--manifest", str(tmp_path / "missing.jsonl")]
    assert main([*argv, "--output-dir", out]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_evaluate_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--help"])
    assert exit_info.value.code == 0
    assert "--audiofolder" in capsys.readouterr().out
