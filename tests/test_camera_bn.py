"""Camera-based batch normalisation (unreid.models.camera_bn; Zhuang et al., ECCV 2020)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import metrics_rows, tiny_overrides
from unreid.config import load_config
from unreid.engine import Trainer
from unreid.engine.trainer import extract, load_data
from unreid.models import BNNeck, build_model
from unreid.models.camera_bn import (
    CameraBatchNormMixin,
    camera_batch,
    camera_bn_layers,
    convert_camera_bn,
    estimate_statistics,
)

EPS = 1e-5


def _bn1d() -> nn.Module:
    bn = nn.BatchNorm1d(1, eps=EPS)
    with torch.no_grad():
        bn.weight.fill_(2.0)
        bn.bias.fill_(0.5)
    return convert_camera_bn(nn.Sequential(bn))[0]


def test_each_camera_is_normalised_with_its_own_batch_statistics():
    bn = _bn1d().train()
    # camera 0: 1, 3 (mean 2, biased var 1); camera 1: 10, 14, 12 (mean 12, biased var 8/3)
    x = torch.tensor([[1.0], [10.0], [3.0], [14.0], [12.0]])
    cams = torch.tensor([0, 1, 0, 1, 1])
    with camera_batch(nn.Sequential(bn), cams):
        y = bn(x)
    s0, s1 = math.sqrt(1 + EPS), math.sqrt(8 / 3 + EPS)
    expected = torch.tensor([[-1 / s0], [-2 / s1], [1 / s0], [2 / s1], [0.0]]) * 2.0 + 0.5
    torch.testing.assert_close(y, expected)
    # running statistics: momentum 0.1, camera 0 then camera 1 (unbiased variances 2 and 4)
    m0, v0 = 0.9 * 0 + 0.1 * 2, 0.9 * 1 + 0.1 * 2
    torch.testing.assert_close(bn.running_mean, torch.tensor([0.9 * m0 + 0.1 * 12]))
    torch.testing.assert_close(bn.running_var, torch.tensor([0.9 * v0 + 0.1 * 4]))
    assert bn.camids is None  # cleared on leaving the block


def test_a_camera_with_one_image_uses_the_whole_batch_statistics():
    bn = _bn1d().train()
    x = torch.tensor([[1.0], [3.0], [8.0]])  # camera 5 has one image: batch mean 4, biased var 26/3
    with camera_batch(nn.Sequential(bn), np.array([0, 0, 5])):
        y = bn(x)
    torch.testing.assert_close(y[2], torch.tensor([4.0 / math.sqrt(26 / 3 + EPS) * 2.0 + 0.5]))
    torch.testing.assert_close(y[:2], torch.tensor([[-1.0], [1.0]]) / math.sqrt(1 + EPS) * 2.0 + 0.5)


def test_without_camera_ids_or_in_eval_mode_it_is_the_plain_layer():
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(4)
    cam = convert_camera_bn(nn.Sequential(nn.BatchNorm2d(4)))[0]
    x = torch.randn(6, 4, 3, 3)
    torch.testing.assert_close(cam(x), plain(x))  # train mode, no camera ids
    torch.testing.assert_close(cam.running_mean, plain.running_mean)
    cam.eval()
    plain.eval()
    with camera_batch(nn.Sequential(cam), torch.tensor([0, 0, 0, 1, 1, 1])):
        torch.testing.assert_close(cam(x), plain(x))


def test_camera_ids_must_match_the_batch():
    bn = _bn1d().train()
    with camera_batch(nn.Sequential(bn), torch.tensor([0, 1])), pytest.raises(ValueError, match="2 camera ids for a batch of 3"):
        bn(torch.randn(3, 1))


def test_conversion_keeps_names_types_and_refuses_layers_it_cannot_split():
    cfg = load_config(None, ["model.backbone=resnet18", "model.pretrained=false"])
    plain = build_model(cfg.model)
    cfg_cbn = load_config(None, ["model.backbone=resnet18", "model.pretrained=false", "model.camera_bn=true"])
    model = build_model(cfg_cbn.model)
    assert list(model.state_dict()) == list(plain.state_dict())  # checkpoints and ImageNet weights still load
    model.load_state_dict(plain.state_dict())
    layers = camera_bn_layers(model)
    assert len(layers) == sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in plain.modules())
    assert isinstance(model.neck, BNNeck) and isinstance(model.neck, CameraBatchNormMixin)
    assert not model.neck.bias.requires_grad
    assert convert_camera_bn(model) is model and len(camera_bn_layers(model)) == len(layers)

    class BNAct(nn.BatchNorm2d):
        def forward(self, x):
            return torch.relu(super().forward(x))

    with pytest.raises(ValueError, match="'1' is a .*BNAct, which camera BN cannot split"):
        convert_camera_bn(nn.Sequential(nn.Conv2d(3, 4, 1), BNAct(4)))
    with pytest.raises(ValueError, match="camera_bn_images must be >= 2"):
        build_model(load_config(None, ["model.backbone=resnet18", "model.pretrained=false",
                                       "model.camera_bn_images=1"]).model)


def test_estimate_statistics_takes_them_from_the_given_images_only():
    bn = _bn1d()
    net = nn.Sequential(nn.Flatten(), bn).eval()
    batches = [torch.tensor([[1.0], [3.0]]), torch.tensor([[5.0]]), torch.tensor([[5.0], [7.0]])]
    assert estimate_statistics(net, batches) == 4  # the one-image batch is skipped
    assert not net.training  # its mode is restored
    # cumulative average of the per-batch mean (2, 6) and unbiased variance (2, 2)
    torch.testing.assert_close(bn.running_mean, torch.tensor([4.0]))
    torch.testing.assert_close(bn.running_var, torch.tensor([2.0]))


def test_estimate_statistics_is_seeded_train_mode_and_leaves_the_callers_rng_alone():
    """The whole model runs in train mode (dropout here, EfficientNet's drop connect likewise, act as
    in training, as the CBN code does), with draws from the given seed: the same seed gives the same
    statistics, another seed others; the global RNG state and every module's mode are restored."""
    bn = _bn1d()
    net = nn.Sequential(nn.Flatten(), nn.Linear(1, 1), nn.Dropout(0.5), bn)
    net.train()
    net[1].eval()  # a mixed state, restored module by module
    x = torch.linspace(1.0, 9.0, 64)[:, None]
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    assert estimate_statistics(net, [x], seed=7) == 64
    assert torch.equal(torch.get_rng_state(), rng)
    first = (bn.running_mean.clone(), bn.running_var.clone())
    estimate_statistics(net, [x], seed=7)
    torch.testing.assert_close((bn.running_mean, bn.running_var), first, rtol=0, atol=0)
    estimate_statistics(net, [x], seed=8)
    assert not torch.equal(bn.running_var, first[1])  # dropout was active: other draws, other statistics
    with torch.no_grad():
        h = net[1](x)  # without dropout the variance would be this one
    assert not torch.allclose(first[1], h.var(0, unbiased=True))
    assert net.training and net[2].training and bn.training and not net[1].training


@pytest.fixture(scope="module")
def cbn_setup(synthetic_root, tmp_path_factory):
    cfg = load_config(None, tiny_overrides(synthetic_root, tmp_path_factory.mktemp("cbn"), **{"model.camera_bn": True}))
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    return cfg, model, load_data(cfg)


def test_extraction_uses_each_cameras_own_statistics(cbn_setup):
    cfg, model, data = cbn_setup
    samples = list(data.train)
    cams = np.array([s.camid for s in samples])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    feats = extract(model, samples, cfg, torch.device("cpu"))
    assert feats.shape[0] == len(samples)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(len(samples)))
    for k, v in model.state_dict().items():  # the model's own statistics are restored
        torch.testing.assert_close(v, before[k])
    # a camera's features depend on that camera's images only: embedding it alone gives the same rows
    c0 = [s for s in samples if s.camid == cams[0]]
    torch.testing.assert_close(extract(model, c0, cfg, torch.device("cpu")), feats[cams == cams[0]],
                               atol=1e-5, rtol=1e-4)
    # ... and they differ from those of the plain (running-statistics) model
    from unreid.data.loader import build_test_loader
    from unreid.evaluation.features import extract_features

    plain = extract_features(model, build_test_loader(c0, cfg.data, batch_size=64), "cpu")
    assert (plain - feats[cams == cams[0]]).abs().max() > 1e-3


def test_a_subset_of_images_gives_a_cameras_statistics(cbn_setup):
    cfg, model, data = cbn_setup
    c0 = [s for s in data.train if s.camid == data.train[0].camid]
    small = load_config(None, tiny_overrides(cfg.data.root, cfg.output_dir, **{"model.camera_bn": True,
                                                                              "model.camera_bn_images": 8}))
    a = extract(model, c0, small, torch.device("cpu"))
    b = extract(model, c0, cfg, torch.device("cpu"))
    assert len(c0) > 8 and a.shape == b.shape and (a - b).abs().max() > 1e-4
    torch.testing.assert_close(a, extract(model, c0, small, torch.device("cpu")))  # seeded subset


@pytest.mark.slow
def test_training_splits_each_batch_by_camera(synthetic_root, tmp_path):
    # supervised reference mode: no clustering needed to reach the training step
    cfg = load_config(None, tiny_overrides(synthetic_root, tmp_path / "run", **{
        "model.camera_bn": True, "method.supervised": True, "optim.epochs": 1, "optim.iters": 2}))
    trainer = Trainer(cfg)
    seen: list[torch.Tensor] = []
    layer = camera_bn_layers(trainer.model)[0]
    # (train-mode passes without camera ids are the statistics estimates of feature extraction)
    layer.register_forward_pre_hook(lambda m, args: seen.append(m.camids.clone()) if m.camids is not None else None)
    errors: list[float] = []

    def per_camera_check(m, args, out):
        """Each camera's rows of a training batch were normalised with that camera's own batch statistics."""
        if m.camids is None:
            return
        x, y = args[0].detach(), out.detach()
        for c in m.camids.unique():
            rows = m.camids == c
            if int(rows.sum()) > 1:
                ref = F.batch_norm(x[rows], None, None, m.weight.detach(), m.bias.detach(), True, 0.0, m.eps)
                errors.append(float((y[rows] - ref).abs().max()))

    layer.register_forward_hook(per_camera_check)
    trainer.train()
    assert errors and max(errors) < 1e-4, errors
    train_cams = {s.camid for s in trainer.method.train_set}
    assert len(seen) == 2 and all(len(c) == cfg.data.batch_size and set(c.tolist()) <= train_cams for c in seen)
    assert any(len(set(c.tolist())) > 1 for c in seen)  # mixed-camera batches reach the layer split
    assert layer.camids is None
    row = metrics_rows(trainer.output_dir)[-1]
    assert math.isfinite(row["losses"]["loss"]) and "mAP" in row["test"]
