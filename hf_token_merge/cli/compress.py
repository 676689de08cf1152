"""`hf-token-merge compress`: plan + apply + save (+ before/after evaluation, model card, plain export)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_token_merge.cli.common import (
    BUILTIN_EVALUATIONS,
    add_calibration_argument,
    add_merge_arguments,
    builtin_evaluation,
    calibration_counts_from_args,
    load_for_merge,
    positive_int,
    write_json,
)

EXAMPLES = """examples:
  hf-token-merge compress --model reference --recipe reference --eval reference --output-dir runs/ref
  hf-token-merge compress --model path/to/llasa --recipe llasa --target-ratio 0.25 --output-dir runs/llasa
  hf-token-merge compress --model whisper-tiny-en --token-id-range 50364 51864 --allow-special-tokens \\
      --n-clusters 150 --eval librivox --export-plain --output-dir runs/whisper
"""


def add_parser(subparsers) -> None:
    """Register `compress`."""
    parser = subparsers.add_parser(
        "compress",
        help="merge a model (plan + apply + save), optionally evaluating before and after",
        description=(
            "Merge the selected rows and write OUTPUT_DIR/model (slim checkpoint, tokenizer, merge config and "
            "plan, README.md model card), OUTPUT_DIR/merge.json, and with --export-plain OUTPUT_DIR/plain."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="saved model folder, or 'reference' / 'whisper-tiny-en'")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--eval", choices=BUILTIN_EVALUATIONS, help="evaluate before and after on a built-in set")
    parser.add_argument("--export-plain", action="store_true", help="also write a plain transformers checkpoint")
    parser.add_argument(
        "--pad-vocab-to-multiple-of",
        type=positive_int,
        metavar="N",
        help="with --export-plain: round the plain vocabulary up to a multiple of N (e.g. 64); padding is suppressed",
    )
    parser.add_argument(
        "--base-model-id",
        help="Hub id of the base model for the card (default: --model when it is a Hub id; whisper-tiny-en is "
        "openai/whisper-tiny.en; none for 'reference' or a local folder)",
    )
    parser.add_argument(
        "--repo-id",
        help="Hub id the card's loading snippets name (default: the placeholder <your-namespace>/<output-dir name>)",
    )
    parser.add_argument(
        "--license",
        help="Hub license id for the card, e.g. apache-2.0 (default: the base model's: apache-2.0 for "
        "whisper-tiny-en, else the license in --model's README.md, else none)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT_DIR/model and OUTPUT_DIR/plain even when they are non-empty folders not written here",
    )
    add_calibration_argument(parser)
    add_merge_arguments(parser)
    parser.set_defaults(handler=run)


def _base_model(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """`(Hub id, license)` of the merged model's base, for the card; None where it is unknown."""
    from huggingface_hub import ModelCard

    from hf_token_merge.cli.common import _hub_id
    from hf_token_merge.hub.card import BUILTIN_BASE_MODELS

    if args.model in BUILTIN_BASE_MODELS:
        base, license_id = BUILTIN_BASE_MODELS[args.model]
    else:
        local = Path(args.model).expanduser()
        # a local folder's path is no Hub id; its own card, if any, still says which license it carries
        base = None if local.exists() else args.model if _hub_id(args.model) else None
        license_id = None
        source = local / "README.md" if local.exists() else base
        if source is not None and (base is not None or Path(source).is_file()):
            try:
                license_id = ModelCard.load(source).data.license
            except Exception:  # noqa: BLE001  (offline, no card, unreadable card: the card just omits the license)
                license_id = None
    return args.base_model_id or base, args.license or license_id


def _split(metrics: dict) -> tuple[dict, list | None]:
    """Metrics without the per-utterance records, and the records."""
    metrics = dict(metrics)
    return metrics, metrics.pop("records", None)


def _note(args: argparse.Namespace, difference) -> str:
    """What the card's numbers were measured on, and how sure the WER change is."""
    if not args.eval:
        return ""
    from hf_token_merge.evaluation.provenance import provenance_of

    record = provenance_of(
        dataset_name=BUILTIN_EVALUATIONS[args.eval],
        units=difference.units if difference is not None else None,
        generation={"decoding": "greedy"},
    )
    record.model = args.base_model_id or args.model
    sure = f" WER change: {difference.summary()} (paired bootstrap)." if difference is not None else ""
    return f"Metrics measured on {BUILTIN_EVALUATIONS[args.eval]}.{sure}\n\n{record.markdown()}"


def _card(
    args: argparse.Namespace, config, result, before: dict, after: dict, disk: tuple[int, int], model, difference=None
):
    """The model card and its before/after rows (the WER row with its paired CI; provenance in the note)."""
    from huggingface_hub import EvalResult

    from hf_token_merge.hub import build_model_card
    from hf_token_merge.tables import ChangeRow, change_rows

    stats = result.plan.statistics
    rows = change_rows(before, after)
    for row in rows:
        if row.metric == "wer" and difference is not None:
            row.interval = difference.interval_text(1, "+.4f")
    rows += [
        ChangeRow("vocabulary rows", stats["vocab_size"], stats["rows_after"], ",.0f"),
        ChangeRow("parameters", result.parameters_before, result.parameters_after, ",.0f"),
        ChangeRow("safetensors bytes", disk[0], disk[1], ",.0f"),
    ]
    eval_results = [
        EvalResult(
            task_type="automatic-speech-recognition" if name == "wer" else "text-generation",
            dataset_type=f"hf_token_merge/{args.eval}",
            dataset_name=BUILTIN_EVALUATIONS[args.eval],
            metric_type=name,
            metric_value=value,
        )
        for name, value in after.items()
    ]
    base_model, license_id = _base_model(args)
    card = build_model_card(
        # never the bare folder name: it would read as a Hub id that is not the user's
        repo_id=args.repo_id or f"<your-namespace>/{Path(args.output_dir).resolve().name}",
        base_model=base_model,
        model_config=model.config,
        license=license_id if isinstance(license_id, str) else None,
        config=config,
        plan_statistics=stats,
        rows=rows,
        eval_results=eval_results,
        evaluation_note=_note(args, difference),
    )
    return card, rows


def _check_card_arguments(args: argparse.Namespace) -> None:
    """Refuse a bad --repo-id, --base-model-id or --license before anything is loaded or merged."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from hf_token_merge.errors import TokenMergeError
    from hf_token_merge.hub.card import check_license

    for flag, value in (("--repo-id", args.repo_id), ("--base-model-id", args.base_model_id)):
        if value is None:
            continue
        try:
            validate_repo_id(value)
        except HFValidationError as error:
            raise TokenMergeError(
                f"{flag} {value!r} is not a valid Hub id ({error}). Fix: pass NAMESPACE/NAME."
            ) from None
    if args.license is not None:
        check_license(args.license)


def run(args: argparse.Namespace) -> int:
    """Run `compress`."""
    from hf_token_merge import apply_token_merge, export_plain
    from hf_token_merge.atomic import atomic_directory, check_target
    from hf_token_merge.errors import TokenMergeError
    from hf_token_merge.evaluation.compare import bytes_on_disk, safetensors_bytes
    from hf_token_merge.hub import stage_folder
    from hf_token_merge.tables import change_table

    output = Path(args.output_dir)
    _check_card_arguments(args)
    if args.pad_vocab_to_multiple_of is not None and not args.export_plain:
        raise TokenMergeError("--pad-vocab-to-multiple-of pads the plain export. Fix: add --export-plain.")
    # refuse an unusable output folder before the model is loaded and merged
    check_target(output / "model", overwrite=args.overwrite)
    if args.export_plain:
        check_target(output / "plain", overwrite=args.overwrite)
    inputs = load_for_merge(args)
    config, model, processing_class, tokenizer = inputs.config, inputs.model, inputs.processing_class, inputs.tokenizer
    token_counts = calibration_counts_from_args(args, config, model, tokenizer)
    evaluate = builtin_evaluation(args.eval, processing_class, show_progress=False, records=True) if args.eval else None
    before, before_records = _split(evaluate(model) if evaluate else {})
    disk_before = bytes_on_disk(model)
    result = apply_token_merge(model, config, tokenizer=tokenizer, token_counts=token_counts)
    after, after_records = _split(evaluate(model) if evaluate else {})
    difference = None
    if before_records is not None and after_records is not None:
        from hf_token_merge.evaluation.confidence import compare_records

        difference = compare_records(before_records, after_records)
    folder = output / "model"
    # one atomic save: the card needs the size of the saved weights, so it is written inside the same staging folder
    with atomic_directory(folder, overwrite=args.overwrite) as staging:
        stage_folder(staging, model, tokenizer=processing_class, plan=result.plan)
        disk_after = safetensors_bytes(staging)
        card, rows = _card(args, config, result, before, after, (disk_before, disk_after), model, difference)
        card.save(staging / "README.md")
    write_json(
        output / "merge.json",
        {
            **result.to_dict(),
            "before": before,
            "after": after,
            "wer_difference": difference.to_dict() if difference is not None else None,
            "disk_bytes_before": disk_before,
            "disk_bytes_after": disk_after,
        },
    )
    if args.export_plain:
        export_plain(
            model,
            result.plan,
            output / "plain",
            tokenizer=processing_class,  # the processor for Whisper, so the plain folder has its feature extractor
            pad_vocab_to_multiple_of=args.pad_vocab_to_multiple_of,
            overwrite=args.overwrite,
        )
    print(result)
    print("\n" + change_table(rows))
    print(f"model: {folder}")
    return 0
