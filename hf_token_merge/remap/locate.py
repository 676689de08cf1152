"""Find a model's input embedding and LM head, check that they can be merged, and swap modules in place."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.errors import TokenMergeError


@dataclass
class EmbeddingPair:
    """The modules a merge rewrites.

    Attributes:
        input_name: Dotted path of the input embedding.
        input_module: The input embedding.
        output_name: Dotted path of the LM head, or None when the model has none.
        output_module: The LM head, or None.
    """

    input_name: str
    input_module: nn.Module
    output_name: str | None
    output_module: nn.Module | None

    @property
    def tied(self) -> bool:
        """Whether the LM head shares its weight tensor with the input embedding."""
        return self.output_module is not None and self.output_module.weight is self.input_module.weight


def _name_of(model: nn.Module, module: nn.Module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise TokenMergeError(f"{type(module).__name__} returned by the model is not one of its submodules.")


def _check_module(module: nn.Module, name: str, expected: type[nn.Module], on_meta: bool = False) -> None:
    # Subclasses that keep the base forward (e.g. transformers' own nn.Embedding subclasses without extra
    # behaviour) merge fine; a custom forward (bitsandbytes, scaled embeddings) would be silently bypassed.
    if not isinstance(module, expected) or type(module).forward is not expected.forward:
        raise TokenMergeError(
            f"{name} is a {type(module).__name__}, which hf_token_merge cannot rewrite (it needs a plain "
            f"torch.nn.{expected.__name__}). Quantized or custom modules must be merged before quantization: "
            "load the unquantized model, merge, then quantize."
        )
    weight = module.weight
    if not weight.dtype.is_floating_point:
        raise TokenMergeError(f"{name}.weight has dtype {weight.dtype}; merge the unquantized model, then quantize it.")
    if weight.device.type == "meta" and not on_meta:
        raise TokenMergeError(
            f"{name}.weight is on the meta device (offloaded by accelerate or not loaded); load the model "
            "with its embeddings in memory (no disk/CPU offload of embed_tokens and lm_head) to merge it."
        )


def locate_embeddings(model: nn.Module, config: TokenMergeConfig, *, on_meta: bool = False) -> EmbeddingPair:
    """Find and validate the input embedding and LM head of `model`.

    Args:
        model: A transformers model, or any module with `get_input_embeddings`.
        config: Supplies `input_embedding_name`/`output_embedding_name` for custom layer names.
        on_meta: The model is a skeleton on the meta device whose rows are read from its files (the streaming
            compress): meta weights are expected, not refused.

    Returns:
        The located modules.

    Raises:
        TokenMergeError: When a module is missing, already merged, quantized or offloaded.
    """
    _refuse_quantized(model)
    input_name, input_module = _input_embedding(model, config, on_meta)
    output_name, output_module = _output_embedding(model, config, input_name, input_module, on_meta)
    pair = EmbeddingPair(input_name, input_module, output_name, output_module)
    if pair.tied and config.lm_head == "keep":
        raise TokenMergeError(
            "lm_head='keep' needs untied embeddings, but this model ties its LM head to the input embedding; "
            "use lm_head='merge' or 'drop', or untie the weights first."
        )
    if config.similarity_source in ("output", "both") and output_module is None:
        raise TokenMergeError(
            f"similarity_source={config.similarity_source!r} needs an LM head; use similarity_source='input'."
        )
    return pair


def _refuse_quantized(model: nn.Module) -> None:
    """Refuse a model with a quantization config: merged already (ours), or quantized by another method."""
    quantization = getattr(getattr(model, "config", None), "quantization_config", None)
    if quantization is None:
        return
    method = quantization.get("quant_method") if isinstance(quantization, dict) else quantization.quant_method
    method = getattr(method, "value", method)
    from hf_token_merge.remap.record import QUANT_METHODS

    if method in QUANT_METHODS:
        raise TokenMergeError(
            "This model is already token-merged; merging twice is not supported. Merge the original model "
            "once with the final settings (a stronger target_ratio or threshold), or reload it first."
        )
    raise TokenMergeError(f"This model is quantized ({method}); merge the unquantized model first, then quantize it.")


def _input_embedding(model: nn.Module, config: TokenMergeConfig, on_meta: bool) -> tuple[str, nn.Embedding]:
    """The input embedding and its path, refused when merged already, of another type, or shared at other paths."""
    from hf_token_merge.remap.modules import MergedEmbedding

    if config.input_embedding_name is not None:
        input_name = config.input_embedding_name
        input_module = model.get_submodule(input_name)
    else:
        try:
            input_module = model.get_input_embeddings()
        except (AttributeError, NotImplementedError) as err:
            raise TokenMergeError(
                f"{type(model).__name__} does not expose its input embedding; set input_embedding_name to its "
                "dotted module path."
            ) from err
        input_name = _name_of(model, input_module)
    if isinstance(input_module, MergedEmbedding):
        raise TokenMergeError(
            "This model is already token-merged; merging twice is not supported. Merge the original model once "
            "with the final settings, or reload it first."
        )
    _check_module(input_module, input_name, nn.Embedding, on_meta)
    aliases = [
        name
        for name, module in model.named_modules(remove_duplicate=False)
        if name != input_name
        and isinstance(module, nn.Embedding)
        and (module is input_module or module.weight is input_module.weight)
    ]
    if aliases:
        raise TokenMergeError(
            f"The input embedding {input_name!r} is also used as {aliases} (same module or weight); "
            "hf_token_merge rewrites one embedding module, so those would stay unmerged and the saved checkpoint "
            "would not reload. Models that reuse one embedding at several paths (T5-style shared embeddings) "
            "are not supported."
        )
    return input_name, input_module


def _output_embedding(
    model: nn.Module, config: TokenMergeConfig, input_name: str, input_module: nn.Embedding, on_meta: bool
) -> tuple[str | None, nn.Linear | None]:
    """The LM head and its path (None, None when there is none and lm_head='keep')."""
    if config.output_embedding_name is not None:
        output_name = config.output_embedding_name
        output_module = model.get_submodule(output_name)
    else:
        getter = getattr(model, "get_output_embeddings", None)
        output_module = getter() if getter is not None else None
        output_name = _name_of(model, output_module) if output_module is not None else None
    if output_module is None and config.lm_head != "keep":
        raise TokenMergeError(
            f"{type(model).__name__} has no output embeddings (LM head), so lm_head={config.lm_head!r} cannot "
            "apply; set output_embedding_name to the head's module path, or lm_head='keep' to merge inputs only."
        )
    if output_module is not None:
        _check_module(output_module, output_name, nn.Linear, on_meta)
        if output_module.weight.shape[0] != input_module.weight.shape[0]:
            raise TokenMergeError(
                f"{output_name} has {output_module.weight.shape[0]} rows but {input_name} has "
                f"{input_module.weight.shape[0]}; both must cover the same vocabulary."
            )
    return output_name, output_module


def swap_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put `new` at the dotted path `name` of `model`, keeping accelerate's dispatch hook of the module it replaces.

    Args:
        model: The model.
        name: Dotted path of the submodule to replace.
        new: The replacement.

    Returns:
        The module that was there (swap it back to undo).
    """
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    hook = getattr(old, "_hf_hook", None)
    if hook is not None:  # keep accelerate's device placement (device_map dispatch)
        from accelerate.hooks import add_hook_to_module

        add_hook_to_module(new, hook)
    setattr(parent, child, new)
    return old
