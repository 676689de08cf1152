"""A runnable end-to-end example on a small, locally built speech-LLM.

    python -m hf_token_merge.demo

It builds a Llama with a Llasa-style vocabulary (text words plus 512 speech tokens `<|s_N|>`) whose
speech rows, like those of a codec trained on continuous speech, lie on a smooth random walk so that
neighbouring codes are near-duplicates. It merges the speech rows 8:1, checks that text logits of a
text-only prompt are unchanged, saves the slim checkpoint, reloads it with `AutoModelForCausalLM`, and
prints a before/after table. Issue "Real models and speech" replaces this with the bundled reference model.
"""

from __future__ import annotations

import os
import tempfile

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hf_token_merge import TokenMergeConfig, apply_token_merge

SPEECH_TOKENS = 512
TEXT_WORDS = 256


def build_demo_model(seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A tied-embedding Llama (hidden 64, 2 layers) with a word-level tokenizer and `<|s_N|>` speech tokens."""
    vocabulary = {"[UNK]": 0, **{f"word{i}": i + 1 for i in range(TEXT_WORDS)}}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(["<s>", "</s>", "<pad>"])
    backend.add_tokens([f"<|s_{i}|>" for i in range(SPEECH_TOKENS)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="[UNK]"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    speech_ids = tokenizer.convert_tokens_to_ids([f"<|s_{i}|>" for i in range(SPEECH_TOKENS)])
    with torch.no_grad():
        walk = torch.randn(SPEECH_TOKENS, config.hidden_size).mul_(0.05).cumsum(0)
        model.model.embed_tokens.weight[speech_ids] = walk + torch.randn(config.hidden_size)
    return model, tokenizer


def folder_bytes(path: str) -> int:
    """Bytes of the safetensors files in a folder."""
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".safetensors"))


def main() -> None:
    """Build, merge, save, reload, and print the before/after table."""
    model, tokenizer = build_demo_model()
    text = tokenizer("word1 word2 word3 word4", return_tensors="pt").input_ids
    speech = tokenizer("word1 <|s_10|> <|s_11|> <|s_12|> <|s_300|>", return_tensors="pt").input_ids
    with torch.no_grad():
        text_before, speech_before = model(text).logits, model(speech).logits

    with tempfile.TemporaryDirectory() as workdir:
        model.save_pretrained(os.path.join(workdir, "original"))
        config = TokenMergeConfig(preset="llasa", target_ratio=0.125)
        result = apply_token_merge(model, config, tokenizer=tokenizer)
        model.save_pretrained(os.path.join(workdir, "merged"))
        reloaded = AutoModelForCausalLM.from_pretrained(os.path.join(workdir, "merged")).eval()
        with torch.no_grad():
            text_after, speech_after, speech_reloaded = (
                model(text).logits,
                model(speech).logits,
                reloaded(speech).logits,
            )
        disk_before = folder_bytes(os.path.join(workdir, "original"))
        disk_after = folder_bytes(os.path.join(workdir, "merged"))

    stats = result.plan.statistics
    rows = [
        ("vocabulary rows", stats["vocab_size"], stats["rows_after"]),
        ("parameters", result.parameters_before, result.parameters_after),
        ("safetensors bytes", disk_before, disk_after),
    ]
    print(f"\n{result}\n")
    print("| metric | before | after | ratio |\n|---|---:|---:|---:|")
    for name, before, after in rows:
        print(f"| {name} | {before:,} | {after:,} | {after / before:.3f} |")
    print(f"\nmean cosine of merged rows to their merged row: {stats['mean_cosine_to_merged_row']:.4f}")
    unmerged = torch.ones(stats["vocab_size"], dtype=torch.bool)
    unmerged[result.plan.selected_ids] = False
    text_change = (text_after - text_before)[..., unmerged].abs().max()
    print(f"text-only prompt, max |logit change| over unmerged ids: {text_change:.2e}")
    print(f"speech prompt, max |logit change|: {(speech_after - speech_before).abs().max():.3f}")
    print(f"reloaded == in-memory merged logits: {torch.equal(speech_after, speech_reloaded)}")


if __name__ == "__main__":
    main()
