"""The reference tests call Whisper tiny.en `whisper`; it is the session fixture of tests/conftest.py."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def whisper(whisper_tiny_en):
    """Whisper tiny.en and its processor, converted once per session into a temporary cache."""
    return whisper_tiny_en
