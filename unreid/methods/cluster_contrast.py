"""Cluster Contrast (Dai et al., ACCV 2022): the baseline.

Each epoch: DBSCAN pseudo-labels on k-reciprocal Jaccard distances, a cluster memory initialised
from normalised centroids; each step ClusterNCE against the memory, then the momentum update
(``unreid.memory.cluster``). Reference: alibaba/cluster-contrast-reid @57b62e9.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from unreid.memory.cluster import ClusterMemory
from unreid.methods.base import Method, StepOutput, register_method
from unreid.pseudo_labels.base import PseudoLabels


@register_method("cluster_contrast")
class ClusterContrast(Method):
    """Cluster Contrast; config ``method.temperature`` (0.05), ``method.momentum`` (0.1),
    ``method.memory_update`` (per_sample | batch_mean)."""

    memory: ClusterMemory | None = None

    def refresh(self, epoch: int, features: Tensor) -> PseudoLabels:
        labels = super().refresh(epoch, features)
        self.build_memory(features, labels)
        return labels

    def build_memory(self, features: Tensor, labels: PseudoLabels) -> None:
        """Cluster memory from ``features`` ``(N, d)`` and ``labels``."""
        m = self.cfg.method
        self.memory = ClusterMemory(m.temperature, m.momentum, m.memory_update, self.device)
        self.memory.init_from_features(features, labels.labels)

    def training_step(self, batch: dict[str, Tensor]) -> StepOutput:
        assert self.memory is not None, "refresh() must run before training steps"
        feats = self.model(batch["img"].to(self.device))
        targets = self.batch_targets(batch)
        loss = self.memory.loss(feats, targets)
        return StepOutput({"loss": loss, "cluster_nce": loss.detach()}, {"features": feats, "targets": targets})

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
            m = self.cfg.method
            self.memory = ClusterMemory(m.temperature, m.momentum, m.memory_update, self.device)
            self.memory.load_state_dict(state["memory"])
