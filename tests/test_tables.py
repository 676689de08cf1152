"""The one before/after table and the one Markdown table writer."""

from __future__ import annotations

import pytest

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.hub import CardRow
from hf_token_merge.tables import ChangeRow, change_rows, change_table, markdown_table


def test_markdown_table_aligns_the_first_column_left_and_the_others_right():
    assert markdown_table(["a", "b", "c"], [[1, "x", 2.5]]) == "| a | b | c |\n|---|---:|---:|\n| 1 | x | 2.5 |\n"
    assert markdown_table(("k", "v"), [("n", 3)], align="ll") == "| k | v |\n|---|---|\n| n | 3 |\n"
    with pytest.raises(TokenMergeError, match="align='lx' needs one 'l' or 'r' per column"):
        markdown_table(["a", "b"], [], align="lx")
    with pytest.raises(TokenMergeError, match="A table row has 1 cells for 2 columns"):
        markdown_table(["a", "b"], [["only"]])


def test_the_job_table_renders_as_the_readme_shows():
    rows = [
        ChangeRow("WER (test split)", 0.7118, 0.7161, ".4f"),
        ChangeRow("unit perplexity", 12.542, 15.335, ".3f"),
        ChangeRow("embedding rows", 548, 519, ",d"),
        ChangeRow("parameters", 3550464, 3543040, ",d"),
    ]
    assert change_table(rows) == (
        "| metric | before | after | change |\n"
        "|---|---:|---:|---:|\n"
        "| WER (test split) | 0.7118 | 0.7161 | +0.0043 (+0.6%) |\n"
        "| unit perplexity | 12.542 | 15.335 | +2.793 (+22.3%) |\n"
        "| embedding rows | 548 | 519 | -29 (-5.3%) |\n"
        "| parameters | 3,550,464 | 3,543,040 | -7,424 (-0.2%) |\n"
    )
    assert CardRow is ChangeRow  # the model card uses the same rows


def test_change_rows_handle_missing_values_zero_baselines_and_integers():
    rows = change_rows({"wer": 0.0, "hits": 300, "rtfx": 9.5}, {"wer": 0.0, "hits": 290})
    assert [row.fmt for row in rows] == [".4g", ",d", ".4g"]
    assert [row.rendered()["change"] for row in rows] == ["+0", "-10 (-3.3%)", "–"]
    assert rows[2].rendered()["after"] == "–"
    assert rows[0].to_dict() == {
        "metric": "wer",
        "before": 0.0,
        "after": 0.0,
        "absolute_change": 0.0,
        "relative_change": 0.0,
    }
    assert rows[1].relative_change == pytest.approx(-10 / 300)
    assert ChangeRow("x", 0, 2).relative_change is None
