"""Outliers kept as singleton classes (pseudo_labels.outliers=singleton, SpCL's un-clustered instances)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import metrics_rows, tiny_overrides
from unreid.config import load_config
from unreid.engine import Trainer
from unreid.engine.checkpoint import load_checkpoint
from unreid.pseudo_labels.base import PseudoLabels


def test_with_singletons_by_hand():
    pl = PseudoLabels(np.array([1, -1, 0, -1, 1, -1]), 2, report={"x": 1}, eps=0.6)
    s = pl.with_singletons()
    assert s.labels.tolist() == [1, 2, 0, 3, 1, 4]  # outliers in dataset order get 2, 3, 4
    assert (s.num_clusters, s.num_singletons, s.num_outliers) == (5, 3, 0)
    assert s.cluster_labels.tolist() == [1, -1, 0, -1, 1, -1]  # the clustering itself
    assert s.report == {"x": 1, "num_singletons": 3} and s.eps == 0.6
    assert pl.labels.tolist() == [1, -1, 0, -1, 1, -1]  # the original is untouched
    assert PseudoLabels(np.array([0, 0]), 1).with_singletons().num_singletons == 0
    with pytest.raises(ValueError, match="num_singletons"):
        PseudoLabels(np.array([0, 1]), 2, num_singletons=3)


@pytest.mark.slow
def test_singleton_run_trains_on_every_sample_and_reports_the_clustering(synthetic_root, tmp_path):
    extra = {"optim.epochs": 2, "pseudo_labels.outliers": "singleton", "pseudo_labels.eps": 0.4}
    full = tmp_path / "full"
    trainer = Trainer(load_config(None, tiny_overrides(synthetic_root, full, **extra)))
    batches: list[torch.Tensor] = []
    step = trainer.method.training_step
    trainer.method.training_step = lambda batch, epoch=0: (batches.append(batch["index"].clone()), step(batch, epoch))[1]
    trainer.train()
    labels = trainer.method.labels
    assert labels.num_outliers == 0 and labels.num_singletons > 0
    # the singletons are trained on: the last epoch's batches hold samples DBSCAN left out, with their
    # own class ids (>= the number of clusters)
    last = torch.cat(batches[-trainer.cfg.optim.iters:]).numpy()
    singles = last[labels.cluster_labels[last] < 0]
    assert len(singles) > 0 and (labels.labels[singles] >= labels.num_clusters - labels.num_singletons).all()
    assert trainer.method.memory.features.shape[0] == labels.num_clusters  # one memory row per class
    rows = [r for r in metrics_rows(full) if "pseudo_labels" in r]
    last = rows[-1]["pseudo_labels"]
    # the report is on the clustering: the singletons count as outliers there, not as clusters
    assert last["num_outliers"] == last["num_singletons"] == labels.num_singletons
    assert last["num_clusters"] == labels.num_clusters - labels.num_singletons

    part = tmp_path / "part"  # resume keeps the singletons
    Trainer(load_config(None, tiny_overrides(synthetic_root, part, **{**extra, "optim.epochs": 1}))).train()
    Trainer(load_config(None, tiny_overrides(synthetic_root, part, **extra)), resume=True).train()
    a, b = load_checkpoint(full / "checkpoint_last.pth"), load_checkpoint(part / "checkpoint_last.pth")
    assert a["method"]["num_singletons"] == b["method"]["num_singletons"] == labels.num_singletons
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
