"""The built-in evaluation sets, by name: the one list that `load_eval_dataset` and the CLI's `--eval`/`--dataset`
read (choices, help, model-card descriptions).

Nothing heavy is imported here, so the CLI can build its parser from this registry without loading the
evaluation stack; each loader imports its reference asset when called.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets


@dataclass(frozen=True)
class BuiltinDataset:
    """An evaluation set that `load_eval_dataset` (and the CLI's `--eval`/`--dataset`) know by name.

    Attributes:
        description: What it holds, for `--help`, reports and model cards.
        load: `cache_dir -> Dataset` with an undecoded `audio` column and `text`.
    """

    description: str
    load: Callable[[str | os.PathLike[str] | None], datasets.Dataset]


# The loaders import the reference assets only when called: `hf_token_merge.reference` loads model classes.
def _load_librivox(cache_dir: str | os.PathLike[str] | None) -> datasets.Dataset:
    from hf_token_merge.reference.librivox import load_librivox_sonnets

    return load_librivox_sonnets(cache_dir=cache_dir)


def _load_synthetic(cache_dir: str | os.PathLike[str] | None) -> datasets.Dataset:
    from hf_token_merge.reference.synthetic_corpus import load_synthetic_corpus

    return load_synthetic_corpus("test", cache_dir=cache_dir)


# The one list of built-in evaluation sets; the CLI takes its choices and help from here.
BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "librivox": BuiltinDataset("12 LibriVox utterances of Shakespeare's sonnets 1-3", _load_librivox),
    "synthetic": BuiltinDataset(
        "the 100-sentence test split of the synthetic (Piper) KJV speech corpus", _load_synthetic
    ),
}
