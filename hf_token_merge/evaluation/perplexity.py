"""Perplexity of causal LMs on token sequences (speech units, text or both), with a sliding window.

Windows follow the transformers perplexity guide (fixed-length windows that move by `stride`), with the
border bookkeeping made exact. Token `t` of a sequence is predicted from ids `[a, t)` of the window
that scores it; every token from position 1 on is scored exactly once (position 0 has no context; start
sequences with `<bos>` to score every real token):

* window 0 feeds ids `[0, min(L, max_length))` and scores targets `1 .. min(L, max_length+1) - 1`;
* each later window scores the next `stride` targets `[s, e)` and feeds the `max_length` ids that end
  just before its last target, `[e-1-max_length, e-1)`, so target `s` sees `max_length - stride + 1`
  tokens of context and target `e-1` sees `max_length`.

The NLL is `-log_softmax(logits)[target]` over the ORIGINAL vocabulary (merged models return
original-space logits; with logit correction they are a proper distribution there), computed in
float32 and summed in float64 per sequence; the corpus NLL is the sum over sequences in dataset order.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.runner import get_accelerator, prepare_model, run_sharded, write_report
from hf_token_merge.sequence import sequence_merge_handle


def window_plan(length: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """The windows that score a sequence of `length` ids.

    Args:
        length: Sequence length.
        max_length: Most ids fed to the model at once.
        stride: Targets scored per window after the first.

    Returns:
        `(a, s, e)` per window: it feeds ids `[a, e-1)` and scores targets `[s, e)`.
    """
    if max_length < 1 or not 1 <= stride <= max_length:
        raise TokenMergeError(f"Need 1 <= stride <= max_length; got stride={stride}, max_length={max_length}.")
    windows = []
    start, end = 1, min(length, max_length + 1)
    while start < end:
        windows.append((max(0, end - 1 - max_length), start, end))
        start, end = end, min(length, end + stride)
    return windows


@torch.inference_mode()
def sequence_nll(model, ids: Sequence[int], max_length: int, stride: int) -> tuple[float, int]:
    """Summed NLL (nats) and number of scored tokens of one sequence.

    Args:
        model: A causal LM returning logits over the original vocabulary.
        ids: The token ids.
        max_length: Most ids per forward pass.
        stride: Targets per window after the first.

    Returns:
        `(nll_sum, token_count)`; token_count is `len(ids) - 1` (0 for sequences shorter than 2).
    """
    tokens = torch.as_tensor(list(ids), dtype=torch.long)
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    for a, s, e in window_plan(len(tokens), max_length, stride):
        inputs = tokens[a : e - 1].unsqueeze(0).to(model.device)
        logits = model(input_ids=inputs).logits[0, s - 1 - a :].float()
        targets = tokens[s:e].to(logits.device)
        if logits.shape[-1] <= int(targets.max()):
            raise TokenMergeError(
                f"The model returns {logits.shape[-1]} logits per position but the data holds id {int(targets.max())}. "
                "Perplexity is over the original ids: a merged model with compact_logits=True returns merged-row "
                "logits. Fix: merge with compact_logits=False, or check that the data fits the tokenizer."
            )
        log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None])[:, 0]
        total -= log_probs.double().sum().cpu()
        count += e - s
    return float(total), count


@dataclass
class PerplexityResult:
    """Outcome of `evaluate_perplexity`.

    Attributes:
        nll_sum: Summed negative log-likelihood (nats) of all scored tokens.
        token_count: Scored tokens.
        num_sequences: Sequences.
        max_length: Window size used.
        stride: Stride used.
        compute_seconds: Wall time of the sharded loop.
        process_seconds: Loop time summed over processes.
        num_processes: Processes that shared the work.
        per_sequence: `{"index", "nll_sum", "token_count"}` per sequence, in order.
    """

    nll_sum: float
    token_count: int
    num_sequences: int
    max_length: int
    stride: int
    compute_seconds: float
    process_seconds: float
    num_processes: int
    per_sequence: list[dict[str, Any]]

    @property
    def mean_nll(self) -> float:
        return self.nll_sum / self.token_count

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll) if self.mean_nll < 700 else float("inf")

    @property
    def bits_per_token(self) -> float:
        return self.mean_nll / math.log(2)

    @property
    def tokens_per_second(self) -> float:
        return self.token_count / self.compute_seconds if self.compute_seconds > 0 else float("inf")

    def metrics(self) -> dict[str, Any]:
        """The deterministic numbers (identical for any number of processes)."""
        return {
            "perplexity": self.perplexity,
            "mean_nll": self.mean_nll,
            "bits_per_token": self.bits_per_token,
            "nll_sum": self.nll_sum,
            "token_count": self.token_count,
            "sequences": self.num_sequences,
            "max_length": self.max_length,
            "stride": self.stride,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": "perplexity",
            "metrics": self.metrics(),
            "timing": {
                "compute_seconds": self.compute_seconds,
                "process_seconds": self.process_seconds,
                "tokens_per_second": self.tokens_per_second,
                "num_processes": self.num_processes,
            },
        }

    def save(self, output_dir: str | os.PathLike[str], prefix: str = "perplexity") -> dict[str, Path]:
        """Write `{prefix}.json` and `{prefix}_sequences.jsonl`."""
        return write_report(output_dir, prefix, self.to_dict(), self.per_sequence, "sequences")

    def __str__(self) -> str:
        return (
            f"perplexity {self.perplexity:.4f} (mean NLL {self.mean_nll:.4f} nats, "
            f"{self.bits_per_token:.4f} bits/token, {self.token_count} tokens in {self.num_sequences} sequences)"
        )


def _sequences(data, tokenizer, column: str | None) -> list[list[int]]:
    """Token id lists from a Dataset/list of dicts (`input_ids` or text column), lists of ids, or strings."""
    if hasattr(data, "column_names") or (isinstance(data, Sequence) and data and isinstance(data[0], dict)):
        names = list(data.column_names) if hasattr(data, "column_names") else list(data[0])
        if column is None:
            column = "input_ids" if "input_ids" in names else "text" if "text" in names else None
        if column is None or column not in names:
            raise TokenMergeError(
                f"evaluate_perplexity: the data has no column {column or 'input_ids/text'!r} (columns: {names}). "
                "Fix: pass column= naming the token ids or the text."
            )
        data = data[column] if hasattr(data, "column_names") else [example[column] for example in data]
    if isinstance(data, torch.Tensor):
        data = data.tolist() if data.ndim == 2 else [data.tolist()]
    if not isinstance(data, Sequence) or len(data) == 0:
        raise TokenMergeError("evaluate_perplexity: the data is empty. Fix: pass at least one sequence of 2+ tokens.")
    for index, item in enumerate(data):  # all examples first: a bad one fails before any tokenising
        if item is None or isinstance(item, (int, float, bool, dict)):
            raise TokenMergeError(
                f"evaluate_perplexity: example {index} (counting from 0; line {index + 1} of a manifest without blank "
                f"lines) is {item!r} ({type(item).__name__}), neither a text nor a list of token ids. "
                "Fix: give every example a text string or a list of ids, or remove the example."
            )
    sequences = []
    for item in data:
        if isinstance(item, str):
            if tokenizer is None:
                raise TokenMergeError(
                    "evaluate_perplexity got text but no tokenizer. Fix: pass tokenizer= or token ids."
                )
            ids = list(tokenizer(item).input_ids)
            bos = getattr(tokenizer, "bos_token_id", None)
            if bos is not None and (not ids or ids[0] != bos):
                ids.insert(0, bos)  # so the first real token is scored too
            sequences.append(ids)
        else:
            sequences.append([int(token) for token in item])
    return sequences


def _check_ids(sequences: list[list[int]], model) -> None:
    """Refuse ids outside the model's (original) id space, which would index out of range or wrap around."""
    embedding = model.get_input_embeddings()
    vocab_size = int(getattr(embedding, "vocab_size", None) or embedding.num_embeddings)  # merged: the original ids
    for index, sequence in enumerate(sequences):
        bad = [token for token in sequence if not 0 <= token < vocab_size]
        if bad:
            raise TokenMergeError(
                f"evaluate_perplexity: sequence {index} (0-based) holds id(s) {bad[:5]} outside the model's "
                f"vocabulary [0, {vocab_size}). Fix: pass ids tokenized for this model."
            )


def prepare_sequences(
    data,
    model,
    *,
    tokenizer=None,
    column: str | None = None,
    max_length: int | None = None,
    stride: int | None = None,
    caller: str = "evaluate_perplexity",
) -> tuple[list[list[int]], int, int]:
    """Token sequences and window settings of a teacher-forced evaluation, checked before any model runs.

    Args:
        data: Lists of ids, strings (with `tokenizer`), a tensor, or a Dataset / list of dicts.
        model: The causal LM whose vocabulary and `max_position_embeddings` apply.
        tokenizer: Tokenizes strings.
        column: Field with `input_ids` or text.
        max_length: Ids per forward pass; default `max_position_embeddings` (1024 without it).
        stride: Targets per window after the first; default `max_length // 2`.
        caller: Named in the error messages.

    Returns:
        `(sequences, max_length, stride)`.

    Raises:
        TokenMergeError: Ids outside the vocabulary, an invalid window pair, or nothing to score.
    """
    sequences = _sequences(data, tokenizer, column)
    _check_ids(sequences, model)
    if max_length is None:
        max_length = int(getattr(model.config, "max_position_embeddings", 0) or 1024)
    stride = stride if stride is not None else max(1, max_length // 2)
    window_plan(2, max_length, stride)  # validates the pair
    if sum(max(0, len(sequence) - 1) for sequence in sequences) == 0:
        raise TokenMergeError(
            f"{caller}: no sequence has 2 or more tokens, so nothing can be scored. Fix: pass longer sequences."
        )
    return sequences, max_length, stride


@dataclass
class TeacherForcedRun:
    """What `run_teacher_forced` measured: the per-sequence records, their sums and the settings.

    Attributes:
        records: One dict per sequence, in dataset order (whatever the number of processes).
        sums: The `summed` keys of the records, added in dataset order (the same floats for 1 or N processes).
        token_count: Scored tokens.
        num_sequences: Sequences.
        max_length: Window size used.
        stride: Stride used.
        timing: `run_sharded`'s timing (`compute_seconds`, `process_seconds`).
        accelerator: The accelerator the run used.
    """

    records: list[dict[str, Any]]
    sums: dict[str, float]
    token_count: int
    num_sequences: int
    max_length: int
    stride: int
    timing: dict[str, float]
    accelerator: Any

    def result_fields(self) -> dict[str, Any]:
        """The fields every teacher-forced result shares (counts, settings, compute time, per-sequence records)."""
        return {
            "token_count": self.token_count,
            "num_sequences": self.num_sequences,
            "max_length": self.max_length,
            "stride": self.stride,
            "compute_seconds": self.timing["compute_seconds"],
            "num_processes": self.accelerator.num_processes,
            "per_sequence": self.records,
        }


def run_teacher_forced(
    models: Sequence[Any],
    data,
    score: Callable[..., list[dict[str, Any]]],
    summed: Sequence[str],
    *,
    options: dict[str, Any],
    caller: str,
    show_progress: bool,
) -> TeacherForcedRun:
    """The shared loop of `evaluate_perplexity` and `evaluate_kl`: check the data, place the models, shard, sum.

    Args:
        models: The causal LMs to run; the first one's vocabulary and `max_position_embeddings` apply.
        data: The sequences, as `prepare_sequences` reads them.
        score: `score(*models, sequences, max_length, stride, indices) -> records` of one process's shard; each
            record has `token_count` and the `summed` keys.
        summed: The record keys to add up.
        options: The evaluator's `tokenizer`, `column`, `max_length`, `stride`, `dtype`, `device`, `accelerator`.
        caller: Named in error messages and the progress bar.
        show_progress: tqdm bar on the main process.

    Returns:
        A `TeacherForcedRun`.
    """
    sequences, max_length, stride = prepare_sequences(
        data,
        models[0],
        tokenizer=options["tokenizer"],
        column=options["column"],
        max_length=options["max_length"],
        stride=options["stride"],
        caller=caller,
    )
    accelerator = get_accelerator(options["accelerator"], options["device"])
    prepared = [prepare_model(model, accelerator, options["dtype"], options["device"]) for model in models]
    process = functools.partial(score, *prepared, sequences, max_length, stride)
    label = caller.removeprefix("evaluate_")
    records, timing = run_sharded(accelerator, len(sequences), 1, process, label, show_progress)
    sums = dict.fromkeys(summed, 0.0)
    for record in records:  # dataset order: the same float sums for any number of processes
        for key in sums:
            sums[key] += record[key]
    token_count = sum(record["token_count"] for record in records)
    return TeacherForcedRun(records, sums, token_count, len(sequences), max_length, stride, timing, accelerator)


def _nll_records(model, sequences: list, max_length: int, stride: int, indices: list[int]) -> list[dict[str, Any]]:
    """NLL sums of the sequences at `indices` (one process's shard)."""
    out = []
    for index in indices:
        nll, count = sequence_nll(model, sequences[index], max_length, stride)
        out.append({"index": index, "nll_sum": nll, "token_count": count})
    return out


def evaluate_perplexity(
    model,
    data,
    *,
    tokenizer=None,
    column: str | None = None,
    max_length: int | None = None,
    stride: int | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    accelerator=None,
    output_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
) -> PerplexityResult:
    """Sliding-window perplexity of a causal LM over token sequences, on 1 or N processes.

    Args:
        model: A causal LM (merged or not); encoder-decoders are refused.
        data: Lists of token ids, strings (with `tokenizer`), a tensor, or a Dataset / list of dicts with an
            `input_ids` or `text` column.
        tokenizer: Tokenizes strings (special tokens added; `<bos>` is prepended if the tokenizer has one
            and did not add it, so the first word is scored too).
        column: Column to read from a Dataset.
        max_length: Most ids per forward pass; default: `model.config.max_position_embeddings`.
        stride: Targets per window after the first; default `max_length // 2`.
        dtype: Evaluate in this dtype; default: the model's.
        device: `"cpu"` forces CPU.
        accelerator: An `accelerate.Accelerator`; default: a new one.
        output_dir: Write `perplexity.json` and `perplexity_sequences.jsonl` there (main process).
        show_progress: tqdm bar on the main process.

    Returns:
        A `PerplexityResult` (the same on every process).
    """
    if getattr(model.config, "is_encoder_decoder", False):
        raise TokenMergeError(
            f"evaluate_perplexity scores causal LMs; {type(model).__name__} is an encoder-decoder whose decoder "
            "needs audio features. Fix: evaluate it with evaluate_wer, or pass a causal LM (e.g. LlamaForCausalLM)."
        )
    if sequence_merge_handle(model) is not None:
        raise TokenMergeError(
            "evaluate_perplexity needs a logit for every input position, but a sequence merge is installed and "
            "shortens the input. Fix: measure perplexity before apply_sequence_merge or after handle.remove()."
        )
    options = {"tokenizer": tokenizer, "column": column, "max_length": max_length, "stride": stride}
    options |= {"dtype": dtype, "device": device, "accelerator": accelerator}
    run = run_teacher_forced(
        [model], data, _nll_records, ["nll_sum"], options=options, caller="evaluate_perplexity",
        show_progress=show_progress,
    )  # fmt: skip
    result = PerplexityResult(
        nll_sum=run.sums["nll_sum"], process_seconds=run.timing["process_seconds"], **run.result_fields()
    )
    if output_dir is not None and run.accelerator.is_main_process:
        result.save(output_dir)
    return result
