"""k-reciprocal re-ranking of a query-gallery distance (Zhong et al., "Re-ranking Person
Re-identification with k-reciprocal Encoding", CVPR 2017, eqs. 7-12), the standard ``re_ranking``
used by torchreid (``torchreid/utils/rerank.py``) and most re-ID code: defaults k1 20, k2 6, lambda 0.3.

Inputs are original distances (squared Euclidean, or ``2 - 2 cos`` for normalised features). Memory:
one dense ``(Q+G) x (Q+G)`` float32 array plus the sparse encoding.
"""

from __future__ import annotations

import numpy as np


def re_ranking(q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked ``(Q, G)`` distance: ``(1 - lambda) * d_Jaccard + lambda * d_original``."""
    q_g_dist, q_q_dist, g_g_dist = (np.asarray(x, dtype=np.float32) for x in (q_g_dist, q_q_dist, g_g_dist))
    nq = q_g_dist.shape[0]
    original = np.concatenate([np.concatenate([q_q_dist, q_g_dist], 1),
                               np.concatenate([q_g_dist.T, g_g_dist], 1)], 0)
    original = np.power(original, 2).astype(np.float32)
    original = np.transpose(1.0 * original / np.max(original, axis=0))
    n = original.shape[0]
    k1 = min(k1, n - 1)
    rank = np.argsort(original, axis=1)[:, : k1 + 1]
    V = np.zeros_like(original, dtype=np.float32)

    def recip(i, k):
        fwd = rank[i, : k + 1]
        back = rank[fwd, : k + 1]
        return fwd[np.where(back == i)[0]]

    half = int(np.around(k1 / 2))
    for i in range(n):
        r = recip(i, k1)
        exp = r
        for c in r:
            cand = recip(c, half)
            if len(np.intersect1d(cand, r)) > 2.0 / 3 * len(cand):
                exp = np.append(exp, cand)
        exp = np.unique(exp)
        w = np.exp(-original[i, exp])
        V[i, exp] = w / np.sum(w)
    original = original[:nq]
    if k2 != 1:
        V = np.stack([np.mean(V[rank[i, :k2]], axis=0) for i in range(n)]).astype(np.float32)
    inv = [np.where(V[:, i] != 0)[0] for i in range(n)]
    jaccard = np.zeros((nq, n), dtype=np.float32)
    for i in range(nq):
        tmp = np.zeros(n, dtype=np.float32)
        nz = np.where(V[i] != 0)[0]
        for j in nz:
            tmp[inv[j]] += np.minimum(V[i, j], V[inv[j], j])
        jaccard[i] = 1 - tmp / (2 - tmp)
    final = jaccard * (1 - lambda_value) + original * lambda_value
    return final[:, nq:]
