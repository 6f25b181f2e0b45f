"""One line, exit 2, for bad input (issue 29; docs/RELIABILITY.md): each case through the CLI, with no
traceback and nothing written where it should not be."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import tiny_overrides
from unreid.cli import main
from unreid.config import BACKBONE_NAMES, load_config, to_dict
from unreid.data.datasets import build_dataset
from unreid.data.loader import ReIDImageDataset, unreadable_images
from unreid.engine.checkpoint import save_checkpoint
from unreid.engine.rundir import count_unreadable
from unreid.models import build_model


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def cfg_file(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("name: run\n")
    return p


def test_yaml_syntax_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  epochs: 3\n  lr: [1, 2\n")
    assert main(["train", str(bad), f"output_dir={tmp_path / 'r'}"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "bad.yaml" in line and "YAML syntax error at line" in line
    assert not (tmp_path / "r").exists()


def test_unknown_backbone_is_refused_before_any_data(tmp_path, cfg_file, capsys):
    out, data = tmp_path / "r", tmp_path / "data"
    assert main(["train", str(cfg_file), *tiny_overrides(data, out, **{"model.backbone": "resnet9000"})]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "model.backbone='resnet9000'" in line and "resnet50" in line and "timm:<name>" in line
    assert not out.exists() and not data.exists()  # refused at config time: no data generated or read
    assert load_config(None, ["model.backbone=timm:resnet18"]).model.backbone == "timm:resnet18"


def test_backbone_names_match_the_registries():
    from unreid.models import BACKBONES
    from unreid.models.backbones import EFFICIENTNET_LITES, RESNETS

    assert set(BACKBONE_NAMES) == set(RESNETS) | set(EFFICIENTNET_LITES)
    assert set(BACKBONES) == set(BACKBONE_NAMES) | {"timm:<name>"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu(tmp_path, cfg_file, capsys):
    out = tmp_path / "r"
    assert main(["train", str(cfg_file), *tiny_overrides(tmp_path / "data", out, device="cuda")]) == 2
    assert "CUDA is not available" in _one_line(capsys.readouterr().err)
    assert not out.exists()
    assert main(["train", str(cfg_file), *tiny_overrides(tmp_path / "data", out, device="gpu")]) == 2
    assert "device='gpu'" in _one_line(capsys.readouterr().err)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, synthetic_root):
    """A model_best.pth-like checkpoint of an untrained resnet18 at 64x32 (what `unreid train` writes)."""
    cfg = load_config(None, tiny_overrides(synthetic_root, tmp_path_factory.mktemp("ck") / "r"))
    path = tmp_path_factory.mktemp("ckpt") / "model_best.pth"
    model = build_model(cfg.model)
    save_checkpoint({"format": "unreid-checkpoint-1", "mode": "unsupervised", "config": to_dict(cfg), "epoch": 1,
                     "model": model.state_dict()}, path)
    return path


@pytest.mark.parametrize("size", [0, 4096], ids=["empty", "truncated"])
def test_eval_with_an_empty_or_truncated_checkpoint(size, checkpoint, tmp_path, cfg_file, synthetic_root, capsys):
    bad = tmp_path / "model_best.pth"
    bad.write_bytes(checkpoint.read_bytes()[:size])  # an empty file, a copy cut short
    assert main(["eval", str(cfg_file), "--checkpoint", str(bad), *tiny_overrides(synthetic_root, tmp_path)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "cannot read checkpoint" in line and str(bad) in line


def test_eval_with_a_checkpoint_of_another_architecture(checkpoint, tmp_path, cfg_file, synthetic_root, capsys):
    args = ["eval", str(cfg_file), "--checkpoint", str(checkpoint)]
    assert main(args + tiny_overrides(synthetic_root, tmp_path, **{"model.backbone": "resnet34"})) == 2
    line = _one_line(capsys.readouterr().err)
    assert "trained with model.backbone=resnet18, this config has resnet34" in line


def test_eval_at_another_input_size_warns(checkpoint, tmp_path, cfg_file, synthetic_root, capsys):
    args = ["eval", str(cfg_file), "--checkpoint", str(checkpoint), "--json"]
    assert main(args + tiny_overrides(synthetic_root, tmp_path, **{"data.height": 32, "data.width": 16})) == 0
    err = capsys.readouterr().err
    assert "trained at 64x32" in err and "evaluated at 32x16" in err and "data.height=64 data.width=32" in err


def test_unmatched_file_names_are_reported(tmp_path, caplog):
    root = tmp_path / "market"
    for sub, names in {"bounding_box_train": ["0002_c1s1_000001_00.jpg", "0002_c2s1_000002_00.jpg",
                                              "Thumbs.jpg", "IMG_0001.jpg"],
                       "query": ["0002_c1s1_000003_00.jpg"], "bounding_box_test": ["0002_c2s1_000004_00.jpg"]}.items():
        (root / sub).mkdir(parents=True)
        for n in names:
            Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(root / sub / n)
    with caplog.at_level(logging.WARNING, logger="unreid"):
        data = build_dataset("market1501", str(root))
    assert data.info["skipped_files"] == 2
    msgs = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(msgs) == 1 and "2 image file(s)" in msgs[0] and "IMG_0001.jpg" in msgs[0] and "Thumbs.jpg" in msgs[0]


def test_unreadable_images_are_remembered_after_the_loader_is_gone(tmp_path):
    from unreid.data.datasets.base import Sample

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    ds = ReIDImageDataset([Sample(str(bad), -1, 0)], transform=lambda x: x)
    assert ds[0]["img"].sum() == 0  # the black stand-in
    del ds
    assert str(bad) in unreadable_images()
    assert count_unreadable([str(bad), str(tmp_path / "fine.jpg")]) == 1
