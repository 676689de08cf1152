"""The user cache that holds built reference assets, written atomically.

An asset is a folder under the cache root. It is built through the library's one atomic folder write
(`hf_token_merge.atomic.atomic_directory`), so a reader sees either no folder or a complete one,
never a half-written one; the next build removes what an interrupted one left behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from hf_token_merge.atomic import atomic_directory

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


class _AlreadyBuilt(Exception):
    """Another process finished the same asset while this one was building."""


def build_atomically(target: Path, build: Callable[[Path], None], force: bool = False) -> Path:
    """Build the folder `target` once, through `atomic_directory`.

    Args:
        target: Final folder of the asset.
        build: Writes the asset's files into the (empty, existing) folder it is given.
        force: Rebuild even if `target` already exists; the old folder is replaced.

    Returns:
        `target`, complete.
    """
    if target.is_dir() and not force:
        return target
    try:
        # the cache root belongs to the library, so an asset folder (even one built before the marker) is replaced
        with atomic_directory(target, overwrite=True) as folder:
            build(folder)
            if target.is_dir() and not force:
                raise _AlreadyBuilt  # keep the copy that was finished first; drop this one
    except _AlreadyBuilt:
        pass
    return target
