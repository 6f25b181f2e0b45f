"""Cluster memory and ClusterNCE (Dai et al., "Cluster Contrast for Unsupervised Person
Re-Identification", ACCV 2022, Sec. 3.2-3.3; alibaba/cluster-contrast-reid @57b62e9
``clustercontrast/models/cm.py``).

* Initialisation (each epoch): one row per cluster, the L2-normalised mean of its members' features
  (``cluster_contrast_train_usl.py`` ``generate_cluster_features`` + ``F.normalize``).
* ClusterNCE: ``L = -log( exp(m_y . q / tau) / sum_k exp(m_k . q / tau) )`` with ``q`` the
  L2-normalised query feature (the reference normalises inputs before ``cm``), tau = 0.05.
* Momentum update (``cm.py`` L28-30, done there inside ``autograd.Function.backward``): for every
  sample **in batch order**, ``m_y <- mu * m_y + (1 - mu) * q`` then ``m_y <- m_y / ||m_y||``; the loss
  always used the memory as it was before the update. Here it runs after ``optimizer.step()``
  (never inside autograd) and is vectorised across clusters: the k-th occurrence of every cluster in
  the batch is applied in one step, k = 1, 2, ...; within a cluster the order is the batch order, so
  the result equals the reference's sequential loop. ``batch_mean`` (option): one update per cluster
  with the mean of its batch features.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def sequential_momentum_update(memory: Tensor, features: Tensor, targets: Tensor, momentum: float) -> None:
    """In-place per-sample momentum update of ``memory`` rows, equal to the in-batch-order loop.

    Args:
        memory: ``(C, d)`` rows, updated in place.
        features: ``(B, d)`` L2-normalised features.
        targets: ``(B,) int64`` row of each feature; negative targets are skipped.
        momentum: ``mu`` in ``m <- mu*m + (1-mu)*f``.
    """
    keep = targets >= 0
    features, targets = features[keep].to(memory.dtype), targets[keep]
    if targets.numel() == 0:
        return
    # occurrence rank of each sample within its target, in batch order
    order = torch.argsort(targets, stable=True)
    sorted_t = targets[order]
    first = torch.ones_like(sorted_t, dtype=torch.bool)
    first[1:] = sorted_t[1:] != sorted_t[:-1]
    group_start = torch.cummax(torch.where(first, torch.arange(len(sorted_t), device=targets.device),
                                           torch.zeros_like(sorted_t)), 0).values
    rank_sorted = torch.arange(len(sorted_t), device=targets.device) - group_start
    rank = torch.empty_like(rank_sorted)
    rank[order] = rank_sorted
    for r in range(int(rank.max()) + 1):
        sel = rank == r
        t = targets[sel]
        m = momentum * memory[t] + (1.0 - momentum) * features[sel]
        memory[t] = F.normalize(m, dim=1)


class ClusterMemory:
    """One L2-normalised row per cluster, ClusterNCE, and the momentum update.

    Args:
        temperature: tau (CC: 0.05).
        momentum: mu (CC README: 0.1).
        update: ``"per_sample"`` (reference) or ``"batch_mean"``.
        device: where the memory lives.
    """

    def __init__(self, temperature: float = 0.05, momentum: float = 0.1, update: str = "per_sample",
                 device: torch.device | str = "cpu") -> None:
        if update not in ("per_sample", "batch_mean"):
            raise ValueError(f"memory update must be per_sample or batch_mean, got {update!r}")
        self.temperature = temperature
        self.momentum = momentum
        self.update_rule = update
        self.device = torch.device(device)
        self.features = torch.zeros(0, 0, device=self.device)

    @property
    def num_clusters(self) -> int:
        return int(self.features.shape[0])

    @torch.no_grad()
    def init_from_features(self, features: Tensor, labels: np.ndarray | Tensor) -> None:
        """Rows = normalised means of ``features`` ``(N, d)`` per label ``(N,)`` (``-1`` ignored)."""
        self.features = cluster_centroids(features, labels).to(self.device)

    def logits(self, features: Tensor) -> Tensor:
        """``(B, C)`` = normalize(f) @ M.T / tau, in float32 (also under autocast)."""
        f = F.normalize(features.float(), dim=1)
        return f @ self.features.t() / self.temperature

    def loss(self, features: Tensor, targets: Tensor) -> Tensor:
        """ClusterNCE: cross-entropy of :meth:`logits` with the cluster targets ``(B,)``."""
        return F.cross_entropy(self.logits(features), targets.to(self.device))

    @torch.no_grad()
    def update(self, features: Tensor, targets: Tensor) -> None:
        """Momentum update with the batch (call after ``optimizer.step()``)."""
        f = F.normalize(features.detach().float().to(self.device), dim=1)
        t = targets.to(self.device)
        if self.update_rule == "per_sample":
            sequential_momentum_update(self.features, f, t, self.momentum)
        else:
            uniq, inv = torch.unique(t, return_inverse=True)
            sums = torch.zeros(len(uniq), f.shape[1], device=f.device).index_add_(0, inv, f)
            mean = sums / torch.bincount(inv, minlength=len(uniq)).unsqueeze(1)
            self.features[uniq] = F.normalize(self.momentum * self.features[uniq] + (1 - self.momentum) * mean, dim=1)

    def state_dict(self) -> dict[str, Tensor]:
        return {"features": self.features.cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.features = state["features"].to(self.device)


def cluster_centroids(features: Tensor, labels: np.ndarray | Tensor) -> Tensor:
    """L2-normalised per-cluster means ``(C, d) float32`` (labels ``0..C-1``; ``-1`` ignored)."""
    f = torch.as_tensor(features).float()
    lab = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=f.device)
    keep = lab >= 0
    c = int(lab[keep].max()) + 1 if keep.any() else 0
    sums = torch.zeros(c, f.shape[1], device=f.device).index_add_(0, lab[keep], f[keep])
    return F.normalize(sums, dim=1)
