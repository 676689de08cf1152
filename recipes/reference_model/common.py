"""Paths and constants shared by the steps of the reference-model recipe."""

from __future__ import annotations

import os
from pathlib import Path

from hf_token_merge.reference.cache import cache_root

RECIPE_DIR = Path(__file__).resolve().parent
SENTENCES = RECIPE_DIR / "sentences.txt"
SAMPLING_RATE = 16_000
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.90, 0.05, 0.05)  # train / validation / test
# Bump when the synthesis changes, so caches built by older code are not reused.
CORPUS_VERSION = 1


def corpus_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the synthetic corpus in the user cache (`audio/*.flac` + `metadata.jsonl`)."""
    return cache_root(cache_dir) / f"reference_speech_corpus-v{CORPUS_VERSION}"


def work_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder for the recipe's intermediate files (features, units, training checkpoints)."""
    path = cache_root(cache_dir) / f"reference_speech_llm_work-v{CORPUS_VERSION}"
    path.mkdir(parents=True, exist_ok=True)
    return path
