"""`hf-token-merge evaluate`: a saved model, a manifest, the report files, one-line errors."""

from __future__ import annotations

import json
import math

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
    argv = ["evaluate", "--model", str(folder), "--manifest", str(manifest), "--no-progress"]
    # one window holds a whole sequence: the NLL is the plain teacher-forced cross-entropy, computed here directly
    assert main([*argv, "--output-dir", str(tmp_path / "whole"), "--max-length", "32"]) == 0
    whole = json.loads((tmp_path / "whole" / "perplexity.json").read_text())["metrics"]
    ids = torch.tensor(sequences)
    with torch.no_grad():
        logits = bundle.model(ids).logits[:, :-1]
    expected = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
    )
    assert whole["nll_sum"] == pytest.approx(expected.item(), rel=1e-5)
    assert whole["perplexity"] == pytest.approx(math.exp(expected.item() / 57), rel=1e-5)
    # windows of 8 ids moving by 3: every target from position 1 on is scored once, each with less context
    out = tmp_path / "out"
    assert main([*argv, "--output-dir", str(out), "--max-length", "8", "--stride", "3"]) == 0
    report = json.loads((out / "perplexity.json").read_text())
    metrics = report["metrics"]
    assert report["task"] == "perplexity" and (metrics["token_count"], metrics["sequences"]) == (57, 3)
    assert (metrics["max_length"], metrics["stride"]) == (8, 3)
    lines = [json.loads(line) for line in (out / "perplexity_sequences.jsonl").read_text().splitlines()]
    assert [(line["index"], line["token_count"]) for line in lines] == [(0, 19), (1, 19), (2, 19)]
    assert sum(line["nll_sum"] for line in lines) == pytest.approx(metrics["nll_sum"], rel=1e-12)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["nll_sum"] / 57), rel=1e-12)
    assert metrics["bits_per_token"] == pytest.approx(metrics["mean_nll"] / math.log(2), rel=1e-12)
    assert metrics["nll_sum"] != pytest.approx(whole["nll_sum"], rel=1e-6)  # shorter context, another number
    table = (out / "perplexity.md").read_text()
    assert (
        f"| perplexity | {metrics['perplexity']:.6g} |" in table
        and f"| mean_nll | {metrics['mean_nll']:.6g} |" in table
    )


def test_evaluate_speech_llm_wer_from_a_manifest(saved_llama, tmp_path):
    from hf_token_merge.evaluation.text import error_counts

    _, folder = saved_llama
    manifest = tmp_path / "units.jsonl"
    manifest.write_text("\n".join(json.dumps({"units": [i, i + 1, 7], "text": "hello world"}) for i in range(3)))
    out = tmp_path / "out"
    argv = ["evaluate", "--model", str(folder), "--task", "wer", "--manifest", str(manifest), "--output-dir", str(out)]
    prompt = ["--prompt-prefix", "<|TEXT_UNDERSTANDING_START|>", "--prompt-suffix", "<|TEXT_UNDERSTANDING_END|>"]
    assert main([*argv, *prompt, "--max-new-tokens", "3", "--no-progress"]) == 0
    metrics = json.loads((out / "wer.json").read_text())["metrics"]
    records = [json.loads(line) for line in (out / "wer_predictions.jsonl").read_text().splitlines()]
    assert [(r["index"], r["target"], r["target_normalized"], r["target_words"]) for r in records] == [
        (i, "hello world", "hello world", 2) for i in range(3)
    ]
    # each record's counts are the alignment of its own texts, and the corpus counts are their sum
    for record in records:
        counts = error_counts(record["target"], record["prediction"])
        assert [record[k] for k in ("hits", "substitutions", "deletions", "insertions")] == [
            counts.hits, counts.substitutions, counts.deletions, counts.insertions
        ]  # fmt: skip
        assert record["wer"] == counts.wer
    for key in ("hits", "substitutions", "deletions", "insertions"):
        assert metrics[key] == sum(record[key] for record in records), key
    errors = metrics["substitutions"] + metrics["deletions"] + metrics["insertions"]
    assert metrics["target_words"] == 6 and metrics["wer"] == errors / 6 and metrics["utterances"] == 3
    # the untrained (seeded, deterministic) tiny model says no word of "hello world" (measured: 0 hits)
    assert metrics["hits"] == 0 and metrics["wer"] >= 1.0


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
    text = capsys.readouterr().out
    assert text.startswith("usage: hf-token-merge evaluate")
    for option in ("--audiofolder", "--manifest", "--dataset", "--baseline-model", "--output-dir", "--no-progress"):
        assert option in text, option
    assert "{wer,perplexity,tts-wer,kl}" in text and "examples:" in text
