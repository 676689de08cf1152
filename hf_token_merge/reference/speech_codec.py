"""A codec-style speech tokenizer: FSQ codes at a fixed frame rate over Whisper's 80-bin log-mel, with a decoder.

The codec stands in for the codecs of real speech-LLMs (Llasa's X-codec2: 65,536 FSQ codes at 50 Hz; Spark-TTS's
BiCodec; GLM-4-Voice's 16,384 codes at 12.5 Hz) in the library's reference model. Its input and output are the
features Whisper reads (log10 mel power, clamped 8 decades below the utterance's maximum, scaled as
`(x + 4) / 4`), so the decoded speech is transcribed by Whisper directly, with no vocoder.

* Encoder: `frames_per_code` consecutive mel frames (100 per second) are stacked into one vector, then a stack of
  dilated residual 1-D convolutions at the code rate maps them to `len(levels)` dimensions.
* FSQ (finite scalar quantization, Mentzer et al. 2023): each dimension is bounded with `tanh` and rounded to one
  of `levels[i]` values; the code is the mixed-radix number of the rounded digits, so there are `prod(levels)`
  codes and no codebook to collapse.
* Decoder: residual convolutions at the code rate, a projection back to `frames_per_code` mel frames per code and a
  small residual convolution at the mel frame rate.

Everything runs in eval mode without dropout, so the same audio always gives the same codes.
`to_whisper_features` places decoded frames into Whisper's 30 s input (3,000 frames), padded as Whisper pads
silence: with the utterance's floor, 2.0 below its maximum in the scaled units.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hf_token_merge.errors import TokenMergeError

SAMPLING_RATE = 16_000
HOP_LENGTH = 160
N_FFT = 400
MEL_FRAME_RATE = SAMPLING_RATE // HOP_LENGTH
WHISPER_FRAMES = 3_000
# Whisper clamps log10 power 8 decades below the maximum and divides by 4: the floor is 2.0 below the maximum.
FLOOR_BELOW_MAX = 2.0
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclasses.dataclass
class SpeechCodecConfig:
    """Shape of a `SpeechCodec`.

    Args:
        levels: FSQ levels per latent dimension; the codebook has `prod(levels)` codes.
        frames_per_code: Mel frames (10 ms each) per code: 4 gives 25 codes per second, 2 gives 50.
        n_mels: Mel bins (Whisper tiny.en: 80).
        hidden: Channels of the residual convolutions.
        encoder_blocks: Residual blocks of the encoder (dilations cycle through 1, 2, 4).
        decoder_blocks: Residual blocks of the decoder.
        kernel_size: Kernel of the code-rate convolutions.
    """

    levels: list[int] = dataclasses.field(default_factory=lambda: [7, 5, 5, 5, 5])
    frames_per_code: int = 4
    n_mels: int = 80
    hidden: int = 256
    encoder_blocks: int = 6
    decoder_blocks: int = 6
    kernel_size: int = 3

    def validate(self) -> None:
        """Raise `TokenMergeError` naming the bad field and the fix."""
        if not self.levels or any(int(level) < 2 for level in self.levels):
            raise TokenMergeError(f"levels={self.levels} is invalid. Fix: give at least one level, each >= 2.")
        if math.prod(self.levels) > 65_536:
            raise TokenMergeError(f"levels={self.levels} give over 65,536 codes. Fix: use fewer or smaller levels.")
        for name in ("frames_per_code", "n_mels", "hidden", "kernel_size"):
            if int(getattr(self, name)) < 1:
                raise TokenMergeError(f"{name}={getattr(self, name)} is invalid. Fix: use a positive integer.")
        if self.kernel_size % 2 == 0:
            raise TokenMergeError(f"kernel_size={self.kernel_size} is even. Fix: use an odd kernel size.")


class _ResBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, channels)
        padding = dilation * (kernel_size - 1) // 2
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, padding=padding, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(nn.functional.gelu(self.conv1(nn.functional.gelu(self.norm(x)))))


class FSQ(nn.Module):
    """Finite scalar quantization with a straight-through gradient.

    Args:
        levels: Values per dimension; codes are mixed-radix numbers with the first dimension least significant.
    """

    def __init__(self, levels: Sequence[int]) -> None:
        super().__init__()
        levels_t = torch.tensor([int(level) for level in levels], dtype=torch.int64)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.int64), levels_t[:-1]]), 0)
        self.register_buffer("levels", levels_t, persistent=False)
        self.register_buffer("basis", basis, persistent=False)

    @property
    def codebook_size(self) -> int:
        """Number of codes, `prod(levels)`."""
        return int(self.levels.prod())

    def _half_width(self) -> torch.Tensor:
        return (self.levels // 2).to(torch.float32)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash `z` (..., dims) so that rounding gives exactly `levels[i]` integer values per dimension."""
        levels = self.levels.to(z.dtype)
        half = (levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0).to(z.dtype)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Bound and round `z`, straight-through; return values scaled to [-1, 1]."""
        bounded = self.bound(z)
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        return rounded / self._half_width().to(z.dtype)

    def codes_from_quantized(self, quantized: torch.Tensor) -> torch.Tensor:
        """Mixed-radix code ids (...,) of quantized values (..., dims) in [-1, 1]."""
        digits = torch.round(quantized * self._half_width() + self._half_width()).to(torch.int64)
        return (digits * self.basis).sum(-1)

    def quantized_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantized values (..., dims) in [-1, 1] of code ids (...,)."""
        digits = (codes.unsqueeze(-1) // self.basis) % self.levels
        return (digits.to(torch.float32) - self._half_width()) / self._half_width()


class SpeechCodec(nn.Module):
    """FSQ autoencoder over Whisper log-mel frames: `encode` audio or log-mel to codes, `decode` codes to log-mel.

    Args:
        config: The codec's shape.
    """

    def __init__(self, config: SpeechCodecConfig | None = None) -> None:
        super().__init__()
        config = config or SpeechCodecConfig()
        config.validate()
        self.config = config
        hidden, stacked = config.hidden, config.n_mels * config.frames_per_code
        pad = config.kernel_size // 2
        self.encoder_in = nn.Conv1d(stacked, hidden, config.kernel_size, padding=pad)
        self.encoder = nn.Sequential(
            *[_ResBlock(hidden, config.kernel_size, 2 ** (i % 3)) for i in range(config.encoder_blocks)]
        )
        self.encoder_out = nn.Sequential(nn.GroupNorm(1, hidden), nn.GELU(), nn.Conv1d(hidden, len(config.levels), 1))
        self.fsq = FSQ(config.levels)
        self.decoder_in = nn.Conv1d(len(config.levels), hidden, config.kernel_size, padding=pad)
        self.decoder = nn.Sequential(
            *[_ResBlock(hidden, config.kernel_size, 2 ** (i % 3)) for i in range(config.decoder_blocks)]
        )
        self.decoder_out = nn.Sequential(nn.GroupNorm(1, hidden), nn.GELU(), nn.Conv1d(hidden, stacked, 1))
        self.refine = nn.Sequential(
            nn.Conv1d(config.n_mels, 128, 5, padding=2), nn.GELU(), nn.Conv1d(128, config.n_mels, 5, padding=2)
        )
        self._mel_filters: torch.Tensor | None = None
        self.eval()

    # -- properties -------------------------------------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        """Codes per second (25.0 for 4 mel frames per code)."""
        return MEL_FRAME_RATE / self.config.frames_per_code

    @property
    def codebook_size(self) -> int:
        """Number of distinct codes, `prod(levels)`."""
        return self.fsq.codebook_size

    # -- features ---------------------------------------------------------------------------------------------
    def log_mel(self, audio: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Whisper's normalised log-mel of 16 kHz mono audio, for the frames that hold the audio.

        Equal (to float rounding) to the first `ceil(len(audio) / 160)` frames of `WhisperFeatureExtractor`'s
        30 s features, computed on the audio alone (zero-padded by one window) instead of 30 s.

        Args:
            audio: Mono float samples at 16 kHz, at most 30 s.

        Returns:
            Float tensor (n_mels, ceil(len(audio) / 160)).
        """
        samples = torch.as_tensor(np.asarray(audio, dtype=np.float32)).flatten()
        if samples.numel() == 0 or samples.numel() > 30 * SAMPLING_RATE:
            raise TokenMergeError(
                f"Audio of {samples.numel()} samples is out of range. Fix: pass 1 sample to 30 s of 16 kHz audio."
            )
        n_frames = -(-samples.numel() // HOP_LENGTH)
        # Zero padding past the end reproduces Whisper's 30 s zero padding for every frame we keep.
        padded = nn.functional.pad(samples, (0, N_FFT + HOP_LENGTH))
        window = torch.hann_window(N_FFT)
        stft = torch.stft(padded, N_FFT, HOP_LENGTH, window=window, return_complex=True)
        power = stft[..., :n_frames].abs() ** 2
        log_spec = torch.clamp(self._filters() @ power, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0

    def whisper_input(self, audio: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Whisper's own 30 s input features of audio (what `WhisperFeatureExtractor` gives, without its slow path).

        Args:
            audio: Mono float samples at 16 kHz, at most 30 s.

        Returns:
            Float tensor (n_mels, 3000).
        """
        samples = np.asarray(audio, dtype=np.float32).flatten()
        return self.log_mel(np.pad(samples, (0, max(0, 30 * SAMPLING_RATE - samples.size))))

    def _filters(self) -> torch.Tensor:
        if self._mel_filters is None:
            from transformers.audio_utils import mel_filter_bank

            filters = mel_filter_bank(
                num_frequency_bins=1 + N_FFT // 2,
                num_mel_filters=self.config.n_mels,
                min_frequency=0.0,
                max_frequency=8000.0,
                sampling_rate=SAMPLING_RATE,
                norm="slaney",
                mel_scale="slaney",
            )
            self._mel_filters = torch.from_numpy(filters.T.astype(np.float32))
        return self._mel_filters

    def _as_log_mel(self, features: np.ndarray | torch.Tensor) -> torch.Tensor:
        tensor = torch.as_tensor(np.asarray(features, dtype=np.float32))
        if tensor.dim() == 1:
            return self.log_mel(tensor)
        if tensor.dim() != 2 or tensor.shape[0] != self.config.n_mels or tensor.shape[1] == 0:
            raise TokenMergeError(
                f"Expected audio (samples,) or log-mel ({self.config.n_mels}, frames); got shape "
                f"{tuple(tensor.shape)}. Fix: pass 16 kHz mono samples or SpeechCodec.log_mel(audio)."
            )
        return tensor

    # -- encode / decode --------------------------------------------------------------------------------------
    def _stack(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, F) with F a multiple of frames_per_code -> (B, n_mels * frames_per_code, F / fpc)."""
        batch, mels, frames = mel.shape
        fpc = self.config.frames_per_code
        return mel.reshape(batch, mels, frames // fpc, fpc).permute(0, 3, 1, 2).reshape(batch, fpc * mels, -1)

    def _unstack(self, stacked: torch.Tensor) -> torch.Tensor:
        batch, _, codes = stacked.shape
        fpc, mels = self.config.frames_per_code, self.config.n_mels
        return stacked.reshape(batch, fpc, mels, codes).permute(0, 2, 3, 1).reshape(batch, mels, codes * fpc)

    def pad_frames(self, mel: torch.Tensor) -> torch.Tensor:
        """Pad (n_mels, F) log-mel to a multiple of `frames_per_code` with its floor, as Whisper pads silence."""
        extra = -mel.shape[-1] % self.config.frames_per_code
        if extra == 0:
            return mel
        floor = mel.amax(dim=(-2, -1), keepdim=True) - FLOOR_BELOW_MAX
        return torch.cat([mel, floor.expand(*mel.shape[:-1], extra)], dim=-1)

    def latents(self, mel: torch.Tensor) -> torch.Tensor:
        """Quantized latents (B, dims, T) of log-mel (B, n_mels, F) whose F is a multiple of frames_per_code."""
        hidden = self.encoder(self.encoder_in(self._stack(mel)))
        z = self.encoder_out(hidden).transpose(1, 2)
        return self.fsq.quantize(z).transpose(1, 2)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, n_mels, T * frames_per_code) of quantized latents (B, dims, T)."""
        coarse = self._unstack(self.decoder_out(self.decoder(self.decoder_in(latents))))
        return coarse + self.refine(coarse)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Reconstruct log-mel (B, n_mels, F), F a multiple of frames_per_code (training)."""
        return self.decode_latents(self.latents(mel))

    @torch.no_grad()
    def encode(self, features: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Codes of one utterance.

        Args:
            features: 16 kHz mono audio (samples,) or its `log_mel` (n_mels, frames).

        Returns:
            LongTensor (ceil(frames / frames_per_code),) of code ids in [0, codebook_size).
        """
        mel = self.pad_frames(self._as_log_mel(features))
        latents = self.latents(mel.unsqueeze(0))
        return self.fsq.codes_from_quantized(latents[0].transpose(0, 1))

    @torch.no_grad()
    def decode(self, codes: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Log-mel frames of codes.

        Args:
            codes: Code ids (T,), each in [0, codebook_size).

        Returns:
            Float tensor (n_mels, T * frames_per_code) in Whisper's scaled log-mel units.
        """
        ids = torch.as_tensor(np.asarray(codes, dtype=np.int64)).flatten()
        if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size:
            raise TokenMergeError(
                f"Codes must be a non-empty sequence of ids in [0, {self.codebook_size}); got {ids.numel()} ids"
                + (f" in [{int(ids.min())}, {int(ids.max())}]" if ids.numel() else "")
                + ". Fix: pass codes produced by this codec's encode()."
            )
        latents = self.fsq.quantized_from_codes(ids).transpose(0, 1).unsqueeze(0)
        return self.decode_latents(latents)[0]

    def to_whisper_features(self, mel: torch.Tensor, frames: int = WHISPER_FRAMES) -> torch.Tensor:
        """Place log-mel (n_mels, F) into Whisper's fixed-length input, padded as Whisper pads silence.

        Whisper pads audio to 30 s with zeros, which its feature extractor maps to the floor 2.0 below the
        utterance's maximum; decoded frames are clamped to that floor too, as Whisper's own features are.

        Args:
            mel: Log-mel frames, e.g. from `decode`.
            frames: Length of Whisper's input (3,000 for 30 s).

        Returns:
            Float tensor (n_mels, frames).
        """
        if mel.dim() != 2 or mel.shape[-1] > frames:
            raise TokenMergeError(
                f"Cannot place log-mel of shape {tuple(mel.shape)} into {frames} frames. Fix: pass (n_mels, F) "
                f"with F <= {frames} (at most 30 s)."
            )
        floor = mel.max() - FLOOR_BELOW_MAX
        out = floor.expand(mel.shape[0], frames).clone()
        out[:, : mel.shape[-1]] = torch.maximum(mel, floor)
        return out

    def pack_for_whisper(self, mels: Sequence[torch.Tensor], gap_frames: int = 50) -> torch.Tensor:
        """Join several utterances' log-mel, with silent gaps, into one Whisper input (at most 30 s in all).

        Log-mel values are absolute (log10 power), so segments normalised on their own join without rescaling;
        the window is then clamped and padded at its own floor, as Whisper does for one long recording.

        Args:
            mels: Log-mel segments (n_mels, F_i), e.g. from `decode`.
            gap_frames: Silent frames between segments (50 = 0.5 s).

        Returns:
            Float tensor (n_mels, 3000).
        """
        if not mels:
            raise TokenMergeError("No log-mel segments to pack. Fix: pass at least one (n_mels, F) tensor.")
        silence = torch.full((self.config.n_mels, gap_frames), -10.0)
        parts = [part for mel in mels for part in (mel, silence)][:-1]
        return self.to_whisper_features(torch.cat(parts, dim=1))

    # -- persistence ------------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        """Write `config.json` and `model.safetensors` into a folder, staged and swapped in.

        Args:
            path: Target folder; other files in it are kept (`atomic_directory(keep_existing=True)`).
        """
        from hf_token_merge.serialization.atomic import atomic_directory

        state = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        config = dataclasses.asdict(self.config) | {"codebook_size": self.codebook_size, "frame_rate": self.frame_rate}
        with atomic_directory(path, keep_existing=True) as folder:
            save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
            (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> SpeechCodec:
        """Load a codec saved by `save_pretrained`, in eval mode.

        Args:
            path: Folder with `config.json` and `model.safetensors`.

        Returns:
            The codec.
        """
        folder = Path(path)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} is missing; save the codec with save_pretrained().")
        raw = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        fields = {field.name for field in dataclasses.fields(SpeechCodecConfig)}
        codec = cls(SpeechCodecConfig(**{key: value for key, value in raw.items() if key in fields}))
        codec.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        return codec.eval()


def reference_speech_codec_dir() -> Path:
    """Folder of the codec bundled with the package (`assets/speech_codec`)."""
    return Path(__file__).resolve().parent / "assets" / "speech_codec"


def load_reference_speech_codec() -> SpeechCodec:
    """The bundled reference codec (see `recipes/speech_codec/README.md`), in eval mode.

    Returns:
        The `SpeechCodec`.
    """
    return SpeechCodec.from_pretrained(reference_speech_codec_dir())
