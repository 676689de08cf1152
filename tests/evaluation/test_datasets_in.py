"""Any `datasets` dataset as evaluation data: save_to_disk folders, the Hub layout, Hub ids, and their errors."""

from __future__ import annotations

import datasets
import pytest

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation import decode_audio_value, load_eval_dataset


@pytest.fixture
def sonnets(librivox):
    """Four LibriVox utterances with the transcript in a `sentence` column, as many Hub ASR sets name it."""
    return librivox.select(range(4)).rename_column("text", "sentence")


def test_a_save_to_disk_folder_with_splits(sonnets, tmp_path):
    folder = tmp_path / "saved"
    datasets.DatasetDict({"test": sonnets, "dev": sonnets.select(range(1))}).save_to_disk(str(folder))
    data = load_eval_dataset(folder, split="test", text_column="sentence")
    assert len(data) == 4 and data["text"] == sonnets["sentence"] and "sentence" not in data.column_names
    assert data["id"] == sonnets["id"] and data.features["audio"].decode is False
    assert len(decode_audio_value(data[0]["audio"])) == len(decode_audio_value(sonnets[0]["audio"]))

    with pytest.raises(TokenMergeError, match=r"holds the splits \['test', 'dev'\].*Fix: pass --split"):
        load_eval_dataset(folder, text_column="sentence")
    with pytest.raises(TokenMergeError, match=r"has no split 'validation' \(splits: \['test', 'dev'\]\)"):
        load_eval_dataset(folder, split="validation", text_column="sentence")
    with pytest.raises(TokenMergeError, match=r"has no column 'text' .*Fix: name its text column with --text-column"):
        load_eval_dataset(folder, split="test")
    with pytest.raises(TokenMergeError, match=r"has no column 'speech' .*--audio-column"):
        load_eval_dataset(folder, split="test", text_column="sentence", audio_column="speech")


def test_a_saved_dataset_needs_no_split_and_refuses_another(sonnets, tmp_path):
    sonnets.save_to_disk(str(tmp_path / "one"))
    assert load_eval_dataset(tmp_path / "one", text_column="sentence")["text"] == sonnets["sentence"]
    # a speech-LLM's data has no audio: audio_column=None keeps only the transcript check
    units = datasets.Dataset.from_dict({"units": [[1, 2]], "text": ["a"]})
    units.save_to_disk(str(tmp_path / "units"))
    assert load_eval_dataset(tmp_path / "units", audio_column=None).column_names == ["units", "text"]
    with pytest.raises(TokenMergeError, match="has no column 'audio'"):
        load_eval_dataset(tmp_path / "units")
    test_split = datasets.Dataset.from_dict({"audio": ["a.wav"], "text": ["a"]}, split="test")
    test_split.save_to_disk(str(tmp_path / "test_split"))
    with pytest.raises(TokenMergeError, match="of split 'test', not 'train'. Fix: drop --split"):
        load_eval_dataset(tmp_path / "test_split", split="train")


def test_folders_that_are_no_dataset_and_missing_paths(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.wav").write_bytes(b"")
    with pytest.raises(TokenMergeError, match="is a folder, but no dataset.*Fix: pass a folder written by"):
        load_eval_dataset(tmp_path / "clips")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_eval_dataset(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_eval_dataset("./not/a/dataset")
    with pytest.raises(TokenMergeError, match="Unknown evaluation data 'no-such-set'"):
        load_eval_dataset("no-such-set")


def test_the_hub_layout_goes_through_load_dataset(sonnets, tmp_path):
    # what `datasets.load_dataset("org/name", split="test")` downloads: data/<split>-*.parquet files
    (tmp_path / "hub" / "data").mkdir(parents=True)
    sonnets.to_parquet(str(tmp_path / "hub" / "data" / "test-00000-of-00001.parquet"))
    cache = tmp_path / "cache"
    data = load_eval_dataset(tmp_path / "hub", split="test", text_column="sentence", cache_dir=cache)
    assert data["text"] == sonnets["sentence"] and isinstance(data.features["audio"], datasets.Audio)
    assert data.features["audio"].decode is False  # never decoded through torchcodec
    with pytest.raises(TokenMergeError, match=r'Unknown split "dev".*Fix: pass --split'):
        load_eval_dataset(tmp_path / "hub", split="dev", text_column="sentence", cache_dir=cache)
    with pytest.raises(TokenMergeError, match=r"BuilderConfig 'clean' not found.*Fix: pass --dataset-config"):
        load_eval_dataset(tmp_path / "hub", split="test", config_name="clean", cache_dir=cache)


def test_a_hub_id_is_the_ordinary_load_dataset_call(sonnets, tmp_path, monkeypatch):
    (tmp_path / "hub" / "data").mkdir(parents=True)
    sonnets.to_parquet(str(tmp_path / "hub" / "data" / "test-00000-of-00001.parquet"))
    real, calls = datasets.load_dataset, []

    def offline_hub(path, name=None, **kwargs):  # the Hub answered by the same files, offline
        calls.append((path, name, kwargs["split"]))
        return real(str(tmp_path / "hub"), **kwargs)  # the local files have one (default) configuration

    monkeypatch.setattr(datasets, "load_dataset", offline_hub)
    data = load_eval_dataset("someone/sonnets", split="test", config_name="clean", text_column="sentence")
    assert calls == [("someone/sonnets", "clean", "test")] and data["text"] == sonnets["sentence"]
    with pytest.raises(TokenMergeError, match="no split is named.*Fix: pass --split"):
        load_eval_dataset("someone/sonnets")
    assert len(calls) == 1  # refused before anything is downloaded


def test_an_unreachable_hub_dataset_names_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(TokenMergeError, match="Hub dataset someone/nothing could not be loaded.*Fix: check the id"):
        load_eval_dataset("someone/nothing", split="test")
