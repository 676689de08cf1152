"""A random-weight model shaped like Llasa-1B's vocabulary: 128,256 text + 8 markers + 65,536 speech tokens."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

TEXT_ROWS = 128_256 + 8
SPEECH_ROWS = 65_536
VOCAB_SIZE = TEXT_ROWS + SPEECH_ROWS  # 193,800
HIDDEN = 2048


def build_llasa_shaped_model(num_layers: int = 2, seed: int = 0) -> LlamaForCausalLM:
    """Llama-3.2-1B geometry (hidden 2048, 32 heads, 8 KV heads, MLP 8192), tied embeddings, random weights."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN,
        intermediate_size=8192,
        num_hidden_layers=num_layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
        bos_token_id=128_000,
        eos_token_id=128_001,
    )
    return LlamaForCausalLM(config).eval()


SPEECH_RANGE = (TEXT_ROWS, VOCAB_SIZE)
