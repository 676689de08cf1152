"""`hf-token-merge sequence` on the bundled reference speech-LLM."""

import json

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
    assert all(0 <= p["metrics"]["wer"] <= 2 for p in points)
    assert abs(points[2]["retention"] - 0.5) < 0.02  # odd spans round up
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
    assert merged["name"] == "encoder frames tau 0.99 window 1"
    assert baseline["metrics"]["wer"] < 0.2 and merged["metrics"]["wer"] < 0.3


def test_encoder_thresholds_are_required_for_librivox(tmp_path, capsys):
    assert main(["sequence", "--eval", "librivox", "--output-dir", str(tmp_path)]) == 2
    assert "Fix: pass --encoder-thresholds." in capsys.readouterr().err
