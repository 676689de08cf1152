"""Candidate rankings of Whisper tiny.en's text tokens for the frequency trim (which ids keep their rows).

Each ranking is a `(51864,)` float64 score; the `frequency` method keeps the highest-scoring selected ids (ties:
smaller id first). Only ids 256..50255 are ever selected (the single bytes and the specials stay).

* `calibration`: the issue-5 counts: 1,800 KJV train sentences + 200,000 wordfreq words in four spellings, summed
  token by token, each source scaled to the same mass (`make_calibration.py --wordfreq 200000`).
* `wordfreq_sum`: the wordfreq words alone (four spellings, frequency-weighted), summed token by token.
* `wordfreq_max`: a token is worth its most frequent word: score = max over the spellings whose canonical
  tokenization holds it of (word frequency x spelling weight). Keeping the top k of this ranking keeps whole
  words: every spelling above the cut keeps every token of its canonical tokenization.
* `bpe_rank`: GPT-2's merge order (a token's id is its merge rank; earlier merges were more frequent in GPT-2's
  training text): score = -id.
* `wordfreq_max_bpe`: `wordfreq_max` first, then the tokens no word needs by merge order.
* `fused` (with a calibration file): rank fusion of `calibration` and `wordfreq_max`: a token is worth its better
  place in the two orders, so keeping the top k keeps roughly the top k/2 of each (more where they agree). The
  calibration text brings what a word list lacks (punctuation pieces such as `."`, names, the domain's words), the
  word list brings the numbers and the everyday words the calibration text never uses.

Numbers: wordfreq has no multi-digit numbers, so every spelling also includes 0..100, the years 1900..2030 and
the round numbers 200..1000 (step 100), 2000..10000 (step 1000) at the frequency of wordfreq's 5,000th word.
"""

from __future__ import annotations

import numpy as np

FORMS = ((" {}", 1.0), (" {}", 0.3), ("{}", 0.1), ("{}", 0.03))  # lower, Capitalised, bare lower, bare Capitalised
VOCAB = 51864
SELECTED = (256, 50256)


def number_words() -> list[str]:
    """Integers Whisper writes as digits in everyday speech."""
    numbers = list(range(101)) + list(range(1900, 2031)) + list(range(200, 1001, 100)) + list(range(2000, 10001, 1000))
    return [str(n) for n in sorted(set(numbers))]


def word_list(top: int) -> list[tuple[str, float]]:
    """The `top` most frequent English words of wordfreq with frequencies, plus `number_words()`."""
    from wordfreq import get_frequency_dict

    words = sorted(get_frequency_dict("en", "best").items(), key=lambda item: -item[1])[:top]
    floor = words[min(5000, len(words) - 1)][1]
    known = {w for w, _ in words}
    return words + [(n, floor) for n in number_words() if n not in known]


def spellings(words: list[tuple[str, float]]) -> tuple[list[str], np.ndarray]:
    """Each word in the four spellings of FORMS with weight frequency x spelling weight."""
    texts, weights = [], []
    for index, (pattern, weight) in enumerate(FORMS):
        for word, frequency in words:
            spelled = word[:1].upper() + word[1:] if index in (1, 3) else word
            texts.append(pattern.format(spelled))
            weights.append(frequency * weight)
    return texts, np.asarray(weights)


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """Canonical token ids of each text (no specials)."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def score_sum(encoded: list[list[int]], weights: np.ndarray) -> np.ndarray:
    """Sum of the weights of the spellings holding each token (once per occurrence)."""
    scores = np.zeros(VOCAB)
    for ids, weight in zip(encoded, weights, strict=True):
        np.add.at(scores, ids, weight)
    return scores


def score_max(encoded: list[list[int]], weights: np.ndarray) -> np.ndarray:
    """Largest weight of a spelling holding each token."""
    scores = np.zeros(VOCAB)
    for ids, weight in zip(encoded, weights, strict=True):
        scores[ids] = np.maximum(scores[ids], weight)
    return scores


def bpe_prior() -> np.ndarray:
    """Score by GPT-2 merge order: earlier merges (smaller ids) first, in (0, 1)."""
    return 1.0 - (np.arange(VOCAB) + 1.0) / (VOCAB + 1.0)


def order_ranks(scores: np.ndarray) -> np.ndarray:
    """Place of every selected id in the order of `scores` (0 = kept first; ties: smaller id), others `VOCAB`."""
    low, high = SELECTED
    ids = np.arange(low, high)
    order = np.lexsort((ids, -scores[low:high]))
    ranks = np.full(VOCAB, VOCAB, dtype=np.int64)
    ranks[ids[order]] = np.arange(len(order))
    return ranks


def rank_fusion(*scores: np.ndarray) -> np.ndarray:
    """Score by the best place of each id in any of the orders (higher is kept first; non-negative, as counts)."""
    return (VOCAB - np.minimum.reduce([order_ranks(s) for s in scores])).astype(np.float64)


def rankings(tokenizer, top: int = 200_000, calibration_file: str | None = None) -> dict[str, np.ndarray]:
    """All candidate rankings (see the module docstring); `calibration` only when `calibration_file` is given."""
    texts, weights = spellings(word_list(top))
    encoded = encode(tokenizer, texts)
    out = {
        "wordfreq_sum": score_sum(encoded, weights),
        "wordfreq_max": score_max(encoded, weights),
        "bpe_rank": bpe_prior(),
    }
    word_max = out["wordfreq_max"]
    # the prior only orders what no word needs: below the smallest word weight
    out["wordfreq_max_bpe"] = np.where(word_max > 0, word_max, bpe_prior() * word_max[word_max > 0].min() * 1e-3)
    if calibration_file:
        from hf_token_merge.remap import calibration_counts

        out["calibration"] = calibration_counts(tokenizer, calibration_file, VOCAB).numpy()
        out["fused"] = rank_fusion(out["calibration"], out["wordfreq_max"])
    return out


def kept_ids(scores: np.ndarray, keep: int) -> np.ndarray:
    """The `keep` selected ids the frequency method keeps (highest score, ties: smaller id), sorted."""
    low, high = SELECTED
    ids = np.arange(low, high)
    order = np.lexsort((ids, -scores[low:high]))
    return np.sort(ids[order[:keep]])


def rows_after(keep: int) -> int:
    """Embedding rows of the trimmed model: unselected rows + kept rows + the one shared row."""
    return VOCAB - (SELECTED[1] - SELECTED[0]) + keep + 1
