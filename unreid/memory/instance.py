"""Instance memory: one L2-normalised row per training image (and per view), indexed by dataset index.

TCL's part memory ``M^P`` and global memory ``M^G`` (ANCHORS.md "TCL"; :mod:`unreid.methods.tcl`) are two
of these. Built each epoch from the extracted features (``features[feature_key]``, ``(N, d)`` or ``(N, V, d)``
for ``V`` views), together with the epoch's pseudo-labels, so that rows, labels and the cluster memory
always describe the same images (``tests/test_tcl.py`` checks it after every refresh). After each
optimiser step every batch image's row moves towards its new feature:
``m_i <- normalize(mu * m_i + (1 - mu) * f_i)``, sample by sample in batch order (a P x K batch may hold an
image twice), with :func:`unreid.memory.cluster.sequential_momentum_update` keyed by dataset index: the
per-instance rule of SpCL's hybrid memory (Ge et al., NeurIPS 2020, ``HybridMemory``, momentum 0.2).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from unreid.memory.base import Memory, MemoryContext, require_built
from unreid.memory.cluster import sequential_momentum_update
from unreid.pseudo_labels.base import PseudoLabels


class InstanceMemory(Memory):
    """Per-image memory rows ``(V, N, d)`` with the pseudo-label of each image.

    Args:
        feature_key: the key of the extracted features it is built from (``"global"``, ``"part"``).
        output_key: the key of the step outputs it is updated with (``"features"`` ``(B, d)`` or
            ``"part_features"`` ``(B, V, d)``); rows are found by ``batch["index"]``.
        momentum: ``mu`` in ``[0, 1)``.
        device: where the rows live.

    Attributes:
        features: ``(V, N, d) float32`` rows (``None`` until built or loaded); :attr:`view` gives one view.
        labels: ``(N,) int64`` pseudo-labels of the rows (``-1`` outliers).
    """

    def __init__(self, feature_key: str, output_key: str, momentum: float, device: torch.device | str = "cpu"
                 ) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"instance memory momentum must be in [0, 1), got {momentum}")
        self.feature_key, self.output_key = feature_key, output_key
        self.momentum = float(momentum)
        self.device = torch.device(device)
        self.features: Tensor | None = None
        self.labels: Tensor | None = None

    @staticmethod
    def _views(f: Tensor) -> Tensor:
        """``(N, d)`` -> ``(1, N, d)``; ``(N, V, d)`` -> ``(V, N, d)``."""
        if f.dim() == 2:
            return f.unsqueeze(0)
        if f.dim() == 3:
            return f.transpose(0, 1)
        raise ValueError(f"instance memory: features must be (N, d) or (N, V, d), got {tuple(f.shape)}")

    def build(self, features: dict[str, Tensor], labels: PseudoLabels, ctx: MemoryContext) -> None:
        """Rows = the L2-normalised ``features[feature_key]``; labels = ``labels.labels``.

        Raises:
            KeyError: no such features were extracted.
            ValueError: their number differs from the number of labels.
        """
        if self.feature_key not in features:
            raise KeyError(f"instance memory: no {self.feature_key!r} features were extracted (have "
                           f"{sorted(features)})")
        f = self._views(torch.as_tensor(features[self.feature_key]).float())
        lab = torch.as_tensor(np.asarray(labels.labels), dtype=torch.long)
        if f.shape[1] != lab.shape[0]:
            raise ValueError(f"instance memory: {f.shape[1]} feature rows for {lab.shape[0]} labels")
        self.features = F.normalize(f, dim=2).contiguous().to(self.device)
        self.labels = lab.to(self.device)

    @property
    def num_views(self) -> int:
        return 0 if self.features is None else int(self.features.shape[0])

    def view(self, v: int = 0) -> Tensor:
        """``(N, d)`` rows of view ``v``."""
        return require_built(self.features, type(self).__name__, "view")[v]

    @torch.no_grad()
    def update(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> None:
        """Per-sample momentum update of the batch images' rows, in batch order, every view."""
        mem = require_built(self.features, type(self).__name__, "update")
        f = self._views(outputs[self.output_key].detach().float().to(self.device))
        if f.shape[0] != mem.shape[0]:
            raise ValueError(f"instance memory: {f.shape[0]} views in the step outputs, {mem.shape[0]} in memory")
        idx = batch["index"].to(self.device)
        for v in range(mem.shape[0]):
            sequential_momentum_update(mem[v], F.normalize(f[v], dim=1), idx, self.momentum)

    def report(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        if self.features is None:
            return {}
        return {"features": self.features.detach().cpu().clone(), "labels": self.labels.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            self.features = self.labels = None
            return
        self.features = state["features"].float().to(self.device)
        self.labels = state["labels"].long().to(self.device)


__all__ = ["InstanceMemory"]
