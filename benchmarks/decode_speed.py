"""Per-token decode latency of the Llasa-shaped model before and after merging its speech rows.

    python benchmarks/decode_speed.py

Prints the measured latency ratios (after / before) beside the ratio that the matmul FLOPs predict, and the
original-id over compact-logit ratio (goal <= 1.03). The three models (unmerged, merged answering in the original ids,
merged with compact logits) run in the same process on the same inputs (batch 1, a KV cache, greedy steps), their
repeats interleaved so that a change in machine load hits all three alike. It also times, on the step's own logits,
what the original-id mode adds to a step: the gather of every original id's logit and the offset add.
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
def decode_seconds(model, prompt: torch.Tensor, steps: int) -> float:
    """Seconds per decoded token (prefill excluded) over one run of `steps` greedy tokens."""
    cache = DynamicCache(config=model.config)  # `cache=`: transformers 5 deprecates `past_key_values=`
    output = model(prompt, cache=cache, use_cache=True)
    token = output.logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(steps):
        output = model(token, cache=cache, use_cache=True)
        token = output.logits[:, -1:].argmax(-1)
    return (time.perf_counter() - start) / steps


def interleaved_latency(models: dict, prompt: torch.Tensor, steps: int, repeats: int) -> dict[str, float]:
    """Median seconds per token of every model, their runs interleaved (one warm-up run each, not counted)."""
    timings: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(repeats + 1):
        for name, model in models.items():
            seconds = decode_seconds(model, prompt, steps)
            if repeat:
                timings[name].append(seconds)
    return {name: statistics.median(values) for name, values in timings.items()}


@torch.inference_mode()
def original_id_overhead(head, tries: int = 200) -> float:
    """Best seconds of what the original-id head adds to a decode step: the gather of the original ids' logits
    from the merged rows' and the offset add (the head's own `forward` after its `F.linear`)."""
    logits = torch.randn(1, 1, head.out_features, dtype=head.weight.dtype)
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        logits.index_select(-1, head.index_map).add_(head.logit_offset)
        best = min(best, time.perf_counter() - start)
    return best


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
    flops_before = flops_per_token(model, VOCAB_SIZE)

    merged = build_llasa_shaped_model(args.layers)
    config = TokenMergeConfig(token_id_range=SPEECH_RANGE, n_clusters=args.clusters)
    result = apply_token_merge(merged, config, show_progress=False)
    flops_after = flops_per_token(merged, result.plan.num_rows)
    compact = TokenMergeConfig(token_id_range=SPEECH_RANGE, n_clusters=args.clusters, compact_logits=True)
    merged_compact = build_llasa_shaped_model(args.layers)
    apply_token_merge(merged_compact, dataclasses.replace(result.plan, config=compact))

    models = {"before": model, "original ids": merged, "compact logits": merged_compact}
    latency = interleaved_latency(models, prompt, args.steps, args.repeats)
    before, after, after_compact = latency["before"], latency["original ids"], latency["compact logits"]
    overhead = original_id_overhead(merged.get_output_embeddings())

    print(
        f"torch threads: {torch.get_num_threads()}, layers: {args.layers}, "
        f"rows {VOCAB_SIZE} -> {result.plan.num_rows}, "
        f"median of {args.repeats} interleaved runs of {args.steps} tokens"
    )
    print(f"decode latency before:                  {before * 1e3:7.2f} ms/token")
    print(f"decode latency after (original ids):    {after * 1e3:7.2f} ms/token  ratio {after / before:.3f}")
    compact_ratio = after_compact / before
    print(f"decode latency after (compact logits):  {after_compact * 1e3:7.2f} ms/token  ratio {compact_ratio:.3f}")
    print(f"FLOPs-predicted ratio:                  {flops_after / flops_before:.3f}")
    ratio = after / after_compact
    print(f"original ids / compact logits:          {ratio:.3f} (goal <= 1.03): {'PASS' if ratio <= 1.03 else 'FAIL'}")
    print(
        f"original-id gather + offset add alone:  {overhead * 1e3:7.3f} ms/token "
        f"({overhead / after_compact:.2%} of a compact step)"
    )


if __name__ == "__main__":
    main()
