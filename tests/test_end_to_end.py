"""End to end on the synthetic set: training beats a learning-rate-0 control run.

A few epochs of Cluster Contrast (and HHCL) from ImageNet EfficientNet-Lite0 features on the
procedural identities (``unreid.data.synthetic``), whose cameras differ strongly. For Cluster Contrast
the pseudo-label ARI (report only) must rise above its first value, and the final Market-protocol
(cross-camera) mAP must beat both its value before training and the final mAP of a **control run**:
the same config and seed with ``optim.lr=0``; for HHCL, its training objective must end below its own
control's (below). The control goes through every step except the weight change (same data,
augmentation draws, pseudo-labels, memories, and batch-norm running statistics, which move in train
mode whatever the learning rate), so only learning separates the two: with ``optimizer.step()``
removed from the trainer, Cluster Contrast's synthetic run still rose from its starting mAP (batch-norm
statistics alone) and passed a test against the starting value, but it equals the control and fails here.

With ``lr=0`` the method's loss and memory never reach the model, so the control is the same for both
methods (same sampler over the same pseudo-labels, no random draw in either memory; checked once on the
tiny synthetic config: identical weights and BN statistics after CC and HHCL lr=0 runs; on this config both
end at the same mAP to the last bit, 21.39762184072811, 2026-12-07): it is run once, with HHCL, whose
training loss it also gives, and shared.

Measured on the 2-core CPU (mAP %, E2E below): before 19.1; control 21.4 (2026-12-06 and 2026-12-07, on an AVX-512
machine and on one without: the same to 0.1). Cluster Contrast 28.8 (first machine). HHCL ended at 21.7 on the first machine and
20.5 on the second, and at 22.5 after 5 epochs against the control's 23.0: on this synthetic set HHCL does not beat
the batch-norm statistics in 24-40 steps, so its mAP is no test of learning (it was a thin-margin check that failed
on the second machine). HHCL's case instead compares its own training objective with the ``lr=0`` control's (the
control runs HHCL): the last epoch's mean loss 1.77 trained against 2.17 (2026-12-07). Without the optimiser step both runs are the
same run and the check fails; a gradient of the wrong sign raises the trained loss.
"""

from __future__ import annotations

import pytest

from tests.conftest import metrics_rows, tiny_overrides
from unreid.config import load_config
from unreid.engine import Trainer

pytest.importorskip("efficientnet_lite_pytorch")

E2E = {
    "model.backbone": "efficientnet_lite0",
    "model.pretrained": True,
    "data.synthetic.num_ids": 30,
    "data.synthetic.num_test_ids": 15,
    "data.synthetic.num_cameras": 3,
    "data.synthetic.images_per_id_cam": 6,
    "data.synthetic.height": 128,
    "data.synthetic.width": 64,
    "data.height": 128,
    "data.width": 64,
    "data.batch_size": 32,
    "optim.epochs": 3,
    "optim.iters": 8,
    "eval.every": 3,  # before training and after the last epoch only (evaluation draws no random number)
}


def _run(root, out, **extra) -> list[dict]:
    """Train with ``E2E`` + ``extra``; the rows of its ``metrics.jsonl`` (first: epoch -1, before training)."""
    trainer = Trainer(load_config(None, tiny_overrides(root, out, **E2E, **extra)))
    trainer.train()
    return metrics_rows(trainer.output_dir)


def _metrics(test: dict) -> dict:
    """An evaluation record without its timing (``time_s``)."""
    return {k: v for k, v in test.items() if not k.startswith("time")}


@pytest.fixture(scope="module")
def control_rows(synthetic_root, tmp_path_factory):
    """The learning-rate-0 control run (see the module docstring), shared by both methods."""
    return _run(synthetic_root, tmp_path_factory.mktemp("e2e_control"), **{"method.name": "hhcl", "optim.lr": 0})


@pytest.mark.slow
def test_cluster_contrast_beats_a_learning_rate_zero_control(synthetic_root, tmp_path, control_rows):
    rows = _run(synthetic_root, tmp_path / "cc", **{"method.name": "cluster_contrast"})
    before, epochs = rows[0], rows[1:]
    assert before["epoch"] == -1 and [r["epoch"] for r in epochs] == [0, 1, 2]
    # the control starts from the same weights: the same metrics before training (timings aside)
    assert control_rows[0]["epoch"] == -1
    assert _metrics(control_rows[0]["test"]) == _metrics(before["test"])
    aris = [r["pseudo_labels"]["ari"] for r in epochs]
    assert max(aris[1:]) > aris[0], aris
    final, control = epochs[-1]["test"]["mAP"], control_rows[-1]["test"]["mAP"]
    assert final > before["test"]["mAP"], (before["test"]["mAP"], final)
    assert final > control, f"trained {final} vs lr=0 control {control} (mAP %)"


@pytest.mark.slow
def test_hhcl_lowers_its_objective_below_a_learning_rate_zero_control(synthetic_root, tmp_path, control_rows):
    rows = _run(synthetic_root, tmp_path / "hhcl", **{"method.name": "hhcl"})
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in control_rows] == [-1, 0, 1, 2]
    assert _metrics(rows[0]["test"]) == _metrics(control_rows[0]["test"])
    # learning lowers the objective the run optimises (the last epoch's mean over its steps): 1.77 against 2.17
    # when measured; 0.9 leaves room for another machine's arithmetic, none for a run without the step
    trained, control = rows[-1]["losses"]["loss"], control_rows[-1]["losses"]["loss"]
    assert set(rows[-1]["losses"]) == set(control_rows[-1]["losses"])  # the same objective (HHCL's terms)
    assert trained < 0.9 * control, (trained, control)
    assert rows[-1]["test"]["mAP"] > rows[0]["test"]["mAP"], (rows[0]["test"], rows[-1]["test"])
