"""Camera-aware training through the shared engine (docs/methods/camera_aware.md): per-camera
standardisation, CAP proxies and cross-camera matching, switched on by ``method.camera`` config."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.conftest import metrics_rows, tiny_overrides
from tests.test_no_label_leak import _run, _same_model, _scrambled
from unreid.config import load_config
from unreid.engine import Trainer
from unreid.engine.trainer import load_data
from unreid.models.camera_bn import camera_bn_layers
from unreid.pseudo_labels.camera import camera_standardize

CAMERA_AWARE = {
    "method.camera.proxies": True,
    "method.camera.neighbourhood": "standardize",
    "method.camera.inter_start_epoch": 1,
}


def test_camera_standardize_removes_each_cameras_statistics():
    g = torch.Generator().manual_seed(0)
    cams = np.array([0] * 20 + [1] * 30 + [2])
    f = torch.randn(51, 8, generator=g)
    f[cams == 1] = f[cams == 1] * 3.0 + 5.0  # camera 1: shifted and scaled
    out = camera_standardize(f, cams)
    assert out.shape == (51, 8) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(51))
    # before the final L2 normalisation each camera is zero-mean; after it, the mean stays ~0
    for c in (0, 1):
        assert out[cams == c].mean(0).abs().max() < 0.2
    # a single-image camera has no statistics: its feature is kept (normalised), never zeroed
    torch.testing.assert_close(out[50], f[50] / f[50].norm())
    # standardisation makes camera 1 look like camera 0: the same draws give the same features
    same = camera_standardize(torch.cat([f[cams == 0], f[cams == 0] * 3.0 + 5.0]), np.array([0] * 20 + [1] * 20))
    torch.testing.assert_close(same[:20], same[20:], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="camids has 3 entries for 51 features"):
        camera_standardize(f, np.array([0, 1, 0]))


def _two_epoch_run(root, out, seen: dict | None = None, **extra) -> tuple[Trainer, list[dict]]:
    """A 2-epoch x 2-step camera-aware run on the synthetic set; the trainer and its training rows.

    With ``seen`` (a dict), records what went through the method: ``seen["extracted"]``, the features
    ``(N, d)`` given to ``method.pseudo_label`` each epoch, and ``seen["batches"]``, the dataset indices
    ``(B,)`` of every training batch.
    """
    trainer = Trainer(load_config(None, tiny_overrides(root, out, **{
        "optim.epochs": 2, "optim.iters": 2, **CAMERA_AWARE, **extra})))
    if seen is not None:
        method = trainer.method
        label, step = method.pseudo_label, method.training_step
        seen.update(extracted=[], batches=[])

        def spy_label(epoch, features):
            seen["extracted"].append(features.clone())
            return label(epoch, features)

        def spy_step(batch, epoch=0):
            seen["batches"].append(batch["index"].clone())
            return step(batch, epoch)

        method.pseudo_label, method.training_step = spy_label, spy_step
    trainer.train()
    train_rows = [r for r in metrics_rows(trainer.output_dir) if "losses" in r]
    assert len(train_rows) == 2
    return trainer, train_rows


def _spy_labeller(monkeypatch) -> list[torch.Tensor]:
    """Record the features ``(N, d)`` every ``PseudoLabeler.fit`` receives (what the clustering sees)."""
    from unreid.pseudo_labels import PseudoLabeler

    fed: list[torch.Tensor] = []
    fit = PseudoLabeler.fit

    def spy(self, features, *args, **kwargs):
        fed.append(torch.as_tensor(features).clone())
        return fit(self, features, *args, **kwargs)

    monkeypatch.setattr(PseudoLabeler, "fit", spy)
    return fed


@pytest.mark.slow
def test_camera_aware_run_reports_proxies_and_cross_camera_ratio(synthetic_root, tmp_path, monkeypatch):
    fed, seen = _spy_labeller(monkeypatch), {}
    trainer, train_rows = _two_epoch_run(synthetic_root, tmp_path / "run", seen)
    cams = np.asarray(trainer.method.camids)
    for r in train_rows:
        pl, losses = r["pseudo_labels"], r["losses"]
        assert pl["num_proxies"] >= pl["num_clusters"]
        assert 0.0 <= pl["cross_camera_ratio"] <= 1.0
        assert sum(pl["proxies_per_camera"].values()) == pl["num_proxies"]
        assert {"loss", "cluster_nce", "intra_camera", "inter_camera"} <= set(losses)
        # the proxy losses are in the total beside ClusterNCE (method_loss_weight 1; the reported
        # inter-camera term is already weighted), and the intra-camera term does work every epoch
        assert losses["intra_camera"] > 0.0
        assert losses["loss"] == pytest.approx(
            losses["cluster_nce"] + losses["intra_camera"] + losses["inter_camera"], rel=1e-4)
    assert train_rows[0]["losses"]["inter_camera"] == 0.0  # off before inter_start_epoch
    assert train_rows[1]["losses"]["inter_camera"] > 0.0
    # one proxy per (pseudo-identity, camera) of the last epoch's labels, every camera represented
    labels = trainer.method.labels.labels
    pairs = {(int(y), int(c)) for y, c in zip(labels, cams, strict=True) if y >= 0}
    assert train_rows[-1]["pseudo_labels"]["num_proxies"] == len(pairs) == trainer.method.proxy_memory.num_proxies
    assert set(train_rows[-1]["pseudo_labels"]["proxies_per_camera"]) == {str(c) for c in np.unique(cams)}
    # neighbourhood=standardize: the clustering saw the per-camera standardised features, not the raw ones
    assert len(fed) == len(seen["extracted"]) == 2
    for raw, clustered in zip(seen["extracted"], fed, strict=True):
        torch.testing.assert_close(clustered, camera_standardize(raw, cams))
        assert (clustered - raw).abs().max() > 1e-2


def test_o2cap_losses_run_through_the_engine(synthetic_root, tmp_path):
    # the released O2CAP settings: no intra-camera loss, offline + online association from epoch 0
    _, train_rows = _two_epoch_run(synthetic_root, tmp_path / "run", **{
        "method.camera.intra_weight": 0.0, "method.camera.inter_weight": 1.0,
        "method.camera.online_weight": 1.0, "method.camera.inter_start_epoch": 0,
        "method.camera.method_loss_weight": 0.0})
    for r in train_rows:
        losses = r["losses"]
        assert losses["intra_camera"] == 0.0 and losses["inter_camera"] > 0 and losses["online_camera"] > 0
        assert losses["loss"] == pytest.approx(losses["inter_camera"] + losses["online_camera"], rel=1e-4)


def test_proxy_sampler_runs_through_the_engine(synthetic_root, tmp_path):
    # data.sampler=proxy: the engine draws K images of every (pseudo-id, camera) proxy per pass
    seen: dict = {}
    trainer, train_rows = _two_epoch_run(synthetic_root, tmp_path / "run", seen, **{
        "data.sampler": "proxy", "method.camera.online_weight": 1.0})
    sampler = trainer.method.sampler(trainer.method.labels, seed=0)
    labels, cams = trainer.method.labels.labels, np.asarray(trainer.method.camids)
    k = trainer.cfg.data.num_instances
    order = np.array(list(sampler)).reshape(-1, k)
    keys = {(int(labels[g[0]]), int(cams[g[0]])) for g in order}
    assert all(len({(int(labels[i]), int(cams[i])) for i in g}) == 1 for g in order)  # one proxy per group
    assert len(order) == len(keys) == train_rows[-1]["pseudo_labels"]["num_proxies"]  # each proxy once
    assert all(np.isfinite(r["losses"]["loss"]) for r in train_rows)
    # ... and the engine trained on it: the last epoch's batches are K images of one proxy after another
    last = torch.cat(seen["batches"][-trainer.cfg.optim.iters:]).numpy().reshape(-1, k)
    assert all(len({(int(labels[i]), int(cams[i])) for i in g}) == 1 for g in last)
    assert len({(int(labels[g[0]]), int(cams[g[0]])) for g in last}) > 1


@pytest.mark.parametrize("check", ["none", "auto"])
def test_cross_camera_matching_run_merges_clusters_across_cameras(synthetic_root, tmp_path, check):
    """Three cameras. Without the merge check every one-to-one assignment merges; with it (the default
    with more than two cameras) every assignment is either merged or reported as rejected. On these
    barely trained features the ratio test turns them all down (ambiguous partners), which is its intended
    fallback: the per-camera clusters stay apart."""
    cfg = load_config(None, tiny_overrides(synthetic_root, tmp_path / "run", **{
        "optim.epochs": 1, "optim.iters": 1, "method.camera.matching": True, "pseudo_labels.merge_check": check,
        "pseudo_labels.eps": 0.3, "data.batch_size": 8, "data.num_instances": 2}))
    trainer = Trainer(cfg)
    trainer.train()
    row = metrics_rows(trainer.output_dir)[-1]
    pl = row["pseudo_labels"]
    k = list(pl["per_camera_clusters"].values())
    assert len(k) == 3 and min(k) >= 1
    assignments = sum(min(k[i], k[j]) for i in range(3) for j in range(i + 1, 3))
    assert pl["matched_pairs"] + pl["matches_rejected"] == assignments
    if check == "none":
        assert pl["matched_pairs"] == assignments and pl["matches_rejected"] == 0
        assert pl["cross_camera_ratio"] > 0.5  # every per-camera cluster has a partner in each other camera
    else:
        assert pl["matches_rejected"] >= 1


@pytest.mark.parametrize(("method", "neighbourhood"), [
    ("cluster_contrast", "standardize"), ("cluster_contrast", "ca_jaccard"), ("hhcl", "standardize")])
@pytest.mark.slow
def test_camera_aware_run_ignores_training_identities(synthetic_root, tmp_path, method, neighbourhood):
    """Camera ids may steer camera-aware training; identities may not: scrambling them changes nothing."""
    base = load_config(None, tiny_overrides(synthetic_root, tmp_path / "x", **{
        "optim.epochs": 2, "optim.iters": 2, **CAMERA_AWARE, "method.name": method,
        "method.camera.neighbourhood": neighbourhood}))
    data = load_data(base)
    a, ra = _run(dataclasses.replace(base, output_dir=str(tmp_path / "true")), data)
    b, rb = _run(dataclasses.replace(base, output_dir=str(tmp_path / "scrambled")), _scrambled(data))
    assert _same_model(a, b)
    assert torch.equal(a["method"]["memories"]["camera_proxies"]["memory"],
                       b["method"]["memories"]["camera_proxies"]["memory"])
    assert [x.get("losses") for x in ra] == [y.get("losses") for y in rb]


@pytest.mark.slow
def test_every_camera_aware_part_runs_under_hhcl(synthetic_root, tmp_path):
    """The camera-aware parts belong to the shared engine: HHCL takes them from config as Cluster
    Contrast does (camera BN, standardisation, per-camera clustering + matching, CAP proxies), and its
    own hybrid-memory losses stay in the sum beside the proxy losses."""
    trainer, train_rows = _two_epoch_run(synthetic_root, tmp_path / "run", **{
        "method.name": "hhcl", "method.camera.matching": True, "model.camera_bn": True,
        "pseudo_labels.eps": 0.3, "data.batch_size": 4, "data.num_instances": 2, "method.hhcl.num_slots": 2})
    for r in train_rows:
        pl, losses = r["pseudo_labels"], r["losses"]
        assert {"centroid_nce", "hard_nce", "intra_camera", "inter_camera"} <= set(losses)
        assert pl["matched_pairs"] >= 1 and len(pl["per_camera_clusters"]) == 3
        assert pl["num_proxies"] >= pl["num_clusters"]
        # the total is HHCL's own loss (method_loss_weight 1, both cross-entropies positive) plus the
        # proxy terms (the inter-camera one already weighted): HHCL's loss was not dropped
        assert losses["loss"] - losses["intra_camera"] - losses["inter_camera"] > 0.1
        # exactly: CMhybrid's legacy w * (CE_hard + (1 - w) * CE_centroid), w = 0.5, plus the proxy terms
        hhcl_loss = 0.5 * (losses["hard_nce"] + 0.5 * losses["centroid_nce"])
        assert losses["loss"] == pytest.approx(hhcl_loss + losses["intra_camera"] + losses["inter_camera"], rel=1e-4)
    assert train_rows[1]["losses"]["inter_camera"] > 0.0
    assert camera_bn_layers(trainer.model)
