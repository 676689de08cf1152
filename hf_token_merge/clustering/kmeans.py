"""Lloyd's k-means for large vocabularies: blockwise, seeded, optionally searched in a PCA projection.

At Llasa scale (65,536 rows of width 2,048 into 8,192 clusters) one full-space assignment costs about
2 TFLOP. Searching in a 256-dimensional PCA projection makes each iteration 8x cheaper; a final
assignment in the full space then puts every row with its nearest centroid under the configured metric.

Large problems (n * k * width >= `LARGE_WORK`) go faster several ways. The PCA axes and the k-means++ seeds come
from a seeded sample of `PCA_SAMPLE` rows (the covariance of all rows would cost a quarter of the final assignment,
the seeding over all rows more than half of it); the projection subtracts the projected mean instead of centring
every row, and each k-means++ round takes its squared distances from one product (`lean`). Where bfloat16 matrix
products are faster than float32 ones on the device (CUDA, CPUs with AMX or AVX512-BF16; measured once), the
products of the Lloyd search in the projection run in bfloat16: they only rank centroids, and a row whose two best
centroids score within bfloat16 rounding of each other may pick the second, which the next iteration and the final
assignment correct. Each ranking is one product per block of `RANK_BLOCK` rows, read once: the Euclidean score
`2 q.c - |c|^2` is folded into the product (the row extended by a 1, the doubled centroid by `-|c|^2`), and the row
maximum takes the best of each group of `MAX_GROUP` columns first (`_row_max`); at the Llasa shape the separate
scoring passes and `max` with indices had cost more than twice the product. The search stops after at most
`LARGE_MAX_ITER` Lloyd iterations. The final full-space assignment ranks every centroid in bfloat16 too and scores
again in float32 only the candidates among a row's `RERANK` best whose bfloat16 score lies within the bfloat16 error
bound (`RESCORE_MARGIN`) of its best (`assign_reranked`, about one candidate a row at the Llasa shape): it misses
the float32 nearest only if more than `RERANK` centroids lie within that bound. Small problems stay in float32,
exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from hf_token_merge.clustering.similarity import blocks, scores, squared_distances

LARGE_WORK = 2**32  # n * k * width from which the PCA sample and bfloat16 ranking products apply
PCA_SAMPLE = 16_384  # rows the PCA axes of a large problem are estimated from
RERANK = 8  # most bfloat16-ranked candidates per row that a large problem's final assignment scores in float32
LARGE_MAX_ITER = 6  # Lloyd iterations of a large problem's search (at most; `max_iter` still caps it)
# Twice a bfloat16 score's rounding error, as a share of the row's score scale, is below 3 * 2^-7 < 2^-5
RESCORE_MARGIN = 2**-5
MAX_GROUP = 256  # columns per group of a large problem's two-step row maximum (`_row_max`)
RANK_BLOCK = 512  # rows per ranking product of a large problem (fastest of 128-1024 at the Llasa shape)
_FAST_BF16: dict[str, bool] = {}


def bfloat16_is_faster(device: torch.device) -> bool:
    """Whether a bfloat16 matrix product beats a float32 one on `device` (CUDA: yes; CPU: timed once per process)."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    if "cpu" not in _FAST_BF16:
        import time

        a = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))  # not the global RNG
        timings = {}
        for dtype in (torch.float32, torch.bfloat16):
            x = a.to(dtype)
            x @ x  # warm-up: the first call picks kernels
            start = time.perf_counter()
            for _ in range(4):
                x @ x
            timings[dtype] = time.perf_counter() - start
        _FAST_BF16["cpu"] = timings[torch.bfloat16] < 0.7 * timings[torch.float32]
    return _FAST_BF16["cpu"]


def pca_project(
    rows: torch.Tensor, dim: int, block_size: int, generator: torch.Generator | None = None, sample: int | None = None
) -> torch.Tensor:
    """Project centred rows on their top `dim` principal axes.

    Args:
        rows: `(n, d)` float32 rows.
        dim: Number of principal axes kept (`dim < d`).
        block_size: Rows per block when accumulating the covariance.
        generator: Draws the sample the axes are estimated from.
        sample: Estimate the mean and axes from this many rows drawn without replacement (None or >= n: all rows),
            so the covariance costs `sample * d^2` instead of `n * d^2`. Given (large problems), the mean is also
            subtracted after the projection (`rows @ axes - mean @ axes`), which spares a centred copy of every row.

    Returns:
        `(n, dim)` projected rows.
    """
    fit = rows
    if sample is not None and sample < rows.shape[0]:
        chosen = torch.randperm(rows.shape[0], generator=generator)[:sample].sort().values
        fit = rows[chosen.to(rows.device)]
    mean = fit.mean(dim=0)
    covariance = torch.zeros(rows.shape[1], rows.shape[1], dtype=rows.dtype, device=rows.device)
    for part in blocks(fit.shape[0], block_size):
        centred = fit[part] - mean
        covariance.addmm_(centred.T, centred)
    _, eigenvectors = torch.linalg.eigh(covariance)
    axes = eigenvectors[:, -dim:].flip(1)
    projected = torch.empty(rows.shape[0], dim, dtype=rows.dtype, device=rows.device)
    if sample is not None:
        axes = axes.contiguous()
        shift = mean @ axes
        for part in blocks(rows.shape[0], block_size):
            torch.mm(rows[part], axes, out=projected[part]).sub_(shift)
        return projected
    for part in blocks(rows.shape[0], block_size):
        projected[part] = (rows[part] - mean) @ axes
    return projected


def kmeans_plus_plus(
    rows: torch.Tensor, k: int, metric: str, generator: torch.Generator, rounds: int = 50, lean: bool = False
) -> torch.Tensor:
    """Pick `k` distinct initial centroids by D^2 sampling, in at most `rounds` batched rounds.

    Exact k-means++ takes one centroid per round; at k = 8,192 that is 8,192 passes over the data. Taking
    `ceil(k / rounds)` centroids per round keeps the D^2 weighting (new centroids land in badly covered
    regions) at the cost of one assignment pass in all. For `k <= rounds` it is exact k-means++.

    Args:
        rows: `(n, d)` rows to pick from.
        k: Number of centroids.
        metric: "cosine" or "euclidean".
        generator: Draws the first centroid and the D^2 samples.
        rounds: Most batched rounds.
        lean: Compute each round's squared distances as `|q|^2 + min(|c|^2 - 2 q.c)`, one product and one
            reduction, instead of the full distance matrix (large problems: the same distances up to rounding,
            0.7 instead of 1.6 s for a 16,384-row sample at k = 8,192; small problems keep the rounding their tests
            pin).

    Returns:
        The row indices of the initial centroids.
    """
    n = rows.shape[0]
    per_round = max(1, -(-k // rounds))
    if lean and metric == "euclidean":
        sq_norm = rows.pow(2).sum(dim=1)

        def gap(centroids: torch.Tensor) -> torch.Tensor:
            nearest = torch.addmm(centroids.pow(2).sum(dim=1), rows, centroids.T, alpha=-2).amin(dim=1)
            return nearest.add_(sq_norm).clamp_min_(0)

    else:

        def gap(centroids: torch.Tensor) -> torch.Tensor:
            return _squared_gap(rows, centroids, metric)

    chosen = torch.randint(n, (1,), generator=generator)
    closest = gap(rows[chosen])
    while len(chosen) < k:
        weights = closest.double().cpu()
        weights[chosen] = 0
        if float(weights.sum()) <= 0:  # every remaining row duplicates a centroid: draw uniformly
            weights = torch.ones(n, dtype=torch.float64)
            weights[chosen] = 0
        # Never ask for more rows than have positive weight: torch.multinomial then silently returns
        # zero-weight rows, which may be centroids already chosen.
        take = min(per_round, k - len(chosen), int((weights > 0).sum()))
        picked = torch.multinomial(weights, take, replacement=False, generator=generator)
        chosen = torch.cat([chosen, picked])
        closest = torch.minimum(closest, gap(rows[picked.to(rows.device)]))
    return chosen.to(rows.device)


def _squared_gap(rows: torch.Tensor, centroids: torch.Tensor, metric: str) -> torch.Tensor:
    """Distance-like gap of every row to its closest centroid: `1 - cos` or the squared distance."""
    if metric == "cosine":
        return (1.0 - (rows @ centroids.T).amax(dim=1)).clamp_min_(0)
    return squared_distances(rows, centroids).amin(dim=1)


def assign(
    rows: torch.Tensor,
    centroids: torch.Tensor,
    metric: str,
    block_size: int,
    product_dtype: torch.dtype | None = None,
):
    """Assign each row to its best-scoring centroid.

    Args:
        rows: `(n, d)` prepared rows.
        centroids: `(k, d)` centroids.
        metric: "cosine" or "euclidean" (see `scores`).
        block_size: Rows per block.
        product_dtype: Score in this dtype (bfloat16 ranks as well, faster where the device has it); None: the rows'.

    Returns:
        `(labels, best_scores)`, both of length n.
    """
    if product_dtype is not None:
        return _assign_ranked(rows, centroids, metric, min(block_size, RANK_BLOCK), product_dtype)
    sq_norm = centroids.pow(2).sum(dim=1) if metric == "euclidean" else None
    labels = torch.empty(rows.shape[0], dtype=torch.long, device=rows.device)
    best = torch.empty(rows.shape[0], dtype=rows.dtype, device=rows.device)
    for part in blocks(rows.shape[0], block_size):
        best[part], labels[part] = scores(rows[part], centroids, metric, sq_norm).max(dim=1)
    return labels, best


def _ranking_blocks(
    rows: torch.Tensor, centroids: torch.Tensor, metric: str, block_size: int, dtype: torch.dtype
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Each block of rows with its `(rows, k)` score block, one product in `dtype` per block (a reused buffer).

    The Euclidean score `2 q.c - |c|^2` is the product of the row extended by a 1 with the centroid doubled and
    extended by `-|c|^2`: at the Llasa shape the separate doubling and subtraction passes over each score block cost
    more than the bfloat16 product itself. Blocks of `RANK_BLOCK` rows were the fastest measured (128 to 1,024): the
    score block is still in cache when the caller reads it.
    """
    n, width = rows.shape
    keys = centroids
    if metric == "euclidean":
        keys = torch.cat([2 * centroids, -centroids.pow(2).sum(dim=1, keepdim=True)], dim=1)
    keys = keys.to(dtype)
    queries = torch.empty(min(block_size, n), keys.shape[1], dtype=dtype, device=rows.device)
    queries[:, width:] = 1  # the Euclidean extension; absent for cosine
    products = torch.empty(queries.shape[0], keys.shape[0], dtype=dtype, device=rows.device)
    for part in blocks(n, block_size):
        size = part.stop - part.start
        queries[:size, :width] = rows[part]
        torch.mm(queries[:size], keys.T, out=products[:size])
        yield part, products[:size]


def _assign_ranked(
    rows: torch.Tensor, centroids: torch.Tensor, metric: str, block_size: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """`assign` with the products in `dtype` (`_ranking_blocks`), each score block read once by `_row_max`."""
    labels = torch.empty(rows.shape[0], dtype=torch.long, device=rows.device)
    best = torch.empty(rows.shape[0], dtype=rows.dtype, device=rows.device)
    for part, products in _ranking_blocks(rows, centroids, metric, block_size, dtype):
        best[part], labels[part] = _row_max(products)
    return labels, best


def _row_max(scores: torch.Tensor, group: int = MAX_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """`scores.max(dim=1)` of a `(b, k)` block, values and the first index of the maximum, in two steps.

    On the CPU, `max` with indices over a bfloat16 row runs about three times slower than `amax` without them; the
    maximum of each group of `group` columns (`amax`), then the group holding the best one and its position in that
    group, give the same values and first indices in about two thirds of the time at k = 8,192.
    """
    b, k = scores.shape
    whole = k - k % group
    if whole < 2 * group:
        return scores.max(dim=1)
    grouped = scores[:, :whole].unflatten(1, (whole // group, group))
    best, which = grouped.amax(dim=2).max(dim=1)
    index = which * group + grouped[torch.arange(b, device=scores.device), which].argmax(dim=1)
    if whole < k:
        tail_best, tail_index = scores[:, whole:].max(dim=1)
        later = tail_best > best  # ties keep the earlier index, as `max` does
        best = torch.where(later, tail_best, best)
        index = torch.where(later, tail_index + whole, index)
    return best, index


def assign_reranked(
    rows: torch.Tensor, centroids: torch.Tensor, metric: str, block_size: int, keep: int = RERANK
) -> tuple[torch.Tensor, torch.Tensor]:
    """`assign` ranked in bfloat16, then the centroids that may be a row's float32 best scored again in float32.

    A row's candidates are those of its `keep` bfloat16-best centroids that score within `RESCORE_MARGIN` times the
    row's score scale of its bfloat16 best: bfloat16 rounding (a unit roundoff of 2^-8, on the inputs and on the
    product) moves the gap between two scores by less than that, so a centroid outside the margin cannot beat the
    best in float32. Most rows keep one candidate, so the float32 rescoring reads about one centroid per row instead
    of `keep`. The float32 best is missed only when more than `keep` centroids lie within the margin. The bound
    assumes float32 accumulation inside the product (oneDNN on CPUs); CUDA's reduced-precision bfloat16 reductions,
    where enabled, may exceed it, and the rescoring then falls back to the best of the candidates it has.

    Args:
        rows: `(n, d)` float32 prepared rows.
        centroids: `(k, d)` float32 centroids.
        metric: "cosine" or "euclidean" (see `scores`).
        block_size: Rows per block (at most `RANK_BLOCK` are ranked at a time).
        keep: Most candidates per row scored in float32.

    Returns:
        `(labels, best_scores)`, both of length n; the scores are float32.
    """
    keep = min(keep, centroids.shape[0])
    reach = centroids.norm(dim=1).max()
    sq_norm = centroids.pow(2).sum(dim=1) if metric == "euclidean" else None
    labels = torch.empty(rows.shape[0], dtype=torch.long, device=rows.device)
    best = torch.empty(rows.shape[0], dtype=rows.dtype, device=rows.device)
    ranking = _ranking_blocks(rows, centroids, metric, min(block_size, RANK_BLOCK), torch.bfloat16)
    for part, products in ranking:
        block = rows[part]
        size = block.shape[0]
        ranked, ids = products.topk(keep, dim=1)
        # the largest score a row can reach: |q| |c|, and for Euclidean 2 |q| |c| + |c|^2
        scale = block.norm(dim=1) * reach
        if sq_norm is not None:
            scale = 2 * scale + reach**2
        ranked = ranked.to(rows.dtype)
        near = ranked >= ranked[:, :1] - RESCORE_MARGIN * scale[:, None]
        pair_row, pair_slot = near.nonzero(as_tuple=True)
        pair_centroid = ids[pair_row, pair_slot]
        exact = (block[pair_row] * centroids[pair_centroid]).sum(dim=1)
        if sq_norm is not None:
            exact = exact.mul_(2).sub_(sq_norm[pair_centroid])
        rescored = torch.full((size, keep), -torch.inf, dtype=rows.dtype, device=rows.device)
        rescored[pair_row, pair_slot] = exact
        best[part], pick = rescored.max(dim=1)
        labels[part] = ids.gather(1, pick[:, None])[:, 0]
    return labels, best


def centroids_of(rows: torch.Tensor, labels: torch.Tensor, k: int, metric: str) -> torch.Tensor:
    """Mean row of every cluster (unit-normalised for cosine); empty clusters give zero rows."""
    sums = torch.zeros(k, rows.shape[1], dtype=rows.dtype, device=rows.device).index_add_(0, labels, rows)
    counts = torch.bincount(labels, minlength=k).clamp_min(1).to(rows.dtype)
    centroids = sums / counts[:, None]
    if metric == "cosine":
        centroids /= centroids.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return centroids


def fill_empty_clusters(labels: torch.Tensor, best: torch.Tensor, k: int) -> torch.Tensor:
    """Give every empty cluster the worst-fitting row of a cluster that has more than one member.

    This keeps the promise of exactly `k` clusters. Rows are moved one at a time because taking two
    rows from a two-member cluster would empty it.
    """
    labels = labels.clone()
    counts = torch.bincount(labels, minlength=k)
    empty = (counts == 0).nonzero().flatten().tolist()
    if not empty:
        return labels
    fit = best.clone()
    for cluster in empty:
        movable = counts[labels] > 1
        candidates = torch.where(movable, fit, torch.full_like(fit, float("inf")))
        row = int(candidates.argmin())
        counts[labels[row]] -= 1
        labels[row] = cluster
        counts[cluster] = 1
        fit[row] = float("inf")
    return labels


def kmeans(
    rows: torch.Tensor,
    k: int,
    metric: str,
    *,
    seed: int = 0,
    max_iter: int = 25,
    tol: float = 1e-3,
    projection_dim: int | None = 256,
    block_size: int = 4096,
    show_progress: bool = True,
) -> torch.Tensor:
    """Cluster prepared rows into exactly `k` non-empty clusters.

    Args:
        rows: `(n, d)` rows from `prepare_rows` (unit-norm for cosine).
        k: Number of clusters, `1 <= k <= n`.
        metric: "cosine" (spherical k-means) or "euclidean".
        seed: Seed of the batched k-means++ initialisation.
        max_iter: Maximum Lloyd iterations of the search.
        tol: Stop once at most this fraction of rows changes cluster in an iteration.
        projection_dim: Search in a PCA projection of this width when rows are wider; None disables.
        block_size: Rows per block.
        show_progress: Show a tqdm bar over iterations.

    Returns:
        Labels in `[0, k)` of length n.
    """
    n, width = rows.shape
    generator = torch.Generator().manual_seed(seed)

    large = n * k * width >= LARGE_WORK
    rank_dtype = torch.bfloat16 if large and bfloat16_is_faster(rows.device) else None
    projected = projection_dim is not None and width > projection_dim and n > k
    search_rows = (
        pca_project(rows, projection_dim, block_size, generator, PCA_SAMPLE if large else None) if projected else rows
    )
    # In the projection, rows are no longer unit-norm: search with Euclidean distance, which on unit-norm
    # rows orders neighbours exactly like cosine similarity.
    search_metric = "euclidean" if projected else metric

    if large and n > PCA_SAMPLE:
        # D^2 sampling over all rows cost more than half a full-space product at the Llasa shape: seed from a
        # sample (at least k rows); the Lloyd iterations over every row move the centroids from there.
        seeds = torch.randperm(n, generator=generator)[: max(PCA_SAMPLE, k)].sort().values.to(rows.device)
        initial = seeds[kmeans_plus_plus(search_rows[seeds], k, search_metric, generator, lean=True)]
    else:
        initial = kmeans_plus_plus(search_rows, k, search_metric, generator, lean=large)
    centroids = search_rows[initial].clone()
    labels = torch.full((n,), -1, dtype=torch.long, device=rows.device)
    if large:
        max_iter = min(max_iter, LARGE_MAX_ITER)
    progress = tqdm(range(max_iter), desc=f"k-means (k={k})", disable=not show_progress, leave=False)
    for _ in progress:
        new_labels, best = assign(search_rows, centroids, search_metric, block_size, rank_dtype)
        new_labels = fill_empty_clusters(new_labels, best, k)
        changed = int((new_labels != labels).sum())
        labels = new_labels
        centroids = centroids_of(search_rows, labels, k, search_metric)
        progress.set_postfix(changed=changed)
        if changed <= tol * n:
            break
    progress.close()

    if projected:
        del search_rows
        final = centroids_of(rows, labels, k, metric)
        if rank_dtype is None:
            labels, best = assign(rows, final, metric, block_size)
        else:
            labels, best = assign_reranked(rows, final, metric, block_size)
        labels = fill_empty_clusters(labels, best, k)
    return labels
