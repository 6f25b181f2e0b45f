"""Every shipped config loads, validates, and keeps the recipe values it documents."""

import dataclasses
from pathlib import Path

import pytest

from unreid.config import Config, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
CAMERA_AWARE = Path(__file__).resolve().parents[1] / "configs" / "camera_aware"


def _cuhk03_camera_aware(variant: str):
    """``configs/camera_aware/cuhk03_detected_cpu_<variant>.yaml``, loaded."""
    return load_config(CAMERA_AWARE / f"cuhk03_detected_cpu_{variant}.yaml")


def test_configs_exist():
    names = {p.relative_to(p.parents[1]).as_posix() for p in CONFIGS}
    assert {"cluster_contrast/market1501.yaml", "cluster_contrast/dukemtmc.yaml", "cluster_contrast/msmt17.yaml",
            "cluster_contrast/veri776.yaml", "cluster_contrast/cuhk03_detected_cpu.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(p.parents[1]).as_posix())
def test_config_loads(path):
    cfg = load_config(path)
    assert cfg.data.batch_size % cfg.data.num_instances == 0
    assert not cfg.method.supervised  # supervised is only ever switched on explicitly


def test_cluster_contrast_recipe_values():
    root = Path(__file__).resolve().parents[1] / "configs" / "cluster_contrast"
    m = load_config(root / "market1501.yaml")
    assert (m.model.backbone, m.model.pooling, m.model.gem_p, m.model.gem_trainable) == ("resnet50", "gem", 3.0, True)
    assert (m.data.height, m.data.width, m.data.batch_size, m.data.num_instances) == (256, 128, 256, 16)
    assert (m.optim.lr, m.optim.weight_decay, m.optim.step_size, m.optim.epochs, m.optim.iters) == (
        3.5e-4, 5e-4, 20, 50, 200)
    assert (m.method.temperature, m.method.momentum, m.pseudo_labels.eps, m.pseudo_labels.min_samples) == (
        0.05, 0.1, 0.6, 4)
    assert load_config(root / "msmt17.yaml").optim.iters == 400
    v = load_config(root / "veri776.yaml")
    assert (v.data.height, v.data.width, v.optim.iters) == (224, 224, 400)
    cpu = load_config(root / "cuhk03_detected_cpu.yaml", ["optim.epochs=2"])
    assert cpu.model.backbone == "efficientnet_lite0" and cpu.optim.epochs == 2


#: configs that reproduce a paper's published run (not the *_cpu.yaml budget variants)
PUBLISHED_RECIPES = ["cluster_contrast/market1501.yaml", "cluster_contrast/dukemtmc.yaml",
                     "cluster_contrast/msmt17.yaml", "cluster_contrast/veri776.yaml", "hhcl/market1501.yaml",
                     "hhcl/market1501_ibn.yaml", "hhcl/dukemtmc.yaml", "hhcl/msmt17.yaml"]


@pytest.mark.parametrize("name", PUBLISHED_RECIPES)
def test_published_recipes_train_in_fp32(name):
    """The reference code (Cluster Contrast, HHCL) trains and extracts in fp32: no AMP in the recipes,
    although the library default is optim.amp=true."""
    assert Config().optim.amp is True  # the default; the recipes must override it
    assert load_config(Path(__file__).resolve().parents[1] / "configs" / name).optim.amp is False


def test_colour_config_is_the_cap_clustering_variant_plus_colour():
    base = _cuhk03_camera_aware("cbn_cap_clustering")
    colour = _cuhk03_camera_aware("cbn_cap_clustering_colour")
    assert (base.pseudo_labels.colour_weight, colour.pseudo_labels.colour_weight) == (0.0, 1.0)
    assert (colour.pseudo_labels.k1, colour.pseudo_labels.eps, colour.model.camera_bn) == (20, 0.5, True)
    assert colour.method.camera == base.method.camera and colour.optim == base.optim


def test_o2cap_config_is_the_colour_variant_with_o2caps_losses():
    colour = _cuhk03_camera_aware("cbn_cap_clustering_colour")
    o2cap = _cuhk03_camera_aware("cbn_cap_clustering_colour_o2cap")
    c = o2cap.method.camera
    # the released O2CAP code: offline + online losses, weight 1, from epoch 0, no intra-camera loss
    assert (c.intra_weight, c.inter_weight, c.online_weight, c.inter_start_epoch) == (0.0, 1.0, 1.0, 0)
    assert (c.online_balance, c.online_positives, c.hard_negatives, c.proxy_temperature) == (0.15, 3, 50, 0.07)
    assert colour.method.camera.online_weight == 0.0  # CAP's losses there
    assert o2cap.pseudo_labels == colour.pseudo_labels and o2cap.model == colour.model
    assert o2cap.optim == colour.optim and o2cap.data == colour.data


def test_online_config_is_the_colour_variant_plus_the_online_loss():
    colour = _cuhk03_camera_aware("cbn_cap_clustering_colour")
    online = _cuhk03_camera_aware("cbn_cap_clustering_colour_online")
    assert online.method.camera == dataclasses.replace(colour.method.camera, online_weight=1.0)
    assert (online.method.camera.intra_weight, online.method.camera.inter_start_epoch) == (1.0, 1)
    assert online.pseudo_labels == colour.pseudo_labels and online.model == colour.model
    assert online.optim == colour.optim and online.data == colour.data


def test_proxy_sampler_config_is_the_online_variant_with_caps_sampler():
    online = _cuhk03_camera_aware("cbn_cap_clustering_colour_online")
    proxy = _cuhk03_camera_aware("cbn_cap_clustering_colour_online_proxy_sampler")
    assert online.data.sampler == "camera_aware"
    assert proxy.data == dataclasses.replace(online.data, sampler="proxy", num_instances=4)
    assert proxy.method == online.method and proxy.pseudo_labels == online.pseudo_labels
    assert proxy.model == online.model and proxy.optim == online.optim


def test_lomo_config_is_the_online_variant_with_lomo_for_the_stripes():
    online = _cuhk03_camera_aware("cbn_cap_clustering_colour_online")
    lomo = _cuhk03_camera_aware("cbn_cap_clustering_lomo_online")
    assert (online.pseudo_labels.colour_descriptor, lomo.pseudo_labels.colour_descriptor) == ("stripes", "lomo")
    assert lomo.pseudo_labels == dataclasses.replace(online.pseudo_labels, colour_descriptor="lomo")
    assert lomo.method == online.method and lomo.model == online.model
    assert lomo.optim == online.optim and lomo.data == online.data
