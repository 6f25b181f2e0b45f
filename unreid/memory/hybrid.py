"""HHCL's hybrid memories: cluster centroids plus hard instances, in the two public variants.

Hu, Zhu, He, "Hard-sample Guided Hybrid Contrast Learning for Unsupervised Person
Re-Identification", IC-NIDC 2021 (arXiv 2109.12333). Reproduced behaviour from bupt-ai-cz/HHCL-ReID
@4986b46: ``hhcl/models/cm.py`` (``CM_Hybrid``, ``CM_Hybrid_v2``, ``ClusterMemory.forward``) and
``examples/train.py`` (memory initialisation). Summary in ``../shared/ANCHORS.md`` (HHCL section),
user-facing description in docs/methods/hhcl.md.

Notation: ``q = f / ||f||`` a batch feature (the public model is built with ``norm=True``, as ours: its
train-mode output is normalised, then dropped out; we normalise again here), ``y`` its
pseudo-label, ``C`` clusters, ``tau`` the temperature, ``mu`` the momentum, ``w`` the hard weight.
``CE`` is the cross-entropy of :func:`unreid.losses.cluster_nce`, with optional label smoothing (HHCL
``--smooth > 0``: ``eps = 0.1`` with HHCL's top-k rule, ``smoothing="topk"``, for every cross-entropy,
the hard one included; rules in :mod:`unreid.losses.contrastive`).

**CMhybrid** (``variant="cmhybrid"``; the variant behind the published numbers, HHCL issue #3). Hard rows
``h`` ``(C, d)`` and centroid rows ``c`` ``(C, d)`` (the public code stacks them as rows ``[0, C)`` and
``[C, 2C)`` of one buffer), both initialised with the normalised cluster means.

* loss: ``s_h = q h^T / tau``, ``s_c = q c^T / tau``; legacy (``legacy_weighting=True``, the public code
  literally) ``L = w * (CE(s_h, y) + (1 - w) * CE(s_c, y))``, clean ``L = w * CE(s_h, y) + (1 - w) *
  CE(s_c, y)`` (:func:`unreid.losses.cmhybrid_loss`). In the public code ``w`` is always 0.5: the
  ``--hard-weight`` flag is parsed but never passed to the memory.
* update, once per cluster ``y`` in the batch: ``h_y <- normalize(mu h_y + (1 - mu) q*)`` with ``q*`` the
  batch feature of ``y`` least similar to ``h_y`` (``np.argmin``: the first in batch order on ties), and
  ``c_y <- normalize(mu c_y + (1 - mu) mean_{i: y_i = y} q_i)`` (``CM_Hybrid.backward``).

**CMhybrid_v2** (``variant="cmhybrid_v2"``; the paper's P x C instance memory). Centroid rows ``c``
``(C, d)`` and ``P`` instance slots per cluster, stored as ``slots`` ``(P, C, d)`` (the public code: rows
``[C + pC, C + (p+1)C)`` of one buffer for slot ``p``).

* initialisation (each epoch, ``examples/train.py`` ``generate_random_features``): centroids = the
  normalised means; the ``P`` slots of cluster ``k`` = the features of ``P`` members of ``k`` drawn
  uniformly **with replacement** (here with a caller-given ``torch.Generator``, so a resumed run draws
  the same members);
* loss: ``s_c`` as above; hard logits from the slots, ``z[y] = min_p q . slot_p[y] / tau`` for the true
  class and ``z[k] = max_p q . slot_p[k] / tau`` for ``k != y``
  (:func:`unreid.losses.hard_instance_logits`); ``L = w * CE(s_c, y) + (1 - w) * CE(z, y)``
  (:func:`unreid.losses.cmhybrid_v2_loss`; the weights sit the other way round from CMhybrid);
* update (``CM_Hybrid_v2.backward``): the first ``n_y`` slots of cluster ``y`` (``n_y`` = its images in
  the batch) are **overwritten** by those features in batch order (no momentum), the other slots keep
  their (stale) features until the next epoch's draw; the centroid rows get the same momentum update as
  in CMhybrid, ``c_y <- normalize(mu c_y + (1 - mu) mean_{i: y_i = y} q_i)``.
* **overflow guard (deviation)**: the public code writes row ``y + C * n`` for ``n = 1 .. n_y``, past the
  end of its buffer when ``n_y > P`` (an indexing error; P is tied to ``--num-instances`` there, so the
  sampler never triggers it). We write only the first ``P`` images of such a cluster and log one warning
  per memory.

Every update runs after ``optimizer.step()`` under ``no_grad``, vectorised over clusters (no Python loop
over the batch); logits are float32 also under autocast.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from unreid.losses.contrastive import (
    SMOOTHING,
    cluster_nce,
    cmhybrid_loss,
    cmhybrid_v2_loss,
    hard_instance_logits,
    memory_logits,
)
from unreid.memory.cluster import cluster_centroids, occurrence_rank

log = logging.getLogger("unreid")

VARIANTS = ("cmhybrid", "cmhybrid_v2")


def first_argmin_per_group(values: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    """Index of the smallest entry of each group, the first one (lowest index) on ties.

    Args:
        values: ``(B,)`` float values.
        groups: ``(B,) int64`` group of each value, in ``[0, num_groups)``.
        num_groups: ``G``; every group must have at least one entry.

    Returns:
        ``(G,) int64`` indices into ``values`` (``scatter_reduce`` with ``amin``, twice: no Python loop).
    """
    mins = torch.full((num_groups,), float("inf"), dtype=values.dtype, device=values.device)
    mins = mins.scatter_reduce(0, groups, values, reduce="amin")
    pos = torch.arange(values.numel(), device=values.device)
    candidates = torch.where(values == mins[groups], pos, torch.full_like(pos, values.numel()))
    first = torch.full((num_groups,), values.numel(), dtype=torch.long, device=values.device)
    return first.scatter_reduce(0, groups, candidates, reduce="amin")


def draw_members(labels: Tensor, num_clusters: int, num_draws: int, generator: torch.Generator | None = None
                 ) -> Tensor:
    """For each cluster, ``num_draws`` member indices drawn uniformly with replacement.

    Args:
        labels: ``(N,) int64`` labels in ``[0, C)``, ``-1`` for outliers (never drawn).
        num_clusters: ``C``; every cluster must have at least one member.
        num_draws: ``P``.
        generator: CPU ``torch.Generator`` for reproducible draws.

    Returns:
        ``(C, P) int64`` sample indices (HHCL ``examples/train.py``: ``np.random.choice(members, P, True)``).

    Raises:
        ValueError: a cluster has no member.
    """
    labels = labels.cpu()
    keep = torch.nonzero(labels >= 0).squeeze(1)
    counts = torch.bincount(labels[keep], minlength=num_clusters)
    if num_clusters and int(counts.min()) == 0:
        raise ValueError(f"cluster {int(torch.argmin(counts))} has no member: labels must be 0..C-1 without gaps")
    members = keep[torch.argsort(labels[keep], stable=True)]  # grouped by cluster
    starts = torch.cumsum(counts, 0) - counts
    u = torch.rand(num_clusters, num_draws, generator=generator, dtype=torch.float64)
    offsets = torch.minimum((u * counts.unsqueeze(1)).long(), counts.unsqueeze(1) - 1)
    return members[starts.unsqueeze(1) + offsets]


class HybridMemory:
    """HHCL's ``CMhybrid`` / ``CMhybrid_v2`` memory (equations in the module docstring).

    A plain object holding tensors (no ``nn.Parameter``, never requires grad).

    Args:
        num_features: ``d``.
        num_clusters: ``C``.
        variant: ``"cmhybrid"`` (default; the published numbers) or ``"cmhybrid_v2"``.
        temperature: ``tau`` (HHCL ``--temp`` 0.05).
        momentum: ``mu`` in ``[0, 1]`` (HHCL ``--momentum`` 0.1).
        hard_weight: ``w`` in ``[0, 1]`` (HHCL: 0.5, always).
        legacy_weighting: CMhybrid only: the public code's literal loss (default) or the clean one.
        num_slots: ``P``, CMhybrid_v2 only (public code: ``--num-instances``, 16 in ``run.sh``).
        label_smoothing: ``eps`` for every cross-entropy (HHCL ``--smooth > 0`` means 0.1).
        smoothing: ``"topk"`` (default; HHCL's ``CrossEntropyLabelSmooth(C, eps, True)``: ``eps`` spread over
            the ``C // 50`` largest logits when ``C >= 100``, uniformly below) or ``"uniform"`` (``eps / C``
            to every class at any ``C``); see :func:`unreid.losses.cluster_nce`.
        device: where the memory lives.

    Attributes:
        centroids: ``(C, d) float32`` centroid rows.
        hard: CMhybrid: ``(C, d) float32`` hard rows; CMhybrid_v2: ``(0, d)``.
        slots: CMhybrid_v2: ``(P, C, d) float32`` instance slots; CMhybrid: ``(0, C, d)``.

    Raises:
        ValueError: unknown variant or out-of-range hyper-parameters.
    """

    def __init__(self, num_features: int, num_clusters: int, variant: str = "cmhybrid", temperature: float = 0.05,
                 momentum: float = 0.1, hard_weight: float = 0.5, legacy_weighting: bool = True,
                 num_slots: int = 16, label_smoothing: float = 0.0, smoothing: str = "topk",
                 device: torch.device | str = "cpu") -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown HHCL memory variant {variant!r}; choose one of {VARIANTS} "
                             "(config key method.hhcl.variant)")
        if num_features < 1 or num_clusters < 0 or num_slots < 1:
            raise ValueError(f"need num_features >= 1, num_clusters >= 0, num_slots >= 1; got {num_features}, "
                             f"{num_clusters}, {num_slots}")
        if temperature <= 0 or not 0.0 <= momentum <= 1.0 or not 0.0 <= hard_weight <= 1.0:
            raise ValueError(f"need temperature > 0, momentum and hard_weight in [0, 1]; got {temperature}, "
                             f"{momentum}, {hard_weight}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if smoothing not in SMOOTHING:
            raise ValueError(f"unknown label smoothing {smoothing!r}; choose one of {SMOOTHING} "
                             "(config key method.hhcl.smoothing)")
        self.variant = variant
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.hard_weight = float(hard_weight)
        self.legacy_weighting = bool(legacy_weighting)
        self.num_slots = int(num_slots)
        self.label_smoothing = float(label_smoothing)
        self.smoothing = smoothing
        self.device = torch.device(device)
        d, c = num_features, num_clusters
        self.centroids = torch.zeros(c, d, device=self.device)
        self.hard = torch.zeros(c if variant == "cmhybrid" else 0, d, device=self.device)
        self.slots = torch.zeros(num_slots if variant == "cmhybrid_v2" else 0, c, d, device=self.device)
        self._warned_overflow = False

    @property
    def num_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.centroids.shape[1])

    @torch.no_grad()
    def init_from_features(self, features: Tensor, labels: np.ndarray | Tensor,
                           generator: torch.Generator | None = None) -> None:
        """This epoch's memory from ``features`` ``(N, d)`` and ``labels`` ``(N,)`` (``-1`` ignored).

        CMhybrid: hard rows = centroid rows = normalised cluster means. CMhybrid_v2: centroids = the
        normalised means; slots = normalised features of ``P`` members per cluster drawn with
        replacement using ``generator`` (:func:`draw_members`).

        Raises:
            ValueError: dimension mismatch, a label ``>= num_clusters``, or (v2) an empty cluster.
        """
        if features.shape[1] != self.num_features:
            raise ValueError(f"features have dimension {features.shape[1]}, the memory {self.num_features}")
        f = F.normalize(torch.as_tensor(features).float().cpu(), dim=1)
        lab = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        cent = cluster_centroids(f, lab, self.num_clusters)
        self.centroids = cent.to(self.device)
        if self.variant == "cmhybrid":
            self.hard = cent.clone().to(self.device)
        else:
            members = draw_members(lab, self.num_clusters, self.num_slots, generator)  # (C, P)
            self.slots = f[members.t()].contiguous().to(self.device)  # (P, C, d)

    def losses(self, features: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """The variant's loss for a batch.

        Args:
            features: ``(B, d)`` batch features (gradient flows into them).
            targets: ``(B,) int64`` pseudo-labels in ``[0, C)``.

        Returns:
            ``{"loss": total, "centroid_nce": CE_centroid (detached), "hard_nce": CE_hard (detached)}``,
            float32 scalars.
        """
        t = targets.to(self.device)
        feats = features.to(self.device)
        ce_c = cluster_nce(memory_logits(feats, self.centroids, self.temperature), t, self.label_smoothing, self.smoothing)
        if self.variant == "cmhybrid":
            ce_h = cluster_nce(memory_logits(feats, self.hard, self.temperature), t, self.label_smoothing, self.smoothing)
            loss = cmhybrid_loss(ce_h, ce_c, self.hard_weight, self.legacy_weighting)
        else:
            with torch.autocast(device_type=feats.device.type, enabled=False):
                q = F.normalize(feats.float(), dim=1)
                sims = torch.einsum("bd,pcd->pbc", q, self.slots)  # (P, B, C)
                z = hard_instance_logits(sims, t, self.temperature)
            ce_h = cluster_nce(z, t, self.label_smoothing, self.smoothing)
            loss = cmhybrid_v2_loss(ce_c, ce_h, self.hard_weight)
        return {"loss": loss, "centroid_nce": ce_c.detach(), "hard_nce": ce_h.detach()}

    @torch.no_grad()
    def update(self, features: Tensor, targets: Tensor) -> None:
        """The variant's update rule with a batch; call after ``optimizer.step()``.

        Args:
            features: ``(B, d)`` batch features (L2-normalised here).
            targets: ``(B,) int64`` pseudo-labels; negative ones are skipped.
        """
        q = F.normalize(features.detach().float().to(self.device), dim=1)
        t = targets.to(self.device)
        keep = t >= 0
        q, t = q[keep], t[keep]
        if t.numel() == 0:
            return
        mu = self.momentum
        rows, inv = torch.unique(t, return_inverse=True)
        counts = torch.bincount(inv, minlength=len(rows))
        means = torch.zeros(len(rows), q.shape[1], device=q.device).index_add_(0, inv, q) / counts.unsqueeze(1)
        if self.variant == "cmhybrid":
            sims = (q * self.hard[t]).sum(1)  # similarity of each sample to its cluster's hard row
            hardest = first_argmin_per_group(sims, inv, len(rows))
            self.hard[rows] = F.normalize(mu * self.hard[rows] + (1.0 - mu) * q[hardest], dim=1)
        else:
            rank = occurrence_rank(t)  # slot index of each sample: its occurrence in batch order
            if int(counts.max()) > self.num_slots and not self._warned_overflow:
                log.warning(
                    "CMhybrid_v2: a batch holds %d images of one cluster but the memory has num_slots=%d; only "
                    "the first %d are written (the public code overflows its buffer here). Set "
                    "method.hhcl.num_slots >= data.num_instances.", int(counts.max()), self.num_slots,
                    self.num_slots)
                self._warned_overflow = True
            ok = rank < self.num_slots
            self.slots[rank[ok], t[ok]] = q[ok]
        self.centroids[rows] = F.normalize(mu * self.centroids[rows] + (1.0 - mu) * means, dim=1)

    def state_dict(self) -> dict[str, Tensor]:
        """CPU copies of ``centroids``, ``hard`` and ``slots`` (later updates never alter them)."""
        return {k: getattr(self, k).detach().cpu().clone() for k in ("centroids", "hard", "slots")}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict` output exactly (shapes from the saved tensors).

        Raises:
            ValueError: the saved tensors belong to the other variant.
        """
        hard, slots = state["hard"], state["slots"]
        if (self.variant == "cmhybrid") != (slots.shape[0] == 0 and hard.shape[0] == state["centroids"].shape[0]):
            raise ValueError(f"saved HHCL memory does not match variant {self.variant!r} (hard {tuple(hard.shape)}, "
                             f"slots {tuple(slots.shape)}); resume with the method.hhcl.variant it was trained with")
        for k in ("centroids", "hard", "slots"):
            setattr(self, k, state[k].detach().to(self.device, torch.float32).clone())
        if self.variant == "cmhybrid_v2":
            self.num_slots = int(self.slots.shape[0])
