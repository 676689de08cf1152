"""Streaming vs in-memory compress of a generated Llasa-3B-shaped checkpoint: wall time and peak RSS.

    nice -n 10 python benchmarks/streaming_compress.py --workdir /tmp/stream_bench          # vocab 193,800, 28 layers
    python benchmarks/streaming_compress.py --workdir /tmp/small --layers 2 --vocab 20000   # a quick, small shape

The checkpoint (Llama-3.2-3B geometry: hidden 3,072, MLP 8,192, 24 heads, 8 KV heads, tied embeddings, bf16, shards
of at most 2 GB) is written shard by shard from seeded random tensors, never built as a model. One plan (the last
65,536 rows merged into 8,192; `--method random` by default, so no CPU goes to clustering, which both paths share)
is made from the files first; then each path runs in its own subprocess and its peak RSS is read with
`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` by a parent that runs nothing else:

- streaming: `compress_streaming(checkpoint, plan, out)`;
- in memory: `from_pretrained(checkpoint, dtype=bfloat16)`, `apply_token_merge(model, plan)`, `save_pretrained`.

Goal: streaming peak RSS <= 1.5 x (embedding + head bytes) + the interpreter's baseline (the peak RSS of a
subprocess that imports the same modules and does nothing). The generated checkpoint and outputs are deleted at the
end unless `--keep`, also when the run is interrupted (Ctrl-C, SIGTERM, SIGHUP: the measured subprocesses are
killed first); nothing else under `--workdir` is touched, and the folder itself is removed only if the run made it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

SPEECH_ROWS = 65_536
SHARD_BYTES = 2 * 10**9


def shape(args: argparse.Namespace) -> dict[str, int]:
    """The Llama config fields of the benchmark model."""
    return {
        "vocab_size": args.vocab,
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
    }


def generate(folder: Path, args: argparse.Namespace) -> int:
    """Write a random bf16 tied Llama checkpoint shard by shard; returns its tensor bytes.

    Values come from one seeded random block of 2**24 numbers, read at a different offset for every tensor: generating
    3 billion fresh random numbers would cost minutes of CPU this benchmark is not about, and the merge only needs the
    embedding rows to differ (the embedding is drawn in full).
    """
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    config = LlamaConfig(
        **shape(args), tie_word_embeddings=True, bos_token_id=0, eos_token_id=1, max_position_embeddings=4096
    )
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = "bfloat16"
    folder.mkdir(parents=True)
    config.save_pretrained(folder)
    generator = torch.Generator().manual_seed(0)
    pool = (torch.randn(2**24, generator=generator) * 0.02).to(torch.bfloat16)
    hidden, inter, heads, kv = args.hidden, args.intermediate, args.heads, args.kv_heads
    head_dim = hidden // heads

    def tensor(*size: int) -> torch.Tensor:
        count = 1
        for s in size:
            count *= s
        start = int(torch.randint(0, pool.numel(), (1,), generator=generator))
        reps = -(-(start + count) // pool.numel())
        return (
            pool.repeat(reps)[start : start + count].view(size) if reps > 1 else pool[start : start + count].view(size)
        )

    tensors: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (args.vocab, hidden))]
    for layer in range(args.layers):
        prefix = f"model.layers.{layer}."
        tensors += [
            (prefix + "self_attn.q_proj.weight", (heads * head_dim, hidden)),
            (prefix + "self_attn.k_proj.weight", (kv * head_dim, hidden)),
            (prefix + "self_attn.v_proj.weight", (kv * head_dim, hidden)),
            (prefix + "self_attn.o_proj.weight", (hidden, heads * head_dim)),
            (prefix + "mlp.gate_proj.weight", (inter, hidden)),
            (prefix + "mlp.up_proj.weight", (inter, hidden)),
            (prefix + "mlp.down_proj.weight", (hidden, inter)),
            (prefix + "input_layernorm.weight", (hidden,)),
            (prefix + "post_attention_layernorm.weight", (hidden,)),
        ]
    tensors.append(("model.norm.weight", (hidden,)))

    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, dims in tensors:
        nbytes = 2 * int(torch.tensor(dims).prod())
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append((name, dims))
        size += nbytes
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        data = {}
        for name, dims in shard:
            if name == "model.embed_tokens.weight":
                data[name] = (torch.randn(dims, generator=generator) * 0.02).to(torch.bfloat16)
            elif name.endswith("norm.weight"):
                data[name] = torch.ones(dims, dtype=torch.bfloat16)
            else:
                data[name] = tensor(*dims).clone()
            total += data[name].numel() * 2
            weight_map[name] = file
        save_file(data, folder / file, metadata={"format": "pt"})
        del data
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return total


def worker(mode: str, checkpoint: str, plan_dir: str, out: str, method: str) -> None:
    """One measured path (run in a subprocess)."""
    import hf_token_merge
    from hf_token_merge import MergePlan, TokenMergeConfig

    start = time.perf_counter()
    if mode == "baseline":
        from transformers import AutoModelForCausalLM  # noqa: F401  (the same imports as the paths)
    elif mode == "plan":
        from hf_token_merge.serialization import plan_streaming

        vocab = json.loads((Path(checkpoint) / "config.json").read_text())["vocab_size"]
        merge = TokenMergeConfig(token_id_range=(vocab - SPEECH_ROWS, vocab), n_clusters=8192, method=method)
        plan_streaming(checkpoint, merge, show_progress=False).save_pretrained(plan_dir)
    elif mode == "streaming":
        hf_token_merge.compress_streaming(checkpoint, MergePlan.from_pretrained(plan_dir), out, show_progress=False)
    elif mode == "in_memory":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.bfloat16)
        result = hf_token_merge.apply_token_merge(model, MergePlan.from_pretrained(plan_dir), show_progress=False)
        model.save_pretrained(out)
        result.plan.config.save_pretrained(out)
        result.plan.save_pretrained(out)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def measure(mode: str, *arguments: str) -> dict[str, float]:
    """Run one path in a child of a fresh parent; returns its seconds and peak RSS (bytes).

    Parent and child run in a session of their own, so an interruption of this script (Ctrl-C, SIGTERM) kills both
    (`os.killpg`) before the generated files are deleted: a surviving child would keep writing gigabytes there.
    """
    probe = (
        "import json, resource, subprocess, sys; "
        f"run = subprocess.run([sys.executable, {__file__!r}, '--worker', *sys.argv[1:]], capture_output=True, "
        "text=True); sys.stderr.write(run.stderr); run.check_returncode(); "
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024; "
        "print(json.dumps({**json.loads(run.stdout.strip().splitlines()[-1]), 'peak': peak}))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", probe, mode, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    if process.returncode:
        raise RuntimeError(f"{mode} failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


CREATED = ("checkpoint", "plan", "none", "streamed", "in_memory")  # everything the script writes under --workdir


def remove_generated(work: Path, made_workdir: bool) -> None:
    """Delete what this run wrote under `work` (and `work` itself only if the run made it), ignoring new signals."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not stop the deletion half-way
    for name in CREATED:
        shutil.rmtree(work / name, ignore_errors=True)
    if made_workdir:
        with contextlib.suppress(OSError):
            work.rmdir()  # only if empty: never a file the script did not write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="empty folder for the checkpoint and outputs (required)")
    parser.add_argument("--vocab", type=int, default=193_800)
    parser.add_argument("--hidden", type=int, default=3072)
    parser.add_argument("--intermediate", type=int, default=8192)
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--heads", type=int, default=24)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--method", default="random", help="clustering of the shared plan (random: no CPU)")
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoint and outputs")
    parser.add_argument("--worker", nargs=5, metavar=("MODE", "CKPT", "PLAN", "OUT", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    if not args.workdir:
        parser.error("--workdir is required")
    if args.vocab <= SPEECH_ROWS:
        parser.error(f"--vocab must exceed the {SPEECH_ROWS} merged rows")

    work = Path(args.workdir)
    if work.exists() and any(work.iterdir()):
        parser.error(f"{work} is not empty")
    made_workdir = not work.exists()
    work.mkdir(parents=True, exist_ok=True)
    checkpoint, plan = work / "checkpoint", work / "plan"
    # SIGTERM (a timeout, `kill`) and SIGHUP (a closed terminal) unwind like Ctrl-C, through the cleanup below.
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    signal.signal(signal.SIGHUP, lambda signum, _: sys.exit(128 + signum))
    try:
        start = time.perf_counter()
        total = generate(checkpoint, args)
        print(f"generated {total / 1e9:.2f} GB in {time.perf_counter() - start:.0f} s: {checkpoint}", flush=True)
        table = args.vocab * args.hidden * 2  # tied: the embedding is the head, stored once
        common = [str(checkpoint), str(plan)]
        baseline = measure("baseline", *common, str(work / "none"), args.method)
        planned = measure("plan", *common, str(work / "none"), args.method)
        streamed = measure("streaming", *common, str(work / "streamed"), args.method)
        in_memory = measure("in_memory", *common, str(work / "in_memory"), args.method)
    finally:
        if not args.keep:
            remove_generated(work, made_workdir)

    gib = 2**30
    goal = 1.5 * table + baseline["peak"]
    print(f"model: {total / 1e9:.2f} GB of tensors; embedding (= tied head) {table / 1e9:.2f} GB")
    print(f"interpreter baseline peak RSS: {baseline['peak'] / gib:.2f} GiB")
    for name, run in (("plan (from the files)", planned), ("streaming", streamed), ("in memory", in_memory)):
        print(
            f"{name:22s} {run['seconds']:7.1f} s  peak RSS {run['peak'] / gib:6.2f} GiB "
            f"({run['peak'] / total:.2f} x model)"
        )
    stream_peak = max(planned["peak"], streamed["peak"])
    print(
        f"streaming / in-memory: wall {streamed['seconds'] / in_memory['seconds']:.2f}, "
        f"peak RSS {streamed['peak'] / in_memory['peak']:.2f}"
    )
    print(
        f"streaming peak (plan included) {stream_peak / gib:.2f} GiB vs goal 1.5 x {table / gib:.2f} + "
        f"{baseline['peak'] / gib:.2f} = {goal / gib:.2f} GiB: {'PASS' if stream_peak <= goal else 'FAIL'} "
        f"({(stream_peak - baseline['peak']) / table:.2f} x the table above baseline)"
    )


if __name__ == "__main__":
    main()
