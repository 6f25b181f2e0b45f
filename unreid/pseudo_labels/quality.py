"""Pseudo-label quality report.

Always: clusters, outliers, outlier ratio, cluster-size histogram, mean size, and the cross-camera
ratio (fraction of clusters whose members come from >= 2 cameras: whether the camera gap is being
crossed). With ground truth - **for reporting only**, it never reaches training - NMI and ARI
(scikit-learn; outliers each count as their own singleton cluster, ``ari_clustered`` over clustered
samples only) and pairwise precision / recall / F-score over same-cluster pairs (from the
contingency table, not O(N^2)).
"""

from __future__ import annotations

import numpy as np

_BUCKETS = [(1, 1, "1"), (2, 2, "2"), (3, 4, "3-4"), (5, 8, "5-8"), (9, 16, "9-16"), (17, 32, "17-32"),
            (33, 10**12, ">32")]


def _pairs(counts: np.ndarray) -> float:
    c = counts.astype(np.float64)
    return float((c * (c - 1) / 2).sum())


def cluster_report(labels: np.ndarray, camids: np.ndarray | None = None, gt: np.ndarray | None = None) -> dict:
    """JSON-serialisable quality report of ``labels`` ``(N,) int`` (-1 = outlier).

    Args:
        camids: ``(N,) int`` cameras, for the cross-camera ratio.
        gt: ``(N,) int`` true identities (all >= 0) - report only.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    clustered = labels >= 0
    sizes = np.bincount(labels[clustered]) if clustered.any() else np.zeros(0, np.int64)
    sizes = sizes[sizes > 0]
    rep: dict = {
        "num_samples": int(n),
        "num_clusters": int(len(sizes)),
        "num_outliers": int((~clustered).sum()),
        "outlier_ratio": float((~clustered).mean()) if n else 0.0,
        "mean_size": float(sizes.mean()) if len(sizes) else 0.0,
        "size_histogram": {name: int(((sizes >= lo) & (sizes <= hi)).sum()) for lo, hi, name in _BUCKETS},
        "cross_camera_ratio": None,
    }
    if camids is not None and len(sizes):
        cams = np.asarray(camids)[clustered]
        lab = labels[clustered]
        pairs = np.unique(np.stack([lab, cams], 1), axis=0)
        per_cluster = np.bincount(pairs[:, 0])
        per_cluster = per_cluster[per_cluster > 0]
        rep["cross_camera_ratio"] = float((per_cluster >= 2).mean())
    if gt is not None:
        from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

        gt = np.asarray(gt, dtype=np.int64)
        if len(gt) != n or (gt < 0).any():
            raise ValueError("gt must hold one identity >= 0 per sample")
        full = labels.copy()
        full[~clustered] = labels.max(initial=-1) + 1 + np.arange((~clustered).sum())  # outliers: singletons
        rep["nmi"] = float(normalized_mutual_info_score(gt, full))
        rep["ari"] = float(adjusted_rand_score(gt, full))
        rep["ari_clustered"] = float(adjusted_rand_score(gt[clustered], labels[clustered])) if clustered.sum() > 1 else 0.0
        # pairwise precision / recall over pairs in the same predicted cluster (outliers pair with nobody)
        pred_pairs = _pairs(np.bincount(labels[clustered])) if clustered.any() else 0.0
        true_pairs = _pairs(np.bincount(gt))
        joint = np.unique(np.stack([labels[clustered], gt[clustered]], 1), axis=0, return_counts=True)[1]
        tp = _pairs(joint)
        p = tp / pred_pairs if pred_pairs else 0.0
        r = tp / true_pairs if true_pairs else 0.0
        rep.update(pairwise_precision=float(p), pairwise_recall=float(r),
                   pairwise_f=float(2 * p * r / (p + r)) if p + r else 0.0)
    return rep
