"""Analysis: redundancy statistics and figures, the structure of merged FSQ clusters, ablation sweeps, sequence
sweeps, compression within a budget.

Figures need the `analysis` extra (matplotlib; scikit-learn and umap-learn for the 2-D maps). `analyze_redundancy`
and `RedundancyReport` load their module on first use, and `sweep` (with `output_dir`) and `save_sequence_points`
(for points with a layer or a series) import the plotting module only when they draw, so the budget search and the
sweeps themselves work without it.
"""

from hf_token_merge.analysis.budget import BudgetResult, bisect_smallest, compress_within_budget
from hf_token_merge.analysis.cluster_structure import (
    FrequencyMerging,
    NeighbourSharing,
    frequency_and_merging,
    lattice_neighbour_pairs,
    neighbour_sharing,
)
from hf_token_merge.analysis.sequence_sweep import (
    ORACLE_MODES,
    SequencePoint,
    evaluate_encoder_merges,
    evaluate_sequence_configs,
    oracle_configs,
    save_sequence_points,
    sequence_markdown,
)
from hf_token_merge.analysis.sweep import STRATEGIES, SweepPoint, sweep, sweep_markdown

__all__ = [
    "ORACLE_MODES",
    "STRATEGIES",
    "BudgetResult",
    "FrequencyMerging",
    "NeighbourSharing",
    "RedundancyReport",
    "SequencePoint",
    "SweepPoint",
    "analyze_redundancy",
    "bisect_smallest",
    "compress_within_budget",
    "evaluate_encoder_merges",
    "evaluate_sequence_configs",
    "frequency_and_merging",
    "lattice_neighbour_pairs",
    "neighbour_sharing",
    "oracle_configs",
    "save_sequence_points",
    "sequence_markdown",
    "sweep",
    "sweep_markdown",
]


def __getattr__(name: str):
    if name in ("RedundancyReport", "analyze_redundancy"):
        from hf_token_merge.analysis import redundancy

        return getattr(redundancy, name)
    raise AttributeError(f"module 'hf_token_merge.analysis' has no attribute {name!r}")
