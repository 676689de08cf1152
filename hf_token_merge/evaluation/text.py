"""Word error rate of normalised transcripts, scored with jiwer.

Scoring follows Whisper's own evaluation: both sides go through `EnglishTextNormalizer` (lower case,
no punctuation, number words and digits alike, so the heading "Two." matches a transcript "2."),
then jiwer aligns the words. The normaliser's British-to-American spelling table is used where the ASR
model's tokenizer provides it (`WhisperTokenizer.english_spelling_normalizer`, loaded from the checkpoint's
`normalizer.json`, as the Open ASR Leaderboard does; the offline Whisper tiny.en build carries it too), and
left empty otherwise. Note that the normaliser expands Early-Modern endings like other contractions
("feed'st" -> "feed saint", "tatter'd" -> "tatter would"); both sides get the same treatment, but
such a word costs two errors when misrecognised.

Corpus WER is computed from summed error counts (never as a mean of per-utterance rates), so it does
not depend on how the corpus is split between processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import jiwer
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

from hf_token_merge.errors import TokenMergeError

_NORMALIZERS: dict[int, tuple[Mapping[str, str] | None, EnglishTextNormalizer]] = {}


def spelling_map_of(tokenizer: Any) -> Mapping[str, str] | None:
    """The English spelling map a tokenizer (or processor) provides: Whisper's `english_spelling_normalizer`.

    Args:
        tokenizer: A tokenizer, a processor with a `.tokenizer`, or None.

    Returns:
        The map, or None when the tokenizer has none (non-Whisper tokenizers, checkpoints without normalizer.json).
    """
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    return getattr(tokenizer, "english_spelling_normalizer", None) or None


def _normalizer(spelling: Mapping[str, str] | None) -> EnglishTextNormalizer:
    key = id(spelling)
    if key not in _NORMALIZERS or _NORMALIZERS[key][0] is not spelling:  # keep the map alive: ids are reused
        _NORMALIZERS[key] = (spelling, EnglishTextNormalizer(english_spelling_mapping=dict(spelling or {})))
    return _NORMALIZERS[key][1]


def normalize_transcript(text: str, spelling: Mapping[str, str] | None = None) -> str:
    """Normalise a transcript for WER, as Whisper's evaluation does.

    Args:
        text: Raw reference or hypothesis.
        spelling: British-to-American spelling map (`spelling_map_of(asr_tokenizer)`); None: no spelling map.

    Returns:
        Lower-case words separated by single spaces, punctuation removed, numbers and spellings normalised.
    """
    return _normalizer(spelling)(text)


@dataclass(frozen=True)
class ErrorCounts:
    """Word alignment counts of one utterance or a whole corpus (they add up).

    Attributes:
        hits: Correct words.
        substitutions: Substituted words.
        deletions: Target words missing from the hypothesis.
        insertions: Extra hypothesis words.
    """

    hits: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def target_words(self) -> int:
        """Words in the target (ground-truth) text: hits + substitutions + deletions."""
        return self.hits + self.substitutions + self.deletions

    @property
    def reference_words(self) -> int:
        """Deprecated name of `target_words` (kept so that code written before the rename still runs)."""
        return self.target_words

    @property
    def errors(self) -> int:
        """Substitutions + deletions + insertions."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Errors / target words (inf if the target is empty but the hypothesis is not, else 0)."""
        if self.target_words == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.target_words

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.hits + other.hits,
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
        )

    def to_dict(self) -> dict[str, float | int]:
        """Counts plus `target_words` and `wer`, JSON-serialisable."""
        return {"wer": self.wer, **asdict(self), "target_words": self.target_words}


def error_counts(
    target: str, hypothesis: str, normalize: bool = True, spelling: Mapping[str, str] | None = None
) -> ErrorCounts:
    """Align one hypothesis with its target.

    Args:
        target: Correct transcript.
        hypothesis: Recognised transcript.
        normalize: Apply `normalize_transcript` to both first.
        spelling: The normaliser's spelling map (see `spelling_map_of`).

    Returns:
        The utterance's `ErrorCounts`; an empty target counts every hypothesis word as an insertion.
    """
    if normalize:
        target, hypothesis = normalize_transcript(target, spelling), normalize_transcript(hypothesis, spelling)
    target_tokens, hypothesis_tokens = target.split(), hypothesis.split()
    if not target_tokens:  # jiwer refuses empty targets
        return ErrorCounts(insertions=len(hypothesis_tokens))
    if not hypothesis_tokens:
        return ErrorCounts(deletions=len(target_tokens))
    out = jiwer.process_words(" ".join(target_tokens), " ".join(hypothesis_tokens))
    return ErrorCounts(out.hits, out.substitutions, out.deletions, out.insertions)


def corpus_error_counts(targets: Sequence[str], hypotheses: Sequence[str], normalize: bool = True) -> ErrorCounts:
    """Sum of `error_counts` over a corpus.

    Args:
        targets: Correct transcripts.
        hypotheses: Recognised transcripts, same order.
        normalize: Apply `normalize_transcript` to both first.

    Returns:
        The summed counts; `.wer` is the corpus WER.
    """
    if len(targets) != len(hypotheses):
        raise TokenMergeError(f"Got {len(targets)} targets but {len(hypotheses)} hypotheses.")
    total = ErrorCounts()
    for target, hypothesis in zip(targets, hypotheses, strict=True):
        total = total + error_counts(target, hypothesis, normalize)
    return total


def word_error_rate(targets: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus word error rate of normalised transcripts.

    Args:
        targets: Correct transcripts.
        hypotheses: Recognised transcripts, same order.

    Returns:
        (substitutions + deletions + insertions) / target words, over the whole corpus.
    """
    return corpus_error_counts(targets, hypotheses).wer


def character_error_counts(target: str, hypothesis: str) -> ErrorCounts:
    """Align two (already normalised) texts character by character, spaces included, for CER.

    Args:
        target: Correct text.
        hypothesis: Recognised text.

    Returns:
        `ErrorCounts` over characters: `target_words` is then the target's character count and `wer` its CER.
    """
    if not target:
        return ErrorCounts(insertions=len(hypothesis))
    if not hypothesis:
        return ErrorCounts(deletions=len(target))
    out = jiwer.process_characters(target, hypothesis)
    return ErrorCounts(out.hits, out.substitutions, out.deletions, out.insertions)
