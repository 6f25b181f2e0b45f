"""End to end on the synthetic set: pseudo-label quality and cross-camera retrieval improve.

A few epochs of Cluster Contrast (and HHCL) from ImageNet EfficientNet-Lite0 features on the
procedural identities (``unreid.data.synthetic``), whose cameras differ strongly: the pseudo-label
ARI (report only) and the Market-protocol (cross-camera) mAP must rise above their first values.
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
    "eval.every": 1,
}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["cluster_contrast", "hhcl"])
def test_training_improves_pseudo_labels_and_cross_camera_map(synthetic_root, tmp_path, method):
    cfg = load_config(None, tiny_overrides(synthetic_root, tmp_path / method, **E2E, **{"method.name": method}))
    trainer = Trainer(cfg)
    trainer.train()
    rows = metrics_rows(trainer.output_dir)
    before = rows[0]
    assert before["epoch"] == -1
    epochs = rows[1:]
    aris = [r["pseudo_labels"]["ari"] for r in epochs]
    maps = [r["test"]["mAP"] for r in epochs]
    assert max(aris[1:]) > aris[0], aris
    assert maps[-1] > before["test"]["mAP"], (before["test"]["mAP"], maps)
