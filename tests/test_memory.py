"""Cluster memory and HHCL hybrid memories on hand-built examples (values by explicit loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unreid.memory.cluster import ClusterMemory, sequential_momentum_update
from unreid.memory.hybrid import HybridMemory

FEATS = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8], [-1.0, 0.0], [-0.8, -0.6]])
LABELS = np.array([0, 0, 1, 1, 2, -1])


def test_init_means_and_cluster_nce_by_hand():
    mem = ClusterMemory(temperature=0.5)
    mem.init_from_features(FEATS, LABELS)
    expected = F.normalize(torch.tensor([[1.8, 0.6], [-0.6, 1.8], [-1.0, 0.0]]), dim=1)
    assert torch.allclose(mem.features, expected, atol=1e-6)
    q = torch.tensor([[3.0, 4.0]])  # normalised to (0.6, 0.8)
    s = [(0.6 * m[0] + 0.8 * m[1]).item() / 0.5 for m in expected]
    by_hand = -(s[1] - math.log(sum(math.exp(x) for x in s)))
    assert mem.loss(q, torch.tensor([1])).item() == pytest.approx(by_hand, rel=1e-5)


def test_per_sample_update_equals_sequential_loop():
    torch.manual_seed(0)
    mem = F.normalize(torch.randn(4, 3), dim=1)
    f = F.normalize(torch.randn(7, 3), dim=1)
    t = torch.tensor([2, 0, 2, 1, 2, 0, -1])  # interleaved repeats, one outlier
    ref = mem.clone()
    for x, y in zip(f, t.tolist()):
        if y < 0:
            continue
        ref[y] = 0.1 * ref[y] + 0.9 * x
        ref[y] /= ref[y].norm()
    sequential_momentum_update(mem, f, t, 0.1)
    assert torch.allclose(mem, ref, atol=1e-6)


def test_batch_mean_update_and_gradients():
    mem = ClusterMemory(momentum=0.2, update="batch_mean")
    mem.init_from_features(FEATS, LABELS)
    before = mem.features.clone()
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], requires_grad=True)
    t = torch.tensor([0, 0, 2])
    loss = mem.loss(f, t)
    loss.backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    assert not mem.features.requires_grad and torch.equal(mem.features, before)
    mem.update(f, t)
    mean0 = (torch.tensor([1.0, 0.0]) + torch.tensor([0.0, 1.0])) / 2
    assert torch.allclose(mem.features[0], F.normalize(0.2 * before[0] + 0.8 * mean0, dim=0), atol=1e-6)
    assert torch.equal(mem.features[1], before[1])
    other = ClusterMemory()
    other.load_state_dict(mem.state_dict())
    assert torch.equal(other.features, mem.features)


def test_cmhybrid_update_rules_and_losses():
    mem = HybridMemory("cmhybrid", temperature=0.5, momentum=0.2, hard_weight=0.3, legacy_weighting=True)
    mem.init_from_features(FEATS, LABELS)
    assert torch.equal(mem.hard, mem.centroids)
    h0, c0 = mem.hard.clone(), mem.centroids.clone()
    f = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    t = torch.tensor([0, 0, 1])
    out = mem.losses(f, t)
    fn = F.normalize(f, dim=1)
    s = fn @ h0.t() / 0.5  # hard and centroid rows are equal before any update
    ce = F.cross_entropy(s, t).item()
    assert out["loss"].item() == pytest.approx(0.3 * (ce + 0.7 * ce), rel=1e-5)
    clean = HybridMemory("cmhybrid", temperature=0.5, hard_weight=0.3, legacy_weighting=False)
    clean.init_from_features(FEATS, LABELS)
    assert clean.losses(f, t)["loss"].item() == pytest.approx(0.3 * ce + 0.7 * ce, rel=1e-5)
    mem.update(f, t)
    # cluster 0: batch features (1,0) and (.6,.8); the least similar to h0[0] is chosen
    sims = [float(fn[0] @ h0[0]), float(fn[1] @ h0[0])]
    hardest = fn[int(np.argmin(sims))]
    assert torch.allclose(mem.hard[0], F.normalize(0.2 * h0[0] + 0.8 * hardest, dim=0), atol=1e-6)
    assert torch.allclose(mem.centroids[0], F.normalize(0.2 * c0[0] + 0.8 * fn[:2].mean(0), dim=0), atol=1e-6)
    assert torch.allclose(mem.hard[1], F.normalize(0.2 * h0[1] + 0.8 * fn[2], dim=0), atol=1e-6)
    assert torch.equal(mem.hard[2], h0[2])


def test_cmhybrid_v2_slots_logits_and_overflow_guard(caplog):
    mem = HybridMemory("cmhybrid_v2", temperature=0.5, momentum=0.1, hard_weight=0.4, num_slots=2)
    mem.init_from_features(FEATS, LABELS, generator=torch.Generator().manual_seed(0))
    assert mem.hard.shape == (2, 3, 2)
    fn_all = F.normalize(FEATS, dim=1)
    for p in range(2):  # every slot holds a member of its cluster
        for c in range(3):
            members = fn_all[torch.as_tensor(LABELS) == c]
            assert any(torch.allclose(mem.hard[p, c], m) for m in members)
    f = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    t = torch.tensor([1, 0])
    fn = F.normalize(f, dim=1)
    sims = torch.einsum("bd,pcd->pbc", fn, mem.hard)
    hard = torch.where(F.one_hot(t, 3).bool(), sims.min(0).values, sims.max(0).values) / 0.5
    cent = fn @ mem.centroids.t() / 0.5
    expected = 0.4 * F.cross_entropy(cent, t) + 0.6 * F.cross_entropy(hard, t)
    assert mem.losses(f, t)["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    old = mem.hard.clone()
    batch = F.normalize(torch.tensor([[1.0, 0.1], [0.9, 0.3], [0.7, 0.7], [0.0, 1.0]]), dim=1)
    mem.update(batch, torch.tensor([0, 0, 0, 1]))  # three images of cluster 0 > 2 slots
    assert "only the first 2" in caplog.text
    assert torch.allclose(mem.hard[0, 0], batch[0]) and torch.allclose(mem.hard[1, 0], batch[1])
    assert torch.allclose(mem.hard[0, 1], batch[3]) and torch.equal(mem.hard[1, 1], old[1, 1])
    assert torch.equal(mem.hard[:, 2], old[:, 2])
