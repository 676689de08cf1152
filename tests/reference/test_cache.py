"""The cache root and the atomic build of cached assets."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_token_merge.reference.cache import CACHE_ENV_VAR, build_atomically, cache_root


def test_cache_root_prefers_argument_then_environment_then_default(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "from_env"))
    assert cache_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert cache_root() == tmp_path / "from_env"
    monkeypatch.delenv(CACHE_ENV_VAR)
    assert cache_root() == Path("~/.cache/hf_token_merge").expanduser()


def _writer(calls: list[str], content: str):
    def build(folder: Path) -> None:
        calls.append(content)
        (folder / "payload.txt").write_text(content)

    return build


def test_build_happens_once_unless_forced(tmp_path):
    target, calls = tmp_path / "asset", []
    build_atomically(target, _writer(calls, "first"))
    build_atomically(target, _writer(calls, "second"))
    assert calls == ["first"]
    assert (target / "payload.txt").read_text() == "first"

    build_atomically(target, _writer(calls, "third"), force=True)
    assert calls == ["first", "third"]
    assert (target / "payload.txt").read_text() == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asset"]  # no temporary folders left


def test_failed_build_leaves_nothing_behind(tmp_path):
    def broken(folder: Path) -> None:
        (folder / "half.txt").write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_atomically(tmp_path / "asset", broken)
    assert list(tmp_path.iterdir()) == []


def test_failed_forced_rebuild_keeps_the_old_copy(tmp_path):
    target = tmp_path / "asset"
    build_atomically(target, _writer([], "good"))

    def broken(folder: Path) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_atomically(target, broken, force=True)
    assert (target / "payload.txt").read_text() == "good"


def test_a_build_that_lost_the_race_keeps_the_winner(tmp_path):
    target = tmp_path / "asset"

    def racing(folder: Path) -> None:
        # Another process finishes the same asset while this one is still building.
        target.mkdir()
        (target / "payload.txt").write_text("winner")
        (folder / "payload.txt").write_text("loser")

    build_atomically(target, racing)
    assert (target / "payload.txt").read_text() == "winner"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asset"]
