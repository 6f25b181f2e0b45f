"""The trainer: exact resume, output-folder safety, supervised/unsupervised separation, metrics file."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import metrics_rows, tiny_overrides
from unreid.config import load_config
from unreid.engine import Trainer
from unreid.engine.checkpoint import load_checkpoint


@pytest.mark.slow
def test_resume_continues_exactly(synthetic_root, tmp_path):
    full = tmp_path / "full"
    small = {"data.batch_size": 8}  # the tiny set can leave 3 clusters at epoch 1: one batch of 8 still fits
    cfg = load_config(None, tiny_overrides(synthetic_root, full, **{"optim.epochs": 2, **small}))
    Trainer(cfg).train()

    part = tmp_path / "part"
    cfg1 = load_config(None, tiny_overrides(synthetic_root, part, **{"optim.epochs": 1, **small}))
    Trainer(cfg1).train()
    cfg2 = load_config(None, tiny_overrides(synthetic_root, part, **{"optim.epochs": 2, **small}))
    Trainer(cfg2, resume=True).train()

    a = load_checkpoint(full / "checkpoint_last.pth")
    b = load_checkpoint(part / "checkpoint_last.pth")
    assert a["epoch"] == b["epoch"] == 2
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert torch.equal(a["method"]["labels"], b["method"]["labels"])
    last_a, last_b = metrics_rows(full)[-1], metrics_rows(part)[-1]
    assert last_a["losses"] == last_b["losses"]
    assert last_a["test"]["mAP"] == last_b["test"]["mAP"]


def test_existing_run_is_never_overwritten(synthetic_root, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, tiny_overrides(synthetic_root, out, **{"optim.epochs": 1, "optim.iters": 1}))
    Trainer(cfg).train()
    before = (out / "checkpoint_last.pth").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(cfg)
    assert (out / "checkpoint_last.pth").read_bytes() == before


def test_supervised_mode_is_marked_everywhere(synthetic_root, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, tiny_overrides(synthetic_root, out, **{
        "optim.epochs": 1, "optim.iters": 1, "method.supervised": True}))
    trainer = Trainer(cfg)
    trainer.train()
    assert trainer.output_dir.name == "run-SUPERVISED" and not out.exists()
    rows = metrics_rows(trainer.output_dir)
    assert all(r["mode"] == "supervised" for r in rows)
    assert rows[-1]["pseudo_labels"]["source"] == "ground_truth"
    assert "SUPERVISED" in (trainer.output_dir / "train.log").read_text()
    assert load_checkpoint(trainer.output_dir / "checkpoint_last.pth")["mode"] == "supervised"
    # an unsupervised config can not resume a supervised run
    cfg_u = load_config(None, tiny_overrides(synthetic_root, trainer.output_dir, **{"optim.epochs": 2}))
    with pytest.raises(ValueError, match="supervised"):
        Trainer(cfg_u, resume=True)


@pytest.mark.slow
def test_training_does_not_depend_on_the_evaluation_schedule(synthetic_root, tmp_path):
    """Evaluating after every epoch or only after the last gives the same model: evaluation draws
    nothing from the training's random streams (each DataLoader iterator draws a seed from torch's
    global generator, which would shift every later augmentation draw)."""
    every = tmp_path / "every"
    small = {"data.batch_size": 8}  # the tiny set can leave 3 clusters at epoch 1: one batch of 8 still fits
    Trainer(load_config(None, tiny_overrides(synthetic_root, every, **{"eval.every": 1, **small}))).train()
    last = tmp_path / "last"
    Trainer(load_config(None, tiny_overrides(synthetic_root, last, **{"eval.every": 2, **small}))).train()
    assert [r["epoch"] for r in metrics_rows(every) if "test" in r] == [-1, 0, 1]
    assert [r["epoch"] for r in metrics_rows(last) if "test" in r] == [-1, 1]
    a = load_checkpoint(every / "checkpoint_last.pth")
    b = load_checkpoint(last / "checkpoint_last.pth")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert metrics_rows(every)[-1]["losses"] == metrics_rows(last)[-1]["losses"]
    assert metrics_rows(every)[-1]["test"]["mAP"] == metrics_rows(last)[-1]["test"]["mAP"]
