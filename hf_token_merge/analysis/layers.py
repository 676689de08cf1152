"""Cross-layer redundancy of speech-token hidden states on real inputs.

Two views: how similar neighbouring speech positions are at every layer (high similarity means the sequence
could be pooled there), and linear CKA between layers (how much each layer re-encodes the previous one).
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm


@torch.no_grad()
def collect_hidden_states(
    model: nn.Module,
    inputs: list[torch.Tensor],
    is_speech: torch.Tensor,
    max_tokens: int = 4096,
    show_progress: bool = True,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run the model on each input and keep the speech positions' hidden states.

    Args:
        model: A causal LM (`output_hidden_states=True` must be supported).
        inputs: 1-D id tensors.
        is_speech: `(vocab_size,)` bool mask of speech-token ids.
        max_tokens: Stop collecting once this many speech positions are held.
        show_progress: Show a tqdm bar.

    Returns:
        `(per_layer_states, adjacent_cosines)`: for each hidden-state layer (embeddings first) the `(T, d)`
        speech-position states, and the cosine of every adjacent speech/speech pair.
    """
    device = next(model.parameters()).device
    states: list[list[torch.Tensor]] = []
    adjacent: list[list[torch.Tensor]] = []
    held = 0
    for ids in tqdm(inputs, desc="hidden states", disable=not show_progress, leave=False):
        ids = ids.to(device)
        hidden = model(input_ids=ids[None], output_hidden_states=True).hidden_states
        speech = is_speech.to(device)[ids]
        pairs = speech[:-1] & speech[1:]
        if not states:
            states = [[] for _ in hidden]
            adjacent = [[] for _ in hidden]
        for layer, h in enumerate(hidden):
            h = h[0].float()
            states[layer].append(h[speech].cpu())
            adjacent[layer].append(torch.nn.functional.cosine_similarity(h[:-1][pairs], h[1:][pairs], dim=-1).cpu())
        held += int(speech.sum())
        if held >= max_tokens:
            break
    return [torch.cat(s)[:max_tokens] for s in states], [torch.cat(a) for a in adjacent]


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al., 2019) between two `(T, d)` representations of the same T positions."""
    x = (x - x.mean(0)).double()
    y = (y - y.mean(0)).double()
    cross = (y.T @ x).norm() ** 2
    return float(cross / ((x.T @ x).norm() * (y.T @ y).norm()))


def cka_matrix(states: list[torch.Tensor]) -> torch.Tensor:
    """Layer-by-layer linear CKA matrix."""
    count = len(states)
    matrix = torch.ones(count, count)
    for i in range(count):
        for j in range(i + 1, count):
            matrix[i, j] = matrix[j, i] = linear_cka(states[i], states[j])
    return matrix
