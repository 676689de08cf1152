"""Type checks of config fields, read from the dataclass annotations.

Why: JSON and YAML hand over whatever the user wrote. Without a check, `"allow_special_tokens": "false"` is a
non-empty string and counts as True, `"token_ids": "206"` is split into the digits 2, 0, 6 and `5.7` clusters are
truncated to 5. Every config dataclass runs `check_field_types` first in `__post_init__`, so a wrong type is refused
with the field, the value and its type before any other check reads it.
"""

from __future__ import annotations

import math
import numbers
import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from hf_token_merge.errors import TokenMergeError

_FIXES = {
    bool: "write true or false without quotes (JSON/YAML) or pass True/False",
    int: "pass a whole number such as 5, without quotes or decimals",
    float: "pass a finite number such as 0.5, without quotes",
    str: "pass a string",
}
_NAMES = {bool: "a bool", int: "an int", float: "a finite number (float)", str: "a string"}


def _refuse(owner: str, name: str, value: Any, expected: str, fix: str) -> TokenMergeError:
    return TokenMergeError(f"{owner}.{name} must be {expected}, got {value!r} ({type(value).__name__}). Fix: {fix}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _scalar(owner: str, name: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if _is_int(value):
            return int(value)
    elif kind is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        if isinstance(value, kind):
            return value
        raise _refuse(owner, name, value, f"a {kind.__name__}", f"pass a {kind.__name__}")
    raise _refuse(owner, name, value, _NAMES[kind], _FIXES[kind])


def _int_sequence(owner: str, name: str, value: Any, length: int | None) -> list[int]:
    expected = "(start, end): two whole numbers" if length == 2 else "a list of whole numbers (token ids)"
    fix = "pass [start, end] such as [128264, 193800]" if length == 2 else "pass a list such as [206, 207]"
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # tensors and numpy arrays
        value = value.tolist()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, typing.Iterable):
        raise _refuse(owner, name, value, expected, fix)
    items = list(value)
    bad = [item for item in items if not _is_int(item)]
    if bad or (length is not None and len(items) != length):
        shown = f"; not whole numbers: {bad[:5]!r}" if bad else ""
        raise TokenMergeError(
            f"{owner}.{name} must be {expected}, got {value!r} ({type(value).__name__}{shown}). Fix: {fix}."
        )
    return [int(item) for item in items]


def _check(owner: str, name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        inner = [argument for argument in arguments if argument is not type(None)]
        if len(inner) == 1:
            return _check(owner, name, value, inner[0])
        raise TypeError(f"{owner}.{name}: unsupported annotation {annotation!r}")  # a bug in this library
    if origin is typing.Literal:
        # the membership check itself (with the list of choices) is the config's own, which names the fix
        return value
    if origin is list:
        (item,) = arguments
        if item is int:
            return _int_sequence(owner, name, value, None)
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, list):
            raise _refuse(owner, name, value, f"a list of {item.__name__}", f"pass a list of {item.__name__}")
        return value
    if origin is tuple:
        if arguments == (int, int):
            return tuple(_int_sequence(owner, name, value, 2))
        raise TypeError(f"{owner}.{name}: unsupported annotation {annotation!r}")
    if annotation is typing.Any:
        return value
    return _scalar(owner, name, value, annotation)


def check_field_types(config: Any) -> None:
    """Check every dataclass field of `config` against its annotation and normalise it in place.

    Accepted: bool for bool; a whole number (not a bool) for int; a finite real number (not a bool, not a string)
    for float, stored as float; a list/tuple/array of whole numbers for `list[int]`, stored as a list of int; two
    whole numbers for `tuple[int, int]`, stored as a tuple; None wherever the annotation allows it.

    Args:
        config: A dataclass instance whose annotations use the forms above, `Literal[...]` or a class.

    Raises:
        TokenMergeError: Naming the field, the value, its type and the fix.
    """
    owner = type(config).__name__
    hints = typing.get_type_hints(type(config))
    for spec in fields(config):
        if spec.name not in hints or typing.get_origin(hints[spec.name]) is typing.ClassVar:
            continue
        setattr(config, spec.name, _check(owner, spec.name, getattr(config, spec.name), hints[spec.name]))
