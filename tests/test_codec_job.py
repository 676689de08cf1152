"""The built-in default job (`hf-token-merge run`) end to end on a small subset, with a tiny freshly initialised
model in the codec speech-LLM's layout (the merge, the evaluations and the report do not depend on its quality)."""

from __future__ import annotations

import json

import pytest
import torch

from hf_token_merge.recipes import load_recipe


@pytest.fixture(scope="module")
def tiny_codec_llm(tmp_path_factory):
    from transformers import LlamaForCausalLM

    from hf_token_merge.reference.codec_llm import build_codec_llm_tokenizer, codec_llama_config

    folder = tmp_path_factory.mktemp("tiny_codec_llm")
    tokenizer = build_codec_llm_tokenizer(4375)
    torch.manual_seed(0)
    model = LlamaForCausalLM(codec_llama_config(tokenizer, hidden_size=32, num_layers=1, num_heads=2))
    model.generation_config.max_new_tokens = 8
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_codec_job_writes_the_before_after_report(tiny_codec_llm, tmp_path, capsys):
    from hf_token_merge.codec_job import GENERATION, run_codec_job
    from hf_token_merge.reference.codec_llm import ASR_NUM_BEAMS

    numbers = run_codec_job(
        str(tmp_path), model_dir=tiny_codec_llm, asr_limit=4, tts_limit=2, maps=(), show_progress=False
    )
    table = {row["metric"]: row for row in numbers["table"]}
    assert list(table) == [
        "ASR WER (4 test)",
        "TTS WER (2 test)",
        "perplexity (TTS sequences)",
        "KL(unmerged || merged), nats/token",
        "embedding rows",
        "parameters",
        "safetensors bytes",
    ]
    assert numbers["config"] == load_recipe("reference_codec").config.to_dict()
    assert numbers["plan"]["rows_removed"] == 4375 - 4273  # the recipe's ASR budget
    assert table["embedding rows"]["before"] - table["embedding rows"]["after"] == 4375 - 4273
    assert table["KL(unmerged || merged), nats/token"]["after"] > 0.0
    assert table["perplexity (TTS sequences)"]["before"] > 1.0
    for key in ("asr_difference", "tts_difference", "nll_difference"):
        difference = numbers[key]
        assert difference["ci_low"] <= difference["difference"] <= difference["ci_high"], key
    assert numbers["asr_difference"]["utterances"] == 4 and numbers["tts_difference"]["utterances"] == 2
    assert numbers["kl"]["ci_low"] <= numbers["kl"]["mean_kl"] <= numbers["kl"]["ci_high"]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["asr_utterances"] == 4 and saved["tts_utterances"] == 2
    assert GENERATION["asr_decoding"] == f"beam search, {ASR_NUM_BEAMS} beams"  # the job says what it ran
    assert "generation: asr_decoding=beam search, 4 beams, tts_decoding=greedy" in (tmp_path / "report.md").read_text()
    for name in ("report.md", "analysis/report.md", "merged/model.safetensors", "original/tokenizer.json"):
        assert (tmp_path / name).is_file(), name
    report = (tmp_path / "report.md").read_text()
    asr = numbers["asr_difference"]
    assert f"95 % CI {asr['ci_low']:+.4f} to {asr['ci_high']:+.4f}" in report
    assert "| TTS WER (2 test) |" in capsys.readouterr().out
    page = (tmp_path / "report.html").read_text()
    assert "<pre>" not in page and page.count("<table>") >= 2  # the before/after table and the analysis tables
    assert "<h1>Codec speech-LLM: merge report</h1>" in page and "<figcaption>" in page


def test_run_defaults_to_the_codec_job_and_keeps_the_units_model_behind_a_flag(monkeypatch):
    import hf_token_merge.codec_job as codec_job
    import hf_token_merge.job as job
    from hf_token_merge.cli.main import main

    calls = []
    monkeypatch.setattr(codec_job, "run_codec_job", lambda out, **kw: calls.append(("codec", out)))
    monkeypatch.setattr(job, "run_reference_job", lambda out, **kw: calls.append(("units", out)))
    assert main(["run", "--output-dir", "x"]) == 0
    assert main(["run", "--output-dir", "y", "--model", "units"]) == 0
    assert calls == [("codec", "x"), ("units", "y")]
