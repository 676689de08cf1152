"""`evaluate --dataset` and `compress --eval` with any `datasets` dataset; compress's report matches evaluate's."""

from __future__ import annotations

import json

import datasets
import pytest

import hf_token_merge.cli.common as common
from hf_token_merge.cli.main import main
from tests.models import build_llama

TIMESTAMPS = ["--token-id-range", "50364", "51864", "--allow-special-tokens", "--n-clusters", "150"]


@pytest.fixture
def saved_sonnets(librivox, tmp_path):
    """Two LibriVox utterances saved with `DatasetDict.save_to_disk`, the transcript in a `sentence` column."""
    two = librivox.select(range(2)).rename_column("text", "sentence")
    folder = tmp_path / "sonnets"
    datasets.DatasetDict({"test": two, "train": two.select(range(1))}).save_to_disk(str(folder))
    return folder


@pytest.fixture
def cached_whisper(whisper_tiny_en, reference_cache, monkeypatch):
    monkeypatch.setenv("HF_TOKEN_MERGE_CACHE", str(reference_cache))  # the session's converted Whisper


def test_evaluate_a_saved_dataset(cached_whisper, saved_sonnets, tmp_path):
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", "whisper-tiny-en", "--dataset", str(saved_sonnets), "--split", "test"]
    assert main([*argv, "--text-column", "sentence", "--no-progress", "--output-dir", str(out)]) == 0
    report = json.loads((out / "wer.json").read_text())
    assert report["metrics"]["utterances"] == 2 and report["metrics"]["target_words"] > 20
    predictions = [json.loads(line) for line in (out / "wer_predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 2 and all(p["target"] and p["prediction"] for p in predictions)


def test_compress_eval_on_a_dataset_reports_what_evaluate_does(cached_whisper, saved_sonnets, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["compress", "--model", "whisper-tiny-en", *TIMESTAMPS, "--eval", str(saved_sonnets), "--split", "test"]
    assert main([*argv, "--text-column", "sentence", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.err.count("WER:   0%") == 2  # the progress bar of each evaluation, as `evaluate` shows it
    merge = json.loads((out / "merge.json").read_text())
    before, after = merge["wer_before"], merge["wer_after"]
    assert {"substitutions", "deletions", "insertions", "target_words", "hits", "wer"} <= set(before["metrics"])
    assert before["metrics"]["utterances"] == 2 and before["timing"]["rtfx"] > 0 and after["timing"]["rtfx"] > 0
    assert merge["before"]["wer"] == before["metrics"]["wer"] and merge["after"]["wer"] == after["metrics"]["wer"]
    assert merge["eval_set"] == f"{saved_sonnets} (split test) (greedy ASR WER)"
    lines = [json.loads(line) for line in (out / "merge_predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and {"target", "prediction_before", "prediction_after", "substitutions_after"} <= set(
        lines[0]
    )
    assert sum(line["substitutions_before"] for line in lines) == before["metrics"]["substitutions"]
    # both byte counts, labelled: the tensors in memory and the safetensors files on disk
    memory = (merge["tensor_bytes_in_memory_before"], merge["tensor_bytes_in_memory_after"])
    disk = (merge["safetensors_bytes_on_disk_before"], merge["safetensors_bytes_on_disk_after"])
    assert memory[1] < memory[0] and disk[1] < disk[0] and "bytes_before" not in merge
    assert f"tensor bytes in memory: {memory[0]:,} -> {memory[1]:,}" in printed.out
    assert f"safetensors bytes on disk: {disk[0]:,} -> {disk[1]:,}" in printed.out
    assert f"| safetensors bytes on disk | {disk[0]:,} | {disk[1]:,} |" in printed.out
    assert "| tensor bytes in memory |" in (out / "model" / "README.md").read_text()


def test_dataset_errors_are_one_line_before_the_model_loads(saved_sonnets, tmp_path, capsys, monkeypatch):
    def refuse(name):
        raise AssertionError(f"the model {name} was loaded before the bad data was refused")

    monkeypatch.setattr(common, "load_model", refuse)
    out = ["--output-dir", str(tmp_path / "out")]
    cases = [
        (["--split", "test"], "has no column 'text'", "Fix: name its text column with --text-column"),
        (["--text-column", "sentence"], "holds the splits ['test', 'train']", "Fix: pass --split"),
        (["--split", "dev", "--text-column", "sentence"], "has no split 'dev'", "Fix: pass --split one of"),
    ]
    for extra, problem, fix in cases:
        argv = ["compress", "--model", "whisper-tiny-en", *TIMESTAMPS, "--eval", str(saved_sonnets), *extra]
        assert main([*argv, *out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and problem in err and fix in err, err
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--model", "whisper-tiny-en", "--dataset", str(tmp_path / "empty"), *out]) == 2
    assert "is a folder, but no dataset" in capsys.readouterr().err
    argv = ["sweep", "--model", "whisper-tiny-en", *TIMESTAMPS, "--eval", str(tmp_path / "missing"), *out]
    assert main(argv) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_a_causal_lm_cannot_be_scored_on_an_audio_dataset(saved_sonnets, tmp_path, capsys):
    bundle = build_llama()
    bundle.model.save_pretrained(tmp_path / "llama")
    bundle.tokenizer.save_pretrained(tmp_path / "llama")
    argv = ["compress", "--model", str(tmp_path / "llama"), "--preset", "llasa", "--n-clusters", "8"]
    argv += ["--eval", str(saved_sonnets), "--split", "test", "--text-column", "sentence"]
    assert main([*argv, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "this model is a causal LM. Fix: use --eval reference" in err
    assert not (tmp_path / "out" / "model").exists()  # refused before merging or saving
