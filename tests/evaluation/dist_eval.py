"""The evaluation run that the 1-vs-2-process test executes, in process and under `accelerate launch`.

    accelerate launch --config_file recipes/launch/accelerate_cpu_2proc.yaml tests/evaluation/dist_eval.py OUT CACHE
    accelerate launch ... tests/evaluation/dist_eval.py OUT CACHE codec-oracle     # only the reference-codec oracle

Writes (main process) a JSON file with the deterministic metrics and per-example records of:
Whisper tiny.en WER on the 12 LibriVox utterances (batch size 5: batches of 5, 5, 2, so two processes get
10 and 2 utterances), speech-LLM WER and perplexity of a tiny random Llama on 7 examples, TTS WER of the oracle
and of the Llama sampling speech (5 utterances in batches of 2), and the KL of a merge of the Llama. With
`codec-oracle`: only the oracle TTS WER of the reference codec on `CODEC_IDS` (real codec, real Whisper).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from hf_token_merge.evaluation import evaluate_perplexity, evaluate_wer, unit_prompt_builder  # noqa: E402
from tests.models import build_llama  # noqa: E402

WHISPER_BATCH = 5
# Six short committed test-split utterances of the codec corpus (6-8 words, under 2.6 s each: the first such in the
# split), in batches of 3: the two processes get one batch each.
CODEC_IDS = ["test-00010", "test-00011", "test-00014", "test-00017", "test-00020", "test-00022"]
CODEC_BATCH = 3
PPL_MAX_LENGTH, PPL_STRIDE = 16, 5


def llama_data(tokenizer, n: int = 7) -> tuple[list[list[int]], list[dict]]:
    """Deterministic token sequences (lengths 1..59, mixed text and unit ids) and unit-prompt ASR examples."""
    generator = torch.Generator().manual_seed(1234)
    vocab = len(tokenizer)
    sequences = [
        [tokenizer.bos_token_id] + torch.randint(0, vocab, (length,), generator=generator).tolist()
        for length in (0, 7, 58, 23, 16, 41, 3)[:n]
    ]
    words = ["hello", "world", "the", "cat", "sat", "on", "mat"]
    examples = [
        {
            "id": f"utt{i}",
            "units": torch.randint(0, 48, (4 + i,), generator=generator).tolist(),
            "text": " ".join(words[: 2 + i % 4]),
        }
        for i in range(n)
    ]
    return sequences, examples


def llama_prompt_builder(tokenizer):
    return unit_prompt_builder(
        tokenizer, prefix=["<|TEXT_UNDERSTANDING_START|>"], suffix=["<|TEXT_UNDERSTANDING_END|>"]
    )


def run_llama(accelerator=None) -> dict:
    """Perplexity and speech-LLM WER of the tiny Llama (seed 0)."""
    bundle = build_llama()
    sequences, examples = llama_data(bundle.tokenizer)
    ppl = evaluate_perplexity(
        bundle.model, sequences, max_length=PPL_MAX_LENGTH, stride=PPL_STRIDE, accelerator=accelerator
    )
    wer = evaluate_wer(
        bundle.model,
        examples,
        tokenizer=bundle.tokenizer,
        prompt_builder=llama_prompt_builder(bundle.tokenizer),
        batch_size=3,
        max_new_tokens=5,
        accelerator=accelerator,
    )
    return {
        "perplexity": ppl.metrics(),
        "perplexity_sequences": ppl.per_sequence,
        "llm_wer": wer.metrics(),
        "llm_predictions": wer.predictions,
        "num_processes": ppl.num_processes,
    }


def run_tts_and_kl(accelerator=None) -> dict:
    """TTS WER of the oracle (word codec) and of the tiny Llama sampling speech, and KL of a merge of it."""
    import copy

    from hf_token_merge import TokenMergeConfig, apply_token_merge
    from hf_token_merge.evaluation.kl import evaluate_kl
    from hf_token_merge.evaluation.tts import LlasaAdapter
    from hf_token_merge.evaluation.tts.evaluate import OracleSpeechModel, evaluate_tts_wer
    from tests.evaluation.tts_fixtures import word_asr, word_codes, word_decode

    bundle = build_llama()
    adapter = LlasaAdapter(bundle.tokenizer, num_codes=48)
    texts = ["the cat sat on the mat", "hello world", "a dog is good", "the cat is good speech", "text"]
    data = [{"id": f"u{i}", "text": text, "codes": word_codes(text)} for i, text in enumerate(texts)]
    oracle = evaluate_tts_wer(OracleSpeechModel(), data, adapter=adapter, decode=word_decode, asr=word_asr,
                              batch_size=2, accelerator=accelerator, show_progress=False)  # fmt: skip
    sampled = evaluate_tts_wer(bundle.model, data, adapter=adapter, decode=word_decode, asr=word_asr,
                               max_new_tokens=8, do_sample=True, seed=5, top_k=20, batch_size=2,
                               accelerator=accelerator, show_progress=False)  # fmt: skip
    merged = copy.deepcopy(bundle.model)
    apply_token_merge(merged, TokenMergeConfig(preset="llasa", n_clusters=8), tokenizer=bundle.tokenizer,
                      show_progress=False)  # fmt: skip
    sequences, _ = llama_data(bundle.tokenizer)
    kl = evaluate_kl(bundle.model, merged, sequences, max_length=PPL_MAX_LENGTH, stride=PPL_STRIDE,
                     accelerator=accelerator, show_progress=False)  # fmt: skip
    return {
        "tts_oracle": oracle.metrics(),
        "tts_oracle_predictions": oracle.predictions,
        "tts_sampled": sampled.metrics(),
        "tts_sampled_predictions": sampled.predictions,
        "kl": kl.metrics(),
        "kl_sequences": kl.per_sequence,
    }


def run_codec_oracle(cache_dir: str, accelerator=None, asr=None) -> dict:
    """Oracle TTS WER of the reference codec on `CODEC_IDS`: its codes decoded and heard by Whisper tiny.en."""
    from hf_token_merge.evaluation.tts.evaluate import whisper_asr
    from hf_token_merge.evaluation.tts.reference_codec import evaluate_reference_codec_oracle, load_oracle_data
    from hf_token_merge.reference import load_whisper_tiny_en

    if asr is None:
        asr = whisper_asr(*load_whisper_tiny_en(cache_dir=cache_dir), features=True)
    result = evaluate_reference_codec_oracle(
        load_oracle_data("test", ids=CODEC_IDS),
        asr=asr,
        batch_size=CODEC_BATCH,
        accelerator=accelerator,
        show_progress=False,
    )
    return {"codec_oracle": result.metrics(), "codec_oracle_predictions": result.predictions,
            "num_processes": result.num_processes}  # fmt: skip


def run_whisper(cache_dir: str, accelerator=None) -> dict:
    from hf_token_merge.reference import load_librivox_sonnets, load_whisper_tiny_en

    model, processor = load_whisper_tiny_en(cache_dir=cache_dir)
    result = evaluate_wer(
        model,
        load_librivox_sonnets(cache_dir=cache_dir),
        processor=processor,
        batch_size=WHISPER_BATCH,
        accelerator=accelerator,
    )
    return {"wer": result.metrics(), "predictions": result.predictions, "num_processes": result.num_processes}


def launch_two_processes(output: Path, cache_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run this script under `accelerate launch` with 2 CPU processes (the torchrun launcher, gloo), one thread each.

    Args:
        output: The JSON file the main process writes.
        cache_dir: The reference-asset cache (Whisper tiny.en, LibriVox).
        *args: Further arguments of `main` (e.g. "codec-oracle").

    Returns:
        The finished process (its stderr holds the error of a failed run).
    """
    repo = Path(__file__).resolve().parents[2]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(repo / "recipes/launch/accelerate_cpu_2proc.yaml"),
        "--num_processes", "2", "--main_process_port", str(port),
        str(Path(__file__).resolve()), str(output), str(cache_dir), *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=400)


def main(output: str, cache_dir: str, only: str | None = None) -> None:
    torch.set_num_threads(1)  # the same threads as the in-process run: identical float results
    from hf_token_merge.evaluation.runner import finish, get_accelerator

    accelerator = get_accelerator()
    if only == "codec-oracle":
        results = run_codec_oracle(cache_dir, accelerator)
    else:
        results = {**run_whisper(cache_dir, accelerator), **run_llama(accelerator), **run_tts_and_kl(accelerator)}
    if accelerator.is_main_process:
        with open(output, "w", encoding="utf-8") as handle:
            json.dump(results, handle)
    finish(accelerator)


if __name__ == "__main__":
    main(*sys.argv[1:4])
