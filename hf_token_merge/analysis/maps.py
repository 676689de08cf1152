"""2-D maps of rows (t-SNE, UMAP). scikit-learn and umap-learn come with the `analysis` extra."""

from __future__ import annotations

import torch

from hf_token_merge.errors import TokenMergeError


def two_d_map(rows: torch.Tensor, method: str, metric: str, seed: int) -> torch.Tensor:
    """Embed rows in 2-D with t-SNE or UMAP.

    Args:
        rows: `(n, d)` rows (a sample; both methods are slow beyond a few thousand).
        method: "tsne" or "umap".
        metric: "cosine" or "euclidean".
        seed: Random state.

    Returns:
        `(n, 2)` coordinates.

    Raises:
        ImportError: Naming the package to install.
    """
    data = rows.detach().to(torch.float32).cpu().numpy()
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError as err:
            raise ImportError("t-SNE maps need scikit-learn: pip install 'hf_token_merge[analysis]'.") from err
        perplexity = float(min(30, max(2, (len(data) - 1) // 3)))
        points = TSNE(2, metric=metric, init="pca", random_state=seed, perplexity=perplexity).fit_transform(data)
    elif method == "umap":
        try:
            import umap
        except ImportError as err:
            raise ImportError("UMAP maps need umap-learn: pip install 'hf_token_merge[analysis]'.") from err
        neighbours = min(15, len(data) - 1)
        points = umap.UMAP(n_neighbors=neighbours, metric=metric, random_state=seed).fit_transform(data)
    else:
        raise TokenMergeError(f"Unknown map {method!r}; use 'tsne' or 'umap'.")
    return torch.from_numpy(points)
