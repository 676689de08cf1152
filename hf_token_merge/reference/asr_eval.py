"""Transcribe speech with a Whisper model and score it by word error rate (WER).

Scoring follows Whisper's own evaluation: both sides go through `EnglishTextNormalizer` (lower case,
no punctuation, number words and digits alike, so the heading "Two." matches a transcript "2."),
then jiwer computes the corpus WER. The normaliser's British-to-American spelling table is a Hub
download, so it is left empty here. Note that it expands Early-Modern endings like other
contractions ("feed'st" -> "feed saint", "tatter'd" -> "tatter would"); both sides get the same
treatment, but such a word costs two errors when misrecognised.
"""

from __future__ import annotations

from collections.abc import Sequence

import jiwer
import numpy as np
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

_NORMALIZER = EnglishTextNormalizer(english_spelling_mapping={})


def normalize_transcript(text: str) -> str:
    """Normalise a transcript for WER, as Whisper's evaluation does (minus the spelling table).

    Args:
        text: Raw reference or hypothesis.

    Returns:
        Lower-case words separated by single spaces, punctuation removed, numbers normalised.
    """
    return _NORMALIZER(text)


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus word error rate of normalised transcripts.

    Args:
        references: Correct transcripts.
        hypotheses: Recognised transcripts, same order.

    Returns:
        (substitutions + deletions + insertions) / reference words, over the whole corpus.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"Got {len(references)} references but {len(hypotheses)} hypotheses.")
    return jiwer.wer(
        [normalize_transcript(text) for text in references],
        [normalize_transcript(text) for text in hypotheses],
    )


@torch.inference_mode()
def transcribe(
    model: WhisperForConditionalGeneration,
    processor: WhisperProcessor,
    audios: Sequence[np.ndarray],
    sampling_rate: int = 16_000,
    batch_size: int = 16,
) -> list[str]:
    """Transcribe utterances of at most 30 s with greedy decoding.

    Args:
        model: A Whisper model; its `generation_config` picks the start tokens and suppression.
        processor: The matching processor (log-mel features, tokenizer).
        audios: Mono float waveforms.
        sampling_rate: Their sampling rate (Whisper needs 16 kHz).
        batch_size: Utterances per `generate` call.

    Returns:
        One transcript per utterance, special tokens removed.
    """
    texts: list[str] = []
    for start in range(0, len(audios), batch_size):
        batch = list(audios[start : start + batch_size])
        features = processor.feature_extractor(
            batch, sampling_rate=sampling_rate, return_tensors="pt", return_attention_mask=True
        )
        input_features = features.input_features.to(device=model.device, dtype=model.dtype)
        # The mask only marks padded audio frames; passing it keeps generate() from guessing one.
        mask = features.attention_mask.to(model.device)
        token_ids = model.generate(input_features, attention_mask=mask, num_beams=1, do_sample=False)
        texts.extend(text.strip() for text in processor.batch_decode(token_ids, skip_special_tokens=True))
    return texts
