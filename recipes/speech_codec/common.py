"""Paths and constants shared by the steps of the speech-codec recipe."""

from __future__ import annotations

import os
import re
from pathlib import Path

from hf_token_merge.reference.cache import cache_root

RECIPE_DIR = Path(__file__).resolve().parent
CORPUS = RECIPE_DIR / "corpus.jsonl"
EXCLUDED_SENTENCES = RECIPE_DIR.parent / "reference_model" / "sentences.txt"
SAMPLING_RATE = 16_000
# Bump when the synthesis changes, so caches built by older code are not reused.
AUDIO_VERSION = 1

# Voices and their share of the corpus (Piper is ~6x slower than flite here, so it gets 20 %). Piper
# (en_US-joe-medium, noise scales 0) at three speaking rates, and the four 16 kHz built-in voices of flite
# (slt: US female; awb: Scottish male; rms: US male; kal16: US male diphone). All are deterministic: the same
# text and voice give the same samples.
VOICES = [
    {"name": "piper-joe-1.00", "engine": "piper", "length_scale": 1.00, "weight": 0.10},
    {"name": "piper-joe-0.90", "engine": "piper", "length_scale": 0.90, "weight": 0.05},
    {"name": "piper-joe-1.10", "engine": "piper", "length_scale": 1.10, "weight": 0.05},
    {"name": "flite-slt", "engine": "flite", "voice": "slt", "weight": 0.20},
    {"name": "flite-awb", "engine": "flite", "voice": "awb", "weight": 0.20},
    {"name": "flite-rms", "engine": "flite", "voice": "rms", "weight": 0.20},
    {"name": "flite-kal16", "engine": "flite", "voice": "kal16", "weight": 0.20},
]


def normalise(text: str) -> str:
    """Lower-case letters and single spaces only: the key under which two texts count as the same sentence."""
    return " ".join(re.sub(r"[^a-z ]+", " ", text.lower()).split())


def audio_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the synthesised corpus audio in the user cache (`<id>.flac`, one per sentence)."""
    return cache_root(cache_dir) / f"codec_corpus_audio-v{AUDIO_VERSION}"


def work_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder for the recipe's intermediate files (log-mel features, checkpoints)."""
    path = cache_root(cache_dir) / f"codec_work-v{AUDIO_VERSION}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def corpus_rows(split: str | None = None) -> list[dict]:
    """Rows of `corpus.jsonl` (`id`, `split`, `text`, `voice`), optionally of one split, in file order."""
    import json

    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row for row in rows if split is None or row["split"] == split]


def load_split_audio(split: str, limit: int | None = None, require_all: bool = True) -> list[dict]:
    """Rows of a split with their synthesised `audio` (float32, 16 kHz); `split="librivox"` gives the sonnets.

    With `require_all=False`, rows whose audio is not synthesised yet are skipped (training on a partial corpus).
    """
    import numpy as np
    import soundfile

    if split == "librivox":
        from hf_token_merge.reference.librivox import decode_audio, load_librivox_sonnets

        data = load_librivox_sonnets()
        rows = [
            {"id": row["id"], "text": row["text"], "voice": "librivox", "audio": decode_audio(row["audio"])}
            for row in data
        ]
        return rows[:limit]
    rows = corpus_rows(split)[:limit]
    folder = audio_dir()
    out = []
    for row in rows:
        path = folder / f"{row['id']}.flac"
        if not path.is_file():
            if require_all:
                raise FileNotFoundError(f"{path} is missing; run synthesize.py first.")
            continue
        out.append(row | {"audio": soundfile.read(path, dtype="float32")[0].astype(np.float32)})
    return out
