"""The reference codec speech-LLM: a small Llama in Llasa's layout over the reference codec's K codes.

Vocabulary (`PreTrainedTokenizerFast`, built with the tokenizers library, ids in this order):

* 4 special tokens `<|pad|>`, `<|bos|>`, `<|eos|>`, `<|unk|>`;
* Llasa's 8 task markers `<|TEXT_GENERATION_START|>` ... `<|SPEECH_UNDERSTANDING_END|>` (all flagged special);
* the text vocabulary: 34 characters (space, apostrophe, `a`-`z` and `, . ; : ? !`), one token each
  (a character-level `WordLevel` model behind a one-character `Split` pre-tokenizer); `normalize_text` lower-cases
  a text and drops every other character, hyphens becoming spaces;
* K code tokens `<|s_0|>` ... `<|s_{K-1}|>` as added tokens that are *not* special, so the `reference` preset's
  regex `<\\|s_\\d+\\|>` selects exactly them.

Two tasks, each one sequence (`<|bos|>` first), marked with Llasa's task tokens:

* TTS (the main task): `<|bos|> <|TEXT_UNDERSTANDING_START|> text <|TEXT_UNDERSTANDING_END|>
  <|SPEECH_GENERATION_START|> codes <|SPEECH_GENERATION_END|>`; generation starts after
  `<|SPEECH_GENERATION_START|>` and stops at `<|SPEECH_GENERATION_END|>`.
* ASR: `<|bos|> <|SPEECH_UNDERSTANDING_START|> codes <|SPEECH_UNDERSTANDING_END|> <|TEXT_GENERATION_START|>
  text <|TEXT_GENERATION_END|>`; decoding starts after `<|TEXT_GENERATION_START|>`, with `ASR_NUM_BEAMS` beams.

The loss covers only what follows the prompt (codes and end marker; text and end marker). The codes are the
reference codec's (`load_reference_speech_codec`, 50 per second);
`hf_token_merge.evaluation.tts.reference_codec.codec_whisper_decoder` turns generated codes into the log-mel
Whisper reads. How the model was trained and what it scores is in its model card
(`assets/codec_speech_llm/README.md`) and in `recipes/speech_llm/`.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.reference.speech_llm import character_tokenizer, load_trained_llama, reference_llama_config

PAD, BOS, EOS, UNK = "<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"
TEXT_GENERATION_START, TEXT_GENERATION_END = "<|TEXT_GENERATION_START|>", "<|TEXT_GENERATION_END|>"
TEXT_UNDERSTANDING_START, TEXT_UNDERSTANDING_END = "<|TEXT_UNDERSTANDING_START|>", "<|TEXT_UNDERSTANDING_END|>"
SPEECH_GENERATION_START, SPEECH_GENERATION_END = "<|SPEECH_GENERATION_START|>", "<|SPEECH_GENERATION_END|>"
SPEECH_UNDERSTANDING_START, SPEECH_UNDERSTANDING_END = "<|SPEECH_UNDERSTANDING_START|>", "<|SPEECH_UNDERSTANDING_END|>"
TASK_TOKENS = (
    TEXT_GENERATION_START,
    TEXT_GENERATION_END,
    TEXT_UNDERSTANDING_START,
    TEXT_UNDERSTANDING_END,
    SPEECH_GENERATION_START,
    SPEECH_GENERATION_END,
    SPEECH_UNDERSTANDING_START,
    SPEECH_UNDERSTANDING_END,
)
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, *TASK_TOKENS)
CHARACTERS = " '" + "abcdefghijklmnopqrstuvwxyz" + ",.;:?!"
ASSET_DIR_NAME = "codec_speech_llm"
# ASR decoding of the bundled model: the fewest beams within 1 WER point of the best count on the first 100 dev
# utterances (1,064 words; corpus WER by beams: 1: 0.454, 2: 0.383, 3: 0.371, 4: 0.359, 6: 0.350, 8: 0.351;
# recipes/speech_llm/README.md). TTS stays greedy.
ASR_NUM_BEAMS = 4


def code_token(code: int) -> str:
    """The token string of codec code `code`: `<|s_N|>` (as in Llasa)."""
    return f"<|s_{code}|>"


def normalize_text(text: str) -> str:
    """Lower-case `text` and keep only the tokenizer's characters, with single spaces.

    Hyphens become spaces; every other character outside `CHARACTERS` is dropped.
    """
    text = text.lower().replace("-", " ")
    return " ".join("".join(ch for ch in text if ch in CHARACTERS).split())


def build_codec_llm_tokenizer(num_codes: int) -> PreTrainedTokenizerFast:
    """Build the tokenizer described in the module docstring.

    Args:
        num_codes: K, the codec's codebook size.

    Returns:
        A `PreTrainedTokenizerFast` with `len(tokenizer) == 12 + 34 + num_codes`.
    """
    if num_codes < 1:
        raise TokenMergeError(f"num_codes must be >= 1, got {num_codes}. Fix: pass the codec's codebook size.")
    codes = [code_token(n) for n in range(num_codes)]
    return character_tokenizer(SPECIAL_TOKENS, CHARACTERS, codes, TASK_TOKENS, model_max_length=2048)


def codec_llama_config(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_positions: int = 2048,
) -> LlamaConfig:
    """The architecture of the reference codec speech-LLM: a tied Llama (default 4 layers, hidden 256).

    Args:
        tokenizer: Its tokenizer (sets the vocabulary size and the bos/eos/pad ids).
        hidden_size: Width.
        num_layers: Decoder layers.
        num_heads: Attention heads (as many key/value heads).
        intermediate_size: MLP width; default 3 x hidden.
        max_positions: Longest sequence.

    Returns:
        The `LlamaConfig`.
    """
    # the same tied Llama as the reference speech-LLM (same special-token names), only sized differently
    return reference_llama_config(
        tokenizer,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 3 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
    )


class CodecSequenceBuilder:
    """Token-id sequences of the TTS and ASR tasks for one tokenizer.

    Args:
        tokenizer: A tokenizer from `build_codec_llm_tokenizer` (or loaded from its save).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerFast) -> None:
        ids = tokenizer.convert_tokens_to_ids
        self.tokenizer = tokenizer
        self.bos, self.eos, self.pad = ids(BOS), ids(EOS), ids(PAD)
        self.marker = {token: ids(token) for token in TASK_TOKENS}
        self.code_offset = ids(code_token(0))
        self.num_codes = len(tokenizer) - self.code_offset
        self.char_ids = {ch: ids(ch) for ch in CHARACTERS}
        self.char_of = {i: ch for ch, i in self.char_ids.items()}

    def code_ids(self, codes: Sequence[int]) -> list[int]:
        """Token ids of codec codes (each in `[0, K)`)."""
        if any(not 0 <= int(c) < self.num_codes for c in codes):
            raise TokenMergeError(f"Codes must lie in [0, {self.num_codes}). Fix: pass codes of the reference codec.")
        return [self.code_offset + int(c) for c in codes]

    def text_ids(self, text: str) -> list[int]:
        """Token ids of a text after `normalize_text`."""
        return [self.char_ids[ch] for ch in normalize_text(text)]

    def tts_prompt(self, text: str) -> list[int]:
        """`<|bos|> <|TEXT_UNDERSTANDING_START|> text <|TEXT_UNDERSTANDING_END|> <|SPEECH_GENERATION_START|>`."""
        m = self.marker
        return [
            self.bos,
            m[TEXT_UNDERSTANDING_START],
            *self.text_ids(text),
            m[TEXT_UNDERSTANDING_END],
            m[SPEECH_GENERATION_START],
        ]

    def tts_example(self, text: str, codes: Sequence[int]) -> tuple[list[int], list[int]]:
        """(input ids, labels) of one TTS example; the loss covers the codes and `<|SPEECH_GENERATION_END|>`."""
        prompt = self.tts_prompt(text)
        target = [*self.code_ids(codes), self.marker[SPEECH_GENERATION_END]]
        return prompt + target, [-100] * len(prompt) + target

    def asr_prompt(self, codes: Sequence[int]) -> list[int]:
        """`<|bos|> <|SPEECH_UNDERSTANDING_START|> codes <|SPEECH_UNDERSTANDING_END|> <|TEXT_GENERATION_START|>`."""
        m = self.marker
        return [
            self.bos,
            m[SPEECH_UNDERSTANDING_START],
            *self.code_ids(codes),
            m[SPEECH_UNDERSTANDING_END],
            m[TEXT_GENERATION_START],
        ]

    def asr_example(self, codes: Sequence[int], text: str) -> tuple[list[int], list[int]]:
        """(input ids, labels) of one ASR example; the loss covers the text and `<|TEXT_GENERATION_END|>`."""
        prompt = self.asr_prompt(codes)
        target = [*self.text_ids(text), self.marker[TEXT_GENERATION_END]]
        return prompt + target, [-100] * len(prompt) + target

    def decode_text(self, ids: Sequence[int]) -> str:
        """Characters of generated ids up to `<|TEXT_GENERATION_END|>` (or `<|eos|>`); other tokens are skipped."""
        chars = []
        for token_id in ids:
            if token_id in (self.marker[TEXT_GENERATION_END], self.eos):
                break
            if int(token_id) in self.char_of:
                chars.append(self.char_of[int(token_id)])
        return "".join(chars).strip()


def codec_speech_llm_dir() -> Path:
    """The folder of the bundled codec speech-LLM inside the installed package."""
    return Path(str(importlib.resources.files("hf_token_merge.reference") / "assets" / ASSET_DIR_NAME))


def load_codec_speech_llm(
    path: str | Path | None = None, dtype: torch.dtype = torch.float32
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Load the codec speech-LLM and its tokenizer (no download).

    Args:
        path: A folder written by `recipes/speech_llm/train.py`; the bundled model by default.
        dtype: Parameter dtype (stored as bfloat16).

    Returns:
        The model (eval mode, CPU) and its tokenizer.
    """
    folder = Path(path) if path is not None else codec_speech_llm_dir()
    return load_trained_llama(folder, dtype, "train it with `python recipes/speech_llm/train.py` (see its README).")
