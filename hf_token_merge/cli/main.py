"""Entry point of the `hf-token-merge` console script."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from hf_token_merge import __version__


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser.

    Returns:
        The parser; subcommands are added as the library grows.
    """
    parser = argparse.ArgumentParser(
        prog="hf-token-merge",
        description="Merge near-duplicate speech-token rows of Hugging Face speech-LLMs through an index remap.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name; `None` reads `sys.argv`.

    Returns:
        The process exit status.
    """
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
