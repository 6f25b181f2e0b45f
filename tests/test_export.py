"""``unreid export`` (ONNX / TorchScript with the preprocessing in the metadata) and ``unreid extract
--format npy|parquet`` (issue 35)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import tiny_overrides, write_checkpoint
from unreid.cli import main
from unreid.config import load_config
from unreid.export import read_metadata
from unreid.models import build_model


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _checkpoint(cfg, path):
    # non-trivial BN running statistics, so that an export in train mode (batch statistics) would differ
    return write_checkpoint(cfg, path, seed=0, randomize_bn=True)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory, synthetic_root):
    return load_config(None, tiny_overrides(synthetic_root, tmp_path_factory.mktemp("run") / "r"))


@pytest.fixture(scope="module")
def checkpoint(cfg, tmp_path_factory):
    return _checkpoint(cfg, tmp_path_factory.mktemp("ckpt") / "model_best.pth")


def _images(cfg, n=3):
    """A few preprocessed images: random pictures through the documented preprocessing."""
    from unreid.data.transforms import build_test_transform

    rng = np.random.default_rng(0)
    tf = build_test_transform(cfg.data)
    return torch.stack([tf(Image.fromarray(rng.integers(0, 256, (80, 40, 3), dtype=np.uint8))) for _ in range(n)])


def _reference(checkpoint, cfg, x):
    model = build_model(cfg.model, init_weights=False)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    with torch.no_grad():
        return torch.nn.functional.normalize(model.eval()(x), dim=1).numpy()


@pytest.mark.parametrize("exporter", ["legacy", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_onnx_export_gives_pytorch_features(exporter, checkpoint, cfg, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    out = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out),
                 "--onnx-exporter", exporter]) == 0
    assert "wrote" in capsys.readouterr().out
    x = _images(cfg, 3)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    ref = _reference(checkpoint, cfg, x)
    assert got.shape == ref.shape == (3, 512)
    assert np.abs(got - ref).max() < 1e-4
    (one,) = sess.run(None, {sess.get_inputs()[0].name: x[:1].numpy()})  # dynamic batch axis
    assert np.abs(one - ref[:1]).max() < 1e-4
    meta = read_metadata(out)
    assert (meta["height"], meta["width"], meta["feature_dim"]) == (64, 32, 512)
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
    assert meta["normalisation"] == "L2" and meta["checkpoint"] == str(checkpoint)
    import onnx

    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["mean"]) == [0.485, 0.456, 0.406] and props["height"] == "64"


def test_torchscript_export_gives_pytorch_features(checkpoint, cfg, tmp_path):
    out = tmp_path / "model.pt"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(out)]) == 0
    extra = {"unreid.json": ""}
    module = torch.jit.load(str(out), _extra_files=extra)
    x = _images(cfg, 4)
    with torch.no_grad():
        got = module(x).numpy()
    assert np.abs(got - _reference(checkpoint, cfg, x)).max() < 1e-4
    meta = json.loads(extra["unreid.json"])
    assert meta == read_metadata(out) and (meta["height"], meta["width"]) == (64, 32)
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]


def test_export_never_overwrites_and_bad_inputs(checkpoint, cfg, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"mine")
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out),
                 "--onnx-exporter", "legacy"]) == 2
    assert "exists" in _one_line(capsys.readouterr().err) and out.read_bytes() == b"mine"
    fresh = tmp_path / "m2.pt"
    assert main(["export", "--checkpoint", str(tmp_path / "nope.pth"), "--format", "torchscript",
                 "--out", str(fresh)]) == 2
    assert "checkpoint not found" in _one_line(capsys.readouterr().err) and not fresh.exists()
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(fresh),
                 "model.backbone=resnet34"]) == 2
    assert "this config has resnet34" in _one_line(capsys.readouterr().err) and not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary file left


def test_camera_bn_export_uses_running_statistics(cfg, tmp_path, capsys):
    cbn = load_config(None, [f"{k}={v}" for k, v in {"data.height": 64, "data.width": 32,
                                                      "model.backbone": "resnet18", "model.pretrained": False,
                                                      "model.camera_bn": True}.items()])
    ckpt = _checkpoint(cbn, tmp_path / "cbn.pth")
    out = tmp_path / "cbn.pt"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(out)]) == 0
    assert "running BN statistics" in capsys.readouterr().err
    assert read_metadata(out)["camera_bn"].startswith("running statistics")
    x = _images(cbn, 2)
    with torch.no_grad():
        got = torch.jit.load(str(out))(x).numpy()
    assert np.abs(got - _reference(ckpt, cbn, x)).max() < 1e-4  # the eval-mode model = running statistics


# --- extract --format --------------------------------------------------------------------------------------

def test_extract_npy_and_parquet_match_npz(checkpoint, synthetic_root, tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("name: run\n")
    base = ["extract", str(cfg_file), "--checkpoint", str(checkpoint), "--split", "query",
            *tiny_overrides(synthetic_root, tmp_path / "r")]
    assert main(base + ["--out", str(tmp_path / "f.npz")]) == 0
    ref = np.load(tmp_path / "f.npz")
    assert main(base + ["--out", str(tmp_path / "f.npy"), "--format", "npy"]) == 0
    feats = np.load(tmp_path / "f.npy")
    assert feats.dtype == np.float32 and np.array_equal(feats, ref["features"])
    with open(tmp_path / "f.index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["row"] for r in rows] == [str(i) for i in range(len(feats))]
    assert [r["path"] for r in rows] == ref["paths"].tolist()
    assert [int(r["pid"]) for r in rows] == ref["pids"].tolist()
    assert [int(r["camid"]) for r in rows] == ref["camids"].tolist()
    # never overwritten: the features or the index
    assert main(base + ["--out", str(tmp_path / "f.npy"), "--format", "npy"]) == 2
    assert "exists" in _one_line(capsys.readouterr().err)
    (tmp_path / "g.index.csv").write_text("mine")
    assert main(base + ["--out", str(tmp_path / "g"), "--format", "npy"]) == 2
    assert "g.index.csv exists" in _one_line(capsys.readouterr().err) and not (tmp_path / "g.npy").exists()
    pq = pytest.importorskip("pyarrow.parquet")
    assert main(base + ["--out", str(tmp_path / "f.parquet"), "--format", "parquet"]) == 0
    table = pq.read_table(tmp_path / "f.parquet")
    assert table.column_names == ["path", "pid", "camid", "feature"]
    assert table.column("path").to_pylist() == ref["paths"].tolist()
    assert table.column("pid").to_pylist() == ref["pids"].tolist()
    assert table.column("camid").to_pylist() == ref["camids"].tolist()
    assert np.array_equal(np.array(table.column("feature").to_pylist(), dtype=np.float32), ref["features"])
    meta = json.loads(table.schema.metadata[b"unreid"])
    assert meta["feature_dim"] == ref["features"].shape[1] and meta["split"] == "query"
