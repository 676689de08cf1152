"""Step 5: encode every split (and the LibriVox utterances) with the codec; write the committed code corpus.

Writes `hf_token_merge/reference/assets/codec_corpus/{codes.safetensors, metadata.jsonl, manifest.json}` (see
`hf_token_merge.reference.codec_corpus`), staged and swapped in. With `--partial`, sentences whose audio is not
synthesised yet are left out (the manifest says how many); rerun after synthesis finishes to add them.

    python recipes/speech_codec/encode_corpus.py [--codec PATH] [--partial]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import corpus_rows, load_split_audio  # noqa: E402

from hf_token_merge.reference.codec_corpus import CODEC_CORPUS_SPLITS, codec_corpus_dir  # noqa: E402
from hf_token_merge.reference.speech_codec import SpeechCodec, reference_speech_codec_dir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", type=Path, default=reference_speech_codec_dir())
    parser.add_argument("--out", type=Path, default=codec_corpus_dir())
    parser.add_argument("--partial", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = SpeechCodec.from_pretrained(args.codec)
    if codec.codebook_size > 65_536:
        raise SystemExit("uint16 storage needs at most 65,536 codes")
    tensors: dict[str, np.ndarray] = {}
    metadata: list[dict] = []
    manifest = {
        "codec_sha256": hashlib.sha256((args.codec / "model.safetensors").read_bytes()).hexdigest(),
        "codebook_size": codec.codebook_size,
        "frame_rate": codec.frame_rate,
        "splits": {},
    }
    start = time.time()
    for split in CODEC_CORPUS_SPLITS:
        rows = load_split_audio(split, require_all=not args.partial)
        codes = [codec.encode(row["audio"]).numpy() for row in tqdm(rows, desc=f"encode {split}", mininterval=30)]
        offsets = np.cumsum([0] + [len(c) for c in codes]).astype(np.int64)
        tensors[f"{split}.codes"] = np.concatenate(codes).astype(np.uint16)
        tensors[f"{split}.offsets"] = offsets
        for row in rows:
            seconds = round(len(row["audio"]) / 16_000, 3)
            metadata.append(
                {"id": row["id"], "split": split, "text": row["text"], "voice": row["voice"], "seconds": seconds}
            )
        total = len(corpus_rows(split)) if split != "librivox" else len(rows)
        manifest["splits"][split] = {"utterances": len(rows), "of": total, "codes": int(offsets[-1])}
    manifest["encode_seconds"] = round(time.time() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    staged = {
        "codes.safetensors": lambda p: save_file(tensors, str(p)),
        "metadata.jsonl": lambda p: p.write_text("".join(json.dumps(m) + "\n" for m in metadata), encoding="utf-8"),
        "manifest.json": lambda p: p.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8"),
    }
    for name, write in staged.items():
        write(args.out / f".{name}.tmp")
    for name in staged:
        os.replace(args.out / f".{name}.tmp", args.out / name)
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
