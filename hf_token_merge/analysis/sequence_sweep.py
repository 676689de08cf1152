"""Sequence-merge sweeps: evaluate named configs, and the layer-wise oracle study.

The oracle study follows "Do We Need Distinct Representations for Every Speech Token?": at one layer, keep a share
(retention) of the speech tokens by random drop, uniform drop or uniform merge, and watch the metric as the layer
moves deeper. Word boundaries are not used: the oracle groups are equal consecutive slices of each speech span.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from hf_token_merge.analysis.records import difference_cell, paired_differences, split_records
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.sequence import MergeStage, SequenceMergeConfig, apply_sequence_merge
from hf_token_merge.tables import markdown_table

ORACLE_MODES = ("random_drop", "uniform_drop", "uniform_merge")


@dataclass
class SequencePoint:
    """One evaluated configuration.

    Attributes:
        name: The configuration's name ('baseline' for no merge).
        retention: Speech tokens kept after the last stage / speech tokens in the input.
        flops_ratio: Analytic prefill FLOPs with the merge / without (None where not modelled).
        metrics: What `evaluate` returned (without its records).
        layer: Oracle layer (None for named configs).
        mode: Oracle mode (None for named configs).
        target_retention: Oracle retention asked for (None for named configs).
        series: Curve the point belongs to in the retention plot (e.g. 'deep L3/first'), or None.
        differences: Per metric with records, the paired difference to the baseline (`PairedDifference.to_dict()`:
            difference, ci_low, ci_high, units, ...); empty for the baseline or without records.
    """

    name: str
    retention: float
    flops_ratio: float | None
    metrics: dict[str, float]
    layer: int | None = None
    mode: str | None = None
    target_retention: float | None = None
    series: str | None = None
    differences: dict[str, dict] = field(default_factory=dict)


def evaluate_sequence_configs(
    model,
    configs: Mapping[str, SequenceMergeConfig],
    evaluate: Callable[[object], dict[str, float]],
    *,
    tokenizer=None,
    series: Mapping[str, str] | None = None,
    show_progress: bool = True,
    seed: int = 0,
) -> list[SequencePoint]:
    """Evaluate the model without a merge and with each config (installed, measured, removed in turn).

    Args:
        model: The model; it is left without hooks afterwards.
        configs: Name -> config.
        evaluate: `evaluate(model) -> {"wer": ...}`, run with the merge installed; with per-utterance records
            (`with_records(result, wer=result.wer)`) every point carries the paired interval of its change.
        tokenizer: For configs that select speech tokens by pattern or preset.
        series: Config name -> curve name, for the plot of the metric against speech tokens kept.
        show_progress: Show a tqdm bar.
        seed: Seed of the paired bootstrap.

    Returns:
        The baseline point first, then one point per config.
    """
    metrics, baseline_records = split_records(evaluate(model))
    points = [SequencePoint("baseline", 1.0, 1.0, metrics)]
    for name, config in tqdm(configs.items(), desc="sequence configs", disable=not show_progress):
        with apply_sequence_merge(model, config, tokenizer=tokenizer) as handle:
            metrics, records = split_records(evaluate(model))
            baseline, merged = handle.prefill_flops()
            retention = handle.retention
        stage = config.stages[0] if len(config.stages) == 1 and config.stages[0].mode != "affinity" else None
        points.append(
            SequencePoint(
                name,
                retention,
                merged / baseline if baseline else 1.0,
                metrics,
                layer=stage.layer if stage else None,
                mode=stage.mode if stage else None,
                target_retention=stage.retention if stage else None,
                series=(series or {}).get(name),
                differences=paired_differences(baseline_records, records, seed),
            )
        )
    return points


def evaluate_encoder_merges(
    model,
    thresholds: Sequence[float],
    evaluate: Callable[[object], dict[str, float]],
    *,
    window: int = 1,
    show_progress: bool = True,
    proportional_attention: bool = True,
    split_at_audio_end: bool = False,
) -> list[SequencePoint]:
    """The encoder-decoder analogue: evaluate without and with encoder-frame pooling at each threshold.

    Args:
        model: An encoder-decoder ASR model such as Whisper; left without hooks afterwards.
        thresholds: Cosine thresholds tau.
        evaluate: `evaluate(model) -> {"wer": ...}`.
        window: Frames of the open group compared.
        show_progress: Show a tqdm bar.
        proportional_attention: Passed to `apply_encoder_merge` (log-size bias in cross-attention).
        split_at_audio_end: Passed to `apply_encoder_merge` (no group spans the end of the real audio).

    Returns:
        The baseline point first, then one per threshold (`retention` = encoder frames kept).
    """
    from hf_token_merge.sequence.encoder import apply_encoder_merge

    points = [SequencePoint("baseline", 1.0, None, dict(evaluate(model)))]
    for tau in tqdm(thresholds, desc="encoder merges", disable=not show_progress):
        options = {"proportional_attention": proportional_attention, "split_at_audio_end": split_at_audio_end}
        with apply_encoder_merge(model, tau, window, **options) as handle:
            metrics = dict(evaluate(model))
            form = "".join(f", {name.replace('_', ' ')}" for name, on in options.items() if on)
            label = f"encoder frames tau {tau:g} window {window}{form}"
            points.append(SequencePoint(label, handle.retention, None, metrics))
    return points


def oracle_configs(
    speech: Mapping[str, object],
    layers: Sequence[int],
    retentions: Sequence[float],
    modes: Sequence[str] = ORACLE_MODES,
    seed: int = 0,
) -> dict[str, SequenceMergeConfig]:
    """One single-stage oracle config per (mode, retention, layer).

    Args:
        speech: The speech-token selection, e.g. `{"preset": "reference"}` or `{"token_id_range": (a, b)}`.
        layers: Decoder layers (0 = the input).
        retentions: Shares of speech tokens kept.
        modes: Oracle modes.
        seed: Seed of 'random_drop'.

    Returns:
        Name -> config, names like 'uniform_merge@0.25/L3'.
    """
    unknown = sorted(set(modes) - set(ORACLE_MODES))
    if unknown:
        raise TokenMergeError(f"Unknown oracle modes {unknown}; choose from {ORACLE_MODES}.")
    return {
        f"{mode}@{retention:g}/L{layer}": SequenceMergeConfig(
            stages=[MergeStage(layer=layer, mode=mode, retention=retention)], seed=seed, **speech
        )
        for mode in modes
        for retention in retentions
        for layer in layers
    }


def sequence_markdown(points: Sequence[SequencePoint]) -> str:
    """The points as a Markdown table; with records, one paired-interval column per metric."""
    names = sorted({name for point in points for name in point.metrics})
    compared = sorted({name for point in points for name in point.differences})
    rows = []
    for p in points:
        row = [p.name, f"{p.retention:.1%}", f"{p.flops_ratio:.1%}" if p.flops_ratio is not None else "n/a"]
        row += [f"{p.metrics[name]:.4f}" if name in p.metrics else "" for name in names]
        row += [difference_cell(p.differences.get(name)) for name in compared]
        rows.append(row)
    header = ["configuration", "speech tokens kept", "prefill FLOPs", *names]
    return markdown_table([*header, *(f"Δ {name} (95 % CI)" for name in compared)], rows)


def save_sequence_points(points: Sequence[SequencePoint], output_dir: str, name: str = "sequence") -> dict[str, str]:
    """Write `<name>.json`, `<name>.md`, for oracle points `<name>_layerwise_<metric>.png`, and for points with a
    series `<name>_retention_<metric>.png`.

    Args:
        points: From `evaluate_sequence_configs` (the baseline first).
        output_dir: Folder to write into.
        name: File stem.

    Returns:
        Kind -> written path.
    """
    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, f"{name}.json"), "md": os.path.join(output_dir, f"{name}.md")}
    with open(paths["json"], "w", encoding="utf-8") as handle:
        json.dump([dataclasses.asdict(p) for p in points], handle, indent=2)
    with open(paths["md"], "w", encoding="utf-8") as handle:
        handle.write(sequence_markdown(points))
    metrics = sorted({m for p in points for m in p.metrics})
    if any(p.layer is not None for p in points) or any(p.series for p in points):
        from hf_token_merge.analysis import plots

        for metric in metrics:
            if any(p.layer is not None for p in points):
                paths[metric] = plots.layerwise_curve(
                    points, metric, plots.figure_path(output_dir, f"{name}_layerwise_{metric}")
                )
            if any(p.series for p in points):
                paths[f"{metric}_retention"] = plots.retention_curve(
                    points, metric, plots.figure_path(output_dir, f"{name}_retention_{metric}")
                )
    return paths
