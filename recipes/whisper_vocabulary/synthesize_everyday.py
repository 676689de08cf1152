"""Synthesise the everyday-English report set: `everyday_sentences.txt` read by every offline voice.

The 153 sentences were written for this project (original text, same licence as the project): short everyday
and conversational English (errands, food, work, weather, devices), a different style from the King James text
the Whisper vocabulary study is tuned on. Each voice of `recipes/speech_codec/common.py` VOICES reads all of them
(`--voices` picks a subset), with the corpus recipe's settings (deterministic, peak 0.9, 16 kHz FLAC) into
`<cache>/everyday_audio-v1/<voice>/<index>.flac`. Dev-only: flite and Piper are GPL (see
`recipes/speech_codec/synthesize.py`); a rerun skips the files that exist.

    PYTHONPATH=. python recipes/whisper_vocabulary/synthesize_everyday.py --voices flite-slt flite-awb flite-rms \
        flite-kal16 piper-joe-1.00
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "speech_codec"))
SENTENCES = HERE / "everyday_sentences.txt"
AUDIO_VERSION = 1


def everyday_dir(voice: str) -> Path:
    """Folder of one voice's everyday audio in the user cache."""
    from hf_token_merge.reference.cache import cache_root

    return cache_root(None) / f"everyday_audio-v{AUDIO_VERSION}" / voice


def everyday_sentences() -> list[str]:
    """The 153 sentences, in file order."""
    return [line.strip() for line in SENTENCES.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voices", nargs="+", default=["flite-slt", "flite-awb", "flite-rms", "flite-kal16"])
    args = parser.parse_args()

    import soundfile
    from synthesize import synthesize

    sentences = everyday_sentences()
    for voice in args.voices:
        folder = everyday_dir(voice)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        for index, text in enumerate(sentences):
            path = folder / f"{index:03d}.flac"
            if path.is_file():
                continue
            tmp = path.with_suffix(".tmp.flac")
            soundfile.write(tmp, synthesize(text, voice), 16_000, subtype="PCM_16")
            tmp.rename(path)
        print(f"{voice}: {len(sentences)} sentences in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
