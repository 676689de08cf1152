"""The registry of grouping methods: one name, one function with one signature, and what the method needs.

In the spirit of torchao's handler registry: every method registers itself with `register_grouping_method`, and
`cluster_rows`, the sweep and the budget search look methods up by name instead of branching on it. The names are
the values of `TokenMergeConfig.method`; the sweep/budget strategies are the methods that take a row count.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from hf_token_merge.errors import TokenMergeError

if TYPE_CHECKING:
    from hf_token_merge.config import TokenMergeConfig

COUNT_STOPS = ("n_clusters", "target_ratio")
THRESHOLD_STOPS = ("similarity_threshold", "distance_threshold")

# Old sweep/budget strategy names, still accepted with a FutureWarning.
DEPRECATED_ALIASES = {"drop_least_frequent": "frequency"}

GroupFunction = Callable[["torch.Tensor", "TokenMergeConfig", "int | None", "torch.Tensor | None", bool], torch.Tensor]


@dataclass(frozen=True)
class GroupingMethod:
    """A registered grouping method.

    Attributes:
        name: The `TokenMergeConfig.method` value.
        group: `group(rows, config, k, counts, show_progress) -> labels`: `rows` are `(n, d)` prepared rows in
            selection order, `k` the target row count (None when the config stops at a threshold), `counts` the
            `(n,)` calibration counts of the rows or None; returns `(n,)` labels (any numbering).
        stops: The stopping options the method accepts.
        needs_counts: Whether it needs calibration counts.
        by_similarity: Whether it groups by row similarity (False for the frequency ablation and the random control).
    """

    name: str
    group: GroupFunction
    stops: tuple[str, ...]
    needs_counts: bool = False
    by_similarity: bool = True

    @property
    def takes_row_count(self) -> bool:
        """Whether the method can be asked for a row count (what the sweep and the budget search set)."""
        return "n_clusters" in self.stops


_REGISTRY: dict[str, GroupingMethod] = {}


def register_grouping_method(
    name: str, *, stops: tuple[str, ...], needs_counts: bool = False, by_similarity: bool = True
) -> Callable[[GroupFunction], GroupFunction]:
    """Register `group(rows, config, k, counts, show_progress) -> labels` under `name`.

    Args:
        name: The method's name (a `TokenMergeConfig.method` value).
        stops: The stopping options it accepts (`COUNT_STOPS`, `THRESHOLD_STOPS` or both).
        needs_counts: It needs calibration counts.
        by_similarity: It groups by row similarity.

    Returns:
        A decorator that registers the function and returns it unchanged.
    """

    def register(group: GroupFunction) -> GroupFunction:
        if name in _REGISTRY:
            raise TokenMergeError(f"A grouping method {name!r} is registered already. Fix: choose another name.")
        _REGISTRY[name] = GroupingMethod(name, group, tuple(stops), needs_counts, by_similarity)
        return group

    return register


def grouping_methods() -> dict[str, GroupingMethod]:
    """Every registered method by name, in registration order."""
    return dict(_REGISTRY)


def grouping_method(name: str) -> GroupingMethod:
    """The registered method `name`.

    Args:
        name: A method name; a deprecated strategy alias (`drop_least_frequent`) resolves with a FutureWarning.

    Returns:
        The `GroupingMethod`.

    Raises:
        TokenMergeError: On an unknown name (the message lists the registered ones).
    """
    return _REGISTRY[resolve_method_name(name)]


def resolve_method_name(name: str, kind: str = "method") -> str:
    """The canonical method name of `name` (a method or a deprecated alias, which warns).

    Args:
        name: A method name or a deprecated alias.
        kind: What the caller calls it in messages ("method", "strategy").

    Returns:
        The registered name.
    """
    if name in DEPRECATED_ALIASES:
        canonical = DEPRECATED_ALIASES[name]
        warnings.warn(
            f"{kind} {name!r} is deprecated; use {canonical!r} (the same grouping).", FutureWarning, stacklevel=3
        )
        return canonical
    if name not in _REGISTRY:
        raise TokenMergeError(f"Unknown {kind} {name!r}; choose from {list(_REGISTRY)}.")
    return name
