"""Step 1: extract the sentence list of the synthetic corpus from the King James Bible (public domain).

Source: the Debian package `bible-kjv-text` (text of the King James Version, 1611; the copyright has
expired, see /usr/share/doc/bible-kjv/copyright), read through the `bible` command of the Debian package
`bible-kjv` (`apt-get install bible-kjv`). Only needed to re-extract: the result is committed as
`sentences.txt` beside this script, so the rest of the recipe does not need the Debian packages.

Selection (deterministic): Genesis, the four Gospels and Acts, chapter by chapter; each chapter is cut into sentences at
`.`, `?` and `!`, parenthesised asides are dropped, and sentences of 4 to 16 words made only of plain ASCII
letters and punctuation are kept, deduplicated in order of first appearance. A seeded shuffle then picks
`--count` of them (2,000 by default), written one a line.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
from pathlib import Path

BOOKS = {"genesis": 50, "matthew": 28, "mark": 16, "luke": 24, "john": 21, "acts": 28}
VERSE = re.compile(r"^\s*(\d+)\s+(.*)$")
ALLOWED = re.compile(r"^[A-Za-z][A-Za-z ,;:'.?!-]*$")


def read_chapter(book: str, chapter: int) -> list[str]:
    """Return the verses of one chapter (`-l1000`: one line per verse)."""
    out = subprocess.run(
        ["bible", "-l1000", f"{book}{chapter}:1-200"], check=True, capture_output=True, text=True
    ).stdout
    verses: list[str] = []
    for line in out.splitlines():
        match = VERSE.match(line)
        if match:
            verses.append(match.group(2).strip())
    return verses


def sentences_of(text: str) -> list[str]:
    """Cut a text into sentences; drop parenthesised asides."""
    text = re.sub(r"\([^)]*\)", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    pieces = re.findall(r"[^.?!]+[.?!]", text)
    return [piece.strip() for piece in pieces]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("sentences.txt"))
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-words", type=int, default=4)
    parser.add_argument("--max-words", type=int, default=16)
    args = parser.parse_args()

    seen: dict[str, None] = {}
    for book, chapters in BOOKS.items():
        for chapter in range(1, chapters + 1):
            # Sentences run across verses: cut the whole chapter.
            for sentence in sentences_of(" ".join(read_chapter(book, chapter))):
                words = sentence.split()
                if args.min_words <= len(words) <= args.max_words and ALLOWED.match(sentence):
                    seen.setdefault(sentence, None)
    candidates = list(seen)
    random.Random(args.seed).shuffle(candidates)
    chosen = candidates[: args.count]
    args.out.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    print(f"{len(candidates)} candidate sentences, wrote {len(chosen)} to {args.out}")


if __name__ == "__main__":
    main()
