"""`analyze_redundancy`: measure how redundant a model's speech-token rows and hidden states are, and draw it."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from hf_token_merge.analysis import layers as layer_stats
from hf_token_merge.analysis import plots
from hf_token_merge.analysis import rows as row_stats
from hf_token_merge.analysis.maps import two_d_map
from hf_token_merge.analysis.report_html import figure_markdown, render_html
from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.remap.locate import locate_embeddings
from hf_token_merge.remap.plan import plan_token_merge
from hf_token_merge.tables import markdown_table

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)


@dataclass
class RedundancyReport:
    """Numbers and figures of one analysis.

    Attributes:
        metric: The config's metric.
        selected_rows: Rows analysed.
        pair_sample_rows: Rows whose pairs make up the pairwise distribution (all rows if small).
        pairwise: Summary (mean, quantiles) of pair similarities (cosine) or distances (euclidean).
        neighbour_sample_rows: Query rows of the nearest-neighbour statistics.
        nearest_neighbour: Summary of each query's nearest-neighbour similarity or distance.
        curve_sample_rows: Rows clustered for the threshold curve.
        threshold_curve: `(threshold, clusters)` pairs.
        effective_rank: Roy & Vetterli effective rank of the rows.
        components_90 / components_99: Principal components for 90 % / 99 % of the variance.
        hidden_size: Width of the rows.
        layer_adjacent_cosine: Mean cosine of adjacent speech positions per layer (empty without inputs).
        layer_cka: Linear CKA matrix between layers (empty without inputs).
        plan_statistics: Statistics of the config's merge plan (used to colour the maps).
        figures: Figure name -> PNG path.
    """

    metric: str
    selected_rows: int
    pair_sample_rows: int
    pairwise: dict[str, float]
    neighbour_sample_rows: int
    nearest_neighbour: dict[str, float]
    curve_sample_rows: int
    threshold_curve: list[tuple[float, int]]
    effective_rank: float
    components_90: int
    components_99: int
    hidden_size: int
    layer_adjacent_cosine: list[float] = field(default_factory=list)
    layer_cka: list[list[float]] = field(default_factory=list)
    plan_statistics: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable numbers."""
        return asdict(self)

    def to_markdown(self, figure_folder: str = "") -> str:
        """The report as Markdown, figures linked by file name (next to the report).

        Args:
            figure_folder: Prefix of the figure links, for a report that lives elsewhere (e.g. `analysis`).

        Returns:
            Headings, the tables, and one captioned figure paragraph per figure.
        """
        value = "similarity" if self.metric == "cosine" else "distance"
        measures = [
            (f"median pairwise {value} ({self.pair_sample_rows} rows sampled)", f"{self.pairwise['median']:.4f}"),
            (
                f"median nearest-neighbour {value} ({self.neighbour_sample_rows} queries)",
                f"{self.nearest_neighbour['median']:.4f}",
            ),
            ("effective rank", f"{self.effective_rank:.1f}"),
            ("components for 90 % / 99 % of the variance", f"{self.components_90} / {self.components_99}"),
        ]
        for key in ("clusters", "rows_removed", "mean_cosine_to_merged_row", "mean_distance_to_merged_row"):
            number = self.plan_statistics.get(key)
            if number is not None:
                shown = f"{number:,}" if isinstance(number, int) else f"{number:.4f}"
                measures.append((f"plan: {key.replace('_', ' ')}", shown))
        parts = [
            "# Redundancy report\n",
            f"{self.selected_rows} selected rows of width {self.hidden_size}, metric `{self.metric}`.\n",
            markdown_table(("measure", "value"), measures),
            f"## How much could merge ({self.curve_sample_rows} rows)\n",
            markdown_table(("threshold", "rows kept"), [(f"{t:g}", c) for t, c in self.threshold_curve], "rr"),
        ]
        if self.layer_adjacent_cosine:
            cosines = [(i, f"{c:.4f}") for i, c in enumerate(self.layer_adjacent_cosine)]
            parts.append("## Adjacent speech-token similarity by layer\n")
            parts.append(markdown_table(("layer", "mean cosine"), cosines, "rr"))
        if self.figures:
            parts.append("## Figures\n")
            parts += [
                figure_markdown(number, name, os.path.join(figure_folder, os.path.basename(path)), self.metric)
                for number, (name, path) in enumerate(self.figures.items(), 1)
            ]
        return "\n".join(parts)

    def to_html(self) -> str:
        """A self-contained HTML page rendered from `to_markdown` (tables, headings, captioned base64 figures)."""
        folders = {os.path.dirname(os.path.abspath(path)) for path in self.figures.values()}
        return render_html(self.to_markdown(), "Redundancy report", folders.pop() if len(folders) == 1 else None)

    def save(self, output_dir: str) -> dict[str, str]:
        """Write `report.json`, `report.md` and `report.html` into `output_dir` (figures are already there)."""
        os.makedirs(output_dir, exist_ok=True)
        paths = {name: os.path.join(output_dir, f"report.{name}") for name in ("json", "md", "html")}
        with open(paths["json"], "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=2)
        with open(paths["md"], "w", encoding="utf-8") as handle:
            handle.write(self.to_markdown())
        with open(paths["html"], "w", encoding="utf-8") as handle:
            handle.write(self.to_html())
        return paths


def _summary(values: torch.Tensor) -> dict[str, float]:
    quantiles = torch.quantile(values.double()[: 2**24], torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
    return {
        "mean": float(values.double().mean()),
        "p05": float(quantiles[0]),
        "median": float(quantiles[1]),
        "p95": float(quantiles[2]),
    }


def _map_sample(plan, map_rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows for a 2-D map: members of the 10 largest clusters (coloured) over a random background (-1)."""
    sizes = plan.cluster_sizes
    largest = sizes.argsort(descending=True, stable=True)[:10]
    largest = largest[sizes[largest] > 1]
    colour = torch.full((sizes.numel(),), -1, dtype=torch.long)
    colour[largest] = torch.arange(len(largest))
    member_colour = colour[plan.cluster_of_selected]
    highlighted = (member_colour >= 0).nonzero().flatten()[: map_rows // 2]
    others = (member_colour < 0).nonzero().flatten()
    pick = torch.randperm(len(others), generator=torch.Generator().manual_seed(seed))[: map_rows - len(highlighted)]
    sample = torch.cat([highlighted, others[pick]]).sort().values
    return sample, member_colour[sample]


@dataclass
class _RowStatistics:
    """The row numbers of one analysis, before they are drawn or summarised."""

    pairwise: torch.Tensor
    pair_sample_rows: int
    neighbours: torch.Tensor
    neighbour_sample_rows: int
    curve: list
    curve_sample_rows: int
    spectrum: torch.Tensor


def _row_statistics(
    rows: torch.Tensor, metric: str, sample_size: int, thresholds: tuple[float, ...] | None, seed: int
) -> _RowStatistics:
    """Pairwise and nearest-neighbour values, the threshold curve and the PCA spectrum of `rows` (no files)."""
    n = rows.shape[0]
    pair_sample = row_stats.sample_rows(n, sample_size, seed)
    queries = row_stats.sample_rows(n, sample_size, seed + 1)
    neighbours = row_stats.nearest_neighbour_values(rows, metric, queries)
    if thresholds is None:
        thresholds = DEFAULT_THRESHOLDS
        if metric != "cosine":  # distances have no natural scale: take the neighbour distances' quantiles
            levels = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
            thresholds = tuple(float(q) for q in torch.quantile(neighbours.double(), levels))
    curve_sample = row_stats.sample_rows(n, sample_size, seed + 2)
    return _RowStatistics(
        pairwise=row_stats.pairwise_values(rows[pair_sample], metric),
        pair_sample_rows=len(pair_sample),
        neighbours=neighbours,
        neighbour_sample_rows=len(queries),
        curve=row_stats.threshold_curve(rows[curve_sample], metric, list(thresholds)),
        curve_sample_rows=len(curve_sample),
        spectrum=row_stats.pca_spectrum(rows),
    )


def _row_figures(stats: _RowStatistics, metric: str, output_dir: str) -> dict[str, str]:
    """Draw the row statistics: figure name -> PNG path."""
    value_name = "cosine similarity" if metric == "cosine" else "Euclidean distance"
    return {
        "pairwise": plots.histogram(
            stats.pairwise,
            f"Pairwise {value_name} ({stats.pair_sample_rows} rows)",
            value_name,
            plots.figure_path(output_dir, "pairwise"),
        ),
        "nearest_neighbour": plots.histogram(
            stats.neighbours,
            f"Nearest-neighbour {value_name} ({stats.neighbour_sample_rows} queries)",
            value_name,
            plots.figure_path(output_dir, "nearest_neighbour"),
        ),
        "threshold_curve": plots.threshold_curve(
            stats.curve,
            stats.curve_sample_rows,
            "similarity threshold" if metric == "cosine" else "distance threshold",
            plots.figure_path(output_dir, "threshold_curve"),
        ),
        "pca_spectrum": plots.spectrum(stats.spectrum, plots.figure_path(output_dir, "pca_spectrum")),
    }


def _map_figures(
    rows: torch.Tensor, plan, metric: str, maps: tuple[str, ...], map_rows: int, seed: int, output_dir: str
) -> dict[str, str]:
    """The 2-D maps (t-SNE, UMAP) of a sample of rows, coloured by the plan's 10 largest clusters."""
    map_sample, map_colours = _map_sample(plan, map_rows, seed + 3)
    figures = {}
    for method in maps:
        points = two_d_map(rows[map_sample], method, metric, seed)
        figures[method] = plots.scatter_map(
            points,
            map_colours,
            f"{method.upper()}: the 10 largest clusters over {len(map_sample)} rows",
            plots.figure_path(output_dir, method),
        )
    return figures


def _layer_statistics(
    model: nn.Module, plan, inputs: list[torch.Tensor], show_progress: bool
) -> tuple[list[float], torch.Tensor]:
    """Mean adjacent-layer cosine of the speech positions' hidden states, and the layers' CKA matrix."""
    is_speech = torch.zeros(plan.vocab_size, dtype=torch.bool)
    is_speech[plan.selected_ids] = True
    states, cosines = layer_stats.collect_hidden_states(model, inputs, is_speech, show_progress=show_progress)
    adjacent = [float(c.mean()) if c.numel() else float("nan") for c in cosines]
    return adjacent, layer_stats.cka_matrix(states)


def analyze_redundancy(
    model: nn.Module,
    config: TokenMergeConfig,
    output_dir: str,
    *,
    tokenizer: Any = None,
    inputs: list[torch.Tensor] | None = None,
    sample_size: int = 4096,
    thresholds: tuple[float, ...] | None = None,
    maps: tuple[str, ...] = ("tsne", "umap"),
    map_rows: int = 1500,
    seed: int = 0,
    show_progress: bool = True,
) -> RedundancyReport:
    """Measure the redundancy of the rows a config selects, write figures and a report.

    Args:
        model: The (unmerged) model.
        config: Selects the rows; its metric is used, and its merge plan colours the maps.
        output_dir: Folder for the PNG figures and `report.{json,md,html}`.
        tokenizer: Needed for regex/preset selections.
        inputs: Real id sequences (1-D tensors) for the cross-layer analysis; skipped when None.
        sample_size: Rows sampled for the pairwise distribution, nearest-neighbour queries and the threshold
            curve when there are more selected rows (exact below).
        thresholds: Thresholds of the curve (cosine similarities, or distances for euclidean).
        maps: Which 2-D maps to draw ("tsne", "umap"); empty for none.
        map_rows: Rows drawn in the maps: members of the 10 largest clusters of the config's plan, coloured,
            over randomly sampled other rows in grey.
        seed: Sampling seed.
        show_progress: Show tqdm bars.

    Returns:
        The report (also saved in `output_dir`).
    """
    os.makedirs(output_dir, exist_ok=True)
    plan = plan_token_merge(model, config, tokenizer=tokenizer, show_progress=show_progress)
    pair = locate_embeddings(model, config)
    rows = pair.input_module.weight.detach()[plan.selected_ids.to(pair.input_module.weight.device)].float().cpu()
    stats = _row_statistics(rows, config.metric, sample_size, thresholds, seed)
    figures = _row_figures(stats, config.metric, output_dir)
    if maps:
        figures.update(_map_figures(rows, plan, config.metric, maps, map_rows, seed, output_dir))
    adjacent: list[float] = []
    cka: list[list[float]] = []
    if inputs:
        adjacent, matrix = _layer_statistics(model, plan, inputs, show_progress)
        cka = matrix.tolist()
        figures["layer_adjacent_cosine"] = plots.layer_similarity(
            adjacent, plots.figure_path(output_dir, "layer_adjacent_cosine")
        )
        figures["layer_cka"] = plots.cka(matrix, plots.figure_path(output_dir, "layer_cka"))
    logger.info("redundancy of %d rows analysed; %d figures in %s", rows.shape[0], len(figures), output_dir)
    report = RedundancyReport(
        metric=config.metric,
        selected_rows=rows.shape[0],
        pair_sample_rows=stats.pair_sample_rows,
        pairwise=_summary(stats.pairwise),
        neighbour_sample_rows=stats.neighbour_sample_rows,
        nearest_neighbour=_summary(stats.neighbours),
        curve_sample_rows=stats.curve_sample_rows,
        threshold_curve=stats.curve,
        effective_rank=row_stats.effective_rank(stats.spectrum),
        components_90=row_stats.components_for(stats.spectrum, 0.90),
        components_99=row_stats.components_for(stats.spectrum, 0.99),
        hidden_size=rows.shape[1],
        layer_adjacent_cosine=adjacent,
        layer_cka=cka,
        plan_statistics=plan.statistics,
        figures=figures,
    )
    report.save(output_dir)
    return report
