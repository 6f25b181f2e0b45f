"""Cluster memory, ClusterNCE and the momentum update of Cluster Contrast.

Dai et al., "Cluster Contrast for Unsupervised Person Re-Identification", ACCV 2022, Sec. 3.2-3.3;
reproduced behaviour from alibaba/cluster-contrast-reid @57b62e9, ``clustercontrast/models/cm.py``
and ``examples/cluster_contrast_train_usl.py``.

* Initialisation (every epoch): row ``y`` = the L2-normalised mean of the features of cluster ``y``
  (``generate_cluster_features`` then ``F.normalize`` in the training script).
* ClusterNCE (Sec. 3.2): ``L_q = -log( exp(q . m_y / tau) / sum_k exp(q . m_k / tau) )`` with
  ``q = f / ||f||`` (the reference normalises the inputs in ``ClusterMemory.forward`` before ``cm``),
  ``tau = 0.05`` (:func:`unreid.losses.cluster_nce`).
* Momentum update (Sec. 3.3; ``cm.py`` ``CM.backward``): for each sample of the batch **in batch
  order**, ``m_y <- mu * m_y + (1 - mu) * q`` then ``m_y <- m_y / ||m_y||``. The reference runs it
  inside ``autograd.Function.backward``, after the loss has used the old memory; we run it after
  ``optimizer.step()`` under ``no_grad``, which is numerically the same.
  Vectorisation: a sample's update only touches its own row, so only the order *within* a cluster
  matters. We compute each sample's occurrence rank ``r`` within its cluster (0 for the first sample of
  that cluster in batch order, 1 for the second, ...) and, for ``r = 0 .. max_count - 1``, update at once
  every cluster that has an ``r``-th sample: ``max_count`` tensor steps instead of ``B`` Python steps,
  with exactly the sequential result.
* ``batch_mean`` (option, not in the reference): one step per cluster,
  ``m_y <- normalize(mu * m_y + (1 - mu) * mean_{i: y_i = y} q_i)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from unreid.losses.contrastive import cluster_nce, memory_logits

UPDATE_RULES = ("per_sample", "batch_mean")


def occurrence_rank(targets: Tensor) -> Tensor:
    """For each entry of ``targets`` ``(B,) int64 >= 0``, how many earlier entries share its value.

    ``occurrence_rank(tensor([2, 0, 2, 1, 2]))`` is ``tensor([0, 0, 1, 0, 2])``. Stable sort + bincount,
    no Python loop.
    """
    if targets.numel() == 0:
        return targets.clone()
    order = torch.argsort(targets, stable=True)
    counts = torch.bincount(targets)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(targets)
    rank[order] = torch.arange(targets.numel(), device=targets.device) - starts[targets[order]]
    return rank


@torch.no_grad()
def sequential_momentum_update(memory: Tensor, features: Tensor, targets: Tensor, momentum: float) -> None:
    """In-place per-sample momentum update, equal to Cluster Contrast's in-batch-order loop.

    For ``i = 0 .. B-1`` in order: ``memory[t_i] <- normalize(mu * memory[t_i] + (1 - mu) * features[i])``
    (``cm.py`` ``CM.backward``), vectorised across rows by occurrence rank (module docstring).

    Args:
        memory: ``(C, d)`` float rows, updated in place.
        features: ``(B, d)`` features as they should enter the update (the callers pass L2-normalised
            ones); cast to ``memory``'s dtype.
        targets: ``(B,) int64`` row of each feature; negative targets (outliers) are skipped.
        momentum: ``mu`` in ``[0, 1]``.

    Raises:
        ValueError: a target is ``>= C`` or the batch shapes disagree.
    """
    if features.shape[0] != targets.shape[0]:
        raise ValueError(f"{features.shape[0]} features but {targets.shape[0]} targets")
    keep = targets >= 0
    features, targets = features[keep].to(memory.dtype), targets[keep]
    if targets.numel() == 0:
        return
    if int(targets.max()) >= memory.shape[0]:
        raise ValueError(f"target {int(targets.max())} out of range for a memory of {memory.shape[0]} rows")
    rank = occurrence_rank(targets)
    for r in range(int(rank.max()) + 1):
        sel = rank == r
        rows = targets[sel]  # distinct rows: one sample per cluster at this rank
        memory[rows] = F.normalize(momentum * memory[rows] + (1.0 - momentum) * features[sel], dim=1)


def cluster_centroids(features: Tensor, labels: np.ndarray | Tensor, num_clusters: int | None = None) -> Tensor:
    """L2-normalised per-cluster means.

    Args:
        features: ``(N, d)`` float features.
        labels: ``(N,)`` integer labels in ``[0, C)``; ``-1`` (outlier) rows are ignored.
        num_clusters: ``C``; default ``max(label) + 1``. A cluster without members gets a zero row.

    Returns:
        ``(C, d) float32`` on ``features``' device (``index_add`` of the members, then ``F.normalize``).

    Raises:
        ValueError: lengths differ, or a label is ``>= num_clusters``.
    """
    f = torch.as_tensor(features).float()
    lab = torch.as_tensor(np.asarray(labels), dtype=torch.long).to(f.device)
    if lab.dim() != 1 or lab.shape[0] != f.shape[0]:
        raise ValueError(f"labels must be (N,) with N = {f.shape[0]} features, got shape {tuple(lab.shape)}")
    keep = lab >= 0
    top = int(lab[keep].max()) + 1 if bool(keep.any()) else 0
    c = top if num_clusters is None else int(num_clusters)
    if top > c:
        raise ValueError(f"label {top - 1} out of range for num_clusters={c}; build the memory with "
                         "num_clusters=PseudoLabels.num_clusters")
    sums = torch.zeros(c, f.shape[1], device=f.device).index_add_(0, lab[keep], f[keep])
    return F.normalize(sums, dim=1)


class ClusterMemory:
    """Cluster Contrast's memory: one L2-normalised row per cluster, ClusterNCE and its update.

    A plain object holding a tensor (no ``nn.Parameter``, never requires grad): the gradient of the
    loss reaches the batch features only.

    Args:
        num_features: ``d``, the feature dimension.
        num_clusters: ``C``.
        temperature: ``tau`` (Cluster Contrast: 0.05, ``--temp``).
        momentum: ``mu`` in ``[0, 1]`` (Cluster Contrast README: 0.1; its argparse default is 0.2).
        update: ``"per_sample"`` (the reference's in-batch-order rule) or ``"batch_mean"``.
        device: where the memory lives.

    Attributes:
        features: ``(C, d) float32`` memory rows ``M``.

    Raises:
        ValueError: an unknown ``update``, or out-of-range sizes / hyper-parameters.
    """

    def __init__(self, num_features: int, num_clusters: int, temperature: float = 0.05, momentum: float = 0.1,
                 update: str = "per_sample", device: torch.device | str = "cpu") -> None:
        if update not in UPDATE_RULES:
            raise ValueError(f"ClusterMemory update must be one of {UPDATE_RULES}, got {update!r} "
                             "(config key method.memory_update)")
        if num_features < 1 or num_clusters < 0:
            raise ValueError(f"need num_features >= 1 and num_clusters >= 0, got {num_features}, {num_clusters}")
        if temperature <= 0 or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"need temperature > 0 and momentum in [0, 1], got {temperature}, {momentum}")
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.update_rule = update
        self.device = torch.device(device)
        self.features = torch.zeros(num_clusters, num_features, device=self.device)

    @property
    def num_clusters(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.features.shape[1])

    @torch.no_grad()
    def init_from_features(self, features: Tensor, labels: np.ndarray | Tensor) -> None:
        """Set the rows to the L2-normalised cluster means (:func:`cluster_centroids`).

        Args:
            features: ``(N, d)`` float features (the epoch's extracted, L2-normalised features).
            labels: ``(N,)`` pseudo-labels in ``[0, C)``, ``-1`` for outliers (ignored).

        Raises:
            ValueError: ``d`` differs from ``num_features``, or a label is ``>= num_clusters``.
        """
        if features.shape[1] != self.num_features:
            raise ValueError(f"features have dimension {features.shape[1]}, the memory {self.num_features}")
        self.features = cluster_centroids(features, labels, self.num_clusters).to(self.device)

    def logits(self, features: Tensor) -> Tensor:
        """``(B, C) float32`` logits ``normalize(f) @ M^T / tau`` of ``features`` ``(B, d)`` (float32 also
        under autocast; :func:`unreid.losses.memory_logits`)."""
        return memory_logits(features.to(self.device), self.features, self.temperature)

    def loss(self, features: Tensor, targets: Tensor) -> Tensor:
        """ClusterNCE (scalar float32) of ``features`` ``(B, d)`` with pseudo-labels ``targets`` ``(B,)``."""
        return cluster_nce(self.logits(features), targets.to(self.device))

    @torch.no_grad()
    def update(self, features: Tensor, targets: Tensor) -> None:
        """Momentum update with a batch; call after ``optimizer.step()``.

        Args:
            features: ``(B, d)`` batch features (un-normalised is fine: they are L2-normalised here,
                as the reference feeds normalised features to its memory).
            targets: ``(B,) int64`` pseudo-labels; negative ones are skipped.
        """
        f = F.normalize(features.detach().float().to(self.device), dim=1)
        t = targets.to(self.device)
        if self.update_rule == "per_sample":
            sequential_momentum_update(self.features, f, t, self.momentum)
            return
        keep = t >= 0
        f, t = f[keep], t[keep]
        if t.numel() == 0:
            return
        rows, inv = torch.unique(t, return_inverse=True)
        sums = torch.zeros(len(rows), f.shape[1], device=f.device).index_add_(0, inv, f)
        mean = sums / torch.bincount(inv, minlength=len(rows)).unsqueeze(1)
        mu = self.momentum
        self.features[rows] = F.normalize(mu * self.features[rows] + (1.0 - mu) * mean, dim=1)

    def state_dict(self) -> dict[str, Tensor]:
        """``{"features": (C, d) float32 CPU copy}`` (a copy: later updates never alter it)."""
        return {"features": self.features.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore rows saved by :meth:`state_dict` exactly (shape taken from the saved tensor)."""
        self.features = state["features"].detach().to(self.device, torch.float32).clone()
