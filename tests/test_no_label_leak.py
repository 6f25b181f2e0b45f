"""Ground-truth identities of the training set never reach training (DESIGN.md, Conventions).

An unsupervised run on a training set whose identities are scrambled must be bit-identical to the
run on the true identities (only the quality report, which compares with ground truth, may differ);
the supervised reference, which is *meant* to use them, must differ.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.conftest import metrics_rows, tiny_overrides
from unreid.config import load_config
from unreid.data.datasets import build_dataset
from unreid.engine import Trainer
from unreid.engine.checkpoint import load_checkpoint
from unreid.engine.trainer import load_data


def _scrambled(data):
    rng = np.random.default_rng(0)
    pids = np.array([s.pid for s in data.train])
    perm = rng.permutation(pids)
    assert (perm != pids).any()
    train = [dataclasses.replace(s, pid=int(p)) for s, p in zip(data.train, perm)]
    return dataclasses.replace(data, train=train)


def _run(cfg, data):
    trainer = Trainer(cfg, data=data)
    trainer.train()
    ckpt = load_checkpoint(trainer.output_dir / "checkpoint_last.pth")
    rows = metrics_rows(trainer.output_dir)
    return ckpt, rows


def _same_model(a, b):
    return all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())


@pytest.mark.slow
def test_unsupervised_run_ignores_training_identities(synthetic_root, tmp_path):
    # batch 8: the tiny set can leave 3 clusters at epoch 1, fewer than one batch of 16
    base = load_config(None, tiny_overrides(synthetic_root, tmp_path / "x", **{
        "optim.epochs": 2, "optim.iters": 2, "data.batch_size": 8}))
    data = load_data(base)
    runs = {}
    for name, d in (("true", data), ("scrambled", _scrambled(data))):
        cfg = dataclasses.replace(base, output_dir=str(tmp_path / name))
        runs[name] = _run(cfg, d)
    (a, ra), (b, rb) = runs["true"], runs["scrambled"]
    assert _same_model(a, b)
    assert torch.equal(a["method"]["labels"], b["method"]["labels"])
    for x, y in zip(ra, rb):
        assert x.get("losses") == y.get("losses")
        assert x.get("test") is None or x["test"]["mAP"] == y["test"]["mAP"]
    # the report did see ground truth (it is the only place allowed to): it differs
    assert ra[-1]["pseudo_labels"]["ari"] != rb[-1]["pseudo_labels"]["ari"]


@pytest.mark.slow
def test_supervised_reference_uses_identities(synthetic_root, tmp_path):
    base = load_config(None, tiny_overrides(synthetic_root, tmp_path / "x", **{
        "optim.epochs": 1, "optim.iters": 2, "method.supervised": True}))
    data = load_data(base)
    a, _ = _run(dataclasses.replace(base, output_dir=str(tmp_path / "true")), data)
    b, _ = _run(dataclasses.replace(base, output_dir=str(tmp_path / "scrambled")), _scrambled(data))
    assert not _same_model(a, b)


def test_batches_never_carry_identities(synthetic_root, tmp_path):
    cfg = load_config(None, tiny_overrides(synthetic_root, tmp_path / "r"))
    data = build_dataset("synthetic", cfg.data.root, **dataclasses.asdict(cfg.data.synthetic))
    from unreid.data.loader import build_test_loader

    batch = next(iter(build_test_loader(data.train[:4], cfg.data)))
    assert "pid" not in batch and set(batch) >= {"img", "index", "camid"}
