import pytest

from unreid.config import ConfigError, from_dict, load_config, to_dict


def test_defaults_follow_cluster_contrast():
    cfg = load_config()
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.step_size) == (3.5e-4, 5e-4, 20)
    assert (cfg.method.temperature, cfg.method.momentum) == (0.05, 0.1)
    assert (cfg.pseudo_labels.k1, cfg.pseudo_labels.k2, cfg.pseudo_labels.min_samples) == (30, 6, 4)
    assert not cfg.method.supervised


def test_overrides_and_yaml_inheritance(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("optim:\n  epochs: 7\ndata:\n  height: 64\n")
    child = tmp_path / "child.yaml"
    child.write_text("defaults: base.yaml\noptim:\n  lr: 0.001\n")
    cfg = load_config(child, ["data.width=32", "method.momentum=0.2"])
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.data.height, cfg.data.width) == (7, 0.001, 64, 32)
    assert cfg.method.momentum == 0.2


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.epochz=3", "epochz"),
        ("model.pooling=max", "model.pooling"),
        ("pseudo_labels.eps=1.5", "pseudo_labels.eps"),
        ("data.batch_size=10", "data.batch_size"),
        ("method.momentum=1.0", "method.momentum"),
        ("data.grayscale_patch_p=1.5", "data.grayscale_patch_p"),
        ("data.grayscale_p=-0.1", "data.grayscale_p"),
        ("method.camera.online_balance=1.5", "method.camera.online_balance"),
        ("method.camera.online_positives=0", "method.camera.online_positives"),
        ("method.camera.intra_weight=-1", "intra_weight"),
        ("method.hhcl.smoothing=top5", "method.hhcl.smoothing"),
        ("optim.lr=-0.001", "lr >= 0"),
        ("method.hhcl.label_smoothing=1.0", "method.hhcl.label_smoothing"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_lr_zero_is_a_valid_control_run():
    assert load_config(None, ["optim.lr=0"]).optim.lr == 0.0


def test_missing_file_and_round_trip(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    cfg = load_config(None, ["optim.epochs=3"])
    assert from_dict(to_dict(cfg)) == cfg
