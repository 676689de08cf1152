"""Reader for CTranslate2's `model.bin` (binary format version 6), written from the format itself.

`ctranslate2` can write this format and run it, but it cannot hand the weights back. The layout, all
little-endian, as `ModelSpec._serialize` writes it:

    u32 binary_version (6)
    str spec_name                      e.g. "WhisperSpec"
    u32 spec_revision
    u32 num_variables
    num_variables times:
        str name                       e.g. "encoder/layer_0/self_attention/linear_0/weight"
        u8  ndim, then ndim times u32  the shape (ndim 0 is a scalar)
        u8  dtype id                   0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16
        u32 num_bytes, then the raw row-major bytes
    u32 num_aliases
    num_aliases times: str alias, str target name

where `str` is a u16 length that counts a trailing NUL, then the UTF-8 bytes and the NUL. Variables are
written in sorted name order; an alias names a variable that is stored once under another name (e.g. a
projection tied to an embedding).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from hf_token_merge.errors import TokenMergeError

SUPPORTED_BINARY_VERSION = 6

# Order of CTranslate2's DataType enum (include/ctranslate2/types.h).
_DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)


@dataclass
class CTranslate2Model:
    """The content of one `model.bin`.

    Attributes:
        spec_name: Name of the model specification, e.g. `"WhisperSpec"`.
        spec_revision: Revision of that specification's variable layout.
        variables: Tensors by variable name, in file order; scalars have shape `()`.
        aliases: Alias name -> name of the stored variable it shares.
    """

    spec_name: str
    spec_revision: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str]


class _Cursor:
    """Sequential little-endian reads over a byte buffer, with bounds checks."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.path = path
        self.offset = 0

    def take(self, num_bytes: int) -> bytes:
        end = self.offset + num_bytes
        if end > len(self.data):
            raise TokenMergeError(
                f"{self.path} is truncated: wanted {num_bytes} bytes at offset {self.offset}, "
                f"file has {len(self.data)}. Reinstall the package that ships it."
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))
        return value

    def string(self) -> str:
        length = self.unpack("H")
        return self.take(length)[:-1].decode("utf-8")  # drop the trailing NUL


def read_ctranslate2_model(path: str | os.PathLike[str]) -> CTranslate2Model:
    """Read every variable and alias of a CTranslate2 `model.bin`.

    Args:
        path: The `model.bin` file (or the model folder that holds it).

    Returns:
        The parsed model; tensors own their memory and keep the stored dtype.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    cursor = _Cursor(path.read_bytes(), path)

    version = cursor.unpack("I")
    if version != SUPPORTED_BINARY_VERSION:
        raise TokenMergeError(
            f"{path} uses CTranslate2 binary format version {version}; this reader supports only "
            f"version {SUPPORTED_BINARY_VERSION}. Re-convert the model with a recent ctranslate2."
        )
    spec_name = cursor.string()
    spec_revision = cursor.unpack("I")

    variables: dict[str, torch.Tensor] = {}
    for _ in range(cursor.unpack("I")):
        name = cursor.string()
        shape = [cursor.unpack("I") for _ in range(cursor.unpack("B"))]
        dtype_id = cursor.unpack("B")
        if dtype_id >= len(_DTYPES):
            raise TokenMergeError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}.")
        dtype = _DTYPES[dtype_id]
        raw = cursor.take(cursor.unpack("I"))
        # bytearray gives torch a writable, freshly allocated (so aligned) buffer to own.
        tensor = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        variables[name] = tensor.reshape(shape)

    aliases = {}
    for _ in range(cursor.unpack("I")):
        alias = cursor.string()
        aliases[alias] = cursor.string()

    if cursor.offset != len(cursor.data):
        raise TokenMergeError(f"{path} has {len(cursor.data) - cursor.offset} unexpected trailing bytes.")
    return CTranslate2Model(spec_name, spec_revision, variables, aliases)
