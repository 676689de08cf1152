"""Analytic prefill FLOPs of a decoder, so that a sequence merge's saving can be stated without a stopwatch.

Counting convention (2 FLOPs per multiply-add): per layer and per row of `n` tokens, the q/k/v/o projections
(`2 n d (h + 2 kv) hd + 2 n h hd d`), the gated MLP (`6 n d f`), and causal attention over `n (n + 1) / 2` query-key
pairs (`4 h hd` per pair: scores and the weighted sum). Embeddings, norms and rotary are left out; the LM head is
counted for the last position only, as in `generate`, over the rows it holds (fewer after a vocabulary merge). A
merge stage adds its cosine similarities (`2 n window d`) and pooling (`n d`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hf_token_merge.sequence.config import MergeStage


def layer_flops(config, tokens: torch.Tensor | int) -> torch.Tensor:
    """FLOPs of one decoder layer's prefill for rows of `tokens` tokens.

    Args:
        config: The decoder's config (`hidden_size`, `num_attention_heads`, `num_key_value_heads`,
            `intermediate_size`, optional `head_dim`).
        tokens: Tokens per row, a tensor or an int.

    Returns:
        float64 FLOPs per row.
    """
    n = torch.as_tensor(tokens, dtype=torch.float64)
    d = config.hidden_size
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    projections = 2 * n * d * (heads + 2 * kv_heads) * head_dim + 2 * n * heads * head_dim * d
    mlp = 6 * n * d * config.intermediate_size
    attention = 4 * heads * head_dim * n * (n + 1) / 2
    return projections + mlp + attention


def prefill_flops(
    config,
    tokens_per_layer: torch.Tensor,
    stages: Sequence[MergeStage] = (),
    tokens_before_stage=None,
    lm_head_rows: int | None = None,
) -> float:
    """FLOPs of a prefill whose layer `l` processes `tokens_per_layer[:, l]` tokens per row.

    Args:
        config: The decoder's config (also `vocab_size` for the LM head).
        tokens_per_layer: `(batch, num_layers)` tokens per row and layer.
        stages: Merge stages, to count their own cost.
        tokens_before_stage: Stage layer -> `(batch,)` tokens entering that stage.
        lm_head_rows: Rows the LM head multiplies (fewer than `config.vocab_size` after a vocabulary merge);
            default `config.vocab_size`.

    Returns:
        Total FLOPs over the batch.
    """
    tokens_per_layer = torch.as_tensor(tokens_per_layer, dtype=torch.float64)
    total = layer_flops(config, tokens_per_layer).sum()
    rows = config.vocab_size if lm_head_rows is None else lm_head_rows
    total += 2 * config.hidden_size * rows * tokens_per_layer.shape[0]
    for stage in stages:
        entering = torch.as_tensor(tokens_before_stage[stage.layer], dtype=torch.float64)
        window = stage.window if stage.mode == "affinity" else 0
        total += (2 * window + 1) * config.hidden_size * entering.sum()
    return float(total)
