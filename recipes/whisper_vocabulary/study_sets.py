"""Evaluation sets and cached greedy decodes of the Whisper tiny.en generalisation study (issue 16).

Sets (none of them is a calibration source):

* `dev`: the 300 dev sentences of the synthetic KJV corpus (`recipes/speech_codec/corpus.jsonl`,
  file order, all 7 voices); the ONLY set the vocabulary trim and the encoder-pooling threshold are tuned on.
* `test`: its 600 test sentences (all 7 voices), a report set.
* `librivox`: the 12 LibriVox sonnet utterances (357 words, real speech), a report set.
* `everyday`: the 153 everyday sentences of `everyday_sentences.txt` (`synthesize_everyday.py`), sentence i read
  by voice `EVERYDAY_VOICES[i % 5]` (30-31 sentences a voice), a report set; `everyday-<voice>` is one voice's part.

Decodes are greedy and batched like `hf_token_merge.evaluation.asr.transcribe` (same features, same attention
mask). `baseline(name)` caches the unmerged model's texts and token ids, and every utterance's encoder output
(float32 `.npy`), under `<cache>/whisper_generalization_study/`. Neither a vocabulary trim nor encoder-frame
pooling changes the encoder, so `decode_cached` runs only the decoder on the cached frames: the encoder (about 90 %
of the cost of a short utterance: it always reads 30 s) runs once per utterance for the whole study.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "speech_codec"))
sys.path.insert(0, str(HERE))
EVERYDAY_VOICES = ("flite-slt", "flite-awb", "flite-rms", "flite-kal16", "piper-joe-1.00")
SUBSET = None  # utterances of the dev and test splits (None: the whole splits, 300 and 600)


def study_dir() -> Path:
    """Cache folder of the study's decodes."""
    from hf_token_merge.reference.cache import cache_root

    path = cache_root(None) / "whisper_generalization_study"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_set(name: str) -> list[dict]:
    """Rows (`id`, `text`, `voice`, `audio` float32 16 kHz) of one study set (see the module docstring)."""
    import soundfile
    from common import load_split_audio
    from synthesize_everyday import everyday_dir, everyday_sentences

    if name == "dev":
        return load_split_audio("dev", limit=SUBSET)
    if name == "test":
        return load_split_audio("test", limit=SUBSET)
    if name == "librivox":
        return load_split_audio("librivox")
    if name.startswith("everyday"):
        rows = []
        for index, text in enumerate(everyday_sentences()):
            voice = EVERYDAY_VOICES[index % len(EVERYDAY_VOICES)]
            if name not in ("everyday", f"everyday-{voice}"):
                continue
            audio = soundfile.read(everyday_dir(voice) / f"{index:03d}.flac", dtype="float32")[0]
            rows.append({"id": f"{voice}-{index:03d}", "text": text, "voice": voice, "audio": audio})
        return rows
    raise ValueError(f"Unknown study set {name!r}: dev, test, librivox, everyday, everyday-<voice>.")


def _features(processor, audios: list[np.ndarray]):
    return processor.feature_extractor(audios, sampling_rate=16_000, return_tensors="pt", return_attention_mask=True)


def _generate(model, features, suppress) -> list[list[int]]:
    kwargs = {}
    if suppress is not None:
        kwargs["suppress_tokens"] = sorted(set(model.generation_config.suppress_tokens) | set(map(int, suppress)))
    out = model.generate(
        features.input_features.to(model.dtype),
        attention_mask=features.attention_mask,
        num_beams=1,
        do_sample=False,
        **kwargs,
    )
    return out.tolist()


def _texts_and_ids(processor, sequences: list[list[int]]) -> tuple[list[str], list[list[int]]]:
    texts = [t.strip() for t in processor.batch_decode(sequences, skip_special_tokens=True)]
    return texts, [[i for i in row if i < 50256] for row in sequences]


def decode(model, processor, audios: list[np.ndarray], batch_size: int = 16, keep_encoder=None):
    """Greedy texts and emitted text-token ids (`< 50256`) of `audios`; `keep_encoder(list)` gets each batch's
    encoder outputs (float32 numpy, one `(1500, 384)` array per utterance)."""
    import torch

    sequences = []
    captured = []
    hook = model.get_encoder().register_forward_hook(lambda m, a, out: captured.append(out[0].float().numpy()))
    try:
        with torch.inference_mode():
            for start in range(0, len(audios), batch_size):
                captured.clear()
                sequences += _generate(model, _features(processor, list(audios[start : start + batch_size])), None)
                if keep_encoder is not None:
                    keep_encoder(list(captured[0]))
    finally:
        hook.remove()
    return _texts_and_ids(processor, sequences)


def decode_cached(model, processor, hidden: list[np.ndarray], frames: list[int], suppress=None, batch_size=16):
    """Greedy decode from cached encoder outputs (the encoder's forward hooks, e.g. `apply_encoder_merge`, still run).

    Args:
        model: A Whisper model whose encoder weights produced `hidden` (a vocabulary trim leaves them alone).
        processor: Its processor.
        hidden: Encoder outputs, one `(1500, d)` array per utterance.
        frames: Real (unpadded) log-mel frames of each utterance (the attention mask's sum).
        suppress: Ids never to emit (a trim emulated on the unmerged model), or None.
        batch_size: Utterances per `generate` call.

    Returns:
        Texts and emitted text-token ids.
    """
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    encoder = model.get_encoder()
    current: list[torch.Tensor] = []

    def cached_forward(input_features, *args, **kwargs):
        return BaseModelOutput(last_hidden_state=current[0])

    sequences = []
    encoder.forward = cached_forward
    try:
        with torch.inference_mode():
            for start in range(0, len(hidden), batch_size):
                batch = torch.from_numpy(np.stack(hidden[start : start + batch_size])).to(model.dtype)
                current[:] = [batch]
                count = batch.shape[0]
                mask = torch.arange(3000)[None] < torch.tensor(frames[start : start + count])[:, None]
                features = type("Features", (), {})()
                features.input_features = torch.zeros(count, 80, 3000)
                features.attention_mask = mask.long()
                sequences += _generate(model, features, suppress)
    finally:
        del encoder.forward
    return _texts_and_ids(processor, sequences)


def records(rows: list[dict], texts: list[str], spelling) -> list[dict]:
    """Scored per-utterance records (`transcript_record`: counts, normalised texts) plus the voice."""
    from hf_token_merge.evaluation.scoring import Transcript, transcript_record

    return [
        transcript_record(Transcript(i, row["id"], row["text"], text, {"voice": row["voice"]}), spelling=spelling)
        for i, (row, text) in enumerate(zip(rows, texts, strict=True))
    ]


def wer_of(recs: list[dict]) -> tuple[float, int]:
    """Corpus WER and reference words of records."""
    errors = sum(r["substitutions"] + r["deletions"] + r["insertions"] for r in recs)
    words = sum(r["substitutions"] + r["deletions"] + r["hits"] for r in recs)
    return errors / words, words


def choose_within_budget(trials: list[dict], budget_points: float, cost: str, group_by: str) -> dict[str, dict]:
    """The dev choice of each `group_by` value: of its trials with `delta_points <= budget_points`, the one with the
    lowest `cost` (rows kept, frames kept), ties broken by the smaller delta. Groups with no trial within the budget
    are left out."""
    chosen: dict[str, dict] = {}
    for trial in trials:
        if trial["delta_points"] > budget_points:
            continue
        best = chosen.get(trial[group_by])
        if best is None or (trial[cost], trial["delta_points"]) < (best[cost], best["delta_points"]):
            chosen[trial[group_by]] = trial
    return chosen


def groups_of(name: str, rows: list[dict]) -> dict[str, list[int]]:
    """Row indices of a set and of each of its voices (`<set>-<voice>`), for per-voice reports."""
    groups = {name: list(range(len(rows)))}
    voices = sorted({r["voice"] for r in rows})
    if len(voices) > 1:
        for voice in voices:
            groups[f"{name}-{voice}"] = [i for i, r in enumerate(rows) if r["voice"] == voice]
    return groups


def encoder_dir(name: str) -> Path:
    """Folder of a set's cached encoder outputs."""
    path = study_dir() / f"encoder_{name}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def baseline(name: str, model=None, processor=None, shard: tuple[int, int] = (0, 1), batch_size: int = 8):
    """The unmerged model's records of a set, with `ids` and `frames`, decoded once and cached with the encoder
    outputs (`cached_encoder(name)`).

    Resumable and shardable: worker `shard = (k, n)` decodes the rows `i % n == k` in batches, appending each
    batch to `baseline_<name>.part.jsonl`; rows whose encoder output is cached already are decoded from it.
    The records are returned (and `baseline_<name>.jsonl` written) once every row is done.
    """
    import torch

    from hf_token_merge.evaluation.text import spelling_map_of

    path = study_dir() / f"baseline_{name}.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines()]
    part = study_dir() / f"baseline_{name}.part.jsonl"
    done = {}
    if part.is_file():
        done = {r["id"]: r for r in map(json.loads, part.read_text().splitlines())}
    rows = load_set(name)
    folder = encoder_dir(name)
    todo = [(i, r) for i, r in enumerate(rows) if i % shard[1] == shard[0] and r["id"] not in done]
    spelling = spelling_map_of(processor) if processor is not None else None
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        frames = [int(-(-len(r["audio"]) // 160)) for _, r in batch]
        cached = [folder / f"{r['id']}.npy" for _, r in batch]
        if all(p.is_file() for p in cached):
            texts, ids = decode_cached(model, processor, [np.load(p) for p in cached], frames)
        else:
            arrays = []
            texts, ids = decode(model, processor, [r["audio"] for _, r in batch], keep_encoder=arrays.extend)
            for p, array in zip(cached, arrays, strict=True):
                np.save(p, array)
        recs = records([r for _, r in batch], texts, spelling)
        with open(part, "a") as handle:
            for (index, _), rec, row_ids, count in zip(batch, recs, ids, frames, strict=True):
                rec.update(index=index, ids=row_ids, frames=count)
                handle.write(json.dumps(rec) + "\n")
        torch.set_num_threads(1)
    done = {r["id"]: r for r in map(json.loads, part.read_text().splitlines())}
    if any(r["id"] not in done for r in rows):
        return None
    recs = [done[r["id"]] for r in rows]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


def cached_encoder(name: str, recs: list[dict]) -> list[np.ndarray]:
    """The cached encoder outputs of a set's records, in order."""
    return [np.load(encoder_dir(name) / f"{rec['id']}.npy") for rec in recs]


if __name__ == "__main__":
    import time

    import torch

    from hf_token_merge.reference import load_whisper_tiny_en

    torch.set_num_threads(1)
    model, processor = load_whisper_tiny_en()
    worker = (int(sys.argv[1]), int(sys.argv[2]))  # shard k of n
    for set_name in sys.argv[3:]:
        start = time.perf_counter()
        recs = baseline(set_name, model, processor, shard=worker)
        if recs is not None:
            wer, words = wer_of(recs)
            print(f"{set_name}: {len(recs)} utts, {words} words, WER {wer:.4f}, {time.perf_counter() - start:.0f} s")
        else:
            print(f"{set_name}: shard {worker} done in {time.perf_counter() - start:.0f} s", flush=True)
