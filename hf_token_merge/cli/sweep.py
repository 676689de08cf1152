"""`hf-token-merge sweep`: metrics against compression level per strategy, and the largest merge within a budget."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hf_token_merge.cli.common import (
    BUILTIN_EVALUATIONS,
    MODEL_HELP,
    add_calibration_argument,
    add_dataset_arguments,
    add_merge_arguments,
    add_tts_eval_arguments,
    builtin_evaluation,
    calibration_counts_from_args,
    check_calibration_args,
    config_from_args,
    dataset_options,
    load_evaluation_data,
    load_model,
    tts_generation,
    tts_options,
    write_json,
)
from hf_token_merge.clustering import grouping_methods
from hf_token_merge.clustering.registry import DEPRECATED_ALIASES
from hf_token_merge.errors import TokenMergeError

# The grouping methods that take a row count, plus the deprecated aliases.
STRATEGY_CHOICES = [m.name for m in grouping_methods().values() if m.takes_row_count] + list(DEPRECATED_ALIASES)

EXAMPLES = """examples:
  hf-token-merge sweep --model reference --preset reference --target-ratio 0.5 --eval reference \\
      --ratios 0.5 0.25 0.125 --strategies kmeans random --output-dir runs/sweep
  hf-token-merge sweep --model reference --preset reference --target-ratio 0.5 --eval reference \\
      --ratios 0.5 --strategies kmeans --max-wer-increase 0.01 --output-dir runs/budget
  hf-token-merge sweep --model whisper-tiny-en --token-id-range 256 50256 --eval librivox \\
      --calibration-text calibration.txt --budget-only --budget-strategy frequency \\
      --max-wer-increase 0.005 --output-dir runs/whisper-budget
  hf-token-merge sweep --model path/to/llasa --recipe llasa --eval tts-wer --tts-limit 100 --budget-only \
      --split-eval 0.5 --criterion upper_bound --max-wer-increase 0.01 --output-dir runs/llasa-budget
"""


def add_parser(subparsers) -> None:
    """Register `sweep`."""
    parser = subparsers.add_parser(
        "sweep",
        help="evaluate a grid of compression levels and strategies; optionally compress within a budget",
        description=(
            "Evaluate the model unmerged and merged at each ratio with each strategy (a table, JSON and one PNG "
            "curve per metric). With --max-wer-increase/--max-ppl-increase it then searches the largest merge "
            "within that budget and saves the merged model to OUTPUT_DIR/budgeted."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument(
        "--eval",
        required=True,
        metavar="NAME_OR_PATH",
        help="a built-in set (" + ", ".join(BUILTIN_EVALUATIONS) + "), or for an encoder-decoder ASR model any "
        "datasets dataset (a save_to_disk folder, a Hub id with --split, an audiofolder, a .jsonl manifest)",
    )
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.5, 0.25, 0.125])
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=["kmeans", "random"],
        choices=STRATEGY_CHOICES,
        metavar="STRATEGY",
        help="grouping methods: kmeans, agglomerative, frequency (needs --calibration-text), random "
        "(drop_least_frequent: deprecated alias of frequency)",
    )
    parser.add_argument(
        "--thresholds",
        nargs="+",
        type=float,
        default=[],
        metavar="T",
        help="also one 'threshold' point per value: a cosine similarity (--metric cosine) or Euclidean distance",
    )
    add_calibration_argument(parser)
    budget = parser.add_argument_group("budget")
    budget.add_argument("--max-wer-increase", type=float, help="absolute WER increase allowed (0.01 = 1 point)")
    budget.add_argument("--max-ppl-increase", type=float, help="absolute perplexity increase allowed")
    budget.add_argument("--min-ratio", type=float, default=1 / 64, help="strongest merge the budget search tries")
    budget.add_argument(
        "--budget-strategy",
        choices=STRATEGY_CHOICES,
        help="how the budget search forms k rows (default: the config's method)",
    )
    budget.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="stop bisecting once the bracket is this fraction of the selected rows (default 0: exact to one row)",
    )
    budget.add_argument("--budget-only", action="store_true", help="skip the sweep grid; only run the budget search")
    budget.add_argument(
        "--overwrite", action="store_true", help="replace OUTPUT_DIR/budgeted even when hf_token_merge did not write it"
    )
    budget.add_argument(
        "--report-eval",
        metavar="NAME_OR_PATH",
        help="a separate set (as --eval) the budgeted merge is reported on (--eval then only tunes)",
    )
    budget.add_argument(
        "--split-eval",
        type=float,
        metavar="FRACTION",
        help="split --eval (seeded): FRACTION of its examples tune the budget search, the rest report the result",
    )
    budget.add_argument(
        "--criterion",
        choices=["estimate", "upper_bound"],
        default="estimate",
        help="upper_bound: the 95 %% bootstrap upper bound of the WER increase must fit the budget",
    )
    add_tts_eval_arguments(parser)
    add_dataset_arguments(parser)
    add_merge_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run `sweep` (and the budget search)."""
    from hf_token_merge.analysis import sweep, sweep_markdown
    from hf_token_merge.analysis.sweep import resolve_strategy, strategy_config, threshold_config
    from hf_token_merge.atomic import check_target

    if args.budget_only and args.max_wer_increase is None and args.max_ppl_increase is None:
        raise TokenMergeError("--budget-only needs a budget. Fix: add --max-wer-increase and/or --max-ppl-increase.")
    if args.report_eval and args.split_eval is not None:
        raise TokenMergeError("--report-eval and --split-eval both name a report set. Fix: pass one of them.")
    if not 0 <= args.tolerance < 1:
        raise TokenMergeError(f"--tolerance {args.tolerance}: must lie in [0, 1). Fix: pass e.g. 0.005.")
    config = config_from_args(args, require_stop=False)
    args.tts = tts_options(args)  # a TTS evaluation without a family fails before the model loads
    strategies = [resolve_strategy(s) for s in args.strategies]
    grid = [] if args.budget_only else [strategy_config(config, s, 1) for s in strategies]
    grid += [threshold_config(config, t) for t in args.thresholds]  # a bad threshold fails before the model loads
    budget_strategy = None if args.budget_strategy is None else resolve_strategy(args.budget_strategy)
    if args.max_wer_increase is not None or args.max_ppl_increase is not None:
        grid.append(strategy_config(config, budget_strategy or config.method, 1))
    check_calibration_args(args, config, *grid)  # before the model loads
    if args.max_wer_increase is not None or args.max_ppl_increase is not None:
        check_target(Path(args.output_dir) / "budgeted", overwrite=args.overwrite)
    # the evaluation data first: a missing column, split or path fails before the model is loaded
    data = load_evaluation_data(args.eval, dataset_options(args))
    model, processing_class = load_model(args.model)
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    token_counts = calibration_counts_from_args(args, config, model, tokenizer)
    # with per-utterance records every point gets the paired interval of its WER change (a band in the PNG)
    evaluate = builtin_evaluation(
        args.eval, processing_class, show_progress=False, data=data, tts=args.tts, records=True
    )
    output = Path(args.output_dir)
    if not args.budget_only:
        points = sweep(
            model,
            config,
            evaluate,
            ratios=args.ratios,
            strategies=strategies,
            thresholds=args.thresholds,
            tokenizer=tokenizer,
            token_counts=token_counts,
            output_dir=str(output),
        )
        print(sweep_markdown(points))
    if args.max_wer_increase is not None or args.max_ppl_increase is not None:
        _run_budget(args, config, budget_strategy, model, processing_class, evaluate, token_counts)
    return 0


def _run_budget(args, config, strategy, model, processing_class, evaluate, token_counts) -> None:
    """The budget search of `sweep`: merge `model` in place, write budget.json and the budgeted model."""
    from hf_token_merge.analysis import compress_within_budget
    from hf_token_merge.atomic import atomic_directory

    output = Path(args.output_dir)
    model_rows_before = model.get_input_embeddings().num_embeddings
    tune, report = _budget_evaluations(args, processing_class)
    result = compress_within_budget(
        model,
        config,
        tune,
        report_evaluate=report,
        criterion=args.criterion,
        max_wer_increase=args.max_wer_increase,
        max_ppl_increase=args.max_ppl_increase,
        tokenizer=getattr(processing_class, "tokenizer", processing_class),
        token_counts=token_counts,
        min_ratio=args.min_ratio,
        tolerance=args.tolerance,
        strategy=strategy,
    )
    write_json(
        output / "budget.json",
        {
            **result.to_dict(),
            "strategy": strategy or config.method,
            "selected_rows": int(result.plan.selected_ids.numel()) if result.plan is not None else result.n_clusters,
            "rows_before": model_rows_before,
            "rows_after": model.get_input_embeddings().num_embeddings,
            "tune_set": getattr(tune, "eval_set_name", args.eval),
            "report_set": getattr(report, "eval_set_name", args.report_eval) if report is not None else None,
        },
    )
    if result.plan is not None:
        card = _budget_card(args, result, tune, report, model)
        with atomic_directory(output / "budgeted", overwrite=args.overwrite) as folder:
            model.save_pretrained(folder)
            processing_class.save_pretrained(folder)
            card.save(folder / "README.md")
    _print_budget(args, result, tune, report, model_rows_before, model.get_input_embeddings().num_embeddings)


def _budget_evaluations(args, processing_class) -> tuple[Any, Any]:
    """`(tune, report)` evaluations of the budget search: the tuning set, and the report set (None without one)."""
    tune_split = ("tune", args.split_eval) if args.split_eval is not None else None
    options = dataset_options(args)
    tune = builtin_evaluation(
        args.eval, processing_class, False, split=tune_split, records=True, options=options, tts=args.tts
    )
    report = None
    if args.split_eval is not None:
        split = ("report", args.split_eval)
        report = builtin_evaluation(
            args.eval, processing_class, False, split=split, records=True, options=options, tts=args.tts
        )
    elif args.report_eval:
        report = builtin_evaluation(
            args.report_eval, processing_class, False, records=True, options=options, tts=args.tts
        )
    return tune, report


def _print_budget(args, result, tune, report, rows_before: int, rows_after: int) -> None:
    """The budget search's outcome in two lines: the rows kept and the metrics on the tuning and report sets."""
    print(
        f"budget: {result.n_clusters} rows for the selection (ratio {result.ratio:.4f}); embedding rows "
        f"{rows_before} -> {rows_after} ({1 - rows_after / rows_before:.1%} removed); "
        f"tuning set ({getattr(tune, 'eval_set_name', args.eval)}): before {result.before}, after {result.after}"
    )
    if report is not None:
        difference = result.report_difference
        interval = (
            f"; WER change {100 * difference['difference']:+.2f} points "
            f"({100 * difference['confidence']:g} % CI {100 * difference['ci_low']:+.2f} to "
            f"{100 * difference['ci_high']:+.2f}, {difference['units']:,} words)"
            if difference
            else ""
        )
        name = getattr(report, "eval_set_name", args.report_eval)
        print(f"report set ({name}): before {result.report_before}, after {result.report_after}{interval}")


def _budget_card(args: argparse.Namespace, result, tune, report, model):
    """The budgeted model's card: both sets' before/after rows, the report set's interval, and provenance."""
    from hf_token_merge.evaluation.provenance import provenance_of
    from hf_token_merge.hub import CardRow, build_model_card

    sets = [("tuning set", result.before, result.after, result.tune_difference, tune)]
    if report is not None:
        sets.append(("report set", result.report_before, result.report_after, result.report_difference, report))
    rows, notes = [], []
    for label, before, after, difference, evaluate in sets:
        name = getattr(evaluate, "eval_set_name", label)
        rows += [CardRow(f"{metric} ({label})", before[metric], after[metric]) for metric in before]
        if difference:
            notes.append(
                f"{label} ({name}): WER change {100 * difference['difference']:+.2f} points, "
                f"{100 * difference['confidence']:g} % CI {100 * difference['ci_low']:+.2f} to "
                f"{100 * difference['ci_high']:+.2f} (paired bootstrap over {difference['utterances']} utterances, "
                f"{difference['units']:,} words)."
            )
    if result.tuned_on_report_set:
        notes.append("**The row count was chosen on the same set these numbers report (no separate report set).**")
    else:
        notes.append("The row count was chosen on the tuning set only; the report set is held out.")
    tts = getattr(args, "tts", None)
    generation = tts_generation(tts) if tts else {"decoding": "greedy"}
    record = provenance_of(dataset_name=args.eval, generation=generation, criterion=result.criterion)
    record.model = args.model
    note = " ".join(notes) + "\n\n" + record.markdown()
    return build_model_card(
        repo_id=Path(args.output_dir).name,
        base_model=args.base_model_id if getattr(args, "base_model_id", None) else args.model,
        model_config=model.config,
        config=result.plan.config,
        plan_statistics=result.plan.statistics,
        rows=rows,
        evaluation_note=note,
    )
