"""Bilateral cluster matching (MBCCM) on hand-built centroids, and cross-camera label merging."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from unreid.config import PseudoLabelConfig
from unreid.pseudo_labels.matching import bilateral_cluster_matching, cross_camera_labels


def test_matching_gives_every_cluster_a_partner():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    # squared distances: a0 -> (0, 0.4, 2), a1 -> (2, 0.8, 0). Row assignment a0-b0, a1-b2; with rows
    # repeated k = 3 // 2 + 1 = 2 times, b1 goes to a0 (0.4 < 0.8).
    expected = np.array([[True, True, False], [False, False, True]])
    assert (bilateral_cluster_matching(a, b) == expected).all()
    assert (bilateral_cluster_matching(b, a) == expected.T).all()  # sides may come in either order


def test_relaxation_adds_every_cluster_at_least_as_close():
    a = torch.tensor([[1.0, 0.0], [0.9, 0.1]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Hungarian: a0-b0 (0) + a1-b1 (1.78) beats a0-b1 + a1-b0; relaxed, a1 also gets b0 (0.012 <= 1.78)
    bare = bilateral_cluster_matching(a, b, relax=False)
    assert (bare == np.array([[True, False], [False, True]])).all()
    relaxed = bilateral_cluster_matching(a, b, relax=True)
    assert (relaxed == np.array([[True, False], [True, True]])).all()


def test_cross_camera_labels_merge_matching_clusters():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(2, 16))
    cam_shift = rng.normal(size=(2, 16)) * 1.5  # each camera moves every identity the same way
    feats, cams, ids = [], [], []
    for pid in range(2):
        for cam in range(2):
            for _ in range(6):
                feats.append(centers[pid] + cam_shift[cam] + 0.05 * rng.normal(size=16))
                cams.append(cam)
                ids.append(pid)
    f = torch.nn.functional.normalize(torch.tensor(np.array(feats), dtype=torch.float32), dim=1)
    pl = cross_camera_labels(f, np.array(cams), PseudoLabelConfig(k1=6, k2=2, eps=0.6, min_samples=2))
    ids, cams = np.array(ids), np.array(cams)
    assert pl.num_clusters == 2
    for pid in range(2):
        assert len(set(pl.labels[ids == pid])) == 1  # one label per identity, across both cameras
    assert pl.report["per_camera_clusters"] == {0: 2, 1: 2}


def test_one_to_one_merge_leaves_an_unmatched_cluster_alone():
    """Camera 0 sees identities 0, 1, 2; camera 1 only 0 and 1. One-to-one merging keeps identity 2
    a single-camera cluster; the bilateral assignment forces it onto a camera-1 cluster."""
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(3, 16))
    feats, cams, ids = [], [], []
    for pid, seen_by in ((0, (0, 1)), (1, (0, 1)), (2, (0,))):
        for cam in seen_by:
            for _ in range(6):
                feats.append(centers[pid] + 0.05 * rng.normal(size=16))
                cams.append(cam)
                ids.append(pid)
    f = torch.nn.functional.normalize(torch.tensor(np.array(feats), dtype=torch.float32), dim=1)
    cfg = PseudoLabelConfig(k1=6, k2=2, eps=0.6, min_samples=2)
    ids, cams = np.array(ids), np.array(cams)
    one = cross_camera_labels(f, cams, cfg)
    assert one.num_clusters == 3
    assert all(len(set(one.labels[ids == pid])) == 1 for pid in range(3))
    both = cross_camera_labels(f, cams, cfg, mode="bilateral")
    assert both.num_clusters == 2
    with pytest.raises(ValueError, match="unknown matching mode"):
        cross_camera_labels(f, cams, cfg, mode="greedy")


def test_one_to_one_merge_uses_mbccm_squared_cost():
    """Angles A1-B1 0 deg, A2-B2 100 deg (sum of plain distances 1.53) against A1-B2 and A2-B1 60 deg
    each (2.0): the plain distance pairs A1-B1, the squared distance (MBCCM's cost: 2.35 vs 2.0)
    pairs A1-B2 and A2-B1. The merge must follow the squared cost, like bilateral_cluster_matching."""
    from scipy.optimize import linear_sum_assignment

    from unreid.pseudo_labels.matching import centroid_cost

    e = np.eye(16)
    c60, s60 = np.cos(np.pi / 3), np.sin(np.pi / 3)
    cos_phi = (np.cos(np.deg2rad(100)) - c60**2) / s60**2
    a1, b1 = e[0], e[0]
    b2 = c60 * e[0] + s60 * e[1]
    a2 = c60 * e[0] + s60 * (cos_phi * e[1] + np.sqrt(1 - cos_phi**2) * e[2])
    cost = centroid_cost(torch.tensor(np.stack([a1, a2])), torch.tensor(np.stack([b1, b2])))
    np.testing.assert_allclose(cost, [[0.0, 1.0], [1.0, 2 - 2 * np.cos(np.deg2rad(100))]], atol=1e-12)
    assert linear_sum_assignment(np.sqrt(cost))[1].tolist() == [0, 1]  # the plain distance would pair A1-B1
    rng = np.random.default_rng(2)
    feats, cams, which = [], [], []
    for name, centre, cam in (("a1", a1, 0), ("a2", a2, 0), ("b1", b1, 1), ("b2", b2, 1)):
        for _ in range(6):
            feats.append(centre + 0.01 * rng.normal(size=16))
            cams.append(cam)
            which.append(name)
    f = torch.nn.functional.normalize(torch.tensor(np.array(feats), dtype=torch.float32), dim=1)
    pl = cross_camera_labels(f, np.array(cams), PseudoLabelConfig(k1=6, k2=2, eps=0.6, min_samples=2))
    which = np.array(which)
    label = {name: set(pl.labels[which == name].tolist()) for name in ("a1", "a2", "b1", "b2")}
    assert all(len(v) == 1 for v in label.values()) and pl.num_clusters == 2
    assert label["a1"] == label["b2"] and label["a2"] == label["b1"]


def test_cross_camera_labels_report_each_cameras_rho_eps():
    """With rho-adaptive eps every camera clusters with the eps of its own distances (GCL's rule applied
    per camera); the report gives each, and no single eps that would be wrong for one camera."""
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(4, 16))
    feats, cams = [], []
    for cam, noise in ((0, 0.05), (1, 0.4)):  # camera 1 is far noisier: a larger adaptive eps
        for pid in range(4):
            for _ in range(6):
                feats.append(centers[pid] + noise * rng.normal(size=16))
                cams.append(cam)
    f = torch.nn.functional.normalize(torch.tensor(np.array(feats), dtype=torch.float32), dim=1)
    cams = np.array(cams)
    cfg = PseudoLabelConfig(k1=6, k2=2, eps=0.6, min_samples=2, rho=0.1)
    pl = cross_camera_labels(f, cams, cfg)
    assert pl.eps is None
    eps = pl.report["per_camera_eps"]
    assert set(eps) == {0, 1}
    from unreid.pseudo_labels import PseudoLabeler

    for cam in (0, 1):  # each is what that camera alone gets
        assert eps[cam] == pytest.approx(PseudoLabeler(cfg).fit(f[cams == cam]).eps)
    assert eps[0] != pytest.approx(eps[1])
    fixed = cross_camera_labels(f, cams, PseudoLabelConfig(k1=6, k2=2, eps=0.6, min_samples=2))
    assert fixed.eps == 0.6 and fixed.report["per_camera_eps"] == {0: 0.6, 1: 0.6}


# ----------------------------------------------------------------- each side of the relaxation, by hand
def _partition(labels: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(labels == v).tolist()) for v in np.unique(labels)}


def test_column_side_relaxation_adds_a_row_at_least_as_close():
    """a = [(1,0), (0,1)], b = [(1,0), (.95,.31), (.9,.44)] (b normalised: b1 = (.9507, .3102),
    b2 = (.8984, .4392)). Squared costs: a0 -> (0, 2 - 2(.9507) = .0987, 2 - 2(.8984) = .2032),
    a1 -> (2, 2 - 2(.3102) = 1.3796, 2 - 2(.4392) = 1.1216).
    Row assignment: a0-b0 + a1-b2 = 1.1216 (a0-b0 + a1-b1 = 1.3796, a0-b1 + a1-b2 = 1.2203, ...).
    Rows repeated k = 3 // 2 + 1 = 2 times: b0 -> a0, b1 -> a0, b2 -> a1 (0 + .0987 + 1.1216).
    Row relaxation: a0 (cost 0) adds nothing, a1 (1.1216) adds no other column (2, 1.3796 > 1.1216).
    Column relaxation: for (a1, b2) every row with cost[:, b2] <= 1.1216: a0 (.2032) -> a0-b2, the pair
    only the column side gives."""
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.95, 0.31], [0.9, 0.44]])
    expected = np.array([[True, True, True], [False, False, True]])
    assert (bilateral_cluster_matching(a, b) == expected).all()
    assert (bilateral_cluster_matching(b, a) == expected.T).all()  # the larger side first: transposed path
    bare = np.array([[True, True, False], [False, False, True]])  # the three assignments, unrelaxed
    assert (bilateral_cluster_matching(a, b, relax=False) == bare).all()


def test_row_side_relaxation_adds_a_column_at_least_as_close():
    """a = [(1,0), (.8,.6)], b = [(1,0), (0,1), (-1,0)]. Squared costs: a0 -> (0, 2, 4); a1 -> (.4, .8, 3.6).
    Row assignment (a has fewer clusters): a0-b0 + a1-b1 = .8 beats a0-b1 + a1-b0 = 2.4. Rows repeated
    k = 3 // 2 + 1 = 2 times: b0 -> a0 (0), b1 -> a1 (.8), b2 -> a1 (3.6 < 4).
    Row relaxation of (a1, b1): every column with cost[a1] <= .8 -> b0 (.4): a1-b0, which no assignment
    and no column relaxation gives (column relaxation of (a0, b0): rows <= 0: a0; of (a1, b1): rows
    <= .8: a1 (a0 is 2); of (a1, b2): rows <= 3.6: a1 (a0 is 4))."""
    a = torch.tensor([[1.0, 0.0], [0.8, 0.6]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    expected = np.array([[True, False, False], [True, True, True]])
    assert (bilateral_cluster_matching(a, b) == expected).all()
    assert (bilateral_cluster_matching(b, a) == expected.T).all()
    assert (bilateral_cluster_matching(a, b, relax=False) == np.array([[True, False, False],
                                                                       [False, True, True]])).all()


def test_relaxation_includes_ties():
    """a = [(1,0), (0,1)], b = [(1,0), (-1,0)]: squared costs a0 -> (0, 4), a1 -> (2, 2) (an exact tie:
    both are |(0,1) - (+-1,0)|^2 = 2). Row assignment a0-b0 + a1-b1 = 2 (a0-b1 + a1-b0 = 6); rows
    repeated twice: b0 -> a0, b1 -> a1 (2 < 4). Relaxing (a1, b1) with <= adds b0 (cost 2 == 2); with a
    strict < nothing would be added (and not even the assigned pairs)."""
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert (bilateral_cluster_matching(a, b) == np.array([[True, False], [True, True]])).all()
    assert (bilateral_cluster_matching(a, b, relax=False) == np.array([[True, False], [False, True]])).all()


def test_merge_modes_on_the_column_side_example():
    """The clusters of test_column_side_relaxation_adds_a_row_at_least_as_close as two groups (global ids
    a0 = 0, a1 = 1, b0 = 2, b1 = 3, b2 = 4):
    * "relaxed": pairs a0-b0, a0-b1, a0-b2, a1-b2 -> one component {0, 1, 2, 3, 4}, 4 pairs;
    * "bilateral": a0-b0, a0-b1, a1-b2 -> {0, 2, 3}, {1, 4}, 3 pairs;
    * "one_to_one": the row assignment a0-b0, a1-b2 -> {0, 2}, {1, 4}, {3}, 2 pairs."""
    from unreid.pseudo_labels.matching import cluster_matches, merge_matched_clusters

    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.95, 0.31], [0.9, 0.44]])
    groups = [(np.array([0, 1]), a), (np.array([2, 3, 4]), b)]
    merged, pairs, _ = merge_matched_clusters(5, groups, mode="relaxed")
    assert pairs == 4 and _partition(merged) == {frozenset({0, 1, 2, 3, 4})}
    merged, pairs, _ = merge_matched_clusters(5, groups, mode="bilateral")
    assert pairs == 3 and _partition(merged) == {frozenset({0, 2, 3}), frozenset({1, 4})}
    merged, pairs, _ = merge_matched_clusters(5, groups, mode="one_to_one")
    assert pairs == 2 and _partition(merged) == {frozenset({0, 2}), frozenset({1, 4}), frozenset({3})}
    # the same matches kept as data (MBCCM's use): row-major global pairs
    assert cluster_matches(groups).tolist() == [[0, 2], [0, 3], [0, 4], [1, 4]]
    assert cluster_matches(groups, relax=False).tolist() == [[0, 2], [0, 3], [1, 4]]


def test_ratio_check_on_angles():
    """Unit vectors at angles (degrees). A {0, 180} against C {45, -45}: each A cluster is as far from
    both C clusters (45 or 135 degrees), so whichever pairs the assignment makes fail the ratio test
    (nearest / second-nearest = 1 > 0.8) and nothing merges; without the check both pairs merge. A
    lone cluster on each side ({0} against {10}) has no second candidate and passes."""
    from unreid.pseudo_labels.matching import merge_matched_clusters

    def unit(*deg):
        r = np.deg2rad(np.array(deg))
        return torch.tensor(np.stack([np.cos(r), np.sin(r)], 1), dtype=torch.float32)

    groups = [(np.array([0, 1]), unit(0, 180)), (np.array([2, 3]), unit(45, -45))]
    merged, pairs, rejected = merge_matched_clusters(4, groups, check="none")
    assert (pairs, rejected) == (2, 0) and len(_partition(merged)) == 2
    merged, pairs, rejected = merge_matched_clusters(4, groups, check="ratio")
    assert (pairs, rejected) == (0, 2) and len(_partition(merged)) == 4
    merged, pairs, rejected = merge_matched_clusters(2, [(np.array([0]), unit(0)), (np.array([1]), unit(10))],
                                                     check="ratio")
    assert (pairs, rejected) == (1, 0) and _partition(merged) == {frozenset({0, 1})}
    with pytest.raises(ValueError, match="merge check"):
        merge_matched_clusters(4, groups, check="closest")
    with pytest.raises(ValueError, match="ratio"):
        merge_matched_clusters(4, groups, check="ratio", ratio=1.5)


def _ratio_reference(groups, num_clusters, ratio=0.8):
    """The ratio-checked merge written out with plain loops and sets: every pair of groups' Hungarian
    assignment on squared distances of the normalised centroids; a match kept when its distance is
    below ``ratio`` times each side's second-nearest distance; then the kept matches in increasing
    cost, each merging two clusters only if they share no group."""
    units = [g[1].double().numpy() / np.linalg.norm(g[1].double().numpy(), axis=1, keepdims=True) for g in groups]

    def cost(x, y):
        return np.array([[float(((a - b) ** 2).sum()) for b in y] for a in x])

    def second(values):
        return sorted(values)[1] if len(values) > 1 else np.inf

    found, rejected = [], 0
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            c = cost(units[i], units[j])
            for r, s in zip(*linear_sum_assignment(c)):
                dist = np.sqrt(c[r, s])
                if dist < ratio * np.sqrt(second(c[r, :])) and dist < ratio * np.sqrt(second(c[:, s])):
                    found.append((c[r, s], int(groups[i][0][r]), int(groups[j][0][s])))
                else:
                    rejected += 1
    comp = {x: {x} for x in range(num_clusters)}  # cluster -> the set of clusters merged with it
    group_of = {int(x): g for g, (ids, _) in enumerate(groups) for x in ids}
    pairs = conflicts = 0
    for _, a, b in sorted(found):
        if comp[a] is comp[b]:
            pairs += 1
        elif {group_of[x] for x in comp[a]} & {group_of[x] for x in comp[b]}:
            conflicts += 1
        else:
            merged = comp[a] | comp[b]
            for x in merged:
                comp[x] = merged
            pairs += 1
    return {frozenset(v) for v in comp.values()}, pairs, rejected + conflicts, conflicts


def test_ratio_merge_matches_a_loop_reference():
    """Random centroids in 3-D (few dimensions: many close calls), five groups of 2-6 clusters."""
    from unreid.pseudo_labels.matching import merge_matched_clusters

    conflicts_seen = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        groups, offset = [], 0
        for _ in range(5):
            k = int(rng.integers(2, 7))
            groups.append((np.arange(offset, offset + k), torch.tensor(rng.normal(size=(k, 3)), dtype=torch.float32)))
            offset += k
        merged, pairs, rejected = merge_matched_clusters(offset, groups, check="ratio")
        parts, ref_pairs, ref_rejected, conflicts = _ratio_reference(groups, offset)
        assert _partition(merged) == parts and (pairs, rejected) == (ref_pairs, ref_rejected), seed
        conflicts_seen += conflicts
    assert conflicts_seen > 0  # the shared-group rule was exercised
