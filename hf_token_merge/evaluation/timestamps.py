"""Timestamp quality of Whisper-style models: segments from `generate(return_timestamps=True)` and how far a
merged model's segment boundaries move from a reference (the unmerged model, or known pauses in the audio).

WER is blind to timestamps: a merge of the timestamp tokens can leave every word in place and still collapse the
segments. `timestamp_segments` parses the generated ids into `(start, end, text)` segments, and
`compare_timestamps` scores predicted segments against reference segments:

* segment counts, and the utterances whose count matches;
* boundary error: every reference boundary (segment starts and ends) is matched to the nearest predicted one; the
  mean of those distances in seconds (a boundary the prediction lost costs its distance to the nearest kept one);
* boundary recall: the share of reference boundaries with a predicted boundary within `tolerance` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

# Whisper's timestamp tokens step by 20 ms: <|0.00|>, <|0.02|>, ... <|30.00|>.
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.audio import TARGET_SAMPLING_RATE

TIME_PRECISION = 0.02


@dataclass(frozen=True)
class Segment:
    """One timestamped segment of a transcript.

    Attributes:
        start: Start time in seconds.
        end: End time in seconds, or None when the output ended before the closing timestamp.
        token_ids: The text tokens between the two timestamps.
    """

    start: float
    end: float | None
    token_ids: tuple[int, ...] = ()


def timestamp_segments(
    token_ids: Sequence[int], timestamp_begin: int, first_special_id: int, time_precision: float = TIME_PRECISION
) -> list[Segment]:
    """Split one generated Whisper sequence into timestamped segments.

    Whisper writes `<|t0|> text <|t1|><|t1|> text <|t2|> ...`: a segment opens at a timestamp, holds text tokens
    and closes at the next timestamp. Other special tokens (start of transcript, task, end of text) are skipped.

    Args:
        token_ids: Generated ids, prompt included or not.
        timestamp_begin: Id of `<|0.00|>` (Whisper: `generation_config.no_timestamps_token_id + 1`).
        first_special_id: Smallest id that is not text (Whisper: `<|endoftext|>`); ids from there up to
            `timestamp_begin` are skipped.
        time_precision: Seconds per timestamp step.

    Returns:
        The segments in order; a segment left open at the end of the output has `end=None`.
    """
    segments: list[Segment] = []
    start: float | None = None
    text: list[int] = []
    for token in (int(t) for t in token_ids):
        if token >= timestamp_begin:
            time = round((token - timestamp_begin) * time_precision, 2)
            if start is None:
                start = time
            elif text:
                segments.append(Segment(start, time, tuple(text)))
                start, text = None, []
            else:
                # two timestamps with no text between: the later one opens the segment
                start = time
        elif token < first_special_id and start is not None:
            text.append(token)
    if start is not None and text:
        segments.append(Segment(start, None, tuple(text)))
    return segments


def boundaries(segments: Sequence[Segment]) -> list[float]:
    """The distinct start and end times of `segments`, sorted (an open end is left out).

    Args:
        segments: Segments of one utterance.

    Returns:
        Sorted boundary times in seconds.
    """
    times = {s.start for s in segments} | {s.end for s in segments if s.end is not None}
    return sorted(times)


@dataclass
class TimestampComparison:
    """Predicted timestamps scored against reference timestamps over a set of utterances.

    Attributes:
        utterances: Number of utterances compared.
        reference_segments: Segments in the reference, summed.
        predicted_segments: Segments in the prediction, summed.
        same_count: Utterances whose predicted segment count equals the reference's.
        boundary_error: Mean distance in seconds from each reference boundary to the nearest predicted one.
        boundary_recall: Share of reference boundaries with a predicted boundary within `tolerance`.
        tolerance: The recall tolerance in seconds.
        per_utterance: Per utterance: reference and predicted boundaries and the mean boundary error.
    """

    utterances: int
    reference_segments: int
    predicted_segments: int
    same_count: int
    boundary_error: float
    boundary_recall: float
    tolerance: float
    per_utterance: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the comparison as a JSON-serialisable dict."""
        return asdict(self)


def compare_timestamps(
    reference: Sequence[Sequence[Segment]], predicted: Sequence[Sequence[Segment]], tolerance: float = 0.5
) -> TimestampComparison:
    """Score predicted segments against reference segments, utterance by utterance.

    Args:
        reference: Reference segments of each utterance (e.g. the unmerged model's).
        predicted: Predicted segments of the same utterances (e.g. the merged model's).
        tolerance: Seconds within which a reference boundary counts as recalled.

    Returns:
        The summed counts and the mean boundary error and recall over all reference boundaries.

    Raises:
        TokenMergeError: When the two lists differ in length.
    """
    if len(reference) != len(predicted):
        raise TokenMergeError(
            f"{len(reference)} reference utterances but {len(predicted)} predicted; pass one per utterance."
        )
    distances: list[float] = []
    rows = []
    for ref, pred in zip(reference, predicted, strict=True):
        ref_times, pred_times = boundaries(ref), boundaries(pred)
        if pred_times:
            nearest = [min(abs(t - p) for p in pred_times) for t in ref_times]
        else:
            nearest = [float("inf")] * len(ref_times)
        distances.extend(nearest)
        rows.append(
            {
                "reference": ref_times,
                "predicted": pred_times,
                "boundary_error": float(np.mean(nearest)) if nearest else 0.0,
            }
        )
    return TimestampComparison(
        utterances=len(reference),
        reference_segments=sum(len(r) for r in reference),
        predicted_segments=sum(len(p) for p in predicted),
        same_count=sum(len(r) == len(p) for r, p in zip(reference, predicted, strict=True)),
        boundary_error=float(np.mean(distances)) if distances else 0.0,
        boundary_recall=float(np.mean([d <= tolerance + 1e-9 for d in distances])) if distances else 1.0,
        tolerance=tolerance,
        per_utterance=rows,
    )


def inner_boundaries_in_pauses(
    segments: Sequence[Segment], pauses: Sequence[tuple[float, float]], slack: float = 0.25
) -> tuple[int, int]:
    """Count the inner segment boundaries (all but the first start and the last end) that lie in a pause.

    Args:
        segments: Segments of one utterance.
        pauses: `(start, end)` of the pauses of its audio in seconds (e.g. `reference.librivox.find_pauses`).
        slack: Seconds a boundary may lie outside a pause and still count.

    Returns:
        `(in_pause, inner)`: boundaries inside a pause, and inner boundaries in all.
    """
    times = boundaries(segments)[1:]
    if segments and segments[-1].end is not None:
        times = times[:-1]
    inside = sum(any(a - slack <= t <= b + slack for a, b in pauses) for t in times)
    return inside, len(times)


@torch.inference_mode()
def transcribe_segments(
    model, processor, audios: Sequence[np.ndarray], sampling_rate: int = TARGET_SAMPLING_RATE, batch_size: int = 8
) -> list[list[Segment]]:
    """Transcribe utterances of at most 30 s with timestamps (greedy `generate(return_timestamps=True)`).

    Args:
        model: A Whisper model (merged or not).
        processor: Its processor.
        audios: Mono float waveforms.
        sampling_rate: Their rate (16 kHz for Whisper).
        batch_size: Utterances per `generate` call.

    Returns:
        The segments of each utterance.
    """
    generation = model.generation_config
    timestamp_begin = int(generation.no_timestamps_token_id) + 1
    first_special = int(processor.tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    result: list[list[Segment]] = []
    for begin in range(0, len(audios), batch_size):
        features = processor.feature_extractor(
            list(audios[begin : begin + batch_size]),
            sampling_rate=sampling_rate,
            return_tensors="pt",
            return_attention_mask=True,
        )
        output = model.generate(
            features.input_features.to(device=model.device, dtype=model.dtype),
            attention_mask=features.attention_mask.to(model.device),
            return_timestamps=True,
            num_beams=1,
            do_sample=False,
        )
        sequences = output if torch.is_tensor(output) else output["sequences"]
        result.extend(timestamp_segments(row.tolist(), timestamp_begin, first_special) for row in sequences)
    return result
