"""Step 4: resynthesis WER of the codec (Whisper tiny.en on decoded log-mel) against Whisper on the original audio.

For each utterance of a split: original features = Whisper's own 30 s input of the audio; resynthesis features =
`codec.to_whisper_features(codec.decode(codec.encode(audio)))`. Both are transcribed greedily by Whisper tiny.en
and scored against the text with the library's corpus WER (Whisper's English normaliser + jiwer counts). Also
reports codebook utilisation on the split: share of codes used and perplexity of code usage. Transcripts of the
original audio are cached in the work folder (they do not depend on the codec).

    python recipes/speech_codec/evaluate_codec.py --split test [--codec PATH] [--limit N]
    python recipes/speech_codec/evaluate_codec.py --split librivox
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_split_audio, work_dir  # noqa: E402

from hf_token_merge.evaluation.text import corpus_error_counts  # noqa: E402
from hf_token_merge.reference.speech_codec import (  # noqa: E402
    SpeechCodec,
    reference_speech_codec_dir,
)
from hf_token_merge.reference.whisper import load_whisper_tiny_en  # noqa: E402


@torch.no_grad()
def transcribe_features(model, processor, features: list[torch.Tensor], batch_size: int = 8) -> list[str]:
    """Greedy Whisper transcripts of (80, 3000) feature tensors."""
    texts: list[str] = []
    for start in tqdm(range(0, len(features), batch_size), desc="whisper", mininterval=30):
        batch = torch.stack(features[start : start + batch_size]).to(model.dtype)
        ids = model.generate(batch, num_beams=1, do_sample=False)
        texts.extend(text.strip() for text in processor.batch_decode(ids, skip_special_tokens=True))
    return texts


def utilisation(codes: list[np.ndarray], codebook_size: int) -> dict:
    """Share of the codebook used and perplexity (exp of the entropy) of code usage."""
    counts = Counter(np.concatenate(codes).tolist())
    total = sum(counts.values())
    probs = np.array(list(counts.values()), dtype=np.float64) / total
    return {
        "codes": total,
        "used": len(counts),
        "used_share": len(counts) / codebook_size,
        "perplexity": float(math.exp(-(probs * np.log(probs)).sum())),
    }


def wer_report(texts: list[str], hyps: list[str]) -> dict:
    counts = corpus_error_counts(texts, hyps)
    words = counts.hits + counts.substitutions + counts.deletions
    errors = counts.substitutions + counts.deletions + counts.insertions
    return {"wer": errors / words, "errors": errors, "words": words}


def windows_of(rows: list[dict], max_seconds: float, gap_seconds: float) -> list[list[int]]:
    """Pack consecutive utterances into windows of at most `max_seconds` (gaps included); 1 per window if 0."""
    out: list[list[int]] = []
    length = 0.0
    for index, row in enumerate(rows):
        seconds = len(row["audio"]) / 16_000
        if out and max_seconds > 0 and length + gap_seconds + seconds <= max_seconds:
            out[-1].append(index)
            length += gap_seconds + seconds
        else:
            out.append([index])
            length = seconds
    return out


def evaluate(
    codec: SpeechCodec,
    split: str,
    limit: int | None,
    model,
    processor,
    original_only: bool = False,
    window_seconds: float = 28.0,
    gap_seconds: float = 0.5,
) -> dict:
    """Original and resynthesis WER of one split, with utilisation.

    Whisper's encoder always reads 30 s, so on 2 shared CPU cores one utterance costs seconds. Consecutive
    utterances are therefore packed into windows of up to `window_seconds`, separated by `gap_seconds` of
    silence, for both the original audio and the resynthesis; WER is counted per window against the joined texts
    (corpus WER, as per utterance). `window_seconds=0` transcribes every utterance on its own.
    """
    rows = load_split_audio(split, limit)
    windows = windows_of(rows, window_seconds, gap_seconds)
    refs = [" ".join(rows[i]["text"] for i in window) for window in windows]
    keys = ["|".join(rows[i]["id"] for i in window) for window in windows]
    cache = work_dir() / f"original_transcripts_{split}.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    missing = [(key, window) for key, window in zip(keys, windows, strict=True) if key not in known]
    if missing:
        gap = np.zeros(int(gap_seconds * 16_000), dtype=np.float32)
        feats = []
        for _, window in missing:
            pieces = [piece for i in window for piece in (rows[i]["audio"], gap)][:-1]
            feats.append(codec.whisper_input(np.concatenate(pieces)))
        for (key, _), hyp in zip(missing, transcribe_features(model, processor, feats), strict=True):
            known[key] = hyp
        cache.write_text(json.dumps(known, indent=0))
    report = {
        "split": split,
        "utterances": len(rows),
        "windows": len(windows),
        "window_seconds": window_seconds,
        "audio_seconds": round(sum(len(row["audio"]) for row in rows) / 16_000, 1),
        "original": wer_report(refs, [known[key] for key in keys]),
    }
    if original_only:
        return report
    start = time.time()
    codes = [codec.encode(row["audio"]).numpy() for row in rows]
    decoded = [codec.decode(c) for c in codes]
    codec_s = time.time() - start
    gap_frames = int(gap_seconds * 100)
    hyps = transcribe_features(
        model, processor, [codec.pack_for_whisper([decoded[i] for i in w], gap_frames) for w in windows]
    )
    return report | {
        "resynthesis": wer_report(refs, hyps),
        "utilisation": utilisation(codes, codec.codebook_size),
        "codec_seconds": round(codec_s, 1),
        "examples": [
            {"text": t, "original": known[k], "resynthesis": h} for t, k, h in zip(refs, keys, hyps, strict=True)
        ][:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", type=Path, default=reference_speech_codec_dir())
    parser.add_argument("--split", default="test", choices=["train", "dev", "test", "librivox"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--original-only", action="store_true", help="only transcribe the original audio")
    parser.add_argument("--window-seconds", type=float, default=28.0, help="pack utterances; 0: one per input")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = SpeechCodec() if args.original_only else SpeechCodec.from_pretrained(args.codec)
    model, processor = load_whisper_tiny_en()
    report = evaluate(
        codec, args.split, args.limit, model, processor, args.original_only, window_seconds=args.window_seconds
    )
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
