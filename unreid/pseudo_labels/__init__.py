"""Features -> pseudo-labels: k-NN, sparse k-reciprocal Jaccard distance, DBSCAN / InfoMap, quality.

One entry point for every method (after OpenUnReID's label generator, DESIGN.md):
``PseudoLabeler(cfg).fit(features, camids=..., gt=None) -> PseudoLabels``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from unreid.config import PseudoLabelConfig
from unreid.pseudo_labels.base import PseudoLabels
from unreid.pseudo_labels.quality import cluster_report

log = logging.getLogger("unreid")


class NoClustersError(RuntimeError):
    """Every sample is an outlier: there is nothing to train on."""


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    out = np.full_like(labels, -1)
    keep = labels >= 0
    uniq, inv = np.unique(labels[keep], return_inverse=True)
    out[keep] = inv
    return out, len(uniq)


class PseudoLabeler:
    """Turns features into pseudo-labels with ``cfg`` (``unreid.config.PseudoLabelConfig``).

    DBSCAN path (Cluster Contrast, HHCL, GCL): k-NN -> sparse k-reciprocal Jaccard distance
    (``jaccard.py``, identical to the reference's dense computation) -> DBSCAN(eps, min_samples) on
    the sparse graph, eps optionally rho-adaptive (GCL). InfoMap path: CC's InfoMap variant.
    """

    def __init__(self, cfg: PseudoLabelConfig | None = None) -> None:
        self.cfg = cfg or PseudoLabelConfig()

    def fit(self, features, camids: np.ndarray | None = None, gt: np.ndarray | None = None) -> PseudoLabels:
        """Cluster ``features`` ``(N, d)`` (tensor or array; L2-normalised, else normalised with a warning).

        Args:
            camids: ``(N,)`` cameras, for the report's cross-camera ratio.
            gt: ``(N,)`` true identities, for the report ONLY (labels never depend on it).

        Returns:
            :class:`PseudoLabels` with contiguous labels, ``report`` (quality + timings) and ``eps``.

        Raises:
            ValueError: fewer than 2 samples, or NaN / inf features (the count is given).
            NoClustersError: every sample is an outlier.
        """
        cfg = self.cfg
        f = torch.as_tensor(features).float()
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"pseudo-labelling needs an (N >= 2, d) feature matrix, got shape {tuple(f.shape)}")
        bad = int((~torch.isfinite(f)).any(1).sum())
        if bad:
            raise ValueError(f"{bad} of {f.shape[0]} feature rows hold NaN or inf; check the model (lower the "
                             "learning rate or disable AMP)")
        norms = f.norm(dim=1)
        if (norms - 1).abs().max() > 1e-3:
            log.warning("pseudo-labelling: features are not L2-normalised; normalising them")
            f = F.normalize(f, dim=1)
        n = f.shape[0]
        k1 = min(cfg.k1, n)
        if k1 < cfg.k1:
            log.warning("pseudo-labelling: N=%d <= k1=%d; using k1=%d", n, cfg.k1, k1)
        t0 = time.time()
        from unreid.pseudo_labels.knn import knn

        need = max(k1, cfg.infomap_k if cfg.cluster == "infomap" else 0)
        rank = knn(f, min(need, n), cfg.knn, cfg.knn_block)
        t_knn = time.time() - t0
        eps = cfg.eps
        if cfg.cluster == "dbscan":
            from unreid.pseudo_labels.cluster import dbscan_sparse, rho_eps
            from unreid.pseudo_labels.jaccard import jaccard_distance

            dist = jaccard_distance(f, k1, cfg.k2, initial_rank=rank[:, :k1])
            t_jac = time.time() - t0 - t_knn
            if cfg.rho is not None:
                eps = rho_eps(dist, cfg.rho)
            raw = dbscan_sparse(dist, eps, cfg.min_samples)
        else:
            from unreid.pseudo_labels.cluster import infomap_cluster

            t_jac = 0.0
            raw = infomap_cluster(f, cfg.infomap_k, cfg.infomap_min_sim, cfg.infomap_min_size, initial_rank=rank)
        labels, num = _relabel(raw)
        if num == 0:
            raise NoClustersError(f"all {n} samples are outliers ({cfg.cluster}, eps={eps:.3f}, "
                                  f"min_samples={cfg.min_samples}); raise pseudo_labels.eps or lower "
                                  "pseudo_labels.min_samples")
        report = cluster_report(labels, camids, gt)
        report.update(time_knn_s=round(t_knn, 3), time_jaccard_s=round(t_jac, 3),
                      time_total_s=round(time.time() - t0, 3))
        return PseudoLabels(labels, num, report=report, eps=eps, source="clustering")


__all__ = ["NoClustersError", "PseudoLabeler", "PseudoLabels", "cluster_report"]
