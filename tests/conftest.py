"""Shared fixtures: a tiny synthetic dataset generated once per session (never the real data)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

# two threads on the 2-core machine; under pytest-xdist (README: `-n 2`) one per worker, so that the two workers
# share the two cores instead of running four threads on them
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A folder under which ``build_dataset("synthetic", root, ...)`` generates its data."""
    return tmp_path_factory.mktemp("synthetic")


def tiny_overrides(root, out, **extra) -> list[str]:
    """Config overrides for a seconds-long run on the synthetic set (tests only)."""
    o = {
        "output_dir": str(out),
        "data.name": "synthetic",
        "data.root": str(root),
        "data.height": 64,
        "data.width": 32,
        "data.batch_size": 16,
        "data.num_instances": 4,
        "data.workers": 0,
        "data.synthetic.num_ids": 24,
        "data.synthetic.num_test_ids": 12,
        "data.synthetic.num_cameras": 3,
        "data.synthetic.images_per_id_cam": 4,
        "data.synthetic.height": 64,
        "data.synthetic.width": 32,
        "model.backbone": "resnet18",
        "model.pretrained": False,
        "pseudo_labels.eps": 0.6,
        "optim.epochs": 2,
        "optim.iters": 3,
        "eval.every": 1,
        "eval.batch_size": 64,
        "device": "cpu",
        # report.html / TensorBoard cost about 1.5 s a run on 2 cores: off here, on in tests/test_report.py
        "report": False,
        "tensorboard": "false",
    }
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


def metrics_rows(out_dir) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` in ``out_dir``, oldest first (tests only)."""
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def write_checkpoint(cfg, path, seed: int = 0, randomize_bn: bool = False):
    """A ``model_best.pth``-like checkpoint (format 2, with its config) of a randomly initialised model of
    ``cfg.model`` (tests only); ``randomize_bn`` gives the BN layers non-trivial running statistics, so that
    a model run in train mode (batch statistics) would give other features."""
    from unreid.config import to_dict
    from unreid.engine.checkpoint import save_checkpoint
    from unreid.models import build_model

    torch.manual_seed(seed)
    model = build_model(cfg.model)
    if randomize_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    save_checkpoint({"format": "unreid-checkpoint-2", "mode": "unsupervised", "config": to_dict(cfg), "epoch": 1,
                     "model": model.state_dict()}, path)
    return path


def eval_cli(tmp_path, over: list[str], capsys) -> tuple[list[str], dict]:
    """``unreid eval`` of a fresh random checkpoint with the overrides ``over``: (the printed lines, the
    ``--json`` result) (tests only)."""
    import json

    from unreid.cli import main
    from unreid.config import load_config

    ckpt = write_checkpoint(load_config(None, over), tmp_path / "model_best.pth")
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("name: run\n")
    assert main(["eval", str(cfg_file), "--checkpoint", str(ckpt), *over]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert main(["eval", str(cfg_file), "--checkpoint", str(ckpt), "--json", *over]) == 0
    return lines, json.loads(capsys.readouterr().out)
