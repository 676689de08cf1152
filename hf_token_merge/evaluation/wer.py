"""Word error rate of encoder-decoder ASR models (Whisper) and of speech-LLMs that turn speech-unit prompts into text.

* Encoder-decoder ASR (`model.config.is_encoder_decoder`, e.g. `WhisperForConditionalGeneration`):
  audio column → soundfile decode → 16 kHz → the processor's log-mel features → greedy `generate`.
* Speech-LLMs (causal LMs): a `prompt_builder(example) -> list[int]` turns each example (e.g. its
  speech-unit ids) into prompt ids; `unit_prompt_builder` builds the usual
  `<bos><|asr|><|s_..|>...<|text_start|>` prompt. Prompts are left-padded, decoded greedily until an
  end token, and the new tokens are decoded as text.

Both paths share the sharding of `runner.run_sharded`, the scoring of `text.py` (Whisper's English
normaliser, jiwer alignment, summed counts) and the result object.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.audio import TARGET_SAMPLING_RATE, decode_audio_value
from hf_token_merge.evaluation.data import check_columns, undecoded_audio
from hf_token_merge.evaluation.runner import get_accelerator, prepare_model, run_sharded, write_report
from hf_token_merge.evaluation.text import ErrorCounts, error_counts, normalize_transcript

PromptBuilder = Callable[[dict[str, Any]], Sequence[int]]


@torch.inference_mode()
def transcribe(
    model,
    processor,
    audios: Sequence[np.ndarray],
    sampling_rate: int = TARGET_SAMPLING_RATE,
    batch_size: int = 16,
) -> list[str]:
    """Transcribe utterances of at most 30 s with a Whisper-style model and greedy decoding.

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


def unit_prompt_builder(
    tokenizer,
    *,
    units_column: str = "units",
    unit_format: str = "<|s_{}|>",
    prefix: Sequence[str] = ("<|asr|>",),
    suffix: Sequence[str] = ("<|text_start|>",),
    add_bos: bool = True,
) -> PromptBuilder:
    """A prompt builder for speech-LLM ASR: `<bos> prefix <unit tokens> suffix`.

    Args:
        tokenizer: The speech-LLM's tokenizer.
        units_column: Column with the example's units: a list of unit indices (formatted with
            `unit_format`) or a string of unit tokens (`"<|s_3|><|s_17|>"`, tokenized as is).
        unit_format: Token of unit `n`.
        prefix: Tokens before the units (task token).
        suffix: Tokens after the units (start of the text answer).
        add_bos: Start with `tokenizer.bos_token_id`.

    Returns:
        `builder(example) -> list[int]`.
    """

    def ids_of(tokens: Sequence[str]) -> list[int]:
        ids = tokenizer.convert_tokens_to_ids(list(tokens))
        unknown = [t for t, i in zip(tokens, ids, strict=True) if i is None or i == tokenizer.unk_token_id]
        if unknown:
            raise ValueError(
                f"The tokenizer has no token {unknown[0]!r}. Fix: pass the model's own prompt tokens "
                "(prefix=/suffix=/unit_format=) to unit_prompt_builder."
            )
        return list(ids)

    head = ([tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []) + ids_of(prefix)
    tail = ids_of(suffix)

    def build(example: dict[str, Any]) -> list[int]:
        if units_column not in example:
            raise ValueError(
                f"The example has no column {units_column!r} (columns: {sorted(example)}). "
                "Fix: pass units_column= to unit_prompt_builder."
            )
        units = example[units_column]
        if isinstance(units, str):
            body = tokenizer(units, add_special_tokens=False).input_ids
        else:
            body = ids_of([unit_format.format(int(unit)) for unit in units])
        return head + list(body) + tail

    build.units_column = units_column  # type: ignore[attr-defined]
    return build


@dataclass
class WerResult:
    """Outcome of `evaluate_wer`.

    Attributes:
        counts: Corpus error counts (summed over utterances).
        num_utterances: Utterances scored.
        audio_seconds: Total audio duration (None when the data has no audio or duration).
        compute_seconds: Wall time of the sharded evaluation loop.
        process_seconds: Loop time summed over processes.
        num_processes: Processes that shared the work.
        predictions: One record per utterance, in dataset order.
    """

    counts: ErrorCounts
    num_utterances: int
    audio_seconds: float | None
    compute_seconds: float
    process_seconds: float
    num_processes: int
    predictions: list[dict[str, Any]] = field(repr=False)

    @property
    def wer(self) -> float:
        return self.counts.wer

    @property
    def rtfx(self) -> float | None:
        """Inverse real-time factor: audio seconds ÷ compute seconds (None without audio durations)."""
        if self.audio_seconds is None or self.compute_seconds <= 0:
            return None
        return self.audio_seconds / self.compute_seconds

    def metrics(self) -> dict[str, Any]:
        """The deterministic numbers (identical for any number of processes)."""
        return {**self.counts.to_dict(), "utterances": self.num_utterances, "audio_seconds": self.audio_seconds}

    def to_dict(self) -> dict[str, Any]:
        """Metrics and timing, JSON-serialisable (predictions are written separately)."""
        return {
            "task": "wer",
            "metrics": self.metrics(),
            "timing": {
                "compute_seconds": self.compute_seconds,
                "process_seconds": self.process_seconds,
                "rtfx": self.rtfx,
                "num_processes": self.num_processes,
            },
        }

    def save(self, output_dir: str | os.PathLike[str], prefix: str = "wer") -> dict[str, Path]:
        """Write `{prefix}.json` (metrics + timing) and `{prefix}_predictions.jsonl` (one line per utterance)."""
        return write_report(output_dir, prefix, self.to_dict(), self.predictions, "predictions")

    def __str__(self) -> str:
        c = self.counts
        rtfx = f", RTFx {self.rtfx:.1f}" if self.rtfx is not None else ""
        return (
            f"WER {c.wer:.4f} ({c.substitutions} sub + {c.deletions} del + {c.insertions} ins "
            f"/ {c.reference_words} words, {self.num_utterances} utterances{rtfx})"
        )


def model_kind(model) -> str:
    """`"encoder-decoder"` or `"causal-lm"` (from the config)."""
    return "encoder-decoder" if getattr(model.config, "is_encoder_decoder", False) else "causal-lm"


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
        audio_column: Audio column name.
        text_column: Reference transcript column.
        id_column: Utterance name column (optional; the index is used without it).
        batch_size: Examples per `generate` call (fixed before sharding, so results do not depend on processes).
        dtype: Evaluate in this dtype (`"float32"`, `"bfloat16"`, `"float16"`); default: the model's.
        device: `"cpu"` forces CPU; default: the accelerator's device.
        resample: Resample audio that is not at 16 kHz (scipy); when False such audio is an error.
        sampling_rate: Rate of audio given as bare arrays.
        max_new_tokens: Speech-LLMs: generation limit.
        eos_token_id: Speech-LLMs: id(s) that end the answer (e.g. `<|text_end|>`); default: the
            generation config's / tokenizer's eos.
        normalize: Score normalised transcripts (Whisper's English normaliser).
        accelerator: An `accelerate.Accelerator`; default: a new one.
        output_dir: Write `wer.json` and `wer_predictions.jsonl` there (main process).
        show_progress: tqdm bar on the main process.

    Returns:
        A `WerResult` (the same on every process).
    """
    kind = model_kind(model)
    if kind == "encoder-decoder":
        if processor is None or not hasattr(processor, "feature_extractor"):
            raise ValueError(
                f"evaluate_wer on the encoder-decoder {type(model).__name__} needs its processor (feature extractor "
                "+ tokenizer). Fix: pass processor=AutoProcessor.from_pretrained(...)."
            )
        if prompt_builder is not None:
            raise ValueError("prompt_builder is for causal speech-LLMs; an encoder-decoder reads audio. Fix: drop it.")
        needed = [audio_column, text_column]
    else:
        if prompt_builder is None:
            raise ValueError(
                f"evaluate_wer got the causal LM {type(model).__name__} but no prompt_builder, so it cannot know how "
                "to turn an example into a speech prompt. Fix: pass prompt_builder=unit_prompt_builder(tokenizer, "
                "prefix=[...], suffix=[...]) or your own callable example -> prompt ids (or evaluate an "
                "encoder-decoder ASR model such as Whisper)."
            )
        if tokenizer is None:
            raise ValueError("evaluate_wer on a speech-LLM needs its tokenizer to decode text. Fix: pass tokenizer=.")
        needed = [text_column] + ([prompt_builder.units_column] if hasattr(prompt_builder, "units_column") else [])
    num_examples = check_columns(dataset, needed, "evaluate_wer")
    references = dataset[text_column] if hasattr(dataset, "column_names") else [e[text_column] for e in dataset]
    for index, reference in enumerate(references):
        if not isinstance(reference, str):  # null/5 would be scored as the words "none"/"five"
            raise TokenMergeError(
                f"evaluate_wer: example {index} (counting from 0; line {index + 1} of a manifest without blank lines) "
                f"has {text_column}={reference!r} ({type(reference).__name__}), not a transcript string. "
                "Fix: give every example its reference transcript as a string, or remove the example."
            )
    dataset = undecoded_audio(dataset, audio_column)  # never let datasets decode through torchcodec/FFmpeg
    accelerator = get_accelerator(accelerator, device)
    model = prepare_model(model, accelerator, dtype, device)
    has_ids = id_column in (dataset.column_names if hasattr(dataset, "column_names") else dataset[0])

    def score(indices: list[int], hypotheses: list[str], durations: list[float | None]) -> list[dict[str, Any]]:
        records = []
        for index, hypothesis, duration in zip(indices, hypotheses, durations, strict=True):
            example = dataset[index]
            reference = example[text_column]
            counts = error_counts(reference, hypothesis, normalize)
            records.append(
                {
                    "index": index,
                    "id": str(example[id_column]) if has_ids else str(index),
                    "reference": reference,
                    "prediction": hypothesis,
                    "reference_normalized": normalize_transcript(reference) if normalize else reference,
                    "prediction_normalized": normalize_transcript(hypothesis) if normalize else hypothesis,
                    **counts.to_dict(),
                    "duration": duration,
                }
            )
        return records

    def whisper_batch(indices: list[int]) -> list[dict[str, Any]]:
        audios = [
            decode_audio_value(dataset[i][audio_column], sampling_rate=sampling_rate, allow_resample=resample)
            for i in indices
        ]
        texts = transcribe(model, processor, audios, batch_size=len(audios))
        return score(indices, texts, [len(audio) / TARGET_SAMPLING_RATE for audio in audios])

    def llm_batch(indices: list[int]) -> list[dict[str, Any]]:
        examples = [dataset[i] for i in indices]
        texts = generate_text(
            model, tokenizer, [list(prompt_builder(example)) for example in examples], max_new_tokens, eos_token_id
        )
        durations = [float(e["duration"]) if e.get("duration") is not None else None for e in examples]
        return score(indices, texts, durations)

    records, timing = run_sharded(
        accelerator,
        num_examples,
        batch_size,
        whisper_batch if kind == "encoder-decoder" else llm_batch,
        desc="WER",
        show_progress=show_progress,
    )
    total = ErrorCounts()
    for record in records:
        total = total + ErrorCounts(record["hits"], record["substitutions"], record["deletions"], record["insertions"])
    durations = [record["duration"] for record in records]
    audio_seconds = None if any(d is None for d in durations) else float(sum(durations))
    result = WerResult(
        counts=total,
        num_utterances=num_examples,
        audio_seconds=audio_seconds,
        compute_seconds=timing["compute_seconds"],
        process_seconds=timing["process_seconds"],
        num_processes=accelerator.num_processes,
        predictions=records,
    )
    if output_dir is not None and accelerator.is_main_process:
        result.save(output_dir)
    return result


@torch.inference_mode()
def generate_text(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int = 128,
    eos_token_id: int | Sequence[int] | None = None,
) -> list[str]:
    """Greedy continuation of left-padded prompts, decoded up to the first end token.

    Args:
        model: A causal LM.
        tokenizer: Its tokenizer.
        prompts: Prompt ids, one list per example.
        max_new_tokens: Generation limit.
        eos_token_id: End id(s); default: the generation config's, else the tokenizer's eos.

    Returns:
        One stripped text per prompt (special tokens removed).
    """
    if any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("A prompt builder returned an empty prompt. Fix: return at least one token id.")
    if eos_token_id is None:
        eos_token_id = model.generation_config.eos_token_id or tokenizer.eos_token_id
    stops = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or [])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(stops), 0)
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    out = model.generate(
        input_ids=input_ids.to(model.device),
        attention_mask=mask.to(model.device),
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=sorted(stops) or None,
        pad_token_id=pad,
    )
    texts = []
    for row in out[:, width:].tolist():
        cut = next((i for i, token in enumerate(row) if token in stops), len(row))
        texts.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return texts
