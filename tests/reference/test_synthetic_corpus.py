"""The synthetic corpus loader on a small corpus written here (the real one needs Piper and is never required)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation import decode_audio_value, load_eval_dataset
from hf_token_merge.reference import load_synthetic_corpus, synthetic_corpus_dir

TEXTS = {
    "0000": ("train", "In the beginning God created the heaven and the earth."),
    "0001": ("test", "And the earth was without form, and void."),
    "0002": ("validation", "And God said, Let there be light."),
    "0003": ("test", "And there was light."),
}


def _write_corpus(root, texts=TEXTS, skip_audio=()):
    folder = synthetic_corpus_dir(root)
    (folder / "audio").mkdir(parents=True)
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as handle:
        for number, (name, (split, text)) in enumerate(texts.items()):
            handle.write(json.dumps({"id": name, "split": split, "text": text, "seconds": 0.25}) + "\n")
            if name not in skip_audio:
                soundfile.write(folder / "audio" / f"{name}.flac", np.full(4000, 0.01 * (number + 1)), 16000)
    return folder


def test_the_test_split_in_metadata_order(tmp_path):
    folder = _write_corpus(tmp_path)
    assert folder == tmp_path / "reference_speech_corpus-v1"
    data = load_synthetic_corpus("test", cache_dir=tmp_path)
    assert data["id"] == ["0001", "0003"]
    assert data["text"] == [TEXTS["0001"][1], TEXTS["0003"][1]]
    assert data[0]["audio"]["path"] == str(folder / "audio" / "0001.flac")
    samples = decode_audio_value(data[1]["audio"])
    assert samples.shape == (4000,) and samples[0] == pytest.approx(0.04, abs=1e-4)
    assert load_synthetic_corpus("train", cache_dir=tmp_path)["id"] == ["0000"]
    assert load_eval_dataset("synthetic", cache_dir=tmp_path)["id"] == ["0001", "0003"]


def test_missing_corpus_names_the_build_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="not built.*recipes/reference_model/synthesize.py"):
        load_synthetic_corpus(cache_dir=tmp_path)


def test_bad_split_and_missing_audio(tmp_path):
    _write_corpus(tmp_path, skip_audio=("0003",))
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        load_synthetic_corpus("dev", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="1 audio files of the 'test' split are missing.*0003.flac"):
        load_synthetic_corpus("test", cache_dir=tmp_path)
    assert load_synthetic_corpus("train", cache_dir=tmp_path)["id"] == ["0000"]


def test_a_corpus_without_the_split(tmp_path):
    _write_corpus(tmp_path, texts={"0000": ("train", "Amen.")})
    with pytest.raises(ValueError, match="no 'test' rows"):
        load_synthetic_corpus("test", cache_dir=tmp_path)


def test_a_row_without_text_is_refused(tmp_path):
    _write_corpus(tmp_path, texts={**TEXTS, "0003": ("test", None)})
    with pytest.raises(TokenMergeError, match=r"'test' rows with id \['0003'\] have no text string.*--force"):
        load_synthetic_corpus("test", cache_dir=tmp_path)
