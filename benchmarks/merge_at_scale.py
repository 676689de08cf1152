"""Merge 65,536 Llasa-shaped speech rows (hidden 2048) into 8,192 and report wall time and peak memory.

    python benchmarks/merge_at_scale.py

Target on a 2-core CPU: at most 60 s, and peak RSS at most the model plus twice the speech block.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from llasa_shape import SPEECH_RANGE, SPEECH_ROWS, build_llasa_shaped_model

from hf_token_merge import TokenMergeConfig, apply_token_merge


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, default=8192)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument(
        "--no-reuse-storage",
        action="store_true",
        help="allocate new merged tables (memory shrinks at once; higher peak) instead of reusing the original storage",
    )
    args = parser.parse_args()

    model = build_llasa_shaped_model(args.layers)
    model_rss = rss_bytes()
    speech_block = SPEECH_ROWS * model.config.hidden_size * model.model.embed_tokens.weight.element_size()
    budget = model_rss + 2 * speech_block

    config = TokenMergeConfig(token_id_range=SPEECH_RANGE, n_clusters=args.clusters)
    reset_peak_rss()
    start = time.perf_counter()
    result = apply_token_merge(model, config, reuse_storage=not args.no_reuse_storage)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()

    gib = 2**30
    print(f"torch threads: {torch.get_num_threads()}")
    print(result)
    print(f"merge wall time: {seconds:.1f} s (target <= 60 s): {'PASS' if seconds <= 60 else 'FAIL'}")
    print(
        f"peak RSS: {peak / gib:.2f} GiB; model RSS {model_rss / gib:.2f} GiB + 2 x speech block "
        f"{speech_block / gib:.2f} GiB = {budget / gib:.2f} GiB budget: {'PASS' if peak <= budget else 'FAIL'}"
    )
    print(f"peak / budget ratio: {peak / budget:.3f}; RSS after merge {rss_bytes() / gib:.2f} GiB")


if __name__ == "__main__":
    main()
