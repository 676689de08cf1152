"""Load a family recipe (YAML) into a validated `TokenMergeConfig` plus what it targets.

A recipe file has these top-level keys (see `RECIPE_KEYS`):

```yaml
family: llasa                      # required; the recipe's name
description: One line.             # required
model:                             # required: what the recipe targets
  architecture: LlamaForCausalLM   #   transformers class of the checkpoint (or of the replica to convert to)
  tied: true                       #   whether lm_head is tied to embed_tokens
  checkpoints: [HKUSTAudio/Llasa-1B]  # optional: Hub ids the recipe was written for (never downloaded here)
layout: free text                  # optional: the token layout the recipe assumes
protected: [list of strings]       # optional: control tokens that must stay, and how they are kept
merge: {TokenMergeConfig fields}   # required: the recommended settings
variants:                          # optional: named alternatives, each overriding `merge`
  with_global:
    description: One line.
    merge: {fields to override}
```

`merge` and every variant's `merge` may only hold `TokenMergeConfig` field names; anything else is refused with
the list of valid names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import Any

import yaml

from hf_token_merge.config import TokenMergeConfig, replace_stop
from hf_token_merge.errors import TokenMergeError

RECIPE_KEYS = ("family", "description", "model", "layout", "protected", "merge", "variants")
_REQUIRED_KEYS = ("family", "description", "model", "merge")
MODEL_KEYS = ("architecture", "tied", "checkpoints", "remote_code")
VARIANT_KEYS = ("description", "merge")
_PACKAGE = "hf_token_merge.families"


@dataclass
class Recipe:
    """A family's recommended merge, read from YAML.

    Attributes:
        family: The recipe's name, e.g. 'llasa'.
        description: One line on what it merges.
        architecture: The transformers model class the recipe targets, e.g. 'LlamaForCausalLM'.
        tied: Whether the target ties its LM head to its input embedding.
        config: The validated merge configuration (recipe, then variant, then caller overrides).
        checkpoints: Hub ids the recipe was written for (informational).
        remote_code: Note on a family that ships custom modelling code (informational), or None.
        layout: The token layout the recipe assumes (informational).
        protected: The control tokens that must stay and how they are kept (informational).
        variant: The variant applied, or None.
        variants: Names of the recipe's variants.
        source: Path of the YAML file.
    """

    family: str
    description: str
    architecture: str
    tied: bool
    config: TokenMergeConfig
    checkpoints: list[str] = field(default_factory=list)
    remote_code: str | None = None
    layout: str | None = None
    protected: list[str] = field(default_factory=list)
    variant: str | None = None
    variants: list[str] = field(default_factory=list)
    source: str | None = None


def _recipe_files() -> dict[str, Any]:
    folder = resources.files(_PACKAGE)
    return {entry.name[: -len(".yaml")]: entry for entry in folder.iterdir() if entry.name.endswith(".yaml")}


def list_recipes() -> list[str]:
    """Names of the recipes shipped with the package."""
    return sorted(_recipe_files())


def _check_keys(data: dict[str, Any], allowed: tuple[str, ...] | list[str], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise TokenMergeError(f"Unknown key(s) {unknown} in {where}; valid keys are {sorted(allowed)}.")


def _merge_fields(merge: Any, where: str) -> dict[str, Any]:
    if not isinstance(merge, dict):
        raise TokenMergeError(f"{where} must be a mapping of TokenMergeConfig fields, got {type(merge).__name__}.")
    _check_keys(merge, [f.name for f in fields(TokenMergeConfig)], f"{where} (TokenMergeConfig fields)")
    return dict(merge)


def _read(name_or_path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    text_path = os.fspath(name_or_path)
    if text_path.endswith((".yaml", ".yml")) or os.sep in text_path or "/" in text_path:
        if not os.path.isfile(text_path):
            raise FileNotFoundError(f"No recipe file at {text_path}.")
        with open(text_path, encoding="utf-8") as handle:
            return _parse(handle.read(), text_path), text_path
    files = _recipe_files()
    if text_path not in files:
        raise TokenMergeError(
            f"Unknown recipe {text_path!r}; choose one of {sorted(files)} or pass a path to a YAML file."
        )
    entry = files[text_path]
    return _parse(entry.read_text(encoding="utf-8"), str(entry)), str(entry)


def _parse(text: str, source: str) -> Any:
    """YAML of a recipe; a syntax error becomes one line naming the file and the position."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise TokenMergeError(f"Recipe {source} is not valid YAML{where}: {problem}. Fix: correct the file.") from error


def load_recipe(name_or_path: str | os.PathLike, variant: str | None = None, **overrides: Any) -> Recipe:
    """Load a recipe by name (a shipped YAML) or from a YAML path.

    Args:
        name_or_path: A name from `list_recipes()` (e.g. 'llasa') or a path to a recipe YAML file.
        variant: One of the recipe's `variants`, applied on top of its `merge` settings.
        **overrides: `TokenMergeConfig` fields that replace the recipe's values, e.g. `n_clusters=64` for a
            smaller model. Setting any stopping option replaces the recipe's stopping option.

    Returns:
        The `Recipe`, with `config` validated.

    Raises:
        TokenMergeError: On an unknown recipe, variant or key (the message names the valid ones), or an invalid config.
    """
    data, source = _read(name_or_path)
    if not isinstance(data, dict):
        raise TokenMergeError(f"Recipe {source} must be a YAML mapping with keys {list(RECIPE_KEYS)}.")
    _check_keys(data, RECIPE_KEYS, f"recipe {source}")
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise TokenMergeError(f"Recipe {source} lacks the required key(s) {missing}.")
    model = data["model"]
    if not isinstance(model, dict) or "architecture" not in model or "tied" not in model:
        raise TokenMergeError(f"Recipe {source}: `model` needs `architecture` and `tied`.")
    _check_keys(model, MODEL_KEYS, f"`model` of recipe {source}")
    if not isinstance(model["tied"], bool):
        raise TokenMergeError(f"Recipe {source}: model.tied must be true or false, got {model['tied']!r}.")

    settings = _merge_fields(data["merge"], f"`merge` of recipe {source}")
    variants = data.get("variants") or {}
    if variant is not None:
        if variant not in variants:
            raise TokenMergeError(
                f"Recipe {data['family']!r} has no variant {variant!r}; choose one of {sorted(variants)}."
            )
        spec = variants[variant]
        _check_keys(spec, VARIANT_KEYS, f"variant {variant!r} of recipe {source}")
        settings = replace_stop(settings, _merge_fields(spec.get("merge", {}), f"variant {variant!r} of {source}"))
    settings = replace_stop(settings, _merge_fields(overrides, "load_recipe overrides"))
    try:
        config = TokenMergeConfig(**settings)
    except ValueError as err:
        raise TokenMergeError(f"Recipe {data['family']!r} gives an invalid TokenMergeConfig: {err}") from err

    protected = data.get("protected") or []
    return Recipe(
        family=str(data["family"]),
        description=str(data["description"]).strip(),
        architecture=str(model["architecture"]),
        tied=model["tied"],
        config=config,
        checkpoints=list(model.get("checkpoints") or []),
        remote_code=model.get("remote_code"),
        layout=None if data.get("layout") is None else str(data["layout"]).strip(),
        protected=[str(item) for item in protected],
        variant=variant,
        variants=sorted(variants),
        source=source,
    )
