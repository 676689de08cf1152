"""Atomic folder writes: every folder hf_token_merge saves is built beside its target and swapped in.

Linux cannot swap two folders in one step, so a save of `path` runs four steps:

1. write everything into a sibling `path.tmp-XXXX` and fsync it;
2. move the old `path` (if any) into a sibling `path.old-XXXX/` (as `path.old-XXXX/<name>`);
3. rename `path.tmp-XXXX` to `path`;
4. delete `path.old-XXXX`.

A crash (kill, power loss) at any point leaves a complete checkpoint at `path`, or, between steps 2 and 3, the previous
one at `path.old-XXXX/<name>`; never a mix of old and new files. A failure that raises instead of killing the process
is undone at once (the old folder is moved back and the temporary folder removed).

Every folder this module writes holds a marker file, `.hf_token_merge`. That marker is how the library recognises its
own work: a non-empty folder without it is the user's, and replacing it needs `overwrite=True`; `path.tmp-*` and
`path.old-*` siblings with the marker are leftovers of a killed save, and the next save of `path` removes them (the
`tmp` ones before it starts, the `old` ones once the new checkpoint is in place). The current directory and its
parents are never replaced. One process at a time should save to a given `path`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hf_token_merge.errors import TokenMergeError

MARKER_NAME = ".hf_token_merge"
_MARKER_CONTENT = {"written_by": "hf_token_merge", "note": "Folder saved by hf_token_merge; safe for it to replace."}
# Staging folders of saves in progress in this process: a save into one of them (e.g. the plan written into the model
# folder that `stage_folder` is building) writes straight into it instead of staging a second time.
_ACTIVE_STAGING: set[Path] = set()


def is_library_folder(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a folder hf_token_merge wrote (it holds the `.hf_token_merge` marker).

    Args:
        path: A folder.

    Returns:
        True when the marker file is there.
    """
    return (Path(path) / MARKER_NAME).is_file()


def _protected(target: Path) -> bool:
    """Whether replacing `target` would remove the current directory or one of its parents."""
    cwd = Path(os.getcwd())
    for here, there in ((cwd, target), (cwd.resolve(), target.resolve())):
        if here == there or there in here.parents:
            return True
    return False


def check_target(path: str | os.PathLike[str], *, overwrite: bool = False, keep_existing: bool = False) -> Path:
    """Refuse a save target before any work is done.

    Args:
        path: The folder a save would write.
        overwrite: Allow replacing a non-empty folder that hf_token_merge did not write.
        keep_existing: The save adds files to the folder and keeps the others (no folder content is lost).

    Returns:
        The absolute target path.

    Raises:
        TokenMergeError: When `path` is the current directory or one of its parents, is a file (or lies under one),
            or is a non-empty folder without the `.hf_token_merge` marker and neither `overwrite` nor
            `keep_existing` is set.
    """
    target = Path(os.path.abspath(os.fspath(path)))
    if _protected(target):
        raise TokenMergeError(
            f"Refusing to save into {os.fspath(path)!r}: it is the current directory or one of its parents, which a "
            "save replaces as a whole. Fix: pass a new subfolder, e.g. 'merged-model'."
        )
    for folder in (target, *target.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                raise TokenMergeError(
                    f"Cannot save into {target}: {folder} is a file. Fix: pass a folder path, or move the file away."
                )
            break
    if keep_existing or overwrite or not target.is_dir() or is_library_folder(target):
        return target
    entries = sorted(entry.name for entry in target.iterdir())
    if entries:
        raise TokenMergeError(
            f"{target} holds {len(entries)} entries (e.g. {entries[:3]}) and was not written by hf_token_merge (no "
            f"{MARKER_NAME} marker); saving there would delete them. Fix: pass a new or empty folder, or "
            "overwrite=True (--overwrite on the command line) to replace it."
        )
    return target


def _leftovers(target: Path, kind: str) -> list[Path]:
    """`target.<kind>-*` siblings that a save of `target` made (they hold the marker)."""
    pattern = re.compile(rf"{re.escape(target.name)}\.{kind}-[A-Za-z0-9_]+")
    if not target.parent.is_dir():
        return []
    return [
        entry
        for entry in target.parent.iterdir()
        if pattern.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink() and is_library_folder(entry)
    ]


def _write_marker(folder: Path) -> None:
    (folder / MARKER_NAME).write_text(json.dumps(_MARKER_CONTENT) + "\n", encoding="utf-8")


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _link_or_copy(source: str, destination: str) -> None:
    # A hard link keeps a big file without copying it; the old folder's name for it is removed in step 4.
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _keep_existing(target: Path, staging: Path) -> None:
    """Carry every entry of `target` that the save did not write over into `staging`."""
    for entry in target.iterdir():
        destination = staging / entry.name
        if destination.exists() or destination.is_symlink():
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), destination)
        elif entry.is_dir():
            shutil.copytree(entry, destination, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(os.fspath(entry), os.fspath(destination))
    shutil.copymode(target, staging)


# The four steps are module functions so that tests can simulate a crash before each of them.
def _stage_complete(staging: Path) -> None:
    """Step 1 (end): flush every file and folder of the staging folder to disk."""
    for root, folders, files in os.walk(staging):
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                _fsync_path(Path(root, name))
        for name in folders:
            _fsync_path(Path(root, name))
    _fsync_path(staging)


def _retire(target: Path) -> Path | None:
    """Step 2: move the current `target` into a marked `target.old-*` folder; None when there is none."""
    if not (target.exists() or target.is_symlink()):
        return None
    trash = Path(tempfile.mkdtemp(prefix=f"{target.name}.old-", dir=target.parent))
    _write_marker(trash)
    os.replace(target, trash / target.name)
    _fsync_path(target.parent)
    return trash


def _install(staging: Path, target: Path) -> None:
    """Step 3: rename the complete staging folder to `target`."""
    os.replace(staging, target)
    _fsync_path(target.parent)


def _discard_old(target: Path) -> None:
    """Step 4: delete this save's `target.old-*` folder and any a killed save left behind."""
    for leftover in _leftovers(target, "old"):
        shutil.rmtree(leftover, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_directory(
    path: str | os.PathLike[str], *, overwrite: bool = False, keep_existing: bool = False
) -> Iterator[Path]:
    """Save a folder atomically: yield an empty staging folder, then swap it in for `path` (see the module doc).

    Every save path of the library goes through here (`export_plain`, `stage_folder` and so `compress` and push
    staging, `MergePlan.save_pretrained`, the configs' `save_pretrained`). A save into a folder that is itself being
    staged writes straight into it.

        with atomic_directory("runs/merged") as folder:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)

    Args:
        path: The folder to write.
        overwrite: Replace `path` even when it is a non-empty folder hf_token_merge did not write.
        keep_existing: Keep the entries of an existing `path` that the save does not write (hard links, not copies),
            for saves that add files beside others (a plan or config saved into a model folder).

    Yields:
        The staging folder to write into; it holds the `.hf_token_merge` marker.

    Raises:
        TokenMergeError: From `check_target`, before anything is written.
    """
    target = Path(os.path.abspath(os.fspath(path)))
    if any(target == active or active in target.parents for active in _ACTIVE_STAGING):
        target.mkdir(parents=True, exist_ok=True)
        yield target
        return
    check_target(target, overwrite=overwrite, keep_existing=keep_existing)
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in _leftovers(target, "tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; a saved checkpoint gets the usual mode
    _write_marker(staging)
    _ACTIVE_STAGING.add(staging)
    try:
        yield staging
        if keep_existing and target.is_dir():
            _keep_existing(target, staging)
        _write_marker(staging)  # the writer may have cleared the folder
        _stage_complete(staging)
        trash = _retire(target)
        try:
            _install(staging, target)
        except BaseException:
            if trash is not None:  # put the old checkpoint back where it was
                os.replace(trash / target.name, target)
                shutil.rmtree(trash, ignore_errors=True)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        _ACTIVE_STAGING.discard(staging)
    _discard_old(target)
