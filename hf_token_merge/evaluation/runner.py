"""One code path for one process or many: batches are formed globally, then whole batches are sharded.

Under plain `python` the `Accelerator` has one process and runs every batch. Under
`accelerate launch --num_processes N` each process takes a contiguous slice of the *batches* with
`split_between_processes` (no padding, so an uneven split neither duplicates nor drops a sample), the
per-example records are collected with `gather_object` and put back in dataset order. Because the
batches themselves do not depend on the number of processes, every example sees exactly the same
computation (same batch mates, same padding), and the metrics from 1 and N processes are identical.
Aggregates are sums of per-example counts in dataset order, never averages of per-process averages.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from hf_token_merge.errors import TokenMergeError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """`"float32"`/`"bfloat16"`/`"float16"` or a torch dtype → torch dtype (None stays None)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise TokenMergeError(f"Unknown dtype {dtype!r}. Fix: use one of {sorted(_DTYPES)}.")
    return _DTYPES[dtype]


def get_accelerator(accelerator: Accelerator | None = None, device: str | None = None) -> Accelerator:
    """The caller's accelerator, or a new one.

    A new one runs on CPU (gloo backend when launched with several processes) when `device == "cpu"`,
    when `ACCELERATE_USE_CPU` is set, or when several processes were launched on a machine without CUDA:
    accelerate only picks its multi-CPU mode when asked for CPU, and without that each process would
    silently run the whole evaluation alone.
    """
    if accelerator is not None:
        return accelerator
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = (
        device == "cpu"
        or os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
        or (launched and not torch.cuda.is_available())
    )
    return Accelerator(cpu=cpu)


def prepare_model(model: torch.nn.Module, accelerator: Accelerator, dtype=None, device: str | None = None):
    """Put the model in eval mode on the evaluation device and dtype (dispatched models stay where they are)."""
    model.eval()
    dtype = resolve_dtype(dtype)
    if dtype is not None and dtype != model.dtype:
        model.to(dtype)
    if getattr(model, "hf_device_map", None) is None:
        target = torch.device(device) if device not in (None, "cpu") else accelerator.device
        if model.device != target:
            model.to(target)
    return model


def run_sharded(
    accelerator: Accelerator,
    num_examples: int,
    batch_size: int,
    process_batch: Callable[[list[int]], list[dict[str, Any]]],
    desc: str,
    show_progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Run `process_batch` over every batch of example indices, sharded over the processes.

    Args:
        accelerator: The accelerator (1 or more processes).
        num_examples: Number of examples.
        batch_size: Examples per batch (batches are fixed before sharding).
        process_batch: Takes a list of example indices, returns one record per example with key `index`.
        desc: Progress bar label (shown on the main process only).
        show_progress: Show a tqdm bar.

    Returns:
        All records in example order (on every process), and timing: `compute_seconds` (slowest
        process's loop time, i.e. wall time of the sharded loop), `process_seconds` (sum over processes).
    """
    if batch_size < 1:
        raise TokenMergeError(f"batch_size must be >= 1, got {batch_size}.")
    batches = [
        list(range(start, min(start + batch_size, num_examples))) for start in range(0, num_examples, batch_size)
    ]
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    with accelerator.split_between_processes(batches) as mine:
        bar = tqdm(mine, desc=desc, unit="batch", disable=not (show_progress and accelerator.is_main_process))
        for batch in bar:
            records.extend(process_batch(batch))
    seconds = time.perf_counter() - started
    if accelerator.num_processes > 1:
        records = gather_object(records)
        times = gather_object([seconds])
    else:
        times = [seconds]
    records.sort(key=lambda record: record["index"])
    if [record["index"] for record in records] != list(range(num_examples)):
        raise RuntimeError("Sharded evaluation lost or duplicated examples; this is a bug, please report it.")
    return records, {"compute_seconds": max(times), "process_seconds": sum(times)}


def write_report(
    output_dir: str | os.PathLike[str],
    prefix: str,
    report: dict[str, Any],
    records: list[dict] | None,
    records_name: str,
) -> dict[str, Path]:
    """Write `{prefix}.json` (the report) and `{prefix}_{records_name}.jsonl` (one line per example).

    The one writer of evaluation reports: `wer.json` (`WerResult.save`), `perplexity.json`, and `merge.json` of
    `hf-token-merge compress` go through it, so they carry the same detail in the same layout.

    Args:
        output_dir: The folder (created).
        prefix: The report's name, e.g. `wer`.
        report: JSON-serialisable numbers (other values are written with `str`).
        records: One dict per example, or None for a report without per-example lines.
        records_name: What the records are, e.g. `predictions`.

    Returns:
        `{"report": path}`, plus `{records_name: path}` when there are records.
    """
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    report_path, lines_path = folder / f"{prefix}.json", folder / f"{prefix}_{records_name}.jsonl"
    report_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    if records is None:
        return {"report": report_path}
    with open(lines_path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {"report": report_path, records_name: lines_path}


def finish(accelerator: Accelerator) -> None:
    """Wait for every process, then tear the process group down.

    Without this, a gloo process group can still hold threads when the interpreter exits, and the process
    aborts with "terminate called without an active exception" after its work is done.
    """
    accelerator.wait_for_everyone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
