"""TokenMergeConfig: validation, help metadata and (de)serialisation."""

from __future__ import annotations

import json
import os
from dataclasses import fields

import pytest

from hf_token_merge import TokenMergeConfig
from hf_token_merge.config import CONFIG_NAME

NON_DEFAULT = {
    "token_ids": [3, 5, 7],
    "token_id_range": (10, 20),
    "token_pattern": r"<\|s_\d+\|>",
    "preset": "llasa",
    "allow_special_tokens": True,
    "metric": "euclidean",
    "method": "agglomerative",
    "distance_threshold": 0.25,
    "similarity_source": "both",
    "merge_rule": "medoid",
    "partition_size": 4,
    "exclude_token_ids": [12],
    "exclude_pattern": "<skip>",
    "lm_head": "merge",  # the default, but compact_logits=True requires it
    "logit_correction": "frequency",
    "compact_logits": True,
    "seed": 7,
    "max_iter": 3,
    "tol": 0.5,
    "projection_dim": None,
    "block_size": 5,
    "agglomerative_max_rows": 99,
    "input_embedding_name": "tok_emb",
    "output_embedding_name": "out_head",
}


def test_non_default_example_covers_every_field():
    # Keeps the round-trip tests below meaningful when fields are added (the other stopping options are
    # mutually exclusive with distance_threshold and covered by test_valid_configs_are_accepted).
    other_stops = {"similarity_threshold", "n_clusters", "target_ratio"}
    assert set(NON_DEFAULT) | other_stops == {f.name for f in fields(TokenMergeConfig)}
    defaults = TokenMergeConfig(token_ids=[1], n_clusters=1)
    for name, value in NON_DEFAULT.items():
        if name not in ("token_ids", "lm_head"):
            assert getattr(defaults, name) != value, f"{name} example equals its default"


def test_every_field_has_help():
    for f in fields(TokenMergeConfig):
        assert isinstance(f.metadata.get("help"), str), f.name
        assert len(f.metadata["help"]) > 10, f.name


def test_dict_round_trip_is_json_serialisable():
    config = TokenMergeConfig(**NON_DEFAULT)
    data = config.to_dict()
    assert data["token_id_range"] == [10, 20]
    restored = TokenMergeConfig.from_dict(json.loads(json.dumps(data)))
    assert restored == config
    assert restored.token_id_range == (10, 20)
    assert isinstance(restored.token_id_range, tuple)


def test_save_and_load_pretrained(tmp_path):
    config = TokenMergeConfig(**NON_DEFAULT)
    path = config.save_pretrained(tmp_path / "cfg")
    assert os.path.basename(path) == CONFIG_NAME
    assert os.path.isfile(path)
    with open(path, encoding="utf-8") as handle:
        on_disk = json.load(handle)
    assert on_disk == json.loads(json.dumps(config.to_dict()))
    assert TokenMergeConfig.from_pretrained(tmp_path / "cfg") == config
    assert TokenMergeConfig.from_pretrained(path) == config
    # no temporary files are left behind by the atomic write
    assert sorted(os.listdir(tmp_path / "cfg")) == [".hf_token_merge", CONFIG_NAME]  # the file and the marker


def test_from_pretrained_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        TokenMergeConfig.from_pretrained(tmp_path)


def test_unknown_field_is_rejected():
    data = TokenMergeConfig(token_ids=[1], n_clusters=1).to_dict()
    data["n_cluster"] = 3
    with pytest.raises(ValueError, match=r"Unknown TokenMergeConfig fields \['n_cluster'\]"):
        TokenMergeConfig.from_dict(data)


def test_token_ids_are_normalised_to_ints():
    config = TokenMergeConfig(token_ids=(4, 2), n_clusters=1)
    assert config.token_ids == [4, 2]
    assert all(type(i) is int for i in config.token_ids)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_clusters": 2}, "No rows are selected"),
        ({"token_ids": [], "n_clusters": 2}, "token_ids is empty"),
        ({"token_ids": [1, -2], "n_clusters": 2}, r"token_ids must be >= 0; got \[-2\]"),
        ({"token_id_range": (5, 5), "n_clusters": 2}, r"token_id_range=\(5, 5\) is empty"),
        ({"token_id_range": (-1, 5), "n_clusters": 2}, "0 <= start < end"),
        ({"token_id_range": (1, 2, 3), "n_clusters": 2}, r"must be \(start, end\)"),
        ({"token_pattern": "<|s_(", "n_clusters": 2}, "not a valid regex"),
        ({"preset": "nope", "n_clusters": 2}, r"Unknown preset 'nope'; choose one of \["),
        ({"token_ids": [1]}, "Set exactly one stopping option.*none is set"),
        ({"token_ids": [1], "n_clusters": 2, "target_ratio": 0.5}, r"\['n_clusters', 'target_ratio'\] are all set"),
        ({"token_ids": [1], "similarity_threshold": 0.9, "distance_threshold": 0.1}, "are all set"),
        (
            {"token_ids": [1], "metric": "euclidean", "method": "threshold", "similarity_threshold": 0.9},
            "set distance_threshold instead",
        ),
        (
            {"token_ids": [1], "metric": "cosine", "method": "threshold", "distance_threshold": 0.1},
            "set similarity_threshold instead",
        ),
        ({"token_ids": [1], "method": "threshold", "n_clusters": 2}, "method='threshold' stops at a threshold"),
        ({"token_ids": [1], "method": "threshold", "target_ratio": 0.5}, "use method='kmeans'"),
        ({"token_ids": [1], "method": "kmeans", "similarity_threshold": 0.9}, "method='kmeans' needs n_clusters"),
        ({"token_ids": [1], "method": "frequency", "similarity_threshold": 0.9}, "method='frequency' needs n_clusters"),
        (
            {"token_ids": [1], "metric": "euclidean", "method": "kmeans", "distance_threshold": 0.9},
            "use method='threshold' or 'agglomerative'",
        ),
        ({"token_ids": [1], "n_clusters": 0}, "n_clusters must be >= 1"),
        ({"token_ids": [1], "target_ratio": 0.0}, r"target_ratio must lie in \(0, 1\]"),
        ({"token_ids": [1], "target_ratio": 1.5}, r"target_ratio must lie in \(0, 1\]"),
        (
            {"token_ids": [1], "method": "threshold", "similarity_threshold": 1.5},
            r"similarity_threshold must lie in \[-1, 1\]",
        ),
        (
            {"token_ids": [1], "metric": "euclidean", "method": "threshold", "distance_threshold": -0.1},
            "distance_threshold must be >= 0",
        ),
        ({"token_ids": [1], "n_clusters": 1, "metric": "dot"}, r"metric='dot' is not supported; choose one of"),
        ({"token_ids": [1], "n_clusters": 1, "method": "dbscan"}, "method='dbscan' is not supported"),
        ({"token_ids": [1], "n_clusters": 1, "similarity_source": "x"}, "similarity_source='x' is not supported"),
        ({"token_ids": [1], "n_clusters": 1, "merge_rule": "max"}, "merge_rule='max' is not supported"),
        ({"token_ids": [1], "n_clusters": 1, "lm_head": "tie"}, "lm_head='tie' is not supported"),
        ({"token_ids": [1], "n_clusters": 1, "logit_correction": "x"}, "logit_correction='x' is not supported"),
        (
            {"token_ids": [1], "n_clusters": 1, "lm_head": "keep", "compact_logits": True},
            "compact_logits=True needs lm_head=.merge.",
        ),
        ({"token_ids": [1], "n_clusters": 1, "max_iter": 0}, "max_iter must be >= 1"),
        ({"token_ids": [1], "n_clusters": 1, "tol": 1.0}, r"tol must lie in \[0, 1\)"),
        ({"token_ids": [1], "n_clusters": 1, "block_size": 0}, "block_size must be >= 1"),
        ({"token_ids": [1], "n_clusters": 1, "projection_dim": 0}, "projection_dim must be >= 1 or None"),
    ],
)
def test_invalid_configs_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TokenMergeConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"token_ids": [1], "n_clusters": 1},
        {"token_id_range": [0, 3], "target_ratio": 1.0},
        {"preset": "spark_tts", "method": "threshold", "similarity_threshold": -1.0},
        {"token_pattern": r"x\d+", "metric": "euclidean", "method": "threshold", "distance_threshold": 0.0},
        {"token_ids": [1], "method": "agglomerative", "similarity_threshold": 0.5},
        {"token_ids": [1], "method": "agglomerative", "n_clusters": 1},
        {"token_ids": [1], "n_clusters": 1, "lm_head": "keep"},
        {"token_ids": [1], "n_clusters": 1, "projection_dim": None, "tol": 0.0},
    ],
)
def test_valid_configs_are_accepted(kwargs):
    config = TokenMergeConfig(**kwargs)
    assert TokenMergeConfig.from_dict(config.to_dict()) == config
