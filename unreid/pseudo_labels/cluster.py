"""Clustering for pseudo-labels: DBSCAN on the sparse Jaccard graph, InfoMap, GCL's rho-adaptive eps.

* DBSCAN (Ester et al., KDD 1996) with scikit-learn's ``DBSCAN(metric="precomputed")`` on a sparse
  graph. scikit-learn treats only the **stored** entries of a sparse precomputed matrix as
  neighbours, so the graph keeps every pair with distance ``<= eps`` as an explicit entry, zero
  distances and the diagonal included; pairs not stored are at distance 1 (the Jaccard distance of
  pairs sharing no column). The labels equal scikit-learn's on the dense matrix (tested) whenever
  ``eps < 1``; with ``eps >= 1`` every pair is a neighbour in the dense matrix, which a sparse graph
  cannot hold, so that case is answered directly: one cluster if ``N >= min_samples``, else all
  outliers (what dense DBSCAN returns).
* rho-adaptive eps (GCL, chenhao2345/GCL @88aed52; ``shared/ANCHORS.md``): the mean of the
  smallest ``round(rho * M)`` values (``np.round``, half to even) of the ``M`` non-zero entries of
  the strict upper triangle of the **dense** Jaccard matrix. Absent pairs are 1 and count, zero
  distances do not; both are accounted for exactly from the sparse matrix.
* InfoMap (Rosvall & Bergstrom, PNAS 2008) as Cluster Contrast's variant
  (alibaba/cluster-contrast-reid ``clustercontrast/utils/infomap_cluster.py``; ANCHORS.md): the
  ``k`` nearest neighbours by inner product (self included in the ``k``), a directed link
  ``i -> j`` weighted by the cosine for every neighbour ``j != i`` with ``cosine >= min_sim``,
  ``Infomap("--two-level --directed")``; a sample with no outgoing link is an outlier (CC makes it a
  singleton cluster, removed by the size rule), and modules with fewer than ``min_size`` members
  (CC: size <= 4) become outliers.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from torch import Tensor


def _dbscan_graph(n: int, rows: np.ndarray, cols: np.ndarray, dist: np.ndarray, eps: float,
                  min_samples: int) -> np.ndarray:
    """DBSCAN on the neighbour pairs ``rows <= cols`` (each pair once, diagonal included) within eps."""
    from sklearn.cluster import DBSCAN

    if eps >= 1.0:
        return np.zeros(n, np.int64) if n >= min_samples else np.full(n, -1, np.int64)
    keep = dist <= eps
    rows, cols, dist = rows[keep], cols[keep], dist[keep]
    off = rows != cols
    r = np.concatenate([rows, cols[off]])
    c = np.concatenate([cols, rows[off]])
    d = np.concatenate([dist, dist[off]]).astype(np.float64)
    order = np.lexsort((d, r))  # each row sorted by distance: scikit-learn then needs no copy
    indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=n))])
    graph = sp.csr_matrix((d[order], c[order], indptr), shape=(n, n))
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(graph)
    return labels.astype(np.int64)


def dbscan_sparse(dist: sp.spmatrix, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN labels of a sparse precomputed Jaccard distance matrix.

    Args:
        dist: ``(N, N)`` sparse symmetric distances in [0, 1] (e.g.
            :func:`unreid.pseudo_labels.jaccard.jaccard_distance`); entries not stored are 1.
            Explicitly stored zeros (diagonal included) are kept as neighbours.
        eps: neighbourhood radius on the Jaccard distance (CC: 0.6).
        min_samples: neighbours (the point itself included, as scikit-learn) to be a core point (CC: 4).

    Returns:
        ``(N,) int64`` labels, ``-1`` for noise, identical to
        ``sklearn.cluster.DBSCAN(eps, min_samples, metric="precomputed")`` on the dense matrix.

    Raises:
        ValueError: ``dist`` not square, ``eps <= 0`` or ``min_samples < 1``.
    """
    n = dist.shape[0]
    if dist.shape != (n, n):
        raise ValueError(f"dist must be square, got shape {dist.shape}")
    if eps <= 0 or min_samples < 1:
        raise ValueError(f"DBSCAN needs eps > 0 and min_samples >= 1, got eps={eps}, min_samples={min_samples}")
    coo = sp.triu(dist, k=0, format="coo")
    return _dbscan_graph(n, coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data, eps, min_samples)


class SmallestPairs:
    """Streams upper-triangle Jaccard blocks and keeps what GCL's rho-adaptive eps and DBSCAN need.

    Keeps every stored zero and the smallest ``cap = round(rho * N(N-1)/2)`` positive strict-upper
    values (ties at the cap kept), with their pairs, so that :meth:`eps` equals the dense definition
    and :meth:`pairs_within` returns every pair with ``distance <= eps``. Memory is ``O(cap)``: the
    entries are pruned to those whenever more than ``4 cap + slack`` are held. :meth:`bound` tells
    the producer which distances can still matter (``jaccard_upper_blocks(..., bound=)``).
    """

    def __init__(self, n: int, rho: float, slack: int = 1_000_000) -> None:
        if not 0.0 < rho < 1.0:
            raise ValueError(f"rho must be in (0, 1), got {rho}")
        self.n, self.rho, self.slack = n, rho, int(slack)
        self.cap = max(1, int(np.round(rho * n * (n - 1) / 2)))
        self.zeros = 0  # stored strict-upper zeros (not counted by the dense definition)
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._size = 0
        self._tau = 1.0  # the cap-th smallest positive strict-upper distance so far (1: not yet cap of them)

    def add(self, rows: np.ndarray, cols: np.ndarray, dist: np.ndarray) -> None:
        """Take one block of ``(rows <= cols, dist)`` entries."""
        self.zeros += int(((dist == 0) & (rows != cols)).sum())
        self._parts.append((rows, cols, dist))
        self._size += len(dist)
        if self._size > 4 * self.cap + self.slack:
            self._prune()

    def _prune(self) -> None:
        rows = np.concatenate([p[0] for p in self._parts])
        cols = np.concatenate([p[1] for p in self._parts])
        dist = np.concatenate([p[2] for p in self._parts])
        pos = (dist > 0) & (rows != cols)
        keep = ~pos  # zeros and the diagonal always stay
        if pos.sum() > self.cap:
            vals = dist[pos]
            tau = np.partition(vals, self.cap - 1)[self.cap - 1]
            keep |= pos & (dist <= tau)
            self._tau = float(tau)
        else:
            keep |= pos
        self._parts = [(rows[keep], cols[keep], dist[keep])]
        self._size = int(keep.sum())

    def bound(self) -> float:
        """A distance above which no pair is needed any more: the ``cap``-th smallest positive
        strict-upper distance among the entries pruned so far (1.0 until ``cap`` of them were held).

        It only decreases, and the final ``cap``-th smallest, which bounds :meth:`eps` and every pair
        :meth:`pairs_within` returns, is at most any value it took; zeros are never above it. Pairs
        above it may therefore be left out of later :meth:`add` calls without changing any result.
        """
        return self._tau

    def eps(self) -> float:
        """GCL's eps: mean of the smallest ``round(rho * M)`` non-zero strict-upper distances.

        Raises:
            ValueError: ``rho`` selects no pair.
        """
        self._prune()
        rows, cols, dist = self._parts[0]
        m = self.n * (self.n - 1) // 2 - self.zeros
        top = int(np.round(self.rho * m))
        if top < 1:
            raise ValueError(f"pseudo_labels.rho={self.rho} selects no pair among {m} (N={self.n}); raise rho")
        vals = np.sort(dist[(dist > 0) & (rows != cols)].astype(np.float64))
        if top <= len(vals):
            return float(vals[:top].mean())
        return float((vals.sum() + (top - len(vals))) / top)  # absent pairs, each exactly 1

    def pairs_within(self, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kept entries with distance ``<= eps`` (all of them when ``eps <= eps()``)."""
        self._prune()
        rows, cols, dist = self._parts[0]
        keep = dist <= eps
        return rows[keep], cols[keep], dist[keep]


def rho_eps(dist: sp.spmatrix, rho: float) -> float:
    """GCL's rho-adaptive eps from a sparse Jaccard matrix, equal to the dense definition.

    Dense definition (GCL ``examples``; ANCHORS.md): ``tri = np.triu(D, 1)``,
    ``vals = np.sort(tri[np.nonzero(tri)])``, ``eps = vals[:np.round(rho * vals.size)].mean()``.

    Args:
        dist: ``(N, N)`` sparse symmetric Jaccard distances; entries not stored are 1.
        rho: fraction in (0, 1) (GCL: 0.002 Market/Duke, 0.0012 MSMT17).

    Returns:
        eps as a python float.

    Raises:
        ValueError: ``rho`` outside (0, 1) or selecting no pair.
    """
    n = dist.shape[0]
    coo = sp.triu(dist, k=1, format="coo")
    keeper = SmallestPairs(n, rho)
    keeper.add(coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data)
    return keeper.eps()


def infomap_cluster(features: Tensor | np.ndarray, k: int = 15, min_sim: float = 0.5, min_size: int = 5,
                    neighbours: tuple[np.ndarray, np.ndarray] | None = None, knn_method: str = "exact",
                    knn_block: int = 4096) -> np.ndarray:
    """InfoMap pseudo-labels, Cluster Contrast's variant (module docstring).

    Args:
        features: ``(N, d) float32`` L2-normalised features.
        k: neighbours per sample including itself (CC: 15), clipped to N.
        min_sim: smallest cosine similarity of a link (CC: 0.5).
        min_size: modules smaller than this become outliers (CC: 5, i.e. size <= 4 is dropped).
        neighbours: precomputed ``(indices, similarities)`` from
            :func:`unreid.pseudo_labels.knn.knn` with ``>= k`` columns.
        knn_method, knn_block: k-NN options when ``neighbours`` is ``None``.

    Returns:
        ``(N,) int64`` labels, contiguous from 0, ``-1`` for outliers.

    Raises:
        ImportError: the ``infomap`` package is missing (``pip install infomap``).
    """
    try:
        from infomap import Infomap
    except ImportError as err:
        raise ImportError("pseudo_labels.cluster=infomap needs the infomap package: pip install infomap "
                          "(or use pseudo_labels.cluster=dbscan)") from err
    from unreid.pseudo_labels.knn import knn

    n = features.shape[0]
    kk = min(k, n)
    if neighbours is None:
        neighbours = knn(features, kk, knn_method, knn_block)
    idx, sim = neighbours[0][:, :kk], np.asarray(neighbours[1][:, :kk], dtype=np.float32)
    rows = np.repeat(np.arange(n, dtype=np.int64), kk)
    cols = idx.ravel()
    s = sim.ravel()
    # CC compares the float32 distance 1 - sim with 1 - min_sim
    ok = (rows != cols) & ((np.float32(1.0) - s) <= 1.0 - min_sim)
    rows, cols, s = rows[ok], cols[ok], s[ok]
    labels = np.full(n, -1, dtype=np.int64)
    if len(rows) == 0:
        return labels
    im = Infomap("--two-level --directed --silent")
    for a, b, w in zip(rows.tolist(), cols.tolist(), s.tolist()):
        im.add_link(a, b, w)
    result = im.run()
    found = result.modules() if result is not None and hasattr(result, "modules") else im.get_modules()
    modules = np.full(n, -1, dtype=np.int64)
    for node, module in found.items():
        modules[node] = module
    has_link = np.zeros(n, dtype=bool)
    has_link[rows] = True
    member = modules >= 0
    uniq, inv, counts = np.unique(modules[member], return_inverse=True, return_counts=True)
    big = counts >= min_size
    new_id = np.cumsum(big) - 1
    lab = np.where(big[inv], new_id[inv], -1)
    labels[member] = lab
    labels[~has_link] = -1  # CC: no outgoing link -> singleton -> outlier
    _, labels[labels >= 0] = np.unique(labels[labels >= 0], return_inverse=True)
    return labels
