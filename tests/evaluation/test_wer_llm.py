"""WER scoring and the speech-LLM WER path on a tiny random Llama: mechanics, determinism, merged identity."""

from __future__ import annotations

import json
import math
import re

import jiwer
import pytest
import torch

from hf_token_merge import TokenMergeConfig, apply_token_merge
from hf_token_merge.evaluation import (
    ErrorCounts,
    corpus_error_counts,
    error_counts,
    evaluate_wer,
    normalize_transcript,
    unit_prompt_builder,
    word_error_rate,
)
from tests.evaluation.dist_eval import llama_data, llama_prompt_builder
from tests.models import build_llama


def test_counts_add_up_and_match_jiwer():
    references = ["Two. When forty winters", "the cat sat on the mat", "hello"]
    hypotheses = ["2 when 40 winter", "the cat sat mat", "hello world again"]
    total = corpus_error_counts(references, hypotheses)
    assert total == ErrorCounts(hits=8, substitutions=1, deletions=2, insertions=2)
    assert total.target_words == 11
    normalized = (
        [normalize_transcript(text) for text in references],
        [normalize_transcript(text) for text in hypotheses],
    )
    assert total.wer == pytest.approx(jiwer.wer(*normalized)) == word_error_rate(references, hypotheses)
    assert error_counts("", "a b") == ErrorCounts(insertions=2)
    assert error_counts("a b", "") == ErrorCounts(deletions=2)
    assert ErrorCounts().wer == 0.0 and ErrorCounts(insertions=1).wer == float("inf")


def test_unit_prompt_builder(llasa_tok):
    build = unit_prompt_builder(
        llasa_tok, prefix=["<|TEXT_UNDERSTANDING_START|>"], suffix=["<|TEXT_UNDERSTANDING_END|>"]
    )
    ids = build({"units": [3, 0, 47]})
    tokens = llasa_tok.convert_ids_to_tokens(ids)
    assert tokens == [
        "<|begin_of_text|>",
        "<|TEXT_UNDERSTANDING_START|>",
        "<|s_3|>",
        "<|s_0|>",
        "<|s_47|>",
        "<|TEXT_UNDERSTANDING_END|>",
    ]
    assert build({"units": "<|s_3|><|s_0|><|s_47|>"}) == ids  # unit-token strings work too
    with pytest.raises(ValueError, match=re.escape("no token '<|asr|>'")):
        unit_prompt_builder(llasa_tok)  # the default task tokens are not in this vocabulary
    with pytest.raises(ValueError, match="no column 'units'"):
        build({"speech": [1]})


def _llm_wer(bundle, examples, **kwargs):
    return evaluate_wer(
        bundle.model,
        examples,
        tokenizer=bundle.tokenizer,
        prompt_builder=llama_prompt_builder(bundle.tokenizer),
        max_new_tokens=5,
        show_progress=False,
        **kwargs,
    )


def test_speech_llm_wer_mechanics_and_determinism(tmp_path):
    bundle = build_llama()
    _, examples = llama_data(bundle.tokenizer)
    first = _llm_wer(bundle, examples, batch_size=3, output_dir=tmp_path)
    again = _llm_wer(bundle, examples, batch_size=3)
    assert first.predictions == again.predictions and first.metrics() == again.metrics()
    assert first.num_utterances == 7 and first.audio_seconds is None and first.rtfx is None
    assert first.counts.target_words == sum(len(example["text"].split()) for example in examples)
    assert [record["id"] for record in first.predictions] == [example["id"] for example in examples]

    # The generated continuation is what a direct greedy generate() of the same prompt decodes to.
    prompt = llama_prompt_builder(bundle.tokenizer)(examples[0])
    with torch.no_grad():
        out = bundle.model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=5)
    new = out[0, len(prompt) :].tolist()
    eos = bundle.tokenizer.eos_token_id
    new = new[: new.index(eos)] if eos in new else new
    assert first.predictions[0]["prediction"] == bundle.tokenizer.decode(new, skip_special_tokens=True).strip()

    lines = (tmp_path / "wer_predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["prediction"] for line in lines] == [r["prediction"] for r in first.predictions]
    assert json.loads((tmp_path / "wer.json").read_text())["metrics"] == json.loads(json.dumps(first.metrics()))


def _bigram_llama(tokenizer, next_word_probabilities: dict[str, dict[str, float]]):
    """A Llama whose next token depends only on the current one, with the given probabilities.

    One layer whose attention and MLP write nothing, one-hot embeddings (RMSNorm scales them by sqrt(hidden)), and an
    untied head holding log-probabilities; every other continuation gets logit -30, every other word the eos.
    """
    model = build_llama(tied=False).model
    ids = {word: tokenizer.convert_tokens_to_ids(word) for word in next_word_probabilities}
    hidden = model.config.hidden_size
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for norm in (
            model.model.norm,
            model.model.layers[0].input_layernorm,
            model.model.layers[0].post_attention_layernorm,
        ):
            norm.weight.fill_(1.0)
        embedding, head = model.get_input_embeddings().weight, model.lm_head.weight
        embedding[:, len(ids)] = 1.0  # every word not in the table
        head[:, len(ids)] = -30.0 / hidden**0.5
        head[tokenizer.eos_token_id, len(ids)] = 0.0
        for column, (word, continuations) in enumerate(next_word_probabilities.items()):
            embedding[ids[word]] = 0.0
            embedding[ids[word], column] = 1.0
            head[:, column] = -30.0 / hidden**0.5
            for following, probability in continuations.items():
                head[tokenizer.convert_tokens_to_ids(following), column] = math.log(probability) / hidden**0.5
    return model


def test_beam_search_finds_the_sequence_greedy_decoding_misses():
    tokenizer = build_llama().tokenizer
    # "the" -> "cat" (0.5) beats "dog" (0.4), but "cat" spreads over five words (0.1 each) while "dog" -> "sat" is
    # 0.99: greedy decodes "cat hello" (0.05), two beams "dog sat" (0.396)
    model = _bigram_llama(
        tokenizer,
        {
            "the": {"cat": 0.5, "dog": 0.4},
            "cat": {word: 0.1 for word in ("hello", "world", "on", "mat", "speech")},
            "dog": {"sat": 0.99},
        },
    )
    the, speech = tokenizer.convert_tokens_to_ids("the"), tokenizer.convert_tokens_to_ids("speech")
    examples = [
        {"id": "short", "text": "dog sat", "prompt": [the]},
        {"id": "long", "text": "dog sat", "prompt": [speech] * 3 + [the]},
    ]

    def wer(**kwargs):
        return evaluate_wer(
            model, examples, tokenizer=tokenizer, prompt_builder=lambda example: example["prompt"], max_new_tokens=4,
            batch_size=2, show_progress=False, **kwargs,
        )  # fmt: skip

    greedy, beams = wer(), wer(num_beams=2)
    assert [r["prediction"] for r in greedy.predictions] == ["cat hello"] * 2 and greedy.wer == 1.0
    assert [r["prediction"] for r in beams.predictions] == ["dog sat"] * 2 and beams.wer == 0.0


def test_singleton_merge_gives_identical_speech_llm_wer():
    bundle, merged = build_llama(), build_llama()
    apply_token_merge(
        merged.model,
        TokenMergeConfig(preset="llasa", n_clusters=merged.selected_ids.numel()),
        tokenizer=merged.tokenizer,
        show_progress=False,
    )
    _, examples = llama_data(bundle.tokenizer)
    before, after = _llm_wer(bundle, examples, batch_size=2), _llm_wer(merged, examples, batch_size=2)
    assert after.predictions == before.predictions and after.metrics() == before.metrics()


def test_wer_bad_input(whisper):
    bundle = build_llama()
    _, examples = llama_data(bundle.tokenizer)
    with pytest.raises(ValueError, match="causal LM LlamaForCausalLM but no prompt_builder"):
        evaluate_wer(bundle.model, examples, tokenizer=bundle.tokenizer)
    with pytest.raises(ValueError, match="needs its tokenizer"):
        evaluate_wer(bundle.model, examples, prompt_builder=llama_prompt_builder(bundle.tokenizer))
    with pytest.raises(ValueError, match="no column 'text'"):
        _llm_wer(bundle, [{"units": [1, 2]}])
    with pytest.raises(ValueError, match="no column 'units'"):
        _llm_wer(bundle, [{"text": "a"}])
    with pytest.raises(ValueError, match="empty"):
        _llm_wer(bundle, [])
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=re.escape(f"num_beams must be an int >= 1, got {bad!r}. Fix: pass 1")):
            _llm_wer(bundle, examples, num_beams=bad)
    with pytest.raises(ValueError, match="needs its processor"):
        evaluate_wer(whisper.model, [{"audio": "x.wav", "text": "a"}])
