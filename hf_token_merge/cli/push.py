"""`hf-token-merge push`: upload a folder written by `compress` with huggingface_hub's ordinary API."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

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
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run `push`."""
    from hf_token_merge.hub import push_folder

    folder = Path(args.folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} holds no config.json. Fix: pass OUTPUT_DIR/model written by compress.")
    if args.dry_run:
        files = sorted(p.name for p in folder.iterdir())
        if args.staging_dir:
            shutil.copytree(folder, args.staging_dir, dirs_exist_ok=True)
        print(f"dry run: would upload {len(files)} files to {args.repo_id}: {', '.join(files)}")
        return 0
    url = push_folder(
        folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
        commit_message=args.commit_message,
    )
    print(url)
    return 0
