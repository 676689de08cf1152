"""`apply_sequence_merge(model, config)`: shorten the speech part of the sequence inside the decoder.

The merge is installed in place as forward pre-hooks, in the spirit of `torchao.quantize_`: the weights are not
touched and `handle.remove()` restores the original model exactly.

Why hooks on every decoder layer: after a stage merges, the layers that follow see a shorter sequence, so each of
them needs an attention mask, rotary position embeddings and position ids for *that* sequence, and each of them
caches keys and values of that length. transformers builds one mask and one set of position embeddings per forward
for all layers, so the hooks hand every later layer its own. During generation, the layers before a deep stage keep
the full prompt in their KV cache and the layers after it keep the merged one; each new token is appended to both
and positioned after the last prompt position of its own view.

Why the model's own mask is never asked for the merged view: `create_causal_mask` treats position ids with gaps
(what the 'first' and 'mean' strategies produce) as packed sequences when no 2-D mask is given, and would block
attention across the gaps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hf_token_merge.config.selection_fields import has_selector
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.remap.modules import MergedEmbedding
from hf_token_merge.selection import protected_token_ids, resolve_token_ids
from hf_token_merge.sequence.config import SequenceMergeConfig
from hf_token_merge.sequence.flops import prefill_flops
from hf_token_merge.sequence.grouping import pool_groups, stage_groups

logger = logging.getLogger(__name__)

SUPPORTED_ATTENTION = ("eager", "sdpa")


def additive_mask(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool visibility mask as the additive float mask eager attention adds to its scores (0 or dtype's min)."""
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(~visible, torch.finfo(dtype).min)


@dataclass
class _View:
    """The sequence as one group of layers sees it: validity, positions and speech flags of every token."""

    valid: torch.Tensor
    positions: torch.Tensor
    speech: torch.Tensor
    step: int = -1
    layer_kwargs: dict[str, Any] = field(default_factory=dict)

    def extend(self, new_valid: torch.Tensor) -> None:
        """Append tokens that arrive after the prompt (generation): unmerged, positioned after the last one."""
        last = torch.where(self.valid, self.positions, torch.full_like(self.positions, float("-inf"))).amax(1)
        last = torch.where(torch.isinf(last), torch.full_like(last, -1.0), last)
        steps = torch.arange(1, new_valid.shape[1] + 1, dtype=torch.float64, device=self.positions.device)
        self.positions = torch.cat([self.positions, last[:, None] + steps], dim=1)
        self.valid = torch.cat([self.valid, new_valid.to(self.valid.device)], dim=1)
        self.speech = torch.cat([self.speech, torch.zeros_like(new_valid, device=self.speech.device)], dim=1)


@dataclass
class StageStatistics:
    """What one stage did, summed over the prefills since the handle was applied or reset.

    Attributes:
        layer: Decoder layer whose input was merged.
        tokens_in: Tokens (padding excluded) entering the stage.
        tokens_out: Tokens leaving it.
        speech_in: Speech tokens entering it.
        speech_out: Speech tokens leaving it.
    """

    layer: int
    tokens_in: int = 0
    tokens_out: int = 0
    speech_in: int = 0
    speech_out: int = 0


@dataclass
class PrefillRecord:
    """Token counts of one prefill, per row (padding excluded).

    Attributes:
        tokens: `(batch,)` tokens the decoder received.
        speech: `(batch,)` speech tokens among them.
        after_stage: Stage layer -> `((batch,) tokens, (batch,) speech tokens)` leaving that stage.
    """

    tokens: torch.Tensor
    speech: torch.Tensor
    after_stage: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def tokens_per_layer(self, num_layers: int) -> torch.Tensor:
        """`(batch, num_layers)` tokens every decoder layer processed."""
        counts, current = [], self.tokens
        for layer in range(num_layers):
            if layer in self.after_stage:
                current = self.after_stage[layer][0]
            counts.append(current)
        return torch.stack(counts, dim=1)


class HookHandle:
    """Hooks installed on a model by one call, removable at once (also as a context manager)."""

    attribute: str = "_hook_handle"

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._hooks: list[Any] = []

    def remove(self) -> None:
        """Remove the hooks; the model behaves exactly as before they were installed."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        if getattr(self.model, self.attribute, None) is self:
            delattr(self.model, self.attribute)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class SequenceMergeHandle(HookHandle):
    """The installed sequence merge of one model.

    Attributes:
        config: The applied config.
        decoder_config: Config of the decoder (for FLOPs).
        num_layers: Decoder layers of the model.
        lm_head_rows: Rows of the LM head (for FLOPs): the merged rows of a vocabulary-merged model.
        records: One `PrefillRecord` per prefill since the handle was applied or reset.
    """

    attribute = "_sequence_merge_handle"

    def __init__(self, model: nn.Module, config: SequenceMergeConfig, decoder: nn.Module) -> None:
        super().__init__(model)
        self.config = config
        self.decoder_config = decoder.config
        self.num_layers = len(decoder.layers)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self.lm_head_rows = head.weight.shape[0] if head is not None else decoder.config.vocab_size
        self.records: list[PrefillRecord] = []

    def reset_statistics(self) -> None:
        """Forget the records of earlier prefills."""
        self.records.clear()

    @property
    def statistics(self) -> list[StageStatistics]:
        """Per-stage token counts summed over the records."""
        totals = [StageStatistics(stage.layer) for stage in self.config.stages]
        for record in self.records:
            tokens, speech = record.tokens, record.speech
            for total in totals:
                out_tokens, out_speech = record.after_stage.get(total.layer, (tokens, speech))
                total.tokens_in += int(tokens.sum())
                total.speech_in += int(speech.sum())
                total.tokens_out += int(out_tokens.sum())
                total.speech_out += int(out_speech.sum())
                tokens, speech = out_tokens, out_speech
        return totals

    @property
    def retention(self) -> float:
        """Speech tokens after the last stage / speech tokens in the input, over the records (1.0 if none)."""
        original = sum(int(record.speech.sum()) for record in self.records)
        return self.statistics[-1].speech_out / original if original else 1.0

    def prefill_flops(self) -> tuple[float, float]:
        """Analytic prefill FLOPs over the records, without and with the merge (see `sequence.flops`).

        Both count the model as it is: after a vocabulary merge, its LM head's merged rows.

        Returns:
            `(baseline, merged)`; their ratio is the FLOPs saving.
        """
        baseline = merged = 0.0
        for record in self.records:
            per_layer = record.tokens_per_layer(self.num_layers)
            entering = {
                stage.layer: per_layer[:, stage.layer - 1] if stage.layer > 0 else record.tokens
                for stage in self.config.stages
            }
            full = record.tokens[:, None].expand_as(per_layer)
            baseline += prefill_flops(self.decoder_config, full, lm_head_rows=self.lm_head_rows)
            merged += prefill_flops(
                self.decoder_config, per_layer, self.config.stages, entering, lm_head_rows=self.lm_head_rows
            )
        return baseline, merged


def locate_decoder(model: nn.Module) -> nn.Module:
    """The module that owns the decoder layers and the rotary embedding (e.g. `LlamaModel`, `Qwen2Model`).

    Args:
        model: A transformers model; wrappers such as `Qwen2AudioForConditionalGeneration` are searched.

    Returns:
        The decoder module.
    """
    for module in model.modules():
        if isinstance(getattr(module, "layers", None), nn.ModuleList) and hasattr(module, "rotary_emb"):
            return module
    raise TokenMergeError(
        f"{type(model).__name__} has no decoder with `layers` and `rotary_emb` (a Llama/Qwen2/Mistral-style "
        "decoder with rotary positions); sequence merging supports those decoders."
    )


def speech_token_lookup(model: nn.Module, config: SequenceMergeConfig, tokenizer: Any = None) -> torch.Tensor:
    """A bool table over input ids, True for speech tokens.

    The config's selection is resolved like a `TokenMergeConfig`'s (`hf_token_merge.selection.resolve_token_ids`):
    exclusions apply, and the tokenizer's special tokens and the model's bos/eos/pad ids are refused unless
    `allow_special_tokens=True`. With no selector, the model config's audio placeholder id is the speech token.

    Args:
        model: The model (its input embedding gives the vocabulary size, the original id space of a
            vocabulary-merged one; its config may name an audio token).
        config: The speech-token selection.
        tokenizer: Needed for `token_pattern` / `preset` / `exclude_pattern`.

    Returns:
        `(vocab_size,)` bool tensor.
    """
    embedding = model.get_input_embeddings()
    # a vocabulary-merged embedding holds fewer rows than ids; the token ids keep their meaning
    vocab_size = embedding.vocab_size if isinstance(embedding, MergedEmbedding) else embedding.weight.shape[0]
    if has_selector(config):
        protected = protected_token_ids(tokenizer, model.config, getattr(model, "generation_config", None))
        ids = torch.tensor(sorted(resolve_token_ids(config, vocab_size, tokenizer, protected)), dtype=torch.long)
    else:
        audio_id = getattr(model.config, "audio_token_id", None)
        if audio_id is None:
            audio_id = getattr(model.config, "audio_token_index", None)
        if audio_id is None:
            raise TokenMergeError(
                "No speech tokens selected and the model config names no audio_token_id: set token_ids, "
                "token_id_range, token_pattern or preset in SequenceMergeConfig."
            )
        # the model's own placeholder is a special token by construction; naming it is the model's decision
        ids = torch.tensor([int(audio_id)])
    logger.info("sequence merge: %d speech token ids of %d", len(ids), vocab_size)
    lookup = torch.zeros(vocab_size, dtype=torch.bool)
    lookup[ids] = True
    return lookup


class _State:
    """Per-call bookkeeping shared by the hooks of one model."""

    def __init__(self, handle: SequenceMergeHandle, lookup: torch.Tensor, rotary: nn.Module, attention: str) -> None:
        self.handle = handle
        self.lookup = lookup
        self.rotary = rotary
        self.attention = attention
        self.step = 0
        self.prefill = True
        self.speech: torch.Tensor | None = None
        self.input_length = 0
        self.new_valid: torch.Tensor | None = None
        self.current: _View | None = None
        self.original: _View | None = None
        self.layer_view: dict[int, _View] = {}
        self.generator = torch.Generator()
        self.record: PrefillRecord | None = None
        self.called = False  # set by the model's hook, consumed by the decoder's

    def start_call(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, cache: Any) -> None:
        self.step += 1
        self.called = True
        if cache is not None and getattr(cache, "is_compileable", False):
            raise TokenMergeError(
                "Sequence merging keeps KV caches of different lengths per layer and needs the default "
                "DynamicCache; do not pass cache_implementation='static' (or a StaticCache)."
            )
        past = cache.get_seq_length() if cache is not None else 0
        self.prefill = past == 0
        if self.prefill:
            if input_ids is None:
                raise TokenMergeError(
                    "Sequence merging finds the speech positions from input_ids; call the model with input_ids "
                    "(not inputs_embeds) for the prompt."
                )
            self.speech = self.lookup.to(input_ids.device)[input_ids]
            self.input_length = input_ids.shape[1]
            self.layer_view.clear()
            self.generator.manual_seed(self.handle.config.seed)
        else:
            length = input_ids.shape[1] if input_ids is not None else 1
            if attention_mask is not None and attention_mask.dim() == 2:
                self.new_valid = attention_mask[:, -length:].bool()
            else:
                batch = input_ids.shape[0] if input_ids is not None else self.current.valid.shape[0]
                self.new_valid = torch.ones(batch, length, dtype=torch.bool)

    def start_decoder(self, kwargs: dict[str, Any], args: tuple) -> None:
        embeds = kwargs.get("inputs_embeds")
        ids = kwargs.get("input_ids", args[0] if args else None)
        length = embeds.shape[1] if embeds is not None else ids.shape[1]
        device = embeds.device if embeds is not None else ids.device
        if length != self.input_length:
            raise TokenMergeError(
                f"The decoder received {length} positions but input_ids has {self.input_length}; the model expands "
                "placeholders inside forward (e.g. Qwen2-Audio's legacy single <|AUDIO|> token). Let the processor "
                "expand the audio tokens in input_ids."
            )
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise TokenMergeError("Sequence merging needs a 2-D attention_mask (batch, length) or none.")
        batch = self.speech.shape[0]
        valid = mask.bool() if mask is not None else torch.ones(batch, length, dtype=torch.bool, device=device)
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = torch.arange(length, device=device)[None].expand(batch, length)
        elif positions.dim() != 2:
            raise TokenMergeError("Sequence merging supports 2-D position_ids (1-D RoPE), not multimodal RoPE.")
        # The last real position of every row is never merged, even when it is a speech token: its logits are the
        # ones generate() reads, and they must come from that token itself at its own position.
        last = valid & (valid.long().cumsum(1) == valid.sum(1, keepdim=True))
        self.original = _View(
            valid=valid,
            positions=positions.to(torch.float64).expand(batch, length).clone(),
            speech=self.speech.to(device) & valid & ~last,
        )
        self.current = self.original
        self.record = PrefillRecord(tokens=valid.sum(1).cpu(), speech=self.original.speech.sum(1).cpu())
        self.handle.records.append(self.record)

    def merge(self, stage, hidden: torch.Tensor) -> torch.Tensor:
        view = self.current
        group = stage_groups(stage, hidden, view.valid, view.speech, self.generator)
        unchanged = bool((group.max(1).values + 1 == view.valid.sum(1).to(group.device)).all())
        if not unchanged:  # keep the view (and the model's own mask and positions) when nothing merged
            pooled = pool_groups(hidden, group, view.positions, view.speech, self.handle.config.position_strategy)
            self.current = _View(valid=pooled.valid, positions=pooled.positions, speech=pooled.speech)
            hidden = pooled.hidden
        self.record.after_stage[stage.layer] = (self.current.valid.sum(1).cpu(), self.current.speech.sum(1).cpu())
        return hidden

    def layer_kwargs(self, view: _View, hidden: torch.Tensor) -> dict[str, Any]:
        """Mask, rotary embeddings and position ids for the queries `hidden` in `view` (cached per call)."""
        if view.step == self.step:
            return view.layer_kwargs
        if not self.prefill:
            view.extend(self.new_valid)
        queries = hidden.shape[1]
        keys = view.valid.shape[1]
        query_positions = view.positions[:, keys - queries :]
        position_embeddings = self.rotary(hidden, position_ids=query_positions.float())
        view.layer_kwargs = {
            "attention_mask": self._mask(view.valid, queries, hidden.dtype),
            "position_embeddings": position_embeddings,
            "position_ids": query_positions.round().long(),
        }
        view.step = self.step
        return view.layer_kwargs

    def _mask(self, valid: torch.Tensor, queries: int, dtype: torch.dtype) -> torch.Tensor | None:
        keys = valid.shape[1]
        if self.attention == "sdpa" and bool(valid.all()) and queries in (1, keys):
            return None  # sdpa's own causal path: no mask memory, fastest kernel
        query_index = torch.arange(keys - queries, keys, device=valid.device)
        visible = (torch.arange(keys, device=valid.device)[None, :] <= query_index[:, None])[None] & valid[:, None, :]
        visible = visible[:, None]  # (batch, 1, queries, keys)
        return visible if self.attention == "sdpa" else additive_mask(visible, dtype)


def sequence_merge_handle(model: nn.Module) -> SequenceMergeHandle | None:
    """The sequence merge installed on `model` by `apply_sequence_merge`, if any.

    Args:
        model: Any module.

    Returns:
        Its `SequenceMergeHandle`, or None when no sequence merge is installed (or it was removed).
    """
    return getattr(model, SequenceMergeHandle.attribute, None)


def apply_sequence_merge(model: nn.Module, config: SequenceMergeConfig, tokenizer: Any = None) -> SequenceMergeHandle:
    """Merge redundant speech positions inside the decoder of `model`, in place (Affinity Pooling).

    Every prefill (a forward whose cache is empty) groups the speech positions at each stage's layer and
    mean-pools each group into one token; text positions and the last prompt position (even a speech token) are
    never merged. Later calls with a cache (the decoding steps of `generate`) append tokens as usual. Logits come back
    for the merged sequence: the last position is always the last prompt token, unpooled, so `generate` works
    unchanged. `labels=` is refused (the logits are shorter than the labels).

    Args:
        model: A decoder-only transformers model (Llama/Qwen2 families) or a wrapper around one such as
            `Qwen2AudioForConditionalGeneration`, with `attn_implementation` 'sdpa' or 'eager'.
        config: Where and how to merge.
        tokenizer: Needed when the config selects speech tokens by pattern or preset.

    Returns:
        A handle with per-stage statistics of the last prefill and `remove()`.

    Raises:
        TokenMergeError: If the model is unsupported, a stage layer does not exist, the speech selection is invalid,
            or a sequence merge is already installed. The model is left untouched.
    """
    if sequence_merge_handle(model) is not None:
        raise TokenMergeError("A sequence merge is already installed; call handle.remove() before applying another.")
    decoder, attention = _checked_decoder(model, config)
    lookup = speech_token_lookup(model, config, tokenizer)

    handle = SequenceMergeHandle(model, config, decoder)
    hooks = _Hooks(_State(handle, lookup, decoder.rotary_emb, attention))
    handle._hooks.append(model.register_forward_pre_hook(hooks.before_model, with_kwargs=True))
    handle._hooks.append(decoder.register_forward_pre_hook(hooks.before_decoder, with_kwargs=True))
    for index, layer in enumerate(decoder.layers):
        handle._hooks.append(layer.register_forward_pre_hook(hooks.before_layer(index), with_kwargs=True))
    model._sequence_merge_handle = handle
    logger.info("sequence merge installed: stages at layers %s of %d", sorted(hooks.stages), len(decoder.layers))
    return handle


def _checked_decoder(model: nn.Module, config: SequenceMergeConfig) -> tuple[nn.Module, str]:
    """The decoder of `model` and its attention implementation, refused when the merge cannot run on it."""
    decoder = locate_decoder(model)
    num_layers = len(decoder.layers)
    beyond = [stage.layer for stage in config.stages if stage.layer >= num_layers]
    if beyond:
        raise TokenMergeError(
            f"Stage layers {beyond} do not exist: the decoder has {num_layers} layers "
            f"(valid layers 0..{num_layers - 1})."
        )
    attention = getattr(decoder.config, "_attn_implementation", None) or "eager"
    if attention not in SUPPORTED_ATTENTION:
        raise TokenMergeError(
            f"attn_implementation={attention!r} is not supported; load the model with attn_implementation='sdpa' "
            "or 'eager' (sequence merging passes explicit masks)."
        )
    layer_types = getattr(decoder.config, "layer_types", None) or []
    if getattr(decoder.config, "use_sliding_window", False) or any(t != "full_attention" for t in layer_types):
        raise TokenMergeError(
            "The decoder uses sliding-window attention; sequence merging builds full causal masks. Fix: load it "
            "with use_sliding_window=False (and full attention in every layer) or use a full-attention model."
        )
    return decoder, attention


class _Hooks:
    """The forward pre-hooks of one sequence merge: on the model, on its decoder, and on every decoder layer."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.stages = {stage.layer: stage for stage in state.handle.config.stages}

    def before_model(self, module, args, kwargs):
        if kwargs.get("labels") is not None:
            raise TokenMergeError(
                "A sequence-merged model returns logits for the shorter, merged sequence, so they cannot be scored "
                "against labels= of the original length. Fix: call the model without labels (and compute a loss on "
                "the text positions yourself), or handle.remove() the sequence merge first."
            )
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        self.state.start_call(input_ids, kwargs.get("attention_mask"), cache)

    def before_decoder(self, module, args, kwargs):
        state = self.state
        if not state.called:
            raise TokenMergeError(
                f"The decoder was called directly; call the model passed to apply_sequence_merge "
                f"({type(state.handle.model).__name__}), which reads the input ids that mark the speech positions."
            )
        state.called = False
        if state.prefill:
            state.start_decoder(kwargs, args)
            return None
        # the hooks give every layer its own mask and positions; the decoder's would not fit the merged caches
        kwargs["attention_mask"] = None
        kwargs["position_ids"] = None
        return args, kwargs

    def before_layer(self, layer_index: int):
        state, stages = self.state, self.stages

        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            if state.prefill:
                if layer_index in stages:
                    hidden = state.merge(stages[layer_index], hidden)
                view = state.layer_view[layer_index] = state.current
                if view is state.original:
                    return None  # nothing merged yet: the model's own mask and positions are right
            else:
                view = state.layer_view[layer_index]
            kwargs.update(state.layer_kwargs(view, hidden))
            if args:
                return (hidden, *args[1:]), kwargs
            kwargs["hidden_states"] = hidden
            return args, kwargs

        return hook
