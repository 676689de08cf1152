"""Property tests of the plan's index maps on random small vocabularies, selections and cluster counts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from torch import nn

from hf_token_merge import MergedEmbedding, MergedLMHead, TokenMergeConfig, apply_token_merge, plan_token_merge
from hf_token_merge.clustering import canonical_labels

PROPERTY_SETTINGS = settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])


class TinyLM(nn.Module):
    """A bare module (no transformers config): embedding and head found through config names."""

    def __init__(self, vocab_size: int, width: int, tied: bool, seed: int, duplicates: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(vocab_size, width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        with torch.no_grad():
            # a few distinct rows repeated: many exact duplicates, the hard case for k-means
            distinct = torch.randn(max(1, duplicates), width, generator=generator)
            pick = torch.randint(0, distinct.shape[0], (vocab_size,), generator=generator)
            self.embed.weight.copy_(distinct[pick] + 0.01 * torch.randn(vocab_size, width, generator=generator))
            self.head.weight.copy_(torch.randn(vocab_size, width, generator=generator))
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.tanh(self.embed(ids)))


@st.composite
def merge_cases(draw):
    vocab_size = draw(st.integers(2, 40))
    selected = draw(st.lists(st.integers(0, vocab_size - 1), min_size=1, max_size=vocab_size, unique=True))
    k = draw(st.integers(1, len(selected)))
    tied = draw(st.booleans())
    lm_head = draw(st.sampled_from(["merge", "drop"] if tied else ["merge", "drop", "keep"]))
    correction = draw(st.sampled_from(["none", "uniform", "frequency"]))
    counts = torch.tensor(draw(st.lists(st.integers(0, 50), min_size=vocab_size, max_size=vocab_size)))
    config = TokenMergeConfig(
        token_ids=selected,
        n_clusters=k,
        metric=draw(st.sampled_from(["cosine", "euclidean"])),
        merge_rule=draw(st.sampled_from(["mean", "weighted_mean", "medoid"])),
        lm_head=lm_head,
        logit_correction=correction,
        projection_dim=draw(st.sampled_from([None, 2])),
        block_size=draw(st.integers(1, 16)),
        seed=draw(st.integers(0, 3)),
        input_embedding_name="embed",
        output_embedding_name="head",
    )
    model = TinyLM(
        vocab_size,
        width=draw(st.integers(1, 6)),
        tied=tied,
        seed=draw(st.integers(0, 10**6)),
        duplicates=draw(st.integers(1, 6)),
    )
    return model, config, counts


def _plan(model, config, counts):
    if config.lm_head == "drop" and len(set(config.token_ids)) == model.embed.num_embeddings:
        # dropping every id would leave nothing to generate: refused (tested in test_apply), not a plan
        with pytest.raises(ValueError, match="lm_head='drop' would leave the model no token to generate"):
            plan_token_merge(model, config, token_counts=counts, show_progress=False)
        reject()
    return plan_token_merge(model, config, token_counts=counts, show_progress=False)


@PROPERTY_SETTINGS
@given(merge_cases())
def test_index_map_invariants(case):
    model, config, counts = case
    plan = _plan(model, config, counts)
    vocab_size, selected = plan.vocab_size, plan.selected_ids
    old_to_new, labels = plan.old_to_new, plan.cluster_of_selected

    assert torch.equal(selected, torch.tensor(sorted(set(config.token_ids))))
    assert plan.num_clusters == config.n_clusters  # k-means gives exactly k clusters
    assert torch.equal(labels, canonical_labels(labels))
    assert plan.num_rows == vocab_size - len(selected) + plan.num_clusters

    # total, in range, surjective
    assert old_to_new.shape == (vocab_size,)
    assert old_to_new.dtype == torch.long
    assert int(old_to_new.min()) >= 0 and int(old_to_new.max()) < plan.num_rows
    assert torch.equal(torch.unique(old_to_new), torch.arange(plan.num_rows))

    unselected = torch.ones(vocab_size, dtype=torch.bool)
    unselected[selected] = False
    kept_rows = old_to_new[unselected]
    # unselected ids keep distinct rows of their own, in id order, shared with no cluster
    assert torch.equal(kept_rows, torch.sort(kept_rows).values)
    assert len(torch.unique(kept_rows)) == len(kept_rows)
    assert not torch.isin(plan.cluster_rows, kept_rows).any()
    # one row per cluster, shared by exactly its members
    assert torch.equal(old_to_new[selected], plan.cluster_rows[labels])
    assert len(torch.unique(plan.cluster_rows)) == plan.num_clusters
    # compact ordering: rows are ordered by the smallest original id they hold, so every id below the
    # first selected id keeps its number
    first = int(selected[0])
    assert torch.equal(old_to_new[:first], torch.arange(first))
    smallest_id = torch.full((plan.num_rows,), vocab_size).scatter_reduce(
        0, old_to_new, torch.arange(vocab_size), "amin"
    )
    assert (smallest_id[1:] > smallest_id[:-1]).all()
    for c in range(plan.num_clusters):
        members = plan.members(c).tolist()
        assert int(smallest_id[plan.cluster_rows[c]]) == members[0]
        assert int(plan.representative_ids[c]) in members
        assert int(plan.medoid_ids[c]) in members
        if config.logit_correction != "frequency":
            assert int(plan.representative_ids[c]) == members[0]

    # member weights and log shares
    mass = torch.zeros(plan.num_clusters, dtype=torch.float64).index_add_(0, labels, plan.member_weights.double())
    torch.testing.assert_close(mass, torch.ones_like(mass))
    if config.logit_correction == "none":
        assert (plan.member_log_share == 0).all()
    else:
        shares = torch.zeros(plan.num_clusters, dtype=torch.float64)
        shares.index_add_(0, labels, plan.member_log_share.double().exp())
        torch.testing.assert_close(shares, torch.ones_like(shares))


@PROPERTY_SETTINGS
@given(merge_cases())
def test_head_layout_invariants(case):
    model, config, counts = case
    plan = _plan(model, config, counts)
    rows, index, offset = plan.head_layout()
    selected = plan.selected_ids
    unselected = torch.ones(plan.vocab_size, dtype=torch.bool)
    unselected[selected] = False
    assert index.shape == offset.shape == (plan.vocab_size,)
    assert int(index.min()) >= 0 and int(index.max()) < rows
    if config.lm_head == "merge":
        assert rows == plan.num_rows
        assert torch.equal(index, plan.old_to_new)
        assert (offset[unselected] == 0).all()
        assert torch.equal(offset[selected], plan.member_log_share)
    elif config.lm_head == "drop":
        assert torch.isneginf(offset[selected]).all()
        assert (offset[unselected] == 0).all()
        if plan.tied:
            assert rows == plan.num_rows
            assert torch.equal(index[unselected], plan.old_to_new[unselected])
        else:
            assert rows == int(unselected.sum())
            source = plan.head_source_ids()
            assert torch.equal(source[index[unselected]], unselected.nonzero().flatten())
    else:
        assert rows == plan.vocab_size
        assert torch.equal(index, torch.arange(plan.vocab_size))


@PROPERTY_SETTINGS
@given(merge_cases(), st.integers(0, 10**6))
def test_applied_modules_follow_the_plan(case, seed):
    model, config, counts = case
    old_input = model.embed.weight.detach().clone()
    plan = _plan(model, config, counts)
    apply_token_merge(model, plan)
    assert isinstance(model.embed, MergedEmbedding)
    vocab_size = plan.vocab_size
    ids = torch.randint(0, vocab_size, (3, 5), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(model.embed(ids), model.embed.weight[plan.old_to_new[ids]])
    unselected = torch.ones(vocab_size, dtype=torch.bool)
    unselected[plan.selected_ids] = False
    assert torch.equal(model.embed.weight[plan.old_to_new[unselected]], old_input[unselected])
    with torch.no_grad():
        logits = model(ids)
    assert logits.shape == (3, 5, vocab_size)
    if config.lm_head == "keep":
        assert type(model.head) is nn.Linear
        return
    assert isinstance(model.head, MergedLMHead)
    assert (model.head.weight is model.embed.weight) == plan.tied
    if config.lm_head == "drop":
        assert torch.isneginf(logits[..., plan.selected_ids]).all()
        assert torch.isfinite(logits[..., unselected]).all()
    else:
        log_probabilities = logits.double().log_softmax(-1)
        assert torch.isfinite(log_probabilities).all()
        if config.logit_correction != "none":
            total = log_probabilities.exp().sum(-1)
            torch.testing.assert_close(total, torch.ones_like(total))
