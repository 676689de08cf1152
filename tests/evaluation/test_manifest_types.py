"""A transcript of null or a number is refused, naming the line or example, never scored as "none"/"5"."""

from __future__ import annotations

import csv
import json

import pytest

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation import evaluate_perplexity, load_eval_dataset
from tests.evaluation.test_wer_llm import _llm_wer
from tests.models import build_llama


def _lines(path, records) -> None:
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n", encoding="utf-8")


@pytest.mark.parametrize("bad", [None, 5, 2.5, ["a"], True])
def test_manifest_transcript_must_be_a_string(tmp_path, bad):
    manifest = tmp_path / "eval.jsonl"
    # a blank line before the bad record: the message names the file's own line number
    manifest.write_text(
        json.dumps({"audio": "a.wav", "text": "fine"}) + "\n\n" + json.dumps({"audio": "b.wav", "text": bad}) + "\n",
        encoding="utf-8",
    )
    with pytest.raises(
        TokenMergeError,
        match=rf"eval.jsonl:3: 'text' is .* \({type(bad).__name__}\), but it must be a transcript string",
    ):
        load_eval_dataset(manifest)


def test_manifest_audio_must_be_a_string_and_lines_objects(tmp_path):
    manifest = tmp_path / "eval.jsonl"
    _lines(manifest, [{"audio": None, "text": "x"}])
    with pytest.raises(
        TokenMergeError, match=r"eval.jsonl:1: 'audio' is None \(NoneType\), but it must be an audio path"
    ):
        load_eval_dataset(manifest)
    _lines(manifest, [{"audio": "a.wav", "text": "x"}, ["a.wav", "x"]])
    with pytest.raises(TokenMergeError, match=r"eval.jsonl:2 is a JSON list, not an object"):
        load_eval_dataset(manifest)
    _lines(manifest, [{"audio": "a.wav", "text": "x"}, {"audio": "b.wav"}])
    with pytest.raises(TokenMergeError, match=r"eval.jsonl:2: 'text' is None"):
        load_eval_dataset(manifest)


def test_audiofolder_jsonl_and_csv_name_the_line(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    _lines(folder / "metadata.jsonl", [{"file_name": "a.wav", "text": "x"}, {"file_name": "b.wav", "text": 7}])
    with pytest.raises(TokenMergeError, match=r"metadata.jsonl:2: 'text' is 7 \(int\)"):
        load_eval_dataset(folder)
    (folder / "metadata.jsonl").unlink()
    with open(folder / "metadata.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([["file_name", "text"], ["a.wav", "x"], ["b.wav"]])  # a short row: no text
    with pytest.raises(TokenMergeError, match=r"metadata.csv:3: 'text' is None"):
        load_eval_dataset(folder)


@pytest.mark.parametrize("bad", [None, 5])
def test_evaluate_wer_refuses_a_non_string_reference(bad):
    bundle = build_llama()
    examples = [{"units": [1, 2], "text": "fine"}, {"units": [3], "text": bad}]
    with pytest.raises(TokenMergeError, match=rf"example 1 \(counting from 0; line 2 .*\) has text={bad!r}"):
        _llm_wer(bundle, examples)


@pytest.mark.parametrize("bad", [None, 5])
def test_evaluate_perplexity_refuses_a_non_text_example(bad):
    model = build_llama().model
    with pytest.raises(TokenMergeError, match=rf"example 1 .* is {bad!r} .*neither a text nor a list of token ids"):
        evaluate_perplexity(model, [{"text": "hello"}, {"text": bad}])
