"""compress --export-plain --pad-vocab-to-multiple-of: a padded plain export from the command line."""

from __future__ import annotations

import json

import pytest

from hf_token_merge.cli.main import main
from tests.models import build_llama


def _saved_llama(tmp_path):
    bundle = build_llama(n_speech=48, n_centers=8)
    folder = tmp_path / "llama"
    bundle.model.save_pretrained(folder)
    bundle.tokenizer.save_pretrained(folder)
    return folder


def test_compress_pads_the_plain_vocabulary(tmp_path):
    out = tmp_path / "run"
    argv = ["compress", "--model", str(_saved_llama(tmp_path)), "--recipe", "llasa", "--n-clusters", "8"]
    assert main([*argv, "--export-plain", "--pad-vocab-to-multiple-of", "64", "--output-dir", str(out)]) == 0
    rows = json.loads((out / "merge.json").read_text())["rows_after"]
    config = json.loads((out / "plain" / "config.json").read_text())
    assert rows % 64 != 0 and config["vocab_size"] == -(-rows // 64) * 64
    suppressed = json.loads((out / "plain" / "generation_config.json").read_text())["suppress_tokens"]
    assert suppressed == list(range(rows, config["vocab_size"]))


def test_padding_without_a_plain_export_is_refused_before_merging(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["compress", "--model", str(_saved_llama(tmp_path)), "--recipe", "llasa", "--n-clusters", "8"]
    assert main([*argv, "--pad-vocab-to-multiple-of", "64", "--output-dir", str(out)]) == 2
    assert "--pad-vocab-to-multiple-of pads the plain export. Fix: add --export-plain." in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error
        main([*argv, "--export-plain", "--pad-vocab-to-multiple-of", "0", "--output-dir", str(out)])
    assert exit_info.value.code == 2 and "0 is not a positive integer" in capsys.readouterr().err
