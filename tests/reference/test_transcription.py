"""Whisper tiny.en on real speech: WER on the LibriVox sonnets, and parity with CTranslate2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_token_merge.evaluation import normalize_transcript, transcribe, word_error_rate
from hf_token_merge.reference.librivox import decode_audio
from hf_token_merge.reference.whisper import NO_TIMESTAMPS_ID, START_OF_TRANSCRIPT_ID, bundled_ctranslate2_dir

# Measured (transformers 5.24, torch 2.13 CPU, float32, greedy, all 12 utterances): corpus WER 0.098,
# i.e. 25 substitutions + 8 deletions + 2 insertions in 357 normalised words; per utterance 0.03-0.22.
# Errors are mostly Early-Modern forms and homophones ("riper" -> "writer", "heir" -> "air",
# "Look in thy glass" -> "Looking like last"). The bound leaves room for CPU/BLAS rounding differences.
WER_BOUND = 0.14


@pytest.fixture(scope="module")
def audios(librivox) -> list[np.ndarray]:
    return [decode_audio(audio) for audio in librivox["audio"]]


@pytest.fixture(scope="module")
def transcripts(whisper, audios) -> list[str]:
    model, processor = whisper
    return transcribe(model, processor, audios, batch_size=len(audios))


def test_normaliser_matches_spoken_numbers_and_drops_punctuation():
    spoken, recognised = "Two. When forty winters,", "2. When 40 Winters"
    assert normalize_transcript(spoken) == normalize_transcript(recognised) == "2 when 40 winters"
    assert word_error_rate(["a b c d"], ["a x c"]) == pytest.approx(0.5)


def test_whisper_tiny_en_wer_on_librivox_sonnets(librivox, transcripts):
    wer = word_error_rate(librivox["text"], transcripts)
    assert wer < WER_BOUND, list(zip(librivox["text"], transcripts, strict=True))
    # Every utterance is recognised as its own lines: the cuts did not move text between utterances.
    for reference, hypothesis in zip(librivox["text"], transcripts, strict=True):
        assert word_error_rate([reference], [hypothesis]) < 0.35, (reference, hypothesis)


def test_parity_with_ctranslate2(whisper, audios, transcripts):
    """Same log-mel features into CTranslate2 (the source model) and into the converted model."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    model, processor = whisper
    features = processor.feature_extractor(audios, sampling_rate=16000, return_tensors="np").input_features
    features = np.ascontiguousarray(features, dtype=np.float32)
    source = str(bundled_ctranslate2_dir())
    reference = ctranslate2.models.Whisper(source, device="cpu", compute_type="float32")
    storage = ctranslate2.StorageView.from_array(features)

    with torch.inference_mode():
        encoded = model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    encoded_ct2 = np.array(reference.encode(storage, to_cpu=True))
    assert np.linalg.norm(encoded - encoded_ct2) / np.linalg.norm(encoded_ct2) < 1e-4  # measured 2.6e-6

    # Greedy decoding in CTranslate2 from the same prompt must give the same words as transformers.
    prompt = [[START_OF_TRANSCRIPT_ID, NO_TIMESTAMPS_ID]] * len(audios)
    results = reference.generate(storage, prompt, beam_size=1)
    decode = processor.tokenizer.decode
    ct2_texts = [decode(result.sequences_ids[0], skip_special_tokens=True).strip() for result in results]
    assert ct2_texts == transcripts  # measured: 12 of 12 identical (token sequences identical too)
