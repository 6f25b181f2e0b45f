"""Sparse k-reciprocal encoding and Jaccard distance.

Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017, eqs. 4-12,
exactly as the shared ``compute_jaccard_distance`` of Cluster Contrast / HHCL / GCL computes it
(alibaba/cluster-contrast-reid ``clustercontrast/utils/faiss_rerank.py``; ``../shared/ANCHORS.md``):

* ``initial_rank``: ``k1`` nearest neighbours **including self**;
  ``R(i, k1)`` = the ``j`` in the first ``k1`` columns of row ``i`` that have ``i`` in their first
  ``k1`` columns; ``R(c, round(k1/2))`` the same with ``round(k1/2) + 1`` columns (``np.around``,
  half to even);
* expansion (L77): ``R*(i) = R(i) U R(c, k1/2)`` for every ``c`` in ``R(i)`` with
  ``|R(c, k1/2) & R(i)| > 2/3 |R(c, k1/2)|`` (strict; tested against the un-expanded ``R(i)``);
* weights (L81-85): ``V[i, j] = softmax_j(-d_ij)`` over ``j in R*(i)``, ``d = 2 - 2 cos``;
  each row sums to 1;
* query expansion (L89-93): ``V_i <- mean of V over initial_rank[i, :k2]`` (skipped when k2 = 1);
* ``d_J(i, j) = 1 - S_ij / (2 - S_ij)`` with ``S_ij = sum_k min(V_ik, V_jk)`` (L113), negatives
  clipped to 0. Pairs that share no column have ``S = 0``, i.e. ``d_J = 1`` exactly.

Unlike the reference (two dense ``N x N`` arrays and Python loops over ``N * k1^2`` items), ``V`` is
a sparse matrix, all set operations are sparse-matrix products, and ``d_J`` is produced only for
pairs that share a non-zero column (a ``scipy.sparse.csr_matrix``; absent pairs are 1). Zero
distances are stored **explicitly** (scikit-learn's precomputed sparse DBSCAN only counts stored
entries as neighbours), including the diagonal.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor


def _rank_matrix(initial_rank: np.ndarray, cols: int) -> sp.csr_matrix:
    """Boolean ``(N, N)`` matrix with ``A[i, j] = 1`` iff ``j`` in ``initial_rank[i, :cols]``."""
    n = initial_rank.shape[0]
    r = initial_rank[:, :cols]
    data = np.ones(r.size, dtype=np.float32)
    return sp.csr_matrix((data, (np.repeat(np.arange(n), r.shape[1]), r.ravel())), shape=(n, n))


def _reciprocal(initial_rank: np.ndarray, cols: int) -> sp.csr_matrix:
    a = _rank_matrix(initial_rank, cols)
    return a.multiply(a.T).tocsr()  # j in list(i) and i in list(j)


def k_reciprocal_encoding(features: Tensor, initial_rank: np.ndarray, k1: int, k2: int,
                          block: int = 65536) -> sp.csr_matrix:
    """The sparse encoding ``V`` ``(N, N) float32`` (rows sum to 1), after query expansion.

    Args:
        features: ``(N, d) float32`` L2-normalised.
        initial_rank: ``(N, >= k1) int64`` neighbours, self first (``unreid.pseudo_labels.knn``).
        k1, k2: as in the module docstring.
    """
    n = features.shape[0]
    k1 = min(k1, initial_rank.shape[1])
    r1 = _reciprocal(initial_rank, k1)
    half_cols = min(int(np.around(k1 / 2)) + 1, k1)
    rh = _reciprocal(initial_rank, half_cols)
    # |R(c, k1/2) & R(i, k1)| for c in R(i, k1)
    overlap = (r1 @ rh.T).multiply(r1).tocsr()
    size_h = np.asarray(rh.sum(axis=1)).ravel()
    ov = overlap.tocoo()
    accept = ov.data > (2.0 / 3.0) * size_h[ov.col]
    acc = sp.csr_matrix((np.ones(int(accept.sum()), np.float32), (ov.row[accept], ov.col[accept])), shape=(n, n))
    expanded = ((r1 + acc @ rh) > 0).tocsr()
    expanded.sort_indices()
    coo = expanded.tocoo()
    rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
    f = features.float().cpu()
    dots = np.empty(len(rows), dtype=np.float32)
    for s in range(0, len(rows), block):
        ri, ci = torch.from_numpy(rows[s:s + block]), torch.from_numpy(cols[s:s + block])
        dots[s:s + block] = (f[ri] * f[ci]).sum(1).numpy()
    w = np.exp(-(2.0 - 2.0 * dots.astype(np.float64)))  # softmax numerator; d in [0, 4] so no overflow
    row_sum = np.bincount(rows, weights=w, minlength=n)
    v = sp.csr_matrix(((w / row_sum[rows]).astype(np.float32), (rows, cols)), shape=(n, n))
    if k2 > 1:
        kk = min(k2, initial_rank.shape[1])
        q = _rank_matrix(initial_rank, kk) * (1.0 / kk)
        v = (q @ v).tocsr()
    v.sort_indices()
    return v


def jaccard_from_encoding(v: sp.csr_matrix, max_pairs: int = 20_000_000) -> sp.csr_matrix:
    """Sparse Jaccard distances ``(N, N) float32`` for every pair sharing a non-zero column of ``v``.

    ``S_ij = sum_k min(V_ik, V_jk)`` is accumulated column by column (all pairs of rows that hold
    column ``k``), in chunks of at most ``max_pairs`` pair-contributions. Returns ``1 - S/(2-S)``
    clipped at 0, with zeros stored explicitly (diagonal included).
    """
    n = v.shape[0]
    csc = v.tocsc()
    csc.sort_indices()
    lengths = np.diff(csc.indptr).astype(np.int64)
    cost = lengths**2
    acc = sp.csr_matrix((n, n), dtype=np.float64)
    start = 0
    cum = np.cumsum(cost)
    while start < n:
        base = cum[start - 1] if start else 0
        stop = int(np.searchsorted(cum, base + max_pairs, side="right"))
        stop = max(stop, start + 1)
        cols = np.arange(start, stop)
        lens = lengths[cols]
        ptr = csc.indptr[cols]
        # entry e (within these columns) pairs with all entries of its column
        ent_col_len = np.repeat(lens, lens)
        ent_pos = np.concatenate([np.arange(p, p + L) for p, L in zip(ptr, lens)]) if len(cols) else np.zeros(0, int)
        ent_start = np.repeat(ptr, lens)
        a = np.repeat(ent_pos, ent_col_len)
        offs = np.arange(len(a)) - np.repeat(np.cumsum(ent_col_len) - ent_col_len, ent_col_len)
        b = np.repeat(ent_start, ent_col_len) + offs
        vals = np.minimum(csc.data[a], csc.data[b]).astype(np.float64)
        part = sp.coo_matrix((vals, (csc.indices[a], csc.indices[b])), shape=(n, n)).tocsr()
        acc = acc + part
        start = stop
    acc.sum_duplicates()
    s = acc.data
    d = 1.0 - s / (2.0 - s)
    d[d < 0] = 0.0
    out = sp.csr_matrix((d.astype(np.float32), acc.indices.copy(), acc.indptr.copy()), shape=(n, n))
    return out


def jaccard_distance(features: Tensor, k1: int = 30, k2: int = 6, knn_method: str = "exact",
                     knn_block: int = 4096, initial_rank: np.ndarray | None = None) -> sp.csr_matrix:
    """k-reciprocal Jaccard distance of L2-normalised ``features`` ``(N, d)`` as a sparse matrix.

    Args:
        k1, k2: CC defaults 30 and 6 (``examples/cluster_contrast_train_usl.py``).
        knn_method, knn_block: see :func:`unreid.pseudo_labels.knn.knn`.
        initial_rank: precomputed ``(N, >= k1)`` neighbours (self first), e.g. to time k-NN apart.

    Returns:
        ``(N, N) csr_matrix float32`` of distances in [0, 1] for pairs sharing a column of ``V``;
        entries not stored are exactly 1.
    """
    from unreid.pseudo_labels.knn import knn

    if initial_rank is None:
        initial_rank = knn(features, k1, knn_method, knn_block)
    v = k_reciprocal_encoding(features, initial_rank, k1, k2)
    return jaccard_from_encoding(v)
