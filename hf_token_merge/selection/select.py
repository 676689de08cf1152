"""Resolve a `TokenMergeConfig` selection into a sorted tensor of token ids."""

from __future__ import annotations

import re
from typing import Any

import torch

from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.config.presets import PRESETS
from hf_token_merge.errors import TokenMergeError

_CONFIG_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "unk_token_id")


def _ids_of(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def protected_token_ids(tokenizer: Any = None, *configs: Any) -> set[int]:
    """Collect the ids that must not merge unless `allow_special_tokens=True`.

    Args:
        tokenizer: A transformers tokenizer, or None.
        *configs: Model configs or generation configs whose bos/eos/pad/decoder-start ids are protected.

    Returns:
        The protected ids: the tokenizer's special ids, its added tokens flagged special, and every id the
        configs name.
    """
    protected: set[int] = set()
    if tokenizer is not None:
        protected.update(int(i) for i in tokenizer.all_special_ids if i is not None)
        # transformers 5 lists only bos/eos/pad/unk there; markers such as <|SPEECH_GENERATION_START|> are
        # added tokens flagged special, and merging them would break the prompt format just the same.
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        protected.update(int(i) for i, token in added.items() if getattr(token, "special", False))
    for config in configs:
        if config is None:
            continue
        for key in _CONFIG_ID_KEYS:
            protected.update(_ids_of(getattr(config, key, None)))
    return protected


def vocabulary_strings(tokenizer: Any) -> list[tuple[str, int]]:
    """The tokenizer's vocabulary as `(token string, id)` pairs, whatever type its keys have.

    Remote-code tiktoken tokenizers (GLM-4-Voice's `ChatGLM4Tokenizer`, Qwen's) return `bytes` keys from
    `get_vocab()` for their base vocabulary and `str` keys for added tokens. Byte keys are decoded as UTF-8 with
    U+FFFD for invalid bytes (a base token may be a fragment of a multi-byte character), so patterns over token
    strings work on both kinds and never raise.

    Args:
        tokenizer: A tokenizer with `get_vocab()`.

    Returns:
        The pairs, in the order of `get_vocab()`.
    """
    pairs = []
    for token, i in tokenizer.get_vocab().items():
        if isinstance(token, (bytes, bytearray)):
            token = bytes(token).decode("utf-8", errors="replace")
        pairs.append((str(token), int(i)))
    return pairs


def match_vocabulary(pattern: str, tokenizer: Any, source: str) -> list[int]:
    """Ids of the tokenizer's tokens whose string matches `pattern` in full.

    Args:
        pattern: Regular expression.
        tokenizer: The tokenizer whose vocabulary is searched.
        source: The option's name, for error messages.

    Returns:
        The matching ids (unsorted).
    """
    if tokenizer is None:
        raise TokenMergeError(f"{source} selects by token string and needs a tokenizer: pass tokenizer=... .")
    regex = re.compile(pattern)
    matched = [i for token, i in vocabulary_strings(tokenizer) if regex.fullmatch(token)]
    if not matched:
        raise TokenMergeError(
            f"{source} {pattern!r} matches no token of the tokenizer ({len(tokenizer)} tokens); "
            "check the pattern against tokenizer.get_vocab() (it must match whole token strings)."
        )
    return matched


def _union(config: Any, vocab_size: int, tokenizer: Any) -> set[int]:
    """The ids the selectors name, before exclusion (range checks first: they need no tokenizer)."""
    selected: set[int] = set()
    if config.token_ids is not None:
        out_of_range = sorted(i for i in config.token_ids if i >= vocab_size)
        if out_of_range:
            raise TokenMergeError(
                f"token_ids {out_of_range[:5]} are out of range for a vocabulary of {vocab_size} rows "
                f"(valid ids are 0..{vocab_size - 1})."
            )
        selected.update(config.token_ids)
    if config.token_id_range is not None:
        start, end = config.token_id_range
        if end > vocab_size:
            raise TokenMergeError(
                f"token_id_range=({start}, {end}) ends past the vocabulary of {vocab_size} rows; "
                f"use an end <= {vocab_size}."
            )
        selected.update(range(start, end))
    if config.token_pattern is not None:
        selected.update(match_vocabulary(config.token_pattern, tokenizer, "token_pattern"))
    if config.preset is not None:
        selected.update(match_vocabulary(PRESETS[config.preset].pattern, tokenizer, f"preset {config.preset!r}"))
    return selected


def _exclude(selected: set[int], config: Any, tokenizer: Any) -> None:
    """Take `exclude_token_ids` and `exclude_pattern` out of `selected`, in place."""
    if config.exclude_token_ids is not None:
        selected.difference_update(config.exclude_token_ids)
    if config.exclude_pattern is not None:
        if tokenizer is None:
            raise TokenMergeError("exclude_pattern selects by token string and needs a tokenizer: pass tokenizer=... .")
        regex = re.compile(config.exclude_pattern)
        selected.difference_update(i for token, i in vocabulary_strings(tokenizer) if regex.fullmatch(token))


def resolve_token_ids(
    config: Any,
    vocab_size: int,
    tokenizer: Any = None,
    protected_ids: set[int] | None = None,
) -> set[int]:
    """Resolve the selection fields shared by `TokenMergeConfig` and `SequenceMergeConfig`.

    The selectors (`token_ids`, `token_id_range`, `token_pattern`, `preset`) are combined by union; then
    `exclude_token_ids` and `exclude_pattern` are taken out, and protected ids are refused unless
    `config.allow_special_tokens`.

    Args:
        config: A config with the fields of `hf_token_merge.config.selection_fields.SELECTION_FIELDS`.
        vocab_size: Number of rows of the input embedding.
        tokenizer: Needed when the config selects or excludes by regex or preset.
        protected_ids: Ids that may only be selected with `config.allow_special_tokens`.

    Returns:
        The selected ids (non-empty).

    Raises:
        TokenMergeError: On out-of-range ids, a pattern that matches nothing, an empty selection, or protected ids
            without permission.
    """
    selected = _union(config, vocab_size, tokenizer)
    _exclude(selected, config, tokenizer)
    beyond = sorted(i for i in selected if i >= vocab_size)
    if beyond:
        raise TokenMergeError(
            f"The tokenizer selects ids {beyond[:5]} beyond the embedding's {vocab_size} rows; "
            "the tokenizer does not belong to this model."
        )
    if not selected:
        raise TokenMergeError(
            "The selection is empty: no token id is left to merge; widen token_ids/token_id_range/token_pattern/"
            "preset or narrow exclude_token_ids/exclude_pattern."
        )
    if not config.allow_special_tokens and protected_ids:
        clash = sorted(selected & protected_ids)
        if clash:
            raise TokenMergeError(
                f"The selection includes special tokens {clash[:5]} ({len(clash)} in all); narrow the selection "
                "or set allow_special_tokens=True to merge them anyway."
            )
    return selected


def select_token_ids(
    config: TokenMergeConfig,
    vocab_size: int,
    tokenizer: Any = None,
    protected_ids: set[int] | None = None,
) -> torch.Tensor:
    """Resolve the rows a config allows to merge (see `resolve_token_ids`).

    Args:
        config: The merge configuration.
        vocab_size: Number of rows of the input embedding.
        tokenizer: Needed when the config selects by regex or preset.
        protected_ids: Ids that may only merge with `config.allow_special_tokens`.

    Returns:
        A sorted int64 tensor of unique token ids.

    Raises:
        TokenMergeError: As `resolve_token_ids`, and when `lm_head='drop'` would drop every id.
    """
    selected = resolve_token_ids(config, vocab_size, tokenizer, protected_ids)
    if config.lm_head == "drop" and len(selected) == vocab_size:
        raise TokenMergeError(
            f"The selection covers all {vocab_size} ids, so lm_head='drop' would leave the model no token to "
            "generate; narrow the selection or use lm_head='merge'."
        )
    return torch.tensor(sorted(selected), dtype=torch.long)
