"""A run folder that always holds exactly one run (issue 29; docs/RELIABILITY.md).

A run's folder (``output_dir``) holds:

=====================  ========================================================================
``config.yaml``        the run's full config (written when the run starts, atomically)
``checkpoint_last.pth`` everything needed to continue, **and the run's metrics so far** (the commit)
``model_best.pth``     the selected model (``eval.select``); derived from a checkpoint
``metrics.jsonl``      one JSON record per epoch (and one before training); derived from a checkpoint
``train.log``          the log (appended; not part of the run's state)
``report.html``        the run report, rewritten from the files above (``unreid.engine.report``; not state)
``tensorboard/``       TensorBoard scalars with ``tensorboard`` installed (not part of the run's state)
=====================  ========================================================================

**One commit point per epoch.** :meth:`RunDir.commit` writes ``checkpoint_last.pth`` atomically with
the epoch's record inside it (the whole ``metrics.jsonl`` text so far), *then* ``model_best.pth``,
*then* appends the record to ``metrics.jsonl``. The checkpoint's rename is the commit: a process killed
before it leaves the previous epoch's state everywhere; killed after it, the folder may lag behind the
checkpoint, and :meth:`RunDir.restore` (every ``--resume``) repairs ``metrics.jsonl`` and
``model_best.pth`` from it. A kill inside an atomic write leaves a hidden ``.<name>.*.tmp`` file, removed
at the next start (:meth:`RunDir.prepare`).

**Starting.** :meth:`RunDir.prepare` runs first, before anything is written:

* a fresh start refuses a folder that holds a run (any of :data:`RUN_FILES`) unless ``overwrite``;
  ``overwrite`` *moves* the old run aside into ``<name>.replaced-<YYYYmmdd-HHMMSS>/`` next to it (nothing
  is deleted) before the new run writes anything;
* ``resume`` checks the config against the run's (the checkpoint's, else ``config.yaml`` when no epoch was
  completed yet) and refuses, naming every differing key, unless only keys of :data:`RESUME_MAY_DIFFER`
  differ. A run that never completed an epoch is resumed by starting it again from epoch 0 (same config,
  same seeds: what an uninterrupted run would have done).

The fault points (:func:`unreid.engine.checkpoint.fault_point`) name the places between two writes that
the tests kill the process at: ``checkpoint_tmp``, ``after_checkpoint``, ``after_best``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from unreid.config import Config, ConfigError, from_dict, load_config, to_dict, to_yaml
from unreid.engine.checkpoint import (
    CheckpointError,
    atomic_write_text,
    fault_point,
    fsync_dir,
    load_checkpoint,
    save_checkpoint,
)

log = logging.getLogger("unreid")

CHECKPOINT = "checkpoint_last.pth"
BEST = "model_best.pth"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
LOG = "train.log"
#: the files that make a folder "hold a run" (``train.log`` alone does not: a start that failed before
#: writing its config, e.g. on a wrong data.root, leaves only its log)
RUN_FILES = (CHECKPOINT, BEST, METRICS, CONFIG)

#: config keys that may differ when a run is resumed: they change where things are, how fast, how much is
#: logged or evaluated, or how long the run goes on, never what the completed epochs computed.
#: ``optim.epochs`` may grow (extend a run) but not fall below the epochs already completed;
#: ``pseudo_labels.on_no_clusters`` only decides what happens when an epoch finds no cluster (resume a
#: stopped run with ``keep``); ``eval.every`` does not change training (tests/test_trainer.py). Every
#: other difference is refused, naming the keys: the run would no longer be described by one config.
RESUME_MAY_DIFFER = frozenset({
    "optim.epochs", "method.gcl.joint_epochs",  # the length of the last stage: a run may be extended
    "output_dir", "name",
    "device", "data.root", "data.workers",
    "log_every", "eval.batch_size", "eval.every", "report", "report_ranklists", "tensorboard",
    "pseudo_labels.on_no_clusters",
    "dist.timeout_min", "dist.find_unused_parameters",
})


class RunMismatch(ConfigError):
    """``--resume`` with a config that differs from the run's in keys that may not change."""


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (dicts only; lists are values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(saved: dict[str, Any] | Config, cfg: Config) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved value, cfg value)}`` for every dotted key whose value differs.

    ``saved`` is a config dict as stored in a checkpoint (older checkpoints lacking newer keys get the
    defaults), or a :class:`Config`.
    """
    old = flatten(to_dict(saved if isinstance(saved, Config) else from_dict(saved)))
    new = flatten(to_dict(cfg))
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def format_differences(diffs: dict[str, tuple[Any, Any]], limit: int = 8) -> str:
    """``"model.backbone (run: 'resnet18', this config: 'resnet50'), ..."``; at most ``limit`` keys shown."""
    items = [f"{k} (run: {a!r}, this config: {b!r})" for k, (a, b) in list(diffs.items())[:limit]]
    if len(diffs) > limit:
        items.append(f"and {len(diffs) - limit} more")
    return ", ".join(items)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy arrays / scalars, torch tensors
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def record_line(record: dict[str, Any]) -> str:
    """One ``metrics.jsonl`` line (with its newline)."""
    return json.dumps(record, default=_json_default) + "\n"


class RunDir:
    """The folder of one run: start checks, the per-epoch commit, and repair on resume.

    Args:
        path: the run's folder (``Trainer.output_dir``).

    Attributes:
        metrics: the ``metrics.jsonl`` text this run has committed or written so far (what the next
            checkpoint stores).
        resume_from: the checkpoint :meth:`prepare` found to resume from, ``None`` for a run that starts
            at epoch 0.
        notes: what :meth:`prepare` did (e.g. where an old run was moved), for the log.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.metrics = ""
        self.resume_from: Path | None = None
        self.notes: list[str] = []
        self._saved_config: Config | None = None
        self._resuming = False

    # ------------------------------------------------------------------ state of the folder
    def run_files(self) -> list[str]:
        """The :data:`RUN_FILES` present in the folder."""
        return [n for n in RUN_FILES if (self.path / n).exists()]

    def remove_orphans(self) -> list[str]:
        """Delete temporary files a killed atomic write left (``.<run file>.*.tmp``); returns their names."""
        if not self.path.is_dir():
            return []
        gone = []
        for p in self.path.iterdir():
            if p.name.endswith(".tmp") and any(p.name.startswith(f".{n}.") for n in RUN_FILES) and p.is_file():
                p.unlink()
                gone.append(p.name)
        return sorted(gone)

    # ------------------------------------------------------------------ start
    def prepare(self, cfg: Config, resume: bool | str | Path = False, overwrite: bool = False) -> None:
        """Check the folder before the run writes anything; move an old run aside on ``overwrite``.

        Raises:
            FileExistsError: a fresh start in a folder holding a run, without ``overwrite``; or ``resume``
                from another file into a folder holding a different run.
            FileNotFoundError: ``resume`` and nothing to resume.
            RunMismatch: ``resume`` with a config differing in keys outside :data:`RESUME_MAY_DIFFER`.
            CheckpointError: the checkpoint to resume from cannot be read.
            ConfigError: ``resume`` together with ``overwrite``.
        """
        if resume and overwrite:
            raise ConfigError("--resume continues the run in the folder and --overwrite replaces it: choose one")
        present = self.run_files()
        if not resume:
            if present and not overwrite:
                what = ("it has not completed an epoch yet; --resume starts it again from epoch 0"
                        if CHECKPOINT not in present else "--resume continues it")
                raise FileExistsError(
                    f"{self.path} already holds a run ({', '.join(present)}): {what}, --overwrite moves it "
                    f"aside (into {self.path.name}.replaced-<date>/) and starts this one, or choose another "
                    f"output_dir=...")
            gone = self.remove_orphans()
            if gone:
                self.notes.append(f"removed {len(gone)} temporary file(s) of an interrupted write: {', '.join(gone)}")
            if present:
                backup = self.move_aside()
                self.notes.append(f"--overwrite: the previous run in {self.path} was moved to {backup}")
            return
        # --resume
        own = self.path / CHECKPOINT
        source = own if resume is True else Path(resume)
        if resume is not True and present and source.resolve() != own.resolve():
            raise FileExistsError(
                f"{self.path} holds another run ({', '.join(present)}); resuming from {source} into it would mix "
                "two runs: choose an empty output_dir=...")
        if source.is_file():
            saved = load_checkpoint(source, mmap=True)
            if "config" not in saved:
                raise CheckpointError(f"{source} holds no config: not a checkpoint written by `unreid train`")
            diffs = config_differences(saved["config"], cfg)
            done = int(saved.get("epoch", 0))
            self.resume_from = source
        elif resume is True and (self.path / CONFIG).is_file():
            # a run that never completed an epoch: its config.yaml is all there is to check against
            diffs = config_differences(load_config(self.path / CONFIG), cfg)
            done = 0
        else:
            raise FileNotFoundError(
                f"nothing to resume: checkpoint not found: {source}"
                + ("" if resume is not True else f" (and no {CONFIG} of a started run in {self.path}); "
                   "start the run without --resume"))
        refused = {k: v for k, v in diffs.items() if k not in RESUME_MAY_DIFFER}
        if refused:
            raise RunMismatch(
                f"refusing to resume {self.path}: this config differs from the run's in {format_differences(refused)}. "
                f"Resume with the run's own config ({self.path / CONFIG}); only "
                f"{', '.join(sorted(RESUME_MAY_DIFFER))} may change on resume. To train with this config, start a "
                "new run (another output_dir=..., or --overwrite to move this one aside)")
        if cfg.optim.epochs < done:
            raise RunMismatch(f"refusing to resume {self.path}: optim.epochs={cfg.optim.epochs} but the run has "
                              f"already completed {done} epochs")
        if diffs:
            self.notes.append(f"resuming with changed settings: {format_differences(diffs)}")
        gone = self.remove_orphans()
        if gone:
            self.notes.append(f"removed {len(gone)} temporary file(s) of an interrupted write: {', '.join(gone)}")
        self._resuming = True

    def move_aside(self) -> Path:
        """Move the folder's content into a new sibling ``<name>.replaced-<YYYYmmdd-HHMMSS>[-k]/``; returns it.

        The whole folder is renamed (one atomic step) and an empty one made in its place. When the folder is
        the working directory or holds it (renaming it would carry the working directory along), or the
        rename fails, every entry is moved one by one instead. Nothing is deleted.
        """
        base = self.path.resolve()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = base.with_name(f"{base.name}.replaced-{stamp}")
        k = 2
        while backup.exists():
            backup = base.with_name(f"{base.name}.replaced-{stamp}-{k}")
            k += 1
        cwd = Path.cwd().resolve()
        try:
            if cwd == base or base in cwd.parents:
                raise OSError("the working directory")
            os.rename(base, backup)
        except OSError:
            backup.mkdir()
            for p in sorted(base.iterdir()):
                os.rename(p, backup / p.name)
        base.mkdir(parents=True, exist_ok=True)
        fsync_dir(base.parent)
        return backup

    def start(self, cfg: Config) -> None:
        """Write ``config.yaml`` (atomically) once :meth:`prepare` passed; a run resumed without a checkpoint
        starts its ``metrics.jsonl`` again (its epoch -1 record is redone)."""
        self.path.mkdir(parents=True, exist_ok=True)
        text = to_yaml(cfg)
        cfg_file = self.path / CONFIG
        if not cfg_file.is_file() or cfg_file.read_text() != text:
            atomic_write_text(cfg_file, text)
        if self._resuming and self.resume_from is None and (self.path / METRICS).exists():
            atomic_write_text(self.path / METRICS, "")
            log.warning("no epoch of %s was completed: the run starts again from epoch 0 (%s restarted)",
                        self.path, METRICS)

    # ------------------------------------------------------------------ writing
    def append(self, record: dict[str, Any]) -> None:
        """Append a record that comes with no checkpoint (the evaluation before training)."""
        line = record_line(record)
        self._append_line(line)
        self.metrics += line

    def _append_line(self, line: str) -> None:
        with open(self.path / METRICS, "a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def commit(self, state: dict[str, Any], record: dict[str, Any] | None = None, best: bool = False) -> Path:
        """The end of an epoch: checkpoint (the commit, holding ``record``), best model, metrics line.

        Args:
            state: the checkpoint (``Trainer.save``); ``"metrics"`` (the ``metrics.jsonl`` text including
                ``record``) is added here.
            record: the epoch's record, or ``None`` (a checkpoint without a new record).
            best: also write ``model_best.pth`` (format, mode, config, epoch and model of ``state``).

        Returns the checkpoint's path.
        """
        line = record_line(record) if record is not None else ""
        path = save_checkpoint({**state, "metrics": self.metrics + line}, self.path / CHECKPOINT)
        fault_point("after_checkpoint")
        if best:
            save_checkpoint(best_model_state(state), self.path / BEST)
        fault_point("after_best")
        if line:
            self._append_line(line)
            self.metrics += line
        return path

    # ------------------------------------------------------------------ resume
    def restore(self, ckpt: dict[str, Any], path: str | Path) -> None:
        """Make the folder agree with checkpoint ``ckpt`` (read from ``path``) before training goes on.

        ``metrics.jsonl`` is rewritten from the records the checkpoint holds when it differs (a kill after
        the checkpoint's commit, a partly written line, or a folder the checkpoint was copied into);
        ``model_best.pth`` is rewritten from the checkpoint when the best epoch is the checkpoint's own and
        the file is missing, unreadable or of another epoch. Checkpoints of older versions hold no records:
        ``metrics.jsonl`` is then kept as it is.
        """
        text = ckpt.get("metrics")
        file = self.path / METRICS
        current = file.read_text() if file.is_file() else None
        if text is None:
            self.metrics = current or ""
            log.warning("%s holds no metrics records (written by an older version): %s kept as it is", path, METRICS)
        else:
            self.metrics = text
            if current != text:
                atomic_write_text(file, text)
                log.warning("%s repaired from %s: %d records (the file had %s)", METRICS, Path(path).name,
                            len(text.splitlines()), "none" if current is None else f"{len(current.splitlines())}")
        epoch, best_epoch = int(ckpt.get("epoch", 0)), int(ckpt.get("best_epoch", -1))
        if best_epoch < 0:
            return
        best = self.path / BEST
        if best_epoch == epoch - 1:
            try:
                ok = int(load_checkpoint(best, mmap=True).get("epoch", -1)) == epoch
            except (FileNotFoundError, CheckpointError):
                ok = False
            if not ok:
                save_checkpoint(best_model_state(ckpt), best)
                log.warning("%s (epoch %d) rewritten from %s", BEST, best_epoch, Path(path).name)
        elif not best.is_file():
            log.warning("%s of epoch %d is missing and cannot be rebuilt from %s (epoch %d)",
                        BEST, best_epoch, Path(path).name, epoch - 1)


def best_model_state(state: dict[str, Any]) -> dict[str, Any]:
    """What ``model_best.pth`` holds: format, mode, config, epoch and model weights of a checkpoint."""
    return {k: state[k] for k in ("format", "mode", "config", "epoch", "model") if k in state}


def count_unreadable(paths: Iterable[str]) -> int:
    """How many of ``paths`` were unreadable (a black image stood in) in this process so far."""
    from unreid.data.loader import unreadable_images

    bad = unreadable_images()
    return sum(1 for p in set(paths) if p in bad) if bad else 0
