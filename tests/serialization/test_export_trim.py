"""export_plain beyond added tokens: a trimmed BPE base vocabulary, a padded vocabulary, quantizing the export."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hf_token_merge import TokenMergeConfig, apply_token_merge, export_plain
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.serialization import plain_layout, remap_token_ids
from tests.models import build_llama

# ids 0-3 the alphabet, 4-8 built by merges, 9 a special token
VOCAB = {"a": 0, "b": 1, "c": 2, "d": 3, "ab": 4, "cd": 5, "abc": 6, "abcd": 7, "dd": 8}
MERGES = [("a", "b"), ("c", "d"), ("ab", "c"), ("abc", "d"), ("d", "d")]


def _bpe_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE(vocab=dict(VOCAB), merges=list(MERGES)))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>")
    assert tokenizer.convert_tokens_to_ids("</s>") == 9
    return tokenizer


def _tiny_llama(vocab_size: int, tied: bool = True) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
        eos_token_id=9,
        bos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def _frequency_merge(model, tokenizer, counts: list[float], n_clusters: int):
    config = TokenMergeConfig(
        token_id_range=(4, 9), method="frequency", n_clusters=n_clusters, logit_correction="uniform"
    )
    return apply_token_merge(
        model,
        config,
        tokenizer=tokenizer,
        token_counts=torch.tensor(counts, dtype=torch.float64),
        show_progress=False,
    )


def test_frequency_merge_in_a_bpe_vocabulary_is_trimmed(tmp_path):
    tokenizer = _bpe_tokenizer()
    model = _tiny_llama(10)
    # ids 4..8: 'ab' and 'abcd' most frequent -> keep rows; 'cd', 'abc', 'dd' share one row -> removed
    result = _frequency_merge(model, tokenizer, [0, 0, 0, 0, 50, 1, 2, 40, 3, 0], n_clusters=3)
    assert result.plan.num_rows == 8
    with pytest.warns(UserWarning, match="1 kept base tokens lost the only BPE merge"):  # 'abcd' needs 'abc'
        export_plain(model, result.plan, tmp_path / "plain", tokenizer=tokenizer)

    plain_tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp_path / "plain")
    assert plain_tokenizer.get_vocab() == {"a": 0, "b": 1, "c": 2, "d": 3, "ab": 4, "abcd": 5, "</s>": 6}
    assert json.loads((tmp_path / "plain" / "tokenizer.json").read_text())["model"]["merges"] == [["a", "b"]]
    assert plain_tokenizer("ab cd abc dd abcd", add_special_tokens=False).input_ids == [4, 2, 3, 4, 2, 3, 3, 4, 2, 3]
    assert plain_tokenizer.convert_ids_to_tokens([5, 4, 2]) == ["abcd", "ab", "c"]  # still decodable

    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "plain").eval()
    assert plain.config.vocab_size == 7 and plain.config.eos_token_id == 6
    embedding = model.get_input_embeddings()
    kept = torch.tensor([0, 1, 2, 3, 4, 7, 9])  # original ids behind plain ids 0..6
    assert torch.equal(plain.get_input_embeddings().weight, embedding.weight[embedding.index_map[kept]])


def test_removing_the_bpe_alphabet_is_refused_before_writing(tmp_path):
    tokenizer = _bpe_tokenizer()
    model = _tiny_llama(10)
    config = TokenMergeConfig(token_id_range=(0, 9), method="frequency", n_clusters=4, logit_correction="uniform")
    counts = torch.tensor([0, 0, 0, 0, 5, 4, 3, 2, 1, 0], dtype=torch.float64)
    result = apply_token_merge(model, config, tokenizer=tokenizer, token_counts=counts, show_progress=False)
    with pytest.raises(TokenMergeError, match=r"removes base tokens \['a', 'b', 'c', 'd'\] that no BPE merge builds"):
        export_plain(model, result.plan, tmp_path / "plain", tokenizer=tokenizer)
    assert not (tmp_path / "plain").exists()


def test_remap_token_ids_drops_removed_ids_from_lists_and_refuses_them_elsewhere():
    table = torch.tensor([0, -1, 1, 2])
    assert remap_token_ids({"suppress_tokens": [1, 2, 3], "eos_token_id": 3}, table) == {
        "suppress_tokens": [1, 2],
        "eos_token_id": 2,
    }
    with pytest.raises(TokenMergeError, match="The config's eos_token_id uses token id 1, which this merge removes"):
        remap_token_ids({"eos_token_id": 1}, table)
    with pytest.raises(TokenMergeError, match=r"lang_to_id\['<\|en\|>'\] uses token id 1"):
        remap_token_ids({"lang_to_id": {"<|en|>": 1}}, table)


@pytest.mark.parametrize("multiple", [0, -64, 1.5, True])
def test_bad_padding_multiple_is_refused(multiple, tmp_path):
    bundle = build_llama()
    config = TokenMergeConfig(**bundle.selection, n_clusters=8)
    result = apply_token_merge(bundle.model, config, tokenizer=bundle.tokenizer, show_progress=False)
    with pytest.raises(TokenMergeError, match="pad_vocab_to_multiple_of must be a positive integer"):
        export_plain(bundle.model, result.plan, tmp_path / "plain", pad_vocab_to_multiple_of=multiple)
    with pytest.raises(TokenMergeError, match="pad_vocab_to_multiple_of must be a positive integer"):
        plain_layout(result.plan, pad_vocab_to_multiple_of=multiple)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_padded_vocabulary_is_a_multiple_and_never_generated(tied, tmp_path):
    bundle = build_llama(tied=tied)
    config = TokenMergeConfig(**bundle.selection, n_clusters=bundle.n_centers, logit_correction="none")
    result = apply_token_merge(bundle.model, config, tokenizer=bundle.tokenizer, show_progress=False)
    rows = result.plan.num_rows
    export_plain(bundle.model, result.plan, tmp_path / "plain", tokenizer=bundle.tokenizer, pad_vocab_to_multiple_of=64)

    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "plain").eval()
    padded = -(-rows // 64) * 64
    assert rows % 64 != 0 and plain.config.vocab_size == padded
    assert plain.get_input_embeddings().weight.shape[0] == plain.get_output_embeddings().weight.shape[0] == padded
    padding = list(range(rows, padded))
    assert set(padding) <= set(plain.generation_config.suppress_tokens)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp_path / "plain")
    assert len(tokenizer) == padded  # the model's 3 rows beyond its tokenizer are named too: ids have no holes
    assert tokenizer.convert_ids_to_tokens([rows - 3, rows, padded - 1]) == [
        "<|vocab_pad_0|>",
        "<|vocab_pad_3|>",
        f"<|vocab_pad_{padded - rows + 2}|>",
    ]
    assert torch.count_nonzero(plain.get_input_embeddings().weight[rows:]) == 0

    encoded = tokenizer("hello world", return_tensors="pt")
    expected = plain.generate(**encoded, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    with torch.no_grad():  # a padding row that would win every step: suppression must still keep it out
        hidden = plain.model(**encoded).last_hidden_state[0, -1]
        plain.get_output_embeddings().weight[rows + 1] = 1000 * hidden / hidden.norm()
        assert plain(**encoded).logits[0, -1].argmax() == rows + 1
    out = plain.generate(
        **encoded,
        max_new_tokens=12,
        min_new_tokens=12,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
    )
    assert not set(out.sequences[0, encoded.input_ids.shape[1] :].tolist()) & set(padding)
    assert all(torch.isinf(score[0, padding]).all() for score in out.scores)
    if not tied:  # untied: the input side is unchanged, so the text is the unpadded export's
        assert torch.equal(out.sequences, expected)


def test_merge_then_export_then_int8_dynamic_quantization_matches_the_unquantized_export(tmp_path):
    """The README's order: merge, export plain, then quantize with a standard CPU quantizer (int8 Linear weights)."""
    bundle = build_llama(layers=2)
    config = TokenMergeConfig(**bundle.selection, n_clusters=bundle.n_centers, logit_correction="none")
    result = apply_token_merge(bundle.model, config, tokenizer=bundle.tokenizer, show_progress=False)
    export_plain(bundle.model, result.plan, tmp_path / "plain", tokenizer=bundle.tokenizer, pad_vocab_to_multiple_of=64)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "plain").eval()
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        quantized = torch.ao.quantization.quantize_dynamic(
            AutoModelForCausalLM.from_pretrained(tmp_path / "plain").eval(), {torch.nn.Linear}, dtype=torch.qint8
        )
    assert type(quantized.model.layers[0].mlp.down_proj).__name__ == "Linear"
    assert quantized.model.layers[0].mlp.down_proj.weight().dtype == torch.qint8

    tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp_path / "plain")
    encoded = tokenizer("hello world", return_tensors="pt")
    with torch.no_grad():
        reference, approximate = plain(**encoded).logits, quantized(**encoded).logits
    rows = result.plan.num_rows
    # int8 weights, activations quantized per batch: logits within 2 % of their range (measured 0.142 of 19.5: 0.73 %)
    error = (approximate[..., :rows] - reference[..., :rows]).abs().max()
    span = reference[..., :rows].max() - reference[..., :rows].min()
    assert error <= 0.02 * span
    settings = {"max_new_tokens": 16, "min_new_tokens": 16, "do_sample": False}
    assert torch.equal(quantized.generate(**encoded, **settings), plain.generate(**encoded, **settings))


def test_similarity_cluster_in_a_bpe_vocabulary_keeps_its_representative(tmp_path):
    from hf_token_merge import plan_token_merge

    tokenizer = _bpe_tokenizer()
    model = _tiny_llama(10)
    config = TokenMergeConfig(token_id_range=(4, 9), n_clusters=4, logit_correction="none")
    # 'cd' (5) and 'dd' (8) share a row; 'cd' is the representative (the smallest id), so 'dd' leaves the vocabulary
    plan = plan_token_merge(model, config, tokenizer=tokenizer, labels=torch.tensor([0, 1, 2, 3, 1]))
    apply_token_merge(model, plan, show_progress=False)
    export_plain(model, plan, tmp_path / "plain", tokenizer=tokenizer)

    plain_tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp_path / "plain")
    vocab = {"a": 0, "b": 1, "c": 2, "d": 3, "ab": 4, "cd": 5, "abc": 6, "abcd": 7, "</s>": 8}
    assert plain_tokenizer.get_vocab() == vocab
    assert tokenizer("dd cd abcd", add_special_tokens=False).input_ids == [8, 5, 4, 5]  # the original
    assert plain_tokenizer("dd cd abcd", add_special_tokens=False).input_ids == [3, 3, 5, 4, 5]
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "plain")
    assert plain.config.vocab_size == 9  # the merged row stays: 'cd' still owns it
