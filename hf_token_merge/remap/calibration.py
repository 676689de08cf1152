"""Calibration counts: how often each id occurs in id sequences (`count_tokens`) or in what a tokenizer makes of
(weighted) English text (`count_text_tokens`, `calibration_counts`).

`plan_token_merge(token_counts=...)` and the `frequency` method (sweep strategy) rank rows by these counts. A
calibration file is plain UTF-8 text, one example per line, used verbatim (a leading space is kept, which
matters for byte-level BPE: `" the"` and `"the"` are different tokens). A line may end in a TAB and a
non-negative number, its weight (default 1), so a word-frequency list counts each word by its frequency.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hf_token_merge.errors import TokenMergeError


def count_tokens(token_ids: Any, vocab_size: int) -> torch.Tensor:
    """Count how often every id occurs in calibration data.

    Args:
        token_ids: A tensor, or an iterable of sequences (lists or tensors) of ids.
        vocab_size: Length of the returned counts.

    Returns:
        `(vocab_size,)` int64 counts.
    """
    counts = torch.zeros(vocab_size, dtype=torch.long)
    sequences = [token_ids] if isinstance(token_ids, torch.Tensor) else token_ids
    for sequence in sequences:
        ids = torch.as_tensor(sequence).flatten().long()
        if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
            raise TokenMergeError(
                f"calibration ids must lie in [0, {vocab_size}); got {int(ids.min())}..{int(ids.max())}."
            )
        counts += torch.bincount(ids, minlength=vocab_size)
    return counts


def read_calibration_text(path: str | os.PathLike[str]) -> tuple[list[str], list[float]]:
    """Read a calibration file: one text per line, optionally followed by a TAB and a weight.

    Args:
        path: The UTF-8 text file. Empty lines are skipped.

    Returns:
        `(texts, weights)`, one entry per non-empty line.

    Raises:
        FileNotFoundError: If the file is missing.
        TokenMergeError: If it holds no text, or a weight is not a non-negative number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Calibration text {path} does not exist. Fix: pass a UTF-8 text file, one example a line."
        )
    texts: list[str] = []
    weights: list[float] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            text, weight = line, 1.0
            if "\t" in line:
                text, _, raw = line.rpartition("\t")
                try:
                    weight = float(raw)
                except ValueError:
                    raise TokenMergeError(
                        f"{path}:{number}: the text after the last TAB, {raw!r}, is not a weight. Fix: end the line "
                        "in TAB + a non-negative number, or remove the TAB."
                    ) from None
                if not weight >= 0 or weight == float("inf"):
                    raise TokenMergeError(f"{path}:{number}: weight {raw} must be a finite number >= 0.")
            texts.append(text)
            weights.append(weight)
    if not texts:
        raise TokenMergeError(f"Calibration text {path} holds no text. Fix: add at least one non-empty line.")
    return texts, weights


def count_text_tokens(
    tokenizer: Any,
    texts: Sequence[str],
    vocab_size: int,
    weights: Sequence[float] | None = None,
    batch_size: int = 4096,
) -> torch.Tensor:
    """Weighted count of every id the tokenizer produces on `texts` (no special tokens added).

    Args:
        tokenizer: A transformers tokenizer (called with `add_special_tokens=False`).
        texts: The calibration texts, tokenized as given.
        vocab_size: Length of the returned counts (the model's embedding rows).
        weights: One non-negative weight per text (default: 1 each); every token of a text adds its weight.
        batch_size: Texts per tokenizer call.

    Returns:
        `(vocab_size,)` float64 counts, for `plan_token_merge(token_counts=...)` or `sweep(token_counts=...)`.

    Raises:
        TokenMergeError: If weights and texts differ in length, a weight is negative, or an id is out of range.
    """
    if weights is None:
        weights = [1.0] * len(texts)
    if len(weights) != len(texts):
        raise TokenMergeError(f"{len(weights)} weights for {len(texts)} texts. Fix: give one weight per text.")
    if any(not w >= 0 for w in weights):
        raise TokenMergeError("Calibration weights must be >= 0.")
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        encoded = tokenizer(chunk, add_special_tokens=False)["input_ids"]
        lengths = torch.tensor([len(ids) for ids in encoded], dtype=torch.long)
        if int(lengths.sum()) == 0:
            continue
        ids = torch.tensor([i for sequence in encoded for i in sequence], dtype=torch.long)
        if ids.min() < 0 or ids.max() >= vocab_size:
            raise TokenMergeError(
                f"The tokenizer produced ids up to {int(ids.max())}, beyond the {vocab_size} rows. Fix: pass the "
                "tokenizer of this model."
            )
        per_token = torch.tensor(weights[start : start + batch_size], dtype=torch.float64).repeat_interleave(lengths)
        counts.index_add_(0, ids, per_token)
    return counts


def calibration_counts(tokenizer: Any, path: str | os.PathLike[str], vocab_size: int) -> torch.Tensor:
    """`count_text_tokens` over a calibration file (see `read_calibration_text`).

    Args:
        tokenizer: The model's tokenizer.
        path: The calibration file.
        vocab_size: The model's embedding rows.

    Returns:
        `(vocab_size,)` float64 weighted counts.
    """
    texts, weights = read_calibration_text(path)
    return count_text_tokens(tokenizer, texts, vocab_size, weights)
