"""Shared fixtures: a tiny synthetic dataset generated once per session (never the real data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)


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
