"""The user cache that holds built reference assets, written atomically.

An asset is a folder under the cache root. It is built into a temporary sibling folder and moved into
place with `os.replace`, so a reader sees either no folder or a complete one, never a half-written one
(an interrupted build leaves only a `.tmp-*` folder behind, which the next build ignores).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

CACHE_ENV_VAR = "HF_TOKEN_MERGE_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/hf_token_merge")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder that holds all cached assets.

    Args:
        cache_dir: Explicit folder; wins over the environment.

    Returns:
        `cache_dir`, else `$HF_TOKEN_MERGE_CACHE`, else `~/.cache/hf_token_merge` (not created here).
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get(CACHE_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    return DEFAULT_CACHE_DIR.expanduser()


def build_atomically(target: Path, build: Callable[[Path], None], force: bool = False) -> Path:
    """Build the folder `target` once, through a temporary folder and `os.replace`.

    Args:
        target: Final folder of the asset.
        build: Writes the asset's files into the (empty, existing) folder it is given.
        force: Rebuild even if `target` already exists; the old folder is replaced.

    Returns:
        `target`, complete.
    """
    if target.is_dir() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temporary folder sits beside the target so that os.replace stays a rename on one filesystem.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    # mkdtemp makes the folder private (0o700); the finished asset should get the usual permissions.
    os.chmod(tmp, 0o777 & ~_current_umask())
    try:
        build(tmp)
        _move_into_place(tmp, target, force=force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _current_umask() -> int:
    """Return the process umask (reading it requires setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _move_into_place(tmp: Path, target: Path, force: bool) -> None:
    """Rename `tmp` to `target`; an existing `target` is kept unless `force`."""
    try:
        os.replace(tmp, target)
        return
    except OSError:
        # os.replace cannot replace a non-empty folder: either another process finished the same
        # build first (fine, keep its copy) or we are forcing a rebuild over an old copy.
        if not target.is_dir():
            raise
        if not force:
            return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
