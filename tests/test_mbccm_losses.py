"""MBCCM's loss terms (unreid.losses.mbccm) against a plain-Python reference written from the public code's
formulas (FranklinLingfeng/MBCCM-master-MM-23 trainer.py), on small random inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unreid.losses.mbccm import mbccm_losses, symmetric_kl

TAU = 0.5


def _softmax(row):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    s = sum(e)
    return [max(x / s, 1e-12) for x in e]


def _kl_ref(pred, target):
    tot1 = tot2 = 0.0
    for pr, tr in zip(pred, target):
        p, t = _softmax(pr), _softmax(tr)
        tot1 += sum(ti * (math.log(ti) - math.log(pi)) for pi, ti in zip(p, t))
        tot2 += sum(pi * (math.log(pi) - math.log(ti)) for pi, ti in zip(p, t))
    return (tot1 / len(pred) + tot2 / len(pred)) / 2


def _ce_ref(logits, y):
    return sum(-math.log(_softmax(row)[t]) for row, t in zip(logits, y)) / len(y)


def _logits_ref(f, mem, normalise=True):
    out = []
    for row in f:
        n = math.sqrt(sum(x * x for x in row)) if normalise else 1.0
        out.append([sum(a / n * b for a, b in zip(row, m)) / TAU for m in mem])
    return out


def test_symmetric_kl_by_hand_and_gradient_into_both_sides():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, generator=g, requires_grad=True), torch.randn(3, 4, generator=g, requires_grad=True)
    assert symmetric_kl(a, b).item() == pytest.approx(_kl_ref(a.tolist(), b.tolist()), rel=1e-5)
    assert symmetric_kl(a, a.detach()).item() == pytest.approx(0.0, abs=1e-7)
    symmetric_kl(a, b).backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shapes"):
        symmetric_kl(a, b[:2])


@pytest.mark.parametrize("raw_cross", [True, False])
def test_both_stages_match_the_reference_formulas(raw_cross):
    g = torch.Generator().manual_seed(1)
    v1, v2, r = (3 * torch.randn(4, 3, generator=g) for _ in range(3))  # un-normalised, as the raw quirk sees them
    mem = {k: F.normalize(torch.randn(n, 3, generator=g), dim=1)
           for k, n in (("visible", 3), ("infrared", 2), ("visible_cross", 3), ("infrared_cross", 2))}
    y_v, y_r = torch.tensor([0, 2, 1, 2]), torch.tensor([1, 0, 0, 1])
    L1 = mbccm_losses(v1, v2, r, y_v, y_r, mem, TAU, stage2=False)
    M = {k: v.tolist() for k, v in mem.items()}
    f = {"v1": v1.tolist(), "v2": v2.tolist(), "r": r.tolist()}
    yv, yr = y_v.tolist(), y_r.tolist()
    o1, o2 = _logits_ref(f["v1"], M["visible"]), _logits_ref(f["v2"], M["visible"])
    o3 = _logits_ref(f["r"], M["infrared"])
    ms = _ce_ref(o1, yv) + _ce_ref(o2, yv) + _ce_ref(o3, yr)
    assert L1["loss"].item() == pytest.approx(ms, rel=1e-5) and set(L1) == {"loss", "ms", "ms_visible_1",
                                                                            "ms_visible_2", "ms_infrared"}
    L2 = mbccm_losses(v1, v2, r, y_v, y_r, mem, TAU, stage2=True, alpha=0.9, beta=0.5, raw_cross=raw_cross)
    vx = {k: _logits_ref(f[k], M["visible_cross"]) for k in f}
    rx = {k: _logits_ref(f[k], M["infrared_cross"]) for k in f}
    ma_v = sum(_ce_ref(vx[k], yv) for k in f)
    ma_r = sum(_ce_ref(rx[k], yr) for k in f)
    c1 = _logits_ref(f["v1"], M["infrared"], normalise=not raw_cross)
    c2 = _logits_ref(f["v2"], M["infrared"], normalise=not raw_cross)
    cr = _logits_ref(f["r"], M["visible"], normalise=not raw_cross)
    cc = (_kl_ref(o1, vx["v1"]) + _kl_ref(o2, vx["v2"]) + _kl_ref(rx["v1"], c1) + _kl_ref(rx["v2"], c2)
          + _kl_ref(vx["r"], cr) + _kl_ref(o3, rx["r"]))
    assert L2["ma_visible"].item() == pytest.approx(ma_v, rel=1e-5)
    assert L2["ma_infrared"].item() == pytest.approx(ma_r, rel=1e-5)
    assert L2["cc"].item() == pytest.approx(cc, rel=1e-5)
    assert L2["loss"].item() == pytest.approx(ms + 0.9 * (ma_v + ma_r) + 0.5 * cc, rel=1e-5)


def test_raw_cross_matters_only_for_unnormalised_features():
    g = torch.Generator().manual_seed(2)
    mem = {k: F.normalize(torch.randn(n, 3, generator=g), dim=1)
           for k, n in (("visible", 3), ("infrared", 2), ("visible_cross", 3), ("infrared_cross", 2))}
    y_v, y_r = torch.tensor([0, 1]), torch.tensor([1, 0])
    raw = [3 * torch.randn(2, 3, generator=g) for _ in range(3)]
    unit = [F.normalize(x, dim=1) for x in raw]
    a = mbccm_losses(*raw, y_v, y_r, mem, TAU, stage2=True, raw_cross=True)["cc"].item()
    b = mbccm_losses(*raw, y_v, y_r, mem, TAU, stage2=True, raw_cross=False)["cc"].item()
    assert a != pytest.approx(b, rel=1e-3)
    c = mbccm_losses(*unit, y_v, y_r, mem, TAU, stage2=True, raw_cross=True)["cc"].item()
    d = mbccm_losses(*unit, y_v, y_r, mem, TAU, stage2=True, raw_cross=False)["cc"].item()
    assert c == pytest.approx(d, rel=1e-6)


# ------------------------------------------------------------------------------------------------ memories
def _labels():
    import numpy as np

    from unreid.pseudo_labels.base import PseudoLabels

    # clusters 0, 2, 3 visible; 1, 4 infrared (global ids interleaved, as the pipeline numbers them)
    labels = np.array([0, 0, 2, 2, 3, 3, -1, 1, 1, 4, 4, 4])
    return PseudoLabels(labels, 5, group_of_cluster=np.array([0, 1, 0, 0, 1]))


def _built_memory():
    from unreid.memory.modality import CrossModalityMemory

    g = torch.Generator().manual_seed(3)
    feats = F.normalize(torch.randn(12, 3, generator=g), dim=1)
    mem = CrossModalityMemory(momentum=0.1, cross_momentum=0.3)
    mem.build({"global": feats}, _labels(), None)
    return mem, feats


def test_memories_are_per_modality_centroids_indexed_by_local_rows():
    mem, feats = _built_memory()
    assert mem.rows(torch.tensor([0, 1, 2, 3, 4])).tolist() == [0, 0, 1, 2, 1]
    for name, ids in (("visible", [0, 2, 3]), ("infrared", [1, 4])):
        labels = _labels().labels
        expect = torch.stack([F.normalize(feats[torch.as_tensor(labels == c)].mean(0), dim=0) for c in ids])
        assert torch.allclose(mem.banks[name], expect, atol=1e-6)
        assert torch.equal(mem.banks[f"{name}_cross"], mem.banks[name])
    assert mem.report() == {"visible_clusters": 3, "infrared_clusters": 2}


def test_updates_follow_the_stage_and_the_partner_labels():
    from unreid.memory.modality import CrossModalityMemory

    mem, _ = _built_memory()
    g = torch.Generator().manual_seed(4)
    v1, v2, r = (F.normalize(torch.randn(2, 3, generator=g), dim=1) for _ in range(3))
    out = {"visible_1": v1, "visible_2": v2, "infrared": r, "visible_rows": torch.tensor([2, 0]),
           "infrared_rows": torch.tensor([1, 1]), "cross": torch.tensor(False)}
    before = {k: v.clone() for k, v in mem.banks.items()}
    mem.update(out, {})
    # stage 1: visible row 2 <- v1[0] then v2[0]; infrared row 1 <- r[0] then r[1]; cross banks untouched
    exp = before["visible"][2]
    for f in (v1[0], v2[0]):
        exp = F.normalize(0.1 * exp + 0.9 * f, dim=0)
    assert torch.allclose(mem.banks["visible"][2], exp, atol=1e-6)
    assert torch.equal(mem.banks["visible"][1], before["visible"][1])
    exp = before["infrared"][1]
    for f in (r[0], r[1]):
        exp = F.normalize(0.1 * exp + 0.9 * f, dim=0)
    assert torch.allclose(mem.banks["infrared"][1], exp, atol=1e-6)
    for k in ("visible_cross", "infrared_cross"):
        assert torch.equal(mem.banks[k], before[k])
    # stage 2: the cross memories take all three feature sets, with the partner labels, momentum 0.3
    mem.update({**out, "cross": torch.tensor(True)}, {})
    exp = before["visible_cross"][0]
    for f in (v1[1], v2[1], r[1]):
        exp = F.normalize(0.3 * exp + 0.7 * f, dim=0)
    assert torch.allclose(mem.banks["visible_cross"][0], exp, atol=1e-6)
    exp = before["infrared_cross"][1]
    for f in (v1[0], v1[1], v2[0], v2[1], r[0], r[1]):
        exp = F.normalize(0.3 * exp + 0.7 * f, dim=0)
    assert torch.allclose(mem.banks["infrared_cross"][1], exp, atol=1e-6)
    other = CrossModalityMemory()
    other.load_state_dict(mem.state_dict())
    for k, v in mem.banks.items():
        assert torch.equal(other.banks[k], v)
    assert torch.equal(other.local, mem.local)


def test_memory_needs_labels_formed_per_modality():
    import numpy as np

    from unreid.memory.modality import CrossModalityMemory
    from unreid.pseudo_labels.base import PseudoLabels

    with pytest.raises(ValueError, match="group_by=modality"):
        CrossModalityMemory().build({"global": torch.zeros(2, 3)}, PseudoLabels(np.array([0, 0]), 1), None)
    only_visible = PseudoLabels(np.array([0, 0]), 1, group_of_cluster=np.array([0]))
    with pytest.raises(ValueError, match="no infrared cluster"):
        CrossModalityMemory().build({"global": torch.ones(2, 3)}, only_visible, None)


# ------------------------------------------------------------------------------------------------ sampler
def _pair_fixture():
    import numpy as np

    # clusters 0, 1, 2 visible (ids 0-14), 3, 4 infrared (ids 15-24); images 25, 26 are outliers
    labels = np.array([0] * 5 + [1] * 3 + [2] * 7 + [3] * 6 + [4] * 4 + [-1, -1])
    modalities = np.array([0] * 15 + [1] * 12)
    goc = np.array([0, 0, 0, 1, 1])
    matches = np.array([[0, 3], [1, 3], [2, 4]])
    return labels, modalities, goc, matches


@pytest.mark.parametrize("paired", [False, True])
def test_pair_sampler_yields_aligned_modality_halves(paired):
    import numpy as np

    from unreid.data.samplers import ModalityPairSampler

    labels, modalities, goc, matches = _pair_fixture()
    s = ModalityPairSampler(labels, modalities, goc, matches, clusters_per_step=2, num_instances=4, steps=5,
                            paired=paired, seed=7)
    idx = np.asarray(list(iter(s)))
    assert len(idx) == len(s) == 5 * 2 * 2 * 4
    partner = {0: {3}, 1: {3}, 2: {4}, 3: {0, 1}, 4: {2}}
    for step in idx.reshape(5, 2, 8):  # (visible half, infrared half) of each step
        vis, ir = step
        assert (modalities[vis] == 0).all() and (modalities[ir] == 1).all() and (labels[step] >= 0).all()
        for i in range(2):  # cluster pair i: K images each, one cluster per block
            cv, cr = set(labels[vis[4 * i:4 * i + 4]]), set(labels[ir[4 * i:4 * i + 4]])
            assert len(cv) == len(cr) == 1
            if paired:
                assert cr <= partner[cv.pop()]
        # a cluster with more than K images gives K distinct ones (cluster 2 has 7, cluster 0 has 5)
        for i in range(2):
            block = vis[4 * i:4 * i + 4]
            if (labels == labels[block[0]]).sum() > 4:
                assert len(set(block)) == 4
        if not paired:  # stage 1 draws distinct clusters; stage 2 may meet a cluster from both sides (as MBCCM)
            assert len(set(labels[vis][::4])) == 2 and len(set(labels[ir][::4])) == 2
    again = np.asarray(list(iter(ModalityPairSampler(labels, modalities, goc, matches, 2, 4, 5, paired, seed=7))))
    assert np.array_equal(idx, again)
    assert not np.array_equal(idx, np.asarray(list(iter(s))))  # the next pass draws anew


def test_pair_sampler_in_stage_two_draws_half_from_each_side():
    import numpy as np

    from unreid.data.samplers import ModalityPairSampler

    labels, modalities, goc, matches = _pair_fixture()
    # P = 2: one infrared-led pair, then one visible-led pair; an infrared-led pair whose infrared cluster is 4
    # must hold visible cluster 2, its only partner
    s = ModalityPairSampler(labels, modalities, goc, matches, 2, 4, steps=200, paired=True, seed=1)
    idx = np.asarray(list(iter(s))).reshape(200, 2, 8)
    first_ir = labels[idx[:, 1, 0]]
    first_vis = labels[idx[:, 0, 0]]
    assert set(first_vis[first_ir == 4]) == {2} and set(first_vis[first_ir == 3]) == {0, 1}
    with pytest.raises(ValueError, match="matches"):
        ModalityPairSampler(labels, modalities, goc, None, 2, 4, 5, paired=True)
