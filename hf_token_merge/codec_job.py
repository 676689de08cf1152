"""The built-in default job on the codec speech-LLM: analyse -> merge -> evaluate before and after -> report.

    hf-token-merge run            # or: python -m hf_token_merge.job

Everything ships inside the package: the codec speech-LLM (`hf_token_merge.reference.load_codec_speech_llm`),
the reference codec, the committed code sequences of the test split, and Whisper tiny.en (built offline into the
user cache on first use). Measured before and after the merge (the `reference_codec` recipe):

* ASR WER on the first `asr_limit` test utterances (beam search with the reference's `ASR_NUM_BEAMS` = 4 beams,
  chosen on dev), with the paired bootstrap interval of the change;
* TTS WER on a fixed 25-sentence subset of test (the first 25; greedy generation → `reference` adapter → codec
  decoder → Whisper tiny.en, through `evaluate_tts_wer`), with its interval;
* per-token KL(unmerged || merged) and perplexity on the TTS sequences (text prompt + ground-truth codes) of the
  ASR utterances, with the bootstrap interval of the KL and of the NLL change.

The report (Markdown, JSON, the analysis figures) and both models go to `outputs/reference-job/` by default.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from hf_token_merge.config import TokenMergeConfig

DEFAULT_OUTPUT_DIR = os.path.join("outputs", "reference-job")
ASR_UTTERANCES = 100
TTS_UTTERANCES = 25
RECIPE = "reference_codec"
# the decoding behind every number of the job; the ASR beam count is the bundled model's ASR_NUM_BEAMS
GENERATION = {
    "asr_decoding": "beam search, 4 beams",
    "tts_decoding": "greedy",
    "tts_asr": "Whisper tiny.en",
    "codec": "reference SpeechCodec",
}


def codec_tts_adapter(tokenizer) -> Any:
    """The `reference` speech-token adapter of the codec speech-LLM: `<|s_N|>` → N, up to `<|SPEECH_GENERATION_END|>`.

    Args:
        tokenizer: The model's tokenizer.

    Returns:
        A `UnitAdapter` with `prompt(text)` set to the TTS prompt.
    """
    from hf_token_merge.evaluation.tts.adapters import UnitAdapter
    from hf_token_merge.reference.codec_llm import SPEECH_GENERATION_END, SPEECH_GENERATION_START, CodecSequenceBuilder

    builder = CodecSequenceBuilder(tokenizer)
    adapter = UnitAdapter(
        tokenizer,
        builder.num_codes,
        end_tokens=[SPEECH_GENERATION_END],
        skip_tokens=[SPEECH_GENERATION_START],
        frame_rate=50.0,
    )
    adapter.prompt = builder.tts_prompt  # type: ignore[attr-defined]  # evaluate_tts_wer's default prompt builder
    return adapter


def codec_eval_data(asr_limit: int = ASR_UTTERANCES, tts_limit: int = TTS_UTTERANCES):
    """The job's evaluation sets: the first `asr_limit` and the first `tts_limit` test utterances of the codec
    corpus (ids, texts, codes)."""
    from hf_token_merge.reference.codec_corpus import load_codec_corpus

    test = load_codec_corpus("test")
    return test.select(range(min(asr_limit, len(test)))), test.select(range(min(tts_limit, len(test))))


def tts_sequences(tokenizer, data) -> list[list[int]]:
    """TTS training sequences (prompt + ground-truth codes + end marker) of a codec-corpus split: what KL and
    perplexity are measured on."""
    from hf_token_merge.reference.codec_llm import CodecSequenceBuilder

    builder = CodecSequenceBuilder(tokenizer)
    return [builder.tts_example(text, codes)[0] for text, codes in zip(data["text"], data["codes"], strict=True)]


def codec_asr_wer(
    model,
    tokenizer,
    data,
    *,
    batch_size: int = 32,
    device: str | None = "cpu",
    output_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
    num_beams: int | None = None,
):
    """ASR WER of a codec speech-LLM (speech-understanding prompt of the codes → text): a `WerResult`.

    Args:
        model: The model (merged or not).
        tokenizer: Its tokenizer.
        data: Utterances with `codes` and `text`.
        batch_size: Utterances per `generate` call.
        device: `"cpu"`, or None for the accelerator's device.
        output_dir: Write the report and the per-utterance predictions there.
        show_progress: tqdm bars.
        num_beams: Beam count; default `ASR_NUM_BEAMS` (4, chosen on dev for the bundled model); 1 is greedy.

    Returns:
        The `WerResult`.
    """
    from hf_token_merge.evaluation import evaluate_wer, unit_prompt_builder
    from hf_token_merge.reference.codec_llm import (
        ASR_NUM_BEAMS,
        SPEECH_UNDERSTANDING_END,
        SPEECH_UNDERSTANDING_START,
        TEXT_GENERATION_END,
        TEXT_GENERATION_START,
        normalize_text,
    )

    builder = unit_prompt_builder(
        tokenizer,
        units_column="codes",
        prefix=[SPEECH_UNDERSTANDING_START],
        suffix=[SPEECH_UNDERSTANDING_END, TEXT_GENERATION_START],
    )
    return evaluate_wer(
        model,
        data,
        tokenizer=tokenizer,
        prompt_builder=builder,
        eos_token_id=tokenizer.convert_tokens_to_ids(TEXT_GENERATION_END),
        max_new_tokens=max(len(normalize_text(t)) for t in data["text"]) + 40,
        num_beams=ASR_NUM_BEAMS if num_beams is None else num_beams,
        batch_size=batch_size,
        device=device,
        output_dir=output_dir,
        show_progress=show_progress,
    )


def codec_tts_wer(
    model,
    tokenizer,
    data,
    codec,
    asr,
    *,
    batch_size: int = TTS_UTTERANCES,
    device: str | None = "cpu",
    output_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
):
    """Greedy TTS WER of a codec speech-LLM (text → codes → the codec's log-mel → `asr`): a `TtsWerResult`.

    Args:
        model: The model (or an `OracleSpeechModel`).
        tokenizer: Its tokenizer.
        data: Sentences with `text` (and `codes`, for the oracle).
        codec: The reference `SpeechCodec`.
        asr: The ASR callable (`whisper_asr(features=True)`).
        batch_size: Sentences per `generate` call.
        device: `"cpu"`, or None for the accelerator's device.
        output_dir: Write the report and the per-utterance predictions there.
        show_progress: tqdm bars.

    Returns:
        The `TtsWerResult`.
    """
    from hf_token_merge.evaluation.tts.evaluate import evaluate_tts_wer
    from hf_token_merge.evaluation.tts.reference_codec import codec_whisper_decoder
    from hf_token_merge.reference.codec_llm import normalize_text

    longest = max(len(normalize_text(t)) for t in data["text"])
    return evaluate_tts_wer(
        model,
        data,
        adapter=codec_tts_adapter(tokenizer),
        decode=codec_whisper_decoder(codec),
        asr=asr,
        max_new_tokens=min(1500, 6 * longest + 50),
        batch_size=batch_size,
        device=device,
        output_dir=output_dir,
        show_progress=show_progress,
    )


def evaluate_codec_model(model, tokenizer, asr_data, tts_data, codec, asr, show_progress: bool = True):
    """ASR WER and TTS WER of a (merged) codec speech-LLM.

    Args:
        model: The model.
        tokenizer: Its tokenizer.
        asr_data: Utterances for ASR (`codes`, `text`).
        tts_data: Utterances for TTS (`text`).
        codec: The reference `SpeechCodec`.
        asr: The ASR callable of TTS WER (`whisper_asr(features=True)`).
        show_progress: tqdm bars.

    Returns:
        `{"asr": WerResult, "tts": TtsWerResult}`.
    """
    return {
        "asr": codec_asr_wer(model, tokenizer, asr_data, show_progress=show_progress),
        "tts": codec_tts_wer(model, tokenizer, tts_data, codec, asr, show_progress=show_progress),
    }


def _kl_rows(kl) -> tuple[dict[str, Any], Any]:
    """KL's bootstrap interval and the paired NLL change (perplexity) from `evaluate_kl`'s per-sequence records."""
    from hf_token_merge.evaluation.confidence import paired_bootstrap, paired_difference

    records = kl.per_sequence
    tokens = [r["token_count"] for r in records]
    low, high = paired_bootstrap(np.zeros(len(records)), [r["kl_sum"] for r in records], tokens)
    nll = paired_difference(
        [r["baseline_nll_sum"] for r in records], [r["merged_nll_sum"] for r in records], tokens, metric="nll"
    )
    return {"mean_kl": kl.mean_kl, "ci_low": low, "ci_high": high, "tokens": sum(tokens)}, nll


def run_codec_job(
    output_dir: str = DEFAULT_OUTPUT_DIR,
    config: TokenMergeConfig | None = None,
    *,
    model_dir: str | os.PathLike[str] | None = None,
    asr_limit: int = ASR_UTTERANCES,
    tts_limit: int = TTS_UTTERANCES,
    maps: tuple[str, ...] = ("tsne", "umap"),
    show_progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Analyse, merge, evaluate before and after, and write the report.

    Args:
        output_dir: Where the report, the figures and both models go.
        config: The merge; defaults to the `reference_codec` recipe.
        model_dir: A codec speech-LLM folder; the bundled model by default.
        asr_limit: ASR (and KL/perplexity) on the first `asr_limit` test utterances.
        tts_limit: TTS WER on the first `tts_limit` test sentences (25 by default).
        maps: The 2-D maps of the analysis ("tsne", "umap").
        show_progress: Show tqdm bars.
        overwrite: Replace `original/` and `merged/` even when hf_token_merge did not write them.

    Returns:
        The numbers of the report (also in `report.json`).
    """
    from hf_token_merge.evaluation.kl import evaluate_kl
    from hf_token_merge.evaluation.tts.evaluate import whisper_asr
    from hf_token_merge.job_steps import analyse_merge_evaluate, job_folders
    from hf_token_merge.recipes import load_recipe
    from hf_token_merge.reference import load_reference_speech_codec
    from hf_token_merge.reference.codec_llm import load_codec_speech_llm

    folders = job_folders(output_dir, overwrite)  # before any work
    config = config or load_recipe(RECIPE).config
    model, tokenizer = load_codec_speech_llm(model_dir)
    asr_data, tts_data = codec_eval_data(asr_limit, tts_limit)
    codec, asr = load_reference_speech_codec(), whisper_asr(features=True)
    os.makedirs(output_dir, exist_ok=True)

    sequences = tts_sequences(tokenizer, asr_data)
    run = analyse_merge_evaluate(
        model, tokenizer, config, output_dir,
        lambda m: evaluate_codec_model(m, tokenizer, asr_data, tts_data, codec, asr, show_progress),
        inputs=[torch.tensor(ids) for ids in sequences], maps=maps, show_progress=show_progress, overwrite=overwrite,
    )  # fmt: skip
    kl = evaluate_kl(model, run.merged, sequences, device="cpu", show_progress=show_progress)
    return _codec_report(output_dir, config, model, run, kl, asr_data, tts_data, folders)


def _codec_report(output_dir, config, model, run, kl, asr_data, tts_data, folders) -> dict[str, Any]:
    """The codec job's table (ASR and TTS WER, perplexity, KL, sizes), numbers and report files."""
    from hf_token_merge.evaluation.compare import embedding_rows, safetensors_bytes
    from hf_token_merge.evaluation.confidence import compare_records
    from hf_token_merge.evaluation.provenance import provenance_of
    from hf_token_merge.job_steps import write_job_outputs
    from hf_token_merge.tables import ChangeRow

    before, after, result, merged = run.before, run.after, run.result, run.merged
    kl_row, nll = _kl_rows(kl)
    asr_change = compare_records(before["asr"].predictions, after["asr"].predictions)
    tts_change = compare_records(before["tts"].predictions, after["tts"].predictions)
    kl_interval = f"95 % CI {kl_row['ci_low']:.5f} to {kl_row['ci_high']:.5f}"
    rows = [
        ChangeRow(
            f"ASR WER ({len(asr_data)} test)",
            asr_change.before,
            asr_change.after,
            ".4f",
            asr_change.interval_text(1, "+.4f"),
        ),
        ChangeRow(
            f"TTS WER ({len(tts_data)} test)",
            tts_change.before,
            tts_change.after,
            ".4f",
            tts_change.interval_text(1, "+.4f"),
        ),
        ChangeRow(
            "perplexity (TTS sequences)", math.exp(nll.before), math.exp(nll.after), ".3f", f"NLL {nll.summary()}"
        ),
        ChangeRow("KL(unmerged || merged), nats/token", 0.0, kl.mean_kl, ".5f", kl_interval),
        ChangeRow("embedding rows", embedding_rows(model), embedding_rows(merged), ",d"),
        ChangeRow("parameters", result.parameters_before, result.parameters_after, ",d"),
        ChangeRow("safetensors bytes", safetensors_bytes(folders[0]), safetensors_bytes(folders[1]), ",d"),
    ]
    record = provenance_of(
        merged,
        asr_data,
        dataset_name="codec corpus test split (hf_token_merge.reference.load_codec_corpus)",
        split="test",
        units=asr_change.units,
        generation=GENERATION,
    )
    extra = {
        "asr_utterances": len(asr_data),
        "tts_utterances": len(tts_data),
        "asr_difference": asr_change.to_dict(),
        "tts_difference": tts_change.to_dict(),
        "nll_difference": nll.to_dict(),
        "kl": kl_row,
        "tts_invalid": {"before": before["tts"].invalid, "after": after["tts"].invalid},
    }
    intro = (
        f"ASR WER ({GENERATION['asr_decoding']}) and KL/perplexity (TTS sequences: text prompt + ground-truth codes) "
        f"on the first {len(asr_data)} test utterances of the codec corpus; TTS WER (greedy → codec decoder → Whisper "
        f"tiny.en) on the first {len(tts_data)} test sentences. Intervals: paired bootstrap, 95 %.\n\n"
    )
    return write_job_outputs(output_dir, "Codec speech-LLM: merge report", intro, run, config, rows, extra, record)
