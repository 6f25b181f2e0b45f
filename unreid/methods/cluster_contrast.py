"""Cluster Contrast (Dai et al., "Cluster Contrast for Unsupervised Person Re-Identification",
ACCV 2022): the baseline every other method here builds on.

Each epoch (``Trainer``): pseudo-labels from k-reciprocal Jaccard distances + DBSCAN
(:meth:`Method.refresh`), then a :class:`~unreid.memory.cluster.ClusterMemory` initialised from the
normalised cluster centroids of the extracted features (:meth:`ClusterContrast.build_memory`). Each step:
ClusterNCE of the batch features against the memory; after ``optimizer.step()``: the momentum update.
Reference: alibaba/cluster-contrast-reid @57b62e9 (``clustercontrast/models/cm.py``,
``examples/cluster_contrast_train_usl.py``); deviations in docs/methods/cluster_contrast.md.

Config: ``method.temperature`` (tau, 0.05), ``method.momentum`` (mu, 0.1), ``method.memory_update``
(``per_sample`` as the reference, or ``batch_mean``).
"""

from __future__ import annotations

from torch import Tensor

from unreid.memory.cluster import ClusterMemory
from unreid.methods.base import MemoryMethod, StepOutput, register_method
from unreid.pseudo_labels.base import PseudoLabels


@register_method("cluster_contrast")
class ClusterContrast(MemoryMethod):
    """Cluster Contrast on the shared engine (see module docstring and :class:`Method`)."""

    memory: ClusterMemory | None = None

    def _new_memory(self, num_features: int, num_clusters: int) -> ClusterMemory:
        m = self.cfg.method
        return ClusterMemory(num_features, num_clusters, m.temperature, m.momentum, m.memory_update, self.device)

    def refresh(self, epoch: int, features: Tensor) -> PseudoLabels:
        """Pseudo-labels (``Method.refresh``), then this epoch's memory from ``features`` ``(N, d)``."""
        labels = super().refresh(epoch, features)
        self.build_memory(features, labels)
        return labels

    def build_memory(self, features: Tensor, labels: PseudoLabels) -> None:
        """A fresh cluster memory: ``labels.num_clusters`` rows, each the L2-normalised mean of its
        cluster's rows of ``features`` ``(N, d) float32`` (outliers ignored)."""
        self.memory = self._new_memory(int(features.shape[1]), labels.num_clusters)
        self.memory.init_from_features(features, labels.labels)

    def training_step(self, batch: dict[str, Tensor]) -> StepOutput:
        """ClusterNCE of the batch.

        Args:
            batch: ``img`` ``(B, 3, H, W)`` float and ``index`` ``(B,) int64`` dataset indices.

        Returns:
            losses ``{"loss", "cluster_nce"}``; outputs ``{"features": (B, d)`` (with their graph, as
            :meth:`Method.step` needs for the optional camera-aware proxy losses), ``"targets": (B,)}``.
        """
        memory = self.require_memory("training_step")
        feats = self.model(batch["img"].to(self.device))
        targets = self.batch_targets(batch)
        loss = memory.loss(feats, targets)
        return StepOutput({"loss": loss, "cluster_nce": loss.detach()}, {"features": feats, "targets": targets})
