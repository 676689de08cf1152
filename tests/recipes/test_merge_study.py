"""recipes/speech_llm/merge_study.py (issue 17's driver) end to end on a few dev/test utterances of the codec model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "recipes" / "speech_llm" / "merge_study.py"


def _study():
    spec = importlib.util.spec_from_file_location("merge_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_study_runs_every_stage_on_a_few_utterances(tmp_path, capsys):
    out = tmp_path / "study"
    tiny = ["--asr-limit", "3", "--tts-limit", "1", "--report-asr-limit", "3", "--report-tts-limit", "1"]
    tiny += ["--ratios", "0.5", "--strategies", "random", "--thresholds", "0.9", "--min-ratio", "0.5"]
    # a budget any merge fits: the search goes to --min-ratio, so the report and structure stages have a plan
    assert _study().main(["--output-dir", str(out), *tiny, "--tolerance", "0.5", "--max-wer-increase", "5"]) == 0

    study = json.loads((out / "study.json").read_text())
    sweep = json.loads((out / "sweep" / "sweep.json").read_text())
    # baseline, random at 0.5, threshold 0.9, k-means with weighted_mean at 0.5
    assert [p["strategy"] for p in sweep] == ["baseline", "random", "threshold", "kmeans, weighted_mean"]
    assert sweep[0]["used_rows"] == 4357 and sweep[0]["metrics"]["kl"] == 0.0  # 18 of 4,375 codes never in train
    assert sweep[1]["rows_kept"] == 2188 and sweep[1]["metrics"]["kl"] > 0
    assert set(sweep[1]["differences"]) == {"asr_wer", "tts_wer"}
    for direction in ("asr", "tts"):
        budget = json.loads((out / f"budget_{direction}.json").read_text())
        assert budget["criterion"] == "upper_bound" and budget["tuned_on_report_set"] is False
        assert budget["speech_rows"] == 4375 and budget["used_rows"] == 4357
        assert budget["report"]["before"]["wer"] == pytest.approx(budget["report"]["difference"]["before"])
        assert budget["n_clusters"] == 2187 and budget["rows_removed"] == 4375 - 2187
        assert 0 < budget["used_rows_removed"] <= budget["rows_removed"]
    shares = study["goal"]["shares"]
    assert study["goal"]["verdict"] == ("met" if min(shares) >= 0.75 else "not met")
    assert f"**{study['goal']['verdict']}**" in (out / "study.md").read_text()
    assert study["structure"]["neighbour_sharing"]["pairs"] > 0 and study["structure"]["frequency"]["rows"] == 4357
    assert "lattice neighbours in one cluster" in (out / "structure.md").read_text()
    assert (out / "structure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Sweep on dev" in capsys.readouterr().out


def test_the_structure_stage_needs_the_budget(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _study().main(["--output-dir", str(tmp_path), "--stages", "sweep,structure"])
    assert "reads the ASR budget's plan; add 'budget'" in capsys.readouterr().err
