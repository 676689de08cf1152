"""evaluate_tts_wer: the oracle path equals resynthesis, invalid/undecodable/unended generations are counted, and
sampled generation is seeded per utterance."""

from __future__ import annotations

import json

import pytest
import torch

from hf_token_merge import TokenMergeConfig, apply_token_merge
from hf_token_merge.evaluation.text import ErrorCounts, error_counts
from hf_token_merge.evaluation.tts import LlasaAdapter, UnitAdapter
from hf_token_merge.evaluation.tts.evaluate import OracleSpeechModel, evaluate_tts_wer
from tests.evaluation.tts_fixtures import word_asr, word_codes, word_decode
from tests.models import build_llama, llasa_tokenizer

SENTENCES = ["the cat sat on the mat", "hello world", "a dog is good", "the cat is good speech", "text"]


def _data():
    return [{"id": f"u{i}", "text": text, "codes": word_codes(text)} for i, text in enumerate(SENTENCES)]


def test_oracle_tts_wer_is_the_resynthesis_wer(tmp_path):
    tokenizer = llasa_tokenizer(48)
    adapter = UnitAdapter(tokenizer, 48, end_tokens=["<|SPEECH_GENERATION_END|>"])
    data = _data()
    # resynthesis: decode the ground-truth codes and transcribe them, no model involved
    resynthesis = ErrorCounts()
    for example in data:
        heard = word_asr([torch.tensor(example["codes"])])[0]
        resynthesis = resynthesis + error_counts(example["text"], heard)
    assert resynthesis == ErrorCounts(hits=16, substitutions=2)  # "cat" is heard as "mat" twice
    result = evaluate_tts_wer(OracleSpeechModel(), data, adapter=adapter, decode=word_decode, asr=word_asr,
                              batch_size=2, output_dir=tmp_path, show_progress=False)  # fmt: skip
    assert result.counts == resynthesis and result.wer == pytest.approx(2 / 18)
    assert (result.invalid, result.undecodable, result.unended) == (0, 0, 0)
    assert result.generated_seconds == pytest.approx(2 * 18 / 50)  # two codes per word at 50 Hz
    assert result.settings["decoding"] == "oracle" and result.settings["asr"] == "word_asr"
    assert result.settings["decode"] == "word_decode" and "max_new_tokens" not in result.settings
    saved = json.loads((tmp_path / "tts_wer.json").read_text())
    assert saved["task"] == "tts-wer" and saved["metrics"]["wer"] == result.wer
    assert saved["metrics"]["generations_without_end_token"] == 0
    lines = (tmp_path / "tts_wer_predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["prediction"] for line in lines][0] == "the mat sat on the mat"


def test_oracle_cer():
    adapter = UnitAdapter(llasa_tokenizer(48), 48, end_tokens=["<|SPEECH_GENERATION_END|>"])
    data = _data()[:1]
    result = evaluate_tts_wer(OracleSpeechModel(), data, adapter=adapter, decode=word_decode, asr=word_asr,
                              metric="cer", show_progress=False)  # fmt: skip
    # "the cat sat on the mat" vs "the mat sat on the mat": one character of 22
    assert (result.counts.errors, result.counts.target_words) == (1, 22)
    assert result.metrics()["cer"] == pytest.approx(1 / 22) and result.metrics()["target_characters"] == 22


def test_invalid_undecodable_and_unended_generations_are_counted():
    bundle = build_llama(n_speech=48)
    apply_token_merge(bundle.model, TokenMergeConfig(preset="llasa", n_clusters=8), tokenizer=bundle.tokenizer,
                      show_progress=False)  # fmt: skip
    adapter = LlasaAdapter(bundle.tokenizer, num_codes=48)
    data = [{"id": f"u{i}", "text": text} for i, text in enumerate(SENTENCES)]

    def picky_decode(codes):
        if codes.frames % 2:
            raise RuntimeError("odd frame count")
        return word_decode(codes)

    result = evaluate_tts_wer(bundle.model, data, adapter=adapter, decode=picky_decode, asr=word_asr,
                              max_new_tokens=6, batch_size=2, show_progress=False)  # fmt: skip
    statuses = [record["status"] for record in result.predictions]
    assert result.invalid == statuses.count("invalid") and result.undecodable == statuses.count("undecodable")
    assert result.invalid + result.undecodable + statuses.count("ok") == len(data)
    for record in result.predictions:
        if record["status"] == "invalid":
            assert record["error"].startswith("llasa: generated id ") and "is not a speech code" in record["error"]
        if record["status"] == "undecodable":
            assert record["error"] == "RuntimeError: odd frame count" or "no complete codec frame" in record["error"]
        if record["status"] != "ok":  # scored as an empty transcript: every reference word deleted
            assert record["deletions"] == len(record["target"].split()) and record["prediction"] == ""
    assert result.unended == sum(not record["ended"] for record in result.predictions)
    assert result.unended >= 1  # 6 new tokens: the random model rarely ends


def spell_codes(decoded):
    """An "ASR" that writes the codes out, so transcripts show exactly what was generated."""
    return [" ".join(f"c{c}" for c in codes.tolist()) for codes in decoded]


def test_sampling_is_seeded_per_utterance_not_per_batch():
    bundle = build_llama(n_speech=48)
    adapter = LlasaAdapter(bundle.tokenizer, num_codes=48)
    data = [{"id": f"u{i}", "text": text} for i, text in enumerate(SENTENCES)]
    runs = [
        evaluate_tts_wer(
            bundle.model,
            data,
            adapter=adapter,
            decode=word_decode,
            asr=spell_codes,
            max_new_tokens=8,
            do_sample=True,
            seed=3,
            top_k=20,
            batch_size=size,
            show_progress=False,
        )  # fmt: skip
        for size in (1, 3)
    ]
    tokens = [[r["generated_tokens"] for r in run.predictions] for run in runs]
    assert runs[0].predictions == runs[1].predictions and tokens[0] == tokens[1]
    assert runs[0].settings["decoding"] == "sampled" and runs[0].settings["seed"] == 3
    assert runs[0].settings["top_k"] == 20
    other = evaluate_tts_wer(bundle.model, data, adapter=adapter, decode=word_decode, asr=spell_codes,
                             max_new_tokens=8, do_sample=True, seed=4, top_k=20, show_progress=False)  # fmt: skip
    assert [r["prediction"] for r in other.predictions] != [r["prediction"] for r in runs[0].predictions]


def test_oracle_needs_its_codes_column():
    adapter = UnitAdapter(llasa_tokenizer(48), 48)
    with pytest.raises(ValueError, match="has no column 'codes'"):
        evaluate_tts_wer(OracleSpeechModel(), [{"text": "hello"}], adapter=adapter, decode=word_decode,
                         asr=word_asr, show_progress=False)  # fmt: skip
