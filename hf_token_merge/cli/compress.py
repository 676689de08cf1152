"""`hf-token-merge compress`: plan + apply + save (+ before/after evaluation, model card, plain export)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_token_merge.cli.common import (
    BUILTIN_EVALUATIONS,
    BUILTIN_MODELS,
    CODEC_ASR,
    MODEL_HELP,
    TTS_EVAL,
    add_calibration_argument,
    add_dataset_arguments,
    add_merge_arguments,
    add_tts_eval_arguments,
    builtin_evaluation,
    calibration_counts_from_args,
    check_calibration_args,
    dataset_options,
    describe_evaluation,
    load_evaluation_data,
    load_for_merge,
    positive_int,
    tts_generation,
    tts_options,
)

EXAMPLES = """examples:
  hf-token-merge compress --model reference --recipe reference --eval reference --output-dir runs/ref
  hf-token-merge compress --model path/to/llasa --recipe llasa --target-ratio 0.25 --output-dir runs/llasa
  hf-token-merge compress --model path/to/llasa-8b --recipe llasa --target-ratio 0.25 --streaming --output-dir runs/8b
  hf-token-merge compress --model whisper-tiny-en --token-id-range 50364 51864 --allow-special-tokens \\
      --n-clusters 150 --eval librivox --export-plain --output-dir runs/whisper
  hf-token-merge compress --model path/to/llasa --recipe llasa --eval tts-wer --tts-limit 50 --output-dir runs/llasa
  hf-token-merge compress --model whisper-tiny-en --recipe whisper --eval openslr/librispeech_asr \\
      --dataset-config clean --split test --output-dir runs/whisper-ls   # any datasets dataset (or save_to_disk folder)
"""


def add_parser(subparsers) -> None:
    """Register `compress`."""
    parser = subparsers.add_parser(
        "compress",
        help="merge a model (plan + apply + save), optionally evaluating before and after",
        description=(
            "Merge the selected rows and write OUTPUT_DIR/model (slim checkpoint, tokenizer, merge config and "
            "plan, README.md model card), OUTPUT_DIR/merge.json (+ merge_predictions.jsonl with --eval), and with "
            "--export-plain OUTPUT_DIR/plain."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument(
        "--eval",
        metavar="NAME_OR_PATH",
        help="evaluate before and after: a built-in set (" + ", ".join(BUILTIN_EVALUATIONS) + "), or for an "
        "encoder-decoder ASR model any datasets dataset (a save_to_disk folder, a Hub id with --split, an "
        "audiofolder, a .jsonl manifest)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the evaluation progress bars")
    parser.add_argument("--export-plain", action="store_true", help="also write a plain transformers checkpoint")
    parser.add_argument(
        "--pad-vocab-to-multiple-of",
        type=positive_int,
        metavar="N",
        help="with --export-plain: round the plain vocabulary up to a multiple of N (e.g. 64); padding is suppressed",
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="merge the saved safetensors folder --model tensor by tensor, without loading the model (peak memory: "
        "the embedding and LM head); chosen automatically when the weights would not fit in the available memory",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT_DIR/model and OUTPUT_DIR/plain even when they are non-empty folders not written here",
    )
    _add_card_arguments(parser)
    add_dataset_arguments(parser)
    add_calibration_argument(parser)
    add_tts_eval_arguments(parser)
    add_merge_arguments(parser)
    parser.set_defaults(handler=run)


def _add_card_arguments(parser: argparse.ArgumentParser) -> None:
    """The model card's options: base model, repo id, license and figures."""
    card = parser.add_argument_group("model card (OUTPUT_DIR/model/README.md)")
    card.add_argument(
        "--base-model-id",
        help="Hub id of the base model for the card (default: --model when it is a Hub id; whisper-tiny-en is "
        "openai/whisper-tiny.en; none for 'reference', 'codec-speech-llm' or a local folder)",
    )
    card.add_argument(
        "--repo-id",
        help="Hub id the card's loading snippets name (default: the placeholder <your-namespace>/<output-dir name>)",
    )
    card.add_argument(
        "--license",
        help="Hub license id for the card, e.g. apache-2.0 (default: the base model's: apache-2.0 for "
        "whisper-tiny-en, else the license in --model's README.md, else none)",
    )
    card.add_argument(
        "--card-figure",
        nargs=2,
        action="append",
        default=[],
        metavar=("IMAGE", "CAPTION"),
        help="show an image (PNG, JPEG, SVG, ...) under the card's Figures, copied into OUTPUT_DIR/model/figures/ "
        "so that it is uploaded with the card; repeat for more",
    )


def _base_model(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """`(Hub id, license)` of the merged model's base, for the card; None where it is unknown."""
    from huggingface_hub import ModelCard

    from hf_token_merge.config.json_config import looks_like_hub_id
    from hf_token_merge.hub.card import BUILTIN_BASE_MODELS

    if args.model in BUILTIN_BASE_MODELS:
        base, license_id = BUILTIN_BASE_MODELS[args.model]
    else:
        local = Path(args.model).expanduser()
        # a local folder's path is no Hub id; its own card, if any, still says which license it carries
        base = None if local.exists() else args.model if looks_like_hub_id(args.model) else None
        license_id = None
        source = local / "README.md" if local.exists() else base
        if source is not None and (base is not None or Path(source).is_file()):
            try:
                license_id = ModelCard.load(source).data.license
            except Exception:  # noqa: BLE001  (offline, no card, unreadable card: the card just omits the license)
                license_id = None
    return args.base_model_id or base, args.license or license_id


# The two byte counts compress reports, labelled wherever they are shown (table, card, merge.json).
BYTE_LABELS = {
    "memory": "tensor bytes in memory",  # parameters + buffers (index maps included), `MergeResult.bytes_*`
    "disk": "safetensors bytes on disk",  # the model*.safetensors files save_pretrained writes
}


def _merge_numbers(result, disk_before: int, disk_after: int) -> dict:
    """The merge's numbers for merge.json, with its two byte counts labelled by what they count."""
    numbers = {key: value for key, value in result.to_dict().items() if key not in ("bytes_before", "bytes_after")}
    return {
        **numbers,
        "tensor_bytes_in_memory_before": result.bytes_before,
        "tensor_bytes_in_memory_after": result.bytes_after,
        "safetensors_bytes_on_disk_before": disk_before,
        "safetensors_bytes_on_disk_after": disk_after,
    }


def _split(metrics: dict) -> tuple[dict, list | None, object]:
    """Metrics without the per-utterance records and the full result, the records, and the result (`WerResult`)."""
    metrics = dict(metrics)
    return metrics, metrics.pop("records", None), metrics.pop("report", None)


def _note(args: argparse.Namespace, difference, tts: dict | None = None) -> str:
    """What the card's numbers were measured on, and how sure the WER change is."""
    if not args.eval:
        return ""
    from hf_token_merge.evaluation.provenance import provenance_of

    described = describe_evaluation(args.eval, dataset_options(args))
    record = provenance_of(
        dataset_name=described,
        units=difference.units if difference is not None else None,
        generation=tts_generation(tts) if tts else {"decoding": _asr_decoding(args.eval)},
    )
    record.model = args.base_model_id or args.model
    what = "TTS WER" if args.eval == TTS_EVAL else "WER"
    sure = f" {what} change: {difference.summary()} (paired bootstrap)." if difference is not None else ""
    return f"Metrics measured on {described}.{sure}\n\n{record.markdown()}"


def _asr_decoding(name: str) -> str:
    """How `--eval NAME` decodes: beam search for the codec speech-LLM (its dev-chosen beams), else greedy."""
    if name == CODEC_ASR:
        from hf_token_merge.codec_job import GENERATION

        return GENERATION["asr_decoding"]
    return "greedy"


def _task_type(args: argparse.Namespace, metric: str) -> str:
    """The model-index task of a metric: TTS WER is text-to-speech, ASR WER speech recognition."""
    if args.eval == TTS_EVAL:
        return "text-to-speech"
    return "automatic-speech-recognition" if metric == "wer" else "text-generation"


def _card(
    args: argparse.Namespace,
    config,
    result,
    before: dict,
    after: dict,
    disk: tuple[int, int],
    model,
    difference=None,
    tts: dict | None = None,
    figures: list[tuple[str, str]] | None = None,
):
    """The model card and its before/after rows (the WER row with its paired CI; provenance in the note; the
    figures already copied into the model folder)."""
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
        ChangeRow(BYTE_LABELS["memory"], result.bytes_before, result.bytes_after, ",.0f"),
        ChangeRow(BYTE_LABELS["disk"], disk[0], disk[1], ",.0f"),
    ]
    eval_results = [
        EvalResult(
            task_type=_task_type(args, name),
            dataset_type=f"hf_token_merge/{args.eval}" if args.eval in BUILTIN_EVALUATIONS else args.eval,
            dataset_name=describe_evaluation(args.eval, dataset_options(args)),
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
        evaluation_note=_note(args, difference, tts),
        figures=figures or (),
        # a built-in without a Hub repo is still named in the text (the metadata names no base model)
        base_model_name=f"hf_token_merge's built-in `{args.model}`" if args.model in BUILTIN_MODELS else None,
    )
    return card, rows


def _check_card_arguments(args: argparse.Namespace) -> None:
    """Refuse a bad --card-figure, --repo-id, --base-model-id or --license before anything is loaded or merged."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from hf_token_merge.errors import TokenMergeError
    from hf_token_merge.hub.card import check_card_figures, check_license

    check_card_figures(args.card_figure)
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


def _check_before_loading(args: argparse.Namespace, output: Path) -> None:
    """Refuse bad card options and an unusable output folder before the model is loaded and merged."""
    from hf_token_merge.atomic import check_target
    from hf_token_merge.errors import TokenMergeError

    _check_card_arguments(args)
    if args.pad_vocab_to_multiple_of is not None and not args.export_plain:
        raise TokenMergeError("--pad-vocab-to-multiple-of pads the plain export. Fix: add --export-plain.")
    check_target(output / "model", overwrite=args.overwrite)
    if args.export_plain:
        check_target(output / "plain", overwrite=args.overwrite)


def run(args: argparse.Namespace) -> int:
    """Run `compress`."""
    from hf_token_merge import apply_token_merge, export_plain
    from hf_token_merge.atomic import atomic_directory
    from hf_token_merge.evaluation.compare import bytes_on_disk, safetensors_bytes
    from hf_token_merge.evaluation.runner import write_report
    from hf_token_merge.hub import stage_folder
    from hf_token_merge.hub.card import copy_card_figures

    output = Path(args.output_dir)
    _check_before_loading(args, output)
    if _streaming(args):
        return _run_streaming(args, output)
    tts = tts_options(args)  # a TTS evaluation without a family fails before the model loads
    # the evaluation data first: a missing column, split or path fails before the model is loaded
    options = dataset_options(args)
    data = load_evaluation_data(args.eval, options) if args.eval else None
    inputs = load_for_merge(args)
    config, model, processing_class, tokenizer = inputs.config, inputs.model, inputs.processing_class, inputs.tokenizer
    token_counts = calibration_counts_from_args(args, config, model, tokenizer)
    evaluate = None
    if args.eval:
        progress = not args.no_progress
        evaluate = builtin_evaluation(
            args.eval, processing_class, progress, records=True, reports=True, data=data, options=options, tts=tts
        )
    before, before_records, before_report = _split(evaluate(model) if evaluate else {})
    disk_before = bytes_on_disk(model)
    result = apply_token_merge(model, config, tokenizer=tokenizer, token_counts=token_counts)
    after, after_records, after_report = _split(evaluate(model) if evaluate else {})
    difference = None
    if before_records is not None and after_records is not None:
        from hf_token_merge.evaluation.confidence import compare_records

        difference = compare_records(before_records, after_records)
    folder = output / "model"
    # one atomic save: the card needs the size of the saved weights, so it is written inside the same staging folder
    with atomic_directory(folder, overwrite=args.overwrite) as staging:
        stage_folder(staging, model, tokenizer=processing_class, plan=result.plan)
        disk_after = safetensors_bytes(staging)
        figures = copy_card_figures(staging, args.card_figure)
        card, rows = _card(
            args, config, result, before, after, (disk_before, disk_after), model, difference, tts, figures
        )
        card.save(staging / "README.md")
    reports = (before_report, after_report)
    disk = (disk_before, disk_after)
    report, predictions = _merge_report(args, options, tts, result, disk, (before, after), difference, reports)
    write_report(output, "merge", report, predictions, "predictions")
    if args.export_plain:
        export_plain(
            model,
            result.plan,
            output / "plain",
            tokenizer=processing_class,  # the processor for Whisper, so the plain folder has its feature extractor
            pad_vocab_to_multiple_of=args.pad_vocab_to_multiple_of,
            overwrite=args.overwrite,
        )
    _print_summary(result, disk, reports, rows)
    print(f"model: {folder}")
    return 0


def _merge_report(args, options, tts, result, disk, metrics, difference, reports) -> tuple[dict, list | None]:
    """merge.json's numbers (labelled byte counts, metrics, WER reports) and the paired predictions, if any."""
    from hf_token_merge.evaluation.scoring import paired_predictions

    (disk_before, disk_after), (before, after), (before_report, after_report) = disk, metrics, reports
    report = {
        **_merge_numbers(result, disk_before, disk_after),
        "eval_set": describe_evaluation(args.eval, options) if args.eval else None,
        "before": before,
        "after": after,
        "wer_difference": difference.to_dict() if difference is not None else None,
        **({"tts_evaluation": tts_generation(tts)} if tts else {}),
    }
    predictions = None
    if before_report is not None and after_report is not None:
        # the same numbers as evaluate's wer.json (counts, RTFx), and its predictions side by side
        report["wer_before"], report["wer_after"] = before_report.to_dict(), after_report.to_dict()
        if not tts:
            predictions = paired_predictions(before_report.predictions, after_report.predictions)
    return report, predictions


def _print_summary(result, disk: tuple[int, int], reports: tuple, rows) -> None:
    """The merge's rows, parameters, bytes and WERs on stdout, then the before/after table."""
    from hf_token_merge.tables import change_table

    (disk_before, disk_after), (before_report, after_report) = disk, reports
    stats = result.plan.statistics
    print(
        f"merged {stats['selected_rows']} rows into {stats['clusters']} ({stats['vocab_size']} -> "
        f"{stats['rows_after']} rows); parameters {result.parameters_before:,} -> {result.parameters_after:,}"
    )
    print(f"{BYTE_LABELS['memory']}: {result.bytes_before:,} -> {result.bytes_after:,}")
    print(f"{BYTE_LABELS['disk']}: {disk_before:,} -> {disk_after:,}")
    if before_report is not None:
        print(f"WER before: {before_report}\nWER after:  {after_report}")
    print("\n" + change_table(rows))


def _streaming(args: argparse.Namespace) -> bool:
    """Whether to merge from the files: --streaming, or a local checkpoint too large for the available memory."""
    from hf_token_merge.errors import TokenMergeError
    from hf_token_merge.serialization.streaming import available_memory, needs_streaming

    local = Path(args.model).expanduser()
    is_checkpoint = (local / "config.json").is_file()
    if args.streaming:
        if not is_checkpoint:
            raise TokenMergeError(
                f"--streaming reads a saved checkpoint folder, and {args.model} is not one (no config.json there). "
                "Fix: download the model into a folder first (huggingface-cli download ID --local-dir DIR)."
            )
        if args.eval:
            raise TokenMergeError(
                "--eval runs the model before and after, which --streaming never loads. Fix: drop --eval, and "
                "evaluate the slim checkpoint afterwards (hf-token-merge evaluate --model OUTPUT_DIR/model)."
            )
        return True
    if not is_checkpoint or args.eval or not any(local.glob("model*.safetensors")):
        return False
    if needs_streaming(local):
        print(
            f"{args.model}: the weights would not fit in the {available_memory() / 2**30:.1f} GiB of available "
            "memory; merging tensor by tensor from the files (--streaming)."
        )
        return True
    return False


def _run_streaming(args: argparse.Namespace, output: Path) -> int:
    """`compress` without loading the model: plan and write the slim checkpoint from the files."""
    from types import SimpleNamespace

    from transformers import AutoConfig

    from hf_token_merge.atomic import atomic_directory
    from hf_token_merge.cli.common import config_from_args, load_processing_class
    from hf_token_merge.evaluation.compare import safetensors_bytes
    from hf_token_merge.hub.card import copy_card_figures
    from hf_token_merge.remap import calibration_counts
    from hf_token_merge.serialization.streaming import export_plain_streaming, write_streaming_checkpoint
    from hf_token_merge.tables import change_table

    source = Path(args.model).expanduser()
    config = config_from_args(args)
    processing_class = load_processing_class(source)
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    check_calibration_args(args, config)
    token_counts = None
    if args.calibration_text:
        token_counts = calibration_counts(
            tokenizer, args.calibration_text, AutoConfig.from_pretrained(source).get_text_config().vocab_size
        )
    disk_before = sum(path.stat().st_size for path in source.glob("model*.safetensors"))
    folder = output / "model"
    with atomic_directory(folder, overwrite=args.overwrite) as staging:
        result = write_streaming_checkpoint(source, config, staging, tokenizer=tokenizer, token_counts=token_counts)
        if processing_class is not None and processing_class is not tokenizer:
            processing_class.save_pretrained(staging)  # a processor: its feature extractor too
        disk_after = safetensors_bytes(staging)
        merged_config = SimpleNamespace(config=AutoConfig.from_pretrained(staging))
        figures = copy_card_figures(staging, args.card_figure)
        card, rows = _card(args, config, result, {}, {}, (disk_before, disk_after), merged_config, figures=figures)
        card.save(staging / "README.md")
    report = {**_merge_numbers(result, disk_before, disk_after), "streaming": True}
    from hf_token_merge.evaluation.runner import write_report

    write_report(output, "merge", report, None, "predictions")
    if args.export_plain:
        export_plain_streaming(
            source,
            result.plan,
            output / "plain",
            tokenizer=processing_class,
            pad_vocab_to_multiple_of=args.pad_vocab_to_multiple_of,
            overwrite=args.overwrite,
        )
    print(result)
    print("\n" + change_table(rows))
    print(f"model: {folder}")
    return 0
