"""`hf-token-merge evaluate --task tts-wer / kl`: the oracle through a real audio codec (8-bit mu-law) and real
Whisper tiny.en equals that codec's resynthesis WER; KL from the command line."""

from __future__ import annotations

import json

import pytest

from hf_token_merge.cli.main import main
from hf_token_merge.evaluation.audio import decode_audio_value
from hf_token_merge.evaluation.text import ErrorCounts, error_counts
from hf_token_merge.evaluation.tts import SpeechCodes
from hf_token_merge.evaluation.wer import transcribe
from tests.evaluation.tts_fixtures import mu_law_decode, mu_law_encode
from tests.models import build_llama


def test_cli_oracle_tts_wer_is_the_mu_law_resynthesis_wer(whisper_tiny_en, librivox, reference_cache, tmp_path,
                                                          monkeypatch):  # fmt: skip
    monkeypatch.setenv("HF_TOKEN_MERGE_CACHE", str(reference_cache))  # the default ASR: this session's Whisper
    whisper, processor = whisper_tiny_en
    rows, resynthesis = [], ErrorCounts()
    for i in (0, 1):
        audio = decode_audio_value(librivox[i]["audio"])
        codes = mu_law_encode(audio)
        rows.append({"id": librivox[i]["id"], "text": librivox[i]["text"], "codes": codes})
        heard = transcribe(whisper, processor, [mu_law_decode(SpeechCodes({"codes": codes}, 0, 0.0, True))])[0]
        resynthesis = resynthesis + error_counts(librivox[i]["text"], heard)
    manifest = tmp_path / "codes.jsonl"
    manifest.write_text("\n".join(json.dumps(row) for row in rows))
    bundle = build_llama(n_speech=256)  # its tokenizer spells the 256 mu-law codes <|s_0|>..<|s_255|>
    folder = tmp_path / "llama"
    bundle.model.save_pretrained(folder)
    bundle.tokenizer.save_pretrained(folder)
    out = tmp_path / "out"
    argv = ["evaluate", "--model", str(folder), "--task", "tts-wer", "--family", "reference", "--num-codes", "256"]
    argv += ["--frame-rate", "16000", "--oracle", "--decode", "tests.evaluation.tts_fixtures:mu_law_decode"]
    assert main([*argv, "--manifest", str(manifest), "--output-dir", str(out), "--no-progress"]) == 0
    report = json.loads((out / "tts_wer.json").read_text())
    assert "| generations_without_end_token | 0 |" in (out / "tts-wer.md").read_text()
    metrics = report["metrics"]
    assert (metrics["hits"], metrics["substitutions"], metrics["deletions"], metrics["insertions"]) == (
        resynthesis.hits, resynthesis.substitutions, resynthesis.deletions, resynthesis.insertions,
    )  # fmt: skip
    assert metrics["wer"] == resynthesis.wer
    seconds = sum(len(row["codes"]) for row in rows) / 16000
    assert metrics["generated_seconds"] == pytest.approx(seconds)
    assert report["settings"]["decoding"] == "oracle" and metrics["invalid_generations"] == 0


def test_cli_kl_and_tts_errors(tmp_path, capsys):
    from hf_token_merge import TokenMergeConfig, apply_token_merge

    bundle = build_llama()
    original, merged = tmp_path / "original", tmp_path / "merged"
    bundle.model.save_pretrained(original)
    bundle.tokenizer.save_pretrained(original)
    apply_token_merge(bundle.model, TokenMergeConfig(preset="llasa", n_clusters=8), tokenizer=bundle.tokenizer,
                      show_progress=False)  # fmt: skip
    bundle.model.save_pretrained(merged)
    bundle.tokenizer.save_pretrained(merged)
    manifest = tmp_path / "seqs.jsonl"
    speech = bundle.selected_ids.tolist()
    manifest.write_text("\n".join(json.dumps({"input_ids": [bundle.tokenizer.bos_token_id, *speech[i::5]]})
                                  for i in range(3)))  # fmt: skip
    out = tmp_path / "kl"
    argv = ["evaluate", "--model", str(merged), "--task", "kl", "--baseline-model", str(original)]
    assert main([*argv, "--manifest", str(manifest), "--output-dir", str(out), "--no-progress"]) == 0
    report = json.loads((out / "kl.json").read_text())
    assert report["task"] == "kl" and report["metrics"]["mean_kl"] > 0
    assert report["metrics"]["token_count"] == sum(len(speech[i::5]) for i in range(3))
    assert report["metrics"]["baseline_nll_sum"] > 0 and "reference_nll_sum" not in report["metrics"]
    renamed = ["--reference-model" if a == "--baseline-model" else a for a in argv]  # the flag's old name
    assert main([*renamed, "--manifest", str(manifest), "--output-dir", str(tmp_path / "kl_old"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "kl_old" / "kl.json").read_text())["metrics"] == report["metrics"]
    assert main([*argv[:5], "--manifest", str(manifest), "--output-dir", str(out)]) == 2
    assert "Fix: pass --baseline-model" in capsys.readouterr().err
    tts = ["evaluate", "--model", str(merged), "--task", "tts-wer", "--manifest", str(manifest), "--output-dir", "x"]
    assert main(tts) == 2
    assert "Fix: pass --family" in capsys.readouterr().err
    assert main([*tts, "--family", "spark_tts"]) == 2  # this tokenizer has no BiCodec tokens
    assert "lacks 8192 of the 8192 <|bicodec_semantic_N|> tokens" in capsys.readouterr().err
