"""The reference speech codec in the TTS evaluation: its adapter, its decoder, and the oracle = resynthesis route.

The reference codec (`hf_token_merge.reference.speech_codec`) decodes codes to Whisper's log-mel, so Whisper reads
its output with no vocoder. Its *resynthesis WER* (`recipes/speech_codec/evaluate_codec.py`: encode, decode,
transcribe) and the *oracle TTS WER* (`evaluate_tts_wer` with `OracleSpeechModel`, which "generates" the committed
codes) run through one implementation: `codec_features` turns code sequences into one Whisper input,
`whisper_asr(features=True)` transcribes batches of inputs, and `text.error_counts` (with Whisper's spelling map)
scores them. With the same utterances, one utterance per Whisper input and the same batch size, the two give the
same transcripts and the same counts (`tests/evaluation/test_tts_reference_codec.py` checks it).

The built-in route `hf-token-merge evaluate --task tts-wer --model reference-codec-oracle` runs the oracle on a split
of the committed codec corpus (`hf_token_merge.reference.codec_corpus`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from hf_token_merge.evaluation.text import ErrorCounts, error_counts
from hf_token_merge.evaluation.tts.adapters import SpeechCodes, UnitAdapter

END_TOKEN = "<|eos|>"


def codec_features(codec, codes: Sequence[Sequence[int]], gap_frames: int = 50) -> torch.Tensor:
    """One Whisper input (80, 3000) of one or more consecutive code sequences, each decoded on its own.

    Args:
        codec: A `SpeechCodec`.
        codes: Code sequences; several are joined with `gap_frames` of silence (`SpeechCodec.pack_for_whisper`).
        gap_frames: Silent log-mel frames between sequences (50 = 0.5 s).

    Returns:
        Whisper's input features, padded as Whisper pads silence.
    """
    return codec.pack_for_whisper([codec.decode(sequence) for sequence in codes], gap_frames)


def codec_whisper_decoder(codec) -> Callable[[SpeechCodes], torch.Tensor]:
    """The `decode` callable of `evaluate_tts_wer` for the reference codec: codes → Whisper input features.

    Args:
        codec: A `SpeechCodec` (e.g. `load_reference_speech_codec()`).

    Returns:
        `decode(SpeechCodes) -> (80, 3000)` features, for `whisper_asr(features=True)`.
    """

    def decode_reference_codec(codes: SpeechCodes) -> torch.Tensor:
        return codec_features(codec, [codes.codes["codes"]])

    return decode_reference_codec


def reference_codec_adapter(codec, tokenizer: Any = None) -> UnitAdapter:
    """The adapter between `<|s_N|>` ids and the reference codec's codes (`<|eos|>` ends the speech).

    Args:
        codec: The `SpeechCodec` (its codebook size and frame rate).
        tokenizer: A tokenizer with `<|s_0|>` .. `<|s_{K-1}|>` and `<|eos|>`; default: the reference speech-LLM's
            tokenizer layout built with the codec's K codes (`build_speech_llm_tokenizer`).

    Returns:
        A `UnitAdapter` at the codec's frame rate.
    """
    if tokenizer is None:
        from hf_token_merge.reference.speech_llm import build_speech_llm_tokenizer

        tokenizer = build_speech_llm_tokenizer(codec.codebook_size)
    return UnitAdapter(tokenizer, codec.codebook_size, end_tokens=[END_TOKEN], frame_rate=codec.frame_rate)


def windows_of(seconds: Sequence[float], max_seconds: float, gap_seconds: float) -> list[list[int]]:
    """Pack consecutive utterances into windows of at most `max_seconds` (gaps included); one per window if 0.

    Args:
        seconds: Length of each utterance.
        max_seconds: Longest window (Whisper reads 30 s); 0 puts every utterance in a window of its own.
        gap_seconds: Silence between packed utterances.

    Returns:
        The utterance indices of each window, in order.
    """
    out: list[list[int]] = []
    length = 0.0
    for index, duration in enumerate(seconds):
        if out and max_seconds > 0 and length + gap_seconds + duration <= max_seconds:
            out[-1].append(index)
            length += gap_seconds + duration
        else:
            out.append([index])
            length = duration
    return out


def resynthesis_transcripts(
    codec,
    codes: Sequence[Sequence[int]],
    asr: Callable[[list[torch.Tensor]], list[str]],
    *,
    windows: Sequence[Sequence[int]] | None = None,
    gap_frames: int = 50,
    batch_size: int = 8,
) -> list[str]:
    """Transcripts of the codec's decoding of code sequences: one per utterance, or one per window.

    Args:
        codec: A `SpeechCodec`.
        codes: One code sequence per utterance.
        asr: `list of features -> transcripts`, e.g. `whisper_asr(model, processor, features=True)`.
        windows: Utterance indices packed into one Whisper input each (`windows_of`); None: one per utterance.
        gap_frames: Silent frames between packed utterances.
        batch_size: Inputs per `asr` call; the same as `evaluate_tts_wer(batch_size=...)` gives the same batches.

    Returns:
        One transcript per window (per utterance without `windows`).
    """
    windows = [[i] for i in range(len(codes))] if windows is None else windows
    transcripts: list[str] = []
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        transcripts.extend(asr([codec_features(codec, [codes[i] for i in window], gap_frames) for window in batch]))
    return transcripts


def score(targets: Sequence[str], transcripts: Sequence[str], asr: Any = None) -> ErrorCounts:
    """Corpus counts of transcripts, scored as `evaluate_tts_wer` scores them (normaliser + the ASR's spelling map).

    Args:
        targets: Target (ground-truth) texts.
        transcripts: Transcripts, same order.
        asr: The ASR callable (its `spelling` map is used; `whisper_asr` sets it).

    Returns:
        The summed `ErrorCounts`.
    """
    spelling = getattr(asr, "spelling", None)
    total = ErrorCounts()
    for target, transcript in zip(targets, transcripts, strict=True):
        total = total + error_counts(target, transcript, True, spelling)
    return total


def load_oracle_data(split: str = "test", limit: int | None = None, ids: Sequence[str] | None = None):
    """A split of the committed codec corpus, as the oracle reads it (`id`, `text`, `codes`, ...).

    Args:
        split: "train", "dev", "test" or "librivox".
        limit: Keep the first N utterances.
        ids: Keep these utterance ids, in this order (after `limit`).

    Returns:
        A `datasets.Dataset`.
    """
    from hf_token_merge.errors import TokenMergeError
    from hf_token_merge.reference.codec_corpus import load_codec_corpus

    data = load_codec_corpus(split)
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    if ids is not None:
        position = {name: i for i, name in enumerate(data["id"])}
        missing = [name for name in ids if name not in position]
        if missing:
            raise TokenMergeError(f"The {split!r} codec corpus has no utterance {missing[0]!r}. Fix: pass its ids.")
        data = data.select([position[name] for name in ids])
    return data


def evaluate_reference_codec_oracle(
    data=None,
    *,
    split: str = "test",
    limit: int | None = None,
    codec=None,
    asr: Callable[[list[torch.Tensor]], list[str]] | None = None,
    **kwargs: Any,
):
    """The oracle TTS WER of the reference codec: its resynthesis WER through the whole TTS evaluation path.

    Args:
        data: Rows with `text` and `codes` of this codec; default: a split of the committed codec corpus.
        split: The corpus split (without `data`).
        limit: Its first N utterances (without `data`).
        codec: The `SpeechCodec`; default `load_reference_speech_codec()`.
        asr: Default `whisper_asr(features=True)` (Whisper tiny.en on the decoded log-mel).
        **kwargs: Further `evaluate_tts_wer` arguments (`batch_size`, `accelerator`, `output_dir`, ...).

    Returns:
        A `TtsWerResult`.
    """
    from hf_token_merge.evaluation.tts.evaluate import OracleSpeechModel, evaluate_tts_wer, whisper_asr

    if codec is None:
        from hf_token_merge.reference.speech_codec import load_reference_speech_codec

        codec = load_reference_speech_codec()
    data = load_oracle_data(split, limit) if data is None else data
    asr = asr if asr is not None else whisper_asr(features=True)
    adapter = reference_codec_adapter(codec)
    decode = codec_whisper_decoder(codec)
    return evaluate_tts_wer(OracleSpeechModel(), data, adapter=adapter, decode=decode, asr=asr, **kwargs)
