"""The contract between the engine and a method (DESIGN.md, "A method's contract").

The engine (:mod:`unreid.engine.trainer`) owns the loop (stages -> epochs -> steps), the named
optimisers and schedulers (:mod:`unreid.engine.optim`), AMP, checkpoints, evaluation and hooks. A method
declares and owns the rest::

    modules()        name -> nn.Module                 (saved and restored by name; "model" is the re-ID model)
    param_groups()   name -> OptimizerSpec             (one optimiser + scheduler per name)
    stages()         [Stage]                           (default: one stage of optim.epochs)
    extract()        samples -> {"global": (N, d), ...} (features for labelling; more than one per image allowed)
    make_labels()    features -> PseudoLabels           (clustering, or the true labels in the supervised reference)
    build_memories() features, labels -> self.memories (name -> unreid.memory.base.Memory)
    training_step()  batch -> StepOutput                (losses and the outputs memories are updated with)
    optimize_step()  StepOutput -> None                 (default: one backward, one step of the stage's optimisers)
    sampler()        labels -> torch Sampler            (P x K over pseudo-identities by default)

Memories are updated by the engine after the optimiser step (:meth:`Method.after_step`, never inside
autograd), saved and restored generically. The camera-aware proxies (``method.camera.proxies``) are one
such memory (:class:`unreid.memory.proxy.CameraProxyBank`) whose losses join any method's loss.

Ground truth: a method receives training samples whose ``pid`` is ``-1``. Only in the
supervised reference mode (``method.supervised=true``) does the trainer hand it the true
labels, through ``supervised_labels``; the quality report is computed by the trainer, outside
the method. ``tests/test_no_label_leak.py`` guards this.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Sampler

from unreid.config import Config
from unreid.data.datasets.base import Sample
from unreid.engine.optim import OptimizerSpec
from unreid.memory.base import LabelMemory, Memory, MemoryContext, require_built
from unreid.models.registry import takes_ids
from unreid.pseudo_labels.base import PseudoLabels

if TYPE_CHECKING:
    from unreid.data.loader import ImageCache


@dataclass
class StepOutput:
    """What :meth:`Method.training_step` returns.

    Attributes:
        losses: named scalar losses; ``losses["loss"]`` is the total that is back-propagated.
        outputs: tensors the memory updates need (``"features"`` ``(B, d)`` with their graph,
            ``"targets"`` ``(B,) int64``), detached there.
    """

    losses: dict[str, Tensor]
    outputs: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Stage:
    """One training stage (e.g. GCL: warm-up, generator + discriminator with the encoder frozen, joint).

    Attributes:
        name: shown in logs and ``metrics.jsonl`` (``"stage"`` key when a method has several stages).
        epochs: epochs of this stage (>= 1); stages run one after the other, epochs numbered globally.
        train: names of the modules (:meth:`Method.modules`) that train; the others are **frozen**: eval
            mode (batch-norm statistics do not move) and ``requires_grad=False``. ``None`` = all.
        optimizers: names of the optimisers stepped in this stage (:meth:`Method.param_groups`); ``None`` = all.
            Only these schedulers step at the end of each epoch.
        losses: loss names the method switches on in this stage (read by the method; the engine ignores it).
        sampler: ``data.sampler`` kind used in this stage (``None``: the config's).
        lr: ``"continue"`` (the schedules go on across the boundary) or ``"restart"`` (the stage's optimisers
            start again from their initial learning rate and a fresh schedule).
        relabel: refresh the pseudo-labels and memories before each epoch of this stage.
        needs_labels: the stage trains on pseudo-labels (``False``: its sampler runs without any, e.g. GCL's
            generator stage, which sees every training image once per epoch).
        step_lr: step the stage's schedulers after each epoch (``False``: constant learning rates during the
            stage, as GCL's stage 2, whose public code never calls its schedulers there).
        evaluate: evaluate after the stage's epochs (``eval.every``); ``False`` skips it but after the run's
            last epoch (e.g. a stage whose re-ID model is frozen: every evaluation would give the same figures).
    """

    name: str
    epochs: int
    train: tuple[str, ...] | None = None
    optimizers: tuple[str, ...] | None = None
    losses: tuple[str, ...] | None = None
    sampler: str | None = None
    lr: str = "continue"
    relabel: bool = True
    needs_labels: bool = True
    step_lr: bool = True
    evaluate: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"stage {self.name!r}: epochs must be >= 1, got {self.epochs}")
        if self.lr not in ("continue", "restart"):
            raise ValueError(f"stage {self.name!r}: lr must be 'continue' or 'restart', got {self.lr!r}")



#: features extractor the engine gives a method: ``(model, samples) -> (N, d) float32`` L2-normalised, CPU
Extractor = Callable[[nn.Module, list[Sample]], Tensor]


class Method:
    """Base class of every unsupervised re-ID method (the contract: module docstring).

    Args:
        cfg: the run configuration.
        model: the re-ID network (``model(images, camids=None, modalities=None)``; in train mode
            L2-normalised features ``(B, d)``, then dropout; ``unreid.models.reid.ReIDModel``).
        train_set: training samples with ``pid == -1`` (labels hidden).
        supervised_labels: ``(N,) int64`` true identities, given only in the supervised
            reference mode; ``None`` otherwise.
        device: where memories live (the model's device).

    Attributes:
        labels: the current :class:`PseudoLabels` (``None`` before the first labelling).
        memories: name -> :class:`~unreid.memory.base.Memory`, rebuilt by :meth:`build_memories`.
        stage: the :class:`Stage` being trained (set by the engine).
        image_cache: decoded training images the trainer shares (the hand-crafted prior reads them).

    Raises:
        ValueError: a training sample carries an identity (``pid != -1``).
    """

    name = "base"
    #: the method's own config section under ``method`` (e.g. ``"hhcl"`` -> ``cfg.method.hhcl``, a dataclass of
    #: ``unreid.config.MethodConfig``); ``None``: the method uses only the shared ``method`` keys
    config_section: str | None = None

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        train_set: Sequence[Sample],
        supervised_labels: np.ndarray | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if any(s.pid != -1 for s in train_set):
            raise ValueError("a Method must receive training samples with hidden labels (pid == -1)")
        self.cfg = cfg
        self.model = model
        self.train_set = list(train_set)
        self.camids = np.asarray([s.camid for s in self.train_set], dtype=np.int64)
        self.modalities = np.asarray([s.modality for s in self.train_set], dtype=np.int64)
        self.device = torch.device(device)
        self.supervised_labels = None if supervised_labels is None else np.asarray(supervised_labels, np.int64)
        self.labels: PseudoLabels | None = None
        self.memories: dict[str, Memory] = {}
        self.stage: Stage | None = None
        #: per-sample pseudo-label lookup on ``device``: ``(N,) int64``, -1 for outliers
        self.index_to_label: Tensor | None = None
        #: hand-crafted descriptors of the training images (``pseudo_labels.colour_weight``), made once
        self._colour: Tensor | None = None
        self._pipeline: Any = None
        self.image_cache: ImageCache | None = None

    @property
    def settings(self) -> Any:
        """The method's own config section (:attr:`config_section`), e.g. ``cfg.method.hhcl``.

        Raises:
            AttributeError: the method declares no section, or the config has none of that name.
        """
        if self.config_section is None:
            raise AttributeError(f"{type(self).__name__} declares no config section (config_section)")
        return getattr(self.cfg.method, self.config_section)

    # ------------------------------------------------------------------ modules and optimisation
    def modules(self) -> dict[str, nn.Module]:
        """The trainable modules by name (saved in checkpoints; frozen by stages). Default ``{"model": model}``."""
        return {"model": self.model}

    def param_groups(self) -> dict[str, OptimizerSpec]:
        """The named parameter groups, one optimiser each (:mod:`unreid.engine.optim`).

        Default: ``{"model": the model's trainable parameters + extra_parameters()}`` with the ``optim``
        section's settings.
        """
        params = [p for p in self.model.parameters() if p.requires_grad] + self.extra_parameters()
        return {"model": OptimizerSpec(params)}

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters owned by the method outside its modules (joined to the ``model`` group)."""
        return []

    def stages(self) -> list[Stage]:
        """The training stages. Default: one stage ``"train"`` of ``optim.epochs`` epochs, everything trains."""
        return [Stage("train", int(self.cfg.optim.epochs))]

    def optimize_step(self, out: StepOutput, optim: Any, stage: Stage) -> None:
        """One optimisation step from ``out.losses["loss"]``: zero the stage's optimisers, back-propagate
        (scaled under AMP), clip and step them (:class:`unreid.engine.optim.Optimizers`).

        Override for other schemes (e.g. GAN-style alternating discriminator / generator updates); memory
        updates are not part of it (the engine calls :meth:`after_step` afterwards).
        """
        optim.zero_grad(stage.optimizers)
        optim.backward(out.losses["loss"])
        optim.step(stage.optimizers)

    def hooks(self) -> list[Any]:
        """Hooks the method adds to the loop (:class:`unreid.engine.hooks.Hook`; e.g. GCL's image grids). Default none."""
        return []

    def on_fresh_start(self, optim: Any = None) -> None:
        """Called once by the engine when a run starts from scratch (not when it resumes: the checkpoint then
        restores everything), before training, with the run's :class:`unreid.engine.optim.Optimizers`; e.g. GCL's
        warm start of the identity encoder, or its start from a stage-2 checkpoint. Default: nothing."""

    # ------------------------------------------------------------------ features and labels
    def extract(self, samples: list[Sample], extractor: Extractor) -> dict[str, Tensor]:
        """Features of ``samples`` for labelling and memory building: ``{"global": (N, d) float32}``
        (L2-normalised, test transform) by default. A method may add more per image (e.g. TCL's parts)."""
        return {"global": extractor(self.model, samples)}

    def make_labels(self, epoch: int, features: dict[str, Tensor]) -> PseudoLabels:
        """This epoch's labels from ``features["global"]`` ``(N, d)``: the clustering (:meth:`pseudo_label`),
        or the true labels in the supervised reference. With ``pseudo_labels.outliers=singleton`` every
        outlier becomes a class of its own (:meth:`PseudoLabels.with_singletons`).

        Raises:
            unreid.pseudo_labels.NoClustersError: nothing clustered (the engine applies
                ``pseudo_labels.on_no_clusters``).
        """
        labels = self.pseudo_label(epoch, features["global"])
        if self.cfg.pseudo_labels.outliers == "singleton" and labels.source == "clustering":
            labels = labels.with_singletons()
        return labels

    def pseudo_label(self, epoch: int, features: Tensor) -> PseudoLabels:
        """Cluster ``features`` ``(N, d) float32, L2-normalised`` with the run's label pipeline
        (:meth:`label_pipeline`), or return the supervised labels."""
        if self.supervised_labels is not None:
            labels = self.supervised_labels
            return PseudoLabels(labels, int(labels.max()) + 1, source="ground_truth")
        return self.label_pipeline()(features)

    def label_pipeline(self) -> Any:
        """The :class:`~unreid.pseudo_labels.pipeline.LabelPipeline` composed from the config (feature transforms,
        grouping, labeller per group, association), built once per run so that the hand-crafted descriptors
        (:meth:`descriptors`) are computed once."""
        if self._pipeline is None:
            import logging

            from unreid.pseudo_labels.pipeline import build_label_pipeline

            p = self.cfg.pseudo_labels
            prior = None
            if p.colour_weight > 0:
                prior = self.descriptor_chunks if p.prior_mode == "gram" else self.descriptors
            self._pipeline = build_label_pipeline(self.cfg, self.camids, self.modalities, descriptors=prior,
                                                  store_dir=self.cfg.output_dir)
            logging.getLogger("unreid").info("pseudo-labels: %s", self._pipeline.describe())
        return self._pipeline

    def descriptors(self) -> Tensor:
        """The hand-crafted descriptors ``(N, D) float32`` of the training images (``pseudo_labels.colour_weight``):
        colour-stripe histograms (``pseudo_labels.colour_descriptor=stripes``) or LOMO (``lomo``,
        :mod:`unreid.pseudo_labels.lomo`), by :func:`~unreid.pseudo_labels.colour.load_descriptors`; computed on the
        first call at the input size, from :attr:`image_cache` when the trainer shares one, else from the files."""
        from unreid.pseudo_labels.colour import load_descriptors

        if self._colour is None:
            size = (self.cfg.data.height, self.cfg.data.width)
            self._colour = load_descriptors([s.path for s in self.train_set], size,
                                            self.cfg.pseudo_labels.colour_descriptor, cache=self.image_cache)
        return self._colour

    def descriptor_chunks(self) -> Any:
        """The hand-crafted descriptors of :meth:`descriptors` as an iterator of ``(b, D) float32`` row chunks
        (:func:`~unreid.pseudo_labels.colour.iter_descriptors`), for ``pseudo_labels.prior_mode=gram``, whose
        :class:`~unreid.pseudo_labels.prior.DescriptorStore` never holds all the raw descriptors at once."""
        from unreid.pseudo_labels.colour import iter_descriptors

        size = (self.cfg.data.height, self.cfg.data.width)
        return iter_descriptors([s.path for s in self.train_set], size, self.cfg.pseudo_labels.colour_descriptor,
                                cache=self.image_cache)

    def set_labels(self, labels: PseudoLabels) -> None:
        """Make ``labels`` the current pseudo-labels (and the per-sample lookup :meth:`batch_targets` reads)."""
        self.labels = labels
        self.index_to_label = torch.as_tensor(labels.labels, dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------ memories
    def memory_names(self) -> list[str]:
        """The memories :meth:`build_memories` creates, in update order: the method's own, then the shared
        ``"camera_proxies"`` when ``method.camera.proxies``."""
        return ["camera_proxies"] if self.cfg.method.camera.proxies else []

    def new_memory(self, name: str) -> Memory:
        """An empty memory ``name`` (built by :meth:`Memory.build` or restored by ``load_state_dict``).

        Raises:
            KeyError: a name this method does not know.
        """
        if name == "camera_proxies":
            from unreid.memory.proxy import CameraProxyBank

            return CameraProxyBank(self.cfg.method.camera, device=self.device)
        raise KeyError(f"{type(self).__name__} has no memory named {name!r}")

    @property
    def proxy_memory(self) -> Any:
        """The camera-aware proxies (:class:`~unreid.memory.proxy.CameraProxyMemory`) of this epoch, or ``None``
        (``method.camera.proxies`` off, or before the first labelling)."""
        bank = self.memories.get("camera_proxies")
        return None if bank is None else bank.proxies

    def memory_context(self, epoch: int) -> MemoryContext:
        return MemoryContext(epoch=epoch, seed=int(self.cfg.seed), camids=self.camids, modalities=self.modalities,
                             device=self.device)

    def build_memories(self, epoch: int, features: dict[str, Tensor], labels: PseudoLabels) -> None:
        """Rebuild every memory of :meth:`memory_names` from ``features`` and ``labels``; their reports join
        ``labels.report``."""
        ctx = self.memory_context(epoch)
        self.memories = {}
        for name in self.memory_names():
            mem = self.new_memory(name)
            mem.build(features, labels, ctx)
            labels.report.update(mem.report())
            self.memories[name] = mem

    def refresh(self, epoch: int, features: Tensor | dict[str, Tensor]) -> PseudoLabels:
        """:meth:`make_labels`, :meth:`set_labels` and :meth:`build_memories` in one call (what the engine's
        labelling hook does each epoch; ``features`` a tensor means ``{"global": features}``).

        Under DDP (:mod:`unreid.engine.dist`) every rank holds the same gathered features; :meth:`make_labels`
        runs on rank 0 alone and its labels (``PseudoLabels.state_dict``) are broadcast, so every rank builds
        the same memories."""
        from unreid.engine import dist

        feats = features if isinstance(features, dict) else {"global": features}
        if dist.is_dist():  # clustering on rank 0 only; its labels (or its error) on every rank
            labels = PseudoLabels.from_state_dict(dist.run_on_main(lambda: self.make_labels(epoch, feats).state_dict()))
        else:
            labels = self.make_labels(epoch, feats)
        self.set_labels(labels)
        self.build_memories(epoch, feats, labels)
        return labels

    # ------------------------------------------------------------------ training
    def train_transform(self) -> Any:
        """The training augmentation (``None``: :func:`unreid.data.transforms.build_train_transform` of
        ``data``); a method may return its own, per modality and with several views
        (:class:`unreid.data.loader.ReIDImageDataset`)."""
        return None

    def train_batch_size(self) -> int:
        """Images per training batch (``data.batch_size``; a method whose sampler fixes another size says so)."""
        return int(self.cfg.data.batch_size)

    def batch_segments(self) -> int:
        """Equal consecutive parts a training batch is laid out in (default 1). Under DDP each process gets its
        share of every part, so that its batch keeps the layout (MBCCM: 2, visible then infrared), and the
        memory updates see the parts put back together (:class:`unreid.engine.dist.ShardedBatchSampler`)."""
        return 1

    def sampler(self, labels: PseudoLabels | None, seed: int) -> Sampler:
        """The P x K sampler over the clustered samples (outliers left out); the stage's ``sampler`` kind
        when it names one, else ``data.sampler``. ``labels`` is ``None`` in a stage without labels
        (``Stage.needs_labels=False``): every sample then counts as clustered (for ``"shuffle"``)."""
        from unreid.data.samplers import build_sampler

        kind = (self.stage.sampler if self.stage is not None else None) or self.cfg.data.sampler
        lab = labels.labels if labels is not None else np.zeros(len(self.train_set), dtype=np.int64)
        return build_sampler(lab, self.camids, batch_size=self.cfg.data.batch_size,
                             num_instances=self.cfg.data.num_instances, kind=kind, seed=seed)

    def forward(self, batch: dict[str, Tensor], module: nn.Module | None = None) -> Tensor:
        """``module`` (default the model) on the batch images, with the batch's camera and modality ids
        (``camids=`` / ``modalities=``) when its ``forward`` takes them (every registered architecture,
        :mod:`unreid.models.registry`; a plain ``nn.Module`` gets the images alone)."""
        m = self.model if module is None else module
        img = batch["img"].to(self.device)
        if not takes_ids(m):
            return m(img)
        cams, mods = batch.get("camid"), batch.get("modality")
        return m(img, camids=None if cams is None else cams.to(self.device),
                 modalities=None if mods is None else mods.to(self.device))

    def batch_targets(self, batch: dict[str, Tensor]) -> Tensor:
        """Pseudo-labels ``(B,) int64`` of the batch, looked up by dataset index."""
        if self.index_to_label is None:
            raise RuntimeError(f"{type(self).__name__}: refresh() must run before training steps")
        return self.index_to_label[batch["index"].to(self.device)]

    def training_step(self, batch: dict[str, Tensor], epoch: int = 0) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, batch: dict[str, Tensor], epoch: int = 0) -> StepOutput:
        """What the engine calls: :meth:`training_step`, plus the loss terms of the auxiliary memories (the
        camera-aware proxies), the method's own loss multiplied by their ``own_loss_weight``
        (``method.camera.method_loss_weight``). ``training_step`` must then return the batch features with
        their graph as ``outputs["features"]`` ``(B, d)``."""
        out = self.training_step(batch, epoch)
        aux = [m for m in self.memories.values() if m.auxiliary]
        if not aux:
            return out
        losses = dict(out.losses)
        total = losses["loss"]
        for mem in aux:
            terms = mem.losses(out.outputs, batch, epoch)
            total = mem.own_loss_weight * total + sum(terms.values())
            losses.update({k: v.detach() for k, v in terms.items()})
        losses["loss"] = total
        return StepOutput(losses, out.outputs)

    @torch.no_grad()
    def after_step(self, batch: dict[str, Tensor], outputs: dict[str, Tensor]) -> None:
        """After the optimiser step: every memory's update, in :attr:`memories` order."""
        for mem in self.memories.values():
            mem.update(outputs, batch)

    @torch.no_grad()
    def update_memory(self, batch: dict[str, Tensor], outputs: dict[str, Tensor]) -> None:
        """The update of the method's own (non-auxiliary) memories only."""
        for mem in self.memories.values():
            if not mem.auxiliary:
                mem.update(outputs, batch)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The labels (:meth:`PseudoLabels.state_dict`: ``labels``, ``num_clusters``, groups, matches, ...) and every
        memory (``"memories"``: name -> state), so that a resumed run continues exactly."""
        state: dict[str, Any] = {"labels": None} if self.labels is None else self.labels.state_dict()
        state["memories"] = {name: mem.state_dict() for name, mem in self.memories.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (also the layout before named memories: ``"memory"`` and
        ``"proxy_memory"`` keys, read as the method's main memory and ``"camera_proxies"``)."""
        if state.get("labels") is not None:
            self.set_labels(PseudoLabels.from_state_dict(state))
        saved = dict(state.get("memories") or {})
        if "memory" in state and self.memory_names():
            saved.setdefault(self.memory_names()[0], state["memory"])
        if state.get("proxy_memory") is not None:
            saved.setdefault("camera_proxies", state["proxy_memory"])
        self.memories = {}
        for name, sd in saved.items():
            mem = self.new_memory(name)
            mem.load_state_dict(sd)
            self.memories[name] = mem


class MemoryMethod(Method):
    """A method whose loss lives in one label-indexed memory rebuilt every epoch (Cluster Contrast, HHCL).

    Subclasses set :attr:`memory_name` and implement :meth:`new_memory` for it (a
    :class:`~unreid.memory.base.LabelMemory`). :attr:`memory` is the memory object itself
    (``ClusterMemory`` / ``HybridMemory``).
    """

    #: the name of the method's own memory in :attr:`memories`
    memory_name = "cluster"

    def memory_names(self) -> list[str]:
        return [self.memory_name, *super().memory_names()]

    @property
    def memory(self) -> Any:
        """The method's own memory object, ``None`` before the first build."""
        bank = self.memories.get(self.memory_name)
        return None if bank is None else bank.bank

    def require_memory(self, where: str) -> Any:
        """The memory; ``RuntimeError`` naming ``where`` when no epoch has built it yet."""
        return require_built(self.memory, type(self).__name__, where)

    def build_memory(self, features: Tensor, labels: PseudoLabels, epoch: int = 0) -> None:
        """Build the method's own memory alone from ``features`` ``(N, d) float32`` and ``labels``."""
        bank = self.new_memory(self.memory_name)
        assert isinstance(bank, LabelMemory)
        bank.build({"global": features}, labels, self.memory_context(epoch))
        self.memories[self.memory_name] = bank


METHODS: dict[str, Callable[..., Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator adding a method to :data:`METHODS` under ``name``."""

    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def build_method(cfg: Config, model: nn.Module, train_set: Sequence[Sample], **kwargs: Any) -> Method:
    """Instantiate ``cfg.method.name``; raises ``KeyError`` listing the known methods."""
    import unreid.methods  # noqa: F401  (registers the built-in methods)

    if cfg.method.name not in METHODS:
        raise KeyError(f"unknown method {cfg.method.name!r}; known: {sorted(METHODS)}")
    return METHODS[cfg.method.name](cfg, model, train_set, **kwargs)
