"""Features -> pseudo-labels: k-NN, sparse k-reciprocal Jaccard distance, DBSCAN / InfoMap, quality.

One entry point for every method (one object owns "features -> pseudo-labels", after OpenUnReID's
label generator; DESIGN.md)::

    labels = PseudoLabeler(cfg.pseudo_labels).fit(features, camids=camids)

Modules: ``knn.py`` (exact blocked / faiss / HNSW neighbours), ``jaccard.py`` (sparse k-reciprocal
encoding and Jaccard distance, equal to the shared dense reference), ``cluster.py`` (DBSCAN on the
sparse graph, rho-adaptive eps, InfoMap), ``quality.py`` (the report), ``camera.py``,
``ca_jaccard.py`` and ``matching.py`` (camera-aware options), ``colour.py`` and ``lomo.py`` (the
hand-crafted prior, ``pseudo_labels.colour_weight`` / ``colour_descriptor``). ``pipeline.py`` composes
them from the config (``build_label_pipeline``: transforms -> grouping -> labeller per group ->
association), the entry point of the methods.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from unreid.config import PseudoLabelConfig
from unreid.pseudo_labels.base import PseudoLabels
from unreid.pseudo_labels.quality import cluster_report, nearest_neighbour_hits

log = logging.getLogger("unreid")

#: tolerance on | ||f|| - 1 | before features count as not L2-normalised
NORM_TOLERANCE = 1e-3


class NoClustersError(RuntimeError):
    """Every sample is an outlier, so there is nothing to train on this epoch.

    Raised by :meth:`PseudoLabeler.fit`; the trainer catches it (``pseudo_labels.on_no_clusters``).
    """


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Contiguous ids ``0..C-1`` (the sorted distinct ids, renumbered); ``-1`` kept."""
    out = np.full(len(labels), -1, dtype=np.int64)
    keep = labels >= 0
    uniq, inv = np.unique(labels[keep], return_inverse=True)
    out[keep] = inv
    return out, len(uniq)


def check_features(features: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Validate features for pseudo-labelling and return them as float32, L2-normalised.

    Args:
        features: ``(N, d)`` tensor (any device) or array.

    Returns:
        ``(N, d) float32`` tensor on the same device. Rows whose norm differs from 1 by more than
        :data:`NORM_TOLERANCE` cause a logged warning and the whole matrix is L2-normalised
        (the k-reciprocal distances assume unit vectors: ``d = 2 - 2 cos``).

    Raises:
        ValueError: not 2-D or ``N < 2``; NaN / inf values (the number of bad rows is given);
            all-zero rows (they have no direction).
    """
    f = _check_finite(features)
    norms = f.norm(dim=1)
    zero = int((norms == 0).sum())
    if zero:
        raise ValueError(f"{zero} of {f.shape[0]} feature rows are all zeros and cannot be L2-normalised; "
                         "check the model's output (e.g. a dead ReLU / pooling layer)")
    if float((norms - 1).abs().max()) > NORM_TOLERANCE:
        log.warning("pseudo-labelling: features are not L2-normalised (norms %.4g..%.4g); normalising them",
                    float(norms.min()), float(norms.max()))
        f = F.normalize(f, dim=1)
    return f.contiguous()


def _check_finite(features: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``features`` as a float32 tensor; ``ValueError`` when not ``(N >= 2, d >= 1)`` or holding NaN / inf."""
    f = torch.as_tensor(features)
    if f.ndim != 2 or f.shape[0] < 2 or f.shape[1] < 1:
        raise ValueError(f"pseudo-labelling needs an (N >= 2, d >= 1) feature matrix, got shape {tuple(f.shape)}")
    f = f.float()
    row_sum = f.sum(1)  # finite unless the row holds NaN / inf (or overflows: checked exactly below)
    suspect = ~torch.isfinite(row_sum)
    bad = int((~torch.isfinite(f[suspect])).any(1).sum()) if bool(suspect.any()) else 0
    if bad:
        raise ValueError(f"{bad} of {f.shape[0]} feature rows hold NaN or inf; the model diverged or AMP "
                         "overflowed: lower the learning rate, or set optim.amp=false")
    return f.contiguous()


class PseudoLabeler:
    """Turns features into pseudo-labels as configured by ``cfg`` (:class:`unreid.config.PseudoLabelConfig`).

    ``cluster="dbscan"`` (Cluster Contrast, HHCL, GCL): k-NN (``knn``: exact / faiss / hnsw) ->
    sparse k-reciprocal Jaccard distance (``k1``, ``k2``; identical to the shared dense
    ``compute_jaccard_distance``) -> DBSCAN(``eps``, ``min_samples``) on the sparse graph; with
    ``rho`` set, eps is GCL's rho-adaptive eps of this epoch. Only pairs within eps (or, with rho,
    the smallest ``rho`` fraction) are kept after the Jaccard step, so memory stays ``O(N * k)``.
    ``cluster="infomap"``: Cluster Contrast's InfoMap variant (``infomap_k``, ``infomap_min_sim``,
    ``infomap_min_size``). See ``jaccard.py`` and ``cluster.py`` for the sources of every rule.
    """

    def __init__(self, cfg: PseudoLabelConfig | None = None) -> None:
        self.cfg = cfg or PseudoLabelConfig()

    def fit(self, features: torch.Tensor | np.ndarray, camids: np.ndarray | None = None,
            gt: np.ndarray | None = None) -> PseudoLabels:
        """Cluster ``features`` into pseudo-labels.

        Args:
            features: ``(N, d) float32`` L2-normalised features (tensor on any device, or array).
                Non-normalised features are normalised with a logged warning. Or a
                :class:`~unreid.pseudo_labels.prior.GramFeatures` (``pseudo_labels.prior_mode=gram``):
                inner products ``f @ f.T + gram``, taken as they are (k-NN ``exact`` only).
            camids: ``(N,) int`` camera ids, for the report's cross-camera ratio only.
            gt: ``(N,) int`` true identities, for the report ONLY: the labels never depend on it.

        Returns:
            :class:`PseudoLabels`: ``labels`` ``(N,) int64`` contiguous ``0..C-1``, ``-1`` for
            outliers; ``report`` = :func:`cluster_report` plus ``time_knn_s``,
            ``time_jaccard_s``, ``time_cluster_s``, ``time_total_s`` (seconds); ``eps`` the eps
            used (``None`` for InfoMap).

        Raises:
            ValueError: ``N < 2``, NaN / inf or all-zero feature rows (see :func:`check_features`),
                or ``camids`` / ``gt`` of the wrong length.
            NoClustersError: every sample is an outlier.

        When ``N <= k1`` the neighbour lists cannot hold ``k1`` samples: ``k1`` is clipped to ``N``
        with a logged warning (every sample is then in every list); ``infomap_k`` likewise.
        """
        from unreid.pseudo_labels.prior import GramFeatures

        cfg = self.cfg
        t0 = time.perf_counter()
        if isinstance(features, GramFeatures):
            f = GramFeatures(_check_finite(features.features), features.gram.float())
        else:
            f = check_features(features)
        n = f.shape[0]
        for name, arr in (("camids", camids), ("gt", gt)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} entries for {n} feature rows")
        neighbours = self.neighbours(f)
        t_knn = time.perf_counter()
        if cfg.cluster == "dbscan":
            graph, eps = self.jaccard_graph(f, neighbours)
            del neighbours
            t_jac = time.perf_counter()
            raw = self.dbscan(n, graph, eps)
        else:
            from unreid.pseudo_labels.cluster import infomap_cluster

            t_jac = t_knn
            eps = None
            raw = infomap_cluster(f, neighbours[0].shape[1], cfg.infomap_min_sim, cfg.infomap_min_size,
                                  neighbours=neighbours)
        t_cl = time.perf_counter()
        labels, num = _relabel(raw)
        if num == 0:
            if cfg.cluster == "dbscan":
                hint = (f"DBSCAN eps={eps:.4g}, min_samples={cfg.min_samples}: raise pseudo_labels.eps "
                        "(or rho) or lower pseudo_labels.min_samples")
            else:
                hint = (f"InfoMap min_sim={cfg.infomap_min_sim}, min_size={cfg.infomap_min_size}: lower "
                        "pseudo_labels.infomap_min_sim or infomap_min_size")
            raise NoClustersError(f"all {n} samples are outliers (N={n}; {hint})")
        report = cluster_report(labels, camids, gt)
        report.update(time_knn_s=round(t_knn - t0, 3), time_jaccard_s=round(t_jac - t_knn, 3),
                      time_cluster_s=round(t_cl - t_jac, 3), time_total_s=round(time.perf_counter() - t0, 3))
        return PseudoLabels(labels, num, report=report, eps=eps, source="clustering")

    # The stages of :meth:`fit`, public so that benchmarks/pseudo_labels.py can time each one.
    def neighbours(self, f: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1: k-NN ``(indices, similarities)``, ``(N, k)`` each, of checked features ``f``.

        ``k = min(k1, N)`` for DBSCAN (warning when clipped), ``min(infomap_k, N)`` for InfoMap.
        """
        from unreid.pseudo_labels.knn import knn

        cfg, n = self.cfg, f.shape[0]
        if cfg.cluster == "dbscan":
            k = min(cfg.k1, n)
            if k < cfg.k1:
                log.warning("pseudo-labelling: N=%d <= k1=%d; clipping k1 to %d", n, cfg.k1, k)
        else:
            k = min(cfg.infomap_k, n)
        if hasattr(f, "gram"):  # GramFeatures
            return knn(f.features, k, cfg.knn, cfg.knn_block, gram=f.gram)
        return knn(f, k, cfg.knn, cfg.knn_block, hnsw_m=cfg.hnsw_m,
                   hnsw_ef_construction=cfg.hnsw_ef_construction, hnsw_ef_search=cfg.hnsw_ef_search,
                   pca_dim=cfg.pca_dim, pca_oversample=cfg.pca_oversample)

    def jaccard_graph(self, f: torch.Tensor, neighbours: tuple[np.ndarray, np.ndarray],
                      ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], float]:
        """Stage 2: the Jaccard pairs DBSCAN needs, and eps.

        Returns:
            ``((rows, cols, dist), eps)``: every pair ``rows <= cols`` (diagonal included) with
            Jaccard distance ``<= eps``; eps is ``cfg.eps``, or GCL's rho-adaptive eps when
            ``cfg.rho`` is set (computed exactly over all pairs while streaming).
        """
        from unreid.pseudo_labels.cluster import SmallestPairs
        from unreid.pseudo_labels.jaccard import jaccard_upper_blocks

        cfg, n = self.cfg, f.shape[0]
        v = self.encoding(f, neighbours)
        if cfg.rho is not None:
            keeper = SmallestPairs(n, cfg.rho)
            for block in jaccard_upper_blocks(v, backend=cfg.jaccard_backend, bound=keeper.bound):
                keeper.add(*block)
            eps = keeper.eps()
            return keeper.pairs_within(eps), eps
        parts = list(jaccard_upper_blocks(v, max_dist=cfg.eps, backend=cfg.jaccard_backend))
        rows, cols, dist = (np.concatenate([p[i] for p in parts]) for i in range(3))
        return (rows, cols, dist), cfg.eps

    def encoding(self, f: torch.Tensor, neighbours: tuple[np.ndarray, np.ndarray]) -> sp.csr_matrix:
        """Stage 2a: the sparse k-reciprocal encoding ``V`` ``(N, N)`` (query expansion included).

        ``k1`` = the neighbour lists' width (``min(cfg.k1, N)``), ``k2`` = ``cfg.k2``; see
        :func:`unreid.pseudo_labels.jaccard.k_reciprocal_encoding`. Subclasses with another encoding
        (e.g. :class:`unreid.pseudo_labels.ca_jaccard.CameraAwareJaccardLabeler`) override this.
        """
        from unreid.pseudo_labels.jaccard import k_reciprocal_encoding

        if hasattr(f, "gram"):  # GramFeatures
            return k_reciprocal_encoding(f.features, neighbours[0], neighbours[1], neighbours[0].shape[1], self.cfg.k2,
                                         gram=f.gram)
        return k_reciprocal_encoding(f, neighbours[0], neighbours[1], neighbours[0].shape[1], self.cfg.k2)

    def dbscan(self, n: int, graph: tuple[np.ndarray, np.ndarray, np.ndarray], eps: float) -> np.ndarray:
        """Stage 3: DBSCAN labels ``(N,) int64`` (-1 = noise) of the pairs from :meth:`jaccard_graph`."""
        from unreid.pseudo_labels.cluster import _dbscan_graph

        return _dbscan_graph(n, *graph, eps, self.cfg.min_samples)


__all__ = ["NoClustersError", "PseudoLabeler", "PseudoLabels", "check_features", "cluster_report", "nearest_neighbour_hits"]
