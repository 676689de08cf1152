"""The bundled reference speech-LLM: a small Llama trained here on discrete speech units.

Vocabulary (`PreTrainedTokenizerFast`, built with the tokenizers library, ids in this order):

* 8 special tokens: `<|pad|>`, `<|bos|>`, `<|eos|>`, `<|unk|>`, and the task markers `<|asr|>`,
  `<|continue|>`, `<|text_start|>`, `<|text_end|>` (all flagged special);
* 28 text characters: space, apostrophe and `a`-`z` (a character-level `WordLevel` model behind a
  one-character `Split` pre-tokenizer; transcripts are lower-cased and stripped of other punctuation by
  `normalize_training_text`);
* K speech units `<|s_0|>` ... `<|s_{K-1}|>` as added tokens that are *not* special, so the `reference`
  preset's regex `<\\|s_\\d+\\|>` selects exactly them.

Two tasks, as single sequences (`<|bos|>` first, `<|eos|>` last):

* ASR: `<|bos|> <|asr|> units <|text_start|> characters <|text_end|> <|eos|>`; greedy decoding from
  `<|text_start|>` until `<|text_end|>`.
* Unit continuation: `<|bos|> <|continue|> units <|eos|>`; a unit prefix is continued with units.

The units come from `SpeechUnitTokenizer` (Whisper tiny.en encoder layer + k-means, runs collapsed).
How the model was trained and what it scores is in the model card next to the weights
(`assets/reference_speech_llm/README.md`) and in `recipes/reference_model/`.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hf_token_merge.errors import TokenMergeError

PAD, BOS, EOS, UNK = "<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"
ASR, CONTINUE, TEXT_START, TEXT_END = "<|asr|>", "<|continue|>", "<|text_start|>", "<|text_end|>"


SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, ASR, CONTINUE, TEXT_START, TEXT_END)
CHARACTERS = " '" + "abcdefghijklmnopqrstuvwxyz"
UNIT_PATTERN = re.compile(r"<\|s_(\d+)\|>")

ASSET_DIR_NAME = "reference_speech_llm"
UNIT_TOKENIZER_DIR = "speech_unit_tokenizer"
EVAL_SET_NAME = "eval_test.jsonl"


def unit_token(unit: int) -> str:
    """The token string of speech unit `unit`: `<|s_N|>` (as in Llasa)."""
    return f"<|s_{unit}|>"


def normalize_training_text(text: str) -> str:
    """Lower-case `text` and keep only the tokenizer's characters (`a`-`z`, apostrophe, single spaces).

    Hyphens become spaces; every other character is dropped.
    """
    text = text.lower().replace("-", " ")
    text = "".join(ch for ch in text if ch in CHARACTERS)
    return " ".join(text.split())


def build_speech_llm_tokenizer(num_units: int) -> PreTrainedTokenizerFast:
    """Build the character + unit tokenizer described in the module docstring.

    Args:
        num_units: K, the number of speech units.

    Returns:
        A `PreTrainedTokenizerFast` with `len(tokenizer) == 8 + 28 + num_units`.
    """
    return character_tokenizer(
        SPECIAL_TOKENS,
        CHARACTERS,
        [unit_token(n) for n in range(num_units)],
        [ASR, CONTINUE, TEXT_START, TEXT_END],
        model_max_length=1024,
    )


def character_tokenizer(
    special_tokens: Sequence[str],
    characters: str,
    speech_tokens: Sequence[str],
    task_tokens: Sequence[str],
    model_max_length: int,
) -> PreTrainedTokenizerFast:
    """A character-level tokenizer with speech tokens appended: the layout of both bundled speech-LLMs.

    Args:
        special_tokens: pad, bos, eos, unk (in that order), then the task markers; ids 0.. in this order.
        characters: The text alphabet, one token per character, after the special tokens.
        speech_tokens: Added (not special) tokens after the characters, e.g. `<|s_0|>`...
        task_tokens: The special tokens registered as `additional_special_tokens`.
        model_max_length: The tokenizer's `model_max_length`.

    Returns:
        A left-padding `PreTrainedTokenizerFast`.
    """
    pad, bos, eos, unk = special_tokens[:4]
    vocab = {token: i for i, token in enumerate(tuple(special_tokens) + tuple(characters))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in special_tokens])
    backend.add_tokens([AddedToken(token, special=False, normalized=False) for token in speech_tokens])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        additional_special_tokens=list(task_tokens),
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
    )
    tokenizer.padding_side = "left"
    return tokenizer


def reference_llama_config(tokenizer: PreTrainedTokenizerFast, **overrides) -> LlamaConfig:
    """The architecture of the reference speech-LLM (hidden 256, 4 layers, 4 heads, tied embeddings)."""
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        rope_theta=10_000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
    )
    settings.update(overrides)
    return LlamaConfig(**settings)


class SequenceBuilder:
    """Token-id sequences of the two tasks for one tokenizer."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast) -> None:
        ids = tokenizer.convert_tokens_to_ids
        self.tokenizer = tokenizer
        self.bos, self.eos, self.pad = ids(BOS), ids(EOS), ids(PAD)
        self.asr, self.cont, self.text_start, self.text_end = ids(ASR), ids(CONTINUE), ids(TEXT_START), ids(TEXT_END)
        self.unit_offset = ids(unit_token(0))
        self.num_units = len(tokenizer) - self.unit_offset
        self.char_ids = {ch: ids(ch) for ch in CHARACTERS}

    def unit_ids(self, units: Sequence[int]) -> list[int]:
        if any(not 0 <= u < self.num_units for u in units):
            raise TokenMergeError(f"Units must lie in [0, {self.num_units}).")
        return [self.unit_offset + u for u in units]

    def text_ids(self, text: str) -> list[int]:
        return [self.char_ids[ch] for ch in normalize_training_text(text)]

    def asr_prompt(self, units: Sequence[int]) -> list[int]:
        """`<|bos|> <|asr|> units <|text_start|>`: what greedy ASR decoding starts from."""
        return [self.bos, self.asr, *self.unit_ids(units), self.text_start]

    def asr_example(self, units: Sequence[int], text: str) -> tuple[list[int], list[int]]:
        """(input ids, labels) of one ASR example; the loss covers the text, `<|text_end|>` and `<|eos|>`."""
        prompt = self.asr_prompt(units)
        target = [*self.text_ids(text), self.text_end, self.eos]
        return prompt + target, [-100] * len(prompt) + target

    def continuation_example(self, units: Sequence[int]) -> tuple[list[int], list[int]]:
        """(input ids, labels) of one unit-continuation example; the loss covers every unit and `<|eos|>`."""
        ids = [self.bos, self.cont, *self.unit_ids(units), self.eos]
        return ids, [-100, -100, *ids[2:]]

    def decode_text(self, ids: Sequence[int]) -> str:
        """Characters of generated ids up to `<|text_end|>`; other tokens are skipped."""
        chars = []
        for token_id in ids:
            if token_id in (self.text_end, self.eos):
                break
            token = self.tokenizer.convert_ids_to_tokens(int(token_id))
            if token in self.char_ids:
                chars.append(token)
        return "".join(chars).strip()


def _pad_left(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


@torch.inference_mode()
def transcribe_units(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    unit_sequences: Sequence[Sequence[int]],
    batch_size: int = 16,
    max_new_tokens: int = 300,
) -> list[str]:
    """Greedy ASR: one transcript (lower case, no punctuation) per unit sequence.

    Args:
        model: The reference speech-LLM (merged or not: logits come back in the original id space).
        tokenizer: Its tokenizer.
        unit_sequences: Unit ids in `[0, K)`.
        batch_size: Sequences per `generate` call (left-padded).
        max_new_tokens: Cap on generated characters.

    Returns:
        The decoded transcripts.
    """
    builder = SequenceBuilder(tokenizer)
    # Sort by length so batches pad little; restore the order at the end.
    order = sorted(range(len(unit_sequences)), key=lambda i: len(unit_sequences[i]))
    texts: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = _pad_left([builder.asr_prompt(unit_sequences[i]) for i in chunk], builder.pad)
        out = model.generate(
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            eos_token_id=[builder.text_end, builder.eos],
            pad_token_id=builder.pad,
        )
        for i, row in zip(chunk, out[:, ids.shape[1] :].tolist(), strict=True):
            texts[i] = builder.decode_text(row)
    return [texts[i] for i in range(len(unit_sequences))]


@torch.inference_mode()
def unit_perplexity(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    unit_sequences: Sequence[Sequence[int]],
    batch_size: int = 16,
) -> float:
    """Perplexity of the units (and the closing `<|eos|>`) under the continuation task.

    Args:
        model: The reference speech-LLM.
        tokenizer: Its tokenizer.
        unit_sequences: Unit ids in `[0, K)`.
        batch_size: Sequences per forward pass.

    Returns:
        `exp(total negative log-likelihood / predicted tokens)` over all sequences.
    """
    builder = SequenceBuilder(tokenizer)
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(unit_sequences), batch_size):
        examples = [builder.continuation_example(u) for u in unit_sequences[start : start + batch_size]]
        width = max(len(ids) for ids, _ in examples)
        ids = torch.full((len(examples), width), builder.pad, dtype=torch.long)
        labels = torch.full((len(examples), width), -100, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, (row, row_labels) in enumerate(examples):
            ids[i, : len(row)], labels[i, : len(row)], mask[i, : len(row)] = (
                torch.tensor(row),
                torch.tensor(row_labels),
                1,
            )
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        shifted = labels[:, 1:].to(logits.device)
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), shifted.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total_nll += float(nll)
        total_tokens += int((shifted != -100).sum())
    return math.exp(total_nll / total_tokens)


def reference_speech_llm_dir() -> Path:
    """The folder of the bundled reference speech-LLM inside the installed package."""
    return Path(str(importlib.resources.files("hf_token_merge.reference") / "assets" / ASSET_DIR_NAME))


def load_reference_speech_llm(
    dtype: torch.dtype = torch.float32,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Load the bundled reference speech-LLM and its tokenizer (no download).

    Args:
        dtype: Parameter dtype (stored as float32).

    Returns:
        The model (eval mode, CPU) and its tokenizer.
    """
    return load_trained_llama(
        reference_speech_llm_dir(), dtype, "build it with `python recipes/reference_model/run_all.py`."
    )


def load_trained_llama(
    folder: Path, dtype: torch.dtype, how_to_build: str
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Load a Llama and its fast tokenizer from a local folder written by one of the reference recipes.

    Args:
        folder: The model folder.
        dtype: Parameter dtype.
        how_to_build: The fix named when the folder holds no model (e.g. "train it with `python ...`.").

    Returns:
        The model (eval mode, CPU) and its tokenizer.

    Raises:
        FileNotFoundError: The folder has no `config.json`.
    """
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no trained model; {how_to_build}")
    model = LlamaForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer


def load_reference_eval_set() -> list[dict]:
    """The held-out synthetic test split as `{"id", "text", "units"}` rows (units in `[0, K)`)."""
    path = reference_speech_llm_dir() / EVAL_SET_NAME
    with open(path, encoding="utf-8") as rows:
        return [json.loads(line) for line in rows if line.strip()]


def load_reference_unit_tokenizer(cache_dir=None):
    """The `SpeechUnitTokenizer` the reference speech-LLM was trained with (encoder from the user cache)."""
    from hf_token_merge.reference.speech_units import SpeechUnitTokenizer

    return SpeechUnitTokenizer.from_pretrained(reference_speech_llm_dir() / UNIT_TOKENIZER_DIR, cache_dir=cache_dir)
