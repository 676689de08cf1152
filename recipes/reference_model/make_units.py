"""Step 3: Whisper tiny.en encoder features -> k-means speech units for the whole synthetic corpus.

* Features: output of encoder layer `--layer` (of 4) at 50 Hz on the unpadded audio
  (`hf_token_merge.reference.speech_units.whisper_layer_features`).
* k-means (`hf_token_merge.clustering.kmeans`, Euclidean, seeded k-means++ init) with K = `--num-units`
  on the frames of the *train* split (at most `--max-frames`, a seeded subsample); each centroid is the mean
  of its frames.
* The tokenizer (centroids + layer + settings) goes to the package assets; the unit sequences of every
  utterance (runs collapsed) to `<cache>/reference_speech_llm_work-v1/units.jsonl`; the test split also to the
  package assets as the committed eval set (`eval_test.jsonl`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time

import soundfile
import torch
from common import corpus_dir, work_dir

from hf_token_merge.clustering.kmeans import centroids_of, kmeans
from hf_token_merge.reference.speech_llm import EVAL_SET_NAME, UNIT_TOKENIZER_DIR, reference_speech_llm_dir
from hf_token_merge.reference.speech_units import (
    SpeechUnitTokenizer,
    SpeechUnitTokenizerConfig,
    load_whisper_encoder,
    whisper_layer_features,
)

_WORKER: dict = {}


def _init_worker() -> None:
    torch.set_num_threads(1)
    _WORKER["encoder"], _WORKER["feature_extractor"] = load_whisper_encoder()


def _features(job: tuple[str, int]) -> torch.Tensor:
    path, layer = job
    audio, rate = soundfile.read(path, dtype="float32")
    return whisper_layer_features(_WORKER["encoder"], _WORKER["feature_extractor"], audio, rate, layer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=3)
    parser.add_argument("--num-units", type=int, default=512)
    parser.add_argument("--max-frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    corpus = corpus_dir()
    rows = [json.loads(line) for line in (corpus / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    encoder, feature_extractor = load_whisper_encoder()
    start = time.time()
    jobs = [(str(corpus / "audio" / f"{row['id']}.flac"), args.layer) for row in rows]
    # Worker processes with one thread each: on a shared CPU this beats one process with several threads.
    with multiprocessing.Pool(args.workers, initializer=_init_worker) as pool:
        features = []
        for i, feature in enumerate(pool.imap(_features, jobs, chunksize=16)):
            features.append(feature)
            if (i + 1) % 200 == 0:
                print(f"features {i + 1}/{len(rows)}, {time.time() - start:.0f} s", flush=True)

    train = torch.cat([f for f, row in zip(features, rows, strict=True) if row["split"] == "train"])
    generator = torch.Generator().manual_seed(args.seed)
    if train.shape[0] > args.max_frames:
        train = train[torch.randperm(train.shape[0], generator=generator)[: args.max_frames].sort().values]
    print(f"k-means K={args.num_units} on {train.shape[0]} train frames of width {train.shape[1]}", flush=True)
    labels = kmeans(train, args.num_units, "euclidean", seed=args.seed, max_iter=20, projection_dim=None)
    centroids = centroids_of(train, labels, args.num_units, "euclidean")
    print(f"k-means done, {time.time() - start:.0f} s", flush=True)

    config = SpeechUnitTokenizerConfig(layer=args.layer, num_units=args.num_units)
    tokenizer = SpeechUnitTokenizer(config, centroids, encoder, feature_extractor)
    assets = reference_speech_llm_dir()
    tokenizer.save_pretrained(assets / UNIT_TOKENIZER_DIR)

    frames = units = 0
    with (
        open(work_dir() / "units.jsonl", "w", encoding="utf-8") as out,
        open(assets / EVAL_SET_NAME, "w", encoding="utf-8") as eval_out,
    ):
        for row, feature in zip(rows, features, strict=True):
            sequence = tokenizer.units_of_features(feature)
            frames, units = frames + feature.shape[0], units + len(sequence)
            record = {"id": row["id"], "split": row["split"], "text": row["text"], "units": sequence}
            out.write(json.dumps(record) + "\n")
            if row["split"] == "test":
                eval_out.write(json.dumps({k: record[k] for k in ("id", "text", "units")}) + "\n")
    print(
        f"{frames} frames -> {units} units after collapsing repeats ({units / frames:.2f}), {time.time() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
