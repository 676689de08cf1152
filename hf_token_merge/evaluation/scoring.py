"""The shared scoring core of every transcript-based evaluation (WER), whatever model made the transcripts.

A *front end* knows one kind of model: it turns a batch of example indices into `Transcript`s (example id,
target (ground-truth) text, hypothesis text, optional extra per-utterance fields such as `duration` in seconds).
The core does the rest, the same for every front end:

* shard: batches are fixed before sharding and whole batches go to the processes (`runner.run_sharded`), so an
  example sees the same computation under 1 or N processes;
* normalise and align: both sides through Whisper's English normaliser, aligned with jiwer (`text.error_counts`);
* count, gather and report: per-utterance counts are gathered in dataset order and summed (never averaged), so
  the metrics are identical under 1 and N processes; `WerResult` holds them with the timing and the predictions.

Front ends: encoder-decoder ASR (Whisper) and causal speech-LLM ASR from unit prompts (`asr.py`), and TTS
(`tts/evaluate.py`: text -> generated speech codes -> decoded audio -> ASR transcript), which yields the sentence as
the target, the ASR transcript as the hypothesis and the generated seconds as `duration`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.runner import run_sharded, write_report
from hf_token_merge.evaluation.text import ErrorCounts, character_error_counts, error_counts, normalize_transcript

METRICS = ("wer", "cer")


@dataclass(frozen=True)
class Transcript:
    """What a front end produces for one example.

    Attributes:
        index: Position in the dataset (records are put back in this order).
        id: The example's name.
        target: The correct (ground-truth) text.
        hypothesis: The model's text.
        extra: Further per-utterance fields, written into the record after the counts. `duration` (seconds of
            audio, or None) is summed into `WerResult.audio_seconds`.
    """

    index: int
    id: str
    target: str
    hypothesis: str
    extra: dict[str, Any] = field(default_factory=dict)


class FrontEnd(Protocol):
    """A model kind's half of an evaluation: example indices in, transcripts out (one per index, same order)."""

    def __call__(self, indices: list[int]) -> list[Transcript]: ...


def transcript_record(
    transcript: Transcript, normalize: bool = True, spelling: Mapping[str, str] | None = None, metric: str = "wer"
) -> dict[str, Any]:
    """The per-utterance record of a transcript: texts, normalised texts, alignment counts, then the extras.

    Args:
        transcript: A front end's output for one example.
        normalize: Score normalised texts (Whisper's English normaliser).
        spelling: The normaliser's British-to-American spelling map (`text.spelling_map_of(asr_tokenizer)`).
        metric: `"wer"` (words) or `"cer"` (characters of the normalised texts, spaces included; the counts then
            count characters).

    Returns:
        A JSON-serialisable dict (one line of `wer_predictions.jsonl`).
    """
    target, hypothesis = transcript.target, transcript.hypothesis
    target_normalized = normalize_transcript(target, spelling) if normalize else target
    hypothesis_normalized = normalize_transcript(hypothesis, spelling) if normalize else hypothesis
    if metric == "wer":
        counts = error_counts(target, hypothesis, normalize, spelling)
    else:
        counts = character_error_counts(target_normalized, hypothesis_normalized)
    return {
        "index": transcript.index,
        "id": transcript.id,
        "target": target,
        "prediction": hypothesis,
        "target_normalized": target_normalized,
        "prediction_normalized": hypothesis_normalized,
        **counts.to_dict(),
        **transcript.extra,
    }


def summed_counts(records: Iterable[dict[str, Any]]) -> ErrorCounts:
    """Corpus counts: the sum of the records' counts, in order."""
    total = ErrorCounts()
    for record in records:
        total = total + ErrorCounts(record["hits"], record["substitutions"], record["deletions"], record["insertions"])
    return total


def summed_seconds(records: list[dict[str, Any]]) -> float | None:
    """Total `duration` of the records, or None when any record has none."""
    durations = [record.get("duration") for record in records]
    return None if any(d is None for d in durations) else float(sum(durations))


@dataclass
class WerResult:
    """Outcome of `evaluate_wer` (and of any front end scored by `score_transcripts`).

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
            f"/ {c.target_words} words, {self.num_utterances} utterances{rtfx})"
        )


# Per-utterance fields that do not depend on the model; `paired_predictions` writes them once.
SHARED_FIELDS = ("index", "id", "target", "target_normalized", "duration")


def paired_predictions(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per utterance with both models' predictions and error counts side by side.

    Args:
        before: `WerResult.predictions` of the original model.
        after: `WerResult.predictions` of the merged model, on the same data.

    Returns:
        Dicts with the shared fields (`index`, `id`, `target`, ...) once and every other field twice,
        suffixed `_before` and `_after` (`prediction_before`, `substitutions_after`, ...).

    Raises:
        TokenMergeError: When the two lists are not the same utterances in the same order.
    """
    if [r.get("id") for r in before] != [r.get("id") for r in after]:
        raise TokenMergeError(
            "paired_predictions needs both evaluations on the same utterances, in the same order. Fix: evaluate "
            "the model before and after the merge on the same data."
        )
    paired = []
    for old, new in zip(before, after, strict=True):
        record = {key: old[key] for key in SHARED_FIELDS if key in old}
        for side, values in (("before", old), ("after", new)):
            record.update({f"{key}_{side}": value for key, value in values.items() if key not in SHARED_FIELDS})
        paired.append(record)
    return paired


def score_transcripts(
    front_end: FrontEnd,
    num_examples: int,
    *,
    accelerator,
    batch_size: int = 8,
    normalize: bool = True,
    spelling: Mapping[str, str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
    desc: str = "WER",
    metric: str = "wer",
) -> WerResult:
    """Run a front end over every example, sharded over the processes, and score its transcripts.

    Args:
        front_end: `indices -> transcripts` for one model kind (see `asr.EncoderDecoderAsr`, `asr.CausalLmAsr`).
        num_examples: Examples in the data.
        accelerator: An `accelerate.Accelerator` (1 or more processes).
        batch_size: Examples per front-end call (fixed before sharding, so results do not depend on processes).
        normalize: Score normalised transcripts (Whisper's English normaliser).
        spelling: The normaliser's spelling map, where the ASR tokenizer provides one (`text.spelling_map_of`).
        output_dir: Write `wer.json` and `wer_predictions.jsonl` there (main process).
        show_progress: tqdm bar on the main process.
        desc: Progress bar label.
        metric: `"wer"`, or `"cer"` (character counts of the normalised texts, e.g. for Chinese).

    Returns:
        A `WerResult` (the same on every process).
    """
    if metric not in METRICS:
        raise TokenMergeError(f"metric must be one of {list(METRICS)}, got {metric!r}. Fix: pass 'wer' or 'cer'.")

    def score_batch(indices: list[int]) -> list[dict[str, Any]]:
        transcripts = front_end(indices)
        if [t.index for t in transcripts] != indices:
            raise RuntimeError("A front end must return one transcript per index, in order; this is a bug.")
        return [transcript_record(t, normalize, spelling, metric) for t in transcripts]

    records, timing = run_sharded(accelerator, num_examples, batch_size, score_batch, desc, show_progress)
    result = WerResult(
        counts=summed_counts(records),
        num_utterances=num_examples,
        audio_seconds=summed_seconds(records),
        compute_seconds=timing["compute_seconds"],
        process_seconds=timing["process_seconds"],
        num_processes=accelerator.num_processes,
        predictions=records,
    )
    if output_dir is not None and accelerator.is_main_process:
        result.save(output_dir)
    return result
