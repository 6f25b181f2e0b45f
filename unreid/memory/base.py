"""The memory protocol: what the engine needs from every memory bank a method holds.

A method keeps its memories in ``method.memories``, a ``dict[str, Memory]`` (DESIGN.md, "A method's
contract"). The engine treats them generically: after labelling it asks the method to build them
(:meth:`Memory.build`), after every ``optimizer.step()`` it calls :meth:`Memory.update` of each one
under ``torch.no_grad()`` (memory updates never happen inside autograd, unlike the reference code's
``autograd.Function.backward``), and it saves / restores their :meth:`Memory.state_dict` in
checkpoints, so that a resumed run continues with the same memories bit for bit.

A memory flagged :attr:`Memory.auxiliary` adds its own loss terms to any method's loss (the
camera-aware proxies, :class:`unreid.memory.proxy.CameraProxyBank`); the method's own memories are
used by its ``training_step``, which decides how their terms combine.

The tensors of a batch step travel in two dicts: ``batch`` (what the loader yields: ``img``,
``index`` ``(B,) int64`` dataset indices, ``camid``, ``modality``) and ``outputs`` (what the
method's ``training_step`` produced: at least ``features`` ``(B, d)`` with their graph, and
``targets`` ``(B,) int64`` pseudo-labels for label-indexed memories).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from unreid.pseudo_labels.base import PseudoLabels


@dataclass
class MemoryContext:
    """What a memory may need besides features and labels when it is built.

    Attributes:
        epoch: the epoch about to be trained (0-based, counted over all stages).
        seed: the run's seed (``cfg.seed``); memories that draw (e.g. HHCL's CMhybrid_v2 slots) derive
            their generator from ``(seed, epoch)`` so that a resumed run draws the same.
        camids: ``(N,) int64`` camera ids of the training samples (free metadata, never identities).
        modalities: ``(N,) int64`` modality ids (0 visible, 1 infrared) of the training samples.
        device: where the memory lives.
    """

    epoch: int
    seed: int
    camids: np.ndarray
    modalities: np.ndarray
    device: torch.device


class Memory:
    """Base class of the memory banks the engine holds (see module docstring).

    Subclasses implement :meth:`build`, :meth:`update`, :meth:`state_dict` and :meth:`load_state_dict`
    (which must work on a freshly constructed, unbuilt instance: sizes come from the state), and
    :meth:`losses` when the memory has loss terms of its own.
    """

    #: True: the engine adds :meth:`losses` to the method's loss (see :meth:`unreid.methods.Method.step`)
    auxiliary: bool = False
    #: for an auxiliary memory: the factor the method's own loss is multiplied by while this memory is on
    own_loss_weight: float = 1.0

    def build(self, features: dict[str, Tensor], labels: PseudoLabels, ctx: MemoryContext) -> None:
        """(Re)create the memory for this epoch from the extracted ``features`` (name -> ``(N, d)``
        float32, L2-normalised; ``"global"`` always present) and ``labels``."""
        raise NotImplementedError

    def losses(self, outputs: dict[str, Tensor], batch: dict[str, Tensor], epoch: int) -> dict[str, Tensor]:
        """Named scalar loss terms of a batch (each already weighted); none by default."""
        return {}

    @torch.no_grad()
    def update(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> None:
        """The memory update after ``optimizer.step()`` (called under ``no_grad``)."""
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        """Counts for the epoch's pseudo-label report (merged into it after :meth:`build`)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Exact copies of the memory's tensors (CPU), loadable with ``torch.load(weights_only=True)``."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output, on a fresh instance too."""
        raise NotImplementedError


def require_built(bank: Any, owner: str, where: str) -> Any:
    """``bank`` if it exists; else ``RuntimeError`` saying that ``owner.where`` ran before any memory was built."""
    if bank is None:
        raise RuntimeError(f"{owner}.{where} before refresh()/build_memories(): no memory yet")
    return bank


class LabelMemory(Memory):
    """A label-indexed memory bank (one or more rows per pseudo-label) rebuilt every epoch.

    Adapts the plain memory objects of :mod:`unreid.memory.cluster` (Cluster Contrast's
    :class:`~unreid.memory.cluster.ClusterMemory`) and :mod:`unreid.memory.hybrid` (HHCL's
    :class:`~unreid.memory.hybrid.HybridMemory`) to the protocol: :meth:`build` creates
    ``factory(d, C)`` for ``C = labels.num_clusters`` and initialises it from the ``"global"``
    features; :meth:`update` is the object's ``update(features, targets)`` with
    ``outputs["features"]`` ``(B, d)`` and ``outputs["targets"]`` ``(B,) int64``.

    Args:
        factory: ``(num_features, num_clusters) -> memory object`` with ``init_from_features``,
            ``update``, ``state_dict`` and ``load_state_dict``.
        shape_key: the key of the object's state dict whose tensor is ``(C, d)`` (sizes on load).

    Attributes:
        bank: the memory object, ``None`` until built or loaded.
    """

    def __init__(self, factory: Any, shape_key: str = "features") -> None:
        self.factory = factory
        self.shape_key = shape_key
        self.bank: Any = None

    def build(self, features: dict[str, Tensor], labels: PseudoLabels, ctx: MemoryContext) -> None:
        f = features["global"]
        self.bank = self.factory(int(f.shape[1]), labels.num_clusters)
        self.init_bank(f, labels, ctx)

    def init_bank(self, features: Tensor, labels: PseudoLabels, ctx: MemoryContext) -> None:
        """Initialise the new :attr:`bank` from ``features`` ``(N, d)`` (default: cluster means)."""
        self.bank.init_from_features(features, labels.labels)

    @torch.no_grad()
    def update(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> None:
        require_built(self.bank, type(self).__name__, "update")
        self.bank.update(outputs["features"].detach(), outputs["targets"])

    def state_dict(self) -> dict[str, Any]:
        return {} if self.bank is None else self.bank.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            self.bank = None
            return
        shape = state[self.shape_key].shape
        self.bank = self.factory(int(shape[1]), int(shape[0]))
        self.bank.load_state_dict(state)
