"""Prefill cost of a long speech prompt with and without sequence merging (Affinity Pooling).

    python benchmarks/prefill.py                                   # the reference speech-LLM, real units, CPU
    python benchmarks/prefill.py --shape 2048x16 --length 8192     # a random Llama of that shape (GPU-sized)

Prints, per configuration and measured in this one run: the share of speech tokens kept, the analytic prefill
FLOPs ratio, the measured prefill wall-time ratio (median over --repeats interleaved baseline/merged pairs after
one warm-up pair), and on CUDA the peak
dynamic memory ratio (peak allocated during the prefill minus the weights). The prefill runs as `generate` runs it:
batch 1, a KV cache, logits for the last position only.

The reference model's prompt is real: the speech units of consecutive test-split utterances, joined into one
`<bos><|asr|> units <|text_start|>` prompt of --length units. A random model has random hidden states, so
Affinity Pooling would merge at random there; the `--shape` mode therefore times the oracle uniform merge at the
retention you give (--retention, default 0.15, the study's 14.91 % on Qwen2-Audio), at the input and at a deep
layer, to show what that retention buys in time and memory on a larger model.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hf_token_merge.sequence import MergeStage, SequenceMergeConfig, apply_sequence_merge


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_prefill(model, ids: torch.Tensor) -> tuple[float, float | None]:
    """Seconds of one prefill, and its peak dynamic CUDA memory in bytes (None on CPU)."""
    device = ids.device
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
    synchronize(device)
    start = time.perf_counter()
    model(input_ids=ids, use_cache=True, logits_to_keep=1)
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) - resident if device.type == "cuda" else None
    return seconds, peak


def compare(model, ids: torch.Tensor, config: SequenceMergeConfig, repeats: int, tokenizer=None) -> dict:
    """Baseline and merged prefills interleaved (so that machine load hits both alike); medians and ratios."""
    base_times, merged_times, base_peak, merged_peak = [], [], None, None
    for attempt in range(repeats + 1):  # the first pair warms up kernels and allocators
        seconds, base_peak = time_prefill(model, ids)
        if attempt:
            base_times.append(seconds)
        with apply_sequence_merge(model, config, tokenizer=tokenizer) as handle:
            seconds, merged_peak = time_prefill(model, ids)
            retention = handle.retention
            baseline_flops, merged_flops = handle.prefill_flops()
        if attempt:
            merged_times.append(seconds)
    return {
        "retention": retention,
        "flops_ratio": merged_flops / baseline_flops,
        "base_seconds": statistics.median(base_times),
        "time_ratio": statistics.median(m / b for m, b in zip(merged_times, base_times, strict=True)),
        "memory_ratio": merged_peak / base_peak if base_peak else None,
        "base_memory": base_peak,
    }


def reference_setup(length: int):
    """The reference speech-LLM and one prompt of `length` real units, plus its speech selection.

    The bundled checkpoint folder is read with plain transformers, so this runs where only torch and transformers
    are installed.
    """
    import json
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hf_token_merge

    folder = Path(hf_token_merge.__file__).parent / "reference" / "assets" / "reference_speech_llm"
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    limit = model.config.max_position_embeddings - 3
    if length > limit:
        raise SystemExit(f"--length {length}: the reference model has {limit + 3} positions; use <= {limit}.")
    with open(folder / "eval_test.jsonl", encoding="utf-8") as rows:
        units = [unit for line in rows if line.strip() for unit in json.loads(line)["units"]][:length]
    tokens = [tokenizer.bos_token, "<|asr|>", *[f"<|s_{u}|>" for u in units], "<|text_start|>"]
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(tokens)])
    configs = {
        "aggressive dual L3": SequenceMergeConfig.dual("aggressive", deep_layer=3, preset="reference"),
        "conservative dual L3": SequenceMergeConfig.dual("conservative", deep_layer=3, preset="reference"),
        "affinity tau 0.3 at L3": SequenceMergeConfig(
            stages=[MergeStage(layer=3, threshold=0.3, window=3)], preset="reference"
        ),
        "uniform merge, keep 50 % at L0": SequenceMergeConfig(
            stages=[MergeStage(layer=0, mode="uniform_merge", retention=0.5)], preset="reference"
        ),
        "uniform merge, keep 25 % at L2": SequenceMergeConfig(
            stages=[MergeStage(layer=2, mode="uniform_merge", retention=0.25)], preset="reference"
        ),
    }
    return model, tokenizer, ids, configs


def shaped_setup(shape: str, length: int, retention: float, dtype: torch.dtype, device: torch.device):
    """A random Llama of `hidden x layers`, a prompt of `length` speech tokens between short text."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers = (int(v) for v in shape.split("x"))
    config = LlamaConfig(
        vocab_size=32_000 + 4_096,
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.6875) // 64 * 64,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 128,
        num_key_value_heads=max(1, hidden // 512),
        max_position_embeddings=length + 64,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialise where it runs: a 1 B model inits in seconds on a GPU
        model = LlamaForCausalLM(config).to(dtype).eval()
    speech = torch.randint(32_000, 36_096, (length,), generator=torch.Generator().manual_seed(0))
    ids = torch.cat([torch.tensor([1, 10, 11]), speech, torch.tensor([12, 13])])[None]
    deep = layers * 3 // 4
    speech_range = {"token_id_range": (32_000, 36_096)}
    # the study: input + deep; here input keeps sqrt(retention) and the deep stage the rest
    per_stage = retention**0.5
    configs = {
        f"uniform merge, keep {retention:.0%} (input + L{deep})": SequenceMergeConfig(
            stages=[
                MergeStage(layer=0, mode="uniform_merge", retention=per_stage),
                MergeStage(layer=deep, mode="uniform_merge", retention=per_stage),
            ],
            **speech_range,
        ),
        f"uniform merge, keep {retention:.0%} at the input": SequenceMergeConfig(
            stages=[MergeStage(layer=0, mode="uniform_merge", retention=retention)], **speech_range
        ),
    }
    return model, ids, configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", help="hidden x layers of a random Llama, e.g. 2048x16 (default: the reference)")
    parser.add_argument("--length", type=int, help="speech tokens in the prompt (default 1000 / 8192)")
    parser.add_argument("--retention", type=float, default=0.15, help="--shape mode: speech tokens kept")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))

    if args.shape:
        model, ids, configs = shaped_setup(args.shape, args.length or 8192, args.retention, dtype, device)
        tokenizer = None
    else:
        model, tokenizer, ids, configs = reference_setup(args.length or 1000)
        model = model.to(dtype)
    model.to(device)
    ids = ids.to(device)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"model: {parameters / 1e6:.1f} M parameters, {dtype}, {device}; prompt: {ids.shape[1]} tokens")

    print("| configuration | speech kept | FLOPs ratio | time ratio | memory ratio | baseline |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, config in configs.items():
        r = compare(model, ids, config, args.repeats, tokenizer)
        memory = f"{r['memory_ratio']:.3f}" if r["memory_ratio"] else "n/a (CPU)"
        baseline = f"{r['base_seconds'] * 1e3:.1f} ms" + (
            f", {r['base_memory'] / 2**20:.0f} MiB" if r["base_memory"] else ""
        )
        print(
            f"| {name} | {r['retention']:.1%} | {r['flops_ratio']:.3f} | {r['time_ratio']:.3f} | {memory} | "
            f"{baseline} |"
        )


if __name__ == "__main__":
    main()
