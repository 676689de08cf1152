"""Clustering: planted clusters are recovered exactly, and each method keeps its own promise."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from hf_token_merge import TokenMergeConfig
from hf_token_merge.clustering import canonical_labels, cluster_rows, prepare_rows, target_cluster_count
from hf_token_merge.clustering.agglomerative import average_linkage
from hf_token_merge.clustering.kmeans import fill_empty_clusters, kmeans, kmeans_plus_plus, pca_project
from hf_token_merge.clustering.threshold import leader_clustering


def planted(n=48, k=8, width=32, noise=1e-3, seed=0, scale=1.0):
    """Rows `centers[j % k] + noise`; the canonical labels are `arange(n) % k`."""
    generator = torch.Generator().manual_seed(seed)
    centers = scale * torch.randn(k, width, generator=generator)
    rows = centers[torch.arange(n) % k] + noise * torch.randn(n, width, generator=generator)
    return rows, torch.arange(n) % k


def shuffled_planted(n=60, k=6, width=32, seed=0):
    """Planted rows in a random order; returns rows and their canonical labels."""
    rows, labels = planted(n, k, width, seed=seed)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 100))
    return rows[perm], canonical_labels(labels[perm])


def config(**kwargs):
    return TokenMergeConfig(token_ids=[0], **kwargs)


# --- canonical labels ----------------------------------------------------------------------------


def test_canonical_labels_order_by_first_member():
    labels = torch.tensor([5, 5, 2, 9, 2, 0, 9])
    assert canonical_labels(labels).tolist() == [0, 0, 1, 2, 1, 3, 2]


def test_canonical_labels_are_invariant_to_label_names():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 7, (50,), generator=generator)
    renamed = torch.randperm(100, generator=generator)[labels]  # injective relabelling with gaps
    canonical = canonical_labels(labels)
    assert torch.equal(canonical_labels(renamed), canonical)
    assert torch.equal(canonical_labels(canonical), canonical)
    # first occurrences of 0..k-1 appear in increasing position order
    firsts = [int((canonical == c).nonzero()[0]) for c in range(int(canonical.max()) + 1)]
    assert firsts == sorted(firsts)
    # same partition as the input
    for i in range(50):
        assert torch.equal(canonical == canonical[i], labels == labels[i])


# --- k-means -------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("projection_dim", [None, 8])
@pytest.mark.parametrize("seed", [0, 1])
def test_kmeans_recovers_planted_clusters(metric, projection_dim, seed):
    rows, expected = shuffled_planted(seed=seed)
    cfg = config(n_clusters=6, metric=metric, projection_dim=projection_dim, seed=seed)
    labels = cluster_rows(prepare_rows(rows, metric), cfg, show_progress=False)
    assert torch.equal(labels, expected)


def test_kmeans_projection_is_used_when_rows_are_wider(monkeypatch):
    module = importlib.import_module("hf_token_merge.clustering.kmeans")  # the package re-exports kmeans()

    calls = []
    original = module.pca_project

    def spy(rows, dim, block_size, *args, **kwargs):
        calls.append((rows.shape, dim))
        return original(rows, dim, block_size, *args, **kwargs)

    monkeypatch.setattr(module, "pca_project", spy)
    rows, expected = shuffled_planted(width=32)
    labels = kmeans(prepare_rows(rows, "cosine"), 6, "cosine", projection_dim=4, block_size=7, show_progress=False)
    assert calls == [(torch.Size([60, 32]), 4)]
    assert torch.equal(canonical_labels(labels), expected)
    calls.clear()
    kmeans(prepare_rows(rows, "cosine"), 6, "cosine", projection_dim=32, show_progress=False)
    assert calls == []  # not wider than the projection: full-space search


def test_pca_projection_keeps_the_top_axes():
    generator = torch.Generator().manual_seed(0)
    # variance in two known directions of a 6-d space: centred, uncorrelated coordinates of spread 50 and 20
    centred = torch.randn(200, 2, generator=generator)
    coords = torch.linalg.qr(centred - centred.mean(0)).Q * torch.tensor([50.0, 20.0])
    rows = torch.zeros(200, 6)
    rows[:, 1], rows[:, 4] = coords[:, 0], coords[:, 1]
    projected = pca_project(rows + 3.0, 2, block_size=17)
    assert torch.allclose(projected.abs(), coords.abs(), atol=1e-4)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_kmeans_gives_exactly_k_nonempty_clusters_with_duplicates(metric):
    base = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    rows = prepare_rows(base[torch.arange(30) % 3], metric)  # only 3 distinct rows
    for k in (1, 3, 5, 30):
        labels = kmeans(rows, k, metric, projection_dim=None, show_progress=False)
        assert labels.min() == 0 and labels.max() == k - 1
        assert (torch.bincount(labels, minlength=k) > 0).all(), k
    identical = prepare_rows(torch.ones(10, 4), metric)
    labels = kmeans(identical, 4, metric, show_progress=False)
    assert (torch.bincount(labels, minlength=4) > 0).all()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_kmeans_plus_plus_picks_distinct_rows_when_few_rows_are_left(metric):
    # 100 copies of one row and a single other row; k=60 takes 2 centroids per round, so after the first
    # round fewer rows have positive D^2 weight than a round asks for.
    rows = torch.zeros(101, 4)
    rows[:, 0] = 1.0
    rows[100] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    rows = prepare_rows(rows, metric)
    for seed in range(120):
        chosen = kmeans_plus_plus(rows, 60, metric, torch.Generator().manual_seed(seed))
        assert len(chosen) == 60
        assert len(set(chosen.tolist())) == 60, seed


def test_kmeans_k_equal_n_gives_singletons():
    rows, _ = planted(n=12, k=3)
    labels = kmeans(prepare_rows(rows, "euclidean"), 12, "euclidean", show_progress=False)
    assert sorted(labels.tolist()) == list(range(12))


def test_kmeans_is_seeded():
    rows = prepare_rows(torch.randn(80, 16, generator=torch.Generator().manual_seed(3)), "cosine")
    first = kmeans(rows, 10, "cosine", seed=4, show_progress=False)
    assert torch.equal(first, kmeans(rows, 10, "cosine", seed=4, show_progress=False))


def test_fill_empty_clusters_moves_worst_rows_of_large_clusters():
    labels = torch.tensor([0, 0, 0, 1, 1, 3])
    best = torch.tensor([0.9, 0.1, 0.8, 0.5, 0.7, 0.0])
    filled = fill_empty_clusters(labels, best, 5)
    # cluster 2 takes row 1 (worst fit among clusters with >1 member), cluster 4 takes row 3
    assert filled.tolist() == [0, 2, 0, 4, 1, 3]
    assert labels.tolist() == [0, 0, 0, 1, 1, 3]  # input untouched


# --- threshold (leader) clustering ---------------------------------------------------------------


@pytest.mark.parametrize(("metric", "threshold"), [("cosine", 0.99), ("euclidean", 0.5)])
@pytest.mark.parametrize("block_size", [4096, 7])
def test_threshold_recovers_planted_clusters(metric, threshold, block_size):
    rows, expected = shuffled_planted()
    stop = {"similarity_threshold": threshold} if metric == "cosine" else {"distance_threshold": threshold}
    cfg = config(method="threshold", metric=metric, block_size=block_size, **stop)
    labels = cluster_rows(prepare_rows(rows, metric), cfg, show_progress=False)
    assert torch.equal(labels, expected)


def _leader_invariants(rows, labels, order, metric, threshold):
    """Every member within threshold of its leader (first visited member); no two leaders within it."""
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    leaders = []
    for cluster in range(int(labels.max()) + 1):
        members = (labels == cluster).nonzero().flatten()
        assert len(members), cluster
        leader = members[rank[members].argmin()]
        leaders.append(int(leader))
        if metric == "cosine":
            assert (rows[members] @ rows[leader] >= threshold - 1e-5).all()
        else:
            assert ((rows[members] - rows[leader]).norm(dim=1) <= threshold + 1e-5).all()
    leader_rows = rows[leaders]
    if metric == "cosine":
        gaps = leader_rows @ leader_rows.T
        gaps.fill_diagonal_(-2.0)
        assert (gaps < threshold + 1e-5).all()
    else:
        gaps = torch.cdist(leader_rows, leader_rows)
        gaps.fill_diagonal_(float("inf"))
        assert (gaps > threshold - 1e-5).all()
    return leaders


@pytest.mark.parametrize(("metric", "threshold"), [("cosine", 0.3), ("euclidean", 3.5)])
@pytest.mark.parametrize("block_size", [1, 13, 4096])
def test_threshold_invariant_on_random_rows(metric, threshold, block_size):
    generator = torch.Generator().manual_seed(5)
    rows = prepare_rows(torch.randn(150, 8, generator=generator), metric)
    order = torch.randperm(150, generator=generator)
    labels = leader_clustering(rows, metric, threshold, order=order, block_size=block_size, show_progress=False)
    k = int(labels.max()) + 1
    assert 1 < k < 150  # the threshold actually merges something and keeps some apart
    leaders = _leader_invariants(rows, labels, order, metric, threshold)
    # clusters are numbered in order of leader creation
    rank = torch.empty_like(order)
    rank[order] = torch.arange(150)
    assert rank[leaders].tolist() == sorted(rank[leaders].tolist())


def test_threshold_visits_frequent_rows_first():
    # b lies between a and c: a-b and b-c are within 1.0, a-c is not.
    rows = torch.tensor([[0.0, 0.0], [0.9, 0.0], [1.8, 0.0]])
    cfg = config(method="threshold", metric="euclidean", distance_threshold=1.0)
    assert cluster_rows(rows, cfg, show_progress=False).tolist() == [0, 0, 1]
    counts = torch.tensor([1.0, 10.0, 1.0])
    assert cluster_rows(rows, cfg, counts=counts, show_progress=False).tolist() == [0, 0, 0]


def test_threshold_one_keeps_distinct_rows_apart():
    rows = prepare_rows(torch.randn(40, 16, generator=torch.Generator().manual_seed(0)), "cosine")
    labels = cluster_rows(rows, config(method="threshold", similarity_threshold=1.0), show_progress=False)
    assert labels.tolist() == list(range(40))


# --- agglomerative ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stop",
    [
        {"n_clusters": 6},
        {"n_clusters": 6, "metric": "euclidean"},
        {"similarity_threshold": 0.99},
        {"distance_threshold": 0.5, "metric": "euclidean"},
    ],
)
def test_agglomerative_recovers_planted_clusters(stop):
    rows, expected = shuffled_planted()
    cfg = config(method="agglomerative", block_size=16, **stop)
    labels = cluster_rows(prepare_rows(rows, cfg.metric), cfg, show_progress=False)
    assert torch.equal(labels, expected)


def _scipy_labels(rows, metric, n_clusters=None, max_distance=None):
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    tree = hierarchy.linkage(rows.double().numpy(), method="average", metric=metric)
    if n_clusters is not None:
        flat = hierarchy.fcluster(tree, t=n_clusters, criterion="maxclust")
    else:
        flat = hierarchy.fcluster(tree, t=max_distance, criterion="distance")
    return canonical_labels(torch.as_tensor(flat))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_agglomerative_matches_textbook_average_linkage(metric):
    rows = prepare_rows(torch.randn(60, 5, generator=torch.Generator().manual_seed(7)), metric)
    for k in (1, 4, 17, 59):
        ours = canonical_labels(average_linkage(rows, metric, n_clusters=k, block_size=8, show_progress=False))
        assert torch.equal(ours, _scipy_labels(rows, metric, n_clusters=k)), k
    distance = 0.5 if metric == "cosine" else 1.2
    ours = canonical_labels(average_linkage(rows, metric, max_distance=distance, show_progress=False))
    reference = _scipy_labels(rows, metric, max_distance=distance)
    assert 1 < int(reference.max()) + 1 < 60
    assert torch.equal(ours, reference)


def test_agglomerative_row_limit():
    rows, _ = planted(n=20, k=4)
    cfg = config(method="agglomerative", n_clusters=4, agglomerative_max_rows=19)
    with pytest.raises(ValueError, match=r"Agglomerative clustering of 20 rows.*use method='kmeans' or 'threshold'"):
        cluster_rows(prepare_rows(rows, "cosine"), cfg, show_progress=False)
    cfg = config(method="agglomerative", n_clusters=4, agglomerative_max_rows=20)
    assert int(cluster_rows(prepare_rows(rows, "cosine"), cfg, show_progress=False).max()) == 3


# --- stopping and preparation ----------------------------------------------------------------------


def test_target_cluster_count():
    assert target_cluster_count(config(target_ratio=0.125), 65536) == 8192
    assert target_cluster_count(config(target_ratio=0.3), 10) == 3
    assert target_cluster_count(config(target_ratio=0.31), 10) == math.ceil(3.1)
    assert target_cluster_count(config(target_ratio=0.01), 10) == 1
    assert target_cluster_count(config(n_clusters=10), 10) == 10
    assert target_cluster_count(config(method="threshold", similarity_threshold=0.9), 10) is None
    with pytest.raises(ValueError, match=r"n_clusters=11 is more than the 10 selected rows; use n_clusters <= 10"):
        target_cluster_count(config(n_clusters=11), 10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_prepare_rows(dtype):
    rows = (3 * torch.randn(5, 4)).to(dtype)
    original = rows.clone()
    cosine = prepare_rows(rows, "cosine")
    assert cosine.dtype == torch.float32
    assert torch.allclose(cosine.norm(dim=1), torch.ones(5), atol=1e-6)
    euclidean = prepare_rows(rows, "euclidean")
    assert torch.equal(euclidean, rows.float())
    euclidean += 1
    assert torch.equal(rows, original)  # a copy, never a view


# --- partitions ------------------------------------------------------------------------------------------------


def _blocks_with_shared_centres(blocks: int = 3, size: int = 16, centres: int = 4) -> torch.Tensor:
    """Every block repeats the same centres, so only a partition keeps clusters inside a block."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(centres, 16, generator=generator)
    rows = base[torch.arange(size) % centres].repeat(blocks, 1)
    return rows + 1e-3 * torch.randn(rows.shape, generator=generator)


@pytest.mark.parametrize(
    "stop",
    [{"n_clusters": 12}, {"target_ratio": 0.25}, {"method": "threshold", "similarity_threshold": 0.99}],
    ids=["n_clusters", "ratio", "threshold"],
)
def test_partitions_never_merge_across_blocks(stop):
    rows = prepare_rows(_blocks_with_shared_centres(), "cosine")
    config = TokenMergeConfig(token_ids=[0], partition_size=16, **stop)
    labels = cluster_rows(rows, config, show_progress=False)
    block = torch.arange(48) // 16
    for cluster in labels.unique():
        assert block[labels == cluster].unique().numel() == 1
    assert int(labels.max()) + 1 == 12  # 4 planted centres in each of 3 blocks
    unpartitioned = cluster_rows(rows, TokenMergeConfig(token_ids=[0], n_clusters=4), show_progress=False)
    assert int(unpartitioned.max()) + 1 == 4  # without partitions the same centres merge across blocks


def test_partition_shares_of_n_clusters_are_proportional_and_exact():
    from hf_token_merge.clustering import _share_clusters

    assert _share_clusters(10, [16, 16, 8]) == [4, 4, 2]
    assert sum(_share_clusters(7, [5, 5, 5])) == 7
    assert _share_clusters(3, [1, 1, 100]) == [1, 1, 1]
    with pytest.raises(ValueError, match="fewer than the 3 partitions"):
        _share_clusters(2, [4, 4, 4])


@pytest.mark.parametrize("fast_bfloat16", [False, True])
def test_large_kmeans_path_recovers_planted_clusters(monkeypatch, fast_bfloat16):
    """The large-problem path (PCA sample, bfloat16 search where faster) still finds planted clusters exactly."""
    module = importlib.import_module("hf_token_merge.clustering.kmeans")
    monkeypatch.setattr(module, "LARGE_WORK", 1)
    monkeypatch.setattr(module, "PCA_SAMPLE", 40)
    monkeypatch.setattr(module, "bfloat16_is_faster", lambda device: fast_bfloat16)
    sampled = []
    original = module.pca_project
    monkeypatch.setattr(
        module,
        "pca_project",
        lambda *args: sampled.append(args[4]) or original(*args),  # (rows, dim, block, gen, n)
    )
    rows, expected = shuffled_planted(width=32)
    labels = kmeans(prepare_rows(rows, "cosine"), 6, "cosine", projection_dim=8, block_size=7, show_progress=False)
    assert sampled == [40]
    assert torch.equal(canonical_labels(labels), expected)


def test_large_kmeans_seeds_from_a_sample_and_caps_its_lloyd_iterations(monkeypatch):
    """Above PCA_SAMPLE rows, k-means++ sees a sample; the search runs at most LARGE_MAX_ITER iterations."""
    module = importlib.import_module("hf_token_merge.clustering.kmeans")
    monkeypatch.setattr(module, "LARGE_WORK", 1)
    monkeypatch.setattr(module, "PCA_SAMPLE", 40)
    monkeypatch.setattr(module, "LARGE_MAX_ITER", 2)
    monkeypatch.setattr(module, "bfloat16_is_faster", lambda device: False)
    seeded, assigned = [], []
    seed, assign = module.kmeans_plus_plus, module.assign
    monkeypatch.setattr(
        module, "kmeans_plus_plus", lambda rows, *a, **kw: seeded.append(len(rows)) or seed(rows, *a, **kw)
    )
    monkeypatch.setattr(module, "assign", lambda rows, *a: assigned.append(rows.shape[1]) or assign(rows, *a))
    rows, expected = shuffled_planted(width=32)
    labels = kmeans(prepare_rows(rows, "cosine"), 6, "cosine", projection_dim=8, block_size=7, show_progress=False)
    assert seeded == [40]  # of the 60 rows
    assert assigned == [8, 8, 32]  # two searches in the projection, then the full-space assignment
    assert torch.equal(canonical_labels(labels), expected)


def test_reranked_assignment_picks_the_float32_nearest():
    module = importlib.import_module("hf_token_merge.clustering.kmeans")
    rows, labels = planted(n=48, k=8, width=32, noise=0.3)
    centroids = module.centroids_of(rows, labels, 8, "euclidean")
    for metric in ("cosine", "euclidean"):
        prepared = prepare_rows(rows, metric)
        exact, exact_best = module.assign(prepared, centroids, metric, 5)
        reranked, best = module.assign_reranked(prepared, centroids, metric, 5, keep=3)
        assert torch.equal(reranked, exact)
        assert best.dtype == torch.float32 and torch.allclose(best, exact_best, atol=1e-5)
    one, _ = module.assign_reranked(rows, centroids[:1], "cosine", 5)  # keep > k: every centroid is a candidate
    assert torch.equal(one, torch.zeros(48, dtype=torch.long))


def test_pca_sample_of_every_row_is_the_full_pca():
    rows, _ = planted(n=48, width=16)
    generator = torch.Generator().manual_seed(0)
    assert torch.allclose(pca_project(rows, 4, 10, generator, 48), pca_project(rows, 4, 10), atol=1e-5)
    assert torch.allclose(pca_project(rows, 4, 10, generator, 1000), pca_project(rows, 4, 10), atol=1e-5)


def test_bfloat16_assignment_ranks_like_float32():
    module = importlib.import_module("hf_token_merge.clustering.kmeans")
    rows, labels = planted(n=48, k=8, width=32)
    centroids = module.centroids_of(rows, labels, 8, "euclidean")
    for metric in ("cosine", "euclidean"):
        exact, _ = module.assign(rows, centroids, metric, 5)
        ranked, best = module.assign(rows, centroids, metric, 5, torch.bfloat16)
        assert torch.equal(ranked, exact) and best.dtype == torch.float32
    assert isinstance(module.bfloat16_is_faster(torch.device("cpu")), bool)
    assert module.bfloat16_is_faster(torch.device("meta")) is False


@pytest.mark.parametrize("k", [8192, 8200, 600, 100])
def test_row_max_gives_the_values_and_first_indices_of_max(k):
    """The two-step row maximum of large problems equals `max` and keeps the first of tied columns."""
    module = importlib.import_module("hf_token_merge.clustering.kmeans")
    generator = torch.Generator().manual_seed(k)
    scores = (4 * torch.randn(37, k, generator=generator)).round().to(torch.bfloat16)  # many ties per row
    scores[0] = 0  # every column ties: index 0
    scores[1, -1] = 100  # the best in the tail beyond the last whole group
    best, index = module._row_max(scores, group=256)
    expected = scores.max(dim=1).values
    assert torch.equal(best, expected)
    assert torch.equal(index, (scores == expected[:, None]).int().argmax(dim=1))  # argmax of a 0/1 row: the first 1
    assert index[0] == 0 and index[1] == k - 1


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_reranked_assignment_resolves_gaps_below_bfloat16_resolution(metric):
    """Two centroids whose scores differ by far less than a bfloat16 step: float32 rescoring picks the true best."""
    module = importlib.import_module("hf_token_merge.clustering.kmeans")
    generator = torch.Generator().manual_seed(0)
    rows = prepare_rows(torch.randn(64, 48, generator=generator), metric)
    far = prepare_rows(torch.randn(30, 48, generator=generator), metric)
    disagreements = []
    for tilt in (1e-4, -1e-4):
        # per row: a centroid at cosine 0.6 to it and, later in the list, one a hair closer (or further) in float32
        other = prepare_rows(torch.randn(64, 48, generator=generator), "cosine")
        other = prepare_rows(other - (other * rows).sum(1, keepdim=True) * rows, "cosine")  # orthogonal to the row
        near = 0.6 * rows + 0.8 * other
        nearer = (0.6 + tilt) * rows + (0.8**2 - 2 * 0.6 * tilt) ** 0.5 * other
        if metric == "cosine":
            near, nearer = prepare_rows(near, metric), prepare_rows(nearer, metric)
        centroids = torch.cat([far, near, nearer])
        exact, exact_best = module.assign(rows, centroids, metric, 16)
        reranked, best = module.assign_reranked(rows, centroids, metric, 16)
        assert torch.equal(reranked, exact)
        assert torch.allclose(best, exact_best, atol=1e-6)
        ranked_only, _ = module.assign(rows, centroids, metric, 16, torch.bfloat16)
        disagreements.append(int((ranked_only != exact).sum()))
    assert disagreements[0] > 0  # the bfloat16 ranking alone misses the float32 best: the rescoring is tested


def test_large_kmeans_path_is_seeded(monkeypatch):
    """The large-problem path with bfloat16 ranking gives the same labels for the same seed."""
    module = importlib.import_module("hf_token_merge.clustering.kmeans")
    monkeypatch.setattr(module, "LARGE_WORK", 1)
    monkeypatch.setattr(module, "PCA_SAMPLE", 100)
    monkeypatch.setattr(module, "bfloat16_is_faster", lambda device: True)
    rows = prepare_rows(torch.randn(300, 40, generator=torch.Generator().manual_seed(5)), "cosine")
    first = kmeans(rows, 30, "cosine", seed=2, projection_dim=12, block_size=64, show_progress=False)
    assert torch.equal(first, kmeans(rows, 30, "cosine", seed=2, projection_dim=12, block_size=64, show_progress=False))
    assert (torch.bincount(first, minlength=30) > 0).all()


def test_lean_kmeans_plus_plus_picks_the_same_seeds():
    """The large problems' one-product distances differ from the full ones only by rounding: the same D^2 draws."""
    rows = torch.randn(500, 24, generator=torch.Generator().manual_seed(7))
    for seed in range(5):
        full = kmeans_plus_plus(rows, 40, "euclidean", torch.Generator().manual_seed(seed))
        lean = kmeans_plus_plus(rows, 40, "euclidean", torch.Generator().manual_seed(seed), lean=True)
        assert torch.equal(full, lean), seed
