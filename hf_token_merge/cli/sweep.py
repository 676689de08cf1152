"""`hf-token-merge sweep`: metrics against compression level per strategy, and the largest merge within a budget."""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_token_merge.cli.common import (
    BUILTIN_EVALUATIONS,
    add_merge_arguments,
    builtin_evaluation,
    load_for_merge,
    write_json,
)

EXAMPLES = """examples:
  hf-token-merge sweep --model reference --preset reference --target-ratio 0.5 --eval reference \\
      --ratios 0.5 0.25 0.125 --strategies kmeans random --output-dir runs/sweep
  hf-token-merge sweep --model reference --preset reference --target-ratio 0.5 --eval reference \\
      --ratios 0.5 --strategies kmeans --max-wer-increase 0.01 --output-dir runs/budget
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
    parser.add_argument("--model", required=True, help="saved model folder, or 'reference' / 'whisper-tiny-en'")
    parser.add_argument("--eval", required=True, choices=BUILTIN_EVALUATIONS, help="built-in evaluation set")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.5, 0.25, 0.125])
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=["kmeans", "random"],
        help="kmeans, agglomerative, drop_least_frequent (needs counts; not from the CLI), random",
    )
    budget = parser.add_argument_group("budget")
    budget.add_argument("--max-wer-increase", type=float, help="absolute WER increase allowed (0.01 = 1 point)")
    budget.add_argument("--max-ppl-increase", type=float, help="absolute perplexity increase allowed")
    budget.add_argument("--min-ratio", type=float, default=1 / 64, help="strongest merge the budget search tries")
    add_merge_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run `sweep` (and the budget search)."""
    from hf_token_merge.analysis import compress_within_budget, sweep, sweep_markdown

    config, model, helper, tokenizer = load_for_merge(args, require_stop=False)
    evaluate = builtin_evaluation(args.eval, helper, show_progress=False)
    output = Path(args.output_dir)
    points = sweep(
        model,
        config,
        evaluate,
        ratios=args.ratios,
        strategies=args.strategies,
        tokenizer=tokenizer,
        output_dir=str(output),
    )
    print(sweep_markdown(points))
    if args.max_wer_increase is None and args.max_ppl_increase is None:
        return 0
    result = compress_within_budget(
        model,
        config,
        evaluate,
        max_wer_increase=args.max_wer_increase,
        max_ppl_increase=args.max_ppl_increase,
        tokenizer=tokenizer,
        min_ratio=args.min_ratio,
    )
    write_json(
        output / "budget.json",
        {
            "n_clusters": result.n_clusters,
            "ratio": result.ratio,
            "before": result.before,
            "after": result.after,
            "trials": result.trials,
        },
    )
    if result.plan is not None:
        model.save_pretrained(output / "budgeted")
        helper.save_pretrained(output / "budgeted")
    print(
        f"budget: {result.n_clusters} rows for the selection (ratio {result.ratio:.4f}); "
        f"before {result.before}, after {result.after}"
    )
    return 0
