"""`hf-token-merge sequence`: Affinity Pooling settings and the layer-wise oracle study on a built-in eval set."""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_token_merge.cli.common import CODEC_ASR, load_model, positive_int
from hf_token_merge.errors import TokenMergeError

EXAMPLES = """examples:
  hf-token-merge sequence --model reference --output-dir runs/sequence \\
      --settings aggressive conservative --deep-layers 2 3 --position-strategies first mean contiguous
  hf-token-merge sequence --model reference --output-dir runs/oracle --settings \\
      --oracle-layers 0 1 2 3 --oracle-retentions 0.5 0.25 --oracle-modes random_drop uniform_drop uniform_merge
  hf-token-merge sequence --model codec-speech-llm --eval codec-asr --split test --limit 100 \\
      --output-dir runs/codec-sequence --settings aggressive conservative --variants input dual --deep-layers 2
  hf-token-merge sequence --model whisper-tiny-en --eval librivox --output-dir runs/whisper-frames \\
      --encoder-thresholds 0.99 0.97 0.95
"""


def add_parser(subparsers) -> None:
    """Register `sequence`."""
    parser = subparsers.add_parser(
        "sequence",
        help="evaluate sequence merging (Affinity Pooling, oracle interventions) on the reference speech-LLM",
        description=(
            "Evaluate the speech-LLM without a sequence merge, with Affinity Pooling (Dual: input + one deep layer) "
            "at each setting, deep layer and position strategy, and with oracle interventions at each layer. "
            "Writes sequence.md/json (WER, speech tokens kept, analytic prefill FLOPs) and the layer-wise plot."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default="reference",
        help="'reference' (or a saved reference-style folder), 'codec-speech-llm' (or a folder of it), or "
        "'whisper-tiny-en'",
    )
    parser.add_argument(
        "--eval",
        default="reference",
        choices=["reference", CODEC_ASR, "librivox"],
        help="'reference': the 512-unit speech-LLM's ASR test split; 'codec-asr': the codec speech-LLM's ASR on the "
        "codec corpus (--split; paired 95 %% intervals against no merge); 'librivox': 12 real utterances (Whisper)",
    )
    parser.add_argument(
        "--split", default="test", choices=["dev", "test", "librivox"], help="codec corpus split of --eval codec-asr"
    )
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--preset", default="reference", help="speech-token preset (default: reference)")
    parser.add_argument("--limit", type=positive_int, help="evaluate only the first N utterances")
    parser.add_argument("--name", default="sequence", help="stem of the written files (default: sequence)")
    affinity = parser.add_argument_group("Affinity Pooling")
    affinity.add_argument(
        "--settings", nargs="*", default=["aggressive", "conservative"], help="published settings to run (or none)"
    )
    affinity.add_argument("--deep-layers", nargs="+", type=int, default=[3], help="deep stage layers")
    affinity.add_argument(
        "--variants", nargs="+", default=["dual"], choices=["dual", "input", "deep"], help="which stages to run"
    )
    affinity.add_argument(
        "--position-strategies", nargs="+", default=["first"], choices=["first", "mean", "contiguous"]
    )
    affinity.add_argument(
        "--deep-thresholds", nargs="*", type=float, default=[], help="extra taus of a deep-only stage (window 3)"
    )
    oracle = parser.add_argument_group("oracle interventions")
    oracle.add_argument("--oracle-layers", nargs="*", type=int, default=[])
    oracle.add_argument("--oracle-retentions", nargs="+", type=float, default=[0.5, 0.25])
    oracle.add_argument(
        "--oracle-modes", nargs="+", default=["random_drop", "uniform_drop", "uniform_merge"], help="oracle modes"
    )
    _add_encoder_arguments(parser)
    parser.set_defaults(handler=run)


def _add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """The encoder-decoder analogue's options (Whisper: pool encoder frames)."""
    encoder = parser.add_argument_group("encoder-decoder analogue (Whisper: pool encoder frames)")
    encoder.add_argument("--encoder-thresholds", nargs="*", type=float, default=[], help="cosine thresholds tau")
    encoder.add_argument("--encoder-window", type=int, default=1, help="frames of the open group compared")
    encoder.add_argument(
        "--encoder-proportional-attention",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add log(frames pooled) to each pooled frame's cross-attention score (keeps the attention mass; on by "
        "default, --no-encoder-proportional-attention for the method before issue 16)",
    )
    encoder.add_argument(
        "--encoder-split-at-audio-end", action="store_true", help="never pool across the end of the real audio"
    )


def configs_from_args(args: argparse.Namespace) -> tuple[dict, dict]:
    """Name -> `SequenceMergeConfig` for every requested run, and name -> curve for the retention plot.

    Runs that differ only in their deep threshold share a curve, e.g. 'deep L3/first'.
    """
    from hf_token_merge.analysis import oracle_configs
    from hf_token_merge.sequence import AFFINITY_SETTINGS, MergeStage, SequenceMergeConfig

    speech = {"preset": args.preset}
    configs, series = {}, {}
    for setting in args.settings:
        if setting not in AFFINITY_SETTINGS:
            raise TokenMergeError(f"--settings {setting}: unknown. Fix: choose from {sorted(AFFINITY_SETTINGS)}.")
        tau_in, tau_deep, omega_in, omega_deep = AFFINITY_SETTINGS[setting]
        for strategy in args.position_strategies:
            if "input" in args.variants:
                stages = [MergeStage(layer=0, threshold=tau_in, window=omega_in)]
                configs[f"{setting} input/{strategy}"] = SequenceMergeConfig(
                    stages=stages, position_strategy=strategy, **speech
                )
            for layer in args.deep_layers:
                for variant in ("dual", "deep"):
                    if variant == "deep":  # the deep stage alone shares its curve with the --deep-thresholds runs
                        series[f"{setting} deep L{layer}/{strategy}"] = f"deep L{layer}/{strategy}"
                    if variant in args.variants:
                        configs[f"{setting} {variant} L{layer}/{strategy}"] = SequenceMergeConfig.dual(
                            setting,
                            deep_layer=layer,
                            input_stage=variant == "dual",
                            position_strategy=strategy,
                            **speech,
                        )
    for tau in args.deep_thresholds:
        for layer in args.deep_layers:
            for strategy in args.position_strategies:
                series[f"tau {tau:g} deep L{layer}/{strategy}"] = f"deep L{layer}/{strategy}"
                configs[f"tau {tau:g} deep L{layer}/{strategy}"] = SequenceMergeConfig(
                    stages=[MergeStage(layer=layer, threshold=tau, window=3)], position_strategy=strategy, **speech
                )
    if args.oracle_layers:
        configs.update(oracle_configs(speech, args.oracle_layers, args.oracle_retentions, args.oracle_modes))
    if not configs:
        raise TokenMergeError("Nothing to run. Fix: pass --settings and/or --oracle-layers.")
    return configs, series


def run(args: argparse.Namespace) -> int:
    """Run `sequence`."""
    from hf_token_merge.analysis import (
        evaluate_encoder_merges,
        evaluate_sequence_configs,
        save_sequence_points,
        sequence_markdown,
    )

    if args.eval == "librivox":
        if not args.encoder_thresholds:
            raise TokenMergeError("--eval librivox evaluates encoder-frame merges. Fix: pass --encoder-thresholds.")
        from hf_token_merge.evaluation import evaluate_wer
        from hf_token_merge.reference import load_librivox_sonnets

        model, processor = load_model(args.model)
        if not getattr(model.config, "is_encoder_decoder", False):
            raise TokenMergeError(f"--model {args.model} is not an encoder-decoder. Fix: use --model whisper-tiny-en.")
        data = load_librivox_sonnets()
        if args.limit:
            data = data.select(range(args.limit))

        def evaluate(model) -> dict[str, float]:
            return {"wer": evaluate_wer(model, data, processor=processor, batch_size=4, show_progress=False).wer}

        points = evaluate_encoder_merges(
            model,
            args.encoder_thresholds,
            evaluate,
            window=args.encoder_window,
            proportional_attention=args.encoder_proportional_attention,
            split_at_audio_end=args.encoder_split_at_audio_end,
        )
    elif args.eval == CODEC_ASR:
        points = _codec_points(args)
    else:
        from hf_token_merge.job import evaluate_reference_wer
        from hf_token_merge.reference.speech_llm import load_reference_eval_set

        configs, series = configs_from_args(args)
        model, tokenizer = load_model(args.model)
        eval_set = load_reference_eval_set()
        if args.limit:
            eval_set = eval_set[: args.limit]

        def evaluate(model) -> dict[str, float]:
            return {"wer": evaluate_reference_wer(model, tokenizer, eval_set, show_progress=False).wer}

        points = evaluate_sequence_configs(model, configs, evaluate, tokenizer=tokenizer, series=series)
    paths = save_sequence_points(points, str(Path(args.output_dir)), name=args.name)
    print(sequence_markdown(points))
    print(f"wrote {', '.join(sorted(paths.values()))}")
    return 0


def _codec_points(args: argparse.Namespace) -> list:
    """The sequence points of `--eval codec-asr`: the codec corpus's `--split`, with per-utterance records, so every
    configuration carries the paired interval of its WER change."""
    from hf_token_merge.analysis import evaluate_sequence_configs
    from hf_token_merge.cli.common import builtin_evaluation, load_evaluation_data

    configs, series = configs_from_args(args)
    options = {"split": args.split}
    data = load_evaluation_data(CODEC_ASR, options)
    if args.limit:
        data = data.select(range(min(args.limit, len(data))))
    model, tokenizer = load_model(args.model)
    evaluate = builtin_evaluation(CODEC_ASR, tokenizer, False, records=True, data=data, options=options)
    return evaluate_sequence_configs(model, configs, evaluate, tokenizer=tokenizer, series=series)
