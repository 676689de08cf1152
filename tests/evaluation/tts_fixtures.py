"""Stand-ins for the TTS evaluation tests: a word codec with a known confusion, and a mu-law audio codec.

The word codec spells each word of `TEXT_WORDS` as two codes and "decodes" to the code list itself; its "ASR"
maps code pairs back to words and hears "cat" as "mat", so its resynthesis WER is known and non-zero. The mu-law
codec is a real (if crude) audio codec: 256 codes per 16 kHz sample, decoded back to a waveform for Whisper.
"""

from __future__ import annotations

import numpy as np
import torch

from hf_token_merge.evaluation.tts import SpeechCodes
from tests.models import TEXT_WORDS

WORDS = TEXT_WORDS[1:]  # no "<unk>"
CONFUSED = {"cat": "mat"}


def word_codes(text: str) -> list[int]:
    """Two codes per word: 2i and 2i + 1 for word i."""
    return [c for word in text.split() for c in (2 * WORDS.index(word), 2 * WORDS.index(word) + 1)]


def word_decode(codes: SpeechCodes) -> torch.Tensor:
    """The "waveform" of the word codec: the codes themselves."""
    return torch.tensor(codes.codes["codes"])


def word_asr(decoded: list[torch.Tensor]) -> list[str]:
    """Pairs of codes back to words, hearing "cat" as "mat" and an odd pair as "um"."""
    texts = []
    for codes in decoded:
        values = codes.tolist()
        words = []
        for a, b in zip(values[::2], values[1::2], strict=False):
            word = WORDS[a // 2] if b == a + 1 and a % 2 == 0 and a // 2 < len(WORDS) else "um"
            words.append(CONFUSED.get(word, word))
        texts.append(" ".join(words))
    return texts


MU = 255


def mu_law_encode(audio: np.ndarray) -> list[int]:
    """8-bit mu-law codes of a [-1, 1] waveform."""
    x = np.clip(audio, -1, 1)
    y = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    return np.round((y + 1) / 2 * MU).astype(np.int64).tolist()


def mu_law_decode(codes: SpeechCodes) -> np.ndarray:
    """The waveform of mu-law codes (16 kHz)."""
    y = np.asarray(codes.codes["codes"], dtype=np.float64) / MU * 2 - 1
    return (np.sign(y) * ((1 + MU) ** np.abs(y) - 1) / MU).astype(np.float32)
