"""HHCL hybrid memories (Hu, Zhu, He, "Hard-sample Guided Hybrid Contrast Learning for Unsupervised
Person Re-Identification", IC-NIDC 2021, arXiv 2109.12333; bupt-ai-cz/HHCL-ReID @4986b46
``hhcl/models/cm.py``, as summarised in ``../shared/ANCHORS.md``).

**CMhybrid** (``CM_Hybrid``; the variant behind the published numbers): rows ``[0, C)`` are *hard*
rows, rows ``[C, 2C)`` *centroid* rows, both initialised with the normalised cluster means. With
``s = normalize(f) . M / tau`` and ``s_hard``, ``s_cent`` its two halves:

* loss, legacy (the public code, L213; ``w`` is always 0.5 there because ``--hard-weight`` is parsed
  but never passed): ``L = w * (CE(s_hard, y) + (1 - w) * CE(s_cent, y))``;
  clean (``legacy_weighting=False``): ``L = w * CE(s_hard, y) + (1 - w) * CE(s_cent, y)``;
* update, once per cluster ``y`` present in the batch: ``h_y <- normalize(mu h_y + (1-mu) f*)`` with
  ``f*`` the batch feature of ``y`` least similar to ``h_y`` (first in batch order on ties, as
  ``np.argmin``); ``c_y <- normalize(mu c_y + (1-mu) mean_{i: y_i = y} f_i)``.

**CMhybrid_v2** (``CM_Hybrid_v2``; the paper's P x C instance bank): rows ``[0, C)`` centroids, then
``P`` slot blocks ``[pC, (p+1)C)``, ``p = 1..P``:

* initialisation (each epoch, ``train.py``): centroids = normalised means; slots = features of ``P``
  members of each cluster drawn **with replacement**;
* loss: ``s_cent`` as above; hard logits ``s_hard[y'] = min_p slot_p[y'] . f / tau`` for the true class,
  ``max_p`` for every other class; ``L = w * CE(s_cent, y) + (1 - w) * CE(s_hard, y)``;
* update: the first ``n_b`` slots of a cluster (``n_b`` = its images in the batch) are overwritten by
  the batch features in batch order (no momentum; the others stay stale), centroid rows get the
  momentum update with the batch mean. **Guard** (deviation): the public code indexes past the bank
  when a batch holds more than ``P`` images of one cluster; we write only the first ``P`` and warn
  once.

All updates run after ``optimizer.step()`` under ``no_grad``, vectorised over clusters.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from unreid.memory.cluster import cluster_centroids

log = logging.getLogger("unreid")


def _first_argmin_per_group(values: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    """For each group present, the index (into ``values``) of its minimum, first on ties."""
    big = torch.finfo(values.dtype).max
    mins = torch.full((num_groups,), big, dtype=values.dtype, device=values.device)
    mins = mins.scatter_reduce(0, groups, values, reduce="amin")
    is_min = values == mins[groups]
    pos = torch.arange(len(values), device=values.device)
    cand = torch.where(is_min, pos, torch.full_like(pos, len(values)))
    first = torch.full((num_groups,), len(values), dtype=torch.long, device=values.device)
    return first.scatter_reduce(0, groups, cand, reduce="amin")


def _batch_means(f: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    uniq, inv = torch.unique(t, return_inverse=True)
    sums = torch.zeros(len(uniq), f.shape[1], device=f.device, dtype=f.dtype).index_add_(0, inv, f)
    counts = torch.bincount(inv, minlength=len(uniq))
    return uniq, inv, sums / counts.unsqueeze(1)


class HybridMemory:
    """HHCL's ``CMhybrid`` / ``CMhybrid_v2`` memory (see module docstring).

    Args:
        variant: ``"cmhybrid"`` or ``"cmhybrid_v2"``.
        temperature: tau (0.05).
        momentum: mu (0.1, HHCL ``run.sh``).
        hard_weight: w (0.5).
        legacy_weighting: CMhybrid's literal public loss (default, reproduces the published numbers).
        num_slots: P of CMhybrid_v2 (public code: ``--num-instances``, 16).
        label_smoothing: HHCL ``--smooth > 0`` = label smoothing 0.1 on every cross-entropy.
    """

    def __init__(self, variant: str = "cmhybrid", temperature: float = 0.05, momentum: float = 0.1,
                 hard_weight: float = 0.5, legacy_weighting: bool = True, num_slots: int = 16,
                 label_smoothing: float = 0.0, device: torch.device | str = "cpu") -> None:
        if variant not in ("cmhybrid", "cmhybrid_v2"):
            raise ValueError(f"unknown HHCL memory variant {variant!r}; choose cmhybrid or cmhybrid_v2")
        self.variant = variant
        self.temperature = temperature
        self.momentum = momentum
        self.hard_weight = hard_weight
        self.legacy = legacy_weighting
        self.num_slots = num_slots
        self.label_smoothing = label_smoothing
        self.device = torch.device(device)
        self.centroids = torch.zeros(0, 0, device=self.device)  # (C, d)
        self.hard = torch.zeros(0, 0, device=self.device)  # CMhybrid: (C, d); v2: (P, C, d) slots
        self._warned = False

    @property
    def num_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @torch.no_grad()
    def init_from_features(self, features: Tensor, labels: np.ndarray | Tensor,
                           generator: torch.Generator | None = None) -> None:
        """Initialise from ``features`` ``(N, d)`` and ``labels`` ``(N,)`` (-1 ignored)."""
        f = F.normalize(torch.as_tensor(features).float().cpu(), dim=1)
        lab = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        cent = cluster_centroids(f, lab)
        self.centroids = cent.to(self.device)
        if self.variant == "cmhybrid":
            self.hard = cent.clone().to(self.device)
            return
        c = cent.shape[0]
        keep = torch.nonzero(lab >= 0).squeeze(1)
        order = keep[torch.argsort(lab[keep], stable=True)]
        counts = torch.bincount(lab[keep], minlength=c)
        starts = torch.cumsum(counts, 0) - counts
        draws = (torch.rand(c, self.num_slots, generator=generator) * counts.unsqueeze(1)).long()
        members = order[starts.unsqueeze(1) + draws]  # (C, P) sample indices, with replacement
        self.hard = f[members].permute(1, 0, 2).contiguous().to(self.device)  # (P, C, d)

    def _ce(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)

    def losses(self, features: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """``{"loss", "centroid", "hard"}`` for a batch (``features`` ``(B, d)``, ``targets`` ``(B,)``)."""
        f = F.normalize(features.float(), dim=1)
        t = targets.to(self.device)
        s_cent = f @ self.centroids.t() / self.temperature
        if self.variant == "cmhybrid":
            s_hard = f @ self.hard.t() / self.temperature
        else:
            sims = torch.einsum("bd,pcd->pbc", f, self.hard)  # (P, B, C)
            pos, neg = sims.min(0).values, sims.max(0).values
            mask = F.one_hot(t, self.num_clusters).bool()
            s_hard = torch.where(mask, pos, neg) / self.temperature
        ce_c, ce_h = self._ce(s_cent, t), self._ce(s_hard, t)
        w = self.hard_weight
        if self.variant == "cmhybrid":
            loss = w * (ce_h + (1 - w) * ce_c) if self.legacy else w * ce_h + (1 - w) * ce_c
        else:
            loss = w * ce_c + (1 - w) * ce_h
        return {"loss": loss, "centroid": ce_c.detach(), "hard": ce_h.detach()}

    @torch.no_grad()
    def update(self, features: Tensor, targets: Tensor) -> None:
        """The variant's update rule (after ``optimizer.step()``)."""
        f = F.normalize(features.detach().float().to(self.device), dim=1)
        t = targets.to(self.device)
        mu = self.momentum
        uniq, inv, means = _batch_means(f, t)
        self.centroids[uniq] = F.normalize(mu * self.centroids[uniq] + (1 - mu) * means, dim=1)
        if self.variant == "cmhybrid":
            sims = (f * self.hard[t]).sum(1)
            pick = _first_argmin_per_group(sims, inv, len(uniq))
            self.hard[uniq] = F.normalize(mu * self.hard[uniq] + (1 - mu) * f[pick], dim=1)
            return
        # v2: slot p (0-based) of cluster y <- the (p+1)-th batch feature of y, in batch order
        order = torch.argsort(inv, stable=True)
        counts = torch.bincount(inv, minlength=len(uniq))
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order), device=order.device) - starts[inv[order]]
        if int(counts.max()) > self.num_slots and not self._warned:
            log.warning("CMhybrid_v2: a batch holds %d images of one cluster but the bank has %d slots; only the "
                        "first %d are written (the public code overflows here)", int(counts.max()), self.num_slots,
                        self.num_slots)
            self._warned = True
        ok = rank < self.num_slots
        self.hard[rank[ok], t[ok]] = f[ok]

    def state_dict(self) -> dict[str, Tensor]:
        return {"centroids": self.centroids.cpu(), "hard": self.hard.cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.centroids = state["centroids"].to(self.device)
        self.hard = state["hard"].to(self.device)
