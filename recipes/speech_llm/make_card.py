"""Write the codec speech-LLM's model card: the training curve (PNG) and the results with their intervals.

Reads a training run's `train_log.jsonl` and `model/training.json` and the JSON of `evaluate.py`; writes
`README.md` and `training_curve.png` into `--card-dir` (default `model_cards/codec-speech-llm/`), and the same
README next to the weights when `--asset-dir` is given.

    python recipes/speech_llm/make_card.py --run runs/cpu --results runs/cpu/results_test.json \\
        --asset-dir hf_token_merge/reference/assets/codec_speech_llm
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
GOALS = {"gpu": {"asr": 0.20, "tts": 0.35}, "cpu": {"asr": 0.40, "tts": 0.60}}


def plot_curve(log: list[dict], path: Path) -> None:
    """Train loss per task (every logged window) and dev loss per task against steps."""
    train = [r for r in log if "tts" in r or "asr" in r]
    dev = [r for r in log if "dev_tts" in r or "dev_asr" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, colour in (("tts", "tab:blue"), ("asr", "tab:orange")):
        ax.plot(
            [r["step"] for r in train if key in r],
            [r[key] for r in train if key in r],
            colour,
            lw=1,
            alpha=0.7,
            label=f"train {key.upper()}",
        )
        ax.plot(
            [r["step"] for r in dev if f"dev_{key}" in r],
            [r[f"dev_{key}"] for r in dev if f"dev_{key}" in r],
            colour,
            marker="o",
            ls="--",
            label=f"dev {key.upper()} (96 utterances)",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("Codec speech-LLM training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cell(row: dict | None) -> str:
    if not row:
        return "not measured"
    return (
        f"{row['wer']:.3f} (95 % CI {row['ci_low']:.3f}-{row['ci_high']:.3f}; "
        f"{row['utterances']} utt., {row['words']:,} words)"
    )


def _decoding(num_beams: int) -> str:
    return "greedy" if num_beams == 1 else f"{num_beams} beams"


def asr_columns(results: dict) -> dict[str, int]:
    """The ASR entries of `evaluate.py`'s rows (`asr`, then `asr_beams_N`) and their beam counts."""
    rows = results["splits"].values()
    main = next((row["asr"].get("num_beams", 1) for row in rows if "asr" in row), 1)
    others = sorted({key for row in rows for key in row if key.startswith("asr_beams_")})
    return {"asr": main} | {key: int(key.removeprefix("asr_beams_")) for key in others}


def results_table(results: dict) -> str:
    """One row per split: ASR WER (the chosen decoding, then any other beam counts scored), TTS WER, the floor."""
    splits, columns = results["splits"], asr_columns(results)
    header = [f"ASR WER ({_decoding(count)})" for count in columns.values()]
    lines = [
        "| split | " + " | ".join(header) + " | TTS WER (greedy) | codec resynthesis (TTS floor) |",
        "|---|" + "---|" * (len(columns) + 2),
    ]
    for split, row in splits.items():
        cells = [_cell(row.get(k)) for k in columns] + [_cell(row.get("tts")), _cell(row.get("oracle_tts"))]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def beam_choice(dev_results: dict) -> str:
    """`1: 0.454, 2: 0.383, ...`: the dev ASR WER of every beam count `evaluate.py --asr-beams` scored."""
    row = next(iter(dev_results["splits"].values()))
    scores = {count: row[key]["wer"] for key, count in asr_columns(dev_results).items() if key in row}
    return ", ".join(f"{count}: {wer:.3f}" for count, wer in sorted(scores.items()))


def limits(results: dict) -> str:
    out = []
    if results.get("limit"):
        out.append(f"Every column on the first {results['limit']} utterances of each split.")
    if results.get("tts_limit"):
        out.append(f"TTS and resynthesis on the first {results['tts_limit']} utterances of each split (CPU time).")
    return " ".join(out)


def goal_lines(results: dict, where: str) -> str:
    test = results["splits"].get("test", {})
    out = []
    for tier in ("cpu", "gpu"):
        for task in ("asr", "tts"):
            goal = GOALS[tier][task]
            value = test.get(task, {}).get("wer")
            verdict = "not measured" if value is None else ("met" if value <= goal else "NOT met")
            label = "CPU fallback" if tier == "cpu" else "GPU target"
            out.append(
                f"- {label}, {task.upper()} WER <= {goal:.2f} on test: {verdict}"
                + ("" if value is None else f" ({value:.3f})")
            )
    note = "The GPU targets await a GPU: this model was trained on CPU only." if where == "cpu" else ""
    return "\n".join(out) + ("\n\n" + note if note else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="training output folder (train_log.jsonl, model/)")
    parser.add_argument("--results", required=True, help="JSON written by evaluate.py --output")
    parser.add_argument("--card-dir", default=str(REPO / "model_cards" / "codec-speech-llm"))
    parser.add_argument("--asset-dir", default=None)
    parser.add_argument("--commands", default="", help="the exact commands, for the card")
    parser.add_argument("--notes", default="", help="what else a reader of the training section must know")
    parser.add_argument("--asr-choice", required=True, help="evaluate.py's dev JSON of the beam counts (--asr-beams)")
    args = parser.parse_args(argv)
    run, card = Path(args.run), Path(args.card_dir)
    card.mkdir(parents=True, exist_ok=True)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]
    training = json.loads((run / "model" / "training.json").read_text())
    results = json.loads(Path(args.results).read_text())
    asr_num_beams = asr_columns(results)["asr"]
    asr_choice = beam_choice(json.loads(Path(args.asr_choice).read_text()))
    plot_curve(log, card / "training_curve.png")
    settings = training["settings"]
    where = "cpu" if training["device"] == "cpu" else "gpu"
    last = [r for r in log if "dev_tts" in r][-1:] or [{}]
    aids = []
    if settings.get("init_from"):
        aids.append(f"started from the weights in `{settings['init_from']}`")
    if settings.get("guide_weight"):
        aids.append(
            f"guided attention (weight {settings['guide_weight']}, layers {settings['guide_layers']}, heads "
            f"{settings['guide_heads']}, band sigma {settings['guide_sigma']})"
        )
    if settings.get("corrupt_codes"):
        aids.append(f"{settings['corrupt_codes']:.0%} of the input codes replaced by random codes")
    aids_line = ("This run " + "; ".join(aids) + ".") if aids else ""
    stopped = " (stopped early at the time limit)" if training["stopped_early"] else ""
    text = f"""# codec_speech_llm

A speech-LLM trained **here** in Llasa's layout: a tied `LlamaForCausalLM`
({settings["layers"]} layers, hidden {settings["hidden"]}, {settings["parameters"]:,} parameters) whose vocabulary holds
4 special tokens, Llasa's 8 task markers, 34 characters and the reference codec's **4,375 FSQ codes `<|s_0|>` …
`<|s_4374|>`** (50 per second). Two tasks: TTS (text → codes, the main one) and ASR (codes → text), trained on the
codec corpus's train split only ({settings["train_examples"]:,} examples: 9,300 KJV sentences, 7 synthetic voices,
one TTS and one ASR example each). Training settings were not tuned on dev (no time on this machine; dev loss is
logged); which training stage to keep and the ASR beam count were chosen on dev.

```python
import torch
from hf_token_merge.reference import load_codec_corpus, load_codec_speech_llm
from hf_token_merge.reference.codec_llm import CodecSequenceBuilder
model, tokenizer = load_codec_speech_llm()
builder, row = CodecSequenceBuilder(tokenizer), load_codec_corpus("test")[0]
prompt = torch.tensor([builder.asr_prompt(row["codes"])])  # ASR: codes -> text
out = model.generate(prompt, max_new_tokens=200, do_sample=False, num_beams={asr_num_beams},
                     eos_token_id=tokenizer.convert_tokens_to_ids("<|TEXT_GENERATION_END|>"))
print(builder.decode_text(out[0, prompt.shape[1]:].tolist()), "|", row["text"])
prompt = torch.tensor([builder.tts_prompt(row["text"])])  # TTS: text -> codes (ends at <|SPEECH_GENERATION_END|>)
out = model.generate(prompt, max_new_tokens=600, do_sample=False)  # generation_config ends at the end marker
```

## Training

Trained on **{where.upper()}** ({training["device"]}, {training["threads"] or "-"} threads): {training["steps"]:,} steps
of about {settings["batch_tokens"]:,} padded tokens, {training["epochs"]:.2f} epochs, {training["tokens"]:,} tokens,
{training["seconds"] / 60:.1f} min; AdamW lr {settings["lr"]}, cosine to 10 %, seed {settings["seed"]}{stopped}.
{aids_line}
Last dev loss (96 dev utterances, teacher forced): TTS {last[0].get("dev_tts", float("nan")):.3f},
ASR {last[0].get("dev_asr", float("nan")):.3f} nats/token.
{args.notes}

![training curve](training_curve.png)

## Results

ASR: codes → text, {_decoding(asr_num_beams)} (`ASR_NUM_BEAMS`, chosen on dev by corpus WER over beam counts:
{asr_choice}), scored with Whisper's English normaliser. TTS: text → codes, greedy → the reference codec's decoder →
Whisper tiny.en (`evaluate_tts_wer`). The codec-resynthesis column is the ground-truth codes through
the same decoder and ASR: the floor TTS WER can reach. Intervals: percentile bootstrap over utterances (1,000
resamples, seed 0).

{results_table(results)}

{limits(results)}

Goals of issue 15:

{goal_lines(results, where)}

## Reproduce

```
{args.commands or "see recipes/speech_llm/README.md"}
```
"""
    (card / "README.md").write_text(text, encoding="utf-8")
    shutil.copyfile(run / "train_log.jsonl", card / "train_log.jsonl")  # the log the card's curve was drawn from
    if args.asset_dir:
        shutil.copyfile(card / "README.md", Path(args.asset_dir) / "README.md")
        shutil.copyfile(card / "training_curve.png", Path(args.asset_dir) / "training_curve.png")
    print(card / "README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
