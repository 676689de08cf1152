"""Run a plain export of a merged Whisper in CTranslate2 and compare it with the in-place merged model.

Converts `RUN/plain` (written by `hf-token-merge compress ... --export-plain --output-dir RUN`) with CTranslate2's
own `TransformersConverter`, transcribes the 12 LibriVox sonnet utterances greedily with `ctranslate2.models.Whisper`,
transcribes them with the in-place merged model `RUN/model` (loaded through the plugin) and with the original
Whisper tiny.en, and prints the texts that differ, the WERs and the sizes on disk (float32, like the export).

    PYTHONPATH=. python recipes/whisper_vocabulary/ctranslate2_round_trip.py runs/whisper-english
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def _size(folder: Path, name: str) -> int:
    return (folder / name).stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the --output-dir of compress --export-plain")
    args = parser.parse_args()

    import ctranslate2
    import numpy as np
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    import hf_token_merge  # noqa: F401  (loads RUN/model, the in-place merged checkpoint)
    from hf_token_merge.evaluation.text import word_error_rate
    from hf_token_merge.evaluation.wer import transcribe
    from hf_token_merge.reference import load_librivox_sonnets, load_whisper_tiny_en
    from hf_token_merge.reference.librivox import decode_audio

    data = load_librivox_sonnets()
    audios = [decode_audio(a) for a in data["audio"]]
    references = list(data["text"])
    plain_dir = args.run / "plain"
    processor = WhisperProcessor.from_pretrained(plain_dir)
    merged = WhisperForConditionalGeneration.from_pretrained(args.run / "model").eval()
    in_place = transcribe(merged, WhisperProcessor.from_pretrained(args.run / "model"), audios, batch_size=12)
    original, original_processor = load_whisper_tiny_en()
    baseline = transcribe(original, original_processor, audios, batch_size=12)

    with tempfile.TemporaryDirectory() as scratch:
        converted = Path(scratch) / "plain"
        ctranslate2.converters.TransformersConverter(str(plain_dir)).convert(str(converted))
        # the original in the dtype of the export (the cached folder stores float16), so the sizes compare rows only
        original_dir = Path(scratch) / "original-hf"
        original.save_pretrained(original_dir)
        original_processor.save_pretrained(original_dir)
        converted_original = Path(scratch) / "original"
        ctranslate2.converters.TransformersConverter(str(original_dir)).convert(str(converted_original))
        original_bytes = _size(original_dir, "model.safetensors")
        whisper = ctranslate2.models.Whisper(str(converted), device="cpu")
        features = processor.feature_extractor(audios, sampling_rate=16000, return_tensors="np").input_features
        prompt = processor.tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])
        results = whisper.generate(
            ctranslate2.StorageView.from_array(features.astype(np.float32)), [prompt] * len(audios), beam_size=1
        )
        ct2 = [processor.tokenizer.decode(r.sequences_ids[0], skip_special_tokens=True).strip() for r in results]
        ct2_bytes = (_size(converted_original, "model.bin"), _size(converted, "model.bin"))

    plain_config = json.loads((plain_dir / "config.json").read_text())
    report = {
        "utterances": len(audios),
        "identical_texts_ct2_vs_in_place": sum(a == b for a, b in zip(ct2, in_place, strict=True)),
        "wer_original": word_error_rate(references, baseline),
        "wer_in_place": word_error_rate(references, in_place),
        "wer_ctranslate2_plain": word_error_rate(references, ct2),
        "vocab_size_original": original.config.vocab_size,
        "vocab_size_plain": plain_config["vocab_size"],
        "parameters_original": sum(p.numel() for p in original.parameters()),
        "safetensors_bytes_original": original_bytes,
        "safetensors_bytes_plain": _size(plain_dir, "model.safetensors"),
        "ctranslate2_bytes_original": ct2_bytes[0],
        "ctranslate2_bytes_plain": ct2_bytes[1],
    }
    for index, (a, b) in enumerate(zip(ct2, in_place, strict=True)):
        if a != b:
            print(f"utterance {index}: ctranslate2 {a!r} != in-place {b!r}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
