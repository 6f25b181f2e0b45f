"""The contract between the trainer and a method (DESIGN.md, "A method's contract").

The trainer owns the loop, optimiser, AMP, checkpoints and evaluation. A method owns
pseudo-labelling, memories, the sampler, the losses and the memory updates.

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
from unreid.pseudo_labels.base import PseudoLabels

if TYPE_CHECKING:
    from unreid.data.loader import ImageCache
    from unreid.memory.proxy import CameraProxyMemory


@dataclass
class StepOutput:
    """What :meth:`Method.training_step` returns.

    Attributes:
        losses: named scalar losses; ``losses["loss"]`` is the total that is back-propagated.
        outputs: tensors :meth:`Method.update_memory` needs (e.g. ``"features"``), detached there.
    """

    losses: dict[str, Tensor]
    outputs: dict[str, Tensor] = field(default_factory=dict)


class Method:
    """Base class of every unsupervised re-ID method.

    Args:
        cfg: the run configuration.
        model: the re-ID network (``unreid.models.ReIDModel``); in train mode ``model(x)``
            returns un-normalised features ``(B, d)``.
        train_set: training samples with ``pid == -1`` (labels hidden).
        supervised_labels: ``(N,) int64`` true identities, given only in the supervised
            reference mode; ``None`` otherwise.
        device: where memories live (the model's device).
    """

    name = "base"

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
        #: camera-aware proxy memory (``method.camera.proxies``), rebuilt by :meth:`refresh`
        self.proxy_memory = None
        #: per-sample pseudo-label lookup on ``device``: ``(N,) int64``, -1 for outliers
        self.index_to_label: Tensor | None = None
        #: colour-stripe histograms of the training images (``pseudo_labels.colour_weight``), made once
        self._colour: Tensor | None = None
        #: decoded training images (:class:`unreid.data.loader.ImageCache`) the trainer shares, if any;
        #: the colour histograms read from it instead of decoding the files again
        self.image_cache: ImageCache | None = None

    # ------------------------------------------------------------------ pseudo-labels
    def pseudo_label(self, epoch: int, features: Tensor) -> PseudoLabels:
        """Cluster ``features`` ``(N, d) float32, L2-normalised`` (or return the supervised labels)."""
        if self.supervised_labels is not None:
            labels = self.supervised_labels
            return PseudoLabels(labels, int(labels.max()) + 1, source="ground_truth")
        from unreid.pseudo_labels import PseudoLabeler

        cam = self.cfg.method.camera
        if cam.neighbourhood == "standardize":
            from unreid.pseudo_labels.camera import camera_standardize

            features = camera_standardize(features, self.camids)
        if self.cfg.pseudo_labels.colour_weight > 0:
            features = self.with_colour(features)
        if cam.neighbourhood == "ca_jaccard":
            from unreid.pseudo_labels.ca_jaccard import CameraAwareJaccardLabeler

            return CameraAwareJaccardLabeler(self.cfg.pseudo_labels, cam.ca_k1_intra, cam.ca_k1_inter,
                                             cam.ca_k2_intra, cam.ca_k2_inter).fit(features, camids=self.camids)
        if cam.matching:
            from unreid.pseudo_labels.matching import cross_camera_labels

            return cross_camera_labels(features, self.camids, self.cfg.pseudo_labels)
        return PseudoLabeler(self.cfg.pseudo_labels).fit(features, camids=self.camids)

    def with_colour(self, features: Tensor) -> Tensor:
        """``features`` ``(N, d)`` with the training images' hand-crafted descriptors appended
        (``pseudo_labels.colour_weight``; :func:`unreid.pseudo_labels.colour.append_colour`): colour-stripe
        histograms (``pseudo_labels.colour_descriptor=stripes``) or LOMO (``lomo``,
        :mod:`unreid.pseudo_labels.lomo`), by :func:`~unreid.pseudo_labels.colour.load_descriptors`. They are computed once, on the first call, at the input size
        (from :attr:`image_cache` when the trainer shares one, else from the files)."""
        from unreid.pseudo_labels.colour import append_colour, load_descriptors

        if self._colour is None:
            size = (self.cfg.data.height, self.cfg.data.width)
            self._colour = load_descriptors([s.path for s in self.train_set], size,
                                            self.cfg.pseudo_labels.colour_descriptor, cache=self.image_cache)
        return append_colour(features, self._colour, self.camids, self.cfg.pseudo_labels.colour_weight)

    def refresh(self, epoch: int, features: Tensor) -> PseudoLabels:
        """Make this epoch's labels from ``features`` ``(N, d) float32, L2-normalised``, rebuild memories.

        Subclasses call ``super().refresh`` (or :meth:`set_labels`) and then build their memories.
        With ``pseudo_labels.outliers=singleton`` the returned labels hold every outlier as a class of
        its own (:meth:`PseudoLabels.with_singletons`); ``labels.cluster_labels`` is the clustering.
        """
        labels = self.pseudo_label(epoch, features)
        if self.cfg.pseudo_labels.outliers == "singleton" and labels.source == "clustering":
            labels = labels.with_singletons()
        self.set_labels(labels)
        self.build_camera_proxies(features, labels)
        return labels

    # ------------------------------------------------------------------ camera-aware proxies (shared)
    def build_camera_proxies(self, features: Tensor, labels: PseudoLabels) -> None:
        """With ``method.camera.proxies``: one proxy per (pseudo-id, camera), initialised from
        ``features`` ``(N, d)`` (CAP, Wang et al. AAAI 2021; ``unreid.memory.proxy``)."""
        cam = self.cfg.method.camera
        if not cam.proxies:
            self.proxy_memory = None
            return
        self.proxy_memory = self._new_proxy_memory()
        self.proxy_memory.build(features, labels.labels, self.camids)
        labels.report.update(self.proxy_memory.report())

    def _new_proxy_memory(self) -> CameraProxyMemory:
        """An empty :class:`~unreid.memory.proxy.CameraProxyMemory` with ``method.camera``'s settings."""
        from unreid.memory.proxy import CameraProxyMemory

        cam = self.cfg.method.camera
        return CameraProxyMemory(cam.proxy_temperature, cam.proxy_momentum, cam.hard_negatives, cam.inter_weight,
                                 device=self.device, intra_weight=cam.intra_weight,
                                 online_weight=cam.online_weight, online_balance=cam.online_balance,
                                 online_positives=cam.online_positives)

    def step(self, batch: dict[str, Tensor], epoch: int = 0) -> StepOutput:
        """What the trainer calls: :meth:`training_step`, plus the camera-aware proxy losses when
        ``method.camera.proxies`` is on (the method's own loss weighted by ``method_loss_weight``).

        ``training_step`` must then return the batch features with their graph as
        ``outputs["features"]`` ``(B, d)``.
        """
        out = self.training_step(batch)
        pm = getattr(self, "proxy_memory", None)
        if pm is None:
            return out
        cam = self.cfg.method.camera
        feats = out.outputs["features"]
        terms = pm.losses(feats, batch["index"], use_inter=epoch >= cam.inter_start_epoch)
        losses = dict(out.losses)
        losses["loss"] = cam.method_loss_weight * losses["loss"] + sum(terms.values())
        losses.update({k: v.detach() for k, v in terms.items()})
        return StepOutput(losses, out.outputs)

    @torch.no_grad()
    def after_step(self, batch: dict[str, Tensor], outputs: dict[str, Tensor]) -> None:
        """What the trainer calls after ``optimizer.step()``: :meth:`update_memory` and the proxy update."""
        self.update_memory(batch, outputs)
        pm = getattr(self, "proxy_memory", None)
        if pm is not None:
            pm.update(outputs["features"].detach(), batch["index"])

    def set_labels(self, labels: PseudoLabels) -> None:
        self.labels = labels
        self.index_to_label = torch.as_tensor(labels.labels, dtype=torch.long, device=self.device)

    def sampler(self, labels: PseudoLabels, seed: int) -> Sampler:
        """The PxK sampler over the clustered samples (outliers left out)."""
        from unreid.data.samplers import build_sampler

        return build_sampler(
            labels.labels,
            self.camids,
            batch_size=self.cfg.data.batch_size,
            num_instances=self.cfg.data.num_instances,
            kind=self.cfg.data.sampler,
            seed=seed,
        )

    # ------------------------------------------------------------------ training
    def batch_targets(self, batch: dict[str, Tensor]) -> Tensor:
        """Pseudo-labels ``(B,) int64`` of the batch, looked up by dataset index."""
        assert self.index_to_label is not None, "refresh() must run before training steps"
        return self.index_to_label[batch["index"].to(self.device)]

    def training_step(self, batch: dict[str, Tensor]) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def update_memory(self, batch: dict[str, Tensor], outputs: dict[str, Tensor]) -> None:
        """Update memories after ``optimizer.step()`` (never inside autograd)."""

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters owned by the method (besides the model's)."""
        return []

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Memories and labels, so that a resumed run continues exactly."""
        state: dict[str, Any] = {"labels": None if self.labels is None else self.labels.labels.copy(),
                                 "num_clusters": None if self.labels is None else self.labels.num_clusters,
                                 "num_singletons": 0 if self.labels is None else self.labels.num_singletons}
        pm = getattr(self, "proxy_memory", None)
        if pm is not None:
            state["proxy_memory"] = pm.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("labels") is not None:
            self.set_labels(PseudoLabels(state["labels"], int(state["num_clusters"]),
                                         num_singletons=int(state.get("num_singletons", 0))))
        if state.get("proxy_memory") is not None:
            self.proxy_memory = self._new_proxy_memory()
            self.proxy_memory.load_state_dict(state["proxy_memory"])


class MemoryMethod(Method):
    """A method whose loss lives in one memory rebuilt every epoch (Cluster Contrast, HHCL).

    Subclasses set :attr:`memory_shape_key` (the saved tensor whose shape is ``(clusters, d)``) and
    implement :meth:`_new_memory`; the memory object provides ``update(features, targets)``,
    ``state_dict()`` and ``load_state_dict(state)``. This class supplies the memory update after the
    optimizer step and the exact save / restore of the memory in checkpoints.
    """

    memory: Any = None
    #: key of the memory's state dict whose tensor has shape ``(num_clusters, num_features)``
    memory_shape_key = "features"

    def _new_memory(self, num_features: int, num_clusters: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def require_memory(self, where: str) -> Any:
        """The memory; ``RuntimeError`` naming ``where`` when no epoch has built it yet."""
        if self.memory is None:
            raise RuntimeError(f"{type(self).__name__}.{where} before refresh()/build_memory(): no memory yet")
        return self.memory

    @torch.no_grad()
    def update_memory(self, batch: dict[str, Tensor], outputs: dict[str, Tensor]) -> None:
        """The memory's momentum update with the step's (detached) features and pseudo-labels
        (``outputs["features"]`` ``(B, d)``, ``outputs["targets"]`` ``(B,)``), after ``optimizer.step()``."""
        self.require_memory("update_memory").update(outputs["features"].detach(), outputs["targets"])

    def state_dict(self) -> dict[str, Any]:
        """The base state (labels, proxies) plus ``"memory"``: exact copies of the memory's tensors."""
        state = super().state_dict()
        if self.memory is not None:
            state["memory"] = self.memory.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the memory comes back bit for bit."""
        super().load_state_dict(state)
        if state.get("memory") is not None:
            shape = state["memory"][self.memory_shape_key].shape
            self.memory = self._new_memory(int(shape[1]), int(shape[0]))
            self.memory.load_state_dict(state["memory"])


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
