"""Bad input on the command line: one line on stderr and exit status 2, never a traceback, before any work."""

from __future__ import annotations

import json
import logging

import pytest

import hf_token_merge.cli.common as common
import hf_token_merge.hub.push as push_module
from hf_token_merge.cli.main import main
from hf_token_merge.errors import TokenMergeError
from tests.models import build_llama


@pytest.fixture
def saved_llama(tmp_path):
    bundle = build_llama()
    folder = tmp_path / "llama"
    bundle.model.save_pretrained(folder)
    bundle.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if a command loads a model: the error must come before any work."""

    def refuse(name):
        raise AssertionError(f"the model {name} was loaded before the bad input was refused")

    monkeypatch.setattr(common, "load_model", refuse)


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"hf-token-merge {command}: error: ")
    return err


def test_malformed_recipe_yaml(tmp_path, capsys, no_model_loading):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("family: broken\nmerge:\n  target_ratio: 0.5\n   n_clusters: [1, 2\n")
    argv = ["compress", "--model", "reference", "--recipe", str(recipe), "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2
    err = _one_line(capsys, "compress")
    assert f"Recipe {recipe} is not valid YAML at line 4" in err and "Fix: correct the file." in err


@pytest.mark.parametrize("command", ["compress", "analyze", "evaluate"])
def test_output_dir_that_is_a_file_is_refused_before_any_work(tmp_path, capsys, no_model_loading, command):
    (tmp_path / "out").write_text("not a folder")
    selection = ["--preset", "llasa", "--n-clusters", "2"] if command != "evaluate" else ["--dataset", "librivox"]
    assert main([command, "--model", "reference", *selection, "--output-dir", str(tmp_path / "out")]) == 2
    err = _one_line(capsys, command)
    assert f"{tmp_path / 'out'} is a file. Fix:" in err
    assert (tmp_path / "out").read_text() == "not a folder"


def test_compress_refuses_a_users_model_folder_before_any_work(tmp_path, capsys, no_model_loading):
    (tmp_path / "out" / "model").mkdir(parents=True)
    (tmp_path / "out" / "model" / "notes.txt").write_text("mine")
    argv = ["compress", "--model", "reference", "--preset", "llasa", "--n-clusters", "2"]
    assert main([*argv, "--output-dir", str(tmp_path / "out")]) == 2
    assert "was not written by hf_token_merge" in _one_line(capsys, "compress")
    assert (tmp_path / "out" / "model" / "notes.txt").read_text() == "mine"


def test_push_while_offline_names_the_cause(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert main(["push", str(folder), "--repo-id", "me/merged"]) == 2  # the tests run with HF_HUB_OFFLINE=1
    err = _one_line(capsys, "push")
    assert "cannot reach the Hugging Face Hub to push me/merged" in err and "HF_HUB_OFFLINE" in err


def test_push_network_error_names_the_cause(tmp_path, capsys, monkeypatch):
    class TransportError(Exception):  # the shape of httpx's errors, which are not OSErrors
        pass

    class ConnectError(TransportError):
        pass

    class Api:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            raise ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(push_module, "HfApi", Api)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert main(["push", str(folder), "--repo-id", "me/merged"]) == 2
    assert "cannot reach the Hugging Face Hub to push me/merged ([Errno -2] Name or service not known)" in _one_line(
        capsys, "push"
    )


@pytest.mark.parametrize("repo_id", ["bad id", "me//x", "a/b/c", "me/-x-"])
def test_invalid_repo_id_in_a_dry_run(tmp_path, capsys, repo_id):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    argv = ["push", str(folder), "--repo-id", repo_id, "--dry-run", "--staging-dir", str(tmp_path / "stage")]
    assert main(argv) == 2
    assert f"--repo-id {repo_id!r} is not a valid Hub id" in _one_line(capsys, "push")
    assert not (tmp_path / "stage").exists()


def test_push_dry_run_refuses_a_users_staging_folder(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "notes.txt").write_text("mine")
    argv = ["push", str(folder), "--repo-id", "me/x", "--dry-run", "--staging-dir", str(stage)]
    assert main(argv) == 2
    assert "was not written by hf_token_merge" in _one_line(capsys, "push")
    assert main([*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in stage.iterdir()) == [".hf_token_merge", "config.json"]


@pytest.mark.parametrize(("ids", "bad"), [([1, -1, 3], "[-1]"), ([1, 2, 10_000], "[10000]")])
def test_perplexity_manifest_with_ids_outside_the_vocabulary(saved_llama, tmp_path, capsys, ids, bad):
    manifest = tmp_path / "seqs.jsonl"
    manifest.write_text(json.dumps({"input_ids": [1, 2, 3]}) + "\n" + json.dumps({"input_ids": ids}) + "\n")
    argv = ["evaluate", "--model", str(saved_llama), "--task", "perplexity", "--manifest", str(manifest)]
    assert main([*argv, "--output-dir", str(tmp_path / "out"), "--no-progress"]) == 2
    err = _one_line(capsys, "evaluate")
    assert f"sequence 1 (0-based) holds id(s) {bad} outside the model's vocabulary [0, " in err


@pytest.mark.parametrize("model", ["/nonexistent", "./missing/model", "~/no-such-model-here"])
def test_a_missing_path_is_not_read_as_a_hub_id(tmp_path, capsys, model):
    argv = ["analyze", "--model", model, "--preset", "llasa", "--n-clusters", "2", "--output-dir", str(tmp_path)]
    assert main(argv) == 2
    err = _one_line(capsys, "analyze")
    assert f"--model {model}: no such folder" in err and "could not be loaded" not in err


@pytest.mark.parametrize(
    ("argv", "reason"),
    [(["--limit", "-1"], "-1 is not a positive integer"), (["--limit", "x"], "'x' is not an integer")],
)
def test_negative_limit_is_a_one_line_usage_error(saved_llama, tmp_path, capsys, argv, reason):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", str(saved_llama), "--dataset", "librivox", "--output-dir", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"hf-token-merge evaluate: error: argument --limit: {reason}")


def test_sequence_limit_is_checked_too(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sequence", "--output-dir", str(tmp_path), "--limit", "0"])
    assert exit_info.value.code == 2
    assert "argument --limit: 0 is not a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "kind"),
    [(KeyError("internal"), KeyError), (ValueError("internal"), ValueError), (TypeError("internal"), TypeError)],
)
def test_an_error_that_is_not_the_librarys_is_a_bug_and_keeps_its_traceback(tmp_path, monkeypatch, error, kind):
    """Only TokenMergeError and FileNotFoundError become one-line messages; a plain ValueError is a bug too."""
    import hf_token_merge.cli.compress as compress

    def broken(args):
        raise error

    monkeypatch.setattr(compress, "load_for_merge", broken)
    argv = ["compress", "--model", "reference", "--preset", "llasa", "--n-clusters", "2", "--output-dir", str(tmp_path)]
    with pytest.raises(kind, match="internal"):
        main(argv)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (TokenMergeError("bad\n input. Fix: this."), "hf-token-merge compress: error: bad input. Fix: this.\n"),
        (FileNotFoundError("x.txt does not exist."), "hf-token-merge compress: error: x.txt does not exist.\n"),
    ],
)
def test_the_librarys_errors_are_one_line_with_exit_2(tmp_path, monkeypatch, capsys, error, message):
    import hf_token_merge.cli.compress as compress

    def refuse(args):
        raise error

    monkeypatch.setattr(compress, "load_for_merge", refuse)
    argv = ["compress", "--model", "reference", "--preset", "llasa", "--n-clusters", "2", "--output-dir", str(tmp_path)]
    assert main(argv) == 2
    assert capsys.readouterr().err == message


@pytest.mark.parametrize(
    ("flags", "level"),
    [([], logging.WARNING), (["-v"], logging.INFO), (["--verbose"], logging.INFO), (["-vv"], logging.DEBUG)],
)
@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_sets_the_log_level(tmp_path, monkeypatch, capsys, flags, level, where):
    import hf_token_merge.cli.compress as compress

    def log_and_stop(args):
        logging.getLogger("hf_token_merge.cli.compress").info("progress line")
        logging.getLogger("hf_token_merge.cli.compress").debug("debug line")
        raise TokenMergeError("stop here")

    monkeypatch.setattr(compress, "load_for_merge", log_and_stop)
    rest = ["--model", "reference", "--preset", "llasa", "--n-clusters", "2", "--output-dir", str(tmp_path)]
    argv = [*flags, "compress", *rest] if where == "before" else ["compress", *flags, *rest]
    assert main(argv) == 2
    assert logging.getLogger("hf_token_merge").level == level
    err = capsys.readouterr().err
    assert ("INFO hf_token_merge.cli.compress: progress line" in err) == (level <= logging.INFO)
    assert ("DEBUG hf_token_merge.cli.compress: debug line" in err) == (level == logging.DEBUG)
    assert len(logging.getLogger("hf_token_merge").handlers) == 1  # repeated main() calls do not stack handlers
