"""The two-stream model (``model.arch="two_stream"``): routing by modality, mixed batches, state-dict
names, pretrained stems, both backbone families, and its errors."""

from __future__ import annotations

import pytest
import torch

from unreid.config import ModelConfig
from unreid.models.reid import build_model
from unreid.models.two_stream import TwoStreamModel


def _cfg(backbone: str = "resnet18", **kw) -> ModelConfig:
    return ModelConfig(arch="two_stream", backbone=backbone, pretrained=False, gem_trainable=False, **kw)


def _single_stream_with(model: TwoStreamModel, stem: str) -> torch.nn.Module:
    """A plain "reid" model carrying the two-stream model's weights, with ``stem`` ("visible" or "infrared")
    as its own stem: the independent reference of one route."""
    ref = build_model(ModelConfig(arch="reid", backbone=model.cfg_backbone, pretrained=False, gem_trainable=False))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("infrared_stem.")}
    if stem == "infrared":
        prefix = "backbone." if model.cfg_backbone.startswith("resnet") else "backbone.net."
        for k, v in model.infrared_stem.state_dict().items():
            if not k.startswith("_swish"):
                state[prefix + k] = v
    ref.load_state_dict(state)
    return ref.eval()


@pytest.fixture(params=["resnet18", "efficientnet_lite0"])
def model(request):
    if request.param.startswith("efficientnet"):
        pytest.importorskip("efficientnet_lite_pytorch")
    torch.manual_seed(0)
    m = build_model(_cfg(request.param))
    assert isinstance(m, TwoStreamModel)
    m.cfg_backbone = request.param
    # make the two stems differ (they start as copies of one another)
    with torch.no_grad():
        for p in m.infrared_stem.parameters():
            p.add_(0.1 * torch.randn_like(p))
        # running statistics of real activations (fresh ones saturate an untrained EfficientNet's ReLU6 in
        # eval mode, making every output equal): one train-mode pass with momentum 1 on a mixed batch
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.momentum = 1.0
                mod.weight.uniform_(0.5, 1.5)  # no BN layer may be the identity (a skipped one would pass)
                mod.bias.normal_(0.0, 0.2)
        m.train()(torch.randn(8, 3, 64, 32), modalities=torch.tensor([0, 1] * 4))
    return m.eval()


def test_each_modality_uses_its_own_stem(model):
    x = torch.randn(2, 3, 64, 32)
    vis, ir = torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long)
    with torch.no_grad():
        f_vis, f_ir = model(x, modalities=vis), model(x, modalities=ir)
        torch.testing.assert_close(f_vis, _single_stream_with(model, "visible")(x))
        torch.testing.assert_close(f_ir, _single_stream_with(model, "infrared")(x))
        assert not torch.allclose(f_vis, f_ir, atol=1e-4)
        torch.testing.assert_close(model(x), f_vis)  # modalities=None: the visible stem
        # zeroing the infrared stem's first conv changes infrared outputs only
        first_conv = next(model.infrared_stem.parameters())
        first_conv.zero_()
        torch.testing.assert_close(model(x, modalities=vis), f_vis)
        assert not torch.allclose(model(x, modalities=ir), f_ir, atol=1e-4)


def test_mixed_batch_equals_separate_batches_in_eval_mode(model):
    x = torch.randn(3, 3, 64, 32)
    mods = torch.tensor([1, 0, 1])
    with torch.no_grad():
        mixed, fmap = model(x, modalities=mods, return_map=True)
        alone = torch.cat([model(x[i:i + 1], modalities=mods[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(mixed, alone, rtol=1e-4, atol=1e-5)
    assert fmap.shape[0] == 3 and mixed.shape == (3, model.feature_dim)


def test_train_mode_stem_statistics_follow_the_modality():
    m = build_model(_cfg()).train()
    vis_mean, ir_mean = m.backbone.bn1.running_mean.clone(), m.infrared_stem.bn1.running_mean.clone()
    shared_mean = m.backbone.layer1[0].bn1.running_mean.clone()
    m(torch.randn(4, 3, 64, 32), modalities=torch.ones(4, dtype=torch.long))
    assert torch.equal(m.backbone.bn1.running_mean, vis_mean)  # the visible stem saw nothing
    assert not torch.equal(m.infrared_stem.bn1.running_mean, ir_mean)
    assert not torch.equal(m.backbone.layer1[0].bn1.running_mean, shared_mean)  # shared layers did


def test_state_dict_names_and_pretrained_weights_in_both_stems(tmp_path):
    from unreid.models.backbones import ResNetBackbone

    src = ResNetBackbone("resnet18", pretrained=False)
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    m = build_model(ModelConfig(arch="two_stream", backbone="resnet18", pretrained=True, weights=str(tmp_path / "r18.pth")))
    single = build_model(ModelConfig(arch="reid", backbone="resnet18", pretrained=False))
    names = set(m.state_dict())
    extra = names - set(single.state_dict())
    assert set(single.state_dict()) <= names
    assert extra == {f"infrared_stem.{k}" for k in ("conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                                                    "bn1.running_var", "bn1.num_batches_tracked")}
    for k in ("conv1.weight", "bn1.running_var"):
        assert torch.equal(m.state_dict()[f"backbone.{k}"], src.state_dict()[k])
        assert torch.equal(m.state_dict()[f"infrared_stem.{k}"], src.state_dict()[k])
    # separate parameters, not one shared tensor
    assert m.infrared_stem.conv1.weight.data_ptr() != m.backbone.conv1.weight.data_ptr()


def test_efficientnet_stem_names():
    pytest.importorskip("efficientnet_lite_pytorch")
    m = build_model(_cfg("efficientnet_lite0"))
    single = build_model(ModelConfig(arch="reid", backbone="efficientnet_lite0", pretrained=False))
    extra = set(m.state_dict()) - set(single.state_dict())
    assert {k.split(".")[1] for k in extra} == {"_conv_stem", "_bn0"}
    assert torch.equal(m.state_dict()["infrared_stem._conv_stem.weight"], m.state_dict()["backbone.net._conv_stem.weight"])


def test_errors():
    m = build_model(_cfg()).eval()
    x = torch.randn(2, 3, 64, 32)
    with pytest.raises(ValueError, match="0 \\(visible\\) or 1 \\(infrared\\)"):
        m(x, modalities=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="3 modalities for 2 images"):
        m(x, modalities=torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="camera_bn"):
        build_model(_cfg(camera_bn=True))


def test_fixed_gem_p_is_a_buffer_not_a_parameter():
    """MBCCM's GeM has a fixed p = 3: model.gem_trainable=false gives a buffer the optimiser never sees."""
    m = build_model(_cfg())
    assert float(m.pool.p) == 3.0 and not isinstance(m.pool.p, torch.nn.Parameter)
    assert "pool.p" not in dict(m.named_parameters()) and "pool.p" in m.state_dict()


def test_feature_extraction_routes_each_sample_by_its_modality(tmp_path):
    """The engine's extraction passes the samples' modalities: infrared samples through the infrared stem."""
    import numpy as np
    from PIL import Image

    from unreid.config import Config
    from unreid.data.datasets.base import Sample
    from unreid.engine.trainer import extract

    m = build_model(_cfg())
    m.cfg_backbone = "resnet18"
    with torch.no_grad():
        for p in m.infrared_stem.parameters():
            p.add_(0.1 * torch.randn_like(p, generator=torch.Generator().manual_seed(1)))
    m.eval()
    samples = []
    for k in range(6):
        path = tmp_path / f"{k}.jpg"
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(str(path), k, k % 2, k % 2))  # modalities 0, 1, 0, 1, ...
    cfg = Config()
    cfg.data.height, cfg.data.width, cfg.data.workers, cfg.data.cache_images = 64, 32, 0, False
    f = extract(m, samples, cfg, torch.device("cpu"))
    f_vis = extract(_single_stream_with(m, "visible"), samples, cfg, torch.device("cpu"))
    f_ir = extract(_single_stream_with(m, "infrared"), samples, cfg, torch.device("cpu"))
    torch.testing.assert_close(f[0::2], f_vis[0::2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(f[1::2], f_ir[1::2], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(f[1::2], f_vis[1::2], atol=1e-3)
