"""The built-in job (`hf-token-merge run`) end to end on the bundled reference speech-LLM, on a few utterances."""

from __future__ import annotations

import json

import pytest
import torch

from hf_token_merge.recipes import load_recipe


def test_job_writes_the_before_after_report(tmp_path, capsys):
    from hf_token_merge.job import run_reference_job

    numbers = run_reference_job(str(tmp_path), limit=6, maps=(), show_progress=False)
    table = {row["metric"]: row for row in numbers["table"]}
    assert set(table) == {"WER (test split)", "unit perplexity", "embedding rows", "parameters", "safetensors bytes"}
    stats = numbers["plan"]
    assert table["embedding rows"]["before"] - table["embedding rows"]["after"] == stats["rows_removed"] > 0
    assert table["parameters"]["after"] < table["parameters"]["before"]
    assert table["safetensors bytes"]["after"] < table["safetensors bytes"]["before"]
    # measured on 2026-12-02 (CPU, greedy, deterministic): WER 0.5763 (34/59 words) -> 0.7119 (42/59), unit
    # perplexity 10.853 -> 14.702. The bounds allow 3 words of the 59 (0.05) and 2 % of perplexity, for another
    # CPU's float rounding; a broken evaluation or merge moves them further.
    wer, perplexity = table["WER (test split)"], table["unit perplexity"]
    assert wer["before"] == pytest.approx(0.5763, abs=0.05) and wer["after"] == pytest.approx(0.7119, abs=0.05)
    assert perplexity["before"] == pytest.approx(10.853, rel=0.02)
    assert perplexity["after"] == pytest.approx(14.702, rel=0.02)
    assert table["embedding rows"]["before"] == 548 and table["parameters"]["before"] == 3_550_464
    assert numbers["config"] == load_recipe("reference").config.to_dict()
    assert json.loads((tmp_path / "report.json").read_text())["utterances"] == 6
    for name in ("report.md", "analysis/report.html", "analysis/threshold_curve.png", "merged/model.safetensors"):
        assert (tmp_path / name).is_file(), name
    printed = capsys.readouterr().out
    assert "| WER (test split) |" in printed and "| embedding rows |" in printed
    # the WER change carries its paired bootstrap interval, and the report says what it was measured on
    difference = numbers["wer_difference"]
    assert difference["utterances"] == 6 and difference["ci_low"] <= difference["difference"] <= difference["ci_high"]
    assert (difference["before"], difference["after"]) == (wer["before"], wer["after"])  # the same evaluation
    assert difference["difference"] == pytest.approx(wer["after"] - wer["before"], abs=1e-12)
    assert difference["units"] == 59 and wer["before"] * 59 == pytest.approx(round(wer["before"] * 59))
    report = (tmp_path / "report.md").read_text()
    assert f"95 % CI {difference['ci_low']:+.4f} to {difference['ci_high']:+.4f}" in report
    assert "- data: reference speech-LLM synthetic test split, split test\n- size: 6 examples" in report
    assert numbers["provenance"]["versions"]["torch"] == torch.__version__
    # report.html: one readable page, the before/after table rendered as a table and the analysis below it
    from tests.analysis.test_report_html import Page

    page = Page((tmp_path / "report.html").read_text())
    assert "pre" not in page.tags and page.text["h1"] == ["Reference speech-LLM: merge report"]
    assert page.text["th"][:4] == ["metric", "before", "after", "change"]
    assert "WER (test split)" in page.text["td"] and "safetensors bytes" in page.text["td"]
    assert "Redundancy report" in page.text["h2"] and page.tags.count("figure") == 6  # no maps: 4 + 2 layer figures
    assert all(image["src"].startswith("data:image/png;base64,") for image in page.images)
