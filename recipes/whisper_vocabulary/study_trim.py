"""Tune the Whisper tiny.en vocabulary trim on the synthetic dev subset; report it on sets that played no part.

`tune`: for every ranking of `rankings.py` and every number of kept text rows, the trim is emulated on the
unmerged model: a `frequency` trim changes a greedy transcript only where the baseline emits a token it removes
(kept rows are untouched; the one shared row's logit is a mean row minus log of ~25,000 and never wins), so only
those dev utterances are re-decoded, from cached encoder outputs, with the removed ids suppressed.

`risk` (text only, no audio, seconds of CPU): for every ranking and kept count, the share of reference words
whose canonical tokenization (written as Whisper writes a transcript: a leading space, the reference's casing and
punctuation) holds a removed token, on the reference texts of every set, with a bootstrap interval over
utterances. That is the failure the issue describes (a word whose token is gone is rarely re-spelled from
pieces; the decoder writes a similar-sounding word instead), so it bounds what a trim can cost on a set before
any decoding. Texts: dev = all 300 dev sentences, test = all 600 test sentences, librivox, everyday = the 153
sentences.

`report`: builds the real in-place merge with the library (`whisper` recipe, variant `english_frequency`, the
ranking's scores, or with `--calibration FILE` the counts of that calibration file, as `token_counts`,
`n_clusters` = kept + 1), re-decodes EVERY utterance of every report set with
it (decoder only: a vocabulary trim leaves the encoder alone), and prints WER before/after with the paired
bootstrap interval (`compare_records`, 1,000 resamples, seed 0) and word counts; JSON to `--output`.

    PYTHONPATH=. python recipes/whisper_vocabulary/study_trim.py risk --keeps 16000 20000 22000 24000 26000
    PYTHONPATH=. python recipes/whisper_vocabulary/study_trim.py tune --keeps 16000 20000 22000 24000 26000
    PYTHONPATH=. python recipes/whisper_vocabulary/study_trim.py report --ranking wordfreq_max_bpe --keep 24000 \
        --sets librivox test everyday --output trim_report.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rankings as R  # noqa: E402
import study_sets as S  # noqa: E402


def load_rankings() -> dict[str, np.ndarray]:
    """The rankings cached by `rank` (computing them takes a few CPU minutes)."""
    data = np.load(S.study_dir() / "rankings.npz")
    return {name: data[name] for name in data.files}


def dropped_ids(scores: np.ndarray, keep: int) -> np.ndarray:
    """Selected ids the trim removes."""
    kept = np.zeros(R.VOCAB, dtype=bool)
    kept[R.kept_ids(scores, keep)] = True
    ids = np.arange(*R.SELECTED)
    return ids[~kept[ids]]


def tune(args, model, processor) -> None:
    from hf_token_merge.evaluation.text import spelling_map_of

    spelling = spelling_map_of(processor)
    base = S.baseline("dev")
    hidden = S.cached_encoder("dev", base)
    base_wer, words = S.wer_of(base)
    print(f"dev: {len(base)} utterances, {words} words, baseline WER {base_wer:.4f}")
    results = []
    rows = S.load_set("dev")
    for name, scores in load_rankings().items():
        if args.rankings and name not in args.rankings:
            continue
        for keep in args.keeps:
            dropped = dropped_ids(scores, keep)
            drop = set(dropped.tolist())
            hit = [i for i, rec in enumerate(base) if drop & set(rec["ids"])]
            recs = list(base)
            if hit:
                texts, _ = S.decode_cached(
                    model, processor, [hidden[i] for i in hit], [base[i]["frames"] for i in hit], suppress=dropped
                )
                for i, rec in zip(hit, S.records([rows[i] for i in hit], texts, spelling), strict=True):
                    recs[i] = rec
            wer, _ = S.wer_of(recs)
            removed = 1 - R.rows_after(keep) / R.VOCAB
            result = {
                "ranking": name,
                "keep": keep,
                "rows": R.rows_after(keep),
                "removed": removed,
                "affected": len(hit),
                "wer": wer,
                "delta_points": 100 * (wer - base_wer),
            }
            results.append(result)
            print(json.dumps(result), flush=True)
    chosen = S.choose_within_budget(results, args.max_wer_increase, cost="rows", group_by="ranking")
    for name, trial in chosen.items():
        print(
            f"chosen on dev for {name}: keep {trial['keep']} ({trial['removed']:.1%} removed), "
            f"{trial['delta_points']:+.2f} points",
            flush=True,
        )
    if args.output:
        Path(args.output).write_text(
            json.dumps(
                {
                    "dev_words": words,
                    "baseline": base_wer,
                    "budget_points": args.max_wer_increase,
                    "chosen": chosen,
                    "trials": results,
                },
                indent=1,
            )
        )


def report(args, model, processor) -> None:
    import torch

    from hf_token_merge.evaluation.confidence import compare_records
    from hf_token_merge.evaluation.text import spelling_map_of
    from hf_token_merge.recipes import load_recipe
    from hf_token_merge.remap import apply_token_merge

    if args.calibration:  # exactly what `--calibration-text FILE` gives the CLI
        from hf_token_merge.remap import calibration_counts

        counts = calibration_counts(processor.tokenizer, args.calibration, R.VOCAB)
    else:
        counts = torch.from_numpy(load_rankings()[args.ranking])
    recipe = load_recipe("whisper", variant="english_frequency", n_clusters=args.keep + 1)
    apply_token_merge(model, recipe.config, token_counts=counts, show_progress=False)
    rows_after = model.get_input_embeddings().weight.shape[0]
    spelling = spelling_map_of(processor)
    out = {
        "ranking": args.ranking,
        "keep": args.keep,
        "rows": rows_after,
        "removed": 1 - rows_after / R.VOCAB,
        "sets": {},
    }
    print(f"{args.ranking}, {args.keep} kept text rows: {R.VOCAB} -> {rows_after} rows ({out['removed']:.1%} removed)")
    for name in args.sets:
        start = time.perf_counter()
        base = S.baseline(name)
        texts, _ = S.decode_cached(model, processor, S.cached_encoder(name, base), [r["frames"] for r in base])
        rows = S.load_set(name)
        after = S.records(rows, texts, spelling)
        for group, index in S.groups_of(name, rows).items():
            diff = compare_records([base[i] for i in index], [after[i] for i in index])
            changed = [
                (base[i]["prediction"], after[i]["prediction"])
                for i in index
                if base[i]["prediction"] != after[i]["prediction"]
            ]
            out["sets"][group] = diff.to_dict() | {"changed": changed}
            print(f"{group}: WER {diff.before:.4f} -> {diff.after:.4f}, {diff.summary()}", flush=True)
        print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=1))


def reference_texts() -> dict[str, list[str]]:
    """Reference sentences of every set (the whole dev and test splits: texts cost nothing)."""
    from common import corpus_rows
    from synthesize_everyday import everyday_sentences

    from hf_token_merge.reference.librivox import load_librivox_sonnets

    return {
        "dev": [r["text"] for r in corpus_rows("dev")],
        "test": [r["text"] for r in corpus_rows("test")],
        "librivox": list(load_librivox_sonnets()["text"]),
        "everyday": everyday_sentences(),
    }


def words_at_risk(tokenizer, texts: list[str], dropped: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per text: words holding a removed token, words; and the distinct words at risk."""
    removed = np.zeros(R.VOCAB, dtype=bool)
    removed[dropped] = True
    encoded = tokenizer([" " + t for t in texts], add_special_tokens=False, return_offsets_mapping=True)
    risky, totals, names = [], [], set()
    for text, ids, offsets in zip(texts, encoded["input_ids"], encoded["offset_mapping"], strict=True):
        spaced = " " + text
        starts = [i for i, ch in enumerate(spaced) if ch != " " and (i == 0 or spaced[i - 1] == " ")]
        word_of = np.searchsorted(starts, [a + (spaced[a] == " ") for a, _ in offsets], side="right") - 1
        bad = sorted({int(w) for w, i in zip(word_of, ids, strict=True) if removed[i]})
        names.update(spaced[starts[w] :].split(" ", 1)[0] for w in bad)
        risky.append(len(bad))
        totals.append(len(starts))
    return np.array(risky), np.array(totals), sorted(names)


def risk(args, model, processor) -> None:
    from hf_token_merge.evaluation.confidence import paired_bootstrap

    texts = reference_texts()
    out = []
    for name, scores in load_rankings().items():
        if args.rankings and name not in args.rankings:
            continue
        for keep in args.keeps:
            dropped = dropped_ids(scores, keep)
            line = {"ranking": name, "keep": keep, "removed": 1 - R.rows_after(keep) / R.VOCAB}
            for set_name, sentences in texts.items():
                risky, totals, words = words_at_risk(processor.tokenizer, sentences, dropped)
                low, high = paired_bootstrap(np.zeros(len(risky)), risky, totals, resamples=1000, seed=0)
                line[set_name] = {
                    "rate": float(risky.sum() / totals.sum()),
                    "ci": [low, high],
                    "words": int(totals.sum()),
                    "at_risk": words[:40],
                }
            out.append(line)
            print(
                f"{name:17s} keep {keep:6d} ({line['removed']:.1%} removed): "
                + "  ".join(
                    f"{s} {100 * line[s]['rate']:.2f}% [{100 * line[s]['ci'][0]:.2f}, {100 * line[s]['ci'][1]:.2f}]"
                    for s in texts
                ),
                flush=True,
            )
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=1))


def rank(args, model, processor) -> None:
    scores = R.rankings(processor.tokenizer, calibration_file=args.calibration)
    np.savez(S.study_dir() / "rankings.npz", **scores)
    print(sorted(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("rank", help="compute and cache the rankings")
    p.add_argument("--calibration", help="make_calibration.py --wordfreq 200000 output, for the `calibration` ranking")
    p = sub.add_parser("risk", help="reference words at risk, text only")
    p.add_argument("--keeps", type=int, nargs="+", required=True)
    p.add_argument("--rankings", nargs="*")
    p.add_argument("--output")
    p = sub.add_parser("tune", help="emulated trims on the dev subset")
    p.add_argument("--keeps", type=int, nargs="+", required=True)
    p.add_argument("--rankings", nargs="*")
    p.add_argument("--max-wer-increase", type=float, default=0.5, help="dev budget in WER points for the choice")
    p.add_argument("--output")
    p = sub.add_parser("report", help="the real merge on the report sets")
    p.add_argument("--ranking", required=True, help="a ranking of `rank`, or a name for --calibration")
    p.add_argument("--calibration", help="rank by this calibration file instead (make_calibration.py output)")
    p.add_argument("--keep", type=int, required=True)
    p.add_argument("--sets", nargs="+", default=["librivox", "test", "everyday"])
    p.add_argument("--output")
    args = parser.parse_args()

    import torch

    from hf_token_merge.reference import load_whisper_tiny_en

    torch.set_num_threads(1)
    if args.command == "risk":  # the tokenizer alone
        from transformers import WhisperProcessor

        from hf_token_merge.reference.whisper import build_whisper_tiny_en

        processor = WhisperProcessor.from_pretrained(build_whisper_tiny_en(force=False), local_files_only=True)
        return risk(args, None, processor)
    model, processor = load_whisper_tiny_en()
    {"rank": rank, "tune": tune, "report": report}[args.command](args, model, processor)


if __name__ == "__main__":
    main()
