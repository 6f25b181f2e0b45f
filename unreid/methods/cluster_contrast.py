"""Cluster Contrast (Dai et al., "Cluster Contrast for Unsupervised Person Re-Identification",
ACCV 2022): the baseline every other method here builds on.

Each epoch (``Trainer``): pseudo-labels from k-reciprocal Jaccard distances + DBSCAN
(:meth:`Method.make_labels`), then a :class:`~unreid.memory.cluster.ClusterMemory` initialised from the
normalised cluster centroids of the extracted features (:meth:`Method.build_memories`). Each step:
ClusterNCE of the batch features against the memory; after ``optimizer.step()``: the momentum update.
Reference: alibaba/cluster-contrast-reid @57b62e9 (``clustercontrast/models/cm.py``,
``examples/cluster_contrast_train_usl.py``); deviations in docs/methods/cluster_contrast.md.

Config: ``method.temperature`` (tau, 0.05), ``method.momentum`` (mu, 0.1), ``method.memory_update``
(``per_sample`` as the reference, or ``batch_mean``).
"""

from __future__ import annotations

from torch import Tensor

from unreid.memory.base import LabelMemory
from unreid.memory.cluster import ClusterMemory
from unreid.methods.base import MemoryMethod, StepOutput, register_method


@register_method("cluster_contrast")
class ClusterContrast(MemoryMethod):
    """Cluster Contrast on the shared engine (see module docstring and :class:`Method`).

    Memories: ``"cluster"`` (:class:`~unreid.memory.cluster.ClusterMemory`: one row per cluster, the
    L2-normalised mean of its rows of the epoch's features, outliers ignored), plus the shared ones of
    :meth:`Method.memory_names`.
    """

    memory_name = "cluster"

    def new_memory(self, name: str) -> LabelMemory:
        if name != self.memory_name:
            return super().new_memory(name)
        m = self.cfg.method
        return LabelMemory(lambda d, c: ClusterMemory(d, c, m.temperature, m.momentum, m.memory_update, self.device))

    def training_step(self, batch: dict[str, Tensor], epoch: int = 0) -> StepOutput:
        """ClusterNCE of the batch.

        Args:
            batch: ``img`` ``(B, 3, H, W)`` float and ``index`` ``(B,) int64`` dataset indices (``camid``
                ``(B,) int64`` passed to the model when present).
            epoch: the epoch being trained (unused by ClusterNCE).

        Returns:
            losses ``{"loss", "cluster_nce"}``; outputs ``{"features": (B, d)`` (with their graph, as
            :meth:`Method.step` needs for the optional camera-aware proxy losses), ``"targets": (B,)}``.
        """
        memory = self.require_memory("training_step")
        feats = self.forward(batch)
        targets = self.batch_targets(batch)
        loss = memory.loss(feats, targets)
        return StepOutput({"loss": loss, "cluster_nce": loss.detach()}, {"features": feats, "targets": targets})
