"""Sequence sweeps: named configs and the oracle study, with their table and layer-wise plot."""

import json
from pathlib import Path

import pytest
import torch

from hf_token_merge.analysis import evaluate_sequence_configs, oracle_configs, save_sequence_points
from hf_token_merge.sequence import MergeStage, SequenceMergeConfig, sequence_merge_handle
from tests.models import SPEECH_START, SPEECH_VOCAB, build_speech_decoder

PROMPT = [0, 5, 6, 32, 40, 48, 33, 41, 34, 35, 43, 51, 59, 7, 8]
SPEECH = {"token_id_range": (SPEECH_START, SPEECH_VOCAB)}


def last_logit_metric(model) -> dict[str, float]:
    """A metric that moves with the merge: the top next-token logit after the prompt."""
    with torch.no_grad():
        return {"top_logit": float(model(input_ids=torch.tensor([PROMPT])).logits[0, -1].max())}


def test_oracle_sweep_points_plot_and_table(tmp_path):
    model = build_speech_decoder()
    configs = oracle_configs(SPEECH, layers=[0, 3], retentions=[0.5], modes=["uniform_drop", "uniform_merge"])
    assert list(configs) == [
        "uniform_drop@0.5/L0",
        "uniform_drop@0.5/L3",
        "uniform_merge@0.5/L0",
        "uniform_merge@0.5/L3",
    ]
    points = evaluate_sequence_configs(model, configs, last_logit_metric, show_progress=False)
    assert [p.name for p in points] == ["baseline", *configs]
    assert points[0].retention == 1.0 and points[0].flops_ratio == 1.0
    assert all(p.retention == 0.5 for p in points[1:])  # 10 speech tokens -> 5
    by_name = {p.name: p for p in points}
    # cutting at the input saves more compute than cutting before the last of 4 layers
    assert by_name["uniform_drop@0.5/L0"].flops_ratio < by_name["uniform_drop@0.5/L3"].flops_ratio < 1.0
    assert by_name["uniform_merge@0.5/L3"].layer == 3 and by_name["uniform_merge@0.5/L3"].mode == "uniform_merge"
    assert points[1].metrics != points[0].metrics
    assert not model._forward_pre_hooks and sequence_merge_handle(model) is None

    paths = save_sequence_points(points, str(tmp_path))
    with open(paths["top_logit"], "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "sequence.md").read_text()
    assert "| uniform_drop@0.5/L0 | 50.0% |" in table
    assert json.loads((tmp_path / "sequence.json").read_text())[0]["name"] == "baseline"


def test_named_configs_plot_against_tokens_kept_by_series(tmp_path):
    model = build_speech_decoder()
    configs = {
        f"tau {tau}": SequenceMergeConfig(stages=[MergeStage(layer=0, threshold=tau)], **SPEECH) for tau in (0.9, -1.0)
    }
    series = dict.fromkeys(configs, "input")
    points = evaluate_sequence_configs(model, configs, last_logit_metric, series=series, show_progress=False)
    # tau 0.9: the four runs of one sound each; tau -1: the whole speech span in one token
    assert [p.retention for p in points[1:]] == [0.4, 0.1]
    assert points[1].layer is None and points[1].series == "input"
    paths = save_sequence_points(points, str(tmp_path))
    assert set(paths) == {"json", "md", "top_logit_retention"}
    assert Path(paths["top_logit_retention"]).read_bytes()[:4] == b"\x89PNG"
    assert set(save_sequence_points(points[:1], str(tmp_path / "plain"))) == {"json", "md"}


def test_unknown_oracle_mode():
    with pytest.raises(ValueError, match="Unknown oracle modes \\['uniform'\\]"):
        oracle_configs(SPEECH, [0], [0.5], ["uniform"])


def test_points_carry_the_paired_interval_of_their_change_when_evaluate_returns_records(tmp_path):
    model = build_speech_decoder()

    def evaluate(model):
        """Ten 10-word utterances: no errors without a merge, one substitution in utterances 0-4 with one."""
        merged = sequence_merge_handle(model) is not None
        records = [
            {"id": f"u{i}", "substitutions": int(merged and i < 5), "deletions": 0, "insertions": 0,
             "hits": 10 - int(merged and i < 5)}
            for i in range(10)
        ]  # fmt: skip
        return {"wer": sum(r["substitutions"] for r in records) / 100, "records": records}

    configs = oracle_configs(SPEECH, layers=[0], retentions=[0.5], modes=["uniform_drop"])
    baseline, point = evaluate_sequence_configs(model, configs, evaluate, show_progress=False)
    assert baseline.differences == {} and "records" not in point.metrics
    difference = point.differences["wer"]
    assert difference["difference"] == pytest.approx(0.05) and difference["units"] == 100
    # the bootstrap resamples utterances: 0 to 10 of the 10 drawn can be the ones with an error
    assert 0.0 <= difference["ci_low"] < 0.05 < difference["ci_high"] <= 0.1
    save_sequence_points([baseline, point], str(tmp_path))
    row = next(line for line in (tmp_path / "sequence.md").read_text().splitlines() if "uniform_drop" in line)
    assert row.endswith(f"| +0.0500 ({difference['ci_low']:+.4f} to {difference['ci_high']:+.4f}) |")
    assert "Δ wer (95 % CI)" in (tmp_path / "sequence.md").read_text()
