"""The synthetic KJV speech corpus (2,000 sentences synthesised with Piper) as an evaluation set.

`recipes/reference_model/synthesize.py` builds it into `<cache>/reference_speech_corpus-v1/` (`audio/NNNN.flac`
and `metadata.jsonl` with `id`, `split`, `text`, `seconds`); it needs the dev-only, GPL `piper-tts`, so the
package never builds it itself and CI never needs it. `load_synthetic_corpus(split="test")` reads one split
of a built corpus for `evaluate_wer` (`--eval synthetic` in the CLI).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.reference.audio import audio_dataset
from hf_token_merge.reference.cache import cache_root

# Must match CORPUS_VERSION in recipes/reference_model/common.py.
SYNTHETIC_CORPUS_VERSION = 1
SYNTHETIC_SPLITS = ("train", "validation", "test")


def synthetic_corpus_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the synthetic corpus (`audio/*.flac` + `metadata.jsonl`), built or not.

    Args:
        cache_dir: Cache root; see `cache_root`.

    Returns:
        `<cache>/reference_speech_corpus-v1`.
    """
    return cache_root(cache_dir) / f"reference_speech_corpus-v{SYNTHETIC_CORPUS_VERSION}"


def load_synthetic_corpus(split: str = "test", cache_dir: str | os.PathLike[str] | None = None) -> datasets.Dataset:
    """One split of the built synthetic corpus, in metadata order.

    Args:
        split: "train" (1,800 sentences), "validation" (100) or "test" (100).
        cache_dir: Cache root; see `cache_root`.

    Returns:
        Columns `audio` (undecoded FLAC paths), `text` and `id`, ready for `evaluate_wer`.

    Raises:
        TokenMergeError: On an unknown split, or when the corpus has not been built (the message names the command).
    """
    if split not in SYNTHETIC_SPLITS:
        raise TokenMergeError(f"Unknown split {split!r}. Fix: choose one of {list(SYNTHETIC_SPLITS)}.")
    folder = synthetic_corpus_dir(cache_dir)
    metadata = folder / "metadata.jsonl"
    if not metadata.is_file():
        raise FileNotFoundError(
            f"The synthetic corpus is not built ({metadata} is missing). Fix: pip install piper-tts (dev-only, "
            "GPL) and run python recipes/reference_model/synthesize.py, or evaluate on --eval librivox."
        )
    records = [json.loads(line) for line in metadata.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [
        {"audio": f"audio/{record['id']}.flac", "text": record["text"], "id": record["id"]}
        for record in records
        if record.get("split") == split
    ]
    if not rows:
        raise TokenMergeError(f"{metadata} has no {split!r} rows. Fix: rebuild the corpus with synthesize.py --force.")
    untexted = [row["id"] for row in rows if not isinstance(row["text"], str)]
    if untexted:  # str() would score null as the word "None"
        raise TokenMergeError(
            f"{metadata}: the {split!r} rows with id {untexted[:5]} have no text string. Fix: rebuild the corpus "
            "with python recipes/reference_model/synthesize.py --force."
        )
    missing = [row["audio"] for row in rows if not (folder / row["audio"]).is_file()]
    if missing:
        raise TokenMergeError(
            f"{len(missing)} audio files of the {split!r} split are missing ({folder / missing[0]}, ...). Fix: "
            "rebuild the corpus with python recipes/reference_model/synthesize.py --force."
        )
    return audio_dataset(
        {
            "audio": [str(folder / row["audio"]) for row in rows],
            "text": [row["text"] for row in rows],
            "id": [str(row["id"]) for row in rows],
        }
    )
