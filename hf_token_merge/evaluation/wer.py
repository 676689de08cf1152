"""Word error rate of encoder-decoder ASR models (Whisper) and of speech-LLMs that turn speech-unit prompts into text.

`evaluate_wer` checks its inputs, picks the front end of the model's kind (`asr.EncoderDecoderAsr` or
`asr.CausalLmAsr`) and hands it to the shared scoring core (`scoring.score_transcripts`: sharding over processes,
Whisper's English normaliser, jiwer alignment, summed counts, the report). The front ends and the result type are
re-exported here, where they lived before the split.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.asr import (
    CausalLmAsr,
    EncoderDecoderAsr,
    PromptBuilder,
    check_num_beams,
    generate_text,
    transcribe,
    unit_prompt_builder,
)
from hf_token_merge.evaluation.data import check_columns, undecoded_audio
from hf_token_merge.evaluation.runner import get_accelerator, prepare_model
from hf_token_merge.evaluation.scoring import WerResult, score_transcripts
from hf_token_merge.evaluation.text import spelling_map_of

__all__ = [
    "PromptBuilder",
    "WerResult",
    "evaluate_wer",
    "generate_text",
    "model_kind",
    "transcribe",
    "unit_prompt_builder",
]


def model_kind(model) -> str:
    """`"encoder-decoder"` or `"causal-lm"` (from the config)."""
    return "encoder-decoder" if getattr(model.config, "is_encoder_decoder", False) else "causal-lm"


def required_columns(
    model, processor, tokenizer, prompt_builder: PromptBuilder | None, audio_column: str, text_column: str
) -> list[str]:
    """The columns `evaluate_wer` needs for this model, after checking that its kind got the right helpers.

    Raises:
        TokenMergeError: When an encoder-decoder lacks its processor or got a prompt builder, or a causal LM lacks its
            prompt builder or tokenizer (each message names the fix).
    """
    if model_kind(model) == "encoder-decoder":
        if processor is None or not hasattr(processor, "feature_extractor"):
            raise TokenMergeError(
                f"evaluate_wer on the encoder-decoder {type(model).__name__} needs its processor (feature extractor "
                "+ tokenizer). Fix: pass processor=AutoProcessor.from_pretrained(...)."
            )
        if prompt_builder is not None:
            raise TokenMergeError(
                "prompt_builder is for causal speech-LLMs; an encoder-decoder reads audio. Fix: drop it."
            )
        return [audio_column, text_column]
    if prompt_builder is None:
        raise TokenMergeError(
            f"evaluate_wer got the causal LM {type(model).__name__} but no prompt_builder, so it cannot know how "
            "to turn an example into a speech prompt. Fix: pass prompt_builder=unit_prompt_builder(tokenizer, "
            "prefix=[...], suffix=[...]) or your own callable example -> prompt ids (or evaluate an "
            "encoder-decoder ASR model such as Whisper)."
        )
    if tokenizer is None:
        raise TokenMergeError("evaluate_wer on a speech-LLM needs its tokenizer to decode text. Fix: pass tokenizer=.")
    return [text_column] + ([prompt_builder.units_column] if hasattr(prompt_builder, "units_column") else [])


def check_targets(dataset, text_column: str) -> None:
    """Refuse a target (ground-truth text) that is not a string (null/5 would be scored as the words "none"/"five").

    Raises:
        TokenMergeError: Naming the example, its value and the fix.
    """
    targets = dataset[text_column] if hasattr(dataset, "column_names") else [e[text_column] for e in dataset]
    for index, target in enumerate(targets):
        if not isinstance(target, str):
            raise TokenMergeError(
                f"evaluate_wer: example {index} (counting from 0; line {index + 1} of a manifest without blank lines) "
                f"has {text_column}={target!r} ({type(target).__name__}), not a transcript string. "
                "Fix: give every example its target transcript as a string, or remove the example."
            )


def evaluate_wer(
    model,
    dataset,
    *,
    processor=None,
    tokenizer=None,
    prompt_builder: PromptBuilder | None = None,
    audio_column: str = "audio",
    text_column: str = "text",
    id_column: str = "id",
    batch_size: int = 8,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    resample: bool = True,
    sampling_rate: int | None = None,
    max_new_tokens: int = 128,
    eos_token_id: int | Sequence[int] | None = None,
    num_beams: int = 1,
    normalize: bool = True,
    accelerator=None,
    output_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
) -> WerResult:
    """Corpus WER of an ASR model or a speech-LLM on a dataset, on 1 or N processes.

    Args:
        model: An encoder-decoder ASR model (Whisper) or a causal speech-LLM.
        dataset: A `datasets.Dataset` or a list of dicts with `text_column` and, for encoder-decoders,
            `audio_column` (paths, `Audio(decode=False)` bytes, or decoded arrays); for speech-LLMs whatever
            `prompt_builder` reads (e.g. `units`).
        processor: Feature extractor + tokenizer of an encoder-decoder (e.g. `WhisperProcessor`).
        tokenizer: Tokenizer of a speech-LLM (decodes the generated text).
        prompt_builder: Speech-LLMs: `example -> prompt ids` (see `unit_prompt_builder`).
        audio_column, text_column, id_column: Audio, target transcript and (optional) utterance name columns.
        batch_size: Examples per `generate` call (fixed before sharding, so results do not depend on processes).
        dtype, device: Evaluate in this dtype (`"float32"`, `"bfloat16"`, `"float16"`; default: the model's) and on
            this device (`"cpu"` forces CPU; default: the accelerator's).
        resample, sampling_rate: Resample audio not at 16 kHz (else an error); the rate of bare-array audio.
        max_new_tokens, eos_token_id: Speech-LLMs: generation limit and end id(s) (default: generation config's).
        num_beams: 1 decodes greedily; more runs beam search with that many beams (both model kinds).
        normalize: Score normalised transcripts (Whisper's English normaliser).
        accelerator: An `accelerate.Accelerator`; default: a new one.
        output_dir: Write `wer.json` and `wer_predictions.jsonl` there (main process).
        show_progress: tqdm bar on the main process.

    Returns:
        A `WerResult` (the same on every process).
    """
    check_num_beams(num_beams)
    needed = required_columns(model, processor, tokenizer, prompt_builder, audio_column, text_column)
    num_examples = check_columns(dataset, needed, "evaluate_wer")
    check_targets(dataset, text_column)
    dataset = undecoded_audio(dataset, audio_column)  # never let datasets decode through torchcodec/FFmpeg
    accelerator = get_accelerator(accelerator, device)
    model = prepare_model(model, accelerator, dtype, device)
    columns = {"text_column": text_column, "id_column": id_column}
    if model_kind(model) == "encoder-decoder":
        audio = {"audio_column": audio_column, "sampling_rate": sampling_rate, "resample": resample}
        front_end = EncoderDecoderAsr(model, processor, dataset, num_beams=num_beams, **audio, **columns)
    else:
        generation = {"max_new_tokens": max_new_tokens, "eos_token_id": eos_token_id, "num_beams": num_beams}
        front_end = CausalLmAsr(model, tokenizer, dataset, prompt_builder, **generation, **columns)
    # Whisper's English spelling map where the ASR tokenizer provides it (normalizer.json), as the Open ASR
    # Leaderboard scores; a speech-LLM's own tokenizer has none, so its scoring is unchanged
    spelling = spelling_map_of(processor if processor is not None else tokenizer)
    report = {"normalize": normalize, "spelling": spelling, "output_dir": output_dir, "show_progress": show_progress}
    return score_transcripts(front_end, num_examples, accelerator=accelerator, batch_size=batch_size, **report)
