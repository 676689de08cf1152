"""Evaluate original and merged models: WER (Whisper-style ASR and speech-LLMs) and perplexity, with Accelerate.

One code path runs under plain `python` (one process) and under `accelerate launch --num_processes N`
(whole batches sharded over the processes, records gathered back in order); the metrics are identical.

The names below load their module on first use (PEP 562), so `hf_token_merge.evaluation.builtin` (the registry of
built-in sets, from which the CLI builds its parser) imports without the evaluation stack (datasets, jiwer, accelerate).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module of this package that defines it
_MODULE_OF = {
    "BUILTIN_DATASETS": "builtin",
    "TARGET_SAMPLING_RATE": "audio",
    "BuiltinDataset": "builtin",
    "CausalLmAsr": "asr",
    "Comparison": "compare",
    "EncoderDecoderAsr": "asr",
    "ErrorCounts": "text",
    "PerplexityResult": "perplexity",
    "Transcript": "scoring",
    "WerResult": "scoring",
    "bytes_on_disk": "compare",
    "compare_before_after": "compare",
    "corpus_error_counts": "text",
    "decode_audio_value": "audio",
    "error_counts": "text",
    "evaluate_perplexity": "perplexity",
    "evaluate_wer": "wer",
    "generate_text": "asr",
    "load_audiofolder": "data",
    "load_eval_dataset": "data",
    "load_manifest": "data",
    "normalize_transcript": "text",
    "resample": "audio",
    "score_transcripts": "scoring",
    "sequence_nll": "perplexity",
    "transcribe": "asr",
    "unit_prompt_builder": "asr",
    "window_plan": "perplexity",
    "word_error_rate": "text",
}

__all__ = list(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
