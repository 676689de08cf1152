"""Per-token decode latency of the Llasa-shaped model before and after merging its speech rows.

    python benchmarks/decode_speed.py

Prints the measured latency ratio (after / before) beside the ratio that the matmul FLOPs predict.
Both models run in the same process on the same inputs: batch 1, a KV cache, greedy steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from llasa_shape import SPEECH_RANGE, VOCAB_SIZE, build_llasa_shaped_model
from transformers import DynamicCache

from hf_token_merge import TokenMergeConfig, apply_token_merge


@torch.inference_mode()
def decode_latency(model, prompt: torch.Tensor, steps: int, repeats: int) -> float:
    """Median seconds per decoded token (prefill excluded) over `repeats` runs of `steps` tokens."""
    timings = []
    for _ in range(repeats):
        cache = DynamicCache(config=model.config)  # `cache=`: transformers 5 deprecates `past_key_values=`
        output = model(prompt, cache=cache, use_cache=True)
        token = output.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(steps):
            output = model(token, cache=cache, use_cache=True)
            token = output.logits[:, -1:].argmax(-1)
        timings.append((time.perf_counter() - start) / steps)
    return statistics.median(timings)


def flops_per_token(model, head_rows: int) -> int:
    """Multiply-adds of one decode step: every decoder weight once, plus the LM head over `head_rows`."""
    decoder = sum(p.numel() for name, p in model.model.layers.named_parameters() if p.dim() == 2)
    return 2 * (decoder + head_rows * model.config.hidden_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, default=8192)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model = build_llasa_shaped_model(args.layers)
    prompt = torch.randint(0, VOCAB_SIZE, (1, 16), generator=torch.Generator().manual_seed(0))
    before = decode_latency(model, prompt, args.steps, args.repeats)
    flops_before = flops_per_token(model, VOCAB_SIZE)

    config = TokenMergeConfig(token_id_range=SPEECH_RANGE, n_clusters=args.clusters)
    result = apply_token_merge(model, config, show_progress=False)
    after = decode_latency(model, prompt, args.steps, args.repeats)
    flops_after = flops_per_token(model, result.plan.num_rows)

    compact = TokenMergeConfig(token_id_range=SPEECH_RANGE, n_clusters=args.clusters, compact_logits=True)
    model_compact = build_llasa_shaped_model(args.layers)
    apply_token_merge(model_compact, dataclasses.replace(result.plan, config=compact))
    after_compact = decode_latency(model_compact, prompt, args.steps, args.repeats)

    print(
        f"torch threads: {torch.get_num_threads()}, layers: {args.layers}, rows {VOCAB_SIZE} -> {result.plan.num_rows}"
    )
    print(f"decode latency before:                  {before * 1e3:7.2f} ms/token")
    print(f"decode latency after (original ids):    {after * 1e3:7.2f} ms/token  ratio {after / before:.3f}")
    compact_ratio = after_compact / before
    print(f"decode latency after (compact logits):  {after_compact * 1e3:7.2f} ms/token  ratio {compact_ratio:.3f}")
    print(f"FLOPs-predicted ratio:                  {flops_after / flops_before:.3f}")


if __name__ == "__main__":
    main()
