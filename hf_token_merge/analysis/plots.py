"""Figures of a redundancy report, drawn headless with matplotlib's Agg backend and saved as PNG."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def _save(figure, path: str) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def histogram(values: torch.Tensor, title: str, xlabel: str, path: str) -> str:
    """A histogram of `values` with its median marked."""
    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.hist(values.double().numpy(), bins=100, color="#3b75af")  # float64 edges: tight ranges happen
    axis.axvline(float(values.median()), color="#d62728", linestyle="--", label=f"median {float(values.median()):.3f}")
    axis.set(title=title, xlabel=xlabel, ylabel="count")
    axis.legend()
    return _save(figure, path)


def threshold_curve(curve: list[tuple[float, int]], rows: int, xlabel: str, path: str) -> str:
    """Rows left after merging at each threshold."""
    figure, axis = plt.subplots(figsize=(6, 3.6))
    thresholds, clusters = zip(*curve, strict=True)
    axis.plot(thresholds, [c / rows for c in clusters], marker="o", color="#2ca02c")
    axis.set(title="How much could merge", xlabel=xlabel, ylabel="rows kept / rows selected", ylim=(0, 1.05))
    axis.grid(alpha=0.3)
    return _save(figure, path)


def spectrum(ratios: torch.Tensor, path: str) -> str:
    """Explained variance per principal component and cumulated."""
    figure, axis = plt.subplots(figsize=(6, 3.6))
    index = torch.arange(1, len(ratios) + 1).numpy()
    axis.semilogy(index, ratios.clamp_min(1e-12).numpy(), color="#3b75af", label="per component")
    twin = axis.twinx()
    twin.plot(index, ratios.cumsum(0).numpy(), color="#ff7f0e", label="cumulative")
    twin.set_ylim(0, 1.02)
    axis.set(title="PCA spectrum of the selected rows", xlabel="component", ylabel="explained variance ratio")
    twin.set_ylabel("cumulative")
    return _save(figure, path)


def layer_similarity(adjacent: list[float], path: str) -> str:
    """Mean cosine of adjacent speech positions at every layer."""
    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.plot(range(len(adjacent)), adjacent, marker="o", color="#9467bd")
    axis.set(title="Adjacent speech-token similarity by layer", xlabel="layer (0 = embeddings)", ylabel="mean cosine")
    axis.grid(alpha=0.3)
    return _save(figure, path)


def cka(matrix: torch.Tensor, path: str) -> str:
    """Layer-by-layer linear CKA heat map."""
    figure, axis = plt.subplots(figsize=(4.8, 4.2))
    image = axis.imshow(matrix.numpy(), vmin=0, vmax=1, cmap="viridis")
    axis.set(title="Linear CKA between layers", xlabel="layer", ylabel="layer")
    figure.colorbar(image, ax=axis)
    return _save(figure, path)


def scatter_map(points: torch.Tensor, colours: torch.Tensor, title: str, path: str) -> str:
    """A 2-D embedding of rows: colour index per highlighted cluster, -1 for background rows (grey)."""
    figure, axis = plt.subplots(figsize=(5.4, 5))
    background = colours < 0
    axis.scatter(points[background, 0].numpy(), points[background, 1].numpy(), c="#c8c8c8", s=3)
    axis.scatter(
        points[~background, 0].numpy(),
        points[~background, 1].numpy(),
        c=colours[~background].numpy(),
        cmap="tab10",
        vmin=0,
        vmax=9,
        s=9,
    )
    axis.set(title=title, xticks=[], yticks=[])
    return _save(figure, path)


def figure_path(output_dir: str, name: str) -> str:
    """Where a figure of the report goes."""
    return os.path.join(output_dir, f"{name}.png")


def sweep_curve(points, metric: str, path: str) -> str:
    """A metric against rows removed, one line per strategy, the baseline as a dashed line.

    Points with a paired difference for `metric` get a band: the baseline plus the interval of the increase.
    """
    figure, axis = plt.subplots(figsize=(6, 3.8))
    baseline = next((p for p in points if p.strategy == "baseline"), None)
    for strategy in dict.fromkeys(p.strategy for p in points if p.strategy != "baseline"):
        series = sorted((p.rows_removed, p.metrics[metric]) for p in points if p.strategy == strategy)
        if baseline is not None:
            series = [(0, baseline.metrics[metric]), *series]
        removed, values = zip(*series, strict=True)
        (line,) = axis.plot(removed, values, marker="o", label=strategy)
        ours = [p for p in points if p.strategy == strategy and metric in p.differences]
        banded = [(p.rows_removed, p.differences[metric]) for p in sorted(ours, key=lambda p: p.rows_removed)]
        if banded:
            if baseline is not None:
                banded = [(0, {"before": baseline.metrics[metric], "ci_low": 0.0, "ci_high": 0.0}), *banded]
            xs = [x for x, _ in banded]
            axis.fill_between(
                xs,
                [d["before"] + d["ci_low"] for _, d in banded],
                [d["before"] + d["ci_high"] for _, d in banded],
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
    if baseline is not None:
        axis.axhline(baseline.metrics[metric], color="#888888", linestyle="--", linewidth=1, label="baseline")
    axis.set(title=f"{metric} against rows removed", xlabel="rows removed", ylabel=metric)
    axis.grid(alpha=0.3)
    axis.legend()
    return _save(figure, path)


def layerwise_curve(points, metric: str, path: str) -> str:
    """An oracle study: a metric against the intervention layer, one line per (mode, retention)."""
    figure, axis = plt.subplots(figsize=(6.4, 4))
    oracle = [p for p in points if p.layer is not None]
    for mode, retention in dict.fromkeys((p.mode, p.target_retention) for p in oracle):
        series = sorted(
            (p.layer, p.metrics[metric]) for p in oracle if (p.mode, p.target_retention) == (mode, retention)
        )
        layers, values = zip(*series, strict=True)
        axis.plot(layers, values, marker="o", label=f"{mode.replace('_', ' ')}, keep {retention:.0%}")
    baseline = next((p for p in points if p.name == "baseline"), None)
    if baseline is not None:
        axis.axhline(baseline.metrics[metric], color="#888888", linestyle="--", linewidth=1, label="baseline")
    axis.set(title=f"{metric} when speech tokens are cut at one layer", xlabel="layer (0 = input)", ylabel=metric)
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path)


def retention_curve(points, metric: str, path: str) -> str:
    """A metric against the share of speech tokens kept, one line per series (e.g. deep layer and positions)."""
    figure, axis = plt.subplots(figsize=(6.4, 4))
    for series in dict.fromkeys(p.series for p in points if p.series):
        values = sorted((p.retention, p.metrics[metric]) for p in points if p.series == series)
        kept, metric_values = zip(*values, strict=True)
        axis.plot([100 * k for k in kept], metric_values, marker="o", label=series)
    baseline = next((p for p in points if p.name == "baseline"), None)
    if baseline is not None:
        axis.axhline(baseline.metrics[metric], color="#888888", linestyle="--", linewidth=1, label="baseline")
    axis.set(title=f"{metric} against speech tokens kept", xlabel="speech tokens kept (%)", ylabel=metric)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path)


def cluster_structure(sharing, frequency, path: str) -> str:
    """Two panels: lattice neighbours in one cluster against chance, and the merged share per frequency bin."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw={"width_ratios": [1, 2]})
    left.bar(["measured", "chance"], [100 * sharing.shared, 100 * sharing.chance], color=["#3b75af", "#aaaaaa"])
    left.errorbar(
        [1],
        [100 * sharing.chance],
        yerr=[[100 * (sharing.chance - sharing.chance_low)], [100 * (sharing.chance_high - sharing.chance)]],
        color="black",
        capsize=4,
    )
    left.set(title=f"lattice neighbours in one cluster\n({sharing.pairs:,} pairs)", ylabel="pairs (%)")
    labels = [f"{b['count_low']:g}–{b['count_high']:g}" for b in frequency.bins]
    right.bar(range(len(labels)), [100 * b["merged_share"] for b in frequency.bins], color="#3b75af")
    right.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    right.set(
        title=f"merged share by code frequency (AUC {frequency.auc:.2f})",
        xlabel="occurrences in calibration data",
        ylabel="rows merged (%)",
    )
    for axis in (left, right):
        axis.grid(alpha=0.3, axis="y")
    return _save(figure, path)
