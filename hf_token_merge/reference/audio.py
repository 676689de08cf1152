"""Speech audio as the reference assets and the evaluator hold it: undecoded `Audio` columns, decoded with soundfile
and resampled to 16 kHz, without FFmpeg or torchcodec.

`datasets` 4+ decodes `Audio` columns through torchcodec, which needs FFmpeg and crashes on machines
without it. The assets and the evaluator therefore keep audio columns undecoded (`Audio(decode=False)`) and
decode the bytes or files with `soundfile` (libsndfile is bundled in its wheels: WAV, FLAC,
OGG/Vorbis, MP3 with libsndfile >= 1.1).

Resampling: audio at another rate is converted with `scipy.signal.resample_poly` (polyphase FIR with a
Kaiser window, the usual choice for speech). scipy is an optional dependency: without it, audio that
needs resampling raises an error that names the fix (`pip install scipy`, or resample the files to
16 kHz beforehand). torchaudio is deliberately not used (not installed with the CPU torch wheels here).
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

import datasets
import numpy as np
import soundfile

from hf_token_merge.errors import TokenMergeError

TARGET_SAMPLING_RATE = 16_000


def resample(samples: np.ndarray, orig_rate: int, target_rate: int = TARGET_SAMPLING_RATE) -> np.ndarray:
    """Resample mono audio with a polyphase filter (`scipy.signal.resample_poly`).

    Args:
        samples: Mono float samples.
        orig_rate: Their sampling rate.
        target_rate: The wanted rate.

    Returns:
        float32 samples at `target_rate` (the input itself when the rates match).
    """
    if orig_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    try:
        from scipy.signal import resample_poly
    except ImportError as error:
        raise TokenMergeError(
            f"Audio at {orig_rate} Hz must be resampled to {target_rate} Hz, which needs scipy. "
            f"Fix: pip install scipy, or convert the audio to {target_rate} Hz mono beforehand "
            f"(e.g. sox in.wav -r {target_rate} out.wav)."
        ) from error
    divisor = math.gcd(int(orig_rate), int(target_rate))
    out = resample_poly(samples.astype(np.float64), target_rate // divisor, orig_rate // divisor)
    return out.astype(np.float32)


def decode_audio_value(
    value: Any,
    *,
    sampling_rate: int | None = None,
    target_rate: int = TARGET_SAMPLING_RATE,
    allow_resample: bool = True,
    base_dir: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Turn one value of an audio column into mono float32 samples at `target_rate`.

    Args:
        value: A path (str), `{"bytes": ..., "path": ...}` as stored by `Audio(decode=False)`,
            `{"array": ..., "sampling_rate": ...}` as decoded by datasets, or a 1-D array.
        sampling_rate: Rate of a bare array (required for arrays).
        target_rate: Rate the model needs.
        allow_resample: Resample other rates; when False they raise an error instead.
        base_dir: Folder that relative paths are resolved against.

    Returns:
        Mono float32 samples at `target_rate`.
    """
    name = None
    if isinstance(value, np.ndarray | list):
        if sampling_rate is None:
            raise TokenMergeError("Audio given as an array needs its sampling rate. Fix: pass sampling_rate=... .")
        samples, rate = np.asarray(value, dtype=np.float32), int(sampling_rate)
    elif isinstance(value, dict) and value.get("array") is not None:
        samples, rate = np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
        name = value.get("path")
    else:
        if isinstance(value, dict):
            name = value.get("path")
            source: Any = io.BytesIO(value["bytes"]) if value.get("bytes") else name
        elif isinstance(value, str | os.PathLike):
            source = name = str(value)
        else:
            raise TokenMergeError(
                f"Cannot read audio from a {type(value).__name__}; expected a path, bytes or an array."
            )
        if source is None:
            raise TokenMergeError("Audio value has neither bytes nor a path.")
        if isinstance(source, str) and base_dir is not None and not os.path.isabs(source):
            source = os.path.join(base_dir, source)
        if isinstance(source, str) and not os.path.isfile(source):
            raise FileNotFoundError(
                f"Audio file {source} does not exist. Fix: check the path (relative paths are resolved "
                "against the manifest's folder)."
            )
        try:
            samples, rate = soundfile.read(source, dtype="float32", always_2d=False)
        except (soundfile.LibsndfileError, RuntimeError) as error:
            raise TokenMergeError(
                f"soundfile cannot decode {name or 'audio bytes'}: {error}. Fix: convert it to WAV or FLAC."
            ) from error
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if samples.ndim != 1:
        raise TokenMergeError(f"Expected mono or multi-channel audio, got an array of shape {samples.shape} ({name}).")
    if rate != target_rate and not allow_resample:
        raise TokenMergeError(
            f"{name or 'Audio'} is sampled at {rate} Hz but the model needs {target_rate} Hz. "
            f"Fix: allow resampling (resample=True) or convert the audio to {target_rate} Hz."
        )
    return resample(samples, rate, target_rate)


def audio_dataset(rows: dict[str, list]) -> datasets.Dataset:
    """A dataset of string columns whose `audio` column is `Audio(decode=False)` (built as the plain struct, then
    relabelled, so nothing is decoded).

    Args:
        rows: Column name -> values; `audio` holds paths, `duration` (optional) floats, every other column strings.

    Returns:
        The dataset, with `audio` values `{"bytes": None, "path": ...}`.
    """
    rows = dict(rows)
    rows["audio"] = [{"bytes": None, "path": path} for path in rows["audio"]]
    features = {
        key: datasets.Value("string")
        if key != "audio"
        else {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
        for key in rows
    }
    if "duration" in rows:
        features["duration"] = datasets.Value("float64")
    dataset = datasets.Dataset.from_dict(rows, features=datasets.Features(features))
    return dataset.cast_column("audio", datasets.Audio(decode=False))
