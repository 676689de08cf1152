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

With `--tiers T` (issue 16: the ranking that protects whole everyday words) the file holds no KJV text: the
wordfreq spellings plus numbers (`rankings.word_list`) are sorted by frequency x spelling weight and cut into T
tiers of equal size (under 25,000 each), and every spelling of tier t weighs 10^(5 (T - 1 - t)). A token's summed
count is then decided by the best tier that holds it (the lower tiers together never outweigh one spelling of a
higher tier): keeping the k most counted tokens keeps whole words, most frequent first, and the tokens no word
needs keep count 0 and follow by id (GPT-2's merge order), as the `frequency` method breaks ties.

    PYTHONPATH=. python recipes/whisper_vocabulary/make_calibration.py --wordfreq 200000 --tiers 60 \
        --output calibration-words.txt

With `--fused CALIBRATION` (issue 16: the ranking the `whisper` recipe's `english_frequency` variant uses) the file
is token level: the `fused` ranking of `rankings.py` (rank fusion of the counts of CALIBRATION, the output of
`--wordfreq 200000`, and the whole-word `wordfreq_max`), one line per selected token, its text TAB its score, so
that `--calibration-text` counts each token exactly its score. A token that is no text by itself (a piece of a UTF-8
character) is written as the shortest completion to a character whose tokenization holds it, so the other pieces
of that character get at least the same score.

    PYTHONPATH=. python recipes/whisper_vocabulary/make_calibration.py --wordfreq 200000 --output calibration.txt
    PYTHONPATH=. python recipes/whisper_vocabulary/make_calibration.py --wordfreq 200000 --fused calibration.txt \
        --output calibration-fused.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RECIPES = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(RECIPES / "whisper_vocabulary"))
from rankings import spellings, word_list  # noqa: E402  (the four spellings and their weights live there)


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
    texts, weights = spellings(words)
    return texts, weights.tolist()


def tiered_lines(top: int, tiers: int) -> tuple[list[str], list[float]]:
    """The wordfreq spellings (with numbers) in `tiers` equal tiers, weighted 10^(5 (tiers - 1 - tier))."""
    if not 1 <= tiers <= 61:
        raise SystemExit("--tiers must lie in 1..61 (10^(5 x 60) is near the largest float64).")
    texts, weights = spellings(word_list(top))
    order = sorted(range(len(texts)), key=lambda i: (-weights[i], i))
    size = -(-len(order) // tiers)
    if 4 * size >= 10**5:  # a word repeats a token at most a few times
        raise SystemExit(f"{len(order)} spellings in {tiers} tiers is {size} a tier; pass more tiers.")
    return [texts[i] for i in order], [10.0 ** (5 * (tiers - 1 - rank // size)) for rank in range(len(order))]


def fused_lines(calibration: str, top: int) -> list[str]:
    """`text TAB score` of every selected token of the `fused` ranking with a score (see `completed_text`)."""
    from rankings import SELECTED, rankings

    from hf_token_merge.reference import load_whisper_tiny_en

    tokenizer = load_whisper_tiny_en()[1].tokenizer
    scores = rankings(tokenizer, top=top, calibration_file=calibration)["fused"]
    ids = [i for i in range(*SELECTED) if scores[i] > 0]
    texts = [tokenizer.decode([i]) for i in ids]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    lines = []
    for i, text, back in zip(ids, texts, encoded, strict=True):
        if back != [i] or not text.strip() or "\n" in text or "\r" in text:
            text = completed_text(tokenizer, i)
        if text is not None:
            lines.append(f"{text}\t{scores[i]:.0f}")
    return lines


def completed_text(tokenizer, token_id: int) -> str | None:
    """A one-line text whose tokenization holds `token_id`, for a token that is not a text by itself (a piece of a
    UTF-8 character, completed with a lead or continuation byte); None if none of the tried completions works."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    raw = bytes(byte_of[char] for char in tokenizer.convert_ids_to_tokens(token_id))
    continuation = [bytes([b]) for b in range(0x80, 0xC0)]
    prefixes = [b""] + [bytes([b]) for b in range(0xC2, 0xF5)] + [b"\xe2\x80", b"\xf0\x9f", b"\xe2\x84"]
    suffixes = [b""] + continuation + [c + b"\x80" for c in continuation] + [c + b"\x80\x80" for c in continuation]
    for prefix in prefixes:
        for suffix in suffixes:
            try:
                text = (prefix + raw + suffix).decode("utf-8")
            except UnicodeDecodeError:
                continue
            usable = text.strip() and "\n" not in text and "\r" not in text
            if usable and token_id in tokenizer(text, add_special_tokens=False)["input_ids"]:
                return text
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="calibration file to write")
    parser.add_argument("--wordfreq", type=int, default=0, help="also the N most frequent English words (wordfreq)")
    parser.add_argument("--tiers", type=int, default=0, help="whole-word tiers of the wordfreq words only (issue 16)")
    parser.add_argument("--fused", metavar="CALIBRATION", help="token-level file of the `fused` ranking (issue 16)")
    args = parser.parse_args()
    if args.fused:
        if not args.wordfreq:
            raise SystemExit("--fused ranks with the wordfreq words too: pass --wordfreq N.")
        lines = fused_lines(args.fused, args.wordfreq)
        Path(args.output).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        print(f"{len(lines)} token lines -> {args.output}")
        return
    if args.tiers:
        if not args.wordfreq:
            raise SystemExit("--tiers ranks the wordfreq words: pass --wordfreq N too.")
        texts, weights = tiered_lines(args.wordfreq, args.tiers)
        Path(args.output).write_text("".join(f"{t}\t{w:.0e}\n" for t, w in zip(texts, weights, strict=True)))
        print(f"{len(texts)} lines in {args.tiers} tiers -> {args.output}")
        return

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
