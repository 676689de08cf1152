"""recipes/speech_llm/combined.py (issue 17, part 4) end to end on two test utterances of the codec model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "recipes" / "speech_llm" / "combined.py"
PARAMETERS = 4_541_952  # the bundled codec speech-LLM, tied embedding counted once
HIDDEN, ROWS_REMOVED = 256, 4375 - 4273  # the reference_codec recipe's ASR budget


def _combined():
    spec = importlib.util.spec_from_file_location("combined", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_merges_are_scored_against_the_unmerged_model(tmp_path):
    out = tmp_path / "combined"
    assert _combined().main(["--output-dir", str(out), "--limit", "2", "--stage", "3:0.9:3"]) == 0

    study = json.loads((out / "combined.json").read_text())
    rows = {row["name"]: row for row in study["rows"]}
    assert list(rows) == ["no merge", "sequence merge", "vocabulary merge", "both"]
    assert study["utterances"] == 2 and study["recipe"]["n_clusters"] == 4273
    assert study["sequence"]["stages"] == [
        {"layer": 3, "mode": "affinity", "threshold": 0.9, "window": 3, "retention": None}
    ]
    assert rows["no merge"]["parameters"] == rows["sequence merge"]["parameters"] == PARAMETERS
    assert rows["vocabulary merge"]["parameters"] == rows["both"]["parameters"] == PARAMETERS - ROWS_REMOVED * HIDDEN
    assert rows["both"]["safetensors_bytes"] < rows["no merge"]["safetensors_bytes"]
    # the vocabulary merge saves only the LM head's last-position product; the sequence merge saves layer work
    assert rows["no merge"]["flops_ratio"] == 1.0
    assert 0.999 < rows["vocabulary merge"]["flops_ratio"] < 1.0
    # the deep stage pools the merged model's own hidden states, so its share of tokens kept may differ
    assert rows["sequence merge"]["flops_ratio"] < 1.0 and rows["both"]["flops_ratio"] < 1.0
    assert rows["no merge"]["difference"] is None
    for name in ("sequence merge", "vocabulary merge", "both"):
        difference = rows[name]["difference"]
        assert difference["before"] == rows["no merge"]["wer"] and difference["after"] == rows[name]["wer"]
        assert difference["ci_low"] <= difference["difference"] <= difference["ci_high"]
    table = (out / "combined.md").read_text()
    assert "| merge | parameters | safetensors bytes | prefill FLOPs | ASR WER | Δ WER (95 % CI) |" in table
    assert f"| vocabulary merge | {PARAMETERS - ROWS_REMOVED * HIDDEN:,} (99.4%) |" in table


def test_a_malformed_stage_is_refused(capsys):
    with pytest.raises(SystemExit):
        _combined().main(["--output-dir", "unused", "--stage", "3:0.9"])
    assert "'3:0.9': expected LAYER:TAU:WINDOW, e.g. 0:0.9:1" in capsys.readouterr().err
