"""The training loop shared by every method: stages -> epochs -> steps, with hooks.

Structure after fast-reid's ``engine/train_loop.py``: the loop is small, and the phases around it are
hooks (:mod:`unreid.engine.hooks`): labelling before each epoch, the learning-rate step, evaluation and
the epoch's commit (checkpoint, best model, one ``metrics.jsonl`` record) after it. Users add their own
:class:`~unreid.engine.hooks.Hook` objects.

Each epoch (DESIGN.md, "What the library is"):

1. the method extracts features of the training set (:meth:`~unreid.methods.Method.extract`, test
   transform), makes this epoch's labels (:meth:`~unreid.methods.Method.make_labels`: pseudo-labels, or
   the true labels in the supervised reference) and rebuilds its memories
   (:meth:`~unreid.methods.Method.build_memories`); the trainer computes the pseudo-label quality report
   (ground truth is used *only* there, never handed to the method);
2. ``iters`` steps: P x K batches from ``method.sampler``, ``method.step`` (losses),
   ``method.optimize_step`` (backward and the stage's optimisers, :mod:`unreid.engine.optim`), then
   ``method.after_step`` (memory updates) under ``no_grad``;
3. LR step, evaluation every ``eval.every`` epochs and after the last, an atomic checkpoint, one
   line in ``metrics.jsonl``.

A method may declare several stages (:class:`~unreid.methods.base.Stage`): which modules train (the
others are frozen), which optimisers step, the sampler, whether the schedules restart. ``--resume``
restores every named module, optimiser, scheduler, the scaler, the method's labels and memories, the
RNG states and the epoch counter, so a resumed run continues exactly as an uninterrupted one would,
also across a stage boundary.

Under ``torchrun`` (docs/DISTRIBUTED.md; :mod:`unreid.engine.dist`) the same loop runs in every process:
``data.batch_size`` is the global batch, each rank trains on its contiguous share through DDP, features
are extracted in shards and gathered, labels are made on rank 0 and broadcast, each step's per-sample
tensors are gathered before the memory updates, and only rank 0 writes the run folder and logs.
Without a process group every one of these is a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unreid.config import Config, ConfigError, from_dict, to_dict
from unreid.data.datasets.base import ReIDData, Sample, Trial
from unreid.engine import dist
from unreid.engine.checkpoint import load_checkpoint, rng_state, set_rng_state, to_tensors
from unreid.engine.hooks import CheckpointHook, EvaluationHook, Hook, LabelHook, LRSchedulerHook
from unreid.engine.optim import Optimizers
from unreid.engine.rundir import RunDir, count_unreadable

log = logging.getLogger("unreid")

#: written into every checkpoint; :meth:`Trainer.load` also reads "unreid-checkpoint-1" (one optimiser)
CHECKPOINT_FORMAT = "unreid-checkpoint-2"
#: the first keys of a metrics.jsonl record, in this order (then any other key a hook added)
RECORD_ORDER = ("epoch", "stage", "mode", "lr", "lrs", "losses", "pseudo_labels", "test", "val", "test_selected",
                "time_epoch_s")

SUPERVISED_BANNER = "SUPERVISED REFERENCE: trains on GROUND-TRUTH identities (upper bound, not unsupervised)"


class TrainingStopped(RuntimeError):
    """Training cannot continue (e.g. pseudo-labelling produced no cluster and on_no_clusters=stop)."""


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
    #: the best test evaluation so far (``{"epoch", "mAP", "rank1", ...}``): test-selected, report only
    best_test: dict[str, Any] = field(default_factory=dict)


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
        from unreid.engine.report import report_hooks

        self.cfg = cfg
        #: report.html / TensorBoard (unreid.engine.report), from cfg.report / cfg.tensorboard; checked first
        self.report_hooks = report_hooks(cfg)
        self.supervised = bool(cfg.method.supervised)
        self.output_dir = self._output_dir(cfg)
        # --- processes (torchrun): a no-op in a single process
        dist.setup(cfg.device, cfg.dist.timeout_min)
        self.world_size = dist.world_size()
        if cfg.data.batch_size % self.world_size:
            raise ConfigError(f"data.batch_size={cfg.data.batch_size} (the global batch) is not divisible by the "
                              f"{self.world_size} processes; choose a multiple of the process count")
        #: images per process and step (``data.batch_size`` is the global batch)
        self.local_batch = cfg.data.batch_size // self.world_size
        # --- run folder (unreid.engine.rundir): before anything is written, refuse a folder holding a run,
        # move it aside (--overwrite), or check this config against the run's (--resume); rank 0 only
        self.run = RunDir(self.output_dir)

        def prepare() -> Path | None:
            self.run.prepare(cfg, resume=resume, overwrite=overwrite)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            return self.run.resume_from

        self.run.resume_from = dist.run_on_main(prepare)
        self._setup_logging()
        for note in self.run.notes:
            log.warning("%s", note)
        # --- end run folder
        if self.supervised:
            log.warning(SUPERVISED_BANNER)
        seed_everything(cfg.seed)
        self.device = dist.rank_device(resolve_device(cfg.device))
        if dist.is_dist():
            log.info("distributed: %d processes (backend %s), global batch %d = %d per process, batch norm %s%s",
                     self.world_size, torch.distributed.get_backend(), cfg.data.batch_size, self.local_batch,
                     cfg.dist.batch_norm, f", groups of {cfg.dist.bn_group_size}" if cfg.dist.bn_group_size else "")
            if self.local_batch % cfg.data.num_instances:
                log.warning("the %d images per process are not a multiple of data.num_instances=%d: a pseudo-identity's "
                            "images may be split between two processes (as nn.DataParallel would split them)",
                            self.local_batch, cfg.data.num_instances)
        self.user_hooks = list(hooks or [])
        self.state = TrainState()

        if data is None:
            # DDP: rank 0 reads (or generates: the synthetic set) the data first; its error reaches every rank
            first: dict[str, ReIDData] = {}

            def load_first() -> None:
                first["data"] = load_data(cfg)

            dist.run_on_main(load_first)
            data = first["data"] if "data" in first else load_data(cfg)
        self.data = data
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
        if self.data.trials:  # multi-trial protocols: every trial's images, once each
            from unreid.evaluation.trials import union_samples

            seen = {s.path for s in all_samples}
            all_samples += [s for s in union_samples(self.data.trials)[0] if s.path not in seen]
        #: every image the run reads (training, validation, query, gallery): the unreadable-image count
        self._all_paths = [s.path for s in all_samples]
        use_cache = cfg.data.cache_images
        if use_cache is None:
            use_cache = should_cache(len(all_samples), size, cfg.data.cache_max_mb)
        self.cache = None
        if use_cache:
            t0 = time.time()
            self.cache = ImageCache(self._all_paths, size)
            log.info("decoded %d images into memory in %.1fs (%d unreadable)", len(all_samples),
                     time.time() - t0, getattr(self.cache, "num_failed", 0))

        from unreid.models.batch_norm import apply_batch_norm

        self.model = build_model(cfg.model)
        try:
            apply_batch_norm(self.model, cfg.dist.batch_norm, cfg.dist.bn_group_size, dist.is_dist(), self.device)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if cfg.dist.bn_group_size and self.local_batch % cfg.dist.bn_group_size:
            raise ConfigError(f"dist.bn_group_size={cfg.dist.bn_group_size} does not divide the {self.local_batch} "
                              "images each process trains on (data.batch_size / processes)")
        self.model = self.model.to(self.device)
        self.method = build_method(
            cfg, self.model, hidden,
            supervised_labels=gt if self.supervised else None,
            device=self.device,
        )
        self.method.image_cache = self.cache  # decoded once, shared with the method's image statistics
        self.modules = self.method.modules()
        for module in self.modules.values():
            module.to(self.device)
        #: each parameter's own requires_grad, restored when a stage unfreezes its module
        self._trainable = {id(p): p.requires_grad for m in self.modules.values() for p in m.parameters()}
        self.use_amp = bool(cfg.optim.amp and self.device.type == "cuda")
        self.optim = Optimizers(self.method.param_groups(), cfg.optim, use_amp=self.use_amp)
        self.stages = self.method.stages()
        if not self.stages:
            raise ValueError(f"method {cfg.method.name!r} declares no training stage")
        names = [st.name for st in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"method {cfg.method.name!r} declares stages with the same name: {names}")
        for st in self.stages:
            for kind, chosen, known in (("module", st.train, self.modules), ("optimiser", st.optimizers,
                                                                               self.optim.optimizers)):
                missing = [n for n in (chosen or ()) if n not in known]
                if missing:
                    raise ValueError(f"stage {st.name!r} names {kind}(s) {missing}; the method has {sorted(known)}")
        self.total_epochs = sum(st.epochs for st in self.stages)
        self.stage = None
        self.epoch = 0
        self.record: dict[str, Any] = {}
        self.epoch_start = time.time()
        self.hooks = sorted([LabelHook(), LRSchedulerHook(), EvaluationHook(), CheckpointHook(), *self.report_hooks,
                             *self.method.hooks(), *self.user_hooks],
                            key=lambda h: h.priority)

        #: DDP wrappers of the trained modules, per (stage, module) (:meth:`_distributed`)
        self._ddp: dict[tuple[str, str], nn.Module] = {}
        if dist.is_dist() and dist.rank() > 0:
            # each rank its own augmentation / dropout stream (the model itself is rank 0's: DDP broadcasts it)
            seed_everything(int(np.random.SeedSequence([cfg.seed, dist.rank()]).generate_state(1)[0]))

        if dist.is_main():
            self.run.start(cfg)  # config.yaml, atomically (unreid.engine.rundir)
        dist.barrier()
        if self.run.resume_from is not None:
            self.load(self.run.resume_from)
        else:
            self.method.on_fresh_start(self.optim)

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
        if not dist.is_main():  # other ranks: errors only, on stderr, marked with the rank; no train.log
            eh = logging.StreamHandler(sys.stderr)
            eh.setLevel(logging.ERROR)
            eh.setFormatter(logging.Formatter(f"%(asctime)s [rank {dist.rank()}] %(levelname)s %(message)s",
                                              "%H:%M:%S"))
            eh._unreid = True  # type: ignore[attr-defined]
            log.addHandler(eh)
            log.propagate = False
            return
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
    def extract(self, samples: list[Sample], model: nn.Module | None = None) -> torch.Tensor:
        """L2-normalised features ``(N, d) float32`` on CPU of ``samples`` (test transform) by ``model``
        (default: the re-ID model)."""
        return extract(self.model if model is None else model, samples, self.cfg, self.device, cache=self.cache,
                       amp=self.use_amp)

    def refresh(self, epoch: int) -> dict[str, Any]:
        """Labelling phase (:class:`~unreid.engine.hooks.LabelHook`): the method's features, labels and
        memories; returns the quality report (ground truth used only here, for reporting)."""
        from unreid.pseudo_labels import NoClustersError, cluster_report

        t0 = time.time()
        feats = self.method.extract(self.train_samples, lambda model, samples: self.extract(samples, model))
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
        if labels.matches is not None and self._gt_report is not None:  # cross-group matches vs truth, report only
            from unreid.pseudo_labels.quality import matching_precision

            report["match_precision"] = matching_precision(labels.labels, labels.matches,
                                                           self._gt_report)["match_precision"]
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
        """``iters`` optimisation steps (one sampler pass when ``optim.iters == 0``); returns the mean losses."""
        from tqdm import tqdm

        from unreid.data.loader import IterLoader, build_train_loader

        if self.method.labels is None and (self.stage is None or self.stage.needs_labels):
            raise TrainingStopped(f"epoch {epoch}: no labels to sample from (the stage does not relabel and no "
                                  "earlier stage made labels)")
        sampler = self.method.sampler(self.method.labels, seed=self.cfg.seed * 1000 + epoch)
        batch_size = self.method.train_batch_size()  # the global batch
        if dist.is_dist():  # every rank draws the global stream and takes its share of each batch
            sampler = dist.ShardedBatchSampler(sampler, batch_size, dist.rank(), self.world_size,
                                               segments=self.method.batch_segments())
        loader = build_train_loader(self.method.train_set, sampler, self.cfg.data, cache=self.cache,
                                    transform=self.method.train_transform(),
                                    batch_size=batch_size // self.world_size)
        if len(loader) == 0:
            labels = self.method.labels
            if labels is None:
                raise TrainingStopped(f"epoch {epoch}: the sampler yields {len(sampler)} images, less than one batch "
                                      f"of {batch_size}; lower data.batch_size")
            raise TrainingStopped(
                f"epoch {epoch}: the sampler yields {len(sampler)} images from {labels.num_clusters} "
                f"clusters, less than one batch of {batch_size}; lower data.batch_size, or raise "
                "pseudo_labels.eps so that more samples are clustered")
        iters = self.cfg.optim.iters or len(loader)
        self._set_train_modes()
        sums: dict[str, float] = {}
        bar = tqdm(IterLoader(loader, iters), total=iters, desc=f"epoch {epoch} [{self.mode}]",
                   disable=None if dist.is_main() else True, leave=False, mininterval=5)
        with self._distributed():
            for step, batch in enumerate(bar):
                self.call_hooks("before_step", batch)
                with torch.autocast(self.device.type, enabled=self.use_amp, dtype=torch.float16):
                    out = self.method.step(batch, epoch)
                loss = out.losses["loss"]
                if not torch.isfinite(loss):
                    raise TrainingStopped(f"epoch {epoch} step {step}: loss is {loss.item()}; lower optim.lr "
                                          "or disable optim.amp")
                self.method.optimize_step(out, self.optim, self.stage)
                with torch.no_grad():
                    # DDP: every rank updates its memories with the global batch, in single-process order
                    self.method.after_step(*dist.gather_step(batch, out.outputs, len(batch["index"]),
                                                              self.method.batch_segments()))
                vals = {k: float(v.detach()) for k, v in out.losses.items()}
                for k, v in vals.items():
                    sums[k] = sums.get(k, 0.0) + v
                self.call_hooks("after_step", vals)
                if (step + 1) % self.cfg.log_every == 0:
                    bar.set_postfix(loss=f"{vals['loss']:.3f}")
                    log.info("epoch %d [%d/%d] %s", epoch, step + 1, iters,
                             " ".join(f"{k} {v:.4f}" for k, v in vals.items()))
        if dist.is_dist():
            # every rank's modules as rank 0's (BN running statistics differ after the last step), and the
            # epoch's losses averaged over the ranks (each rank's are the means over its share)
            for module in self.modules.values():
                dist.broadcast_module(module)
            keys = sorted(sums)
            total = dist.all_gather_cat(torch.tensor([[sums[k] for k in keys]], dtype=torch.float64)).mean(0)
            sums = {k: float(v) for k, v in zip(keys, total.tolist())}
        return {k: v / iters for k, v in sums.items()}

    @contextlib.contextmanager
    def _distributed(self) -> Iterator[None]:
        """Within the block, the method's trained modules are DDP-wrapped (a no-op in one process).

        The stage's modules with trainable parameters are wrapped once per stage
        (``torch.nn.parallel.DistributedDataParallel``: gradients averaged over the ranks, rank 0's buffers
        broadcast at each forward); every attribute of the method that holds such a module (``method.model``,
        a GCL generator, ...) holds its wrapper until the block ends, so ``method.forward`` runs it.
        """
        if not dist.is_dist():
            yield
            return
        from torch.nn.parallel import DistributedDataParallel

        stage = self.stage.name if self.stage is not None else ""
        wrapped: dict[int, nn.Module] = {}
        for name, module in self.modules.items():
            if not module.training or not any(p.requires_grad for p in module.parameters()):
                continue
            key = (stage, name)
            if key not in self._ddp:
                ids = [self.device.index] if self.device.type == "cuda" else None
                self._ddp[key] = DistributedDataParallel(
                    module, device_ids=ids, find_unused_parameters=self.cfg.dist.find_unused_parameters)
            wrapped[id(module)] = self._ddp[key]
        swapped = {attr: value for attr, value in vars(self.method).items() if id(value) in wrapped}
        for attr, value in swapped.items():
            setattr(self.method, attr, wrapped[id(value)])
        try:
            yield
        finally:
            for attr, value in swapped.items():
                setattr(self.method, attr, value)

    def _set_train_modes(self) -> None:
        """The stage's modules in train mode with their own ``requires_grad``; the others frozen (eval mode,
        ``requires_grad=False``), so that neither their weights nor their batch-norm statistics move."""
        train = self.stage.train if self.stage is not None else None
        for name, module in self.modules.items():
            on = train is None or name in train
            module.train(on)
            for p in module.parameters():
                p.requires_grad_(on and self._trainable[id(p)])

    def evaluate(self, query: list[Sample] | None = None, gallery: list[Sample] | None = None) -> dict[str, float]:
        """Query/gallery evaluation with ``cfg.eval.protocol`` (percentages: mAP, mINP, rank1/5/10).

        Without arguments, a data set with :attr:`~unreid.data.datasets.base.ReIDData.trials` is evaluated
        on all of them (one extraction; the headline keys are the first group's means, plus per-group keys:
        :mod:`unreid.evaluation.trials`). Draws nothing from the run's random streams
        (:func:`unreid.rng.preserved_rng`), so a run trains the same model whatever ``eval.every`` is.
        """
        from unreid.rng import preserved_rng

        trials = self.data.trials if query is None and gallery is None else None
        query = list(self.data.query) if query is None else query
        gallery = list(self.data.gallery) if gallery is None else gallery
        with preserved_rng(self.device):
            return evaluate_model(self.model, query, gallery, self.cfg, self.device, cache=self.cache,
                                  amp=self.use_amp, trials=trials)

    # ------------------------------------------------------------------ loop
    def call_hooks(self, event: str, *args: Any) -> None:
        """Call ``event`` on every hook, in priority order."""
        for h in self.hooks:
            getattr(h, event)(self, *args)

    @property
    def is_last_epoch(self) -> bool:
        return self.epoch + 1 == self.total_epochs

    def stage_bounds(self) -> list[tuple[int, int]]:
        """``[start, end)`` global epochs of each stage."""
        out, start = [], 0
        for st in self.stages:
            out.append((start, start + st.epochs))
            start += st.epochs
        return out

    def enter_stage(self, index: int, fresh: bool) -> None:
        """Make stage ``index`` current: the method sees it; with ``fresh`` (its first epoch, not a resume inside
        it) and ``lr="restart"``, its optimisers restart their schedules (the first stage starts fresh anyway)."""
        stage = self.stages[index]
        self.stage = stage
        self.method.stage = stage
        if fresh and index > 0 and stage.lr == "restart":
            self.optim.restart_schedules(stage.optimizers)
        if len(self.stages) > 1:
            log.info("stage %d/%d %r: epochs %d-%d, training %s, optimisers %s", index + 1, len(self.stages),
                     stage.name, *self.stage_bounds()[index], list(stage.train or self.modules),
                     list(stage.optimizers or self.optim.names))

    def train(self) -> dict[str, Any]:
        """Run (or continue) training; returns the last epoch's record (losses, pseudo-labels, evaluation)."""
        cfg = self.cfg
        self.call_hooks("before_train")
        t_start = time.time()
        record: dict[str, Any] = {}
        for index, (start, end) in enumerate(self.stage_bounds()):
            if self.state.epoch >= end:
                continue
            self.enter_stage(index, fresh=self.state.epoch == start)
            self.call_hooks("before_stage", self.stage)
            for epoch in range(max(start, self.state.epoch), end):
                self.epoch = epoch
                self.epoch_start = time.time()
                record = self.record = {"epoch": epoch, "mode": self.mode}
                if len(self.stages) > 1:
                    record["stage"] = self.stage.name
                self.call_hooks("before_epoch")
                record["losses"] = self.train_epoch(epoch)
                self.call_hooks("after_epoch", record)
                log.info("epoch %d [%s] done in %.1fs: %s", epoch, self.mode, record["time_epoch_s"],
                         " ".join(f"{k} {v:.4f}" for k, v in record["losses"].items()))
            self.call_hooks("after_stage", self.stage)
        self.call_hooks("after_train")
        log.info("training [%s] finished in %.1f min; best checkpoint (selected by %s): epoch %d -> %s",
                 self.mode, (time.time() - t_start) / 60, cfg.eval.select, self.state.best_epoch,
                 self.output_dir / "model_best.pth")
        return record

    def commit_epoch(self, record: dict[str, Any], is_best: bool) -> None:
        """The epoch's one commit (:meth:`save`): checkpoint holding the record, best model, metrics line."""
        self.save(is_best, record)

    def is_best(self, record: dict[str, Any]) -> bool:
        """Whether this epoch's model becomes ``model_best.pth`` (``eval.select``: the last epoch, or the best
        validation mAP); never chosen on test results. Updates the best score and epoch."""
        if self.cfg.eval.select == "last":
            ok = self.is_last_epoch
        else:
            score = record.get("val", {}).get("mAP")
            ok = score is not None and score > self.state.best_score
            if ok:
                self.state.best_score = float(score)
        if ok:
            self.state.best_epoch = record["epoch"]
        return ok

    def append_metrics(self, record: dict[str, Any]) -> None:
        """A record that comes without a checkpoint (before training); epochs go through :meth:`commit_epoch`.
        Written by rank 0 only."""
        record["unreadable_images"] = self._count_unreadable()
        if dist.is_main():
            self.run.append(ordered_record(record))

    def _count_unreadable(self) -> int:
        return count_unreadable(self._all_paths)

    # ------------------------------------------------------------------ checkpoints
    def save(self, is_best: bool = False, record: dict[str, Any] | None = None) -> Path:
        """Commit the epoch (:meth:`unreid.engine.rundir.RunDir.commit`): ``checkpoint_last.pth`` holding
        ``record`` too, then ``model_best.pth`` when ``is_best``, then ``record`` in ``metrics.jsonl``.

        The checkpoint holds every named module (``"model"``: the re-ID model, as ``model_best.pth`` and
        ``unreid eval`` read it; ``"modules"``: the others), the optimisers, schedulers and scaler, the
        method's labels and memories, the RNG states and the epoch counter.

        Under DDP rank 0 writes (its modules, optimisers and memories are every rank's) and the others wait
        at a barrier; the checkpoint also holds every rank's RNG states (``"rng_ranks"``). Returns the
        checkpoint's path on every rank.
        """
        if record is not None:
            record["unreadable_images"] = self._count_unreadable()
            record = ordered_record(record)
        rng_ranks = dist.all_gather_object(rng_state()) if dist.is_dist() else None
        if not dist.is_main():
            dist.barrier()
            return self.output_dir / "checkpoint_last.pth"
        state = {
            "format": CHECKPOINT_FORMAT,
            "mode": self.mode,
            "config": to_dict(self.cfg),
            "epoch": self.state.epoch,
            "stage": None if self.stage is None else self.stage.name,
            "best_score": self.state.best_score,
            "best_epoch": self.state.best_epoch,
            "best_test": dict(self.state.best_test),
            "model": self.model.state_dict(),
            "modules": {n: m.state_dict() for n, m in self.modules.items() if m is not self.model},
            "optim": self.optim.state_dict(),
            "method": to_tensors(self.method.state_dict()),
            "rng": rng_state(),
        }
        if rng_ranks is not None:
            state["rng_ranks"] = rng_ranks
        path = self.run.commit(state, record, best=is_best)
        dist.barrier()
        return path

    def load(self, path: Path) -> None:
        """Restore everything :meth:`save` wrote (exact resume; also the first checkpoint format, with one
        optimiser: ``optimizer`` / ``scheduler`` / ``scaler`` keys); the folder's ``metrics.jsonl`` and
        ``model_best.pth`` are repaired from the checkpoint where they lag behind it."""
        ckpt = load_checkpoint(path)
        saved_mode = ckpt.get("mode")
        if saved_mode != self.mode:
            raise ValueError(f"{path} is a {saved_mode} run; this config is {self.mode}")
        self.model.load_state_dict(ckpt["model"])
        for name, sd in ckpt.get("modules", {}).items():
            if name not in self.modules:
                raise ValueError(f"{path} holds module {name!r}, which method {self.cfg.method.name!r} does not have")
            self.modules[name].load_state_dict(sd)
        if "optim" in ckpt:
            self.optim.load_state_dict(ckpt["optim"])
        else:  # unreid-checkpoint-1
            first = self.optim.names[0]
            self.optim.load_state_dict({"optimizers": {first: ckpt["optimizer"]},
                                        "schedulers": {first: ckpt["scheduler"]}, "scaler": ckpt["scaler"]})
        self.method.load_state_dict(ckpt["method"])
        ranks = ckpt.get("rng_ranks")
        saved_world = 1 if ranks is None else len(ranks)
        if saved_world != self.world_size:
            log.warning("%s was written by %d process(es), this run has %d: the global batch is the same, but the "
                        "random streams restart from rank 0's saved state%s", path, saved_world, self.world_size,
                        "" if self.cfg.dist.batch_norm == "sync" or self.cfg.dist.bn_group_size else
                        ", and with dist.batch_norm=local each BN statistic now sees data.batch_size / "
                        f"{self.world_size} images (docs/DISTRIBUTED.md)")
        if dist.is_dist() and ranks is not None and len(ranks) == self.world_size:
            set_rng_state(ranks[dist.rank()])
        else:
            set_rng_state(ckpt["rng"])
            if dist.is_dist() and dist.rank() > 0:
                torch.manual_seed(int(np.random.SeedSequence([self.cfg.seed, dist.rank(), int(ckpt["epoch"])])
                                      .generate_state(1)[0]))
        self.state.epoch = int(ckpt["epoch"])
        self.state.best_score = float(ckpt["best_score"])
        self.state.best_epoch = int(ckpt["best_epoch"])
        self.state.best_test = dict(ckpt.get("best_test") or {})
        if dist.is_main():
            self.run.restore(ckpt, path)
        dist.barrier()
        log.info("resumed from %s after epoch %d", path, self.state.epoch - 1)


def extract(model: nn.Module, samples: list[Sample], cfg: Config, device: torch.device,
            cache: Any = None, amp: bool = False) -> torch.Tensor:
    """L2-normalised features ``(N, d) float32`` on CPU of ``samples``, with the test transform of ``cfg.data``.

    A model with camera BN layers (``model.camera_bn``) embeds each camera's images with statistics
    re-estimated from that camera's images in ``samples`` (at most ``model.camera_bn_images`` of them):
    see :mod:`unreid.models.camera_bn`. The model's own statistics are restored afterwards.

    Under DDP (:mod:`unreid.engine.dist`; ``model`` the unwrapped module, the same on every rank) a plain
    model's extraction is sharded across the ranks and gathered in the original order on every rank; with
    camera BN every rank embeds every sample (the per-camera statistics need the camera's images together).
    """
    from unreid.data.loader import build_test_loader
    from unreid.evaluation.features import extract_features
    from unreid.models.camera_bn import camera_bn_layers, camera_statistics, estimate_statistics

    def loader(rows: list[Sample]):
        return build_test_loader(rows, cfg.data, cache=cache, batch_size=cfg.eval.batch_size)

    if not camera_bn_layers(model):
        if dist.is_dist() and len(samples) >= dist.world_size():
            # DDP: each rank embeds its contiguous shard, the shards are gathered back in order on every rank
            start, end = dist.shard_range(len(samples))
            return dist.all_gather_cat(extract_features(model, loader(samples[start:end]), device, amp=amp))
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
                   device: torch.device, cache: Any = None, amp: bool = False,
                   trials: Sequence[Trial] | None = None) -> dict[str, float]:
    """Evaluate ``model`` with ``cfg.eval.protocol`` (and ``cfg.eval.rerank``).

    Returns percentages ``mAP, mINP, rank1, rank5, rank10`` plus ``num_valid_queries`` and
    ``time_s``; an empty dict when ``query`` or ``gallery`` is empty.

    With ``trials`` (a data set's :attr:`~unreid.data.datasets.base.ReIDData.trials`, not empty),
    ``query`` / ``gallery`` are not used: the images of all trials are embedded in ONE pass
    (:func:`unreid.evaluation.trials.union_samples`, de-duplicated by path; with camera BN each camera's
    statistics come from its images in that union), each trial is evaluated on its rows and the result
    holds the per-group means and population stds (``"<group>/mAP"``, ``"<group>/mAP_std"``,
    ``"<group>/trials"``, ...) with the flat keys = the first group's means
    (:func:`unreid.evaluation.trials.evaluate_trials`), plus ``time_s``.
    """
    from unreid.evaluation.protocols import PROTOCOLS

    if trials:
        from unreid.evaluation.trials import evaluate_trials, union_samples

        t0 = time.time()
        samples, rows = union_samples(trials)
        feats = extract(model, samples, cfg, device, cache, amp)
        res = dist.run_on_main(lambda: evaluate_trials(feats, rows, trials, PROTOCOLS[cfg.eval.protocol],
                                                       rerank=cfg.eval.rerank))
        res["time_s"] = round(time.time() - t0, 2)
        return res
    if not query or not gallery:
        return {}
    t0 = time.time()
    # One pass over query + gallery: with camera BN, each camera's statistics come from its query and
    # gallery images together (Zhuang et al. 2020; at most model.camera_bn_images of them, see extract);
    # for a plain model this is the same as two passes.
    feats = extract(model, list(query) + list(gallery), cfg, device, cache, amp)
    # DDP: the metrics on rank 0, broadcast (every rank holds the same features)
    res = dist.run_on_main(lambda: evaluate_features(feats[:len(query)], feats[len(query):], query, gallery, cfg))
    res["time_s"] = round(time.time() - t0, 2)
    return res


def evaluate_features(qf: torch.Tensor, gf: torch.Tensor, query: list[Sample], gallery: list[Sample],
                      cfg: Config) -> dict[str, float]:
    """``cfg.eval.protocol`` (and ``cfg.eval.rerank``) on already extracted features ``qf (Q, d)``, ``gf (G, d)``
    (L2-normalised, in ``query`` / ``gallery`` order): the metrics of :func:`evaluate_model` as floats,
    without ``time_s``."""
    from unreid.evaluation.protocols import PROTOCOLS

    res = PROTOCOLS[cfg.eval.protocol](qf, gf, query, gallery, rerank=cfg.eval.rerank)
    return {k: float(v) for k, v in res.items() if isinstance(v, (int, float))}


def load_model_from_checkpoint(path: str | Path, cfg: Config | None = None) -> tuple[nn.Module, Config]:
    """Build the model a checkpoint was trained with and load its weights (``weights_only=True``), through
    :func:`unreid.engine.checkpoint.load_trained_model` (its warnings are logged).

    Returns ``(model, config)``; ``cfg`` overrides the saved config when given.

    Raises:
        FileNotFoundError, unreid.engine.checkpoint.CheckpointError: see ``load_trained_model``.
    """
    from unreid.engine.checkpoint import load_trained_model

    if cfg is None:
        cfg = from_dict(load_checkpoint(path)["config"])
    model, warnings = load_trained_model(path, cfg)
    for w in warnings:
        log.warning("%s", w)
    return model, cfg


def ordered_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its keys in reading order: :data:`RECORD_ORDER` first, then the others as they came."""
    ordered = {k: record[k] for k in RECORD_ORDER if k in record}
    ordered.update({k: v for k, v in record.items() if k not in ordered})
    return ordered

