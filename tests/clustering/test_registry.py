"""The grouping-method registry: one vocabulary with the config, metadata that matches its validation."""

from __future__ import annotations

from typing import get_args

import pytest
import torch

from hf_token_merge import TokenMergeConfig
from hf_token_merge.clustering import cluster_rows, grouping_method, grouping_methods, register_grouping_method
from hf_token_merge.config import STOPPING_FIELDS, replace_stop
from hf_token_merge.config.token_merge_config import Method
from hf_token_merge.errors import TokenMergeError

STOP_VALUES = {"similarity_threshold": 0.9, "distance_threshold": 0.5, "n_clusters": 3, "target_ratio": 0.5}


def test_the_registry_holds_exactly_the_config_methods():
    assert list(grouping_methods()) == ["threshold", "kmeans", "agglomerative", "frequency", "random"]
    assert set(grouping_methods()) == set(get_args(Method))


@pytest.mark.parametrize("name", ["threshold", "kmeans", "agglomerative", "frequency", "random"])
def test_stops_and_counts_metadata_match_the_config_validation(name):
    method = grouping_methods()[name]
    for stop in STOPPING_FIELDS:
        metric = "euclidean" if stop == "distance_threshold" else "cosine"
        settings = {"token_ids": [1, 2, 3, 4], "method": name, "metric": metric, stop: STOP_VALUES[stop]}
        if stop in method.stops:
            assert TokenMergeConfig(**settings).needs_token_counts is method.needs_counts
        else:
            with pytest.raises(ValueError, match="needs n_clusters or target_ratio|stops at a threshold"):
                TokenMergeConfig(**settings)


def test_cluster_rows_dispatches_through_the_registry():
    rows = torch.eye(6)
    counts = torch.tensor([0.0, 9.0, 1.0, 7.0, 0.0, 0.0])
    frequency = TokenMergeConfig(token_ids=list(range(6)), method="frequency", n_clusters=3)
    # ids 1 and 3 keep rows of their own, in order of first appearance after renumbering
    assert cluster_rows(rows, frequency, counts=counts, show_progress=False).tolist() == [0, 1, 0, 2, 0, 0]
    with pytest.raises(TokenMergeError, match="method='frequency' needs calibration counts"):
        cluster_rows(rows, frequency, show_progress=False)
    random = TokenMergeConfig(token_ids=list(range(6)), method="random", n_clusters=4, seed=2)
    labels = cluster_rows(rows, random, show_progress=False)
    assert sorted(labels.unique().tolist()) == [0, 1, 2, 3]
    assert torch.equal(labels, cluster_rows(rows, random, show_progress=False))  # seeded


def test_registry_refuses_a_second_method_of_the_same_name_and_resolves_the_old_alias():
    with pytest.raises(TokenMergeError, match="'kmeans' is registered already"):
        register_grouping_method("kmeans", stops=("n_clusters",))(lambda *args: None)
    with pytest.warns(FutureWarning, match="'drop_least_frequent' is deprecated; use 'frequency'"):
        assert grouping_method("drop_least_frequent").name == "frequency"
    with pytest.raises(TokenMergeError, match=r"Unknown method 'nearest'; choose from \['threshold', 'kmeans'"):
        grouping_method("nearest")


def test_with_stop_replaces_the_one_stopping_option():
    config = TokenMergeConfig(token_ids=[1, 2, 3, 4], method="threshold", similarity_threshold=0.9)
    changed = config.with_stop(n_clusters=2, method="kmeans")
    assert (changed.method, changed.n_clusters, changed.similarity_threshold) == ("kmeans", 2, None)
    assert config.similarity_threshold == 0.9  # the original is unchanged
    assert config.with_stop(method="agglomerative").similarity_threshold == 0.9  # no new stop: the old one stays
    assert replace_stop({"n_clusters": 4, "seed": 1}, {"target_ratio": 0.5}) == {"seed": 1, "target_ratio": 0.5}
    assert replace_stop({"n_clusters": 4}, {"target_ratio": None, "seed": 2}) == {
        "n_clusters": 4,
        "target_ratio": None,
        "seed": 2,
    }
