"""Model cards for merged models, rendered through `huggingface_hub.ModelCard` / `ModelCardData`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_token_merge.config import TokenMergeConfig
from hf_token_merge.tables import ChangeRow, change_table

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
TAGS = ["hf-token-merge", "token-merging", "speech", "compression"]


# The model card's rows are the library's one before/after row type.
CardRow = ChangeRow


def build_model_card(
    *,
    repo_id: str,
    base_model: str,
    config: TokenMergeConfig,
    plan_statistics: dict[str, Any],
    rows: list[ChangeRow],
    eval_results: list[EvalResult] | None = None,
    evaluation_note: str = "",
    extra_tags: list[str] | None = None,
) -> ModelCard:
    """Render the card of a merged model.

    Args:
        repo_id: Where the model lives (used in the loading snippet and as the model name).
        base_model: The Hub id (or name) of the model that was merged.
        config: The merge settings.
        plan_statistics: `MergePlan.statistics`.
        rows: The before/after table (metrics, parameters, disk size, rows).
        eval_results: Evaluation results for the `model-index` metadata (after the merge).
        evaluation_note: A sentence on what the metrics were measured on.
        extra_tags: Tags beside the library's own.

    Returns:
        The card; `card.save(path)` or `card.push_to_hub(repo_id)`.
    """
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        base_model=base_model,
        # A merge compresses one base model, as quantization does; "merge" on the Hub means combining models.
        base_model_relation="quantized",
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
        base_model=base_model,
        rows_removed=plan_statistics.get("rows_removed"),
        before_after_table=change_table(rows),
        evaluation_note=evaluation_note,
        merge_config=json.dumps(settings, indent=2),
        plan_summary=summary,
    )
