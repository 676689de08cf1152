"""Step 4: train the reference speech-LLM (Llama, ASR + unit continuation) on the synthetic train split.

Every train utterance gives an ASR example per epoch (units -> characters, loss on the characters); the
first half of them (`--continuation-fraction`) also a unit-continuation example (loss on the units).
Examples are shuffled with a fixed seed, grouped into batches of similar length (right-padded), and
trained with AdamW, linear warm-up then cosine decay, gradient clipping at 1.0, float32 on the CPU.
The final weights, tokenizer and generation config go to the package assets
(`hf_token_merge/reference/assets/reference_speech_llm/`); checkpoints and the log to the work folder
in the user cache.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

import torch
from common import work_dir
from transformers import GenerationConfig, LlamaForCausalLM

from hf_token_merge.evaluation import word_error_rate
from hf_token_merge.reference.speech_llm import (
    UNIT_TOKENIZER_DIR,
    SequenceBuilder,
    build_speech_llm_tokenizer,
    reference_llama_config,
    reference_speech_llm_dir,
    transcribe_units,
)
from hf_token_merge.reference.speech_units import CONFIG_NAME


def batches(examples: list[tuple[list[int], list[int]]], batch_size: int, rng: random.Random):
    """Shuffle, sort within pools of 32 batches by length, cut into batches, shuffle the batches."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    pool = 32 * batch_size
    out = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: len(examples[i][0]))
        out.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(out)
    return out


def collate(examples, indices, pad_id):
    width = max(len(examples[i][0]) for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), width), -100, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        seq, lab = examples[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, : len(seq)] = torch.tensor(lab)
        mask[row, : len(seq)] = 1
    return ids, labels, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on a shared CPU")
    parser.add_argument("--continuation-fraction", type=float, default=0.5, help="share of train utterances")
    parser.add_argument("--max-minutes", type=float, default=40, help="stop early after this long (0: never)")
    parser.add_argument("--benchmark", type=int, default=0, help="only time this many steps, save nothing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    rows = [json.loads(line) for line in (work_dir() / "units.jsonl").read_text(encoding="utf-8").splitlines()]
    unit_config_path = reference_speech_llm_dir() / UNIT_TOKENIZER_DIR / CONFIG_NAME
    num_units = json.loads(unit_config_path.read_text(encoding="utf-8"))["num_units"]
    tokenizer = build_speech_llm_tokenizer(num_units)
    builder = SequenceBuilder(tokenizer)
    train = [row for row in rows if row["split"] == "train"]
    valid = [row for row in rows if row["split"] == "validation"]
    examples = [builder.asr_example(r["units"], r["text"]) for r in train]
    n_continuation = round(args.continuation_fraction * len(train))
    examples += [builder.continuation_example(r["units"]) for r in train[:n_continuation]]
    valid_examples = [builder.asr_example(r["units"], r["text"]) for r in valid]

    model = LlamaForCausalLM(reference_llama_config(tokenizer))
    model.generation_config = GenerationConfig(
        bos_token_id=builder.bos,
        eos_token_id=[builder.text_end, builder.eos],
        pad_token_id=builder.pad,
        do_sample=False,
        num_beams=1,
        max_new_tokens=300,
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{len(train)} train utterances, {len(examples)} examples, model {n_params / 1e6:.2f} M parameters", flush=True
    )

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
    )
    total = args.benchmark or args.steps

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, total - args.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    log_path = work_dir() / ("train_benchmark.jsonl" if args.benchmark else "train_log.jsonl")
    log_path.write_text("", encoding="utf-8")

    def log(record: dict) -> None:
        print(json.dumps(record), flush=True)
        with open(log_path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")

    start = time.time()
    step, epoch, queue, stopped_early = 0, 0, [], False
    model.train()
    while step < total and not stopped_early:
        if not queue:
            queue, epoch = batches(examples, args.batch_size, rng), epoch + 1
        ids, labels, mask = collate(examples, queue.pop(), builder.pad)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % 25 == 0:
            record = {
                "step": step,
                "epoch": epoch,
                "loss": round(loss.item(), 4),
                "lr": scheduler.get_last_lr()[0],
                "seconds": round(time.time() - start, 1),
            }
            log(record)
        if args.max_minutes and time.time() - start > 60 * args.max_minutes:
            stopped_early = True
            log({"step": step, "stopped_early": f"wall-clock cap of {args.max_minutes} min reached"})
        if args.benchmark == 0 and (step % args.eval_every == 0 or step == total or stopped_early):
            model.eval()
            with torch.no_grad():
                losses = []
                for i in range(0, len(valid_examples), 32):
                    ids, labels, mask = collate(
                        valid_examples, list(range(i, min(i + 32, len(valid_examples)))), builder.pad
                    )
                    losses.append(model(input_ids=ids, attention_mask=mask, labels=labels).loss.item())
                subset = valid[:40]
                hyps = transcribe_units(model, tokenizer, [r["units"] for r in subset])
                wer = word_error_rate([r["text"] for r in subset], hyps)
            record = {
                "step": step,
                "valid_asr_loss": round(sum(losses) / len(losses), 4),
                "valid_wer_40": round(wer, 4),
                "seconds": round(time.time() - start, 1),
                "example": hyps[0],
                "reference": subset[0]["text"],
            }
            log(record)
            model.save_pretrained(work_dir() / "checkpoint")
            model.train()
    elapsed = time.time() - start
    print(f"trained {step} steps ({epoch} epochs) in {elapsed:.0f} s ({elapsed / step:.2f} s/step)", flush=True)
    if args.benchmark:
        return
    model.eval()
    out = reference_speech_llm_dir()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (work_dir() / "train_summary.json").write_text(
        json.dumps(
            {
                "steps": step,
                "planned_steps": total,
                "epochs": epoch,
                "seconds": round(elapsed),
                "parameters": n_params,
                "args": vars(args),
            },
            indent=2,
        )
    )
    print(f"saved to {out}")


if __name__ == "__main__":
    main()
