"""Codec-free proxy for what a merge does to generation: per-token KL divergence from the unmerged model.

Teacher-forced on recorded sequences (speech-token sequences of real utterances, or any text), each target
position `t` compares the next-token distributions of the unmerged model `P` and the merged model `Q` given the
same context: `KL(P || Q) = sum_v P(v) (log P(v) - log Q(v))` over the ORIGINAL vocabulary. A merged model answers
in the original id space (its head spreads a merged row's probability over the row's members with the logit
correction), so the two distributions are directly comparable; an identity merge gives exactly 0. No codec and no
ASR model are needed, so every user can run it.

The windows and the sharding are those of `evaluate_perplexity` (`window_plan`, `run_sharded`): every position
from 1 on is scored once, whole batches are sharded over the processes, and sums are taken in dataset order, so
1 and N processes give identical numbers. The same pass also sums both models' NLL of the actual targets.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.perplexity import run_teacher_forced, window_plan
from hf_token_merge.evaluation.runner import write_report
from hf_token_merge.sequence import sequence_merge_handle


def _log_probs(model, inputs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """float32 log-softmax of the model's logits for `(batch, length)` ids."""
    kwargs = {"attention_mask": mask} if mask is not None else {}
    return torch.log_softmax(model(input_ids=inputs, **kwargs).logits.float(), dim=-1)


def _kl_terms(baseline: torch.Tensor, merged: torch.Tensor) -> torch.Tensor:
    """`KL(P || Q)` per position from log-probabilities `(..., V)`, in float64; 0 * log 0 counts as 0."""
    if baseline.shape[-1] != merged.shape[-1]:
        raise TokenMergeError(
            f"The baseline (unmerged) model returns {baseline.shape[-1]} logits per position and the merged model "
            f"{merged.shape[-1]}. KL needs both over the original ids: a merged model with compact_logits=True "
            "returns merged-row logits. Fix: merge with compact_logits=False, and compare a model with its own merge."
        )
    p = baseline.double().exp()
    terms = p * (baseline.double() - merged.double())
    return torch.where(p > 0, terms, torch.zeros_like(terms)).sum(-1)


@torch.inference_mode()
def sequence_kl(
    baseline_model, merged_model, ids: Sequence[int], max_length: int, stride: int
) -> tuple[float, float, float, int]:
    """Summed per-token KL and NLLs of one sequence, window by window (as `sequence_nll`).

    Args:
        baseline_model: The unmerged causal LM (P).
        merged_model: The merged causal LM (Q), answering over the original ids.
        ids: The token ids.
        max_length: Most ids per forward pass.
        stride: Targets per window after the first.

    Returns:
        `(kl_sum, baseline_nll_sum, merged_nll_sum, token_count)`, sums in float64, count `len(ids) - 1`.
    """
    tokens = torch.as_tensor(list(ids), dtype=torch.long)
    kl = baseline_nll = merged_nll = torch.zeros((), dtype=torch.float64)
    count = 0
    for a, s, e in window_plan(len(tokens), max_length, stride):
        inputs = tokens[a : e - 1].unsqueeze(0)
        baseline = _log_probs(baseline_model, inputs.to(baseline_model.device))[0, s - 1 - a :]
        merged = _log_probs(merged_model, inputs.to(merged_model.device))[0, s - 1 - a :].to(baseline.device)
        targets = tokens[s:e].to(baseline.device)[:, None]
        if baseline.shape[-1] <= int(targets.max()):
            raise TokenMergeError(
                f"The models return {baseline.shape[-1]} logits per position but the data holds id "
                f"{int(targets.max())}. Fix: check that the data fits the tokenizer."
            )
        kl = kl + _kl_terms(baseline, merged).sum().cpu()
        baseline_nll = baseline_nll - baseline.gather(-1, targets).double().sum().cpu()
        merged_nll = merged_nll - merged.gather(-1, targets).double().sum().cpu()
        count += e - s
    return float(kl), float(baseline_nll), float(merged_nll), count


@dataclass
class KLResult:
    """Outcome of `evaluate_kl`.

    Attributes:
        kl_sum: Summed per-token KL(unmerged || merged), nats.
        baseline_nll_sum: Summed NLL of the targets under the unmerged model.
        merged_nll_sum: The same under the merged model.
        token_count: Scored tokens.
        num_sequences: Sequences.
        max_length: Window size used.
        stride: Stride used.
        compute_seconds: Wall time of the sharded loop.
        num_processes: Processes that shared the work.
        per_sequence: `{"index", "kl_sum", "baseline_nll_sum", "merged_nll_sum", "token_count"}`, in order.
    """

    kl_sum: float
    baseline_nll_sum: float
    merged_nll_sum: float
    token_count: int
    num_sequences: int
    max_length: int
    stride: int
    compute_seconds: float
    num_processes: int
    per_sequence: list[dict[str, Any]]

    @property
    def mean_kl(self) -> float:
        """Mean per-token KL (nats)."""
        return self.kl_sum / self.token_count

    @property
    def nll_increase(self) -> float:
        """Mean NLL of the targets, merged minus unmerged (nats per token)."""
        return (self.merged_nll_sum - self.baseline_nll_sum) / self.token_count

    def metrics(self) -> dict[str, Any]:
        """The deterministic numbers (identical for any number of processes)."""
        return {
            "mean_kl": self.mean_kl,
            "kl_sum": self.kl_sum,
            "nll_increase": self.nll_increase,
            "baseline_nll_sum": self.baseline_nll_sum,
            "merged_nll_sum": self.merged_nll_sum,
            "token_count": self.token_count,
            "sequences": self.num_sequences,
            "max_length": self.max_length,
            "stride": self.stride,
        }

    def to_dict(self) -> dict[str, Any]:
        """The report: task, metrics, timing."""
        return {
            "task": "kl",
            "metrics": self.metrics(),
            "timing": {"compute_seconds": self.compute_seconds, "num_processes": self.num_processes},
        }

    def save(self, output_dir: str | os.PathLike[str], prefix: str = "kl") -> dict[str, Path]:
        """Write `{prefix}.json` and `{prefix}_sequences.jsonl`."""
        return write_report(output_dir, prefix, self.to_dict(), self.per_sequence, "sequences")

    def __str__(self) -> str:
        return (
            f"KL(unmerged || merged) {self.mean_kl:.6f} nats/token, NLL {self.nll_increase:+.6f} nats/token "
            f"({self.token_count} tokens in {self.num_sequences} sequences)"
        )


def _refuse_models(baseline_model, merged_model) -> None:
    """Refuse encoder-decoders, the same object twice, and a model with a sequence merge installed."""
    for name, model in (("baseline_model", baseline_model), ("merged_model", merged_model)):
        if getattr(model.config, "is_encoder_decoder", False):
            raise TokenMergeError(
                f"evaluate_kl scores causal LMs; {name} is an encoder-decoder ({type(model).__name__}). "
                "Fix: pass causal LMs (e.g. LlamaForCausalLM)."
            )
    if baseline_model is merged_model:
        raise TokenMergeError(
            "evaluate_kl got the same model object twice; the merge works in place, so this compares the merged "
            "model with itself. Fix: load the unmerged model separately (or copy.deepcopy it before merging)."
        )
    for model in (baseline_model, merged_model):
        if sequence_merge_handle(model) is not None:
            raise TokenMergeError(
                "evaluate_kl needs a distribution at every input position, but a sequence merge is installed and "
                "shortens the input. Fix: measure KL before apply_sequence_merge or after handle.remove()."
            )


def _kl_records(
    baseline_model, merged_model, sequences: list, max_length: int, stride: int, indices: list[int]
) -> list[dict[str, Any]]:
    """KL and NLL sums of the sequences at `indices` (one process's shard)."""
    out = []
    for index in indices:
        kl, baseline_nll, merged_nll, count = sequence_kl(
            baseline_model, merged_model, sequences[index], max_length, stride
        )
        out.append(
            {
                "index": index,
                "kl_sum": kl,
                "baseline_nll_sum": baseline_nll,
                "merged_nll_sum": merged_nll,
                "token_count": count,
            }
        )
    return out


def evaluate_kl(
    baseline_model,
    merged_model,
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
) -> KLResult:
    """Per-token KL divergence of a merged model's next-token distribution from its unmerged model's.

    Args:
        baseline_model: The unmerged causal LM (load it twice, or `copy.deepcopy` it before merging: the merge
            works in place).
        merged_model: The merged causal LM (`compact_logits=False`, the default).
        data: The sequences to teacher-force, as for `evaluate_perplexity`: lists of ids, strings (with `tokenizer`), a
            tensor, or a Dataset / list of dicts with `input_ids` or `text`. For TTS, the speech-token sequences of
            real utterances (prompt + codes) are the natural choice.
        tokenizer: Tokenizes strings.
        column: Column to read from a Dataset.
        max_length: Most ids per forward pass; default: the baseline model's `max_position_embeddings`.
        stride: Targets per window after the first; default `max_length // 2`.
        dtype: Evaluate both models in this dtype; default: their own.
        device: `"cpu"` forces CPU.
        accelerator: An `accelerate.Accelerator`; default: a new one.
        output_dir: Write `kl.json` and `kl_sequences.jsonl` there (main process).
        show_progress: tqdm bar on the main process.

    Returns:
        A `KLResult` (the same on every process).
    """
    _refuse_models(baseline_model, merged_model)
    options = {"tokenizer": tokenizer, "column": column, "max_length": max_length, "stride": stride}
    options |= {"dtype": dtype, "device": device, "accelerator": accelerator}
    summed = ["kl_sum", "baseline_nll_sum", "merged_nll_sum"]
    run = run_teacher_forced(
        [baseline_model, merged_model], data, _kl_records, summed, options=options, caller="evaluate_kl",
        show_progress=show_progress,
    )  # fmt: skip
    result = KLResult(**run.sums, **run.result_fields())
    if output_dir is not None and run.accelerator.is_main_process:
        result.save(output_dir)
    return result
