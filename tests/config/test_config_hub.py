"""Configs on the Hub, as with peft: `from_pretrained` of a repo id (through `hf_hub_download` and its cache) and
`push_to_hub` (through `HfApi`), tested offline: a locally built Hub cache and a recording stand-in for `HfApi`."""

from __future__ import annotations

import fnmatch
import json
import os

import huggingface_hub
import pytest
from huggingface_hub.errors import (
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hf_token_merge import TokenMergeConfig
from hf_token_merge.config import CONFIG_NAME
from hf_token_merge.sequence import SequenceMergeConfig
from hf_token_merge.serialization.atomic import MARKER_NAME

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CONFIG = TokenMergeConfig(preset="llasa", target_ratio=0.125, exclude_token_ids=[3])


def _hub_cache(root, repo_id: str, files: dict[str, dict], *, branch: str = "main") -> str:
    """Lay out `files` (path in repo -> JSON) as huggingface_hub's cache holds a downloaded snapshot."""
    repo_folder = os.path.join(root, "models--" + repo_id.replace("/", "--"))
    os.makedirs(os.path.join(repo_folder, "refs"), exist_ok=True)
    with open(os.path.join(repo_folder, "refs", branch), "w", encoding="utf-8") as handle:
        handle.write(COMMIT)
    for name, data in files.items():
        path = os.path.join(repo_folder, "snapshots", COMMIT, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
    return str(root)


def test_from_pretrained_reads_a_repo_id_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    other = TokenMergeConfig(token_id_range=(10, 20), n_clusters=4)
    sequence = SequenceMergeConfig.dual("aggressive", deep_layer=2, token_id_range=(5, 9))
    cache = _hub_cache(
        tmp_path / "hub",
        "me/llasa-merged",
        {
            CONFIG_NAME: CONFIG.to_dict(),
            f"second/{CONFIG_NAME}": other.to_dict(),
            SequenceMergeConfig.config_file_name: sequence.to_dict(),
        },
        branch="v1",
    )
    assert TokenMergeConfig.from_pretrained("me/llasa-merged", revision="v1", cache_dir=cache) == CONFIG
    assert TokenMergeConfig.from_pretrained("me/llasa-merged", "second", revision=COMMIT, cache_dir=cache) == other
    assert SequenceMergeConfig.from_pretrained("me/llasa-merged", revision="v1", cache_dir=cache) == sequence
    # the cache has no "main" ref: offline, that is one line naming the repo and what to do
    with pytest.raises(FileNotFoundError) as caught:
        TokenMergeConfig.from_pretrained("me/llasa-merged", cache_dir=cache)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("'me/llasa-merged' is no local folder, and the Hub repo 'me/llasa-merged' is unreachable")
    assert f"no cached {CONFIG_NAME}; pass a local folder, or go online once" in message


def test_a_local_folder_wins_over_the_hub(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a local folder must not reach the Hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    CONFIG.save_pretrained(tmp_path / "me" / "cfg" / "inner")
    monkeypatch.chdir(tmp_path)
    # "me/cfg" is also a valid repo id; the folder that exists is read
    assert TokenMergeConfig.from_pretrained("me/cfg", subfolder="inner") == CONFIG
    with pytest.raises(FileNotFoundError, match=rf"No {CONFIG_NAME} at me/cfg/{CONFIG_NAME}; save one"):
        TokenMergeConfig.from_pretrained("me/cfg")


def test_from_pretrained_passes_the_hub_arguments(tmp_path, monkeypatch):
    calls = []
    path = CONFIG.save_pretrained(tmp_path / "download")

    def download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        return path

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    loaded = TokenMergeConfig.from_pretrained(
        "me/x", "sub", revision="v2", cache_dir="/c", token="hf_abc", force_download=True
    )
    assert loaded == CONFIG
    assert calls == [
        (
            "me/x",
            CONFIG_NAME,
            {
                "subfolder": "sub",
                "revision": "v2",
                "cache_dir": "/c",
                "token": "hf_abc",
                "local_files_only": False,
                "force_download": True,
            },
        )
    ]


def _raising(error_class):
    def download(*args, **kwargs):
        # huggingface_hub's HTTP errors need a response to construct; the message is not what is tested
        raise error_class.__new__(error_class)

    return download


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            LocalEntryNotFoundError,
            "'me/x' is no local folder, and the Hub repo 'me/x' at revision 'v2' is unreachable (offline or no "
            f"network) with no cached sub/{CONFIG_NAME}; pass a local folder, or go online once so the file is cached.",
        ),
        (
            RepositoryNotFoundError,
            "'me/x' is no local folder, and no Hub repo 'me/x' at revision 'v2' exists or you lack access; check the "
            "id, or pass token= (or `hf auth login`) for a private repository.",
        ),
        (
            RevisionNotFoundError,
            "'me/x' is no local folder, and the Hub repo 'me/x' at revision 'v2' does not exist; check revision=.",
        ),
        (
            RemoteEntryNotFoundError,
            f"'me/x' is no local folder, and the Hub repo 'me/x' at revision 'v2' has no sub/{CONFIG_NAME}; check "
            "subfolder=, or push one with TokenMergeConfig.push_to_hub.",
        ),
    ],
)
def test_hub_failures_are_one_line(monkeypatch, error, expected):
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _raising(error))
    with pytest.raises(FileNotFoundError) as caught:
        TokenMergeConfig.from_pretrained("me/x", "sub", revision="v2")
    assert str(caught.value) == expected
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_missing_local_path_that_is_no_repo_id(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _raising(AssertionError))
    missing = str(tmp_path / "runs" / "cfg")
    with pytest.raises(FileNotFoundError) as caught:
        TokenMergeConfig.from_pretrained(missing)
    assert str(caught.value) == (
        f"No folder or file at {missing!r}, and it is not a Hub repo id either; pass the folder that "
        "TokenMergeConfig.save_pretrained wrote."
    )


class _RecordingApi:
    """Stands in for `huggingface_hub.HfApi`: records the calls and the files of every uploaded folder."""

    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("init", token))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = {}
        ignored = kwargs.get("ignore_patterns") or []
        for name in sorted(os.listdir(folder_path)):
            if any(fnmatch.fnmatch(name, pattern) for pattern in ignored):
                continue
            with open(os.path.join(folder_path, name), encoding="utf-8") as handle:
                files[name] = handle.read()
        self.calls.append(("upload_folder", repo_id, files, kwargs))

        class Info:
            commit_url = f"https://huggingface.co/{repo_id}/commit/{COMMIT}"
            pr_url = None

        return Info()


@pytest.fixture
def api(monkeypatch):
    _RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", _RecordingApi)
    return _RecordingApi


def test_push_to_hub_uploads_the_saved_json(api):
    url = CONFIG.push_to_hub("me/llasa-merged", private=True, token="hf_abc")
    assert url == f"https://huggingface.co/me/llasa-merged/commit/{COMMIT}"
    assert [call[0] for call in api.calls] == ["init", "create_repo", "upload_folder"]
    assert api.calls[0] == ("init", "hf_abc")
    assert api.calls[1] == ("create_repo", "me/llasa-merged", {"private": True, "exist_ok": True, "repo_type": "model"})
    _, repo_id, files, kwargs = api.calls[2]
    assert list(files) == [CONFIG_NAME]  # only the config, no temporary file
    assert json.loads(files[CONFIG_NAME]) == json.loads(json.dumps(CONFIG.to_dict()))
    assert TokenMergeConfig.from_dict(json.loads(files[CONFIG_NAME])) == CONFIG
    assert kwargs == {
        "path_in_repo": None,
        "revision": None,
        "create_pr": False,
        "commit_message": "Upload TokenMergeConfig",
        "ignore_patterns": [MARKER_NAME],
    }


def test_push_to_hub_to_a_branch_subfolder_and_as_a_pull_request(api):
    sequence = SequenceMergeConfig.dual("aggressive", deep_layer=2, token_id_range=(5, 9))
    sequence.push_to_hub("me/x", subfolder="merge", revision="dev", commit_message="add config")
    assert api.calls[2] == ("create_branch", "me/x", {"branch": "dev", "exist_ok": True})
    _, _, files, kwargs = api.calls[3]
    assert SequenceMergeConfig.from_dict(json.loads(files[SequenceMergeConfig.config_file_name])) == sequence
    assert kwargs == {
        "path_in_repo": "merge",
        "revision": "dev",
        "create_pr": False,
        "commit_message": "add config",
        "ignore_patterns": [MARKER_NAME],
    }

    api.calls.clear()
    CONFIG.push_to_hub("me/x", revision="main", create_pr=True)
    # a pull request targets the branch as it is: no branch is created
    assert [call[0] for call in api.calls] == ["init", "create_repo", "upload_folder"]
    assert api.calls[2][3]["create_pr"] is True
