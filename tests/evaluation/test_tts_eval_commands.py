"""TTS WER as the before/after metric of `compress --eval tts-wer` (real reference codec, real Whisper tiny.en) and
as the metric of the budget search with a tune/report split (`sweep --budget-only`, `compress_within_budget`)."""

from __future__ import annotations

import json

import pytest

from hf_token_merge import TokenMergeConfig
from hf_token_merge.analysis.budget import compress_within_budget, describe_eval_set, with_records
from hf_token_merge.cli.main import main
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.tts import LlasaAdapter
from hf_token_merge.evaluation.tts.evaluate import evaluate_tts_wer
from hf_token_merge.evaluation.tts.reference_codec import load_oracle_data
from tests.evaluation.tts_fixtures import word_asr, word_decode
from tests.models import build_llama

TINY_TTS = ["--preset", "llasa", "--tts-num-codes", "48", "--tts-max-new-tokens", "8"]


@pytest.fixture
def llama_folder(tmp_path):
    """A saved tiny Llasa replica (48 `<|s_N|>` codes, all valid codes of the reference codec)."""
    bundle = build_llama(n_speech=48)
    folder = tmp_path / "llama"
    bundle.model.save_pretrained(folder)
    bundle.tokenizer.save_pretrained(folder)
    return folder


def test_compress_eval_tts_wer_reports_the_change_with_its_interval(llama_folder, reference_cache, tmp_path,
                                                                    monkeypatch):  # fmt: skip
    monkeypatch.setenv("HF_TOKEN_MERGE_CACHE", str(reference_cache))  # this session's Whisper tiny.en
    out = tmp_path / "out"
    argv = ["compress", "--model", str(llama_folder), *TINY_TTS, "--n-clusters", "8", "--eval", "tts-wer"]
    argv += ["--tts-decode", "reference-codec", "--tts-limit", "2", "--output-dir", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "merge.json").read_text())
    before, after, difference = report["before"], report["after"], report["wer_difference"]
    assert set(before) == set(after) == {"wer", "invalid_generations"}
    assert (difference["utterances"], difference["metric"]) == (2, "wer")
    words = sum(len(text.split()) for text in load_oracle_data("test", 2)["text"])
    assert difference["units"] == words  # KJV sentences without numbers: the normaliser keeps every word
    assert difference["before"] == pytest.approx(before["wer"]) and difference["after"] == pytest.approx(after["wer"])
    assert difference["ci_low"] <= difference["difference"] <= difference["ci_high"]
    assert report["tts_evaluation"] == {"decoding": "greedy", "max_new_tokens": 8, "family": "llasa",
                                        "codec": "reference-codec"}  # fmt: skip
    card = (out / "model" / "README.md").read_text()
    assert "type: text-to-speech" in card and "TTS WER change: " in card and "(paired bootstrap)" in card
    assert "- generation: decoding=greedy, max_new_tokens=8, family=llasa, codec=reference-codec" in card
    assert f"{words} words, 2 utterances" in card


def test_eval_tts_wer_needs_a_family_before_anything_loads(tmp_path, capsys):
    argv = ["compress", "--model", str(tmp_path / "missing"), "--token-pattern", "s_", "--n-clusters", "2"]
    assert main([*argv, "--eval", "tts-wer", "--output-dir", str(tmp_path / "out")]) == 2
    assert (
        "--eval tts-wer maps generated ids to codec codes by family. Fix: pass --tts-family" in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


def test_sweep_budget_search_on_tts_wer_with_a_tune_report_split(llama_folder, tmp_path, monkeypatch, capsys):
    import hf_token_merge.evaluation.tts.evaluate as tts_evaluate

    monkeypatch.setattr(tts_evaluate, "whisper_asr", lambda **_: word_asr)  # the word codec's "ASR": no Whisper
    out = tmp_path / "budget"
    argv = ["sweep", "--model", str(llama_folder), *TINY_TTS, "--eval", "tts-wer", "--tts-limit", "4", "--budget-only"]
    argv += ["--tts-decode", "tests.evaluation.tts_fixtures:word_decode", "--max-wer-increase", "0.01"]
    argv += ["--tolerance", "0.5", "--output-dir", str(out)]
    assert main([*argv, "--split-eval", "0.5", "--criterion", "upper_bound"]) == 0
    budget = json.loads((out / "budget.json").read_text())
    assert budget["tune_set"] == "tts-wer (tune part, 2 examples)"
    assert budget["report_set"] == "tts-wer (report part, 2 examples)"
    assert budget["criterion"] == "upper_bound" and budget["tuned_on_report_set"] is False
    assert set(budget["tune"]["before"]) == {"wer", "invalid_generations"}
    # the word "ASR" hears no KJV word (WER 1.0 whatever the merge), so the strongest merge tried is within budget
    assert budget["n_clusters"] == 1 and [trial["n_clusters"] for trial in budget["trials"]] == [1]
    assert budget["report"]["before"]["wer"] == budget["report"]["after"]["wer"] == 1.0
    assert budget["report"]["difference"]["utterances"] == 2 and budget["trials"][0]["metrics"]["wer_ci_high"] == 0
    card = (out / "budgeted" / "README.md").read_text()
    assert "family=llasa" in card and "report set (tts-wer (report part, 2 examples)): WER change +0.00" in card
    # the tuning set as the report set is refused
    assert main([*argv, "--report-eval", "tts-wer", "--overwrite"]) == 2
    assert "they are the same set" in capsys.readouterr().err


def test_compress_within_budget_takes_tts_wer_with_a_held_out_report_set():
    bundle = build_llama(n_speech=48)
    adapter = LlasaAdapter(bundle.tokenizer, num_codes=48)
    texts = ["the cat sat on the mat", "hello world", "a dog is good", "the cat is good speech"]
    data = [{"id": f"u{i}", "text": text} for i, text in enumerate(texts)]

    def tts_set(part: list[dict]):
        def evaluate(model):
            result = evaluate_tts_wer(model, part, adapter=adapter, decode=word_decode, asr=word_asr,
                                      max_new_tokens=6, show_progress=False)  # fmt: skip
            return with_records(result, wer=result.wer, invalid_generations=result.invalid)

        return describe_eval_set(evaluate, f"{len(part)} sentences", part)

    tune, report = tts_set(data[:2]), tts_set(data[2:])
    config = TokenMergeConfig(preset="llasa", n_clusters=8)
    result = compress_within_budget(bundle.model, config, tune, report_evaluate=report, max_wer_increase=0.5,
                                    tokenizer=bundle.tokenizer, tolerance=0.5, show_progress=False)  # fmt: skip
    saved = result.to_dict()
    assert (
        saved["tuned_on_report_set"] is False and saved["report"]["before"]["wer"] == report(build_llama().model)["wer"]
    )
    assert set(saved["tune"]["before"]) == {"wer", "invalid_generations"}
    with pytest.raises(TokenMergeError, match="report_evaluate is the tuning evaluation itself"):
        compress_within_budget(build_llama().model, config, tune, report_evaluate=tune, max_wer_increase=0.5,
                               tokenizer=bundle.tokenizer, show_progress=False)  # fmt: skip
