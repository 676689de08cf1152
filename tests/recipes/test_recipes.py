"""Every shipped recipe against a tiny local replica of its family (see `replicas.py`): the selection is exactly
the family's speech tokens, the merge round-trips through save_pretrained/from_pretrained with identical logits,
and layout constraints (Orpheus position blocks, OuteTTS codebooks, Spark-TTS families) hold."""

from __future__ import annotations

import math
import os

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, WhisperForConditionalGeneration

from hf_token_merge import apply_token_merge, count_tokens
from hf_token_merge.recipes import RECIPE_KEYS, Recipe, list_recipes, load_recipe
from tests.models import TEXT_WORDS, build_tokenizer, logits_of, random_ids
from tests.recipes import replicas

FAMILIES = [
    "llasa",
    "orpheus",
    "spark_tts",
    "outetts",
    "spiritlm",
    "speechgpt",
    "glm4_voice",
    "whisper",
    "reference",
    "reference_codec",
]
REPO_RECIPES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "recipes")


def _is_tied(model) -> bool:
    return model.get_output_embeddings().weight is model.get_input_embeddings().weight


def _merge_and_round_trip(recipe: Recipe, replica: replicas.Replica, tmp_path, token_counts=None):
    """Apply the recipe, check the selection, save, reload, and compare logits bit for bit."""
    model = replica.model
    assert type(model).__name__ == recipe.architecture
    assert _is_tied(model) == recipe.tied
    result = apply_token_merge(
        model, recipe.config, tokenizer=replica.tokenizer, token_counts=token_counts, show_progress=False
    )
    plan = result.plan
    assert plan.selected_ids.tolist() == replica.intended
    assert not set(replica.kept) & set(plan.selected_ids.tolist())
    assert plan.num_clusters < len(replica.intended)  # it did merge

    must_include = torch.tensor(replica.intended)[:: max(1, len(replica.intended) // 40)]
    ids = random_ids(len(replica.tokenizer), (2, 48), seed=1, must_include=must_include)
    if isinstance(model, WhisperForConditionalGeneration):
        ids[:, 0] = model.config.decoder_start_token_id
    expected = logits_of(model, ids)
    model.save_pretrained(tmp_path)
    loader = WhisperForConditionalGeneration if isinstance(model, WhisperForConditionalGeneration) else None
    reloaded = (loader or AutoModelForCausalLM).from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    assert _is_tied(reloaded) == recipe.tied
    assert torch.equal(logits_of(reloaded, ids), expected)
    return plan


def _clusters(plan) -> list[list[int]]:
    members: dict[int, list[int]] = {}
    for token, cluster in zip(plan.selected_ids.tolist(), plan.cluster_of_selected.tolist(), strict=True):
        members.setdefault(cluster, []).append(token)
    return list(members.values())


def _assert_no_cluster_mixes(plan, groups: list[list[int]]) -> None:
    group_of = {token: g for g, group in enumerate(groups) for token in group}
    for members in _clusters(plan):
        assert len({group_of[token] for token in members}) == 1, members[:5]
    # the id greedy decoding emits for a cluster is one of its members, so it lies in the same group
    for cluster, representative in enumerate(plan.representative_ids.tolist()):
        member = plan.selected_ids[plan.cluster_of_selected == cluster][0].item()
        assert group_of[representative] == group_of[member]


# --- every recipe on its replica ----------------------------------------------------------------------------------


# Orpheus, OuteTTS and Whisper have dedicated tests below (same checks and more).
@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in ("orpheus", "outetts", "whisper")])
def test_recipe_on_its_replica(family, tmp_path):
    recipe = load_recipe(family)
    replica = replicas.BUILDERS[family](recipe.architecture, recipe.tied)
    plan = _merge_and_round_trip(recipe, replica, tmp_path)
    # nothing was overridden: the plan ran on the recipe's own settings
    assert plan.config.to_dict() == load_recipe(family).config.to_dict()
    if replica.groups and recipe.config.partition_size is not None:
        _assert_no_cluster_mixes(plan, replica.groups)


def test_orpheus_clusters_stay_inside_one_position_block(tmp_path):
    recipe = load_recipe("orpheus")
    assert recipe.config.partition_size == replicas.ORPHEUS_CODES
    replica = replicas.orpheus(recipe.architecture, recipe.tied)
    plan = _merge_and_round_trip(recipe, replica, tmp_path)
    assert plan.config.to_dict() == load_recipe("orpheus").config.to_dict()
    assert len(plan.selected_ids) == 7 * 4096  # control tokens N < 10 and trailing N >= 28682 excluded
    _assert_no_cluster_mixes(plan, replica.groups)
    # every merged id decodes to a valid SNAC code of its own position: code = id - <custom_token_10> - p * 4096
    first_code = replica.groups[0][0]
    position = (plan.selected_ids - first_code) // 4096
    decoded = plan.representative_ids[plan.cluster_of_selected] - first_code - position * 4096
    assert bool(((decoded >= 0) & (decoded < 4096)).all())
    # each position keeps its share of the rows: 7,168 = 7 x 1,024
    per_position = [plan.cluster_of_selected[position == p].unique().numel() for p in range(7)]
    assert per_position == [1024] * 7


def test_orpheus_with_special_flagged_custom_tokens():
    # If a tokenizer flags every <custom_token_N> special, protection refuses the codes; allow_special_tokens=True
    # then selects exactly the codes again, because the control tokens are excluded by pattern.
    from hf_token_merge.selection.select import protected_token_ids, select_token_ids

    total = replicas.ORPHEUS_CONTROL + replicas.ORPHEUS_POSITIONS * replicas.ORPHEUS_CODES + replicas.ORPHEUS_TRAILING
    custom = [f"<custom_token_{n}>" for n in range(total)]
    tokenizer = build_tokenizer(
        TEXT_WORDS,
        replicas.LLAMA3_SPECIALS,
        [],
        custom,
        bos="<|begin_of_text|>",
        eos="<|end_of_text|>",
        pad="<|eot_id|>",
    )
    protected = protected_token_ids(tokenizer)
    with pytest.raises(ValueError, match="includes special tokens"):
        select_token_ids(load_recipe("orpheus").config, len(tokenizer), tokenizer, protected)
    config = load_recipe("orpheus", allow_special_tokens=True).config
    first_code = tokenizer.convert_tokens_to_ids("<custom_token_10>")
    selected = select_token_ids(config, len(tokenizer), tokenizer, protected)
    assert selected.tolist() == list(range(first_code, first_code + 7 * 4096))


@pytest.mark.parametrize("slots", [1024, 1025])
def test_outetts_never_mixes_codebooks(slots, tmp_path):
    # 1,025 slots: releases that reserve an extra, never-emitted code per codebook (excluded by the recipe)
    recipe = load_recipe("outetts")
    replica = replicas.outetts(recipe.architecture, recipe.tied, slots=slots)
    plan = _merge_and_round_trip(recipe, replica, tmp_path)
    assert plan.config.to_dict() == load_recipe("outetts").config.to_dict()
    assert len(plan.selected_ids) == 2 * 1024
    _assert_no_cluster_mixes(plan, replica.groups)


@pytest.mark.parametrize("global_first", [False, True])
def test_spark_tts_with_global_keeps_semantic_and_global_apart(global_first, tmp_path):
    recipe = load_recipe("spark_tts", variant="with_global")
    replica = replicas.spark_tts(recipe.architecture, recipe.tied, global_first=global_first)
    replica.intended = sorted(replica.groups[0] + replica.groups[1])
    plan = _merge_and_round_trip(recipe, replica, tmp_path)
    _assert_no_cluster_mixes(plan, replica.groups)


@pytest.mark.parametrize("variant", ["pitch", "style"])
def test_spiritlm_variants_select_pitch_or_style(variant, tmp_path):
    recipe = load_recipe("spiritlm", variant=variant)
    replica = replicas.spiritlm(recipe.architecture, recipe.tied, selects={"pitch": "Pi", "style": "St"}[variant])
    _merge_and_round_trip(recipe, replica, tmp_path)


def test_outetts_v02_variant_selects_the_numbered_codes(tmp_path):
    # OuteTTS 0.2/0.3 name their WavTokenizer codes <|N|>: the 1.0 preset matches none of them, the variant all 4,100
    from hf_token_merge.selection.select import select_token_ids

    recipe = load_recipe("outetts", variant="v02")
    replica = replicas.outetts_v02(recipe.architecture, recipe.tied)
    with pytest.raises(ValueError, match=r"preset 'outetts' .* matches no token"):
        select_token_ids(load_recipe("outetts").config, len(replica.tokenizer), replica.tokenizer)
    assert recipe.config.partition_size is None and recipe.config.exclude_pattern is None
    plan = _merge_and_round_trip(recipe, replica, tmp_path)
    assert len(plan.selected_ids) == replicas.OUTETTS_V02_CODES
    assert plan.num_clusters == math.ceil(replicas.OUTETTS_V02_CODES * 0.25) == 1025
    assert plan.config.to_dict() == load_recipe("outetts", variant="v02").config.to_dict()


def test_glm4_voice_recipe_on_a_bytes_keyed_tokenizer(tmp_path):
    # GLM-4-Voice's ChatGLM4Tokenizer returns bytes keys for its base vocabulary; the replica does the same
    recipe = load_recipe("glm4_voice")
    replica = replicas.glm4_voice(recipe.architecture, recipe.tied)
    keys = list(replica.tokenizer.get_vocab())
    assert b"\xe4\xb8" in keys and "<|audio_0|>" in keys  # bytes base tokens, str added tokens
    plan = _merge_and_round_trip(recipe, replica, tmp_path)
    assert plan.num_clusters == 16  # 64 audio tokens at target_ratio 0.25


def test_speechgpt_com_is_cm_plus_an_attention_lora(tmp_path):
    # SpeechGPT-7B-com is a LoRA adapter (r=8, alpha=16, q_proj/v_proj) on SpeechGPT-7B-cm. Merging the adapter
    # (what peft's merge_and_unload does: W += alpha/r * B @ A) leaves embed_tokens and lm_head as they are, so a
    # plan made on cm applies to the merged com model, and the recipe selects the same units there.
    from hf_token_merge import plan_token_merge

    recipe = load_recipe("speechgpt")
    assert recipe.checkpoints == ["fnlp/SpeechGPT-7B-cm"]
    with open(recipe.source, encoding="utf-8") as handle:
        text = handle.read()
    assert "merge_and_unload()" in text and "LoRA adapter on SpeechGPT-7B-cm" in text
    cm = replicas.speechgpt(recipe.architecture, recipe.tied)
    com = replicas.speechgpt(recipe.architecture, recipe.tied)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in com.model.model.layers:
            for projection in (layer.self_attn.q_proj, layer.self_attn.v_proj):
                a = torch.randn(8, projection.in_features, generator=generator)
                b = torch.randn(projection.out_features, 8, generator=generator)
                projection.weight += (16 / 8) * b @ a
    ids = random_ids(len(cm.tokenizer), (1, 12), seed=2)
    assert not torch.equal(logits_of(cm.model, ids), logits_of(com.model, ids))  # the adapter changed the model
    plan = plan_token_merge(cm.model, recipe.config, tokenizer=cm.tokenizer)
    result = apply_token_merge(com.model, plan, tokenizer=com.tokenizer, show_progress=False)
    assert result.plan.selected_ids.tolist() == com.intended
    fresh = replicas.speechgpt(recipe.architecture, recipe.tied)
    assert plan_token_merge(fresh.model, recipe.config, tokenizer=fresh.tokenizer).fingerprint == plan.fingerprint


def test_spiritlm_markers_are_spelled_as_in_spirit_lm_and_come_first():
    recipe = load_recipe("spiritlm")
    assert "[Text] (32000) and [Speech] (32001)" in recipe.layout
    assert "[Text] and [Speech]" in recipe.protected[0]
    for family in FAMILIES:
        with open(load_recipe(family).source, encoding="utf-8") as handle:
            text = handle.read()
        assert "[TEXT]" not in text and "[SPEECH]" not in text
    tokenizer = replicas.spiritlm(recipe.architecture, recipe.tied).tokenizer
    first = tokenizer.convert_tokens_to_ids("[Text]")
    assert tokenizer.convert_tokens_to_ids(["[Speech]", "[Hu0]"]) == [first + 1, first + 2]


def test_whisper_merges_non_ascii_text_tokens_only(tmp_path):
    recipe = load_recipe("whisper")
    replica = replicas.whisper(recipe.architecture, recipe.tied)
    assert len(replica.intended) == replicas.WHISPER_TEXT // 25  # every 25th text token spells non-ASCII
    plan = _merge_and_round_trip(recipe, replica, tmp_path)
    assert plan.config.to_dict() == load_recipe("whisper").config.to_dict()
    assert all(i < replicas.WHISPER_TEXT for i in plan.selected_ids.tolist())


def test_whisper_all_text_variant_with_counts(tmp_path):
    # 50,256 text rows at the recipe's target_ratio (0.5) is too much k-means for a unit test: only the stopping
    # option is overridden, everything else comes from the recipe's variant.
    recipe = load_recipe("whisper", variant="all_text_frequency", n_clusters=256)
    reference = load_recipe("whisper", variant="all_text_frequency")
    changed = {k for k, v in recipe.config.to_dict().items() if reference.config.to_dict()[k] != v}
    assert changed == {"n_clusters", "target_ratio"}
    replica = replicas.whisper(recipe.architecture, recipe.tied)
    replica.intended = list(range(replicas.WHISPER_TEXT))
    calibration = torch.randint(0, replicas.WHISPER_TEXT, (4000,), generator=torch.Generator().manual_seed(0))
    counts = count_tokens(calibration, len(replica.tokenizer))
    plan = _merge_and_round_trip(recipe, replica, tmp_path, token_counts=counts)
    assert plan.num_clusters == 256


def test_whisper_english_frequency_variant_keeps_the_frequent_ids(tmp_path):
    recipe = load_recipe("whisper", variant="english_frequency", n_clusters=301)
    assert recipe.config.method == "frequency" and recipe.config.token_id_range == (256, replicas.WHISPER_TEXT)
    assert load_recipe("whisper", variant="english_frequency").config.n_clusters == 34001
    replica = replicas.whisper(recipe.architecture, recipe.tied)
    replica.intended = list(range(256, replicas.WHISPER_TEXT))
    frequent = torch.arange(1000, 1300)  # 300 ids that English "uses": they must keep rows of their own
    counts = torch.zeros(len(replica.tokenizer))
    counts[frequent] = torch.arange(300, 0, -1, dtype=torch.float32)
    plan = _merge_and_round_trip(recipe, replica, tmp_path, token_counts=counts)
    sizes = plan.cluster_sizes
    assert plan.num_clusters == 301 and int(sizes.max()) == 50000 - 300
    assert (sizes[plan.cluster_of_selected[frequent - 256]] == 1).all()


# --- the real-scale selections of families tested scaled down -----------------------------------------------------


class _Vocabulary:
    """Just enough tokenizer for selection: `get_vocab()`."""

    def __init__(self, tokens: list[str]):
        self.vocab = {token: i for i, token in enumerate(tokens)}

    def get_vocab(self):
        return dict(self.vocab)

    def __len__(self):
        return len(self.vocab)


def test_llasa_selection_at_real_scale():
    from hf_token_merge.selection.select import select_token_ids

    tokens = [f"t{i}" for i in range(128256)] + [f"<|marker_{i}|>" for i in range(8)]
    tokens += [f"<|s_{i}|>" for i in range(65536)]
    selected = select_token_ids(load_recipe("llasa").config, len(tokens), _Vocabulary(tokens))
    assert selected.tolist() == list(range(128264, 193800))
    assert math.ceil(65536 * load_recipe("llasa").config.target_ratio) == 8192


# --- the loader ---------------------------------------------------------------------------------------------------


def test_every_family_ships_a_recipe():
    assert list_recipes() == sorted(FAMILIES)
    for family in FAMILIES:
        recipe = load_recipe(family)
        assert recipe.family == family
        assert recipe.description and recipe.architecture and recipe.protected and recipe.layout
        for variant in recipe.variants:
            assert load_recipe(family, variant=variant).variant == variant


def test_repository_recipes_folder_is_the_packaged_recipes():
    # recipes/*.yaml in the repository are links to hf_token_merge/families/*.yaml (the package data)
    for family in FAMILIES:
        path = os.path.join(REPO_RECIPES, f"{family}.yaml")
        packaged = load_recipe(family)
        with open(path, encoding="utf-8") as handle, open(packaged.source, encoding="utf-8") as original:
            assert handle.read() == original.read()
        assert load_recipe(path).config == packaged.config


def test_the_documented_import_path_is_the_families_package():
    import hf_token_merge.families as families
    import hf_token_merge.recipes as recipes

    assert recipes.load_recipe is families.load_recipe and recipes.Recipe is families.Recipe
    assert os.path.dirname(load_recipe("llasa").source) == os.path.dirname(families.__file__)


def test_overrides_replace_the_stopping_option():
    recipe = load_recipe("llasa", n_clusters=16)
    assert recipe.config.n_clusters == 16 and recipe.config.target_ratio is None
    assert load_recipe("llasa", merge_rule="medoid").config.merge_rule == "medoid"


def _write(tmp_path, data) -> str:
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def _minimal(**changes):
    data = {
        "family": "custom",
        "description": "d",
        "model": {"architecture": "LlamaForCausalLM", "tied": True},
        "merge": {"preset": "llasa", "n_clusters": 4},
    }
    data.update(changes)
    return data


def test_recipe_from_a_path(tmp_path):
    recipe = load_recipe(_write(tmp_path, _minimal()))
    assert recipe.family == "custom" and recipe.config.n_clusters == 4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_minimal(merge={"preset": "llasa", "n_clusters": 4, "n_cluster": 3}), r"\['n_cluster'\].*n_clusters"),
        (_minimal(extra=1), r"\['extra'\].*valid keys are \['description', 'family'"),
        (_minimal(model={"architecture": "X", "tied": True, "tie": 1}), r"\['tie'\].*'architecture'"),
        (_minimal(model={"architecture": "X"}), "needs `architecture` and `tied`"),
        (_minimal(merge={"preset": "llasa"}), "invalid TokenMergeConfig: Set exactly one stopping option"),
        (_minimal(variants={"v": {"merge": {"bogus": 1}}}), None),
    ],
)
def test_bad_recipes_are_refused_with_the_valid_keys(tmp_path, data, message):
    path = _write(tmp_path, data)
    if message is None:  # a bad variant is only an error when it is used
        load_recipe(path)
        with pytest.raises(ValueError, match=r"\['bogus'\].*valid keys"):
            load_recipe(path, variant="v")
        return
    with pytest.raises(ValueError, match=message):
        load_recipe(path)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match=r"Unknown recipe 'llama'.*'llasa'"):
        load_recipe("llama")
    with pytest.raises(ValueError, match=r"no variant 'global'.*\['with_global'\]"):
        load_recipe("spark_tts", variant="global")
    with pytest.raises(ValueError, match=r"\['n_cluster'\].*load_recipe overrides"):
        load_recipe("llasa", n_cluster=3)
    assert set(RECIPE_KEYS) >= {"family", "merge", "variants"}
