"""The codec corpus: code sequences of the reference speech codec for every split, with texts, committed.

`recipes/speech_codec/` synthesises 10,200 public-domain KJV sentences (none in an evaluation set) with offline
voices, encodes them with the bundled `SpeechCodec` and commits the codes, so later work (the reference speech-LLM,
TTS evaluation) needs no synthesis. The 12 LibriVox sonnet utterances are encoded the same way (split `librivox`).

Files in `assets/codec_corpus/`: `codes.safetensors` (per split, `<split>.codes` uint16 concatenated and
`<split>.offsets` int64 start offsets with a final end), `metadata.jsonl` (`id`, `split`, `text`, `voice`,
`seconds`, in code order) and `manifest.json` (the codec's SHA-256 and per-split counts).
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
from safetensors.numpy import load_file

from hf_token_merge.errors import TokenMergeError

CODEC_CORPUS_SPLITS = ("train", "dev", "test", "librivox")


def codec_corpus_dir() -> Path:
    """Folder of the committed codec corpus (`assets/codec_corpus`)."""
    return Path(__file__).resolve().parent / "assets" / "codec_corpus"


def load_codec_corpus(split: str = "test", folder: str | Path | None = None) -> datasets.Dataset:
    """One split of the codec corpus as a dataset.

    Args:
        split: "train", "dev", "test" or "librivox".
        folder: Folder of the corpus files; the bundled one by default.

    Returns:
        Columns `id`, `text`, `codes` (list of code ids at the codec's frame rate), `voice`, `seconds`.
    """
    if split not in CODEC_CORPUS_SPLITS:
        raise TokenMergeError(f"Unknown split {split!r}. Fix: choose one of {list(CODEC_CORPUS_SPLITS)}.")
    root = Path(folder) if folder is not None else codec_corpus_dir()
    for name in ("codes.safetensors", "metadata.jsonl"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root / name} is missing; run recipes/speech_codec/encode_corpus.py.")
    tensors = load_file(str(root / "codes.safetensors"))
    if f"{split}.codes" not in tensors:
        raise TokenMergeError(f"{root} holds no {split!r} codes. Fix: encode it with encode_corpus.py.")
    codes, offsets = tensors[f"{split}.codes"].astype(np.int64), tensors[f"{split}.offsets"]
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text(encoding="utf-8").splitlines() if line]
    rows = [row for row in rows if row["split"] == split]
    if len(rows) != len(offsets) - 1:
        raise TokenMergeError(
            f"{root}: {len(rows)} {split!r} rows but {len(offsets) - 1} code sequences. Fix: re-run encode_corpus.py."
        )
    return datasets.Dataset.from_dict(
        {
            "id": [row["id"] for row in rows],
            "text": [row["text"] for row in rows],
            "codes": [codes[offsets[i] : offsets[i + 1]].tolist() for i in range(len(rows))],
            "voice": [row["voice"] for row in rows],
            "seconds": [float(row["seconds"]) for row in rows],
        }
    )
