"""Write the English calibration file that ranks Whisper tiny.en's text tokens by frequency.

Two sources, neither of them an evaluation set:

* the 1,800 *train* sentences of the synthetic KJV corpus (`recipes/reference_model/sentences.txt`, split as
  `synthesize.py` splits it; the validation and test sentences are left out), each with a leading space as in
  Whisper's transcripts;
* with `--wordfreq N` (dev-only: `pip install wordfreq`, code Apache-2.0, data CC-BY-SA 4.0), the N most frequent
  English words of `wordfreq`, each written in four forms with the word's frequency times a form weight:
  " word" 1.0, " Word" 0.3, "word" 0.1, "Word" 0.03 (inside a sentence, after a capital, after a hyphen or quote).

The weights are scaled so that each source holds the same total token mass (as `count_text_tokens` counts it).
The file is one text per line, TAB, weight: the format `hf-token-merge sweep --calibration-text` reads.

    PYTHONPATH=. python recipes/whisper_vocabulary/make_calibration.py --wordfreq 200000 --output /tmp/calibration.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RECIPES = Path(__file__).resolve().parent.parent
FORMS = ((" {}", 1.0), (" {}", 0.3), ("{}", 0.1), ("{}", 0.03))  # lower, Capitalised, bare lower, bare Capitalised


def kjv_train_sentences() -> list[str]:
    """The train split of the synthetic corpus's sentences (no audio needed)."""
    sys.path.insert(0, str(RECIPES / "reference_model"))
    from common import SENTENCES
    from synthesize import split_of

    sentences = SENTENCES.read_text(encoding="utf-8").splitlines()
    return [text for text, split in zip(sentences, split_of(len(sentences)), strict=True) if split == "train"]


def word_forms(top: int) -> tuple[list[str], list[float]]:
    """The `top` most frequent English words of wordfreq in four spellings, weighted by frequency."""
    try:
        from wordfreq import get_frequency_dict
    except ImportError as error:
        raise SystemExit("--wordfreq needs the dev-only package: pip install wordfreq") from error
    words = sorted(get_frequency_dict("en", "best").items(), key=lambda item: -item[1])[:top]
    texts, weights = [], []
    for index, (pattern, weight) in enumerate(FORMS):
        for word, frequency in words:
            spelled = word[:1].upper() + word[1:] if index in (1, 3) else word
            texts.append(pattern.format(spelled))
            weights.append(frequency * weight)
    return texts, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="calibration file to write")
    parser.add_argument("--wordfreq", type=int, default=0, help="also the N most frequent English words (wordfreq)")
    args = parser.parse_args()

    from hf_token_merge.reference import load_whisper_tiny_en
    from hf_token_merge.remap import count_text_tokens

    tokenizer = load_whisper_tiny_en()[1].tokenizer
    sources = [([" " + text for text in kjv_train_sentences()], None)]
    if args.wordfreq:
        sources.append(word_forms(args.wordfreq))
    lines = []
    for texts, weights in sources:
        weights = weights or [1.0] * len(texts)
        mass = float(count_text_tokens(tokenizer, texts, len(tokenizer), weights).sum())
        lines += [f"{text}\t{weight / mass:.6e}" for text, weight in zip(texts, weights, strict=True) if weight > 0]
    Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} lines -> {args.output}")


if __name__ == "__main__":
    main()
