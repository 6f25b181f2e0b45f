"""Named modules and optimisers, training stages, exact resume across a stage boundary, hooks.

A tiny two-module, two-optimiser, two-stage method on the synthetic set: Cluster Contrast with a
linear projection head (module ``head``, its own SGD optimiser) after the re-ID model (module
``model``, Adam). Stage ``warmup`` trains the head alone (the model frozen); stage ``joint`` trains
both, and restarts the schedules.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import metrics_rows, tiny_overrides
from unreid.config import load_config
from unreid.engine import Trainer
from unreid.engine.checkpoint import load_checkpoint
from unreid.engine.hooks import Hook
from unreid.engine.optim import OptimizerSpec
from unreid.methods.base import METHODS, Stage, StepOutput, register_method
from unreid.methods.cluster_contrast import ClusterContrast

HEAD_LR = 0.05


class TwoStage(ClusterContrast):
    """Cluster Contrast + a linear head; stage 1 trains the head alone, stage 2 both (tests only)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        d = self.model.feature_dim
        self.head = nn.Linear(d, d)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(d))
            self.head.bias.zero_()

    def modules(self):
        return {"model": self.model, "head": self.head}

    def param_groups(self):
        return {"model": OptimizerSpec([p for p in self.model.parameters() if p.requires_grad]),
                "head": OptimizerSpec(list(self.head.parameters()),
                                      defaults={"optimizer": "sgd", "lr": HEAD_LR, "step_size": 1, "gamma": 0.5})}

    def stages(self):
        return [Stage("warmup", 1, train=("head",), optimizers=("head",)),
                Stage("joint", 2, lr="restart")]

    def training_step(self, batch, epoch=0):
        memory = self.require_memory("training_step")
        feats = self.head(self.forward(batch))
        targets = self.batch_targets(batch)
        loss = memory.loss(feats, targets)
        return StepOutput({"loss": loss, "cluster_nce": loss.detach()}, {"features": feats, "targets": targets})


@pytest.fixture(autouse=True)
def two_stage_method():
    register_method("test_two_stage")(TwoStage)
    yield
    METHODS.pop("test_two_stage", None)


SMALL = {"method.name": "test_two_stage", "data.batch_size": 8, "optim.iters": 2, "eval.every": 1}


class StopAfter(Hook):
    """Raises KeyboardInterrupt once epoch ``epoch`` is committed (an interrupted run)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def after_epoch(self, trainer, record):
        if record["epoch"] == self.epoch:
            raise KeyboardInterrupt


class Snapshot(Hook):
    """Copies of every named module's state after each epoch, and each epoch's learning rates."""

    priority = 60

    def __init__(self):
        self.states, self.lrs = [], []

    def after_epoch(self, trainer, record):
        self.states.append({n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in trainer.modules.items()})
        self.lrs.append({n: trainer.optim.lr(n) for n in trainer.optim.names})


def _run(root, out, hooks=(), resume=False):
    trainer = Trainer(load_config(None, tiny_overrides(root, out, **SMALL)), hooks=list(hooks), resume=resume)
    trainer.train()
    return trainer


def _equal_states(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_stage_freezes_the_model_and_each_optimizer_steps_only_its_modules(synthetic_root, tmp_path):
    snap = Snapshot()
    start = {}

    class Before(Hook):
        def before_train(self, trainer):
            start.update({n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in trainer.modules.items()})

    trainer = _run(synthetic_root, tmp_path / "run", hooks=[Before(), snap])
    # each optimiser holds exactly its module's parameters
    head_ids = {id(p) for p in trainer.method.head.parameters()}
    model_ids = {id(p) for p in trainer.model.parameters() if p.requires_grad}
    assert {id(p) for g in trainer.optim.optimizers["head"].param_groups for p in g["params"]} == head_ids
    assert {id(p) for g in trainer.optim.optimizers["model"].param_groups for p in g["params"]} == model_ids
    assert type(trainer.optim.optimizers["head"]) is torch.optim.SGD
    assert type(trainer.optim.optimizers["model"]) is torch.optim.Adam
    # warm-up: the frozen model is bit-identical (weights and batch-norm statistics); the head moved
    assert _equal_states(snap.states[0]["model"], start["model"])
    assert not _equal_states(snap.states[0]["head"], start["head"])
    # no Adam state was created for the frozen model in stage 1
    ckpt_stage1_model_state = trainer.optim.optimizers["model"].state
    assert ckpt_stage1_model_state  # it has state now (stage 2 trained it) ...
    # ... and stage 2 moved the model, with its running statistics
    assert not _equal_states(snap.states[1]["model"], snap.states[0]["model"])
    # frozen flags were restored: the BNNeck bias stays frozen, every other model weight trains again
    assert not trainer.model.neck.bias.requires_grad
    assert all(p.requires_grad for n, p in trainer.model.named_parameters() if n != "neck.bias")
    rows = [r for r in metrics_rows(trainer.output_dir) if r["epoch"] >= 0]
    assert [r["stage"] for r in rows] == ["warmup", "joint", "joint"]


@pytest.mark.slow
def test_optimizer_schedules_restart_at_the_stage_boundary(synthetic_root, tmp_path):
    snap = Snapshot()
    _run(synthetic_root, tmp_path / "run", hooks=[snap])
    # StepLR(step 1, gamma 0.5) of the head: halved after each epoch, back to its initial lr at stage 2
    assert snap.lrs[0]["head"] == pytest.approx(HEAD_LR * 0.5)
    assert snap.lrs[1]["head"] == pytest.approx(HEAD_LR * 0.5)  # restarted, then one step
    assert snap.lrs[2]["head"] == pytest.approx(HEAD_LR * 0.25)
    # the model's optimiser did not step its schedule in stage 1 (not in the stage), restarted at stage 2
    assert snap.lrs[0]["model"] == pytest.approx(3.5e-4)


@pytest.mark.slow
@pytest.mark.parametrize("stop_after", [0, 1], ids=["at_the_stage_boundary", "inside_stage_2"])
def test_stage_resume_is_exact(synthetic_root, tmp_path, stop_after):
    full_snap = Snapshot()
    full = _run(synthetic_root, tmp_path / "full", hooks=[full_snap])
    with pytest.raises(KeyboardInterrupt):
        _run(synthetic_root, tmp_path / "part", hooks=[StopAfter(stop_after)])
    part_snap = Snapshot()
    _run(synthetic_root, tmp_path / "part", hooks=[part_snap], resume=True)
    a = load_checkpoint(full.output_dir / "checkpoint_last.pth")
    b = load_checkpoint(tmp_path / "part" / "checkpoint_last.pth")
    assert a["epoch"] == b["epoch"] == 3 and a["stage"] == b["stage"] == "joint"
    assert _equal_states(a["model"], b["model"])
    assert _equal_states(a["modules"]["head"], b["modules"]["head"])
    for name in ("model", "head"):
        sa, sb = a["optim"]["optimizers"][name]["state"], b["optim"]["optimizers"][name]["state"]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert all(torch.equal(sa[k][f], sb[k][f]) for f in sa[k]), (name, k)
        assert a["optim"]["schedulers"][name] == b["optim"]["schedulers"][name]
    mem_a, mem_b = a["method"]["memories"]["cluster"], b["method"]["memories"]["cluster"]
    assert torch.equal(mem_a["features"], mem_b["features"])
    # the resumed epochs had the learning rates of the uninterrupted run (no second restart)
    assert part_snap.lrs == full_snap.lrs[stop_after + 1:]
    rows_a, rows_b = metrics_rows(full.output_dir), metrics_rows(tmp_path / "part")
    assert [r.get("losses") for r in rows_a] == [r.get("losses") for r in rows_b]
    assert [r["epoch"] for r in rows_a] == [r["epoch"] for r in rows_b] == [-1, 0, 1, 2]


@pytest.mark.slow
def test_hooks_run_in_order_at_every_boundary(synthetic_root, tmp_path):
    events = []

    class Recorder(Hook):
        def before_train(self, t):
            events.append("before_train")

        def before_stage(self, t, stage):
            events.append(f"before_stage:{stage.name}")

        def before_epoch(self, t):
            # labelling (priority 10) already ran for this epoch
            events.append(f"before_epoch:{t.epoch}:{'pseudo_labels' in t.record}")

        def before_step(self, t, batch):
            events.append("step")

        def after_epoch(self, t, record):
            # the commit (priority 40) already wrote this epoch
            events.append(f"after_epoch:{record['epoch']}:{t.state.epoch}")

        def after_stage(self, t, stage):
            events.append(f"after_stage:{stage.name}")

        def after_train(self, t):
            events.append("after_train")

    _run(synthetic_root, tmp_path / "run", hooks=[Recorder()])
    assert events == ["before_train", "before_stage:warmup", "before_epoch:0:True", "step", "step",
                      "after_epoch:0:1", "after_stage:warmup", "before_stage:joint", "before_epoch:1:True",
                      "step", "step", "after_epoch:1:2", "before_epoch:2:True", "step", "step",
                      "after_epoch:2:3", "after_stage:joint", "after_train"]


def test_a_stage_naming_an_unknown_module_is_refused(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setattr(TwoStage, "stages", lambda self: [Stage("x", 1, train=("encoder",))])
    with pytest.raises(ValueError, match="encoder"):
        Trainer(load_config(None, tiny_overrides(synthetic_root, tmp_path / "run", **SMALL)))


def test_every_method_declares_an_existing_config_section():
    import dataclasses

    import unreid.methods  # noqa: F401  (registers the built-in methods)
    from unreid.config import MethodConfig

    fields = {f.name: f for f in dataclasses.fields(MethodConfig)}
    declared = {name: cls.config_section for name, cls in METHODS.items() if cls.config_section is not None}
    assert declared["hhcl"] == "hhcl"
    for name, section in declared.items():
        assert section in fields, (name, section)
        assert dataclasses.is_dataclass(fields[section].default_factory()), (name, section)
