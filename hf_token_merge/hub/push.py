"""`push_to_hub`: upload a merged model, its tokenizer, card and merge files with huggingface_hub's ordinary API."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard

from hf_token_merge.atomic import MARKER_NAME, atomic_directory
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.remap.plan import MergePlan


def stage_folder(
    folder: str | os.PathLike[str],
    model: Any,
    *,
    tokenizer: Any = None,
    card: ModelCard | None = None,
    plan: MergePlan | None = None,
    overwrite: bool = False,
) -> Path:
    """Write exactly what would be uploaded: model, tokenizer, README.md card, merge config and plan.

    The folder is written with `atomic_directory`: built beside `folder` and swapped in, so an earlier staging stays
    complete until the new one is.

    Args:
        folder: The folder to write.
        model: The merged model.
        tokenizer: Saved beside the model when given.
        card: Written as README.md when given.
        plan: The applied plan; its config and tensors are saved beside the model.
        overwrite: Replace `folder` even when it is a non-empty folder hf_token_merge did not write.

    Returns:
        The folder.
    """
    with atomic_directory(folder, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        if plan is not None:
            plan.config.save_pretrained(staging)
            plan.save_pretrained(staging)
        if card is not None:
            card.save(staging / "README.md")
    return Path(folder)


def push_to_hub(
    model: Any,
    repo_id: str,
    *,
    tokenizer: Any = None,
    card: ModelCard | None = None,
    plan: MergePlan | None = None,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str = "Upload token-merged model (hf_token_merge)",
    token: str | None = None,
    staging_dir: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
) -> str:
    """Upload a merged model to the Hub (`create_repo` + `upload_folder`).

    Args:
        model: The merged model.
        repo_id: Target repository, e.g. "me/llasa-1b-merged".
        tokenizer: Uploaded beside the model when given.
        card: The model card (see `build_model_card`), written as README.md.
        plan: The applied plan; its config and tensors are uploaded for reproducibility.
        private: Create the repository as private.
        revision: Branch to upload to (created if missing).
        create_pr: Open a pull request instead of committing to the branch.
        commit_message: Commit message.
        token: Hub token; defaults to the logged-in one.
        staging_dir: Where to write the upload folder; kept afterwards. Default: a temporary folder.
        dry_run: Only write the staging folder (`staging_dir` is then required) and upload nothing.
        overwrite: Replace `staging_dir` even when it is a non-empty folder hf_token_merge did not write.

    Returns:
        The staging folder on a dry run, else the URL of the commit (or pull request).
    """
    if dry_run and staging_dir is None:
        raise TokenMergeError("dry_run writes the folder that would be uploaded. Fix: pass staging_dir=... .")
    if staging_dir is not None:
        folder = stage_folder(staging_dir, model, tokenizer=tokenizer, card=card, plan=plan, overwrite=overwrite)
        if dry_run:
            return str(folder)
        return _upload(folder, repo_id, private, revision, create_pr, commit_message, token)
    with tempfile.TemporaryDirectory(prefix="hf_token_merge_push_") as temporary:
        folder = stage_folder(Path(temporary) / "upload", model, tokenizer=tokenizer, card=card, plan=plan)
        return _upload(folder, repo_id, private, revision, create_pr, commit_message, token)


def push_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str = "Upload token-merged model (hf_token_merge)",
    token: str | None = None,
) -> str:
    """Upload a folder written by `stage_folder` (or `hf-token-merge compress`) as it is.

    Returns:
        The URL of the commit (or pull request).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise TokenMergeError(f"{folder} holds no config.json. Fix: pass the model folder written by compress.")
    return _upload(folder, repo_id, private, revision, create_pr, commit_message, token)


def _upload(folder: Path, repo_id, private, revision, create_pr, commit_message, token) -> str:
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision is not None and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message,
        ignore_patterns=[MARKER_NAME],  # the marker is for local saves; the repository does not need it
    )
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or info)
