"""`hf-token-merge sequence` on the bundled reference speech-LLM."""

import json

import pytest

from hf_token_merge.cli.main import main


def test_sequence_command_writes_the_table_and_the_layerwise_plot(tmp_path, capsys):
    status = main(
        [
            "sequence", "--output-dir", str(tmp_path), "--limit", "4", "--settings", "aggressive",
            "--deep-layers", "3", "--oracle-layers", "0", "3", "--oracle-retentions", "0.5",
            "--oracle-modes", "uniform_drop",
        ]
    )  # fmt: skip
    assert status == 0
    points = json.loads((tmp_path / "sequence.json").read_text())
    assert [p["name"] for p in points] == [
        "baseline",
        "aggressive dual L3/first",
        "uniform_drop@0.5/L0",
        "uniform_drop@0.5/L3",
    ]
    # measured on 2026-12-02 (CPU, greedy, deterministic, 4 utterances, 41 words): baseline 0.6098, the dual merge
    # 0.6098 (it keeps 96.6 % of the speech tokens), dropping half of them at layer 0 0.8049 and at layer 3 0.5610.
    # The bound, 0.05 (2 words of 41), allows another CPU's float rounding; a broken merge or evaluation moves further.
    measured = {"baseline": 0.6098, "aggressive dual L3/first": 0.6098, "uniform_drop@0.5/L0": 0.8049,
                "uniform_drop@0.5/L3": 0.5610}  # fmt: skip
    for point in points:
        assert point["metrics"]["wer"] == pytest.approx(measured[point["name"]], abs=0.05), point["name"]
    assert points[0]["metrics"]["wer"] * 41 == pytest.approx(round(points[0]["metrics"]["wer"] * 41))  # whole words
    assert points[2]["metrics"]["wer"] > points[0]["metrics"]["wer"]  # dropping at the input hurts most
    assert points[0]["retention"] == 1.0 and points[1]["retention"] == pytest.approx(0.9659, abs=0.01)
    assert points[1]["flops_ratio"] == pytest.approx(0.9918, abs=0.005)
    assert abs(points[2]["retention"] - 0.5) < 0.02  # odd spans round up
    assert points[3]["retention"] == points[2]["retention"] and points[3]["layer"] == 3
    assert (tmp_path / "sequence_layerwise_wer.png").read_bytes()[:4] == b"\x89PNG"
    assert "| baseline | 100.0% | 100.0% |" in capsys.readouterr().out


def test_sequence_command_without_runs_is_one_line(tmp_path, capsys):
    assert main(["sequence", "--output-dir", str(tmp_path), "--settings"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "hf-token-merge sequence: error: Nothing to run. Fix: pass --settings and/or --oracle-layers."


def test_whisper_encoder_frames_on_real_speech(whisper_tiny_en, librivox, reference_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN_MERGE_CACHE", str(reference_cache))  # the session's converted Whisper
    arguments = ["--model", "whisper-tiny-en", "--eval", "librivox", "--limit", "2", "--encoder-thresholds", "0.99"]
    assert main(["sequence", *arguments, "--output-dir", str(tmp_path)]) == 0
    baseline, merged = json.loads((tmp_path / "sequence.json").read_text())
    assert baseline["retention"] == 1.0 and baseline["flops_ratio"] is None
    # 30 s windows of 1,500 frames: the padding after 7-17 s of speech pools into few frames even at tau 0.99
    assert 0.1 < merged["retention"] < 0.9
    assert merged["name"] == "encoder frames tau 0.99 window 1, proportional attention"
    assert baseline["metrics"]["wer"] < 0.2 and merged["metrics"]["wer"] < 0.3


def test_encoder_thresholds_are_required_for_librivox(tmp_path, capsys):
    assert main(["sequence", "--eval", "librivox", "--output-dir", str(tmp_path)]) == 2
    assert "Fix: pass --encoder-thresholds." in capsys.readouterr().err


def test_codec_speech_llm_on_its_corpus_with_paired_intervals(tmp_path, capsys):
    arguments = ["--model", "codec-speech-llm", "--eval", "codec-asr", "--split", "test", "--limit", "4"]
    configs = ["--settings", "conservative", "--variants", "input"]
    assert main(["sequence", *arguments, *configs, "--output-dir", str(tmp_path)]) == 0
    baseline, merged = json.loads((tmp_path / "sequence.json").read_text())
    assert [baseline["name"], merged["name"]] == ["baseline", "conservative input/first"]
    # measured on 2026-12-07 (CPU, 4 beams, 4 test utterances, 48 words): 0.3333 without a merge, 0.4167 with tau
    # 0.9 at the input, which keeps 90.6 % of the 50 Hz codes; the bound (2 words) allows another CPU's rounding
    assert baseline["metrics"]["wer"] == pytest.approx(0.3333, abs=2 / 48)
    assert merged["retention"] == pytest.approx(0.906, abs=0.01) and merged["flops_ratio"] < merged["retention"] + 0.01
    difference = merged["differences"]["wer"]
    assert difference["units"] == 48 and baseline["differences"] == {}
    assert difference["difference"] == pytest.approx(merged["metrics"]["wer"] - baseline["metrics"]["wer"])
    assert difference["ci_low"] <= difference["difference"] <= difference["ci_high"]
    assert "| conservative input/first | 90.6% |" in capsys.readouterr().out
