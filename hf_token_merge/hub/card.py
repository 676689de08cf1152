"""Model cards for merged models, rendered through `huggingface_hub.ModelCard` / `ModelCardData`."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.tables import ChangeRow, change_table

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
TAGS = ["hf-token-merge", "token-merging", "speech", "compression"]


# The model card's rows are the library's one before/after row type.
CardRow = ChangeRow

# The CLI's built-in model names, as the Hub knows them: (Hub id or None, license or None). The reference
# speech-LLM is built here and lives on no Hub repo, so its card names no base model.
BUILTIN_BASE_MODELS: dict[str, tuple[str | None, str | None]] = {
    "whisper-tiny-en": ("openai/whisper-tiny.en", "apache-2.0"),
    "reference": (None, None),
    "codec-speech-llm": (None, None),
}
# Image files the Hub renders inline in a card.
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")
FIGURE_FOLDER = "figures"
# A Hub license id: lowercase letters, digits, dots and dashes (apache-2.0, mit, llama3.2, cc-by-nc-4.0, other).
_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")


@dataclass(frozen=True)
class LoadingClasses:
    """How a model type loads and what the Hub calls its task.

    Attributes:
        model_class: The transformers Auto class, e.g. 'AutoModelForSpeechSeq2Seq'.
        preprocessor_class: 'AutoProcessor' (speech encoder-decoders: feature extractor + tokenizer) or
            'AutoTokenizer'.
        preprocessor_name: The snippet's variable for it: 'processor' or 'tokenizer'.
        pipeline_tag: The Hub task, e.g. 'automatic-speech-recognition'; None when no task fits.
    """

    model_class: str
    preprocessor_class: str
    preprocessor_name: str
    pipeline_tag: str | None


def loading_classes(model_config: Any) -> LoadingClasses:
    """The Auto class, preprocessor and Hub task of a model, from transformers' own auto mappings.

    The checkpoint's `architectures` decide first: Whisper's model type is in both the speech seq2seq and the causal-LM
    mappings, and only `WhisperForConditionalGeneration` says which (loading it as a causal LM drops the encoder).

    Args:
        model_config: The model's `PretrainedConfig` (`model.config`).

    Returns:
        The classes; `AutoModel` + `AutoTokenizer` without a task for an architecture no mapping lists.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES,
    )

    # a causal speech-LLM is tagged text-generation; a TTS one passes pipeline_tag="text-to-speech" to the card
    kinds = [
        (
            MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES,
            LoadingClasses("AutoModelForSpeechSeq2Seq", "AutoProcessor", "processor", "automatic-speech-recognition"),
        ),
        (
            MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
            LoadingClasses("AutoModelForSeq2SeqLM", "AutoTokenizer", "tokenizer", "text2text-generation"),
        ),
        (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            LoadingClasses("AutoModelForCausalLM", "AutoTokenizer", "tokenizer", "text-generation"),
        ),
    ]
    architectures = list(getattr(model_config, "architectures", None) or [])
    for mapping, classes in kinds:
        if any(name in mapping.values() for name in architectures):
            return classes
    model_type = getattr(model_config, "model_type", None)
    if not architectures:  # a config built in memory: its type, encoder-decoders first
        encoder_decoder = bool(getattr(model_config, "is_encoder_decoder", False))
        for mapping, classes in kinds if encoder_decoder else kinds[2:]:
            if model_type in mapping:
                return classes
    return LoadingClasses("AutoModel", "AutoTokenizer", "tokenizer", None)


def check_license(license_id: str) -> str:
    """Validate a Hub license id for a card.

    Args:
        license_id: e.g. 'apache-2.0', 'mit', 'other'.

    Returns:
        The id, unchanged.

    Raises:
        TokenMergeError: For a string the Hub would not read as a license id.
    """
    if not _LICENSE_ID.match(license_id):
        raise TokenMergeError(
            f"license {license_id!r} is not a Hub license id. Fix: use the base model's id from "
            "https://huggingface.co/docs/hub/repositories-licenses, e.g. apache-2.0, mit or other."
        )
    return license_id


def build_model_card(
    *,
    repo_id: str,
    base_model: str | None,
    model_config: Any,
    config: TokenMergeConfig,
    plan_statistics: dict[str, Any],
    rows: list[ChangeRow],
    eval_results: list[EvalResult] | None = None,
    evaluation_note: str = "",
    extra_tags: list[str] | None = None,
    license: str | None = None,  # noqa: A002  (the Hub's metadata key)
    pipeline_tag: str | None = None,
    figures: Sequence[tuple[str, str]] = (),
    base_model_name: str | None = None,
) -> ModelCard:
    """Render the card of a merged model.

    Args:
        repo_id: The Hub id the model is pushed to (used in the loading snippets and as the model name).
        base_model: The Hub id of the model that was merged; None (for a model on no Hub repo) omits it.
        model_config: The merged model's `PretrainedConfig`: picks the snippets' Auto classes and the
            `pipeline_tag` (see `loading_classes`).
        config: The merge settings.
        plan_statistics: `MergePlan.statistics`.
        rows: The before/after table (metrics, parameters, disk size, rows).
        eval_results: Evaluation results for the `model-index` metadata (after the merge).
        evaluation_note: A sentence on what the metrics were measured on.
        extra_tags: Tags beside the library's own.
        license: The base model's Hub license id (e.g. 'apache-2.0'); None omits it.
        pipeline_tag: The Hub task, replacing the one derived from `model_config` (e.g. 'text-to-speech').
        figures: `(path inside the repo, caption)` of each figure shown under "Figures" (see `copy_card_figures`).
        base_model_name: How the text names a base model that has no Hub id (e.g. a built-in); default "The base
            model".

    Returns:
        The card; `card.save(path)` or `card.push_to_hub(repo_id)`.
    """
    model_name = repo_id.split("/")[-1]
    classes = loading_classes(model_config)
    card_data = ModelCardData(
        base_model=base_model,
        # A merge compresses one base model, as quantization does; "merge" on the Hub means combining models.
        base_model_relation="quantized" if base_model else None,
        license=check_license(license) if license else None,
        pipeline_tag=pipeline_tag or classes.pipeline_tag,
        library_name="transformers",
        tags=TAGS + list(extra_tags or []),
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )
    settings = {key: value for key, value in config.to_dict().items() if value is not None}
    summary = (
        f"{plan_statistics.get('selected_rows')} selected rows -> {plan_statistics.get('clusters')} merged rows; "
        f"vocabulary rows {plan_statistics.get('vocab_size')} -> {plan_statistics.get('rows_after')}."
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name,
        repo_id=repo_id,
        base_model=base_model or base_model_name or "The base model",
        model_class=classes.model_class,
        preprocessor_class=classes.preprocessor_class,
        preprocessor_name=classes.preprocessor_name,
        rows_removed=plan_statistics.get("rows_removed"),
        before_after_table=change_table(rows),
        evaluation_note=evaluation_note,
        merge_config=json.dumps(settings, indent=2),
        plan_summary=summary,
        figures_section=_figures_markdown(figures),
    )


def check_card_figures(figures: Sequence[tuple[str | os.PathLike[str], str]]) -> list[tuple[Path, str]]:
    """Refuse card figures that cannot be shipped, before anything is loaded or merged.

    Args:
        figures: `(image file, caption)` pairs.

    Returns:
        The pairs with the files as `Path`s.

    Raises:
        TokenMergeError: A file is missing or not an image the Hub renders, a caption is empty, or two files share a
            name (they are copied into one folder).
    """
    checked, names = [], set()
    for file, caption in figures:
        path = Path(file).expanduser()
        if not path.is_file():
            raise TokenMergeError(f"Card figure {str(file)!r} is not a file. Fix: pass the path of an image.")
        if path.suffix.lower() not in FIGURE_SUFFIXES:
            kinds = ", ".join(FIGURE_SUFFIXES)
            raise TokenMergeError(f"Card figure {str(file)!r} is not an image the Hub shows. Fix: pass a {kinds} file.")
        if not caption.strip():
            raise TokenMergeError(f"Card figure {str(file)!r} has an empty caption. Fix: say what it shows.")
        if path.name in names:
            raise TokenMergeError(
                f"Two card figures are named {path.name!r}; both would be copied to {FIGURE_FOLDER}/. Fix: rename one."
            )
        names.add(path.name)
        checked.append((path, caption.strip()))
    return checked


def copy_card_figures(
    folder: str | os.PathLike[str], figures: Sequence[tuple[str | os.PathLike[str], str]]
) -> list[tuple[str, str]]:
    """Copy figures into `folder/figures/`, so that they are uploaded with the card that shows them.

    Args:
        folder: The model folder (a staging folder: see `stage_folder`).
        figures: `(image file, caption)` pairs, checked with `check_card_figures`.

    Returns:
        `(path inside the folder, caption)` pairs for `build_model_card(figures=...)`.
    """
    checked = check_card_figures(figures)
    if checked:
        (Path(folder) / FIGURE_FOLDER).mkdir(exist_ok=True)
    for path, _ in checked:
        shutil.copyfile(path, Path(folder) / FIGURE_FOLDER / path.name)
    return [(f"{FIGURE_FOLDER}/{path.name}", caption) for path, caption in checked]


def _figures_markdown(figures: Sequence[tuple[str, str]]) -> str:
    """The card's "Figures" section: each image with a numbered caption under it; empty without figures."""
    if not figures:
        return ""
    parts = ["## Figures", ""]
    for number, (path, caption) in enumerate(figures, start=1):
        parts += [f"![{caption}]({path})", "", f"*Figure {number}. {caption}*", ""]
    return "\n".join(parts)
