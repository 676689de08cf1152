"""The generated model card is true: its metadata passes the Hub's schema (huggingface_hub's `ModelCardData`), it
names the model's real Auto classes and repo id, and its Python snippets run as written."""

from __future__ import annotations

import argparse
import re

import huggingface_hub
import pytest
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import LlamaConfig, WhisperConfig, WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizerFast

from hf_token_merge import TokenMergeConfig, apply_token_merge
from hf_token_merge.cli.compress import _base_model, _check_card_arguments
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.hub import CardRow, build_model_card, stage_folder
from hf_token_merge.hub.card import loading_classes
from tests.models import WHISPER_MEL_BINS, build_llama, build_tokenizer, build_whisper, whisper_inputs

REPO_ID = "me/tiny-merged"


def whisper_processor(vocab_size: int) -> WhisperProcessor:
    """A real WhisperProcessor (feature extractor + Whisper fast tokenizer) over the tiny Whisper's vocabulary."""
    # the merged block (ids 16..47) is added tokens, as a speech-LLM's codes are; the base vocabulary stays whole
    words = [f"w{i}" for i in range(15)] + ["<unk>"]
    added = [f"<|a_{i}|>" for i in range(32)]
    trailing = ["<|endoftext|>"] + [f"<|t_{i}|>" for i in range(vocab_size - 49)]
    backend = build_tokenizer(
        words, [], added, trailing, bos="<|endoftext|>", eos="<|endoftext|>", pad="<|endoftext|>"
    ).backend_tokenizer
    special = "<|endoftext|>"
    tokenizer = WhisperTokenizerFast(
        tokenizer_object=backend, bos_token=special, eos_token=special, pad_token=special, unk_token="<unk>"
    )
    assert len(tokenizer) == vocab_size
    return WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=WHISPER_MEL_BINS), tokenizer=tokenizer
    )


def card_for(model, result, *, base_model="me/tiny", license_id="apache-2.0") -> ModelCard:
    return build_model_card(
        repo_id=REPO_ID,
        base_model=base_model,
        model_config=model.config,
        license=license_id,
        config=result.plan.config,
        plan_statistics=result.plan.statistics,
        rows=[CardRow("WER", 0.1, 0.104)],
        eval_results=[
            EvalResult(
                task_type="automatic-speech-recognition",
                dataset_type="hf_token_merge/librivox",
                dataset_name="LibriVox sonnets",
                metric_type="wer",
                metric_value=0.104,
            )
        ],
    )


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def run_snippets(card_text: str, folder, tmp_path, monkeypatch) -> list[dict]:
    """Execute every python block of the card, with the repo id resolving to the locally staged folder."""
    blocks = python_blocks(card_text)
    assert len(blocks) == 2 and all(f'"{REPO_ID}"' in block for block in blocks)

    def snapshot_download(repo_id, **kwargs):
        assert repo_id == str(folder)  # the card's repo id, swapped for the staged folder below
        return repo_id

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.chdir(tmp_path)  # the snippet writes "plain-model" into the working directory
    namespaces = []
    for block in blocks:
        namespace: dict = {}
        exec(compile(block.replace(f'"{REPO_ID}"', repr(str(folder))), "<card snippet>", "exec"), namespace)
        namespaces.append(namespace)
    return namespaces


def check_metadata(card: ModelCard) -> dict:
    """Parse the card back as the Hub does and round-trip its metadata through `ModelCardData`."""
    parsed = ModelCard(str(card))
    data = parsed.data.to_dict()
    again = ModelCardData(**data)
    assert again.to_dict() == data
    assert again.eval_results[0].metric_value == 0.104 and again.eval_results[0].metric_type == "wer"
    return data


def test_causal_lm_card_is_valid_and_its_snippets_run(tmp_path, monkeypatch):
    from transformers import LlamaForCausalLM

    bundle = build_llama(n_speech=48, n_centers=8)
    result = apply_token_merge(
        bundle.model, TokenMergeConfig(preset="llasa", n_clusters=8), tokenizer=bundle.tokenizer, show_progress=False
    )
    card = card_for(bundle.model, result)
    data = check_metadata(card)
    assert data["pipeline_tag"] == "text-generation" and data["license"] == "apache-2.0"
    assert data["base_model"] == "me/tiny" and data["base_model_relation"] == "quantized"
    assert f'AutoModelForCausalLM.from_pretrained("{REPO_ID}")' in card.text
    assert f'tokenizer = AutoTokenizer.from_pretrained("{REPO_ID}")' in card.text

    folder = tmp_path / "model"
    stage_folder(folder, bundle.model, tokenizer=bundle.tokenizer, card=card, plan=result.plan)
    loaded, exported = run_snippets(card.text, folder, tmp_path, monkeypatch)
    ids = torch.tensor([[1, 5, 9, 20, 30]])
    with torch.no_grad():
        expected = bundle.model(ids).logits
        assert isinstance(loaded["model"], LlamaForCausalLM)
        torch.testing.assert_close(loaded["model"](ids).logits, expected)
        plain = LlamaForCausalLM.from_pretrained(tmp_path / "plain-model")  # no plugin involved in loading
        assert plain.config.vocab_size == result.plan.num_rows
        assert exported["tokenizer"].convert_ids_to_tokens(1) == bundle.tokenizer.convert_ids_to_tokens(1)


def test_whisper_card_is_valid_and_its_snippets_run(tmp_path, monkeypatch):
    from transformers import WhisperForConditionalGeneration

    bundle = build_whisper()
    processor = whisper_processor(bundle.model.config.vocab_size)
    config = TokenMergeConfig(**bundle.selection, n_clusters=bundle.n_centers)
    result = apply_token_merge(bundle.model, config, show_progress=False)
    card = card_for(bundle.model, result, base_model="openai/whisper-tiny.en")
    data = check_metadata(card)
    assert data["pipeline_tag"] == "automatic-speech-recognition" and data["base_model"] == "openai/whisper-tiny.en"
    assert "AutoModelForCausalLM" not in card.text
    assert f'model = AutoModelForSpeechSeq2Seq.from_pretrained("{REPO_ID}")' in card.text
    assert f'processor = AutoProcessor.from_pretrained("{REPO_ID}")' in card.text

    folder = tmp_path / "model"
    stage_folder(folder, bundle.model, tokenizer=processor, card=card, plan=result.plan)
    loaded, exported = run_snippets(card.text, folder, tmp_path, monkeypatch)
    features, decoder_ids = whisper_inputs()
    with torch.no_grad():
        expected = bundle.model(input_features=features, decoder_input_ids=decoder_ids).logits
        # the encoder-decoder itself, encoder weights included: the same logits as the merged model
        assert isinstance(loaded["model"], WhisperForConditionalGeneration)
        got = loaded["model"](input_features=features, decoder_input_ids=decoder_ids).logits
        torch.testing.assert_close(got, expected)
    assert isinstance(exported["processor"], WhisperProcessor)
    assert (tmp_path / "plain-model" / "preprocessor_config.json").is_file()
    plain = WhisperForConditionalGeneration.from_pretrained(tmp_path / "plain-model")
    assert plain.config.vocab_size == result.plan.num_rows


def test_card_without_base_model_or_license_omits_them():
    bundle = build_llama(n_speech=48, n_centers=8)
    result = apply_token_merge(
        bundle.model, TokenMergeConfig(preset="llasa", n_clusters=8), tokenizer=bundle.tokenizer, show_progress=False
    )
    card = card_for(bundle.model, result, base_model=None, license_id=None)
    data = check_metadata(card)
    assert "base_model" not in data and "base_model_relation" not in data and "license" not in data
    assert card.text.count("The base model with") == 1


def test_loading_classes_follow_the_architecture_not_the_model_type():
    whisper = WhisperConfig(architectures=["WhisperForConditionalGeneration"])
    assert loading_classes(whisper).model_class == "AutoModelForSpeechSeq2Seq"
    assert loading_classes(WhisperConfig()).preprocessor_class == "AutoProcessor"  # encoder-decoder in memory
    llama = loading_classes(LlamaConfig())
    assert (llama.model_class, llama.preprocessor_class, llama.pipeline_tag) == (
        "AutoModelForCausalLM",
        "AutoTokenizer",
        "text-generation",
    )
    unknown = loading_classes(LlamaConfig(architectures=["SomethingElse"]))
    assert (unknown.model_class, unknown.pipeline_tag) == ("AutoModel", None)


def compress_args(**kwargs) -> argparse.Namespace:
    defaults = {"model": "reference", "repo_id": None, "base_model_id": None, "license": None, "card_figure": []}
    return argparse.Namespace(**{**defaults, **kwargs})


def test_builtin_names_map_to_hub_ids_and_licenses(tmp_path):
    assert _base_model(compress_args(model="whisper-tiny-en")) == ("openai/whisper-tiny.en", "apache-2.0")
    assert _base_model(compress_args(model="reference")) == (None, None)
    assert _base_model(compress_args(model="codec-speech-llm")) == (None, None)
    assert _base_model(compress_args(model="reference", base_model_id="me/ref", license="mit")) == ("me/ref", "mit")
    folder = tmp_path / "local"
    folder.mkdir()
    # a local folder's path is not a Hub id; its own card's license carries over
    (folder / "README.md").write_text("---\nlicense: llama3.2\n---\n# base\n")
    assert _base_model(compress_args(model=str(folder))) == (None, "llama3.2")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repo_id": "not a repo"}, "--repo-id 'not a repo' is not a valid Hub id"),
        ({"base_model_id": "a//b"}, "--base-model-id 'a//b' is not a valid Hub id"),
        ({"license": "Apache 2.0"}, "license 'Apache 2.0' is not a Hub license id. Fix:"),
    ],
)
def test_bad_card_arguments_are_refused_before_loading(kwargs, message):
    with pytest.raises(TokenMergeError, match=re.escape(message)):
        _check_card_arguments(compress_args(**kwargs))


def test_compress_writes_a_card_for_a_saved_folder(tmp_path):
    from hf_token_merge.cli.main import main

    bundle = build_llama(n_speech=48, n_centers=8)
    base = tmp_path / "base"
    bundle.model.save_pretrained(base)
    bundle.tokenizer.save_pretrained(base)
    (base / "README.md").write_text("---\nlicense: llama3.2\n---\n")
    argv = ["compress", "--model", str(base), "--preset", "llasa", "--n-clusters", "8"]
    assert main([*argv, "--output-dir", str(tmp_path / "out")]) == 0
    card = ModelCard.load(tmp_path / "out" / "model" / "README.md")
    data = check_metadata_plain(card)
    assert data == {
        "library_name": "transformers",
        "license": "llama3.2",
        "pipeline_tag": "text-generation",
        "tags": ["hf-token-merge", "token-merging", "speech", "compression"],
    }
    assert 'AutoModelForCausalLM.from_pretrained("<your-namespace>/out")' in card.text
    assert main([*argv, "--repo-id", "me/llasa-merged", "--output-dir", str(tmp_path / "named")]) == 0
    assert 'snapshot_download("me/llasa-merged")' in ModelCard.load(tmp_path / "named" / "model" / "README.md").text


def check_metadata_plain(card: ModelCard) -> dict:
    """A card without evaluation results: its metadata survives `ModelCardData` unchanged."""
    data = card.data.to_dict()
    assert ModelCardData(**data).to_dict() == data
    return data


PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(32))  # copied byte for byte, never decoded


def test_compress_ships_card_figures_inside_the_model_folder(tmp_path):
    from hf_token_merge.cli.main import main

    bundle = build_llama(n_speech=48, n_centers=8)
    base = tmp_path / "base"
    bundle.model.save_pretrained(base)
    bundle.tokenizer.save_pretrained(base)
    (tmp_path / "sweep_wer.png").write_bytes(PNG_BYTES)
    (tmp_path / "structure.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    argv = ["compress", "--model", str(base), "--preset", "llasa", "--n-clusters", "8"]
    argv += ["--card-figure", str(tmp_path / "sweep_wer.png"), "WER against rows removed"]
    argv += ["--card-figure", str(tmp_path / "structure.svg"), " Lattice neighbours "]
    assert main([*argv, "--output-dir", str(tmp_path / "out")]) == 0
    model_folder = tmp_path / "out" / "model"
    assert (model_folder / "figures" / "sweep_wer.png").read_bytes() == PNG_BYTES
    assert (model_folder / "figures" / "structure.svg").is_file()
    text = (model_folder / "README.md").read_text()
    section = text[text.index("## Figures") : text.index("## Merge settings")]
    assert section.split("\n")[2:9] == [
        "![WER against rows removed](figures/sweep_wer.png)",
        "",
        "*Figure 1. WER against rows removed*",
        "",
        "![Lattice neighbours](figures/structure.svg)",
        "",
        "*Figure 2. Lattice neighbours*",
    ]
    assert text.index("## Before and after") < text.index("## Figures")


def test_a_card_without_figures_has_no_figures_section(tmp_path):
    bundle = build_llama(n_speech=48, n_centers=8)
    result = apply_token_merge(bundle.model, TokenMergeConfig(preset="llasa", n_clusters=8), tokenizer=bundle.tokenizer)
    text = card_for(bundle.model, result).text
    assert "## Figures" not in text and "figures/" not in text


@pytest.mark.parametrize(
    ("name", "caption", "message"),
    [
        ("missing.png", "x", "Card figure '{folder}/missing.png' is not a file. Fix: pass the path of an image."),
        ("table.csv", "x", "Card figure '{folder}/table.csv' is not an image the Hub shows. Fix: pass a .png, .jpg"),
        ("plot.png", "  ", "Card figure '{folder}/plot.png' has an empty caption. Fix: say what it shows."),
    ],
)
def test_bad_card_figures_are_refused_before_anything_is_written(tmp_path, name, caption, message):
    from hf_token_merge.cli.main import main

    (tmp_path / "table.csv").write_text("a,b\n")
    (tmp_path / "plot.png").write_bytes(PNG_BYTES)
    with pytest.raises(TokenMergeError, match=re.escape(message.format(folder=tmp_path))):
        _check_card_arguments(compress_args(card_figure=[[str(tmp_path / name), caption]]))
    argv = ["compress", "--model", str(tmp_path / "no-model"), "--preset", "llasa", "--n-clusters", "8"]
    argv += ["--card-figure", str(tmp_path / name), caption, "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2  # refused before the (missing) model is looked for
    assert not (tmp_path / "out").exists()


def test_two_card_figures_with_one_file_name_are_refused(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "wer.png").write_bytes(PNG_BYTES)
    figures = [[str(tmp_path / "a" / "wer.png"), "one"], [str(tmp_path / "b" / "wer.png"), "two"]]
    with pytest.raises(TokenMergeError, match="Two card figures are named 'wer.png'; both would be copied to figures/"):
        _check_card_arguments(compress_args(card_figure=figures))


def test_the_codec_asr_card_names_its_split_its_beams_and_its_builtin_base():
    from hf_token_merge.cli.common import describe_evaluation
    from hf_token_merge.cli.compress import _asr_decoding

    assert describe_evaluation("codec-asr", {"split": "dev"}) == (
        "the reference codec corpus's dev split (code sequences), transcribed by the codec speech-LLM "
        "(ASR WER, 4 beams)"
    )
    assert describe_evaluation("codec-asr").startswith("the reference codec corpus's test split")
    assert _asr_decoding("codec-asr") == "beam search, 4 beams" and _asr_decoding("librivox") == "greedy"
    bundle = build_llama(n_speech=48, n_centers=8)
    result = apply_token_merge(bundle.model, TokenMergeConfig(preset="llasa", n_clusters=8), tokenizer=bundle.tokenizer)
    card = build_model_card(
        repo_id=REPO_ID,
        base_model=None,
        base_model_name="hf_token_merge's built-in `codec-speech-llm`",
        model_config=bundle.model.config,
        config=result.plan.config,
        plan_statistics=result.plan.statistics,
        rows=[CardRow("WER", 0.35, 0.345)],
    )
    assert "hf_token_merge's built-in `codec-speech-llm` with 40 of its token rows merged" in card.text
    assert "base_model" not in card.data.to_dict()  # no Hub id, so no metadata link
