"""Evaluate the codec speech-LLM: ASR WER and TTS WER, with 95 % bootstrap intervals, per split.

* ASR: beam search (`--asr-beams`, default the bundled model's `ASR_NUM_BEAMS` = 4, chosen on dev; 1 is greedy) from
  `<|TEXT_GENERATION_START|>` (through `evaluate_wer`), scored with Whisper's English normaliser. Several counts
  (`--asr-beams 4,1`) score each; the first fills the `asr` column, the others `asr_beams_N`.
* TTS: greedy generation from `<|SPEECH_GENERATION_START|>` → the `reference` adapter (`<|s_N|>` → N, strict) →
  the reference codec's decoder (log-mel) → Whisper tiny.en (through `evaluate_tts_wer`). `--oracle` adds the
  codec's own resynthesis WER of the ground-truth codes (the floor TTS WER can reach with this codec and ASR).

The interval is the percentile bootstrap over utterances (1,000 resamples, seed 0) of the corpus WER.

    python recipes/speech_llm/evaluate.py --splits test,librivox --output results.json
    python recipes/speech_llm/evaluate.py --model runs/cpu/model --splits dev --limit 100
    python recipes/speech_llm/evaluate.py --splits dev --limit 100 --tasks asr --asr-beams 1,2,3,4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from hf_token_merge.codec_job import codec_asr_wer, codec_tts_wer
from hf_token_merge.evaluation.confidence import paired_bootstrap
from hf_token_merge.reference.codec_corpus import load_codec_corpus
from hf_token_merge.reference.codec_llm import ASR_NUM_BEAMS, load_codec_speech_llm

CHECK_UTTERANCES = {"asr": 8, "tts": 4}  # the first utterances that tests/reference/test_codec_llm.py re-scores


def subset_wer(records: list[dict], count: int) -> dict:
    """Corpus WER of the first `count` records (dataset order): what the committed-model test recomputes."""
    head = records[:count]
    errors = sum(r["substitutions"] + r["deletions"] + r["insertions"] for r in head)
    words = sum(r["substitutions"] + r["deletions"] + r["hits"] for r in head)
    return {"utterances": len(head), "wer": errors / words if words else 0.0}


def interval(records: list[dict]) -> dict:
    """Corpus WER of per-utterance records and its 95 % bootstrap interval (a paired bootstrap against zero)."""
    errors = [r["substitutions"] + r["deletions"] + r["insertions"] for r in records]
    words = [r["substitutions"] + r["deletions"] + r["hits"] for r in records]
    low, high = paired_bootstrap(np.zeros(len(errors)), errors, words)
    return {"wer": sum(errors) / sum(words), "ci_low": low, "ci_high": high, "words": sum(words)}


def asr_wer(
    model, tokenizer, data, output_dir: Path | None = None, batch_size: int = 32, num_beams: int = ASR_NUM_BEAMS
) -> dict:
    """ASR WER of the model on a codec-corpus split, decoded with `num_beams` beams (1: greedy)."""
    started = time.perf_counter()
    device = "cpu" if not torch.cuda.is_available() else None
    result = codec_asr_wer(
        model, tokenizer, data, batch_size=batch_size, device=device, output_dir=output_dir, show_progress=False,
        num_beams=num_beams,
    )  # fmt: skip
    return {
        **interval(result.predictions),
        "num_beams": num_beams,
        "utterances": len(data),
        "first": subset_wer(result.predictions, CHECK_UTTERANCES["asr"]),
        "seconds": time.perf_counter() - started,
    }


def tts_wer(model, tokenizer, data, codec, asr, output_dir: Path | None = None, batch_size: int = 32) -> dict:
    """TTS WER of the model (or an `OracleSpeechModel`) on a codec-corpus split."""
    started = time.perf_counter()
    device = "cpu" if not torch.cuda.is_available() else None
    result = codec_tts_wer(
        model, tokenizer, data, codec, asr, batch_size=batch_size, device=device, output_dir=output_dir,
        show_progress=False,
    )  # fmt: skip
    return {
        **interval(result.predictions),
        "utterances": len(data),
        "invalid": result.invalid,
        "without_end_token": result.unended,
        "generated_seconds": result.generated_seconds,
        "first": subset_wer(result.predictions, CHECK_UTTERANCES["tts"]),
        "seconds": time.perf_counter() - started,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder; default: the bundled one")
    parser.add_argument("--splits", default="test,librivox")
    parser.add_argument("--tasks", default="asr,tts")
    parser.add_argument("--limit", type=int, default=None, help="first N utterances of each split")
    parser.add_argument("--tts-limit", type=int, default=None, help="TTS (and --oracle) on the first N only")
    parser.add_argument("--oracle", action="store_true", help="also the codec's resynthesis WER (TTS floor)")
    parser.add_argument(
        "--asr-beams", default=str(ASR_NUM_BEAMS), help="ASR beam counts, comma-separated (first: `asr`)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=None, help="JSON file for the numbers")
    parser.add_argument("--predictions-dir", default=None, help="write per-utterance predictions here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tasks = args.tasks.split(",")
    beam_counts = [int(count) for count in args.asr_beams.split(",")]
    model, tokenizer = load_codec_speech_llm(args.model)
    codec = asr = None
    if "tts" in tasks or args.oracle:
        from hf_token_merge.evaluation.tts.evaluate import whisper_asr
        from hf_token_merge.reference import load_reference_speech_codec

        codec, asr = load_reference_speech_codec(), whisper_asr(features=True)
    results = {"model": args.model or "bundled", "limit": args.limit, "tts_limit": args.tts_limit, "splits": {}}
    for split in args.splits.split(","):
        data = load_codec_corpus(split)
        if args.limit:
            data = data.select(range(min(args.limit, len(data))))
        row = results["splits"][split] = {}

        def where(name: str, split: str = split) -> Path | None:
            return Path(args.predictions_dir) / split / name if args.predictions_dir else None

        for rank, num_beams in enumerate(beam_counts if "asr" in tasks else []):
            name = "asr" if rank == 0 else f"asr_beams_{num_beams}"
            row[name] = asr_wer(model, tokenizer, data, where(name), num_beams=num_beams)
            print(split, name, json.dumps(row[name]), flush=True)
        tts_data = data.select(range(min(args.tts_limit, len(data)))) if args.tts_limit else data
        if "tts" in tasks:
            row["tts"] = tts_wer(model, tokenizer, tts_data, codec, asr, where("tts"))
            print(split, "TTS", json.dumps(row["tts"]), flush=True)
        if args.oracle:
            from hf_token_merge.evaluation.tts.evaluate import OracleSpeechModel

            row["oracle_tts"] = tts_wer(OracleSpeechModel(), tokenizer, tts_data, codec, asr, where("oracle"))
            print(split, "oracle TTS", json.dumps(row["oracle_tts"]), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
