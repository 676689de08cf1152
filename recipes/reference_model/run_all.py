"""Rebuild the reference speech-LLM end to end: corpus -> synthesis -> units -> training -> evaluation.

Run from the repository root: `python recipes/reference_model/run_all.py` (add `--extract` to re-extract the
sentence list from the Debian KJV packages first). Each step is a script beside this one; see README.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> None:
    print(f"== {script} {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *args], check=True, cwd=HERE)


def main() -> None:
    if "--extract" in sys.argv[1:]:
        run("extract_corpus.py")
    run("synthesize.py")
    run("make_units.py")
    run("train.py")
    run("evaluate.py")


if __name__ == "__main__":
    main()
