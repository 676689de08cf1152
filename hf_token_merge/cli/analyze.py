"""`hf-token-merge analyze`: the redundancy report of a model's selected rows."""

from __future__ import annotations

import argparse

from hf_token_merge.cli.common import MODEL_HELP, add_merge_arguments, load_for_merge

EXAMPLES = """examples:
  hf-token-merge analyze --model reference --preset reference --target-ratio 0.5 --output-dir runs/analysis
  hf-token-merge analyze --model whisper-tiny-en --token-id-range 0 50256 --target-ratio 0.6 --no-maps \\
      --output-dir runs/whisper
"""


def add_parser(subparsers) -> None:
    """Register `analyze`."""
    parser = subparsers.add_parser(
        "analyze",
        help="redundancy report: similarity statistics, threshold curve, PCA, cross-layer CKA, t-SNE/UMAP",
        description="Measure how redundant the selected rows are and write PNG figures plus report.md/.html.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--sample-size", type=int, default=4096, help="rows sampled beyond this many (default 4096)")
    parser.add_argument("--no-maps", action="store_true", help="skip the t-SNE/UMAP maps")
    add_merge_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run `analyze`."""
    from hf_token_merge.analysis import analyze_redundancy

    inputs = load_for_merge(args)
    report = analyze_redundancy(
        inputs.model,
        inputs.config,
        args.output_dir,
        tokenizer=inputs.tokenizer,
        sample_size=args.sample_size,
        maps=() if args.no_maps else ("tsne", "umap"),
    )
    print(report.to_markdown().split("\n## ")[0])
    print(f"report: {args.output_dir}/report.md")
    return 0
