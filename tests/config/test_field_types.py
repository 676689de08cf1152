"""Every config field is checked for its type: strings, floats and bools no longer pass for something else."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hf_token_merge import TokenMergeConfig, load_recipe
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.sequence import MergeStage, SequenceMergeConfig

BASE = {"token_ids": [1, 2, 3], "n_clusters": 1}


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"allow_special_tokens": "false"}, r"allow_special_tokens must be a bool, got 'false' \(str\)"),
        ({"allow_special_tokens": "no"}, r"allow_special_tokens must be a bool, got 'no' \(str\)"),
        ({"allow_special_tokens": "off"}, r"allow_special_tokens must be a bool, got 'off' \(str\)"),
        ({"allow_special_tokens": 0}, r"allow_special_tokens must be a bool, got 0 \(int\)"),
        ({"compact_logits": "true"}, r"compact_logits must be a bool, got 'true' \(str\)"),
        ({"n_clusters": "five"}, r"n_clusters must be an int, got 'five' \(str\)"),
        ({"n_clusters": 5.7}, r"n_clusters must be an int, got 5.7 \(float\)"),
        ({"n_clusters": 5.0}, r"n_clusters must be an int, got 5.0 \(float\)"),
        ({"n_clusters": True}, r"n_clusters must be an int, got True \(bool\)"),
        ({"n_clusters": None, "target_ratio": "0.5"}, r"target_ratio must be a finite number \(float\), got '0.5'"),
        ({"n_clusters": None, "target_ratio": True}, r"target_ratio must be a finite number \(float\), got True"),
        ({"seed": "x"}, r"seed must be an int, got 'x' \(str\)"),
        ({"max_iter": 2.5}, r"max_iter must be an int, got 2.5"),
        ({"tol": "0.1"}, r"tol must be a finite number \(float\), got '0.1'"),
        ({"projection_dim": "64"}, r"projection_dim must be an int, got '64'"),
        ({"partition_size": 4.0}, r"partition_size must be an int, got 4.0"),
        ({"token_ids": "206"}, r"token_ids must be a list of whole numbers \(token ids\), got '206' \(str\)"),
        ({"token_ids": 206}, r"token_ids must be a list of whole numbers \(token ids\), got 206 \(int\)"),
        ({"token_ids": [1, 2.7]}, r"token_ids must be a list .*not whole numbers: \[2.7\]"),
        ({"token_ids": [1.0, 2.0]}, r"token_ids must be a list .*not whole numbers: \[1.0, 2.0\]"),
        ({"token_ids": [1, True]}, r"token_ids must be a list .*not whole numbers: \[True\]"),
        ({"token_ids": ["1"]}, r"token_ids must be a list .*not whole numbers: \['1'\]"),
        ({"exclude_token_ids": "5"}, r"exclude_token_ids must be a list of whole numbers"),
        ({"token_id_range": "0,5"}, r"token_id_range must be \(start, end\): two whole numbers, got '0,5'"),
        ({"token_id_range": [0, 5.5]}, r"token_id_range must be \(start, end\).*not whole numbers: \[5.5\]"),
        ({"token_id_range": [0]}, r"token_id_range must be \(start, end\): two whole numbers, got \[0\]"),
        ({"token_pattern": 5}, r"token_pattern must be a string, got 5 \(int\)"),
        (
            {"n_clusters": None, "metric": "euclidean", "method": "threshold", "distance_threshold": float("nan")},
            r"distance_threshold must be a finite number \(float\), got nan",
        ),
    ],
)
def test_wrong_types_are_refused_naming_field_value_and_type(changes, match):
    kwargs = {**BASE, **changes}
    with pytest.raises(TokenMergeError, match=match) as info:
        TokenMergeConfig(**{key: value for key, value in kwargs.items() if value is not None})
    assert "Fix:" in str(info.value)


def test_right_types_are_normalised():
    config = TokenMergeConfig(
        token_ids=np.array([4, 2]),
        token_id_range=torch.tensor([10, 20]),
        exclude_token_ids=(np.int64(3),),
        target_ratio=1,
        seed=np.int32(3),
    )
    assert config.token_ids == [4, 2] and all(type(i) is int for i in config.token_ids)
    assert config.token_id_range == (10, 20) and all(type(i) is int for i in config.token_id_range)
    assert config.exclude_token_ids == [3] and type(config.exclude_token_ids[0]) is int
    assert config.target_ratio == 1.0 and type(config.target_ratio) is float
    assert config.seed == 3 and type(config.seed) is int


def test_config_json_with_string_bool_is_refused(tmp_path):
    data = TokenMergeConfig(**BASE).to_dict()
    data["allow_special_tokens"] = "false"
    (tmp_path / "token_merge_config.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(TokenMergeError, match=r"allow_special_tokens must be a bool, got 'false' \(str\)"):
        TokenMergeConfig.from_pretrained(tmp_path)


RECIPE = """\
family: typed
description: A recipe whose boolean is quoted.
model: {{architecture: LlamaForCausalLM, tied: true}}
merge:
  token_id_range: [10, 20]
  target_ratio: 0.5
  allow_special_tokens: {value}
"""


@pytest.mark.parametrize("value", ['"false"', "'no'", '"off"'])
def test_recipe_yaml_with_string_bool_is_refused(tmp_path, value):
    path = tmp_path / "typed.yaml"
    path.write_text(RECIPE.format(value=value), encoding="utf-8")
    with pytest.raises(TokenMergeError, match=r"Recipe 'typed'.*allow_special_tokens must be a bool, got '"):
        load_recipe(path)


def test_recipe_yaml_with_real_bool_loads(tmp_path):
    path = tmp_path / "typed.yaml"
    path.write_text(RECIPE.format(value="false"), encoding="utf-8")
    assert load_recipe(path).config.allow_special_tokens is False


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layer": "0", "threshold": 0.8}, r"MergeStage.layer must be an int, got '0' \(str\)"),
        ({"layer": 0, "threshold": "0.8"}, r"MergeStage.threshold must be a finite number \(float\), got '0.8'"),
        ({"layer": 0, "threshold": 0.8, "window": 1.5}, r"MergeStage.window must be an int, got 1.5"),
        ({"layer": 0, "threshold": 0.8, "window": True}, r"MergeStage.window must be an int, got True"),
        (
            {"layer": 0, "mode": "uniform_drop", "retention": "0.5"},
            r"MergeStage.retention must be a finite number \(float\), got '0.5'",
        ),
    ],
)
def test_merge_stage_types(kwargs, match):
    with pytest.raises(TokenMergeError, match=match):
        MergeStage(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"token_ids": "206"}, r"token_ids must be a list of whole numbers \(token ids\), got '206'"),
        ({"token_ids": [5, 6.5]}, r"token_ids must be a list .*not whole numbers: \[6.5\]"),
        ({"token_id_range": [0, "9"]}, r"token_id_range must be \(start, end\)"),
        ({"seed": "1"}, r"SequenceMergeConfig.seed must be an int, got '1'"),
        ({"token_pattern": 7}, r"token_pattern must be a string, got 7"),
        ({"allow_special_tokens": "false"}, r"allow_special_tokens must be a bool, got 'false'"),
        # the deprecated names are type-checked like the new ones
        ({"speech_token_ids": "206"}, r"speech_token_ids must be a list of whole numbers \(token ids\), got '206'"),
        ({"stages": "layer 0"}, r"SequenceMergeConfig.stages must be a list of MergeStage, got 'layer 0'"),
        ({"stages": [3]}, r"stages must hold MergeStage objects or dicts of their fields, got 3 \(int\)"),
    ],
)
def test_sequence_config_types(kwargs, match):
    arguments = {"stages": [{"layer": 0, "threshold": 0.8}], **kwargs}
    with pytest.raises(TokenMergeError, match=match):
        SequenceMergeConfig(**arguments)


def test_sequence_config_json_round_trip_keeps_types(tmp_path):
    config = SequenceMergeConfig(stages=({"layer": 0, "threshold": 0.8},), token_id_range=[5, 9])
    config.save_pretrained(tmp_path)
    restored = SequenceMergeConfig.from_pretrained(tmp_path)
    assert restored == config
    assert restored.token_id_range == (5, 9)
    assert isinstance(restored.stages[0], MergeStage)
