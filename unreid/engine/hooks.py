"""Hooks around the training loop (after fast-reid's ``engine/hooks.py``; DESIGN.md, "engine/hooks.py").

The loop (:meth:`unreid.engine.trainer.Trainer.train`) is stages -> epochs -> steps; at each boundary it
calls every hook's method of that name, in ascending :attr:`Hook.priority` (ties in the order given)::

    before_train
      before_stage                              (once per stage entered, also when resuming inside it)
        before_epoch                            labelling (LabelHook)
          before_step / after_step              per optimisation step
        after_epoch                             LR step, evaluation, checkpoint + metrics record
      after_stage
    after_train

The built-in phases are hooks: :class:`LabelHook` (features -> pseudo-labels -> memories, the quality
report), :class:`LRSchedulerHook`, :class:`EvaluationHook` (test split, validation split, the
before-training evaluation) and :class:`CheckpointHook` (the epoch's commit: checkpoint, best model,
``metrics.jsonl``). After the commit, :class:`unreid.engine.report.ReportHook` and
:class:`~unreid.engine.report.TensorBoardHook` (priority 45; config keys ``report`` / ``tensorboard``)
write ``report.html`` and the TensorBoard scalars. A user hook subclasses :class:`Hook` (priority 50: after labelling, and after the
epoch's commit) and reads ``trainer.record``, the epoch's ``metrics.jsonl`` record.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unreid.engine.trainer import Trainer
    from unreid.methods.base import Stage

log = logging.getLogger("unreid")

#: the retrieval metrics of an evaluation, in the order they are logged (percentages)
METRIC_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")


class Hook:
    """Override any of these to act around the loop (fast-reid ``HookBase`` style).

    Attributes:
        priority: lower runs first at every boundary; built-ins: labelling 10, LR 20, evaluation 30,
            checkpoint 40, report / TensorBoard 45; user hooks default to 50, so their ``after_epoch`` sees the committed epoch
            (give a hook a priority below 40 to add to the record before it is written).
    """

    priority: int = 50

    def before_train(self, trainer: Trainer) -> None: ...
    def before_stage(self, trainer: Trainer, stage: Stage) -> None: ...
    def before_epoch(self, trainer: Trainer) -> None: ...
    def before_step(self, trainer: Trainer, batch: dict[str, Any]) -> None: ...
    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None: ...
    def after_epoch(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def after_stage(self, trainer: Trainer, stage: Stage) -> None: ...
    def after_train(self, trainer: Trainer) -> None: ...


class LabelHook(Hook):
    """Before each epoch of a stage with ``relabel``: features of the training set through the method
    (:meth:`~unreid.methods.Method.extract`), pseudo-labels (:meth:`~unreid.methods.Method.make_labels`),
    memories (:meth:`~unreid.methods.Method.build_memories`) and the quality report in ``record["pseudo_labels"]``
    (:meth:`unreid.engine.trainer.Trainer.refresh`)."""

    priority = 10

    def before_epoch(self, trainer: Trainer) -> None:
        if trainer.stage is None or trainer.stage.relabel:
            trainer.record["pseudo_labels"] = trainer.refresh(trainer.epoch)


class LRSchedulerHook(Hook):
    """After each epoch: one step of the schedulers of the stage's optimisers (none in a stage with
    ``step_lr=False``); ``record["lr"]`` is the
    first optimiser's learning rate after it (``record["lrs"]``: every optimiser's, when there are several)."""

    priority = 20

    def after_epoch(self, trainer: Trainer, record: dict[str, Any]) -> None:
        optim = trainer.optim
        if trainer.stage is None or trainer.stage.step_lr:
            optim.step_schedulers(trainer.stage.optimizers if trainer.stage is not None else None)
        record["lr"] = optim.lr()
        if len(optim.names) > 1:
            record["lrs"] = {n: optim.lr(n) for n in optim.names}


class EvaluationHook(Hook):
    """Evaluation on the test split every ``eval.every`` epochs and after the last (and on the validation
    split with ``eval.select=val``); before training too, on a fresh run. Not in a stage with
    ``evaluate=False``, but after the run's last epoch.

    Also keeps the **best test figure over all evaluations**, labelled ``test_selected`` in the records:
    what papers report (Cluster Contrast picks the best test mAP of its evaluations every 10 epochs,
    ``examples/cluster_contrast_train_usl.py``), logged so that results compare like for like with them.
    It is never used to choose ``model_best.pth`` (``eval.select``).
    """

    priority = 30

    def before_train(self, trainer: Trainer) -> None:
        if trainer.state.epoch == 0 and trainer.cfg.eval.every > 0:
            before = trainer.evaluate()
            if before:
                log.info("before training [%s]: %s%s", trainer.mode, fmt_metrics(before), fmt_groups(before))
                trainer.append_metrics({"epoch": -1, "mode": trainer.mode, "test": before})

    def after_epoch(self, trainer: Trainer, record: dict[str, Any]) -> None:
        cfg, epoch = trainer.cfg, trainer.epoch
        if trainer.stage is not None and not trainer.stage.evaluate and not trainer.is_last_epoch:
            return
        if (epoch + 1) % cfg.eval.every == 0 or trainer.is_last_epoch:
            record["test"] = trainer.evaluate()
            log.info("epoch %d [%s] test: %s%s", epoch, trainer.mode, fmt_metrics(record["test"]),
                     fmt_groups(record["test"]))
            if cfg.eval.select == "val":
                record["val"] = trainer.evaluate(trainer.val_query, trainer.val_gallery)
                log.info("epoch %d [%s] validation: %s", epoch, trainer.mode, fmt_metrics(record["val"]))
            score = record["test"].get("mAP")
            best = trainer.state.best_test
            if score is not None and (not best or score > best["mAP"]):
                trainer.state.best_test = {"epoch": epoch, **{k: v for k, v in record["test"].items()
                                                              if k in METRIC_KEYS}}
            if trainer.state.best_test:
                record["test_selected"] = dict(trainer.state.best_test)
                log.info("epoch %d [%s] best test so far (test-selected, as papers report; never used for "
                         "model_best): epoch %d, %s", epoch, trainer.mode, trainer.state.best_test["epoch"],
                         fmt_metrics(trainer.state.best_test))


class CheckpointHook(Hook):
    """The epoch's commit, last of all hooks: the epoch time, the epoch counter, the best-model choice
    (``eval.select``), then checkpoint, ``model_best.pth`` and the ``metrics.jsonl`` record
    (:meth:`unreid.engine.trainer.Trainer.commit_epoch`)."""

    priority = 40

    def after_epoch(self, trainer: Trainer, record: dict[str, Any]) -> None:
        record["time_epoch_s"] = round(time.time() - trainer.epoch_start, 2)
        trainer.state.epoch = trainer.epoch + 1
        trainer.commit_epoch(record, trainer.is_best(record))


def fmt_metrics(m: dict[str, float]) -> str:
    """``"mAP 12.3 rank1 45.6 ..."`` for a log line."""
    keys = [k for k in METRIC_KEYS if k in m]
    return " ".join(f"{k} {m[k]:.1f}" for k in keys)


def fmt_groups(m: dict[str, float]) -> str:
    """The per-group table (mean ± std over trials, :func:`unreid.evaluation.trials.format_groups`) of a
    multi-trial evaluation, on new lines; ``""`` for a single-split evaluation."""
    from unreid.evaluation.trials import format_groups

    table = format_groups(m)
    return "\n" + table if table else ""
