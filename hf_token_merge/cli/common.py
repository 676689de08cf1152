"""What the subcommands share: loading a model by name or path, merge options, built-in evaluations."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_token_merge.config import STOPPING_FIELDS, TokenMergeConfig, replace_stop
from hf_token_merge.config.json_config import looks_like_hub_id
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.builtin import BUILTIN_DATASETS

BUILTIN_MODELS = ("whisper-tiny-en", "reference", "codec-speech-llm")
MODEL_HELP = "a folder saved with save_pretrained, a Hub id, or a built-in: " + ", ".join(BUILTIN_MODELS)
TTS_EVAL = "tts-wer"
TTS_FAMILIES = ("llasa", "orpheus", "spark_tts", "outetts", "reference")
REFERENCE_CODEC = "reference-codec"
# `evaluate --model` name of the oracle TTS model of the reference codec (it emits the corpus's ground-truth codes)
REFERENCE_CODEC_ORACLE = "reference-codec-oracle"
# `--eval` name of the codec speech-LLM's ASR on the codec corpus (a split of it with --split; test by default)
CODEC_ASR = "codec-asr"
# --eval NAME -> what it measures (help, model cards): the reference speech-LLM's own split, the built-in sets, TTS.
BUILTIN_EVALUATIONS = {
    "reference": "the reference speech-LLM's held-out synthetic test split (greedy ASR WER, unit perplexity)",
    **{name: f"{dataset.description} (greedy ASR WER)" for name, dataset in BUILTIN_DATASETS.items()},
    TTS_EVAL: "the reference codec corpus's test sentences, spoken by the model (greedy), decoded by the codec of "
    "--tts-decode and transcribed by Whisper tiny.en (TTS WER)",
    CODEC_ASR: "the reference codec corpus's code sequences (test split, or --split dev), transcribed by the codec "
    "speech-LLM (ASR WER, 4 beams: ASR_NUM_BEAMS)",
}


# --eval NAME -> `(name, processing_class, show_progress, **keywords) -> (model -> metrics)` registered from Python
# (`register_evaluation`): checked before the built-in sets, so a project can score merges with its own metric.
_REGISTERED_EVALUATIONS: dict[str, tuple[Callable[..., Callable[[Any], dict[str, Any]]], str]] = {}


def register_evaluation(
    name: str, factory: Callable[..., Callable[[Any], dict[str, Any]]], description: str
) -> Callable[[], None]:
    """Make `--eval NAME` (compress, sweep) score models with your own function.

    Args:
        name: The `--eval` name; it may not shadow a built-in set (`BUILTIN_EVALUATIONS`).
        factory: Called as `factory(name, processing_class, show_progress, split=, records=, reports=, tts=,
            data=, options=)` (the keywords of `builtin_evaluation`) and returning `model -> {"wer": ...}`; with
            `records=True` it adds the per-utterance "records", with `reports=True` a "report".
        description: What it measures, for reports and model cards.

    Returns:
        A function that removes the registration again.

    Raises:
        TokenMergeError: If `name` is a built-in set or already registered.
    """
    if name in BUILTIN_EVALUATIONS or name in _REGISTERED_EVALUATIONS:
        raise TokenMergeError(f"--eval {name} is already defined. Fix: register the evaluation under another name.")
    _REGISTERED_EVALUATIONS[name] = (factory, description)
    return lambda: _REGISTERED_EVALUATIONS.pop(name, None)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (a count such as --limit or --batch-size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer; pass 1 or more")
    return value


def load_model(name: str):
    """`(model, processor_or_tokenizer)` of a built-in name, a saved folder or a Hub id.

    Raises:
        FileNotFoundError: For a path that does not exist (a path-like string is never read as a Hub id).
        TokenMergeError: For a folder without config.json, or a Hub id that cannot be loaded.
    """
    if name == "whisper-tiny-en":
        from hf_token_merge.reference import load_whisper_tiny_en

        return load_whisper_tiny_en()
    if name == "reference":
        from hf_token_merge.reference.speech_llm import load_reference_speech_llm

        return load_reference_speech_llm()
    if name == "codec-speech-llm":
        from hf_token_merge.reference.codec_llm import load_codec_speech_llm

        return load_codec_speech_llm()
    path = Path(name).expanduser()
    local = (path / "config.json").is_file()
    fix = f"Fix: pass a folder saved with save_pretrained, a Hub id (org/name), or one of {list(BUILTIN_MODELS)}."
    if not local and not path.exists() and not looks_like_hub_id(name):
        raise FileNotFoundError(f"--model {name}: no such folder, so no config.json there. {fix}")
    if not local and path.exists():
        raise TokenMergeError(f"--model {name}: no config.json there. {fix}")
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSpeechSeq2Seq,
        AutoProcessor,
        AutoTokenizer,
    )

    import hf_token_merge  # noqa: F401  (registers the loader of merged checkpoints)

    source = path if local else name  # a Hub id goes through the ordinary from_pretrained download
    try:
        config = AutoConfig.from_pretrained(source)
        if getattr(config, "is_encoder_decoder", False):
            return AutoModelForSpeechSeq2Seq.from_pretrained(source), AutoProcessor.from_pretrained(source)
        return AutoModelForCausalLM.from_pretrained(source), AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        if local:
            raise _missing_file_error(name, path, error) from error
        raise TokenMergeError(
            f"--model {name}: could not be loaded ({error}). Fix: check the id, or log in / go online."
        ) from error


def load_processing_class(path: Path):
    """The tokenizer (the processor, for an encoder-decoder) of a saved checkpoint folder, without loading the model.

    Raises:
        TokenMergeError: Naming the file the folder lacks.
    """
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    try:
        if getattr(AutoConfig.from_pretrained(path), "is_encoder_decoder", False):
            return AutoProcessor.from_pretrained(path)
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise _missing_file_error(str(path), Path(path), error) from error


def _missing_file_error(name: str, path: Path, error: Exception) -> TokenMergeError:
    """A local folder that does not load: name the file it lacks instead of suggesting the Hub."""
    import json

    try:
        encoder_decoder = bool(json.loads((path / "config.json").read_text()).get("is_encoder_decoder"))
    except (OSError, ValueError):
        encoder_decoder = False
    needed = {
        "a tokenizer (tokenizer.json or vocab.json)": ("tokenizer.json", "vocab.json", "tokenizer.model"),
    }
    if encoder_decoder:
        needed["a feature extractor (preprocessor_config.json)"] = ("preprocessor_config.json",)
    lacking = [what for what, files in needed.items() if not any((path / file).is_file() for file in files)]
    if lacking:
        return TokenMergeError(
            f"--model {name}: the folder lacks {' and '.join(lacking)}, so it cannot be loaded. Fix: save the "
            "processor into it (processor.save_pretrained(folder)), or re-export with "
            "export_plain(model, plan, folder, tokenizer=processor)."
        )
    return TokenMergeError(f"--model {name}: the folder could not be loaded ({error}). Fix: re-save it.")


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that build a `TokenMergeConfig`: a saved config file, then flags that override its fields."""
    group = parser.add_argument_group("merge settings (flags override --recipe/--config)")
    group.add_argument("--recipe", help="a family recipe name (llasa, orpheus, ..., reference) or a YAML path")
    group.add_argument("--recipe-variant", help="one of the recipe's variants, e.g. whisper's english_frequency")
    group.add_argument("--config", help="token_merge_config.json (or its folder) to start from")
    group.add_argument("--preset", help="family preset, e.g. llasa, orpheus, reference")
    group.add_argument("--token-pattern", help="regex over token strings")
    group.add_argument("--token-id-range", nargs=2, type=int, metavar=("START", "END"), help="half-open id range")
    group.add_argument("--allow-special-tokens", action="store_true", default=None)
    group.add_argument("--method", choices=["kmeans", "threshold", "agglomerative", "frequency"])
    group.add_argument("--metric", choices=["cosine", "euclidean"])
    group.add_argument("--target-ratio", type=float, help="merged rows / selected rows")
    group.add_argument("--n-clusters", type=int)
    group.add_argument("--similarity-threshold", type=float)
    group.add_argument("--lm-head", choices=["merge", "keep", "drop"])
    group.add_argument("--logit-correction", choices=["none", "uniform", "frequency"])


def config_from_args(
    args: argparse.Namespace, default: TokenMergeConfig | None = None, require_stop: bool = True
) -> TokenMergeConfig:
    """The merge config the options describe (flags override the file; a new stopping option replaces the old).

    With `require_stop=False` (sweeps and budget searches set the level themselves) a missing stopping option
    becomes `target_ratio=1.0`, which merges nothing.
    """
    if getattr(args, "recipe", None) and args.config:
        raise TokenMergeError("--recipe and --config both give a starting config. Fix: pass only one of them.")
    if getattr(args, "recipe_variant", None) and not getattr(args, "recipe", None):
        raise TokenMergeError("--recipe-variant needs a recipe. Fix: add --recipe NAME.")
    if getattr(args, "recipe", None):
        from hf_token_merge.families import load_recipe

        base = load_recipe(args.recipe, variant=getattr(args, "recipe_variant", None)).config.to_dict()
    elif args.config:
        base = TokenMergeConfig.from_pretrained(args.config).to_dict()
    elif default is not None:
        base = default.to_dict()
    else:
        base = {}
    fields = (
        "preset",
        "token_pattern",
        "token_id_range",
        "allow_special_tokens",
        "method",
        "metric",
        "target_ratio",
        "n_clusters",
        "similarity_threshold",
        "lm_head",
        "logit_correction",
    )
    overrides = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    base = replace_stop(base, overrides)
    if not any(base.get(key) is not None for key in ("preset", "token_pattern", "token_id_range", "token_ids")):
        raise TokenMergeError(
            "No rows are selected. Fix: pass --recipe, --preset, --token-pattern, --token-id-range or --config."
        )
    if not any(base.get(stop) is not None for stop in STOPPING_FIELDS):
        if require_stop:
            raise TokenMergeError(
                "No stopping option. Fix: pass --target-ratio, --n-clusters or --similarity-threshold."
            )
        base["target_ratio"] = 1.0
    return TokenMergeConfig.from_dict(base)


def add_calibration_argument(parser: argparse.ArgumentParser) -> None:
    """`--calibration-text`: token counts from a text file (method/logit_correction 'frequency', 'weighted_mean')."""
    parser.add_argument(
        "--calibration-text",
        help=(
            "UTF-8 text file, one example a line used verbatim (keep leading spaces for byte-level BPE), optionally "
            "ending in TAB + weight; its weighted token counts rank rows for method/strategy 'frequency' "
            "and feed logit_correction/merge_rule 'frequency'/'weighted_mean'"
        ),
    )


def check_calibration_args(args: argparse.Namespace, *configs: TokenMergeConfig) -> None:
    """Refuse a missing `--calibration-text` when any of the merges needs calibration counts.

    Args:
        args: The parsed options.
        *configs: Every merge the command will plan (`TokenMergeConfig.needs_token_counts` decides).

    Raises:
        TokenMergeError: Naming the flag.
    """
    if not args.calibration_text and any(config.needs_token_counts for config in configs):
        raise TokenMergeError(
            "This merge ranks or weights tokens by frequency and needs calibration counts. "
            "Fix: pass --calibration-text FILE (see recipes/whisper_vocabulary/make_calibration.py)."
        )


def calibration_counts_from_args(args: argparse.Namespace, config: TokenMergeConfig, model, tokenizer):
    """Token counts of `--calibration-text` (None without it); an error naming the flag when the merge needs them."""
    check_calibration_args(args, config)
    if not args.calibration_text:
        return None
    from hf_token_merge.remap import calibration_counts

    return calibration_counts(tokenizer, args.calibration_text, model.get_input_embeddings().num_embeddings)


@dataclass
class MergeInputs:
    """What a merging subcommand works on.

    Attributes:
        config: The merge config, validated before the model was loaded.
        model: The loaded model.
        processing_class: What transformers calls the model's `processing_class`: the processor of a Whisper-style
            model (feature extractor + tokenizer), else the tokenizer. It is what is saved beside the model.
    """

    config: TokenMergeConfig
    model: Any
    processing_class: Any

    @property
    def tokenizer(self) -> Any:
        """The text tokenizer (the processor's own for Whisper), which selects rows by pattern or preset."""
        return getattr(self.processing_class, "tokenizer", self.processing_class)


def load_for_merge(args: argparse.Namespace, require_stop: bool = True) -> MergeInputs:
    """The config, model and processing class of a merging subcommand; the config is validated before loading.

    Args:
        args: The subcommand's parsed arguments.
        require_stop: Whether the config needs a stopping option (a sweep sets its own).

    Returns:
        The `MergeInputs`.
    """
    config = config_from_args(args, require_stop=require_stop)
    model, processing_class = load_model(args.model)
    return MergeInputs(config, model, processing_class)


def load_callable(spec: str, flag: str = "--decode") -> Callable:
    """`module:function` → the function (a user's codec decoder).

    Raises:
        TokenMergeError: For a malformed spec or one that does not import, naming the flag and the fix.
    """
    import importlib

    module, _, name = spec.partition(":")
    if not module or not name:
        raise TokenMergeError(f"{flag} {spec!r}: expected MODULE:FUNCTION. Fix: e.g. {flag} my_codec:decode.")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise TokenMergeError(f"{flag} {spec!r}: {error}. Fix: put the module on PYTHONPATH.") from error


def add_tts_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `--eval tts-wer` (family adapter, codec, sentences, generation limit)."""
    group = parser.add_argument_group(f"TTS evaluation (--eval {TTS_EVAL})")
    group.add_argument(
        "--tts-family", choices=TTS_FAMILIES, help="the adapter (default: --preset/--recipe when it names a family)"
    )
    group.add_argument(
        "--tts-decode",
        metavar="MODULE:FUNCTION",
        help=f"the codec: MODULE:FUNCTION (codes -> 16 kHz waveform), or '{REFERENCE_CODEC}' (the bundled codec, "
        "<|s_N|> read as its code N); default: the family's codec (X-codec2 for llasa, SNAC for orpheus)",
    )
    group.add_argument("--tts-num-codes", type=positive_int, help="codebook size for llasa (default 65,536)")
    group.add_argument(
        "--tts-limit", type=positive_int, default=100, help="the first N of the 600 test sentences (default 100)"
    )
    group.add_argument("--tts-max-new-tokens", type=positive_int, default=1024, help="generation limit (default 1024)")


def tts_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The TTS evaluation options when `--eval` or `--report-eval` is tts-wer (None otherwise), checked before loading.

    Raises:
        TokenMergeError: Without a family (neither --tts-family nor a family --preset/--recipe).
    """
    if TTS_EVAL not in (getattr(args, "eval", None), getattr(args, "report_eval", None)):
        return None
    family = args.tts_family
    for name in (getattr(args, "preset", None), getattr(args, "recipe", None)):
        family = family or (name if name in TTS_FAMILIES else None)
    if family is None:
        raise TokenMergeError(
            f"--eval {TTS_EVAL} maps generated ids to codec codes by family. Fix: pass --tts-family "
            f"({', '.join(TTS_FAMILIES)}), or a family --recipe/--preset."
        )
    return {
        "family": family,
        "decode": args.tts_decode,
        "num_codes": args.tts_num_codes,
        "limit": args.tts_limit,
        "max_new_tokens": args.tts_max_new_tokens,
    }


def tts_generation(tts: dict[str, Any]) -> dict[str, Any]:
    """The generation settings of a TTS evaluation, for provenance."""
    codec = tts["decode"] or f"the {tts['family']} codec"
    return {"decoding": "greedy", "max_new_tokens": tts["max_new_tokens"], "family": tts["family"], "codec": codec}


def _tts_evaluator(processing_class: Any, tts: dict[str, Any]) -> Callable[[Any, Any], Any]:
    """`(model, data) -> TtsWerResult` for the options of `tts_options` (adapter, decoder and ASR built once)."""
    from hf_token_merge.evaluation.tts import adapter_for
    from hf_token_merge.evaluation.tts.evaluate import evaluate_tts_wer, whisper_asr

    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    family, spec = tts["family"], tts["decode"]
    codec = None
    if spec == REFERENCE_CODEC or (spec is None and family == "reference"):
        from hf_token_merge.evaluation.tts.reference_codec import codec_whisper_decoder
        from hf_token_merge.reference.speech_codec import load_reference_speech_codec

        codec = load_reference_speech_codec()
    options: dict[str, Any] = {}
    if family == "llasa" and tts["num_codes"]:
        options["num_codes"] = tts["num_codes"]
    if family == "reference":
        options = {"num_codes": codec.codebook_size, "frame_rate": codec.frame_rate}
    adapter = adapter_for(family, tokenizer, **options)
    if codec is not None:
        decode, asr = codec_whisper_decoder(codec), whisper_asr(features=True)
    elif spec is not None:
        decode, asr = load_callable(spec, "--tts-decode"), whisper_asr()
    elif hasattr(adapter, "load_decoder"):
        decode = adapter.load_decoder("cpu")
        asr = whisper_asr(sampling_rate=24000 if family == "orpheus" else 16000)
    else:
        raise TokenMergeError(
            f"The {family} codec has no built-in decoder here. Fix: pass --tts-decode MODULE:FUNCTION."
        )

    def evaluate(model, data):
        return evaluate_tts_wer(
            model, data, adapter=adapter, decode=decode, asr=asr, max_new_tokens=tts["max_new_tokens"],
            show_progress=False,
        )  # fmt: skip

    return evaluate


def split_indices(n: int, fraction: float, part: str, seed: int = 0) -> list[int]:
    """A seeded split of `n` examples: the first `round(fraction * n)` of a permutation tune, the rest report.

    Args:
        n: Number of examples.
        fraction: Share of the tuning part, in (0, 1).
        part: `"tune"` or `"report"`.
        seed: Seed of the permutation.

    Returns:
        Sorted example indices of the part.
    """
    import torch

    if not 0 < fraction < 1:
        raise TokenMergeError(f"--split-eval {fraction}: must lie in (0, 1). Fix: pass e.g. 0.5.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = round(fraction * n)
    if cut == 0 or cut == n:
        raise TokenMergeError(
            f"--split-eval {fraction} leaves one part of the {n} examples empty. Fix: pass a fraction nearer 0.5."
        )
    return sorted(order[:cut] if part == "tune" else order[cut:])


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """`--split`, `--dataset-config`, `--audio-column`, `--text-column`: how to read a `datasets` dataset."""
    group = parser.add_argument_group("a datasets dataset (a save_to_disk folder or a Hub id)")
    group.add_argument("--split", help="its split (needed for a Hub id; e.g. test)")
    group.add_argument("--dataset-config", help="its configuration, for a Hub dataset with several (e.g. clean)")
    group.add_argument(
        "--audio-column", default="audio", help="its audio column, or a manifest's field (default: audio)"
    )
    group.add_argument("--text-column", default="text", help="its transcript column/field (default: text)")


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `load_eval_dataset` that `add_dataset_arguments` sets."""
    return {
        "split": getattr(args, "split", None),
        "config_name": getattr(args, "dataset_config", None),
        "audio_column": getattr(args, "audio_column", "audio"),
        "text_column": getattr(args, "text_column", "text"),
    }


def describe_evaluation(name: str, options: dict[str, Any] | None = None) -> str:
    """What `--eval NAME` measures, in words, for reports and model cards."""
    if name == CODEC_ASR:  # the split and the beam count it actually ran
        from hf_token_merge.reference.codec_llm import ASR_NUM_BEAMS

        split = (options or {}).get("split") or "test"
        return (
            f"the reference codec corpus's {split} split (code sequences), transcribed by the codec speech-LLM "
            f"(ASR WER, {ASR_NUM_BEAMS} beams)"
        )
    if name in BUILTIN_EVALUATIONS:
        return BUILTIN_EVALUATIONS[name]
    if name in _REGISTERED_EVALUATIONS:
        return _REGISTERED_EVALUATIONS[name][1]
    options = options or {}
    named = (("config", options.get("config_name")), ("split", options.get("split")))
    detail = ", ".join(f"{what} {value}" for what, value in named if value)
    return f"{name}{f' ({detail})' if detail else ''} (greedy ASR WER)"


def load_evaluation_data(name: str, options: dict[str, Any] | None = None):
    """The examples of `--eval NAME`: the reference split, a built-in set, or a dataset `load_eval_dataset` reads.

    Call it before loading the model, so that a missing column or split fails before any work.

    Raises:
        TokenMergeError: Naming the fix, for data that cannot be used (FileNotFoundError for a missing path).
    """
    if name == TTS_EVAL or name in _REGISTERED_EVALUATIONS:
        return None  # the codec corpus's sentences (or a registered set's own data), loaded by `builtin_evaluation`
    if name == "reference":
        from hf_token_merge.reference.speech_llm import load_reference_eval_set

        return load_reference_eval_set()
    if name == CODEC_ASR:
        from hf_token_merge.reference.codec_corpus import load_codec_corpus

        return load_codec_corpus((options or {}).get("split") or "test")
    from hf_token_merge.evaluation import load_eval_dataset

    return load_eval_dataset(name, **(options or {}))


def builtin_evaluation(
    name: str,
    processing_class: Any,
    show_progress: bool,
    *,
    split: tuple[str, float] | None = None,
    records: bool = False,
    tts: dict[str, Any] | None = None,
    reports: bool = False,
    data: Any = None,
    options: dict[str, Any] | None = None,
) -> Callable[[Any], dict[str, Any]]:
    """`model -> metrics` on an evaluation set (or one part of it): a built-in one or any `datasets` dataset.

    Args:
        name: 'reference' (the reference speech-LLM's test split: WER + unit perplexity), a built-in set of
            `BUILTIN_DATASETS` (WER), e.g. 'librivox' or 'synthetic' (which must have been built with
            recipes/reference_model/synthesize.py), 'tts-wer' (TTS WER and the invalid generations on the
            codec corpus's test sentences; needs `tts`), 'codec-asr' (the codec speech-LLM's ASR WER on the codec
            corpus's `options["split"]`, test by default), or any source `load_eval_dataset` reads (a save_to_disk
            folder, a Hub dataset id, an audiofolder, a manifest: WER of an encoder-decoder ASR model).
        processing_class: The model's processor (Whisper) or tokenizer (the reference speech-LLM).
        show_progress: Show progress bars.
        split: `("tune" | "report", fraction)`: evaluate only that part of a seeded split (see `split_indices`).
        records: Also return the per-utterance records (key "records"), for confidence intervals.
        tts: The options of `tts_options` (for 'tts-wer').
        reports: Also return the full `WerResult` (key "report"): counts, timing and predictions.
        data: The examples, when already loaded with `load_evaluation_data`.
        options: `load_eval_dataset` keywords for a dataset (see `dataset_options`).

    Returns:
        A function `model -> {"wer": ...}` (plus "perplexity" for 'reference'), labelled with its set
        (`describe_eval_set`) so that the budget search can check the tune/report split.
    """
    from hf_token_merge.analysis.budget import describe_eval_set, with_records

    if name in _REGISTERED_EVALUATIONS:
        factory = _REGISTERED_EVALUATIONS[name][0]
        keywords = {"split": split, "records": records, "tts": tts, "reports": reports, "data": data}
        return factory(name, processing_class, show_progress, **keywords, options=options)
    if name == TTS_EVAL:
        from hf_token_merge.evaluation.tts.reference_codec import load_oracle_data

        if tts is None:
            raise TokenMergeError(f"--eval {TTS_EVAL} needs its options. Fix: pass --tts-family (see --help).")
        evaluate_tts = _tts_evaluator(processing_class, tts)
        data = load_oracle_data("test", tts["limit"]) if data is None else data
    else:
        speech_llm_set = name in ("reference", CODEC_ASR)
        if not speech_llm_set and name not in BUILTIN_DATASETS and not hasattr(processing_class, "feature_extractor"):
            raise TokenMergeError(
                f"--eval {name}: a dataset is scored as the ASR WER of an encoder-decoder reading its audio "
                "(Whisper), but this model is a causal LM. Fix: use --eval reference for the reference speech-LLM, "
                f"--eval {CODEC_ASR} for the codec speech-LLM, "
                f"--eval {TTS_EVAL} for a TTS model, or evaluate a speech-LLM before and after with "
                "`hf-token-merge evaluate --manifest` (unit prompts)."
            )
        if data is None:
            data = load_evaluation_data(name, options)
    label = f"{name} ({(options or {}).get('split') or 'test'} split)" if name == CODEC_ASR else name
    if split is not None:
        indices = split_indices(len(data), split[1], split[0])
        data = data.select(indices) if hasattr(data, "select") else [data[i] for i in indices]
        label = f"{name} ({split[0]} part, {len(indices)} examples)"

    def evaluate(model) -> dict[str, Any]:
        if name == TTS_EVAL:
            wer = evaluate_tts(model, data)
            metrics = {"wer": wer.wer, "invalid_generations": wer.invalid}
        else:
            wer, metrics = _asr_scores(name, model, processing_class, data, show_progress)
        metrics = with_records(wer, **metrics) if records else metrics
        return {**metrics, "report": wer} if reports else metrics

    return describe_eval_set(evaluate, label, data)


def _asr_scores(name: str, model, processing_class: Any, data, show_progress: bool) -> tuple[Any, dict[str, float]]:
    """`(WerResult, metrics)` of an ASR evaluation set: the reference split (+ unit perplexity), the codec corpus
    (the codec speech-LLM), or a dataset read by an encoder-decoder."""
    if name == "reference":
        from hf_token_merge.job import evaluate_reference

        results = evaluate_reference(model, processing_class, data, show_progress=show_progress)
        return results["wer"], {"wer": results["wer"].wer, "perplexity": results["perplexity"].perplexity}
    if name == CODEC_ASR:
        from hf_token_merge.codec_job import codec_asr_wer

        wer = codec_asr_wer(model, processing_class, data, show_progress=show_progress)
    else:
        from hf_token_merge.evaluation import evaluate_wer

        wer = evaluate_wer(model, data, processor=processing_class, show_progress=show_progress)
    return wer, {"wer": wer.wer}


def write_json(path: Path, data: Any) -> None:
    """Write indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
