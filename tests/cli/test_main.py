"""The `hf-token-merge` entry point: --version and --help, in process and as the installed console script."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from hf_token_merge import __version__
from hf_token_merge.cli.main import main


def test_version_flag_prints_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"hf-token-merge {__version__}"


def test_help_describes_the_tool(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hf-token-merge")
    assert "index remap" in out


def test_unknown_option_fails_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--no-such-option"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("hf-token-merge") is None, reason="package not installed with pip")
def test_console_script_is_installed():
    out = subprocess.run(["hf-token-merge", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"hf-token-merge {__version__}"
