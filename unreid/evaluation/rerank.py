"""k-reciprocal re-ranking of a query-gallery distance.

Zhong, Zheng, Cao and Li, "Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017,
Sec. 3 (eqs. 7-12). Reproduced behaviour: the ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2,
lambda_value)`` function every re-ID code base ships (torchreid ``torchreid/utils/rerank.py``, from
zhunzhong07/person-re-ranking), defaults k1 = 20, k2 = 6, lambda = 0.3 (the paper's values):

1. original distance ``d``: the input distance **squared**, each row divided by its maximum
   (torchreid squares its input and divides by the column maximum before transposing, which is the same);
2. ``N(i, k)``: the first ``k + 1`` entries of row ``i`` sorted by ``d`` (usually ``i`` itself first);
   ``R(i, k) = {j in N(i, k) : i in N(j, k)}`` (k-reciprocal neighbours, eq. 4);
3. expansion (eq. 6): ``R*(i) = R(i, k1)`` united with every ``R(c, round(k1 / 2))``, ``c`` in ``R(i, k1)``,
   that shares **more than** 2/3 of its members with ``R(i, k1)`` (rounding half to even, ``np.around``);
4. encoding (eq. 7): ``V[i, j] = exp(-d[i, j])`` on ``R*(i)``, normalised to sum 1 per row;
5. local query expansion (eq. 11): ``V[i] <- mean(V[j] for j in the first k2 entries of row i)``
   (skipped when ``k2 == 1``);
6. Jaccard distance (eqs. 9-10): ``d_J(i, j) = 1 - sum_k min(V_ik, V_jk) / (2 - sum_k min(V_ik, V_jk))``
   (``2 - sum min`` equals ``sum max`` because the rows sum to 1);
7. final distance (eq. 12): ``(1 - lambda) * d_J + lambda * d``.

Deviations, all without effect away from exact ties: rows are ranked with ties broken by index (stable
order; torchreid's ``np.argsort`` leaves tie order to the sort algorithm); sums are accumulated in float64
before the float32 result; an all-zero row (every distance 0) is left unnormalised instead of giving NaN.

Memory: one dense ``(Q+G, Q+G)`` float32 array (1.5 GB for Market-1501's 19,281 query + gallery
images) on top of the caller's inputs, plus sparse encodings with at most a few hundred entries per row.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _copy_transposed(dst: np.ndarray, src: np.ndarray, tile: int = 512) -> None:
    """``dst[...] = src.T`` tile by tile (several times faster than one strided copy of a large matrix)."""
    rows, cols = src.shape
    for i in range(0, rows, tile):
        for j in range(0, cols, tile):
            dst[j:j + tile, i:i + tile] = src[i:i + tile, j:j + tile].T


def _top_k_stable(dist: np.ndarray, k: int, max_chunk_elems: int = 1 << 24) -> np.ndarray:
    """``(N, k)`` int64 indices of the k smallest entries of every row, sorted by (value, column index).

    Identical to ``np.argsort(dist, axis=1, kind="stable")[:, :k]`` without sorting whole rows: a
    partial selection finds each row's k-th value, every entry not above it is then sorted.
    """
    n, m = dist.shape
    out = np.empty((n, k), dtype=np.int64)
    step = max(1, max_chunk_elems // m)
    for s in range(0, n, step):
        block = dist[s:s + step]
        kth = np.take_along_axis(block, np.argpartition(block, k - 1, axis=1)[:, k - 1:k], axis=1)
        rows, cols = np.nonzero(block <= kth)  # >= k per row (more on ties), row-major
        order = np.lexsort((cols, block[rows, cols], rows))
        rows, cols = rows[order], cols[order]
        starts = np.searchsorted(rows, np.arange(block.shape[0]))
        pos = np.arange(rows.size) - starts[rows]
        sel = pos < k
        out[s + rows[sel], pos[sel]] = cols[sel]
    return out


def _reciprocal(nbrs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``N(i, k)`` as an ``(N, k+1)`` index array and the mask of its members that are in ``R(i, k)``."""
    fwd = nbrs[:, : k + 1]
    back = fwd[fwd]  # (N, k+1, k+1): N(j, k) for every j in N(i, k)
    mask = (back == np.arange(nbrs.shape[0])[:, None, None]).any(axis=2)
    return fwd, mask


def _encode(dist: np.ndarray, nbrs: np.ndarray, k1: int, max_chunk_elems: int = 1 << 22) -> sp.csr_matrix:
    """Sparse ``(N, N)`` float32 k-reciprocal encoding ``V`` (steps 2-4 of the module docstring)."""
    n = dist.shape[0]
    fwd, rmask = _reciprocal(nbrs, k1)
    hfwd, hmask = _reciprocal(nbrs, int(np.around(k1 / 2.0)))
    r_sets = np.where(rmask, fwd, -1)  # R(i, k1), padded with -1
    h_sets = np.where(hmask, hfwd, -2)  # R(c, k1/2), padded with -2 (never equal to r_sets' padding)
    h_size = hmask.sum(1)
    rows_all, cols_all = [], []
    step = max(1, max_chunk_elems // (fwd.shape[1] ** 2 * hfwd.shape[1]))
    for s in range(0, n, step):
        r = r_sets[s:s + step]  # (b, k1+1)
        cand = h_sets[fwd[s:s + step]]  # (b, k1+1, h+1): R(c, k1/2) of each c in N(i, k1)
        shared = (cand[..., None] == r[:, None, None, :]).any(-1).sum(-1)  # |R(c, k1/2) & R(i, k1)|
        accept = rmask[s:s + step] & (shared > 2.0 / 3.0 * h_size[fwd[s:s + step]])
        b = r.shape[0]
        local = np.broadcast_to(np.arange(b)[:, None], r.shape)
        keep_r = r >= 0
        ci, ca, cb = np.nonzero(accept[..., None] & (cand >= 0))
        rows_all.append(np.concatenate([local[keep_r], ci]) + s)
        cols_all.append(np.concatenate([r[keep_r], cand[ci, ca, cb]]))
    rows, cols = np.concatenate(rows_all), np.concatenate(cols_all)
    key = np.unique(rows * n + cols)  # the union R*(i), one entry per (i, j)
    rows, cols = key // n, key % n
    w = np.exp(-dist[rows, cols].astype(np.float64))
    w /= np.bincount(rows, weights=w, minlength=n)[rows]
    return sp.csr_matrix((w.astype(np.float32), (rows, cols)), shape=(n, n))


def _sum_min(vq: sp.csr_matrix, vg_csc: sp.csc_matrix, max_pairs: int = 1 << 22) -> np.ndarray:
    """``(Q, G)`` float64 ``S[i, j] = sum_k min(vq[i, k], vg[j, k])`` over the common non-zeros ``k``.

    Inverted-index join: every stored ``(i, k)`` of ``vq`` meets every stored ``(j, k)`` of column ``k``
    of ``vg``; query rows are processed in groups of about ``max_pairs`` such pairs.
    """
    nq, ng = vq.shape[0], vg_csc.shape[0]
    col_nnz = np.diff(vg_csc.indptr)
    row_len = np.diff(vq.indptr)
    pairs_cum = np.concatenate([[0], np.cumsum(np.bincount(np.repeat(np.arange(nq), row_len),
                                                           weights=col_nnz[vq.indices], minlength=nq))])
    out = np.zeros((nq, ng))
    s = 0
    while s < nq:
        e = int(np.searchsorted(pairs_cum, pairs_cum[s] + max_pairs, side="right")) - 1
        e = min(nq, max(e, s + 1))  # at least one row
        a, b = vq.indptr[s], vq.indptr[e]
        k, val = vq.indices[a:b], vq.data[a:b]
        row = np.repeat(np.arange(e - s), row_len[s:e])
        cnt = col_nnz[k]
        total = int(cnt.sum())
        if total:
            pos = np.repeat(vg_csc.indptr[k] - (np.cumsum(cnt) - cnt), cnt) + np.arange(total)
            mins = np.minimum(np.repeat(val, cnt), vg_csc.data[pos]).astype(np.float64)
            flat = np.repeat(row, cnt) * ng + vg_csc.indices[pos]
            out[s:e] = np.bincount(flat, weights=mins, minlength=(e - s) * ng).reshape(e - s, ng)
        s = e
    return out


def re_ranking(q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3) -> np.ndarray:
    """k-reciprocal re-ranked query-gallery distance (Zhong et al., CVPR 2017; torchreid ``re_ranking``).

    Args:
        q_g_dist: ``(Q, G)`` original query-gallery distance, >= 0. Expected: squared Euclidean distance
            (``2 - 2 cos`` for L2-normalised features), as torchreid passes; it is squared again and each
            row of the joint matrix divided by its maximum (module docstring, step 1).
        q_q_dist: ``(Q, Q)`` query-query distance, same metric.
        g_g_dist: ``(G, G)`` gallery-gallery distance, same metric.
        k1: neighbourhood size of the k-reciprocal sets (paper Sec. 4.4: 20).
        k2: local query expansion size (paper: 6); 1 disables it.
        lambda_value: weight of the original distance in the final one (paper eq. 12: 0.3).

    Returns:
        ``(Q, G)`` float32 final distance, smaller = more similar.

    Raises:
        ValueError: inconsistent shapes, NaN inputs, ``k1 < 1``, ``k2 < 1`` or ``lambda_value`` outside [0, 1].

    Memory: one dense ``(Q+G)^2`` float32 array (1.5 GB at Q+G = 19,281) plus sparse encodings.
    """
    q_g = np.asarray(q_g_dist)
    q_q, g_g = np.asarray(q_q_dist), np.asarray(g_g_dist)
    if q_g.ndim != 2:
        raise ValueError(f"re_ranking: q_g_dist must be 2-D (Q, G), got shape {q_g.shape}")
    nq, ng = q_g.shape
    if q_q.shape != (nq, nq) or g_g.shape != (ng, ng):
        raise ValueError(
            f"re_ranking: expected q_q_dist {(nq, nq)} and g_g_dist {(ng, ng)} for q_g_dist {(nq, ng)}, "
            f"got {q_q.shape} and {g_g.shape}"
        )
    if k1 < 1 or k2 < 1:
        raise ValueError(f"re_ranking: k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"re_ranking: lambda_value must be in [0, 1], got {lambda_value}")
    if any(np.isnan(x).any() for x in (q_g, q_q, g_g)):
        raise ValueError("re_ranking: the input distances contain NaN; check the features")
    n = nq + ng
    # torchreid builds D = [[qq, qg], [qg^T, gg]], squares it, divides column j by its max and transposes;
    # build D^T directly and divide each row by its max: the same numbers.
    dist = np.empty((n, n), dtype=np.float32)
    _copy_transposed(dist[:nq, :nq], q_q)
    dist[:nq, nq:] = q_g
    _copy_transposed(dist[nq:, :nq], q_g)
    _copy_transposed(dist[nq:, nq:], g_g)
    np.square(dist, out=dist)
    row_max = dist.max(axis=1, keepdims=True)
    row_max[row_max == 0] = 1.0
    dist /= row_max

    k = min(n, max(k1 + 1, k2))
    nbrs = _top_k_stable(dist, k)
    v = _encode(dist, nbrs, k1)
    if k2 != 1:
        kk = min(k2, n)
        qe = sp.csr_matrix(
            (np.full(n * kk, 1.0 / kk, dtype=np.float32), (np.repeat(np.arange(n), kk), nbrs[:, :kk].ravel())),
            shape=(n, n),
        )
        v = (qe @ v).tocsr()
    v.eliminate_zeros()
    s_min = _sum_min(v[:nq], v[nq:].tocsc())
    jaccard = 1.0 - s_min / (2.0 - s_min)
    final = (1.0 - lambda_value) * jaccard + lambda_value * dist[:nq, nq:]
    return final.astype(np.float32)


__all__ = ["re_ranking"]
