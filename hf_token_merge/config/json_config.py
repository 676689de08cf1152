"""What every config of this library shares: a JSON file, written atomically, and strict loading."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from typing import Any, ClassVar

from hf_token_merge.errors import TokenMergeError


class JsonConfigMixin:
    """`to_dict`/`from_dict` and `save_pretrained`/`from_pretrained` for a config dataclass.

    A subclass sets `config_file_name` and overrides `to_dict` where a field needs converting (tuples to lists).
    """

    config_file_name: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build a config from `to_dict()` output.

        Args:
            data: Field names and values.

        Returns:
            The validated config.

        Raises:
            TokenMergeError: On an unknown field name.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TokenMergeError(f"Unknown {cls.__name__} fields {unknown}; known fields are {sorted(known)}.")
        return cls(**data)

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        """Write the config's JSON file into `save_directory`, atomically.

        The folder goes through `atomic_directory` with `keep_existing=True`: its other files stay, and a crash
        leaves either the old folder or the new one.

        Args:
            save_directory: Folder to write into; created if missing.

        Returns:
            The path of the written file.
        """
        # imported here: serialization imports the configs, so a module-level import would be circular
        from hf_token_merge.atomic import atomic_directory

        with atomic_directory(save_directory, keep_existing=True) as staging:
            text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
            (staging / self.config_file_name).write_text(text, encoding="utf-8")
        return os.path.join(save_directory, self.config_file_name)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike):
        """Load a config saved by `save_pretrained`.

        Args:
            path: The folder holding the config's JSON file, or the file itself.

        Returns:
            The validated config.
        """
        if os.path.isdir(path):
            path = os.path.join(path, cls.config_file_name)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No {cls.config_file_name} at {path}; save one with {cls.__name__}.save_pretrained."
            )
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))
