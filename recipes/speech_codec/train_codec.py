"""Step 3: train the FSQ speech codec on the train split (CPU or GPU, seeded).

Random crops of `--crop` mel frames (aligned to the code grid) from the train utterances, L1 + MSE reconstruction
loss on Whisper's scaled log-mel, AdamW with a linear warm-up and cosine decay. Settings are chosen on dev
(`--dev` reports the dev reconstruction loss and utilisation; WER on dev comes from `evaluate_codec.py --split dev`).
The codec is written with `save_pretrained` (config.json + model.safetensors), with `train_log.json` beside it.

    python recipes/speech_codec/train_codec.py --out <folder> [--levels 7 5 5 5 5] [--frames-per-code 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_split_audio  # noqa: E402

from hf_token_merge.reference.speech_codec import FLOOR_BELOW_MAX, SpeechCodec, SpeechCodecConfig  # noqa: E402


def features(
    codec: SpeechCodec, split: str, limit: int | None, require_all: bool
) -> tuple[list[str], list[torch.Tensor]]:
    rows = load_split_audio(split, limit, require_all=require_all)
    mels = [codec.log_mel(row["audio"]) for row in tqdm(rows, desc=f"log-mel {split}", mininterval=30)]
    return [row["id"] for row in rows], mels


def crop_batch(mels: list[torch.Tensor], weights: np.ndarray, batch: int, crop: int, fpc: int, rng) -> torch.Tensor:
    """`batch` crops of `crop` frames, utterances drawn by length, starts on the code grid, short ones floor-padded."""
    out = []
    for index in rng.choice(len(mels), size=batch, p=weights):
        mel = mels[index]
        frames = mel.shape[1]
        if frames > crop:
            start = int(rng.integers(0, (frames - crop) // fpc + 1)) * fpc
            piece = mel[:, start : start + crop]
        else:
            piece = mel
        if piece.shape[1] < crop:
            floor = mel.max() - FLOOR_BELOW_MAX
            piece = torch.cat([piece, floor.expand(mel.shape[0], crop - piece.shape[1])], dim=1)
        out.append(piece)
    return torch.stack(out)


def loss_of(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs().mean() + ((pred - target) ** 2).mean()


class WhisperEncoderLoss(torch.nn.Module):
    """L1 distance between Whisper tiny.en encoder states of decoded and original log-mel crops (frozen encoder).

    Whisper is the judge of the codec's gate, so matching what its encoder sees weights the reconstruction error by
    what matters for recognition instead of by mel energy. Crops are shorter than Whisper's 30 s input, so the
    encoder is run layer by layer with the first positions of its position table.
    """

    def __init__(self) -> None:
        super().__init__()
        from hf_token_merge.reference.whisper import load_whisper_tiny_en

        self.encoder = load_whisper_tiny_en()[0].model.encoder.eval().requires_grad_(False)

    def states(self, mel: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        hidden = torch.nn.functional.gelu(enc.conv2(torch.nn.functional.gelu(enc.conv1(mel)))).transpose(1, 2)
        hidden = hidden + enc.embed_positions.weight[: hidden.shape[1]]
        for layer in enc.layers:
            hidden = layer(hidden, attention_mask=None)
        return enc.layer_norm(hidden)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            wanted = self.states(target)
        return (self.states(pred) - wanted).abs().mean()


@torch.no_grad()
def dev_report(codec: SpeechCodec, mels: list[torch.Tensor]) -> dict:
    codec.eval()
    losses, used = [], set()
    for mel in mels:
        padded = codec.pad_frames(mel)
        codes = codec.encode(padded)
        used.update(codes.tolist())
        losses.append(float(loss_of(codec.decode(codes)[:, : mel.shape[1]], mel)))
    return {"dev_loss": float(np.mean(losses)), "dev_codes_used": len(used)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--levels", type=int, nargs="+", default=[7, 5, 5, 5, 5])
    parser.add_argument("--frames-per-code", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=256, help="mel frames per crop (10 ms each)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train", type=int, default=None, help="use the first N train sentences (corpus order)")
    parser.add_argument("--partial", action="store_true", help="skip train sentences not synthesised yet")
    parser.add_argument("--dev", type=int, default=100, help="dev utterances for the final report (0: none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init", type=Path, default=None, help="start from a saved codec (fine-tuning)")
    parser.add_argument("--whisper-loss", type=float, default=0.0, help="weight of the Whisper-encoder state loss")
    parser.add_argument("--save-every", type=int, default=0, help="also save <out>/step-N every N steps (0: never)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    config = SpeechCodecConfig(
        levels=args.levels,
        frames_per_code=args.frames_per_code,
        hidden=args.hidden,
        encoder_blocks=args.blocks,
        decoder_blocks=args.blocks,
    )
    codec = SpeechCodec.from_pretrained(args.init) if args.init else SpeechCodec(config)
    config = codec.config
    whisper_loss = WhisperEncoderLoss().to(args.device) if args.whisper_loss else None
    start = time.time()
    ids, mels = features(codec, "train", args.max_train, require_all=not args.partial)
    feature_s = time.time() - start
    lengths = np.array([mel.shape[1] for mel in mels], dtype=np.float64)
    weights = lengths / lengths.sum()
    print(f"{len(mels)} train utterances, {lengths.sum() / 100 / 3600:.2f} h, features in {feature_s:.0f} s")

    codec.to(args.device).train()
    optimizer = torch.optim.AdamW(codec.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = max(1, args.steps // 20)  # also re-warms a fine-tune from --init

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    history = []
    start = time.time()
    bar = tqdm(range(args.steps), desc="train", mininterval=30)
    running = None
    for step in bar:
        batch = crop_batch(mels, weights, args.batch, args.crop, args.frames_per_code, rng).to(args.device)
        decoded = codec(batch)
        loss = loss_of(decoded, batch)
        if whisper_loss is not None:
            loss = loss + args.whisper_loss * whisper_loss(decoded, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        if step % 25 == 0 or step == args.steps - 1:
            history.append({"step": step, "loss": round(running, 5), "seconds": round(time.time() - start, 1)})
            bar.set_postfix(loss=f"{running:.4f}")
        if args.save_every and step and step % args.save_every == 0:
            # Intermediate checkpoints let dev WER be measured while training goes on.
            codec.save_pretrained(args.out / f"step-{step}")
            codec.train()
    train_s = time.time() - start
    codec.to("cpu").eval()
    report = {
        "config": dataclasses.asdict(config),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "train_utterances": len(mels),
        "train_hours": round(lengths.sum() / 100 / 3600, 3),
        "last_train_id": ids[-1] if ids else None,
        "feature_seconds": round(feature_s, 1),
        "train_seconds": round(train_s, 1),
        "history": history,
    }
    if args.dev:
        _, dev_mels = features(codec, "dev", args.dev, require_all=True)
        report |= dev_report(codec, dev_mels)
    codec.save_pretrained(args.out)
    (args.out / "train_log.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2))


if __name__ == "__main__":
    main()
