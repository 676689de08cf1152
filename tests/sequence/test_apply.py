"""apply_sequence_merge on tiny Llama/Qwen2 decoders: logits, masks, positions, KV cache and generate()."""

import warnings

import pytest
import torch

from hf_token_merge.errors import TokenMergeError
from hf_token_merge.sequence import (
    MergeStage,
    SequenceMergeConfig,
    apply_sequence_merge,
    pool_groups,
    sequence_merge_handle,
    speech_token_lookup,
)
from hf_token_merge.sequence.grouping import stage_groups
from tests.models import SPEECH_START, SPEECH_VOCAB, build_speech_decoder

SPEECH = (SPEECH_START, SPEECH_VOCAB)
# bos, two text tokens, then runs of one sound each (ids 32 + j and 40 + j share sound j), then text
PROMPT = [0, 5, 6, 32, 40, 48, 33, 41, 34, 35, 43, 51, 59, 7, 8]


def config(*stages: MergeStage, strategy: str = "first") -> SequenceMergeConfig:
    return SequenceMergeConfig(stages=list(stages), token_id_range=SPEECH, position_strategy=strategy)


def dual(strategy: str = "first", deep: MergeStage | None = None) -> SequenceMergeConfig:
    """Input stage at tau 0.9 (merges the runs of one sound), and a deep stage that surely merges more."""
    deep = deep or MergeStage(layer=2, mode="uniform_merge", retention=0.5)
    return config(MergeStage(layer=0, threshold=0.9, window=1), deep, strategy=strategy)


def logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(input_ids=ids, **kwargs).logits


@torch.no_grad()
def manual_logits(model, ids: torch.Tensor, cfg: SequenceMergeConfig, prompt_length: int) -> torch.Tensor:
    """A from-scratch forward of one row without hooks or cache: run the layers, pool at each stage.

    Only the first `prompt_length` positions may merge (later ones were generated).
    """
    decoder = model.model
    lookup = speech_token_lookup(model, cfg)
    hidden = decoder.embed_tokens(ids)
    length = ids.shape[1]
    positions = torch.arange(length, dtype=torch.float64)[None]
    speech = lookup[ids]
    speech[:, prompt_length:] = False
    valid = torch.ones(1, length, dtype=torch.bool)
    stages = {stage.layer: stage for stage in cfg.stages}
    for index, layer in enumerate(decoder.layers):
        if index in stages:
            group = stage_groups(stages[index], hidden, valid, speech, torch.Generator().manual_seed(cfg.seed))
            pooled = pool_groups(hidden, group, positions, speech, cfg.position_strategy)
            hidden, positions, speech, valid = pooled.hidden, pooled.positions, pooled.speech, pooled.valid
        n = hidden.shape[1]
        mask = torch.full((n, n), torch.finfo(hidden.dtype).min).triu(1)[None, None]
        rotary = decoder.rotary_emb(hidden, position_ids=positions.float())
        hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions.long())
    return model.lm_head(decoder.norm(hidden))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_threshold_one_changes_nothing(family):
    model = build_speech_decoder(family)
    ids = torch.randint(0, SPEECH_VOCAB, (2, 20), generator=torch.Generator().manual_seed(0))
    before = logits(model, ids)
    cfg = config(MergeStage(layer=0, threshold=1.0), MergeStage(layer=2, threshold=1.0, window=3))
    with apply_sequence_merge(model, cfg) as handle:
        after = logits(model, ids)
        assert handle.retention == 1.0
    assert torch.equal(after, before)
    assert torch.equal(logits(model, ids), before)  # removed: the original model again


def test_text_positions_are_never_touched():
    model = build_speech_decoder()
    ids = torch.tensor([PROMPT])
    seen = {}
    cfg = config(MergeStage(layer=0, threshold=-1.0))  # every speech token joins its run's group
    handle = apply_sequence_merge(model, cfg)
    capture = model.model.layers[0].register_forward_pre_hook(lambda m, args: seen.setdefault("hidden", args[0]))
    logits(model, ids)
    capture.remove()
    handle.remove()
    merged = seen["hidden"][0]
    embeddings = model.model.embed_tokens.weight.detach()
    # 5 text tokens, exactly as embedded and in order, around one pooled token for the single speech span
    assert merged.shape[0] == 6
    assert torch.equal(merged[[0, 1, 2, 4, 5]], embeddings[[0, 5, 6, 7, 8]])
    assert torch.allclose(merged[3], embeddings[PROMPT[3:13]].mean(0), atol=1e-6)
    assert handle.statistics[0].speech_out == 1


@pytest.mark.parametrize("strategy", ["first", "mean", "contiguous"])
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_input_stage_equals_a_direct_forward_on_the_merged_sequence(family, strategy):
    model = build_speech_decoder(family)
    ids = torch.tensor([PROMPT])
    cfg = config(MergeStage(layer=0, threshold=0.9), strategy=strategy)
    with apply_sequence_merge(model, cfg) as handle:
        merged_logits = logits(model, ids)
        assert handle.statistics[0].speech_out == 4  # runs of sounds 0, 1, 2, 3
    embeds = model.model.embed_tokens(ids).detach()
    lookup = speech_token_lookup(model, cfg)
    valid = torch.ones_like(ids, dtype=torch.bool)
    group = stage_groups(cfg.stages[0], embeds, valid, lookup[ids])
    pooled = pool_groups(embeds, group, torch.arange(ids.shape[1])[None], lookup[ids], strategy)
    # the model's own path: explicit positions and a 2-D mask (which also keeps position gaps from being read
    # as packed sequences)
    direct = model(
        inputs_embeds=pooled.hidden,
        position_ids=pooled.positions.float() if strategy == "mean" else pooled.positions.long(),
        attention_mask=pooled.valid.long(),
    ).logits.detach()
    assert merged_logits.shape == (1, 5 + 4, SPEECH_VOCAB)  # 5 text tokens, 4 pooled speech tokens
    torch.testing.assert_close(merged_logits, direct, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("strategy", ["first", "mean", "contiguous"])
@pytest.mark.parametrize(
    "deep",
    [MergeStage(layer=2, mode="uniform_merge", retention=0.5), MergeStage(layer=3, threshold=-1.0, window=3)],
    ids=["uniform", "affinity"],
)
def test_dual_merge_equals_the_manual_layer_loop(strategy, deep):
    model = build_speech_decoder()
    ids = torch.tensor([PROMPT])
    cfg = dual(strategy, deep)
    with apply_sequence_merge(model, cfg) as handle:
        hooked = logits(model, ids)
        stats = handle.statistics
    assert stats[0].speech_out == 4 and stats[1].speech_out in (2, 1)  # the deep stage merged further
    torch.testing.assert_close(hooked, manual_logits(model, ids, cfg, ids.shape[1]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("strategy", ["first", "mean", "contiguous"])
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_generate_matches_a_direct_forward_on_the_merged_sequence(family, strategy):
    model = build_speech_decoder(family)
    ids = torch.tensor([PROMPT])
    cfg = dual(strategy)
    with apply_sequence_merge(model, cfg):
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False, eos_token_id=None
        )
    generated = out[0, ids.shape[1] :]
    assert generated.numel() == 6
    # greedy decoding without a cache, every step a fresh manual forward over prompt + generated tokens
    sequence = ids
    for step in range(6):
        step_logits = manual_logits(model, sequence, cfg, ids.shape[1])[0, -1]
        assert int(step_logits.argmax()) == int(generated[step]), f"step {step}"
        sequence = torch.cat([sequence, generated[step].view(1, 1)], dim=1)


def test_cached_decoding_equals_recomputation_in_logits():
    model = build_speech_decoder()
    ids = torch.tensor([PROMPT])
    cfg = dual("first")
    with apply_sequence_merge(model, cfg):
        out = model(input_ids=ids, use_cache=True)
        cache = out.cache
        next_ids = torch.tensor([[9, 10]])
        cached = model(input_ids=next_ids, cache=cache, attention_mask=torch.ones(1, ids.shape[1] + 2)).logits
        # the deep layers cached the merged prompt, the shallow ones the input-merged prompt
        assert cache.layers[0].keys.shape[-2] == 9 + 2
        assert cache.layers[3].keys.shape[-2] < 9 + 2
    manual = manual_logits(model, torch.cat([ids, next_ids], dim=1), cfg, ids.shape[1])[:, -2:]
    torch.testing.assert_close(cached, manual.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_left_padded_batch_matches_rows_alone(num_beams):
    model = build_speech_decoder()
    short = [0, 5, 32, 40, 33, 41, 49, 6]
    pad = 2
    batch = torch.tensor([PROMPT, [pad] * (len(PROMPT) - len(short)) + short])
    mask = (torch.arange(len(PROMPT)) >= torch.tensor([[0], [len(PROMPT) - len(short)]])).long()
    cfg = dual("first")
    with apply_sequence_merge(model, cfg):
        decoding = {"max_new_tokens": 5, "do_sample": False, "num_beams": num_beams}
        together = model.generate(input_ids=batch, attention_mask=mask, **decoding)
        # with beams, the key/value cache is reordered at every step; the beams of one row share its merged prompt
        alone = [model.generate(input_ids=torch.tensor([row]), **decoding) for row in (PROMPT, short)]
    assert together[0, len(PROMPT) :].tolist() == alone[0][0, len(PROMPT) :].tolist()
    assert together[1, len(PROMPT) :].tolist() == alone[1][0, len(short) :].tolist()


def test_eager_attention_gives_the_same_logits_as_sdpa():
    sdpa = build_speech_decoder()
    eager = build_speech_decoder()
    eager.config._attn_implementation = "eager"
    ids = torch.tensor([PROMPT])
    with apply_sequence_merge(sdpa, dual()), apply_sequence_merge(eager, dual()):
        torch.testing.assert_close(logits(sdpa, ids), logits(eager, ids), atol=1e-5, rtol=1e-5)


def test_oracle_stage_counts_and_flops_records():
    model = build_speech_decoder()
    ids = torch.tensor([PROMPT, PROMPT])
    cfg = config(MergeStage(layer=1, mode="uniform_drop", retention=0.5))
    with apply_sequence_merge(model, cfg) as handle:
        logits(model, ids)
        assert handle.retention == 0.5  # 10 speech tokens -> 5, in both rows
        assert handle.records[0].tokens_per_layer(4).tolist() == [[15, 10, 10, 10]] * 2
        handle.reset_statistics()
        assert handle.records == [] and handle.retention == 1.0


def test_bad_input_is_refused_and_leaves_the_model_without_hooks():
    model = build_speech_decoder()
    ids = torch.tensor([PROMPT])
    before = logits(model, ids)
    with pytest.raises(ValueError, match="do not exist: the decoder has 4 layers"):
        apply_sequence_merge(model, config(MergeStage(layer=4, threshold=0.5)))
    with pytest.raises(ValueError, match="names no audio_token_id"):
        apply_sequence_merge(model, SequenceMergeConfig(stages=[MergeStage(layer=0, threshold=0.5)]))
    with pytest.raises(TokenMergeError, match=r"token_ids \[70\] are out of range for a vocabulary of 64 rows"):
        apply_sequence_merge(model, SequenceMergeConfig(stages=[MergeStage(0, threshold=0.5)], token_ids=[70]))
    with pytest.raises(TokenMergeError, match=r"special tokens \[0, 1, 2\] \(3 in all\).*allow_special_tokens"):
        apply_sequence_merge(model, SequenceMergeConfig(stages=[MergeStage(0, threshold=0.5)], token_id_range=(0, 40)))
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2' is not supported"):
        apply_sequence_merge(model, dual())
    model.config._attn_implementation = "sdpa"
    assert not model._forward_pre_hooks and not any(layer._forward_pre_hooks for layer in model.model.layers)
    assert sequence_merge_handle(model) is None and not hasattr(model, "_sequence_merge_handle")
    assert torch.equal(logits(model, ids), before)
    with apply_sequence_merge(model, dual()) as handle:
        assert sequence_merge_handle(model) is handle
    assert sequence_merge_handle(model) is None

    sliding = build_speech_decoder("qwen2")
    sliding.config.layer_types = ["sliding_attention"] * 4
    with pytest.raises(ValueError, match="uses sliding-window attention"):
        apply_sequence_merge(sliding, dual())

    with apply_sequence_merge(model, dual()):
        with pytest.raises(ValueError, match="The decoder was called directly"):
            model.model(input_ids=ids)
        with pytest.raises(ValueError, match="already installed"):
            apply_sequence_merge(model, dual())
        with pytest.raises(ValueError, match="call the model with input_ids"):
            model(inputs_embeds=model.model.embed_tokens(ids))


def test_config_validation_and_round_trip(tmp_path):
    cfg = SequenceMergeConfig.dual("conservative", deep_layer=3, token_id_range=(32, 64), position_strategy="mean")
    assert [(s.layer, s.threshold, s.window) for s in cfg.stages] == [(0, 0.9, 1), (3, 0.8, 3)]
    cfg.save_pretrained(tmp_path)
    assert SequenceMergeConfig.from_pretrained(tmp_path) == cfg
    assert SequenceMergeConfig.dual("aggressive", deep_layer=5, input_stage=False).stages == [
        MergeStage(layer=5, threshold=0.7, window=3)
    ]
    with pytest.raises(ValueError, match="strictly increasing layers"):
        SequenceMergeConfig(stages=[MergeStage(2, threshold=0.5), MergeStage(1, threshold=0.5)])
    with pytest.raises(ValueError, match="at least one stage"):
        SequenceMergeConfig()
    with pytest.raises(ValueError, match="position_strategy must be one of"):
        SequenceMergeConfig(stages=[MergeStage(0, threshold=0.5)], position_strategy="last")
    with pytest.raises(ValueError, match="Unknown setting"):
        SequenceMergeConfig.dual("medium", deep_layer=3)


def test_prefill_flops_follow_the_token_counts():
    from hf_token_merge.sequence.flops import layer_flops

    model = build_speech_decoder()
    cfg = config(MergeStage(layer=2, mode="uniform_drop", retention=0.5))
    with apply_sequence_merge(model, cfg) as handle:
        logits(model, torch.tensor([PROMPT]))
        baseline, merged = handle.prefill_flops()
    c = model.config  # d = 32, 4 heads of 8, 2 kv heads, f = 64, vocab 64
    per_layer_15 = 2 * 15 * 32 * (4 + 4) * 8 + 2 * 15 * 32 * 32 + 6 * 15 * 32 * 64 + 4 * 32 * 15 * 16 / 2
    assert float(layer_flops(c, 15)) == per_layer_15
    head = 2 * 32 * 64
    assert baseline == 4 * per_layer_15 + head
    assert merged == 2 * per_layer_15 + 2 * float(layer_flops(c, 10)) + head + 32 * 15  # + the stage's pooling


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dual_merge_and_generate_on_cuda_match_cpu():
    model = build_speech_decoder()
    ids = torch.tensor([PROMPT])
    cfg = dual("mean")
    with apply_sequence_merge(model, cfg):
        cpu_logits = logits(model, ids)
        cpu_tokens = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False)
    model.to("cuda")
    with apply_sequence_merge(model, cfg) as handle:
        cuda_logits = logits(model, ids.cuda())
        cuda_tokens = model.generate(input_ids=ids.cuda(), max_new_tokens=5, do_sample=False)
        assert handle.statistics[1].speech_out == 2 * 2  # two prefills (the forward, then generate's)
    torch.testing.assert_close(cuda_logits.cpu(), cpu_logits, atol=1e-4, rtol=1e-4)
    assert torch.equal(cuda_tokens.cpu(), cpu_tokens)


def test_speech_selection_is_the_vocabulary_merge_selection():
    """Exclusion and special-token protection apply to the speech positions as to merged rows."""
    model = build_speech_decoder()
    stage = [MergeStage(layer=0, threshold=0.5)]
    excluded = SequenceMergeConfig(stages=stage, token_id_range=SPEECH, exclude_token_ids=[32, 33], token_ids=[5])
    lookup = speech_token_lookup(model, excluded)
    assert lookup.nonzero().flatten().tolist() == [5, *range(34, 64)]
    # bos=0, eos=1, pad=2 of the model config are protected unless allowed
    allowed = SequenceMergeConfig(stages=stage, token_id_range=(0, 4), allow_special_tokens=True)
    assert speech_token_lookup(model, allowed).nonzero().flatten().tolist() == [0, 1, 2, 3]
    with pytest.raises(TokenMergeError, match=r"special tokens \[0, 1, 2\] \(3 in all\)"):
        speech_token_lookup(model, SequenceMergeConfig(stages=stage, token_id_range=(0, 4)))
    with pytest.raises(TokenMergeError, match="The selection is empty"):
        speech_token_lookup(model, SequenceMergeConfig(stages=stage, token_ids=[40], exclude_token_ids=[40]))


def test_deprecated_speech_token_names_still_select_with_a_warning(tmp_path):
    stage = [MergeStage(layer=0, threshold=0.5)]
    with pytest.warns(FutureWarning, match="speech_token_range is deprecated; use token_id_range"):
        old = SequenceMergeConfig(stages=stage, speech_token_range=SPEECH)
    assert old == SequenceMergeConfig(stages=stage, token_id_range=SPEECH)
    assert "speech_token_range" not in old.to_dict() and old.to_dict()["token_id_range"] == list(SPEECH)
    with pytest.warns(FutureWarning, match="speech_token_ids is deprecated; use token_ids"):
        assert SequenceMergeConfig(stages=stage, speech_token_ids=[33]).token_ids == [33]
    with pytest.warns(FutureWarning, match="speech_token_pattern is deprecated; use token_pattern"):
        assert SequenceMergeConfig(stages=stage, speech_token_pattern="x").token_pattern == "x"
    # a config saved before the rename still loads
    (tmp_path / "sequence_merge_config.json").write_text(
        '{"stages": [{"layer": 0, "threshold": 0.5}], "speech_token_range": [32, 64]}'
    )
    with pytest.warns(FutureWarning):
        assert SequenceMergeConfig.from_pretrained(tmp_path).token_id_range == SPEECH
    with pytest.raises(TokenMergeError, match="got both speech_token_ids= and token_ids=.*pass only token_ids="):
        SequenceMergeConfig(stages=stage, speech_token_ids=[33], token_ids=[34])


def test_a_non_positive_affinity_threshold_is_allowed_but_warns():
    with pytest.warns(UserWarning, match=r"MergeStage\(layer=2\) has threshold=0.0: .*whole speech spans collapse"):
        MergeStage(layer=2, threshold=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MergeStage(layer=2, threshold=0.1)  # low but positive: the CLI's deep-threshold sweep goes this far


def test_a_vocabulary_merged_model_takes_a_sequence_merge():
    """Token ids keep their meaning after `apply_token_merge`, so the speech selection spans the original ids (most
    of them beyond the merged embedding's rows), the merge pools the merged rows, and the LM head's FLOPs count the
    rows it holds."""
    from hf_token_merge import TokenMergeConfig, apply_token_merge

    model = build_speech_decoder()
    ids = torch.tensor([PROMPT])
    cfg = config(MergeStage(layer=0, threshold=0.9))
    with apply_sequence_merge(model, cfg) as handle:
        logits(model, ids)
        unmerged_flops = handle.prefill_flops()
    apply_token_merge(model, TokenMergeConfig(token_id_range=SPEECH, n_clusters=8))  # one row per sound
    assert model.get_input_embeddings().weight.shape[0] == model.get_output_embeddings().weight.shape[0] == 32 + 8
    with apply_sequence_merge(model, cfg) as handle:
        merged_logits = logits(model, ids)
        assert handle.statistics[0].speech_out == 4  # runs of sounds 0, 1, 2, 3, as without the vocabulary merge
        flops = handle.prefill_flops()
    embeds = model.get_input_embeddings()(ids).detach()
    lookup = speech_token_lookup(model, cfg)
    assert lookup.shape == (SPEECH_VOCAB,) and lookup.nonzero().flatten().tolist() == list(range(*SPEECH))
    group = stage_groups(cfg.stages[0], embeds, torch.ones_like(ids, dtype=torch.bool), lookup[ids])
    pooled = pool_groups(embeds, group, torch.arange(ids.shape[1])[None], lookup[ids], "first")
    positions, mask = pooled.positions.long(), pooled.valid.long()
    direct = model(inputs_embeds=pooled.hidden, position_ids=positions, attention_mask=mask)
    assert merged_logits.shape == (1, 5 + 4, SPEECH_VOCAB)
    torch.testing.assert_close(merged_logits, direct.logits.detach(), atol=1e-5, rtol=1e-5)
    head_saving = 2 * model.config.hidden_size * (SPEECH_VOCAB - 40)  # one prefill row, its last position
    assert [before - after for before, after in zip(unmerged_flops, flops, strict=True)] == [head_saving, head_saving]
