"""Transcribe speech with a Whisper model and score it by word error rate (WER).

The implementation lives in `hf_token_merge.evaluation` (shared with the evaluator); this module keeps
the reference API: `transcribe`, `normalize_transcript` (Whisper's `EnglishTextNormalizer`, spelling table
empty) and `word_error_rate` (corpus WER from summed jiwer counts).
"""

from hf_token_merge.evaluation.text import normalize_transcript, word_error_rate
from hf_token_merge.evaluation.wer import transcribe

__all__ = ["normalize_transcript", "transcribe", "word_error_rate"]
