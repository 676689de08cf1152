"""Step 1: extract the codec corpus (sentences, splits, voices) from the whole King James Bible.

Source: the Debian package `bible-kjv-text` (King James Version, 1611, public domain), read through the `bible`
command of the Debian package `bible-kjv` (`apt-get install bible-kjv`). Only needed to re-extract: the result is
committed as `corpus.jsonl` beside this script, so later steps need no Debian package.

Selection (deterministic): all 66 books, chapter by chapter; each chapter is cut into sentences at `.`, `?` and
`!`, parenthesised asides are dropped, and sentences of 4 to 16 words made only of plain ASCII letters and
punctuation are kept; a longer sentence is cut at `;` and `:` into clauses, kept under the same rule. A sentence
is dropped when its normalised text (lower case, letters and spaces only) equals that of a sentence already kept,
of any of the 2,000 evaluation sentences of `recipes/reference_model/sentences.txt`, or of any LibriVox sonnet
text, so no text appears twice and none is in an evaluation set. A seeded shuffle then
takes `--count` sentences; the first `--test` are the test split, the next `--dev` the dev split, the rest train.
Each sentence gets a voice drawn with the same seed from `VOICES` (weights below); synthesis reads it from here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import sys
from pathlib import Path

from tqdm import tqdm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import EXCLUDED_SENTENCES, VOICES, normalise  # noqa: E402

from hf_token_merge.reference.librivox import read_text_lines, read_utterance_table  # noqa: E402

# Chapters per book of the KJV, in canonical order, as named by the `bible` command.
BOOKS = {
    "genesis": 50, "exodus": 40, "leviticus": 27, "numbers": 36, "deuteronomy": 34, "joshua": 24, "judges": 21,
    "ruth": 4, "1samuel": 31, "2samuel": 24, "1kings": 22, "2kings": 25, "1chronicles": 29, "2chronicles": 36,
    "ezra": 10, "nehemiah": 13, "esther": 10, "job": 42, "psalms": 150, "proverbs": 31, "ecclesiastes": 12,
    "song": 8, "isaiah": 66, "jeremiah": 52, "lamentations": 5, "ezekiel": 48, "daniel": 12, "hosea": 14,
    "joel": 3, "amos": 9, "obadiah": 1, "jonah": 4, "micah": 7, "nahum": 3, "habakkuk": 3, "zephaniah": 3,
    "haggai": 2, "zechariah": 14, "malachi": 4, "matthew": 28, "mark": 16, "luke": 24, "john": 21, "acts": 28,
    "romans": 16, "1corinthians": 16, "2corinthians": 13, "galatians": 6, "ephesians": 6, "philippians": 4,
    "colossians": 4, "1thessalonians": 5, "2thessalonians": 3, "1timothy": 6, "2timothy": 4, "titus": 3,
    "philemon": 1, "hebrews": 13, "james": 5, "1peter": 5, "2peter": 3, "1john": 5, "2john": 1, "3john": 1,
    "jude": 1, "revelation": 22,
}  # fmt: skip


def _reference_extractor():
    """The reference-model recipe's extractor (same `bible` reader and sentence rule), loaded by path."""
    spec = importlib.util.spec_from_file_location(
        "reference_extract", HERE.parent / "reference_model" / "extract_corpus.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_REFERENCE = _reference_extractor()
read_chapter = _REFERENCE.read_chapter
ALLOWED = _REFERENCE.ALLOWED


def sentences_of(text: str, max_words: int) -> list[str]:
    """Cut a text into sentences; a sentence longer than `max_words` is cut further into its `;`/`:` clauses."""
    text = re.sub(r"\([^)]*\)", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    out: list[str] = []
    for piece in re.findall(r"[^.?!]+[.?!]", text):
        piece = piece.strip()
        if len(piece.split()) <= max_words:
            out.append(piece)
            continue
        clauses = [clause.strip(" ,") for clause in re.split(r"[;:]", piece[:-1])]
        out += [clause[0].upper() + clause[1:] + piece[-1] for clause in clauses if clause]
    return out


def excluded_texts() -> set[str]:
    """Normalised texts of every evaluation sentence: the reference-model sentences and the LibriVox sonnets."""
    texts = EXCLUDED_SENTENCES.read_text(encoding="utf-8").splitlines()
    for utterance in read_utterance_table():
        lines = read_text_lines(utterance.reading)
        texts += lines + [" ".join(lines[utterance.first_line : utterance.last_line + 1])]
    return {normalise(text) for text in texts if text.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "corpus.jsonl")
    parser.add_argument("--count", type=int, default=10_200)
    parser.add_argument("--test", type=int, default=600)
    parser.add_argument("--dev", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-words", type=int, default=4)
    parser.add_argument("--max-words", type=int, default=16)
    args = parser.parse_args()

    excluded = excluded_texts()
    seen: dict[str, str] = {}
    chapters = [(book, chapter) for book, count in BOOKS.items() for chapter in range(1, count + 1)]
    for book, chapter in tqdm(chapters, desc="KJV chapters"):
        # Sentences run across verses: cut the whole chapter.
        for sentence in sentences_of(" ".join(read_chapter(book, chapter)), args.max_words):
            words = sentence.split()
            key = normalise(sentence)
            if args.min_words <= len(words) <= args.max_words and ALLOWED.match(sentence) and key not in excluded:
                seen.setdefault(key, sentence)
    candidates = list(seen.values())
    if len(candidates) < args.count:
        raise SystemExit(f"Only {len(candidates)} candidate sentences; lower --count.")
    rng = random.Random(args.seed)
    rng.shuffle(candidates)
    names = [voice["name"] for voice in VOICES]
    weights = [voice["weight"] for voice in VOICES]
    with open(args.out, "w", encoding="utf-8") as out:
        for index, text in enumerate(candidates[: args.count]):
            split = "test" if index < args.test else "dev" if index < args.test + args.dev else "train"
            voice = rng.choices(names, weights)[0]
            out.write(json.dumps({"id": f"{split}-{index:05d}", "split": split, "text": text, "voice": voice}) + "\n")
    print(f"{len(chapters)} chapters, {len(candidates)} candidate sentences, wrote {args.count} to {args.out}")


if __name__ == "__main__":
    main()
