"""atomic_directory: a killed save leaves the old or the new folder, never a mix; user folders and the cwd are
refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hf_token_merge import MergePlan, TokenMergeConfig, atomic, plan_token_merge
from hf_token_merge.atomic import MARKER_NAME, atomic_directory, check_target, is_library_folder
from hf_token_merge.errors import TokenMergeError
from tests.models import build_llama


def _save(path: Path, version: int, crash_in: str | None = None) -> None:
    """A checkpoint-like save: a config plus a weights file that must agree with it (`seed == weights`)."""
    with atomic_directory(path) as staging:
        TokenMergeConfig(token_id_range=(0, 10), n_clusters=2, seed=version).save_pretrained(staging)
        if crash_in == "writing":
            (staging / "weights.txt").write_text("half")
            os._exit(3)
        (staging / "weights.txt").write_text(str(version))


def _load(folder: Path) -> int:
    """The version of a complete checkpoint; fails on a half-written or mixed one."""
    seed = TokenMergeConfig.from_pretrained(folder).seed
    assert (folder / "weights.txt").read_text() == str(seed), f"{folder} mixes two saves"
    return seed


def _crash_child(path: Path, step: str) -> int:
    """Run a save in a forked child that dies (os._exit: no cleanup, like a kill) before `step`; its exit status."""
    pid = os.fork()
    if pid == 0:  # the child: only file work, then a hard exit
        try:
            if step != "writing":
                setattr(atomic, step, lambda *args, **kwargs: os._exit(3))
            _save(path, 2, crash_in=step)
        finally:
            os._exit(4)  # reached only if the crash point was never hit
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("step", ["writing", "_stage_complete", "_retire", "_install", "_discard_old"])
def test_a_save_killed_at_any_step_leaves_a_loadable_checkpoint_and_the_next_save_cleans_up(tmp_path, step):
    path = tmp_path / "model"
    _save(path, 1)
    assert _crash_child(path, step) == 3

    found = {}
    if path.is_dir():
        found["path"] = _load(path)
    for old in tmp_path.glob("model.old-*"):
        found["old"] = _load(old / "model")
    # before the new folder is in place the old one is at `path` or `path.old-*/model`; after, the new one is at `path`
    expected = {
        "writing": {"path": 1},
        "_stage_complete": {"path": 1},
        "_retire": {"path": 1},
        "_install": {"old": 1},
        "_discard_old": {"path": 2, "old": 1},
    }[step]
    assert found == expected
    litter = sorted(p.name for p in tmp_path.iterdir() if p.name != "model")
    assert litter and all(name.startswith(("model.tmp-", "model.old-")) for name in litter)

    _save(path, 3)
    assert _load(path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the next save removed every leftover


def test_an_error_while_swapping_puts_the_old_folder_back(tmp_path, monkeypatch):
    path = tmp_path / "model"
    _save(path, 1)

    real_replace = os.replace

    def fail_to_install(source, destination):
        # the rename of the complete staging folder onto the target fails; retiring and restoring still work
        if ".tmp-" in os.fspath(source) and os.fspath(destination) == os.fspath(path):
            raise OSError("disk gone")
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", fail_to_install)
    with pytest.raises(OSError, match="disk gone"):
        _save(path, 2)
    assert _load(path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_users_folder_is_refused_unless_overwrite(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    with pytest.raises(TokenMergeError, match=r"holds 1 entries \(e.g. \['notes.txt'\]\).*overwrite=True"):
        _save(folder, 1)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]

    with atomic_directory(folder, overwrite=True) as staging:
        (staging / "weights.txt").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == [MARKER_NAME, "weights.txt"]
    assert is_library_folder(folder)
    _save(folder, 2)  # now the library's own folder: replaced without asking
    assert _load(folder) == 2


@pytest.mark.parametrize("relative", [".", "..", "../.."])
def test_the_current_directory_and_its_parents_are_refused_and_nothing_is_deleted(tmp_path, monkeypatch, relative):
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    (cwd / "data.txt").write_text("keep")
    monkeypatch.chdir(cwd)
    for overwrite in (False, True):
        with (
            pytest.raises(TokenMergeError, match="current directory or one of its parents"),
            atomic_directory(relative, overwrite=overwrite) as staging,
        ):
            (staging / "weights.txt").write_text("x")
        with pytest.raises(TokenMergeError, match="current directory"):
            TokenMergeConfig(token_id_range=(0, 10), n_clusters=2).save_pretrained(relative)
    assert (cwd / "data.txt").read_text() == "keep"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]
    assert sorted(p.name for p in cwd.iterdir()) == ["data.txt"]


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    for target in (tmp_path / "file", tmp_path / "file" / "model"):
        with pytest.raises(TokenMergeError, match="is a file"):
            check_target(target)
    assert (tmp_path / "file").read_text() == "x"


def test_leftovers_that_are_not_the_librarys_are_kept(tmp_path):
    foreign = tmp_path / "model.tmp-mine"  # matches the name pattern but has no marker
    foreign.mkdir()
    (foreign / "x.txt").write_text("user data")
    _save(tmp_path / "model", 1)
    _save(tmp_path / "model", 2)
    assert (foreign / "x.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.tmp-mine"]


def test_plan_and_config_saves_keep_the_other_files_of_the_folder(tmp_path):
    bundle = build_llama()
    config = TokenMergeConfig(**bundle.selection, n_clusters=bundle.n_centers)
    plan = plan_token_merge(bundle.model, config, tokenizer=bundle.tokenizer, show_progress=False)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    (folder / "sub").mkdir()
    (folder / "sub" / "data.bin").write_bytes(b"\x00\x01")
    plan.save_pretrained(folder)
    config.save_pretrained(folder)
    plan.save_pretrained(folder)  # a second save replaces the plan files, keeps the rest
    assert (folder / "notes.txt").read_text() == "my notes"
    assert (folder / "sub" / "data.bin").read_bytes() == b"\x00\x01"
    assert MergePlan.from_pretrained(folder).statistics == plan.statistics
    assert TokenMergeConfig.from_pretrained(folder) == config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_a_save_inside_a_staging_folder_writes_straight_into_it(tmp_path):
    with atomic_directory(tmp_path / "model") as staging:
        TokenMergeConfig(token_id_range=(0, 10), n_clusters=2).save_pretrained(staging)
        # no second staging folder beside the first: the config went straight into it
        assert sorted(p.name for p in tmp_path.iterdir()) == [staging.name]
        assert (staging / "token_merge_config.json").is_file()
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [MARKER_NAME, "token_merge_config.json"]
