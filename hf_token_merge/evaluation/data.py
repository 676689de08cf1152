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


# Files `datasets.load_dataset(folder)` reads as a dataset (the Hub layout: `data/test-00000-of-00001.parquet`, ...).
DATA_FILE_SUFFIXES = {".parquet", ".arrow", ".csv", ".json", ".jsonl", ".txt"}


def load_eval_dataset(
    source: str | os.PathLike[str],
    *,
    audio_column: str | None = "audio",
    text_column: str = "text",
    split: str | None = None,
    config_name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> datasets.Dataset:
    """Load evaluation data from a built-in name, a `datasets` dataset (saved folder or Hub id), a manifest or a folder.

    `source` is read as, in this order: the name of a built-in set in `BUILTIN_DATASETS` (`"librivox"`: the 12
    LibriVox sonnet utterances; `"synthetic"`: the 100-sentence test split of the locally built synthetic KJV corpus,
    see `load_synthetic_corpus`); a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`
    (`datasets.load_from_disk`); an audiofolder (audio files with `metadata.jsonl`/`metadata.csv`); a folder of data
    files in the Hub layout (parquet, arrow, csv, json: `datasets.load_dataset(folder, split=split)`); a `.jsonl`
    manifest; or a Hub dataset id `org/name`, loaded with the ordinary `datasets.load_dataset(id, split=split)`.

    Args:
        source: See above.
        audio_column: The column (or manifest key) of the audio; None when the data holds no audio (speech-LLM
            unit prompts). A `datasets` dataset's audio column is renamed `audio`.
        text_column: The column of the target (ground-truth) transcript, renamed `text`.
        split: The split of a `DatasetDict` folder or of `load_dataset` (needed for a Hub id; a folder with one
            split needs none).
        config_name: The configuration of a Hub dataset that has several (`load_dataset(id, config_name, ...)`,
            e.g. `clean` of `openslr/librispeech_asr`).
        cache_dir: Cache root of the built-in sets and of `load_dataset`.

    Returns:
        A dataset with `text`, an (undecoded, for manifests and audiofolders) `audio` column unless
        `audio_column` is None, and the dataset's other columns.

    Raises:
        FileNotFoundError: For a path that does not exist (a path-like string is never read as a Hub id).
        TokenMergeError: For a missing column or split, a folder that holds no dataset, or a Hub dataset that cannot
            be loaded; each message names the fix.
    """
    if str(source) in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[str(source)].load(cache_dir)
    path = Path(source).expanduser()
    if path.is_dir():
        if _is_saved_dataset(path):
            loaded = _load_saved(path, split)
        elif (path / "metadata.jsonl").is_file() or (path / "metadata.csv").is_file():
            return load_audiofolder(path, text_column=text_column)
        elif _data_files(path):
            loaded = _load_with_datasets(str(path), split, config_name, cache_dir, hub=False)
        else:
            raise TokenMergeError(
                f"{path} is a folder, but no dataset: no save_to_disk files (dataset_info.json, state.json or "
                "dataset_dict.json), no metadata.jsonl/metadata.csv of an audiofolder, and no parquet/arrow/csv/json "
                "data files. Fix: pass a folder written by Dataset.save_to_disk, add a metadata.jsonl naming "
                f"'file_name' and '{text_column}' for each audio file, or pass a .jsonl manifest."
            )
        return _eval_columns(loaded, audio_column, text_column, str(path))
    if path.is_file() or path.suffix == ".jsonl":
        return load_manifest(path, audio_column=audio_column or "audio", text_column=text_column)
    from hf_token_merge.config.json_config import looks_like_hub_id

    if looks_like_hub_id(str(source)):
        if split is None:
            raise TokenMergeError(
                f"{source} is read as a Hub dataset id, but no split is named, and loading them all could download "
                "far more than an evaluation needs. Fix: pass --split (split=), e.g. test."
            )
        loaded = _load_with_datasets(str(source), split, config_name, cache_dir, hub=True)
        return _eval_columns(loaded, audio_column, text_column, str(source))
    if any(sep in str(source) for sep in ("/", os.sep)) or str(source).startswith((".", "~")):
        raise FileNotFoundError(
            f"Evaluation data {source}: no such file or folder. Fix: check the path, or pass a Hub dataset id "
            "(org/name) or a built-in name."
        )
    raise TokenMergeError(
        f"Unknown evaluation data {source!r}: no built-in set, file or folder of that name. Fix: use one of "
        f"{list(BUILTIN_DATASETS)}, a .jsonl manifest, an audiofolder, a save_to_disk folder or a Hub dataset id "
        "(org/name)."
    )


def _is_saved_dataset(folder: Path) -> bool:
    """Whether `folder` was written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    )


def _data_files(folder: Path) -> list[Path]:
    """Data files `load_dataset(folder)` would read: in the folder itself or one level down (`data/`)."""
    candidates = [*folder.glob("*"), *folder.glob("*/*")]
    return [p for p in candidates if p.is_file() and p.suffix in DATA_FILE_SUFFIXES and not p.name.startswith(".")]


def _pick_split(loaded, split: str | None, source: str) -> datasets.Dataset:
    """One split of a `DatasetDict` (or the `Dataset` itself), refusing a missing or ambiguous split."""
    if isinstance(loaded, datasets.Dataset):
        return loaded
    names = list(loaded)
    if split is None:
        if len(names) == 1:
            return loaded[names[0]]
        raise TokenMergeError(
            f"{source} holds the splits {names}; which one to evaluate? Fix: pass --split (split=), e.g. {names[0]}."
        )
    if split not in loaded:
        raise TokenMergeError(f"{source} has no split {split!r} (splits: {names}). Fix: pass --split one of {names}.")
    return loaded[split]


def _load_saved(folder: Path, split: str | None) -> datasets.Dataset:
    """A `save_to_disk` folder: the dataset, or the chosen split of a saved `DatasetDict`."""
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError, OSError) as error:
        raise TokenMergeError(
            f"{folder} looks like a save_to_disk folder but cannot be read ({error}). Fix: save it again with "
            "Dataset.save_to_disk(folder)."
        ) from error
    if isinstance(loaded, datasets.Dataset) and split is not None and loaded.split not in (None, split):
        raise TokenMergeError(
            f"{folder} holds one dataset, of split {str(loaded.split)!r}, not {split!r}. Fix: drop --split, or pass "
            "the folder of that split."
        )
    return _pick_split(loaded, split, str(folder))


def _load_with_datasets(
    source: str, split: str | None, config_name: str | None, cache_dir, hub: bool
) -> datasets.Dataset:
    """`datasets.load_dataset(source, config_name, split=split)`: a Hub id, or a local folder in the Hub layout."""
    cache = None if cache_dir is None else str(cache_dir)
    try:
        loaded = datasets.load_dataset(source, config_name, split=split, cache_dir=cache)
    except ValueError as error:
        if "split" in str(error).lower():
            raise TokenMergeError(f"{source}: {error} Fix: pass --split (split=) with one of those.") from error
        if "config" in str(error).lower():
            message = " ".join(str(error).split())
            raise TokenMergeError(f"{source}: {message} Fix: pass --dataset-config (config_name=).") from error
        raise
    except (OSError, ConnectionError) as error:  # DatasetNotFoundError is a FileNotFoundError
        if not hub:
            raise TokenMergeError(f"{source}: its data files could not be read ({error}). Fix: check them.") from error
        raise TokenMergeError(
            f"Hub dataset {source} could not be loaded ({' '.join(str(error).split())}). Fix: check the id and "
            "split, log in (`hf auth login`) for a gated dataset, or go online; offline, pass a folder written by "
            "Dataset.save_to_disk."
        ) from error
    return _pick_split(loaded, split, source)


def _eval_columns(
    dataset: datasets.Dataset, audio_column: str | None, text_column: str, source: str
) -> datasets.Dataset:
    """Check the audio and transcript columns and rename them `audio` and `text` (other columns are kept)."""
    if len(dataset) == 0:
        raise TokenMergeError(f"{source} holds no examples. Fix: pass a non-empty dataset or another split.")
    names = list(dataset.column_names)
    wanted = {"text": (text_column, "--text-column")}
    if audio_column is not None:
        wanted["audio"] = (audio_column, "--audio-column")
    for target, (column, flag) in wanted.items():
        if column not in names:
            raise TokenMergeError(
                f"{source} has no column {column!r} (columns: {names}). Fix: name its {target} column with "
                f"{flag} ({target}_column=)."
            )
    for target, (column, _) in wanted.items():
        if column != target:
            if target in dataset.column_names:  # another column already holds the name: the one the user named wins
                dataset = dataset.remove_columns(target)
            dataset = dataset.rename_column(column, target)
    # iterating rows (example ids, batches) must never decode through torchcodec/FFmpeg
    return undecoded_audio(dataset) if audio_column is not None else dataset


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
