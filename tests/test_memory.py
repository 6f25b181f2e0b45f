"""Cluster memory (Cluster Contrast) and the contrastive loss functions on hand-built examples.

Expected values are computed by hand or by explicit Python loops written here, independently of the
vectorised code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unreid.losses import cluster_nce, cmhybrid_loss, cmhybrid_v2_loss, hard_instance_logits, memory_logits
from unreid.memory.cluster import (
    ClusterMemory,
    cluster_centroids,
    occurrence_rank,
    sequential_momentum_update,
)

# 2-D features: clusters 0 (two members), 1 (two members), 2 (one member), one outlier
FEATS = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8], [-1.0, 0.0], [-0.8, -0.6]])
LABELS = np.array([0, 0, 1, 1, 2, -1])


def _unit(x, y):
    n = math.hypot(x, y)
    return [x / n, y / n]


def _loop_update(memory, feats, targets, mu):
    """The reference rule written as a plain loop: per sample in batch order."""
    mem = [list(map(float, row)) for row in memory]
    for f, y in zip(feats.tolist(), targets.tolist()):
        if y < 0:
            continue
        row = [mu * m + (1 - mu) * x for m, x in zip(mem[y], f)]
        n = math.sqrt(sum(v * v for v in row))
        mem[y] = [v / n for v in row]
    return torch.tensor(mem)


def test_init_is_normalised_cluster_means():
    mem = ClusterMemory(2, 3)
    mem.init_from_features(FEATS, LABELS)
    # by hand: (1,0)+(.8,.6) = (1.8,.6); (0,1)+(-.6,.8) = (-.6,1.8); (-1,0); the outlier is ignored
    expected = torch.tensor([_unit(1.8, 0.6), _unit(-0.6, 1.8), [-1.0, 0.0]])
    assert torch.allclose(mem.features, expected, atol=1e-6)
    assert mem.num_clusters == 3 and mem.num_features == 2
    assert not mem.features.requires_grad


def test_init_errors_are_specific():
    with pytest.raises(ValueError, match="num_clusters=2"):
        cluster_centroids(FEATS, LABELS, num_clusters=2)
    with pytest.raises(ValueError, match="dimension 2"):
        ClusterMemory(3, 3).init_from_features(FEATS, LABELS)
    with pytest.raises(ValueError, match="method.memory_update"):
        ClusterMemory(2, 3, update="mean")
    # a cluster without members keeps a zero row
    rows = cluster_centroids(FEATS, LABELS, num_clusters=4)
    assert torch.equal(rows[3], torch.zeros(2))


def test_cluster_nce_by_hand():
    mem = ClusterMemory(2, 3, temperature=0.5)
    mem.init_from_features(FEATS, LABELS)
    m = [_unit(1.8, 0.6), _unit(-0.6, 1.8), [-1.0, 0.0]]
    q = torch.tensor([[3.0, 4.0], [2.0, 0.0]])  # normalised: (0.6, 0.8) and (1, 0)
    targets = torch.tensor([1, 0])
    total = 0.0
    for (qx, qy), y in zip([(0.6, 0.8), (1.0, 0.0)], [1, 0]):
        s = [(qx * mx + qy * my) / 0.5 for mx, my in m]
        total += -(s[y] - math.log(sum(math.exp(v) for v in s)))
    assert mem.loss(q, targets).item() == pytest.approx(total / 2, rel=1e-6)
    logits = mem.logits(q)
    assert logits.dtype == torch.float32 and logits.shape == (2, 3)
    assert logits[0, 1].item() == pytest.approx((0.6 * m[1][0] + 0.8 * m[1][1]) / 0.5, rel=1e-6)


def test_logits_stay_float32_under_autocast():
    mem = ClusterMemory(2, 3, temperature=0.05)
    mem.init_from_features(FEATS, LABELS)
    q = torch.tensor([[0.3, 0.7], [-0.2, 0.9]])
    plain = mem.logits(q)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = mem.logits(q.bfloat16())
    assert auto.dtype == torch.float32
    # only the input rounding to bfloat16 may differ, not a bfloat16 matmul (error would be ~1e-1 here)
    assert torch.allclose(auto, mem.logits(q.bfloat16().float()), atol=1e-5)
    assert torch.allclose(auto, plain, atol=0.2)


def test_occurrence_rank():
    assert occurrence_rank(torch.tensor([2, 0, 2, 1, 2, 0])).tolist() == [0, 0, 1, 0, 2, 1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_sample_update_equals_sequential_loop_interleaved(seed):
    g = torch.Generator().manual_seed(seed)
    mem0 = F.normalize(torch.randn(4, 3, generator=g), dim=1)
    feats = F.normalize(torch.randn(9, 3, generator=g), dim=1)
    targets = torch.tensor([2, 0, 2, 1, 2, 0, -1, 3, 0])  # interleaved repeats and an outlier
    expected = _loop_update(mem0, feats, targets, 0.1)
    mem = mem0.clone()
    sequential_momentum_update(mem, feats, targets, 0.1)
    assert torch.allclose(mem, expected, atol=1e-6)
    # the order within a cluster matters: swapping two samples of cluster 2 changes the result
    swapped = targets.clone()
    perm = torch.tensor([4, 1, 2, 3, 0, 5, 6, 7, 8])
    other = mem0.clone()
    sequential_momentum_update(other, feats[perm], swapped[perm], 0.1)
    assert not torch.allclose(other[2], mem[2], atol=1e-4)


def test_per_sample_update_on_a_hand_example():
    mem = ClusterMemory(2, 2, momentum=0.5)
    mem.features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # un-normalised inputs: normalised inside to (0,1), (1,0), (0,1)
    mem.update(torch.tensor([[0.0, 2.0], [3.0, 0.0], [0.0, 5.0]]), torch.tensor([0, 1, 0]))
    # row 0: (1,0) -> normalize(.5,.5) = (1/sqrt2, 1/sqrt2) -> normalize(.5/sqrt2, .5/sqrt2 + .5)
    a = 0.5 / math.sqrt(2)
    row0 = _unit(a, a + 0.5)
    row1 = _unit(0.5, 0.5)
    assert torch.allclose(mem.features, torch.tensor([row0, row1]), atol=1e-6)


def test_batch_mean_update_by_hand():
    mem = ClusterMemory(2, 3, momentum=0.2, update="batch_mean")
    mem.init_from_features(FEATS, LABELS)
    before = mem.features.clone()
    f = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    mem.update(f, torch.tensor([0, 0, 2]))
    mean0 = [(1.0 + 0.0) / 2, (0.0 + 1.0) / 2]  # of the normalised features (1,0) and (0,1)
    b0 = before[0].tolist()
    row0 = _unit(0.2 * b0[0] + 0.8 * mean0[0], 0.2 * b0[1] + 0.8 * mean0[1])
    row2 = _unit(0.2 * -1.0 + 0.8 * 0.6, 0.8 * 0.8)
    assert torch.allclose(mem.features[0], torch.tensor(row0), atol=1e-6)
    assert torch.allclose(mem.features[2], torch.tensor(row2), atol=1e-6)
    assert torch.equal(mem.features[1], before[1])


def test_gradients_reach_features_never_the_memory():
    mem = ClusterMemory(2, 3, temperature=0.1)
    mem.init_from_features(FEATS, LABELS)
    before = mem.features.clone()
    f = torch.tensor([[1.0, 0.2], [0.1, 1.0], [0.6, 0.8]], requires_grad=True)
    t = torch.tensor([0, 1, 2])
    mem.loss(f, t).backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    assert not mem.features.requires_grad and mem.features.grad is None
    assert torch.equal(mem.features, before)
    # the gradient equals the analytic one: d/dq of CE(qM^T/tau) = (softmax - onehot) M / tau, chained
    # through the normalisation q = f/|f|
    q = F.normalize(f.detach(), dim=1)
    p = torch.softmax(q @ before.t() / 0.1, dim=1)
    dq = (p - F.one_hot(t, 3)) @ before / 0.1 / 3
    n = f.detach().norm(dim=1, keepdim=True)
    df = (dq - (dq * q).sum(1, keepdim=True) * q) / n
    assert torch.allclose(f.grad, df, atol=1e-5)


def test_state_dict_round_trip_is_exact_and_a_copy():
    mem = ClusterMemory(2, 3, momentum=0.3)
    mem.init_from_features(FEATS, LABELS)
    mem.update(torch.tensor([[0.3, 0.9], [0.5, -0.1]]), torch.tensor([1, 1]))
    state = mem.state_dict()
    other = ClusterMemory(2, 1)
    other.load_state_dict(state)
    assert torch.equal(other.features, mem.features) and other.num_clusters == 3
    mem.update(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    assert torch.equal(state["features"], other.features)  # the saved copy did not follow the update


def test_loss_functions_by_hand():
    # label smoothing eps: targets (1-eps)*onehot + eps/C (HHCL CrossEntropyLabelSmooth)
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    t = torch.tensor([0, 2])
    logp = torch.log_softmax(logits, dim=1)
    smooth = torch.full((2, 3), 0.1 / 3)
    smooth[0, 0] += 0.9
    smooth[1, 2] += 0.9
    assert cluster_nce(logits, t, 0.1).item() == pytest.approx((-(smooth * logp).sum(1)).mean().item(), rel=1e-6)
    assert cluster_nce(logits, t).item() == pytest.approx(-(logp[0, 0] + logp[1, 2]).item() / 2, rel=1e-6)
    # hard-instance logits: min over slots for the true class, max for the others
    sims = torch.tensor([[[0.1, 0.5, 0.3]], [[0.4, 0.2, 0.9]]])  # (P=2, B=1, C=3)
    z = hard_instance_logits(sims, torch.tensor([1]), 0.5)
    assert torch.allclose(z, torch.tensor([[0.4 / 0.5, 0.2 / 0.5, 0.9 / 0.5]]))
    with pytest.raises(ValueError, match="P, B, C"):
        hard_instance_logits(sims[0], torch.tensor([1]), 0.5)
    one, two = torch.tensor(2.0), torch.tensor(4.0)
    assert cmhybrid_loss(one, two, 0.5, legacy=True).item() == pytest.approx(0.5 * (2 + 0.5 * 4))
    assert cmhybrid_loss(one, two, 0.3, legacy=False).item() == pytest.approx(0.3 * 2 + 0.7 * 4)
    assert cmhybrid_v2_loss(two, one, 0.3).item() == pytest.approx(0.3 * 4 + 0.7 * 2)
    with pytest.raises(ValueError, match="dimension"):
        memory_logits(torch.zeros(1, 3), torch.zeros(2, 2), 0.05)
