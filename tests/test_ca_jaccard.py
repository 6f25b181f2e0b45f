"""CA-Jaccard (Chen et al., CVPR 2024): the sparse encoding against a dense implementation of the
reference's equations written here, the labeller's errors, and its use through ``method.camera``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import metrics_rows, tiny_overrides
from unreid.config import ConfigError, PseudoLabelConfig, load_config
from unreid.engine import Trainer
from unreid.pseudo_labels import PseudoLabeler
from unreid.pseudo_labels.ca_jaccard import CameraAwareJaccardLabeler, ca_jaccard_encoding
from unreid.pseudo_labels.jaccard import jaccard_upper_blocks, symmetric_csr


def dense_ca_jaccard(x: np.ndarray, cams: np.ndarray, k1i: int, k1o: int, k2i: int, k2o: int) -> np.ndarray:
    """Dense oracle of caj_rerank.py with CKRNNs + CLQE. ``x`` (N, d) float64 unit rows."""
    n = len(x)
    d = 2.0 - 2.0 * x @ x.T
    # ranking lists: own camera (self first) and other cameras, by distance then index
    intra = [sorted(np.flatnonzero(cams == cams[i]), key=lambda j, i=i: (j != i, d[i, j], j)) for i in range(n)]
    inter = [sorted(np.flatnonzero(cams != cams[i]), key=lambda j, i=i: (d[i, j], j)) for i in range(n)]

    def recip(lists, i, k):  # the reference's k_reciprocal_neigh: first k + 1 entries, both ways
        return [j for j in lists[i][:k + 1] if i in lists[j][:k + 1]]

    v = np.zeros((n, n))
    for i in range(n):
        r = np.unique(recip(intra, i, k1i) + recip(inter, i, k1o))  # no 2/3 expansion with CKRNNs
        w = np.exp(-d[i, r])
        v[i, r] = w / w.sum()
    v = np.stack([v[list(intra[i][:k2i]) + list(inter[i][:k2o])].mean(0) for i in range(n)])
    out = np.empty((n, n))
    for i in range(n):
        s = np.minimum(v[i][None, :], v).sum(1)
        out[i] = 1.0 - s / (2.0 - s)
    out[out < 0] = 0.0
    return out


def camera_features(n: int, d: int, cams: int, seed: int, shift: float = 1.0):
    """Identities seen by several cameras, each camera adding its own offset (the camera gap)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(max(2, n // 6), (n,), generator=g)
    cam = torch.randint(cams, (n,), generator=g)
    centres = torch.randn(int(ids.max()) + 1, d, generator=g)
    offsets = shift * torch.randn(cams, d, generator=g)
    f = centres[ids] + offsets[cam] + 0.5 * torch.randn(n, d, generator=g)
    return F.normalize(f, dim=1), cam.numpy(), ids.numpy()


def full_distance(v, n):
    rows, cols, vals = (np.concatenate(p) for p in zip(*jaccard_upper_blocks(v)))
    out = np.ones((n, n))
    m = symmetric_csr(n, rows, cols, vals).tocoo()
    out[m.row, m.col] = m.data
    return out


@pytest.mark.parametrize("n,cams,sizes,seed", [
    (120, 2, (5, 20, 3, 3), 0), (150, 3, (5, 20, 2, 4), 1), (90, 4, (3, 10, 1, 0), 2), (60, 2, (1, 0, 1, 1), 3),
])
def test_sparse_ca_jaccard_equals_dense_reference(n, cams, sizes, seed):
    f, cam, _ = camera_features(n, 16, cams, seed)
    want = dense_ca_jaccard(f.double().numpy(), cam, *sizes)
    v = ca_jaccard_encoding(f, cam, *sizes)
    np.testing.assert_allclose(np.asarray(v.sum(1)).ravel(), 1.0, atol=1e-5)
    got = full_distance(v, n)
    assert np.abs(got - want).max() < 1e-5
    assert (want < 1).sum() == (got < 1).sum()  # the same pairs share a column


def test_small_camera_gives_shorter_lists_not_other_cameras():
    """Camera 2 holds 3 samples, fewer than k1_intra + 1 = 6: its intra lists hold only those 3."""
    f, cam, _ = camera_features(80, 16, 2, 5)
    cam = cam.copy()
    cam[:3] = 2
    want = dense_ca_jaccard(f.double().numpy(), cam, 5, 20, 3, 3)
    assert np.abs(full_distance(ca_jaccard_encoding(f, cam), 80) - want).max() < 1e-5


def test_camera_ids_change_the_distance():
    f, cam, _ = camera_features(100, 16, 2, 6)
    a = full_distance(ca_jaccard_encoding(f, cam), 100)
    b = full_distance(ca_jaccard_encoding(f, np.random.default_rng(0).permutation(cam)), 100)
    assert np.abs(a - b).max() > 0.1


def test_ca_jaccard_crosses_a_camera_gap_that_plain_jaccard_follows():
    """Two cameras with a strong offset: plain Jaccard + DBSCAN groups by camera, CA-Jaccard pairs the
    views of an identity across cameras (every inter-camera list is forced to hold other cameras)."""
    f, cam, ids = camera_features(240, 32, 2, 7, shift=1.5)
    cfg = PseudoLabelConfig(k1=20, k2=6, eps=0.6, min_samples=4)
    plain = PseudoLabeler(cfg).fit(f, camids=cam, gt=ids)
    ca = CameraAwareJaccardLabeler(cfg).fit(f, camids=cam, gt=ids)
    assert plain.report["cross_camera_ratio"] < 0.2
    assert ca.report["cross_camera_ratio"] > 0.8
    assert ca.report["pairwise_precision"] > plain.report["pairwise_precision"]


def test_labeller_errors_are_specific():
    f, cam, _ = camera_features(60, 16, 2, 8)
    with pytest.raises(ValueError, match="camera id of every sample"):
        CameraAwareJaccardLabeler(PseudoLabelConfig()).fit(f)
    with pytest.raises(ValueError, match="at least two cameras"):
        CameraAwareJaccardLabeler(PseudoLabelConfig()).fit(f, camids=np.zeros(60, dtype=int))
    with pytest.raises(ValueError, match="camids has shape"):
        ca_jaccard_encoding(f, cam[:10])
    with pytest.raises(ValueError, match="feeds DBSCAN"):
        CameraAwareJaccardLabeler(PseudoLabelConfig(cluster="infomap"))


def test_config_rejects_ca_jaccard_with_per_camera_matching(tmp_path):
    with pytest.raises(ConfigError, match="cannot be combined"):
        load_config(None, ["method.camera.neighbourhood=ca_jaccard", "method.camera.matching=true"])
    with pytest.raises(ConfigError, match="ca_k1_intra"):
        load_config(None, ["method.camera.neighbourhood=ca_jaccard", "method.camera.ca_k1_intra=0"])


def test_ca_jaccard_run_through_the_engine(synthetic_root, tmp_path, monkeypatch):
    cfg = load_config(None, tiny_overrides(synthetic_root, tmp_path / "run", **{
        "optim.epochs": 1, "optim.iters": 1, "method.camera.neighbourhood": "ca_jaccard",
        "method.camera.proxies": True, "data.batch_size": 8, "data.num_instances": 2}))
    trainer = Trainer(cfg)
    made = []
    fit = CameraAwareJaccardLabeler.fit

    def spy(self, features, camids=None, **kwargs):
        made.append((fit(self, features, camids=camids, **kwargs), np.asarray(camids).copy()))
        return made[-1][0]

    monkeypatch.setattr(CameraAwareJaccardLabeler, "fit", spy)
    trainer.train()
    # the camera-aware labeller made the labels the method trained with, from the training cameras
    assert len(made) == 1
    labels, cams = made[0]
    assert np.array_equal(trainer.method.labels.labels, labels.labels)
    assert np.array_equal(cams, np.asarray(trainer.method.camids))
    row = metrics_rows(trainer.output_dir)[-1]
    pl = row["pseudo_labels"]
    assert pl["num_clusters"] >= 1 and pl["num_proxies"] >= pl["num_clusters"]
    assert pl["cross_camera_ratio"] > 0.0
