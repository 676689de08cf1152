"""The encoder-decoder analogue: Affinity Pooling of encoder frames before cross-attention (Whisper).

Whisper's decoder reads all 1,500 encoder frames (30 s at 50 Hz) through cross-attention at every step. Adjacent
frames of steady sounds and of the silence that pads every clip to 30 s are near-duplicates; pooling them shortens
what every decoder step attends to. Cross-attention has no positions, so only the frame count changes. In a batch
the rows are left-padded to the longest and the padding is masked in every decoder layer's cross-attention
(transformers' Whisper decoder passes no encoder mask of its own).
"""

from __future__ import annotations

import torch
from torch import nn

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.sequence.apply import HookHandle, additive_mask
from hf_token_merge.sequence.grouping import affinity_groups, pool_groups


class EncoderMergeHandle(HookHandle):
    """The installed encoder-frame merge.

    Attributes:
        threshold: Cosine threshold tau.
        window: Frames of the open group compared (omega).
        frames_in: Encoder frames seen since applied (all rows).
        frames_out: Frames left after pooling.
    """

    attribute = "_encoder_merge_handle"

    def __init__(self, model: nn.Module, threshold: float, window: int) -> None:
        super().__init__(model)
        self.threshold = threshold
        self.window = window
        self.frames_in = 0
        self.frames_out = 0
        self.valid: torch.Tensor | None = None

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


def apply_encoder_merge(model: nn.Module, threshold: float, window: int = 1) -> EncoderMergeHandle:
    """Pool runs of similar encoder frames of an encoder-decoder ASR model (e.g. Whisper), in place.

    Args:
        model: A `WhisperForConditionalGeneration`-like model: `model.get_encoder()` and decoder layers that accept
            `encoder_attention_mask`.
        threshold: A frame joins the open group when its cosine similarity to any of the group's last `window`
            frames is at least this.
        window: How many of the open group's last frames are compared.

    Returns:
        A handle with frame counts and `remove()`.

    Raises:
        TokenMergeError: On a model without an encoder and decoder layers, bad threshold/window, or a second merge.
    """
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
    handle = EncoderMergeHandle(model, threshold, window)

    def after_encoder(module, args, output):
        hidden = output[0]
        batch, length, _ = hidden.shape
        valid = torch.ones(batch, length, dtype=torch.bool, device=hidden.device)
        group = affinity_groups(hidden, valid, valid, threshold, window)
        positions = torch.arange(length, device=hidden.device)[None].expand(batch, length)
        pooled = pool_groups(hidden, group, positions, valid, "first")
        handle.valid = pooled.valid
        handle.frames_in += batch * length
        handle.frames_out += int(pooled.valid.sum())
        if isinstance(output, tuple):
            return (pooled.hidden, *output[1:])
        output.last_hidden_state = pooled.hidden
        return output

    def before_decoder_layer(module, args, kwargs):
        if handle.valid is None or bool(handle.valid.all()):
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        visible = handle.valid[:, None, None, :].expand(-1, 1, hidden.shape[1], -1)
        kwargs["encoder_attention_mask"] = additive_mask(visible, hidden.dtype)
        return args, kwargs

    handle._hooks.append(get_encoder().register_forward_hook(after_encoder))
    for layer in decoder.layers:
        handle._hooks.append(layer.register_forward_pre_hook(before_decoder_layer, with_kwargs=True))
    model._encoder_merge_handle = handle
    return handle
