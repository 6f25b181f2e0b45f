"""MBCCM on the engine (unreid.methods.mbccm): batches laid out visible-then-infrared with two visible views,
the two stages (losses, sampler pairing), memory updates, the modality routing of extraction, and an exact
resume across the stage boundary, on a tiny RegDB-layout tree built from the synthetic generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import metrics_rows, tiny_overrides
from unreid.config import ConfigError, load_config
from unreid.data.datasets import build_dataset
from unreid.data.datasets.base import Sample
from unreid.engine import Trainer
from unreid.engine.checkpoint import load_checkpoint
from unreid.evaluation.features import extract_features
from unreid.methods import MBCCM, METHODS


def _regdb_tree(root: Path, synthetic_root) -> Path:
    """RegDB layout (idx/{train,test}_{visible,thermal}_1.txt) from the synthetic set: camera 0 = visible,
    camera 1 = thermal; 10 training ids, 4 test ids."""
    syn = build_dataset("synthetic", str(synthetic_root), num_ids=10, num_test_ids=4, num_cameras=2,
                        images_per_id_cam=4, height=64, width=32)
    rg = root / "RegDB"
    (rg / "idx").mkdir(parents=True)
    split = {"train": syn.train, "test": syn.query + syn.gallery}
    for name, samples in split.items():
        for cam, modality in ((0, "visible"), (1, "thermal")):
            rows = []
            for s in samples:
                if s.camid != cam:
                    continue
                rel = f"{modality.capitalize()}/{Path(s.path).name}"
                (rg / rel).parent.mkdir(exist_ok=True)
                if not (rg / rel).exists():
                    (rg / rel).symlink_to(s.path)
                pid = int(Path(s.path).name.split("_")[0])
                rows.append(f"{rel} {pid}\n")
            (rg / "idx" / f"{name}_{modality}_1.txt").write_text("".join(rows))
    return rg


def _overrides(rg: Path, out: Path, synthetic_root, **extra) -> list[str]:
    o = {"method.name": "mbccm", "data.name": "regdb", "data.root": str(rg), "eval.protocol": "regdb",
         "pseudo_labels.group_by": "modality", "pseudo_labels.association": "matches",
         "pseudo_labels.min_samples": 2, "method.mbccm.clusters_per_step": 2, "data.num_instances": 2,
         "data.batch_size": 8, "method.mbccm.stage1_epochs": 1, "optim.epochs": 2, "optim.iters": 2}
    o.update(extra)
    return tiny_overrides(synthetic_root, out, **o)


def test_mbccm_needs_modality_grouping(synthetic_root, tmp_path):
    cfg = load_config(None, tiny_overrides(synthetic_root, tmp_path / "x", **{"method.name": "mbccm"}))
    assert METHODS["mbccm"] is MBCCM
    with pytest.raises(ConfigError, match="group_by=modality"):
        MBCCM(cfg, nn.Linear(2, 2), [Sample("a.jpg", -1, 0)])


def test_extraction_passes_each_images_modality_to_a_two_stream_model(synthetic_root, tmp_path):
    class Spy(nn.Module):
        def forward(self, x, camids=None, modalities=None):
            return torch.nn.functional.one_hot(modalities, 2).float() + 0 * x.flatten(1)[:, :2]

    rg = _regdb_tree(tmp_path, synthetic_root)
    data = build_dataset("regdb", str(rg))
    from unreid.config import DataConfig
    from unreid.data.loader import build_test_loader

    cfg = DataConfig(height=16, width=8, workers=0)
    feats = extract_features(Spy(), build_test_loader(data.train, cfg, batch_size=7), "cpu")
    assert feats.argmax(1).tolist() == [s.modality for s in data.train]


@pytest.mark.slow
def test_two_stages_train_and_resume_exactly(synthetic_root, tmp_path):
    rg = _regdb_tree(tmp_path, synthetic_root)
    full, cut = tmp_path / "full", tmp_path / "cut"
    Trainer(load_config(None, _overrides(rg, full, synthetic_root))).train()
    rows = metrics_rows(full)
    assert [r.get("stage") for r in rows[-2:]] == ["modality_specific", "cross_modality"]
    assert "cc" not in rows[-2]["losses"] and {"ms", "ma_visible", "ma_infrared", "cc"} <= set(rows[-1]["losses"])
    assert rows[-1]["pseudo_labels"]["matched_pairs"] > 0
    assert 0.0 <= rows[-1]["pseudo_labels"]["match_precision"] <= 1.0  # vs the true identities, report only
    Trainer(load_config(None, _overrides(rg, cut, synthetic_root, **{"optim.epochs": 1}))).train()
    Trainer(load_config(None, _overrides(rg, cut, synthetic_root)), resume=True).train()
    a, b = load_checkpoint(full / "checkpoint_last.pth"), load_checkpoint(cut / "checkpoint_last.pth")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for k, v in a["method"]["memories"]["modality_clusters"].items():
        assert torch.equal(v, b["method"]["memories"]["modality_clusters"][k]), k
    assert metrics_rows(cut)[-1]["losses"] == rows[-1]["losses"]


def test_training_step_layout_and_updates(synthetic_root, tmp_path):
    rg = _regdb_tree(tmp_path, synthetic_root)
    trainer = Trainer(load_config(None, _overrides(rg, tmp_path / "run", synthetic_root)))
    trainer.enter_stage(1, fresh=True)  # the cross-modality stage
    trainer.refresh(0)
    method = trainer.method
    labels = method.labels
    sampler = method.sampler(labels, seed=3)
    idx = np.asarray(list(iter(sampler)))[:8]
    assert (method.modalities[idx[:4]] == 0).all() and (method.modalities[idx[4:]] == 1).all()
    from unreid.data.loader import build_train_loader

    loader = build_train_loader(method.train_set, sampler, trainer.cfg.data, transform=method.train_transform(),
                                batch_size=method.train_batch_size())
    batch = next(iter(loader))
    assert batch["img"].shape == batch["img2"].shape and batch["img"].shape[0] == 8
    assert not torch.equal(batch["img"], batch["img2"])  # two independent augmentations
    out = method.step(batch)
    assert {"ms", "ma_visible", "ma_infrared", "cc"} <= set(out.losses)
    mem = method.memories["modality_clusters"]
    before = {k: v.clone() for k, v in mem.banks.items()}
    method.after_step(batch, {k: v.detach() if torch.is_tensor(v) else v for k, v in out.outputs.items()})
    for k in before:  # stage 2 moves all four memories
        assert not torch.equal(before[k], mem.banks[k]), k
    bad = dict(batch, modality=batch["modality"].flip(0))
    with pytest.raises(RuntimeError, match="visible images then"):
        method.training_step(bad)


def test_published_configs_carry_the_public_codes_values():
    root = Path(__file__).resolve().parents[1] / "configs" / "mbccm"
    for name, eps, iters, protocol in (("sysu_mm01", 0.6, 300, "sysu"), ("regdb", 0.3, 100, "regdb")):
        c = load_config(root / f"{name}.yaml")
        assert (c.method.name, c.model.arch, c.model.backbone, c.model.gem_trainable) == (
            "mbccm", "two_stream", "resnet50", False)
        assert (c.data.height, c.data.width, c.data.num_instances, c.data.batch_size) == (288, 144, 12, 288)
        assert (c.pseudo_labels.group_by, c.pseudo_labels.association, c.pseudo_labels.eps, c.pseudo_labels.k1,
                c.pseudo_labels.k2, c.pseudo_labels.min_samples) == ("modality", "matches", eps, 30, 6, 4)
        m = c.method.mbccm
        assert (m.stage1_epochs, m.alpha, m.beta, m.cross_momentum, m.clusters_per_step) == (40, 0.9, 0.5, 0.1, 12)
        assert (c.optim.lr, c.optim.epochs, c.optim.milestones, c.optim.iters, c.optim.amp) == (
            3.5e-4, 80, [20, 50, 70], iters, False)
        assert c.eval.protocol == protocol and c.data.name == name
    cpu = load_config(root / "vi_sim_cuhk03_cpu.yaml")
    assert cpu.data.batch_size == 2 * cpu.method.mbccm.clusters_per_step * cpu.data.num_instances
