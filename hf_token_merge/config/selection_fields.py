"""The token-selection fields every config shares, validated once.

`TokenMergeConfig` (which rows merge) and `SequenceMergeConfig` (which positions are speech) select token ids the
same way, as every peft config shares `target_modules`/`exclude_modules`: the union of `token_ids`,
`token_id_range`, `token_pattern` and `preset`, minus `exclude_token_ids` and `exclude_pattern`, with special tokens
protected unless `allow_special_tokens=True`. `hf_token_merge.selection` resolves them against a vocabulary.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from hf_token_merge.config.presets import PRESETS
from hf_token_merge.errors import TokenMergeError

SELECTOR_FIELDS = ("token_ids", "token_id_range", "token_pattern", "preset")
SELECTION_FIELDS = (*SELECTOR_FIELDS, "exclude_token_ids", "exclude_pattern", "allow_special_tokens")


def has_selector(config: Any) -> bool:
    """Whether any of `token_ids`, `token_id_range`, `token_pattern` or `preset` is set on `config`."""
    return any(getattr(config, name) is not None for name in SELECTOR_FIELDS)


def validate_selection_fields(config: Any, *, required: bool) -> None:
    """Check the selection fields of a config (already type-checked by `check_field_types`).

    Args:
        config: A config with the fields of `SELECTION_FIELDS`.
        required: Whether at least one selector must be set (a sequence merge may fall back to the model's
            audio placeholder id).

    Raises:
        TokenMergeError: On no selector when one is required, an empty or negative `token_ids`, an empty or
            negative `token_id_range`, an invalid regex, or an unknown preset.
    """
    if required and not has_selector(config):
        raise TokenMergeError(
            "No rows are selected: set at least one of token_ids, token_id_range, token_pattern or preset."
        )
    for name in ("token_ids", "exclude_token_ids"):
        ids = getattr(config, name)
        if ids is None:
            continue
        if name == "token_ids" and len(ids) == 0:
            raise TokenMergeError("token_ids is empty: list the ids to merge, or leave it None.")
        negative = [i for i in ids if i < 0]
        if negative:
            raise TokenMergeError(f"{name} must be >= 0; got {negative[:5]}.")
    if config.token_id_range is not None:
        start, end = config.token_id_range
        if not 0 <= start < end:
            raise TokenMergeError(
                f"token_id_range=({start}, {end}) is empty or negative; it is half-open [start, end) "
                "with 0 <= start < end."
            )
    for name in ("token_pattern", "exclude_pattern"):
        pattern = getattr(config, name)
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as err:
                raise TokenMergeError(f"{name} {pattern!r} is not a valid regex: {err}.") from err
    if config.preset is not None and config.preset not in PRESETS:
        raise TokenMergeError(f"Unknown preset {config.preset!r}; choose one of {sorted(PRESETS)}.")


def adopt_deprecated_aliases(config: Any, aliases: dict[str, str]) -> None:
    """Move values of deprecated field names onto their new fields, with a `FutureWarning`.

    Args:
        config: The config being initialised.
        aliases: Old field name -> new field name. The old field is reset to None.

    Raises:
        TokenMergeError: If both the old and the new name are set.
    """
    for old, new in aliases.items():
        value = getattr(config, old)
        if value is None:
            continue
        if getattr(config, new) is not None:
            raise TokenMergeError(
                f"{type(config).__name__} got both {old}= and {new}=; {old} is the deprecated name of {new}. "
                f"Fix: pass only {new}=."
            )
        warnings.warn(
            f"{type(config).__name__}.{old} is deprecated; use {new} (the same selection fields as "
            "TokenMergeConfig). It still works and is saved under the new name.",
            FutureWarning,
            stacklevel=4,
        )
        setattr(config, new, value)
        setattr(config, old, None)
