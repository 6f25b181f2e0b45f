"""Sparse k-reciprocal Jaccard distance vs a straightforward dense implementation of the same
equations (Zhong et al. CVPR 2017; the shared ``compute_jaccard_distance``, ANCHORS.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unreid.pseudo_labels.jaccard import jaccard_distance
from unreid.pseudo_labels.knn import knn


def dense_jaccard(feats: np.ndarray, initial_rank: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """The reference algorithm written out with dense arrays and loops (test oracle)."""
    n = feats.shape[0]

    def recip(i, k):
        fwd = initial_rank[i, : k + 1]
        back = initial_rank[fwd, : k + 1]
        return fwd[np.where(back == i)[0]]

    half = int(np.around(k1 / 2))
    r1 = [recip(i, k1) for i in range(n)]
    rh = [recip(i, half) for i in range(n)]
    V = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        idx = r1[i]
        exp = idx
        for c in idx:
            cand = rh[c]
            if len(np.intersect1d(cand, idx)) > 2 / 3 * len(cand):
                exp = np.append(exp, cand)
        exp = np.unique(exp)
        d = 2 - 2 * feats[i] @ feats[exp].T
        w = np.exp(-d)
        V[i, exp] = w / w.sum()
    if k2 != 1:
        V = np.stack([V[initial_rank[i, :k2]].mean(0) for i in range(n)])
    out = np.zeros((n, n))
    for i in range(n):
        s = np.minimum(V[i][None], V).sum(1)
        out[i] = 1 - s / (2 - s)
    out[out < 0] = 0
    return out


def _features(n, d, seed, dup=False):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(max(2, n // 8), d, generator=g)
    f = centers[torch.randint(len(centers), (n,), generator=g)] + 0.6 * torch.randn(n, d, generator=g)
    if dup:
        f[1] = f[0]
        f[5] = f[4]
    return F.normalize(f, dim=1)


@pytest.mark.parametrize("n,k1,k2,seed,dup", [
    (120, 20, 6, 0, False), (150, 30, 6, 1, True), (100, 10, 1, 2, False), (90, 7, 3, 3, False),
    (60, 1, 1, 4, False), (1500, 30, 6, 5, False),
])
def test_sparse_equals_dense(n, k1, k2, seed, dup):
    f = _features(n, 16, seed, dup)
    rank = knn(f, k1)
    sparse = jaccard_distance(f, k1, k2, initial_rank=rank)
    if n > 400:  # the dense oracle is O(N^2) Python; check a random subset of rows fully
        rows = np.random.default_rng(seed).choice(n, 40, replace=False)
    else:
        rows = np.arange(n)
    dense = dense_jaccard(f.double().numpy(), rank, k1, k2) if n <= 400 else None
    if dense is None:
        dense = dense_jaccard(f.double().numpy(), rank, k1, k2)[rows]
    else:
        dense = dense[rows]
    got = np.ones((len(rows), n))
    sub = sparse[rows].tocoo()
    got[sub.row, sub.col] = sub.data
    assert np.abs(got - dense).max() < 1e-5
    # the diagonal (d = 0) is stored explicitly
    assert (np.abs(sparse.diagonal()) < 1e-6).all() and sparse.nnz >= n


def test_knn_self_first_with_duplicates():
    f = _features(50, 8, 0, dup=True)
    r = knn(f, 5)
    assert (r[:, 0] == np.arange(50)).all() and r[0, 1] == 1 and r[1, 1] == 0
    pytest.importorskip("faiss")
    assert (knn(f, 5, "faiss")[:, 0] == np.arange(50)).all()
