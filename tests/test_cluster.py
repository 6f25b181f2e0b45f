"""DBSCAN on the sparse Jaccard graph equals scikit-learn on the dense matrix; rho eps; InfoMap;
PseudoLabeler's contract and degenerate inputs; the quality report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import DBSCAN

from unreid.config import PseudoLabelConfig
from unreid.pseudo_labels import NoClustersError, PseudoLabeler, cluster_report
from unreid.pseudo_labels.cluster import dbscan_sparse, infomap_cluster, rho_eps
from unreid.pseudo_labels.jaccard import jaccard_distance


def _blobs(n_ids=12, per=10, d=32, noise=0.35, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n_ids, d, generator=g)
    ids = torch.arange(n_ids).repeat_interleave(per)
    return F.normalize(c[ids] + noise * torch.randn(len(ids), d, generator=g), dim=1), ids.numpy()


def _dense(sp_mat):
    d = np.ones(sp_mat.shape)
    c = sp_mat.tocoo()
    d[c.row, c.col] = c.data
    return d


@pytest.mark.parametrize("eps,min_samples,seed", [(0.6, 4, 0), (0.5, 2, 1), (0.7, 4, 2), (0.3, 3, 3)])
def test_dbscan_sparse_equals_dense(eps, min_samples, seed):
    f, _ = _blobs(seed=seed, noise=0.5)
    dist = jaccard_distance(f, 20, 6)
    ours = dbscan_sparse(dist, eps, min_samples)
    ref = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(_dense(dist))
    assert (ours == ref).all()


def test_rho_eps_equals_dense_definition():
    f, _ = _blobs(seed=4)
    dist = jaccard_distance(f, 20, 6)
    dense = _dense(dist)
    tri = np.triu(dense, 1)
    vals = np.sort(tri[tri > 0])
    for rho in (0.002, 0.05, 0.6):
        top = int(round(rho * len(vals)))
        assert rho_eps(dist, rho) == pytest.approx(vals[:top].mean(), abs=1e-6)


def test_labeler_recovers_blobs_and_ignores_gt():
    f, ids = _blobs()
    cams = np.arange(len(ids)) % 2
    cfg = PseudoLabelConfig(k1=20, k2=6, eps=0.6, min_samples=4)
    a = PseudoLabeler(cfg).fit(f, camids=cams)
    b = PseudoLabeler(cfg).fit(f, camids=cams, gt=ids)
    c = PseudoLabeler(cfg).fit(f, camids=cams, gt=np.random.default_rng(0).permutation(ids))
    assert (a.labels == b.labels).all() and (a.labels == c.labels).all()
    assert b.report["ari"] > 0.9 and b.report["cross_camera_ratio"] == 1.0
    assert "ari" not in a.report and a.num_clusters == 12


def test_degenerate_inputs():
    f, _ = _blobs(n_ids=2, per=5)
    lab = PseudoLabeler(PseudoLabelConfig(k1=30, eps=0.6, min_samples=2)).fit(f)  # N=10 < k1: clipped
    assert lab.num_clusters >= 1
    dup = F.normalize(torch.ones(8, 4), dim=1)  # all identical: one cluster
    assert PseudoLabeler(PseudoLabelConfig(k1=5, k2=2, min_samples=2)).fit(dup).num_clusters == 1
    spread = F.normalize(torch.eye(16), dim=1)  # orthogonal points: nobody has neighbours
    with pytest.raises(NoClustersError, match="outliers"):
        PseudoLabeler(PseudoLabelConfig(k1=3, k2=1, eps=0.1, min_samples=4)).fit(spread)
    bad = f.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="1 of 10 feature rows"):
        PseudoLabeler().fit(bad)
    unnorm = PseudoLabeler(PseudoLabelConfig(k1=5, k2=2, min_samples=2)).fit(f * 3)
    assert (unnorm.labels == PseudoLabeler(PseudoLabelConfig(k1=5, k2=2, min_samples=2)).fit(f).labels).all()
    with pytest.raises(ValueError):
        PseudoLabeler().fit(f[:1])


def test_infomap_on_blobs():
    pytest.importorskip("infomap")
    f, ids = _blobs(n_ids=6, per=12, noise=0.2)
    labels = infomap_cluster(f, k=15, min_sim=0.5, min_size=5)
    assert cluster_report(labels, gt=ids)["ari"] > 0.9


def test_report_values_by_hand():
    labels = np.array([0, 0, 0, 1, 1, -1])
    gt = np.array([0, 0, 1, 1, 1, 2])
    cams = np.array([0, 1, 0, 0, 0, 1])
    r = cluster_report(labels, cams, gt)
    assert (r["num_clusters"], r["num_outliers"], r["outlier_ratio"]) == (2, 1, pytest.approx(1 / 6))
    assert r["cross_camera_ratio"] == 0.5 and r["size_histogram"]["3-4"] == 1 and r["size_histogram"]["2"] == 1
    # predicted pairs: 3 + 1 = 4; true pairs: 1 + 3 = 4; shared: (0,1) and (3,4) = 2
    assert r["pairwise_precision"] == 0.5 and r["pairwise_recall"] == 0.5 and r["pairwise_f"] == 0.5
