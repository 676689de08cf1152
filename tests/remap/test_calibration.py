"""Calibration counts from (weighted) text files."""

from __future__ import annotations

import pytest
import torch

from hf_token_merge import calibration_counts, count_text_tokens, read_calibration_text
from tests.models import build_tokenizer


def _tokenizer():
    # ids: <unk>=0, the=1, cat=2, sat=3, dog=4, then <s>=5, </s>=6, <pad>=7
    return build_tokenizer(
        ["<unk>", "the", "cat", "sat", "dog"], ["<s>", "</s>", "<pad>"], [], [], bos="<s>", eos="</s>", pad="<pad>"
    )


def test_count_text_tokens_weights_every_token_of_a_line():
    counts = count_text_tokens(_tokenizer(), ["the cat sat", "the dog", "dog"], 8, weights=[1.0, 2.5, 0.5])
    assert counts.dtype == torch.float64 and counts.shape == (8,)
    assert counts.tolist() == [0.0, 3.5, 1.0, 1.0, 3.0, 0.0, 0.0, 0.0]
    unweighted = count_text_tokens(_tokenizer(), ["the cat sat", "the dog"], 8, batch_size=1)
    assert unweighted.tolist() == [0.0, 2.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_count_text_tokens_errors():
    with pytest.raises(ValueError, match="one weight per text"):
        count_text_tokens(_tokenizer(), ["the"], 8, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match=">= 0"):
        count_text_tokens(_tokenizer(), ["the"], 8, weights=[-1.0])
    with pytest.raises(ValueError, match="tokenizer of this model"):
        count_text_tokens(_tokenizer(), ["dog"], 4)


def test_read_calibration_text_keeps_leading_spaces_and_weights(tmp_path):
    path = tmp_path / "calibration.txt"
    path.write_text(" the cat\n\n dog\t0.25\nthe\tcat\t3\n", encoding="utf-8")
    texts, weights = read_calibration_text(path)
    assert texts == [" the cat", " dog", "the\tcat"]
    assert weights == [1.0, 0.25, 3.0]
    counts = calibration_counts(_tokenizer(), path, 8)
    assert counts.tolist() == [0.0, 4.0, 4.0, 0.0, 0.25, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("content", "message"),
    [("the\tlots\n", "is not a weight"), ("the\t-2\n", "finite number >= 0"), ("\n \n", "holds no text")],
)
def test_read_calibration_text_errors(tmp_path, content, message):
    path = tmp_path / "calibration.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_calibration_text(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_calibration_text(tmp_path / "missing.txt")
