"""Step 5: measure the reference speech-LLM: greedy ASR WER and unit perplexity.

* Synthetic test split (the committed `eval_test.jsonl`): ASR WER (Whisper's `EnglishTextNormalizer` on
  both sides, via `hf_token_merge.reference.word_error_rate`) and the perplexity of the units under the
  continuation task.
* The 12 real LibriVox utterances (`load_librivox_sonnets`): encoded to units with the committed speech unit
  tokenizer, then the same greedy ASR.

Prints one JSON object and writes it to `<cache>/reference_speech_llm_work-v1/eval.json`.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import work_dir

from hf_token_merge.evaluation import word_error_rate
from hf_token_merge.reference import decode_audio, load_librivox_sonnets
from hf_token_merge.reference.speech_llm import (
    load_reference_eval_set,
    load_reference_speech_llm,
    load_reference_unit_tokenizer,
    transcribe_units,
    unit_perplexity,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-librivox", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    model, tokenizer = load_reference_speech_llm()
    rows = load_reference_eval_set()
    units = [row["units"] for row in rows]
    hyps = transcribe_units(model, tokenizer, units)
    result = {
        "test_utterances": len(rows),
        "test_wer": word_error_rate([row["text"] for row in rows], hyps),
        "test_unit_perplexity": unit_perplexity(model, tokenizer, units),
        "test_examples": [{"reference": r["text"], "hypothesis": h} for r, h in list(zip(rows, hyps, strict=True))[:5]],
    }
    if not args.skip_librivox:
        unit_tokenizer = load_reference_unit_tokenizer()
        sonnets = load_librivox_sonnets()
        sonnet_units = [unit_tokenizer.encode(decode_audio(audio), 16_000) for audio in sonnets["audio"]]
        sonnet_hyps = transcribe_units(model, tokenizer, sonnet_units)
        result["librivox_utterances"] = len(sonnet_units)
        result["librivox_wer"] = word_error_rate(sonnets["text"], sonnet_hyps)
        result["librivox_unit_perplexity"] = unit_perplexity(model, tokenizer, sonnet_units)
        result["librivox_examples"] = [
            {"reference": r, "hypothesis": h} for r, h in list(zip(sonnets["text"], sonnet_hyps, strict=True))[:3]
        ]
    result["seconds"] = round(time.time() - start, 1)
    text = json.dumps(result, indent=2)
    (work_dir() / "eval.json").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
