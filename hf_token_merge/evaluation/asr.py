"""The ASR front ends of the scoring core: one per model kind, each turning example indices into transcripts.

* `EncoderDecoderAsr` (`model.config.is_encoder_decoder`, e.g. `WhisperForConditionalGeneration`):
  audio column -> soundfile decode -> 16 kHz -> the processor's log-mel features -> greedy `generate`.
* `CausalLmAsr` (speech-LLMs): a `prompt_builder(example) -> list[int]` turns each example (e.g. its speech-unit
  ids) into prompt ids; `unit_prompt_builder` builds the usual `<bos><|asr|><|s_..|>...<|text_start|>` prompt.
  Prompts are left-padded, decoded greedily until an end token, and the new tokens are decoded as text.

Both yield `scoring.Transcript`s with the utterance's `duration` (seconds) as extra field; `scoring.score_transcripts`
does the sharding, normalising, aligning, counting and reporting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.audio import TARGET_SAMPLING_RATE, decode_audio_value
from hf_token_merge.evaluation.scoring import Transcript

PromptBuilder = Callable[[dict[str, Any]], Sequence[int]]


def example_id_reader(dataset, id_column: str) -> Callable[[int, dict[str, Any]], str]:
    """`(index, example) -> name`: the `id_column` value when the data has that column, else the index.

    Args:
        dataset: A `datasets.Dataset` or a list of dicts.
        id_column: The column of utterance names.

    Returns:
        The reader.
    """
    has_ids = id_column in (dataset.column_names if hasattr(dataset, "column_names") else dataset[0])
    return lambda index, example: str(example[id_column]) if has_ids else str(index)


class EncoderDecoderAsr:
    """Front end of encoder-decoder ASR models (Whisper): audio -> log-mel features -> transcript.

    Args:
        model: The prepared model (eval mode, on its device).
        processor: Its processor (feature extractor + tokenizer).
        dataset: Examples with `audio_column` and `text_column`.
        audio_column: Audio column (paths, `{"bytes", "path"}` or decoded arrays).
        text_column: Reference transcript column.
        id_column: Utterance name column (optional).
        sampling_rate: Rate of audio given as bare arrays.
        resample: Resample audio that is not at 16 kHz; when False such audio is an error.
        num_beams: 1 decodes greedily; more runs beam search with that many beams.
    """

    def __init__(
        self,
        model,
        processor,
        dataset,
        *,
        audio_column: str = "audio",
        text_column: str = "text",
        id_column: str = "id",
        sampling_rate: int | None = None,
        resample: bool = True,
        num_beams: int = 1,
    ) -> None:
        self.model, self.processor, self.dataset = model, processor, dataset
        self.audio_column, self.text_column = audio_column, text_column
        self.sampling_rate, self.resample, self.num_beams = sampling_rate, resample, num_beams
        self.example_id = example_id_reader(dataset, id_column)

    def __call__(self, indices: list[int]) -> list[Transcript]:
        examples = [self.dataset[i] for i in indices]
        audios = [
            decode_audio_value(e[self.audio_column], sampling_rate=self.sampling_rate, allow_resample=self.resample)
            for e in examples
        ]
        texts = transcribe(self.model, self.processor, audios, batch_size=len(audios), num_beams=self.num_beams)
        return [
            Transcript(i, self.example_id(i, e), e[self.text_column], text, {"duration": len(a) / TARGET_SAMPLING_RATE})
            for i, e, text, a in zip(indices, examples, texts, audios, strict=True)
        ]


class CausalLmAsr:
    """Front end of causal speech-LLMs answering speech-unit prompts with text.

    Args:
        model: The prepared causal LM.
        tokenizer: Its tokenizer (decodes the answer).
        dataset: Examples with `text_column` and whatever `prompt_builder` reads; an optional `duration` column
            gives the audio seconds.
        prompt_builder: `example -> prompt ids` (see `unit_prompt_builder`).
        text_column: Reference transcript column.
        id_column: Utterance name column (optional).
        max_new_tokens: Generation limit.
        eos_token_id: Id(s) that end the answer; default: the generation config's / tokenizer's eos.
        num_beams: 1 decodes greedily; more runs beam search with that many beams.
    """

    def __init__(
        self,
        model,
        tokenizer,
        dataset,
        prompt_builder: PromptBuilder,
        *,
        text_column: str = "text",
        id_column: str = "id",
        max_new_tokens: int = 128,
        eos_token_id: int | Sequence[int] | None = None,
        num_beams: int = 1,
    ) -> None:
        self.model, self.tokenizer, self.dataset, self.prompt_builder = model, tokenizer, dataset, prompt_builder
        self.text_column, self.max_new_tokens, self.eos_token_id = text_column, max_new_tokens, eos_token_id
        self.num_beams = num_beams
        self.example_id = example_id_reader(dataset, id_column)

    def __call__(self, indices: list[int]) -> list[Transcript]:
        examples = [self.dataset[i] for i in indices]
        prompts = [list(self.prompt_builder(example)) for example in examples]
        texts = generate_text(
            self.model, self.tokenizer, prompts, self.max_new_tokens, self.eos_token_id, num_beams=self.num_beams
        )
        return [
            Transcript(i, self.example_id(i, e), e[self.text_column], text, {"duration": _duration(e)})
            for i, e, text in zip(indices, examples, texts, strict=True)
        ]


def _duration(example: dict[str, Any]) -> float | None:
    return float(example["duration"]) if example.get("duration") is not None else None


@torch.inference_mode()
def transcribe(
    model,
    processor,
    audios: Sequence[np.ndarray],
    sampling_rate: int = TARGET_SAMPLING_RATE,
    batch_size: int = 16,
    num_beams: int = 1,
) -> list[str]:
    """Transcribe utterances of at most 30 s with a Whisper-style model (greedy, or beam search).

    Args:
        model: A Whisper model; its `generation_config` picks the start tokens and suppression.
        processor: The matching processor (log-mel features, tokenizer).
        audios: Mono float waveforms.
        sampling_rate: Their sampling rate (Whisper needs 16 kHz).
        batch_size: Utterances per `generate` call.
        num_beams: 1 decodes greedily; more runs beam search with that many beams.

    Returns:
        One transcript per utterance, special tokens removed.
    """
    check_num_beams(num_beams)
    texts: list[str] = []
    for start in range(0, len(audios), batch_size):
        batch = list(audios[start : start + batch_size])
        features = processor.feature_extractor(
            batch, sampling_rate=sampling_rate, return_tensors="pt", return_attention_mask=True
        )
        input_features = features.input_features.to(device=model.device, dtype=model.dtype)
        # The mask only marks padded audio frames; passing it keeps generate() from guessing one.
        mask = features.attention_mask.to(model.device)
        token_ids = model.generate(input_features, attention_mask=mask, num_beams=num_beams, do_sample=False)
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
            raise TokenMergeError(
                f"The tokenizer has no token {unknown[0]!r}. Fix: pass the model's own prompt tokens "
                "(prefix=/suffix=/unit_format=) to unit_prompt_builder."
            )
        return list(ids)

    head = ([tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []) + ids_of(prefix)
    tail = ids_of(suffix)

    def build(example: dict[str, Any]) -> list[int]:
        if units_column not in example:
            raise TokenMergeError(
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


def check_num_beams(num_beams: int) -> None:
    """Raise a `TokenMergeError` unless `num_beams` is an int of at least 1 (1 is greedy decoding).

    Args:
        num_beams: The beam count to check.
    """
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise TokenMergeError(
            f"num_beams must be an int >= 1, got {num_beams!r}. Fix: pass 1 for greedy decoding or e.g. 4 for beam "
            "search with 4 beams."
        )


@torch.inference_mode()
def generate_text(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int = 128,
    eos_token_id: int | Sequence[int] | None = None,
    num_beams: int = 1,
) -> list[str]:
    """Deterministic continuation of left-padded prompts (greedy, or beam search), decoded up to the first end token.

    Args:
        model: A causal LM.
        tokenizer: Its tokenizer.
        prompts: Prompt ids, one list per example.
        max_new_tokens: Generation limit.
        eos_token_id: End id(s); default: the generation config's, else the tokenizer's eos.
        num_beams: 1 decodes greedily; more runs beam search with that many beams (the best-scoring finished
            sequence, transformers' default length penalty).

    Returns:
        One stripped text per prompt (special tokens removed).
    """
    check_num_beams(num_beams)
    if any(len(prompt) == 0 for prompt in prompts):
        raise TokenMergeError("A prompt builder returned an empty prompt. Fix: return at least one token id.")
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
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        eos_token_id=sorted(stops) or None,
        pad_token_id=pad,
    )
    texts = []
    for row in out[:, width:].tolist():
        cut = next((i for i, token in enumerate(row) if token in stops), len(row))
        texts.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return texts
