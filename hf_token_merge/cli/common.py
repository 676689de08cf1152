"""What the subcommands share: loading a model by name or path, merge options, built-in evaluations."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_token_merge.config import STOPPING_FIELDS, TokenMergeConfig, replace_stop
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.builtin import BUILTIN_DATASETS

BUILTIN_MODELS = ("whisper-tiny-en", "reference")
# --eval NAME -> what it measures (help, model cards): the reference speech-LLM's own split, then the built-in sets.
BUILTIN_EVALUATIONS = {
    "reference": "the reference speech-LLM's held-out synthetic test split (greedy ASR WER, unit perplexity)",
    **{name: f"{dataset.description} (greedy ASR WER)" for name, dataset in BUILTIN_DATASETS.items()},
}


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (a count such as --limit or --batch-size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer; pass 1 or more")
    return value


def _hub_id(name: str) -> bool:
    """Whether `name` reads as a Hub id (org/name) rather than a path: a path-like string is never sent to the Hub."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.count("/") != 1 or name.startswith((".", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


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
    path = Path(name).expanduser()
    local = (path / "config.json").is_file()
    fix = f"Fix: pass a folder saved with save_pretrained, a Hub id (org/name), or one of {list(BUILTIN_MODELS)}."
    if not local and not path.exists() and not _hub_id(name):
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


def builtin_evaluation(
    name: str,
    processing_class: Any,
    show_progress: bool,
    *,
    split: tuple[str, float] | None = None,
    records: bool = False,
) -> Callable[[Any], dict[str, Any]]:
    """`model -> metrics` on a built-in evaluation set (or one part of it).

    Args:
        name: 'reference' (the reference speech-LLM's test split: WER + unit perplexity) or a built-in set of
            `BUILTIN_DATASETS` (WER), e.g. 'librivox' or 'synthetic' (which must have been built with
            recipes/reference_model/synthesize.py).
        processing_class: The model's processor (Whisper) or tokenizer (the reference speech-LLM).
        show_progress: Show progress bars.
        split: `("tune" | "report", fraction)`: evaluate only that part of a seeded split (see `split_indices`).
        records: Also return the per-utterance records (key "records"), for confidence intervals.

    Returns:
        A function `model -> {"wer": ...}` (plus "perplexity" for 'reference'), labelled with its set
        (`describe_eval_set`) so that the budget search can check the tune/report split.
    """
    from hf_token_merge.analysis.budget import describe_eval_set, with_records

    if name == "reference":
        from hf_token_merge.job import evaluate_reference
        from hf_token_merge.reference.speech_llm import load_reference_eval_set

        data = load_reference_eval_set()
    elif name in BUILTIN_DATASETS:
        from hf_token_merge.evaluation import evaluate_wer

        data = BUILTIN_DATASETS[name].load(None)
    else:
        raise TokenMergeError(f"--eval {name}: unknown. Fix: choose one of {list(BUILTIN_EVALUATIONS)}.")
    label = name
    if split is not None:
        indices = split_indices(len(data), split[1], split[0])
        data = data.select(indices) if hasattr(data, "select") else [data[i] for i in indices]
        label = f"{name} ({split[0]} part, {len(indices)} examples)"

    def evaluate(model) -> dict[str, Any]:
        if name == "reference":
            results = evaluate_reference(model, processing_class, data, show_progress=show_progress)
            wer, metrics = results["wer"], {"wer": results["wer"].wer, "perplexity": results["perplexity"].perplexity}
        else:
            wer = evaluate_wer(model, data, processor=processing_class, show_progress=show_progress)
            metrics = {"wer": wer.wer}
        return with_records(wer, **metrics) if records else metrics

    return describe_eval_set(evaluate, label, data)


def write_json(path: Path, data: Any) -> None:
    """Write indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
