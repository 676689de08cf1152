"""What every config of this library shares: a JSON file, written atomically, and strict loading."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, fields
from typing import Any, ClassVar

from hf_token_merge.errors import TokenMergeError


def looks_like_hub_id(name: str) -> bool:
    """Whether `name` reads as a Hub repo id (`org/name`) rather than a path.

    A path-like string (`./x`, `~/x`, `a/b/c`) is never sent to the Hub, so a mistyped folder fails as a missing
    path instead of as an unreachable repository.

    Args:
        name: A model or dataset name as the user typed it.

    Returns:
        True for exactly one `/` and a name `huggingface_hub.utils.validate_repo_id` accepts.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.count("/") != 1 or name.startswith((".", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


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

    def push_to_hub(
        self,
        repo_id: str,
        *,
        subfolder: str | None = None,
        private: bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        commit_message: str | None = None,
        token: str | None = None,
    ) -> str:
        """Upload the config's JSON file to a Hub model repository, as peft's configs do.

        The file is written by `save_pretrained` into a temporary folder, which is uploaded with huggingface_hub's
        `HfApi.create_repo` (the repository is created if missing) and `HfApi.upload_folder`.

        Args:
            repo_id: Target repository, e.g. "me/llasa-1b-merged".
            subfolder: Folder inside the repository to upload into; default: its root.
            private: Create the repository as private (only when it does not exist yet).
            revision: Branch to upload to; created if missing.
            create_pr: Open a pull request instead of committing to the branch.
            commit_message: Commit message; default "Upload <class name>".
            token: Hub token; default: the logged-in one.

        Returns:
            The URL of the commit (or of the pull request).
        """
        # Imported here so that `import hf_token_merge` does not pay for huggingface_hub's API client.
        from huggingface_hub import HfApi

        from hf_token_merge.atomic import MARKER_NAME

        api = HfApi(token=token)
        with tempfile.TemporaryDirectory(prefix="hf_token_merge_config_") as staging:
            folder = os.path.join(staging, "upload")
            self.save_pretrained(folder)
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision is not None and not create_pr:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                path_in_repo=subfolder,
                revision=revision,
                create_pr=create_pr,
                commit_message=commit_message or f"Upload {type(self).__name__}",
                ignore_patterns=[MARKER_NAME],  # the save marker is for local folders, not for the repository
            )
        return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or info)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        subfolder: str | None = None,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        **hub_kwargs: Any,
    ):
        """Load a config saved by `save_pretrained`, from a folder, a file or a Hub repository.

        Like peft's `PeftConfig.from_pretrained`: an existing local folder (or file) wins; anything else that is a
        valid repo id is fetched with `huggingface_hub.hf_hub_download`, which uses the Hub cache and honours
        `HF_HUB_OFFLINE`.

        Args:
            pretrained_model_name_or_path: A folder holding the config's JSON file, the file itself, or a Hub repo
                id such as "me/llasa-1b-merged".
            subfolder: Folder inside the local folder or the repository that holds the file.
            revision: Hub branch, tag or commit (Hub only).
            cache_dir: Hub cache folder (Hub only); default: huggingface_hub's.
            token: Hub token for private repositories (Hub only); default: the logged-in one.
            local_files_only: Only look in the Hub cache, never on the network (Hub only).
            **hub_kwargs: Further keyword arguments of `hf_hub_download` (e.g. `force_download`).

        Returns:
            The validated config.

        Raises:
            FileNotFoundError: When no folder, file or reachable repository provides the file; one line that says
                which and how to fix it.
        """
        path = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(path):
            folder = os.path.join(path, subfolder) if subfolder else path
            path = os.path.join(folder, cls.config_file_name)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"No {cls.config_file_name} at {path}; save one with {cls.__name__}.save_pretrained."
                )
        elif not os.path.isfile(path):
            path = cls._download(path, subfolder, revision, cache_dir, token, local_files_only, hub_kwargs)
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))

    @classmethod
    def _download(
        cls,
        repo_id: str,
        subfolder: str | None,
        revision: str | None,
        cache_dir: str | os.PathLike | None,
        token: str | bool | None,
        local_files_only: bool,
        hub_kwargs: dict[str, Any],
    ) -> str:
        """Fetch the config file of a Hub repository, turning every failure into one FileNotFoundError line."""
        # huggingface_hub is imported here, not at module level, so that `import hf_token_merge` stays light.
        import huggingface_hub
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HFValidationError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(repo_id)
        except HFValidationError:
            raise FileNotFoundError(
                f"No folder or file at {repo_id!r}, and it is not a Hub repo id either; pass the folder that "
                f"{cls.__name__}.save_pretrained wrote."
            ) from None
        where = f"Hub repo {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
        inside = f"{subfolder}/{cls.config_file_name}" if subfolder else cls.config_file_name
        not_local = f"{repo_id!r} is no local folder, and"
        try:
            return huggingface_hub.hf_hub_download(
                repo_id,
                cls.config_file_name,
                subfolder=subfolder,
                revision=revision,
                cache_dir=cache_dir,
                token=token,
                local_files_only=local_files_only,
                **hub_kwargs,
            )
        except LocalEntryNotFoundError:
            # Raised offline (HF_HUB_OFFLINE=1, local_files_only) and when the Hub cannot be reached.
            raise FileNotFoundError(
                f"{not_local} the {where} is unreachable (offline or no network) with no cached {inside}; "
                "pass a local folder, or go online once so the file is cached."
            ) from None
        except RepositoryNotFoundError:
            raise FileNotFoundError(
                f"{not_local} no {where} exists or you lack access; check the id, or pass token= (or "
                "`hf auth login`) for a private repository."
            ) from None
        except RevisionNotFoundError:
            raise FileNotFoundError(f"{not_local} the {where} does not exist; check revision=.") from None
        except EntryNotFoundError:
            raise FileNotFoundError(
                f"{not_local} the {where} has no {inside}; check subfolder=, or push one with "
                f"{cls.__name__}.push_to_hub."
            ) from None
