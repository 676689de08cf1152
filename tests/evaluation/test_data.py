"""Evaluation data: manifests, audiofolders, soundfile decoding, resampling, and their errors."""

from __future__ import annotations

import json
import sys

import datasets
import numpy as np
import pytest
import soundfile

from hf_token_merge.evaluation import decode_audio_value, load_eval_dataset, resample
from hf_token_merge.evaluation.data import undecoded_audio


def _tone(rate: int, seconds: float = 0.5, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def test_resample_keeps_pitch_and_duration():
    out = resample(_tone(8000), 8000)
    assert out.dtype == np.float32 and len(out) == 8000
    assert _peak_hz(out, 16000) == pytest.approx(440, abs=3)
    assert len(resample(_tone(44100), 44100)) == 8000


def test_decode_wrong_rate(tmp_path, monkeypatch):
    path = tmp_path / "tone8k.wav"
    soundfile.write(path, _tone(8000), 8000)
    with pytest.raises(ValueError, match="8000 Hz but the model needs 16000 Hz.*resample"):
        decode_audio_value(str(path), allow_resample=False)
    assert len(decode_audio_value(str(path))) == 8000
    monkeypatch.setitem(sys.modules, "scipy.signal", None)  # as if scipy were not installed
    with pytest.raises(ValueError, match="pip install scipy"):
        decode_audio_value(str(path))
    assert len(decode_audio_value({"array": _tone(16000), "sampling_rate": 16000})) == 8000  # no resampling needed


def test_decode_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        decode_audio_value(str(tmp_path / "missing.wav"))
    with pytest.raises(ValueError, match="sampling rate"):
        decode_audio_value(np.zeros(10))
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(ValueError, match="cannot decode"):
        decode_audio_value(str(tmp_path / "bad.wav"))


def test_manifest_and_audiofolder(tmp_path):
    (tmp_path / "clips").mkdir()
    for i, rate in enumerate([16000, 8000, 22050]):
        soundfile.write(tmp_path / "clips" / f"c{i}.flac", _tone(rate), rate)
    manifest = tmp_path / "eval.jsonl"
    manifest.write_text("\n".join(json.dumps({"audio": f"clips/c{i}.flac", "text": f"t{i}"}) for i in range(3)))
    data = load_eval_dataset(manifest)
    assert data["text"] == ["t0", "t1", "t2"]
    assert [len(decode_audio_value(a)) for a in data["audio"]] == [8000, 8000, 8000]

    (tmp_path / "clips" / "metadata.jsonl").write_text(
        "\n".join(json.dumps({"file_name": f"c{i}.flac", "transcription": f"t{i}"}) for i in range(3))
    )
    folder = load_eval_dataset(tmp_path / "clips")
    assert folder["text"] == ["t0", "t1", "t2"] and len(decode_audio_value(folder[2]["audio"])) == 8000


def test_data_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown evaluation data"):
        load_eval_dataset("no-such-set")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="holds no examples"):
        load_eval_dataset(empty)
    nameless = tmp_path / "nameless.jsonl"
    nameless.write_text(json.dumps({"path": "a.wav", "text": "x"}))
    with pytest.raises(ValueError, match="no 'audio' field.*audio_column"):
        load_eval_dataset(nameless)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="no metadata.jsonl"):
        load_eval_dataset(tmp_path / "folder")


def test_decoding_audio_columns_are_read_without_torchcodec(librivox):
    decoding = librivox.cast_column("audio", datasets.Audio(sampling_rate=16000))  # what users usually have
    safe = undecoded_audio(decoding)
    assert safe.features["audio"].decode is False
    assert np.array_equal(decode_audio_value(safe[0]["audio"]), decode_audio_value(librivox[0]["audio"]))
