"""The encoder-decoder analogue: Affinity Pooling of encoder frames before cross-attention (Whisper).

Whisper's decoder reads all 1,500 encoder frames (30 s at 50 Hz) through cross-attention at every step. Adjacent
frames of steady sounds and of the silence that pads every clip to 30 s are near-duplicates; pooling them shortens
what every decoder step attends to. Cross-attention has no positions, so only the frame count changes. In a batch
the rows are left-padded to the longest and the padding is masked in every decoder layer's cross-attention
(transformers' Whisper decoder passes no encoder mask of its own).

Two options keep the decoder's view of the frames close to the unpooled one (issue 16; the first is on by default,
measured in `recipes/whisper_vocabulary/study_pooling.py`):

* `proportional_attention` (ToMe's proportional attention, Bolya et al. 2023): every pooled frame's
  cross-attention score gets `+ log(size)`, the number of frames it stands for. n identical frames and their pooled
  frame then get exactly the same attention mass and give exactly the same output; without it, a run of 1,300
  padding frames pooled into one loses almost all of the attention it drew.
* `split_at_audio_end`: a group never spans the end of the real audio (from the encoder's `attention_mask`,
  which `generate(..., attention_mask=...)` passes on, else from the trailing log-mel frames at the clip's floor),
  so speech frames are never averaged into the padding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.sequence.apply import HookHandle, additive_mask
from hf_token_merge.sequence.grouping import affinity_groups, pool_groups, split_groups_at

# Whisper's convolution front end halves the log-mel frame rate (100 Hz mel, 50 Hz encoder frames).
MEL_FRAMES_PER_ENCODER_FRAME = 2


class EncoderMergeHandle(HookHandle):
    """The installed encoder-frame merge.

    Attributes:
        threshold: Cosine threshold tau.
        window: Frames of the open group compared (omega).
        frames_in: Encoder frames seen since applied (all rows).
        frames_out: Frames left after pooling.
        proportional_attention: Whether pooled frames get `+ log(size)` in cross-attention.
        split_at_audio_end: Whether groups stop at the end of the real audio.
        valid: `(batch, frames)` bool of the last call, False at a batch's left padding.
        sizes: `(batch, frames)` frames each pooled frame stands for (0 at padding), last call.
    """

    attribute = "_encoder_merge_handle"

    def __init__(
        self, model: nn.Module, threshold: float, window: int, proportional_attention: bool, split_at_audio_end: bool
    ) -> None:
        super().__init__(model)
        self.threshold = threshold
        self.window = window
        self.proportional_attention = proportional_attention
        self.split_at_audio_end = split_at_audio_end
        self.frames_in = 0
        self.frames_out = 0
        self.valid: torch.Tensor | None = None
        self.sizes: torch.Tensor | None = None
        self._mel_mask: torch.Tensor | None = None
        self._features: torch.Tensor | None = None
        # the decoder layers' cross-attention mask of the last call, by dtype; None when they need none
        self._cross_masks: dict[torch.dtype, torch.Tensor] | None = None

    @property
    def retention(self) -> float:
        """Frames kept / frames in (1.0 before any call)."""
        return self.frames_out / self.frames_in if self.frames_in else 1.0


def encoder_merge_handle(model: nn.Module) -> EncoderMergeHandle | None:
    """The encoder-frame merge installed on `model` by `apply_encoder_merge`, if any.

    Args:
        model: Any module.

    Returns:
        Its `EncoderMergeHandle`, or None when none is installed (or it was removed).
    """
    return getattr(model, EncoderMergeHandle.attribute, None)


def audio_end_frames(input_features: torch.Tensor, mel_mask: torch.Tensor | None, frames: int) -> torch.Tensor:
    """Encoder frames of real audio in each row: from the log-mel attention mask, else from the features.

    Args:
        input_features: `(batch, mel bins, mel frames)` log-mel input of the encoder.
        mel_mask: `(batch, mel frames)` 1 at real audio (the feature extractor's `attention_mask`), or None.
        frames: Encoder frames per row.

    Returns:
        `(batch,)` int64, at most `frames`. Without a mask, Whisper's zero padding is recognised as the trailing
        run of log-mel frames whose bins all equal the row's floor (the clamp at max - 8), so digital silence at
        the very end of a clip counts as padding too.
    """
    if mel_mask is not None:
        real = mel_mask.long().sum(-1)
    else:
        floor = input_features.amin(dim=(1, 2), keepdim=True)
        silent = (input_features == floor).all(dim=1)  # (batch, mel frames)
        mel = silent.shape[1]
        # trailing run: positions after the last non-silent frame
        index = torch.arange(1, mel + 1, device=silent.device).expand_as(silent)
        real = torch.where(~silent, index, torch.zeros_like(index)).amax(-1)
    ends = (real + MEL_FRAMES_PER_ENCODER_FRAME - 1) // MEL_FRAMES_PER_ENCODER_FRAME
    return ends.clamp(max=frames).to(torch.long)


def _encoder_and_decoder(model: nn.Module, threshold: float, window: int) -> tuple[Callable[[], nn.Module], nn.Module]:
    """`(model.get_encoder, model.model.decoder)`, after refusing bad options, a second merge or another model kind."""
    if not -1.0 <= threshold <= 1.0 or window < 1:
        raise TokenMergeError(f"Need a cosine threshold in [-1, 1] and window >= 1, got {threshold!r} and {window!r}.")
    if encoder_merge_handle(model) is not None:
        raise TokenMergeError("An encoder merge is already installed; call handle.remove() first.")
    get_encoder = getattr(model, "get_encoder", None)
    decoder = getattr(getattr(model, "model", None), "decoder", None)
    if get_encoder is None or decoder is None or not isinstance(getattr(decoder, "layers", None), nn.ModuleList):
        raise TokenMergeError(
            f"{type(model).__name__} is not an encoder-decoder with `model.decoder.layers` (such as Whisper); "
            "for decoder-only speech-LLMs use apply_sequence_merge."
        )
    return get_encoder, decoder


def apply_encoder_merge(
    model: nn.Module,
    threshold: float,
    window: int = 1,
    *,
    proportional_attention: bool = True,
    split_at_audio_end: bool = False,
) -> EncoderMergeHandle:
    """Pool runs of similar encoder frames of an encoder-decoder ASR model (e.g. Whisper), in place.

    Args:
        model: A `WhisperForConditionalGeneration`-like model: `model.get_encoder()` and decoder layers that accept
            `encoder_attention_mask`.
        threshold: A frame joins the open group when its cosine similarity to any of the group's last `window`
            frames is at least this.
        window: How many of the open group's last frames are compared.
        proportional_attention: Add `log(size)` to each pooled frame's cross-attention score (see the module
            docstring): n identical frames pooled into one keep their attention mass exactly. On by default: without
            it the padding of a short clip, pooled into a few frames, hands its attention to the speech frames, and
            the decoder breaks on some voices (issue 16; False gives the method as it was before).
        split_at_audio_end: Never pool across the end of the real audio: from `generate(..., attention_mask=...)`,
            which hands the mask to the encoder (a plain forward call does not), else from Whisper's zero padding
            in the log-mel frames.

    Returns:
        A handle with frame counts and `remove()`.

    Raises:
        TokenMergeError: On a model without an encoder and decoder layers, bad threshold/window, or a second merge.
    """
    get_encoder, decoder = _encoder_and_decoder(model, threshold, window)
    handle = EncoderMergeHandle(model, threshold, window, proportional_attention, split_at_audio_end)

    def before_encoder(module, args, kwargs):
        handle._mel_mask = kwargs.get("attention_mask")
        handle._features = args[0] if args else kwargs.get("input_features")

    def after_encoder(module, args, output):
        hidden = output[0]
        batch, length, _ = hidden.shape
        valid = torch.ones(batch, length, dtype=torch.bool, device=hidden.device)
        group = affinity_groups(hidden, valid, valid, threshold, window)
        if split_at_audio_end:
            group = split_groups_at(group, audio_end_frames(handle._features, handle._mel_mask, length))
        positions = torch.arange(length, device=hidden.device)[None].expand(batch, length)
        pooled = pool_groups(hidden, group, positions, valid, "first")
        sizes = torch.zeros(pooled.valid.numel(), device=hidden.device)
        offsets = torch.arange(batch, device=hidden.device)[:, None] * pooled.valid.shape[1]
        sizes.index_add_(0, (pooled.slot + offsets).flatten(), torch.ones(batch * length, device=hidden.device))
        handle.valid, handle.sizes = pooled.valid, sizes.view(pooled.valid.shape)
        # no padding and (without the log-size bias, or with nothing pooled) no bias: leave the decoder as it is
        unchanged = bool(pooled.valid.all()) and (not proportional_attention or bool((handle.sizes == 1).all()))
        handle._cross_masks = None if unchanged else {}
        handle._mel_mask = handle._features = None
        handle.frames_in += batch * length
        handle.frames_out += int(pooled.valid.sum())
        if isinstance(output, tuple):
            return (pooled.hidden, *output[1:])
        output.last_hidden_state = pooled.hidden
        return output

    def before_decoder_layer(module, args, kwargs):
        if handle._cross_masks is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        mask = handle._cross_masks.get(hidden.dtype)
        if mask is None:  # once per encoder call, not per decoder layer and step
            mask = additive_mask(handle.valid, hidden.dtype)
            if proportional_attention:
                mask = mask + torch.where(handle.valid, handle.sizes.clamp_min(1).log(), 0).to(hidden.dtype)
            handle._cross_masks[hidden.dtype] = mask
        kwargs["encoder_attention_mask"] = mask[:, None, None, :].expand(-1, 1, hidden.shape[1], -1)
        return args, kwargs

    handle._hooks.append(get_encoder().register_forward_pre_hook(before_encoder, with_kwargs=True))
    handle._hooks.append(get_encoder().register_forward_hook(after_encoder))
    for layer in decoder.layers:
        handle._hooks.append(layer.register_forward_pre_hook(before_decoder_layer, with_kwargs=True))
    model._encoder_merge_handle = handle
    return handle
