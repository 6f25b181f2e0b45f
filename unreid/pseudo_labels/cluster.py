"""Clustering of the sparse Jaccard graph: DBSCAN, InfoMap, and GCL's rho-adaptive eps.

* DBSCAN (Ester et al., KDD 1996) via scikit-learn on the sparse precomputed distances; only stored
  entries are neighbours there, so entries above eps are dropped first and zero distances are kept
  as explicit entries (``unreid.pseudo_labels.jaccard`` stores them, diagonal included). Results are
  identical to scikit-learn on the dense matrix (absent pairs = 1 > eps).
* InfoMap as Cluster Contrast's variant (``clustercontrast/utils/infomap_cluster.py``; ANCHORS.md):
  ``k = 15`` neighbours, edges with cosine >= 0.5, two-level directed InfoMap, clusters with fewer
  than ``min_size`` (5, i.e. size <= 4) members become outliers.
* rho-adaptive eps (GCL, chenhao2345/GCL; ANCHORS.md): mean of the smallest ``rho`` fraction of the
  non-zero strict-upper-triangle entries of the **dense** Jaccard matrix; implicit entries (exactly
  1) count, so the sparse computation adds them back.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def dbscan_sparse(dist: sp.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN labels ``(N,) int64`` (-1 = outlier) of a sparse precomputed distance matrix."""
    from sklearn.cluster import DBSCAN

    g = dist.tocsr()
    graph = _filter(g, g.data <= eps)
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=1).fit_predict(graph).astype(np.int64)


def _filter(g: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    rows = np.repeat(np.arange(g.shape[0]), np.diff(g.indptr))[keep]
    out = sp.csr_matrix((g.data[keep], (rows, g.indices[keep])), shape=g.shape)
    # csr construction from COO would drop nothing, but make sure explicit zeros survive
    if out.nnz != int(keep.sum()):
        raise RuntimeError("explicit zero distances were lost while filtering the Jaccard graph")
    return out


def rho_eps(dist: sp.csr_matrix, rho: float) -> float:
    """GCL's adaptive eps from the sparse Jaccard matrix, equal to the dense definition.

    Dense definition: ``tri = triu(D, 1)``; ``vals = sort(tri[tri > 0])``; eps = mean of the first
    ``round(rho * len(vals))`` values. Absent pairs are 1 and count.
    """
    n = dist.shape[0]
    coo = sp.triu(dist, k=1).tocoo()
    stored = coo.data[coo.data > 0]
    implicit = n * (n - 1) // 2 - coo.nnz  # pairs not stored: distance exactly 1
    total = len(stored) + implicit
    top = int(round(rho * total))
    if top < 1:
        raise ValueError(f"rho={rho} selects no pair among {total}; raise pseudo_labels.rho")
    vals = np.sort(stored.astype(np.float64))
    if top <= len(vals):
        return float(vals[:top].mean())
    return float((vals.sum() + (top - len(vals)) * 1.0) / top)


def infomap_cluster(features: torch.Tensor, k: int = 15, min_sim: float = 0.5, min_size: int = 5,
                    initial_rank: np.ndarray | None = None) -> np.ndarray:
    """InfoMap pseudo-labels ``(N,) int64`` (-1 = outlier), Cluster Contrast's variant.

    Raises:
        ImportError: the ``infomap`` package is missing (``pip install infomap``).
    """
    try:
        from infomap import Infomap
    except ImportError as err:
        raise ImportError("pseudo_labels.cluster=infomap needs the infomap package: pip install infomap") from err
    from unreid.pseudo_labels.knn import knn

    n = features.shape[0]
    kk = min(k, n)
    nbrs = initial_rank[:, :kk] if initial_rank is not None else knn(features, kk)
    f = features.float()
    sims = (f[torch.arange(n).repeat_interleave(kk)] * f[torch.from_numpy(nbrs.ravel())]).sum(1).numpy()
    im = Infomap("--two-level --directed --silent")
    rows = np.repeat(np.arange(n), kk)
    cols = nbrs.ravel()
    ok = (sims >= min_sim) & (rows != cols)
    for a, b, w in zip(rows[ok], cols[ok], sims[ok]):
        im.add_link(int(a), int(b), float(w))
    for i in range(n):
        im.add_node(i)
    result = im.run()
    modules = result.modules() if result is not None and hasattr(result, "modules") else im.get_modules()
    mods = np.full(n, -1, dtype=np.int64)
    for node, module in modules.items():
        mods[node] = module
    labels = np.full(n, -1, dtype=np.int64)
    uniq, counts = np.unique(mods[mods >= 0], return_counts=True)
    big = uniq[counts >= min_size]
    remap = {m: i for i, m in enumerate(big)}
    for i in range(n):
        if mods[i] in remap:
            labels[i] = remap[mods[i]]
    return labels
