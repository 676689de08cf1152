"""Streaming compress: merge a safetensors checkpoint on disk without loading the model.

Only the input embedding and the LM head change in a merge, and the plan needs nothing but their selected rows. So
the checkpoint is read tensor by tensor: the model is built on the meta device (no storage) for its module names,
tied weights and expected shapes; the planner reads the selected rows of the two tables from the files
(`EmbeddingRows`); the merged tables are built block by block from rows read on demand; every other tensor is copied
byte for byte, one chunk at a time, into a shard of the same grouping. Peak memory is the merged tables, the planner's
selected block and one block of rows, never the model.

The folder written is the one `save_pretrained` writes for the merged model (config with its `quantization_config`,
generation config, safetensors with the merged tables and index maps, tokenizer, merge config, plan); it loads with
`from_pretrained` after `import hf_token_merge`, with the same tensors as the in-memory path for the same plan.

Reads and writes go through the safetensors format directly (an 8-byte header length, a JSON header, raw bytes):
copying a tensor is then a bounded byte copy with no decode and no mapping, so the process's resident memory never
holds a shard, and a truncated or damaged shard is named before anything is written.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hf_token_merge.atomic import atomic_directory, check_target
from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.remap.apply import MergeResult, merged_embedding, merged_head, merged_rows
from hf_token_merge.remap.locate import EmbeddingPair, locate_embeddings
from hf_token_merge.remap.plan import EmbeddingRows, MergePlan, check_plan_rows, plan_from_rows
from hf_token_merge.remap.record import TokenMergeQuantizationConfig
from hf_token_merge.serialization.export import plain_parts

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_COPY_CHUNK = 64 << 20  # bytes per read when copying a tensor: memory stays bounded whatever the tensor's size
_MAX_HEADER = 100 << 20


@dataclass(frozen=True)
class StoredTensor:
    """One tensor of a safetensors file, located by its header.

    Attributes:
        name: The tensor's name.
        path: The file holding it.
        dtype: Its safetensors dtype ("BF16", "F32", ...).
        shape: Its shape.
        start: Absolute file offset of its first byte.
        end: Absolute file offset past its last byte.
    """

    name: str
    path: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        """Bytes of its data."""
        return self.end - self.start

    @property
    def numel(self) -> int:
        """Number of elements."""
        count = 1
        for size in self.shape:
            count *= size
        return count


def _damaged(path: str, what: str) -> TokenMergeError:
    return TokenMergeError(
        f"The safetensors file {path} is damaged: {what}. Fix: download or copy the checkpoint again (compare the "
        "file sizes with the source)."
    )


def read_safetensors_header(path: str | os.PathLike) -> dict[str, StoredTensor]:
    """The tensors of one safetensors file, from its header, after checking the file holds all their bytes.

    Args:
        path: The file.

    Returns:
        Name -> `StoredTensor`, in header order.

    Raises:
        FileNotFoundError: When the file does not exist.
        TokenMergeError: When the header is unreadable, a tensor's byte range does not match its shape and dtype,
            or the file is shorter than its header says (truncated).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The checkpoint file {path} does not exist. Fix: download or copy it again.")
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise _damaged(path, f"it has {size} bytes, fewer than the 8 of a safetensors header length")
        length = struct.unpack("<Q", head)[0]
        if length > min(_MAX_HEADER, size - 8):
            raise _damaged(path, f"its header claims {length} bytes but the file has {size}")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise _damaged(path, f"its header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise _damaged(path, "its header is not a JSON object")
    base = 8 + length
    tensors: dict[str, StoredTensor] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], tuple(int(s) for s in entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise _damaged(path, f"the header entry of {name!r} lacks dtype, shape or data_offsets") from None
        if dtype not in _DTYPES:
            raise TokenMergeError(
                f"{name!r} in {path} has dtype {dtype}, which the streaming compress does not copy. Fix: merge in "
                "memory (hf-token-merge compress without --streaming)."
            )
        tensor = StoredTensor(name, path, dtype, shape, base + int(start), base + int(end))
        if tensor.nbytes != tensor.numel * _DTYPES[dtype].itemsize:
            raise _damaged(
                path,
                f"{name!r} spans {tensor.nbytes} bytes, but shape {list(shape)} of {dtype} needs "
                f"{tensor.numel * _DTYPES[dtype].itemsize}",
            )
        tensors[name] = tensor
    needed = max((t.end for t in tensors.values()), default=base)
    if size < needed:
        raise _damaged(path, f"it is truncated: its header describes {needed} bytes but the file has {size}")
    return tensors


@dataclass
class StoredCheckpoint:
    """A safetensors checkpoint folder (one file or shards with an index), read tensor by tensor.

    Attributes:
        folder: The folder.
        shards: File names, in order (one name for a single-file checkpoint).
        tensors: Every tensor by name.
    """

    folder: Path
    shards: list[str]
    tensors: dict[str, StoredTensor]

    @classmethod
    def open(cls, folder: str | os.PathLike) -> StoredCheckpoint:
        """Read and check the headers of every file of the checkpoint in `folder`.

        Args:
            folder: A folder written by `save_pretrained` (safetensors, sharded or not).

        Returns:
            The checkpoint.

        Raises:
            FileNotFoundError: For a missing folder, or a shard the index names that is missing.
            TokenMergeError: For a folder without safetensors weights, a damaged index, a shard that lacks a tensor
                the index puts there, or a damaged or truncated shard.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"No checkpoint folder {folder}. Fix: pass a folder written by save_pretrained.")
        index_path = folder / INDEX_FILE
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
                if not isinstance(weight_map, dict):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                raise TokenMergeError(
                    f"{index_path} is not a safetensors index (a JSON object with a 'weight_map'). Fix: copy the "
                    "checkpoint again."
                ) from None
            shards = sorted(set(weight_map.values()))
            tensors: dict[str, StoredTensor] = {}
            for shard in shards:
                if Path(shard).name != shard:
                    raise TokenMergeError(f"{index_path} names the shard {shard!r} outside the folder; refused.")
                try:
                    found = read_safetensors_header(folder / shard)
                except FileNotFoundError:
                    raise FileNotFoundError(
                        f"The checkpoint shard {folder / shard} that {INDEX_FILE} lists is missing. Fix: download or "
                        "copy every shard of the checkpoint."
                    ) from None
                tensors.update(found)
            lacking = sorted(
                name
                for name, shard in weight_map.items()
                if tensors.get(name) is None or Path(tensors[name].path).name != shard
            )
            if lacking:
                raise TokenMergeError(
                    f"{INDEX_FILE} puts {lacking[:3]} ({len(lacking)} in all) in shards that do not hold them. "
                    "Fix: copy the checkpoint again; its index and shards come from different saves."
                )
            return cls(folder, shards, {name: tensors[name] for name in weight_map})
        single = folder / SINGLE_FILE
        if single.is_file():
            return cls(folder, [SINGLE_FILE], read_safetensors_header(single))
        raise TokenMergeError(
            f"{folder} holds no {SINGLE_FILE} or {INDEX_FILE}; the streaming compress reads safetensors checkpoints "
            "only. Fix: merge in memory (without --streaming), or re-save the model with save_pretrained."
        )

    @property
    def nbytes(self) -> int:
        """Bytes of all tensors."""
        return sum(t.nbytes for t in self.tensors.values())

    def read(self, name: str) -> torch.Tensor:
        """A whole tensor, read into a new CPU tensor."""
        stored = self.tensors[name]
        return _from_bytes(stored, _pread(stored, 0, stored.nbytes))

    def read_rows(self, name: str, ids: torch.Tensor | None) -> torch.Tensor:
        """Rows `ids` (any order) of a tensor, read with plain file reads into a new CPU tensor.

        Args:
            name: The tensor.
            ids: Row indices; None reads every row.

        Returns:
            `(len(ids), *shape[1:])` rows, in the order of `ids`.
        """
        stored = self.tensors[name]
        row_bytes = stored.nbytes // stored.shape[0] if stored.shape[0] else 0
        if ids is None:
            return self.read(name)
        ids = ids.flatten().long().cpu()
        if ids.numel() == 0:
            return torch.empty((0, *stored.shape[1:]), dtype=_DTYPES[stored.dtype])
        if int(ids.min()) < 0 or int(ids.max()) >= stored.shape[0]:
            raise IndexError(f"row ids {int(ids.min())}..{int(ids.max())} outside {name} of {stored.shape[0]} rows")
        unique, inverse = torch.unique(ids, sorted=True, return_inverse=True)
        first, last = int(unique[0]), int(unique[-1])
        if last - first + 1 <= 2 * unique.numel() + 256:  # nearly contiguous: one read of the span is cheapest
            count = last - first + 1
            span = _from_bytes(stored, _pread(stored, first * row_bytes, count * row_bytes), count)
            if count == ids.numel() and bool((ids[1:] > ids[:-1]).all()):  # exactly the span, in order: no copy
                return span
            return span[ids - first]
        breaks = (unique[1:] - unique[:-1] != 1).nonzero().flatten() + 1
        starts = torch.cat([torch.zeros(1, dtype=torch.long), breaks]).tolist()
        ends = [*starts[1:], unique.numel()]
        parts = [
            _from_bytes(stored, _pread(stored, int(unique[a]) * row_bytes, (b - a) * row_bytes), b - a)
            for a, b in zip(starts, ends, strict=True)
        ]
        return torch.cat(parts)[inverse]

    def reader(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """`ids -> rows` of a tensor (for `EmbeddingRows` and `merged_rows`)."""
        return lambda ids: self.read_rows(name, ids)


def _pread(stored: StoredTensor, offset: int, length: int) -> bytearray:
    buffer = bytearray(length)
    with open(stored.path, "rb") as handle:
        handle.seek(stored.start + offset)
        view = memoryview(buffer)
        done = 0
        while done < length:
            got = handle.readinto(view[done:])
            if not got:
                raise _damaged(stored.path, f"{stored.name!r} ends early (the file was truncated while reading)")
            done += got
    return buffer


def _from_bytes(stored: StoredTensor, buffer: bytearray, rows: int | None = None) -> torch.Tensor:
    dtype = _DTYPES[stored.dtype]
    shape = stored.shape if rows is None else (rows, *stored.shape[1:])
    if not buffer:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(buffer, dtype=dtype).view(shape)


def write_safetensors(
    path: str | os.PathLike, entries: list[tuple[str, StoredTensor | torch.Tensor]], metadata: dict[str, str]
) -> int:
    """Write a safetensors file from stored tensors (copied byte for byte, chunk by chunk) and in-memory tensors.

    Args:
        path: The file to write.
        entries: `(name, tensor)` pairs, in file order.
        metadata: The header's `__metadata__` (e.g. `{"format": "pt"}`).

    Returns:
        Bytes of tensor data written.
    """
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, tensor in entries:
        if isinstance(tensor, StoredTensor):
            dtype, shape, size = tensor.dtype, list(tensor.shape), tensor.nbytes
        else:
            dtype, shape, size = _NAMES[tensor.dtype], list(tensor.shape), tensor.numel() * tensor.element_size()
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the format aligns the data on 8 bytes
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for _, tensor in entries:
            if isinstance(tensor, StoredTensor):
                for done in range(0, tensor.nbytes, _COPY_CHUNK):
                    out.write(_pread(tensor, done, min(_COPY_CHUNK, tensor.nbytes - done)))
            elif tensor.numel():
                out.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return offset


def available_memory() -> int:
    """Bytes of memory available to a new allocation: psutil's `available`, else MemAvailable of /proc/meminfo.

    Returns:
        The bytes, or 0 when neither source exists (then nothing is assumed to fit).
    """
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def needs_streaming(folder: str | os.PathLike, headroom: float = 1.2) -> bool:
    """Whether merging the checkpoint in `folder` in memory would not fit in the memory available now.

    Args:
        folder: A safetensors checkpoint folder.
        headroom: Factor over the weights' bytes an in-memory merge needs (the merged tables, the planner's block).

    Returns:
        True when the weights times `headroom` exceed `available_memory()`.
    """
    return StoredCheckpoint.open(folder).nbytes * headroom > available_memory()


def _skeleton(config: Any) -> nn.Module:
    """The model of `config` on the meta device: module names, tied weights and shapes, no storage."""
    import transformers

    architectures = getattr(config, "architectures", None) or []
    model_class = next((getattr(transformers, name) for name in architectures if hasattr(transformers, name)), None)
    with torch.device("meta"):
        if model_class is None:
            return transformers.AutoModelForCausalLM.from_config(config)
        return model_class(config)


def _aliases(model: nn.Module) -> dict[str, list[str]]:
    """Name -> every name of the same tensor (tied weights), over parameters and persistent buffers."""
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    return {name: names for names in groups.values() for name in names}


@dataclass
class _Source:
    """A checkpoint ready to merge: its files, config, skeleton, located tables and the names they are stored at."""

    checkpoint: StoredCheckpoint
    config: Any
    generation_config: Any
    pair: EmbeddingPair
    input_key: str
    output_key: str | None
    bias_key: str | None
    expected: dict[str, tuple[int, ...]]
    parameter_names: set[str]


def _open_source(folder: str | os.PathLike, merge_config: TokenMergeConfig) -> _Source:
    """Open and check a checkpoint against its config's model before anything is read or written."""
    from transformers import AutoConfig, GenerationConfig

    checkpoint = StoredCheckpoint.open(folder)
    config = AutoConfig.from_pretrained(folder)
    generation_config = None
    if (Path(folder) / "generation_config.json").is_file():
        generation_config = GenerationConfig.from_pretrained(folder)
    skeleton = _skeleton(config)
    pair = locate_embeddings(skeleton, merge_config, on_meta=True)
    aliases = _aliases(skeleton)
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    for name, stored in checkpoint.tensors.items():
        if name in expected and stored.shape != expected[name]:
            raise TokenMergeError(
                f"{name!r} in {stored.path} has shape {list(stored.shape)}, but the checkpoint's config.json "
                f"describes {list(expected[name])}. The config and the weights come from different models. Fix: "
                "copy the checkpoint again, or correct config.json."
            )
    missing = sorted(
        name for name in expected if not any(alias in checkpoint.tensors for alias in aliases.get(name, [name]))
    )
    if missing:
        raise TokenMergeError(
            f"The checkpoint in {folder} lacks {missing[:3]} ({len(missing)} tensors in all) that its config's "
            f"{type(skeleton).__name__} needs. Fix: copy every shard of the checkpoint again."
        )

    def stored_name(name: str) -> str:
        return next(alias for alias in aliases.get(name, [name]) if alias in checkpoint.tensors)

    head = pair.output_module
    return _Source(
        checkpoint=checkpoint,
        config=config,
        generation_config=generation_config,
        pair=pair,
        input_key=stored_name(f"{pair.input_name}.weight"),
        output_key=stored_name(f"{pair.output_name}.weight") if head is not None else None,
        bias_key=stored_name(f"{pair.output_name}.bias") if head is not None and head.bias is not None else None,
        expected=expected,
        parameter_names={name for name, _ in skeleton.named_parameters(remove_duplicate=False)},
    )


def _rows_of(source: _Source) -> EmbeddingRows:
    pair, checkpoint = source.pair, source.checkpoint
    return EmbeddingRows(
        input_name=pair.input_name,
        output_name=pair.output_name,
        vocab_size=checkpoint.tensors[source.input_key].shape[0],
        tied=pair.tied,
        read_input=checkpoint.reader(source.input_key),
        read_output=checkpoint.reader(source.output_key) if source.output_key is not None else None,
    )


def _merged_tensors(source: _Source, plan: MergePlan) -> tuple[dict[str, torch.Tensor], TokenMergeQuantizationConfig]:
    """The merged modules' tensors, by state-dict name, and the record for config.json."""
    checkpoint, pair = source.checkpoint, source.pair
    stored = checkpoint.tensors[source.input_key]
    dtype = _DTYPES[stored.dtype]
    with torch.no_grad():
        table = merged_rows(checkpoint.reader(source.input_key), plan, dtype=dtype, row_shape=stored.shape[1:])
        embedding = merged_embedding(plan, table, pair.input_module.padding_idx)
        tensors = dict(embedding.state_dict(prefix=f"{pair.input_name}."))
        head = None
        if plan.config.lm_head != "keep" and pair.output_module is not None:
            source_ids = plan.head_source_ids()
            if pair.tied:
                weight = embedding.weight
            else:
                head_stored = checkpoint.tensors[source.output_key]
                weight = merged_rows(
                    checkpoint.reader(source.output_key),
                    plan,
                    dtype=_DTYPES[head_stored.dtype],
                    row_shape=head_stored.shape[1:],
                    source_ids=source_ids,
                )
            bias = None
            if source.bias_key is not None:
                bias_stored = checkpoint.tensors[source.bias_key]
                bias = merged_rows(
                    checkpoint.reader(source.bias_key),
                    plan,
                    dtype=_DTYPES[bias_stored.dtype],
                    row_shape=(),
                    source_ids=source_ids,
                )
            head = merged_head(plan, weight, bias)
            head_tensors = head.state_dict(prefix=f"{pair.output_name}.")
            if pair.tied:  # stored once, under the embedding's name, as save_pretrained does
                head_tensors.pop(f"{pair.output_name}.weight")
            tensors.update(head_tensors)
    record = TokenMergeQuantizationConfig.from_plan(plan, pair, embedding, head)
    return tensors, record


def _shard_layout(
    source: _Source, replaced: set[str], merged: dict[str, torch.Tensor]
) -> list[list[tuple[str, StoredTensor | torch.Tensor]]]:
    """The output files' entries: the source's grouping, the merged tensors where the tables were."""
    checkpoint = source.checkpoint
    groups: dict[str, list[tuple[str, StoredTensor | torch.Tensor]]] = {shard: [] for shard in checkpoint.shards}
    for name, stored in checkpoint.tensors.items():
        # like save_pretrained: only the model's own tensors (a stale extra tensor is not written)
        if name not in replaced and name in source.expected:
            groups[Path(stored.path).name].append((name, stored))
    home = Path(checkpoint.tensors[source.input_key].path).name
    head_home = Path(checkpoint.tensors[source.output_key].path).name if source.output_key is not None else home
    for name, tensor in merged.items():
        owner = head_home if source.pair.output_name and name.startswith(f"{source.pair.output_name}.") else home
        groups[owner].append((name, tensor))
    return [entries for entries in groups.values() if entries]


def _write_shards(staging: Path, groups: list[list[tuple[str, StoredTensor | torch.Tensor]]]) -> int:
    """Write the files (one, or shards with an index); returns the tensor bytes written."""
    names = (
        [SINGLE_FILE]
        if len(groups) == 1
        else [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    )
    total = 0
    weight_map: dict[str, str] = {}
    for name, entries in zip(names, groups, strict=True):
        total += write_safetensors(staging / name, entries, {"format": "pt"})
        weight_map.update({tensor_name: name for tensor_name, _ in entries})
    if len(groups) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (staging / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return total


def _plan_for(source: _Source, config_or_plan: TokenMergeConfig | MergePlan, **planning: Any) -> MergePlan:
    """The plan: made from the stored rows, or a given plan checked against them."""
    rows = _rows_of(source)
    if not isinstance(config_or_plan, MergePlan):
        return plan_from_rows(
            rows, config_or_plan, protected_configs=(source.config, source.generation_config), **planning
        )
    plan = config_or_plan
    if plan.vocab_size != rows.vocab_size or plan.tied != rows.tied:
        raise TokenMergeError(
            f"The plan was made for a {'tied' if plan.tied else 'untied'} model of {plan.vocab_size} rows; this "
            f"checkpoint is {'tied' if rows.tied else 'untied'} with {rows.vocab_size}. Fix: plan on this checkpoint."
        )
    check_plan_rows(plan, rows)
    return plan


def plan_streaming(
    checkpoint: str | os.PathLike,
    config: TokenMergeConfig,
    *,
    tokenizer: Any = None,
    token_counts: torch.Tensor | None = None,
    show_progress: bool = True,
) -> MergePlan:
    """Plan a merge from a checkpoint's files, without loading the model (what `compress_streaming` plans).

    Args:
        checkpoint: The checkpoint folder (safetensors, sharded or single-file, with config.json).
        config: What to merge and how.
        tokenizer: Needed for regex/preset selections; its special tokens are protected.
        token_counts: Calibration counts (see `plan_token_merge`).
        show_progress: Show tqdm progress bars.

    Returns:
        The plan, equal to `plan_token_merge` on the loaded model.
    """
    source = _open_source(checkpoint, config)
    return _plan_for(source, config, tokenizer=tokenizer, token_counts=token_counts, show_progress=show_progress)


def write_streaming_checkpoint(
    checkpoint: str | os.PathLike,
    config_or_plan: TokenMergeConfig | MergePlan,
    staging: str | os.PathLike,
    *,
    tokenizer: Any = None,
    token_counts: torch.Tensor | None = None,
    show_progress: bool = True,
) -> MergeResult:
    """Merge the checkpoint in `checkpoint` into the (empty, staging) folder `staging`, tensor by tensor.

    Use `compress_streaming` for the atomic, checked write; this is its body, for callers that stage more files (a
    model card) in the same atomic folder.

    Args:
        checkpoint: The original checkpoint folder (safetensors, sharded or single-file, with config.json).
        config_or_plan: A `TokenMergeConfig` (planned here from the stored rows) or a `MergePlan` of this checkpoint.
        staging: The folder to write into.
        tokenizer: Needed for regex/preset selections; saved beside the model when given.
        token_counts: Calibration counts (see `plan_token_merge`).
        show_progress: Show tqdm progress bars while planning.

    Returns:
        The `MergeResult` (plan, parameters and bytes before and after).
    """
    merge_config = config_or_plan.config if isinstance(config_or_plan, MergePlan) else config_or_plan
    if not isinstance(merge_config, TokenMergeConfig):
        raise TypeError(f"Expected a TokenMergeConfig or MergePlan, got {type(config_or_plan).__name__}.")
    source = _open_source(checkpoint, merge_config)
    plan = _plan_for(
        source, config_or_plan, tokenizer=tokenizer, token_counts=token_counts, show_progress=show_progress
    )
    merged, record = _merged_tensors(source, plan)
    replaced = {source.input_key}
    if plan.config.lm_head != "keep":
        replaced |= {key for key in (source.output_key, source.bias_key) if key is not None}

    total = _write_shards(Path(staging), _shard_layout(source, replaced, merged))
    source.config.quantization_config = record
    source.config.save_pretrained(staging)
    if source.generation_config is not None:
        source.generation_config.save_pretrained(staging)
    if tokenizer is not None:
        tokenizer.save_pretrained(staging)
    plan.config.save_pretrained(staging)
    plan.save_pretrained(staging)

    stored = source.checkpoint.tensors
    kept = [name for name in stored if name in source.expected]
    parameters_before = sum(stored[name].numel for name in kept if name in source.parameter_names)
    removed = sum(stored[name].numel for name in replaced)
    added = sum(t.numel() for name, t in merged.items() if not name.endswith((".index_map", ".logit_offset")))
    return MergeResult(
        plan,
        parameters_before,
        parameters_before - removed + added,
        sum(stored[name].nbytes for name in kept),
        total,
    )


def compress_streaming(
    checkpoint: str | os.PathLike,
    config_or_plan: TokenMergeConfig | MergePlan,
    save_directory: str | os.PathLike,
    *,
    tokenizer: Any = None,
    token_counts: torch.Tensor | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> MergeResult:
    """Merge a safetensors checkpoint on disk into a slim checkpoint, without loading the model.

    Writes what `apply_token_merge` + `save_pretrained` (+ the tokenizer, merge config and plan) write, and the folder
    loads with `from_pretrained` after `import hf_token_merge` with the same tensors. Peak memory is the merged
    embedding and head plus the planner's selected block: the other tensors are copied chunk by chunk. The folder is
    written with `atomic_directory`: on any error (a missing or truncated shard, a tensor whose shape the config
    does not describe) nothing is left at `save_directory`.

    Args:
        checkpoint: The original checkpoint folder (safetensors, sharded or single-file, with config.json).
        config_or_plan: A `TokenMergeConfig`, or a `MergePlan` made on this checkpoint.
        save_directory: Output folder (replaced only when empty or written by hf_token_merge, or with `overwrite`).
        tokenizer: Needed for regex/preset selections; saved beside the model when given.
        token_counts: Calibration counts for `weighted_mean`/`frequency`.
        overwrite: Replace `save_directory` even when it is a non-empty folder hf_token_merge did not write.
        show_progress: Show tqdm progress bars while planning.

    Returns:
        The `MergeResult`; `bytes_before`/`bytes_after` are the tensor bytes of the two checkpoints.

    Raises:
        FileNotFoundError: For a missing folder or shard.
        TokenMergeError: For damaged or truncated files, shapes the config does not describe, a bad selection or
            plan; all before the output is swapped in.
    """
    check_target(save_directory, overwrite=overwrite)
    with atomic_directory(save_directory, overwrite=overwrite) as staging:
        return write_streaming_checkpoint(
            checkpoint,
            config_or_plan,
            staging,
            tokenizer=tokenizer,
            token_counts=token_counts,
            show_progress=show_progress,
        )


def export_plain_streaming(
    checkpoint: str | os.PathLike,
    plan: MergePlan,
    save_directory: str | os.PathLike,
    tokenizer: Any = None,
    *,
    pad_vocab_to_multiple_of: int | None = None,
    overwrite: bool = False,
) -> str:
    """`export_plain` from the original checkpoint's files, without loading the model.

    Writes what `export_plain(model, plan, ...)` writes for the model merged with `plan`: the merged tables renumbered
    to plain ids (kept rows, then zero padding), every other tensor copied chunk by chunk, the renumbered config,
    generation config and tokenizer. Peak memory is the merged tables, as in `compress_streaming`.

    Args:
        checkpoint: The original (unmerged) checkpoint folder the plan was made on.
        plan: The plan (e.g. `compress_streaming(...).plan`).
        save_directory: Output folder (see `export_plain`).
        tokenizer: The original fast tokenizer, or a processor holding one.
        pad_vocab_to_multiple_of: See `export_plain`.
        overwrite: Replace `save_directory` even when it is a non-empty folder hf_token_merge did not write.

    Returns:
        The output folder.

    Raises:
        FileNotFoundError: For a missing folder or shard.
        TokenMergeError: As `export_plain` and `compress_streaming`; all before anything is written.
    """
    source = _open_source(checkpoint, plan.config)
    plan = _plan_for(source, plan)
    parts = plain_parts(
        plan,
        source.config,
        source.generation_config,
        tokenizer,
        pad_vocab_to_multiple_of,
        has_head=source.pair.output_module is not None,
    )
    check_target(save_directory, overwrite=overwrite)
    merged, _ = _merged_tensors(source, plan)
    plain = {
        name: parts.plain_rows(plan, tensor)
        for name, tensor in merged.items()
        if not name.endswith((".index_map", ".logit_offset"))
    }
    replaced = {key for key in (source.input_key, source.output_key, source.bias_key) if key is not None}
    with atomic_directory(save_directory, overwrite=overwrite) as staging:
        _write_shards(Path(staging), _shard_layout(source, replaced, plain))
        parts.config.save_pretrained(staging)
        if parts.generation_config is not None:
            parts.generation_config.save_pretrained(staging)
        parts.save_tokenizer(staging)
    return os.fspath(save_directory)
