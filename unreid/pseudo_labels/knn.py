"""Exact (blocked) and approximate k-nearest-neighbour search on L2-normalised features.

Exact search is a blocked matrix product + ``topk`` (memory ``O(block * N + N * k)``, never ``N x N``),
on the features' device (CUDA when they live there). Ties: the query itself is always column 0
(its similarity is set to +inf before ``topk``), so duplicated features never push a point out of
its own neighbour list; other ties follow ``torch.topk``'s order. The reference
(``clustercontrast/utils/faiss_rerank.py``) searches with faiss ``IndexFlatL2``, where self also
ranks first unless exact duplicates exist.

``hnsw`` uses faiss ``IndexHNSWFlat`` (inner product) for very large N; its recall@k is measured by
``benchmarks/pseudo_labels.py``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def knn(features: Tensor, k: int, method: str = "exact", block: int = 4096,
        hnsw_m: int = 32, hnsw_ef: int = 128) -> np.ndarray:
    """Indices ``(N, k) int64`` of the ``k`` most similar rows (inner product), self first.

    Args:
        features: ``(N, d) float32``, L2-normalised (inner product = cosine).
        k: neighbours including self (``1 <= k <= N``).
        method: ``"exact"`` (blocked torch matmul), ``"faiss"`` (exact ``IndexFlatIP``) or
            ``"hnsw"`` (approximate ``IndexHNSWFlat``, ``M = hnsw_m``, ``efSearch = hnsw_ef``).
        block: rows per block of the exact search.

    Raises:
        ValueError: ``k`` out of range or unknown method; ImportError: faiss missing for faiss/hnsw.
    """
    n = features.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, N={n}], got {k}")
    if method == "exact":
        out = torch.empty(n, k, dtype=torch.long)
        f = features.float()
        for s in range(0, n, block):
            sim = f[s:s + block] @ f.T
            rows = torch.arange(sim.shape[0], device=sim.device)
            sim[rows, rows + s] = float("inf")
            out[s:s + block] = sim.topk(k, dim=1).indices.cpu()
        return out.numpy()
    if method in ("faiss", "hnsw"):
        try:
            import faiss
        except ImportError as err:
            raise ImportError(f"pseudo_labels.knn={method} needs faiss: pip install faiss-cpu") from err
        x = np.ascontiguousarray(features.detach().cpu().numpy().astype(np.float32))
        if method == "faiss":
            index = faiss.IndexFlatIP(x.shape[1])
        else:
            index = faiss.IndexHNSWFlat(x.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = max(hnsw_ef, k)
        index.add(x)
        _, idx = index.search(x, k + 1)
        return _self_first(idx, k)
    raise ValueError(f"unknown k-NN method {method!r}; choose exact, faiss or hnsw")


def _self_first(idx: np.ndarray, k: int) -> np.ndarray:
    """Put each row's own index in column 0 (dropping it elsewhere) and keep ``k`` columns."""
    n = idx.shape[0]
    out = np.empty((n, k), dtype=np.int64)
    self_ = np.arange(n)[:, None]
    for i in range(0, n, 65536):  # vectorised in chunks
        rows = idx[i:i + 65536]
        s = self_[i:i + 65536]
        others = np.where(rows == s, -1, rows)
        # stable: keep order of the remaining neighbours, drop the first -1 / missing entries
        order = np.argsort(others == -1, axis=1, kind="stable")
        others = np.take_along_axis(others, order, axis=1)[:, : k - 1]
        out[i:i + 65536, 0] = s[:, 0]
        out[i:i + 65536, 1:] = others
    if (out < 0).any():
        raise RuntimeError("approximate k-NN returned fewer neighbours than requested; raise hnsw efSearch")
    return out
