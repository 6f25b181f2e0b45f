"""TCL (unreid.methods.tcl): every loss against a hand / loop computation, the part views, the three memories'
index consistency after each refresh, the adjacency of PCL (the part branch never meets the global memory),
the camera-aware options, and an exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import metrics_rows, tiny_overrides
from unreid.config import Config, load_config
from unreid.data.datasets.base import Sample
from unreid.engine import Trainer
from unreid.engine.checkpoint import load_checkpoint
from unreid.losses.tcl import (
    cluster_to_instance_loss,
    hybrid_contrastive_loss,
    knn_label_agreement,
    weighted_cluster_nce,
)
from unreid.memory.instance import InstanceMemory
from unreid.methods import METHODS, build_method
from unreid.methods.tcl import TCL, black_fill
from unreid.models.parts import PartViews, apply_masks, random_patch_masks
from unreid.pseudo_labels.base import PseudoLabels

TAU = 0.5


def _unit(x):
    return [[c / math.sqrt(sum(e * e for e in v)) for c in v] for v in x]


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


# a 2-d bank of 5 instances: labels 0, 0, 1, 1, -1 (an outlier)
BANK = _unit([[1, 0], [0.8, 0.6], [0, 1], [-0.6, 0.8], [-1, 0]])
BANK_LABELS = [0, 0, 1, 1, -1]
Q = _unit([[0.6, 0.8], [1, 1]])
TARGETS = [0, 1]


def _t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def _hcl_cluster_by_hand(q, y):
    members = [b for b, lab in zip(BANK, BANK_LABELS) if lab == y]
    c = _unit([[sum(m[0] for m in members), sum(m[1] for m in members)]])[0]
    pos = math.exp(_dot(q, c) / TAU)
    neg = sum(math.exp(_dot(q, b) / TAU) for b, lab in zip(BANK, BANK_LABELS) if lab != y)
    return -math.log(pos / (pos + neg))


def _hcl_instance_by_hand(q, y):
    neg = sum(math.exp(_dot(q, b) / TAU) for b, lab in zip(BANK, BANK_LABELS) if lab != y)
    terms = [-math.log(math.exp(_dot(q, b) / TAU) / (math.exp(_dot(q, b) / TAU) + neg))
             for b, lab in zip(BANK, BANK_LABELS) if lab == y]
    return sum(terms) / len(terms)


@pytest.mark.parametrize("form,by_hand", [("cluster", _hcl_cluster_by_hand), ("instance", _hcl_instance_by_hand)])
def test_hcl_matches_a_hand_computation(form, by_hand):
    expected = sum(by_hand(q, y) for q, y in zip(Q, TARGETS)) / len(Q)
    got = hybrid_contrastive_loss(_t(Q), _t(BANK), _t(BANK_LABELS, torch.long), _t(TARGETS, torch.long), TAU, form)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_hcl_forms_differ_and_errors_are_specific():
    args = (_t(Q), _t(BANK), _t(BANK_LABELS, torch.long), _t(TARGETS, torch.long), TAU)
    assert hybrid_contrastive_loss(*args, "cluster").item() != pytest.approx(
        hybrid_contrastive_loss(*args, "instance").item(), rel=1e-3)
    with pytest.raises(ValueError, match="hcl_form"):
        hybrid_contrastive_loss(*args, "stripes")
    with pytest.raises(ValueError, match="out of step"):  # label 2 is in no memory row
        hybrid_contrastive_loss(_t(Q), _t(BANK), _t(BANK_LABELS, torch.long), _t([0, 2], torch.long), TAU)


def test_cluster_to_instance_uses_the_batch_mean_of_each_identity():
    q = _unit([[1, 0.2], [0.9, -0.1], [0.1, 1]])
    y = [0, 0, 1]
    centre0 = _unit([[q[0][0] + q[1][0], q[0][1] + q[1][1]]])[0]
    expected = (_hcl_instance_by_hand(centre0, 0) + _hcl_instance_by_hand(q[2], 1)) / 2
    got = cluster_to_instance_loss(_t(q), _t(y, torch.long), _t(BANK), _t(BANK_LABELS, torch.long), TAU)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_knn_agreement_excludes_the_image_itself():
    # query = bank row 0 (index 0, label 0); nearest others: row 1 (label 0), row 2 / 3 ... by cosine
    q = _t([BANK[0], BANK[2]])
    index = _t([0, 2], torch.long)
    w = knn_label_agreement(q, index, _t(BANK), _t(BANK_LABELS, torch.long), _t([0, 1], torch.long), k=2)
    # row 0: sims to rows 1..4 = .8, 0, -.6, -1 -> rows 1 (label 0), 2 (label 1) -> 1/2
    # row 2: sims to rows 0,1,3,4 = 0, .6, .8, 0 -> rows 3 (label 1), 1 (label 0) -> 1/2
    assert w.tolist() == pytest.approx([0.5, 0.5])
    w1 = knn_label_agreement(q, index, _t(BANK), _t(BANK_LABELS, torch.long), _t([0, 1], torch.long), k=1)
    assert w1.tolist() == [1.0, 1.0]


def test_weighted_cluster_nce_by_hand():
    logits = _t([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    y = _t([0, 2], torch.long)
    ce = [-math.log(math.exp(r[t]) / sum(math.exp(v) for v in r)) for r, t in zip(logits.tolist(), [0, 2])]
    w = [0.25, 1.0]
    assert weighted_cluster_nce(logits, y, _t(w)).item() == pytest.approx((w[0] * ce[0] + w[1] * ce[1]) / 2)
    assert weighted_cluster_nce(logits, y).item() == pytest.approx(sum(ce) / 2)


# ------------------------------------------------------------------------------------------------ part views
def test_patch_masks_mask_whole_squares_in_the_right_number():
    gen = torch.Generator().manual_seed(0)
    m = random_patch_masks(6, 10, 7, patch_size=4, ratio=0.5, generator=gen)  # grid 3 x 2, 3 cells each
    assert m.shape == (6, 10, 7) and m.dtype == torch.bool
    for mask in m:
        cells = [bool(mask[4 * r, 4 * c]) for r in range(3) for c in range(2)]
        assert sum(cells) == 3
        for r in range(3):
            for c in range(2):  # every cell is all in or all out
                block = mask[4 * r:4 * r + 4, 4 * c:4 * c + 4]
                assert bool(block.all()) == cells[2 * r + c] and bool(block.any()) == cells[2 * r + c]
    again = random_patch_masks(6, 10, 7, 4, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(m, again)
    assert not torch.equal(m[0], m[1]) or not torch.equal(m[1], m[2])  # draws differ between images


def test_masked_pixels_are_black_after_normalisation():
    x = torch.randn(2, 3, 4, 4)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True
    out = apply_masks(x, masks, black_fill())
    fill = (-torch.tensor([0.485, 0.456, 0.406]) / torch.tensor([0.229, 0.224, 0.225]))
    assert torch.allclose(out[0, :, :2, :2], fill.view(3, 1, 1).expand(3, 2, 2))
    keep = ~masks.unsqueeze(1).expand_as(x)
    assert torch.equal(out[keep], x[keep])


class _MapModel(nn.Module):
    """A tiny model with the ReIDModel interface used by stripes: pool, embedding, return_map."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embedding = nn.Identity()

    def forward(self, x, camids=None, modalities=None, return_map=False):
        fmap = self.conv(x)
        f = F.normalize(fmap.mean((2, 3)), dim=1)
        return (f, fmap) if return_map else f


def test_stripes_are_the_pooled_horizontal_bands_of_the_map():
    model, x = _MapModel(), torch.randn(2, 3, 6, 2)
    parts = PartViews(model, "stripes", num_stripes=3)(x)
    fmap = model.conv(x)
    for s in range(3):
        band = F.normalize(fmap[:, :, 2 * s:2 * s + 2].mean((2, 3)), dim=1)
        assert torch.allclose(parts[:, s], band, atol=1e-6)
    flat = PartViews(model, "stripes", num_stripes=3, flat=True)(x)
    assert torch.allclose(flat, parts.flatten(1))


def test_masked_views_feed_masked_images_to_the_model():
    seen = []

    class Spy(nn.Module):
        def forward(self, x, camids=None, modalities=None):
            seen.append(x.clone())
            return x.flatten(1)[:, :5]

    x = torch.randn(3, 3, 8, 8)
    out = PartViews(Spy(), "mask", num_views=2, mask_ratio=0.25, patch_size=4,
                    fill=torch.full((3,), -9.0), generator=torch.Generator().manual_seed(1))(x)
    assert out.shape == (3, 2, 5) and len(seen) == 2
    for view in seen:
        masked = (view == -9.0).all(1)  # (B, H, W): pixels set in every channel
        assert masked.flatten(1).sum(1).tolist() == [16, 16, 16]  # one 4x4 square of the 2x2 grid
        assert torch.equal(view[~masked.unsqueeze(1).expand_as(view)], x[~masked.unsqueeze(1).expand_as(x)])
    assert not torch.equal(seen[0], seen[1])


# ------------------------------------------------------------------------------------------------ the method
N = 12


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3 * 8 * 8, 6)

    def forward(self, x, camids=None, modalities=None):
        return F.normalize(self.lin(x.flatten(1)), dim=1)


def _images():
    return torch.randn(N, 3, 8, 8, generator=torch.Generator().manual_seed(3))


def _method(**tcl):
    cfg = Config()
    cfg.method.name = "tcl"
    cfg.method.temperature = 0.5
    cfg.method.tcl.patch_size = 4
    cfg.method.tcl.instance_temperature = 0.5
    cfg.method.tcl.wrccl_k = 3
    for k, v in tcl.items():
        setattr(cfg.method.tcl, k, v)
    return TCL(cfg, _Tiny(), [Sample(f"{i}.jpg", -1, i % 2) for i in range(N)])


def _extractor(images):
    def extract(model, samples):
        model.eval()
        with torch.no_grad():
            f = model(images[[int(s.path.split(".")[0]) for s in samples]])
        return F.normalize(f, dim=1)
    return extract


def test_memories_stay_index_consistent_after_every_refresh():
    assert METHODS["tcl"] is TCL
    method, images = _method(num_views=2), _images()
    samples = method.train_set
    for labels in (np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, -1, 3, 3]), np.array([1, -1, 0, 0, 2, 2, 1, 0, 2, 1, -1, 1])):
        feats = method.extract(samples, _extractor(images))
        assert feats["global"].shape == (N, 6) and feats["part"].shape == (N, 2, 6)
        assert torch.allclose(feats["part"].norm(dim=2), torch.ones(N, 2))
        pl = PseudoLabels(labels, int(labels.max()) + 1)
        method.set_labels(pl)
        method.build_memories(0, feats, pl)
        glob, part, cluster = method.memories["global"], method.memories["part"], method.memories["cluster"]
        assert torch.equal(glob.labels, torch.as_tensor(labels)) and torch.equal(part.labels, glob.labels)
        assert torch.allclose(glob.view(0), feats["global"], atol=1e-6)
        for v in range(2):
            assert torch.allclose(part.view(v), feats["part"][:, v], atol=1e-6)
        for c in range(pl.num_clusters):  # cluster row c = normalised mean of its members' global features
            centre = F.normalize(feats["global"][labels == c].mean(0), dim=0)
            assert torch.allclose(cluster.bank.features[c], centre, atol=1e-6)
    # the masked views of the extraction are the same at every labelling (a resumed run builds the same memory)
    again = method.extract(samples, _extractor(images))
    assert torch.equal(again["part"], feats["part"])


def _built(**tcl):
    method, images = _method(**tcl), _images()
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, -1, 3, 3])
    feats = method.extract(method.train_set, _extractor(images))
    pl = PseudoLabels(labels, 4)
    method.set_labels(pl)
    method.build_memories(0, feats, pl)
    idx = torch.tensor([4, 0, 7, 1, 3, 8])
    return method, {"img": images[idx], "index": idx, "camid": idx % 2}


def _step_grads(method, batch, seed=5):
    torch.manual_seed(seed)  # the training masks come from the global RNG
    out = method.training_step(batch)
    g, p = out.outputs["features"], out.outputs["part_features"]
    return out, torch.autograd.grad(out.losses["loss"], (g, p))


def test_the_part_branch_never_meets_the_global_memory():
    method, batch = _built()
    out, (dg, dp) = _step_grads(method, batch)
    assert set(out.losses) == {"loss", "pcl", "pcl_part_cluster", "pcl_cluster_global", "hcl", "hcl_part",
                               "hcl_global", "wrccl", "wrccl_weight"}
    glob = method.memories["global"]
    glob.features = F.normalize(torch.randn_like(glob.features), dim=2)
    _, (dg2, dp2) = _step_grads(method, batch)
    assert torch.allclose(dp, dp2, atol=1e-7)  # the part features' gradient ignores M^G
    assert not torch.allclose(dg, dg2, atol=1e-4)  # the global features' gradient reads it
    part = method.memories["part"]
    part.features = F.normalize(torch.randn_like(part.features), dim=2)
    _, (_, dp3) = _step_grads(method, batch)
    assert not torch.allclose(dp2, dp3, atol=1e-4)  # ... and the part memory reaches the part features


def test_total_loss_is_the_weighted_sum_and_weights_switch_terms_off():
    method, batch = _built(pcl_weight=0.5, hcl_weight=2.0, wrccl_weight=0.25)
    out, _ = _step_grads(method, batch)
    L = out.losses
    assert L["pcl"].item() == pytest.approx(L["pcl_part_cluster"].item() + L["pcl_cluster_global"].item(), rel=1e-6)
    assert L["hcl"].item() == pytest.approx((L["hcl_part"].item() + L["hcl_global"].item()) / 2, rel=1e-6)
    total = 0.5 * L["pcl"].item() + 2.0 * L["hcl"].item() + 0.25 * L["wrccl"].item()
    assert L["loss"].item() == pytest.approx(total, rel=1e-6)
    # the global terms against the memories directly
    g = out.outputs["features"].detach()
    y = method.batch_targets(batch)
    glob, cluster = method.memories["global"], method.memories["cluster"]
    assert L["hcl_global"].item() == pytest.approx(
        hybrid_contrastive_loss(g, glob.view(0), glob.labels, y, 0.5, "cluster").item(), rel=1e-6)
    w = knn_label_agreement(g, batch["index"], glob.view(0), glob.labels, y, 3)
    assert L["wrccl"].item() == pytest.approx(weighted_cluster_nce(cluster.bank.logits(g), y, w).item(), rel=1e-6)
    assert L["wrccl_weight"].item() == pytest.approx(w.mean().item())
    unweighted, _ = _step_grads(_built(wrccl_weighting="none")[0], batch)
    assert unweighted.losses["wrccl_weight"].item() == 1.0


def test_after_the_step_every_memory_moves_towards_its_batch_rows():
    method, batch = _built(num_views=2)
    out, _ = _step_grads(method, batch)
    before = {k: m.state_dict() for k, m in method.memories.items()}
    gen = torch.Generator().manual_seed(9)  # features of a model that has moved since the memories were built
    outputs = {k: v.detach() + (0.5 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else 0)
               for k, v in out.outputs.items()}
    method.after_step(batch, outputs)
    glob, part = method.memories["global"], method.memories["part"]
    touched = set(batch["index"].tolist())
    for i in range(N):
        moved = not torch.equal(glob.features[0, i], before["global"]["features"][0, i])
        assert moved == (i in touched), i
        for v in range(2):
            assert (not torch.equal(part.features[v, i], before["part"]["features"][v, i])) == (i in touched)
    i, b = 7, 2  # dataset index 7 is batch row 2: m <- normalise(mu m + (1 - mu) f)
    mu = method.settings.instance_momentum
    f = F.normalize(outputs["features"][b], dim=0)
    expect = F.normalize(mu * before["global"]["features"][0, i] + (1 - mu) * f, dim=0)
    assert torch.allclose(glob.features[0, i], expect, atol=1e-6)
    assert not torch.equal(method.memories["cluster"].bank.features, before["cluster"]["features"])
    # a fresh method restores every memory exactly
    other = _method(num_views=2)
    other.load_state_dict(method.state_dict())
    for name, mem in method.memories.items():
        for k, v in mem.state_dict().items():
            assert torch.equal(other.memories[name].state_dict()[k], v), (name, k)


def test_instance_memory_rejects_mismatched_inputs():
    mem = InstanceMemory("part", "part_features", 0.2)
    with pytest.raises(KeyError, match="part"):
        mem.build({"global": torch.zeros(3, 2)}, PseudoLabels(np.array([0, 0, 1]), 2), None)
    with pytest.raises(ValueError, match="3 feature rows for 2 labels"):
        mem.build({"part": torch.zeros(3, 1, 2)}, PseudoLabels(np.array([0, 0]), 1), None)
    with pytest.raises(ValueError, match="momentum"):
        InstanceMemory("global", "features", 1.0)


def test_camera_aware_proxies_join_the_tcl_loss():
    method, batch = _built()
    cfg = method.cfg
    cfg.method.camera.proxies = True
    cfg.method.camera.inter_start_epoch = 0
    other = build_method(cfg, _Tiny(), method.train_set)
    assert isinstance(other, TCL) and other.memory_names()[-1] == "camera_proxies"
    feats = other.extract(other.train_set, _extractor(_images()))
    pl = PseudoLabels(np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, -1, 3, 3]), 4)
    other.set_labels(pl)
    other.build_memories(0, feats, pl)
    torch.manual_seed(5)
    out = other.step(batch, epoch=1)
    plain, _ = _step_grads(method, batch)
    assert {"intra_camera", "inter_camera"} <= set(out.losses) and "intra_camera" not in plain.losses
    own = plain.losses["loss"].item() * cfg.method.camera.method_loss_weight
    proxy = sum(out.losses[k].item() for k in ("intra_camera", "inter_camera", "online_camera") if k in out.losses)
    assert out.losses["loss"].item() == pytest.approx(own + proxy, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("part", ["mask", "stripes"])
def test_tcl_trains_and_resumes_exactly(synthetic_root, tmp_path, part):
    o = {"method.name": "tcl", "method.tcl.part": part, "method.tcl.patch_size": 8, "data.batch_size": 8,
         "eval.every": 2, "model.camera_bn": "true", "method.camera.proxies": "true",
         "method.camera.inter_start_epoch": 1}
    full = tmp_path / "full"
    Trainer(load_config(None, tiny_overrides(synthetic_root, full, **{"optim.epochs": 2, **o}))).train()
    cut = tmp_path / "cut"
    Trainer(load_config(None, tiny_overrides(synthetic_root, cut, **{"optim.epochs": 1, **o}))).train()
    Trainer(load_config(None, tiny_overrides(synthetic_root, cut, **{"optim.epochs": 2, **o})), resume=True).train()
    a, b = load_checkpoint(full / "checkpoint_last.pth"), load_checkpoint(cut / "checkpoint_last.pth")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for name in ("cluster", "global", "part", "camera_proxies"):
        for k, v in a["method"]["memories"][name].items():
            assert torch.equal(v, b["method"]["memories"][name][k]), (name, k)
    rows = metrics_rows(full)
    assert rows[-1]["losses"] == metrics_rows(cut)[-1]["losses"]
    assert {"pcl", "hcl", "wrccl"} <= set(rows[-1]["losses"])


def test_tcl_configs_are_the_baselines_with_the_method_swapped():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("veri776", "vehicleid", "veriwild"):
        cfg, base = load_config(root / "tcl" / f"{name}.yaml"), load_config(root / "cluster_contrast" / f"{name}.yaml")
        assert (cfg.method.name, cfg.model.backbone, cfg.data.height, cfg.data.width, cfg.optim.epochs) == (
            "tcl", "resnet50", 224, 224, 50)
        assert cfg.data == base.data and cfg.pseudo_labels == base.pseudo_labels and cfg.eval == base.eval
        assert cfg.optim.amp is False  # fp32, as the Cluster Contrast recipe they extend
    for name in ("vehicle_2cam_cpu", "cuhk03_detected_cpu"):
        cfg, base = load_config(root / "tcl" / f"{name}.yaml"), load_config(root / "cluster_contrast" / f"{name}.yaml")
        assert cfg.method.name == "tcl" and (cfg.data, cfg.model, cfg.optim, cfg.pseudo_labels, cfg.eval) == (
            base.data, base.model, base.optim, base.pseudo_labels, base.eval)
