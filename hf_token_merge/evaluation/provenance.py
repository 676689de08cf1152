"""What a number was measured on: model and revision, data and split, sizes, generation settings, versions."""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

LIBRARIES = ("torch", "transformers", "accelerate", "datasets", "jiwer", "hf_token_merge")
_SNAPSHOT = re.compile(r"models--(?P<repo>[^/\\]+)[/\\]snapshots[/\\](?P<commit>[0-9a-f]{40})")


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions of the libraries that shape a measurement (None for a missing one)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def model_revision(model: Any) -> tuple[str | None, str | None]:
    """A model's path or Hub id, and its commit hash when known.

    The commit comes from `config._commit_hash` (set by `from_pretrained` from the Hub), else from a Hub cache path
    `.../models--org--name/snapshots/<commit>/`.

    Args:
        model: A transformers model (or anything with a `config`/`name_or_path`).

    Returns:
        `(name_or_path, commit)`; either may be None.
    """
    config = getattr(model, "config", None)
    name = getattr(model, "name_or_path", None) or getattr(config, "_name_or_path", None) or None
    commit = getattr(config, "_commit_hash", None)
    match = _SNAPSHOT.search(str(name)) if name else None
    if match:  # a Hub cache snapshot: report the repository id, and its commit unless the config knows it
        commit = commit or match.group("commit")
        name = match.group("repo").replace("--", "/")
    return (str(name) if name else None), commit


def dataset_description(dataset: Any) -> dict[str, Any]:
    """Name, split and fingerprint of a `datasets.Dataset` (what is known; a list of dicts gives only its size)."""
    info = getattr(dataset, "info", None)
    split = getattr(dataset, "split", None)
    return {
        "name": getattr(info, "dataset_name", None) or getattr(info, "config_name", None),
        "split": str(split) if split is not None else None,
        "fingerprint": getattr(dataset, "_fingerprint", None),
    }


@dataclass
class Provenance:
    """The record that goes with every before/after number.

    Attributes:
        model: Model path or Hub id.
        revision: Commit hash of the model, when known.
        dataset: Dataset name or path.
        split: Split.
        examples: Examples scored.
        units: Reference words (or characters, or tokens for perplexity/KL).
        unit_name: What `units` counts.
        generation: Generation settings (greedy or sampled, seed, max new tokens, ...).
        versions: Library versions.
        extra: Anything else worth recording (fingerprint, ASR model, codec, ...).
    """

    model: str | None = None
    revision: str | None = None
    dataset: str | None = None
    split: str | None = None
    examples: int | None = None
    units: int | None = None
    unit_name: str = "words"
    generation: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=library_versions)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return asdict(self)

    def markdown(self) -> str:
        """The record as a Markdown list, for reports and model cards."""
        return "\n".join(f"- {line}" for line in self.lines()) + "\n"

    def lines(self) -> list[str]:
        """Short `key: value` lines for a report or a model card."""
        model = self.model or "unknown model"
        out = [f"model: {model}" + (f" @ {self.revision[:12]}" if self.revision else " (revision unknown)")]
        data = self.dataset or "unnamed data"
        out.append(f"data: {data}" + (f", split {self.split}" if self.split else ""))
        sizes = [f"{self.examples:,} examples" if self.examples is not None else None]
        sizes.append(f"{self.units:,} {self.unit_name}" if self.units is not None else None)
        if any(sizes):
            out.append("size: " + ", ".join(s for s in sizes if s))
        if self.generation:
            out.append("generation: " + ", ".join(f"{k}={v}" for k, v in self.generation.items()))
        out.append("versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items() if v is not None))
        out.extend(f"{key}: {value}" for key, value in self.extra.items())
        return out


def provenance_of(
    model: Any = None,
    dataset: Any = None,
    *,
    dataset_name: str | os.PathLike[str] | None = None,
    split: str | None = None,
    examples: int | None = None,
    units: int | None = None,
    unit_name: str = "words",
    generation: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Provenance:
    """Collect a `Provenance` from a model and a dataset, with explicit values taking precedence.

    Args:
        model: The evaluated model (its path/id and commit are read from it).
        dataset: The evaluated dataset (name, split and fingerprint when it is a `datasets.Dataset`).
        dataset_name: Name or path of the data, when the dataset object does not carry one.
        split: Split, when the dataset object does not carry one.
        examples: Examples scored (default: `len(dataset)`).
        units: Reference words / characters / tokens.
        unit_name: What `units` counts.
        generation: Generation settings.
        **extra: Further fields (e.g. `asr_model=`, `codec=`).

    Returns:
        The record.
    """
    name, revision = model_revision(model) if model is not None else (None, None)
    described = dataset_description(dataset) if dataset is not None else {}
    if described.get("fingerprint"):
        extra = {"dataset_fingerprint": described["fingerprint"], **extra}
    if examples is None and dataset is not None and hasattr(dataset, "__len__"):
        examples = len(dataset)
    return Provenance(
        model=name,
        revision=revision,
        dataset=str(dataset_name) if dataset_name is not None else described.get("name"),
        split=split if split is not None else described.get("split"),
        examples=examples,
        units=units,
        unit_name=unit_name,
        generation=dict(generation or {}),
        extra=dict(extra),
    )
