"""The oracle TTS WER of the reference codec equals its resynthesis WER (real codec, real Whisper tiny.en, committed
codes), identically under 1 and 2 processes, and `hf-token-merge evaluate --model reference-codec-oracle` runs it.

The bound does not depend on this codec's training: any codec that passes its gate (resynthesis WER within a few
points of Whisper on the original audio, about 0.15 on this split) stays far below WER_BOUND on these utterances.
"""

from __future__ import annotations

import json

import pytest

from hf_token_merge.cli.main import main
from hf_token_merge.evaluation.text import normalize_transcript
from hf_token_merge.evaluation.tts.evaluate import whisper_asr
from hf_token_merge.evaluation.tts.reference_codec import (
    load_oracle_data,
    resynthesis_transcripts,
    score,
    windows_of,
)
from hf_token_merge.reference.speech_codec import load_reference_speech_codec
from tests.evaluation.dist_eval import CODEC_BATCH, CODEC_IDS, launch_two_processes, run_codec_oracle

WER_BOUND = 0.5  # 40 reference words: at most 20 errors


@pytest.fixture(scope="module")
def runs(whisper_tiny_en, reference_cache):
    """Resynthesis (the recipe's implementation) and the oracle through `evaluate_tts_wer`, on the same utterances."""
    asr = whisper_asr(*whisper_tiny_en, features=True)
    codec = load_reference_speech_codec()
    data = load_oracle_data("test", ids=CODEC_IDS)
    transcripts = resynthesis_transcripts(codec, data["codes"], asr, batch_size=CODEC_BATCH)
    return data, transcripts, score(data["text"], transcripts, asr), run_codec_oracle(reference_cache, asr=asr)


def test_oracle_tts_wer_is_the_resynthesis_wer(runs):
    data, transcripts, resynthesis, oracle = runs
    metrics = oracle["codec_oracle"]
    counts = (metrics["hits"], metrics["substitutions"], metrics["deletions"], metrics["insertions"])
    assert counts == (resynthesis.hits, resynthesis.substitutions, resynthesis.deletions, resynthesis.insertions)
    assert [record["prediction"] for record in oracle["codec_oracle_predictions"]] == transcripts
    words = sum(len(normalize_transcript(text).split()) for text in data["text"])
    assert metrics["target_words"] == resynthesis.target_words == words == 40
    assert metrics["wer"] == resynthesis.wer <= WER_BOUND, list(zip(data["text"], transcripts, strict=True))
    assert (metrics["invalid_generations"], metrics["undecodable_generations"]) == (0, 0)
    assert metrics["generations_without_end_token"] == 0
    assert metrics["generated_seconds"] == pytest.approx(sum(len(codes) for codes in data["codes"]) / 50)
    assert [record["id"] for record in oracle["codec_oracle_predictions"]] == CODEC_IDS


def test_one_and_two_processes_give_identical_oracle_metrics(runs, reference_cache, tmp_path):
    out = tmp_path / "two.json"
    done = launch_two_processes(out, reference_cache, "codec-oracle")
    assert done.returncode == 0, done.stderr[-3000:]
    two, one = json.loads(out.read_text()), json.loads(json.dumps(runs[3]))
    assert (two["num_processes"], one["num_processes"]) == (2, 1)
    assert two["codec_oracle"] == one["codec_oracle"]
    assert two["codec_oracle_predictions"] == one["codec_oracle_predictions"]


def test_windows_pack_consecutive_utterances():
    assert windows_of([10, 10, 10, 5, 30], 28.0, 0.5) == [[0, 1], [2, 3], [4]]
    assert windows_of([1, 1, 1], 0, 0.5) == [[0], [1], [2]]


def test_cli_reference_codec_oracle(reference_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN_MERGE_CACHE", str(reference_cache))  # this session's Whisper tiny.en
    out = tmp_path / "oracle"
    argv = ["evaluate", "--model", "reference-codec-oracle", "--task", "tts-wer", "--split", "test", "--limit", "2"]
    assert main([*argv, "--output-dir", str(out), "--no-progress", "--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "tts_wer.json").read_text())
    metrics, data = report["metrics"], load_oracle_data("test", 2)
    words = sum(len(normalize_transcript(text).split()) for text in data["text"])
    assert metrics["target_words"] == words and metrics["utterances"] == 2
    assert metrics["generated_seconds"] == pytest.approx(sum(len(codes) for codes in data["codes"]) / 50)
    assert (metrics["invalid_generations"], metrics["generations_without_end_token"]) == (0, 0)
    assert report["settings"]["decoding"] == "oracle" and report["settings"]["spelling_map"] is True
    assert report["timing"]["rtf_total"] > 0
    assert printed.startswith(f"TTS WER {metrics['wer']:.4f} (")
    assert f"/ {words} words, 2 utterances; 0 invalid" in printed
    assert "without end token;" in printed and "s generated, RTF " in printed
    records = [json.loads(line) for line in (out / "tts_wer_predictions.jsonl").read_text().splitlines()]
    assert [record["id"] for record in records] == data["id"]
    assert main([*argv[:3], "--task", "wer", "--output-dir", str(out)]) == 2
    assert "Fix: use --task tts-wer" in capsys.readouterr().err
    assert main([*argv[:3], "--dataset", "librivox", "--output-dir", str(out)]) == 2
    assert "reads ground-truth codes, not audio" in capsys.readouterr().err
    assert main(["evaluate", "--model", "whisper-tiny-en", "--output-dir", str(out)]) == 2
    assert "Fix: pass one of --dataset, --manifest or --audiofolder" in capsys.readouterr().err
