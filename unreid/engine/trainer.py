"""The epoch loop shared by every method.

Structure after fast-reid's ``engine/train_loop.py``: the loop is small; pseudo-label refresh,
evaluation, checkpointing and logging are phases around it, and users may add
:class:`Hook` objects (``before_epoch``, ``after_step``, ``after_epoch``).

Each epoch (DESIGN.md, "What the library is"):

1. extract L2-normalised features of the training set (test transform);
2. ``method.refresh``: pseudo-labels (or, in the supervised reference, the true labels) and
   memories; the trainer computes the pseudo-label quality report (ground truth is used *only*
   there, never handed to the method);
3. ``iters`` steps: P x K batches from ``method.sampler``, ``method.training_step``, backward,
   ``optimizer.step()``, then ``method.update_memory`` under ``no_grad``;
4. LR step, evaluation every ``eval.every`` epochs and after the last, an atomic checkpoint, one
   line in ``metrics.jsonl``.

``--resume`` restores model, optimiser, scheduler, method state (labels, memories), RNG states
and the epoch counter, so a resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unreid.config import Config, from_dict, to_dict
from unreid.data.datasets.base import ReIDData, Sample
from unreid.engine.checkpoint import load_checkpoint, rng_state, set_rng_state, to_tensors
from unreid.engine.rundir import RunDir, count_unreadable

log = logging.getLogger("unreid")

SUPERVISED_BANNER = "SUPERVISED REFERENCE: trains on GROUND-TRUTH identities (upper bound, not unsupervised)"


class TrainingStopped(RuntimeError):
    """Training cannot continue (e.g. pseudo-labelling produced no cluster and on_no_clusters=stop)."""


class Hook:
    """Override any of these to act around the loop (fast-reid ``HookBase`` style)."""

    def before_train(self, trainer: Trainer) -> None: ...
    def before_epoch(self, trainer: Trainer) -> None: ...
    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None: ...
    def after_epoch(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def after_train(self, trainer: Trainer) -> None: ...


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} requested but CUDA is not available; use device=cpu or auto")
    return dev


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CC: ``--seed 1``)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_data(cfg: Config) -> ReIDData:
    """Build the dataset named in ``cfg.data`` (synthetic options come from ``cfg.data.synthetic``)."""
    from dataclasses import asdict

    from unreid.data.datasets import build_dataset

    options = dict(cfg.data.options)
    if cfg.data.name == "synthetic":
        options = {**asdict(cfg.data.synthetic), **options}
    return build_dataset(cfg.data.name, cfg.data.root, **options)


def split_validation(train: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Hold out ``fraction`` of the training identities as a validation query / gallery split.

    Their labels are used only to *select* a checkpoint (``eval.select=val``); their images are
    removed from training. Query = the first image of each held-out id in each camera (Market
    style), gallery = the rest. Returns ``(train, val_query, val_gallery)``.
    """
    pids = sorted({s.pid for s in train})
    rng = np.random.default_rng(seed)
    n_val = max(2, int(round(fraction * len(pids))))
    held = set(rng.choice(pids, size=min(n_val, len(pids) - 1), replace=False).tolist())
    keep = [s for s in train if s.pid not in held]
    query, gallery, seen = [], [], set()
    for s in (s for s in train if s.pid in held):
        key = (s.pid, s.camid)
        (gallery if key in seen else query).append(s)
        seen.add(key)
    return keep, query, gallery


@dataclass
class TrainState:
    epoch: int = 0  #: epochs completed
    best_score: float = -math.inf
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Trains ``cfg.method.name`` on ``cfg.data`` and evaluates with ``cfg.eval``.

    Args:
        cfg: the run configuration (``unreid.config.Config``).
        data: an already-built dataset (else built from ``cfg.data``).
        hooks: extra :class:`Hook` objects.
        resume: continue from ``<output_dir>/checkpoint_last.pth`` (or the given path); the config must
            match the run's but for :data:`unreid.engine.rundir.RESUME_MAY_DIFFER`.
        overwrite: start this run in an output folder that holds another one, after moving that one aside
            (``<output_dir>.replaced-<date>/``). Without it, an existing run is never touched.

    Raises:
        FileExistsError: ``output_dir`` holds a previous run and neither ``resume`` nor ``overwrite``.
        unreid.engine.rundir.RunMismatch: ``resume`` with a config differing in other keys (named).
        ValueError: supervised mode on a dataset without training identities.
    """

    def __init__(
        self,
        cfg: Config,
        data: ReIDData | None = None,
        hooks: list[Hook] | None = None,
        resume: bool | str | Path = False,
        overwrite: bool = False,
    ) -> None:
        self.cfg = cfg
        self.supervised = bool(cfg.method.supervised)
        self.output_dir = self._output_dir(cfg)
        # --- run folder (unreid.engine.rundir): before anything is written, refuse a folder holding a run,
        # move it aside (--overwrite), or check this config against the run's (--resume)
        self.run = RunDir(self.output_dir)
        self.run.prepare(cfg, resume=resume, overwrite=overwrite)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._setup_logging()
        for note in self.run.notes:
            log.warning("%s", note)
        # --- end run folder
        if self.supervised:
            log.warning(SUPERVISED_BANNER)
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.hooks = list(hooks or [])
        self.state = TrainState()

        self.data = data if data is not None else load_data(cfg)
        log.info("\n%s", self.data.summary())
        train = list(self.data.train)
        self.val_query: list[Sample] = []
        self.val_gallery: list[Sample] = []
        if cfg.eval.select == "val":
            train, self.val_query, self.val_gallery = split_validation(train, cfg.eval.val_fraction, cfg.seed)
            log.info("validation split (checkpoint selection only): %d query / %d gallery images, "
                     "held out of training", len(self.val_query), len(self.val_gallery))
        self.train_samples = train
        gt = np.asarray([s.pid for s in train], dtype=np.int64)
        #: ground truth of the training set: for the quality REPORT only (or the supervised reference)
        self._gt_report = gt if (gt >= 0).all() else None
        if self.supervised and self._gt_report is None:
            raise ValueError(f"method.supervised=true needs training identities; {cfg.data.name!r} has none")
        hidden = [Sample(s.path, -1, s.camid, s.modality) for s in train]

        from unreid.data.loader import ImageCache, should_cache
        from unreid.methods import build_method
        from unreid.models import build_model

        size = (cfg.data.height, cfg.data.width)
        all_samples = train + self.val_query + self.val_gallery + list(self.data.query) + list(self.data.gallery)
        use_cache = cfg.data.cache_images
        if use_cache is None:
            use_cache = should_cache(len(all_samples), size, cfg.data.cache_max_mb)
        self.cache = None
        if use_cache:
            t0 = time.time()
            self.cache = ImageCache([s.path for s in all_samples], size)
            log.info("decoded %d images into memory in %.1fs (%d unreadable)", len(all_samples),
                     time.time() - t0, getattr(self.cache, "num_failed", 0))

        self.model = build_model(cfg.model).to(self.device)
        self.method = build_method(
            cfg, self.model, hidden,
            supervised_labels=gt if self.supervised else None,
            device=self.device,
        )
        self.method.image_cache = self.cache  # decoded once, shared with the method's image statistics
        params = [p for p in self.model.parameters() if p.requires_grad] + self.method.extra_parameters()
        o = cfg.optim
        if o.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                             nesterov=True)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=o.step_size, gamma=o.gamma)
        self.use_amp = bool(o.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

        self.run.start(cfg)  # config.yaml, atomically (unreid.engine.rundir)
        if self.run.resume_from is not None:
            self.load(self.run.resume_from)

    # ------------------------------------------------------------------ setup helpers
    @staticmethod
    def _output_dir(cfg: Config) -> Path:
        out = Path(cfg.output_dir)
        if cfg.method.supervised and "supervised" not in out.name.lower():
            out = out.with_name(out.name + "-SUPERVISED")
        return out

    def _setup_logging(self) -> None:
        log.setLevel(logging.INFO)
        for h in list(log.handlers):
            if getattr(h, "_unreid", False):
                log.removeHandler(h)
                h.close()
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
        fh = logging.FileHandler(self.output_dir / "train.log")
        fh.setFormatter(fmt)
        sh = logging.StreamHandler(sys.stdout)
        sh.setFormatter(fmt)
        for h in (fh, sh):
            h._unreid = True  # type: ignore[attr-defined]
            log.addHandler(h)
        log.propagate = False

    @property
    def mode(self) -> str:
        return "supervised" if self.supervised else "unsupervised"

    # ------------------------------------------------------------------ phases
    def extract(self, samples: list[Sample]) -> torch.Tensor:
        """L2-normalised features ``(N, d) float32`` on CPU of ``samples`` (test transform)."""
        return extract(self.model, samples, self.cfg, self.device, cache=self.cache, amp=self.use_amp)

    def refresh(self, epoch: int) -> dict[str, Any]:
        """Pseudo-label phase; returns the quality report (ground truth used only here, for reporting)."""
        from unreid.pseudo_labels import NoClustersError, cluster_report

        t0 = time.time()
        feats = self.extract(self.train_samples)
        t_extract = time.time() - t0
        try:
            labels = self.method.refresh(epoch, feats)
        except NoClustersError as err:
            keep = self.cfg.pseudo_labels.on_no_clusters == "keep"
            if keep and self.method.labels is not None:
                log.warning("epoch %d: %s; keeping the previous epoch's labels (on_no_clusters=keep)", epoch, err)
                labels = self.method.labels  # memories keep their momentum-updated state
            else:
                # --- no-clusters message (issue 29): suggest only what can help at this point
                if keep:
                    hint = "on_no_clusters=keep has no previous labels to reuse at the first labelling"
                elif self.method.labels is None:
                    hint = "on_no_clusters=keep would not help: there are no previous labels yet"
                else:
                    hint = ("or resume with pseudo_labels.on_no_clusters=keep to reuse the previous epoch's "
                            "labels")
                raise TrainingStopped(
                    f"epoch {epoch}: pseudo-labelling found no cluster ({err}). Nothing to train on: "
                    f"raise pseudo_labels.eps or lower pseudo_labels.min_samples; {hint}."
                ) from err
        # the clustering itself: outliers kept as singleton classes (pseudo_labels.outliers) count as outliers
        report = cluster_report(labels.cluster_labels, camids=self.method.camids, gt=self._gt_report)
        # method-specific extras (proxy counts, matching statistics) that the labeller put in its report
        report.update({k: v for k, v in labels.report.items() if k not in report and not k.startswith("time")})
        report["eps"] = labels.eps
        report["source"] = labels.source
        report["time_extract_s"] = round(t_extract, 2)
        report["time_label_s"] = round(time.time() - t0 - t_extract, 2)
        q = ", ".join(f"{k} {report[k]:.3f}" for k in ("nmi", "ari", "pairwise_precision", "pairwise_recall")
                      if report.get(k) is not None)
        proxies = f", {report['num_proxies']} camera proxies" if "num_proxies" in report else ""
        kept = " trained as singleton classes" if labels.num_singletons else ""
        log.info(
            "epoch %d [%s] pseudo-labels: %d clusters, %d outliers (%.1f%%)%s, cross-camera clusters %.1f%%%s%s",
            epoch, self.mode, report["num_clusters"], report["num_outliers"], 100 * report["outlier_ratio"], kept,
            100 * (report.get("cross_camera_ratio") or 0.0), proxies,
            f"; vs ground truth (report only): {q}" if q else "",
        )
        return report

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """``iters`` optimisation steps (one sampler pass when ``optim.iters == 0``)."""
        from tqdm import tqdm

        from unreid.data.loader import IterLoader, build_train_loader
        from unreid.models.camera_bn import camera_batch

        assert self.method.labels is not None
        sampler = self.method.sampler(self.method.labels, seed=self.cfg.seed * 1000 + epoch)
        loader = build_train_loader(self.method.train_set, sampler, self.cfg.data, cache=self.cache)
        if len(loader) == 0:
            raise TrainingStopped(
                f"epoch {epoch}: the sampler yields {len(sampler)} images from {self.method.labels.num_clusters} "
                f"clusters, less than one batch of {self.cfg.data.batch_size}; lower data.batch_size, or raise "
                "pseudo_labels.eps so that more samples are clustered")
        iters = self.cfg.optim.iters or len(loader)
        self.model.train()
        sums: dict[str, float] = {}
        bar = tqdm(IterLoader(loader, iters), total=iters, desc=f"epoch {epoch} [{self.mode}]",
                   disable=None, leave=False, mininterval=5)
        for step, batch in enumerate(bar):
            with torch.autocast(self.device.type, enabled=self.use_amp, dtype=torch.float16), \
                    camera_batch(self.model, batch["camid"] if self.cfg.model.camera_bn else None):
                out = self.method.step(batch, epoch)
            loss = out.losses["loss"]
            if not torch.isfinite(loss):
                raise TrainingStopped(f"epoch {epoch} step {step}: loss is {loss.item()}; lower optim.lr "
                                      "or disable optim.amp")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.cfg.optim.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            with torch.no_grad():
                self.method.after_step(batch, out.outputs)
            vals = {k: float(v.detach()) for k, v in out.losses.items()}
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v
            for h in self.hooks:
                h.after_step(self, vals)
            if (step + 1) % self.cfg.log_every == 0:
                bar.set_postfix(loss=f"{vals['loss']:.3f}")
                log.info("epoch %d [%d/%d] %s", epoch, step + 1, iters,
                         " ".join(f"{k} {v:.4f}" for k, v in vals.items()))
        return {k: v / iters for k, v in sums.items()}

    def evaluate(self, query: list[Sample] | None = None, gallery: list[Sample] | None = None) -> dict[str, float]:
        """Query/gallery evaluation with ``cfg.eval.protocol`` (percentages: mAP, mINP, rank1/5/10).

        Draws nothing from the run's random streams (:func:`unreid.rng.preserved_rng`), so a run trains
        the same model whatever ``eval.every`` is.
        """
        from unreid.rng import preserved_rng

        query = list(self.data.query) if query is None else query
        gallery = list(self.data.gallery) if gallery is None else gallery
        with preserved_rng(self.device):
            return evaluate_model(self.model, query, gallery, self.cfg, self.device, cache=self.cache,
                                  amp=self.use_amp)

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Run (or continue) training; returns the final record (last evaluation, best epoch)."""
        cfg = self.cfg
        for h in self.hooks:
            h.before_train(self)
        if self.state.epoch == 0 and cfg.eval.every > 0:
            before = self.evaluate()
            if before:
                log.info("before training [%s]: %s", self.mode, _fmt_metrics(before))
                self._append_metrics({"epoch": -1, "mode": self.mode, "test": before})
        t_start = time.time()
        record: dict[str, Any] = {}
        for epoch in range(self.state.epoch, cfg.optim.epochs):
            t0 = time.time()
            for h in self.hooks:
                h.before_epoch(self)
            report = self.refresh(epoch)
            losses = self.train_epoch(epoch)
            self.scheduler.step()
            record = {"epoch": epoch, "mode": self.mode, "lr": self.optimizer.param_groups[0]["lr"],
                      "losses": losses, "pseudo_labels": report}
            last = epoch + 1 == cfg.optim.epochs
            if (epoch + 1) % cfg.eval.every == 0 or last:
                record["test"] = self.evaluate()
                log.info("epoch %d [%s] test: %s", epoch, self.mode, _fmt_metrics(record["test"]))
                if cfg.eval.select == "val":
                    record["val"] = self.evaluate(self.val_query, self.val_gallery)
                    log.info("epoch %d [%s] validation: %s", epoch, self.mode, _fmt_metrics(record["val"]))
            record["time_epoch_s"] = round(time.time() - t0, 2)
            self.state.epoch = epoch + 1
            is_best = self._is_best(record, last)
            self.save(is_best, record)  # the epoch's one commit: checkpoint (with record), best model, metrics
            for h in self.hooks:
                h.after_epoch(self, record)
            log.info("epoch %d [%s] done in %.1fs: %s", epoch, self.mode, record["time_epoch_s"],
                     " ".join(f"{k} {v:.4f}" for k, v in losses.items()))
        for h in self.hooks:
            h.after_train(self)
        log.info("training [%s] finished in %.1f min; best checkpoint (selected by %s): epoch %d -> %s",
                 self.mode, (time.time() - t_start) / 60, cfg.eval.select, self.state.best_epoch,
                 self.output_dir / "model_best.pth")
        return record

    def _is_best(self, record: dict[str, Any], last: bool) -> bool:
        if self.cfg.eval.select == "last":
            ok = last
        else:
            score = record.get("val", {}).get("mAP")
            ok = score is not None and score > self.state.best_score
            if ok:
                self.state.best_score = float(score)
        if ok:
            self.state.best_epoch = record["epoch"]
        return ok

    def _append_metrics(self, record: dict[str, Any]) -> None:
        """A record that comes without a checkpoint (before training); epochs go through :meth:`save`."""
        record["unreadable_images"] = self._count_unreadable()
        self.run.append(record)

    def _count_unreadable(self) -> int:
        samples = self.train_samples + self.val_query + self.val_gallery + list(self.data.query) + list(self.data.gallery)
        return count_unreadable(s.path for s in samples)

    # ------------------------------------------------------------------ checkpoints
    def save(self, is_best: bool = False, record: dict[str, Any] | None = None) -> Path:
        """Commit the epoch (:meth:`unreid.engine.rundir.RunDir.commit`): ``checkpoint_last.pth`` holding
        ``record`` too, then ``model_best.pth`` when ``is_best``, then ``record`` in ``metrics.jsonl``."""
        if record is not None:
            record["unreadable_images"] = self._count_unreadable()
        state = {
            "format": "unreid-checkpoint-1",
            "mode": self.mode,
            "config": to_dict(self.cfg),
            "epoch": self.state.epoch,
            "best_score": self.state.best_score,
            "best_epoch": self.state.best_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "method": to_tensors(self.method.state_dict()),
            "rng": rng_state(),
        }
        return self.run.commit(state, record, best=is_best)

    def load(self, path: Path) -> None:
        """Restore everything :meth:`save` wrote (exact resume); the folder's ``metrics.jsonl`` and
        ``model_best.pth`` are repaired from the checkpoint where they lag behind it."""
        ckpt = load_checkpoint(path)
        saved_mode = ckpt.get("mode")
        if saved_mode != self.mode:
            raise ValueError(f"{path} is a {saved_mode} run; this config is {self.mode}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.method.load_state_dict(ckpt["method"])
        set_rng_state(ckpt["rng"])
        self.state.epoch = int(ckpt["epoch"])
        self.state.best_score = float(ckpt["best_score"])
        self.state.best_epoch = int(ckpt["best_epoch"])
        self.run.restore(ckpt, path)
        log.info("resumed from %s after epoch %d", path, self.state.epoch - 1)


def extract(model: nn.Module, samples: list[Sample], cfg: Config, device: torch.device,
            cache: Any = None, amp: bool = False) -> torch.Tensor:
    """L2-normalised features ``(N, d) float32`` on CPU of ``samples``, with the test transform of ``cfg.data``.

    A model with camera BN layers (``model.camera_bn``) embeds each camera's images with statistics
    re-estimated from that camera's images in ``samples`` (at most ``model.camera_bn_images`` of them):
    see :mod:`unreid.models.camera_bn`. The model's own statistics are restored afterwards.
    """
    from unreid.data.loader import build_test_loader
    from unreid.evaluation.features import extract_features
    from unreid.models.camera_bn import camera_bn_layers, camera_statistics, estimate_statistics

    def loader(rows: list[Sample]):
        return build_test_loader(rows, cfg.data, cache=cache, batch_size=cfg.eval.batch_size)

    if not camera_bn_layers(model):
        return extract_features(model, loader(samples), device, amp=amp)
    camids = np.asarray([s.camid for s in samples])
    rng = np.random.default_rng(cfg.seed)
    cap = int(cfg.model.camera_bn_images)
    out: torch.Tensor | None = None
    for c in np.unique(camids):
        idx = np.flatnonzero(camids == c)
        stat = idx if len(idx) <= cap else np.sort(rng.choice(idx, cap, replace=False))
        with camera_statistics(model):
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
                n = estimate_statistics(model, (b["img"].to(device) for b in loader([samples[i] for i in stat])),
                                         seed=cfg.seed)
            if n == 0:
                log.warning("camera BN: camera %s has %d image(s) in this set, too few for statistics; its "
                            "features use the model's running statistics", c, len(idx))
            f = extract_features(model, loader([samples[i] for i in idx]), device, amp=amp)
        if out is None:
            out = torch.zeros(len(samples), f.shape[1], dtype=torch.float32)
        out[torch.as_tensor(idx)] = f
    assert out is not None
    return out


def evaluate_model(model: nn.Module, query: list[Sample], gallery: list[Sample], cfg: Config,
                   device: torch.device, cache: Any = None, amp: bool = False) -> dict[str, float]:
    """Evaluate ``model`` with ``cfg.eval.protocol`` (and ``cfg.eval.rerank``).

    Returns percentages ``mAP, mINP, rank1, rank5, rank10`` plus ``num_valid_queries`` and
    ``time_s``; an empty dict when ``query`` or ``gallery`` is empty.
    """
    from unreid.evaluation.protocols import PROTOCOLS

    if not query or not gallery:
        return {}
    t0 = time.time()
    # One pass over query + gallery: with camera BN, each camera's statistics come from its query and
    # gallery images together (Zhuang et al. 2020; at most model.camera_bn_images of them, see extract);
    # for a plain model this is the same as two passes.
    feats = extract(model, list(query) + list(gallery), cfg, device, cache, amp)
    qf, gf = feats[:len(query)], feats[len(query):]
    res = PROTOCOLS[cfg.eval.protocol](qf, gf, query, gallery, rerank=cfg.eval.rerank)
    res = {k: float(v) for k, v in res.items() if isinstance(v, (int, float))}
    res["time_s"] = round(time.time() - t0, 2)
    return res


def load_model_from_checkpoint(path: str | Path, cfg: Config | None = None) -> tuple[nn.Module, Config]:
    """Build the model a checkpoint was trained with and load its weights (``weights_only=True``).

    Returns ``(model, config)``; ``cfg`` overrides the saved config when given.
    """
    from unreid.models import build_model

    ckpt = load_checkpoint(path)
    if cfg is None:
        cfg = from_dict(ckpt["config"])
    # The checkpoint supplies every weight: skip ImageNet / model.weights loading (offline-safe).
    model = build_model(cfg.model, init_weights=False)
    model.load_state_dict(ckpt["model"])
    return model, cfg


def _fmt_metrics(m: dict[str, float]) -> str:
    keys = [k for k in ("mAP", "rank1", "rank5", "rank10", "mINP") if k in m]
    return " ".join(f"{k} {m[k]:.1f}" for k in keys)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")
