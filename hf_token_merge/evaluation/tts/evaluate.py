"""`evaluate_tts_wer`: what a (merged) TTS speech-LLM says, as heard by an ASR model (the Seed-TTS-eval recipe).

Per utterance: a family prompt builder turns the text into prompt ids; the model generates speech tokens (greedy,
or sampled with the seed `seed + index` so that 1 and N processes give identical results); the family adapter
maps the ids to codec codes, strictly (an id that is no valid code for its slot makes the generation *invalid*);
a user-supplied `decode` callable turns the codes into audio (or log-mel features); a pluggable ASR transcribes
them (Whisper by default); the transcript is scored against the text as WER (or CER) with the evaluator's
normaliser. The scoring is the shared core's (`scoring.score_transcripts`, as for ASR): the same normaliser, word
counts, per-utterance records (which `confidence.compare_records` pairs) and sharding. Invalid and undecodable
generations are counted and scored as empty transcripts (every reference
word deleted), and generations that never emit the end token are counted. Timing gives the generated seconds and
real-time factors (compute seconds per generated second).

`OracleSpeechModel` stands in for a TTS model that emits the ground-truth codes of each utterance: its TTS WER is
exactly the codec's resynthesis WER, which tests the whole path before any TTS model exists.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.data import check_columns
from hf_token_merge.evaluation.runner import get_accelerator, prepare_model, write_report
from hf_token_merge.evaluation.scoring import METRICS, Transcript, WerResult, score_transcripts
from hf_token_merge.evaluation.text import ErrorCounts, spelling_map_of
from hf_token_merge.evaluation.tts.adapters import InvalidSpeechTokenError, SpeechCodes, SpeechTokenAdapter

Decoded = Any  # a waveform (1-D array/tensor) or log-mel features, whatever `decode` returns and `asr` takes


class OracleSpeechModel:
    """A stand-in TTS model that "generates" each utterance's ground-truth codes.

    Args:
        codes_column: Column holding the codes (a `{stream: [codes]}` dict, or one list for one-stream codecs).
    """

    def __init__(self, codes_column: str = "codes") -> None:
        self.codes_column = codes_column

    def ids(self, adapter: SpeechTokenAdapter, example: dict[str, Any]) -> list[int]:
        """The ids the oracle emits: the adapter's spelling of the example's codes, then the end token."""
        if self.codes_column not in example:
            raise TokenMergeError(
                f"The oracle model reads ground-truth codes from column {self.codes_column!r}, which the example "
                f"lacks (columns: {sorted(example)}). Fix: encode the audio with the codec into that column."
            )
        codes = example[self.codes_column]
        codes = codes if isinstance(codes, dict) else {"codes": list(codes)}
        return adapter.ids(codes) + list(adapter.end_token_ids[:1])


def whisper_asr(
    model=None, processor=None, *, features: bool = False, sampling_rate: int = 16000, batch_size: int = 16
) -> Callable[[list[Decoded]], list[str]]:
    """Whisper as the ASR callable: decoded audio (or log-mel features) → transcripts, greedy.

    Args:
        model: A Whisper model; default Whisper tiny.en (`hf_token_merge.reference.load_whisper_tiny_en`, built
            offline).
        processor: Its processor.
        features: The decode callable returns `(n_mels, frames)` log-mel features (padded/cut to Whisper's 30 s)
            instead of waveforms.
        sampling_rate: Rate of the decoded waveforms (resampled to 16 kHz).
        batch_size: Utterances per `generate` call.

    Returns:
        `asr(decoded_list) -> transcripts`.
    """
    if model is None:
        from hf_token_merge.reference import load_whisper_tiny_en

        model, processor = load_whisper_tiny_en()
    from hf_token_merge.evaluation.audio import TARGET_SAMPLING_RATE, resample
    from hf_token_merge.evaluation.wer import transcribe

    @torch.inference_mode()
    def asr(decoded: list[Decoded]) -> list[str]:
        if not features:
            audios = [np.asarray(torch.as_tensor(a).float().flatten().cpu(), dtype=np.float32) for a in decoded]
            audios = [resample(a, sampling_rate, TARGET_SAMPLING_RATE) for a in audios]
            return transcribe(model, processor, audios, batch_size=batch_size)
        frames = processor.feature_extractor.nb_max_frames
        texts = []
        for start in range(0, len(decoded), batch_size):
            batch = []
            for mel in decoded[start : start + batch_size]:
                mel = torch.as_tensor(mel).float()[:, :frames]
                batch.append(torch.nn.functional.pad(mel, (0, frames - mel.shape[-1]), value=float(mel.min())))
            ids = model.generate(torch.stack(batch).to(model.device, model.dtype), num_beams=1, do_sample=False)
            texts.extend(t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True))
        return texts

    asr.name = getattr(model.config, "_name_or_path", None) or type(model).__name__  # type: ignore[attr-defined]
    asr.spelling = spelling_map_of(processor)  # type: ignore[attr-defined]  # the normaliser's spelling map
    return asr


@torch.inference_mode()
def generate_speech_ids(
    model,
    prompts: list[list[int]],
    *,
    end_token_ids: Sequence[int],
    pad_token_id: int,
    max_new_tokens: int,
    do_sample: bool = False,
    seeds: Sequence[int] | None = None,
    **sampling: Any,
) -> list[list[int]]:
    """The new ids of each prompt's continuation, up to and including the first end token.

    Greedy prompts run as one left-padded batch; sampled prompts run one at a time, each after
    `torch.manual_seed(seed)`, so a sample does not depend on its batch mates or on the process that runs it.

    Args:
        model: A causal LM.
        prompts: Prompt ids.
        end_token_ids: Ids that end generation.
        pad_token_id: Padding id.
        max_new_tokens: Generation limit.
        do_sample: Sample instead of greedy decoding.
        seeds: One seed per prompt (sampling).
        **sampling: `temperature`, `top_k`, `top_p`, `repetition_penalty`.

    Returns:
        One id list per prompt.
    """
    common = {
        "max_new_tokens": max_new_tokens,
        "eos_token_id": list(end_token_ids),
        "pad_token_id": pad_token_id,
        "num_beams": 1,
    }
    groups = [[i] for i in range(len(prompts))] if do_sample else [list(range(len(prompts)))]
    out: list[list[int]] = [[] for _ in prompts]
    for group in groups:
        width = max(len(prompts[i]) for i in group)
        input_ids = torch.full((len(group), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, i in enumerate(group):
            input_ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        if do_sample:
            torch.manual_seed(int(seeds[group[0]]))  # type: ignore[index]
            kwargs = {"do_sample": True, **sampling}
        else:
            kwargs = {"do_sample": False}
        generated = model.generate(
            input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device), **common, **kwargs
        )
        for row, i in enumerate(group):
            ids = generated[row, width:].tolist()
            cut = next((n + 1 for n, t in enumerate(ids) if t in end_token_ids), len(ids))
            out[i] = ids[:cut]
    return out


@dataclass
class TtsWerResult:
    """Outcome of `evaluate_tts_wer`.

    Attributes:
        counts: Corpus error counts (words for WER, characters for CER).
        metric: `"wer"` or `"cer"`.
        num_utterances: Utterances.
        invalid: Generations with an id that is no valid code for its slot.
        undecodable: Generations whose codes the decode callable rejected.
        unended: Generations that never emitted the end token.
        generated_seconds: Seconds of speech generated (codec frames / frame rate), valid generations (the sum of
            the records' `duration`).
        timing: Compute seconds of generation, decoding and ASR (slowest process) and real-time factors.
        settings: Generation settings.
        speaker_similarity: Mean speaker similarity (None without a callable).
        num_processes: Processes that shared the work.
        predictions: One record per utterance, in dataset order.
    """

    counts: ErrorCounts
    metric: str
    num_utterances: int
    invalid: int
    undecodable: int
    unended: int
    generated_seconds: float
    timing: dict[str, float | None]
    settings: dict[str, Any]
    speaker_similarity: float | None
    num_processes: int
    predictions: list[dict[str, Any]] = field(repr=False)

    @property
    def wer(self) -> float:
        """The corpus error rate (WER, or CER when `metric == "cer"`)."""
        return self.counts.wer

    def metrics(self) -> dict[str, Any]:
        """The deterministic numbers (identical for any number of processes)."""
        counts = self.counts.to_dict()
        counts[self.metric] = counts.pop("wer")
        if self.metric == "cer":
            counts["target_characters"] = counts.pop("target_words")
        return {
            **counts,
            "utterances": self.num_utterances,
            "invalid_generations": self.invalid,
            "undecodable_generations": self.undecodable,
            "generations_without_end_token": self.unended,
            "generated_seconds": self.generated_seconds,
            "speaker_similarity": self.speaker_similarity,
        }

    def to_dict(self) -> dict[str, Any]:
        """Metrics, settings and timing, JSON-serialisable."""
        return {
            "task": "tts-wer",
            "metrics": self.metrics(),
            "settings": self.settings,
            "timing": {**self.timing, "num_processes": self.num_processes},
        }

    def save(self, output_dir: str | os.PathLike[str], prefix: str = "tts_wer") -> dict[str, Path]:
        """Write `{prefix}.json` and `{prefix}_predictions.jsonl`."""
        return write_report(output_dir, prefix, self.to_dict(), self.predictions, "predictions")

    def __str__(self) -> str:
        c, unit = self.counts, "words" if self.metric == "wer" else "characters"
        rtf = self.timing.get("rtf_total")
        return (
            f"TTS {self.metric.upper()} {self.wer:.4f} ({c.substitutions} sub + {c.deletions} del + {c.insertions} ins "
            f"/ {c.target_words} {unit}, {self.num_utterances} utterances; {self.invalid} invalid, "
            f"{self.undecodable} undecodable, {self.unended} without end token; {self.generated_seconds:.1f} s "
            f"generated" + (f", RTF {rtf:.3g}" if rtf is not None else "") + ")"
        )


class TtsFrontEnd:
    """The TTS front end of the scoring core: example indices → `Transcript`s (text → ids → codes → decoded → ASR).

    Each transcript's `extra` holds `generated_tokens`, `status` (`ok`, `invalid`, `undecodable`), `error`, `ended`,
    `frames`, `duration` (generated seconds) and, with a speaker-similarity callable, `speaker_similarity`.
    Invalid and undecodable generations get an empty hypothesis. `seconds` accumulates this process's compute
    time of generation, decoding and ASR.

    Args:
        model: The TTS speech-LLM, or an `OracleSpeechModel`.
        data: The examples.
        adapter: The family adapter.
        decode: `SpeechCodes -> decoded`.
        asr: `list of decoded -> transcripts`.
        prompt_builder: `example -> prompt ids` (unused by the oracle).
        text_column: Reference text column.
        id_column: Utterance id column (the index when absent).
        generation: Keyword arguments of `generate_speech_ids` besides prompts and seeds.
        seed: Base seed of sampling (`seed + index` per utterance).
        speaker_similarity: Optional `(decoded, example) -> similarity`.
    """

    def __init__(
        self,
        model,
        data,
        *,
        adapter: SpeechTokenAdapter,
        decode: Callable[[SpeechCodes], Decoded],
        asr: Callable[[list[Decoded]], list[str]],
        prompt_builder: Callable[[dict[str, Any]], Sequence[int]] | None,
        text_column: str,
        id_column: str,
        generation: dict[str, Any],
        seed: int,
        speaker_similarity: Callable[[Decoded, dict[str, Any]], float] | None = None,
    ) -> None:
        self.model, self.data, self.adapter, self.decode, self.asr = model, data, adapter, decode, asr
        self.prompt_builder, self.text_column, self.id_column = prompt_builder, text_column, id_column
        self.generation, self.seed, self.speaker_similarity = generation, seed, speaker_similarity
        self.oracle = isinstance(model, OracleSpeechModel)
        self.has_ids = id_column in (data.column_names if hasattr(data, "column_names") else data[0])
        self.seconds = {"generation": 0.0, "decode": 0.0, "asr": 0.0}

    def _generate(self, indices: list[int], examples: list[dict[str, Any]]) -> tuple[list[list[int]], list[list[int]]]:
        if self.oracle:
            return [[] for _ in examples], [self.model.ids(self.adapter, example) for example in examples]
        prompts = [list(self.prompt_builder(example)) for example in examples]  # type: ignore[misc]
        seeds = [self.seed + i for i in indices]
        return prompts, generate_speech_ids(self.model, prompts, seeds=seeds, **self.generation)

    def __call__(self, indices: list[int]) -> list[Transcript]:
        examples = [self.data[i] for i in indices]
        started = time.perf_counter()
        prompts, generated = self._generate(indices, examples)
        self.seconds["generation"] += time.perf_counter() - started
        extras, decoded, decoded_rows = [], [], []
        end_ids = self.adapter.end_token_ids
        for row, (prompt, ids) in enumerate(zip(prompts, generated, strict=True)):
            extra: dict[str, Any] = {"generated_tokens": len(ids), "status": "ok", "error": None}
            extras.append(extra)
            try:
                codes = self.adapter.codes(ids, prompt_ids=prompt)
            except InvalidSpeechTokenError as error:
                extra.update(status="invalid", error=str(error), ended=any(t in end_ids for t in ids))
                extra.update(frames=0, duration=0.0)
                continue
            extra.update(ended=codes.ended, frames=codes.frames, duration=codes.seconds)
            started = time.perf_counter()
            try:
                if codes.frames == 0:
                    raise TokenMergeError("the generation holds no complete codec frame")
                decoded.append(self.decode(codes))
                decoded_rows.append(row)
            except Exception as error:  # noqa: BLE001 - any codec failure is a result to count, not a crash
                extra.update(status="undecodable", error=f"{type(error).__name__}: {error}")
            self.seconds["decode"] += time.perf_counter() - started
        started = time.perf_counter()
        heard = dict(zip(decoded_rows, self.asr(decoded) if decoded else [], strict=True))
        self.seconds["asr"] += time.perf_counter() - started
        if self.speaker_similarity is not None:
            for position, row in enumerate(decoded_rows):
                extras[row]["speaker_similarity"] = float(self.speaker_similarity(decoded[position], examples[row]))
        return [
            Transcript(
                index=index,
                id=str(example[self.id_column]) if self.has_ids else str(index),
                target=example[self.text_column],
                hypothesis=heard.get(row, ""),
                extra=extras[row],
            )
            for row, (index, example) in enumerate(zip(indices, examples, strict=True))
        ]


def evaluate_tts_wer(
    model,
    data,
    *,
    adapter: SpeechTokenAdapter,
    decode: Callable[[SpeechCodes], Decoded],
    asr: Callable[[list[Decoded]], list[str]] | None = None,
    prompt_builder: Callable[[dict[str, Any]], Sequence[int]] | None = None,
    text_column: str = "text",
    id_column: str = "id",
    metric: str = "wer",
    normalize: bool = True,
    max_new_tokens: int = 1024,
    do_sample: bool = False,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    speaker_similarity: Callable[[Decoded, dict[str, Any]], float] | None = None,
    batch_size: int = 8,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    accelerator=None,
    output_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
) -> TtsWerResult:
    """TTS WER (or CER) of a causal speech-LLM, on 1 or N processes.

    A front end (`TtsFrontEnd`) of the shared scoring core (`scoring.score_transcripts`): the same normaliser,
    counts and per-utterance records as ASR WER, so `confidence.compare_records` pairs two TTS evaluations.

    Args:
        model: The TTS speech-LLM (merged or not), or an `OracleSpeechModel`.
        data: A Dataset or list of dicts with `text_column` (and the oracle's codes column).
        adapter: The family adapter (`hf_token_merge.evaluation.tts.adapter_for(family, tokenizer)`).
        decode: `SpeechCodes -> audio or log-mel`; the codec (e.g. `adapter.load_decoder()` for Llasa/Orpheus).
            An exception counts the generation as undecodable.
        asr: `list of decoded -> transcripts`; default `whisper_asr()` (Whisper tiny.en on 16 kHz audio).
        prompt_builder: `example -> prompt ids`; default `adapter.prompt(example[text_column])`.
        text_column: Reference text.
        id_column: Utterance id (index when absent).
        metric: `"wer"` or `"cer"` (characters of the normalised texts, e.g. for Chinese).
        normalize: Normalise both texts (Whisper's English normaliser) before scoring.
        max_new_tokens: Generation limit per utterance.
        do_sample: Sample (seeded per utterance with `seed + index`) instead of greedy decoding.
        seed: Base seed of sampling.
        temperature: Sampling temperature.
        top_k: Top-k sampling (None: the model's generation config, often 50).
        top_p: Nucleus sampling (None: the model's generation config).
        speaker_similarity: Optional `(decoded, example) -> similarity` (e.g. cosine of speaker embeddings).
        batch_size: Utterances per batch (batches are fixed before sharding).
        dtype: Evaluate in this dtype.
        device: `"cpu"` forces CPU.
        accelerator: An `accelerate.Accelerator`; default: a new one.
        output_dir: Write `tts_wer.json` and `tts_wer_predictions.jsonl` there (main process).
        show_progress: tqdm bar on the main process.

    Returns:
        A `TtsWerResult` (the same on every process).
    """
    if metric not in METRICS:
        raise TokenMergeError(f"metric must be 'wer' or 'cer', got {metric!r}.")
    oracle = isinstance(model, OracleSpeechModel)
    num_examples = check_columns(data, [text_column] + ([model.codes_column] if oracle else []), "evaluate_tts_wer")
    if prompt_builder is None and not oracle:
        prompt_builder = _adapter_prompt_builder(adapter, text_column)
    accelerator = get_accelerator(accelerator, device)
    if not oracle:
        model = prepare_model(model, accelerator, dtype, device)
    asr = asr if asr is not None else whisper_asr()
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p} if do_sample else {}
    front_end = TtsFrontEnd(
        model, data, adapter=adapter, decode=decode, asr=asr, prompt_builder=prompt_builder, text_column=text_column,
        id_column=id_column, generation=_generation(adapter, max_new_tokens, do_sample, sampling), seed=seed,
        speaker_similarity=speaker_similarity,
    )  # fmt: skip
    spelling = getattr(asr, "spelling", None)  # Whisper's spelling map, where the ASR tokenizer provides it
    scored: WerResult = score_transcripts(
        front_end, num_examples, accelerator=accelerator, batch_size=batch_size, normalize=normalize,
        spelling=spelling, show_progress=show_progress, desc="TTS WER", metric=metric,
    )  # fmt: skip
    settings = {
        "decoding": "oracle" if oracle else ("sampled" if do_sample else "greedy"),
        **({} if oracle else {"max_new_tokens": max_new_tokens}),
        **({"seed": seed, "seed_per_utterance": "seed + index", **sampling} if do_sample and not oracle else {}),
        "batch_size": batch_size,
        **_pipeline_settings(adapter, decode, asr, metric, normalize, spelling),
    }
    seconds = _gathered_seconds(front_end.seconds, accelerator)
    result = _tts_result(scored, num_examples, seconds, settings, accelerator)
    if output_dir is not None and accelerator.is_main_process:
        result.save(output_dir)
    return result


def _adapter_prompt_builder(adapter: SpeechTokenAdapter, text_column: str) -> Callable[[dict[str, Any]], list[int]]:
    """`example -> adapter.prompt(example[text_column])`, refused for an adapter without a prompt."""
    if not hasattr(adapter, "prompt"):
        raise TokenMergeError(
            f"The {adapter.family} adapter has no built-in prompt. Fix: pass prompt_builder=example -> ids."
        )

    def prompt_builder(example: dict[str, Any]) -> list[int]:
        return adapter.prompt(example[text_column])

    return prompt_builder


def _generation(
    adapter: SpeechTokenAdapter, max_new_tokens: int, do_sample: bool, sampling: dict[str, Any]
) -> dict[str, Any]:
    """The `generate` settings of the TTS front end: the family's end tokens, padding, length and sampling."""
    pad = adapter.tokenizer.pad_token_id
    pad = pad if pad is not None else adapter.end_token_ids[0]
    return {
        "end_token_ids": adapter.end_token_ids,
        "pad_token_id": pad,
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        **{k: v for k, v in sampling.items() if v is not None},
    }


def _pipeline_settings(
    adapter: SpeechTokenAdapter, decode: Callable, asr: Callable, metric: str, normalize: bool, spelling: Any
) -> dict[str, Any]:
    """The family, codec, decoder, ASR and scoring of the evaluation, for the report's settings."""
    return {
        "family": adapter.family,
        "codec": adapter.codec,
        "decode": getattr(decode, "__qualname__", type(decode).__name__),
        "asr": getattr(asr, "name", getattr(asr, "__name__", type(asr).__name__)),
        "metric": metric,
        "normalize": normalize,
        "spelling_map": spelling is not None,
    }


def _gathered_seconds(seconds: dict[str, float], accelerator) -> dict[str, float]:
    """Generation, decode and ASR seconds: the slowest process's, when several shared the work."""
    if accelerator.num_processes == 1:
        return seconds
    from accelerate.utils import gather_object

    parts = gather_object([seconds])
    return {key: max(part[key] for part in parts) for key in seconds}


def _tts_result(
    scored: WerResult, num_examples: int, seconds: dict[str, float], settings: dict[str, Any], accelerator
) -> TtsWerResult:
    """The `TtsWerResult` of scored transcripts: counts, the statuses of the generations, timing and settings."""
    records = scored.predictions
    generated_seconds = float(scored.audio_seconds or 0.0)
    similarities = [r["speaker_similarity"] for r in records if "speaker_similarity" in r]

    def rtf(compute: float) -> float | None:
        return compute / generated_seconds if generated_seconds > 0 else None

    return TtsWerResult(
        counts=scored.counts,
        metric=settings["metric"],
        num_utterances=num_examples,
        invalid=sum(r["status"] == "invalid" for r in records),
        undecodable=sum(r["status"] == "undecodable" for r in records),
        unended=sum(not r["ended"] for r in records),
        generated_seconds=generated_seconds,
        timing={
            "compute_seconds": scored.compute_seconds,
            "generation_seconds": seconds["generation"],
            "decode_seconds": seconds["decode"],
            "asr_seconds": seconds["asr"],
            "rtf_generation": rtf(seconds["generation"]),
            "rtf_total": rtf(scored.compute_seconds),
        },
        settings=settings,
        speaker_similarity=float(np.mean(similarities)) if similarities else None,
        num_processes=accelerator.num_processes,
        predictions=records,
    )
