"""`hf-token-merge push`: upload a folder written by `compress` with huggingface_hub's ordinary API."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from hf_token_merge.errors import TokenMergeError

EXAMPLES = """examples:
  hf-token-merge push runs/ref/model --repo-id me/reference-merged --private
  hf-token-merge push runs/ref/model --repo-id me/reference-merged --dry-run --staging-dir runs/upload
"""


def add_parser(subparsers) -> None:
    """Register `push`."""
    parser = subparsers.add_parser(
        "push",
        help="upload a compressed model folder (model, tokenizer, card, merge files) to the Hub",
        description="Create the repository if needed and upload the folder (create_repo + upload_folder).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folder", help="OUTPUT_DIR/model written by hf-token-merge compress")
    parser.add_argument("--repo-id", required=True)
    parser.add_argument("--private", action="store_true", default=None)
    parser.add_argument("--revision", help="branch to upload to (created if missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request")
    parser.add_argument("--commit-message", default="Upload token-merged model (hf_token_merge)")
    parser.add_argument("--dry-run", action="store_true", help="upload nothing; list (and copy) what would go")
    parser.add_argument("--staging-dir", help="with --dry-run: copy the exact upload folder here")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty --staging-dir that hf_token_merge did not write"
    )
    parser.set_defaults(handler=run)


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        reason = str(error).split("\n")[0]
        raise TokenMergeError(
            f"--repo-id {repo_id!r} is not a valid Hub id ({reason}). Fix: pass NAMESPACE/NAME."
        ) from None


def _network_error(error: Exception) -> bool:
    """Whether `error` means the Hub could not be reached: offline mode, or the HTTP client's transport errors."""
    # OfflineModeIsEnabled is a ConnectionError; httpx's TransportError (connect, timeout, DNS) is not an OSError, and
    # the HTTP client huggingface_hub ships varies by version, so it is matched by class name
    return isinstance(error, OSError) or any(cls.__name__ == "TransportError" for cls in type(error).__mro__)


def run(args: argparse.Namespace) -> int:
    """Run `push`."""
    from huggingface_hub.errors import HfHubHTTPError

    from hf_token_merge.atomic import MARKER_NAME, atomic_directory
    from hf_token_merge.hub import push_folder

    _check_repo_id(args.repo_id)
    folder = Path(args.folder)
    if not (folder / "config.json").is_file():
        raise TokenMergeError(f"{folder} holds no config.json. Fix: pass OUTPUT_DIR/model written by compress.")
    if args.dry_run:
        if args.staging_dir:
            with atomic_directory(args.staging_dir, overwrite=args.overwrite) as staging:
                shutil.copytree(folder, staging, dirs_exist_ok=True)
        # every file upload_folder sends, subfolders included (the card's figures/)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        files = [name for name in files if name != MARKER_NAME]
        print(f"dry run: would upload {len(files)} files to {args.repo_id}: {', '.join(files)}")
        return 0
    try:
        url = push_folder(
            folder,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            create_pr=args.create_pr,
            commit_message=args.commit_message,
        )
    except HfHubHTTPError as error:
        reason = " ".join(str(error).split("\n")[0].split())
        raise TokenMergeError(
            f"the Hub refused the push to {args.repo_id} ({reason}). Fix: log in (hf auth login) with write access to "
            "that namespace."
        ) from error
    except Exception as error:
        if not _network_error(error):
            raise
        reason = " ".join(str(error).split()) or type(error).__name__
        raise TokenMergeError(
            f"cannot reach the Hugging Face Hub to push {args.repo_id} ({reason}). Fix: go online (unset "
            "HF_HUB_OFFLINE), then push again; --dry-run checks the folder without the network."
        ) from error
    print(url)
    return 0
