"""Train the reference codec speech-LLM (Llama in Llasa's layout; TTS text -> codes and ASR codes -> text).

One script for CPU and GPU (`--device cpu|cuda`). Data: the committed codec corpus, train split only
(`load_codec_corpus("train")`); every utterance gives one TTS and one ASR example per epoch. Examples are
packed into batches by a token budget (`--batch-tokens`): shuffled with the seed, sorted by length within pools
of 64 batches so that rows of one batch have similar lengths (little padding, and every example starts at
position 0 as at inference), and the batches shuffled again. AdamW (betas 0.9/0.95, weight decay 0.1 on
matrices), linear warm-up then cosine decay to 10 %, gradient clipping at 1.0; bf16 autocast with `--amp`.

Two training aids for TTS alignment, both off by default and neither changing the model (still a plain
`LlamaForCausalLM`): `--guide-weight` adds a guided-attention loss (`AttentionGuide`: chosen heads are pulled onto the
diagonal band between target steps and source tokens, in both tasks), and `--corrupt-codes` replaces a share of the
input codes by random codes (labels kept), so that the next code cannot be read off the previous ones alone.
`--init-from` continues from weights this script wrote (a new optimizer and schedule).

Outputs in `--output-dir`:
* `train_log.jsonl`: one line per `--log-every` steps (losses per task, learning rate, tokens, seconds) and
  per dev evaluation (`--eval-every`: teacher-forced loss per task on 96 dev utterances);
* `checkpoint/state.pt`: model, optimizer, scheduler and position, every `--checkpoint-minutes` and at the end
  (`--resume` continues from it with the same batches);
* `model/`: the final weights in bf16 safetensors, sharded below 16 MiB per file, with the tokenizer and
  the generation config: what `load_codec_speech_llm(path)` reads and what is committed to
  `hf_token_merge/reference/assets/codec_speech_llm/`.

`--stop-at HH:MM` (UTC) ends training early at that time, still writing the checkpoint and `model/`. With
`--fit-to-stop-at` the cosine decay runs over the wall-clock time left until a minute before `--stop-at` instead of
over steps, and training ends there: on a shared CPU whose speed changes with its load, the schedule still completes
(the step count then depends on the load, so such a run is seeded but not step-for-step reproducible).

    python recipes/speech_llm/train.py --output-dir runs/cpu --device cpu --threads 2 --epochs 3
    python recipes/speech_llm/train.py --output-dir runs/gpu --device cuda --amp --epochs 30 --batch-tokens 65536
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch
from transformers import GenerationConfig, LlamaForCausalLM

from hf_token_merge.reference.codec_corpus import load_codec_corpus
from hf_token_merge.reference.codec_llm import (
    SPEECH_GENERATION_END,
    CodecSequenceBuilder,
    build_codec_llm_tokenizer,
    codec_llama_config,
)
from hf_token_merge.reference.speech_codec import reference_speech_codec_dir

TASKS = ("tts", "asr")
MAX_SHARD = "15MB"  # every file below 16 MiB


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=float, default=3.0, help="epochs (fractions allowed); sets the schedule")
    parser.add_argument("--max-steps", type=int, default=None, help="overrides --epochs for the schedule")
    parser.add_argument("--batch-tokens", type=int, default=8192, help="padded tokens per batch")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--tasks", default="tts,asr", help="comma-separated subset of tts,asr")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0)
    parser.add_argument("--stop-at", default=None, help="UTC HH:MM: stop there, writing checkpoint and model/")
    parser.add_argument(
        "--fit-to-stop-at",
        action="store_true",
        help="decay the learning rate over the wall-clock time to --stop-at (not over steps) and end there",
    )
    parser.add_argument("--pause-after", type=int, default=None, help="stop after N steps of this run (resumable)")
    parser.add_argument(
        "--evaluate",
        default=None,
        metavar="SPLITS",
        help="after training, run evaluate.py on these splits (e.g. test,librivox) into <output-dir>/results.json",
    )
    parser.add_argument("--limit", type=int, default=None, help="first N train utterances only (smoke tests)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--init-from",
        default=None,
        metavar="MODEL_DIR",
        help="start from these weights (a model/ folder this script wrote) instead of a fresh initialisation",
    )
    parser.add_argument(
        "--guide-weight",
        type=float,
        default=0.0,
        help="weight of the guided-attention loss (0: off); see AttentionGuide",
    )
    parser.add_argument("--guide-layers", default="1,2", help="layers whose --guide-heads are guided")
    parser.add_argument("--guide-heads", default="0,1", help="heads guided in each of --guide-layers")
    parser.add_argument("--guide-sigma", type=float, default=0.2, help="width of the guided diagonal band")
    parser.add_argument(
        "--corrupt-codes",
        type=float,
        default=0.0,
        help="share of input code tokens replaced by random codes (labels kept): makes TTS lean on the text",
    )
    return parser.parse_args(argv)


def build_examples(builder: CodecSequenceBuilder, split: str, tasks: list[str], limit: int | None = None):
    """(ids, labels, task) per utterance and task of one split of the codec corpus."""
    data = load_codec_corpus(split)
    rows = data.select(range(min(limit, len(data)))) if limit else data
    examples = []
    for text, codes in zip(rows["text"], rows["codes"], strict=True):
        if "tts" in tasks:
            examples.append((*builder.tts_example(text, codes), 0))
        if "asr" in tasks:
            examples.append((*builder.asr_example(codes, text), 1))
    return examples


def epoch_batches(lengths: list[int], batch_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: shuffled, sorted by length within pools, cut by the token budget, shuffled."""
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = max(1, 64 * batch_tokens // max(1, sum(lengths) // len(lengths)))
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batch: list[int] = []
        for i in chunk:
            if batch and (len(batch) + 1) * max(lengths[i], lengths[batch[-1]]) > batch_tokens:
                batches.append(batch)
                batch = []
            batch.append(i)
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches


def collate(examples, indices: list[int], pad_id: int):
    width = max(len(examples[i][0]) for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), width), -100, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    task = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        seq, lab, kind = examples[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, : len(seq)] = torch.tensor(lab)
        mask[row, : len(seq)] = 1
        task[row, :] = kind
    return ids, labels, mask, task


def corrupt_codes(ids: torch.Tensor, code_offset: int, num_codes: int, share: float, seed: int) -> torch.Tensor:
    """A copy of `ids` in which each code token is replaced, with probability `share`, by a uniform random code.

    Only inputs change (labels stay the true codes). A TTS model trained on clean codes can predict the next code
    from the previous ones alone and learn to ignore the text; with noisy history it has to read the text.
    """
    if share <= 0:
        return ids
    generator = torch.Generator().manual_seed(seed)
    is_code = (ids >= code_offset) & (ids < code_offset + num_codes)
    hit = is_code & (torch.rand(ids.shape, generator=generator) < share)
    noise = code_offset + torch.randint(0, num_codes, ids.shape, generator=generator)
    return torch.where(hit, noise, ids)


def guide_spans(labels: list[int]) -> tuple[range, range]:
    """(query positions, key positions) of one example for `AttentionGuide`.

    Both tasks read `<|bos|> <|X_START|> source <|X_END|> <|Y_START|> target <|Y_END|>`: the keys are the source
    (text for TTS, codes for ASR); the queries are the positions whose outputs predict the target and its end marker.
    """
    first_label = next(i for i, label in enumerate(labels) if label != -100)
    return range(first_label - 1, len(labels) - 1), range(2, first_label - 2)


def guide_weights(examples, indices: list[int], width: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The diagonal band of every row of a batch: weights (rows, width, width) and a query mask (rows, width).

    Query i of Q and key j of K get exp(-(j/K - i/Q)^2 / (2 sigma^2)) (Tachibana et al., 2018): speech runs
    through the text at a roughly even pace, so the target's i-th step belongs near the source's matching point.
    """
    weights = torch.zeros((len(indices), width, width))
    queries = torch.zeros((len(indices), width))
    for row, i in enumerate(indices):
        query_span, key_span = guide_spans(examples[i][1])
        q = torch.arange(len(query_span), dtype=torch.float32) / len(query_span)
        k = torch.arange(len(key_span), dtype=torch.float32) / len(key_span)
        band = torch.exp(-((k[None, :] - q[:, None]) ** 2) / (2 * sigma**2))
        weights[row, query_span.start : query_span.stop, key_span.start : key_span.stop] = band
        queries[row, query_span.start : query_span.stop] = 1
    return weights, queries


class AttentionGuide:
    """Guided attention for a decoder-only model: pull chosen heads onto the source's diagonal band.

    A forward pre-hook on each guided layer's attention keeps its input; `loss` recomputes the guided heads'
    attention probabilities from it (same projections, rotary embedding, causal and padding mask) and returns the
    mean over heads and queries of 1 - (probability mass inside the band). The model stays a plain
    `LlamaForCausalLM`: the guide only adds a training loss.
    """

    def __init__(self, model: LlamaForCausalLM, layers: list[int], heads: list[int]) -> None:
        self.heads = heads
        self.inputs: dict[int, tuple] = {}
        self.enabled = False
        self.handles = []
        for layer in layers:
            attention = model.model.layers[layer].self_attn
            self.handles.append(attention.register_forward_pre_hook(self._keep, with_kwargs=True))

    def _keep(self, attention, args, kwargs) -> None:
        if self.enabled:
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            self.inputs[attention.layer_idx] = (attention, hidden, kwargs["position_embeddings"])

    def loss(self, weights: torch.Tensor, queries: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        total = 0.0
        width = key_mask.shape[1]
        blocked = ~torch.tril(torch.ones(width, width, dtype=torch.bool, device=key_mask.device))
        blocked = blocked[None, None] | (key_mask[:, None, None, :] == 0)
        for attention, hidden, (cos, sin) in self.inputs.values():
            shape = (*hidden.shape[:-1], -1, attention.head_dim)
            q = attention.q_proj(hidden).view(shape).transpose(1, 2)[:, self.heads]
            k = attention.k_proj(hidden).view(shape).transpose(1, 2)[:, self.heads]
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            scores = (q.float() @ k.float().transpose(-1, -2)) * attention.scaling
            probs = scores.masked_fill(blocked, float("-inf")).softmax(-1)
            inside = (probs * weights[:, None]).sum(-1)
            total = total + ((1 - inside) * queries[:, None]).sum() / (queries.sum() * len(self.heads))
        self.inputs.clear()
        return total / len(self.handles)


def task_losses(model, ids, labels, mask, task, device, amp: bool):
    """Mean loss over all target tokens, and (nll sum, tokens) per task."""
    ids, labels, mask, task = (t.to(device) for t in (ids, labels, mask, task))
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
        logits = model(input_ids=ids, attention_mask=mask).logits
    target = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="none"
    ).view_as(target)
    valid = target != -100
    per_task = {}
    for k, name in enumerate(TASKS):
        sel = valid & (task[:, 1:] == k)
        per_task[name] = (float(nll[sel].detach().sum()), int(sel.sum()))
    return nll[valid].mean(), per_task


@torch.no_grad()
def dev_losses(model, examples, pad_id, device, amp) -> dict[str, float]:
    model.eval()
    sums = {name: [0.0, 0] for name in TASKS}
    for start in range(0, len(examples), 16):
        batch = list(range(start, min(start + 16, len(examples))))
        _, per_task = task_losses(model, *collate(examples, batch, pad_id), device, amp)
        for name, (total, count) in per_task.items():
            sums[name][0] += total
            sums[name][1] += count
    model.train()
    return {f"dev_{name}": total / count for name, (total, count) in sums.items() if count}


def save_model(model, tokenizer, builder, folder: Path, meta: dict) -> None:
    """bf16 safetensors sharded below 16 MiB, tokenizer, generation config and training summary."""
    import copy

    from hf_token_merge.atomic import atomic_directory

    export = copy.deepcopy(model).to("cpu", torch.bfloat16).eval()
    export.config.dtype = "bfloat16"
    export.generation_config = GenerationConfig(
        bos_token_id=builder.bos,
        eos_token_id=[builder.marker[SPEECH_GENERATION_END], builder.eos],
        pad_token_id=builder.pad,
        do_sample=False,
        max_new_tokens=1024,
    )
    with atomic_directory(folder) as staged:
        export.save_pretrained(staged, max_shard_size=MAX_SHARD)
        tokenizer.save_pretrained(staged)
        (Path(staged) / "training.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    args = parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks or any(t not in TASKS for t in tasks):
        sys.exit(f"--tasks must be a comma-separated subset of {TASKS}, got {args.tasks!r}")
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint" / "state.pt"
    if checkpoint.exists() and not args.resume:
        sys.exit(f"{checkpoint} exists. Fix: pass --resume to continue it, or choose another --output-dir.")
    deadline = None
    if args.stop_at:
        now = dt.datetime.now(dt.timezone.utc)
        hour, minute = (int(x) for x in args.stop_at.split(":"))
        deadline = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if deadline < now:
            deadline += dt.timedelta(days=1)
    if args.fit_to_stop_at and deadline is None:
        sys.exit("--fit-to-stop-at needs --stop-at HH:MM.")

    codec_config = json.loads((reference_speech_codec_dir() / "config.json").read_text(encoding="utf-8"))
    tokenizer = build_codec_llm_tokenizer(int(codec_config["codebook_size"]))
    builder = CodecSequenceBuilder(tokenizer)
    examples = build_examples(builder, "train", tasks, args.limit)
    dev = build_examples(builder, "dev", tasks, 96)
    lengths = [len(e[0]) for e in examples]
    batches_per_epoch = len(epoch_batches(lengths, args.batch_tokens, args.seed, 0))
    total_steps = args.max_steps or max(1, math.ceil(args.epochs * batches_per_epoch))

    torch.manual_seed(args.seed)
    config = codec_llama_config(
        tokenizer, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads, max_positions=2048
    )
    if args.init_from:
        model = LlamaForCausalLM.from_pretrained(args.init_from, dtype=torch.float32, local_files_only=True)
        shape = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
        if any(getattr(model.config, name) != getattr(config, name) for name in shape):
            sys.exit(
                f"--init-from {args.init_from} is not a {args.layers}-layer, {args.hidden}-wide, {args.heads}-head "
                "model over this vocabulary. Fix: pass the --layers/--hidden/--heads it was trained with."
            )
        model = model.to(args.device)
    else:
        model = LlamaForCausalLM(config).to(args.device)
    model.train()
    guide = None
    if args.guide_weight > 0:
        layers = [int(x) for x in args.guide_layers.split(",")]
        heads = [int(x) for x in args.guide_heads.split(",")]
        if any(not 0 <= x < model.config.num_hidden_layers for x in layers) or any(
            not 0 <= x < model.config.num_attention_heads for x in heads
        ):
            sys.exit(
                f"--guide-layers {args.guide_layers} / --guide-heads {args.guide_heads} name no such layer/head. "
                f"Fix: layers lie in [0, {model.config.num_hidden_layers}), "
                f"heads in [0, {model.config.num_attention_heads})."
            )
        guide = AttentionGuide(model, layers, heads)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )

    budget_start = time.time()

    def schedule(step: int) -> float:
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        if args.fit_to_stop_at:  # the decay follows the wall clock: the CPU's speed changes with its load
            end = deadline.timestamp() - 60  # final dev loss and save
            progress = min(1.0, max(0.0, (time.time() - budget_start) / max(1.0, end - budget_start)))
        else:
            progress = min(1.0, (step - args.warmup_steps) / max(1, total_steps - args.warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    step, epoch, position, tokens_seen, elapsed = 0, 0, 0, 0, 0.0
    if args.resume and checkpoint.exists():
        state = torch.load(checkpoint, map_location=args.device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, position = state["step"], state["epoch"], state["position"]
        tokens_seen, elapsed = state["tokens"], state["elapsed"]
        total_steps = state["total_steps"]
        budget_start = state.get("budget_start", budget_start)
        print(f"resumed at step {step} (epoch {epoch}, batch {position})", flush=True)
    parameters = sum(p.numel() for p in model.parameters())
    settings = {**vars(args), "tasks": tasks, "parameters": parameters, "vocab_size": len(tokenizer)}
    settings |= {"train_examples": len(examples), "batches_per_epoch": batches_per_epoch, "total_steps": total_steps}
    print(json.dumps(settings), flush=True)
    (out / "settings.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")

    def log(record: dict) -> None:
        with open(out / "train_log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)

    def write_checkpoint() -> None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "epoch": epoch,
            "position": position,
            "tokens": tokens_seen,
            "elapsed": elapsed,
            "total_steps": total_steps,
            "budget_start": budget_start,
            "settings": settings,
        }
        torch.save(state, checkpoint.with_suffix(".tmp"))
        os.replace(checkpoint.with_suffix(".tmp"), checkpoint)

    window = {name: [0.0, 0] for name in (*TASKS, "guide")}
    first_step = step
    last_checkpoint, started, stopped_early = time.time(), time.time() - elapsed, False
    batches = epoch_batches(lengths, args.batch_tokens, args.seed, epoch)
    while step < total_steps:
        if position >= len(batches):
            epoch, position = epoch + 1, 0
            batches = epoch_batches(lengths, args.batch_tokens, args.seed, epoch)
        batch = batches[position]
        ids, labels, mask, task = collate(examples, batch, builder.pad)
        seed = args.seed * 1_000_003 + step
        ids = corrupt_codes(ids, builder.code_offset, builder.num_codes, args.corrupt_codes, seed)
        if guide is not None:
            guide.enabled = True
        loss, per_task = task_losses(model, ids, labels, mask, task, args.device, args.amp)
        if guide is not None:
            guide.enabled = False
            weights, queries = guide_weights(examples, batch, ids.shape[1], args.guide_sigma)
            with torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.amp):
                guide_loss = guide.loss(weights.to(args.device), queries.to(args.device), mask.to(args.device))
            loss = loss + args.guide_weight * guide_loss
            per_task["guide"] = (float(guide_loss.detach()), 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        step, position, tokens_seen = step + 1, position + 1, tokens_seen + int(mask.sum())
        elapsed = time.time() - started
        for name, (total, count) in per_task.items():
            window[name][0] += total
            window[name][1] += count
        if step % args.log_every == 0 or step == total_steps:
            record = {
                "step": step,
                "epoch": round(epoch + position / len(batches), 4),
                "lr": scheduler.get_last_lr()[0],
            }
            record |= {name: total / count for name, (total, count) in window.items() if count}
            record |= {"tokens": tokens_seen, "seconds": round(elapsed, 1)}
            log(record)
            window = {name: [0.0, 0] for name in window}
        if step % args.eval_every == 0 or step == total_steps:
            record = {"step": step, **dev_losses(model, dev, builder.pad, args.device, args.amp)}
            log(record)
        if time.time() - last_checkpoint > 60 * args.checkpoint_minutes:
            write_checkpoint()
            last_checkpoint = time.time()
        if args.pause_after is not None and step - first_step >= args.pause_after and step < total_steps:
            stopped_early = True
            print(f"--pause-after {args.pause_after}: paused at step {step} of {total_steps}", flush=True)
            break
        if deadline is not None and time.time() >= deadline.timestamp() - (60 if args.fit_to_stop_at else 0):
            stopped_early = not args.fit_to_stop_at
            print(f"--stop-at {args.stop_at} reached at step {step} of {total_steps}", flush=True)
            break
    write_checkpoint()
    meta = {
        "steps": step,
        "total_steps": total_steps,
        "epochs": round(epoch + position / len(batches), 4),
        "tokens": tokens_seen,
        "seconds": round(elapsed, 1),
        "stopped_early": stopped_early,
        "device": args.device,
        "threads": args.threads if args.device == "cpu" else None,
        "settings": settings,
    }
    save_model(model, tokenizer, builder, out / "model", meta)
    print(json.dumps(meta), flush=True)
    if args.evaluate:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import evaluate

        command = ["--model", str(out / "model"), "--splits", args.evaluate, "--oracle", "--threads", str(args.threads)]
        evaluate.main([*command, "--output", str(out / "results.json"), "--predictions-dir", str(out / "predictions")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
