"""HHCL: hard-sample guided hybrid contrastive learning (Hu, Zhu, He, IC-NIDC 2021).

Cluster Contrast's pipeline with the hybrid memory of :mod:`unreid.memory.hybrid` (both public
variants); config ``method.hhcl.{variant, hard_weight, legacy_weighting, num_slots, label_smoothing}``
plus ``method.temperature`` / ``method.momentum``. docs/methods/hhcl.md says which variant
reproduces what.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from unreid.memory.hybrid import HybridMemory
from unreid.methods.base import Method, StepOutput, register_method
from unreid.pseudo_labels.base import PseudoLabels


@register_method("hhcl")
class HHCL(Method):
    """HHCL with ``CMhybrid`` (default, published numbers) or ``CMhybrid_v2``."""

    memory: HybridMemory | None = None

    def _new_memory(self) -> HybridMemory:
        m, h = self.cfg.method, self.cfg.method.hhcl
        return HybridMemory(h.variant, m.temperature, m.momentum, h.hard_weight, h.legacy_weighting, h.num_slots,
                            h.label_smoothing, self.device)

    def refresh(self, epoch: int, features: Tensor) -> PseudoLabels:
        labels = super().refresh(epoch, features)
        self.build_memory(features, labels, epoch)
        return labels

    def build_memory(self, features: Tensor, labels: PseudoLabels, epoch: int = 0) -> None:
        """Hybrid memory of this epoch; v2 slots drawn with a generator seeded by (seed, epoch)."""
        self.memory = self._new_memory()
        g = torch.Generator().manual_seed(self.cfg.seed * 100003 + epoch)
        self.memory.init_from_features(features, labels.labels, generator=g)

    def training_step(self, batch: dict[str, Tensor]) -> StepOutput:
        assert self.memory is not None, "refresh() must run before training steps"
        feats = self.model(batch["img"].to(self.device))
        targets = self.batch_targets(batch)
        losses = self.memory.losses(feats, targets)
        return StepOutput(losses, {"features": feats, "targets": targets})

    @torch.no_grad()
    def update_memory(self, batch: dict[str, Tensor], outputs: dict[str, Tensor]) -> None:
        assert self.memory is not None
        self.memory.update(outputs["features"].detach(), outputs["targets"])

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.memory is not None:
            state["memory"] = self.memory.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state.get("memory") is not None:
            self.memory = self._new_memory()
            self.memory.load_state_dict(state["memory"])
