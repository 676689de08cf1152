"""The merged modules: an embedding and an LM head addressed through the original token ids.

Both subclass their torch counterparts and keep the attribute name `weight`, so transformers' weight
tying (`_tied_weights_keys`), `save_pretrained` and accelerate's hooks treat them like the originals.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Index maps are int32: half the bytes of int64 on disk and in memory, and embedding / index_select accept
# int32 indices. Vocabularies never approach 2**31 rows.
INDEX_DTYPE = torch.int32


class MergedEmbedding(nn.Embedding):
    """An `nn.Embedding` over merged rows: `forward(ids) = weight[index_map[ids]]`.

    Args:
        num_rows: Rows of the merged table.
        embedding_dim: Hidden size.
        vocab_size: Size of the original id space (length of `index_map`).
        padding_idx: Merged row of the padding token, if any.
        weight: The merged table (a tensor or Parameter); None allocates an empty one on `device`.
        device: Where to allocate when `weight` is None.
        dtype: Weight dtype when `weight` is None.
    """

    def __init__(
        self,
        num_rows: int,
        embedding_dim: int,
        vocab_size: int,
        padding_idx: int | None = None,
        weight: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if weight is None:
            weight = torch.empty(num_rows, embedding_dim, device=device, dtype=dtype)
        super().__init__(num_rows, embedding_dim, padding_idx=padding_idx, _weight=weight)
        self.vocab_size = vocab_size
        self.register_buffer("index_map", torch.zeros(vocab_size, dtype=INDEX_DTYPE, device=weight.device))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(
            self.index_map[input_ids],
            self.weight,
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, vocab_size={self.vocab_size}"


class MergedLMHead(nn.Linear):
    """An `nn.Linear` LM head over merged rows that answers in the original id space.

    `forward(h) = (h @ weight.T + bias)[..., index_map] + logit_offset`. The offset holds the log share of
    each member of a merged row (logit correction) and -inf for dropped ids. With `compact_logits=True` it
    returns the logits over merged rows instead.

    Args:
        num_rows: Rows of the merged head.
        in_features: Hidden size.
        vocab_size: Size of the original id space.
        bias: The merged bias, True for an empty one, or False/None for none.
        compact_logits: Return merged-row logits.
        weight: The merged rows (a Parameter is used as is, so a tied embedding weight stays shared);
            None allocates an empty one on `device`.
        device: Where to allocate when `weight` is None.
        dtype: Weight dtype when `weight` is None.
    """

    def __init__(
        self,
        num_rows: int,
        in_features: int,
        vocab_size: int,
        bias: bool | torch.Tensor | None = False,
        compact_logits: bool = False,
        weight: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        nn.Module.__init__(self)  # skip nn.Linear's random init: every row comes from the merge or a checkpoint
        if weight is None:
            weight = torch.empty(num_rows, in_features, device=device, dtype=dtype)
        self.in_features = in_features
        self.out_features = num_rows
        self.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight)
        if bias is True:
            bias = torch.empty(num_rows, device=weight.device, dtype=weight.dtype)
        self.bias = nn.Parameter(bias) if isinstance(bias, torch.Tensor) else None
        self.vocab_size = vocab_size
        self.compact_logits = compact_logits
        self.register_buffer("index_map", torch.zeros(vocab_size, dtype=INDEX_DTYPE, device=weight.device))
        self.register_buffer("logit_offset", torch.zeros(vocab_size, device=weight.device, dtype=weight.dtype))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        logits = F.linear(hidden_states, self.weight, self.bias)
        if self.compact_logits:
            return logits
        return logits.index_select(-1, self.index_map).add_(self.logit_offset.to(logits.dtype))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, vocab_size={self.vocab_size}, compact_logits={self.compact_logits}"
