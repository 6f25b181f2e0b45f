"""HHCL: the hybrid memories (CMhybrid, CMhybrid_v2), the method on a tiny model, and its configs.

Expected values come from hand computations or explicit Python loops written here.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unreid.config import Config, load_config
from unreid.data.datasets.base import Sample
from unreid.engine.checkpoint import load_checkpoint, save_checkpoint, to_tensors
from unreid.memory.hybrid import HybridMemory, draw_members, first_argmin_per_group
from unreid.methods import METHODS, build_method
from unreid.methods.hhcl import HHCL, slot_generator
from unreid.pseudo_labels.base import PseudoLabels

FEATS = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8], [-1.0, 0.0], [-0.8, -0.6]])
LABELS = np.array([0, 0, 1, 1, 2, -1])
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "hhcl"


def _unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _ce(logits, y, eps=0.0):
    """Cross-entropy of one row by hand, with label smoothing eps: (1-eps)*onehot + eps/C."""
    lse = math.log(sum(math.exp(v) for v in logits))
    logp = [v - lse for v in logits]
    c = len(logits)
    return -sum(((1 - eps) * (k == y) + eps / c) * lp for k, lp in enumerate(logp))


# ---------------------------------------------------------------------------------------------- CMhybrid
def test_cmhybrid_init_and_losses_by_hand():
    mem = HybridMemory(2, 3, "cmhybrid", temperature=0.5, hard_weight=0.3, legacy_weighting=True)
    mem.init_from_features(FEATS, LABELS)
    means = [_unit([1.8, 0.6]), _unit([-0.6, 1.8]), [-1.0, 0.0]]
    assert torch.allclose(mem.centroids, torch.tensor(means), atol=1e-6)
    assert torch.equal(mem.hard, mem.centroids) and mem.slots.numel() == 0
    # make hard and centroid rows differ so that the two CE terms differ
    mem.hard = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, -0.8]])
    f = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    t = [0, 2]
    qs = [[0.6, 0.8], [1.0, 0.0]]
    ce_h = sum(_ce([_dot(q, h) / 0.5 for h in mem.hard.tolist()], y) for q, y in zip(qs, t)) / 2
    ce_c = sum(_ce([_dot(q, c) / 0.5 for c in means], y) for q, y in zip(qs, t)) / 2
    out = mem.losses(f, torch.tensor(t))
    assert out["hard_nce"].item() == pytest.approx(ce_h, rel=1e-5)
    assert out["centroid_nce"].item() == pytest.approx(ce_c, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.3 * (ce_h + 0.7 * ce_c), rel=1e-5)  # legacy
    mem.legacy_weighting = False
    assert mem.losses(f, torch.tensor(t))["loss"].item() == pytest.approx(0.3 * ce_h + 0.7 * ce_c, rel=1e-5)
    mem.label_smoothing = 0.1
    smooth_h = sum(_ce([_dot(q, h) / 0.5 for h in mem.hard.tolist()], y, 0.1) for q, y in zip(qs, t)) / 2
    assert mem.losses(f, torch.tensor(t))["hard_nce"].item() == pytest.approx(smooth_h, rel=1e-5)


def test_cmhybrid_update_rules_by_hand():
    mem = HybridMemory(2, 3, "cmhybrid", momentum=0.2)
    mem.init_from_features(FEATS, LABELS)
    h0, c0 = mem.hard.tolist(), mem.centroids.tolist()
    # cluster 0 gets three features; cluster 1 one; cluster 2 none
    f = torch.tensor([[0.6, 0.8], [2.0, 0.0], [0.0, 1.0], [-1.0, 1.0]])
    t = torch.tensor([0, 0, 1, 0])
    qs = [_unit(v) for v in f.tolist()]
    mem.update(f, t)
    members0 = [qs[0], qs[1], qs[3]]
    sims = [_dot(q, h0[0]) for q in members0]
    hardest = members0[int(np.argmin(sims))]  # (-1, 1)/sqrt2 is the least similar to h0[0]
    assert hardest == qs[3]
    exp_h0 = _unit([0.2 * a + 0.8 * b for a, b in zip(h0[0], hardest)])
    mean0 = [sum(q[k] for q in members0) / 3 for k in range(2)]
    exp_c0 = _unit([0.2 * a + 0.8 * b for a, b in zip(c0[0], mean0)])
    assert torch.allclose(mem.hard[0], torch.tensor(exp_h0), atol=1e-6)
    assert torch.allclose(mem.centroids[0], torch.tensor(exp_c0), atol=1e-6)
    exp_1 = _unit([0.2 * a + 0.8 * b for a, b in zip(h0[1], qs[2])])
    assert torch.allclose(mem.hard[1], torch.tensor(exp_1), atol=1e-6)
    assert torch.equal(mem.hard[2], torch.tensor(h0[2])) and torch.equal(mem.centroids[2], torch.tensor(c0[2]))


def test_first_argmin_per_group_takes_the_first_on_ties():
    values = torch.tensor([0.5, 0.1, 0.1, 0.3, 0.3, 0.9])
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    assert first_argmin_per_group(values, groups, 3).tolist() == [1, 3, 5]


def test_gradients_reach_features_never_the_memory():
    for variant in ("cmhybrid", "cmhybrid_v2"):
        mem = HybridMemory(2, 3, variant, num_slots=2)
        mem.init_from_features(FEATS, LABELS, generator=torch.Generator().manual_seed(0))
        before = {k: v.clone() for k, v in mem.state_dict().items()}
        f = torch.tensor([[1.0, 0.2], [0.1, 1.0], [0.6, 0.8]], requires_grad=True)
        mem.losses(f, torch.tensor([0, 1, 2]))["loss"].backward()
        assert f.grad is not None and f.grad.abs().sum() > 0
        for k, v in mem.state_dict().items():
            assert torch.equal(v, before[k]) and not getattr(mem, k).requires_grad


# ------------------------------------------------------------------------------------------- CMhybrid_v2
def test_draw_members_with_replacement_and_seeded():
    labels = torch.tensor([0, 1, 0, -1, 2, 1, 0])
    a = draw_members(labels, 3, 50, torch.Generator().manual_seed(4))
    b = draw_members(labels, 3, 50, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and a.shape == (3, 50)
    for c in range(3):
        members = set(torch.nonzero(labels == c).squeeze(1).tolist())
        assert set(a[c].tolist()) == members  # 50 draws from <= 3 members: all members appear, no others
    assert (a[2] == 4).all()  # a single-member cluster repeats that member (with replacement)
    with pytest.raises(ValueError, match="no member"):
        draw_members(torch.tensor([0, 2]), 3, 2)


def test_v2_slot_init():
    mem = HybridMemory(2, 3, "cmhybrid_v2", num_slots=4)
    mem.init_from_features(FEATS, LABELS, generator=torch.Generator().manual_seed(0))
    assert mem.slots.shape == (4, 3, 2) and mem.hard.numel() == 0
    q = F.normalize(FEATS, dim=1)
    for c in range(3):
        members = q[torch.as_tensor(LABELS) == c]
        for p in range(4):
            assert any(torch.allclose(mem.slots[p, c], m) for m in members)


def test_v2_hard_logits_and_loss_by_hand():
    mem = HybridMemory(2, 2, "cmhybrid_v2", temperature=0.5, hard_weight=0.4, num_slots=2)
    mem.centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    slots = [[[1.0, 0.0], [0.0, 1.0]],  # slot 0 of clusters 0, 1
             [[0.6, 0.8], [-0.6, 0.8]]]  # slot 1
    mem.slots = torch.tensor(slots)
    f = torch.tensor([[0.8, 0.6], [0.0, 2.0]])
    t = [0, 1]
    qs = [[0.8, 0.6], [0.0, 1.0]]
    ce_h = 0.0
    for q, y in zip(qs, t):
        z = []
        for k in range(2):
            s = [_dot(q, slots[p][k]) for p in range(2)]
            z.append((min(s) if k == y else max(s)) / 0.5)  # hardest positive, hardest negatives
        ce_h += _ce(z, y) / 2
    # q0 = (.8,.6): true class 0 -> min(.8, .96) = .8; class 1 -> max(.6, .0) = .6
    ce_c = sum(_ce([_dot(q, c) / 0.5 for c in ([1, 0], [0, 1])], y) for q, y in zip(qs, t)) / 2
    out = mem.losses(f, torch.tensor(t))
    assert out["hard_nce"].item() == pytest.approx(ce_h, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.4 * ce_c + 0.6 * ce_h, rel=1e-5)


def test_v2_update_overwrites_first_slots_and_guards_overflow(caplog):
    mem = HybridMemory(2, 3, "cmhybrid_v2", momentum=0.1, num_slots=2)
    mem.init_from_features(FEATS, LABELS, generator=torch.Generator().manual_seed(1))
    old_slots, old_cent = mem.slots.clone(), mem.centroids.clone()
    f = torch.tensor([[1.0, 0.1], [0.0, 3.0], [0.9, 0.3], [0.7, 0.7]])
    t = torch.tensor([0, 1, 0, 0])  # three images of cluster 0 but only two slots
    q = F.normalize(f, dim=1)
    with caplog.at_level(logging.WARNING, logger="unreid"):
        mem.update(f, t)
        mem.update(f, t)
    assert caplog.text.count("only the first 2 are written") == 1  # warned once
    # first n_b slots overwritten in batch order, no momentum; the rest stale
    assert torch.equal(mem.slots[0, 0], q[0]) and torch.equal(mem.slots[1, 0], q[2])
    assert torch.equal(mem.slots[0, 1], q[1]) and torch.equal(mem.slots[1, 1], old_slots[1, 1])
    assert torch.equal(mem.slots[:, 2], old_slots[:, 2])
    # centroids: momentum with the batch mean (applied twice here)
    c = old_cent[0]
    for _ in range(2):
        c = F.normalize(0.1 * c + 0.9 * q[[0, 2, 3]].mean(0), dim=0)
    assert torch.allclose(mem.centroids[0], c, atol=1e-6)
    assert torch.equal(mem.centroids[2], old_cent[2])


def test_state_dict_round_trip_both_variants():
    for variant in ("cmhybrid", "cmhybrid_v2"):
        mem = HybridMemory(2, 3, variant, num_slots=3)
        mem.init_from_features(FEATS, LABELS, generator=torch.Generator().manual_seed(2))
        mem.update(torch.tensor([[0.3, 0.9], [0.5, -0.1]]), torch.tensor([1, 0]))
        state = mem.state_dict()
        other = HybridMemory(2, 1, variant, num_slots=1)
        other.load_state_dict(state)
        for k, v in mem.state_dict().items():
            assert torch.equal(getattr(other, k), v), (variant, k)
        wrong = HybridMemory(2, 3, "cmhybrid_v2" if variant == "cmhybrid" else "cmhybrid")
        with pytest.raises(ValueError, match="method.hhcl.variant"):
            wrong.load_state_dict(state)


# --------------------------------------------------------------------------------------- label smoothing
def _smooth_targets_loop(logits, y, eps):
    """HHCL's CrossEntropyLabelSmooth(C, eps, topk_smoothing=True) targets for one row, by a loop
    (hhcl/models/losses.py): k = C // 50; k > 1: (1-eps) on y plus eps/k on each of the k largest
    logits (y included when it is one of them); otherwise uniform (1-eps)*onehot + eps/C."""
    c = len(logits)
    k = c // 50
    target = [0.0] * c
    target[y] += 1 - eps
    if k > 1:
        ranked = sorted(range(c), key=lambda j: -logits[j])
        for j in ranked[:k]:
            target[j] += eps / k
    else:
        target = [v + eps / c for v in target]
    return target


def _ce_targets(logits, target):
    lse = math.log(sum(math.exp(v) for v in logits))
    return -sum(t * (v - lse) for t, v in zip(target, logits))


def _distinct_logits(b, c, seed):
    """(B, C) logits without ties (a permutation of a grid), float64 for the Python loop."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(c, generator=g).double() * (4.0 / c) for _ in range(b)])


@pytest.mark.parametrize("c", [7, 60, 99, 100, 149, 150, 260])
def test_topk_label_smoothing_matches_a_loop_reference(c):
    from unreid.losses import cluster_nce

    logits = _distinct_logits(3, c, seed=c)
    # row 0: true class = the row's argmax (inside the top-k); row 1: the argmin (outside); row 2: middle
    t = [int(logits[0].argmax()), int(logits[1].argmin()), int(logits[2].argsort()[c // 2])]
    rows = logits.tolist()
    targets = [_smooth_targets_loop(r, y, 0.1) for r, y in zip(rows, t)]
    expected = sum(_ce_targets(r, tg) for r, tg in zip(rows, targets)) / 3
    x = logits.float().requires_grad_(True)
    got = cluster_nce(x, torch.tensor(t), 0.1, "topk")
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # d loss / d logits = (softmax - target) / B: the top-k targets are constants (no gradient through them)
    got.backward()
    expected_grad = (torch.softmax(logits, 1) - torch.tensor(targets, dtype=torch.float64)) / 3
    torch.testing.assert_close(x.grad, expected_grad.float(), rtol=1e-4, atol=1e-6)
    uniform = sum(_ce(r, y, 0.1) for r, y in zip(rows, t)) / 3
    assert cluster_nce(logits.float(), torch.tensor(t), 0.1, "uniform").item() == pytest.approx(uniform, rel=1e-5)
    if c >= 100:  # k = C // 50 >= 2: top-k differs from uniform ...
        assert abs(expected - uniform) > 1e-3
        assert targets[0][t[0]] == pytest.approx(0.9 + 0.1 / (c // 50))  # ... and y may be one of the top-k
    else:  # k <= 1: HHCL falls back to uniform
        assert expected == pytest.approx(uniform, rel=1e-9)
    # eps = 0: plain cross-entropy whatever the rule
    plain = F.cross_entropy(logits.float(), torch.tensor(t)).item()
    assert cluster_nce(logits.float(), torch.tensor(t), 0.0, "topk").item() == pytest.approx(plain, rel=1e-6)
    with pytest.raises(ValueError, match="method.hhcl.smoothing"):
        cluster_nce(logits.float(), torch.tensor(t), 0.1, "top5")


@pytest.mark.parametrize("variant", ["cmhybrid", "cmhybrid_v2"])
def test_memory_smooths_every_cross_entropy_with_hhcls_topk_by_default(variant):
    c, d = 120, 6  # k = 120 // 50 = 2
    feats = F.normalize(torch.randn(3 * c, d, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = np.repeat(np.arange(c), 3)
    mem = HybridMemory(d, c, variant, temperature=0.5, num_slots=2, label_smoothing=0.1)
    assert mem.smoothing == "topk"
    mem.init_from_features(feats, labels, generator=torch.Generator().manual_seed(1))
    f = torch.randn(4, d, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 5, 5, 119])
    q = F.normalize(f, dim=1).double()
    if variant == "cmhybrid":
        hard = (q @ mem.hard.double().t() / 0.5).tolist()
    else:
        sims = torch.einsum("bd,pcd->pbc", q, mem.slots.double())
        onehot = F.one_hot(t, c).bool()
        hard = (torch.where(onehot, sims.min(0).values, sims.max(0).values) / 0.5).tolist()
    cent = (q @ mem.centroids.double().t() / 0.5).tolist()
    y = t.tolist()
    exp_h = sum(_ce_targets(r, _smooth_targets_loop(r, yy, 0.1)) for r, yy in zip(hard, y)) / 4
    exp_c = sum(_ce_targets(r, _smooth_targets_loop(r, yy, 0.1)) for r, yy in zip(cent, y)) / 4
    out = mem.losses(f, t)
    assert out["hard_nce"].item() == pytest.approx(exp_h, rel=1e-5)
    assert out["centroid_nce"].item() == pytest.approx(exp_c, rel=1e-5)
    mem.smoothing = "uniform"
    assert mem.losses(f, t)["hard_nce"].item() == pytest.approx(
        sum(_ce(r, yy, 0.1) for r, yy in zip(hard, y)) / 4, rel=1e-5)
    with pytest.raises(ValueError, match="method.hhcl.smoothing"):
        HybridMemory(d, c, variant, smoothing="top5")


def test_method_passes_the_configured_smoothing():
    method = _method("cmhybrid")
    assert method.cfg.method.hhcl.smoothing == "topk"
    assert method.new_memory("hybrid").factory(D, 3).smoothing == "topk"
    method.cfg.method.hhcl.smoothing = "uniform"
    method.cfg.method.hhcl.label_smoothing = 0.1
    mem = method.new_memory("hybrid").factory(D, 3)
    assert (mem.smoothing, mem.label_smoothing) == ("uniform", 0.1)


# ------------------------------------------------------------------------------------------------ method
N, D = 8, 4
M_LABELS = np.array([0, 0, 1, 1, 2, 2, -1, 1])


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, D))


def _images(seed=1):
    return torch.randn(N, 3, 2, 2, generator=torch.Generator().manual_seed(seed))


def _method(variant):
    cfg = Config()
    cfg.method.name = "hhcl"
    cfg.method.hhcl.variant = variant
    cfg.method.hhcl.num_slots = 3
    cfg.data.num_instances = 2
    cfg.data.batch_size = 4
    return HHCL(cfg, _model(), [Sample(f"{i}.jpg", -1, i % 2) for i in range(N)])


def _built(variant, epoch=0):
    method = _method(variant)
    labels = PseudoLabels(M_LABELS, 3)
    method.set_labels(labels)
    with torch.no_grad():
        feats = F.normalize(method.model(_images()), dim=1)
    method.build_memory(feats, labels, epoch)
    return method, feats


@pytest.mark.parametrize("variant", ["cmhybrid", "cmhybrid_v2"])
def test_method_step_update_and_resume(variant, tmp_path):
    assert METHODS["hhcl"] is HHCL
    assert isinstance(build_method(_method(variant).cfg, _model(), _method(variant).train_set), HHCL)
    method, feats = _built(variant)
    batch = {"img": _images()[[0, 2, 1, 7]], "index": torch.tensor([0, 2, 1, 7])}
    before = method.memory.state_dict()
    out = method.training_step(batch)
    assert set(out.losses) == {"loss", "centroid_nce", "hard_nce"}
    # the same loss from the memory directly, on the same features
    direct = method.memory.losses(out.outputs["features"].detach(), torch.tensor([0, 1, 0, 1]))
    assert out.losses["loss"].item() == pytest.approx(direct["loss"].item(), rel=1e-6)
    opt = torch.optim.SGD(method.model.parameters(), lr=0.1)
    out.losses["loss"].backward()
    opt.step()
    for k, v in method.memory.state_dict().items():
        assert torch.equal(v, before[k])  # nothing changes before update_memory
    method.update_memory(batch, out.outputs)
    assert not torch.equal(method.memory.centroids, before["centroids"])

    save_checkpoint({"method": to_tensors(method.state_dict())}, tmp_path / "ck.pth")
    other = _method(variant)
    other.load_state_dict(load_checkpoint(tmp_path / "ck.pth")["method"])
    for k, v in method.memory.state_dict().items():
        assert torch.equal(getattr(other.memory, k), v), k
    assert np.array_equal(other.labels.labels, M_LABELS)


def test_v2_slot_draw_is_a_function_of_seed_and_epoch():
    a, _ = _built("cmhybrid_v2", epoch=3)
    b, _ = _built("cmhybrid_v2", epoch=3)
    c, _ = _built("cmhybrid_v2", epoch=4)
    assert torch.equal(a.memory.slots, b.memory.slots)
    assert not torch.equal(a.memory.slots, c.memory.slots)
    g1, g2 = slot_generator(1, 0), slot_generator(1, 0)
    assert torch.equal(torch.rand(5, generator=g1), torch.rand(5, generator=g2))
    assert not torch.equal(torch.rand(5, generator=slot_generator(1, 1)), torch.rand(5, generator=slot_generator(2, 0)))


def test_v2_warns_when_slots_fewer_than_instances(caplog):
    cfg = Config()
    cfg.method.hhcl.variant = "cmhybrid_v2"
    cfg.method.hhcl.num_slots = 4
    with caplog.at_level(logging.WARNING, logger="unreid"):
        HHCL(cfg, _model(), [Sample("a.jpg", -1, 0)])
    assert "num_slots=4 < data.num_instances=16" in caplog.text


# ----------------------------------------------------------------------------------------------- configs
def test_hhcl_configs_load_with_cited_values():
    m = load_config(CONFIGS / "market1501.yaml")
    assert (m.method.name, m.model.backbone, m.model.pooling) == ("hhcl", "resnet50", "avg")
    assert (m.data.height, m.data.width, m.data.batch_size, m.data.num_instances) == (256, 128, 256, 16)
    assert (m.optim.optimizer, m.optim.lr, m.optim.weight_decay, m.optim.step_size, m.optim.gamma) == (
        "adam", 3.5e-4, 5e-4, 20, 0.1)
    assert (m.optim.epochs, m.optim.iters, m.eval.every) == (60, 200, 10)
    assert (m.method.temperature, m.method.momentum) == (0.05, 0.1)
    assert (m.pseudo_labels.k1, m.pseudo_labels.k2, m.pseudo_labels.min_samples, m.pseudo_labels.eps) == (
        30, 6, 4, 0.45)
    h = m.method.hhcl
    assert (h.variant, h.hard_weight, h.legacy_weighting, h.num_slots, h.label_smoothing, h.smoothing) == (
        "cmhybrid", 0.5, True, 16, 0.0, "topk")
    d = load_config(CONFIGS / "dukemtmc.yaml")
    assert (d.data.name, d.pseudo_labels.eps, d.optim.iters, d.model.pooling) == ("dukemtmc", 0.6, 200, "avg")
    s = load_config(CONFIGS / "msmt17.yaml")
    assert (s.data.name, s.pseudo_labels.eps, s.optim.iters) == ("msmt17", 0.7, 300)
    assert "UNOFFICIAL" in (CONFIGS / "msmt17.yaml").read_text()
    ibn = load_config(CONFIGS / "market1501_ibn.yaml")
    assert (ibn.model.backbone, ibn.model.pooling, ibn.pseudo_labels.eps) == ("resnet50_ibn_a", "gem", 0.45)
    for cfg in (m, d, s, ibn):
        assert cfg.data.root.startswith("data") and not cfg.method.supervised
