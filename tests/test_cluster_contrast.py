"""The Cluster Contrast method on a tiny model with hand-made pseudo-labels (no clustering needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unreid.config import Config
from unreid.data.datasets.base import Sample
from unreid.engine.checkpoint import load_checkpoint, save_checkpoint, to_tensors
from unreid.methods import METHODS, build_method
from unreid.methods.cluster_contrast import ClusterContrast
from unreid.pseudo_labels.base import PseudoLabels

N, D = 8, 4
LABELS = np.array([0, 0, 1, 1, 2, 2, -1, 1])


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, D))


def _train_set():
    return [Sample(f"img{i}.jpg", -1, i % 2) for i in range(N)]


def _images(seed=1):
    return torch.randn(N, 3, 2, 2, generator=torch.Generator().manual_seed(seed))


def _method(cfg=None, **kw):
    cfg = cfg or Config()
    return ClusterContrast(cfg, _model(), _train_set(), **kw)


def _built(cfg=None):
    method = _method(cfg)
    labels = PseudoLabels(LABELS, 3)
    method.set_labels(labels)
    with torch.no_grad():
        feats = F.normalize(method.model(_images()), dim=1)
    method.build_memory(feats, labels)
    return method, feats


def test_registered_and_built_by_name():
    assert METHODS["cluster_contrast"] is ClusterContrast
    method = build_method(Config(), _model(), _train_set())
    assert isinstance(method, ClusterContrast)


def test_build_memory_uses_cluster_means():
    method, feats = _built()
    mem = method.memory
    assert mem.num_clusters == 3 and mem.num_features == D
    for c in range(3):
        mean = feats[torch.as_tensor(LABELS) == c].mean(0)
        assert torch.allclose(mem.features[c], mean / mean.norm(), atol=1e-6)


def test_training_step_loss_and_memory_update():
    cfg = Config()
    cfg.method.temperature = 0.1
    cfg.method.momentum = 0.3
    method, _ = _built(cfg)
    images = _images()
    batch = {"img": images[[0, 2, 1, 3, 7]], "index": torch.tensor([0, 2, 1, 3, 7]),
             "camid": torch.zeros(5, dtype=torch.long), "modality": torch.zeros(5, dtype=torch.long)}
    mem0 = method.memory.features.clone()
    out = method.training_step(batch)
    assert torch.equal(out.outputs["targets"], torch.tensor([0, 1, 0, 1, 1]))
    # ClusterNCE by an explicit loop over the batch
    feats = out.outputs["features"].detach()
    total = 0.0
    for f, y in zip(feats, [0, 1, 0, 1, 1]):
        q = f / f.norm()
        s = [float(q @ m) / 0.1 for m in mem0]
        total += -(s[y] - math.log(sum(math.exp(v) for v in s)))
    assert out.losses["loss"].item() == pytest.approx(total / 5, rel=1e-5)
    assert out.losses["cluster_nce"].item() == pytest.approx(total / 5, rel=1e-5)

    opt = torch.optim.SGD(method.model.parameters(), lr=0.1)
    opt.zero_grad()
    out.losses["loss"].backward()
    assert torch.equal(method.memory.features, mem0)  # backward never touches the memory
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.model.parameters())
    opt.step()
    method.update_memory(batch, out.outputs)
    # the reference's per-sample loop, in batch order, with the normalised features
    ref = mem0.clone()
    for f, y in zip(feats, [0, 1, 0, 1, 1]):
        ref[y] = 0.3 * ref[y] + 0.7 * f / f.norm()
        ref[y] = ref[y] / ref[y].norm()
    assert torch.allclose(method.memory.features, ref, atol=1e-6)
    assert torch.equal(method.memory.features[2], mem0[2])


def test_batch_mean_option_is_used():
    cfg = Config()
    cfg.method.memory_update = "batch_mean"
    method, _ = _built(cfg)
    assert method.memory.update_rule == "batch_mean"


def test_refresh_with_supervised_labels_builds_the_memory():
    # the supervised reference hands the true labels through Method.pseudo_label: no clustering runs
    gt = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    method = ClusterContrast(Config(), _model(), _train_set(), supervised_labels=gt)
    feats = F.normalize(torch.randn(N, D, generator=torch.Generator().manual_seed(3)), dim=1)
    labels = method.refresh(0, feats)
    assert labels.num_clusters == 4 and method.memory.num_clusters == 4
    assert torch.allclose(method.memory.features[3], F.normalize(feats[6] + feats[7], dim=0), atol=1e-6)


def test_state_dict_round_trip_through_a_checkpoint(tmp_path):
    method, _ = _built()
    batch = {"img": _images()[:4], "index": torch.arange(4)}
    out = method.training_step(batch)
    method.update_memory(batch, out.outputs)
    save_checkpoint({"method": to_tensors(method.state_dict())}, tmp_path / "ck.pth")
    state = load_checkpoint(tmp_path / "ck.pth")["method"]
    other = _method()
    other.load_state_dict(state)
    assert torch.equal(other.memory.features, method.memory.features)
    assert np.array_equal(other.labels.labels, LABELS) and other.labels.num_clusters == 3
    assert torch.equal(other.batch_targets(batch), method.batch_targets(batch))
    # continuing from the restored state gives the same memory as continuing the original
    b2 = {"img": _images(5)[:3], "index": torch.tensor([4, 5, 1])}
    for m in (method, other):
        with torch.no_grad():
            m.update_memory(b2, {"features": method.model(b2["img"]), "targets": m.batch_targets(b2)})
    assert torch.equal(other.memory.features, method.memory.features)


def test_training_step_before_memory_raises():
    method = _method()
    with pytest.raises(RuntimeError, match="refresh"):
        method.training_step({"img": _images(), "index": torch.arange(N)})
