"""Clustering: sparse DBSCAN equals scikit-learn on the dense matrix; rho-adaptive eps equals the
dense definition; InfoMap; the PseudoLabeler contract (gt never influences labels) and degenerate
inputs."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import DBSCAN

from unreid.config import PseudoLabelConfig
from unreid.pseudo_labels import NoClustersError, PseudoLabeler, cluster_report
from unreid.pseudo_labels.cluster import dbscan_sparse, infomap_cluster, rho_eps
from unreid.pseudo_labels.jaccard import jaccard_distance


def blobs(n_ids=12, per=10, d=32, noise=0.35, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n_ids, d, generator=g)
    ids = torch.arange(n_ids).repeat_interleave(per)
    perm = torch.randperm(len(ids), generator=g)  # identities not in index order
    ids = ids[perm]
    return F.normalize(c[ids] + noise * torch.randn(len(ids), d, generator=g), dim=1), ids.numpy()


def to_dense(mat) -> np.ndarray:
    out = np.ones(mat.shape)
    c = mat.tocoo()
    out[c.row, c.col] = c.data
    return out


def dense_rho_eps(dense: np.ndarray, rho: float) -> float:
    """GCL's definition on the dense matrix (chenhao2345/GCL; shared/ANCHORS.md)."""
    tri = np.triu(dense, 1)
    vals = np.sort(tri[np.nonzero(tri)], axis=None)
    return float(vals[: int(np.round(rho * vals.size))].mean())


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings_seen():
    h = Records()
    logger = logging.getLogger("unreid")
    logger.addHandler(h)
    yield h.messages
    logger.removeHandler(h)


@pytest.mark.parametrize("eps,min_samples,seed,dup", [(0.6, 4, 0, 0), (0.5, 2, 1, 0), (0.7, 4, 2, 6),
                                                      (0.3, 3, 3, 0), (0.55, 1, 4, 3), (0.8, 8, 5, 0)])
def test_dbscan_sparse_equals_dense(eps, min_samples, seed, dup):
    f, _ = blobs(seed=seed, noise=0.5)
    for m in range(dup):  # duplicated features: off-diagonal zero distances
        f[2 * m + 1] = f[2 * m]
    dist = jaccard_distance(f, 20, 6)
    ours = dbscan_sparse(dist, eps, min_samples)
    ref = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(to_dense(dist))
    assert (ours == ref).all()
    assert len(set(ref.tolist()) - {-1}) >= 2


def test_dbscan_eps_one_means_every_pair_is_a_neighbour():
    f, _ = blobs(n_ids=3, per=4)
    dist = jaccard_distance(f, 5, 2)
    for ms in (4, 12, 13):
        ref = DBSCAN(eps=1.0, min_samples=ms, metric="precomputed").fit_predict(to_dense(dist))
        assert (dbscan_sparse(dist, 1.0, ms) == ref).all()


def test_rho_eps_equals_dense_definition():
    f, _ = blobs(seed=4)
    f[1] = f[0]  # a zero off-diagonal distance (excluded by the dense definition)
    dist = jaccard_distance(f, 20, 6)
    dense = to_dense(dist)
    assert (np.triu(dense, 1) == 0).sum() > 120 * 119 / 2  # there are zeros to exclude
    for rho in (0.002, 0.05, 0.3, 0.9):  # 0.9 reaches the implicit distance-1 pairs
        assert rho_eps(dist, rho) == pytest.approx(dense_rho_eps(dense, rho), abs=1e-6)
    with pytest.raises(ValueError, match="selects no pair"):
        rho_eps(dist, 1e-6)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("threads", [1, 2])
def test_smallest_pairs_bound_leaves_out_pairs_without_changing_eps_or_pairs(backend, threads):
    """Fed with its own running bound, the keeper gets fewer pairs and the same eps, pairs and bits."""
    from unreid.pseudo_labels.cluster import SmallestPairs
    from unreid.pseudo_labels.jaccard import jaccard_backend, jaccard_upper_blocks, k_reciprocal_encoding
    from unreid.pseudo_labels.knn import knn

    if backend == "numba" and jaccard_backend("auto") != "numba":
        pytest.skip("numba not installed")
    f, _ = blobs(n_ids=40, per=10, seed=8, noise=0.5)
    f[1] = f[0]  # an off-diagonal zero: never above the bound
    idx, sim = knn(f, 20)
    v = k_reciprocal_encoding(f, idx, sim, 20, 6)
    for rho in (0.002, 0.02, 0.05):  # 4 cap below the 44,862 pairs: the keeper prunes, so it has a bound
        full, fed = SmallestPairs(400, rho, slack=0), SmallestPairs(400, rho, slack=0)
        n_full = n_fed = 0
        for b in jaccard_upper_blocks(v, max_work=600, threads=threads, backend=backend):
            full.add(*b)
            n_full += len(b[0])
        for b in jaccard_upper_blocks(v, max_work=600, threads=threads, backend=backend, bound=fed.bound):
            fed.add(*b)
            n_fed += len(b[0])
        assert n_fed < (0.5 if rho < 0.05 else 1.0) * n_full and fed.bound() < 1.0, (rho, n_fed, n_full)
        assert fed.eps() == full.eps() and fed.zeros == full.zeros >= 1
        for a, b in zip(fed.pairs_within(fed.eps()), full.pairs_within(full.eps())):
            np.testing.assert_array_equal(a, b)


def test_smallest_pairs_bound_is_the_cap_th_smallest_distance_held():
    from unreid.pseudo_labels.cluster import SmallestPairs

    keeper = SmallestPairs(20, 5 / 190, slack=0)  # cap = round(rho * 190) = 5
    assert keeper.cap == 5 and keeper.bound() == 1.0
    rows, cols = np.triu_indices(20, 1)
    order = np.random.default_rng(0).permutation(len(rows))[:30]
    dist = np.linspace(0.1, 0.9, 30).astype(np.float32)[::-1].copy()
    keeper.add(rows[order], cols[order], dist)  # 30 > 4 cap: pruned to the 5 smallest
    assert keeper.bound() == float(np.sort(dist)[4])
    keeper.add(np.array([0]), np.array([0]), np.array([0.0], np.float32))  # the diagonal: no effect
    assert keeper.bound() == float(np.sort(dist)[4])


def test_labeler_equals_dense_pipeline_fixed_eps_and_rho():
    f, _ = blobs(seed=6, noise=0.55)
    dense = to_dense(jaccard_distance(f, 20, 6))
    for rho in (None, 0.01):
        cfg = PseudoLabelConfig(k1=20, k2=6, eps=0.6, min_samples=4, rho=rho)
        out = PseudoLabeler(cfg).fit(f)
        eps = 0.6 if rho is None else dense_rho_eps(dense, rho)
        assert out.eps == pytest.approx(eps, abs=1e-6)
        ref = DBSCAN(eps=eps, min_samples=4, metric="precomputed").fit_predict(dense)
        assert (out.labels == ref).all()  # sklearn's labels are already contiguous


def test_labeler_recovers_blobs_and_ignores_gt():
    f, ids = blobs()
    cams = np.arange(len(ids)) % 3
    cfg = PseudoLabelConfig(k1=20, k2=6, eps=0.6, min_samples=4)
    t0 = time.perf_counter()
    a = PseudoLabeler(cfg).fit(f, camids=cams)
    wall = time.perf_counter() - t0
    b = PseudoLabeler(cfg).fit(f, camids=cams, gt=ids)
    c = PseudoLabeler(cfg).fit(f, camids=cams, gt=np.random.default_rng(0).permutation(ids))
    assert (a.labels == b.labels).all() and (a.labels == c.labels).all()
    assert a.num_clusters == 12 and sorted(set(a.labels.tolist())) == list(range(12))
    assert b.report["ari"] == pytest.approx(1.0) and c.report["ari"] < 0.2
    assert b.report["cross_camera_ratio"] == 1.0 and "ari" not in a.report
    # stage times (seconds, rounded to 1 ms; a stage of 120 points may round to 0, the exact k-NN does): present
    # and non-negative, they add up to at most the total (which also covers checks, relabelling and the
    # report), and the total is the fit's own time, not more than the wall time around it
    t = {k: a.report[f"time_{k}_s"] for k in ("knn", "jaccard", "cluster", "total")}
    assert min(t.values()) >= 0 and t["total"] > 0, t
    assert t["knn"] + t["jaccard"] + t["cluster"] <= t["total"] + 0.002, t  # 0.002: rounding of four values
    assert t["total"] <= wall + 0.001, (t, wall)
    json.dumps(b.report)
    assert a.eps == 0.6


def test_labeler_faiss_knn_gives_the_same_labels():
    pytest.importorskip("faiss")
    f, _ = blobs(seed=7, noise=0.5)
    base = PseudoLabeler(PseudoLabelConfig(k1=20)).fit(f).labels
    assert (PseudoLabeler(PseudoLabelConfig(k1=20, knn="faiss")).fit(f).labels == base).all()


def test_labeler_pca_knn_gives_the_same_labels():
    f, _ = blobs(seed=8, noise=0.5)  # d = 32: a 32-d "subspace" is the whole space (exact search)
    base = PseudoLabeler(PseudoLabelConfig(k1=20)).fit(f)
    out = PseudoLabeler(PseudoLabelConfig(k1=20, knn="pca", pca_dim=32)).fit(f)
    assert (out.labels == base.labels).all()
    low = PseudoLabeler(PseudoLabelConfig(k1=20, knn="pca", pca_dim=16)).fit(f)  # 12 blobs: rank ~12
    assert cluster_report(low.labels, gt=base.labels)["ari"] > 0.95


def test_small_n_clips_k1_with_a_warning(warnings_seen):
    f, _ = blobs(n_ids=2, per=5)
    out = PseudoLabeler(PseudoLabelConfig(k1=30, k2=6, eps=0.6, min_samples=2)).fit(f)  # N=10 < k1
    assert any("clipping k1 to 10" in m for m in warnings_seen)
    dense = to_dense(jaccard_distance(f, 10, 6))
    assert (out.labels == DBSCAN(eps=0.6, min_samples=2, metric="precomputed").fit_predict(dense)).all()


def test_duplicated_features_make_one_cluster():
    dup = F.normalize(torch.ones(8, 4), dim=1)  # k1 clipped to N = 8: every distance is 0
    out = PseudoLabeler(PseudoLabelConfig(k1=30, k2=6, min_samples=4)).fit(dup)
    assert out.num_clusters == 1 and (out.labels == 0).all()
    f, ids = blobs(n_ids=1, per=40, noise=0.1)  # one tight blob: all points one cluster
    out = PseudoLabeler(PseudoLabelConfig(k1=20)).fit(f)
    assert out.num_clusters == 1 and (out.labels == 0).all() and out.report["size_histogram"][">32"] == 1


def test_all_outliers_raise_no_clusters_error():
    spread = torch.eye(16)  # orthogonal points: nobody shares a neighbour
    with pytest.raises(NoClustersError, match=r"all 16 samples are outliers.*eps=0\.1.*min_samples=4.*raise"):
        PseudoLabeler(PseudoLabelConfig(k1=3, k2=1, eps=0.1, min_samples=4)).fit(spread)
    assert issubclass(NoClustersError, RuntimeError)


def test_bad_features(warnings_seen):
    f, ids = blobs(n_ids=3, per=6)
    bad = f.clone()
    bad[3, 0] = float("nan")
    bad[7, 1] = float("inf")
    with pytest.raises(ValueError, match="2 of 18 feature rows hold NaN or inf"):
        PseudoLabeler().fit(bad)
    zero = f.clone()
    zero[2] = 0
    with pytest.raises(ValueError, match="1 of 18 feature rows are all zeros"):
        PseudoLabeler().fit(zero)
    with pytest.raises(ValueError, match="N >= 2"):
        PseudoLabeler().fit(f[:1])
    with pytest.raises(ValueError, match="camids has 3 entries"):
        PseudoLabeler().fit(f, camids=np.zeros(3))
    cfg = PseudoLabelConfig(k1=5, k2=2, min_samples=2)
    scaled = PseudoLabeler(cfg).fit(f * torch.linspace(0.5, 3, 18)[:, None])
    assert any("not L2-normalised" in m for m in warnings_seen)
    assert (scaled.labels == PseudoLabeler(cfg).fit(f).labels).all()


def test_infomap_on_blobs():
    pytest.importorskip("infomap")
    f, ids = blobs(n_ids=6, per=12, noise=0.2)
    labels = infomap_cluster(f, k=15, min_sim=0.5, min_size=5)
    assert cluster_report(labels, gt=ids)["ari"] > 0.95
    # an isolated point (no neighbour above min_sim) is an outlier; a 3-point group is too small
    extra = torch.zeros(7, 40)
    extra[:4, 32:36] = torch.eye(4)  # four isolated points, orthogonal to everything
    extra[4:, 36] = 1.0  # a tight group of three
    extra[4:, 37:40] = 0.1 * torch.eye(3)
    x = torch.cat([F.pad(f, (0, 8)), F.normalize(extra, dim=1)])
    lab = infomap_cluster(x, k=15, min_sim=0.5, min_size=5)
    assert (lab[72:] == -1).all() and cluster_report(lab[:72], gt=ids)["ari"] > 0.95
    out = PseudoLabeler(PseudoLabelConfig(cluster="infomap")).fit(x)
    assert (out.labels == lab).all() and out.eps is None and out.num_clusters == 6
