"""The shared scoring core: any front end's transcripts are normalised, aligned, counted, gathered and reported."""

from __future__ import annotations

import json

import pytest

from hf_token_merge.evaluation.runner import get_accelerator
from hf_token_merge.evaluation.scoring import Transcript, score_transcripts, transcript_record

SENTENCES = ["The cat sat.", "Two dogs ran away", "Hello world"]
HEARD = ["the cat sat", "2 dogs ran", "hello there world"]


class SpokenSentences:
    """A stand-in for a TTS front end: sentence -> (pretend) speech -> transcript, with generated seconds."""

    def __init__(self, seconds: list[float | None]):
        self.seconds = seconds
        self.calls: list[list[int]] = []

    def __call__(self, indices: list[int]) -> list[Transcript]:
        self.calls.append(indices)
        return [
            Transcript(i, f"s{i}", SENTENCES[i], HEARD[i], {"duration": self.seconds[i], "invalid_codes": 0})
            for i in indices
        ]


def test_a_new_front_end_is_scored_without_any_other_code(tmp_path):
    front_end = SpokenSentences([1.5, 2.0, 0.5])
    result = score_transcripts(
        front_end, 3, accelerator=get_accelerator(device="cpu"), batch_size=2, output_dir=tmp_path, show_progress=False
    )
    assert front_end.calls == [[0, 1], [2]]  # batches are fixed before sharding
    # normalised: "two" == "2"; utterance 1 drops "away" (1 deletion), utterance 2 adds "there" (1 insertion)
    counts = result.counts
    assert (counts.hits, counts.substitutions, counts.deletions, counts.insertions) == (8, 0, 1, 1)
    assert result.wer == pytest.approx(2 / 9)
    assert result.audio_seconds == 4.0 and result.num_utterances == 3
    assert [p["id"] for p in result.predictions] == ["s0", "s1", "s2"]
    assert list(result.predictions[1])[-2:] == ["duration", "invalid_codes"]  # extras follow the counts
    lines = (tmp_path / "wer_predictions.jsonl").read_text().splitlines()
    assert json.loads(lines[2])["prediction_normalized"] == "hello there world"
    assert json.loads((tmp_path / "wer.json").read_text())["metrics"]["deletions"] == 1


def test_missing_durations_and_a_broken_front_end():
    accelerator = get_accelerator(device="cpu")
    result = score_transcripts(SpokenSentences([1.0, None, 1.0]), 3, accelerator=accelerator, show_progress=False)
    assert result.audio_seconds is None and result.rtfx is None
    record = transcript_record(Transcript(0, "a", "Two.", "2"), normalize=False)
    assert (record["target_normalized"], record["substitutions"]) == ("Two.", 1)

    def reordered(indices):
        return [Transcript(i, str(i), "a", "a") for i in reversed(indices)]

    with pytest.raises(RuntimeError, match="one transcript per index, in order"):
        score_transcripts(reordered, 2, accelerator=accelerator, show_progress=False)
