"""Step 4: resynthesis WER of the codec (Whisper tiny.en on decoded log-mel) against Whisper on the original audio.

For each utterance of a split: original features = Whisper's own 30 s input of the audio; resynthesis features =
the codec's decoding of `codec.encode(audio)` in Whisper's input. Both are transcribed greedily by Whisper tiny.en
and scored against the text with the library's WER (Whisper's English normaliser with its spelling map + jiwer
counts). The resynthesis runs through the library's implementation (`hf_token_merge.evaluation.tts.reference_codec`:
`codec_features`, `whisper_asr(features=True)`, `score`), the one the oracle TTS WER uses too, so
`--window-seconds 0` gives exactly `hf-token-merge evaluate --task tts-wer --model reference-codec-oracle` on the same
utterances (with the same `--batch-size`). Also
reports codebook utilisation on the split: share of codes used and perplexity of code usage. Transcripts of the
original audio are cached in the work folder (they do not depend on the codec).

    python recipes/speech_codec/evaluate_codec.py --split test [--codec PATH] [--limit N]
    python recipes/speech_codec/evaluate_codec.py --split librivox
    python recipes/speech_codec/evaluate_codec.py --split test --limit 20 --window-seconds 0   # per utterance
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_split_audio, work_dir  # noqa: E402

from hf_token_merge.evaluation.tts.evaluate import whisper_asr  # noqa: E402
from hf_token_merge.evaluation.tts.reference_codec import (  # noqa: E402
    resynthesis_transcripts,
    score,
    windows_of,
)
from hf_token_merge.reference.speech_codec import (  # noqa: E402
    SpeechCodec,
    reference_speech_codec_dir,
)
from hf_token_merge.reference.whisper import load_whisper_tiny_en  # noqa: E402


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


def wer_report(texts: list[str], hyps: list[str], asr) -> dict:
    counts = score(texts, hyps, asr)
    return {"wer": counts.wer, "errors": counts.errors, "words": counts.target_words}


def evaluate(
    codec: SpeechCodec,
    split: str,
    limit: int | None,
    model,
    processor,
    original_only: bool = False,
    window_seconds: float = 28.0,
    gap_seconds: float = 0.5,
    batch_size: int = 8,
) -> dict:
    """Original and resynthesis WER of one split, with utilisation.

    Whisper's encoder always reads 30 s, so on 2 shared CPU cores one utterance costs seconds. Consecutive
    utterances are therefore packed into windows of up to `window_seconds`, separated by `gap_seconds` of
    silence, for both the original audio and the resynthesis; WER is counted per window against the joined texts
    (corpus WER, as per utterance). `window_seconds=0` transcribes every utterance on its own.
    """
    asr = whisper_asr(model, processor, features=True, batch_size=batch_size)
    rows = load_split_audio(split, limit)
    windows = windows_of([len(row["audio"]) / 16_000 for row in rows], window_seconds, gap_seconds)
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
        hyps = [hyp for start in range(0, len(feats), batch_size) for hyp in asr(feats[start : start + batch_size])]
        for (key, _), hyp in zip(missing, hyps, strict=True):
            known[key] = hyp
        cache.write_text(json.dumps(known, indent=0))
    report = {
        "split": split,
        "utterances": len(rows),
        "windows": len(windows),
        "window_seconds": window_seconds,
        "audio_seconds": round(sum(len(row["audio"]) for row in rows) / 16_000, 1),
        "original": wer_report(refs, [known[key] for key in keys], asr),
    }
    if original_only:
        return report
    start = time.time()
    codes = [codec.encode(row["audio"]).numpy() for row in rows]
    codec_s = time.time() - start
    hyps = resynthesis_transcripts(
        codec, codes, asr, windows=windows, gap_frames=int(gap_seconds * 100), batch_size=batch_size
    )
    return report | {
        "resynthesis": wer_report(refs, hyps, asr),
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
    parser.add_argument("--batch-size", type=int, default=8, help="Whisper inputs per generate call")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = SpeechCodec() if args.original_only else SpeechCodec.from_pretrained(args.codec)
    model, processor = load_whisper_tiny_en()
    report = evaluate(
        codec,
        args.split,
        args.limit,
        model,
        processor,
        args.original_only,
        window_seconds=args.window_seconds,
        batch_size=args.batch_size,
    )
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
