"""Pseudo-label quality report (what the trainer logs every epoch).

Always: number of clusters and outliers, outlier ratio, cluster-size histogram, mean cluster size
and, with camera ids, the cross-camera ratio (fraction of clusters whose members come from at least
two cameras: whether clustering crosses the camera gap rather than grouping by camera).

With ground-truth identities - **for the report only**; they never reach a loss, a sampler or a
clustering step (DESIGN.md):

* ``nmi`` and ``ari``: scikit-learn ``normalized_mutual_info_score`` (arithmetic normalisation) and
  ``adjusted_rand_score`` over **all** samples, each outlier counted as its own singleton cluster.
  Choice: the outliers are samples the epoch does not train on, and scoring them as singletons
  penalises discarding same-identity samples, while treating ``-1`` as one big cluster would reward
  a pile of unrelated outliers. ``ari_clustered`` is the ARI over clustered samples only.
* ``pairwise_precision`` / ``pairwise_recall`` / ``pairwise_f``: over unordered sample pairs,
  precision = same-identity pairs among pairs in the same predicted cluster, recall = those among
  all same-identity pairs (outliers pair with nobody, so they lower recall), F = harmonic mean.
  Computed from contingency-table counts (``sum C(n, 2)``), never from the ``O(N^2)`` pairs.

Every value is a plain python ``int`` / ``float`` / ``None`` / ``dict`` (JSON-serialisable).
"""

from __future__ import annotations

import numpy as np

#: cluster-size buckets (inclusive bounds) of ``size_histogram``
SIZE_BUCKETS = ((1, 1, "1"), (2, 2, "2"), (3, 4, "3-4"), (5, 8, "5-8"), (9, 16, "9-16"), (17, 32, "17-32"),
                (33, None, ">32"))


def _pairs(counts: np.ndarray) -> int:
    c = counts.astype(np.int64)
    return int((c * (c - 1) // 2).sum())


def cluster_report(labels: np.ndarray, camids: np.ndarray | None = None, gt: np.ndarray | None = None) -> dict:
    """Quality report of pseudo-labels.

    Args:
        labels: ``(N,) int`` cluster ids (any non-negative ids), ``-1`` for outliers.
        camids: ``(N,) int`` camera ids, or ``None``.
        gt: ``(N,) int`` true identities, all ``>= 0``, or ``None``. Report only.

    Returns:
        dict with ``num_samples``, ``num_clusters``, ``num_outliers``, ``outlier_ratio``,
        ``size_histogram`` (bucket name -> number of clusters, buckets :data:`SIZE_BUCKETS`),
        ``mean_size`` (mean members per cluster, 0.0 without clusters), ``cross_camera_ratio``
        (``None`` without camids or clusters); with ``gt`` also ``nmi``, ``ari``, ``ari_clustered``
        (``None`` with fewer than 2 clustered samples), ``pairwise_precision``,
        ``pairwise_recall``, ``pairwise_f`` (0.0 where the denominator is 0).

    Raises:
        ValueError: ``labels`` not 1-D, ``camids`` / ``gt`` of another length, or ``gt < 0``.
    """
    labels = np.asarray(labels).astype(np.int64)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    n = len(labels)
    clustered = labels >= 0
    lab = labels[clustered]
    _, inv, sizes = np.unique(lab, return_inverse=True, return_counts=True)
    rep: dict = {
        "num_samples": int(n),
        "num_clusters": int(len(sizes)),
        "num_outliers": int(n - clustered.sum()),
        "outlier_ratio": float(1.0 - clustered.mean()) if n else 0.0,
        "size_histogram": {name: int(((sizes >= lo) & (True if hi is None else sizes <= hi)).sum())
                           for lo, hi, name in SIZE_BUCKETS},
        "mean_size": float(sizes.mean()) if len(sizes) else 0.0,
        "cross_camera_ratio": None,
    }
    if camids is not None:
        cams = np.asarray(camids).astype(np.int64)
        if cams.shape != (n,):
            raise ValueError(f"camids has shape {cams.shape}, expected ({n},) like labels")
        if len(sizes):
            pairs = np.unique(np.stack([inv, cams[clustered]], 1), axis=0)
            cams_per_cluster = np.bincount(pairs[:, 0], minlength=len(sizes))
            rep["cross_camera_ratio"] = float((cams_per_cluster >= 2).mean())
    if gt is not None:
        from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

        g = np.asarray(gt).astype(np.int64)
        if g.shape != (n,):
            raise ValueError(f"gt has shape {g.shape}, expected ({n},) like labels")
        if (g < 0).any():
            raise ValueError(f"gt must hold an identity >= 0 for every sample; {int((g < 0).sum())} are negative")
        full = np.where(clustered, labels, 0)
        full[~clustered] = labels.max(initial=-1) + 1 + np.arange(n - clustered.sum())  # outliers: singletons
        rep["nmi"] = float(normalized_mutual_info_score(g, full))
        rep["ari"] = float(adjusted_rand_score(g, full))
        rep["ari_clustered"] = float(adjusted_rand_score(g[clustered], lab)) if len(lab) >= 2 else None
        pred_pairs = _pairs(sizes)
        true_pairs = _pairs(np.unique(g, return_counts=True)[1])
        joint = np.unique(np.stack([inv, g[clustered]], 1), axis=0, return_counts=True)[1] if len(lab) else np.zeros(0)
        tp = _pairs(joint)
        p = tp / pred_pairs if pred_pairs else 0.0
        r = tp / true_pairs if true_pairs else 0.0
        rep["pairwise_precision"] = float(p)
        rep["pairwise_recall"] = float(r)
        rep["pairwise_f"] = float(2 * p * r / (p + r)) if p + r else 0.0
    return rep


def nearest_neighbour_hits(features, camids: np.ndarray, gt: np.ndarray, block: int = 2048) -> tuple[float, float]:
    """Within a camera or across cameras: how often an image's nearest neighbour is the same identity.

    For every image, its nearest neighbour by cosine similarity (itself excluded) among the images of
    its *own* camera, and among the images of the *other* cameras; a hit when that neighbour has the
    same identity. A model that separates identities only within a camera scores high on the first
    and low on the second. Ground truth: **a report, never a label** (``benchmarks/camera_gap.py``,
    ``benchmarks/camera_nn.py``).

    Args:
        features: ``(N, d)`` float features (tensor or array; L2-normalised here).
        camids: ``(N,) int`` camera ids.
        gt: ``(N,) int`` true identities.
        block: rows of the ``(block, N)`` similarity block computed at a time (memory bound).

    Returns:
        ``(same_camera_rate, other_camera_rate)`` in [0, 1], each over the images that have such a
        neighbour (an image alone in its camera is left out of the same-camera rate, and all images
        of a single-camera set out of the other-camera rate; 0.0 where no image has one).

    Raises:
        ValueError: ``features``, ``camids`` and ``gt`` disagree in length.
    """
    import torch

    f = torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)
    c, g = torch.as_tensor(np.asarray(camids)), torch.as_tensor(np.asarray(gt))
    if not len(f) == len(c) == len(g):
        raise ValueError(f"features ({len(f)}), camids ({len(c)}) and gt ({len(g)}) must have one row per image")
    hits = {True: [0, 0], False: [0, 0]}
    for s in range(0, len(f), block):
        sim = f[s:s + block] @ f.T
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + s] = float("-inf")  # not itself
        same = c[s:s + block, None] == c[None, :]
        for want in (True, False):
            best, arg = sim.masked_fill(same != want, float("-inf")).max(1)
            ok = torch.isfinite(best)
            hits[want][0] += int((g[arg] == g[s:s + block])[ok].sum())
            hits[want][1] += int(ok.sum())
    return hits[True][0] / max(1, hits[True][1]), hits[False][0] / max(1, hits[False][1])


def matching_precision(labels: np.ndarray, matches: np.ndarray, gt: np.ndarray) -> dict:
    """Quality of cross-group cluster matches (MBCCM's visible-infrared matching), from the true identities:
    the share of matched cluster pairs whose two clusters have the same majority identity. Report only.

    A cluster's majority identity is its most frequent true identity (ties: the smallest id).

    Args:
        labels: ``(N,) int`` cluster ids, ``-1`` outliers.
        matches: ``(M, 2) int`` matched cluster id pairs.
        gt: ``(N,) int`` true identities.

    Returns:
        ``{"matched_pairs": M, "match_precision": share in [0, 1] (None without pairs)}``.

    Raises:
        ValueError: ``labels`` and ``gt`` differ in length, or a match names a cluster without members.
    """
    labels, gt = np.asarray(labels).astype(np.int64), np.asarray(gt).astype(np.int64)
    if labels.shape != gt.shape:
        raise ValueError(f"labels {labels.shape} and gt {gt.shape} must have the same shape")
    pairs = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return {"matched_pairs": 0, "match_precision": None}
    majority: dict[int, int] = {}
    for c in np.unique(pairs):
        ids = gt[labels == c]
        if ids.size == 0:
            raise ValueError(f"matched cluster {int(c)} has no member")
        values, counts = np.unique(ids, return_counts=True)
        majority[int(c)] = int(values[np.argmax(counts)])
    same = [majority[int(a)] == majority[int(b)] for a, b in pairs]
    return {"matched_pairs": int(len(pairs)), "match_precision": float(np.mean(same))}
