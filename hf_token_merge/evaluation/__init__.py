"""Evaluate original and merged models: WER (Whisper-style ASR and speech-LLMs) and perplexity, with Accelerate.

One code path runs under plain `python` (one process) and under `accelerate launch --num_processes N`
(whole batches sharded over the processes, records gathered back in order); the metrics are identical.
"""

from hf_token_merge.evaluation.audio import TARGET_SAMPLING_RATE, decode_audio_value, resample
from hf_token_merge.evaluation.compare import Comparison, bytes_on_disk, compare_before_after
from hf_token_merge.evaluation.data import (
    BUILTIN_DATASETS,
    BuiltinDataset,
    load_audiofolder,
    load_eval_dataset,
    load_manifest,
)
from hf_token_merge.evaluation.perplexity import PerplexityResult, evaluate_perplexity, sequence_nll, window_plan
from hf_token_merge.evaluation.text import (
    ErrorCounts,
    corpus_error_counts,
    error_counts,
    normalize_transcript,
    word_error_rate,
)
from hf_token_merge.evaluation.wer import WerResult, evaluate_wer, generate_text, transcribe, unit_prompt_builder

__all__ = [
    "BUILTIN_DATASETS",
    "TARGET_SAMPLING_RATE",
    "BuiltinDataset",
    "Comparison",
    "ErrorCounts",
    "PerplexityResult",
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
    "sequence_nll",
    "transcribe",
    "unit_prompt_builder",
    "window_plan",
    "word_error_rate",
]
