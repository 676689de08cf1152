"""Real Whisper tiny.en on the real LibriVox utterances: WER bound, a before/after comparison with a real
merge, and identical metrics from 1 and 2 processes (`accelerate launch`, CPU, gloo)."""

from __future__ import annotations

import json

import pytest

from hf_token_merge import TokenMergeConfig, apply_token_merge
from hf_token_merge.evaluation import compare_before_after
from hf_token_merge.evaluation.compare import TABLE_COLUMNS
from hf_token_merge.reference.whisper import NUM_TIMESTAMP_TOKENS
from tests.evaluation.dist_eval import WHISPER_BATCH, launch_two_processes, run_llama, run_tts_and_kl

# Measured (transformers 5.24, torch 2.13 CPU, float32, greedy, 12 utterances): WER 0.098
# (25 sub + 8 del + 2 ins / 357 words). The bound leaves room for BLAS rounding differences.
WER_BOUND = 0.14
# Timestamp tokens <|0.02|> .. <|30.00|> (ids 50364..51863): added special tokens that LibriVox
# transcription in no-timestamps mode never uses; 1500 rows merged into 150.
TIMESTAMPS = (50364, 51864)
CLUSTERS = 150


@pytest.fixture(scope="module")
def comparison(whisper_tiny_en, librivox, reference_cache, tmp_path_factory):
    from hf_token_merge.reference.whisper import load_whisper_tiny_en

    original, processor = whisper_tiny_en
    merged, _ = load_whisper_tiny_en(cache_dir=reference_cache)
    config = TokenMergeConfig(token_id_range=TIMESTAMPS, allow_special_tokens=True, n_clusters=CLUSTERS)
    apply_token_merge(merged, config, show_progress=False)
    output = tmp_path_factory.mktemp("comparison")
    result = compare_before_after(
        original,
        merged,
        librivox,
        processor=processor,
        batch_size=WHISPER_BATCH,
        output_dir=output,
        show_progress=False,
    )
    return result, output


def test_whisper_tiny_en_wer_on_librivox(comparison):
    result, output = comparison
    before = result.before
    assert before.wer < WER_BOUND, [(p["target"], p["prediction"]) for p in before.predictions]
    counts = before.counts
    assert counts.target_words == 357 and counts.hits + counts.substitutions + counts.deletions == 357
    assert before.audio_seconds == pytest.approx(157.83, abs=0.01) and before.rtfx > 0
    lines = (output / "before_wer_predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [p["id"] for p in before.predictions]
    assert len(lines) == 12


def test_merging_unused_timestamp_tokens_keeps_wer_and_shrinks_the_model(comparison):
    result, output = comparison
    assert result.after.metrics() == result.before.metrics()
    assert result.row("wer")["absolute_change"] == 0
    rows = result.row("embedding rows")
    assert rows["before"] - rows["after"] == NUM_TIMESTAMP_TOKENS - 1 - CLUSTERS
    for metric in ("parameters", "bytes in memory", "bytes on disk (safetensors)"):
        assert result.row(metric)["after"] < result.row(metric)["before"], metric
    table = (output / "comparison.md").read_text()
    assert table.splitlines()[0] == "| " + " | ".join(TABLE_COLUMNS) + " |"
    for metric in ("wer", "substitutions", "RTFx", "parameters", "bytes on disk"):
        assert f"| {metric}" in table
    # identical transcripts: the paired interval of the WER change is exactly 0, and the provenance follows the table
    assert (result.difference.ci_low, result.difference.ci_high, result.difference.units) == (0.0, 0.0, 357)
    assert "; 95 % CI +0 to +0 |" in table
    assert "\n- size: 12 examples, 357 words\n" in table
    saved = json.loads((output / "comparison.json").read_text())
    assert [row["metric"] for row in saved["rows"]] == [row["metric"] for row in result.rows]


def test_one_and_two_processes_give_identical_metrics(comparison, reference_cache, tmp_path):
    """12 utterances in batches of 5 (5, 5, 2): the two processes get 10 and 2; 7 Llama sequences: 4 and 3."""
    out = tmp_path / "two.json"
    done = launch_two_processes(out, reference_cache)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["num_processes"] == 2

    one = json.loads(json.dumps({"wer": comparison[0].before.metrics(), "predictions": comparison[0].before.predictions,
                                 **run_llama(), **run_tts_and_kl()}))  # fmt: skip
    assert one["num_processes"] == 1
    assert two["wer"] == one["wer"]
    assert two["predictions"] == one["predictions"]
    keys = ("perplexity", "perplexity_sequences", "llm_wer", "llm_predictions", "tts_oracle", "tts_oracle_predictions",
            "tts_sampled", "tts_sampled_predictions", "kl", "kl_sequences")  # fmt: skip
    for key in keys:
        assert two[key] == one[key], key
