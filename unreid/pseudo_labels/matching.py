"""Bilateral many-to-many cluster matching, and its use to merge clusters across cameras.

``bilateral_cluster_matching`` reproduces MBCCM's matching (Cheng et al., ACM MM 2023, "Efficient
Bilateral Cross-Modality Cluster Matching"; FranklinLingfeng/MBCCM-master-MM-23 @3492a38,
``trainer.py`` ``mbccm_matching``, as summarised in ``../shared/ANCHORS.md``):

1. cost = **squared** Euclidean distance between L2-normalised centroids, rows = the smaller side;
2. Hungarian assignment on the cost (each row gets one column), and Hungarian on the cost with
   the rows repeated ``k = floor(larger / smaller) + 1`` times (each column gets one row);
3. each assignment is relaxed to every cluster at least as close (``<=``, ties included): for a
   row assignment ``(r, c)`` every column ``c'`` with ``cost[r, c'] <= cost[r, c]``; for a column
   assignment ``(r, c)`` every row ``r'`` with ``cost[r', c] <= cost[r, c]``;
4. the match is the union of both.

``cross_camera_labels`` is **our own application** of that matching to cameras instead of
modalities (docs/methods/camera_aware.md): each camera is clustered on its own (the usual
k-reciprocal Jaccard + DBSCAN of ``PseudoLabeler``), so clusters are not split by the camera gap
within a camera; then the clusters of every camera pair are matched and matched clusters are merged
(union-find). The merge uses only the one-to-one Hungarian assignment by default
(``mode="one_to_one"``): the bilateral (many-to-one) and relaxed (many-to-many) matches, fine as soft
cross-memory targets in MBCCM, chain through union-find into giant components when used as hard
labels (on a 3-camera synthetic set the bilateral merge collapsed every cluster into one).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from unreid.pseudo_labels.base import PseudoLabels


def _assignments(cost: np.ndarray) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Row-wise and column-wise Hungarian assignments of a ``(S, L)`` cost with ``S <= L``."""
    s, n = cost.shape
    rows, cols = linear_sum_assignment(cost)
    first = list(zip(rows.tolist(), cols.tolist()))
    k = n // s + 1
    rows2, cols2 = linear_sum_assignment(np.tile(cost, (k, 1)))
    second = [(int(r) % s, int(c)) for r, c in zip(rows2, cols2)]
    return first, second


def centroid_cost(centroids_a: torch.Tensor, centroids_b: torch.Tensor) -> np.ndarray:
    """``(A, B) float64`` squared Euclidean distances of the L2-normalised centroids (MBCCM's cost).

    ``mbccm_matching`` computes ``pairwise_distance`` (the squared distance) of normalised cluster
    features; both :func:`bilateral_cluster_matching` and the one-to-one merge of
    :func:`cross_camera_labels` use this one cost, so their assignments agree.
    """
    return _unit_cost(_unit64(centroids_a), _unit64(centroids_b))


def _unit64(centroids: torch.Tensor) -> torch.Tensor:
    """``(K, d) float64`` L2-normalised centroids, the operands of :func:`centroid_cost` (done once per
    group by the callers that match one group against several)."""
    return F.normalize(torch.as_tensor(centroids, dtype=torch.float64), dim=1)


def _unit_cost(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """:func:`centroid_cost` of centroids already through :func:`_unit64`."""
    # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b by one float64 matrix product: torch.cdist took 0.6 s for
    # 300 x 300 centroids of 29,008 dimensions (the LOMO prior) against ~0.05 s for the product
    sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return sq.clamp_min_(0.0).numpy()


def bilateral_cluster_matching(centroids_a: torch.Tensor, centroids_b: torch.Tensor,
                               relax: bool = True) -> np.ndarray:
    """MBCCM's many-to-many matching between two sets of cluster centroids.

    Args:
        centroids_a: ``(A, d)`` centroids (normalised here).
        centroids_b: ``(B, d)`` centroids.
        relax: extend each assignment to every cluster at least as close (the published rule);
            ``False`` keeps the bare Hungarian assignments.

    Returns:
        ``(A, B) bool`` match mask: every cluster of both sides has at least one partner.

    Raises:
        ValueError: a side is empty.
    """
    if len(centroids_a) == 0 or len(centroids_b) == 0:
        raise ValueError(f"cannot match {len(centroids_a)} clusters with {len(centroids_b)} clusters")
    return _bilateral(centroid_cost(centroids_a, centroids_b), relax)


def _bilateral(cost: np.ndarray, relax: bool) -> np.ndarray:
    """:func:`bilateral_cluster_matching` of a ``(A, B)`` cost."""
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    first, second = _assignments(cost)
    mask = np.zeros(cost.shape, dtype=bool)
    for r, c in first:
        if relax:
            mask[r, cost[r] <= cost[r, c]] = True
        else:
            mask[r, c] = True
    for r, c in second:
        if relax:
            mask[cost[:, c] <= cost[r, c], c] = True
        else:
            mask[r, c] = True
    return mask.T if transposed else mask


def _find(parent: np.ndarray, x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def cluster_each_camera(features: torch.Tensor, camids: np.ndarray,
                        cfg) -> dict[int, tuple[np.ndarray, PseudoLabels | None, torch.Tensor | None]]:
    """Cluster each camera's images on their own (``PseudoLabeler``: k-reciprocal Jaccard + DBSCAN).

    Args:
        features: ``(N, d) float32`` L2-normalised features.
        camids: ``(N,) int`` camera ids.
        cfg: ``PseudoLabelConfig`` (with ``rho`` set, each camera gets its own rho-adaptive eps).

    Returns:
        camera id -> ``(idx, labels, centroids)``: ``idx`` the ``(n_c,) int64`` rows of that camera,
        ``labels`` its :class:`PseudoLabels` (cluster ids local to the camera) and ``centroids`` the
        ``(K_c, d) float32`` L2-normalised cluster centroids; ``labels`` and ``centroids`` are
        ``None`` where no cluster formed. Cameras with fewer than two images are left out.
    """
    from unreid.pseudo_labels import NoClustersError, PseudoLabeler

    feats = torch.as_tensor(features, dtype=torch.float32)
    camids = np.asarray(camids)
    out = {}
    for c in np.unique(camids):
        idx = np.flatnonzero(camids == c)
        if len(idx) < 2:
            continue
        try:
            pl = PseudoLabeler(cfg).fit(feats[idx], camids=camids[idx])
        except NoClustersError:
            out[int(c)] = (idx, None, None)
            continue
        out[int(c)] = (idx, pl, cluster_centroids(feats[idx], pl.labels, pl.num_clusters))
    return out


def cluster_centroids(features: torch.Tensor, labels: np.ndarray, num_clusters: int) -> torch.Tensor:
    """``(num_clusters, d) float32`` L2-normalised mean feature of every cluster.

    Args:
        features: ``(n, d) float32`` features (on any device; the result is on the same one).
        labels: ``(n,) int64`` cluster ids in ``[0, num_clusters)``, ``-1`` for outliers (left out).
        num_clusters: number of clusters.
    """
    feats = torch.as_tensor(features, dtype=torch.float32)
    keep = labels >= 0
    sums = torch.zeros(num_clusters, feats.shape[1], device=feats.device).index_add_(
        0, torch.as_tensor(labels[keep], device=feats.device), feats[torch.as_tensor(np.flatnonzero(keep),
                                                                                   device=feats.device)])
    return F.normalize(sums, dim=1)


def merge_matched_clusters(num_clusters: int, groups: list[tuple[np.ndarray, torch.Tensor]],
                           mode: str = "one_to_one", pair_cost=None, check: str = "none", ratio: float = 0.8,
                           ) -> tuple[np.ndarray, int, int]:
    """Merge clusters matched across groups (union-find over every pair of groups, in list order).

    Args:
        num_clusters: clusters of all groups together (global ids ``0..num_clusters-1``).
        groups: per group, ``(ids, centroids)``: its ``(K_g,) int64`` global cluster ids and their
            ``(K_g, d)`` centroids; every group has at least one cluster.
        mode: one of :data:`MATCH_MODES`, as in :func:`cross_camera_labels`.
        pair_cost: ``cost(i, j) -> (K_i, K_j)`` between groups ``i <= j`` in place of
            :func:`centroid_cost` of their centroids (which may then be ``None``): the prior's
            :meth:`unreid.pseudo_labels.prior.PriorFeatures.pair_costs`.
        check: ``"none"`` (every match merges, pair of groups by pair of groups) or ``"ratio"``, two
            rules of ours (not MBCCM's) against the chaining of many-camera sets: with many cameras most
            camera pairs share few identities, yet the assignment gives every cluster a partner in every
            other camera, and the union over all pairs chained every cluster into one
            (docs/methods/camera_aware.md, "Many cameras"). (1) The ratio test of Lowe (IJCV 2004,
            "Distinctive image features from scale-invariant keypoints", section 7.1): a match ``(a, b)``
            is kept only if its centroid distance is below ``ratio`` times the distance from ``a`` to the
            second-nearest cluster of ``b``'s group, and likewise from ``b``'s side (a forced partner of
            an identity the other camera never saw is about as far as the next candidate). (2) Clusters
            of one group were kept apart by that group's clustering, so they are different identities:
            the kept matches of all pairs of groups merge in increasing cost, each only if the two merged
            clusters hold no group in common. With two groups and ``mode="one_to_one"`` rule (2) never
            applies.
        ratio: rule (1)'s distance ratio (Lowe's 0.8); the costs are squared distances, so the test is
            ``cost < ratio^2 * second cost``. A group's side with a single candidate passes.

    Returns:
        ``(merged, pairs, rejected)``: ``merged`` ``(num_clusters,) int64`` the new contiguous id of each
        cluster, ``pairs`` the number of matched pairs that were merged, ``rejected`` the number of
        matches the ``check`` turned down.

    Raises:
        ValueError: unknown ``mode`` or ``check``, or ``ratio`` outside ``(0, 1]``.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"merge ratio must be in (0, 1], got {ratio}")
    if mode not in MATCH_MODES:
        raise ValueError(f"unknown matching mode {mode!r}; choose one of {MATCH_MODES}")
    if check not in MERGE_CHECKS:
        raise ValueError(f"unknown merge check {check!r}; choose one of {MERGE_CHECKS}")
    parent = np.arange(num_clusters)
    pairs = rejected = 0
    costs = _group_costs(groups, pair_cost)
    kept: list[tuple[float, int, int]] = []  # check "ratio": (cost, cluster a, cluster b) of every kept match
    member = np.zeros(num_clusters, dtype=object)  # check "ratio": the groups of each cluster, as a bit mask
    if check == "ratio":
        for g, (ids, _) in enumerate(groups):
            member[np.asarray(ids)] = 1 << g
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            cost = costs(i, j)
            if mode == "one_to_one":
                mask = np.zeros((len(groups[i][0]), len(groups[j][0])), dtype=bool)
                mask[linear_sum_assignment(cost)] = True
            else:
                mask = _bilateral(cost, relax=mode == "relaxed")
            if check == "ratio":
                keep = cost < (ratio * ratio) * np.minimum(_second(cost, 1)[:, None], _second(cost, 0)[None, :])
                rejected += int((mask & ~keep).sum())
                r, c = np.nonzero(mask & keep)
                kept += zip(cost[r, c].tolist(), np.asarray(groups[i][0])[r].tolist(), np.asarray(groups[j][0])[c].tolist())
                continue
            for r, c in zip(*np.nonzero(mask)):
                ra, rb = _find(parent, int(groups[i][0][r])), _find(parent, int(groups[j][0][c]))
                parent[ra] = rb
                pairs += 1
    for _, a, b in sorted(kept):  # increasing cost (then ids): the closest matches merge first
        ra, rb = _find(parent, a), _find(parent, b)
        if ra == rb:
            pairs += 1
        elif member[ra] & member[rb]:
            rejected += 1
        else:
            parent[ra] = rb
            member[rb] |= member[ra]
            pairs += 1
    roots = np.array([_find(parent, x) for x in range(num_clusters)])
    _, merged = np.unique(roots, return_inverse=True)
    return merged.astype(np.int64), pairs, rejected


def _group_costs(groups: list[tuple[np.ndarray, torch.Tensor]], pair_cost=None):
    """``cost(i, j) -> (K_i, K_j) float64`` between groups: ``pair_cost`` when given, else
    :func:`centroid_cost` of their centroids, each group normalised once."""
    if pair_cost is not None:
        return pair_cost
    units = [_unit64(g[1]) for g in groups]
    return lambda i, j: _unit_cost(units[i], units[j])


def _second(cost: np.ndarray, axis: int) -> np.ndarray:
    """The second-smallest cost along ``axis`` (``inf`` where there is a single candidate)."""
    if cost.shape[axis] < 2:
        return np.full(cost.shape[1 - axis], np.inf)
    return np.partition(cost, 1, axis=axis).take(1, axis=axis)


def cluster_matches(groups: list[tuple[np.ndarray, torch.Tensor]], relax: bool = True, pair_cost=None) -> np.ndarray:
    """MBCCM's many-to-many matches between every pair of groups, kept as data (nothing merged).

    MBCCM (Cheng et al., ACM MM 2023; FranklinLingfeng/MBCCM-master-MM-23 ``trainer.py``) matches the
    visible and the infrared clusters with :func:`bilateral_cluster_matching` and uses the matches
    as cross-modality targets, each modality keeping its own labels. With more than two groups every
    pair of groups is matched (our generalisation; MBCCM has two).

    Args:
        groups: per group, ``(ids, centroids)`` as in :func:`merge_matched_clusters`.
        relax: the published relaxed rule (``False``: the bare Hungarian assignments).
        pair_cost: as in :func:`merge_matched_clusters`.

    Returns:
        ``(M, 2) int64`` global cluster-id pairs ``(id in group i, id in group j)`` with ``i < j`` in
        list order, in row-major order of each pair's match mask.
    """
    out = [np.zeros((0, 2), dtype=np.int64)]
    costs = _group_costs(groups, pair_cost)
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            if len(groups[i][0]) == 0 or len(groups[j][0]) == 0:
                raise ValueError(f"cannot match {len(groups[i][0])} clusters with {len(groups[j][0])} clusters")
            r, c = np.nonzero(_bilateral(costs(i, j), relax))
            out.append(np.stack([np.asarray(groups[i][0])[r], np.asarray(groups[j][0])[c]], 1).astype(np.int64))
    return np.concatenate(out)


MATCH_MODES = ("one_to_one", "bilateral", "relaxed")
#: the checks a match passes before it merges (:func:`merge_matched_clusters`)
MERGE_CHECKS = ("none", "ratio")


def cross_camera_labels(features: torch.Tensor, camids: np.ndarray, cfg, mode: str = "one_to_one") -> PseudoLabels:
    """Cluster each camera separately, then merge matched clusters across cameras.

    Args:
        features: ``(N, d) float32`` L2-normalised features.
        camids: ``(N,) int`` camera ids.
        cfg: ``PseudoLabelConfig`` used for each camera's clustering (with ``rho`` set, each camera
            gets its own rho-adaptive eps from its own distances).
        mode: which matches merge clusters: ``"one_to_one"`` (default; the Hungarian assignment
            of the camera with fewer clusters on :func:`centroid_cost`, MBCCM's squared distance,
            so each cluster merges with at most one cluster of each other camera), ``"bilateral"``
            (both un-relaxed assignments of :func:`bilateral_cluster_matching`) or ``"relaxed"``
            (the published relaxed matches).

    Returns:
        :class:`PseudoLabels`; its report adds ``per_camera_clusters``, ``matched_pairs`` and
        ``per_camera_eps`` (camera -> the DBSCAN eps used); ``eps`` is the config's, or ``None`` with
        rho-adaptive eps (the cameras' values differ).

    Raises:
        NoClustersError: no camera produced a cluster.
        ValueError: unknown ``mode``.
    """
    from unreid.pseudo_labels import NoClustersError

    if mode not in MATCH_MODES:
        raise ValueError(f"unknown matching mode {mode!r}; choose one of {MATCH_MODES}")
    camids = np.asarray(camids)
    labels = np.full(len(camids), -1, dtype=np.int64)
    offset, per_cam, per_cam_eps, groups = 0, {}, {}, []  # groups: (camera, global cluster ids, centroids)
    for c, (idx, pl, centroids) in cluster_each_camera(features, camids, cfg).items():
        if pl is None:
            per_cam[c] = 0
            continue
        keep = pl.labels >= 0
        labels[idx[keep]] = pl.labels[keep] + offset
        groups.append((c, np.arange(offset, offset + pl.num_clusters), centroids))
        per_cam[c] = pl.num_clusters
        per_cam_eps[c] = pl.eps
        offset += pl.num_clusters
    if offset == 0:
        raise NoClustersError(f"no camera produced a cluster (N={len(camids)}, eps={cfg.eps}, "
                              f"min_samples={cfg.min_samples}); raise pseudo_labels.eps")
    merged, pairs, _ = merge_matched_clusters(offset, [(ids, cents) for _, ids, cents in groups], mode)
    out = labels.copy()
    out[labels >= 0] = merged[labels[labels >= 0]]
    num = int(merged.max()) + 1
    # With rho-adaptive eps every camera gets its own eps: report them, and no single eps.
    report = {"per_camera_clusters": per_cam, "matched_pairs": pairs, "per_camera_eps": per_cam_eps}
    return PseudoLabels(out, num, report=report, eps=cfg.eps if cfg.rho is None else None, source="clustering")
