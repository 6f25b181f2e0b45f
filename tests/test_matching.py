"""Bilateral cluster matching (MBCCM) on hand-built centroids, and cross-camera label merging."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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
