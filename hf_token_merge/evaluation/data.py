"""Evaluation data as `datasets.Dataset`s: a JSONL manifest, an audiofolder, or a built-in set.

Audio columns are kept undecoded (`Audio(decode=False)`: paths or bytes); `decode_audio_value` reads
them with soundfile when a batch is built, so nothing goes through torchcodec/FFmpeg. `datasets`'
own `audiofolder` builder decodes through torchcodec and fails without it, so the same layout (a
folder of audio files with `metadata.jsonl` or `metadata.csv` naming `file_name` and a transcript
column) is read here directly.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import datasets

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.builtin import BUILTIN_DATASETS
from hf_token_merge.reference.audio import audio_dataset

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au"}


def load_manifest(path: str | os.PathLike[str], audio_column: str = "audio", text_column: str = "text"):
    """Read a JSONL manifest: one JSON object per line with an audio path and a transcript.

    Args:
        path: The `.jsonl` file. Relative audio paths are resolved against its folder.
        audio_column: Key of the audio path.
        text_column: Key of the transcript.

    Returns:
        A dataset with `audio` (undecoded, absolute paths), `text` and any other string keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Manifest {path} does not exist. Fix: pass the path of a .jsonl file.")
    records, lines = _read_jsonl_records(path)
    return _records_to_dataset(records, path.parent, audio_column, text_column, str(path), lines)


def _read_jsonl_records(path: Path) -> tuple[list[dict], list[int]]:
    """The JSON objects of a JSONL file and the line number of each (blank lines skipped)."""
    records, lines = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                message = f"{path}:{number} is not valid JSON ({error.msg}). Fix: one JSON object per line."
                raise TokenMergeError(message) from error
            if not isinstance(record, dict):
                raise TokenMergeError(
                    f"{path}:{number} is a JSON {type(record).__name__}, not an object. Fix: one JSON object per line, "
                    'e.g. {"audio": "a.wav", "text": "..."}.'
                )
            records.append(record)
            lines.append(number)
    return records, lines


def load_audiofolder(folder: str | os.PathLike[str], text_column: str = "text"):
    """Read an audiofolder: audio files plus `metadata.jsonl` or `metadata.csv` with `file_name` and a transcript.

    Args:
        folder: The folder.
        text_column: Column of the transcript in the metadata (`transcription` is accepted too).

    Returns:
        A dataset with `audio` (undecoded, absolute paths) and `text`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Audio folder {folder} does not exist. Fix: pass a folder of audio files with metadata."
        )
    if (folder / "metadata.jsonl").is_file():
        records, lines = _read_jsonl_records(folder / "metadata.jsonl")
        source = str(folder / "metadata.jsonl")
    elif (folder / "metadata.csv").is_file():
        with open(folder / "metadata.csv", encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            records, lines = [], []
            for record in reader:
                records.append(record)
                lines.append(reader.line_num)
        source = str(folder / "metadata.csv")
    else:
        raise TokenMergeError(
            f"{folder} has no metadata.jsonl or metadata.csv, so there are no transcripts. Fix: add one with a "
            f"'file_name' column (audio path relative to the folder) and a '{text_column}' column."
        )
    if records and text_column not in records[0] and "transcription" in records[0]:
        text_column = "transcription"
    return _records_to_dataset(records, folder, "file_name", text_column, source, lines)


def _records_to_dataset(
    records: list[dict], base: Path, audio_key: str, text_key: str, source: str, lines: list[int] | None = None
):
    if not records:
        raise TokenMergeError(f"{source} holds no examples. Fix: add at least one line with audio and text.")
    for key in (audio_key, text_key):
        if key not in records[0]:
            raise TokenMergeError(
                f"{source} has no '{key}' field (fields: {sorted(records[0])}). "
                f"Fix: add it, or name the right field with audio_column=/text_column= (--audio-column/--text-column)."
            )
    rows: dict[str, list] = {"audio": [], "text": []}
    for index, record in enumerate(records):
        line = lines[index] if lines is not None else index + 1
        for key, what in ((audio_key, "an audio path"), (text_key, "a transcript")):
            value = record.get(key)
            if not isinstance(value, str):
                # str() would turn null into the word "None" and 5 into "5", scored as if they were transcripts
                raise TokenMergeError(
                    f"{source}:{line}: '{key}' is {value!r} ({type(value).__name__}), but it must be {what} string. "
                    f'Fix: write it as a JSON string (e.g. "{key}": "..."), or remove the line.'
                )
        audio = record[audio_key]
        rows["audio"].append(audio if os.path.isabs(audio) else str(base / audio))
        rows["text"].append(str(record[text_key]))
    if all("id" in record for record in records):
        rows["id"] = [str(record["id"]) for record in records]
    return audio_dataset(rows)


def load_eval_dataset(
    source: str | os.PathLike[str],
    *,
    audio_column: str = "audio",
    text_column: str = "text",
    cache_dir: str | os.PathLike[str] | None = None,
) -> datasets.Dataset:
    """Load evaluation data from a name, a manifest or a folder.

    Args:
        source: The name of a built-in set in `BUILTIN_DATASETS` (`"librivox"`: the 12 LibriVox sonnet utterances;
            `"synthetic"`: the 100-sentence test split of the locally built synthetic KJV corpus, see
            `load_synthetic_corpus`), a `.jsonl` manifest, or an audiofolder.
        audio_column: Audio key of a manifest.
        text_column: Transcript key of a manifest or audiofolder.
        cache_dir: Cache root for the built-in sets.

    Returns:
        A dataset with an undecoded `audio` column and `text`.
    """
    if str(source) in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[str(source)].load(cache_dir)
    path = Path(source)
    if path.is_dir():
        return load_audiofolder(path, text_column=text_column)
    if path.suffix == ".jsonl" or path.is_file():
        return load_manifest(path, audio_column=audio_column, text_column=text_column)
    raise TokenMergeError(
        f"Unknown evaluation data {source!r}. Fix: use one of {list(BUILTIN_DATASETS)}, a .jsonl manifest, "
        "or a folder with audio files and metadata.jsonl."
    )


def check_columns(dataset: datasets.Dataset | Sequence[dict], columns: Sequence[str], what: str) -> int:
    """Check that data is non-empty and has the needed columns.

    Args:
        dataset: A `datasets.Dataset` or a list of dicts.
        columns: Columns the evaluation needs.
        what: What the data is for, for the message.

    Returns:
        The number of examples.
    """
    if isinstance(dataset, datasets.Dataset):
        names = list(dataset.column_names)
    elif isinstance(dataset, Sequence) and dataset and isinstance(dataset[0], dict):
        names = list(dataset[0])
    elif isinstance(dataset, Sequence) and not dataset:
        names = []
    else:
        raise TokenMergeError(f"{what} needs a datasets.Dataset or a list of dicts, got {type(dataset).__name__}.")
    if len(dataset) == 0:
        raise TokenMergeError(f"{what}: the data is empty. Fix: pass at least one example.")
    missing = [column for column in columns if column not in names]
    if missing:
        raise TokenMergeError(
            f"{what}: the data has no column {missing[0]!r} (columns: {names}). "
            f"Fix: rename the column or pass the matching *_column argument."
        )
    return len(dataset)


def undecoded_audio(dataset, column: str = "audio"):
    """Return the dataset with `column` relabelled `Audio(decode=False)` if it is a decoding `Audio` column.

    Reading a decoding `Audio` column goes through torchcodec and crashes without FFmpeg; undecoded, each
    value is `{"bytes", "path"}`, which `decode_audio_value` reads with soundfile. Other data is returned as is.
    """
    if isinstance(dataset, datasets.Dataset):
        feature = dataset.features.get(column)
        if isinstance(feature, datasets.Audio) and feature.decode:
            return dataset.cast_column(column, datasets.Audio(sampling_rate=feature.sampling_rate, decode=False))
    return dataset
