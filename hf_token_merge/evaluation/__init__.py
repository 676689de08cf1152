"""Evaluate original and merged models: WER (Whisper-style ASR and speech-LLMs) and perplexity, with Accelerate.

One code path runs under plain `python` (one process) and under `accelerate launch --num_processes N`
(whole batches sharded over the processes, records gathered back in order); the metrics are identical.
"""

from hf_token_merge.evaluation.asr import CausalLmAsr, EncoderDecoderAsr
from hf_token_merge.evaluation.audio import TARGET_SAMPLING_RATE, decode_audio_value, resample
from hf_token_merge.evaluation.compare import Comparison, bytes_on_disk, compare_before_after
from hf_token_merge.evaluation.data import load_audiofolder, load_eval_dataset, load_manifest
from hf_token_merge.evaluation.perplexity import PerplexityResult, evaluate_perplexity, sequence_nll, window_plan
from hf_token_merge.evaluation.scoring import Transcript, score_transcripts
from hf_token_merge.evaluation.text import (
    ErrorCounts,
    corpus_error_counts,
    error_counts,
    normalize_transcript,
    word_error_rate,
)
from hf_token_merge.evaluation.wer import WerResult, evaluate_wer, generate_text, transcribe, unit_prompt_builder

__all__ = [
    "TARGET_SAMPLING_RATE",
    "CausalLmAsr",
    "Comparison",
    "EncoderDecoderAsr",
    "ErrorCounts",
    "PerplexityResult",
    "Transcript",
    "WerResult",
    "bytes_on_disk",
    "compare_before_after",
    "corpus_error_counts",
    "decode_audio_value",
    "error_counts",
    "evaluate_perplexity",
    "evaluate_wer",
    "generate_text",
    "load_audiofolder",
    "load_eval_dataset",
    "load_manifest",
    "normalize_transcript",
    "resample",
    "score_transcripts",
    "sequence_nll",
    "transcribe",
    "unit_prompt_builder",
    "window_plan",
    "word_error_rate",
]
