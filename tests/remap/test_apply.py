"""apply_token_merge on real (tiny) transformers models: rows, logits, losses, generation, head modes, errors."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hf_token_merge import (
    MergedEmbedding,
    MergedLMHead,
    MergePlan,
    TokenMergeConfig,
    apply_token_merge,
    count_tokens,
    plan_token_merge,
)
from tests.models import (
    Bundle,
    CustomModel,
    assert_unchanged,
    build_custom,
    build_llama,
    build_qwen2,
    build_whisper,
    forward,
    hidden_of,
    logits_of,
    random_ids,
    sample_ids,
    snapshot,
    whisper_inputs,
)

BUILDERS = {
    "llama_tied": lambda: build_llama(tied=True),
    "llama_untied": lambda: build_llama(tied=False),
    "qwen2": build_qwen2,
    "whisper": build_whisper,
}
STOPS = ("n_clusters", "target_ratio", "similarity_threshold", "distance_threshold")


def merge_config(bundle: Bundle, **kwargs) -> TokenMergeConfig:
    """The bundle's natural selection, planted cluster count, overridden by kwargs."""
    base = {**bundle.selection}
    if not any(stop in kwargs for stop in STOPS):
        base["n_clusters"] = bundle.n_centers
    if isinstance(bundle.model, CustomModel):
        base.update(input_embedding_name="tok_emb", output_embedding_name="out_head")
    return TokenMergeConfig(**{**base, **kwargs})


def merge(bundle: Bundle, token_counts=None, **kwargs):
    config = merge_config(bundle, **kwargs)
    return apply_token_merge(
        bundle.model, config, tokenizer=bundle.tokenizer, token_counts=token_counts, show_progress=False
    )


def embedding(model) -> nn.Module:
    if hasattr(model, "tok_emb"):
        return model.tok_emb
    return model.get_input_embeddings()


def head(model) -> nn.Module:
    if hasattr(model, "out_head"):
        return model.out_head
    return model.get_output_embeddings()


def unselected_ids(plan: MergePlan) -> torch.Tensor:
    keep = torch.ones(plan.vocab_size, dtype=torch.bool)
    keep[plan.selected_ids] = False
    return keep.nonzero().flatten()


def calibration_counts(vocab_size: int, seed: int = 0) -> torch.Tensor:
    """Skewed counts from random calibration sequences (every id's count differs a lot between ids)."""
    generator = torch.Generator().manual_seed(seed)
    probabilities = torch.rand(vocab_size, generator=generator) ** 4
    sequences = [torch.multinomial(probabilities, 50, replacement=True, generator=generator) for _ in range(8)]
    return count_tokens(sequences, vocab_size)


# --- 1. nothing that can merge: exactly the original model ----------------------------------------------


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_all_singletons_reproduce_logits_exactly(name, dtype):
    bundle = BUILDERS[name]()
    bundle.model.to(dtype)
    ids = sample_ids(bundle)
    before = logits_of(bundle.model, ids)
    result = merge(bundle, n_clusters=len(bundle.selected_ids))
    assert result.plan.num_rows == bundle.vocab_size
    assert isinstance(embedding(bundle.model), MergedEmbedding)
    assert isinstance(head(bundle.model), MergedLMHead)
    after = logits_of(bundle.model, ids)
    assert after.dtype == before.dtype == dtype
    assert torch.equal(after, before)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_threshold_one_on_distinct_rows_reproduces_logits_exactly(name):
    bundle = BUILDERS[name]()
    # rows outside the planted block are independent random rows: no two are identical
    candidates = list(range(4, 12))
    ids = sample_ids(bundle)
    before = logits_of(bundle.model, ids)
    config = TokenMergeConfig(token_ids=candidates, method="threshold", similarity_threshold=1.0)
    result = apply_token_merge(bundle.model, config, tokenizer=bundle.tokenizer, show_progress=False)
    assert result.plan.num_clusters == len(candidates)
    assert torch.equal(logits_of(bundle.model, ids), before)


def test_custom_names_singletons_exact():
    bundle = build_custom()
    ids = sample_ids(bundle)
    before = logits_of(bundle.model, ids)
    merge(bundle, n_clusters=len(bundle.selected_ids))
    assert isinstance(bundle.model.tok_emb, MergedEmbedding)
    assert isinstance(bundle.model.out_head, MergedLMHead)
    assert torch.equal(logits_of(bundle.model, ids), before)


# --- 2. rows -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*BUILDERS, "custom"])
def test_planted_clusters_and_mean_rows(name):
    bundle = build_custom() if name == "custom" else BUILDERS[name]()
    old_input = embedding(bundle.model).weight.detach().clone()
    old_head = head(bundle.model).weight.detach().clone()
    old_bias = None if head(bundle.model).bias is None else head(bundle.model).bias.detach().clone()
    tied = head(bundle.model).weight is embedding(bundle.model).weight

    result = merge(bundle)
    plan = result.plan
    assert torch.equal(plan.selected_ids, bundle.selected_ids)
    assert torch.equal(plan.cluster_of_selected, bundle.planted_labels)
    assert plan.num_rows == bundle.vocab_size - len(bundle.selected_ids) + bundle.n_centers

    new_input = embedding(bundle.model)
    keep = unselected_ids(plan)
    # unselected rows are bit-identical and have rows of their own
    assert torch.equal(new_input.weight[plan.old_to_new[keep]], old_input[keep])
    assert len(set(plan.old_to_new[keep].tolist())) == len(keep)
    for cluster in range(plan.num_clusters):
        members = plan.members(cluster)
        row = plan.old_to_new[members]
        assert (row == plan.cluster_rows[cluster]).all()
        torch.testing.assert_close(new_input.weight[row[0]], old_input[members].mean(0), rtol=0, atol=1e-6)
        if not tied:
            new_head = head(bundle.model)
            torch.testing.assert_close(new_head.weight[row[0]], old_head[members].mean(0), rtol=0, atol=1e-6)
            if old_bias is not None:
                torch.testing.assert_close(new_head.bias[row[0]], old_bias[members].mean(), rtol=0, atol=1e-6)
    if not tied:
        assert torch.equal(head(bundle.model).weight[plan.old_to_new[keep]], old_head[keep])
        if old_bias is not None:
            assert torch.equal(head(bundle.model).bias[plan.old_to_new[keep]], old_bias[keep])
    # the embedding looks ids up through the map
    ids = sample_ids(bundle)
    assert torch.equal(new_input(ids), new_input.weight[plan.old_to_new[ids]])


def test_weighted_mean_rows(llama_untied):
    bundle = llama_untied
    counts = calibration_counts(bundle.vocab_size)
    old_input = embedding(bundle.model).weight.detach().clone()
    old_head = head(bundle.model).weight.detach().clone()
    plan = merge(bundle, token_counts=counts, merge_rule="weighted_mean").plan
    for cluster in range(plan.num_clusters):
        members = plan.members(cluster)
        weights = (counts[members] + 1).double()
        weights /= weights.sum()
        expected_input = (weights[:, None] * old_input[members].double()).sum(0).float()
        expected_head = (weights[:, None] * old_head[members].double()).sum(0).float()
        row = plan.cluster_rows[cluster]
        torch.testing.assert_close(embedding(bundle.model).weight[row], expected_input, rtol=0, atol=1e-6)
        torch.testing.assert_close(head(bundle.model).weight[row], expected_head, rtol=0, atol=1e-6)
        # the weighting really differs from the plain mean here
        assert not torch.allclose(expected_input, old_input[members].mean(0), atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_medoid_rows(metric):
    bundle = build_llama(tied=True)
    weight = embedding(bundle.model).weight
    labels = bundle.planted_labels
    # make the last member of every cluster the exact mean of its cluster: it is then closest to all others
    expected_medoid = {}
    with torch.no_grad():
        for cluster in range(bundle.n_centers):
            members = bundle.selected_ids[labels == cluster]
            weight[members[-1]] = weight[members].double().mean(0).float()
            expected_medoid[cluster] = int(members[-1])
    original = weight.detach().clone()
    plan = merge(bundle, merge_rule="medoid", metric=metric).plan
    new = embedding(bundle.model).weight
    for cluster in range(plan.num_clusters):
        assert int(plan.medoid_ids[cluster]) == expected_medoid[cluster]
        assert torch.equal(new[plan.cluster_rows[cluster]], original[expected_medoid[cluster]])


def test_medoid_of_pairs_is_the_first_member():
    bundle = build_llama(tied=True, n_speech=16, n_centers=8)  # clusters of exactly 2
    plan = merge(bundle, merge_rule="medoid").plan
    assert torch.equal(plan.medoid_ids, bundle.selected_ids[:8])


def test_similarity_source_output_and_both(llama_untied):
    bundle = llama_untied

    def labels(**kwargs):
        config = merge_config(bundle, method="threshold", similarity_threshold=0.99, **kwargs)
        return plan_token_merge(
            bundle.model, config, tokenizer=bundle.tokenizer, show_progress=False
        ).cluster_of_selected

    # planted in both tables: every source recovers the clusters
    for source in ("input", "output", "both"):
        assert torch.equal(labels(similarity_source=source), bundle.planted_labels), source
    # scramble the input rows of the block: only the head rows still carry the clusters
    with torch.no_grad():
        weight = embedding(bundle.model).weight
        weight[bundle.selected_ids] = torch.randn(len(bundle.selected_ids), weight.shape[1])
    singletons = torch.arange(len(bundle.selected_ids))
    assert torch.equal(labels(similarity_source="input"), singletons)
    assert torch.equal(labels(similarity_source="output"), bundle.planted_labels)
    # 'both' averages the two cosines (about 0.5 here), so nothing is within 0.99 any more
    assert torch.equal(labels(similarity_source="both"), singletons)


# --- 3. logits in the original id space ----------------------------------------------------------------------


def _compact_twin(bundle_builder, config: TokenMergeConfig, counts=None):
    """The same model merged with compact_logits=True: logits over merged rows."""
    twin = bundle_builder()
    apply_token_merge(
        twin.model,
        dataclasses.replace(config, compact_logits=True),
        tokenizer=twin.tokenizer,
        token_counts=counts,
        show_progress=False,
    )
    return twin


@pytest.mark.parametrize("name", ["llama_tied", "llama_untied", "whisper"])
@pytest.mark.parametrize("correction", ["uniform", "frequency", "none"])
def test_logit_correction(name, correction):
    bundle = BUILDERS[name]()
    counts = calibration_counts(bundle.vocab_size) if correction == "frequency" else None
    result = merge(bundle, token_counts=counts, logit_correction=correction)
    plan = result.plan
    ids = sample_ids(bundle)
    logits = logits_of(bundle.model, ids)
    assert logits.shape == (*ids.shape, bundle.vocab_size)

    # unmerged ids: exactly h @ W[row] of the merged model
    hidden = hidden_of(bundle.model, ids)
    merged_head = head(bundle.model)
    compact = F.linear(hidden, merged_head.weight, merged_head.bias)
    keep = unselected_ids(plan)
    assert torch.equal(logits[..., keep], compact[..., plan.old_to_new[keep]])

    twin = _compact_twin(BUILDERS[name], plan.config, counts)
    twin_logits = logits_of(twin.model, ids)
    assert twin_logits.shape == (*ids.shape, plan.num_rows)
    torch.testing.assert_close(twin_logits, compact, rtol=0, atol=1e-6)

    if correction == "none":
        for cluster in range(plan.num_clusters):
            members = plan.members(cluster)
            expected = compact[..., plan.cluster_rows[cluster]]
            for member in members:
                assert torch.equal(logits[..., member], expected)
        return

    # float32 logits and log shares: agreement to float32 precision
    close = {"rtol": 1e-5, "atol": 1e-9}
    probabilities = logits.double().softmax(-1)
    compact_probabilities = twin_logits.double().softmax(-1)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(ids.shape, dtype=torch.float64), **close)
    torch.testing.assert_close(probabilities[..., keep], compact_probabilities[..., plan.old_to_new[keep]], **close)
    for cluster in range(plan.num_clusters):
        members = plan.members(cluster)
        cluster_probability = compact_probabilities[..., plan.cluster_rows[cluster]]
        torch.testing.assert_close(probabilities[..., members].sum(-1), cluster_probability, **close)
        if correction == "uniform":
            shares = torch.full((len(members),), 1.0 / len(members), dtype=torch.float64)
        else:
            shares = (counts[members] + 1).double() / (counts[members].sum() + len(members))
        torch.testing.assert_close(probabilities[..., members], cluster_probability[..., None] * shares, **close)
    if correction == "frequency":  # the shares genuinely differ inside clusters
        assert (counts[plan.selected_ids] != counts[plan.selected_ids][0]).any()


def test_frequency_representative_is_the_most_frequent_member(llama_tied):
    counts = calibration_counts(llama_tied.vocab_size, seed=3)
    plan = merge(llama_tied, token_counts=counts, logit_correction="frequency").plan
    logits = logits_of(llama_tied.model, sample_ids(llama_tied))
    for cluster in range(plan.num_clusters):
        members = plan.members(cluster)
        best = members[counts[members] == counts[members].max()].min()
        assert int(plan.representative_ids[cluster]) == int(best)
        assert (members[logits[..., members].argmax(-1)] == best).all()


def test_loss_with_labels_matches_cross_entropy(llama_tied):
    plan = merge(llama_tied).plan
    ids = sample_ids(llama_tied)
    labels = ids.clone()
    labels[0, 5] = -100
    labels[1, :3] = -100
    output = forward(llama_tied.model, ids, labels=labels)
    logits = output.logits.float()
    expected = F.cross_entropy(
        logits[:, :-1].reshape(-1, plan.vocab_size), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    assert torch.isfinite(output.loss)
    torch.testing.assert_close(output.loss, expected)
    assert (torch.isin(labels[:, 1:], plan.selected_ids)).any()


def test_loss_backpropagates_into_merged_rows(llama_untied):
    merge(llama_untied)
    ids = sample_ids(llama_untied)
    loss = llama_untied.model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert embedding(llama_untied.model).weight.grad is not None
    assert head(llama_untied.model).weight.grad.abs().sum() > 0


def test_whisper_encoder_decoder_forward_and_loss(whisper):
    model = whisper.model
    pair_input, pair_output = model.get_input_embeddings(), model.get_output_embeddings()
    assert pair_input is model.model.decoder.embed_tokens
    assert pair_output is model.proj_out
    plan = merge(whisper).plan
    assert isinstance(model.model.decoder.embed_tokens, MergedEmbedding)
    assert isinstance(model.proj_out, MergedLMHead)
    assert model.proj_out.weight is model.model.decoder.embed_tokens.weight
    assert model.model.decoder.embed_tokens.padding_idx == int(plan.old_to_new[model.config.pad_token_id])
    record = model.config.quantization_config
    assert (record.input_embedding, record.output_embedding) == ("model.decoder.embed_tokens", "proj_out")
    ids = sample_ids(whisper)
    output = forward(model, ids, labels=ids)
    assert output.logits.shape == (*ids.shape, whisper.vocab_size)
    expected = F.cross_entropy(output.logits.reshape(-1, whisper.vocab_size).float(), ids.reshape(-1))
    torch.testing.assert_close(output.loss, expected)
    features, _ = whisper_inputs(batch=2)
    generated = model.generate(input_features=features, max_new_tokens=4, do_sample=False)
    assert generated.max() < whisper.vocab_size


def test_spark_tts_preset_merges_semantic_tokens_only(qwen2):
    weight = embedding(qwen2.model).weight.detach().clone()
    plan = merge(qwen2).plan
    assert torch.equal(plan.selected_ids, qwen2.selected_ids)
    global_ids = torch.tensor(qwen2.extra["global"])
    new = embedding(qwen2.model).weight
    assert torch.equal(new[plan.old_to_new[global_ids]], weight[global_ids])
    assert len(set(plan.old_to_new[global_ids].tolist())) == len(global_ids)


def test_custom_names_merge(custom):
    ids = sample_ids(custom)
    with pytest.raises(ValueError, match="does not expose its input embedding; set input_embedding_name"):
        apply_token_merge(custom.model, TokenMergeConfig(token_id_range=custom.token_id_range, n_clusters=4))
    result = merge(custom)
    assert isinstance(custom.model.tok_emb, MergedEmbedding)
    assert isinstance(custom.model.out_head, MergedLMHead)
    record = custom.model.config.quantization_config
    assert (record.input_embedding, record.output_embedding) == ("tok_emb", "out_head")
    assert record.output_bias
    logits = logits_of(custom.model, ids)
    assert logits.shape == (*ids.shape, custom.vocab_size)
    keep = unselected_ids(result.plan)
    compact = custom.model.out_head.weight @ hidden_of(custom.model, ids).unsqueeze(-1)
    assert compact.shape[-2] == result.plan.num_rows
    torch.testing.assert_close(
        logits[..., keep], (compact.squeeze(-1) + custom.model.out_head.bias)[..., result.plan.old_to_new[keep]]
    )


# --- 4. generation -------------------------------------------------------------------------------------------


def _prompt(bundle):
    return random_ids(bundle.vocab_size, shape=(2, 4), seed=11)


def test_greedy_generation_without_correction_emits_representatives(llama_tied):
    plan = merge(llama_tied, logit_correction="none").plan
    prompt = _prompt(llama_tied)
    generated = llama_tied.model.generate(prompt, max_new_tokens=12, do_sample=False)
    new = generated[:, prompt.shape[1] :]
    assert torch.equal(generated[:, : prompt.shape[1]], prompt)
    assert new.max() < llama_tied.vocab_size
    speech = new[torch.isin(new, plan.selected_ids)]
    assert speech.numel() > 0  # the planted speech rows dominate the tiny model's output
    assert torch.isin(speech, plan.representative_ids).all()
    assert torch.equal(plan.representative_ids, plan.selected_ids[: plan.num_clusters])


def _processed_scores(logits, sequence, penalty, suppress):
    scores = logits.clone()
    seen = scores.gather(-1, sequence)
    scores.scatter_(-1, sequence, torch.where(seen < 0, seen * penalty, seen / penalty))
    scores[..., suppress] = float("-inf")
    return scores


@pytest.mark.parametrize("name", ["llama_tied", "llama_untied", "qwen2"])
def test_generation_with_repetition_penalty_and_suppression(name):
    bundle = BUILDERS[name]()
    merge(bundle)
    model = bundle.model
    prompt = _prompt(bundle)
    first = model.generate(prompt, max_new_tokens=1, do_sample=False)[:, -1]
    suppress = sorted(set(first.tolist()))  # suppress what greedy would emit first
    generated = model.generate(
        prompt, max_new_tokens=8, do_sample=False, repetition_penalty=1.5, suppress_tokens=suppress
    )
    assert generated.shape == (2, prompt.shape[1] + 8)
    assert generated.max() < bundle.vocab_size
    assert not torch.isin(generated[:, prompt.shape[1] :], torch.tensor(suppress)).any()
    # every step is the argmax of the processed original-space scores
    for step in range(prompt.shape[1], generated.shape[1]):
        logits = logits_of(model, generated[:, :step])[:, -1].float()
        scores = _processed_scores(logits, generated[:, :step], 1.5, suppress)
        chosen = scores.gather(-1, generated[:, step : step + 1]).squeeze(-1)
        assert (chosen >= scores.max(-1).values - 1e-4).all()


# --- 5. lm_head modes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_lm_head_drop(tied):
    bundle = build_llama(tied=tied)
    old_head = head(bundle.model).weight.detach().clone()
    plan = merge(bundle, lm_head="drop").plan
    new_head = head(bundle.model)
    assert isinstance(new_head, MergedLMHead)
    if tied:
        assert new_head.weight is embedding(bundle.model).weight
        assert new_head.weight.shape[0] == plan.num_rows
    else:
        keep = unselected_ids(plan)
        assert new_head.weight.shape[0] == bundle.vocab_size - len(bundle.selected_ids)
        assert torch.equal(new_head.weight, old_head[keep])
    ids = sample_ids(bundle)
    logits = logits_of(bundle.model, ids)
    assert logits.shape[-1] == bundle.vocab_size
    assert torch.isneginf(logits[..., plan.selected_ids]).all()
    keep = unselected_ids(plan)
    assert torch.isfinite(logits[..., keep]).all()
    hidden = hidden_of(bundle.model, ids)
    head_rows = plan.old_to_new[keep] if tied else torch.arange(len(keep))
    assert torch.equal(logits[..., keep], F.linear(hidden, new_head.weight)[..., head_rows])
    # the planted speech rows would dominate generation; dropped, they are never emitted
    generated = bundle.model.generate(_prompt(bundle), max_new_tokens=10, do_sample=False)
    assert not torch.isin(generated[:, 4:], plan.selected_ids).any()
    labels = ids.clone()
    labels[torch.isin(labels, plan.selected_ids)] = -100
    assert torch.isfinite(forward(bundle.model, ids, labels=labels).loss)


def test_lm_head_drop_keeps_the_bias_of_kept_rows(custom):
    old_bias = custom.model.out_head.bias.detach().clone()
    old_weight = custom.model.out_head.weight.detach().clone()
    plan = merge(custom, lm_head="drop").plan
    keep = unselected_ids(plan)
    assert torch.equal(custom.model.out_head.bias, old_bias[keep])
    assert torch.equal(custom.model.out_head.weight, old_weight[keep])
    ids = sample_ids(custom)
    logits = logits_of(custom.model, ids)
    hidden = hidden_of(custom.model, ids)
    assert torch.equal(logits[..., keep], F.linear(hidden, old_weight[keep], old_bias[keep]))
    assert torch.isneginf(logits[..., plan.selected_ids]).all()


@pytest.mark.parametrize("lm_head", ["drop", "keep"])
def test_compact_logits_need_a_merged_head(lm_head):
    # a dropped untied head has one row per kept id, numbered unlike the merged embedding rows, so compact ids
    # could not be fed back; a kept head has no merged rows at all
    with pytest.raises(ValueError, match=r"compact_logits=True needs lm_head='merge'"):
        TokenMergeConfig(token_id_range=(0, 4), n_clusters=2, lm_head=lm_head, compact_logits=True)


def test_lm_head_keep_untied(llama_untied):
    bundle = llama_untied
    original_head = bundle.model.lm_head
    original_weight = original_head.weight.detach().clone()
    text_only = random_ids(bundle.vocab_size, (2, 8), seed=5) % int(bundle.selected_ids[0])
    before = logits_of(bundle.model, text_only)
    result = merge(bundle, lm_head="keep")
    assert bundle.model.lm_head is original_head
    assert type(bundle.model.lm_head) is nn.Linear
    assert torch.equal(bundle.model.lm_head.weight, original_weight)
    assert isinstance(embedding(bundle.model), MergedEmbedding)
    assert bundle.model.config.quantization_config.output_embedding is None
    # inputs without merged tokens see exactly the original model; merged tokens still have own logits
    assert torch.equal(logits_of(bundle.model, text_only), before)
    logits = logits_of(bundle.model, sample_ids(bundle))
    assert logits.shape[-1] == bundle.vocab_size
    removed = len(bundle.selected_ids) - bundle.n_centers
    assert result.parameters_before - result.parameters_after == removed * bundle.model.config.hidden_size


def test_lm_head_keep_tied_is_refused(llama_tied):
    before = snapshot(llama_tied.model)
    with pytest.raises(ValueError, match="lm_head='keep' needs untied embeddings.*use lm_head='merge' or 'drop'"):
        merge(llama_tied, lm_head="keep")
    assert_unchanged(llama_tied.model, before)


# --- 6. tying, dtype and device ------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("lm_head", ["merge", "drop"])
def test_tying_dtype_device_preserved(tied, dtype, lm_head):
    bundle = build_llama(tied=tied, dtype=dtype)
    result = merge(bundle, lm_head=lm_head)
    model = bundle.model
    emb, out = embedding(model), head(model)
    assert (out.weight is emb.weight) == tied
    assert emb.weight.dtype == out.weight.dtype == dtype
    assert emb.weight.device.type == out.weight.device.type == "cpu"
    assert emb.index_map.dtype == out.index_map.dtype == torch.int32
    assert emb.weight.requires_grad and out.weight.requires_grad
    assert model.dtype == dtype
    logits = logits_of(model, sample_ids(bundle))
    assert logits.dtype == dtype
    assert not torch.isnan(logits).any()
    hidden = model.config.hidden_size
    removed = len(bundle.selected_ids) - bundle.n_centers
    if tied:
        expected_removed = removed * hidden
    elif lm_head == "merge":
        expected_removed = 2 * removed * hidden
    else:
        expected_removed = removed * hidden + len(bundle.selected_ids) * hidden
    assert result.parameters_before - result.parameters_after == expected_removed
    buffers = emb.index_map.numel() * 4 + out.index_map.numel() * 4 + out.logit_offset.numel() * dtype.itemsize
    assert result.bytes_before - result.bytes_after == expected_removed * dtype.itemsize - buffers


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("tied", [True, False])
def test_device_is_preserved_on_cuda(tied):
    on_cpu, on_gpu = build_llama(tied=tied), build_llama(tied=tied)
    on_gpu.model.to("cuda")
    merge(on_cpu)
    plan = merge(on_gpu).plan
    model = on_gpu.model
    for tensor in (embedding(model).weight, embedding(model).index_map, head(model).weight, head(model).index_map):
        assert tensor.device.type == "cuda"
    assert (head(model).weight is embedding(model).weight) == tied
    ids = sample_ids(on_cpu)
    torch.testing.assert_close(logits_of(model, ids.cuda()).cpu(), logits_of(on_cpu.model, ids), rtol=1e-4, atol=1e-4)
    assert torch.equal(embedding(model).index_map.cpu().long(), plan.old_to_new)


def test_tied_parameter_is_listed_once(llama_tied):
    merge(llama_tied)
    names = [name for name, _ in llama_tied.model.named_parameters()]
    assert "model.embed_tokens.weight" in names
    assert "lm_head.weight" not in names


# --- 7. refused inputs leave the model unchanged -------------------------------------------------------------


def _refuse(bundle, match, *, counts=None, tokenizer="bundle", **kwargs):
    before = snapshot(bundle.model)
    config = merge_config(bundle, **kwargs)
    tokenizer = bundle.tokenizer if tokenizer == "bundle" else tokenizer
    with pytest.raises(ValueError, match=match):
        apply_token_merge(bundle.model, config, tokenizer=tokenizer, token_counts=counts, show_progress=False)
    assert_unchanged(bundle.model, before)


def test_refuse_out_of_range_ids(llama_tied):
    _refuse(llama_tied, r"token_ids \[75\] are out of range.*valid ids are 0\.\.74", preset=None, token_ids=[30, 75])


def test_refuse_range_past_vocabulary(llama_tied):
    _refuse(llama_tied, r"ends past the vocabulary of 75 rows; use an end <= 75", preset=None, token_id_range=(30, 76))


def test_refuse_regex_matching_nothing(llama_tied):
    _refuse(llama_tied, "matches no token", preset=None, token_pattern=r"<\|audio_\d+\|>")
    _refuse(llama_tied, r"preset 'orpheus'.*matches no token", preset="orpheus")


def test_refuse_pattern_without_tokenizer(llama_tied):
    _refuse(llama_tied, "needs a tokenizer", tokenizer=None)


def test_special_tokens_need_permission(llama_tied):
    bos, eos = llama_tied.tokenizer.bos_token_id, llama_tied.tokenizer.eos_token_id
    ids = [bos, eos, *llama_tied.selected_ids[:6].tolist()]
    _refuse(llama_tied, r"special tokens \[.*\] \(2 in all\).*allow_special_tokens=True", preset=None, token_ids=ids)
    old = embedding(llama_tied.model).weight.detach().clone()
    plan = merge(llama_tied, preset=None, token_ids=ids, allow_special_tokens=True, n_clusters=1).plan
    assert plan.num_clusters == 1 and plan.selected_ids.tolist() == sorted(ids)
    torch.testing.assert_close(embedding(llama_tied.model).weight[plan.old_to_new[bos]], old[ids].mean(0))


def test_refuse_config_only_special_ids():
    # pad id known only from the model config (no tokenizer) is protected too
    bundle = build_whisper()
    _refuse(bundle, r"special tokens \[2, 3\]", token_id_range=(0, 8), tokenizer=None)


def test_refuse_more_clusters_than_rows(llama_tied):
    _refuse(llama_tied, r"n_clusters=49 is more than the 48 selected rows; use n_clusters <= 48", n_clusters=49)


def test_refuse_missing_counts(llama_tied):
    _refuse(llama_tied, "need calibration counts: pass token_counts=", merge_rule="weighted_mean")
    _refuse(llama_tied, "need calibration counts", logit_correction="frequency")
    _refuse(llama_tied, "token_counts has 74 entries but the vocabulary has 75", counts=torch.ones(74))
    _refuse(llama_tied, "token_counts must be non-negative", counts=-torch.ones(75))


def test_refuse_agglomerative_over_row_limit(llama_tied):
    _refuse(llama_tied, "Agglomerative clustering of 48 rows", method="agglomerative", agglomerative_max_rows=47)


@pytest.mark.parametrize("builder", [build_custom, build_whisper], ids=["untied", "tied"])
def test_refuse_dropping_every_token(builder):
    bundle = builder()
    everything = {"token_id_range": (0, bundle.vocab_size), "allow_special_tokens": True}
    _refuse(bundle, "covers all .* ids, so lm_head='drop' would leave the model no token", lm_head="drop", **everything)
    assert merge(bundle, lm_head="merge", **everything).plan.num_rows == bundle.n_centers


def test_base_model_without_head(llama_tied):
    base = llama_tied.model.model  # LlamaModel: no LM head
    bundle = dataclasses.replace(llama_tied, model=base)
    _refuse(bundle, r"LlamaModel has no output embeddings.*lm_head='keep' to merge inputs only")
    _refuse(bundle, "has no output embeddings", lm_head="drop")
    _refuse(bundle, "similarity_source='output' needs an LM head", lm_head="keep", similarity_source="output")
    ids = sample_ids(llama_tied)
    plan = merge(bundle, lm_head="keep").plan
    assert isinstance(base.embed_tokens, MergedEmbedding)
    hidden = base(input_ids=ids).last_hidden_state
    assert hidden.shape == (*ids.shape, 32)
    assert plan.statistics["rows_after"] == plan.num_rows


class ScaledEmbedding(nn.Embedding):
    def forward(self, input_ids):
        return super().forward(input_ids) * 2.0


class PlainSubclass(nn.Embedding):
    pass


class FancyLinear(nn.Linear):
    def forward(self, hidden):
        return super().forward(hidden).clamp(-1, 1)


def _replace_embedding(model, cls):
    old = model.model.embed_tokens
    new = cls(old.num_embeddings, old.embedding_dim, padding_idx=old.padding_idx)
    new.weight = old.weight  # keeps the tie
    model.model.embed_tokens = new


def test_refuse_custom_forward_embedding(llama_tied):
    _replace_embedding(llama_tied.model, ScaledEmbedding)
    _refuse(llama_tied, "model.embed_tokens is a ScaledEmbedding, which hf_token_merge cannot rewrite")


def test_plain_embedding_subclass_is_accepted(llama_tied):
    _replace_embedding(llama_tied.model, PlainSubclass)
    assert merge(llama_tied).plan.num_clusters == 8


def test_refuse_custom_forward_head(llama_untied):
    old = llama_untied.model.lm_head
    fancy = FancyLinear(old.in_features, old.out_features, bias=False)
    fancy.weight = old.weight
    llama_untied.model.lm_head = fancy
    _refuse(llama_untied, "lm_head is a FancyLinear, which hf_token_merge cannot rewrite")


def test_refuse_integer_weights(llama_untied):
    embed = llama_untied.model.model.embed_tokens
    embed.weight = nn.Parameter((embed.weight * 100).to(torch.int8), requires_grad=False)
    _refuse(llama_untied, r"model.embed_tokens.weight has dtype torch.int8; merge the unquantized model")


def test_refuse_embedding_shared_across_paths():
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(config).eval()
    bundle = Bundle(model, None, torch.arange(10, 40), 5, (10, 40))
    # encoder/decoder embed_tokens reuse `shared`'s weight: merging only `shared` would leave them full-size
    _refuse(bundle, r"input embedding 'shared' is also used as \['encoder.embed_tokens', 'decoder.embed_tokens'\]")
    # the same embedding module registered at a second path is refused too
    llama = build_llama()
    llama.model.extra_embedding = llama.model.model.embed_tokens
    _refuse(llama, r"'model.embed_tokens' is also used as \['extra_embedding'\]")


def test_refuse_quantized_model(llama_tied):
    llama_tied.model.config.quantization_config = {"quant_method": "bitsandbytes"}
    _refuse(llama_tied, r"This model is quantized \(bitsandbytes\); merge the unquantized model first")


def test_refuse_second_merge(llama_tied):
    merge(llama_tied)
    _refuse(llama_tied, "already token-merged; merging twice is not supported")
    # even without the config record, the merged module itself is recognised
    llama_tied.model.config.quantization_config = None
    _refuse(llama_tied, "already token-merged")


def test_refuse_plan_from_another_model(llama_tied):
    other = build_llama(tied=True, n_speech=40)
    plan = plan_token_merge(other.model, merge_config(other), tokenizer=other.tokenizer, show_progress=False)
    before = snapshot(llama_tied.model)
    with pytest.raises(ValueError, match="plan was made for a vocabulary of 67 rows but model.embed_tokens has 75"):
        apply_token_merge(llama_tied.model, plan)
    assert_unchanged(llama_tied.model, before)
    untied = build_llama(tied=False)
    plan = plan_token_merge(untied.model, merge_config(untied), tokenizer=untied.tokenizer, show_progress=False)
    with pytest.raises(ValueError, match="plan was made for a model with untied embeddings; this one is tied"):
        apply_token_merge(llama_tied.model, plan)
    assert_unchanged(llama_tied.model, before)


def test_failed_swap_is_rolled_back(llama_untied, monkeypatch):
    import hf_token_merge.remap.apply as apply_module

    real_swap, calls = apply_module.swap_module, []

    def failing_swap(model, name, new):
        calls.append(name)
        if len(calls) == 2:  # the LM head swap fails after the embedding was swapped
            raise RuntimeError("simulated failure")
        return real_swap(model, name, new)

    monkeypatch.setattr(apply_module, "swap_module", failing_swap)
    before = snapshot(llama_untied.model)
    with pytest.raises(RuntimeError, match="simulated failure"):
        merge(llama_untied)
    assert calls == ["model.embed_tokens", "lm_head", "model.embed_tokens"]
    assert_unchanged(llama_untied.model, before)


def test_refuse_wrong_argument_type(llama_tied):
    with pytest.raises(TypeError, match="Expected a TokenMergeConfig or MergePlan, got dict"):
        apply_token_merge(llama_tied.model, {"preset": "llasa"})


def test_refuse_offloaded_embedding(tmp_path):
    from accelerate import dispatch_model

    bundle = build_llama(tied=False)
    device_map = {
        "model.embed_tokens": "disk",
        "model.layers": "cpu",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    bundle.model = dispatch_model(bundle.model, device_map, offload_dir=str(tmp_path))
    _refuse(bundle, "model.embed_tokens.weight is on the meta device")


def test_merge_dispatched_model_keeps_hooks():
    from accelerate import dispatch_model

    reference = build_llama(tied=False)
    merge(reference)
    bundle = build_llama(tied=False)
    device_map = {name: "cpu" for name in ("model.embed_tokens", "model.layers", "model.norm", "lm_head")}
    device_map["model.rotary_emb"] = "cpu"
    model = dispatch_model(bundle.model, device_map, force_hooks=True)
    assert hasattr(model.model.embed_tokens, "_hf_hook")
    merge(bundle)
    assert isinstance(model.model.embed_tokens, MergedEmbedding)
    assert hasattr(model.model.embed_tokens, "_hf_hook") and hasattr(model.lm_head, "_hf_hook")
    ids = sample_ids(bundle)
    assert torch.equal(logits_of(model, ids), logits_of(reference.model, ids))


# --- plans -----------------------------------------------------------------------------------------------


def test_plan_does_not_touch_the_model(llama_untied):
    before = snapshot(llama_untied.model)
    plan = plan_token_merge(
        llama_untied.model, merge_config(llama_untied), tokenizer=llama_untied.tokenizer, show_progress=False
    )
    assert_unchanged(llama_untied.model, before)
    assert plan.statistics["selected_rows"] == 48
    assert plan.statistics["clusters"] == 8
    assert plan.statistics["rows_removed"] == 40
    assert plan.statistics["largest_cluster"] == 6
    assert plan.statistics["singleton_clusters"] == 0
    assert plan.statistics["mean_cosine_to_merged_row"] > 0.9999
    applied = apply_token_merge(llama_untied.model, plan)
    assert applied.plan is plan
    assert set(applied.to_dict()) >= {"parameters_before", "bytes_after", "rows_after"}
    assert "merged 48 rows into 8 (75 -> 35 rows)" in str(applied)


def test_apply_plan_equals_apply_config():
    first, second = build_llama(tied=False), build_llama(tied=False)
    config = merge_config(first, merge_rule="mean", logit_correction="uniform")
    plan = plan_token_merge(first.model, config, tokenizer=first.tokenizer, show_progress=False)
    apply_token_merge(first.model, plan)
    apply_token_merge(second.model, config, tokenizer=second.tokenizer, show_progress=False)
    ids = sample_ids(first)
    assert torch.equal(logits_of(first.model, ids), logits_of(second.model, ids))


def test_target_ratio_and_thresholds_on_a_model(llama_tied):
    for kwargs in (
        {"target_ratio": 8 / 48},
        {"method": "threshold", "similarity_threshold": 0.99},
        {"method": "agglomerative", "similarity_threshold": 0.99},
        {"method": "threshold", "metric": "euclidean", "distance_threshold": 0.1},
    ):
        plan = plan_token_merge(
            llama_tied.model, merge_config(llama_tied, **kwargs), tokenizer=llama_tied.tokenizer, show_progress=False
        )
        assert torch.equal(plan.cluster_of_selected, llama_tied.planted_labels), kwargs


def test_deep_copy_of_merged_model_is_independent(llama_untied):
    merge(llama_untied)
    twin = copy.deepcopy(llama_untied.model)
    ids = sample_ids(llama_untied)
    assert torch.equal(logits_of(twin, ids), logits_of(llama_untied.model, ids))
    with torch.no_grad():
        twin.model.embed_tokens.weight.zero_()
    assert embedding(llama_untied.model).weight.abs().sum() > 0


# --- 12. count_tokens ------------------------------------------------------------------------------------


def test_count_tokens():
    counts = count_tokens([[1, 2, 2], torch.tensor([[3, 2], [0, 0]]), []], 5)
    assert counts.dtype == torch.long
    assert counts.tolist() == [2, 1, 3, 1, 0]
    assert count_tokens(torch.tensor([4, 4, 1]), 6).tolist() == [0, 1, 0, 0, 2, 0]
    sequences = [torch.randint(0, 50, (n,), generator=torch.Generator().manual_seed(n)) for n in (3, 30, 0, 7)]
    expected = torch.zeros(50, dtype=torch.long)
    for sequence in sequences:
        for i in sequence.tolist():
            expected[i] += 1
    assert torch.equal(count_tokens(sequences, 50), expected)


@pytest.mark.parametrize("bad", [[[0, 5]], [[-1, 2]], torch.tensor([7])])
def test_count_tokens_rejects_out_of_range_ids(bad):
    with pytest.raises(ValueError, match=r"calibration ids must lie in \[0, 5\)"):
        count_tokens(bad, 5)


# --- storage reuse -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("builder_kwargs", [{"tied": True}, {"tied": False}], ids=["tied", "untied"])
@pytest.mark.parametrize("lm_head", ["merge", "drop"])
def test_reuse_storage_gives_the_same_model_inside_the_original_allocation(builder_kwargs, lm_head):
    reused, fresh = build_llama(**builder_kwargs), build_llama(**builder_kwargs)
    original_pointer = embedding(reused.model).weight.data_ptr()
    plan = merge(reused, lm_head=lm_head).plan
    apply_token_merge(fresh.model, plan, reuse_storage=False)

    assert embedding(reused.model).weight.data_ptr() == original_pointer  # no new table was allocated
    assert embedding(fresh.model).weight.data_ptr() != original_pointer
    for name, tensor in fresh.model.state_dict().items():
        assert torch.equal(reused.model.state_dict()[name], tensor), name
    ids = sample_ids(reused)
    assert torch.equal(logits_of(reused.model, ids), logits_of(fresh.model, ids))


def test_without_reuse_the_original_tensors_are_left_intact(llama_untied):
    old_embedding = embedding(llama_untied.model).weight
    old_head = head(llama_untied.model).weight
    before = old_embedding.detach().clone(), old_head.detach().clone()
    apply_token_merge(
        llama_untied.model,
        merge_config(llama_untied),
        tokenizer=llama_untied.tokenizer,
        reuse_storage=False,
        show_progress=False,
    )
    assert torch.equal(old_embedding, before[0])
    assert torch.equal(old_head, before[1])


def test_a_merge_whose_index_maps_cost_more_than_the_rows_saved_warns(llama_tied):
    bundle = llama_tied
    pair = bundle.selected_ids[:2].tolist()  # two rows into one: saves one row, adds maps over the whole vocabulary
    config = TokenMergeConfig(token_ids=pair, n_clusters=1)
    with pytest.warns(
        UserWarning, match=r"makes the model larger: it saves 128 bytes of rows, but its index maps"
    ) as record:
        result = apply_token_merge(bundle.model, config, show_progress=False)
    vocab = result.plan.vocab_size
    maps = 3 * 4 * vocab  # embedding index_map, head index_map (int32) and logit_offset (float32)
    assert f"index maps take {maps:,} bytes" in str(record[0].message)
    assert f"({result.bytes_before:,} -> {result.bytes_after:,} bytes in all)" in str(record[0].message)
    assert result.bytes_after - result.bytes_before == maps - 128


def test_a_merge_that_pays_does_not_warn(llama_tied):
    bundle = llama_tied
    config = TokenMergeConfig(**bundle.selection, n_clusters=bundle.n_centers)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = apply_token_merge(bundle.model, config, tokenizer=bundle.tokenizer, show_progress=False)
    assert result.bytes_after < result.bytes_before


@pytest.mark.parametrize("given_plan", [False, True])
def test_embeddings_are_located_once_per_apply(llama_untied, monkeypatch, given_plan):
    import hf_token_merge.remap.apply as apply_module
    import hf_token_merge.remap.plan as plan_module

    config = TokenMergeConfig(preset="llasa", n_clusters=4)
    plan = plan_token_merge(llama_untied.model, config, tokenizer=llama_untied.tokenizer) if given_plan else None
    calls = []
    real_locate = plan_module.locate_embeddings

    def counting_locate(model, config):
        calls.append(type(model).__name__)
        return real_locate(model, config)

    monkeypatch.setattr(apply_module, "locate_embeddings", counting_locate)
    monkeypatch.setattr(plan_module, "locate_embeddings", counting_locate)
    apply_token_merge(llama_untied.model, plan or config, tokenizer=llama_untied.tokenizer)
    assert calls == ["LlamaForCausalLM"]


def test_merging_allowed_special_tokens_warns(llama_untied):
    bos = llama_untied.model.config.bos_token_id
    config = TokenMergeConfig(token_ids=[bos, 21, 22], n_clusters=1, allow_special_tokens=True)
    with pytest.warns(
        UserWarning, match=rf"allow_special_tokens=True lets special tokens \[{bos}\] \(1 in all\) merge"
    ):
        plan_token_merge(llama_untied.model, config, tokenizer=llama_untied.tokenizer)


def test_planning_and_applying_log_their_decisions(llama_untied, caplog):
    config = TokenMergeConfig(preset="llasa", n_clusters=4)
    with caplog.at_level("INFO", logger="hf_token_merge"):
        apply_token_merge(llama_untied.model, config, tokenizer=llama_untied.tokenizer, show_progress=False)
    messages = [(record.name, record.getMessage()) for record in caplog.records]
    assert messages == [
        ("hf_token_merge.remap.plan", "clustering 48 selected rows with method='kmeans'"),
        ("hf_token_merge.remap.plan", "plan: 48 selected rows -> 4 merged rows (75 -> 31 embedding rows)"),
        ("hf_token_merge.remap.apply", messages[2][1]),
    ]
    assert messages[2][1].startswith("merge applied: 75 -> 31 embedding rows, ")


def test_cosine_medoids_of_large_problems_match_the_loop(monkeypatch):
    """The vectorised cosine medoids (large problems) pick the loop's medoid, pairs and singletons included."""
    plan_module = importlib.import_module("hf_token_merge.remap.plan")
    generator = torch.Generator().manual_seed(0)
    rows = torch.nn.functional.normalize(torch.randn(200, 16, generator=generator), dim=1)
    labels = torch.randint(0, 40, (200,), generator=generator)
    labels[:3] = torch.tensor([40, 41, 41])  # a singleton and a pair
    looped = plan_module._medoids(rows, labels, 42, "cosine", 7)
    monkeypatch.setattr(plan_module, "LARGE_WORK", 1)
    vectorised = plan_module._medoids(rows, labels, 42, "cosine", 7)
    assert torch.equal(vectorised, looped)
    assert vectorised[40] == 0 and vectorised[41] == 1
