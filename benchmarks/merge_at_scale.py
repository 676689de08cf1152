"""Merge 65,536 Llasa-shaped speech rows (hidden 2048) into 8,192 and report wall time, peak memory and quality.

    python benchmarks/merge_at_scale.py                 # the merge, the reference product, the quality check
    python benchmarks/merge_at_scale.py --quality-only  # only the synthetic quality check (e.g. on another checkout)
    python benchmarks/merge_at_scale.py --quality-only --quality-large  # also 65,536 rows around 8,192 centres

Goals: the whole merge (`apply_token_merge`, planning included) in at most 1.5 x the time of one full-space product
of the selected rows with k rows (float32, timed in the same run: the work of a final full-space assignment);
peak RSS at most the model plus twice the speech block; and on a seeded synthetic block with known clusters, a mean
member-to-merged-row cosine no worse than before.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from llasa_shape import HIDDEN, SPEECH_RANGE, SPEECH_ROWS, build_llasa_shaped_model

from hf_token_merge import TokenMergeConfig, apply_token_merge
from hf_token_merge.clustering import cluster_rows, prepare_rows


def rss_bytes() -> int:
    """Current resident set size, from /proc (Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def reset_peak_rss() -> None:
    """Reset the kernel's high-water mark (VmHWM), so the peak covers the merge, not the model's construction."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss_bytes() -> int:
    """Peak resident set size since the last reset (VmHWM in /proc/self/status, in KiB)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def full_space_product_seconds(model, k: int, block_size: int = 4096) -> float:
    """Seconds of one float32 product of the prepared selected rows with k rows, blockwise (the reference unit)."""
    weight = model.model.embed_tokens.weight.detach()
    rows = prepare_rows(weight[SPEECH_RANGE[0] : SPEECH_RANGE[1]], "cosine")
    keys = rows[torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(0))[:k]].clone()
    start = time.perf_counter()
    for part in range(0, rows.shape[0], block_size):
        torch.mm(rows[part : part + block_size], keys.T)
    return time.perf_counter() - start


def synthetic_quality(
    n: int = 16_384, k: int = 2_048, width: int = 512, noise: float = 0.03, seed: int = 0
) -> dict[str, float]:
    """Cluster a seeded block of `n` rows around `k` random centres (known clusters) with the default k-means.

    Returns:
        The mean and worst member-to-merged-row cosine (the plan statistic), the purity (share of rows whose found
        cluster's majority planted cluster is their own) and the seconds the clustering took.
    """
    generator = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(k, width, generator=generator), dim=1)
    planted = torch.randperm(n, generator=generator) % k
    rows = prepare_rows(centres[planted] + noise * torch.randn(n, width, generator=generator), "cosine")
    config = TokenMergeConfig(token_id_range=(0, n), n_clusters=k)
    start = time.perf_counter()
    labels = cluster_rows(rows, config, show_progress=False)
    seconds = time.perf_counter() - start
    sums = torch.zeros(k, width).index_add_(0, labels, rows)
    merged = torch.nn.functional.normalize(sums, dim=1)
    cosine = (rows * merged[labels]).sum(dim=1)
    sizes = torch.bincount(labels, minlength=k)
    in_clusters = sizes[labels] > 1
    pairs = torch.zeros(k, k, dtype=torch.long).index_put_((labels, planted), torch.ones(n, dtype=torch.long), True)
    purity = float(pairs.max(dim=1).values.sum()) / n
    return {
        "mean_cosine": float(cosine[in_clusters].mean()),
        "worst_cosine": float(cosine[in_clusters].min()),
        "purity": purity,
        "seconds": seconds,
    }


def print_quality(large: bool = False) -> None:
    """Run and print `synthetic_quality`; `large` adds a 65,536-row block, beyond the 16,384-row PCA and seeding
    sample of large problems, so their sampled path is measured too."""
    shapes = [(16_384, 2_048)] + ([(65_536, 8_192)] if large else [])
    for n, k in shapes:
        quality = synthetic_quality(n=n, k=k)
        print(
            f"synthetic block ({n:,} rows x 512 around {k:,} known centres): mean member-to-row cosine "
            f"{quality['mean_cosine']:.4f}, worst {quality['worst_cosine']:.4f}, purity {quality['purity']:.4f}, "
            f"clustered in {quality['seconds']:.1f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, default=8192)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument(
        "--no-reuse-storage",
        action="store_true",
        help="allocate new merged tables (memory shrinks at once; higher peak) instead of reusing the original storage",
    )
    parser.add_argument("--quality-only", action="store_true", help="only the synthetic quality check")
    parser.add_argument(
        "--quality-large", action="store_true", help="also a 65,536-row block (the sampled PCA and seeding path)"
    )
    args = parser.parse_args()
    if args.quality_only:
        print_quality(args.quality_large)
        return

    model = build_llasa_shaped_model(args.layers)
    model_rss = rss_bytes()
    speech_block = SPEECH_ROWS * model.config.hidden_size * model.model.embed_tokens.weight.element_size()
    budget = model_rss + 2 * speech_block

    config = TokenMergeConfig(token_id_range=SPEECH_RANGE, n_clusters=args.clusters)
    reset_peak_rss()
    start = time.perf_counter()
    result = apply_token_merge(model, config, reuse_storage=not args.no_reuse_storage, show_progress=False)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    del model
    product = full_space_product_seconds(build_llasa_shaped_model(0), args.clusters)

    gib = 2**30
    print(f"torch threads: {torch.get_num_threads()}")
    print(result)
    ratio = seconds / product
    print(
        f"merge wall time: {seconds:.1f} s; one full-space product ({SPEECH_ROWS} x {args.clusters} x "
        f"{HIDDEN}, float32): {product:.1f} s; ratio {ratio:.2f} (goal <= 1.5): {'PASS' if ratio <= 1.5 else 'FAIL'}"
    )
    print(f"plan: mean cosine to merged row {result.plan.statistics['mean_cosine_to_merged_row']:.4f}")
    print(
        f"peak RSS: {peak / gib:.2f} GiB; model RSS {model_rss / gib:.2f} GiB + 2 x speech block "
        f"{speech_block / gib:.2f} GiB = {budget / gib:.2f} GiB budget: {'PASS' if peak <= budget else 'FAIL'}"
    )
    print(f"peak / budget ratio: {peak / budget:.3f}")
    print_quality(args.quality_large)


if __name__ == "__main__":
    main()
